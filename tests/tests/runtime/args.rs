//! Argument and return-value capture at compiler pads (issue 14), in
//! process: the C fixture's functions (`fixtures/inproc/whole.c`) enabled
//! with capture keep their values (integer, floating-point, struct and
//! many-argument calls, tail calls, recursion), are counted as without,
//! switch between capture and none while enabled, and a panic unwinds
//! through capturing frames. The values themselves are read by the
//! `tracer` program (tracer/cli/tests/args.rs).
#![cfg(target_arch = "x86_64")]

use std::hint::black_box;
use tracer::Capture;
use tracer_tests::whole_c as c;

fn count(name: &str) -> u64 {
    tracer::latency(name).map_or(0, |l| l.count)
}

const TREE: [&str; 9] = [
    "c_a", "c_b", "c_c", "c_rec", "c_tail", "c_fp", "c_big", "c_hfa", "c_many",
];

fn workload(i: i32) {
    // SAFETY: plain C functions of the fixture (all calls).
    unsafe {
        assert_eq!(c::c_a(black_box(i)), 4 * i + 9);
        assert_eq!(c::c_tail(black_box(i)), i + 11);
        assert_eq!(c::c_fp(black_box(i as f64), 0.25), 2.0 * i as f64 + 0.25);
        let v = black_box(i as i64 * 1000);
        let b = c::c_big(v);
        assert_eq!((b.a, b.b, b.c, b.d, b.e), (v, v + 1, v + 2, v + 3, v + 4));
        let x = i as f64 + 0.5;
        let h = c::c_hfa(black_box(x));
        assert_eq!((h.a, h.b, h.c, h.d), (x, 2.0 * x, 3.0 * x, 4.0 * x));
        let m = c::c_many(
            1,
            2,
            3,
            4,
            5,
            6,
            7,
            i as i64,
            0.5,
            1.5,
            2.5,
            3.5,
            4.5,
            5.5,
            6.5,
            7.5,
            9,
            black_box(8.5),
        );
        let ints = 1 + 2 * 2 + 3 * 3 + 4 * 4 + 5 * 5 + 6 * 6 + 7 * 7 + 8 * i as i64 + 81;
        let fps = 0.5 + 3.0 + 7.5 + 14.0 + 22.5 + 33.0 + 45.5 + 60.0 + 76.5;
        assert_eq!(m, ints as f64 + fps);
    }
}

#[test]
fn capturing_functions_keep_their_values_and_counts() {
    tracer_tests::fresh_process!();
    let all = Capture {
        ints: 6,
        floats: 8,
        stack: 4,
        retval: true,
    };
    let r = tracer::enable_with("c_*", all).unwrap();
    assert_eq!(r.changed.len(), TREE.len(), "{r:?}");
    assert!(r.skipped.is_empty(), "{r:?}");
    const N: i32 = 100;
    for i in 0..N {
        workload(i);
    }
    // Switch to arguments only, then to no capture, while enabled.
    let args_only = Capture {
        retval: false,
        ..all
    };
    assert_eq!(
        tracer::enable_with("c_*", args_only).unwrap().changed.len(),
        TREE.len()
    );
    for i in 0..N {
        workload(i);
    }
    let ret_only = Capture {
        retval: true,
        ..Capture::NONE
    };
    assert_eq!(
        tracer::enable_with("c_*", ret_only).unwrap().changed.len(),
        TREE.len()
    );
    for i in 0..N {
        workload(i);
    }
    // Enabling again with the same capture changes nothing.
    assert_eq!(
        tracer::enable_with("c_*", ret_only).unwrap().changed.len(),
        0
    );
    assert_eq!(
        tracer::enable_with("c_*", Capture::NONE)
            .unwrap()
            .changed
            .len(),
        TREE.len()
    );
    for i in 0..N {
        workload(i);
    }
    assert_eq!(tracer::disable("c_*").unwrap(), TREE.len());
    let n = 4 * N as u64;
    let want = [
        ("c_a", n),
        ("c_b", 2 * n),
        ("c_c", 3 * n),
        ("c_rec", 4 * n),
        ("c_tail", n),
        ("c_fp", n),
        ("c_big", n),
        ("c_hfa", n),
        ("c_many", n),
    ];
    let got: Vec<(&str, u64)> = want.iter().map(|&(f, _)| (f, count(f))).collect();
    assert_eq!(got, want, "{:?}", tracer::stats());
    let s = tracer::stats();
    assert_eq!(s.unmatched, 0);
    // Where the plain hooks pass the lean check (optimised builds), the
    // capturing ones do too.
    if s.trampoline == "lean" {
        assert_eq!(
            s.capture_trampoline, "lean",
            "{:?}",
            s.capture_full_save_reason
        );
    }
}

/// Calls a traced C function when dropped (during the unwind).
struct CallOnDrop;

impl Drop for CallOnDrop {
    fn drop(&mut self) {
        // SAFETY: a plain C function.
        assert_eq!(unsafe { c::uw_plain(black_box(5)) }, 15);
    }
}

extern "C-unwind" fn boom(x: i32) -> i32 {
    let _guard = CallOnDrop;
    if x == 42 {
        std::panic::panic_any(x);
    }
    x * 10
}

extern "C-unwind" fn catcher(x: i32) -> i32 {
    let r = std::panic::catch_unwind(|| {
        // SAFETY: a plain C function; `boom` panics, which unwinds through it.
        unsafe { c::uw_call(boom, 42) }
    });
    assert_eq!(*r.unwrap_err().downcast::<i32>().unwrap(), 42);
    x + 100
}

#[test]
fn a_panic_unwinds_through_capturing_frames() {
    tracer_tests::fresh_process!();
    let cap = Capture::all_registers(true);
    assert_eq!(tracer::enable_with("uw_*", cap).unwrap().changed.len(), 3);
    for round in 1..=3u64 {
        let r = std::panic::catch_unwind(|| {
            // SAFETY: a plain C function calling `boom`, which panics.
            unsafe { c::uw_outer(boom, 41) }
        });
        assert_eq!(*r.unwrap_err().downcast::<i32>().unwrap(), 42);
        // SAFETY: plain C functions (all calls).
        unsafe {
            assert_eq!(c::uw_outer(boom, 1), 22);
            assert_eq!(c::uw_plain(7), 21);
            assert_eq!(c::uw_outer(catcher, 0), 1 + 100 + 1 + 1);
        }
        assert_eq!(count("uw_outer"), 2 * round);
        assert_eq!(count("uw_call"), 2 * round);
        assert_eq!(count("uw_plain"), 4 * round);
    }
    assert_eq!(tracer::disable("uw_*").unwrap(), 3);
}
