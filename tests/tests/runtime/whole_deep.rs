//! Compiler-padded C functions (a clang-19 library loaded with `dlopen`),
//! exits seen by return hooking: recursion deeper than the shadow stack, and
//! deep recursion on several threads while another thread enables and
//! disables the function.
#![cfg(target_arch = "x86_64")]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracer_tests::CLib;

const SRC: &str = r#"
#define KEEP(x) __asm__ volatile("" : "+r"(x))
__attribute__((noinline)) int deep(int n) {
  KEEP(n);
  if (n == 0) return 0;
  int r = deep(n - 1);
  KEEP(r);
  return r + 1;
}
/* A double result and a stack argument: the return trampoline keeps xmm0. */
__attribute__((noinline)) double spin_deep(int n, double x, long a, long b, long c, long d, long e) {
  KEEP(n);
  if (n == 0) return x + (double)(a + b + c + d + e);
  double r = spin_deep(n - 1, x * 0.5, a, b, c, d, e + 1);
  KEEP(n);
  return r + 1.0;
}
"#;

type Deep = extern "C" fn(i32) -> i32;
type SpinDeep = extern "C" fn(i32, f64, i64, i64, i64, i64, i64) -> f64;

fn spin_expected(n: i32, x: f64, e: i64) -> f64 {
    if n == 0 {
        x + (1 + 2 + 3 + 4 + e) as f64
    } else {
        spin_expected(n - 1, x * 0.5, e + 1) + 1.0
    }
}

#[test]
fn padded_c_functions_under_recursion_and_live_toggling() {
    tracer_tests::fresh_process!();
    let lib = CLib::build("deep", SRC);
    // SAFETY: the symbols have these C signatures (SRC above).
    let deep: Deep = unsafe { std::mem::transmute(lib.sym("deep")) };
    // SAFETY: as above.
    let spin: SpinDeep = unsafe { std::mem::transmute(lib.sym("spin_deep")) };

    // Deeper than the 128-frame shadow stack: the outer 128 calls have their
    // exits, the deeper ones are not hooked at all, and nothing is unmatched.
    assert_eq!(tracer::enable("deep").unwrap(), 1);
    assert_eq!(deep(1000), 1000);
    assert_eq!(deep(10), 10);
    assert_eq!(deep(200), 200);
    tracer::disable("deep").unwrap();
    let l = tracer::latency("deep").expect("deep was recorded");
    assert_eq!(l.count, 128 + 11 + 128);
    assert_eq!(tracer::stats().unmatched, 0);
    assert_eq!(deep(5), 5);
    assert_eq!(tracer::latency("deep").unwrap().count, 128 + 11 + 128);

    // Four threads recursing (some deeper than the shadow stack) and
    // checking every result while this thread toggles the pad.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let sp = spin as usize;
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (stop, calls) = (stop.clone(), calls.clone());
            std::thread::spawn(move || {
                // SAFETY: as above.
                let spin: SpinDeep = unsafe { std::mem::transmute(sp) };
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let n: i32 = [3, 40, 150, 7][(i + t) % 4];
                    let x = (i * 7 + t) as f64;
                    assert_eq!(
                        spin(n, x, 1, 2, 3, 4, t as i64),
                        spin_expected(n, x, t as i64)
                    );
                    calls.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    for round in 0..40 {
        assert_eq!(tracer::enable("spin_deep").unwrap(), 1);
        // Let every thread run through at least a few calls in each state.
        let c0 = calls.load(Ordering::Relaxed);
        while calls.load(Ordering::Relaxed) < c0 + 8 {
            assert!(
                Instant::now() < deadline,
                "round {round}: the threads stalled"
            );
            std::thread::yield_now();
        }
        assert_eq!(tracer::disable("spin_deep").unwrap(), 1);
        let c1 = calls.load(Ordering::Relaxed);
        while calls.load(Ordering::Relaxed) < c1 + 8 {
            assert!(
                Instant::now() < deadline,
                "round {round}: the threads stalled"
            );
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("a worker saw a wrong result");
    }
    let l = tracer::latency("spin_deep").expect("spin_deep was recorded");
    assert!(l.count > 0);
    let s = tracer::stats();
    assert_eq!(s.unmatched, 0, "every recorded exit had its entry");
}
