//! The backend of the architecture this runtime was built for, and the few
//! architecture-specific operations the runtime performs on the live process:
//! reading text, storing patch bytes atomically, and reading and writing a
//! trapped thread's registers.

use crate::text::LiveText;
use tracer_core::backend::{TrapContext, TrapOutcome};
use tracer_core::engine::{apply_batch, BatchReport, SiteRequest, WriteError};

/// The pad macros `#[traceable]` expands to (through `__private`).
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
pub use tracer_arch_arm::{
    __tracer_arm_capture_pad as capture_pad, __tracer_async_entry_pad as async_entry_pad,
    __tracer_async_exit_pad as async_exit_pad, __tracer_entry_pad as entry_pad,
    __tracer_exit_pad as exit_pad,
};
#[cfg(target_arch = "x86_64")]
pub use tracer_arch_x86::X86_64 as Arch;
/// The pad macros `#[traceable]` expands to (through `__private`).
#[cfg(target_arch = "x86_64")]
pub use tracer_arch_x86::{
    __tracer_async_entry_pad as async_entry_pad, __tracer_async_exit_pad as async_exit_pad,
    __tracer_entry_pad as entry_pad, __tracer_exit_pad as exit_pad,
    __tracer_x86_capture_pad as capture_pad,
};

/// AArch64, or on ARMv7 Thumb-2 or A32 as the program was compiled.
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
pub use tracer_arch_arm::Native as Arch;

/// Whether compiler pads (`-fpatchable-function-entry`) are traced: ARMv7
/// traces `#[traceable]` functions only, and follows no loaded object.
pub const COMPILER_PADS: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// Whether a compiler pad enabled without capture jumps to its stub
/// (x86-64: the stub pushes the pad's return address itself, see
/// `tracer_arch_x86::pad::encode_entry_stub`) instead of calling it.
pub const PLAIN_FENTRY_JUMPS: bool = cfg!(target_arch = "x86_64");

/// One batch of site requests and the backend that runs it.
pub(crate) struct Batch {
    pub requests: Vec<SiteRequest>,
    /// `apply_batch` with the batch's backend.
    pub run: fn(&mut LiveText, &[SiteRequest]) -> Result<BatchReport, WriteError>,
}

/// The batches that carry out `requests` (each with the kind of its site,
/// `tracer_core::site::KIND_*`), to be run in order: one, with [`Arch`].
#[cfg(not(target_arch = "aarch64"))]
pub(crate) fn batches(requests: Vec<(u32, SiteRequest)>) -> Vec<Batch> {
    vec![Batch {
        requests: requests.into_iter().map(|(_, r)| r).collect(),
        run: apply_batch::<Arch, LiveText>,
    }]
}

/// The batches that carry out `requests` (each with the kind of its site,
/// `tracer_core::site::KIND_*`), to be run in order. AArch64: compiler pads
/// become `B stub`, not `BL` (the caller's return address must stay in
/// x30): their own backend, in a second batch after [`Arch`]'s.
#[cfg(target_arch = "aarch64")]
pub(crate) fn batches(requests: Vec<(u32, SiteRequest)>) -> Vec<Batch> {
    let (entries, rest): (Vec<_>, Vec<_>) = requests
        .into_iter()
        .partition(|&(kind, _)| kind == tracer_core::site::KIND_FENTRY);
    let requests = |v: Vec<(u32, SiteRequest)>| v.into_iter().map(|(_, r)| r).collect();
    vec![
        Batch {
            requests: requests(rest),
            run: apply_batch::<Arch, LiveText>,
        },
        Batch {
            requests: requests(entries),
            run: apply_batch::<tracer_arch_arm::Aarch64Entry, LiveText>,
        },
    ]
}

