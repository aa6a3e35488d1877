//! Argument and return-value capture at compiler pads (issue 14), in
//! process, on x86-64 and (under qemu-user) AArch64: the C fixture's
//! functions (`fixtures/inproc/whole.c`) enabled with capture keep their
//! values (integer, floating-point, struct and many-argument calls, tail
//! calls, recursion), are counted as without, switch between capture and
//! none while enabled, and a panic unwinds through capturing frames (so
//! does a thread cancellation, and libgcc's own walk gets through them).
//! The values events carry each call's argument registers and stack words
//! and its return registers, checked here against the calls' own
//! arguments and results; the `tracer` program names and types them
//! (tracer/cli/tests/it/args.rs, x86-64).
#![cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use tracer::__private::{Args, Event, KIND_ARGS, KIND_ENTRY, KIND_EXIT, KIND_RETVAL};
use tracer::Capture;
use tracer_tests::whole_c as c;

/// Integer argument registers of the calling convention: `rdi rsi rdx rcx
/// r8 r9`; AArch64 `x0`–`x7`.
const INTS: u8 = if cfg!(target_arch = "x86_64") { 6 } else { 8 };

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
        ints: INTS,
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

/// One call as its events tell it.
#[derive(Clone, Debug)]
struct Call {
    func: u32,
    /// Its argument words, decoded (`None`: no values event came).
    args: Option<Args>,
    /// Its return registers: (`rax`, `xmm0`) or (`x0`, `d0`).
    ret: Option<(u64, u64)>,
}

/// One thread's values events waiting for their entry or exit, and the
/// arguments of its calls in progress, by depth.
#[derive(Default)]
struct Track {
    words: Vec<u64>,
    ret: Option<(u32, u64, u64)>,
    open: HashMap<u16, (u32, Option<Args>)>,
}

/// Collect every completed call of `funcs` (by index) from the events the
/// collector drains, with its values.
fn collect_calls(funcs: Vec<u32>) -> Arc<Mutex<Vec<Call>>> {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let out = calls.clone();
    let mut threads: HashMap<u64, Track> = HashMap::new();
    tracer::__private::set_event_tap(Some(Box::new(move |tid, ev: &Event| {
        if !funcs.contains(&ev.func) {
            return;
        }
        let t = threads.entry(tid).or_default();
        match ev.kind {
            KIND_ARGS => {
                if ev.flags == 0 {
                    t.words.clear();
                }
                t.words.extend([ev.ts, ev.dur]);
            }
            KIND_RETVAL => t.ret = Some((ev.func, ev.ts, ev.dur)),
            KIND_ENTRY => {
                let args = Args::decode(&std::mem::take(&mut t.words));
                t.open.insert(ev.depth, (ev.func, args));
            }
            KIND_EXIT => {
                let args = match t.open.remove(&ev.depth) {
                    Some((f, a)) if f == ev.func => a,
                    _ => None,
                };
                let ret = match t.ret.take() {
                    Some((f, a, b)) if f == ev.func => Some((a, b)),
                    _ => None,
                };
                out.lock().unwrap().push(Call {
                    func: ev.func,
                    args,
                    ret,
                });
            }
            _ => {}
        }
    })));
    calls
}

fn index(name: &str) -> u32 {
    tracer::__private::func_index(name).expect("the fixture is listed")
}

/// The calls of `name` among `calls`, each with its arguments and return
/// value (every one must have both).
fn calls_of(calls: &[Call], name: &str) -> Vec<(Args, (u64, u64))> {
    let f = index(name);
    calls
        .iter()
        .filter(|c| c.func == f)
        .map(|c| {
            let a = c
                .args
                .clone()
                .unwrap_or_else(|| panic!("{name}: no arguments: {c:?}"));
            (
                a,
                c.ret
                    .unwrap_or_else(|| panic!("{name}: no return value: {c:?}")),
            )
        })
        .collect()
}

