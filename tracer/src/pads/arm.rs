//! ARMv7's side of the pads: compiler pads are not traced there; the
//! registry holds the program's `#[traceable]` sites only.

use super::registry;

/// Unused here (no compiler pads are read).
pub(super) const LANDING_PAD: [u8; 4] = super::discover::ENDBR64;

/// GCC pads converted at start-up: none here.
pub fn converted() -> usize {
    0
}

/// Nothing to convert here.
pub fn convert_at_startup() {}

/// No objects are scanned for pads here.
pub(crate) fn refresh(_: &mut registry::Registry, _: &mut Vec<bool>, _: &mut (u64, u64)) {}
