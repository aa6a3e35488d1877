//! Compile the in-process whole-program fixture (`fixtures/inproc/whole.c`)
//! with compiler pads, where compiler pads are traced: x86-64 (GCC's five
//! 1-byte NOPs, converted by the runtime's constructor before `main`) and
//! AArch64 (two NOPs; the first is the site). Not on 32-bit ARM.
fn main() {
    println!("cargo:rerun-if-changed=fixtures/inproc/whole.c");
    println!("cargo:rerun-if-changed=build.rs");
    let pads = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "-fpatchable-function-entry=5",
        Ok("aarch64") => "-fpatchable-function-entry=2",
        _ => return,
    };
    cc::Build::new()
        .file("fixtures/inproc/whole.c")
        .opt_level(2)
        .flag(pads)
        // Unwind tables: a Rust panic unwinds through the uw_* frames.
        .flag("-fexceptions")
        // One text section: GCC links its one pad table (SHF_LINK_ORDER) to
        // the object's first text section, and a linker collecting unused
        // sections keeps the table only with that section.
        .flag("-fno-function-sections")
        .warnings(true)
        .compile("tracer_inproc_whole");
}
