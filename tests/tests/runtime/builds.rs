//! The registry and live patching work in every build the issue names: debug
//! and release, rust-lld (this toolchain's default) and GNU ld, fat LTO with
//! one codegen unit. Each configuration builds the fixture program
//! `tests/fixtures/app`, which enables its traced functions while four
//! threads run and checks exact counts itself.
//!
//! Host only: these check the host toolchain's linkers and the x86-64 lean
//! trampolines; the cross runs under qemu build nothing themselves.
#![cfg(target_arch = "x86_64")]

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn build_and_run(profile: &str, rustflags: Option<&str>, dir: &str, linker_note: Option<&str>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    build_and_run_with(Command::new(cargo), profile, rustflags, dir, linker_note)
}

fn build_and_run_with(
    mut cmd: Command,
    profile: &str,
    rustflags: Option<&str>,
    dir: &str,
    linker_note: Option<&str>,
) {
    let target_dir = root().join("target").join("fixture-builds").join(dir);
    cmd.current_dir(root())
        .args([
            "build",
            "-q",
            "-p",
            "tracer-fixture-app",
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    if let Some(f) = rustflags {
        cmd.env("RUSTFLAGS", f);
    }
    let st = cmd.status().expect("run cargo");
    assert!(
        st.success(),
        "building the fixture ({profile}, {rustflags:?}) failed"
    );
    let sub = if profile == "dev" { "debug" } else { profile };
    let exe = target_dir.join(sub).join("tracer-fixture-app");
    if let Some(note) = linker_note {
        let comment = Command::new("readelf")
            .args(["-p", ".comment"])
            .arg(&exe)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if !comment.is_empty() {
            let lld = comment.contains("Linker: LLD");
            assert_eq!(
                lld,
                note == "lld",
                "expected the {note} linker, .comment says:\n{comment}"
            );
        }
    }
    let out = Command::new(&exe).output().expect("run the fixture");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{profile} {rustflags:?}:\n{text}");
    assert!(
        out.status.success(),
        "fixture failed ({profile}, {rustflags:?}):\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.lines().last() == Some("OK"), "{text}");
    if profile != "dev" {
        // Optimised hooks are verified free of vector registers, so the
        // trampolines skip saving them.
        assert!(text.contains("trampoline=lean"), "{text}");
    }
}

#[test]
fn debug_build_with_the_default_linker() {
    tracer_tests::fresh_process!();
    build_and_run("dev", None, "default", None);
}

#[test]
fn release_build_with_rust_lld() {
    tracer_tests::fresh_process!();
    build_and_run("release", None, "default", Some("lld"));
}

#[test]
fn fat_lto_one_codegen_unit() {
    tracer_tests::fresh_process!();
    build_and_run("fat-lto", None, "default", None);
}

/// The whole program, the tracer runtime and its dependencies included,
/// built with compiler pads (nightly `-Z patchable-function-entry`): each
/// `#[traceable]` function is still one function, traced once (the fixture
/// checks `enable("fx_*") == 5` and exact counts), and none of the tracer's
/// own functions is listed.
#[test]
fn whole_program_with_pads_lists_each_traceable_function_once() {
    tracer_tests::fresh_process!();
    let mut v = Command::new("rustup");
    v.args(["run", "nightly", "rustc", "--version"]);
    assert!(
        v.output().is_ok_and(|o| o.status.success()),
        "no nightly toolchain; install it with `rustup toolchain install nightly --profile minimal` \
         (scripts/setup-whole.sh does)"
    );
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"]);
    // Not this (stable) cargo's variables: the nightly one finds its own.
    for k in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "CARGO_MAKEFLAGS",
    ] {
        cmd.env_remove(k);
    }
    build_and_run_with(
        cmd,
        "release",
        Some("-Z patchable-function-entry=5"),
        "nightly-pads",
        None,
    );
}

#[test]
fn release_build_with_gnu_ld() {
    tracer_tests::fresh_process!();
    build_and_run(
        "release",
        Some("-Clinker-features=-lld"),
        "gnu-ld",
        Some("gnu"),
    );
}
