//! Thumb-2: `NOP.W` ↔ `BL target`, by the half-word breakpoint protocol.
//!
//! A Thumb pad is `MOV IP, LR` (16 bits, keeps the link register) followed by
//! the site, one 32-bit instruction:
//!
//! | pad state | first | site |
//! | --- | --- | --- |
//! | disabled | `MOV IP, LR` | `NOP.W` (`f3af 8000`) |
//! | enabled | `MOV IP, LR` | `BL target` (T1, ±16 MiB) |
//! | in flight | `MOV IP, LR` | `UDF #1` (`de01`) + either second half |
//!
//! A 32-bit Thumb instruction is two half-words, each stored little-endian,
//! first half-word first: `NOP.W` is the bytes `af f3 00 80`. With the 16-bit
//! head, a pad that starts word-aligned puts its site at `addr % 4 == 2`.
//!
//! # Why not one 32-bit store
//!
//! The ARMv7 ARM (A3.5.4, "Concurrent modification and execution of
//! instructions") allows a Thumb instruction to be changed while another core
//! may execute it only when old and new are both 16-bit `B`, `NOP`, `BKPT` or
//! `SVC`: no 32-bit Thumb instruction is on the list. Instruction fetch is
//! single-copy atomic only per half-word, so a 32-bit store can be seen half
//! old and half new (`f000 8000`: a `BL` prefix glued to a `NOP.W` suffix). And
//! at `addr % 4 == 2` the instruction straddles a word boundary, so it cannot
//! even be written by one store. Hence the protocol of seed 004 (see
//! [`Thumb2::plan`]): a 16-bit trap over the first half, then the second half,
//! then the first half, with a sync after each.
//!
//! Neither the trap nor a half of a 32-bit instruction is on A3.5.4's list
//! either. What the protocol relies on is narrower: each store is one
//! single-copy-atomic half-word, and every core synchronises between phases,
//! so every state a core can execute is the old instruction, the trap, or the
//! new instruction (the model check in this crate's tests enumerates them).
//! It is the argument of seed 004 and of x86-64's int3 protocol; qemu cannot
//! test it, and it has not been tried on real ARMv7 hardware here.
//!
//! # Thumb addresses
//!
//! `BL` (unlike `BLX`) stays in Thumb state, so its target is Thumb code. A
//! target may be given with the Thumb bit set (a function pointer, an
//! interworking address) or clear: bit 0 is not encoded, the instruction
//! encodes an even offset. [`Thumb2::classify`](tracer_core::Backend::classify)
//! reports targets *with* bit 0 set, as a Thumb function pointer holds them:
//! give the engine interworking addresses so the targets it compares match.

use crate::{distance, emulate, le16, pad_error, PadHead, THUMB2_BREAKPOINT, THUMB_BREAKPOINT};
use tracer_core::backend::{
    Backend, EncodeError, InflightSite, Insn, PadError, PadState, Plan, TrapContext, TrapOutcome,
    TrapPolicy, Write,
};

/// `NOP.W`, as its two half-words.
pub const NOP_W: [u16; 2] = [0xf3af, 0x8000];
/// `MOV IP, LR` (16-bit `MOV` register, T1): the pad's first instruction.
pub const MOV_IP_LR: u16 = 0x46f4;
/// `NOP` (16-bit).
pub const NOP16: u16 = 0xbf00;
/// First half-word of `BL` (T1) with a zero offset, and the bits that make it one.
pub const BL_HW1: (u16, u16) = (0xf000, 0xf800);
/// Second half-word of `BL` (T1) with a zero offset, and the bits that make it one.
pub const BL_HW2: (u16, u16) = (0xd000, 0xd000);
/// How far a `BL` reaches either way from the site + 4: `[-16 MiB, +16 MiB - 2]`.
pub const BL_REACH: u64 = 16 << 20;
/// Length of a site.
pub const SITE_LEN: usize = 4;
/// The trap half-word as stored: [`THUMB_BREAKPOINT`] little-endian.
pub const TRAP_BYTES: [u8; 2] = THUMB_BREAKPOINT.to_le_bytes();

