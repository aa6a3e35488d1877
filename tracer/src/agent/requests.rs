//! Answering the requests (see the protocol table in the module above).

use super::*;

pub(crate) fn error(e: &str) -> Value {
    msg::reply::<msg::Done>(Err(e.to_string()))
}

pub(crate) fn done() -> Value {
    msg::reply(Ok(msg::Done {}))
}

/// A reply to send: a JSON value, or a `list` page, written straight from
/// its typed form (the same bytes).
pub(crate) enum Reply {
    Json(Value),
    List(msg::List),
}

impl Reply {
    /// Append the reply's body to `out`.
    pub(crate) fn write(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            Reply::Json(v) => serde_json::to_writer(out, v),
            Reply::List(l) => l.write_reply(out),
        }
    }
}

impl From<Value> for Reply {
    fn from(v: Value) -> Reply {
        Reply::Json(v)
    }
}

pub(crate) fn respond(c: &mut Conn, agent: &AgentCounters) -> (Reply, Vec<RawFd>, bool) {
    let req = match msg::parse_request(c.inbuf.get(4..).unwrap_or(&[])) {
        Ok(r) => r,
        Err(e) => return (error(&e).into(), Vec::new(), false),
    };
    let (v, fds, keep) = match req {
        Request::Hello { names } => (hello(names), Vec::new(), true),
        Request::List { pattern, from, max } => {
            return (list(pattern.as_deref(), from, max), Vec::new(), true)
        }
        Request::Enable {
            pattern,
            capture,
            keep,
        } => (
            set(true, pattern.as_deref(), capture.unwrap_or(0), keep),
            Vec::new(),
            true,
        ),
        Request::Disable { pattern } => (set(false, pattern.as_deref(), 0, false), Vec::new(), true),
        Request::Status => (status(agent), Vec::new(), true),
        Request::Attach => {
            if c.attached {
                (done(), Vec::new(), true)
            } else if collect::external() {
                (
                    error("another tracer program is already reading this process; stop it first"),
                    Vec::new(),
                    true,
                )
            } else if let Err(e) = crate::runtime::runtime() {
                (error(&e.to_string()), Vec::new(), true)
            } else {
                HANDED.lock().unwrap_or_else(|e| e.into_inner()).clear();
                collect::set_external(true);
                c.attached = true;
                (done(), Vec::new(), true)
            }
        }
        Request::Rings { arena: false, .. } => (
            error(
                "this process's tracer runtime keeps thread blocks in a shared arena, which \
                 this tracer program does not know: use a tracer program of the same version",
            ),
            Vec::new(),
            true,
        ),
        Request::Rings { known, .. } if c.attached => {
            let (v, fds) = rings(known);
            (v, fds, true)
        }
        Request::Rings { .. } => (
            error("send 'attach' before 'rings'"),
            Vec::new(),
            true,
        ),
        // Only from this process: another copy of the agent took the
        // socket over (see `start`).
        Request::Retire if c.peer as u32 == std::process::id() => {
            c.retire = true;
            (done(), Vec::new(), false)
        }
        Request::Retire => (
            error("unknown request 'retire'; closing (is the tracer program newer than this process's tracer crate?)"),
            Vec::new(),
            false,
        ),
        Request::Buffer { events } => {
            crate::set_buffer_events(usize::try_from(events).unwrap_or(usize::MAX));
            let reply = msg::reply(Ok(msg::Buffer {
                events: thread::capacity(),
                threads_with_rings: crate::stats().threads,
            }));
            (reply, Vec::new(), true)
        }
        Request::Quit => {
            let disabled = disable_everything() as u64;
            if c.attached {
                c.attached = false;
                collect::set_external(false);
            }
            QUIT.store(true, Ordering::Release);
            (msg::reply(Ok(msg::Quit { disabled })), Vec::new(), false)
        }
        Request::Detach => {
            if c.attached {
                c.attached = false;
                collect::set_external(false);
            }
            (done(), Vec::new(), true)
        }
    };
    (v.into(), fds, keep)
}

pub(crate) fn func_msg(f: &crate::FunctionInfo) -> msg::Function {
    msg::Function {
        index: f.index,
        loaded: f.loaded,
        compiler_pad: f.compiler_pad,
        name: f.name.clone(),
        ident: f.ident.clone(),
        file: f.file.clone(),
        line: f.line,
        enabled: f.enabled,
        sites: f.sites,
        problems: f.problems.clone(),
        object_offset: f.object_offset,
        signature: f.signature.clone(),
    }
}

pub(crate) fn hello(names_only: bool) -> Value {
    let rt = crate::runtime::runtime();
    // By index: events name functions by their position here.
    let (names, functions) = if names_only {
        (Some(crate::runtime::function_names()), None)
    } else {
        let funcs = crate::runtime::all_functions()
            .iter()
            .map(func_msg)
            .collect();
        (None, Some(funcs))
    };
    msg::reply(Ok(msg::Hello {
        pid: std::process::id(),
        exe: std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").into(),
        protocol: PROTOCOL_VERSION,
        clock: clock::source().into(),
        ticks_per_ns: clock::ticks_per_ns(),
        runtime_error: rt.err().map(|e| e.to_string()),
        names,
        functions,
    }))
}

pub(crate) fn list(pattern: Option<&str>, from: Option<u64>, max: Option<u64>) -> Reply {
    // A page of the sorted list, so neither side holds all of a program's
    // 10^5-10^6 functions at once.
    let from = from.map_or(0, |f| usize::try_from(f).unwrap_or(usize::MAX));
    let max = max.map_or(usize::MAX, |m| {
        usize::try_from(m.max(1)).unwrap_or(usize::MAX)
    });
    match crate::runtime::functions_page(pattern, from, max) {
        Ok((page, total)) => {
            let to = from.min(total) + page.len();
            Reply::List(msg::List {
                functions: page.into_iter().map(into_msg).collect(),
                total,
                next: (to < total).then_some(to),
            })
        }
        Err(e) => error(&e.to_string()).into(),
    }
}

