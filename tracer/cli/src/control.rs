//! The verbs that ask the agent one thing and show its reply: `enable`,
//! `disable`, `status` (`list`, which reads its reply a page at a time, is
//! [`crate::list`]). The requests are those of the agent's
//! protocol (see [`crate::client`]); the `--json` shapes are contracts.

use crate::client::{self, Client, Request};
use crate::list::each_listed;
use crate::out::{bold, io_err};
use crate::values::{Param, Signature, Ty};
use crate::{exit, printable, Error};
use serde_json::Value;
use std::fmt::Write as _;
use std::io::Write;
use std::time::{Duration, Instant};

/// Connect to the process `pid`, or to the only traced process of this user.
pub fn connect(pid: Option<i32>) -> Result<Client, Error> {
    Client::connect(client::find_target(pid)?)
}

/// How long past a `--duration` a stalled agent may hold the command.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// [`connect`] for a verb that ends after `duration`: no request to the
/// agent may run past it (plus [`DEADLINE_MARGIN`]), whatever the agent does.
/// (`crate::session::pump` counts it again from the start of collection.)
pub fn connect_for(pid: Option<i32>, duration: Option<Duration>) -> Result<Client, Error> {
    let mut c = connect(pid)?;
    c.set_deadline(duration.and_then(|d| Instant::now().checked_add(d + DEADLINE_MARGIN)));
    Ok(c)
}

