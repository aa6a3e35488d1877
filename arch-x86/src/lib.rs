//! The x86-64 backend of `tracer`.
//!
//! - [`X86_64`] implements [`tracer_core::Backend`]: a pad is one 5-byte NOP
//!   (`0f 1f 44 00 xx`); enabled, it is a `call rel32` to the site's stub; the
//!   protocol is the kernel's int3 batch protocol (seeds 000 and 002).
//! - [`pad`] holds the macros that `#[traceable]` expands to: the pad itself,
//!   its stub and its record in the `__tracer_sites` linker section.
//! - [`trampoline`] holds the entry and exit trampolines the stubs jump to;
//!   [`trampoline_args`] their capturing variants (arguments, return values).
//!
//! Pads, stubs and trampolines only exist when compiling for x86-64; the
//! encoders and the protocol are plain functions over bytes, tested anywhere.
#![deny(missing_docs)]

pub mod pad;
pub mod trampoline;
pub mod trampoline_args;

use iced_x86::{Code, Decoder, DecoderOptions, Mnemonic};
use tracer_core::backend::{
    Backend, EmitWrite, EncodeError, InflightSite, Insn, PadError, PadState, Plan, TrapContext,
    TrapOutcome, TrapPolicy, Write,
};

/// `int3`.
pub const INT3: u8 = 0xcc;
/// The 5-byte NOP `#[traceable]` emits: `nop dword ptr [rax+rax*1+0]`.
pub const NOP5: [u8; 5] = [0x0f, 0x1f, 0x44, 0x00, 0x00];
/// Length of a site.
pub const SITE_LEN: usize = 5;

/// The x86-64 backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct X86_64;

fn decode(addr: usize, bytes: &[u8]) -> iced_x86::Instruction {
    let mut d = Decoder::with_ip(64, bytes, addr as u64, DecoderOptions::NONE);
    d.decode()
}

impl Backend for X86_64 {
    const NAME: &'static str = "x86-64";
    const SITE_LEN: usize = SITE_LEN;
    const TRAP: &'static [u8] = &[INT3];

    fn classify(addr: usize, bytes: &[u8]) -> Result<PadState, PadError> {
        let err = || PadError {
            addr,
            found: bytes.to_vec(),
            expected: "a 5-byte NOP (0f 1f 44 00 xx) or a call rel32 (e8 ..)".into(),
        };
        if bytes.len() < SITE_LEN {
            return Err(err());
        }
        if bytes[0] == INT3 {
            return Ok(PadState::Trapped);
        }
        // The two forms every batch meets, without the decoder (the same
        // answers as its: `0f 1f 44 00 xx` is a 5-byte NOP, `e8` a call rel32).
        if bytes[..4] == NOP5[..4] {
            return Ok(PadState::Disabled);
        }
        if bytes[0] == 0xe8 || bytes[0] == 0xe9 {
            let rel = i32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
            return Ok(PadState::Enabled {
                target: (addr as u64)
                    .wrapping_add(SITE_LEN as u64)
                    .wrapping_add(rel as i64 as u64) as usize,
            });
        }
        let insn = decode(addr, &bytes[..SITE_LEN]);
        if insn.len() != SITE_LEN {
            return Err(err());
        }
        match insn.code() {
            Code::Call_rel32_64 | Code::Jmp_rel32_64 => Ok(PadState::Enabled {
                target: insn.near_branch_target() as usize,
            }),
            _ if insn.mnemonic() == Mnemonic::Nop => Ok(PadState::Disabled),
            _ => Err(err()),
        }
    }

    fn encode_call(addr: usize, target: usize) -> Result<Insn, EncodeError> {
        let rel = (target as i128) - (addr as i128 + SITE_LEN as i128);
        let rel = i32::try_from(rel).map_err(|_| EncodeError::OutOfRange {
            from: addr,
            to: target,
            reach: 1 << 31,
        })?;
        let r = rel.to_le_bytes();
        Ok(Insn::new(&[0xe8, r[0], r[1], r[2], r[3]]))
    }

    /// `jmp rel32` (`e9`): an enabled compiler pad jumps to its entry stub,
    /// which pushes the pad's return address itself (see
    /// [`pad::encode_entry_stub`]).
    fn encode_jump(addr: usize, target: usize) -> Result<Insn, EncodeError> {
        let mut i = Self::encode_call(addr, target)?.bytes().to_vec();
        i[0] = 0xe9;
        Ok(Insn::new(&i))
    }

    fn encode_nop(_addr: usize) -> Insn {
        Insn::new(&NOP5)
    }

