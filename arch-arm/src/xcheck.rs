//! Cross-checks with an independent decoder (yaxpeax-arm) and the model check
//! of every protocol over the states a concurrent fetch can observe.

use crate::{a32, aarch64, thumb, Aarch64, Thumb2, A32};
use tracer_core::backend::{
    Backend, EncodeError, InflightSite, Insn, PadError, PadState, Plan, TrapContext, TrapKind,
    TrapOutcome, TrapPolicy, Write,
};
use tracer_core::model::{observable_states, ModelError};
use yaxpeax_arch::{Decoder, LengthedInstruction, U8Reader};
use yaxpeax_arm::armv7::{self, ConditionCode, Operand as Op7};
use yaxpeax_arm::armv8::a64;

/// What an instruction does, as yaxpeax-arm reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Sem {
    /// A no-op (`NOP`, `NOP.W`, `MOV R0, R0`).
    Nop,
    /// A call that stays in the current state, to this (even) address.
    Bl(usize),
    /// The breakpoint the protocol plants (Thumb `UDF #1`, 16 bits).
    Trap,
    /// Anything else, as text.
    Other(String),
}

fn sem_a64(addr: usize, bytes: &[u8]) -> Sem {
    let d = a64::InstDecoder::default();
    let i = match d.decode(&mut U8Reader::new(bytes)) {
        Ok(i) => i,
        Err(e) => return Sem::Other(format!("error: {e}")),
    };
    match (i.opcode, i.operands[0]) {
        (a64::Opcode::BL, a64::Operand::PCOffset(off)) => Sem::Bl((addr as i64 + off) as usize),
        (a64::Opcode::BRK, _) => Sem::Other(format!("{i}")),
        _ if format!("{i}") == "nop" => Sem::Nop,
        _ => Sem::Other(format!("{i}")),
    }
}

/// yaxpeax-arm 0.3 reports an A32 branch offset as `imm24 + 2` words from the
/// instruction, sign-extended from 24 bits *after* the + 2: the two largest
/// forward offsets wrap. Undo that wrap (the encoding cannot express an offset
/// 2^26 bytes away, so this hides nothing).
fn a32_target(addr: usize, words: i32) -> usize {
    let mut off = i64::from(words) * 4;
    if off < -(1 << 25) + 8 {
        off += 1 << 26;
    }
    (addr as i64 + off) as usize
}

fn sem_a32(addr: usize, bytes: &[u8]) -> Sem {
    let d = armv7::InstDecoder::armv7();
    let i = match d.decode(&mut U8Reader::new(bytes)) {
        Ok(i) => i,
        Err(e) => return Sem::Other(format!("error: {e}")),
    };
    let text = format!("{i}");
    match (i.opcode, i.operands[0], i.condition) {
        (armv7::Opcode::BL, Op7::BranchOffset(w), ConditionCode::AL) => {
            Sem::Bl(a32_target(addr, w))
        }
        (armv7::Opcode::NOP, _, ConditionCode::AL) => Sem::Nop,
        // yaxpeax-arm 0.3 leaves the A32 hint space ("MSR (immediate), and
        // hints", A5-204, op1 = 0) undecoded: `Opcode::Invalid`. Read the
        // hint number there; hint 0 is NOP.
        (armv7::Opcode::Invalid, _, ConditionCode::AL)
            if u32::from_le_bytes(bytes[..4].try_into().unwrap()) & 0x0fff_ff00 == 0x0320_f000 =>
        {
            match bytes[0] {
                0 => Sem::Nop,
                h => Sem::Other(format!("hint #{h}")),
            }
        }
        _ if text == "mov r0, r0" => Sem::Nop,
        _ => Sem::Other(text),
    }
}

fn sem_thumb(addr: usize, bytes: &[u8]) -> Sem {
    let d = armv7::InstDecoder::armv7_thumb();
    let i = match d.decode(&mut U8Reader::new(bytes)) {
        Ok(i) => i,
        Err(e) => return Sem::Other(format!("error: {e}")),
    };
    let len = i.len().to_const();
    let text = format!("{i}");
    match (i.opcode, i.operands[0], len) {
        (armv7::Opcode::BL, Op7::BranchThumbOffset(h), 4) => {
            Sem::Bl((addr as i64 + 4 + i64::from(h) * 2) as usize)
        }
        (armv7::Opcode::NOP, _, 4) => Sem::Nop,
        (armv7::Opcode::UDF, Op7::Imm32(1), 2) => Sem::Trap,
        _ => Sem::Other(format!("{text} ({len} bytes)")),
    }
}

