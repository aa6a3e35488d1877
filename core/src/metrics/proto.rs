//! Prometheus's protobuf exposition (`io.prometheus.client`, the
//! `metrics.proto` of `prometheus/client_model`): the few message types a
//! `/metrics` endpoint writes, declared by hand with `prost`'s derive (same
//! field numbers, types and proto2 encoding as the published schema; no
//! `protoc` at build time), and [`Writer`], which both `tracer serve` and
//! the runtime's `TRACER_METRICS` endpoint render with.
//!
//! The body is a sequence of length-delimited `MetricFamily` messages
//! ([`CONTENT_TYPE`]). Histograms carry both the classic buckets (the fixed
//! bounds of [`super::BOUNDS_NS`], so `histogram_quantile` over `_bucket`
//! works as with the text format) and the native sparse buckets
//! ([`super::native`]).

use super::native::{self, NativeHist};
use super::{FixedHist, BOUNDS_NS};
use prost::Message;

/// The media type of the delimited protobuf exposition, as scrapers ask for
/// it in `Accept` and as the reply's `Content-Type` says.
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// A label: `name="value"`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    /// Label name.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Label value.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// The type of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    /// Uses [`Metric::counter`].
    Counter = 0,
    /// Uses [`Metric::gauge`].
    Gauge = 1,
    /// A summary (not written here).
    Summary = 2,
    /// Untyped (not written here).
    Untyped = 3,
    /// Uses [`Metric::histogram`].
    Histogram = 4,
    /// A gauge histogram (not written here).
    GaugeHistogram = 5,
}

/// A gauge's value.
#[derive(Clone, PartialEq, Message)]
pub struct Gauge {
    /// The value.
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

/// A counter's value (exemplar and created timestamp are not written).
#[derive(Clone, PartialEq, Message)]
pub struct Counter {
    /// The value.
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

/// One classic histogram bucket.
#[derive(Clone, PartialEq, Message)]
pub struct Bucket {
    /// Observations at or below `upper_bound` (cumulative).
    #[prost(uint64, optional, tag = "1")]
    pub cumulative_count: Option<u64>,
    /// Inclusive upper bound.
    #[prost(double, optional, tag = "2")]
    pub upper_bound: Option<f64>,
}

/// A run of native buckets (see [`native::Span`]).
#[derive(Clone, PartialEq, Message)]
pub struct BucketSpan {
    /// Gap to the previous span, or the first key for the first span.
    #[prost(sint32, optional, tag = "1")]
    pub offset: Option<i32>,
    /// Consecutive buckets.
    #[prost(uint32, optional, tag = "2")]
    pub length: Option<u32>,
}

/// A histogram: classic buckets and native buckets (positive only:
/// durations are not negative). Float counts, exemplars, negative buckets
/// and timestamps are not written.
#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    /// Observations.
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    /// Their sum.
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    /// Classic buckets by increasing bound (`+Inf` implied by the count).
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    /// Native bucket schema.
    #[prost(sint32, optional, tag = "5")]
    pub schema: Option<i32>,
    /// Width of the zero bucket.
    #[prost(double, optional, tag = "6")]
    pub zero_threshold: Option<f64>,
    /// Observations in the zero bucket.
    #[prost(uint64, optional, tag = "7")]
    pub zero_count: Option<u64>,
    /// Runs of positive native buckets.
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    /// Each positive bucket's count minus the previous one's.
    #[prost(sint64, repeated, packed = "false", tag = "13")]
    pub positive_delta: Vec<i64>,
}

/// One series (labels and value) of a family.
#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    /// Its labels.
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    /// A gauge's value.
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Gauge>,
    /// A counter's value.
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Counter>,
    /// A histogram.
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
}