    /// The int3 protocol (kernel `text_poke_bp_batch`): trap byte on byte 0 →
    /// sync → bytes 1..5 → sync → real byte 0 → sync. When the tails are
    /// equal the middle phase is empty (the engine then skips its sync if no
    /// site of the batch writes in it).
    fn plan(addr: usize, old: &Insn, new: &Insn) -> Plan {
        let mut phases = vec![Vec::new(), Vec::new(), Vec::new()];
        Self::plan_each(addr, old, new, &mut |phase, offset, bytes, atomic| {
            phases[phase].push(Write {
                offset,
                bytes: bytes.to_vec(),
                atomic,
            })
        });
        Plan { phases }
    }

    fn plan_each(_addr: usize, old: &Insn, new: &Insn, emit: &mut EmitWrite<'_>) {
        let (o, n) = (old.bytes(), new.bytes());
        emit(0, 0, &[INT3], true);
        // (`iter().eq` rather than `!=` on the slices: no `memcmp` call.)
        if !o[1..].iter().eq(n[1..].iter()) {
            emit(1, 1, &n[1..], false);
        }
        emit(2, 0, &n[..1], true);
    }

    /// `int3` reports RIP one past the trap byte.
    fn trap_site(pc: usize) -> usize {
        pc.wrapping_sub(1)
    }

