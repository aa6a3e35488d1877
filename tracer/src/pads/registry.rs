//! Every site of the program: `#[traceable]`'s, from the `__tracer_sites`
//! linker section, and compiler pads found in the loaded ELF objects
//! (`crate::pads::discover`).
//!
//! Built before the first pad is enabled: records are read, the pads' bytes
//! checked by the backend's decoder (a pad that is not exactly the expected
//! no-op is marked broken and never written), sites sorted by address and
//! grouped into functions by their descriptor. Objects loaded later
//! (`dlopen`) add functions; objects unloaded (`dlclose`) take their sites
//! away and mark their functions unloaded. A function's index never changes
//! and is never reused (events and per-thread counters refer to it), and a
//! function that comes back with its object keeps its index.

use crate::arch::{self, Arch};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracer_core::backend::{Backend, Insn, PadState};
use tracer_core::site::{FnDesc, SiteRecord, FLAG_CAPTURE_STUB};

/// One site.
#[derive(Debug, Clone)]
pub struct Site {
    /// The patched instruction's address.
    pub addr: usize,
    /// The stub an enabled site calls.
    pub stub: usize,
    /// Entry or exit (`tracer_core::site::KIND_*`).
    pub kind: u32,
    /// Index of its function.
    pub func: u32,
    /// The pad's bytes as the compiler left them.
    pub original: Insn,
    /// Whether the site has a capturing stub (`#[traceable]` pads whose
    /// macro captures values: `tracer_core::site::FLAG_CAPTURE_STUB`).
    pub capturing: bool,
    /// Why the site can never be written, if so.
    pub broken: Option<Box<str>>,
}

impl Site {
    /// The site's capturing stub (see [`Site::capturing`]), or 0.
    pub fn capture_stub(&self) -> usize {
        if self.capturing {
            self.stub + tracer_core::site::CAPTURE_STUB_OFFSET
        } else {
            0
        }
    }
}

/// One function. Kept small: a program can have 10^6 of them, most never
/// enabled (the object's path is shared by its functions, the own name is
/// a part of the path where it can be, one or two sites are inline).
#[derive(Debug, Clone)]
pub struct Func {
    /// Full path.
    pub path: Box<str>,
    /// Where the own name starts in `path`, when it is `path`'s tail
    /// (else it is in `extra`).
    ident_at: u32,
    /// Indices into [`Registry::sites`].
    pub sites: SmallVec<[u32; 2]>,
    /// The object a compiler-padded function lives in (its path, shared by
    /// its functions; `None`: `#[traceable]`).
    pub object: Option<Arc<str>>,
    /// The `#[traceable]` macro's description of it (`None`: compiler pad).
    desc: Option<&'static FnDesc>,
    /// What few functions have: an own name that is not the path's tail,
    /// other names (no room taken when there is neither).
    extra: Option<Box<Extra>>,
    /// False once its object was unloaded.
    pub loaded: bool,
}

/// The rare parts of a [`Func`], out of line.
#[derive(Debug, Clone)]
struct Extra {
    /// The own name, when it is not the path's tail.
    ident: Option<Box<str>>,
    /// Other names of it (symbol aliases), which patterns also select.
    aliases: Vec<String>,
}

impl Func {
    /// A function named `path`, whose own name is `ident` (`None`: the
    /// path's own name, `discover::own_name`), with no site yet.
    fn new(
        path: String,
        ident: Option<&str>,
        object: Option<Arc<str>>,
        desc: Option<&'static FnDesc>,
        aliases: Vec<String>,
    ) -> Func {
        let ident = ident.unwrap_or_else(|| crate::pads::discover::own_name(&path));
        let tail = path.len().checked_sub(ident.len()).filter(|&at| {
            path.is_char_boundary(at) && &path[at..] == ident && at <= u32::MAX as usize
        });
        let own = match tail {
            Some(_) => None,
            None => Some(ident.into()),
        };
        Func {
            ident_at: tail.map_or(0, |at| at as u32),
            extra: (own.is_some() || !aliases.is_empty()).then(|| {
                Box::new(Extra {
                    ident: own,
                    aliases,
                })
            }),
            path: path.into_boxed_str(),
            sites: SmallVec::new(),
            object,
            desc,
            loaded: true,
        }
    }

