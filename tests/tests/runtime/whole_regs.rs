//! Compiler-padded C functions keep every argument register through an
//! enabled pad and its entry stub, including the ones clang's
//! `preserve_none` convention adds (`r11` and `rax` carry its 11th and 12th
//! arguments; CPython 3.14's tail-calling interpreter is built this way).
#![cfg(target_arch = "x86_64")]

use tracer_tests::CLib;

const SRC: &str = r#"
#define W(n, x) ((long)(n) * (x))
__attribute__((preserve_none, noinline))
long pn(long a, long b, long c, long d, long e, long f, long g, long h, long i, long j, long k, long l) {
  return W(1, a) + W(2, b) + W(3, c) + W(4, d) + W(5, e) + W(6, f) + W(7, g) + W(8, h)
       + W(9, i) + W(10, j) + W(11, k) + W(12, l);
}
__attribute__((noinline)) long call_pn(long base) {
  return pn(base + 1, base + 2, base + 3, base + 4, base + 5, base + 6, base + 7, base + 8,
            base + 9, base + 10, base + 11, base + 12);
}
"#;

fn expected(base: i64) -> i64 {
    (1..=12).map(|n| n * (base + n)).sum()
}

#[test]
fn preserve_none_arguments_survive_the_entry_stub() {
    tracer_tests::fresh_process!();
    let lib = CLib::build("regs", SRC);
    // SAFETY: `long call_pn(long)` (SRC above).
    let call: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(lib.sym("call_pn")) };
    assert_eq!(call(100), expected(100));
    assert_eq!(tracer::enable("pn call_pn").unwrap(), 2);
    for base in [0, 7, 1000] {
        assert_eq!(call(base), expected(base), "base {base}");
    }
    tracer::disable("pn call_pn").unwrap();
    assert_eq!(tracer::latency("pn").map(|l| l.count), Some(3));
    assert_eq!(tracer::latency("call_pn").map(|l| l.count), Some(3));
}
