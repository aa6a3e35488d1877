//! Compiler-padded C functions (`fixtures/inproc/whole.c`) called from four
//! threads that check every result, while the main thread enables and
//! disables them again and again: the pads change under running threads,
//! hooked returns stay balanced, and the counts add up.
#![cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracer_tests::whole_c as c;
use tracer_tests::Checker;

const WORKERS: usize = 4;
const FUNCS: [&str; 3] = ["mt_leaf", "mt_mid", "mt_fp"];

#[test]
fn c_functions_called_by_four_threads_while_toggled() {
    tracer_tests::fresh_process!();
    tracer::set_buffer_events(1 << 18);
    let checker = Arc::new(Mutex::new(Checker::strict()));
    {
        let c = checker.clone();
        let funcs: Vec<u32> = FUNCS
            .iter()
            .map(|n| tracer::__private::func_index(n).expect("the fixture is listed"))
            .collect();
        tracer::__private::set_event_tap(Some(Box::new(move |tid, ev| {
            if funcs.contains(&ev.func) {
                c.lock().unwrap().see(tid, ev);
            }
        })));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (stop, calls, errors) = (stop.clone(), calls.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut x = w as u64 * 1_000_003;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..16 {
                        x = x.wrapping_add(1);
                        // SAFETY: (all calls) plain C functions of the fixture.
                        let (mid, leaf, fp) = unsafe {
                            (
                                c::mt_mid(black_box(x)),
                                c::mt_leaf(black_box(x)),
                                c::mt_fp(black_box(x as f64)),
                            )
                        };
                        let ok = mid == c::mt_leaf_model(x) ^ c::mt_leaf_model(x + 1)
                            && leaf == c::mt_leaf_model(x)
                            && fp == (x as f64) * 0.5 + 1.0;
                        if !ok {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    calls.fetch_add(16, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let toggles = 60;
    let mut windows_with_calls = 0;
    for i in 0..toggles {
        let pat = match i % 3 {
            0 => "mt_*",
            1 => "mt_leaf mt_fp",
            _ => "mt_mid",
        };
        assert!(tracer::enable(pat).unwrap() > 0);
        // Let the workers run into the enabled pads: until they made some
        // calls, or a deadline (qemu may be slow; never a fixed sleep).
        let before = calls.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while calls.load(Ordering::Relaxed) < before + 64 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        if calls.load(Ordering::Relaxed) >= before + 64 {
            windows_with_calls += 1;
        }
        assert!(tracer::disable("mt_*").unwrap() > 0);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    tracer::__private::drain();
    tracer::__private::set_event_tap(None);

    let s = tracer::stats();
    let chk = checker.lock().unwrap();
    let total = calls.load(Ordering::Relaxed);
    println!(
        "calls {total} entries {} exits {} violations {} windows {windows_with_calls} {s:?}",
        chk.entries, chk.exits, chk.violations
    );
    for d in chk.details.iter().take(5) {
        println!("{d}");
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "wrong results");
    assert_eq!(windows_with_calls, toggles, "workers stalled");
    assert!(chk.entries > 0, "the toggling never caught a call");
    let counts: Vec<tracer::LatencySummary> = FUNCS
        .iter()
        .map(|f| tracer::latency(f).unwrap_or_default())
        .collect();
    let completed: u64 = counts.iter().map(|l| l.count).sum();
    let lost: u64 = counts.iter().map(|l| l.lost).sum();
    // Every completed call is counted, its exit event delivered unless a full
    // ring dropped it.
    assert_eq!(completed, chk.exits + lost);
    if s.dropped == 0 {
        // A hooked return always comes back: every entry has its exit, even
        // of calls that were in flight while their function was disabled.
        assert_eq!(chk.entries, chk.exits, "{s:?}");
        assert_eq!(chk.violations, 0);
    } else {
        assert!(chk.violations <= s.dropped);
    }
    assert!(counts[0].count <= 3 * total, "mt_leaf: {:?}", counts[0]);
    assert!(counts[1].count <= total && counts[2].count <= total);
    assert_eq!(s.unmatched, 0, "{s:?}");
}

/// The enabled-window rule through hooked returns: a C function that sleeps
/// is disabled and enabled again in the middle of its calls; no call is
/// timed longer than it ran.
#[test]
fn a_c_call_toggled_mid_call_is_never_mistimed() {
    tracer_tests::fresh_process!();
    const NAP_MS: u32 = 30;
    let nap = Duration::from_millis(NAP_MS.into());
    let rounds = 6;
    // SAFETY: plain C functions of the fixture.
    let (l, longest) = tracer_tests::toggle_mid_call(
        "tw_nap",
        nap,
        rounds,
        || unsafe { c::tw_started() },
        || unsafe { c::tw_nap(NAP_MS) },
    );
    let l = l.expect("the whole calls are timed");
    println!("{l:?}; the longest call as its caller timed it: {longest:?}");
    assert!(l.count >= 1, "{l:?}");
    assert!(l.min >= nap.as_nanos() as u64, "{l:?}");
    // No call is timed longer than any call really took (a call timed
    // across a disable/enable spans two naps and a gap).
    assert!(
        // (5 % and a millisecond for the clock's calibration.)
        l.max <= (longest.as_nanos() as u64) * 105 / 100 + 1_000_000,
        "a call timed across a disable/enable: {l:?}, longest real call {longest:?}"
    );
}
