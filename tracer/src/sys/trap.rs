//! The SIGTRAP handler.
//!
//! While a batch is in flight its sites hold trap instructions; a thread that
//! runs into one lands here. The handler asks the backend what to do
//! (`Backend::on_trap`): emulate the new instruction or skip the site, rewind
//! a late trap whose trap byte is already gone, or pass on a trap that is not
//! ours to the handler installed before this one (or to the default action).
//!
//! The batch's table and the list of registered sites are published through
//! atomic pointers. Handlers count themselves in and out around their use of
//! them, and [`publish`] retracts a table by swapping in null and then
//! waiting until no handler is counted in, so a table is never freed under a
//! running handler. The protocol is `tracer_core::publish` (documented and
//! loom-checked there); this file only holds its two tables and its count.
//!
//! The handler is installed with `SA_NODEFER`, so a trap inside a chained
//! handler does not meet a blocked SIGTRAP (which the kernel would turn into
//! the default action: a core dump).

use crate::arch::{self, Arch};
use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use tracer_core::backend::{Backend, InflightSite, TrapKind, TrapOutcome, TrapPolicy};
use tracer_core::publish::{Published, Readers};

/// Handlers counted in: they may be reading [`INFLIGHT`] or [`SITES`].
static ACTIVE: Readers = Readers::new();
/// The table of the batch in flight, sorted by address.
static INFLIGHT: Published<'static, std::sync::Arc<Vec<InflightSite>>> = Published::new(&ACTIVE);
static INSTALLED: AtomicBool = AtomicBool::new(false);
static POLICY: AtomicU8 = AtomicU8::new(0);

/// Counters of what the handler did.
pub static EMULATED: AtomicU64 = AtomicU64::new(0);
/// Traps skipped as no-ops.
pub static SKIPPED: AtomicU64 = AtomicU64::new(0);
/// Late traps rewound.
pub static REWOUND: AtomicU64 = AtomicU64::new(0);
/// Traps passed on.
pub static FOREIGN: AtomicU64 = AtomicU64::new(0);

struct OldAction(UnsafeCell<MaybeUninit<libc::sigaction>>);
// SAFETY: written once in `install` before INSTALLED is set (Release), only
// read after INSTALLED is observed (Acquire).
unsafe impl Sync for OldAction {}
static OLD: OldAction = OldAction(UnsafeCell::new(MaybeUninit::uninit()));
/// The SIGILL action before ours (ARMv7 only, see [`install`]).
static OLD_ILL: OldAction = OldAction(UnsafeCell::new(MaybeUninit::uninit()));
static ILL_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Test hook: when non-zero, the handler spins this many iterations before
/// it reads the table, so the batch can finish before it looks (a late trap).
pub static TEST_HANDLER_DELAY: AtomicU64 = AtomicU64::new(0);

/// Set the policy for in-flight traps.
pub fn set_policy(p: TrapPolicy) {
    POLICY.store(
        match p {
            TrapPolicy::Emulate => 0,
            TrapPolicy::Skip => 1,
        },
        Ordering::Relaxed,
    );
}

/// The policy in force.
pub fn policy() -> TrapPolicy {
    if POLICY.load(Ordering::Relaxed) == 0 {
        TrapPolicy::Emulate
    } else {
        TrapPolicy::Skip
    }
}

