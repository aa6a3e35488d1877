//! `#[traceable]` on every shape of function the contract names.
use std::hint::black_box;
use tracer_tests::{block_on, YieldOnce};

pub struct Cache {
    hits: u64,
}

impl Cache {
    #[tracer::traceable]
    pub fn lookup(&mut self, k: u64) -> Option<u64> {
        self.hits += 1;
        (k % 2 == 0).then_some(k)
    }
}

pub trait Store {
    fn get(&self, k: u64) -> u64;
    #[tracer::traceable]
    fn get_twice(&self, k: u64) -> u64 {
        self.get(k) + self.get(k)
    }
}

impl Store for Cache {
    #[tracer::traceable]
    fn get(&self, k: u64) -> u64 {
        k + self.hits
    }
}

#[tracer::traceable]
fn generic<T: std::fmt::Debug>(t: T) -> String {
    format!("{t:?}")
}

#[tracer::traceable]
fn parse_num(s: &str) -> Result<u64, std::num::ParseIntError> {
    let v: u64 = s.trim().parse()?;
    Ok(v * 2)
}

#[tracer::traceable]
fn may_panic(p: bool) -> u64 {
    if p {
        panic!("boom");
    }
    7
}

#[tracer::traceable]
async fn async_add(a: u64, b: u64) -> u64 {
    YieldOnce(false).await;
    a + b
}

fn lat(name: &str) -> u64 {
    tracer::latency(name).map_or(0, |l| l.count)
}

#[test]
fn every_shape_is_traced() {
    tracer_tests::fresh_process!();
    let names: Vec<String> = tracer::functions().into_iter().map(|f| f.name).collect();
    for want in [
        "runtime::shapes::Cache::lookup",
        "<runtime::shapes::Cache as runtime::shapes::Store>::get",
        "runtime::shapes::Store::get_twice",
        "runtime::shapes::generic",
        "runtime::shapes::parse_num",
        "runtime::shapes::may_panic",
        "runtime::shapes::async_add",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let n = tracer::enable("lookup get get_twice generic parse_num may_panic async_add").unwrap();
    assert_eq!(n, 7);
    let mut c = Cache { hits: 0 };
    for k in 0..10 {
        black_box(c.lookup(k));
        black_box(c.get_twice(k));
    }
    // Generic: every instantiation is a site of one function.
    black_box(generic(1u8));
    black_box(generic("x"));
    black_box(generic(vec![1.5f32]));
    // `?`: the early return is an exit too.
    assert!(parse_num("x").is_err());
    assert_eq!(parse_num("21").unwrap(), 42);
    // Panic: the exit is recorded while unwinding.
    let r = std::panic::catch_unwind(|| may_panic(true));
    assert!(r.is_err());
    assert_eq!(may_panic(false), 7);
    // async: one call from first poll to completion, across a Pending.
    assert_eq!(block_on(async_add(1, 2)), 3);
    assert_eq!(block_on(async_add(3, 4)), 7);

    assert_eq!(lat("runtime::shapes::Cache::lookup"), 10);
    assert_eq!(lat("lookup"), 10, "own name works when unique");
    assert_eq!(lat("get_twice"), 10);
    assert_eq!(
        lat("<runtime::shapes::Cache as runtime::shapes::Store>::get"),
        20
    );
    assert_eq!(lat("generic"), 3);
    assert_eq!(lat("parse_num"), 2);
    assert_eq!(lat("may_panic"), 2);
    assert_eq!(lat("async_add"), 2);
    assert_eq!(
        tracer::enable("lookup").unwrap(),
        0,
        "already enabled: nothing to do"
    );
    assert_eq!(
        tracer::disable("lookup get get_twice generic parse_num may_panic async_add").unwrap(),
        7
    );
    for k in 0..10 {
        black_box(c.lookup(k));
    }
    assert_eq!(lat("lookup"), 10, "disabled: no more events");
}
