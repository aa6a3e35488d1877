//! AArch64: `MOV X9, X30; NOP` ↔ `MOV X9, X30; BL target`, one aligned store.
//!
//! As in Linux `arch/arm64/kernel/ftrace.c`, a pad is two instructions. The
//! compiler's `-fpatchable-function-entry=2` emits `NOP; NOP`; the first
//! becomes `MOV X9, X30` once (the link register saved where the trampoline
//! finds it), and from then on only the second, the *site*, changes:
//!
//! | pad state | first | site |
//! | --- | --- | --- |
//! | compiled | `NOP` | `NOP` |
//! | disabled | `MOV X9, X30` | `NOP` |
//! | enabled | `MOV X9, X30` | `BL target` |
//!
//! `NOP` ↔ `BL` is one aligned 32-bit store (see [`Aarch64::plan`]): the
//! protocol never traps, so [`Aarch64::TRAP`](tracer_core::Backend::TRAP) is
//! empty and every `BRK` is someone else's.

use crate::{distance, emulate, le32, one_store_plan, pad_error, PadHead};
use tracer_core::backend::{
    Backend, EncodeError, InflightSite, Insn, PadError, PadState, Plan, TrapContext, TrapOutcome,
    TrapPolicy,
};

/// `NOP` (`HINT #0`).
pub const NOP: u32 = 0xd503_201f;
/// `MOV X9, X30` (`ORR X9, XZR, X30`): the first instruction of an
/// initialised pad.
pub const MOV_X9_X30: u32 = 0xaa1e_03e9;
/// `BL` with a zero offset; the low 26 bits hold the offset in words.
pub const BL: u32 = 0x9400_0000;
/// The bits that make a word a `BL`.
pub const BL_MASK: u32 = 0xfc00_0000;
/// `BRK #imm16` with a zero immediate ([`crate::AARCH64_BRK0`]).
pub const BRK: u32 = crate::AARCH64_BRK0;
/// The bits that make a word a `BRK`.
pub const BRK_MASK: u32 = 0xffe0_001f;
/// How far a `BL` reaches either way: `[-128 MiB, +128 MiB - 4]`.
pub const BL_REACH: u64 = 128 << 20;
/// Length of a site.
pub const SITE_LEN: usize = 4;

/// `LDR X16, #8`: loads the veneer's literal.
pub const LDR_X16_LIT8: u32 = 0x5800_0050;
/// `BR X16`.
pub const BR_X16: u32 = 0xd61f_0200;

/// The AArch64 backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct Aarch64;

/// The `BL` at `addr` that calls `target`.
pub fn encode_bl(addr: usize, target: usize) -> Result<u32, EncodeError> {
    if addr % 4 != 0 {
        return Err(EncodeError::Misaligned { addr });
    }
    if target % 4 != 0 {
        return Err(EncodeError::Misaligned { addr: target });
    }
    let off = distance(addr, target);
    let reach = BL_REACH as i128;
    if off < -reach || off >= reach {
        return Err(EncodeError::OutOfRange {
            from: addr,
            to: target,
            reach: BL_REACH,
        });
    }
    Ok(BL | ((off >> 2) as u32 & 0x03ff_ffff))
}

/// The target of `word` at `addr` if it is a `BL`.
pub fn decode_bl(addr: usize, word: u32) -> Option<usize> {
    if word & BL_MASK != BL {
        return None;
    }
    // Sign-extend imm26 and scale to bytes.
    let off = (((word << 6) as i32) >> 4) as isize;
    Some(addr.wrapping_add_signed(off))
}

/// A veneer for a call out of `BL` reach: `LDR X16, #8; BR X16; .quad target`.
///
/// Place it within reach of the site, at `addr`, and point the site's `BL` at
/// it. X16 (IP0) is the intra-procedure-call scratch register: AAPCS64 lets
/// any veneer clobber it between a call and its callee, and linkers' range
/// extension thunks do the same. `addr` must be 8-aligned, so the literal is
/// naturally aligned and can later be re-pointed with one atomic 8-byte store;
/// `target` must be 4-aligned.
pub fn encode_veneer(addr: usize, target: usize) -> Result<[u8; 16], EncodeError> {
    if addr % 8 != 0 {
        return Err(EncodeError::Misaligned { addr });
    }
    if target % 4 != 0 {
        return Err(EncodeError::Misaligned { addr: target });
    }
    let mut v = [0u8; 16];
    v[0..4].copy_from_slice(&LDR_X16_LIT8.to_le_bytes());
    v[4..8].copy_from_slice(&BR_X16.to_le_bytes());
    v[8..16].copy_from_slice(&(target as u64).to_le_bytes());
    Ok(v)
}

/// Whether `word` may be modified while another core executes it (ARMv8 ARM,
/// DDI0487, B2.2.5 "Concurrent modification and execution of instructions"):
/// `B`, `BL`, `BRK`, `HVC`, `ISB`, `NOP`, `SMC` or `SVC`. A change is allowed
/// when both the old and the new instruction are on this list.
pub fn concurrent_modification_allowed(word: u32) -> bool {
    const LIST: [(u32, u32); 8] = [
        (0xfc00_0000, 0x1400_0000), // B
        (BL_MASK, BL),              // BL
        (BRK_MASK, BRK),            // BRK
        (0xffe0_001f, 0xd400_0002), // HVC
        (0xffff_f0ff, 0xd503_30df), // ISB (any option)
        (0xffff_ffff, NOP),         // NOP
        (0xffe0_001f, 0xd400_0003), // SMC
        (0xffe0_001f, 0xd400_0001), // SVC
    ];
    LIST.iter().any(|&(mask, val)| word & mask == val)
}

