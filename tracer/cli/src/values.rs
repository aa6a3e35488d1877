//! Argument and return values (issue 14): what `--args`/`--retval` ask the
//! runtime to capture, how the captured words are named and shown, and
//! `--where` conditions on them.
//!
//! **Names and types** of a compiler-padded function come from its object's
//! DWARF (`gimli`, through `addr2line`'s re-export), read lazily, only for
//! the functions whose values are shown: the subprogram whose `low_pc` is
//! the function's `object_offset`, its `formal_parameter`s and return type,
//! resolved through typedefs and qualifiers to base types, enums (by
//! enumerator name), pointers, and aggregates (shown by type name only).
//! The parameters are placed in registers and stack words as the object's
//! calling convention ([`Conv`], from its ELF header) does for those kinds:
//! x86-64 System V (integers and pointers in `rdi rsi rdx rcx r8 r9`,
//! floating point in `xmm0`–`xmm7`) or AAPCS64 (integers and pointers in
//! `x0`–`x7`, floating point in `d0`–`d7`, counted independently; larger
//! aggregates by reference). Aggregates passed by value are placed by their
//! members ([`Shape`]: x86-64 classifies each 8-byte word, AAPCS64 knows
//! homogeneous floating-point aggregates). The return
//! value is in `rax`/`x0`, or `xmm0`/`d0` for floating point. Without debug
//! information the integer argument registers are
//! shown as `arg1=0x…` (uftrace's `-A`), and the return value in hex unless
//! it looks like a negative errno (the kernel's `funcgraph-retval` rule).
//!
//! **Shown** the way ftrace's `funcgraph-args`/`funcgraph-retval` show
//! them: `parse(len=1024, flags=2) {` … `} /* parse = -22 */`, a leaf
//! `crc32(buf=0x7f2a…, n=64); /* = 3055 */`.

use addr2line::gimli;
use gimli::AttributeValue;
use std::collections::HashMap;
use tracer_core::capture::{
    Args, Capture, Pending, RetKind, TraceableSig, ValueKind, MAX_FLOATS, MAX_STACK,
};
use tracer_core::event::{Event, KIND_ENTRY, KIND_EXIT};

/// `--args[=N]` and `--retval`, on `enable` and `run`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CaptureFlags {
    /// Capture arguments: named and typed from debug information when the
    /// object has it; `--args=N`: the first N integer-register arguments.
    #[arg(long = "args", value_name = "N", num_args = 0..=1, default_missing_value = "auto")]
    pub args: Option<String>,
    /// Capture return values.
    #[arg(long)]
    pub retval: bool,
}

impl CaptureFlags {
    /// Whether anything is asked for.
    pub fn any(&self) -> bool {
        self.args.is_some() || self.retval
    }

    /// `--args=N`'s N (`None`: `--args` alone, or not given).
    pub fn count(&self) -> Result<Option<u8>, String> {
        match self.args.as_deref() {
            None | Some("auto") => Ok(None),
            Some(n) => match n.parse::<u8>() {
                Ok(n) if (1..=Conv::NATIVE.int_regs()).contains(&n) => Ok(Some(n)),
                _ => Err(format!(
                    "--args={n}: give a number of integer-register arguments from 1 to {}, or \
                     --args alone for every argument (named from debug information)",
                    Conv::NATIVE.int_regs()
                )),
            },
        }
    }

    /// The capture without knowing the functions (`run`, or no debug
    /// information): every argument register, or `--args=N`'s.
    pub fn blind(&self) -> Result<Capture, String> {
        let mut c = match (self.args.is_some(), self.count()?) {
            (false, _) => Capture::NONE,
            (true, Some(n)) => Capture {
                ints: n,
                ..Capture::NONE
            },
            (true, None) => Capture::all_registers(false),
        };
        c.retval = self.retval;
        Ok(c)
    }
}

/// A parameter's or return value's type, as far as values are shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ty {
    /// An integer of `size` bytes.
    Int {
        /// Signed.
        signed: bool,
        /// Bytes.
        size: u8,
    },
    /// A floating-point number of `size` bytes.
    Float {
        /// Bytes.
        size: u8,
    },
    /// `bool`, `_Bool`.
    Bool,
    /// `char` and its kin.
    Char,
    /// A pointer or a reference (shown in hex).
    Ptr,
    /// An enum: shown by enumerator name.
    Enum {
        /// The type's name.
        name: String,
        /// Bytes.
        size: u8,
        /// Enumerators.
        values: Vec<(i64, String)>,
    },
    /// A struct, union or class passed by value: shown by name only.
    Aggregate {
        /// The type's name (`struct point`, a typedef's name).
        name: String,
        /// Bytes.
        size: u64,
        /// Where its floating-point members are, for placing it.
        shape: Shape,
    },
    /// Anything else (arrays, unknown kinds): shown by name only.
    Other(String),
    /// A Rust `char` (a Unicode scalar value; `#[traceable]`).
    Unicode,
    /// `&str`, a slice, `String`, `Vec`: captured as its length
    /// (`#[traceable]`), shown `name.len=5`.
    Len(String),
    /// `Result` / `Option` (`#[traceable]` return values): the variant's
    /// name, and its payload where it is of a kind shown.
    Variant {
        /// The type as written.
        name: String,
        /// The names of the variants (`Ok`, `Err` / `Some`, `None`).
        names: [&'static str; 2],
        /// Their payloads (`None`: no payload; `Other`: shown by name).
        payloads: [Option<Box<Ty>>; 2],
    },
}

impl Ty {
    fn name(&self) -> String {
        match self {
            Ty::Int { signed, size } => {
                format!("{}int{}", if *signed { "" } else { "u" }, size * 8)
            }
            Ty::Float { size } => format!("float{}", size * 8),
            Ty::Bool => "bool".into(),
            Ty::Char => "char".into(),
            Ty::Ptr => "pointer".into(),
            Ty::Enum { name, .. }
            | Ty::Aggregate { name, .. }
            | Ty::Other(name)
            | Ty::Len(name)
            | Ty::Variant { name, .. } => name.clone(),
            Ty::Unicode => "char".into(),
        }
    }

    fn comparable(&self) -> bool {
        !matches!(self, Ty::Aggregate { .. } | Ty::Other(_))
    }

    /// The type of a `#[traceable]` value of kind `k` (written `written`).
    fn of_kind(k: ValueKind, written: &str) -> Ty {
        match k {
            ValueKind::Int(n) => Ty::Int {
                signed: true,
                size: n,
            },
            ValueKind::Uint(n) => Ty::Int {
                signed: false,
                size: n,
            },
            ValueKind::Float(n) => Ty::Float { size: n },
            ValueKind::Bool => Ty::Bool,
            ValueKind::Char => Ty::Unicode,
            ValueKind::Ptr => Ty::Ptr,
            ValueKind::Len => Ty::Len(written.to_string()),
            ValueKind::Opaque => Ty::Other(written.to_string()),
        }
    }
}

/// How an aggregate passed by value splits between integer and
/// floating-point registers (all zero: integer registers only, also when
/// its members are not known).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Bit k: its 8-byte word k holds floating-point members only (x86-64
    /// passes such a word of an aggregate of up to 16 bytes in a vector
    /// register, the others in integer registers).
    pub fp_words: u8,
    /// Its members are 1 to 4 floating-point numbers of one type: an
    /// AAPCS64 homogeneous floating-point aggregate, passed in as many
    /// vector registers (0: it is not one).
    pub hfa: u8,
}

impl Shape {
    /// The shape of an aggregate of `size` bytes whose scalar members are
    /// `leaves` (offset, size, floating point).
    fn of(size: u64, leaves: &[(u64, u64, bool)]) -> Shape {
        let mut fp_words = 0u8;
        for k in 0..size.div_ceil(8).min(8) {
            let (lo, hi) = (8 * k, 8 * k + 8);
            let mut inside = leaves.iter().filter(|l| l.0 < hi && l.0 + l.1.max(1) > lo);
            let mut any = false;
            if inside.all(|l| {
                any = true;
                l.2
            }) && any
            {
                fp_words |= 1 << k;
            }
        }
        let first = leaves.first().map_or(0, |l| l.1);
        let hfa = (1..=4).contains(&leaves.len())
            && leaves.iter().all(|l| l.2 && l.1 == first)
            && size == first * leaves.len() as u64;
        Shape {
            fp_words,
            hfa: if hfa { leaves.len() as u8 } else { 0 },
        }
    }
}

/// A parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// Its name (`argN` when the debug information has none).
    pub name: String,
    /// Its type.
    pub ty: Ty,
}

/// A calling convention: where a function's arguments are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conv {
    /// x86-64 System V: integers and pointers in `rdi rsi rdx rcx r8 r9`,
    /// floating point in `xmm0`–`xmm7`, the rest in stack words above the
    /// return address.
    SysV64,
    /// AAPCS64 (AArch64 Linux): integers and pointers in `x0`–`x7`,
    /// floating point in `d0`–`d7` (each counted on its own), the rest in
    /// 8-byte stack slots from the entry stack pointer; aggregates larger
    /// than 16 bytes are passed by reference (a pointer in an integer
    /// register).
    Aapcs64,
}

impl Conv {
    /// The convention of the processes this program traces (its own).
    pub const NATIVE: Conv = if cfg!(target_arch = "aarch64") {
        Conv::Aapcs64
    } else {
        Conv::SysV64
    };

    /// The convention of an object of architecture `arch` (`None`: one
    /// whose values are not placed, whose debug information is then not
    /// used).
    pub fn of(arch: object::Architecture) -> Option<Conv> {
        match arch {
            object::Architecture::X86_64 => Some(Conv::SysV64),
            object::Architecture::Aarch64 => Some(Conv::Aapcs64),
            _ => None,
        }
    }

    /// Integer argument registers.
    pub const fn int_regs(self) -> u8 {
        match self {
            Conv::SysV64 => 6,
            Conv::Aapcs64 => 8,
        }
    }
}

impl Default for Conv {
    fn default() -> Conv {
        Conv::NATIVE
    }
}

