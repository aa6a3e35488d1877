//! `TRACER_ENABLE`'s terms that wait for a library to be loaded: set at
//! start-up, tried again by the agent's loop.

use crate::runtime::runtime;
use crate::{disable, Error};
use std::sync::Mutex;

/// `TRACER_ENABLE`'s terms that matched no function at start, and its `!`
/// terms: a library the program loads later (`dlopen`) may have them. The
/// agent tries them again every 10 ms while any is left
/// ([`apply_pending`]).
static PENDING: Mutex<(Vec<String>, Vec<String>)> = Mutex::new((Vec::new(), Vec::new()));

/// Keep `later` (terms that match nothing yet) and `negative` (`!` terms,
/// applied again after each of them is enabled) for libraries loaded later.
pub(crate) fn wait_for(later: Vec<String>, negative: Vec<String>) {
    *PENDING.lock().unwrap_or_else(|e| e.into_inner()) = (later, negative);
}

/// Whether some of `TRACER_ENABLE`'s terms wait for a library to be loaded.
pub(crate) fn has_pending() -> bool {
    !PENDING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .0
        .is_empty()
}

/// Enable the waiting `TRACER_ENABLE` terms that match functions now (of a
/// library loaded since), then apply its `!` terms again.
pub(crate) fn apply_pending() {
    static SEEN: Mutex<(u64, u64)> = Mutex::new((0, 0));
    let mut p = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    if p.0.is_empty() {
        return;
    }
    // Only when the loader's add/remove counters moved (state() rescans).
    let Ok(rt) = runtime() else { return };
    let loader = rt.lock_refreshed().loader;
    {
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == loader {
            return;
        }
        *seen = loader;
    }
    let before = p.0.len();
    let cap = crate::capture::from_env();
    p.0.retain(|t| {
        !matches!(
            crate::enable_with(t, cap),
            Ok(_) | Err(Error::Pattern(tracer_core::pattern::PatternError::Empty))
        )
    });
    if p.0.len() != before {
        for t in &p.1 {
            let _ = disable(&t[1..]);
        }
    }
}
