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

use crate::helpers::{bin_dir, preload, workspace_root, Dir, TRACER};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

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
        c.arg(workspace_root().join("tests/fixtures/c").join(s));
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

impl Dir {
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
    fn start_c(&self, exe: &Path, args: &[&str]) -> Proc {
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

/// A thread cancelled (`pthread_cancel`, deferred, at `pthread_testcancel`
/// or in `nanosleep`) four traced frames deep: glibc unwinds it through
/// libgcc by its own handle, past every interposer, so the unwind meets the
/// hooked returns themselves (the return trampoline's unwind information
/// and personality routine give each back). Every cleanup runs, in order,
/// and the output is the untraced program's.
#[test]
fn pthread_cancel_inside_traced_frames_runs_every_cleanup() {
    let cases: [(Mode, bool, &str); 5] = [
        (GCC_PFE, false, "cancel.c"),
        (GCC_MCOUNT, false, "cancel.c"),
        (CLANG_PFE, false, "cancel.c"),
        (GCC_PFE, true, "cancel.cpp"),
        (CLANG_PFE, true, "cancel.cpp"),
    ];
    for (mode, cxx, src) in cases {
        let out_name = if cxx { "cancel-cxx" } else { "cancel" };
        let exe = build(mode, cxx, &[src], out_name, &["-fexceptions", "-pthread"]);
        let plain = Command::new(&exe).output().unwrap();
        assert!(plain.status.success(), "{mode:?} {src}");
        let plain = String::from_utf8_lossy(&plain.stdout).into_owned();
        let expected = if cxx {
            "cancelled=20 dtors=80\n"
        } else {
            "cancelled=20 cleanups=80\n"
        };
        assert_eq!(plain, expected, "{mode:?} {src}: untraced");
        let dir = Dir::new();
        let r = run_with(&dir, "l1,l2,l3,point", false, &exe, &[]);
        assert_eq!(r.code, 0, "{mode:?} {src}:\n{}\n{}", r.out, r.err);
        assert_eq!(r.out, plain, "{mode:?} {src}: traced\n{}", r.err);
        // The four frames were hooked: every thread entered them all.
        let (code, out) = run_traced(&dir, &exe, "l1,l2,l3,point");
        assert_eq!(code, 0, "{mode:?} {src}:\n{out}");
        assert_eq!(
            out.lines()
                .filter(|l| l.ends_with("|        point() {"))
                .count(),
            20,
            "{mode:?} {src}:\n{out}"
        );
        assert!(out.contains(expected), "{mode:?} {src}:\n{out}");
    }
}

/// `dlsym(RTLD_NEXT, ..)` and `dlopen` answer relative to the object their
/// return address lies in. Tail-called from a hooked function, that return
/// address would be the return trampoline's, in the preload library (the
/// next `who` after it is libnext's, and it has no `RUNPATH`); the preload
/// library's shims give the real one back first. The traced program prints
/// exactly what the untraced one does.
#[test]
fn dlsym_rtld_next_and_dlopen_tail_called_from_traced_functions() {
    for mode in [GCC_PFE, CLANG_PFE] {
        let dir = bin_dir().join("c-fixtures").join(mode.name);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let so = ["-shared", "-fPIC"];
        build(mode, false, &["next_lib3.c"], "sub/libnext3.so", &so);
        build(
            mode,
            false,
            &["next_lib.c"],
            "libnext.so",
            &[
                "-shared",
                "-fPIC",
                "-Wl,-rpath,$ORIGIN/sub",
                "-Wl,--enable-new-dtags",
            ],
        );
        build(mode, false, &["next_lib2.c"], "libnext2.so", &so);
        let l = format!("-L{}", dir.display());
        let exe = build(
            mode,
            false,
            &["rtld_next.c"],
            "rtld_next",
            &[
                &l,
                "-Wl,--no-as-needed",
                "-lnext",
                "-lnext2",
                "-Wl,-rpath,$ORIGIN",
                "-ldl",
            ],
        );
        let plain = Command::new(&exe).output().unwrap();
        assert!(plain.status.success(), "{mode:?}");
        let plain = String::from_utf8_lossy(&plain.stdout).into_owned();
        assert_eq!(
            plain, "main: next\nlib: next2\nmain_same=1\nopen: next3\n",
            "{mode:?}: untraced"
        );
        let d = Dir::new();
        let r = run_with(&d, "main_next,lib_next,lib_open", true, &exe, &[]);
        assert_eq!(r.code, 0, "{mode:?}:\n{}\n{}", r.out, r.err);
        assert!(r.out.starts_with(&plain), "{mode:?}:\n{}\n{}", r.out, r.err);
        // The tail-calling functions were hooked, and their exits recorded
        // (as the tail call starts).
        let g = graph(&r.out);
        for (f, n) in [("main_next", 2), ("lib_next", 1), ("lib_open", 1)] {
            let leaf = format!("  {f}();");
            assert_eq!(
                g.iter().filter(|l| **l == leaf).count(),
                n,
                "{mode:?} {f}:\n{}",
                r.out
            );
        }
    }
}

/// gdb's backtrace inside traced frames shows every real caller: the return
/// trampoline's unwind information finds each hooked frame's return address
/// on the shadow stack (gdb shows the trampoline as a frame of its own,
/// `__tracer_v1_hooked_return`, between a hooked function and its caller).
#[test]
fn gdb_backtraces_through_hooked_returns() {
    if Command::new("gdb").arg("--version").output().is_err() {
        println!("note: gdb is not installed (scripts/setup-whole.sh installs it): skipped");
        return;
    }
    for mode in MODES {
        let exe = build(mode, false, &["gdb_stop.c"], "gdb_stop", &["-g"]);
        let dir = Dir::new();
        let preload = format!("set environment LD_PRELOAD={}", preload().display());
        let o = dir
            .cmd(Path::new("gdb"))
            .args(["-q", "-nx", "-batch"])
            .args(["-ex", "set startup-with-shell off"])
            .args(["-ex", &preload])
            .args(["-ex", "set environment TRACER_ENABLE=outer,middle,inner"])
            .args(["-ex", "run", "-ex", "bt"])
            .arg(&exe)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(out.contains("SIGTRAP"), "{mode:?}:\n{out}\n{err}");
        // The function of each frame, innermost first.
        let frames: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with('#'))
            .filter_map(|l| l.split_once(" in ").map(|(_, r)| r))
            .filter_map(|r| r.split_once(' ').map(|(f, _)| f))
            .collect();
        let ours: Vec<&str> = frames
            .iter()
            .copied()
            .filter(|f| ["inner", "middle", "outer", "main"].contains(f))
            .collect();
        assert_eq!(
            ours,
            ["inner", "middle", "outer", "main"],
            "{mode:?}:\n{out}\n{err}"
        );
        // The three returns were hooked.
        assert_eq!(
            frames
                .iter()
                .filter(|f| **f == "__tracer_v1_hooked_return")
                .count(),
            3,
            "{mode:?}:\n{out}\n{err}"
        );
    }
}

/// libgcc's own stack walk, reached past every interposer (as glibc reaches
/// it), inside traced frames: the return trampoline's unwind rule finds each
/// hooked frame's return address on the shadow stack (before, the walk
/// ended at the first hooked return), and the output is the untraced one.
#[test]
fn libgccs_own_walk_gets_through_hooked_returns() {
    for mode in MODES {
        let exe = build(
            mode,
            false,
            &["raw_walk.c"],
            "raw_walk",
            &["-rdynamic", "-ldl"],
        );
        let plain = Command::new(&exe).output().unwrap();
        assert!(plain.status.success(), "{mode:?}");
        let plain = String::from_utf8_lossy(&plain.stdout).into_owned();
        assert_eq!(plain, "walk: inner middle outer main\nr=4\n", "{mode:?}");
        let dir = Dir::new();
        let r = run_with(&dir, "main,outer,middle,inner", false, &exe, &[]);
        assert_eq!(r.code, 0, "{mode:?}:\n{}\n{}", r.out, r.err);
        assert_eq!(r.out, plain, "{mode:?}:\n{}", r.err);
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
        let mut p = dir.start_c(&exe, &[&threads.to_string()]);
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
        let mut p = dir.start_c(&exe, &[lib.to_str().unwrap()]);
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
        // Every jump left three calls without returning, each closed as
        // such by the next call at the top level; the calls after the loop
        // are back at the top level.
        let count = |t: &str| g.iter().filter(|l| l.trim() == t).count();
        assert_eq!(
            count("inner(); /* not returned */"),
            200,
            "{mode:?}:\n{out}"
        );
        assert_eq!(count("} /* mid: not returned */"), 200, "{mode:?}:\n{out}");
        assert_eq!(
            count("} /* outer: not returned */"),
            200,
            "{mode:?}:\n{out}"
        );
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
        // The thrower never returns: closed as such when the catcher's exit
        // comes.
        assert_eq!(
            g.iter()
                .filter(|l| l.trim() == "thrower(); /* not returned */")
                .count(),
            100,
            "{mode:?}:\n{out}"
        );
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

/// The Lua 5.4 sources the `lua-src` crate (a dev-dependency) bundles.
fn lua_sources() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let pkg = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "lua-src")
        .expect("lua-src is a dev-dependency of tracer-cli");
    let dir = Path::new(pkg["manifest_path"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("lua-5.4"))
        })
        .collect();
    v.sort();
    v.pop().expect("lua-src bundles Lua 5.4")
}

