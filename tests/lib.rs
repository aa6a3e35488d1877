//! Shared helpers of the integration tests.
#![deny(missing_docs)]

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Toggle function `name` around the calls of a thread that runs `call` (a
/// call lasting about `nap`, with a gap of two naps after each) in a loop:
/// each round enables it, disables it in the middle of a call (that call's
/// exit is missed), enables it again in the middle of the next call (whose
/// entry was missed), and lets a third call run whole. `started()` is the
/// number of calls begun so far. Returns the function's latency summary
/// (`None`: no call timed) and the longest call as the caller itself timed
/// it, around each call (the oracle: on a loaded machine a nap may oversleep
/// by far more than the nap).
///
/// Without the enabled-window rule, the second call's exit would be timed
/// against the first call's stale entry: two naps and a gap, longer than
/// any call really was.
pub fn toggle_mid_call(
    name: &str,
    nap: Duration,
    rounds: u64,
    started: fn() -> u64,
    call: fn(),
) -> (Option<tracer::LatencySummary>, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let caller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut longest = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                let t = std::time::Instant::now();
                call();
                longest = longest.max(t.elapsed());
                std::thread::sleep(nap * 2); // the gap a mismatch would span
            }
            longest
        })
    };
    let wait_inside = |n: u64| {
        // Until the caller is inside call number n (its entry pad has run).
        while started() < n {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(nap / 3);
    };
    let mut next = started() + 1;
    for _ in 0..rounds {
        tracer::enable(name).unwrap();
        wait_inside(next); // entry recorded
        tracer::disable(name).unwrap(); // its exit is missed
        wait_inside(next + 1); // entry missed
        tracer::enable(name).unwrap(); // exit seen, entry stale
        wait_inside(next + 2); // a call whole in this window
        std::thread::sleep(nap); // and returned
        tracer::disable(name).unwrap();
        next += 3;
    }
    stop.store(true, Ordering::SeqCst);
    let longest = caller.join().unwrap();
    (tracer::latency(name), longest)
}

/// Per-thread nesting of an event stream: every exit must close the entry
/// at its depth. Counts entries, exits and violations (with the first
/// details).
#[derive(Default)]
pub struct Checker {
    stacks: std::collections::HashMap<u64, Vec<u32>>,
    /// Exact depths: an exit must close the innermost open entry (not one
    /// further out), and a stack is cut back after a violation. Without it
    /// an entry first cuts the stack to its depth (a missed exit is not a
    /// violation) and flagged events are passed over.
    strict: bool,
    /// Events that broke the nesting.
    pub violations: u64,
    /// What each violation saw.
    pub details: Vec<String>,
    /// Entry events seen.
    pub entries: u64,
    /// Exit events seen.
    pub exits: u64,
}

impl Checker {
    /// A checker that forgives missed exits and skips flagged events
    /// (toggling Rust functions: a disable can miss an exit).
    pub fn lenient() -> Checker {
        Checker::default()
    }

    /// A checker that wants every exit to close the innermost entry
    /// (hooked returns of compiler-padded functions).
    pub fn strict() -> Checker {
        Checker {
            strict: true,
            ..Checker::default()
        }
    }

    /// Check one event of thread `tid`.
    pub fn see(&mut self, tid: u64, ev: &tracer::__private::Event) {
        if !self.strict && ev.flags != 0 {
            return;
        }
        let st = self.stacks.entry(tid).or_default();
        let d = ev.depth as usize;
        if ev.kind == tracer::__private::KIND_ENTRY {
            self.entries += 1;
            if !self.strict {
                st.truncate(d);
            }
            if st.len() != d {
                self.violations += 1;
                self.details.push(format!("entry {ev:?} stack {st:?}"));
                st.resize(d, u32::MAX);
            }
            st.push(ev.func);
        } else {
            self.exits += 1;
            let closes = if self.strict {
                st.len() == d + 1 && st[d] == ev.func
            } else {
                st.len() > d && st[d] == ev.func
            };
            if closes {
                st.truncate(d);
            } else {
                self.violations += 1;
                self.details.push(format!("exit {ev:?} stack {st:?}"));
                if self.strict {
                    st.truncate(d);
                }
            }
        }
    }
}

