//! Reports and exports of a recording.
//!
//! - [`rows`]: calls, total, self, avg, p50, p99, max per function. *Self* is
//!   the total minus the time spent in traced callees (nesting comes from the
//!   events' depth). Calls that never returned (`longjmp`, see
//!   [`crate::calls`]) are counted among the calls and in `not_returned`;
//!   the times are those of the calls that returned.
//! - [`chrome`]: Chrome trace event JSON (`ph: "X"` complete events, `ts` and
//!   `dur` in microseconds relative to the first event), which Perfetto and
//!   `chrome://tracing` open. A call left without returning is a complete
//!   event up to when it was known to be over, with `args.returned: false`;
//!   one still running at the end is a `B` event with no `E`.
//! - [`folded`]: folded stacks, `outer;inner SELF_NS` per line, the input of
//!   flamegraph.pl and inferno; the weight is self time in nanoseconds.

use crate::calls::{Call, Walker};
use crate::hist::FuncHist;
use crate::record::Recording;
use crate::Error;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write;

/// One function's line in a report; times in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Full path.
    pub name: String,
    /// Calls: returned, left without returning, and still running at the
    /// end of the recording.
    pub calls: u64,
    /// Of `calls`, those left without returning (`longjmp` out of them) or
    /// still running at the end: not in the times.
    #[serde(default)]
    pub not_returned: u64,
    /// Total time inside.
    pub total: u64,
    /// Total minus time in traced callees.
    #[serde(rename = "self")]
    pub self_ns: u64,
    /// Mean.
    pub avg: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Longest.
    pub max: u64,
    /// Events the recording lost to full rings (all functions and threads;
    /// the same in every row): when not 0 the figures are low.
    pub lost_events: u64,
    /// For a function recorded with captured values: its slowest call
    /// with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slowest: Option<SlowCall>,
    /// For a function recorded with its return value captured: its
    /// commonest return values (as shown) and how often, most first (at
    /// most 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub returns: Vec<(String, u64)>,
}

/// A call with its captured values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlowCall {
    /// Duration (ns).
    pub dur: u64,
    /// Its arguments as shown (`len=5000, flags=0`), if captured.
    pub args: Option<String>,
    /// Its return value as shown (`-22 (EINVAL)`), if captured.
    pub ret: Option<String>,
}

/// Fill in the rows' captured values ([`Row::slowest`], [`Row::returns`])
/// from the calls that have some (a second pass over the recording).
pub fn add_values(rec: &Recording, rows: &mut [Row]) -> Result<(), Error> {
    let mut by_func: HashMap<u32, (Option<SlowCall>, HashMap<String, u64>)> = HashMap::new();
    walk_values(rec, |c, args, ret| {
        let Call::Returned { func, dur, .. } = c else {
            return;
        };
        if args.is_none() && ret.is_none() {
            return;
        }
        let e = by_func.entry(func).or_default();
        let dur = rec.ns(dur);
        if e.0.as_ref().is_none_or(|s| dur > s.dur) {
            e.0 = Some(SlowCall {
                dur,
                args: args.map(str::to_string),
                ret: ret.map(str::to_string),
            });
        }
        if let Some(r) = ret {
            *e.1.entry(r.to_string()).or_default() += 1;
        }
    })?;
    for (f, (slow, rets)) in by_func {
        let name = rec.name(f);
        let Some(row) = rows.iter_mut().find(|r| r.name == name) else {
            continue;
        };
        row.slowest = slow;
        let mut rets: Vec<(String, u64)> = rets.into_iter().collect();
        rets.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        rets.truncate(5);
        row.returns = rets;
    }
    Ok(())
}

/// The text of the rows' captured values, under the table ("" if none).
pub fn values_text(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        if r.slowest.is_none() && r.returns.is_empty() {
            continue;
        }
        if out.is_empty() {
            out.push_str("\n# captured values: each function's slowest call, and its commonest return values\n");
        }
        if let Some(s) = &r.slowest {
            let _ = write!(
                out,
                "{}  slowest {}: {}({})",
                r.name,
                crate::dur::human_ns(s.dur),
                r.name,
                s.args.as_deref().unwrap_or("")
            );
            if let Some(v) = &s.ret {
                let _ = write!(out, " = {v}");
            }
            out.push('\n');
        }
        if !r.returns.is_empty() {
            let list: Vec<String> = r.returns.iter().map(|(v, n)| format!("{v} ×{n}")).collect();
            let _ = writeln!(out, "{}  returns: {}", r.name, list.join(", "));
        }
    }
    out
}

/// Keys `report --sort` accepts.
pub const SORT_KEYS: &[&str] = &["total", "self", "calls", "avg", "p50", "p99", "max", "name"];

