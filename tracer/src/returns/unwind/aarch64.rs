//! AArch64's side of the interposers: a hooked return lives wherever the
//! function's prologue saved `x30`, which only the unwinder knows, so the
//! search walk itself gives each one back through the unwinder's context
//! when it meets the return trampoline, and walks again; it stops at the
//! catching frame, so the frames that survive keep their hooks. Also the
//! weak definitions.

use super::*;

extern "C" {
    fn _Unwind_SetGR(ctx: *mut libc::c_void, reg: libc::c_int, value: usize);
    fn _Unwind_GetGR(ctx: *mut libc::c_void, reg: libc::c_int) -> usize;
}

/// What a walk keeps.
pub(super) struct Walk {
    /// AArch64: the return trampoline's address (0: returns are not
    /// hooked).
    fret: usize,
    /// AArch64: hooked returns of frames whose CFA is at or below this
    /// are given back when the walk meets them; meeting one above it
    /// ends the walk.
    give_back_to: usize,
    /// AArch64: this walk gave one hooked return back (and ended there:
    /// walk again to go on).
    gave_back: bool,
    /// AArch64: this walk met a hooked return it could not give back.
    stuck: bool,
}

/// `addr` signed as `raw` (what a frame's prologue stored for the return
/// trampoline's address `fret`) was: unchanged if `raw` is `fret` itself,
/// else signed with the same key (A or B) and modifier (`cfa`, the
/// stack pointer at the function's entry, which `paciasp`/`pacibsp`
/// used and the unwinder authenticates with). `None` if `raw` is neither.
fn signed_like(raw: usize, fret: usize, addr: usize, cfa: usize) -> Option<usize> {
    if raw == fret {
        return Some(addr);
    }
    let (a_fret, a_addr, b_fret, b_addr): (usize, usize, usize, usize);
    // SAFETY: PACIA1716 / PACIB1716 (HINT #8 / #10, no-ops without
    // pointer authentication) compute a signature into x17 from x17 and
    // x16; no memory is touched.
    unsafe {
        std::arch::asm!("hint #8", inout("x17") fret => a_fret, in("x16") cfa,
            options(nomem, nostack, preserves_flags));
        std::arch::asm!("hint #8", inout("x17") addr => a_addr, in("x16") cfa,
            options(nomem, nostack, preserves_flags));
        std::arch::asm!("hint #10", inout("x17") fret => b_fret, in("x16") cfa,
            options(nomem, nostack, preserves_flags));
        std::arch::asm!("hint #10", inout("x17") addr => b_addr, in("x16") cfa,
            options(nomem, nostack, preserves_flags));
    }
    if raw == a_fret {
        Some(a_addr)
    } else if raw == b_fret {
        Some(b_addr)
    } else {
        None
    }
}

/// A frame met by the search walk: the frame below returns into the
/// return trampoline, which has no unwind information, so the unwinder
/// cannot go past it. Give the frame its real return address back, right
/// where its prologue saved `x30` (the context's register 30 is that slot,
/// and `_Unwind_SetGR` stores through it); the caller walks again from the
/// start, and this time gets past it. The context's CFA is the returning
/// frame's CFA: its entry stack pointer, which keys its shadow frame.
/// `Some`: the walk ends here with that code.
///
/// # Safety
/// As the unwinder's callback: `ctx` is its context for this frame.
pub(super) unsafe fn at_frame(
    s: &mut Search,
    ctx: *mut libc::c_void,
    ip: usize,
) -> Option<libc::c_int> {
    let w = &mut s.arch;
    // The return trampoline, or its capturing variant (issue 14): the
    // frame's `x30` was saved holding (and maybe signed) that one.
    if w.fret == 0 || !crate::thread::is_fret(ip, w.fret) {
        return None;
    }
    let tramp = ip;
    // SAFETY: per the caller.
    unsafe {
        let key = _Unwind_GetCFA(ctx);
        if key > w.give_back_to {
            return Some(URC_NORMAL_STOP);
        }
        // A frame built with `-mbranch-protection=pac-ret` saved the
        // trampoline's address signed (its pad comes before `paciasp`), and
        // the unwinder authenticates what it reads there: the real address
        // goes back signed the same way.
        let raw = _Unwind_GetGR(ctx, 30);
        if signed_like(raw, tramp, 0, key).is_none() {
            w.stuck = true; // a key or modifier this walk cannot reproduce
            return Some(URC_NORMAL_STOP);
        }
        match crate::thread::give_back_return(key) {
            Some(orig) => {
                // (Register 30 of this context is a pointer to the
                // returning frame's saved `x30`, on its live stack.)
                let v = signed_like(raw, tramp, orig, key).unwrap_or(orig);
                _Unwind_SetGR(ctx, 30, v);
                w.gave_back = true;
            }
            None => w.stuck = true,
        }
    }
    Some(URC_NORMAL_STOP)
}

