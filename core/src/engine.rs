//! The batch patch engine.
//!
//! A batch is a set of sites that change together. For each site the engine
//! reads the current bytes and has the backend classify them (the kernel's
//! `ftrace_verify_code`): a site already in the wanted state is left alone, a
//! site whose bytes are not what the tracer put there is skipped and reported,
//! and the rest get the backend's protocol. The per-site protocols are merged
//! phase by phase, so a batch costs one sync per phase whatever its size
//! (x86-64: three), as in the kernel's `text_poke_bp_batch`.
//!
//! While a batch is in flight the trap handler knows every site in it (the
//! table is published before the first write and retracted after the last
//! sync, waiting for handlers still using it).

use crate::backend::{Backend, EncodeError, InflightSite, Insn, PadError, PadState, MAX_INSN};
use std::fmt;
use std::sync::Arc;

/// What the engine needs from the live system. The runtime implements it with
/// real text writes and membarrier; tests implement it over plain memory.
pub trait TextWriter {
    /// Read the bytes at `addr` as they are now.
    fn read(&self, addr: usize, buf: &mut [u8]);
    /// Prepare to write inside the given `[start, end)` ranges (for example,
    /// make their pages writable). On error nothing has been written and
    /// nothing stays changed.
    /// The ranges come sorted by start.
    fn begin(&mut self, ranges: &mut dyn Iterator<Item = (usize, usize)>)
        -> Result<(), WriteError>;
    /// Store `bytes` at `addr`; as one single-copy-atomic store if `atomic`.
    fn write(&mut self, addr: usize, bytes: &[u8], atomic: bool);
    /// Make every thread of the process see all writes so far before it
    /// executes any of the patched code again.
    fn sync(&mut self);
    /// Publish the table of in-flight sites to the trap handler (`Some`;
    /// sorted by address, no address twice), or retract it (`None`) and
    /// wait until no handler still reads the old one.
    fn publish(&mut self, table: Option<Arc<Vec<InflightSite>>>);
    /// Undo what `begin` did (restore the pages' protection exactly).
    fn end(&mut self) -> Result<(), WriteError>;
}

/// The system refused a text write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteError {
    /// What failed, with the address and the system's reason.
    pub message: String,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WriteError {}

/// What a site should become.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// A call to `target`.
    Call {
        /// The trampoline or stub the call goes to.
        target: usize,
    },
    /// A jump to `target` ([`Backend::encode_jump`]): the stub pushes what
    /// the call would have.
    Jump {
        /// The stub the jump goes to.
        target: usize,
    },
    /// Its original no-op, taken back from a call to `from`.
    Nop {
        /// The pad's bytes as the compiler left them.
        original: Insn,
        /// The call target the tracer put there; any other call is not ours.
        from: usize,
    },
}

/// One site of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiteRequest {
    /// The site's address.
    pub addr: usize,
    /// What it should become.
    pub want: Want,
}

/// Why a site of a batch was left as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The bytes are not a pad of this backend any more.
    Unexpected(PadError),
    /// A trap sits there that is not part of a batch of ours (a debugger's
    /// breakpoint, another patcher).
    Trapped,
    /// The pad calls something the tracer did not put there.
    ForeignCall {
        /// Where the call found there goes.
        target: usize,
    },
    /// The call cannot be encoded at this site.
    Encode(EncodeError),
    /// No stub for the site's call could be placed (the reason).
    NoStub(String),
    /// The site can never be written (the reason: how it was built).
    Unusable(String),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Unexpected(e) => write!(f, "{e}"),
            SkipReason::Trapped => f.write_str("a breakpoint that is not the tracer's sits there"),
            SkipReason::NoStub(m) | SkipReason::Unusable(m) => f.write_str(m),
            SkipReason::ForeignCall { target } => {
                write!(
                    f,
                    "the pad calls {target:#x}, which the tracer did not put there"
                )
            }
            SkipReason::Encode(e) => write!(f, "{e}"),
        }
    }
}

/// A site that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The site's address.
    pub addr: usize,
    /// Why it was left alone.
    pub reason: SkipReason,
}

