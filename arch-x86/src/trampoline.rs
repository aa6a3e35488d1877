//! Entry and exit trampolines, in assembly.
//!
//! An enabled site calls its stub, which loads the site's record into `r11`
//! and jumps here. The pad's contract (see [`crate::pad`]) is that everything
//! but `r11` and the flags survives it, so the trampoline saves every register
//! the hook may clobber under the System V ABI: the caller-saved general
//! registers (`rax rcx rdx rsi rdi r8 r9 r10`) always, and the extended state
//! (`xsave64`: every vector, mask and x87 register) unless the runtime has
//! *verified* that the hook cannot touch any of it.
//!
//! **The lean path.** The runtime disassembles its own hooks at start-up
//! ([`verify_hook`]): every instruction reachable from the hook's entry
//! (following branches) must use no vector, x87 or MMX register, and every
//! call in it must go to [`__tracer_define_trampolines`]'s shim
//! `__tracer_v1_call_saving`, which saves the extended state around its
//! callee (the slow paths: a thread's first event, the fallback clock). When
//! both hooks pass, a flag makes the trampolines skip the save; a debug build,
//! or a compiler that starts using vector registers in the hook, fails the
//! check and keeps the full save.
//!
//! Stack: the pad's asm block guarantees `rsp % 16 == 0` before the `call`, so
//! the trampoline starts at `rsp % 16 == 8`; after 8 pushes the lean path
//! subtracts 8 and the full path aligns its save area to 64 bytes.
//!
//! The hook is `extern "C" fn(record: *const SiteRecord, sp: usize, token: usize)`:
//! `sp` is the stack pointer at the pad (before its call), `token` is `r10`
//! (meaningful for `async fn` pads only).

use iced_x86::{Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, OpKind, Register};

/// Define `__tracer_v1_tramp_entry`, `__tracer_v1_tramp_exit` (calling the
/// given hooks), and the shim `__tracer_v1_call_saving(f, arg) -> f(arg)`.
///
/// `$lean` (an `AtomicBool`) set: the trampolines skip the vector save.
/// Otherwise they, and the shim always, save the full extended state with
/// `xsave64` into a 64-aligned stack area of `$xsave_size` (a `u32`: CPUID
/// leaf 0xD's size for the features enabled in XCR0), so `ymm`/`zmm` upper
/// halves, `zmm16`–`zmm31` and `k` masks survive a hook or libc routine built
/// for AVX; where `$xsave_size` is 0 (no XSAVE) they save `xmm0`–`xmm15`.
/// The runtime invokes this exactly once.
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_define_trampolines {
    ($entry_hook:path, $exit_hook:path, $lean:path, $xsave_size:path) => {
        #[cfg(target_arch = "x86_64")]
        ::core::arch::global_asm!(
            $crate::__tracer_trampoline_body!("__tracer_v1_tramp_entry", "{entry}"),
            $crate::__tracer_trampoline_body!("__tracer_v1_tramp_exit", "{exit}"),
            ".pushsection .text.__tracer_tramp,\"ax\",@progbits",
            ".globl __tracer_v1_call_saving",
            ".hidden __tracer_v1_call_saving",
            ".type __tracer_v1_call_saving,@function",
            ".p2align 4",
            "__tracer_v1_call_saving:",
            // rdi = f, rsi = arg. Entry: rsp % 16 == 8.
            "mov r11, rdi",
            "mov rdi, rsi",
            $crate::__tracer_saving_call!("call r11", "", "5", "6"),
            "ret",
            ".size __tracer_v1_call_saving, . - __tracer_v1_call_saving",
            ".popsection",
            entry = sym $entry_hook,
            exit = sym $exit_hook,
            lean = sym $lean,
            xsize = sym $xsave_size,
        );
    };
}

