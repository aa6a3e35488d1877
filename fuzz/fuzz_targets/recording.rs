//! A recording file, damaged or forged: it parses or is refused with a
//! message, never a panic or an allocation beyond the file's size. Inputs
//! whose first byte is odd are appended to a valid header, so the frames
//! parser is reached without the fuzzer having to find the magic first.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracer_cli::record::{Header, Recording, Writer};

fuzz_target!(|data: &[u8]| {
    let bytes = match data.split_first() {
        Some((b, rest)) if b % 2 == 1 => {
            let h = Header {
                pid: 1,
                exe: "/x".into(),
                clock: "tsc".into(),
                ticks_per_ns: 1.0,
                functions: vec!["a".into(), "b".into()],
                origins: Vec::new(),
                signatures: Vec::new(),
            };
            let w = Writer::new(Vec::new(), &h).expect("into memory");
            let mut v = w.into_inner();
            v.extend_from_slice(rest);
            v
        }
        _ => data.to_vec(),
    };
    if let Err(e) = Recording::parse(&bytes) {
        assert!(!e.is_empty());
    }
});