/// The captured words are the calls' arguments, in the registers and stack
/// words of the calling convention, and their return values, integer and
/// floating-point: a call tree, a recursion, a tail call (both functions
/// get the one return value), floats and doubles, a homogeneous aggregate
/// returned in vector registers, and eight integer and nine floating-point
/// arguments with the rest on the stack.
#[test]
fn captured_values_are_the_calls_arguments_and_return_values() {
    tracer_tests::fresh_process!();
    const NAMES: [&str; 8] = [
        "c_a", "c_b", "c_c", "c_rec", "c_tail", "c_fp", "c_hfa", "c_many",
    ];
    let calls = collect_calls(NAMES.iter().map(|n| index(n)).collect());
    let all = Capture {
        ints: INTS,
        floats: 8,
        stack: 4,
        retval: true,
    };
    let r = tracer::enable_with("c_*", all).unwrap();
    assert_eq!(r.changed.len(), TREE.len(), "{r:?}");
    const N: i32 = 20;
    for i in 0..N {
        workload(i);
    }
    assert_eq!(tracer::disable("c_*").unwrap(), TREE.len());
    tracer::__private::drain();
    tracer::__private::set_event_tap(None);
    let s = tracer::stats();
    assert_eq!(s.dropped, 0, "{s:?}");
    let calls = calls.lock().unwrap().clone();
    let bits = |v: f64| v.to_bits();
    let low = |v: u64| v as u32 as i32;

    let a = calls_of(&calls, "c_a");
    assert_eq!(a.len(), N as usize);
    for (i, (args, ret)) in a.iter().enumerate() {
        let i = i as i32;
        assert_eq!(args.ints.len(), INTS as usize);
        assert_eq!(low(args.ints[0]), i, "c_a's argument");
        assert_eq!(low(ret.0), 4 * i + 9, "c_a's return value");
    }
    // c_b(x) = 2 (x + 1); c_c(x) = x + 1, also tail-called by c_tail.
    let b = calls_of(&calls, "c_b");
    assert_eq!(b.len(), 2 * N as usize);
    for (args, ret) in &b {
        assert_eq!(low(ret.0), 2 * (low(args.ints[0]) + 1));
    }
    let cc = calls_of(&calls, "c_c");
    assert_eq!(cc.len(), 3 * N as usize);
    for (args, ret) in &cc {
        assert_eq!(low(ret.0), low(args.ints[0]) + 1);
    }
    let tail = calls_of(&calls, "c_tail");
    assert_eq!(tail.len(), N as usize);
    for (i, (args, ret)) in tail.iter().enumerate() {
        assert_eq!(low(args.ints[0]), i as i32);
        assert_eq!(low(ret.0), i as i32 + 11);
    }
    // The recursion: c_rec(n) = n, from 3 down to 0, four calls each time.
    let rec = calls_of(&calls, "c_rec");
    assert_eq!(rec.len(), 4 * N as usize);
    for (k, (args, ret)) in rec.iter().enumerate() {
        // Exits come innermost first: 0, 1, 2, 3.
        assert_eq!(low(args.ints[0]), (k % 4) as i32);
        assert_eq!(low(ret.0), (k % 4) as i32);
    }
    // Floating point: c_fp(x, 0.25f) = 2x + 0.25; the float is the low
    // half of the second floating-point register.
    let fp = calls_of(&calls, "c_fp");
    assert_eq!(fp.len(), N as usize);
    for (i, (args, ret)) in fp.iter().enumerate() {
        assert_eq!(args.floats.len(), 8);
        assert_eq!(args.floats[0], bits(i as f64));
        assert_eq!(args.floats[1] as u32, 0.25f32.to_bits());
        assert_eq!(ret.1, bits(2.0 * i as f64 + 0.25));
    }
    // A homogeneous aggregate comes back in xmm0-xmm1 / d0-d3: its first
    // member is in the floating-point return register.
    let hfa = calls_of(&calls, "c_hfa");
    for (i, (args, ret)) in hfa.iter().enumerate() {
        let x = i as f64 + 0.5;
        assert_eq!(args.floats[0], bits(x));
        if cfg!(target_arch = "aarch64") {
            assert_eq!(ret.1, bits(x));
        }
    }
    // c_many(1, 2, .., 7, i, 0.5, 1.5, .., 7.5, 9, 8.5).
    let many = calls_of(&calls, "c_many");
    assert_eq!(many.len(), N as usize);
    for (i, (args, ret)) in many.iter().enumerate() {
        let i = i as u64;
        let ints: Vec<u64> = (1..=7).chain([i]).take(INTS as usize).collect();
        assert_eq!(args.ints, ints, "integer registers");
        let floats: Vec<u64> = (0..8).map(|k| bits(k as f64 + 0.5)).collect();
        assert_eq!(args.floats, floats, "floating-point registers");
        // The rest on the stack, in order: x86-64 the 7th and 8th integer
        // arguments first; AArch64 only `i` and the 9th double.
        let stack: Vec<u64> = if cfg!(target_arch = "x86_64") {
            vec![7, i, 9, bits(8.5)]
        } else {
            vec![9, bits(8.5)]
        };
        assert_eq!(args.stack[..stack.len()], stack[..], "stack words");
        let sum = 1 + 2 * 2 + 3 * 3 + 4 * 4 + 5 * 5 + 6 * 6 + 7 * 7 + 8 * i as i64 + 81;
        let fps = 0.5 + 3.0 + 7.5 + 14.0 + 22.5 + 33.0 + 45.5 + 60.0 + 76.5;
        assert_eq!(ret.1, bits(sum as f64 + fps), "return value");
    }
    // `--args=N` without debug information: the first N integer registers.
    let calls = collect_calls(vec![index("c_a")]);
    let two = Capture {
        ints: 2,
        ..Capture::NONE
    };
    assert_eq!(tracer::enable_with("c_a", two).unwrap().changed.len(), 1);
    workload(5);
    assert_eq!(tracer::disable("c_a").unwrap(), 1);
    tracer::__private::drain();
    tracer::__private::set_event_tap(None);
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let args = calls[0].args.clone().expect("arguments");
    assert_eq!(args.ints.len(), 2);
    assert_eq!(low(args.ints[0]), 5);
    assert!(args.floats.is_empty() && args.stack.is_empty());
    assert_eq!(calls[0].ret, None, "no --retval");
}