    /// Other names of it (symbol aliases), which patterns also select.
    pub fn aliases(&self) -> &[String] {
        self.extra.as_deref().map_or(&[], |e| e.aliases.as_slice())
    }

    /// Source file (compiler pads: the object's path).
    pub fn file(&self) -> &str {
        match (self.desc, &self.object) {
            (Some(d), _) => d.file,
            (None, Some(o)) => o,
            (None, None) => "",
        }
    }

    /// Source line (0 for compiler pads).
    pub fn line(&self) -> u32 {
        self.desc.map_or(0, |d| d.line)
    }

    /// The `#[traceable]` macro's signature text (`FnDesc::sig`; empty for
    /// compiler-padded functions).
    pub fn sig(&self) -> &'static str {
        self.desc.map_or("", |d| d.sig)
    }

    /// Its own name (the path's last segment, for most).
    pub fn ident(&self) -> &str {
        match self.extra.as_deref().and_then(|e| e.ident.as_deref()) {
            Some(own) => own,
            None => self.path.get(self.ident_at as usize..).unwrap_or(""),
        }
    }
}

/// The registry.
#[derive(Debug, Default)]
pub struct Registry {
    /// Sites sorted by address.
    pub sites: Vec<Site>,
    /// Functions, by index (the `#[traceable]` ones first, sorted by path).
    pub funcs: Vec<Func>,
    /// Objects whose compiler pads are registered: `(path, bias, functions)`.
    pub objects: Vec<(String, usize, Vec<u32>)>,
    /// Paths of the objects whose functions were ever registered: one
    /// loaded again gets its functions' old indices back (looked up then,
    /// by name, among the functions of that path).
    seen_objects: std::collections::HashSet<String>,
    /// Counts the changes to the functions (an object added or removed):
    /// what was derived from them (`list`'s sorted selection) is stale
    /// once it has moved.
    pub generation: u64,
}

