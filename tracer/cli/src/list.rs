//! `tracer list` and the pages it reads: every function the agent lists
//! for a pattern, a page at a time, read typed and borrowed from each reply
//! and written straight to the buffered output (the program's memory does
//! not grow with the number of functions listed). The `--json` shape is a
//! contract; a page that does not read typed is read as JSON values and
//! written the same way.

use crate::client::{Client, Request};
use crate::control::connect;
use crate::out::io_err;
use crate::{exit, printable, Error};
use serde_json::Value;
use std::io::Write;

/// Functions asked of the agent at a time (the agent sorts its list once
/// and cuts every page of it from that). Small enough that a page's
/// transient memory in the traced program (about 350 bytes a function,
/// which glibc keeps as its high-water mark) stays near 2 MiB.
pub(crate) const LIST_PAGE: u64 = 5_000;

/// Every function the agent lists for `pattern` (sorted by name), a page at
/// a time, so no side holds all of a program's functions at once. (An older
/// agent sends them all at once; that works too.) Each as a JSON value: for
/// callers that look at a few functions' fields; [`each_listed_fn`] reads
/// the pages typed, without building a value per function.
pub fn each_listed(
    c: &mut Client,
    pattern: Option<&str>,
    f: &mut dyn FnMut(&Value) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut from = 0u64;
    loop {
        let v = c.request(&list_request(pattern, from))?;
        for func in v["functions"].as_array().into_iter().flatten() {
            f(func)?;
        }
        match v["next"].as_u64() {
            Some(n) if n > from => from = n,
            _ => return Ok(()),
        }
    }
}

fn list_request(pattern: Option<&str>, from: u64) -> Request {
    Request::List {
        pattern: pattern.map(String::from),
        from: Some(from),
        max: Some(LIST_PAGE),
    }
}

/// A string of a reply, borrowed from it when it has no escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub std::borrow::Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use std::borrow::Cow;
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(s))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(s))
            }
        }
        d.deserialize_str(V).map(Text)
    }
}

impl serde::Serialize for Text<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A function of a `list` page, read typed and borrowed from the reply:
/// the fields the `tracer` program looks at, each as the agent sends it
/// (`msg::Function`), `None` when missing or null. A function whose fields
/// have other types is read as a JSON value instead ([`Listed::Json`]).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct ListedFn<'a> {
    /// Its index.
    pub index: Option<u64>,
    /// Its name.
    #[serde(borrow)]
    pub name: Option<Text<'a>>,
    /// Enabled now.
    pub enabled: Option<bool>,
    /// Its source file, or its object's path.
    #[serde(borrow)]
    pub file: Option<Text<'a>>,
    /// Its source line (0: unknown).
    pub line: Option<u64>,
    /// A compiler pad's address in its object.
    pub object_offset: Option<u64>,
    /// Why some of its pads cannot be used.
    #[serde(borrow)]
    pub problems: Option<Vec<Text<'a>>>,
    /// A `#[traceable]` function's signature.
    #[serde(borrow)]
    pub signature: Option<Text<'a>>,
}

/// A `list` page as an agent of this version writes it.
#[derive(serde::Deserialize)]
struct Page<'a> {
    ok: bool,
    #[serde(borrow, default)]
    functions: Vec<ListedFn<'a>>,
    next: Option<u64>,
}

/// A `list` reply's `body` read typed, if it reads so and is not an error.
fn typed_page(body: &[u8]) -> Option<Page<'_>> {
    serde_json::from_slice::<Page<'_>>(body)
        .ok()
        .filter(|p| p.ok)
}

/// A function [`each_listed_fn`] gives: typed, or, from a page that does not
/// read as [`ListedFn`]s, its JSON value.
#[derive(Debug, Clone, Copy)]
pub enum Listed<'a> {
    /// As an agent of this version sends it.
    Typed(&'a ListedFn<'a>),
    /// Anything else.
    Json(&'a Value),
}

