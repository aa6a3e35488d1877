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

mod agent;
mod arch;
pub mod clock;
mod collect;
pub mod discover;
mod metrics;
mod registry;
mod text;
mod thread;
mod trap;
mod veneer;
mod whole;
mod window;

use std::fmt;
use std::sync::{Mutex, OnceLock};
use tracer_core::backend::{Backend, TrapPolicy};
use tracer_core::engine::{apply_batch, SiteRequest, Want};
use tracer_core::pattern::{self, Named, PatternError};
use tracer_core::site::SiteRecord;

pub use metrics::serve_metrics;
pub use tracer_core::engine::{BatchReport, SkipReason, Skipped, WriteError};
pub use tracer_macros::traceable;

#[cfg(target_arch = "x86_64")]
tracer_arch_x86::__tracer_define_trampolines!(
    crate::thread::on_entry,
    crate::thread::on_exit,
    crate::thread::LEAN,
    crate::thread::XSAVE_SIZE
);
#[cfg(target_arch = "x86_64")]
tracer_arch_x86::__tracer_define_fentry_trampolines!(
    crate::thread::on_fentry,
    crate::thread::on_fret,
    crate::whole::fret_personality,
    crate::thread::THREADS,
    crate::thread::fret_layout::DEAD,
    crate::thread::fret_layout::PRIVATE,
    crate::thread::fret_layout::SHADOW,
    crate::thread::LEAN,
    crate::thread::XSAVE_SIZE
);
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
tracer_arch_arm::__tracer_define_trampolines!(crate::thread::on_entry, crate::thread::on_exit);
#[cfg(target_arch = "aarch64")]
tracer_arch_arm::__tracer_define_fentry_trampolines!(
    crate::thread::on_fentry,
    crate::thread::on_fret,
    crate::thread::THREADS,
    crate::thread::fret_layout::DEAD,
    crate::thread::fret_layout::PRIVATE,
    crate::thread::fret_layout::SHADOW
);

// The section always exists, even in a program without a traced function:
// one sentinel record with a null descriptor.
#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".pushsection __tracer_sites,\"awR\",@progbits",
    ".balign 8",
    ".quad 0, 0, 0",
    ".long 0, 0",
    ".popsection",
);
#[cfg(target_arch = "aarch64")]
std::arch::global_asm!(
    ".pushsection __tracer_sites,\"awR\",%progbits",
    ".balign 8",
    ".quad 0, 0, 0",
    ".word 0, 0",
    ".popsection",
);
// ARMv7: pointers are 4 bytes, a record is 5 words.
#[cfg(target_arch = "arm")]
std::arch::global_asm!(
    ".pushsection __tracer_sites,\"awR\",%progbits",
    ".balign 4",
    ".word 0, 0, 0, 0, 0",
    ".popsection",
);

/// Start the agent (see `agent.rs`) in every program that links this crate,
/// before `main`, without code in `main`.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static AGENT_CONSTRUCTOR: extern "C" fn() = agent_constructor;

#[cfg(target_os = "linux")]
extern "C" fn agent_constructor() {
    static ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if ONCE.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return;
    }
    whole::convert_at_startup();
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

/// `TRACER_ENABLE`'s terms that matched no function at start, and its `!`
/// terms: a library the program loads later (`dlopen`) may have them. The
/// agent tries them again every 10 ms while any is left
/// ([`apply_pending`]).
static PENDING: Mutex<(Vec<String>, Vec<String>)> = Mutex::new((Vec::new(), Vec::new()));

