//! ARMv7's side of the pads: compiler pads are not traced there; the
//! registry holds the program's `#[traceable]` sites only.

/// Unused here (no compiler pads are read).
pub(super) const LANDING_PAD: [u8; 4] = super::discover::ENDBR64;

/// GCC pads converted at start-up: none here.
pub fn converted() -> usize {
    0
}

/// Nothing to convert here.
pub fn convert_at_startup() {}

/// Unused here (no object is scanned for pads).
pub(super) fn nop_pad_reason() -> String {
    String::new()
}

/// Unused here (no object is scanned for pads).
pub(super) fn own_functions(
    _: &super::discover::LoadedObject,
    _: &[super::discover::FoundFunc],
) -> std::collections::HashSet<usize> {
    Default::default()
}
