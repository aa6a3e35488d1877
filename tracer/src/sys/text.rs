//! Writing the program's own code while it runs.
//!
//! **How text is written: an RWX window with `mprotect`.** Before the first
//! write of a batch, every page the batch touches is made
//! read-write-execute; after the last sync each page gets back exactly the
//! protection `/proc/self/maps` showed for it. Why not `/proc/self/mem`:
//! its multi-byte writes are not atomic, every write is a system call
//! (≈ 2.7 µs a byte, against ≈ 3–4 µs per `mprotect` *range* here), and Linux
//! ≥ 6.12 can forbid it (`proc_mem.force_override`). The protocols only ever
//! need aligned atomic stores of 1, 2 or 4 bytes, which plain stores into a
//! writable page give. Read-write without execute would fault every thread
//! running on those pages, hence RWX. All pages are made writable before any
//! byte is written, so a refusal (a W^X policy, SELinux `execmod`, seccomp)
//! leaves every site fully old.
//!
//! **Cache maintenance** (ARM only): the ranges written in a phase are
//! cleaned to the point of unification and invalidated from the instruction
//! caches before the phase's sync (see `arch::flush_icache`).
//!
//! **Sync** is `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)`,
//! registered once: every thread of the process executes a core-serialising
//! instruction before the call returns. Where the kernel refuses it, the
//! fallback is an `mprotect` round trip on a private page this process has
//! touched, which makes the kernel shoot down that TLB entry with an IPI on
//! every CPU running the process; the interrupt's return is serialising.

use crate::arch;
use crate::trap;
use std::sync::atomic::{AtomicU8, Ordering};
use tracer_core::backend::InflightSite;
use tracer_core::engine::{TextWriter, WriteError};

const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 5;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 6;

/// 0 = not set up, 1 = membarrier, 2 = mprotect fallback.
static SYNC_MODE: AtomicU8 = AtomicU8::new(0);
static FALLBACK_PAGE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

fn errno_text() -> String {
    std::io::Error::last_os_error().to_string()
}

/// Register for membarrier SYNC_CORE once, or set up the fallback.
pub fn init_sync() -> &'static str {
    if SYNC_MODE.load(Ordering::Acquire) == 0 {
        // SAFETY: membarrier takes plain integers.
        let r = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
                0,
                0,
            )
        };
        // The fallback page is mapped in either mode: membarrier can still
        // fail later (a seccomp filter installed after start-up).
        {
            let ps = page_size();
            // SAFETY: a fresh anonymous private mapping; no existing memory is affected.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    ps,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                FALLBACK_PAGE.store(p as usize, Ordering::Release);
            }
        }
        if r == 0 && std::env::var_os("TRACER_NO_MEMBARRIER").is_none() {
            SYNC_MODE.store(1, Ordering::Release);
        } else if FALLBACK_PAGE.load(Ordering::Acquire) != 0 {
            SYNC_MODE.store(2, Ordering::Release);
        }
    }
    sync_mode_name()
}

/// Is there a way to sync cores? Without one no batch may run.
pub fn sync_available() -> bool {
    SYNC_MODE.load(Ordering::Acquire) != 0
}

/// Which sync is in use.
pub fn sync_mode_name() -> &'static str {
    match SYNC_MODE.load(Ordering::Acquire) {
        1 => "membarrier-sync-core",
        2 => "mprotect-ipi",
        _ => "none",
    }
}

/// Make every thread serialise its instruction stream.
pub fn sync_cores() {
    if SYNC_MODE.load(Ordering::Acquire) == 1 {
        // SAFETY: registered in init_sync; plain integers.
        let r = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
                0,
                0,
            )
        };
        if r == 0 {
            return;
        }
    }
    let p = FALLBACK_PAGE.load(Ordering::Acquire);
    if p != 0 {
        let ps = page_size();
        // SAFETY: our own private page: write it so it is in the TLB of this
        // CPU, then take write permission away and give it back; the kernel
        // flushes the TLB of every CPU running this mm with an IPI.
        unsafe {
            std::ptr::write_volatile(p as *mut u8, 1);
            libc::mprotect(p as *mut libc::c_void, ps, libc::PROT_READ);
            libc::mprotect(
                p as *mut libc::c_void,
                ps,
                libc::PROT_READ | libc::PROT_WRITE,
            );
        }
    }
    std::sync::atomic::fence(Ordering::SeqCst);
}

