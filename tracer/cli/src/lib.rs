//! The `tracer` program's library: everything but flags and dispatch.
//!
//! The verbs:
//! - [`control`]: `list`, `enable`, `disable`, `status` (one request, its
//!   reply shown);
//! - [`session`]: collection sessions, `trace`, `hist` and `record`;
//! - [`launch`]: `tracer run`, and the `TRACER_*` environment it gives the
//!   program it starts;
//! - [`export`]: `report` and `export` of a recording;
//! - [`serve`]: `tracer serve`, Prometheus `/metrics` for traced processes;
//! - [`demo`]: `tracer demo`;
//! - [`out`]: where output goes, and Ctrl-C;
//! - [`help`]: the long help texts;
//! - `attach`: `tracer attach` and `tracer detach` (x86-64): load the agent
//!   into a process started without the tracer, and stop it again.
//!
//! What they are made of:
//! - [`calls`]: calls rebuilt from events, returned or left (`longjmp`);
//! - [`client`]: finding traced processes and talking to their agent (the
//!   protocol is documented in the `tracer` crate's `agent.rs`);
//! - [`reader`]: mapping the per-thread rings a process hands over and
//!   draining them;
//! - [`graph`]: ftrace's function and function_graph text;
//! - [`hist`]: per-function latency histograms and log2 charts;
//! - [`record`]: the self-describing recording file;
//! - [`report`]: per-function reports, Chrome trace JSON and folded stacks;
//! - [`perfetto`]: Perfetto's native protobuf trace format;
//! - [`source`]: `file:line` of compiler-padded functions from DWARF;
//! - [`values`]: captured arguments and return values: names and types
//!   from DWARF, ftrace's text for them, `--where` conditions;
//! - [`dur`]: durations as users type them (`500ms`, `2s`).
#![deny(missing_docs)]

#[cfg(target_arch = "x86_64")]
pub mod attach;
pub mod calls;
pub mod client;
pub mod control;
pub mod demo;
pub mod dur;
pub mod export;
pub mod graph;
pub mod help;
pub mod hist;
pub mod launch;
pub mod list;
pub mod out;
pub mod perfetto;
pub mod reader;
pub mod record;
pub mod report;
pub mod serve;
pub mod session;
pub mod source;
pub mod values;

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

/// One row of [`function_table`]: name, count, calls that never returned,
/// and six more columns (already formatted).
pub type FunctionRow<'a> = (&'a str, u64, u64, [String; 6]);

/// The per-function table of `tracer hist` and `tracer report`: `head` names
/// the name, count and six more columns; names are elided to
/// [`NAME_COLUMN`]; a `no-return` column follows the count only when some
/// row has calls that never returned.
pub fn function_table(head: [&str; 8], rows: &[FunctionRow<'_>]) -> String {
    use std::fmt::Write as _;
    let names: Vec<_> = rows.iter().map(|r| elide(r.0, NAME_COLUMN)).collect();
    let w = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    let noret = rows.iter().any(|r| r.2 > 0);
    let extra = |s: &dyn std::fmt::Display| {
        if noret {
            format!(" {s:>9}")
        } else {
            String::new()
        }
    };
    let mut out = String::new();
    let mut line = |name: &str, count: &dyn std::fmt::Display, noret: String, c: [&str; 6]| {
        let _ = writeln!(
            out,
            "{name:<w$} {count:>9}{noret} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            c[0], c[1], c[2], c[3], c[4], c[5]
        );
    };
    line(
        head[0],
        &head[1],
        extra(&"no-return"),
        [head[2], head[3], head[4], head[5], head[6], head[7]],
    );
    for (r, name) in rows.iter().zip(&names) {
        let c = &r.3;
        line(
            name,
            &r.1,
            extra(&r.2),
            [&c[0], &c[1], &c[2], &c[3], &c[4], &c[5]],
        );
    }
    out
}

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

/// `s` safe to print on a terminal: C0 control characters (including tab
/// and newline), DEL and C1 controls (U+0080–U+009F) become `\x{1b}`-style
/// escapes. Names and messages from an agent or a recording pass through
/// this before they are printed: they could otherwise move the cursor,
/// retitle the window or rewrite what is on the screen. Escaping twice
/// changes nothing (names escaped when recorded stay as they are).
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(char::is_control) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            use std::fmt::Write as _;
            let _ = write!(out, "\\x{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// JSON text made safe for a terminal: serde already escapes C0 controls
/// inside strings, but writes DEL and C1 controls (U+007F–U+009F) as they
/// are; they become `\u00XX` escapes, which mean the same to any JSON
/// reader (outside strings, JSON text has no such characters).
pub fn printable_json(text: String) -> String {
    // Only DEL and C1 controls change (pretty-printed text is full of
    // newlines, which stay).
    if !text.chars().any(|c| c.is_control() && c as u32 >= 0x7f) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_control() && c as u32 >= 0x7f {
            use std::fmt::Write as _;
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
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
    fn control_characters_are_escaped() {
        assert_eq!(printable("app::parse"), "app::parse");
        assert!(matches!(
            printable("plain ünïcode"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(printable("a\x1b[2Jb"), "a\\x{1b}[2Jb");
        assert_eq!(printable("x\ny\tz\0"), "x\\x{a}y\\x{9}z\\x{0}");
        assert_eq!(printable("del\u{7f}c1\u{9b}"), "del\\x{7f}c1\\x{9b}");
        // U+00A0 and above are printable.
        assert_eq!(printable("\u{a0}é"), "\u{a0}é");
        // Idempotent.
        assert_eq!(printable(&printable("a\x1bb")), "a\\x{1b}b");
    }

    #[test]
    fn json_text_has_no_raw_controls() {
        let v = serde_json::json!({"n": "a\u{1b}b\u{9b}c\u{7f}é"});
        let t = printable_json(serde_json::to_string(&v).unwrap());
        assert!(!t.contains(char::is_control), "{t}");
        let back: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn function_tables_show_no_return_only_when_there_is_some() {
        let head = ["function", "count", "a", "b", "c", "d", "e", "f"];
        let c = || {
            [
                "1".to_string(),
                "2".into(),
                "3".into(),
                "4".into(),
                "5".into(),
                "6".into(),
            ]
        };
        let t = function_table(head, &[("app::f", 3, 0, c())]);
        assert_eq!(
            t,
            "function     count          a          b          c          d          e          f\n\
             app::f           3          1          2          3          4          5          6\n"
        );
        let t = function_table(head, &[("app::f", 3, 0, c()), ("g", 1, 2, c())]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("function     count no-return          a"),
            "{t}"
        );
        assert!(
            lines[1].starts_with("app::f           3         0          1"),
            "{t}"
        );
        assert!(
            lines[2].starts_with("g                1         2          1"),
            "{t}"
        );
        assert!(lines
            .iter()
            .all(|l| l.chars().count() == lines[0].chars().count()));
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
