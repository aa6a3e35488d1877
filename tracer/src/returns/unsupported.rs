//! ARMv7: compiler pads are not traced there (only `#[traceable]`
//! functions, whose exits have their own pads), so no return is hooked.

const WHY: &str = "compiler pads are traced on x86-64 and AArch64 only";

/// How exits of compiler-padded functions are seen, for `status`.
pub fn returns_mode() -> &'static str {
    WHY
}

/// What the preload library exports and calls: nothing here.
pub mod exports {}

/// Unused here (no object is scanned for pads).
pub(crate) fn own_unwinder(_path: &str, _at: usize) {}

/// Decide whether returns are hooked: never here.
pub fn init_returns() {}

/// What an enabled compiler pad calls: there is none here.
pub fn entry_stub(_site: usize, _func: u32) -> Result<usize, String> {
    Err(String::from(WHY))
}

/// What a compiler pad enabled with capture calls: there is none here.
pub fn capture_stub(
    _site: usize,
    _func: u32,
    _cap: tracer_core::capture::Capture,
) -> Result<usize, String> {
    Err(String::from(WHY))
}
