//! Entry and exit trampolines for AArch64, Thumb-2 and A32, in assembly.
//!
//! An enabled site calls (`BL`) its stub, which puts the site's record in a
//! scratch register (`x16` / `r12`) and branches here. The trampoline saves
//! every register the hook may clobber and the pad's contract says survives
//! (see [`crate::pad`]), calls the hook
//! `extern "C" fn(record: *const SiteRecord, sp: usize, token: usize)` with
//! `sp` the stack pointer at the pad, and returns to the instruction after
//! the site. Plain `global_asm!` (no naked functions: this builds with 1.85).
//!
//! # AArch64
//!
//! A frame record (`x29`, `x30`), then `x0`–`x18` and all of `q0`–`q31`: the
//! hook may clobber `x0`–`x18` and, per AAPCS64, the whole of `v0`–`v7`,
//! `v16`–`v31` and the *upper* halves of `v8`–`v15`, while an asm block's
//! undeclared registers must survive in full. 688 bytes, a multiple of 16, so
//! the hook is called with a 16-aligned stack. On return `x30` (the site's
//! successor) goes to `x16` and the `x9` the pad head saved goes back into
//! `x30`: `ret x16`.
//!
//! # ARMv7 (Thumb-2 and A32: the same text, assembled in the crate's mode)
//!
//! `r0`–`r3`, `r12`, `lr`, then `d0`–`d7` (and `d16`–`d31` when the program
//! is built with `+d32`/`+neon`; code built for the default
//! `armv7-unknown-linux-gnueabihf`, which is `-d32`, never holds a value
//! there). `d8`–`d15` are callee-saved under AAPCS-VFP, and `r4`–`r11` are
//! callee-saved. 24 + 64 (+ 128) bytes keep the 8-byte alignment AAPCS
//! requires at the call. The token already sits in `r2`, the hook's third
//! argument. Returns with `bx lr` (into Thumb state for a Thumb pad, since
//! `BL` from Thumb code set bit 0 of `lr`).

/// Define `__tracer_v1_tramp_entry` and `__tracer_v1_tramp_exit`, calling the
/// given hooks. The runtime invokes this exactly once.
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_define_trampolines {
    ($entry_hook:path, $exit_hook:path) => {
        ::core::arch::global_asm!(
            $crate::__tracer_trampoline_body!("__tracer_v1_tramp_entry", "{entry}"),
            $crate::__tracer_trampoline_body!("__tracer_v1_tramp_exit", "{exit}"),
            entry = sym $entry_hook,
            exit = sym $exit_hook,
        );
    };
}

/// Define the capturing trampolines of `#[traceable]` pads,
/// `__tracer_v1_tramp_entry_args` and `__tracer_v1_tramp_exit_args`: the
/// plain trampolines' text with other hooks. A pad's capturing stub (see
/// `__tracer_arm_capture_pad!`) stores its values below the stack pointer
/// and *calls* (`BL`) the trampoline with the record in `x16` / `r12`; the
/// trampoline saves and restores registers exactly as the plain ones do and
/// calls `$hook(record, block, token)`, `block` being the stack pointer it
/// was entered with (where the stub's block starts); on AArch64 it returns
/// into the stub with `x30` = `x9`, as the plain one returns into the pad.
/// The runtime invokes this exactly once.
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_define_traceable_capture_trampolines {
    ($entry_hook:path, $exit_hook:path) => {
        ::core::arch::global_asm!(
            $crate::__tracer_trampoline_body!("__tracer_v1_tramp_entry_args", "{entry}"),
            $crate::__tracer_trampoline_body!("__tracer_v1_tramp_exit_args", "{exit}"),
            entry = sym $entry_hook,
            exit = sym $exit_hook,
        );
    };
}

