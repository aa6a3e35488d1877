//! Calls rebuilt from a thread's events: the ones that returned, and the
//! ones that were left without returning.
//!
//! Every traced call leaves an entry event; its exit event comes only if it
//! returns. A call left another way (`longjmp` out of it, as Lua's error
//! handling and coroutines do; a C++ exception through a frame whose return
//! was not hooked; a thread that ended inside it) has no exit, and would be
//! missing from every count made of exits. The events carry each call's
//! depth, so a thread's next event at the same depth or shallower says the
//! call is over: it is reported as [`Call::Left`], with the time until that
//! event as the bound of its duration. A call still open when the events end
//! is [`Call::Running`].
//!
//! An `async fn`'s call is counted at its exit (which comes on whichever
//! thread completes it), and entry-only events (returns not hooked) at their
//! entry; neither is ever "left". An exit whose entry came before the events
//! began (or was lost) is a returned call like any other.

use std::collections::HashMap;
use tracer_core::event::{Event, FLAG_ASYNC, FLAG_ENTRY_ONLY, KIND_ENTRY, KIND_EXIT};

/// One call, as the walk finds it. Times are in the events' clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call<'a> {
    /// A call that returned.
    Returned {
        /// Its thread.
        tid: u64,
        /// Function index.
        func: u32,
        /// When it returned.
        end: u64,
        /// Duration.
        dur: u64,
        /// Duration minus the time in traced callees.
        own: u64,
        /// The known call stack (function indices, outermost first, ending
        /// with `func`).
        path: &'a [u32],
        /// Whether its entry was seen on this thread (not for `async fn`
        /// calls, nor when the events began inside the call).
        matched: bool,
    },
    /// A call left without returning.
    Left {
        /// Its thread.
        tid: u64,
        /// Function index.
        func: u32,
        /// When it was entered.
        entered: u64,
        /// When it was known to be over (the thread's next event at its
        /// depth or shallower): `left - entered` bounds its duration.
        left: u64,
        /// The known call stack, as for [`Call::Returned`].
        path: &'a [u32],
    },
    /// A call that had not returned when the events ended.
    Running {
        /// Its thread.
        tid: u64,
        /// Function index.
        func: u32,
        /// When it was entered.
        entered: u64,
    },
    /// An entry whose exit is never seen (entry-only events, where returns
    /// are not hooked): counted as a call when it enters.
    Untracked {
        /// Function index.
        func: u32,
    },
}

#[derive(Default)]
struct Thread {
    /// Time in traced callees, by depth.
    acc: Vec<u64>,
    /// Functions on the known stack, by depth.
    stack: Vec<u32>,
    /// The open call at each depth: its function and entry time (the
    /// function too: the known stack is cleared when an entry comes deeper
    /// than it reaches, and the call must still be counted).
    open: Vec<Option<(u32, u64)>>,
}

impl Thread {
    /// Close every open call at `depth` or deeper as left at `now`.
    fn leave_from(&mut self, tid: u64, depth: usize, now: u64, f: &mut impl FnMut(Call<'_>)) {
        while self.open.len() > depth {
            let k = self.open.len() - 1;
            if let Some(Some((func, entered))) = self.open.pop() {
                let single = [func];
                let path = match self.stack.get(..=k) {
                    Some(p) if p[k] == func => p,
                    _ => &single[..],
                };
                f(Call::Left {
                    tid,
                    func,
                    entered,
                    left: now.max(entered),
                    path,
                });
            }
        }
    }
}

/// The calls of a stream of events, per thread.
#[derive(Default)]
pub struct Walker {
    threads: Vec<(u64, Thread)>,
    /// Index in `threads` by thread id.
    index: HashMap<u64, usize>,
    /// The last thread fed (events come in runs of one thread's).
    last: Option<(u64, usize)>,
}

impl Walker {
    /// A walker with no thread seen.
    pub fn new() -> Walker {
        Walker::default()
    }

