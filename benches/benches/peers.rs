//! Peer comparison: the per-call cost of tracing one small C function with
//! tracer's preload library and with other function tracers (uftrace, LLVM
//! XRay), against an untraced build.
//!
//! `cargo bench -p tracer-benches --bench peers`
//!
//! Builds `benches/peers/work.c` into `target/peers/` in several
//! configurations, runs each one `PEERS_RUNS` times (default 5) with
//! `PEERS_N` calls (default 20,000,000), the configurations taking turns
//! (one run of each per round, so a drift of the machine's speed falls on
//! all alike), and prints one table of medians. `PEERS_PIN=CPU` runs every
//! program under `taskset -c CPU`: on a VM whose CPUs are shared this gives
//! the steadiest figures (the tracer's collector thread then shares the
//! loop's CPU; the CPU-time column counts the loop thread alone). The
//! program times its own loop, so start-up, trace set-up and trace flushing
//! are not in the ns/call figure (the wall-clock column has them). A peer that
//! is not installed gives a "skipped" row, never a failure. Every build and
//! run command is printed, relative to the workspace root, where they run.
//!
//! Run as a test (`cargo test --benches`, no `--bench` argument) it does one
//! short run of each configuration.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SOURCE: &str = "benches/peers/work.c";
const CLANG: &str = "clang-19";
const APT_CLANG: &str = "apt-get install clang-19";
const APT_XRAY: &str = "apt-get install clang-19 libclang-rt-19-dev";
const APT_UFTRACE: &str = "apt-get install uftrace";

/// A command line: environment assignments, program and arguments.
#[derive(Clone)]
struct Cmd {
    env: Vec<(String, String)>,
    argv: Vec<String>,
}

impl Cmd {
    fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd {
            env: Vec::new(),
            argv: argv.into_iter().map(Into::into).collect(),
        }
    }

    fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    /// The command as one line of POSIX shell.
    fn shell(&self) -> String {
        let env = self.env.iter().map(|(k, v)| format!("{k}={}", quote(v)));
        let argv = self.argv.iter().map(|a| quote(a));
        env.chain(argv).collect::<Vec<_>>().join(" ")
    }

    /// Runs it in `dir`; stdout on success, a one-line reason otherwise.
    fn output(&self, dir: &Path) -> Result<String, String> {
        let mut c = Command::new(&self.argv[0]);
        c.args(&self.argv[1..])
            .current_dir(dir)
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let out = c
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.argv[0]))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().rev().find(|l| !l.trim().is_empty());
            Err(format!(
                "`{}` failed ({}): {}",
                self.argv[0],
                out.status,
                last.unwrap_or("no message")
            ))
        }
    }
}

fn quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Whether `program --version` runs and succeeds.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// First line of `program --version`, for the header.
fn version(program: &str) -> Option<String> {
    let out = Command::new(program).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

/// Whether clang finds its XRay runtime archive (libclang-rt-19-dev).
fn xray_runtime_installed() -> bool {
    let Ok(out) = Command::new(CLANG)
        .arg("--print-file-name=libclang_rt.xray-x86_64.a")
        .output()
    else {
        return false;
    };
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    path.is_absolute() && path.exists()
}

/// What a row checks after each run, besides the program's own output.
enum After {
    Nothing,
    /// A tracer's output directory that must hold a file whose name starts
    /// with this prefix; emptied before and removed after each run.
    Output {
        dir: String,
        prefix: &'static str,
    },
}

/// One configuration of the table.
struct Row {
    label: &'static str,
    /// Why it cannot run, if it cannot.
    skip: Option<String>,
    build: Option<Cmd>,
    run: Cmd,
    after: After,
}

/// Medians and spread of one row's runs.
struct Measured {
    ns_per_call: f64,
    /// Median of the loop thread's CPU time per call (`cpu_ns_per_call=`).
    cpu_per_call: Option<f64>,
    min: f64,
    max: f64,
    wall: Duration,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn parse_ns(stdout: &str) -> Result<f64, String> {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("ns_per_call="))
        .ok_or_else(|| "no ns_per_call= line in the output".to_string())?
        .parse::<f64>()
        .map_err(|e| format!("bad ns_per_call value: {e}"))
}

fn parse_cpu(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("cpu_ns_per_call="))?
        .parse::<f64>()
        .ok()
}

fn clear_dir(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
}

/// One run: the program's ns/call, its loop thread's CPU ns/call (when it
/// prints it) and the whole process's wall time in seconds.
type Run = (f64, Option<f64>, f64);

