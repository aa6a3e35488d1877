//! A32 (ARM state on ARMv7): `NOP` ↔ `BL target`, one aligned store.
//!
//! | pad state | first | site |
//! | --- | --- | --- |
//! | disabled | `MOV IP, LR` | `NOP` (`e320f000`), or `MOV R0, R0` (`e1a00000`) |
//! | enabled | `MOV IP, LR` | `BL target` (±32 MiB) |
//!
//! `BL` clobbers LR; `MOV IP, LR` before the site keeps it for the
//! trampoline, as `MOV X9, X30` does on AArch64.
//!
//! # `MOV R0, R0`
//!
//! Old toolchains (and the kernel's old `ftrace_nop`) use `MOV R0, R0` as the
//! no-op; it is recognised as disabled. But it is *not* on the ARMv7 ARM's
//! list of instructions that may be modified while executing (see
//! [`concurrent_modification_allowed`]), so a `MOV R0, R0` ↔ `BL` change is
//! not architecturally sanctioned while other threads run the pad. The store
//! itself is single-copy atomic (so the model check passes), but the runtime
//! should turn such pads into `NOP` while no other thread can run them (as for
//! GCC's five 1-byte NOPs on x86-64), and write `NOP` rather than the original
//! when disabling.

use crate::{distance, emulate, le32, one_store_plan, pad_error, PadHead};
use tracer_core::backend::{
    Backend, EncodeError, InflightSite, Insn, PadError, PadState, Plan, TrapContext, TrapOutcome,
    TrapPolicy,
};

/// `NOP` (ARMv6K and later).
pub const NOP: u32 = 0xe320_f000;
/// `MOV R0, R0`, the no-op of older toolchains.
pub const MOV_R0_R0: u32 = 0xe1a0_0000;
/// `MOV IP, LR`: the first instruction of a pad.
pub const MOV_IP_LR: u32 = 0xe1a0_c00e;
/// `BL` (condition AL) with a zero offset; the low 24 bits hold the offset in
/// words from the site + 8.
pub const BL: u32 = 0xeb00_0000;
/// The bits that make a word an unconditional `BL`.
pub const BL_MASK: u32 = 0xff00_0000;
/// How far a `BL` reaches either way from the site + 8: `[-32 MiB, +32 MiB - 4]`.
pub const BL_REACH: u64 = 32 << 20;
/// Length of a site.
pub const SITE_LEN: usize = 4;
/// `LDR PC, [PC, #-4]`: a veneer's jump through the literal after it.
pub const LDR_PC_PC_M4: u32 = 0xe51f_f004;

/// The A32 backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct A32;

/// The `BL` at `addr` that calls `target`. Both must be 4-aligned: a target
/// with the Thumb bit set is Thumb code, which `BL` cannot enter.
pub fn encode_bl(addr: usize, target: usize) -> Result<u32, EncodeError> {
    if addr % 4 != 0 {
        return Err(EncodeError::Misaligned { addr });
    }
    if target % 4 != 0 {
        return Err(EncodeError::Misaligned { addr: target });
    }
    let off = distance(addr.wrapping_add(8), target);
    let reach = BL_REACH as i128;
    if off < -reach || off >= reach {
        return Err(EncodeError::OutOfRange {
            from: addr,
            to: target,
            reach: BL_REACH,
        });
    }
    Ok(BL | ((off >> 2) as u32 & 0x00ff_ffff))
}

/// The target of `word` at `addr` if it is an unconditional `BL`.
pub fn decode_bl(addr: usize, word: u32) -> Option<usize> {
    if word & BL_MASK != BL {
        return None;
    }
    let off = (((word << 8) as i32) >> 6) as isize;
    Some(addr.wrapping_add(8).wrapping_add_signed(off))
}

/// Whether `word` is a breakpoint Linux turns into `SIGTRAP`: the
/// `UDF #0x1f` family ([`crate::A32_BREAKPOINT`] and the uprobes and kprobes
/// variants beside it), any condition.
pub fn is_breakpoint(word: u32) -> bool {
    word & 0x0fff_fff0 == 0x07f0_01f0
}

