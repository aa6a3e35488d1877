//! The `tracer` program's integration tests, built as one binary (one link
//! instead of six). A module per subject; `helpers` holds what they share.
//! Run one subject with a filter: `cargo test -p tracer-cli --test it --
//! serve::`.
//!
//! Not here: `tests/self_attach.rs`, which must be its own process. It
//! links the runtime and serves its own agent, and that agent would answer
//! for this process's pid, which the `hostile` tests' fake agents use.
//!
//! - `cli`: every verb against real processes, protocol abuse, a target
//!   dying mid-trace, record → report → export;
//! - `agent_pressure`: slow, stalled, idle and fuzzing clients of a live
//!   agent;
//! - `hostile`: crafted agents and hijacked sockets;
//! - `serve`: `tracer serve` and `TRACER_METRICS`, parsed by Prometheus's
//!   own parser;
//! - `prometheus`: a real Prometheus server (Debian's `prometheus`:
//!   `scripts/test.sh` installs it) scrapes both, with classic and with
//!   native histograms, and its `histogram_quantile` agrees with the
//!   tracer's figures;
//! - `whole_c`, `whole_rust`: whole programs that do not link the tracer,
//!   built with compiler pads (clang-19, nightly: `scripts/test.sh`
//!   installs them);
//! - `attach`: `tracer attach`/`detach` on programs started without the
//!   tracer (x86-64);
//! - `args`: captured arguments and return values, `--where` (x86-64).

mod helpers;

mod agent_pressure;
mod args;
mod attach;
mod cli;
mod hostile;
mod prometheus;
mod serve;
mod whole_c;
mod whole_rust;