/// Define the trampolines of compiler pads (true function entries):
/// `__tracer_v1_tramp_fentry`, reached from a pad's entry stub with the
/// function index pushed on the stack (above the pad's return address; see
/// [`crate::pad::encode_entry_stub`]), calls `$fentry_hook(func, slot, ret)` where
/// `slot` is the address of the caller's return address (the hook may
/// replace it with `__tracer_v1_tramp_fret` to see the return);
/// `__tracer_v1_tramp_fret`, reached by the traced function's `ret`, calls
/// `$fret_hook(slot) -> original return address` and returns there.
///
/// Both save every caller-saved general register (arguments on the way in,
/// return values on the way out, and whatever a caller optimised with
/// interprocedural register allocation keeps there), and the extended state
/// unless `$lean` is set, exactly as [`__tracer_define_trampolines`]. The
/// return trampoline puts the original return address back in the slot the
/// traced function's `ret` just popped (the first thing it does is to
/// reserve it again) and jumps there through it.
///
/// The return trampoline has unwind information (see the comments in it):
/// `$fret_personality` is its personality routine, which libgcc calls for
/// the frame of every hooked return an exception or forced unwind walks
/// through, with the caller's context; it must put the frame's real return
/// address back in the slot at the context's CFA − 8.
///
/// `$fret_args_hook` is the hook of the capturing return trampoline
/// `__tracer_v1_tramp_fret_args` (see [`crate::trampoline_args`]), which
/// lives in the same unwind entry; `$capture_lean` its lean flag.
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_define_fentry_trampolines {
    (
        $fentry_hook:path,
        $fret_hook:path,
        $fret_args_hook:path,
        $capture_lean:path,
        $fret_personality:path,
        $threads:path,
        $dead:path,
        $private:path,
        $shadow:path,
        $lean:path,
        $xsave_size:path
    ) => {
        #[cfg(target_arch = "x86_64")]
        ::core::arch::global_asm!(
            ".pushsection .text.__tracer_tramp,\"ax\",@progbits",
            ".globl __tracer_v1_tramp_fentry",
            ".hidden __tracer_v1_tramp_fentry",
            ".type __tracer_v1_tramp_fentry,@function",
            ".p2align 4",
            "__tracer_v1_tramp_fentry:",
            // Entry: rsp % 16 == 8; [rsp] = the function index (the stub's
            // push), [rsp + 8] = pad + 5, [rsp + 16] = the caller's return address.
            "push rax\n push rcx\n push rdx\n push rsi\n push rdi\n push r8\n push r9\n push r10\n push r11",
            "mov edi, dword ptr [rsp + 72]",
            "lea rsi, [rsp + 88]",
            "mov rdx, qword ptr [rsp + 80]",
            "test byte ptr [rip + {lean}], 1",
            "jnz 2f",
            "sub rsp, 8",
            $crate::__tracer_saving_call!("call ", "{fentry}", "4", "5"),
            "add rsp, 8",
            // (The full-save path keeps the plain return: see below.)
            "xor eax, eax",
            "jmp 3f",
            "2:",
            "call {fentry}",
            "3:",
            // rax != 0: the hook swapped the return address for the return
            // trampoline's (the flags survive the pops and `lea`s; they
            // are dead at a function's entry).
            "test rax, rax",
            "pop r11\n pop r10\n pop r9\n pop r8\n pop rdi\n pop rsi\n pop rdx\n pop rcx\n pop rax",
            // Drop the index: [rsp] = pad + 5 (the stub pushed it; the pad
            // is a `jmp`, which leaves the return-stack predictor alone).
            "lea rsp, [rsp + 8]",
            // Hooked: into the function through `__tracer_v1_fret_push`,
            // whose `call` leaves the return trampoline's address on the
            // predictor's stack, where the function's `ret` will find it.
            "jnz __tracer_v1_fret_push",
            // Not hooked: back to the function without touching the
            // predictor. The address stays valid below rsp: it is in the
            // red zone, which signal frames skip.
            "lea rsp, [rsp + 8]",
            "jmp qword ptr [rsp - 8]",
            // `__tracer_v1_fret_push`'s `call` lands here: [rsp] = the return
            // trampoline (dropped), [rsp + 8] = pad + 5, [rsp + 16] = the slot.
            "__tracer_v1_fret_land:",
            "lea rsp, [rsp + 16]",
            "jmp qword ptr [rsp - 8]",
            ".size __tracer_v1_tramp_fentry, . - __tracer_v1_tramp_fentry",
            ".globl __tracer_v1_tramp_fret",
            ".hidden __tracer_v1_tramp_fret",
            ".type __tracer_v1_tramp_fret,@function",
            ".p2align 4",
            // Unwind information, for unwinders that meet a hooked return:
            // the frame that returns into the trampoline has it as its return
            // address, so an unwinder looks up `__tracer_v1_tramp_fret - 1`,
            // which this FDE covers (the 16 bytes before the code are data,
            // never executed). The frame's CFA is the stack pointer after
            // the traced function's `ret` (its slot is just below).
            //
            // The personality routine (`$fret_personality`, which libgcc
            // calls for every frame an exception or a forced unwind walks
            // through, `pthread_cancel`'s included, before it reads the
            // frame's caller) gives the frame's real return address back
            // into its slot. The rule for the return address (below) reads
            // the slot: a real return address is the answer. If it still
            // holds this trampoline (`*(v - 8)` is the tag), the rule looks
            // the slot up on the shadow stacks itself, as `on_fret` does, for
            // walkers that call no personality routine (gdb, libgcc's
            // `_Unwind_Backtrace` from a signal handler that interrupted a
            // hook): `*(v - 16)` is the offset from there to `$threads`, the
            // list of every thread's block (never unmapped); each live
            // block's shadow frames are searched, newest first, for the one
            // whose slot it is (`$shadow` is the offset of the frames,
            // 32 bytes each, `sp` at 16 and `ret` at 24; `$private` of the
            // depth; `$dead` of the dead flag). Nothing found (a walker that
            // cannot read the process's memory, as perf's): 0, the end of
            // the stack.
            ".globl __tracer_v1_hooked_return",
            ".hidden __tracer_v1_hooked_return",
            ".type __tracer_v1_hooked_return,@function",
            "__tracer_v1_hooked_return:",
            ".cfi_startproc",
            ".cfi_personality 0x1b, {pers}",
            ".cfi_def_cfa rsp, 0",
            // DW_CFA_val_expression rip (generated: the program is in
            // `scripts/fret-cfi.py`).
            ".cfi_escape 0x16, 0x10, 0x79, 0x12, 0x38, 0x1c, 0x12, 0x6, 0x12, 0x8, 13, 0x1c, 0x6, 0xe, 0x74, 0x72, 0x61, 0x63, 0x65, 0x72, 0x2e, 0x72, 0x2e, 0x28, 0x62, 0x0, 0x12, 0x8, 21, 0x1c, 0x12, 0x6, 0x22, 0x6, 0x16, 0x13, 0x12, 0x28, 0x3, 0x0, 0x2f, 0x51, 0x0, 0x12, 0xa, ({dead} & 0xff), ({dead} >> 8), 0x22, 0x94, 1, 0x28, 0x43, 0x0, 0x12, 0xa, ({private} & 0xff), ({private} >> 8), 0x22, 0x6, 0x12, 0x28, 0x4, 0x0, 0x13, 0x2f, 0x35, 0x0, 0x31, 0x1c, 0x12, 0x8, 128, 0x2d, 0x28, 0x4, 0x0, 0x13, 0x2f, 0x28, 0x0, 0x12, 0x8, 32, 0x1e, 0x15, 2, 0x22, 0xa, ({shadow} & 0xff), ({shadow} >> 8), 0x22, 0x12, 0x8, 16, 0x22, 0x6, 0x15, 4, 0x29, 0x28, 0x4, 0x0, 0x13, 0x2f, 0xd1, 0xff, 0x8, 24, 0x22, 0x6, 0x12, 0x31, 0x2b, 0x28, 0x8, 0x0, 0x13, 0x2f, 0xc3, 0xff, 0x6, 0x2f, 0xa8, 0xff",
            ".quad {threads} - .",
            ".ascii \"tracer.r\"",
            // The entry trampoline comes here to enter a hooked function:
            // this `call` (5 bytes, ending where the return trampoline
            // starts) pushes the return trampoline's address on the return
            // stack predictor's stack (and on the stack, where the landing
            // drops it), so the function's `ret` into the return trampoline
            // is predicted. Hence the rule above reads the tag at `v - 13`.
            "__tracer_v1_fret_push:",
            "call __tracer_v1_fret_land",
            "__tracer_v1_tramp_fret:",
            // Entry (the traced function's ret): rsp % 16 == 0, the slot at rsp - 8,
            // kept free to hold the original return address.
            "sub rsp, 8",
            ".cfi_adjust_cfa_offset 8",
            "push rax\n .cfi_adjust_cfa_offset 8\n push rcx\n .cfi_adjust_cfa_offset 8",
            "push rdx\n .cfi_adjust_cfa_offset 8\n push rsi\n .cfi_adjust_cfa_offset 8",
            "push rdi\n .cfi_adjust_cfa_offset 8\n push r8\n .cfi_adjust_cfa_offset 8",
            "push r9\n .cfi_adjust_cfa_offset 8\n push r10\n .cfi_adjust_cfa_offset 8",
            "push r11\n .cfi_adjust_cfa_offset 8",
            "lea rdi, [rsp + 72]",
            "test byte ptr [rip + {lean}], 1",
            "jnz 2f",
            "sub rsp, 8",
            ".cfi_adjust_cfa_offset 8",
            $crate::__tracer_saving_call!(cfi: "call ", "{fret}", "4", "5"),
            "add rsp, 8",
            ".cfi_adjust_cfa_offset -8",
            // (The full-save path clobbers rdx: the plain jump below.)
            "xor edx, edx",
            "jmp 3f",
            "2:",
            "call {fret}",
            "3:",
            // From here the slot holds the real return address. rdx != 0:
            // the entry pushed this return on the predictor's stack (see
            // `__tracer_v1_fret_push`): leave by `ret`, which it predicts.
            "mov qword ptr [rsp + 72], rax",
            "test rdx, rdx",
            "pop r11\n .cfi_adjust_cfa_offset -8\n pop r10\n .cfi_adjust_cfa_offset -8",
            "pop r9\n .cfi_adjust_cfa_offset -8\n pop r8\n .cfi_adjust_cfa_offset -8",
            "pop rdi\n .cfi_adjust_cfa_offset -8\n pop rsi\n .cfi_adjust_cfa_offset -8",
            "pop rdx\n .cfi_adjust_cfa_offset -8\n pop rcx\n .cfi_adjust_cfa_offset -8",
            "pop rax\n .cfi_adjust_cfa_offset -8",
            "jz 6f",
            "ret",
            "6:",
            // Otherwise not `ret`: the return-stack predictor's entry for
            // this return was consumed by the traced function's own `ret`
            // (which came here), so a `ret` would mispredict and leave every
            // later return of the caller chain one entry off. An indirect
            // jump is predicted from its own history. The slot stays valid
            // below rsp: it is in the red zone, which signal frames skip.
            "lea rsp, [rsp + 8]",
            ".cfi_adjust_cfa_offset -8",
            "jmp qword ptr [rsp - 8]",
            // The capturing variant (`crate::trampoline_args`), in the
            // same unwind entry.
            $crate::__tracer_fret_args_body!(),
            ".cfi_endproc",
            ".size __tracer_v1_tramp_fret, . - __tracer_v1_tramp_fret",
            ".size __tracer_v1_hooked_return, . - __tracer_v1_hooked_return",
            ".popsection",
            fentry = sym $fentry_hook,
            fret = sym $fret_hook,
            fret_args = sym $fret_args_hook,
            capture_lean = sym $capture_lean,
            pers = sym $fret_personality,
            threads = sym $threads,
            dead = const $dead,
            private = const $private,
            shadow = const $shadow,
            lean = sym $lean,
            xsize = sym $xsave_size,
        );
    };
}