/// Lua with `driver` (lua_driver.c, compiled with `driver_flags` and no
/// pads), the Lua sources compiled at -O0 (no inlining, so both builds make
/// the same calls) with `lua_flags`. The string hash seed is fixed, so
/// every run makes the same calls.
fn build_lua(name: &str, lua_flags: &[&str], driver_flags: &[&str]) -> PathBuf {
    let src = lua_sources();
    let dir = bin_dir().join("c-fixtures").join("lua").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("lua");
    let driver = dir.join("driver.o");
    let run = |c: &mut Command| {
        let o = c.output().expect("gcc runs");
        assert!(
            o.status.success(),
            "{c:?} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(Command::new("gcc")
        .args(["-c", "-O0", "-fno-pie"])
        .args(driver_flags)
        .arg("-I")
        .arg(&src)
        .arg(workspace_root().join("tests/fixtures/c/lua_driver.c"))
        .arg("-o")
        .arg(&driver));
    let mut c = Command::new("gcc");
    c.args(["-O0", "-fno-pie", "-no-pie", "-DLUA_USE_LINUX"])
        .arg("-Dluai_makeseed(L)=0")
        .args(lua_flags)
        .arg("-I")
        .arg(&src);
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_str().unwrap().to_string();
        if n.ends_with(".c") && n != "lua.c" && n != "luac.c" {
            c.arg(p);
        }
    }
    run(c.arg(&driver).args(["-lm", "-ldl", "-o"]).arg(&exe));
    exe
}