/// A function's parameters and return type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signature {
    /// The parameters, in order.
    pub params: Vec<Param>,
    /// The return type; `None`: `void`.
    pub ret: Option<Ty>,
    /// Where the parameters are passed (the object's architecture).
    pub conv: Conv,
    /// From a `#[traceable]` macro: the captured parameters are one word
    /// each, in order (not in calling-convention registers).
    pub traceable: bool,
}

impl Signature {
    /// From a `#[traceable]` function's signature text
    /// (`tracer_core::capture::TraceableSig`); a return value the macro
    /// does not capture is shown as if `void`.
    pub fn from_traceable(text: &str) -> Signature {
        let t = TraceableSig::parse(text);
        Signature {
            params: t
                .params
                .iter()
                .map(|(n, k, ty)| Param {
                    name: n.clone(),
                    ty: Ty::of_kind(*k, ty),
                })
                .collect(),
            ret: t.ret.map(|(k, ty)| match k {
                RetKind::Value(v) => Ty::of_kind(v, &ty),
                RetKind::Result(a, b) => Ty::Variant {
                    name: ty.clone(),
                    names: ["Ok", "Err"],
                    payloads: [
                        Some(Box::new(Ty::of_kind(a, "_"))),
                        Some(Box::new(Ty::of_kind(b, "_"))),
                    ],
                },
                RetKind::Option(a) => Ty::Variant {
                    name: ty.clone(),
                    names: ["Some", "None"],
                    payloads: [Some(Box::new(Ty::of_kind(a, "_"))), None],
                },
            }),
            traceable: true,
            conv: Conv::SysV64,
        }
    }
}

/// Where a parameter's value is among the captured words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    /// An integer register (index in calling-convention order).
    Int(usize),
    /// A floating-point register.
    Float(usize),
    /// A stack word (0: just above the return address).
    Stack(usize),
    /// Not captured as one word (an aggregate, a `long double`).
    None,
}

impl Signature {
    /// Each parameter's place under the function's calling convention.
    pub fn layout(&self) -> Vec<Loc> {
        if self.traceable {
            let mut j = 0;
            return self
                .params
                .iter()
                .map(|p| match p.ty {
                    Ty::Other(_) => Loc::None,
                    _ => {
                        j += 1;
                        Loc::Int(j - 1)
                    }
                })
                .collect();
        }
        match self.conv {
            Conv::SysV64 => self.layout_sysv64(),
            Conv::Aapcs64 => self.layout_aapcs64(),
        }
    }

    /// x86-64 System V.
    fn layout_sysv64(&self) -> Vec<Loc> {
        let (mut i, mut f, mut s) = (0usize, 0usize, 0usize);
        let stack = |n: usize, s: &mut usize| {
            let at = *s;
            *s += n;
            at
        };
        self.params
            .iter()
            .map(|p| match &p.ty {
                Ty::Float { size } if *size <= 8 => {
                    if f < 8 {
                        f += 1;
                        Loc::Float(f - 1)
                    } else {
                        Loc::Stack(stack(1, &mut s))
                    }
                }
                Ty::Float { .. } => {
                    stack(2, &mut s);
                    Loc::None
                }
                Ty::Int { size, .. } if *size > 8 => {
                    if i + 2 <= 6 {
                        i += 2;
                    } else {
                        stack(2, &mut s);
                    }
                    Loc::None
                }
                // Up to 16 bytes: each 8-byte word in an integer or (only
                // floating-point members) a vector register, if all fit;
                // else, and when larger, on the stack.
                Ty::Aggregate { size, shape, .. } => {
                    let words = size.div_ceil(8) as usize;
                    let wf = (0..words.min(8))
                        .filter(|k| shape.fp_words >> k & 1 != 0)
                        .count();
                    let wi = words - wf;
                    if *size <= 16 && i + wi <= 6 && f + wf <= 8 {
                        i += wi;
                        f += wf;
                    } else {
                        stack(words, &mut s);
                    }
                    Loc::None
                }
                Ty::Other(_) => Loc::None,
                _ => {
                    if i < 6 {
                        i += 1;
                        Loc::Int(i - 1)
                    } else {
                        Loc::Stack(stack(1, &mut s))
                    }
                }
            })
            .collect()
    }

    /// AAPCS64 (procedure call standard for the Arm 64-bit architecture,
    /// "Parameter passing rules"; Linux's stack slots of 8 bytes each):
    /// NGRN and NSRN count the integer and the SIMD/floating-point
    /// registers used, NSAA the stack words. Once one kind of register
    /// runs out, every later argument of that kind goes on the stack.
    fn layout_aapcs64(&self) -> Vec<Loc> {
        let (mut ngrn, mut nsrn, mut nsaa) = (0usize, 0usize, 0usize);
        // `n` stack words, 16-byte aligned when `align16`.
        let stack = |n: usize, align16: bool, nsaa: &mut usize| {
            if align16 {
                *nsaa = nsaa.next_multiple_of(2);
            }
            let at = *nsaa;
            *nsaa += n;
            at
        };
        self.params
            .iter()
            .map(|p| match &p.ty {
                // `float`, `double`: one SIMD/FP register, or a stack slot.
                Ty::Float { size } if *size <= 8 => {
                    if nsrn < 8 {
                        nsrn += 1;
                        Loc::Float(nsrn - 1)
                    } else {
                        Loc::Stack(stack(1, false, &mut nsaa))
                    }
                }
                // `long double` (binary128): a whole `q` register, or 16
                // aligned stack bytes; not one captured word.
                Ty::Float { .. } => {
                    if nsrn < 8 {
                        nsrn += 1;
                    } else {
                        nsrn = 8;
                        stack(2, true, &mut nsaa);
                    }
                    Loc::None
                }
                // `__int128`: an even-numbered register pair, or 16 aligned
                // stack bytes.
                Ty::Int { size, .. } if *size > 8 => {
                    let at = ngrn.next_multiple_of(2);
                    if at + 2 <= 8 {
                        ngrn = at + 2;
                    } else {
                        ngrn = 8;
                        stack(2, true, &mut nsaa);
                    }
                    Loc::None
                }
                // A homogeneous floating-point aggregate: one vector
                // register a member, if all fit, else on the stack (and no
                // vector register after it).
                Ty::Aggregate { size, shape, .. } if shape.hfa > 0 => {
                    let n = usize::from(shape.hfa);
                    if nsrn + n <= 8 {
                        nsrn += n;
                    } else {
                        nsrn = 8;
                        stack(size.div_ceil(8) as usize, false, &mut nsaa);
                    }
                    Loc::None
                }
                // Larger than 16 bytes: copied by the caller, passed as a
                // pointer (an integer argument). Up to 16 bytes: in one or
                // two integer registers if both fit, else on the stack.
                Ty::Aggregate { size, .. } => {
                    let words = if *size > 16 {
                        1
                    } else {
                        size.div_ceil(8).max(1) as usize
                    };
                    if ngrn + words <= 8 {
                        ngrn += words;
                    } else {
                        ngrn = 8;
                        stack(words, false, &mut nsaa);
                    }
                    Loc::None
                }
                Ty::Other(_) => Loc::None,
                // Integers, enums, bools, chars, pointers.
                _ => {
                    if ngrn < 8 {
                        ngrn += 1;
                        Loc::Int(ngrn - 1)
                    } else {
                        Loc::Stack(stack(1, false, &mut nsaa))
                    }
                }
            })
            .collect()
    }

    /// The capture these parameters need.
    pub fn capture(&self) -> Capture {
        let mut c = Capture::NONE;
        for l in self.layout() {
            match l {
                Loc::Int(i) => c.ints = c.ints.max(i as u8 + 1),
                Loc::Float(f) => c.floats = c.floats.max(f as u8 + 1),
                Loc::Stack(s) => c.stack = c.stack.max((s as u8 + 1).min(MAX_STACK)),
                Loc::None => {}
            }
        }
        c.floats = c.floats.min(MAX_FLOATS);
        c
    }
}

/// One value as ftrace would print it.
fn show(ty: &Ty, v: u64) -> String {
    match ty {
        Ty::Int { signed, size } => {
            let bits = u32::from(*size).min(8) * 8;
            let v = if bits < 64 {
                v & ((1u64 << bits) - 1)
            } else {
                v
            };
            if *signed && bits > 0 {
                let sh = 64 - bits;
                (((v << sh) as i64) >> sh).to_string()
            } else {
                v.to_string()
            }
        }
        Ty::Float { size: 4 } => format!("{}", f32::from_bits(v as u32)),
        Ty::Float { .. } => format!("{}", f64::from_bits(v)),
        Ty::Bool => (v & 0xff != 0).to_string(),
        Ty::Char => {
            let c = v as u8;
            if c.is_ascii_graphic() || c == b' ' {
                format!("'{}'", c as char)
            } else {
                (c as i8).to_string()
            }
        }
        Ty::Ptr => format!("{v:#x}"),
        Ty::Enum { size, values, .. } => {
            let bits = u32::from(*size).clamp(1, 8) * 8;
            let sh = 64 - bits;
            let n = ((v << sh) as i64) >> sh;
            let u = if bits < 64 {
                v & ((1u64 << bits) - 1)
            } else {
                v
            };
            values
                .iter()
                .find(|(k, _)| *k == n || *k as u64 == u)
                .map_or_else(|| n.to_string(), |(_, name)| name.clone())
        }
        Ty::Aggregate { name, .. } | Ty::Other(name) => name.clone(),
        Ty::Unicode => match char::from_u32(v as u32) {
            Some(c) if !c.is_control() => format!("{c:?}"),
            _ => format!("{:#x}", v as u32),
        },
        Ty::Len(_) => v.to_string(),
        Ty::Variant { .. } => String::new(),
    }
}

