//! Every site of the program, from the `__tracer_sites` linker section.
//!
//! Built once, before the first pad is enabled: records are read, the pads'
//! bytes checked by the backend's decoder (a pad that is not exactly the
//! expected no-op is marked broken and never written), sites sorted by address
//! and grouped into functions by their descriptor.

use crate::arch::{self, Arch};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use tracer_core::backend::{Backend, Insn, PadState};
use tracer_core::site::SiteRecord;

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
    /// Why the site can never be written, if so.
    pub broken: Option<String>,
}

/// One function.
#[derive(Debug, Clone)]
pub struct Func {
    /// Full path.
    pub path: String,
    /// Own name.
    pub ident: &'static str,
    /// Source file.
    pub file: &'static str,
    /// Source line.
    pub line: u32,
    /// Indices into [`Registry::sites`].
    pub sites: Vec<usize>,
}

/// The registry.
#[derive(Debug, Default)]
pub struct Registry {
    /// Sites sorted by address.
    pub sites: Vec<Site>,
    /// Functions sorted by path.
    pub funcs: Vec<Func>,
}

impl Registry {
    /// Is `addr` a registered site? (Binary search; async-signal-safe.)
    pub fn is_site(&self, addr: usize) -> bool {
        self.sites.binary_search_by_key(&addr, |s| s.addr).is_ok()
    }

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
                funcs.push(Func {
                    path: (desc.path)().to_string(),
                    ident: desc.ident,
                    file: desc.file,
                    line: desc.line,
                    sites: Vec::new(),
                });
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
                    kind: rec.kind,
                    func: fi as u32,
                    original: Insn::new(&bytes[..len]),
                    broken,
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
            sorted_funcs[s.func as usize].sites.push(i);
        }
        Registry {
            sites: sites.into_iter().map(|(s, _)| s).collect(),
            funcs: sorted_funcs,
        }
    }
}
