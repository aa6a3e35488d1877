//! A whole Rust program that does not link the tracer: `tests/fixtures/whole-rust`
//! built with nightly and `RUSTFLAGS="-Z patchable-function-entry=5"`, run
//! with `libtracer_preload.so`. Listing and enabling by module pattern, the
//! function_graph of `tracer run` (recursion, a caught panic), and enabling
//! and disabling while four threads run.
//!
//! Without a nightly toolchain (`rustup run nightly rustc --version` fails)
//! every test fails, saying how to install one (`.ci/run` does, through
//! scripts/setup-whole.sh).

use crate::helpers::{json, ok, preload, target_dir, text, workspace_root, Dir, PATIENCE, TRACER};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What the tests run: the preload library and the fixture.
struct Built {
    preload: PathBuf,
    fixture: PathBuf,
}

/// Remove what `cargo test` (and rustup under it) put in the environment
/// that would steer a nested cargo: its toolchain, compiler, flags.
fn scrub(c: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let cargo_build_var = k.starts_with("CARGO_") && k != "CARGO_HOME";
        if cargo_build_var
            || k.starts_with("RUSTC")
            || k.starts_with("RUSTDOC")
            || k == "CARGO"
            || k == "RUSTUP_TOOLCHAIN"
            || k == "RUSTFLAGS"
            || k == "__CARGO_FIX_PLZ"
        {
            c.env_remove(&k);
        }
    }
}

#[track_caller]
fn run_ok(c: &mut Command, what: &str) {
    let o = c
        .output()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Build the preload library (debug, next to `tracer`) and the fixture
/// (nightly, release, padded) once per test process; `None` without nightly.
fn built() -> Option<&'static Built> {
    static BUILT: OnceLock<Option<Built>> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    // A failed build panics in one test; the others try again.
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    BUILT
        .get_or_init(|| {
            let mut v = Command::new("rustup");
            v.args(["run", "nightly", "rustc", "--version"]);
            scrub(&mut v);
            if !v.output().is_ok_and(|o| o.status.success()) {
                return None;
            }
            let target = target_dir();
            let root = workspace_root();
            let wr_target = target.join("whole-rust");
            let mut c = Command::new("rustup");
            c.args([
                "run",
                "nightly",
                "cargo",
                "build",
                "--release",
                "--manifest-path",
            ])
            .arg(root.join("tests/fixtures/whole-rust/Cargo.toml"));
            scrub(&mut c);
            c.env("RUSTFLAGS", "-Z patchable-function-entry=5")
                .env("CARGO_TARGET_DIR", &wr_target);
            run_ok(&mut c, "the whole-rust fixture's nightly build");
            let b = Built {
                preload: preload().to_path_buf(),
                fixture: wr_target.join("release/whole-rust"),
            };
            assert!(b.preload.is_file(), "{} missing", b.preload.display());
            assert!(b.fixture.is_file(), "{} missing", b.fixture.display());
            Some(b)
        })
        .as_ref()
}

macro_rules! built_or_fail {
    () => {
        match built() {
            Some(b) => b,
            None => panic!(
                "no nightly toolchain to build the whole-rust fixture; install it with \
                 `rustup toolchain install nightly --profile minimal` (scripts/setup-whole.sh does)"
            ),
        }
    };
}