impl Listed<'_> {
    /// The function's index, if it has one.
    pub fn index(&self) -> Option<u64> {
        match self {
            Listed::Typed(f) => f.index,
            Listed::Json(f) => f["index"].as_u64(),
        }
    }
}

/// [`each_listed`], each page read typed and borrowed from the reply (a
/// page of thousands of functions is no thousands of JSON maps): the same
/// functions, and the same errors. A page that does not read as this version's
/// (fields of other types, or an error) is read as a JSON value, as
/// [`each_listed`] reads it.
pub fn each_listed_fn(
    c: &mut Client,
    pattern: Option<&str>,
    f: &mut dyn FnMut(Listed<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut from = 0u64;
    loop {
        let body = c.request_body(&list_request(pattern, from))?;
        let next = match typed_page(&body) {
            Some(page) => {
                for func in &page.functions {
                    f(Listed::Typed(func))?;
                }
                page.next
            }
            _ => {
                let v = c.reply_value("list", &body)?;
                for func in v["functions"].as_array().into_iter().flatten() {
                    f(Listed::Json(func))?;
                }
                v["next"].as_u64()
            }
        };
        match next {
            Some(n) if n > from => from = n,
            _ => return Ok(()),
        }
    }
}

/// The function indices the agent lists for `pattern`.
pub fn resolve_indices(c: &mut Client, pattern: &str) -> Result<Vec<u32>, Error> {
    let mut v = Vec::new();
    each_listed_fn(c, Some(pattern), &mut |f| {
        v.extend(f.index().map(|i| i as u32));
        Ok(())
    })?;
    Ok(v)
}

/// `tracer list`: every function matching `pattern`, with its source line
/// and state, as text or (`json`) one streamed JSON array.
pub fn list(pid: Option<i32>, pattern: Option<String>, json: bool) -> Result<i32, Error> {
    let mut c = connect(pid)?;
    let pid = c.pid;
    // Buffered: stdout alone writes each line with its own system call
    // (`list --json` is ten lines a function).
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut lister = Lister::new(json);
    each_listed_fn(&mut c, pattern.as_deref(), &mut |f| {
        lister.write(&mut out, f).map_err(io_err)
    })?;
    lister.finish(&mut out).map_err(io_err)?;
    if !json && lister.n == 0 {
        writeln!(
            out,
            "process {pid} has no traceable functions: mark some with #[tracer::traceable], or build it \
             with compiler pads (-fpatchable-function-entry=5)"
        )
        .map_err(io_err)?;
    }
    out.flush().map_err(io_err)?;
    Ok(exit::OK)
}

/// Writes `list`'s output a function at a time, as it comes: its memory
/// does not grow with the number of functions.
struct Lister {
    json: bool,
    /// Functions written.
    n: u64,
    lines: crate::source::SourceLines,
    /// One item's JSON, before it is indented.
    buf: Vec<u8>,
}

impl Lister {
    fn new(json: bool) -> Lister {
        Lister {
            json,
            n: 0,
            lines: crate::source::SourceLines::new(),
            buf: Vec::new(),
        }
    }

    /// Write one function (an element of the array, with `json`).
    fn write(&mut self, out: &mut dyn Write, f: Listed<'_>) -> std::io::Result<()> {
        if self.json {
            out.write_all(if self.n == 0 { b"[\n  " } else { b",\n  " })?;
        }
        self.n += 1;
        match f {
            Listed::Typed(f) => {
                let (file, line) = self.lines.place(f.file.as_deref(), f.line, f.object_offset);
                if self.json {
                    let item = Item {
                        enabled: &f.enabled,
                        file: &file,
                        line,
                        name: &f.name,
                        problems: &f.problems,
                        signature: f.signature.as_deref().filter(|s| !s.is_empty()),
                    };
                    write_item_json(out, &mut self.buf, &item)
                } else {
                    let problems = f.problems.iter().flatten().map(|p| Some(&**p));
                    write_item_text(
                        out,
                        f.enabled == Some(true),
                        f.name.as_deref(),
                        &file,
                        line,
                        problems,
                    )
                }
            }
            Listed::Json(f) => {
                let (file, line) = self.lines.of(f);
                if self.json {
                    write_item_json(out, &mut self.buf, &value_item(f, &file, line))
                } else {
                    write_value_text(out, f, &file, line)
                }
            }
        }
    }

    /// End the output (the array's end, with `json`).
    fn finish(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        if self.json {
            writeln!(out, "{}", if self.n == 0 { "[]" } else { "\n]" })?;
        }
        Ok(())
    }
}

/// An element of `list --json`'s array: the object `{"name", "file",
/// "line", "enabled", "problems"}` (and `signature`) as a JSON map writes
/// it, keys sorted; borrowed from the agent's reply rather than copied
/// into a map (10^6 of them).
#[derive(serde::Serialize)]
struct Item<'a, E, N, P> {
    enabled: E,
    file: &'a str,
    line: u64,
    name: N,
    problems: P,
    // A #[traceable] function's parameters and return type as its
    // macro saw them (what `--args --retval` shows).
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<&'a str>,
}

