//! Entry and exit trampolines, in assembly.
//!
//! An enabled site calls its stub, which loads the site's record into `r11`
//! and jumps here. The pad's contract (see [`crate::pad`]) is that everything
//! but `r11` and the flags survives it, so the trampoline saves every register
//! the hook may clobber under the System V ABI: the caller-saved general
//! registers (`rax rcx rdx rsi rdi r8 r9 r10`) and `xmm0`–`xmm15`. The hook is
//! ordinary Rust compiled for the baseline target, which never touches the
//! upper halves of `ymm`/`zmm` registers, `k` masks or x87 state; its slow
//! path (a thread's first event) saves the full extended state with `xsave`.
//! The disabled path pays for none of this.
//!
//! Stack: the pad's asm block guarantees `rsp % 16 == 0` before the `call`, so
//! the trampoline starts at `rsp % 16 == 8`; 8 pushes and 264 bytes of vector
//! save area bring it back to 0 for the hook call.
//!
//! The hook is `extern "C" fn(record: *const SiteRecord, sp: usize, token: usize)`:
//! `sp` is the stack pointer at the pad (before its call), `token` is `r10`
//! (meaningful for `async fn` pads only).

/// Define `__tracer_v1_tramp_entry` and `__tracer_v1_tramp_exit`, calling the
/// given hooks. The runtime invokes this exactly once.
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_define_trampolines {
    ($entry_hook:path, $exit_hook:path) => {
        #[cfg(target_arch = "x86_64")]
        ::core::arch::global_asm!(
            $crate::__tracer_trampoline_body!("__tracer_v1_tramp_entry", "{entry}"),
            $crate::__tracer_trampoline_body!("__tracer_v1_tramp_exit", "{exit}"),
            entry = sym $entry_hook,
            exit = sym $exit_hook,
        );
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
            "sub rsp, 264\n",
            "movaps [rsp + 0], xmm0\n movaps [rsp + 16], xmm1\n",
            "movaps [rsp + 32], xmm2\n movaps [rsp + 48], xmm3\n",
            "movaps [rsp + 64], xmm4\n movaps [rsp + 80], xmm5\n",
            "movaps [rsp + 96], xmm6\n movaps [rsp + 112], xmm7\n",
            "movaps [rsp + 128], xmm8\n movaps [rsp + 144], xmm9\n",
            "movaps [rsp + 160], xmm10\n movaps [rsp + 176], xmm11\n",
            "movaps [rsp + 192], xmm12\n movaps [rsp + 208], xmm13\n",
            "movaps [rsp + 224], xmm14\n movaps [rsp + 240], xmm15\n",
            "mov rdi, r11\n",
            "lea rsi, [rsp + 336]\n",
            "mov rdx, r10\n",
            "call ",
            $hook,
            "\n",
            "movaps xmm0, [rsp + 0]\n movaps xmm1, [rsp + 16]\n",
            "movaps xmm2, [rsp + 32]\n movaps xmm3, [rsp + 48]\n",
            "movaps xmm4, [rsp + 64]\n movaps xmm5, [rsp + 80]\n",
            "movaps xmm6, [rsp + 96]\n movaps xmm7, [rsp + 112]\n",
            "movaps xmm8, [rsp + 128]\n movaps xmm9, [rsp + 144]\n",
            "movaps xmm10, [rsp + 160]\n movaps xmm11, [rsp + 176]\n",
            "movaps xmm12, [rsp + 192]\n movaps xmm13, [rsp + 208]\n",
            "movaps xmm14, [rsp + 224]\n movaps xmm15, [rsp + 240]\n",
            "add rsp, 264\n",
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
