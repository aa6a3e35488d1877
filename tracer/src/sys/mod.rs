//! The system side: per-architecture code (the backend in use, thread
//! pointer, text reads), the trampolines, writing live text, the SIGTRAP
//! handler, the clock and the veneers that bring far targets in reach.

pub(crate) mod arch;
pub mod clock;
pub(crate) mod text;
mod trampolines;
pub(crate) mod trap;
pub(crate) mod veneer;
