//! Veneers: reachable stepping stones for calls beyond a branch's reach.
//!
//! An AArch64 `BL` reaches ±128 MiB. A site whose target is farther gets a
//! veneer (`LDR X16, #8; BR X16; .quad target`, `tracer_arch_arm::aarch64::
//! encode_veneer`) in a page mapped within reach of the site, and the site
//! calls the veneer instead. `X16` (IP0) is the intra-procedure-call scratch
//! register, which the pad's contract already gives up.
//!
//! Veneers are never freed and never rewritten: a page is append-only, a
//! veneer slot is written (and the instruction cache cleaned) before any site
//! can branch to it, and [`call_target`] returns the same veneer for the same
//! (site region, target) every time, so disabling finds the target it enabled.
//! On x86-64 the same pages hold the entry stubs of compiler pads
//! ([`entry_stub`]): `push FUNC; jmp [rip]; .quad TRAMPOLINE`, within
//! ±2 GiB of the pads that call them; on AArch64 they hold those of
//! compiler pads too (`ldr x17, resume; ldr x9, tramp; ldr w16, func; br x9`
//! and the literals, [`entry_stub`]; the capturing ones, [`capture_stub`],
//! load `func | spec << 32` into `x16`), within `B` reach of the pad that
//! jumps to them. On ARMv7 every target is returned as it is.

#[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
mod imp {
    use crate::arch::Arch;
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use tracer_core::backend::{Backend, EncodeError};

    const PAGE: usize = 4096;
    /// AArch64 slots hold veneers (16 bytes) and the entry stubs of
    /// compiler pads (`tracer_arch_arm::aarch64::encode_entry_stub`).
    #[cfg(target_arch = "aarch64")]
    const SLOT: usize = 48;
    #[cfg(target_arch = "aarch64")]
    const REACH: usize = 128 << 20;
    /// x86-64 slots hold per-function entry stubs (see [`entry_stub`]).
    #[cfg(target_arch = "x86_64")]
    const SLOT: usize = 32;
    #[cfg(target_arch = "x86_64")]
    const REACH: usize = 1 << 31;

    struct Pages {
        /// (page base, bytes used)
        pages: Vec<(usize, usize)>,
        /// Within a batch ([`Batch`]): the pages made writable so far, left
        /// so until the batch ends (one `mprotect` pair per page, not per
        /// slot: 10^5 slots would otherwise cost 2·10^5 of them, each a TLB
        /// shootdown).
        open: Option<Vec<usize>>,
        /// Veneer addresses by (target, tag): the tag tells apart stubs with
        /// the same target (entry stubs: the function index + 1, or the
        /// site; 0 for a plain veneer). A map, so enabling tens of thousands
        /// of functions does not search a list for each.
        veneers: BTreeMap<(usize, u64), Vec<usize>>,
    }

    static POOL: Mutex<Pages> = Mutex::new(Pages {
        pages: Vec::new(),
        open: None,
        veneers: BTreeMap::new(),
    });

    /// Slots written while this lives stay writable (and executable, as
    /// other threads may be running stubs of the same pages) until it is
    /// dropped, which makes their pages read-only again and cleans the
    /// instruction cache. Drop it before any site can branch to a new slot.
    pub struct Batch(());

    impl Batch {
        /// Start a batch of slot writes.
        pub fn begin() -> Batch {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            pool.open.get_or_insert_with(Vec::new);
            Batch(())
        }
    }

    impl Drop for Batch {
        fn drop(&mut self) {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            for page in pool.open.take().unwrap_or_default() {
                // SAFETY: one of our veneer pages, made writable by this batch.
                unsafe { libc::mprotect(page as *mut _, PAGE, libc::PROT_READ | libc::PROT_EXEC) };
                crate::arch::flush_icache(page, page + PAGE);
            }
        }
    }

