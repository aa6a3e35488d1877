//! A compact latency histogram: log-linear buckets, stored sparsely.
//!
//! Values below 64 have a bucket each (exact). Above, every power of two is
//! split into 64 equal buckets, so a bucket `[lo, lo + w)` has `w / lo ≤
//! 1/64`, and a quantile reported at its bucket's midpoint is within
//! **0.8 %** of the true value (≤ 1/128, relative). Count, sum, minimum and
//! maximum are exact, and quantiles are clamped to the exact extremes.
//!
//! Only buckets that hold a value take memory (10 bytes each, in two sorted
//! arrays), so a function whose calls take between 1 µs and 1 ms, a spread
//! of ten powers of two, costs at most 6.4 KB and usually far less: a
//! typical distribution fills a few dozen buckets. A dense histogram of the
//! same precision over 1 ns–1 h (HdrHistogram with three significant
//! digits) costs about 16 KB before its first value, which a program with
//! 10^5 enabled functions cannot afford.
//!
//! Bucket keys are also what [`LogHist::buckets`] gives out, so exporters
//! (log2 charts, Prometheus) can rebuild coarser histograms exactly.

/// Sub-buckets per power of two, as a shift.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

/// The bucket of a value.
pub fn key(v: u64) -> u16 {
    if v < SUB {
        return v as u16;
    }
    let e = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = (v >> (e - SUB_BITS)) & (SUB - 1);
    (((e - SUB_BITS + 1) as u64) << SUB_BITS | sub) as u16
}

/// The values of bucket `k`: `[low, high)` (`high` saturates at `u64::MAX`).
pub fn bounds(k: u16) -> (u64, u64) {
    let k = u64::from(k);
    if k < SUB {
        return (k, k + 1);
    }
    let e = (k >> SUB_BITS) + u64::from(SUB_BITS) - 1;
    let sub = k & (SUB - 1);
    let w = 1u64 << (e - u64::from(SUB_BITS));
    let low = (1u64 << e) | (sub * w);
    (low, low.saturating_add(w))
}

/// The power-of-two bucket of a value: `i` holds the values in
/// `[2^i, 2^(i+1))`, and bucket 0 also holds 0. The one log2 of the runtime's
/// `log2_histogram` and the program's charts.
pub fn log2_bucket(v: u64) -> usize {
    63 - v.max(1).leading_zeros() as usize
}

/// A histogram in power-of-two buckets (see [`log2_bucket`]), as ftrace's
/// hist triggers and bpftrace draw them: [`LogHist::log2`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log2 {
    /// Values per bucket, by [`log2_bucket`].
    pub counts: [u64; 64],
}

impl Log2 {
    /// The buckets from the first to the last non-empty one (`None` when
    /// every bucket is empty).
    pub fn used(&self) -> Option<std::ops::RangeInclusive<usize>> {
        let first = self.counts.iter().position(|&c| c > 0)?;
        let last = self.counts.iter().rposition(|&c| c > 0)?;
        Some(first..=last)
    }
}

/// The percentiles every latency summary shows (the runtime's `latency`,
/// `tracer hist`, `tracer report`), each within 0.8 % (see
/// [`LogHist::quantile`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
}

impl Percentiles {
    /// Each percentile clamped to `[min, max]` (extremes known exactly from
    /// elsewhere). Panics if `min > max`.
    pub fn clamp(self, min: u64, max: u64) -> Percentiles {
        Percentiles {
            p50: self.p50.clamp(min, max),
            p90: self.p90.clamp(min, max),
            p99: self.p99.clamp(min, max),
            p999: self.p999.clamp(min, max),
        }
    }
}

/// A latency histogram (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct LogHist {
    keys: Vec<u16>,
    counts: Vec<u64>,
    /// Where the last value went: a function's calls often take alike
    /// times, so the next value is likely in the same bucket.
    last: u32,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl PartialEq for LogHist {
    /// Equal when they hold the same values (whatever was recorded last).
    fn eq(&self, o: &LogHist) -> bool {
        (self.keys == o.keys && self.counts == o.counts)
            && (self.count, self.sum, self.min, self.max) == (o.count, o.sum, o.min, o.max)
    }
}

impl Eq for LogHist {}

