//! Streaming reports and exports of a large recording: events per second
//! and the peak memory of each, on a synthetic recording written with the
//! recording format's own writer (four threads of nested calls over 1,000
//! functions, some left by `longjmp`).
//!
//! `cargo bench -p tracer-cli --bench export` (10 M events);
//! `TRACER_BENCH_EVENTS=100000000` for more. Each step runs the `tracer`
//! program's code in this process and prints its time, its events per
//! second, and the process's peak RSS so far (VmHWM): every step streams,
//! so the peak stays flat however large the recording.
use std::io::Write;
use std::time::Instant;
use tracer_cli::record::{Header, Recording, Trailer, Writer};
use tracer_core::event::{Event, KIND_ENTRY, KIND_EXIT};

fn peak_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Write `n` events: per thread, a call tree three deep, every 97th
/// innermost call left without its exit (as a longjmp leaves it).
fn generate(path: &std::path::Path, n: u64) {
    let funcs = 1000u32;
    let h = Header {
        pid: 1,
        exe: "/synthetic".into(),
        clock: "tsc".into(),
        ticks_per_ns: 1.0,
        functions: (0..funcs)
            .map(|i| format!("app::module{}::f{i}", i % 17))
            .collect(),
        origins: Vec::new(),
        signatures: Vec::new(),
    };
    let f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut w = Writer::new(f, &h).unwrap();
    let threads = 4u64;
    let mut ts = vec![1_000u64; threads as usize];
    let mut written = 0u64;
    let mut k = 0u32;
    let mut batch: Vec<Event> = Vec::with_capacity(8192);
    while written < n {
        for t in 0..threads {
            batch.clear();
            while batch.len() < 8000 {
                let now = &mut ts[t as usize];
                let (a, b, c) = (k % funcs, (k * 7 + 1) % funcs, (k * 13 + 2) % funcs);
                k = k.wrapping_add(1);
                let ev = |ts, dur, func, depth, kind| Event {
                    ts,
                    dur,
                    func,
                    depth,
                    kind,
                    flags: 0,
                };
                let t0 = *now;
                batch.push(ev(t0, 0, a, 0, KIND_ENTRY));
                batch.push(ev(t0 + 10, 0, b, 1, KIND_ENTRY));
                batch.push(ev(t0 + 20, 0, c, 2, KIND_ENTRY));
                if k % 97 != 0 {
                    batch.push(ev(t0 + 50, 30, c, 2, KIND_EXIT));
                }
                batch.push(ev(t0 + 80, 70, b, 1, KIND_EXIT));
                batch.push(ev(t0 + 100, 100, a, 0, KIND_EXIT));
                *now += 120;
            }
            w.events(1000 + t, &batch).unwrap();
            written += batch.len() as u64;
        }
    }
    let t = Trailer {
        ticks_per_ns: 1.0,
        end: "duration reached".into(),
        events: written,
        threads: (0..threads)
            .map(|t| (1000 + t, format!("worker-{t}")))
            .collect(),
        ..Default::default()
    };
    w.finish(&t).unwrap().flush().unwrap();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: u64 = std::env::var("TRACER_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let dir = std::env::temp_dir().join(format!("tracer-export-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rec_path = dir.join("big.rec");
    let t = Instant::now();
    generate(&rec_path, n);
    let size = std::fs::metadata(&rec_path).unwrap().len();
    println!(
        "recording: {n} events, {:.0} MB, written in {:.2} s; peak RSS {:.0} MiB",
        size as f64 / 1e6,
        t.elapsed().as_secs_f64(),
        peak_mib()
    );
    let rec = Recording::open(&rec_path).unwrap();
    let step = |name: &str, out: Option<&std::path::Path>, f: &dyn Fn() -> u64| {
        let t = Instant::now();
        let k = f();
        let s = t.elapsed().as_secs_f64();
        let bytes = out
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(String::new(), |m| {
                format!(", {:.0} MB out", m.len() as f64 / 1e6)
            });
        println!(
            "{name:<18} {s:>7.2} s {:>12.0} events/s  ({k} items{bytes}); peak RSS {:.0} MiB",
            n as f64 / s,
            peak_mib()
        );
    };
    step("report", None, &|| {
        tracer_cli::report::rows(&rec).unwrap().len() as u64
    });
    let pf = dir.join("big.pftrace");
    step("export --perfetto", Some(&pf), &|| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&pf).unwrap());
        tracer_cli::perfetto::write(&rec, &mut w).unwrap()
    });
    let js = dir.join("big.json");
    step("export --chrome", Some(&js), &|| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&js).unwrap());
        tracer_cli::report::write_chrome(&rec, &mut w).unwrap()
    });
    step("export --folded", None, &|| {
        tracer_cli::report::folded(&rec).unwrap().lines().count() as u64
    });
    let _ = std::fs::remove_dir_all(&dir);
}
