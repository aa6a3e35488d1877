//! The runtime: its one-time set-up, and its state (the registry of
//! functions and which are enabled) under one lock.

use crate::{arch, clock, collect, pads, registry, text, thread, trap, Error, FunctionInfo};
use std::sync::{Mutex, OnceLock};
use tracer_core::backend::TrapPolicy;
use tracer_core::pattern::{self, Named, PatternError};
use tracer_core::site::SiteRecord;

// Here, beside `records()`, which reads it: the object that holds one
// holds the other, so the linker never keeps the reference without the
// section (it would leave `__start___tracer_sites` undefined).
crate::arch::sites_sentinel!();

extern "C" {
    #[link_name = "__start___tracer_sites"]
    static SITES_START: u8;
    #[link_name = "__stop___tracer_sites"]
    static SITES_STOP: u8;
}

pub(crate) struct Runtime {
    state: Mutex<State>,
}

/// The registry and which functions are enabled, under one lock (batches
/// are serialised by it too).
pub(crate) struct State {
    pub(crate) reg: registry::Registry,
    pub(crate) enabled: Vec<bool>,
    /// The loader's (adds, subs) counters when the objects were last scanned.
    pub(crate) loader: (u64, u64),
    /// The selections of the last few `list` patterns, sorted by name
    /// (the most recent last): pages are cut from them instead of
    /// resolving and sorting every function again for each page (10^6
    /// functions are 40 pages). A few, so that clients listing different
    /// patterns at once do not make each other sort on every page.
    pub(crate) listed: Vec<Listed>,
}

/// How many `list` selections [`State::listed`] keeps.
const LISTED_KEEP: usize = 4;

/// Functions a `list` pattern selects (all loaded ones without one), in
/// list order, for the registry as it was at [`Listed::generation`].
pub(crate) struct Listed {
    /// The registry's [`registry::Registry::generation`] it was made for.
    generation: u64,
    /// The pattern.
    pattern: Option<String>,
    /// Function indices, sorted by name, then index.
    order: Vec<u32>,
}

pub(crate) static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

impl Runtime {
    /// Lock the state, after bringing the registry up to date with the
    /// objects loaded now (`dlopen`/`dlclose` since the last look: a scan of
    /// the new ones). Named for what it does: it is not a plain getter.
    pub(crate) fn lock_refreshed(&self) -> std::sync::MutexGuard<'_, State> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State {
            reg,
            enabled,
            loader,
            ..
        } = &mut *st;
        pads::refresh(reg, enabled, loader);
        st
    }
}

pub(crate) fn records() -> &'static [SiteRecord] {
    // SAFETY: the linker defines both symbols around the section, which holds
    // only SiteRecords (ours and #[traceable]'s, all 8-aligned, same layout).
    unsafe {
        let start = std::ptr::addr_of!(SITES_START) as *const SiteRecord;
        let stop = std::ptr::addr_of!(SITES_STOP) as *const SiteRecord;
        let n = (stop as usize - start as usize) / std::mem::size_of::<SiteRecord>();
        std::slice::from_raw_parts(start, n)
    }
}

