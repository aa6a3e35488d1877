//! The recording file: self-describing, append-only, readable when cut short.
//!
//! ```text
//! "TRACER-RECORD\0"  14 bytes
//! u32 LE             format version (2; version 1 files are read too)
//! u32 LE + JSON      header: pid, exe, clock, ticks_per_ns, functions (names by index)
//! frames, each a tag byte:
//!   1: u64 LE tid, u32 LE n, n events of 24 bytes:
//!      ts u64, dur u64, func u32, depth u16, kind u8, flags u8 (all LE)
//!      (version 1; still read)
//!   3: u64 LE tid, u32 LE n, u32 LE byte length, then n events packed:
//!      each the LEB128 varints of zigzag(ts - previous ts) (the first
//!      against 0), dur, func, depth, and one byte kind | flags << 1
//!   4: u64 LE tid, u32 LE n, n events of 24 bytes as in frame 1: the
//!      values events (`KIND_ARGS`, `KIND_RETVAL`: captured arguments and
//!      return values) that precede, in the thread's order, the next frame
//!      of that thread; recordings without captured values have none
//!   2: u32 LE + JSON trailer: ticks_per_ns (final calibration), lost
//!      ([tid, dropped] pairs), end ("interrupted", "duration", "process ended")
//! ```
//!
//! The packed frames take 6–10 bytes an event instead of 24: a recording is
//! written at the rate a busy program makes events (the kernel's copy into
//! the page cache is most of a recorder's work), and is a third the size.
//!
//! Timestamps are raw clock ticks; divide by `ticks_per_ns` (the trailer's if
//! there is one) for nanoseconds. A file without a trailer (the recorder was
//! killed) is read up to its last whole frame.
//!
//! Reading streams: [`Recording::open`] reads the header and finds the
//! trailer by skipping over the event frames, and [`Recording::each_event`]
//! goes through the events a chunk at a time, so a report or an export of a
//! recording of any size holds only what it computes, never the events.

use crate::{printable, Error};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use tracer_core::event::Event;

const MAGIC: &[u8; 14] = b"TRACER-RECORD\0";
/// Format version written.
pub const VERSION: u32 = 2;
/// Events in one packed frame at most (bounds what a reader allocates).
const FRAME_EVENTS: usize = 1 << 16;
/// The most bytes one packed event takes (four 10-byte varints and a byte).
const MAX_PACKED: usize = 41;

fn get_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Write `v` as a LEB128 varint at `b[at..]`; returns the new end.
#[inline(always)]
fn varint_at(b: &mut [u8; MAX_PACKED], mut at: usize, mut v: u64) -> usize {
    while v >= 0x80 {
        b[at] = v as u8 | 0x80;
        v >>= 7;
        at += 1;
    }
    b[at] = v as u8;
    at + 1
}

/// Pack `evs` (one thread's, in order) into `buf`.
fn pack(buf: &mut Vec<u8>, evs: &[Event]) {
    buf.reserve(evs.len() * 8);
    let mut prev = 0u64;
    let mut e8 = [0u8; MAX_PACKED];
    for e in evs {
        let d = e.ts.wrapping_sub(prev) as i64;
        prev = e.ts;
        let mut at = varint_at(&mut e8, 0, ((d << 1) ^ (d >> 63)) as u64);
        at = varint_at(&mut e8, at, e.dur);
        at = varint_at(&mut e8, at, u64::from(e.func));
        at = varint_at(&mut e8, at, u64::from(e.depth));
        e8[at] = e.kind | e.flags << 1;
        buf.extend_from_slice(&e8[..at + 1]);
    }
}

/// Unpack `n` events from `b` into `out`; `None` if the bytes are not `n`
/// whole events (a damaged file).
fn unpack(b: &[u8], n: usize, out: &mut Vec<Event>) -> Option<()> {
    let mut at = 0;
    let mut prev = 0u64;
    for _ in 0..n {
        let z = get_varint(b, &mut at)?;
        let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let ts = prev.wrapping_add(d as u64);
        prev = ts;
        let dur = get_varint(b, &mut at)?;
        let func = u32::try_from(get_varint(b, &mut at)?).ok()?;
        let depth = u16::try_from(get_varint(b, &mut at)?).ok()?;
        let kf = *b.get(at)?;
        at += 1;
        out.push(Event {
            ts,
            dur,
            func,
            depth,
            kind: kf & 1,
            flags: kf >> 1,
        });
    }
    (at == b.len()).then_some(())
}