/// The text of one trampoline.
#[cfg(target_arch = "aarch64")]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_trampoline_body {
    ($name:literal, $hook:literal) => {
        concat!(
            ".pushsection .text.__tracer_tramp,\"ax\",%progbits\n",
            ".globl ",
            $name,
            "\n",
            ".hidden ",
            $name,
            "\n",
            ".type ",
            $name,
            ",%function\n",
            ".p2align 4\n",
            $name,
            ":\n",
            "stp x29, x30, [sp, #-16]!\n",
            "mov x29, sp\n",
            "sub sp, sp, #672\n",
            "stp x0, x1, [sp, #0]\n stp x2, x3, [sp, #16]\n",
            "stp x4, x5, [sp, #32]\n stp x6, x7, [sp, #48]\n",
            "stp x8, x9, [sp, #64]\n stp x10, x11, [sp, #80]\n",
            "stp x12, x13, [sp, #96]\n stp x14, x15, [sp, #112]\n",
            "stp x16, x17, [sp, #128]\n str x18, [sp, #144]\n",
            "stp q0, q1, [sp, #160]\n stp q2, q3, [sp, #192]\n",
            "stp q4, q5, [sp, #224]\n stp q6, q7, [sp, #256]\n",
            "stp q8, q9, [sp, #288]\n stp q10, q11, [sp, #320]\n",
            "stp q12, q13, [sp, #352]\n stp q14, q15, [sp, #384]\n",
            "stp q16, q17, [sp, #416]\n stp q18, q19, [sp, #448]\n",
            "stp q20, q21, [sp, #480]\n stp q22, q23, [sp, #512]\n",
            "stp q24, q25, [sp, #544]\n stp q26, q27, [sp, #576]\n",
            "stp q28, q29, [sp, #608]\n stp q30, q31, [sp, #640]\n",
            "mov x0, x16\n",
            "add x1, sp, #688\n",
            "mov x2, x17\n",
            "bl ",
            $hook,
            "\n",
            "ldp q0, q1, [sp, #160]\n ldp q2, q3, [sp, #192]\n",
            "ldp q4, q5, [sp, #224]\n ldp q6, q7, [sp, #256]\n",
            "ldp q8, q9, [sp, #288]\n ldp q10, q11, [sp, #320]\n",
            "ldp q12, q13, [sp, #352]\n ldp q14, q15, [sp, #384]\n",
            "ldp q16, q17, [sp, #416]\n ldp q18, q19, [sp, #448]\n",
            "ldp q20, q21, [sp, #480]\n ldp q22, q23, [sp, #512]\n",
            "ldp q24, q25, [sp, #544]\n ldp q26, q27, [sp, #576]\n",
            "ldp q28, q29, [sp, #608]\n ldp q30, q31, [sp, #640]\n",
            "ldp x0, x1, [sp, #0]\n ldp x2, x3, [sp, #16]\n",
            "ldp x4, x5, [sp, #32]\n ldp x6, x7, [sp, #48]\n",
            "ldp x8, x9, [sp, #64]\n ldp x10, x11, [sp, #80]\n",
            "ldp x12, x13, [sp, #96]\n ldp x14, x15, [sp, #112]\n",
            "ldp x16, x17, [sp, #128]\n ldr x18, [sp, #144]\n",
            "add sp, sp, #672\n",
            "ldp x29, x30, [sp], #16\n",
            "mov x16, x30\n",
            "mov x30, x9\n",
            "ret x16\n",
            ".size ",
            $name,
            ", . - ",
            $name,
            "\n",
            ".popsection\n"
        )
    };
}

/// How the ARMv7 trampolines are assembled: Thumb-2.
#[cfg(all(target_arch = "arm", tracer_thumb))]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_arm_mode {
    () => {
        ".thumb\n.thumb_func\n"
    };
}

/// How the ARMv7 trampolines are assembled: A32.
#[cfg(all(target_arch = "arm", not(tracer_thumb)))]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_arm_mode {
    () => {
        ".arm\n"
    };
}

/// Saving and restoring `d16`–`d31` (builds with `+d32`/`+neon`).
#[cfg(all(target_arch = "arm", tracer_arm_d32))]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_arm_d32 {
    (save) => {
        "vpush {{d16-d31}}\n add r1, sp, #216\n"
    };
    (restore) => {
        "vpop {{d16-d31}}\n"
    };
}

/// Saving and restoring `d16`–`d31`: not needed in `-d32` builds.
#[cfg(all(target_arch = "arm", not(tracer_arm_d32)))]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_arm_d32 {
    (save) => {
        "add r1, sp, #88\n"
    };
    (restore) => {
        ""
    };
}