/// Linux's errno names, `ERRNO[n - 1]` for n in 1..=133 (the generic
/// numbering x86-64 and ARM share; "" for the unused 41 and 58).
const ERRNO: [&str; 133] = [
    "EPERM",
    "ENOENT",
    "ESRCH",
    "EINTR",
    "EIO",
    "ENXIO",
    "E2BIG",
    "ENOEXEC",
    "EBADF",
    "ECHILD",
    "EAGAIN",
    "ENOMEM",
    "EACCES",
    "EFAULT",
    "ENOTBLK",
    "EBUSY",
    "EEXIST",
    "EXDEV",
    "ENODEV",
    "ENOTDIR",
    "EISDIR",
    "EINVAL",
    "ENFILE",
    "EMFILE",
    "ENOTTY",
    "ETXTBSY",
    "EFBIG",
    "ENOSPC",
    "ESPIPE",
    "EROFS",
    "EMLINK",
    "EPIPE",
    "EDOM",
    "ERANGE",
    "EDEADLK",
    "ENAMETOOLONG",
    "ENOLCK",
    "ENOSYS",
    "ENOTEMPTY",
    "ELOOP",
    "",
    "ENOMSG",
    "EIDRM",
    "ECHRNG",
    "EL2NSYNC",
    "EL3HLT",
    "EL3RST",
    "ELNRNG",
    "EUNATCH",
    "ENOCSI",
    "EL2HLT",
    "EBADE",
    "EBADR",
    "EXFULL",
    "ENOANO",
    "EBADRQC",
    "EBADSLT",
    "",
    "EBFONT",
    "ENOSTR",
    "ENODATA",
    "ETIME",
    "ENOSR",
    "ENONET",
    "ENOPKG",
    "EREMOTE",
    "ENOLINK",
    "EADV",
    "ESRMNT",
    "ECOMM",
    "EPROTO",
    "EMULTIHOP",
    "EDOTDOT",
    "EBADMSG",
    "EOVERFLOW",
    "ENOTUNIQ",
    "EBADFD",
    "EREMCHG",
    "ELIBACC",
    "ELIBBAD",
    "ELIBSCN",
    "ELIBMAX",
    "ELIBEXEC",
    "EILSEQ",
    "ERESTART",
    "ESTRPIPE",
    "EUSERS",
    "ENOTSOCK",
    "EDESTADDRREQ",
    "EMSGSIZE",
    "EPROTOTYPE",
    "ENOPROTOOPT",
    "EPROTONOSUPPORT",
    "ESOCKTNOSUPPORT",
    "EOPNOTSUPP",
    "EPFNOSUPPORT",
    "EAFNOSUPPORT",
    "EADDRINUSE",
    "EADDRNOTAVAIL",
    "ENETDOWN",
    "ENETUNREACH",
    "ENETRESET",
    "ECONNABORTED",
    "ECONNRESET",
    "ENOBUFS",
    "EISCONN",
    "ENOTCONN",
    "ESHUTDOWN",
    "ETOOMANYREFS",
    "ETIMEDOUT",
    "ECONNREFUSED",
    "EHOSTDOWN",
    "EHOSTUNREACH",
    "EALREADY",
    "EINPROGRESS",
    "ESTALE",
    "EUCLEAN",
    "ENOTNAM",
    "ENAVAIL",
    "EISNAM",
    "EREMOTEIO",
    "EDQUOT",
    "ENOMEDIUM",
    "EMEDIUMTYPE",
    "ECANCELED",
    "ENOKEY",
    "EKEYEXPIRED",
    "EKEYREVOKED",
    "EKEYREJECTED",
    "EOWNERDEAD",
    "ENOTRECOVERABLE",
    "ERFKILL",
    "EHWPOISON",
];

/// `-22` → `-22 (EINVAL)`: a negative integer return value that looks like
/// an errno value (-2 to -133; -1 is too often just "failed" to name it).
fn with_errno(ty: &Ty, v: u64, text: String) -> String {
    let Ty::Int { signed: true, size } = ty else {
        return text;
    };
    let sh = 64 - u32::from(*size).clamp(1, 8) * 8;
    let n = ((v << sh) as i64) >> sh;
    match ERRNO.get((n.unsigned_abs() as usize).wrapping_sub(1)) {
        Some(name) if (-133..=-2).contains(&n) && !name.is_empty() => format!("{text} ({name})"),
        _ => text,
    }
}

/// A `Result`/`Option` value: its variant (`variant`: 0 the first) and
/// payload word.
fn show_variant(
    names: &[&str; 2],
    payloads: &[Option<Box<Ty>>; 2],
    v: u64,
    variant: u64,
) -> String {
    let i = usize::from(variant != 0);
    match &payloads[i] {
        None => names[i].to_string(),
        Some(t) if matches!(**t, Ty::Other(_)) => format!("{}(..)", names[i]),
        Some(t) if matches!(**t, Ty::Len(_)) => format!("{}(len={v})", names[i]),
        Some(t) => format!("{}({})", names[i], with_errno(t, v, show(t, v))),
    }
}

/// A numeric view of a value, for `--where`.
fn number(ty: &Ty, v: u64) -> Option<f64> {
    Some(match ty {
        Ty::Int { signed, size } if *size <= 8 => ext(v, *size, *signed),
        Ty::Enum { size, .. } => ext(v, *size, true),
        Ty::Float { size: 4 } => f64::from(f32::from_bits(v as u32)),
        Ty::Float { size: 8 } => f64::from_bits(v),
        Ty::Bool => f64::from(u8::from(v & 0xff != 0)),
        Ty::Char => f64::from(v as u8 as i8),
        Ty::Ptr | Ty::Len(_) => v as f64,
        Ty::Unicode => (v as u32) as f64,
        _ => return None,
    })
}

/// `v`'s low `size` bytes as a number, sign-extended if `signed`.
fn ext(v: u64, size: u8, signed: bool) -> f64 {
    let sh = 64 - u32::from(size).clamp(1, 8) * 8;
    if signed {
        (((v << sh) as i64) >> sh) as f64
    } else {
        ((v << sh) >> sh) as f64
    }
}

/// A return value without a type: decimal if it looks like a negative
/// errno (as the kernel's `funcgraph-retval`), else hex.
fn show_untyped_ret(rax: u64) -> String {
    let wide = rax as i64;
    let narrow = rax as u32 as i32;
    if (-4095..0).contains(&wide) {
        wide.to_string()
    } else if rax >> 32 == 0 && (-4095..0).contains(&narrow) {
        narrow.to_string()
    } else {
        format!("{rax:#x}")
    }
}

/// A parameter's value among the decoded words.
fn word(a: &Args, l: Loc) -> Option<u64> {
    match l {
        Loc::Int(i) => a.ints.get(i).copied(),
        Loc::Float(i) => a.floats.get(i).copied(),
        Loc::Stack(i) => a.stack.get(i).copied(),
        Loc::None => None,
    }
}

