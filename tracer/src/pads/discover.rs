//! Compiler-inserted pads: found in the ELF objects of the running process.
//!
//! Compilers leave a table of pad addresses in one of two sections:
//!
//! - `__patchable_function_entries`: clang and GCC `-fpatchable-function-entry=N`,
//!   rustc `-Z patchable-function-entry=N`. One pointer per pad.
//! - `__mcount_loc`: GCC `-pg -mfentry -mnop-mcount -mrecord-mcount` (only
//!   without PIC: `-fno-pie -no-pie`). One pointer per pad.
//!
//! Both sections are allocated (`SHF_ALLOC`), so they are mapped with the
//! object. In a PIE or a shared library the file holds zeros or link-time
//! addresses and the loader fills in the real ones from `R_X86_64_RELATIVE`
//! relocations, so the table is read from **live memory** (section address +
//! load bias) after relocation: one path for every link mode. Every entry
//! must fall inside one of the object's executable segments, or it is ignored
//! (a file rewritten on disk since it was loaded cannot mislead the tracer
//! into writing elsewhere).
//!
//! Names come from the object's symbol table (`.symtab`, or `.dynsym` when the
//! object is stripped), demangled: Rust (legacy and v0, without the hash) and
//! C++ (without parameters). A pad must be the function's first instruction
//! (after an `endbr64` on x86-64, a `bti c` on AArch64): the tracer hooks
//! the return address the caller pushed (x86-64) or left in `x30`
//! (AArch64), which is only where it expects at the true entry.

use std::ffi::CStr;

/// One loaded ELF object (the executable, a shared library).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedObject {
    /// Path of the file it was loaded from.
    pub path: String,
    /// Load bias: runtime address minus link-time address.
    pub bias: usize,
    /// Executable segments, runtime `[start, end)`.
    pub exec: Vec<(usize, usize)>,
}

/// The objects currently loaded, and the loader's (adds, subs) counters.
pub fn loaded_objects() -> (Vec<LoadedObject>, u64, u64) {
    struct Acc {
        objs: Vec<LoadedObject>,
        adds: u64,
        subs: u64,
    }
    unsafe extern "C" fn cb(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid info for the duration of the
        // call; `data` is our `Acc`.
        let (info, acc) = unsafe { (&*info, &mut *(data as *mut Acc)) };
        acc.adds = info.dlpi_adds;
        acc.subs = info.dlpi_subs;
        let name = if info.dlpi_name.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated string owned by the loader.
            unsafe { CStr::from_ptr(info.dlpi_name) }
                .to_string_lossy()
                .into_owned()
        };
        let mut exec = Vec::new();
        for i in 0..info.dlpi_phnum as usize {
            // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
                let start = (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize);
                exec.push((start, start + ph.p_memsz as usize));
            }
        }
        let path = if name.is_empty() {
            // The executable (the first object) has no name here.
            if acc.objs.is_empty() {
                std::fs::read_link("/proc/self/exe")
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            } else {
                String::new() // the vDSO
            }
        } else {
            name
        };
        if !path.is_empty() && !path.starts_with("linux-vdso") && !path.starts_with("linux-gate") {
            acc.objs.push(LoadedObject {
                path,
                bias: info.dlpi_addr as usize,
                exec,
            });
        } else if acc.objs.is_empty() {
            // Keep the executable first even if its path is unknown.
            acc.objs.push(LoadedObject {
                path: String::from("(executable)"),
                bias: info.dlpi_addr as usize,
                exec,
            });
        }
        0
    }
    let mut acc = Acc {
        objs: Vec::new(),
        adds: 0,
        subs: 0,
    };
    // SAFETY: `cb` matches the callback type and only touches `acc`.
    unsafe { libc::dl_iterate_phdr(Some(cb), &mut acc as *mut Acc as *mut libc::c_void) };
    (acc.objs, acc.adds, acc.subs)
}