/// A thread cancelled (`pthread_cancel`) inside capturing frames: the
/// capturing return trampoline's unwind information leads glibc's forced
/// unwind to the real callers, and every cleanup runs (on AArch64 through
/// a frame that signs its return address).
#[test]
fn a_thread_cancelled_inside_capturing_frames_runs_every_cleanup() {
    tracer_tests::fresh_process!();
    const PC: &str = "pc_l1,pc_l2,pc_l3,pc_point";
    let cap = Capture::all_registers(true);
    assert_eq!(tracer::enable_with(PC, cap).unwrap().changed.len(), 4);
    // SAFETY: a plain C function starting and joining its threads.
    let r = unsafe { c::pc_run(4) };
    assert_eq!(tracer::disable(PC).unwrap(), 4);
    assert_eq!(r, 4 * 100 + 4 * 3, "traced");
    assert_eq!(count("pc_l1"), 0, "no cancelled call returned");
}

/// libgcc's own stack walk, reached past the interposers, gets through
/// capturing frames.
#[test]
fn libgccs_own_walk_gets_through_capturing_frames() {
    tracer_tests::fresh_process!();
    const RW: &str = "rw_inner,rw_middle,rw_outer";
    let cap = Capture::all_registers(true);
    assert_eq!(tracer::enable_with(RW, cap).unwrap().changed.len(), 3);
    for _ in 0..3 {
        // SAFETY: a plain C function.
        assert_eq!(unsafe { c::rw_outer(1) }, 3, "traced");
    }
    assert_eq!(tracer::disable(RW).unwrap(), 3);
    assert_eq!(count("rw_outer"), 3);
}

#[cfg(target_arch = "aarch64")]
extern "C-unwind" fn bare_boom(x: i32) -> i32 {
    if x == 42 {
        std::panic::panic_any(x);
    }
    x * 10
}

/// AArch64: capture in a function with `bti c` before its pad and in
/// functions that sign their return address (pac-ret: the capturing
/// return trampoline's address is what gets signed and authenticated),
/// also through a panic.
#[cfg(target_arch = "aarch64")]
#[test]
fn aarch64_bti_and_pac_ret_functions_capture() {
    tracer_tests::fresh_process!();
    const NAMES: [&str; 3] = ["bp_bti", "bp_pac", "bp_call"];
    let calls = collect_calls(NAMES.iter().map(|n| index(n)).collect());
    let cap = Capture::all_registers(true);
    assert_eq!(tracer::enable_with("bp_*", cap).unwrap().changed.len(), 3);
    for i in 0..20 {
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
    tracer::__private::drain();
    tracer::__private::set_event_tap(None);
    assert_eq!(count("bp_bti"), 40);
    assert_eq!(count("bp_pac"), 20);
    assert_eq!(count("bp_call"), 21);
    let calls = calls.lock().unwrap().clone();
    let low = |v: u64| v as u32 as i32;
    let pac = calls_of(&calls, "bp_pac");
    assert_eq!(pac.len(), 20);
    for (i, (args, ret)) in pac.iter().enumerate() {
        assert_eq!(low(args.ints[0]), i as i32);
        assert_eq!(low(ret.0), 7 * i as i32 + 1);
    }
    for (args, ret) in calls_of(&calls, "bp_bti") {
        assert_eq!(low(ret.0), 7 * low(args.ints[0]));
    }
    let call = calls_of(&calls, "bp_call");
    assert_eq!(call.len(), 21);
    for (args, ret) in call {
        assert_eq!(args.ints[0], bare_boom as *const () as u64, "the callback");
        assert_eq!(low(ret.0), 10 * low(args.ints[1]) + 1);
    }
}
