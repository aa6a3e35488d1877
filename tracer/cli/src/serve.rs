//! `tracer serve`: Prometheus `/metrics` for one or every traced process.
//!
//! Each process gets a thread that attaches a [`Reader`], drains its rings
//! and rebuilds calls ([`Walker`]) into per-function figures: a call count,
//! the calls that never returned, and a latency histogram over the fixed
//! buckets of [`tracer_core::metrics`] (exact: every duration is placed in
//! its bucket), and a native histogram ([`tracer_core::metrics::native`]:
//! exact counts in exponential buckets, 2^(1/8) wide, sparse). A scrape
//! takes a copy of every process's figures, each under its own lock held
//! only for the copy, and renders from the copy, on one of the HTTP server's
//! workers: the text formats with the `prometheus-client` crate, the
//! protobuf exposition (native histograms too) when the scraper's `Accept`
//! asks for it with [`tracer_core::metrics::proto`]. The workers are
//! [`tracer_core::http`]'s (a fixed pool, a deadline for the request head and
//! for taking the response, a capped queue).
//!
//! Cardinality: only functions with calls (or enabled by `serve`'s own
//! PATTERN, or enabled when the reader attached) get series, at most
//! `max_functions` per process; the functions beyond are counted in
//! `tracer_functions_left_out_total`.

use crate::calls::{Call, Walker};
use crate::client::{self, msg, Client, Request as AgentRequest};
use crate::reader::Reader;
use crate::{printable, Error};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracer_core::http::{self, Request, Response};
use tracer_core::metrics::native::NativeHist;
use tracer_core::metrics::proto::{self, MetricType as ProtoType};
use tracer_core::metrics::{self as m, FixedHist, BOUNDS_NS};

/// What `tracer serve` was asked for.
#[derive(Clone, Debug)]
pub struct Options {
    /// Enable these functions in each process (disabled again on exit) and
    /// export only them.
    pub pattern: Option<String>,
    /// Functions exported per process, at most.
    pub max_functions: usize,
}

/// One function's figures.
#[derive(Clone, Debug, Default)]
pub struct FuncFigures {
    /// Durations of the calls that returned.
    pub hist: FixedHist,
    /// The same durations in native buckets.
    pub native: NativeHist,
    /// Calls that never returned.
    pub not_returned: u64,
}

/// One process's figures, as the reader thread keeps them.
#[derive(Debug, Default)]
pub struct Proc {
    /// Its pid.
    pub pid: i32,
    /// Executable name.
    pub exe: String,
    /// Function names by index (shared with snapshots).
    names: Vec<Arc<str>>,
    /// Figures by function index.
    funcs: HashMap<u32, FuncFigures>,
    /// Functions left out by the cap.
    left_out: HashSet<u32>,
    /// Events lost to full rings in this session.
    pub dropped: u64,
    /// Still read.
    pub up: bool,
    cap: usize,
}

impl Proc {
    fn slot(&mut self, func: u32) -> Option<&mut FuncFigures> {
        if !self.funcs.contains_key(&func) {
            if self.funcs.len() >= self.cap {
                self.left_out.insert(func);
                return None;
            }
            self.funcs.insert(func, FuncFigures::default());
        }
        self.funcs.get_mut(&func)
    }

    fn set_names(&mut self, names: &[String]) {
        if names.len() != self.names.len() {
            self.names = names.iter().map(|n| Arc::from(n.as_str())).collect();
        }
    }

    fn snapshot(&self) -> ProcSnap {
        let mut funcs: Vec<(Arc<str>, FuncFigures)> = self
            .funcs
            .iter()
            .map(|(f, v)| {
                let name = self
                    .names
                    .get(*f as usize)
                    .cloned()
                    .unwrap_or_else(|| Arc::from(format!("#{f}").as_str()));
                (name, v.clone())
            })
            .collect();
        funcs.sort_by(|a, b| a.0.cmp(&b.0));
        ProcSnap {
            pid: self.pid.to_string(),
            exe: self.exe.clone(),
            funcs,
            dropped: self.dropped,
            left_out: self.left_out.len() as u64,
            up: self.up,
        }
    }
}

