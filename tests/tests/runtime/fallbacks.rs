//! The fallbacks: core sync without membarrier (an mprotect round trip whose
//! TLB shootdown serialises every CPU running the process), timestamps from
//! CLOCK_MONOTONIC instead of the TSC; and concurrent enable/disable calls,
//! which wait their turn.
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[tracer::traceable]
fn fb_work(x: u64) -> u64 {
    black_box(x.wrapping_mul(31))
}

#[tracer::traceable]
fn fb_other(x: u64) -> u64 {
    black_box(x ^ 31)
}

#[test]
fn patching_works_with_both_fallbacks_and_concurrent_patchers() {
    tracer_tests::fresh_process!();
    // Before the runtime starts: it reads these once.
    std::env::set_var("TRACER_NO_MEMBARRIER", "1");
    std::env::set_var("TRACER_CLOCK", "monotonic");
    let s = tracer::stats();
    assert_eq!(s.sync, "mprotect-ipi");
    assert_eq!(s.clock, "monotonic");

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(fb_work(n), n.wrapping_mul(31));
                    assert_eq!(fb_other(n), n ^ 31);
                    n += 1;
                }
            })
        })
        .collect();
    // Three patchers at once: every call succeeds (none is rejected for
    // another being in flight), and each function ends disabled.
    let patchers: Vec<_> = ["fb_work", "fb_other", "fb_*"]
        .into_iter()
        .map(|pat| {
            std::thread::spawn(move || {
                for _ in 0..300 {
                    tracer::enable(pat).unwrap();
                    tracer::disable(pat).unwrap();
                }
            })
        })
        .collect();
    for p in patchers {
        p.join().unwrap();
    }
    tracer::enable("fb_work").unwrap();
    for i in 0..1000 {
        black_box(fb_work(i));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    tracer::disable("fb_*").unwrap();
    assert!(tracer::functions().iter().all(|f| !f.enabled));
    let l = tracer::latency("fb_work").unwrap();
    assert!(l.count >= 1000);
    assert!(l.min <= l.p50 && l.p50 <= l.max);
    let s = tracer::stats();
    let traps = s.traps_emulated + s.traps_skipped + s.traps_rewound;
    if tracer::__private::protocol_traps() {
        assert!(traps > 0, "{s:?}");
    } else {
        assert_eq!(traps, 0, "one aligned write never traps: {s:?}");
    }
}
