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
//! (`crate::veneer::entry_stub`: function index into `r11d`, jump to
//! `__tracer_v1_tramp_fentry`).
//!
//! **Exits** are seen by hooking the return address, as ftrace's
//! function_graph does: the entry hook saves the caller's return address on
//! the thread's shadow stack and replaces it with the return trampoline's
//! (`crate::thread::on_fentry` / `on_fret`). `longjmp` and exceptions leave
//! shadow frames behind; they are dropped as stale by the next entry at or
//! above them on the same stack. Before an exception or a forced unwind
//! (`pthread_cancel`, `pthread_exit`) walks the stack, every hooked return
//! address of the thread is given back (the unwinder must see real return
//! addresses to find its unwind tables): `_Unwind_RaiseException`,
//! `_Unwind_ForcedUnwind` and `_Unwind_Resume_or_Rethrow` are interposed
//! (a weak definition in the program, an exported one in the preload
//! library) and call the real ones (`dlsym(RTLD_NEXT)`) after that, and so
//! is `_Unwind_Resume` (where cleanup code may have hooked frames again).
//! The frames the unwind goes through have no recorded exit (`unwound` in
//! the stats); those above the catch are hooked again when the exception is
//! deleted (`_Unwind_DeleteException`, interposed as well: the end of a C++
//! `catch` or of Rust's `catch_unwind`), or at the next traced entry. Where CET shadow
//! stacks are active a changed return address would kill the process, so
//! returns are not hooked there: entry events only (`status` says so).
//!
//! **GCC's five 1-byte NOPs** (`-fpatchable-function-entry=5` with GCC) cannot
//! be swapped live: a thread preempted between two of them would resume in
//! the middle of the new instruction. They are turned into one 5-byte NOP by
//! the runtime's ELF constructor, before `main`, when the process has exactly
//! one thread (so no other thread can be executing them). Objects loaded later,
//! or a process that already had threads then, keep them, and those
//! functions are listed with the reason.

use crate::State;
#[cfg(target_arch = "x86_64")]
use crate::{arch, collect, discover, thread, trap};
#[cfg(target_arch = "x86_64")]
use std::collections::HashSet;
#[cfg(target_arch = "x86_64")]
use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(target_arch = "x86_64")]
use std::sync::Mutex;

/// Path prefixes of the tracer's own functions.
#[cfg(target_arch = "x86_64")]
const OWN: &[&str] = &[
    "tracer::",
    "tracer_core::",
    "tracer_arch_x86::",
    "tracer_preload::",
    "<tracer",
    "__tracer",
];

#[cfg(target_arch = "x86_64")]
extern "C" {
    fn __tracer_v1_tramp_fentry();
    fn __tracer_v1_tramp_fret();
}

#[cfg(target_arch = "x86_64")]
static RETURNS: AtomicUsize = AtomicUsize::new(0);

/// How exits of compiler-padded functions are seen, for `status`.
pub fn returns_mode() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    return match RETURNS.load(Ordering::Relaxed) {
        1 => "hooked",
        2 => "entry-only: CET shadow stacks are active, a changed return address would be fatal",
        3 => "entry-only: TRACER_NO_RETURN_HOOK is set",
        _ => "not set up yet",
    };
    #[cfg(not(target_arch = "x86_64"))]
    "compiler pads are traced on x86-64 only"
}

/// Decide whether returns are hooked (once, at start).
pub fn init_returns() {
    #[cfg(target_arch = "x86_64")]
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
    #[cfg(target_arch = "x86_64")]
    return crate::veneer::entry_stub(site, func, __tracer_v1_tramp_fentry as *const () as usize);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (site, func);
        Err(String::from("compiler pads are traced on x86-64 only"))
    }
}

/// Objects scanned that have no pads, or could not be read: not again.
#[cfg(target_arch = "x86_64")]
static NO_PADS: Mutex<Option<HashSet<(String, usize)>>> = Mutex::new(None);

/// Threads the process had when the constructor ran (0: it has not run).
#[cfg(target_arch = "x86_64")]
static STARTUP_THREADS: AtomicUsize = AtomicUsize::new(0);
/// GCC pads converted at start-up.
#[cfg(target_arch = "x86_64")]
pub static CONVERTED: AtomicUsize = AtomicUsize::new(0);

#[cfg(target_arch = "x86_64")]
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

