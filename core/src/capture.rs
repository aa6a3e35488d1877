//! Argument and return-value capture: what a function is enabled with, and
//! how the values travel.
//!
//! A function enabled with capture calls a *different* target than one
//! enabled without (a capturing entry stub and trampoline): functions
//! without capture keep their hot path unchanged. The capturing hook writes
//! [`KIND_ARGS`](crate::event::KIND_ARGS) events just before the entry
//! event, and the capturing return hook one
//! [`KIND_RETVAL`](crate::event::KIND_RETVAL) event just before the exit
//! event, so a reader attaches the values it holds for a thread to that
//! thread's next entry or exit of the same function.
//!
//! The argument words, in order: the spec ([`Capture::encode`]), `ints` integer argument registers (x86-64:
//! `rdi rsi rdx rcx r8 r9`; AArch64: `x0`–`x7`), then `floats`
//! floating-point argument registers (`xmm0`.. or `d0`.., their low 64
//! bits), then `stack` words of the caller's outgoing arguments on the
//! stack (the first above the return address on x86-64, at the entry stack
//! pointer on AArch64).
//! The words are raw: names and types come from the reader (debug
//! information), which also chose the counts.

/// Integer argument registers at most (x86-64 System V: 6; AArch64: 8).
pub const MAX_INTS: u8 = 8;
/// Floating-point argument registers at most.
pub const MAX_FLOATS: u8 = 8;
/// Stack words at most.
pub const MAX_STACK: u8 = 8;
/// Argument words of one call at most, the spec not counted (hostile input
/// is bounded by it).
pub const MAX_WORDS: usize = (MAX_INTS + MAX_FLOATS + MAX_STACK) as usize;

/// What a function is enabled with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capture {
    /// Integer argument registers captured at entry.
    pub ints: u8,
    /// Floating-point argument registers captured at entry.
    pub floats: u8,
    /// Stack argument words captured at entry.
    pub stack: u8,
    /// The return value is captured at exit.
    pub retval: bool,
}

impl Capture {
    /// No capture: the plain hot path.
    pub const NONE: Capture = Capture {
        ints: 0,
        floats: 0,
        stack: 0,
        retval: false,
    };

    /// `--args` without debug information: every integer argument register
    /// of the calling convention and every floating-point one.
    pub fn all_registers(retval: bool) -> Capture {
        Capture {
            ints: if cfg!(target_arch = "x86_64") { 6 } else { 8 },
            floats: MAX_FLOATS,
            stack: 0,
            retval,
        }
    }

    /// Whether anything is captured (a capturing target is needed).
    #[inline]
    pub fn any(&self) -> bool {
        self.args() || self.retval
    }

    /// Whether arguments are captured.
    #[inline]
    pub fn args(&self) -> bool {
        self.ints + self.floats + self.stack > 0
    }

    /// Argument words per call.
    #[inline]
    pub fn words(&self) -> usize {
        (self.ints + self.floats + self.stack) as usize
    }

    /// The compact form carried in the entry stub and over the wire:
    /// bits 0–3 `ints`, 4–7 `floats`, 8–11 `stack`, bit 12 `retval`.
    #[inline]
    pub fn encode(&self) -> u32 {
        u32::from(self.ints.min(MAX_INTS))
            | u32::from(self.floats.min(MAX_FLOATS)) << 4
            | u32::from(self.stack.min(MAX_STACK)) << 8
            | u32::from(self.retval) << 12
    }

    /// The inverse of [`Capture::encode`]; out-of-range counts are clamped.
    #[inline]
    pub fn decode(v: u32) -> Capture {
        Capture {
            ints: ((v & 15) as u8).min(MAX_INTS),
            floats: ((v >> 4 & 15) as u8).min(MAX_FLOATS),
            stack: ((v >> 8 & 15) as u8).min(MAX_STACK),
            retval: v >> 12 & 1 != 0,
        }
    }
}

/// Or-ed into the spec word of a `#[traceable]` pad's values: the words
/// that follow are the captured parameters in order, one word each (the
/// low bits hold their count), named and typed by the function's
/// [`TraceableSig`].
pub const SPEC_TRACEABLE: u32 = 1 << 13;

/// How a `#[traceable]` value is captured and shown (the macro's view of
/// the type, from its syntax).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// A signed integer of this many bytes.
    Int(u8),
    /// An unsigned integer of this many bytes.
    Uint(u8),
    /// A floating-point number of this many bytes (the word holds its bits).
    Float(u8),
    /// `bool`.
    Bool,
    /// `char` (a Unicode scalar value).
    Char,
    /// A raw pointer or a reference: its address.
    Ptr,
    /// `&str`, a slice, `String`, `Vec`: its length.
    Len,
    /// Not captured: shown by type name only.
    Opaque,
}

