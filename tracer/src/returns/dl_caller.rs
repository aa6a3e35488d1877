//! `dlsym(RTLD_NEXT, ..)` and `dlopen` look at their own return address to
//! find the calling object (the next definition after it; its `RUNPATH`).
//! A hooked function that tail-calls them passes its own return address on,
//! which is the return trampoline's, in the preload library: they would
//! answer for the preload library. The preload library exports both as
//! shims that come here first: if the return address is the trampoline's,
//! the tail-calling function returns now (its exit is recorded as the tail
//! call starts) and its real return address goes back into the slot, so the
//! real function sees the caller the untraced program has, and returns
//! straight to it. The shims' entries (`prep`) are the architecture's
//! (`x86_64.rs`, `aarch64.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};

/// `dlsym`, `dlopen` (the shims' `which`).
static REAL: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// The real function number `which`. `dlsym` itself is found with
/// `dlvsym`, which is not interposed (the library's own `dlsym` calls
/// come through the shim).
pub(super) fn real(which: usize) -> usize {
    let Some(slot) = REAL.get(which) else {
        std::process::abort()
    };
    let mut f = slot.load(Ordering::Acquire);
    if f != 0 {
        return f;
    }
    if which == 0 {
        for v in [c"GLIBC_2.34", super::per_arch::GLIBC_BASE] {
            // SAFETY: a symbol lookup with NUL-terminated strings.
            f = unsafe { libc::dlvsym(libc::RTLD_NEXT, c"dlsym".as_ptr(), v.as_ptr()) } as usize;
            if f != 0 {
                break;
            }
        }
    } else {
        type Dlsym =
            unsafe extern "C" fn(*mut libc::c_void, *const libc::c_char) -> *mut libc::c_void;
        // SAFETY: the real `dlsym` (called from here: the next
        // definition after the preload library).
        f = unsafe {
            std::mem::transmute::<usize, Dlsym>(real(0))(libc::RTLD_NEXT, c"dlopen".as_ptr())
        } as usize;
    }
    if f == 0 {
        eprintln!("tracer: fatal: the real dlsym/dlopen cannot be found");
        std::process::abort();
    }
    slot.store(f, Ordering::Release);
    f
}
