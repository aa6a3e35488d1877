//! Following the loaded objects: scan those that appeared (`dlopen`), drop
//! those that went away, and leave the tracer's own functions out.

use super::{discover, read_live, registry};
use crate::{collect, thread, trap};
use std::collections::HashSet;
use std::sync::Mutex;

/// Path prefixes of the tracer's own functions.
pub(super) const OWN: &[&str] = &[
    "tracer::",
    "tracer_core::",
    "tracer_arch_x86::",
    "tracer_arch_arm::",
    "tracer_preload::",
    "<tracer",
    "__tracer",
];

/// Objects scanned that have no pads, or could not be read: not again.
static NO_PADS: Mutex<Option<HashSet<(String, usize)>>> = Mutex::new(None);

/// A reference on a loaded object (`dlopen` with `RTLD_NOLOAD`), so that
/// it stays mapped while the registry reads it; `None` if it is unloaded
/// already (or loaded again elsewhere). The executable is never unloaded
/// and needs none.
struct Pin(*mut libc::c_void);

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

impl Drop for Pin {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: a handle `dlopen` returned, closed once.
            unsafe { libc::dlclose(self.0) };
        }
    }
}

/// Bring the registry up to date with the objects loaded now.
pub(crate) fn refresh(
    reg: &mut registry::Registry,
    enabled: &mut Vec<bool>,
    loader: &mut (u64, u64),
) {
    if !crate::arch::COMPILER_PADS {
        return; // the registry holds the `#[traceable]` sites only
    }
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
        // The program may `dlclose` the object while its tables are read
        // (a thread of its own loading and unloading a library): hold a
        // reference meanwhile; one already gone is skipped.
        let Some(_pin) = Pin::new(o, objs.first()) else {
            continue;
        };
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
        let own = super::per_arch::own_functions(o, &found);
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
        reg.add_object(&o.path, o.bias, found, &super::per_arch::nop_pad_reason);
    }
    let n = reg.funcs.len();
    enabled.resize(n, false);
    // Headroom, so threads made from now on have counters for functions
    // of libraries loaded a little later too.
    thread::reserve((n + 1024).next_multiple_of(1024));
    collect::lock().ensure(n);
    trap::publish_sites(reg.addresses());
}
