//! Architecture-independent core of `tracer`, a userspace ftrace.
//!
//! This crate decides; the architecture crates (`tracer-arch-x86`,
//! `tracer-arch-arm`) only compute bytes and interpret traps. It holds:
//!
//! - [`backend`]: the [`Backend`](backend::Backend) trait each instruction set
//!   implements (classify a pad, encode a call or a no-op, plan a protocol,
//!   interpret a trap), and the types it speaks in.
//! - [`engine`]: the batch patch engine. It checks the old bytes of every site,
//!   merges the per-site protocols into batch phases with one sync per phase,
//!   and drives a [`TextWriter`](engine::TextWriter).
//! - [`model`]: an exhaustive model check of a protocol's intermediate states,
//!   as a concurrent instruction fetch can observe them.
//! - [`pattern`]: the glob patterns users type (`parse_*`, `app::cache::*`,
//!   `!slow`), with "did you mean" suggestions.
//! - [`loghist`]: a compact, sparse log-linear latency histogram (0.8 %
//!   relative error, exact count, sum, minimum and maximum).
//! - [`event`]: the fixed-size event record and the single-producer ring that
//!   carries events from the traced threads to their readers.
//! - [`metrics`]: what the Prometheus `/metrics` endpoints expose (names,
//!   fixed latency buckets, a minimal text writer), and [`http`]: the small
//!   HTTP/1.1 responder that serves them.
//! - [`publish`]: tables published to signal handlers and freed only once no
//!   handler can hold them (the trap table's publish/retract protocol).
//!
//! - [`capture`]: which argument and return values a function is enabled
//!   with, and how they travel in the ring.
//! - [`wire`]: the agent ↔ `tracer` program contract (version, limits,
//!   socket paths, environment variables), written once.
//!
//! Nothing here touches a live CPU; everything is unit-tested on any host.
#![deny(missing_docs)]

pub mod backend;
pub mod capture;
pub mod engine;
pub mod event;
pub mod http;
pub mod loghist;
pub mod metrics;
pub mod model;
pub mod pattern;
pub mod publish;
pub mod site;
mod sync;
pub mod wire;

pub use backend::{
    Backend, EncodeError, InflightSite, Insn, PadError, PadState, Plan, TrapContext, TrapOutcome,
    TrapPolicy, Write,
};