/// The backend-independent description of one ISA under test.
struct Isa {
    sem: fn(usize, &[u8]) -> Sem,
    /// Fetch granule: the widest store a fetch cannot see torn.
    granule: usize,
    /// `LR` after an emulated call, for a site at `addr`.
    ret: fn(usize) -> usize,
}

const A64: Isa = Isa {
    sem: sem_a64,
    granule: 4,
    ret: |a| a + 4,
};
const T32: Isa = Isa {
    sem: sem_thumb,
    granule: 2,
    ret: |a| (a + 4) | 1,
};
const ARM: Isa = Isa {
    sem: sem_a32,
    granule: 4,
    ret: |a| a + 4,
};

const SP: usize = 0x7fff_0000;
const LR: usize = 0x5555_0000;

/// Model-check `plan` taking `old` to `new` at `addr`: every observable state
/// must decode to the old or the new instruction, or start with the backend's
/// trap; in every trap state the handler must resume the thread as the new
/// instruction would (or skip it), and once the trap is gone a late handler
/// must rewind. Returns the number of states checked.
fn check<B: Backend>(
    isa: &Isa,
    addr: usize,
    old: Insn,
    new: Insn,
    call_target: Option<usize>,
    plan: &Plan,
) -> Result<usize, String> {
    let states = observable_states(addr, old.bytes(), new.bytes(), plan, isa.granule)
        .map_err(|e: ModelError| format!("model rejects the plan: {e}"))?;
    let (sem_old, sem_new) = ((isa.sem)(addr, old.bytes()), (isa.sem)(addr, new.bytes()));
    assert_ne!(sem_old, sem_new, "a protocol between equal instructions");
    let site = InflightSite {
        addr,
        old,
        new,
        call_target,
    };
    let ctx = TrapContext {
        pc: addr,
        sp: SP,
        lr: LR,
        thumb: B::NAME == "thumb2",
    };
    for st in &states {
        let mem = st.bytes.clone();
        let read = move |a: usize, buf: &mut [u8]| {
            let off = a.checked_sub(addr).expect("read outside the site");
            buf.copy_from_slice(&mem[off..off + buf.len()]);
        };
        let is_site = |a: usize| a == addr;
        let here = format!(
            "phase {} state [{}]",
            st.phase,
            tracer_core::backend::hex(&st.bytes)
        );
        let sem = (isa.sem)(addr, &st.bytes);
        if sem == sem_old || sem == sem_new {
            // Executes as old or new. A handler for a trap taken in an
            // earlier state that runs only now must rewind (the trap is gone),
            // with the batch table still published or already retracted.
            if !B::TRAP.is_empty() && !st.bytes.starts_with(B::TRAP) {
                for table in [&[site][..], &[]] {
                    let got = B::on_trap(&ctx, table, &is_site, &read, TrapPolicy::Emulate);
                    let want = TrapOutcome::Resume {
                        pc: addr,
                        sp: SP,
                        lr: LR,
                        push: None,
                    };
                    if got != (want, TrapKind::Rewound) {
                        return Err(format!("{here}: late handler gave {got:?}"));
                    }
                }
            }
            continue;
        }
        if sem != Sem::Trap || B::TRAP.is_empty() || !st.bytes.starts_with(B::TRAP) {
            return Err(format!(
                "{here} decodes to {sem:?}, neither old {sem_old:?} nor new {sem_new:?} nor the trap"
            ));
        }
        // A trap state: the handler carries out the new instruction.
        let (want_emulate, kind) = match sem_new {
            Sem::Bl(target) => (
                TrapOutcome::Resume {
                    pc: target,
                    sp: SP,
                    lr: (isa.ret)(addr),
                    push: None,
                },
                TrapKind::Emulated,
            ),
            Sem::Nop => (skip(addr), TrapKind::Skipped),
            ref s => panic!("new instruction {s:?}"),
        };
        let got = B::on_trap(&ctx, &[site], &is_site, &read, TrapPolicy::Emulate);
        if got != (want_emulate, kind) {
            return Err(format!(
                "{here}: handler gave {got:?}, want {want_emulate:?}"
            ));
        }
        let got = B::on_trap(&ctx, &[site], &is_site, &read, TrapPolicy::Skip);
        if got != (skip(addr), TrapKind::Skipped) {
            return Err(format!("{here}: skipping handler gave {got:?}"));
        }
    }
    Ok(states.len())
}

