//! Whole programs: functions whose pads a compiler inserted.
//!
//! **Discovery.** The objects of the process are listed with
//! `dl_iterate_phdr` and their pad tables read (`crate::discover`). The
//! registry follows `dlopen` and `dlclose`: the loader's add/remove counters
//! are compared on every use of the registry (every API call and agent
//! request), and objects that appeared are scanned, objects that went away
//! dropped. The tracer's own code is never listed: functions of its crates,
//! and every function they can call directly (a pad in code the SIGTRAP
//! handler or a hook runs would trap inside the handler).
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
//!
//! **GCC's five 1-byte NOPs** (`-fpatchable-function-entry=5` with GCC) cannot
//! be swapped live: a thread preempted between two of them would resume in
//! the middle of the new instruction. They are turned into one 5-byte NOP by
//! the runtime's ELF constructor, before `main`, when the process has exactly
//! one thread (so no other thread can be executing them). Objects loaded later,
//! or a process that already had threads then, keep them, and those
//! functions are listed with the reason. AArch64 has no such pads (every
//! instruction is 4 bytes): nothing is converted there.
//!
//! **The tracer's own functions** are excluded by path prefix, and on
//! x86-64 also everything they can call directly (a reachability walk
//! decoded with iced-x86); AArch64 has the prefix list and the hooks only.

use crate::State;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use crate::{arch, collect, discover, thread, trap};
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use std::collections::HashSet;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use std::sync::Mutex;

/// Path prefixes of the tracer's own functions.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const OWN: &[&str] = &[
    "tracer::",
    "tracer_core::",
    "tracer_arch_x86::",
    "tracer_arch_arm::",
    "tracer_preload::",
    "<tracer",
    "__tracer",
];

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
extern "C" {
    fn __tracer_v1_tramp_fentry();
    fn __tracer_v1_tramp_fret();
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
static RETURNS: AtomicUsize = AtomicUsize::new(0);

/// Why returns stopped being hooked when an object with its own unwinder
/// turned up (mode 4).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
static OWN_UNWINDER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[cfg(all(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    target_os = "linux"
))]
extern "C" {
    /// The runtime's weak `_Unwind_RaiseException` (same address).
    static __tracer_v1_unwind_raise: u8;
}

/// An object with compiler pads defines its own `_Unwind_RaiseException`
/// (linked with `-static-libgcc`): its exceptions never pass the runtime's
/// interposers, so a hooked return would make them fail. From now on
/// returns are not hooked (frames hooked already still return normally).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn own_unwinder(path: &str, at: usize) {
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
    RETURNS.store(4, Ordering::Release);
}

/// The return trampoline's personality routine (x86-64; the trampoline's
/// unwind information is in `tracer_arch_x86`'s
/// `__tracer_define_fentry_trampolines!`). libgcc calls it for the frame of
/// a hooked return that an unwind walks through before it reads that
/// frame's caller from the slot: an exception or a forced unwind that no
/// interposer saw first, above all a thread cancelled with
/// `pthread_cancel`, which glibc unwinds through libgcc by its own handle.
/// The frame's real return address goes back into its slot (the frame is
/// counted as unwound) and the unwind goes on to the real caller. The
/// context's CFA is the traced function's (the unwinder has not stepped
/// past the trampoline yet): its return address slot is just below.
///
/// # Safety
/// Only the unwinder calls it, with its context for that frame.
#[cfg(target_arch = "x86_64")]
pub unsafe extern "C" fn fret_personality(
    _version: libc::c_int,
    _actions: libc::c_int,
    _class: u64,
    _exc: *mut libc::c_void,
    ctx: *mut libc::c_void,
) -> libc::c_int {
    const URC_CONTINUE_UNWIND: libc::c_int = 8;
    extern "C" {
        fn _Unwind_GetCFA(ctx: *mut libc::c_void) -> usize;
    }
    let fret = thread::FRET.load(Ordering::Relaxed);
    // SAFETY: `ctx` is the unwinder's context, per the caller.
    let slot = unsafe { _Unwind_GetCFA(ctx) }.wrapping_sub(8);
    if fret != 0 && thread::peek(slot) == Some(fret) {
        if let Some(ret) = thread::give_back_return(slot) {
            thread::restore_slot(slot, fret, ret);
        }
    }
    URC_CONTINUE_UNWIND
}

/// How exits of compiler-padded functions are seen, for `status`.
pub fn returns_mode() -> &'static str {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    return match RETURNS.load(Ordering::Relaxed) {
        1 => "hooked",
        #[cfg(target_arch = "x86_64")]
        2 => "entry-only: CET shadow stacks are active, a changed return address would be fatal",
        #[cfg(target_arch = "aarch64")]
        2 => "entry-only: the Guarded Control Stack is active, a changed return address would be fatal",
        3 => "entry-only: TRACER_NO_RETURN_HOOK is set",
        4 => OWN_UNWINDER.get().map_or("entry-only", |s| s.as_str()),
        _ => "not set up yet",
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    "compiler pads are traced on x86-64 and AArch64 only"
}

/// Decide whether returns are hooked (once, at start).
pub fn init_returns() {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let mode = if arch::shadow_stack_active() {
            2
        } else if std::env::var_os("TRACER_NO_RETURN_HOOK").is_some() {
            3
        } else {
            thread::FRET.store(
                __tracer_v1_tramp_fret as *const () as usize,
                Ordering::Release,
            );
            1
        };
        RETURNS.store(mode, Ordering::Release);
    }
}

/// What an enabled compiler pad at `site` of function `func` calls.
pub fn entry_stub(site: usize, func: u32) -> Result<usize, String> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    return crate::veneer::entry_stub(site, func, __tracer_v1_tramp_fentry as *const () as usize);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (site, func);
        Err(String::from(
            "compiler pads are traced on x86-64 and AArch64 only",
        ))
    }
}

/// Objects scanned that have no pads, or could not be read: not again.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
static NO_PADS: Mutex<Option<HashSet<(String, usize)>>> = Mutex::new(None);

/// Threads the process had when the constructor ran (0: it has not run).
#[cfg(target_arch = "x86_64")]
static STARTUP_THREADS: AtomicUsize = AtomicUsize::new(0);
/// GCC pads converted at start-up.
#[cfg(target_arch = "x86_64")]
pub static CONVERTED: AtomicUsize = AtomicUsize::new(0);

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn read_live(a: usize, buf: &mut [u8]) {
    // SAFETY: callers read only the pad tables and code of loaded objects,
    // which are mapped.
    unsafe { arch::read_text(a, buf) }
}

