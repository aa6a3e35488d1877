//! A request body as the agent reads it from its socket: any bytes parse
//! into a request or are refused with a message, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match tracer_core::wire::msg::parse_request(data) {
        Ok(r) => {
            // What was accepted serialises back to a request that parses
            // to the same thing.
            let again = r.to_json().to_string();
            assert_eq!(
                tracer_core::wire::msg::parse_request(again.as_bytes()),
                Ok(r)
            );
        }
        Err(e) => assert!(!e.is_empty()),
    }
});
