//! `TRACER_METRICS=ADDR` (or [`serve_metrics`]): the program serves
//! Prometheus `GET /metrics` itself, from the in-process collector, with no
//! `tracer` program.
//!
//! Per enabled function (labels `function`, `pid`, `exe`):
//! `tracer_function_calls_total` (exact, from the per-thread counters) and
//! `tracer_function_duration_seconds` (`_bucket`/`_sum`/`_count`, the fixed
//! 1-2-5 buckets of `tracer_core::metrics`, rebuilt from the collector's
//! histograms: a value less than 1/64 above a bound may be counted below
//! it). Its `_count` can be lower than the calls: while a `tracer` program
//! reads the rings, or when a ring overran, the collector sees no duration
//! (`tracer_dropped_events_total` tells the second). With the delimited
//! protobuf exposition (when the scraper's `Accept` prefers it: Prometheus
//! with `--enable-feature=native-histograms`), the histograms also carry
//! native buckets (`tracer_core::metrics::native`: exact counts the
//! collector keeps beside its own histograms). Per process:
//! `tracer_dropped_events_total`, `tracer_functions_left_out_total` (beyond
//! `TRACER_METRICS_MAX_FUNCTIONS`, default 10,000), `tracer_process_up`.
//!
//! Scrapes are served by the tracer's own threads (an acceptor and two
//! workers, `tracer_core::http`: a deadline for the request head and for
//! taking the response, a capped queue), never by the program's. A scrape
//! copies the figures under the collector's lock (no rendering under it) and
//! renders the exposition from the copy.
//!
//! Only loopback addresses are served unless `TRACER_METRICS_ALLOW_REMOTE=1`.

use crate::collect;
use crate::runtime::runtime;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use tracer_core::http::{self, Request, Response};
use tracer_core::metrics::native::NativeHist;
use tracer_core::metrics::proto::{self, MetricType as ProtoType};
use tracer_core::metrics::{self as m, FixedHist, Text};
use tracer_core::wire::env;

/// Functions exported at most, unless `TRACER_METRICS_MAX_FUNCTIONS` says.
pub const DEFAULT_MAX_FUNCTIONS: usize = 10_000;

/// Start serving `/metrics` on `addr` (`HOST:PORT`; port 0 picks a free one)
/// from the tracer's own threads; returns the bound address. Refuses an
/// address that is not loopback unless `TRACER_METRICS_ALLOW_REMOTE=1` is
/// set. Each call starts another server.
pub fn serve_metrics(addr: &str) -> std::io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let remote_ok = std::env::var_os(env::METRICS_ALLOW_REMOTE).is_some_and(|v| v == "1");
    if let Some(a) = addrs.iter().find(|a| !http::is_loopback(a)) {
        if !remote_ok {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} is not a loopback address (anyone reaching it could read the names and \
                     timings of the program's functions); set TRACER_METRICS_ALLOW_REMOTE=1 to \
                     serve it anyway",
                    a.ip()
                ),
            ));
        }
    }
    let listener = std::net::TcpListener::bind(&addrs[..])?;
    let bound = listener.local_addr()?;
    let max = std::env::var(env::METRICS_MAX_FUNCTIONS)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MAX_FUNCTIONS);
    let handler: Arc<http::Handler> = Arc::new(move |r: &Request| match r.path.as_str() {
        "/metrics" => {
            let (content_type, produce) = render(max, &r.accept);
            Response {
                status: 200,
                content_type: content_type.into(),
                body: http::Body::Stream(Box::new(move |w| {
                    let r = produce(w);
                    give_back_memory();
                    r
                })),
            }
        }
        _ => Response::text(404, "not found; the metrics are at /metrics\n"),
    });
    http::serve(
        listener,
        2,
        http::Limits {
            queue: 8,
            ..http::Limits::default()
        },
        handler,
        &|name, f| crate::trap::spawn_own_thread(name, f).map(|_| ()),
    )?;
    Ok(bound)
}

/// Return the free memory of a scrape's copy (about 400 bytes a function,
/// freed when the scrape ends) to the system: glibc would keep it in the
/// arena of the worker that freed it, a copy's worth per worker.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; no pointer is
    // passed and none is invalidated.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `TRACER_METRICS=ADDR`: start serving at program start (an error is
/// printed on stderr; the program runs on).
pub(crate) fn start_from_env() {
    let Some(a) = std::env::var_os(env::METRICS).filter(|a| !a.is_empty()) else {
        return;
    };
    let a = a.to_string_lossy();
    match serve_metrics(&a) {
        Ok(bound) => eprintln!("tracer: serving http://{bound}/metrics"),
        Err(e) => eprintln!("tracer: TRACER_METRICS={a}: cannot serve: {e}"),
    }
}

/// One function's figures at a scrape.
struct Row {
    name: String,
    calls: u64,
    hist: FixedHist,
    native: NativeHist,
}

