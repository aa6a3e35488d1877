//! The agent: how the `tracer` program reaches a running process.
//!
//! An ELF constructor (see `lib.rs`) calls [`start`] before `main`; it creates
//! the socket (so it exists before the program's first line runs), spawns
//! one thread, `tracer-agent`, and returns. That thread does all control work,
//! so the program's own threads never run any of it, and it sleeps in
//! `poll(2)` while nobody talks to it (no CPU while idle). The runtime itself
//! (registry, clock calibration, SIGTRAP handler) is built lazily, on the
//! first request that needs it. `TRACER_AGENT=0` disables the agent.
//!
//! # The socket
//!
//! `$XDG_RUNTIME_DIR/tracer/<pid>.sock`, else `/tmp/tracer-<uid>/<pid>.sock`.
//! The directory is created with mode 0700 and must belong to this user; the
//! socket gets mode 0600. Sockets of processes that no longer exist are
//! removed when an agent starts; ours is removed at normal exit.
//!
//! Every connection's peer is checked with `SO_PEERCRED`: only the same user
//! or root is served ([`peer_allowed`]); anyone else is refused, and the
//! refusal is logged on standard error.
//!
//! # The protocol (version [`PROTOCOL_VERSION`])
//!
//! A message is a `u32` little-endian length followed by that many bytes of
//! JSON, at most [`MAX_MESSAGE`] bytes. Every request is an object with
//! `"v": 1` and `"op"`; every reply has `"v"` and `"ok"`, and on failure an
//! `"error"` saying what to do. A malformed, oversized, unversioned or unknown
//! request gets an error reply and the connection is closed; the program is
//! unaffected. Requests:
//!
//! | op | fields | reply |
//! | --- | --- | --- |
//! | `hello` | `names`? | `pid`, `exe`, `version`, `clock`, `ticks_per_ns`, `functions` (every function by index, as `list` gives them), or with `names: true` only `names` (their names by index: a reader needs no more) |
//! | `list` | `pattern`?, `from`?, `max`? | `functions`: `{index,name,ident,file,line,enabled,sites,problems,object_offset}`, sorted by name; with `max`, at most that many from position `from` of the sorted list, and `next`: where the next page starts (`null` after the last), `total` |
//! | `enable`, `disable` | `pattern`; `capture`? (enable: [`tracer_core::capture::Capture::encode`]'s number) | `changed` (paths), `skipped` (`[path, reason]`), `warning` |
//! | `status` | | runtime counters, `enabled`, `threads_detail` (each with `not_visible`: why a reader cannot see it, or null), `not_visible` (how many), `reader_attached`, `agent` (connection counters) |
//! | `attach` | | the rings now belong to this connection (one reader at a time) |
//! | `rings` | `known` (ids) | `rings`: new blocks `{id,tid,len,ring,counters,nfuncs,dead}`, their memfds attached with SCM_RIGHTS in that order; `ticks_per_ns` |
//! | `detach` | | the rings go back to the in-process collector |
//! | `retire` | | only from this process itself: another copy of the agent has taken the socket over; this one stops |
//!
//! # Single consumer
//!
//! `attach` hands every per-thread ring to this connection: the in-process
//! collector stops consuming (see `collect.rs`) until the connection sends
//! `detach` or closes, whichever comes first. The reader drains the rings
//! through its own shared mapping and builds histograms itself.
//!
//! An `enable` whose client dies mid-request is still carried out to the end
//! by this thread: a batch is never left half-written.
//!
//! # Serving many clients, none of them trusted to behave
//!
//! The one agent thread runs an event loop: the listener and every client
//! are non-blocking sockets polled together (`poll(2)`), so a client that
//! trickles a request, stops in the middle of one or never reads its reply
//! only ever holds its own connection; the others are served meanwhile. Each
//! turn of the loop answers at most one request per client, in turn.
//!
//! - **Deadlines per message**: a request must arrive whole within
//!   [`MESSAGE_DEADLINE`] of its first byte, and its reply be taken whole
//!   within [`REPLY_DEADLINE`]; otherwise the connection is closed. An idle
//!   connection (between requests) has no deadline: a `trace` session asks
//!   for `rings` when it likes.
//! - **A cap on connections**: [`connection_cap`] (32, or an eighth of
//!   `RLIMIT_NOFILE` if less). Beyond it, a connection idle for
//!   [`IDLE_EVICT`] makes room (never an attached reader); otherwise the new
//!   connection gets an error reply saying so and is closed.
//! - **Descriptors**: the agent holds its listener, at most the cap of
//!   connections and [`MAX_REFUSING`] refused ones for at most 200 ms each.
//!   A connection whose descriptor is among the program's last
//!   [`thread::FD_RESERVE`] below `RLIMIT_NOFILE` is refused at once, so the
//!   program's own `open()` keeps working. `accept` failing (EMFILE, ENFILE,
//!   ENOMEM) backs off, up to [`ACCEPT_BACKOFF_MAX`] between attempts.
//! - **Memory**: per connection one request (at most [`MAX_MESSAGE`]) and
//!   one reply; buffers over 64 KiB are given back after each message, and
//!   everything when the connection closes.
//!
//! `status` reports the connection counters under `agent`.
//!
//! # One agent per process
//!
//! A program that links the tracer crate and also has
//! `libtracer_preload.so` preloaded contains two copies of it, each with
//! its own constructor. The library's copy sees that the executable has the
//! crate's `__tracer_sites` section and starts no agent; the program's own
//! copy (whose constructor runs later) serves, knowing the program's
//! `#[traceable]` functions. Any other pair of copies (two shared libraries
//! linking the crate): the second to start finds an agent of its own pid on
//! the socket, takes the socket over and sends that agent `retire`, which
//! stops it. Either way: one agent thread, one socket (see [`start`]).

