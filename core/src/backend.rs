//! The contract between the core and an instruction set.
//!
//! Modelled on the kernel's arch split (`ftrace_make_nop`, `ftrace_make_call`,
//! `ftrace_modify_code` checking the old bytes first): functions that compute
//! bytes write nothing, and every decision (which sites, when to sync, what to do
//! with a site whose bytes changed) is taken by the core.
//!
//! A *site* is the address of the one instruction of a pad that the protocol
//! changes: on x86-64 the 5-byte NOP itself, on AArch64 the second instruction of
//! the `MOV X9, X30; NOP` pair, on Thumb-2 the 32-bit NOP.

use std::fmt;

/// Longest instruction any backend patches, in bytes.
pub const MAX_INSN: usize = 8;

/// The bytes of one instruction (at most [`MAX_INSN`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Insn {
    len: u8,
    bytes: [u8; MAX_INSN],
}

impl Insn {
    /// An instruction from its bytes.
    ///
    /// # Panics
    /// If `bytes` is empty or longer than [`MAX_INSN`]: backends only build
    /// instructions of their own fixed sizes.
    #[inline]
    pub fn new(bytes: &[u8]) -> Insn {
        assert!(
            !bytes.is_empty() && bytes.len() <= MAX_INSN,
            "instruction of {} bytes",
            bytes.len()
        );
        let mut b = [0u8; MAX_INSN];
        // A loop rather than `copy_from_slice`: a few bytes, and no call to
        // `memcpy` for them (batches make tens of thousands).
        for (d, s) in b.iter_mut().zip(bytes) {
            *d = *s;
        }
        Insn {
            len: bytes.len() as u8,
            bytes: b,
        }
    }

    /// The instruction's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Its length in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len as usize
    }
}

impl fmt::Debug for Insn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", hex(self.bytes()))
    }
}

/// Bytes as `0f 1f 44 00 00`.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a pad holds now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadState {
    /// The disabled form: a no-op of the pad's size.
    Disabled,
    /// The enabled form: a call to `target`.
    Enabled {
        /// Where the call goes.
        target: usize,
    },
    /// A trap instruction sits where the protocol puts its trap: a batch of ours
    /// is in flight, or someone else (a debugger) planted a breakpoint.
    Trapped,
}

/// A pad whose bytes are not what the backend expects. It is never written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PadError {
    /// The site's address.
    pub addr: usize,
    /// What the backend found there.
    pub found: Vec<u8>,
    /// What it expected, in words.
    pub expected: String,
}

impl fmt::Display for PadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pad at {:#x} holds [{}], expected {}",
            self.addr,
            hex(&self.found),
            self.expected
        )
    }
}

impl std::error::Error for PadError {}

/// A call that cannot be encoded at a site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The target is farther than the instruction can reach and no veneer was given.
    OutOfRange {
        /// The site.
        from: usize,
        /// The call's target.
        to: usize,
        /// The instruction's reach in bytes, either way.
        reach: u64,
    },
    /// The site or target is misaligned for the instruction set.
    Misaligned {
        /// The misaligned address.
        addr: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::OutOfRange { from, to, reach } => write!(
                f,
                "call from {from:#x} to {to:#x} is beyond the instruction's reach of ±{reach:#x} bytes"
            ),
            EncodeError::Misaligned { addr } => {
                write!(f, "address {addr:#x} is misaligned for this instruction set")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

/// One store of a protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// Offset from the site.
    pub offset: usize,
    /// Bytes to store.
    pub bytes: Vec<u8>,
    /// The store must be single-copy atomic: one aligned store of 1, 2, 4 or 8
    /// bytes. Non-atomic writes may be observed byte by byte, in any order.
    pub atomic: bool,
}

/// The protocol that takes one site from its old instruction to its new one.
///
/// It is a list of phases; after each phase every core is synchronised (the
/// engine does one sync per phase for a whole batch, not one per site).
/// Within a phase, writes to one site are done in order, but a concurrent
/// instruction fetch may observe any subset of the non-atomic bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The phases, in order.
    pub phases: Vec<Vec<Write>>,
}

/// What to do with a thread that hit a trap of an in-flight site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapPolicy {
    /// Carry out the new instruction (a call or a no-op).
    Emulate,
    /// Treat the site as the no-op it was ("missing one event is acceptable").
    /// Used where emulating a call would break something, e.g. x86 CET shadow
    /// stacks, where an emulated CALL leaves the later RET unmatched.
    Skip,
}

/// A site of the batch in flight, as the trap handler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InflightSite {
    /// The site's address.
    pub addr: usize,
    /// The instruction before the batch.
    pub old: Insn,
    /// The instruction after the batch.
    pub new: Insn,
    /// When `new` is a call: its target.
    pub call_target: Option<usize>,
}

/// Look up `addr` in a table sorted by address (binary search).
pub fn find_inflight(table: &[InflightSite], addr: usize) -> Option<&InflightSite> {
    table
        .binary_search_by_key(&addr, |s| s.addr)
        .ok()
        .map(|i| &table[i])
}

/// The registers of a trapped thread that a handler may read or change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrapContext {
    /// Program counter as the kernel reports it (x86-64: one past the `int3`;
    /// ARM: at the breakpoint).
    pub pc: usize,
    /// Stack pointer.
    pub sp: usize,
    /// Link register (ARM); unused on x86-64.
    pub lr: usize,
    /// The thread runs Thumb code (ARMv7); unused elsewhere.
    pub thumb: bool,
}

