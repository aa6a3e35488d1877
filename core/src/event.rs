//! Events and the per-thread ring that carries them.
//!
//! # The ring
//!
//! One ring per traced thread; that thread is its only producer, and one
//! reader at a time is its consumer (the in-process collector, or the `tracer`
//! program through shared memory). The algorithm is the classic bounded
//! single-producer single-consumer queue (Lamport 1983, as in the Linux
//! kernel's `kfifo` and `Documentation/core-api/circular-buffers.rst`):
//!
//! - `head` counts events ever written; only the producer stores it.
//! - `tail` counts events ever consumed; only the consumer stores it.
//! - Both are free-running `u64`s; slot `i` lives at `i & (capacity - 1)`.
//! - The producer writes the slot, then publishes `head` with `Release`. The
//!   consumer reads `head` with `Acquire`, reads the slots, then publishes
//!   `tail` with `Release`; the producer reads `tail` with `Acquire` before it
//!   reuses a slot.
//! - A full ring drops the new event and counts it in `dropped`; the producer
//!   never waits.
//! - The producer keeps a private copy of `tail` and only rereads the shared
//!   one when its copy says the ring is full, so the common case touches no
//!   cache line the consumer writes.
//!
//! The memory is plain bytes with a `#[repr(C)]` header, so it can live in a
//! shared mapping and be read by another process.
//!
//! The protocol is model-checked with loom (`core/tests/loom.rs`: every
//! interleaving of a producer and a consumer on a two-slot ring, slot
//! accesses included); the atomics and the slot cell come from
//! `core/src/sync.rs` for that.

use crate::sync::{AtomicU32, AtomicU64, Ordering, UnsafeCell};

/// A function was entered.
pub const KIND_ENTRY: u8 = 0;
/// A function returned (or was unwound through).
pub const KIND_EXIT: u8 = 1;
/// Argument values of the call whose entry follows (see
/// [`crate::capture`]): `ts` and `dur` carry two words, `flags` the pair's
/// index (0 starts a new set), `func` and `depth` those of the entry.
/// Written only for functions enabled with capture; readers that do not
/// know the kind skip it.
pub const KIND_ARGS: u8 = 2;
/// The return value of the call whose exit follows: `ts` is the integer
/// return register, `dur` the floating-point one (its low 64 bits);
/// `func` and `depth` those of the exit.
pub const KIND_RETVAL: u8 = 3;

/// Whether `kind` is a function entry or exit (not a values event).
#[inline]
pub fn is_call(kind: u8) -> bool {
    kind == KIND_ENTRY || kind == KIND_EXIT
}

/// The event came from an `async fn` (entry at first poll, exit at completion).
pub const FLAG_ASYNC: u8 = 1;
/// An entry whose exit will not be seen (returns are not hooked where CET
/// shadow stacks are active).
pub const FLAG_ENTRY_ONLY: u8 = 2;
/// On an exit (only: a values event's `flags` is its index): an exit its own
/// thread has already counted in its per-function counters
/// (the runtime does so while another process consumes the rings, and for
/// exits a full ring dropped): a drainer that keeps totals must not count
/// it again. The `tracer` program clears it as it reads exits; other
/// readers ignore it.
pub const FLAG_COUNTED: u8 = 4;

/// One fixed-size record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// Raw clock ticks (see the runtime's clock for the conversion to ns).
    pub ts: u64,
    /// For exits: ticks since the matching entry. Zero for entries.
    pub dur: u64,
    /// Function index in the registry.
    pub func: u32,
    /// Call depth of this thread's traced functions (0 = outermost).
    pub depth: u16,
    /// [`KIND_ENTRY`] or [`KIND_EXIT`].
    pub kind: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
}

impl Event {
    /// The event as a reader sees it: [`FLAG_COUNTED`], the runtime's own
    /// bookkeeping, cleared on an exit (a values event's `flags` is its
    /// index, unchanged).
    pub fn as_read(&self) -> Event {
        let mut e = *self;
        if e.kind == KIND_EXIT {
            e.flags &= !FLAG_COUNTED;
        }
        e
    }
}

