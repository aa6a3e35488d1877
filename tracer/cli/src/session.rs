//! Collection sessions: drain a process's rings until Ctrl-C, a
//! `--duration`, the process's end or the caller's own stop, and turn the
//! events into a trace ([`trace`]), histograms ([`hist`]) or a recording
//! ([`record`]). `tracer run` and the demo drive the same sessions.

use crate::calls::Call;
use crate::client::{Client, Request};
use crate::control::set_on_capture;
use crate::graph::{self, Printer};
use crate::hist::{self, Hists};
use crate::list::{each_listed, resolve_indices};
use crate::out::{bold, io_err, out, stopped};
use crate::reader::Reader;
use crate::{exit, printable, record, Error};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use tracer_core::event::Event;

/// Why a collection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Ctrl-C, SIGTERM, or the output went away.
    Interrupted,
    /// The excerpt asked for was shown (`demo`).
    Excerpt,
    /// `--duration` reached.
    Duration,
    /// The process ended (or the caller's `stop()` said so).
    Ended,
}

impl End {
    /// How a summary line says it.
    pub fn text(self, pid: i32) -> String {
        match self {
            End::Interrupted => "interrupted".into(),
            End::Excerpt => "excerpt shown".into(),
            End::Duration => "duration reached".into(),
            End::Ended => format!("process {pid} ended"),
        }
    }
}

/// Receives each drained batch; returns false to stop.
pub type Sink<'a> = dyn FnMut(&Reader, &[(u64, Event)]) -> bool + 'a;

