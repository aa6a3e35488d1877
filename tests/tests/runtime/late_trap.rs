//! A thread that trapped on a site while a batch was in flight, but whose
//! handler only looks after the batch has finished (the trap byte is gone):
//! it must re-execute the site, not crash and not skip it.
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[tracer::traceable]
fn hot(x: u64) -> u64 {
    black_box(x.rotate_left(3))
}

#[test]
fn late_handlers_rewind_and_the_program_goes_on() {
    tracer_tests::fresh_process!();
    if !tracer::__private::protocol_traps() {
        // AArch64 and A32 patch with one aligned store: nothing ever traps,
        // so there is no late handler to test.
        println!(
            "{}: the protocol plants no trap; nothing to test",
            tracer::__private::backend_name()
        );
        return;
    }
    black_box(hot(1));
    // Each handler spins ~ms before looking at the table: far longer than a batch.
    tracer::__private::set_trap_handler_delay(2_000_000);
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, calls) = (stop.clone(), calls.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(hot(n), n.rotate_left(3));
                    n += 1;
                }
                calls.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let mut rounds = 0;
    while tracer::stats().traps_rewound < 3 && rounds < 2000 {
        tracer::enable("hot").unwrap();
        tracer::disable("hot").unwrap();
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    tracer::__private::set_trap_handler_delay(0);
    let s = tracer::stats();
    println!("{rounds} rounds, {s:?}");
    assert!(
        s.traps_rewound >= 3,
        "no late trap in {rounds} rounds: {s:?}"
    );
    assert_eq!(s.traps_foreign, 0, "a rewound trap must never be passed on");
    // The function still behaves, enabled and disabled.
    tracer::enable("hot").unwrap();
    assert_eq!(hot(5), 5u64.rotate_left(3));
    tracer::disable("hot").unwrap();
    assert!(tracer::latency("hot").unwrap().count >= 1);
}