fn skip(addr: usize) -> TrapOutcome {
    TrapOutcome::Resume {
        pc: addr + 4,
        sp: SP,
        lr: LR,
        push: None,
    }
}

/// Check both directions (enable and disable) of `B`'s own protocol.
fn check_both_ways<B: Backend>(isa: &Isa, addr: usize, target: usize) -> usize {
    let nop = B::encode_nop(addr);
    let bl = B::encode_call(addr, target).unwrap();
    let on = check::<B>(isa, addr, nop, bl, Some(target), &B::plan(addr, &nop, &bl))
        .unwrap_or_else(|e| panic!("{} enable at {addr:#x}: {e}", B::NAME));
    let off = check::<B>(isa, addr, bl, nop, None, &B::plan(addr, &bl, &nop))
        .unwrap_or_else(|e| panic!("{} disable at {addr:#x}: {e}", B::NAME));
    on + off
}

/// Deltas from a site to test `BL` at: near, far and at the limits, plus a
/// spread of pseudo-random ones (a fixed LCG, so failures reproduce).
fn deltas(lo: i64, hi: i64, step: i64) -> Vec<i64> {
    let mut d = vec![
        0,
        step,
        -step,
        0x1000,
        -0x1000,
        lo,
        lo + step,
        hi,
        hi - step,
    ];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..500 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let span = (hi - lo) / step + 1;
        d.push(lo + ((x >> 33) as i64 % span) * step);
    }
    d
}

fn at(addr: usize, delta: i64) -> usize {
    (addr as i64 + delta) as usize
}

// ---------------------------------------------------------------- AArch64

/// An AArch64 site high in a 64-bit address space (a 32-bit host, where these
/// tests also build, gets one that fits).
#[cfg(target_pointer_width = "64")]
const A64_SITE: usize = 0x0000_5555_0000_1004;
#[cfg(not(target_pointer_width = "64"))]
const A64_SITE: usize = 0x5000_1004;

#[test]
fn a64_bl_decodes_to_its_target() {
    let site = A64_SITE;
    for d in deltas(-(128 << 20), (128 << 20) - 4, 4) {
        let t = at(site, d);
        let insn = Aarch64::encode_call(site, t).unwrap();
        assert_eq!(sem_a64(site, insn.bytes()), Sem::Bl(t), "delta {d:#x}");
        assert_eq!(
            Aarch64::classify(site, insn.bytes()),
            Ok(PadState::Enabled { target: t })
        );
    }
}

#[test]
fn a64_out_of_range_and_misaligned() {
    let site = A64_SITE;
    for d in [128 << 20, -(128 << 20) - 4, 1 << 30, -(1 << 30)] {
        assert_eq!(
            Aarch64::encode_call(site, at(site, d)),
            Err(EncodeError::OutOfRange {
                from: site,
                to: at(site, d),
                reach: aarch64::BL_REACH
            }),
            "delta {d:#x}"
        );
    }
    assert_eq!(
        Aarch64::encode_call(site + 2, site),
        Err(EncodeError::Misaligned { addr: site + 2 })
    );
}

#[test]
fn a64_fixed_encodings_decode() {
    assert_eq!(sem_a64(0, &aarch64::NOP.to_le_bytes()), Sem::Nop);
    assert_eq!(
        sem_a64(0, &aarch64::MOV_X9_X30.to_le_bytes()),
        Sem::Other("mov x9, x30".into())
    );
    assert_eq!(
        sem_a64(0, &crate::AARCH64_BRK0.to_le_bytes()),
        Sem::Other("brk #0x0".into())
    );
    assert_eq!(
        Aarch64::classify(0, &crate::AARCH64_BRK0.to_le_bytes()),
        Ok(PadState::Trapped)
    );
    assert_eq!(aarch64::disasm(0, &aarch64::NOP.to_le_bytes()), "nop");
}