/// A page range and the protection it had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    start: usize,
    end: usize,
    prot: libc::c_int,
}

/// The mappings of this process as `(start, end, prot)`.
fn mappings() -> Result<Vec<Segment>, WriteError> {
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| WriteError {
        message: format!(
            "cannot read /proc/self/maps to learn the text's protection: {e}; mount /proc"
        ),
    })?;
    Ok(parse_maps(&maps))
}

fn parse_maps(maps: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut it = line.split_whitespace();
        let (Some(range), Some(perms)) = (it.next(), it.next()) else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        else {
            continue;
        };
        let p = perms.as_bytes();
        let mut prot = 0;
        if p.first() == Some(&b'r') {
            prot |= libc::PROT_READ;
        }
        if p.get(1) == Some(&b'w') {
            prot |= libc::PROT_WRITE;
        }
        if p.get(2) == Some(&b'x') {
            prot |= libc::PROT_EXEC;
        }
        out.push(Segment { start, end, prot });
    }
    out
}

/// Split page-aligned runs along the mappings, each with its protection.
fn segments_for(runs: &[(usize, usize)], maps: &[Segment]) -> Result<Vec<Segment>, WriteError> {
    let mut out = Vec::new();
    for &(start, end) in runs {
        let mut cur = start;
        while cur < end {
            let m = maps
                .iter()
                .find(|m| m.start <= cur && cur < m.end)
                .ok_or_else(|| WriteError {
                    message: format!("address {cur:#x} is not mapped; the site table is stale (was a library unloaded?)"),
                })?;
            let e = end.min(m.end);
            out.push(Segment {
                start: cur,
                end: e,
                prot: m.prot,
            });
            cur = e;
        }
    }
    Ok(out)
}

/// Merge byte ranges into sorted, page-aligned, non-overlapping runs. Sorted
/// input (the engine's) is merged as it streams by, in memory that grows
/// with the runs, not with the ranges.
fn page_runs(ranges: &mut dyn Iterator<Item = (usize, usize)>, ps: usize) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut sorted = true;
    for (s, e) in ranges.map(|(s, e)| (s & !(ps - 1), (e + ps - 1) & !(ps - 1))) {
        match out.last_mut() {
            Some(last) if s >= last.0 && s <= last.1 => last.1 = last.1.max(e),
            Some(last) => {
                sorted &= s > last.1;
                out.push((s, e));
            }
            None => out.push((s, e)),
        }
    }
    if !sorted {
        out.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(out.len());
        for (s, e) in out {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        out = merged;
    }
    out
}

/// The live text writer.
#[derive(Default)]
pub struct LiveText {
    open: Vec<Segment>,
    /// Byte ranges written since the last sync, whose caches must be
    /// maintained before it (ARM; x86-64 fetches coherently and keeps none).
    dirty: Vec<(usize, usize)>,
}

fn protect(seg: &Segment, prot: libc::c_int) -> Result<(), String> {
    // SAFETY: the range is a mapped, page-aligned part of this process's
    // text; changing its protection affects no Rust-owned memory.
    let r = unsafe { libc::mprotect(seg.start as *mut libc::c_void, seg.end - seg.start, prot) };
    if r == 0 {
        Ok(())
    } else {
        Err(errno_text())
    }
}

impl TextWriter for LiveText {
    fn read(&self, addr: usize, buf: &mut [u8]) {
        // SAFETY: the engine only reads registered sites, which are mapped text.
        unsafe { arch::read_text(addr, buf) }
    }

