//! x86-64's side of compiler-padded functions: the capturing trampolines
//! (issue 14), the return trampoline's personality routine, the entry of
//! the `dlsym`/`dlopen` shims, and what the preload library exports.

use super::*;

extern "C" {
    fn __tracer_v1_tramp_fentry_args();
    fn __tracer_v1_tramp_fret_args();
}

/// `dlsym`'s oldest version on this architecture.
#[cfg(target_os = "linux")]
pub(super) const GLIBC_BASE: &std::ffi::CStr = c"GLIBC_2.2.5";

/// Capturing functions return through their own trampoline.
pub(super) fn set_capture_return_trampoline() {
    thread::FRET_ARGS.store(
        __tracer_v1_tramp_fret_args as *const () as usize,
        Ordering::Release,
    );
}

/// What an enabled compiler pad at `site` of function `func` calls when
/// the function is enabled with capture `cap` (the capturing entry stub).
pub fn capture_stub(
    site: usize,
    func: u32,
    cap: tracer_core::capture::Capture,
) -> Result<usize, String> {
    crate::veneer::capture_stub(
        site,
        func,
        cap.encode(),
        __tracer_v1_tramp_fentry_args as *const () as usize,
    )
}

/// The return trampoline's personality routine (x86-64; the trampoline's
/// unwind information is in `tracer_arch_x86`'s
/// `__tracer_define_fentry_trampolines!`). libgcc calls it for the frame of
/// a hooked return that an unwind walks through before it reads that
/// frame's caller from the slot: an exception or a forced unwind that no
/// interposer saw first, above all a thread cancelled with
/// `pthread_cancel`, which glibc unwinds through libgcc by its own handle.
/// The frame's real return address goes back into its slot (the frame is
/// counted as unwound) and the unwind goes on to the real caller. The
/// context's CFA is the traced function's (the unwinder has not stepped
/// past the trampoline yet): its return address slot is just below.
///
/// # Safety
/// Only the unwinder calls it, with its context for that frame.
pub unsafe extern "C" fn fret_personality(
    _version: libc::c_int,
    _actions: libc::c_int,
    _class: u64,
    _exc: *mut libc::c_void,
    ctx: *mut libc::c_void,
) -> libc::c_int {
    const URC_CONTINUE_UNWIND: libc::c_int = 8;
    extern "C" {
        fn _Unwind_GetCFA(ctx: *mut libc::c_void) -> usize;
    }
    let fret = thread::FRET.load(Ordering::Relaxed);
    // SAFETY: `ctx` is the unwinder's context, per the caller.
    let slot = unsafe { _Unwind_GetCFA(ctx) }.wrapping_sub(8);
    if fret != 0 && thread::peek(slot).is_some_and(|v| thread::is_fret(v, fret)) {
        if let Some(ret) = thread::give_back_return(slot) {
            thread::restore_slot(slot, fret, ret);
        }
    }
    URC_CONTINUE_UNWIND
}

#[cfg(target_os = "linux")]
/// x86-64 shims: `slot` is the address of the shim's return address
/// (the stack pointer at its entry). Returns the real function to jump
/// to, with the same stack and arguments.
///
/// # Safety
/// Only the preload library's shims call it, with their own slot.
pub unsafe extern "C" fn prep(slot: usize, which: usize) -> usize {
    let fret = thread::FRET.load(Ordering::Relaxed);
    // SAFETY: per the caller, a live word of this thread's stack.
    if fret != 0 && thread::is_fret(unsafe { *(slot as *const usize) }, fret) {
        // SAFETY: a hooked return whose frame is keyed by its slot, on
        // this thread, as the return trampoline would pass it.
        let ret = unsafe { thread::on_fret(slot) }.ret;
        // SAFETY: as above.
        unsafe { *(slot as *mut usize) = ret };
    }
    dl_caller::real(which)
}

/// What the preload library exports: the `dlsym`/`dlopen` shims' entry,
/// the unwinder's interposed entry points and the stack walks (hooked
/// returns are given back around the walk).
#[cfg(target_os = "linux")]
pub mod exports {
    pub use super::prep as dl_caller_prep;
    pub use crate::returns::unwind::per_arch::{backtrace, backtrace_walk as unwind_backtrace};
    pub use crate::returns::unwind::{
        delete as unwind_delete, forced as unwind_forced, raise as unwind_raise,
        resume as unwind_resume, rethrow as unwind_rethrow, thread_exit as unwind_thread_exit,
        Step as UnwindStep,
    };
}