/// The text of one trampoline.
#[cfg(target_arch = "arm")]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_trampoline_body {
    ($name:literal, $hook:literal) => {
        concat!(
            ".pushsection .text.__tracer_tramp,\"ax\",%progbits\n",
            ".globl ",
            $name,
            "\n",
            ".hidden ",
            $name,
            "\n",
            ".type ",
            $name,
            ",%function\n",
            ".p2align 2\n",
            $crate::__tracer_arm_mode!(),
            $name,
            ":\n",
            "push {{r0-r3, r12, lr}}\n",
            "vpush {{d0-d7}}\n",
            $crate::__tracer_arm_d32!(save),
            "mov r0, r12\n",
            "bl ",
            $hook,
            "\n",
            $crate::__tracer_arm_d32!(restore),
            "vpop {{d0-d7}}\n",
            "pop {{r0-r3, r12, lr}}\n",
            "bx lr\n",
            ".size ",
            $name,
            ", . - ",
            $name,
            "\n",
            ".popsection\n"
        )
    };
}

/// Define the AArch64 trampolines of compiler pads (true function entries),
/// the counterparts of the x86-64 ones (`tracer_arch_x86`'s
/// `__tracer_define_fentry_trampolines!`). The runtime invokes this once.
///
/// `__tracer_v1_tramp_fentry` is reached from a function's entry stub
/// (`crate::aarch64::encode_entry_stub`) with the function's index in
/// `w16`, the address to resume at (after the pad's first instruction) in
/// `x17` and the caller's return address still in `x30` (the pad is a `B`).
/// It saves a frame record, `x0`–`x15`, `x17`, `x18` and `q0`–`q31` (the
/// arguments, and everything the hook may clobber), calls
/// `$fentry_hook(func, slot, sp)` where `slot` is the address of the saved
/// `x30` (the hook may replace it with `__tracer_v1_tramp_fret` to see the
/// return) and `sp` the stack pointer at the function's entry (the frame's
/// identity: the traced function returns with the same one), restores
/// them, `x30` possibly replaced, and resumes with `ret x17` (a return, so a
/// BTI-guarded function body is never the target of an indirect branch).
///
/// `__tracer_v1_tramp_fret` is reached by the traced function's `ret`. It
/// saves `x0`–`x18` and `q0`–`q31` (return values, and what the hook may
/// clobber), calls `$fret_hook(sp) -> original return address` with the
/// stack pointer it was entered with, and returns there with `ret`.
///
/// Both keep `sp` 16-aligned. The return trampoline has unwind information
/// whose return address rule finds a hooked frame's real return address on
/// the shadow stacks (`$threads`, the list of thread blocks; `$dead`,
/// `$private`, `$shadow`: offsets in a block), so unwinders walk through it
/// (a thread cancelled inside hooked frames, gdb); the runtime's unwinder
/// interposers still give the real return addresses back before an
/// exception unwinds.
#[cfg(target_arch = "aarch64")]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_define_fentry_trampolines {
    (
        $fentry_hook:path,
        $fret_hook:path,
        $threads:path,
        $dead:path,
        $private:path,
        $shadow:path
    ) => {
        ::core::arch::global_asm!(
            ".pushsection .text.__tracer_tramp,\"ax\",%progbits",
            ".globl __tracer_v1_tramp_fentry",
            ".hidden __tracer_v1_tramp_fentry",
            ".type __tracer_v1_tramp_fentry,%function",
            ".p2align 4",
            "__tracer_v1_tramp_fentry:",
            // BTI JC: a landing pad for the stub's `br x9` should this text
            // ever be BTI-guarded; a NOP otherwise.
            "hint #38",
            "stp x29, x30, [sp, #-16]!",
            "mov x29, sp",
            "sub sp, sp, #656",
            "stp x0, x1, [sp, #0]\n stp x2, x3, [sp, #16]",
            "stp x4, x5, [sp, #32]\n stp x6, x7, [sp, #48]",
            "stp x8, x9, [sp, #64]\n stp x10, x11, [sp, #80]",
            "stp x12, x13, [sp, #96]\n stp x14, x15, [sp, #112]",
            "stp x17, x18, [sp, #128]",
            "stp q0, q1, [sp, #144]\n stp q2, q3, [sp, #176]",
            "stp q4, q5, [sp, #208]\n stp q6, q7, [sp, #240]",
            "stp q8, q9, [sp, #272]\n stp q10, q11, [sp, #304]",
            "stp q12, q13, [sp, #336]\n stp q14, q15, [sp, #368]",
            "stp q16, q17, [sp, #400]\n stp q18, q19, [sp, #432]",
            "stp q20, q21, [sp, #464]\n stp q22, q23, [sp, #496]",
            "stp q24, q25, [sp, #528]\n stp q26, q27, [sp, #560]",
            "stp q28, q29, [sp, #592]\n stp q30, q31, [sp, #624]",
            "mov w0, w16",
            "add x1, sp, #664",
            "add x2, sp, #672",
            "bl {fentry}",
            "ldp q0, q1, [sp, #144]\n ldp q2, q3, [sp, #176]",
            "ldp q4, q5, [sp, #208]\n ldp q6, q7, [sp, #240]",
            "ldp q8, q9, [sp, #272]\n ldp q10, q11, [sp, #304]",
            "ldp q12, q13, [sp, #336]\n ldp q14, q15, [sp, #368]",
            "ldp q16, q17, [sp, #400]\n ldp q18, q19, [sp, #432]",
            "ldp q20, q21, [sp, #464]\n ldp q22, q23, [sp, #496]",
            "ldp q24, q25, [sp, #528]\n ldp q26, q27, [sp, #560]",
            "ldp q28, q29, [sp, #592]\n ldp q30, q31, [sp, #624]",
            "ldp x0, x1, [sp, #0]\n ldp x2, x3, [sp, #16]",
            "ldp x4, x5, [sp, #32]\n ldp x6, x7, [sp, #48]",
            "ldp x8, x9, [sp, #64]\n ldp x10, x11, [sp, #80]",
            "ldp x12, x13, [sp, #96]\n ldp x14, x15, [sp, #112]",
            "ldp x17, x18, [sp, #128]",
            "add sp, sp, #656",
            "ldp x29, x30, [sp], #16",
            "ret x17",
            ".size __tracer_v1_tramp_fentry, . - __tracer_v1_tramp_fentry",
            ".p2align 4",
            // Unwind information, for unwinders that meet a hooked return
            // (as on x86-64, see `tracer_arch_x86`): an unwinder looks up
            // `__tracer_v1_tramp_fret - 1`, which this FDE covers (the 16
            // bytes before the code are data, never executed). The frame's
            // CFA is the stack pointer the traced function returned with, the
            // key of its shadow frame. The rule for the return address (x30)
            // takes x30 as it stands (its pointer authentication code
            // stripped): a real return address is the answer; the
            // trampoline's (`*(v - 8)` is the tag) is looked up on the shadow
            // stacks, through `*(v - 16)`, the offset from there to
            // `$threads` (generated: `scripts/fret-cfi.py aarch64`). Once the
            // trampoline has saved x30 (still its own address) at CFA - 520,
            // the rule reads it there (`aarch64-saved`); once x30 holds the
            // real return address, x30 is the answer.
            ".globl __tracer_v1_hooked_return",
            ".hidden __tracer_v1_hooked_return",
            ".type __tracer_v1_hooked_return,%function",
            "__tracer_v1_hooked_return:",
            ".cfi_startproc",
            ".cfi_def_cfa sp, 0",
            $crate::__tracer_aarch64_fret_cfi!(entry),
            ".quad {threads} - .",
            ".ascii \"tracer.r\"",
            ".globl __tracer_v1_tramp_fret",
            ".hidden __tracer_v1_tramp_fret",
            ".type __tracer_v1_tramp_fret,%function",
            "__tracer_v1_tramp_fret:",
            "sub sp, sp, #672",
            ".cfi_def_cfa_offset 672",
            "str x30, [sp, #152]",
            $crate::__tracer_aarch64_fret_cfi!(saved),
            "stp x0, x1, [sp, #0]\n stp x2, x3, [sp, #16]",
            "stp x4, x5, [sp, #32]\n stp x6, x7, [sp, #48]",
            "stp x8, x9, [sp, #64]\n stp x10, x11, [sp, #80]",
            "stp x12, x13, [sp, #96]\n stp x14, x15, [sp, #112]",
            "stp x16, x17, [sp, #128]\n str x18, [sp, #144]",
            "stp q0, q1, [sp, #160]\n stp q2, q3, [sp, #192]",
            "stp q4, q5, [sp, #224]\n stp q6, q7, [sp, #256]",
            "stp q8, q9, [sp, #288]\n stp q10, q11, [sp, #320]",
            "stp q12, q13, [sp, #352]\n stp q14, q15, [sp, #384]",
            "stp q16, q17, [sp, #416]\n stp q18, q19, [sp, #448]",
            "stp q20, q21, [sp, #480]\n stp q22, q23, [sp, #512]",
            "stp q24, q25, [sp, #544]\n stp q26, q27, [sp, #576]",
            "stp q28, q29, [sp, #608]\n stp q30, q31, [sp, #640]",
            "add x0, sp, #672",
            "bl {fret}",
            "mov x30, x0",
            ".cfi_restore 30",
            "ldp q0, q1, [sp, #160]\n ldp q2, q3, [sp, #192]",
            "ldp q4, q5, [sp, #224]\n ldp q6, q7, [sp, #256]",
            "ldp q8, q9, [sp, #288]\n ldp q10, q11, [sp, #320]",
            "ldp q12, q13, [sp, #352]\n ldp q14, q15, [sp, #384]",
            "ldp q16, q17, [sp, #416]\n ldp q18, q19, [sp, #448]",
            "ldp q20, q21, [sp, #480]\n ldp q22, q23, [sp, #512]",
            "ldp q24, q25, [sp, #544]\n ldp q26, q27, [sp, #576]",
            "ldp q28, q29, [sp, #608]\n ldp q30, q31, [sp, #640]",
            "ldp x0, x1, [sp, #0]\n ldp x2, x3, [sp, #16]",
            "ldp x4, x5, [sp, #32]\n ldp x6, x7, [sp, #48]",
            "ldp x8, x9, [sp, #64]\n ldp x10, x11, [sp, #80]",
            "ldp x12, x13, [sp, #96]\n ldp x14, x15, [sp, #112]",
            "ldp x16, x17, [sp, #128]\n ldr x18, [sp, #144]",
            "add sp, sp, #672",
            ".cfi_def_cfa_offset 0",
            "ret",
            ".cfi_endproc",
            ".size __tracer_v1_tramp_fret, . - __tracer_v1_tramp_fret",
            ".size __tracer_v1_hooked_return, . - __tracer_v1_hooked_return",
            ".popsection",
            fentry = sym $fentry_hook,
            fret = sym $fret_hook,
            threads = sym $threads,
            dead = const $dead,
            private = const $private,
            shadow = const $shadow,
        );
    };
}

