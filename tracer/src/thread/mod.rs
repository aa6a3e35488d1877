//! Per-thread state and the hooks the trampolines call: the hot path.
//!
//! Each thread that ever hits an enabled pad gets one block of memory (a
//! `memfd` mapped shared, at its first event, so the agent can hand it to the
//! `tracer` program over its socket) holding:
//!
//! - the owner-private part: a re-entrancy flag, a shadow stack of the traced
//!   calls in progress (function, entry timestamp, stack pointer at the pad),
//!   and the ring's cached consumer position;
//! - one [`FuncCounters`] per registered function: completed calls, total,
//!   minimum and maximum duration, written only by the owner (plain
//!   load + store on atomics, no read-modify-write), read by the collector.
//!   The owner counts only the exits no drainer will count (see
//!   [`count_in_hooks`]); the collector counts the others from their events;
//! - the event ring ([`tracer_core::event::Ring`]).
//!
//! After that first event the hooks take no lock, allocate nothing and make
//! no system call: a timestamp, a TLS load, a few stores.
//!
//! **Matching exits to entries.** Entry and exit pads of one call run in the
//! same stack frame, so an exit matches the nearest shadow entry of the same
//! function whose stack pointer is at or above the exit's. Entries above it
//! belong to calls whose exits were missed (disabled meanwhile) and are
//! dropped as stale; an exit with no match (its entry ran before the function
//! was enabled) is counted in `unmatched` and produces no event. An entry
//! first drops stale frames below its own stack pointer (calls that have
//! returned without a recorded exit), and a frame of the same function at
//! its own stack pointer; other frames at the same stack pointer are callers
//! it was inlined into, and stay. `async fn`s are matched through a
//! token in the future instead, since they may finish on another thread.
//! Either way an exit is timed only if its entry was recorded in the
//! function's current enabled window ([`crate::window`]); an entry left
//! over from before a disable/enable is never matched to a later call.
//!
//! **Re-entrancy.** The owner sets `busy` while in a hook; a traced function
//! run from a signal handler that interrupted a hook is counted in `nested`
//! and not recorded.
//!
//! **Thread exit.** A pthread key destructor marks the block dead; the
//! collector drains it, folds its counters into the retired totals, and
//! recycles it for the next new thread.

use crate::{clock, window};
use std::cell::UnsafeCell;
use std::sync::atomic::{
    compiler_fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering,
};
use tracer_core::event::{Event, Ring, FLAG_ASYNC, FLAG_COUNTED, KIND_ENTRY, KIND_EXIT};
use tracer_core::site::{SiteRecord, KIND_ASYNC_ENTRY, KIND_ASYNC_EXIT};

/// Deepest traced nesting tracked per thread.
pub const MAX_DEPTH: usize = 128;
/// Default ring capacity, in events.
pub const DEFAULT_EVENTS: usize = 1 << 18;

static CAPACITY: AtomicUsize = AtomicUsize::new(0);
static NFUNCS: AtomicUsize = AtomicUsize::new(0);
/// Every thread block, newest first (linked by `next`); the return
/// trampoline's unwind rule walks it too (see `fret_layout`).
pub(crate) static THREADS: AtomicPtr<ThreadState> = AtomicPtr::new(std::ptr::null_mut());
static KEY: AtomicUsize = AtomicUsize::new(usize::MAX);
static ATFORK: AtomicBool = AtomicBool::new(false);

/// Set once the hooks were verified not to touch vector registers: the
/// trampolines then skip saving them.
pub static LEAN: AtomicBool = AtomicBool::new(false);

mod arena;
mod block;
mod capture;
// The capturing hooks of compiler pads, where they are traced.
crate::sys::per_arch! {
    "x86_64": "capture_x86_64.rs", "aarch64": "capture_aarch64.rs";
    mod capture_arch;
    pub(crate) use capture_arch::*;
}
mod hooks;
// Whether the trampolines may skip saving vector registers.
crate::sys::per_arch! {
    "x86_64": "lean_x86_64.rs", "aarch64": "lean_other.rs", "arm": "lean_other.rs";
    mod lean;
}
// Compiler pads' entries and hooked returns, where compiler pads are traced.
crate::sys::per_arch! {
    "x86_64": "returns.rs", "aarch64": "returns.rs";
    mod returns;
    pub(crate) use returns::*;
}
mod tls;
pub(crate) use arena::segments as arena_segments;
pub(crate) use block::*;
pub(crate) use capture::*;
pub(crate) use hooks::*;
pub(crate) use lean::*;
pub(crate) use tls::*;

