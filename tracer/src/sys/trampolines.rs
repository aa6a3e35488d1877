//! The trampolines of this object, instantiated with the runtime's hooks,
//! and the `__tracer_sites` section's sentinel record.

#[cfg(target_arch = "x86_64")]
tracer_arch_x86::__tracer_define_trampolines!(
    crate::thread::on_entry,
    crate::thread::on_exit,
    crate::thread::LEAN,
    crate::thread::XSAVE_SIZE
);
#[cfg(target_arch = "x86_64")]
tracer_arch_x86::__tracer_define_fentry_trampolines!(
    crate::thread::on_fentry,
    crate::thread::on_fret,
    crate::thread::on_fret_args,
    crate::thread::CAPTURE_LEAN,
    crate::returns::fret_personality,
    crate::thread::THREADS,
    crate::thread::fret_layout::DEAD,
    crate::thread::fret_layout::PRIVATE,
    crate::thread::fret_layout::SHADOW,
    crate::thread::LEAN,
    crate::thread::XSAVE_SIZE
);
#[cfg(target_arch = "x86_64")]
tracer_arch_x86::__tracer_define_capture_trampolines!(
    crate::thread::on_fentry_args,
    crate::thread::CAPTURE_LEAN,
    crate::thread::XSAVE_SIZE
);
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
tracer_arch_arm::__tracer_define_trampolines!(crate::thread::on_entry, crate::thread::on_exit);
#[cfg(target_arch = "aarch64")]
tracer_arch_arm::__tracer_define_fentry_trampolines!(
    crate::thread::on_fentry,
    crate::thread::on_fret,
    crate::thread::THREADS,
    crate::thread::fret_layout::DEAD,
    crate::thread::fret_layout::PRIVATE,
    crate::thread::fret_layout::SHADOW
);

// The section always exists, even in a program without a traced function:
// one sentinel record with a null descriptor.
#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".pushsection __tracer_sites,\"awR\",@progbits",
    ".balign 8",
    ".quad 0, 0, 0",
    ".long 0, 0",
    ".popsection",
);
#[cfg(target_arch = "aarch64")]
std::arch::global_asm!(
    ".pushsection __tracer_sites,\"awR\",%progbits",
    ".balign 8",
    ".quad 0, 0, 0",
    ".word 0, 0",
    ".popsection",
);
// ARMv7: pointers are 4 bytes, a record is 5 words.
#[cfg(target_arch = "arm")]
std::arch::global_asm!(
    ".pushsection __tracer_sites,\"awR\",%progbits",
    ".balign 4",
    ".word 0, 0, 0, 0, 0",
    ".popsection",
);