/// `$call $target` with the full extended state saved around it. Expects
/// `rsp % 16 == 8`; preserves `rdi`, `rsi`, `rdx`, `r10`, `r11` for the call
/// and returns with `rax` from it; clobbers `rcx` and `rdx`. Uses the local
/// labels `$l1` (the `movaps` path) and `$l2` (the end).
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_saving_call {
    ($call:literal, $target:literal, $l1:literal, $l2:literal) => {
        $crate::__tracer_saving_call!(@with "", "", "", "", $call, $target, $l1, $l2)
    };
    // The same, with unwind information (inside `.cfi_startproc`).
    (cfi: $call:literal, $target:literal, $l1:literal, $l2:literal) => {
        $crate::__tracer_saving_call!(
            @with
            ".cfi_adjust_cfa_offset 8\n.cfi_rel_offset rbp, 0\n",
            ".cfi_def_cfa_register rbp\n",
            ".cfi_def_cfa_register rsp\n",
            ".cfi_adjust_cfa_offset -8\n.cfi_restore rbp\n",
            $call, $target, $l1, $l2
        )
    };
    (@with $pushed:literal, $framed:literal, $unframed:literal, $popped:literal,
     $call:literal, $target:literal, $l1:literal, $l2:literal) => {
        concat!(
            "push rbp\n",
            $pushed,
            "mov rbp, rsp\n",
            $framed,
            "push rdx\n",
            "mov ecx, dword ptr [rip + {xsize}]\n",
            "test ecx, ecx\n",
            "jz ",
            $l1,
            "f\n",
            "sub rsp, rcx\n",
            "and rsp, -64\n",
            // XRSTOR faults unless the header's reserved bytes are zero, and
            // XSAVE writes only XSTATE_BV: clear the header first.
            "xor ecx, ecx\n",
            "mov qword ptr [rsp + 512], rcx\n mov qword ptr [rsp + 520], rcx\n",
            "mov qword ptr [rsp + 528], rcx\n mov qword ptr [rsp + 536], rcx\n",
            "mov qword ptr [rsp + 544], rcx\n mov qword ptr [rsp + 552], rcx\n",
            "mov qword ptr [rsp + 560], rcx\n mov qword ptr [rsp + 568], rcx\n",
            "push rax\n",
            "mov eax, -1\n mov edx, -1\n",
            "xsave64 [rsp + 8]\n",
            "pop rax\n",
            "mov rdx, qword ptr [rbp - 8]\n",
            $call,
            $target,
            "\n",
            "mov rcx, rax\n",
            "mov eax, -1\n mov edx, -1\n",
            "xrstor64 [rsp]\n",
            "mov rax, rcx\n",
            "jmp ",
            $l2,
            "f\n",
            $l1,
            ":\n",
            "sub rsp, 264\n",
            "and rsp, -16\n",
            $crate::__tracer_save_xmm!(),
            "mov rdx, qword ptr [rbp - 8]\n",
            $call,
            $target,
            "\n",
            $crate::__tracer_restore_xmm!(),
            $l2,
            ":\n",
            "mov rsp, rbp\n",
            $unframed,
            "pop rbp\n",
            $popped,
        )
    };
}