const MAGIC: u32 = 0x7472_6331; // "trc1"
/// Version of the ring layout; readers refuse any other.
pub const RING_VERSION: u32 = 1;

#[repr(C, align(64))]
struct Line<T>(T);

/// The ring's header, at the start of its memory.
#[repr(C)]
pub struct RingHeader {
    magic: AtomicU32,
    version: AtomicU32,
    capacity: AtomicU64,
    /// Thread id of the producer (for display).
    pub tid: AtomicU64,
    /// Events dropped because the ring was full.
    pub dropped: AtomicU64,
    head: Line<AtomicU64>,
    tail: Line<AtomicU64>,
}

/// A ring over memory someone else owns (an mmap, usually).
pub struct Ring {
    hdr: *const RingHeader,
    slots: *const UnsafeCell<Event>,
    mask: u64,
}

// SAFETY: all shared state is accessed through atomics or through slots whose
// ownership the head/tail protocol hands from producer to consumer.
unsafe impl Send for Ring {}
// SAFETY: as above; `push` must only be called by one thread and `drain` by
// one thread, which the callers guarantee (documented on both).
unsafe impl Sync for Ring {}

/// Why memory could not be attached as a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachError {
    /// Too small for its header or its declared capacity.
    TooSmall,
    /// Not a ring (wrong magic number).
    BadMagic,
    /// A ring of another layout version.
    Version(u32),
    /// Capacity not a power of two.
    BadCapacity,
}

impl std::fmt::Display for AttachError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttachError::TooSmall => f.write_str("buffer smaller than its declared size"),
            AttachError::BadMagic => f.write_str("not a tracer event buffer"),
            AttachError::Version(v) => write!(
                f,
                "event buffer layout version {v}, this build reads {RING_VERSION}: use matching tracer versions"
            ),
            AttachError::BadCapacity => f.write_str("event buffer capacity is not a power of two"),
        }
    }
}

impl std::error::Error for AttachError {}

impl Ring {
    /// Bytes of memory a ring of `capacity` events needs.
    ///
    /// Panics if that does not fit in a `usize`; for a capacity read from
    /// memory someone else wrote, use [`Ring::checked_bytes_for`].
    pub fn bytes_for(capacity: usize) -> usize {
        Ring::checked_bytes_for(capacity as u64).expect("ring capacity overflows the address space")
    }

    /// Bytes of memory a ring of `capacity` events needs, or `None` if that
    /// overflows a `usize` (a capacity from a hostile or corrupt header).
    pub fn checked_bytes_for(capacity: u64) -> Option<usize> {
        usize::try_from(capacity)
            .ok()?
            .checked_mul(std::mem::size_of::<UnsafeCell<Event>>())?
            .checked_add(std::mem::size_of::<RingHeader>())
    }