#[test]
fn a64_veneer_decodes() {
    let v = aarch64::encode_veneer(0x1000, A64_SITE + 0x1000).unwrap();
    assert_eq!(aarch64::disasm(0x1000, &v[0..4]), "ldr x16, $+0x8");
    assert_eq!(aarch64::disasm(0x1004, &v[4..8]), "br x16");
    assert_eq!(
        u64::from_le_bytes(v[8..].try_into().unwrap()),
        A64_SITE as u64 + 0x1000
    );
    assert_eq!(
        aarch64::encode_veneer(0x1004, 0x2000),
        Err(EncodeError::Misaligned { addr: 0x1004 })
    );
    assert_eq!(
        aarch64::encode_veneer(0x1000, 0x2002),
        Err(EncodeError::Misaligned { addr: 0x2002 })
    );
}

#[test]
fn a64_classify_round_trips_and_rejects_garbage() {
    let site = 0x40_1004;
    assert_eq!(
        Aarch64::classify(site, Aarch64::encode_nop(site).bytes()),
        Ok(PadState::Disabled)
    );
    for bad in [
        &aarch64::MOV_X9_X30.to_le_bytes()[..],
        &[0xfd, 0x7b, 0xbf, 0xa9],     // stp x29, x30, [sp, #-16]!
        &0x1400_0004u32.to_le_bytes(), // b (not bl)
        &[0x1f, 0x20, 0x03],           // short
    ] {
        let e: PadError = Aarch64::classify(site, bad).unwrap_err();
        assert_eq!((e.addr, &e.found[..]), (site, bad));
        assert!(e.to_string().contains("NOP"), "{e}");
    }
}

#[test]
fn a64_plan_is_one_atomic_store_of_listed_instructions() {
    let site = 0x40_1004;
    let nop = Aarch64::encode_nop(site);
    let bl = Aarch64::encode_call(site, site + 0x1000).unwrap();
    let p = Aarch64::plan(site, &nop, &bl);
    assert_eq!(
        p.phases,
        vec![vec![Write {
            offset: 0,
            bytes: bl.bytes().to_vec(),
            atomic: true
        }]]
    );
    for i in [nop, bl] {
        let w = u32::from_le_bytes(i.bytes().try_into().unwrap());
        assert!(aarch64::concurrent_modification_allowed(w));
    }
}

#[test]
fn a64_model_check_both_ways() {
    for site in [0x4000_1004usize, A64_SITE] {
        for d in [0x100, -0x100, (128 << 20) - 4, -(128 << 20)] {
            // Each direction: old, then new during the phase, then new.
            assert_eq!(check_both_ways::<Aarch64>(&A64, site, at(site, d)), 6);
        }
    }
}

#[test]
fn a64_entry_b_decodes_and_model_checks_both_ways() {
    use crate::Aarch64Entry;
    for site in [0x4000_1004usize, A64_SITE] {
        for d in [0x100i64, -0x100, (128 << 20) - 4, -(128 << 20)] {
            let t = at(site, d);
            let insn = Aarch64Entry::encode_call(site, t).unwrap();
            // yaxpeax prints the offset from the instruction.
            let want = if d < 0 {
                format!("b $-{:#x}", -d)
            } else {
                format!("b $+{d:#x}")
            };
            assert_eq!(sem_a64(site, insn.bytes()), Sem::Other(want));
            let w = u32::from_le_bytes(insn.bytes().try_into().unwrap());
            assert!(aarch64::concurrent_modification_allowed(w));
            assert_eq!(check_both_ways::<Aarch64Entry>(&A64, site, t), 6);
        }
    }
}

#[test]
fn a64_traps_are_never_ours() {
    // The protocol never traps: a BRK at a site belongs to someone else.
    let site = 0x40_1004;
    let nop = Aarch64::encode_nop(site);
    let table = [InflightSite {
        addr: site,
        old: nop,
        new: Aarch64::encode_call(site, site + 0x100).unwrap(),
        call_target: Some(site + 0x100),
    }];
    let brk = crate::AARCH64_BRK0.to_le_bytes();
    let read = |_: usize, b: &mut [u8]| b.copy_from_slice(&brk[..b.len()]);
    let ctx = TrapContext {
        pc: site,
        sp: SP,
        lr: LR,
        thumb: false,
    };
    assert_eq!(
        Aarch64::on_trap(&ctx, &table, &|_| true, &read, TrapPolicy::Emulate),
        (TrapOutcome::NotOurs, TrapKind::Foreign)
    );
}

