//! The contract between a traced process's agent and the `tracer` program,
//! written once: both sides take these from here.
//!
//! The messages (length-prefixed JSON over a Unix socket, memfds attached
//! with `SCM_RIGHTS`) are described with the agent (`tracer/src/agent.rs`)
//! and typed in [`msg`]. What both sides must agree on is here: the
//! messages, the protocol version, the size limits, where the sockets live
//! and what they are called, and the environment variables `tracer run`
//! hands a program.

pub mod msg;

use std::path::{Path, PathBuf};

/// The protocol version (`"v"` of every request and reply).
pub const PROTOCOL_VERSION: u64 = 1;

/// The largest request an agent accepts, in bytes (a pattern of 10^4
/// names fits). The `tracer` program refuses a larger one before sending.
pub const MAX_REQUEST: usize = 1 << 20;

/// The largest reply the `tracer` program accepts, in bytes (a page of
/// `list`, the names of 10^6 functions).
pub const MAX_REPLY: usize = 64 << 20;

/// The subdirectory of `XDG_RUNTIME_DIR` holding the sockets.
pub const SOCKET_SUBDIR: &str = "tracer";

/// The socket directory of user `uid` given its `XDG_RUNTIME_DIR` (`None`
/// or empty: unset): `$XDG_RUNTIME_DIR/tracer`, else `/tmp/tracer-UID`.
pub fn socket_dir(runtime_dir: Option<&Path>, uid: u32) -> PathBuf {
    match runtime_dir {
        Some(d) if !d.as_os_str().is_empty() => d.join(SOCKET_SUBDIR),
        _ => fallback_socket_dir(uid),
    }
}

/// `/tmp/tracer-UID`: the socket directory without `XDG_RUNTIME_DIR`.
pub fn fallback_socket_dir(uid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/tracer-{uid}"))
}

/// The socket file name of process `pid`.
pub fn socket_name(pid: u32) -> String {
    format!("{pid}{SOCKET_SUFFIX}")
}

/// The socket files' suffix.
pub const SOCKET_SUFFIX: &str = ".sock";

/// Environment variables: what the runtime reads, and what `tracer run`
/// sets for the program it starts.
pub mod env {
    /// `0`: start no agent (no socket) in this process.
    pub const AGENT: &str = "TRACER_AGENT";
    /// A pattern to enable before `main` (as uftrace's `-F`).
    pub const ENABLE: &str = "TRACER_ENABLE";
    /// `tracer run --args/--retval`: the capture `ENABLE`'s functions are
    /// enabled with (`tracer_core::capture::Capture::encode`'s number).
    pub const CAPTURE: &str = "TRACER_CAPTURE";
    /// Ring size per thread, in events.
    pub const BUFFER_EVENTS: &str = "TRACER_BUFFER_EVENTS";
    /// Set by `tracer run` to its own pid: the command it starts (and only
    /// that process) takes `TRACER_ENABLE` and `TRACER_WAIT_READER`.
    pub const RUN: &str = "TRACER_RUN";
    /// Set by `tracer run`: wait (10 s at most) before `main` until its
    /// reader attached, so the first events reach it.
    pub const WAIT_READER: &str = "TRACER_WAIT_READER";
    /// The preload library `tracer run` should use instead of the one
    /// next to it.
    pub const PRELOAD: &str = "TRACER_PRELOAD";
    /// `HOST:PORT`: the program serves Prometheus `/metrics` there itself.
    pub const METRICS: &str = "TRACER_METRICS";
    /// `1`: let `TRACER_METRICS` be an address that is not loopback.
    pub const METRICS_ALLOW_REMOTE: &str = "TRACER_METRICS_ALLOW_REMOTE";
    /// Functions `TRACER_METRICS` exports at most (default 10,000).
    pub const METRICS_MAX_FUNCTIONS: &str = "TRACER_METRICS_MAX_FUNCTIONS";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths() {
        assert_eq!(
            socket_dir(Some(Path::new("/run/user/1000")), 1000),
            PathBuf::from("/run/user/1000/tracer")
        );
        assert_eq!(
            socket_dir(Some(Path::new("")), 7),
            PathBuf::from("/tmp/tracer-7")
        );
        assert_eq!(socket_dir(None, 7), PathBuf::from("/tmp/tracer-7"));
        assert_eq!(socket_name(42), "42.sock");
    }
}
