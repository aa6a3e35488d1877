//! loom models of the two lock-free protocols, run on the real code:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p tracer-core --release --test loom
//! ```
//!
//! Under `--cfg loom` tracer-core takes its atomics and its slot cell from
//! loom (`core/src/sync.rs`), and loom runs each model below in every
//! interleaving of its threads and every outcome the memory orderings allow
//! (bounded by `LOOM_MAX_PREEMPTIONS`, 3 unless set). A slot read while it
//! may be written, or a table used after it may have been freed, fails the
//! model ("causality violation"), as do the assertions.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use tracer_core::event::{Event, OwnedRing, Ring, KIND_EXIT};
use tracer_core::publish::{Published, Readers};

fn ev(i: u64) -> Event {
    Event {
        ts: i,
        dur: i * 2 + 1,
        func: i as u32,
        depth: 0,
        kind: KIND_EXIT,
        flags: 0,
    }
}

/// Checks what one consumer saw: events in order, none torn, none twice.
fn check(seen: &[Event], last: &mut Option<u64>) {
    for e in seen {
        assert_eq!(e.dur, e.ts * 2 + 1, "torn event {e:?}");
        assert_eq!(e.func as u64, e.ts, "torn event {e:?}");
        if let Some(l) = *last {
            assert!(e.ts > l, "event {} after {l}", e.ts);
        }
        *last = Some(e.ts);
    }
}

/// The ring: the traced thread pushes `n` events into a 2-slot ring (so it
/// wraps and fills) while the consumer drains concurrently, with `drain` (the
/// in-process collector) or as the `tracer` program's reader does: through
/// its own `Ring::attach` to the memory, with `try_drain`.
/// Every slot the consumer reads was completely written before (no data
/// race on any slot: loom checks each access), events come out in order and
/// untorn, and every event is either consumed or counted as dropped.
fn ring_model(n: u64, drains: usize, try_drain: bool) {
    loom::model(move || {
        let r = Arc::new(OwnedRing::new(2));
        let producer = {
            let r = r.clone();
            thread::spawn(move || {
                let mut cached_tail = 0;
                let mut pushed = 0;
                for i in 0..n {
                    pushed += r.push(&mut cached_tail, &ev(i)) as u64;
                }
                pushed
            })
        };
        // The reader's view: attached to the same memory, header checked.
        let mem = r.header() as *const _ as *mut u8;
        // SAFETY: the ring's memory, `bytes_for(2)` bytes, 64-aligned, kept
        // alive by `r` for the whole model.
        let reader = unsafe { Ring::attach(mem, Ring::bytes_for(2)) }.unwrap();
        let mut seen = Vec::new();
        let mut last = None;
        for _ in 0..drains {
            let mut got = Vec::new();
            if try_drain {
                reader
                    .try_drain(usize::MAX, |e| got.push(*e))
                    .expect("a ring that follows the protocol is never corrupt");
            } else {
                r.drain(usize::MAX, |e| got.push(*e));
            }
            check(&got, &mut last);
            seen.extend(got);
        }
        let pushed = producer.join().unwrap();
        // After the producer is done, what is left is all there.
        let mut rest = Vec::new();
        r.drain(usize::MAX, |e| rest.push(*e));
        check(&rest, &mut last);
        seen.extend(rest);
        assert_eq!(seen.len() as u64, pushed, "consumed = pushed");
        assert_eq!(pushed + r.dropped(), n, "pushed + dropped = written");
        assert!(r.is_empty());
    });
}

#[test]
fn loom_ring_drain() {
    ring_model(5, 3, false);
}

#[test]
fn loom_ring_try_drain() {
    ring_model(5, 3, true);
}

/// What a table holds in the model: a value in a loom cell. Dropping it
/// (which `Published::replace` does once it thinks no reader holds it)
/// overwrites the value, so loom sees a write that must happen after every
/// read of the table, and reports any read it does not follow.
struct Table {
    value: loom::cell::UnsafeCell<u64>,
}

const FREED: u64 = u64::MAX;

impl Table {
    fn new(v: u64) -> Box<Table> {
        Box::new(Table {
            value: loom::cell::UnsafeCell::new(v),
        })
    }

    fn read(&self) -> u64 {
        // SAFETY: loom checks this read against the write in `drop`.
        self.value.with(|p| unsafe { *p })
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: loom checks this write against every read.
        self.value.with_mut(|p| unsafe { *p = FREED });
    }
}

/// The trap table: the signal handler (a reader) counts itself in, reads
/// the published tables (the batch's and the registered sites', both under
/// one count, as the runtime's handler does), and counts itself out; the
/// patcher (the writer) publishes a second table and then retracts it,
/// freeing each old one once no reader is counted in. A reader never reads
/// a table after (or while) it is freed, and sees either no table or a live
/// one.
#[test]
fn loom_trap_table_publish_retract() {
    loom::model(|| {
        let readers: &'static Readers = Box::leak(Box::new(Readers::new()));
        let inflight: &'static Published<'static, Table> =
            Box::leak(Box::new(Published::new(readers)));
        let sites: &'static Published<'static, Table> =
            Box::leak(Box::new(Published::new(readers)));
        inflight.replace(Some(Table::new(1)));
        sites.replace(Some(Table::new(10)));

        let handler = thread::spawn(move || {
            let guard = readers.enter();
            let a = inflight.get(&guard).map(Table::read);
            let b = sites.get(&guard).map(Table::read);
            drop(guard);
            assert_ne!(a, Some(FREED), "the batch's table was read after its free");
            assert_ne!(b, Some(FREED), "the sites' table was read after its free");
        });

        // The patcher: the next batch, the new site list, the retraction.
        inflight.replace(Some(Table::new(2)));
        sites.replace(Some(Table::new(20)));
        inflight.replace(None);
        readers.wait_idle();

        handler.join().unwrap();
    });
}

/// A handler that runs twice (two traps) while the patcher replaces the
/// table once: each run sees a live table, old or new.
#[test]
fn loom_trap_table_two_traps() {
    loom::model(|| {
        let readers: &'static Readers = Box::leak(Box::new(Readers::new()));
        let inflight: &'static Published<'static, Table> =
            Box::leak(Box::new(Published::new(readers)));
        inflight.replace(Some(Table::new(1)));

        let handler = thread::spawn(move || {
            for _ in 0..2 {
                let guard = readers.enter();
                let v = inflight.get(&guard).map(Table::read);
                drop(guard);
                assert!(matches!(v, Some(1) | Some(2)), "{v:?}");
            }
        });
        inflight.replace(Some(Table::new(2)));
        handler.join().unwrap();
    });
}