    /// Emulate the new instruction: CALL pushes `site + 5` and jumps to the
    /// target, JMP only jumps; a NOP (or [`TrapPolicy::Skip`]) continues at
    /// `site + 5`.
    fn resume_at(ctx: &TrapContext, site: &InflightSite, policy: TrapPolicy) -> TrapOutcome {
        let next = site.addr + SITE_LEN;
        match (policy, site.call_target) {
            // A jump (`e9`): no return address.
            (TrapPolicy::Emulate, Some(target)) if site.new.bytes().first() == Some(&0xe9) => {
                TrapOutcome::Resume {
                    pc: target,
                    sp: ctx.sp,
                    lr: ctx.lr,
                    push: None,
                }
            }
            (TrapPolicy::Emulate, Some(target)) => TrapOutcome::Resume {
                pc: target,
                sp: ctx.sp - 8,
                lr: ctx.lr,
                push: Some(next),
            },
            _ => TrapOutcome::Resume {
                pc: next,
                sp: ctx.sp,
                lr: ctx.lr,
                push: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_core::backend::TrapKind;
    use tracer_core::model::observable_states;

    const SITE: usize = 0x5555_0000_1003;

    #[test]
    fn call_encodings_decode_to_calls_to_the_target() {
        for target in [
            SITE + 5,
            SITE + 0x1234,
            SITE - 0x40,
            SITE + 5 + 0x7fff_ffff,
            SITE + 5 - 0x8000_0000,
        ] {
            let i = X86_64::encode_call(SITE, target).unwrap();
            let d = decode(SITE, i.bytes());
            assert_eq!(d.mnemonic(), Mnemonic::Call);
            assert_eq!(d.len(), 5);
            assert_eq!(d.near_branch_target() as usize, target);
            assert_eq!(
                X86_64::classify(SITE, i.bytes()),
                Ok(PadState::Enabled { target })
            );
        }
        assert!(matches!(
            X86_64::encode_call(SITE, SITE + 5 + 0x8000_0000),
            Err(EncodeError::OutOfRange { .. })
        ));
        assert!(X86_64::encode_call(SITE, SITE - 0x9000_0000).is_err());
    }

    #[test]
    fn nop_forms_classify_as_disabled() {
        let n = decode(SITE, &NOP5);
        assert_eq!(n.mnemonic(), Mnemonic::Nop);
        assert_eq!(n.len(), 5);
        // rustc/clang's form and ours.
        for nop in [NOP5, [0x0f, 0x1f, 0x44, 0x00, 0x08]] {
            assert_eq!(X86_64::classify(SITE, &nop), Ok(PadState::Disabled));
        }
        // GCC's five one-byte NOPs are not a pad this backend can swap live.
        assert!(X86_64::classify(SITE, &[0x90; 5]).is_err());
        // A debugger's breakpoint.
        assert_eq!(
            X86_64::classify(SITE, &[0xcc, 0x1f, 0x44, 0, 0]),
            Ok(PadState::Trapped)
        );
        let e = X86_64::classify(SITE, &[0x48, 0x89, 0xe5, 0x90, 0x90]).unwrap_err();
        assert!(e.to_string().contains("48 89 e5"), "{e}");
    }

    /// Every state a concurrent fetch can see (byte granularity: x86 promises
    /// nothing finer for cross-modifying code) is the old instruction, the new
    /// one, or starts with int3; and the handler does the right thing in each
    /// trap state.
    #[test]
    fn every_intermediate_state_is_old_new_or_trap() {
        let call = X86_64::encode_call(SITE, SITE + 0x100).unwrap();
        let nop = Insn::new(&[0x0f, 0x1f, 0x44, 0x00, 0x08]);
        for (old, new, target) in [(nop, call, Some(SITE + 0x100)), (call, nop, None)] {
            let plan = X86_64::plan(SITE, &old, &new);
            assert_eq!(plan.phases.len(), 3);
            assert!(plan.phases.iter().all(|p| p.len() == 1), "{plan:?}");
            let states = observable_states(SITE, old.bytes(), new.bytes(), &plan, 1).unwrap();
            assert!(states.len() >= 8, "{} states", states.len());
            let inflight = [InflightSite {
                addr: SITE,
                old,
                new,
                call_target: target,
            }];
            let ctx = TrapContext {
                pc: SITE + 1,
                sp: 0x7fff_0000,
                lr: 0,
                thumb: false,
            };
            for s in &states {
                let b = &s.bytes;
                if b[0] == INT3 {
                    let read =
                        |a: usize, buf: &mut [u8]| buf.copy_from_slice(&b[a - SITE..][..buf.len()]);
                    let (out, kind) = X86_64::on_trap(
                        &ctx,
                        &inflight,
                        &|a| a == SITE,
                        &read,
                        TrapPolicy::Emulate,
                    );
                    match target {
                        Some(t) => {
                            assert_eq!(kind, TrapKind::Emulated);
                            assert_eq!(
                                out,
                                TrapOutcome::Resume {
                                    pc: t,
                                    sp: ctx.sp - 8,
                                    lr: 0,
                                    push: Some(SITE + 5)
                                }
                            );
                        }
                        None => assert_eq!(
                            out,
                            TrapOutcome::Resume {
                                pc: SITE + 5,
                                sp: ctx.sp,
                                lr: 0,
                                push: None
                            }
                        ),
                    }
                    let (out, kind) =
                        X86_64::on_trap(&ctx, &inflight, &|a| a == SITE, &read, TrapPolicy::Skip);
                    assert_eq!(kind, TrapKind::Skipped);
                    assert!(
                        matches!(out, TrapOutcome::Resume { pc, push: None, .. } if pc == SITE + 5)
                    );
                } else {
                    assert!(
                        b[..] == *old.bytes() || b[..] == *new.bytes(),
                        "phase {}: torn state [{}] executable",
                        s.phase,
                        tracer_core::backend::hex(b)
                    );
                    // A late handler (trap already gone) rewinds, in flight or not.
                    let read =
                        |a: usize, buf: &mut [u8]| buf.copy_from_slice(&b[a - SITE..][..buf.len()]);
                    for table in [&inflight[..], &[]] {
                        let (out, kind) = X86_64::on_trap(
                            &ctx,
                            table,
                            &|a| a == SITE,
                            &read,
                            TrapPolicy::Emulate,
                        );
                        assert_eq!(kind, TrapKind::Rewound);
                        assert!(matches!(out, TrapOutcome::Resume { pc, .. } if pc == SITE));
                    }
                }
            }
        }
    }

    #[test]
    fn a_trap_that_is_not_ours_is_passed_on() {
        let ctx = TrapContext {
            pc: SITE + 0x41,
            sp: 0,
            lr: 0,
            thumb: false,
        };
        let read = |_: usize, b: &mut [u8]| b.fill(INT3);
        let (out, kind) = X86_64::on_trap(&ctx, &[], &|_| false, &read, TrapPolicy::Emulate);
        assert_eq!((out, kind), (TrapOutcome::NotOurs, TrapKind::Foreign));
        // A registered site that holds an int3 nobody in flight planted: a debugger's.
        let ctx = TrapContext {
            pc: SITE + 1,
            ..ctx
        };
        let (out, _) = X86_64::on_trap(&ctx, &[], &|a| a == SITE, &read, TrapPolicy::Emulate);
        assert_eq!(out, TrapOutcome::NotOurs);
    }

    /// Writing the 5 bytes in one go, without the trap, lets a fetch see a
    /// torn instruction: the model check must catch it.
    #[test]
    fn a_protocol_without_the_trap_fails_the_model_check() {
        let call = X86_64::encode_call(SITE, SITE + 0x100).unwrap();
        let plan = Plan {
            phases: vec![vec![Write {
                offset: 0,
                bytes: call.bytes().to_vec(),
                atomic: false,
            }]],
        };
        let states = observable_states(SITE, &NOP5, call.bytes(), &plan, 1).unwrap();
        let torn = states
            .iter()
            .filter(|s| s.bytes[0] != INT3 && s.bytes != NOP5 && s.bytes[..] != *call.bytes())
            .count();
        assert!(torn > 0);
    }
}
