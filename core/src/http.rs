//! A minimal HTTP/1.1 responder for `GET /metrics`, on a std `TcpListener`,
//! with no dependency: the runtime serves `TRACER_METRICS` with it, and
//! `tracer serve` too (so both get the same limits).
//!
//! Limits, so that a scraper that stalls or floods stalls nobody else:
//!
//! - one acceptor thread reads every request head without blocking on any
//!   connection; the head (request line and headers) must arrive whole
//!   within [`Limits::read`] and fit in [`MAX_HEAD`] bytes, else the
//!   connection is closed (408 / 431); at most [`MAX_PENDING`] heads are in
//!   flight;
//! - a fixed pool of worker threads, started once ([`serve`]'s `workers`),
//!   answers complete requests; the response must be taken within
//!   [`Limits::write`];
//! - requests waiting for a worker are capped ([`Limits::queue`]); beyond,
//!   a new one gets `503` at once and is closed.
//!
//! Every response closes its connection (`Connection: close`); scrapers
//! reconnect, and no idle keep-alive connection holds a worker. A body can
//! be streamed ([`Body::Stream`]): produced while it is sent, so that no
//! buffer ever holds a whole large exposition.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest request head accepted, bytes.
pub const MAX_HEAD: usize = 8192;

/// Time and size limits of a server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The whole request head must arrive within this.
    pub read: Duration,
    /// The whole response must be taken within this.
    pub write: Duration,
    /// Connections accepted and waiting for a worker, at most.
    pub queue: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            read: Duration::from_secs(5),
            write: Duration::from_secs(10),
            queue: 32,
        }
    }
}

/// A request, as far as a metrics endpoint cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The path, query string removed.
    pub path: String,
    /// The `Accept` header (empty if none).
    pub accept: String,
}

/// Writes a streamed body (see [`Body::Stream`]).
pub type Producer = Box<dyn FnOnce(&mut dyn Write) -> std::io::Result<()>>;

/// A response body.
pub enum Body {
    /// Bytes, sent with a `Content-Length`.
    Bytes(Vec<u8>),
    /// Produced while it is sent, so no buffer holds the whole body: the
    /// producer writes through a buffer of [`STREAM_BUFFER`] bytes straight
    /// to the connection (under the write deadline), and the connection's
    /// close ends the body (no `Content-Length`, as HTTP/1.1 allows with
    /// `Connection: close`). Not called for `HEAD`.
    Stream(Producer),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Body::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// Bytes a streamed body is written in, at most (and buffered, at most).
pub const STREAM_BUFFER: usize = 256 << 10;

/// A response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Body.
    pub body: Body,
}

impl Response {
    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8".into(),
            body: Body::Bytes(body.into().into_bytes()),
        }
    }

    /// A `200` response whose body `produce` writes while it is sent.
    pub fn stream(
        content_type: impl Into<String>,
        produce: impl FnOnce(&mut dyn Write) -> std::io::Result<()> + 'static,
    ) -> Response {
        Response {
            status: 200,
            content_type: content_type.into(),
            body: Body::Stream(Box::new(produce)),
        }
    }
}

/// A writer to a connection that gives up at a deadline.
struct Deadline<'a> {
    s: &'a mut TcpStream,
    deadline: Instant,
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.s.set_write_timeout(Some(left))?;
        let end = buf.len().min(STREAM_BUFFER);
        self.s.write(&buf[..end])
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.s.flush()
    }
}

/// What answers requests (called on a worker thread).
pub type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// Starts a thread (the runtime starts its own threads its own way).
pub type Spawn<'a> = dyn Fn(&str, Box<dyn FnOnce() + Send>) -> std::io::Result<()> + 'a;

/// Connections whose request head is still arriving, at most (beyond, a
/// new one gets `503` at once).
pub const MAX_PENDING: usize = 64;

/// Serve `listener` forever: start `workers` worker threads and the
/// acceptor with `spawn`, then return (errors: a thread could not be
/// started).
///
/// The acceptor reads every request head itself, without blocking on any
/// one connection (non-blocking sockets, waited on together with `poll(2)`
/// until one is readable or the earliest head deadline, so an idle server
/// costs no CPU), and hands only complete
/// requests to the workers: a client that connects and sends nothing, or
/// half a head, holds no worker, and is dropped at [`Limits::read`].
pub fn serve(
    listener: TcpListener,
    workers: usize,
    limits: Limits,
    handler: Arc<Handler>,
    spawn: &Spawn<'_>,
) -> std::io::Result<()> {
    let (tx, rx) = sync_channel::<(TcpStream, Request)>(limits.queue.max(1));
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..workers.max(1) {
        let rx = Arc::clone(&rx);
        let handler = Arc::clone(&handler);
        spawn(
            "tracer-metrics",
            Box::new(move || worker(&rx, limits, &*handler)),
        )?;
    }
    spawn(
        "tracer-metrics",
        Box::new(move || accept_loop(&listener, &tx, limits)),
    )
}

