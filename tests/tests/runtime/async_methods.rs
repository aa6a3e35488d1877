//! `#[traceable]` on methods under `#[async_trait]`: the call is the future,
//! timed from its first poll to its completion (or drop), not the few
//! nanoseconds it takes to box it. A plain method in the same impl keeps its
//! ordinary timing. Lower bounds only (no wall-clock ceilings), except that
//! a 2 µs method must not look like a 20 ms one.
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

const NAP: Duration = Duration::from_millis(20);

#[async_trait::async_trait]
pub trait Sleeper {
    async fn nap(&self) -> u64;
    fn plain(&self) -> u64;

    /// A default body rewritten by `#[async_trait]` on the trait.
    #[tracer::traceable]
    async fn nap_default(&self) -> u64 {
        Delay::new(NAP).await;
        self.plain() + 1
    }
}

pub struct S(u64);

#[async_trait::async_trait]
impl Sleeper for S {
    #[tracer::traceable]
    async fn nap(&self) -> u64 {
        #![allow(unused_variables)]
        let unused = 0;
        Delay::new(NAP).await;
        self.0
    }

    #[tracer::traceable]
    fn plain(&self) -> u64 {
        spin(Duration::from_micros(2));
        black_box(self.0)
    }
}

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// A timer that is Pending until its deadline: the nap spans many polls.
struct Delay(Instant);
impl Delay {
    fn new(d: Duration) -> Self {
        Delay(Instant::now() + d)
    }
}
impl Future for Delay {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.0 {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn async_trait_methods_are_timed_to_completion() {
    tracer_tests::fresh_process!();
    let names: Vec<String> = tracer::functions().into_iter().map(|f| f.name).collect();
    for want in [
        "<runtime::async_methods::S as runtime::async_methods::Sleeper>::nap",
        "<runtime::async_methods::S as runtime::async_methods::Sleeper>::plain",
        "runtime::async_methods::Sleeper::nap_default",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    assert_eq!(tracer::enable("nap plain nap_default").unwrap(), 3);
    let s = S(5);
    // Created long before its first poll: the wait is not part of the call,
    // which lies within the block_on that runs it (the tracer's clock is
    // calibrated, not Instant's: half a nap of slack, far from the nap of
    // waiting it would show if the wait were counted).
    let early = s.nap();
    std::thread::sleep(NAP);
    let t = Instant::now();
    assert_eq!(block_on(early), 5);
    let run = t.elapsed().as_nanos() as u64;
    let first =
        tracer::latency("<runtime::async_methods::S as runtime::async_methods::Sleeper>::nap")
            .unwrap();
    assert_eq!(first.count, 1);
    assert!(
        first.max >= NAP.as_nanos() as u64 && first.max < run + NAP.as_nanos() as u64 / 2,
        "{first:?}, block_on took {run} ns"
    );
    for _ in 0..5 {
        assert_eq!(block_on(s.nap()), 5);
    }
    for _ in 0..3 {
        assert_eq!(block_on(s.nap_default()), 6);
    }
    // Polled once, then dropped unfinished: one call, ended by the drop.
    {
        let mut f = s.nap();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(f.as_mut().poll(&mut cx).is_pending());
        std::thread::sleep(Duration::from_millis(2));
    }
    for _ in 0..200 {
        black_box(s.plain());
    }
    let nap =
        tracer::latency("<runtime::async_methods::S as runtime::async_methods::Sleeper>::nap")
            .unwrap();
    let dflt = tracer::latency("nap_default").unwrap();
    let plain = tracer::latency("plain").unwrap();
    assert_eq!(tracer::disable("nap plain nap_default").unwrap(), 3);
    println!("nap {nap:?}\nnap_default {dflt:?}\nplain {plain:?}");

    // One call per future (not one for the construction and one for the
    // run): 6 completed naps + 1 dropped.
    assert_eq!(nap.count, 7);
    assert_eq!(dflt.count, 3);
    // nap_default's own plain() calls are counted with the 200 direct ones.
    assert_eq!(plain.count, 203);
    let floor = NAP.as_nanos() as u64;
    assert!(nap.p50 >= floor && nap.max >= floor, "{nap:?}");
    assert!(dflt.min >= floor && dflt.p50 >= floor, "{dflt:?}");
    // The dropped one (about 2 ms) is the minimum, and it is a real duration.
    assert!(nap.min >= 2_000_000 && nap.min < floor, "{nap:?}");
    // The plain method: its spin is a floor, and it is not timed as a nap.
    assert!(plain.min >= 2_000, "{plain:?}");
    assert!(plain.p50 < floor / 10, "{plain:?}");
}
