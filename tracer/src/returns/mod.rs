//! Compiler-padded functions: their entries and how their exits are seen
//! (x86-64 and AArch64; on ARMv7 only `#[traceable]` functions are traced,
//! see `unsupported.rs`).
//!
//! **Entries.** An enabled compiler pad calls its function's entry stub
//! (`crate::veneer::entry_stub`: function index pushed, jump to
//! `__tracer_v1_tramp_fentry`). On AArch64 the pad's first `NOP` becomes
//! `B stub` (`tracer_arch_arm::Aarch64Entry`: a `B` leaves the caller's
//! return address in `x30`); the per-site stub loads the function index
//! into `w16` and the resume address into `x17` and branches to the
//! AArch64 `__tracer_v1_tramp_fentry` (`tracer_arch_arm`'s
//! `__tracer_define_fentry_trampolines!`), which passes the hook the
//! address of the saved `x30` and the entry stack pointer, the frame's key.
//!
//! **Exits** are seen by hooking the return address, as ftrace's
//! function_graph does: the entry hook saves the caller's return address on
//! the thread's shadow stack and replaces it with the return trampoline's
//! (`crate::thread::on_fentry` / `on_fret`). `longjmp` and exceptions leave
//! shadow frames behind; they are dropped as stale by the next entry at or
//! above them on the same stack. The unwinder must see real return
//! addresses to find its tables, so its entry points are interposed (a weak
//! definition in the program, an exported one in the preload library; each
//! calls the real one through `dlsym(RTLD_NEXT)` after):
//! `_Unwind_RaiseException` and `_Unwind_Resume_or_Rethrow` give every
//! hooked return of the thread back, find the frame that will catch the
//! exception by running the search phase themselves (each frame's
//! personality routine asked through `_Unwind_Backtrace`, as libgcc does
//! first), and hook again that frame and the ones above it, which the unwind
//! never reads; `_Unwind_Resume` (the end of a cleanup) gives back only what
//! lies below the catching frame (each exception's own: one thrown and
//! caught inside a cleanup of another has its own limit);
//! `_Unwind_ForcedUnwind` gives back everything. glibc reaches libgcc's
//! `_Unwind_ForcedUnwind` by its own handle, past the interposers, so the
//! preload library also exports `pthread_exit`, which gives everything back
//! first. A thread cancelled (`pthread_cancel`) is unwound from inside glibc,
//! past every interposer: the return trampoline's own unwind information
//! finds each hooked frame's real return address on the shadow stacks (and
//! on x86-64 its personality routine, `fret_personality`, gives it back
//! into the frame's slot first). The frames the unwind goes through
//! have no recorded exit (`unwound` in the stats). Frames given back that
//! survive after all are hooked again at `_Unwind_DeleteException` (the end
//! of a C++ `catch`) or at the next traced entry. On AArch64 the return
//! address lives wherever the function's prologue saved `x30`, which only
//! the unwinder knows: the interposers' own search walk
//! (`_Unwind_Backtrace`) stores the real return address through the
//! unwinder's context (`_Unwind_SetGR(ctx, 30, ..)` writes the frame's save
//! slot) each time it meets the trampoline, then walks again; it stops at
//! the catching frame, so the frames that survive keep their hooks and
//! nothing needs hooking again. A frame that signs its return address
//! (pac-ret) saved the trampoline's address signed, and the unwinder
//! authenticates it: the real one goes back signed with the same key and
//! modifier. Where CET shadow
//! stacks are active a changed return address would kill the process, so
//! returns are not hooked there: entry events only (`status` says so).

#[cfg(target_os = "linux")]
mod dl_caller;
#[cfg(target_os = "linux")]
mod unwind;

use crate::{arch, thread};
use std::sync::atomic::{AtomicUsize, Ordering};

extern "C" {
    fn __tracer_v1_tramp_fentry();
    fn __tracer_v1_tramp_fret();
}

static RETURNS: AtomicUsize = AtomicUsize::new(0);

/// Why returns stopped being hooked when an object with its own unwinder
/// turned up (mode 4).
static OWN_UNWINDER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[cfg(target_os = "linux")]
extern "C" {
    /// The runtime's weak `_Unwind_RaiseException` (same address).
    static __tracer_v1_unwind_raise: u8;
}

/// An object with compiler pads defines its own `_Unwind_RaiseException`
/// (linked with `-static-libgcc`): its exceptions never pass the runtime's
/// interposers, so a hooked return would make them fail. From now on
/// returns are not hooked (frames hooked already still return normally).
pub(crate) fn own_unwinder(path: &str, at: usize) {
    #[cfg(target_os = "linux")]
    let ours = std::ptr::addr_of!(__tracer_v1_unwind_raise) as usize;
    #[cfg(not(target_os = "linux"))]
    let ours = 0;
    if at == ours || RETURNS.load(Ordering::Acquire) != 1 {
        return;
    }
    let why = format!(
        "entry-only: {path} has its own copy of the unwinder (linked with -static-libgcc), whose \
         exceptions would meet hooked returns; link libgcc_s dynamically to see exits"
    );
    eprintln!("tracer: note: returns are not hooked: {why}");
    let _ = OWN_UNWINDER.set(why);
    thread::FRET.store(0, Ordering::Release);
    thread::FRET_ARGS.store(0, Ordering::Release);
    RETURNS.store(4, Ordering::Release);
}

/// How exits of compiler-padded functions are seen, for `status`.
pub fn returns_mode() -> &'static str {
    match RETURNS.load(Ordering::Relaxed) {
        1 => "hooked",
        2 => arch::SHADOW_STACK_ENTRY_ONLY,
        3 => "entry-only: TRACER_NO_RETURN_HOOK is set",
        4 => OWN_UNWINDER.get().map_or("entry-only", |s| s.as_str()),
        _ => "not set up yet",
    }
}

/// Decide whether returns are hooked (once, at start).
pub fn init_returns() {
    let mode = if arch::shadow_stack_active() {
        2
    } else if std::env::var_os("TRACER_NO_RETURN_HOOK").is_some() {
        3
    } else {
        per_arch::set_capture_return_trampoline();
        thread::FRET.store(
            __tracer_v1_tramp_fret as *const () as usize,
            Ordering::Release,
        );
        1
    };
    RETURNS.store(mode, Ordering::Release);
}

/// What an enabled compiler pad at `site` of function `func` calls.
pub fn entry_stub(site: usize, func: u32) -> Result<usize, String> {
    crate::veneer::entry_stub(site, func, __tracer_v1_tramp_fentry as *const () as usize)
}

// The architecture's side: capture trampolines, the return trampoline's
// personality routine (x86-64), the `dlsym`/`dlopen` shims' entry, and
// what the preload library exports.
crate::sys::per_arch! {
    "x86_64": "x86_64.rs", "aarch64": "aarch64.rs";
    pub(crate) mod per_arch;
}
pub use per_arch::{capture_stub, exports};