#[test]
fn a64_byte_by_byte_store_fails_the_model() {
    // A plan of four 1-byte stores tears: the model must catch it.
    let site = 0x40_1004;
    let nop = Aarch64::encode_nop(site);
    let bl = Aarch64::encode_call(site, site + 0x100).unwrap();
    let plan = Plan {
        phases: vec![(0..4)
            .map(|i| Write {
                offset: i,
                bytes: vec![bl.bytes()[i]],
                atomic: true,
            })
            .collect()],
    };
    let e = check::<Aarch64>(&A64, site, nop, bl, Some(site + 0x100), &plan).unwrap_err();
    assert!(e.contains("neither old"), "{e}");
}

#[test]
fn a64_misaligned_site_fails_the_model() {
    let site = 0x40_1006;
    let nop = Insn::new(&aarch64::NOP.to_le_bytes());
    let bl = Insn::new(&aarch64::BL.to_le_bytes());
    let e =
        check::<Aarch64>(&A64, site, nop, bl, None, &Aarch64::plan(site, &nop, &bl)).unwrap_err();
    assert!(e.contains("not one aligned store"), "{e}");
}

// ---------------------------------------------------------------- Thumb-2

#[test]
fn thumb_bl_decodes_to_its_target() {
    for site in [0x0100_0000usize, 0x0100_0002] {
        for d in deltas(4 - (16 << 20), 4 + (16 << 20) - 2, 2) {
            let t = at(site, d);
            for given in [t, t | 1] {
                let insn = Thumb2::encode_call(site, given).unwrap();
                assert_eq!(sem_thumb(site, insn.bytes()), Sem::Bl(t), "delta {d:#x}");
                assert_eq!(
                    Thumb2::classify(site, insn.bytes()),
                    Ok(PadState::Enabled { target: t | 1 })
                );
            }
        }
    }
}

#[test]
fn thumb_out_of_range_and_misaligned() {
    let site = 0x0100_0002usize;
    for d in [4 + (16 << 20), 2 - (16 << 20), 1 << 30] {
        assert!(
            matches!(
                Thumb2::encode_call(site, at(site, d)),
                Err(EncodeError::OutOfRange { reach, .. }) if reach == thumb::BL_REACH
            ),
            "delta {d:#x}"
        );
    }
    assert_eq!(
        Thumb2::encode_call(site + 1, site),
        Err(EncodeError::Misaligned { addr: site + 1 })
    );
}

#[test]
fn thumb_fixed_encodings_decode() {
    assert_eq!(sem_thumb(0, &thumb::to_bytes(thumb::NOP_W)), Sem::Nop);
    assert_eq!(sem_thumb(0, &thumb::TRAP_BYTES), Sem::Trap);
    // The trap decodes as a 16-bit UDF whatever half-word follows it.
    assert_eq!(sem_thumb(0, &[0x01, 0xde, 0x00, 0x80]), Sem::Trap);
    assert_eq!(
        thumb::disasm(0, &thumb::MOV_IP_LR.to_le_bytes()),
        "mov ip, lr"
    );
    let t2 = crate::THUMB2_BREAKPOINT;
    let bytes = thumb::to_bytes([(t2 >> 16) as u16, t2 as u16]);
    // yaxpeax-arm reports the permanently undefined 32-bit space as an error.
    assert!(
        thumb::disasm(0, &bytes).contains("undefined encoding"),
        "{}",
        thumb::disasm(0, &bytes)
    );
    assert_eq!(Thumb2::classify(0, &bytes), Ok(PadState::Trapped));
    assert_eq!(
        Thumb2::classify(0, &[0x01, 0xde, 0x00, 0x80]),
        Ok(PadState::Trapped)
    );
}

#[test]
fn thumb_veneer_decodes() {
    let v = thumb::encode_veneer(0x1000, 0x0012_3456).unwrap();
    assert!(
        thumb::disasm(0x1000, &v[..4]).starts_with("ldr.w pc"),
        "{}",
        thumb::disasm(0x1000, &v[..4])
    );
    assert_eq!(u32::from_le_bytes(v[4..].try_into().unwrap()), 0x0012_3457);
    assert_eq!(
        thumb::encode_veneer(0x1002, 0x2000),
        Err(EncodeError::Misaligned { addr: 0x1002 })
    );
}

