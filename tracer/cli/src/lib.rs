//! The `tracer` program's library: everything but flags and dispatch.
//!
//! - [`client`]: finding traced processes and talking to their agent (the
//!   protocol is documented in the `tracer` crate's `agent.rs`);
//! - [`reader`]: mapping the per-thread rings a process hands over and
//!   draining them;
//! - [`graph`]: ftrace's function and function_graph text;
//! - [`hist`]: per-function latency histograms and log2 charts;
//! - [`record`]: the self-describing recording file;
//! - [`report`]: per-function reports, Chrome trace JSON and folded stacks;
//! - [`dur`]: durations as users type them (`500ms`, `2s`).
#![deny(missing_docs)]

pub mod client;
pub mod dur;
pub mod graph;
pub mod hist;
pub mod reader;
pub mod record;
pub mod report;

/// Exit codes of the `tracer` program.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// The target refused or failed a request (no such function, patching
    /// refused), or a file could not be read or written.
    pub const FAILED: i32 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: i32 = 2;
    /// No traced process could be found or reached.
    pub const NO_TARGET: i32 = 3;
}

/// An error with the exit code it maps to. Its message says what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Exit code for the program ([`exit`]).
    pub code: i32,
    /// What went wrong and what to do about it.
    pub msg: String,
}

impl Error {
    /// A failure ([`exit::FAILED`]).
    pub fn failed(msg: impl Into<String>) -> Error {
        Error {
            code: exit::FAILED,
            msg: msg.into(),
        }
    }
    /// No target ([`exit::NO_TARGET`]).
    pub fn no_target(msg: impl Into<String>) -> Error {
        Error {
            code: exit::NO_TARGET,
            msg: msg.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

/// Should output to a stream use colour? Only on a terminal, and never when
/// `NO_COLOR` is set to anything non-empty.
pub fn use_color(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Does the ELF program at `path` link the tracer runtime (does it have the
/// `__tracer_sites` section)? `false` when it cannot be read.
pub fn links_runtime(path: &std::path::Path) -> bool {
    use object::{Object, ObjectSection};
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    let Ok(file) = object::File::parse(&*data) else {
        return false;
    };
    let found = file
        .sections()
        .any(|s| s.name() == Ok(tracer_core::site::SECTION));
    found
}