/// Check the first instruction of a pad (the 4 bytes before its site, at
/// `addr`): `MOV X9, X30`, or the compiler's `NOP` before first use.
pub fn check_pad_head(addr: usize, bytes: &[u8]) -> Result<PadHead, PadError> {
    match le32(bytes) {
        Some(MOV_X9_X30) => Ok(PadHead::SavesLr),
        Some(NOP) => Ok(PadHead::Nop),
        _ => Err(pad_error(
            addr,
            bytes,
            "MOV X9, X30 (e9 03 1e aa) or NOP (1f 20 03 d5)",
        )),
    }
}

/// The instruction at `addr`, disassembled (for reports).
pub fn disasm(addr: usize, bytes: &[u8]) -> String {
    use yaxpeax_arch::{Decoder, U8Reader};
    let d = yaxpeax_arm::armv8::a64::InstDecoder::default();
    match d.decode(&mut U8Reader::new(bytes)) {
        // yaxpeax prints branch targets relative to the instruction.
        Ok(i) => format!("{i}"),
        Err(e) => format!("<undecodable at {addr:#x}: {e}>"),
    }
}

impl Backend for Aarch64 {
    const NAME: &'static str = "aarch64";
    const SITE_LEN: usize = SITE_LEN;
    const TRAP: &'static [u8] = &[];

    fn classify(addr: usize, bytes: &[u8]) -> Result<PadState, PadError> {
        let err = || pad_error(addr, bytes, "NOP (1f 20 03 d5) or BL (.. .. .. 94/97)");
        let word = le32(bytes).ok_or_else(err)?;
        if word == NOP {
            Ok(PadState::Disabled)
        } else if let Some(target) = decode_bl(addr, word) {
            Ok(PadState::Enabled { target })
        } else if word & BRK_MASK == BRK {
            Ok(PadState::Trapped)
        } else {
            Err(err())
        }
    }

    fn encode_call(addr: usize, target: usize) -> Result<Insn, EncodeError> {
        Ok(Insn::new(&encode_bl(addr, target)?.to_le_bytes()))
    }

    fn encode_nop(_addr: usize) -> Insn {
        Insn::new(&NOP.to_le_bytes())
    }

    /// One phase, one aligned single-copy-atomic 32-bit store.
    ///
    /// ARMv8 ARM (DDI0487) B2.2.5: concurrent modification and execution is
    /// allowed "where each of the instruction before modification and the
    /// instruction after modification is one of a B, BL, BRK, HVC, ISB, NOP,
    /// SMC, or SVC instruction". `NOP` ↔ `BL` is such a change, so another core
    /// executes either the old or the new instruction, never a mix, without a
    /// trap. The sync after the phase (cache clean + invalidate to the point
    /// of unification, then a context synchronization on every core) only
    /// makes sure every core *sees* the new one from then on.
    fn plan(_addr: usize, _old: &Insn, new: &Insn) -> Plan {
        one_store_plan(new)
    }

    fn trap_site(pc: usize) -> usize {
        // BRK reports the PC at the instruction. Unused: the protocol never traps.
        pc
    }

    fn resume_at(ctx: &TrapContext, site: &InflightSite, policy: TrapPolicy) -> TrapOutcome {
        let next = site.addr.wrapping_add(SITE_LEN);
        emulate(ctx, site, policy, next, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bl_limits() {
        let a = 0x4000_0000usize;
        assert!(encode_bl(a, a + (128 << 20) - 4).is_ok());
        assert!(encode_bl(a, a - (128 << 20)).is_ok());
        assert_eq!(
            encode_bl(a, a + (128 << 20)),
            Err(EncodeError::OutOfRange {
                from: a,
                to: a + (128 << 20),
                reach: BL_REACH
            })
        );
        assert!(matches!(
            encode_bl(a, a - (128 << 20) - 4),
            Err(EncodeError::OutOfRange { .. })
        ));
        assert_eq!(
            encode_bl(a + 2, a),
            Err(EncodeError::Misaligned { addr: a + 2 })
        );
        assert_eq!(
            encode_bl(a, a + 6),
            Err(EncodeError::Misaligned { addr: a + 6 })
        );
        // BL to itself.
        assert_eq!(encode_bl(a, a), Ok(0x9400_0000));
        assert_eq!(encode_bl(a, a - 4), Ok(0x97ff_ffff));
    }

    #[test]
    fn pad_head() {
        assert_eq!(
            check_pad_head(0, &MOV_X9_X30.to_le_bytes()),
            Ok(PadHead::SavesLr)
        );
        assert_eq!(check_pad_head(0, &NOP.to_le_bytes()), Ok(PadHead::Nop));
        let e = check_pad_head(0x10, &[0xfd, 0x7b, 0xbf, 0xa9]).unwrap_err();
        assert_eq!(e.addr, 0x10);
        assert!(e.to_string().contains("fd 7b bf a9"), "{e}");
    }

    #[test]
    fn modification_list() {
        assert!(concurrent_modification_allowed(NOP));
        assert!(concurrent_modification_allowed(
            encode_bl(0x1000, 0x8000).unwrap()
        ));
        assert!(concurrent_modification_allowed(BRK | (5 << 5)));
        assert!(concurrent_modification_allowed(0xd503_3fdf)); // ISB
        assert!(concurrent_modification_allowed(0x1400_0002)); // B
        assert!(!concurrent_modification_allowed(MOV_X9_X30));
        assert!(!concurrent_modification_allowed(0xd503_203f)); // YIELD
    }
}