/// Walk every call of a recording (see [`crate::calls`]), streaming it.
fn walk(rec: &Recording, mut f: impl FnMut(Call<'_>)) -> Result<(), Error> {
    let mut w = Walker::new();
    rec.each_event(|tid, e| w.feed(tid, e, &mut f))?;
    w.finish(&mut f);
    Ok(())
}

/// [`walk`], with each returned call's captured values as shown
/// (`len=3, flags=2`, and the return value), when it has some.
fn walk_values(
    rec: &Recording,
    mut f: impl FnMut(Call<'_>, Option<&str>, Option<&str>),
) -> Result<(), Error> {
    use crate::values::{Seen, Signatures, Tracker};
    let mut w = Walker::new();
    let mut sigs = Signatures::from_recording(&rec.header);
    let mut threads: HashMap<u64, Tracker> = HashMap::new();
    rec.each_event_all(|tid, e| {
        let (args, ret) = match threads.entry(tid).or_default().feed(e) {
            Seen::Values | Seen::Other => return,
            Seen::Entry(_) => (None, None),
            Seen::Exit(a, r) => (
                a.map(|a| sigs.args(e.func, &a)),
                r.and_then(|r| sigs.ret(e.func, r)),
            ),
        };
        w.feed(tid, e, &mut |c| {
            let this =
                matches!(c, Call::Returned { func, end, .. } if func == e.func && end == e.ts);
            if this {
                f(c, args.as_deref(), ret.as_deref())
            } else {
                f(c, None, None)
            }
        })
    })?;
    w.finish(&mut |c| f(c, None, None));
    Ok(())
}

/// Per-function rows, sorted by total time, longest first.
pub fn rows(rec: &Recording) -> Result<Vec<Row>, Error> {
    // (durations, self ticks, total ticks, calls not returned): totals are
    // summed in ticks and converted once, so self == total exactly for a
    // function without callees.
    let mut hists: BTreeMap<u32, (FuncHist, u64, u64, u64)> = BTreeMap::new();
    walk(rec, |c| match c {
        Call::Returned { func, dur, own, .. } => {
            let e = hists.entry(func).or_default();
            e.0.record(rec.ns(dur));
            // Saturating: a damaged or hostile recording may hold any value.
            e.1 = e.1.saturating_add(own);
            e.2 = e.2.saturating_add(dur);
        }
        Call::Left { func, .. } | Call::Running { func, .. } | Call::Untracked { func } => {
            hists.entry(func).or_default().3 += 1;
        }
    })?;
    let lost_events = rec.lost_events();
    let mut v: Vec<Row> = hists
        .iter()
        .map(|(f, (h, own, total, gone))| {
            let s = h.summary(rec.name(*f));
            let total = rec.ns(*total);
            Row {
                name: s.name,
                calls: s.count.saturating_add(*gone),
                not_returned: *gone,
                total,
                self_ns: rec.ns(*own),
                avg: total / s.count.max(1),
                p50: s.p50,
                p99: s.p99,
                max: s.max,
                lost_events,
                slowest: None,
                returns: Vec::new(),
            }
        })
        .collect();
    sort(&mut v, "total").expect("a known key");
    Ok(v)
}

/// Sort rows by `key` (see [`SORT_KEYS`]): numbers largest first, names A–Z.
pub fn sort(rows: &mut [Row], key: &str) -> Result<(), String> {
    let k: fn(&Row) -> u64 = match key {
        "total" => |r| r.total,
        "self" => |r| r.self_ns,
        "calls" => |r| r.calls,
        "avg" => |r| r.avg,
        "p50" => |r| r.p50,
        "p99" => |r| r.p99,
        "max" => |r| r.max,
        "name" => {
            rows.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(());
        }
        other => {
            return Err(format!(
                "unknown sort key '{other}': use one of {}",
                SORT_KEYS.join(", ")
            ))
        }
    };
    rows.sort_by(|a, b| k(b).cmp(&k(a)).then(a.name.cmp(&b.name)));
    Ok(())
}

/// Rows as a table.
pub fn table(rows: &[Row]) -> String {
    let h = crate::dur::human_ns;
    let table: Vec<crate::FunctionRow<'_>> = rows
        .iter()
        .map(|r| {
            let c = [r.total, r.self_ns, r.avg, r.p50, r.p99, r.max].map(h);
            (r.name.as_str(), r.calls, r.not_returned, c)
        })
        .collect();
    let mut out = crate::function_table(
        [
            "function", "calls", "total", "self", "avg", "p50", "p99", "max",
        ],
        &table,
    );
    // The column of calls that never returned is there only when some are.
    let noret = rows.iter().any(|r| r.not_returned > 0);
    if noret {
        out.push_str(
            "# no-return: calls left without returning (longjmp, or still running at the end); the times are those of the calls that returned\n",
        );
    }
    out
}

/// The earliest time in the recording (a call's start, or an event).
fn start_ts(rec: &Recording) -> Result<u64, Error> {
    let mut t0 = u64::MAX;
    rec.each_event(|_, e| t0 = t0.min(e.ts.saturating_sub(e.dur)))?;
    Ok(if t0 == u64::MAX { 0 } else { t0 })
}

/// Write Chrome trace event JSON to `w`, streaming (two passes over the
/// recording: its start, then the calls). Returns the events written.
pub fn chrome(rec: &Recording, w: &mut impl Write) -> Result<u64, Error> {
    let t0 = start_ts(rec)?;
    let pid = rec.header.pid;
    let tpn = rec.ticks_per_ns();
    let us = |ticks: u64| (ticks as f64 / tpn) / 1000.0;
    let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let mut err: Option<std::io::Error> = None;
    let mut n = 0u64;
    let mut put = |line: std::fmt::Arguments<'_>| {
        if err.is_none() {
            let sep = if n == 0 { "" } else { ",\n" };
            if let Err(e) = write!(w, "{sep}{line}") {
                err = Some(e);
            }
            n += 1;
        }
    };
    put(format_args!(
        r#"{{"name":"process_name","ph":"M","pid":{pid},"tid":0,"args":{{"name":{}}}}}"#,
        q(&rec.header.exe)
    ));
    let mut named: std::collections::HashSet<u64> = Default::default();
    let mut names: HashMap<u32, String> = HashMap::new();
    walk_values(rec, |c, args, ret| {
        let tid = match c {
            Call::Returned { tid, .. } | Call::Left { tid, .. } | Call::Running { tid, .. } => tid,
            Call::Untracked { .. } => return,
        };
        if named.insert(tid) {
            if let Some(t) = rec.thread_name(tid) {
                put(format_args!(
                    r#"{{"name":"thread_name","ph":"M","pid":{pid},"tid":{tid},"args":{{"name":{}}}}}"#,
                    q(t)
                ));
            }
        }
        let func = match c {
            Call::Returned { func, .. } | Call::Left { func, .. } | Call::Running { func, .. } => {
                func
            }
            Call::Untracked { func } => func,
        };
        let name = names.entry(func).or_insert_with(|| q(rec.name(func)));
        match c {
            Call::Returned { end, dur, .. } if args.is_some() || ret.is_some() => {
                let mut a = serde_json::Map::new();
                if let Some(s) = args {
                    a.insert("args".into(), s.into());
                }
                if let Some(s) = ret {
                    a.insert("ret".into(), s.into());
                }
                put(format_args!(
                    r#"{{"name":{name},"cat":"function","ph":"X","ts":{},"dur":{},"pid":{pid},"tid":{tid},"args":{}}}"#,
                    us(end.saturating_sub(dur).saturating_sub(t0)),
                    us(dur),
                    serde_json::Value::Object(a)
                ))
            }
            Call::Returned { end, dur, .. } => put(format_args!(
                r#"{{"name":{name},"cat":"function","ph":"X","ts":{},"dur":{},"pid":{pid},"tid":{tid}}}"#,
                us(end.saturating_sub(dur).saturating_sub(t0)),
                us(dur)
            )),
            Call::Left { entered, left, .. } => put(format_args!(
                r#"{{"name":{name},"cat":"function","ph":"X","ts":{},"dur":{},"pid":{pid},"tid":{tid},"args":{{"returned":false}}}}"#,
                us(entered.saturating_sub(t0)),
                us(left - entered)
            )),
            Call::Running { entered, .. } => put(format_args!(
                r#"{{"name":{name},"cat":"function","ph":"B","ts":{},"pid":{pid},"tid":{tid}}}"#,
                us(entered.saturating_sub(t0))
            )),
            Call::Untracked { .. } => {}
        }
    })?;
    let io = |e: std::io::Error| Error::failed(format!("cannot write the trace: {e}"));
    if let Some(e) = err {
        return Err(io(e));
    }
    Ok(n)
}

/// [`chrome`] into a JSON document (tests and small recordings).
pub fn chrome_value(rec: &Recording) -> Result<Value, Error> {
    let mut body = Vec::new();
    write_chrome(rec, &mut body)?;
    Ok(serde_json::from_slice(&body).expect("the export is JSON"))
}

/// The whole Chrome trace document: `{"traceEvents":[...], ...}`.
pub fn write_chrome(rec: &Recording, w: &mut impl Write) -> Result<u64, Error> {
    let io = |e: std::io::Error| Error::failed(format!("cannot write the trace: {e}"));
    writeln!(w, "{{\"traceEvents\":[").map_err(io)?;
    let n = chrome(rec, w)?;
    let pid = rec.header.pid;
    let exe = serde_json::to_string(&rec.header.exe).expect("a string serializes");
    write!(
        w,
        "\n],\"displayTimeUnit\":\"ns\",\"otherData\":{{\"tool\":\"tracer\",\"pid\":{pid},\"exe\":{exe}}}}}\n"
    )
    .map_err(io)?;
    Ok(n)
}

/// Folded stacks.
pub fn folded(rec: &Recording) -> Result<String, Error> {
    let mut acc: BTreeMap<String, u64> = BTreeMap::new();
    walk(rec, |c| {
        if let Call::Returned { own, path, .. } = c {
            let key: Vec<_> = path
                .iter()
                .map(|f| crate::folded_frame(rec.name(*f)))
                .collect();
            let e = acc.entry(key.join(";")).or_default();
            *e = e.saturating_add(rec.ns(own));
        }
    })?;
    let mut out = String::new();
    for (k, v) in acc {
        if v > 0 {
            let _ = writeln!(out, "{k} {v}");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Header;
    use tracer_core::event::{Event, KIND_ENTRY, KIND_EXIT};

    fn ev(ts: u64, dur: u64, func: u32, depth: u16, kind: u8) -> Event {
        Event {
            ts,
            dur,
            func,
            depth,
            kind,
            flags: 0,
        }
    }

    fn sample() -> Recording {
        let mut rec = Recording::default();
        rec.header = Header {
            pid: 1,
            exe: "x".into(),
            clock: "monotonic".into(),
            ticks_per_ns: 1.0,
            functions: vec!["outer".into(), "inner".into()],
            origins: Vec::new(),
            signatures: Vec::new(),
        };
        rec.events = vec![
            (5, ev(1000, 0, 0, 0, KIND_ENTRY)),
            (5, ev(1100, 0, 1, 1, KIND_ENTRY)),
            (5, ev(1400, 300, 1, 1, KIND_EXIT)),
            (5, ev(1500, 0, 1, 1, KIND_ENTRY)),
            (5, ev(1600, 100, 1, 1, KIND_EXIT)),
            (5, ev(2000, 1000, 0, 0, KIND_EXIT)),
        ];
        rec
    }

    #[test]
    fn self_time_excludes_callees() {
        let r = rows(&sample()).unwrap();
        assert_eq!(r[0].name, "outer");
        assert_eq!((r[0].calls, r[0].total, r[0].self_ns), (1, 1000, 600));
        assert_eq!(
            (r[1].calls, r[1].total, r[1].self_ns, r[1].max),
            (2, 400, 400, 300)
        );
        let mut r2 = r.clone();
        sort(&mut r2, "calls").unwrap();
        assert_eq!(r2[0].name, "inner");
        assert!(sort(&mut r2, "bogus").unwrap_err().contains("total"));
    }

    #[test]
    fn exports() {
        let rec = sample();
        assert_eq!(folded(&rec).unwrap(), "outer 600\nouter;inner 400\n");
        let c = chrome_value(&rec).unwrap();
        let evs = c["traceEvents"].as_array().unwrap();
        let x: Vec<&Value> = evs.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(x.len(), 3);
        let outer = x.iter().find(|e| e["name"] == "outer").unwrap();
        assert_eq!(outer["ts"].as_f64(), Some(0.0));
        assert_eq!(outer["dur"].as_f64(), Some(1.0));
    }

    #[test]
    fn calls_left_by_longjmp_are_counted_and_exported() {
        let mut rec = sample();
        // outer { throw { (longjmp) } } then outer's next callee, outer returns.
        rec.header.functions.push("throw".into());
        rec.events = vec![
            (5, ev(1000, 0, 0, 0, KIND_ENTRY)),
            (5, ev(1100, 0, 2, 1, KIND_ENTRY)),
            (5, ev(1300, 0, 1, 1, KIND_ENTRY)),
            (5, ev(1400, 100, 1, 1, KIND_EXIT)),
            (5, ev(2000, 1000, 0, 0, KIND_EXIT)),
            (5, ev(2100, 0, 2, 0, KIND_ENTRY)),
        ];
        let r = rows(&rec).unwrap();
        let throw = r.iter().find(|r| r.name == "throw").unwrap();
        assert_eq!((throw.calls, throw.not_returned, throw.total), (2, 2, 0));
        let outer = r.iter().find(|r| r.name == "outer").unwrap();
        assert_eq!((outer.calls, outer.not_returned), (1, 0));
        assert!(table(&r).contains("no-return"));
        let c = chrome_value(&rec).unwrap();
        let evs = c["traceEvents"].as_array().unwrap();
        let left: Vec<&Value> = evs
            .iter()
            .filter(|e| e["args"]["returned"] == false)
            .collect();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["name"], "throw");
        assert_eq!(left[0]["dur"].as_f64(), Some(0.2));
        assert_eq!(evs.iter().filter(|e| e["ph"] == "B").count(), 1);
        // A report without such calls keeps its columns.
        assert!(!table(&rows(&sample()).unwrap()).contains("no-return"));
    }
}
