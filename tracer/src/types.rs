//! The public types of the API.

use std::fmt;
pub use tracer_core::engine::{BatchReport, SkipReason, Skipped, WriteError};
use tracer_core::pattern::PatternError;

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The pattern selects no function.
    Pattern(PatternError),
    /// The kernel refused to make code writable; nothing was changed.
    Write(WriteError),
    /// Threads block SIGTRAP, so a batch could kill the process.
    SigtrapBlocked {
        /// `(tid, name)` of each such thread.
        threads: Vec<(i32, String)>,
    },
    /// Someone replaced the tracer's SIGTRAP handler.
    HandlerReplaced,
    /// The runtime cannot work in this process.
    Unsupported(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Pattern(e) => write!(f, "{e}"),
            Error::Write(e) => write!(f, "{e}"),
            Error::SigtrapBlocked { threads } => {
                let list: Vec<String> = threads.iter().map(|(t, n)| format!("{t} ({n})")).collect();
                write!(
                    f,
                    "thread(s) {} block SIGTRAP; a thread that runs into a pad while it is being patched \
                     would then kill the process. Nothing was changed. Unblock SIGTRAP in those threads \
                     (pthread_sigmask) and try again",
                    list.join(", ")
                )
            }
            Error::HandlerReplaced => f.write_str(
                "the tracer's SIGTRAP handler was replaced by someone else; patching now could kill the \
                 process. Nothing was changed. Restore the handler (or chain to it) and try again",
            ),
            Error::Unsupported(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<PatternError> for Error {
    fn from(e: PatternError) -> Error {
        Error::Pattern(e)
    }
}

/// A traceable function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionInfo {
    /// Full path (`app::cache::lookup`, `<app::Db as app::Store>::get`).
    pub name: String,
    /// Its own name (`lookup`).
    pub ident: String,
    /// Source file.
    pub file: String,
    /// Source line.
    pub line: u32,
    /// Whether its pads are enabled.
    pub enabled: bool,
    /// Number of pads (entry and exit, every instantiation and inlined copy).
    pub sites: usize,
    /// Problems with its pads (bytes that were not what the tracer expected);
    /// such pads are never written.
    pub problems: Vec<String>,
    /// Its index (as in events, and in the agent's function list).
    pub index: u32,
    /// False once the object holding it was unloaded (`dlclose`).
    pub loaded: bool,
    /// A compiler-inserted pad (`file` is then the object's path) rather
    /// than `#[traceable]`.
    pub compiler_pad: bool,
    /// For a compiler pad: its address in the object as linked (the
    /// runtime address less the object's load bias), where the object's
    /// debug information (DWARF) says which source line it is. The `tracer`
    /// program reads that information itself, so the traced process never
    /// loads it.
    pub object_offset: Option<u64>,
    /// For a `#[traceable]` function: its parameters and return type as
    /// the macro saw them (`tracer_core::capture::TraceableSig`'s text),
    /// which name and type the values `enable_with` captures; empty for
    /// compiler pads and async functions.
    pub signature: String,
}

/// Latency of one function, in nanoseconds.
///
/// `count`, `min`, `max` and `mean` are exact (per-thread counters). The
/// percentiles are within 0.8 % (see `tracer_core::loghist`) of the calls
/// whose exit events this process drained itself: `count - lost` of them.
/// While a `tracer` program reads the rings (`tracer trace`, `hist`,
/// `record` attached to this process), the events go to it, not here: the
/// percentiles then cover only the calls before it attached, and are 0 when
/// there were none (`lost == count`; [`LatencySummary::has_percentiles`]).
/// Its `Display` says so instead of printing such zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    /// Completed calls while enabled (exact).
    pub count: u64,
    /// Shortest (exact).
    pub min: u64,
    /// Median (0 without percentiles: see above).
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Longest (exact).
    pub max: u64,
    /// Mean.
    pub mean: u64,
    /// Calls counted in `count` whose duration is missing from the
    /// percentiles (their exit event was dropped from a full ring, or read
    /// by an attached `tracer` program).
    pub lost: u64,
}

