//! The in-process API: enable, disable, list, latency, counters.

use crate::patch::set_state;
use crate::runtime::{function_table, lookup, runtime, HOOK_CHECK};
use crate::{
    clock, collect, pads, returns, text, thread, trap, Bucket, Error, FunctionInfo, LatencySummary,
    Report, Stats,
};

/// Enable the functions `pattern` selects. Returns how many changed state
/// (already enabled functions are left alone and not counted).
pub fn enable(pattern: &str) -> Result<usize, Error> {
    enable_report(pattern).map(|r| r.changed.len())
}

/// Disable the functions `pattern` selects. Returns how many changed state.
pub fn disable(pattern: &str) -> Result<usize, Error> {
    disable_report(pattern).map(|r| r.changed.len())
}

/// [`enable_report`], capturing values: each call of the selected
/// compiler-padded functions records the argument registers `cap` names at
/// its entry and, with `cap.retval`, its return value at its exit (shown by
/// `tracer trace`, filtered by `--where`). A function enabled already with
/// another capture is switched to this one. Functions enabled without
/// capture keep their hot path: a capturing function calls its own entry
/// stub and trampolines (`#[traceable]` functions: their pads' capturing
/// stubs, on every architecture); capture at compiler pads needs x86-64 or
/// AArch64.
pub fn enable_with(pattern: &str, cap: crate::Capture) -> Result<Report, Error> {
    crate::patch::set_state_with(pattern, true, cap)
}

/// [`enable`], with the details: functions changed, sites skipped and why.
pub fn enable_report(pattern: &str) -> Result<Report, Error> {
    set_state(pattern, true)
}

/// [`disable`], with the details.
pub fn disable_report(pattern: &str) -> Result<Report, Error> {
    set_state(pattern, false)
}

/// Every traceable function, sorted by name.
pub fn functions() -> Vec<FunctionInfo> {
    let Ok(rt) = runtime() else {
        return Vec::new();
    };
    let mut all = function_table(&rt.lock_refreshed());
    all.retain(|f| f.loaded);
    all.sort_by(|a, b| a.name.cmp(&b.name).then(a.index.cmp(&b.index)));
    all
}

/// Latency of one function over every call completed while it was enabled:
/// `name` is a full path, or a function's own name when that is unique.
/// `None` if no such function exists or it has no completed call.
pub fn latency(name: &str) -> Option<LatencySummary> {
    let rt = runtime().ok()?;
    let f = lookup(&rt.lock_refreshed().reg, name)?;
    let mut c = collect::lock();
    c.drain_all();
    let t = c.totals(f);
    if t.count == 0 {
        return None;
    }
    // None: no call was drained here (an attached reader took the events).
    let h = c.hist(f).filter(|h| !h.is_empty());
    let (mut min, mut max) = (clock::to_ns(t.min), clock::to_ns(t.max));
    if min > max {
        // A call completed while `reset` restarted the extremes: take them
        // from the histogram until the next call sets them again.
        min = h.map_or(0, |h| h.min());
        max = h.map_or(0, |h| h.max()).max(min);
    }
    let p = h.map_or_else(Default::default, |h| h.percentiles().clamp(min, max));
    Some(LatencySummary {
        count: t.count,
        min,
        p50: p.p50,
        p90: p.p90,
        p99: p.p99,
        p999: p.p999,
        max,
        mean: clock::to_ns(t.sum / t.count),
        lost: t.count.saturating_sub(h.map_or(0, |h| h.count())),
    })
}

/// The latency distribution of one function in power-of-two buckets (as
/// ftrace hist triggers and bpftrace draw them), from the first to the last
/// non-empty bucket. `None` as for [`latency`].
pub fn log2_histogram(name: &str) -> Option<Vec<Bucket>> {
    let rt = runtime().ok()?;
    let f = lookup(&rt.lock_refreshed().reg, name)?;
    let mut c = collect::lock();
    c.drain_all();
    let h = c.hist(f).filter(|h| !h.is_empty())?;
    let log2 = h.log2();
    let buckets = log2.used()?.map(|i| Bucket {
        low: if i == 0 { 0 } else { 1u64 << i },
        high: 1u64 << (i + 1).min(63),
        count: log2.counts[i],
    });
    Some(buckets.collect())
}

/// Forget all latency data collected so far.
pub fn reset() {
    if runtime().is_ok() {
        collect::lock().reset();
    }
}

/// Ring capacity, in events, for threads that record their first event from
/// now on (rounded up to a power of two). Also settable with the
/// `TRACER_BUFFER_EVENTS` environment variable. Default 262144 (6 MiB a
/// thread); at least 64, at most 2^26.
pub fn set_buffer_events(events: usize) {
    thread::set_capacity(events);
}

/// Runtime counters.
pub fn stats() -> Stats {
    use std::sync::atomic::Ordering::Relaxed;
    let _ = runtime();
    let mut s = Stats {
        clock: clock::source(),
        sync: text::sync_mode_name(),
        buffer_events: thread::capacity(),
        trampoline: if thread::LEAN.load(Relaxed) {
            "lean"
        } else {
            "full-save"
        },
        capture_trampoline: if thread::CAPTURE_LEAN.load(Relaxed) {
            "lean"
        } else {
            "full-save"
        },
        capture_full_save_reason: thread::CAPTURE_CHECK.get().cloned().flatten(),
        full_save_reason: HOOK_CHECK.get().cloned().flatten(),
        traps_emulated: trap::EMULATED.load(Relaxed),
        traps_skipped: trap::SKIPPED.load(Relaxed),
        traps_rewound: trap::REWOUND.load(Relaxed),
        traps_foreign: trap::FOREIGN.load(Relaxed),
        returns: returns::returns_mode(),
        converted_pads: pads::converted(),
        ..Stats::default()
    };
    if runtime().is_ok() {
        let c = collect::lock();
        s.dropped = c.retired_drops[0];
        s.unmatched = c.retired_drops[1];
        s.nested = c.retired_drops[2];
    }
    for t in thread::all() {
        if t.owner.load(Relaxed) != 0 {
            s.threads += 1;
            s.buffer_bytes += thread::block_len(t);
            s.dropped += t.ring.dropped();
            s.unmatched += t.unmatched.load(Relaxed);
            s.nested += t.nested.load(Relaxed);
            s.unwound += t.unwound.load(Relaxed);
        }
    }
    s
}
