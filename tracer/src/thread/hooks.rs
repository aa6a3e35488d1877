//! The hot path: the hooks the `#[traceable]` trampolines call at a
//! function's entry and exit. After a thread's first event they take no lock,
//! allocate nothing and make no system call.

use super::*;

/// Run a slow path from a hook: through the saving shim on x86-64, so the
/// hook's own code stays free of vector registers (lean trampolines).
#[inline(always)]
pub(crate) fn call_slow(f: extern "C" fn(usize) -> usize) -> usize {
    call_slow_arg(f, 0)
}

pub(crate) use super::lean::call_slow_arg;

pub(crate) extern "C" fn slow_init_c(_: usize) -> usize {
    slow_init() as usize
}

/// Timestamp inside a hook: the TSC inline, anything else through
/// [`call_slow`] on x86-64 (a `usize` there is the clock's 64 bits), and
/// directly elsewhere: a `usize` of ARMv7 would cut the nanoseconds to 32
/// bits, which wrap every 4.3 s.
#[inline(always)]
pub(crate) fn hook_now() -> u64 {
    match clock::fast_now() {
        Some(t) => t,
        None => super::lean::slow_now(),
    }
}

/// This thread's block, made on its first event (then `true`).
#[inline(always)]
pub(crate) fn current() -> Option<(&'static ThreadState, bool)> {
    let mut p = this_thread();
    if p as usize == tp::INIT {
        return None; // in the middle of making this thread's block
    }
    let fresh = p.is_null();
    if fresh {
        p = call_slow(slow_init_c) as *mut ThreadState;
        if p.is_null() {
            return None;
        }
    }
    // SAFETY: blocks are never unmapped.
    Some((unsafe { &*p }, fresh))
}

/// Record an exit of `func` that took `dur` ticks.
///
/// Its thread counts it in its per-function counters only when no one else
/// will: while another process consumes the rings ([`COUNT_IN_HOOK`]), and
/// when the ring is full and the event is dropped. Otherwise the collector
/// counts it as it drains the event, which keeps four loads and up to four
/// stores per call off this path; either way the totals stay exact.
#[inline(always)]
pub(crate) fn record_exit(
    st: &ThreadState,
    p: &mut Private,
    func: u32,
    now: u64,
    dur: u64,
    depth: usize,
    flags: u8,
) {
    let mut flags = flags;
    if COUNT_IN_HOOK.load(Ordering::Relaxed) && count_exit(st, func, dur) {
        flags |= FLAG_COUNTED;
    }
    let pushed = st.ring.push(
        &mut p.cached_tail,
        &Event {
            ts: now,
            dur,
            func,
            depth: depth as u16,
            kind: KIND_EXIT,
            flags,
        },
    );
    if !pushed && flags & FLAG_COUNTED == 0 {
        // Dropped: no drainer will see it.
        count_exit(st, func, dur);
    }
}

/// Count an exit in the thread's counters; `false` if the thread's block has
/// no counter for `func` (a function registered after the block was made:
/// the collector counts its exits from their events).
#[inline(always)]
fn count_exit(st: &ThreadState, func: u32, dur: u64) -> bool {
    let Some(c) = st.counters().get(func as usize) else {
        return false;
    };
    bump(&c.count);
    c.sum.store(
        c.sum.load(Ordering::Relaxed).wrapping_add(dur),
        Ordering::Relaxed,
    );
    if dur < c.min.load(Ordering::Relaxed) {
        c.min.store(dur, Ordering::Relaxed);
    }
    if dur > c.max.load(Ordering::Relaxed) {
        c.max.store(dur, Ordering::Relaxed);
    }
    true
}

