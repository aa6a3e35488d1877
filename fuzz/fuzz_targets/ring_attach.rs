//! A thread block's ring as a hostile process could hand it over: any bytes
//! attach or are refused, and draining an attached ring never reads outside
//! the memory, never yields more than its capacity, and never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracer_core::event::Ring;

#[repr(C, align(64))]
struct Block([u8; 4096]);

fuzz_target!(|data: &[u8]| {
    let mut b = Block([0; 4096]);
    let len = data.len().min(b.0.len());
    b.0[..len].copy_from_slice(&data[..len]);
    // SAFETY: `b` is 64-aligned and `len` bytes of it are ours for the
    // whole test; the ring reads and writes only inside them.
    let Ok(ring) = (unsafe { Ring::attach(b.0.as_mut_ptr(), len) }) else {
        return;
    };
    let cap = ring.capacity();
    let mut n = 0usize;
    let _ = ring.try_drain(usize::MAX, |_| n += 1);
    assert!(n <= cap, "{n} events from a ring of {cap}");
});