    fn make_writable(page: usize) -> Result<(), String> {
        // SAFETY: `page` is one of our veneer pages; its slots being written
        // are not yet the target of any branch, and it stays executable for
        // the stubs other threads may be running.
        let r = unsafe {
            libc::mprotect(
                page as *mut _,
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(format!(
                "cannot make the veneer page {page:#x} writable: {}",
                std::io::Error::last_os_error()
            ))
        }
    }

    fn reaches(site: usize, to: usize) -> bool {
        site.abs_diff(to) < REACH - PAGE
    }

    fn map_near(site: usize) -> Option<usize> {
        let base = site & !(PAGE - 1);
        for k in 1..64usize {
            // Steps of 1 MiB near the site, then 16 MiB farther out (x86-64).
            let step = if k < 32 { k << 20 } else { (k - 31) << 24 };
            for hint in [base.wrapping_sub(step), base.wrapping_add(step)] {
                // SAFETY: a fresh anonymous mapping at a free address (the
                // kernel refuses to replace an existing one).
                let p = unsafe {
                    libc::mmap(
                        hint as *mut libc::c_void,
                        PAGE,
                        libc::PROT_READ | libc::PROT_EXEC,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                        -1,
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    continue;
                }
                if reaches(site, p as usize) {
                    return Some(p as usize);
                }
                // An old kernel took the flag as a hint and put it elsewhere.
                // SAFETY: our own mapping, unused.
                unsafe { libc::munmap(p, PAGE) };
            }
        }
        None
    }

    fn write_slot(pool: &mut Pages, addr: usize, bytes: &[u8; SLOT]) -> Result<(), String> {
        let page = addr & !(PAGE - 1);
        if let Some(open) = pool.open.as_mut() {
            if open.last() != Some(&page) && !open.contains(&page) {
                make_writable(page)?;
                open.push(page);
            }
            // SAFETY: the page is writable for this batch; the slot is not
            // yet the target of any branch, so no thread executes it.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, SLOT) };
            // Cleaned when the batch ends, before any site branches here.
            return Ok(());
        }
        make_writable(page)?;
        // SAFETY: as above, for this one slot.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, SLOT);
            libc::mprotect(page as *mut _, PAGE, libc::PROT_READ | libc::PROT_EXEC);
        }
        crate::arch::flush_icache(addr, addr + SLOT);
        Ok(())
    }

    /// A slot within reach of `site` holding `encode(slot)`, shared by every
    /// site in reach that asks for the same `(target, tag)`.
    fn slot_for(
        site: usize,
        target: usize,
        tag: u64,
        encode: &dyn Fn(usize) -> Result<[u8; SLOT], String>,
    ) -> Result<usize, String> {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&v) = pool
            .veneers
            .get(&(target, tag))
            .and_then(|vs| vs.iter().find(|&&v| reaches(site, v)))
        {
            return Ok(v);
        }
        // The newest pages first: they are the ones with room.
        let slot = match pool
            .pages
            .iter_mut()
            .rev()
            .find(|(p, used)| *used + SLOT <= PAGE && reaches(site, *p))
        {
            Some((p, used)) => {
                let a = *p + *used;
                *used += SLOT;
                a
            }
            None => {
                let p = map_near(site).ok_or_else(|| {
                    format!(
                        "no free address within reach ({} MiB) of {site:#x} for a stub to {target:#x}",
                        REACH >> 20
                    )
                })?;
                pool.pages.push((p, SLOT));
                p
            }
        };
        let bytes = encode(slot)?;
        write_slot(&mut pool, slot, &bytes)?;
        pool.veneers.entry((target, tag)).or_default().push(slot);
        Ok(slot)
    }

    /// What the site at `site` should call to reach `target`.
    pub fn call_target(site: usize, target: usize) -> Result<usize, String> {
        match Arch::encode_call(site, target) {
            Ok(_) => return Ok(target),
            Err(EncodeError::OutOfRange { .. }) => {}
            Err(e) => return Err(e.to_string()),
        }
        #[cfg(target_arch = "aarch64")]
        return slot_for(site, target, 0, &|slot| {
            let v =
                tracer_arch_arm::aarch64::encode_veneer(slot, target).map_err(|e| e.to_string())?;
            let mut b = [0u8; SLOT];
            b[..v.len()].copy_from_slice(&v);
            Ok(b)
        });
        #[cfg(target_arch = "x86_64")]
        slot_for(site, target, 0, &|_| {
            Ok(tracer_arch_x86::pad::encode_jump_veneer(target))
        })
    }

