//! The backend of the architecture this runtime was built for, and the few
//! architecture-specific operations the runtime performs on the live process:
//! reading text, storing patch bytes atomically, and reading and writing a
//! trapped thread's registers.

use tracer_core::backend::{TrapContext, TrapOutcome};

#[cfg(target_arch = "x86_64")]
pub use tracer_arch_x86::X86_64 as Arch;

/// The breakpoint's `si_code`: `int3` arrives as `SI_KERNEL`.
#[cfg(target_arch = "x86_64")]
pub const TRAP_SI_CODE: i32 = 0x80;

/// Read `buf.len()` bytes of text at `addr`.
///
/// # Safety
/// `addr..addr + buf.len()` must be mapped and readable.
pub unsafe fn read_text(addr: usize, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        // SAFETY: the caller guarantees the range is readable. Volatile: the
        // bytes may be changed by the patcher on another thread.
        *b = unsafe { std::ptr::read_volatile((addr + i) as *const u8) };
    }
}

/// Store `bytes` at `addr`, as one single-copy-atomic store if `atomic`
/// (the protocol guarantees natural alignment then), else byte by byte.
///
/// # Safety
/// The range must be mapped writable, and be part of a site the patch engine
/// owns for the current batch.
pub unsafe fn write_text(addr: usize, bytes: &[u8], atomic: bool) {
    use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU8, Ordering::Relaxed};
    // SAFETY (all arms): the caller guarantees the range is writable; atomic
    // stores are used because other threads execute (fetch) these bytes.
    unsafe {
        match (atomic, bytes.len()) {
            (true, 2) => (*(addr as *const AtomicU16))
                .store(u16::from_le_bytes([bytes[0], bytes[1]]), Relaxed),
            (true, 4) => (*(addr as *const AtomicU32)).store(
                u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
                Relaxed,
            ),
            _ => {
                for (i, b) in bytes.iter().enumerate() {
                    (*((addr + i) as *const AtomicU8)).store(*b, Relaxed);
                }
            }
        }
    }
}

/// The registers of a thread stopped by a signal.
///
/// # Safety
/// `uc` must be the `ucontext_t` the kernel passed to an `SA_SIGINFO` handler.
#[cfg(target_arch = "x86_64")]
pub unsafe fn context(uc: *mut libc::c_void) -> TrapContext {
    // SAFETY: per the caller.
    let uc = unsafe { &*(uc as *const libc::ucontext_t) };
    TrapContext {
        pc: uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize,
        sp: uc.uc_mcontext.gregs[libc::REG_RSP as usize] as usize,
        lr: 0,
        thumb: false,
    }
}

/// Resume a trapped thread as `out` says.
///
/// # Safety
/// As [`context`]; `out` must come from the backend's `on_trap`, whose `push`
/// targets the thread's own stack just below its stack pointer (the red zone,
/// which the kernel skipped when it built the signal frame).
#[cfg(target_arch = "x86_64")]
pub unsafe fn resume(uc: *mut libc::c_void, out: &TrapOutcome) {
    if let TrapOutcome::Resume { pc, sp, push, .. } = *out {
        // SAFETY: per the caller.
        let uc = unsafe { &mut *(uc as *mut libc::ucontext_t) };
        if let Some(v) = push {
            // SAFETY: `sp` is 8 below the thread's stack pointer, in its red zone.
            unsafe { (sp as *mut usize).write(v) };
        }
        uc.uc_mcontext.gregs[libc::REG_RIP as usize] = pc as i64;
        uc.uc_mcontext.gregs[libc::REG_RSP as usize] = sp as i64;
    }
}

/// Is the x86 CET user shadow stack active for this process? Then an
/// emulated CALL would leave the later RET without its shadow entry.
#[cfg(target_arch = "x86_64")]
pub fn shadow_stack_active() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("x86_Thread_features:") && l.contains("shstk"))
        })
        .unwrap_or(false)
}
