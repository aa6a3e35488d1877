//! `tracer serve` and `TRACER_METRICS` against real processes: the
//! exposition parsed by a real parser (the Python `prometheus_client`
//! package's) with counts equal to the fixture's known numbers of calls,
//! bad input, a stalled scraper, `--all` picking processes up and dropping
//! them, and the in-process endpoint.
//!
//! Each test runs with a private `XDG_RUNTIME_DIR`, so tests never see each
//! other's processes. Needs `python3 -m pip install prometheus_client`.

use crate::helpers::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

impl Dir {
    /// `tracer serve ARGS --listen 127.0.0.1:0`, once it serves.
    pub(crate) fn serve(&self, args: &[&str]) -> Proc {
        let mut a = vec!["serve"];
        a.extend(args);
        a.extend(["--listen", "127.0.0.1:0"]);
        let mut c = self.cmd_args(TRACER, &a);
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut p = Proc::new(c.spawn().unwrap());
        p.wait_addr();
        p
    }
}

impl Proc {
    /// The address it printed on stderr (`serving http://ADDR/metrics`).
    pub(crate) fn wait_addr(&mut self) -> String {
        let mut addr = None;
        poll(
            || {
                if let Ok(Some(st)) = self.child.try_wait() {
                    std::thread::sleep(Duration::from_millis(300));
                    panic!("exited with {st}:\n{}", self.stderr());
                }
                addr = self
                    .stderr()
                    .lines()
                    .find_map(|l| l.split("serving http://").nth(1))
                    .and_then(|r| r.strip_suffix("/metrics"))
                    .map(String::from);
                addr.is_some()
            },
            "the metrics address on stderr",
        );
        addr.unwrap()
    }

    pub(crate) fn addr(&self) -> String {
        self.stderr()
            .lines()
            .find_map(|l| l.split("serving http://").nth(1))
            .and_then(|r| r.strip_suffix("/metrics"))
            .map(String::from)
            .expect("no address printed")
    }

