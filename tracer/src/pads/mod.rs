//! Compiler pads: finding them in the loaded objects, keeping the registry
//! up to date, and making GCC's pads patchable.
//!
//! **Discovery.** The objects of the process are listed with
//! `dl_iterate_phdr` and their pad tables read (`crate::pads::discover`). The
//! registry follows `dlopen` and `dlclose`: the loader's add/remove counters
//! are compared on every use of the registry (every API call and agent
//! request), and objects that appeared are scanned, objects that went away
//! dropped. The tracer's own code is never listed: functions of its crates,
//! and every function they can call directly (a pad in code the SIGTRAP
//! handler or a hook runs would trap inside the handler).
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

pub mod discover;
pub(crate) mod registry;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use crate::{arch, collect, thread, trap};
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use std::collections::HashSet;
#[cfg(target_arch = "x86_64")]
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
            crate::thread::on_fentry_args as *const () as usize,
            crate::thread::on_fret_args as *const () as usize,
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
pub(crate) fn refresh(
    reg: &mut registry::Registry,
    enabled: &mut Vec<bool>,
    loader: &mut (u64, u64),
) {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let (objs, adds, subs) = discover::loaded_objects();
        if (adds, subs) == *loader {
            return;
        }
        *loader = (adds, subs);
        let gone: Vec<(String, usize)> = reg
            .objects
            .iter()
            .filter(|(p, b, _)| !objs.iter().any(|o| &o.path == p && o.bias == *b))
            .map(|(p, b, _)| (p.clone(), *b))
            .collect();
        for (p, b) in gone {
            for f in reg.remove_object(&p, b) {
                if let Some(e) = enabled.get_mut(f as usize) {
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
                || reg
                    .objects
                    .iter()
                    .any(|(p, b, _)| p == &o.path && *b == o.bias)
            {
                continue;
            }
            let found = match discover::scan(o, &read_live) {
                Ok(s) if !s.funcs.is_empty() => {
                    if let Some(at) = s.unwinder_at {
                        crate::returns::own_unwinder(&o.path, at);
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
            reg.add_object(&o.path, o.bias, &found, &gcc_reason);
            // No 1-byte NOPs on AArch64: every instruction is 4 bytes.
            #[cfg(target_arch = "aarch64")]
            reg.add_object(&o.path, o.bias, &found, &String::new);
        }
        let n = reg.funcs.len();
        enabled.resize(n, false);
        // Headroom, so threads made from now on have counters for functions
        // of libraries loaded a little later too.
        thread::reserve((n + 1024).next_multiple_of(1024));
        collect::lock().ensure(n);
        trap::publish_sites(reg.addresses());
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = (reg, enabled, loader);
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
