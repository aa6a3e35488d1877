//! Thin wrappers over `ptrace(2)` and `waitpid(2)` for one thread at a
//! time. Every call is one system call; the decisions are in `mod.rs`.
//! The register set is the architecture's (see `x86_64.rs`).

use super::arch::Regs;
use std::io::{Error, Result};

/// `PTRACE_EVENT_STOP`: the stop `PTRACE_INTERRUPT` and group-stops report
/// under `PTRACE_SEIZE`.
pub const EVENT_STOP: i32 = 128;
/// `NT_PRSTATUS`: the general registers for `PTRACE_GETREGSET`.
const NT_PRSTATUS: libc::c_int = 1;
/// `NT_PRFPREG`: the floating-point registers (x86-64: the FXSAVE area;
/// AArch64: V0–V31, FPSR, FPCR).
const NT_PRFPREG: libc::c_int = 2;
/// `NT_X86_XSTATE`: the whole XSAVE area (AVX, AVX-512, AMX state).
#[cfg(target_arch = "x86_64")]
const NT_X86_XSTATE: libc::c_int = 0x202;
/// The vector state read first: the whole XSAVE area on x86-64.
#[cfg(target_arch = "x86_64")]
const VECTOR_NOTE: libc::c_int = NT_X86_XSTATE;
#[cfg(not(target_arch = "x86_64"))]
const VECTOR_NOTE: libc::c_int = NT_PRFPREG;

fn check(r: libc::c_long) -> Result<libc::c_long> {
    if r < 0 {
        Err(Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Attach to thread `tid` without stopping it (`PTRACE_SEIZE`).
pub fn seize(tid: i32) -> Result<()> {
    // SAFETY: PTRACE_SEIZE takes no pointers (addr 0, data: options 0).
    check(unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0usize, 0usize) }).map(|_| ())
}

/// Ask a seized thread to stop (`PTRACE_INTERRUPT`); it reports a
/// `PTRACE_EVENT_STOP` to [`wait`].
pub fn interrupt(tid: i32) -> Result<()> {
    // SAFETY: PTRACE_INTERRUPT takes no pointers.
    check(unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0usize, 0usize) }).map(|_| ())
}

/// Resume a stopped thread, delivering `sig` (0: none).
pub fn cont(tid: i32, sig: i32) -> Result<()> {
    // SAFETY: PTRACE_CONT takes no pointers (data is a signal number).
    check(unsafe { libc::ptrace(libc::PTRACE_CONT, tid, 0usize, sig as usize) }).map(|_| ())
}

/// Detach from a stopped thread, delivering `sig` (0: none).
pub fn detach(tid: i32, sig: i32) -> Result<()> {
    // SAFETY: PTRACE_DETACH takes no pointers (data is a signal number).
    check(unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0usize, sig as usize) }).map(|_| ())
}

/// What [`wait`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stopped by `PTRACE_INTERRUPT` (or a group-stop: `Some(signal)`).
    Event(Option<i32>),
    /// About to receive signal `.0` (a signal-delivery-stop).
    Signal(i32),
    /// The thread is gone (exited or killed).
    Gone,
}

fn decode(status: libc::c_int) -> Stop {
    if libc::WIFSTOPPED(status) {
        let sig = libc::WSTOPSIG(status);
        if status >> 16 == EVENT_STOP {
            // Under SEIZE a group-stop reports its stop signal; an
            // interrupt reports SIGTRAP.
            return Stop::Event((sig != libc::SIGTRAP).then_some(sig));
        }
        if status >> 16 != 0 {
            // Another ptrace event (none is asked for): treat as a stop.
            return Stop::Event(None);
        }
        return Stop::Signal(sig);
    }
    Stop::Gone
}

/// Wait for thread `tid` to stop or end. `nohang`: return `None` at once
/// if it has not.
pub fn wait(tid: i32, nohang: bool) -> Result<Option<Stop>> {
    let mut status: libc::c_int = 0;
    let flags = libc::__WALL | if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(tid, &mut status, flags) };
        if r < 0 {
            let e = Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if e.raw_os_error() == Some(libc::ECHILD) {
                return Ok(Some(Stop::Gone));
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        return Ok(Some(decode(status)));
    }
}

fn get_regset(tid: i32, note: libc::c_int, buf: &mut [u8]) -> Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, which the kernel fills up to its length
    // and then shortens `iov_len` to what it wrote.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            tid,
            note as usize,
            &mut iov as *mut libc::iovec,
        )
    })?;
    Ok(iov.iov_len)
}

fn set_regset(tid: i32, note: libc::c_int, buf: &[u8]) -> Result<()> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, which the kernel only reads.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGSET,
            tid,
            note as usize,
            &mut iov as *mut libc::iovec,
        )
    })
    .map(|_| ())
}

/// The general registers of a stopped thread.
pub fn regs(tid: i32) -> Result<Regs> {
    let mut r = Regs::default();
    // SAFETY: `Regs` is the kernel's `NT_PRSTATUS` layout (plain integers),
    // viewed as bytes for the kernel to fill.
    let buf = unsafe {
        std::slice::from_raw_parts_mut(&mut r as *mut Regs as *mut u8, std::mem::size_of::<Regs>())
    };
    get_regset(tid, NT_PRSTATUS, buf)?;
    Ok(r)
}

/// Set the general registers of a stopped thread.
pub fn set_regs(tid: i32, r: &Regs) -> Result<()> {
    // SAFETY: `Regs` is plain integers in the kernel's layout.
    let buf = unsafe {
        std::slice::from_raw_parts(r as *const Regs as *const u8, std::mem::size_of::<Regs>())
    };
    set_regset(tid, NT_PRSTATUS, buf)
}

/// The vector and floating-point state of a stopped thread, as the kernel
/// lays it out (the XSAVE area on x86-64), with the note it came from.
pub fn vector_state(tid: i32) -> Result<(libc::c_int, Vec<u8>)> {
    let mut buf = vec![0u8; 64 << 10];
    let note = match get_regset(tid, VECTOR_NOTE, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            VECTOR_NOTE
        }
        Err(_) => {
            let n = get_regset(tid, NT_PRFPREG, &mut buf)?;
            buf.truncate(n);
            NT_PRFPREG
        }
    };
    Ok((note, buf))
}

/// Put back what [`vector_state`] read.
pub fn set_vector_state(tid: i32, state: &(libc::c_int, Vec<u8>)) -> Result<()> {
    set_regset(tid, state.0, &state.1)
}
