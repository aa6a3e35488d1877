//! The in-process collector: drains every thread's ring into per-function
//! latency histograms (`tracer_core::loghist`: sparse, within 0.8 %), so `latency()`
//! works with no reader attached.
//!
//! It runs on its own thread, never on the program's: every millisecond while
//! any function is enabled or a ring holds events (at once again after a
//! large drain), parked otherwise (no CPU while idle). `latency()` also drains synchronously first, so a summary
//! covers every call completed before it was asked for.
//!
//! **Single consumer.** While the `tracer` program reads the rings through
//! shared memory (the agent calls [`set_external`]), this collector consumes
//! nothing: it neither drains nor recycles, and parks. `latency()` then still
//! has exact counts, minimum, maximum and mean: the hooks count every exit
//! in their thread's counters meanwhile. Its percentiles cover only what
//! was drained here before the reader came. When the reader detaches the
//! collector resumes (dead threads' blocks are recycled only then).
//!
//! **Exact totals.** Every completed call is counted once: by this
//! collector from its exit event, or by its thread's hook, which counts the
//! exits it drops from a full ring and, while a reader is attached, all of
//! them (their events carry `FLAG_COUNTED`, and are not counted here
//! again). Percentiles come from the exit events drained here; an exit
//! dropped from a full ring is missing from the histogram, and the summary
//! says how many in `lost`.

use crate::clock;
use crate::thread::{self, ThreadState};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tracer_core::event::{Event, FLAG_COUNTED, KIND_EXIT};
use tracer_core::loghist::LogHist;
use tracer_core::metrics::native::NativeHist;

/// Exact totals of one function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Completed calls.
    pub count: u64,
    /// Sum of durations, ticks.
    pub sum: u64,
    /// Shortest, ticks.
    pub min: u64,
    /// Longest, ticks.
    pub max: u64,
}

impl Totals {
    fn add(&mut self, count: u64, sum: u64, min: u64, max: u64) {
        if count == 0 {
            return;
        }
        self.min = if self.count == 0 {
            min
        } else {
            self.min.min(min)
        };
        self.max = self.max.max(max);
        self.count += count;
        self.sum = self.sum.wrapping_add(sum);
    }
}

/// A sink for every drained event, with the producing thread's id.
pub type EventTap = Box<dyn FnMut(u64, &Event) + Send>;

/// What the collector keeps of one function, made at its first counted
/// call: a whole program can have 10^5-10^6 functions, most never enabled,
/// and an idle one costs one pointer here.
#[derive(Debug, Default)]
pub struct FuncStats {
    /// Durations in ns, as small as their spread (a few hundred bytes for
    /// most functions).
    pub hist: LogHist,
    /// The same durations in Prometheus native-histogram buckets (exact
    /// counts, for the `TRACER_METRICS` endpoint's protobuf exposition).
    pub native: NativeHist,
    /// The exits counted here from their events (every exit its hook did
    /// not count: see the module's documentation), and the counters of
    /// threads that have exited.
    pub counted: Totals,
    /// Totals taken out by `reset`, subtracted from the live counts.
    pub baseline: Totals,
}

/// Collected state.
pub struct Collector {
    /// Per function, made at its first counted call.
    pub funcs: Vec<Option<Box<FuncStats>>>,
    /// Events seen, all kinds.
    pub events: u64,
    /// Drops, unmatched exits and nested events of threads that have exited.
    pub retired_drops: [u64; 3],
    /// An event sink besides the histograms (the agent's forwarder).
    pub tap: Option<EventTap>,
}

static COLLECTOR: OnceLock<Mutex<Collector>> = OnceLock::new();
static ACTIVE_FUNCS: AtomicUsize = AtomicUsize::new(0);
static STARTED: AtomicBool = AtomicBool::new(false);
static WORKER: Mutex<Option<std::thread::Thread>> = Mutex::new(None);
/// Set by [`stop`]: the collector thread ends at its next turn.
static QUIT: AtomicBool = AtomicBool::new(false);

fn wake_worker() {
    if let Some(w) = WORKER.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        w.unpark();
    }
}
static EXTERNAL: AtomicBool = AtomicBool::new(false);
/// Events the collector thread takes from each ring per turn.
const TURN_EVENTS: usize = 16 * 1024;