/// A shared library built from C source with clang-19 and
/// `-fpatchable-function-entry=5` (one 5-byte NOP per function, patchable
/// live), loaded with `dlopen`. The build directory is removed on drop; the
/// library stays loaded.
pub struct CLib {
    dir: PathBuf,
    handle: *mut libc::c_void,
}

impl CLib {
    /// Build `src` as `lib<name>.so` and load it (`RTLD_NOW`). Panics with
    /// what to install if clang-19 is missing (`.ci/run` installs it through
    /// scripts/setup-whole.sh).
    pub fn build(name: &str, src: &str) -> CLib {
        let dir = std::env::temp_dir().join(format!("tracer-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = dir.join(format!("{name}.c"));
        std::fs::write(&c, src).unwrap();
        let so = dir.join(format!("lib{name}.so"));
        let out = std::process::Command::new("clang-19")
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
        let path = CString::new(so.to_str().unwrap()).unwrap();
        // SAFETY: a plain C library without constructors.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
        assert!(!handle.is_null(), "dlopen {}", so.display());
        CLib { dir, handle }
    }

    /// The address of function `name` of the library.
    pub fn sym(&self, name: &str) -> usize {
        let n = CString::new(name).unwrap();
        // SAFETY: a valid handle and NUL-terminated name.
        let p = unsafe { libc::dlsym(self.handle, n.as_ptr()) };
        assert!(
            !p.is_null(),
            "{name} not found in {}",
            self.path().display()
        );
        p as usize
    }

    /// Where the library was built.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for CLib {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The functions of `fixtures/inproc/whole.c`, compiled with compiler pads
/// by `build.rs` (x86-64 and AArch64 only).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub mod whole_c {
    /// `c_big`'s result, returned in memory.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Big {
        /// v
        pub a: i64,
        /// v + 1
        pub b: i64,
        /// v + 2
        pub c: i64,
        /// v + 3
        pub d: i64,
        /// v + 4
        pub e: i64,
    }

    /// `c_hfa`'s result, returned in four floating-point registers.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Hfa {
        /// v
        pub a: f64,
        /// 2v
        pub b: f64,
        /// 3v
        pub c: f64,
        /// 4v
        pub d: f64,
    }

    /// A callback the C code calls (it may unwind).
    pub type Callback = extern "C-unwind" fn(i32) -> i32;

    #[allow(missing_docs)]
    extern "C-unwind" {
        pub fn c_a(x: i32) -> i32;
        pub fn c_b(x: i32) -> i32;
        pub fn c_c(x: i32) -> i32;
        pub fn c_rec(n: i32) -> i32;
        pub fn c_tail(x: i32) -> i32;
        pub fn c_fp(x: f64, y: f32) -> f64;
        pub fn c_big(v: i64) -> Big;
        pub fn c_hfa(v: f64) -> Hfa;
        #[allow(clippy::too_many_arguments)]
        pub fn c_many(
            a: i64,
            b: i64,
            c: i64,
            d: i64,
            e: i64,
            f: i64,
            g: i64,
            h: i64,
            x0: f64,
            x1: f64,
            x2: f64,
            x3: f64,
            x4: f64,
            x5: f64,
            x6: f64,
            x7: f64,
            i: i64,
            x8: f64,
        ) -> f64;
        pub fn mt_leaf(x: u64) -> u64;
        pub fn mt_mid(x: u64) -> u64;
        pub fn mt_fp(x: f64) -> f64;
        pub fn uw_call(f: Callback, x: i32) -> i32;
        pub fn uw_outer(f: Callback, x: i32) -> i32;
        pub fn uw_plain(x: i32) -> i32;
        pub fn tw_nap(ms: u32);
        pub fn tw_started() -> u64;
        /// Runs `n` threads cancelled four hooked frames deep (`pc_*`):
        /// cancelled threads × 100 + cleanups that ran.
        pub fn pc_run(n: i32) -> i32;
        /// libgcc's own stack walk from inside `rw_inner`: 1 if it saw
        /// `rw_middle`, 2 `rw_outer`, 3 both.
        pub fn rw_outer(x: i32) -> i32;
    }

    #[cfg(target_arch = "aarch64")]
    #[allow(missing_docs)]
    extern "C-unwind" {
        /// `7x`, with `bti c` before its pad.
        pub fn bp_bti(x: i32) -> i32;
        /// `7x + 1`, signing its return address (`paciasp`).
        pub fn bp_pac(x: i32) -> i32;
        /// `f(x) + 1`, signing its return address.
        pub fn bp_call(f: Callback, x: i32) -> i32;
    }

