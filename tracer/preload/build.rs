//! Naked functions (the `dlsym` and `dlopen` shims) need rustc 1.88; with an
//! older compiler the library is built without them.

use std::process::Command;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(tracer_naked)");
    println!("cargo:rerun-if-env-changed=RUSTC");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let v = String::from_utf8_lossy(&o.stdout).into_owned();
            let ver = v.split_whitespace().nth(1)?.to_string();
            let mut it = ver.split('.');
            let major: u32 = it.next()?.parse().ok()?;
            let minor: u32 = it.next()?.parse().ok()?;
            Some(if major > 1 { u32::MAX } else { minor })
        })
        .unwrap_or(0);
    if minor >= 88 {
        println!("cargo:rustc-cfg=tracer_naked");
    }
}
