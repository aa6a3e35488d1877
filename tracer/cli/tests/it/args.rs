//! Arguments and return values (issue 14) through the `tracer` program:
//! the C fixture `tests/fixtures/c/args.c`, built with `-g` by gcc and
//! clang-19 in each pad mode, run under `tracer run --args --retval
//! --trace`; the function_graph text is compared exactly (pointers
//! masked). `--where` on `hist` and `trace`, its errors, and `--args=N`
//! without debug information.
#![cfg(target_arch = "x86_64")]

use super::helpers::{bin_dir, preload, workspace_root as root, TRACER};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Compiler and pad flags.
struct Mode(&'static str, &'static str, &'static [&'static str]);

const MODES: [Mode; 3] = [
    Mode("gcc-pfe", "gcc", &["-fpatchable-function-entry=5"]),
    Mode(
        "gcc-mcount",
        "gcc",
        &[
            "-pg",
            "-mfentry",
            "-mnop-mcount",
            "-mrecord-mcount",
            "-fno-pie",
            "-no-pie",
        ],
    ),
    Mode("clang-pfe", "clang-19", &["-fpatchable-function-entry=5"]),
];

/// Each fixture is compiled once per test process (tests run in parallel
/// and must not run a binary another is rewriting).
fn build(mode: &Mode, debug: bool) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let key = format!("{}-{debug}", mode.0);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = built.iter().find(|(k, _)| *k == key) {
        return p.clone();
    }
    let p = compile(mode, debug);
    built.push((key, p.clone()));
    p
}

fn compile(mode: &Mode, debug: bool) -> PathBuf {
    let dir = bin_dir().join("args-fixtures").join(mode.0);
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(if debug { "args" } else { "args-nodebug" });
    let mut c = Command::new(mode.1);
    c.arg("-O2")
        .args(mode.2)
        .args(debug.then_some("-g"))
        .arg("-o")
        .arg(&exe)
        .arg(root().join("tests/fixtures/c/args.c"));
    let out = c.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} ({e}); install it: apt-get install -y gcc clang-19",
            mode.1
        )
    });
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

static N: AtomicUsize = AtomicUsize::new(0);