/// Enable `pattern` at start. Terms that match nothing yet are kept for
/// libraries loaded later rather than failing the whole pattern.
fn enable_at_start(pattern: &str) {
    let says = |r: &Report| {
        for (f, s) in &r.skipped {
            eprintln!("tracer: TRACER_ENABLE: left {f} alone: {}", s.reason);
        }
    };
    match enable_report(pattern) {
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
        match enable_report(t) {
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
        *PENDING.lock().unwrap_or_else(|e| e.into_inner()) = (later, negative);
    }
}

/// Functions registered now (after looking for libraries loaded or
/// unloaded since the last look); 0 without a runtime.
pub(crate) fn function_count() -> usize {
    runtime().map_or(0, |rt| rt.state().reg.funcs.len())
}

/// Whether some of `TRACER_ENABLE`'s terms wait for a library to be loaded.
pub(crate) fn has_pending() -> bool {
    !PENDING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .0
        .is_empty()
}

/// Enable the waiting `TRACER_ENABLE` terms that match functions now (of a
/// library loaded since), then apply its `!` terms again.
pub(crate) fn apply_pending() {
    static SEEN: Mutex<(u64, u64)> = Mutex::new((0, 0));
    let mut p = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    if p.0.is_empty() {
        return;
    }
    // Only when the loader's add/remove counters moved (state() rescans).
    let Ok(rt) = runtime() else { return };
    let loader = rt.state().loader;
    {
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == loader {
            return;
        }
        *seen = loader;
    }
    let before = p.0.len();
    p.0.retain(|t| {
        !matches!(
            enable(t),
            Ok(_) | Err(Error::Pattern(tracer_core::pattern::PatternError::Empty))
        )
    });
    if p.0.len() != before {
        for t in &p.1 {
            let _ = disable(&t[1..]);
        }
    }
}

extern "C" {
    #[link_name = "__start___tracer_sites"]
    static SITES_START: u8;
    #[link_name = "__stop___tracer_sites"]
    static SITES_STOP: u8;
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The pattern selects no function.
    Pattern(PatternError),
    /// The kernel refused to make code writable; nothing was changed.
    Write(WriteError),
    /// Threads block SIGTRAP, so a batch could kill the process.
    SigtrapBlocked {
        /// `(tid, name)` of each such thread.
        threads: Vec<(i32, String)>,
    },
    /// Someone replaced the tracer's SIGTRAP handler.
    HandlerReplaced,
    /// The runtime cannot work in this process.
    Unsupported(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Pattern(e) => write!(f, "{e}"),
            Error::Write(e) => write!(f, "{e}"),
            Error::SigtrapBlocked { threads } => {
                let list: Vec<String> = threads.iter().map(|(t, n)| format!("{t} ({n})")).collect();
                write!(
                    f,
                    "thread(s) {} block SIGTRAP; a thread that runs into a pad while it is being patched \
                     would then kill the process. Nothing was changed. Unblock SIGTRAP in those threads \
                     (pthread_sigmask) and try again",
                    list.join(", ")
                )
            }
            Error::HandlerReplaced => f.write_str(
                "the tracer's SIGTRAP handler was replaced by someone else; patching now could kill the \
                 process. Nothing was changed. Restore the handler (or chain to it) and try again",
            ),
            Error::Unsupported(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<PatternError> for Error {
    fn from(e: PatternError) -> Error {
        Error::Pattern(e)
    }
}

/// A traceable function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionInfo {
    /// Full path (`app::cache::lookup`, `<app::Db as app::Store>::get`).
    pub name: String,
    /// Its own name (`lookup`).
    pub ident: String,
    /// Source file.
    pub file: String,
    /// Source line.
    pub line: u32,
    /// Whether its pads are enabled.
    pub enabled: bool,
    /// Number of pads (entry and exit, every instantiation and inlined copy).
    pub sites: usize,
    /// Problems with its pads (bytes that were not what the tracer expected);
    /// such pads are never written.
    pub problems: Vec<String>,
    /// Its index (as in events, and in the agent's function list).
    pub index: u32,
    /// False once the object holding it was unloaded (`dlclose`).
    pub loaded: bool,
    /// A compiler-inserted pad (`file` is then the object's path) rather
    /// than `#[traceable]`.
    pub compiler_pad: bool,
    /// For a compiler pad: its address in the object as linked (the
    /// runtime address less the object's load bias), where the object's
    /// debug information (DWARF) says which source line it is. The `tracer`
    /// program reads that information itself, so the traced process never
    /// loads it.
    pub object_offset: Option<u64>,
}

/// Latency of one function, in nanoseconds.
///
/// `count`, `min`, `max` and `mean` are exact (per-thread counters). The
/// percentiles are within 0.8 % (see `tracer_core::loghist`) of the calls
/// whose exit events this process drained itself: `count - lost` of them.
/// While a `tracer` program reads the rings (`tracer trace`, `hist`,
/// `record` attached to this process), the events go to it, not here: the
/// percentiles then cover only the calls before it attached, and are 0 when
/// there were none (`lost == count`; [`LatencySummary::has_percentiles`]).
/// Its `Display` says so instead of printing such zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    /// Completed calls while enabled (exact).
    pub count: u64,
    /// Shortest (exact).
    pub min: u64,
    /// Median (0 without percentiles: see above).
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Longest (exact).
    pub max: u64,
    /// Mean.
    pub mean: u64,
    /// Calls counted in `count` whose duration is missing from the
    /// percentiles (their exit event was dropped from a full ring, or read
    /// by an attached `tracer` program).
    pub lost: u64,
}

impl LatencySummary {
    /// Whether the percentiles describe any call (not when an attached
    /// `tracer` program read every event).
    pub fn has_percentiles(&self) -> bool {
        self.lost < self.count
    }
}

impl std::fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "count={} min={}ns mean={}ns max={}ns",
            self.count, self.min, self.mean, self.max
        )?;
        if self.has_percentiles() {
            write!(
                f,
                " p50={}ns p90={}ns p99={}ns p99.9={}ns",
                self.p50, self.p90, self.p99, self.p999
            )?;
            if self.lost > 0 {
                write!(
                    f,
                    " (percentiles of {} calls: {} were dropped or read by an attached tracer program)",
                    self.count - self.lost,
                    self.lost
                )?;
            }
            Ok(())
        } else {
            f.write_str(
                " (no percentiles here: an attached tracer program read these calls; ask it: tracer hist)",
            )
        }
    }
}

