//! Compile `c/pads.c` with compiler pads (x86-64) for the capture benchmark.
fn main() {
    println!("cargo:rerun-if-changed=c/pads.c");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("x86_64") {
        return;
    }
    cc::Build::new()
        .file("c/pads.c")
        .opt_level(2)
        .flag("-fpatchable-function-entry=5")
        .flag("-fno-function-sections")
        .compile("tracer_bench_pads");
}