/// What a batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Sites that now hold the wanted instruction and did not before.
    pub changed: Vec<usize>,
    /// Sites that already held it (nothing was written).
    pub unchanged: Vec<usize>,
    /// Sites left alone, with the reason.
    pub skipped: Vec<Skipped>,
    /// How many syncs the batch did.
    pub syncs: usize,
    /// Set when the writes all completed but the text protection could not be
    /// restored afterwards.
    pub restore_error: Option<WriteError>,
}

/// Run one batch with backend `B` through `writer`.
///
/// Returns an error only when the system refused to make the text writable;
/// then nothing was written. Sites are otherwise changed or skipped one by one,
/// and each is left fully old or fully new.
pub fn apply_batch<B: Backend, W: TextWriter>(
    writer: &mut W,
    requests: &[SiteRequest],
) -> Result<BatchReport, WriteError> {
    let mut report = BatchReport::default();
    let mut prepared: Vec<InflightSite> = Vec::with_capacity(requests.len());
    let mut site = [0u8; MAX_INSN];
    let buf = &mut site[..B::SITE_LEN];
    for req in requests {
        writer.read(req.addr, buf);
        let old = Insn::new(buf);
        let state = match B::classify(req.addr, buf) {
            Ok(s) => s,
            Err(e) => {
                report.skipped.push(Skipped {
                    addr: req.addr,
                    reason: SkipReason::Unexpected(e),
                });
                continue;
            }
        };
        let (new, call_target) = match (req.want, state) {
            (_, PadState::Trapped) => {
                report.skipped.push(Skipped {
                    addr: req.addr,
                    reason: SkipReason::Trapped,
                });
                continue;
            }
            (Want::Call { target } | Want::Jump { target }, PadState::Enabled { target: t })
                if t == target =>
            {
                report.unchanged.push(req.addr);
                continue;
            }
            (Want::Call { .. } | Want::Jump { .. }, PadState::Enabled { target: t })
            | (Want::Nop { .. }, PadState::Enabled { target: t }) => {
                if let Want::Nop { original, from } = req.want {
                    if t == from {
                        (original, None)
                    } else {
                        report.skipped.push(Skipped {
                            addr: req.addr,
                            reason: SkipReason::ForeignCall { target: t },
                        });
                        continue;
                    }
                } else {
                    report.skipped.push(Skipped {
                        addr: req.addr,
                        reason: SkipReason::ForeignCall { target: t },
                    });
                    continue;
                }
            }
            (Want::Nop { .. }, PadState::Disabled) => {
                report.unchanged.push(req.addr);
                continue;
            }
            (Want::Call { target }, PadState::Disabled) => match B::encode_call(req.addr, target) {
                Ok(insn) => (insn, Some(target)),
                Err(e) => {
                    report.skipped.push(Skipped {
                        addr: req.addr,
                        reason: SkipReason::Encode(e),
                    });
                    continue;
                }
            },
            (Want::Jump { target }, PadState::Disabled) => match B::encode_jump(req.addr, target) {
                Ok(insn) => (insn, Some(target)),
                Err(e) => {
                    report.skipped.push(Skipped {
                        addr: req.addr,
                        reason: SkipReason::Encode(e),
                    });
                    continue;
                }
            },
        };
        prepared.push(InflightSite {
            addr: req.addr,
            old,
            new,
            call_target,
        });
    }
    if prepared.is_empty() {
        return Ok(report);
    }
    prepared.sort_by_key(|p| p.addr);
    prepared.dedup_by_key(|p| p.addr);

    writer.begin(&mut prepared.iter().map(|p| (p.addr, p.addr + B::SITE_LEN)))?;
    // The trap handler and the writes below share the one table (sorted by
    // address, no duplicates).
    let table = Arc::new(prepared);
    writer.publish(Some(Arc::clone(&table)));
    write_phases::<B, W>(writer, &table, &mut report);
    writer.publish(None);
    report.restore_error = writer.end().err();
    Ok(report)
}