/// Bring the registry up to date with the objects loaded now.
pub(crate) fn refresh(st: &mut State) {
    #[cfg(target_arch = "x86_64")]
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
            let found = match discover::scan(o, &read_live) {
                Ok(s) if !s.funcs.is_empty() => s.funcs,
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
            st.reg.add_object(&o.path, o.bias, &found, &gcc_reason);
        }
        let n = st.reg.funcs.len();
        st.enabled.resize(n, false);
        // Headroom, so threads made from now on have counters for functions
        // of libraries loaded a little later too.
        thread::reserve((n + 1024).next_multiple_of(1024));
        collect::lock().ensure(n);
        trap::publish_sites(st.reg.addresses());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = st;
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
        STARTUP_THREADS.store(threads.max(1), Ordering::Relaxed);
        if threads != 1 {
            return;
        }
        let (objs, _, _) = discover::loaded_objects();
        let mut sites = Vec::new();
        for o in &objs {
            if !discover::has_pads(o) {
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

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod unwind {
    use std::sync::atomic::{AtomicUsize, Ordering};

    static REAL: [AtomicUsize; 5] = [
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ];
    const NAMES: [&std::ffi::CStr; 5] = [
        c"_Unwind_RaiseException",
        c"_Unwind_ForcedUnwind",
        c"_Unwind_Resume_or_Rethrow",
        c"_Unwind_Resume",
        c"_Unwind_DeleteException",
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

    /// `_Unwind_RaiseException` with the thread's hooked returns given back.
    ///
    /// # Safety
    /// As the unwinder's own: `exc` is an exception object.
    pub unsafe extern "C" fn raise(exc: *mut libc::c_void) -> libc::c_int {
        crate::thread::unhook_returns();
        // SAFETY: the real function has this signature.
        unsafe { std::mem::transmute::<usize, Raise>(real(0))(exc) }
    }

    /// `_Unwind_ForcedUnwind`, likewise.
    ///
    /// # Safety
    /// As the unwinder's own.
    pub unsafe extern "C" fn forced(
        exc: *mut libc::c_void,
        stop: *mut libc::c_void,
        arg: *mut libc::c_void,
    ) -> libc::c_int {
        crate::thread::unhook_returns();
        // SAFETY: the real function has this signature.
        unsafe { std::mem::transmute::<usize, Forced>(real(1))(exc, stop, arg) }
    }

    /// `_Unwind_Resume_or_Rethrow`, likewise.
    ///
    /// # Safety
    /// As the unwinder's own.
    pub unsafe extern "C" fn rethrow(exc: *mut libc::c_void) -> libc::c_int {
        crate::thread::unhook_returns();
        // SAFETY: the real function has this signature.
        unsafe { std::mem::transmute::<usize, Raise>(real(2))(exc) }
    }

    /// `_Unwind_Resume` (the end of a cleanup landing pad), likewise: frames
    /// hooked again by traced calls in the cleanup are given back before the
    /// unwind goes on. It does not return.
    ///
    /// # Safety
    /// As the unwinder's own.
    pub unsafe extern "C" fn resume(exc: *mut libc::c_void) {
        crate::thread::unhook_returns();
        type Resume = unsafe extern "C" fn(*mut libc::c_void);
        // SAFETY: the real function has this signature.
        unsafe { std::mem::transmute::<usize, Resume>(real(3))(exc) }
    }

    /// `_Unwind_DeleteException` (a caught exception is finished with: the
    /// end of a C++ `catch`, Rust's `catch_unwind`): the frames that survived
    /// the unwind are hooked again.
    ///
    /// # Safety
    /// As the unwinder's own.
    pub unsafe extern "C" fn delete(exc: *mut libc::c_void) {
        type Delete = unsafe extern "C" fn(*mut libc::c_void);
        // SAFETY: the real function has this signature.
        unsafe { std::mem::transmute::<usize, Delete>(real(4))(exc) };
        let here = 0u8;
        crate::thread::rehook_after_catch(std::hint::black_box(&here) as *const u8 as usize);
    }

    // Weak definitions: a program linking the tracer resolves its own calls
    // (Rust's panics) to them; a static libgcc_eh would override them.
    std::arch::global_asm!(
        ".pushsection .text.__tracer_unwind,\"ax\",@progbits",
        ".weak _Unwind_RaiseException",
        ".type _Unwind_RaiseException,@function",
        "_Unwind_RaiseException:",
        "jmp {raise}",
        ".weak _Unwind_ForcedUnwind",
        ".type _Unwind_ForcedUnwind,@function",
        "_Unwind_ForcedUnwind:",
        "jmp {forced}",
        ".weak _Unwind_Resume_or_Rethrow",
        ".type _Unwind_Resume_or_Rethrow,@function",
        "_Unwind_Resume_or_Rethrow:",
        "jmp {rethrow}",
        ".weak _Unwind_Resume",
        ".type _Unwind_Resume,@function",
        "_Unwind_Resume:",
        "jmp {resume}",
        ".weak _Unwind_DeleteException",
        ".type _Unwind_DeleteException,@function",
        "_Unwind_DeleteException:",
        "jmp {delete}",
        ".popsection",
        raise = sym raise,
        forced = sym forced,
        rethrow = sym rethrow,
        resume = sym resume,
        delete = sym delete,
    );
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub use unwind::{
    delete as unwind_delete, forced as unwind_forced, raise as unwind_raise,
    resume as unwind_resume, rethrow as unwind_rethrow,
};