/// The text between the parentheses: `len=1024, flags=2`.
pub fn args_text(sig: Option<&Signature>, words: &[u64]) -> String {
    let Some(a) = Args::decode(words) else {
        return String::new();
    };
    let Some(sig) = sig else {
        return a
            .ints
            .iter()
            .enumerate()
            .map(|(i, v)| format!("arg{}={v:#x}", i + 1))
            .collect::<Vec<_>>()
            .join(", ");
    };
    sig.params
        .iter()
        .zip(sig.layout())
        .map(|(p, l)| match (word(&a, l), p.ty.comparable()) {
            (Some(v), true) if matches!(p.ty, Ty::Len(_)) => format!("{}.len={v}", p.name),
            (Some(v), true) => format!("{}={}", p.name, show(&p.ty, v)),
            (_, false) => format!("{}: {}", p.name, p.ty.name()),
            (None, true) => format!("{}=?", p.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The return value as shown after `=`; `None` for a `void` function.
pub fn ret_text(sig: Option<&Signature>, (rax, xmm0): (u64, u64)) -> Option<String> {
    match sig {
        None => Some(show_untyped_ret(rax)),
        Some(Signature { ret: None, .. }) => None,
        Some(Signature { ret: Some(t), .. }) => Some(match t {
            Ty::Variant {
                names, payloads, ..
            } => show_variant(names, payloads, rax, xmm0),
            Ty::Len(_) => format!("len={rax}"),
            Ty::Float { .. } => show(t, xmm0),
            _ => with_errno(t, rax, show(t, rax)),
        }),
    }
}

/// Debug sections are leaked (`'static`): each object is loaded once per
/// run of the program, and only those of functions whose values are shown.
type R = gimli::EndianSlice<'static, gimli::RunTimeEndian>;

/// One object's debug information: its units and an index of its
/// subprograms by address.
struct Object {
    /// Where its functions' arguments are.
    conv: Conv,
    dwarf: gimli::Dwarf<R>,
    units: Vec<gimli::Unit<R>>,
    by_addr: HashMap<u64, (usize, gimli::UnitOffset)>,
}

impl Object {
    fn load(path: &str) -> Option<Object> {
        use object::{Object as _, ObjectSection as _};
        let md = std::fs::metadata(path).ok()?;
        if !md.is_file() {
            return None;
        }
        let data = std::fs::read(path).ok()?;
        let obj = object::File::parse(&*data).ok()?;
        let conv = Conv::of(obj.architecture())?;
        let endian = if obj.is_little_endian() {
            gimli::RunTimeEndian::Little
        } else {
            gimli::RunTimeEndian::Big
        };
        let dwarf = gimli::Dwarf::load(|id| -> Result<R, gimli::Error> {
            let bytes: &'static [u8] = match obj
                .section_by_name(id.name())
                .and_then(|s| s.uncompressed_data().ok())
            {
                Some(d) => Box::leak(d.into_owned().into_boxed_slice()),
                None => &[],
            };
            Ok(gimli::EndianSlice::new(bytes, endian))
        })
        .ok()?;
        let mut units = Vec::new();
        let mut by_addr = HashMap::new();
        let mut headers = dwarf.units();
        while let Ok(Some(h)) = headers.next() {
            let Ok(unit) = dwarf.unit(h) else { continue };
            let mut entries = unit.entries();
            while let Ok(Some((_, e))) = entries.next_dfs() {
                if e.tag() != gimli::DW_TAG_subprogram {
                    continue;
                }
                let low = match e.attr_value(gimli::DW_AT_low_pc) {
                    Ok(Some(AttributeValue::Addr(a))) => a,
                    Ok(Some(AttributeValue::DebugAddrIndex(i))) => match dwarf.address(&unit, i) {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                    _ => continue,
                };
                by_addr.entry(low).or_insert((units.len(), e.offset()));
            }
            units.push(unit);
        }
        if by_addr.is_empty() {
            return None;
        }
        Some(Object {
            conv,
            dwarf,
            units,
            by_addr,
        })
    }

    fn signature(&self, addr: u64) -> Option<Signature> {
        let &(ui, off) = self.by_addr.get(&addr)?;
        let unit = &self.units[ui];
        let e = unit.entry(off).ok()?;
        let ret = self.type_attr(unit, &e, 0).map(|o| self.ty(unit, o, 0));
        let origin = self.origin(unit, &e);
        let mut params = self.params(unit, off);
        if params.is_empty() {
            if let Some(o) = origin {
                params = self.params(unit, o);
            }
        }
        // `void` (no type) but a declaration elsewhere may have it.
        let ret = ret.or_else(|| {
            let o = origin?;
            let oe = unit.entry(o).ok()?;
            self.type_attr(unit, &oe, 0).map(|t| self.ty(unit, t, 0))
        });
        Some(Signature {
            params,
            ret,
            conv: self.conv,
            traceable: false,
        })
    }

    fn origin(
        &self,
        _unit: &gimli::Unit<R>,
        e: &gimli::DebuggingInformationEntry<R>,
    ) -> Option<gimli::UnitOffset> {
        for at in [gimli::DW_AT_abstract_origin, gimli::DW_AT_specification] {
            if let Ok(Some(AttributeValue::UnitRef(o))) = e.attr_value(at) {
                return Some(o);
            }
        }
        None
    }

    fn type_attr(
        &self,
        unit: &gimli::Unit<R>,
        e: &gimli::DebuggingInformationEntry<R>,
        depth: u32,
    ) -> Option<gimli::UnitOffset> {
        if let Ok(Some(AttributeValue::UnitRef(o))) = e.attr_value(gimli::DW_AT_type) {
            return Some(o);
        }
        if depth > 4 {
            return None;
        }
        let o = self.origin(unit, e)?;
        let oe = unit.entry(o).ok()?;
        self.type_attr(unit, &oe, depth + 1)
    }

    fn name_of(
        &self,
        unit: &gimli::Unit<R>,
        e: &gimli::DebuggingInformationEntry<R>,
        depth: u32,
    ) -> Option<String> {
        if let Ok(Some(v)) = e.attr_value(gimli::DW_AT_name) {
            let s = self.dwarf.attr_string(unit, v).ok()?;
            return Some(s.to_string_lossy().into_owned());
        }
        if depth > 4 {
            return None;
        }
        let o = self.origin(unit, e)?;
        let oe = unit.entry(o).ok()?;
        self.name_of(unit, &oe, depth + 1)
    }

    fn params(&self, unit: &gimli::Unit<R>, off: gimli::UnitOffset) -> Vec<Param> {
        let mut out = Vec::new();
        let Ok(mut tree) = unit.entries_tree(Some(off)) else {
            return out;
        };
        let Ok(root) = tree.root() else { return out };
        let mut children = root.children();
        while let Ok(Some(child)) = children.next() {
            let e = child.entry();
            if e.tag() != gimli::DW_TAG_formal_parameter {
                continue;
            }
            let name = self
                .name_of(unit, e, 0)
                .unwrap_or_else(|| format!("arg{}", out.len() + 1));
            let ty = match self.type_attr(unit, e, 0) {
                Some(t) => self.ty(unit, t, 0),
                None => Ty::Other("?".into()),
            };
            out.push(Param { name, ty });
        }
        out
    }

    fn ty(&self, unit: &gimli::Unit<R>, off: gimli::UnitOffset, depth: u32) -> Ty {
        let Ok(e) = unit.entry(off) else {
            return Ty::Other("?".into());
        };
        let name = self.name_of(unit, &e, 0);
        let size = match e.attr_value(gimli::DW_AT_byte_size) {
            Ok(Some(v)) => v.udata_value().unwrap_or(0),
            _ => 0,
        };
        match e.tag() {
            gimli::DW_TAG_base_type => {
                let enc = match e.attr_value(gimli::DW_AT_encoding) {
                    Ok(Some(AttributeValue::Encoding(x))) => x,
                    _ => gimli::DW_ATE_signed,
                };
                let size = size.min(255) as u8;
                match enc {
                    gimli::DW_ATE_float => Ty::Float { size },
                    gimli::DW_ATE_boolean => Ty::Bool,
                    gimli::DW_ATE_signed_char | gimli::DW_ATE_unsigned_char if size == 1 => {
                        Ty::Char
                    }
                    gimli::DW_ATE_unsigned | gimli::DW_ATE_unsigned_char | gimli::DW_ATE_UTF => {
                        Ty::Int {
                            signed: false,
                            size,
                        }
                    }
                    _ => Ty::Int { signed: true, size },
                }
            }
            gimli::DW_TAG_pointer_type
            | gimli::DW_TAG_reference_type
            | gimli::DW_TAG_rvalue_reference_type
            | gimli::DW_TAG_ptr_to_member_type => Ty::Ptr,
            gimli::DW_TAG_typedef
            | gimli::DW_TAG_const_type
            | gimli::DW_TAG_volatile_type
            | gimli::DW_TAG_restrict_type
            | gimli::DW_TAG_atomic_type
                if depth < 16 =>
            {
                let Some(t) = self.type_attr(unit, &e, 0) else {
                    return Ty::Other("void".into());
                };
                let inner = self.ty(unit, t, depth + 1);
                // A typedef names an anonymous struct or enum.
                match (inner, e.tag() == gimli::DW_TAG_typedef, name) {
                    (Ty::Aggregate { size, shape, .. }, true, Some(n)) => Ty::Aggregate {
                        name: n,
                        size,
                        shape,
                    },
                    (Ty::Enum { size, values, .. }, true, Some(n)) => Ty::Enum {
                        name: n,
                        size,
                        values,
                    },
                    (t, _, _) => t,
                }
            }
            gimli::DW_TAG_enumeration_type => {
                let mut values = Vec::new();
                if let Ok(mut tree) = unit.entries_tree(Some(off)) {
                    if let Ok(root) = tree.root() {
                        let mut ch = root.children();
                        while let Ok(Some(c)) = ch.next() {
                            let ce = c.entry();
                            if ce.tag() != gimli::DW_TAG_enumerator || values.len() >= 4096 {
                                continue;
                            }
                            let v = match ce.attr_value(gimli::DW_AT_const_value) {
                                Ok(Some(AttributeValue::Sdata(v))) => v,
                                Ok(Some(AttributeValue::Udata(v))) => v as i64,
                                Ok(Some(v)) => v.sdata_value().unwrap_or(0),
                                _ => continue,
                            };
                            if let Some(n) = self.name_of(unit, ce, 0) {
                                values.push((v, n));
                            }
                        }
                    }
                }
                Ty::Enum {
                    name: format!("enum {}", name.unwrap_or_default()),
                    size: (size as u8).max(1),
                    values,
                }
            }
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type | gimli::DW_TAG_class_type => {
                let kw = match e.tag() {
                    gimli::DW_TAG_union_type => "union",
                    gimli::DW_TAG_class_type => "class",
                    _ => "struct",
                };
                let mut leaves = Vec::new();
                let shape = if self.leaves(unit, off, 0, 0, &mut leaves) {
                    Shape::of(size, &leaves)
                } else {
                    Shape::default()
                };
                Ty::Aggregate {
                    name: match name {
                        Some(n) => format!("{kw} {n}"),
                        None => format!("{kw} (anonymous)"),
                    },
                    size,
                    shape,
                }
            }
            _ => Ty::Other(name.unwrap_or_else(|| "?".into())),
        }
    }

    /// `DW_AT_byte_size` of the type at `off`, through typedefs and
    /// qualifiers (arrays: element size times count).
    fn size_of(&self, unit: &gimli::Unit<R>, off: gimli::UnitOffset, depth: u32) -> Option<u64> {
        let e = unit.entry(off).ok()?;
        if let Ok(Some(v)) = e.attr_value(gimli::DW_AT_byte_size) {
            return v.udata_value();
        }
        if depth > 16 {
            return None;
        }
        let t = self.type_attr(unit, &e, 0)?;
        let elem = self.size_of(unit, t, depth + 1)?;
        if e.tag() == gimli::DW_TAG_array_type {
            elem.checked_mul(self.array_len(unit, off)?)
        } else {
            Some(elem)
        }
    }

    /// The number of elements of the array type at `off` (all its
    /// dimensions).
    fn array_len(&self, unit: &gimli::Unit<R>, off: gimli::UnitOffset) -> Option<u64> {
        let mut tree = unit.entries_tree(Some(off)).ok()?;
        let root = tree.root().ok()?;
        let mut ch = root.children();
        let mut n = 1u64;
        while let Ok(Some(c)) = ch.next() {
            let ce = c.entry();
            if ce.tag() != gimli::DW_TAG_subrange_type {
                continue;
            }
            let count = match ce.attr_value(gimli::DW_AT_count) {
                Ok(Some(v)) => v.udata_value()?,
                _ => match ce.attr_value(gimli::DW_AT_upper_bound) {
                    Ok(Some(v)) => v.udata_value()?.checked_add(1)?,
                    _ => return None,
                },
            };
            n = n.checked_mul(count)?;
        }
        Some(n)
    }

    /// The scalar members of the type at `off`, placed at `base`: (offset,
    /// size, floating point), at most 32. `false` when they cannot be told
    /// (too many, a member without a constant offset, an unknown kind).
    fn leaves(
        &self,
        unit: &gimli::Unit<R>,
        off: gimli::UnitOffset,
        base: u64,
        depth: u32,
        out: &mut Vec<(u64, u64, bool)>,
    ) -> bool {
        const MAX: usize = 32;
        let Ok(e) = unit.entry(off) else { return false };
        if depth > 16 || out.len() > MAX {
            return false;
        }
        let size = || match e.attr_value(gimli::DW_AT_byte_size) {
            Ok(Some(v)) => v.udata_value().unwrap_or(0),
            _ => 0,
        };
        match e.tag() {
            gimli::DW_TAG_base_type => {
                let enc = match e.attr_value(gimli::DW_AT_encoding) {
                    Ok(Some(AttributeValue::Encoding(x))) => x,
                    _ => gimli::DW_ATE_signed,
                };
                let n = size();
                if enc == gimli::DW_ATE_complex_float {
                    out.push((base, n / 2, true));
                    out.push((base + n / 2, n / 2, true));
                } else {
                    out.push((base, n, enc == gimli::DW_ATE_float));
                }
                true
            }
            gimli::DW_TAG_pointer_type
            | gimli::DW_TAG_reference_type
            | gimli::DW_TAG_rvalue_reference_type
            | gimli::DW_TAG_ptr_to_member_type
            | gimli::DW_TAG_enumeration_type => {
                out.push((base, size().max(1), false));
                true
            }
            gimli::DW_TAG_typedef
            | gimli::DW_TAG_const_type
            | gimli::DW_TAG_volatile_type
            | gimli::DW_TAG_restrict_type
            | gimli::DW_TAG_atomic_type => match self.type_attr(unit, &e, 0) {
                Some(t) => self.leaves(unit, t, base, depth + 1, out),
                None => false,
            },
            gimli::DW_TAG_array_type => {
                let (Some(t), Some(n)) = (self.type_attr(unit, &e, 0), self.array_len(unit, off))
                else {
                    return false;
                };
                let Some(stride) = self.size_of(unit, t, 0) else {
                    return false;
                };
                if n > MAX as u64 {
                    return false;
                }
                (0..n).all(|k| self.leaves(unit, t, base + k * stride, depth + 1, out))
            }
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type | gimli::DW_TAG_class_type => {
                let Ok(mut tree) = unit.entries_tree(Some(off)) else {
                    return false;
                };
                let Ok(root) = tree.root() else { return false };
                let mut ch = root.children();
                while let Ok(Some(c)) = ch.next() {
                    let ce = c.entry();
                    if ce.tag() != gimli::DW_TAG_member && ce.tag() != gimli::DW_TAG_inheritance {
                        continue;
                    }
                    // A static data member (C++) is not in the object.
                    if let Ok(Some(_)) = ce.attr_value(gimli::DW_AT_declaration) {
                        continue;
                    }
                    let at = match ce.attr_value(gimli::DW_AT_data_member_location) {
                        Ok(Some(v)) => match v.udata_value() {
                            Some(a) => a,
                            None => return false,
                        },
                        // DWARF 4 and 5 bit fields; union members.
                        _ => match ce.attr_value(gimli::DW_AT_data_bit_offset) {
                            Ok(Some(v)) => v.udata_value().unwrap_or(0) / 8,
                            _ => 0,
                        },
                    };
                    let Some(t) = self.type_attr(unit, ce, 0) else {
                        return false;
                    };
                    let ok = if let Ok(Some(_)) = ce.attr_value(gimli::DW_AT_bit_size) {
                        // A bit field: integer bits.
                        out.push((base + at, self.size_of(unit, t, 0).unwrap_or(1), false));
                        true
                    } else {
                        self.leaves(unit, t, base + at, depth + 1, out)
                    };
                    if !ok || out.len() > MAX {
                        return false;
                    }
                }
                true
            }
            _ => false,
        }
    }
}

/// Where a function's debug information is: its object and its address
/// there (the agent's `file` and `object_offset`).
#[derive(Clone, Debug)]
pub struct Origin {
    /// The function's name.
    pub name: String,
    /// The object's path.
    pub object: String,
    /// Its address in the object, as linked.
    pub offset: u64,
}

/// Functions' signatures, read from their objects' DWARF as needed.
#[derive(Default)]
pub struct Signatures {
    origins: HashMap<u32, Origin>,
    /// `#[traceable]` functions' names (their signatures are in `sigs`).
    names: HashMap<u32, String>,
    objects: HashMap<String, Option<Object>>,
    sigs: HashMap<u32, Option<Signature>>,
}

impl Signatures {
    /// From the agent's `list` reply (`functions`: `index`, `name`, `file`,
    /// `object_offset`).
    pub fn from_list(list: &serde_json::Value) -> Signatures {
        let mut s = Signatures::default();
        s.add_list(list);
        s
    }

    /// Take the functions of another `list` reply (a library was loaded).
    pub fn add_list(&mut self, list: &serde_json::Value) {
        for f in list["functions"].as_array().into_iter().flatten() {
            self.add_function(f);
        }
    }

    /// Take one function of a `list` reply (those without an object offset,
    /// `#[traceable]` ones, are skipped).
    pub fn add_function(&mut self, f: &serde_json::Value) {
        if let (Some(i), Some(sig)) = (f["index"].as_u64(), f["signature"].as_str()) {
            if !sig.is_empty() && f["object_offset"].is_null() {
                self.sigs
                    .insert(i as u32, Some(Signature::from_traceable(sig)));
                self.names
                    .insert(i as u32, f["name"].as_str().unwrap_or("?").to_string());
                return;
            }
        }
        let (Some(i), Some(file), Some(off)) = (
            f["index"].as_u64(),
            f["file"].as_str(),
            f["object_offset"].as_u64(),
        ) else {
            return;
        };
        self.origins.insert(
            i as u32,
            Origin {
                name: f["name"].as_str().unwrap_or("?").to_string(),
                object: file.to_string(),
                offset: off,
            },
        );
    }

    /// Take a recording's origins.
    pub fn from_recording(h: &crate::record::Header) -> Signatures {
        let mut s = Signatures::default();
        for o in &h.origins {
            s.origins.insert(
                o.index,
                Origin {
                    name: h
                        .functions
                        .get(o.index as usize)
                        .cloned()
                        .unwrap_or_default(),
                    object: o.object.clone(),
                    offset: o.offset,
                },
            );
        }
        for (i, sig) in &h.signatures {
            s.sigs.insert(*i, Some(Signature::from_traceable(sig)));
            s.names.insert(
                *i,
                h.functions.get(*i as usize).cloned().unwrap_or_default(),
            );
        }
        s
    }

    /// The name of function `i`, if its values can be named (debug
    /// information, or a `#[traceable]` signature).
    pub fn name_of(&self, i: u32) -> Option<String> {
        self.origins
            .get(&i)
            .map(|o| o.name.clone())
            .or_else(|| self.names.get(&i).cloned())
    }

    /// The functions known, by index.
    pub fn origins(&self) -> impl Iterator<Item = (u32, &Origin)> {
        self.origins.iter().map(|(i, o)| (*i, o))
    }

    /// Function `func`'s signature, if its object has debug information.
    pub fn get(&mut self, func: u32) -> Option<&Signature> {
        if !self.sigs.contains_key(&func) {
            let sig = self.origins.get(&func).and_then(|o| {
                let obj = self
                    .objects
                    .entry(o.object.clone())
                    .or_insert_with(|| Object::load(&o.object));
                obj.as_ref()?.signature(o.offset)
            });
            self.sigs.insert(func, sig);
        }
        self.sigs.get(&func).and_then(|s| s.as_ref())
    }

    /// Signature of the function at `offset` in `object` (tests, `enable`).
    pub fn of_object(&mut self, object: &str, offset: u64) -> Option<Signature> {
        let obj = self
            .objects
            .entry(object.to_string())
            .or_insert_with(|| Object::load(object));
        obj.as_ref()?.signature(offset)
    }

    /// The text of an entry's arguments.
    pub fn args(&mut self, func: u32, words: &[u64]) -> String {
        let sig = self.get(func).cloned();
        args_text(sig.as_ref(), words)
    }

    /// The text of a return value (`None`: `void`).
    pub fn ret(&mut self, func: u32, ret: (u64, u64)) -> Option<String> {
        let sig = self.get(func).cloned();
        ret_text(sig.as_ref(), ret)
    }
}

/// The capture `enable --args/--retval` asks for, for functions with these
/// signatures (`None`: no debug information): what the widest needs, or
/// every register when one has no debug information.
pub fn capture_for(flags: &CaptureFlags, sigs: &[Option<Signature>]) -> Result<Capture, String> {
    let blind = flags.blind()?;
    if flags.args.is_none() || flags.count()?.is_some() {
        return Ok(blind);
    }
    let mut c = Capture {
        retval: flags.retval,
        ..Capture::NONE
    };
    for s in sigs {
        let need = match s {
            Some(s) => s.capture(),
            None => Capture::all_registers(false),
        };
        c.ints = c.ints.max(need.ints);
        c.floats = c.floats.max(need.floats);
        c.stack = c.stack.max(need.stack);
    }
    Ok(c)
}

/// A comparison operator of `--where`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// What a `--where` condition looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// The return value (`ret`).
    Ret,
    /// An argument by position (`arg1` is the first).
    Pos(usize),
    /// An argument by name.
    Name(String),
    /// The variant of a `Result`/`Option` return value (`ret == Err`):
    /// its name.
    Variant(String),
}

/// `--where 'ret < 0'`, `--where 'len > 4096'`, `--where 'arg2 == 0x10'`.
#[derive(Clone, Debug, PartialEq)]
pub struct Cond {
    /// What is compared.
    pub subject: Subject,
    /// How.
    pub op: Op,
    /// With what.
    pub value: f64,
}

impl Cond {
    /// Parse `SUBJECT OP NUMBER`.
    pub fn parse(s: &str) -> Result<Cond, String> {
        let bad = || {
            format!(
                "--where '{s}': write NAME OP NUMBER, where NAME is ret, an argument's name or \
                 argN (N from 1), OP one of < <= > >= == !=, e.g. --where 'ret < 0'"
            )
        };
        let ops = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
            ("=", Op::Eq),
        ];
        let (at, len, op) = ops
            .iter()
            .filter_map(|(t, op)| s.find(t).map(|i| (i, t.len(), *op)))
            .min_by_key(|(i, l, _)| (*i, usize::MAX - l))
            .ok_or_else(bad)?;
        let name = s[..at].trim();
        let val = s[at + len..].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(bad());
        }
        if matches!(val, "Ok" | "Err" | "Some" | "None") {
            if !(name == "ret" || name == "retval") || !matches!(op, Op::Eq | Op::Ne) {
                return Err(format!(
                    "--where '{s}': a variant compares with the return value by == or != only \
                     (--where 'ret == Err')"
                ));
            }
            return Ok(Cond {
                subject: Subject::Variant(val.to_string()),
                op,
                value: 0.0,
            });
        }
        let value = parse_number(val).ok_or_else(bad)?;
        let subject = if name == "ret" || name == "retval" {
            Subject::Ret
        } else if let Some(n) = name
            .strip_prefix("arg")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n >= 1)
        {
            Subject::Pos(n)
        } else {
            Subject::Name(name.to_string())
        };
        Ok(Cond { subject, op, value })
    }

    /// Whether the condition needs the arguments (else the return value).
    pub fn wants_args(&self) -> bool {
        !matches!(self.subject, Subject::Ret | Subject::Variant(_))
    }

    /// The capture the condition looks at: `--args` (named from debug
    /// information) or `--retval`.
    pub fn capture_flags(&self) -> CaptureFlags {
        CaptureFlags {
            args: self.wants_args().then(|| "auto".to_string()),
            retval: !self.wants_args(),
        }
    }

    /// Check the condition applies to function `name` with signature `sig`
    /// (`None`: no debug information): an error names what exists.
    pub fn check(&self, name: &str, sig: Option<&Signature>) -> Result<(), String> {
        let names = |s: &Signature| {
            if s.params.is_empty() {
                "it has no arguments".to_string()
            } else {
                format!(
                    "its arguments are {}",
                    s.params
                        .iter()
                        .enumerate()
                        .map(|(i, p)| format!("{} (arg{}: {})", p.name, i + 1, p.ty.name()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        };
        match (&self.subject, sig) {
            (Subject::Name(n), None) => Err(format!(
                "--where names the argument '{n}', but {name} has no debug information (build \
                 it with -g): use its position (arg1..arg{}, integer registers) or ret",
                Conv::NATIVE.int_regs()
            )),
            (Subject::Name(n), Some(s)) => match s.params.iter().find(|p| &p.name == n) {
                None => Err(format!("{name} has no argument '{n}': {}", names(s))),
                Some(p) if !p.ty.comparable() => Err(format!(
                    "--where cannot compare {name}'s argument '{n}' ({}): only integers, \
                     floating-point numbers, enums, bools, chars and pointers compare",
                    p.ty.name()
                )),
                Some(_) => Ok(()),
            },
            (Subject::Pos(i), Some(s)) => match s.params.get(i - 1) {
                None => Err(format!("{name} has no argument arg{i}: {}", names(s))),
                Some(p) if !p.ty.comparable() => Err(format!(
                    "--where cannot compare {name}'s arg{i} '{}' ({})",
                    p.name,
                    p.ty.name()
                )),
                Some(_) => Ok(()),
            },
            (Subject::Pos(i), None) if *i > usize::from(Conv::NATIVE.int_regs()) => Err(format!(
                "{name} has no debug information: --where sees its first {n} (integer-register) \
                 arguments only, arg1..arg{n}",
                n = Conv::NATIVE.int_regs()
            )),
            (Subject::Ret, Some(Signature { ret: None, .. })) => Err(format!(
                "{name} returns nothing (void): --where 'ret …' cannot apply"
            )),
            (Subject::Variant(v), s) => match s.and_then(|s| s.ret.as_ref()) {
                Some(Ty::Variant { names, .. }) if names.contains(&v.as_str()) => Ok(()),
                Some(t) => Err(format!(
                    "{name} returns {}, which has no variant {v}",
                    t.name()
                )),
                None => Err(format!(
                    "--where 'ret == {v}' needs a Result or Option return value captured, and \
                     {name} has none"
                )),
            },
            (Subject::Ret, Some(Signature { ret: Some(t), .. })) if !t.comparable() => {
                Err(format!(
                    "--where cannot compare {name}'s return value ({})",
                    t.name()
                ))
            }
            _ => Ok(()),
        }
    }

    /// Whether a call matches; `None` when the values it needs were not
    /// captured (the call is then not shown).
    pub fn matches(
        &self,
        sig: Option<&Signature>,
        args: Option<&[u64]>,
        ret: Option<(u64, u64)>,
    ) -> Option<bool> {
        let x = match &self.subject {
            Subject::Variant(v) => {
                let (_, variant) = ret?;
                let Some(Signature {
                    ret: Some(Ty::Variant { names, .. }),
                    ..
                }) = sig
                else {
                    return None;
                };
                let want = names.iter().position(|n| n == v)?;
                let is = usize::from(variant != 0) == want;
                return Some(if self.op == Op::Ne { !is } else { is });
            }
            Subject::Ret => {
                let (rax, xmm0) = ret?;
                match sig {
                    Some(Signature { ret: Some(t), .. }) => match t {
                        // A Result/Option compares by its payload (none: no match).
                        Ty::Variant { payloads, .. } => {
                            number(payloads[usize::from(xmm0 != 0)].as_ref()?, rax)?
                        }
                        Ty::Float { .. } => number(t, xmm0)?,
                        _ => number(t, rax)?,
                    },
                    Some(_) => return None,
                    // No type: the return register as a signed number.
                    None => rax as i64 as f64,
                }
            }
            sub => {
                let a = Args::decode(args?)?;
                match sig {
                    Some(s) => {
                        let i = match sub {
                            Subject::Pos(i) => i - 1,
                            Subject::Name(n) => s.params.iter().position(|p| &p.name == n)?,
                            Subject::Ret | Subject::Variant(_) => unreachable!(),
                        };
                        let p = s.params.get(i)?;
                        number(&p.ty, word(&a, *s.layout().get(i)?)?)?
                    }
                    None => match sub {
                        Subject::Pos(i) => *a.ints.get(i - 1)? as i64 as f64,
                        _ => return None,
                    },
                }
            }
        };
        let v = self.value;
        Some(match self.op {
            Op::Lt => x < v,
            Op::Le => x <= v,
            Op::Gt => x > v,
            Op::Ge => x >= v,
            Op::Eq => x == v,
            Op::Ne => x != v,
        })
    }
}

impl std::fmt::Display for Cond {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        };
        match &self.subject {
            Subject::Ret => write!(f, "'ret {op} {}'", self.value),
            Subject::Pos(i) => write!(f, "'arg{i} {op} {}'", self.value),
            Subject::Name(n) => write!(f, "'{n} {op} {}'", self.value),
            Subject::Variant(v) => write!(f, "'ret {op} {v}'"),
        }
    }
}

fn parse_number(s: &str) -> Option<f64> {
    let (neg, t) = match s.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, s),
    };
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()? as f64
    } else {
        t.parse::<f64>().ok().filter(|v| v.is_finite())?
    };
    Some(if neg { -v } else { v })
}