/// A process's figures at one scrape.
#[derive(Debug)]
struct ProcSnap {
    pid: String,
    exe: String,
    funcs: Vec<(Arc<str>, FuncFigures)>,
    dropped: u64,
    left_out: u64,
    up: bool,
}

/// Every process's figures at one scrape (rendered by `prometheus-client`).
#[derive(Debug)]
struct Snapshot(Vec<ProcSnap>);

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let fl = |p: &'_ ProcSnap, name: &'_ Arc<str>| -> [(&'static str, String); 3] {
            [
                ("function", name.to_string()),
                ("pid", p.pid.clone()),
                ("exe", p.exe.clone()),
            ]
        };
        {
            let mut e =
                enc.encode_descriptor(m::CALLS, m::HELP_CALLS, None, MetricType::Counter)?;
            for p in &self.0 {
                for (name, f) in &p.funcs {
                    let l = fl(p, name);
                    e.encode_family(&l)?
                        .encode_counter::<NoLabelSet, _, u64>(&f.hist.count, None)?;
                }
            }
        }
        {
            let mut e = enc.encode_descriptor(
                m::NOT_RETURNED,
                m::HELP_NOT_RETURNED,
                None,
                MetricType::Counter,
            )?;
            for p in &self.0 {
                for (name, f) in &p.funcs {
                    let l = fl(p, name);
                    e.encode_family(&l)?
                        .encode_counter::<NoLabelSet, _, u64>(&f.not_returned, None)?;
                }
            }
        }
        {
            let mut e = enc.encode_descriptor(
                m::DURATION,
                m::HELP_DURATION,
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            let mut buckets: Vec<(f64, u64)> = BOUNDS_NS
                .iter()
                .map(|&b| (b as f64 / 1e9, 0))
                .chain([(f64::INFINITY, 0)])
                .collect();
            for p in &self.0 {
                for (name, f) in &p.funcs {
                    for (b, n) in buckets.iter_mut().zip(f.hist.counts) {
                        b.1 = n;
                    }
                    let l = fl(p, name);
                    e.encode_family(&l)?.encode_histogram::<NoLabelSet>(
                        f.hist.sum_ns as f64 / 1e9,
                        f.hist.count,
                        &buckets,
                        None,
                    )?;
                }
            }
        }
        let pl = |p: &ProcSnap| [("pid", p.pid.clone()), ("exe", p.exe.clone())];
        {
            let mut e =
                enc.encode_descriptor(m::DROPPED, m::HELP_DROPPED, None, MetricType::Counter)?;
            for p in &self.0 {
                e.encode_family(&pl(p))?
                    .encode_counter::<NoLabelSet, _, u64>(&p.dropped, None)?;
            }
        }
        {
            let mut e =
                enc.encode_descriptor(m::LEFT_OUT, m::HELP_LEFT_OUT, None, MetricType::Counter)?;
            for p in &self.0 {
                e.encode_family(&pl(p))?
                    .encode_counter::<NoLabelSet, _, u64>(&p.left_out, None)?;
            }
        }
        {
            let mut e = enc.encode_descriptor(m::UP, m::HELP_UP, None, MetricType::Gauge)?;
            for p in &self.0 {
                e.encode_family(&pl(p))?.encode_gauge(&(p.up as u64))?;
            }
        }
        Ok(())
    }
}

