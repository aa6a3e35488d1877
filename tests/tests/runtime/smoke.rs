use std::hint::black_box;

#[tracer::traceable]
fn add(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

#[test]
fn enable_call_latency_disable() {
    tracer_tests::fresh_process!();
    assert_eq!(black_box(add(1, 2)), 3);
    let fs = tracer::functions();
    let f = fs
        .iter()
        .find(|f| f.ident == "add")
        .expect("add is registered");
    println!("{f:?}");
    assert!(!f.enabled);
    assert_eq!(tracer::enable("add").unwrap(), 1);
    for i in 0..1000 {
        assert_eq!(black_box(add(i, 1)), i + 1);
    }
    let l = tracer::latency("add").unwrap();
    println!("{l:?} {:?}", tracer::stats());
    assert_eq!(l.count, 1000);
    assert_eq!(tracer::disable("add").unwrap(), 1);
    add(1, 1);
    assert_eq!(tracer::latency("add").unwrap().count, 1000);
}