use crate::{clock, collect, thread};
use serde_json::{json, Value};
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Largest message accepted, in bytes.
pub use tracer_core::wire::MAX_REQUEST as MAX_MESSAGE;
/// Protocol version spoken by this agent.
pub use tracer_core::wire::PROTOCOL_VERSION;
/// Most memfds sent in one reply (the kernel's SCM_MAX_FD is 253).
const MAX_FDS: usize = 200;

static SOCKET_PATH: OnceLock<CString> = OnceLock::new();

/// Is a peer with user id `peer_uid` allowed to control a process running as
/// `own_uid`? The same user, or root.
pub fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == own_uid || peer_uid == 0
}

/// The directory holding the agents' sockets for this user.
pub fn socket_dir() -> PathBuf {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR");
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    tracer_core::wire::socket_dir(runtime.as_deref().map(Path::new), uid)
}

/// Start the agent thread unless `TRACER_AGENT=0`. Called from the ELF
/// constructor; never panics.
pub fn start() {
    if std::env::var_os(tracer_core::wire::env::AGENT).is_some_and(|v| v == "0") {
        return;
    }
    // A program linking this crate that also has `libtracer_preload.so`
    // preloaded holds two copies of it, each with its own statics and its
    // own constructor. The program's own copy serves: it knows the
    // program's `#[traceable]` functions, and its constructor runs after
    // the library's, which therefore starts no agent.
    if program_has_its_own() {
        return;
    }
    // Any other pair of copies (two shared libraries linking the crate):
    // the last to start takes the socket over, then tells the earlier agent
    // to stop.
    let earlier = earlier_agent();
    // The socket exists before `main` runs: a `tracer` started right after
    // the program (or on its first output) finds it.
    let listener = match bind() {
        Ok(l) => l,
        Err(e) => {
            log(&format!("not started: {e}"));
            return;
        }
    };
    if let Some(s) = earlier {
        retire(s);
    }
    if let Err(e) = crate::trap::spawn_own_thread("tracer-agent", move || serve(listener)) {
        log(&format!("not started: cannot create its thread: {e}"));
    }
}

/// Is this copy of the crate in a shared library (such as the preload
/// library) of a program that links the crate itself (its executable has
/// the `__tracer_sites` section this crate puts in every object linking
/// it)?
fn program_has_its_own() -> bool {
    let (objs, _, _) = crate::pads::discover::loaded_objects();
    let Some(exe) = objs.first() else {
        return false;
    };
    let here = program_has_its_own as *const () as usize;
    !exe.exec.iter().any(|&(s, e)| (s..e).contains(&here))
        && crate::pads::discover::has_section(exe, "__tracer_sites")
}

/// A connection to an agent of this very process already listening on our
/// socket path (another copy of this crate). A socket left by the image
/// this process ran before `exec` (same pid) refuses the connection (its
/// listener was closed on exec), so it does not count.
fn earlier_agent() -> Option<UnixStream> {
    let path = socket_dir().join(tracer_core::wire::socket_name(std::process::id()));
    let s = UnixStream::connect(&path).ok()?;
    peer_cred(&s)
        .is_some_and(|c| c.pid as u32 == std::process::id())
        .then_some(s)
}

/// Ask the earlier agent on `s` to stop (our socket has replaced its own),
/// and wait (2 s at most) for it to say it has.
fn retire(mut s: UnixStream) {
    let body = format!(r#"{{"v":{PROTOCOL_VERSION},"op":"retire"}}"#);
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(body.as_bytes());
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    // SAFETY: `frame` is valid for `frame.len()` bytes.
    let sent = unsafe {
        libc::send(
            s.as_raw_fd(),
            frame.as_ptr() as *const libc::c_void,
            frame.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    let mut reply = [0u8; 4];
    if sent != frame.len() as isize || s.read_exact(&mut reply).is_err() {
        log("another copy of the tracer runtime in this process did not stop its agent; this one serves");
    }
}

fn log(msg: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "tracer agent [{}]: {msg}",
        std::process::id()
    );
}

fn prepare_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    let md = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    if !md.is_dir() || md.uid() != uid {
        return Err(format!(
            "{} is not a directory owned by uid {uid}; remove it or set XDG_RUNTIME_DIR",
            dir.display()
        ));
    }
    if md.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Is process `pid` alive (or at least not known to be gone)?
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() != libc::ESRCH }
}