/// Hand the rings to an external reader (`true`) or take them back. Returns
/// once no in-process drain is running any more, so from then on the reader
/// is the rings' only consumer.
///
/// Handing them over, the hooks are first told to count every exit
/// themselves ([`thread::count_in_hooks`]), then the rings are drained one
/// last time here: every exit is counted in the process, by a hook or by
/// this drain, none by the reader alone.
pub fn set_external(on: bool) {
    if on {
        thread::count_in_hooks(true);
        let mut c = COLLECTOR.get().map(|_| lock());
        if let Some(c) = c.as_mut() {
            // Count only: the reader's `attach` waits for this drain, and
            // recording 10^5-10^6 pending durations would hold it up.
            c.drain_counting();
        }
        EXTERNAL.store(true, Ordering::Release);
        drop(c);
    } else {
        EXTERNAL.store(false, Ordering::Release);
        // Exits the reader may still have left in the rings are flagged as
        // counted: the drains from now on skip them.
        thread::count_in_hooks(false);
    }
    wake_worker();
}

/// Whether an external reader owns the rings.
pub fn external() -> bool {
    EXTERNAL.load(Ordering::Acquire)
}

/// Set up for `nfuncs` functions and start the collector thread.
pub fn init(nfuncs: usize) {
    COLLECTOR.get_or_init(|| {
        Mutex::new(Collector {
            funcs: (0..nfuncs).map(|_| None).collect(),
            events: 0,
            retired_drops: [0; 3],
            tap: None,
        })
    });
    spawn();
}

fn spawn() {
    if !STARTED.swap(true, Ordering::AcqRel) {
        match crate::trap::spawn_own_thread("tracer-collector", run) {
            Ok(h) => {
                *WORKER.lock().unwrap_or_else(|e| e.into_inner()) = Some(h.thread().clone());
            }
            Err(e) => {
                // Tracing still works: `latency()` drains synchronously. Only
                // the background draining (and so rings' headroom) is lost.
                STARTED.store(false, Ordering::Release);
                eprintln!(
                    "tracer: warning: cannot start the collector thread ({e}); rings are drained only \
                     when latency() is called, so busy threads may drop events"
                );
            }
        }
    }
}

/// Lock the collector.
pub fn lock() -> MutexGuard<'static, Collector> {
    COLLECTOR
        .get()
        .expect("collector used before init")
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Tell the collector how many functions are enabled (wakes it up).
pub fn set_active(n: usize) {
    ACTIVE_FUNCS.store(n, Ordering::Release);
    wake_worker();
}

