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
//! | `rings` | `known` (ids), `arena: true` | `rings`: new blocks `{id,tid,fd,offset,len,ring,counters,nfuncs,dead}`; the arena's memfds attached with SCM_RIGHTS, each once (a block is bytes `offset..offset+len` of memfd number `fd` in that list); `ticks_per_ns` |
//! | `detach` | | the rings go back to the in-process collector |
//! | `buffer` | `events` | ring size for threads that start recording from now on: `events` (as rounded), `threads_with_rings` (they keep theirs) |
//! | `retire` | | only from this process itself: another copy of the agent has taken the socket over; this one stops |
//! | `quit` | | `disabled` (how many functions were enabled): every function is disabled, the rings go back, the agent and collector threads end and the socket is removed (`tracer detach`); [`start_again`] starts a new agent |
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
use serde_json::Value;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tracer_core::wire::msg::{self, AgentCounters, Request};

/// Largest message accepted, in bytes.
pub use tracer_core::wire::MAX_REQUEST as MAX_MESSAGE;
/// Protocol version spoken by this agent.
pub use tracer_core::wire::PROTOCOL_VERSION;
/// Most memfds sent in one reply (the kernel's SCM_MAX_FD is 253).
const MAX_FDS: usize = 200;

static SOCKET_PATH: OnceLock<CString> = OnceLock::new();
/// Set while this copy's agent thread serves.
pub(crate) static SERVING: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);
/// `quit` was asked: the agent thread ends after this turn.
pub(crate) static QUIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Start the agent again after `quit` (`tracer attach` of a process whose
/// library is loaded already): 0 if it serves now, 1 if not (the reason is
/// on standard error).
pub fn start_again() -> i32 {
    if !SERVING.load(Ordering::Acquire) {
        start();
        collect::restart();
    }
    i32::from(!SERVING.load(Ordering::Acquire))
}

/// Every enabled function disabled (for `quit`): how many were.
pub(crate) fn disable_everything() -> usize {
    if crate::runtime::RUNTIME.get().is_none() || crate::runtime::enabled_names().is_empty() {
        return 0;
    }
    crate::disable_report("*").map_or(0, |r| r.changed.len())
}

/// Remove the socket (`quit`).
pub(crate) fn remove_socket() {
    if let Some(p) = SOCKET_PATH.get() {
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::unlink(p.as_ptr()) };
    }
}

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
    let first = SOCKET_PATH.get().is_none();
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
    SERVING.store(true, Ordering::Release);
    // Loaded late by `tracer attach` (the process has threads already):
    // the new thread may not run before `dlopen` returns (it may need a
    // lock the loader holds while it runs this constructor), so do not
    // wait for it; `tracer attach` waits for the agent to answer instead.
    let late = first && std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count()) > 1;
    let wait = Duration::from_millis(if late { 0 } else { 500 });
    if let Err(e) =
        crate::trap::spawn_own_thread_waiting("tracer-agent", move || serve(listener), wait)
    {
        SERVING.store(false, Ordering::Release);
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
    let body = Request::Retire.to_json().to_string();
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

mod conn;
mod requests;
mod server;
use conn::*;
use requests::*;
use server::*;

/// Connections served at once, at most; fewer under a low `RLIMIT_NOFILE`
/// (see [`connection_cap`]).
pub const MAX_CONNECTIONS: usize = 32;
/// A request that took this long is followed by [`crate::sys::trim_heap`].
pub(crate) const HEAVY_REQUEST: Duration = Duration::from_millis(20);
/// A request must arrive whole within this time of its first byte.
pub(crate) const MESSAGE_DEADLINE: Duration = Duration::from_secs(2);
/// A client must take a whole reply within this time, or it is dropped.
pub(crate) const REPLY_DEADLINE: Duration = Duration::from_secs(5);
/// At the cap, a connection idle this long (no request in progress, no reply
/// pending, not attached) is closed to make room for a new one.
pub(crate) const IDLE_EVICT: Duration = Duration::from_secs(1);
/// Refused connections kept open (at most this many, at most
/// [`REFUSE_LINGER`]) until their first request arrives, so that the client
/// reads the refusal instead of failing to send with "Broken pipe".
pub(crate) const MAX_REFUSING: usize = 4;
pub(crate) const REFUSE_LINGER: Duration = Duration::from_millis(200);
/// The longest pause between `accept` attempts after it failed for lack of
/// resources (descriptors, memory); the first pause is 5 ms.
pub(crate) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(100);
/// Read at most this much per `recv`.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// Buffers larger than this are given back after each message.
pub(crate) const KEEP_BUFFER: usize = 64 * 1024;
/// At most this many new connections are taken per turn of the loop.
pub(crate) const ACCEPTS_PER_TURN: usize = 16;

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