    /// Lay out a new, empty ring in `mem`.
    ///
    /// # Safety
    /// `mem` must be valid for reads and writes of `Ring::bytes_for(capacity)`
    /// bytes, aligned to 64, zeroed, unused by anything else, and outlive the
    /// ring.
    /// `capacity` must be a power of two.
    pub unsafe fn init(mem: *mut u8, capacity: usize, tid: u64) -> Ring {
        assert!(capacity.is_power_of_two());
        let hdr = mem as *mut RingHeader;
        // Field by field, not one `RingHeader` value: a typed copy of the whole
        // header would leave its padding (the rest of each cache line)
        // uninitialized, and readers copy the header's bytes (Miri caught a
        // test doing so). The padding keeps the caller's zeroes.
        // SAFETY: the caller gives us exclusive, aligned, large-enough memory;
        // each pointer is to a field of the header in it.
        unsafe {
            use std::ptr::addr_of_mut;
            addr_of_mut!((*hdr).magic).write(AtomicU32::new(MAGIC));
            addr_of_mut!((*hdr).version).write(AtomicU32::new(RING_VERSION));
            addr_of_mut!((*hdr).capacity).write(AtomicU64::new(capacity as u64));
            addr_of_mut!((*hdr).tid).write(AtomicU64::new(tid));
            addr_of_mut!((*hdr).dropped).write(AtomicU64::new(0));
            addr_of_mut!((*hdr).head.0).write(AtomicU64::new(0));
            addr_of_mut!((*hdr).tail.0).write(AtomicU64::new(0));
        }
        // SAFETY: within the region the caller sized with bytes_for.
        let slots = unsafe { mem.add(std::mem::size_of::<RingHeader>()) } as *mut UnsafeCell<Event>;
        // Zeroed memory is a valid std slot; a loom slot must be constructed.
        #[cfg(loom)]
        for i in 0..capacity {
            // SAFETY: slot `i` is within the region, aligned, and unused.
            unsafe { slots.add(i).write(UnsafeCell::new(Event::default())) };
        }
        Ring {
            hdr,
            slots,
            mask: capacity as u64 - 1,
        }
    }

    /// Attach to a ring someone else laid out (possibly another process).
    ///
    /// # Safety
    /// `mem` must be valid for `len` bytes, aligned to 64, and outlive the ring.
    pub unsafe fn attach(mem: *mut u8, len: usize) -> Result<Ring, AttachError> {
        if len < std::mem::size_of::<RingHeader>() {
            return Err(AttachError::TooSmall);
        }
        // SAFETY: large enough for the header, per the check above.
        let hdr = unsafe { &*(mem as *const RingHeader) };
        if hdr.magic.load(Ordering::Acquire) != MAGIC {
            return Err(AttachError::BadMagic);
        }
        let v = hdr.version.load(Ordering::Relaxed);
        if v != RING_VERSION {
            return Err(AttachError::Version(v));
        }
        let cap = hdr.capacity.load(Ordering::Relaxed);
        if !cap.is_power_of_two() {
            return Err(AttachError::BadCapacity);
        }
        // Checked: the header may come from another process, and a capacity
        // of 2^62 would wrap the size to something small.
        match Ring::checked_bytes_for(cap) {
            Some(need) if need <= len => {}
            _ => return Err(AttachError::TooSmall),
        }
        Ok(Ring {
            hdr,
            // SAFETY: within `len`, checked above.
            slots: unsafe { mem.add(std::mem::size_of::<RingHeader>()) } as *const _,
            mask: cap - 1,
        })
    }

    fn hdr(&self) -> &RingHeader {
        // SAFETY: `init`/`attach` callers keep the memory alive and valid.
        unsafe { &*self.hdr }
    }

    /// The ring's header.
    pub fn header(&self) -> &RingHeader {
        self.hdr()
    }

    /// Capacity in events.
    pub fn capacity(&self) -> usize {
        self.mask as usize + 1
    }

    /// Append one event, or drop and count it if the ring is full.
    ///
    /// `cached_tail` is the producer's private copy of the consumer position
    /// (start it at 0). Only one thread may push to a ring, ever at a time.
    #[inline(always)]
    pub fn push(&self, cached_tail: &mut u64, ev: &Event) -> bool {
        let h = self.hdr();
        let head = h.head.0.load(Ordering::Relaxed);
        if head.wrapping_sub(*cached_tail) > self.mask {
            *cached_tail = h.tail.0.load(Ordering::Acquire);
            if head.wrapping_sub(*cached_tail) > self.mask {
                h.dropped
                    .store(h.dropped.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                return false;
            }
        }
        // SAFETY: slot `head` is not visible to the consumer until `head` is
        // published below, and the consumer has released it (tail > head - cap).
        unsafe {
            (*self.slots.add((head & self.mask) as usize)).with_mut(|p| *p = *ev);
        }
        h.head.0.store(head + 1, Ordering::Release);
        true
    }

    /// Events written and not yet consumed.
    pub fn len(&self) -> usize {
        let h = self.hdr();
        let head = h.head.0.load(Ordering::Acquire);
        let tail = h.tail.0.load(Ordering::Acquire);
        head.wrapping_sub(tail) as usize
    }

    /// No event waits to be consumed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events ever written (the producer position).
    pub fn written(&self) -> u64 {
        self.hdr().head.0.load(Ordering::Acquire)
    }

    /// Events dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.hdr().dropped.load(Ordering::Relaxed)
    }