    /// What `mt_leaf` computes.
    pub fn mt_leaf_model(mut x: u64) -> u64 {
        for _ in 0..8 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
        x
    }
}

/// The environment variable naming the one test a fresh process runs.
const FRESH: &str = "TRACER_TEST_FRESH";

/// Run the calling `#[test]` in a fresh process of this test binary and
/// return from it here (the parent only waits for the child and checks
/// it). Put it first in the test's body:
///
/// ```ignore
/// #[test]
/// fn toggles() {
///     tracer_tests::fresh_process!();
///     // ... runs in a process of its own
/// }
/// ```
///
/// Cross tests run the binary under qemu-user: `TRACER_TEST_RUNNER` (set
/// by `scripts/cross-test.sh`) is the command that runs it.
#[macro_export]
macro_rules! fresh_process {
    () => {{
        fn here() {}
        if !$crate::fresh_process(::std::any::type_name_of_val(&here)) {
            return;
        }
    }};
}

/// [`fresh_process!`]'s work: `here` is the path of a function inside the
/// test (`crate::module::test::here`). True in the fresh process (run the
/// test); false in the parent, after the child passed (a failed child
/// panics here, with its output).
pub fn fresh_process(here: &str) -> bool {
    let path = here.strip_suffix("::here").unwrap_or(here);
    // libtest names a test by its path without the crate.
    let name = path.split_once("::").map_or(path, |(_, n)| n);
    if std::env::var(FRESH).is_ok_and(|v| v == name) {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's own path");
    let runner = std::env::var("TRACER_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut cmd = match words.next() {
        Some(r) => {
            let mut c = std::process::Command::new(r);
            c.args(words).arg(&exe);
            c
        }
        None => std::process::Command::new(&exe),
    };
    cmd.args([
        name,
        "--exact",
        "--nocapture",
        "--include-ignored",
        "--test-threads=1",
    ])
    .env(FRESH, name);
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot start a fresh process for test {name} ({}): {e}. Under an emulator, set \
             TRACER_TEST_RUNNER to the command that runs the test binary (as \
             scripts/cross-test.sh does)",
            exe.display()
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Shown by libtest when this test fails, or with --nocapture.
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        out.status.success(),
        "test {name} failed in its own process ({}): see its output above",
        out.status
    );
    // A filter that matched nothing would pass without running anything.
    assert!(
        stdout.contains(&format!("test {name} ...")) && stdout.contains(" 1 passed; 0 failed"),
        "test {name} did not run in its own process (filter mismatch?):\n{stdout}"
    );
    false
}

/// Poll `f` on this thread until it is ready, with a waker that does
/// nothing (the tests' futures wake themselves or never wait).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// A future that is pending once, then ready: an async fn awaiting it is
/// polled twice (suspended between).
pub struct YieldOnce(pub bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::Checker;
    use tracer::__private::{Event, KIND_ENTRY, KIND_EXIT};

    fn ev(kind: u8, func: u32, depth: u16) -> Event {
        Event {
            ts: 0,
            dur: 0,
            func,
            depth,
            kind,
            flags: 0,
        }
    }

    #[test]
    fn a_missed_exit_is_forgiven_only_when_lenient() {
        // f enters, g enters, g's exit is missed, f exits.
        let stream = [
            ev(KIND_ENTRY, 1, 0),
            ev(KIND_ENTRY, 2, 1),
            ev(KIND_EXIT, 1, 0),
        ];
        let (mut lenient, mut strict) = (Checker::lenient(), Checker::strict());
        for e in &stream {
            lenient.see(7, e);
            strict.see(7, e);
        }
        assert_eq!((lenient.entries, lenient.exits), (2, 1));
        assert_eq!(lenient.violations, 0, "{:?}", lenient.details);
        assert_eq!(strict.violations, 1, "{:?}", strict.details);
        // Balanced nesting passes both.
        let mut c = Checker::strict();
        for e in [
            ev(KIND_ENTRY, 1, 0),
            ev(KIND_ENTRY, 2, 1),
            ev(KIND_EXIT, 2, 1),
            ev(KIND_EXIT, 1, 0),
        ] {
            c.see(1, &e);
        }
        assert_eq!(c.violations, 0, "{:?}", c.details);
    }
}