/// Save `xmm0`–`xmm15` at `[rsp]`..`[rsp + 256]`.
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_save_xmm {
    () => {
        concat!(
            "movaps [rsp + 0], xmm0\n movaps [rsp + 16], xmm1\n",
            "movaps [rsp + 32], xmm2\n movaps [rsp + 48], xmm3\n",
            "movaps [rsp + 64], xmm4\n movaps [rsp + 80], xmm5\n",
            "movaps [rsp + 96], xmm6\n movaps [rsp + 112], xmm7\n",
            "movaps [rsp + 128], xmm8\n movaps [rsp + 144], xmm9\n",
            "movaps [rsp + 160], xmm10\n movaps [rsp + 176], xmm11\n",
            "movaps [rsp + 192], xmm12\n movaps [rsp + 208], xmm13\n",
            "movaps [rsp + 224], xmm14\n movaps [rsp + 240], xmm15\n",
        )
    };
}

/// Restore what [`__tracer_save_xmm`] saved.
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_restore_xmm {
    () => {
        concat!(
            "movaps xmm0, [rsp + 0]\n movaps xmm1, [rsp + 16]\n",
            "movaps xmm2, [rsp + 32]\n movaps xmm3, [rsp + 48]\n",
            "movaps xmm4, [rsp + 64]\n movaps xmm5, [rsp + 80]\n",
            "movaps xmm6, [rsp + 96]\n movaps xmm7, [rsp + 112]\n",
            "movaps xmm8, [rsp + 128]\n movaps xmm9, [rsp + 144]\n",
            "movaps xmm10, [rsp + 160]\n movaps xmm11, [rsp + 176]\n",
            "movaps xmm12, [rsp + 192]\n movaps xmm13, [rsp + 208]\n",
            "movaps xmm14, [rsp + 224]\n movaps xmm15, [rsp + 240]\n",
        )
    };
}