/// What the trap handler does with a trapped thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapOutcome {
    /// Not a trap of ours: pass it on to the handler installed before us, or
    /// to the default action.
    NotOurs,
    /// Resume the thread with these registers.
    Resume {
        /// New program counter.
        pc: usize,
        /// New stack pointer.
        sp: usize,
        /// New link register.
        lr: usize,
        /// A word to store at the new `sp` before resuming (x86-64 CALL's
        /// return address).
        push: Option<usize>,
    },
}

/// How the trap handler knew what to do: for counters and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapKind {
    /// An in-flight site, still trapped: the new instruction was emulated.
    Emulated,
    /// An in-flight site, still trapped: skipped as a no-op.
    Skipped,
    /// The trap is gone (a late handler): the thread re-executes the site.
    Rewound,
    /// Not ours.
    Foreign,
}

/// The sink of [`Backend::plan_each`]: `(phase, offset, bytes, atomic)`.
pub type EmitWrite<'a> = dyn FnMut(usize, usize, &[u8], bool) + 'a;

/// An instruction set's pads, encodings, protocol and trap interpretation.
///
/// All functions are pure: they compute bytes and register values, and write
/// nothing. The live parts (writing text, syncing cores, installing the signal
/// handler) belong to the runtime.
pub trait Backend {
    /// Short name for messages: `x86-64`, `aarch64`, `thumb2`, `a32`.
    const NAME: &'static str;
    /// Size in bytes of the instruction at a site.
    const SITE_LEN: usize;
    /// The trap the protocol plants at a site's first bytes (empty when the
    /// protocol never traps, e.g. AArch64's one aligned write).
    const TRAP: &'static [u8];

    /// What the pad at `addr` holds now: the disabled form, the enabled form,
    /// a trap, or an error naming what was found.
    fn classify(addr: usize, bytes: &[u8]) -> Result<PadState, PadError>;

    /// The bytes that make the site at `addr` call `target`.
    fn encode_call(addr: usize, target: usize) -> Result<Insn, EncodeError>;

    /// The bytes that make the site at `addr` jump to `target`, pushing no
    /// return address ([`crate::engine::Want::Jump`]; x86-64 compiler pads,
    /// whose stub pushes it itself). [`Backend::classify`] must report the
    /// jump as [`PadState::Enabled`] with its target. Backends whose sites
    /// are never asked to jump keep the default: a call.
    fn encode_jump(addr: usize, target: usize) -> Result<Insn, EncodeError> {
        Self::encode_call(addr, target)
    }

    /// The canonical no-op for the site at `addr`. The engine restores the
    /// pad's original bytes when it has them; this is for pads it made itself.
    fn encode_nop(addr: usize) -> Insn;

    /// The steps that take `old` to `new` at `addr` while other threads run it.
    fn plan(addr: usize, old: &Insn, new: &Insn) -> Plan;

    /// [`Backend::plan`], one write at a time, without allocating: calls
    /// `emit(phase, offset, bytes, atomic)` for every write, phases in order.
    /// The engine uses this; a backend whose batches are large overrides it
    /// (and tests that it agrees with `plan`).
    fn plan_each(addr: usize, old: &Insn, new: &Insn, emit: &mut EmitWrite<'_>) {
        for (i, phase) in Self::plan(addr, old, new).phases.iter().enumerate() {
            for w in phase {
                emit(i, w.offset, &w.bytes, w.atomic);
            }
        }
    }

    /// The site address a trap reported at `pc` belongs to.
    fn trap_site(pc: usize) -> usize;

    /// Carry out `new` for a thread trapped at `site` (or skip it as a no-op).
    fn resume_at(ctx: &TrapContext, site: &InflightSite, policy: TrapPolicy) -> TrapOutcome;

    /// Decide what to do with a trap.
    ///
    /// `inflight` is the sorted table of the batch in flight (empty when none
    /// is); `is_site` says whether an address is a registered site at all;
    /// `read` reads the bytes at an address as they are now.
    ///
    /// The rules (kernel `poke_int3_handler`, kprobes/uprobes late traps):
    /// a trap at an in-flight site whose trap bytes are still there is
    /// emulated or skipped; a trap at a registered site whose trap bytes are
    /// gone is a late handler and rewinds the thread to re-execute the site;
    /// anything else is not ours.
    fn on_trap(
        ctx: &TrapContext,
        inflight: &[InflightSite],
        is_site: &dyn Fn(usize) -> bool,
        read: &dyn Fn(usize, &mut [u8]),
        policy: TrapPolicy,
    ) -> (TrapOutcome, TrapKind) {
        if Self::TRAP.is_empty() {
            return (TrapOutcome::NotOurs, TrapKind::Foreign);
        }
        let site = Self::trap_site(ctx.pc);
        let mut cur = [0u8; MAX_INSN];
        let cur = &mut cur[..Self::TRAP.len()];
        read(site, cur);
        let trapped = cur == Self::TRAP;
        match find_inflight(inflight, site) {
            Some(s) if trapped => {
                let kind = match (policy, s.call_target) {
                    (TrapPolicy::Emulate, Some(_)) => TrapKind::Emulated,
                    _ => TrapKind::Skipped,
                };
                (Self::resume_at(ctx, s, policy), kind)
            }
            Some(_) => (rewind(ctx, site), TrapKind::Rewound),
            None if !trapped && is_site(site) => (rewind(ctx, site), TrapKind::Rewound),
            None => (TrapOutcome::NotOurs, TrapKind::Foreign),
        }
    }
}

fn rewind(ctx: &TrapContext, site: usize) -> TrapOutcome {
    TrapOutcome::Resume {
        pc: site,
        sp: ctx.sp,
        lr: ctx.lr,
        push: None,
    }
}
