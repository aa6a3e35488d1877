//! AArch64's side of the compiler pads' hooks (see `super`): a frame is
//! keyed by its entry stack pointer (the return address arrives in `x30`),
//! and the unwinder walk asks how many returns are hooked.

use super::*;

/// A frame is keyed by the stack pointer at its entry, not by where its
/// return address is kept (the traced function saves `x30` where it
/// likes): frames given back to an unwind are never hooked again.
pub(super) const KEYED_BY_SLOT: bool = false;

/// No fast path before the general one here.
///
/// # Safety
/// None needed; `unsafe` to match the x86-64 one.
#[inline(always)]
pub(super) unsafe fn entry_fast(_func: usize, _slot: usize) -> bool {
    false
}

/// How many hooked returns this thread has (AArch64 unwinder walks are
/// skipped when there are none).
pub fn hooked_returns() -> usize {
    with_own(|_, p, _| {
        let live = p
            .shadow
            .iter()
            .take(p.depth)
            .filter(|f| f.ret > TAIL && f.unhooked == 0)
            .count();
        live + p.evicted.iter().filter(|e| e.1 != 0).count()
    })
    .unwrap_or(0)
}