/// Drain `reader` (time-sorted batches if `sorted`, else thread by thread)
/// until Ctrl-C, `duration`, the process's end or `stop()`,
/// handing each batch to `each` (which returns false to stop early).
pub fn pump(
    reader: &mut Reader,
    sorted: bool,
    duration: Option<Duration>,
    stop: &mut dyn FnMut() -> bool,
    each: &mut Sink<'_>,
) -> Result<End, Error> {
    let start = Instant::now();
    // A session's requests may run until its duration plus the margin
    // ([`crate::control::connect_for`]), counted from here: setting it up
    // (10^5 functions resolved and enabled, their names read) may have
    // taken seconds of it, and its last requests then ran out of time.
    if let (Some(d), Some(c)) = (duration, reader.client()) {
        c.move_deadline(start.checked_add(d + crate::control::DEADLINE_MARGIN));
    }
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
        let end = if stopped() {
            Some(End::Interrupted)
        } else if duration.is_some_and(|d| start.elapsed() >= d) {
            Some(End::Duration)
        } else if reader.ended() || stop() {
            Some(End::Ended)
        } else {
            None
        };
        if let Some(end) = end {
            // What the mapped rings hold still; no request to the process:
            // the session's time may be up (a slow consumer overruns it),
            // and with it the requests' deadline.
            buf.clear();
            reader.drain_mapped(&mut buf)?;
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
pub fn lost_events(reader: &Reader) -> u64 {
    reader.losses().iter().map(|l| l.dropped).sum()
}

/// Events lost to full rings, per thread, and what to do about it.
pub fn losses_text(reader: &Reader) -> String {
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
pub const LOSS_HINT: &str = "Give threads bigger rings (tracer run --buffer EVENTS, or \
     TRACER_BUFFER_EVENTS in the program's environment) or enable fewer functions";

/// Say so on stderr when nothing is enabled in the process (nothing
/// would be seen).
pub fn enabled_hint(reader: &mut Reader) {
    let pid = reader.pid;
    if let Some(c) = reader.client() {
        if let Ok(v) = c.request(&Request::Status) {
            if v["enabled"].as_array().is_some_and(|a| a.is_empty()) {
                eprintln!(
                    "tracer: note: no function is enabled in process {pid}; run `tracer enable PATTERN -p {pid}` to see calls"
                );
            }
        }
    }
}

/// `--where` of `trace`, `hist`, `record` (and `run`): only matching calls.
static WHERE: std::sync::OnceLock<crate::values::Cond> = std::sync::OnceLock::new();

/// Set `--where` for this command's session.
pub fn set_where(c: Option<crate::values::Cond>) {
    if let Some(c) = c {
        let _ = WHERE.set(c);
    }
}

/// `--where`'s filter, checked first against the functions `pattern`
/// selects (every listed one without a pattern) that have debug
/// information: a condition that cannot apply is an error naming what the
/// function has.
fn where_filter(
    c: &mut Client,
    w: &crate::values::Cond,
    pattern: Option<&str>,
) -> Result<WhereFilter, Error> {
    let mut sigs = crate::values::Signatures::default();
    each_listed(c, None, &mut |f| {
        sigs.add_function(f);
        Ok(())
    })?;
    let mut f = crate::values::Filter::new(w.clone(), sigs);
    if let Some(p) = pattern {
        let idx = resolve_indices(c, p)?;
        for i in idx {
            let name = f.sigs.name_of(i);
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
    f: crate::values::Filter,
}

impl WhereFilter {
    fn feed(&mut self, tid: u64, e: &Event) -> (crate::values::Seen, Option<bool>) {
        self.f.feed(tid, e)
    }
}

/// Stream a trace; `max_lines` stops printing (not collecting) after that many.
pub fn trace(
    reader: &mut Reader,
    opts: graph::Options,
    duration: Option<Duration>,
    stop: &mut dyn FnMut() -> bool,
    max_lines: Option<u64>,
) -> Result<End, Error> {
    enabled_hint(reader);
    let mut printer = Printer::new(reader.names.clone(), reader.ticks_per_ns, opts);
    if let Some(c) = reader.client() {
        let mut sigs = crate::values::Signatures::default();
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
    let end = if stopped() { End::Interrupted } else { end };
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

/// Histograms of the functions passing `keep`: a table and a log2 chart
/// each, or (`json`) one JSON array of [`hist::Summary`].
pub fn print_hists(
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

/// `tracer hist` on the process behind `c` (also `run --hist` and the
/// demo): with `pattern`, enables those functions for the collection
/// (disabled again after) and shows only them.
pub fn hist(
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
            let patterns = std::slice::from_ref(p);
            // --where on values: the functions this enables capture what
            // the condition looks at. Functions enabled already keep their
            // state and capture (they are left enabled at the end).
            let cap = match WHERE.get() {
                Some(w) => crate::control::capture_needed(&mut c, patterns, &w.capture_flags())?,
                None => tracer_core::capture::Capture::NONE,
            };
            let changed = set_on_capture(&mut c, patterns, true, true, true, cap.encode(), true)?;
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
    let mut walker = crate::calls::Walker::new();
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
            let _ = crate::control::disable_exact(&mut c, &changed);
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
        if matched == 0 && calls > 0 {
            writeln!(
                out(),
                "# (a call without captured values never matches: functions enabled before \
                 this command keep how they were enabled; `tracer enable PATTERN --args \
                 --retval` captures their values)"
            )
            .map_err(io_err)?;
        }
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

/// `tracer record`: the process behind `c` to the file `output`.
pub fn record(c: Client, output: &Path, duration: Option<Duration>) -> Result<i32, Error> {
    let file = record::create(output)?;
    record_to_file(c, output, file, duration, &mut || false)
}

/// Record the process behind `c` into `file` (created at `output`) until
/// `duration`, Ctrl-C, the process's end or `stop()`.
pub fn record_to_file(
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
        .and_then(|c| c.request(&Request::Hello { names: false }).ok())
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
    let mut signatures = Vec::new();
    if let Some(c) = reader.client() {
        let _ = each_listed(c, None, &mut |f| {
            if let (true, Some(i), Some(s)) = (
                f["enabled"].as_bool().unwrap_or(false),
                f["index"].as_u64(),
                f["signature"].as_str(),
            ) {
                signatures.push((i as u32, s.to_string()));
            }
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
        signatures,
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
                    if let (crate::values::Seen::Exit(a, r), Some(true)) = f.feed(tid, e) {
                        kept.extend(crate::values::call_events(e, a.as_deref(), r));
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
