//! Time to enable and to disable 10,000 and 100,000 sites in one batch: the
//! int3 protocol's three syncs, the RWX window and the old-byte checks.
//!
//! `cargo bench -p tracer-benches --bench batch`
use criterion::{criterion_group, criterion_main, Criterion};
use tracer_benches::PadRegion;

fn batch(c: &mut Criterion) {
    for n in [10_000usize, 100_000] {
        let region = PadRegion::new(n);
        let mut g = c.benchmark_group("batch");
        g.sample_size(if n > 10_000 { 10 } else { 30 });
        g.bench_function(format!("enable_{n}_sites"), |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    let t = std::time::Instant::now();
                    let r = tracer::__private::patch_raw_sites(&region.sites, region.target, true)
                        .unwrap();
                    total += t.elapsed();
                    assert_eq!(r.changed.len(), n);
                    assert_eq!(r.syncs, 3);
                    tracer::__private::patch_raw_sites(&region.sites, region.target, false)
                        .unwrap();
                }
                total
            })
        });
        g.bench_function(format!("disable_{n}_sites"), |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    tracer::__private::patch_raw_sites(&region.sites, region.target, true).unwrap();
                    let t = std::time::Instant::now();
                    let r = tracer::__private::patch_raw_sites(&region.sites, region.target, false)
                        .unwrap();
                    total += t.elapsed();
                    assert_eq!(r.changed.len(), n);
                }
                total
            })
        });
        g.finish();
    }
}

criterion_group!(benches, batch);
criterion_main!(benches);
