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
//! | `enable`, `disable` | `pattern` | `changed` (paths), `skipped` (`[path, reason]`), `warning` |
//! | `status` | | runtime counters, `enabled`, `threads_detail`, `reader_attached` |
//! | `attach` | | the rings now belong to this connection (one reader at a time) |
//! | `rings` | `known` (ids) | `rings`: new blocks `{id,tid,len,ring,counters,nfuncs,dead}`, their memfds attached with SCM_RIGHTS in that order; `ticks_per_ns` |
//! | `detach` | | the rings go back to the in-process collector |
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
//! Connections are served one request at a time by the one agent thread
//! (`poll(2)` over the listener and every client). A client that stops in the
//! middle of a message holds the agent for at most the 2 s read timeout and is
//! then dropped; an idle client costs nothing.

use crate::{clock, collect, thread};
use serde_json::{json, Value};
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

/// Protocol version spoken by this agent.
pub const PROTOCOL_VERSION: u64 = 1;
/// Largest message accepted, in bytes.
pub const MAX_MESSAGE: usize = 1 << 20;
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
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => Path::new(&d).join("tracer"),
        // SAFETY: getuid has no preconditions.
        _ => PathBuf::from(format!("/tmp/tracer-{}", unsafe { libc::getuid() })),
    }
}

/// Start the agent thread unless `TRACER_AGENT=0`. Called from the ELF
/// constructor; never panics.
pub fn start() {
    if std::env::var_os("TRACER_AGENT").is_some_and(|v| v == "0") {
        return;
    }
    // The socket exists before `main` runs: a `tracer` started right after
    // the program (or on its first output) finds it.
    let listener = match bind() {
        Ok(l) => l,
        Err(e) => {
            log(&format!("not started: {e}"));
            return;
        }
    };
    if let Err(e) = crate::trap::spawn_own_thread("tracer-agent", move || serve(listener)) {
        log(&format!("not started: cannot create its thread: {e}"));
    }
}

fn log(msg: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "tracer agent [{}]: {msg}",
        std::process::id()
    );
}

