//! AArch64: a site whose target is beyond BL's ±128 MiB is enabled through a
//! veneer placed within reach, runs, and is disabled back to its NOP.
#![cfg(target_arch = "aarch64")]

use std::sync::atomic::{AtomicU64, Ordering};

static FAR_CALLS: AtomicU64 = AtomicU64::new(0);

// A target with the trampoline's calling convention: the pad saved LR in x9
// (`mov x9, x30`) and the BL put the site's successor in x30.
std::arch::global_asm!(
    ".globl tracer_test_far_target",
    ".p2align 2",
    "tracer_test_far_target:",
    "adrp x17, {calls}",
    "add x17, x17, :lo12:{calls}",
    "ldr x16, [x17]",
    "add x16, x16, #1",
    "str x16, [x17]",
    "mov x16, x30",
    "mov x30, x9",
    "ret x16",
    calls = sym FAR_CALLS,
);

extern "C" {
    fn tracer_test_far_target();
}

const MOV_X9_X30: u32 = 0xaa1e_03e9;
const NOP: u32 = 0xd503_201f;
const RET: u32 = 0xd65f_03c0;

#[test]
fn a_site_beyond_bl_reach_goes_through_a_veneer() {
    tracer_tests::fresh_process!();
    let target = tracer_test_far_target as *const () as usize;
    // A page 4 GiB away from the target: far beyond BL's reach.
    let hint = (target & !0xfff).wrapping_add(1 << 32);
    // SAFETY: a fresh anonymous mapping at a free address, filled before it
    // is made executable.
    let page = unsafe {
        let p = libc::mmap(
            hint as *mut libc::c_void,
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let w = p as *mut u32;
        *w = MOV_X9_X30;
        *w.add(1) = NOP;
        *w.add(2) = RET;
        assert_eq!(
            libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC),
            0
        );
        p as usize
    };
    assert!(
        page.abs_diff(target) > 128 << 20,
        "the mapping landed near the target"
    );
    tracer::__private::flush_code(page, page + 12);
    let site = page + 4;
    // SAFETY: the page holds a complete function (mov; nop; ret).
    let f: extern "C" fn() = unsafe { std::mem::transmute(page) };
    f();
    assert_eq!(FAR_CALLS.load(Ordering::SeqCst), 0);

    let r = tracer::__private::patch_raw_sites(&[site], target, true).unwrap();
    assert_eq!(r.changed, vec![site], "{r:?}");
    // SAFETY: reading our own page.
    let word = unsafe { std::ptr::read_volatile(site as *const u32) };
    assert_eq!(word & 0xfc00_0000, 0x9400_0000, "a BL now: {word:#x}");
    f();
    f();
    assert_eq!(
        FAR_CALLS.load(Ordering::SeqCst),
        2,
        "the call went through the veneer"
    );

    // Enabling again changes nothing (same veneer); disabling restores the NOP.
    let again = tracer::__private::patch_raw_sites(&[site], target, true).unwrap();
    assert_eq!(again.unchanged, vec![site]);
    let r = tracer::__private::patch_raw_sites(&[site], target, false).unwrap();
    assert_eq!(r.changed, vec![site], "{r:?}");
    // SAFETY: as above.
    assert_eq!(unsafe { std::ptr::read_volatile(site as *const u32) }, NOP);
    f();
    assert_eq!(FAR_CALLS.load(Ordering::SeqCst), 2);
}
