//! A recording file, damaged or forged: it parses or is refused with a
//! message, never a panic or an allocation beyond the file's size.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = tracer_cli::record::Recording::parse(data) {
        assert!(!e.is_empty());
    }
});