/// The return-address rules of the AArch64 return trampolines' unwind
/// information (see `__tracer_define_fentry_trampolines!`; generated by
/// `scripts/fret-cfi.py aarch64`): `entry` while `x30` holds the
/// trampoline's own address, `saved` once the trampoline has stored it at
/// CFA - 520. The text refers to the operands `dead`, `private` and
/// `shadow`. Shared by the plain and the capturing return trampolines.
#[cfg(target_arch = "aarch64")]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_aarch64_fret_cfi {
    (entry) => {
        ".cfi_escape 0x16, 0x1e, 0x79, 0x12, 0x8e, 0, 0x40, 0x24, 0x40, 0x25, 0x12, 0x38, 0x1c, 0x6, 0xe, 0x74, 0x72, 0x61, 0x63, 0x65, 0x72, 0x2e, 0x72, 0x2e, 0x28, 0x61, 0x0, 0x12, 0x40, 0x1c, 0x12, 0x6, 0x22, 0x6, 0x16, 0x13, 0x12, 0x28, 0x3, 0x0, 0x2f, 0x51, 0x0, 0x12, 0xa, ({dead} & 0xff), ({dead} >> 8), 0x22, 0x94, 1, 0x28, 0x43, 0x0, 0x12, 0xa, ({private} & 0xff), ({private} >> 8), 0x22, 0x6, 0x12, 0x28, 0x4, 0x0, 0x13, 0x2f, 0x35, 0x0, 0x31, 0x1c, 0x12, 0x8, 128, 0x2d, 0x28, 0x4, 0x0, 0x13, 0x2f, 0x28, 0x0, 0x12, 0x8, 32, 0x1e, 0x15, 2, 0x22, 0xa, ({shadow} & 0xff), ({shadow} >> 8), 0x22, 0x12, 0x8, 16, 0x22, 0x6, 0x15, 4, 0x29, 0x28, 0x4, 0x0, 0x13, 0x2f, 0xd1, 0xff, 0x8, 24, 0x22, 0x6, 0x12, 0x31, 0x2b, 0x28, 0x8, 0x0, 0x13, 0x2f, 0xc3, 0xff, 0x6, 0x2f, 0xa8, 0xff"
    };
    (saved) => {
        ".cfi_escape 0x16, 0x1e, 0x7d, 0x12, 0x12, 0xa, 0x08, 0x02, 0x1c, 0x6, 0x40, 0x24, 0x40, 0x25, 0x12, 0x38, 0x1c, 0x6, 0xe, 0x74, 0x72, 0x61, 0x63, 0x65, 0x72, 0x2e, 0x72, 0x2e, 0x28, 0x61, 0x0, 0x12, 0x40, 0x1c, 0x12, 0x6, 0x22, 0x6, 0x16, 0x13, 0x12, 0x28, 0x3, 0x0, 0x2f, 0x51, 0x0, 0x12, 0xa, ({dead} & 0xff), ({dead} >> 8), 0x22, 0x94, 1, 0x28, 0x43, 0x0, 0x12, 0xa, ({private} & 0xff), ({private} >> 8), 0x22, 0x6, 0x12, 0x28, 0x4, 0x0, 0x13, 0x2f, 0x35, 0x0, 0x31, 0x1c, 0x12, 0x8, 128, 0x2d, 0x28, 0x4, 0x0, 0x13, 0x2f, 0x28, 0x0, 0x12, 0x8, 32, 0x1e, 0x15, 2, 0x22, 0xa, ({shadow} & 0xff), ({shadow} >> 8), 0x22, 0x12, 0x8, 16, 0x22, 0x6, 0x15, 4, 0x29, 0x28, 0x4, 0x0, 0x13, 0x2f, 0xd1, 0xff, 0x8, 24, 0x22, 0x6, 0x12, 0x31, 0x2b, 0x28, 0x8, 0x0, 0x13, 0x2f, 0xc3, 0xff, 0x6, 0x2f, 0xa8, 0xff"
    };
}