    /// SIGINT, then the exit status.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid() as i32, libc::SIGINT) };
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(t0.elapsed() < PATIENCE, "did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn get(addr: &str, path: &str, accept: Option<&str>) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let acc = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{acc}\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("no HTTP head");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

fn scrape(addr: &str) -> String {
    let (status, _, body) = get(addr, "/metrics", None);
    assert!(status.contains(" 200 "), "{status}\n{body}");
    body
}

const PARSER: &str = r#"
import json, sys
try:
    if sys.argv[1:] == ["openmetrics"]:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    else:
        from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    print("MISSING")
    sys.exit(3)
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({"family": fam.name, "type": fam.type, "name": s.name,
                    "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// The samples of an exposition, as the Python `prometheus_client`
/// package's text parser reads it.
fn parse(text: &str) -> Vec<Value> {
    parse_as(text, "prometheus")
}

/// [`parse`] with the package's Prometheus text (`prometheus`) or its
/// OpenMetrics (`openmetrics`) parser.
fn parse_as(text: &str, format: &str) -> Vec<Value> {
    let mut c = Command::new("python3")
        .args(["-c", PARSER, format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed to parse the exposition");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    if out.trim() == "MISSING" {
        panic!(
            "the Python package prometheus_client is missing; install it with \
             `python3 -m pip install --quiet prometheus_client`"
        );
    }
    assert!(
        o.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str::<Vec<Value>>(&out).unwrap()
}

/// The value of sample `name` of the function whose name ends with `func`
/// (any function if empty), with label `le` if given.
fn value(samples: &[Value], name: &str, func: &str, le: Option<&str>) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s["name"] == name
                && (func.is_empty()
                    || s["labels"]["function"]
                        .as_str()
                        .is_some_and(|f| f.ends_with(func)))
                && le.is_none_or(|l| s["labels"]["le"].as_str() == Some(l))
        })
        .and_then(|s| s["value"].as_f64())
}

/// The histogram of `func` is well formed: cumulative buckets from 100 ns to
/// 100 s then +Inf, +Inf equal to _count. Returns the bucket counts.
fn check_histogram(samples: &[Value], func: &str) -> Vec<(f64, f64)> {
    let b: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| {
            s["name"] == "tracer_function_duration_seconds_bucket"
                && s["labels"]["function"]
                    .as_str()
                    .is_some_and(|f| f.ends_with(func))
        })
        .map(|s| {
            let le = s["labels"]["le"].as_str().unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, s["value"].as_f64().unwrap())
        })
        .collect();
    assert_eq!(b.len(), 29, "{func}: {b:?}");
    assert!((b[0].0 - 1e-7).abs() < 1e-12 && (b[27].0 - 100.0).abs() < 1e-9);
    assert!(b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    let count = value(
        samples,
        "tracer_function_duration_seconds_count",
        func,
        None,
    )
    .unwrap();
    assert_eq!(b[28].1, count, "{func}: +Inf bucket and _count differ");
    b
}

/// The smallest bound holding at least half the calls.
fn median_bound(b: &[(f64, f64)]) -> f64 {
    let total = b.last().unwrap().1;
    b.iter().find(|(_, n)| *n * 2.0 >= total).unwrap().0
}

const ROUNDS: u64 = 40;

#[test]
fn counts_equal_the_known_calls_and_an_ended_process_keeps_its_figures() {
    let d = Dir::new();
    // The fixture waits for a reader before main: serve sees every call.
    let rounds = ROUNDS.to_string();
    let fx = d.fixture_with(&[
        ("TRACER_WAIT_READER", "1"),
        ("TRACER_FIXTURE_ROUNDS", &rounds),
        ("TRACER_FIXTURE_LINGER", "1"),
    ]);
    let pid = fx.pid().to_string();
    let mut sv = d.serve(&["-p", &pid, "outer fast medium slow"]);
    let addr = sv.addr();
    poll(
        || {
            value(
                &parse(&scrape(&addr)),
                "tracer_function_calls_total",
                "::outer",
                None,
            ) == Some(ROUNDS as f64)
        },
        "every round to be counted",
    );
    let body = scrape(&addr);
    let s = parse(&body);
    for (f, per_round) in [
        ("::outer", 1),
        ("::fast", 4),
        ("::medium", 2),
        ("::slow", 1),
    ] {
        let want = (ROUNDS * per_round) as f64;
        assert_eq!(
            value(&s, "tracer_function_calls_total", f, None),
            Some(want),
            "{f}\n{body}"
        );
        assert_eq!(
            value(&s, "tracer_function_duration_seconds_count", f, None),
            Some(want),
            "{f}"
        );
        assert_eq!(
            value(&s, "tracer_function_not_returned_total", f, None),
            Some(0.0)
        );
        assert!(value(&s, "tracer_function_duration_seconds_sum", f, None).unwrap() > 0.0);
        check_histogram(&s, f);
    }
    // 1 : 10 : 100 units of work: the medians are ordered.
    let (fast, slow) = (check_histogram(&s, "::fast"), check_histogram(&s, "::slow"));
    assert!(
        median_bound(&fast) < median_bound(&slow),
        "{fast:?} {slow:?}"
    );
    // Labels.
    let one = s
        .iter()
        .find(|x| x["name"] == "tracer_function_calls_total")
        .unwrap();
    assert_eq!(one["labels"]["pid"], pid.as_str());
    assert_eq!(one["labels"]["exe"], "tracer-fixture");
    assert!(one["labels"]["function"]
        .as_str()
        .unwrap()
        .starts_with("tracer_fixture::"));
    assert_eq!(
        value(&s, "tracer_dropped_events_total", "", None),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "tracer_functions_left_out_total", "", None),
        Some(0.0)
    );
    assert_eq!(value(&s, "tracer_process_up", "", None), Some(1.0));
    // OpenMetrics when asked for.
    let (status, headers, om) = get(
        &addr,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    );
    assert!(status.contains(" 200 "));
    assert!(
        headers.contains("application/openmetrics-text"),
        "{headers}"
    );
    assert!(om.trim_end().ends_with("# EOF"), "{om}");
    let om = parse_as(&om, "openmetrics");
    assert_eq!(
        value(&om, "tracer_function_calls_total", "::fast", None),
        Some((ROUNDS * 4) as f64)
    );
    assert!(get(&addr, "/nothing", None).0.contains(" 404 "));
    // The process ends: with -p its last figures stay, marked down.
    drop(fx);
    poll(
        || value(&parse(&scrape(&addr)), "tracer_process_up", "", None) == Some(0.0),
        "the ended process to be marked down",
    );
    let s = parse(&scrape(&addr));
    assert_eq!(
        value(&s, "tracer_function_calls_total", "::fast", None),
        Some((ROUNDS * 4) as f64)
    );
    assert!(sv.stderr().contains("ended"), "{}", sv.stderr());
    assert!(sv.interrupt().success(), "{}", sv.stderr());
}

#[test]
fn serve_disables_its_pattern_on_exit_and_refuses_bad_input() {
    let d = Dir::new();
    let fx = d.fixture_with(&[]);
    let pid = fx.pid().to_string();
    // A pattern that matches nothing.
    let o = d.tracer(&["serve", "-p", &pid, "--listen", "127.0.0.1:0", "no_such_fn"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no_such_fn"),
        "{o:?}"
    );
    // An address in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = taken.local_addr().unwrap().to_string();
    let o = d.tracer(&["serve", "-p", &pid, "--listen", &a]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot listen on") && err.contains(&a),
        "{err}"
    );
    // Not an address.
    let o = d.tracer(&["serve", "-p", &pid, "--listen", "nowhere"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    // Not loopback, without --allow-remote.
    let o = d.tracer(&["serve", "-p", &pid, "--listen", "0.0.0.0:0"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--allow-remote"),
        "{o:?}"
    );
    // No such process.
    let o = d.tracer(&["serve", "-p", "999999999", "--listen", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    // The pattern is enabled while serving and disabled on exit.
    let mut sv = d.serve(&["-p", &pid, "fast"]);
    let st: Value =
        serde_json::from_slice(&d.tracer(&["status", "-p", &pid, "--json"]).stdout).unwrap();
    assert_eq!(st["enabled"].as_array().unwrap().len(), 1, "{st}");
    assert!(sv.interrupt().success(), "{}", sv.stderr());
    let st: Value =
        serde_json::from_slice(&d.tracer(&["status", "-p", &pid, "--json"]).stdout).unwrap();
    assert!(st["enabled"].as_array().unwrap().is_empty(), "{st}");
}

#[test]
fn a_stalled_scraper_stalls_nobody() {
    let d = Dir::new();
    let fx = d.fixture_with(&[("TRACER_ENABLE", "fast")]);
    let sv = d.serve(&["-p", &fx.pid().to_string()]);
    let addr = sv.addr();
    // More connections than the server has workers (4) that send nothing,
    // or half a request, and never read.
    let mut stalled: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    stalled.push(half);
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        let t0 = Instant::now();
        let body = scrape(&addr);
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert!(body.contains("tracer_process_up"));
    }
    // The stalled ones are cut off after the server's head deadline (5 s).
    let mut buf = String::new();
    stalled[0].set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = stalled[0].read_to_string(&mut buf);
    assert!(buf.is_empty() || buf.starts_with("HTTP/1.1 408"), "{buf}");
}

#[test]
fn all_picks_processes_up_and_drops_them() {
    let d = Dir::new();
    let a = d.fixture_with(&[("TRACER_ENABLE", "fast")]);
    let sv = d.serve(&["--all"]);
    let addr = sv.addr();
    let pids = |addr: &str| -> Vec<String> {
        let s = parse(&scrape(addr));
        let mut v: Vec<String> = s
            .iter()
            .filter(|x| x["name"] == "tracer_process_up")
            .map(|x| x["labels"]["pid"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let pa = a.pid().to_string();
    poll(|| pids(&addr) == [pa.clone()], "the first process");
    let b = d.fixture_with(&[("TRACER_ENABLE", "slow")]);
    let pb = b.pid().to_string();
    let mut both = vec![pa.clone(), pb.clone()];
    both.sort();
    poll(|| pids(&addr) == both, "the second process");
    poll(
        || {
            value(
                &parse(&scrape(&addr)),
                "tracer_function_calls_total",
                "::slow",
                None,
            )
            .is_some_and(|n| n > 0.0)
        },
        "calls of the second process",
    );
    drop(b);
    poll(
        || pids(&addr) == [pa.clone()],
        "the second process to be dropped",
    );
    let s = parse(&scrape(&addr));
    assert!(value(&s, "tracer_function_calls_total", "::slow", None).is_none());
    assert!(value(&s, "tracer_function_calls_total", "::fast", None).is_some());
}

#[test]
fn tracer_metrics_serves_from_inside_the_program() {
    let d = Dir::new();
    let rounds = ROUNDS.to_string();
    let mut fx = d.fixture_with(&[
        ("TRACER_METRICS", "127.0.0.1:0"),
        ("TRACER_ENABLE", "outer,fast,slow"),
        ("TRACER_FIXTURE_ROUNDS", &rounds),
        ("TRACER_FIXTURE_LINGER", "1"),
    ]);
    let addr = fx.wait_addr();
    poll(
        || {
            value(
                &parse(&scrape(&addr)),
                "tracer_function_calls_total",
                "::outer",
                None,
            ) == Some(ROUNDS as f64)
        },
        "every round to be counted",
    );
    // Durations reach the collector a moment after the counters.
    poll(
        || {
            value(
                &parse(&scrape(&addr)),
                "tracer_function_duration_seconds_count",
                "::fast",
                None,
            ) == Some((ROUNDS * 4) as f64)
        },
        "the collector to drain",
    );
    let body = scrape(&addr);
    let s = parse(&body);
    for (f, per_round) in [("::outer", 1), ("::fast", 4), ("::slow", 1)] {
        let want = (ROUNDS * per_round) as f64;
        assert_eq!(
            value(&s, "tracer_function_calls_total", f, None),
            Some(want),
            "{f}\n{body}"
        );
        check_histogram(&s, f);
    }
    // medium is not enabled: no series.
    assert!(value(&s, "tracer_function_calls_total", "::medium", None).is_none());
    assert!(
        median_bound(&check_histogram(&s, "::fast")) < median_bound(&check_histogram(&s, "::slow"))
    );
    assert_eq!(value(&s, "tracer_process_up", "", None), Some(1.0));
    assert_eq!(
        value(&s, "tracer_dropped_events_total", "", None),
        Some(0.0)
    );
    // A stalled scraper does not stall the endpoint.
    let _stalled: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let t0 = Instant::now();
    scrape(&addr);
    assert!(t0.elapsed() < Duration::from_secs(3));
    // A bad address: the program runs on and says why.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = taken.local_addr().unwrap().to_string();
    let fx2 = d.fixture_with(&[("TRACER_METRICS", &a)]);
    poll(
        || fx2.stderr().contains("TRACER_METRICS="),
        "the bind error",
    );
    assert!(fx2.stderr().contains("cannot serve"), "{}", fx2.stderr());
    let fx3 = d.fixture_with(&[("TRACER_METRICS", "0.0.0.0:0")]);
    poll(
        || fx3.stderr().contains("TRACER_METRICS_ALLOW_REMOTE"),
        "the refusal",
    );
}
