//! The hooks of compiler pads and hooked returns: `on_fentry` swaps the
//! return address for the return trampoline, `on_fret` records the exit
//! and gives the real return address back; evicted and unwound frames.

use super::*;
use tracer_core::event::FLAG_ENTRY_ONLY;

// The architecture's side: how frames are keyed, the entry's fast path,
// and the unwinder's entry points into the shadow stack.
crate::sys::per_arch! {
    "x86_64": "returns_x86_64.rs", "aarch64": "returns_aarch64.rs";
    mod arch;
    pub use arch::*;
}

/// Address of the return trampoline (`__tracer_v1_tramp_fret`) on x86-64
/// and AArch64, set by the runtime before any compiler pad is enabled; 0 where returns are
/// not hooked (no such trampoline, or CET shadow stacks: entry-only events).
pub static FRET: AtomicUsize = AtomicUsize::new(0);

/// Address of the capturing return trampoline
/// (`__tracer_v1_tramp_fret_args`), set with [`FRET`]; 0 where there is
/// none (the return value is then not captured).
pub static FRET_ARGS: AtomicUsize = AtomicUsize::new(0);

/// Whether `v`, read from a return address slot, is a hooked return: the
/// return trampoline `fret` or its capturing variant.
#[inline]
pub(crate) fn is_fret(v: usize, fret: usize) -> bool {
    (fret != 0 && v == fret) || (v != 0 && v == FRET_ARGS.load(Ordering::Relaxed))
}

/// Called by the compiler-pad entry trampoline: function `func` was entered;
/// `slot` holds its return address.
///
/// Frames at or below `slot` on this stack are gone (they returned without
/// passing the return trampoline: `longjmp`, an exception, a disabled
/// `#[traceable]` exit) and are dropped, except the frame a tail call came
/// from, which shares the slot (the slot then already holds the return
/// trampoline): the callee gets a [`TAIL`] frame above it and both exits are
/// recorded when the slot's return comes.
///
/// `frame` identifies the call on the stack: on x86-64 it is `slot` itself
/// (the return address is pushed on the stack and popped by `ret`); on
/// AArch64 the return address arrives in `x30`, `slot` is where the
/// trampoline saved it, and `frame` is the stack pointer at the function's
/// entry (the traced function returns, into the return trampoline, with
/// the same one). Frames are keyed by it.
///
/// # Safety
/// `slot` must be the address of the return address of a function being
/// entered on this thread's stack (on AArch64: the entry trampoline's saved
/// `x30`, which the trampoline puts back into `x30`).
pub unsafe extern "C" fn on_fentry(func: usize, slot: usize, _frame: usize) -> usize {
    // SAFETY: per the caller.
    if unsafe { arch::entry_fast(func, slot) } {
        return 1;
    }
    // SAFETY: per the caller.
    unsafe { on_fentry_slow(func, slot, _frame) }
}

/// [`on_fentry`]'s general path.
///
/// # Safety
/// As [`on_fentry`].
#[inline(never)]
unsafe extern "C" fn on_fentry_slow(func: usize, slot: usize, _frame: usize) -> usize {
    let frame = if arch::KEYED_BY_SLOT { slot } else { _frame };
    let pushed = std::cell::Cell::new(false);
    // SAFETY: per the caller.
    unsafe {
        fentry_body(
            func as u32,
            slot,
            frame,
            |old, fret| old == fret,
            |fret| fret,
            Plain(&pushed),
        )
    };
    // x86-64: the entry trampoline then enters the function through
    // `__tracer_v1_fret_push` (AArch64's ignores it).
    usize::from(pushed.get())
}

/// The plain entry hook's values: none, but a frame whose slot it hooked
/// is marked as entered through `__tracer_v1_fret_push` (x86-64), and the
/// flag set for the trampoline.
struct Plain<'a>(&'a std::cell::Cell<bool>);

impl Values for Plain<'_> {
    #[inline(always)]
    fn entry(&self, _: &ThreadState, _: &mut Private) {}
    #[inline(always)]
    fn exit(&self, _: &ThreadState, _: &mut Private, _: u32, _: usize) {}
    #[inline(always)]
    fn hooked(&self, p: &mut Private, slot: usize) {
        if arch::KEYED_BY_SLOT {
            if let Some(m) = p.pushed.get_mut(p.depth) {
                *m = slot;
                self.0.set(true);
            }
        }
    }
}