/// Install the handler (once). Keeps the previous action for chaining.
pub fn install() -> Result<(), String> {
    if INSTALLED.load(Ordering::Acquire) {
        return Ok(());
    }
    // SAFETY: a zeroed sigaction is a valid value to fill in; `handler` has
    // the SA_SIGINFO signature; OLD is written before INSTALLED is released.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER | libc::SA_RESTART | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        let old = (*OLD.0.get()).as_mut_ptr();
        if libc::sigaction(libc::SIGTRAP, &sa, old) != 0 {
            return Err(format!(
                "cannot install the SIGTRAP handler: {}",
                std::io::Error::last_os_error()
            ));
        }
        // ARMv7: the kernel (and qemu) decide between SIGTRAP and SIGILL by
        // reading the undefined instruction *after* the trap. If the patcher
        // put the real half-word back meanwhile, the thread gets SIGILL at a
        // site whose bytes are fine: a late trap in another guise. So SIGILL
        // at a registered site goes through the same rules (rewind), and any
        // other SIGILL is passed on.
        if cfg!(target_arch = "arm") {
            let old_ill = (*OLD_ILL.0.get()).as_mut_ptr();
            if libc::sigaction(libc::SIGILL, &sa, old_ill) == 0 {
                ILL_INSTALLED.store(true, Ordering::Release);
            }
        }
    }
    // A child forked while handlers ran on other threads inherits their
    // count but not the threads: start it from zero there. (The table stays:
    // sites the parent had in flight are still trapped in the child.)
    extern "C" fn after_fork_in_child() {
        // SAFETY: in the child only the forking thread runs, outside any
        // handler: no handler counted in is still running.
        unsafe { ACTIVE.reset() };
    }
    // SAFETY: registering a plain function as a fork handler.
    unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    INSTALLED.store(true, Ordering::Release);
    Ok(())
}

/// Is our handler still the SIGTRAP action?
pub fn handler_is_ours() -> bool {
    // SAFETY: querying the current action with a null new action.
    unsafe {
        let mut cur: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGTRAP, std::ptr::null(), &mut cur) == 0
            && cur.sa_sigaction == handler as *const () as usize
    }
}

/// The sorted addresses of every registered site.
static SITES: Published<'static, Vec<usize>> = Published::new(&ACTIVE);

/// Publish the sorted addresses of every registered site (the handler
/// rewinds a late trap only at one of them); the old list is freed once no
/// handler can be reading it.
pub fn publish_sites(addrs: Vec<usize>) {
    SITES.replace(Some(Box::new(addrs)));
}

/// Publish a batch's table (`Some`; sorted by address, as the engine makes
/// it), or retract it (`None`) and wait until no handler still uses it. The
/// engine keeps its own reference meanwhile, so no handler ever frees it.
pub fn publish(table: Option<std::sync::Arc<Vec<InflightSite>>>) {
    debug_assert!(table
        .as_ref()
        .is_none_or(|t| t.windows(2).all(|w| w[0].addr < w[1].addr)));
    let table = table.map(Box::new);
    let retract = table.is_none();
    if !INFLIGHT.replace(table) && retract {
        // Nothing to free, but the caller counts on no handler running.
        ACTIVE.wait_idle();
    }
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo.
    let code = unsafe { (*info).si_code };
    if (sig == libc::SIGTRAP && code == arch::TRAP_SI_CODE) || sig == libc::SIGILL {
        // Tests widen the window between the trap and the handler's first
        // look at the table, as a slow signal delivery would.
        let spins = TEST_HANDLER_DELAY.load(Ordering::Relaxed);
        for _ in 0..spins {
            std::hint::spin_loop();
        }
        let guard = ACTIVE.enter();
        // The tables stay alive while `guard` counts us in (see publish).
        let sites: &[InflightSite] = INFLIGHT.get(&guard).map_or(&[], |t| t.as_slice());
        let registered = SITES.get(&guard);
        // SAFETY: `uc` is the ucontext of an SA_SIGINFO handler.
        let ctx = unsafe { arch::context(uc) };
        let is_site = |a: usize| registered.is_some_and(|r| r.binary_search(&a).is_ok());
        let read = |a: usize, buf: &mut [u8]| {
            if is_site(a) || sites.iter().any(|s| s.addr == a) {
                // SAFETY: a registered site or one of the batch's is mapped
                // text.
                unsafe { arch::read_text(a, buf) }
            } else {
                buf.fill(0)
            }
        };
        let (out, kind) = Arch::on_trap(&ctx, sites, &is_site, &read, policy());
        drop(guard);
        match kind {
            TrapKind::Emulated => &EMULATED,
            TrapKind::Skipped => &SKIPPED,
            TrapKind::Rewound => &REWOUND,
            TrapKind::Foreign => &FOREIGN,
        }
        .fetch_add(1, Ordering::Relaxed);
        if out != TrapOutcome::NotOurs {
            // SAFETY: `out` comes from the backend for this very context.
            unsafe { arch::resume(uc, &out) };
            return;
        }
    } else {
        FOREIGN.fetch_add(1, Ordering::Relaxed);
    }
    chain(sig, info, uc);
}

fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let slot = if sig == libc::SIGILL && ILL_INSTALLED.load(Ordering::Acquire) {
        &OLD_ILL
    } else {
        &OLD
    };
    // SAFETY: the slot was filled in before the handler could run for `sig`.
    let old = unsafe { (*slot.0.get()).assume_init_ref() };
    let h = old.sa_sigaction;
    if h == libc::SIG_IGN {
        return;
    }
    if h == libc::SIG_DFL {
        // The default action of SIGTRAP is to dump core: restore it and let
        // the signal take its course, as if we had never been installed.
        // SAFETY: plain libc calls on our own process.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
        }
        return;
    }
    // SAFETY: calling the previously installed handler with the signature
    // its flags declare.
    unsafe {
        if old.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(h);
            f(sig, info, uc);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(h);
            f(sig);
        }
    }
}

/// Start one of the tracer's own threads (collector, agent) and wait until it
/// runs its own code. A thread being created runs with every signal blocked
/// (glibc's `pthread_create`), so until then it counts as a thread blocking
/// SIGTRAP and an `enable` right after start would be refused because of
/// the tracer's own threads. The wait is bounded (a new thread that needs a
/// lock its creator holds, as in a library constructor, is not waited for).
pub fn spawn_own_thread<F>(name: &str, f: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    spawn_own_thread_waiting(name, f, std::time::Duration::from_millis(500))
}

/// [`spawn_own_thread`], waiting at most `wait` for the thread to run.
pub fn spawn_own_thread_waiting<F>(
    name: &str,
    f: F,
    wait: std::time::Duration,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    // A flag and a sleep rather than a channel: this runs in the ELF
    // constructor, before `main`, where a blocking `recv` would park the
    // thread through `thread::current()`, which std refuses before `main`
    // (it aborts the process).
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = running.clone();
    let h = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            flag.store(true, Ordering::Release);
            f()
        })?;
    let t0 = std::time::Instant::now();
    while !running.load(Ordering::Acquire) && t0.elapsed() < wait {
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
    Ok(h)
}

/// Is this the helper thread of qemu-user (named after the emulator, e.g.
/// `qemu-arm`, and not the main thread)? qemu's RCU thread shows up in
/// `/proc/self/task` of an emulated program with every signal blocked, but it
/// never runs the program's code, so it can never meet a site.
fn is_emulator_thread(tid: i32, name: &str) -> bool {
    // SAFETY: getpid has no preconditions.
    name.starts_with("qemu-") && tid != unsafe { libc::getpid() }
}

/// A thread that blocks SIGTRAP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockingThread {
    /// Its kernel thread id.
    pub tid: i32,
    /// Its name.
    pub name: String,
}

/// Threads of this process that block SIGTRAP now. A trap in such a thread
/// makes the kernel reset SIGTRAP to its default action and kill the process,
/// so batches that plant traps are refused while any exists.
pub fn threads_blocking_sigtrap() -> Vec<BlockingThread> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    let bit: u64 = 1 << (libc::SIGTRAP - 1);
    for e in dir.flatten() {
        let path = e.path();
        let Ok(status) = std::fs::read_to_string(path.join("status")) else {
            continue; // the thread exited meanwhile
        };
        let mut name = String::new();
        let mut blocked = false;
        for l in status.lines() {
            if let Some(v) = l.strip_prefix("Name:") {
                name = v.trim().to_string();
            } else if let Some(v) = l.strip_prefix("SigBlk:") {
                blocked = u64::from_str_radix(v.trim(), 16).is_ok_and(|m| m & bit != 0);
            }
        }
        let tid: i32 = e.file_name().to_string_lossy().parse().unwrap_or(0);
        if blocked && !is_emulator_thread(tid, &name) {
            out.push(BlockingThread { tid, name });
        }
    }
    out
}