    /// Consume up to `max` events, oldest first. Only one thread may drain a
    /// ring at a time. Returns how many were consumed.
    ///
    /// Never more than the capacity at once, even if the positions in the
    /// header say otherwise (a corrupt ring); [`Ring::try_drain`] reports
    /// such a ring instead.
    pub fn drain(&self, max: usize, f: impl FnMut(&Event)) -> usize {
        let h = self.hdr();
        let tail = h.tail.0.load(Ordering::Relaxed);
        let head = h.head.0.load(Ordering::Acquire);
        let n = head.wrapping_sub(tail).min(self.mask + 1) as usize;
        self.drain_from(tail, n.min(max), f)
    }

    /// [`Ring::drain`], but a ring whose producer position is more than the
    /// capacity ahead of the consumer position (impossible for a ring that
    /// follows the protocol: its memory is corrupt or hostile) is an error,
    /// and nothing is consumed.
    pub fn try_drain(&self, max: usize, f: impl FnMut(&Event)) -> Result<usize, RingCorrupt> {
        let h = self.hdr();
        let tail = h.tail.0.load(Ordering::Relaxed);
        let head = h.head.0.load(Ordering::Acquire);
        let pending = head.wrapping_sub(tail);
        if pending > self.mask + 1 {
            return Err(RingCorrupt {
                head,
                tail,
                capacity: self.mask + 1,
            });
        }
        Ok(self.drain_from(tail, (pending as usize).min(max), f))
    }

    fn drain_from(&self, tail: u64, n: usize, mut f: impl FnMut(&Event)) -> usize {
        let h = self.hdr();
        for i in 0..n as u64 {
            // SAFETY: slots in [tail, head) were published by the producer's
            // Release store of head, which our Acquire load observed.
            let ev = unsafe {
                (*self.slots.add((tail.wrapping_add(i) & self.mask) as usize)).with(|p| *p)
            };
            f(&ev);
        }
        h.tail
            .0
            .store(tail.wrapping_add(n as u64), Ordering::Release);
        n
    }
}

/// A ring whose positions cannot be right: the producer is more than the
/// capacity ahead of the consumer (see [`Ring::try_drain`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingCorrupt {
    /// The producer position found.
    pub head: u64,
    /// The consumer position found.
    pub tail: u64,
    /// The ring's capacity, in events.
    pub capacity: u64,
}

impl std::fmt::Display for RingCorrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event buffer positions are corrupt: {} events pending in a buffer of {}",
            self.head.wrapping_sub(self.tail),
            self.capacity
        )
    }
}

impl std::error::Error for RingCorrupt {}

/// Heap memory for a ring, for tests and for readers that copy.
pub struct OwnedRing {
    ring: Ring,
    _mem: Vec<Line<[u8; 64]>>,
}

impl OwnedRing {
    /// A new empty ring of `capacity` (a power of two) events on the heap.
    pub fn new(capacity: usize) -> OwnedRing {
        let bytes = Ring::bytes_for(capacity);
        let mut mem: Vec<Line<[u8; 64]>> = (0..bytes.div_ceil(64)).map(|_| Line([0; 64])).collect();
        // SAFETY: `mem` is 64-aligned, zeroed, large enough, and kept alive in
        // the struct for as long as the ring.
        let ring = unsafe { Ring::init(mem.as_mut_ptr() as *mut u8, capacity, 0) };
        OwnedRing { ring, _mem: mem }
    }
}