/// What the hooks' bodies write besides the entry and exit events: the
/// capturing hooks' values events (`super::capture`), nothing for the
/// plain ones. A trait rather than closures so the calls are inlined (the
/// lean check allows no call in a hook).
pub(crate) trait Values {
    /// Just before an entry event is pushed.
    fn entry(&self, st: &ThreadState, p: &mut Private);
    /// Just before the exit event of `func` at `depth` is pushed.
    fn exit(&self, st: &ThreadState, p: &mut Private, func: u32, depth: usize);
    /// The entry at `p.depth` just swapped the return address in `slot`
    /// for the return trampoline's. By default its frame is marked as not
    /// entered through `__tracer_v1_fret_push` (see [`Private::pushed`]).
    #[inline(always)]
    fn hooked(&self, p: &mut Private, _slot: usize) {
        if let Some(m) = p.pushed.get_mut(p.depth) {
            *m = 0;
        }
    }
}

/// The plain hooks: no values.
pub(crate) struct NoValues;

impl Values for NoValues {
    #[inline(always)]
    fn entry(&self, _: &ThreadState, _: &mut Private) {}
    #[inline(always)]
    fn exit(&self, _: &ThreadState, _: &mut Private, _: u32, _: usize) {}
}

/// The body of [`on_fentry`], shared with the capturing hook
/// (`super::capture`): `is_tail(old, fret)` says whether the slot's old
/// value is a hooked return, `hook_with(fret)` what the slot gets, and `before`'s
/// `entry` runs just before the entry event is pushed. The plain hook passes the
/// identities, which inline to its former code.
///
/// # Safety
/// As [`on_fentry`].
#[inline(always)]
pub(crate) unsafe fn fentry_body(
    func: u32,
    slot: usize,
    frame: usize,
    is_tail: impl FnOnce(usize, usize) -> bool,
    hook_with: impl FnOnce(usize) -> usize,
    before: impl Values,
) {
    guarded(|st, p, now| {
        let fret = FRET.load(Ordering::Relaxed);
        // SAFETY: per the caller, `slot` is a live stack word.
        let old = unsafe { *(slot as *const usize) };
        let tail = fret != 0 && is_tail(old, fret);
        // The common case first: returns are hooked, not a tail call, no
        // frame to drop or hook again, room on the shadow stack. The same as
        // the general path below, whose loop would then stop at once.
        if fret != 0 && !tail && !p.rehook {
            let keep_top = p
                .depth
                .checked_sub(1)
                .and_then(|i| p.shadow.get(i))
                .is_none_or(|top| {
                    !(top.sp < frame && frame - top.sp < STACK_SPAN) && top.sp != frame
                });
            if keep_top {
                if let Some(sl) = p.shadow.get_mut(p.depth) {
                    *sl = Frame {
                        func,
                        unhooked: 0,
                        ts: now,
                        sp: frame,
                        ret: old,
                    };
                    // SAFETY: per the caller; the return now goes through the trampoline.
                    unsafe { *(slot as *mut usize) = hook_with(fret) };
                    before.hooked(p, slot);
                    before.entry(st, p);
                    push_entry(st, p, func, now, 0);
                    p.depth += 1;
                    return;
                }
            }
        }
        while let Some(&top) = p.depth.checked_sub(1).and_then(|i| p.shadow.get(i)) {
            let below = top.sp < frame && frame - top.sp < STACK_SPAN;
            let same_dead = top.sp == frame && !tail;
            if below || same_dead {
                p.depth -= 1;
                p.overflow = 0;
                evict(p, top, p.depth);
            } else {
                break;
            }
        }
        // (Only where a frame's key is its return address slot, x86-64;
        // the AArch64 unwinder interposers never unhook surviving frames.)
        if arch::KEYED_BY_SLOT && p.rehook && fret != 0 {
            let n = rehook_above(p, slot, fret);
            // They were not unwound after all.
            st.unwound.store(
                st.unwound.load(Ordering::Relaxed).saturating_sub(n),
                Ordering::Relaxed,
            );
        }
        let hooked_below = p
            .depth
            .checked_sub(1)
            .and_then(|i| p.shadow.get(i))
            .is_some_and(|f| f.sp == frame && f.ret != 0 && f.unhooked == 0);
        // A tail call whose caller's frame is not on the shadow stack any more
        // cannot be given an exit: record nothing rather than half a call.
        let hook = fret != 0 && (!tail || hooked_below);
        if let Some(sl) = p.shadow.get_mut(p.depth).filter(|_| hook) {
            *sl = Frame {
                func,
                unhooked: 0,
                ts: now,
                sp: frame,
                ret: if tail { TAIL } else { old },
            };
            if !tail {
                // SAFETY: per the caller; the return now goes through the trampoline.
                unsafe { *(slot as *mut usize) = hook_with(fret) };
                before.hooked(p, slot);
            }
            before.entry(st, p);
            push_entry(st, p, func, now, 0);
            p.depth += 1;
        } else if fret == 0 {
            // Returns are not hooked here (CET shadow stacks): entry events only.
            before.entry(st, p);
            push_entry(st, p, func, now, FLAG_ENTRY_ONLY);
        } else {
            bump(&st.too_deep);
        }
    })
}

