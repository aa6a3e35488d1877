//! Quick per-call timing of an enabled function, for profiling.
use std::hint::black_box;
fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    tracer::enable("traced_enabled").unwrap();
    for round in 0..3 {
        let t = std::time::Instant::now();
        let c0 = cpu_ns();
        let mut x = 0;
        for i in 0..n {
            x ^= tracer_benches::traced_enabled(black_box(i));
        }
        black_box(x);
        let el = t.elapsed();
        let cpu = cpu_ns() - c0;
        println!(
            "round {round}: {:.1} ns/call ({:.1} ns/call of this thread's CPU time)",
            el.as_nanos() as f64 / n as f64,
            cpu as f64 / n as f64
        );
    }
    println!("{:?}", tracer::stats());
}

/// This thread's CPU time, in nanoseconds (what the hooks cost it, without
/// the time other processes take from it).
fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
