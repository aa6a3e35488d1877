//! `libtracer_preload.so`: the tracer's runtime for programs that do not link
//! it. `LD_PRELOAD=libtracer_preload.so ./prog` (or `tracer run -- ./prog`,
//! which adds it) gives a C, C++ or Rust program built with compiler pads
//! (`-fpatchable-function-entry=5`, GCC's `-pg -mfentry -mnop-mcount
//! -mrecord-mcount`, rustc's `-Z patchable-function-entry=5`) the same agent
//! as a program linking `tracer`: `tracer list`, `tracer enable`, `tracer
//! trace` and the rest work on it, and `TRACER_ENABLE=PATTERN` enables
//! functions before `main`.
//!
//! Besides starting the runtime, the library exports the unwinder's entry
//! points that walk a thread's stack (`_Unwind_RaiseException`,
//! `_Unwind_ForcedUnwind`, `_Unwind_Resume_or_Rethrow`, `_Unwind_Resume`,
//! `_Unwind_DeleteException`, `_Unwind_Backtrace`) and glibc's `backtrace`:
//! preloaded, they come before libgcc_s's and glibc's, give the thread's
//! hooked return addresses back, and call the real ones (`backtrace` walks
//! with libgcc's unwinder itself, as glibc's does).
#![deny(missing_docs)]

/// Start the runtime before `main` (once, however many copies ask).
#[used]
#[link_section = ".init_array"]
static START: extern "C" fn() = start;

extern "C" fn start() {
    tracer::__private::start();
}

/// The unwinder's `_Unwind_RaiseException` (C++ `throw`, Rust panics).
///
/// # Safety
/// As libgcc's: `exc` is an exception object.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[no_mangle]
pub unsafe extern "C" fn _Unwind_RaiseException(exc: *mut libc::c_void) -> libc::c_int {
    // SAFETY: forwarded unchanged.
    unsafe { tracer::__private::unwind_raise(exc, _Unwind_RaiseException as *const () as usize) }
}

/// The unwinder's `_Unwind_ForcedUnwind` (`pthread_cancel`, `pthread_exit`).
///
/// # Safety
/// As libgcc's.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[no_mangle]
pub unsafe extern "C" fn _Unwind_ForcedUnwind(
    exc: *mut libc::c_void,
    stop: *mut libc::c_void,
    arg: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: forwarded unchanged.
    unsafe { tracer::__private::unwind_forced(exc, stop, arg) }
}

/// The unwinder's `_Unwind_Resume_or_Rethrow` (C++ `throw;`).
///
/// # Safety
/// As libgcc's.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[no_mangle]
pub unsafe extern "C" fn _Unwind_Resume_or_Rethrow(exc: *mut libc::c_void) -> libc::c_int {
    // SAFETY: forwarded unchanged.
    unsafe {
        tracer::__private::unwind_rethrow(exc, _Unwind_Resume_or_Rethrow as *const () as usize)
    }
}

/// The unwinder's `_Unwind_Resume` (the end of every cleanup landing pad).
///
/// # Safety
/// As libgcc's.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[no_mangle]
pub unsafe extern "C" fn _Unwind_Resume(exc: *mut libc::c_void) {
    // SAFETY: forwarded unchanged.
    unsafe { tracer::__private::unwind_resume(exc) }
}

/// The unwinder's `_Unwind_DeleteException` (a caught exception is done).
///
/// # Safety
/// As libgcc's.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[no_mangle]
pub unsafe extern "C" fn _Unwind_DeleteException(exc: *mut libc::c_void) {
    // SAFETY: forwarded unchanged.
    unsafe { tracer::__private::unwind_delete(exc) }
}

/// The unwinder's `_Unwind_Backtrace` (Rust's `std::backtrace`).
///
/// # Safety
/// As libgcc's.
#[cfg(target_arch = "x86_64")]
#[no_mangle]
pub unsafe extern "C" fn _Unwind_Backtrace(
    step: tracer::__private::UnwindStep,
    arg: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: forwarded unchanged.
    unsafe {
        tracer::__private::unwind_backtrace(step, arg, _Unwind_Backtrace as *const () as usize)
    }
}

/// glibc's `backtrace(3)`: the real return addresses of the callers.
///
/// # Safety
/// As glibc's: `buf` has room for `size` pointers.
#[cfg(target_arch = "x86_64")]
#[no_mangle]
pub unsafe extern "C" fn backtrace(buf: *mut *mut libc::c_void, size: libc::c_int) -> libc::c_int {
    // SAFETY: forwarded unchanged.
    unsafe { tracer::__private::backtrace(buf, size, backtrace as *const () as usize) }
}

/// glibc's `pthread_exit`: its unwind (C++ destructors, cleanup handlers)
/// reaches libgcc by glibc's own handle, past the interposers above, so the
/// thread's hooked returns are given back first.
///
/// # Safety
/// As glibc's.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[no_mangle]
pub unsafe extern "C" fn pthread_exit(value: *mut libc::c_void) -> ! {
    // SAFETY: forwarded unchanged.
    unsafe { tracer::__private::unwind_thread_exit(value) }
}