impl ValueKind {
    /// The token of the signature text.
    pub fn token(&self) -> String {
        match self {
            ValueKind::Int(n) => format!("i{}", u32::from(*n) * 8),
            ValueKind::Uint(n) => format!("u{}", u32::from(*n) * 8),
            ValueKind::Float(n) => format!("f{}", u32::from(*n) * 8),
            ValueKind::Bool => "bool".into(),
            ValueKind::Char => "char".into(),
            ValueKind::Ptr => "ptr".into(),
            ValueKind::Len => "len".into(),
            ValueKind::Opaque => "-".into(),
        }
    }

    /// The inverse of [`ValueKind::token`] (unknown: opaque).
    pub fn parse(t: &str) -> ValueKind {
        let bytes = |n: &str| {
            n.parse::<u8>()
                .ok()
                .filter(|b| b % 8 == 0 && *b <= 64)
                .map(|b| b / 8)
        };
        match t {
            "bool" => ValueKind::Bool,
            "char" => ValueKind::Char,
            "ptr" => ValueKind::Ptr,
            "len" => ValueKind::Len,
            _ => match (t.get(..1), t.get(1..).and_then(bytes)) {
                (Some("i"), Some(n)) => ValueKind::Int(n),
                (Some("u"), Some(n)) => ValueKind::Uint(n),
                (Some("f"), Some(n)) if n == 4 || n == 8 => ValueKind::Float(n),
                _ => ValueKind::Opaque,
            },
        }
    }

    /// Whether a value is captured.
    pub fn captured(&self) -> bool {
        *self != ValueKind::Opaque
    }
}

/// A `#[traceable]` function's return, as captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetKind {
    /// A plain value.
    Value(ValueKind),
    /// `Result<T, E>`: the variant (the event's second word: 0 `Ok`, 1
    /// `Err`) and the payload of either kind.
    Result(ValueKind, ValueKind),
    /// `Option<T>`: 0 `Some` (with the payload), 1 `None`.
    Option(ValueKind),
}

/// A `#[traceable]` function's parameters and return type as its macro
/// saw them: the text `FnDesc::sig` holds, one line a parameter
/// (`name:KIND:TYPE`), and a last line `->KIND:TYPE` if the return value is
/// captured (`KIND`: a [`ValueKind`] token, `res/K/K` or `opt/K`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceableSig {
    /// The parameters: name, kind, type as written.
    pub params: Vec<(String, ValueKind, String)>,
    /// The return's kind and type as written.
    pub ret: Option<(RetKind, String)>,
}

impl TraceableSig {
    /// Parse [`TraceableSig::text`]'s form (lenient: unknown kinds are
    /// opaque, malformed lines skipped).
    pub fn parse(s: &str) -> TraceableSig {
        let mut sig = TraceableSig::default();
        for line in s.lines() {
            if let Some(r) = line.strip_prefix("->") {
                let (k, ty) = r.split_once(':').unwrap_or((r, ""));
                let parts: Vec<&str> = k.split('/').collect();
                let kind = match parts.as_slice() {
                    ["res", a, b] => RetKind::Result(ValueKind::parse(a), ValueKind::parse(b)),
                    ["opt", a] => RetKind::Option(ValueKind::parse(a)),
                    _ => RetKind::Value(ValueKind::parse(k)),
                };
                sig.ret = Some((kind, ty.to_string()));
            } else {
                let mut it = line.splitn(3, ':');
                if let (Some(n), Some(k), Some(ty)) = (it.next(), it.next(), it.next()) {
                    sig.params
                        .push((n.to_string(), ValueKind::parse(k), ty.to_string()));
                }
            }
        }
        sig
    }

    /// The text form.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (n, k, ty) in &self.params {
            out.push_str(&format!("{n}:{}:{ty}\n", k.token()));
        }
        if let Some((k, ty)) = &self.ret {
            let k = match k {
                RetKind::Value(v) => v.token(),
                RetKind::Result(a, b) => format!("res/{}/{}", a.token(), b.token()),
                RetKind::Option(a) => format!("opt/{}", a.token()),
            };
            out.push_str(&format!("->{k}:{ty}\n"));
        }
        out
    }
}

/// One call's argument words, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// The integer argument registers, in calling-convention order.
    pub ints: Vec<u64>,
    /// The floating-point argument registers (low 64 bits).
    pub floats: Vec<u64>,
    /// The stack argument words, the first above the return address.
    pub stack: Vec<u64>,
}

impl Args {
    /// Decode the words of a `KIND_ARGS` set (the spec first); `None` if
    /// they are fewer than the spec says (a set cut by a full ring, or
    /// hostile input).
    pub fn decode(words: &[u64]) -> Option<Args> {
        let (&spec, rest) = words.split_first()?;
        let spec32 = u32::try_from(spec).ok()?;
        if spec32 & SPEC_TRACEABLE != 0 {
            let n = (spec32 & 0xff) as usize;
            return Some(Args {
                ints: rest.get(..n)?.to_vec(),
                ..Args::default()
            });
        }
        let cap = Capture::decode(u32::try_from(spec).ok()?);
        let (i, f, s) = (cap.ints as usize, cap.floats as usize, cap.stack as usize);
        if rest.len() < i + f + s {
            return None;
        }
        Some(Args {
            ints: rest[..i].to_vec(),
            floats: rest[i..i + f].to_vec(),
            stack: rest[i + f..i + f + s].to_vec(),
        })
    }
}