/// The file's header.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Header {
    /// Recorded process.
    pub pid: i32,
    /// Its executable.
    pub exe: String,
    /// Clock source (`tsc`, `monotonic`).
    pub clock: String,
    /// Ticks per nanosecond at the start.
    pub ticks_per_ns: f64,
    /// Function names by index (events' `func`).
    pub functions: Vec<String>,
    /// Where compiler-padded functions' debug information is (names and
    /// types of captured values); absent in older recordings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<RecordedOrigin>,
    /// `(index, signature text)` of the `#[traceable]` functions whose
    /// macro captures values (`tracer_core::capture::TraceableSig`);
    /// absent in older recordings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<(u32, String)>,
}

/// A function's object and address there, for its debug information.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RecordedOrigin {
    /// Function index.
    pub index: u32,
    /// The object's path.
    pub object: String,
    /// The function's address in it, as linked.
    pub offset: u64,
}

/// The file's trailer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Trailer {
    /// Ticks per nanosecond at the end (better calibrated).
    pub ticks_per_ns: f64,
    /// `(tid, events lost to full rings)`.
    pub lost: Vec<(u64, u64)>,
    /// Why the recording ended.
    pub end: String,
    /// Events written.
    pub events: u64,
    /// Function names by index, when libraries loaded during the recording
    /// added some (the header has those known at the start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    /// `(tid, name)` of the recorded threads whose name was known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub threads: Vec<(u64, String)>,
}

/// Writes a recording.
pub struct Writer<W: Write> {
    w: W,
    /// Events written so far.
    pub events: u64,
}

impl<W: Write> Writer<W> {
    /// Start a file with its header.
    pub fn new(mut w: W, h: &Header) -> std::io::Result<Writer<W>> {
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        let j = serde_json::to_vec(h).map_err(std::io::Error::other)?;
        w.write_all(&(j.len() as u32).to_le_bytes())?;
        w.write_all(&j)?;
        Ok(Writer { w, events: 0 })
    }

    /// Append events of thread `tid`: calls packed (frame type 3), runs of
    /// values events as they are (frame type 4), in order.
    pub fn events(&mut self, tid: u64, evs: &[Event]) -> std::io::Result<()> {
        use tracer_core::event::is_call;
        let mut i = 0;
        while i < evs.len() {
            let call = is_call(evs[i].kind);
            let j = evs[i..]
                .iter()
                .position(|e| is_call(e.kind) != call)
                .map_or(evs.len(), |k| i + k);
            if call {
                self.calls(tid, &evs[i..j])?;
            } else {
                self.values(tid, &evs[i..j])?;
            }
            i = j;
        }
        Ok(())
    }

    /// Values events of thread `tid` (frame type 4).
    fn values(&mut self, tid: u64, evs: &[Event]) -> std::io::Result<()> {
        for chunk in evs.chunks(FRAME_EVENTS) {
            let mut buf = Vec::with_capacity(13 + chunk.len() * 24);
            buf.push(4u8);
            buf.extend_from_slice(&tid.to_le_bytes());
            buf.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            for e in chunk {
                buf.extend_from_slice(&e.ts.to_le_bytes());
                buf.extend_from_slice(&e.dur.to_le_bytes());
                buf.extend_from_slice(&e.func.to_le_bytes());
                buf.extend_from_slice(&e.depth.to_le_bytes());
                buf.push(e.kind);
                buf.push(e.flags);
            }
            self.w.write_all(&buf)?;
            self.events += chunk.len() as u64;
        }
        Ok(())
    }

    /// Call events of thread `tid`, packed (frame type 3).
    fn calls(&mut self, tid: u64, evs: &[Event]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for chunk in evs.chunks(FRAME_EVENTS) {
            buf.clear();
            buf.push(3u8);
            buf.extend_from_slice(&tid.to_le_bytes());
            buf.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            buf.extend_from_slice(&[0; 4]);
            pack(&mut buf, chunk);
            let len = (buf.len() - 17) as u32;
            buf[13..17].copy_from_slice(&len.to_le_bytes());
            self.w.write_all(&buf)?;
            self.events += chunk.len() as u64;
        }
        Ok(())
    }