/// Remember a hooked frame dropped from the shadow stack (its return
/// address may still be found by an unwind that meets the trampoline).
#[inline(always)]
pub(crate) fn evict(p: &mut Private, f: Frame, depth: usize) {
    if f.ret > TAIL && f.unhooked == 0 {
        let i = p.evicted_next % EVICTED;
        if let Some(e) = p.evicted.get_mut(i) {
            // SAFETY: plain stores to fields of our own array (see on_fret).
            unsafe {
                std::ptr::write_volatile(&mut e.0, f.sp);
                std::ptr::write_volatile(&mut e.1, f.ret);
            }
        }
        if let Some(c) = p.evicted_call.get_mut(i) {
            // SAFETY: as above.
            unsafe {
                std::ptr::write_volatile(&mut c.0, f.ts);
                std::ptr::write_volatile(&mut c.1, u64::from(f.func) | (depth as u64) << 32);
            }
        }
        p.evicted_next = p.evicted_next.wrapping_add(1);
    }
}

/// Per-function counters of one thread.
#[repr(C)]
#[derive(Debug)]
pub struct FuncCounters {
    /// Completed calls.
    pub count: AtomicU64,
    /// Sum of durations, ticks.
    pub sum: AtomicU64,
    /// Shortest, ticks (`u64::MAX` before the first).
    pub min: AtomicU64,
    /// Longest, ticks.
    pub max: AtomicU64,
}

#[derive(Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct Frame {
    func: u32,
    /// 1: the return address was given back to an unwinder (see
    /// [`unhook_returns`]); the frame is hooked again if it survives.
    unhooked: u32,
    ts: u64,
    /// `#[traceable]` frames: the stack pointer at the pad. Compiler-pad
    /// frames: the address of the caller's return address (the slot).
    sp: usize,
    /// Compiler-pad frames whose return is hooked: the original return
    /// address, or [`TAIL`] for a function its caller tail-called (it shares
    /// the caller's slot). 0 for every other frame.
    ret: usize,
}

/// [`Frame::ret`] of a tail-called function: it returns through the frame
/// below it, which has the same slot.
const TAIL: usize = 1;
/// Popped hooked frames remembered, in case one was not dead after all (a
/// frame on another stack that only looked stale: a coroutine switched away
/// from, a signal handler's alternate stack).
const EVICTED: usize = 128;

#[repr(C)]
pub(crate) struct Private {
    depth: usize,
    /// Calls deeper than the shadow stack, in progress. Exits are LIFO, so
    /// the next `overflow` exits belong to them and are not matched.
    overflow: usize,
    cached_tail: u64,
    shadow: [Frame; MAX_DEPTH],
    /// The last hooked frames popped as stale: `(slot, original return)`.
    evicted: [(usize, usize); EVICTED],
    /// The call of each `evicted` entry: `(entry timestamp, function |
    /// shadow depth << 32)`, so its exit is still recorded if it returns.
    evicted_call: [(u64, u64); EVICTED],
    evicted_next: usize,
    /// Set by [`unhook_returns`]: frames may wait to be hooked again.
    rehook: bool,
    /// The return address slot of the frame that catches the exception being
    /// unwound (`usize::MAX`: none, or a forced unwind): frames at or above
    /// it survive the unwind and keep their hooks.
    unwind_limit: usize,
    /// Shadow frames whose return goes to the capturing return trampoline,
    /// by depth: `(slot, function)` as its capturing entry set it, so a
    /// frame given back to an unwinder is hooked again with that trampoline
    /// (a stale pair only makes a plain frame's return value recorded).
    captured: [(usize, u32); MAX_DEPTH],
    /// x86-64: the slot of each shadow frame whose entry pushed the return
    /// trampoline on the return-stack predictor's stack (its return leaves
    /// by `ret`, which is then predicted); by depth, 0 for others. A hint
    /// only: a stale entry costs a mispredicted return, nothing else.
    pushed: [usize; MAX_DEPTH],
}

/// One thread's block.
#[repr(C)]
pub struct ThreadState {
    next: *mut ThreadState,
    /// Kernel thread id of the owner; 0 when free for reuse.
    pub owner: AtomicU64,
    /// The owner has exited.
    pub dead: AtomicBool,
    busy: AtomicBool,
    map_len: usize,
    /// The memfd behind the block, or negative: not shareable, and why
    /// (see [`unshared_reason`]).
    fd: AtomicI32,
    /// Its offset in the arena segment `fd`.
    offset: usize,
    nfuncs: usize,
    counters: *const FuncCounters,
    /// The event ring.
    pub ring: Ring,
    /// Exits without a matching entry.
    pub unmatched: AtomicU64,
    /// Events not recorded because the thread was already in a hook.
    pub nested: AtomicU64,
    /// Entries not recorded because the shadow stack was full.
    pub too_deep: AtomicU64,
    /// Hooked returns given back before an exception or forced unwind went
    /// through their frames (their exits are not recorded).
    pub unwound: AtomicU64,
    private: UnsafeCell<Private>,
}