/// Gathers the values events of one thread and hands them to the entry or
/// exit they precede.
#[derive(Clone, Debug, Default)]
pub struct Pending {
    func: u32,
    args: Vec<u64>,
    ret: Option<(u32, u64, u64)>,
}

impl Pending {
    /// Take a values event (`ev.kind` is `KIND_ARGS` or `KIND_RETVAL`).
    /// Bounded: words beyond [`MAX_WORDS`] are dropped.
    pub fn feed(&mut self, ev: &crate::event::Event) {
        use crate::event::{KIND_ARGS, KIND_RETVAL};
        match ev.kind {
            KIND_ARGS => {
                if ev.flags == 0 || ev.func != self.func {
                    self.args.clear();
                    self.func = ev.func;
                }
                if self.args.len() + 2 <= MAX_WORDS + 2 {
                    self.args.push(ev.ts);
                    self.args.push(ev.dur);
                }
            }
            KIND_RETVAL => self.ret = Some((ev.func, ev.ts, ev.dur)),
            _ => {}
        }
    }

    /// The arguments gathered for an entry of `func` (cleared either way).
    pub fn take_args(&mut self, func: u32) -> Vec<u64> {
        let a = std::mem::take(&mut self.args);
        if self.func == func {
            a
        } else {
            Vec::new()
        }
    }

    /// The return value gathered for an exit of `func` (cleared either way).
    pub fn take_ret(&mut self, func: u32) -> Option<(u64, u64)> {
        match self.ret.take() {
            Some((f, a, b)) if f == func => Some((a, b)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, KIND_ARGS, KIND_RETVAL};

    #[test]
    fn encoding_round_trips_and_clamps() {
        let c = Capture {
            ints: 3,
            floats: 2,
            stack: 1,
            retval: true,
        };
        assert_eq!(Capture::decode(c.encode()), c);
        assert_eq!(Capture::decode(0xffff_ffff).ints, MAX_INTS);
        assert!(!Capture::NONE.any());
        assert_eq!(Capture::NONE.encode(), 0);
    }

    #[test]
    fn traceable_signatures_round_trip() {
        let s = TraceableSig {
            params: vec![
                ("n".into(), ValueKind::Int(4), "i32".into()),
                ("s".into(), ValueKind::Len, "&str".into()),
                ("cfg".into(), ValueKind::Opaque, "Config".into()),
                ("p".into(), ValueKind::Ptr, "*const std::ffi::c_void".into()),
            ],
            ret: Some((
                RetKind::Result(ValueKind::Uint(4), ValueKind::Opaque),
                "Result<u32, std::num::ParseIntError>".into(),
            )),
        };
        assert_eq!(TraceableSig::parse(&s.text()), s);
        assert_eq!(ValueKind::parse("f32"), ValueKind::Float(4));
        assert_eq!(ValueKind::parse("f16"), ValueKind::Opaque);
        assert_eq!(ValueKind::parse("u999"), ValueKind::Opaque);
        assert_eq!(TraceableSig::parse("garbage"), TraceableSig::default());
    }

    #[test]
    fn pending_values_attach_to_the_same_function_only() {
        let ev = |kind, func, flags, ts, dur| Event {
            ts,
            dur,
            func,
            depth: 0,
            kind,
            flags,
        };
        let mut p = Pending::default();
        let spec = u64::from(
            Capture {
                ints: 2,
                floats: 1,
                stack: 0,
                retval: false,
            }
            .encode(),
        );
        p.feed(&ev(KIND_ARGS, 4, 0, spec, 2));
        p.feed(&ev(KIND_ARGS, 4, 1, 3, 4));
        let w = p.take_args(4);
        assert_eq!(w, vec![spec, 2, 3, 4]);
        assert_eq!(
            Args::decode(&w),
            Some(Args {
                ints: vec![2, 3],
                floats: vec![4],
                stack: vec![]
            })
        );
        assert_eq!(Args::decode(&w[..3]), None);
        assert_eq!(Args::decode(&[]), None);
        assert!(p.take_args(4).is_empty());
        p.feed(&ev(KIND_ARGS, 4, 0, 1, 2));
        assert!(p.take_args(5).is_empty());
        p.feed(&ev(KIND_RETVAL, 4, 0, 7, 8));
        assert_eq!(p.take_ret(4), Some((7, 8)));
        // A #[traceable] set: every word is a value.
        let t = u64::from(SPEC_TRACEABLE | 3);
        assert_eq!(
            Args::decode(&[t, 1, 2, 3]).map(|a| a.ints),
            Some(vec![1, 2, 3])
        );
        assert_eq!(Args::decode(&[t, 1, 2]), None);
        // Hostile: endless pairs stay bounded.
        for i in 0..1000 {
            p.feed(&ev(KIND_ARGS, 9, (i % 200 + 1) as u8, 0, 0));
        }
        assert!(p.take_args(9).len() <= MAX_WORDS + 2);
    }
}