/// Why a pad of five 1-byte NOPs in `path` stays unusable.
#[cfg(target_arch = "x86_64")]
fn gcc_reason() -> String {
    let why = match STARTUP_THREADS.load(Ordering::Relaxed) {
        0 => String::from("the tracer's start-up conversion did not run"),
        1 => String::from("the object was loaded after start-up (dlopen)"),
        usize::MAX => String::from(
            "its thread count could not be read at start-up (/proc/self/task; is /proc mounted?)",
        ),
        n => format!("the process already had {n} threads at start-up"),
    };
    format!(
        "GCC's pad of five 1-byte NOPs cannot be patched while other threads may be executing it; \
         it is converted to one 5-byte NOP only before main while the process has one thread, and \
         {why}. Build with clang, or with GCC's -pg -mfentry -mnop-mcount -mrecord-mcount -fno-pie -no-pie"
    )
}

/// The sites of an object's functions that the tracer itself may run
/// (its own crates, and what they call directly), by function start.
#[cfg(target_arch = "x86_64")]
fn own_functions(obj: &discover::LoadedObject, funcs: &[discover::FoundFunc]) -> HashSet<usize> {
    let here = own_functions as *const () as usize;
    let in_obj = |a: usize| obj.exec.iter().any(|&(s, e)| a >= s && a < e);
    if !in_obj(here) {
        return HashSet::new();
    }
    let roots: Vec<usize> = funcs
        .iter()
        .filter(|f| OWN.iter().any(|p| f.path.starts_with(p)))
        .map(|f| f.start)
        .chain([
            crate::thread::on_fentry as *const () as usize,
            crate::thread::on_fret as *const () as usize,
            crate::thread::on_entry as *const () as usize,
            crate::thread::on_exit as *const () as usize,
        ])
        .collect();
    let mut out: HashSet<usize> = roots.iter().copied().collect();
    out.extend(tracer_arch_x86::trampoline::reachable_calls(
        &roots, 400_000, &in_obj, &read_live,
    ));
    out
}

/// The sites of an object's functions that the tracer itself may run, by
/// function start: on AArch64 only its own crates' functions (by path
/// prefix, checked by the caller) and the hooks. The reachability walk over
/// direct calls that x86-64 does (iced-x86) has no AArch64 counterpart yet,
/// so a padded function outside the tracer's crates that the hooks call
/// (none in a Rust program built without `-Z patchable-function-entry`)
/// would be listed.
#[cfg(target_arch = "aarch64")]
fn own_functions(obj: &discover::LoadedObject, _: &[discover::FoundFunc]) -> HashSet<usize> {
    let here = own_functions as *const () as usize;
    if !obj.exec.iter().any(|&(s, e)| here >= s && here < e) {
        return HashSet::new();
    }
    [
        crate::thread::on_fentry as *const () as usize,
        crate::thread::on_fret as *const () as usize,
        crate::thread::on_entry as *const () as usize,
        crate::thread::on_exit as *const () as usize,
    ]
    .into_iter()
    .collect()
}