impl Snapshot {
    /// The delimited protobuf exposition: the same families, names and
    /// labels as the text, histograms with classic and native buckets,
    /// written to `out` as it is encoded (see [`proto::Writer`]).
    fn protobuf(&self, out: &mut dyn Write) -> std::io::Result<()> {
        fn fl<'a>(p: &'a ProcSnap, name: &'a str) -> [(&'static str, &'a str); 3] {
            [("function", name), ("pid", &p.pid), ("exe", &p.exe)]
        }
        fn pl(p: &ProcSnap) -> [(&'static str, &str); 2] {
            [("pid", &p.pid), ("exe", &p.exe)]
        }
        let mut w = proto::Writer::new(out);
        w.family(
            &format!("{}_total", m::CALLS),
            m::HELP_CALLS,
            ProtoType::Counter,
            &|emit| {
                for p in &self.0 {
                    for (name, f) in &p.funcs {
                        emit(proto::counter(&fl(p, name), f.hist.count));
                    }
                }
            },
        )?;
        w.family(
            &format!("{}_total", m::NOT_RETURNED),
            m::HELP_NOT_RETURNED,
            ProtoType::Counter,
            &|emit| {
                for p in &self.0 {
                    for (name, f) in &p.funcs {
                        emit(proto::counter(&fl(p, name), f.not_returned));
                    }
                }
            },
        )?;
        w.family(
            &format!("{}_seconds", m::DURATION),
            m::HELP_DURATION,
            ProtoType::Histogram,
            &|emit| {
                for p in &self.0 {
                    for (name, f) in &p.funcs {
                        emit(proto::histogram_metric(&fl(p, name), &f.hist, &f.native));
                    }
                }
            },
        )?;
        w.family(
            &format!("{}_total", m::DROPPED),
            m::HELP_DROPPED,
            ProtoType::Counter,
            &|emit| {
                for p in &self.0 {
                    emit(proto::counter(&pl(p), p.dropped));
                }
            },
        )?;
        w.family(
            &format!("{}_total", m::LEFT_OUT),
            m::HELP_LEFT_OUT,
            ProtoType::Counter,
            &|emit| {
                for p in &self.0 {
                    emit(proto::counter(&pl(p), p.left_out));
                }
            },
        )?;
        w.family(m::UP, m::HELP_UP, ProtoType::Gauge, &|emit| {
            for p in &self.0 {
                emit(proto::gauge(&pl(p), if p.up { 1.0 } else { 0.0 }));
            }
        })
    }
}

/// A `fmt::Write` onto an `io::Write` (the text encoder writes the former),
/// keeping the first I/O error.
struct FmtIo<'a> {
    w: &'a mut dyn Write,
    err: Option<std::io::Error>,
}

impl std::fmt::Write for FmtIo<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.w.write_all(s.as_bytes()).map_err(|e| {
            self.err.get_or_insert(e);
            std::fmt::Error
        })
    }
}

/// The processes served, by pid.
#[derive(Default, Clone)]
pub struct Store {
    procs: Arc<Mutex<BTreeMap<i32, Arc<Mutex<Proc>>>>>,
}

