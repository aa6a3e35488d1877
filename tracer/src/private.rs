//! Used by the code `#[traceable]` generates. Not a public API.

pub use tracer_core::site::{clean_path, FnDesc};

pub use crate::arch::{async_entry_pad, async_exit_pad, entry_pad, exit_pad};

/// What the runtime's ELF constructor does (the preload library calls it
/// from its own): convert GCC's NOP pads while single-threaded, start the
/// agent, apply `TRACER_ENABLE`. Runs once however often it is called.
pub fn start() {
    #[cfg(target_os = "linux")]
    crate::startup::agent_constructor();
}

/// `tracer attach` of a process whose preload library is loaded already
/// (attached, then detached): start its agent again. 0: it serves.
pub fn start_agent_again() -> i32 {
    #[cfg(target_os = "linux")]
    return crate::agent::start_again();
    #[cfg(not(target_os = "linux"))]
    1
}

/// For tests: whether this architecture's patch protocol plants traps
/// (x86-64's int3 and Thumb-2's half-word breakpoint do; AArch64's and
/// A32's single aligned store never does).
pub fn protocol_traps() -> bool {
    use tracer_core::backend::Backend;
    !<crate::arch::Arch as Backend>::TRAP.is_empty()
}

/// For tests: the backend's name (`x86-64`, `aarch64`, `thumb2`, `a32`).
pub fn backend_name() -> &'static str {
    use tracer_core::backend::Backend;
    <crate::arch::Arch as Backend>::NAME
}

/// For tests: spin this many iterations inside the SIGTRAP handler.
pub fn set_trap_handler_delay(spins: u64) {
    crate::trap::TEST_HANDLER_DELAY.store(spins, std::sync::atomic::Ordering::Relaxed);
}

/// For tests: the protection of the page holding `addr`.
pub fn page_protection(addr: usize) -> Option<i32> {
    crate::text::protection_of(addr)
}

/// For tests: make code written at `start..end` visible to instruction
/// fetch (cache maintenance on ARM; nothing to do on x86-64).
pub fn flush_code(start: usize, end: usize) {
    crate::arch::flush_icache(start, end);
}

/// For tests: the registry index of a function (as in events' `func`).
pub fn func_index(name: &str) -> Option<u32> {
    let rt = crate::runtime::runtime().ok()?;
    crate::runtime::lookup(&rt.lock_refreshed().reg, name).map(|i| i as u32)
}

/// For tests: see every event the collector drains, with the thread id.
pub fn set_event_tap(tap: Option<crate::collect::EventTap>) {
    if crate::runtime::runtime().is_ok() {
        crate::collect::lock().tap = tap;
    }
}

/// For tests: drain every ring now.
pub fn drain() {
    if crate::runtime::runtime().is_ok() {
        crate::collect::lock().drain_all();
    }
}

pub use tracer_core::event::{Event, KIND_ENTRY, KIND_EXIT};
/// For tests: the values events of capturing functions (issue 14), and
/// their argument words decoded.
pub use tracer_core::{
    capture::Args,
    event::{KIND_ARGS, KIND_RETVAL},
};

/// For tests: how many functions have a latency histogram (one is made
/// at a function's first completed call, not at registration).
pub fn histograms_made() -> usize {
    if crate::runtime::runtime().is_err() {
        return 0;
    }
    crate::collect::lock().hists.iter().flatten().count()
}

/// What the preload library exports and calls: the `dlsym`/`dlopen`
/// shims' entry (a tail call from a hooked function gets its real caller
/// back), the unwinder's interposed entry points (they give the thread's
/// hooked return addresses back, then call the real ones), and on x86-64
/// the stack walks (hooked returns are given back around the walk).
#[cfg(all(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    target_os = "linux"
))]
pub use crate::returns::exports::*;

/// For benches and tests: run one batch over raw pads (the
/// architecture's NOP, in memory the caller mapped executable), making
/// them call `target` (`on`, through a veneer where it is out of reach)
/// or restoring the NOP, through the same engine, text writer and trap
/// handler as `enable`.
pub fn patch_raw_sites(
    addrs: &[usize],
    target: usize,
    on: bool,
) -> Result<crate::BatchReport, crate::WriteError> {
    use tracer_core::backend::Backend;
    use tracer_core::engine::{SiteRequest, Want};
    if let Err(e) = crate::runtime::runtime() {
        return Err(crate::WriteError {
            message: e.to_string(),
        });
    }
    let nop = crate::arch::Arch::encode_nop(0);
    let reqs: Vec<SiteRequest> = addrs
        .iter()
        .map(|&addr| {
            let target = crate::veneer::call_target(addr, target).unwrap_or(target);
            SiteRequest {
                addr,
                want: if on {
                    Want::Call { target }
                } else {
                    Want::Nop {
                        original: nop,
                        from: target,
                    }
                },
            }
        })
        .collect();
    let mut w = crate::text::LiveText::default();
    tracer_core::engine::apply_batch::<crate::arch::Arch, _>(&mut w, &reqs)
}

/// For tests and benches: the sites of a function, `(addr, kind)`.
pub fn sites_of(name: &str) -> Vec<(usize, u32)> {
    let Ok(rt) = crate::runtime::runtime() else {
        return Vec::new();
    };
    let st = rt.lock_refreshed();
    let Some(f) = crate::runtime::lookup(&st.reg, name) else {
        return Vec::new();
    };
    st.reg.funcs[f]
        .sites
        .iter()
        .map(|&s| (st.reg.sites[s].addr, st.reg.sites[s].kind))
        .collect()
}
