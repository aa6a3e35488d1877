//! Whole-program tracing in-process: C functions compiled with compiler pads
//! (`fixtures/inproc/whole.c`, built by `build.rs`) are listed, enabled,
//! traced on entry and exit with their values intact, and survive a Rust
//! panic unwinding through them. Runs natively on x86-64 and under qemu-user
//! on AArch64 (`scripts/cross-test.sh aarch64`), where the `tracer` program
//! cannot be spawned against the test programs.
#![cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]

use std::hint::black_box;
use tracer_tests::whole_c as c;

fn count(name: &str) -> u64 {
    tracer::latency(name).map_or(0, |l| l.count)
}

const TREE: [&str; 9] = [
    "c_a", "c_b", "c_c", "c_rec", "c_tail", "c_fp", "c_big", "c_hfa", "c_many",
];

#[test]
fn c_functions_are_listed_enabled_and_counted_with_values_intact() {
    tracer_tests::fresh_process!();
    let fns = tracer::functions();
    for n in TREE {
        let f = fns.iter().find(|f| f.name == n).unwrap_or_else(|| {
            panic!(
                "{n} not listed; compiler pads: {:?}",
                fns.iter()
                    .filter(|f| f.compiler_pad)
                    .map(|f| &f.name)
                    .collect::<Vec<_>>()
            )
        });
        assert!(f.compiler_pad, "{n} is not a compiler pad: {f:?}");
        assert!(f.problems.is_empty(), "{n}: {:?}", f.problems);
        assert!(!f.enabled);
    }
    assert_eq!(tracer::enable("c_*").unwrap(), TREE.len());
    assert_eq!(tracer::stats().returns, "hooked");
    assert!(tracer::functions()
        .iter()
        .filter(|f| TREE.contains(&f.name.as_str()))
        .all(|f| f.enabled));

    const N: i32 = 200;
    for i in 0..N {
        // SAFETY: (all calls) plain C functions of the fixture.
        unsafe {
            assert_eq!(c::c_a(black_box(i)), 4 * i + 9);
            assert_eq!(c::c_tail(black_box(i)), i + 11);
            assert_eq!(c::c_fp(black_box(i as f64), 0.25), 2.0 * i as f64 + 0.25);
            let v = black_box(i as i64 * 1000);
            assert_eq!(
                c::c_big(v),
                c::Big {
                    a: v,
                    b: v + 1,
                    c: v + 2,
                    d: v + 3,
                    e: v + 4
                }
            );
            let h = c::c_hfa(black_box(i as f64 + 0.5));
            let x = i as f64 + 0.5;
            assert_eq!(
                h,
                c::Hfa {
                    a: x,
                    b: 2.0 * x,
                    c: 3.0 * x,
                    d: 4.0 * x
                }
            );
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
    assert_eq!(tracer::disable("c_*").unwrap(), TREE.len());
    // Not counted: disabled.
    // SAFETY: a plain C function.
    assert_eq!(unsafe { c::c_a(1) }, 13);

    let n = N as u64;
    let want = [
        ("c_a", n),
        ("c_b", 2 * n),
        // Two from each c_b, one tail-called by each c_tail.
        ("c_c", 3 * n),
        ("c_rec", 4 * n),
        ("c_tail", n),
        ("c_fp", n),
        ("c_big", n),
        ("c_hfa", n),
        ("c_many", n),
    ];
    let got: Vec<(&str, u64)> = want.iter().map(|&(f, _)| (f, count(f))).collect();
    assert_eq!(
        got,
        want,
        "completed calls (entry and exit seen), {:?}",
        tracer::stats()
    );
    let s = tracer::stats();
    assert_eq!(s.unmatched, 0, "{s:?}");
    let l = tracer::latency("c_a").unwrap();
    assert!(l.min <= l.p50 && l.p50 <= l.max, "{l:?}");
}

/// Calls a traced C function when dropped: during the unwind, a cleanup
/// (landing pad, then `_Unwind_Resume`) enters and leaves a hooked frame.
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

/// Called from C (`uw_call`): catches a panic that unwinds through another
/// hooked C frame, below it.
extern "C-unwind" fn catcher(x: i32) -> i32 {
    let r = std::panic::catch_unwind(|| {
        // SAFETY: a plain C function; `boom` panics, which unwinds through it.
        unsafe { c::uw_call(boom, 42) }
    });
    assert_eq!(*r.unwrap_err().downcast::<i32>().unwrap(), 42);
    x + 100
}

/// `boom` without the guard (the guard calls a function another test counts).
#[cfg(target_arch = "aarch64")]
extern "C-unwind" fn bare_boom(x: i32) -> i32 {
    if x == 42 {
        std::panic::panic_any(x);
    }
    x * 10
}

/// AArch64: a pad after `bti c`, and functions that sign their return
/// address (the pad comes before `paciasp`, so the return trampoline's
/// address is what is signed and authenticated), also through a panic.
#[cfg(target_arch = "aarch64")]
#[test]
fn aarch64_bti_and_pac_ret_functions() {
    tracer_tests::fresh_process!();
    let fns = tracer::functions();
    for n in ["bp_bti", "bp_pac", "bp_call"] {
        let f = fns.iter().find(|f| f.name == n).expect("listed");
        assert!(f.problems.is_empty(), "{n}: {:?}", f.problems);
    }
    assert_eq!(tracer::enable("bp_*").unwrap(), 3);
    for i in 0..40 {
        // SAFETY: (all calls) plain C functions of the fixture.
        unsafe {
            assert_eq!(c::bp_bti(i), 7 * i);
            assert_eq!(c::bp_pac(i), 7 * i + 1);
            assert_eq!(c::bp_call(bare_boom, i), 10 * i + 1);
        }
    }
    let r = std::panic::catch_unwind(|| {
        // SAFETY: a plain C function calling `bare_boom`, which panics.
        unsafe { c::bp_call(bare_boom, 42) }
    });
    assert_eq!(*r.unwrap_err().downcast::<i32>().unwrap(), 42);
    // SAFETY: as above.
    assert_eq!(unsafe { c::bp_call(bare_boom, 1) }, 11);
    assert_eq!(tracer::disable("bp_*").unwrap(), 3);
    assert_eq!(count("bp_bti"), 80);
    assert_eq!(count("bp_pac"), 40);
    assert_eq!(count("bp_call"), 41);
}

#[test]
fn a_panic_unwinds_through_hooked_c_frames() {
    tracer_tests::fresh_process!();
    assert_eq!(tracer::enable("uw_*").unwrap(), 3);
    for round in 1..=3u64 {
        // Caught above every C frame: uw_outer and uw_call are unwound.
        let r = std::panic::catch_unwind(|| {
            // SAFETY: a plain C function calling `boom`, which panics.
            unsafe { c::uw_outer(boom, 41) }
        });
        assert_eq!(*r.unwrap_err().downcast::<i32>().unwrap(), 42);
        // SAFETY: (all calls) plain C functions.
        unsafe {
            // Normal calls still work and are counted.
            assert_eq!(c::uw_outer(boom, 1), 22);
            assert_eq!(c::uw_plain(7), 21);
            // Caught between C frames: the outer uw_outer and uw_call keep
            // their hooks and return normally; the inner uw_call is unwound.
            assert_eq!(c::uw_outer(catcher, 0), 1 + 100 + 1 + 1);
        }
        assert_eq!(count("uw_outer"), 2 * round);
        assert_eq!(count("uw_call"), 2 * round);
        // One direct call, and one from each of the three `boom` guards
        // (two of them dropped by the unwind).
        assert_eq!(count("uw_plain"), 4 * round);
    }
    assert_eq!(tracer::disable("uw_*").unwrap(), 3);
    let s = tracer::stats();
    assert!(s.unwound >= 3 * 3, "{s:?}");
}

/// A thread cancelled (`pthread_cancel`) inside hooked C frames: glibc runs
/// the forced unwind through libgcc by its own handle, past every
/// interposer, so it meets the hooked returns; the return trampoline's
/// unwind information leads it to the real callers and every cleanup runs
/// (on AArch64 through a frame that signs its return address too).
#[test]
fn a_thread_cancelled_inside_hooked_c_frames_runs_every_cleanup() {
    tracer_tests::fresh_process!();
    // SAFETY: a plain C function starting and joining its threads.
    assert_eq!(unsafe { c::pc_run(4) }, 4 * 100 + 4 * 3, "untraced");
    const PC: &str = "pc_l1,pc_l2,pc_l3,pc_point";
    assert_eq!(tracer::enable(PC).unwrap(), 4);
    // SAFETY: as above.
    let r = unsafe { c::pc_run(8) };
    assert_eq!(tracer::disable(PC).unwrap(), 4);
    assert_eq!(r, 8 * 100 + 8 * 3, "traced");
    assert_eq!(count("pc_l1"), 0, "no cancelled call returned");
}

/// libgcc's own stack walk, reached through a handle (as glibc reaches it,
/// past the interposers that would give the hooked returns back), from
/// inside hooked C frames sees every caller.
#[test]
fn libgccs_own_walk_gets_through_hooked_c_frames() {
    tracer_tests::fresh_process!();
    // SAFETY: a plain C function.
    assert_eq!(unsafe { c::rw_outer(1) }, 3, "untraced");
    const RW: &str = "rw_inner,rw_middle,rw_outer";
    assert_eq!(tracer::enable(RW).unwrap(), 3);
    for _ in 0..3 {
        // SAFETY: as above.
        assert_eq!(unsafe { c::rw_outer(1) }, 3, "traced");
    }
    assert_eq!(tracer::disable(RW).unwrap(), 3);
    assert_eq!(count("rw_outer"), 3);
}
