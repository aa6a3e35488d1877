//! Repeated batches, for profiling and for a figure a loaded machine does
//! not inflate: the wall time and the thread's CPU time of each enable.
//!
//! `cargo run --release -p tracer-benches --example batchloop`
//! (`BATCH_SITES=100000` for another size, `BATCH_ROUNDS` rounds).
fn cpu_now() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env("BATCH_SITES", 10_000);
    let rounds = env("BATCH_ROUNDS", 100);
    let region = tracer_benches::PadRegion::new(n);
    let (mut on_wall, mut on_cpu) = (Vec::new(), Vec::new());
    let (mut off_wall, mut off_cpu) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (t, c) = (std::time::Instant::now(), cpu_now());
        tracer::__private::patch_raw_sites(&region.sites, region.target, true).unwrap();
        on_wall.push(t.elapsed());
        on_cpu.push(cpu_now() - c);
        let (t, c) = (std::time::Instant::now(), cpu_now());
        tracer::__private::patch_raw_sites(&region.sites, region.target, false).unwrap();
        off_wall.push(t.elapsed());
        off_cpu.push(cpu_now() - c);
    }
    let med = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    println!(
        "enable {n}: {:.2} ms wall, {:.2} ms cpu; disable: {:.2} ms wall, {:.2} ms cpu \
         (medians of {rounds})",
        med(&mut on_wall),
        med(&mut on_cpu),
        med(&mut off_wall),
        med(&mut off_cpu)
    );
}
