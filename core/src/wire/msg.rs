//! The messages, typed: every request the agent accepts and every reply it
//! gives, as serde types both sides use. The JSON they (de)serialize to is
//! the protocol described in the agent's documentation
//! (`tracer/src/agent.rs`): a request is `{"v": 1, "op": .., fields}`, a
//! reply `{"v": 1, "ok": true, fields}` or `{"v": 1, "ok": false, "error":
//! ..}`. Fields a side does not know are ignored and a reply's missing
//! fields take their defaults, so either side may add optional ones.

use serde::{Deserialize, Serialize};

/// A request's body; its `op` is the variant's name in snake case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Who the process is, and its functions by index (or only their names).
    Hello {
        /// Only the names, by index (all a reader needs).
        #[serde(default)]
        names: bool,
    },
    /// A page of the functions sorted by name.
    List {
        /// Only those this pattern selects.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pattern: Option<String>,
        /// Position in the sorted list of the first one to give.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<u64>,
        /// At most this many (all without it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u64>,
    },
    /// Enable the functions `pattern` selects.
    Enable {
        /// The pattern (see `tracer_core::pattern`).
        pattern: Option<String>,
        /// What to capture of their calls: `crate::capture::Capture::encode`'s
        /// number (none without it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        capture: Option<u64>,
        /// Leave functions that are enabled already as they are, their
        /// capture too (a session that enables for a while: `hist PATTERN`,
        /// `serve PATTERN`); without it, a function enabled with another
        /// capture is switched to this one.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keep: bool,
    },
    /// Disable the functions `pattern` selects.
    Disable {
        /// The pattern.
        pattern: Option<String>,
    },
    /// Runtime counters.
    Status,
    /// Take the rings: this connection becomes the process's one reader.
    Attach,
    /// Blocks the reader does not have yet (their memfds come attached).
    Rings {
        /// Ids of the blocks the reader has already.
        #[serde(default)]
        known: Vec<u64>,
        /// The reader maps blocks at offsets of shared segments
        /// ([`RingInfo::fd`], [`RingInfo::offset`]); agents refuse readers
        /// that do not.
        #[serde(default)]
        arena: bool,
    },
    /// Give the rings back to the in-process collector.
    Detach,
    /// Ring size, in events, for threads that record their first event
    /// from now on (threads that have a ring keep it).
    Buffer {
        /// Events (rounded up to a power of two, between 64 and 2^26).
        events: u64,
    },
    /// Only from the process itself: another copy of the agent has taken
    /// the socket over; this one stops.
    Retire,
    /// `tracer detach`: disable every function, give the rings back, end
    /// the agent's threads and remove the socket.
    Quit,
}

impl Request {
    /// Every `op` there is.
    pub const OPS: [&'static str; 11] = [
        "hello", "list", "enable", "disable", "status", "attach", "rings", "detach", "retire",
        "buffer", "quit",
    ];

    /// The request as a message body: `{"v": PROTOCOL_VERSION, "op": .., ..}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("v".into(), super::PROTOCOL_VERSION.into());
        }
        v
    }
}

/// Read a request's body (the bytes after the length prefix) as the agent
/// does: a JSON object with `"v"` = [`super::PROTOCOL_VERSION`] and a known
/// `"op"` whose fields have the right types. `Err` is the error reply's
/// message; the agent closes the connection after it.
pub fn parse_request(body: &[u8]) -> Result<Request, String> {
    use serde_json::Value;
    let req: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) | Err(_) => return Err("malformed request: expected a JSON object; closing".into()),
    };
    if req["v"].as_u64() != Some(super::PROTOCOL_VERSION) {
        return Err(format!(
            "unsupported protocol version {}; this agent speaks {}: use a tracer program of the \
             same version",
            req["v"],
            super::PROTOCOL_VERSION
        ));
    }
    let op = req["op"].as_str().unwrap_or("").to_string();
    if !Request::OPS.contains(&op.as_str()) {
        return Err(format!(
            "unknown request '{op}'; closing (is the tracer program newer than this process's \
             tracer crate?)"
        ));
    }
    serde_json::from_value(req).map_err(|e| format!("malformed '{op}' request: {e}; closing"))
}

/// `quit`'s reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Quit {
    /// How many functions were enabled (and are not any more).
    pub disabled: u64,
}

