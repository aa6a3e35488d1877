//! Tables published to signal handlers, and retracted safely.
//!
//! # The protocol
//!
//! The runtime's SIGTRAP handler reads tables (the sites of the batch in
//! flight, the addresses of every registered site) that the patcher replaces
//! while handlers may be running on other threads. A signal handler can
//! neither lock nor allocate, so the tables are published through atomic
//! pointers and freed only once no handler can be reading them, counted the
//! simplest way (a single-counter reader epoch, as in the "quiescent-state"
//! family of RCU schemes, with readers counting themselves):
//!
//! - A reader counts itself in ([`Readers::enter`]: `active += 1`), loads the
//!   pointers it needs ([`Published::get`]), uses the tables, and counts
//!   itself out (dropping the [`ReadGuard`]: `active -= 1`).
//! - A writer (one at a time; the runtime's patch lock serializes them)
//!   swaps the new pointer in ([`Published::replace`]), waits until `active`
//!   is zero, and only then frees the old table.
//!
//! Both sides write one location and then read the other (the
//! store-buffering pattern, as in Dekker's mutual exclusion), which
//! acquire/release alone does not order: the writer could read `active == 0`
//! while a reader that has counted itself in still loads the old pointer. A
//! `SeqCst` fence on each side, between its write and its read, forbids
//! that: of the two fences one comes first in their single total order; if
//! the reader's does, the writer's read of `active` sees the count-in (or a
//! later value), and if the writer's does, the reader's load sees the swap
//! (or a later pointer). (`SeqCst` on the accesses themselves would do as
//! well in the C++ model, but loom checks `SeqCst` accesses as if they were
//! only acquire/release, and `SeqCst` fences exactly.) The pointer's
//! release/acquire hands over a new table's contents; the count-out's
//! release and the writer's acquire make every read of the old table happen
//! before its free.
//!
//! The wait is for the count to be zero, not for the readers present at the
//! swap to leave: with handlers arriving non-stop it could wait forever, but
//! handlers here run only at trapped sites, whose traps the writer is
//! removing.
//!
//! The protocol is model-checked with loom (`core/tests/loom.rs`): a reader
//! never sees a freed table, whatever the interleaving.

use crate::sync::{fence, spin_wait, AtomicPtr, AtomicUsize, Ordering};
use std::marker::PhantomData;

/// The count of readers currently using the tables published under it.
pub struct Readers {
    active: AtomicUsize,
}

/// A reader counted in; counts itself out when dropped. Tables loaded
/// through it live as long as it does.
#[must_use = "a reader is counted out when its guard is dropped"]
pub struct ReadGuard<'r> {
    readers: &'r Readers,
}

impl Readers {
    /// No reader counted.
    #[cfg(not(loom))]
    pub const fn new() -> Readers {
        Readers {
            active: AtomicUsize::new(0),
        }
    }

    /// No reader counted.
    #[cfg(loom)]
    pub fn new() -> Readers {
        Readers {
            active: AtomicUsize::new(0),
        }
    }

    /// Count a reader in (async-signal-safe: one atomic add).
    #[inline]
    pub fn enter(&self) -> ReadGuard<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        // Orders the count-in before the loads of the pointers (module docs).
        fence(Ordering::SeqCst);
        ReadGuard { readers: self }
    }

    /// Wait until no reader is counted in: every reader that could have
    /// loaded a pointer as it was before this call has counted itself out.
    pub fn wait_idle(&self) {
        // Orders the caller's swap before the reads of the count (module
        // docs).
        fence(Ordering::SeqCst);
        // Acquire: the reads of every reader counted out happen before.
        while self.active.load(Ordering::Acquire) != 0 {
            spin_wait();
        }
    }

    /// Forget every reader counted in: for a child after `fork`, which
    /// inherits the count of handlers that ran on its parent's other threads
    /// but not those threads.
    ///
    /// # Safety
    /// No reader counted in may still run (in a child right after `fork` only
    /// the forking thread runs, and it is not inside a handler).
    pub unsafe fn reset(&self) {
        self.active.store(0, Ordering::Relaxed);
    }
}

impl Default for Readers {
    fn default() -> Readers {
        Readers::new()
    }
}

impl Drop for ReadGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // Release: this reader's reads of the tables happen before the free.
        self.readers.active.fetch_sub(1, Ordering::Release);
    }
}

/// A table readers load under a [`ReadGuard`] of its [`Readers`], which a
/// writer replaces and frees once no reader can hold it.
pub struct Published<'r, T> {
    ptr: AtomicPtr<T>,
    readers: &'r Readers,
    /// Owns a `T` (dropped on whichever thread replaces it) that readers on
    /// any thread share: Send and Sync only as the impls below say.
    _owns: PhantomData<*const T>,
}

// SAFETY: moving the slot moves ownership of its table: needs `T: Send`.
unsafe impl<T: Send> Send for Published<'_, T> {}
// SAFETY: readers on any thread share the table (`T: Sync`), and a writer on
// any thread may drop a table made on another (`T: Send`).
unsafe impl<T: Send + Sync> Sync for Published<'_, T> {}

