//! The capturing hooks of compiler pads: the same work as `on_fentry` /
//! `on_fret` ([`fentry_body`], [`fret_body`]), plus the values events
//! (`tracer_core::capture`). Only functions enabled with capture reach
//! them (through their own entry stub and trampolines), so the plain hooks
//! have no branch for capture.

use super::*;
use tracer_core::capture::{Capture, MAX_WORDS};
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

#[inline(always)]
fn push_values(st: &ThreadState, p: &mut Private, kind: u8, func: u32, depth: usize, w: &[u64]) {
    for (i, pair) in w.chunks(2).enumerate() {
        st.ring.push(
            &mut p.cached_tail,
            &Event {
                ts: pair[0],
                dur: pair.get(1).copied().unwrap_or(0),
                func,
                depth: depth as u16,
                kind,
                flags: i as u8,
            },
        );
    }
}

/// Called by `__tracer_v1_tramp_fentry_args` (x86-64): a function enabled
/// with capture was entered; `regs` is the trampoline's register frame.
///
/// # Safety
/// `regs` must be that frame, on this thread's stack, at a function's entry.
#[cfg(target_arch = "x86_64")]
pub unsafe extern "C" fn on_fentry_args(regs: *const tracer_arch_x86::trampoline_args::Regs) {
    // SAFETY: per the caller.
    let r = unsafe { &*regs };
    let func = r.func as u32;
    let cap = Capture::decode(r.spec as u32);
    let slot = std::ptr::addr_of!(r.ret) as usize;
    let fret_args = FRET_ARGS.load(Ordering::Relaxed);
    // The spec first: the reader decodes the words with it.
    let mut words = [0u64; MAX_WORDS + 1];
    words[0] = r.spec;
    let mut n = 1;
    for v in r.int_args().iter().take(cap.ints as usize) {
        words[n] = *v;
        n += 1;
    }
    for v in r.xmm.iter().take(cap.floats as usize) {
        words[n] = *v;
        n += 1;
    }
    for i in 0..cap.stack as usize {
        // SAFETY: the caller's outgoing argument area (or its frame) lies
        // just above the return address on a live stack.
        words[n] = unsafe { *((slot + 8 * (i + 1)) as *const u64) };
        n += 1;
    }
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
                    push_values(st, p, KIND_ARGS, func, p.depth, &words[..n]);
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
            push_values(st, p, KIND_RETVAL, func, depth, &[rax, xmm0]);
        })
    }
}
