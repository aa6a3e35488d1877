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
//!   load + store on atomics, no read-modify-write), read by the collector;
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
#[cfg(not(target_arch = "x86_64"))]
use std::cell::Cell;
use std::cell::UnsafeCell;
use std::sync::atomic::{
    compiler_fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering,
};
use tracer_core::event::{Event, Ring, FLAG_ASYNC, FLAG_ENTRY_ONLY, KIND_ENTRY, KIND_EXIT};
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

/// Bytes of the `xsave64` area the x86-64 trampolines and saving shim use (0:
/// no XSAVE, save `xmm0`–`xmm15` instead). Set before any pad is enabled.
#[cfg(target_arch = "x86_64")]
pub static XSAVE_SIZE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[cfg(not(target_arch = "x86_64"))]
thread_local! {
    static STATE: Cell<*mut ThreadState> = const { Cell::new(std::ptr::null_mut()) };
}

/// This thread's block (null: none yet; [`tp::INIT`]: being made).
#[inline(always)]
fn this_thread() -> *mut ThreadState {
    #[cfg(target_arch = "x86_64")]
    return tp::get();
    #[cfg(not(target_arch = "x86_64"))]
    STATE.with(|s| s.get())
}

fn set_this_thread(p: *mut ThreadState) {
    #[cfg(target_arch = "x86_64")]
    tp::set(p);
    #[cfg(not(target_arch = "x86_64"))]
    STATE.with(|s| s.set(p));
}

/// Thread blocks by thread pointer, on x86-64.
///
/// A Rust `thread_local!` in a shared library (the preload library) is
/// reached through `__tls_get_addr`, a call into libc that the lean
/// trampolines cannot allow (see `tracer_arch_x86::trampoline`). The thread
/// pointer (`fs:0`, the address of the thread's control block, unique among
/// live threads) is one load in any kind of object, so blocks are found in
/// an open-addressing table keyed by it. Only the owning thread ever reads or
/// writes its own entry, so a slot is claimed with one CAS and needs no
/// further synchronisation; a thread's entry is removed when it exits (the
/// pthread key destructor), before its control block can be reused.
#[cfg(target_arch = "x86_64")]
mod tp {
    use super::ThreadState;
    use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

    /// The value of a thread whose block is being made.
    pub const INIT: usize = 1;
    const SLOTS: usize = 1 << 14;
    const TOMBSTONE: usize = 1;

    #[allow(clippy::declare_interior_mutable_const)]
    const EMPTY_KEY: AtomicUsize = AtomicUsize::new(0);
    #[allow(clippy::declare_interior_mutable_const)]
    const EMPTY_VAL: AtomicPtr<ThreadState> = AtomicPtr::new(std::ptr::null_mut());
    static KEYS: [AtomicUsize; SLOTS] = [EMPTY_KEY; SLOTS];
    static VALS: [AtomicPtr<ThreadState>; SLOTS] = [EMPTY_VAL; SLOTS];