/// The `__tracer_sites` section's sentinel: one record with a null
/// descriptor, so the section exists even in a program without a traced
/// function. Invoked beside the code that reads the section (`records()`):
/// the object that holds one holds the other, so the linker never keeps the
/// reference without the section (it would leave `__start___tracer_sites`
/// undefined).
#[cfg(target_arch = "x86_64")]
macro_rules! sites_sentinel {
    () => {
        std::arch::global_asm!(
            ".pushsection __tracer_sites,\"awR\",@progbits",
            ".balign 8",
            ".quad 0, 0, 0",
            ".long 0, 0",
            ".popsection",
        );
    };
}
/// The `__tracer_sites` section's sentinel (see the x86-64 one).
#[cfg(target_arch = "aarch64")]
macro_rules! sites_sentinel {
    () => {
        std::arch::global_asm!(
            ".pushsection __tracer_sites,\"awR\",%progbits",
            ".balign 8",
            ".quad 0, 0, 0",
            ".word 0, 0",
            ".popsection",
        );
    };
}
/// The `__tracer_sites` section's sentinel (see the x86-64 one). ARMv7:
/// pointers are 4 bytes, a record is 5 words.
#[cfg(target_arch = "arm")]
macro_rules! sites_sentinel {
    () => {
        std::arch::global_asm!(
            ".pushsection __tracer_sites,\"awR\",%progbits",
            ".balign 4",
            ".word 0, 0, 0, 0, 0",
            ".popsection",
        );
    };
}
pub(crate) use sites_sentinel;

/// The breakpoint's `si_code`: `int3` arrives as `SI_KERNEL`.
#[cfg(target_arch = "x86_64")]
pub const TRAP_SI_CODE: i32 = 0x80;

/// What `status` says when the hardware's shadow stack keeps returns from
/// being hooked.
#[cfg(target_arch = "x86_64")]
pub const SHADOW_STACK_ENTRY_ONLY: &str =
    "entry-only: CET shadow stacks are active, a changed return address would be fatal";
/// What `status` says when the hardware's shadow stack keeps returns from
/// being hooked.
#[cfg(target_arch = "aarch64")]
pub const SHADOW_STACK_ENTRY_ONLY: &str =
    "entry-only: the Guarded Control Stack is active, a changed return address would be fatal";

/// The breakpoint's `si_code`: `BRK` and the `UDF` breakpoints arrive as
/// `TRAP_BRKPT`, with the PC at the instruction. Only the Thumb-2 protocol
/// plants traps; on AArch64 and A32 every trap is someone else's and is
/// passed on.
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
pub const TRAP_SI_CODE: i32 = 1;

/// The address of a site from its record. Thumb labels may carry the Thumb
/// bit; a site is the address of its instruction.
pub fn canonical_site(raw: usize) -> usize {
    if thumb_build() {
        raw & !1
    } else {
        raw
    }
}

/// The address an enabled site calls, from its record: for Thumb, the
/// interworking (odd) address, which is what the Thumb-2 backend reports as a
/// `BL`'s target, so the engine's "is this call ours" check compares like
/// with like.
pub fn canonical_stub(raw: usize) -> usize {
    if thumb_build() {
        raw | 1
    } else {
        raw
    }
}

#[cfg(target_arch = "arm")]
const fn thumb_build() -> bool {
    tracer_arch_arm::THUMB_BUILD
}

#[cfg(not(target_arch = "arm"))]
const fn thumb_build() -> bool {
    false
}

/// Check what precedes a site, where the pad has a head the trampoline relies
/// on: on AArch64 the trampoline puts `x9` back into `x30`, so the
/// instruction before the site must be `MOV X9, X30`. `None` if all is well.
pub fn check_head(site: usize) -> Option<String> {
    #[cfg(target_arch = "aarch64")]
    {
        let mut b = [0u8; 4];
        // SAFETY: the 4 bytes before a registered site are the pad's head, in
        // this program's mapped text.
        unsafe { read_text(site - 4, &mut b) };
        match tracer_arch_arm::aarch64::check_pad_head(site - 4, &b) {
            Ok(tracer_arch_arm::PadHead::SavesLr) => None,
            Ok(tracer_arch_arm::PadHead::Nop) => Some(format!(
                "pad head at {:#x} is a NOP, not MOV X9, X30: the link register would be lost",
                site - 4
            )),
            Err(e) => Some(e.to_string()),
        }
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        let _ = site;
        None
    }
}

