//! The capturing variants of the compiler-pad trampolines: a function
//! enabled with argument or return-value capture calls these instead of
//! [`crate::trampoline`]'s, so functions enabled without capture keep
//! their code path unchanged.
//!
//! **Entry** (`__tracer_v1_tramp_fentry_args`), reached from a capture stub
//! ([`encode_capture_stub`]: `push SPEC; push FUNC; jmp TRAMPOLINE`). It
//! saves the caller-saved general registers as the plain trampoline does,
//! stores the low 64 bits of `xmm0`–`xmm7` below them, and calls
//! `$hook(regs)`; `regs` points at a [`Regs`] frame.
//!
//! Both take the lean path (no vector save) when the runtime verified the
//! capturing hooks as it verifies the plain ones.
//!
//! **Return** (`__tracer_v1_tramp_fret_args`): a copy of the plain return
//! trampoline inside the same unwind entry (see
//! `__tracer_define_fentry_trampolines!`), preceded by the same 16-byte
//! tag, that keeps `xmm0`'s low 64 bits where `r11` is saved (`r11` is dead
//! at a return) before it calls its hook: the hook reads the return values
//! at fixed offsets below the slot ([`RET_RAX`], [`RET_RDX`], [`RET_XMM0`]).

/// The frame the capturing entry trampoline hands its hook, lowest address
/// first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Regs {
    /// `xmm0`–`xmm7`, low 64 bits.
    pub xmm: [u64; 8],
    /// `r11 r10 r9 r8 rdi rsi rdx rcx rax`, as pushed (reversed).
    pub gpr: [u64; 9],
    /// The function index (the stub's second push).
    pub func: u64,
    /// The capture spec (the stub's first push; `tracer_core::capture`).
    pub spec: u64,
    /// The pad's return address (pad + 5).
    pub pad_ret: u64,
    /// The traced function's return address: its address is the slot.
    pub ret: u64,
}

impl Regs {
    /// The integer argument registers in calling-convention order
    /// (`rdi rsi rdx rcx r8 r9`).
    pub fn int_args(&self) -> [u64; 6] {
        let g = &self.gpr;
        [g[4], g[5], g[6], g[7], g[3], g[2]]
    }
}

/// Offset of the saved `rax` below the slot, in the capturing return
/// trampoline's frame.
pub const RET_RAX: usize = 8;
/// Offset of the saved `rdx` below the slot.
pub const RET_RDX: usize = 24;
/// Offset of `xmm0`'s low 64 bits below the slot.
pub const RET_XMM0: usize = 72;

/// A capture stub: `push spec; push func; jmp [rip]; .quad target`
/// (24 bytes; the slot is 32).
pub fn encode_capture_stub(func: u32, spec: u32, target: usize) -> [u8; 32] {
    assert!(
        func < 1 << 31 && spec < 1 << 31,
        "function index {func} or spec {spec:#x} too large for push imm32"
    );
    let mut b = [0u8; 32];
    b[0] = 0x68;
    b[1..5].copy_from_slice(&spec.to_le_bytes());
    b[5] = 0x68;
    b[6..10].copy_from_slice(&func.to_le_bytes());
    b[10..16].copy_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
    b[16..24].copy_from_slice(&(target as u64).to_le_bytes());
    b
}