impl Registry {
    /// Build from the section records.
    ///
    /// # Safety
    /// `records` must be the program's site records, which stay valid for the
    /// life of the process; no pad may be enabled yet.
    pub(crate) unsafe fn build(records: &'static [SiteRecord]) -> Registry {
        // Group by descriptor.
        let mut by_desc: HashMap<usize, usize> = HashMap::new();
        let mut funcs: Vec<Func> = Vec::new();
        let mut sites: Vec<(Site, &'static SiteRecord)> = Vec::new();
        for rec in records {
            if rec.desc.is_null() || rec.pad == 0 {
                continue; // the runtime's sentinel
            }
            // SAFETY: non-null descriptors point at statics emitted by #[traceable].
            let desc = unsafe { &*rec.desc };
            let fi = *by_desc.entry(rec.desc as usize).or_insert_with(|| {
                funcs.push(Func::new(
                    (desc.path)().to_string(),
                    Some(desc.ident),
                    None,
                    Some(desc),
                    Vec::new(),
                ));
                funcs.len() - 1
            });
            let (addr, stub) = (
                arch::canonical_site(rec.pad),
                arch::canonical_stub(rec.stub),
            );
            let mut bytes = [0u8; 16];
            let len = Arch::SITE_LEN;
            // SAFETY: the pad is in this program's mapped text, `len` bytes long.
            unsafe { arch::read_text(addr, &mut bytes[..len]) };
            let broken = match Arch::classify(addr, &bytes[..len]) {
                Ok(PadState::Disabled) => arch::check_head(addr),
                Ok(other) => Some(format!(
                    "pad at {addr:#x} is {other:?} before the tracer touched it (a debugger or another patcher?)"
                )),
                Err(e) => Some(e.to_string()),
            };
            sites.push((
                Site {
                    addr,
                    stub,
                    kind: rec.kind & !FLAG_CAPTURE_STUB,
                    capturing: rec.kind & FLAG_CAPTURE_STUB != 0,
                    func: fi as u32,
                    original: Insn::new(&bytes[..len]),
                    broken: broken.map(String::into_boxed_str),
                },
                rec,
            ));
        }
        // Sort functions by path; renumber.
        let mut order: Vec<usize> = (0..funcs.len()).collect();
        order.sort_by(|a, b| funcs[*a].path.cmp(&funcs[*b].path).then(a.cmp(b)));
        let mut new_index = vec![0u32; funcs.len()];
        for (new, old) in order.iter().enumerate() {
            new_index[*old] = new as u32;
        }
        let mut sorted_funcs: Vec<Func> = order.iter().map(|i| funcs[*i].clone()).collect();
        sites.sort_by_key(|(s, _)| s.addr);
        sites.dedup_by_key(|(s, _)| s.addr);
        for (i, (s, rec)) in sites.iter_mut().enumerate() {
            s.func = new_index[s.func as usize];
            rec.func.store(s.func, Ordering::Release);
            sorted_funcs[s.func as usize].sites.push(i as u32);
        }
        Registry {
            sites: sites.into_iter().map(|(s, _)| s).collect(),
            funcs: sorted_funcs,
            objects: Vec::new(),
            seen_objects: Default::default(),
            generation: 0,
        }
    }

    /// Add the compiler pads of one object. `convertible` is called for a
    /// pad of GCC's five 1-byte NOPs and says why it cannot be used (it is
    /// converted at start-up only; see `crate::pads::discover`). Returns the
    /// functions added.
    pub fn add_object(
        &mut self,
        path: &str,
        bias: usize,
        found: Vec<crate::pads::discover::FoundFunc>,
        gcc_nops: &dyn Fn() -> String,
    ) -> usize {
        let mut added = Vec::new();
        // Not the tracer's own functions, and not a `#[traceable]` function
        // again (a program that links the runtime and is built with pads
        // too): its macro's sites already trace it.
        let traceable = |f: &crate::pads::discover::FoundFunc| {
            let i = self.sites.partition_point(|s| s.addr < f.start);
            self.sites[i..]
                .iter()
                .take_while(|s| s.addr < f.end)
                .any(|s| s.kind != tracer_core::site::KIND_FENTRY)
        };
        let found: Vec<crate::pads::discover::FoundFunc> = found
            .into_iter()
            .filter(|f| !crate::pads::discover::tracer_owned(&f.path) && !traceable(f))
            .collect();
        let renamed = distinct_names(&found);
        let first_new = self.funcs.len();
        // An object loaded before (and unloaded since) keeps its functions'
        // indices: its earlier functions, by name. The first time there
        // are none to look up.
        let earlier: HashMap<String, u32> = if self.seen_objects.insert(path.to_string()) {
            HashMap::new()
        } else {
            (0..first_new)
                .filter(|&i| self.funcs[i].object.as_deref() == Some(path))
                .map(|i| (self.funcs[i].path.to_string(), i as u32))
                .collect()
        };
        // Names of the functions added now, for copies of one function
        // (Rust symbols emitted in several codegen units): only then.
        let mut new_names: HashMap<String, u32> = HashMap::new();
        let copies = renamed.copies;
        // Functions of this object met already (those it had before it was
        // unloaded are below `first_new`, new ones above).
        let mut seen_old: Vec<bool> = Vec::new();
        self.funcs.reserve(found.len());
        self.sites.reserve(found.len());
        // One copy of the object's path for all its functions.
        let shared_path: Arc<str> = path.into();
        let mut renames = renamed.names.into_iter().peekable();
        for (k, f) in found.into_iter().enumerate() {
            // The own name is the original path's; a renamed function
            // (rare) keeps it apart.
            let (name, own) = match renames.next_if(|(i, _)| *i == k) {
                Some((_, n)) => (n, Some(Box::<str>::from(f.ident()))),
                None => (f.path, None),
            };
            let known = earlier
                .get(name.as_str())
                .or_else(|| new_names.get(name.as_str()))
                .copied();
            let fi = match known {
                Some(i) => i,
                None => {
                    let i = self.funcs.len() as u32;
                    if copies {
                        new_names.insert(name.clone(), i);
                    }
                    self.funcs.push(Func::new(
                        name,
                        own.as_deref(),
                        Some(shared_path.clone()),
                        None,
                        f.aliases,
                    ));
                    added.push(i);
                    i
                }
            };
            if let Some(func) = self.funcs.get_mut(fi as usize) {
                func.loaded = true;
            }
            let fu = fi as usize;
            if fu < first_new {
                if seen_old.is_empty() {
                    seen_old.resize(first_new, false);
                }
                if !std::mem::replace(&mut seen_old[fu], true) {
                    added.push(fi);
                }
            }
            let len = Arch::SITE_LEN;
            let mut bytes = [0u8; 16];
            // SAFETY: the site lies in an executable segment of a loaded object.
            unsafe { arch::read_text(f.site, &mut bytes[..len]) };
            let broken = if let Some(p) = &f.problem {
                Some(p.clone())
            } else if bytes[..len].iter().all(|&b| b == 0x90) && len == 5 {
                Some(gcc_nops())
            } else {
                match Arch::classify(f.site, &bytes[..len]) {
                    Ok(PadState::Disabled) => None,
                    Ok(other) => Some(not_a_nop(
                        f.site,
                        &other,
                        f.source == crate::pads::discover::PadSource::McountLoc,
                    )),
                    Err(e) => Some(e.to_string()),
                }
            };
            self.sites.push(Site {
                addr: f.site,
                stub: 0,
                kind: tracer_core::site::KIND_FENTRY,
                func: fi,
                original: Insn::new(&bytes[..len]),
                broken: broken.map(String::into_boxed_str),
                capturing: false,
            });
        }
        let n = added.len();
        self.objects.push((path.to_string(), bias, added));
        self.reindex();
        n
    }

    /// Drop the sites of an unloaded object; its functions stay (unloaded).
    /// Returns their indices.
    pub fn remove_object(&mut self, path: &str, bias: usize) -> Vec<u32> {
        let Some(i) = self
            .objects
            .iter()
            .position(|(p, b, _)| p == path && *b == bias)
        else {
            return Vec::new();
        };
        let (_, _, funcs) = self.objects.remove(i);
        // Its functions, marked (not looked up in `funcs` for every site:
        // a library of 10^5 functions would take 10^10 steps).
        let mut gone = vec![false; self.funcs.len()];
        for &f in &funcs {
            if let Some(func) = self.funcs.get_mut(f as usize) {
                func.loaded = false;
                gone[f as usize] = true;
            }
        }
        self.sites.retain(|s| {
            s.kind != tracer_core::site::KIND_FENTRY
                || !gone.get(s.func as usize).copied().unwrap_or(false)
        });
        self.reindex();
        funcs
    }

    /// Re-sort the sites and rebuild each function's site list.
    fn reindex(&mut self) {
        self.generation += 1;
        self.sites.sort_by_key(|s| s.addr);
        self.sites.dedup_by_key(|s| s.addr);
        for f in &mut self.funcs {
            f.sites.clear();
        }
        for (i, s) in self.sites.iter().enumerate() {
            if let Some(f) = self.funcs.get_mut(s.func as usize) {
                f.sites.push(i as u32);
            }
        }
    }

    /// Every site address, sorted (for the trap handler).
    pub fn addresses(&self) -> Vec<usize> {
        self.sites.iter().map(|s| s.addr).collect()
    }
}

/// Why a compiler pad that is not a NOP cannot be used.
fn not_a_nop(site: usize, state: &PadState, mcount_loc: bool) -> String {
    match state {
        PadState::Enabled { target } => {
            let mut info: libc::Dl_info = empty_dl_info();
            // SAFETY: dladdr only reads the loader's tables; `info` is ours.
            let named = unsafe { libc::dladdr(*target as *const libc::c_void, &mut info) } != 0
                && !info.dli_sname.is_null();
            let name = if named {
                // SAFETY: a NUL-terminated symbol name owned by the loader.
                unsafe { std::ffi::CStr::from_ptr(info.dli_sname) }
                    .to_string_lossy()
                    .into_owned()
            } else {
                String::new()
            };
            // `__mcount_loc` lists the calls `-pg` makes; through the PLT
            // in an executable, so the target may have no symbol.
            if mcount_loc || matches!(name.as_str(), "__fentry__" | "mcount" | "_mcount") {
                let name = if name.is_empty() { "__fentry__" } else { &name };
                format!(
                    "the pad at {site:#x} calls {name} (built with -pg but without -mnop-mcount); \
                     rebuild with -pg -mfentry -mnop-mcount -mrecord-mcount, or with \
                     -fpatchable-function-entry=5"
                )
            } else {
                format!(
                    "the pad at {site:#x} already calls {target:#x}{} before the tracer touched it \
                     (a debugger or another patcher?)",
                    if name.is_empty() { String::new() } else { format!(" ({name})") }
                )
            }
        }
        other => format!(
            "the pad at {site:#x} is {other:?} before the tracer touched it (a debugger or another \
             patcher?)"
        ),
    }
}

fn empty_dl_info() -> libc::Dl_info {
    libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    }
}

