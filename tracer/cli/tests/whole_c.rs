//! Whole C and C++ programs built with compiler pads, through the preload
//! library: every pad mode of gcc and clang (`-fpatchable-function-entry=5`,
//! GCC's `-pg -mfentry -mnop-mcount -mrecord-mcount`), the function_graph of
//! a fixed call tree compared as text, one and four threads running padded
//! functions while another process enables and disables them, `dlopen` /
//! `dlclose` of a padded library, `longjmp` out of traced frames and C++
//! exceptions through them.
//!
//! The fixtures (tests/fixtures/c) are compiled here with gcc, g++, clang-19
//! and clang++-19 (`.ci/run` installs clang-19; a missing compiler fails
//! the test with the command to install it).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

const TRACER: &str = env!("CARGO_BIN_EXE_tracer");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The target directory the `tracer` binary is in (the preload library is
/// built next to it, where `tracer run` looks).
fn bin_dir() -> PathBuf {
    Path::new(TRACER).parent().unwrap().to_path_buf()
}

fn preload() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = bin_dir();
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.args(["build", "-q", "-p", "tracer-preload"])
            .current_dir(root());
        // Same profile as this test binary (target/<profile>/).
        if dir.file_name().is_some_and(|n| n == "release") {
            c.arg("--release");
        }
        let st = c.status().expect("cargo runs");
        assert!(st.success(), "cargo build -p tracer-preload failed");
        let lib = dir.join("libtracer_preload.so");
        assert!(lib.is_file(), "{} was not built", lib.display());
        lib
    })
}

/// A pad mode: compiler and flags.
#[derive(Clone, Copy, Debug)]
struct Mode {
    name: &'static str,
    cc: &'static str,
    cxx: &'static str,
    flags: &'static [&'static str],
}

const GCC_PFE: Mode = Mode {
    name: "gcc-pfe",
    cc: "gcc",
    cxx: "g++",
    flags: &["-fpatchable-function-entry=5"],
};
const GCC_MCOUNT: Mode = Mode {
    name: "gcc-mcount",
    cc: "gcc",
    cxx: "g++",
    flags: &[
        "-pg",
        "-mfentry",
        "-mnop-mcount",
        "-mrecord-mcount",
        "-fno-pie",
        "-no-pie",
    ],
};
const CLANG_PFE: Mode = Mode {
    name: "clang-pfe",
    cc: "clang-19",
    cxx: "clang++-19",
    flags: &["-fpatchable-function-entry=5"],
};
const MODES: [Mode; 3] = [GCC_PFE, GCC_MCOUNT, CLANG_PFE];
/// `-pg -mfentry` without `-mnop-mcount`: real calls to `__fentry__`, which
/// the tracer must refuse with the flags to use instead.
const GCC_FENTRY_CALLS: Mode = Mode {
    name: "gcc-fentry-calls",
    cc: "gcc",
    cxx: "g++",
    flags: &["-pg", "-mfentry", "-mrecord-mcount", "-fno-pie", "-no-pie"],
};

static N: AtomicUsize = AtomicUsize::new(0);