/// What one `enable`/`disable` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Full paths of the functions whose state changed.
    pub changed: Vec<String>,
    /// Sites left alone, with the function and the reason.
    pub skipped: Vec<(String, Skipped)>,
    /// Syncs the batch did.
    pub syncs: usize,
    /// Set when the batch completed but a page's protection could not be restored.
    pub warning: Option<String>,
}

struct Runtime {
    state: Mutex<State>,
}

/// The registry and which functions are enabled, under one lock (batches
/// are serialised by it too).
struct State {
    reg: registry::Registry,
    enabled: Vec<bool>,
    /// The loader's (adds, subs) counters when the objects were last scanned.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    loader: (u64, u64),
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

impl Runtime {
    /// The state, with the registry brought up to date with the objects
    /// loaded now (`dlopen`/`dlclose` since the last look).
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        whole::refresh(&mut st);
        st
    }
}

fn records() -> &'static [SiteRecord] {
    // SAFETY: the linker defines both symbols around the section, which holds
    // only SiteRecords (ours and #[traceable]'s, all 8-aligned, same layout).
    unsafe {
        let start = std::ptr::addr_of!(SITES_START) as *const SiteRecord;
        let stop = std::ptr::addr_of!(SITES_STOP) as *const SiteRecord;
        let n = (stop as usize - start as usize) / std::mem::size_of::<SiteRecord>();
        std::slice::from_raw_parts(start, n)
    }
}

fn runtime() -> Result<&'static Runtime, Error> {
    RUNTIME
        .get_or_init(|| {
            {
                clock::init();
                // SAFETY: the records are this program's, valid forever; no pad is enabled yet.
                let reg = unsafe { registry::Registry::build(records()) };
                let nfuncs = reg.funcs.len();
                thread::init(nfuncs);
                collect::init(nfuncs);
                #[cfg(target_arch = "x86_64")]
                thread::XSAVE_SIZE.store(
                    arch::xsave_area_size(),
                    std::sync::atomic::Ordering::Release,
                );
                text::init_sync();
                if !text::sync_available() {
                    return Err(String::from(
                        "neither membarrier(SYNC_CORE) nor the mprotect fallback is available, so \
                         other threads could run half-patched code; the tracer refuses to patch. \
                         Allow the membarrier system call (Linux >= 4.16) or mmap/mprotect",
                    ));
                }
                if arch::shadow_stack_active() {
                    trap::set_policy(TrapPolicy::Skip);
                }
                trap::install()?;
                #[cfg(target_arch = "x86_64")]
                let check = verify_hooks();
                // The ARM trampolines always save what the hook may clobber.
                #[cfg(not(target_arch = "x86_64"))]
                let check = Some(String::from("no lean trampoline on this architecture"));
                if check.is_none() && std::env::var_os("TRACER_FULL_SAVE").is_none() {
                    thread::LEAN.store(true, std::sync::atomic::Ordering::Release);
                }
                let _ = HOOK_CHECK.set(check);
                whole::init_returns();
                let mut state = State {
                    enabled: vec![false; nfuncs],
                    reg,
                    loader: (0, 0),
                };
                whole::refresh(&mut state);
                // The late-trap check's list of sites (refresh keeps it up
                // to date where objects can add sites).
                trap::publish_sites(state.reg.addresses());
                Ok(Runtime {
                    state: Mutex::new(state),
                })
            }
        })
        .as_ref()
        .map_err(|e| Error::Unsupported(e.clone()))
}

