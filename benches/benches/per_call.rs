//! Per-call cost: untraced, traced but disabled, traced and enabled
//! (entry + exit recorded), and enabled with argument and return-value
//! capture (`#[traceable]`'s capturing stubs).
//!
//! `cargo bench -p tracer-benches --bench per_call`
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use tracer_benches::{
    traced_capture, traced_disabled, traced_disabled_option, traced_disabled_option_ret,
    traced_enabled, untraced, untraced_option,
};

fn per_call(c: &mut Criterion) {
    // Large rings so the collector keeps up and nothing is dropped: a dropped
    // event would be cheaper than a written one and flatter the figure.
    tracer::set_buffer_events(1 << 22);
    let mut g = c.benchmark_group("per_call");
    let mut x = 0u64;
    g.bench_function("untraced", |b| {
        b.iter(|| {
            x = x.wrapping_add(1);
            untraced(black_box(x))
        })
    });
    g.bench_function("traced_disabled", |b| {
        b.iter(|| {
            x = x.wrapping_add(1);
            traced_disabled(black_box(x))
        })
    });
    g.bench_function("untraced_option", |b| {
        b.iter(|| {
            x = x.wrapping_add(1);
            untraced_option(black_box(x))
        })
    });
    g.bench_function("traced_disabled_option", |b| {
        b.iter(|| {
            x = x.wrapping_add(1);
            traced_disabled_option(black_box(x))
        })
    });
    g.bench_function("traced_disabled_option_ret", |b| {
        b.iter(|| {
            x = x.wrapping_add(1);
            traced_disabled_option_ret(black_box(x))
        })
    });
    tracer::enable("traced_enabled").expect("enable");
    g.bench_function("traced_enabled", |b| {
        b.iter(|| {
            x = x.wrapping_add(1);
            traced_enabled(black_box(x))
        })
    });
    tracer::disable("traced_enabled").expect("disable");
    // The argument and the return value (x86-64; elsewhere the function is
    // not enabled and the row measures a disabled pad).
    let all = tracer::Capture {
        ints: 6,
        floats: 8,
        stack: 0,
        retval: true,
    };
    let _ = tracer::enable_with("traced_capture", all);
    g.bench_function("traced_enabled_capture", |b| {
        b.iter(|| {
            x = x.wrapping_add(1);
            traced_capture(black_box(x))
        })
    });
    tracer::disable("traced_capture").expect("disable");
    g.finish();
    let s = tracer::stats();
    let l = tracer::latency("traced_enabled").expect("calls were recorded");
    eprintln!(
        "traced_enabled: {} calls recorded, {} events dropped, clock {}",
        l.count, s.dropped, s.clock
    );
}

criterion_group!(benches, per_call);
criterion_main!(benches);
