//! Bad input and faults: what the runtime refuses, and that it leaves every
//! site fully old or fully new.
// The faults are checked through x86-64 bytes (the 5-byte NOP, `e8` calls,
// a foreign `mov`) and an x86-64 seccomp filter; the ARM backends' pads,
// errors and protocols are covered by arch-arm's unit tests and by the other
// integration tests, which run under qemu.
#![cfg(target_arch = "x86_64")]
use std::hint::black_box;
use std::sync::mpsc;

#[tracer::traceable]
fn prot_fn(x: u64) -> u64 {
    black_box(x * 3)
}

#[tracer::traceable]
fn blocked_fn(x: u64) -> u64 {
    black_box(x + 5)
}

#[tracer::traceable]
fn refused_fn(x: u64) -> u64 {
    black_box(x ^ 9)
}

#[tracer::traceable]
fn twice<T: Copy + Into<u64>>(t: T) -> u64 {
    black_box(t.into() + 1)
}

/// The SIGTRAP-blocking test makes every other batch refuse: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const NOP5: [u8; 5] = [0x0f, 0x1f, 0x44, 0x00, 0x00];

fn bytes_at(addr: usize) -> [u8; 5] {
    let mut b = [0u8; 5];
    for (i, x) in b.iter_mut().enumerate() {
        // SAFETY: `addr` is a registered site: mapped, readable text.
        *x = unsafe { std::ptr::read_volatile((addr + i) as *const u8) };
    }
    b
}

fn entry_sites(name: &str) -> Vec<usize> {
    tracer::__private::sites_of(name)
        .into_iter()
        .filter(|(_, k)| *k == 0)
        .map(|(a, _)| a)
        .collect()
}

#[test]
fn protection_is_restored_exactly_after_a_batch() {
    tracer_tests::fresh_process!();
    let _serial = serial();
    black_box(prot_fn(1));
    let site = entry_sites("prot_fn")[0];
    let before = tracer::__private::page_protection(site).unwrap();
    assert_eq!(before, libc::PROT_READ | libc::PROT_EXEC);
    assert_eq!(tracer::enable("prot_fn").unwrap(), 1);
    assert_eq!(bytes_at(site)[0], 0xe8, "enabled: a call");
    assert_eq!(tracer::__private::page_protection(site), Some(before));
    assert_eq!(tracer::disable("prot_fn").unwrap(), 1);
    assert_eq!(
        bytes_at(site),
        NOP5,
        "disabled: the original NOP, byte for byte"
    );
    assert_eq!(tracer::__private::page_protection(site), Some(before));
}

#[test]
fn a_thread_blocking_sigtrap_makes_enable_refuse_and_change_nothing() {
    tracer_tests::fresh_process!();
    let _serial = serial();
    black_box(blocked_fn(1));
    let site = entry_sites("blocked_fn")[0];
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        // SAFETY: plain signal-mask calls on this thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTRAP);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        ready_tx.send(tid).unwrap();
        go_rx.recv().unwrap();
    });
    let tid = ready_rx.recv().unwrap();
    match tracer::enable("blocked_fn") {
        Err(tracer::Error::SigtrapBlocked { threads }) => {
            assert!(
                threads.iter().any(|(t, _)| *t == tid),
                "{threads:?} lacks {tid}"
            );
            let msg = tracer::Error::SigtrapBlocked { threads }.to_string();
            assert!(msg.contains("Unblock SIGTRAP"), "{msg}");
        }
        other => panic!("expected SigtrapBlocked, got {other:?}"),
    }
    assert_eq!(bytes_at(site), NOP5, "nothing written");
    assert!(
        !tracer::functions()
            .iter()
            .find(|f| f.ident == "blocked_fn")
            .unwrap()
            .enabled
    );
    go_tx.send(()).unwrap();
    t.join().unwrap();
    assert_eq!(tracer::enable("blocked_fn").unwrap(), 1);
    black_box(blocked_fn(2));
    assert_eq!(tracer::latency("blocked_fn").unwrap().count, 1);
    tracer::disable("blocked_fn").unwrap();
}

/// A seccomp filter on this thread refuses `mprotect` with write and execute,
/// as a W^X policy would.
fn forbid_wx_mprotect_on_this_thread() {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const AND_K: u16 = 0x54;
    const RET_K: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let wx = (libc::PROT_WRITE | libc::PROT_EXEC) as u32;
    let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let prog = [
        f(LD_W_ABS, 0, 0, 4),                      // arch
        f(JEQ_K, 0, 5, AUDIT_ARCH_X86_64),         // not x86-64: allow
        f(LD_W_ABS, 0, 0, 0),                      // nr
        f(JEQ_K, 0, 3, libc::SYS_mprotect as u32), // not mprotect: allow
        f(LD_W_ABS, 0, 0, 32),                     // args[2] (prot)
        f(AND_K, 0, 0, wx),
        f(JEQ_K, 1, 0, wx),                                // W and X: refuse
        f(RET_K, 0, 0, 0x7fff_0000),                       // allow
        f(RET_K, 0, 0, 0x0005_0000 | libc::EACCES as u32), // errno EACCES
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut _,
    };
    // SAFETY: a valid BPF program that outlives the call; the filter only
    // affects this thread (no TSYNC) and only refuses W+X mprotect.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const _
            ),
            0
        );
    }
}

