//! Compiler pads: finding them in the loaded objects, keeping the registry
//! up to date, and making GCC's pads patchable.
//!
//! **Discovery.** The objects of the process are listed with
//! `dl_iterate_phdr` and their pad tables read (`crate::pads::discover`). The
//! registry follows `dlopen` and `dlclose`: the loader's add/remove counters
//! are compared on every use of the registry (every API call and agent
//! request), and objects that appeared are scanned, objects that went away
//! dropped. The tracer's own code is never listed: functions of its crates,
//! and every function they can call directly (a pad in code the SIGTRAP
//! handler or a hook runs would trap inside the handler).
//!
//! **GCC's five 1-byte NOPs** (`-fpatchable-function-entry=5` with GCC) cannot
//! be swapped live: a thread preempted between two of them would resume in
//! the middle of the new instruction. They are turned into one 5-byte NOP by
//! the runtime's ELF constructor, before `main`, when the process has exactly
//! one thread (so no other thread can be executing them). Objects loaded later,
//! or a process that already had threads then, keep them, and those
//! functions are listed with the reason. AArch64 has no such pads (every
//! instruction is 4 bytes): nothing is converted there.
//!
//! **The tracer's own functions** are excluded by path prefix, and on
//! x86-64 also everything they can call directly (a reachability walk
//! decoded with iced-x86); AArch64 has the prefix list and the hooks only.

pub mod discover;
mod objects;
pub(crate) mod registry;

pub(crate) use objects::refresh;

// The architecture's side: GCC NOP pads, the tracer's own functions, the
// landing pad before a pad.
crate::sys::per_arch! {
    "x86_64": "x86_64.rs", "aarch64": "aarch64.rs", "arm": "arm.rs";
    mod per_arch;
}
pub use per_arch::{convert_at_startup, converted};

/// Read the live text (pad tables, code) of a loaded object.
fn read_live(a: usize, buf: &mut [u8]) {
    // SAFETY: callers read only the pad tables and code of loaded objects,
    // which are mapped.
    unsafe { crate::arch::read_text(a, buf) }
}
