//! Perfetto's native trace format: a recording as `TrackEvent` slices.
//!
//! The output is a `perfetto.protos.Trace`: a stream of `TracePacket`s, each
//! written as field 1 of the `Trace` message, so it is produced one packet
//! at a time from a streamed recording and never held whole. The messages
//! below are the subset of Perfetto's published schema
//! (`protos/perfetto/trace/trace_packet.proto` and
//! `protos/perfetto/trace/track_event/*.proto`) this export writes, with the
//! schema's field numbers; `prost` encodes them.
//!
//! Layout: one process track, one track per thread (named from the
//! recording's thread names), and for `async fn` calls, which may end on a
//! thread other than the one that began them, one more track per thread.
//! A call is a `SLICE_BEGIN` at its entry and a `SLICE_END` at its return;
//! a call left without returning (`longjmp`) ends when it was known to be
//! over and carries the debug annotation `returned: false`; a call still
//! running at the end of the recording has no end. Function names are
//! interned (`InternedData.event_names`, iid = function index + 1) on one
//! packet sequence, so each name is written once.

use crate::calls::{Call, Walker};
use crate::record::Recording;
use crate::Error;
use prost::Message;
use std::collections::HashSet;
use std::io::Write;
use tracer_core::event::{FLAG_ASYNC, KIND_ENTRY};

/// `TracePacket`.
#[derive(Clone, PartialEq, Message)]
pub struct TracePacket {
    /// Timestamp in nanoseconds.
    #[prost(uint64, optional, tag = "8")]
    pub timestamp: Option<u64>,
    /// The packet sequence (interning is per sequence).
    #[prost(uint32, optional, tag = "10")]
    pub trusted_packet_sequence_id: Option<u32>,
    /// A track event.
    #[prost(message, optional, tag = "11")]
    pub track_event: Option<TrackEvent>,
    /// Names interned from this packet on.
    #[prost(message, optional, tag = "12")]
    pub interned_data: Option<InternedData>,
    /// `SEQ_INCREMENTAL_STATE_CLEARED` (1), `SEQ_NEEDS_INCREMENTAL_STATE` (2).
    #[prost(uint32, optional, tag = "13")]
    pub sequence_flags: Option<u32>,
    /// A track's description.
    #[prost(message, optional, tag = "60")]
    pub track_descriptor: Option<TrackDescriptor>,
}

/// `TrackDescriptor`.
#[derive(Clone, PartialEq, Message)]
pub struct TrackDescriptor {
    /// The track's id.
    #[prost(uint64, optional, tag = "1")]
    pub uuid: Option<u64>,
    /// Its name.
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    /// The process it describes.
    #[prost(message, optional, tag = "3")]
    pub process: Option<ProcessDescriptor>,
    /// The thread it describes.
    #[prost(message, optional, tag = "4")]
    pub thread: Option<ThreadDescriptor>,
    /// The track it belongs under.
    #[prost(uint64, optional, tag = "5")]
    pub parent_uuid: Option<u64>,
}

/// `ProcessDescriptor`.
#[derive(Clone, PartialEq, Message)]
pub struct ProcessDescriptor {
    /// Process id.
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    /// Its name.
    #[prost(string, optional, tag = "6")]
    pub process_name: Option<String>,
}

/// `ThreadDescriptor`.
#[derive(Clone, PartialEq, Message)]
pub struct ThreadDescriptor {
    /// Process id.
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    /// Thread id.
    #[prost(int64, optional, tag = "2")]
    pub tid: Option<i64>,
    /// Its name.
    #[prost(string, optional, tag = "5")]
    pub thread_name: Option<String>,
}

/// `TrackEvent`.
#[derive(Clone, PartialEq, Message)]
pub struct TrackEvent {
    /// Annotations.
    #[prost(message, repeated, tag = "4")]
    pub debug_annotations: Vec<DebugAnnotation>,
    /// `TYPE_SLICE_BEGIN` (1), `TYPE_SLICE_END` (2), `TYPE_INSTANT` (3).
    #[prost(int32, optional, tag = "9")]
    pub r#type: Option<i32>,
    /// Interned name.
    #[prost(uint64, optional, tag = "10")]
    pub name_iid: Option<u64>,
    /// The track.
    #[prost(uint64, optional, tag = "11")]
    pub track_uuid: Option<u64>,
    /// Categories.
    #[prost(string, repeated, tag = "22")]
    pub categories: Vec<String>,
}