/// Function entries per name, as the -finstrument-functions build of Lua
/// counted them (functions of the same name in different files summed).
fn oracle_counts(exe: &Path, counts: &Path) -> std::collections::BTreeMap<String, u64> {
    use object::{Object, ObjectSymbol, SymbolKind};
    let data = std::fs::read(exe).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let names: std::collections::HashMap<u64, String> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
        .filter_map(|s| Some((s.address(), s.name().ok()?.to_string())))
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(counts).unwrap().lines() {
        let (a, n) = line.split_once(' ').unwrap();
        let a = u64::from_str_radix(a, 16).unwrap();
        let name = names
            .get(&a)
            .unwrap_or_else(|| panic!("no symbol at {a:#x}"));
        *out.entry(name.clone()).or_default() += n.parse::<u64>().unwrap();
    }
    out
}

/// Real third-party C: Lua 5.4 with compiler pads, every function enabled
/// from the first call (`run --record`), on a script whose errors (`pcall`)
/// and coroutine yields leave C functions by `longjmp`. The program's output
/// is unchanged, nothing is lost at the default settings, and every
/// function's call count in `report --json` equals the count of an
/// independent build of the same sources with -finstrument-functions, the
/// functions that never return (`luaD_throw`, `luaB_error`) included.
#[test]
fn real_lua_counts_equal_an_instrumented_build_longjmps_included() {
    let script = workspace_root().join("tests/fixtures/c/lua_work.lua");
    let padded = build_lua("pads", GCC_MCOUNT.flags, &[]);
    let counting = build_lua("counting", &["-finstrument-functions"], &["-DCOUNT_CALLS"]);
    let dir = Dir::new();

    let plain = Command::new(&padded).arg(&script).output().unwrap();
    assert!(plain.status.success(), "{plain:?}");
    let want = String::from_utf8_lossy(&plain.stdout).into_owned();
    assert!(want.starts_with("errors=281 yields=400 "), "{want}");

    let counts = dir.0.join("counts.txt");
    let o = Command::new(&counting)
        .arg(&script)
        .env("LUA_COUNTS", &counts)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), want, "the oracle build");
    let oracle = oracle_counts(&counting, &counts);

    let rec = dir.0.join("lua.rec");
    // At the default ring size nothing is lost while the recorder gets the
    // CPU it needs; on a machine so loaded that it is starved for longer
    // than a ring lasts (a few ms of this program), the loss is reported
    // (`lost_events`): then run again, at most three times.
    let mut attempt = 0;
    let (rows, err) = loop {
        attempt += 1;
        let o = dir
            .cmd(Path::new(TRACER))
            .env("TRACER_PRELOAD", preload())
            .args(["run", "--enable", "*", "--record"])
            .arg(&rec)
            .arg("--")
            .arg(&padded)
            .arg(&script)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), want, "{err}");
        let rows: serde_json::Value =
            serde_json::from_str(&dir.ok(&["report", rec.to_str().unwrap(), "--json"])).unwrap();
        let lost = rows.as_array().unwrap()[0]["lost_events"].as_u64().unwrap();
        if lost == 0 || attempt == 3 {
            break (rows, err);
        }
        eprintln!("attempt {attempt}: {lost} events lost (a starved recorder); again");
    };
    let rows = rows.as_array().unwrap();
    let mut got: std::collections::BTreeMap<String, u64> = Default::default();
    let mut noret: std::collections::BTreeMap<String, u64> = Default::default();
    for r in rows {
        assert_eq!(r["lost_events"], 0, "events were lost in 3 attempts: {err}");
        // `helper#2`: a static function of the same name in another file.
        let name = r["name"].as_str().unwrap();
        let name = name.split('#').next().unwrap().to_string();
        *got.entry(name.clone()).or_default() += r["calls"].as_u64().unwrap();
        *noret.entry(name).or_default() += r["not_returned"].as_u64().unwrap();
    }
    let diff: Vec<String> = oracle
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|n| oracle.get(*n) != got.get(*n))
        .map(|n| format!("{n}: traced {:?}, counted {:?}", got.get(n), oracle.get(n)))
        .collect();
    assert!(
        diff.is_empty(),
        "{} of {} functions differ:\n{}",
        diff.len(),
        oracle.len(),
        diff.join("\n")
    );
    // Calls that only ever leave by longjmp are all counted, as not returned.
    for f in ["luaD_throw", "luaB_error"] {
        assert!(got[f] > 0, "{f}");
        assert_eq!(noret[f], got[f], "{f} never returns");
    }
    assert!(oracle.len() > 300, "{} functions", oracle.len());
    // The Perfetto export, decoded with Perfetto's schema: the same calls,
    // nested, the ones left by longjmp marked so.
    let pf = dir.0.join("lua.pftrace");
    dir.ok(&[
        "export",
        rec.to_str().unwrap(),
        "--perfetto",
        pf.to_str().unwrap(),
    ]);
    let o = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/perfetto_check.py"))
        .arg(&pf)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "decoding with Perfetto's schema failed (pip install perfetto protobuf):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(p["nested"], true);
    for r in rows {
        let name = r["name"].as_str().unwrap();
        assert_eq!(p["counts"][name].as_u64(), r["calls"].as_u64(), "{name}");
    }
    assert_eq!(p["left"]["luaD_throw"].as_u64(), Some(got["luaD_throw"]));
    eprintln!(
        "lua: {} functions, {} calls equal; luaD_throw {} and luaB_error {} calls, none returned",
        oracle.len(),
        oracle.values().sum::<u64>(),
        got["luaD_throw"],
        got["luaB_error"]
    );
}