    #[inline(always)]
    fn thread_pointer() -> usize {
        let tp: usize;
        // SAFETY: on x86-64 Linux `fs:0` holds the thread control block's own
        // address (the TLS ABI); reading it has no side effect.
        unsafe {
            std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp,
                options(nostack, readonly, preserves_flags, pure))
        };
        tp
    }

    #[inline(always)]
    fn home(k: usize) -> usize {
        (k >> 12).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - 14)
    }

    /// This thread's block, [`INIT`], or null.
    #[inline(always)]
    pub fn get() -> *mut ThreadState {
        let k = thread_pointer();
        let mut i = home(k);
        for _ in 0..SLOTS {
            // `get` rather than indexing: the hooks contain no panic path.
            let Some(key) = KEYS.get(i) else { break };
            let key = key.load(Ordering::Relaxed);
            if key == k {
                return VALS
                    .get(i)
                    .map_or(std::ptr::null_mut(), |v| v.load(Ordering::Relaxed));
            }
            if key == 0 {
                break;
            }
            i = (i + 1) & (SLOTS - 1);
        }
        std::ptr::null_mut()
    }

    /// Set (or, with null, remove) this thread's entry.
    pub fn set(p: *mut ThreadState) {
        let k = thread_pointer();
        let mut i = home(k);
        let mut free = None;
        for _ in 0..SLOTS {
            let key = KEYS[i].load(Ordering::Relaxed);
            if key == k {
                if p.is_null() {
                    VALS[i].store(std::ptr::null_mut(), Ordering::Relaxed);
                    KEYS[i].store(TOMBSTONE, Ordering::Relaxed);
                } else {
                    VALS[i].store(p, Ordering::Relaxed);
                }
                return;
            }
            if key == 0 {
                break;
            }
            if key == TOMBSTONE && free.is_none() {
                free = Some(i);
            }
            i = (i + 1) & (SLOTS - 1);
        }
        if p.is_null() {
            return;
        }
        // Claim a free slot: a tombstone on our probe path, else the first empty one.
        let mut j = free.unwrap_or(i);
        for _ in 0..SLOTS {
            let cur = KEYS[j].load(Ordering::Relaxed);
            if (cur == 0 || cur == TOMBSTONE)
                && KEYS[j]
                    .compare_exchange(cur, k, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                VALS[j].store(p, Ordering::Relaxed);
                return;
            }
            j = (j + 1) & (SLOTS - 1);
        }
        // Full (16384 live threads): this thread is not traced.
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod tp {
    /// The value of a thread whose block is being made.
    pub const INIT: usize = 1;
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
struct Frame {
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
struct Private {
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
}

/// The offsets the return trampoline's unwind rule reads to find a hooked
/// frame's real return address on the shadow stacks (a DWARF expression:
/// `scripts/fret-cfi.py`). The rule also relies on what is checked here:
/// `next` first in a block, `depth` first in [`Private`], 32-byte frames
/// with `sp` at 16 and `ret` at 24, [`TAIL`] = 1.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) mod fret_layout {
    use super::{Frame, Private, ThreadState};
    use std::mem::offset_of;
    /// [`ThreadState::dead`] (one byte).
    pub const DEAD: usize = offset_of!(ThreadState, dead);
    /// The shadow stack's depth.
    pub const PRIVATE: usize = offset_of!(ThreadState, private) + offset_of!(Private, depth);
    /// The shadow frames.
    pub const SHADOW: usize = offset_of!(ThreadState, private) + offset_of!(Private, shadow);
    const _: () = {
        assert!(offset_of!(ThreadState, next) == 0);
        assert!(offset_of!(Private, depth) == 0);
        assert!(std::mem::size_of::<Frame>() == 32);
        assert!(offset_of!(Frame, sp) == 16);
        assert!(offset_of!(Frame, ret) == 24);
        assert!(super::TAIL == 1);
        assert!(super::MAX_DEPTH == 128);
        assert!(DEAD < 65536 && PRIVATE < 65536 && SHADOW < 65536);
    };
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
/// exit event instead (exact unless the ring overflowed).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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

unsafe extern "C" fn thread_exit(p: *mut libc::c_void) {
    // Events after this point (other TLS destructors) get a fresh block.
    set_this_thread(std::ptr::null_mut());
    if !p.is_null() {
        // SAFETY: the key's value is our block.
        unsafe { &*(p as *const ThreadState) }
            .dead
            .store(true, Ordering::Release);
    }
}

fn layout(nfuncs: usize, cap: usize) -> (usize, usize, usize) {
    let hdr = std::mem::size_of::<ThreadState>().div_ceil(64) * 64;
    let counters = nfuncs * std::mem::size_of::<FuncCounters>();
    let ring_off = (hdr + counters).div_ceil(64) * 64;
    (hdr, ring_off, ring_off + Ring::bytes_for(cap))
}

fn reset_counters(st: &ThreadState) {
    for c in st.counters() {
        c.count.store(0, Ordering::Relaxed);
        c.sum.store(0, Ordering::Relaxed);
        c.min.store(u64::MAX, Ordering::Relaxed);
        c.max.store(0, Ordering::Relaxed);
    }
}

/// Make a dead block reusable. Called by the collector after it drained the
/// ring and folded the counters.
pub fn recycle(st: &ThreadState) {
    reset_counters(st);
    let _ = st.ring.drain(usize::MAX, |_| {});
    st.ring.header().dropped.store(0, Ordering::Relaxed);
    st.unmatched.store(0, Ordering::Relaxed);
    st.nested.store(0, Ordering::Relaxed);
    st.too_deep.store(0, Ordering::Relaxed);
    st.unwound.store(0, Ordering::Relaxed);
    st.dead.store(false, Ordering::Relaxed);
    st.owner.store(0, Ordering::Release);
}

fn gettid() -> u64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

#[cold]
#[inline(never)]
fn slow_init() -> *mut ThreadState {
    let nfuncs = NFUNCS.load(Ordering::Acquire);
    let cap = capacity();
    if nfuncs == 0 || cap == 0 {
        return std::ptr::null_mut();
    }
    let tid = gettid();
    // Anything traced that the set-up below runs on this thread (padded
    // library code) sees INIT and records nothing, instead of recursing.
    set_this_thread(tp::INIT as *mut ThreadState);
    let found = make_block(nfuncs, cap, tid);
    set_this_thread(found);
    found
}

fn make_block(nfuncs: usize, cap: usize, tid: u64) -> *mut ThreadState {
    let mut found: *mut ThreadState = std::ptr::null_mut();
    for s in all() {
        if s.nfuncs >= nfuncs
            && s.ring.capacity() == cap
            && s.owner
                .compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            found = s as *const ThreadState as *mut ThreadState;
            break;
        }
    }
    if found.is_null() {
        found = allocate(nfuncs, cap, tid);
        if found.is_null() {
            return found;
        }
    } else {
        // SAFETY: we own the block now (CAS above); its previous owner is dead.
        unsafe {
            let p = &mut *(*found).private.get();
            p.depth = 0;
            p.overflow = 0;
            p.cached_tail = 0;
            // The dead owner's remembered frames mean nothing on this thread.
            p.evicted = [(0, 0); EVICTED];
            p.evicted_call = [(0, 0); EVICTED];
            p.evicted_next = 0;
            p.rehook = false;
            p.unwind_limit = usize::MAX;
            (*found).ring.header().tid.store(tid, Ordering::Relaxed);
        }
    }
    set_this_thread(found);
    let key = KEY.load(Ordering::Acquire);
    if key != usize::MAX {
        // SAFETY: the key was created in init.
        unsafe {
            libc::pthread_setspecific(key as libc::pthread_key_t, found as *const libc::c_void)
        };
    }
    found
}

fn allocate(nfuncs: usize, cap: usize, tid: u64) -> *mut ThreadState {
    let (hdr, ring_off, len) = layout(nfuncs, cap);
    // Shared memory (memfd + MAP_SHARED) so the agent can hand the block to
    // the `tracer` program; anonymous private memory if memfd is unavailable.
    let (mem, fd) = map_block(len);
    if mem == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    let base = mem as *mut u8;
    // SAFETY: the mapping is ours, zeroed, page-aligned and `len` bytes long;
    // the ring and counters sit at 64-aligned offsets inside it.
    unsafe {
        let ring = Ring::init(base.add(ring_off), cap, tid);
        let st = base as *mut ThreadState;
        st.write(ThreadState {
            next: std::ptr::null_mut(),
            owner: AtomicU64::new(tid),
            dead: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            map_len: len,
            fd: AtomicI32::new(fd),
            nfuncs,
            counters: base.add(hdr) as *const FuncCounters,
            ring,
            unmatched: AtomicU64::new(0),
            nested: AtomicU64::new(0),
            too_deep: AtomicU64::new(0),
            unwound: AtomicU64::new(0),
            private: UnsafeCell::new(Private {
                depth: 0,
                overflow: 0,
                cached_tail: 0,
                shadow: [Frame::default(); MAX_DEPTH],
                evicted: [(0, 0); EVICTED],
                evicted_call: [(0, 0); EVICTED],
                evicted_next: 0,
                rehook: false,
                unwind_limit: usize::MAX,
            }),
        });
        reset_counters(&*st);
        let mut head = THREADS.load(Ordering::Acquire);
        loop {
            (*st).next = head;
            match THREADS.compare_exchange_weak(head, st, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(h) => head = h,
            }
        }
        st
    }
}

/// Descriptors the tracer leaves to the program: the agent refuses a
/// connection whose descriptor is one of the last `FD_RESERVE` below
/// `RLIMIT_NOFILE`.
pub const FD_RESERVE: u64 = 16;
/// A block whose memfd would be one of the last `BLOCK_FD_RESERVE` stays
/// private (not visible to the `tracer` program, which `status` explains)
/// instead of taking a descriptor the program may need. Twice
/// [`FD_RESERVE`]: the agent's connections (which come after the blocks)
/// still find room to say so.
pub const BLOCK_FD_RESERVE: u64 = 2 * FD_RESERVE;

/// `fd` field of a block made private in a forked child.
const UNSHARED_FORK: i32 = -1;
/// `fd` field of a block whose memfd would have eaten into
/// [`BLOCK_FD_RESERVE`].
const UNSHARED_RESERVE: i32 = -2;
/// `fd` field of a block whose memfd failed: `-(UNSHARED_ERRNO + errno)`.
const UNSHARED_ERRNO: i32 = 1 << 16;

/// Would keeping descriptor `fd` leave the program fewer than `reserve`
/// free ones? Descriptors are allocated lowest first, so all below `fd` are
/// in use. Only a system call (async-signal-safe).
pub fn fd_in_reserve(fd: i32, reserve: u64) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return false;
    }
    // rlim_t is 32 bits on ARMv7.
    #[allow(clippy::unnecessary_cast)]
    let limit = lim.rlim_cur as u64;
    (fd as u64).saturating_add(reserve) >= limit
}