/// The content type of Prometheus's text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics text.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Store {
    fn snapshot(&self) -> Snapshot {
        let procs: Vec<Arc<Mutex<Proc>>> = lock(&self.procs).values().cloned().collect();
        Snapshot(procs.iter().map(|p| lock(p).snapshot()).collect())
    }

    /// `/metrics` from the figures now: the delimited protobuf exposition
    /// (with native histograms) if `accept` prefers it, else OpenMetrics
    /// text if it asks for it, else Prometheus's text format 0.0.4. Returns
    /// the content type and what writes the body as it is sent, in pieces
    /// (no buffer of the whole body).
    pub fn render(&self, accept: &str) -> (&'static str, http::Producer) {
        let snap = self.snapshot();
        if proto::accepts(accept) {
            return (proto::CONTENT_TYPE, Box::new(move |w| snap.protobuf(w)));
        }
        let om = accept.contains("application/openmetrics-text");
        let produce = move |w: &mut dyn Write| {
            let mut reg = Registry::default();
            reg.register_collector(Box::new(snap));
            let mut f = FmtIo { w, err: None };
            let r = if om {
                prometheus_client::encoding::text::encode(&mut f, &reg)
            } else {
                prometheus_client::encoding::prometheus_text::encode(&mut f, &reg)
            };
            match (r, f.err) {
                (_, Some(e)) => Err(e),
                (Err(_), None) => Err(std::io::Error::other(
                    "the exposition could not be rendered",
                )),
                (Ok(()), None) => Ok(()),
            }
        };
        let ct = if om {
            OPENMETRICS_TEXT
        } else {
            PROMETHEUS_TEXT
        };
        (ct, Box::new(produce))
    }

    /// The pids served.
    pub fn pids(&self) -> Vec<i32> {
        lock(&self.procs).keys().copied().collect()
    }

    fn insert(&self, pid: i32, p: Arc<Mutex<Proc>>) {
        lock(&self.procs).insert(pid, p);
    }

    fn remove(&self, pid: i32) {
        lock(&self.procs).remove(&pid);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The HTTP handler of a store.
pub fn handler(store: Store) -> Arc<http::Handler> {
    Arc::new(move |r: &Request| match r.path.as_str() {
        "/metrics" => {
            let (ct, produce) = store.render(&r.accept);
            Response {
                status: 200,
                content_type: ct.into(),
                body: http::Body::Stream(Box::new(move |w| {
                    let r = produce(w);
                    give_back_memory();
                    r
                })),
            }
        }
        "/" => Response::text(
            200,
            "tracer serve: Prometheus metrics of traced functions at /metrics\n",
        ),
        _ => Response::text(404, "not found; the metrics are at /metrics\n"),
    })
}

/// Return the free memory of a scrape's copy to the system. The copy (about
/// 400 bytes a function) is freed when the scrape ends, but glibc keeps
/// freed memory in the arena of the worker that freed it: with four
/// workers, a program serving 100,000 functions would otherwise keep four
/// copies' worth of resident memory it no longer uses.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; no pointer is
    // passed and none is invalidated.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bind `addr` for serving: loopback only unless `allow_remote`.
pub fn bind(addr: &str, allow_remote: bool) -> Result<std::net::TcpListener, Error> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<std::net::SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| Error {
            code: crate::exit::USAGE,
            msg: format!(
                "--listen {addr}: not an address to listen on ({e}); e.g. --listen 127.0.0.1:9464"
            ),
        })?
        .collect();
    if let Some(a) = addrs.iter().find(|a| !http::is_loopback(a)) {
        if !allow_remote {
            return Err(Error {
                code: crate::exit::USAGE,
                msg: format!(
                    "--listen {addr}: {} is not a loopback address, so anyone who can reach this \
                     machine could read the names and timings of your functions. Add \
                     --allow-remote to serve it there anyway (with a firewall or a scraper on a \
                     private network), or listen on 127.0.0.1",
                    a.ip()
                ),
            });
        }
    }
    std::net::TcpListener::bind(&addrs[..]).map_err(|e| {
        Error::failed(format!(
            "cannot listen on {addr}: {e}; pick another port (or :0 for any free one)"
        ))
    })
}

/// The executable name of `pid` (the basename of `/proc/PID/exe`, else its
/// command name).
pub fn exe_name(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .map(|n| printable(&n).into_owned())
        .unwrap_or_else(|| client::comm(pid))
}

/// Function indices matching `pattern` in the process behind `c`.
fn resolve(c: &mut Client, pattern: &str) -> Result<Vec<u32>, Error> {
    let mut v = Vec::new();
    let mut from = 0u64;
    loop {
        let r: msg::List = c.request_as(&AgentRequest::List {
            pattern: Some(pattern.to_string()),
            from: Some(from),
            max: Some(crate::list::LIST_PAGE),
        })?;
        v.extend(r.functions.iter().map(|f| f.index));
        match r.next.map(|n| n as u64) {
            Some(n) if n > from => from = n,
            _ => return Ok(v),
        }
    }
}

/// How a process's thread started.
pub type Started = Result<(), Error>;

