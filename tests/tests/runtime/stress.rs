//! Threads call traced functions in tight loops while another thread enables
//! and disables them thousands of times.
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use tracer_tests::Checker;

#[tracer::traceable]
fn leaf(x: u64) -> u64 {
    // A little work, so four threads' events stay within what one collector
    // on a 2-core machine drains alongside them.
    let mut h = x;
    for _ in 0..32 {
        h = black_box(h.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(7));
    }
    h
}

#[tracer::traceable]
fn outer(x: u64) -> u64 {
    leaf(x) ^ leaf(x + 1)
}

#[tracer::traceable]
fn window_fn(x: u64) -> u64 {
    black_box(x + 1)
}

const WORKERS: usize = 4;

#[test]
fn threads_run_while_a_patcher_toggles_thousands_of_times() {
    tracer_tests::fresh_process!();
    tracer::set_buffer_events(1 << 20);
    let checker = Arc::new(Mutex::new(Checker::lenient()));
    {
        let c = checker.clone();
        let funcs: Vec<u32> = ["runtime::stress::leaf", "runtime::stress::outer"]
            .iter()
            .map(|n| tracer::__private::func_index(n).unwrap())
            .collect();
        tracer::__private::set_event_tap(Some(Box::new(move |tid, ev| {
            if funcs.contains(&ev.func) {
                c.lock().unwrap().see(tid, ev);
            }
        })));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let stop = stop.clone();
            let calls = calls.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                let mut acc = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..64 {
                        acc ^= outer(i + w as u64);
                        acc ^= leaf(i);
                    }
                    n += 64;
                }
                calls.fetch_add(n, Ordering::Relaxed);
                acc
            })
        })
        .collect();
    let toggles = 2000;
    for i in 0..toggles {
        let pat = if i % 3 == 0 { "leaf" } else { "leaf outer" };
        tracer::enable(pat).unwrap();
        tracer::disable("leaf outer").unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        black_box(w.join().unwrap());
    }
    tracer::__private::drain();
    tracer::__private::set_event_tap(None);
    let s = tracer::stats();
    let c = checker.lock().unwrap();
    let total_calls = calls.load(Ordering::Relaxed);
    println!(
        "calls {total_calls} entries {} exits {} violations {} {s:?}",
        c.entries, c.exits, c.violations
    );
    for d in c.details.iter().take(5) {
        println!("{d}");
    }
    assert!(
        c.entries > 0 && c.exits > 0,
        "the toggling never caught a call"
    );
    let leaf = tracer::latency("runtime::stress::leaf").unwrap();
    let outer = tracer::latency("runtime::stress::outer").unwrap_or_default();
    // Every completed call is counted exactly; those whose exit event was
    // dropped from a full ring are reported as lost, and only those.
    assert_eq!(leaf.count + outer.count, c.exits + leaf.lost + outer.lost);
    assert!(leaf.lost + outer.lost <= s.dropped);
    // A dropped entry event can leave one exit without its entry in the
    // stream; with nothing dropped there must be none.
    assert!(
        c.violations <= s.dropped,
        "{} exits without their entry or broken nestings, {} events dropped",
        c.violations,
        s.dropped
    );
    assert!(leaf.count <= 3 * total_calls);
    // Only protocols that plant traps (x86-64, Thumb-2) can be met in flight.
    if tracer::__private::protocol_traps() {
        assert!(
            s.traps_emulated + s.traps_skipped + s.traps_rewound > 0,
            "threads never met a site in flight: the stress did not stress"
        );
    } else {
        assert_eq!(
            s.traps_emulated + s.traps_skipped + s.traps_rewound,
            0,
            "{}: a trap-free protocol saw traps",
            tracer::__private::backend_name()
        );
    }
}

