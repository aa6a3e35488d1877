//! Reading a process's rings through shared memory.
//!
//! `attach` makes this program the only consumer of the process's rings (its
//! in-process collector stops draining them); `rings` hands over the memfd of
//! every thread block this reader does not have yet. Each is mapped shared and
//! read-write (the consumer position lives in the ring header) and drained
//! with [`Ring::drain`]. When the process ends its memory stays readable
//! through these mappings, so the last events are not lost.
//!
//! Everything the process hands over is checked before it is used: the
//! declared lengths against the memfd's real size (`fstat`) before mapping
//! (a mapping beyond the end of the file would fault on access), the ring
//! header with checked arithmetic ([`Ring::attach`]), capacities against the
//! runtime's largest ring ([`MAX_RING_EVENTS`]), and the ring positions on
//! every drain ([`Ring::try_drain`]). A bad block ends the session with an
//! error that names the process and thread.

use crate::client::{msg, Client, Request};
use crate::{printable, Error};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use tracer_core::event::{Event, Ring};

/// Largest ring accepted, in events: the runtime's own largest
/// (`TRACER_BUFFER_EVENTS` is clamped to it), 1.5 GiB of events.
pub const MAX_RING_EVENTS: u64 = 1 << 26;

/// One mapped thread block.
struct Mapped {
    id: u64,
    base: *mut libc::c_void,
    len: usize,
    ring: Ring,
    /// Events the ring had dropped before this session (subtracted: a
    /// session reports only its own losses).
    dropped_before: u64,
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are our own mapping; the ring is dropped with it.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// A thread's losses, as the reader sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadLoss {
    /// Thread id.
    pub tid: u64,
    /// Events dropped because the ring was full (the reader fell behind).
    pub dropped: u64,
}

/// An attached reader.
pub struct Reader {
    client: Option<Client>,
    rings: Vec<Mapped>,
    /// The process.
    pub pid: i32,
    /// Clock ticks per nanosecond (refreshed with the ring list).
    pub ticks_per_ns: f64,
    /// Function names by index.
    pub names: Vec<String>,
    /// Blocks the process could not share (memfd unavailable there).
    pub unshared: u64,
    last_refresh: Instant,
    ended: bool,
    /// The first `rings` reply is being taken: losses so far are not ours.
    first: bool,
}

impl Reader {
    /// Take over the rings of the process behind `client`.
    pub fn attach(mut client: Client) -> Result<Reader, Error> {
        let req = Request::Hello { names: true };
        let hello: msg::Hello = client.request_as(&req)?;
        let names = names_of(&hello);
        client.request(&Request::Attach)?;
        let mut r = Reader {
            pid: client.pid,
            client: Some(client),
            rings: Vec::new(),
            ticks_per_ns: ticks_per_ns(hello.ticks_per_ns).unwrap_or(1.0),
            names,
            unshared: 0,
            last_refresh: Instant::now(),
            ended: false,
            first: true,
        };
        r.refresh()?;
        Ok(r)
    }

