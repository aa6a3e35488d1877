//! Finding this thread's block from a hook: on x86-64 one load at a fixed
//! offset from the thread pointer where the tracer's TLS is in the static
//! TLS block (see [`tp::probe_static`]), else a table keyed by `fs:0`; a
//! `thread_local!` elsewhere.

use super::*;
use std::cell::Cell;

thread_local! {
    static STATE: Cell<*mut ThreadState> = const { Cell::new(std::ptr::null_mut()) };
}

/// This thread's block (null: none yet; [`tp::INIT`]: being made).
#[inline(always)]
pub(crate) fn this_thread() -> *mut ThreadState {
    tp::get()
}

pub(crate) fn set_this_thread(p: *mut ThreadState) {
    // Both: the hooks read `STATE` at its static offset once that is known,
    // the table until then.
    STATE.with(|s| s.set(p));
    tp::set(p);
}

// The thread-pointer table and static offset (x86-64), or the
// `thread_local!` alone.
crate::sys::per_arch! {
    "x86_64": "tls_x86_64.rs", "aarch64": "tls_other.rs", "arm": "tls_other.rs";
    pub(crate) mod tp;
}
