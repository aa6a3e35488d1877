//! The trampolines of this object, instantiated with the runtime's hooks,
//! (the `__tracer_sites` section's sentinel record is in `runtime.rs`).

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
    crate::returns::per_arch::fret_personality,
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
#[cfg(target_arch = "x86_64")]
tracer_arch_x86::__tracer_define_traceable_capture_trampolines!(
    crate::thread::on_entry_args,
    crate::thread::on_exit_args,
    crate::thread::on_async_entry_args,
    crate::thread::on_async_exit_args,
    crate::thread::CAPTURE_LEAN,
    crate::thread::XSAVE_SIZE
);
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
tracer_arch_arm::__tracer_define_trampolines!(crate::thread::on_entry, crate::thread::on_exit);
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
tracer_arch_arm::__tracer_define_traceable_capture_trampolines!(
    crate::thread::on_entry_args,
    crate::thread::on_exit_args
);
#[cfg(target_arch = "aarch64")]
tracer_arch_arm::__tracer_define_fentry_trampolines!(
    crate::thread::on_fentry,
    crate::thread::on_fret,
    crate::thread::THREADS,
    crate::thread::fret_layout::DEAD,
    crate::thread::fret_layout::PRIVATE,
    crate::thread::fret_layout::SHADOW
);
#[cfg(target_arch = "aarch64")]
tracer_arch_arm::__tracer_define_capture_trampolines!(
    crate::thread::on_fentry_args,
    crate::thread::on_fret_args,
    crate::thread::THREADS,
    crate::thread::fret_layout::DEAD,
    crate::thread::fret_layout::PRIVATE,
    crate::thread::fret_layout::SHADOW
);