impl std::ops::Deref for OwnedRing {
    type Target = Ring;
    fn deref(&self) -> &Ring {
        &self.ring
    }
}

impl Clone for Line<[u8; 64]> {
    fn clone(&self) -> Self {
        Line(self.0)
    }
}

// Under loom only the model tests run (`core/tests/loom.rs`).
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ev(i: u64) -> Event {
        Event {
            ts: i,
            dur: i * 2,
            func: i as u32,
            depth: 0,
            kind: KIND_ENTRY,
            flags: 0,
        }
    }

    /// Readers see an exit without the runtime's `FLAG_COUNTED`, its other
    /// flags kept; a values event's `flags` (its index) is never touched.
    #[test]
    fn readers_see_exits_without_the_counted_flag() {
        let exit = Event {
            kind: KIND_EXIT,
            flags: FLAG_COUNTED | FLAG_ASYNC,
            ..ev(3)
        };
        assert_eq!(exit.as_read().flags, FLAG_ASYNC);
        assert_eq!(exit.as_read().dur, exit.dur);
        let args = Event {
            kind: KIND_ARGS,
            flags: 4,
            ..ev(3)
        };
        assert_eq!(args.as_read().flags, 4);
    }

    /// A seeded fuzz of attaching to hostile shared memory: 20,000 headers (300
    /// under Miri)
    /// with random bytes changed (magic, version, capacity, indices) attach
    /// or are refused, and draining an attached one never reads outside the
    /// memory, never yields more than the capacity, and never panics.
    #[test]
    fn hostile_headers_are_refused_or_drained_safely() {
        const CAP: usize = 16;
        const LEN: usize = 192 + CAP * 24;
        #[repr(C, align(64))]
        struct Block([u8; LEN]);
        let mut clean = Block([0; LEN]);
        // SAFETY: `clean` is 64-aligned and LEN = bytes_for(CAP) bytes long.
        let r = unsafe { Ring::init(clean.0.as_mut_ptr(), CAP, 7) };
        let mut ct = 0;
        for i in 0..10 {
            r.push(&mut ct, &ev(i));
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut attached, mut refused, mut corrupt) = (0, 0, 0);
        let rounds = if cfg!(miri) { 300 } else { 20_000 };
        for _ in 0..rounds {
            let mut b = Block(clean.0);
            for _ in 0..1 + next() % 4 {
                let at = (next() % 192) as usize;
                b.0[at] = next() as u8;
            }
            let len = if next() % 8 == 0 {
                (next() % LEN as u64) as usize
            } else {
                LEN
            };
            // SAFETY: `b` is 64-aligned, valid for `len` <= LEN bytes, and
            // outlives the ring.
            match unsafe { Ring::attach(b.0.as_mut_ptr(), len) } {
                Err(_) => refused += 1,
                Ok(r) => {
                    attached += 1;
                    let mut n = 0;
                    match r.try_drain(usize::MAX, |_| n += 1) {
                        Ok(k) => assert!(k == n && n <= r.capacity()),
                        Err(_) => corrupt += 1,
                    }
                }
            }
        }
        assert!(
            attached > 0 && refused > 0,
            "{attached} {refused} {corrupt}"
        );
    }

    #[test]
    fn layout_is_stable() {
        assert_eq!(std::mem::size_of::<Event>(), 24);
        assert_eq!(std::mem::size_of::<RingHeader>(), 192);
    }

    #[test]
    fn full_ring_drops_and_counts() {
        let r = OwnedRing::new(4);
        let mut ct = 0;
        for i in 0..6 {
            r.push(&mut ct, &ev(i));
        }
        assert_eq!(r.len(), 4);
        assert_eq!(r.dropped(), 2);
        let mut got = vec![];
        r.drain(usize::MAX, |e| got.push(e.ts));
        assert_eq!(got, vec![0, 1, 2, 3]);
        assert!(r.push(&mut ct, &ev(9)));
        r.drain(usize::MAX, |e| got.push(e.ts));
        assert_eq!(got, vec![0, 1, 2, 3, 9]);
    }

    #[test]
    fn attach_checks_the_header() {
        let r = OwnedRing::new(8);
        let mem = r.hdr as *mut u8;
        // SAFETY: the owned ring's memory is alive for this test.
        let a = unsafe { Ring::attach(mem, Ring::bytes_for(8)) }.unwrap();
        assert_eq!(a.capacity(), 8);
        assert_eq!(
            // SAFETY: as above.
            unsafe { Ring::attach(mem, 100) }.err(),
            Some(AttachError::TooSmall)
        );
        let mut junk = vec![Line([0u8; 64]); 8];
        assert_eq!(
            // SAFETY: `junk` is alive, aligned and 512 bytes long.
            unsafe { Ring::attach(junk.as_mut_ptr() as *mut u8, 512) }.err(),
            Some(AttachError::BadMagic)
        );
    }

    #[test]
    fn hostile_headers_are_refused_not_trusted() {
        assert_eq!(Ring::checked_bytes_for(8), Some(192 + 8 * 24));
        assert_eq!(Ring::checked_bytes_for(1 << 62), None);
        assert_eq!(Ring::checked_bytes_for(u64::MAX), None);
        let r = OwnedRing::new(8);
        let mem = r.hdr as *mut u8;
        // A capacity whose size wraps: refused, not attached over 8 slots.
        r.header().capacity.store(1 << 62, Ordering::Relaxed);
        assert_eq!(
            // SAFETY: the owned ring's memory is alive for this test.
            unsafe { Ring::attach(mem, Ring::bytes_for(8)) }.err(),
            Some(AttachError::TooSmall)
        );
        r.header().capacity.store(8, Ordering::Relaxed);
        // SAFETY: as above.
        let a = unsafe { Ring::attach(mem, Ring::bytes_for(8)) }.unwrap();
        // The producer claims 2^63 pending events.
        r.hdr().head.0.store(1 << 63, Ordering::Relaxed);
        let mut n = 0;
        let e = a.try_drain(usize::MAX, |_| n += 1).unwrap_err();
        assert_eq!((e.capacity, n), (8, 0));
        assert!(e.to_string().contains("corrupt"), "{e}");
        // `drain` takes at most a ring's worth, whatever the header says.
        assert_eq!(a.drain(usize::MAX, |_| {}), 8);
        // Positions near the end of the u64 range wrap, never panic.
        r.hdr().tail.0.store(u64::MAX - 1, Ordering::Relaxed);
        r.hdr().head.0.store(2, Ordering::Relaxed);
        assert_eq!(a.try_drain(usize::MAX, |_| {}), Ok(4));
    }

    #[test]
    fn spsc_threads_lose_nothing_but_what_is_counted() {
        let r = Arc::new(OwnedRing::new(256));
        let n = if cfg!(miri) { 500 } else { 200_000u64 };
        let p = {
            let r = r.clone();
            std::thread::spawn(move || {
                let mut ct = 0;
                let mut ok = 0u64;
                for i in 0..n {
                    if r.push(&mut ct, &ev(i)) {
                        ok += 1;
                    }
                }
                ok
            })
        };
        let mut got = 0u64;
        let mut last = None;
        let mut take = |e: &Event| {
            if let Some(l) = last {
                assert!(e.ts > l, "events out of order");
            }
            assert_eq!(e.dur, e.ts * 2, "torn event");
            last = Some(e.ts);
            got += 1;
        };
        // `is_finished` does not synchronize with the producer (Miri found
        // this loop ending on a stale `head` when it also checked
        // `is_empty`): the rest is drained after the join, which does.
        while !p.is_finished() {
            r.drain(64, &mut take);
        }
        let ok = p.join().unwrap();
        r.drain(usize::MAX, &mut take);
        assert_eq!(got, ok);
        assert_eq!(ok + r.dropped(), n);
    }
}
