//! The capturing hooks of compiler pads: the same work as `on_fentry` /
//! `on_fret` ([`fentry_body`], [`fret_body`]), plus the values events
//! (`tracer_core::capture`). Only functions enabled with capture reach
//! them (through their own entry stub and trampolines), so the plain hooks
//! have no branch for capture.

use super::*;
use tracer_core::capture::Capture;
use tracer_core::event::{KIND_ARGS, KIND_RETVAL};

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

/// Set once the capturing hooks were verified not to touch vector
/// registers (with the plain ones): their trampolines skip saving them.
pub static CAPTURE_LEAN: AtomicBool = AtomicBool::new(false);

/// Why the capturing trampolines must save vector registers (`None`: they
/// need not).
#[cfg(target_arch = "x86_64")]
pub(crate) fn verify_capture_hooks(read: &dyn Fn(usize, &mut [u8])) -> Option<String> {
    use tracer_arch_x86::trampoline::{verify_hook, HookCheck};
    let shim = call_saving_shim();
    for (name, f) in [
        ("on_fentry_args", on_fentry_args as *const () as usize),
        ("on_fret_args", on_fret_args as *const () as usize),
    ] {
        if let HookCheck::NeedsFullSave(why) = verify_hook(f, shim, read) {
            return Some(format!("{name}: {why}"));
        }
    }
    None
}

/// Push `n` words (`word(i)`) as values events of `kind`, two a slot.
#[inline(always)]
fn push_values(
    st: &ThreadState,
    p: &mut Private,
    kind: u8,
    func: u32,
    depth: usize,
    n: usize,
    word: impl Fn(usize) -> u64,
) {
    let mut i = 0;
    while i < n {
        st.ring.push(
            &mut p.cached_tail,
            &Event {
                ts: word(i),
                dur: if i + 1 < n { word(i + 1) } else { 0 },
                func,
                depth: depth as u16,
                kind,
                flags: (i / 2) as u8,
            },
        );
        i += 2;
    }
}

/// Called by `__tracer_v1_tramp_fentry_args` (x86-64): a function enabled
/// with capture was entered; `regs` is the trampoline's register frame.
///
/// # Safety
/// `regs` must be that frame, on this thread's stack, at a function's entry.
#[cfg(target_arch = "x86_64")]
pub unsafe extern "C" fn on_fentry_args(regs: *const tracer_arch_x86::trampoline_args::Regs) {
    /// `Regs::gpr` indices of `rdi rsi rdx rcx r8 r9`.
    const INT: [usize; 6] = [4, 5, 6, 7, 3, 2];
    // SAFETY: per the caller.
    let r = unsafe { &*regs };
    let func = r.func as u32;
    let cap = Capture::decode(r.spec as u32);
    let slot = std::ptr::addr_of!(r.ret) as usize;
    let fret_args = FRET_ARGS.load(Ordering::Relaxed);
    let (ni, nf) = ((cap.ints as usize).min(6), cap.floats as usize);
    let n = 1 + ni + nf + cap.stack as usize;
    // The spec first: the reader decodes the words with it.
    let word = |k: usize| -> u64 {
        match k {
            0 => r.spec,
            k if k <= ni => INT
                .get(k - 1)
                .and_then(|&g| r.gpr.get(g))
                .copied()
                .unwrap_or(0),
            k if k <= ni + nf => r.xmm.get(k - 1 - ni).copied().unwrap_or(0),
            // SAFETY: the caller's outgoing argument area (or its frame)
            // lies just above the return address on a live stack.
            k => unsafe { *((slot + 8 * (k - ni - nf)) as *const u64) },
        }
    };
    // SAFETY: `slot` is the traced function's return address slot.
    unsafe {
        fentry_body(
            func,
            slot,
            slot,
            |old, fret| old == fret || (fret_args != 0 && old == fret_args),
            |fret| {
                if cap.retval && fret_args != 0 {
                    fret_args
                } else {
                    fret
                }
            },
            |st, p| {
                if cap.args() {
                    push_values(st, p, KIND_ARGS, func, p.depth, n, word);
                }
            },
        )
    }
}

/// Called by `__tracer_v1_tramp_fret_args` (x86-64): as [`on_fret`], and
/// the return values, which the trampoline left below the slot, go out
/// just before each exit event.
///
/// # Safety
/// Only the capturing return trampoline calls it, on the thread whose
/// frame it was.
#[cfg(target_arch = "x86_64")]
pub unsafe extern "C" fn on_fret_args(slot: usize) -> usize {
    use tracer_arch_x86::trampoline_args::{RET_RAX, RET_XMM0};
    // SAFETY: the trampoline's frame, just below the slot.
    let (rax, xmm0) = unsafe {
        (
            *((slot - RET_RAX) as *const u64),
            *((slot - RET_XMM0) as *const u64),
        )
    };
    // SAFETY: per the caller.
    unsafe {
        fret_body(slot, |st, p, func, depth| {
            push_values(st, p, KIND_RETVAL, func, depth, 2, |i| {
                if i == 0 {
                    rax
                } else {
                    xmm0
                }
            });
        })
    }
}