/// `LDR.W PC, [PC, #0]`: a veneer's jump through the literal after it.
pub const LDR_W_PC_PC0: [u16; 2] = [0xf8df, 0xf000];

/// The Thumb-2 backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct Thumb2;

/// Half-words to the bytes they are stored as.
pub fn to_bytes(hw: [u16; 2]) -> [u8; 4] {
    let (a, b) = (hw[0].to_le_bytes(), hw[1].to_le_bytes());
    [a[0], a[1], b[0], b[1]]
}

/// The `BL` at `addr` that calls `target` (bit 0 of `target` ignored), as
/// half-words.
pub fn encode_bl(addr: usize, target: usize) -> Result<[u16; 2], EncodeError> {
    if addr % 2 != 0 {
        return Err(EncodeError::Misaligned { addr });
    }
    let off = distance(addr.wrapping_add(4), target & !1);
    let reach = BL_REACH as i128;
    if off < -reach || off >= reach {
        return Err(EncodeError::OutOfRange {
            from: addr,
            to: target,
            reach: BL_REACH,
        });
    }
    let off = off as u32;
    let s = (off >> 24) & 1;
    let i1 = (off >> 23) & 1;
    let i2 = (off >> 22) & 1;
    // I1 = NOT(J1 XOR S), so J1 = NOT(I1) XOR S; likewise J2.
    let j1 = (i1 ^ 1) ^ s;
    let j2 = (i2 ^ 1) ^ s;
    let imm10 = (off >> 12) & 0x3ff;
    let imm11 = (off >> 1) & 0x7ff;
    Ok([
        BL_HW1.0 | (s << 10 | imm10) as u16,
        BL_HW2.0 | (j1 << 13 | j2 << 11 | imm11) as u16,
    ])
}

/// The target of the half-words `hw` at `addr` if they are a `BL` (T1), with
/// the Thumb bit set.
pub fn decode_bl(addr: usize, hw: [u16; 2]) -> Option<usize> {
    if hw[0] & BL_HW1.1 != BL_HW1.0 || hw[1] & BL_HW2.1 != BL_HW2.0 {
        return None;
    }
    let (hw1, hw2) = (u32::from(hw[0]), u32::from(hw[1]));
    let s = (hw1 >> 10) & 1;
    let j1 = (hw2 >> 13) & 1;
    let j2 = (hw2 >> 11) & 1;
    let i1 = (j1 ^ s) ^ 1;
    let i2 = (j2 ^ s) ^ 1;
    let imm = s << 24 | i1 << 23 | i2 << 22 | (hw1 & 0x3ff) << 12 | (hw2 & 0x7ff) << 1;
    // Sign-extend the 25-bit offset.
    let off = ((imm << 7) as i32 >> 7) as isize;
    Some(addr.wrapping_add(4).wrapping_add_signed(off) | 1)
}

/// A veneer for a call out of `BL` reach: `LDR.W PC, [PC, #0]; .word target|1`.
///
/// Place it within reach of the site, at a 4-aligned `addr` (so `PC`, which
/// reads as `addr + 4`, points at the literal), and point the site's `BL` at
/// it. Loading `PC` with bit 0 set keeps Thumb state. It clobbers no register.
pub fn encode_veneer(addr: usize, target: usize) -> Result<[u8; 8], EncodeError> {
    if addr % 4 != 0 {
        return Err(EncodeError::Misaligned { addr });
    }
    let t = u32::try_from(target | 1).map_err(|_| EncodeError::OutOfRange {
        from: addr,
        to: target,
        reach: u64::from(u32::MAX),
    })?;
    let mut v = [0u8; 8];
    v[..4].copy_from_slice(&to_bytes(LDR_W_PC_PC0));
    v[4..].copy_from_slice(&t.to_le_bytes());
    Ok(v)
}