/// `DebugAnnotation` (the kinds used here).
#[derive(Clone, PartialEq, Message)]
pub struct DebugAnnotation {
    /// Its name.
    #[prost(string, optional, tag = "10")]
    pub name: Option<String>,
    /// A boolean value.
    #[prost(bool, optional, tag = "2")]
    pub bool_value: Option<bool>,
    /// A string value (captured arguments and return values, as shown).
    #[prost(string, optional, tag = "6")]
    pub string_value: Option<String>,
}

/// `InternedData`.
#[derive(Clone, PartialEq, Message)]
pub struct InternedData {
    /// Event names.
    #[prost(message, repeated, tag = "2")]
    pub event_names: Vec<EventName>,
}

/// `EventName`.
#[derive(Clone, PartialEq, Message)]
pub struct EventName {
    /// Interning id.
    #[prost(uint64, optional, tag = "1")]
    pub iid: Option<u64>,
    /// The name.
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
}

const SLICE_BEGIN: i32 = 1;
const SLICE_END: i32 = 2;
const INSTANT: i32 = 3;
const SEQ_CLEARED: u32 = 1;
const SEQ_NEEDS: u32 = 2;
const SEQUENCE: u32 = 1;
const PROCESS_TRACK: u64 = 1;

fn thread_track(tid: u64) -> u64 {
    2 + (tid << 1)
}

fn async_track(tid: u64) -> u64 {
    3 + (tid << 1)
}

struct Out<'a, W: Write> {
    w: &'a mut W,
    rec: &'a Recording,
    buf: Vec<u8>,
    first: bool,
    named: HashSet<u32>,
    threads: HashSet<u64>,
    async_threads: HashSet<u64>,
    err: Option<std::io::Error>,
    packets: u64,
}

impl<W: Write> Out<'_, W> {
    fn packet(&mut self, mut p: TracePacket) {
        if self.err.is_some() {
            return;
        }
        p.trusted_packet_sequence_id = Some(SEQUENCE);
        p.sequence_flags = Some(if std::mem::take(&mut self.first) {
            SEQ_CLEARED | SEQ_NEEDS
        } else {
            SEQ_NEEDS
        });
        self.buf.clear();
        // Field 1 of `Trace`, length-delimited.
        self.buf.push(0x0a);
        p.encode_length_delimited(&mut self.buf)
            .expect("a Vec grows as needed");
        if let Err(e) = self.w.write_all(&self.buf) {
            self.err = Some(e);
        }
        self.packets += 1;
    }

    fn track(&mut self, tid: u64, is_async: bool) -> u64 {
        let (set, uuid) = if is_async {
            (&mut self.async_threads, async_track(tid))
        } else {
            (&mut self.threads, thread_track(tid))
        };
        if set.insert(tid) {
            let pid = self.rec.header.pid;
            let name = self.rec.thread_name(tid).map(str::to_string);
            let d = if is_async {
                TrackDescriptor {
                    uuid: Some(uuid),
                    name: Some(format!("{} async", name.as_deref().unwrap_or("thread"))),
                    parent_uuid: Some(thread_track(tid)),
                    ..Default::default()
                }
            } else {
                TrackDescriptor {
                    uuid: Some(uuid),
                    thread: Some(ThreadDescriptor {
                        pid: Some(pid),
                        tid: Some(tid as i64),
                        thread_name: name,
                    }),
                    parent_uuid: Some(PROCESS_TRACK),
                    ..Default::default()
                }
            };
            if is_async {
                // Its parent first.
                self.track(tid, false);
            }
            self.packet(TracePacket {
                track_descriptor: Some(d),
                ..Default::default()
            });
        }
        uuid
    }

    fn slice(&mut self, ts: u64, kind: i32, func: u32, track: u64, returned: Option<bool>) {
        self.slice_with(ts, kind, func, track, returned, None);
    }

    /// [`Out::slice`] with a string annotation (`args`, `ret`).
    fn slice_with(
        &mut self,
        ts: u64,
        kind: i32,
        func: u32,
        track: u64,
        returned: Option<bool>,
        note: Option<(&str, String)>,
    ) {
        let interned = if kind != SLICE_END && self.named.insert(func) {
            Some(InternedData {
                event_names: vec![EventName {
                    iid: Some(u64::from(func) + 1),
                    name: Some(self.rec.name(func).to_string()),
                }],
            })
        } else {
            None
        };
        let ev = TrackEvent {
            r#type: Some(kind),
            track_uuid: Some(track),
            name_iid: (kind != SLICE_END).then_some(u64::from(func) + 1),
            categories: Vec::new(),
            debug_annotations: returned
                .map(|r| DebugAnnotation {
                    name: Some("returned".into()),
                    bool_value: Some(r),
                    string_value: None,
                })
                .into_iter()
                .chain(note.map(|(n, v)| DebugAnnotation {
                    name: Some(n.into()),
                    bool_value: None,
                    string_value: Some(v),
                }))
                .collect(),
        };
        self.packet(TracePacket {
            timestamp: Some(self.rec.ns(ts)),
            track_event: Some(ev),
            interned_data: interned,
            ..Default::default()
        });
    }
}