/// [`func_msg`], taking the strings over.
fn into_msg(f: crate::FunctionInfo) -> msg::Function {
    msg::Function {
        index: f.index,
        loaded: f.loaded,
        compiler_pad: f.compiler_pad,
        name: f.name,
        ident: f.ident,
        file: f.file,
        line: f.line,
        enabled: f.enabled,
        sites: f.sites,
        problems: f.problems,
        object_offset: f.object_offset,
        signature: f.signature,
    }
}

/// `enable` (`on`) or `disable`; `keep`: functions enabled already are left
/// as they are.
pub(crate) fn set(on: bool, pattern: Option<&str>, capture: u64, keep: bool) -> Value {
    let Some(p) = pattern else {
        return error("missing 'pattern'");
    };
    let r = if on {
        // `capture`: `tracer_core::capture::Capture::encode`'s number.
        let Ok(cap) = u32::try_from(capture) else {
            return error(
                "'capture' is not a capture specification; use the tracer program of this version",
            );
        };
        let cap = crate::Capture::decode(cap);
        if keep {
            crate::patch::set_state_keeping(p, cap)
        } else {
            crate::enable_with(p, cap)
        }
    } else {
        crate::disable_report(p)
    };
    msg::reply(
        r.map(|r| msg::Changed {
            changed: r.changed,
            skipped: r
                .skipped
                .iter()
                .map(|(f, s)| (f.clone(), format!("{} (site {:#x})", s.reason, s.addr)))
                .collect(),
            syncs: r.syncs,
            warning: r.warning,
        })
        .map_err(|e| e.to_string()),
    )
}

pub(crate) fn status(agent: &AgentCounters) -> Value {
    let rt = crate::runtime::runtime();
    let s = crate::stats();
    let threads: Vec<msg::ThreadDetail> = thread::all()
        .filter(|t| t.owner.load(Ordering::Acquire) != 0)
        .map(|t| msg::ThreadDetail {
            tid: t.owner.load(Ordering::Relaxed),
            capacity: t.ring.capacity() as u64,
            pending: t.ring.len() as u64,
            written: t.ring.written(),
            dropped: t.ring.dropped(),
            bytes: thread::block_len(t),
            dead: t.dead.load(Ordering::Relaxed),
            shared: thread::block_layout(t).fd >= 0,
            not_visible: thread::unshared_reason(t),
        })
        .collect();
    let not_visible = threads.iter().filter(|t| t.not_visible.is_some()).count();
    msg::reply(Ok(msg::Status {
        pid: std::process::id(),
        runtime_error: rt.err().map(|e| e.to_string()),
        enabled: crate::runtime::enabled_names(),
        threads: s.threads,
        dropped: s.dropped,
        unmatched: s.unmatched,
        nested: s.nested,
        traps_emulated: s.traps_emulated,
        traps_skipped: s.traps_skipped,
        traps_rewound: s.traps_rewound,
        traps_foreign: s.traps_foreign,
        clock: s.clock.into(),
        ticks_per_ns: clock::ticks_per_ns(),
        sync: s.sync.into(),
        buffer_events: s.buffer_events,
        buffer_bytes: s.buffer_bytes,
        arena_segments: thread::arena_segments(),
        reader_attached: collect::external(),
        returns: s.returns.into(),
        trampoline: s.trampoline.into(),
        full_save_reason: s.full_save_reason,
        unwound: s.unwound,
        converted_pads: s.converted_pads,
        threads_detail: threads,
        not_visible,
        agent: agent.clone(),
    }))
}

pub(crate) fn rings(mut known: Vec<u64>) -> (Value, Vec<RawFd>) {
    // Sorted, for a binary search per block (`known` may hold up to a
    // message's worth of ids).
    known.sort_unstable();
    let mut out = Vec::new();
    let mut fds = Vec::new();
    let mut unshared = 0;
    for t in thread::all() {
        let id = t as *const thread::ThreadState as u64;
        if t.owner.load(Ordering::Acquire) == 0 || known.binary_search(&id).is_ok() {
            continue;
        }
        let l = thread::block_layout(t);
        if l.fd < 0 {
            unshared += 1;
            continue;
        }
        // Each segment's memfd once; a block names it by position.
        let fd = match fds.iter().position(|&f| f == l.fd) {
            Some(i) => i,
            None if fds.len() >= MAX_FDS => break,
            None => {
                fds.push(l.fd);
                fds.len() - 1
            }
        };
        // Each block once: a reader that keeps asking without `known` must
        // not grow this list (it once grew by every block on every request).
        let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
        if !handed.contains(&id) {
            handed.push(id);
        }
        out.push(msg::RingInfo {
            id,
            tid: t.owner.load(Ordering::Relaxed),
            fd: Some(fd),
            offset: l.offset as u64,
            len: l.len,
            ring: l.ring,
            counters: l.counters,
            nfuncs: l.nfuncs,
            dead: t.dead.load(Ordering::Relaxed),
        });
    }
    clock::refine();
    (
        msg::reply(Ok(msg::Rings {
            rings: out,
            unshared,
            ticks_per_ns: clock::ticks_per_ns(),
            // More than the reader knows: a library was loaded; it asks
            // `hello` again for the names.
            functions: crate::runtime::function_count(),
        })),
        fds,
    )
}