pub(crate) fn runtime() -> Result<&'static Runtime, Error> {
    RUNTIME
        .get_or_init(|| {
            {
                clock::init();
                // SAFETY: the records are this program's, valid forever; no pad is enabled yet.
                let reg = unsafe { registry::Registry::build(records()) };
                let nfuncs = reg.funcs.len();
                thread::init(nfuncs);
                collect::init(nfuncs);
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
                let check = thread::lean_check();
                if check.is_none() && std::env::var_os("TRACER_FULL_SAVE").is_none() {
                    thread::LEAN.store(true, std::sync::atomic::Ordering::Release);
                    // The capturing hooks (issue 14) take the lean path too
                    // only if they pass the same check.
                    thread::lean_capture();
                }
                let _ = HOOK_CHECK.set(check);
                crate::returns::init_returns();
                let mut state = State {
                    enabled: vec![false; nfuncs],
                    reg,
                    loader: (0, 0),
                    listed: Vec::new(),
                };
                pads::refresh(&mut state.reg, &mut state.enabled, &mut state.loader);
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

pub(crate) static HOOK_CHECK: OnceLock<Option<String>> = OnceLock::new();

/// Every function for pattern matching; unloaded ones get an empty name
/// (no pattern matches it).
/// The functions among `candidates` (indices, ascending) that `pattern`
/// selects, by their names or their aliases; function indices, ascending.
pub(crate) fn resolve_in(
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
            own: f.ident(),
        });
        owner.push(i);
        for a in f.aliases() {
            named.push(Named {
                path: a,
                own: crate::discover::own_name(a),
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
pub(crate) fn loaded(reg: &registry::Registry) -> Vec<usize> {
    (0..reg.funcs.len())
        .filter(|&i| reg.funcs[i].loaded)
        .collect()
}

/// Functions registered now (after looking for libraries loaded or
/// unloaded since the last look); 0 without a runtime.
pub(crate) fn function_count() -> usize {
    runtime().map_or(0, |rt| rt.lock_refreshed().reg.funcs.len())
}

/// Every function ever registered, by index (unloaded ones too): what the
/// agent hands the `tracer` program, whose events name functions by index.
pub(crate) fn all_functions() -> Vec<FunctionInfo> {
    match runtime() {
        Ok(rt) => function_table(&rt.lock_refreshed()),
        Err(_) => Vec::new(),
    }
}

/// The names of the enabled (loaded) functions, sorted; without building the
/// whole function table.
pub(crate) fn enabled_names() -> Vec<String> {
    let Ok(rt) = runtime() else {
        return Vec::new();
    };
    let st = rt.lock_refreshed();
    let mut v: Vec<String> = st
        .reg
        .funcs
        .iter()
        .enumerate()
        .filter(|(i, f)| f.loaded && st.enabled.get(*i).copied().unwrap_or(false))
        .map(|(_, f)| f.path.to_string())
        .collect();
    v.sort_unstable();
    v
}

/// The name of every function ever registered, by index (unloaded ones
/// too): all a reader needs to name events.
pub(crate) fn function_names() -> Vec<String> {
    match runtime() {
        Ok(rt) => rt
            .lock_refreshed()
            .reg
            .funcs
            .iter()
            .map(|f| f.path.to_string())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A page of the loaded functions sorted by name, of those `pattern`
/// selects (all without one): at most `max` from position `from`, and the
/// number there are in all. Only the page's entries are built; the sorted
/// selection is kept for the next page (see [`State::listed`]).
pub(crate) fn functions_page(
    pattern: Option<&str>,
    from: usize,
    max: usize,
) -> Result<(Vec<FunctionInfo>, usize), Error> {
    let rt = runtime()?;
    let mut st = rt.lock_refreshed();
    let st = &mut *st;
    let generation = st.reg.generation;
    // Those made before the registry last changed are stale.
    st.listed.retain(|l| l.generation == generation);
    match st
        .listed
        .iter()
        .position(|l| l.pattern.as_deref() == pattern)
    {
        Some(i) => {
            let l = st.listed.remove(i);
            st.listed.push(l);
        }
        None => {
            let order = sorted_selection(&st.reg, pattern)?;
            if st.listed.len() >= LISTED_KEEP {
                st.listed.remove(0);
            }
            st.listed.push(Listed {
                generation,
                pattern: pattern.map(String::from),
                order,
            });
        }
    }
    let order = st.listed.last().map_or(&[][..], |l| &l.order[..]);
    let total = order.len();
    let from = from.min(total);
    let to = from.saturating_add(max).min(total);
    let page = order[from..to]
        .iter()
        .map(|&i| function_info(st, i as usize))
        .collect();
    Ok((page, total))
}

/// The loaded functions `pattern` selects (all without one), sorted by
/// name, then index.
fn sorted_selection(reg: &registry::Registry, pattern: Option<&str>) -> Result<Vec<u32>, Error> {
    let mut order = loaded(reg);
    if let Some(p) = pattern {
        order = resolve_in(reg, &order, p)?;
    }
    let funcs = &reg.funcs;
    order.sort_unstable_by(|&a, &b| funcs[a].path.cmp(&funcs[b].path).then(a.cmp(&b)));
    Ok(order.into_iter().map(|i| i as u32).collect())
}

/// Every function ever registered, by index (unloaded ones too).
pub(crate) fn function_table(st: &State) -> Vec<FunctionInfo> {
    (0..st.reg.funcs.len())
        .map(|i| function_info(st, i))
        .collect()
}

/// What the API says about function `i`.
pub(crate) fn function_info(st: &State, i: usize) -> FunctionInfo {
    let f = &st.reg.funcs[i];
    {
        FunctionInfo {
            name: f.path.to_string(),
            ident: f.ident().to_string(),
            file: f.file().to_string(),
            line: f.line(),
            enabled: st.enabled[i],
            sites: f.sites.len(),
            problems: f
                .sites
                .iter()
                .filter_map(|&s| {
                    st.reg.sites[s as usize]
                        .broken
                        .as_deref()
                        .map(str::to_string)
                })
                .collect(),
            index: i as u32,
            loaded: f.loaded,
            compiler_pad: f.object.is_some(),
            object_offset: f.object.as_ref().and_then(|o| {
                let site = st.reg.sites.get(*f.sites.first()? as usize)?.addr;
                let (_, bias, _) = st.reg.objects.iter().find(|(p, _, _)| **p == **o)?;
                Some(site.checked_sub(*bias)? as u64)
            }),
            signature: f.sig().to_string(),
        }
    }
}

pub(crate) fn lookup(reg: &registry::Registry, name: &str) -> Option<usize> {
    if let Some(i) = reg.funcs.iter().position(|f| f.loaded && &*f.path == name) {
        return Some(i);
    }
    let mut it = reg
        .funcs
        .iter()
        .enumerate()
        .filter(|(_, f)| f.loaded && f.ident() == name);
    match (it.next(), it.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    }
}
