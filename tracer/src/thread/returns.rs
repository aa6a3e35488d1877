//! The hooks of compiler pads and hooked returns: `on_fentry` swaps the
//! return address for the return trampoline, `on_fret` records the exit
//! and gives the real return address back; evicted and unwound frames.

use super::*;
use tracer_core::event::FLAG_ENTRY_ONLY;

/// Address of the return trampoline (`__tracer_v1_tramp_fret`) on x86-64
/// and AArch64, set by the runtime before any compiler pad is enabled; 0 where returns are
/// not hooked (no such trampoline, or CET shadow stacks: entry-only events).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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
    // x86-64: the common case in few registers (no callee-saved register to
    // save and restore), the rest in `on_fentry_slow`, tail-called.
    #[cfg(target_arch = "x86_64")]
    if let Some(now) = clock::fast_now() {
        let st = this_thread();
        if !st.is_null() && st as usize != tp::INIT {
            // SAFETY: blocks are never unmapped.
            let st = unsafe { &*st };
            if !st.busy.load(Ordering::Relaxed) {
                st.busy.store(true, Ordering::Relaxed);
                compiler_fence(Ordering::SeqCst);
                // SAFETY: the private part belongs to this thread; `slot` is
                // a live stack word (per the caller).
                let hooked =
                    unsafe { fentry_fast(st, &mut *st.private.get(), func as u32, slot, now) };
                compiler_fence(Ordering::SeqCst);
                st.busy.store(false, Ordering::Relaxed);
                if hooked {
                    return 1;
                }
            }
        }
    }
    // SAFETY: per the caller.
    unsafe { on_fentry_slow(func, slot, _frame) }
}

/// The common entry, as [`fentry_body`]'s own fast path does it: returns
/// hooked, not a tail call, no frame to drop or hook again, room on the
/// shadow stack. `false`: nothing done, take the general path.
///
/// # Safety
/// As [`on_fentry`] (`slot` is also the frame's key, x86-64).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn fentry_fast(st: &ThreadState, p: &mut Private, func: u32, slot: usize, now: u64) -> bool {
    let fret = FRET.load(Ordering::Relaxed);
    // SAFETY: per the caller, `slot` is a live stack word.
    let old = unsafe { *(slot as *const usize) };
    if fret == 0 || old == fret || p.rehook {
        return false;
    }
    let keep_top = p
        .depth
        .checked_sub(1)
        .and_then(|i| p.shadow.get(i))
        .is_none_or(|top| !(top.sp < slot && slot - top.sp < STACK_SPAN) && top.sp != slot);
    if !keep_top {
        return false;
    }
    let depth = p.depth;
    let (Some(sl), Some(m)) = (p.shadow.get_mut(depth), p.pushed.get_mut(depth)) else {
        return false;
    };
    *sl = Frame {
        func,
        unhooked: 0,
        ts: now,
        sp: slot,
        ret: old,
    };
    *m = slot;
    // SAFETY: per the caller; the return now goes through the trampoline.
    unsafe { *(slot as *mut usize) = fret };
    push_entry(st, p, func, now, 0);
    p.depth = depth + 1;
    true
}

/// [`on_fentry`]'s general path.
///
/// # Safety
/// As [`on_fentry`].
#[inline(never)]
unsafe extern "C" fn on_fentry_slow(func: usize, slot: usize, _frame: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    let frame = slot;
    #[cfg(not(target_arch = "x86_64"))]
    let frame = _frame;
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
        if cfg!(target_arch = "x86_64") {
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
        // (Only on x86-64, where a frame's key is its return address slot;
        // the AArch64 unwinder interposers never unhook surviving frames.)
        if cfg!(target_arch = "x86_64") && p.rehook && fret != 0 {
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
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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

/// Hook again the returns of this thread's frames whose slot lies above
/// `sp`, that an unwind gave back and that survived it: at the end of a C++
/// `catch` (`_Unwind_DeleteException`; `sp` is the caller's stack pointer),
/// or once the catching frame of an exception is known (see
/// `crate::whole`).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub fn rehook_after_catch(sp: usize) {
    let fret = FRET.load(Ordering::Relaxed);
    with_own(|st, p, was_busy| {
        if p.rehook && fret != 0 && !was_busy {
            let n = rehook_above(p, sp, fret);
            // They were not unwound after all.
            st.unwound.store(
                st.unwound.load(Ordering::Relaxed).saturating_sub(n),
                Ordering::Relaxed,
            );
        }
    });
}

/// Remember the return address slot of the frame that will catch the
/// exception being raised (`usize::MAX`: none, or a forced unwind), for
/// [`unhook_returns`] at `_Unwind_Resume`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub fn set_unwind_limit(limit: usize) {
    with_own(|_, p, _| p.unwind_limit = limit);
}

/// The limit [`set_unwind_limit`] remembered.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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

/// Give back the hooked return addresses of this thread's frames whose slot
/// lies below `limit` (`usize::MAX`: all): an exception or a forced unwind
/// is about to walk through them, and the unwinder must see the real return
/// addresses. They have no recorded exit (counted in `unwound`); frames
/// that survive after all are hooked again by [`rehook_after_catch`] or at
/// the next traced entry. Returns how many frames it gave back.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub fn unhook_returns(limit: usize) -> usize {
    with_own(|st, p, _| give_back(st, p, limit)).unwrap_or(0)
}

