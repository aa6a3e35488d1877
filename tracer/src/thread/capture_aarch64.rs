//! The AArch64 capturing hooks of compiler pads (issue 14): the same work
//! as `on_fentry` / `on_fret` ([`fentry_body`], [`fret_body`]), plus the
//! values events, as the x86-64 ones in `capture_x86_64.rs`. Only functions
//! enabled with capture reach them, through their own entry stub
//! (`x16` = `func | spec << 32`) and the trampolines of
//! `tracer_arch_arm`'s `__tracer_define_capture_trampolines!`.
//!
//! The argument words (`tracer_core::capture`): the spec, `x0`.. (AAPCS64
//! integer and pointer arguments), `d0`.. (floating-point ones, counted
//! independently), then the caller's outgoing stack arguments, the first
//! at the function's entry stack pointer. The return value: `x0` and `d0`.

use super::*;
use tracer_arch_arm::trampoline::CaptureRegs;
use tracer_core::capture::{Capture, MAX_FLOATS, MAX_INTS};

/// The capturing entry hook's values: `n` argument words (the spec first).
struct ArgsOut<'a> {
    r: &'a CaptureRegs,
    /// The function's entry stack pointer (its stack arguments start there;
    /// the frame's key).
    frame: usize,
    func: u32,
    spec: u32,
    ni: usize,
    nf: usize,
    n: usize,
    /// The return goes to the capturing return trampoline.
    ret: bool,
}

impl ArgsOut<'_> {
    /// Argument word `k` (0: the spec; then `ni` integer registers, `nf`
    /// floating-point ones, then stack words from the entry stack pointer).
    ///
    /// # Safety
    /// `self.frame` must be the entry stack pointer of a function being
    /// entered on this thread, whose caller's outgoing argument area (or
    /// frame) lies there on a live stack.
    #[inline(always)]
    unsafe fn word(&self, k: usize) -> u64 {
        let (ni, nf) = (self.ni, self.nf);
        match k {
            0 => u64::from(self.spec),
            k if k <= ni => self.r.x.get(k - 1).copied().unwrap_or(0),
            k if k <= ni + nf => self.r.q.get(k - 1 - ni).map_or(0, |q| q[0]),
            // SAFETY: per the caller, a live stack word at or above the
            // entry stack pointer (within the caller's frame).
            k => unsafe { *((self.frame + 8 * (k - 1 - ni - nf)) as *const u64) },
        }
    }
}

impl Values for ArgsOut<'_> {
    #[inline(always)]
    fn entry(&self, st: &ThreadState, p: &mut Private) {
        if self.ret {
            if let Some(c) = p.captured.get_mut(p.depth) {
                *c = (self.frame, self.func);
            }
        }
        // SAFETY: `frame` is the entry stack pointer of the function
        // being entered (see `on_fentry_args`).
        push_arg_words(st, p, self.func, self.n, |k| unsafe { self.word(k) });
    }
    #[inline(always)]
    fn exit(&self, _: &ThreadState, _: &mut Private, _: u32, _: usize) {}
}

/// The capturing return hook's values: the return registers.
struct RetOut {
    x0: u64,
    d0: u64,
}

impl Values for RetOut {
    #[inline(always)]
    fn entry(&self, _: &ThreadState, _: &mut Private) {}
    #[inline(always)]
    fn exit(&self, st: &ThreadState, p: &mut Private, func: u32, depth: usize) {
        push_ret_words(st, p, func, depth, (self.x0, self.d0));
    }
}

/// Called by `__tracer_v1_tramp_fentry_args` (AArch64): a function enabled
/// with capture was entered; `word` is its stub's `x16` (the function's
/// index, and the capture spec in the high half), `regs` the trampoline's
/// register frame, just below the function's entry stack pointer.
///
/// # Safety
/// `regs` must be that frame, on this thread's stack, at a function's entry.
pub unsafe extern "C" fn on_fentry_args(word: u64, regs: *const CaptureRegs) {
    // SAFETY: per the caller.
    let r = unsafe { &*regs };
    let func = word as u32;
    let spec = (word >> 32) as u32;
    let cap = Capture::decode(spec);
    // The saved `x30`, which the trampoline puts back into `x30`.
    let slot = std::ptr::addr_of!(r.lr) as usize;
    let frame = regs as usize + std::mem::size_of::<CaptureRegs>();
    let fret_args = FRET_ARGS.load(Ordering::Relaxed);
    let (ni, nf) = (
        cap.ints.min(MAX_INTS) as usize,
        cap.floats.min(MAX_FLOATS) as usize,
    );
    let n = 1 + ni + nf + cap.stack as usize;
    // SAFETY: `slot` is where the trampoline saved the traced function's
    // return address, `frame` its entry stack pointer.
    unsafe {
        fentry_body(
            func,
            slot,
            frame,
            |old, fret| old == fret || (fret_args != 0 && old == fret_args),
            |fret| {
                if cap.retval && fret_args != 0 {
                    fret_args
                } else {
                    fret
                }
            },
            ArgsOut {
                r,
                frame,
                func,
                spec,
                ni,
                nf,
                n: if cap.args() { n } else { 0 },
                ret: cap.retval && fret_args != 0,
            },
        )
    }
}

/// Called by `__tracer_v1_tramp_fret_args` (AArch64): as [`on_fret`] for
/// the frame keyed by `key` (the stack pointer it returned with), and the
/// return values `x0` and `d0` go out just before each exit event.
///
/// # Safety
/// Only the capturing return trampoline calls it, on the thread whose
/// frame it was.
pub unsafe extern "C" fn on_fret_args(key: usize, x0: u64, d0: u64) -> usize {
    // SAFETY: per the caller.
    unsafe { fret_body(key, RetOut { x0, d0 }) }
}
