//! Argument and return-value capture at `#[traceable]` pads is x86-64
//! only for now: on AArch64 and ARMv7, enabling such a function with
//! capture skips its pads and says why, and enabling it without capture
//! works as always (the macro's capturing form builds there too).
#![cfg(not(target_arch = "x86_64"))]

use std::hint::black_box;

#[tracer::traceable]
#[inline(never)]
fn arm_parse(n: u32, s: &str) -> u32 {
    n + s.len() as u32
}

#[tracer::traceable(ret)]
#[inline(never)]
fn arm_checked(n: u32) -> Result<u32, i32> {
    if n == 0 {
        return Err(-22);
    }
    Ok(n)
}

#[test]
fn capture_is_refused_with_a_reason_and_plain_enable_works() {
    let all = tracer::Capture {
        ints: 8,
        floats: 8,
        stack: 0,
        retval: true,
    };
    let r = tracer::enable_with("arm_parse arm_checked", all).unwrap();
    assert!(r.changed.is_empty(), "{r:?}");
    assert!(!r.skipped.is_empty());
    for (_, s) in &r.skipped {
        let why = format!("{:?}", s.reason);
        assert!(
            why.contains("capture at #[traceable] pads needs x86-64"),
            "{why}"
        );
    }
    assert_eq!(tracer::enable("arm_parse arm_checked").unwrap(), 2);
    assert_eq!(arm_parse(black_box(2), "abc"), 5);
    assert_eq!(arm_checked(black_box(0)), Err(-22));
    assert_eq!(arm_checked(black_box(4)), Ok(4));
    tracer::disable("arm_parse arm_checked").unwrap();
    assert_eq!(tracer::latency("arm_parse").map(|l| l.count), Some(1));
    assert_eq!(tracer::latency("arm_checked").map(|l| l.count), Some(2));
}