/// Whether the 16-bit Thumb instruction `hw` may be modified while another
/// core executes it (ARMv7 ARM A3.5.4): `B`, `NOP`, `BKPT` or `SVC`, all
/// 16-bit. No 32-bit Thumb instruction is on the list.
pub fn concurrent_modification_allowed(hw: u16) -> bool {
    let b_t1 = hw & 0xf000 == 0xd000 && (hw >> 8) & 0xf < 0xe;
    let b_t2 = hw & 0xf800 == 0xe000;
    let svc = hw & 0xff00 == 0xdf00;
    let bkpt = hw & 0xff00 == 0xbe00;
    b_t1 || b_t2 || svc || bkpt || hw == NOP16
}

/// Check the first instruction of a pad (the 2 bytes before its site, at
/// `addr`): `MOV IP, LR`, or a 16-bit `NOP` before first use.
pub fn check_pad_head(addr: usize, bytes: &[u8]) -> Result<PadHead, PadError> {
    match le16(bytes, 0) {
        Some(MOV_IP_LR) => Ok(PadHead::SavesLr),
        Some(NOP16) => Ok(PadHead::Nop),
        _ => Err(pad_error(addr, bytes, "MOV IP, LR (f4 46) or NOP (00 bf)")),
    }
}

/// The instruction at `addr`, disassembled in Thumb state (for reports).
pub fn disasm(addr: usize, bytes: &[u8]) -> String {
    use yaxpeax_arch::{Decoder, U8Reader};
    let d = yaxpeax_arm::armv7::InstDecoder::armv7_thumb();
    match d.decode(&mut U8Reader::new(bytes)) {
        Ok(i) => format!("{i}"),
        Err(e) => format!("<undecodable at {addr:#x}: {e}>"),
    }
}

impl Backend for Thumb2 {
    const NAME: &'static str = "thumb2";
    const SITE_LEN: usize = SITE_LEN;
    const TRAP: &'static [u8] = &TRAP_BYTES;

    fn classify(addr: usize, bytes: &[u8]) -> Result<PadState, PadError> {
        let err = || {
            pad_error(
                addr,
                bytes,
                "NOP.W (af f3 00 80), BL (f0-f7 f0-f7 .. d0-ff) or a trap (01 de ..)",
            )
        };
        let (Some(hw1), Some(hw2)) = (le16(bytes, 0), le16(bytes, 2)) else {
            return Err(err());
        };
        let word = u32::from(hw1) << 16 | u32::from(hw2);
        if hw1 == THUMB_BREAKPOINT || word == THUMB2_BREAKPOINT {
            Ok(PadState::Trapped)
        } else if [hw1, hw2] == NOP_W {
            Ok(PadState::Disabled)
        } else if let Some(target) = decode_bl(addr, [hw1, hw2]) {
            Ok(PadState::Enabled { target })
        } else {
            Err(err())
        }
    }

    fn encode_call(addr: usize, target: usize) -> Result<Insn, EncodeError> {
        Ok(Insn::new(&to_bytes(encode_bl(addr, target)?)))
    }

    fn encode_nop(_addr: usize) -> Insn {
        Insn::new(&to_bytes(NOP_W))
    }

    /// The half-word breakpoint protocol of seed 004, three phases of one
    /// aligned single-copy-atomic 16-bit store each:
    ///
    /// 1. the trap half-word ([`THUMB_BREAKPOINT`]) over the first half;
    /// 2. the second half of the new instruction;
    /// 3. the first half of the new instruction.
    ///
    /// After the sync of phase 1 no core can start the old instruction; a core
    /// that fetches the first half-word then sees either the old one (before
    /// the sync) or the trap, never a new second half behind an old first
    /// half. A thread that meets the trap is resumed by the handler as if it
    /// had executed the new instruction (or skipped it), and a handler that
    /// runs after phase 3 rewinds to the site. Sites must be 2-aligned; at
    /// `addr % 4 == 2` the two halves sit in different words, which is fine
    /// since every store is one half-word.
    fn plan(_addr: usize, _old: &Insn, new: &Insn) -> Plan {
        let b = new.bytes();
        let store = |offset: usize, bytes: &[u8]| {
            vec![Write {
                offset,
                bytes: bytes.to_vec(),
                atomic: true,
            }]
        };
        Plan {
            phases: vec![
                store(0, &TRAP_BYTES),
                store(2, &b[2..4]),
                store(0, &b[0..2]),
            ],
        }
    }