/// Which table a pad came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PadSource {
    /// `__patchable_function_entries`.
    PatchableEntry,
    /// `__mcount_loc`.
    McountLoc,
}

/// One function with a compiler pad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFunc {
    /// The raw symbol, when it differs from `path` (empty otherwise: a C
    /// program's 10^5 names are not kept twice); see [`FoundFunc::symbol`].
    pub symbol: String,
    /// Demangled full path (`app::cache::lookup`, `ns::Klass::method`, `leaf`).
    pub path: String,
    /// Runtime address of the symbol.
    pub start: usize,
    /// Runtime address just past the symbol (its size; 16 bytes when the
    /// symbol has none).
    pub end: usize,
    /// The pad's runtime address.
    pub site: usize,
    /// Where it was recorded.
    pub source: PadSource,
    /// Why the pad cannot be used, if so.
    pub problem: Option<String>,
    /// Other names of the same address (aliases: `__foo` and `foo`),
    /// demangled; patterns select the function by them too.
    pub aliases: Vec<String>,
}

impl FoundFunc {
    /// Own name (the path's last segment).
    pub fn ident(&self) -> &str {
        own_name(&self.path)
    }

    /// The raw symbol.
    pub fn symbol(&self) -> &str {
        if self.symbol.is_empty() {
            &self.path
        } else {
            &self.symbol
        }
    }
}

/// What one object holds.
#[derive(Debug, Clone, Default)]
pub struct ObjectScan {
    /// Functions with pads, by site address.
    pub funcs: Vec<FoundFunc>,
    /// Table entries outside the object's code (ignored).
    pub out_of_range: usize,
    /// Where the object defines `_Unwind_RaiseException`, if it does (its
    /// own copy of the unwinder, from `-static-libgcc`, or the runtime's).
    pub unwinder_at: Option<usize>,
}

struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    fn open(path: &str) -> Result<Mapped, String> {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
        let len = f
            .metadata()
            .map_err(|e| format!("cannot stat {path}: {e}"))?
            .len() as usize;
        if len == 0 {
            return Err(format!("{path} is empty"));
        }
        // SAFETY: a fresh private read-only mapping of a file we opened.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "cannot map {path}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Mapped { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes, alive while `self` is.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `open` mapped.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Does the object have pad tables at all? (Reads only the section headers.)
pub fn has_pads(obj: &LoadedObject) -> bool {
    use object::{Object, ObjectSection};
    let Ok(m) = Mapped::open(&obj.path) else {
        return false;
    };
    let Ok(file) = object::File::parse(m.bytes()) else {
        return false;
    };
    let found = file.sections().any(|s| {
        matches!(
            s.name(),
            Ok("__patchable_function_entries") | Ok("__mcount_loc")
        )
    });
    found
}

/// The pads the object's tables list (`__patchable_function_entries`,
/// `__mcount_loc`), runtime addresses inside its code, and how many entries
/// pointed elsewhere.
fn pad_table(
    file: &object::File<'_>,
    obj: &LoadedObject,
    read: &dyn Fn(usize, &mut [u8]),
) -> (Vec<(usize, PadSource)>, usize) {
    use object::{Object, ObjectSection};
    let word = if file.is_64() { 8 } else { 4 };
    let in_code = |a: usize| obj.exec.iter().any(|&(s, e)| a >= s && a < e);
    let mut sites: Vec<(usize, PadSource)> = Vec::new();
    let mut out_of_range = 0;
    for sec in file.sections() {
        let source = match sec.name() {
            Ok("__patchable_function_entries") => PadSource::PatchableEntry,
            Ok("__mcount_loc") => PadSource::McountLoc,
            _ => continue,
        };
        let (addr, size) = (sec.address() as usize, sec.size() as usize);
        if addr == 0 || size == 0 {
            continue;
        }
        let mut table = vec![0u8; size];
        read(obj.bias.wrapping_add(addr), &mut table);
        for chunk in table.chunks_exact(word) {
            let mut w = [0u8; 8];
            w[..word].copy_from_slice(chunk);
            let a = u64::from_le_bytes(w) as usize;
            if a == 0 {
                continue; // a discarded function's slot
            }
            if in_code(a) {
                sites.push((a, source));
            } else {
                out_of_range += 1;
            }
        }
    }
    (sites, out_of_range)
}

/// The pad addresses of an object, from its tables alone (no symbols, no
/// names): cheap enough for start-up.
pub fn pad_sites(obj: &LoadedObject, read: &dyn Fn(usize, &mut [u8])) -> Vec<usize> {
    let Ok(m) = Mapped::open(&obj.path) else {
        return Vec::new();
    };
    let Ok(file) = object::File::parse(m.bytes()) else {
        return Vec::new();
    };
    let sites = pad_table(&file, obj, read).0;
    sites.into_iter().map(|(a, _)| a).collect()
}

/// Does the object have a section called `name`? (Reads only the section
/// headers.)
pub fn has_section(obj: &LoadedObject, name: &str) -> bool {
    use object::{Object, ObjectSection};
    let Ok(m) = Mapped::open(&obj.path) else {
        return false;
    };
    let Ok(file) = object::File::parse(m.bytes()) else {
        return false;
    };
    let found = file.sections().any(|s| s.name() == Ok(name));
    found
}

/// Read the pad tables and name the pads of `obj`. `read(addr, buf)` reads
/// live memory of this process (the tables, after relocation).
pub fn scan(obj: &LoadedObject, read: &dyn Fn(usize, &mut [u8])) -> Result<ObjectScan, String> {
    use object::Object;
    let m = Mapped::open(&obj.path)?;
    let file = object::File::parse(m.bytes()).map_err(|e| {
        format!(
            "{} is not an ELF object this tracer can read: {e}",
            obj.path
        )
    })?;
    let mut out = ObjectScan::default();
    let (mut sites, out_of_range) = pad_table(&file, obj, read);
    out.out_of_range = out_of_range;
    if sites.is_empty() {
        return Ok(out);
    }
    sites.sort_unstable();
    sites.dedup_by_key(|s| s.0);

    // Function symbols, runtime addresses; prefer .symtab.
    let bias = obj.bias;
    fn collect<'data>(
        it: impl Iterator<Item = object::Symbol<'data, 'data>>,
        bias: usize,
    ) -> Vec<(usize, usize, &'data str, bool)> {
        use object::{ObjectSymbol, SymbolKind};
        let mut v = Vec::new();
        for s in it {
            if s.kind() != SymbolKind::Text || s.address() == 0 || s.is_undefined() {
                continue;
            }
            if let Ok(n) = s.name() {
                if !n.is_empty() {
                    // Borrowed from the mapped file: only the symbols that
                    // name a pad are copied (below).
                    v.push((
                        bias.wrapping_add(s.address() as usize),
                        s.size() as usize,
                        n,
                        s.is_global(),
                    ));
                }
            }
        }
        v
    }
    let mut syms = collect(file.symbols(), bias);
    if syms.is_empty() {
        syms = collect(file.dynamic_symbols(), bias);
    }
    out.unwinder_at = syms
        .iter()
        .find(|s| s.2 == "_Unwind_RaiseException")
        .map(|s| s.0);
    // One symbol per address: globals first, then the shorter name.
    syms.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(b.3.cmp(&a.3))
            .then(a.2.len().cmp(&b.2.len()))
    });
    // The other names of each address: aliases a user may know it by.
    let mut aliases: std::collections::HashMap<usize, Vec<String>> = Default::default();
    for w in syms.windows(2) {
        if w[0].0 == w[1].0 && w[0].2 != w[1].2 {
            aliases.entry(w[0].0).or_default().push(demangle(w[1].2));
        }
    }
    syms.dedup_by_key(|s| s.0);

    out.funcs.reserve(sites.len());
    for (site, source) in sites {
        // The last symbol starting at or before the site.
        let i = syms.partition_point(|s| s.0 <= site);
        let sym = i.checked_sub(1).map(|i| &syms[i]).filter(|s| {
            let end = if s.1 == 0 { s.0 + 16 } else { s.0 + s.1 };
            site < end
        });
        let Some(&(start, size, raw, _)) = sym else {
            let path = format!("{}+{:#x}", base_name(&obj.path), site - obj.bias);
            out.funcs.push(FoundFunc {
                symbol: String::new(),
                path,
                start: site,
                end: site + 1,
                site,
                source,
                problem: Some(format!(
                    "no symbol covers the pad at {site:#x} in {}; a stripped object cannot be named",
                    obj.path
                )),
                aliases: Vec::new(),
            });
            continue;
        };
        let path = demangle(raw);
        let mut problem = None;
        if site != start {
            let mut head = [0u8; 4];
            read(start, &mut head);
            if !(site == start + 4 && head == LANDING_PAD) {
                problem = Some(format!(
                    "the pad is {} bytes into {path}, not at its entry; only entry pads can be traced \
                     (build with -fpatchable-function-entry=N without a second, prefix argument)",
                    site - start
                ));
            }
        }
        out.funcs.push(FoundFunc {
            symbol: if path == raw {
                String::new()
            } else {
                raw.to_string()
            },
            path,
            start,
            end: start + if size == 0 { 16 } else { size },
            site,
            source,
            problem,
            aliases: aliases.remove(&start).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Crates of the tracer itself and of what its hooks and patching run
/// (the instruction decoders, the demanglers): their functions are never
/// listed, even in a program built whole with pads, as enabling them would
/// trace the tracer (or patch the code that patches).
const OWN_CRATES: &[&str] = &[
    "tracer",
    "tracer_core",
    "tracer_arch_x86",
    "tracer_arch_arm",
    "tracer_preload",
    "iced_x86",
    "yaxpeax_arm",
    "yaxpeax_arch",
    "rustc_demangle",
    "cpp_demangle",
];

/// Is the function at `path` the tracer's own (see [`OWN_CRATES`]), or one
/// of its `__tracer` helpers?
pub fn tracer_owned(path: &str) -> bool {
    if path.starts_with("__tracer") {
        return true;
    }
    // Without a ':' no reading of it has a `::` (most C names).
    if !path.contains(':') {
        return false;
    }
    let plain = tracer_core::pattern::plain_path(path);
    let p = plain.as_deref().unwrap_or(path);
    let first = p.split("::").next().unwrap_or("");
    p.contains("::") && OWN_CRATES.contains(&first)
}

/// `endbr64`: the only instruction allowed before a pad on x86-64.
pub const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
/// `bti c` (`-mbranch-protection=bti`): the only instruction allowed before
/// a pad on AArch64. (`paciasp` is not: the return address it signs is the
/// one the entry hook replaces.)
pub const BTI_C: [u8; 4] = [0x5f, 0x24, 0x03, 0xd5];
use super::per_arch::LANDING_PAD;

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Demangle a symbol: Rust (legacy or v0, without the hash), C++ (without
/// parameters or return type), or as it is.
pub fn demangle(raw: &str) -> String {
    // Only what starts as rustc-demangle's mangled names do (legacy `_ZN`,
    // `ZN`, `__ZN`; v0 `_R`, `R`, `__R`) is tried: a C program's 10^6
    // plain names skip it.
    let rust_like = ["_ZN", "ZN", "__ZN", "_R", "R", "__R"]
        .iter()
        .any(|p| raw.starts_with(p));
    if let Some(d) = rust_like
        .then(|| rustc_demangle::try_demangle(raw).ok())
        .flatten()
    {
        return format!("{d:#}");
    }
    if raw.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(raw) {
            let opts = cpp_demangle::DemangleOptions::new()
                .no_params()
                .no_return_type();
            if let Ok(s) = sym.demangle(&opts) {
                return s;
            }
        }
    }
    raw.to_string()
}

/// A function's own name: the last `::` segment of its path outside any
/// `<...>` or `(...)`, without generic arguments (`search_reader` for
/// `<S>::search_reader::<Sink>`, `max` for `ns::max<int>`) and without the
/// suffix of a compiler clone (`f` for `f.isra.0`).
pub fn own_name(path: &str) -> &str {
    let path = tracer_core::pattern::strip_clone(path);
    let b = path.as_bytes();
    let mut depth = 0i32;
    let mut cut = 0;
    let mut prev = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'<' | b'(' | b'[' => depth += 1,
            b'>' | b')' | b']' => depth -= 1,
            b':' if depth == 0 && i + 1 < b.len() && b[i + 1] == b':' => {
                prev = cut;
                cut = i + 2;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    let mut own = &path[cut..];
    // A turbofish segment (`::<Sink>`) names the arguments, not the function.
    if own.starts_with('<') && cut >= 2 {
        own = &path[prev..cut - 2];
    }
    // Trailing generic arguments (`max<int>`), unless the name is an operator.
    if own.ends_with('>') && !own.starts_with("operator") {
        let mut depth = 0i32;
        for (j, c) in own.char_indices().rev() {
            match c {
                '>' => depth += 1,
                '<' => {
                    depth -= 1;
                    if depth == 0 {
                        if j > 0 {
                            own = &own[..j];
                        }
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_demangled_without_hashes_or_parameters() {
        assert_eq!(
            demangle("_ZN3app5cache6lookup17h0123456789abcdefE"),
            "app::cache::lookup"
        );
        assert_eq!(
            demangle("_RNvNtCs1234_3app5cache6lookup"),
            "app::cache::lookup"
        );
        assert_eq!(demangle("_ZN2ns5Klass6methodEi"), "ns::Klass::method");
        assert_eq!(demangle("leaf"), "leaf");
    }

    #[test]
    fn own_names_skip_generics_and_impls() {
        assert_eq!(own_name("app::cache::lookup"), "lookup");
        assert_eq!(own_name("<app::Db as app::Store>::get"), "get");
        assert_eq!(own_name("ns::Klass<std::pair<int, int>>::m"), "m");
        assert_eq!(own_name("leaf"), "leaf");
        assert_eq!(
            own_name("<grep_searcher::searcher::Searcher>::search_reader::<grep_printer::Sink>"),
            "search_reader"
        );
        assert_eq!(own_name("ns::max<int>"), "max");
        assert_eq!(own_name("ns::operator<"), "operator<");
        assert_eq!(own_name("sqlite3BtreeClose.isra.0"), "sqlite3BtreeClose");
        assert_eq!(own_name("ns::f [clone .cold]"), "f");
        assert_eq!(own_name("<app::W>::new"), "new");
    }

    #[test]
    fn the_tracers_own_functions_are_told_apart() {
        for own in [
            "tracer::thread::on_fentry",
            "<iced_x86::decoder::Decoder as core::iter::Iterator>::next",
            "__tracer_path_3",
            "tracer_core::engine::apply_batch::<tracer_arch_x86::X86>",
        ] {
            assert!(tracer_owned(own), "{own}");
        }
        for theirs in [
            "app::tracer::run",
            "tracer_app::main",
            "core::ptr::drop_in_place::<tracer::Error>",
            "tracer",
            "main",
        ] {
            assert!(!tracer_owned(theirs), "{theirs}");
        }
    }

    #[test]
    fn the_executable_is_listed_first_with_code_ranges() {
        let (objs, adds, _) = loaded_objects();
        assert!(adds >= 1);
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(objs[0].path, exe.display().to_string());
        let here = loaded_objects as *const () as usize;
        assert!(objs[0].exec.iter().any(|&(s, e)| here >= s && here < e));
    }
}