    fn begin(
        &mut self,
        ranges: &mut dyn Iterator<Item = (usize, usize)>,
    ) -> Result<(), WriteError> {
        let runs = page_runs(ranges, page_size());
        let segs = segments_for(&runs, &mappings()?)?;
        for (i, seg) in segs.iter().enumerate() {
            if let Err(e) = protect(seg, libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) {
                for done in &segs[..i] {
                    let _ = protect(done, done.prot);
                }
                return Err(WriteError {
                    message: format!(
                        "the kernel refused to make code at {:#x}..{:#x} writable (mprotect RWX: {e}); \
                         a W^X policy (SELinux execmem/execmod, PaX, a seccomp filter) forbids live patching \
                         in this process. Nothing was changed. Allow it for this program, or trace a build \
                         without that policy",
                        seg.start, seg.end
                    ),
                });
            }
        }
        self.open = segs;
        Ok(())
    }

    fn write(&mut self, addr: usize, bytes: &[u8], atomic: bool) {
        debug_assert!(
            self.open
                .iter()
                .any(|s| s.start <= addr && addr + bytes.len() <= s.end),
            "write of {} bytes at {addr:#x} outside the opened segments {:x?}",
            bytes.len(),
            self.open
                .iter()
                .map(|s| (s.start, s.end))
                .collect::<Vec<_>>()
        );
        // SAFETY: `begin` made the pages writable; the engine writes only
        // sites of the current batch, under the engine lock.
        unsafe { arch::write_text(addr, bytes, atomic) }
        if cfg!(not(target_arch = "x86_64")) {
            self.dirty.push((addr, addr + bytes.len()));
        }
    }

    /// On ARM, first the cache maintenance of every range written in this
    /// phase (AArch64: `dc cvau`/`ic ivau` to the point of unification;
    /// ARMv7: the `cacheflush` system call), then the core sync, which on ARM
    /// is only the context synchronization (REFERENCE.md, membarrier).
    fn sync(&mut self) {
        for (start, end) in self.dirty.drain(..) {
            arch::flush_icache(start, end);
        }
        sync_cores();
    }

    fn publish(&mut self, table: Option<std::sync::Arc<Vec<InflightSite>>>) {
        trap::publish(table);
    }

    fn end(&mut self) -> Result<(), WriteError> {
        let mut failed = Vec::new();
        for seg in self.open.drain(..) {
            if let Err(e) = protect(&seg, seg.prot) {
                failed.push(format!("{:#x}..{:#x}: {e}", seg.start, seg.end));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(WriteError {
                message: format!(
                    "the patch is complete but the original protection could not be restored on {}",
                    failed.join(", ")
                ),
            })
        }
    }
}

/// The protection of the page holding `addr` now, from `/proc/self/maps`.
pub fn protection_of(addr: usize) -> Option<libc::c_int> {
    mappings()
        .ok()?
        .into_iter()
        .find(|m| m.start <= addr && addr < m.end)
        .map(|m| m.prot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_parse_and_split() {
        let maps = "5d0e0000-5d0e2000 r--p 00000000 fd:00 1 /bin/x\n\
                    5d0e2000-5d0e5000 r-xp 00002000 fd:00 1 /bin/x\n";
        let m = parse_maps(maps);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].prot, libc::PROT_READ | libc::PROT_EXEC);
        let runs = page_runs(
            &mut [(0x5d0e1ff0, 0x5d0e2004), (0x5d0e4000, 0x5d0e4005)].into_iter(),
            0x1000,
        );
        assert_eq!(
            runs,
            vec![(0x5d0e1000, 0x5d0e3000), (0x5d0e4000, 0x5d0e5000)]
        );
        // Out of order and overlapping: the same runs.
        let unsorted = page_runs(
            &mut [
                (0x5d0e4000, 0x5d0e4005),
                (0x5d0e2000, 0x5d0e2004),
                (0x5d0e1ff0, 0x5d0e2004),
            ]
            .into_iter(),
            0x1000,
        );
        assert_eq!(unsorted, runs);
        let segs = segments_for(&runs, &m).unwrap();
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[0].prot, libc::PROT_READ);
        assert_eq!(segs[1].prot, libc::PROT_READ | libc::PROT_EXEC);
        assert!(segments_for(&[(0x1000, 0x2000)], &m).is_err());
    }
}
