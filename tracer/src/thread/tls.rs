//! Finding this thread's block from a hook: one thread-pointer load on
//! x86-64 (a table keyed by `fs:0`), a `thread_local!` elsewhere.

use super::*;

#[cfg(not(target_arch = "x86_64"))]
thread_local! {
    static STATE: Cell<*mut ThreadState> = const { Cell::new(std::ptr::null_mut()) };
}

/// This thread's block (null: none yet; [`tp::INIT`]: being made).
#[inline(always)]
pub(crate) fn this_thread() -> *mut ThreadState {
    #[cfg(target_arch = "x86_64")]
    return tp::get();
    #[cfg(not(target_arch = "x86_64"))]
    STATE.with(|s| s.get())
}

pub(crate) fn set_this_thread(p: *mut ThreadState) {
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
pub(crate) mod tp {
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
pub(crate) mod tp {
    /// The value of a thread whose block is being made.
    pub const INIT: usize = 1;
}