    /// Linux reports the PC *at* the `UDF`.
    fn trap_site(pc: usize) -> usize {
        pc
    }

    /// Emulating a call: `LR = (site + 4) | 1` (return to Thumb state after
    /// the site), `PC = target` with bit 0 clear (the thread stays in Thumb
    /// state, as `BL` does). Skipping, or a new `NOP.W`: `PC = site + 4`.
    fn resume_at(ctx: &TrapContext, site: &InflightSite, policy: TrapPolicy) -> TrapOutcome {
        let next = site.addr.wrapping_add(SITE_LEN);
        emulate(ctx, site, policy, next, next | 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nop_w_bytes() {
        assert_eq!(to_bytes(NOP_W), [0xaf, 0xf3, 0x00, 0x80]);
        assert_eq!(TRAP_BYTES, [0x01, 0xde]);
    }

    #[test]
    fn bl_known_encodings() {
        // `bl .` is f7ff fffe; `bl .+4` is f000 f800.
        assert_eq!(encode_bl(0x1000, 0x1000), Ok([0xf7ff, 0xfffe]));
        assert_eq!(encode_bl(0x1000, 0x1005), Ok([0xf000, 0xf800]));
        assert_eq!(decode_bl(0x1000, [0xf7ff, 0xfffe]), Some(0x1001));
    }

    #[test]
    fn bl_limits_and_thumb_bit() {
        let a = 0x0100_0002usize;
        let max = a + 4 + (16 << 20) - 2;
        let min = a + 4 - (16 << 20);
        for t in [max, max | 1, min, min | 1] {
            let hw = encode_bl(a, t).unwrap();
            assert_eq!(decode_bl(a, hw), Some(t | 1));
        }
        assert!(matches!(
            encode_bl(a, max + 2),
            Err(EncodeError::OutOfRange { .. })
        ));
        assert!(matches!(
            encode_bl(a, min - 2),
            Err(EncodeError::OutOfRange { .. })
        ));
        assert_eq!(
            encode_bl(a + 1, a),
            Err(EncodeError::Misaligned { addr: a + 1 })
        );
        // The Thumb bit does not change the encoding.
        assert_eq!(encode_bl(a, 0x10_0000), encode_bl(a, 0x10_0001));
    }

    #[test]
    fn pad_head() {
        assert_eq!(check_pad_head(0, &[0xf4, 0x46]), Ok(PadHead::SavesLr));
        assert_eq!(check_pad_head(0, &[0x00, 0xbf]), Ok(PadHead::Nop));
        assert!(check_pad_head(0, &[0x00, 0xb5]).is_err()); // push {lr}
        assert!(check_pad_head(0, &[0xf4]).is_err());
    }

    #[test]
    fn modification_list() {
        assert!(concurrent_modification_allowed(NOP16));
        assert!(concurrent_modification_allowed(0xe7fe)); // b .
        assert!(concurrent_modification_allowed(0xd0fe)); // beq .
        assert!(concurrent_modification_allowed(0xbe01)); // bkpt
        assert!(concurrent_modification_allowed(0xdf00)); // svc 0
        assert!(!concurrent_modification_allowed(THUMB_BREAKPOINT));
        assert!(!concurrent_modification_allowed(NOP_W[0]));
        assert!(!concurrent_modification_allowed(BL_HW1.0));
    }
}