/// Write the batch's protocol, phase by phase, with one sync after each
/// phase that wrote anything: every site's plan (`B::plan_each`) is asked
/// again in each pass and only that phase's writes are made, so sites stay
/// in address order within a phase and each site's writes in its plan's
/// order, as if the plans had been merged and sorted by phase; nothing is
/// allocated per site. The sites are `report.changed` (filled here from
/// `sites`, in address order).
fn write_phases<B: Backend, W: TextWriter>(
    writer: &mut W,
    sites: &[InflightSite],
    report: &mut BatchReport,
) {
    let mut phase = 0;
    loop {
        let mut wrote = false;
        let mut later = false;
        for p in sites {
            B::plan_each(p.addr, &p.old, &p.new, &mut |ph, offset, bytes, atomic| {
                if ph == phase {
                    writer.write(p.addr + offset, bytes, atomic);
                    wrote = true;
                } else if ph > phase {
                    later = true;
                }
            });
        }
        if wrote {
            writer.sync();
            report.syncs += 1;
        }
        if !later {
            break;
        }
        phase += 1;
    }
    report.changed = sites.iter().map(|p| p.addr).collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Plan, TrapContext, TrapOutcome, TrapPolicy, Write};
    use std::collections::BTreeMap;

    /// A toy backend: 2-byte sites, NOP = 00 00, CALL = C0 rel, trap = FF.
    struct Toy;
    impl Backend for Toy {
        const NAME: &'static str = "toy";
        const SITE_LEN: usize = 2;
        const TRAP: &'static [u8] = &[0xff];
        fn classify(addr: usize, b: &[u8]) -> Result<PadState, PadError> {
            match b {
                [0, 0] => Ok(PadState::Disabled),
                [0xc0, t] => Ok(PadState::Enabled {
                    target: addr + *t as usize,
                }),
                [0xff, _] => Ok(PadState::Trapped),
                _ => Err(PadError {
                    addr,
                    found: b.to_vec(),
                    expected: "toy".into(),
                }),
            }
        }
        fn encode_call(addr: usize, target: usize) -> Result<Insn, EncodeError> {
            Ok(Insn::new(&[0xc0, (target - addr) as u8]))
        }
        fn encode_nop(_: usize) -> Insn {
            Insn::new(&[0, 0])
        }
        fn plan(_: usize, _: &Insn, new: &Insn) -> Plan {
            let b = new.bytes();
            Plan {
                phases: vec![
                    vec![Write {
                        offset: 0,
                        bytes: vec![0xff],
                        atomic: true,
                    }],
                    vec![Write {
                        offset: 1,
                        bytes: vec![b[1]],
                        atomic: true,
                    }],
                    vec![Write {
                        offset: 0,
                        bytes: vec![b[0]],
                        atomic: true,
                    }],
                ],
            }
        }
        fn trap_site(pc: usize) -> usize {
            pc
        }
        fn resume_at(ctx: &TrapContext, s: &InflightSite, _: TrapPolicy) -> TrapOutcome {
            TrapOutcome::Resume {
                pc: s.addr + 2,
                sp: ctx.sp,
                lr: ctx.lr,
                push: None,
            }
        }
    }

    #[derive(Default)]
    struct Mem {
        bytes: BTreeMap<usize, u8>,
        log: Vec<String>,
        refuse: bool,
    }
    impl TextWriter for Mem {
        fn read(&self, addr: usize, buf: &mut [u8]) {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = self.bytes[&(addr + i)];
            }
        }
        fn begin(&mut self, r: &mut dyn Iterator<Item = (usize, usize)>) -> Result<(), WriteError> {
            if self.refuse {
                return Err(WriteError {
                    message: "refused".into(),
                });
            }
            self.log.push(format!("begin {}", r.count()));
            Ok(())
        }
        fn write(&mut self, addr: usize, bytes: &[u8], _: bool) {
            for (i, b) in bytes.iter().enumerate() {
                self.bytes.insert(addr + i, *b);
            }
            self.log.push(format!("write {addr}"));
        }
        fn sync(&mut self) {
            self.log.push("sync".into());
        }
        fn publish(&mut self, t: Option<Arc<Vec<InflightSite>>>) {
            self.log
                .push(format!("publish {}", t.map_or(0, |t| t.len())));
        }
        fn end(&mut self) -> Result<(), WriteError> {
            self.log.push("end".into());
            Ok(())
        }
    }

    fn mem(sites: &[(usize, [u8; 2])]) -> Mem {
        let mut m = Mem::default();
        for (a, b) in sites {
            m.bytes.insert(*a, b[0]);
            m.bytes.insert(*a + 1, b[1]);
        }
        m
    }

    #[test]
    fn three_syncs_per_batch_whatever_its_size() {
        let sites: Vec<(usize, [u8; 2])> = (0..100).map(|i| (i * 16, [0, 0])).collect();
        let mut m = mem(&sites);
        let reqs: Vec<SiteRequest> = sites
            .iter()
            .map(|(a, _)| SiteRequest {
                addr: *a,
                want: Want::Call { target: a + 8 },
            })
            .collect();
        let r = apply_batch::<Toy, _>(&mut m, &reqs).unwrap();
        assert_eq!(r.changed.len(), 100);
        assert_eq!(r.syncs, 3);
        assert_eq!(m.log.iter().filter(|l| *l == "sync").count(), 3);
        // Every trap is written before the first sync.
        let first_sync = m.log.iter().position(|l| l == "sync").unwrap();
        assert_eq!(first_sync, 2 + 100);
        for (a, _) in &sites {
            assert_eq!(m.bytes[a], 0xc0);
            assert_eq!(m.bytes[&(a + 1)], 8);
        }
    }

    #[test]
    fn already_enabled_writes_nothing() {
        let mut m = mem(&[(0, [0xc0, 8])]);
        let r = apply_batch::<Toy, _>(
            &mut m,
            &[SiteRequest {
                addr: 0,
                want: Want::Call { target: 8 },
            }],
        )
        .unwrap();
        assert_eq!(r.unchanged, vec![0]);
        assert!(m.log.is_empty(), "{:?}", m.log);
    }

    #[test]
    fn changed_and_foreign_sites_are_skipped_rest_goes_through() {
        let mut m = mem(&[
            (0, [0x12, 0x34]),
            (16, [0xff, 0]),
            (32, [0xc0, 3]),
            (48, [0, 0]),
        ]);
        let reqs: Vec<SiteRequest> = [0, 16, 32, 48]
            .iter()
            .map(|a| SiteRequest {
                addr: *a,
                want: Want::Call { target: a + 8 },
            })
            .collect();
        let r = apply_batch::<Toy, _>(&mut m, &reqs).unwrap();
        assert_eq!(r.changed, vec![48]);
        assert_eq!(r.skipped.len(), 3);
        assert!(matches!(r.skipped[0].reason, SkipReason::Unexpected(_)));
        assert_eq!(r.skipped[1].reason, SkipReason::Trapped);
        assert_eq!(r.skipped[2].reason, SkipReason::ForeignCall { target: 35 });
        assert_eq!(m.bytes[&0], 0x12, "a skipped site is never written");
    }

    #[test]
    fn refused_write_leaves_everything_old() {
        let mut m = mem(&[(0, [0, 0]), (16, [0, 0])]);
        m.refuse = true;
        let reqs = [0usize, 16].map(|a| SiteRequest {
            addr: a,
            want: Want::Call { target: a + 8 },
        });
        let e = apply_batch::<Toy, _>(&mut m, &reqs).unwrap_err();
        assert_eq!(e.message, "refused");
        assert_eq!(m.bytes[&0], 0);
        assert_eq!(m.bytes[&16], 0);
        assert!(m.log.is_empty());
    }

    #[test]
    fn disable_restores_original_and_refuses_foreign_calls() {
        let mut m = mem(&[(0, [0xc0, 8]), (16, [0xc0, 9])]);
        let orig = Insn::new(&[0, 0]);
        let reqs = [0usize, 16].map(|a| SiteRequest {
            addr: a,
            want: Want::Nop {
                original: orig,
                from: a + 8,
            },
        });
        let r = apply_batch::<Toy, _>(&mut m, &reqs).unwrap();
        assert_eq!(r.changed, vec![0]);
        assert_eq!(r.skipped[0].reason, SkipReason::ForeignCall { target: 25 });
        assert_eq!((m.bytes[&0], m.bytes[&1]), (0, 0));
    }
}
