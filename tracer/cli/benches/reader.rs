//! Throughput of the shared-buffer path and the per-call cost of the reader.
//!
//! The bench traces itself: N producer threads call an enabled `#[traceable]`
//! function in a loop while
//!
//! 1. nobody external reads (the in-process collector drains the rings), then
//! 2. a [`Reader`] attached through this process's own agent socket drains
//!    them through its shared mappings, exactly as the `tracer` program does.
//!
//! It prints per-call cost (entry + exit) in both cases and the reader's
//! events per second and losses. `cargo bench -p tracer-cli --bench reader`;
//! `TRACER_BENCH_THREADS=1,2` and `TRACER_BENCH_SECS=2` tune it, and
//! `TRACER_BENCH_RATE=20000000` paces the producers to that many events per
//! second in total (entry + exit each count), to check that the reader keeps
//! up with a given rate without loss.
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracer_cli::client::Client;
use tracer_cli::reader::Reader;

#[tracer::traceable]
fn work(x: u64) -> u64 {
    black_box(x)
}

/// Total events per second to pace the producers to, if set.
fn rate() -> Option<f64> {
    std::env::var("TRACER_BENCH_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
}

/// Run `threads` producers for `secs`; return total calls and elapsed time.
fn produce(threads: usize, secs: f64, during: impl FnOnce(&AtomicBool)) -> (u64, Duration) {
    // Calls per second per thread (two events a call).
    let pace = rate().map(|r| r / 2.0 / threads as f64);
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, calls) = (stop.clone(), calls.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..1024 {
                        black_box(work(i));
                    }
                    n += 1024;
                    if let Some(cps) = pace {
                        let due = start + Duration::from_secs_f64(n as f64 / cps);
                        while Instant::now() < due && !stop.load(Ordering::Relaxed) {
                            std::hint::spin_loop();
                        }
                    }
                }
                calls.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let deadline = start + Duration::from_secs_f64(secs);
    let stopper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            stop.store(true, Ordering::Relaxed);
        })
    };
    during(&stop);
    stopper.join().unwrap();
    for h in hs {
        h.join().unwrap();
    }
    (calls.load(Ordering::Relaxed), start.elapsed())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let threads: Vec<usize> = std::env::var("TRACER_BENCH_THREADS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let secs: f64 = std::env::var("TRACER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    tracer::enable("work").expect("enable the bench function");
    println!(
        "tracer-cli reader bench: {secs} s per run, default buffer sizes{}",
        rate().map_or(String::new(), |r| format!(
            ", producers paced to {:.1} M events/s",
            r / 1e6
        ))
    );
    for &n in &threads {
        let (calls, t) = produce(n, secs, |_| {});
        let base = t.as_nanos() as f64 * n as f64 / calls as f64;
        let client = Client::connect(std::process::id() as i32).expect("own agent");
        let mut reader = Reader::attach(client).expect("attach to own agent");
        // Rings keep their drop counts from before the reader came (the
        // blocks of the first run's threads): count only what is lost now.
        let lost_before: u64 = reader.losses().iter().map(|l| l.dropped).sum();
        let mut events = 0u64;
        let mut sum = 0u64;
        let (calls2, t2) = produce(n, secs, |stop| {
            while !stop.load(Ordering::Relaxed) {
                let got = reader
                    .poll_each(|_, e| sum = sum.wrapping_add(e.dur))
                    .unwrap_or(0);
                // As the program does: go again at once only after a big
                // batch, else let the rings fill a little (less cache-line
                // traffic with the producers).
                if got < 4096 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                events += got as u64;
            }
        });
        events += reader.poll_each(|_, _| {}).unwrap_or(0) as u64;
        black_box(sum);
        let lost: u64 = reader.losses().iter().map(|l| l.dropped).sum::<u64>() - lost_before;
        reader.detach();
        let with = t2.as_nanos() as f64 * n as f64 / calls2 as f64;
        println!(
            "{n} producer(s): per call {base:.1} ns (in-process collector), {with:.1} ns with the \
             reader ({:+.1}%); reader received {:.1} M events/s, {lost} lost ({:.3}%)",
            (with / base - 1.0) * 100.0,
            events as f64 / t2.as_secs_f64() / 1e6,
            lost as f64 * 100.0 / (events + lost).max(1) as f64
        );
    }
    tracer::disable("work").expect("disable");
}