/// Make the instruction fetch of every core able to see the bytes just
/// stored in `start..end` (cache maintenance to the point of unification).
/// On x86-64 the hardware keeps instruction fetch coherent: nothing to do.
/// The caller still has to synchronise every core (membarrier) afterwards.
pub fn flush_icache(start: usize, end: usize) {
    #[cfg(target_arch = "aarch64")]
    {
        // CTR_EL0: IDC (bit 28) = no D-cache clean needed for coherence,
        // DIC (bit 29) = no I-cache invalidation needed; DminLine (19:16)
        // and IminLine (3:0) = log2 of the line sizes in words.
        let ctr: u64;
        // SAFETY: reading CTR_EL0 is allowed at EL0 on Linux (or emulated by
        // the kernel); no memory is touched.
        unsafe { std::arch::asm!("mrs {0}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
        let dline = 4usize << ((ctr >> 16) & 0xf);
        let iline = 4usize << (ctr & 0xf);
        if ctr & (1 << 28) == 0 {
            let mut a = start & !(dline - 1);
            while a < end {
                // SAFETY: `a` is in a mapped text range the caller just wrote;
                // `dc cvau` only cleans a cache line, it changes no data.
                unsafe { std::arch::asm!("dc cvau, {0}", in(reg) a, options(nostack)) };
                a += dline;
            }
        }
        // SAFETY: barriers only.
        unsafe { std::arch::asm!("dsb ish", options(nostack)) };
        if ctr & (1 << 29) == 0 {
            let mut a = start & !(iline - 1);
            while a < end {
                // SAFETY: as for `dc cvau`; `ic ivau` invalidates an I-cache line.
                unsafe { std::arch::asm!("ic ivau, {0}", in(reg) a, options(nostack)) };
                a += iline;
            }
        }
        // SAFETY: barriers only.
        unsafe { std::arch::asm!("dsb ish", "isb", options(nostack)) };
    }
    #[cfg(target_arch = "arm")]
    {
        // ARMv7 user mode cannot do cache maintenance: the kernel does it.
        const ARM_NR_CACHEFLUSH: libc::c_long = 0x0f0002;
        // SAFETY: cacheflush(start, end, 0) only maintains caches over a
        // range of this process's mapped memory.
        unsafe { libc::syscall(ARM_NR_CACHEFLUSH, start, end, 0) };
    }
    #[cfg(target_arch = "x86_64")]
    {
        let _ = (start, end);
    }
}

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
    // SAFETY: (all arms) the caller guarantees the range is writable; atomic
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

/// The registers of a thread stopped by a signal.
///
/// # Safety
/// `uc` must be the `ucontext_t` the kernel passed to an `SA_SIGINFO` handler.
#[cfg(target_arch = "aarch64")]
pub unsafe fn context(uc: *mut libc::c_void) -> TrapContext {
    // SAFETY: per the caller.
    let m = unsafe { &(*(uc as *const libc::ucontext_t)).uc_mcontext };
    TrapContext {
        pc: m.pc as usize,
        sp: m.sp as usize,
        lr: m.regs[30] as usize,
        thumb: false,
    }
}

/// Resume a trapped thread as `out` says (`pc`, `sp` and `lr`: an emulated
/// `BL` sets the link register).
///
/// # Safety
/// As [`context`]; `out` must come from the backend's `on_trap`.
#[cfg(target_arch = "aarch64")]
pub unsafe fn resume(uc: *mut libc::c_void, out: &TrapOutcome) {
    if let TrapOutcome::Resume { pc, sp, lr, .. } = *out {
        // SAFETY: per the caller.
        let m = unsafe { &mut (*(uc as *mut libc::ucontext_t)).uc_mcontext };
        m.pc = pc as u64;
        m.sp = sp as u64;
        m.regs[30] = lr as u64;
    }
}

/// The CPSR's Thumb state bit.
#[cfg(target_arch = "arm")]
const CPSR_T: libc::c_ulong = 1 << 5;

/// The registers of a thread stopped by a signal.
///
/// # Safety
/// `uc` must be the `ucontext_t` the kernel passed to an `SA_SIGINFO` handler.
#[cfg(target_arch = "arm")]
pub unsafe fn context(uc: *mut libc::c_void) -> TrapContext {
    // SAFETY: per the caller.
    let m = unsafe { &(*(uc as *const libc::ucontext_t)).uc_mcontext };
    TrapContext {
        pc: m.arm_pc as usize,
        sp: m.arm_sp as usize,
        lr: m.arm_lr as usize,
        thumb: m.arm_cpsr & CPSR_T != 0,
    }
}

/// Resume a trapped thread as `out` says (`pc`, `sp` and `lr`: an emulated
/// `BL` sets the link register). The CPSR, Thumb bit included, is kept: the
/// backends never change the instruction set state (`BL` stays in it), and
/// their `pc` is the instruction's address without the Thumb bit.
///
/// # Safety
/// As [`context`]; `out` must come from the backend's `on_trap`.
#[cfg(target_arch = "arm")]
pub unsafe fn resume(uc: *mut libc::c_void, out: &TrapOutcome) {
    if let TrapOutcome::Resume { pc, sp, lr, .. } = *out {
        // SAFETY: per the caller.
        let m = unsafe { &mut (*(uc as *mut libc::ucontext_t)).uc_mcontext };
        m.arm_pc = (pc & !1) as libc::c_ulong;
        m.arm_sp = sp as libc::c_ulong;
        m.arm_lr = lr as libc::c_ulong;
    }
}

/// No shadow stack to worry about on ARMv7.
#[cfg(target_arch = "arm")]
pub fn shadow_stack_active() -> bool {
    false
}

/// Is the arm64 Guarded Control Stack enabled for this thread (Linux ≥ 6.13,
/// `PR_GET_SHADOW_STACK_STATUS`)? Then a changed return address would fault
/// at the function's `ret`, and an emulated `BL` would leave the later `RET`
/// without its record. Kernels without it answer `EINVAL`: not active.
#[cfg(target_arch = "aarch64")]
pub fn shadow_stack_active() -> bool {
    const PR_GET_SHADOW_STACK_STATUS: libc::c_int = 74;
    const PR_SHADOW_STACK_ENABLE: u64 = 1;
    let mut status: u64 = 0;
    // SAFETY: the kernel writes one u64 through the pointer, which is ours.
    let r = unsafe {
        libc::prctl(
            PR_GET_SHADOW_STACK_STATUS,
            &mut status as *mut u64,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    r == 0 && status & PR_SHADOW_STACK_ENABLE != 0
}

/// Size of the `xsave64` area for the state components the OS enabled in
/// XCR0 (CPUID leaf 0xD, sub-leaf 0, EBX), rounded up to 64; 0 without XSAVE.
#[cfg(target_arch = "x86_64")]
pub fn xsave_area_size() -> u32 {
    // SAFETY: cpuid is available on every x86-64 CPU (an unsafe fn before Rust 1.87).
    #[allow(unused_unsafe)]
    let (max, ecx1) = unsafe {
        (
            core::arch::x86_64::__cpuid(0).eax,
            core::arch::x86_64::__cpuid(1).ecx,
        )
    };
    if max < 0xd || ecx1 & (1 << 27) == 0 {
        return 0; // no OSXSAVE
    }
    // SAFETY: leaf 0xD exists (checked above).
    #[allow(unused_unsafe)]
    let ebx = unsafe { core::arch::x86_64::__cpuid_count(0xd, 0) }.ebx;
    if ebx < 576 {
        return 0;
    }
    ebx.div_ceil(64) * 64
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