#[test]
fn a_refused_text_write_is_a_clear_error_and_leaves_every_site_old() {
    tracer_tests::fresh_process!();
    let _serial = serial();
    black_box(refused_fn(1));
    let sites: Vec<usize> = tracer::__private::sites_of("refused_fn")
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    let before: Vec<[u8; 5]> = sites.iter().map(|&a| bytes_at(a)).collect();
    let prot = tracer::__private::page_protection(sites[0]);
    // Run in a thread of its own: the filter cannot be removed.
    let r = std::thread::spawn(|| {
        forbid_wx_mprotect_on_this_thread();
        tracer::enable("refused_fn")
    })
    .join()
    .unwrap();
    match r {
        Err(tracer::Error::Write(e)) => {
            assert!(e.message.contains("refused"), "{e}");
            assert!(e.message.contains("Nothing was changed"), "{e}");
        }
        other => panic!("expected a write error, got {other:?}"),
    }
    let after: Vec<[u8; 5]> = sites.iter().map(|&a| bytes_at(a)).collect();
    assert_eq!(before, after);
    assert_eq!(tracer::__private::page_protection(sites[0]), prot);
    assert!(
        !tracer::functions()
            .iter()
            .find(|f| f.ident == "refused_fn")
            .unwrap()
            .enabled
    );
    // From a thread without the filter it works.
    assert_eq!(tracer::enable("refused_fn").unwrap(), 1);
    tracer::disable("refused_fn").unwrap();
}

#[test]
fn a_site_changed_under_the_tracer_is_skipped_and_the_rest_goes_through() {
    tracer_tests::fresh_process!();
    let _serial = serial();
    black_box(twice(1u8));
    black_box(twice(1u32));
    let entries = entry_sites("twice");
    assert_eq!(entries.len(), 2, "one entry pad per instantiation");
    // Someone else rewrites one pad (a harmless `mov rax, rax; xchg ax, ax`).
    let victim = entries[0];
    let page = victim & !4095;
    // SAFETY: making our own text page writable, writing 5 bytes of a pad no
    // thread is executing (only this test calls `twice`), restoring it.
    unsafe {
        assert_eq!(
            libc::mprotect(
                page as *mut _,
                8192,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC
            ),
            0
        );
        for (i, b) in [0x48u8, 0x89, 0xc0, 0x66, 0x90].iter().enumerate() {
            std::ptr::write_volatile((victim + i) as *mut u8, *b);
        }
        assert_eq!(
            libc::mprotect(page as *mut _, 8192, libc::PROT_READ | libc::PROT_EXEC),
            0
        );
    }
    let r = tracer::enable_report("twice").unwrap();
    assert_eq!(r.changed, vec!["runtime::faults::twice".to_string()]);
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].1.addr, victim);
    assert!(matches!(
        r.skipped[0].1.reason,
        tracer::SkipReason::Unexpected(_)
    ));
    assert!(r.skipped[0].1.reason.to_string().contains("48 89 c0 66 90"));
    assert_eq!(
        bytes_at(victim),
        [0x48, 0x89, 0xc0, 0x66, 0x90],
        "never written"
    );
    assert_eq!(bytes_at(entries[1])[0], 0xe8, "the other site went through");
    for _ in 0..10 {
        black_box(twice(2u8));
        black_box(twice(2u32));
    }
    // Exactly one instantiation's entries are seen.
    assert_eq!(tracer::latency("twice").unwrap().count, 10);
    let d = tracer::disable_report("twice").unwrap();
    assert_eq!(d.skipped.len(), 1, "still foreign on the way back");
    assert_eq!(bytes_at(entries[1]), NOP5);
}

#[test]
fn patterns_that_match_nothing_name_the_closest() {
    tracer_tests::fresh_process!();
    let _serial = serial();
    let e = tracer::enable("prot_fm").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("no function matches 'prot_fm'"), "{msg}");
    assert!(msg.contains("runtime::faults::prot_fn"), "{msg}");
    assert!(matches!(tracer::enable(""), Err(tracer::Error::Pattern(_))));
    assert!(tracer::latency("no_such_fn").is_none());
}