/// [`Item`] of a function read as a JSON value: its fields as they are.
fn value_item<'a>(
    f: &'a Value,
    file: &'a str,
    line: u64,
) -> Item<'a, &'a Value, &'a Value, &'a Value> {
    Item {
        enabled: &f["enabled"],
        file,
        line,
        name: &f["name"],
        problems: &f["problems"],
        signature: f["signature"].as_str().filter(|s| !s.is_empty()),
    }
}

/// Write `item` pretty-printed and made printable ([`crate::printable_json`]),
/// indented as an element of the array; `buf`: scratch space.
fn write_item_json(
    out: &mut dyn Write,
    buf: &mut Vec<u8>,
    item: &impl serde::Serialize,
) -> std::io::Result<()> {
    buf.clear();
    serde_json::to_writer_pretty(&mut *buf, item).map_err(std::io::Error::other)?;
    // DEL is 0x7f and C1 controls are 0xc2 0x80-0x9f in UTF-8: text
    // without either byte has none (the pretty-printer writes UTF-8).
    let fixed;
    let text = if buf.iter().any(|&b| b == 0x7f || b == 0xc2) {
        fixed = crate::printable_json(String::from_utf8_lossy(buf).into_owned());
        fixed.as_bytes()
    } else {
        &buf[..]
    };
    // Newlines are only between tokens (strings escape theirs).
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.write_all(b"\n  ")?;
        }
        out.write_all(line)?;
    }
    Ok(())
}

/// One element of `list --json`'s array, indented as an element of it.
#[cfg(test)]
fn list_item_json(f: &Value, file: &str, line: u64) -> String {
    let mut out = Vec::new();
    write_item_json(&mut out, &mut Vec::new(), &value_item(f, file, line)).expect("to memory");
    String::from_utf8(out).expect("utf-8")
}

/// One function of `list`'s text: state, name, place, and its problems
/// (`None`: one that is not a string).
fn write_item_text<'p>(
    out: &mut dyn Write,
    on: bool,
    name: Option<&str>,
    file: &str,
    line: u64,
    problems: impl Iterator<Item = Option<&'p str>>,
) -> std::io::Result<()> {
    let state = if on { "on " } else { "off" };
    let name = printable(name.unwrap_or("?"));
    // Compiler pads without debug information have no line: their file
    // is the object's path.
    if line > 0 {
        writeln!(out, "{state}  {name}  {}:{line}", printable(file))?;
    } else {
        writeln!(out, "{state}  {name}  {}", printable(file))?;
    }
    for p in problems {
        writeln!(
            out,
            "     problem: {} (this pad is never written)",
            printable(p.unwrap_or("?"))
        )?;
    }
    Ok(())
}

/// [`write_item_text`] of a function read as a JSON value.
fn write_value_text(out: &mut dyn Write, f: &Value, file: &str, line: u64) -> std::io::Result<()> {
    let problems = f["problems"].as_array().into_iter().flatten();
    write_item_text(
        out,
        f["enabled"] == true,
        f["name"].as_str(),
        file,
        line,
        problems.map(|p| p.as_str()),
    )
}