    /// Append events of thread `tid` in the unpacked layout of format
    /// version 1 (frame type 1), for tests of old files.
    #[doc(hidden)]
    pub fn events_v1(&mut self, tid: u64, evs: &[Event]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(13 + evs.len() * 24);
        buf.push(1u8);
        buf.extend_from_slice(&tid.to_le_bytes());
        buf.extend_from_slice(&(evs.len() as u32).to_le_bytes());
        for e in evs {
            buf.extend_from_slice(&e.ts.to_le_bytes());
            buf.extend_from_slice(&e.dur.to_le_bytes());
            buf.extend_from_slice(&e.func.to_le_bytes());
            buf.extend_from_slice(&e.depth.to_le_bytes());
            buf.push(e.kind);
            buf.push(e.flags);
        }
        self.w.write_all(&buf)?;
        self.events += evs.len() as u64;
        Ok(())
    }

    /// Flush buffered bytes to the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }

    /// What has been written so far, without a trailer (for tests and the
    /// fuzz target: a file cut short).
    pub fn into_inner(self) -> W {
        self.w
    }

    /// Write the trailer and flush; returns the inner writer.
    pub fn finish(mut self, t: &Trailer) -> std::io::Result<W> {
        let j = serde_json::to_vec(t).map_err(std::io::Error::other)?;
        self.w.write_all(&[2u8])?;
        self.w.write_all(&(j.len() as u32).to_le_bytes())?;
        self.w.write_all(&j)?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// A recording read back.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// Header.
    pub header: Header,
    /// Trailer, if the recorder finished properly.
    pub trailer: Option<Trailer>,
    /// `(tid, event)` in file order (per thread: in time order), for a
    /// recording held in memory ([`Recording::parse`]); empty for one
    /// [`Recording::open`]ed, whose events stay in the file.
    pub events: Vec<(u64, Event)>,
    /// The file the events are read from, when opened.
    file: Option<std::path::PathBuf>,
}

/// The largest header or trailer accepted (names of 10^6 functions fit).
const MAX_JSON: usize = 512 << 20;
/// Events read from a file at a time.
const CHUNK: usize = 1 << 16;

fn bad_file(path: &std::path::Path, m: impl std::fmt::Display) -> Error {
    Error::failed(format!(
        "{}: {m}; give a file written by `tracer record -o FILE`",
        path.display()
    ))
}

/// Read exactly `buf.len()` bytes; `Ok(false)` at a clean or cut-short end.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn u32_at(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn u64_at(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn event_at(e: &[u8]) -> Event {
    Event {
        ts: u64_at(&e[0..8]),
        dur: u64_at(&e[8..16]),
        func: u32_at(&e[16..20]),
        depth: u16::from_le_bytes([e[20], e[21]]),
        kind: e[22],
        flags: e[23],
    }
}

/// Read a `u32 LE + JSON` block; `None` when the file ends first.
fn json_block(r: &mut impl Read) -> Result<Option<Vec<u8>>, String> {
    let mut l = [0u8; 4];
    if !fill(r, &mut l).map_err(|e| e.to_string())? {
        return Ok(None);
    }
    let l = u32_at(&l) as usize;
    if l > MAX_JSON {
        return Err(format!(
            "a block of {l} bytes, over the {MAX_JSON}-byte limit: file damaged?"
        ));
    }
    let mut j = Vec::new();
    let got = r
        .take(l as u64)
        .read_to_end(&mut j)
        .map_err(|e| e.to_string())?;
    Ok((got == l).then_some(j))
}

/// Read the magic, version and header.
fn read_header(r: &mut impl Read) -> Result<Header, String> {
    let mut m = [0u8; 18];
    if !fill(r, &mut m).map_err(|e| e.to_string())? {
        return Err("not a tracer recording (too short)".into());
    }
    if &m[..14] != MAGIC {
        return Err("not a tracer recording (wrong magic bytes)".into());
    }
    let v = u32_at(&m[14..]);
    if !(1..=VERSION).contains(&v) {
        return Err(format!(
            "recording format version {v}; this tracer reads versions 1 to {VERSION} (a newer tracer wrote it?)"
        ));
    }
    let hj = json_block(r)?.ok_or("truncated header")?;
    let mut header: Header = serde_json::from_slice(&hj).map_err(|e| format!("bad header: {e}"))?;
    // The file is input like any other: its strings are printed.
    clean(&mut header.functions);
    header.exe = printable(&header.exe).into_owned();
    header.clock = printable(&header.clock).into_owned();
    Ok(header)
}

