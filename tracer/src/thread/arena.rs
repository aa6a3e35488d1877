//! The arena thread blocks live in: a few sealed `memfd`s ("segments")
//! shared with the `tracer` program, each carved into blocks, so the tracer
//! holds at most [`SEGMENTS`] of the program's file descriptors however many
//! threads it has (it once held one per thread, and a program with more
//! threads than free descriptors could not open a file).
//!
//! Segment `k` is twice as large as segment `k - 1` (the first is
//! [`FIRST_SEGMENT`] bytes, and a segment is never smaller than the block
//! that opens it), so [`SEGMENTS`] of them cover far more threads than a
//! process has. A segment is a sparse file: a byte costs memory only once
//! its block is used. Each segment is sized once and sealed against
//! shrinking, growing and further seals, so a reader's mapping can never
//! SIGBUS; each block is mapped on its own (`MAP_SHARED` at its offset) and
//! a reader maps exactly the blocks it is handed.
//!
//! Allocation happens only when a thread records its first event (or a dead
//! thread's block cannot be reused), under a spin lock; everything here is
//! system calls and atomics, no allocation (async-signal-safe: a thread
//! that is setting up its block records nothing, so it never re-enters).

use super::block::{fd_in_reserve, BLOCK_FD_RESERVE, UNSHARED_ERRNO, UNSHARED_RESERVE};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

/// Segments at most: the tracer's descriptors for thread blocks.
pub const SEGMENTS: usize = 16;
/// Bytes of the first segment (ten threads' blocks at the default ring
/// size).
pub const FIRST_SEGMENT: usize = 64 << 20;
/// Largest segment: 16 GiB (1 GiB where `off_t` and addresses are 32 bits).
/// Sixteen segments hold about 144 GiB of blocks, tens of thousands of
/// threads at the default ring size (262,144 events, about 6 MiB).
const MAX_SEGMENT: usize = if usize::BITS > 32 { 1 << 34 } else { 1 << 30 };

struct Segment {
    /// Its memfd; -1 while it does not exist.
    fd: AtomicI32,
    /// Its size.
    len: AtomicUsize,
}

// An array of atomics, so `const` initialisation needs a constant item.
#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Segment = Segment {
    fd: AtomicI32::new(-1),
    len: AtomicUsize::new(0),
};
static SEGS: [Segment; SEGMENTS] = [EMPTY; SEGMENTS];
/// Segments created (the last one is the one blocks are carved from).
static USED: AtomicUsize = AtomicUsize::new(0);
/// Bytes of the last segment already handed out.
static NEXT: AtomicUsize = AtomicUsize::new(0);
static LOCK: AtomicBool = AtomicBool::new(false);

/// Where a block was mapped.
pub(crate) struct Placed {
    /// Its mapping (`MAP_FAILED` if none could be made).
    pub mem: *mut libc::c_void,
    /// The segment's memfd, or negative: the block is private, and why
    /// (see `unshared_reason`).
    pub fd: i32,
    /// Its offset in the segment.
    pub offset: usize,
}

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

fn errno() -> i32 {
    // SAFETY: errno of the failed call, read on this thread.
    unsafe { *libc::__errno_location() }
}

struct Locked;

impl Locked {
    fn take() -> Locked {
        while LOCK
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
        Locked
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        LOCK.store(false, Ordering::Release);
    }
}

