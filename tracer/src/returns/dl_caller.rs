//! `dlsym(RTLD_NEXT, ..)` and `dlopen` look at their own return address to
//! find the calling object (the next definition after it; its `RUNPATH`).
//! A hooked function that tail-calls them passes its own return address on,
//! which is the return trampoline's, in the preload library: they would
//! answer for the preload library. The preload library exports both as
//! shims that come here first: if the return address is the trampoline's,
//! the tail-calling function returns now (its exit is recorded as the tail
//! call starts) and its real return address goes back into the slot, so the
//! real function sees the caller the untraced program has, and returns
//! straight to it.

use super::thread;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `dlsym`, `dlopen` (the shims' `which`).
static REAL: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// The real function number `which`. `dlsym` itself is found with
/// `dlvsym`, which is not interposed (the library's own `dlsym` calls
/// come through the shim).
fn real(which: usize) -> usize {
    let Some(slot) = REAL.get(which) else {
        std::process::abort()
    };
    let mut f = slot.load(Ordering::Acquire);
    if f != 0 {
        return f;
    }
    if which == 0 {
        #[cfg(target_arch = "x86_64")]
        const BASE: &std::ffi::CStr = c"GLIBC_2.2.5";
        #[cfg(target_arch = "aarch64")]
        const BASE: &std::ffi::CStr = c"GLIBC_2.17";
        for v in [c"GLIBC_2.34", BASE] {
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

/// x86-64 shims: `slot` is the address of the shim's return address
/// (the stack pointer at its entry). Returns the real function to jump
/// to, with the same stack and arguments.
///
/// # Safety
/// Only the preload library's shims call it, with their own slot.
#[cfg(target_arch = "x86_64")]
pub unsafe extern "C" fn prep(slot: usize, which: usize) -> usize {
    let fret = thread::FRET.load(Ordering::Relaxed);
    // SAFETY: per the caller, a live word of this thread's stack.
    if fret != 0 && thread::is_fret(unsafe { *(slot as *const usize) }, fret) {
        // SAFETY: a hooked return whose frame is keyed by its slot, on
        // this thread, as the return trampoline would pass it.
        let ret = unsafe { thread::on_fret(slot) }.ret;
        // SAFETY: as above.
        unsafe { *(slot as *mut usize) = ret };
    }
    real(which)
}

/// The real function to branch to, and the return address to branch
/// with (in `x30`).
#[cfg(target_arch = "aarch64")]
#[repr(C)]
pub struct Branch {
    target: usize,
    ret: usize,
}

/// AArch64 shims: `ret` is `x30` at the shim's entry, `key` the stack
/// pointer there (a tail-calling function has restored its entry stack
/// pointer, which keys its frame).
///
/// # Safety
/// Only the preload library's shims call it, with their own `x30` and
/// stack pointer.
#[cfg(target_arch = "aarch64")]
pub unsafe extern "C" fn prep(ret: usize, key: usize, which: usize) -> Branch {
    let fret = thread::FRET.load(Ordering::Relaxed);
    let ret = if fret != 0 && ret == fret {
        // SAFETY: a hooked return whose frame is keyed by `key`, on
        // this thread, as the return trampoline would pass it.
        unsafe { thread::on_fret(key) }.ret
    } else {
        ret
    };
    Branch {
        target: real(which),
        ret,
    }
}