/// Map `len` bytes for a block: a memfd mapped `MAP_SHARED` (kept open, so
/// it can be passed to a reader with SCM_RIGHTS), else an anonymous private
/// mapping whose "fd" says why (see [`unshared_reason`]). The memfd is
/// close-on-exec and sealed against shrinking, growing and further seals: a
/// reader's mapping can never SIGBUS because the file got shorter. Only
/// system calls, no allocation (async-signal-safe).
fn map_block(len: usize) -> (*mut libc::c_void, i32) {
    // SAFETY: the name is a NUL-terminated literal; the flags are valid.
    let fd = unsafe {
        libc::memfd_create(
            c"tracer-thread".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    let why = if fd < 0 {
        // SAFETY: errno of the failed call, read on this thread.
        -(UNSHARED_ERRNO + unsafe { *libc::__errno_location() })
    } else if fd_in_reserve(fd, BLOCK_FD_RESERVE) {
        UNSHARED_RESERVE
    } else {
        // SAFETY: `fd` is our fresh memfd; ftruncate zero-fills it.
        let ok = unsafe { libc::ftruncate(fd, len as libc::off_t) } == 0;
        if ok {
            // Best effort (a kernel without sealing still works; readers
            // check the size with fstat anyway).
            // SAFETY: F_ADD_SEALS on our own memfd.
            unsafe {
                libc::fcntl(
                    fd,
                    libc::F_ADD_SEALS,
                    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
                )
            };
            // SAFETY: a fresh shared mapping of our own memfd, `len` bytes long.
            let mem = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            if mem != libc::MAP_FAILED {
                return (mem, fd);
            }
        }
        // SAFETY: errno of the failed ftruncate or mmap, read on this thread.
        -(UNSHARED_ERRNO + unsafe { *libc::__errno_location() })
    };
    if fd >= 0 {
        // SAFETY: `fd` is ours and not used elsewhere.
        unsafe { libc::close(fd) };
    }
    // SAFETY: a fresh anonymous mapping (async-signal-safe, unlike malloc).
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    (mem, why)
}

/// Why a block is not shared with readers (`None`: it is).
pub fn unshared_reason(st: &ThreadState) -> Option<String> {
    let fd = st.fd.load(Ordering::Relaxed);
    match fd {
        0.. => None,
        UNSHARED_FORK => Some(String::from(
            "made private in a forked child (its parent keeps the shared one)",
        )),
        UNSHARED_RESERVE => Some(format!(
            "its memfd would have taken one of the program's last {BLOCK_FD_RESERVE} file \
             descriptors (RLIMIT_NOFILE), which the tracer leaves to the program: raise the \
             limit (ulimit -n) to see this thread"
        )),
        _ => {
            let errno = -fd - UNSHARED_ERRNO;
            let e = std::io::Error::from_raw_os_error(errno);
            let hint = if errno == libc::EMFILE || errno == libc::ENFILE {
                ": the file descriptor table was full; raise the limit (ulimit -n) to see this \
                 thread"
            } else {
                ""
            };
            Some(format!(
                "its shared memory could not be created ({e}){hint}"
            ))
        }
    }
}

/// In a child after `fork`: blocks mapped `MAP_SHARED` would be shared with
/// the parent (two producers on one ring), so each becomes a private copy at
/// the same address, as an anonymous private mapping would have been. Only
/// `mmap`, `memcpy` and `close` (async-signal-safe; the child has one thread).
extern "C" fn after_fork_in_child() {
    for st in all() {
        let fd = st.fd.load(Ordering::Relaxed);
        if fd < 0 {
            continue;
        }
        let base = st as *const ThreadState as *mut libc::c_void;
        let len = st.map_len;
        // SAFETY: `base..base+len` is exactly this block's mapping; it is
        // copied out, replaced in place by a private anonymous mapping and
        // copied back, so every pointer into it stays valid. No other thread
        // exists in the child.
        unsafe {
            let tmp = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if tmp == libc::MAP_FAILED {
                continue;
            }
            std::ptr::copy_nonoverlapping(base as *const u8, tmp as *mut u8, len);
            let fixed = libc::mmap(
                base,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            if fixed == base {
                std::ptr::copy_nonoverlapping(tmp as *const u8, base as *mut u8, len);
                st.fd.store(UNSHARED_FORK, Ordering::Relaxed);
                libc::close(fd);
            }
            libc::munmap(tmp, len);
        }
    }
}

/// Where a block's parts sit, for a reader that maps it from its fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLayout {
    /// The memfd, or negative if the block is not shareable.
    pub fd: i32,
    /// Bytes in the block.
    pub len: usize,
    /// Offset of the [`FuncCounters`] array.
    pub counters: usize,
    /// Offset of the ring.
    pub ring: usize,
    /// Functions counted.
    pub nfuncs: usize,
}

/// How `st` is laid out in its memfd.
pub fn block_layout(st: &ThreadState) -> BlockLayout {
    let (hdr, ring_off, len) = layout(st.nfuncs, st.ring.capacity());
    BlockLayout {
        fd: st.fd.load(Ordering::Relaxed),
        len,
        counters: hdr,
        ring: ring_off,
        nfuncs: st.nfuncs,
    }
}

/// Bytes mapped for one thread block.
pub fn block_len(st: &ThreadState) -> usize {
    st.map_len
}

#[cfg(target_arch = "x86_64")]
extern "C" {
    /// `f(arg)`, with `xmm0`–`xmm15` saved around it (see the x86 trampolines).
    fn __tracer_v1_call_saving(f: extern "C" fn(usize) -> usize, arg: usize) -> usize;
}

/// The saving shim's address, for the hook check.
#[cfg(target_arch = "x86_64")]
pub fn call_saving_shim() -> usize {
    __tracer_v1_call_saving as *const () as usize
}

/// Run a slow path from a hook: through the saving shim on x86-64, so the
/// hook's own code stays free of vector registers (lean trampolines).
#[inline(always)]
fn call_slow(f: extern "C" fn(usize) -> usize) -> usize {
    call_slow_arg(f, 0)
}

/// [`call_slow`] with an argument.
#[inline(always)]
fn call_slow_arg(f: extern "C" fn(usize) -> usize, arg: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the shim calls `f(arg)` with the System V ABI and preserves the
    // vector registers around it.
    return unsafe { __tracer_v1_call_saving(f, arg) };
    #[cfg(not(target_arch = "x86_64"))]
    f(arg)
}

extern "C" fn slow_init_c(_: usize) -> usize {
    slow_init() as usize
}

#[cfg(target_arch = "x86_64")]
extern "C" fn monotonic_c(_: usize) -> usize {
    clock::monotonic_ns() as usize
}

/// Timestamp inside a hook: the TSC inline, anything else through
/// [`call_slow`] on x86-64 (a `usize` there is the clock's 64 bits), and
/// directly elsewhere: a `usize` of ARMv7 would cut the nanoseconds to 32
/// bits, which wrap every 4.3 s.
#[inline(always)]
fn hook_now() -> u64 {
    match clock::fast_now() {
        Some(t) => t,
        #[cfg(target_arch = "x86_64")]
        None => call_slow(monotonic_c) as u64,
        #[cfg(not(target_arch = "x86_64"))]
        None => clock::monotonic_ns(),
    }
}

/// This thread's block, made on its first event (then `true`).
#[inline(always)]
fn current() -> Option<(&'static ThreadState, bool)> {
    let mut p = this_thread();
    if p as usize == tp::INIT {
        return None; // in the middle of making this thread's block
    }
    let fresh = p.is_null();
    if fresh {
        p = call_slow(slow_init_c) as *mut ThreadState;
        if p.is_null() {
            return None;
        }
    }
    // SAFETY: blocks are never unmapped.
    Some((unsafe { &*p }, fresh))
}

#[inline(always)]
fn record_exit(
    st: &ThreadState,
    p: &mut Private,
    func: u32,
    now: u64,
    dur: u64,
    depth: usize,
    flags: u8,
) {
    if let Some(c) = st.counters().get(func as usize) {
        bump(&c.count);
        c.sum.store(
            c.sum.load(Ordering::Relaxed).wrapping_add(dur),
            Ordering::Relaxed,
        );
        if dur < c.min.load(Ordering::Relaxed) {
            c.min.store(dur, Ordering::Relaxed);
        }
        if dur > c.max.load(Ordering::Relaxed) {
            c.max.store(dur, Ordering::Relaxed);
        }
    }
    st.ring.push(
        &mut p.cached_tail,
        &Event {
            ts: now,
            dur,
            func,
            depth: depth as u16,
            kind: KIND_EXIT,
            flags,
        },
    );
}

/// The part every event hook shares: take the timestamp, find the thread's
/// block (making it on the first event), and run `f` under the re-entrancy
/// guard (an event raised while the thread is already in a hook is counted
/// as nested and dropped).
#[inline(always)]
fn guarded(f: impl FnOnce(&ThreadState, &mut Private, u64)) {
    let mut now = hook_now();
    let Some((st, fresh)) = current() else { return };
    if fresh {
        // The thread's first event: making its block (memfd, mmap) took
        // time that is not the traced call's.
        now = hook_now();
    }
    if st.busy.load(Ordering::Relaxed) {
        bump(&st.nested);
        return;
    }
    st.busy.store(true, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    // SAFETY: the private part belongs to this thread.
    f(st, unsafe { &mut *st.private.get() }, now);
    compiler_fence(Ordering::SeqCst);
    st.busy.store(false, Ordering::Relaxed);
}

/// [`guarded`] for the `#[traceable]` hooks, with the site's record and
/// function.
///
/// # Safety
/// `rec` must be a site record.
#[inline(always)]
unsafe fn in_hook(
    rec: *const SiteRecord,
    f: impl FnOnce(&ThreadState, &mut Private, &SiteRecord, u32, u64),
) {
    guarded(|st, p, now| {
        // SAFETY: per the caller.
        let rec = unsafe { &*rec };
        f(st, p, rec, rec.func.load(Ordering::Relaxed), now)
    })
}

/// Record an entry of `func` at the current depth.
#[inline(always)]
fn push_entry(st: &ThreadState, p: &mut Private, func: u32, now: u64, flags: u8) {
    st.ring.push(
        &mut p.cached_tail,
        &Event {
            ts: now,
            dur: 0,
            func,
            depth: p.depth as u16,
            kind: KIND_ENTRY,
            flags,
        },
    );
}

/// Called by the entry trampoline.
///
/// # Safety
/// `rec` must be a site record; for async entries `token` must point at the
/// future's `u64` slot.
pub unsafe extern "C" fn on_entry(rec: *const SiteRecord, sp: usize, token: usize) {
    let hook = |st: &ThreadState, p: &mut Private, rec: &SiteRecord, func: u32, now: u64| {
        if rec.kind == KIND_ASYNC_ENTRY {
            // SAFETY: per the caller.
            unsafe { *(token as *mut u64) = now.max(1) };
            push_entry(st, p, func, now, FLAG_ASYNC);
        } else {
            // Frames below this one (deeper stack) have returned without a
            // recorded exit. A frame at the same stack pointer may be a live
            // caller this function was inlined into, unless it is this very
            // function (no function is nested in itself within one frame).
            // (`get` rather than indexing: the hooks contain no panic path.)
            while let Some(&top) = p.depth.checked_sub(1).and_then(|i| p.shadow.get(i)) {
                if (top.sp < sp && sp - top.sp < STACK_SPAN) || (top.sp == sp && top.func == func) {
                    p.depth -= 1;
                    p.overflow = 0;
                    evict(p, top, p.depth);
                } else {
                    break;
                }
            }
            if let Some(slot) = p.shadow.get_mut(p.depth) {
                *slot = Frame {
                    func,
                    unhooked: 0,
                    ts: now,
                    sp,
                    ret: 0,
                };
                push_entry(st, p, func, now, 0);
                p.depth += 1;
            } else {
                p.overflow += 1;
                bump(&st.too_deep);
            }
        }
    };
    // SAFETY: per the caller.
    unsafe { in_hook(rec, hook) }
}

/// Stack pointers farther apart than this are on different stacks (a signal
/// handler on its alternate stack): never treat such frames as stale.
const STACK_SPAN: usize = 64 << 20;
/// How far down the shadow stack an exit looks for its entry.
const EXIT_SEARCH: usize = 8;

/// Called by the exit trampoline.
///
/// # Safety
/// As [`on_entry`].
pub unsafe extern "C" fn on_exit(rec: *const SiteRecord, sp: usize, token: usize) {
    let hook = |st: &ThreadState, p: &mut Private, rec: &SiteRecord, func: u32, now: u64| {
        if rec.kind == KIND_ASYNC_EXIT {
            // SAFETY: per the caller.
            let slot = unsafe { &mut *(token as *mut u64) };
            let t0 = *slot;
            if t0 == 0 {
                bump(&st.unmatched);
            } else if !window::current(func, t0) {
                // Its first poll was in an earlier enabled window.
                *slot = 0;
                bump(&st.unmatched);
            } else {
                *slot = 0;
                record_exit(
                    st,
                    p,
                    func,
                    now,
                    now.saturating_sub(t0),
                    p.depth,
                    FLAG_ASYNC,
                );
            }
        } else if p.overflow > 0 {
            // The exit of a call too deep to have a frame.
            p.overflow -= 1;
        } else {
            let mut found = None;
            let lowest = p.depth.saturating_sub(EXIT_SEARCH);
            for i in (lowest..p.depth).rev() {
                let Some(f) = p.shadow.get(i) else { continue };
                if f.func == func && f.sp >= sp && f.sp - sp < STACK_SPAN {
                    found = Some((i, f.ts));
                    break;
                }
            }
            match found {
                Some((i, t0)) => {
                    for j in i + 1..p.depth {
                        if let Some(&f) = p.shadow.get(j) {
                            evict(p, f, j);
                        }
                    }
                    p.depth = i;
                    if window::current(func, t0) {
                        record_exit(st, p, func, now, now.saturating_sub(t0), i, 0);
                    } else {
                        // The entry is from an earlier enabled window: the
                        // call it began was left while the function was off,
                        // and this exit's own entry was never seen.
                        bump(&st.unmatched);
                    }
                }
                None => bump(&st.unmatched),
            }
        }
    };
    // SAFETY: per the caller.
    unsafe { in_hook(rec, hook) }
}

/// Address of the return trampoline (`__tracer_v1_tramp_fret`) on x86-64
/// and AArch64, set by the runtime before any compiler pad is enabled; 0 where returns are
/// not hooked (no such trampoline, or CET shadow stacks: entry-only events).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub static FRET: AtomicUsize = AtomicUsize::new(0);

#[inline(always)]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
fn evict(p: &mut Private, f: Frame, depth: usize) {
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

/// Called by the compiler-pad entry trampoline: function `func` was entered;
/// `slot` holds its return address.
///
/// Frames at or below `slot` on this stack are gone (they returned without
/// passing the return trampoline: `longjmp`, an exception, a disabled
/// `#[traceable]` exit) and are dropped, except the frame a tail call came
/// from, which shares the slot (the slot then already holds the return
/// trampoline): the callee gets a [`TAIL`] frame above it and both exits are
/// recorded when the slot's return comes.
///
/// `frame` identifies the call on the stack: on x86-64 it is `slot` itself
/// (the return address is pushed on the stack and popped by `ret`); on
/// AArch64 the return address arrives in `x30`, `slot` is where the
/// trampoline saved it, and `frame` is the stack pointer at the function's
/// entry (the traced function returns, into the return trampoline, with
/// the same one). Frames are keyed by it.
///
/// # Safety
/// `slot` must be the address of the return address of a function being
/// entered on this thread's stack (on AArch64: the entry trampoline's saved
/// `x30`, which the trampoline puts back into `x30`).
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub unsafe extern "C" fn on_fentry(func: usize, slot: usize, _frame: usize) {
    #[cfg(target_arch = "x86_64")]
    let frame = slot;
    #[cfg(not(target_arch = "x86_64"))]
    let frame = _frame;
    guarded(|st, p, now| {
        let func = func as u32;
        let fret = FRET.load(Ordering::Relaxed);
        // SAFETY: per the caller, `slot` is a live stack word.
        let old = unsafe { *(slot as *const usize) };
        let tail = fret != 0 && old == fret;
        while let Some(&top) = p.depth.checked_sub(1).and_then(|i| p.shadow.get(i)) {
            let below = top.sp < frame && frame - top.sp < STACK_SPAN;
            let same_dead = top.sp == frame && !tail;
            if below || same_dead {
                p.depth -= 1;
                p.overflow = 0;
                evict(p, top, p.depth);
            } else {
                break;
            }
        }
        // (Only on x86-64, where a frame's key is its return address slot;
        // the AArch64 unwinder interposers never unhook surviving frames.)
        if cfg!(target_arch = "x86_64") && p.rehook && fret != 0 {
            let n = rehook_above(p, slot, fret);
            // They were not unwound after all.
            st.unwound.store(
                st.unwound.load(Ordering::Relaxed).saturating_sub(n),
                Ordering::Relaxed,
            );
        }
        let hooked_below = p
            .depth
            .checked_sub(1)
            .and_then(|i| p.shadow.get(i))
            .is_some_and(|f| f.sp == frame && f.ret != 0 && f.unhooked == 0);
        // A tail call whose caller's frame is not on the shadow stack any more
        // cannot be given an exit: record nothing rather than half a call.
        let hook = fret != 0 && (!tail || hooked_below);
        if let Some(sl) = p.shadow.get_mut(p.depth).filter(|_| hook) {
            *sl = Frame {
                func,
                unhooked: 0,
                ts: now,
                sp: frame,
                ret: if tail { TAIL } else { old },
            };
            if !tail {
                // SAFETY: per the caller; the return now goes through the trampoline.
                unsafe { *(slot as *mut usize) = fret };
            }
            push_entry(st, p, func, now, 0);
            p.depth += 1;
        } else if fret == 0 {
            // Returns are not hooked here (CET shadow stacks): entry events only.
            push_entry(st, p, func, now, FLAG_ENTRY_ONLY);
        } else {
            bump(&st.too_deep);
        }
    })
}

/// An exception or panic was caught: the frames above `limit` on this stack
/// survived it, so their returns are hooked again (any further unwind starts
/// with [`unhook_returns`] again). A frame whose slot no longer holds its
/// return address is dead and stays unhooked.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn rehook_above(p: &mut Private, limit: usize, fret: usize) -> u64 {
    p.rehook = false;
    let mut base_ok = false;
    let mut n = 0;
    for i in 0..p.depth {
        let Some(f) = p.shadow.get_mut(i) else { break };
        if f.unhooked == 0 {
            continue;
        }
        if f.ret > TAIL {
            // SAFETY: the slot of a frame entered on this thread's stack,
            // above `limit` (live), read and written only if it still holds
            // the frame's own return address.
            unsafe {
                base_ok = f.sp > limit && *(f.sp as *const usize) == f.ret;
                if base_ok {
                    *(f.sp as *mut usize) = fret;
                    f.unhooked = 0;
                    n += 1;
                }
            }
        } else if f.ret == TAIL && base_ok {
            f.unhooked = 0;
        } else {
            base_ok = false;
        }
    }
    n
}

/// Run `f` on this thread's own state (if it has a block) with the
/// re-entrancy flag set, passing whether it was already set; for the paths
/// that must not skip a busy thread (returns, the unwinder).
#[inline(always)]
fn with_own<R>(f: impl FnOnce(&ThreadState, &mut Private, bool) -> R) -> Option<R> {
    let st = this_thread();
    if st.is_null() || st as usize == tp::INIT {
        return None;
    }
    // SAFETY: blocks are never unmapped.
    let st = unsafe { &*st };
    let was_busy = st.busy.swap(true, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    // SAFETY: the private part belongs to this thread.
    let r = f(st, unsafe { &mut *st.private.get() }, was_busy);
    compiler_fence(Ordering::SeqCst);
    st.busy.store(was_busy, Ordering::Relaxed);
    Some(r)
}

/// Hook again the returns of this thread's frames whose slot lies above
/// `sp`, that an unwind gave back and that survived it: at the end of a C++
/// `catch` (`_Unwind_DeleteException`; `sp` is the caller's stack pointer),
/// or once the catching frame of an exception is known (see
/// `crate::whole`).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub fn rehook_after_catch(sp: usize) {
    let fret = FRET.load(Ordering::Relaxed);
    with_own(|st, p, was_busy| {
        if p.rehook && fret != 0 && !was_busy {
            let n = rehook_above(p, sp, fret);
            // They were not unwound after all.
            st.unwound.store(
                st.unwound.load(Ordering::Relaxed).saturating_sub(n),
                Ordering::Relaxed,
            );
        }
    });
}

/// Remember the return address slot of the frame that will catch the
/// exception being raised (`usize::MAX`: none, or a forced unwind), for
/// [`unhook_returns`] at `_Unwind_Resume`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub fn set_unwind_limit(limit: usize) {
    with_own(|_, p, _| p.unwind_limit = limit);
}

/// The limit [`set_unwind_limit`] remembered.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub fn unwind_limit() -> usize {
    with_own(|_, p, _| p.unwind_limit).unwrap_or(usize::MAX)
}

/// Called by the return trampoline: the function whose frame is keyed by
/// `slot` (see [`on_fentry`]: its return address slot on x86-64, its entry
/// stack pointer on AArch64) returned. Records the exit(s) and returns
/// where it must go.
///
/// # Safety
/// Only the return trampoline calls it, on the thread whose frame it was.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub unsafe extern "C" fn on_fret(slot: usize) -> usize {
    let now = hook_now();
    let ret = with_own(|st, p, was_busy| {
        let mut found = None;
        for i in (0..p.depth).rev() {
            if let Some(f) = p.shadow.get(i) {
                if f.sp == slot && f.ret > TAIL && f.unhooked == 0 {
                    found = Some(i);
                    break;
                }
            }
        }
        match found {
            Some(i) => {
                // Frames above `i` are the tail-called functions sharing this
                // slot (recorded) or stale frames (dropped).
                for j in (i..p.depth).rev() {
                    let Some(&f) = p.shadow.get(j) else { continue };
                    if f.sp == slot && f.ret != 0 && f.unhooked == 0 && !was_busy {
                        record_exit(st, p, f.func, now, now.saturating_sub(f.ts), j, 0);
                    } else if f.sp != slot {
                        evict(p, f, j);
                    }
                }
                let r = p.shadow.get(i).map_or(0, |f| f.ret);
                p.depth = i;
                p.overflow = 0;
                r
            }
            None => {
                // A frame dropped as stale that was alive after all (it was
                // on another stack: a coroutine's, an alternate signal
                // stack). Newest first: the slot may have been reused since.
                let mut r = 0;
                let mut call = None;
                let next = p.evicted_next;
                for k in 1..=EVICTED {
                    let i = next.wrapping_sub(k) % EVICTED;
                    let Some(e) = p.evicted.get_mut(i) else {
                        continue;
                    };
                    if e.0 == slot && e.1 != 0 {
                        r = e.1;
                        // Two word stores (a merged 16-byte store would use a
                        // vector register, which the lean trampolines do not save).
                        // SAFETY: plain stores to fields of our own array.
                        unsafe {
                            std::ptr::write_volatile(&mut e.0, 0);
                            std::ptr::write_volatile(&mut e.1, 0);
                        }
                        call = p.evicted_call.get(i).copied();
                        break;
                    }
                }
                match call {
                    Some((ts, fd)) if !was_busy => {
                        let (func, depth) = (fd as u32, (fd >> 32) as usize);
                        record_exit(st, p, func, now, now.saturating_sub(ts), depth, 0);
                    }
                    _ => bump(&st.unmatched),
                }
                r
            }
        }
    })
    .unwrap_or(0);
    if ret == 0 {
        // Through the shim: the hook itself makes no other call (lean check).
        return call_slow_arg(lost_return, slot);
    }
    ret
}

