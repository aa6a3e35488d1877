//! The pads `#[traceable]` expands to, on AArch64 and ARMv7 (Thumb-2 or A32).
//!
//! Each macro emits, at its place in the function, the pad, its stub (in
//! `.text.__tracer_stubs`) and its record (a [`tracer_core::site::SiteRecord`]
//! in `__tracer_sites`, flags `awR`; ARM assemblers read `@` as a comment, so
//! the section type is spelled `%progbits`). Only the macros of the target the
//! crate is compiled for exist.
//!
//! # AArch64
//!
//! ```text
//!     mov x9, x30                 ; pad head (aa1e03e9): keeps LR, as the kernel's pads do
//! 2:  nop                         ; the site (d503201f) <-> bl 3f
//!
//! 3:  adrp x16, 4f                ; stub: this site's record, PC-relative
//!     add  x16, x16, :lo12:4f
//!     b    __tracer_v1_tramp_entry
//!
//! 4:  .quad 2b, 3b, DESC ; .word KIND, 0
//! ```
//!
//! The enabled `BL` overwrites `x30`; the trampoline returns to the site's
//! successor with `ret` through `x16` and puts the saved `x9` back into `x30`,
//! exactly as Linux's `ftrace_caller` does with compiler-made
//! `-fpatchable-function-entry=2` pads. So the pad's asm contract is "`x9` and
//! `x16` (and the flags) are clobbered, everything else survives, `x30`
//! included", and the same trampoline would serve compiler-made pads. The
//! async variants pass the token in `x17`, which the trampoline preserves.
//!
//! # ARMv7, Thumb-2 (crate compiled with `-C target-feature=+thumb-mode`)
//!
//! ```text
//! 2:  nop.w                       ; the site (f3af 8000) <-> bl 3f
//!
//! 3:  ldr.w r12, 5f               ; stub (Thumb): r12 = record, PC-relative
//! 6:  add   r12, pc               ; (pc reads as 6b + 4)
//!     b.w   __tracer_v1_tramp_entry
//! 5:  .word 4f - 6b - 4
//!
//! 4:  .word 2b, 3b, DESC, KIND, 0
//! ```
//!
//! # ARMv7, A32
//!
//! The same with `nop` (`e320f000`) as the site, `add r12, pc, r12` (pc reads
//! as `6b + 8`) and `b`.
//!
//! On ARMv7 there is no pad head. The asm block declares `lr` and `r12`
//! clobbered, so the compiler itself keeps the function's return address
//! where it needs it (it already saves `lr` in every non-leaf function), and
//! `r12` (IP, the AAPCS scratch register) carries the record. A kernel-style
//! `mov ip, lr` head would need a second free scratch register for the record,
//! which AAPCS does not have. The async variants pass the token in `r2`, which
//! the trampoline preserves.
//!
//! # Addresses
//!
//! Records hold the labels as the assembler resolves them; whether a Thumb
//! label carries bit 0 depends on the assembler. The runtime canonicalises:
//! sites even (the address of the instruction), Thumb stubs odd (an
//! interworking address, which is what [`crate::Thumb2`]'s `classify` reports
//! as a `BL`'s target). Records are 4 words on AArch64 plus two `u32`s
//! (32 bytes), 5 words on ARMv7 (20 bytes): `SiteRecord` is `repr(C)` with
//! pointer-sized `pad`, `stub`, `desc` and two `u32`s, so both match.
//!
//! Without `nostack`, the compiler keeps the stack pointer ABI-aligned at the
//! asm block (16 bytes on AArch64, 8 on ARMv7), and neither ABI has a red
//! zone: the trampoline may push.