fn remove_stale(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| {
                n.strip_suffix(tracer_core::wire::SOCKET_SUFFIX)
                    .or_else(|| n.strip_suffix(".new"))
            })
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid > 0 && !alive(pid) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Blocks handed to the attached reader.
static HANDED: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

/// At exit with a reader attached: give it (2 s at most) to take every
/// thread's ring and drain it, so a short program's last events are seen.
fn let_reader_finish() {
    let t0 = std::time::Instant::now();
    while collect::external() && t0.elapsed() < std::time::Duration::from_secs(2) {
        let handed = HANDED.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let pending = thread::all().any(|t| {
            t.owner.load(Ordering::Acquire) != 0
                && thread::block_layout(t).fd >= 0
                && (!handed.contains(&(t as *const thread::ThreadState as u64))
                    || !t.ring.is_empty())
        });
        if !pending {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

extern "C" fn remove_socket_at_exit() {
    let_reader_finish();
    if let Some(p) = SOCKET_PATH.get() {
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::unlink(p.as_ptr()) };
    }
}

/// Create the agent's socket (and its directory), listening.
fn bind() -> Result<UnixListener, String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = socket_dir();
    prepare_dir(&dir)?;
    remove_stale(&dir);
    let path = dir.join(tracer_core::wire::socket_name(std::process::id()));
    // Bound and listening under another name first, then renamed: a client
    // that sees `<pid>.sock` can always connect (between bind and listen it
    // would be refused).
    let new = dir.join(format!("{}.new", std::process::id()));
    let _ = std::fs::remove_file(&new);
    let listener = UnixListener::bind(&new).map_err(|e| format!("{}: {e}", new.display()))?;
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", new.display()))?;
    std::fs::rename(&new, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) {
        if SOCKET_PATH.set(c).is_ok() {
            // SAFETY: registering a plain extern "C" fn.
            unsafe { libc::atexit(remove_socket_at_exit) };
        }
    }
    Ok(listener)
}

/// Connections served at once, at most; fewer under a low `RLIMIT_NOFILE`
/// (see [`connection_cap`]).
pub const MAX_CONNECTIONS: usize = 32;
/// A request must arrive whole within this time of its first byte.
const MESSAGE_DEADLINE: Duration = Duration::from_secs(2);
/// A client must take a whole reply within this time, or it is dropped.
const REPLY_DEADLINE: Duration = Duration::from_secs(5);
/// At the cap, a connection idle this long (no request in progress, no reply
/// pending, not attached) is closed to make room for a new one.
const IDLE_EVICT: Duration = Duration::from_secs(1);
/// Refused connections kept open (at most this many, at most
/// [`REFUSE_LINGER`]) until their first request arrives, so that the client
/// reads the refusal instead of failing to send with "Broken pipe".
const MAX_REFUSING: usize = 4;
const REFUSE_LINGER: Duration = Duration::from_millis(200);
/// The longest pause between `accept` attempts after it failed for lack of
/// resources (descriptors, memory); the first pause is 5 ms.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(100);
/// Read at most this much per `recv`.
const READ_CHUNK: usize = 64 * 1024;
/// Buffers larger than this are given back after each message.
const KEEP_BUFFER: usize = 64 * 1024;
/// At most this many new connections are taken per turn of the loop.
const ACCEPTS_PER_TURN: usize = 16;

/// How many connections the agent serves at once: [`MAX_CONNECTIONS`], or
/// an eighth of `RLIMIT_NOFILE` if that is less (at least 4).
pub fn connection_cap() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return MAX_CONNECTIONS;
    }
    usize::try_from(lim.rlim_cur / 8)
        .unwrap_or(usize::MAX)
        .clamp(4, MAX_CONNECTIONS)
}

/// One client connection: a non-blocking socket, the request being read
/// and the reply being written. At most one of each: a client that sends
/// several requests at once gets them answered in turn (the rest wait in the
/// kernel's socket buffer), so its memory here is one request (at most
/// [`MAX_MESSAGE`] bytes) plus one reply.
struct Conn {
    stream: UnixStream,
    /// The peer's process id.
    peer: i32,
    attached: bool,
    /// Asked this agent to stop (see [`retire`]).
    retire: bool,
    /// The request being read: its 4-byte length, then its body.
    inbuf: Vec<u8>,
    /// When the request being read must be complete (set at its first byte).
    read_by: Option<Instant>,
    /// The reply being sent (from `out_pos`); `out_fds` go with its first
    /// byte.
    out: Vec<u8>,
    out_pos: usize,
    out_fds: Vec<RawFd>,
    /// When the reply being sent must be out.
    write_by: Option<Instant>,
    /// Close once the reply is out.
    closing: bool,
    /// To be closed at the end of this turn.
    dead: bool,
    /// When the last request or reply was completed (or the connection
    /// opened).
    idle_since: Instant,
}

