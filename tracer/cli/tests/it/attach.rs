//! `tracer attach -p PID` / `tracer detach -p PID` (issue 13), x86-64.
//!
//! The fixture (tests/fixtures/c/attach_target.c) is started plainly, with
//! no preload library, and has threads blocked in `read` on a pipe,
//! `nanosleep`, a condition variable, `poll`, `epoll_wait`, `accept` and on
//! stdin, threads running padded functions and checking their results, one
//! in malloc-heavy code and one opening and closing a padded library. It
//! checks every system call's result and errno itself; here: attach,
//! enable, `trace --graph` (nesting), `hist`, `record`, detach, several
//! times, then the program's output is compared and nothing may be left
//! behind. Then the refusals, each with its message and exit code.
#![cfg(target_arch = "x86_64")]

use super::helpers::{bin_dir, preload, workspace_root as root, TRACER};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static N: AtomicUsize = AtomicUsize::new(0);

/// Compile C sources of tests/fixtures/c with `cc` and `flags`.
fn build(cc: &str, flags: &[&str], srcs: &[&str], out: &str) -> PathBuf {
    let dir = bin_dir().join("c-fixtures").join("attach");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(out);
    let mut c = Command::new(cc);
    c.arg("-O2").args(flags).arg("-o").arg(&exe);
    for s in srcs {
        c.arg(root().join("tests/fixtures/c").join(s));
    }
    let o = c.output().unwrap_or_else(|e| {
        panic!("cannot run {cc} ({e}); install it: apt-get install -y gcc clang-19")
    });
    assert!(
        o.status.success(),
        "{c:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    exe
}

/// A private runtime directory (the sockets), removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        use std::os::unix::fs::PermissionsExt;
        let p = std::env::temp_dir().join(format!(
            "tracer-attach-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        Dir(p)
    }

    fn cmd(&self, exe: &Path) -> Command {
        let mut c = Command::new(exe);
        c.env("XDG_RUNTIME_DIR", &self.0)
            .env("NO_COLOR", "1")
            .env_remove("TRACER_AGENT")
            .env_remove("TRACER_ENABLE")
            .env_remove("TRACER_PRELOAD")
            .env_remove("LD_PRELOAD");
        c
    }

    fn tracer(&self, args: &[&str]) -> Output {
        preload();
        self.cmd(Path::new(TRACER)).args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.tracer(args);
        assert!(
            o.status.success(),
            "tracer {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Start `exe` plainly (no preload library); returns once it printed
    /// "ready".
    fn start(&self, exe: &Path, args: &[&str]) -> Proc {
        let mut c = self.cmd(exe);
        c.args(args).stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut l = String::new();
        stdout.read_line(&mut l).unwrap();
        assert!(l.starts_with("ready"), "fixture said {l:?}");
        Proc {
            child,
            stdin,
            stdout,
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running fixture, killed if the test fails.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Tell it to stop; its remaining output (sorted) and whether it exited 0.
    fn finish(mut self) -> (Vec<String>, bool) {
        let mut i = self.stdin.take().unwrap();
        i.write_all(b"stop\n").unwrap();
        drop(i);
        let mut lines: Vec<String> = Vec::new();
        let mut l = String::new();
        while self.stdout.read_line(&mut l).unwrap() > 0 {
            lines.push(l.trim_end().to_string());
            l.clear();
        }
        let st = self.child.wait().unwrap();
        lines.sort();
        (lines, st.success())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn threads_named(pid: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect()
}

fn fds(pid: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    v.sort();
    v
}

/// In a function_graph trace, `outer() {` is followed by `middle() {`
/// nested one level deeper, and `leaf();` deeper still.
fn nesting_ok(trace: &str) -> bool {
    let depth = |l: &str, name: &str| l.find(name).map(|i| i - l.find('|').unwrap_or(0));
    let lines: Vec<&str> = trace.lines().collect();
    lines.windows(3).any(|w| {
        match (
            depth(w[0], "outer() {"),
            depth(w[1], "middle() {"),
            depth(w[2], "leaf();"),
        ) {
            (Some(a), Some(b), Some(c)) => a < b && b < c,
            _ => false,
        }
    })
}

fn attach_cycle(cc: &str, name: &str) {
    let dir = Dir::new();
    let exe = build(
        cc,
        &["-fpatchable-function-entry=5", "-pthread"],
        &["attach_target.c"],
        name,
    );
    let lib = build(
        cc,
        &["-fpatchable-function-entry=5", "-shared", "-fPIC"],
        &["dl_lib.c"],
        &format!("lib{name}_dl.so"),
    );
    let p = dir.start(&exe, &[lib.to_str().unwrap()]);
    let pid = p.pid();
    let fds_before = fds(&pid);
    let threads_before = threads_named(&pid).len();
    let rec = dir.0.join("attach.rec");
    let mut rings_seen: Vec<usize> = Vec::new();
    for round in 0..3 {
        let a: serde_json::Value =
            serde_json::from_str(&dir.ok(&["attach", "-p", &pid, "--json"])).unwrap();
        assert_eq!(a["already"], false, "round {round}: {a}");
        assert_eq!(a["restarted"], round > 0, "round {round}: {a}");
        // A second attach says so and changes nothing.
        let again = dir.ok(&["attach", "-p", &pid]);
        assert!(again.contains("already has an agent"), "{again}");
        dir.ok(&["enable", "-p", &pid, "outer", "middle", "leaf", "alloc_one"]);
        let trace = dir.ok(&["trace", "--graph", "--duration", "300ms", "-p", &pid]);
        assert!(
            nesting_ok(&trace),
            "round {round}: no outer > middle > leaf nesting in:\n{}",
            trace.lines().take(40).collect::<Vec<_>>().join("\n")
        );
        let hist = dir.ok(&["hist", "--duration", "200ms", "-p", &pid]);
        assert!(
            hist.contains("outer") && hist.contains("alloc_one"),
            "{hist}"
        );
        dir.ok(&[
            "record",
            "-o",
            rec.to_str().unwrap(),
            "--duration",
            "200ms",
            "-p",
            &pid,
        ]);
        let report = dir.ok(&["report", rec.to_str().unwrap()]);
        assert!(report.contains("middle"), "{report}");
        let d = dir.ok(&["detach", "-p", &pid]);
        assert!(d.contains("4 functions disabled"), "{d}");
        // Nothing left: no agent threads, no socket, no new descriptors.
        let names = threads_named(&pid);
        assert!(
            !names.iter().any(|n| n.starts_with("tracer-")),
            "round {round}: threads left: {names:?}"
        );
        assert_eq!(names.len(), threads_before, "{names:?}");
        let socks: Vec<_> = std::fs::read_dir(dir.0.join("tracer"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(socks.is_empty(), "sockets left: {socks:?}");
        // Left on purpose: the arena segments (memfds) holding each traced
        // thread's ring block, which belongs to the thread until it exits (a
        // hook may be writing it) and is used again by the next attach:
        // their number must not grow.
        // The fixture's own dlopen holds its library open for a moment.
        let after = fds(&pid);
        let rings = after
            .iter()
            .filter(|f| f.contains("memfd:tracer-thread"))
            .count();
        assert!(
            rings <= 3,
            "round {round}: {rings} ring blocks for 3 traced threads"
        );
        rings_seen.push(rings);
        let leaked: Vec<&String> = after
            .iter()
            .filter(|f| {
                !fds_before.contains(f)
                    && !f.contains("memfd:tracer-thread")
                    && !f.ends_with("_dl.so")
            })
            .collect();
        assert!(
            leaked.is_empty(),
            "round {round}: descriptors left: {leaked:?}"
        );
        // Tracing is off: `status` has no agent to talk to.
        let st = dir.tracer(&["status", "-p", &pid]);
        assert_eq!(st.status.code(), Some(3));
    }
    assert!(
        rings_seen.windows(2).all(|w| w[1] <= w[0].max(3)),
        "ring blocks grew across attaches: {rings_seen:?}"
    );
    let (lines, ok) = p.finish();
    let want = [
        "accept ok",
        "all ok",
        "condvar ok",
        "dlopener ok",
        "epoll_wait ok",
        "mallocer ok",
        "nanosleep ok",
        "poll ok",
        "read ok",
        "worker 10 ok",
        "worker 20 ok",
    ];
    assert_eq!(lines, want, "the program noticed");
    assert!(ok, "the fixture failed");
}

#[test]
fn attach_trace_detach_clang() {
    attach_cycle("clang-19", "attach_clang");
}

/// GCC's five 1-byte NOPs are converted at attach.
#[test]
fn attach_trace_detach_gcc_nop_pads() {
    attach_cycle("gcc", "attach_gcc");
}

#[test]
fn refuses_a_missing_process() {
    let dir = Dir::new();
    let o = dir.tracer(&["attach", "-p", "999999999"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no process 999999999"));
}

#[test]
fn refuses_a_program_without_pads() {
    let dir = Dir::new();
    let exe = build("gcc", &["-pthread"], &["attach_target.c"], "attach_nopads");
    let p = dir.start(&exe, &[]);
    let o = dir.tracer(&["attach", "-p", &p.pid()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no compiler pads") && err.contains("-fpatchable-function-entry=5"),
        "{err}"
    );
    let (lines, ok) = p.finish();
    assert!(ok && lines.contains(&"all ok".to_string()), "{lines:?}");
}

#[test]
fn refuses_a_static_program() {
    let dir = Dir::new();
    let exe = build(
        "gcc",
        &["-fpatchable-function-entry=5", "-pthread", "-static"],
        &["attach_target.c"],
        "attach_static",
    );
    let p = dir.start(&exe, &[]);
    let o = dir.tracer(&["attach", "-p", &p.pid()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("statically linked") || err.contains("static executable"),
        "{err}"
    );
    let (_, ok) = p.finish();
    assert!(ok);
}

#[test]
fn refuses_a_process_traced_already() {
    let dir = Dir::new();
    let exe = build(
        "clang-19",
        &["-fpatchable-function-entry=5", "-pthread"],
        &["attach_target.c"],
        "attach_traced",
    );
    let p = dir.start(&exe, &[]);
    let pid: i32 = p.pid().parse().unwrap();
    // This thread becomes its main thread's tracer (without stopping it).
    // SAFETY: PTRACE_SEIZE takes no pointers.
    let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, 0usize) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    let o = dir.tracer(&["attach", "-p", &p.pid()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("being traced already"), "{err}");
    // Let it go: interrupt, wait, detach (a seized thread must be stopped
    // to be detached).
    // SAFETY: plain ptrace/waitpid calls on our tracee.
    unsafe {
        libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0usize, 0usize);
        let mut st = 0;
        libc::waitpid(pid, &mut st, libc::__WALL);
        libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize);
    }
    let (lines, ok) = p.finish();
    assert!(ok, "{lines:?}");
}

/// Another user may not ptrace the process: the refusal names what to do.
/// (Runs as root only: it drops to `nobody` with setpriv.)
#[test]
fn refuses_without_permission() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run tracer as another user");
        return;
    }
    let dir = Dir::new();
    let exe = build(
        "clang-19",
        &["-fpatchable-function-entry=5", "-pthread"],
        &["attach_target.c"],
        "attach_perm",
    );
    let p = dir.start(&exe, &[]);
    let o = dir
        .cmd(Path::new("setpriv"))
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", TRACER])
        .args(["attach", "-p", &p.pid()])
        .env("XDG_RUNTIME_DIR", "/nonexistent")
        .output()
        .expect("setpriv runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no permission to ptrace") && err.contains("CAP_SYS_PTRACE"),
        "{err}"
    );
    let (_, ok) = p.finish();
    assert!(ok);
}

/// Remove what `cargo test` put in the environment that would steer a
/// nested cargo (as tests/whole_rust.rs does).
fn scrub(c: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME")
            || k.starts_with("RUSTC")
            || k.starts_with("RUSTDOC")
            || k == "CARGO"
            || k == "RUSTUP_TOOLCHAIN"
            || k == "RUSTFLAGS"
        {
            c.env_remove(&k);
        }
    }
}

/// tests/fixtures/whole-rust built with nightly and `-Z
/// patchable-function-entry=5` (where tests/whole_rust.rs builds it).
fn whole_rust() -> PathBuf {
    let target = bin_dir().parent().unwrap().join("whole-rust");
    let mut c = Command::new("rustup");
    c.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--release",
        "--manifest-path",
    ])
    .arg(root().join("tests/fixtures/whole-rust/Cargo.toml"));
    scrub(&mut c);
    c.env("RUSTFLAGS", "-Z patchable-function-entry=5")
        .env("CARGO_TARGET_DIR", &target);
    let o = c.output().expect(
        "rustup runs (install a nightly: rustup toolchain install nightly --profile minimal)",
    );
    assert!(
        o.status.success(),
        "the whole-rust fixture's nightly build failed (scripts/setup-whole.sh installs \
         nightly):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    target.join("release/whole-rust")
}

/// A whole Rust program (every function padded, no tracer linked) started
/// plainly: attached, traced (panics caught through traced frames
/// included), detached, twice; it ends normally.
#[test]
fn attach_a_whole_rust_program() {
    let exe = whole_rust();
    let dir = Dir::new();
    // Its four threads spin on one CPU (taskset execs it: same pid), so a
    // debug-built tracer on a small, busy machine keeps up with the events.
    let mut c = dir.cmd(Path::new("taskset"));
    c.args(["-c", "0"])
        .arg(&exe)
        .arg("threads")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let stdin = child.stdin.take();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut l = String::new();
    stdout.read_line(&mut l).unwrap();
    assert_eq!(l, "ready\n");
    let p = Proc {
        child,
        stdin,
        stdout,
    };
    let pid = p.pid();
    for _ in 0..2 {
        dir.ok(&["attach", "-p", &pid]);
        dir.ok(&[
            "enable",
            "-p",
            &pid,
            "whole_rust::work::*",
            "whole_rust::parse::*",
            "whole_rust::boom::*",
        ]);
        let trace = dir.ok(&["trace", "--graph", "--duration", "300ms", "-p", &pid]);
        let nested = trace.lines().collect::<Vec<_>>().windows(2).any(|w| {
            w[0].contains("whole_rust::parse::line() {")
                && w[1].contains("whole_rust::parse::number();")
        });
        assert!(
            nested,
            "no parse::line > parse::number nesting in:\n{trace}"
        );
        let hist = dir.ok(&["hist", "--duration", "200ms", "-p", &pid]);
        assert!(hist.contains("whole_rust::boom::guarded"), "{hist}");
        let d = dir.ok(&["detach", "-p", &pid]);
        assert!(d.contains("6 functions disabled"), "{d}");
        assert!(!threads_named(&pid).iter().any(|n| n.starts_with("tracer-")));
    }
    let (lines, ok) = p.finish();
    assert_eq!(lines, ["done"]);
    assert!(ok, "the program failed");
}

/// Attach and detach in a loop, nothing else, while the program's threads
/// are in malloc-heavy code and open and close a padded library.
#[test]
fn attach_detach_stress() {
    let dir = Dir::new();
    let exe = build(
        "gcc",
        &["-fpatchable-function-entry=5", "-pthread"],
        &["attach_target.c"],
        "attach_stress",
    );
    let lib = build(
        "gcc",
        &["-fpatchable-function-entry=5", "-shared", "-fPIC"],
        &["dl_lib.c"],
        "libattach_stress_dl.so",
    );
    let p = dir.start(&exe, &[lib.to_str().unwrap()]);
    let pid = p.pid();
    for _ in 0..10 {
        dir.ok(&["attach", "-p", &pid]);
        dir.ok(&["status", "-p", &pid]);
        dir.ok(&["detach", "-p", &pid]);
    }
    let (lines, ok) = p.finish();
    assert!(lines.contains(&"all ok".to_string()), "{lines:?}");
    assert!(ok, "the program noticed: {lines:?}");
}