impl<'r, T> Published<'r, T> {
    /// No table yet, read under `readers`.
    #[cfg(not(loom))]
    pub const fn new(readers: &'r Readers) -> Published<'r, T> {
        Published {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            readers,
            _owns: PhantomData,
        }
    }

    /// No table yet, read under `readers`.
    #[cfg(loom)]
    pub fn new(readers: &'r Readers) -> Published<'r, T> {
        Published {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            readers,
            _owns: PhantomData,
        }
    }

    /// The table now published, if any, for as long as `guard` counts the
    /// caller in.
    ///
    /// Panics if `guard` is not of this table's [`Readers`].
    #[inline]
    pub fn get<'g>(&self, guard: &'g ReadGuard<'_>) -> Option<&'g T> {
        assert!(
            std::ptr::eq(guard.readers, self.readers),
            "table read under another reader count"
        );
        // Acquire: the table's contents, written before its publication.
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: `p` is null or came from `Box::into_raw` in `replace`, which
        // frees a table only after swapping it out and then seeing no reader
        // counted in; `guard` counted us in before this load, so a table we
        // load stays alive until the guard is dropped (see the module docs).
        unsafe { p.as_ref() }
    }

    /// Publish `new` (or nothing) in place of the current table; if there was
    /// one, wait until no reader can still hold it and free it. Returns
    /// whether there was one. Writers must not race each other.
    pub fn replace(&self, new: Option<Box<T>>) -> bool {
        let new = new.map_or(std::ptr::null_mut(), Box::into_raw);
        // Release: the new table's contents before its pointer.
        let old = self.ptr.swap(new, Ordering::AcqRel);
        if old.is_null() {
            return false;
        }
        self.readers.wait_idle();
        // SAFETY: `old` came from `Box::into_raw` in an earlier `replace`; it
        // is swapped out, so no reader can load it any more, and every reader
        // that was counted in when it could has been counted out.
        free(unsafe { Box::from_raw(old) });
        true
    }
}

impl<T> Drop for Published<'_, T> {
    fn drop(&mut self) {
        // `&mut self`: no reader can hold a guard on this table any more.
        // (A `static` is never dropped.)
        let p = self.ptr.swap(std::ptr::null_mut(), Ordering::Relaxed);
        if !p.is_null() {
            // SAFETY: from `Box::into_raw` in `replace`; unreachable now.
            free(unsafe { Box::from_raw(p) });
        }
    }
}

/// Free a retracted table. Under loom the table is dropped but its memory is
/// kept, so a model run that catches a reader still using it (loom reports
/// the access) never touches freed memory meanwhile.
#[inline]
fn free<T>(b: Box<T>) {
    #[cfg(not(loom))]
    drop(b);
    #[cfg(loom)]
    {
        let p = Box::into_raw(b);
        // SAFETY: `p` is a valid, owned `T`, dropped once and never used
        // again by us; its memory is leaked on purpose.
        unsafe { std::ptr::drop_in_place(p) };
    }
}

// Under loom only the model tests run (`core/tests/loom.rs`).
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn replace_publishes_and_retracts() {
        static R: Readers = Readers::new();
        let t: Published<'_, Vec<u32>> = Published::new(&R);
        {
            let g = R.enter();
            assert_eq!(t.get(&g), None);
        }
        assert!(!t.replace(Some(Box::new(vec![1, 2]))));
        {
            let g = R.enter();
            assert_eq!(t.get(&g), Some(&vec![1, 2]));
        }
        assert!(t.replace(Some(Box::new(vec![3]))));
        assert!(t.replace(None));
        assert!(!t.replace(None));
        R.wait_idle();
    }

    #[test]
    #[should_panic(expected = "another reader count")]
    fn a_guard_of_another_count_is_refused() {
        let (a, b) = (Readers::new(), Readers::new());
        let t: Published<'_, u32> = Published::new(&a);
        let g = b.enter();
        let _ = t.get(&g);
    }

    /// Readers on other threads never see a freed table (Miri checks the
    /// accesses; a freed table's contents would also fail the assertion).
    #[test]
    fn readers_never_see_a_freed_table() {
        let readers = Readers::new();
        let table: Published<'_, Vec<u64>> = Published::new(&readers);
        table.replace(Some(Box::new(vec![0; 4])));
        let rounds = if cfg!(miri) { 20 } else { 20_000 };
        std::thread::scope(|s| {
            for _ in 0..2 {
                // A bounded number of reads: with readers always counted in
                // a writer would wait for ever (see the module docs).
                s.spawn(|| {
                    for _ in 0..rounds {
                        let g = readers.enter();
                        if let Some(t) = table.get(&g) {
                            let v = t[0];
                            assert!(t.iter().all(|&x| x == v), "torn or freed table");
                        }
                        drop(g);
                        std::thread::yield_now();
                    }
                });
            }
            for i in 1..=rounds {
                table.replace((i % 3 != 0).then(|| Box::new(vec![i; 4])));
            }
        });
    }
}