    /// Feed one event of thread `tid` (each thread's events in order); `f`
    /// gets the calls it completes.
    pub fn feed(&mut self, tid: u64, e: &Event, f: &mut impl FnMut(Call<'_>)) {
        let i = match self.last {
            Some((t, i)) if t == tid => i,
            _ => {
                let n = self.threads.len();
                let i = *self.index.entry(tid).or_insert(n);
                if i == n {
                    self.threads.push((tid, Thread::default()));
                }
                self.last = Some((tid, i));
                i
            }
        };
        let t = &mut self.threads[i].1;
        let d = e.depth as usize;
        if t.acc.len() < d + 2 {
            t.acc.resize(d + 2, 0);
        }
        match e.kind {
            // An `async fn`'s call is counted at its exit (on any thread).
            KIND_ENTRY if e.flags & FLAG_ASYNC != 0 => {}
            KIND_ENTRY if e.flags & FLAG_ENTRY_ONLY != 0 => {
                f(Call::Untracked { func: e.func });
            }
            KIND_ENTRY => {
                t.leave_from(tid, d, e.ts, f);
                t.acc[d + 1] = 0;
                t.stack.truncate(d);
                if t.stack.len() == d {
                    t.stack.push(e.func);
                } else {
                    t.stack.clear();
                }
                if t.open.len() < d {
                    t.open.resize(d, None);
                }
                t.open.push(Some((e.func, e.ts)));
            }
            KIND_EXIT if e.flags & FLAG_ASYNC != 0 => {
                // Entered on whatever thread first polled it: counted there.
                let func = e.func;
                let path = [func];
                f(Call::Returned {
                    tid,
                    func,
                    end: e.ts,
                    dur: e.dur,
                    own: e.dur,
                    path: &path,
                    matched: false,
                });
            }
            KIND_EXIT => {
                t.leave_from(tid, d + 1, e.ts, f);
                let open_here = t.open.get(d).copied().flatten();
                let entered_here = open_here.is_some();
                // The open call is this function's (by the call itself: the
                // known stack may have been cleared above it).
                let same = open_here.is_some_and(|(func, _)| func == e.func);
                if entered_here && !same {
                    // The call open at this depth is another function's:
                    // its exit (and this call's entry) were lost, so the
                    // thread left it without a return we saw. It was a
                    // call: count it as left (the entry is in every export
                    // too), never drop it.
                    t.leave_from(tid, d, e.ts, f);
                }
                let matched = entered_here && same;
                let children = std::mem::take(&mut t.acc[d + 1]);
                let own = e.dur.saturating_sub(children);
                t.acc[d] = t.acc[d].saturating_add(e.dur);
                let known = t.stack.len() > d && t.stack[d] == e.func;
                let single = [e.func];
                let path = if known { &t.stack[..=d] } else { &single[..] };
                f(Call::Returned {
                    tid,
                    func: e.func,
                    end: e.ts,
                    dur: e.dur,
                    own,
                    path,
                    matched,
                });
                t.stack.truncate(d);
                t.open.truncate(d);
            }
            _ => {}
        }
    }

    /// The calls still open: every thread's events have ended.
    pub fn finish(self, f: &mut impl FnMut(Call<'_>)) {
        for (tid, t) in self.threads {
            for &(func, entered) in t.open.iter().flatten() {
                f(Call::Running { tid, func, entered });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: u64, dur: u64, func: u32, depth: u16, kind: u8) -> Event {
        Event {
            ts,
            dur,
            func,
            depth,
            kind,
            flags: 0,
        }
    }

    fn walk(events: &[Event]) -> Vec<String> {
        let mut w = Walker::new();
        let mut out = Vec::new();
        let mut f = |c: Call<'_>| {
            out.push(match c {
                Call::Returned { func, dur, own, .. } => format!("ret {func} {dur} {own}"),
                Call::Left {
                    func,
                    entered,
                    left,
                    path,
                    ..
                } => format!("left {func} {entered}..{left} {path:?}"),
                Call::Running { func, .. } => format!("running {func}"),
                Call::Untracked { func } => format!("untracked {func}"),
            })
        };
        for e in events {
            w.feed(1, e, &mut f);
        }
        w.finish(&mut f);
        out
    }

    #[test]
    fn an_exit_of_another_function_leaves_the_call_open_at_its_depth() {
        // Function 1 entered at depth 1; its exit and function 2's entry
        // lost (a full ring); function 2's exit at depth 1. Function 1 is a
        // call left (every export shows its entry), function 2 a call whose
        // entry was not seen.
        let evs = [
            ev(100, 0, 0, 0, KIND_ENTRY),
            ev(110, 0, 1, 1, KIND_ENTRY),
            ev(150, 20, 2, 1, KIND_EXIT),
            ev(200, 100, 0, 0, KIND_EXIT),
        ];
        assert_eq!(
            walk(&evs),
            ["left 1 110..150 [0, 1]", "ret 2 20 20", "ret 0 100 80"]
        );
    }

    #[test]
    fn calls_below_an_unseen_entry_are_counted_once_each() {
        // The recording began inside function 0 (its entry not seen):
        // function 1 entered and returned at depth 1; function 2 entered at
        // depth 1 and its callee 3 at depth 2, both still running when the
        // recording ends. Every call is counted exactly once, as the
        // exports show them (a slice each).
        let evs = [
            ev(110, 0, 1, 1, KIND_ENTRY),
            ev(150, 40, 1, 1, KIND_EXIT),
            ev(160, 0, 2, 1, KIND_ENTRY),
            ev(170, 0, 3, 2, KIND_ENTRY),
        ];
        assert_eq!(walk(&evs), ["ret 1 40 40", "running 2", "running 3"]);
    }

    #[test]
    fn a_longjmp_out_of_calls_leaves_them() {
        // pcall(0) { throw(1) { longjmp } } back in pcall, which returns;
        // then main's next call at depth 1.
        let evs = [
            ev(100, 0, 0, 0, KIND_ENTRY),
            ev(110, 0, 1, 1, KIND_ENTRY),
            ev(120, 0, 2, 2, KIND_ENTRY),
            // longjmp back into 0: its next callee at depth 1.
            ev(150, 0, 3, 1, KIND_ENTRY),
            ev(160, 10, 3, 1, KIND_EXIT),
            ev(200, 100, 0, 0, KIND_EXIT),
            ev(300, 0, 4, 0, KIND_ENTRY),
        ];
        assert_eq!(
            walk(&evs),
            [
                "left 2 120..150 [0, 1, 2]",
                "left 1 110..150 [0, 1]",
                "ret 3 10 10",
                "ret 0 100 90",
                "running 4",
            ]
        );
    }

    #[test]
    fn an_exit_closes_what_was_left_inside_it() {
        // 0 { 1 { longjmp to 0's caller frame... } } 0 returns normally.
        let evs = [
            ev(100, 0, 0, 0, KIND_ENTRY),
            ev(110, 0, 1, 1, KIND_ENTRY),
            ev(190, 90, 0, 0, KIND_EXIT),
        ];
        assert_eq!(walk(&evs), ["left 1 110..190 [0, 1]", "ret 0 90 90"]);
    }

    #[test]
    fn async_and_entry_only_calls_are_never_left() {
        let mut a = ev(100, 0, 5, 0, KIND_ENTRY);
        a.flags = FLAG_ASYNC;
        let mut o = ev(105, 0, 6, 0, KIND_ENTRY);
        o.flags = FLAG_ENTRY_ONLY;
        let evs = [
            a,
            o,
            ev(110, 0, 1, 0, KIND_ENTRY),
            ev(120, 10, 1, 0, KIND_EXIT),
        ];
        let mut x = ev(130, 30, 5, 0, KIND_EXIT);
        x.flags = FLAG_ASYNC;
        let mut evs = evs.to_vec();
        evs.push(x);
        assert_eq!(walk(&evs), ["untracked 6", "ret 1 10 10", "ret 5 30 30"]);
    }
}