/// `tracer run ARGS -o FILE -- exe ROUNDS` in a private runtime directory:
/// (exit code, the program's stdout then the file, stderr).
fn run(args: &[&str], exe: &Path, rounds: &str) -> (i32, String, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!(
        "tracer-args-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = dir.join("out.txt");
    let o = Command::new(TRACER)
        .env("XDG_RUNTIME_DIR", &dir)
        .env("TRACER_PRELOAD", preload())
        .env_remove("TRACER_ENABLE")
        .env_remove("TRACER_CAPTURE")
        .env_remove("LD_PRELOAD")
        .arg("run")
        .args(args)
        .arg("-o")
        .arg(&file)
        .arg("--")
        .arg(exe)
        .arg(rounds)
        .output()
        .unwrap();
    let mut out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.push_str(&std::fs::read_to_string(&file).unwrap_or_default());
    let _ = std::fs::remove_dir_all(&dir);
    (
        o.status.code().unwrap_or(-1),
        out,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The call-graph part of function_graph lines, pointers masked.
fn graph(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with(" 1)") && l.contains('|'))
        .map(|l| {
            let g = l.split_once('|').unwrap().1.trim_end();
            match g.find("buf=0x").map(|i| i + 3) {
                Some(i) => {
                    let end = g[i + 3..]
                        .find(|c: char| !c.is_ascii_hexdigit())
                        .map_or(g.len(), |j| i + 3 + j);
                    format!("{}=0x…{}", &g[..i], &g[end..])
                }
                None => g.to_string(),
            }
        })
        .collect()
}

const ALL: &str = "parse,crc32,scale,norm,fact,work,grade,handle";

#[test]
fn function_graph_shows_arguments_and_return_values_in_every_pad_mode() {
    let expected = [
        "  parse(len=1024, flags=2); /* = 514 */",
        "  parse(len=5000, flags=0); /* = -22 (EINVAL) */",
        "  crc32(buf=0x…, n=8); /* = 3607554180 */",
        "  scale(x=2.5, f=4); /* = 10 */",
        "  norm(p: struct point, c=BLUE); /* = 12 */",
        "  fact(n=3) {",
        "    fact(n=2) {",
        "      fact(n=1); /* = 1 */",
        "    } /* fact = 2 */",
        "  } /* fact = 6 */",
        "  grade(g='A', ok=true); /* = 'A' */",
        "  handle(len=8192) {",
        "    parse(len=8192, flags=1); /* = -22 (EINVAL) */",
        "  } /* handle = -22 (EINVAL) */",
        "  work(i=0); /* = 0 */",
        "  work(i=1); /* = 1 */",
        "  work(i=2); /* = 2 */",
    ];
    for mode in &MODES {
        let exe = build(mode, true);
        let (code, out, err) = run(
            &["--enable", ALL, "--args", "--retval", "--trace"],
            &exe,
            "3",
        );
        assert_eq!(code, 0, "{}: {out}\n{err}", mode.0);
        assert!(out.starts_with("3607554746\n"), "{}: {out}", mode.0);
        assert_eq!(graph(&out), expected, "{}:\n{out}\n{err}", mode.0);
    }
}

#[test]
fn return_values_alone_and_functions_without_capture_side_by_side() {
    let exe = build(&MODES[0], true);
    // `work` without capture: its lines have no values; `parse` with.
    let (code, out, err) = run(&["--enable", "work", "--trace"], &exe, "2");
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(graph(&out), ["  work();", "  work();"], "{out}");
    let (code, out, err) = run(&["--enable", "parse", "--retval", "--trace"], &exe, "0");
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        graph(&out),
        [
            "  parse(); /* = 514 */",
            "  parse(); /* = -22 (EINVAL) */",
            "  parse(); /* = -22 (EINVAL) */"
        ],
        "{out}"
    );
}

#[test]
fn hist_where_counts_exactly_the_failing_calls() {
    let exe = build(&MODES[2], true);
    let (code, out, err) = run(
        &[
            "--enable", "work", "--retval", "--hist", "--where", "ret < 0",
        ],
        &exe,
        "100",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("work "))
        .unwrap_or_else(|| panic!("no row for work:\n{out}"));
    assert_eq!(row.split_whitespace().nth(1), Some("10"), "{out}");
    assert!(
        out.contains("# --where: 10 of 100 calls matched 'ret < 0'"),
        "{out}"
    );
    // By name and by position, on arguments.
    for cond in ["i >= 95", "arg1 >= 95"] {
        let (code, out, err) = run(
            &["--enable", "work", "--args", "--hist", "--where", cond],
            &exe,
            "100",
        );
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(
            out.contains("# --where: 5 of 100 calls matched"),
            "{cond}: {out}"
        );
    }
}

#[test]
fn trace_where_shows_matching_calls_and_says_what_cannot_apply() {
    let exe = build(&MODES[0], true);
    let (code, out, err) = run(
        &[
            "--enable",
            "parse",
            "--args",
            "--retval",
            "--trace",
            "--where",
            "len > 4096",
        ],
        &exe,
        "0",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        graph(&out),
        [
            "  parse(len=5000, flags=0); /* = -22 (EINVAL) */",
            "  parse(len=8192, flags=1); /* = -22 (EINVAL) */"
        ],
        "{out}"
    );
    let (_, out, _) = run(
        &[
            "--enable", "work", "--args", "--trace", "--where", "size > 1",
        ],
        &exe,
        "2",
    );
    assert!(
        out.contains(
            "# tracer: --where: work has no argument 'size': its arguments are i (arg1: int32)"
        ),
        "{out}"
    );
    let (_, out, _) = run(
        &["--enable", "norm", "--args", "--trace", "--where", "p > 1"],
        &exe,
        "0",
    );
    assert!(
        out.contains("cannot compare norm's argument 'p' (struct point)"),
        "{out}"
    );
    // Names without debug information.
    let bare = build(&MODES[0], false);
    let (_, out, _) = run(
        &["--enable", "work", "--args", "--trace", "--where", "i > 1"],
        &bare,
        "2",
    );
    assert!(out.contains("work has no debug information"), "{out}");
    let (code, out, err) = run(&["--trace", "--where", "len >"], &bare, "0");
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("write NAME OP NUMBER"), "{err}");
}