/// One run of `row`.
fn run_once(row: &Row, root: &Path) -> Result<Run, String> {
    if let After::Output { dir, .. } = &row.after {
        let dir = root.join(dir);
        clear_dir(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let t = Instant::now();
    let result = row.run.output(root);
    let wall = t.elapsed().as_secs_f64();
    if let After::Output { dir, prefix } = &row.after {
        let dir = root.join(dir);
        let found = fs::read_dir(&dir).into_iter().flatten().flatten().any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(prefix))
        });
        // Trace files can be large (uftrace: 32 bytes per call).
        clear_dir(&dir);
        if result.is_ok() && !found {
            return Err(format!(
                "the tracer wrote no {prefix}* file into {}: not active",
                dir.display()
            ));
        }
    }
    let out = result?;
    Ok((parse_ns(&out)?, parse_cpu(&out), wall))
}

/// The medians and spread of a row's runs.
fn summarize(runs: &[Run]) -> Measured {
    let mut ns: Vec<f64> = runs.iter().map(|r| r.0).collect();
    let mut cpu: Vec<f64> = runs.iter().filter_map(|r| r.1).collect();
    let mut walls: Vec<f64> = runs.iter().map(|r| r.2).collect();
    let min = ns.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ns.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Measured {
        ns_per_call: median(&mut ns),
        cpu_per_call: (cpu.len() == ns.len()).then(|| median(&mut cpu)),
        min,
        max,
        wall: Duration::from_secs_f64(median(&mut walls)),
    }
}