/// With debug information (-g), `list` gives each compiler-padded
/// function's source file and line from DWARF (read by the `tracer`
/// program, never by the traced process); without it, the object's path.
#[test]
fn list_gives_source_lines_from_dwarf() {
    for mode in MODES {
        for debug in [true, false] {
            let flags: &[&str] = if debug {
                &["-pthread", "-g"]
            } else {
                &["-pthread"]
            };
            let name = if debug { "mt-g" } else { "mt-nog" };
            let exe = build(mode, false, &["mt.c"], name, flags);
            let dir = Dir::new();
            let p = dir.start_c(&exe, &["1"]);
            let pid = p.pid();
            let v: serde_json::Value =
                serde_json::from_str(&dir.ok(&["list", "-p", &pid, "--json"])).unwrap();
            let at = |f: &str| {
                let e = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["name"] == f)
                    .unwrap_or_else(|| panic!("{mode:?}: {f} not listed"));
                (
                    e["file"].as_str().unwrap().to_string(),
                    e["line"].as_u64().unwrap(),
                )
            };
            let text = dir.ok(&["list", "-p", &pid]);
            if debug {
                for (f, line) in [("worker", 24), ("main", 36)] {
                    let (file, l) = at(f);
                    assert!(
                        file.ends_with("tests/fixtures/c/mt.c"),
                        "{mode:?}: {f}: {file}"
                    );
                    assert_eq!(l, line, "{mode:?}: {f}");
                }
                assert!(text.contains("mt.c:24"), "{mode:?}:\n{text}");
            } else {
                let (file, l) = at("worker");
                assert_eq!((file.as_str(), l), (exe.to_str().unwrap(), 0), "{mode:?}");
            }
        }
    }
}

