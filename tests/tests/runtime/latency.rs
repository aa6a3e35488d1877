//! Latency figures: percentiles of known, widely different durations keep
//! their order and ratio (no wall-clock bounds: only relations).
use std::hint::black_box;
use std::time::{Duration, Instant};

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

#[tracer::traceable]
fn short_op() {
    spin(Duration::from_micros(2));
}

#[tracer::traceable]
fn long_op() {
    spin(Duration::from_micros(200));
}

#[tracer::traceable]
fn nested_outer() -> u64 {
    short_op();
    black_box(1)
}

#[test]
fn percentiles_keep_order_and_ratio() {
    tracer_tests::fresh_process!();
    tracer::enable("short_op long_op nested_outer").unwrap();
    for _ in 0..300 {
        short_op();
    }
    for _ in 0..100 {
        long_op();
    }
    for _ in 0..50 {
        nested_outer();
    }
    let s = tracer::latency("short_op").unwrap();
    let l = tracer::latency("long_op").unwrap();
    let n = tracer::latency("nested_outer").unwrap();
    tracer::disable("short_op long_op nested_outer").unwrap();
    println!("{s:?}\n{l:?}\n{n:?}");
    assert_eq!((s.count, l.count, n.count), (350, 100, 50));
    for x in [&s, &l, &n] {
        assert!(
            x.min <= x.p50
                && x.p50 <= x.p90
                && x.p90 <= x.p99
                && x.p99 <= x.p999
                && x.p999 <= x.max
        );
        assert!(x.min <= x.mean && x.mean <= x.max);
        assert_eq!(x.lost, 0);
    }
    // 100x apart in the code: the medians must be far apart and ordered.
    let ratio = l.p50 as f64 / s.p50 as f64;
    assert!(ratio > 20.0 && ratio < 500.0, "p50 ratio {ratio}");
    // The spin is a floor: nothing can be faster than it.
    assert!(s.min >= 2_000 && l.min >= 200_000, "{s:?} {l:?}");
    // An outer call contains its inner call.
    assert!(n.p50 >= s.min);

    let h = tracer::log2_histogram("long_op").unwrap();
    let total: u64 = h.iter().map(|b| b.count).sum();
    assert_eq!(total, 100);
    let mode = h.iter().max_by_key(|b| b.count).unwrap();
    assert!(
        mode.low <= l.p50 && l.p50 < mode.high * 2,
        "{mode:?} vs p50 {}",
        l.p50
    );
    assert!(
        h.windows(2).all(|w| w[0].high == w[1].low),
        "contiguous buckets"
    );
}

#[tracer::traceable]
fn recurse(n: u32) -> u32 {
    if n == 0 {
        0
    } else {
        1 + black_box(recurse(n - 1))
    }
}

/// Recursion deeper than the per-thread shadow stack: the calls that got a
/// frame are matched exactly, the deeper ones are counted as too deep and
/// never steal an outer call's entry.
#[test]
fn recursion_deeper_than_the_shadow_stack() {
    tracer_tests::fresh_process!();
    tracer::enable("recurse").unwrap();
    assert_eq!(recurse(300), 300);
    assert_eq!(recurse(10), 10);
    tracer::disable("recurse").unwrap();
    let l = tracer::latency("recurse").unwrap();
    // 128 frames of the first call, all 11 of the second.
    assert_eq!(l.count, 128 + 11);
    assert_eq!(l.lost, 0);
    assert_eq!(tracer::stats().unmatched, 0);
}
