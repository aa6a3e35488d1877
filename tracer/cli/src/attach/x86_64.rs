//! x86-64: the register set, the call sequence, system call restarts and
//! GCC's NOP pads. Everything `attach` needs to know about the
//! architecture is here; an AArch64 file would give the same items (its
//! `user_pt_regs`, `x0`–`x7` arguments, the return address in `x30`, `svc #0`
//! restarts, no red zone and no NOP conversion).

/// The general registers, as `PTRACE_GETREGSET NT_PRSTATUS` gives them
/// (the kernel's `struct user_regs_struct`).
/// Fields are the kernel's names.
#[allow(missing_docs)]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Regs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

/// `e_machine` of the processes this file can attach to.
pub const ELF_MACHINE: u16 = 62; // EM_X86_64
/// The architecture's name in messages.
pub const NAME: &str = "x86-64";
/// Bytes below the stack pointer a leaf function may use without moving it
/// (the System V ABI's red zone): never touched by the injected call.
pub const RED_ZONE: usize = 128;
/// Where the injected call returns: address 0, so the return faults
/// (SIGSEGV with the instruction pointer 0), which the tracer catches.
pub const RETURN_TO: usize = 0;
/// The system call instruction (`syscall`), which a restart re-executes.
pub const SYSCALL_INSN: [u8; 2] = [0x0f, 0x05];
/// GCC's pad: five 1-byte NOPs (`-fpatchable-function-entry=5`).
pub const GCC_PAD: [u8; 5] = [0x90; 5];
/// One 5-byte NOP (`nopl 0(%rax,%rax,1)`), what the runtime patches.
pub const NOP5: [u8; 5] = [0x0f, 0x1f, 0x44, 0x00, 0x00];

/// The instruction pointer.
pub fn pc(r: &Regs) -> usize {
    r.rip as usize
}

/// The stack pointer.
pub fn sp(r: &Regs) -> usize {
    r.rsp as usize
}

/// The system call the thread was stopped in, if any (`orig_rax`).
pub fn syscall_nr(r: &Regs) -> Option<i64> {
    let n = r.orig_rax as i64;
    (n >= 0).then_some(n)
}

/// The system call's return value (`-errno` on failure).
pub fn syscall_ret(r: &Regs) -> i64 {
    r.rax as i64
}

/// Make the interrupted system call run again when the thread resumes:
/// back to its `syscall` instruction with its number in `rax` (what the
/// kernel itself does for `-ERESTARTSYS`).
pub fn restart_syscall(r: &mut Regs) {
    r.rax = r.orig_rax;
    r.rip -= SYSCALL_INSN.len() as u64;
}

/// The value a called function returned.
pub fn call_result(r: &Regs) -> usize {
    r.rax as usize
}

/// The registers and stack writes that call `func(args…)` on a thread
/// whose registers are `saved`, with the stack below `below` free, so that
/// it returns to [`RETURN_TO`]. No system call is restarted when it
/// resumes (`orig_rax` = -1).
pub fn call(
    saved: &Regs,
    func: usize,
    args: &[usize],
    below: usize,
) -> (Regs, Vec<(usize, Vec<u8>)>) {
    assert!(args.len() <= 6, "at most 6 register arguments");
    let mut r = *saved;
    let mut a = [0u64; 6];
    for (d, s) in a.iter_mut().zip(args) {
        *d = *s as u64;
    }
    (r.rdi, r.rsi, r.rdx, r.rcx, r.r8, r.r9) = (a[0], a[1], a[2], a[3], a[4], a[5]);
    r.rip = func as u64;
    r.rax = 0;
    r.orig_rax = u64::MAX;
    // The ABI: direction flag clear at calls.
    r.eflags &= !0x400;
    // At a function's first instruction rsp + 8 is 16-byte aligned: the
    // return address was just pushed.
    let sp = (below & !15) - 8;
    r.rsp = sp as u64;
    (r, vec![(sp, (RETURN_TO as u64).to_le_bytes().to_vec())])
}

/// Did the injected call return (a SIGSEGV at [`RETURN_TO`])?
pub fn returned(r: &Regs) -> bool {
    r.rip as usize == RETURN_TO
}

/// System calls that a stop (`PTRACE_INTERRUPT`, like `SIGSTOP`) makes fail
/// with `EINTR` instead of restarting them (signal(7), "Interruption of
/// system calls and library functions by stop signals"), and which are
/// safe to run again: the tracer restarts them itself when the thread has
/// no signal pending, so the program never sees that `EINTR`. Sockets with
/// `SO_RCVTIMEO`/`SO_SNDTIMEO` fail the same way.
pub const EINTR_ON_STOP: &[i64] = &[
    232, // epoll_wait
    281, // epoll_pwait
    441, // epoll_pwait2
    65,  // semop
    220, // semtimedop
    128, // rt_sigtimedwait
    0,   // read (a socket with SO_RCVTIMEO)
    1,   // write (SO_SNDTIMEO)
    19,  // readv
    20,  // writev
    43,  // accept
    288, // accept4
    44,  // sendto
    45,  // recvfrom
    46,  // sendmsg
    47,  // recvmsg
    299, // recvmmsg
];

/// Blocking system calls made by thin wrappers that hold no lock of the C
/// library or the loader: a thread stopped in one may run the loader.
pub const SAFE_BLOCKING: &[i64] = &[
    0,   // read
    17,  // pread64
    19,  // readv
    23,  // select
    7,   // poll
    35,  // nanosleep
    230, // clock_nanosleep
    232, // epoll_wait
    43,  // accept
    288, // accept4
    45,  // recvfrom
    47,  // recvmsg
    61,  // wait4
    34,  // pause
];
