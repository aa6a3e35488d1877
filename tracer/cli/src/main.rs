//! `tracer`: attach to a running process that links the `tracer` crate,
//! enable functions, and watch them: an ftrace-style trace, latency
//! histograms, recordings, reports and exports. Flags and dispatch only; the
//! work is in the `tracer_cli` library.

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracer_cli::calls::Call;
use tracer_cli::client::{self, Client};
use tracer_cli::graph::{self, Printer};
use tracer_cli::hist::{self, Hists};
use tracer_cli::reader::Reader;
use tracer_cli::record::{self, Recording};
use tracer_cli::{dur, exit, printable, report, serve, Error};
use tracer_core::event::Event;
use tracer_core::wire;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the target or a file refused: no such function, patching refused, unreadable file
  2  bad command line
  3  no traced process found or reachable
  `tracer run` exits with the command's own status.

Colour is used only on a terminal, never when NO_COLOR is set.";

const PATTERNS: &str = "\
Patterns (terms separated by spaces or commas):
  parse_*            a glob (* and ?) without '::' matches a function's own name: its last
                     path segment without generic arguments or clone suffixes, so
                     'search_reader' selects every <S>::search_reader::<T> and
                     'f' selects f.isra.0 and f.constprop.1
  app::cache::*      with '::' the full path, also read without generic arguments and
                     with <T as Trait>::f read as T::f (so 'app::*' selects the methods and
                     trait impls of app's types)
  '* !slow_*'        a leading '!' removes; a pattern must add before it removes
  '\"<usize as core::fmt::Debug>::fmt\"'
                     a name in double quotes is taken literally, spaces and commas included;
                     a whole pattern that is exactly a name `tracer list` prints selects it";

const SERVE_HELP: &str = "\
Examples:
  tracer serve -p 1234 --listen 127.0.0.1:9464
  tracer serve --all --listen 127.0.0.1:9464 'app::*'

Metrics (labels function, pid, exe):
  tracer_function_calls_total          calls that returned
  tracer_function_duration_seconds     their durations (_bucket, _sum, _count; 1-2-5 buckets, 100 ns to 100 s)
  tracer_function_not_returned_total   calls that never returned (longjmp, entry-only)
  tracer_dropped_events_total          events lost to full rings (pid, exe): figures are low
  tracer_functions_left_out_total      functions beyond --max-functions (pid, exe)
  tracer_process_up                    1 while the process is read, 0 after it ended

Only loopback addresses unless --allow-remote. With -p the last figures of an ended
process stay (tracer_process_up 0); with --all its series go.";

/// A userspace ftrace: turn traced functions on in a running process and
/// watch them.
#[derive(Parser)]
#[command(name = "tracer", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone, Copy)]
struct Target {
    /// The process to attach to (default: the only traced process of this user).
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pid: Option<i32>,
}

#[derive(Subcommand)]
enum Cmd {
    /// List traceable functions with file:line and state.
    #[command(after_help = format!("Example:\n  tracer list 'parse*' -p 1234 --json\n\n{PATTERNS}"))]
    List {
        /// Only functions matching this pattern (glob; with `::` the full path).
        pattern: Option<String>,
        /// Print a JSON array of {name, file, line, enabled}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Enable functions (patterns: globs, `!` removes).
    #[command(after_help = format!("Example:\n  tracer enable 'app::cache::*' parse -p 1234\n\n{PATTERNS}"))]
    Enable {
        /// Patterns of functions to enable.
        #[arg(required = true)]
        patterns: Vec<String>,
        #[command(flatten)]
        capture: tracer_cli::values::CaptureFlags,
        #[command(flatten)]
        target: Target,
    },
    /// Disable functions.
    #[command(after_help = format!("Example:\n  tracer disable '*' -p 1234\n\n{PATTERNS}"))]
    Disable {
        /// Patterns of functions to disable.
        #[arg(required = true)]
        patterns: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Enabled functions, threads, buffer sizes, drops, clock source.
    #[command(after_help = "Example:\n  tracer status --json")]
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Stream enabled functions in ftrace's function or function_graph format.
    #[command(after_help = "Example:\n  tracer trace --graph --depth 3 --duration 2s -p 1234")]
    Trace {
        /// function_graph format (nesting and durations).
        #[arg(long)]
        graph: bool,
        /// Only calls at least this long (e.g. 100us).
        #[arg(long, value_parser = dur::parse, value_name = "DUR")]
        threshold: Option<Duration>,
        /// Only calls nested less than N deep.
        #[arg(long, value_name = "N")]
        depth: Option<u16>,
        /// Stop after this long (default: until Ctrl-C or the process ends).
        #[arg(long, value_parser = dur::parse, value_name = "DUR")]
        duration: Option<Duration>,
        /// Only calls whose argument or return value matches (`ret < 0`,
        /// `len > 4096`, `arg2 == 0x10`), each as one line at its exit.
        #[arg(long = "where", value_name = "COND", value_parser = tracer_cli::values::Cond::parse)]
        where_: Option<tracer_cli::values::Cond>,
        #[command(flatten)]
        target: Target,
    },
    /// Per-function latency: count, min, p50, p90, p99, p99.9, max and a log2 chart.
    #[command(
        after_help = "Example:\n  tracer hist 'parse*' --duration 5s\n  tracer hist --interval 1s --json"
    )]
    Hist {
        /// Enable these functions for the collection (disabled again after) and show only them.
        pattern: Option<String>,
        /// Collect for this long (default: until Ctrl-C or the process ends).
        #[arg(long, value_parser = dur::parse, value_name = "DUR")]
        duration: Option<Duration>,
        /// Also print the histograms so far every DUR.
        #[arg(long, value_parser = dur::parse, value_name = "DUR")]
        interval: Option<Duration>,
        /// Print one JSON array of {name,count,min,p50,p90,p99,p999,max} (ns).
        #[arg(long)]
        json: bool,
        /// Histograms of the calls whose argument or return value matches
        /// only (`ret < 0`: the latency of the failing calls).
        #[arg(long = "where", value_name = "COND", value_parser = tracer_cli::values::Cond::parse)]
        where_: Option<tracer_cli::values::Cond>,
        #[command(flatten)]
        target: Target,
    },
    /// Record enabled functions to a file.
    #[command(after_help = "Example:\n  tracer record -o trace.rec --duration 10s")]
    Record {
        /// Output file.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// Stop after this long (default: until Ctrl-C or the process ends).
        #[arg(long, value_parser = dur::parse, value_name = "DUR")]
        duration: Option<Duration>,
        /// Record only the calls whose argument or return value matches
        /// (each as a call of its own, without its nesting).
        #[arg(long = "where", value_name = "COND", value_parser = tracer_cli::values::Cond::parse)]
        where_: Option<tracer_cli::values::Cond>,
        #[command(flatten)]
        target: Target,
    },
    /// Calls, total, self, avg, p50, p99, max per function of a recording.
    #[command(after_help = "Example:\n  tracer report trace.rec --sort self")]
    Report {
        /// A file written by `tracer record`.
        file: PathBuf,
        /// total, self, calls, avg, p50, p99, max or name.
        #[arg(long, default_value = "total", value_name = "KEY")]
        sort: String,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Convert a recording for Perfetto (its protobuf format, or Chrome trace JSON) or flame graphs (folded stacks).
    #[command(
        after_help = "Example:\n  tracer export trace.rec --perfetto trace.pftrace --folded trace.folded\n\nThe files stream: a recording of any size converts in bounded memory. Open a\n.pftrace or a .json in https://ui.perfetto.dev; the protobuf format is far\nsmaller and opens where a big JSON file does not."
    )]
    Export {
        /// A file written by `tracer record`.
        file: PathBuf,
        /// Write Perfetto's native protobuf trace (TrackEvent slices) here.
        #[arg(long, value_name = "OUT.pftrace")]
        perfetto: Option<PathBuf>,
        /// Write Chrome trace event JSON here.
        #[arg(long, value_name = "OUT.json")]
        chrome: Option<PathBuf>,
        /// Write folded stacks (`a;b;c SELF_NS`) here.
        #[arg(long, value_name = "OUT")]
        folded: Option<PathBuf>,
    },
    /// Start a command, enable functions in it, show them, exit with its status.
    #[command(
        after_help = "Example:\n  tracer run --enable 'parse*' --hist -- ./my-service --port 8080"
    )]
    Run {
        /// Patterns to enable once the command's agent is up (repeatable).
        #[arg(long = "enable", value_name = "PATTERN")]
        enable: Vec<String>,
        /// Stream a function_graph trace while it runs.
        #[arg(long, conflicts_with = "hist")]
        trace: bool,
        /// Print latency histograms when it exits.
        #[arg(long, conflicts_with = "record")]
        hist: bool,
        /// Record every event from the program's first call to FILE (read it
        /// with `tracer report` / `tracer export`).
        #[arg(long, value_name = "FILE", conflicts_with = "trace")]
        record: Option<PathBuf>,
        /// Where --trace and --hist write (default: stderr, so the program's
        /// stdout stays the program's).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Ring size per thread, in events (24 bytes each; default 262144).
        /// Raise it when the output says events were lost.
        #[arg(long, value_name = "EVENTS", value_parser = parse_buffer)]
        buffer: Option<usize>,
        #[command(flatten)]
        capture: tracer_cli::values::CaptureFlags,
        /// With --trace, --hist or --record: only calls whose argument or return value
        /// matches (`ret < 0`, `len > 4096`, `arg2 == 0x10`).
        #[arg(long = "where", value_name = "COND", value_parser = tracer_cli::values::Cond::parse)]
        where_: Option<tracer_cli::values::Cond>,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Serve Prometheus /metrics (call counts, latency histograms) of one or every traced process.
    #[command(after_help = SERVE_HELP)]
    Serve {
        /// Enable these functions in each process (disabled again on exit) and export only them.
        pattern: Option<String>,
        /// Where to listen (HOST:PORT; port 0 picks a free one, printed on stderr).
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// Every traced process of this user, picked up as they start and dropped as they end.
        #[arg(long, conflicts_with = "pid")]
        all: bool,
        /// Allow a --listen address that is not loopback.
        #[arg(long)]
        allow_remote: bool,
        /// Functions exported per process, at most (the label cardinality cap).
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        max_functions: usize,
        #[command(flatten)]
        target: Target,
    },
    /// Load the agent into a running process started without the tracer (ptrace, x86-64).
    #[command(
        after_help = "Example:\n  tracer attach -p 1234 && tracer enable 'parse*' -p 1234\n\nThe process needs compiler pads, a dynamic loader, and no other tracer;\nsee the README's \"Attach\" section."
    )]
    Attach {
        /// The process.
        #[arg(short = 'p', long = "pid", value_name = "PID")]
        pid: i32,
        /// The preload library to load (default: next to this program).
        #[arg(long, value_name = "FILE")]
        library: Option<PathBuf>,
        /// Print JSON (timings, threads, converted pads).
        #[arg(long)]
        json: bool,
    },
    /// Stop the agent of an attached process: all disabled, its threads and socket gone.
    #[command(after_help = "Example:\n  tracer detach -p 1234")]
    Detach {
        /// The process.
        #[arg(short = 'p', long = "pid", value_name = "PID")]
        pid: i32,
    },
    /// Run the bundled demo service and show a trace excerpt and histograms.
    #[command(after_help = "Example:\n  tracer demo")]
    Demo {
        /// How long to collect histograms.
        #[arg(long, value_parser = dur::parse, default_value = "3s", value_name = "DUR")]
        duration: Duration,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);

