//! Prometheus native histograms of call durations: exact counts of the
//! durations (in seconds) that fall in each exponential bucket of schema
//! [`SCHEMA`] (3: each power of two split into 8 buckets, so a bucket's
//! upper bound is `2^(1/8)` ≈ 1.0905 times its lower bound).
//!
//! Bucket `k` holds the durations `d` (seconds) with
//! `2^((k-1)/8) < d <= 2^(k/8)` (upper bound inclusive, as Prometheus
//! defines them); a duration of 0 goes to the zero bucket. A quantile read
//! from these buckets lies in the bucket of the true value: within 9.05 %
//! of it (`2^(1/8) - 1`).
//!
//! Storage is sparse: one `(key, count)` pair per bucket that has calls, in
//! key order. Durations from 1 ns to 100 s span at most 293 keys; a typical
//! function uses a few dozen.

/// The bucket schema: `2^SCHEMA` buckets per power of two.
pub const SCHEMA: i32 = 3;

/// Width of the zero bucket, seconds (`2^-128`, what Prometheus's own
/// client libraries use): only durations of 0 fall in it. Non-zero, so an
/// empty histogram is still recognised as a native one.
pub const ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;

/// `2^(j/8 - 1)` for `j` in `0..8`: the bucket boundaries between 0.5 and 1
/// (correctly rounded), against which the fraction of `frexp` is placed.
const FRACTIONS: [f64; 8] = [
    0.5,
    0.545_253_866_332_628_8,
    0.594_603_557_501_360_5,
    0.648_419_777_325_504_8,
    std::f64::consts::FRAC_1_SQRT_2,
    0.771_105_412_703_970_4,
    0.840_896_415_253_714_5,
    0.917_004_043_204_671_2,
];

/// Largest relative error of a quantile read from the buckets:
/// `2^(1/8) - 1`.
pub const RELATIVE_ERROR: f64 = 0.090_507_732_665_257_69;

/// `v = frac * 2^exp` with `frac` in `[0.5, 1)`, for a positive, finite,
/// normal `v` (C's `frexp`; std has none in Rust 1.85).
fn frexp(v: f64) -> (f64, i32) {
    let bits = v.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1022;
    let frac = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    (frac, exp)
}

/// `2^e`, exactly (built from its bits: `powi` may be off by an ulp,
/// and is under Miri).
pub fn pow2(e: i32) -> f64 {
    if e > 1023 {
        f64::INFINITY
    } else if e >= -1022 {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else if e >= -1074 {
        // Subnormal: exact too.
        f64::from_bits(1u64 << (e + 1074))
    } else {
        0.0
    }
}

/// The key of the bucket that holds `seconds` (> 0, finite).
pub fn key(seconds: f64) -> i32 {
    if seconds < f64::MIN_POSITIVE {
        // Subnormal: below every bucket a duration can reach; the first
        // bucket of the normal range holds it.
        return (f64::MIN_EXP - 1) * (1 << SCHEMA);
    }
    let (frac, exp) = frexp(seconds);
    let i = FRACTIONS.partition_point(|&b| b < frac) as i32;
    i + (exp - 1) * (1 << SCHEMA)
}

/// The key of the bucket that holds a duration of `ns` nanoseconds (> 0).
pub fn key_ns(ns: u64) -> i32 {
    key(ns as f64 / 1e9)
}

/// Bucket `k`'s bounds in seconds: `(lower, upper]`.
pub fn bounds(k: i32) -> (f64, f64) {
    let upper = |k: i32| {
        let (q, r) = (k.div_euclid(1 << SCHEMA), k.rem_euclid(1 << SCHEMA));
        FRACTIONS[r as usize] * pow2(q + 1)
    };
    (upper(k - 1), upper(k))
}

/// One run of consecutive buckets: `offset` from the end of the previous
/// run (from key 0 for the first), `length` buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Gap to the previous span (the first span: its first key).
    pub offset: i32,
    /// Consecutive buckets in it.
    pub length: u32,
}

/// A native histogram of durations (counts only: count and sum travel with
/// the fixed histogram they are exported with).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NativeHist {
    /// `(key, count)` of every bucket with calls, by key.
    buckets: Vec<(i32, u64)>,
    /// Durations of 0.
    zero: u64,
}

