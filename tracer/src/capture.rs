//! Which functions are enabled with argument or return-value capture
//! (`tracer_core::capture`), and the capture `TRACER_ENABLE` uses
//! (`TRACER_CAPTURE`, set by `tracer run --args/--retval`).
//!
//! Only the enable/disable batches (under the runtime's lock) read and
//! write the table; the hooks never look at it: a function's capture is in
//! its entry stub.

use std::collections::HashMap;
use std::sync::Mutex;
use tracer_core::capture::Capture;
use tracer_core::wire::env::CAPTURE as ENV;

static TABLE: Mutex<Option<HashMap<usize, Capture>>> = Mutex::new(None);

/// The capture function `f` is enabled with ([`Capture::NONE`] if none).
pub(crate) fn of(f: usize) -> Capture {
    TABLE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|t| t.get(&f).copied())
        .unwrap_or(Capture::NONE)
}

/// Record that function `f` is enabled with `cap` (or disabled: `NONE`).
pub(crate) fn set(f: usize, cap: Capture) {
    let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let t = t.get_or_insert_with(HashMap::new);
    if cap.any() {
        t.insert(f, cap);
    } else {
        t.remove(&f);
    }
}

/// The capture `TRACER_ENABLE`'s terms are enabled with: the environment
/// variable `TRACER_CAPTURE` holds [`Capture::encode`]'s number (decimal or
/// `0x` hexadecimal).
pub(crate) fn from_env() -> Capture {
    let Some(v) = std::env::var_os(ENV) else {
        return Capture::NONE;
    };
    let v = v.to_string_lossy();
    let n = match v.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => v.parse(),
    };
    match n {
        Ok(n) => Capture::decode(n),
        Err(_) => {
            eprintln!("tracer: {ENV}={v} is not a number: capturing nothing");
            Capture::NONE
        }
    }
}
