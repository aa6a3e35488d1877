//! Per-call cost of argument and return-value capture (issue 14), on
//! compiler-padded C functions (`c/pads.c`): disabled; enabled without
//! capture (the plain stub and trampolines, whose cost capture must not
//! change); enabled with every argument register and the return value
//! (`--args --retval`: its own stub and trampolines, three more ring slots
//! a call).
//!
//! `cargo bench -p tracer-benches --bench capture`
use criterion::{criterion_group, criterion_main, Criterion};

#[cfg(target_arch = "x86_64")]
fn capture(c: &mut Criterion) {
    use std::hint::black_box;
    use tracer_benches::pads::{cp_capture, cp_disabled, cp_enabled};
    tracer::set_buffer_events(1 << 22);
    let mut g = c.benchmark_group("capture");
    let mut x = 0i64;
    g.bench_function("c_disabled", |b| {
        b.iter(|| {
            x = x.wrapping_add(1);
            // SAFETY: a plain C function.
            unsafe { cp_disabled(black_box(x), 3) }
        })
    });
    tracer::enable("cp_enabled").expect("enable");
    g.bench_function("c_enabled", |b| {
        b.iter(|| {
            x = x.wrapping_add(1);
            // SAFETY: as above.
            unsafe { cp_enabled(black_box(x), 3) }
        })
    });
    tracer::enable_with("cp_capture", tracer::Capture::all_registers(true)).expect("enable");
    g.bench_function("c_args_retval", |b| {
        b.iter(|| {
            x = x.wrapping_add(1);
            // SAFETY: as above.
            unsafe { cp_capture(black_box(x), 3) }
        })
    });
    let two = tracer::Capture {
        ints: 2,
        ..tracer::Capture::NONE
    };
    tracer::enable_with(
        "cp_capture",
        tracer::Capture {
            retval: true,
            ..two
        },
    )
    .expect("enable");
    g.bench_function("c_args2_retval", |b| {
        b.iter(|| {
            x = x.wrapping_add(1);
            // SAFETY: as above.
            unsafe { cp_capture(black_box(x), 3) }
        })
    });
    tracer::disable("cp_*").expect("disable");
    g.finish();
    let s = tracer::stats();
    eprintln!(
        "capture: {} events dropped, trampoline {}, capturing trampoline {}, clock {}",
        s.dropped, s.trampoline, s.capture_trampoline, s.clock
    );
    if let Some(why) = s.capture_full_save_reason {
        eprintln!("capturing trampolines save vector registers: {why}");
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn capture(_: &mut Criterion) {}

criterion_group!(benches, capture);
criterion_main!(benches);
