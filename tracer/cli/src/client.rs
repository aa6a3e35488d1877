//! Finding traced processes and talking to their agents.
//!
//! Each process that links the `tracer` crate listens on
//! `$XDG_RUNTIME_DIR/tracer/<pid>.sock` (else `/tmp/tracer-<uid>/<pid>.sock`).
//! Messages are a `u32` little-endian length and that many bytes of JSON; see
//! the `tracer` crate's `agent.rs` for the requests.
//!
//! # Whom this program talks to
//!
//! Nothing found on disk is trusted by itself. Before connecting, the socket's
//! directory must be a real directory (not a symbolic link) owned by the user
//! the target process runs as (the owner of `/proc/PID`), with no permission
//! bits for group or others: nobody else can then have put a socket there.
//! After connecting, the peer's credentials (`SO_PEERCRED`, set by the
//! kernel) must name the target process (or a thread of it) and its user.
//! Anything else is refused with an error naming the directory or socket.
//!
//! Run as root, this program also looks in every user's directories
//! (`/run/user/*/tracer`, `/tmp/tracer-*`, and the target's own
//! `XDG_RUNTIME_DIR`) for the target's socket.
//!
//! Replies are hostile input too: each has a whole-message deadline, a size
//! limit ([`MAX_MESSAGE`]) and a cap on attached descriptors.

use crate::{printable, Error};
use serde_json::{json, Value};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
pub use tracer_core::wire::msg::{self, Request};

/// Largest reply accepted, in bytes.
pub use tracer_core::wire::MAX_REPLY as MAX_MESSAGE;
/// Largest request the agent accepts, in bytes: a larger one is refused
/// here, before it is sent.
pub use tracer_core::wire::MAX_REQUEST;
/// Protocol version this program speaks.
pub use tracer_core::wire::PROTOCOL_VERSION;
/// Most descriptors accepted with one reply (the agent sends at most 200).
pub const MAX_FDS: usize = 1024;
/// How long a request may take before it is reported as unanswered.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Interruptions so far (see [`interrupt`]).
static INTERRUPTS: AtomicU64 = AtomicU64::new(0);

/// Make every request now waiting for an agent give up; later requests are
/// unaffected (so a Ctrl-C'd session can still detach). For a SIGINT
/// handler: one lock-free atomic add, async-signal-safe.
pub fn interrupt() {
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
}

/// When a request must give up: its deadline, or an [`interrupt`] after it
/// started.
#[derive(Clone, Copy)]
struct Until {
    deadline: Instant,
    interrupts: u64,
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

/// Where agents of this user put their sockets, most likely first.
pub fn socket_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        v.push(tracer_core::wire::socket_dir(Some(Path::new(&d)), uid()));
    }
    v.push(tracer_core::wire::fallback_socket_dir(uid()));
    v
}

/// The user id process `pid` runs as (the owner of `/proc/PID`).
pub fn owner_uid(pid: i32) -> Option<u32> {
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// `XDG_RUNTIME_DIR` in the initial environment of process `pid`, if this
/// program may read it.
fn target_runtime_dir(pid: i32) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"XDG_RUNTIME_DIR="))
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(std::ffi::OsStr::from_bytes(d)))
}

/// Directories the socket of process `pid` may be in, most likely first:
/// this user's; the target's own `XDG_RUNTIME_DIR`; run as root, every
/// user's.
pub fn socket_dirs_for(pid: i32) -> Vec<PathBuf> {
    let mut v = socket_dirs();
    if let Some(d) = target_runtime_dir(pid) {
        v.push(d.join(tracer_core::wire::SOCKET_SUBDIR));
    }
    if euid() == 0 {
        if let Some(u) = owner_uid(pid) {
            v.push(Path::new(&format!("/run/user/{u}")).join(tracer_core::wire::SOCKET_SUBDIR));
            v.push(tracer_core::wire::fallback_socket_dir(u));
        }
        for (parent, keep) in [
            ("/run/user", &(|_: &str| true) as &dyn Fn(&str) -> bool),
            ("/tmp", &|n: &str| n.starts_with("tracer-")),
        ] {
            let Ok(rd) = std::fs::read_dir(parent) else {
                continue;
            };
            let mut found: Vec<PathBuf> = rd
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(keep))
                .map(|e| {
                    if parent == "/run/user" {
                        e.path().join("tracer")
                    } else {
                        e.path()
                    }
                })
                .collect();
            found.sort();
            v.extend(found);
        }
    }
    let mut seen = std::collections::HashSet::new();
    v.retain(|d| seen.insert(d.clone()));
    v
}