/// A veneer for a call out of `BL` reach: `LDR PC, [PC, #-4]; .word target`.
///
/// Place it within reach of the site, at a 4-aligned `addr`, and point the
/// site's `BL` at it. Loading `PC` interworks: a `target` with bit 0 set is
/// entered in Thumb state. It clobbers no register.
pub fn encode_veneer(addr: usize, target: usize) -> Result<[u8; 8], EncodeError> {
    if addr % 4 != 0 {
        return Err(EncodeError::Misaligned { addr });
    }
    let t = u32::try_from(target).map_err(|_| EncodeError::OutOfRange {
        from: addr,
        to: target,
        reach: u64::from(u32::MAX),
    })?;
    let mut v = [0u8; 8];
    v[..4].copy_from_slice(&LDR_PC_PC_M4.to_le_bytes());
    v[4..].copy_from_slice(&t.to_le_bytes());
    Ok(v)
}

/// Whether `word` may be modified while another core executes it (ARMv7 ARM
/// A3.5.4): `B`, `BL`, `NOP`, `BKPT`, `SVC`, `HVC` or `SMC`. A change is
/// allowed when both the old and the new instruction are on this list.
pub fn concurrent_modification_allowed(word: u32) -> bool {
    let cond = word >> 28;
    let conditional = cond != 0xf;
    let b_bl = conditional && word & 0x0e00_0000 == 0x0a00_0000;
    let svc = conditional && word & 0x0f00_0000 == 0x0f00_0000;
    let nop = conditional && word & 0x0fff_ffff == 0x0320_f000;
    let bkpt = word & 0xfff0_00f0 == 0xe120_0070;
    let hvc = word & 0xfff0_00f0 == 0xe140_0070;
    let smc = conditional && word & 0x0fff_fff0 == 0x0160_0070;
    b_bl || svc || nop || bkpt || hvc || smc
}

/// Check the first instruction of a pad (the 4 bytes before its site, at
/// `addr`): `MOV IP, LR`, or a no-op before first use.
pub fn check_pad_head(addr: usize, bytes: &[u8]) -> Result<PadHead, PadError> {
    match le32(bytes) {
        Some(MOV_IP_LR) => Ok(PadHead::SavesLr),
        Some(NOP) | Some(MOV_R0_R0) => Ok(PadHead::Nop),
        _ => Err(pad_error(
            addr,
            bytes,
            "MOV IP, LR (0e c0 a0 e1) or NOP (00 f0 20 e3)",
        )),
    }
}

/// The instruction at `addr`, disassembled in ARM state (for reports).
pub fn disasm(addr: usize, bytes: &[u8]) -> String {
    use yaxpeax_arch::{Decoder, U8Reader};
    let d = yaxpeax_arm::armv7::InstDecoder::armv7();
    match d.decode(&mut U8Reader::new(bytes)) {
        Ok(i) => format!("{i}"),
        Err(e) => format!("<undecodable at {addr:#x}: {e}>"),
    }
}

impl Backend for A32 {
    const NAME: &'static str = "a32";
    const SITE_LEN: usize = SITE_LEN;
    const TRAP: &'static [u8] = &[];

