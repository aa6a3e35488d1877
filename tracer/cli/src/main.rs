//! `tracer`: attach to a running process that links the `tracer` crate,
//! enable functions, and watch them: an ftrace-style trace, latency
//! histograms, recordings, reports and exports. Flags and dispatch only; the
//! work is in the `tracer_cli` library.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tracer_cli::help::{EXIT_CODES, PATTERNS, SERVE_HELP};
use tracer_cli::launch::parse_buffer;
use tracer_cli::reader::Reader;
use tracer_cli::{client, control, demo, dur, exit, export, graph, launch, out, record, serve};
use tracer_cli::{session, Error};

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
        /// Ring size, in events, for the process's threads that start
        /// recording from now on (threads that have a ring keep theirs).
        #[arg(long, value_name = "EVENTS", value_parser = parse_buffer)]
        buffer: Option<usize>,
        #[command(flatten)]
        target: Target,
    },
    /// Per-function latency: count, min, p50, p90, p99, p99.9, max and a log2 chart.
    #[command(
        after_help = "Example:\n  tracer hist 'parse*' --duration 5s\n  tracer hist --interval 1s --json"
    )]
    Hist {
        /// Enable these functions for the collection and show only them: those it enabled are disabled again after; functions enabled already keep how they were enabled (their capture too). With --where on values, the functions it enables capture what the condition needs.
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
        /// Ring size, in events, for the process's threads that start
        /// recording from now on (threads that have a ring keep theirs).
        #[arg(long, value_name = "EVENTS", value_parser = parse_buffer)]
        buffer: Option<usize>,
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
        /// Ring size, in events, for the process's threads that start
        /// recording from now on (threads that have a ring keep theirs).
        #[arg(long, value_name = "EVENTS", value_parser = parse_buffer)]
        buffer: Option<usize>,
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
        /// Enable these functions in each process (those it enabled are disabled again on exit; functions enabled already are left as they were) and export only them.
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    out::install_signals();
    let r = run(cli.cmd);
    out::flush();
    match r {
        Ok(code) => ExitCode::from(code as u8),
        // The reader of the output went away (`tracer report | head`): end
        // quietly, as the other tools of a pipeline do.
        Err(e) if e.msg == out::BROKEN_PIPE => ExitCode::from(exit::OK as u8),
        Err(e) => {
            eprintln!("tracer: error: {e}");
            ExitCode::from(e.code as u8)
        }
    }
}

fn run(cmd: Cmd) -> Result<i32, Error> {
    match cmd {
        Cmd::List {
            pattern,
            json,
            target,
        } => tracer_cli::list::list(target.pid, pattern, json),
        Cmd::Enable {
            patterns,
            capture,
            target,
        } if capture.any() => {
            control::set_capturing(target.pid, &patterns, &capture).map(|_| exit::OK)
        }
        Cmd::Enable {
            patterns, target, ..
        } => control::set(target.pid, &patterns, true).map(|_| exit::OK),
        Cmd::Disable { patterns, target } => {
            control::set(target.pid, &patterns, false).map(|_| exit::OK)
        }
        Cmd::Status { json, target } => control::status(target.pid, json),
        Cmd::Trace {
            graph,
            threshold,
            depth,
            duration,
            where_,
            buffer,
            target,
        } => {
            session::set_where(where_);
            let mut c = control::connect_for(target.pid, duration)?;
            control::buffer(&mut c, buffer)?;
            let mut reader = Reader::attach(c)?;
            let opts = graph::Options {
                graph,
                threshold_ns: threshold.map(|d| d.as_nanos() as u64),
                max_depth: depth,
            };
            session::trace(&mut reader, opts, duration, &mut || false, None)?;
            Ok(exit::OK)
        }
        Cmd::Hist {
            pattern,
            duration,
            interval,
            json,
            where_,
            buffer,
            target,
        } => {
            session::set_where(where_);
            let mut c = control::connect_for(target.pid, duration)?;
            control::buffer(&mut c, buffer)?;
            session::hist(c, pattern, duration, interval, json, &mut || false)
        }
        Cmd::Record {
            output,
            duration,
            where_,
            buffer,
            target,
        } => {
            session::set_where(where_);
            let mut c = control::connect_for(target.pid, duration)?;
            control::buffer(&mut c, buffer)?;
            session::record(c, &output, duration)
        }
        Cmd::Report { file, sort, json } => export::report(&file, &sort, json),
        Cmd::Export {
            file,
            perfetto,
            chrome,
            folded,
        } => export::export(&file, perfetto, chrome, folded),
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
            session::set_where(where_);
            let cap = capture.blind().map_err(|m| Error {
                code: exit::USAGE,
                msg: m,
            })?;
            launch::set_capture(cap.encode());
            match output {
                Some(p) => out::to_file(record::create(&p)?),
                None => out::to_stderr(),
            }
            launch::run(&enable, trace, hist, record.as_deref(), buffer, &cmd)
        }
        Cmd::Demo { duration } => demo::run(duration),
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
            serve::run(listener, pid, &opts, out::stop_flag())
        }
    }
}