#[test]
fn thumb_classify_round_trips_and_rejects_garbage() {
    let site = 0x1_0002;
    assert_eq!(
        Thumb2::classify(site, Thumb2::encode_nop(site).bytes()),
        Ok(PadState::Disabled)
    );
    for bad in [
        &[0x00, 0xbf, 0x00, 0xbf][..], // two 16-bit NOPs
        &[0xfe, 0xde, 0x00, 0x80],     // udf #254 (SIGILL), not a trap of ours
        &[0xf0, 0xf7, 0x00, 0x80],     // a BL prefix torn with a NOP.W suffix
        &[0xaf, 0xf3],                 // short
    ] {
        let e = Thumb2::classify(site, bad).unwrap_err();
        assert_eq!((e.addr, &e.found[..]), (site, bad));
        assert!(e.to_string().contains("NOP.W"), "{e}");
    }
}

#[test]
fn thumb_plan_is_three_half_word_stores() {
    for site in [0x1_0000usize, 0x1_0002] {
        let nop = Thumb2::encode_nop(site);
        let bl = Thumb2::encode_call(site, 0x2_0001).unwrap();
        let p = Thumb2::plan(site, &nop, &bl);
        let b = bl.bytes();
        let w = |offset, bytes: &[u8]| {
            vec![Write {
                offset,
                bytes: bytes.to_vec(),
                atomic: true,
            }]
        };
        assert_eq!(
            p.phases,
            vec![w(0, &[0x01, 0xde]), w(2, &b[2..]), w(0, &b[..2])]
        );
    }
}

#[test]
fn thumb_model_check_both_ways_at_both_alignments() {
    for site in [0x0100_0000usize, 0x0100_0002] {
        for d in [0x101, -0xff, 4 + (16 << 20) - 2, 4 - (16 << 20)] {
            // Each direction, as (phase, bytes): (0, old), (0, trap + old
            // second half), (1, the same), (1, trap + new second half),
            // (2, the same), (2, new), (3, new).
            assert_eq!(check_both_ways::<Thumb2>(&T32, site, at(site, d)), 14);
        }
    }
}

#[test]
fn thumb_foreign_trap_is_not_ours() {
    let site = 0x1_0002;
    let other = 0x1_0100;
    let nop = Thumb2::encode_nop(site);
    let table = [InflightSite {
        addr: site,
        old: nop,
        new: Thumb2::encode_call(site, 0x2_0001).unwrap(),
        call_target: Some(0x2_0001),
    }];
    let read = |_: usize, b: &mut [u8]| b.copy_from_slice(&thumb::TRAP_BYTES[..b.len()]);
    let ctx = TrapContext {
        pc: other,
        sp: SP,
        lr: LR,
        thumb: true,
    };
    // A debugger's breakpoint elsewhere, with and without a batch in flight.
    for t in [&table[..], &[]] {
        assert_eq!(
            Thumb2::on_trap(&ctx, t, &|a| a == site, &read, TrapPolicy::Emulate),
            (TrapOutcome::NotOurs, TrapKind::Foreign)
        );
    }
    // A trap at a registered site with no batch in flight is not ours either:
    // someone else planted it.
    let ctx = TrapContext { pc: site, ..ctx };
    assert_eq!(
        Thumb2::on_trap(&ctx, &[], &|a| a == site, &read, TrapPolicy::Emulate),
        (TrapOutcome::NotOurs, TrapKind::Foreign)
    );
}

#[test]
fn thumb_emulated_call_returns_to_thumb() {
    let site = 0x1_0002;
    let nop = Thumb2::encode_nop(site);
    let s = InflightSite {
        addr: site,
        old: nop,
        new: Thumb2::encode_call(site, 0x2_0001).unwrap(),
        call_target: Some(0x2_0001),
    };
    let ctx = TrapContext {
        pc: site,
        sp: SP,
        lr: LR,
        thumb: true,
    };
    assert_eq!(
        Thumb2::resume_at(&ctx, &s, TrapPolicy::Emulate),
        TrapOutcome::Resume {
            pc: 0x2_0000,
            sp: SP,
            lr: 0x1_0007,
            push: None
        }
    );
}