/// An exception or panic was caught: the frames above `limit` on this stack
/// survived it, so their returns are hooked again (any further unwind starts
/// with [`unhook_returns`] again). A frame whose slot no longer holds its
/// return address is dead and stays unhooked.
#[inline(always)]
pub(crate) fn rehook_above(p: &mut Private, limit: usize, fret: usize) -> u64 {
    p.rehook = false;
    let mut base_ok = false;
    let mut n = 0;
    for i in 0..p.depth {
        let Some(f) = p.shadow.get_mut(i) else { break };
        if f.unhooked == 0 {
            continue;
        }
        if f.ret > TAIL {
            // A capturing frame returns through its own trampoline again.
            let fa = FRET_ARGS.load(Ordering::Relaxed);
            let to = if fa != 0 && p.captured.get(i) == Some(&(f.sp, f.func)) {
                fa
            } else {
                fret
            };
            // SAFETY: the slot of a frame entered on this thread's stack,
            // above `limit` (live), read and written only if it still holds
            // the frame's own return address.
            unsafe {
                base_ok = f.sp > limit && *(f.sp as *const usize) == f.ret;
                if base_ok {
                    *(f.sp as *mut usize) = to;
                    f.unhooked = 0;
                    n += 1;
                }
            }
        } else if f.ret == TAIL && base_ok {
            f.unhooked = 0;
        } else {
            base_ok = false;
        }
    }
    n
}

