//! `tracer`: a userspace ftrace.
//!
//! Mark functions with [`#[traceable]`](traceable). Each gets a pad at its
//! entry and its exit that is a no-op until asked for. [`enable`] turns the
//! pads of the matching functions into calls **while the program keeps
//! running on all its threads** (x86-64: the kernel's int3 batch protocol;
//! AArch64 and A32: one aligned store; Thumb-2: the half-word breakpoint
//! protocol);
//! events land in lock-free per-thread rings; [`latency`] gives
//! percentiles of every completed call (within 0.8 %; count, min, max and mean exact).
//!
//! ```no_run
//! #[tracer::traceable]
//! fn parse(s: &str) -> u64 { s.len() as u64 }
//!
//! fn main() -> Result<(), tracer::Error> {
//!     tracer::enable("parse")?;
//!     for _ in 0..1000 { parse("hello"); }
//!     let l = tracer::latency("parse").expect("parse was called");
//!     println!("{} calls, p50 {} ns, p99 {} ns", l.count, l.p50, l.p99);
//!     tracer::disable("parse")?;
//!     Ok(())
//! }
//! ```
//!
//! # Patterns
//! A glob (`*`, `?`); without `::` it matches a function's own name, with `::`
//! its full path; a leading `!` removes matches; several terms may be given,
//! separated by spaces or commas. No match is an error naming the closest
//! functions.
//!
//! # SIGTRAP
//! While a batch is in flight, threads that run into a site take a SIGTRAP,
//! which the runtime's handler resolves. A thread that *blocks* SIGTRAP would
//! make the kernel kill the process instead, so every batch first checks
//! `/proc/self/task/*/status` and refuses (with [`Error::SigtrapBlocked`])
//! while any thread blocks it. A thread that starts blocking it during the
//! few microseconds of a batch cannot be detected; do not block SIGTRAP in a
//! traced program, and do not replace the SIGTRAP handler after the first
//! `enable` (batches are refused if it was replaced).
#![deny(missing_docs)]

// The layers, bottom up (no module calls into one above it):
//
// - `sys`: per-architecture code, the trampolines, writing text, the
//   SIGTRAP handler, the clock, veneers.
// - `thread`: per-thread blocks and the hooks (the hot path,
//   `thread/hooks.rs`); `window`: enabled windows; `collect`: draining
//   rings into latency totals.
// - `pads`: discovering compiler pads and `#[traceable]` sites, the registry;
//   `returns`: how exits of compiler-padded functions are seen.
// - `runtime`: set-up and state; `patch`: enable/disable batches; `api`:
//   the public functions; `types`: the public types.
// - `agent` (the control socket), `metrics`, and `startup` (the ELF
//   constructor) on top.
#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
mod agent;
mod api;
mod capture;
mod collect;
mod metrics;
mod pads;
mod patch;
mod pending;
sys::per_arch! {
    "x86_64": "returns/mod.rs", "aarch64": "returns/mod.rs", "arm": "returns/unsupported.rs";
    mod returns;
}
mod runtime;
mod startup;
mod sys;
mod thread;
mod types;
mod window;

pub use api::*;
pub use metrics::serve_metrics;
pub use pads::discover;
pub use sys::clock;
pub use tracer_core::capture::Capture;
pub use tracer_macros::traceable;
pub use types::*;

use pads::registry;
use sys::{arch, text, trap, veneer};