/// A hooked return with no record: the return address is unknown. Never
/// returns.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
extern "C" fn lost_return(slot: usize) -> usize {
    eprintln!(
        "tracer: fatal: a hooked return (return address slot {slot:#x}) has no record on this \
         thread's shadow stack, so the return address is unknown. Please report this with the \
         program; disable return hooking with TRACER_NO_RETURN_HOOK=1 to work around it"
    );
    std::process::abort()
}

/// Give back the hooked return addresses of this thread's frames whose slot
/// lies below `limit` (`usize::MAX`: all): an exception or a forced unwind
/// is about to walk through them, and the unwinder must see the real return
/// addresses. They have no recorded exit (counted in `unwound`); frames
/// that survive after all are hooked again by [`rehook_after_catch`] or at
/// the next traced entry. Returns how many frames it gave back.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub fn unhook_returns(limit: usize) -> usize {
    with_own(|st, p, _| give_back(st, p, limit)).unwrap_or(0)
}

/// Give back every hooked return address of this thread before a stack walk
/// (`backtrace`, `_Unwind_Backtrace`), so the walk sees the real callers;
/// [`rehook_after_catch`] hooks them again after it. `false` (nothing given
/// back) when the thread has no hooked frame, or when it is inside a hook (a
/// signal handler interrupted one): then the walk stops at the return
/// trampoline.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub fn unhook_for_walk() -> bool {
    with_own(|st, p, was_busy| !was_busy && give_back(st, p, usize::MAX) > 0).unwrap_or(false)
}