/// A metric family: name, help, type and its series.
#[derive(Clone, PartialEq, Message)]
pub struct MetricFamily {
    /// Name (with `_total` for counters, the unit for histograms).
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Help text.
    #[prost(string, optional, tag = "2")]
    pub help: Option<String>,
    /// Type.
    #[prost(enumeration = "MetricType", optional, tag = "3")]
    pub r#type: Option<i32>,
    /// Series.
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

/// Labels as protobuf label pairs.
pub fn labels(l: &[(&str, &str)]) -> Vec<LabelPair> {
    l.iter()
        .map(|(k, v)| LabelPair {
            name: Some((*k).to_string()),
            value: Some((*v).to_string()),
        })
        .collect()
}

/// The histogram message of a fixed and a native histogram of the same
/// durations (count and sum are the fixed one's).
pub fn histogram(fixed: &FixedHist, nat: &NativeHist) -> Histogram {
    let mut cum = 0u64;
    let bucket = BOUNDS_NS
        .iter()
        .zip(fixed.counts)
        .map(|(&b, n)| {
            cum += n;
            Bucket {
                cumulative_count: Some(cum),
                upper_bound: Some(b as f64 / 1e9),
            }
        })
        .collect();
    let (spans, deltas) = nat.spans_deltas();
    let mut positive_span: Vec<BucketSpan> = spans
        .into_iter()
        .map(|s| BucketSpan {
            offset: Some(s.offset),
            length: Some(s.length),
        })
        .collect();
    if positive_span.is_empty() {
        // No observations yet: a no-op span marks it native all the same.
        positive_span.push(BucketSpan {
            offset: Some(0),
            length: Some(0),
        });
    }
    Histogram {
        sample_count: Some(fixed.count),
        sample_sum: Some(fixed.sum_ns as f64 / 1e9),
        bucket,
        schema: Some(native::SCHEMA),
        zero_threshold: Some(native::ZERO_THRESHOLD),
        zero_count: Some(nat.zero_count()),
        positive_span,
        positive_delta: deltas,
    }
}

/// A counter series.
pub fn counter(l: &[(&str, &str)], v: u64) -> Metric {
    Metric {
        label: labels(l),
        counter: Some(Counter {
            value: Some(v as f64),
        }),
        ..Metric::default()
    }
}

/// A gauge series.
pub fn gauge(l: &[(&str, &str)], v: f64) -> Metric {
    Metric {
        label: labels(l),
        gauge: Some(Gauge { value: Some(v) }),
        ..Metric::default()
    }
}

/// A histogram series (see [`histogram`]).
pub fn histogram_metric(l: &[(&str, &str)], fixed: &FixedHist, nat: &NativeHist) -> Metric {
    Metric {
        label: labels(l),
        histogram: Some(histogram(fixed, nat)),
        ..Metric::default()
    }
}

/// Bytes [`Writer`] collects before it writes them out.
const CHUNK: usize = 64 << 10;

/// Writes the delimited protobuf exposition to an `io::Write` a family at
/// a time, holding no more than one series and [`CHUNK`] bytes: a family's
/// series are produced twice, once to measure the family (its length comes
/// first) and once to write them. The bytes are those of
/// `MetricFamily::encode_length_delimited` of each whole family. A family
/// without series is left out.
pub struct Writer<'a> {
    out: &'a mut dyn std::io::Write,
    buf: Vec<u8>,
}

/// Hands each series of a family to the function it is given.
pub type Series<'s> = &'s dyn Fn(&mut dyn FnMut(Metric));