fn read_trailer(j: &[u8]) -> Option<Trailer> {
    let mut t: Trailer = serde_json::from_slice(j).ok()?;
    clean(&mut t.functions);
    t.end = printable(&t.end).into_owned();
    for (_, n) in &mut t.threads {
        if let std::borrow::Cow::Owned(o) = printable(n) {
            *n = o;
        }
    }
    Some(t)
}

/// Takes the events of one frame chunk: `(tid, events)`.
type EventSink<'a> = dyn FnMut(u64, &[Event]) + 'a;

/// Go through the frames after the header: `events(tid, chunk)` for event
/// frames (skipped over with `seek` when it is `None`), up to the trailer,
/// which is returned. A frame cut short ends the walk quietly.
fn frames<R: Read + std::io::Seek>(
    r: &mut R,
    mut events: Option<&mut EventSink<'_>>,
) -> Result<Option<Trailer>, String> {
    let mut buf = vec![0u8; 0];
    let mut evs: Vec<Event> = Vec::new();
    loop {
        let mut tag = [0u8; 1];
        if !fill(r, &mut tag).map_err(|e| e.to_string())? {
            return Ok(None);
        }
        match tag[0] {
            1 | 4 => {
                let values = tag[0] == 4;
                let mut h = [0u8; 12];
                if !fill(r, &mut h).map_err(|e| e.to_string())? {
                    return Ok(None);
                }
                let tid = u64_at(&h[..8]);
                let n = u32_at(&h[8..]) as usize;
                let Some(f) = events.as_mut() else {
                    let here = r.stream_position().map_err(|e| e.to_string())?;
                    let end = r
                        .seek(std::io::SeekFrom::End(0))
                        .map_err(|e| e.to_string())?;
                    let next = here + n as u64 * 24;
                    if next > end {
                        return Ok(None);
                    }
                    r.seek(std::io::SeekFrom::Start(next))
                        .map_err(|e| e.to_string())?;
                    continue;
                };
                let mut left = n;
                while left > 0 {
                    let k = left.min(CHUNK);
                    buf.resize(k * 24, 0);
                    if !fill(r, &mut buf).map_err(|e| e.to_string())? {
                        // Cut short: this frame's events are not whole.
                        return Ok(None);
                    }
                    evs.clear();
                    evs.extend(buf.chunks_exact(24).map(event_at));
                    if values {
                        // Only values events: anything else is damage.
                        evs.retain(|e| !tracer_core::event::is_call(e.kind));
                    }
                    f(tid, &evs);
                    left -= k;
                }
            }
            3 => {
                let mut h = [0u8; 16];
                if !fill(r, &mut h).map_err(|e| e.to_string())? {
                    return Ok(None);
                }
                let tid = u64_at(&h[..8]);
                let n = u32_at(&h[8..12]) as usize;
                let len = u32_at(&h[12..16]) as usize;
                if n > FRAME_EVENTS || len > n * MAX_PACKED {
                    return Err(format!(
                        "a frame of {n} events in {len} bytes: file damaged?"
                    ));
                }
                let Some(f) = events.as_mut() else {
                    let here = r.stream_position().map_err(|e| e.to_string())?;
                    let end = r
                        .seek(std::io::SeekFrom::End(0))
                        .map_err(|e| e.to_string())?;
                    let next = here + len as u64;
                    if next > end {
                        return Ok(None);
                    }
                    r.seek(std::io::SeekFrom::Start(next))
                        .map_err(|e| e.to_string())?;
                    continue;
                };
                buf.resize(len, 0);
                if !fill(r, &mut buf).map_err(|e| e.to_string())? {
                    return Ok(None);
                }
                evs.clear();
                unpack(&buf, n, &mut evs)
                    .ok_or("a packed frame that does not decode: file damaged?")?;
                f(tid, &evs);
            }
            2 => {
                return Ok(match json_block(r)? {
                    Some(j) => read_trailer(&j),
                    None => None,
                });
            }
            t => return Err(format!("unknown frame type {t}: file damaged?")),
        }
    }
}

