//! Start-up: the ELF constructor (GCC pad conversion, agent, metrics
//! endpoint, `TRACER_WAIT_READER`, `TRACER_ENABLE`).

use crate::{agent, collect, disable, metrics, pads, pending, Error, Report};

/// Start the agent (see `agent.rs`) in every program that links this crate,
/// before `main`, without code in `main`.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
pub(crate) static AGENT_CONSTRUCTOR: extern "C" fn() = agent_constructor;

#[cfg(target_os = "linux")]
pub(crate) extern "C" fn agent_constructor() {
    static ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if ONCE.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return;
    }
    pads::convert_at_startup();
    agent::start();
    metrics::start_from_env();
    // Under `tracer run` (TRACER_RUN is its pid) only the command itself
    // takes TRACER_WAIT_READER and TRACER_ENABLE: the programs it starts
    // inherit them, but nobody waits for them (each would stall 10 s).
    let run_child = std::env::var(tracer_core::wire::env::RUN).map_or(true, |pid| {
        // SAFETY: getppid has no preconditions.
        pid.parse::<i32>().ok() == Some(unsafe { libc::getppid() })
    });
    if !run_child {
        return;
    }
    if std::env::var_os(tracer_core::wire::env::WAIT_READER).is_some() {
        // `tracer run --trace/--hist`: wait (10 s at most) until its reader
        // has attached, so every event from main on reaches it.
        let t0 = std::time::Instant::now();
        while !collect::external() && t0.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    if let Some(p) = std::env::var_os(tracer_core::wire::env::ENABLE) {
        // `TRACER_ENABLE=PATTERN`: enable before main, as uftrace's -F does.
        enable_at_start(&p.to_string_lossy());
    }
}

/// Enable `pattern` at start. Terms that match nothing yet are kept for
/// libraries loaded later rather than failing the whole pattern.
pub(crate) fn enable_at_start(pattern: &str) {
    let says = |r: &Report| {
        for (f, s) in &r.skipped {
            eprintln!("tracer: TRACER_ENABLE: left {f} alone: {}", s.reason);
        }
    };
    let cap = crate::capture::from_env();
    match crate::enable_with(pattern, cap) {
        Err(Error::Pattern(tracer_core::pattern::PatternError::NoMatch { .. })) => {}
        Err(e) => {
            eprintln!("tracer: TRACER_ENABLE={pattern}: {e}");
            return;
        }
        Ok(r) => return says(&r),
    }
    let (mut later, mut negative) = (Vec::new(), Vec::new());
    for t in tracer_core::pattern::terms(pattern) {
        if t.starts_with('!') {
            negative.push(t.to_string());
            continue;
        }
        match crate::enable_with(t, cap) {
            Ok(r) => says(&r),
            Err(Error::Pattern(tracer_core::pattern::PatternError::NoMatch { .. })) => {
                later.push(t.to_string())
            }
            Err(e) => eprintln!("tracer: TRACER_ENABLE: {t}: {e}"),
        }
    }
    for t in &negative {
        let _ = disable(&t[1..]);
    }
    if !later.is_empty() {
        eprintln!(
            "tracer: TRACER_ENABLE: nothing matches {} yet; enabled as soon as a library that has \
             such functions is loaded",
            later.join(", ")
        );
        pending::wait_for(later, negative);
    }
}
