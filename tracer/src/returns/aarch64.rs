//! AArch64's side of compiler-padded functions: the capturing trampolines
//! (issue 14), the entry of the `dlsym`/`dlopen` shims, and what the
//! preload library exports.

use super::*;

extern "C" {
    fn __tracer_v1_tramp_fentry_args();
    fn __tracer_v1_tramp_fret_args();
}

/// `dlsym`'s oldest version on this architecture.
#[cfg(target_os = "linux")]
pub(super) const GLIBC_BASE: &std::ffi::CStr = c"GLIBC_2.17";

/// Capturing functions return through their own trampoline.
pub(super) fn set_capture_return_trampoline() {
    thread::FRET_ARGS.store(
        __tracer_v1_tramp_fret_args as *const () as usize,
        Ordering::Release,
    );
}

/// What an enabled compiler pad at `site` of function `func` calls when
/// the function is enabled with capture `cap`: its capturing entry stub
/// (`x16` = `func | spec << 32`, then `__tracer_v1_tramp_fentry_args`).
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

/// The real function to branch to, and the return address to branch
/// with (in `x30`).
#[repr(C)]
#[cfg(target_os = "linux")]
pub struct Branch {
    target: usize,
    ret: usize,
}

/// AArch64 shims: `ret` is `x30` at the shim's entry, `key` the stack
/// pointer there (a tail-calling function has restored its entry stack
/// pointer, which keys its frame).
///
/// # Safety
/// Only the preload library's shims call it, with their own `x30` and
/// stack pointer.
#[cfg(target_os = "linux")]
pub unsafe extern "C" fn prep(ret: usize, key: usize, which: usize) -> Branch {
    let fret = thread::FRET.load(Ordering::Relaxed);
    let ret = if fret != 0 && thread::is_fret(ret, fret) {
        // SAFETY: a hooked return whose frame is keyed by `key`, on
        // this thread, as the return trampoline would pass it.
        unsafe { thread::on_fret(key) }.ret
    } else {
        ret
    };
    Branch {
        target: dl_caller::real(which),
        ret,
    }
}

/// What the preload library exports: the `dlsym`/`dlopen` shims' entry and
/// the unwinder's interposed entry points.
#[cfg(target_os = "linux")]
pub mod exports {
    pub use super::{prep as dl_caller_prep, Branch as DlBranch};
    pub use crate::returns::unwind::{
        delete as unwind_delete, forced as unwind_forced, raise as unwind_raise,
        resume as unwind_resume, rethrow as unwind_rethrow, thread_exit as unwind_thread_exit,
    };
}
