//! Reports and exports of a recording.
//!
//! - [`rows`]: calls, total, self, avg, p50, p99, max per function. *Self* is
//!   the total minus the time spent in traced callees (nesting comes from the
//!   events' depth).
//! - [`chrome`]: Chrome trace event JSON (`ph: "X"` complete events, `ts` and
//!   `dur` in microseconds relative to the first event), which Perfetto and
//!   `chrome://tracing` open.
//! - [`folded`]: folded stacks, `outer;inner SELF_NS` per line, the input of
//!   flamegraph.pl and inferno; the weight is self time in nanoseconds.

use crate::hist::FuncHist;
use crate::record::Recording;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use tracer_core::event::{KIND_ENTRY, KIND_EXIT};

/// One function's line in a report; times in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Full path.
    pub name: String,
    /// Completed calls.
    pub calls: u64,
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
}

/// Keys `report --sort` accepts.
pub const SORT_KEYS: &[&str] = &["total", "self", "calls", "avg", "p50", "p99", "max", "name"];

/// Walk completed calls: `f(tid, func, dur_ticks, self_ticks, path)` where
/// `path` is the known call stack (function indices, outermost first, ending
/// with `func`).
fn walk(rec: &Recording, mut f: impl FnMut(u64, u32, u64, u64, &[u32])) {
    #[derive(Default)]
    struct T {
        acc: Vec<u64>,
        stack: Vec<u32>,
    }
    let mut threads: HashMap<u64, T> = HashMap::new();
    for (tid, e) in &rec.events {
        let t = threads.entry(*tid).or_default();
        let d = e.depth as usize;
        if t.acc.len() < d + 2 {
            t.acc.resize(d + 2, 0);
        }
        match e.kind {
            KIND_ENTRY => {
                t.acc[d + 1] = 0;
                t.stack.truncate(d);
                if t.stack.len() == d {
                    t.stack.push(e.func);
                } else {
                    t.stack.clear();
                }
            }
            KIND_EXIT => {
                let children = std::mem::take(&mut t.acc[d + 1]);
                let own = e.dur.saturating_sub(children);
                t.acc[d] = t.acc[d].saturating_add(e.dur);
                if t.stack.len() > d && t.stack[d] == e.func {
                    f(*tid, e.func, e.dur, own, &t.stack[..=d]);
                } else {
                    f(*tid, e.func, e.dur, own, &[e.func]);
                }
                t.stack.truncate(d);
            }
            _ => {}
        }
    }
}

/// Per-function rows, sorted by total time, longest first.
pub fn rows(rec: &Recording) -> Vec<Row> {
    // (durations, self ticks, total ticks): totals are summed in ticks and
    // converted once, so self == total exactly for a function without callees.
    let mut hists: BTreeMap<u32, (FuncHist, u64, u64)> = BTreeMap::new();
    walk(rec, |_, func, dur, own, _| {
        let e = hists.entry(func).or_default();
        e.0.record(rec.ns(dur));
        e.1 += own;
        e.2 += dur;
    });
    let lost_events = rec.lost_events();
    let mut v: Vec<Row> = hists
        .iter()
        .map(|(f, (h, own, total))| {
            let s = h.summary(rec.name(*f));
            let total = rec.ns(*total);
            Row {
                name: s.name,
                calls: s.count,
                total,
                self_ns: rec.ns(*own),
                avg: total / s.count.max(1),
                p50: s.p50,
                p99: s.p99,
                max: s.max,
                lost_events,
            }
        })
        .collect();
    sort(&mut v, "total").expect("a known key");
    v
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
    let name = |r: &str| crate::elide(r, crate::NAME_COLUMN).into_owned();
    let w = rows
        .iter()
        .map(|r| name(&r.name).chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    let h = crate::dur::human_ns;
    let mut out = format!(
        "{:<w$} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "function", "calls", "total", "self", "avg", "p50", "p99", "max"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<w$} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            name(&r.name),
            r.calls,
            h(r.total),
            h(r.self_ns),
            h(r.avg),
            h(r.p50),
            h(r.p99),
            h(r.max)
        );
    }
    out
}

fn start_ts(rec: &Recording) -> u64 {
    rec.events
        .iter()
        .map(|(_, e)| e.ts.saturating_sub(e.dur))
        .min()
        .unwrap_or(0)
}

/// Chrome trace event JSON.
pub fn chrome(rec: &Recording) -> Value {
    let t0 = start_ts(rec);
    let pid = rec.header.pid;
    let mut evs = vec![json!({
        "name": "process_name", "ph": "M", "pid": pid, "tid": 0,
        "args": {"name": rec.header.exe},
    })];
    let us = |ticks: u64| (ticks as f64 / rec.ticks_per_ns()) / 1000.0;
    for (tid, e) in &rec.events {
        if e.kind != KIND_EXIT {
            continue;
        }
        let start = e.ts.saturating_sub(e.dur);
        evs.push(json!({
            "name": rec.name(e.func),
            "cat": "function",
            "ph": "X",
            "ts": us(start - t0),
            "dur": us(e.dur),
            "pid": pid,
            "tid": tid,
        }));
    }
    json!({
        "traceEvents": evs,
        "displayTimeUnit": "ns",
        "otherData": {"tool": "tracer", "pid": pid, "exe": rec.header.exe},
    })
}

/// Folded stacks.
pub fn folded(rec: &Recording) -> String {
    let mut acc: BTreeMap<String, u64> = BTreeMap::new();
    walk(rec, |_, _, _, own, path| {
        let key: Vec<_> = path
            .iter()
            .map(|f| crate::folded_frame(rec.name(*f)))
            .collect();
        *acc.entry(key.join(";")).or_default() += rec.ns(own);
    });
    let mut out = String::new();
    for (k, v) in acc {
        if v > 0 {
            let _ = writeln!(out, "{k} {v}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Header;
    use tracer_core::event::Event;

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
        Recording {
            header: Header {
                pid: 1,
                exe: "x".into(),
                clock: "monotonic".into(),
                ticks_per_ns: 1.0,
                functions: vec!["outer".into(), "inner".into()],
            },
            trailer: None,
            events: vec![
                (5, ev(1000, 0, 0, 0, KIND_ENTRY)),
                (5, ev(1100, 0, 1, 1, KIND_ENTRY)),
                (5, ev(1400, 300, 1, 1, KIND_EXIT)),
                (5, ev(1500, 0, 1, 1, KIND_ENTRY)),
                (5, ev(1600, 100, 1, 1, KIND_EXIT)),
                (5, ev(2000, 1000, 0, 0, KIND_EXIT)),
            ],
        }
    }

    #[test]
    fn self_time_excludes_callees() {
        let r = rows(&sample());
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
        assert_eq!(folded(&rec), "outer 600\nouter;inner 400\n");
        let c = chrome(&rec);
        let evs = c["traceEvents"].as_array().unwrap();
        let x: Vec<&Value> = evs.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(x.len(), 3);
        let outer = x.iter().find(|e| e["name"] == "outer").unwrap();
        assert_eq!(outer["ts"].as_f64(), Some(0.0));
        assert_eq!(outer["dur"].as_f64(), Some(1.0));
    }
}
