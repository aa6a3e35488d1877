//! Argument and return-value capture at `#[traceable]` pads (issue 14), in
//! process: functions of each supported parameter kind called with known
//! values record them (and the macro's names and types), `Result`/`Option`
//! returns record the variant and payload, functions enabled without
//! capture record no values, and a panic through a capturing function
//! still closes it. On x86-64, AArch64 and ARMv7 (Thumb-2 and A32): which
//! parameters are in registers at the pad, and so captured, follows each
//! one's calling convention.

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use tracer::__private::Event;
use tracer::Capture;
use tracer_core::capture::{Args, Pending, RetKind, TraceableSig, ValueKind, SPEC_TRACEABLE};
use tracer_core::event::{KIND_ARGS, KIND_RETVAL};
use tracer_tests::{block_on, YieldOnce};

/// Not shown: a struct passed by value.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    level: u32,
}

#[tracer::traceable]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn ints(a: i8, b: u8, c: i16, d: u16, e: i32, f: u32, g: i64, h: u64) -> i64 {
    a as i64 + b as i64 + c as i64 + d as i64 + e as i64 + f as i64 + g + h as i64
}

#[tracer::traceable]
#[inline(never)]
fn mixed(x: f64, y: f32, on: bool, c: char, p: *const u8, r: &u64, cfg: Config) -> f64 {
    black_box((p, r, cfg.level, on, c));
    x + y as f64
}

#[tracer::traceable]
#[inline(never)]
fn lengths(s: &str, v: &[u32], owned: String, list: Vec<u8>) -> usize {
    s.len() + v.len() + owned.len() + list.len()
}

#[tracer::traceable(ret)]
#[inline(never)]
fn parse(input: &str) -> Result<u32, std::num::ParseIntError> {
    let v: u32 = input.trim().parse()?;
    if v == 0 {
        return Ok(1000);
    }
    Ok(v)
}

#[tracer::traceable(ret)]
#[inline(never)]
fn first(v: &[i32]) -> Option<i32> {
    v.first().copied()
}

#[tracer::traceable(ret)]
#[inline(never)]
fn name_len(v: &[i32]) -> Option<String> {
    v.first().map(|x| x.to_string())
}

/// Without `(ret)`: its `Result` is not captured (nor handed to the pad).
#[tracer::traceable]
#[inline(never)]
fn unasked(n: u32) -> Result<u32, ()> {
    Ok(n)
}

#[tracer::traceable]
#[inline(never)]
fn plain(n: u32) -> u32 {
    n * 2
}

#[tracer::traceable]
#[inline(never)]
fn boom(n: u32) -> u32 {
    if n > 1 {
        panic!("boom");
    }
    n
}

/// Async: timed as always, no values captured.
#[tracer::traceable]
async fn later(n: u32) -> Result<u32, ()> {
    Ok(n + 1)
}

struct Obj {
    v: u64,
}

impl Obj {
    #[tracer::traceable]
    #[inline(never)]
    fn get(&self, k: u64) -> u64 {
        self.v + k
    }
}

/// A call: function, argument words, return words.
type Call = (u32, Option<Vec<u64>>, Option<(u64, u64)>);

/// What the tap saw of each function: calls with their argument words and
/// return words.
#[derive(Default)]
struct Seen {
    pending: std::collections::HashMap<u64, Pending>,
    calls: Vec<Call>,
    open: Vec<(u32, Option<Vec<u64>>)>,
}

fn tap(funcs: Vec<u32>) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tracer::__private::set_event_tap(Some(Box::new(move |tid, ev: &Event| {
        if !funcs.contains(&ev.func) {
            return;
        }
        let mut s = s.lock().unwrap();
        match ev.kind {
            KIND_ARGS | KIND_RETVAL => s.pending.entry(tid).or_default().feed(ev),
            tracer::__private::KIND_ENTRY => {
                let a = s.pending.entry(tid).or_default().take_args(ev.func);
                s.open.push((ev.func, (!a.is_empty()).then_some(a)));
            }
            tracer::__private::KIND_EXIT => {
                let r = s.pending.entry(tid).or_default().take_ret(ev.func);
                let a = s
                    .open
                    .pop()
                    .and_then(|(f, a)| (f == ev.func).then_some(a).flatten());
                s.calls.push((ev.func, a, r));
            }
            _ => {}
        }
    })));
    seen
}

