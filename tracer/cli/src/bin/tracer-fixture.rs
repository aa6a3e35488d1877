//! A fixture for the `tracer` program's tests: functions that spin for known,
//! widely different amounts of work (1 : 10 : 100), nested under `outer`.
//!
//! `tracer-fixture [THREADS]`: runs forever, THREADS workers (default 1).
//! With `TRACER_FIXTURE_ROUNDS=N` each worker does N rounds, then the
//! process exits with status 3 (to test `run`'s exit status), or with
//! `TRACER_FIXTURE_LINGER=1` stays, idle (to compare exact counts). With
//! `TRACER_FIXTURE_BURST=N` each round also calls `tiny` N times in a row
//! (to overrun small buffers). With `TRACER_FIXTURE_OPEN=1` each round also
//! opens and closes `/dev/null`; if that fails the process prints why and
//! exits with status 5 (to test that the tracer leaves it descriptors).
//! With `TRACER_FIXTURE_VALUES=1` each round also calls `lookup`, `ratio`
//! and the async `fetch` with known arguments (to test argument and
//! return-value capture).
use std::hint::black_box;

fn spin(iters: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..iters {
        x = black_box(x.wrapping_mul(31).wrapping_add(i));
    }
    x
}

/// 1 unit of work.
#[tracer::traceable]
fn fast() -> u64 {
    spin(2_000)
}

/// 10 units.
#[tracer::traceable]
fn medium() -> u64 {
    spin(20_000)
}

/// 100 units.
#[tracer::traceable]
fn slow() -> u64 {
    spin(200_000)
}

/// Almost nothing.
#[tracer::traceable]
fn tiny(i: u64) -> u64 {
    black_box(i)
}

/// Calls the others: 4 × fast, 2 × medium, 1 × slow.
#[tracer::traceable]
fn outer() -> u64 {
    let mut x = 0;
    for _ in 0..4 {
        x ^= fast();
    }
    for _ in 0..2 {
        x ^= medium();
    }
    x ^ slow()
}

/// Not captured: shown by type name.
#[derive(Clone, Copy)]
pub struct Mode {
    strict: bool,
}

/// `Err(-22)` (EINVAL) for an empty key.
#[tracer::traceable(ret)]
fn lookup(key: &str, limit: u32, mode: Mode) -> Result<u32, i32> {
    if key.is_empty() {
        return Err(-22);
    }
    let n = key.len() as u32 * black_box(limit);
    Ok(if mode.strict { n } else { n + 1 })
}

/// `None` when `b` is 0.
#[tracer::traceable(ret)]
fn ratio(a: f64, b: i32, on: bool) -> Option<f64> {
    (b != 0 && on).then(|| a / f64::from(b))
}

/// Async, with its values: `Err(-2)` (ENOENT) for id 0.
#[tracer::traceable(values)]
async fn fetch(id: u32, key: &str) -> Result<u32, i32> {
    if id == 0 {
        return Err(-2);
    }
    Ok(id * 100 + key.len() as u32)
}

/// Polls `f` until it is ready (the fixture's futures never wait).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// The values calls of a round.
fn values() {
    let strict = Mode { strict: true };
    black_box(lookup(black_box("abc"), 10, strict)).ok();
    black_box(lookup(black_box(""), 7, strict)).ok();
    black_box(ratio(black_box(3.0), 2, true));
    black_box(ratio(black_box(1.0), 0, true));
    black_box(block_on(fetch(black_box(4), "xy"))).ok();
    black_box(block_on(fetch(black_box(0), ""))).ok();
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let rounds: Option<u64> = std::env::var("TRACER_FIXTURE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok());
    let burst: u64 = std::env::var("TRACER_FIXTURE_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let open = std::env::var_os("TRACER_FIXTURE_OPEN").is_some_and(|v| v == "1");
    let with_values = std::env::var_os("TRACER_FIXTURE_VALUES").is_some_and(|v| v == "1");
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut i = 0u64;
                while rounds.is_none_or(|r| i < r) {
                    black_box(outer());
                    if with_values {
                        values();
                    }
                    for j in 0..burst {
                        tiny(j);
                    }
                    if open {
                        if let Err(e) = std::fs::File::open("/dev/null") {
                            eprintln!("tracer-fixture: open(/dev/null) failed: {e}");
                            std::process::exit(5);
                        }
                    }
                    std::thread::sleep(std::time::Duration::from_micros(300));
                    i += 1;
                }
            })
        })
        .collect();
    for h in hs {
        let _ = h.join();
    }
    if rounds.is_some() {
        if std::env::var_os("TRACER_FIXTURE_LINGER").is_some_and(|v| v == "1") {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        std::process::exit(3);
    }
}