/// Walk the stack as [`catching_sp`] does, giving back (AArch64) every
/// hooked return met below the catching frame, or, with a null `exc`,
/// below `give_back_to`; returns the catching frame's stack pointer as
/// [`catching_sp`] does (`usize::MAX` without `exc`).
///
/// # Safety
/// `exc` is null or an exception object about to be raised.
unsafe fn walk(exc: *mut libc::c_void, own: [usize; 2], give_back_to: usize) -> usize {
    let fret = crate::thread::FRET.load(Ordering::Relaxed);
    let class = if exc.is_null() {
        0
    } else {
        // SAFETY: `_Unwind_Exception` starts with its 64-bit class.
        unsafe { *(exc as *const u64) }
    };
    let mut s = Search {
        exc,
        class,
        cfa: 0,
        frames: 0,
        own,
        past_own: false,
        arch: Walk {
            fret,
            give_back_to,
            gave_back: false,
            stuck: false,
        },
    };
    // One walk per hooked return given back (each ends at the return
    // trampoline): at most the shadow stack's depth, and a margin.
    for _ in 0..2 * crate::thread::MAX_DEPTH + 16 {
        s.cfa = 0;
        s.frames = 0;
        s.past_own = false;
        s.arch.gave_back = false;
        // SAFETY: `search_step` matches the callback type and uses only `s`.
        unsafe { real_backtrace(search_step, &mut s as *mut Search as *mut libc::c_void) };
        if !s.arch.gave_back || s.arch.stuck {
            break;
        }
    }
    if s.cfa == 0 {
        usize::MAX
    } else {
        s.cfa
    }
}

/// Before an exception is raised (AArch64): find the frame that will
/// catch it by the search phase, giving back the hooked returns of the
/// frames below it on the way (the unwinder cannot walk past the return
/// trampoline); the catching frame and those above keep their hooks.
///
/// # Safety
/// `exc` is an exception object about to be raised.
pub(super) unsafe fn prepare(exc: *mut libc::c_void, own: [usize; 2]) {
    if crate::thread::hooked_returns() == 0 {
        in_flight(exc, usize::MAX);
        return;
    }
    // SAFETY: per the caller.
    let limit = unsafe { walk(exc, own, usize::MAX) };
    in_flight(exc, limit);
}

/// Give back every hooked return of this thread whose frame lies below
/// `limit` (`usize::MAX`: all): the unwinder is about to go through them.
pub(super) fn give_back_below(limit: usize) {
    if crate::thread::hooked_returns() != 0 {
        // SAFETY: a walk that only gives returns back (no exception).
        unsafe { walk(std::ptr::null_mut(), [0, 0], limit) };
    }
}

/// A caught exception is finished with: AArch64 never takes hooks from
/// frames that survive, so nothing is hooked again.
pub(super) fn after_catch() {}

std::arch::global_asm!(
    ".pushsection .text.__tracer_unwind,\"ax\",%progbits",
    ".globl __tracer_v1_unwind_raise",
    ".hidden __tracer_v1_unwind_raise",
    "__tracer_v1_unwind_raise:",
    ".weak _Unwind_RaiseException",
    ".type _Unwind_RaiseException,%function",
    "_Unwind_RaiseException:",
    "mov x1, xzr",
    "b {raise}",
    ".weak _Unwind_ForcedUnwind",
    ".type _Unwind_ForcedUnwind,%function",
    "_Unwind_ForcedUnwind:",
    "b {forced}",
    ".weak _Unwind_Resume_or_Rethrow",
    ".type _Unwind_Resume_or_Rethrow,%function",
    "_Unwind_Resume_or_Rethrow:",
    "mov x1, xzr",
    "b {rethrow}",
    ".weak _Unwind_Resume",
    ".type _Unwind_Resume,%function",
    "_Unwind_Resume:",
    "b {resume}",
    ".weak _Unwind_DeleteException",
    ".type _Unwind_DeleteException,%function",
    "_Unwind_DeleteException:",
    "b {delete}",
    ".popsection",
    raise = sym raise,
    forced = sym forced,
    rethrow = sym rethrow,
    resume = sym resume,
    delete = sym delete,
);
