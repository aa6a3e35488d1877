//! The recording file: self-describing, append-only, readable when cut short.
//!
//! ```text
//! "TRACER-RECORD\0"  14 bytes
//! u32 LE             format version (1)
//! u32 LE + JSON      header: pid, exe, clock, ticks_per_ns, functions (names by index)
//! frames, each a tag byte:
//!   1: u64 LE tid, u32 LE n, n events of 24 bytes:
//!      ts u64, dur u64, func u32, depth u16, kind u8, flags u8 (all LE)
//!   2: u32 LE + JSON trailer: ticks_per_ns (final calibration), lost
//!      ([tid, dropped] pairs), end ("interrupted", "duration", "process ended")
//! ```
//!
//! Timestamps are raw clock ticks; divide by `ticks_per_ns` (the trailer's if
//! there is one) for nanoseconds. A file without a trailer (the recorder was
//! killed) is read up to its last whole frame.

use crate::{printable, Error};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use tracer_core::event::Event;

const MAGIC: &[u8; 14] = b"TRACER-RECORD\0";
/// Format version.
pub const VERSION: u32 = 1;

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

    /// Append events of thread `tid`.
    pub fn events(&mut self, tid: u64, evs: &[Event]) -> std::io::Result<()> {
        for chunk in evs.chunks(u32::MAX as usize / 2) {
            let mut buf = Vec::with_capacity(13 + chunk.len() * 24);
            buf.push(1u8);
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

    /// Flush buffered bytes to the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
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
    /// `(tid, event)` in file order (per thread: in time order).
    pub events: Vec<(u64, Event)>,
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
        if t > 0.0 {
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

    /// Read a whole file.
    pub fn read(path: &std::path::Path) -> Result<Recording, Error> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::failed(format!(
                "cannot read {}: {e}; give a file written by `tracer record -o FILE`",
                path.display()
            ))
        })?;
        Recording::parse(&bytes).map_err(|m| {
            Error::failed(format!(
                "{}: {m}; give a file written by `tracer record -o FILE`",
                path.display()
            ))
        })
    }

    /// Parse a file's bytes.
    pub fn parse(mut b: &[u8]) -> Result<Recording, String> {
        let take = |n: usize, b: &mut &[u8]| -> Option<Vec<u8>> {
            if b.len() < n {
                return None;
            }
            let (h, t) = b.split_at(n);
            *b = t;
            Some(h.to_vec())
        };
        let magic = take(14, &mut b).ok_or("not a tracer recording (too short)")?;
        if magic != MAGIC {
            return Err("not a tracer recording (wrong magic bytes)".into());
        }
        let v = u32::from_le_bytes(
            take(4, &mut b)
                .ok_or("truncated header")?
                .try_into()
                .unwrap(),
        );
        if v != VERSION {
            return Err(format!(
                "recording format version {v}; this tracer reads {VERSION}"
            ));
        }
        let hl = u32::from_le_bytes(
            take(4, &mut b)
                .ok_or("truncated header")?
                .try_into()
                .unwrap(),
        );
        let hj = take(hl as usize, &mut b).ok_or("truncated header")?;
        let mut header: Header =
            serde_json::from_slice(&hj).map_err(|e| format!("bad header: {e}"))?;
        // The file is input like any other: its strings are printed.
        clean(&mut header.functions);
        header.exe = printable(&header.exe).into_owned();
        header.clock = printable(&header.clock).into_owned();
        let mut rec = Recording {
            header,
            ..Recording::default()
        };
        while let Some(tag) = take(1, &mut b) {
            match tag[0] {
                1 => {
                    let Some(h) = take(12, &mut b) else { break };
                    let tid = u64::from_le_bytes(h[..8].try_into().unwrap());
                    let n = u32::from_le_bytes(h[8..].try_into().unwrap()) as usize;
                    let Some(body) = take(n * 24, &mut b) else {
                        break;
                    };
                    for e in body.chunks_exact(24) {
                        rec.events.push((
                            tid,
                            Event {
                                ts: u64::from_le_bytes(e[0..8].try_into().unwrap()),
                                dur: u64::from_le_bytes(e[8..16].try_into().unwrap()),
                                func: u32::from_le_bytes(e[16..20].try_into().unwrap()),
                                depth: u16::from_le_bytes(e[20..22].try_into().unwrap()),
                                kind: e[22],
                                flags: e[23],
                            },
                        ));
                    }
                }
                2 => {
                    let Some(l) = take(4, &mut b) else { break };
                    let l = u32::from_le_bytes(l.try_into().unwrap()) as usize;
                    let Some(j) = take(l, &mut b) else { break };
                    rec.trailer = serde_json::from_slice(&j).ok();
                    if let Some(t) = &mut rec.trailer {
                        clean(&mut t.functions);
                        t.end = printable(&t.end).into_owned();
                    }
                    break;
                }
                t => return Err(format!("unknown frame type {t}: file damaged?")),
            }
        }
        Ok(rec)
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
            exe: "/bin/\x1b[2J".into(),
            ..h.clone()
        };
        let r = Recording::parse(&Writer::new(Vec::new(), &evil).unwrap().w).unwrap();
        assert_eq!(r.name(0), "a\\x{1b}]0;owned\\x{7}");
        assert_eq!(r.header.exe, "/bin/\\x{1b}[2J");
    }
}