/// A new sealed segment of `len` bytes: its fd, or the negative reason.
fn new_segment(len: usize) -> i32 {
    // SAFETY: the name is a NUL-terminated literal; the flags are valid.
    let fd = unsafe {
        libc::memfd_create(
            c"tracer-thread".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return -(UNSHARED_ERRNO + errno());
    }
    let why = if fd_in_reserve(fd, BLOCK_FD_RESERVE) {
        UNSHARED_RESERVE
    } else if libc::off_t::try_from(len).is_err() {
        -(UNSHARED_ERRNO + libc::EFBIG)
    } else {
        // SAFETY: `fd` is our fresh memfd; ftruncate makes it a sparse,
        // zero-filled file of `len` bytes.
        if unsafe { libc::ftruncate(fd, len as libc::off_t) } == 0 {
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
            return fd;
        }
        -(UNSHARED_ERRNO + errno())
    };
    // SAFETY: `fd` is ours and not used elsewhere.
    unsafe { libc::close(fd) };
    why
}

/// Room for `len` bytes (page-rounded): the segment's fd and the offset,
/// or the negative reason there is none.
fn reserve(len: usize) -> (i32, usize) {
    let _l = Locked::take();
    let used = USED.load(Ordering::Relaxed);
    if used > 0 {
        let s = &SEGS[used - 1];
        let next = NEXT.load(Ordering::Relaxed);
        if s.len.load(Ordering::Relaxed) - next >= len {
            NEXT.store(next + len, Ordering::Relaxed);
            return (s.fd.load(Ordering::Relaxed), next);
        }
    }
    if used == SEGMENTS {
        return (-(UNSHARED_ERRNO + libc::ENOSPC), 0);
    }
    let grown = if used == 0 {
        FIRST_SEGMENT
    } else {
        SEGS[used - 1].len.load(Ordering::Relaxed).saturating_mul(2)
    };
    let size = grown.min(MAX_SEGMENT).max(len);
    let fd = new_segment(size);
    if fd < 0 {
        return (fd, 0);
    }
    SEGS[used].fd.store(fd, Ordering::Relaxed);
    SEGS[used].len.store(size, Ordering::Relaxed);
    USED.store(used + 1, Ordering::Relaxed);
    NEXT.store(len, Ordering::Relaxed);
    (fd, 0)
}

/// Map `len` bytes for a block: a piece of a segment mapped `MAP_SHARED`,
/// else an anonymous private mapping whose `fd` says why not.
pub(crate) fn place(len: usize) -> Placed {
    let pg = page();
    let Some(len) = len.checked_next_multiple_of(pg) else {
        return private(len, -(UNSHARED_ERRNO + libc::ENOMEM));
    };
    let (fd, offset) = reserve(len);
    if fd < 0 {
        return private(len, fd);
    }
    // SAFETY: a fresh shared mapping of `len` bytes at `offset` of our own
    // segment, inside its size (`reserve` carved it out of it); the offset
    // is page-aligned (every carved length is) and fits `off_t` (segments
    // do).
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            offset as libc::off_t,
        )
    };
    if mem == libc::MAP_FAILED {
        return private(len, -(UNSHARED_ERRNO + errno()));
    }
    Placed { mem, fd, offset }
}

fn private(len: usize, why: i32) -> Placed {
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
    Placed {
        mem,
        fd: why,
        offset: 0,
    }
}

/// Descriptors the arena holds now.
pub fn segments() -> usize {
    USED.load(Ordering::Relaxed)
}

/// In a child after `fork`: start an empty arena for the child's own
/// threads, and close the parent's segments if `close` (every block is
/// private now). Only `close` and atomics (async-signal-safe; the child has
/// one thread).
pub(crate) fn forget_after_fork(close: bool) {
    // The lock may have been held by a thread that does not exist here.
    LOCK.store(false, Ordering::Relaxed);
    let used = USED.load(Ordering::Relaxed);
    for s in &SEGS[..used] {
        let fd = s.fd.swap(-1, Ordering::Relaxed);
        if close && fd >= 0 {
            // SAFETY: the segment's memfd, ours, used by nothing else now.
            unsafe { libc::close(fd) };
        }
        s.len.store(0, Ordering::Relaxed);
    }
    USED.store(0, Ordering::Relaxed);
    NEXT.store(0, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_share_few_segments() {
        let before = segments();
        let mut fds = std::collections::BTreeSet::new();
        let mut placed = Vec::new();
        for _ in 0..64 {
            let p = place(300 << 10);
            assert!(p.fd >= 0, "a shared block");
            assert_eq!(p.offset % page(), 0);
            fds.insert(p.fd);
            placed.push(p);
        }
        // 64 blocks of 300 KiB: 19.2 MiB, in one or two segments (the
        // last one may be nearly full from earlier tests).
        // (Other tests place blocks at the same time: a little slack.)
        assert!(segments() - before <= 4, "{} segments", segments());
        assert!(fds.len() <= 4, "{fds:?}");
        // Distinct, non-overlapping ranges of their segments.
        let mut ranges: Vec<(i32, usize)> = placed.iter().map(|p| (p.fd, p.offset)).collect();
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            assert!(w[0].0 != w[1].0 || w[1].1 >= w[0].1 + (300 << 10));
        }
        // Writes through one block's mapping do not reach another's.
        for (i, p) in placed.iter().enumerate() {
            // SAFETY: each mapping is ours and at least 300 KiB long.
            unsafe { *(p.mem as *mut u64) = i as u64 };
        }
        for (i, p) in placed.iter().enumerate() {
            // SAFETY: as above.
            assert_eq!(unsafe { *(p.mem as *const u64) }, i as u64);
        }
    }

    #[test]
    fn a_block_larger_than_a_segment_gets_its_own() {
        let p = place(FIRST_SEGMENT * 3);
        assert!(p.fd >= 0);
        assert_eq!(p.offset, 0);
        // SAFETY: `stat` is plain data; all-zero is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid out-pointer; `p.fd` is the segment's fd.
        assert_eq!(unsafe { libc::fstat(p.fd, &mut st) }, 0);
        assert!(st.st_size as usize >= FIRST_SEGMENT * 3);
    }
}