/// Emit a pad of `$kind` for the function described by the static `$desc`.
#[cfg(target_arch = "aarch64")]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_arm_pad {
    ($desc:path, $kind:expr, $tramp:literal $(, $token:expr)?) => {
        ::core::arch::asm!(
            ".inst 0xaa1e03e9",
            "2:",
            ".inst 0xd503201f",
            ".pushsection .text.__tracer_stubs,\"ax\",%progbits",
            ".p2align 2",
            "3:",
            "adrp x16, 4f",
            "add x16, x16, :lo12:4f",
            concat!("b ", $tramp),
            ".popsection",
            ".pushsection __tracer_sites,\"awR\",%progbits",
            ".balign 8",
            "4:",
            ".quad 2b",
            ".quad 3b",
            ".quad {desc}",
            ".word {kind}",
            ".word 0",
            ".popsection",
            desc = sym $desc,
            kind = const $kind,
            $(in("x17") $token,)?
            out("x9") _,
            out("x16") _,
        )
    };
}

/// Emit a pad of `$kind` for the function described by the static `$desc`.
#[cfg(all(target_arch = "arm", tracer_thumb))]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_arm_pad {
    ($desc:path, $kind:expr, $tramp:literal $(, $token:expr)?) => {
        ::core::arch::asm!(
            "2:",
            ".inst.w 0xf3af8000",
            ".pushsection .text.__tracer_stubs,\"ax\",%progbits",
            ".p2align 2",
            "3:",
            "ldr.w r12, 5f",
            "6:",
            "add r12, pc",
            concat!("b.w ", $tramp),
            ".p2align 2",
            "5:",
            ".word 4f - 6b - 4",
            ".popsection",
            ".pushsection __tracer_sites,\"awR\",%progbits",
            ".balign 4",
            "4:",
            ".word 2b",
            ".word 3b",
            ".word {desc}",
            ".word {kind}",
            ".word 0",
            ".popsection",
            desc = sym $desc,
            kind = const $kind,
            $(in("r2") $token,)?
            out("r12") _,
            out("lr") _,
        )
    };
}

/// Emit a pad of `$kind` for the function described by the static `$desc`.
#[cfg(all(target_arch = "arm", not(tracer_thumb)))]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_arm_pad {
    ($desc:path, $kind:expr, $tramp:literal $(, $token:expr)?) => {
        ::core::arch::asm!(
            "2:",
            ".inst 0xe320f000",
            ".pushsection .text.__tracer_stubs,\"ax\",%progbits",
            ".p2align 2",
            "3:",
            "ldr r12, 5f",
            "6:",
            "add r12, pc, r12",
            concat!("b ", $tramp),
            "5:",
            ".word 4f - 6b - 8",
            ".popsection",
            ".pushsection __tracer_sites,\"awR\",%progbits",
            ".balign 4",
            "4:",
            ".word 2b",
            ".word 3b",
            ".word {desc}",
            ".word {kind}",
            ".word 0",
            ".popsection",
            desc = sym $desc,
            kind = const $kind,
            $(in("r2") $token,)?
            out("r12") _,
            out("lr") _,
        )
    };
}

/// A `#[traceable]` pad of `$kind` (or-ed with
/// `tracer_core::site::FLAG_CAPTURE_STUB`) with a second, *capturing* stub
/// 16 bytes after its plain one (`CAPTURE_STUB_OFFSET`): `$stub` is its
/// code, which the macro writes from the values it captures (`$operand`s,
/// in registers at the pad), and which calls the capturing trampoline with
/// the site's record in `x16` (see `tracer_macros`' `capture` module for
/// the block it builds). The pad, the plain stub and the clobbers (`x9`,
/// `x16`) are [`__tracer_arm_pad`]'s: a disabled pad costs what it did,
/// and the capturing stub runs only for a function enabled with capture.
#[cfg(target_arch = "aarch64")]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_arm_capture_pad {
    ($desc:path, $kind:expr, $tramp:literal, $stub:literal $(, $($operand:tt)+)?) => {
        ::core::arch::asm!(
            ".inst 0xaa1e03e9",
            "2:",
            ".inst 0xd503201f",
            ".pushsection .text.__tracer_stubs,\"ax\",%progbits",
            ".balign 16",
            "3:",
            "adrp x16, 4f",
            "add x16, x16, :lo12:4f",
            concat!("b ", $tramp),
            ".balign 16",
            $stub,
            ".popsection",
            ".pushsection __tracer_sites,\"awR\",%progbits",
            ".balign 8",
            "4:",
            ".quad 2b",
            ".quad 3b",
            ".quad {desc}",
            ".word {kind}",
            ".word 0",
            ".popsection",
            desc = sym $desc,
            kind = const $kind,
            out("x9") _,
            out("x16") _,
            $($($operand)+)?
        )
    };
}