/// Is `dir` safe to find agent sockets of a process of user `uid` in: a
/// directory (not a symbolic link) owned by `uid`, with no group or other
/// permission bits? `Err` says why not and what to do.
pub fn check_dir(dir: &Path, uid: u32) -> Result<(), Error> {
    let md = std::fs::symlink_metadata(dir).map_err(|e| {
        Error::no_target(format!(
            "cannot inspect the socket directory {}: {e}",
            printable(&dir.display().to_string())
        ))
    })?;
    let d = printable(&dir.display().to_string()).into_owned();
    let fix = "remove it (as its owner or root) and restart the traced process, or give both \
               the process and tracer a private XDG_RUNTIME_DIR";
    if !md.file_type().is_dir() {
        return Err(Error::no_target(format!(
            "refusing the socket directory {d}: it is not a directory (a symbolic link?), so \
             anyone could have put it there; {fix}"
        )));
    }
    if md.uid() != uid {
        return Err(Error::no_target(format!(
            "refusing the socket directory {d}: it belongs to uid {}, not to uid {uid} who runs \
             the process, so its sockets may impersonate the process's agent; {fix}",
            md.uid()
        )));
    }
    if md.mode() & 0o077 != 0 {
        return Err(Error::no_target(format!(
            "refusing the socket directory {d}: its mode is {:04o}, so other users can put \
             sockets in it; make it private (chmod 700 {d}) and restart the traced process, \
             or {fix}",
            md.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Is process `pid` alive (a zombie is not)?
pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence and permission.
    let exists =
        pid > 0 && unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM };
    exists
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            != Some(true)
}

/// The command name of `pid`, from `/proc`, control characters escaped.
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| printable(s.trim()).into_owned())
        .unwrap_or_else(|_| "?".into())
}

/// The socket of `pid`, if one exists (in any directory, trusted or not:
/// [`Client::connect`] checks).
pub fn socket_of(pid: i32) -> Option<PathBuf> {
    socket_dirs_for(pid)
        .into_iter()
        .map(|d| d.join(tracer_core::wire::socket_name(pid as u32)))
        .find(|p| p.exists())
}

/// The socket of `pid` in a directory that passes [`check_dir`] for the
/// process's user. `Ok(None)`: no socket anywhere; `Err`: only sockets in
/// untrusted directories (the error names the first).
fn trusted_socket_of(pid: i32, uid: u32) -> Result<Option<PathBuf>, Error> {
    let mut refused = None;
    for d in socket_dirs_for(pid) {
        let p = d.join(tracer_core::wire::socket_name(pid as u32));
        if std::fs::symlink_metadata(&p).is_err() {
            continue;
        }
        match check_dir(&d, uid) {
            Ok(()) => return Ok(Some(p)),
            Err(e) => {
                refused.get_or_insert(e);
            }
        }
    }
    match refused {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// Live traced processes of this user, `(pid, command)`, sorted by pid (this
/// program excluded). Only the directory agents with this program's
/// environment use is scanned (`$XDG_RUNTIME_DIR/tracer` if set); `-p PID`
/// also finds sockets in the fallback directory. `Err` if that directory
/// exists but is not safe ([`check_dir`]).
pub fn traced_processes() -> Result<Vec<(i32, String)>, Error> {
    let me = std::process::id() as i32;
    let mut v: Vec<(i32, String)> = Vec::new();
    for d in socket_dirs().into_iter().take(1) {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        check_dir(&d, uid())?;
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_suffix(tracer_core::wire::SOCKET_SUFFIX))
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if pid != me && alive(pid) && !v.iter().any(|(p, _)| *p == pid) {
                v.push((pid, comm(pid)));
            }
        }
    }
    v.sort();
    Ok(v)
}

/// The process to talk to: `pid` if given, else the only traced process of
/// this user.
pub fn find_target(pid: Option<i32>) -> Result<i32, Error> {
    if let Some(p) = pid {
        return Ok(p);
    }
    let procs = traced_processes()?;
    match procs.as_slice() {
        [] => Err(Error::no_target(
            "no traced process of this user is running. Start a program that depends on the \
             `tracer` crate (try `tracer demo`), or use `tracer run -- CMD`",
        )),
        [(p, _)] => Ok(*p),
        many => {
            let list: Vec<String> = many.iter().map(|(p, c)| format!("  {p} {c}")).collect();
            Err(Error::no_target(format!(
                "{} traced processes are running; pick one with -p PID:\n{}",
                many.len(),
                list.join("\n")
            )))
        }
    }
}

fn no_agent(pid: i32) -> Error {
    if !alive(pid) {
        return Error::no_target(format!(
            "no process {pid} is running; list traced processes with `tracer status`, or omit -p"
        ));
    }
    Error::no_target(format!(
        "process {pid} ({}) has no tracer agent. To trace it, make it depend on the `tracer` crate \
         (cargo add tracer) and mark functions with #[tracer::traceable]; the agent then starts by \
         itself. If it already does, check that it runs as your user and that TRACER_AGENT=0 is \
         not set in its environment",
        comm(pid)
    ))
}

/// The kernel's record of who is at the other end of `s`.
fn peer_cred(s: &UnixStream) -> std::io::Result<libc::ucred> {
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
    if r == 0 {
        Ok(cred)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Is the peer `cred` process `pid` (or one of its threads) running as `uid`?
fn peer_is(cred: &libc::ucred, pid: i32, uid: u32) -> bool {
    let same_process = cred.pid == pid
        || (cred.pid > 0 && Path::new(&format!("/proc/{pid}/task/{}", cred.pid)).exists());
    same_process && cred.uid == uid
}

/// Why reading a reply failed.
enum RecvError {
    Io(std::io::Error),
    Timeout,
    Interrupted,
    TooLarge(usize),
    TooManyFds,
    Malformed(String),
}

/// A connection to one agent.
pub struct Client {
    stream: UnixStream,
    /// The process.
    pub pid: i32,
    /// How long each request may take.
    timeout: Duration,
    /// No request may run past this (a `--duration`'s end, plus a margin).
    deadline: Option<Instant>,
}

impl Client {
    /// Connect to the agent of `pid`, after checking that its socket's
    /// directory and the peer are what they must be (see the module docs).
    pub fn connect(pid: i32) -> Result<Client, Error> {
        let uid = owner_uid(pid).ok_or_else(|| no_agent(pid))?;
        let path = trusted_socket_of(pid, uid)?.ok_or_else(|| no_agent(pid))?;
        let shown = printable(&path.display().to_string()).into_owned();
        let stream = UnixStream::connect(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                Error::no_target(format!(
                    "cannot connect to {shown}: {e}; run tracer as the process's user or as root"
                ))
            } else if alive(pid) {
                Error::no_target(format!(
                    "cannot connect to the agent of process {pid} at {shown}: {e}. Is its \
                     tracer-agent thread alive? Restart the process"
                ))
            } else {
                no_agent(pid)
            }
        })?;
        let cred = peer_cred(&stream).map_err(|e| {
            Error::no_target(format!(
                "cannot identify the process behind {shown}: {e}; refusing to talk to it"
            ))
        })?;
        if !peer_is(&cred, pid, uid) {
            return Err(Error::no_target(format!(
                "refusing {shown}: it is served by process {} (uid {}), not by process {pid} \
                 (uid {uid}), so it is not that process's agent. Remove the socket and restart \
                 process {pid}; if it comes back, someone is impersonating the agent",
                cred.pid, cred.uid
            )));
        }
        Ok(Client {
            stream,
            pid,
            timeout: REPLY_TIMEOUT,
            deadline: None,
        })
    }

    /// No request may run past `deadline` (it fails as unanswered then);
    /// `None`: only the per-request timeout applies.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Move the deadline [`Client::set_deadline`] set, if one is set, to
    /// `deadline`.
    pub fn move_deadline(&mut self, deadline: Option<Instant>) {
        if self.deadline.is_some() {
            self.deadline = deadline;
        }
    }

    /// How long each request may take (default [`REPLY_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn request_deadline(&self) -> Until {
        let now = Instant::now();
        let t = now.checked_add(self.timeout).unwrap_or(now);
        Until {
            deadline: match self.deadline {
                Some(d) if d < t => d,
                _ => t,
            },
            interrupts: INTERRUPTS.load(Ordering::Relaxed),
        }
    }

    /// Send `req`, return the reply and any file descriptors attached to
    /// it. An agent error becomes `Err`.
    pub fn request_fds(&mut self, req: &Request) -> Result<(Value, Vec<OwnedFd>), Error> {
        let v = req.to_json();
        let op = v["op"].as_str().unwrap_or("?").to_string();
        self.send_value(&op, &v)
    }

    /// [`Client::request_fds`] without descriptors.
    pub fn request(&mut self, req: &Request) -> Result<Value, Error> {
        self.request_fds(req).map(|(v, _)| v)
    }

    /// [`Client::request`], the reply read as `T` (one of
    /// [`tracer_core::wire::msg`]'s replies).
    pub fn request_as<T: serde::de::DeserializeOwned>(
        &mut self,
        req: &Request,
    ) -> Result<T, Error> {
        // Read straight as `T` (a `hello` of 10^6 names is no value of
        // 10^6 strings first); a reply that does not read so (an error,
        // a key twice) is read as a value, as `request` reads it, for the
        // same answer or error.
        #[derive(serde::Deserialize)]
        struct Answered {
            ok: bool,
        }
        let body = self.request_body(req)?;
        if let Ok(Answered { ok: true }) = serde_json::from_slice::<Answered>(&body) {
            if let Ok(t) = serde_json::from_slice::<T>(&body) {
                return Ok(t);
            }
        }
        let v = self.reply_value(req.to_json()["op"].as_str().unwrap_or("?"), &body)?;
        self.reply_as(req, v)
    }

    /// A reply to `req` read as `T`.
    pub fn reply_as<T: serde::de::DeserializeOwned>(
        &self,
        req: &Request,
        v: Value,
    ) -> Result<T, Error> {
        serde_json::from_value(v).map_err(|e| {
            self.failed(
                req.to_json()["op"].as_str().unwrap_or("?"),
                RecvError::Malformed(e.to_string()),
            )
        })
    }

    /// Send `op` with the fields of `extra`, return the reply and any file
    /// descriptors attached to it. An agent error becomes `Err`. For
    /// requests outside [`Request`] (tests of the agent's checks).
    pub fn call_fds(&mut self, op: &str, extra: Value) -> Result<(Value, Vec<OwnedFd>), Error> {
        let mut req = json!({"v": PROTOCOL_VERSION, "op": op});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                req[k] = v;
            }
        }
        self.send_value(op, &req)
    }

    fn send_value(&mut self, op: &str, req: &Value) -> Result<(Value, Vec<OwnedFd>), Error> {
        let (body, fds) = self.exchange(op, req)?;
        let v = self.reply_value(op, &body)?;
        Ok((v, fds))
    }

    /// Send `req` and return the reply's body as it came, unparsed (its
    /// size checked): for a caller that reads a large reply typed and
    /// borrowed from it (a `list` page). [`Client::reply_value`] gives the
    /// reply as [`Client::request`] would, or its error.
    pub fn request_body(&mut self, req: &Request) -> Result<Vec<u8>, Error> {
        let v = req.to_json();
        let op = v["op"].as_str().unwrap_or("?").to_string();
        self.exchange(&op, &v).map(|(body, _)| body)
    }

    /// A reply's `body` as [`Client::request`] gives it: `Err` if it is not
    /// a JSON object, or is the agent's error (`op`: the request, for the
    /// message).
    pub fn reply_value(&self, op: &str, body: &[u8]) -> Result<Value, Error> {
        let v = parse_body(body).map_err(|e| self.failed(op, e))?;
        if v["ok"].as_bool() == Some(true) {
            Ok(v)
        } else {
            let msg = v["error"]
                .as_str()
                .unwrap_or("the agent refused the request");
            Err(Error::failed(printable(msg).into_owned()))
        }
    }

    /// Send `req` (`op`: its name, for messages); the reply's body and
    /// descriptors.
    fn exchange(&mut self, op: &str, req: &Value) -> Result<(Vec<u8>, Vec<OwnedFd>), Error> {
        let body = serde_json::to_vec(req).map_err(|e| Error::failed(e.to_string()))?;
        if body.len() > MAX_REQUEST {
            return Err(Error::failed(format!(
                "the '{op}' request is {} bytes, over the agent's limit of {MAX_REQUEST} bytes \
                 (1 MiB): use fewer or shorter patterns (globs such as 'app::*' cover many \
                 functions), or split them over several commands",
                body.len()
            )));
        }
        let deadline = self.request_deadline();
        self.send_frame(&frame(&body), deadline)
            .map_err(|e| self.failed(op, e))?;
        self.recv_body_until(deadline)
            .map_err(|e| self.failed(op, e))
    }

    /// [`Client::call_fds`] without descriptors.
    pub fn call(&mut self, op: &str, extra: Value) -> Result<Value, Error> {
        self.call_fds(op, extra).map(|(v, _)| v)
    }

    fn failed(&self, op: &str, e: RecvError) -> Error {
        let pid = self.pid;
        match e {
            RecvError::Timeout => Error::failed(format!(
                "process {pid} did not answer the '{op}' request in time (it may be stopped or \
                 busy); the request may still take effect: check with `tracer status -p {pid}` \
                 before repeating it"
            )),
            RecvError::Interrupted => Error::failed(format!(
                "interrupted while waiting for process {pid} to answer '{op}'; the request may \
                 still take effect: check with `tracer status -p {pid}`"
            )),
            RecvError::TooLarge(n) => Error::failed(format!(
                "process {pid} sent a reply of {n} bytes, over this program's limit of \
                 {MAX_MESSAGE} bytes (64 MiB); it is not speaking the tracer protocol (a \
                 different tracer version, or not a genuine agent): restart it or use a \
                 matching tracer"
            )),
            RecvError::TooManyFds => Error::failed(format!(
                "process {pid} attached more than {MAX_FDS} descriptors to one reply; it is \
                 not speaking the tracer protocol: restart it or use a matching tracer"
            )),
            RecvError::Malformed(m) => Error::failed(format!(
                "process {pid} sent a malformed reply ({}); it is not speaking the tracer \
                 protocol: restart it or use a matching tracer",
                printable(&m)
            )),
            RecvError::Io(e) if alive(pid) => Error::failed(format!(
                "lost the connection to process {pid}: {e}; the '{op}' request may or may not \
                 have taken effect: check with `tracer status -p {pid}` and try again"
            )),
            RecvError::Io(_) => Error::failed(format!("process {pid} has ended")),
        }
    }

    /// Write raw bytes (for tests of the agent's input checks).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let deadline = self.request_deadline();
        self.send_frame(bytes, deadline).map_err(|e| match e {
            RecvError::Io(e) => e,
            _ => std::io::ErrorKind::TimedOut.into(),
        })
    }

    /// Write all of `bytes` by `deadline`, without SIGPIPE.
    fn send_frame(&mut self, mut bytes: &[u8], deadline: Until) -> Result<(), RecvError> {
        while !bytes.is_empty() {
            wait_fd(&self.stream, libc::POLLOUT, deadline)?;
            // SAFETY: `bytes` is valid for `bytes.len()` bytes.
            let n = unsafe {
                libc::send(
                    self.stream.as_raw_fd(),
                    bytes.as_ptr() as *const libc::c_void,
                    bytes.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) {
                    continue;
                }
                return Err(RecvError::Io(e));
            }
            bytes = &bytes[n as usize..];
        }
        Ok(())
    }

    /// Read one framed reply with its descriptors (within the request
    /// timeout).
    pub fn recv(&mut self) -> std::io::Result<(Value, Vec<OwnedFd>)> {
        let deadline = self.request_deadline();
        self.recv_until(deadline).map_err(|e| match e {
            RecvError::Io(e) => e,
            RecvError::Timeout => std::io::ErrorKind::TimedOut.into(),
            RecvError::Interrupted => std::io::ErrorKind::Interrupted.into(),
            RecvError::TooLarge(n) => std::io::Error::other(format!(
                "reply of {n} bytes is over the {MAX_MESSAGE}-byte limit"
            )),
            RecvError::TooManyFds => {
                std::io::Error::other(format!("more than {MAX_FDS} descriptors in one reply"))
            }
            RecvError::Malformed(m) => std::io::Error::other(m),
        })
    }

    fn recv_until(&mut self, deadline: Until) -> Result<(Value, Vec<OwnedFd>), RecvError> {
        let (body, fds) = self.recv_body_until(deadline)?;
        Ok((parse_body(&body)?, fds))
    }

    /// One framed reply's body, unparsed, and its descriptors.
    fn recv_body_until(&mut self, deadline: Until) -> Result<(Vec<u8>, Vec<OwnedFd>), RecvError> {
        let mut fds = Vec::new();
        let mut len = [0u8; 4];
        recv_with_fds(&self.stream, &mut len, &mut fds, deadline)?;
        let n = u32::from_le_bytes(len) as usize;
        if n > MAX_MESSAGE {
            return Err(RecvError::TooLarge(n));
        }
        let mut body = vec![0u8; n];
        recv_with_fds(&self.stream, &mut body, &mut fds, deadline)?;
        Ok((body, fds))
    }
}

