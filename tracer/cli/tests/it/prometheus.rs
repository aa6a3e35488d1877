//! A real Prometheus server scrapes `tracer serve` and the in-process
//! `TRACER_METRICS` endpoint every second, once with classic histograms
//! (the text format) and once with `--enable-feature=native-histograms`
//! (the protobuf exposition). Its HTTP API's `histogram_quantile(0.99, …)`
//! for each function must fall in the bucket that holds the tracer's own
//! p99, and its call counts must equal the tracer's.
//!
//! The fixtures run a fixed number of rounds of functions of known, widely
//! different durations (`fast`, `medium`, `slow`: 1 : 10 : 100 units of
//! work, and `outer` around them), then idle: the figures are final before
//! Prometheus starts, so every comparison is exact. The tracer's own p99
//! comes from its exact counts (decoded from its protobuf exposition): the
//! classic bucket and the native bucket (2^(1/8) wide) that hold the call
//! of rank 0.99 × count.
//!
//! Needs Debian's `prometheus` package (2.42 in bookworm), which
//! `scripts/test.sh` installs.

use crate::helpers::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tracer_core::metrics::native::{self, NativeHist, Span};
use tracer_core::metrics::proto::{self, MetricFamily};

const ROUNDS: u64 = 100;

/// The functions and their calls per round.
const FUNCS: [(&str, u64); 4] = [("outer", 1), ("fast", 4), ("medium", 2), ("slow", 1)];

/// `GET path` with an optional `Accept`, over HTTP/1.0 (so no chunked
/// body). Returns (status line, headers, body).
fn get(addr: &str, path: &str, accept: Option<&str>) -> (String, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let acc = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{acc}\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no HTTP head");
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    (
        status.to_string(),
        headers.to_string(),
        out[end + 4..].to_vec(),
    )
}

/// What Prometheus sends with `--enable-feature=native-histograms`.
const PROTOBUF_ACCEPT: &str = "application/vnd.google.protobuf;\
    proto=io.prometheus.client.MetricFamily;encoding=delimited,\
    application/openmetrics-text;version=1.0.0;q=0.8,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// One function's figures, as the tracer exposes them.
#[derive(Debug, Clone)]
struct Figures {
    calls: u64,
    count: u64,
    /// Classic buckets: (upper bound, cumulative count).
    classic: Vec<(f64, u64)>,
    /// Native buckets with calls: (key, count).
    native: Vec<(i32, u64)>,
}

/// The figures of every function of an endpoint, by short name (`fast`),
/// from its protobuf exposition.
fn figures(addr: &str) -> BTreeMap<String, Figures> {
    let (status, headers, body) = get(addr, "/metrics", Some(PROTOBUF_ACCEPT));
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        headers.contains(proto::CONTENT_TYPE),
        "the reply to a protobuf Accept is not protobuf: {headers}"
    );
    let fams: Vec<MetricFamily> = proto::decode(&body).expect("the exposition decodes");
    let short = |m: &proto::Metric| {
        let f = m
            .label
            .iter()
            .find(|l| l.name() == "function")
            .expect("a function label");
        f.value().rsplit("::").next().unwrap().to_string()
    };
    let mut out: BTreeMap<String, Figures> = BTreeMap::new();
    for fam in &fams {
        for m in &fam.metric {
            match fam.name() {
                "tracer_function_calls_total" => {
                    let calls = m.counter.as_ref().unwrap().value() as u64;
                    out.entry(short(m))
                        .or_insert_with(|| Figures {
                            calls: 0,
                            count: 0,
                            classic: Vec::new(),
                            native: Vec::new(),
                        })
                        .calls = calls;
                }
                "tracer_function_duration_seconds" => {
                    let h = m.histogram.as_ref().unwrap();
                    assert_eq!(h.schema(), native::SCHEMA);
                    let spans: Vec<Span> = h
                        .positive_span
                        .iter()
                        .map(|s| Span {
                            offset: s.offset(),
                            length: s.length(),
                        })
                        .collect();
                    let nat = NativeHist::from_spans(&spans, &h.positive_delta)
                        .expect("spans and deltas fit together");
                    // Exact counts: the native buckets hold every call.
                    assert_eq!(
                        nat.iter().map(|b| b.1).sum::<u64>() + h.zero_count(),
                        h.sample_count(),
                        "{}: native buckets and count differ",
                        short(m)
                    );
                    let e = out.entry(short(m)).or_insert_with(|| Figures {
                        calls: 0,
                        count: 0,
                        classic: Vec::new(),
                        native: Vec::new(),
                    });
                    e.count = h.sample_count();
                    e.classic = h
                        .bucket
                        .iter()
                        .map(|b| (b.upper_bound(), b.cumulative_count()))
                        .collect();
                    e.native = nat;
                }
                _ => {}
            }
        }
    }
    out
}