    fn classify(addr: usize, bytes: &[u8]) -> Result<PadState, PadError> {
        let err = || {
            pad_error(
                addr,
                bytes,
                "NOP (00 f0 20 e3), MOV R0, R0 (00 00 a0 e1) or BL (.. .. .. eb)",
            )
        };
        let word = le32(bytes).ok_or_else(err)?;
        if word == NOP || word == MOV_R0_R0 {
            Ok(PadState::Disabled)
        } else if let Some(target) = decode_bl(addr, word) {
            Ok(PadState::Enabled { target })
        } else if is_breakpoint(word) {
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
    /// ARMv7 ARM A3.5.4: an A32 instruction may be modified while another
    /// core executes it when old and new are each one of `B`, `BL`, `NOP`,
    /// `BKPT`, `SVC`, `HVC` or `SMC`; the other core then executes the old or
    /// the new one. `NOP` ↔ `BL` is such a change (`MOV R0, R0` is not: see
    /// the module documentation). The sync after the phase (`cacheflush`, then
    /// membarrier `SYNC_CORE`) makes every core see the new one.
    fn plan(_addr: usize, _old: &Insn, new: &Insn) -> Plan {
        one_store_plan(new)
    }

    fn trap_site(pc: usize) -> usize {
        // Linux reports the PC at the UDF. Unused: the protocol never traps.
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
    fn bl_known_encodings() {
        // `bl .` is ebfffffe.
        assert_eq!(encode_bl(0x8000, 0x8000), Ok(0xebff_fffe));
        assert_eq!(decode_bl(0x8000, 0xebff_fffe), Some(0x8000));
        assert_eq!(encode_bl(0x8000, 0x8008), Ok(0xeb00_0000));
    }

    #[test]
    fn bl_limits() {
        let a = 0x0200_0000usize;
        let max = a + 8 + (32 << 20) - 4;
        let min = a + 8 - (32 << 20);
        for t in [max, min] {
            assert_eq!(decode_bl(a, encode_bl(a, t).unwrap()), Some(t));
        }
        assert!(matches!(
            encode_bl(a, max + 4),
            Err(EncodeError::OutOfRange { .. })
        ));
        assert!(matches!(
            encode_bl(a, min - 4),
            Err(EncodeError::OutOfRange { .. })
        ));
        assert_eq!(
            encode_bl(a, a + 0x101),
            Err(EncodeError::Misaligned { addr: a + 0x101 })
        );
        assert_eq!(
            encode_bl(a + 2, a),
            Err(EncodeError::Misaligned { addr: a + 2 })
        );
    }

    #[test]
    fn conditional_bl_is_not_a_pad() {
        assert!(A32::classify(0x8000, &0x0b00_0000u32.to_le_bytes()).is_err()); // bleq
    }

    #[test]
    fn breakpoints() {
        assert!(is_breakpoint(crate::A32_BREAKPOINT));
        assert!(is_breakpoint(0xe7f0_01f9)); // uprobes
        assert!(!is_breakpoint(0xe7f0_00f0)); // udf #0
        assert_eq!(
            A32::classify(0, &crate::A32_BREAKPOINT.to_le_bytes()),
            Ok(PadState::Trapped)
        );
    }

    #[test]
    fn pad_head() {
        assert_eq!(
            check_pad_head(0, &MOV_IP_LR.to_le_bytes()),
            Ok(PadHead::SavesLr)
        );
        assert_eq!(check_pad_head(0, &NOP.to_le_bytes()), Ok(PadHead::Nop));
        assert_eq!(
            check_pad_head(0, &MOV_R0_R0.to_le_bytes()),
            Ok(PadHead::Nop)
        );
        assert!(check_pad_head(0, &0xe52d_e004u32.to_le_bytes()).is_err()); // push {lr}
    }

    #[test]
    fn modification_list() {
        assert!(concurrent_modification_allowed(NOP));
        assert!(concurrent_modification_allowed(
            encode_bl(0, 0x100).unwrap()
        ));
        assert!(concurrent_modification_allowed(0xeafffffe)); // b .
        assert!(concurrent_modification_allowed(0xef00_0000)); // svc 0
        assert!(concurrent_modification_allowed(0xe120_0070)); // bkpt 0
        assert!(!concurrent_modification_allowed(MOV_R0_R0));
        assert!(!concurrent_modification_allowed(MOV_IP_LR));
        assert!(!concurrent_modification_allowed(crate::A32_BREAKPOINT));
        assert!(!concurrent_modification_allowed(0xfa00_0000)); // blx imm
    }
}
