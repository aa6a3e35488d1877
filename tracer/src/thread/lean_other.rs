//! AArch64 and ARMv7: the trampolines always save what the hooks may
//! clobber; there is no lean path to check.

/// Why the trampolines save every register the hooks may clobber.
pub(crate) fn lean_check() -> Option<String> {
    Some(String::from("no lean trampoline on this architecture"))
}

/// No capturing hooks to check here.
pub(crate) fn lean_capture() {}

/// Run a slow path from a hook: directly (the trampolines save every
/// register the hooks may clobber).
#[inline(always)]
pub(crate) fn call_slow_arg(f: extern "C" fn(usize) -> usize, arg: usize) -> usize {
    f(arg)
}

/// The clock without the TSC, from a hook: directly (a `usize` of ARMv7
/// would cut the nanoseconds to 32 bits, which wrap every 4.3 s).
#[inline(always)]
pub(crate) fn slow_now() -> u64 {
    crate::clock::monotonic_ns()
}