/// Whether `f` has every call of the fixture's rounds, durations included.
fn complete(f: &BTreeMap<String, Figures>) -> bool {
    FUNCS.iter().all(|(name, per)| {
        f.get(*name)
            .is_some_and(|x| x.calls == ROUNDS * per && x.count == x.calls)
    })
}

/// The bounds `(lower, upper]` of the classic bucket that holds the call of
/// rank `q × count`, as `histogram_quantile` picks it.
fn classic_bucket(f: &Figures, q: f64) -> (f64, f64) {
    let rank = q * f.count as f64;
    let i = f
        .classic
        .iter()
        .position(|b| b.1 as f64 >= rank)
        .expect("the p99 is below 100 s");
    (
        if i == 0 { 0.0 } else { f.classic[i - 1].0 },
        f.classic[i].0,
    )
}

/// The bounds of the native bucket that holds the call of rank `q × count`.
fn native_bucket(f: &Figures, q: f64) -> (f64, f64) {
    let rank = q * f.count as f64;
    let mut cum = 0u64;
    for &(k, n) in &f.native {
        cum += n;
        if cum as f64 >= rank {
            return native::bounds(k);
        }
    }
    panic!("no native bucket holds rank {rank}: {f:?}")
}

/// The `prometheus` program, or a failure that says how to install it.
fn prometheus_bin() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file());
    let Some(bin) = found else {
        panic!(
            "the `prometheus` program is missing: install Debian's package as root with \
             `apt-get install prometheus` (scripts/test.sh does it), or put a Prometheus \
             2.40 or later on PATH"
        );
    };
    bin
}

/// A free port on 127.0.0.1 (bound, then released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Prometheus server (killed on drop, with its storage in the test's
/// directory) that scrapes `targets` every second.
struct Prometheus {
    addr: String,
    proc: Proc,
}

impl Prometheus {
    fn start(d: &Dir, name: &str, targets: &[&str], native_histograms: bool) -> Prometheus {
        let dir = d.0.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: tracer\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut c = Command::new(prometheus_bin());
        c.arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if native_histograms {
            c.arg("--enable-feature=native-histograms");
        }
        let mut proc = Proc::new(c.spawn().expect("prometheus starts"));
        poll(
            || {
                if !proc.running() {
                    panic!("prometheus exited:\n{}", proc.stderr_after_exit());
                }
                TcpStream::connect(&addr).is_ok()
                    && get(&addr, "/-/ready", None).0.contains(" 200 ")
            },
            "prometheus to be ready",
        );
        Prometheus { addr, proc }
    }

