//! The trampoline keeps its contract: every register but r11 and the flags
//! survives an enabled pad, vector registers included (the upper halves of
//! ymm too, where the CPU has AVX).
#![cfg(target_arch = "x86_64")]

#[tracer::traceable]
fn registered() -> u64 {
    std::hint::black_box(1)
}

/// Same layout as `tracer_core::site::SiteRecord`.
#[repr(C)]
struct Record {
    pad: usize,
    stub: usize,
    desc: usize,
    kind: u32,
    func: u32,
}

#[test]
fn the_entry_trampoline_preserves_general_and_vector_registers() {
    tracer_tests::fresh_process!();
    registered();
    assert!(!tracer::functions().is_empty());
    let avx = std::arch::is_x86_feature_detected!("avx");
    let rec = Record {
        pad: 0,
        stub: 0,
        desc: 0,
        kind: 0,
        func: tracer::__private::func_index("registered").unwrap(),
    };
    let input: Vec<u8> = (0..512u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut out = vec![0u8; 512];
    let gprs_in: [u64; 9] = [
        0x1111_0000_0000_0001,
        0x2222_0000_0000_0002,
        0x3333_0000_0000_0003,
        0x4444_0000_0000_0004,
        0x5555_0000_0000_0005,
        0x6666_0000_0000_0006,
        0x7777_0000_0000_0007,
        0x8888_0000_0000_0008,
        0x9999_0000_0000_0009,
    ];
    let mut gprs_out = [0u64; 9];
    // SAFETY: calls the tracer's entry trampoline exactly as an enabled pad's
    // stub would (r11 = a site record, aligned stack, red zone free: no
    // `nostack`); every register the block touches is declared.
    unsafe {
        if avx {
            std::arch::asm!(
                "vmovdqu ymm0, [r12]", "vmovdqu ymm1, [r12 + 32]", "vmovdqu ymm2, [r12 + 64]",
                "vmovdqu ymm3, [r12 + 96]", "vmovdqu ymm4, [r12 + 128]", "vmovdqu ymm5, [r12 + 160]",
                "vmovdqu ymm6, [r12 + 192]", "vmovdqu ymm7, [r12 + 224]", "vmovdqu ymm8, [r12 + 256]",
                "vmovdqu ymm9, [r12 + 288]", "vmovdqu ymm10, [r12 + 320]", "vmovdqu ymm11, [r12 + 352]",
                "vmovdqu ymm12, [r12 + 384]", "vmovdqu ymm13, [r12 + 416]", "vmovdqu ymm14, [r12 + 448]",
                "vmovdqu ymm15, [r12 + 480]",
                "mov rax, [r14]", "mov rcx, [r14 + 8]", "mov rdx, [r14 + 16]", "mov rsi, [r14 + 24]",
                "mov rdi, [r14 + 32]", "mov r8, [r14 + 40]", "mov r9, [r14 + 48]", "mov r10, [r14 + 56]",
                "push r15",
                "push r15",
                "call __tracer_v1_tramp_entry",
                "pop r15",
                "pop r15",
                "mov [r15], rax", "mov [r15 + 8], rcx", "mov [r15 + 16], rdx", "mov [r15 + 24], rsi",
                "mov [r15 + 32], rdi", "mov [r15 + 40], r8", "mov [r15 + 48], r9", "mov [r15 + 56], r10",
                "vmovdqu [r13], ymm0", "vmovdqu [r13 + 32], ymm1", "vmovdqu [r13 + 64], ymm2",
                "vmovdqu [r13 + 96], ymm3", "vmovdqu [r13 + 128], ymm4", "vmovdqu [r13 + 160], ymm5",
                "vmovdqu [r13 + 192], ymm6", "vmovdqu [r13 + 224], ymm7", "vmovdqu [r13 + 256], ymm8",
                "vmovdqu [r13 + 288], ymm9", "vmovdqu [r13 + 320], ymm10", "vmovdqu [r13 + 352], ymm11",
                "vmovdqu [r13 + 384], ymm12", "vmovdqu [r13 + 416], ymm13", "vmovdqu [r13 + 448], ymm14",
                "vmovdqu [r13 + 480], ymm15",
                "vzeroupper",
                in("r11") &rec as *const Record,
                in("r12") input.as_ptr(),
                in("r13") out.as_mut_ptr(),
                in("r14") gprs_in.as_ptr(),
                in("r15") gprs_out.as_mut_ptr(),
                out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
                out("r8") _, out("r9") _, out("r10") _,
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _,
                out("xmm5") _, out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _,
                out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _, out("xmm14") _,
                out("xmm15") _,
            );
        } else {
            std::arch::asm!(
                "movdqu xmm0, [r12]", "movdqu xmm1, [r12 + 32]", "movdqu xmm2, [r12 + 64]",
                "movdqu xmm3, [r12 + 96]", "movdqu xmm4, [r12 + 128]", "movdqu xmm5, [r12 + 160]",
                "movdqu xmm6, [r12 + 192]", "movdqu xmm7, [r12 + 224]", "movdqu xmm8, [r12 + 256]",
                "movdqu xmm9, [r12 + 288]", "movdqu xmm10, [r12 + 320]", "movdqu xmm11, [r12 + 352]",
                "movdqu xmm12, [r12 + 384]", "movdqu xmm13, [r12 + 416]", "movdqu xmm14, [r12 + 448]",
                "movdqu xmm15, [r12 + 480]",
                "mov rax, [r14]", "mov rcx, [r14 + 8]", "mov rdx, [r14 + 16]", "mov rsi, [r14 + 24]",
                "mov rdi, [r14 + 32]", "mov r8, [r14 + 40]", "mov r9, [r14 + 48]", "mov r10, [r14 + 56]",
                "push r15",
                "push r15",
                "call __tracer_v1_tramp_entry",
                "pop r15",
                "pop r15",
                "mov [r15], rax", "mov [r15 + 8], rcx", "mov [r15 + 16], rdx", "mov [r15 + 24], rsi",
                "mov [r15 + 32], rdi", "mov [r15 + 40], r8", "mov [r15 + 48], r9", "mov [r15 + 56], r10",
                "movdqu [r13], xmm0", "movdqu [r13 + 32], xmm1", "movdqu [r13 + 64], xmm2",
                "movdqu [r13 + 96], xmm3", "movdqu [r13 + 128], xmm4", "movdqu [r13 + 160], xmm5",
                "movdqu [r13 + 192], xmm6", "movdqu [r13 + 224], xmm7", "movdqu [r13 + 256], xmm8",
                "movdqu [r13 + 288], xmm9", "movdqu [r13 + 320], xmm10", "movdqu [r13 + 352], xmm11",
                "movdqu [r13 + 384], xmm12", "movdqu [r13 + 416], xmm13", "movdqu [r13 + 448], xmm14",
                "movdqu [r13 + 480], xmm15",
                in("r11") &rec as *const Record,
                in("r12") input.as_ptr(),
                in("r13") out.as_mut_ptr(),
                in("r14") gprs_in.as_ptr(),
                in("r15") gprs_out.as_mut_ptr(),
                out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
                out("r8") _, out("r9") _, out("r10") _,
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _,
                out("xmm5") _, out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _,
                out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _, out("xmm14") _,
                out("xmm15") _,
            );
        }
    }
    assert_eq!(gprs_out[..8], gprs_in[..8], "general registers");
    let width = if avx { 32 } else { 16 };
    for r in 0..16 {
        let (i, o) = (&input[r * 32..r * 32 + width], &out[r * 32..r * 32 + width]);
        assert_eq!(i, o, "vector register {r} ({width} bytes)");
    }
    // The call really went through the hook: an entry was recorded.
    tracer::__private::drain();
    let s = tracer::stats();
    assert!(s.threads >= 1, "{s:?}");
}
