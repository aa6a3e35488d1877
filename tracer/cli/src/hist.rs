//! Per-function latency histograms: percentiles (within 0.8 %, see
//! `tracer_core::loghist`; count, minimum and maximum exact) and log2 bars.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use tracer_core::loghist::LogHist;

/// One function's latency summary, in nanoseconds (the `hist --json` shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Full path.
    pub name: String,
    /// Completed calls seen.
    pub count: u64,
    /// Calls seen entering that never returned (left by `longjmp`): not in
    /// the times.
    #[serde(default)]
    pub not_returned: u64,
    /// Shortest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Longest.
    pub max: u64,
    /// Events the whole session lost to full rings (all functions and
    /// threads; the same in every row): when not 0 the counts are low.
    #[serde(default)]
    pub lost_events: u64,
}

/// Durations of one function.
#[derive(Default)]
pub struct FuncHist {
    h: LogHist,
    gone: u64,
}

impl FuncHist {
    /// Add one duration.
    pub fn record(&mut self, ns: u64) {
        self.h.record(ns.max(1));
    }

    /// Count one call that never returned.
    pub fn left(&mut self) {
        self.gone += 1;
    }

    /// Calls recorded.
    pub fn count(&self) -> u64 {
        self.h.count()
    }

    /// Calls that never returned.
    pub fn not_returned(&self) -> u64 {
        self.gone
    }

    /// Total time, ns.
    pub fn sum(&self) -> u64 {
        self.h.sum().min(u64::MAX as u128) as u64
    }

    /// Value at quantile `q` (exact min and max at the ends).
    pub fn quantile(&self, q: f64) -> u64 {
        self.h.quantile(q)
    }

    /// The summary of this function under `name`.
    pub fn summary(&self, name: &str) -> Summary {
        let p = self.h.percentiles();
        Summary {
            name: name.to_string(),
            count: self.count(),
            not_returned: self.gone,
            min: self.h.min(),
            p50: p.p50,
            p90: p.p90,
            p99: p.p99,
            p999: p.p999,
            max: self.h.max(),
            lost_events: 0,
        }
    }

    /// A log2 bar chart as bpftrace's `hist()` draws it.
    pub fn chart(&self, width: usize) -> String {
        let mut out = String::new();
        let log2 = self.h.log2();
        let Some(used) = log2.used() else {
            return out;
        };
        let top = *log2.counts.iter().max().unwrap_or(&1);
        for b in used {
            let c = log2.counts[b];
            let bar = ((c as f64 / top as f64) * width as f64).round() as usize;
            let bar = if c > 0 { bar.max(1) } else { 0 };
            let range = format!(
                "[{}, {})",
                unit(1u64 << b),
                unit(1u64.checked_shl(b as u32 + 1).unwrap_or(u64::MAX))
            );
            let _ = writeln!(
                out,
                "{range:<16} {c:>10} |{}{}|",
                "@".repeat(bar),
                " ".repeat(width - bar)
            );
        }
        out
    }
}

fn unit(v: u64) -> String {
    const U: [(u64, &str); 4] = [
        (1 << 60, "E"),
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
    ];
    for (d, s) in U {
        if v >= d && v % d == 0 {
            return format!("{}{s}", v / d);
        }
    }
    if v >= 1 << 10 && v % (1 << 10) == 0 {
        return format!("{}K", v >> 10);
    }
    v.to_string()
}

/// Histograms of every function seen, by index (a slot per index, so a
/// call costs no map lookup).
#[derive(Default)]
pub struct Hists {
    funcs: Vec<Option<FuncHist>>,
}

impl Hists {
    fn slot(&mut self, func: u32) -> &mut FuncHist {
        let i = func as usize;
        if self.funcs.len() <= i {
            self.funcs.resize_with(i + 1, || None);
        }
        self.funcs[i].get_or_insert_with(FuncHist::default)
    }

    /// Add one duration of function `func`.
    pub fn record(&mut self, func: u32, ns: u64) {
        self.slot(func).record(ns);
    }

    /// Count one call of `func` that never returned.
    pub fn left(&mut self, func: u32) {
        self.slot(func).left();
    }

    /// The functions with a histogram, by index.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &FuncHist)> {
        self.funcs
            .iter()
            .enumerate()
            .filter_map(|(i, h)| Some((i as u32, h.as_ref()?)))
    }

    /// Summaries of the functions with at least one call whose index passes
    /// `keep`, sorted by name.
    pub fn summaries(&self, names: &[String], keep: impl Fn(u32) -> bool) -> Vec<Summary> {
        let mut v: Vec<Summary> = self
            .iter()
            .filter(|(f, h)| keep(*f) && (h.count() > 0 || h.not_returned() > 0))
            .map(|(f, h)| h.summary(names.get(f as usize).map_or("?", |s| s.as_str())))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

/// A table of summaries (times in a human unit).
pub fn table(rows: &[Summary]) -> String {
    let h = crate::dur::human_ns;
    let rows: Vec<crate::FunctionRow<'_>> = rows
        .iter()
        .map(|r| {
            let c = [r.min, r.p50, r.p90, r.p99, r.p999, r.max].map(h);
            (r.name.as_str(), r.count, r.not_returned, c)
        })
        .collect();
    crate::function_table(
        [
            "function", "count", "min", "p50", "p90", "p99", "p99.9", "max",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_buckets() {
        let mut h = FuncHist::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let s = h.summary("f");
        assert_eq!(s.count, 1000);
        assert_eq!(s.min, 1000);
        assert_eq!(s.max, 1_000_000);
        // Within the histogram's stated error (0.8 %) of the true median.
        assert!(s.p50.abs_diff(500_000) <= 500_000 / 128, "{s:?}");
        assert!(s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.p999 && s.p999 <= s.max);
        let c = h.chart(20);
        assert!(c.starts_with("[512, 1K)"), "{c}");
        assert!(c.contains("[512K, 1M)"), "{c}");
        assert!(c.lines().all(|l| l.ends_with('|')));
    }

    #[test]
    fn units() {
        assert_eq!(unit(512), "512");
        assert_eq!(unit(1024), "1K");
        assert_eq!(unit(1 << 20), "1M");
        assert_eq!(unit(3 << 30), "3G");
    }
}