/// A connection whose request head is arriving.
struct Pending {
    s: TcpStream,
    buf: Vec<u8>,
    deadline: Instant,
}

/// Answer `status` with a short text and close (best effort, 100 ms).
fn refuse(mut s: TcpStream, status: u16, why: &str) {
    let _ = s.set_nonblocking(false);
    let _ = write_response(
        &mut s,
        Response::text(status, format!("{why}\n")),
        false,
        Instant::now() + Duration::from_millis(100),
    );
}

fn accept_loop(listener: &TcpListener, tx: &SyncSender<(TcpStream, Request)>, limits: Limits) {
    let mut pending: Vec<Pending> = Vec::new();
    let add = |pending: &mut Vec<Pending>, s: TcpStream| {
        if pending.len() >= MAX_PENDING || s.set_nonblocking(true).is_err() {
            refuse(s, 503, "too many connections at once; try again");
            return;
        }
        pending.push(Pending {
            s,
            buf: Vec::new(),
            deadline: Instant::now() + limits.read,
        });
    };
    // Accepted without blocking once `poll(2)` says a connection is there
    // (if this fails, accept blocks only when the listener just went
    // readable and the connection left at once).
    let _ = listener.set_nonblocking(true);
    loop {
        wait(listener, &pending);
        loop {
            match listener.accept() {
                Ok((s, _)) => add(&mut pending, s),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // EMFILE and the like: the listener stays readable, so
                    // back off instead of spinning.
                    std::thread::sleep(Duration::from_millis(10));
                    break;
                }
            }
        }
        let now = Instant::now();
        let mut i = 0;
        while i < pending.len() {
            match poll_head(&mut pending[i]) {
                Poll::Wait if now < pending[i].deadline => i += 1,
                Poll::Wait => {
                    let p = pending.swap_remove(i);
                    refuse(p.s, 408, reason(408));
                }
                Poll::Gone => {
                    pending.swap_remove(i);
                }
                Poll::Bad(status) => {
                    let p = pending.swap_remove(i);
                    refuse(p.s, status, reason(status));
                }
                Poll::Done(req) => {
                    let p = pending.swap_remove(i);
                    let _ = p.s.set_nonblocking(false);
                    match tx.try_send((p.s, req)) {
                        Ok(()) => {}
                        Err(TrySendError::Full((s, _))) => {
                            refuse(s, 503, "too many scrapes at once; try again")
                        }
                        Err(TrySendError::Disconnected(_)) => return,
                    }
                }
            }
        }
    }
}

/// Sleep until `listener` or a pending connection is readable (or hung
/// up), or until the earliest pending deadline.
fn wait(listener: &TcpListener, pending: &[Pending]) {
    use std::os::fd::AsRawFd;
    let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
        .chain(pending.iter().map(|p| p.s.as_raw_fd()))
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let now = Instant::now();
    let timeout = pending.iter().map(|p| p.deadline).min().map_or(-1, |d| {
        // Rounded up: woken before the deadline, a head would wait again.
        let ms = d.saturating_duration_since(now).as_micros().div_ceil(1000);
        ms.min(i32::MAX as u128) as libc::c_int
    });
    // SAFETY: `fds` is a live array of `fds.len()` pollfds; poll only
    // writes their `revents`. Interrupted or failed, the loop just looks
    // again.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
}

enum Poll {
    Wait,
    Gone,
    Bad(u16),
    Done(Request),
}

/// Read what has arrived of `p`'s head, without blocking.
fn poll_head(p: &mut Pending) -> Poll {
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = find_end(&p.buf) {
            return match parse_head(&p.buf[..end]) {
                Ok(r) => Poll::Done(r),
                Err(status) => Poll::Bad(status),
            };
        }
        if p.buf.len() > MAX_HEAD {
            return Poll::Bad(431);
        }
        match p.s.read(&mut chunk) {
            Ok(0) => return Poll::Gone,
            Ok(n) => p.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Poll::Wait,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Poll::Gone,
        }
    }
}