impl<'a> Writer<'a> {
    /// A writer to `out`.
    pub fn new(out: &'a mut dyn std::io::Write) -> Writer<'a> {
        Writer {
            out,
            buf: Vec::new(),
        }
    }

    /// Write family `name`, whose series `series` produces (called twice:
    /// it must produce the same series both times).
    pub fn family(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        series: Series<'_>,
    ) -> std::io::Result<()> {
        let (mut len, mut n) = (0usize, 0usize);
        series(&mut |m| {
            len += prost::encoding::message::encoded_len(4, &m);
            n += 1;
        });
        if n == 0 {
            return Ok(());
        }
        let head = MetricFamily {
            name: Some(name.to_string()),
            help: Some(help.to_string()),
            r#type: Some(kind as i32),
            metric: Vec::new(),
        };
        let buf = &mut self.buf;
        buf.clear();
        prost::encoding::encode_varint((head.encoded_len() + len) as u64, buf);
        // Fields 1-3, then the series as field 4: the same bytes as the
        // whole family encoded at once.
        head.encode_raw(buf);
        let out = &mut *self.out;
        let mut err = None;
        series(&mut |m| {
            if err.is_some() {
                return;
            }
            prost::encoding::message::encode(4, &m, buf);
            if buf.len() >= CHUNK {
                if let Err(e) = out.write_all(buf) {
                    err = Some(e);
                }
                buf.clear();
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        out.write_all(buf)?;
        buf.clear();
        Ok(())
    }
}

/// Decode a delimited protobuf exposition (for tests and tools).
pub fn decode(mut body: &[u8]) -> Result<Vec<MetricFamily>, prost::DecodeError> {
    let mut v = Vec::new();
    while !body.is_empty() {
        v.push(MetricFamily::decode_length_delimited(&mut body)?);
    }
    Ok(v)
}

/// Whether an `Accept` header prefers the delimited protobuf exposition to
/// the text formats: it lists `application/vnd.google.protobuf` with
/// `proto=io.prometheus.client.MetricFamily` and `encoding=delimited`, with
/// a quality (`q`) above 0 and not below any text type's (`text/plain`,
/// `application/openmetrics-text`, `*/*`).
pub fn accepts(accept: &str) -> bool {
    let mut proto_q: Option<f64> = None;
    let mut text_q = 0f64;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let ty = parts.next().unwrap_or("").to_ascii_lowercase();
        let (mut q, mut proto, mut enc) = (1f64, None, None);
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "q" => q = v.parse().unwrap_or(0.0),
                "proto" => proto = Some(v.to_string()),
                "encoding" => enc = Some(v.to_ascii_lowercase()),
                _ => {}
            }
        }
        if ty == "application/vnd.google.protobuf" {
            if proto.as_deref() == Some("io.prometheus.client.MetricFamily")
                && enc.as_deref() == Some("delimited")
            {
                proto_q = Some(proto_q.map_or(q, |p: f64| p.max(q)));
            }
        } else if ty == "text/plain" || ty == "application/openmetrics-text" || ty == "*/*" {
            text_q = text_q.max(q);
        }
    }
    proto_q.is_some_and(|q| q > 0.0 && q >= text_q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_like_prometheus() {
        // Prometheus 2.42 with --enable-feature=native-histograms.
        assert!(accepts(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
             encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,\
             application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,\
             */*;q=0.1"
        ));
        // Without it.
        assert!(!accepts(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
             version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!accepts(""));
        assert!(!accepts("*/*"));
        assert!(accepts(CONTENT_TYPE));
        // Other protobuf messages or encodings are not this format.
        assert!(!accepts(
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=text"
        ));
        assert!(!accepts("application/vnd.google.protobuf"));
        // Preferred below text, or refused.
        assert!(!accepts(
            "text/plain;version=0.0.4,application/vnd.google.protobuf;\
             proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5"
        ));
        assert!(!accepts(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
             encoding=delimited;q=0"
        ));
        assert!(accepts(
            "Application/Vnd.Google.Protobuf; Proto=\"io.prometheus.client.MetricFamily\"; \
             Encoding=Delimited"
        ));
    }

    #[test]
    fn a_small_histogram_by_hand() {
        // One call of 1 s: classic bucket le=1 and above hold it; native
        // key 0 (2^0 = 1 s, inclusive).
        let mut f = FixedHist::default();
        f.record(1_000_000_000);
        let mut n = NativeHist::new();
        n.record(1_000_000_000);
        let h = histogram(&f, &n);
        let mut want: Vec<u8> = vec![
            0x08, 0x01, // sample_count 1
            0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, // sample_sum 1.0
        ];
        let mut cum = 0;
        for &b in BOUNDS_NS.iter() {
            if b >= 1_000_000_000 {
                cum = 1;
            }
            let ub = (b as f64 / 1e9).to_le_bytes();
            // Bucket: field 3, length 11: cumulative_count (1), upper_bound (2).
            want.extend([0x1a, 11, 0x08, cum, 0x11]);
            want.extend(ub);
        }
        want.extend([0x28, 0x06]); // schema 3, zigzag
        want.push(0x31); // zero_threshold, 2^-128
        want.extend(native::pow2(-128).to_le_bytes());
        want.extend([0x38, 0x00]); // zero_count 0
        want.extend([0x62, 0x04, 0x08, 0x00, 0x10, 0x01]); // span {offset 0, length 1}
        want.extend([0x68, 0x02]); // delta +1, zigzag
        assert_eq!(h.encode_to_vec(), want);
        assert_eq!(Histogram::decode(&want[..]).unwrap(), h);
    }

    #[test]
    #[cfg_attr(miri, ignore = "3,000 series: slow under Miri, and no unsafe code")]
    fn a_family_larger_than_a_chunk() {
        let names: Vec<String> = (0..3000).map(|i| format!("f{i}")).collect();
        let mut body = Vec::new();
        Writer::new(&mut body)
            .family("c_total", "calls", MetricType::Counter, &|emit| {
                for (i, n) in names.iter().enumerate() {
                    emit(counter(&[("function", n)], i as u64));
                }
            })
            .unwrap();
        assert!(body.len() > CHUNK);
        let whole = MetricFamily {
            name: Some("c_total".into()),
            help: Some("calls".into()),
            r#type: Some(MetricType::Counter as i32),
            metric: names
                .iter()
                .enumerate()
                .map(|(i, n)| counter(&[("function", n)], i as u64))
                .collect(),
        };
        assert_eq!(body, whole.encode_length_delimited_to_vec());
        assert_eq!(decode(&body).unwrap(), [whole]);
    }

    #[test]
    fn writer_matches_whole_families_and_decodes() {
        let mut f = FixedHist::default();
        let mut n = NativeHist::new();
        for ns in [150u64, 150, 3_000, 2_000_000, 2_200_000, 9_000_000_000] {
            f.record(ns);
            n.record(ns);
        }
        let mut body = Vec::new();
        let mut w = Writer::new(&mut body);
        w.family("empty_total", "nothing", MetricType::Counter, &|_| {})
            .unwrap();
        w.family("c_total", "calls", MetricType::Counter, &|emit| {
            emit(counter(&[("function", "a::b"), ("pid", "7")], 5));
            emit(counter(&[("function", "a::c"), ("pid", "7")], 0));
        })
        .unwrap();
        w.family("d_seconds", "durations", MetricType::Histogram, &|emit| {
            emit(histogram_metric(&[("function", "a::b")], &f, &n));
            emit(histogram_metric(
                &[("function", "a::c")],
                &FixedHist::default(),
                &NativeHist::new(),
            ));
        })
        .unwrap();
        w.family("up", "up", MetricType::Gauge, &|emit| {
            emit(gauge(&[("pid", "7")], 1.0))
        })
        .unwrap();
        let fams = decode(&body).unwrap();
        // The same bytes as each family encoded whole.
        let mut again = Vec::new();
        for fam in &fams {
            fam.encode_length_delimited(&mut again).unwrap();
        }
        assert_eq!(again, body);
        let names: Vec<&str> = fams.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["c_total", "d_seconds", "up"]);
        assert_eq!(fams[0].r#type(), MetricType::Counter);
        assert_eq!(fams[0].metric[0].counter.as_ref().unwrap().value(), 5.0);
        assert_eq!(fams[0].metric[0].label[0].name(), "function");
        assert_eq!(fams[0].metric[0].label[0].value(), "a::b");
        let h = fams[1].metric[0].histogram.as_ref().unwrap();
        assert_eq!(h.sample_count(), 6);
        assert!((h.sample_sum() - 9.004_203_3).abs() < 1e-9);
        assert_eq!(h.bucket.len(), 28);
        assert_eq!(h.bucket[1].cumulative_count(), 2); // le 200 ns
        assert_eq!(h.bucket[27].cumulative_count(), 6); // le 100 s
        assert_eq!(h.schema(), 3);
        let spans: Vec<native::Span> = h
            .positive_span
            .iter()
            .map(|s| native::Span {
                offset: s.offset(),
                length: s.length(),
            })
            .collect();
        let got = NativeHist::from_spans(&spans, &h.positive_delta).unwrap();
        assert_eq!(got, n.buckets());
        assert_eq!(got.iter().map(|b| b.1).sum::<u64>() + h.zero_count(), 6);
        // Each duration lies in its bucket.
        for (ns, (k, _)) in [150u64, 3_000, 2_000_000, 9_000_000_000]
            .iter()
            .zip([got[0], got[1], got[2], got[4]])
        {
            let (lo, hi) = native::bounds(k);
            let s = *ns as f64 / 1e9;
            assert!(lo < s && s <= hi, "{ns}: ({lo}, {hi}]");
        }
        // An empty histogram: a no-op span.
        let e = fams[1].metric[1].histogram.as_ref().unwrap();
        assert_eq!(e.positive_span.len(), 1);
        assert_eq!(e.positive_span[0].length(), 0);
        assert!(e.positive_delta.is_empty());
        assert_eq!(fams[2].metric[0].gauge.as_ref().unwrap().value(), 1.0);
    }
}