/// The tempting wrong protocol: the whole 32-bit `BL` in one store.
fn one_word_store(new: &Insn) -> Plan {
    Plan {
        phases: vec![vec![Write {
            offset: 0,
            bytes: new.bytes().to_vec(),
            atomic: true,
        }]],
    }
}

#[test]
fn thumb_one_word_store_tears_at_half_word_fetch() {
    // addr % 4 == 0: one aligned store, but fetched half-word by half-word.
    let site = 0x1_0000;
    let nop = Thumb2::encode_nop(site);
    let bl = Thumb2::encode_call(site, 0x2_0001).unwrap();
    for (old, new, t) in [(nop, bl, Some(0x2_0001)), (bl, nop, None)] {
        let e = check::<Thumb2>(&T32, site, old, new, t, &one_word_store(&new)).unwrap_err();
        assert!(e.contains("neither old"), "{e}");
    }
}

#[test]
fn thumb_one_word_store_at_half_word_site_is_not_one_store() {
    // addr % 4 == 2: the instruction straddles two words.
    let site = 0x1_0002;
    let nop = Thumb2::encode_nop(site);
    let bl = Thumb2::encode_call(site, 0x2_0001).unwrap();
    let e = check::<Thumb2>(&T32, site, nop, bl, Some(0x2_0001), &one_word_store(&bl)).unwrap_err();
    assert!(e.contains("not one aligned store"), "{e}");
}

#[test]
fn thumb_wrong_order_fails_the_model() {
    // Trap, then the *first* half, then the second: removing the trap exposes
    // a new first half glued to the old second half.
    let site = 0x1_0002;
    let nop = Thumb2::encode_nop(site);
    let bl = Thumb2::encode_call(site, 0x2_0001).unwrap();
    let mut plan = Thumb2::plan(site, &nop, &bl);
    plan.phases.swap(1, 2);
    plan.phases[1][0].offset = 0;
    plan.phases[2][0].offset = 2;
    plan.phases[1][0].bytes = bl.bytes()[..2].to_vec();
    plan.phases[2][0].bytes = bl.bytes()[2..].to_vec();
    let e = check::<Thumb2>(&T32, site, nop, bl, Some(0x2_0001), &plan).unwrap_err();
    assert!(e.contains("phase 1"), "{e}");
}

#[test]
fn thumb_without_trap_fails_the_model() {
    // Second half, then first half, no trap: the middle state is torn.
    let site = 0x1_0000;
    let nop = Thumb2::encode_nop(site);
    let bl = Thumb2::encode_call(site, 0x2_0001).unwrap();
    let mut plan = Thumb2::plan(site, &nop, &bl);
    plan.phases.remove(0);
    let e = check::<Thumb2>(&T32, site, nop, bl, Some(0x2_0001), &plan).unwrap_err();
    assert!(e.contains("phase 0"), "{e}");
}

// ---------------------------------------------------------------- A32

#[test]
fn a32_bl_decodes_to_its_target() {
    let site = 0x0200_0000usize;
    for d in deltas(8 - (32 << 20), 8 + (32 << 20) - 4, 4) {
        let t = at(site, d);
        let insn = A32::encode_call(site, t).unwrap();
        assert_eq!(sem_a32(site, insn.bytes()), Sem::Bl(t), "delta {d:#x}");
        assert_eq!(
            A32::classify(site, insn.bytes()),
            Ok(PadState::Enabled { target: t })
        );
    }
}

#[test]
fn a32_out_of_range_and_misaligned() {
    let site = 0x0200_0000usize;
    for d in [8 + (32 << 20), 4 - (32 << 20), 1 << 30] {
        assert!(
            matches!(
                A32::encode_call(site, at(site, d)),
                Err(EncodeError::OutOfRange { reach, .. }) if reach == a32::BL_REACH
            ),
            "delta {d:#x}"
        );
    }
    // A Thumb target cannot be reached by BL from ARM state.
    assert_eq!(
        A32::encode_call(site, 0x0201_0001),
        Err(EncodeError::Misaligned { addr: 0x0201_0001 })
    );
}

