//! Functions the benchmarks call: traced ones and their untraced twins, kept
//! out of line so that each call is a real call.
#![deny(missing_docs)]
use std::hint::black_box;

/// Compiler-padded C twins (`c/pads.c`), for the capture benchmark.
#[cfg(target_arch = "x86_64")]
pub mod pads {
    extern "C" {
        /// Never enabled.
        pub fn cp_disabled(x: i64, n: i32) -> i64;
        /// Enabled without capture.
        pub fn cp_enabled(x: i64, n: i32) -> i64;
        /// Enabled with `--args --retval`.
        pub fn cp_capture(x: i64, n: i32) -> i64;
    }
}

/// A small function of typical size, untraced.
#[inline(never)]
pub fn untraced(x: u64) -> u64 {
    black_box(x)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(17)
}

/// Its traced twin, kept disabled by the benchmark.
#[inline(never)]
#[tracer::traceable]
pub fn traced_disabled(x: u64) -> u64 {
    black_box(x)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(17)
}

/// Its traced twin, enabled by the benchmark.
#[inline(never)]
#[tracer::traceable]
pub fn traced_enabled(x: u64) -> u64 {
    black_box(x)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(17)
}

/// Its traced twin, enabled with argument and return-value capture by
/// the benchmark.
#[inline(never)]
#[tracer::traceable]
pub fn traced_capture(x: u64) -> u64 {
    black_box(x)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(17)
}

/// A small function returning an `Option`, untraced.
#[inline(never)]
pub fn untraced_option(x: u64) -> Option<u64> {
    let y = black_box(x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (y & 1 == 0).then_some(y.rotate_left(17))
}

/// Its traced twin, kept disabled (its `Option` is not captured, so the
/// pad costs what it always did).
#[inline(never)]
#[tracer::traceable]
pub fn traced_disabled_option(x: u64) -> Option<u64> {
    let y = black_box(x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (y & 1 == 0).then_some(y.rotate_left(17))
}

/// The same with `#[traceable(ret)]`: the exit pad takes the `Option` by
/// address (for its variant and payload), which this measures disabled.
#[inline(never)]
#[tracer::traceable(ret)]
pub fn traced_disabled_option_ret(x: u64) -> Option<u64> {
    let y = black_box(x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (y & 1 == 0).then_some(y.rotate_left(17))
}

/// A region of `n` raw pads (`nop5; ret`, 8 bytes apart) in executable memory,
/// and the address of a `ret` they can be made to call.
pub struct PadRegion {
    base: *mut u8,
    len: usize,
    /// The pads' addresses.
    pub sites: Vec<usize>,
    /// A `ret` the enabled pads call.
    pub target: usize,
}

impl PadRegion {
    /// Map `n` pads.
    pub fn new(n: usize) -> PadRegion {
        let len = (n * 8 + 16).div_ceil(4096) * 4096;
        // SAFETY: a fresh anonymous mapping, written before being made executable.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut u8;
            assert_ne!(base as *mut libc::c_void, libc::MAP_FAILED);
            let mut sites = Vec::with_capacity(n);
            for i in 0..n {
                let p = base.add(i * 8);
                for (j, b) in [0x0f, 0x1f, 0x44, 0x00, 0x00, 0xc3, 0xcc, 0xcc]
                    .iter()
                    .enumerate()
                {
                    *p.add(j) = *b;
                }
                sites.push(p as usize);
            }
            let target = base.add(n * 8);
            *target = 0xc3;
            assert_eq!(
                libc::mprotect(base as *mut _, len, libc::PROT_READ | libc::PROT_EXEC),
                0
            );
            PadRegion {
                base,
                len,
                sites,
                target: target as usize,
            }
        }
    }
}

impl Drop for PadRegion {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used.
        unsafe { libc::munmap(self.base as *mut _, self.len) };
    }
}