/// The text of one trampoline.
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_trampoline_body {
    ($name:literal, $hook:literal) => {
        concat!(
            ".pushsection .text.__tracer_tramp,\"ax\",@progbits\n",
            ".globl ",
            $name,
            "\n",
            ".hidden ",
            $name,
            "\n",
            ".type ",
            $name,
            ",@function\n",
            ".p2align 4\n",
            $name,
            ":\n",
            "push rax\n push rcx\n push rdx\n push rsi\n push rdi\n push r8\n push r9\n push r10\n",
            "mov rdi, r11\n",
            "mov rdx, r10\n",
            "lea rsi, [rsp + 72]\n",
            "test byte ptr [rip + {lean}], 1\n",
            "jnz 2f\n",
            // rsp % 16 == 8 here, as the saving call wants.
            $crate::__tracer_saving_call!("call ", $hook, "4", "5"),
            "jmp 3f\n",
            "2:\n",
            "sub rsp, 8\n",
            "call ",
            $hook,
            "\n",
            "add rsp, 8\n",
            "3:\n",
            "pop r10\n pop r9\n pop r8\n pop rdi\n pop rsi\n pop rdx\n pop rcx\n pop rax\n",
            "ret\n",
            ".size ",
            $name,
            ", . - ",
            $name,
            "\n",
            ".popsection\n"
        )
    };
}

