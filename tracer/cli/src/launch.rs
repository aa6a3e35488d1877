//! `tracer run`: starting a program under the tracer, and the environment
//! contract between this program and the runtime it starts (the variables
//! are named in [`tracer_core::wire::env`]):
//!
//! - `TRACER_RUN`: this program's pid; the runtime of the command itself
//!   (our child) takes the variables below, the programs it starts inherit
//!   them and ignore them;
//! - `TRACER_ENABLE`: patterns the runtime enables before `main`, so
//!   nothing is missed;
//! - `TRACER_WAIT_READER=1`: the program waits (up to 10 s) for our reader
//!   before `main`, so its in-process collector does not consume the first
//!   events;
//! - `TRACER_BUFFER_EVENTS`: ring size per thread;
//! - `TRACER_CAPTURE`: with `--args`/`--retval`, what `TRACER_ENABLE`'s
//!   functions capture;
//! - `TRACER_PRELOAD` (read here): the preload library for a program that
//!   does not link the runtime itself, added to `LD_PRELOAD`.

use crate::client::{self, Client, Request};
use crate::control::{changed_text, set_on_warn};
use crate::out::{io_err, stopped};
use crate::reader::Reader;
use crate::{graph, printable, record, session, Error};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracer_core::wire;

/// The variables `tracer run` (pid `tracer_pid`) gives the command it
/// starts: see the module documentation. `collect`: a trace, histograms or
/// a recording will read the rings from the start.
pub fn environment(
    tracer_pid: u32,
    enable: &[String],
    collect: bool,
    buffer: Option<usize>,
) -> Vec<(&'static str, String)> {
    let mut env = vec![(wire::env::RUN, tracer_pid.to_string())];
    if !enable.is_empty() {
        env.push((wire::env::ENABLE, enable.join(",")));
    }
    if collect {
        env.push((wire::env::WAIT_READER, "1".to_string()));
    }
    if let Some(n) = buffer {
        env.push((wire::env::BUFFER_EVENTS, n.to_string()));
    }
    if let Some(&c) = CAPTURE.get().filter(|&&c| c != 0) {
        env.push((wire::env::CAPTURE, c.to_string()));
    }
    env
}