impl LogHist {
    /// An empty histogram (no allocation until the first value).
    pub const fn new() -> LogHist {
        LogHist {
            keys: Vec::new(),
            counts: Vec::new(),
            last: 0,
            count: 0,
            sum: 0,
            min: 0,
            max: 0,
        }
    }

    /// Add one value.
    pub fn record(&mut self, v: u64) {
        self.record_n(v, 1);
    }

    /// Add `n` values `v`.
    pub fn record_n(&mut self, v: u64, n: u64) {
        if n == 0 {
            return;
        }
        self.add_to(key(v), n);
        if self.count == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count = self.count.saturating_add(n);
        self.sum = self.sum.saturating_add(u128::from(v) * u128::from(n));
    }

    fn add_to(&mut self, k: u16, n: u64) {
        let last = self.last as usize;
        if self.keys.get(last) == Some(&k) {
            self.counts[last] = self.counts[last].saturating_add(n);
            return;
        }
        match self.keys.binary_search(&k) {
            Ok(i) => {
                self.counts[i] = self.counts[i].saturating_add(n);
                self.last = i as u32;
            }
            Err(i) => {
                self.keys.insert(i, k);
                self.counts.insert(i, n);
                self.last = i as u32;
            }
        }
    }

    /// Add every value of `other`.
    pub fn merge(&mut self, other: &LogHist) {
        if other.count == 0 {
            return;
        }
        for (&k, &n) in other.keys.iter().zip(&other.counts) {
            self.add_to(k, n);
        }
        if self.count == 0 {
            self.min = other.min;
            self.max = other.max;
        } else {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        self.count = self.count.saturating_add(other.count);
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// Forget every value, keeping the memory.
    pub fn reset(&mut self) {
        self.keys.clear();
        self.counts.clear();
        self.last = 0;
        self.count = 0;
        self.sum = 0;
        self.min = 0;
        self.max = 0;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// No value recorded?
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Smallest value (exact; 0 when empty).
    pub fn min(&self) -> u64 {
        self.min
    }

    /// Largest value (exact; 0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Sum of the values (exact, saturating).
    pub fn sum(&self) -> u128 {
        self.sum
    }

    /// Mean (exact up to integer division; 0 when empty).
    pub fn mean(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            (self.sum / u128::from(self.count)).min(u128::from(u64::MAX)) as u64
        }
    }

    /// The value at quantile `q` (0.0–1.0): the midpoint of the bucket
    /// holding the value of rank `ceil(q · count)`, within 0.8 % of it, and
    /// clamped to the exact minimum and maximum (so `q = 0` and `q = 1` are
    /// exact). 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        if q <= 0.0 {
            return self.min;
        }
        if q >= 1.0 {
            return self.max;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (&k, &n) in self.keys.iter().zip(&self.counts) {
            seen = seen.saturating_add(n);
            if seen >= rank {
                let (lo, hi) = bounds(k);
                let mid = lo + (hi - lo - 1) / 2;
                return mid.clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// The latency summary's percentiles (all 0 when empty).
    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            p50: self.quantile(0.5),
            p90: self.quantile(0.9),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
        }
    }

    /// The values in power-of-two buckets, rebuilt exactly from the finer
    /// ones (no fine bucket straddles a power of two).
    pub fn log2(&self) -> Log2 {
        let mut counts = [0u64; 64];
        for (low, _, n) in self.buckets() {
            let b = &mut counts[log2_bucket(low)];
            *b = b.saturating_add(n);
        }
        Log2 { counts }
    }

    /// The non-empty buckets, ascending: `(low, high, count)`, values in
    /// `[low, high)`.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.keys.iter().zip(&self.counts).map(|(&k, &n)| {
            let (lo, hi) = bounds(k);
            (lo, hi, n)
        })
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.keys.capacity() * 2 + self.counts.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_in_its_bucket() {
        let mut v = 0u64;
        let mut last = 0u16;
        while v < u64::MAX / 3 {
            let k = key(v);
            let (lo, hi) = bounds(k);
            assert!(lo <= v && v < hi, "{v}: [{lo}, {hi})");
            assert!(k >= last, "keys are monotonic");
            last = k;
            // Relative width bounded above 64.
            if v >= SUB {
                assert!((hi - lo) * 64 <= lo, "{v}: [{lo}, {hi})");
            }
            v = v + 1 + v / 37;
        }
        assert_eq!(bounds(key(u64::MAX)).1, u64::MAX);
        for k in 0..key(u64::MAX) {
            // Buckets tile the line.
            assert_eq!(bounds(k).1, bounds(k + 1).0, "{k}");
        }
    }