impl Recording {
    /// Events lost to full rings while recording (0 without a trailer).
    pub fn lost_events(&self) -> u64 {
        self.trailer
            .as_ref()
            .map_or(0, |t| t.lost.iter().map(|(_, n)| n).sum())
    }

    /// Ticks per nanosecond to use (the trailer's if any).
    pub fn ticks_per_ns(&self) -> f64 {
        let t = self
            .trailer
            .as_ref()
            .map_or(self.header.ticks_per_ns, |t| t.ticks_per_ns);
        if t > 0.0 && t.is_finite() {
            t
        } else {
            1.0
        }
    }

    /// Ticks to nanoseconds.
    pub fn ns(&self, ticks: u64) -> u64 {
        (ticks as f64 / self.ticks_per_ns()).round() as u64
    }

    /// Function name by index.
    pub fn name(&self, f: u32) -> &str {
        let later = self.trailer.as_ref().map_or(&[][..], |t| &t.functions[..]);
        let names = if later.len() > self.header.functions.len() {
            later
        } else {
            &self.header.functions[..]
        };
        names.get(f as usize).map_or("?", |s| s.as_str())
    }

    /// The name of thread `tid`, if the recording knows it.
    pub fn thread_name(&self, tid: u64) -> Option<&str> {
        self.trailer
            .as_ref()?
            .threads
            .iter()
            .find(|(t, _)| *t == tid)
            .map(|(_, n)| n.as_str())
    }

    /// Open a file: its header and trailer are read, its events stay in the
    /// file for [`Recording::each_event`].
    pub fn open(path: &std::path::Path) -> Result<Recording, Error> {
        let f = std::fs::File::open(path).map_err(|e| {
            Error::failed(format!(
                "cannot read {}: {e}; give a file written by `tracer record -o FILE`",
                path.display()
            ))
        })?;
        let mut r = std::io::BufReader::new(f);
        let header = read_header(&mut r).map_err(|m| bad_file(path, m))?;
        let trailer = frames(&mut r, None).map_err(|m| bad_file(path, m))?;
        Ok(Recording {
            header,
            trailer,
            events: Vec::new(),
            file: Some(path.to_path_buf()),
        })
    }

    /// Read a whole file into memory (small files and tests; reports and
    /// exports use [`Recording::open`]).
    pub fn read(path: &std::path::Path) -> Result<Recording, Error> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::failed(format!(
                "cannot read {}: {e}; give a file written by `tracer record -o FILE`",
                path.display()
            ))
        })?;
        Recording::parse(&bytes).map_err(|m| bad_file(path, m))
    }

    /// Parse a file's bytes into memory.
    pub fn parse(b: &[u8]) -> Result<Recording, String> {
        let mut r = std::io::Cursor::new(b);
        let header = read_header(&mut r)?;
        let mut events = Vec::new();
        let trailer = frames(
            &mut r,
            Some(&mut |tid, evs: &[Event]| events.extend(evs.iter().map(|e| (tid, *e)))),
        )?;
        Ok(Recording {
            header,
            trailer,
            events,
            file: None,
        })
    }

    /// Every entry and exit event, in file order (per thread: in time
    /// order), with its thread: from memory, or streamed from the file a
    /// chunk at a time. (Captured values: [`Recording::each_event_all`].)
    pub fn each_event(&self, mut f: impl FnMut(u64, &Event)) -> Result<(), Error> {
        self.each_event_all(|tid, e| {
            if tracer_core::event::is_call(e.kind) {
                f(tid, e)
            }
        })
    }

    /// [`Recording::each_event`], with the values events (captured
    /// arguments and return values) just before the entry or exit they
    /// belong to.
    pub fn each_event_all(&self, mut f: impl FnMut(u64, &Event)) -> Result<(), Error> {
        let Some(path) = &self.file else {
            for (tid, e) in &self.events {
                f(*tid, e);
            }
            return Ok(());
        };
        let file = std::fs::File::open(path).map_err(|e| bad_file(path, e))?;
        let mut r = std::io::BufReader::with_capacity(1 << 20, file);
        read_header(&mut r).map_err(|m| bad_file(path, m))?;
        frames(
            &mut r,
            Some(&mut |tid, evs: &[Event]| {
                for e in evs {
                    f(tid, e);
                }
            }),
        )
        .map_err(|m| bad_file(path, m))?;
        Ok(())
    }
}