fn idx(name: &str) -> u32 {
    tracer::__private::func_index(name).unwrap_or_else(|| panic!("{name} not registered"))
}

fn sig_of(name: &str) -> TraceableSig {
    let f = tracer::functions()
        .into_iter()
        .find(|f| f.ident == name)
        .unwrap();
    TraceableSig::parse(&f.signature)
}

fn values(words: &[u64]) -> Vec<u64> {
    assert_eq!(words[0] as u32 & SPEC_TRACEABLE, SPEC_TRACEABLE);
    Args::decode(words).unwrap().ints
}

const ALL: Capture = Capture {
    ints: 6,
    floats: 8,
    stack: 0,
    retval: true,
};

#[test]
fn traceable_functions_capture_their_values_only_when_asked() {
    let names = [
        "ints", "mixed", "lengths", "parse", "first", "name_len", "plain", "boom", "get", "later",
        "unasked",
    ];
    let funcs: Vec<u32> = names.iter().map(|n| idx(n)).collect();

    // The macro's view of the signatures.
    let s = sig_of("mixed");
    let kinds: Vec<(&str, ValueKind, &str)> = s
        .params
        .iter()
        .map(|(n, k, t)| (n.as_str(), *k, t.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("x", ValueKind::Float(8), "f64"),
            ("y", ValueKind::Float(4), "f32"),
            ("on", ValueKind::Bool, "bool"),
            ("c", ValueKind::Char, "char"),
            ("p", ValueKind::Ptr, "*const u8"),
            ("r", ValueKind::Ptr, "&u64"),
            ("cfg", ValueKind::Opaque, "Config"),
        ]
    );
    assert_eq!(
        s.ret,
        Some((RetKind::Value(ValueKind::Float(8)), "f64".into()))
    );
    assert_eq!(
        sig_of("parse").ret,
        Some((
            RetKind::Result(ValueKind::Uint(4), ValueKind::Opaque),
            "Result<u32, std::num::ParseIntError>".into()
        ))
    );
    assert_eq!(
        sig_of("name_len").ret,
        Some((RetKind::Option(ValueKind::Len), "Option<String>".into()))
    );
    assert_eq!(sig_of("get").params[0].1, ValueKind::Ptr);
    assert_eq!(sig_of("later"), TraceableSig::default());
    assert_eq!(sig_of("unasked").ret, None);

    // Optimised builds: the capturing hooks pass the vector-register check
    // (x86-64; the ARM trampolines always save).
    #[cfg(all(not(debug_assertions), target_arch = "x86_64"))]
    {
        let st = tracer::stats();
        assert_eq!(
            st.capture_trampoline, "lean",
            "{:?}",
            st.capture_full_save_reason
        );
    }
    let seen = tap(funcs.clone());
    let pat = names.join(" ");
    // Enabled without capture: no values.
    tracer::enable(&pat).unwrap();
    assert_eq!(plain(black_box(4)), 8);
    assert_eq!(parse(black_box("12")), Ok(12));
    tracer::__private::drain();
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.calls.len(), 2, "{:?}", s.calls);
        assert!(s.calls.iter().all(|(_, a, r)| a.is_none() && r.is_none()));
    }
    seen.lock().unwrap().calls.clear();

    // With capture.
    tracer::enable_with(&pat, ALL).unwrap();
    let word = 0x1234_5678u64;
    let cfg = Config { level: 3 };
    let o = Obj { v: 5 };
    assert_eq!(
        ints(-3, 200, -300, 60000, -70000, 4_000_000_000, -5, 1 << 40),
        -3 + 200 - 300 + 60000 - 70000 + 4_000_000_000 - 5 + (1 << 40)
    );
    assert_eq!(
        mixed(1.5, 0.25, true, 'é', 0x1000 as *const u8, &word, cfg),
        1.75
    );
    assert_eq!(
        lengths("hello", &[1, 2, 3], "abcd".to_string(), vec![0; 7]),
        19
    );
    assert_eq!(parse(black_box("41")), Ok(41));
    assert_eq!(parse(black_box("0")), Ok(1000));
    assert!(parse(black_box("x")).is_err());
    assert_eq!(first(&[7, 8]), Some(7));
    assert_eq!(first(&[]), None);
    assert_eq!(name_len(&[12345]), Some("12345".into()));
    assert_eq!(o.get(black_box(2)), 7);
    assert_eq!(block_on(later(black_box(1))), Ok(2));
    assert_eq!(unasked(black_box(9)), Ok(9));
    let r = std::panic::catch_unwind(|| boom(black_box(5)));
    assert!(r.is_err());
    tracer::__private::drain();
    tracer::disable(&pat).unwrap();
    tracer::__private::set_event_tap(None);

    let s = seen.lock().unwrap();
    let calls: Vec<_> = s.calls.iter().collect();
    let of = |name: &str| -> Vec<&Call> {
        let f = idx(name);
        calls.iter().copied().filter(|c| c.0 == f).collect()
    };
    // Integers: the raw registers, masked to each type's width by the
    // reader. In registers at the pad: 6 on x86-64 (the 7th and 8th are on
    // the stack: not captured), all 8 on AArch64, 4 on ARMv7 (r0-r3).
    let in_regs = if cfg!(target_arch = "x86_64") {
        6
    } else if cfg!(target_arch = "aarch64") {
        8
    } else {
        4
    };
    let c = &of("ints")[0];
    let v = values(c.1.as_ref().unwrap());
    assert_eq!(v.len(), in_regs);
    let widths = [1, 1, 2, 2, 4, 4, 8, 8];
    let masked: Vec<u64> = v
        .iter()
        .zip(widths)
        .map(|(&w, b)| {
            if b == 8 {
                w
            } else {
                w & ((1u64 << (8 * b)) - 1)
            }
        })
        .collect();
    let expected = [
        (-3i8) as u8 as u64,
        200,
        (-300i16) as u16 as u64,
        60000,
        (-70000i32) as u32 as u64,
        4_000_000_000,
        -5i64 as u64,
        1 << 40,
    ];
    assert_eq!(masked, expected[..in_regs]);
    let k: Vec<ValueKind> = sig_of("ints").params.iter().map(|p| p.1).collect();
    assert_eq!(k[3], ValueKind::Uint(2));
    assert!(
        k[in_regs..].iter().all(|k| *k == ValueKind::Opaque),
        "{k:?}"
    );
    if in_regs == 8 {
        assert_eq!(k[6], ValueKind::Int(8));
    }
    assert_eq!(
        c.2.map(|r| r.0 as i64),
        Some(-3 + 200 - 300 + 60000 - 70000 + 4_000_000_000 - 5 + (1 << 40))
    );
    // Floats, bool, char, pointers; the struct is not captured.
    let c = &of("mixed")[0];
    let v = values(c.1.as_ref().unwrap());
    assert_eq!(v.len(), 6);
    assert_eq!(f64::from_bits(v[0]), 1.5);
    assert_eq!(f32::from_bits(v[1] as u32), 0.25);
    assert_eq!(v[2] & 0xff, 1);
    assert_eq!(v[3] as u32, 'é' as u32);
    assert_eq!(v[4], 0x1000);
    assert_eq!(v[5], &word as *const u64 as u64);
    assert_eq!(c.2.map(|r| f64::from_bits(r.0)), Some(1.75));
    // Lengths (on ARMv7 the two slices fill r0-r3: the owned values are
    // on the stack, not captured).
    let c = &of("lengths")[0];
    let lens: &[u64] = if cfg!(target_arch = "arm") {
        &[5, 3]
    } else {
        &[5, 3, 4, 7]
    };
    assert_eq!(values(c.1.as_ref().unwrap()), lens);
    assert_eq!(c.2.map(|r| r.0), Some(19));
    // Result: (payload, variant); the error's payload is not shown.
    let p = of("parse");
    assert_eq!(p.len(), 3);
    assert_eq!(values(p[0].1.as_ref().unwrap()), [2]);
    assert_eq!(p[0].2, Some((41, 0)));
    assert_eq!(p[1].2, Some((1000, 0)), "an early `return` is captured");
    assert_eq!(p[2].2.map(|r| r.1), Some(1), "`?` gives Err");
    // Option.
    let f = of("first");
    assert_eq!(f[0].2, Some((7, 0)));
    assert_eq!(f[1].2.map(|r| r.1), Some(1));
    assert_eq!(of("name_len")[0].2, Some((5, 0)));
    // A method: `&self` as an address.
    let g = &of("get")[0];
    let v = values(g.1.as_ref().unwrap());
    assert_eq!(v, [&o as *const Obj as u64, 2]);
    assert_eq!(g.2, Some((7, 7)));
    // A Result without `(ret)`: the argument only.
    let u = of("unasked");
    assert_eq!((values(u[0].1.as_ref().unwrap()), u[0].2), (vec![9], None));
    // An async fn: its call, without values.
    let l = of("later");
    assert_eq!(l.len(), 1);
    assert_eq!((&l[0].1, l[0].2), (&None, None));
    // A panic: the exit is seen (the guard's pad), without a value.
    let b = of("boom");
    assert_eq!(b.len(), 1);
    assert_eq!(values(b[0].1.as_ref().unwrap()), [5]);
    assert_eq!(b[0].2, None);
}

