//! What the Prometheus `/metrics` endpoints expose, shared by `tracer serve`
//! (which renders with the `prometheus-client` crate) and the runtime's
//! in-process endpoint (`TRACER_METRICS`, rendered here by [`Text`] so the
//! runtime needs no dependency).
//!
//! Besides the text formats, both endpoints write Prometheus's protobuf
//! exposition ([`proto`]) when the scraper asks for it, whose histograms
//! also carry native (sparse, exponential) buckets ([`native`]).
//!
//! Latency histograms have fixed buckets, 1-2-5 per decade from 100 ns to
//! 100 s ([`BOUNDS_NS`]; 28 bounds and `+Inf`), so `histogram_quantile` has at
//! worst a factor of 2.5 between neighbouring bounds and every series of every
//! process has the same `le` values (they aggregate across a fleet).
//!
//! Metric names (labels `function` (full path), `pid`, `exe`):
//!
//! | name | type | meaning |
//! | --- | --- | --- |
//! | [`CALLS`]`_total` | counter | calls that returned |
//! | [`DURATION`]`_seconds` | histogram | their durations |
//! | [`NOT_RETURNED`]`_total` | counter | calls that never returned (left by `longjmp`, entry-only) |
//! | [`DROPPED`]`_total` | counter | events lost to full rings (per process): figures are low |
//! | [`LEFT_OUT`]`_total` | counter | functions not exported because of the per-process cap |
//! | [`UP`] | gauge | 1 while the process is read, 0 once it ended |

use std::fmt::Write as _;

pub mod native;
pub mod proto;

/// Upper bounds of the fixed latency buckets, ns: 1-2-5 per decade, 100 ns
/// to 100 s (`+Inf` is implicit).
pub const BOUNDS_NS: [u64; 28] = {
    let mut b = [0u64; 28];
    let mut i = 0;
    let mut decade = 100u64;
    while i < 27 {
        b[i] = decade;
        b[i + 1] = decade * 2;
        b[i + 2] = decade * 5;
        decade *= 10;
        i += 3;
    }
    b[27] = decade;
    b
};

/// Buckets of a [`FixedHist`]: one per bound and `+Inf`.
pub const BUCKETS: usize = BOUNDS_NS.len() + 1;

/// Name of the call counter (a counter: `_total` is added).
pub const CALLS: &str = "tracer_function_calls";
/// Name of the latency histogram (unit seconds: `_seconds` is added).
pub const DURATION: &str = "tracer_function_duration";
/// Name of the counter of calls that never returned.
pub const NOT_RETURNED: &str = "tracer_function_not_returned";
/// Name of the counter of events lost to full rings.
pub const DROPPED: &str = "tracer_dropped_events";
/// Name of the counter of functions left out by the cardinality cap.
pub const LEFT_OUT: &str = "tracer_functions_left_out";
/// Name of the gauge saying whether a process is still read.
pub const UP: &str = "tracer_process_up";

/// Help texts, by name.
pub const HELP_CALLS: &str = "Calls of a traced function that returned.";
/// See [`DURATION`].
pub const HELP_DURATION: &str = "Durations of the calls of a traced function that returned.";
/// See [`NOT_RETURNED`].
pub const HELP_NOT_RETURNED: &str =
    "Calls of a traced function that never returned (left by longjmp or an exception, or entry-only).";
/// See [`DROPPED`].
pub const HELP_DROPPED: &str =
    "Events lost to full per-thread rings: when it grows, counts and histograms are low.";
/// See [`LEFT_OUT`].
pub const HELP_LEFT_OUT: &str =
    "Functions with calls not exported because of the per-process label cardinality cap.";
/// See [`UP`].
pub const HELP_UP: &str = "1 while the process is read, 0 after it ended (its last figures stay).";

/// The bucket of a duration of `ns`: the first bound `>= ns`, or the last
/// (`+Inf`) bucket.
pub fn bucket(ns: u64) -> usize {
    BOUNDS_NS.partition_point(|&b| b < ns)
}

/// Bound `i` in seconds, as decimal text (`0.0000001`, `2.5`, `100`): exact,
/// so every process writes the same `le` label.
pub fn bound_text(i: usize) -> String {
    seconds_text(BOUNDS_NS[i])
}

/// `ns` nanoseconds as seconds in decimal text, exactly.
pub fn seconds_text(ns: u64) -> String {
    let (s, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
    if frac == 0 {
        return s.to_string();
    }
    let f = format!("{frac:09}");
    format!("{s}.{}", f.trim_end_matches('0'))
}

/// A latency histogram over the fixed buckets, with exact count and sum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedHist {
    /// Calls per bucket (not cumulative).
    pub counts: [u64; BUCKETS],
    /// Calls.
    pub count: u64,
    /// Sum of the durations, ns.
    pub sum_ns: u128,
}

