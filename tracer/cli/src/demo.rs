//! `tracer demo`: the bundled demo service (`src/bin/tracer-demo.rs`)
//! traced live: enabling, a function_graph excerpt, histograms. It must work
//! right after `git clone` with nothing else installed: under `cargo run` it
//! builds the demo program itself.

use crate::client::Client;
use crate::out::bold;
use crate::reader::Reader;
use crate::{control, exit, graph, launch, session, Error};
use std::path::Path;
use std::time::Duration;

/// Under `cargo run`, which builds only the `tracer` binary, build the demo
/// program beside it (same profile).
fn build_demo(exe: &Path) {
    let (Some(cargo), Some(manifest)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return;
    };
    let release = exe
        .parent()
        .and_then(|d| d.file_name())
        .is_some_and(|n| n == "release");
    eprintln!("tracer: building the demo program (tracer-demo) first");
    let mut c = std::process::Command::new(cargo);
    c.args(["build", "--bin", "tracer-demo", "--manifest-path"])
        .arg(Path::new(&manifest).join("Cargo.toml"));
    if release {
        c.arg("--release");
    }
    let _ = c.status();
}

/// `tracer demo`: start the bundled demo service (`tracer-demo`, built
/// first under `cargo run`), enable its functions, show a trace excerpt and
/// `duration` of histograms.
pub fn run(duration: Duration) -> Result<i32, Error> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::failed(format!("cannot find this program's path: {e}")))?;
    let demo = exe.with_file_name("tracer-demo");
    if !demo.exists() {
        build_demo(&exe);
    }
    if !demo.exists() {
        return Err(Error::failed(format!(
            "the demo program is missing ({}); build it with `cargo build --release -p tracer-cli` \
             and run `cargo run --release -p tracer-cli -- demo`",
            demo.display()
        )));
    }
    let child = std::process::Command::new(&demo)
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| Error::failed(format!("cannot start {}: {e}", demo.display())))?;
    let mut child = launch::KillOnDrop(child);
    let pid = child.0.id() as i32;
    let Some(mut c) = launch::wait_agent(&mut child.0)? else {
        return Err(Error::failed(
            "the demo program exited at once; run tracer-demo alone to see why",
        ));
    };
    println!(
        "{}",
        bold(&format!(
            "tracer demo: a 3-thread service, pid {pid}. Enabling its functions while it runs:"
        ))
    );
    println!("$ tracer enable 'tracer_demo::*' -p {pid}");
    control::set_on(&mut c, &["tracer_demo::*".to_string()], true, false)?;
    println!("\n$ tracer trace --graph -p {pid}   (first 40 lines)");
    let mut reader = Reader::attach(c)?;
    let opts = graph::Options {
        graph: true,
        ..Default::default()
    };
    session::trace(
        &mut reader,
        opts,
        Some(Duration::from_secs(2)),
        &mut || false,
        Some(40),
    )?;
    reader.detach();
    println!(
        "\n$ tracer hist -p {pid} --duration {}s",
        duration.as_secs_f64()
    );
    let c = Client::connect(pid)?;
    session::hist(c, None, Some(duration), None, false, &mut || false)?;
    println!(
        "\nparse costs microseconds of CPU, a cache hit almost nothing, a miss waits for the \
         ~1 ms backend: that is the bimodal lookup histogram above."
    );
    Ok(exit::OK)
}
