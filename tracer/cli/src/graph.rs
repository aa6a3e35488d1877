//! ftrace's `function` and `function_graph` text.
//!
//! function_graph, as `Documentation/trace/ftrace.rst` shows it:
//!
//! ```text
//!  1)               |  handle_request() {
//!  1)   2.215 us    |    parse();
//!  1) ! 812.345 us  |    }
//! ```
//!
//! The first column is the thread (numbered in order of appearance; a banner
//! maps the number to the thread id) where ftrace shows the CPU. A call whose
//! exit directly follows its entry is printed as one `name();` line. The mark
//! before a duration is ftrace's: `+` > 10 µs, `!` > 100 µs, `#` > 1 ms,
//! `*` > 10 ms, `@` > 100 ms, `$` > 1 s.
//!
//! A call left without returning (`longjmp` out of it, as Lua's errors and
//! coroutines do) has no exit: when the thread's next event comes at its
//! depth or shallower, it is closed with `} /* name: not returned */` (or
//! `name(); /* not returned */` when it called nothing traced), the time
//! until that event in the duration column as the bound of its duration.

use std::collections::HashMap;
use std::fmt::Write as _;
use tracer_core::event::{Event, FLAG_ASYNC, FLAG_ENTRY_ONLY, KIND_ENTRY, KIND_EXIT};

/// ftrace's latency mark for a duration in nanoseconds.
pub fn mark(ns: u64) -> char {
    match ns {
        n if n > 1_000_000_000 => '$',
        n if n > 100_000_000 => '@',
        n if n > 10_000_000 => '*',
        n if n > 1_000_000 => '#',
        n if n > 100_000 => '!',
        n if n > 10_000 => '+',
        _ => ' ',
    }
}

/// The duration column: mark, microseconds with three decimals (at most 7
/// digits, as ftrace prints), ` us`, padded to ftrace's width, then `|  `.
pub fn duration_column(ns: u64) -> String {
    let us = (ns / 1000).to_string();
    let mut s = format!("{} {us}", mark(ns));
    let mut len = us.len();
    if len < 7 {
        let frac = format!("{:03}", ns % 1000);
        let keep = frac.len().min(7 - len);
        s.push('.');
        s.push_str(&frac[..keep]);
        len += keep + 1;
    }
    s.push_str(" us ");
    for _ in len..8 {
        s.push(' ');
    }
    s.push_str("|  ");
    s
}

/// The column of a line without a duration.
pub const BLANK: &str = "              |  ";

/// Options of the printer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// function_graph (else the function tracer's one line per entry).
    pub graph: bool,
    /// Only show calls at least this long (ns); with `graph`, each as one line
    /// at its exit.
    pub threshold_ns: Option<u64>,
    /// Only show calls nested less deeply than this.
    pub max_depth: Option<u16>,
}

#[derive(Default)]
struct Thread {
    num: usize,
    name: String,
    announced: bool,
    pending: Option<Event>,
    /// The pending entry's arguments, as shown (`len=3, flags=2`).
    pending_args: String,
    stack: Vec<u32>,
    /// Calls printed open (`name() {`) and not closed yet: (function,
    /// depth, entry time).
    open: Vec<(u32, u16, u64)>,
    /// Captured values waiting for their entry or exit, and the arguments
    /// of the calls in progress.
    vals: crate::values::Tracker,
}

/// Turns events into text.
pub struct Printer {
    names: Vec<String>,
    ticks_per_ns: f64,
    opts: Options,
    threads: HashMap<u64, Thread>,
    start: Option<u64>,
    /// Names and types of captured values.
    sigs: crate::values::Signatures,
    /// `--where`: only calls that match are shown, each as one line at its exit.
    cond: Option<crate::values::Cond>,
    /// Functions `--where` does not apply to, already said.
    refused: std::collections::HashSet<u32>,
    /// Lines printed.
    pub lines: u64,
}

impl Printer {
    /// Take `names` if it knows more functions (a library was loaded).
    pub fn update_names(&mut self, names: &[String]) {
        if names.len() > self.names.len() {
            self.names = names.to_vec();
        }
    }