/// Escape control characters in names (see [`printable`]).
fn clean(names: &mut [String]) {
    for n in names {
        if let std::borrow::Cow::Owned(o) = printable(n) {
            *n = o;
        }
    }
}

/// Open a file for writing, buffered.
pub fn create(path: &std::path::Path) -> Result<std::io::BufWriter<std::fs::File>, Error> {
    std::fs::File::create(path)
        .map(std::io::BufWriter::new)
        .map_err(|e| {
            Error::failed(format!(
                "cannot create {}: {e}; choose a writable path with -o",
                path.display()
            ))
        })
}

/// Read everything from a reader (helper for tests).
pub fn read_all(mut r: impl Read) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    r.read_to_end(&mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_core::event::{KIND_ENTRY, KIND_EXIT};

    #[test]
    fn round_trip_and_truncation() {
        let h = Header {
            pid: 42,
            exe: "/bin/x".into(),
            clock: "tsc".into(),
            ticks_per_ns: 2.5,
            functions: vec!["a".into(), "b".into()],
            origins: Vec::new(),
            signatures: Vec::new(),
        };
        let evs = [
            Event {
                ts: 10,
                dur: 0,
                func: 1,
                depth: 0,
                kind: KIND_ENTRY,
                flags: 0,
            },
            Event {
                ts: 30,
                dur: 20,
                func: 1,
                depth: 0,
                kind: KIND_EXIT,
                flags: 0,
            },
        ];
        let mut w = Writer::new(Vec::new(), &h).unwrap();
        w.events(7, &evs).unwrap();
        let partial = w.w.clone();
        let t = Trailer {
            ticks_per_ns: 2.0,
            lost: vec![(7, 3)],
            end: "interrupted".into(),
            events: 2,
            functions: Vec::new(),
            threads: vec![(7, "worker".into())],
        };
        let finish = |t: &Trailer| {
            Writer {
                w: partial.clone(),
                events: 2,
            }
            .finish(t)
            .unwrap()
        };
        let bytes = finish(&t);
        let r = Recording::parse(&bytes).unwrap();
        assert_eq!(r.header, h);
        assert_eq!(r.trailer, Some(t.clone()));
        assert_eq!(r.events, vec![(7, evs[0]), (7, evs[1])]);
        assert_eq!(r.ns(20), 10);
        assert_eq!(r.thread_name(7), Some("worker"));
        // Streamed from a file: the same header, trailer and events.
        let path = std::env::temp_dir().join(format!("tracer-rec-{}", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let o = Recording::open(&path).unwrap();
        assert!(o.events.is_empty());
        assert_eq!(
            (o.header.clone(), o.trailer.clone()),
            (h.clone(), Some(t.clone()))
        );
        let mut streamed = Vec::new();
        o.each_event(|tid, e| streamed.push((tid, *e))).unwrap();
        assert_eq!(streamed, r.events);
        std::fs::write(&path, &partial[..partial.len() - 5]).unwrap();
        let o = Recording::open(&path).unwrap();
        let mut n = 0;
        o.each_event(|_, _| n += 1).unwrap();
        assert_eq!((o.trailer.is_none(), n), (true, 0));
        let _ = std::fs::remove_file(&path);
        // Version 1 files (24-byte events) are still read.
        let mut v1 = Writer::new(Vec::new(), &h).unwrap();
        v1.w[14..18].copy_from_slice(&1u32.to_le_bytes());
        v1.events_v1(7, &evs).unwrap();
        let old = Recording::parse(&v1.finish(&t).unwrap()).unwrap();
        assert_eq!(old.events, r.events);
        // A damaged packed frame is an error, not a crash.
        let mut bad = partial.clone();
        let n = bad.len();
        for b in &mut bad[n - 4..] {
            *b = 0x80; // varints that never end
        }
        let e = Recording::parse(&bad).unwrap_err();
        assert!(e.contains("damaged"), "{e}");
        assert_eq!((r.name(1), r.name(2)), ("b", "?"));
        // A library loaded during the recording: the trailer's names.
        let later = Trailer {
            functions: vec!["a".into(), "b".into(), "lib_c".into()],
            ..t
        };
        let r = Recording::parse(&finish(&later)).unwrap();
        assert_eq!((r.name(1), r.name(2)), ("b", "lib_c"));
        let r = Recording::parse(&partial[..partial.len() - 5]).unwrap();
        assert_eq!(r.name(1), "b");
        assert!(r.trailer.is_none() && r.events.is_empty());
        assert_eq!(Recording::parse(&partial).unwrap().events.len(), 2);
        assert!(Recording::parse(b"nope").is_err());
        // Escape sequences in a file's names are not passed to the terminal.
        let evil = Header {
            functions: vec!["a\x1b]0;owned\x07".into()],
            origins: Vec::new(),
            signatures: Vec::new(),
            exe: "/bin/\x1b[2J".into(),
            ..h.clone()
        };
        let r = Recording::parse(&Writer::new(Vec::new(), &evil).unwrap().w).unwrap();
        assert_eq!(r.name(0), "a\\x{1b}]0;owned\\x{7}");
        assert_eq!(r.header.exe, "/bin/\\x{1b}[2J");
    }

    #[test]
    fn packed_events_round_trip_at_the_extremes() {
        let evs: Vec<Event> = [
            (0u64, 0u64, 0u32, 0u16, KIND_ENTRY, 0u8),
            (u64::MAX, u64::MAX, u32::MAX, u16::MAX, KIND_EXIT, 3),
            (5, 1, 7, 1, KIND_ENTRY, 2),
            (4, 0, 7, 1, KIND_EXIT, 0),
        ]
        .iter()
        .map(|&(ts, dur, func, depth, kind, flags)| Event {
            ts,
            dur,
            func,
            depth,
            kind,
            flags,
        })
        .collect();
        let mut b = Vec::new();
        pack(&mut b, &evs);
        let mut out = Vec::new();
        unpack(&b, evs.len(), &mut out).unwrap();
        assert_eq!(out, evs);
        assert!(unpack(&b[..b.len() - 1], evs.len(), &mut Vec::new()).is_none());
        assert!(unpack(&b, evs.len() + 1, &mut Vec::new()).is_none());
        // A typical event: a few bytes.
        let mut b = Vec::new();
        pack(&mut b, &evs[2..]);
        assert!(b.len() <= 12, "{}", b.len());
    }

    /// A seeded fuzz of the parser: 20,000 damaged copies of a real file
    /// (bytes changed, cut short, bytes inserted) parse or are refused,
    /// never panic, and never yield more events than their bytes can hold.
    /// (`.ci/run` runs it with the rest of the suite.)
    #[test]
    fn damaged_files_parse_or_are_refused() {
        let h = Header {
            pid: 1,
            exe: "/bin/x".into(),
            clock: "tsc".into(),
            ticks_per_ns: 1.0,
            functions: vec!["a".into(), "b".into(), "c".into()],
            origins: Vec::new(),
            signatures: Vec::new(),
        };
        let mut w = Writer::new(Vec::new(), &h).unwrap();
        for t in 0..3u64 {
            let evs: Vec<Event> = (0..50u64)
                .map(|i| Event {
                    ts: 1000 + i * 37,
                    dur: if i % 2 == 1 { 37 } else { 0 },
                    func: (i % 3) as u32,
                    depth: (i % 4) as u16,
                    kind: (i % 2) as u8,
                    flags: 0,
                })
                .collect();
            w.events(t, &evs).unwrap();
            w.events_v1(t + 10, &evs[..5]).unwrap();
        }
        let good = w.finish(&Trailer::default()).unwrap();
        assert_eq!(Recording::parse(&good).unwrap().events.len(), 165);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut b = good.clone();
            match next() % 3 {
                0 => {
                    for _ in 0..1 + next() % 8 {
                        let at = (next() % b.len() as u64) as usize;
                        b[at] = next() as u8;
                    }
                }
                1 => b.truncate((next() % b.len() as u64) as usize),
                _ => {
                    let at = (next() % b.len() as u64) as usize;
                    b.insert(at, next() as u8);
                }
            }
            match Recording::parse(&b) {
                Ok(r) => {
                    ok += 1;
                    // At least 5 bytes an event, packed or not.
                    assert!(r.events.len() * 5 <= b.len());
                }
                Err(_) => refused += 1,
            }
        }
        assert!(ok > 0 && refused > 0, "{ok} {refused}");
    }
}
