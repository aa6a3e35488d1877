//! Enabled windows: when each function was last enabled.
//!
//! A call that is running when its function is disabled leaves its entry on
//! the thread's shadow stack with no exit. After a later enable, the exit of
//! a *different* call (one whose entry ran while the function was off) would
//! otherwise be matched to that stale entry and timed across the gap:
//! seconds for a function that takes microseconds.
//!
//! The rule: an exit is timed only against an entry recorded in the same
//! enabled window of that function, on the same thread. The exit always runs
//! in the function's current window (its pad is enabled), so the entry
//! belongs to the same window exactly when its timestamp is not older than
//! the moment the window opened. [`open`] stamps that moment (hook clock
//! ticks) before the enabling batch makes any pad live, so every entry of
//! the new window is stamped at or after it, and every entry of an earlier
//! window before it (it ran before the disable that closed that window
//! finished). Exits whose entry is older are counted as unmatched and never
//! timed.
//!
//! The table costs the hot path one or two loads on an exit (no check at
//! all on an entry): a fixed array of chunk pointers, chunks allocated when a
//! function of theirs is first enabled and never freed (they are tiny).

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;
/// Functions covered: 4 Mi (beyond, exits are not checked).
const CHUNKS: usize = 1024;

type Chunk = [AtomicU64; CHUNK];

static TABLE: [AtomicPtr<Chunk>; CHUNKS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; CHUNKS];

/// Stamp the opening of a new enabled window of `func` at `now` (hook clock
/// ticks). Call before the pads of `func` are made live.
pub fn open(func: usize, now: u64) {
    let Some(slot) = TABLE.get(func >> CHUNK_BITS) else {
        return;
    };
    let mut chunk = slot.load(Ordering::Acquire);
    if chunk.is_null() {
        let fresh: &'static Chunk = Box::leak(Box::new([const { AtomicU64::new(0) }; CHUNK]));
        let fresh = fresh as *const Chunk as *mut Chunk;
        chunk = match slot.compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => fresh,
            // Only the (serialised) batch path calls this, but stay correct.
            Err(other) => other,
        };
    }
    // SAFETY: chunks are leaked, so valid forever once published.
    let chunk = unsafe { &*chunk };
    if let Some(s) = chunk.get(func & (CHUNK - 1)) {
        s.store(now, Ordering::Release);
    }
}

/// When the current enabled window of `func` opened (0: never stamped).
#[inline(always)]
pub fn since(func: u32) -> u64 {
    let func = func as usize;
    let Some(slot) = TABLE.get(func >> CHUNK_BITS) else {
        return 0;
    };
    let chunk = slot.load(Ordering::Acquire);
    if chunk.is_null() {
        return 0;
    }
    // SAFETY: chunks are leaked, so valid forever once published.
    let chunk = unsafe { &*chunk };
    chunk
        .get(func & (CHUNK - 1))
        .map_or(0, |s| s.load(Ordering::Relaxed))
}

/// Was an entry stamped `ts` recorded in the current window of `func`?
#[inline(always)]
pub fn current(func: u32, ts: u64) -> bool {
    ts >= since(func)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_before_the_window_are_not_current() {
        let f = 5 * CHUNK + 7;
        assert_eq!(since(f as u32), 0);
        assert!(current(f as u32, 1));
        open(f, 1000);
        assert!(!current(f as u32, 999));
        assert!(current(f as u32, 1000));
        assert!(current(f as u32, 5000));
        // Neighbours are untouched.
        assert_eq!(since(f as u32 + 1), 0);
        open(f, 6000);
        assert!(!current(f as u32, 5000));
        // Beyond the table: never refused.
        open(CHUNKS * CHUNK + 3, 10);
        assert!(current((CHUNKS * CHUNK + 3) as u32, 0));
    }
}