    /// Has the process ended (or its agent gone)?
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Ask for blocks of threads that started since the last call.
    pub fn refresh(&mut self) -> Result<(), Error> {
        self.last_refresh = Instant::now();
        let Some(c) = self.client.as_mut() else {
            return Ok(());
        };
        let known: Vec<u64> = self.rings.iter().map(|m| m.id).collect();
        let req = Request::Rings { known, arena: true };
        let (v, fds) = match c
            .request_fds(&req)
            .and_then(|(v, fds)| Ok((c.reply_as::<msg::Rings>(&req, v)?, fds)))
        {
            Ok(x) => x,
            Err(e) => {
                // A killed process closes its socket before it is a zombie:
                // give it a moment to finish dying before calling this an
                // error (the agent itself never drops a reader).
                let t0 = Instant::now();
                while crate::client::alive(self.pid) {
                    if t0.elapsed() > Duration::from_secs(2) {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                self.ended = true;
                self.client = None;
                return Ok(());
            }
        };
        if let Some(t) = ticks_per_ns(v.ticks_per_ns) {
            self.ticks_per_ns = t;
        }
        self.unshared = v.unshared as u64;
        if v.functions > self.names.len() {
            // A library with traceable functions was loaded: their names.
            if let Ok(h) = c.request_as::<msg::Hello>(&Request::Hello { names: true }) {
                self.names = names_of(&h);
            }
        }
        for (i, info) in v.rings.iter().enumerate() {
            // Older agents attach one memfd per block, in order.
            let which = info.fd.unwrap_or(i);
            let Some(fd) = fds.get(which) else {
                if info.fd.is_none() {
                    // The reply's descriptors ran out (an agent caps them
                    // per reply): the rest come with the next request.
                    break;
                }
                return Err(Error::failed(format!(
                    "process {} handed over a bad event buffer (thread {}): it names descriptor \
                     {which} of the {} it attached. It is not a genuine tracer agent, or not \
                     of this version; restart it",
                    self.pid,
                    info.tid,
                    fds.len()
                )));
            };
            let mut m = map_block(info, fd.as_raw_fd()).map_err(|why| {
                Error::failed(format!(
                    "process {} handed over a bad event buffer (thread {}): {why}. Its memory \
                     is corrupt or it is not a genuine tracer agent; restart it",
                    self.pid, info.tid
                ))
            })?;
            if self.rings.iter().any(|r| r.id == m.id) {
                continue;
            }
            // Rings of threads that start later lose only in this session.
            if self.first {
                m.dropped_before = m.ring.dropped();
            }
            self.rings.push(m);
        }
        self.first = false;
        Ok(())
    }

    fn refresh_if_due(&mut self) -> Result<(), Error> {
        // Every 10 ms: a thread that starts meanwhile fills at most 10 ms of
        // its ring (200k events at 20 M/s, under the default 262,144) before
        // the reader maps it. One socket round trip each.
        if !self.ended && self.last_refresh.elapsed() >= Duration::from_millis(10) {
            self.refresh()?;
            if !crate::client::alive(self.pid) {
                self.ended = true;
            }
        }
        Ok(())
    }

    /// Drain every ring into `out` as `(tid, event)`, sorted by timestamp;
    /// refresh the ring list every 10 ms. Returns events added.
    pub fn poll(&mut self, out: &mut Vec<(u64, Event)>) -> Result<usize, Error> {
        let start = out.len();
        self.poll_each(|tid, e| out.push((tid, *e)))?;
        sort_by_time(&mut out[start..]);
        Ok(out.len() - start)
    }

    /// Drain every ring, handing each event to `f` straight from the shared
    /// memory: in order per thread, threads one after another (the fast path
    /// for consumers that need no global order). Refreshes the ring list
    /// every 10 ms. Returns events consumed.
    pub fn poll_each(&mut self, f: impl FnMut(u64, &Event)) -> Result<usize, Error> {
        self.refresh_if_due()?;
        self.drain_each(f)
    }

    /// Drain the rings mapped already, sorted by timestamp, without asking
    /// the process for new ones: the last drain of a session, which must
    /// not wait on the process once the session's time is up.
    pub fn drain_mapped(&mut self, out: &mut Vec<(u64, Event)>) -> Result<usize, Error> {
        let start = out.len();
        self.drain_each(|tid, e| out.push((tid, *e)))?;
        sort_by_time(&mut out[start..]);
        Ok(out.len() - start)
    }

    /// [`Reader::poll_each`] without the refresh.
    fn drain_each(&mut self, mut f: impl FnMut(u64, &Event)) -> Result<usize, Error> {
        let mut n = 0;
        for m in &self.rings {
            let tid = m
                .ring
                .header()
                .tid
                .load(std::sync::atomic::Ordering::Relaxed);
            n += m
                .ring
                .try_drain(usize::MAX, |e| f(tid, &e.as_read()))
                .map_err(|e| {
                    Error::failed(format!(
                        "the event buffer of thread {tid} of process {} is corrupt ({e}); the \
                     process's memory was overwritten or it is not a genuine tracer agent: \
                     restart it",
                        self.pid
                    ))
                })?;
        }
        Ok(n)
    }

    /// Events each thread has lost to full rings in this session.
    pub fn losses(&self) -> Vec<ThreadLoss> {
        self.rings
            .iter()
            .map(|m| ThreadLoss {
                tid: m
                    .ring
                    .header()
                    .tid
                    .load(std::sync::atomic::Ordering::Relaxed),
                dropped: m.ring.dropped().saturating_sub(m.dropped_before),
            })
            .collect()
    }

    /// Threads seen.
    pub fn threads(&self) -> usize {
        self.rings.len()
    }

    /// Give the rings back to the process (also happens when this is dropped
    /// or the program dies: the agent notices the closed connection).
    pub fn detach(&mut self) {
        if let Some(mut c) = self.client.take() {
            let _ = c.request(&Request::Detach);
        }
    }

    /// Ticks to nanoseconds.
    pub fn ns(&self, ticks: u64) -> u64 {
        (ticks as f64 / self.ticks_per_ns).round() as u64
    }

    /// The connection, while the process lives.
    pub fn client(&mut self) -> Option<&mut Client> {
        self.client.as_mut()
    }
}

/// The clock ratio of a reply, if it is a usable one (finite, positive).
fn ticks_per_ns(t: f64) -> Option<f64> {
    Some(t).filter(|t| t.is_finite() && *t > 0.0)
}

/// Function names by index, from a `hello` reply, with control characters
/// escaped (they are printed in traces, tables and recordings).
fn names_of(hello: &msg::Hello) -> Vec<String> {
    if let Some(a) = &hello.names {
        return a.iter().map(|n| printable(n).into_owned()).collect();
    }
    hello
        .functions
        .iter()
        .flatten()
        .map(|f| printable(&f.name).into_owned())
        .collect()
}

/// Map the block `info` describes from memfd `fd` and attach its ring,
/// checking every size it declares first. `Err` says what is wrong.
fn map_block(info: &msg::RingInfo, fd: i32) -> Result<Mapped, String> {
    let id = info.id;
    let len = info.len as u64;
    let ring_off = info.ring as u64;
    // SAFETY: `stat` is plain data; all-zero is a valid value to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is a descriptor we own; `st` is a valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(format!(
            "its descriptor cannot be examined: {}",
            std::io::Error::last_os_error()
        ));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err("its descriptor is not shared memory".into());
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    let offset = info.offset;
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    if offset % page.max(1) != 0 {
        return Err(format!(
            "it declares offset {offset}, which is not a multiple of the page size ({page})"
        ));
    }
    if len == 0 || offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(format!(
            "it declares {len} bytes at offset {offset}, but its shared memory holds {size}"
        ));
    }
    let offset = libc::off_t::try_from(offset)
        .map_err(|_| format!("its offset {offset} does not fit this system's file offsets"))?;
    if ring_off % 64 != 0 || ring_off >= len {
        return Err(format!(
            "its ring offset {ring_off} is not a 64-byte-aligned offset inside its {len} bytes"
        ));
    }
    let len = usize::try_from(len).map_err(|_| format!("{len} bytes do not fit in memory"))?;
    let ring_off = ring_off as usize;
    // SAFETY: mapping bytes `offset..offset + len` of a memfd we received,
    // inside the file (checked above), so no page of the mapping lies beyond
    // its end; `offset` is page-aligned (checked above).
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            offset,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(format!(
            "it cannot be mapped: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `base` is a live mapping of `len` bytes, page-aligned, so
    // `base + ring_off` (64-aligned, inside it: checked above) is valid for
    // the remaining `len - ring_off` bytes.
    let ring = unsafe { Ring::attach((base as *mut u8).add(ring_off), len - ring_off) };
    let ring = match ring {
        Ok(r) if r.capacity() as u64 <= MAX_RING_EVENTS => Ok(r),
        Ok(r) => Err(format!(
            "its ring claims {} events, more than the runtime's largest ({MAX_RING_EVENTS})",
            r.capacity()
        )),
        Err(e) => Err(e.to_string()),
    };
    match ring {
        Ok(ring) => Ok(Mapped {
            id,
            base,
            len,
            ring,
            dropped_before: 0,
        }),
        Err(e) => {
            // SAFETY: our own mapping, not used by anything else.
            unsafe { libc::munmap(base, len) };
            Err(e)
        }
    }
}

/// Sort events of several threads (each thread's in its order) by
/// timestamp. A values event (`KIND_ARGS`, `KIND_RETVAL`: its `ts` is a
/// value) sorts with the entry or exit of its thread that follows it (else
/// the one before it), so it stays just before its event.
pub fn sort_by_time(evs: &mut [(u64, Event)]) {
    use tracer_core::event::is_call;
    if evs.iter().all(|(_, e)| is_call(e.kind)) {
        evs.sort_by_key(|(_, e)| e.ts);
        return;
    }
    let mut keys: Vec<Option<u64>> = evs
        .iter()
        .map(|(_, e)| is_call(e.kind).then_some(e.ts))
        .collect();
    let mut next: HashMap<u64, u64> = HashMap::new();
    for (i, (tid, _)) in evs.iter().enumerate().rev() {
        match keys[i] {
            Some(t) => {
                next.insert(*tid, t);
            }
            None => keys[i] = next.get(tid).copied(),
        }
    }
    let mut prev: HashMap<u64, u64> = HashMap::new();
    for (i, (tid, e)) in evs.iter().enumerate() {
        if is_call(e.kind) {
            prev.insert(*tid, e.ts);
        } else if keys[i].is_none() {
            keys[i] = Some(prev.get(tid).copied().unwrap_or(0));
        }
    }
    let mut order: Vec<usize> = (0..evs.len()).collect();
    order.sort_by_key(|&i| keys[i]);
    let sorted: Vec<(u64, Event)> = order.iter().map(|&i| evs[i]).collect();
    evs.copy_from_slice(&sorted);
}
