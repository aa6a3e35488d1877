//! x86-64's side of the pads: GCC's NOP pads converted at start-up
//! (`gcc.rs`), the tracer's own functions found by a reachability walk, and
//! the landing pad (`ENDBR64`) a compiler may put before a pad.

use super::{discover, objects::OWN, read_live};
use std::collections::HashSet;

#[path = "gcc.rs"]
mod gcc;
pub use gcc::convert_at_startup;

/// The landing pad a compiler may put before the pad on this architecture.
pub(super) const LANDING_PAD: [u8; 4] = discover::ENDBR64;

/// GCC pads converted at start-up.
pub fn converted() -> usize {
    gcc::CONVERTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Why a function's pad cannot be patched although it is a pad: GCC's five
/// 1-byte NOPs that were not converted at start-up.
pub(super) fn nop_pad_reason() -> String {
    gcc::reason()
}

/// The sites of an object's functions that the tracer itself may run
/// (its own crates, and what they call directly), by function start.
pub(super) fn own_functions(
    obj: &discover::LoadedObject,
    funcs: &[discover::FoundFunc],
) -> HashSet<usize> {
    let here = own_functions as *const () as usize;
    let in_obj = |a: usize| obj.exec.iter().any(|&(s, e)| a >= s && a < e);
    if !in_obj(here) {
        return HashSet::new();
    }
    let roots: Vec<usize> = funcs
        .iter()
        .filter(|f| OWN.iter().any(|p| f.path.starts_with(p)))
        .map(|f| f.start)
        .chain([
            crate::thread::on_fentry as *const () as usize,
            crate::thread::on_fret as *const () as usize,
            crate::thread::on_fentry_args as *const () as usize,
            crate::thread::on_fret_args as *const () as usize,
            crate::thread::on_entry as *const () as usize,
            crate::thread::on_exit as *const () as usize,
        ])
        .collect();
    let mut out: HashSet<usize> = roots.iter().copied().collect();
    out.extend(tracer_arch_x86::trampoline::reachable_calls(
        &roots, 400_000, &in_obj, &read_live,
    ));
    out
}