impl Conn {
    fn new(stream: UnixStream, peer: i32, now: Instant) -> Conn {
        Conn {
            stream,
            peer,
            attached: false,
            retire: false,
            inbuf: Vec::new(),
            read_by: None,
            out: Vec::new(),
            out_pos: 0,
            out_fds: Vec::new(),
            write_by: None,
            closing: false,
            dead: false,
            idle_since: now,
        }
    }

    fn sending(&self) -> bool {
        self.out_pos < self.out.len()
    }

    fn idle(&self) -> bool {
        !self.attached && !self.sending() && self.inbuf.is_empty()
    }

    /// The length of the request being read, once its header is in.
    fn body_len(&self) -> Option<usize> {
        let h: [u8; 4] = self.inbuf.get(..4)?.try_into().ok()?;
        Some(u32::from_le_bytes(h) as usize)
    }

    /// Queue `reply` (and `fds`), then try to send it.
    fn reply(&mut self, reply: &Value, fds: Vec<RawFd>, close: bool, now: Instant) {
        self.out.clear();
        if self.out.capacity() > KEEP_BUFFER {
            self.out = Vec::new();
        }
        self.out.extend_from_slice(&[0; 4]);
        if serde_json::to_writer(&mut self.out, reply).is_err() {
            self.dead = true;
            return;
        }
        let n = (self.out.len() - 4) as u32;
        self.out[..4].copy_from_slice(&n.to_le_bytes());
        self.out_pos = 0;
        self.out_fds = fds;
        self.write_by = Some(now + REPLY_DEADLINE);
        self.closing |= close;
        self.flush(now);
    }

