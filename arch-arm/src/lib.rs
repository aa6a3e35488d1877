//! The ARM backends of `tracer`: AArch64, Thumb-2 and A32.
//!
//! Three zero-sized types implement [`tracer_core::Backend`]:
//!
//! | backend | pad | site disabled | site enabled | protocol |
//! | --- | --- | --- | --- | --- |
//! | [`Aarch64`] | `MOV X9, X30; <site>` | `NOP` | `BL target` (±128 MiB) | one aligned 32-bit store |
//! | [`Thumb2`] | `MOV IP, LR; <site>` | `NOP.W` | `BL target` (±16 MiB) | half-word breakpoint (seed 004) |
//! | [`A32`] | `MOV IP, LR; <site>` | `NOP` (or `MOV R0, R0`) | `BL target` (±32 MiB) | one aligned 32-bit store |
//!
//! The *site* is the one instruction a protocol changes; the instruction
//! before it saves the link register once (the kernel's `mov x9, x30`), so the
//! `BL` may clobber it. [`aarch64::check_pad_head`], [`thumb::check_pad_head`]
//! and [`a32::check_pad_head`] check that instruction.
//!
//! Everything here but [`pad`] and [`trampoline`] is a pure function over
//! bytes: no `cfg(target_arch)`, so the encoders, decoders and protocols build
//! and are tested on any host. [`pad`] and [`trampoline`] hold the macros
//! `#[traceable]` and the runtime expand on AArch64 and ARMv7; only those of
//! the target being compiled for exist. The
//! tests cross-check every encoding with an independent decoder (yaxpeax-arm)
//! and model-check every protocol with [`tracer_core::model`].
//!
//! # Breakpoints
//!
//! The trap encodings Linux turns into `SIGTRAP` (`TRAP_BRKPT`, PC *at* the
//! instruction) are [`THUMB_BREAKPOINT`], [`THUMB2_BREAKPOINT`],
//! [`A32_BREAKPOINT`] and, on AArch64, any `BRK` ([`AARCH64_BRK0`]). They are
//! permanently undefined instructions that the kernel's undefined-instruction
//! hooks (`arch/arm/kernel/ptrace.c`) claim. Two look-alikes are avoided:
//!
//! - `BKPT` is a debug event, not an undefined instruction. Linux does not
//!   support it in user mode: up to 6.9 it logs an alert and forces `SIGTRAP`,
//!   from 6.10 the thread loops forever on it.
//! - `0xdefe` (Thumb `UDF #254`, what `__builtin_trap()` emits) has no hook and
//!   raises `SIGILL`.
//!
//! The uprobes encodings (`0xe7f001f9`, `0xe7f001fa`) are avoided too, so a
//! uprobe on the same process is never confused with a tracer trap.
#![deny(missing_docs)]

pub mod a32;
pub mod aarch64;
pub mod pad;
pub mod thumb;
pub mod trampoline;

#[cfg(test)]
mod xcheck;

pub use a32::A32;
pub use aarch64::{Aarch64, Aarch64Entry};
pub use thumb::Thumb2;

/// The backend of the code this crate was compiled as: [`Aarch64`] on
/// AArch64; on ARMv7, [`Thumb2`] when built with
/// `-C target-feature=+thumb-mode` (see `build.rs`), else [`A32`].
#[cfg(target_arch = "aarch64")]
pub type Native = Aarch64;
/// The backend of the code this crate was compiled as (Thumb-2).
#[cfg(all(target_arch = "arm", tracer_thumb))]
pub type Native = Thumb2;
/// The backend of the code this crate was compiled as (A32).
#[cfg(all(target_arch = "arm", not(tracer_thumb)))]
pub type Native = A32;

/// Whether this crate was compiled as Thumb-2 code (`+thumb-mode`).
pub const THUMB_BUILD: bool = cfg!(tracer_thumb);

use tracer_core::backend::{
    InflightSite, Insn, PadError, Plan, TrapContext, TrapOutcome, TrapPolicy, Write,
};

/// Thumb `UDF #1`, the 16-bit breakpoint Linux turns into `SIGTRAP`
/// (stored little-endian: `01 de`). The Thumb-2 protocol's trap half-word.
pub const THUMB_BREAKPOINT: u16 = 0xde01;
/// Thumb-2 `UDF.W`, the 32-bit breakpoint Linux turns into `SIGTRAP`
/// (first half-word `0xf7f0`, then `0xa000`). Debuggers plant it; the
/// tracer never does (a 32-bit trap cannot be written in one safe store).
pub const THUMB2_BREAKPOINT: u32 = 0xf7f0_a000;
/// A32 `UDF`, the breakpoint Linux turns into `SIGTRAP`. Debuggers plant it;
/// the A32 protocol never traps.
pub const A32_BREAKPOINT: u32 = 0xe7f0_01f0;
/// AArch64 `BRK #0`. Any `BRK` in user mode raises `SIGTRAP`; the AArch64
/// protocol never traps.
pub const AARCH64_BRK0: u32 = 0xd420_0000;

/// The instruction before a site, which keeps the link register recoverable
/// once the site becomes a `BL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadHead {
    /// Still the compiler's no-op: the link register is *not* saved, so the
    /// site must not be enabled. Turn it into the saving form first, while no
    /// other thread can run the pad (a no-op ↔ `MOV` change is not on the
    /// architecture's list of concurrently modifiable instructions).
    Nop,
    /// The saving form: `MOV X9, X30` (AArch64) or `MOV IP, LR` (ARMv7).
    SavesLr,
}

/// The little-endian 32-bit word at the start of `bytes`, if there are 4.
fn le32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// The little-endian half-word at `bytes[at..at + 2]`, if there.
fn le16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// The one-store protocol of AArch64 and A32: a single aligned, single-copy
/// atomic 32-bit store, then one sync.
fn one_store_plan(new: &Insn) -> Plan {
    Plan {
        phases: vec![vec![Write {
            offset: 0,
            bytes: new.bytes().to_vec(),
            atomic: true,
        }]],
    }
}

/// Resume a thread as if it had executed the site's new instruction: a call
/// that returns to `ret` (`lr = ret`, `pc = target & !1`), or a no-op that
/// falls through to `next`.
fn emulate(
    ctx: &TrapContext,
    site: &InflightSite,
    policy: TrapPolicy,
    next: usize,
    ret: usize,
) -> TrapOutcome {
    match (policy, site.call_target) {
        (TrapPolicy::Emulate, Some(target)) => TrapOutcome::Resume {
            pc: target & !1,
            sp: ctx.sp,
            lr: ret,
            push: None,
        },
        _ => TrapOutcome::Resume {
            pc: next,
            sp: ctx.sp,
            lr: ctx.lr,
            push: None,
        },
    }
}

/// A [`PadError`] for `bytes` at `addr`.
fn pad_error(addr: usize, bytes: &[u8], expected: &str) -> PadError {
    PadError {
        addr,
        found: bytes.to_vec(),
        expected: expected.to_string(),
    }
}

/// Signed distance `to - from`, exact for any two addresses.
fn distance(from: usize, to: usize) -> i128 {
    to as i128 - from as i128
}