impl Default for FixedHist {
    fn default() -> FixedHist {
        FixedHist {
            counts: [0; BUCKETS],
            count: 0,
            sum_ns: 0,
        }
    }
}

impl FixedHist {
    /// Add one duration.
    pub fn record(&mut self, ns: u64) {
        self.counts[bucket(ns)] += 1;
        self.count += 1;
        self.sum_ns += u128::from(ns);
    }

    /// The fixed buckets rebuilt from a [`LogHist`](crate::loghist::LogHist):
    /// each of its buckets `[low, high)` goes where `low` goes, so only a
    /// value less than one fine bucket (1/64 of it) above a bound can be
    /// counted below the bound. Count and sum are the histogram's own.
    pub fn from_loghist(h: &crate::loghist::LogHist) -> FixedHist {
        let mut f = FixedHist::default();
        for (low, _, n) in h.buckets() {
            f.counts[bucket(low)] += n;
        }
        f.count = h.count();
        f.sum_ns = h.sum();
        f
    }
}

/// Escape a label value for the text formats: `\`, `"` and newline.
pub fn escape_label(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A minimal writer of Prometheus's text exposition format (version 0.0.4),
/// for the runtime's in-process endpoint.
#[derive(Default)]
pub struct Text {
    /// The text so far.
    pub out: String,
}

impl Text {
    /// `# HELP` and `# TYPE` lines of a metric family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|l| ("le", l))) {
            if !first {
                self.out.push(',');
            }
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_label(v, &mut self.out);
            self.out.push('"');
        }
        self.out.push('}');
    }

    /// One sample of an integer metric.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: u64) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {v}");
    }

    /// The samples of histogram `name` (`_bucket`, `_sum` in seconds, `_count`).
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &FixedHist) {
        let mut cum = 0u64;
        for (i, n) in h.counts.iter().enumerate() {
            cum += n;
            let le = if i < BOUNDS_NS.len() {
                bound_text(i)
            } else {
                "+Inf".to_string()
            };
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cum}");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", h.sum_ns as f64 / 1e9);
        self.sample(&format!("{name}_count"), labels, h.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_1_2_5_from_100ns_to_100s() {
        assert_eq!(BOUNDS_NS[0], 100);
        assert_eq!(BOUNDS_NS[1], 200);
        assert_eq!(BOUNDS_NS[2], 500);
        assert_eq!(BOUNDS_NS[27], 100_000_000_000);
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(bound_text(0), "0.0000001");
        assert_eq!(bound_text(27), "100");
        assert_eq!(seconds_text(2_500_000_000), "2.5");
    }

    #[test]
    fn values_go_to_the_first_bound_at_or_above() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(100), 0);
        assert_eq!(bucket(101), 1);
        assert_eq!(bucket(100_000_000_000), 27);
        assert_eq!(bucket(100_000_000_001), 28);
        let mut h = FixedHist::default();
        for v in [50, 150, 150, 1_000_000] {
            h.record(v);
        }
        assert_eq!(h.count, 4);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[1], 2);
        assert_eq!(h.sum_ns, 1_000_350);
    }

    #[test]
    fn rebuilt_from_a_loghist() {
        let mut l = crate::loghist::LogHist::new();
        for v in [50u64, 150, 150, 1_000_000, 3_000] {
            l.record(v);
        }
        let f = FixedHist::from_loghist(&l);
        assert_eq!(f.count, 5);
        assert_eq!(f.counts.iter().sum::<u64>(), 5);
        assert_eq!(f.counts[bucket(1_000_000)], 1);
        assert_eq!(f.sum_ns, l.sum());
    }

    #[test]
    fn text_escapes_labels() {
        let mut t = Text::default();
        t.family("x_total", "counter", "help");
        t.sample("x_total", &[("function", "a\"b\\c\nd")], 3);
        assert!(
            t.out.contains("x_total{function=\"a\\\"b\\\\c\\nd\"} 3\n"),
            "{}",
            t.out
        );
        let mut h = FixedHist::default();
        h.record(150);
        t.histogram("d_seconds", &[("pid", "1")], &h);
        assert!(t
            .out
            .contains("d_seconds_bucket{pid=\"1\",le=\"0.0000002\"} 1\n"));
        assert!(t
            .out
            .contains("d_seconds_bucket{pid=\"1\",le=\"+Inf\"} 1\n"));
        assert!(t.out.contains("d_seconds_count{pid=\"1\"} 1\n"));
    }
}