/// One function of `list`'s text.
#[cfg(test)]
fn list_item_text(f: &Value, file: &str, line: u64) -> String {
    let mut out = Vec::new();
    write_value_text(&mut out, f, file, line).expect("to memory");
    String::from_utf8(out).expect("utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_items_escape_and_show_problems() {
        let f = json!({"name": "a\u{1b}b", "enabled": true, "problems": ["odd pad"]});
        assert_eq!(
            list_item_text(&f, "src/x.rs", 7),
            "on   a\\x{1b}b  src/x.rs:7\n     problem: odd pad (this pad is never written)\n"
        );
        let g = json!({"name": "c", "enabled": false});
        assert_eq!(list_item_text(&g, "/lib/x.so", 0), "off  c  /lib/x.so\n");
        let j = list_item_json(&g, "/lib/x.so", 0);
        let back: Value = serde_json::from_str(&j).unwrap();
        assert_eq!(
            back,
            json!({"name": "c", "file": "/lib/x.so", "line": 0, "enabled": false, "problems": null})
        );
        assert!(
            j.contains("\n    \"enabled\"") && j.ends_with("\n  }"),
            "indented as an element: {j}"
        );
    }

    #[test]
    fn list_items_are_written_as_their_json_map_would_be() {
        // What `list --json` wrote before its items were borrowed.
        fn as_map(f: &Value, file: &str, line: u64) -> String {
            let mut item = json!({
                "name": f["name"], "file": file, "line": line,
                "enabled": f["enabled"], "problems": f["problems"],
            });
            if let Some(sig) = f["signature"].as_str().filter(|s| !s.is_empty()) {
                item["signature"] = sig.into();
            }
            let text = crate::printable_json(serde_json::to_string_pretty(&item).expect("json"));
            text.replace('\n', "\n  ")
        }
        let items = [
            json!({"name": "ns::f<\"q\">\u{1b}\u{85}é", "enabled": true,
                   "problems": ["odd \\ pad", "two"], "signature": "(n: u32) -> u64"}),
            json!({"name": "c", "enabled": false, "problems": [], "signature": ""}),
            json!({"name": 5, "enabled": "yes", "problems": {"a": [1, null]}}),
            json!({}),
        ];
        for f in &items {
            for (file, line) in [("src/x.rs", 7), ("/lib/\u{9b}x.so", 0)] {
                assert_eq!(list_item_json(f, file, line), as_map(f, file, line), "{f}");
            }
        }
    }

    /// Functions as an agent may list them: as this version's agent
    /// writes them, and odd ones.
    fn listed_samples() -> Vec<Value> {
        vec![
            json!({"index": 3, "name": "ns::f<\"q\">\u{1b}\u{85}é\u{7f}", "enabled": true,
                   "file": "src/\u{9b}x.rs", "line": 7, "problems": ["odd \\ pad", "two\u{1b}"],
                   "signature": "(n: u32) -> u64", "ident": "f", "compiler_pad": false,
                   "loaded": true, "object_offset": null, "sites": 1}),
            json!({"index": 4, "name": "c", "enabled": false, "problems": [], "signature": "",
                   "file": "/no/such/object.so", "line": 0, "object_offset": 4096}),
            json!({"index": 5, "name": "\u{a2}\u{a0}d", "enabled": false, "file": "x.c",
                   "line": 0, "problems": null}),
            json!({"name": 5, "enabled": "yes", "problems": {"a": [1, null]}}),
            json!({"name": "n", "line": -1, "file": 3}),
            json!({"problems": [null, "p"]}),
            json!({}),
        ]
    }

    /// `list`'s output of `functions`, each read as a JSON value (`typed`:
    /// typed where it reads so).
    fn listed_output(functions: &[Value], json: bool, typed: bool) -> String {
        let mut out = Vec::new();
        let mut l = Lister::new(json);
        for f in functions {
            let text = f.to_string();
            match serde_json::from_str::<ListedFn<'_>>(&text) {
                Ok(t) if typed => l.write(&mut out, Listed::Typed(&t)),
                _ => l.write(&mut out, Listed::Json(f)),
            }
            .unwrap();
        }
        l.finish(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn typed_and_json_functions_are_listed_alike() {
        let all = listed_samples();
        // The first three read typed, the others do not.
        let typed: Vec<bool> = all
            .iter()
            .map(|f| serde_json::from_str::<ListedFn<'_>>(&f.to_string()).is_ok())
            .collect();
        assert_eq!(typed, [true, true, true, false, false, false, true]);
        for json in [true, false] {
            for n in 0..=all.len() {
                assert_eq!(
                    listed_output(&all[..n], json, true),
                    listed_output(&all[..n], json, false),
                    "json {json}, {n} functions"
                );
            }
        }
        // What the JSON output was before it was streamed: an array of the
        // items, each written as `list_item_json` writes it.
        let items: Vec<String> = all
            .iter()
            .map(|f| {
                let (file, line) = crate::source::SourceLines::new().of(f);
                format!("  {}", list_item_json(f, &file, line))
            })
            .collect();
        assert_eq!(
            listed_output(&all, true, true),
            format!("[\n{}\n]\n", items.join(",\n"))
        );
        assert_eq!(listed_output(&[], true, true), "[]\n");
        let back: Value = serde_json::from_str(&listed_output(&all, true, true)).unwrap();
        assert_eq!(back.as_array().unwrap().len(), all.len());
    }

    #[test]
    fn a_genuine_page_reads_typed_and_an_odd_one_does_not() {
        use tracer_core::wire::msg;
        let page = msg::List {
            functions: vec![
                msg::Function {
                    index: 9,
                    name: "a::\"b\"\u{1b}".into(),
                    file: "/p/x".into(),
                    enabled: true,
                    problems: vec!["p".into()],
                    object_offset: Some(16),
                    signature: "(x: u8)".into(),
                    ..Default::default()
                },
                msg::Function {
                    index: 2,
                    name: "c".into(),
                    line: 4,
                    ..Default::default()
                },
            ],
            total: 7,
            next: Some(5),
        };
        let mut body = Vec::new();
        page.write_reply(&mut body).unwrap();
        let p = typed_page(&body).expect("typed");
        assert_eq!(p.next, Some(5));
        let f = &p.functions;
        assert_eq!(f.len(), 2);
        assert_eq!(
            (f[0].index, f[0].name.as_deref()),
            (Some(9), Some("a::\"b\"\u{1b}"))
        );
        assert_eq!((f[0].enabled, f[0].object_offset), (Some(true), Some(16)));
        assert_eq!(f[0].signature.as_deref(), Some("(x: u8)"));
        assert_eq!(f[0].problems.as_ref().map(Vec::len), Some(1));
        assert_eq!((f[1].line, f[1].object_offset), (Some(4), None));
        assert_eq!(f[1].signature, None);
        // Names without escapes are borrowed from the reply.
        assert!(matches!(
            f[1].name.as_ref().unwrap().0,
            std::borrow::Cow::Borrowed(_)
        ));
        // Errors, odd types and repeated keys are left to the JSON reading.
        for odd in [
            json!({"ok": false, "error": "no"}),
            json!({"ok": true, "functions": [{"name": 5}]}),
            json!({"ok": true, "functions": {}}),
            json!({"ok": true, "functions": [], "next": -1}),
            json!({"functions": []}),
        ] {
            assert!(typed_page(odd.to_string().as_bytes()).is_none(), "{odd}");
        }
        let twice = br#"{"ok": true, "functions": [{"name": "a", "name": "b"}]}"#;
        assert!(typed_page(twice).is_none());
        assert!(typed_page(b"[1]").is_none() && typed_page(b"{").is_none());
    }
}