/// Disable exactly the functions `names` (those a session enabled), in as
/// few requests as the agent's request limit allows: 10^5 quoted names are
/// more than its 1 MiB, and a request over it is refused whole (which left
/// them all enabled). Every request is sent; the first error is returned.
pub fn disable_exact(c: &mut Client, names: &[String]) -> Result<(), Error> {
    let mut first_err = None;
    // The request around the pattern is some 40 bytes.
    for pattern in exact_name_patterns(names, client::MAX_REQUEST - 1024) {
        if let Err(e) = c.request(&Request::Disable {
            pattern: Some(pattern),
        }) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// `names` as patterns of quoted names (`tracer_core::pattern::exact_names`)
/// of at most `max` bytes each as JSON strings (one name longer than that
/// is a pattern alone).
fn exact_name_patterns(names: &[String], max: usize) -> Vec<String> {
    // As a JSON string: `"` and `\` take two bytes, other controls six.
    fn json_len(s: &str) -> usize {
        s.bytes()
            .map(|b| match b {
                b'"' | b'\\' => 2,
                0..=0x1f => 6,
                _ => 1,
            })
            .sum()
    }
    let mut out = Vec::new();
    let (mut start, mut len) = (0, 0);
    for (i, n) in names.iter().enumerate() {
        // The name, its two quotes (`\"` each) and a space.
        let l = json_len(n) + 5;
        if i > start && len + l > max {
            out.push(tracer_core::pattern::exact_names(
                names[start..i].iter().map(String::as_str),
            ));
            (start, len) = (i, 0);
        }
        len += l;
    }
    if start < names.len() {
        out.push(tracer_core::pattern::exact_names(
            names[start..].iter().map(String::as_str),
        ));
    }
    out
}

/// Enable or disable; prints what changed. Returns the changed names.
pub fn set_on(
    c: &mut Client,
    patterns: &[String],
    on: bool,
    quiet: bool,
) -> Result<Vec<String>, Error> {
    set_on_warn(c, patterns, on, quiet, true)
}

/// [`set_on`]; `warn`: print the sites left alone (`run` leaves that to the
/// program's runtime, which reports them for TRACER_ENABLE).
pub fn set_on_warn(
    c: &mut Client,
    patterns: &[String],
    on: bool,
    quiet: bool,
    warn: bool,
) -> Result<Vec<String>, Error> {
    set_on_capture(c, patterns, on, quiet, warn, 0, false)
}

/// [`set_on_warn`], enabling with capture `capture` (`Capture::encode`; 0:
/// none); `keep`: functions enabled already are left as they are, their
/// capture too (a session that disables what it changed at its end).
pub fn set_on_capture(
    c: &mut Client,
    patterns: &[String],
    on: bool,
    quiet: bool,
    warn: bool,
    capture: u32,
    keep: bool,
) -> Result<Vec<String>, Error> {
    let pattern = Some(patterns.join(" "));
    let v = c.request(&if on {
        Request::Enable {
            pattern,
            capture: (capture != 0).then_some(u64::from(capture)),
            keep,
        }
    } else {
        Request::Disable { pattern }
    })?;
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
pub fn changed_text(word: &str, names: &[String]) -> String {
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
pub fn set_capturing(
    pid: Option<i32>,
    patterns: &[String],
    flags: &crate::values::CaptureFlags,
) -> Result<Vec<String>, Error> {
    let mut c = connect(pid)?;
    let cap = capture_needed(&mut c, patterns, flags)?;
    set_on_capture(&mut c, patterns, true, false, true, cap.encode(), false)
}

/// The capture `flags` ask for of the functions `patterns` select: what
/// their debug information names (every register without it).
pub fn capture_needed(
    c: &mut Client,
    patterns: &[String],
    flags: &crate::values::CaptureFlags,
) -> Result<tracer_core::capture::Capture, Error> {
    let usage = |m: String| Error {
        code: exit::USAGE,
        msg: m,
    };
    let mut sigs = Vec::new();
    if flags.args.is_some() && flags.count().map_err(usage)?.is_none() {
        let mut known = crate::values::Signatures::default();
        each_listed(c, Some(&patterns.join(" ")), &mut |f| {
            if let (Some(file), Some(off)) = (f["file"].as_str(), f["object_offset"].as_u64()) {
                sigs.push(known.of_object(file, off));
            } else if f["signature"].as_str().is_some_and(|s| !s.is_empty()) {
                // `#[traceable]`: its pads capture what the macro chose;
                // any argument capture selects them.
                sigs.push(Some(Signature {
                    params: vec![Param {
                        name: "arg1".into(),
                        ty: Ty::Ptr,
                    }],
                    ..Signature::default()
                }));
            }
            Ok(())
        })?;
    }
    crate::values::capture_for(flags, &sigs).map_err(usage)
}

/// `--buffer` of `trace`, `hist`, `record`: the ring size for the
/// process's threads that start recording from now on. Threads that have a
/// ring keep theirs (a ring cannot grow under its running thread): says so
/// when there are some.
pub fn buffer(c: &mut Client, events: Option<usize>) -> Result<(), Error> {
    let Some(n) = events else {
        return Ok(());
    };
    let r: crate::client::msg::Buffer = c.request_as(&Request::Buffer { events: n as u64 })?;
    if r.threads_with_rings > 0 {
        eprintln!(
            "tracer: note: rings of {} events for threads that start recording from now on; the {} \
             thread(s) that have one keep theirs (to size every thread's ring, start the program \
             with `tracer run --buffer {n}` or TRACER_BUFFER_EVENTS={n})",
            r.events, r.threads_with_rings
        );
    }
    Ok(())
}

/// `tracer enable` / `tracer disable`: returns the changed names.
pub fn set(pid: Option<i32>, patterns: &[String], on: bool) -> Result<Vec<String>, Error> {
    let mut c = connect(pid)?;
    set_on(&mut c, patterns, on, false)
}

/// `tracer status`: the agent's status reply as JSON or as text.
pub fn status(pid: Option<i32>, json: bool) -> Result<i32, Error> {
    let mut c = connect(pid)?;
    let mut v = c.request(&Request::Status)?;
    if let Value::Object(m) = &mut v {
        m.remove("v");
        m.remove("ok");
    }
    let mut out = std::io::stdout().lock();
    if json {
        let text = crate::printable_json(serde_json::to_string_pretty(&v).expect("json"));
        writeln!(out, "{text}").map_err(io_err)?;
        return Ok(exit::OK);
    }
    let heading = bold(&format!("process {} ({})", c.pid, client::comm(c.pid)));
    out.write_all(status_text(&v, &heading).as_bytes())
        .map_err(io_err)?;
    Ok(exit::OK)
}

/// `status`'s text for the agent's reply `v`, under `heading`.
pub fn status_text(v: &Value, heading: &str) -> String {
    let enabled: Vec<String> = v["enabled"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(|s| printable(s).into_owned()))
        .collect();
    let mut s = String::new();
    let _ = writeln!(s, "{heading}");
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
        "threads:   {} with buffers; {} events per new buffer; {} KiB mapped in {} shared \
         segment(s)",
        v["threads"],
        v["buffer_events"],
        v["buffer_bytes"].as_u64().unwrap_or(0) / 1024,
        v["arena_segments"].as_u64().unwrap_or(0)
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
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn many_changed_names_are_counted() {
        let few: Vec<String> = (0..3).map(|i| format!("f{i}")).collect();
        assert_eq!(
            changed_text("enabled", &few),
            "enabled f0\nenabled f1\nenabled f2\n"
        );
        let many: Vec<String> = (0..30).map(|i| format!("f{i}")).collect();
        assert_eq!(
            changed_text("disabled", &many),
            "disabled 30 functions: f0, f1, f2, f3, f4, ... (`tracer status --json` lists them all)\n"
        );
    }

    #[test]
    fn exact_names_are_split_under_the_request_limit() {
        let names: Vec<String> = (0..200_000).map(|i| format!("f{i}")).collect();
        let max = client::MAX_REQUEST - 1024;
        let pats = exact_name_patterns(&names, max);
        assert!(pats.len() > 1, "{}", pats.len());
        let mut back = Vec::new();
        for p in &pats {
            let req = Request::Disable {
                pattern: Some(p.clone()),
            };
            let body = serde_json::to_vec(&req.to_json()).unwrap();
            assert!(body.len() <= max + 100 && body.len() <= client::MAX_REQUEST);
            back.extend(p.split(' ').map(|q| q.trim_matches('"').to_string()));
        }
        assert_eq!(back, names);
        // Escapes count as they are sent; a name over the limit goes alone.
        let odd = vec!["a\"b".to_string(), "\u{1}".repeat(100), "c".into()];
        let pats = exact_name_patterns(&odd, 200);
        assert_eq!(pats.len(), 3, "{pats:?}");
        assert_eq!(pats[1], format!("\"{}\"", "\u{1}".repeat(100)));
        assert!(exact_name_patterns(&[], 10).is_empty());
        assert_eq!(exact_name_patterns(&odd, 1 << 20).len(), 1);
    }

    #[test]
    fn status_text_names_invisible_threads_once_per_reason() {
        let v = json!({
            "enabled": ["app::a", "app::b"], "clock": "tsc", "ticks_per_ns": 2.5,
            "sync": "membarrier", "threads": 2, "buffer_events": 262144,
            "buffer_bytes": 4096, "dropped": 0, "unmatched": 1, "nested": 0,
            "reader_attached": false,
            "threads_detail": [
                {"tid": 1, "capacity": 8, "pending": 0, "written": 5, "dropped": 0},
                {"tid": 2, "capacity": 8, "pending": 0, "written": 5, "dropped": 0,
                 "not_visible": "no memfd"},
                {"tid": 3, "capacity": 8, "pending": 0, "written": 5, "dropped": 0,
                 "not_visible": "no memfd"},
            ],
        });
        let t = status_text(&v, "process 1 (app)");
        assert!(t.starts_with("process 1 (app)\n"), "{t}");
        assert!(
            t.contains("enabled:   2 function(s): app::a, app::b\n"),
            "{t}"
        );
        assert!(t.contains("clock:     tsc (2.5000 ticks/ns); core sync: membarrier"));
        assert!(t.contains("threads:   2 with buffers; 262144 events per new buffer; 4 KiB mapped"));
        assert!(t.contains("live, not visible to tracer"), "{t}");
        assert_eq!(
            t.matches("not visible: 2 thread(s): no memfd").count(),
            1,
            "{t}"
        );
    }
}
