//! Thread blocks: allocating one (a sealed `memfd` shared with the
//! `tracer` program), its layout, recycling it when its thread exits, the
//! descriptor reserve, and what a forked child does with its parent's.

use super::*;

pub(crate) unsafe extern "C" fn thread_exit(p: *mut libc::c_void) {
    // Events after this point (other TLS destructors) get a fresh block.
    set_this_thread(std::ptr::null_mut());
    if !p.is_null() {
        // SAFETY: the key's value is our block.
        unsafe { &*(p as *const ThreadState) }
            .dead
            .store(true, Ordering::Release);
    }
}

pub(crate) fn layout(nfuncs: usize, cap: usize) -> (usize, usize, usize) {
    let hdr = std::mem::size_of::<ThreadState>().div_ceil(64) * 64;
    let counters = nfuncs * std::mem::size_of::<FuncCounters>();
    let ring_off = (hdr + counters).div_ceil(64) * 64;
    (hdr, ring_off, ring_off + Ring::bytes_for(cap))
}

pub(crate) fn reset_counters(st: &ThreadState) {
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

pub(crate) fn gettid() -> u64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

#[cold]
#[inline(never)]
pub(crate) fn slow_init() -> *mut ThreadState {
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

pub(crate) fn make_block(nfuncs: usize, cap: usize, tid: u64) -> *mut ThreadState {
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

pub(crate) fn allocate(nfuncs: usize, cap: usize, tid: u64) -> *mut ThreadState {
    let (hdr, ring_off, len) = layout(nfuncs, cap);
    // Shared memory (memfd + MAP_SHARED) so the agent can hand the block to
    // the `tracer` program; anonymous private memory if memfd is unavailable.
    let super::arena::Placed { mem, fd, offset } = super::arena::place(len);
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
            offset,
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
                captured: [(0, 0); MAX_DEPTH],
                pushed: [0; MAX_DEPTH],
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
pub(crate) const UNSHARED_FORK: i32 = -1;
/// `fd` field of a block whose memfd would have eaten into
/// [`BLOCK_FD_RESERVE`].
pub(crate) const UNSHARED_RESERVE: i32 = -2;
/// `fd` field of a block whose memfd failed: `-(UNSHARED_ERRNO + errno)`.
pub(crate) const UNSHARED_ERRNO: i32 = 1 << 16;

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

/// Why a block is not shared with readers (`None`: it is).
pub fn unshared_reason(st: &ThreadState) -> Option<String> {
    let fd = st.fd.load(Ordering::Relaxed);
    match fd {
        0.. => None,
        UNSHARED_FORK => Some(String::from(
            "made private in a forked child (its parent keeps the shared one)",
        )),
        UNSHARED_RESERVE => Some(format!(
            "a new shared-memory segment would have taken one of the program's last {BLOCK_FD_RESERVE} file \
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
/// the same address, as an anonymous private mapping would have been; then
/// the parent's arena segments are closed and the child starts its own.
/// Only `mmap`, `memcpy` and `close` (async-signal-safe; the child has one
/// thread).
pub(crate) extern "C" fn after_fork_in_child() {
    let mut all_private = true;
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
                all_private = false;
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
                // Only now: before, the block was still the parent's too.
                st.fd.store(UNSHARED_FORK, Ordering::Relaxed);
            } else {
                all_private = false;
            }
            libc::munmap(tmp, len);
        }
    }
    // A block that could not be copied keeps naming its segment, so the
    // segments stay open then; the child's own threads get a new arena
    // either way (carving the parent's segments would overlap its blocks).
    super::arena::forget_after_fork(all_private);
}

/// Where a block's parts sit, for a reader that maps it from its fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLayout {
    /// The memfd of the arena segment it is in, or negative if the block is
    /// not shareable.
    pub fd: i32,
    /// Its offset in that segment (page-aligned).
    pub offset: usize,
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
        offset: st.offset,
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
            // The child's own threads get blocks in an arena of their own.
            let code = i32::from(block_layout(st).fd != -1)
                | (i32::from(super::super::arena::segments() != 0) << 1);
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status));
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "1: the child's block kept its fd; 2: the child kept the parent's arena"
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
