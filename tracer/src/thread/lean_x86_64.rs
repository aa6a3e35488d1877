//! x86-64: may the trampolines skip saving the vector registers (the
//! "lean" path)? Only if the hooks they call provably never touch them:
//! each hook's code is decoded (`tracer_arch_x86::trampoline::verify_hook`),
//! and any call it makes must go through the saving shim.

use super::*;

extern "C" {
    /// `f(arg)`, with `xmm0`–`xmm15` saved around it (see the x86 trampolines).
    fn __tracer_v1_call_saving(f: extern "C" fn(usize) -> usize, arg: usize) -> usize;
}

/// The saving shim's address, for the hook check.
pub fn call_saving_shim() -> usize {
    __tracer_v1_call_saving as *const () as usize
}

/// Run a slow path from a hook through the saving shim, so the hook's own
/// code stays free of vector registers (lean trampolines).
#[inline(always)]
pub(crate) fn call_slow_arg(f: extern "C" fn(usize) -> usize, arg: usize) -> usize {
    // SAFETY: the shim calls `f(arg)` with the System V ABI and preserves the
    // vector registers around it.
    unsafe { __tracer_v1_call_saving(f, arg) }
}

extern "C" fn monotonic_c(_: usize) -> usize {
    clock::monotonic_ns() as usize
}

/// The clock without the TSC, from a hook: through the saving shim (a
/// `usize` here is the clock's 64 bits).
#[inline(always)]
pub(crate) fn slow_now() -> u64 {
    call_slow_arg(monotonic_c, 0) as u64
}

/// Why the trampolines must save vector registers (`None`: they need not).
/// Also sizes the XSAVE area the full-save path uses.
pub(crate) fn lean_check() -> Option<String> {
    use tracer_arch_x86::trampoline::{verify_hook, HookCheck};
    XSAVE_SIZE.store(crate::arch::xsave_area_size(), Ordering::Release);
    // SAFETY: the hooks are this program's mapped text.
    let read = |a: usize, buf: &mut [u8]| unsafe { crate::arch::read_text(a, buf) };
    let shim = call_saving_shim();
    for (name, f) in [
        ("on_entry", on_entry as *const () as usize),
        ("on_exit", on_exit as *const () as usize),
        ("on_fentry", on_fentry as *const () as usize),
        ("on_fret", on_fret as *const () as usize),
    ] {
        if let HookCheck::NeedsFullSave(why) = verify_hook(f, shim, &read) {
            return Some(format!("{name}: {why}"));
        }
    }
    None
}

/// The capturing hooks (issue 14) take the lean path too, if they pass
/// the same check.
pub(crate) fn lean_capture() {
    if CAPTURE_CHECK
        .get_or_init(|| {
            verify_capture_hooks(&|a, buf| {
                // SAFETY: the hooks are this program's mapped text.
                unsafe { crate::arch::read_text(a, buf) }
            })
        })
        .is_none()
    {
        CAPTURE_LEAN.store(true, Ordering::Release);
    }
}

/// Bytes of the `xsave64` area the x86-64 trampolines and saving shim use (0:
/// no XSAVE, save `xmm0`–`xmm15` instead). Set before any pad is enabled.
pub static XSAVE_SIZE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