#[test]
fn without_debug_information_registers_show_as_hex() {
    let bare = build(&MODES[0], false);
    let (code, out, err) = run(
        &["--enable", "parse", "--args=2", "--retval", "--trace"],
        &bare,
        "0",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        graph(&out),
        [
            "  parse(arg1=0x400, arg2=0x2); /* = 0x202 */",
            "  parse(arg1=0x1388, arg2=0x0); /* = -22 */",
            "  parse(arg1=0x2000, arg2=0x1); /* = -22 */"
        ],
        "{out}"
    );
}

#[test]
fn recordings_carry_the_values_into_the_exports() {
    let exe = build(&MODES[0], true);
    let dir = std::env::temp_dir().join(format!("tracer-args-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rec = dir.join("r.rec");
    let (code, out, err) = run(
        &[
            "--enable",
            "fact,handle,parse",
            "--args",
            "--retval",
            "--record",
            rec.to_str().unwrap(),
        ],
        &exe,
        "0",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let json = dir.join("r.json");
    let o = Command::new(TRACER)
        .args([
            "export",
            rec.to_str().unwrap(),
            "--chrome",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let calls: Vec<String> = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| {
            format!(
                "{}({}) = {}",
                e["name"].as_str().unwrap(),
                e["args"]["args"].as_str().unwrap_or("?"),
                e["args"]["ret"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            "parse(len=1024, flags=2) = 514",
            "parse(len=5000, flags=0) = -22 (EINVAL)",
            "fact(n=1) = 1",
            "fact(n=2) = 2",
            "fact(n=3) = 6",
            "parse(len=8192, flags=1) = -22 (EINVAL)",
            "handle(len=8192) = -22 (EINVAL)",
        ]
    );
    // The report reads it as any recording.
    let o = Command::new(TRACER)
        .args(["report", rec.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("fact ") && text.contains("parse "),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn record_where_keeps_only_the_matching_calls() {
    let exe = build(&MODES[0], true);
    let dir = std::env::temp_dir().join(format!("tracer-args-recw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rec = dir.join("w.rec");
    let (code, out, err) = run(
        &[
            "--enable",
            "work,parse",
            "--retval",
            "--where",
            "ret < 0",
            "--record",
            rec.to_str().unwrap(),
        ],
        &exe,
        "100",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let o = Command::new(TRACER)
        .args(["report", rec.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let calls = |n: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .map_or(0, |r| r["calls"].as_u64().unwrap())
    };
    // One failing work() in ten; parse fails twice (5000, and 8192 from handle).
    assert_eq!((calls("work"), calls("parse")), (10, 2), "{rows}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Build another fixture of tests/fixtures/c (`cxx`: with the C++ driver).
fn build_other(src: &str, cxx: bool, extra: &[&str]) -> PathBuf {
    // Only one test uses these: no sharing to guard.
    let dir = bin_dir().join("args-fixtures").join("gcc-pfe-other");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(src.split('.').next().unwrap());
    let mut c = Command::new(if cxx { "g++" } else { "gcc" });
    c.args(["-O2", "-fpatchable-function-entry=5"])
        .args(extra)
        .arg("-o")
        .arg(&exe)
        .arg(root().join("tests/fixtures/c").join(src));
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Exceptions, libgcc's own stack walk and gdb's backtrace go through
/// capturing frames as through plain ones: the capturing return
/// trampoline shares the plain one's unwind information.
#[test]
fn unwinders_walk_through_capturing_returns() {
    // C++ exceptions: the catching frame keeps its hooked return (and its
    // return value), the frames thrown through have no exit.
    let exe = build_other("exc.cpp", true, &[]);
    let (code, out, err) = run(
        &[
            "--enable",
            "thrower,middle,catcher,after",
            "--retval",
            "--trace",
        ],
        &exe,
        "",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("caught=100 sum=6"), "{out}");
    let g = graph(&out);
    assert_eq!(
        g.iter()
            .filter(|l| l.trim().starts_with("} /* catcher = "))
            .count(),
        100,
        "{out}"
    );
    // Thrown through: shown as left without returning, never with a value.
    assert!(!g
        .iter()
        .any(|l| l.contains("/* middle =") || l.contains("/* thrower =")));
    assert_eq!(
        g.iter()
            .filter(|l| l.contains("/* middle: not returned */"))
            .count(),
        100,
        "{out}"
    );
    // libgcc's own walk from inside capturing frames.
    let exe = build_other("raw_walk.c", false, &["-rdynamic", "-ldl"]);
    let (code, out, err) = run(
        &["--enable", "main,outer,middle,inner", "--args", "--retval"],
        &exe,
        "",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.starts_with("walk: inner middle outer main\nr=4\n"),
        "{out}\n{err}"
    );
    // gdb, stopped inside three capturing frames.
    if Command::new("gdb").arg("--version").output().is_err() {
        println!("note: gdb is not installed: its part skipped");
        return;
    }
    let exe = build_other("gdb_stop.c", false, &["-g"]);
    let cap = tracer_core::capture::Capture::all_registers(true).encode();
    let o = Command::new("gdb")
        .args(["-q", "-nx", "-batch"])
        .args(["-ex", "set startup-with-shell off"])
        .args([
            "-ex",
            &format!("set environment LD_PRELOAD={}", preload().display()),
        ])
        .args(["-ex", "set environment TRACER_ENABLE=outer,middle,inner"])
        .args(["-ex", &format!("set environment TRACER_CAPTURE={cap}")])
        .args(["-ex", "set environment TRACER_AGENT=0"])
        .args(["-ex", "run", "-ex", "bt"])
        .arg(&exe)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
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
    assert_eq!(ours, ["inner", "middle", "outer", "main"], "{out}");
    assert_eq!(
        frames
            .iter()
            .filter(|f| **f == "__tracer_v1_hooked_return_args")
            .count(),
        3,
        "{out}"
    );
}

/// `enable --args` reads the selected functions' DWARF first and captures
/// exactly the registers they use: the signatures and the capture they
/// need, from each compiler's debug information.
#[test]
fn enable_captures_what_the_debug_information_says() {
    use tracer_cli::values::{capture_for, CaptureFlags, Signatures};
    for mode in &MODES {
        let exe = build(mode, true);
        let nm = Command::new("nm").arg(&exe).output().unwrap();
        let syms = String::from_utf8_lossy(&nm.stdout).into_owned();
        let addr = |name: &str| {
            syms.lines()
                .find_map(|l| {
                    let mut w = l.split_whitespace();
                    let (a, _, n) = (w.next()?, w.next()?, w.next()?);
                    (n == name).then(|| u64::from_str_radix(a, 16).ok())?
                })
                .unwrap_or_else(|| panic!("{}: no symbol {name}", mode.0))
        };
        let mut sigs = Signatures::default();
        let path = exe.to_str().unwrap();
        let mut shape = |name: &str| {
            let s = sigs
                .of_object(path, addr(name))
                .unwrap_or_else(|| panic!("{}: no DWARF for {name}", mode.0));
            let c = s.capture();
            let params: Vec<String> = s
                .params
                .iter()
                .map(|p| format!("{}:{:?}", p.name, p.ty))
                .collect();
            (
                params.join(" "),
                (c.ints, c.floats, c.stack),
                s.ret.is_some(),
            )
        };
        assert_eq!(
            shape("parse"),
            (
                "len:Int { signed: true, size: 4 } flags:Int { signed: false, size: 4 }".into(),
                (2, 0, 0),
                true
            ),
            "{}",
            mode.0
        );
        assert_eq!(shape("scale").1, (0, 2, 0), "{}", mode.0);
        // The struct (24 bytes) goes on the stack, the enum in a register.
        assert_eq!(shape("norm").1, (1, 0, 0), "{}", mode.0);
        let flags = CaptureFlags {
            args: Some("auto".into()),
            retval: true,
        };
        let all = [
            sigs.of_object(path, addr("parse")),
            sigs.of_object(path, addr("scale")),
        ];
        let c = capture_for(&flags, &all).unwrap();
        assert_eq!((c.ints, c.floats, c.stack, c.retval), (2, 2, 0, true));
    }
}

/// The C fixture (clang pads, `-g`) running under the preload agent in
/// its "wait" mode (a run per line of input), in a private runtime
/// directory: ready once started.
struct Live {
    dir: PathBuf,
    prog: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    pid: String,
}

impl Live {
    fn start(tag: &str) -> Live {
        use std::io::BufRead;
        use std::os::unix::fs::PermissionsExt;
        use std::process::Stdio;
        let exe = build(&MODES[2], true);
        let dir = std::env::temp_dir().join(format!("tracer-args-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut prog = live_cmd(&dir, &exe)
            .arg("wait")
            .env("LD_PRELOAD", preload())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = prog.stdin.take();
        let mut stdout = std::io::BufReader::new(prog.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        let pid = prog.id().to_string();
        Live {
            dir,
            prog,
            stdin,
            stdout,
            pid,
        }
    }
}

/// `prog` in the runtime directory `dir`, with none of the tracer's
/// variables inherited.
fn live_cmd(dir: &Path, prog: &Path) -> Command {
    let mut c = Command::new(prog);
    c.env("XDG_RUNTIME_DIR", dir)
        .env_remove("TRACER_ENABLE")
        .env_remove("TRACER_CAPTURE")
        .env_remove("TRACER_AGENT")
        .env_remove("LD_PRELOAD");
    c
}

/// `tracer enable --args --retval -p PID` on a running program (the
/// capture its DWARF asks for), recorded while it runs.
#[test]
fn enable_with_capture_on_a_running_program() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let Live {
        dir,
        mut prog,
        stdin,
        mut stdout,
        pid,
    } = Live::start("live");
    let mut stdin = stdin.unwrap();
    let cmd = |prog: &Path| live_cmd(&dir, prog);
    let mut line = String::new();
    let o = cmd(Path::new(TRACER))
        .args([
            "enable", "parse", "handle", "--args", "--retval", "-p", &pid,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rec = dir.join("live.rec");
    let mut recorder = cmd(Path::new(TRACER))
        .args(["record", "-o", rec.to_str().unwrap(), "-p", &pid])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(recorder.stderr.take().unwrap());
    let mut said = String::new();
    err.read_line(&mut said).unwrap();
    assert!(said.contains("recording process"), "{said}");
    writeln!(stdin, "0").unwrap();
    stdin.flush().unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    drop(stdin);
    assert!(prog.wait().unwrap().success());
    assert!(recorder.wait().unwrap().success());
    let json = dir.join("live.json");
    let o = Command::new(TRACER)
        .args([
            "export",
            rec.to_str().unwrap(),
            "--chrome",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let calls: Vec<String> = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| {
            format!(
                "{}({}) = {}",
                e["name"].as_str().unwrap(),
                e["args"]["args"].as_str().unwrap_or("?"),
                e["args"]["ret"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            "parse(len=1024, flags=2) = 514",
            "parse(len=5000, flags=0) = -22 (EINVAL)",
            "parse(len=8192, flags=1) = -22 (EINVAL)",
            "handle(len=8192) = -22 (EINVAL)",
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `hist PATTERN` enables for its session only what was not enabled: a
/// function the user enabled with capture keeps it (its `--where` on return
/// values matches) and stays enabled after the session.
#[test]
fn hist_pattern_keeps_what_the_user_enabled_with_capture() {
    use std::io::{BufRead, Write};
    use std::process::Stdio;
    let Live {
        dir,
        mut prog,
        mut stdin,
        mut stdout,
        pid,
    } = Live::start("keep");
    let cmd = |prog: &Path| live_cmd(&dir, prog);
    let mut line = String::new();
    let tracer = |args: &[&str]| {
        let o = cmd(Path::new(TRACER)).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let status = || -> serde_json::Value {
        serde_json::from_str(&tracer(&["status", "--json", "-p", &pid])).unwrap()
    };
    tracer(&["enable", "work", "--retval", "-p", &pid]);
    // A first round gives the thread its ring before any session attaches
    // (a ring that appears later is found by the session's next poll, which
    // an immediate Ctrl-C could beat).
    let input = stdin.as_mut().unwrap();
    writeln!(input, "1").unwrap();
    input.flush().unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    // One hist session: started, attached, one run of 100 rounds (`parse`
    // fails 2 of its 3 calls, `work` 10 of 100); then Ctrl-C (`last`: the
    // program's input is closed instead, so the session ends with it). The
    // count of matching calls of `func`.
    let mut session = |args: &[&str], func: &str, last: bool| -> u64 {
        let h = cmd(Path::new(TRACER))
            .arg("hist")
            .args(args)
            .args(["--where", "ret < 0", "--json", "-p", &pid])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while status()["reader_attached"] != true {
            assert!(t0.elapsed().as_secs() < 60, "hist never attached");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let input = stdin.as_mut().unwrap();
        writeln!(input, "100").unwrap();
        input.flush().unwrap();
        line.clear();
        stdout.read_line(&mut line).unwrap();
        if last {
            drop(stdin.take());
        } else {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            assert_eq!(unsafe { libc::kill(h.id() as i32, libc::SIGINT) }, 0);
        }
        let o = h.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        let rows: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("{e}: {out}\n{}", String::from_utf8_lossy(&o.stderr)));
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == func)
            .map_or(0, |r| r["count"].as_u64().unwrap())
    };
    assert_eq!(session(&["work"], "work", false), 10);
    // Still enabled after the session, with its capture.
    let enabled = || -> Vec<String> {
        let v = status()["enabled"].clone();
        serde_json::from_value(v).unwrap()
    };
    assert_eq!(
        enabled(),
        ["work"],
        "the session changed what the user enabled"
    );
    // A function the session enables itself captures what --where needs,
    // and is disabled again at the end.
    assert_eq!(session(&["parse"], "parse", false), 2);
    assert_eq!(enabled(), ["work"]);
    // A session without a pattern still sees `work`'s return values.
    assert_eq!(session(&[], "work", true), 10);
    assert!(prog.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tracer ARGS` on the program's fixture (`TRACER_FIXTURE_VALUES=1`, 2
/// rounds), run under `run`: (exit code, stdout and stderr, stderr).
fn run_fixture(args: &[&str], dir: &Path) -> (i32, String, String) {
    let o = Command::new(TRACER)
        .current_dir(dir)
        .env("XDG_RUNTIME_DIR", dir)
        .env("TRACER_PRELOAD", preload())
        .env("TRACER_FIXTURE_ROUNDS", "2")
        .env("TRACER_FIXTURE_VALUES", "1")
        .env_remove("TRACER_ENABLE")
        .env_remove("TRACER_CAPTURE")
        .env_remove("LD_PRELOAD")
        .args(args)
        .output()
        .unwrap();
    // The trace and the histograms go to stderr without `-o`: both are
    // searched.
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    (
        o.status.code().unwrap_or(-1),
        format!("{}{err}", String::from_utf8_lossy(&o.stdout)),
        err,
    )
}

#[test]
fn traceable_functions_show_their_values_in_the_graph_the_report_and_where() {
    use super::helpers::FIXTURE;
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("tracer-args-rs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let pattern = "lookup ratio";
    // function_graph: names and types from the macro; a struct by name;
    // Result/Option variants with their payloads; errno names.
    let (code, out, err) = run_fixture(
        &[
            "run", "--enable", pattern, "--args", "--retval", "--trace", "--", FIXTURE,
        ],
        &dir,
    );
    assert_eq!(code, 3, "{out}\n{err}");
    let round = [
        "  tracer_fixture::lookup(key.len=3, limit=10, mode: Mode); /* = Ok(30) */",
        "  tracer_fixture::lookup(key.len=0, limit=7, mode: Mode); /* = Err(-22 (EINVAL)) */",
        "  tracer_fixture::ratio(a=3, b=2, on=true); /* = Some(1.5) */",
        "  tracer_fixture::ratio(a=1, b=0, on=true); /* = None */",
    ];
    assert_eq!(graph(&out), [round, round].concat(), "{out}\n{err}");
    // An async fn (`#[traceable(values)]`): its arguments at the first
    // poll, its return value at completion.
    let (code, out, err) = run_fixture(
        &[
            "run", "--enable", "fetch", "--args", "--retval", "--trace", "--", FIXTURE,
        ],
        &dir,
    );
    assert_eq!(code, 3, "{out}\n{err}");
    let round = [
        "  tracer_fixture::fetch(id=4, key.len=2); /* = Ok(402) */",
        "  tracer_fixture::fetch(id=0, key.len=0); /* = Err(-2 (ENOENT)) */",
    ];
    assert_eq!(graph(&out), [round, round].concat(), "{out}\n{err}");
    // Enabled without capture: no values.
    let (code, out, err) = run_fixture(
        &["run", "--enable", "lookup", "--trace", "--", FIXTURE],
        &dir,
    );
    assert_eq!(code, 3, "{out}\n{err}");
    assert_eq!(
        graph(&out),
        ["  tracer_fixture::lookup();"; 4],
        "{out}\n{err}"
    );
    // --where on the variant and on the payload.
    let (code, out, err) = run_fixture(
        &[
            "run",
            "--enable",
            pattern,
            "--retval",
            "--args",
            "--hist",
            "--where",
            "ret == Err",
            "--",
            FIXTURE,
        ],
        &dir,
    );
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        out.contains("# --where: 2 of 8 calls matched 'ret == Err'"),
        "{out}\n{err}"
    );
    let (code, out, err) = run_fixture(
        &[
            "run",
            "--enable",
            "lookup",
            "--retval",
            "--args",
            "--hist",
            "--where",
            "limit > 8",
            "--",
            FIXTURE,
        ],
        &dir,
    );
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        out.contains("# --where: 2 of 4 calls matched 'limit > 8'"),
        "{out}\n{err}"
    );
    // A recording keeps them: report's values section and JSON rows.
    let rec = dir.join("v.rec");
    let (code, out, err) = run_fixture(
        &[
            "run",
            "--enable",
            pattern,
            "--args",
            "--retval",
            "--record",
            rec.to_str().unwrap(),
            "--",
            FIXTURE,
        ],
        &dir,
    );
    assert_eq!(code, 3, "{out}\n{err}");
    let o = Command::new(TRACER)
        .args(["report", rec.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("tracer_fixture::lookup  returns: Err(-22 (EINVAL)) ×2, Ok(30) ×2"),
        "{text}"
    );
    assert!(
        text.contains("tracer_fixture::ratio  returns: None ×2, Some(1.5) ×2"),
        "{text}"
    );
    let o = Command::new(TRACER)
        .args(["report", rec.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let lookup = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "tracer_fixture::lookup")
        .unwrap();
    let args = lookup["slowest"]["args"].as_str().unwrap();
    assert!(
        args == "key.len=3, limit=10, mode: Mode" || args == "key.len=0, limit=7, mode: Mode",
        "{lookup}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
