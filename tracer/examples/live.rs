//! Enable tracing in a running multi-threaded program and print latency
//! histograms.
//!
//! `cargo run --release -p tracer --example live`
//!
//! Four worker threads serve requests in a loop: parse, look up a cache (hits
//! are fast, misses go to a slow backend). Nothing is traced at first. After
//! a second, the main thread enables every `#[traceable]` function *while
//! the workers keep running*, collects for two seconds, prints the
//! percentiles and a log2 histogram per function, and disables them again.
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

#[tracer::traceable]
fn parse(req: u64) -> u64 {
    spin(Duration::from_nanos(300));
    req % 1000
}

#[tracer::traceable]
fn backend_fetch(key: u64) -> u64 {
    spin(Duration::from_micros(40));
    key * 7
}

#[tracer::traceable]
fn cache_lookup(key: u64) -> u64 {
    if key % 10 < 8 {
        black_box(key * 7) // hit
    } else {
        backend_fetch(key) // miss
    }
}

#[tracer::traceable]
fn handle(req: u64) -> u64 {
    let key = parse(req);
    cache_lookup(key)
}

fn bar(count: u64, max: u64) -> String {
    let w = if max == 0 {
        0
    } else {
        (count * 40).div_ceil(max)
    } as usize;
    "#".repeat(w)
}

fn main() {
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, served) = (stop.clone(), served.clone());
            std::thread::spawn(move || {
                let mut i = w * 1_000_003;
                while !stop.load(Ordering::Relaxed) {
                    black_box(handle(i));
                    i += 1;
                    served.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(1));
    println!(
        "{} requests served untraced; enabling while the workers run...",
        served.load(Ordering::Relaxed)
    );
    let report = tracer::enable_report("handle parse cache_lookup backend_fetch").expect("enable");
    println!(
        "enabled {} functions with {} core syncs",
        report.changed.len(),
        report.syncs
    );
    std::thread::sleep(Duration::from_secs(2));
    tracer::disable("handle parse cache_lookup backend_fetch").expect("disable");
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }

    println!(
        "\n{:<40} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "function", "count", "min", "p50", "p90", "p99", "p99.9", "max"
    );
    for f in tracer::functions() {
        if let Some(l) = tracer::latency(&f.name) {
            println!(
                "{:<40} {:>9} {:>7}ns {:>7}ns {:>7}ns {:>7}ns {:>7}ns {:>7}ns",
                f.name, l.count, l.min, l.p50, l.p90, l.p99, l.p999, l.max
            );
        }
    }
    for f in tracer::functions() {
        if let Some(h) = tracer::log2_histogram(&f.name) {
            println!("\n{} (ns, log2 buckets)", f.name);
            let max = h.iter().map(|b| b.count).max().unwrap_or(0);
            for b in h.iter().filter(|b| b.count > 0) {
                println!(
                    "  [{:>9}, {:>9}) {:>9} |{}",
                    b.low,
                    b.high,
                    b.count,
                    bar(b.count, max)
                );
            }
        }
    }
    let s = tracer::stats();
    println!(
        "\nclock {}, sync {}, {} events dropped, {} exits without entry",
        s.clock, s.sync, s.dropped, s.unmatched
    );
}