/// Compile `srcs` (in tests/fixtures/c) in `mode` with `extra` flags.
fn build(mode: Mode, cxx: bool, srcs: &[&str], out: &str, extra: &[&str]) -> PathBuf {
    let dir = bin_dir().join("c-fixtures").join(mode.name);
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(out);
    let cc = if cxx { mode.cxx } else { mode.cc };
    let mut c = Command::new(cc);
    c.arg("-O2")
        .args(mode.flags)
        .args(extra)
        .arg("-o")
        .arg(&exe);
    for s in srcs {
        c.arg(root().join("tests/fixtures/c").join(s));
    }
    let out = c.output().unwrap_or_else(|e| {
        panic!("cannot run {cc} ({e}); install it: apt-get install -y gcc g++ clang-19")
    });
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// A private runtime directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        use std::os::unix::fs::PermissionsExt;
        let p = std::env::temp_dir().join(format!(
            "tracer-whole-c-{}-{}",
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
            .env_remove("LD_PRELOAD");
        c
    }

    fn tracer(&self, args: &[&str]) -> Output {
        self.cmd(Path::new(TRACER)).args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.tracer(args);
        assert!(
            o.status.success(),
            "tracer {args:?} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Start `exe` with the preload library, talking over stdin/stdout;
    /// returns once it printed "ready".
    fn start(&self, exe: &Path, args: &[&str]) -> Proc {
        let mut c = self.cmd(exe);
        c.args(args)
            .env("LD_PRELOAD", preload())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut p = Proc {
            child,
            stdin,
            stdout,
        };
        assert_eq!(p.line(), "ready");
        // The preload library's constructor made the socket before main:
        // it answers as soon as the program has printed anything.
        let o = self.tracer(&["status", "-p", &p.pid()]);
        assert!(
            o.status.success(),
            "no agent right after the fixture's first line: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        p
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

    fn line(&mut self) -> String {
        let mut s = String::new();
        self.stdout.read_line(&mut s).unwrap();
        s.trim_end().to_string()
    }

    fn send(&mut self, cmd: &str) -> String {
        let i = self.stdin.as_mut().unwrap();
        writeln!(i, "{cmd}").unwrap();
        i.flush().unwrap();
        self.line()
    }

    fn finish(mut self) -> (i32, String) {
        drop(self.stdin.take());
        let mut rest = String::new();
        for l in (&mut self.stdout).lines() {
            rest.push_str(&l.unwrap());
            rest.push('\n');
        }
        let st = self.child.wait().unwrap();
        (st.code().unwrap_or(-1), rest)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `tracer run` printed, and its exit code.
struct Ran {
    code: i32,
    out: String,
    err: String,
}

/// `tracer run --enable P [--trace] -- exe args…`, in `dir` (where `-pg`
/// programs write gmon.out).
/// `out` is the program's stdout followed by the trace (`run -o`).
fn run_with(dir: &Dir, pattern: &str, trace: bool, exe: &Path, args: &[&Path]) -> Ran {
    let trace_file = dir.0.join("run-trace.txt");
    let _ = std::fs::remove_file(&trace_file);
    let o = dir
        .cmd(Path::new(TRACER))
        .current_dir(&dir.0)
        .env("TRACER_PRELOAD", preload())
        .args(["run", "--enable", pattern])
        .args(trace.then_some("--trace"))
        .arg("-o")
        .arg(&trace_file)
        .arg("--")
        .arg(exe)
        .args(args)
        .output()
        .unwrap();
    let mut out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.push_str(&std::fs::read_to_string(&trace_file).unwrap_or_default());
    Ran {
        code: o.status.code().unwrap_or(-1),
        out,
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `tracer run --enable P --trace -- exe`: (exit code, stdout).
fn run_traced(dir: &Dir, exe: &Path, pattern: &str) -> (i32, String) {
    let r = run_with(dir, pattern, true, exe, &[]);
    (r.code, r.out)
}

/// The call-graph part of function_graph lines (after the `|`).
fn graph(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with(" 1)") && l.contains('|'))
        .map(|l| l.split_once('|').unwrap().1.trim_end().to_string())
        .collect()
}

#[test]
fn call_tree_nests_exactly_as_called_in_every_pad_mode() {
    let expected = [
        "  a() {",
        "    b() {",
        "      c();",
        "    } /* b */",
        "    b() {",
        "      c();",
        "    } /* b */",
        "    rec() {",
        "      rec() {",
        "        rec();",
        "      } /* rec */",
        "    } /* rec */",
        "  } /* a */",
    ];
    for mode in MODES {
        let exe = build(mode, false, &["tree.c"], "tree", &[]);
        let dir = Dir::new();
        let (code, out) = run_traced(&dir, &exe, "a,b,c,rec");
        assert_eq!(code, 0, "{mode:?}:\n{out}");
        assert!(
            out.lines().any(|l| l == "12"),
            "{mode:?}: the program's result:\n{out}"
        );
        assert_eq!(graph(&out), expected, "{mode:?}:\n{out}");
    }
}

#[test]
fn stack_walks_inside_traced_frames_see_the_real_callers() {
    for mode in MODES {
        let exe = build(mode, false, &["bt.c"], "bt", &[]);
        let walks = |out: &str| -> Vec<String> {
            out.lines()
                .filter(|l| l.starts_with("backtrace ") || l.starts_with("unwind "))
                .map(String::from)
                .collect()
        };
        let plain = Command::new(&exe).output().unwrap();
        assert!(plain.status.success(), "{mode:?}");
        let plain = walks(&String::from_utf8_lossy(&plain.stdout));
        assert_eq!(plain.len(), 2, "{mode:?}: {plain:?}");
        let dir = Dir::new();
        let (code, out) = run_traced(&dir, &exe, "main,outer,middle,inner");
        assert_eq!(code, 0, "{mode:?}:\n{out}");
        assert!(out.contains("r=4"), "{mode:?}:\n{out}");
        // Frame for frame what the untraced program saw: no return
        // trampoline, no frame of the tracer's, nothing cut short.
        assert_eq!(walks(&out), plain, "{mode:?}:\n{out}");
        // The walked frames were hooked again: their exits are recorded.
        let g = graph(&out);
        for f in ["main", "outer", "middle"] {
            assert!(
                g.iter().any(|l| l.trim() == format!("}} /* {f} */")),
                "{mode:?}: no exit of {f}:\n{out}"
            );
        }
        assert!(
            g.iter().any(|l| l.trim().starts_with("inner();")),
            "{mode:?}:\n{out}"
        );
    }
}

#[test]
fn programs_the_command_starts_are_left_alone() {
    let exe = build(CLANG_PFE, false, &["sys.c"], "sys", &[]);
    let dir = Dir::new();
    let Ran { code, out, err } = run_with(&dir, "work", true, &exe, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("s=6"), "{out}");
    assert_eq!(graph(&out), ["  work();"; 3], "{out}");
    // The three `sh -c true` children (preloaded too) did not take
    // TRACER_ENABLE (they have no such function) nor wait for a reader.
    assert!(!err.contains("TRACER_ENABLE"), "{err}");
    assert!(!err.contains("reader"), "{err}");
}

#[test]
fn run_enables_functions_of_a_library_loaded_later() {
    let lib = build(
        CLANG_PFE,
        false,
        &["dl_lib.c"],
        "libplug.so",
        &["-shared", "-fPIC", "-fuse-ld=lld"],
    );
    let exe = build(CLANG_PFE, false, &["plug_main.c"], "plug_main", &["-ldl"]);
    let dir = Dir::new();
    let Ran { code, out, err } = run_with(&dir, "before,lib_*", true, &exe, &[lib.as_path()]);
    assert_eq!(code, 0, "{out}\n{err}");
    // lib_fn(i) = 7i + 1: 1 + 8 + 15, plus before(1) = 2.
    assert!(out.contains("s=26"), "{out}\n{err}");
    assert!(err.contains("'lib_*'"), "a note about the pattern: {err}");
    // Named in the trace although the reader attached before the library
    // was loaded.
    let mut want = vec!["  before();".to_string()];
    for _ in 0..3 {
        want.extend(["  lib_fn() {", "    lib_inner();", "  } /* lib_fn */"].map(String::from));
    }
    assert_eq!(graph(&out), want, "{out}\n{err}");
}

#[test]
fn overloads_and_same_named_statics_stay_apart() {
    for mode in [GCC_PFE, CLANG_PFE] {
        let exe = build(mode, true, &["ovl.cpp", "ovl2.cpp"], "ovl", &[]);
        let dir = Dir::new();
        let (code, out) = run_traced(&dir, &exe, "ns::f,helper");
        assert_eq!(code, 0, "{mode:?}:\n{out}");
        // 1+2+3 + 0+2+4+6+8 + 10+11 + 20+21+22+23
        assert!(out.contains("s=133"), "{mode:?}:\n{out}");
        let g = graph(&out);
        let count = |name: &str| {
            g.iter()
                .filter(|l| l.trim() == format!("{name}();"))
                .count()
        };
        assert_eq!(count("ns::f(int)"), 3, "{mode:?}:\n{out}");
        assert_eq!(count("ns::f(double)"), 5, "{mode:?}:\n{out}");
        // The two files' `static int helper(int)`: numbered in address
        // order (which is which depends on the link), counts apart.
        let mut h = [count("helper(int)"), count("helper(int)#2")];
        h.sort_unstable();
        assert_eq!(h, [2, 4], "{mode:?}:\n{out}");
    }
}

#[test]
fn calls_to_fentry_are_refused_with_the_flags_to_use() {
    let exe = build(GCC_FENTRY_CALLS, false, &["tree.c"], "tree", &[]);
    let dir = Dir::new();
    let Ran { code, out, err } = run_with(&dir, "a", false, &exe, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("\n12\n") || out.starts_with("12\n"), "{out}");
    assert!(
        err.contains("calls __fentry__") && err.contains("-mnop-mcount"),
        "{err}"
    );
    assert!(!out.contains("enabled a"), "{out}");
    assert!(!out.contains("nothing changed"), "{out}");
}

#[test]
fn coroutines_suspended_in_traced_frames_keep_their_returns() {
    for mode in [GCC_PFE, CLANG_PFE] {
        let exe = build(mode, false, &["coro.c"], "coro", &[]);
        let dir = Dir::new();
        let (code, out) = run_traced(&dir, &exe, "work,walk");
        assert_eq!(code, 0, "{mode:?}:\n{out}");
        // sum of 2i + 1 for i < 100
        assert!(out.contains("sum=10000"), "{mode:?}:\n{out}");
        assert!(out.contains("walk=1"), "{mode:?}:\n{out}");
        // Every work() returned through the trampoline: 100 exits (the
        // abandoned one never returns).
        let g = graph(&out);
        let exits = g
            .iter()
            .filter(|l| l.trim() == "work();" || l.trim() == "} /* work */")
            .count();
        assert_eq!(exits, 100, "{mode:?}:\n{out}");
    }
}

#[test]
fn an_exception_caught_inside_a_cleanup_of_another() {
    for mode in [GCC_PFE, CLANG_PFE] {
        let exe = build(mode, true, &["nest.cpp"], "nest", &[]);
        let dir = Dir::new();
        let (code, out) = run_traced(&dir, &exe, "inner_throw,thrower,middle,outer,catcher");
        assert_eq!(code, 0, "{mode:?}:\n{out}");
        // 50 inner exceptions caught in ~D; 50 outer ones: sum of 100 + i%3.
        assert!(out.contains("caught=50 sum=5049"), "{mode:?}:\n{out}");
        let g = graph(&out);
        assert_eq!(
            g.iter().filter(|l| l.trim() == "} /* catcher */").count(),
            50,
            "{mode:?}:\n{out}"
        );
    }
}

#[test]
fn pthread_exit_inside_traced_frames_runs_every_destructor() {
    for mode in [GCC_PFE, CLANG_PFE] {
        let exe = build(mode, true, &["texit.cpp"], "texit", &["-pthread"]);
        let dir = Dir::new();
        let (code, out) = run_traced(&dir, &exe, "inner,outer");
        assert_eq!(code, 0, "{mode:?}:\n{out}");
        // Two destructors per thread (outer's and the thread function's).
        assert!(out.contains("dtors=40"), "{mode:?}:\n{out}");
    }
}

#[test]
fn a_program_with_its_own_unwinder_gets_entry_events_only() {
    for mode in [GCC_PFE, CLANG_PFE] {
        let exe = build(
            mode,
            true,
            &["exc.cpp"],
            "exc-static",
            &["-static-libgcc", "-static-libstdc++"],
        );
        let dir = Dir::new();
        let Ran { code, out, err } =
            run_with(&dir, "thrower,middle,catcher,after", true, &exe, &[]);
        // Its exceptions never pass the interposers: with hooked returns
        // they would end in std::terminate.
        assert_eq!(code, 0, "{mode:?}:\n{out}\n{err}");
        assert!(out.contains("caught=100 sum=6"), "{mode:?}:\n{out}");
        assert!(err.contains("-static-libgcc"), "{mode:?}:\n{err}");
        let g = graph(&out);
        assert!(
            g.iter().any(|l| l.trim() == "catcher() {"),
            "{mode:?}:\n{out}"
        );
        assert!(
            !g.iter().any(|l| l.trim() == "} /* catcher */"),
            "{mode:?}:\n{out}"
        );
    }
}

#[test]
fn threads_keep_correct_results_while_pads_are_toggled() {
    for (mode, threads) in MODES.iter().flat_map(|&m| [(m, 1), (m, 4)]) {
        let exe = build(mode, false, &["mt.c"], "mt", &["-pthread"]);
        let dir = Dir::new();
        let mut p = dir.start(&exe, &[&threads.to_string()]);
        let pid = p.pid();
        let list = dir.ok(&["list", "-p", &pid, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&list).unwrap();
        let names: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["name"].as_str())
            .collect();
        for f in ["w_add", "w_scale", "w_fib", "w_step", "worker", "main"] {
            assert!(names.contains(&f), "{mode:?}: {f} missing from {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.starts_with("tracer")),
            "the tracer's own functions are listed: {names:?}"
        );
        for _ in 0..25 {
            dir.ok(&["enable", "-p", &pid, "w_*"]);
            std::thread::sleep(std::time::Duration::from_millis(5));
            dir.ok(&["disable", "-p", &pid, "w_*"]);
        }
        dir.ok(&["enable", "-p", &pid, "w_*"]);
        // Until all four workers have recorded events through the enabled
        // pads (the deadline only bounds how long a broken build takes to fail).
        let recording = |st: &serde_json::Value| {
            st["threads_detail"].as_array().map_or(0, |t| {
                t.iter().filter(|t| t["written"].as_u64() > Some(0)).count()
            })
        };
        let t0 = std::time::Instant::now();
        let st = loop {
            let st: serde_json::Value =
                serde_json::from_str(&dir.ok(&["status", "-p", &pid, "--json"])).unwrap();
            if recording(&st) >= threads || t0.elapsed().as_secs() > 30 {
                break st;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert!(
            recording(&st) >= threads,
            "{mode:?}, {threads} threads: the workers did not run the enabled pads: {st}"
        );
        assert_eq!(st["returns"], "hooked", "{mode:?}: {st}");
        assert_eq!(st["enabled"].as_array().unwrap().len(), 4, "{mode:?}: {st}");
        p.stdin.as_mut().unwrap().write_all(b"stop\n").unwrap();
        let (code, rest) = p.finish();
        assert_eq!(rest.trim(), "errors=0", "{mode:?}, {threads} threads");
        assert_eq!(code, 0, "{mode:?}, {threads} threads");
    }
}

#[test]
fn gcc_nop_pads_are_converted_at_start_but_not_in_libraries_opened_later() {
    let lib_dir = bin_dir().join("c-fixtures");
    for (mode, lib_flags) in [
        (GCC_PFE, &["-shared", "-fPIC"][..]),
        (CLANG_PFE, &["-shared", "-fPIC", "-fuse-ld=lld"][..]),
    ] {
        let lib = build(mode, false, &["dl_lib.c"], "libdl.so", lib_flags);
        let exe = build(mode, false, &["dl_main.c"], "dl_main", &["-ldl"]);
        let _ = &lib_dir;
        let dir = Dir::new();
        let mut p = dir.start(&exe, &[lib.to_str().unwrap()]);
        let pid = p.pid();
        let listed = |dir: &Dir| -> serde_json::Value {
            let o = dir.tracer(&["list", "-p", &pid, "lib_*", "--json"]);
            serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
        };
        assert!(
            listed(&dir).is_null(),
            "{mode:?}: lib_* listed before dlopen"
        );
        // main's pad was converted (gcc) or is a 5-byte NOP (clang): enabling works.
        assert!(dir
            .ok(&["enable", "-p", &pid, "main"])
            .contains("enabled main"));
        assert_eq!(p.send("open"), "ok");
        let v = listed(&dir);
        let fns = v.as_array().expect("lib_* listed after dlopen");
        assert_eq!(fns.len(), 2, "{v}");
        let gcc = mode.cc == "gcc";
        for f in fns {
            let problems = f["problems"].as_array().unwrap();
            if gcc {
                assert!(
                    problems[0].as_str().unwrap().contains("five 1-byte NOPs"),
                    "{f}"
                );
            } else {
                assert!(problems.is_empty(), "{f}");
            }
        }
        let en = dir.tracer(&["enable", "-p", &pid, "lib_*"]);
        if gcc {
            // Refused, and told why (not "already enabled").
            let (out, err) = (
                String::from_utf8_lossy(&en.stdout),
                String::from_utf8_lossy(&en.stderr),
            );
            assert!(!out.contains("enabled"), "{out}");
            assert!(err.contains("five 1-byte NOPs"), "{err}");
        } else {
            assert!(en.status.success());
            assert_eq!(listed(&dir)[0]["enabled"], true);
        }
        assert_eq!(p.send("call"), "ok");
        // Unloaded while enabled: gone from the list; the library loaded again
        // starts with disabled (fresh) pads.
        assert_eq!(p.send("close"), "ok");
        assert!(
            listed(&dir).is_null(),
            "{mode:?}: still listed after dlclose"
        );
        assert_eq!(p.send("open"), "ok");
        let v = listed(&dir);
        assert_eq!(v[0]["enabled"], false, "{v}");
        if !gcc {
            dir.ok(&["enable", "-p", &pid, "lib_*"]);
        }
        assert_eq!(p.send("call"), "ok");
        assert_eq!(p.send("quit"), "");
        assert_eq!(p.finish().0, 0);
    }
}

#[test]
fn longjmp_out_of_traced_frames_resynchronises() {
    for mode in [GCC_PFE, CLANG_PFE] {
        let exe = build(mode, false, &["jmp.c"], "jmp", &[]);
        let dir = Dir::new();
        let (code, out) = run_traced(&dir, &exe, "outer,mid,inner,after");
        assert_eq!(code, 0, "{mode:?}:\n{out}");
        assert!(out.contains("jumps=200 sum=6"), "{mode:?}:\n{out}");
        let g = graph(&out);
        // Every jump left three open frames; the calls after the loop are
        // back at the top level.
        assert_eq!(g.iter().filter(|l| l.trim() == "inner() {").count(), 200);
        assert_eq!(
            &g[g.len() - 3..],
            ["  after();", "  after();", "  after();"],
            "{mode:?}"
        );
    }
}

#[test]
fn cxx_exceptions_through_traced_frames() {
    for mode in [GCC_PFE, CLANG_PFE] {
        let exe = build(mode, true, &["exc.cpp"], "exc", &[]);
        let dir = Dir::new();
        let (code, out) = run_traced(&dir, &exe, "thrower,middle,catcher,after");
        assert_eq!(code, 0, "{mode:?}:\n{out}");
        assert!(out.contains("caught=100 sum=6"), "{mode:?}:\n{out}");
        let g = graph(&out);
        assert_eq!(g.iter().filter(|l| l.trim() == "thrower() {").count(), 100);
        // The catching frame survives the unwind and keeps its hooked return:
        // its exit is seen; the two frames the exception went through have none.
        assert_eq!(
            g.iter().filter(|l| l.trim() == "} /* catcher */").count(),
            100,
            "{mode:?}:\n{out}"
        );
        assert!(!g
            .iter()
            .any(|l| l.contains("/* middle */") || l.contains("/* thrower */")));
        assert_eq!(
            &g[g.len() - 3..],
            ["  after();", "  after();", "  after();"],
            "{mode:?}"
        );
    }
}
