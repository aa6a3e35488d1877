//! Tells the crate whether it is being compiled as Thumb-2 code.
//!
//! rustc 1.85 exposes no `cfg` for `-C target-feature=+thumb-mode` (the
//! feature is unstable), so this looks for it in the flags cargo passes and
//! sets `cfg(tracer_thumb)`. The pad macros of the Thumb-2 and A32 backends
//! are defined under that cfg: the code that expands them (every crate of the
//! program) is compiled with the same `RUSTFLAGS`. Likewise `+d32`/`+neon`
//! set `cfg(tracer_arm_d32)`, and the ARMv7 trampolines then also save
//! `d16`–`d31` (code built without them never uses those registers).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tracer_thumb)");
    println!("cargo::rustc-check-cfg=cfg(tracer_arm_d32)");
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    // `-C target-feature=+a,+b` arrives as two arguments, `-Ctarget-feature=..` as one.
    let features: Vec<&str> = flags
        .split('\x1f')
        .filter_map(|a| a.split_once("target-feature=").map(|(_, v)| v))
        .flat_map(|v| v.split(','))
        .collect();
    if features.contains(&"+thumb-mode") {
        println!("cargo::rustc-cfg=tracer_thumb");
    }
    if features.contains(&"+d32") || features.contains(&"+neon") {
        println!("cargo::rustc-cfg=tracer_arm_d32");
    }
}