/// Bring the registry up to date with the objects loaded now.
pub(crate) fn refresh(st: &mut State) {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let (objs, adds, subs) = discover::loaded_objects();
        if (adds, subs) == st.loader {
            return;
        }
        st.loader = (adds, subs);
        let gone: Vec<(String, usize)> = st
            .reg
            .objects
            .iter()
            .filter(|(p, b, _)| !objs.iter().any(|o| &o.path == p && o.bias == *b))
            .map(|(p, b, _)| (p.clone(), *b))
            .collect();
        for (p, b) in gone {
            for f in st.reg.remove_object(&p, b) {
                if let Some(e) = st.enabled.get_mut(f as usize) {
                    *e = false;
                }
            }
        }
        let mut no_pads = NO_PADS.lock().unwrap_or_else(|e| e.into_inner());
        let no_pads = no_pads.get_or_insert_with(HashSet::new);
        no_pads.retain(|(p, b)| objs.iter().any(|o| &o.path == p && o.bias == *b));
        for o in &objs {
            let key = (o.path.clone(), o.bias);
            if no_pads.contains(&key)
                || st
                    .reg
                    .objects
                    .iter()
                    .any(|(p, b, _)| p == &o.path && *b == o.bias)
            {
                continue;
            }
            // The program may `dlclose` the object while its tables are read
            // (a thread of its own loading and unloading a library): hold a
            // reference meanwhile; one already gone is skipped.
            let _pin = match Pin::new(o, objs.first()) {
                Some(p) => p,
                None => continue,
            };
            let found = match discover::scan(o, &read_live) {
                Ok(s) if !s.funcs.is_empty() => {
                    if let Some(at) = s.unwinder_at {
                        own_unwinder(&o.path, at);
                    }
                    if s.out_of_range > 0 {
                        eprintln!(
                            "tracer: warning: {} pad table entries of {} point outside its code and \
                             were ignored (was the file replaced after it was loaded?)",
                            s.out_of_range, o.path
                        );
                    }
                    s.funcs
                }
                Ok(_) => {
                    no_pads.insert(key);
                    continue;
                }
                Err(e) => {
                    eprintln!("tracer: warning: {e}; its functions are not traceable");
                    no_pads.insert(key);
                    continue;
                }
            };
            let own = own_functions(o, &found);
            let found: Vec<discover::FoundFunc> = found
                .into_iter()
                .filter(|f| {
                    !own.contains(&f.start)
                        && !own.contains(&f.site)
                        && !OWN.iter().any(|p| f.path.starts_with(p))
                })
                .collect();
            if found.is_empty() {
                no_pads.insert(key);
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            st.reg.add_object(&o.path, o.bias, &found, &gcc_reason);
            // No 1-byte NOPs on AArch64: every instruction is 4 bytes.
            #[cfg(target_arch = "aarch64")]
            st.reg.add_object(&o.path, o.bias, &found, &String::new);
        }
        let n = st.reg.funcs.len();
        st.enabled.resize(n, false);
        // Headroom, so threads made from now on have counters for functions
        // of libraries loaded a little later too.
        thread::reserve((n + 1024).next_multiple_of(1024));
        collect::lock().ensure(n);
        trap::publish_sites(st.reg.addresses());
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = st;
}

/// A reference on a loaded object (`dlopen` with `RTLD_NOLOAD`), so that
/// it stays mapped while the registry reads it; `None` if it is unloaded
/// already. The executable is never unloaded and needs none.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
struct Pin(*mut libc::c_void);

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
impl Pin {
    fn new(o: &discover::LoadedObject, exe: Option<&discover::LoadedObject>) -> Option<Pin> {
        if exe.is_some_and(|e| std::ptr::eq(e, o)) {
            return Some(Pin(std::ptr::null_mut()));
        }
        let path = std::ffi::CString::new(o.path.as_bytes()).ok()?;
        // SAFETY: a NUL-terminated path; RTLD_NOLOAD loads nothing, it only
        // takes a reference on an object loaded already.
        let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        if h.is_null() {
            return None;
        }
        let pin = Pin(h);
        // Still the same copy (not unloaded and loaded again elsewhere)?
        let (now, _, _) = discover::loaded_objects();
        now.iter()
            .any(|n| n.path == o.path && n.bias == o.bias)
            .then_some(pin)
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
impl Drop for Pin {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: a handle `dlopen` returned, closed once.
            unsafe { libc::dlclose(self.0) };
        }
    }
}

/// Number of threads of this process (from `/proc/self/task`).
#[cfg(target_arch = "x86_64")]
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Turn GCC's five 1-byte NOPs into one 5-byte NOP in every loaded object,
/// if this process has one thread. Run by the ELF constructor, before `main`.
pub fn convert_at_startup() {
    #[cfg(target_arch = "x86_64")]
    {
        use tracer_core::engine::TextWriter;
        let threads = thread_count();
        // 0: /proc/self/task could not be read; nothing is converted then.
        STARTUP_THREADS.store(
            if threads == 0 { usize::MAX } else { threads },
            Ordering::Relaxed,
        );
        if threads != 1 {
            return;
        }
        let (objs, _, _) = discover::loaded_objects();
        let mut sites = Vec::new();
        for o in &objs {
            if !discover::has_pads(o) {
                continue;
            }
            // Only objects with GCC's NOP pads need the full scan (which
            // names every function): clang's and -pg's pads are left alone,
            // and start-up stays cheap for them.
            let gcc_nops = discover::pad_sites(o, &read_live).into_iter().any(|s| {
                let mut b = [0u8; 5];
                read_live(s, &mut b);
                b == [0x90; 5]
            });
            if !gcc_nops {
                continue;
            }
            let Ok(scan) = discover::scan(o, &read_live) else {
                continue;
            };
            for f in scan.funcs.iter().filter(|f| f.problem.is_none()) {
                let mut b = [0u8; 5];
                read_live(f.site, &mut b);
                if b == [0x90; 5] {
                    sites.push(f.site);
                }
            }
        }
        if sites.is_empty() {
            return;
        }
        let ranges: Vec<(usize, usize)> = sites.iter().map(|&s| (s, s + 5)).collect();
        let mut w = crate::text::LiveText::default();
        if let Err(e) = w.begin(&ranges) {
            eprintln!("tracer: warning: cannot convert GCC's NOP pads: {e}");
            return;
        }
        for &s in &sites {
            w.write(s, &tracer_arch_x86::NOP5, false);
        }
        if let Err(e) = w.end() {
            eprintln!("tracer: warning: {e}");
        }
        CONVERTED.store(sites.len(), Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// The unwinder: hooked return addresses are given back before it walks.

#[cfg(all(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    target_os = "linux"
))]
mod unwind {
    use std::sync::atomic::{AtomicUsize, Ordering};

    static REAL: [AtomicUsize; 7] = [
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ];
    const NAMES: [&std::ffi::CStr; 7] = [
        c"_Unwind_RaiseException",
        c"_Unwind_ForcedUnwind",
        c"_Unwind_Resume_or_Rethrow",
        c"_Unwind_Resume",
        c"_Unwind_DeleteException",
        c"_Unwind_Backtrace",
        c"pthread_exit",
    ];

    fn real(i: usize) -> usize {
        let mut f = REAL[i].load(Ordering::Acquire);
        if f == 0 {
            // SAFETY: a symbol lookup with a NUL-terminated name.
            f = unsafe { libc::dlsym(libc::RTLD_NEXT, NAMES[i].as_ptr()) } as usize;
            if f == 0 {
                eprintln!(
                    "tracer: fatal: {} not found after the tracer's interposer (no libgcc_s?)",
                    NAMES[i].to_string_lossy()
                );
                std::process::abort();
            }
            REAL[i].store(f, Ordering::Release);
        }
        f
    }

    type Raise = unsafe extern "C" fn(*mut libc::c_void) -> libc::c_int;
    type Forced = unsafe extern "C" fn(
        *mut libc::c_void,
        *mut libc::c_void,
        *mut libc::c_void,
    ) -> libc::c_int;

    /// A stack walk's callback, as `_Unwind_Backtrace` takes it.
    pub type Step = extern "C" fn(*mut libc::c_void, *mut libc::c_void) -> libc::c_int;
    type Backtrace = unsafe extern "C" fn(Step, *mut libc::c_void) -> libc::c_int;

    /// libgcc's `_Unwind_Backtrace` (never the interposer: the search phase
    /// below runs with the returns already given back).
    ///
    /// # Safety
    /// As libgcc's.
    unsafe fn real_backtrace(step: Step, arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: the real function has this signature; per the caller.
        unsafe { std::mem::transmute::<usize, Backtrace>(real(5))(step, arg) }
    }

    // What finding the catching frame needs from libgcc's unwinder (all
    // exported by libgcc_s since GCC 3.0 / 4.2).
    extern "C" {
        fn _Unwind_GetIP(ctx: *mut libc::c_void) -> usize;
        fn _Unwind_GetIPInfo(ctx: *mut libc::c_void, before: *mut libc::c_int) -> usize;
        fn _Unwind_GetCFA(ctx: *mut libc::c_void) -> usize;
        fn _Unwind_Find_FDE(pc: *mut libc::c_void, bases: *mut Bases) -> *const u8;
        #[cfg(target_arch = "aarch64")]
        fn _Unwind_SetGR(ctx: *mut libc::c_void, reg: libc::c_int, value: usize);
        #[cfg(target_arch = "aarch64")]
        fn _Unwind_GetGR(ctx: *mut libc::c_void, reg: libc::c_int) -> usize;
    }

    /// `addr` signed as `raw` (what a frame's prologue stored for the return
    /// trampoline's address `fret`) was: unchanged if `raw` is `fret` itself,
    /// else signed with the same key (A or B) and modifier (`cfa`, the
    /// stack pointer at the function's entry, which `paciasp`/`pacibsp`
    /// used and the unwinder authenticates with). `None` if `raw` is neither.
    #[cfg(target_arch = "aarch64")]
    fn signed_like(raw: usize, fret: usize, addr: usize, cfa: usize) -> Option<usize> {
        if raw == fret {
            return Some(addr);
        }
        let (a_fret, a_addr, b_fret, b_addr): (usize, usize, usize, usize);
        // SAFETY: PACIA1716 / PACIB1716 (HINT #8 / #10, no-ops without
        // pointer authentication) compute a signature into x17 from x17 and
        // x16; no memory is touched.
        unsafe {
            std::arch::asm!("hint #8", inout("x17") fret => a_fret, in("x16") cfa,
                options(nomem, nostack, preserves_flags));
            std::arch::asm!("hint #8", inout("x17") addr => a_addr, in("x16") cfa,
                options(nomem, nostack, preserves_flags));
            std::arch::asm!("hint #10", inout("x17") fret => b_fret, in("x16") cfa,
                options(nomem, nostack, preserves_flags));
            std::arch::asm!("hint #10", inout("x17") addr => b_addr, in("x16") cfa,
                options(nomem, nostack, preserves_flags));
        }
        if raw == a_fret {
            Some(a_addr)
        } else if raw == b_fret {
            Some(b_addr)
        } else {
            None
        }
    }

    #[repr(C)]
    struct Bases {
        text: usize,
        data: usize,
        func: usize,
    }

    type Personality = unsafe extern "C" fn(
        libc::c_int,
        libc::c_int,
        u64,
        *mut libc::c_void,
        *mut libc::c_void,
    ) -> libc::c_int;

    const URC_NO_REASON: libc::c_int = 0;
    const URC_NORMAL_STOP: libc::c_int = 4;
    const URC_HANDLER_FOUND: libc::c_int = 6;
    const UA_SEARCH_PHASE: libc::c_int = 1;

    struct Search {
        exc: *mut libc::c_void,
        class: u64,
        cfa: usize,
        frames: usize,
        /// The interposer's own functions: the frames up to them are the
        /// tracer's, whose landing pads (Rust's abort-on-unwind guard of an
        /// `extern "C"` function) must not be taken for the catch.
        own: [usize; 2],
        past_own: bool,
        /// AArch64: the return trampoline's address (0: returns are not
        /// hooked).
        #[cfg(target_arch = "aarch64")]
        fret: usize,
        /// AArch64: hooked returns of frames whose CFA is at or below this
        /// are given back when the walk meets them; meeting one above it
        /// ends the walk.
        #[cfg(target_arch = "aarch64")]
        give_back_to: usize,
        /// AArch64: this walk gave one hooked return back (and ended there:
        /// walk again to go on).
        #[cfg(target_arch = "aarch64")]
        gave_back: bool,
        /// AArch64: this walk met a hooked return it could not give back.
        #[cfg(target_arch = "aarch64")]
        stuck: bool,
    }

    /// Read a ULEB128 at `*p`, advancing it.
    ///
    /// # Safety
    /// `*p` points into a mapped CIE.
    unsafe fn uleb(p: &mut *const u8) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            // SAFETY: per the caller.
            let b = unsafe { **p };
            *p = p.wrapping_add(1);
            if shift < 64 {
                v |= u64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                return v;
            }
        }
    }

    /// Read a pointer in DWARF EH encoding `enc` at `*p`, advancing it.
    ///
    /// # Safety
    /// `*p` points into a mapped CIE; indirect pointers point at mapped words.
    unsafe fn encoded(enc: u8, p: &mut *const u8, bases: &Bases) -> Option<usize> {
        let at = *p as usize;
        // SAFETY: per the caller (unaligned reads of CIE bytes).
        let v: usize = unsafe {
            match enc & 0x0f {
                0x00 | 0x04 | 0x0c => {
                    let v = (*p as *const u64).read_unaligned() as usize;
                    *p = p.wrapping_add(8);
                    v
                }
                0x03 => {
                    let v = (*p as *const u32).read_unaligned() as usize;
                    *p = p.wrapping_add(4);
                    v
                }
                0x0b => {
                    let v = (*p as *const i32).read_unaligned() as isize as usize;
                    *p = p.wrapping_add(4);
                    v
                }
                0x02 => {
                    let v = usize::from((*p as *const u16).read_unaligned());
                    *p = p.wrapping_add(2);
                    v
                }
                0x0a => {
                    let v = (*p as *const i16).read_unaligned() as isize as usize;
                    *p = p.wrapping_add(2);
                    v
                }
                0x01 => uleb(p) as usize,
                _ => return None,
            }
        };
        let v = match enc & 0x70 {
            0x00 => v,
            0x10 => v.wrapping_add(at),
            0x20 => v.wrapping_add(bases.text),
            0x30 => v.wrapping_add(bases.data),
            0x40 => v.wrapping_add(bases.func),
            _ => return None,
        };
        if enc & 0x80 != 0 {
            // SAFETY: an indirect pointer (to the personality's GOT slot).
            return Some(unsafe { *(v as *const usize) });
        }
        Some(v)
    }

    /// The personality routine of the FDE at `fde` (from its CIE's `P`
    /// augmentation), if it has one.
    ///
    /// # Safety
    /// `fde` is an FDE `_Unwind_Find_FDE` returned.
    unsafe fn personality(fde: *const u8, bases: &Bases) -> Option<Personality> {
        // SAFETY: walking the FDE and its CIE, as the unwinder does.
        unsafe {
            if (fde as *const u32).read_unaligned() == 0xffff_ffff {
                return None; // 64-bit DWARF: not emitted for x86-64 code
            }
            let id_at = fde.add(4);
            let cie = id_at.sub((id_at as *const u32).read_unaligned() as usize);
            let version = *cie.add(8);
            let aug = std::ffi::CStr::from_ptr(cie.add(9) as *const libc::c_char).to_bytes();
            if aug.first() != Some(&b'z') {
                return None;
            }
            let mut p = cie.add(9 + aug.len() + 1);
            uleb(&mut p); // code alignment
            uleb(&mut p); // data alignment (sleb: only skipped)
            if version == 1 {
                p = p.add(1);
            } else {
                uleb(&mut p);
            }
            uleb(&mut p); // augmentation data length
            for &c in &aug[1..] {
                match c {
                    b'P' => {
                        let enc = *p;
                        p = p.add(1);
                        let f = encoded(enc, &mut p, bases)?;
                        return (f != 0).then(|| std::mem::transmute::<usize, Personality>(f));
                    }
                    b'L' | b'R' => p = p.add(1),
                    b'S' | b'B' => {}
                    _ => return None,
                }
            }
            None
        }
    }

    extern "C" fn search_step(ctx: *mut libc::c_void, arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `Search` of `catching_sp`; `ctx` is the
        // unwinder's context for this frame.
        unsafe {
            let s = &mut *(arg as *mut Search);
            s.frames += 1;
            if s.frames > 100_000 {
                return URC_NORMAL_STOP;
            }
            let mut before = 0;
            let ip = _Unwind_GetIPInfo(ctx, &mut before);
            if ip == 0 {
                return URC_NORMAL_STOP;
            }
            // AArch64: the frame below returns into the return trampoline,
            // which has no unwind information, so the unwinder cannot go
            // past it. Give the frame its real return address back, right
            // where its prologue saved `x30` (the context's register 30 is
            // that slot, and `_Unwind_SetGR` stores through it); the caller
            // walks again from the start, and this time gets past it. The
            // context's CFA is the returning frame's CFA: its entry stack
            // pointer, which keys its shadow frame.
            #[cfg(target_arch = "aarch64")]
            if s.fret != 0 && ip == s.fret {
                let key = _Unwind_GetCFA(ctx);
                if key > s.give_back_to {
                    return URC_NORMAL_STOP;
                }
                // A frame built with `-mbranch-protection=pac-ret` saved
                // the trampoline's address signed (its pad comes before
                // `paciasp`), and the unwinder authenticates what it reads
                // there: the real address goes back signed the same way.
                let raw = _Unwind_GetGR(ctx, 30);
                if signed_like(raw, s.fret, 0, key).is_none() {
                    s.stuck = true; // a key or modifier this walk cannot reproduce
                    return URC_NORMAL_STOP;
                }
                match crate::thread::give_back_return(key) {
                    Some(orig) => {
                        // (Register 30 of this context is a pointer to the
                        // returning frame's saved `x30`, on its live stack.)
                        let v = signed_like(raw, s.fret, orig, key).unwrap_or(orig);
                        _Unwind_SetGR(ctx, 30, v);
                        s.gave_back = true;
                    }
                    None => s.stuck = true,
                }
                return URC_NORMAL_STOP;
            }
            if s.exc.is_null() {
                return URC_NO_REASON; // only giving returns back
            }
            let pc = if before != 0 { ip } else { ip - 1 };
            let mut bases = Bases {
                text: 0,
                data: 0,
                func: 0,
            };
            let fde = _Unwind_Find_FDE(pc as *mut libc::c_void, &mut bases);
            if fde.is_null() {
                return URC_NO_REASON;
            }
            if !s.past_own {
                s.past_own = s.own.contains(&bases.func);
                return URC_NO_REASON;
            }
            if let Some(pers) = personality(fde, &bases) {
                if pers(1, UA_SEARCH_PHASE, s.class, s.exc, ctx) == URC_HANDLER_FOUND {
                    s.cfa = _Unwind_GetCFA(ctx);
                    return URC_NORMAL_STOP;
                }
            }
            URC_NO_REASON
        }
    }

    /// Walk the stack as [`catching_sp`] does, giving back (AArch64) every
    /// hooked return met below the catching frame, or, with a null `exc`,
    /// below `give_back_to`; returns the catching frame's stack pointer as
    /// [`catching_sp`] does (`usize::MAX` without `exc`).
    ///
    /// # Safety
    /// `exc` is null or an exception object about to be raised.
    #[cfg(target_arch = "aarch64")]
    unsafe fn walk(exc: *mut libc::c_void, own: [usize; 2], give_back_to: usize) -> usize {
        let fret = crate::thread::FRET.load(Ordering::Relaxed);
        let class = if exc.is_null() {
            0
        } else {
            // SAFETY: `_Unwind_Exception` starts with its 64-bit class.
            unsafe { *(exc as *const u64) }
        };
        let mut s = Search {
            exc,
            class,
            cfa: 0,
            frames: 0,
            own,
            past_own: false,
            fret,
            give_back_to,
            gave_back: false,
            stuck: false,
        };
        // One walk per hooked return given back (each ends at the return
        // trampoline): at most the shadow stack's depth, and a margin.
        for _ in 0..2 * crate::thread::MAX_DEPTH + 16 {
            s.cfa = 0;
            s.frames = 0;
            s.past_own = false;
            s.gave_back = false;
            // SAFETY: `search_step` matches the callback type and uses only `s`.
            unsafe { real_backtrace(search_step, &mut s as *mut Search as *mut libc::c_void) };
            if !s.gave_back || s.stuck {
                break;
            }
        }
        if s.cfa == 0 {
            usize::MAX
        } else {
            s.cfa
        }
    }

    /// The stack pointer of the frame that will catch `exc` (every return
    /// address slot at or above it survives the unwind), found by
    /// the unwinder's own search phase (each frame's personality routine
    /// asked, as `_Unwind_RaiseException` does first), or `usize::MAX` if no
    /// frame catches it (or the interposer's frames `own` are not seen).
    /// Call only with every hooked return given back.
    ///
    /// # Safety
    /// `exc` is an exception object about to be raised.
    #[cfg(target_arch = "x86_64")]
    unsafe fn catching_sp(exc: *mut libc::c_void, own: [usize; 2]) -> usize {
        let mut s = Search {
            exc,
            // SAFETY: `_Unwind_Exception` starts with its 64-bit class.
            class: unsafe { *(exc as *const u64) },
            cfa: 0,
            frames: 0,
            own,
            past_own: false,
        };
        // SAFETY: `search_step` matches the callback type and uses only `s`.
        unsafe { real_backtrace(search_step, &mut s as *mut Search as *mut libc::c_void) };
        // In a backtrace step the context's CFA is the frame's stack
        // pointer at its call (its callee's CFA): the callee's return
        // address slot is just below it and is unwound; the catching
        // frame's own slot, and every slot above, are not.
        if s.cfa == 0 {
            usize::MAX
        } else {
            s.cfa
        }
    }

    /// Before an exception is raised (AArch64): find the frame that will
    /// catch it by the search phase, giving back the hooked returns of the
    /// frames below it on the way (the unwinder cannot walk past the return
    /// trampoline); the catching frame and those above keep their hooks.
    ///
    /// # Safety
    /// `exc` is an exception object about to be raised.
    #[cfg(target_arch = "aarch64")]
    unsafe fn prepare(exc: *mut libc::c_void, own: [usize; 2]) {
        if crate::thread::hooked_returns() == 0 {
            in_flight(exc, usize::MAX);
            return;
        }
        // SAFETY: per the caller.
        let limit = unsafe { walk(exc, own, usize::MAX) };
        in_flight(exc, limit);
    }

    std::thread_local! {
        /// This thread's exceptions being raised or unwound, with the stack
        /// address of the frame that catches each (`usize::MAX`: none, or a
        /// forced unwind). More than one when a destructor run by an unwind
        /// throws and catches an exception of its own.
        static IN_FLIGHT: std::cell::RefCell<Vec<(usize, usize)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Remember that `exc`, being raised, is caught by the frame at `limit`.
    /// Exceptions whose catching frame lies below this point are over (the
    /// catch has returned) and forgotten.
    fn in_flight(exc: *mut libc::c_void, limit: usize) {
        crate::thread::set_unwind_limit(limit);
        let here = 0u8;
        let here = std::hint::black_box(&here) as *const u8 as usize;
        let _ = IN_FLIGHT.try_with(|v| {
            let mut v = v.borrow_mut();
            v.retain(|&(e, l)| e != exc as usize && l > here);
            if v.len() >= 16 {
                v.remove(0);
            }
            v.push((exc as usize, limit));
        });
    }

    /// Where the unwind of `exc` stops (as [`in_flight`] recorded it): each
    /// exception's own limit, not the last raised one's (an exception thrown
    /// and caught inside a cleanup of another must not make the outer
    /// unwind meet hooked returns).
    fn limit_of(exc: *mut libc::c_void) -> usize {
        IN_FLIGHT
            .try_with(|v| {
                v.borrow()
                    .iter()
                    .rev()
                    .find(|&&(e, _)| e == exc as usize)
                    .map(|&(_, l)| l)
            })
            .ok()
            .flatten()
            .unwrap_or_else(crate::thread::unwind_limit)
    }

    /// Give back every hooked return of this thread whose frame lies below
    /// `limit` (`usize::MAX`: all): the unwinder is about to go through them.
    fn give_back_below(limit: usize) {
        #[cfg(target_arch = "x86_64")]
        crate::thread::unhook_returns(limit);
        #[cfg(target_arch = "aarch64")]
        if crate::thread::hooked_returns() != 0 {
            // SAFETY: a walk that only gives returns back (no exception).
            unsafe { walk(std::ptr::null_mut(), [0, 0], limit) };
        }
    }

    /// Before an exception is raised: give every hooked return back, find
    /// the frame that will catch it, and hook again the returns of that
    /// frame and the ones above it, which the unwind does not touch.
    ///
    /// # Safety
    /// As [`catching_sp`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn prepare(exc: *mut libc::c_void, own: [usize; 2]) {
        if crate::thread::unhook_returns(usize::MAX) == 0 {
            // No hooked frame on this thread (the usual case without
            // compiler pads): nothing to search for.
            in_flight(exc, usize::MAX);
            return;
        }
        // SAFETY: per the caller.
        let limit = unsafe { catching_sp(exc, own) };
        if limit != usize::MAX {
            crate::thread::rehook_after_catch(limit - 1);
        }
        in_flight(exc, limit);
    }

    /// `_Unwind_RaiseException`, after `prepare`. `wrapper` is the
    /// function that called this one in place of the unwinder's (the preload
    /// library's export), or 0 (the program's weak definition jumps here).
    ///
    /// # Safety
    /// As the unwinder's own: `exc` is an exception object.
    pub unsafe extern "C" fn raise(exc: *mut libc::c_void, wrapper: usize) -> libc::c_int {
        // SAFETY: per the caller.
        unsafe { prepare(exc, [raise as *const () as usize, wrapper]) };
        // SAFETY: the real function has this signature.
        unsafe { std::mem::transmute::<usize, Raise>(real(0))(exc) }
    }

    /// `_Unwind_ForcedUnwind` (`pthread_cancel`, `pthread_exit`), with every
    /// hooked return of the thread given back.
    ///
    /// # Safety
    /// As the unwinder's own.
    pub unsafe extern "C" fn forced(
        exc: *mut libc::c_void,
        stop: *mut libc::c_void,
        arg: *mut libc::c_void,
    ) -> libc::c_int {
        // Every frame up to the stop function's choice may be unwound.
        give_back_below(usize::MAX);
        in_flight(exc, usize::MAX);
        // SAFETY: the real function has this signature.
        unsafe { std::mem::transmute::<usize, Forced>(real(1))(exc, stop, arg) }
    }

    /// `pthread_exit`: glibc unwinds the thread (running C++ destructors and
    /// cleanup handlers) through libgcc's `_Unwind_ForcedUnwind`, which it
    /// reaches by its own handle, past any interposer; so every hooked
    /// return is given back here first. Exported by the preload library.
    ///
    /// # Safety
    /// As glibc's.
    pub unsafe extern "C" fn thread_exit(value: *mut libc::c_void) -> ! {
        give_back_below(usize::MAX);
        type Exit = unsafe extern "C" fn(*mut libc::c_void) -> !;
        // SAFETY: the real function has this signature.
        unsafe { std::mem::transmute::<usize, Exit>(real(6))(value) }
    }

    /// `_Unwind_Resume_or_Rethrow` (C++ `throw;`): a new raise, after
    /// `prepare`, unless it continues a forced unwind. `wrapper` as for
    /// [`raise`].
    ///
    /// # Safety
    /// As the unwinder's own.
    pub unsafe extern "C" fn rethrow(exc: *mut libc::c_void, wrapper: usize) -> libc::c_int {
        // SAFETY: `_Unwind_Exception` is {class, cleanup, private_1, ...};
        // private_1 is the stop function of a forced unwind.
        if unsafe { *(exc as *const usize).add(2) } != 0 {
            give_back_below(usize::MAX);
            in_flight(exc, usize::MAX);
        } else {
            // SAFETY: per the caller.
            unsafe { prepare(exc, [rethrow as *const () as usize, wrapper]) };
        }
        // SAFETY: the real function has this signature.
        unsafe { std::mem::transmute::<usize, Raise>(real(2))(exc) }
    }

    /// `_Unwind_Resume` (the end of a cleanup landing pad): frames below the
    /// catching one that traced calls in the cleanup hooked again are given
    /// back before the unwind goes on. It does not return.
    ///
    /// # Safety
    /// As the unwinder's own.
    pub unsafe extern "C" fn resume(exc: *mut libc::c_void) {
        // Only below the catching frame: the unwind stops there.
        give_back_below(limit_of(exc));
        type Resume = unsafe extern "C" fn(*mut libc::c_void);
        // SAFETY: the real function has this signature.
        unsafe { std::mem::transmute::<usize, Resume>(real(3))(exc) }
    }

    /// `_Unwind_DeleteException` (a caught foreign or C++ exception is
    /// finished with, at the end of a `catch`): frames given back that
    /// survived are hooked again, where `prepare` could not tell the
    /// catching frame (its search found none; Rust's `catch_unwind` does not
    /// come here, its frame is found by the search).
    ///
    /// # Safety
    /// As the unwinder's own.
    pub unsafe extern "C" fn delete(exc: *mut libc::c_void) {
        type Delete = unsafe extern "C" fn(*mut libc::c_void);
        // SAFETY: the real function has this signature.
        unsafe { std::mem::transmute::<usize, Delete>(real(4))(exc) };
        let _ = IN_FLIGHT.try_with(|v| v.borrow_mut().retain(|&(e, _)| e != exc as usize));
        // AArch64 never takes hooks from frames that survive: nothing to do.
        #[cfg(target_arch = "x86_64")]
        {
            let here = 0u8;
            crate::thread::rehook_after_catch(std::hint::black_box(&here) as *const u8 as usize);
        }
    }

    /// Stack walks (`_Unwind_Backtrace`, glibc's `backtrace`) that see the
    /// real callers: on x86-64, where hooked returns are given back and
    /// hooked again around the walk.
    #[cfg(target_arch = "x86_64")]
    mod stack_walk {
        use super::*;

        /// The function that starts a frame's FDE (0: none).
        ///
        /// # Safety
        /// `ctx` is the unwinder's context of a frame being walked.
        unsafe fn frame_func(ctx: *mut libc::c_void) -> usize {
            let mut before = 0;
            // SAFETY: per the caller.
            let ip = unsafe { _Unwind_GetIPInfo(ctx, &mut before) };
            let pc = if before != 0 { ip } else { ip.wrapping_sub(1) };
            let mut bases = Bases {
                text: 0,
                data: 0,
                func: 0,
            };
            // SAFETY: a lookup by address; `bases` is written only if found.
            if unsafe { _Unwind_Find_FDE(pc as *mut libc::c_void, &mut bases) }.is_null() {
                0
            } else {
                bases.func
            }
        }

        struct Walk {
            step: Step,
            arg: *mut libc::c_void,
            own: [usize; 4],
            past_own: bool,
        }

        extern "C" fn walk_step(ctx: *mut libc::c_void, arg: *mut libc::c_void) -> libc::c_int {
            // SAFETY: `arg` is the `Walk` of `walk`; `ctx` the unwinder's context.
            unsafe {
                let w = &mut *(arg as *mut Walk);
                if !w.past_own {
                    if w.own.contains(&frame_func(ctx)) {
                        return URC_NO_REASON;
                    }
                    w.past_own = true;
                }
                (w.step)(ctx, w.arg)
            }
        }

        /// Walk this thread's stack with `step`, as `_Unwind_Backtrace`, with
        /// the hooked return addresses given back for the walk (so it sees the
        /// real callers, not the return trampoline) and the tracer's own frames
        /// `own` left out of it.
        ///
        /// # Safety
        /// As libgcc's `_Unwind_Backtrace`.
        unsafe fn walk(step: Step, arg: *mut libc::c_void, own: [usize; 2]) -> libc::c_int {
            let mut w = Walk {
                step,
                arg,
                own: [
                    own[0],
                    own[1],
                    walk as *const () as usize,
                    real_backtrace as *const () as usize,
                ],
                past_own: false,
            };
            let gave = crate::thread::unhook_for_walk();
            // SAFETY: `walk_step` matches the callback type and uses only `w`.
            let r = unsafe { real_backtrace(walk_step, &mut w as *mut Walk as *mut libc::c_void) };
            if gave {
                let here = 0u8;
                crate::thread::rehook_after_catch(std::hint::black_box(&here) as *const u8 as usize);
            }
            r
        }

        /// `_Unwind_Backtrace` (Rust's `std::backtrace`, the `backtrace`
        /// crate): the walk sees the real return addresses. `wrapper` as for
        /// [`raise`].
        ///
        /// # Safety
        /// As libgcc's.
        pub unsafe extern "C" fn backtrace_walk(
            step: Step,
            arg: *mut libc::c_void,
            wrapper: usize,
        ) -> libc::c_int {
            // SAFETY: per the caller.
            unsafe { walk(step, arg, [backtrace_walk as *const () as usize, wrapper]) }
        }

        struct Collect {
            buf: *mut *mut libc::c_void,
            size: usize,
            n: usize,
        }

        extern "C" fn collect_step(ctx: *mut libc::c_void, arg: *mut libc::c_void) -> libc::c_int {
            const URC_END_OF_STACK: libc::c_int = 5;
            // SAFETY: `arg` is the `Collect` of `backtrace`, whose buffer has
            // `size` entries; `ctx` is the unwinder's context.
            unsafe {
                let c = &mut *(arg as *mut Collect);
                if c.n >= c.size {
                    return URC_END_OF_STACK;
                }
                *c.buf.add(c.n) = _Unwind_GetIP(ctx) as *mut libc::c_void;
                c.n += 1;
                if c.n == c.size {
                    URC_END_OF_STACK
                } else {
                    URC_NO_REASON
                }
            }
        }

        /// glibc's `backtrace(buf, size)`, which calls libgcc's unwinder
        /// directly (no interposer sees it): the return addresses of the caller
        /// and its callers, real ones, into `buf`. Exported by the preload
        /// library, `wrapper` being its export.
        ///
        /// # Safety
        /// As glibc's: `buf` has room for `size` pointers.
        pub unsafe extern "C" fn backtrace(
            buf: *mut *mut libc::c_void,
            size: libc::c_int,
            wrapper: usize,
        ) -> libc::c_int {
            if buf.is_null() || size <= 0 {
                return 0;
            }
            let mut c = Collect {
                buf,
                size: size as usize,
                n: 0,
            };
            let own = [backtrace as *const () as usize, wrapper];
            // SAFETY: `collect_step` matches the callback type and writes at
            // most `size` entries of `buf`.
            unsafe {
                walk(
                    collect_step,
                    &mut c as *mut Collect as *mut libc::c_void,
                    own,
                )
            };
            // The outermost frame's return address is 0 on some stacks.
            // SAFETY: entries below `c.n` were written.
            if c.n > 1 && unsafe { *buf.add(c.n - 1) }.is_null() {
                c.n -= 1;
            }
            c.n as libc::c_int
        }
    }
    #[cfg(target_arch = "x86_64")]
    pub use stack_walk::{backtrace, backtrace_walk};

    // Weak definitions: a program linking the tracer resolves its own calls
    // (Rust's panics) to them; a static libgcc_eh would override them.
    #[cfg(target_arch = "x86_64")]
    std::arch::global_asm!(
        ".pushsection .text.__tracer_unwind,\"ax\",@progbits",
        ".globl __tracer_v1_unwind_raise",
        ".hidden __tracer_v1_unwind_raise",
        "__tracer_v1_unwind_raise:",
        ".weak _Unwind_RaiseException",
        ".type _Unwind_RaiseException,@function",
        "_Unwind_RaiseException:",
        "xor esi, esi",
        "jmp {raise}",
        ".weak _Unwind_ForcedUnwind",
        ".type _Unwind_ForcedUnwind,@function",
        "_Unwind_ForcedUnwind:",
        "jmp {forced}",
        ".weak _Unwind_Resume_or_Rethrow",
        ".type _Unwind_Resume_or_Rethrow,@function",
        "_Unwind_Resume_or_Rethrow:",
        "xor esi, esi",
        "jmp {rethrow}",
        ".weak _Unwind_Resume",
        ".type _Unwind_Resume,@function",
        "_Unwind_Resume:",
        "jmp {resume}",
        ".weak _Unwind_DeleteException",
        ".type _Unwind_DeleteException,@function",
        "_Unwind_DeleteException:",
        "jmp {delete}",
        ".weak _Unwind_Backtrace",
        ".type _Unwind_Backtrace,@function",
        "_Unwind_Backtrace:",
        "xor edx, edx",
        "jmp {walk}",
        ".popsection",
        raise = sym raise,
        forced = sym forced,
        rethrow = sym rethrow,
        resume = sym resume,
        delete = sym delete,
        walk = sym backtrace_walk,
    );
    #[cfg(target_arch = "aarch64")]
    std::arch::global_asm!(
        ".pushsection .text.__tracer_unwind,\"ax\",%progbits",
        ".globl __tracer_v1_unwind_raise",
        ".hidden __tracer_v1_unwind_raise",
        "__tracer_v1_unwind_raise:",
        ".weak _Unwind_RaiseException",
        ".type _Unwind_RaiseException,%function",
        "_Unwind_RaiseException:",
        "mov x1, xzr",
        "b {raise}",
        ".weak _Unwind_ForcedUnwind",
        ".type _Unwind_ForcedUnwind,%function",
        "_Unwind_ForcedUnwind:",
        "b {forced}",
        ".weak _Unwind_Resume_or_Rethrow",
        ".type _Unwind_Resume_or_Rethrow,%function",
        "_Unwind_Resume_or_Rethrow:",
        "mov x1, xzr",
        "b {rethrow}",
        ".weak _Unwind_Resume",
        ".type _Unwind_Resume,%function",
        "_Unwind_Resume:",
        "b {resume}",
        ".weak _Unwind_DeleteException",
        ".type _Unwind_DeleteException,%function",
        "_Unwind_DeleteException:",
        "b {delete}",
        ".popsection",
        raise = sym raise,
        forced = sym forced,
        rethrow = sym rethrow,
        resume = sym resume,
        delete = sym delete,
    );
}

