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

/// `B` with a zero offset; the low 26 bits hold the offset in words.
pub const B: u32 = 0x1400_0000;
/// The bits that make a word a `B`.
pub const B_MASK: u32 = 0xfc00_0000;
/// `BTI c`: the landing pad a compiler may put before a function's pad
/// (`-mbranch-protection=bti`), the AArch64 counterpart of `endbr64`.
pub const BTI_C: u32 = 0xd503_245f;
/// Length of an entry stub ([`encode_entry_stub`]).
pub const ENTRY_STUB_LEN: usize = 40;

/// The `B` at `addr` that jumps to `target` (same reach as `BL`).
pub fn encode_b(addr: usize, target: usize) -> Result<u32, EncodeError> {
    Ok(encode_bl(addr, target)? & !BL_MASK | B)
}

/// The target of `word` at `addr` if it is a `B`.
pub fn decode_b(addr: usize, word: u32) -> Option<usize> {
    if word & B_MASK != B {
        return None;
    }
    decode_bl(addr, word & !B_MASK | BL)
}

/// The entry stub of a compiler pad ("whole program" tracing), placed at
/// `addr` (8-aligned) within `B` reach of the pad at `site`:
///
/// ```text
///  0: ldr x17, 16      // resume address: site + 4
///  4: ldr x9, 24       // the entry trampoline
///  8: ldr w16, 32      // the function's index
/// 12: br x9
/// 16: .quad site + 4
/// 24: .quad tramp
/// 32: .word func, 0
/// ```
///
/// The pad's first `NOP` becomes `B stub` ([`Aarch64Entry`]), which leaves
/// `x30` (the caller's return address) alone. At a function's entry `x9`,
/// `x16` and `x17` hold nothing the function needs (AAPCS64 temporaries;
/// `x16`/`x17` are also what linker veneers clobber), while `x0`–`x7` are
/// arguments and `x8` the indirect result address, so those are left alone.
pub fn encode_entry_stub(
    addr: usize,
    site: usize,
    func: u32,
    tramp: usize,
) -> Result<[u8; ENTRY_STUB_LEN], EncodeError> {
    if addr % 8 != 0 {
        return Err(EncodeError::Misaligned { addr });
    }
    if tramp % 4 != 0 {
        return Err(EncodeError::Misaligned { addr: tramp });
    }
    // LDR (literal): imm19 = word offset, at bits 23:5.
    const LDR_X: u32 = 0x5800_0000;
    const LDR_W: u32 = 0x1800_0000;
    let words: [u32; 4] = [
        LDR_X | (4 << 5) | 17,
        LDR_X | (5 << 5) | 9,
        LDR_W | (6 << 5) | 16,
        0xd61f_0000 | (9 << 5), // BR X9
    ];
    let mut v = [0u8; ENTRY_STUB_LEN];
    for (i, w) in words.iter().enumerate() {
        v[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    v[16..24].copy_from_slice(&(site as u64 + 4).to_le_bytes());
    v[24..32].copy_from_slice(&(tramp as u64).to_le_bytes());
    v[32..36].copy_from_slice(&func.to_le_bytes());
    Ok(v)
}

/// The capturing entry stub of a compiler pad (argument and return-value
/// capture, issue 14): [`encode_entry_stub`]'s, but `x16` gets the whole
/// 64-bit literal, the function's index in its low half and the capture
/// spec (`tracer_core::capture::Capture::encode`) in its high half, and the
/// target is the capturing entry trampoline (`__tracer_v1_tramp_fentry_args`,
/// [`crate::trampoline`]). Same length, same registers:
///
/// ```text
///  0: ldr x17, 16      // resume address: site + 4
///  4: ldr x9, 24       // the capturing entry trampoline
///  8: ldr x16, 32      // func | spec << 32
/// 12: br x9
/// 16: .quad site + 4
/// 24: .quad tramp
/// 32: .word func, spec
/// ```
pub fn encode_capture_stub(
    addr: usize,
    site: usize,
    func: u32,
    spec: u32,
    tramp: usize,
) -> Result<[u8; ENTRY_STUB_LEN], EncodeError> {
    let mut v = encode_entry_stub(addr, site, func, tramp)?;
    // LDR X16, #24 (imm19 = 6 words) in place of LDR W16: bit 30 is the size.
    const LDR_X: u32 = 0x5800_0000;
    v[8..12].copy_from_slice(&(LDR_X | (6 << 5) | 16).to_le_bytes());
    v[36..40].copy_from_slice(&spec.to_le_bytes());
    Ok(v)
}

/// The AArch64 backend of compiler pads (true function entries): the pad's
/// first `NOP` becomes `B stub` instead of `BL`, so the caller's return
/// address stays in `x30` for the entry trampoline to hook. `NOP` ↔ `B` is on
/// the architecture's list of concurrently modifiable instructions, so the
/// protocol is the same single aligned store as [`Aarch64`]'s.
#[derive(Clone, Copy, Debug, Default)]
pub struct Aarch64Entry;

/// A one-word pad: `NOP` (disabled), the branch `decode` recognises
/// (enabled, with its target), or a `BRK` (trapped).
fn classify_with(
    addr: usize,
    bytes: &[u8],
    expected: &str,
    decode: fn(usize, u32) -> Option<usize>,
) -> Result<PadState, PadError> {
    let err = || pad_error(addr, bytes, expected);
    let word = le32(bytes).ok_or_else(err)?;
    if word == NOP {
        Ok(PadState::Disabled)
    } else if let Some(target) = decode(addr, word) {
        Ok(PadState::Enabled { target })
    } else if word & BRK_MASK == BRK {
        Ok(PadState::Trapped)
    } else {
        Err(err())
    }
}

impl Backend for Aarch64Entry {
    const NAME: &'static str = "aarch64-entry";
    const SITE_LEN: usize = SITE_LEN;
    const TRAP: &'static [u8] = &[];

    fn classify(addr: usize, bytes: &[u8]) -> Result<PadState, PadError> {
        classify_with(
            addr,
            bytes,
            "NOP (1f 20 03 d5) or B (.. .. .. 14/17)",
            decode_b,
        )
    }

    fn encode_call(addr: usize, target: usize) -> Result<Insn, EncodeError> {
        Ok(Insn::new(&encode_b(addr, target)?.to_le_bytes()))
    }

    fn encode_nop(_addr: usize) -> Insn {
        Insn::new(&NOP.to_le_bytes())
    }

    /// One aligned single-copy-atomic store, as [`Aarch64::plan`]: `NOP` and
    /// `B` are both on the list of DDI0487 B2.2.5.
    fn plan(_addr: usize, _old: &Insn, new: &Insn) -> Plan {
        one_store_plan(new)
    }

    fn trap_site(pc: usize) -> usize {
        pc
    }

    /// Unused (the protocol never traps): a `B` goes to its target with
    /// `x30` unchanged, a `NOP` falls through.
    fn resume_at(ctx: &TrapContext, site: &InflightSite, policy: TrapPolicy) -> TrapOutcome {
        let next = site.addr.wrapping_add(SITE_LEN);
        let pc = match (policy, site.call_target) {
            (TrapPolicy::Emulate, Some(t)) => t,
            _ => next,
        };
        TrapOutcome::Resume {
            pc,
            sp: ctx.sp,
            lr: ctx.lr,
            push: None,
        }
    }
}

impl Backend for Aarch64 {
    const NAME: &'static str = "aarch64";
    const SITE_LEN: usize = SITE_LEN;
    const TRAP: &'static [u8] = &[];

    fn classify(addr: usize, bytes: &[u8]) -> Result<PadState, PadError> {
        classify_with(
            addr,
            bytes,
            "NOP (1f 20 03 d5) or BL (.. .. .. 94/97)",
            decode_bl,
        )
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
    fn b_round_trips() {
        let a = 0x4000_0000usize;
        for t in [a + 8, a - 0x1000, a + (128 << 20) - 4, a - (128 << 20)] {
            let w = encode_b(a, t).unwrap();
            assert_eq!(w & B_MASK, B);
            assert_eq!(decode_b(a, w), Some(t));
            assert_eq!(decode_bl(a, w), None);
            assert!(concurrent_modification_allowed(w));
            assert_eq!(
                Aarch64Entry::classify(a, &w.to_le_bytes()),
                Ok(PadState::Enabled { target: t })
            );
        }
        assert!(encode_b(a, a + (128 << 20)).is_err());
        assert_eq!(
            Aarch64Entry::classify(a, &NOP.to_le_bytes()),
            Ok(PadState::Disabled)
        );
        let bl = encode_bl(a, a + 8).unwrap().to_le_bytes();
        assert!(Aarch64Entry::classify(a, &bl).is_err());
    }

    #[test]
    fn entry_stub_disassembles() {
        let (at, site, tramp) = (0x10_0000usize, 0x20_0000usize, 0x7f00_1230usize);
        let v = encode_entry_stub(at, site, 0x1234_5678, tramp).unwrap();
        assert_eq!(disasm(at, &v[0..4]), "ldr x17, $+0x10");
        assert_eq!(disasm(at + 4, &v[4..8]), "ldr x9, $+0x14");
        assert_eq!(disasm(at + 8, &v[8..12]), "ldr w16, $+0x18");
        assert_eq!(disasm(at + 12, &v[12..16]), "br x9");
        assert_eq!(
            u64::from_le_bytes(v[16..24].try_into().unwrap()),
            site as u64 + 4
        );
        assert_eq!(
            u64::from_le_bytes(v[24..32].try_into().unwrap()),
            tramp as u64
        );
        assert_eq!(
            u32::from_le_bytes(v[32..36].try_into().unwrap()),
            0x1234_5678
        );
        assert!(encode_entry_stub(at + 4, site, 1, tramp).is_err());
    }

    #[test]
    fn capture_stub_disassembles() {
        let (at, site, tramp) = (0x10_0000usize, 0x20_0000usize, 0x7f00_1240usize);
        let v = encode_capture_stub(at, site, 0x1234_5678, 0x1188, tramp).unwrap();
        let plain = encode_entry_stub(at, site, 0x1234_5678, tramp).unwrap();
        assert_eq!(disasm(at + 8, &v[8..12]), "ldr x16, $+0x18");
        // Everything else as the plain stub's.
        assert_eq!(v[..8], plain[..8]);
        assert_eq!(v[12..36], plain[12..36]);
        assert_eq!(
            u64::from_le_bytes(v[32..40].try_into().unwrap()),
            0x1188 << 32 | 0x1234_5678
        );
        assert!(encode_capture_stub(at + 4, site, 1, 1, tramp).is_err());
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