/// Read process `pid` into `proc` until it ends or `stop` is set: enable
/// `opts.pattern` first (disabled again at the end). `started` gets the
/// outcome of the set-up.
fn read_process(
    pid: i32,
    opts: &Options,
    proc: &Mutex<Proc>,
    stop: &AtomicBool,
    started: std::sync::mpsc::Sender<Started>,
) {
    let mut changed: Vec<String> = Vec::new();
    let setup = (|| -> Result<(Reader, Option<Vec<bool>>), Error> {
        let mut c = Client::connect(pid)?;
        let keep = match &opts.pattern {
            Some(p) => {
                let idx = resolve(&mut c, p)?;
                let v: msg::Changed = c.request_as(&AgentRequest::Enable {
                    pattern: Some(p.clone()),
                    capture: None,
                    // What the user enabled stays as it is (its capture
                    // too); only what this enables is disabled at the end.
                    keep: true,
                })?;
                changed = v.changed;
                let mut m = vec![false; idx.iter().max().map_or(0, |&i| i as usize + 1)];
                for i in &idx {
                    m[*i as usize] = true;
                }
                Some(m)
            }
            None => None,
        };
        let enabled: Vec<String> = c
            .request_as::<msg::Status>(&AgentRequest::Status)
            .map(|s| s.enabled)
            .unwrap_or_default()
            .iter()
            .map(|s| printable(s).into_owned())
            .collect();
        let reader = Reader::attach(c)?;
        let mut p = lock(proc);
        p.set_names(&reader.names);
        // Enabled functions get series (zeros) before their first call.
        let by_name: HashMap<&str, u32> = reader
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u32))
            .collect();
        for n in &enabled {
            if let Some(&i) = by_name.get(n.as_str()) {
                if keep
                    .as_ref()
                    .is_none_or(|k| k.get(i as usize).copied().unwrap_or(false))
                {
                    p.slot(i);
                }
            }
        }
        Ok((reader, keep))
    })();
    let (mut reader, keep) = match setup {
        Ok(x) => {
            let _ = started.send(Ok(()));
            x
        }
        Err(e) => {
            let _ = started.send(Err(e));
            if !changed.is_empty() {
                disable(pid, &changed);
            }
            return;
        }
    };
    let keep = |f: u32| {
        keep.as_ref()
            .is_none_or(|s| s.get(f as usize).copied().unwrap_or(false))
    };
    let mut walker = Walker::new();
    let mut buf: Vec<(u64, tracer_core::event::Event)> = Vec::new();
    let mut failed = None;
    loop {
        buf.clear();
        let n = match reader.poll_each(|t, e| buf.push((t, *e))) {
            Ok(n) => n,
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        let ended = reader.ended();
        {
            let mut p = lock(proc);
            p.set_names(&reader.names);
            for (tid, e) in &buf {
                walker.feed(*tid, e, &mut |c| match c {
                    Call::Returned { func, dur, .. } if keep(func) => {
                        let ns = reader.ns(dur).max(1);
                        if let Some(s) = p.slot(func) {
                            s.hist.record(ns);
                            s.native.record(ns);
                        }
                    }
                    Call::Left { func, .. } | Call::Untracked { func } if keep(func) => {
                        if let Some(s) = p.slot(func) {
                            s.not_returned += 1;
                        }
                    }
                    _ => {}
                });
            }
            p.dropped = reader.losses().iter().map(|l| l.dropped).sum();
            if ended {
                p.up = false;
            }
        }
        if ended || stop.load(Ordering::Relaxed) {
            break;
        }
        if n == 0 {
            std::thread::sleep(Duration::from_millis(5));
        } else if n < 4096 {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    lock(proc).up = false;
    let ended = reader.ended();
    reader.detach();
    match failed {
        Some(e) => eprintln!("tracer: serve: stopped reading process {pid}: {e}"),
        None if ended => eprintln!("tracer: serve: process {pid} ended"),
        None => {}
    }
    if !changed.is_empty() && !ended && client::alive(pid) {
        disable(pid, &changed);
    }
}

fn disable(pid: i32, changed: &[String]) {
    if let Ok(mut c) = Client::connect(pid) {
        let _ = crate::control::disable_exact(&mut c, changed);
    }
}

/// A process being read.
struct Running {
    thread: std::thread::JoinHandle<()>,
    proc: Arc<Mutex<Proc>>,
}

/// Start reading `pid` on its own thread; returns once the set-up is done
/// (its outcome) or after 30 s.
fn start(
    pid: i32,
    opts: &Options,
    store: &Store,
    stop: &'static AtomicBool,
) -> Result<Running, Error> {
    let proc = Arc::new(Mutex::new(Proc {
        pid,
        exe: exe_name(pid),
        up: true,
        cap: opts.max_functions,
        ..Proc::default()
    }));
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = {
        let (proc, opts) = (Arc::clone(&proc), opts.clone());
        std::thread::Builder::new()
            .name(format!("serve-{pid}"))
            .spawn(move || read_process(pid, &opts, &proc, stop, tx))
            .map_err(|e| Error::failed(format!("cannot start a thread: {e}")))?
    };
    match rx.recv_timeout(client::REPLY_TIMEOUT) {
        Ok(Ok(())) => {
            store.insert(pid, Arc::clone(&proc));
            Ok(Running { thread, proc })
        }
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(Error::no_target(format!(
            "process {pid} did not answer within {} s",
            client::REPLY_TIMEOUT.as_secs()
        ))),
    }
}

/// Serve until `stop`: process `pid`, or with `pid == None` every traced
/// process of this user (rescanned every second).
pub fn run(
    listener: std::net::TcpListener,
    pid: Option<i32>,
    opts: &Options,
    stop: &'static AtomicBool,
) -> Result<i32, Error> {
    let store = Store::default();
    let addr = listener
        .local_addr()
        .map_err(|e| Error::failed(format!("cannot read the bound address: {e}")))?;
    let mut running: BTreeMap<i32, Running> = BTreeMap::new();
    if let Some(p) = pid {
        running.insert(p, start(p, opts, &store, stop)?);
    }
    let limits = http::Limits::default();
    http::serve(listener, 4, limits, handler(store.clone()), &|name, f| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map(|_| ())
    })
    .map_err(|e| Error::failed(format!("cannot start the HTTP server: {e}")))?;
    eprintln!("tracer: serving http://{addr}/metrics");
    // Processes that refused (another reader attached, ...): said once.
    let mut refused: HashMap<i32, String> = HashMap::new();
    let mut last_scan: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        if pid.is_none() && last_scan.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            last_scan = Some(Instant::now());
            let live = client::traced_processes().unwrap_or_default();
            for (p, _) in &live {
                if running.contains_key(p) {
                    continue;
                }
                match start(*p, opts, &store, stop) {
                    Ok(r) => {
                        eprintln!("tracer: serve: reading process {p} ({})", lock(&r.proc).exe);
                        refused.remove(p);
                        running.insert(*p, r);
                    }
                    Err(e) => {
                        if refused.get(p) != Some(&e.msg) {
                            eprintln!("tracer: serve: not reading process {p}: {e}");
                            refused.insert(*p, e.msg);
                        }
                    }
                }
            }
            refused.retain(|p, _| live.iter().any(|(q, _)| q == p));
        }
        // Ended processes: with --all their series go; with -p the last
        // figures stay (tracer_process_up 0).
        let done: Vec<i32> = running
            .iter()
            .filter(|(_, r)| r.thread.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for p in done {
            if let Some(r) = running.remove(&p) {
                let _ = r.thread.join();
                if pid.is_none() {
                    store.remove(p);
                } else {
                    eprintln!(
                        "tracer: serve: serving the last figures of process {p} (tracer_process_up 0)"
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (_, r) in running {
        let _ = r.thread.join();
    }
    Ok(crate::exit::OK)
}
