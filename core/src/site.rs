//! What `#[traceable]` leaves in the binary for each pad.
//!
//! Each pad gets one [`SiteRecord`] in the `__tracer_sites` linker section
//! (flags `awR`: writable, and retained by the linker even with
//! `--gc-sections`), emitted by the pad's own assembly. The runtime walks the
//! section from `__start___tracer_sites` to `__stop___tracer_sites`.

use std::sync::atomic::AtomicU32;

/// Name of the linker section holding the site records.
pub const SECTION: &str = "__tracer_sites";

/// The pad marks a function's entry.
pub const KIND_ENTRY: u32 = 0;
/// The pad marks a function's exit (in the drop of a guard, so it runs on
/// return, on `?` and while unwinding).
pub const KIND_EXIT: u32 = 1;
/// Entry of an `async fn`: the pad passes a token (the address of a slot in
/// the future) so the exit can be matched on whatever thread it happens.
pub const KIND_ASYNC_ENTRY: u32 = 2;
/// Exit of an `async fn`, with the same token as its entry.
pub const KIND_ASYNC_EXIT: u32 = 3;
/// A compiler-inserted pad at a function's true entry (no record: found in
/// the object's `__patchable_function_entries` or `__mcount_loc`); its exit
/// is seen by hooking the return address.
pub const KIND_FENTRY: u32 = 4;
/// Or-ed into a `#[traceable]` record's `kind` (`KIND_ENTRY` and
/// `KIND_EXIT`; the async kinds on x86-64 only): the pad has a second,
/// capturing stub
/// [`CAPTURE_STUB_OFFSET`] bytes after its plain one, which hands the
/// parameters (entry) or the return value (exit) to the capturing
/// trampolines. The plain hooks compare the kind's low byte only (the
/// flag is above it); the runtime's registry keeps the kind without the
/// flag.
pub const FLAG_CAPTURE_STUB: u32 = 0x100;
/// Where the capturing stub of a record flagged [`FLAG_CAPTURE_STUB`] is,
/// from its plain stub (both are 16-byte aligned; the plain one is 12
/// bytes on x86-64 and AArch64, 16 on ARMv7).
pub const CAPTURE_STUB_OFFSET: usize = 16;
/// Most values a `#[traceable]` pad captures (parameters beyond are shown by
/// name only).
pub const MAX_TRACEABLE_VALUES: usize = 16;

/// The static description of a traceable function.
#[repr(C)]
#[derive(Debug)]
pub struct FnDesc {
    /// Returns the full path; computed with `std::any::type_name` on an item
    /// nested in the function, so it includes impl types and traits.
    pub path: fn() -> &'static str,
    /// The function's own name.
    pub ident: &'static str,
    /// Source file.
    pub file: &'static str,
    /// Source line of the `fn`.
    pub line: u32,
    /// The parameters and return type as the macro saw them, for showing
    /// captured values (see [`crate::capture::TraceableSig`]); empty when
    /// the macro captures nothing.
    pub sig: &'static str,
}

/// One pad, as recorded in `__tracer_sites`.
#[repr(C)]
#[derive(Debug)]
pub struct SiteRecord {
    /// Address of the pad's patchable instruction (the site).
    pub pad: usize,
    /// Address of the pad's stub: the code an enabled pad calls. It loads this
    /// record's address and jumps to the trampoline.
    pub stub: usize,
    /// The function's description; null for the runtime's own sentinel.
    pub desc: *const FnDesc,
    /// One of the `KIND_*` constants.
    pub kind: u32,
    /// Function index, written by the runtime when it builds the registry
    /// (before any pad is enabled) and read by the hooks.
    pub func: AtomicU32,
}

/// Normalise a path produced by `type_name` on the marker item nested in a
/// traced function: drop the marker's own name and closure frames.
pub fn clean_path(raw: &str) -> &str {
    let mut s = raw;
    if let Some(i) = s.rfind("::") {
        s = &s[..i];
    }
    while let Some(p) = s.strip_suffix("::{{closure}}") {
        s = p;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_lose_the_marker_and_closures() {
        assert_eq!(clean_path("app::f::__tracer_marker"), "app::f");
        assert_eq!(clean_path("app::f::{{closure}}::__tracer_marker"), "app::f");
        assert_eq!(
            clean_path("<app::S as app::T>::m::__tracer_marker"),
            "<app::S as app::T>::m"
        );
    }
}