/// Define `__tracer_v1_tramp_fentry_args`, calling `$hook(regs: *const
/// Regs)`: directly when `$lean` (an `AtomicBool`: the capturing hooks were
/// verified free of vector registers, as the plain ones are) is set, else
/// through the full save. The runtime invokes this exactly once.
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_define_capture_trampolines {
    ($hook:path, $lean:path, $xsave_size:path) => {
        #[cfg(target_arch = "x86_64")]
        ::core::arch::global_asm!(
            ".pushsection .text.__tracer_tramp,\"ax\",@progbits",
            ".globl __tracer_v1_tramp_fentry_args",
            ".hidden __tracer_v1_tramp_fentry_args",
            ".type __tracer_v1_tramp_fentry_args,@function",
            ".p2align 4",
            "__tracer_v1_tramp_fentry_args:",
            // Entry: rsp % 16 == 0; [rsp] = func, [rsp + 8] = spec,
            // [rsp + 16] = pad + 5, [rsp + 24] = the caller's return address.
            "push rax\n push rcx\n push rdx\n push rsi\n push rdi\n push r8\n push r9\n push r10\n push r11",
            "sub rsp, 64",
            "movq qword ptr [rsp + 0], xmm0\n movq qword ptr [rsp + 8], xmm1",
            "movq qword ptr [rsp + 16], xmm2\n movq qword ptr [rsp + 24], xmm3",
            "movq qword ptr [rsp + 32], xmm4\n movq qword ptr [rsp + 40], xmm5",
            "movq qword ptr [rsp + 48], xmm6\n movq qword ptr [rsp + 56], xmm7",
            "mov rdi, rsp",
            "test byte ptr [rip + {lean}], 1",
            "jnz 2f",
            // rsp % 16 == 8, as the saving call wants.
            $crate::__tracer_saving_call!("call ", "{hook}", "4", "5"),
            "jmp 3f",
            "2:",
            "sub rsp, 8",
            "call {hook}",
            "add rsp, 8",
            "3:",
            "add rsp, 64",
            "pop r11\n pop r10\n pop r9\n pop r8\n pop rdi\n pop rsi\n pop rdx\n pop rcx\n pop rax",
            // Drop the function index and the spec.
            "add rsp, 16",
            "ret",
            ".size __tracer_v1_tramp_fentry_args, . - __tracer_v1_tramp_fentry_args",
            ".popsection",
            hook = sym $hook,
            lean = sym $lean,
            xsize = sym $xsave_size,
        );
    };
}

/// Define the capturing trampolines of `#[traceable]` pads,
/// `__tracer_v1_tramp_entry_args` and `__tracer_v1_tramp_exit_args`, and
/// an async fn's, `__tracer_v1_tramp_async_entry_args` and
/// `__tracer_v1_tramp_async_exit_args` (a hook each, so that each hook's
/// body is one straight path). A
/// pad's capturing stub pushes its values (a pair of words each: the value,
/// or an address, and 0 or the address of a reader the hook calls with it)
/// and their count, loads the record into `r11` and *calls* the trampoline,
/// which saves and restores registers exactly as the plain ones do and
/// calls `$hook(record, block, token)`, `block` pointing at the count; the
/// stub then drops the block and returns to the pad. `$lean` as in
/// [`__tracer_define_capture_trampolines`].
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_define_traceable_capture_trampolines {
    (
        $entry_hook:path,
        $exit_hook:path,
        $async_entry_hook:path,
        $async_exit_hook:path,
        $lean:path,
        $xsave_size:path
    ) => {
        #[cfg(target_arch = "x86_64")]
        ::core::arch::global_asm!(
            $crate::__tracer_trampoline_body!("__tracer_v1_tramp_entry_args", "{entry}"),
            $crate::__tracer_trampoline_body!("__tracer_v1_tramp_exit_args", "{exit}"),
            $crate::__tracer_trampoline_body!("__tracer_v1_tramp_async_entry_args", "{aentry}"),
            $crate::__tracer_trampoline_body!("__tracer_v1_tramp_async_exit_args", "{aexit}"),
            entry = sym $entry_hook,
            exit = sym $exit_hook,
            aentry = sym $async_entry_hook,
            aexit = sym $async_exit_hook,
            lean = sym $lean,
            xsize = sym $xsave_size,
        );
    };
}