    /// A printer for functions `names` (by index) and the clock ratio.
    pub fn new(names: Vec<String>, ticks_per_ns: f64, opts: Options) -> Printer {
        Printer {
            names,
            ticks_per_ns: if ticks_per_ns > 0.0 {
                ticks_per_ns
            } else {
                1.0
            },
            opts,
            threads: HashMap::new(),
            start: None,
            sigs: crate::values::Signatures::default(),
            cond: None,
            refused: Default::default(),
            lines: 0,
        }
    }

    /// Name and type captured values with `sigs` (else they are shown as
    /// raw registers).
    pub fn set_signatures(&mut self, sigs: crate::values::Signatures) {
        self.sigs = sigs;
    }

    /// More functions' origins (a library was loaded).
    pub fn add_list(&mut self, list: &serde_json::Value) {
        self.sigs.add_list(list);
    }

    /// `--where`: show only the calls that match, each as one line at its
    /// exit (with its arguments and return value).
    pub fn set_where(&mut self, cond: crate::values::Cond) {
        self.cond = Some(cond);
    }

    /// Give thread `tid` a name (its `comm`) for the task column and banner;
    /// call before its first event.
    pub fn name_thread(&mut self, tid: u64, name: &str) {
        let n = self.threads.len() + 1;
        self.threads
            .entry(tid)
            .or_insert_with(|| Thread {
                num: n,
                ..Thread::default()
            })
            .name = name.to_string();
    }

    /// Whether thread `tid` has been seen or named.
    pub fn knows(&self, tid: u64) -> bool {
        self.threads.contains_key(&tid)
    }

    /// Update the clock ratio.
    pub fn set_ticks_per_ns(&mut self, t: f64) {
        if t > 0.0 {
            self.ticks_per_ns = t;
        }
    }

    fn ns(&self, ticks: u64) -> u64 {
        (ticks as f64 / self.ticks_per_ns).round() as u64
    }

    fn name(&self, f: u32) -> &str {
        self.names.get(f as usize).map_or("?", |s| s.as_str())
    }

    /// Feed one event of thread `tid`; append any finished lines to `out`.
    pub fn feed(&mut self, tid: u64, ev: &Event, out: &mut String) {
        use crate::values::Seen;
        let n = self.threads.len() + 1;
        let seen = self
            .threads
            .entry(tid)
            .or_insert_with(|| Thread {
                num: n,
                ..Thread::default()
            })
            .vals
            .feed(ev);
        let (args, ret) = match seen {
            Seen::Values | Seen::Other => return,
            Seen::Entry(a) => (a, None),
            Seen::Exit(a, r) => (a, r),
        };
        if let Some(c) = self.cond.clone() {
            self.feed_where(tid, ev, &c, args, ret, out);
            return;
        }
        let args = args.map(|w| self.sigs.args(ev.func, &w));
        let ret = ret.and_then(|r| self.sigs.ret(ev.func, r));
        self.feed_call(tid, ev, args, ret, out);
    }

    /// `--where`: one line at the exit of each matching call.
    fn feed_where(
        &mut self,
        tid: u64,
        ev: &Event,
        c: &crate::values::Cond,
        args: Option<Vec<u64>>,
        ret: Option<(u64, u64)>,
        out: &mut String,
    ) {
        if ev.kind != KIND_EXIT {
            return;
        }
        let name = self.name(ev.func).to_string();
        let sig = self.sigs.get(ev.func).cloned();
        if let Err(e) = c.check(&name, sig.as_ref()) {
            if self.refused.insert(ev.func) {
                let _ = writeln!(out, "# tracer: --where: {e}; its calls are not shown");
            }
            return;
        }
        if c.matches(sig.as_ref(), args.as_deref(), ret) != Some(true) {
            return;
        }
        let th = &self.threads[&tid];
        let a = args.map_or_else(String::new, |w| crate::values::args_text(sig.as_ref(), &w));
        let r = ret
            .and_then(|r| crate::values::ret_text(sig.as_ref(), r))
            .map_or_else(String::new, |r| format!(" /* = {r} */"));
        let _ = writeln!(
            out,
            " {}) {}{}{name}({a});{r}",
            th.num,
            duration_column(self.ns(ev.dur)),
            indent(ev.depth),
        );
        self.lines += 1;
    }

