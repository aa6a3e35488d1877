//! A thread that was already tracing when a library with thousands of
//! compiler-padded functions was loaded: its block has no counters for them
//! (they were sized at its first event), yet its calls of the new functions
//! are counted exactly, from their exit events.
//!
//! The library is generated and built here with clang-19 (`.ci/run` installs
//! it through scripts/setup-whole.sh).
#![cfg(target_arch = "x86_64")]

use std::hint::black_box;
use std::sync::mpsc;
use tracer_tests::CLib;

const FUNCS: usize = 4000;
const CALLS: u64 = 1000;

#[tracer::traceable]
fn warm_up(x: u64) -> u64 {
    black_box(x * 3)
}

#[test]
fn calls_of_functions_loaded_after_a_thread_started_are_counted() {
    tracer_tests::fresh_process!();
    assert_eq!(tracer::enable("warm_up").unwrap(), 1);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<usize>();
    let worker = std::thread::spawn(move || {
        // The first event makes this thread's block, with counters for the
        // functions known now.
        assert_eq!(warm_up(2), 6);
        ready_tx.send(()).unwrap();
        let f = go_rx.recv().unwrap();
        // SAFETY: `f` is `int many_N(int)` of the library loaded below.
        let f: extern "C" fn(libc::c_int) -> libc::c_int = unsafe { std::mem::transmute(f) };
        for i in 0..CALLS as i32 {
            assert_eq!(f(i), i + FUNCS as i32 - 1);
        }
    });

    ready_rx.recv().unwrap();
    let before = tracer::functions().len();
    // `int many_N(int x) { return x + N; }` for N < FUNCS.
    let mut src = String::new();
    for n in 0..FUNCS {
        src.push_str(&format!(
            "__attribute__((noinline)) int many_{n}(int x) {{ return x + {n}; }}\n"
        ));
    }
    let lib = CLib::build("many", &src);
    let last = format!("many_{}", FUNCS - 1);
    let f = lib.sym(&last);

    assert_eq!(tracer::enable(&last).unwrap(), 1);
    let info = tracer::functions()
        .into_iter()
        .find(|i| i.name == last)
        .expect("the library's functions are listed");
    assert!(
        info.index as usize >= before + FUNCS - 1,
        "index {} of {} functions",
        info.index,
        before + FUNCS
    );
    go_tx.send(f).unwrap();
    worker.join().unwrap();

    let l = tracer::latency(&last).expect("calls were recorded");
    assert_eq!(l.count, CALLS, "every call of {last} is counted");
    let s = tracer::stats();
    assert_eq!(s.dropped, 0, "no event was lost");
    // Histograms only for what ran enabled (warm_up, many_3999 and whatever
    // other tests of this binary ran), not for the thousands registered.
    let made = tracer::__private::histograms_made();
    assert!((2..10).contains(&made), "{made} histograms");
    tracer::disable(&format!("warm_up {last}")).unwrap();
}