/// Async with `(values)`: its arguments at the first poll, its return value
/// at completion, across a suspension; `return` and `?` come back to the
/// exit pad. x86-64 only: elsewhere it is timed without values.
#[tracer::traceable(values)]
async fn fetch(id: u32, key: &str) -> Result<u32, u32> {
    YieldOnce(false).await;
    if id == 0 {
        return Err(7);
    }
    let n: u32 = u32::try_from(key.len()).map_err(|_| 9u32)?;
    Ok(id + n)
}

#[test]
fn async_fns_capture_their_values_with_the_values_attribute() {
    tracer_tests::fresh_process!();
    let x86 = cfg!(target_arch = "x86_64");
    let s = sig_of("fetch");
    if !x86 {
        assert_eq!(s, TraceableSig::default());
    } else {
        assert_eq!(
            s.params
                .iter()
                .map(|(n, k, _)| (n.as_str(), *k))
                .collect::<Vec<_>>(),
            [("id", ValueKind::Uint(4)), ("key", ValueKind::Len)]
        );
        assert_eq!(
            s.ret,
            Some((
                RetKind::Result(ValueKind::Uint(4), ValueKind::Uint(4)),
                "Result<u32, u32>".into()
            ))
        );
    }
    let seen = tap(vec![idx("fetch")]);
    // Without capture: the call, no values.
    tracer::enable("fetch").unwrap();
    assert_eq!(block_on(fetch(black_box(1), "abc")), Ok(4));
    tracer::__private::drain();
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.calls.len(), 1, "{:?}", s.calls);
        assert_eq!((&s.calls[0].1, s.calls[0].2), (&None, None));
    }
    seen.lock().unwrap().calls.clear();
    // With capture (switched while enabled).
    tracer::enable_with("fetch", ALL).unwrap();
    assert_eq!(block_on(fetch(black_box(3), "ab")), Ok(5));
    assert_eq!(block_on(fetch(black_box(0), "xyz")), Err(7));
    // A future dropped after its first poll: its entry with the values,
    // an exit without a return value.
    {
        let mut f = std::pin::pin!(fetch(black_box(8), "q"));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(std::future::Future::poll(f.as_mut(), &mut cx).is_pending());
    }
    tracer::__private::drain();
    tracer::disable("fetch").unwrap();
    tracer::__private::set_event_tap(None);
    let s = seen.lock().unwrap();
    let got: Vec<_> = s
        .calls
        .iter()
        .map(|(_, a, r)| (a.as_deref().map(values), *r))
        .collect();
    let want = if x86 {
        vec![
            (Some(vec![3, 2]), Some((5, 0))),
            (Some(vec![0, 3]), Some((7, 1))),
            (Some(vec![8, 1]), None),
        ]
    } else {
        vec![(None, None); 3]
    };
    assert_eq!(got, want);
}