    fn feed_call(
        &mut self,
        tid: u64,
        ev: &Event,
        args: Option<String>,
        ret: Option<String>,
        out: &mut String,
    ) {
        let start = *self.start.get_or_insert(ev.ts.saturating_sub(ev.dur));
        if self.opts.max_depth.is_some_and(|d| ev.depth >= d) {
            return;
        }
        let n = self.threads.len() + 1;
        let th = self.threads.entry(tid).or_insert_with(|| Thread {
            num: n,
            ..Thread::default()
        });
        let num = th.num;
        let task = if th.name.is_empty() {
            "thread".to_string()
        } else {
            th.name.clone()
        };
        if !std::mem::replace(&mut th.announced, true) && self.opts.graph {
            let _ = writeln!(
                out,
                " ------------------------------------------\n {num}) {task}-{tid}\n ------------------------------------------"
            );
        }
        if !self.opts.graph {
            // The function tracer: one line per entry, with the caller.
            if ev.kind == KIND_ENTRY {
                let th = self.threads.get_mut(&tid).expect("inserted above");
                th.stack.truncate(ev.depth as usize);
                let parent = th.stack.last().copied();
                th.stack.push(ev.func);
                if self.opts.threshold_ns.is_none() {
                    let t = self.ns(ev.ts.saturating_sub(start));
                    // With captured arguments, as ftrace's `func-args`.
                    let a = args.map_or_else(String::new, |a| format!("({a})"));
                    let _ = writeln!(
                        out,
                        "{task:>16}-{tid:<7} [{num:03}] {:>6}.{:06}: {}{a} <-{}",
                        t / 1_000_000_000,
                        (t / 1000) % 1_000_000,
                        self.name(ev.func),
                        parent.map_or("", |p| self.name(p))
                    );
                    self.lines += 1;
                }
            } else if let Some(th) = self.opts.threshold_ns {
                let d = self.ns(ev.dur);
                if d >= th {
                    let t = self.ns(ev.ts.saturating_sub(start));
                    let a = args.map_or_else(String::new, |a| format!("({a})"));
                    let r = ret.map_or_else(String::new, |r| format!(" = {r}"));
                    let _ = writeln!(
                        out,
                        "{task:>16}-{tid:<7} [{num:03}] {:>6}.{:06}: {}{a} ({}){r}",
                        t / 1_000_000_000,
                        (t / 1000) % 1_000_000,
                        self.name(ev.func),
                        crate::dur::human_ns(d)
                    );
                    self.lines += 1;
                }
            } else if let Some(r) = ret {
                // A captured return value: a line at the exit.
                let t = self.ns(ev.ts.saturating_sub(start));
                let _ = writeln!(
                    out,
                    "{task:>16}-{tid:<7} [{num:03}] {:>6}.{:06}: {} = {r}",
                    t / 1_000_000_000,
                    (t / 1000) % 1_000_000,
                    self.name(ev.func),
                );
                self.lines += 1;
            }
            return;
        }
        if let Some(th) = self.opts.threshold_ns {
            if ev.kind == KIND_EXIT {
                let d = self.ns(ev.dur);
                if d >= th {
                    let line = format!(
                        " {num}) {}{}{}();{}",
                        duration_column(d),
                        indent(ev.depth),
                        self.name(ev.func),
                        ret.map_or_else(String::new, |r| format!(" /* = {r} */"))
                    );
                    out.push_str(&line);
                    out.push('\n');
                    self.lines += 1;
                }
            }
            return;
        }
        // Calls at this depth or deeper (an exit: deeper) that are still
        // open were left without returning. Entry-only and `async fn`
        // events have no exit on this thread to wait for.
        if ev.flags & (FLAG_ENTRY_ONLY | FLAG_ASYNC) == 0 {
            let beyond = ev.depth + u16::from(ev.kind == KIND_EXIT);
            self.close_left(tid, num, beyond, ev.ts, out);
        }
        let pending = self
            .threads
            .get_mut(&tid)
            .expect("inserted above")
            .pending
            .take();
        let pending_args = std::mem::take(
            &mut self
                .threads
                .get_mut(&tid)
                .expect("inserted above")
                .pending_args,
        );
        if ev.kind == KIND_ENTRY {
            if let Some(p) = pending {
                self.open_call(tid, num, &p, &pending_args, out);
            }
            let th = self.threads.get_mut(&tid).expect("inserted above");
            th.pending = Some(*ev);
            th.pending_args = args.unwrap_or_default();
        } else if ev.kind == KIND_EXIT {
            let d = self.ns(ev.dur);
            match pending {
                Some(p) if p.func == ev.func && p.depth == ev.depth => {
                    let _ = writeln!(
                        out,
                        " {num}) {}{}{}({pending_args});{}",
                        duration_column(d),
                        indent(ev.depth),
                        self.name(ev.func),
                        ret.map_or_else(String::new, |r| format!(" /* = {r} */"))
                    );
                }
                other => {
                    if let Some(p) = other {
                        self.open_call(tid, num, &p, &pending_args, out);
                    }
                    let th = self.threads.get_mut(&tid).expect("inserted above");
                    if th
                        .open
                        .last()
                        .is_some_and(|o| o.0 == ev.func && o.1 == ev.depth)
                    {
                        th.open.pop();
                    }
                    let _ = writeln!(
                        out,
                        " {num}) {}{}}} /* {}{} */",
                        duration_column(d),
                        indent(ev.depth),
                        self.name(ev.func),
                        ret.map_or_else(String::new, |r| format!(" = {r}"))
                    );
                }
            }
            self.lines += 1;
        }
    }

