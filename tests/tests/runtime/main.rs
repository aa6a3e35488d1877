//! The runtime's integration tests, in one binary (one link of the
//! runtime instead of one per file). Every test runs in a fresh process of
//! its own ([`tracer_tests::fresh_process!`]): the runtime is process-wide
//! (one registry, one set of enabled sites, one set of counters), and tests
//! that toggle, count or break things must not see each other's calls.
//!
//! `cargo test -p tracer-tests --test runtime -- stress::` runs one module.
mod args;
mod async_methods;
mod builds;
mod dlopen_many;
mod fallbacks;
mod faults;
mod late_trap;
mod latency;
mod registers;
mod shapes;
mod signals;
mod smoke;
mod stress;
mod veneer;
mod veneer_x86;
mod whole_deep;
mod whole_inproc;
mod whole_inproc_stress;
mod whole_regs;