// ---------------------------------------------------------------------------
// Functions that answer relative to their caller's object.

/// `dlsym(RTLD_NEXT, ..)` and `dlopen` look at their own return address to
/// find the calling object (the next definition after it; its `RUNPATH`).
/// A hooked function that tail-calls them passes its own return address on,
/// which is the return trampoline's, in the preload library: they would
/// answer for the preload library. The preload library exports both as
/// shims that come here first: if the return address is the trampoline's,
/// the tail-calling function returns now (its exit is recorded as the tail
/// call starts) and its real return address goes back into the slot, so the
/// real function sees the caller the untraced program has, and returns
/// straight to it.
#[cfg(all(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    target_os = "linux"
))]
mod dl_caller {
    use super::thread;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// `dlsym`, `dlopen` (the shims' `which`).
    static REAL: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

    /// The real function number `which`. `dlsym` itself is found with
    /// `dlvsym`, which is not interposed (the library's own `dlsym` calls
    /// come through the shim).
    fn real(which: usize) -> usize {
        let Some(slot) = REAL.get(which) else {
            std::process::abort()
        };
        let mut f = slot.load(Ordering::Acquire);
        if f != 0 {
            return f;
        }
        if which == 0 {
            #[cfg(target_arch = "x86_64")]
            const BASE: &std::ffi::CStr = c"GLIBC_2.2.5";
            #[cfg(target_arch = "aarch64")]
            const BASE: &std::ffi::CStr = c"GLIBC_2.17";
            for v in [c"GLIBC_2.34", BASE] {
                // SAFETY: a symbol lookup with NUL-terminated strings.
                f = unsafe { libc::dlvsym(libc::RTLD_NEXT, c"dlsym".as_ptr(), v.as_ptr()) }
                    as usize;
                if f != 0 {
                    break;
                }
            }
        } else {
            type Dlsym =
                unsafe extern "C" fn(*mut libc::c_void, *const libc::c_char) -> *mut libc::c_void;
            // SAFETY: the real `dlsym` (called from here: the next
            // definition after the preload library).
            f = unsafe {
                std::mem::transmute::<usize, Dlsym>(real(0))(libc::RTLD_NEXT, c"dlopen".as_ptr())
            } as usize;
        }
        if f == 0 {
            eprintln!("tracer: fatal: the real dlsym/dlopen cannot be found");
            std::process::abort();
        }
        slot.store(f, Ordering::Release);
        f
    }