impl NativeHist {
    /// An empty histogram.
    pub const fn new() -> NativeHist {
        NativeHist {
            buckets: Vec::new(),
            zero: 0,
        }
    }

    /// Add one duration of `ns` nanoseconds.
    pub fn record(&mut self, ns: u64) {
        self.record_n(ns, 1);
    }

    /// Add `n` durations of `ns` nanoseconds.
    pub fn record_n(&mut self, ns: u64, n: u64) {
        if ns == 0 {
            self.zero += n;
            return;
        }
        let k = key_ns(ns);
        match self.buckets.binary_search_by_key(&k, |b| b.0) {
            Ok(i) => self.buckets[i].1 += n,
            Err(i) => self.buckets.insert(i, (k, n)),
        }
    }

    /// Buckets with calls, `(key, count)` by key.
    pub fn buckets(&self) -> &[(i32, u64)] {
        &self.buckets
    }

    /// Durations of 0 (the zero bucket).
    pub fn zero_count(&self) -> u64 {
        self.zero
    }

    /// Durations recorded.
    pub fn count(&self) -> u64 {
        self.zero + self.buckets.iter().map(|b| b.1).sum::<u64>()
    }

    /// Forget every duration (keeps the memory).
    pub fn reset(&mut self) {
        self.buckets.clear();
        self.zero = 0;
    }

    /// The buckets as Prometheus's protobuf exposition carries them: runs
    /// of buckets (gaps of one or two empty buckets are filled with zeros,
    /// cheaper than a new span) and, for each bucket of the runs in order,
    /// its count minus the previous bucket's (the first: minus 0).
    pub fn spans_deltas(&self) -> (Vec<Span>, Vec<i64>) {
        let mut spans: Vec<Span> = Vec::new();
        let mut deltas = Vec::with_capacity(self.buckets.len());
        let mut prev_key = 0i32;
        let mut prev_count = 0i64;
        for (i, &(k, n)) in self.buckets.iter().enumerate() {
            let gap = if i == 0 { None } else { Some(k - prev_key - 1) };
            match gap {
                Some(g) if g <= 2 => {
                    for _ in 0..g {
                        deltas.push(-prev_count);
                        prev_count = 0;
                    }
                    if let Some(s) = spans.last_mut() {
                        s.length += g as u32 + 1;
                    }
                }
                Some(g) => spans.push(Span {
                    offset: g,
                    length: 1,
                }),
                None => spans.push(Span {
                    offset: k,
                    length: 1,
                }),
            }
            deltas.push(n as i64 - prev_count);
            prev_count = n as i64;
            prev_key = k;
        }
        (spans, deltas)
    }