/// `write_all` without SIGPIPE (the program may not ignore it).
fn write_all(s: &UnixStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe {
            libc::send(
                s.as_raw_fd(),
                buf.as_ptr() as *const libc::c_void,
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
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
            .and_then(|n| n.strip_suffix(".sock").or_else(|| n.strip_suffix(".new")))
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
    let path = dir.join(format!("{}.sock", std::process::id()));
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

struct Client {
    stream: UnixStream,
    attached: bool,
}

fn serve(listener: UnixListener) {
    // SAFETY: getuid has no preconditions.
    let own = unsafe { libc::getuid() };
    let mut clients: Vec<Client> = Vec::new();
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(clients.iter().map(|c| c.stream.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // While TRACER_ENABLE waits for a library, look for one every 10 ms.
        let pending = crate::has_pending();
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                if pending { 10 } else { -1 },
            )
        };
        if pending {
            crate::apply_pending();
        }
        if n < 0 {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let mut closed = Vec::new();
        for (i, c) in clients.iter_mut().enumerate() {
            let re = fds[i + 1].revents;
            if re == 0 {
                continue;
            }
            if !handle_one(c) {
                closed.push(i);
            }
        }
        for i in closed.into_iter().rev() {
            let c = clients.remove(i);
            if c.attached {
                collect::set_external(false);
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            if let Ok((stream, _)) = listener.accept() {
                match peer_cred(&stream) {
                    Some(cred) if peer_allowed(cred.uid, own) => {
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                        let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
                        clients.push(Client {
                            stream,
                            attached: false,
                        });
                    }
                    Some(cred) => {
                        log(&format!(
                            "refused a connection from pid {} uid {}: only uid {own} or root may control this process",
                            cred.pid, cred.uid
                        ));
                        let mut s = stream;
                        let _ = send(
                            &mut s,
                            &error(
                                "permission denied: run tracer as the process's user or as root",
                            ),
                            &[],
                        );
                    }
                    None => log("refused a connection whose peer could not be identified"),
                }
            }
        }
    }
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

/// Read one request and answer it. `false`: close the connection.
fn handle_one(c: &mut Client) -> bool {
    let mut len = [0u8; 4];
    if c.stream.read_exact(&mut len).is_err() {
        return false;
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MESSAGE {
        let _ = send(
            &mut c.stream,
            &error(&format!(
                "message of {len} bytes exceeds the {MAX_MESSAGE}-byte limit; closing"
            )),
            &[],
        );
        return false;
    }
    let mut body = vec![0u8; len];
    if c.stream.read_exact(&mut body).is_err() {
        return false;
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) | Err(_) => {
            let _ = send(
                &mut c.stream,
                &error("malformed request: expected a JSON object; closing"),
                &[],
            );
            return false;
        }
    };
    if req["v"].as_u64() != Some(PROTOCOL_VERSION) {
        let _ = send(
            &mut c.stream,
            &error(&format!(
                "unsupported protocol version {}; this agent speaks {PROTOCOL_VERSION}: use a tracer program of the same version",
                req["v"]
            )),
            &[],
        );
        return false;
    }
    let op = req["op"].as_str().unwrap_or("");
    let (reply, fds, keep) = match op {
        "hello" => (hello(req["names"] == true), Vec::new(), true),
        "list" => (list(&req), Vec::new(), true),
        "enable" | "disable" => (set(op == "enable", &req), Vec::new(), true),
        "status" => (status(), Vec::new(), true),
        "attach" => {
            if c.attached {
                (ok(json!({})), Vec::new(), true)
            } else if collect::external() {
                (
                    error("another tracer program is already reading this process; stop it first"),
                    Vec::new(),
                    true,
                )
            } else if let Err(e) = crate::runtime() {
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
    };
    send(&mut c.stream, &reply, &fds).is_ok() && keep
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
    let rt = crate::runtime();
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
        v["names"] = json!(crate::function_names());
    } else {
        let funcs: Vec<Value> = crate::all_functions().iter().map(func_json).collect();
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
    match crate::functions_page(req["pattern"].as_str(), from, max) {
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
        crate::enable_report(p)
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

fn status() -> Value {
    let rt = crate::runtime();
    let s = crate::stats();
    let enabled: Vec<String> = crate::functions()
        .into_iter()
        .filter(|f| f.enabled)
        .map(|f| f.name)
        .collect();
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
            })
        })
        .collect();
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
    }))
}

fn rings(req: &Value) -> (Value, Vec<RawFd>) {
    let known: Vec<u64> = req["known"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut fds = Vec::new();
    let mut unshared = 0;
    for t in thread::all() {
        let id = t as *const thread::ThreadState as u64;
        if t.owner.load(Ordering::Acquire) == 0 || known.contains(&id) {
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
        HANDED.lock().unwrap_or_else(|e| e.into_inner()).push(id);
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
            "functions": crate::function_count(),
        })),
        fds,
    )
}

/// Send one framed message, with `fds` attached to its first byte.
fn send(s: &mut UnixStream, v: &Value, fds: &[RawFd]) -> std::io::Result<()> {
    let body = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    if fds.is_empty() {
        return write_all(s, &frame);
    }
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: frame.as_mut_ptr() as *mut libc::c_void,
        iov_len: frame.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer is `space` bytes, room for one cmsg holding
    // `fds`; CMSG_* stay inside it.
    let sent = unsafe {
        let cm = libc::CMSG_FIRSTHDR(&msg);
        (*cm).cmsg_level = libc::SOL_SOCKET;
        (*cm).cmsg_type = libc::SCM_RIGHTS;
        (*cm).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(cm), fd_bytes);
        libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    write_all(s, &frame[sent as usize..])
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
