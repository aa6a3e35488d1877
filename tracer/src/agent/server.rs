//! The agent's event loop: the listener and every connection polled
//! together, so a slow or stalled client only ever holds its own.

use super::*;

/// What the agent has done with its connections (in `status`, as `agent`).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) accepted: u64,
    pub(crate) refused_peer: u64,
    pub(crate) refused_full: u64,
    pub(crate) refused_descriptors: u64,
    pub(crate) evicted_idle: u64,
    pub(crate) dropped_slow_request: u64,
    pub(crate) dropped_unread_reply: u64,
    pub(crate) accept_failures: u64,
}

/// The agent's event loop: every connection is a non-blocking socket
/// polled together with the listener, so a slow or stalled client only ever
/// holds its own connection.
pub(crate) struct Server {
    pub(crate) listener: UnixListener,
    pub(crate) own_uid: u32,
    pub(crate) cap: usize,
    pub(crate) conns: Vec<Conn>,
    /// Refused connections waiting for their first request (see
    /// [`MAX_REFUSING`]), with the time they are closed at the latest.
    pub(crate) refusing: Vec<(UnixStream, Instant)>,
    /// `accept` failed for lack of resources: not before this time again.
    pub(crate) accept_after: Option<Instant>,
    pub(crate) backoff: Duration,
    pub(crate) last_accept_log: Option<Instant>,
    pub(crate) last_refusal_log: Option<Instant>,
    pub(crate) counters: Counters,
    pub(crate) scratch: Vec<u8>,
    /// Retired: leave the loop.
    pub(crate) stop: bool,
}

pub(crate) fn serve(listener: UnixListener) {
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
    if QUIT.swap(false, Ordering::AcqRel) {
        // `quit`: its reply out (small: it fits the socket's buffer), the
        // socket gone, the collector ended, this thread too.
        for c in &mut server.conns {
            let _ = c.stream.set_nonblocking(false);
            c.flush(Instant::now());
        }
        remove_socket();
        collect::stop();
    }
    SERVING.store(false, Ordering::Release);
}

/// Milliseconds from `now` to `t`, rounded up, for `poll`.
pub(crate) fn ms_until(now: Instant, t: Instant) -> i32 {
    let d = t.saturating_duration_since(now);
    (d.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32
}

impl Server {
    /// One turn: wait for something to do, then serve every connection that
    /// is ready (one request each), enforce deadlines, take new connections.
    pub(crate) fn turn(&mut self) {
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

    pub(crate) fn close_dead(&mut self) {
        self.conns.retain(|c| {
            if c.dead && c.attached {
                collect::set_external(false);
            }
            !c.dead
        });
    }

    /// Answer the complete request in connection `i`.
    pub(crate) fn handle(&mut self, i: usize, now: Instant) {
        let agent = self.agent_counters();
        let c = &mut self.conns[i];
        let t0 = Instant::now();
        let (reply, fds, keep) = respond(c, &agent);
        c.done_reading();
        c.reply(&reply, fds, !keep, now);
        // A heavy request (naming every function of a large program,
        // enabling 10^5 functions) freed what it built in the middle of the
        // heap: hand it back, or the program stays that much larger. Cheap
        // requests (status, rings) skip it; a large reply is trimmed after
        // once it is sent (`Conn::flush`).
        if t0.elapsed() >= HEAVY_REQUEST {
            crate::sys::trim_heap();
        }
        self.stop |= c.retire || QUIT.load(Ordering::Acquire);
    }

    pub(crate) fn agent_counters(&self) -> AgentCounters {
        let k = &self.counters;
        AgentCounters {
            connections: self.conns.len(),
            max_connections: self.cap,
            accepted: k.accepted,
            refused_peer: k.refused_peer,
            refused_full: k.refused_full,
            refused_descriptors: k.refused_descriptors,
            evicted_idle: k.evicted_idle,
            dropped_slow_request: k.dropped_slow_request,
            dropped_unread_reply: k.dropped_unread_reply,
            accept_failures: k.accept_failures,
        }
    }

    /// Take the waiting connections (a few per turn).
    pub(crate) fn accept(&mut self, now: Instant) {
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
    pub(crate) fn admit(&mut self, stream: UnixStream, now: Instant) {
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
    pub(crate) fn refuse(&mut self, stream: UnixStream, msg: &str, now: Instant) {
        if send_now(&stream, &error(msg)).is_ok() && self.refusing.len() < MAX_REFUSING {
            self.refusing.push((stream, now + REFUSE_LINGER));
        }
    }
}

/// Send a small message at once, or not at all (never blocks).
pub(crate) fn send_now(s: &UnixStream, v: &Value) -> std::io::Result<()> {
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

pub(crate) fn peer_cred(s: &UnixStream) -> Option<libc::ucred> {
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