    /// Print `p` as an open call (`name() {`) and remember it, unless it
    /// is an entry whose exit never comes on this thread.
    fn open_call(&mut self, tid: u64, num: usize, p: &Event, args: &str, out: &mut String) {
        self.open_line(num, p, args, out);
        if p.flags & (FLAG_ENTRY_ONLY | FLAG_ASYNC) == 0 {
            if let Some(th) = self.threads.get_mut(&tid) {
                th.open.push((p.func, p.depth, p.ts));
            }
        }
    }

    /// Close the calls of thread `tid` at depth `beyond` or deeper as left
    /// without returning, known to be over at `now`.
    fn close_left(&mut self, tid: u64, num: usize, beyond: u16, now: u64, out: &mut String) {
        let Some(th) = self.threads.get_mut(&tid) else {
            return;
        };
        let pending = th
            .pending
            .filter(|p| p.depth >= beyond && p.flags & (FLAG_ENTRY_ONLY | FLAG_ASYNC) == 0);
        let mut args = String::new();
        if pending.is_some() {
            th.pending = None;
            args = std::mem::take(&mut th.pending_args);
        }
        let mut left = Vec::new();
        while th.open.last().is_some_and(|o| o.1 >= beyond) {
            left.push(th.open.pop().expect("checked"));
        }
        if let Some(p) = pending {
            let d = self.ns(now.saturating_sub(p.ts));
            let _ = writeln!(
                out,
                " {num}) {}{}{}({args}); /* not returned */",
                duration_column(d),
                indent(p.depth),
                self.name(p.func)
            );
            self.lines += 1;
        }
        for (func, depth, ts) in left {
            let d = self.ns(now.saturating_sub(ts));
            let _ = writeln!(
                out,
                " {num}) {}{}}} /* {}: not returned */",
                duration_column(d),
                indent(depth),
                self.name(func)
            );
            self.lines += 1;
        }
    }

    fn open_line(&mut self, num: usize, p: &Event, args: &str, out: &mut String) {
        let _ = writeln!(
            out,
            " {num}) {BLANK}{}{}({args}) {{",
            indent(p.depth),
            self.name(p.func)
        );
        self.lines += 1;
    }

    /// Print entries still waiting for their exit as open calls.
    pub fn flush(&mut self, out: &mut String) {
        let mut pend: Vec<(usize, Event, String)> = self
            .threads
            .values_mut()
            .filter_map(|t| {
                let a = std::mem::take(&mut t.pending_args);
                t.pending.take().map(|p| (t.num, p, a))
            })
            .collect();
        pend.sort_by_key(|(_, e, _)| e.ts);
        for (num, p, a) in pend {
            self.open_line(num, &p, &a, out);
        }
    }
}