fn rows(root: &Path, target: &Path, n: u64) -> Vec<Row> {
    // Paths relative to the workspace root when they are inside it, so that
    // the printed commands can be copied as they are.
    let rel = |p: &Path| -> String {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let peers = target.join("peers");
    let exe = |name: &str| rel(&peers.join(name));
    let run_exe = |name: &str| {
        let p = exe(name);
        if p.starts_with('/') {
            p
        } else {
            format!("./{p}")
        }
    };
    let n = n.to_string();
    let gcc = installed("gcc");
    let clang = installed(CLANG);
    let uftrace = installed("uftrace");
    let no_gcc = || (!gcc).then(|| "gcc not installed: apt-get install gcc".to_string());
    let no_clang = || (!clang).then(|| format!("{CLANG} not installed: {APT_CLANG}"));
    let no_uftrace =
        || no_gcc().or_else(|| (!uftrace).then(|| format!("uftrace not installed: {APT_UFTRACE}")));
    let xray_runtime = clang && xray_runtime_installed();
    let no_xray = || {
        (!clang)
            .then(|| format!("{CLANG} not installed: {APT_XRAY}"))
            .or_else(|| {
                (!xray_runtime)
                    .then(|| format!("XRay runtime of {CLANG} not installed: {APT_XRAY}"))
            })
    };
    let cc = |compiler: &str, flags: &[&str], out: &str| {
        let mut argv = vec![compiler.to_string()];
        argv.extend(flags.iter().map(|f| f.to_string()));
        argv.extend([SOURCE.to_string(), "-o".to_string(), exe(out)]);
        Cmd::new(argv)
    };
    let xray_flags = ["-O2", "-fxray-instrument", "-fxray-instruction-threshold=1"];

    let preload = target.join("release/libtracer_preload.so");
    let uftrace_dir = rel(&peers.join("uftrace.data"));
    let xray_dir = rel(&peers.join("xray"));

    vec![
        Row {
            label: "untraced (gcc -O2)",
            skip: no_gcc(),
            build: Some(cc("gcc", &["-O2"], "work-gcc")),
            run: Cmd::new([run_exe("work-gcc"), n.clone()]),
            after: After::Nothing,
        },
        Row {
            label: "untraced (clang-19 -O2)",
            skip: no_clang(),
            build: Some(cc(CLANG, &["-O2"], "work-clang")),
            run: Cmd::new([run_exe("work-clang"), n.clone()]),
            after: After::Nothing,
        },
        Row {
            label: "floor: rdtsc + 16 B TLS store, entry+exit",
            skip: no_clang(),
            build: Some(cc(
                CLANG,
                &["-O2", "-finstrument-functions", "-DWORK_FLOOR"],
                "work-floor",
            )),
            run: Cmd::new([run_exe("work-floor"), n.clone()]),
            after: After::Nothing,
        },
        Row {
            label: "clang pads, not enabled",
            skip: no_clang(),
            build: Some(cc(
                CLANG,
                &["-O2", "-fpatchable-function-entry=5"],
                "work-clang-pfe",
            )),
            run: Cmd::new([run_exe("work-clang-pfe"), n.clone()]),
            after: After::Nothing,
        },
        Row {
            label: "tracer",
            skip: no_clang()
                .or_else(|| (!preload.exists()).then(|| "preload library not built".to_string())),
            build: Some(cc(
                CLANG,
                &["-O2", "-fpatchable-function-entry=5"],
                "work-clang-pfe",
            )),
            run: Cmd::new([run_exe("work-clang-pfe"), n.clone()])
                .env("LD_PRELOAD", rel(&preload))
                .env("TRACER_ENABLE", "leaf"),
            after: After::Nothing,
        },
        Row {
            label: "uftrace, gcc -pg",
            skip: no_uftrace(),
            build: Some(cc("gcc", &["-O2", "-pg"], "work-gcc-pg")),
            run: Cmd::new([
                "uftrace".to_string(),
                "record".to_string(),
                "-d".to_string(),
                uftrace_dir.clone(),
                run_exe("work-gcc-pg"),
                n.clone(),
            ]),
            after: After::Output {
                dir: uftrace_dir.clone(),
                prefix: "info",
            },
        },
        Row {
            label: "uftrace -P ., gcc pads",
            skip: no_uftrace(),
            build: Some(cc(
                "gcc",
                &["-O2", "-fpatchable-function-entry=5"],
                "work-gcc-pfe",
            )),
            run: Cmd::new([
                "uftrace".to_string(),
                "record".to_string(),
                "-d".to_string(),
                uftrace_dir.clone(),
                "-P".to_string(),
                ".".to_string(),
                run_exe("work-gcc-pfe"),
                n.clone(),
            ]),
            after: After::Output {
                dir: uftrace_dir,
                prefix: "info",
            },
        },
        Row {
            label: "XRay sleds, not patched",
            skip: no_xray(),
            build: Some(cc(CLANG, &xray_flags, "work-xray")),
            run: Cmd::new([run_exe("work-xray"), n.clone()]),
            after: After::Nothing,
        },
        Row {
            label: "XRay trampolines only",
            skip: no_xray(),
            build: Some(cc(CLANG, &xray_flags, "work-xray")),
            run: Cmd::new([run_exe("work-xray"), n.clone()])
                .env("XRAY_OPTIONS", "patch_premain=true verbosity=0"),
            after: After::Nothing,
        },
        Row {
            label: "XRay FDR",
            skip: no_xray(),
            build: Some(cc(
                CLANG,
                &[&xray_flags[..], &["-DWORK_XRAY_FDR"]].concat(),
                "work-xray-fdr",
            )),
            run: Cmd::new([run_exe("work-xray-fdr"), n])
                .env(
                    "XRAY_OPTIONS",
                    format!(
                        "patch_premain=true xray_mode=xray-fdr verbosity=0 \
                         xray_logfile_base={xray_dir}/xray-log."
                    ),
                )
                // Record every call: by default FDR drops calls under 5 us.
                .env("XRAY_FDR_OPTIONS", "func_duration_threshold_us=0"),
            after: After::Output {
                dir: xray_dir,
                prefix: "xray-log.",
            },
        },
    ]
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`) we
    // only check that every configuration builds and runs.
    let bench = std::env::args().any(|a| a == "--bench");
    let env_num = |key: &str, default: u64| {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&v| v > 0)
            .unwrap_or(default)
    };
    let n = env_num("PEERS_N", if bench { 20_000_000 } else { 100_000 });
    let runs = env_num("PEERS_RUNS", if bench { 5 } else { 1 }) as usize;

    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().unwrap_or(manifest).to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root.join(t) })
        .unwrap_or_else(|| root.join("target"));
    if let Err(e) = fs::create_dir_all(target.join("peers")) {
        println!(
            "peers: cannot create {}: {e}",
            target.join("peers").display()
        );
        return;
    }

    println!("peers: {n} calls of leaf() per run, median of {runs} runs");
    println!("peers: workspace {}", root.display());
    for tool in ["gcc", CLANG, "uftrace"] {
        let v = version(tool).unwrap_or_else(|| "not installed".to_string());
        println!("peers: {tool}: {v}");
    }
    println!();

    let pin = std::env::var("PEERS_PIN")
        .ok()
        .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()));
    if let Some(cpu) = &pin {
        println!("peers: every program runs under `taskset -c {cpu}`");
    }
    let mut rows = rows(&root, &target, n);
    if let Some(cpu) = &pin {
        for row in &mut rows {
            let mut argv = vec!["taskset".to_string(), "-c".to_string(), cpu.clone()];
            argv.append(&mut row.run.argv);
            row.run.argv = argv;
        }
    }
    // Build every configuration, then run them in turns.
    let mut state: Vec<Result<Vec<Run>, String>> = rows
        .iter()
        .map(|row| match (&row.skip, &row.build) {
            (Some(why), _) => Err(format!("skipped ({why})")),
            (None, Some(build)) => build
                .output(&root)
                .map(|_| Vec::new())
                .map_err(|e| format!("failed: {e}")),
            (None, None) => Ok(Vec::new()),
        })
        .collect();
    for round in 0..runs {
        for (row, st) in rows.iter().zip(&mut state) {
            let Ok(done) = st else { continue };
            match run_once(row, &root) {
                Ok(r) => {
                    println!(
                        "{} (run {}): {:.2} ns/call{}",
                        row.label,
                        round + 1,
                        r.0,
                        r.1.map_or(String::new(), |c| format!(", cpu {c:.2}"))
                    );
                    done.push(r);
                }
                Err(e) => *st = Err(format!("failed: {e}")),
            }
        }
    }
    let results: Vec<Result<Measured, String>> = state
        .into_iter()
        .map(|st| st.map(|runs| summarize(&runs)))
        .collect();

    let base = results[0].as_ref().ok().map(|m| m.ns_per_call);
    let cpu_base = results[0].as_ref().ok().and_then(|m| m.cpu_per_call);
    println!();
    println!(
        "| {:<32} | {:>9} | {:>17} | {:>13} | {:>11} | {:>12} | {:>8} |",
        "configuration",
        "ns/call",
        "min..max",
        "overhead/call",
        "cpu ns/call",
        "cpu overhead",
        "wall s"
    );
    println!(
        "|{:-<34}|{:->11}|{:->19}|{:->15}|{:->13}|{:->14}|{:->10}|",
        "", ":", ":", ":", ":", ":", ":"
    );
    for (row, result) in rows.iter().zip(&results) {
        match result {
            Ok(m) => {
                let over = base.map_or("n/a".to_string(), |b| {
                    format!("{:+.2} ns", m.ns_per_call - b)
                });
                let (cpu, cpu_over) = match (m.cpu_per_call, cpu_base) {
                    (Some(c), Some(b)) => (format!("{c:.2}"), format!("{:+.2} ns", c - b)),
                    (Some(c), None) => (format!("{c:.2}"), "n/a".to_string()),
                    _ => ("n/a".to_string(), "n/a".to_string()),
                };
                println!(
                    "| {:<32} | {:>9.2} | {:>17} | {:>13} | {:>11} | {:>12} | {:>8.2} |",
                    row.label,
                    m.ns_per_call,
                    format!("{:.2}..{:.2}", m.min, m.max),
                    over,
                    cpu,
                    cpu_over,
                    m.wall.as_secs_f64()
                );
            }
            Err(e) => println!("| {:<32} | {e} | | | | | |", row.label),
        }
    }
    let cpu_of = |label: &str| {
        rows.iter()
            .zip(&results)
            .find(|(r, _)| r.label.starts_with(label))
            .and_then(|(_, m)| m.as_ref().ok())
            .and_then(|m| m.cpu_per_call)
    };
    if let (Some(floor), Some(tracer)) = (cpu_of("floor"), cpu_of("tracer")) {
        println!();
        println!(
            "tracer / floor (cpu ns/call): {tracer:.2} / {floor:.2} = {:.2}x, {:+.2} ns (issue 12's goal: <= 1.10x)",
            tracer / floor,
            tracer - floor
        );
    }
    println!();
    println!("Overhead/call = ns/call - untraced (gcc -O2) ns/call; both time only the loop.");
    println!("Cpu ns/call = the loop thread's own CPU time (CLOCK_THREAD_CPUTIME_ID) per call:");
    println!("not inflated when a loaded machine preempts the loop, and without the tracer's");
    println!("other threads (its collector); cpu overhead is against the untraced gcc build's.");
    println!("Wall s = the whole process (start-up, tracer set-up, trace writing).");
    println!();
    println!("Commands (run from the workspace root; the tracer row needs");
    println!("`cargo build --release -p tracer-preload` first):");
    for row in &rows {
        println!("# {}", row.label);
        if let Some(b) = &row.build {
            println!("{}", b.shell());
        }
        println!("{}", row.run.shell());
    }
}
