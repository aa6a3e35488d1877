//! Where there is no thread-pointer table (AArch64, ARMv7): a hook finds
//! its thread's block in the `thread_local!` (`super::STATE`).

/// The value of a thread whose block is being made.
pub const INIT: usize = 1;

/// This thread's block.
#[inline(always)]
pub fn get() -> *mut super::super::ThreadState {
    super::STATE.with(|s| s.get())
}

/// Nothing more to set than `super::STATE`.
#[inline(always)]
pub fn set(_: *mut super::super::ThreadState) {}

/// Nothing to probe: no static offset is used here.
#[inline(always)]
pub fn probe_static() {}