    /// The entry stub of function `func` for a compiler pad at `site`: it
    /// pushes `site + 5` and `func` and jumps to `tramp` (see
    /// `tracer_arch_x86::pad::encode_entry_stub`). One per site; never
    /// freed.
    #[cfg(target_arch = "x86_64")]
    pub fn entry_stub(site: usize, func: u32, tramp: usize) -> Result<usize, String> {
        // Tagged by the site (an address: far above the capture stubs' and
        // the veneers' tags, which are small or have a spec in bits 32..).
        slot_for(site, tramp, site as u64 | 1 << 63, &|_| {
            Ok(tracer_arch_x86::pad::encode_entry_stub(func, site, tramp))
        })
    }

    /// The capturing entry stub of function `func` for a compiler pad at
    /// `site`: it pushes `spec` and `func` and jumps to `tramp` (see
    /// `tracer_arch_x86::trampoline_args::encode_capture_stub`). One per
    /// function, spec and 2 GiB region; never freed.
    #[cfg(target_arch = "x86_64")]
    pub fn capture_stub(site: usize, func: u32, spec: u32, tramp: usize) -> Result<usize, String> {
        slot_for(
            site,
            tramp,
            (u64::from(func) + 1) | u64::from(spec) << 32,
            &|_| {
                Ok(tracer_arch_x86::trampoline_args::encode_capture_stub(
                    func, spec, tramp,
                ))
            },
        )
    }

    /// The entry stub of function `func` for the compiler pad at `site`: it
    /// loads `func` into `w16` and the address after the pad's first
    /// instruction into `x17`, and branches to `tramp` (see
    /// `tracer_arch_arm::aarch64::encode_entry_stub`). One per site (the
    /// resume address is the site's), within `B` reach of it; never freed.
    #[cfg(target_arch = "aarch64")]
    pub fn entry_stub(site: usize, func: u32, tramp: usize) -> Result<usize, String> {
        // The tag: the site itself (never 0, which marks plain veneers).
        slot_for(site, tramp, site as u64, &|slot| {
            let v = tracer_arch_arm::aarch64::encode_entry_stub(slot, site, func, tramp)
                .map_err(|e| e.to_string())?;
            let mut b = [0u8; SLOT];
            b[..v.len()].copy_from_slice(&v);
            Ok(b)
        })
    }

    /// The capturing entry stub of function `func` for the compiler pad at
    /// `site`: [`entry_stub`]'s, with the capture `spec` beside `func` in
    /// `x16` and the capturing trampoline `tramp` as the target (see
    /// `tracer_arch_arm::aarch64::encode_capture_stub`). One per site and
    /// spec; never freed.
    #[cfg(target_arch = "aarch64")]
    pub fn capture_stub(site: usize, func: u32, spec: u32, tramp: usize) -> Result<usize, String> {
        // The tag: the site (4-aligned, below 2^52 in a Linux address space,
        // so `site >> 2` fits in 50 bits) and the spec (13 bits) above it;
        // never 0. The target already tells it from the site's plain stub.
        debug_assert!(site >> 52 == 0 && spec >> 13 == 0);
        let tag = (site as u64 >> 2) | u64::from(spec) << 51;
        slot_for(site, tramp, tag, &|slot| {
            let v = tracer_arch_arm::aarch64::encode_capture_stub(slot, site, func, spec, tramp)
                .map_err(|e| e.to_string())?;
            let mut b = [0u8; SLOT];
            b[..v.len()].copy_from_slice(&v);
            Ok(b)
        })
    }
}

#[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
pub use imp::call_target;
#[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
pub use imp::Batch;

/// A batch of veneer writes (nothing to do where there are no veneers).
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
pub struct Batch(());

#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
impl Batch {
    /// Start a batch of slot writes.
    pub fn begin() -> Batch {
        Batch(())
    }
}

/// Ending the batch: nothing was written, nothing to protect again.
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
impl Drop for Batch {
    fn drop(&mut self) {}
}
#[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
pub use imp::capture_stub;
#[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
pub use imp::entry_stub;

/// What the site at `site` should call to reach `target` (the target itself
/// where the architecture's call reaches it).
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
pub fn call_target(_site: usize, target: usize) -> Result<usize, String> {
    Ok(target)
}
