//! Methods under `#[async_trait]` and the other future-returning shapes
//! `tracing::instrument` recognises: the pads go into the future.
use std::future::Future;
use std::pin::Pin;

#[async_trait::async_trait]
trait Service {
    async fn call(&self, x: u32) -> u32;

    #[tracer::traceable]
    async fn default_body(&self, x: u32) -> Result<u32, String> {
        let v = self.call(x).await;
        if v == 0 {
            return Err("zero".into());
        }
        Ok(v)
    }
}

struct Doubler;

#[async_trait::async_trait]
impl Service for Doubler {
    #[tracer::traceable]
    async fn call(&self, x: u32) -> u32 {
        #![allow(unused_variables)]
        let unused = 1;
        x * 2
    }
}

struct Generic<T>(T);

#[async_trait::async_trait(?Send)]
trait Local {
    async fn get(&self, x: u32) -> u32;
}

// `?Send` futures and generic impls, attribute written before the method's
// other attributes.
#[async_trait::async_trait(?Send)]
impl<T: Clone + Into<u32>> Local for Generic<T> {
    #[tracer::traceable]
    #[allow(clippy::needless_question_mark)]
    async fn get(&self, x: u32) -> u32 {
        let t: u32 = self.0.clone().into();
        t + x
    }
}

// Written by hand: a bare async block, a pinned one, and the inner async fn
// of async-trait <= 0.1.43.
#[tracer::traceable]
fn bare(x: u32) -> impl Future<Output = u32> {
    async move { x + 1 }
}

#[tracer::traceable]
fn pinned(x: u32) -> Pin<Box<dyn Future<Output = u32> + Send>> {
    let y = x + 1;
    Box::pin(async move { y + 1 })
}

#[tracer::traceable]
fn old_async_trait(x: u32) -> Pin<Box<dyn Future<Output = u32> + Send>> {
    async fn run(x: u32) -> u32 {
        x + 3
    }
    Box::pin(run(x))
}

// Not a recognised shape: only the construction is timed, and it compiles.
#[tracer::traceable]
fn constructed(x: u32) -> impl Future<Output = u32> {
    std::future::ready(x)
}

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn assert_send<F: Send>(f: F) -> F {
    f
}

fn main() {
    assert_eq!(block_on(assert_send(Doubler.call(2))), 4);
    assert_eq!(block_on(assert_send(Doubler.default_body(3))), Ok(6));
    assert_eq!(block_on(Doubler.default_body(0)), Err("zero".to_string()));
    assert_eq!(block_on(Generic(5u8).get(1)), 6);
    assert_eq!(block_on(bare(1)), 2);
    assert_eq!(block_on(pinned(1)), 3);
    assert_eq!(block_on(old_async_trait(1)), 4);
    assert_eq!(block_on(constructed(5)), 5);
}
