//! x86-64's side of the compiler pads' hooks (see `super`): a frame is
//! keyed by its return address slot, the entry's common case runs in few
//! registers before the general path, and the unwinder's interposers
//! (`crate::returns::unwind`) give hooked returns back and hook the
//! survivors again.

use super::*;

/// A frame is keyed by its return address slot (the return address is
/// pushed on the stack and popped by `ret`): frames given back to an
/// unwind can be found and hooked again.
pub(super) const KEYED_BY_SLOT: bool = true;

/// The entry hook's common case in few registers (no callee-saved register
/// to save and restore): `true` if it recorded the entry and hooked the
/// return; `false`: nothing done, `on_fentry` takes the general path.
///
/// # Safety
/// As [`on_fentry`].
#[inline(always)]
pub(super) unsafe fn entry_fast(func: usize, slot: usize) -> bool {
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
                    return true;
                }
            }
        }
    }
    false
}

/// The common entry, as [`fentry_body`]'s own fast path does it: returns
/// hooked, not a tail call, no frame to drop or hook again, room on the
/// shadow stack. `false`: nothing done, take the general path.
///
/// # Safety
/// As [`on_fentry`] (`slot` is also the frame's key, x86-64).
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

/// Hook again the returns of this thread's frames whose slot lies above
/// `sp`, that an unwind gave back and that survived it: at the end of a C++
/// `catch` (`_Unwind_DeleteException`; `sp` is the caller's stack pointer),
/// or once the catching frame of an exception is known (see
/// `crate::whole`).
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

/// Give back the hooked return addresses of this thread's frames whose slot
/// lies below `limit` (`usize::MAX`: all): an exception or a forced unwind
/// is about to walk through them, and the unwinder must see the real return
/// addresses. They have no recorded exit (counted in `unwound`); frames
/// that survive after all are hooked again by [`rehook_after_catch`] or at
/// the next traced entry. Returns how many frames it gave back.
pub fn unhook_returns(limit: usize) -> usize {
    with_own(|st, p, _| give_back(st, p, limit)).unwrap_or(0)
}

/// Give back every hooked return address of this thread before a stack walk
/// (`backtrace`, `_Unwind_Backtrace`), so the walk sees the real callers;
/// [`rehook_after_catch`] hooks them again after it. `false` (nothing given
/// back) when the thread has no hooked frame, or when it is inside a hook (a
/// signal handler interrupted one): then the walk stops at the return
/// trampoline.
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