/// `--where` of `trace`, `hist` (and `record`): only matching calls.
static WHERE: std::sync::OnceLock<tracer_cli::values::Cond> = std::sync::OnceLock::new();
/// `run --args/--retval`: the capture the program's `TRACER_ENABLE` gets.
static RUN_CAPTURE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Where traces and histograms go: stdout, except under `run`, where stdout
/// is the program's (then stderr, or `run -o FILE`).
static SINK: std::sync::OnceLock<OutTo> = std::sync::OnceLock::new();

enum OutTo {
    Stderr,
    File(std::sync::Mutex<std::io::BufWriter<std::fs::File>>),
}

/// A handle on the output of traces and histograms (see [`SINK`]).
struct Out;

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match SINK.get() {
            None => std::io::stdout().write(buf),
            Some(OutTo::Stderr) => std::io::stderr().write(buf),
            Some(OutTo::File(f)) => f.lock().unwrap_or_else(|e| e.into_inner()).write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match SINK.get() {
            None => std::io::stdout().flush(),
            Some(OutTo::Stderr) => std::io::stderr().flush(),
            Some(OutTo::File(f)) => f.lock().unwrap_or_else(|e| e.into_inner()).flush(),
        }
    }
}

/// The output of traces and histograms (stdout unless `run` chose another).
fn out() -> std::io::BufWriter<Out> {
    std::io::BufWriter::with_capacity(64 << 10, Out)
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
    // A request waiting for a stalled agent gives up at once.
    client::interrupt();
}

