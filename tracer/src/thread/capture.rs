//! The capturing hooks: the same work as the plain ones plus the values
//! events (`tracer_core::capture`). Only functions enabled with capture
//! reach them (through their own entry stub and trampolines), so the plain
//! hooks have no branch for capture. What every architecture shares is
//! here; the hooks themselves are the architecture's
//! (`capture_x86_64.rs`, `capture_aarch64.rs`).

use super::*;

/// Address of the capturing return trampoline
/// (`__tracer_v1_tramp_fret_args`), set with [`FRET`]; 0 where there is
/// none (the return value is then not captured).
pub static FRET_ARGS: AtomicUsize = AtomicUsize::new(0);

/// Whether `v`, read from a return address slot, is a hooked return: the
/// return trampoline `fret` or its capturing variant.
#[inline]
pub(crate) fn is_fret(v: usize, fret: usize) -> bool {
    (fret != 0 && v == fret) || (v != 0 && v == FRET_ARGS.load(Ordering::Relaxed))
}

/// Set once the capturing hooks were verified not to touch vector
/// registers (with the plain ones): their trampolines skip saving them.
pub static CAPTURE_LEAN: AtomicBool = AtomicBool::new(false);

/// What [`verify_capture_hooks`] found (`None`: lean).
pub(crate) static CAPTURE_CHECK: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