impl Dir {
    /// `LD_PRELOAD=libtracer_preload.so whole-rust MODE`, once it printed
    /// "ready" and its agent's socket is there.
    fn whole_rust(&self, b: &Built, mode: &str) -> Proc {
        let child = self
            .cmd(&b.fixture)
            .arg(mode)
            .env("LD_PRELOAD", &b.preload)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut p = Proc { child, out: None };
        let mut out = BufReader::new(p.child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n", "the fixture's first line");
        p.out = Some(out);
        let sock = self.0.join("tracer").join(format!("{}.sock", p.pid()));
        // Made by the preload library's constructor, before main.
        assert!(
            sock.exists(),
            "no agent socket after the fixture's first line"
        );
        p
    }
}

/// A fixture process, killed on drop (also when a test fails).
struct Proc {
    child: Child,
    out: Option<BufReader<ChildStdout>>,
}

impl Proc {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Send the line it waits for; return its status and the rest of its
    /// stdout once it exits.
    fn finish(&mut self) -> (std::process::ExitStatus, String) {
        self.child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"go\n")
            .unwrap();
        let mut out = self.out.take().unwrap();
        // Reading stdout to its end would hang if the fixture hung: read in
        // a thread and wait for the exit with a deadline.
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the fixture did not exit within {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        (status, reader.join().unwrap())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tracer list -p PID --json` as (name, enabled).
fn list(d: &Dir, p: &Proc) -> Vec<(String, bool)> {
    json(&d.tracer(&["list", "-p", &p.pid(), "--json"]))
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["enabled"] == true,
            )
        })
        .collect()
}

/// Prefixes of the tracer's own functions, which must never be listed.
const OWN: &[&str] = &[
    "tracer::",
    "tracer_core::",
    "tracer_arch_x86::",
    "tracer_preload::",
    "<tracer",
    "__tracer",
];

#[test]
fn list_and_enable_by_module_pattern() {
    let b = built_or_fail!();
    let d = Dir::new();
    let mut p = d.whole_rust(b, "wait");
    let fns = list(&d, &p);
    let names: Vec<&str> = fns.iter().map(|(n, _)| n.as_str()).collect();
    for f in [
        "whole_rust::parse::number",
        "whole_rust::parse::line",
        "whole_rust::work::step",
        "whole_rust::work::fib",
        "whole_rust::boom::explode",
        "whole_rust::boom::guarded",
    ] {
        assert!(names.contains(&f), "{f} not listed: {names:?}");
    }
    let own: Vec<&&str> = names
        .iter()
        .filter(|n| OWN.iter().any(|o| n.starts_with(o)))
        .collect();
    assert!(own.is_empty(), "the tracer's own functions listed: {own:?}");
    assert!(fns.iter().all(|(_, on)| !on), "enabled at start: {fns:?}");

    let out = ok(&d.tracer(&["enable", "-p", &p.pid(), "whole_rust::parse::*"]));
    assert!(out.contains("enabled whole_rust::parse::number"), "{out}");
    let mut on: Vec<String> = list(&d, &p)
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| n)
        .collect();
    on.sort();
    assert_eq!(on, ["whole_rust::parse::line", "whole_rust::parse::number"]);

    let (status, out) = p.finish();
    assert!(status.success(), "status {status:?}, stdout:\n{out}");
    assert!(out.ends_with("done\n"), "{out}");
}

/// The function_graph lines of `tracer run --trace`'s output, each without
/// its thread and duration columns (everything up to the first '|').
fn graph_lines(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with(" 1)"))
        .filter_map(|l| l.split_once('|').map(|(_, r)| r.trim_end().to_string()))
        .collect()
}

fn run_once(b: &Built) -> (Output, Vec<String>) {
    let d = Dir::new();
    let fixture = b.fixture.to_str().unwrap();
    let trace = d.0.join("trace.txt");
    let mut o = d
        .cmd(TRACER)
        .args(["run", "--enable", "whole_rust::*", "--trace", "-o"])
        .arg(&trace)
        .args(["--", fixture])
        .arg("once")
        .output()
        .unwrap();
    // The program's output, then the trace (`run -o`).
    o.stdout.extend(std::fs::read(&trace).unwrap_or_default());
    let out = text(&o.stdout);
    let lines = graph_lines(&out);
    (o, lines)
}

#[test]
fn run_trace_prints_the_call_graph_with_recursion_and_a_caught_panic() {
    let b = built_or_fail!();
    let (o, lines) = run_once(b);
    let out = ok(&o);
    assert!(out.contains("caught panic\n"), "{out}");
    assert!(out.contains("done\n"), "{out}");
    // Up to the panic; `main::{closure#0}` is the panic hook, which the
    // panic calls inside `explode`.
    let expected = "  whole_rust::main() {
    whole_rust::workload() {
      whole_rust::parse::line() {
        whole_rust::parse::number();
        whole_rust::parse::number();
      } /* whole_rust::parse::line */
      whole_rust::work::step() {
        whole_rust::work::fib() {
          whole_rust::work::fib() {
            whole_rust::work::fib();
            whole_rust::work::fib();
          } /* whole_rust::work::fib */
          whole_rust::work::fib();
        } /* whole_rust::work::fib */
      } /* whole_rust::work::step */
      whole_rust::boom::guarded() {
        whole_rust::boom::explode() {
          whole_rust::main::{closure#0}();";
    let expected: Vec<&str> = expected.lines().collect();
    let got: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert!(
        got.len() >= expected.len() && got[..expected.len()] == expected[..],
        "expected the graph to start with\n{}\n\ngot\n{}\n\nwhole output:\n{out}\n{}",
        expected.join("\n"),
        got.join("\n"),
        text(&o.stderr)
    );
}

/// The frames a caught panic did not unwind (`guarded`, which catches it,
/// `workload`, `main`) should still show their exits.
#[test]
fn run_trace_closes_the_frames_outside_a_caught_panic() {
    let b = built_or_fail!();
    let (o, lines) = run_once(b);
    let out = ok(&o);
    let closing: Vec<&str> = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with('}'))
        .collect();
    let want = [
        "} /* whole_rust::boom::guarded */",
        "} /* whole_rust::workload */",
        "} /* whole_rust::main */",
    ];
    assert!(
        closing.ends_with(&want),
        "closing lines {closing:#?}\nwhole output:\n{out}"
    );
}

#[test]
fn enable_and_disable_while_four_threads_run() {
    let b = built_or_fail!();
    let d = Dir::new();
    let mut p = d.whole_rust(b, "threads");
    let pid = p.pid();
    for i in 0..20 {
        let out = ok(&d.tracer(&["enable", "-p", &pid, "whole_rust::work::*"]));
        assert!(
            out.contains("enabled whole_rust::work::fib"),
            "round {i}: {out}"
        );
        std::thread::sleep(Duration::from_millis(5));
        let out = ok(&d.tracer(&["disable", "-p", &pid, "whole_rust::work::*"]));
        assert!(
            out.contains("disabled whole_rust::work::fib"),
            "round {i}: {out}"
        );
    }
    let st = json(&d.tracer(&["status", "-p", &pid, "--json"]));
    assert_eq!(st["returns"], "hooked", "{st:#}");
    assert_eq!(st["enabled"].as_array().map(Vec::len), Some(0), "{st:#}");
    let (status, out) = p.finish();
    assert!(status.success(), "status {status:?}, stdout:\n{out}");
    assert!(out.ends_with("done\n"), "{out}");
}

/// Everything enabled for a while under four threads: each round panics
/// through hooked frames on every thread at once.
#[test]
fn four_threads_panicking_through_hooked_frames() {
    let b = built_or_fail!();
    let d = Dir::new();
    let mut p = d.whole_rust(b, "threads");
    let pid = p.pid();
    ok(&d.tracer(&["enable", "-p", &pid, "whole_rust::*"]));
    // Until frames have been unwound by panics on the traced threads (the
    // deadline only bounds how long a broken build takes to fail).
    let t0 = std::time::Instant::now();
    let st = loop {
        let st = json(&d.tracer(&["status", "-p", &pid, "--json"]));
        if st["unwound"].as_u64().unwrap_or(0) > 0 || t0.elapsed() > Duration::from_secs(30) {
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(st["returns"], "hooked", "{st:#}");
    assert!(st["unwound"].as_u64().unwrap_or(0) > 0, "{st:#}");
    ok(&d.tracer(&["disable", "-p", &pid, "*"]));
    let (status, out) = p.finish();
    assert!(status.success(), "status {status:?}, stdout:\n{out}");
    assert!(out.ends_with("done\n"), "{out}");
}

/// `std::backtrace` inside traced frames walks the real callers: the same
/// frames as without tracing, none of the tracer's, and the walked frames
/// still show their exits.
#[test]
fn std_backtrace_inside_traced_frames_sees_the_real_callers() {
    let b = built_or_fail!();
    let frames = |out: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.strip_prefix("frame "))
            .map(String::from)
            .collect()
    };
    let plain = Command::new(&b.fixture).arg("backtrace").output().unwrap();
    let plain_out = ok(&plain);
    let want = frames(&plain_out);
    for f in [
        "whole_rust::walk::inner",
        "whole_rust::walk::outer",
        "whole_rust::main",
    ] {
        assert!(
            want.iter().any(|n| n == f),
            "{f} missing untraced:\n{plain_out}"
        );
    }
    let d = Dir::new();
    let trace = d.0.join("trace.txt");
    let mut o = d
        .cmd(TRACER)
        .args(["run", "--enable", "whole_rust::*", "--trace", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(&b.fixture)
        .arg("backtrace")
        .output()
        .unwrap();
    // The program's output, then the trace (`run -o`).
    o.stdout.extend(std::fs::read(&trace).unwrap_or_default());
    let out = ok(&o);
    assert!(out.contains("result 4\n"), "{out}");
    assert_eq!(frames(&out), want, "{out}");
    let closing: Vec<String> = graph_lines(&out)
        .iter()
        .map(|l| l.trim().to_string())
        .filter(|l| l.starts_with('}'))
        .collect();
    for f in [
        "whole_rust::walk::middle",
        "whole_rust::walk::outer",
        "whole_rust::main",
    ] {
        assert!(
            closing.contains(&format!("}} /* {f} */")),
            "no exit of {f}:\n{out}"
        );
    }
}

/// Rust names as users mean them, on v0-mangled (or legacy) names of a
/// whole program: a function's own name selects every generic
/// instantiation; `crate::module::*` selects inherent methods and trait
/// impls of the module's types; an `#[inline]` function copied into two
/// codegen units is one function (one row, counted together); every listed
/// name given back to `enable` selects exactly that function.
#[test]
fn names_select_what_rust_users_mean() {
    let b = built_or_fail!();
    let d = Dir::new();
    let mut p = d.whole_rust(b, "names");
    let pid = p.pid();
    let listed: Vec<Value> = json(&d.tracer(&["list", "-p", &pid, "--json"]))
        .as_array()
        .unwrap()
        .clone();
    let names: Vec<String> = listed
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    let enabled_by = |pattern: &str| -> Vec<String> {
        let out = ok(&d.tracer(&["enable", "-p", &pid, pattern]));
        ok(&d.tracer(&["disable", "-p", &pid, pattern]));
        out.lines()
            .filter_map(|l| l.strip_prefix("enabled "))
            .map(String::from)
            .collect()
    };

    let generic = enabled_by("generic");
    assert_eq!(generic.len(), 3, "{generic:?}");
    assert!(
        generic.iter().all(|n| n.contains("names::generic")),
        "{generic:?}"
    );

    let module = enabled_by("whole_rust::names::*");
    for want in [
        "whole_rust::names::Cache>::get",
        "as whole_rust::names::Store>::put",
        "as core::fmt::Debug>::fmt",
        "whole_rust::names::shared",
    ] {
        assert!(
            module.iter().any(|n| n.contains(want)),
            "{want} not selected by whole_rust::names::*: {module:?}"
        );
    }
    assert!(
        module
            .iter()
            .filter(|n| n.contains("names::generic"))
            .count()
            == 3
    );
    assert!(
        !module.iter().any(|n| n.contains("cgu_a")),
        "another module's function selected: {module:?}"
    );

    let shared: Vec<&String> = names
        .iter()
        .filter(|n| n.contains("names::shared"))
        .collect();
    assert_eq!(
        shared.len(),
        1,
        "one row for the codegen-unit copies: {shared:?}"
    );
    let sites = listed
        .iter()
        .find(|f| f["name"].as_str() == Some(shared[0].as_str()))
        .map(|f| f["problems"].as_array().map_or(0, Vec::len));
    assert_eq!(sites, Some(0));

    // Every name round-trips (those with usable pads; at most 150 of them).
    let usable: Vec<&String> = listed
        .iter()
        .filter(|f| f["problems"].as_array().is_none_or(|a| a.is_empty()))
        .filter_map(|f| {
            names
                .iter()
                .find(|n| Some(n.as_str()) == f["name"].as_str())
        })
        .take(150)
        .collect();
    assert!(usable.len() >= 10, "{usable:?}");
    for n in usable {
        let got = enabled_by(n);
        assert_eq!(got, std::slice::from_ref(n), "enable {n:?}");
    }
    let (status, out) = p.finish();
    assert!(status.success(), "{out}");

    // The copies are counted together: 100 rounds, two calls each.
    let d = Dir::new();
    let hist = d.0.join("hist.txt");
    let mut c = d
        .cmd(TRACER)
        .args(["run", "--enable", shared[0].as_str(), "--hist", "-o"])
        .arg(&hist)
        .arg("--")
        .arg(&b.fixture)
        .arg("names")
        .env("TRACER_PRELOAD", &b.preload)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let table = std::fs::read_to_string(&hist).unwrap();
    let row = table
        .lines()
        .find(|l| l.contains("names::shared"))
        .unwrap_or_else(|| panic!("no row for shared:\n{table}"));
    let count: u64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(count, 200, "{table}");
}
