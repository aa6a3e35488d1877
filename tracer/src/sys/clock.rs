//! Timestamps for the hot path.
//!
//! x86-64 with an invariant TSC (CPUID 0x8000_0007 EDX bit 8): `rdtsc`, no
//! system call, calibrated against `CLOCK_MONOTONIC`. The calibration keeps
//! the first (TSC, monotonic) pair and refines the ratio over an ever longer
//! baseline each time [`refine`] runs (the collector calls it).
//!
//! AArch64: the generic timer's virtual count `CNTVCT_EL0`, readable at EL0
//! on Linux, with its frequency from `CNTFRQ_EL0` (exact by definition: no
//! calibration). An `isb` before the read keeps it from being taken early.
//!
//! ARMv7: `clock_gettime(CLOCK_MONOTONIC)` through the vDSO. ARMv7 has no
//! cycle counter a user program may assume it can read: `PMCCNTR` needs the
//! kernel to set `PMUSERENR`, which Linux does not, and the generic timer
//! (`CNTVCT`, `mrrc p15, 1`) is an optional extension (absent on Cortex-A8
//! and A9, where reading it is an undefined instruction). The vDSO already
//! reads the generic timer where the kernel found one, so it is the cheapest
//! honest clock there.
//!
//! Elsewhere, or without an invariant TSC (or with `TRACER_CLOCK=monotonic`):
//! `clock_gettime(CLOCK_MONOTONIC)`, already in nanoseconds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

/// A hardware counter (TSC, CNTVCT_EL0) is in use, not `CLOCK_MONOTONIC`.
static USE_TSC: AtomicBool = AtomicBool::new(false);
/// Ticks per nanosecond, as f64 bits.
static RATIO: AtomicU64 = AtomicU64::new(0);
static BASE: OnceLock<(u64, u64)> = OnceLock::new();

/// Nanoseconds of `CLOCK_MONOTONIC`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rdtsc() -> u64 {
    // SAFETY: rdtsc is available on every x86-64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(target_arch = "x86_64")]
fn invariant_tsc() -> bool {
    // SAFETY: cpuid is available on every x86-64 CPU (an unsafe fn before Rust 1.87).
    #[allow(unused_unsafe)]
    let max = unsafe { core::arch::x86_64::__cpuid(0x8000_0000) }.eax;
    if max < 0x8000_0007 {
        return false;
    }
    // SAFETY: leaf checked above.
    #[allow(unused_unsafe)]
    let edx = unsafe { core::arch::x86_64::__cpuid(0x8000_0007) }.edx;
    edx & (1 << 8) != 0 && std::env::var_os("TRACER_CLOCK").is_none_or(|v| v != "monotonic")
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn cntvct() -> u64 {
    let v: u64;
    // SAFETY: CNTVCT_EL0 is readable at EL0 on Linux (CNTKCTL_EL1.EL0VCTEN);
    // `isb` and `mrs` touch no memory.
    unsafe { core::arch::asm!("isb", "mrs {0}, cntvct_el0", out(reg) v, options(nomem, nostack)) };
    v
}

#[cfg(target_arch = "aarch64")]
fn cntfrq() -> u64 {
    let v: u64;
    // SAFETY: CNTFRQ_EL0 is readable at EL0; no memory is touched.
    unsafe { core::arch::asm!("mrs {0}, cntfrq_el0", out(reg) v, options(nomem, nostack)) };
    v
}

/// The current timestamp in raw ticks.
#[inline(always)]
pub fn now() -> u64 {
    #[cfg(target_arch = "x86_64")]
    if USE_TSC.load(Ordering::Relaxed) {
        return rdtsc();
    }
    #[cfg(target_arch = "aarch64")]
    if USE_TSC.load(Ordering::Relaxed) {
        return cntvct();
    }
    monotonic_ns()
}

/// The current timestamp if it can be read inline (the TSC, CNTVCT_EL0),
/// else `None`.
#[inline(always)]
pub fn fast_now() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    if USE_TSC.load(Ordering::Relaxed) {
        return Some(rdtsc());
    }
    #[cfg(target_arch = "aarch64")]
    if USE_TSC.load(Ordering::Relaxed) {
        return Some(cntvct());
    }
    None
}

/// Name of the clock in use.
pub fn source() -> &'static str {
    if !USE_TSC.load(Ordering::Relaxed) {
        "monotonic"
    } else if cfg!(target_arch = "aarch64") {
        "cntvct"
    } else {
        "tsc"
    }
}

/// Choose the clock and take a first calibration (about 10 ms with a TSC;
/// none with `CNTVCT_EL0`, whose frequency is given).
pub fn init() {
    BASE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if invariant_tsc() {
            let (t0, m0) = (rdtsc(), monotonic_ns());
            std::thread::sleep(std::time::Duration::from_millis(10));
            let (t1, m1) = (rdtsc(), monotonic_ns());
            let r = (t1 - t0) as f64 / (m1 - m0) as f64;
            if r.is_finite() && r > 0.01 {
                RATIO.store(r.to_bits(), Ordering::Relaxed);
                USE_TSC.store(true, Ordering::Release);
                return (t0, m0);
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            let freq = cntfrq();
            if freq > 0 && std::env::var_os("TRACER_CLOCK").is_none_or(|v| v != "monotonic") {
                RATIO.store((freq as f64 / 1e9).to_bits(), Ordering::Relaxed);
                USE_TSC.store(true, Ordering::Release);
                return (cntvct(), monotonic_ns());
            }
        }
        RATIO.store(1f64.to_bits(), Ordering::Relaxed);
        (0, 0)
    });
}

/// Refine the TSC ratio over the baseline since [`init`].
pub fn refine() {
    #[cfg(target_arch = "x86_64")]
    if USE_TSC.load(Ordering::Acquire) {
        if let Some(&(t0, m0)) = BASE.get() {
            let (t1, m1) = (rdtsc(), monotonic_ns());
            if m1 > m0 + 50_000_000 {
                let r = (t1 - t0) as f64 / (m1 - m0) as f64;
                if r.is_finite() && r > 0.01 {
                    RATIO.store(r.to_bits(), Ordering::Relaxed);
                }
            }
        }
    }
}

/// Ticks per nanosecond.
pub fn ticks_per_ns() -> f64 {
    let r = f64::from_bits(RATIO.load(Ordering::Relaxed));
    if r > 0.0 {
        r
    } else {
        1.0
    }
}

/// A tick count as nanoseconds.
pub fn to_ns(ticks: u64) -> u64 {
    (ticks as f64 / ticks_per_ns()).round() as u64
}

/// A timestamp as nanoseconds of `CLOCK_MONOTONIC`.
pub fn ts_to_monotonic_ns(ts: u64) -> u64 {
    match BASE.get() {
        Some(&(t0, m0)) if USE_TSC.load(Ordering::Relaxed) => {
            let d = ts as i128 - t0 as i128;
            (m0 as i128 + (d as f64 / ticks_per_ns()) as i128).max(0) as u64
        }
        _ => ts,
    }
}
