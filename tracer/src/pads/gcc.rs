//! GCC's pads of five 1-byte NOPs, made patchable: turned into one 5-byte
//! NOP before `main`, while the process has one thread.

use super::{discover, read_live};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads the process had when the constructor ran (0: it has not run).
static STARTUP_THREADS: AtomicUsize = AtomicUsize::new(0);
/// GCC pads converted at start-up.
pub static CONVERTED: AtomicUsize = AtomicUsize::new(0);

/// Why a pad of five 1-byte NOPs in `path` stays unusable.
pub(crate) fn reason() -> String {
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

/// Number of threads of this process (from `/proc/self/task`).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Turn GCC's five 1-byte NOPs into one 5-byte NOP in every loaded object,
/// if this process has one thread. Run by the ELF constructor, before `main`.
pub fn convert_at_startup() {
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
    let mut w = crate::text::LiveText::default();
    if let Err(e) = w.begin(&mut sites.iter().map(|&s| (s, s + 5))) {
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