fn install_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` only stores to an atomic (async-signal-safe).
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_signals();
    let r = run(cli.cmd);
    let _ = Out.flush();
    match r {
        Ok(code) => ExitCode::from(code as u8),
        // The reader of the output went away (`tracer report | head`): end
        // quietly, as the other tools of a pipeline do.
        Err(e) if e.msg == BROKEN_PIPE => ExitCode::from(exit::OK as u8),
        Err(e) => {
            eprintln!("tracer: error: {e}");
            ExitCode::from(e.code as u8)
        }
    }
}

fn color() -> bool {
    tracer_cli::use_color(std::io::stdout().is_terminal())
}

fn bold(s: &str) -> String {
    if color() {
        format!("\x1b[1m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

fn connect(t: Target) -> Result<Client, Error> {
    Client::connect(client::find_target(t.pid)?)
}

/// How long past a `--duration` a stalled agent may hold the command.
const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// [`connect`] for a verb that ends after `duration`: no request to the
/// agent may run past it (plus [`DEADLINE_MARGIN`]), whatever the agent does.
fn connect_for(t: Target, duration: Option<Duration>) -> Result<Client, Error> {
    let mut c = connect(t)?;
    c.set_deadline(duration.and_then(|d| Instant::now().checked_add(d + DEADLINE_MARGIN)));
    Ok(c)
}

/// [`io_err`]'s message for a closed output pipe (ends the program quietly).
const BROKEN_PIPE: &str = "the output pipe was closed";

fn io_err(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return Error::failed(BROKEN_PIPE);
    }
    Error::failed(format!("cannot write output: {e}"))
}

fn run(cmd: Cmd) -> Result<i32, Error> {
    match cmd {
        Cmd::List {
            pattern,
            json,
            target,
        } => list(target, pattern, json),
        Cmd::Enable {
            patterns,
            capture,
            target,
        } if capture.any() => set_capturing(target, &patterns, &capture).map(|_| exit::OK),
        Cmd::Enable {
            patterns, target, ..
        } => set(target, &patterns, true).map(|_| exit::OK),
        Cmd::Disable { patterns, target } => set(target, &patterns, false).map(|_| exit::OK),
        Cmd::Status { json, target } => status(target, json),
        Cmd::Trace {
            graph,
            threshold,
            depth,
            duration,
            where_,
            target,
        } => {
            if let Some(c) = where_ {
                let _ = WHERE.set(c);
            }
            let mut reader = Reader::attach(connect_for(target, duration)?)?;
            let opts = graph::Options {
                graph,
                threshold_ns: threshold.map(|d| d.as_nanos() as u64),
                max_depth: depth,
            };
            trace(&mut reader, opts, duration, &mut || false, None)?;
            Ok(exit::OK)
        }
        Cmd::Hist {
            pattern,
            duration,
            interval,
            json,
            where_,
            target,
        } => {
            if let Some(c) = where_ {
                let _ = WHERE.set(c);
            }
            let c = connect_for(target, duration)?;
            hist_verb(c, pattern, duration, interval, json, &mut || false)
        }
        Cmd::Record {
            output,
            duration,
            where_,
            target,
        } => {
            if let Some(c) = where_ {
                let _ = WHERE.set(c);
            }
            record_verb(connect_for(target, duration)?, &output, duration)
        }
        Cmd::Report { file, sort, json } => {
            let rec = Recording::open(&file)?;
            let mut rows = report::rows(&rec)?;
            report::sort(&mut rows, &sort).map_err(|m| Error {
                code: exit::USAGE,
                msg: m,
            })?;
            let mut out = std::io::stdout().lock();
            if json {
                let s = serde_json::to_string_pretty(&rows).expect("rows serialize");
                writeln!(out, "{s}").map_err(io_err)?;
            } else {
                if let Some(t) = &rec.trailer {
                    let lost: u64 = t.lost.iter().map(|(_, n)| n).sum();
                    if lost > 0 {
                        writeln!(out, "# {lost} events were lost while recording (ring overruns); figures are low. {LOSS_HINT}").map_err(io_err)?;
                    }
                } else {
                    writeln!(
                        out,
                        "# the recording has no trailer (recorder killed?); showing what it holds"
                    )
                    .map_err(io_err)?;
                }
                write!(out, "{}", report::table(&rows)).map_err(io_err)?;
            }
            Ok(exit::OK)
        }
        Cmd::Export {
            file,
            perfetto,
            chrome,
            folded,
        } => {
            if chrome.is_none() && folded.is_none() && perfetto.is_none() {
                return Err(Error {
                    code: exit::USAGE,
                    msg: "say what to write: --perfetto OUT.pftrace, --chrome OUT.json and/or --folded OUT".into(),
                });
            }
            let rec = Recording::open(&file)?;
            if rec.trailer.is_none() {
                eprintln!(
                    "tracer: {} has no trailer (recorder killed?); converting what it holds",
                    file.display()
                );
            }
            if let Some(p) = perfetto {
                let n = write_atomically(&p, |w| tracer_cli::perfetto::write(&rec, w))?;
                eprintln!(
                    "wrote {} ({n} Perfetto trace packets: open it in https://ui.perfetto.dev)",
                    p.display()
                );
            }
            if let Some(p) = chrome {
                let n = write_atomically(&p, |w| report::write_chrome(&rec, w))?;
                eprintln!(
                    "wrote {} ({n} Chrome trace events: open it in https://ui.perfetto.dev)",
                    p.display()
                );
            }
            if let Some(p) = folded {
                let text = report::folded(&rec)?;
                write_atomically(&p, |w| {
                    w.write_all(text.as_bytes()).map_err(|e| {
                        Error::failed(format!(
                            "cannot write {}: {e}; choose a writable path",
                            p.display()
                        ))
                    })
                })?;
                eprintln!(
                    "wrote {} (folded stacks: flamegraph.pl or inferno-flamegraph)",
                    p.display()
                );
            }
            Ok(exit::OK)
        }
        Cmd::Run {
            enable,
            trace,
            hist,
            record,
            output,
            buffer,
            capture,
            where_,
            cmd,
        } => {
            if let Some(c) = where_ {
                let _ = WHERE.set(c);
            }
            let cap = capture.blind().map_err(|m| Error {
                code: exit::USAGE,
                msg: m,
            })?;
            let _ = RUN_CAPTURE.set(cap.encode());
            let to = match output {
                Some(p) => OutTo::File(std::sync::Mutex::new(record::create(&p)?)),
                None => OutTo::Stderr,
            };
            let _ = SINK.set(to);
            run_verb(&enable, trace, hist, record.as_deref(), buffer, &cmd)
        }
        Cmd::Demo { duration } => demo(duration),
        #[cfg(target_arch = "x86_64")]
        Cmd::Attach { pid, library, json } => tracer_cli::attach::attach_verb(pid, library, json),
        #[cfg(target_arch = "x86_64")]
        Cmd::Detach { pid } => tracer_cli::attach::detach_verb(pid),
        #[cfg(not(target_arch = "x86_64"))]
        Cmd::Attach { .. } | Cmd::Detach { .. } => Err(Error::failed(
            "tracer attach and detach are implemented on x86-64 only",
        )),
        Cmd::Serve {
            pattern,
            listen,
            all,
            allow_remote,
            max_functions,
            target,
        } => {
            let listener = serve::bind(&listen, allow_remote)?;
            let pid = if all {
                None
            } else {
                Some(client::find_target(target.pid)?)
            };
            let opts = serve::Options {
                pattern,
                max_functions,
            };
            serve::run(listener, pid, &opts, &STOP)
        }
    }
}

/// Functions asked of the agent at a time (each page sorts the whole list
/// again on the agent's side, so not too many pages).
const LIST_PAGE: u64 = 25_000;

/// Every function the agent lists for `pattern` (sorted by name), a page at
/// a time, so no side holds all of a program's functions at once. (An older
/// agent sends them all at once; that works too.)
fn each_listed(
    c: &mut Client,
    pattern: Option<&str>,
    f: &mut dyn FnMut(&Value) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut from = 0u64;
    loop {
        let mut req = json!({ "from": from, "max": LIST_PAGE });
        if let Some(p) = pattern {
            req["pattern"] = json!(p);
        }
        let v = c.call("list", req)?;
        for func in v["functions"].as_array().into_iter().flatten() {
            f(func)?;
        }
        match v["next"].as_u64() {
            Some(n) if n > from => from = n,
            _ => return Ok(()),
        }
    }
}

fn list(target: Target, pattern: Option<String>, json: bool) -> Result<i32, Error> {
    let mut c = connect(target)?;
    let pid = c.pid;
    let mut out = std::io::stdout().lock();
    let mut n = 0u64;
    let mut lines = tracer_cli::source::SourceLines::new();
    if json {
        // Streamed: one array, written an element at a time.
        each_listed(&mut c, pattern.as_deref(), &mut |f| {
            let (file, line) = lines.of(f);
            let item = json!({
                "name": f["name"], "file": file, "line": line,
                "enabled": f["enabled"], "problems": f["problems"],
            });
            let text =
                tracer_cli::printable_json(serde_json::to_string_pretty(&item).expect("json"));
            let sep = if n == 0 { "[\n" } else { ",\n" };
            n += 1;
            let indented = text.replace('\n', "\n  ");
            write!(out, "{sep}  {indented}").map_err(io_err)
        })?;
        writeln!(out, "{}", if n == 0 { "[]" } else { "\n]" }).map_err(io_err)?;
        return Ok(exit::OK);
    }
    each_listed(&mut c, pattern.as_deref(), &mut |f| {
        n += 1;
        let state = if f["enabled"] == true { "on " } else { "off" };
        // Compiler pads without debug information have no line: their file
        // is the object's path.
        let (file, line) = lines.of(f);
        let place = if line > 0 {
            format!("{}:{line}", printable(&file))
        } else {
            printable(&file).into_owned()
        };
        writeln!(
            out,
            "{state}  {}  {place}",
            printable(f["name"].as_str().unwrap_or("?")),
        )
        .map_err(io_err)?;
        for p in f["problems"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "     problem: {} (this pad is never written)",
                printable(p.as_str().unwrap_or("?"))
            )
            .map_err(io_err)?;
        }
        Ok(())
    })?;
    if n == 0 {
        writeln!(
            out,
            "process {pid} has no traceable functions: mark some with #[tracer::traceable], or build it \
             with compiler pads (-fpatchable-function-entry=5)"
        )
        .map_err(io_err)?;
    }
    Ok(exit::OK)
}

/// Enable or disable; prints what changed. Returns the changed names.
fn set_on(
    c: &mut Client,
    patterns: &[String],
    on: bool,
    quiet: bool,
) -> Result<Vec<String>, Error> {
    set_on_warn(c, patterns, on, quiet, true)
}

/// [`set_on`]; `warn`: print the sites left alone (`run` leaves that to the
/// program's runtime, which reports them for TRACER_ENABLE).
fn set_on_warn(
    c: &mut Client,
    patterns: &[String],
    on: bool,
    quiet: bool,
    warn: bool,
) -> Result<Vec<String>, Error> {
    set_on_capture(c, patterns, on, quiet, warn, 0)
}

/// [`set_on_warn`], enabling with capture `capture` (`Capture::encode`; 0: none).
fn set_on_capture(
    c: &mut Client,
    patterns: &[String],
    on: bool,
    quiet: bool,
    warn: bool,
    capture: u32,
) -> Result<Vec<String>, Error> {
    let mut req = json!({ "pattern": patterns.join(" ") });
    if capture != 0 {
        req["capture"] = json!(capture);
    }
    let v = c.call(if on { "enable" } else { "disable" }, req)?;
    let changed: Vec<String> = v["changed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(|s| printable(s).into_owned()))
        .collect();
    let word = if on { "enabled" } else { "disabled" };
    let skipped = v["skipped"].as_array().is_some_and(|a| !a.is_empty());
    if !quiet {
        if changed.is_empty() && !skipped {
            println!("nothing changed: every matching function was already {word}");
        }
        print!("{}", changed_text(word, &changed));
    }
    for s in v["skipped"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|_| warn)
    {
        eprintln!(
            "tracer: warning: left a site of {} alone: {}",
            printable(s[0].as_str().unwrap_or("?")),
            printable(s[1].as_str().unwrap_or("?"))
        );
    }
    if let Some(w) = v["warning"].as_str() {
        eprintln!("tracer: warning: {}", printable(w));
    }
    Ok(changed)
}

/// Names listed one a line up to this many; beyond, a count and the first few.
const LIST_NAMES: usize = 20;

/// `enabled NAME` lines, or for many names a count and the first few.
fn changed_text(word: &str, names: &[String]) -> String {
    if names.len() <= LIST_NAMES {
        return names.iter().map(|n| format!("{word} {n}\n")).collect();
    }
    format!(
        "{word} {} functions: {}, ... (`tracer status --json` lists them all)\n",
        names.len(),
        names[..5].join(", ")
    )
}

/// `enable --args/--retval`: the capture the functions' debug information
/// asks for (every register without it), then enable with it.
fn set_capturing(
    target: Target,
    patterns: &[String],
    flags: &tracer_cli::values::CaptureFlags,
) -> Result<Vec<String>, Error> {
    let mut c = connect(target)?;
    let usage = |m: String| Error {
        code: exit::USAGE,
        msg: m,
    };
    let mut sigs = Vec::new();
    if flags.args.is_some() && flags.count().map_err(usage)?.is_none() {
        let mut known = tracer_cli::values::Signatures::default();
        each_listed(&mut c, Some(&patterns.join(" ")), &mut |f| {
            if let (Some(file), Some(off)) = (f["file"].as_str(), f["object_offset"].as_u64()) {
                sigs.push(known.of_object(file, off));
            }
            Ok(())
        })?;
    }
    let cap = tracer_cli::values::capture_for(flags, &sigs).map_err(usage)?;
    set_on_capture(&mut c, patterns, true, false, true, cap.encode())
}

fn set(target: Target, patterns: &[String], on: bool) -> Result<Vec<String>, Error> {
    let mut c = connect(target)?;
    set_on(&mut c, patterns, on, false)
}

fn status(target: Target, json: bool) -> Result<i32, Error> {
    let mut c = connect(target)?;
    let mut v = c.call("status", json!({}))?;
    if let Value::Object(m) = &mut v {
        m.remove("v");
        m.remove("ok");
    }
    let mut out = std::io::stdout().lock();
    if json {
        let text = tracer_cli::printable_json(serde_json::to_string_pretty(&v).expect("json"));
        writeln!(out, "{text}").map_err(io_err)?;
        return Ok(exit::OK);
    }
    let enabled: Vec<String> = v["enabled"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(|s| printable(s).into_owned()))
        .collect();
    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "{}",
        bold(&format!("process {} ({})", c.pid, client::comm(c.pid)))
    );
    if let Some(e) = v["runtime_error"].as_str() {
        let _ = writeln!(s, "runtime:   unavailable: {}", printable(e));
    }
    let _ = writeln!(
        s,
        "clock:     {} ({:.4} ticks/ns); core sync: {}",
        printable(v["clock"].as_str().unwrap_or("?")),
        v["ticks_per_ns"].as_f64().unwrap_or(0.0),
        printable(v["sync"].as_str().unwrap_or("?"))
    );
    let shown = if enabled.len() <= LIST_NAMES {
        enabled.join(", ")
    } else {
        format!(
            "{}, ... ({} more; --json lists them all)",
            enabled[..LIST_NAMES].join(", "),
            enabled.len() - LIST_NAMES
        )
    };
    let _ = writeln!(
        s,
        "enabled:   {} function(s){}{shown}",
        enabled.len(),
        if enabled.is_empty() { "" } else { ": " },
    );
    let _ = writeln!(
        s,
        "threads:   {} with buffers; {} events per new buffer; {} KiB mapped",
        v["threads"],
        v["buffer_events"],
        v["buffer_bytes"].as_u64().unwrap_or(0) / 1024
    );
    let _ = writeln!(
        s,
        "drops:     {} events (full rings); {} unmatched exits; {} nested in handlers",
        v["dropped"], v["unmatched"], v["nested"]
    );
    let _ = writeln!(
        s,
        "reader:    {}",
        if v["reader_attached"] == true {
            "a tracer program is reading the buffers"
        } else {
            "none (the in-process collector drains the buffers)"
        }
    );
    let threads = v["threads_detail"].as_array().cloned().unwrap_or_default();
    if !threads.is_empty() {
        let _ = writeln!(
            s,
            "\n{:>8} {:>9} {:>9} {:>12} {:>9}  state",
            "tid", "capacity", "pending", "written", "dropped"
        );
        for t in &threads {
            let _ = writeln!(
                s,
                "{:>8} {:>9} {:>9} {:>12} {:>9}  {}",
                t["tid"],
                t["capacity"],
                t["pending"],
                t["written"],
                t["dropped"],
                match (t["dead"] == true, t["not_visible"].is_string()) {
                    (true, _) => "exited",
                    (false, false) => "live",
                    (false, true) => "live, not visible to tracer",
                }
            );
        }
        // Threads whose block could not be shared: trace/hist/record do not
        // see them. Say why (the agent's reason), once per distinct reason.
        let mut reasons: Vec<(String, usize)> = Vec::new();
        for t in threads.iter().filter_map(|t| t["not_visible"].as_str()) {
            match reasons.iter_mut().find(|(r, _)| r == t) {
                Some((_, n)) => *n += 1,
                None => reasons.push((t.to_string(), 1)),
            }
        }
        for (r, n) in reasons {
            let _ = writeln!(s, "\nnot visible: {n} thread(s): {}", printable(&r));
        }
    }
    out.write_all(s.as_bytes()).map_err(io_err)?;
    Ok(exit::OK)
}

/// Why a collection ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Interrupted,
    Excerpt,
    Duration,
    Ended,
}

impl End {
    fn text(self, pid: i32) -> String {
        match self {
            End::Interrupted => "interrupted".into(),
            End::Excerpt => "excerpt shown".into(),
            End::Duration => "duration reached".into(),
            End::Ended => format!("process {pid} ended"),
        }
    }
}

/// Receives each drained batch; returns false to stop.
type Sink<'a> = dyn FnMut(&Reader, &[(u64, Event)]) -> bool + 'a;

/// Drain `reader` (time-sorted batches if `sorted`, else thread by thread)
/// until Ctrl-C, `duration`, the process's end or `stop()`,
/// handing each batch to `each` (which returns false to stop early).
fn pump(
    reader: &mut Reader,
    sorted: bool,
    duration: Option<Duration>,
    stop: &mut dyn FnMut() -> bool,
    each: &mut Sink<'_>,
) -> Result<End, Error> {
    let start = Instant::now();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = if sorted {
            reader.poll(&mut buf)?
        } else {
            reader.poll_each(|t, e| buf.push((t, *e)))?
        };
        if n > 0 && !each(reader, &buf) {
            return Ok(End::Excerpt);
        }
        let end = if STOP.load(Ordering::Relaxed) {
            Some(End::Interrupted)
        } else if duration.is_some_and(|d| start.elapsed() >= d) {
            Some(End::Duration)
        } else if reader.ended() || stop() {
            Some(End::Ended)
        } else {
            None
        };
        if let Some(end) = end {
            buf.clear();
            reader.poll(&mut buf)?;
            if !buf.is_empty() {
                each(reader, &buf);
            }
            return Ok(end);
        }
        // Go again at once only after a big batch: small batches mean the
        // rings have room, and letting them fill costs the producers less
        // cache-line traffic than polling them hot.
        if n == 0 {
            std::thread::sleep(Duration::from_millis(2));
        } else if n < 4096 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Events this session lost to full rings, all threads.
fn lost_events(reader: &Reader) -> u64 {
    reader.losses().iter().map(|l| l.dropped).sum()
}

fn losses_text(reader: &Reader) -> String {
    let mut l: Vec<_> = reader
        .losses()
        .into_iter()
        .filter(|l| l.dropped > 0)
        .collect();
    if l.is_empty() {
        return "0 lost".into();
    }
    let total: u64 = l.iter().map(|l| l.dropped).sum();
    l.sort_by_key(|l| std::cmp::Reverse(l.dropped));
    let mut per: Vec<String> = l
        .iter()
        .take(4)
        .map(|l| format!("tid {}: {}", l.tid, l.dropped))
        .collect();
    if l.len() > 4 {
        per.push(format!("{} more threads", l.len() - 4));
    }
    format!(
        "{total} events lost to full buffers ({}): figures are low. {LOSS_HINT}",
        per.join(", ")
    )
}

/// What to do about lost events.
const LOSS_HINT: &str = "Give threads bigger rings (tracer run --buffer EVENTS, or \
     TRACER_BUFFER_EVENTS in the program's environment) or enable fewer functions";

fn enabled_hint(reader: &mut Reader) {
    let pid = reader.pid;
    if let Some(c) = reader.client() {
        if let Ok(v) = c.call("status", json!({})) {
            if v["enabled"].as_array().is_some_and(|a| a.is_empty()) {
                eprintln!(
                    "tracer: note: no function is enabled in process {pid}; run `tracer enable PATTERN -p {pid}` to see calls"
                );
            }
        }
    }
}

/// Stream a trace; `max_lines` stops printing (not collecting) after that many.
fn trace(
    reader: &mut Reader,
    opts: graph::Options,
    duration: Option<Duration>,
    stop: &mut dyn FnMut() -> bool,
    max_lines: Option<u64>,
) -> Result<End, Error> {
    enabled_hint(reader);
    let mut printer = Printer::new(reader.names.clone(), reader.ticks_per_ns, opts);
    if let Some(c) = reader.client() {
        let mut sigs = tracer_cli::values::Signatures::default();
        let _ = each_listed(c, None, &mut |f| {
            sigs.add_function(f);
            Ok(())
        });
        printer.set_signatures(sigs);
    }
    if let Some(w) = WHERE.get() {
        printer.set_where(w.clone());
    }
    let mut out = out();
    let title = if opts.graph {
        "function_graph"
    } else {
        "function"
    };
    let _ = writeln!(out, "# tracer: {title}, process {}\n#", reader.pid);
    if opts.graph {
        let _ = writeln!(out, "# TH  DURATION                  FUNCTION CALLS\n# |   |   |                     |   |   |   |");
    } else {
        let _ = writeln!(out, "#           TASK-TID     THREAD  TIMESTAMP  FUNCTION\n#              | |         |         |         |");
    }
    let mut events = 0u64;
    let mut printed = 0u64;
    let mut text = String::new();
    let mut broken = false;
    let start = Instant::now();
    let end = pump(reader, true, duration, stop, &mut |r, batch| {
        printer.set_ticks_per_ns(r.ticks_per_ns);
        printer.update_names(&r.names);
        events += batch.len() as u64;
        text.clear();
        for (tid, e) in batch {
            if !printer.knows(*tid) {
                let comm = std::fs::read_to_string(format!("/proc/{}/task/{tid}/comm", r.pid))
                    .map(|s| printable(s.trim()).into_owned())
                    .unwrap_or_default();
                printer.name_thread(*tid, &comm);
            }
            printer.feed(*tid, e, &mut text);
        }
        if let Some(m) = max_lines {
            let room = m.saturating_sub(printed) as usize;
            let n = text.lines().count();
            let keep: String = text.lines().take(room).map(|l| format!("{l}\n")).collect();
            printed += n.min(room) as u64;
            let _ = out.write_all(keep.as_bytes()).and_then(|_| out.flush());
            return n < room;
        }
        if out
            .write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            broken = true;
            return false;
        }
        true
    })?;
    if broken {
        return Ok(End::Interrupted);
    }
    let end = if STOP.load(Ordering::Relaxed) {
        End::Interrupted
    } else {
        end
    };
    text.clear();
    if max_lines.is_none() {
        printer.flush(&mut text);
    }
    let _ = out.write_all(text.as_bytes());
    let _ = writeln!(
        out,
        "# {events} events from {} thread(s) in {:.1} s; {}; {}",
        reader.threads(),
        start.elapsed().as_secs_f64(),
        losses_text(reader),
        end.text(reader.pid)
    );
    let _ = out.flush();
    Ok(end)
}

fn resolve_indices(c: &mut Client, pattern: &str) -> Result<Vec<u32>, Error> {
    let mut v = Vec::new();
    each_listed(c, Some(pattern), &mut |f| {
        v.extend(f["index"].as_u64().map(|i| i as u32));
        Ok(())
    })?;
    Ok(v)
}

fn print_hists(
    names: &[String],
    hists: &Hists,
    keep: &dyn Fn(u32) -> bool,
    json: bool,
    lost_events: u64,
) -> std::io::Result<()> {
    let mut rows = hists.summaries(names, keep);
    for r in &mut rows {
        r.lost_events = lost_events;
    }
    let mut out = out();
    if json {
        writeln!(out, "{}", serde_json::to_string(&rows).expect("json"))?;
        return out.flush();
    }
    if rows.is_empty() {
        writeln!(out, "no completed calls of traced functions were seen")?;
        return out.flush();
    }
    write!(out, "{}", bold(&hist::table(&rows)))?;
    for (f, h) in hists.iter() {
        if !keep(f) || h.count() == 0 {
            continue;
        }
        let name = names.get(f as usize).map_or("?", |s| s.as_str());
        writeln!(out, "\n@{name} (ns):")?;
        write!(out, "{}", h.chart(40))?;
    }
    out.flush()
}

/// `--where`'s filter, checked first against the functions `pattern`
/// selects (every listed one without a pattern) that have debug
/// information: a condition that cannot apply is an error naming what the
/// function has.
fn where_filter(
    c: &mut Client,
    w: &tracer_cli::values::Cond,
    pattern: Option<&str>,
) -> Result<WhereFilter, Error> {
    let mut sigs = tracer_cli::values::Signatures::default();
    each_listed(c, None, &mut |f| {
        sigs.add_function(f);
        Ok(())
    })?;
    let mut f = tracer_cli::values::Filter::new(w.clone(), sigs);
    if let Some(p) = pattern {
        let idx = resolve_indices(c, p)?;
        for i in idx {
            let name = f
                .sigs
                .origins()
                .find(|(j, _)| *j == i)
                .map(|(_, o)| o.name.clone());
            if let Some(name) = name {
                f.check(i, &name).map_err(|m| Error {
                    code: exit::USAGE,
                    msg: m,
                })?;
            }
        }
    }
    Ok(WhereFilter {
        text: format!("{w}"),
        f,
    })
}

/// [`where_filter`]'s result.
struct WhereFilter {
    text: String,
    f: tracer_cli::values::Filter,
}

impl WhereFilter {
    fn feed(&mut self, tid: u64, e: &Event) -> (tracer_cli::values::Seen, Option<bool>) {
        self.f.feed(tid, e)
    }
}

fn hist_verb(
    mut c: Client,
    pattern: Option<String>,
    duration: Option<Duration>,
    interval: Option<Duration>,
    json: bool,
    stop: &mut dyn FnMut() -> bool,
) -> Result<i32, Error> {
    let pid = c.pid;
    let mut filter = match WHERE.get() {
        Some(w) => Some(where_filter(&mut c, w, pattern.as_deref())?),
        None => None,
    };
    let (mut calls, mut matched) = (0u64, 0u64);
    let (keep_set, changed) = match &pattern {
        Some(p) => {
            let idx = resolve_indices(&mut c, p)?;
            let changed = set_on(&mut c, std::slice::from_ref(p), true, true)?;
            (Some(idx), changed)
        }
        None => (None, Vec::new()),
    };
    let mut reader = Reader::attach(c)?;
    if pattern.is_none() {
        enabled_hint(&mut reader);
    }
    // A bitmap by function index: asked once per event.
    let keep_set: Option<Vec<bool>> = keep_set.map(|idx| {
        let mut m = vec![false; idx.iter().max().map_or(0, |&i| i as usize + 1)];
        for i in idx {
            m[i as usize] = true;
        }
        m
    });
    let keep = move |f: u32| {
        keep_set
            .as_ref()
            .is_none_or(|s| s.get(f as usize).copied().unwrap_or(false))
    };
    let mut hists = Hists::default();
    let mut last = Instant::now();
    // Calls rebuilt per thread, so a call left by `longjmp` is counted too;
    // only the functions shown get a histogram.
    let mut walker = tracer_cli::calls::Walker::new();
    let end = pump(&mut reader, false, duration, stop, &mut |r, batch| {
        for (tid, e) in batch {
            // --where: an exit's call matches or not (other events: kept).
            let m = filter
                .as_mut()
                .map_or(Some(true), |f| f.feed(*tid, e).1)
                .unwrap_or(filter.is_none());
            walker.feed(*tid, e, &mut |c| match c {
                Call::Returned { func, dur, .. } if keep(func) => {
                    calls += 1;
                    if m {
                        matched += 1;
                        hists.record(func, r.ns(dur))
                    }
                }
                Call::Left { func, .. } | Call::Untracked { func } if keep(func) && m => {
                    hists.left(func)
                }
                _ => {}
            });
        }
        if let Some(iv) = interval {
            if last.elapsed() >= iv {
                last = Instant::now();
                if !json {
                    let _ = writeln!(
                        out(),
                        "{}",
                        bold(&format!("# after {:.1} s", iv.as_secs_f64()))
                    );
                }
                if print_hists(&r.names, &hists, &keep, json, lost_events(r)).is_err() {
                    return false;
                }
            }
        }
        true
    })?;
    // Give the rings back before touching the process again.
    let lost = losses_text(&reader);
    let lost_n = lost_events(&reader);
    reader.detach();
    if !changed.is_empty() && end != End::Ended {
        if let Ok(mut c) = Client::connect(pid) {
            let _ = c.call("disable", json!({ "pattern": tracer_core::pattern::exact_names(changed.iter().map(String::as_str)) }));
        }
    }
    print_hists(&reader.names, &hists, &keep, json, lost_n).map_err(io_err)?;
    if let (Some(f), false) = (&filter, json) {
        writeln!(
            out(),
            "# --where: {matched} of {calls} calls matched {}",
            f.text
        )
        .map_err(io_err)?;
    }
    if !json {
        writeln!(out(), "# {lost}; {}", end.text(pid)).map_err(io_err)?;
    } else if lost_n > 0 {
        eprintln!("tracer: {lost}");
    }
    if json && end == End::Ended {
        eprintln!("tracer: {}", end.text(pid));
    }
    Ok(exit::OK)
}

/// Write `path` through a temporary file next to it, renamed over it once
/// complete: a failed or interrupted export never leaves half a file.
fn write_atomically<T>(
    path: &Path,
    f: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<T, Error>,
) -> Result<T, Error> {
    let cannot = |e: std::io::Error| {
        Error::failed(format!(
            "cannot write {}: {e}; choose a writable path",
            path.display()
        ))
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let file = std::fs::File::create(&tmp).map_err(cannot)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let done = f(&mut w).and_then(|v| {
        w.flush().map_err(cannot)?;
        std::fs::rename(&tmp, path).map_err(cannot)?;
        Ok(v)
    });
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

fn record_verb(c: Client, output: &Path, duration: Option<Duration>) -> Result<i32, Error> {
    let file = record::create(output)?;
    record_to_file(c, output, file, duration, &mut || false)
}

/// Record the process behind `c` into `file` (created at `output`) until
/// `duration`, Ctrl-C, the process's end or `stop()`.
fn record_to_file(
    c: Client,
    output: &Path,
    file: std::io::BufWriter<std::fs::File>,
    duration: Option<Duration>,
    stop: &mut dyn FnMut() -> bool,
) -> Result<i32, Error> {
    let pid = c.pid;
    let mut reader = Reader::attach(c)?;
    enabled_hint(&mut reader);
    let (exe, clock) = reader
        .client()
        .and_then(|c| c.call("hello", json!({})).ok())
        .map(|v| {
            (
                v["exe"].as_str().unwrap_or("").to_string(),
                v["clock"].as_str().unwrap_or("").to_string(),
            )
        })
        .unwrap_or_default();
    // Where the enabled compiler-padded functions' debug information is,
    // for the names and types of captured values.
    let mut origins = Vec::new();
    if let Some(c) = reader.client() {
        let _ = each_listed(c, None, &mut |f| {
            if let (true, Some(i), Some(o), Some(off)) = (
                f["enabled"].as_bool().unwrap_or(false),
                f["index"].as_u64(),
                f["file"].as_str(),
                f["object_offset"].as_u64(),
            ) {
                origins.push(record::RecordedOrigin {
                    index: i as u32,
                    object: o.to_string(),
                    offset: off,
                });
            }
            Ok(())
        });
    }
    let header = record::Header {
        pid,
        exe,
        clock,
        ticks_per_ns: reader.ticks_per_ns,
        functions: reader.names.clone(),
        origins,
    };
    let mut w = record::Writer::new(file, &header).map_err(io_err)?;
    let mut filter = match (WHERE.get(), reader.client()) {
        (Some(cond), Some(c)) => Some(where_filter(c, cond, None)?),
        _ => None,
    };
    let mut werr = None;
    let mut last_flush = Instant::now();
    eprintln!(
        "tracer: recording process {pid} to {} (Ctrl-C to stop)",
        output.display()
    );
    // Thread names, read when a thread is first seen (it may end before
    // the recording does).
    let mut threads: std::collections::BTreeMap<u64, String> = Default::default();
    let end = pump(&mut reader, false, duration, stop, &mut |_, batch| {
        let mut i = 0;
        while i < batch.len() {
            let tid = batch[i].0;
            threads.entry(tid).or_insert_with(|| {
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                    .map(|s| s.trim_end().to_string())
                    .unwrap_or_default()
            });
            let j = batch[i..]
                .iter()
                .position(|(t, _)| *t != tid)
                .map_or(batch.len(), |k| i + k);
            let mut evs: Vec<Event> = batch[i..j].iter().map(|(_, e)| *e).collect();
            if let Some(f) = filter.as_mut() {
                // --where: only the matching calls, each whole at its exit.
                let mut kept = Vec::new();
                for e in &evs {
                    if let (tracer_cli::values::Seen::Exit(a, r), Some(true)) = f.feed(tid, e) {
                        kept.extend(tracer_cli::values::call_events(e, a.as_deref(), r));
                    }
                }
                evs = kept;
            }
            if let Err(e) = w.events(tid, &evs) {
                werr = Some(e);
                return false;
            }
            i = j;
        }
        if last_flush.elapsed() > Duration::from_millis(200) {
            last_flush = Instant::now();
            if let Err(e) = w.flush() {
                werr = Some(e);
                return false;
            }
        }
        true
    })?;
    if let Some(e) = werr {
        return Err(Error::failed(format!(
            "cannot write {}: {e}; free some space or choose another path",
            output.display()
        )));
    }
    let events = w.events;
    let trailer = record::Trailer {
        functions: if reader.names.len() > header.functions.len() {
            reader.names.clone()
        } else {
            Vec::new()
        },
        ticks_per_ns: reader.ticks_per_ns,
        lost: reader.losses().iter().map(|l| (l.tid, l.dropped)).collect(),
        end: end.text(pid),
        events,
        threads: threads.into_iter().filter(|(_, n)| !n.is_empty()).collect(),
    };
    w.finish(&trailer).map_err(io_err)?;
    eprintln!(
        "tracer: recorded {events} events from {} thread(s) to {}; {}; {}",
        reader.threads(),
        output.display(),
        losses_text(&reader),
        end.text(pid)
    );
    Ok(exit::OK)
}

/// Wait for the agent socket of a child; `None` if the child exited first.
fn wait_agent(child: &mut std::process::Child) -> Result<Option<Client>, Error> {
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut refused = None;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(None);
        }
        if client::socket_of(pid).is_some() {
            match Client::connect(pid) {
                Ok(c) => return Ok(Some(c)),
                Err(e) => refused = Some(e),
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            // A socket was there but refused (an untrusted directory, a
            // foreign peer): that is the reason, not a missing agent.
            if let Some(e) = refused {
                return Err(e);
            }
            return Err(Error::no_target(format!(
                "process {pid} did not start a tracer agent within 15 s: make the program depend on \
                 the `tracer` crate (cargo add tracer) and do not set TRACER_AGENT=0"
            )));
        }
        if STOP.load(Ordering::Relaxed) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::failed("interrupted"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The preload library to add to `program`'s environment: `None` when the
/// program links the tracer runtime itself (it has a `__tracer_sites`
/// section), else the library: `$TRACER_PRELOAD`, or `libtracer_preload.so`
/// next to this `tracer` executable or in `../lib/tracer/`.
fn preload_for(program: &str) -> Result<Option<PathBuf>, Error> {
    let path = resolve_program(program);
    if path.as_deref().is_some_and(tracer_cli::links_runtime) {
        return Ok(None);
    }
    if let Some(p) = std::env::var_os(wire::env::PRELOAD) {
        return Ok(Some(PathBuf::from(p)));
    }
    let exe = std::env::current_exe().map_err(io_err)?;
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    for cand in [
        dir.join("libtracer_preload.so"),
        dir.join("../lib/tracer/libtracer_preload.so"),
    ] {
        if cand.is_file() {
            return Ok(Some(cand));
        }
    }
    Err(Error::failed(format!(
        "{program} does not link the tracer runtime and libtracer_preload.so was not found next to \
         {} or in ../lib/tracer/; build it (cargo build --release -p tracer-preload) or point \
         TRACER_PRELOAD at it",
        exe.display()
    )))
}

/// `program` as the shell would find it (a path, or a name on `$PATH`).
fn resolve_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// Kills and reaps a child when dropped (also on panic).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

/// `--buffer`: a ring size the runtime accepts.
fn parse_buffer(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of events; e.g. --buffer 1048576"))?;
    if !(64..=MAX_BUFFER).contains(&n) {
        return Err(format!(
            "{n} events per thread is outside 64..={MAX_BUFFER} (each event is 24 bytes)"
        ));
    }
    Ok(n)
}

/// The largest ring the runtime makes, in events.
const MAX_BUFFER: usize = 1 << 26;

fn run_verb(
    enable: &[String],
    trace_on: bool,
    hist_on: bool,
    record_to: Option<&Path>,
    buffer: Option<usize>,
    cmd: &[String],
) -> Result<i32, Error> {
    let mut command = std::process::Command::new(&cmd[0]);
    command.args(&cmd[1..]);
    // The runtime of the command itself (our child) takes the two below;
    // the programs it starts inherit them and ignore them.
    command.env(wire::env::RUN, std::process::id().to_string());
    if !enable.is_empty() {
        // Enabled by the runtime before main, so nothing is missed.
        command.env(wire::env::ENABLE, enable.join(","));
    }
    if trace_on || hist_on || record_to.is_some() {
        // The program waits (up to 10 s) for our reader before main, so
        // the in-process collector does not consume the first events.
        command.env(wire::env::WAIT_READER, "1");
    }
    if let Some(n) = buffer {
        command.env(wire::env::BUFFER_EVENTS, n.to_string());
    }
    if let Some(&c) = RUN_CAPTURE.get().filter(|&&c| c != 0) {
        command.env(wire::env::CAPTURE, c.to_string());
    }
    // Made before the program starts: a path that cannot be written is
    // refused before anything runs.
    let rec_file = record_to.map(record::create).transpose()?;
    if let Some(lib) = preload_for(&cmd[0])? {
        let mut v = std::ffi::OsString::from(&lib);
        if let Some(old) = std::env::var_os("LD_PRELOAD") {
            v.push(":");
            v.push(old);
        }
        command.env("LD_PRELOAD", v);
    }
    let mut child = command.spawn().map_err(|e| {
        Error::failed(format!(
            "cannot start {}: {e}; check the command and its path",
            cmd[0]
        ))
    })?;
    let pid = child.id() as i32;
    let Some(mut c) = wait_agent(&mut child)? else {
        let st = child.wait().map_err(io_err)?;
        eprintln!(
            "tracer: {} exited before its tracer agent started (status {})",
            cmd[0],
            status_code(st)
        );
        return Ok(status_code(st));
    };
    if !enable.is_empty() {
        // The runtime may have applied TRACER_ENABLE already (it does not
        // wait for us without --trace/--hist): report what is enabled, not
        // which of the two got there first.
        let on = match set_on_warn(&mut c, enable, true, true, false) {
            // Its runtime keeps TRACER_ENABLE's terms that match nothing yet
            // and enables them when a library that has them is loaded.
            Err(e) if e.msg.contains("no function matches") => {
                eprintln!(
                    "tracer: note: {}; enabled when the program loads a library that has it",
                    e.msg
                );
                Ok(Vec::new())
            }
            r => r,
        }
        .and_then(|_| c.call("status", json!({})));
        match on {
            Ok(on) => {
                let names: Vec<String> = on["enabled"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| printable(n.as_str().unwrap_or("?")).into_owned())
                    .collect();
                // To stderr: the program's stdout stays the program's.
                eprint!("{}", changed_text("tracer: enabled", &names));
            }
            // A short program may be done before we get to it: its status
            // is what counts (its runtime applied TRACER_ENABLE itself).
            Err(_) if matches!(child.try_wait(), Ok(Some(_))) || !client::alive(pid) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
    }
    let mut status = None;
    let mut child_done = || {
        if status.is_none() {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
            }
        }
        status.is_some()
    };
    if trace_on {
        let mut reader = Reader::attach(c)?;
        let opts = graph::Options {
            graph: true,
            ..Default::default()
        };
        trace(&mut reader, opts, None, &mut child_done, None)?;
    } else if hist_on {
        hist_verb(c, None, None, None, false, &mut child_done)?;
    } else if let (Some(path), Some(file)) = (record_to, rec_file) {
        record_to_file(c, path, file, None, &mut child_done)?;
    } else {
        drop(c);
    }
    let st = match status {
        Some(s) => s,
        None => child.wait().map_err(io_err)?,
    };
    let code = status_code(st);
    eprintln!(
        "tracer: process {pid} ({}) exited with status {code}",
        cmd[0]
    );
    Ok(code)
}

/// Under `cargo run`, which builds only the `tracer` binary, build the demo
/// program beside it (same profile).
fn build_demo(exe: &Path) {
    let (Some(cargo), Some(manifest)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return;
    };
    let release = exe
        .parent()
        .and_then(|d| d.file_name())
        .is_some_and(|n| n == "release");
    eprintln!("tracer: building the demo program (tracer-demo) first");
    let mut c = std::process::Command::new(cargo);
    c.args(["build", "--bin", "tracer-demo", "--manifest-path"])
        .arg(Path::new(&manifest).join("Cargo.toml"));
    if release {
        c.arg("--release");
    }
    let _ = c.status();
}

fn demo(duration: Duration) -> Result<i32, Error> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::failed(format!("cannot find this program's path: {e}")))?;
    let demo = exe.with_file_name("tracer-demo");
    if !demo.exists() {
        build_demo(&exe);
    }
    if !demo.exists() {
        return Err(Error::failed(format!(
            "the demo program is missing ({}); build it with `cargo build --release -p tracer-cli` \
             and run `cargo run --release -p tracer-cli -- demo`",
            demo.display()
        )));
    }
    let child = std::process::Command::new(&demo)
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| Error::failed(format!("cannot start {}: {e}", demo.display())))?;
    let mut child = KillOnDrop(child);
    let pid = child.0.id() as i32;
    let Some(mut c) = wait_agent(&mut child.0)? else {
        return Err(Error::failed(
            "the demo program exited at once; run tracer-demo alone to see why",
        ));
    };
    println!(
        "{}",
        bold(&format!(
            "tracer demo: a 3-thread service, pid {pid}. Enabling its functions while it runs:"
        ))
    );
    println!("$ tracer enable 'tracer_demo::*' -p {pid}");
    set_on(&mut c, &["tracer_demo::*".to_string()], true, false)?;
    println!("\n$ tracer trace --graph -p {pid}   (first 40 lines)");
    let mut reader = Reader::attach(c)?;
    let opts = graph::Options {
        graph: true,
        ..Default::default()
    };
    trace(
        &mut reader,
        opts,
        Some(Duration::from_secs(2)),
        &mut || false,
        Some(40),
    )?;
    reader.detach();
    println!(
        "\n$ tracer hist -p {pid} --duration {}s",
        duration.as_secs_f64()
    );
    let c = Client::connect(pid)?;
    hist_verb(c, None, Some(duration), None, false, &mut || false)?;
    println!(
        "\nparse costs microseconds of CPU, a cache hit almost nothing, a miss waits for the \
         ~1 ms backend: that is the bimodal lookup histogram above."
    );
    Ok(exit::OK)
}