#[test]
fn a32_fixed_encodings_decode() {
    assert_eq!(sem_a32(0, &a32::NOP.to_le_bytes()), Sem::Nop);
    assert_eq!(sem_a32(0, &a32::MOV_R0_R0.to_le_bytes()), Sem::Nop);
    assert_eq!(a32::disasm(0, &a32::MOV_IP_LR.to_le_bytes()), "mov ip, lr");
    // yaxpeax-arm 0.3 does not decode the A32 permanently undefined space
    // (llvm-mc: `udf #16`); it must at least not read it as anything else.
    let udf = a32::disasm(0, &crate::A32_BREAKPOINT.to_le_bytes());
    assert!(udf.starts_with("<undecodable"), "{udf}");
    let v = a32::encode_veneer(0x1000, 0x0012_3457).unwrap();
    assert_eq!(a32::disasm(0x1000, &v[..4]), "ldr pc, [pc, -0x4]");
    assert_eq!(u32::from_le_bytes(v[4..].try_into().unwrap()), 0x0012_3457);
}

#[test]
fn a32_classify_round_trips_and_rejects_garbage() {
    let site = 0x8000;
    assert_eq!(
        A32::classify(site, A32::encode_nop(site).bytes()),
        Ok(PadState::Disabled)
    );
    assert_eq!(
        A32::classify(site, &a32::MOV_R0_R0.to_le_bytes()),
        Ok(PadState::Disabled)
    );
    for bad in [
        &a32::MOV_IP_LR.to_le_bytes()[..],
        &0xe52d_e004u32.to_le_bytes(), // push {lr}
        &0xfa00_0000u32.to_le_bytes(), // blx imm
        &[0x00, 0xf0, 0x20],           // short
    ] {
        let e = A32::classify(site, bad).unwrap_err();
        assert_eq!((e.addr, &e.found[..]), (site, bad));
        assert!(e.to_string().contains("BL"), "{e}");
    }
}

#[test]
fn a32_plan_is_one_atomic_store_of_listed_instructions() {
    let site = 0x8000;
    let nop = A32::encode_nop(site);
    let bl = A32::encode_call(site, 0x10_0000).unwrap();
    assert_eq!(A32::plan(site, &nop, &bl), one_word_store(&bl));
    for i in [nop, bl] {
        let w = u32::from_le_bytes(i.bytes().try_into().unwrap());
        assert!(a32::concurrent_modification_allowed(w));
    }
    // `MOV R0, R0` is recognised but not on the list: see the a32 module docs.
    assert!(!a32::concurrent_modification_allowed(a32::MOV_R0_R0));
}

#[test]
fn a32_model_check_both_ways() {
    let site = 0x0200_0000usize;
    for d in [0x100, -0x100, 8 + (32 << 20) - 4, 8 - (32 << 20)] {
        assert_eq!(check_both_ways::<A32>(&ARM, site, at(site, d)), 6);
    }
    // From the old toolchains' no-op too.
    let old = Insn::new(&a32::MOV_R0_R0.to_le_bytes());
    let bl = A32::encode_call(site, site + 0x100).unwrap();
    check::<A32>(
        &ARM,
        site,
        old,
        bl,
        Some(site + 0x100),
        &A32::plan(site, &old, &bl),
    )
    .unwrap();
}

#[test]
fn a32_traps_are_never_ours() {
    let site = 0x8000;
    let brk = crate::A32_BREAKPOINT.to_le_bytes();
    let read = |_: usize, b: &mut [u8]| b.copy_from_slice(&brk[..b.len()]);
    let ctx = TrapContext {
        pc: site,
        sp: SP,
        lr: LR,
        thumb: false,
    };
    assert_eq!(
        A32::on_trap(&ctx, &[], &|_| true, &read, TrapPolicy::Emulate),
        (TrapOutcome::NotOurs, TrapKind::Foreign)
    );
}

#[test]
fn a32_half_word_stores_fail_the_model() {
    let site = 0x8000;
    let nop = A32::encode_nop(site);
    let bl = A32::encode_call(site, 0x10_0000).unwrap();
    let plan = Plan {
        phases: vec![vec![
            Write {
                offset: 0,
                bytes: bl.bytes()[..2].to_vec(),
                atomic: true,
            },
            Write {
                offset: 2,
                bytes: bl.bytes()[2..].to_vec(),
                atomic: true,
            },
        ]],
    };
    let e = check::<A32>(&ARM, site, nop, bl, Some(0x10_0000), &plan).unwrap_err();
    assert!(e.contains("neither old"), "{e}");
}
