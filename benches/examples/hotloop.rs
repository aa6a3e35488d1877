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
        let mut x = 0;
        for i in 0..n {
            x ^= tracer_benches::traced_enabled(black_box(i));
        }
        black_box(x);
        let el = t.elapsed();
        println!(
            "round {round}: {:.1} ns/call",
            el.as_nanos() as f64 / n as f64
        );
    }
    println!("{:?}", tracer::stats());
}
