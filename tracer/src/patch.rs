//! Enabling and disabling: select the functions, make one request per site,
//! check that a batch is safe to run, run it, record the outcome.

use crate::capture;
use crate::runtime::{loaded, resolve_in, runtime, State};
use crate::{arch, clock, collect, returns, text, trap, veneer, window, Error, Report};
use crate::{SkipReason, Skipped};
use tracer_core::backend::Backend;
use tracer_core::capture::Capture;
use tracer_core::engine::{BatchReport, SiteRequest, Want};

pub(crate) fn set_state(pattern: &str, on: bool) -> Result<Report, Error> {
    set_state_with(pattern, on, Capture::NONE)
}

/// Enable the functions `pattern` selects that are not enabled yet, with
/// capture `cap`; enabled ones keep their state and capture (a session
/// that enables for a while and disables what it changed at its end must
/// not change what the user enabled).
pub(crate) fn set_state_keeping(pattern: &str, cap: Capture) -> Result<Report, Error> {
    let rt = runtime()?;
    let mut guard = rt.lock_refreshed();
    let State { reg, enabled, .. } = &mut *guard;
    let funcs = resolve_in(reg, &loaded(reg), pattern)?;
    let targets: Vec<usize> = funcs.into_iter().filter(|&f| !enabled[f]).collect();
    apply(reg, enabled, targets, true, cap)
}

/// [`set_state`]; enabled functions get capture `cap` (a function enabled
/// already with another capture is disabled and enabled again with it).
pub(crate) fn set_state_with(pattern: &str, on: bool, cap: Capture) -> Result<Report, Error> {
    let rt = runtime()?;
    let mut guard = rt.lock_refreshed();
    let State { reg, enabled, .. } = &mut *guard;
    let funcs = resolve_in(reg, &loaded(reg), pattern)?;
    if on {
        let other: Vec<usize> = funcs
            .iter()
            .copied()
            .filter(|&f| enabled[f] && capture::of(f) != cap)
            .collect();
        if !other.is_empty() {
            apply(reg, enabled, other, false, Capture::NONE)?;
        }
    }
    let targets: Vec<usize> = funcs.into_iter().filter(|&f| enabled[f] != on).collect();
    apply(reg, enabled, targets, on, cap)
}

