//! Repeated 10,000-site batches, for profiling.
fn main() {
    let region = tracer_benches::PadRegion::new(10_000);
    let rounds = 100;
    let mut on_total = std::time::Duration::ZERO;
    for _ in 0..rounds {
        let t = std::time::Instant::now();
        tracer::__private::patch_raw_sites(&region.sites, region.target, true).unwrap();
        on_total += t.elapsed();
        tracer::__private::patch_raw_sites(&region.sites, region.target, false).unwrap();
    }
    println!(
        "enable 10k: {:.2} ms",
        on_total.as_secs_f64() * 1e3 / rounds as f64
    );
}