/// Write `rec` to `w` in Perfetto's format; returns the packets written.
pub fn write(rec: &Recording, w: &mut impl Write) -> Result<u64, Error> {
    let mut out = Out {
        w,
        rec,
        buf: Vec::with_capacity(256),
        first: true,
        named: HashSet::new(),
        threads: HashSet::new(),
        async_threads: HashSet::new(),
        err: None,
        packets: 0,
    };
    out.packet(TracePacket {
        track_descriptor: Some(TrackDescriptor {
            uuid: Some(PROCESS_TRACK),
            process: Some(ProcessDescriptor {
                pid: Some(rec.header.pid),
                process_name: Some(rec.header.exe.clone()),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    /// What one event does to the slices.
    enum Act {
        /// A slice ends (`returned: false`: left without returning).
        End { func: u32, ts: u64, returned: bool },
        /// A whole slice whose entry the recording does not have (it began
        /// before the recording, or it is an `async fn` call).
        Whole { func: u32, start: u64, end: u64 },
        /// An entry whose return is never seen.
        Instant { func: u32, ts: u64 },
    }
    let mut walker = Walker::new();
    let mut acts: Vec<Act> = Vec::new();
    let mut sigs = crate::values::Signatures::from_recording(&rec.header);
    let mut values: std::collections::HashMap<u64, crate::values::Tracker> = Default::default();
    rec.each_event_all(|tid, e| {
        if out.err.is_some() {
            return;
        }
        // Captured values: the arguments annotate the slice's begin, the
        // return value its end (Perfetto shows both as the slice's args).
        let (args, ret) = match values.entry(tid).or_default().feed(e) {
            crate::values::Seen::Values | crate::values::Seen::Other => return,
            crate::values::Seen::Entry(a) => (a.map(|a| sigs.args(e.func, &a)), None),
            crate::values::Seen::Exit(_, r) => (None, r.and_then(|r| sigs.ret(e.func, r))),
        };
        let mut ret = ret;
        let track = out.track(tid, false);
        acts.clear();
        walker.feed(tid, e, &mut |c| match c {
            Call::Left { func, left, .. } => acts.push(Act::End {
                func,
                ts: left,
                returned: false,
            }),
            Call::Returned {
                func,
                end,
                matched: true,
                ..
            } => acts.push(Act::End {
                func,
                ts: end,
                returned: true,
            }),
            Call::Returned { func, end, dur, .. } => acts.push(Act::Whole {
                func,
                start: end.saturating_sub(dur),
                end,
            }),
            Call::Untracked { func } => acts.push(Act::Instant { func, ts: e.ts }),
            Call::Running { .. } => {}
        });
        for a in &acts {
            match *a {
                Act::End { func, ts, returned } => {
                    let note = if func == e.func && ts == e.ts {
                        ret.take().map(|r| ("ret", r))
                    } else {
                        None
                    };
                    out.slice_with(
                        ts,
                        SLICE_END,
                        func,
                        track,
                        (!returned).then_some(false),
                        note,
                    )
                }
                Act::Whole { func, start, end } => {
                    let t = if e.flags & FLAG_ASYNC != 0 {
                        out.track(tid, true)
                    } else {
                        track
                    };
                    out.slice(start, SLICE_BEGIN, func, t, None);
                    out.slice(end, SLICE_END, func, t, None);
                }
                Act::Instant { func, ts } => out.slice(ts, INSTANT, func, track, None),
            }
        }
        if e.kind == KIND_ENTRY && e.flags == 0 {
            let note = args.map(|a| ("args", a));
            out.slice_with(e.ts, SLICE_BEGIN, e.func, track, None, note);
        }
    })?;
    if let Some(e) = out.err {
        return Err(Error::failed(format!("cannot write the trace: {e}")));
    }
    Ok(out.packets)
}