/// Why a hook needs the full vector save.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookCheck {
    /// Every reachable instruction is free of vector/x87/MMX registers and
    /// every call goes to the saving shim.
    Lean {
        /// Instructions examined.
        instructions: usize,
    },
    /// It may touch registers the lean trampoline does not save.
    NeedsFullSave(String),
}

fn is_vector_or_fpu(r: Register) -> bool {
    r.is_xmm() || r.is_ymm() || r.is_zmm() || r.is_k() || r.is_mm() || r.is_st() || r.is_tmm()
}

/// Check the machine code of a hook at `entry` (see the module docs).
/// `read(addr, buf)` reads code; `shim` is the saving shim's address.
pub fn verify_hook(entry: usize, shim: usize, read: &dyn Fn(usize, &mut [u8])) -> HookCheck {
    let mut todo = vec![entry];
    let mut seen = std::collections::BTreeSet::new();
    let mut info = InstructionInfoFactory::new();
    while let Some(start) = todo.pop() {
        let mut ip = start;
        loop {
            if !seen.insert(ip) {
                break;
            }
            if seen.len() > 4000 {
                return HookCheck::NeedsFullSave("hook longer than 4000 instructions".into());
            }
            let mut buf = [0u8; 16];
            read(ip, &mut buf);
            let mut d = Decoder::with_ip(64, &buf, ip as u64, DecoderOptions::NONE);
            let insn = d.decode();
            if insn.is_invalid() {
                return HookCheck::NeedsFullSave(format!("undecodable byte at {ip:#x}"));
            }
            let used = info.info(&insn);
            if let Some(r) = used
                .used_registers()
                .iter()
                .map(|u| u.register())
                .find(|r| is_vector_or_fpu(*r))
            {
                return HookCheck::NeedsFullSave(format!("{insn} at {ip:#x} uses {r:?}"));
            }
            let next = insn.next_ip() as usize;
            match insn.flow_control() {
                FlowControl::Next | FlowControl::Interrupt => ip = next,
                FlowControl::Return => break,
                FlowControl::UnconditionalBranch if insn.op0_kind() == OpKind::NearBranch64 => {
                    let t = insn.near_branch_target() as usize;
                    if t == shim {
                        break; // a tail call of the shim
                    }
                    ip = t;
                }
                // `jmp [rip + GOT slot]` to the shim: a tail call of it.
                FlowControl::IndirectBranch
                    if insn.op0_kind() == OpKind::Memory
                        && insn.is_ip_rel_memory_operand()
                        && {
                            let mut p = [0u8; 8];
                            read(insn.ip_rel_memory_address() as usize, &mut p);
                            usize::from_le_bytes(p) == shim
                        } =>
                {
                    break;
                }
                FlowControl::ConditionalBranch if insn.op0_kind() == OpKind::NearBranch64 => {
                    todo.push(insn.near_branch_target() as usize);
                    ip = next;
                }
                FlowControl::Call | FlowControl::IndirectCall => {
                    let t = match insn.op0_kind() {
                        OpKind::NearBranch64 => Some(insn.near_branch_target() as usize),
                        // `call [rip + GOT slot]`: the slot holds the target.
                        OpKind::Memory if insn.is_ip_rel_memory_operand() => {
                            let mut p = [0u8; 8];
                            read(insn.ip_rel_memory_address() as usize, &mut p);
                            Some(usize::from_le_bytes(p))
                        }
                        _ => None,
                    };
                    if t != Some(shim) {
                        return HookCheck::NeedsFullSave(format!(
                            "{insn} at {ip:#x}: a call, not to the saving shim"
                        ));
                    }
                    ip = next;
                }
                _ => {
                    return HookCheck::NeedsFullSave(format!(
                        "{insn} at {ip:#x}: indirect or unusual control flow"
                    ))
                }
            }
        }
    }
    HookCheck::Lean {
        instructions: seen.len(),
    }
}