impl LatencySummary {
    /// Whether the percentiles describe any call (not when an attached
    /// `tracer` program read every event).
    pub fn has_percentiles(&self) -> bool {
        self.lost < self.count
    }
}

impl std::fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "count={} min={}ns mean={}ns max={}ns",
            self.count, self.min, self.mean, self.max
        )?;
        if self.has_percentiles() {
            write!(
                f,
                " p50={}ns p90={}ns p99={}ns p99.9={}ns",
                self.p50, self.p90, self.p99, self.p999
            )?;
            if self.lost > 0 {
                write!(
                    f,
                    " (percentiles of {} calls: {} were dropped or read by an attached tracer program)",
                    self.count - self.lost,
                    self.lost
                )?;
            }
            Ok(())
        } else {
            f.write_str(
                " (no percentiles here: an attached tracer program read these calls; ask it: tracer hist)",
            )
        }
    }
}

/// What one `enable`/`disable` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Full paths of the functions whose state changed.
    pub changed: Vec<String>,
    /// Sites left alone, with the function and the reason.
    pub skipped: Vec<(String, Skipped)>,
    /// Syncs the batch did.
    pub syncs: usize,
    /// Set when the batch completed but a page's protection could not be restored.
    pub warning: Option<String>,
}

/// One bucket of a log2 histogram: durations in `[low, high)` ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Inclusive lower bound, ns.
    pub low: u64,
    /// Exclusive upper bound, ns.
    pub high: u64,
    /// Calls in the bucket.
    pub count: u64,
}

/// Runtime counters, for `status` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Threads that have a ring (live or waiting to be recycled).
    pub threads: usize,
    /// Events dropped because a ring was full, all threads (exited ones too).
    pub dropped: u64,
    /// Exits with no matching entry (their entry ran before enabling).
    pub unmatched: u64,
    /// Events skipped because the thread was already inside the tracer.
    pub nested: u64,
    /// Traps of in-flight sites whose new instruction was emulated.
    pub traps_emulated: u64,
    /// Traps of in-flight sites skipped as no-ops.
    pub traps_skipped: u64,
    /// Late traps rewound (the trap was gone when the handler ran).
    pub traps_rewound: u64,
    /// Traps that were not the tracer's, passed on.
    pub traps_foreign: u64,
    /// Clock in use: `tsc` or `monotonic`.
    pub clock: &'static str,
    /// How cores are synchronised.
    pub sync: &'static str,
    /// Ring capacity for new threads, in events.
    pub buffer_events: usize,
    /// Bytes mapped for thread blocks (rings, counters, shadow stacks).
    pub buffer_bytes: usize,
    /// `lean` when the trampolines skip the vector-register save (the hooks
    /// were verified not to need it), else `full-save`.
    pub trampoline: &'static str,
    /// The same for the capturing trampolines (`--args`/`--retval`).
    pub capture_trampoline: &'static str,
    /// Why the capturing trampolines need the full save, when they do.
    pub capture_full_save_reason: Option<String>,
    /// Why the full save is needed, when it is.
    pub full_save_reason: Option<String>,
    /// How exits of compiler-padded functions are seen: `hooked` (return
    /// addresses), or `entry-only: ...` with the reason (CET or arm64 GCS
    /// shadow stacks).
    pub returns: &'static str,
    /// Hooked returns given back to an exception or forced unwind (their
    /// exits were not recorded).
    pub unwound: u64,
    /// GCC pads of five 1-byte NOPs converted to one 5-byte NOP at start-up.
    pub converted_pads: usize,
}

#[cfg(test)]
mod summary_tests {
    use super::LatencySummary;

    #[test]
    fn a_summary_without_percentiles_says_so() {
        let mut s = LatencySummary {
            count: 10,
            min: 5,
            max: 50,
            mean: 20,
            lost: 10,
            ..Default::default()
        };
        assert!(!s.has_percentiles());
        let text = s.to_string();
        assert!(text.contains("no percentiles here"), "{text}");
        assert!(!text.contains("p50=0"), "{text}");
        s.lost = 4;
        s.p50 = 18;
        let text = s.to_string();
        assert!(
            text.contains("p50=18ns") && text.contains("percentiles of 6 calls"),
            "{text}"
        );
    }
}