/// The frame the AArch64 capturing entry trampoline
/// (`__tracer_v1_tramp_fentry_args`, see
/// `__tracer_define_capture_trampolines!`) hands its hook, lowest address
/// first: the same registers, at the same places, as the plain entry
/// trampoline saves. The function's entry stack pointer is just above it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CaptureRegs {
    /// `x0`–`x15`: `x0`–`x7` are the integer arguments, `x8` the indirect
    /// result address.
    pub x: [u64; 16],
    /// `x17` (the resume address) and `x18`.
    pub x17_x18: [u64; 2],
    /// `q0`–`q31`, low half first: `d0`–`d7` are the floating-point
    /// arguments.
    pub q: [[u64; 2]; 32],
    /// The frame record: `x29`.
    pub fp: u64,
    /// The frame record: `x30`, the caller's return address. Its address is
    /// the slot the hook may hook.
    pub lr: u64,
}

/// Define the AArch64 capturing trampolines of compiler pads (argument and
/// return-value capture, issue 14), the counterparts of the x86-64
/// `__tracer_v1_tramp_fentry_args` / `__tracer_v1_tramp_fret_args`. Only
/// functions enabled with capture reach them (their own entry stub,
/// [`crate::aarch64::encode_capture_stub`]); the plain ones of
/// `__tracer_define_fentry_trampolines!` are unchanged. The runtime invokes
/// this once.
///
/// `__tracer_v1_tramp_fentry_args` is the plain entry trampoline with
/// another call: it saves the same frame ([`CaptureRegs`]), calls
/// `$fentry_hook(word, regs)` with `word` the stub's `x16` (function index
/// in the low half, capture spec in the high half) and `regs` the frame
/// (the slot is `&regs.lr`, the entry stack pointer `regs + 672`), restores
/// everything (`x30` possibly replaced) and resumes with `ret x17`.
///
/// `__tracer_v1_tramp_fret_args` is the plain return trampoline with
/// another call: the same frame, the same 16-byte tag before it and the
/// same unwind rules (in an FDE of its own), and it calls
/// `$fret_hook(sp, x0, d0) -> original return address` with the return
/// values (`x0`, `d0`) as the traced function left them.
#[cfg(target_arch = "aarch64")]
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_define_capture_trampolines {
    (
        $fentry_hook:path,
        $fret_hook:path,
        $threads:path,
        $dead:path,
        $private:path,
        $shadow:path
    ) => {
        ::core::arch::global_asm!(
            ".pushsection .text.__tracer_tramp,\"ax\",%progbits",
            ".globl __tracer_v1_tramp_fentry_args",
            ".hidden __tracer_v1_tramp_fentry_args",
            ".type __tracer_v1_tramp_fentry_args,%function",
            ".p2align 4",
            "__tracer_v1_tramp_fentry_args:",
            // BTI JC, as in the plain one.
            "hint #38",
            "stp x29, x30, [sp, #-16]!",
            "mov x29, sp",
            "sub sp, sp, #656",
            "stp x0, x1, [sp, #0]\n stp x2, x3, [sp, #16]",
            "stp x4, x5, [sp, #32]\n stp x6, x7, [sp, #48]",
            "stp x8, x9, [sp, #64]\n stp x10, x11, [sp, #80]",
            "stp x12, x13, [sp, #96]\n stp x14, x15, [sp, #112]",
            "stp x17, x18, [sp, #128]",
            "stp q0, q1, [sp, #144]\n stp q2, q3, [sp, #176]",
            "stp q4, q5, [sp, #208]\n stp q6, q7, [sp, #240]",
            "stp q8, q9, [sp, #272]\n stp q10, q11, [sp, #304]",
            "stp q12, q13, [sp, #336]\n stp q14, q15, [sp, #368]",
            "stp q16, q17, [sp, #400]\n stp q18, q19, [sp, #432]",
            "stp q20, q21, [sp, #464]\n stp q22, q23, [sp, #496]",
            "stp q24, q25, [sp, #528]\n stp q26, q27, [sp, #560]",
            "stp q28, q29, [sp, #592]\n stp q30, q31, [sp, #624]",
            "mov x0, x16",
            "mov x1, sp",
            "bl {fentry}",
            "ldp q0, q1, [sp, #144]\n ldp q2, q3, [sp, #176]",
            "ldp q4, q5, [sp, #208]\n ldp q6, q7, [sp, #240]",
            "ldp q8, q9, [sp, #272]\n ldp q10, q11, [sp, #304]",
            "ldp q12, q13, [sp, #336]\n ldp q14, q15, [sp, #368]",
            "ldp q16, q17, [sp, #400]\n ldp q18, q19, [sp, #432]",
            "ldp q20, q21, [sp, #464]\n ldp q22, q23, [sp, #496]",
            "ldp q24, q25, [sp, #528]\n ldp q26, q27, [sp, #560]",
            "ldp q28, q29, [sp, #592]\n ldp q30, q31, [sp, #624]",
            "ldp x0, x1, [sp, #0]\n ldp x2, x3, [sp, #16]",
            "ldp x4, x5, [sp, #32]\n ldp x6, x7, [sp, #48]",
            "ldp x8, x9, [sp, #64]\n ldp x10, x11, [sp, #80]",
            "ldp x12, x13, [sp, #96]\n ldp x14, x15, [sp, #112]",
            "ldp x17, x18, [sp, #128]",
            "add sp, sp, #656",
            "ldp x29, x30, [sp], #16",
            "ret x17",
            ".size __tracer_v1_tramp_fentry_args, . - __tracer_v1_tramp_fentry_args",
            ".p2align 4",
            // The plain return trampoline's unwind information, tag and
            // frame (see `__tracer_define_fentry_trampolines!`): the rules
            // read the tag before whatever return trampoline `x30` holds.
            // Debuggers name the frame by this symbol.
            ".globl __tracer_v1_hooked_return_args",
            ".hidden __tracer_v1_hooked_return_args",
            ".type __tracer_v1_hooked_return_args,%function",
            "__tracer_v1_hooked_return_args:",
            ".cfi_startproc",
            ".cfi_def_cfa sp, 0",
            $crate::__tracer_aarch64_fret_cfi!(entry),
            ".quad {threads} - .",
            ".ascii \"tracer.r\"",
            ".globl __tracer_v1_tramp_fret_args",
            ".hidden __tracer_v1_tramp_fret_args",
            ".type __tracer_v1_tramp_fret_args,%function",
            "__tracer_v1_tramp_fret_args:",
            "sub sp, sp, #672",
            ".cfi_def_cfa_offset 672",
            "str x30, [sp, #152]",
            $crate::__tracer_aarch64_fret_cfi!(saved),
            "stp x0, x1, [sp, #0]\n stp x2, x3, [sp, #16]",
            "stp x4, x5, [sp, #32]\n stp x6, x7, [sp, #48]",
            "stp x8, x9, [sp, #64]\n stp x10, x11, [sp, #80]",
            "stp x12, x13, [sp, #96]\n stp x14, x15, [sp, #112]",
            "stp x16, x17, [sp, #128]\n str x18, [sp, #144]",
            "stp q0, q1, [sp, #160]\n stp q2, q3, [sp, #192]",
            "stp q4, q5, [sp, #224]\n stp q6, q7, [sp, #256]",
            "stp q8, q9, [sp, #288]\n stp q10, q11, [sp, #320]",
            "stp q12, q13, [sp, #352]\n stp q14, q15, [sp, #384]",
            "stp q16, q17, [sp, #416]\n stp q18, q19, [sp, #448]",
            "stp q20, q21, [sp, #480]\n stp q22, q23, [sp, #512]",
            "stp q24, q25, [sp, #544]\n stp q26, q27, [sp, #576]",
            "stp q28, q29, [sp, #608]\n stp q30, q31, [sp, #640]",
            "mov x1, x0",
            "fmov x2, d0",
            "add x0, sp, #672",
            "bl {fret}",
            "mov x30, x0",
            ".cfi_restore 30",
            "ldp q0, q1, [sp, #160]\n ldp q2, q3, [sp, #192]",
            "ldp q4, q5, [sp, #224]\n ldp q6, q7, [sp, #256]",
            "ldp q8, q9, [sp, #288]\n ldp q10, q11, [sp, #320]",
            "ldp q12, q13, [sp, #352]\n ldp q14, q15, [sp, #384]",
            "ldp q16, q17, [sp, #416]\n ldp q18, q19, [sp, #448]",
            "ldp q20, q21, [sp, #480]\n ldp q22, q23, [sp, #512]",
            "ldp q24, q25, [sp, #544]\n ldp q26, q27, [sp, #576]",
            "ldp q28, q29, [sp, #608]\n ldp q30, q31, [sp, #640]",
            "ldp x0, x1, [sp, #0]\n ldp x2, x3, [sp, #16]",
            "ldp x4, x5, [sp, #32]\n ldp x6, x7, [sp, #48]",
            "ldp x8, x9, [sp, #64]\n ldp x10, x11, [sp, #80]",
            "ldp x12, x13, [sp, #96]\n ldp x14, x15, [sp, #112]",
            "ldp x16, x17, [sp, #128]\n ldr x18, [sp, #144]",
            "add sp, sp, #672",
            ".cfi_def_cfa_offset 0",
            "ret",
            ".cfi_endproc",
            ".size __tracer_v1_tramp_fret_args, . - __tracer_v1_tramp_fret_args",
            ".size __tracer_v1_hooked_return_args, . - __tracer_v1_hooked_return_args",
            ".popsection",
            fentry = sym $fentry_hook,
            fret = sym $fret_hook,
            threads = sym $threads,
            dead = const $dead,
            private = const $private,
            shadow = const $shadow,
        );
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn capture_frame_matches_the_trampoline() {
        use super::CaptureRegs;
        // 16 + 656 bytes: the frame record above the 656 bytes of saves.
        assert_eq!(std::mem::size_of::<CaptureRegs>(), 672);
        assert_eq!(std::mem::offset_of!(CaptureRegs, x17_x18), 128);
        assert_eq!(std::mem::offset_of!(CaptureRegs, q), 144);
        assert_eq!(std::mem::offset_of!(CaptureRegs, lr), 664);
    }
}