/// The name each of an object's functions is registered under: its path,
/// unless other functions of the object share it (C++ overloads, `static`
/// functions of the same name in different files), which would mix their
/// counts. Then C++ functions are named with their parameters
/// (`ns::f(int)`), and any still alike get `#2`, `#3`… in address order (the
/// first keeps the plain path). Own names are unchanged, so `f` still
/// selects them all; so does `ns::f` (see `tracer_core::pattern`).
///
/// Copies of one Rust function that the compiler emitted in several codegen
/// units carry the same mangled symbol (its hash included): they are one
/// function, registered under one name with a site for each copy, so they
/// are listed, enabled and counted together.
fn distinct_names(found: &[crate::pads::discover::FoundFunc]) -> Renamed {
    // What tells two functions apart: the address, except for copies of
    // one Rust symbol.
    fn identity(f: &crate::pads::discover::FoundFunc) -> (usize, &str) {
        if is_rust_symbol(f.symbol()) {
            (0, f.symbol())
        } else {
            (f.start, "")
        }
    }
    // The entries whose name other functions share, and whether any name
    // is carried by more than one entry. One table entry per name, and a
    // group number per entry: almost every name has one function.
    fn shared<'a>(
        names: impl Iterator<Item = &'a str>,
        found: &[crate::pads::discover::FoundFunc],
    ) -> (Vec<usize>, bool) {
        let mut groups: HashMap<&str, u32> = HashMap::with_capacity(found.len());
        // Per group: its first identity, and whether it has others.
        let mut first: Vec<((usize, &str), bool)> = Vec::new();
        let mut group = Vec::with_capacity(found.len());
        for (i, n) in names.enumerate() {
            let id = identity(&found[i]);
            let g = *groups.entry(n).or_insert_with(|| {
                first.push((id, false));
                (first.len() - 1) as u32
            });
            let e = &mut first[g as usize];
            if e.0 != id {
                e.1 = true;
            }
            group.push(g);
        }
        let repeated = groups.len() < group.len();
        let shared = (0..group.len())
            .filter(|&i| first[group[i] as usize].1)
            .collect();
        (shared, repeated)
    }
    let (clash, copies) = shared(found.iter().map(|f| f.path.as_str()), found);
    if clash.is_empty() {
        return Renamed {
            names: Vec::new(),
            copies,
        };
    }
    let mut names: Vec<String> = found.iter().map(|f| f.path.clone()).collect();
    let mut renamed = vec![false; found.len()];
    // Paths shared by different functions: C++ ones get their parameters.
    for i in clash {
        if found[i].symbol().starts_with("_Z") {
            if let Some(p) = with_params(found[i].symbol()) {
                names[i] = p;
                renamed[i] = true;
            }
        }
    }
    // Whatever is still shared by different functions: number them, in the
    // order of their lowest address.
    let (still, copies) = shared(names.iter().map(|n| n.as_str()), found);
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    for i in still {
        by_name.entry(names[i].clone()).or_default().push(i);
    }
    for idx in by_name.into_values() {
        let mut first: HashMap<(usize, &str), usize> = HashMap::new();
        for &i in &idx {
            let e = first.entry(identity(&found[i])).or_insert(usize::MAX);
            *e = (*e).min(found[i].start);
        }
        if first.len() < 2 {
            continue;
        }
        let mut order: Vec<usize> = first.values().copied().collect();
        order.sort_unstable();
        for i in idx {
            let k = order
                .binary_search(&first[&identity(&found[i])])
                .unwrap_or(0);
            if k > 0 {
                names[i] = format!("{}#{}", names[i], k + 1);
                renamed[i] = true;
            }
        }
    }
    Renamed {
        names: names
            .into_iter()
            .enumerate()
            .filter(|(i, _)| renamed[*i])
            .collect(),
        copies,
    }
}