/// Run `f` on this thread's own state (if it has a block) with the
/// re-entrancy flag set, passing whether it was already set; for the paths
/// that must not skip a busy thread (returns, the unwinder).
#[inline(always)]
pub(crate) fn with_own<R>(f: impl FnOnce(&ThreadState, &mut Private, bool) -> R) -> Option<R> {
    let st = this_thread();
    if st.is_null() || st as usize == tp::INIT {
        return None;
    }
    // SAFETY: blocks are never unmapped.
    let st = unsafe { &*st };
    // A load and a store, not a swap: `swap` is a locked `xchg` (a full
    // barrier, the dearest instruction of a hooked return). Only this thread
    // and signal handlers that interrupt it touch the flag, and a handler
    // that runs between the two puts it back as it found it.
    let was_busy = st.busy.load(Ordering::Relaxed);
    st.busy.store(true, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    // SAFETY: the private part belongs to this thread.
    let r = f(st, unsafe { &mut *st.private.get() }, was_busy);
    compiler_fence(Ordering::SeqCst);
    st.busy.store(was_busy, Ordering::Relaxed);
    Some(r)
}

/// Remember the return address slot of the frame that will catch the
/// exception being raised (`usize::MAX`: none, or a forced unwind), for
/// [`unhook_returns`] at `_Unwind_Resume`.
pub fn set_unwind_limit(limit: usize) {
    with_own(|_, p, _| p.unwind_limit = limit);
}

/// The limit [`set_unwind_limit`] remembered.
pub fn unwind_limit() -> usize {
    with_own(|_, p, _| p.unwind_limit).unwrap_or(usize::MAX)
}

/// Called by the return trampoline: the function whose frame is keyed by
/// `slot` (see [`on_fentry`]: its return address slot on x86-64, its entry
/// stack pointer on AArch64) returned. Records the exit(s) and returns
/// where it must go.
///
/// # Safety
/// Only the return trampoline calls it, on the thread whose frame it was.
pub unsafe extern "C" fn on_fret(slot: usize) -> Returned {
    // The common case in few registers, as `fret_pair`'s own fast path does
    // it; the rest in `on_fret_slow`, tail-called with the timestamp.
    let Some(now) = clock::fast_now() else {
        // SAFETY: per the caller.
        return unsafe { on_fret_slow(slot, hook_now()) };
    };
    let st = this_thread();
    if !st.is_null() && st as usize != tp::INIT {
        // SAFETY: blocks are never unmapped.
        let st = unsafe { &*st };
        if !st.busy.load(Ordering::Relaxed) {
            st.busy.store(true, Ordering::Relaxed);
            compiler_fence(Ordering::SeqCst);
            // SAFETY: the private part belongs to this thread.
            let p = unsafe { &mut *st.private.get() };
            let mut r = Returned { ret: 0, pushed: 0 };
            if let Some(&f) = p.depth.checked_sub(1).and_then(|i| p.shadow.get(i)) {
                if f.sp == slot && f.ret > TAIL && f.unhooked == 0 {
                    let i = p.depth - 1;
                    record_exit(st, p, f.func, now, now.saturating_sub(f.ts), i, 0);
                    if let Some(m) = p.pushed.get_mut(i) {
                        r.pushed = usize::from(*m == slot);
                        *m = 0;
                    }
                    p.depth = i;
                    p.overflow = 0;
                    r.ret = f.ret;
                }
            }
            compiler_fence(Ordering::SeqCst);
            st.busy.store(false, Ordering::Relaxed);
            if r.ret != 0 {
                return r;
            }
        }
    }
    // SAFETY: per the caller.
    unsafe { on_fret_slow(slot, now) }
}

/// [`on_fret`]'s general path, with the timestamp already taken.
///
/// # Safety
/// As [`on_fret`].
#[inline(never)]
unsafe extern "C" fn on_fret_slow(slot: usize, now: u64) -> Returned {
    // SAFETY: per the caller.
    let (ret, pushed) = unsafe { fret_pair(slot, now, NoValues) };
    Returned {
        ret,
        pushed: usize::from(pushed),
    }
}

/// What [`on_fret`] gives the return trampoline (in `rax` and `rdx`).
#[repr(C)]
pub struct Returned {
    /// Where the function returns.
    pub ret: usize,
    /// Non-zero: its entry pushed the return trampoline on the return-stack
    /// predictor's stack (x86-64), so the trampoline leaves by `ret`.
    pub pushed: usize,
}

/// The body of [`on_fret`], shared with the capturing hook: `before`'s
/// `exit` runs just before each exit event is pushed.
///
/// # Safety
/// As [`on_fret`].
#[inline(always)]
pub(crate) unsafe fn fret_body(slot: usize, before: impl Values) -> usize {
    // SAFETY: per the caller.
    unsafe { fret_pair(slot, hook_now(), before) }.0
}

/// [`fret_body`], and whether the frame's entry went through
/// `__tracer_v1_fret_push` (see [`Private::pushed`]).
///
/// # Safety
/// As [`on_fret`].
#[inline(always)]
unsafe fn fret_pair(slot: usize, now: u64, before: impl Values) -> (usize, bool) {
    let mut pushed = false;
    let ret = with_own(|st, p, was_busy| {
        // The common case first: the newest frame is this return's, and no
        // tail-called frame shares its slot (it is the top). The same as the
        // general search below finding `i = depth - 1`.
        if let Some(&f) = p.depth.checked_sub(1).and_then(|i| p.shadow.get(i)) {
            if f.sp == slot && f.ret > TAIL && f.unhooked == 0 && !was_busy {
                let i = p.depth - 1;
                before.exit(st, p, f.func, i);
                record_exit(st, p, f.func, now, now.saturating_sub(f.ts), i, 0);
                if let Some(m) = p.pushed.get_mut(i) {
                    pushed = *m == slot;
                    *m = 0;
                }
                p.depth = i;
                p.overflow = 0;
                return f.ret;
            }
        }
        let mut found = None;
        for i in (0..p.depth).rev() {
            if let Some(f) = p.shadow.get(i) {
                if f.sp == slot && f.ret > TAIL && f.unhooked == 0 {
                    found = Some(i);
                    break;
                }
            }
        }
        match found {
            Some(i) => {
                // Frames above `i` are the tail-called functions sharing this
                // slot (recorded) or stale frames (dropped).
                for j in (i..p.depth).rev() {
                    let Some(&f) = p.shadow.get(j) else { continue };
                    if f.sp == slot && f.ret != 0 && f.unhooked == 0 && !was_busy {
                        before.exit(st, p, f.func, j);
                        record_exit(st, p, f.func, now, now.saturating_sub(f.ts), j, 0);
                    } else if f.sp != slot {
                        evict(p, f, j);
                    }
                }
                let r = p.shadow.get(i).map_or(0, |f| f.ret);
                p.depth = i;
                p.overflow = 0;
                r
            }
            None => {
                // A frame dropped as stale that was alive after all (it was
                // on another stack: a coroutine's, an alternate signal
                // stack). Newest first: the slot may have been reused since.
                let mut r = 0;
                let mut call = None;
                let next = p.evicted_next;
                for k in 1..=EVICTED {
                    let i = next.wrapping_sub(k) % EVICTED;
                    let Some(e) = p.evicted.get_mut(i) else {
                        continue;
                    };
                    if e.0 == slot && e.1 != 0 {
                        r = e.1;
                        // Two word stores (a merged 16-byte store would use a
                        // vector register, which the lean trampolines do not save).
                        // SAFETY: plain stores to fields of our own array.
                        unsafe {
                            std::ptr::write_volatile(&mut e.0, 0);
                            std::ptr::write_volatile(&mut e.1, 0);
                        }
                        call = p.evicted_call.get(i).copied();
                        break;
                    }
                }
                match call {
                    Some((ts, fd)) if !was_busy => {
                        let (func, depth) = (fd as u32, (fd >> 32) as usize);
                        before.exit(st, p, func, depth);
                        record_exit(st, p, func, now, now.saturating_sub(ts), depth, 0);
                    }
                    _ => bump(&st.unmatched),
                }
                r
            }
        }
    })
    .unwrap_or(0);
    if ret == 0 {
        // Through the shim: the hook itself makes no other call (lean check).
        return (call_slow_arg(lost_return, slot), false);
    }
    (ret, pushed)
}

/// A hooked return with no record: the return address is unknown. Never
/// returns.
pub(crate) extern "C" fn lost_return(slot: usize) -> usize {
    eprintln!(
        "tracer: fatal: a hooked return (return address slot {slot:#x}) has no record on this \
         thread's shadow stack, so the return address is unknown. Please report this with the \
         program; disable return hooking with TRACER_NO_RETURN_HOOK=1 to work around it"
    );
    std::process::abort()
}

/// An unwind is about to go through the frame keyed `key` (its entry stack
/// pointer on AArch64, its return address slot on x86-64), which returns
/// into the return trampoline: the AArch64 unwinder walk (see
/// `crate::whole`), the x86-64 trampoline's personality routine. Its shadow
/// frame (and the tail-called ones that share it) is marked as given back,
/// and its original return address returned, for the caller to store where
/// the frame keeps it. `None` if this thread has no such hooked frame.
pub fn give_back_return(key: usize) -> Option<usize> {
    with_own(|st, p, _| {
        // x86-64: hooked again by `rehook_after_catch` if it survives.
        p.rehook |= arch::KEYED_BY_SLOT;
        let mut found = None;
        for i in (0..p.depth).rev() {
            let Some(f) = p.shadow.get(i) else { continue };
            if f.sp == key && f.ret > TAIL && f.unhooked == 0 {
                found = Some((i, f.ret));
                break;
            }
        }
        let ret = match found {
            Some((i, ret)) => {
                for j in i..p.depth {
                    if let Some(f) = p.shadow.get_mut(j).filter(|f| f.sp == key) {
                        f.unhooked = 1;
                    }
                }
                ret
            }
            None => {
                let e = p.evicted.iter_mut().find(|e| e.0 == key && e.1 != 0)?;
                let ret = e.1;
                *e = (0, 0);
                ret
            }
        };
        bump(&st.unwound);
        Some(ret)
    })
    .flatten()
}

/// The offsets the return trampoline's unwind rule reads to find a hooked
/// frame's real return address on the shadow stacks (a DWARF expression:
/// `scripts/fret-cfi.py`). The rule also relies on what is checked here:
/// `next` first in a block, `depth` first in [`Private`], 32-byte frames
/// with `sp` at 16 and `ret` at 24, [`TAIL`] = 1.
pub(crate) mod fret_layout {
    use super::super::{Frame, Private, ThreadState};
    use std::mem::offset_of;
    /// [`ThreadState::dead`] (one byte).
    pub const DEAD: usize = offset_of!(ThreadState, dead);
    /// The shadow stack's depth.
    pub const PRIVATE: usize = offset_of!(ThreadState, private) + offset_of!(Private, depth);
    /// The shadow frames.
    pub const SHADOW: usize = offset_of!(ThreadState, private) + offset_of!(Private, shadow);
    const _: () = {
        assert!(offset_of!(ThreadState, next) == 0);
        assert!(offset_of!(Private, depth) == 0);
        assert!(std::mem::size_of::<Frame>() == 32);
        assert!(offset_of!(Frame, sp) == 16);
        assert!(offset_of!(Frame, ret) == 24);
        assert!(super::super::TAIL == 1);
        assert!(super::super::MAX_DEPTH == 128);
        assert!(DEAD < 65536 && PRIVATE < 65536 && SHADOW < 65536);
    };
}