    /// Send what the socket takes of the pending reply, without blocking.
    fn flush(&mut self, now: Instant) {
        while self.sending() {
            let rest = &self.out[self.out_pos..];
            let r = if self.out_fds.is_empty() {
                // SAFETY: `rest` is valid for `rest.len()` bytes.
                unsafe {
                    libc::send(
                        self.stream.as_raw_fd(),
                        rest.as_ptr() as *const libc::c_void,
                        rest.len(),
                        libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                    )
                }
            } else {
                send_with_fds(self.stream.as_raw_fd(), rest, &self.out_fds)
            };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::Interrupted => continue,
                    std::io::ErrorKind::WouldBlock => return,
                    _ => {
                        self.dead = true;
                        return;
                    }
                }
            }
            self.out_fds.clear();
            self.out_pos += r as usize;
        }
        self.out.clear();
        if self.out.capacity() > KEEP_BUFFER {
            self.out = Vec::new();
        }
        self.out_pos = 0;
        self.write_by = None;
        self.idle_since = now;
        if self.closing {
            self.dead = true;
        }
    }

    /// Read what has arrived of the current request, without blocking.
    /// `true`: it is complete (in `inbuf`).
    fn read(&mut self, scratch: &mut [u8], now: Instant) -> bool {
        loop {
            let want = match self.body_len() {
                None => 4 - self.inbuf.len(),
                Some(len) => 4 + len - self.inbuf.len(),
            };
            if want == 0 {
                return true;
            }
            let n = want.min(scratch.len());
            match (&self.stream).read(&mut scratch[..n]) {
                Ok(0) => {
                    self.dead = true;
                    return false;
                }
                Ok(n) => {
                    if self.read_by.is_none() {
                        self.read_by = Some(now + MESSAGE_DEADLINE);
                    }
                    self.inbuf.extend_from_slice(&scratch[..n]);
                    if self.inbuf.len() == 4 {
                        let len = self.body_len().unwrap_or(0);
                        if len > MAX_MESSAGE {
                            self.inbuf.clear();
                            self.read_by = None;
                            self.reply(
                                &error(&format!(
                                    "message of {len} bytes exceeds the limit of {MAX_MESSAGE} \
                                     bytes (1 MiB); closing: send smaller requests (fewer or \
                                     shorter patterns)"
                                )),
                                Vec::new(),
                                true,
                                now,
                            );
                            return false;
                        }
                        // The whole body is coming: room for it at once
                        // (at most MAX_MESSAGE, checked above).
                        self.inbuf.reserve(len.min(READ_CHUNK));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(_) => {
                    self.dead = true;
                    return false;
                }
            }
        }
    }

    /// The current request is handled: forget it.
    fn done_reading(&mut self) {
        self.inbuf.clear();
        if self.inbuf.capacity() > KEEP_BUFFER {
            self.inbuf = Vec::new();
        }
        self.read_by = None;
    }
}

/// What the agent has done with its connections (in `status`, as `agent`).
#[derive(Default)]
struct Counters {
    accepted: u64,
    refused_peer: u64,
    refused_full: u64,
    refused_descriptors: u64,
    evicted_idle: u64,
    dropped_slow_request: u64,
    dropped_unread_reply: u64,
    accept_failures: u64,
}

/// The agent's event loop: every connection is a non-blocking socket
/// polled together with the listener, so a slow or stalled client only ever
/// holds its own connection.
struct Server {
    listener: UnixListener,
    own_uid: u32,
    cap: usize,
    conns: Vec<Conn>,
    /// Refused connections waiting for their first request (see
    /// [`MAX_REFUSING`]), with the time they are closed at the latest.
    refusing: Vec<(UnixStream, Instant)>,
    /// `accept` failed for lack of resources: not before this time again.
    accept_after: Option<Instant>,
    backoff: Duration,
    last_accept_log: Option<Instant>,
    last_refusal_log: Option<Instant>,
    counters: Counters,
    scratch: Vec<u8>,
    /// Retired: leave the loop.
    stop: bool,
}

fn serve(listener: UnixListener) {
    if let Err(e) = listener.set_nonblocking(true) {
        log(&format!(
            "stopped: cannot make its socket non-blocking: {e}"
        ));
        return;
    }
    let mut server = Server {
        listener,
        // SAFETY: getuid has no preconditions.
        own_uid: unsafe { libc::getuid() },
        cap: connection_cap(),
        conns: Vec::new(),
        refusing: Vec::new(),
        accept_after: None,
        backoff: Duration::ZERO,
        last_accept_log: None,
        last_refusal_log: None,
        counters: Counters::default(),
        scratch: vec![0; READ_CHUNK],
        stop: false,
    };
    while !server.stop {
        server.turn();
    }
    // Retired: another copy of the agent serves this process now.
    for c in &server.conns {
        if c.attached {
            collect::set_external(false);
        }
    }
}

/// Milliseconds from `now` to `t`, rounded up, for `poll`.
fn ms_until(now: Instant, t: Instant) -> i32 {
    let d = t.saturating_duration_since(now);
    (d.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32
}

impl Server {
    /// One turn: wait for something to do, then serve every connection that
    /// is ready (one request each), enforce deadlines, take new connections.
    fn turn(&mut self) {
        let now = Instant::now();
        let listen = self.accept_after.is_none_or(|t| t <= now);
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(1 + self.conns.len() + MAX_REFUSING);
        fds.push(libc::pollfd {
            fd: if listen {
                self.listener.as_raw_fd()
            } else {
                -1
            },
            events: libc::POLLIN,
            revents: 0,
        });
        for c in &self.conns {
            fds.push(libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events: if c.sending() {
                    libc::POLLOUT
                } else {
                    libc::POLLIN
                },
                revents: 0,
            });
        }
        for (r, _) in &self.refusing {
            fds.push(libc::pollfd {
                fd: r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // Sleep until the next deadline; while TRACER_ENABLE waits for a
        // library, look for one every 10 ms.
        let pending = crate::pending::has_pending();
        let mut timeout = if pending { 10 } else { -1 };
        let deadlines = self
            .conns
            .iter()
            .flat_map(|c| [c.read_by, c.write_by])
            .chain(self.refusing.iter().map(|r| Some(r.1)))
            .chain([self.accept_after.filter(|_| !listen)])
            .flatten();
        for d in deadlines {
            let ms = ms_until(now, d);
            if timeout < 0 || ms < timeout {
                timeout = ms;
            }
        }
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if pending {
            crate::pending::apply_pending();
        }
        if n < 0 {
            // EINTR (or ENOMEM): nothing was reported; go round again.
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                std::thread::sleep(Duration::from_millis(10));
            }
            return;
        }
        let now = Instant::now();
        let nconns = self.conns.len();
        for i in 0..nconns {
            let re = fds[1 + i].revents;
            if re == 0 {
                continue;
            }
            if self.conns[i].sending() {
                self.conns[i].flush(now);
            } else if self.conns[i].read(&mut self.scratch, now) {
                self.handle(i, now);
            }
        }
        for (i, r) in self.refusing.iter_mut().enumerate() {
            if fds[1 + nconns + i].revents != 0 {
                r.1 = now;
            }
        }
        self.refusing.retain(|r| r.1 > now);
        for c in &mut self.conns {
            if c.read_by.is_some_and(|t| t <= now) {
                self.counters.dropped_slow_request += 1;
                c.dead = true;
            } else if c.write_by.is_some_and(|t| t <= now) {
                self.counters.dropped_unread_reply += 1;
                c.dead = true;
            }
        }
        self.close_dead();
        if listen && fds[0].revents != 0 {
            self.accept(now);
        }
    }

    fn close_dead(&mut self) {
        self.conns.retain(|c| {
            if c.dead && c.attached {
                collect::set_external(false);
            }
            !c.dead
        });
    }

    /// Answer the complete request in connection `i`.
    fn handle(&mut self, i: usize, now: Instant) {
        let agent = self.agent_json();
        let c = &mut self.conns[i];
        let (reply, fds, keep) = respond(c, &agent);
        c.done_reading();
        c.reply(&reply, fds, !keep, now);
        self.stop |= c.retire;
    }

    fn agent_json(&self) -> Value {
        let k = &self.counters;
        json!({
            "connections": self.conns.len(),
            "max_connections": self.cap,
            "accepted": k.accepted,
            "refused_peer": k.refused_peer,
            "refused_full": k.refused_full,
            "refused_descriptors": k.refused_descriptors,
            "evicted_idle": k.evicted_idle,
            "dropped_slow_request": k.dropped_slow_request,
            "dropped_unread_reply": k.dropped_unread_reply,
            "accept_failures": k.accept_failures,
        })
    }

    /// Take the waiting connections (a few per turn).
    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPTS_PER_TURN {
            // SAFETY: accept4 on our listener; null address out-pointers
            // are allowed.
            let fd = unsafe {
                libc::accept4(
                    self.listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                )
            };
            if fd >= 0 {
                self.backoff = Duration::ZERO;
                // SAFETY: a fresh descriptor that nothing else owns.
                let stream = unsafe { UnixStream::from_raw_fd(fd) };
                self.admit(stream, now);
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error().unwrap_or(0) {
                libc::EAGAIN => return,
                libc::EINTR | libc::ECONNABORTED => continue,
                _ => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays
                    // queued; try again later instead of spinning.
                    self.counters.accept_failures += 1;
                    self.backoff = (self.backoff * 2)
                        .max(Duration::from_millis(5))
                        .min(ACCEPT_BACKOFF_MAX);
                    self.accept_after = Some(now + self.backoff);
                    if self
                        .last_accept_log
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
                    {
                        self.last_accept_log = Some(now);
                        log(&format!(
                            "cannot accept a connection: {e}; retrying every {} ms at most \
                             (this message is shown once a minute at most)",
                            ACCEPT_BACKOFF_MAX.as_millis()
                        ));
                    }
                    return;
                }
            }
        }
    }

    /// Serve `stream`, or refuse it saying why.
    fn admit(&mut self, stream: UnixStream, now: Instant) {
        let pid = std::process::id();
        let peer = match peer_cred(&stream) {
            Some(cred) if peer_allowed(cred.uid, self.own_uid) => cred.pid,
            Some(cred) => {
                self.counters.refused_peer += 1;
                if self
                    .last_refusal_log
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
                {
                    self.last_refusal_log = Some(now);
                    log(&format!(
                        "refused a connection from pid {} uid {}: only uid {} or root may \
                         control this process (further refusals in the next 10 s are not shown)",
                        cred.pid, cred.uid, self.own_uid
                    ));
                }
                self.refuse(
                    stream,
                    "permission denied: run tracer as the process's user or as root",
                    now,
                );
                return;
            }
            None => {
                self.counters.refused_peer += 1;
                return;
            }
        };
        if thread::fd_in_reserve(stream.as_raw_fd(), thread::FD_RESERVE) {
            self.counters.refused_descriptors += 1;
            // Not kept lingering: its descriptor is the program's.
            let _ = send_now(
                &stream,
                &error(&format!(
                    "process {pid} is short of file descriptors: the agent leaves the last {} \
                     below its RLIMIT_NOFILE to the program. Try again later, or raise the \
                     program's limit (ulimit -n, prlimit --nofile)",
                    thread::FD_RESERVE
                )),
            );
            return;
        }
        if self.conns.len() >= self.cap {
            let victim = self
                .conns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.idle() && now.duration_since(c.idle_since) >= IDLE_EVICT)
                .min_by_key(|(_, c)| c.idle_since)
                .map(|(i, _)| i);
            match victim {
                Some(i) => {
                    self.counters.evicted_idle += 1;
                    let c = self.conns.remove(i);
                    let _ = send_now(
                        &c.stream,
                        &error(&format!(
                            "closed by the agent of process {pid}: this connection was idle while \
                             the agent was at its limit of {} connections; connect again",
                            self.cap
                        )),
                    );
                }
                None => {
                    self.counters.refused_full += 1;
                    let msg = format!(
                        "the agent of process {pid} is already serving its limit of {} \
                         connections (other tracer programs, or clients in the middle of a \
                         request); end some of them or try again in a few seconds",
                        self.cap
                    );
                    self.refuse(stream, &msg, now);
                    return;
                }
            }
        }
        self.counters.accepted += 1;
        self.conns.push(Conn::new(stream, peer, now));
    }

    /// Send `msg` as an error reply and close `stream`, after its first
    /// request if it comes soon (see [`MAX_REFUSING`]).
    fn refuse(&mut self, stream: UnixStream, msg: &str, now: Instant) {
        if send_now(&stream, &error(msg)).is_ok() && self.refusing.len() < MAX_REFUSING {
            self.refusing.push((stream, now + REFUSE_LINGER));
        }
    }
}

/// Send a small message at once, or not at all (never blocks).
fn send_now(s: &UnixStream, v: &Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    // SAFETY: `frame` is valid for `frame.len()` bytes.
    let n = unsafe {
        libc::send(
            s.as_raw_fd(),
            frame.as_ptr() as *const libc::c_void,
            frame.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n as usize != frame.len() {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    Ok(())
}

fn peer_cred(s: &UnixStream) -> Option<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid out-pointers of the right size.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then_some(cred)
}

fn error(msg: &str) -> Value {
    json!({"v": PROTOCOL_VERSION, "ok": false, "error": msg})
}

fn ok(mut v: Value) -> Value {
    v["v"] = json!(PROTOCOL_VERSION);
    v["ok"] = json!(true);
    v
}

/// The reply to the complete request in `c.inbuf`, the descriptors to
/// attach to it, and whether to keep the connection open after it.
fn respond(c: &mut Conn, agent: &Value) -> (Value, Vec<RawFd>, bool) {
    let req: Value = match serde_json::from_slice(c.inbuf.get(4..).unwrap_or(&[])) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) | Err(_) => {
            return (
                error("malformed request: expected a JSON object; closing"),
                Vec::new(),
                false,
            )
        }
    };
    if req["v"].as_u64() != Some(PROTOCOL_VERSION) {
        return (
            error(&format!(
                "unsupported protocol version {}; this agent speaks {PROTOCOL_VERSION}: use a tracer program of the same version",
                req["v"]
            )),
            Vec::new(),
            false,
        );
    }
    let op = req["op"].as_str().unwrap_or("");
    match op {
        "hello" => (hello(req["names"] == true), Vec::new(), true),
        "list" => (list(&req), Vec::new(), true),
        "enable" | "disable" => (set(op == "enable", &req), Vec::new(), true),
        "status" => (status(agent), Vec::new(), true),
        "attach" => {
            if c.attached {
                (ok(json!({})), Vec::new(), true)
            } else if collect::external() {
                (
                    error("another tracer program is already reading this process; stop it first"),
                    Vec::new(),
                    true,
                )
            } else if let Err(e) = crate::runtime::runtime() {
                (error(&e.to_string()), Vec::new(), true)
            } else {
                HANDED.lock().unwrap_or_else(|e| e.into_inner()).clear();
                collect::set_external(true);
                c.attached = true;
                (ok(json!({})), Vec::new(), true)
            }
        }
        "rings" if c.attached => {
            let (v, fds) = rings(&req);
            (v, fds, true)
        }
        "rings" => (
            error("send 'attach' before 'rings'"),
            Vec::new(),
            true,
        ),
        // Only from this process: another copy of the agent took the
        // socket over (see `start`).
        "retire" if c.peer as u32 == std::process::id() => {
            c.retire = true;
            (ok(json!({})), Vec::new(), false)
        }
        "detach" => {
            if c.attached {
                c.attached = false;
                collect::set_external(false);
            }
            (ok(json!({})), Vec::new(), true)
        }
        _ => (
            error(&format!(
                "unknown request '{op}'; closing (is the tracer program newer than this process's tracer crate?)"
            )),
            Vec::new(),
            false,
        ),
    }
}

fn func_json(f: &crate::FunctionInfo) -> Value {
    json!({
        "index": f.index,
        "loaded": f.loaded,
        "compiler_pad": f.compiler_pad,
        "name": f.name,
        "ident": f.ident,
        "file": f.file,
        "line": f.line,
        "enabled": f.enabled,
        "sites": f.sites,
        "problems": f.problems,
        "object_offset": f.object_offset,
    })
}

fn hello(names_only: bool) -> Value {
    let rt = crate::runtime::runtime();
    let mut v = json!({
        "pid": std::process::id(),
        "exe": std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": PROTOCOL_VERSION,
        "clock": clock::source(),
        "ticks_per_ns": clock::ticks_per_ns(),
        "runtime_error": rt.err().map(|e| e.to_string()),
    });
    // By index: events name functions by their position here.
    if names_only {
        v["names"] = json!(crate::runtime::function_names());
    } else {
        let funcs: Vec<Value> = crate::runtime::all_functions()
            .iter()
            .map(func_json)
            .collect();
        v["functions"] = json!(funcs);
    }
    ok(v)
}

fn list(req: &Value) -> Value {
    // A page of the sorted list, so neither side holds all of a program's
    // 10^5-10^6 functions at once.
    let from = req["from"].as_u64().map_or(0, |f| f as usize);
    let max = req["max"]
        .as_u64()
        .map_or(usize::MAX, |m| m.max(1) as usize);
    match crate::runtime::functions_page(req["pattern"].as_str(), from, max) {
        Ok((page, total)) => {
            let to = from.min(total) + page.len();
            let funcs: Vec<Value> = page.iter().map(func_json).collect();
            ok(json!({
                "functions": funcs,
                "total": total,
                "next": (to < total).then_some(to),
            }))
        }
        Err(e) => error(&e.to_string()),
    }
}

fn set(on: bool, req: &Value) -> Value {
    let Some(p) = req["pattern"].as_str() else {
        return error("missing 'pattern'");
    };
    let r = if on {
        // `capture`: `tracer_core::capture::Capture::encode`'s number.
        let cap = req["capture"].as_u64().unwrap_or(0) as u32;
        crate::enable_with(p, crate::Capture::decode(cap))
    } else {
        crate::disable_report(p)
    };
    match r {
        Ok(r) => ok(json!({
            "changed": r.changed,
            "skipped": r.skipped.iter().map(|(f, s)| json!([f, format!("{} (site {:#x})", s.reason, s.addr)])).collect::<Vec<_>>(),
            "syncs": r.syncs,
            "warning": r.warning,
        })),
        Err(e) => error(&e.to_string()),
    }
}

fn status(agent: &Value) -> Value {
    let rt = crate::runtime::runtime();
    let s = crate::stats();
    let enabled: Vec<String> = crate::runtime::enabled_names();
    let threads: Vec<Value> = thread::all()
        .filter(|t| t.owner.load(Ordering::Acquire) != 0)
        .map(|t| {
            json!({
                "tid": t.owner.load(Ordering::Relaxed),
                "capacity": t.ring.capacity(),
                "pending": t.ring.len(),
                "written": t.ring.written(),
                "dropped": t.ring.dropped(),
                "bytes": thread::block_len(t),
                "dead": t.dead.load(Ordering::Relaxed),
                "shared": thread::block_layout(t).fd >= 0,
                "not_visible": thread::unshared_reason(t),
            })
        })
        .collect();
    let not_visible = threads
        .iter()
        .filter(|t| !t["not_visible"].is_null())
        .count();
    ok(json!({
        "pid": std::process::id(),
        "runtime_error": rt.err().map(|e| e.to_string()),
        "enabled": enabled,
        "threads": s.threads,
        "dropped": s.dropped,
        "unmatched": s.unmatched,
        "nested": s.nested,
        "traps_emulated": s.traps_emulated,
        "traps_skipped": s.traps_skipped,
        "traps_rewound": s.traps_rewound,
        "traps_foreign": s.traps_foreign,
        "clock": s.clock,
        "ticks_per_ns": clock::ticks_per_ns(),
        "sync": s.sync,
        "buffer_events": s.buffer_events,
        "buffer_bytes": s.buffer_bytes,
        "reader_attached": collect::external(),
        "returns": s.returns,
        "trampoline": s.trampoline,
        "full_save_reason": s.full_save_reason,
        "unwound": s.unwound,
        "converted_pads": s.converted_pads,
        "threads_detail": threads,
        "not_visible": not_visible,
        "agent": agent,
    }))
}

fn rings(req: &Value) -> (Value, Vec<RawFd>) {
    // Sorted, for a binary search per block (`known` may hold up to a
    // message's worth of ids).
    let mut known: Vec<u64> = req["known"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    known.sort_unstable();
    let mut out = Vec::new();
    let mut fds = Vec::new();
    let mut unshared = 0;
    for t in thread::all() {
        let id = t as *const thread::ThreadState as u64;
        if t.owner.load(Ordering::Acquire) == 0 || known.binary_search(&id).is_ok() {
            continue;
        }
        let l = thread::block_layout(t);
        if l.fd < 0 {
            unshared += 1;
            continue;
        }
        if fds.len() >= MAX_FDS {
            break;
        }
        fds.push(l.fd);
        // Each block once: a reader that keeps asking without `known` must
        // not grow this list (it once grew by every block on every request).
        let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
        if !handed.contains(&id) {
            handed.push(id);
        }
        out.push(json!({
            "id": id,
            "tid": t.owner.load(Ordering::Relaxed),
            "len": l.len,
            "ring": l.ring,
            "counters": l.counters,
            "nfuncs": l.nfuncs,
            "dead": t.dead.load(Ordering::Relaxed),
        }));
    }
    clock::refine();
    (
        ok(json!({
            "rings": out,
            "unshared": unshared,
            "ticks_per_ns": clock::ticks_per_ns(),
            // More than the reader knows: a library was loaded; it asks
            // `hello` again for the names.
            "functions": crate::runtime::function_count(),
        })),
        fds,
    )
}

/// `sendmsg` of `buf` with `fds` attached to its first byte, without
/// blocking or SIGPIPE: bytes sent, or -1 with errno set.
fn send_with_fds(sock: RawFd, buf: &[u8], fds: &[RawFd]) -> isize {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer is `space` bytes, room for one cmsg holding
    // `fds`; CMSG_* stay inside it. The kernel only reads `buf` (iov_base is
    // `*mut` by the C signature).
    unsafe {
        let cm = libc::CMSG_FIRSTHDR(&msg);
        (*cm).cmsg_level = libc::SOL_SOCKET;
        (*cm).cmsg_type = libc::SCM_RIGHTS;
        (*cm).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(cm), fd_bytes);
        libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_check() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000), "root may control anyone's process");
        assert!(!peer_allowed(1001, 1000));
        assert!(
            !peer_allowed(1000, 0),
            "a user may not control root's process"
        );
        assert!(peer_allowed(0, 0));
    }

    #[test]
    fn socket_dir_prefers_xdg_runtime_dir() {
        let d = socket_dir();
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(x) if !x.is_empty() => assert_eq!(d, Path::new(&x).join("tracer")),
            _ => assert!(d.to_string_lossy().starts_with("/tmp/tracer-")),
        }
    }
}
