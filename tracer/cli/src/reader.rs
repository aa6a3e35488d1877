//! Reading a process's rings through shared memory.
//!
//! `attach` makes this program the only consumer of the process's rings (its
//! in-process collector stops draining them); `rings` hands over the memfd of
//! every thread block this reader does not have yet. Each is mapped shared and
//! read-write (the consumer position lives in the ring header) and drained
//! with [`Ring::drain`]. When the process ends its memory stays readable
//! through these mappings, so the last events are not lost.

use crate::client::Client;
use crate::Error;
use serde_json::{json, Value};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use tracer_core::event::{Event, Ring};

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
        let hello = client.call("hello", json!({}))?;
        let names = names_of(&hello);
        client.call("attach", json!({}))?;
        let mut r = Reader {
            pid: client.pid,
            client: Some(client),
            rings: Vec::new(),
            ticks_per_ns: hello["ticks_per_ns"].as_f64().unwrap_or(1.0),
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
        let (v, fds) = match c.call_fds("rings", json!({ "known": known })) {
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
        if let Some(t) = v["ticks_per_ns"].as_f64().filter(|t| *t > 0.0) {
            self.ticks_per_ns = t;
        }
        self.unshared = v["unshared"].as_u64().unwrap_or(0);
        if v["functions"]
            .as_u64()
            .is_some_and(|n| n as usize > self.names.len())
        {
            // A library with traceable functions was loaded: their names.
            if let Ok(h) = c.call("hello", json!({})) {
                self.names = names_of(&h);
            }
        }
        let list = v["rings"].as_array().cloned().unwrap_or_default();
        for (info, fd) in list.iter().zip(fds.iter()) {
            if let Some(mut m) = map_block(info, fd.as_raw_fd()) {
                // Rings of threads that start later lose only in this session.
                if self.first {
                    m.dropped_before = m.ring.dropped();
                }
                self.rings.push(m);
            }
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
        out[start..].sort_by_key(|(_, e)| e.ts);
        Ok(out.len() - start)
    }

    /// Drain every ring, handing each event to `f` straight from the shared
    /// memory: in order per thread, threads one after another (the fast path
    /// for consumers that need no global order). Refreshes the ring list
    /// every 10 ms. Returns events consumed.
    pub fn poll_each(&mut self, mut f: impl FnMut(u64, &Event)) -> Result<usize, Error> {
        self.refresh_if_due()?;
        let mut n = 0;
        for m in &self.rings {
            let tid = m
                .ring
                .header()
                .tid
                .load(std::sync::atomic::Ordering::Relaxed);
            n += m.ring.drain(usize::MAX, |e| f(tid, e));
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
            let _ = c.call("detach", json!({}));
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

/// Function names by index, from a `hello` reply.
fn names_of(hello: &Value) -> Vec<String> {
    hello["functions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f["name"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn map_block(info: &Value, fd: i32) -> Option<Mapped> {
    let len = info["len"].as_u64()? as usize;
    let ring_off = info["ring"].as_u64()? as usize;
    if ring_off >= len {
        return None;
    }
    // SAFETY: mapping a memfd we received; the kernel checks the length.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: `base` is a live mapping of `len` bytes, page-aligned, so
    // `base + ring_off` (a 64-aligned offset) is valid for the rest.
    let ring = unsafe { Ring::attach((base as *mut u8).add(ring_off), len - ring_off) };
    match ring {
        Ok(ring) => Some(Mapped {
            id: info["id"].as_u64()?,
            base,
            len,
            ring,
            dropped_before: 0,
        }),
        Err(_) => {
            // SAFETY: our own mapping, not used by anything else.
            unsafe { libc::munmap(base, len) };
            None
        }
    }
}