// SAFETY: shared fields are atomics or immutable after publication; `private`
// is only touched by the owning thread.
unsafe impl Sync for ThreadState {}

impl ThreadState {
    /// The per-function counters.
    pub fn counters(&self) -> &[FuncCounters] {
        // SAFETY: `counters` points at `nfuncs` initialised entries in our mapping.
        unsafe { std::slice::from_raw_parts(self.counters, self.nfuncs) }
    }
}

/// Whether the hooks count every exit in their thread's counters (and flag
/// its event [`FLAG_COUNTED`]): set while another process consumes the
/// rings, so exits it takes are still counted in the process.
static COUNT_IN_HOOK: AtomicBool = AtomicBool::new(false);

/// Make the hooks count every exit themselves (`true`: another process is
/// about to consume the rings), or only those they drop (`false`: the
/// collector counts the rest as it drains them).
///
/// With `true`, returns once no hook can still be recording an exit it did
/// not count: after that every exit not yet drained is either in a ring,
/// for a last in-process drain to count, or flagged as counted. A thread
/// that stays inside a hook for over 100 ms (stopped by a debugger) is not
/// waited for.
pub fn count_in_hooks(on: bool) {
    COUNT_IN_HOOK.store(on, Ordering::SeqCst);
    if !on {
        return;
    }
    // A hook reads the setting after it marks its thread busy. A full
    // barrier on every thread (the patcher's core sync: without one the
    // runtime does not start, and no hook ever runs) orders the two: a
    // thread seen not busy after it will read the new setting at its next
    // exit.
    crate::sys::text::sync_cores();
    for st in all() {
        if st.owner.load(Ordering::Acquire) == 0 {
            continue;
        }
        let t0 = std::time::Instant::now();
        while st.busy.load(Ordering::Acquire)
            && t0.elapsed() < std::time::Duration::from_millis(100)
        {
            std::thread::yield_now();
        }
    }
    // And the events those hooks wrote are visible to the drain that
    // follows.
    crate::sys::text::sync_cores();
}

#[inline(always)]
fn bump(a: &AtomicU64) {
    a.store(a.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Every thread block ever made (live, dead or free).
pub fn all() -> impl Iterator<Item = &'static ThreadState> {
    let mut p = THREADS.load(Ordering::Acquire);
    std::iter::from_fn(move || {
        if p.is_null() {
            None
        } else {
            // SAFETY: blocks are never unmapped; `next` is set before publication.
            let s = unsafe { &*p };
            p = s.next;
            Some(s)
        }
    })
}

/// Set up thread tracking for `nfuncs` functions. Called once by the runtime
/// before any pad is enabled.
pub fn init(nfuncs: usize) {
    NFUNCS.store(nfuncs, Ordering::Release);
    if CAPACITY.load(Ordering::Relaxed) == 0 {
        let cap = std::env::var(tracer_core::wire::env::BUFFER_EVENTS)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(DEFAULT_EVENTS);
        set_capacity(cap);
    }
    if !ATFORK.swap(true, Ordering::AcqRel) {
        // SAFETY: registering a plain extern "C" fn, once.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    }
    if KEY.load(Ordering::Acquire) == usize::MAX {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `thread_exit` has the destructor signature.
        if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } == 0 {
            KEY.store(key as usize, Ordering::Release);
        }
    }
}

/// Make room in new threads' blocks for `nfuncs` functions (objects loaded
/// later add functions). Blocks made before keep their counters; a call of a
/// function beyond a block's counters is counted by the collector from its
/// exit event instead (exact unless the ring overflowed). Compiler pads
/// only (ARMv7 traces `#[traceable]` functions, registered at start).
pub fn reserve(nfuncs: usize) {
    NFUNCS.fetch_max(nfuncs, Ordering::AcqRel);
}

/// Ring capacity, in events, for threads that start tracing from now on
/// (rounded up to a power of two, clamped to 64..=[`MAX_EVENTS`]).
pub fn set_capacity(events: usize) {
    CAPACITY.store(
        events.clamp(64, MAX_EVENTS).next_power_of_two(),
        Ordering::Relaxed,
    );
}

/// Largest ring, in events (1.5 GiB of 24-byte events).
pub const MAX_EVENTS: usize = 1 << 26;

/// The ring capacity for new threads.
pub fn capacity() -> usize {
    CAPACITY.load(Ordering::Relaxed)
}

/// On a thread the runtime started: let the hooks find thread blocks at
/// their static TLS offset where there is one (x86-64; see
/// [`tp::probe_static`]).
pub fn probe_tls() {
    tp::probe_static();
}
