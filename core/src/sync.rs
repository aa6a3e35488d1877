//! The atomics and the cell of the lock-free code, switchable for loom.
//!
//! The ring ([`event`](crate::event)) and the reader-counted publication
//! ([`publish`](crate::publish)) take their atomics, their `UnsafeCell` and
//! their spin hint from here. A normal build gets std's (the cell is a
//! `#[repr(transparent)]` wrapper whose accessors inline away, so the code
//! and the shared-memory layout are those of std's types); a build with
//! `RUSTFLAGS="--cfg loom"` gets loom's, and `core/tests/loom.rs` explores
//! every interleaving and weak-memory outcome of the real code with them.
//!
//! Under loom only the model tests can run (loom's types panic outside a
//! model), and the ring's layout differs (loom's atomics are larger); the
//! other tests are compiled out.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

/// `std::cell::UnsafeCell` with loom's closure-based accessors, so the same
/// code reads and writes a cell under both.
#[cfg(not(loom))]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    /// Calls `f` with a pointer for reading the value.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a pointer for writing the value.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// One turn of a wait loop: a spin hint and a yield (loom: a yield, which
/// lets the model run the thread being waited for).
#[inline]
pub(crate) fn spin_wait() {
    #[cfg(not(loom))]
    {
        std::hint::spin_loop();
        std::thread::yield_now();
    }
    #[cfg(loom)]
    loom::thread::yield_now();
}