/// Every direct call target reachable from `roots` (following direct
/// branches and calls), up to `limit` instructions: the functions that code
/// may run. `read(addr, buf)` reads code; `inside(addr)` bounds the walk.
pub fn reachable_calls(
    roots: &[usize],
    limit: usize,
    inside: &dyn Fn(usize) -> bool,
    read: &dyn Fn(usize, &mut [u8]),
) -> std::collections::BTreeSet<usize> {
    let mut todo: Vec<usize> = roots.to_vec();
    let mut seen = std::collections::BTreeSet::new();
    let mut calls = std::collections::BTreeSet::new();
    while let Some(start) = todo.pop() {
        let mut ip = start;
        while inside(ip) && seen.len() < limit && seen.insert(ip) {
            let mut buf = [0u8; 16];
            read(ip, &mut buf);
            let mut d = Decoder::with_ip(64, &buf, ip as u64, DecoderOptions::NONE);
            let insn = d.decode();
            if insn.is_invalid() {
                break;
            }
            let next = insn.next_ip() as usize;
            let target = (insn.op0_kind() == OpKind::NearBranch64)
                .then(|| insn.near_branch_target() as usize);
            match insn.flow_control() {
                FlowControl::Next | FlowControl::Interrupt => ip = next,
                FlowControl::UnconditionalBranch => match target {
                    Some(t) => {
                        calls.insert(t);
                        ip = t;
                    }
                    None => break,
                },
                FlowControl::ConditionalBranch => {
                    if let Some(t) = target {
                        todo.push(t);
                    }
                    ip = next;
                }
                FlowControl::Call => {
                    if let Some(t) = target {
                        calls.insert(t);
                        todo.push(t);
                    }
                    ip = next;
                }
                FlowControl::IndirectCall => ip = next,
                _ => break,
            }
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(code: &[u8], shim: usize) -> HookCheck {
        let base = 0x1000usize;
        let mut mem = code.to_vec();
        mem.resize(code.len() + 16, 0xcc);
        verify_hook(base, shim, &|a, buf| {
            let o = a - base;
            buf.copy_from_slice(&mem[o..o + buf.len()]);
        })
    }

    #[test]
    fn integer_only_code_with_branches_is_lean() {
        // test eax,eax; je +4 (to the second ret); inc rax; ret; ret
        let code = [0x85, 0xc0, 0x74, 0x04, 0x48, 0xff, 0xc0, 0xc3, 0xc3];
        assert!(matches!(
            check(&code, 0),
            HookCheck::Lean { instructions: 5 }
        ));
    }

    #[test]
    fn vector_use_on_any_path_needs_the_full_save() {
        // je +4; ret; (target:) xorps xmm0,xmm0 ... ; ret
        let code = [0x74, 0x01, 0xc3, 0x0f, 0x57, 0xc0, 0xc3];
        assert!(matches!(check(&code, 0), HookCheck::NeedsFullSave(m) if m.contains("XMM0")));
    }

    #[test]
    fn calls_are_only_allowed_to_the_shim() {
        // call +0 (to 0x1005); ret
        let code = [0xe8, 0x00, 0x00, 0x00, 0x00, 0xc3];
        assert!(matches!(check(&code, 0x1005), HookCheck::Lean { .. }));
        assert!(matches!(check(&code, 0x2000), HookCheck::NeedsFullSave(_)));
        // call rax
        assert!(matches!(
            check(&[0xff, 0xd0, 0xc3], 0),
            HookCheck::NeedsFullSave(_)
        ));
    }
}