/// Give back every hooked return address of this thread before a stack walk
/// (`backtrace`, `_Unwind_Backtrace`), so the walk sees the real callers;
/// [`rehook_after_catch`] hooks them again after it. `false` (nothing given
/// back) when the thread has no hooked frame, or when it is inside a hook (a
/// signal handler interrupted one): then the walk stops at the return
/// trampoline.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub fn unhook_for_walk() -> bool {
    with_own(|st, p, was_busy| !was_busy && give_back(st, p, usize::MAX) > 0).unwrap_or(false)
}

/// The word at `addr`, if it can be read: a frame's slot may lie on a
/// stack that is gone (a coroutine's, unmapped since). A system call, for
/// the unwinder's paths only.
pub(crate) fn peek(addr: usize) -> Option<usize> {
    let mut v = 0usize;
    let local = libc::iovec {
        iov_base: &mut v as *mut usize as *mut libc::c_void,
        iov_len: std::mem::size_of::<usize>(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: std::mem::size_of::<usize>(),
    };
    // SAFETY: reads this process's own memory into `v`; the kernel checks
    // the remote range and fails with EFAULT where it is not mapped.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    (n == std::mem::size_of::<usize>() as isize).then_some(v)
}

/// Put `ret` back in the slot at `slot` if it still holds the return
/// trampoline `fret`. `None`: the slot cannot be read (its stack is gone);
/// else whether it was put back.
pub(crate) fn restore_slot(slot: usize, fret: usize, ret: usize) -> Option<bool> {
    if !is_fret(peek(slot)?, fret) {
        return Some(false);
    }
    // SAFETY: a mapped stack word holding the trampoline's address, which
    // only a hooked frame's slot does.
    unsafe { *(slot as *mut usize) = ret };
    Some(true)
}

/// [`unhook_returns`] on this thread's own state.
pub(crate) fn give_back(st: &ThreadState, p: &mut Private, limit: usize) -> usize {
    let fret = FRET.load(Ordering::Relaxed);
    let mut n = 0;
    let mut frames = 0;
    // Newest first: a stale frame may share a live frame's slot.
    for i in (0..p.depth).rev() {
        let Some(f) = p.shadow.get_mut(i) else {
            continue;
        };
        if f.ret == 0 || f.sp >= limit {
            continue;
        }
        if f.ret > TAIL && f.unhooked == 0 {
            match restore_slot(f.sp, fret, f.ret) {
                Some(true) => n += 1,
                Some(false) => {}
                // Its stack is gone (a coroutine's, freed): the frame is
                // dead; never look at its slot again.
                None => f.ret = 0,
            }
        }
        f.unhooked = 1;
        p.rehook = true;
        frames += 1;
    }
    for e in p.evicted.iter_mut().filter(|e| e.1 != 0 && e.0 < limit) {
        if restore_slot(e.0, fret, e.1) == Some(true) {
            n += 1;
        }
        *e = (0, 0);
    }
    st.unwound
        .store(st.unwound.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    frames
}

/// An unwind is about to go through the frame keyed `key` (its entry stack
/// pointer on AArch64, its return address slot on x86-64), which returns
/// into the return trampoline: the AArch64 unwinder walk (see
/// `crate::whole`), the x86-64 trampoline's personality routine. Its shadow
/// frame (and the tail-called ones that share it) is marked as given back,
/// and its original return address returned, for the caller to store where
/// the frame keeps it. `None` if this thread has no such hooked frame.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn give_back_return(key: usize) -> Option<usize> {
    with_own(|st, p, _| {
        // x86-64: hooked again by `rehook_after_catch` if it survives.
        p.rehook |= cfg!(target_arch = "x86_64");
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

/// How many hooked returns this thread has (AArch64 unwinder walks are
/// skipped when there are none).
#[cfg(target_arch = "aarch64")]
pub fn hooked_returns() -> usize {
    with_own(|_, p, _| {
        let live = p
            .shadow
            .iter()
            .take(p.depth)
            .filter(|f| f.ret > TAIL && f.unhooked == 0)
            .count();
        live + p.evicted.iter().filter(|e| e.1 != 0).count()
    })
    .unwrap_or(0)
}