/// A function, as `hello` and `list` give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Function {
    /// Its index: events name functions by it.
    pub index: u32,
    /// Its object is loaded now.
    pub loaded: bool,
    /// A compiler pad (not `#[traceable]`).
    pub compiler_pad: bool,
    /// Full path (demangled).
    pub name: String,
    /// Its own name.
    pub ident: String,
    /// Source file, where known (empty otherwise).
    pub file: String,
    /// Source line (0: unknown).
    pub line: u32,
    /// Enabled now.
    pub enabled: bool,
    /// Pads it has.
    pub sites: usize,
    /// Why some of its pads cannot be used.
    pub problems: Vec<String>,
    /// Offset of its pad in its object file, for debug information.
    pub object_offset: Option<u64>,
    /// A `#[traceable]` function's parameters and return type as its
    /// macro saw them (`tracer_core::capture::TraceableSig`'s text; empty:
    /// none, or a compiler pad).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub signature: String,
}

/// `hello`'s reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Hello {
    /// The process.
    pub pid: u32,
    /// Its executable.
    pub exe: String,
    /// The tracer crate's version in it.
    pub version: String,
    /// The protocol version it speaks.
    pub protocol: u64,
    /// Its clock (`tsc`, `monotonic`).
    pub clock: String,
    /// Clock ticks per nanosecond.
    pub ticks_per_ns: f64,
    /// Why its runtime could not start, if it could not.
    pub runtime_error: Option<String>,
    /// With `names: true`: every function's name, by index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// Otherwise: every function, by index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<Function>>,
}

/// `list`'s reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct List {
    /// The page.
    pub functions: Vec<Function>,
    /// How many there are in all.
    pub total: usize,
    /// Where the next page starts (`None` after the last).
    pub next: Option<usize>,
}

impl List {
    /// Append this page's reply to `out`: the bytes `serde_json::to_writer`
    /// makes of [`reply`]`(Ok(self))`, keys in the same (sorted) order,
    /// without building that value first (a page of 25,000 functions is
    /// 300,000 map entries).
    pub fn write_reply(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, &SortedList(self))
    }
}

/// [`List`] as [`reply`] writes it: `ok` and `v` added, keys sorted.
struct SortedList<'a>(&'a List);

impl Serialize for SortedList<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Functions<'a>(&'a [Function]);
        impl Serialize for Functions<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for f in self.0 {
                    seq.serialize_element(&SortedFunction(f))?;
                }
                seq.end()
            }
        }
        let l = self.0;
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("functions", &Functions(&l.functions))?;
        m.serialize_entry("next", &l.next)?;
        m.serialize_entry("ok", &true)?;
        m.serialize_entry("total", &l.total)?;
        m.serialize_entry("v", &super::PROTOCOL_VERSION)?;
        m.end()
    }
}

/// A [`Function`] with its keys sorted, as a `serde_json::Value` holds
/// them. (A field added to `Function` goes here too; the test
/// `a_list_reply_is_written_as_its_value_would_be` fails until it does.)
struct SortedFunction<'a>(&'a Function);

impl Serialize for SortedFunction<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let f = self.0;
        let mut m = s.serialize_map(Some(11 + usize::from(!f.signature.is_empty())))?;
        m.serialize_entry("compiler_pad", &f.compiler_pad)?;
        m.serialize_entry("enabled", &f.enabled)?;
        m.serialize_entry("file", &f.file)?;
        m.serialize_entry("ident", &f.ident)?;
        m.serialize_entry("index", &f.index)?;
        m.serialize_entry("line", &f.line)?;
        m.serialize_entry("loaded", &f.loaded)?;
        m.serialize_entry("name", &f.name)?;
        m.serialize_entry("object_offset", &f.object_offset)?;
        m.serialize_entry("problems", &f.problems)?;
        if !f.signature.is_empty() {
            m.serialize_entry("signature", &f.signature)?;
        }
        m.serialize_entry("sites", &f.sites)?;
        m.end()
    }
}

/// `enable`'s and `disable`'s reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Changed {
    /// Functions that changed state.
    pub changed: Vec<String>,
    /// Sites left alone: `[function, reason]`.
    pub skipped: Vec<(String, String)>,
    /// Cross-core syncs the batch did.
    pub syncs: usize,
    /// Set when a page's protection could not be restored.
    pub warning: Option<String>,
}