/// Wait for the agent socket of a child; `None` if the child exited first.
pub fn wait_agent(child: &mut std::process::Child) -> Result<Option<Client>, Error> {
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut refused = None;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(None);
        }
        if client::socket_of(pid).is_some() {
            match Client::connect(pid) {
                Ok(c) => return Ok(Some(c)),
                Err(e) => refused = Some(e),
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            // A socket was there but refused (an untrusted directory, a
            // foreign peer): that is the reason, not a missing agent.
            if let Some(e) = refused {
                return Err(e);
            }
            return Err(Error::no_target(format!(
                "process {pid} did not start a tracer agent within 15 s: make the program depend on \
                 the `tracer` crate (cargo add tracer) and do not set TRACER_AGENT=0"
            )));
        }
        if stopped() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::failed("interrupted"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The preload library to add to `program`'s environment: `None` when the
/// program links the tracer runtime itself (it has a `__tracer_sites`
/// section), else the library: `$TRACER_PRELOAD`, or `libtracer_preload.so`
/// next to this `tracer` executable or in `../lib/tracer/`.
pub fn preload_for(program: &str) -> Result<Option<PathBuf>, Error> {
    let path = resolve_program(program);
    if path.as_deref().is_some_and(crate::links_runtime) {
        return Ok(None);
    }
    if let Some(p) = std::env::var_os(wire::env::PRELOAD) {
        return Ok(Some(PathBuf::from(p)));
    }
    let exe = std::env::current_exe().map_err(io_err)?;
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    for cand in [
        dir.join("libtracer_preload.so"),
        dir.join("../lib/tracer/libtracer_preload.so"),
    ] {
        if cand.is_file() {
            return Ok(Some(cand));
        }
    }
    Err(Error::failed(format!(
        "{program} does not link the tracer runtime and libtracer_preload.so was not found next to \
         {} or in ../lib/tracer/; build it (cargo build --release -p tracer-preload) or point \
         TRACER_PRELOAD at it",
        exe.display()
    )))
}

/// `program` as the shell would find it (a path, or a name on `$PATH`).
pub fn resolve_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// Kills and reaps a child when dropped (also on panic).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The exit status as a shell reports it (128 + N for signal N).
pub fn status_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

/// `--buffer`: a ring size the runtime accepts.
pub fn parse_buffer(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of events; e.g. --buffer 1048576"))?;
    if !(64..=MAX_BUFFER).contains(&n) {
        return Err(format!(
            "{n} events per thread is outside 64..={MAX_BUFFER} (each event is 24 bytes)"
        ));
    }
    Ok(n)
}

/// The largest ring the runtime makes, in events.
pub const MAX_BUFFER: usize = 1 << 26;

/// `tracer run`: start `cmd` with the runtime's environment (see
/// [`environment`]), enable `enable` in it, show it as asked (a trace, its
/// histograms at exit, or a recording to `record_to`) and return its exit
/// `run --args/--retval`: the capture the program's `TRACER_ENABLE` gets.
static CAPTURE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Set `run`'s capture (`Capture::encode`; 0: none).
pub fn set_capture(c: u32) {
    let _ = CAPTURE.set(c);
}

/// status.
pub fn run(
    enable: &[String],
    trace_on: bool,
    hist_on: bool,
    record_to: Option<&Path>,
    buffer: Option<usize>,
    cmd: &[String],
) -> Result<i32, Error> {
    let mut command = std::process::Command::new(&cmd[0]);
    command.args(&cmd[1..]);
    command.envs(environment(
        std::process::id(),
        enable,
        trace_on || hist_on || record_to.is_some(),
        buffer,
    ));
    // Made before the program starts: a path that cannot be written is
    // refused before anything runs.
    let rec_file = record_to.map(record::create).transpose()?;
    if let Some(lib) = preload_for(&cmd[0])? {
        let mut v = std::ffi::OsString::from(&lib);
        if let Some(old) = std::env::var_os("LD_PRELOAD") {
            v.push(":");
            v.push(old);
        }
        command.env("LD_PRELOAD", v);
    }
    let mut child = command.spawn().map_err(|e| {
        Error::failed(format!(
            "cannot start {}: {e}; check the command and its path",
            cmd[0]
        ))
    })?;
    let pid = child.id() as i32;
    let Some(mut c) = wait_agent(&mut child)? else {
        let st = child.wait().map_err(io_err)?;
        eprintln!(
            "tracer: {} exited before its tracer agent started (status {})",
            cmd[0],
            status_code(st)
        );
        return Ok(status_code(st));
    };
    if !enable.is_empty() {
        // The runtime may have applied TRACER_ENABLE already (it does not
        // wait for us without --trace/--hist): report what is enabled, not
        // which of the two got there first.
        let on = match set_on_warn(&mut c, enable, true, true, false) {
            // Its runtime keeps TRACER_ENABLE's terms that match nothing yet
            // and enables them when a library that has them is loaded.
            Err(e) if e.msg.contains("no function matches") => {
                eprintln!(
                    "tracer: note: {}; enabled when the program loads a library that has it",
                    e.msg
                );
                Ok(Vec::new())
            }
            r => r,
        }
        .and_then(|_| c.request(&Request::Status));
        match on {
            Ok(on) => {
                let names: Vec<String> = on["enabled"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| printable(n.as_str().unwrap_or("?")).into_owned())
                    .collect();
                // To stderr: the program's stdout stays the program's.
                eprint!("{}", changed_text("tracer: enabled", &names));
            }
            // A short program may be done before we get to it: its status
            // is what counts (its runtime applied TRACER_ENABLE itself).
            Err(_) if matches!(child.try_wait(), Ok(Some(_))) || !client::alive(pid) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
    }
    let mut status = None;
    let mut child_done = || {
        if status.is_none() {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
            }
        }
        status.is_some()
    };
    if trace_on {
        let mut reader = Reader::attach(c)?;
        let opts = graph::Options {
            graph: true,
            ..Default::default()
        };
        session::trace(&mut reader, opts, None, &mut child_done, None)?;
    } else if hist_on {
        session::hist(c, None, None, None, false, &mut child_done)?;
    } else if let (Some(path), Some(file)) = (record_to, rec_file) {
        session::record_to_file(c, path, file, None, &mut child_done)?;
    } else {
        drop(c);
    }
    let st = match status {
        Some(s) => s,
        None => child.wait().map_err(io_err)?,
    };
    let code = status_code(st);
    eprintln!(
        "tracer: process {pid} ({}) exited with status {code}",
        cmd[0]
    );
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_contract() {
        let e = environment(42, &[], false, None);
        assert_eq!(e, [("TRACER_RUN", "42".to_string())]);
        let e = environment(7, &["a::*".into(), "b".into()], true, Some(1024));
        assert_eq!(
            e,
            [
                ("TRACER_RUN", "7".to_string()),
                ("TRACER_ENABLE", "a::*,b".to_string()),
                ("TRACER_WAIT_READER", "1".to_string()),
                ("TRACER_BUFFER_EVENTS", "1024".to_string()),
            ]
        );
    }

    #[test]
    fn buffer_sizes_are_checked() {
        assert_eq!(parse_buffer("1048576"), Ok(1 << 20));
        assert!(parse_buffer("63").unwrap_err().contains("outside 64..="));
        assert!(parse_buffer(&(MAX_BUFFER + 1).to_string()).is_err());
        assert!(parse_buffer("lots").unwrap_err().contains("not a number"));
    }

    #[test]
    fn programs_are_found_as_the_shell_would() {
        assert_eq!(resolve_program("./x"), Some(PathBuf::from("./x")));
        assert!(resolve_program("sh").is_some_and(|p| p.is_file()));
        assert_eq!(resolve_program("no-such-program-anywhere-1f3a"), None);
    }

    #[test]
    fn signals_read_as_a_shell_reads_them() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status_code(std::process::ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(status_code(std::process::ExitStatus::from_raw(9)), 137);
    }
}