/// A reply's body as a JSON object.
fn parse_body(body: &[u8]) -> Result<Value, RecvError> {
    let v = serde_json::from_slice(body).map_err(|e| RecvError::Malformed(e.to_string()))?;
    if !matches!(v, Value::Object(_)) {
        return Err(RecvError::Malformed("not a JSON object".into()));
    }
    Ok(v)
}

/// Frame a message: `u32` LE length, then the bytes.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// Wait until `s` is ready for `events`, or `until` says to give up.
fn wait_fd(s: &UnixStream, events: libc::c_short, until: Until) -> Result<(), RecvError> {
    loop {
        if INTERRUPTS.load(Ordering::Relaxed) != until.interrupts {
            return Err(RecvError::Interrupted);
        }
        let left = until.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RecvError::Timeout);
        }
        let mut p = libc::pollfd {
            fd: s.as_raw_fd(),
            events,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r > 0 {
            return Ok(());
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(RecvError::Io(e));
            }
        }
    }
}

/// Fill `buf` from the socket by `deadline`, collecting SCM_RIGHTS
/// descriptors into `fds` (at most [`MAX_FDS`]).
fn recv_with_fds(
    s: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    deadline: Until,
) -> Result<(), RecvError> {
    let mut got = 0;
    while got < buf.len() {
        wait_fd(s, libc::POLLIN, deadline)?;
        let mut cbuf = [0u64; 256];
        let mut iov = libc::iovec {
            iov_base: buf[got..].as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len() - got,
        };
        // SAFETY: msghdr is plain data; all-zero is a valid empty value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        // SAFETY: the iovec and control buffer are valid for their lengths.
        let n = unsafe {
            libc::recvmsg(
                s.as_raw_fd(),
                &mut msg,
                libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(
                e.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
            ) {
                continue;
            }
            return Err(RecvError::Io(e));
        }
        // SAFETY: the kernel filled `msg`; CMSG_* walk only its control
        // buffer, and each SCM_RIGHTS entry is a descriptor now ours.
        unsafe {
            let mut cm = libc::CMSG_FIRSTHDR(&msg);
            while !cm.is_null() {
                if (*cm).cmsg_level == libc::SOL_SOCKET && (*cm).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cm);
                    let bytes =
                        ((*cm).cmsg_len as usize).saturating_sub(data as usize - cm as usize);
                    for i in 0..bytes / 4 {
                        let fd = (data as *const i32).add(i).read_unaligned();
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                cm = libc::CMSG_NXTHDR(&msg, cm);
            }
        }
        if fds.len() > MAX_FDS {
            return Err(RecvError::TooManyFds);
        }
        if n == 0 {
            return Err(RecvError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        got += n as usize;
    }
    Ok(())
}