    /// x86-64 shims: `slot` is the address of the shim's return address
    /// (the stack pointer at its entry). Returns the real function to jump
    /// to, with the same stack and arguments.
    ///
    /// # Safety
    /// Only the preload library's shims call it, with their own slot.
    #[cfg(target_arch = "x86_64")]
    pub unsafe extern "C" fn prep(slot: usize, which: usize) -> usize {
        let fret = thread::FRET.load(Ordering::Relaxed);
        // SAFETY: per the caller, a live word of this thread's stack.
        if fret != 0 && unsafe { *(slot as *const usize) } == fret {
            // SAFETY: a hooked return whose frame is keyed by its slot, on
            // this thread, as the return trampoline would pass it.
            let ret = unsafe { thread::on_fret(slot) };
            // SAFETY: as above.
            unsafe { *(slot as *mut usize) = ret };
        }
        real(which)
    }

    /// The real function to branch to, and the return address to branch
    /// with (in `x30`).
    #[cfg(target_arch = "aarch64")]
    #[repr(C)]
    pub struct Branch {
        target: usize,
        ret: usize,
    }

    /// AArch64 shims: `ret` is `x30` at the shim's entry, `key` the stack
    /// pointer there (a tail-calling function has restored its entry stack
    /// pointer, which keys its frame).
    ///
    /// # Safety
    /// Only the preload library's shims call it, with their own `x30` and
    /// stack pointer.
    #[cfg(target_arch = "aarch64")]
    pub unsafe extern "C" fn prep(ret: usize, key: usize, which: usize) -> Branch {
        let fret = thread::FRET.load(Ordering::Relaxed);
        let ret = if fret != 0 && ret == fret {
            // SAFETY: a hooked return whose frame is keyed by `key`, on
            // this thread, as the return trampoline would pass it.
            unsafe { thread::on_fret(key) }
        } else {
            ret
        };
        Branch {
            target: real(which),
            ret,
        }
    }
}

#[cfg(all(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    target_os = "linux"
))]
pub use dl_caller::prep as dl_caller_prep;
#[cfg(all(target_arch = "aarch64", target_os = "linux"))]
pub use dl_caller::Branch as DlBranch;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub use unwind::{backtrace, backtrace_walk as unwind_backtrace, Step as UnwindStep};
#[cfg(all(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    target_os = "linux"
))]
pub use unwind::{
    delete as unwind_delete, forced as unwind_forced, raise as unwind_raise,
    resume as unwind_resume, rethrow as unwind_rethrow, thread_exit as unwind_thread_exit,
};