/// What [`Tracker::feed`] made of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A values event, kept for the entry or exit it precedes.
    Values,
    /// An entry, with its captured argument words (spec first).
    Entry(Option<Vec<u64>>),
    /// An exit, with its call's argument words and its return value.
    Exit(Option<Vec<u64>>, Option<(u64, u64)>),
    /// Any other event.
    Other,
}

/// One thread's values: those waiting for their event, and the arguments
/// of its calls in progress (by depth), so an exit knows its call's.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    pending: Pending,
    stack: Vec<Option<(u32, Vec<u64>)>>,
}

/// Calls deeper than this keep no arguments (bounded memory).
const MAX_DEPTH: usize = 1024;

impl Tracker {
    /// Take one event of this thread.
    pub fn feed(&mut self, e: &Event) -> Seen {
        match e.kind {
            KIND_ENTRY => {
                let a = self.pending.take_args(e.func);
                let a = (!a.is_empty()).then_some(a);
                let d = e.depth as usize;
                if d < MAX_DEPTH {
                    self.stack.resize(d, None);
                    self.stack.push(a.clone().map(|a| (e.func, a)));
                }
                Seen::Entry(a)
            }
            KIND_EXIT => {
                let r = self.pending.take_ret(e.func);
                let d = e.depth as usize;
                let a = match self.stack.get_mut(d).and_then(|s| s.take()) {
                    Some((f, a)) if f == e.func => Some(a),
                    _ => None,
                };
                self.stack.truncate(d.min(MAX_DEPTH));
                Seen::Exit(a, r)
            }
            k if !tracer_core::event::is_call(k) => {
                self.pending.feed(e);
                Seen::Values
            }
            _ => Seen::Other,
        }
    }
}