/// The word at `addr`, if it can be read: a frame's slot may lie on a
/// stack that is gone (a coroutine's, unmapped since). A system call, for
/// the unwinder's paths only.
pub(crate) fn peek(addr: usize) -> Option<usize> {
    let mut v = 0usize;
    let local = libc::iovec {
        iov_base: &mut v as *mut usize as *mut libc::c_void,
        iov_len: std::mem::size_of::<usize>(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: std::mem::size_of::<usize>(),
    };
    // SAFETY: reads this process's own memory into `v`; the kernel checks
    // the remote range and fails with EFAULT where it is not mapped.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    (n == std::mem::size_of::<usize>() as isize).then_some(v)
}

/// Put `ret` back in the slot at `slot` if it still holds the return
/// trampoline `fret`. `None`: the slot cannot be read (its stack is gone);
/// else whether it was put back.
pub(crate) fn restore_slot(slot: usize, fret: usize, ret: usize) -> Option<bool> {
    if peek(slot)? != fret {
        return Some(false);
    }
    // SAFETY: a mapped stack word holding the trampoline's address, which
    // only a hooked frame's slot does.
    unsafe { *(slot as *mut usize) = ret };
    Some(true)
}

/// [`unhook_returns`] on this thread's own state.
fn give_back(st: &ThreadState, p: &mut Private, limit: usize) -> usize {
    let fret = FRET.load(Ordering::Relaxed);
    let mut n = 0;
    let mut frames = 0;
    // Newest first: a stale frame may share a live frame's slot.
    for i in (0..p.depth).rev() {
        let Some(f) = p.shadow.get_mut(i) else {
            continue;
        };
        if f.ret == 0 || f.sp >= limit {
            continue;
        }
        if f.ret > TAIL && f.unhooked == 0 {
            match restore_slot(f.sp, fret, f.ret) {
                Some(true) => n += 1,
                Some(false) => {}
                // Its stack is gone (a coroutine's, freed): the frame is
                // dead; never look at its slot again.
                None => f.ret = 0,
            }
        }
        f.unhooked = 1;
        p.rehook = true;
        frames += 1;
    }
    for e in p.evicted.iter_mut().filter(|e| e.1 != 0 && e.0 < limit) {
        if restore_slot(e.0, fret, e.1) == Some(true) {
            n += 1;
        }
        *e = (0, 0);
    }
    st.unwound
        .store(st.unwound.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    frames
}

/// An unwind is about to go through the frame keyed `key` (its entry stack
/// pointer on AArch64, its return address slot on x86-64), which returns
/// into the return trampoline: the AArch64 unwinder walk (see
/// `crate::whole`), the x86-64 trampoline's personality routine. Its shadow
/// frame (and the tail-called ones that share it) is marked as given back,
/// and its original return address returned, for the caller to store where
/// the frame keeps it. `None` if this thread has no such hooked frame.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn give_back_return(key: usize) -> Option<usize> {
    with_own(|st, p, _| {
        // x86-64: hooked again by `rehook_after_catch` if it survives.
        p.rehook |= cfg!(target_arch = "x86_64");
        let mut found = None;
        for i in (0..p.depth).rev() {
            let Some(f) = p.shadow.get(i) else { continue };
            if f.sp == key && f.ret > TAIL && f.unhooked == 0 {
                found = Some((i, f.ret));
                break;
            }
        }
        let ret = match found {
            Some((i, ret)) => {
                for j in i..p.depth {
                    if let Some(f) = p.shadow.get_mut(j).filter(|f| f.sp == key) {
                        f.unhooked = 1;
                    }
                }
                ret
            }
            None => {
                let e = p.evicted.iter_mut().find(|e| e.0 == key && e.1 != 0)?;
                let ret = e.1;
                *e = (0, 0);
                ret
            }
        };
        bump(&st.unwound);
        Some(ret)
    })
    .flatten()
}

/// How many hooked returns this thread has (AArch64 unwinder walks are
/// skipped when there are none).
#[cfg(target_arch = "aarch64")]
pub fn hooked_returns() -> usize {
    with_own(|_, p, _| {
        let live = p
            .shadow
            .iter()
            .take(p.depth)
            .filter(|f| f.ret > TAIL && f.unhooked == 0)
            .count();
        live + p.evicted.iter().filter(|e| e.1 != 0).count()
    })
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: u64) -> Event {
        Event {
            ts,
            ..Event::default()
        }
    }

    #[test]
    fn shared_blocks_become_private_in_a_forked_child() {
        init(1);
        let st = allocate(1, 64, 0x7fff_fff0);
        assert!(!st.is_null());
        // SAFETY: blocks are never unmapped.
        let st = unsafe { &*st };
        assert!(block_layout(st).fd >= 0, "memfd available on this kernel");
        let mut ct = 0;
        assert!(st.ring.push(&mut ct, &ev(1)));
        // SAFETY: the child only pushes to a ring (no allocation, no locks)
        // and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut ct = 0;
            for i in 0..10 {
                st.ring.push(&mut ct, &ev(i));
            }
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(i32::from(block_layout(st).fd != -1)) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status));
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "the child's block lost its fd"
        );
        assert_eq!(
            st.ring.written(),
            1,
            "the child's events stayed in the child"
        );
        assert!(block_layout(st).fd >= 0, "the parent keeps its memfd");
        st.dead.store(true, Ordering::Release);
    }
}