/// The ARMv7 Thumb-2 capturing pad (see the AArch64 one): the pad, plain
/// stub and clobbers (`r12`, `lr`) of [`__tracer_arm_pad`]; the stub's
/// text reads the PC bias as `{pcb}` (4 here).
#[cfg(all(target_arch = "arm", tracer_thumb))]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_arm_capture_pad {
    ($desc:path, $kind:expr, $tramp:literal, $stub:literal $(, $($operand:tt)+)?) => {
        ::core::arch::asm!(
            "2:",
            ".inst.w 0xf3af8000",
            ".pushsection .text.__tracer_stubs,\"ax\",%progbits",
            ".balign 16",
            "3:",
            "ldr.w r12, 5f",
            "6:",
            "add r12, pc",
            concat!("b.w ", $tramp),
            ".p2align 2",
            "5:",
            ".word 4f - 6b - 4",
            ".balign 16",
            $stub,
            ".popsection",
            ".pushsection __tracer_sites,\"awR\",%progbits",
            ".balign 4",
            "4:",
            ".word 2b",
            ".word 3b",
            ".word {desc}",
            ".word {kind}",
            ".word 0",
            ".popsection",
            desc = sym $desc,
            kind = const $kind,
            pcb = const 4,
            out("r12") _,
            out("lr") _,
            $($($operand)+)?
        )
    };
}

/// The ARMv7 A32 capturing pad (see the AArch64 one); `{pcb}` is 8.
#[cfg(all(target_arch = "arm", not(tracer_thumb)))]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_arm_capture_pad {
    ($desc:path, $kind:expr, $tramp:literal, $stub:literal $(, $($operand:tt)+)?) => {
        ::core::arch::asm!(
            "2:",
            ".inst 0xe320f000",
            ".pushsection .text.__tracer_stubs,\"ax\",%progbits",
            ".balign 16",
            "3:",
            "ldr r12, 5f",
            "6:",
            "add r12, pc, r12",
            concat!("b ", $tramp),
            "5:",
            ".word 4f - 6b - 8",
            ".balign 16",
            $stub,
            ".popsection",
            ".pushsection __tracer_sites,\"awR\",%progbits",
            ".balign 4",
            "4:",
            ".word 2b",
            ".word 3b",
            ".word {desc}",
            ".word {kind}",
            ".word 0",
            ".popsection",
            desc = sym $desc,
            kind = const $kind,
            pcb = const 8,
            out("r12") _,
            out("lr") _,
            $($($operand)+)?
        )
    };
}

/// The entry pad of a function.
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_entry_pad {
    ($desc:path) => {
        $crate::__tracer_arm_pad!($desc, 0u32, "__tracer_v1_tramp_entry")
    };
}

/// The exit pad of a function (placed in a guard's `drop`).
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_exit_pad {
    ($desc:path) => {
        $crate::__tracer_arm_pad!($desc, 1u32, "__tracer_v1_tramp_exit")
    };
}

/// The entry pad of an `async fn`; `$token` is a `*mut u64` slot in the future.
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_async_entry_pad {
    ($desc:path, $token:expr) => {
        $crate::__tracer_arm_pad!($desc, 2u32, "__tracer_v1_tramp_entry", $token)
    };
}

/// The exit pad of an `async fn`, with the same token as its entry.
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_async_exit_pad {
    ($desc:path, $token:expr) => {
        $crate::__tracer_arm_pad!($desc, 3u32, "__tracer_v1_tramp_exit", $token)
    };
}