/// The events of one whole call, rebuilt at its exit `exit` for a
/// recording of matching calls only: its argument words (spec first), its
/// entry, its return value and its exit, at depth 0 (the calls around it
/// are not recorded).
pub fn call_events(exit: &Event, args: Option<&[u64]>, ret: Option<(u64, u64)>) -> Vec<Event> {
    use tracer_core::event::{KIND_ARGS, KIND_RETVAL};
    let mut v = Vec::new();
    let ev = |ts, dur, kind, flags| Event {
        ts,
        dur,
        func: exit.func,
        depth: 0,
        kind,
        flags,
    };
    for (i, pair) in args.unwrap_or(&[]).chunks(2).enumerate() {
        v.push(ev(
            pair[0],
            pair.get(1).copied().unwrap_or(0),
            KIND_ARGS,
            i as u8,
        ));
    }
    v.push(ev(exit.ts.saturating_sub(exit.dur), 0, KIND_ENTRY, 0));
    if let Some((a, b)) = ret {
        v.push(ev(a, b, KIND_RETVAL, 0));
    }
    v.push(ev(exit.ts, exit.dur, KIND_EXIT, exit.flags));
    v
}

/// `--where` over a stream of events of many threads.
pub struct Filter {
    /// The condition.
    pub cond: Cond,
    /// Signatures of the functions.
    pub sigs: Signatures,
    threads: HashMap<u64, Tracker>,
    checked: HashMap<u32, Result<(), String>>,
}

