//! One client connection: reading a request, writing its reply, each
//! within its deadline.

use super::*;

/// One client connection: a non-blocking socket, the request being read
/// and the reply being written. At most one of each: a client that sends
/// several requests at once gets them answered in turn (the rest wait in the
/// kernel's socket buffer), so its memory here is one request (at most
/// [`MAX_MESSAGE`] bytes) plus one reply.
pub(crate) struct Conn {
    pub(crate) stream: UnixStream,
    /// The peer's process id.
    pub(crate) peer: i32,
    pub(crate) attached: bool,
    /// Asked this agent to stop (see [`retire`]).
    pub(crate) retire: bool,
    /// The request being read: its 4-byte length, then its body.
    pub(crate) inbuf: Vec<u8>,
    /// When the request being read must be complete (set at its first byte).
    pub(crate) read_by: Option<Instant>,
    /// The reply being sent (from `out_pos`); `out_fds` go with its first
    /// byte.
    pub(crate) out: Vec<u8>,
    pub(crate) out_pos: usize,
    pub(crate) out_fds: Vec<RawFd>,
    /// When the reply being sent must be out.
    pub(crate) write_by: Option<Instant>,
    /// Close once the reply is out.
    pub(crate) closing: bool,
    /// To be closed at the end of this turn.
    pub(crate) dead: bool,
    /// When the last request or reply was completed (or the connection
    /// opened).
    pub(crate) idle_since: Instant,
}

impl Conn {
    pub(crate) fn new(stream: UnixStream, peer: i32, now: Instant) -> Conn {
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

    pub(crate) fn sending(&self) -> bool {
        self.out_pos < self.out.len()
    }

    pub(crate) fn idle(&self) -> bool {
        !self.attached && !self.sending() && self.inbuf.is_empty()
    }

    /// The length of the request being read, once its header is in.
    pub(crate) fn body_len(&self) -> Option<usize> {
        let h: [u8; 4] = self.inbuf.get(..4)?.try_into().ok()?;
        Some(u32::from_le_bytes(h) as usize)
    }

    /// Queue `reply` (and `fds`), then try to send it.
    pub(crate) fn reply(&mut self, reply: &Reply, fds: Vec<RawFd>, close: bool, now: Instant) {
        self.out.clear();
        if self.out.capacity() > KEEP_BUFFER {
            self.out = Vec::new();
        }
        self.out.extend_from_slice(&[0; 4]);
        if reply.write(&mut self.out).is_err() {
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
    pub(crate) fn flush(&mut self, now: Instant) {
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
            // A large reply (a page of `list`) sent: its buffer and what
            // built it go back to the system.
            self.out = Vec::new();
            crate::sys::trim_heap();
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
    pub(crate) fn read(&mut self, scratch: &mut [u8], now: Instant) -> bool {
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
                                &Reply::Json(error(&format!(
                                    "message of {len} bytes exceeds the limit of {MAX_MESSAGE} \
                                     bytes (1 MiB); closing: send smaller requests (fewer or \
                                     shorter patterns)"
                                ))),
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
    pub(crate) fn done_reading(&mut self) {
        self.inbuf.clear();
        if self.inbuf.capacity() > KEEP_BUFFER {
            self.inbuf = Vec::new();
        }
        self.read_by = None;
    }
}

/// `sendmsg` of `buf` with `fds` attached to its first byte, without
/// blocking or SIGPIPE: bytes sent, or -1 with errno set.
pub(crate) fn send_with_fds(sock: RawFd, buf: &[u8], fds: &[RawFd]) -> isize {
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
