//! Finding traced processes and talking to their agents.
//!
//! Each process that links the `tracer` crate listens on
//! `$XDG_RUNTIME_DIR/tracer/<pid>.sock` (else `/tmp/tracer-<uid>/<pid>.sock`).
//! Messages are a `u32` little-endian length and that many bytes of JSON; see
//! the `tracer` crate's `agent.rs` for the requests.

use crate::Error;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Protocol version this program speaks.
pub const PROTOCOL_VERSION: u64 = 1;
/// Largest reply accepted.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Where agents of this user put their sockets, most likely first.
pub fn socket_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        v.push(Path::new(&d).join("tracer"));
    }
    // SAFETY: getuid has no preconditions.
    v.push(PathBuf::from(format!("/tmp/tracer-{}", unsafe {
        libc::getuid()
    })));
    v
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

/// The command name of `pid`, from `/proc`.
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The socket of `pid`, if one exists.
pub fn socket_of(pid: i32) -> Option<PathBuf> {
    socket_dirs()
        .into_iter()
        .map(|d| d.join(format!("{pid}.sock")))
        .find(|p| p.exists())
}

/// Live traced processes of this user, `(pid, command)`, sorted by pid (this
/// program excluded). Only the directory agents with this program's
/// environment use is scanned (`$XDG_RUNTIME_DIR/tracer` if set); `-p PID`
/// also finds sockets in the fallback directory.
pub fn traced_processes() -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut v: Vec<(i32, String)> = Vec::new();
    for d in socket_dirs().into_iter().take(1) {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".sock"))
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
    v
}

/// The process to talk to: `pid` if given, else the only traced process of
/// this user.
pub fn find_target(pid: Option<i32>) -> Result<i32, Error> {
    if let Some(p) = pid {
        return Ok(p);
    }
    let procs = traced_processes();
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

/// A connection to one agent.
pub struct Client {
    stream: UnixStream,
    /// The process.
    pub pid: i32,
}

impl Client {
    /// Connect to the agent of `pid`.
    pub fn connect(pid: i32) -> Result<Client, Error> {
        let path = socket_of(pid).ok_or_else(|| no_agent(pid))?;
        let stream = UnixStream::connect(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                Error::no_target(format!(
                    "cannot connect to {}: {e}; run tracer as the process's user or as root",
                    path.display()
                ))
            } else if alive(pid) {
                Error::no_target(format!(
                    "cannot connect to the agent of process {pid} at {}: {e}. Is its tracer-agent \
                     thread alive? Restart the process",
                    path.display()
                ))
            } else {
                no_agent(pid)
            }
        })?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        Ok(Client { stream, pid })
    }

    /// Send `op` with the fields of `extra`, return the reply and any file
    /// descriptors attached to it. An agent error becomes `Err`.
    pub fn call_fds(&mut self, op: &str, extra: Value) -> Result<(Value, Vec<OwnedFd>), Error> {
        let mut req = json!({"v": PROTOCOL_VERSION, "op": op});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                req[k] = v;
            }
        }
        let body = serde_json::to_vec(&req).map_err(|e| Error::failed(e.to_string()))?;
        self.send_raw(&frame(&body)).map_err(|e| self.lost(e))?;
        let (v, fds) = self.recv().map_err(|e| self.lost(e))?;
        if v["ok"].as_bool() == Some(true) {
            Ok((v, fds))
        } else {
            Err(Error::failed(
                v["error"]
                    .as_str()
                    .unwrap_or("the agent refused the request")
                    .to_string(),
            ))
        }
    }

    /// [`Client::call_fds`] without descriptors.
    pub fn call(&mut self, op: &str, extra: Value) -> Result<Value, Error> {
        self.call_fds(op, extra).map(|(v, _)| v)
    }

    fn lost(&self, e: std::io::Error) -> Error {
        if alive(self.pid) {
            Error::failed(format!(
                "lost the connection to process {}: {e}; try again",
                self.pid
            ))
        } else {
            Error::failed(format!("process {} has ended", self.pid))
        }
    }

    /// Write raw bytes (for tests of the agent's input checks).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Read one framed reply with its descriptors.
    pub fn recv(&mut self) -> std::io::Result<(Value, Vec<OwnedFd>)> {
        let mut len = [0u8; 4];
        let fds = recv_with_fds(&self.stream, &mut len)?;
        let n = u32::from_le_bytes(len) as usize;
        if n > MAX_MESSAGE {
            return Err(std::io::Error::other(format!(
                "reply of {n} bytes is too large"
            )));
        }
        let mut body = vec![0u8; n];
        self.stream.read_exact(&mut body)?;
        let v = serde_json::from_slice(&body).map_err(std::io::Error::other)?;
        Ok((v, fds))
    }
}

/// Frame a message: `u32` LE length, then the bytes.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// Fill `buf` from the socket, collecting SCM_RIGHTS descriptors.
fn recv_with_fds(s: &UnixStream, buf: &mut [u8]) -> std::io::Result<Vec<OwnedFd>> {
    let mut fds = Vec::new();
    let mut got = 0;
    while got < buf.len() {
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
        let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        // SAFETY: the kernel filled `msg`; CMSG_* walk only its control buffer.
        unsafe {
            let mut cm = libc::CMSG_FIRSTHDR(&msg);
            while !cm.is_null() {
                if (*cm).cmsg_level == libc::SOL_SOCKET && (*cm).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cm);
                    let bytes = (*cm).cmsg_len as usize - (data as usize - cm as usize);
                    for i in 0..bytes / 4 {
                        let fd = (data as *const i32).add(i).read_unaligned();
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                cm = libc::CMSG_NXTHDR(&msg, cm);
            }
        }
        got += n as usize;
    }
    Ok(fds)
}