fn indent(depth: u16) -> String {
    "  ".repeat(depth as usize)
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

    #[test]
    fn columns_match_ftrace() {
        assert_eq!(
            format!(" 1) {}  parse();", duration_column(215)),
            " 1)   0.215 us    |    parse();"
        );
        assert_eq!(
            format!(" 1) {}}}", duration_column(12_345)),
            " 1) + 12.345 us   |  }"
        );
        assert_eq!(mark(2_000_000), '#');
        assert_eq!(BLANK.len(), duration_column(215).len());
    }

    #[test]
    fn nested_calls_and_leaves() {
        let names = vec!["outer".to_string(), "leaf".to_string()];
        let mut p = Printer::new(
            names,
            1.0,
            Options {
                graph: true,
                ..Options::default()
            },
        );
        let mut out = String::new();
        p.feed(7, &ev(100, 0, 0, 0, KIND_ENTRY), &mut out);
        p.feed(7, &ev(110, 0, 1, 1, KIND_ENTRY), &mut out);
        p.feed(7, &ev(120, 10, 1, 1, KIND_EXIT), &mut out);
        p.feed(7, &ev(20_200, 20_100, 0, 0, KIND_EXIT), &mut out);
        let lines: Vec<&str> = out.lines().filter(|l| l.contains('|')).collect();
        assert_eq!(lines[0], " 1)               |  outer() {");
        assert_eq!(lines[1], " 1)   0.010 us    |    leaf();");
        assert_eq!(lines[2], " 1) + 20.100 us   |  } /* outer */");
    }

    #[test]
    fn calls_left_by_longjmp_are_closed() {
        // pcall { throw { raise } } and back in pcall's caller: throw and
        // raise never return (longjmp), pcall does.
        let names: Vec<String> = ["main", "pcall", "throw", "raise", "next"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut p = Printer::new(
            names,
            1.0,
            Options {
                graph: true,
                ..Options::default()
            },
        );
        let mut out = String::new();
        p.feed(7, &ev(1000, 0, 0, 0, KIND_ENTRY), &mut out);
        p.feed(7, &ev(2000, 0, 1, 1, KIND_ENTRY), &mut out);
        p.feed(7, &ev(3000, 0, 2, 2, KIND_ENTRY), &mut out);
        p.feed(7, &ev(4000, 0, 3, 3, KIND_ENTRY), &mut out);
        p.feed(7, &ev(9000, 7000, 1, 1, KIND_EXIT), &mut out);
        p.feed(7, &ev(9500, 0, 4, 1, KIND_ENTRY), &mut out);
        p.feed(7, &ev(9600, 100, 4, 1, KIND_EXIT), &mut out);
        p.feed(7, &ev(20_000, 19_000, 0, 0, KIND_EXIT), &mut out);
        let lines: Vec<&str> = out.lines().filter(|l| l.contains('|')).collect();
        assert_eq!(
            lines,
            vec![
                " 1)               |  main() {",
                " 1)               |    pcall() {",
                " 1)               |      throw() {",
                " 1)   5.000 us    |        raise(); /* not returned */",
                " 1)   6.000 us    |      } /* throw: not returned */",
                " 1)   7.000 us    |    } /* pcall */",
                " 1)   0.100 us    |    next();",
                " 1) + 19.000 us   |  } /* main */",
            ]
        );
        // Entry-only events (returns not hooked) are never "not returned".
        let mut p = Printer::new(
            vec!["a".into(), "b".into()],
            1.0,
            Options {
                graph: true,
                ..Options::default()
            },
        );
        let mut out = String::new();
        let only = |ts, func| Event {
            flags: FLAG_ENTRY_ONLY,
            ..ev(ts, 0, func, 0, KIND_ENTRY)
        };
        p.feed(7, &only(100, 0), &mut out);
        p.feed(7, &only(200, 1), &mut out);
        assert!(!out.contains("not returned"), "{out}");
    }

    #[test]
    fn threshold_and_depth() {
        let names = vec!["outer".to_string(), "leaf".to_string()];
        let opts = Options {
            graph: true,
            threshold_ns: Some(1000),
            max_depth: Some(1),
        };
        let mut p = Printer::new(names, 1.0, opts);
        let mut out = String::new();
        p.feed(7, &ev(100, 0, 0, 0, KIND_ENTRY), &mut out);
        p.feed(7, &ev(110, 0, 1, 1, KIND_ENTRY), &mut out);
        p.feed(7, &ev(5000, 4000, 1, 1, KIND_EXIT), &mut out);
        p.feed(7, &ev(5100, 5000, 0, 0, KIND_EXIT), &mut out);
        p.feed(7, &ev(5200, 500, 0, 0, KIND_EXIT), &mut out);
        let lines: Vec<&str> = out.lines().filter(|l| l.contains('|')).collect();
        assert_eq!(lines, vec![" 1)   5.000 us    |  outer();"]);
    }
}