fn apply(
    reg: &crate::registry::Registry,
    enabled: &mut [bool],
    targets: Vec<usize>,
    on: bool,
    cap: Capture,
) -> Result<Report, Error> {
    let mut report = Report::default();
    if targets.is_empty() {
        return Ok(report);
    }
    // Each with its site's kind: the architecture splits them into batches.
    let mut requests = Vec::new();
    // New stubs and veneers are written with one protection change per page;
    // dropped (pages read-only, caches clean) before any site is patched.
    let veneers = veneer::Batch::begin();
    for &f in &targets {
        for &si in &reg.funcs[f].sites {
            let s = &reg.sites[si as usize];
            if let Some(why) = &s.broken {
                if on {
                    report.skipped.push((
                        reg.funcs[f].path.to_string(),
                        Skipped {
                            addr: s.addr,
                            reason: SkipReason::Unusable(why.to_string()),
                        },
                    ));
                }
                continue;
            }
            // Where the call reaches the stub, the stub; else a veneer (the
            // same one on the way back, so the old bytes check out). A
            // compiler pad calls its function's entry stub.
            // A function with capture calls its capturing stub (on the way
            // back, the one it was enabled with).
            let cap_f = if on { cap } else { capture::of(f) };
            let target = if s.kind == tracer_core::site::KIND_FENTRY {
                let stub = if cap_f.any() {
                    returns::capture_stub(s.addr, s.func, cap_f)
                } else {
                    returns::entry_stub(s.addr, s.func)
                };
                match stub {
                    Ok(t) => t,
                    Err(e) => {
                        report.skipped.push((
                            reg.funcs[f].path.to_string(),
                            Skipped {
                                addr: s.addr,
                                reason: SkipReason::NoStub(e),
                            },
                        ));
                        continue;
                    }
                }
            } else {
                // A `#[traceable]` pad with a capturing stub calls it when
                // its function is enabled with capture of what it captures.
                let capturing = s.capturing
                    && match s.kind {
                        tracer_core::site::KIND_ENTRY | tracer_core::site::KIND_ASYNC_ENTRY => {
                            cap_f.args()
                        }
                        tracer_core::site::KIND_EXIT | tracer_core::site::KIND_ASYNC_EXIT => {
                            cap_f.retval
                        }
                        _ => false,
                    };
                let stub = if capturing { s.capture_stub() } else { s.stub };
                match veneer::call_target(s.addr, stub) {
                    Ok(t) => t,
                    Err(_) => stub, // the engine skips it with the encode error
                }
            };
            // Where the architecture says so, a compiler pad enabled
            // without capture jumps to its stub.
            let jump = arch::PLAIN_FENTRY_JUMPS
                && s.kind == tracer_core::site::KIND_FENTRY
                && !cap_f.any();
            let req = SiteRequest {
                addr: s.addr,
                want: if on && jump {
                    Want::Jump { target }
                } else if on {
                    Want::Call { target }
                } else {
                    Want::Nop {
                        original: s.original,
                        from: target,
                    }
                },
            };
            requests.push((s.kind, req));
        }
    }
    drop(veneers);
    if !arch::Arch::TRAP.is_empty() {
        // A thread being created runs with every signal blocked for a few
        // microseconds (glibc's pthread_create) and cannot reach a site then:
        // only a thread that keeps SIGTRAP blocked for ~50 ms is refused (a loaded machine may take
        // milliseconds to run a new thread; the tracer's own threads are waited
        // for when they start, see `trap::spawn_own_thread`).
        let mut blocking = trap::threads_blocking_sigtrap();
        let mut tries = 0;
        while !blocking.is_empty() && tries < 250 {
            std::thread::sleep(std::time::Duration::from_micros(200));
            blocking = trap::threads_blocking_sigtrap();
            tries += 1;
        }
        if !blocking.is_empty() {
            return Err(Error::SigtrapBlocked {
                threads: blocking.into_iter().map(|t| (t.tid, t.name)).collect(),
            });
        }
        if !trap::handler_is_ours() {
            return Err(Error::HandlerReplaced);
        }
    }
    if on {
        // Before any pad goes live: entries of earlier windows are older.
        let now = clock::now();
        for &f in &targets {
            window::open(f, now);
        }
    }
    let mut batch = BatchReport::default();
    // Whether an earlier batch ran (and changed its sites).
    let mut ran = false;
    for b in arch::batches(requests) {
        if b.requests.is_empty() {
            continue;
        }
        let mut writer = text::LiveText::default();
        match (b.run)(&mut writer, &b.requests) {
            Ok(r) => merge(&mut batch, r),
            Err(e) if !ran => return Err(Error::Write(e)),
            // An earlier batch did change its sites: keep its outcome, and
            // report these as skipped (nothing of this batch was written).
            Err(e) => batch.skipped.extend(b.requests.iter().map(|r| Skipped {
                addr: r.addr,
                reason: SkipReason::NoStub(e.message.clone()),
            })),
        }
        ran = true;
    }
    for sk in &batch.skipped {
        let f = reg
            .sites
            .binary_search_by_key(&sk.addr, |s| s.addr)
            .map(|i| reg.funcs[reg.sites[i].func as usize].path.to_string())
            .unwrap_or_default();
        report.skipped.push((f, sk.clone()));
    }
    // A function changed state if at least one of its pads now holds what
    // was asked for; one whose every pad was broken or skipped did not.
    let mut done: Vec<usize> = batch
        .changed
        .iter()
        .chain(&batch.unchanged)
        .copied()
        .collect();
    done.sort_unstable();
    for &f in &targets {
        let any = reg.funcs[f]
            .sites
            .iter()
            .any(|&si| done.binary_search(&reg.sites[si as usize].addr).is_ok());
        if any || !on {
            enabled[f] = on;
            capture::set(f, if on { cap } else { Capture::NONE });
        }
        if any {
            report.changed.push(reg.funcs[f].path.to_string());
        }
    }
    report.syncs = batch.syncs;
    report.warning = batch.restore_error.map(|e| e.message);
    if let Some(w) = &report.warning {
        // Rare and security-relevant (a code page may be left writable):
        // say it even to callers that only look at the count.
        eprintln!("tracer: warning: {w}");
    }
    collect::set_active(enabled.iter().filter(|e| **e).count());
    Ok(report)
}

/// Add batch `b`'s outcome to `into`'s (the first restore error is kept).
fn merge(into: &mut BatchReport, b: BatchReport) {
    into.changed.extend(b.changed);
    into.unchanged.extend(b.unchanged);
    into.skipped.extend(b.skipped);
    into.syncs += b.syncs;
    into.restore_error = into.restore_error.take().or(b.restore_error);
}