    /// An instant query: each result's labels and value.
    fn query(&self, q: &str) -> Vec<(Value, f64)> {
        let enc: String = q
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, _, body) = get(&self.addr, &format!("/api/v1/query?query={enc}"), None);
        let v: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{q}: {status}: {e}: {}", text(&body)));
        assert_eq!(v["status"], "success", "{q}: {v}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let val: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
                (r["metric"].clone(), val)
            })
            .collect()
    }

    /// `q`'s results by (pid, short function name).
    fn by_function(&self, q: &str) -> BTreeMap<(String, String), f64> {
        self.query(q)
            .into_iter()
            .map(|(m, v)| {
                let f = m["function"].as_str().unwrap_or_default();
                let short = f.rsplit("::").next().unwrap().to_string();
                (
                    (m["pid"].as_str().unwrap_or_default().to_string(), short),
                    v,
                )
            })
            .collect()
    }

    /// Wait until the call counters of every target are in, and equal
    /// `want` (by pid and function).
    fn wait_calls(&self, want: &BTreeMap<(String, String), f64>) {
        let t0 = Instant::now();
        loop {
            let last = self.by_function("tracer_function_calls_total");
            if &last == want {
                return;
            }
            assert!(
                t0.elapsed() < PATIENCE,
                "prometheus's call counts never matched the tracer's:\n{last:?}\nwant\n{want:?}\n{}",
                self.proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `v` lies in `(lo, hi]`, give or take the last digits of the decimal
/// text Prometheus answers with.
fn within(v: f64, (lo, hi): (f64, f64)) -> bool {
    let slack = 1e-9 * hi;
    v >= lo - slack && v <= hi + slack
}

#[test]
fn prometheus_agrees_with_classic_and_native_histograms() {
    // Fails at once, saying how to install it, if it is missing.
    prometheus_bin();
    let d = Dir::new();
    let rounds = ROUNDS.to_string();
    // One process read by `tracer serve` (waiting for it before main, so it
    // sees every call), one serving its own metrics.
    let fx = d.fixture_with(&[
        ("TRACER_WAIT_READER", "1"),
        ("TRACER_FIXTURE_ROUNDS", &rounds),
        ("TRACER_FIXTURE_LINGER", "1"),
    ]);
    let sv = d.serve(&["-p", &fx.p(), "outer fast medium slow"]);
    let mut fx2 = d.fixture_with(&[
        ("TRACER_METRICS", "127.0.0.1:0"),
        ("TRACER_ENABLE", "outer,fast,medium,slow"),
        ("TRACER_FIXTURE_ROUNDS", &rounds),
        ("TRACER_FIXTURE_LINGER", "1"),
    ]);
    let (serve_addr, inproc_addr) = (sv.addr(), fx2.wait_addr());
    let mut tracer: BTreeMap<String, BTreeMap<String, Figures>> = BTreeMap::new();
    for (pid, addr) in [(fx.p(), &serve_addr), (fx2.p(), &inproc_addr)] {
        let mut f = BTreeMap::new();
        poll(
            || {
                f = figures(addr);
                complete(&f)
            },
            "every round to be counted",
        );
        tracer.insert(pid, f);
    }
    // Widely different durations: the p99s are ordered.
    for f in tracer.values() {
        let (fast, slow) = (
            native_bucket(&f["fast"], 0.99),
            native_bucket(&f["slow"], 0.99),
        );
        assert!(fast.1 < slow.0, "fast {fast:?}, slow {slow:?}");
    }
    let want_calls: BTreeMap<(String, String), f64> = tracer
        .iter()
        .flat_map(|(pid, f)| {
            f.iter()
                .map(move |(name, x)| ((pid.clone(), name.clone()), x.calls as f64))
        })
        .collect();
    let targets = [serve_addr.as_str(), inproc_addr.as_str()];
    // Both servers at once: the classic one scrapes the text format, the
    // native one asks for protobuf.
    let classic = Prometheus::start(&d, "classic", &targets, false);
    let native = Prometheus::start(&d, "native", &targets, true);
    classic.wait_calls(&want_calls);
    native.wait_calls(&want_calls);

    // Classic: histogram_quantile over _bucket lies in the classic bucket
    // of the tracer's p99, and that bucket overlaps the native bucket of
    // the tracer's p99 (the finer exact figure).
    let q =
        classic.by_function("histogram_quantile(0.99, tracer_function_duration_seconds_bucket)");
    let counts = classic.by_function("tracer_function_duration_seconds_count");
    assert_eq!(q.len(), want_calls.len(), "{q:?}");
    for ((pid, name), v) in &q {
        let f = &tracer[pid][name];
        let (c, n) = (classic_bucket(f, 0.99), native_bucket(f, 0.99));
        assert!(
            within(*v, c),
            "{pid} {name}: prometheus's p99 {v} s is outside the tracer's classic bucket {c:?}"
        );
        eprintln!(
            "classic {pid} {name}: prometheus p99 {v:.3e} s, tracer bucket {c:?}, native {n:?}"
        );
        assert!(n.1 > c.0 && n.0 <= c.1, "{pid} {name}: {c:?} {n:?}");
        assert_eq!(counts[&(pid.clone(), name.clone())], f.count as f64);
    }

    // Native: histogram_quantile over the native histogram (no _bucket)
    // lies in the native bucket of the tracer's p99: within 2^(1/8).
    let q = native.by_function("histogram_quantile(0.99, tracer_function_duration_seconds)");
    let counts = native.by_function("histogram_count(tracer_function_duration_seconds)");
    assert_eq!(q.len(), want_calls.len(), "{q:?}\n{}", native.proc.stderr());
    for ((pid, name), v) in &q {
        let f = &tracer[pid][name];
        let n = native_bucket(f, 0.99);
        eprintln!("native {pid} {name}: prometheus p99 {v:.3e} s, tracer bucket {n:?}");
        assert!(
            within(*v, n),
            "{pid} {name}: prometheus's native p99 {v} s is outside the tracer's native bucket {n:?}"
        );
        assert_eq!(counts[&(pid.clone(), name.clone())], f.count as f64);
    }
}