impl Filter {
    /// A filter on `cond`, naming functions with `sigs`.
    pub fn new(cond: Cond, sigs: Signatures) -> Filter {
        Filter {
            cond,
            sigs,
            threads: HashMap::new(),
            checked: HashMap::new(),
        }
    }

    /// Check the condition against function `func` (cached): `Err` names
    /// what the function has instead.
    pub fn check(&mut self, func: u32, name: &str) -> Result<(), String> {
        if let Some(r) = self.checked.get(&func) {
            return r.clone();
        }
        let sig = self.sigs.get(func).cloned();
        let r = self.cond.check(name, sig.as_ref());
        self.checked.insert(func, r.clone());
        r
    }

    /// Take one event: for an exit, whether its call matches (`Some`);
    /// `None` for any other event.
    pub fn feed(&mut self, tid: u64, e: &Event) -> (Seen, Option<bool>) {
        let seen = self.threads.entry(tid).or_default().feed(e);
        let m = match &seen {
            Seen::Exit(a, r) => {
                let sig = self.sigs.get(e.func).cloned();
                Some(
                    self.cond
                        .matches(sig.as_ref(), a.as_deref(), *r)
                        .unwrap_or(false),
                )
            }
            _ => None,
        };
        (seen, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(name: &str) -> Param {
        Param {
            name: name.into(),
            ty: Ty::Int {
                signed: true,
                size: 4,
            },
        }
    }

    #[test]
    fn conditions_parse_and_match() {
        let c = Cond::parse("ret < 0").unwrap();
        assert_eq!(
            (c.subject.clone(), c.op, c.value),
            (Subject::Ret, Op::Lt, 0.0)
        );
        assert_eq!(Cond::parse("len>=0x10").unwrap().value, 16.0);
        assert_eq!(Cond::parse("arg2 != -3").unwrap().subject, Subject::Pos(2));
        assert!(Cond::parse("ret <").is_err());
        assert!(Cond::parse("a b < 1").is_err());
        let sig = Signature {
            params: vec![int("len"), int("flags")],
            ret: Some(Ty::Int {
                signed: true,
                size: 4,
            }),
            conv: Conv::SysV64,
            traceable: false,
        };
        let spec = u64::from(
            Capture {
                ints: 2,
                ..Capture::NONE
            }
            .encode(),
        );
        let words = [spec, 5000, 2];
        let c = Cond::parse("len > 4096").unwrap();
        assert_eq!(c.matches(Some(&sig), Some(&words), None), Some(true));
        let c = Cond::parse("ret < 0").unwrap();
        // -22 in eax, garbage above.
        let rax = 0xdead_0000_0000_0000 | u64::from((-22i32) as u32);
        assert_eq!(c.matches(Some(&sig), None, Some((rax, 0))), Some(true));
        assert_eq!(c.matches(Some(&sig), None, Some((3, 0))), Some(false));
        assert!(Cond::parse("size > 1")
            .unwrap()
            .check("parse", Some(&sig))
            .unwrap_err()
            .contains("len (arg1: int32), flags (arg2: int32)"));
        assert!(Cond::parse("len > 1")
            .unwrap()
            .check("parse", None)
            .unwrap_err()
            .contains("no debug information"));
        assert_eq!(args_text(Some(&sig), &words), "len=5000, flags=2");
        assert_eq!(args_text(None, &words), "arg1=0x1388, arg2=0x2");
        assert_eq!(ret_text(Some(&sig), (rax, 0)).unwrap(), "-22 (EINVAL)");
        assert_eq!(ret_text(None, (rax & 0xffff_ffff, 0)).unwrap(), "-22");
        assert_eq!(ret_text(None, (0xbeb, 0)).unwrap(), "0xbeb");
    }

    #[test]
    fn layout_follows_the_calling_convention() {
        let d = Param {
            name: "d".into(),
            ty: Ty::Float { size: 8 },
        };
        let s = Param {
            name: "s".into(),
            ty: Ty::Aggregate {
                name: "struct big".into(),
                size: 40,
                shape: Shape::default(),
            },
        };
        let sig = Signature {
            params: vec![int("a"), d.clone(), s.clone(), int("b")],
            ret: None,
            conv: Conv::SysV64,
            traceable: false,
        };
        assert_eq!(
            sig.layout(),
            vec![Loc::Int(0), Loc::Float(0), Loc::None, Loc::Int(1)]
        );
        let c = sig.capture();
        assert_eq!((c.ints, c.floats, c.stack), (2, 1, 0));
        // AAPCS64: the 40-byte struct is passed by reference, in x1.
        let sig = Signature {
            conv: Conv::Aapcs64,
            traceable: false,
            ..sig
        };
        assert_eq!(
            sig.layout(),
            vec![Loc::Int(0), Loc::Float(0), Loc::None, Loc::Int(2)]
        );
        let c = sig.capture();
        assert_eq!((c.ints, c.floats, c.stack), (3, 1, 0));
    }

    /// The fixture's `c_many(long a..h, double x0..x7, long i, double x8)`
    /// (tests/fixtures/inproc/whole.c): eight integer and eight
    /// floating-point registers on AArch64, then `i` and `x8` in the first
    /// two stack slots; six integer registers on x86-64, then `g`, `h`, `i`
    /// and `x8` on the stack.
    #[test]
    fn aapcs64_places_integer_and_floating_point_arguments_independently() {
        let long = |n: &str| Param {
            name: n.into(),
            ty: Ty::Int {
                signed: true,
                size: 8,
            },
        };
        let double = |n: &str| Param {
            name: n.into(),
            ty: Ty::Float { size: 8 },
        };
        let mut params: Vec<Param> = "abcdefgh".chars().map(|c| long(&c.to_string())).collect();
        params.extend((0..8).map(|k| double(&format!("x{k}"))));
        params.push(long("i"));
        params.push(double("x8"));
        let arm = Signature {
            params,
            ret: Some(Ty::Float { size: 8 }),
            conv: Conv::Aapcs64,
            traceable: false,
        };
        let want: Vec<Loc> = (0..8)
            .map(Loc::Int)
            .chain((0..8).map(Loc::Float))
            .chain([Loc::Stack(0), Loc::Stack(1)])
            .collect();
        assert_eq!(arm.layout(), want);
        let c = arm.capture();
        assert_eq!((c.ints, c.floats, c.stack), (8, 8, 2));
        let x86 = Signature {
            conv: Conv::SysV64,
            traceable: false,
            ..arm.clone()
        };
        let want: Vec<Loc> = (0..6)
            .map(Loc::Int)
            .chain([Loc::Stack(0), Loc::Stack(1)])
            .chain((0..8).map(Loc::Float))
            .chain([Loc::Stack(2), Loc::Stack(3)])
            .collect();
        assert_eq!(x86.layout(), want);

        // The values as the AArch64 runtime captures them: the spec, x0..x7,
        // d0..d7, then the stack slots from the entry stack pointer.
        let spec = u64::from(c.encode());
        let mut words = vec![spec];
        words.extend((1..=7).chain([-3i64]).map(|v| v as u64));
        words.extend((0..8).map(|k| (k as f64 + 0.5).to_bits()));
        words.extend([9, 8.5f64.to_bits()]);
        assert_eq!(
            args_text(Some(&arm), &words),
            "a=1, b=2, c=3, d=4, e=5, f=6, g=7, h=-3, x0=0.5, x1=1.5, x2=2.5, x3=3.5, x4=4.5, \
             x5=5.5, x6=6.5, x7=7.5, i=9, x8=8.5"
        );
        // The return value: d0 for a double, x0 for an integer.
        assert_eq!(
            ret_text(Some(&arm), (7, 2.25f64.to_bits())).unwrap(),
            "2.25"
        );
        let by_pos = Cond::parse("arg18 > 8").unwrap();
        assert_eq!(by_pos.matches(Some(&arm), Some(&words), None), Some(true));
        let h = Cond::parse("h < 0").unwrap();
        assert_eq!(h.matches(Some(&arm), Some(&words), None), Some(true));

        // Further rules: a 16-byte aggregate takes two integer registers
        // when both are free, else the stack (and no integer register after
        // it); `__int128` an even-numbered pair.
        let agg = |n: &str, size| Param {
            name: n.into(),
            ty: Ty::Aggregate {
                name: "struct s".into(),
                size,
                shape: Shape::default(),
            },
        };
        let i128 = Param {
            name: "w".into(),
            ty: Ty::Int {
                signed: true,
                size: 16,
            },
        };
        let sig = Signature {
            params: vec![
                long("a"),
                i128,
                long("b"),
                agg("p", 16),
                long("c"),
                agg("q", 16),
                long("d"),
            ],
            ret: None,
            conv: Conv::Aapcs64,
            traceable: false,
        };
        // a: x0; w: x2-x3; b: x4; p: x5-x6; c: x7; q: stack 0-1; d: stack 2.
        assert_eq!(
            sig.layout(),
            vec![
                Loc::Int(0),
                Loc::None,
                Loc::Int(4),
                Loc::None,
                Loc::Int(7),
                Loc::None,
                Loc::Stack(2),
            ]
        );
    }

    /// Aggregates with floating-point members: x86-64 puts each 8-byte
    /// word with only floating-point members in a vector register, AAPCS64
    /// a homogeneous floating-point aggregate in one vector register a
    /// member; the arguments after them are placed accordingly.
    #[test]
    fn floating_point_aggregates_take_vector_registers() {
        // struct { double x, y; }, struct { double x; long n; },
        // struct { float a, b, c; }, struct { double d[4]; }.
        let two_doubles = Shape::of(16, &[(0, 8, true), (8, 8, true)]);
        assert_eq!(
            two_doubles,
            Shape {
                fp_words: 3,
                hfa: 2
            }
        );
        let mixed = Shape::of(16, &[(0, 8, true), (8, 8, false)]);
        assert_eq!(
            mixed,
            Shape {
                fp_words: 1,
                hfa: 0
            }
        );
        let three_floats = Shape::of(12, &[(0, 4, true), (4, 4, true), (8, 4, true)]);
        assert_eq!(
            three_floats,
            Shape {
                fp_words: 3,
                hfa: 3
            }
        );
        let four = Shape::of(
            32,
            &[(0, 8, true), (8, 8, true), (16, 8, true), (24, 8, true)],
        );
        assert_eq!(
            four,
            Shape {
                fp_words: 15,
                hfa: 4
            }
        );
        assert_eq!(
            Shape::of(8, &[(0, 4, true), (4, 4, false)]),
            Shape::default()
        );
        assert_eq!(Shape::of(8, &[(0, 4, true), (4, 8, true)]).hfa, 0);

        let agg = |n: &str, size, shape| Param {
            name: n.into(),
            ty: Ty::Aggregate {
                name: n.into(),
                size,
                shape,
            },
        };
        let double = |n: &str| Param {
            name: n.into(),
            ty: Ty::Float { size: 8 },
        };
        let params = vec![
            agg("p", 16, two_doubles),
            double("a"),
            agg("m", 16, mixed),
            int("i"),
            agg("q", 32, four),
            double("b"),
        ];
        let x86 = Signature {
            params: params.clone(),
            ret: None,
            conv: Conv::SysV64,
            traceable: false,
        };
        // p: xmm0-xmm1; a: xmm2; m: xmm3 and rdi; i: rsi; q: stack 0-3;
        // b: xmm4.
        assert_eq!(
            x86.layout(),
            vec![
                Loc::None,
                Loc::Float(2),
                Loc::None,
                Loc::Int(1),
                Loc::None,
                Loc::Float(4)
            ]
        );
        let arm = Signature {
            params,
            ret: None,
            conv: Conv::Aapcs64,
            traceable: false,
        };
        // p: d0-d1; a: d2; m: x0-x1; i: x2; q: d3-d6; b: d7.
        assert_eq!(
            arm.layout(),
            vec![
                Loc::None,
                Loc::Float(2),
                Loc::None,
                Loc::Int(2),
                Loc::None,
                Loc::Float(7)
            ]
        );
        // An aggregate that no longer fits in the vector registers goes on
        // the stack, and so does every floating-point argument after it.
        let mut late = arm.clone();
        late.params.insert(0, agg("r", 32, four));
        assert_eq!(
            late.layout()[1..],
            [
                Loc::None,
                Loc::Float(6),
                Loc::None,
                Loc::Int(2),
                Loc::None,
                Loc::Stack(4)
            ]
        );
    }

    /// Real debug information: a C file built with `-g` by gcc for x86-64
    /// and, where the cross compiler is installed (`scripts/setup-cross.sh`),
    /// for AArch64. The convention comes from each object's ELF header,
    /// names, types and aggregate shapes from its DWARF.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn signatures_from_dwarf_follow_the_objects_architecture() {
        use object::{Object as _, ObjectSymbol as _};
        const C: &str = "struct pt { double x, y; };\n\
                         struct mix { double d; long n; };\n\
                         long f(struct pt p, double a, struct mix m, int i, double b) {\n\
                         \x20 return (long)(p.x + p.y + a + m.d + b) + i + m.n;\n\
                         }\n";
        let dir = std::env::temp_dir().join(format!("tracer-values-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("v.c");
        std::fs::write(&src, C).unwrap();
        // p, a, m, i, b.
        let x86 = vec![
            Loc::None, // xmm0-xmm1
            Loc::Float(2),
            Loc::None, // xmm3, rdi
            Loc::Int(1),
            Loc::Float(4),
        ];
        let arm = vec![
            Loc::None, // d0-d1
            Loc::Float(2),
            Loc::None, // x0-x1
            Loc::Int(2),
            Loc::Float(3),
        ];
        let mut built = 0;
        for (cc, conv, want) in [
            ("gcc", Conv::SysV64, x86),
            ("aarch64-linux-gnu-gcc", Conv::Aapcs64, arm),
        ] {
            let so = dir.join(format!("{cc}.so"));
            let st = std::process::Command::new(cc)
                .args(["-g", "-O1", "-shared", "-nostdlib", "-fPIC", "-o"])
                .arg(&so)
                .arg(&src)
                .status();
            match st {
                Ok(s) if s.success() => built += 1,
                r if cc != "gcc" => {
                    eprintln!("note: not checked for {cc} (not installed?): {r:?}");
                    continue;
                }
                r => panic!("{cc}: {r:?}"),
            }
            let data = std::fs::read(&so).unwrap();
            let file = object::File::parse(&*data).unwrap();
            let f = file
                .symbols()
                .find(|s| s.name() == Ok("f"))
                .expect("f's symbol")
                .address();
            let sig = Signatures::default()
                .of_object(so.to_str().unwrap(), f)
                .expect("f's debug information");
            assert_eq!(sig.conv, conv, "{cc}");
            let names: Vec<&str> = sig.params.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, ["p", "a", "m", "i", "b"], "{cc}");
            let Ty::Aggregate { name, shape, .. } = &sig.params[0].ty else {
                panic!("{cc}: {sig:?}")
            };
            assert_eq!(
                (name.as_str(), *shape),
                (
                    "struct pt",
                    Shape {
                        fp_words: 3,
                        hfa: 2
                    }
                )
            );
            let Ty::Aggregate { shape, .. } = &sig.params[2].ty else {
                panic!("{cc}: {sig:?}")
            };
            assert_eq!(
                *shape,
                Shape {
                    fp_words: 1,
                    hfa: 0
                }
            );
            assert_eq!(sig.layout(), want, "{cc}");
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert!(built >= 1);
    }

    /// Without debug information (`--args=N`): the first N integer
    /// registers in hex, `x0`.. on AArch64 as `rdi`.. on x86-64; AArch64
    /// allows N up to 8.
    #[test]
    fn without_debug_information_integer_registers_show_as_hex() {
        let cap = Capture {
            ints: 8,
            ..Capture::NONE
        };
        let mut words = vec![u64::from(cap.encode())];
        words.extend([0x400, 0x2, 0, 0, 0, 0, 0, 0xffff_0000_1234]);
        assert_eq!(
            args_text(None, &words),
            "arg1=0x400, arg2=0x2, arg3=0x0, arg4=0x0, arg5=0x0, arg6=0x0, arg7=0x0, \
             arg8=0xffff00001234"
        );
        let flags = |n: &str| CaptureFlags {
            args: Some(n.into()),
            retval: true,
        };
        assert_eq!(flags("6").count(), Ok(Some(6)));
        assert!(flags("9").count().is_err());
        let eight = flags("8").count();
        if Conv::NATIVE == Conv::Aapcs64 {
            assert_eq!(eight, Ok(Some(8)));
            assert_eq!(flags("8").blind().unwrap().ints, 8);
        } else {
            assert!(eight.unwrap_err().contains("from 1 to 6"));
        }
        assert_eq!(Conv::of(object::Architecture::Aarch64), Some(Conv::Aapcs64));
        assert_eq!(Conv::of(object::Architecture::X86_64), Some(Conv::SysV64));
    }

    #[test]
    fn traceable_values_show_as_the_macro_typed_them() {
        let sig = Signature::from_traceable(
            "key:len:&str\nlimit:u32:u32\nmode:-:Mode\nc:char:char\n->res/i32/-:Result<i32, E>\n",
        );
        assert_eq!(
            sig.layout(),
            vec![Loc::Int(0), Loc::Int(1), Loc::None, Loc::Int(2)]
        );
        let spec = u64::from(tracer_core::capture::SPEC_TRACEABLE | 3);
        assert_eq!(
            args_text(Some(&sig), &[spec, 3, 0xffff_ffff_0000_000a, 'é' as u64]),
            "key.len=3, limit=10, mode: Mode, c='é'"
        );
        // Err(-22) with an errno name; Ok with an integer payload; an
        // opaque Err payload.
        assert_eq!(
            ret_text(Some(&sig), ((-22i64) as u64, 1)).as_deref(),
            Some("Err(..)")
        );
        let sig = Signature::from_traceable("->res/u32/i32:Result<u32, i32>\n");
        assert_eq!(
            ret_text(Some(&sig), (0xffff_ffea, 1)).as_deref(),
            Some("Err(-22 (EINVAL))")
        );
        assert_eq!(ret_text(Some(&sig), (30, 0)).as_deref(), Some("Ok(30)"));
        let sig = Signature::from_traceable("->opt/f64:Option<f64>\n");
        assert_eq!(
            ret_text(Some(&sig), (1.5f64.to_bits(), 0)).as_deref(),
            Some("Some(1.5)")
        );
        assert_eq!(ret_text(Some(&sig), (0, 1)).as_deref(), Some("None"));
        // errno names only for signed integers, -2..-133.
        let int = |v: i64| {
            let s = Signature {
                ret: Some(Ty::Int {
                    signed: true,
                    size: 4,
                }),
                ..Signature::default()
            };
            ret_text(Some(&s), (v as u64, 0)).unwrap()
        };
        assert_eq!(int(-2), "-2 (ENOENT)");
        assert_eq!(int(-1), "-1");
        assert_eq!(int(-134), "-134");
        assert_eq!(int(-41), "-41");
        assert_eq!(ret_text(None, ((-22i64) as u64, 0)).unwrap(), "-22");
        // --where on a variant.
        let sig = Signature::from_traceable("->res/u32/i32:Result<u32, i32>\n");
        let c = Cond::parse("ret == Err").unwrap();
        assert!(c.check("f", Some(&sig)).is_ok());
        assert_eq!(c.matches(Some(&sig), None, Some((5, 1))), Some(true));
        assert_eq!(c.matches(Some(&sig), None, Some((5, 0))), Some(false));
        assert!(Cond::parse("ret == None")
            .unwrap()
            .check("f", Some(&sig))
            .is_err());
        assert!(Cond::parse("ret < Err").is_err());
        let c = Cond::parse("ret < 0").unwrap();
        assert_eq!(
            c.matches(Some(&sig), None, Some((0xffff_ffea, 1))),
            Some(true)
        );
    }
}