/// The capturing return trampoline, for inside
/// `__tracer_define_fentry_trampolines!`'s unwind entry (after the plain
/// one's last instruction, where the unwind state is the initial one).
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_fret_args_body {
    () => {
        concat!(
            // The same tag as before the plain one: the unwind rule reads it.
            // (Debuggers name the frame of a hooked return by the symbol
            // before the return address: this one.)
            ".globl __tracer_v1_hooked_return_args\n",
            ".hidden __tracer_v1_hooked_return_args\n",
            ".type __tracer_v1_hooked_return_args,@function\n",
            "__tracer_v1_hooked_return_args:\n",
            ".quad {threads} - .\n",
            ".ascii \"tracer.r\"\n",
            // As before the plain one, 5 bytes between the tag and the
            // trampoline (there a `call`; the rule reads the tag at `v - 13`).
            "int3\n int3\n int3\n int3\n int3\n",
            ".globl __tracer_v1_tramp_fret_args\n",
            ".hidden __tracer_v1_tramp_fret_args\n",
            "__tracer_v1_tramp_fret_args:\n",
            "sub rsp, 8\n",
            ".cfi_adjust_cfa_offset 8\n",
            "push rax\n .cfi_adjust_cfa_offset 8\n push rcx\n .cfi_adjust_cfa_offset 8\n",
            "push rdx\n .cfi_adjust_cfa_offset 8\n push rsi\n .cfi_adjust_cfa_offset 8\n",
            "push rdi\n .cfi_adjust_cfa_offset 8\n push r8\n .cfi_adjust_cfa_offset 8\n",
            "push r9\n .cfi_adjust_cfa_offset 8\n push r10\n .cfi_adjust_cfa_offset 8\n",
            // r11 is dead at a return: its place keeps xmm0's low half.
            "movq r11, xmm0\n",
            "push r11\n .cfi_adjust_cfa_offset 8\n",
            "lea rdi, [rsp + 72]\n",
            "test byte ptr [rip + {capture_lean}], 1\n",
            "jnz 8f\n",
            "sub rsp, 8\n",
            ".cfi_adjust_cfa_offset 8\n",
            $crate::__tracer_saving_call!(cfi: "call ", "{fret_args}", "6", "7"),
            "add rsp, 8\n",
            ".cfi_adjust_cfa_offset -8\n",
            "jmp 9f\n",
            "8:\n",
            "call {fret_args}\n",
            "9:\n",
            "mov qword ptr [rsp + 72], rax\n",
            "pop r11\n .cfi_adjust_cfa_offset -8\n pop r10\n .cfi_adjust_cfa_offset -8\n",
            "pop r9\n .cfi_adjust_cfa_offset -8\n pop r8\n .cfi_adjust_cfa_offset -8\n",
            "pop rdi\n .cfi_adjust_cfa_offset -8\n pop rsi\n .cfi_adjust_cfa_offset -8\n",
            "pop rdx\n .cfi_adjust_cfa_offset -8\n pop rcx\n .cfi_adjust_cfa_offset -8\n",
            "pop rax\n .cfi_adjust_cfa_offset -8\n",
            "add rsp, 8\n",
            ".cfi_adjust_cfa_offset -8\n",
            "jmp qword ptr [rsp - 8]\n",
            ".size __tracer_v1_hooked_return_args, . - __tracer_v1_hooked_return_args\n",
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

    #[test]
    fn capture_stub_decodes_as_two_pushes_and_a_jump() {
        let b = encode_capture_stub(0x1234, 0x1063, 0x7fff_1234_5678);
        let mut d = Decoder::with_ip(64, &b[..24], 0x1000, DecoderOptions::NONE);
        let mut f = IntelFormatter::new();
        let out: Vec<String> = d
            .iter()
            .map(|i| {
                let mut s = String::new();
                f.format(&i, &mut s);
                s
            })
            .collect();
        assert_eq!(out[0], "push 1063h");
        assert_eq!(out[1], "push 1234h");
        assert_eq!(out[2], "jmp qword ptr [1010h]");
        assert_eq!(
            u64::from_le_bytes(b[16..24].try_into().unwrap()),
            0x7fff_1234_5678
        );
    }

    #[test]
    fn regs_frame_matches_the_trampoline() {
        assert_eq!(std::mem::size_of::<Regs>(), 21 * 8);
        assert_eq!(std::mem::offset_of!(Regs, ret), 160);
    }
}