/// One thread, in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ThreadDetail {
    /// Kernel thread id.
    pub tid: u64,
    /// Ring capacity, in events.
    pub capacity: u64,
    /// Events waiting in the ring.
    pub pending: u64,
    /// Events ever written.
    pub written: u64,
    /// Events dropped (ring full).
    pub dropped: u64,
    /// Bytes of its block.
    pub bytes: usize,
    /// Its thread has exited.
    pub dead: bool,
    /// Its block is a shared memfd a reader can map.
    pub shared: bool,
    /// Why a reader cannot see it, if it cannot.
    pub not_visible: Option<String>,
}

/// What the agent has done with its connections (`status`'s `agent`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AgentCounters {
    /// Connections open now.
    pub connections: usize,
    /// The most it keeps open.
    pub max_connections: usize,
    /// Connections accepted.
    pub accepted: u64,
    /// Refused: the peer is neither this user nor root.
    pub refused_peer: u64,
    /// Refused: as many connections as allowed were open.
    pub refused_full: u64,
    /// Refused: the process is short of descriptors.
    pub refused_descriptors: u64,
    /// Idle connections closed to make room.
    pub evicted_idle: u64,
    /// Closed: a request did not arrive in time.
    pub dropped_slow_request: u64,
    /// Closed: a reply was not read in time.
    pub dropped_unread_reply: u64,
    /// `accept` failures.
    pub accept_failures: u64,
}

/// `status`'s reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Status {
    /// The process.
    pub pid: u32,
    /// Why its runtime could not start, if it could not.
    pub runtime_error: Option<String>,
    /// Names of the enabled functions, sorted.
    pub enabled: Vec<String>,
    /// Threads with a ring.
    pub threads: usize,
    /// Events dropped, all threads.
    pub dropped: u64,
    /// Exits with no matching entry.
    pub unmatched: u64,
    /// Events skipped: the thread was inside the tracer already.
    pub nested: u64,
    /// Traps emulated.
    pub traps_emulated: u64,
    /// Traps skipped as no-ops.
    pub traps_skipped: u64,
    /// Late traps rewound.
    pub traps_rewound: u64,
    /// Traps passed on (not the tracer's).
    pub traps_foreign: u64,
    /// Clock in use.
    pub clock: String,
    /// Clock ticks per nanosecond.
    pub ticks_per_ns: f64,
    /// How cores are synchronised.
    pub sync: String,
    /// Ring capacity for new threads, in events.
    pub buffer_events: usize,
    /// Bytes mapped for thread blocks.
    pub buffer_bytes: usize,
    /// Shared-memory segments (the tracer's descriptors) holding the thread
    /// blocks.
    pub arena_segments: usize,
    /// A reader has the rings.
    pub reader_attached: bool,
    /// How exits of compiler-padded functions are seen.
    pub returns: String,
    /// `lean` or `full-save`.
    pub trampoline: String,
    /// Why the full save is needed.
    pub full_save_reason: Option<String>,
    /// Hooked returns given back to an unwind.
    pub unwound: u64,
    /// GCC pads converted at start-up.
    pub converted_pads: usize,
    /// Every thread with a ring.
    pub threads_detail: Vec<ThreadDetail>,
    /// Threads a reader cannot see.
    pub not_visible: usize,
    /// The agent's connection counters.
    pub agent: AgentCounters,
}

/// A thread block handed to a reader: bytes `offset..offset + len` of one
/// of the memfds attached to the reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RingInfo {
    /// The block's id (stable while the process lives).
    pub id: u64,
    /// Its thread.
    pub tid: u64,
    /// Which attached memfd holds it, by position (absent from agents that
    /// attached one memfd per block, in order, each holding one block at
    /// offset 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<usize>,
    /// Where in that memfd the block starts (page-aligned).
    pub offset: u64,
    /// Bytes to map.
    pub len: usize,
    /// Offset of the ring.
    pub ring: usize,
    /// Offset of the per-function counters.
    pub counters: usize,
    /// Functions it has counters for.
    pub nfuncs: usize,
    /// Its thread has exited.
    pub dead: bool,
}

/// `rings`' reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Rings {
    /// Blocks new to the reader.
    pub rings: Vec<RingInfo>,
    /// Blocks a reader cannot map (not shared).
    pub unshared: usize,
    /// Clock ticks per nanosecond (refined).
    pub ticks_per_ns: f64,
    /// Functions registered now (more than the reader knows: ask `hello`).
    pub functions: usize,
}

/// `buffer`'s reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Buffer {
    /// Ring size for new threads now, in events (as rounded).
    pub events: usize,
    /// Threads that have a ring already, of the size they were given.
    pub threads_with_rings: usize,
}

