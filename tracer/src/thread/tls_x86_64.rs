//! Thread blocks by thread pointer, on x86-64.
//!
//! A Rust `thread_local!` in a shared library (the preload library) is
//! reached through `__tls_get_addr`, a call into libc that the lean
//! trampolines cannot allow (see `tracer_arch_x86::trampoline`). The thread
//! pointer (`fs:0`, the address of the thread's control block, unique among
//! live threads) is one load in any kind of object, so blocks are found in
//! an open-addressing table keyed by it. Only the owning thread ever reads or
//! writes its own entry, so a slot is claimed with one CAS and needs no
//! further synchronisation; a thread's entry is removed when it exits (the
//! pthread key destructor), before its control block can be reused.

use super::super::ThreadState;
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

/// Offset of this thread's `STATE` from the thread pointer, where it is
/// the same in every thread (the object's TLS is in the static TLS
/// block); 0: unknown, the table is used.
static STATIC_OFFSET: AtomicUsize = AtomicUsize::new(0);

/// This thread's block, [`INIT`], or null.
#[inline(always)]
pub fn get() -> *mut ThreadState {
    let off = STATIC_OFFSET.load(Ordering::Relaxed);
    if off != 0 {
        let p: *mut ThreadState;
        // SAFETY: `off` was found by `probe_static`: this object's TLS
        // is in the static TLS block, at the same offset from the
        // thread pointer in every thread, and `STATE` (a pointer-sized,
        // aligned `Cell` without destructor) sits there.
        unsafe {
            std::arch::asm!("mov {}, qword ptr fs:[{}]", out(reg) p, in(reg) off,
                options(nostack, readonly, preserves_flags))
        };
        return p;
    }
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

/// Find whether `STATE` is at one offset from the thread pointer in
/// every thread, and make [`get`] read it there. Run on a thread the
/// runtime started (the collector's); until then, and if it finds
/// nothing, the table is used.
///
/// An object loaded with the program (the preload library, a program
/// linked with the tracer) has its TLS in the static TLS block, which
/// glibc places, in every thread but the main one, just below the
/// thread's control block at the top of its stack mapping, at the same
/// offset from the thread pointer in every thread. An object loaded
/// later by `dlopen` (`tracer attach`) has its TLS allocated on the heap,
/// per thread. So `STATE` lies inside this thread's own stack mapping
/// only in the first case (a heap block never does). Elsewhere than
/// glibc, on the main thread, or if the stack cannot be found, nothing
/// changes. (A thread made only for the probe was tried: under heavy
/// load, the exiting thread stayed listed with every signal blocked long
/// enough for the next batch to refuse to patch.)
pub fn probe_static() {
    #[cfg(target_env = "gnu")]
    {
        if std::env::var_os("TRACER_NO_STATIC_TLS").is_some()
            || STATIC_OFFSET.load(Ordering::Relaxed) != 0
        {
            return;
        }
        // SAFETY: no preconditions.
        if unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t == libc::getpid() } {
            return;
        }
        let at = super::STATE.with(|s| s as *const _ as usize);
        let tp = thread_pointer();
        // SAFETY: a zeroed attribute filled in for this very thread,
        // destroyed after use; the out-pointers are valid.
        let inside = unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                return;
            }
            let mut lo: *mut libc::c_void = std::ptr::null_mut();
            let mut size = 0usize;
            let ok = libc::pthread_attr_getstack(&attr, &mut lo, &mut size) == 0;
            libc::pthread_attr_destroy(&mut attr);
            ok && (lo as usize) <= at && at + 8 <= lo as usize + size
        };
        if inside && at < tp {
            // `fs:[off]` wraps around to `tp - (2^64 - off)` = `at`.
            STATIC_OFFSET.store(at.wrapping_sub(tp), Ordering::Relaxed);
        }
    }
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
