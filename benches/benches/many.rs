//! Commands at scale: a generated C program with many padded functions.
//!
//! `cargo bench -p tracer-benches --bench many` (100,000 functions);
//! `MANY_FUNCS=10000,100000,1000000` for several sizes. For each size it
//! generates `target/many/many-N.c` (N `noinline` functions, each called
//! ten times a second by `main`), builds it with `clang-19 -O1
//! -fpatchable-function-entry=5` (gcc if clang-19 is missing), starts it
//! under the release preload library, and prints, for every `tracer`
//! command a user would run, its wall time and the `tracer` program's peak
//! RSS, and the traced program's RSS: untraced, under the agent with every
//! function registered and named but none enabled, and after `enable '*'`.
//! Start-up is the time to the program's first line, traced minus
//! untraced (median of 5).
//!
//! Builds the release `tracer` and preload library first. Run as a test
//! (`cargo test --benches`, no `--bench`) it does one run at 2,000
//! functions and checks that the counts come out right.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    let m = Path::new(env!("CARGO_MANIFEST_DIR"));
    m.parent().unwrap_or(m).to_path_buf()
}

fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root().join(t) })
        .unwrap_or_else(|| root().join("target"))
}

/// Write and build the program with `n` functions (kept between runs).
fn build(n: usize) -> PathBuf {
    let dir = target().join("many");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(format!("many-{n}"));
    if exe.exists() {
        return exe;
    }
    let src = dir.join(format!("many-{n}.c"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
    writeln!(
        f,
        "#include <stdio.h>\n#include <time.h>\nvolatile unsigned long sink;"
    )
    .unwrap();
    for i in 0..n {
        writeln!(
            f,
            "__attribute__((noinline)) void f{i}(unsigned long x) {{ sink += x + {i}; }}"
        )
        .unwrap();
    }
    writeln!(f, "static void (*const table[])(unsigned long) = {{").unwrap();
    for i in 0..n {
        writeln!(f, "f{i},").unwrap();
    }
    writeln!(
        f,
        "}};\nint main(void) {{\n  printf(\"ready\\n\");\n  fflush(stdout);\n  \
         for (unsigned long r = 0;; r++) {{\n    for (unsigned long i = 0; i < {n}; i++) table[i](r);\n    \
         struct timespec ts = {{0, 100000000}};\n    nanosleep(&ts, 0);\n  }}\n}}"
    )
    .unwrap();
    drop(f);
    let cc = if Command::new("clang-19").arg("--version").output().is_ok() {
        "clang-19"
    } else {
        "gcc"
    };
    let t = Instant::now();
    let st = Command::new(cc)
        .args(["-O1", "-fpatchable-function-entry=5", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("a C compiler runs");
    assert!(st.success(), "{cc} failed on {}", src.display());
    println!(
        "many: built {} with {cc} in {:.0} s",
        exe.display(),
        t.elapsed().as_secs_f64()
    );
    exe
}

/// Wall time and peak RSS (KiB) of one `tracer` command; its stdout goes
/// to `out` (a file, so this process never holds a big output: a child's
/// peak RSS starts at its parent's when it is forked).
fn run(tracer: &Path, xdg: &Path, args: &[&str], out: &Path) -> (Duration, u64) {
    let t = Instant::now();
    let child = Command::new(tracer)
        .args(args)
        .env("XDG_RUNTIME_DIR", xdg)
        .env("NO_COLOR", "1")
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    drop(child);
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = t.elapsed();
    assert!(
        r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "tracer {args:?} failed"
    );
    (wall, ru.ru_maxrss as u64)
}

/// How many times `needle` occurs in the file at `path`, read in chunks.
fn count_in(path: &Path, needle: &[u8]) -> usize {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut carry: Vec<u8> = Vec::new();
    let mut n = 0;
    loop {
        let k = f.read(&mut buf).unwrap();
        if k == 0 {
            return n;
        }
        carry.extend_from_slice(&buf[..k]);
        n += carry.windows(needle.len()).filter(|w| *w == needle).count();
        let keep = carry.len().min(needle.len() - 1);
        carry.drain(..carry.len() - keep);
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Start `exe` (with `preload` if given); returns it and the time to its
/// first line.
fn start(exe: &Path, preload: Option<&Path>, xdg: &Path) -> (Child, Duration) {
    let mut c = Command::new(exe);
    c.env("XDG_RUNTIME_DIR", xdg).stdout(Stdio::piped());
    if let Some(p) = preload {
        c.env("LD_PRELOAD", p);
    }
    let t = Instant::now();
    let mut child = c.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    (child, t.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn one(n: usize, tracer: &Path, preload: &Path, bench: bool) {
    let exe = build(n);
    let xdg = std::env::temp_dir().join(format!("tracer-many-{}", std::process::id()));
    std::fs::create_dir_all(&xdg).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let runs = if bench { 5 } else { 1 };
    let mut plain = Vec::new();
    let mut traced = Vec::new();
    for _ in 0..runs {
        let (mut c, t) = start(&exe, None, &xdg);
        plain.push(t);
        let _ = c.kill();
        let _ = c.wait();
        let (mut c, t) = start(&exe, Some(preload), &xdg);
        traced.push(t);
        let _ = c.kill();
        let _ = c.wait();
    }
    let (plain, traced) = (median(plain), median(traced));
    // The program's own memory, without the agent.
    let untraced_rss = {
        let (mut c, _) = start(&exe, None, &xdg);
        std::thread::sleep(Duration::from_millis(300));
        let r = rss_kib(c.id());
        let _ = c.kill();
        let _ = c.wait();
        r
    };
    let (mut child, _) = start(&exe, Some(preload), &xdg);
    let pid = child.id();
    let p = pid.to_string();
    std::thread::sleep(Duration::from_millis(300));
    let idle = rss_kib(pid);
    println!("\nmany: {n} functions");
    println!(
        "  start-up to first line: {:.1} ms untraced, {:.1} ms under the agent (+{:.1} ms)",
        plain.as_secs_f64() * 1e3,
        traced.as_secs_f64() * 1e3,
        (traced.as_secs_f64() - plain.as_secs_f64()) * 1e3
    );
    println!(
        "  program RSS: {:.1} MiB untraced, {:.1} MiB under the agent",
        untraced_rss as f64 / 1024.0,
        idle as f64 / 1024.0
    );
    let out = xdg.join("out");
    let show = |what: &str, r: &(Duration, u64)| {
        println!(
            "  {what:<34} {:>8.3} s  tracer peak RSS {:>7.1} MiB",
            r.0.as_secs_f64(),
            r.1 as f64 / 1024.0
        );
    };
    let r = run(tracer, &xdg, &["status", "-p", &p], &out);
    show("tracer status", &r);
    let r = run(tracer, &xdg, &["list", "--json", "-p", &p], &out);
    assert_eq!(count_in(&out, b"\"name\":"), n + 1, "f0..f{n} and main");
    show("tracer list --json", &r);
    // Every function registered, named and listed, none enabled.
    let registered = rss_kib(pid);
    println!(
        "  program RSS, every function registered and named, none enabled: {:.1} MiB \
         (+{:.0} bytes per function over the untraced program)",
        registered as f64 / 1024.0,
        (registered.saturating_sub(untraced_rss) * 1024) as f64 / n as f64
    );
    let r = run(tracer, &xdg, &["enable", "*", "-p", &p], &out);
    show("tracer enable '*'", &r);
    std::thread::sleep(Duration::from_millis(1500));
    let enabled = rss_kib(pid);
    println!(
        "  program RSS, everything enabled and called: {:.1} MiB (+{:.0} bytes per function)",
        enabled as f64 / 1024.0,
        (enabled.saturating_sub(idle) * 1024) as f64 / n as f64
    );
    let r = run(tracer, &xdg, &["status", "-p", &p], &out);
    show("tracer status (all enabled)", &r);
    let r = run(tracer, &xdg, &["disable", "*", "-p", &p], &out);
    show("tracer disable '*'", &r);
    let pat = "f1*";
    let matching = (0..n).filter(|i| i.to_string().starts_with('1')).count();
    let r = run(
        tracer,
        &xdg,
        &["hist", pat, "--duration", "2s", "--json", "-p", &p],
        &out,
    );
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    // Every matching function is called ten times a second: all are seen.
    assert_eq!(rows.len(), matching, "hist {pat}");
    assert!(rows.iter().all(|r| r["count"].as_u64() >= Some(1)));
    show(
        &format!("tracer hist '{pat}' --duration 2s ({matching})"),
        &r,
    );
    println!(
        "  program RSS at the end: {:.1} MiB",
        rss_kib(pid) as f64 / 1024.0
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&xdg);
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "-q",
            "--release",
            "-p",
            "tracer-cli",
            "-p",
            "tracer-preload",
        ])
        .current_dir(root())
        .status()
        .expect("cargo runs");
    assert!(st.success(), "building the release tracer failed");
    let tracer = target().join("release/tracer");
    let preload = target().join("release/libtracer_preload.so");
    let sizes: Vec<usize> = match std::env::var("MANY_FUNCS") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) if bench => vec![100_000],
        Err(_) => vec![2_000],
    };
    for n in sizes {
        one(n, &tracer, &preload, bench);
    }
}