fn worker(rx: &Mutex<Receiver<(TcpStream, Request)>>, limits: Limits, handler: &Handler) {
    loop {
        let (mut s, req) = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(x) => x,
            Err(_) => return,
        };
        let resp = match req.method.as_str() {
            "GET" | "HEAD" => handler(&req),
            _ => Response::text(405, "only GET is served\n"),
        };
        let _ = write_response(
            &mut s,
            resp,
            req.method == "HEAD",
            Instant::now() + limits.write,
        );
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
}

/// Parse a request head (without its final empty line).
fn parse_head(buf: &[u8]) -> Result<Request, u16> {
    let head = std::str::from_utf8(buf).map_err(|_| 400u16)?;
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() {
        return Err(400);
    }
    let mut accept = String::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("accept") {
                accept = v.trim().to_string();
            }
        }
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    Ok(Request {
        method: method.to_string(),
        path,
        accept,
    })
}

fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Write `r` by `deadline` (a scraper that does not read is dropped then;
/// a streamed body is produced within it too).
fn write_response(
    s: &mut TcpStream,
    r: Response,
    head_only: bool,
    deadline: Instant,
) -> std::io::Result<()> {
    let length = match &r.body {
        Body::Bytes(b) => format!("Content-Length: {}\r\n", b.len()),
        Body::Stream(_) => String::new(),
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\n{length}Connection: close\r\n\r\n",
        r.status,
        reason(r.status),
        r.content_type,
    );
    let mut w = Deadline { s, deadline };
    w.write_all(head.as_bytes())?;
    if head_only {
        return w.flush();
    }
    match r.body {
        Body::Bytes(b) => w.write_all(&b)?,
        Body::Stream(produce) => {
            let mut b = std::io::BufWriter::with_capacity(STREAM_BUFFER, &mut w);
            produce(&mut b)?;
            b.flush()?;
        }
    }
    w.flush()
}

/// Is `addr` a loopback address (127.0.0.0/8, ::1)?
pub fn is_loopback(addr: &std::net::SocketAddr) -> bool {
    addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(read: Duration) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let h: Arc<Handler> = Arc::new(|r: &Request| {
            if r.path == "/metrics" {
                Response::text(200, format!("ok {}\n", r.accept))
            } else if r.path == "/big" {
                // 1 MiB in 1000-byte writes, never held whole.
                Response::stream("text/plain", |w| {
                    for i in 0..1048u32 {
                        w.write_all(&[b'a' + (i % 26) as u8; 1000])?;
                    }
                    w.write_all(&[b'.'; 576])
                })
            } else {
                Response::text(404, "no\n")
            }
        });
        let limits = Limits {
            read,
            ..Limits::default()
        };
        serve(l, 2, limits, h, &|name, f| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map(|_| ())
        })
        .unwrap();
        a
    }

    fn get(a: std::net::SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(a).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    #[cfg_attr(miri, ignore = "TCP sockets: Miri runs isolated from the network")]
    fn answers_and_survives_a_stalled_client() {
        // More stalled clients than workers, each allowed an hour to send
        // its head: none holds a worker, so the answer comes while they
        // are all still connected (were they holding the workers, it could
        // only come after they were cut off).
        let a = start(Duration::from_secs(3600));
        let stalled: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(a).unwrap()).collect();
        let r = get(
            a,
            "GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("ok text/plain\n"), "{r}");
        for mut s in stalled {
            s.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            let e = s
                .read(&mut b)
                .expect_err("a stalled client was answered or cut off");
            assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        }
        // A streamed body: no Content-Length, the close ends it.
        let r = get(a, "GET /big HTTP/1.1\r\n\r\n");
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(!head.contains("Content-Length"), "{head}");
        assert_eq!(body.len(), 1 << 20);
        assert!(body.starts_with("aaa") && body.ends_with("..."));
        let r = get(a, "HEAD /big HTTP/1.1\r\n\r\n");
        assert!(r.ends_with("\r\n\r\n"), "{r}");
        let a = start(Duration::from_millis(500));
        let r = get(a, "GET /other HTTP/1.0\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = get(a, "POST /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
        let r = get(a, "garbage\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
        // A client that sends half a head is cut off after the read limit.
        let mut s = TcpStream::connect(a).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    }
}
