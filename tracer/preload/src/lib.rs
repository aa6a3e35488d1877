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

/// What `tracer attach` calls in a process that has this library loaded
/// already (attached, then detached): start the agent again. 0: it serves.
#[no_mangle]
pub extern "C" fn tracer_preload_attach() -> libc::c_int {
    tracer::__private::start_agent_again()
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

/// glibc's `dlsym`: `RTLD_NEXT` is relative to the caller's object, found
/// from the return address. A hooked function that tail-calls it would pass
/// on the return trampoline's (in this library): the shim gives the real
/// one back first, then jumps to glibc's with the same stack.
///
/// # Safety
/// As glibc's.
#[cfg(all(tracer_naked, target_arch = "x86_64"))]
#[no_mangle]
#[unsafe(naked)]
pub unsafe extern "C" fn dlsym(
    handle: *mut libc::c_void,
    name: *const libc::c_char,
) -> *mut libc::c_void {
    // Entry: rsp % 16 == 8; three pushes align it for the call.
    core::arch::naked_asm!(
        "push rdi",
        "push rsi",
        "push rdx",
        "lea rdi, [rsp + 24]",
        "xor esi, esi",
        "call {prep}",
        "pop rdx",
        "pop rsi",
        "pop rdi",
        "jmp rax",
        prep = sym tracer::__private::dl_caller_prep,
    )
}

/// glibc's `dlopen`: the caller's object's `RUNPATH` is searched, found
/// from the return address; as [`dlsym`].
///
/// # Safety
/// As glibc's.
#[cfg(all(tracer_naked, target_arch = "x86_64"))]
#[no_mangle]
#[unsafe(naked)]
pub unsafe extern "C" fn dlopen(file: *const libc::c_char, mode: libc::c_int) -> *mut libc::c_void {
    core::arch::naked_asm!(
        "push rdi",
        "push rsi",
        "push rdx",
        "lea rdi, [rsp + 24]",
        "mov esi, 1",
        "call {prep}",
        "pop rdx",
        "pop rsi",
        "pop rdi",
        "jmp rax",
        prep = sym tracer::__private::dl_caller_prep,
    )
}

/// glibc's `dlsym` (AArch64), as on x86-64: `x30` is the return address.
///
/// # Safety
/// As glibc's.
#[cfg(all(tracer_naked, target_arch = "aarch64"))]
#[no_mangle]
#[unsafe(naked)]
pub unsafe extern "C" fn dlsym(
    handle: *mut libc::c_void,
    name: *const libc::c_char,
) -> *mut libc::c_void {
    core::arch::naked_asm!(
        "stp x0, x1, [sp, #-48]!",
        "stp x2, x3, [sp, #16]",
        "stp x29, x30, [sp, #32]",
        "mov x0, x30",
        "add x1, sp, #48",
        "mov x2, #0",
        "bl {prep}",
        "mov x16, x0",
        "mov x17, x1",
        "ldp x29, x30, [sp, #32]",
        "ldp x2, x3, [sp, #16]",
        "ldp x0, x1, [sp], #48",
        "mov x30, x17",
        "br x16",
        prep = sym tracer::__private::dl_caller_prep,
    )
}

/// glibc's `dlopen` (AArch64), as [`dlsym`].
///
/// # Safety
/// As glibc's.
#[cfg(all(tracer_naked, target_arch = "aarch64"))]
#[no_mangle]
#[unsafe(naked)]
pub unsafe extern "C" fn dlopen(file: *const libc::c_char, mode: libc::c_int) -> *mut libc::c_void {
    core::arch::naked_asm!(
        "stp x0, x1, [sp, #-48]!",
        "stp x2, x3, [sp, #16]",
        "stp x29, x30, [sp, #32]",
        "mov x0, x30",
        "add x1, sp, #48",
        "mov x2, #1",
        "bl {prep}",
        "mov x16, x0",
        "mov x17, x1",
        "ldp x29, x30, [sp, #32]",
        "ldp x2, x3, [sp, #16]",
        "ldp x0, x1, [sp], #48",
        "mov x30, x17",
        "br x16",
        prep = sym tracer::__private::dl_caller_prep,
    )
}