/// The part every event hook shares: take the timestamp, find the thread's
/// block (making it on the first event), and run `f` under the re-entrancy
/// guard (an event raised while the thread is already in a hook is counted
/// as nested and dropped).
#[inline(always)]
pub(crate) fn guarded(f: impl FnOnce(&ThreadState, &mut Private, u64)) {
    let mut now = hook_now();
    let Some((st, fresh)) = current() else { return };
    if fresh {
        // The thread's first event: making its block (memfd, mmap) took
        // time that is not the traced call's.
        now = hook_now();
    }
    if st.busy.load(Ordering::Relaxed) {
        bump(&st.nested);
        return;
    }
    st.busy.store(true, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    // SAFETY: the private part belongs to this thread.
    f(st, unsafe { &mut *st.private.get() }, now);
    compiler_fence(Ordering::SeqCst);
    st.busy.store(false, Ordering::Relaxed);
}

/// [`guarded`] for the `#[traceable]` hooks, with the site's record and
/// function.
///
/// # Safety
/// `rec` must be a site record.
#[inline(always)]
pub(crate) unsafe fn in_hook(
    rec: *const SiteRecord,
    f: impl FnOnce(&ThreadState, &mut Private, &SiteRecord, u32, u64),
) {
    guarded(|st, p, now| {
        // SAFETY: per the caller.
        let rec = unsafe { &*rec };
        f(st, p, rec, rec.func.load(Ordering::Relaxed), now)
    })
}

/// Record an entry of `func` at the current depth.
#[inline(always)]
pub(crate) fn push_entry(st: &ThreadState, p: &mut Private, func: u32, now: u64, flags: u8) {
    st.ring.push(
        &mut p.cached_tail,
        &Event {
            ts: now,
            dur: 0,
            func,
            depth: p.depth as u16,
            kind: KIND_ENTRY,
            flags,
        },
    );
}

/// Called by the entry trampoline.
///
/// # Safety
/// `rec` must be a site record; for async entries `token` must point at the
/// future's `u64` slot.
pub unsafe extern "C" fn on_entry(rec: *const SiteRecord, sp: usize, token: usize) {
    // SAFETY: per the caller.
    unsafe { entry_body::<{ sites::BOTH }>(rec, sp, token, |_, _, _| {}) }
}

/// Which records a hook body takes as an async fn's: a const generic
/// parameter of [`entry_body`] and [`exit_body`], so the other path is
/// compiled out before inlining (the capturing hooks' `values` then has one
/// call and is inlined: the lean trampolines allow the hooks no other
/// call).
pub(crate) mod sites {
    /// By the record's kind (`KIND_ASYNC_*`): the plain hooks.
    pub const BOTH: u8 = 0;
    /// Every record is synchronous.
    pub const SYNC: u8 = 1;
    /// Every record is an async fn's (the async capturing hooks).
    pub const ASYNC: u8 = 2;
}

/// [`on_entry`]'s work; `values` runs just before the entry event is
/// written (the capturing hook writes its values events there). Unless
/// `SITES` is [`sites::BOTH`], every record is taken as `SITES` says, so
/// `values` has one call site and is inlined (the capturing hooks must
/// contain no call but to the saving shim: the lean trampolines).
///
/// # Safety
/// As [`on_entry`].
#[inline(always)]
pub(crate) unsafe fn entry_body<const SITES: u8>(
    rec: *const SiteRecord,
    sp: usize,
    token: usize,
    values: impl FnOnce(&ThreadState, &mut Private, u32),
) {
    let hook = |st: &ThreadState, p: &mut Private, rec: &SiteRecord, func: u32, now: u64| {
        let is_async = match SITES {
            // The low byte: a record flagged `FLAG_CAPTURE_STUB` has its
            // kind there (one byte compare, as cheap as the whole word's).
            sites::BOTH => rec.kind as u8 == KIND_ASYNC_ENTRY as u8,
            sites::ASYNC => true,
            sites::SYNC => false,
            // None other: the match is on a constant (folded away).
            _ => false,
        };
        if is_async {
            // SAFETY: per the caller.
            unsafe { *(token as *mut u64) = now.max(1) };
            values(st, p, func);
            push_entry(st, p, func, now, FLAG_ASYNC);
        } else {
            // Frames below this one (deeper stack) have returned without a
            // recorded exit. A frame at the same stack pointer may be a live
            // caller this function was inlined into, unless it is this very
            // function (no function is nested in itself within one frame).
            // (`get` rather than indexing: the hooks contain no panic path.)
            while let Some(&top) = p.depth.checked_sub(1).and_then(|i| p.shadow.get(i)) {
                if (top.sp < sp && sp - top.sp < STACK_SPAN) || (top.sp == sp && top.func == func) {
                    p.depth -= 1;
                    p.overflow = 0;
                    evict(p, top, p.depth);
                } else {
                    break;
                }
            }
            if let Some(slot) = p.shadow.get_mut(p.depth) {
                *slot = Frame {
                    func,
                    unhooked: 0,
                    ts: now,
                    sp,
                    ret: 0,
                };
                values(st, p, func);
                push_entry(st, p, func, now, 0);
                p.depth += 1;
            } else {
                p.overflow += 1;
                bump(&st.too_deep);
            }
        }
    };
    // SAFETY: per the caller.
    unsafe { in_hook(rec, hook) }
}

/// Stack pointers farther apart than this are on different stacks (a signal
/// handler on its alternate stack): never treat such frames as stale.
pub(crate) const STACK_SPAN: usize = 64 << 20;
/// How far down the shadow stack an exit looks for its entry.
pub(crate) const EXIT_SEARCH: usize = 8;

/// Called by the exit trampoline.
///
/// # Safety
/// As [`on_entry`].
pub unsafe extern "C" fn on_exit(rec: *const SiteRecord, sp: usize, token: usize) {
    // SAFETY: per the caller.
    unsafe { exit_body::<{ sites::BOTH }>(rec, sp, token, |_, _, _, _| {}) }
}

/// [`on_exit`]'s work; `values` runs just before the exit event is written
/// (with the exit's depth). `SITES` as in [`entry_body`].
///
/// # Safety
/// As [`on_entry`].
#[inline(always)]
pub(crate) unsafe fn exit_body<const SITES: u8>(
    rec: *const SiteRecord,
    sp: usize,
    token: usize,
    values: impl FnOnce(&ThreadState, &mut Private, u32, usize),
) {
    let hook = |st: &ThreadState, p: &mut Private, rec: &SiteRecord, func: u32, now: u64| {
        let is_async = match SITES {
            // The low byte: a record flagged `FLAG_CAPTURE_STUB` has its
            // kind there (one byte compare, as cheap as the whole word's).
            sites::BOTH => rec.kind as u8 == KIND_ASYNC_EXIT as u8,
            sites::ASYNC => true,
            sites::SYNC => false,
            // None other: the match is on a constant (folded away).
            _ => false,
        };
        if is_async {
            // SAFETY: per the caller.
            let slot = unsafe { &mut *(token as *mut u64) };
            let t0 = *slot;
            if t0 == 0 {
                bump(&st.unmatched);
            } else if !window::current(func, t0) {
                // Its first poll was in an earlier enabled window.
                *slot = 0;
                bump(&st.unmatched);
            } else {
                *slot = 0;
                values(st, p, func, p.depth);
                record_exit(
                    st,
                    p,
                    func,
                    now,
                    now.saturating_sub(t0),
                    p.depth,
                    FLAG_ASYNC,
                );
            }
        } else if p.overflow > 0 {
            // The exit of a call too deep to have a frame.
            p.overflow -= 1;
        } else {
            let mut found = None;
            let lowest = p.depth.saturating_sub(EXIT_SEARCH);
            for i in (lowest..p.depth).rev() {
                let Some(f) = p.shadow.get(i) else { continue };
                if f.func == func && f.sp >= sp && f.sp - sp < STACK_SPAN {
                    found = Some((i, f.ts));
                    break;
                }
            }
            match found {
                Some((i, t0)) => {
                    for j in i + 1..p.depth {
                        if let Some(&f) = p.shadow.get(j) {
                            evict(p, f, j);
                        }
                    }
                    p.depth = i;
                    if window::current(func, t0) {
                        values(st, p, func, i);
                        record_exit(st, p, func, now, now.saturating_sub(t0), i, 0);
                    } else {
                        // The entry is from an earlier enabled window: the
                        // call it began was left while the function was off,
                        // and this exit's own entry was never seen.
                        bump(&st.unmatched);
                    }
                }
                None => bump(&st.unmatched),
            }
        }
    };
    // SAFETY: per the caller.
    unsafe { in_hook(rec, hook) }
}