/// End the collector thread (the agent quits, `tracer detach`); waits (2 s
/// at most) until it has. [`restart`] starts it again.
pub fn stop() {
    if !STARTED.load(Ordering::Acquire) {
        return;
    }
    QUIT.store(true, Ordering::Release);
    wake_worker();
    let t0 = std::time::Instant::now();
    while STARTED.load(Ordering::Acquire) && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Start the collector thread again after [`stop`] (if the runtime was
/// set up).
pub fn restart() {
    if COLLECTOR.get().is_some() && !STARTED.load(Ordering::Acquire) {
        spawn();
    }
}

fn run() {
    // A thread of the runtime's own, not the main one: where the hooks'
    // thread-local block pointer sits (x86-64).
    crate::thread::probe_tls();
    loop {
        if QUIT.swap(false, Ordering::AcqRel) {
            STARTED.store(false, Ordering::Release);
            return;
        }
        // A bounded share of each ring per turn, so the lock is free often
        // (`latency()`, a reader's `attach` wait for it).
        let n = lock().drain_rings(true, TURN_EVENTS);
        if n >= 4096 {
            // Producers are fast: go again at once, only letting others run.
            std::thread::yield_now();
        } else if (ACTIVE_FUNCS.load(Ordering::Acquire) > 0 || n > 0) && !external() {
            std::thread::sleep(Duration::from_millis(1));
        } else {
            std::thread::park_timeout(Duration::from_secs(1));
        }
    }
}

impl Collector {
    /// Drain every ring; retire exited threads. Returns events consumed.
    pub fn drain_all(&mut self) -> usize {
        self.drain_rings(true, usize::MAX)
    }

    /// [`Collector::drain_all`], counting the exits but not recording their
    /// durations: the last drain before the rings are handed to a reader,
    /// which the reader's `attach` waits for (its calls are in `lost`).
    fn drain_counting(&mut self) -> usize {
        self.drain_rings(false, usize::MAX)
    }

    /// Drain up to `max` events of each live thread's ring (a dead thread's
    /// whole ring, before its block is recycled).
    fn drain_rings(&mut self, record: bool, max: usize) -> usize {
        clock::refine();
        if external() {
            return 0;
        }
        let mut n = 0;
        for st in thread::all() {
            if st.owner.load(Ordering::Acquire) == 0 {
                continue;
            }
            let dead = st.dead.load(Ordering::Acquire);
            if dead {
                // Twice: the thread may have written its last events while
                // the first drain ran.
                n += self.drain_one(st, record, usize::MAX);
                n += self.drain_one(st, record, usize::MAX);
                for (i, c) in st.counters().iter().enumerate() {
                    let count = c.count.load(Ordering::Relaxed);
                    if count == 0 {
                        continue;
                    }
                    let Some(r) = self.funcs.get_mut(i) else {
                        break;
                    };
                    r.get_or_insert_with(Default::default).counted.add(
                        count,
                        c.sum.load(Ordering::Relaxed),
                        c.min.load(Ordering::Relaxed),
                        c.max.load(Ordering::Relaxed),
                    );
                }
                self.retired_drops[0] += st.ring.dropped();
                self.retired_drops[1] += st.unmatched.load(Ordering::Relaxed);
                self.retired_drops[2] += st.nested.load(Ordering::Relaxed);
                thread::recycle(st);
            } else {
                n += self.drain_one(st, record, max);
            }
        }
        n
    }

    fn drain_one(&mut self, st: &ThreadState, record: bool, max: usize) -> usize {
        let tid = st.owner.load(Ordering::Relaxed);
        let funcs = &mut self.funcs;
        let tap = &mut self.tap;
        let n = st.ring.drain(max, |ev| {
            if ev.kind == KIND_EXIT {
                if let Some(f) = funcs.get_mut(ev.func as usize) {
                    let f = f.get_or_insert_with(Default::default);
                    if ev.flags & FLAG_COUNTED == 0 {
                        f.counted.add(1, ev.dur, ev.dur, ev.dur);
                    }
                    if record {
                        let ns = clock::to_ns(ev.dur).max(1);
                        f.hist.record(ns);
                        f.native.record(ns);
                    }
                }
            }
            if let Some(t) = tap {
                t(tid, &ev.as_read());
            }
        });
        self.events += n as u64;
        n
    }

    /// Make room for `n` functions (objects loaded later add some).
    pub fn ensure(&mut self, n: usize) {
        if self.funcs.len() < n {
            self.funcs.resize_with(n, || None);
        }
    }

    /// The histogram of function `f`, if it has completed a call.
    pub fn hist(&self, f: usize) -> Option<&LogHist> {
        self.funcs.get(f)?.as_deref().map(|s| &s.hist)
    }

    /// The native histogram of function `f` (the same durations as
    /// [`hist`](Self::hist)), if it has completed a call.
    pub fn native(&self, f: usize) -> Option<&NativeHist> {
        self.funcs.get(f)?.as_deref().map(|s| &s.native)
    }

    /// How many functions have their [`FuncStats`] made.
    pub fn made(&self) -> usize {
        self.funcs.iter().flatten().count()
    }

    /// Exact totals of function `f` over all threads, live and exited.
    pub fn totals(&self, f: usize) -> Totals {
        let stats = self.funcs.get(f).and_then(|s| s.as_deref());
        let mut t = stats.map(|s| s.counted).unwrap_or_default();
        for st in thread::all() {
            if st.owner.load(Ordering::Acquire) == 0 {
                continue;
            }
            if let Some(c) = st.counters().get(f) {
                t.add(
                    c.count.load(Ordering::Relaxed),
                    c.sum.load(Ordering::Relaxed),
                    c.min.load(Ordering::Relaxed),
                    c.max.load(Ordering::Relaxed),
                );
            }
        }
        let b = stats.map(|s| s.baseline).unwrap_or_default();
        if b.count > 0 {
            t.count = t.count.saturating_sub(b.count);
            t.sum = t.sum.wrapping_sub(b.sum);
        }
        t
    }

    /// Forget the latency data of every function.
    pub fn reset(&mut self) {
        self.drain_all();
        for s in self.funcs.iter_mut().flatten() {
            s.hist.reset();
            s.native.reset();
            s.baseline = Totals::default();
        }
        for f in 0..self.funcs.len() {
            let t = self.totals(f);
            if t.count == 0 {
                continue;
            }
            // min/max restart from the next call: keep only count and sum
            // as a baseline.
            let s = self.funcs[f].get_or_insert_with(Default::default);
            s.baseline = Totals {
                count: t.count,
                sum: t.sum,
                min: 0,
                max: 0,
            };
            s.counted.min = u64::MAX;
            s.counted.max = 0;
        }
        // Exact min/max cannot be un-merged; restart them per thread.
        for st in thread::all() {
            for c in st.counters() {
                c.min.store(u64::MAX, Ordering::Relaxed);
                c.max.store(0, Ordering::Relaxed);
            }
        }
    }
}
