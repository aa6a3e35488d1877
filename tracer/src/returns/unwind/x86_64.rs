//! x86-64's side of the interposers: a hooked return lives in the frame's
//! return address slot, so every one of the thread's is given back before
//! the search phase, and the frames that survive the unwind (the catching
//! frame and those above it) are hooked again right after it; the stack
//! walks the preload library exports; the weak definitions.

use super::*;

#[path = "x86_64/stack_walk.rs"]
mod stack_walk;
pub use stack_walk::{backtrace, backtrace_walk};

/// Nothing kept per walk: the returns are all given back before it.
#[derive(Default)]
pub(super) struct Walk;

/// A frame met by the search walk: nothing to do but search (every hooked
/// return was given back first).
///
/// # Safety
/// As the unwinder's callback.
pub(super) unsafe fn at_frame(
    _: &mut Search,
    _: *mut libc::c_void,
    _: usize,
) -> Option<libc::c_int> {
    None
}

/// The stack pointer of the frame that will catch `exc` (every return
/// address slot at or above it survives the unwind), found by
/// the unwinder's own search phase (each frame's personality routine
/// asked, as `_Unwind_RaiseException` does first), or `usize::MAX` if no
/// frame catches it (or the interposer's frames `own` are not seen).
/// Call only with every hooked return given back.
///
/// # Safety
/// `exc` is an exception object about to be raised.
unsafe fn catching_sp(exc: *mut libc::c_void, own: [usize; 2]) -> usize {
    let mut s = Search {
        exc,
        // SAFETY: `_Unwind_Exception` starts with its 64-bit class.
        class: unsafe { *(exc as *const u64) },
        cfa: 0,
        frames: 0,
        own,
        past_own: false,
        arch: Walk,
    };
    // SAFETY: `search_step` matches the callback type and uses only `s`.
    unsafe { real_backtrace(search_step, &mut s as *mut Search as *mut libc::c_void) };
    // In a backtrace step the context's CFA is the frame's stack
    // pointer at its call (its callee's CFA): the callee's return
    // address slot is just below it and is unwound; the catching
    // frame's own slot, and every slot above, are not.
    if s.cfa == 0 {
        usize::MAX
    } else {
        s.cfa
    }
}

/// Give back every hooked return of this thread whose frame lies below
/// `limit` (`usize::MAX`: all): the unwinder is about to go through them.
pub(super) fn give_back_below(limit: usize) {
    crate::thread::unhook_returns(limit);
}

/// Before an exception is raised: give every hooked return back, find
/// the frame that will catch it, and hook again the returns of that
/// frame and the ones above it, which the unwind does not touch.
///
/// # Safety
/// As [`catching_sp`].
pub(super) unsafe fn prepare(exc: *mut libc::c_void, own: [usize; 2]) {
    if crate::thread::unhook_returns(usize::MAX) == 0 {
        // No hooked frame on this thread (the usual case without
        // compiler pads): nothing to search for.
        in_flight(exc, usize::MAX);
        return;
    }
    // SAFETY: per the caller.
    let limit = unsafe { catching_sp(exc, own) };
    if limit != usize::MAX {
        crate::thread::rehook_after_catch(limit - 1);
    }
    in_flight(exc, limit);
}

/// A caught exception is finished with: frames given back that survived
/// are hooked again.
pub(super) fn after_catch() {
    let here = 0u8;
    crate::thread::rehook_after_catch(std::hint::black_box(&here) as *const u8 as usize);
}

std::arch::global_asm!(
    ".pushsection .text.__tracer_unwind,\"ax\",@progbits",
    ".globl __tracer_v1_unwind_raise",
    ".hidden __tracer_v1_unwind_raise",
    "__tracer_v1_unwind_raise:",
    ".weak _Unwind_RaiseException",
    ".type _Unwind_RaiseException,@function",
    "_Unwind_RaiseException:",
    "xor esi, esi",
    "jmp {raise}",
    ".weak _Unwind_ForcedUnwind",
    ".type _Unwind_ForcedUnwind,@function",
    "_Unwind_ForcedUnwind:",
    "jmp {forced}",
    ".weak _Unwind_Resume_or_Rethrow",
    ".type _Unwind_Resume_or_Rethrow,@function",
    "_Unwind_Resume_or_Rethrow:",
    "xor esi, esi",
    "jmp {rethrow}",
    ".weak _Unwind_Resume",
    ".type _Unwind_Resume,@function",
    "_Unwind_Resume:",
    "jmp {resume}",
    ".weak _Unwind_DeleteException",
    ".type _Unwind_DeleteException,@function",
    "_Unwind_DeleteException:",
    "jmp {delete}",
    ".weak _Unwind_Backtrace",
    ".type _Unwind_Backtrace,@function",
    "_Unwind_Backtrace:",
    "xor edx, edx",
    "jmp {walk}",
    ".popsection",
    raise = sym raise,
    forced = sym forced,
    rethrow = sym rethrow,
    resume = sym resume,
    delete = sym delete,
    walk = sym backtrace_walk,
);
