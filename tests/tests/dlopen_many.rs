//! A thread that was already tracing when a library with thousands of
//! compiler-padded functions was loaded: its block has no counters for them
//! (they were sized at its first event), yet its calls of the new functions
//! are counted exactly, from their exit events.
//!
//! The library is generated and built here with clang-19 (`.ci/run` installs
//! it through scripts/setup-whole.sh).
#![cfg(target_arch = "x86_64")]

use std::ffi::CString;
use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;

const FUNCS: usize = 4000;
const CALLS: u64 = 1000;

#[tracer::traceable]
fn warm_up(x: u64) -> u64 {
    black_box(x * 3)
}

/// `libmany.so`: `int many_N(int x) { return x + N; }` for N < FUNCS.
fn build() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tracer-dlopen-many-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut src = String::new();
    for n in 0..FUNCS {
        src.push_str(&format!(
            "__attribute__((noinline)) int many_{n}(int x) {{ return x + {n}; }}\n"
        ));
    }
    let c = dir.join("many.c");
    std::fs::write(&c, src).unwrap();
    let so = dir.join("libmany.so");
    let out = Command::new("clang-19")
        .args([
            "-O1",
            "-shared",
            "-fPIC",
            "-fpatchable-function-entry=5",
            "-o",
        ])
        .arg(&so)
        .arg(&c)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run clang-19 ({e}); install it: apt-get install -y clang-19")
        });
    assert!(
        out.status.success(),
        "clang-19 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    so
}

#[test]
fn calls_of_functions_loaded_after_a_thread_started_are_counted() {
    let so = build();
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

    let path = CString::new(so.to_str().unwrap()).unwrap();
    // SAFETY: a plain C library without constructors.
    let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
    assert!(!h.is_null(), "dlopen {}", so.display());
    let last = format!("many_{}", FUNCS - 1);
    let name = CString::new(last.clone()).unwrap();
    // SAFETY: a valid handle and symbol name.
    let f = unsafe { libc::dlsym(h, name.as_ptr()) };
    assert!(!f.is_null());

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
    go_tx.send(f as usize).unwrap();
    worker.join().unwrap();

    let l = tracer::latency(&last).expect("calls were recorded");
    assert_eq!(l.count, CALLS, "every call of {last} is counted");
    let s = tracer::stats();
    assert_eq!(s.dropped, 0, "no event was lost");
    tracer::disable(&format!("warm_up {last}")).unwrap();
    let _ = std::fs::remove_dir_all(so.parent().unwrap());
}
