//! Where the program writes, and when it stops.
//!
//! Traces and histograms go to [`out`]: stdout, except under `tracer run`,
//! where stdout is the program's (then stderr, or `run -o FILE`: see
//! [`to_stderr`] and [`to_file`]). Everything else (listings, status,
//! reports) goes to stdout. Ctrl-C and SIGTERM set [`stopped`], which every
//! collection loop asks, and interrupt a request waiting for a stalled agent.

use crate::{client, Error};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

static STOP: AtomicBool = AtomicBool::new(false);

/// Where traces and histograms go when not stdout (set once, by `run`).
static SINK: OnceLock<OutTo> = OnceLock::new();

enum OutTo {
    Stderr,
    File(Mutex<std::io::BufWriter<std::fs::File>>),
}

/// A handle on the output of traces and histograms (see the module
/// documentation).
pub struct Out;

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match SINK.get() {
            None => std::io::stdout().write(buf),
            Some(OutTo::Stderr) => std::io::stderr().write(buf),
            Some(OutTo::File(f)) => f.lock().unwrap_or_else(|e| e.into_inner()).write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match SINK.get() {
            None => std::io::stdout().flush(),
            Some(OutTo::Stderr) => std::io::stderr().flush(),
            Some(OutTo::File(f)) => f.lock().unwrap_or_else(|e| e.into_inner()).flush(),
        }
    }
}

/// The output of traces and histograms (stdout unless `run` chose another).
pub fn out() -> std::io::BufWriter<Out> {
    std::io::BufWriter::with_capacity(64 << 10, Out)
}

/// Flush the output of traces and histograms (before the program exits).
pub fn flush() {
    let _ = Out.flush();
}

/// From now on traces and histograms go to stderr. Only the first choice
/// counts.
pub fn to_stderr() {
    let _ = SINK.set(OutTo::Stderr);
}

/// From now on traces and histograms go to `file`. Only the first choice
/// counts.
pub fn to_file(file: std::io::BufWriter<std::fs::File>) {
    let _ = SINK.set(OutTo::File(Mutex::new(file)));
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
    // A request waiting for a stalled agent gives up at once.
    client::interrupt();
}

/// Ctrl-C and SIGTERM end collections (see [`stopped`]) instead of the
/// program, so what was collected is still shown.
pub fn install_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` only stores to an atomic and sets the client's
        // interrupt flag (both async-signal-safe).
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Has Ctrl-C or SIGTERM come?
pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// The stop flag itself, for loops that take one (`tracer serve`).
pub fn stop_flag() -> &'static AtomicBool {
    &STOP
}

fn color() -> bool {
    crate::use_color(std::io::stdout().is_terminal())
}

/// `s` in bold when stdout is a terminal that takes colour.
pub fn bold(s: &str) -> String {
    if color() {
        format!("\x1b[1m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// [`io_err`]'s message for a closed output pipe (the program then ends
/// quietly, as the other tools of a pipeline do).
pub const BROKEN_PIPE: &str = "the output pipe was closed";

/// An output error as the program reports it ([`BROKEN_PIPE`] for a closed
/// pipe).
pub fn io_err(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return Error::failed(BROKEN_PIPE);
    }
    Error::failed(format!("cannot write output: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_told_apart() {
        let e = io_err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(e.msg, BROKEN_PIPE);
        assert_eq!(e.code, crate::exit::FAILED);
        let e = io_err(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(e.msg.starts_with("cannot write output: "), "{}", e.msg);
    }
}
