//! AArch64 and ARMv7: the trampolines always save what the hooks may
//! clobber; there is no lean path to check.

/// Why the trampolines save every register the hooks may clobber.
pub(crate) fn lean_check() -> Option<String> {
    Some(String::from("no lean trampoline on this architecture"))
}

/// No capturing hooks to check here.
pub(crate) fn lean_capture() {}