/// The exposition from the figures now: the delimited protobuf one if
/// `accept` prefers it, else Prometheus text format 0.0.4. Returns the
/// content type and what writes the body as it is sent (in pieces: no
/// buffer of the whole body).
pub(crate) fn render(max: usize, accept: &str) -> (&'static str, http::Producer) {
    let pid = std::process::id().to_string();
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    // Enabled functions, then their figures, each under its own lock.
    let mut funcs: Vec<(usize, String)> = Vec::new();
    let mut left_out = 0u64;
    if let Ok(rt) = runtime() {
        let st = rt.lock_refreshed();
        for (i, f) in st.reg.funcs.iter().enumerate() {
            if f.loaded && st.enabled.get(i).copied().unwrap_or(false) {
                if funcs.len() < max {
                    funcs.push((i, f.path.to_string()));
                } else {
                    left_out += 1;
                }
            }
        }
    }
    let dropped = crate::stats().dropped;
    let rows: Vec<Row> = if funcs.is_empty() {
        Vec::new()
    } else {
        let mut c = collect::lock();
        // Calls are counted as their events are drained: count up to now.
        c.drain_all();
        funcs
            .into_iter()
            .map(|(i, name)| Row {
                name,
                calls: c.totals(i).count,
                hist: c.hist(i).map(FixedHist::from_loghist).unwrap_or_default(),
                native: c.native(i).cloned().unwrap_or_default(),
            })
            .collect()
    };
    if proto::accepts(accept) {
        return (
            proto::CONTENT_TYPE,
            Box::new(move |w| protobuf(&rows, &pid, &exe, dropped, left_out, w)),
        );
    }
    (
        "text/plain; version=0.0.4; charset=utf-8",
        Box::new(move |w| text(&rows, &pid, &exe, dropped, left_out, w)),
    )
}

/// [`render`]'s text exposition, sent every [`http::STREAM_BUFFER`] bytes.
fn text(
    rows: &[Row],
    pid: &str,
    exe: &str,
    dropped: u64,
    left_out: u64,
    w: &mut dyn Write,
) -> std::io::Result<()> {
    let mut t = Text::default();
    let mut send = |t: &mut Text, all: bool| {
        if all || t.out.len() >= http::STREAM_BUFFER {
            let r = w.write_all(t.out.as_bytes());
            t.out.clear();
            return r;
        }
        Ok(())
    };
    let calls = format!("{}_total", m::CALLS);
    t.family(&calls, "counter", m::HELP_CALLS);
    for r in rows {
        t.sample(
            &calls,
            &[("function", &r.name), ("pid", pid), ("exe", exe)],
            r.calls,
        );
        send(&mut t, false)?;
    }
    let dur = format!("{}_seconds", m::DURATION);
    t.family(&dur, "histogram", m::HELP_DURATION);
    for r in rows {
        t.histogram(
            &dur,
            &[("function", &r.name), ("pid", pid), ("exe", exe)],
            &r.hist,
        );
        send(&mut t, false)?;
    }
    let pl = [("pid", pid), ("exe", exe)];
    let dropped_name = format!("{}_total", m::DROPPED);
    t.family(&dropped_name, "counter", m::HELP_DROPPED);
    t.sample(&dropped_name, &pl, dropped);
    let left = format!("{}_total", m::LEFT_OUT);
    t.family(&left, "counter", m::HELP_LEFT_OUT);
    t.sample(&left, &pl, left_out);
    t.family(m::UP, "gauge", m::HELP_UP);
    t.sample(m::UP, &pl, 1);
    send(&mut t, true)
}

/// [`render`]'s protobuf exposition: the same families, names and labels
/// as the text, histograms with classic and native buckets; written as it
/// is encoded (see `proto::Writer`).
fn protobuf(
    rows: &[Row],
    pid: &str,
    exe: &str,
    dropped: u64,
    left_out: u64,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    fn labels<'a>(r: &'a Row, pid: &'a str, exe: &'a str) -> [(&'static str, &'a str); 3] {
        [("function", &r.name), ("pid", pid), ("exe", exe)]
    }
    let fl = |r| labels(r, pid, exe);
    let pl = [("pid", pid), ("exe", exe)];
    let mut w = proto::Writer::new(out);
    w.family(
        &format!("{}_total", m::CALLS),
        m::HELP_CALLS,
        ProtoType::Counter,
        &|emit| {
            for r in rows {
                emit(proto::counter(&fl(r), r.calls));
            }
        },
    )?;
    w.family(
        &format!("{}_seconds", m::DURATION),
        m::HELP_DURATION,
        ProtoType::Histogram,
        &|emit| {
            for r in rows {
                emit(proto::histogram_metric(&fl(r), &r.hist, &r.native));
            }
        },
    )?;
    w.family(
        &format!("{}_total", m::DROPPED),
        m::HELP_DROPPED,
        ProtoType::Counter,
        &|emit| emit(proto::counter(&pl, dropped)),
    )?;
    w.family(
        &format!("{}_total", m::LEFT_OUT),
        m::HELP_LEFT_OUT,
        ProtoType::Counter,
        &|emit| emit(proto::counter(&pl, left_out)),
    )?;
    w.family(m::UP, m::HELP_UP, ProtoType::Gauge, &|emit| {
        emit(proto::gauge(&pl, 1.0))
    })
}
