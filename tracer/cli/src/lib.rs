//! The `tracer` program's library: everything but flags and dispatch.
//!
//! - [`calls`]: calls rebuilt from events, returned or left (`longjmp`);
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

pub mod calls;
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

/// Widest function name shown in a table column, in characters.
pub const NAME_COLUMN: usize = 72;

/// `name` cut to at most `max` characters by replacing its middle with `…`
/// (the start says where a function lives, the end which one it is).
pub fn elide(name: &str, max: usize) -> std::borrow::Cow<'_, str> {
    let n = name.chars().count();
    if n <= max || max < 5 {
        return name.into();
    }
    let keep = max - 1;
    let head = keep / 2;
    let tail = keep - head;
    let mut out: String = name.chars().take(head).collect();
    out.push('…');
    out.extend(name.chars().skip(n - tail));
    out.into()
}

/// A name made fit for one frame of a folded stack (`a;b;c COUNT`): a `;`
/// inside it (`[u8; 4]`) would split the frame, so it becomes `,`.
pub fn folded_frame(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains(';') {
        name.replace(';', ",").into()
    } else {
        name.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_lose_their_middle() {
        assert_eq!(elide("short", 10), "short");
        let long = "<grep_searcher::searcher::Searcher>::search_reader::<grep_printer::Sink>";
        let e = elide(long, 30);
        assert_eq!(e.chars().count(), 30);
        assert!(
            e.starts_with("<grep_searcher") && e.ends_with("printer::Sink>"),
            "{e}"
        );
        assert!(e.contains('…'));
        // Multi-byte characters are never split.
        assert_eq!(elide("ééééééééééé", 5).chars().count(), 5);
    }

    #[test]
    fn folded_frames_have_no_separator() {
        assert_eq!(
            folded_frame("<[&PathBuf; 1] as Debug>::fmt"),
            "<[&PathBuf, 1] as Debug>::fmt"
        );
        assert_eq!(folded_frame("plain"), "plain");
    }
}