    /// The buckets with calls described by `spans` and `deltas` (what
    /// [`spans_deltas`](Self::spans_deltas) makes), `(key, count)` by key;
    /// `None` if they do not fit together (more buckets in the spans than
    /// deltas, or the reverse, or a negative count).
    pub fn from_spans(spans: &[Span], deltas: &[i64]) -> Option<Vec<(i32, u64)>> {
        let mut out = Vec::new();
        let mut d = deltas.iter();
        let mut key = 0i32;
        let mut count = 0i64;
        for (i, s) in spans.iter().enumerate() {
            key = if i == 0 {
                s.offset
            } else {
                key.checked_add(s.offset)?.checked_add(1)?
            };
            for j in 0..s.length {
                if j > 0 {
                    key = key.checked_add(1)?;
                }
                count = count.checked_add(*d.next()?)?;
                if count < 0 {
                    return None;
                }
                if count > 0 {
                    out.push((key, count as u64));
                }
            }
        }
        if d.next().is_some() {
            return None;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_schema() {
        // Powers of two are upper bounds of their bucket (inclusive).
        assert_eq!(key(1.0), 0);
        assert_eq!(key(2.0), 8);
        assert_eq!(key(0.5), -8);
        assert_eq!(key(1.0 + 1e-12), 1);
        assert_eq!(key(0.999_999), 0);
        // 2^-9 s = 1953125 ns, exactly.
        assert_eq!(key_ns(1_953_125), -72);
        assert_eq!(key_ns(1_953_126), -71);
        // Every key's bounds hold what it is the key of.
        for k in -240..60 {
            let (lo, hi) = bounds(k);
            assert!(lo < hi);
            assert_eq!(key(hi), k, "upper bound of {k}");
            assert_eq!(key(lo), k - 1, "lower bound of {k}");
            let mid = (lo + hi) / 2.0;
            assert_eq!(key(mid), k);
            assert!((hi / lo - 2f64.powf(0.125)).abs() < 1e-12);
        }
        // 1 ns .. 100 s.
        assert_eq!(key_ns(1), -239);
        assert_eq!(key_ns(100_000_000_000), 54);
        assert!((RELATIVE_ERROR - (2f64.powf(0.125) - 1.0)).abs() < 1e-12);
        assert_eq!(pow2(0), 1.0);
        assert_eq!(pow2(-128), ZERO_THRESHOLD);
        assert_eq!(pow2(-1074), f64::from_bits(1));
        assert_eq!(pow2(3), 8.0);
        assert_eq!(pow2(-1), 0.5);
    }

    #[test]
    fn frexp_splits() {
        for v in [1.0, 0.75, 3.0, 1e-9, 123.456, f64::MIN_POSITIVE] {
            let (f, e) = frexp(v);
            assert!((0.5..1.0).contains(&f), "{v}: {f}");
            assert_eq!(f * pow2(e), v);
        }
    }

    #[test]
    fn spans_and_deltas_reconstruct_the_counts() {
        let mut h = NativeHist::new();
        assert_eq!(h.spans_deltas(), (vec![], vec![]));
        // Keys 0 (1 s) x3, 1 x1, 3 x2 (gap of 1: filled), 10 x5 (gap of 6:
        // a new span), and a zero.
        for (ns, n) in [
            (1_000_000_000u64, 3u64),
            (1_050_000_000, 1),
            (1_250_000_000, 2),
            (2_300_000_000, 5),
            (0, 1),
        ] {
            h.record_n(ns, n);
        }
        assert_eq!(h.buckets(), &[(0, 3), (1, 1), (3, 2), (10, 5)]);
        assert_eq!(h.zero_count(), 1);
        assert_eq!(h.count(), 12);
        let (spans, deltas) = h.spans_deltas();
        assert_eq!(
            spans,
            [
                Span {
                    offset: 0,
                    length: 4
                },
                Span {
                    offset: 6,
                    length: 1
                }
            ]
        );
        assert_eq!(deltas, [3, -2, -1, 2, 3]);
        assert_eq!(
            NativeHist::from_spans(&spans, &deltas).unwrap(),
            h.buckets()
        );
        // Mismatched input is refused.
        assert_eq!(NativeHist::from_spans(&spans, &deltas[..4]), None);
        assert_eq!(NativeHist::from_spans(&spans, &[3, -5, 0, 0, 0]), None);
    }

    #[test]
    fn many_durations_round_trip() {
        let mut h = NativeHist::new();
        let mut x = 12345u64;
        let mut want = std::collections::BTreeMap::new();
        let n = if cfg!(miri) { 200 } else { 20_000 };
        for _ in 0..n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // 1 ns .. ~70 s, log-spread.
            let ns = 1 + ((x >> 11) % (1 << ((x >> 3) % 36)));
            h.record(ns);
            *want.entry(key_ns(ns)).or_insert(0u64) += 1;
            let (lo, hi) = bounds(key_ns(ns));
            let s = ns as f64 / 1e9;
            assert!(lo < s && s <= hi, "{ns} ns outside ({lo}, {hi}]");
        }
        assert_eq!(h.count(), n);
        let got: Vec<(i32, u64)> = want.into_iter().collect();
        assert_eq!(h.buckets(), &got[..]);
        let (spans, deltas) = h.spans_deltas();
        assert_eq!(NativeHist::from_spans(&spans, &deltas).unwrap(), got);
        assert_eq!(
            spans.iter().map(|s| s.length as usize).sum::<usize>(),
            deltas.len()
        );
    }
}