static HOOK_CHECK: OnceLock<Option<String>> = OnceLock::new();

/// Why the trampolines must save vector registers (`None`: they need not).
#[cfg(target_arch = "x86_64")]
fn verify_hooks() -> Option<String> {
    use tracer_arch_x86::trampoline::{verify_hook, HookCheck};
    // SAFETY: the hooks are this program's mapped text.
    let read = |a: usize, buf: &mut [u8]| unsafe { arch::read_text(a, buf) };
    let shim = thread::call_saving_shim();
    for (name, f) in [
        ("on_entry", thread::on_entry as *const () as usize),
        ("on_exit", thread::on_exit as *const () as usize),
        ("on_fentry", thread::on_fentry as *const () as usize),
        ("on_fret", thread::on_fret as *const () as usize),
    ] {
        if let HookCheck::NeedsFullSave(why) = verify_hook(f, shim, &read) {
            return Some(format!("{name}: {why}"));
        }
    }
    None
}

/// Every function for pattern matching; unloaded ones get an empty name
/// (no pattern matches it).
/// The functions among `candidates` (indices, ascending) that `pattern`
/// selects, by their names or their aliases; function indices, ascending.
fn resolve_in(
    reg: &registry::Registry,
    candidates: &[usize],
    pattern: &str,
) -> Result<Vec<usize>, PatternError> {
    let mut named: Vec<Named<'_>> = Vec::with_capacity(candidates.len());
    let mut owner: Vec<usize> = Vec::with_capacity(candidates.len());
    for &i in candidates {
        let f = &reg.funcs[i];
        named.push(Named {
            path: &f.path,
            own: &f.ident,
        });
        owner.push(i);
        for a in &f.aliases {
            named.push(Named {
                path: a,
                own: discover::own_name(a),
            });
            owner.push(i);
        }
    }
    let mut v: Vec<usize> = pattern::resolve(pattern, &named)?
        .into_iter()
        .map(|k| owner[k])
        .collect();
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// The loaded functions' indices.
fn loaded(reg: &registry::Registry) -> Vec<usize> {
    (0..reg.funcs.len())
        .filter(|&i| reg.funcs[i].loaded)
        .collect()
}

fn set_state(pattern: &str, on: bool) -> Result<Report, Error> {
    let rt = runtime()?;
    let mut guard = rt.state();
    let State { reg, enabled, .. } = &mut *guard;
    let funcs = resolve_in(reg, &loaded(reg), pattern)?;
    let targets: Vec<usize> = funcs.into_iter().filter(|&f| enabled[f] != on).collect();
    let mut report = Report::default();
    if targets.is_empty() {
        return Ok(report);
    }
    let mut requests = Vec::new();
    // AArch64 compiler pads become `B stub`, not `BL` (the caller's return
    // address must stay in x30): their own backend, in a second batch.
    #[cfg(target_arch = "aarch64")]
    let mut entry_requests = Vec::new();
    // New stubs and veneers are written with one protection change per page;
    // dropped (pages read-only, caches clean) before any site is patched.
    let veneers = veneer::Batch::begin();
    for &f in &targets {
        for &si in &reg.funcs[f].sites {
            let s = &reg.sites[si];
            if let Some(why) = &s.broken {
                if on {
                    report.skipped.push((
                        reg.funcs[f].path.clone(),
                        Skipped {
                            addr: s.addr,
                            reason: SkipReason::Unusable(why.clone()),
                        },
                    ));
                }
                continue;
            }
            // Where the call reaches the stub, the stub; else a veneer (the
            // same one on the way back, so the old bytes check out). A
            // compiler pad calls its function's entry stub.
            let target = if s.kind == tracer_core::site::KIND_FENTRY {
                match whole::entry_stub(s.addr, s.func) {
                    Ok(t) => t,
                    Err(e) => {
                        report.skipped.push((
                            reg.funcs[f].path.clone(),
                            Skipped {
                                addr: s.addr,
                                reason: SkipReason::NoStub(e),
                            },
                        ));
                        continue;
                    }
                }
            } else {
                match veneer::call_target(s.addr, s.stub) {
                    Ok(t) => t,
                    Err(_) => s.stub, // the engine skips it with the encode error
                }
            };
            let req = SiteRequest {
                addr: s.addr,
                want: if on {
                    Want::Call { target }
                } else {
                    Want::Nop {
                        original: s.original,
                        from: target,
                    }
                },
            };
            #[cfg(target_arch = "aarch64")]
            if s.kind == tracer_core::site::KIND_FENTRY {
                entry_requests.push(req);
                continue;
            }
            requests.push(req);
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
    let mut writer = text::LiveText::default();
    #[allow(unused_mut)]
    let mut batch = apply_batch::<arch::Arch, _>(&mut writer, &requests).map_err(Error::Write)?;
    #[cfg(target_arch = "aarch64")]
    if !entry_requests.is_empty() {
        let mut writer = text::LiveText::default();
        let b = match apply_batch::<tracer_arch_arm::Aarch64Entry, _>(&mut writer, &entry_requests)
        {
            Ok(b) => b,
            Err(e) if requests.is_empty() => return Err(Error::Write(e)),
            // The first batch did change its sites: keep its outcome, and
            // report these as skipped (nothing of this batch was written).
            Err(e) => tracer_core::engine::BatchReport {
                skipped: entry_requests
                    .iter()
                    .map(|r| Skipped {
                        addr: r.addr,
                        reason: SkipReason::NoStub(e.message.clone()),
                    })
                    .collect(),
                ..Default::default()
            },
        };
        batch.changed.extend(b.changed);
        batch.unchanged.extend(b.unchanged);
        batch.skipped.extend(b.skipped);
        batch.syncs += b.syncs;
        batch.restore_error = batch.restore_error.or(b.restore_error);
    }
    for sk in &batch.skipped {
        let f = reg
            .sites
            .binary_search_by_key(&sk.addr, |s| s.addr)
            .map(|i| reg.funcs[reg.sites[i].func as usize].path.clone())
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
            .any(|&si| done.binary_search(&reg.sites[si].addr).is_ok());
        if any || !on {
            enabled[f] = on;
        }
        if any {
            report.changed.push(reg.funcs[f].path.clone());
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

/// Enable the functions `pattern` selects. Returns how many changed state
/// (already enabled functions are left alone and not counted).
pub fn enable(pattern: &str) -> Result<usize, Error> {
    enable_report(pattern).map(|r| r.changed.len())
}

/// Disable the functions `pattern` selects. Returns how many changed state.
pub fn disable(pattern: &str) -> Result<usize, Error> {
    disable_report(pattern).map(|r| r.changed.len())
}

/// [`enable`], with the details: functions changed, sites skipped and why.
pub fn enable_report(pattern: &str) -> Result<Report, Error> {
    set_state(pattern, true)
}

/// [`disable`], with the details.
pub fn disable_report(pattern: &str) -> Result<Report, Error> {
    set_state(pattern, false)
}

/// Every traceable function, sorted by name.
pub fn functions() -> Vec<FunctionInfo> {
    let Ok(rt) = runtime() else {
        return Vec::new();
    };
    let mut all = function_table(&rt.state());
    all.retain(|f| f.loaded);
    all.sort_by(|a, b| a.name.cmp(&b.name).then(a.index.cmp(&b.index)));
    all
}

/// Every function ever registered, by index (unloaded ones too): what the
/// agent hands the `tracer` program, whose events name functions by index.
pub(crate) fn all_functions() -> Vec<FunctionInfo> {
    match runtime() {
        Ok(rt) => function_table(&rt.state()),
        Err(_) => Vec::new(),
    }
}

/// The names of the enabled (loaded) functions, sorted; without building the
/// whole function table.
pub(crate) fn enabled_names() -> Vec<String> {
    let Ok(rt) = runtime() else {
        return Vec::new();
    };
    let st = rt.state();
    let mut v: Vec<String> = st
        .reg
        .funcs
        .iter()
        .enumerate()
        .filter(|(i, f)| f.loaded && st.enabled.get(*i).copied().unwrap_or(false))
        .map(|(_, f)| f.path.clone())
        .collect();
    v.sort_unstable();
    v
}

/// The name of every function ever registered, by index (unloaded ones
/// too): all a reader needs to name events.
pub(crate) fn function_names() -> Vec<String> {
    match runtime() {
        Ok(rt) => rt
            .state()
            .reg
            .funcs
            .iter()
            .map(|f| f.path.clone())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A page of the loaded functions sorted by name, of those `pattern`
/// selects (all without one): at most `max` from position `from`, and the
/// number there are in all. Only the page's entries are built.
pub(crate) fn functions_page(
    pattern: Option<&str>,
    from: usize,
    max: usize,
) -> Result<(Vec<FunctionInfo>, usize), Error> {
    let rt = runtime()?;
    let st = rt.state();
    let funcs = &st.reg.funcs;
    let mut order = loaded(&st.reg);
    if let Some(p) = pattern {
        order = resolve_in(&st.reg, &order, p)?;
    }
    order.sort_unstable_by(|&a, &b| funcs[a].path.cmp(&funcs[b].path).then(a.cmp(&b)));
    let total = order.len();
    let from = from.min(total);
    let to = from.saturating_add(max).min(total);
    let page = order[from..to]
        .iter()
        .map(|&i| function_info(&st, i))
        .collect();
    Ok((page, total))
}

/// Every function ever registered, by index (unloaded ones too).
fn function_table(st: &State) -> Vec<FunctionInfo> {
    (0..st.reg.funcs.len())
        .map(|i| function_info(st, i))
        .collect()
}

/// What the API says about function `i`.
fn function_info(st: &State, i: usize) -> FunctionInfo {
    let f = &st.reg.funcs[i];
    {
        FunctionInfo {
            name: f.path.clone(),
            ident: f.ident.clone(),
            file: f.file.clone(),
            line: f.line,
            enabled: st.enabled[i],
            sites: f.sites.len(),
            problems: f
                .sites
                .iter()
                .filter_map(|&s| st.reg.sites[s].broken.clone())
                .collect(),
            index: i as u32,
            loaded: f.loaded,
            compiler_pad: f.object.is_some(),
            object_offset: f.object.as_ref().and_then(|o| {
                let site = st.reg.sites.get(*f.sites.first()?)?.addr;
                let (_, bias, _) = st.reg.objects.iter().find(|(p, _, _)| p == o)?;
                Some(site.checked_sub(*bias)? as u64)
            }),
        }
    }
}

fn lookup(reg: &registry::Registry, name: &str) -> Option<usize> {
    if let Some(i) = reg.funcs.iter().position(|f| f.loaded && f.path == name) {
        return Some(i);
    }
    let mut it = reg
        .funcs
        .iter()
        .enumerate()
        .filter(|(_, f)| f.loaded && f.ident == name);
    match (it.next(), it.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    }
}

/// Latency of one function over every call completed while it was enabled:
/// `name` is a full path, or a function's own name when that is unique.
/// `None` if no such function exists or it has no completed call.
pub fn latency(name: &str) -> Option<LatencySummary> {
    let rt = runtime().ok()?;
    let f = lookup(&rt.state().reg, name)?;
    let mut c = collect::lock();
    c.drain_all();
    let t = c.totals(f);
    if t.count == 0 {
        return None;
    }
    // None: no call was drained here (an attached reader took the events).
    let h = c.hist(f).filter(|h| !h.is_empty());
    let (mut min, mut max) = (clock::to_ns(t.min), clock::to_ns(t.max));
    if min > max {
        // A call completed while `reset` restarted the extremes: take them
        // from the histogram until the next call sets them again.
        min = h.map_or(0, |h| h.min());
        max = h.map_or(0, |h| h.max()).max(min);
    }
    let q = |p: f64| h.map_or(0, |h| h.quantile(p).clamp(min, max));
    Some(LatencySummary {
        count: t.count,
        min,
        p50: q(0.50),
        p90: q(0.90),
        p99: q(0.99),
        p999: q(0.999),
        max,
        mean: clock::to_ns(t.sum / t.count),
        lost: t.count.saturating_sub(h.map_or(0, |h| h.count())),
    })
}

/// One bucket of a log2 histogram: durations in `[low, high)` ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Inclusive lower bound, ns.
    pub low: u64,
    /// Exclusive upper bound, ns.
    pub high: u64,
    /// Calls in the bucket.
    pub count: u64,
}

/// The latency distribution of one function in power-of-two buckets (as
/// ftrace hist triggers and bpftrace draw them), from the first to the last
/// non-empty bucket. `None` as for [`latency`].
pub fn log2_histogram(name: &str) -> Option<Vec<Bucket>> {
    let rt = runtime().ok()?;
    let f = lookup(&rt.state().reg, name)?;
    let mut c = collect::lock();
    c.drain_all();
    let h = c.hist(f).filter(|h| !h.is_empty())?;
    let mut buckets: Vec<Bucket> = (0..64)
        .map(|i| Bucket {
            low: if i == 0 { 0 } else { 1u64 << i },
            high: 1u64 << (i + 1).min(63),
            count: 0,
        })
        .collect();
    for (low, _, n) in h.buckets() {
        let i = (63 - low.max(1).leading_zeros()) as usize;
        buckets[i].count += n;
    }
    let first = buckets.iter().position(|b| b.count > 0)?;
    let last = buckets.iter().rposition(|b| b.count > 0)?;
    Some(buckets[first..=last].to_vec())
}

/// Forget all latency data collected so far.
pub fn reset() {
    if runtime().is_ok() {
        collect::lock().reset();
    }
}

/// Ring capacity, in events, for threads that record their first event from
/// now on (rounded up to a power of two). Also settable with the
/// `TRACER_BUFFER_EVENTS` environment variable. Default 262144 (6 MiB a
/// thread); at least 64, at most 2^26.
pub fn set_buffer_events(events: usize) {
    thread::set_capacity(events);
}

/// Runtime counters, for `status` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Threads that have a ring (live or waiting to be recycled).
    pub threads: usize,
    /// Events dropped because a ring was full, all threads (exited ones too).
    pub dropped: u64,
    /// Exits with no matching entry (their entry ran before enabling).
    pub unmatched: u64,
    /// Events skipped because the thread was already inside the tracer.
    pub nested: u64,
    /// Traps of in-flight sites whose new instruction was emulated.
    pub traps_emulated: u64,
    /// Traps of in-flight sites skipped as no-ops.
    pub traps_skipped: u64,
    /// Late traps rewound (the trap was gone when the handler ran).
    pub traps_rewound: u64,
    /// Traps that were not the tracer's, passed on.
    pub traps_foreign: u64,
    /// Clock in use: `tsc` or `monotonic`.
    pub clock: &'static str,
    /// How cores are synchronised.
    pub sync: &'static str,
    /// Ring capacity for new threads, in events.
    pub buffer_events: usize,
    /// Bytes mapped for thread blocks (rings, counters, shadow stacks).
    pub buffer_bytes: usize,
    /// `lean` when the trampolines skip the vector-register save (the hooks
    /// were verified not to need it), else `full-save`.
    pub trampoline: &'static str,
    /// Why the full save is needed, when it is.
    pub full_save_reason: Option<String>,
    /// How exits of compiler-padded functions are seen: `hooked` (return
    /// addresses), or `entry-only: ...` with the reason (CET or arm64 GCS
    /// shadow stacks).
    pub returns: &'static str,
    /// Hooked returns given back to an exception or forced unwind (their
    /// exits were not recorded).
    pub unwound: u64,
    /// GCC pads of five 1-byte NOPs converted to one 5-byte NOP at start-up.
    pub converted_pads: usize,
}

/// Runtime counters.
pub fn stats() -> Stats {
    use std::sync::atomic::Ordering::Relaxed;
    let _ = runtime();
    let mut s = Stats {
        clock: clock::source(),
        sync: text::sync_mode_name(),
        buffer_events: thread::capacity(),
        trampoline: if thread::LEAN.load(Relaxed) {
            "lean"
        } else {
            "full-save"
        },
        full_save_reason: HOOK_CHECK.get().cloned().flatten(),
        traps_emulated: trap::EMULATED.load(Relaxed),
        traps_skipped: trap::SKIPPED.load(Relaxed),
        traps_rewound: trap::REWOUND.load(Relaxed),
        traps_foreign: trap::FOREIGN.load(Relaxed),
        returns: whole::returns_mode(),
        #[cfg(target_arch = "x86_64")]
        converted_pads: whole::CONVERTED.load(Relaxed),
        ..Stats::default()
    };
    if runtime().is_ok() {
        let c = collect::lock();
        s.dropped = c.retired_drops[0];
        s.unmatched = c.retired_drops[1];
        s.nested = c.retired_drops[2];
    }
    for t in thread::all() {
        if t.owner.load(Relaxed) != 0 {
            s.threads += 1;
            s.buffer_bytes += thread::block_len(t);
            s.dropped += t.ring.dropped();
            s.unmatched += t.unmatched.load(Relaxed);
            s.nested += t.nested.load(Relaxed);
            s.unwound += t.unwound.load(Relaxed);
        }
    }
    s
}

#[doc(hidden)]
pub mod __private {
    //! Used by the code `#[traceable]` generates. Not a public API.
    pub use tracer_core::site::{clean_path, FnDesc};

    #[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
    pub use tracer_arch_arm::{
        __tracer_async_entry_pad as async_entry_pad, __tracer_async_exit_pad as async_exit_pad,
        __tracer_entry_pad as entry_pad, __tracer_exit_pad as exit_pad,
    };
    #[cfg(target_arch = "x86_64")]
    pub use tracer_arch_x86::{
        __tracer_async_entry_pad as async_entry_pad, __tracer_async_exit_pad as async_exit_pad,
        __tracer_entry_pad as entry_pad, __tracer_exit_pad as exit_pad,
    };

    /// What the runtime's ELF constructor does (the preload library calls it
    /// from its own): convert GCC's NOP pads while single-threaded, start the
    /// agent, apply `TRACER_ENABLE`. Runs once however often it is called.
    pub fn start() {
        #[cfg(target_os = "linux")]
        crate::agent_constructor();
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
        #[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
        crate::arch::flush_icache(start, end);
        let _ = (start, end);
    }

    /// For tests: the registry index of a function (as in events' `func`).
    pub fn func_index(name: &str) -> Option<u32> {
        let rt = crate::runtime().ok()?;
        crate::lookup(&rt.state().reg, name).map(|i| i as u32)
    }

    /// For tests: see every event the collector drains, with the thread id.
    pub fn set_event_tap(tap: Option<crate::collect::EventTap>) {
        if crate::runtime().is_ok() {
            crate::collect::lock().tap = tap;
        }
    }

    /// For tests: drain every ring now.
    pub fn drain() {
        if crate::runtime().is_ok() {
            crate::collect::lock().drain_all();
        }
    }

    pub use tracer_core::event::{Event, KIND_ENTRY, KIND_EXIT};

    /// For tests: how many functions have a latency histogram (one is made
    /// at a function's first completed call, not at registration).
    pub fn histograms_made() -> usize {
        if crate::runtime().is_err() {
            return 0;
        }
        crate::collect::lock().hists.iter().flatten().count()
    }

    /// What the preload library's `dlsym` and `dlopen` shims call first
    /// (a tail call from a hooked function gets its real caller back).
    #[cfg(all(
        any(target_arch = "x86_64", target_arch = "aarch64"),
        target_os = "linux"
    ))]
    pub use crate::whole::dl_caller_prep;
    #[cfg(all(target_arch = "aarch64", target_os = "linux"))]
    pub use crate::whole::DlBranch;
    /// The stack walks the preload library exports (x86-64: hooked returns
    /// are given back around the walk).
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    pub use crate::whole::{backtrace, unwind_backtrace, UnwindStep};
    /// The unwinder entry points the preload library exports (they give the
    /// thread's hooked return addresses back, then call the real ones).
    #[cfg(all(
        any(target_arch = "x86_64", target_arch = "aarch64"),
        target_os = "linux"
    ))]
    pub use crate::whole::{
        unwind_delete, unwind_forced, unwind_raise, unwind_resume, unwind_rethrow,
        unwind_thread_exit,
    };

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
        if let Err(e) = crate::runtime() {
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
        let Ok(rt) = crate::runtime() else {
            return Vec::new();
        };
        let st = rt.state();
        let Some(f) = crate::lookup(&st.reg, name) else {
            return Vec::new();
        };
        st.reg.funcs[f]
            .sites
            .iter()
            .map(|&s| (st.reg.sites[s].addr, st.reg.sites[s].kind))
            .collect()
    }
}

#[cfg(test)]
mod summary_tests {
    use super::LatencySummary;

    #[test]
    fn a_summary_without_percentiles_says_so() {
        let mut s = LatencySummary {
            count: 10,
            min: 5,
            max: 50,
            mean: 20,
            lost: 10,
            ..Default::default()
        };
        assert!(!s.has_percentiles());
        let text = s.to_string();
        assert!(text.contains("no percentiles here"), "{text}");
        assert!(!text.contains("p50=0"), "{text}");
        s.lost = 4;
        s.p50 = 18;
        let text = s.to_string();
        assert!(
            text.contains("p50=18ns") && text.contains("percentiles of 6 calls"),
            "{text}"
        );
    }
}
