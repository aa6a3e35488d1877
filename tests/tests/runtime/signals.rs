//! A traced function called from a signal handler, on a thread that is itself
//! running traced code (and sometimes the tracer's own hook).
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

static IN_HANDLER: AtomicU64 = AtomicU64::new(0);

#[tracer::traceable]
fn from_handler(x: u64) -> u64 {
    black_box(x + 1)
}

#[tracer::traceable]
fn busy(x: u64) -> u64 {
    black_box(x ^ 0x55)
}

extern "C" fn on_usr1(_: libc::c_int) {
    IN_HANDLER.fetch_add(1, Ordering::Relaxed);
    black_box(from_handler(1));
}

#[test]
fn traced_functions_work_inside_signal_handlers() {
    tracer_tests::fresh_process!();
    // SAFETY: installing a plain handler that only touches atomics and a
    // traced function.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    assert_eq!(tracer::enable("from_handler busy").unwrap(), 2);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let w = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // One call before the signals start, so the count below is never
            // empty however the threads are scheduled (qemu-user is slow).
            black_box(busy(0));
            // SAFETY: pthread_self has no preconditions.
            tx.send(unsafe { libc::pthread_self() }).unwrap();
            let mut n = 1u64;
            while !stop.load(Ordering::Relaxed) {
                black_box(busy(n));
                n += 1;
            }
            n
        })
    };
    let t = rx.recv().unwrap();
    // Signal until the handler has run often enough (qemu-user delivers a
    // guest signal only at its next block boundary, so count, not send).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while IN_HANDLER.load(Ordering::Relaxed) < 500 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of the signals reached the handler in 120 s",
            IN_HANDLER.load(Ordering::Relaxed)
        );
        // SAFETY: the thread is alive until `stop` is set below.
        unsafe { libc::pthread_kill(t, libc::SIGUSR1) };
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    let busy_calls = w.join().unwrap();
    let handled = IN_HANDLER.load(Ordering::Relaxed);
    let s = tracer::stats();
    // No summary means no call was recorded: every handler call interrupted
    // the hook (possible under qemu, where the hook is most of the loop).
    let recorded = tracer::latency("from_handler").map_or(0, |l| l.count);
    println!(
        "handled {handled}, recorded {recorded}, nested {}, busy {busy_calls}",
        s.nested
    );
    assert!(handled >= 500);
    // Every handler call is recorded, except those that interrupted the
    // tracer's own hook (counted as nested: two events each).
    assert!(recorded <= handled);
    assert!(
        handled - recorded <= s.nested,
        "{handled} handled, {recorded} recorded, {} nested",
        s.nested
    );
    assert_eq!(tracer::latency("busy").unwrap().count, busy_calls);
    tracer::disable("from_handler busy").unwrap();
}
