//! x86-64: a pad whose `call rel32` cannot reach its target (more than
//! ±2 GiB away) is enabled through a veneer placed within reach, runs, and is
//! disabled back to its NOP. The veneer is a bare absolute jump: it touches
//! no register and no stack, so the target sees exactly what the pad's call
//! left (the return address on top of the stack).
#![cfg(target_arch = "x86_64")]

use std::sync::atomic::{AtomicU64, Ordering};

static FAR_CALLS: AtomicU64 = AtomicU64::new(0);
static SEEN_RETURN: AtomicU64 = AtomicU64::new(0);

// Counts its calls and records the return address it was given.
std::arch::global_asm!(
    ".globl tracer_test_far_target_x86",
    ".p2align 4",
    "tracer_test_far_target_x86:",
    "lock inc qword ptr [rip + {calls}]",
    "mov rax, qword ptr [rsp]",
    "mov qword ptr [rip + {seen}], rax",
    "ret",
    calls = sym FAR_CALLS,
    seen = sym SEEN_RETURN,
);

extern "C" {
    fn tracer_test_far_target_x86();
}

const NOP5: [u8; 5] = [0x0f, 0x1f, 0x44, 0x00, 0x00];

#[test]
fn a_pad_beyond_call_reach_goes_through_a_veneer() {
    tracer_tests::fresh_process!();
    let target = tracer_test_far_target_x86 as *const () as usize;
    // A page 8 GiB away from the target: beyond a rel32 call's reach.
    let hint = (target & !0xfff).wrapping_add(8 << 30);
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
        let b = p as *mut u8;
        std::ptr::copy_nonoverlapping(NOP5.as_ptr(), b, 5);
        *b.add(5) = 0xc3; // ret
        assert_eq!(
            libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC),
            0
        );
        p as usize
    };
    assert!(
        page.abs_diff(target) > 4 << 30,
        "the mapping landed near the target"
    );
    let site = page;
    // SAFETY: the page holds a complete function (nop5; ret).
    let f: extern "C" fn() = unsafe { std::mem::transmute(page) };
    f();
    assert_eq!(FAR_CALLS.load(Ordering::SeqCst), 0);

    let r = tracer::__private::patch_raw_sites(&[site], target, true).unwrap();
    assert_eq!(r.changed, vec![site], "{r:?}");
    // SAFETY: reading our own page.
    let op = unsafe { std::ptr::read_volatile(site as *const u8) };
    assert_eq!(op, 0xe8, "a call rel32 now: {op:#x}");
    // SAFETY: as above.
    let rel = unsafe { std::ptr::read_unaligned((site + 1) as *const i32) };
    let veneer = (site + 5).wrapping_add(rel as isize as usize);
    assert_ne!(veneer, target, "the call cannot reach the target itself");
    f();
    f();
    assert_eq!(
        FAR_CALLS.load(Ordering::SeqCst),
        2,
        "the call went through the veneer"
    );
    assert_eq!(
        SEEN_RETURN.load(Ordering::SeqCst) as usize,
        site + 5,
        "the target saw the pad's return address on top of the stack"
    );

    // Enabling again changes nothing (same veneer); disabling restores the NOP.
    let again = tracer::__private::patch_raw_sites(&[site], target, true).unwrap();
    assert_eq!(again.unchanged, vec![site]);
    let r = tracer::__private::patch_raw_sites(&[site], target, false).unwrap();
    assert_eq!(r.changed, vec![site], "{r:?}");
    let mut now = [0u8; 5];
    // SAFETY: as above.
    unsafe { std::ptr::copy_nonoverlapping(site as *const u8, now.as_mut_ptr(), 5) };
    assert_eq!(now, NOP5);
    f();
    assert_eq!(FAR_CALLS.load(Ordering::SeqCst), 2);
}