/// Exact counts over windows in which the function stayed enabled: workers
/// pause while the patcher flips, then make a known number of calls.
#[test]
fn counts_are_exact_over_enabled_windows() {
    tracer_tests::fresh_process!();
    let windows = 50;
    let per_window = 1000u64;
    let barrier = Arc::new(Barrier::new(WORKERS + 1));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let b = barrier.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                for _ in 0..windows {
                    b.wait(); // enabled
                    for i in 0..per_window {
                        black_box(window_fn(i));
                    }
                    b.wait(); // calls done
                    b.wait(); // disabled
                    for i in 0..per_window {
                        black_box(window_fn(i)); // not counted
                    }
                    b.wait(); // uncounted calls done
                }
                done.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    for w in 0..windows {
        assert_eq!(tracer::enable("window_fn").unwrap(), 1);
        barrier.wait();
        barrier.wait();
        let l = tracer::latency("window_fn").unwrap();
        assert_eq!(l.count, (w as u64 + 1) * per_window * WORKERS as u64);
        assert_eq!(l.lost, 0);
        assert!(
            l.min <= l.p50
                && l.p50 <= l.p90
                && l.p90 <= l.p99
                && l.p99 <= l.p999
                && l.p999 <= l.max
        );
        assert_eq!(tracer::disable("window_fn").unwrap(), 1);
        barrier.wait();
        barrier.wait();
    }
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(done.load(Ordering::Relaxed), WORKERS);
    assert_eq!(
        tracer::latency("window_fn").unwrap().count,
        windows as u64 * per_window * WORKERS as u64
    );
}

static NAP_CALLS: AtomicU64 = AtomicU64::new(0);
const NAP: std::time::Duration = std::time::Duration::from_millis(30);

#[tracer::traceable]
fn mid_call_nap() {
    NAP_CALLS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(NAP);
}

/// A call running when its function is disabled leaves an entry with no
/// exit; the next call starts while the function is off and is enabled
/// mid-call. Its exit must not be timed against the stale entry (which would
/// span two naps and the gap between them), only counted as unmatched.
#[test]
fn a_call_toggled_mid_call_is_never_mistimed() {
    tracer_tests::fresh_process!();
    let rounds = 8;
    let (l, longest) = tracer_tests::toggle_mid_call(
        "mid_call_nap",
        NAP,
        rounds,
        || NAP_CALLS.load(Ordering::SeqCst),
        mid_call_nap,
    );
    let l = l.expect("the whole calls are timed");
    println!("{l:?}; the longest call as its caller timed it: {longest:?}");
    // Each round: the second call's exit is unmatched, the third is timed
    // (more whole calls where a slow toggle lets the caller run ahead).
    assert!(l.count >= 1, "{l:?}");
    assert!(l.min >= NAP.as_nanos() as u64, "{l:?}");
    // No call is timed longer than any call really took (a call timed
    // across a disable/enable spans two naps and a gap); on a quiet machine
    // that is under two naps.
    assert!(
        // (5 % and a millisecond for the clock's calibration.)
        l.max <= (longest.as_nanos() as u64) * 105 / 100 + 1_000_000,
        "a call timed across a disable/enable: {l:?}, longest real call {longest:?}"
    );
}

#[tracer::traceable]
fn handed_fn(x: u64) -> u64 {
    black_box(x ^ 0x5a)
}

/// Calls are counted exactly, once each, while the rings go back and forth
/// between the collector and an external reader that consumes events the
/// process never sees (the `tracer` program attached), and while small
/// rings drop events: the hooks count the exits no drainer here will see.
#[test]
fn counts_stay_exact_while_a_reader_takes_the_events() {
    tracer_tests::fresh_process!();
    // Small rings: some exits are dropped, and those must be counted too.
    tracer::set_buffer_events(4096);
    assert_eq!(tracer::enable("handed_fn").unwrap(), 1);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..16 {
                        black_box(handed_fn(i + w));
                    }
                    n += 16;
                }
                n
            })
        })
        .collect();
    let mut taken = 0;
    for round in 0..300 {
        tracer::__private::set_external(true);
        for _ in 0..(round % 4) {
            taken += tracer::__private::consume_as_reader();
            std::thread::yield_now();
        }
        taken += tracer::__private::consume_as_reader();
        tracer::__private::set_external(false);
        if round % 8 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let calls: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let l = tracer::latency("handed_fn").unwrap();
    let s = tracer::stats();
    println!("calls {calls}, events taken by the reader {taken}, {l:?}, {s:?}");
    assert!(
        taken > 0,
        "the reader never took an event: the test did not test"
    );
    assert_eq!(l.count, calls, "every call counted once");
    // Exits the reader took or a full ring dropped are not in the
    // histogram; the summary says how many.
    assert!(l.lost > 0 && l.lost < calls);
}