/// A reply with nothing more to say than that it worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Done {}

/// A reply: `ok` and the body's fields, or the error.
pub fn reply<T: Serialize>(body: Result<T, String>) -> serde_json::Value {
    match body {
        Ok(b) => {
            let mut v = serde_json::to_value(b).unwrap_or_default();
            if let serde_json::Value::Object(m) = &mut v {
                m.insert("v".into(), super::PROTOCOL_VERSION.into());
                m.insert("ok".into(), true.into());
            }
            v
        }
        Err(e) => serde_json::json!({"v": super::PROTOCOL_VERSION, "ok": false, "error": e}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_reply_is_written_as_its_value_would_be() {
        let f = Function {
            index: 7,
            loaded: true,
            compiler_pad: true,
            name: "ns::f<\"q\">\u{1}\u{85}é".into(),
            ident: "f".into(),
            file: "/lib/x.so".into(),
            line: 12,
            enabled: true,
            sites: 2,
            problems: vec!["a \\ b".into(), "c".into()],
            object_offset: Some(0x1234),
            signature: "(n: u32) -> u64".into(),
        };
        let pages = [
            List::default(),
            List {
                functions: vec![f.clone(), Function::default()],
                total: 9,
                next: Some(2),
            },
            List {
                functions: vec![Function {
                    object_offset: None,
                    signature: String::new(),
                    ..f
                }],
                total: 1,
                next: None,
            },
        ];
        for page in pages {
            let mut fast = Vec::new();
            page.write_reply(&mut fast).unwrap();
            let slow = serde_json::to_vec(&reply(Ok(page.clone()))).unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(slow).unwrap()
            );
        }
    }

    #[test]
    fn requests_have_the_documented_shape() {
        assert_eq!(
            Request::Hello { names: true }.to_json(),
            json!({"v": 1, "op": "hello", "names": true})
        );
        assert_eq!(
            Request::List {
                pattern: Some("f*".into()),
                from: None,
                max: Some(10)
            }
            .to_json(),
            json!({"v": 1, "op": "list", "pattern": "f*", "max": 10})
        );
        assert_eq!(Request::Status.to_json(), json!({"v": 1, "op": "status"}));
        let r: Request =
            serde_json::from_value(json!({"v": 1, "op": "rings", "known": [1, 2]})).unwrap();
        assert_eq!(
            r,
            Request::Rings {
                known: vec![1, 2],
                arena: false
            }
        );
        // Unknown fields are ignored; a missing optional one is its default.
        let r: Request = serde_json::from_value(json!({"op": "hello", "pad": "x"})).unwrap();
        assert_eq!(r, Request::Hello { names: false });
        // Every op there is parses with its required fields.
        for op in Request::OPS {
            let r: Result<Request, _> =
                serde_json::from_value(json!({ "op": op, "pattern": "x", "events": 64 }));
            assert!(r.is_ok(), "{op}: {r:?}");
        }
    }

    #[test]
    fn requests_are_checked_as_the_agent_does() {
        assert_eq!(
            parse_request(br#"{"v":1,"op":"hello"}"#),
            Ok(Request::Hello { names: false })
        );
        for (body, says) in [
            (&b"[1]"[..], "expected a JSON object"),
            (b"{\"v\":1", "expected a JSON object"),
            (br#"{"v":"1","op":"hello"}"#, "protocol version"),
            (br#"{"v":2,"op":"hello"}"#, "protocol version"),
            (
                br#"{"v":1,"op":"format_disk"}"#,
                "unknown request 'format_disk'",
            ),
            (br#"{"v":1}"#, "unknown request ''"),
            (
                br#"{"v":1,"op":"rings","known":"all"}"#,
                "malformed 'rings' request",
            ),
            (br#"{"v":1,"op":"buffer"}"#, "malformed 'buffer' request"),
        ] {
            let e = parse_request(body).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn replies_round_trip() {
        let s = Status {
            pid: 7,
            enabled: vec!["a".into()],
            ..Default::default()
        };
        let v = reply(Ok(&s));
        assert_eq!(v["ok"], true);
        assert_eq!(v["v"], 1);
        assert_eq!(v["agent"]["accepted"], 0);
        let back: Status = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
        let e = reply::<Done>(Err("no".into()));
        assert_eq!(e, json!({"v": 1, "ok": false, "error": "no"}));
        assert_eq!(reply(Ok(Done {})), json!({"v": 1, "ok": true}));
    }
}
