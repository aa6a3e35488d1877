//! x86-64's capturing hooks: compiler pads (`on_fentry_args`,
//! `on_fret_args`: the same work as `on_fentry` / `on_fret` through
//! [`fentry_body`], [`fret_body`]) and async fns' `#[traceable]` pads
//! (`on_async_entry_args`, `on_async_exit_args`), and the check that they
//! and the other `#[traceable]` ones (`on_entry_args`, `on_exit_args`, in
//! `capture.rs`) leave vector registers alone.

use super::*;
use tracer_core::capture::Capture;

/// Why the capturing trampolines must save vector registers (`None`: they
/// need not).
pub(crate) fn verify_capture_hooks(read: &dyn Fn(usize, &mut [u8])) -> Option<String> {
    use tracer_arch_x86::trampoline::{verify_hook, HookCheck};
    let shim = super::lean::call_saving_shim();
    for (name, f) in [
        ("on_fentry_args", on_fentry_args as *const () as usize),
        ("on_fret_args", on_fret_args as *const () as usize),
        ("on_entry_args", on_entry_args as *const () as usize),
        ("on_exit_args", on_exit_args as *const () as usize),
        (
            "on_async_entry_args",
            on_async_entry_args as *const () as usize,
        ),
        (
            "on_async_exit_args",
            on_async_exit_args as *const () as usize,
        ),
    ] {
        if let HookCheck::NeedsFullSave(why) = verify_hook(f, shim, read) {
            return Some(format!("{name}: {why}"));
        }
    }
    None
}

/// The capturing entry hook's values: `n` argument words (the spec first).
struct ArgsOut<'a> {
    r: &'a tracer_arch_x86::trampoline_args::Regs,
    slot: usize,
    func: u32,
    ni: usize,
    nf: usize,
    n: usize,
    /// The return goes to the capturing return trampoline.
    ret: bool,
}

impl Values for ArgsOut<'_> {
    #[inline(always)]
    fn entry(&self, st: &ThreadState, p: &mut Private) {
        if self.ret {
            if let Some(c) = p.captured.get_mut(p.depth) {
                *c = (self.slot, self.func);
            }
        }
        // SAFETY: `r` is the trampoline's frame at a function's entry,
        // `slot` its return address slot (see `on_fentry_args`).
        push_arg_words(st, p, self.func, self.n, |k| unsafe {
            arg_word(self.r, self.slot, self.ni, self.nf, k)
        });
    }
    #[inline(always)]
    fn exit(&self, _: &ThreadState, _: &mut Private, _: u32, _: usize) {}
}

/// The capturing return hook's values: the return registers.
struct RetOut {
    rax: u64,
    xmm0: u64,
}

impl Values for RetOut {
    #[inline(always)]
    fn entry(&self, _: &ThreadState, _: &mut Private) {}
    #[inline(always)]
    fn exit(&self, st: &ThreadState, p: &mut Private, func: u32, depth: usize) {
        push_ret_words(st, p, func, depth, (self.rax, self.xmm0));
    }
}

/// Argument word `k` of the frame `r` (0: the spec; then `ni` integer
/// registers, `nf` floating-point ones, then stack words above `slot`).
///
/// # Safety
/// `r` must be the capturing trampoline's frame at a function's entry and
/// `slot` the address of its return address.
#[inline(always)]
unsafe fn arg_word(
    r: &tracer_arch_x86::trampoline_args::Regs,
    slot: usize,
    ni: usize,
    nf: usize,
    k: usize,
) -> u64 {
    /// `Regs::gpr` indices of `rdi rsi rdx rcx r8 r9`.
    const INT: [usize; 6] = [4, 5, 6, 7, 3, 2];
    match k {
        0 => r.spec,
        k if k <= ni => INT
            .get(k - 1)
            .and_then(|&g| r.gpr.get(g))
            .copied()
            .unwrap_or(0),
        k if k <= ni + nf => r.xmm.get(k - 1 - ni).copied().unwrap_or(0),
        // SAFETY: per the caller: the caller's outgoing argument area (or
        // its frame) lies just above the return address on a live stack.
        k => unsafe { *((slot + 8 * (k - ni - nf)) as *const u64) },
    }
}

/// Called by `__tracer_v1_tramp_fentry_args` (x86-64): a function enabled
/// with capture was entered; `regs` is the trampoline's register frame.
///
/// # Safety
/// `regs` must be that frame, on this thread's stack, at a function's entry.
pub unsafe extern "C" fn on_fentry_args(regs: *const tracer_arch_x86::trampoline_args::Regs) {
    // SAFETY: per the caller.
    let r = unsafe { &*regs };
    let func = r.func as u32;
    let cap = Capture::decode(r.spec as u32);
    let slot = std::ptr::addr_of!(r.ret) as usize;
    let fret_args = FRET_ARGS.load(Ordering::Relaxed);
    let (ni, nf) = ((cap.ints as usize).min(6), cap.floats as usize);
    let n = 1 + ni + nf + cap.stack as usize;
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
            ArgsOut {
                r,
                slot,
                func,
                ni,
                nf,
                n: if cap.args() { n } else { 0 },
                ret: cap.retval && fret_args != 0,
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
    unsafe { fret_body(slot, RetOut { rax, xmm0 }) }
}

pub use traceable_async::{on_async_entry_args, on_async_exit_args};

/// The capturing hooks of async fns' `#[traceable]` pads (x86-64 only:
/// the ARM pads of an async fn do not capture); the rest of the
/// `#[traceable]` capturing hooks are every architecture's (`capture.rs`).
mod traceable_async {
    use super::super::capture::traceable::{push_args, push_ret, traceable_block};
    use super::*;

    /// Called by `__tracer_v1_tramp_async_entry_args`: as
    /// `on_entry_args`, for an async fn's entry pad (at its first poll;
    /// `token` is its future's). A hook of its own, so that each hook has
    /// one call of its values, inlined (the lean trampolines allow the
    /// hooks no other call). The macro gives async fns capturing stubs only
    /// with `#[tracer::traceable(values)]`.
    ///
    /// # Safety
    /// As `on_entry_args`.
    pub unsafe extern "C" fn on_async_entry_args(
        rec: *const SiteRecord,
        block: *const u64,
        token: usize,
    ) {
        // SAFETY: per the caller.
        let (n, sp) = unsafe { traceable_block(block) };
        // SAFETY: per the caller.
        unsafe {
            entry_body::<{ sites::ASYNC }>(rec, sp, token, |st, p, func| {
                push_args(st, p, func, n, block)
            })
        }
    }

    /// Called by `__tracer_v1_tramp_async_exit_args`: as `on_exit_args`,
    /// for an async fn's exit at its completion (see
    /// [`on_async_entry_args`]).
    ///
    /// # Safety
    /// As `on_entry_args`.
    pub unsafe extern "C" fn on_async_exit_args(
        rec: *const SiteRecord,
        block: *const u64,
        token: usize,
    ) {
        // SAFETY: per the caller.
        let (n, sp) = unsafe { traceable_block(block) };
        // SAFETY: per the caller.
        unsafe {
            exit_body::<{ sites::ASYNC }>(rec, sp, token, |st, p, func, depth| {
                push_ret(st, p, func, depth, n, block)
            })
        }
    }
}
