//! Time to enable and to disable 10,000 sites in one batch: the int3
//! protocol's three syncs, the RWX window and the old-byte checks.
//!
//! `cargo bench -p tracer-benches --bench batch`
use criterion::{criterion_group, criterion_main, Criterion};
use tracer_benches::PadRegion;

fn batch(c: &mut Criterion) {
    let region = PadRegion::new(10_000);
    let mut g = c.benchmark_group("batch");
    g.sample_size(30);
    g.bench_function("enable_10000_sites", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                let t = std::time::Instant::now();
                let r =
                    tracer::__private::patch_raw_sites(&region.sites, region.target, true).unwrap();
                total += t.elapsed();
                assert_eq!(r.changed.len(), 10_000);
                assert_eq!(r.syncs, 3);
                tracer::__private::patch_raw_sites(&region.sites, region.target, false).unwrap();
            }
            total
        })
    });
    g.bench_function("disable_10000_sites", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                tracer::__private::patch_raw_sites(&region.sites, region.target, true).unwrap();
                let t = std::time::Instant::now();
                let r = tracer::__private::patch_raw_sites(&region.sites, region.target, false)
                    .unwrap();
                total += t.elapsed();
                assert_eq!(r.changed.len(), 10_000);
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, batch);
criterion_main!(benches);