/// GCC's clones (`f.isra.0`, `f.constprop.0`, `f.part.0`) of real code
/// (Lua at -O2) are selected by their function's own name and shown as
/// the clones they are.
#[test]
fn gcc_clones_are_selected_by_their_functions_name() {
    let script = workspace_root().join("tests/fixtures/c/lua_work.lua");
    let mut flags = vec!["-O2"];
    flags.extend(GCC_PFE.flags);
    let lua = build_lua("gcc-o2", &flags, &[]);
    let dir = Dir::new();
    let rec = dir.0.join("clones.rec");
    let o = dir
        .cmd(Path::new(TRACER))
        .env("TRACER_PRELOAD", preload())
        .args(["run", "--enable", "adjust_assign,luaK_codek", "--record"])
        .arg(&rec)
        .arg("--")
        .arg(&lua)
        .arg(&script)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("errors=281 "));
    let rows: serde_json::Value =
        serde_json::from_str(&dir.ok(&["report", rec.to_str().unwrap(), "--json"])).unwrap();
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["calls"].as_u64() > Some(0))
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for want in ["adjust_assign.isra.0", "luaK_codek.isra.0"] {
        assert!(names.contains(&want), "{want} not traced: {names:?}\n{err}");
    }
}

/// A function known by two symbols (an alias) is one function, selected by
/// either name.
#[test]
fn aliases_select_their_function() {
    for mode in MODES {
        let exe = build(mode, false, &["alias.c"], "alias", &[]);
        for pattern in ["real_work", "other_name"] {
            let dir = Dir::new();
            let (code, out) = run_traced(&dir, &exe, pattern);
            assert_eq!(code, 0, "{mode:?} {pattern}:\n{out}");
            assert!(out.lines().any(|l| l == "9"), "{mode:?}: {out}");
            let calls = graph(&out).iter().filter(|l| l.contains("();")).count();
            assert_eq!(calls, 3, "{mode:?} {pattern}: {out}");
        }
    }
}
