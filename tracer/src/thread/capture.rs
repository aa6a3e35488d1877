//! The capturing hooks: the same work as the plain ones plus the values
//! events (`tracer_core::capture`). Only functions enabled with capture
//! reach them (through their own entry stub and trampolines), so the plain
//! hooks have no branch for capture. What every architecture shares is
//! here; the hooks themselves are the architecture's
//! (`capture_x86_64.rs`, `capture_aarch64.rs`).

use super::*;

/// Set once the capturing hooks were verified not to touch vector
/// registers (with the plain ones): their trampolines skip saving them.
pub static CAPTURE_LEAN: AtomicBool = AtomicBool::new(false);

/// What the check of the capturing hooks found (`None`: lean; x86-64
/// only: elsewhere the trampolines always save).
pub(crate) static CAPTURE_CHECK: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
