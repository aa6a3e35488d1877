//! The demo program `tracer demo` runs: a small multi-threaded "service"
//! whose `#[traceable]` functions have clearly different latencies.
//!
//! Each worker handles requests: `handle_request` → `parse` (a few
//! microseconds of CPU) → `Cache::lookup` (a hit costs almost nothing; a miss
//! calls `backend_fetch`, a simulated slow backend that waits about a
//! millisecond) → `render`. Run it alone and attach with `tracer`:
//!
//! ```text
//! tracer-demo &
//! tracer enable 'tracer_demo::*'
//! tracer trace --graph --duration 1s
//! ```
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

fn spin(iters: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..iters {
        x = black_box(x.wrapping_mul(31).wrapping_add(i));
    }
    x
}

/// Parse a request: a few microseconds of CPU.
#[tracer::traceable]
fn parse(req: &str) -> u64 {
    spin(2_000) ^ req.len() as u64
}

/// The simulated slow backend: waits about a millisecond.
#[tracer::traceable]
fn backend_fetch(key: u64) -> u64 {
    std::thread::sleep(Duration::from_micros(800));
    key * 7
}

/// A cache in front of the backend.
struct Cache {
    map: HashMap<u64, u64>,
}

impl Cache {
    /// Hits return at once; misses go to the backend.
    #[tracer::traceable]
    fn lookup(&mut self, key: u64) -> u64 {
        if let Some(v) = self.map.get(&key) {
            return *v;
        }
        let v = backend_fetch(key);
        if self.map.len() > 48 {
            self.map.clear();
        }
        self.map.insert(key, v);
        v
    }
}

/// Turn the answer into a response.
#[tracer::traceable]
fn render(v: u64) -> String {
    spin(300);
    format!("value {v}")
}

/// One request, end to end.
#[tracer::traceable]
fn handle_request(cache: &mut Cache, n: u64) -> usize {
    let req = format!("GET /item/{}", n % 64);
    black_box(parse(&req));
    let k = n % 64;
    let v = cache.lookup(k);
    render(v).len()
}

fn worker(id: u64) {
    let mut cache = Cache {
        map: HashMap::new(),
    };
    let mut n = id * 1_000_003;
    loop {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        black_box(handle_request(&mut cache, n >> 33));
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn main() {
    let threads: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    println!(
        "tracer-demo: pid {}, {threads} worker threads; attach with `tracer enable 'tracer_demo::*'`",
        std::process::id()
    );
    let hs: Vec<_> = (0..threads)
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || worker(i))
                .expect("spawn a worker thread")
        })
        .collect();
    for h in hs {
        let _ = h.join();
    }
}