    #[test]
    fn quantiles_within_a_known_error() {
        let mut h = LogHist::new();
        let mut exact: Vec<u64> = Vec::new();
        let mut x = 12345u64;
        let n = if cfg!(miri) { 2_000 } else { 100_000 };
        for _ in 0..n {
            // xorshift: a spread of values over many powers of two.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = 1 + (x % 1_000_000) * (1 + x % 977);
            h.record(v);
            exact.push(v);
        }
        exact.sort_unstable();
        for q in [0.0, 0.01, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let rank = ((q * exact.len() as f64).ceil() as usize).clamp(1, exact.len());
            let want = exact[rank - 1] as f64;
            let got = h.quantile(q) as f64;
            assert!(
                (got - want).abs() <= want / 128.0 + 1.0,
                "q {q}: {got} vs {want}"
            );
        }
        assert_eq!(h.min(), exact[0]);
        assert_eq!(h.max(), *exact.last().unwrap());
        assert_eq!(h.count(), n);
        assert_eq!(h.sum(), exact.iter().map(|&v| v as u128).sum::<u128>());
        let total: u64 = h.buckets().map(|b| b.2).sum();
        assert_eq!(total, n);
    }

    #[test]
    fn small_values_are_exact_and_memory_is_sparse() {
        let mut h = LogHist::new();
        assert_eq!(h.heap_bytes(), 0);
        assert_eq!(h.quantile(0.5), 0);
        for v in [3, 3, 3, 7] {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 3);
        assert_eq!(h.quantile(0.99), 7);
        assert_eq!(h.mean(), 4);
        // A million calls between 1 µs and 2 µs (every value twice under
        // Miri): at most 64 buckets.
        let mut g = LogHist::new();
        for i in 0..if cfg!(miri) { 2_000 } else { 1_000_000u64 } {
            g.record(1000 + i % 1000);
        }
        assert!(g.buckets().count() <= 64);
        assert!(g.heap_bytes() <= 64 * 10 * 2, "{}", g.heap_bytes());
    }

    #[test]
    fn log2_buckets_are_exact_and_percentiles_ordered() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 0);
        assert_eq!(log2_bucket(2), 1);
        assert_eq!(log2_bucket(1023), 9);
        assert_eq!(log2_bucket(1024), 10);
        assert_eq!(log2_bucket(u64::MAX), 63);
        let mut h = LogHist::new();
        assert_eq!(h.log2().used(), None);
        assert_eq!(h.percentiles(), Percentiles::default());
        let mut want = [0u64; 64];
        let n = if cfg!(miri) { 2_000 } else { 200_000u64 };
        for v in (0..n).map(|i| i * i % 9_999_991) {
            h.record(v);
            want[log2_bucket(v)] += 1;
        }
        let l = h.log2();
        assert_eq!(l.counts, want);
        let r = l.used().unwrap();
        assert_eq!((*r.start(), *r.end()), (0, log2_bucket(h.max())));
        let p = h.percentiles();
        assert!(h.min() <= p.p50 && p.p50 <= p.p90 && p.p90 <= p.p99);
        assert!(p.p99 <= p.p999 && p.p999 <= h.max());
        assert_eq!(p.p99, h.quantile(0.99));
        let c = p.clamp(p.p90, p.p99);
        assert_eq!((c.p50, c.p90, c.p99, c.p999), (p.p90, p.p90, p.p99, p.p99));
    }

    #[test]
    fn merging_equals_recording_together() {
        let (mut a, mut b, mut both) = (LogHist::new(), LogHist::new(), LogHist::new());
        for v in 1..5000u64 {
            let v = v * v;
            if v % 3 == 0 {
                a.record(v);
            } else {
                b.record(v);
            }
            both.record(v);
        }
        a.merge(&b);
        assert_eq!(a, both);
        a.reset();
        assert!(a.is_empty());
        a.merge(&LogHist::new());
        assert!(a.is_empty());
    }
}