/// [`distinct_names`]'s answer.
struct Renamed {
    /// The functions not registered under their path: `(position, name)`,
    /// by position.
    names: Vec<(usize, String)>,
    /// Some name is carried by more than one of them (copies of one
    /// function).
    copies: bool,
}

/// Is `symbol` a Rust mangled name (legacy with its hash, or v0)?
fn is_rust_symbol(symbol: &str) -> bool {
    (symbol.starts_with("_R") || (symbol.starts_with("_ZN") && symbol.contains("17h")))
        && rustc_demangle::try_demangle(symbol).is_ok()
}

/// A C++ symbol demangled with its parameters, without the return type.
fn with_params(symbol: &str) -> Option<String> {
    if rustc_demangle::try_demangle(symbol).is_ok() {
        return None; // Rust's legacy mangling starts with _ZN too
    }
    let sym = cpp_demangle::Symbol::new(symbol).ok()?;
    sym.demangle(&cpp_demangle::DemangleOptions::new().no_return_type())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pads::discover::{FoundFunc, PadSource};

    fn found(symbol: &str, start: usize) -> FoundFunc {
        let path = crate::pads::discover::demangle(symbol);
        FoundFunc {
            symbol: symbol.to_string(),
            path,
            start,
            end: start + 16,
            site: start,
            source: PadSource::PatchableEntry,
            problem: None,
            aliases: Vec::new(),
        }
    }

    #[test]
    fn rust_copies_are_one_function_and_c_statics_stay_apart() {
        let rust = "_ZN3app5cache6lookup17h0123456789abcdefE";
        let other = "_ZN3app5cache6lookup17hfedcba9876543210E";
        let fs = [
            found(rust, 0x1000),
            found("helper", 0x2000),
            found(rust, 0x3000),
            found("helper", 0x4000),
            found(other, 0x5000),
        ];
        let r = distinct_names(&fs);
        let mut names: Vec<String> = fs.iter().map(|f| f.path.clone()).collect();
        for (i, n) in r.names {
            names[i] = n;
        }
        assert!(r.copies);
        assert_eq!(
            names,
            [
                "app::cache::lookup",
                "helper",
                "app::cache::lookup",
                "helper#2",
                "app::cache::lookup#2"
            ]
        );
        assert!(!is_rust_symbol("_ZN2ns5Klass6methodEi"));
        assert!(is_rust_symbol("_RNvNtCs1234_3app5cache6lookup"));
    }
    /// The own name is kept as a part of the path where it is its tail,
    /// and apart where not (a generic method, a clone suffix, a function
    /// renamed to tell copies apart); either way it reads back the same.
    #[test]
    fn own_names_read_back_whether_kept_in_the_path_or_apart() {
        let cases: [(&str, Option<&str>, &str, bool); 6] = [
            ("app::cache::lookup", None, "lookup", false),
            ("leaf", None, "leaf", false),
            ("<app::Db as app::Store>::get", None, "get", false),
            (
                "Searcher::search_reader::<grep::Sink>",
                None,
                "search_reader",
                true,
            ),
            ("foo.cold", None, "foo", true),
            ("helper#2", Some("helper"), "helper", true),
        ];
        for (path, given, ident, apart) in cases {
            let f = Func::new(path.to_string(), given, None, None, Vec::new());
            assert_eq!(f.ident(), ident, "{path}");
            assert_eq!(&*f.path, path);
            assert_eq!(f.extra.is_some(), apart, "{path}: kept apart");
            assert!(f.aliases().is_empty());
        }
        let f = Func::new(
            "__foo".to_string(),
            None,
            None,
            None,
            vec!["foo".to_string()],
        );
        assert_eq!(
            (f.ident(), f.aliases()),
            ("__foo", &["foo".to_string()][..])
        );
    }

    /// What every registered function costs, whatever it is: a program has
    /// 10^5-10^6 of them (issue 12: at most 200 bytes each while idle).
    #[test]
    fn a_function_and_a_site_stay_small() {
        assert!(
            std::mem::size_of::<Func>() <= 80,
            "{}",
            std::mem::size_of::<Func>()
        );
        assert!(
            std::mem::size_of::<Site>() <= 56,
            "{}",
            std::mem::size_of::<Site>()
        );
    }
}
