//! The pads `#[traceable]` expands to, on x86-64.
//!
//! Each macro emits, at its place in the function:
//!
//! ```text
//! 2:  nop dword ptr [rax+rax*1+0]      ; the site: 0f 1f 44 00 00
//!
//!     .text.__tracer_stubs:            ; the stub an enabled site calls
//! 3:  lea r11, [rip + 4f]              ; this site's record
//!     jmp __tracer_v1_tramp_entry      ; (or _exit)
//!
//!     __tracer_sites:                  ; the record (tracer_core::site::SiteRecord)
//! 4:  .quad 2b, 3b, DESC ; .long KIND, 0
//! ```
//!
//! While disabled, the function runs the 5-byte NOP and nothing else: no load,
//! no branch. The asm block declares only `r11` clobbered (the stub's scratch
//! register; never an argument register, so it costs nothing at a function's
//! entry) and does not say `nostack`, so the compiler keeps the stack aligned
//! and the red zone free there: the enabled CALL may push. The trampoline
//! preserves every other register (see [`crate::trampoline`]).

/// Emit a pad of kind `$kind` (`tracer_core::site::KIND_*`) for the function
/// described by the static `$desc`, whose stub jumps to `$tramp`; further
/// asm operands (the async token's `in("r10")`) follow.
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_x86_pad {
    ($desc:path, $kind:expr, $tramp:literal $(, $($operand:tt)+)?) => {
        ::core::arch::asm!(
            "2:",
            ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
            ".pushsection .text.__tracer_stubs,\"ax\",@progbits",
            "3:",
            "lea r11, [rip + 4f]",
            concat!("jmp ", $tramp),
            ".popsection",
            ".pushsection __tracer_sites,\"awR\",@progbits",
            ".balign 8",
            "4:",
            ".quad 2b",
            ".quad 3b",
            ".quad {desc}",
            ".long {kind}",
            ".long 0",
            ".popsection",
            desc = sym $desc,
            kind = const $kind,
            out("r11") _,
            $($($operand)+)?
        )
    };
}

/// A `#[traceable]` pad with a second, capturing stub (see
/// `tracer_core::site::FLAG_CAPTURE_STUB`): `$stub` is its code, which the
/// macro writes from the values it captures (`$operand`s, already in
/// registers at the pad); it must load the record (`lea r11, [rip + 4f]`)
/// and leave by `ret` to the pad with the stack as it found it. Both stubs
/// are 16-byte aligned, the capturing one 16 bytes after the plain one.
/// `$kind` must carry the flag.
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_x86_capture_pad {
    ($desc:path, $kind:expr, $tramp:literal, $stub:literal $(, $($operand:tt)+)?) => {
        ::core::arch::asm!(
            "2:",
            ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
            ".pushsection .text.__tracer_stubs,\"ax\",@progbits",
            ".balign 16",
            "3:",
            "lea r11, [rip + 4f]",
            concat!("jmp ", $tramp),
            ".balign 16",
            $stub,
            ".popsection",
            ".pushsection __tracer_sites,\"awR\",@progbits",
            ".balign 8",
            "4:",
            ".quad 2b",
            ".quad 3b",
            ".quad {desc}",
            ".long {kind}",
            ".long 0",
            ".popsection",
            desc = sym $desc,
            kind = const $kind,
            out("r11") _,
            $($($operand)+)?
        )
    };
}

/// The entry pad of a function.
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_entry_pad {
    ($desc:path) => {
        $crate::__tracer_x86_pad!($desc, 0u32, "__tracer_v1_tramp_entry")
    };
}

/// The exit pad of a function (placed in a guard's `drop`).
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_exit_pad {
    ($desc:path) => {
        $crate::__tracer_x86_pad!($desc, 1u32, "__tracer_v1_tramp_exit")
    };
}

/// The entry pad of an `async fn`; `$token` is a `*mut u64` slot in the future.
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_async_entry_pad {
    ($desc:path, $token:expr) => {
        $crate::__tracer_x86_pad!($desc, 2u32, "__tracer_v1_tramp_entry", in("r10") $token)
    };
}

