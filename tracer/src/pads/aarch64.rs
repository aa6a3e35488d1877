//! AArch64's side of the pads: no NOP pads to convert (every instruction is
//! 4 bytes), the tracer's own functions by path prefix and the hooks, and
//! the landing pad (`BTI C`) a compiler may put before a pad.

use super::discover;
use std::collections::HashSet;

/// The landing pad a compiler may put before the pad on this architecture.
pub(super) const LANDING_PAD: [u8; 4] = discover::BTI_C;

/// GCC pads converted at start-up: none here.
pub fn converted() -> usize {
    0
}

/// Nothing to convert here.
pub fn convert_at_startup() {}

/// No NOP pads here: nothing to say.
pub(super) fn nop_pad_reason() -> String {
    String::new()
}

/// The sites of an object's functions that the tracer itself may run, by
/// function start: on AArch64 only its own crates' functions (by path
/// prefix, checked by the caller) and the hooks. The reachability walk over
/// direct calls that x86-64 does (iced-x86) has no AArch64 counterpart yet,
/// so a padded function outside the tracer's crates that the hooks call
/// (none in a Rust program built without `-Z patchable-function-entry`)
/// would be listed.
pub(super) fn own_functions(
    obj: &discover::LoadedObject,
    _: &[discover::FoundFunc],
) -> HashSet<usize> {
    let here = own_functions as *const () as usize;
    if !obj.exec.iter().any(|&(s, e)| here >= s && here < e) {
        return HashSet::new();
    }
    [
        crate::thread::on_fentry as *const () as usize,
        crate::thread::on_fret as *const () as usize,
        crate::thread::on_entry as *const () as usize,
        crate::thread::on_exit as *const () as usize,
    ]
    .into_iter()
    .collect()
}