/// The exit pad of an `async fn`, with the same token as its entry.
#[macro_export]
#[doc(hidden)]
macro_rules! __tracer_async_exit_pad {
    ($desc:path, $token:expr) => {
        $crate::__tracer_x86_pad!($desc, 3u32, "__tracer_v1_tramp_exit", in("r10") $token)
    };
}

/// A veneer (kept in a page within ±2 GiB of a pad whose `call` cannot reach
/// `target` directly): `jmp qword ptr [rip]; .quad target`, zero-padded to
/// 32 bytes. It touches no register and no stack.
pub fn encode_jump_veneer(target: usize) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0..6].copy_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
    b[6..14].copy_from_slice(&(target as u64).to_le_bytes());
    b
}

/// The entry stub of a compiler pad at `site` of function `func` (kept in a
/// page within ±2 GiB of the pad): `push lo32(site + 5); mov dword ptr
/// [rsp + 4], hi32(site + 5); push func; jmp qword ptr [rip]; .quad target`,
/// 32 bytes. An enabled compiler pad *jumps* to it (`X86_64::encode_jump`), so
/// the trampoline finds the function index on the stack above the pad's
/// return address (`site + 5`, as a call would have pushed it) and the
/// caller's return address above that; no register is touched, not even
/// `r11` (which clang's `preserve_none` convention passes an argument in),
/// and the absolute jump reaches the trampoline wherever the runtime was
/// loaded. A jump rather than a call leaves the return-stack predictor
/// alone: the trampoline pushes the return trampoline's address on it
/// instead (see [`crate::trampoline`]). `func` must be below 2^31 (`push
/// imm32` sign-extends).
pub fn encode_entry_stub(func: u32, site: usize, target: usize) -> [u8; 32] {
    assert!(
        func < 1 << 31,
        "function index {func} too large for push imm32"
    );
    let back = (site as u64).wrapping_add(5);
    let mut b = [0u8; 32];
    b[0] = 0x68;
    b[1..5].copy_from_slice(&(back as u32).to_le_bytes());
    b[5..9].copy_from_slice(&[0xc7, 0x44, 0x24, 0x04]);
    b[9..13].copy_from_slice(&((back >> 32) as u32).to_le_bytes());
    b[13] = 0x68;
    b[14..18].copy_from_slice(&func.to_le_bytes());
    b[18..24].copy_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
    b[24..32].copy_from_slice(&(target as u64).to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

    #[test]
    fn jump_veneer_decodes_as_one_absolute_jump() {
        let b = encode_jump_veneer(0x7fff_1234_5678);
        let mut d = Decoder::with_ip(64, &b[..14], 0x1000, DecoderOptions::NONE);
        let i = d.decode();
        assert_eq!(i.len(), 6);
        let mut s = String::new();
        IntelFormatter::new().format(&i, &mut s);
        assert_eq!(s, "jmp qword ptr [1006h]");
        assert_eq!(
            u64::from_le_bytes(b[6..14].try_into().unwrap()),
            0x7fff_1234_5678
        );
    }

    #[test]
    fn entry_stub_pushes_the_pad_return_and_the_index_then_jumps() {
        let site = 0x7fff_0000_1000usize;
        let b = encode_entry_stub(0x1234, site, 0x7fff_1234_5678);
        let mut d = Decoder::with_ip(64, &b[..24], 0x1000, DecoderOptions::NONE);
        let mut f = IntelFormatter::new();
        let mut out = Vec::new();
        for i in d.iter() {
            let mut s = String::new();
            f.format(&i, &mut s);
            out.push(s);
        }
        assert_eq!(out[0], "push 1005h");
        assert_eq!(out[1], "mov dword ptr [rsp+4],7FFFh");
        assert_eq!(out[2], "push 1234h");
        assert_eq!(out[3], "jmp qword ptr [1018h]");
        assert_eq!(
            u64::from_le_bytes(b[24..32].try_into().unwrap()),
            0x7fff_1234_5678
        );
        // The low half sign-extends; the `mov` rewrites the high half.
        let b = encode_entry_stub(1, 0x7fff_8000_0000, 0);
        assert_eq!(&b[1..5], &0x8000_0005u32.to_le_bytes());
        assert_eq!(&b[9..13], &0x7fffu32.to_le_bytes());
    }
}
