//! Argument and return-value capture at `#[traceable]` pads (x86-64,
//! AArch64, ARMv7 Thumb-2 and A32).
//!
//! The macro knows each parameter's name and type (as written). Values of
//! the kinds it can show (integers, floats, `bool`, `char`, raw pointers and
//! references as addresses, the length of `&str`, slices, `String` and
//! `Vec`) become operands of the entry pad's `asm!` block, which are in
//! registers at the top of the body already; the block emits a second,
//! *capturing* stub that stores them and calls the capturing trampoline.
//! The runtime picks that stub only for functions enabled with capture, so
//! the disabled pad and the plain stub are what they were. The return value
//! goes to a second exit pad the same way. The text the reader names and
//! types the values by (`FnDesc::sig`) is `tracer_core::capture::TraceableSig`'s.
//!
//! The macro does not know the target it expands for, so it writes one
//! capturing pad (and one signature text) per architecture, each under its
//! `cfg`: which parameters are in registers at the pad differs (x86-64: 6
//! integer and 8 vector registers; AArch64: 8 and 8; ARMv7: 4 words, a
//! 64-bit value in an even-odd pair, and 16 single-precision registers).
//!
//! **The block** every capturing stub builds on the stack (the hook reads
//! it, `tracer::thread`'s `traceable_block`): the value count in the low
//! 32 bits of word 0, then per value two 64-bit words (the value, or an
//! address; 0, or the address of a reader the hook calls with it), then 8
//! bytes the stub keeps for itself (x86-64: the pad's return address,
//! pushed by its `call`; ARM: the link register): the stack pointer at the
//! pad is the block's address + 16 × count + 16. On ARMv7 a 32-bit value's
//! high word is 0 (`isize`: its sign), a 64-bit one takes its register pair.

use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote, ToTokens};
use syn::{FnArg, GenericArgument, Pat, PathArguments, ReturnType, Signature, Type};

/// Most values one pad captures (`tracer_core::site::MAX_TRACEABLE_VALUES`).
const MAX_VALUES: usize = 16;

/// The architectures the macro writes a capturing pad for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// x86-64 (System V).
    X86_64,
    /// AArch64 (AAPCS64).
    Aarch64,
    /// ARMv7, Thumb-2 or A32 (AAPCS-VFP, hard float).
    Arm,
}

impl Target {
    /// Every target, in the order their `cfg`s are written.
    pub const ALL: [Target; 3] = [Target::X86_64, Target::Aarch64, Target::Arm];

    /// The `target_arch` value.
    pub fn arch(self) -> &'static str {
        match self {
            Target::X86_64 => "x86_64",
            Target::Aarch64 => "aarch64",
            Target::Arm => "arm",
        }
    }
}

/// How a parameter of a type is passed, as far as the macro can tell from
/// its syntax.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Abi {
    /// Nothing (`()`).
    Nothing,
    /// One integer register of at most the pointer's size (also pointers,
    /// references to sized types, and a guess for everything else: a
    /// struct is taken as one register, a pointer or a small value, which
    /// is only a guess: a wrong one costs the capture of a later value, or
    /// a load before the pad).
    Word,
    /// A 64-bit integer (two registers, an even-odd pair, on ARMv7).
    Int64,
    /// A 128-bit integer.
    Int128,
    /// A fat pointer: two pointer-sized registers.
    Fat,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
}

fn abi(ty: &Type) -> Abi {
    if let Some((name, PathArguments::None, 1)) = last_ident(ty) {
        match name.as_str() {
            "i64" | "u64" => return Abi::Int64,
            "i128" | "u128" => return Abi::Int128,
            "f32" => return Abi::F32,
            "f64" => return Abi::F64,
            _ => {}
        }
    }
    let fat = |t: &Type| match t {
        Type::Slice(_) | Type::TraitObject(_) => true,
        Type::Path(p) => p.path.is_ident("str"),
        _ => false,
    };
    match ty {
        Type::Paren(p) => abi(&p.elem),
        Type::Group(g) => abi(&g.elem),
        Type::Reference(r) if fat(&r.elem) => Abi::Fat,
        Type::Ptr(p) if fat(&p.elem) => Abi::Fat,
        Type::Tuple(t) if t.elems.is_empty() => Abi::Nothing,
        _ => Abi::Word,
    }
}

/// The argument registers taken so far, under one target's convention:
/// whether the next parameter is still in registers at the pad. Only
/// values in argument registers at the pad are taken: one on the stack
/// would cost a load in the disabled pad.
struct Regs {
    target: Target,
    ints: usize,
    floats: usize,
    /// ARMv7: the single-precision registers taken (VFP back-filling).
    singles: u16,
    /// ARMv7: a floating-point value went to the stack (no back-filling
    /// after that).
    vfp_full: bool,
}

impl Regs {
    fn new(target: Target) -> Regs {
        Regs {
            target,
            ints: 0,
            floats: 0,
            singles: 0,
            vfp_full: false,
        }
    }

    /// Take the registers of a parameter passed as `a`; whether it is in
    /// registers.
    fn take(&mut self, a: Abi) -> bool {
        match self.target {
            // The x86-64 convention (which the Rust ABI follows for these
            // kinds) has 6 integer and 8 vector argument registers; counts
            // add up (once either is exceeded, nothing later is taken).
            Target::X86_64 => {
                let (i, f) = match a {
                    Abi::Nothing => (0, 0),
                    Abi::Word | Abi::Int64 => (1, 0),
                    Abi::Int128 | Abi::Fat => (2, 0),
                    Abi::F32 | Abi::F64 => (0, 1),
                };
                self.ints += i;
                self.floats += f;
                self.ints <= 6 && self.floats <= 8
            }
            // AAPCS64: 8 integer registers (a 128-bit value in an even
            // pair) and 8 vector ones.
            Target::Aarch64 => match a {
                Abi::Nothing => true,
                Abi::F32 | Abi::F64 => {
                    self.floats += 1;
                    self.floats <= 8
                }
                _ => {
                    if a == Abi::Int128 {
                        self.ints += self.ints % 2;
                    }
                    self.ints += if matches!(a, Abi::Int128 | Abi::Fat) {
                        2
                    } else {
                        1
                    };
                    self.ints <= 8
                }
            },
            // AAPCS-VFP: r0-r3 (a 64-bit value in r0:r1 or r2:r3; once a
            // value goes to the stack, every later one does), s0-s15 with
            // back-filling of singles, d0-d7.
            Target::Arm => match a {
                Abi::Nothing => true,
                Abi::F32 => {
                    if self.vfp_full {
                        return false;
                    }
                    match (0..16).find(|i| self.singles & (1 << i) == 0) {
                        Some(i) => {
                            self.singles |= 1 << i;
                            true
                        }
                        None => {
                            self.vfp_full = true;
                            false
                        }
                    }
                }
                Abi::F64 => {
                    if self.vfp_full {
                        return false;
                    }
                    match (0..8).find(|i| self.singles & (3 << (2 * i)) == 0) {
                        Some(i) => {
                            self.singles |= 3 << (2 * i);
                            true
                        }
                        None => {
                            self.vfp_full = true;
                            false
                        }
                    }
                }
                _ => {
                    let (n, align) = match a {
                        Abi::Int64 => (2, 2),
                        Abi::Int128 => (4, 2),
                        Abi::Fat => (2, 1),
                        _ => (1, 1),
                    };
                    let start = self.ints.div_ceil(align) * align;
                    if start + n <= 4 {
                        self.ints = start + n;
                        true
                    } else {
                        self.ints = 4;
                        false
                    }
                }
            },
        }
    }
}

/// The kind tokens of `tracer_core::capture::ValueKind`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int(u8),
    Uint(u8),
    Float(u8),
    Bool,
    Char,
    Ptr,
    Len,
    Opaque,
}

impl Kind {
    fn token(self) -> String {
        match self {
            Kind::Int(n) => format!("i{}", u32::from(n) * 8),
            Kind::Uint(n) => format!("u{}", u32::from(n) * 8),
            Kind::Float(n) => format!("f{}", u32::from(n) * 8),
            Kind::Bool => "bool".into(),
            Kind::Char => "char".into(),
            Kind::Ptr => "ptr".into(),
            Kind::Len => "len".into(),
            Kind::Opaque => "-".into(),
        }
    }

    /// The payload marker of `__private::values` for this kind.
    fn marker(self) -> TokenStream2 {
        match self {
            Kind::Int(_) | Kind::Uint(_) | Kind::Float(_) | Kind::Bool | Kind::Char => {
                quote!(::tracer::__private::values::V)
            }
            Kind::Ptr => quote!(::tracer::__private::values::A),
            Kind::Len => quote!(::tracer::__private::values::L),
            Kind::Opaque => quote!(::tracer::__private::values::N),
        }
    }
}

/// How one value reaches the capturing stub (each target's stub turns it
/// into operands and code: [`Capture::stub`]).
enum Operand {
    /// An integer of `bytes` bytes (1, 2, 4 or 8; `bool` and `char` as
    /// `u8` and `u32`): the whole register is stored, the reader masks it
    /// to the type's width.
    Int(TokenStream2, u8),
    /// A pointer-sized integer (`isize`/`usize`, addresses, lengths);
    /// `true`: signed (ARMv7 stores its sign in the high word).
    Size(TokenStream2, bool),
    /// A floating-point value of `bytes` bytes (4 or 8).
    Float(TokenStream2, u8),
    /// An address, and the reader the hook calls with it (a `sym`).
    Read(TokenStream2, TokenStream2),
    /// An address, and the reader as a value: for types with references,
    /// which cannot be named in a `sym` (their lifetimes would have to be
    /// made `'static`, which a generic type may not satisfy). Costs the
    /// reader's address (one `lea`/`adrp`+`add`) before the pad.
    ReadDyn(TokenStream2, TokenStream2),
}

/// Whether a type holds a reference or a lifetime.
fn has_lifetime(ty: &Type) -> bool {
    struct F(bool);
    impl<'a> syn::visit::Visit<'a> for F {
        fn visit_lifetime(&mut self, _: &'a syn::Lifetime) {
            self.0 = true;
        }
        fn visit_type_reference(&mut self, _: &'a syn::TypeReference) {
            self.0 = true;
        }
    }
    let mut f = F(false);
    syn::visit::Visit::visit_type(&mut f, ty);
    f.0
}

/// The captured values of a pad: `(operand, …)`.
pub struct Capture {
    ops: Vec<Operand>,
    /// Per value: the parameter it is (and its type), when it is a
    /// primitive captured as itself. On ARM the entry pad takes such a
    /// parameter as `inout` (a mutable shadow of it, which the pad leaves
    /// as it is): the body then depends on the pad, so the compiler does
    /// not compute it ahead of the pad into other registers (with `in`
    /// operands it does, as the parameters stay live into the pad, and
    /// moves the result back into the return register: one instruction
    /// more in a small function). The price: where a caller's constant
    /// arguments reach the body (inlined, or propagated into a private
    /// function), the body no longer folds them after the pad.
    places: Vec<Option<(syn::Ident, Type)>>,
}

/// A type as the reader shows it (`& str`, `Vec < u8 >` → `&str`, `Vec<u8>`).
pub fn type_text(ty: &Type) -> String {
    let mut s = ty.to_token_stream().to_string();
    for (a, b) in [
        (" < ", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" , ", ", "),
        (" :: ", "::"),
        (":: ", "::"),
        ("& ", "&"),
        ("* const ", "*const "),
        ("* mut ", "*mut "),
        ("[ ", "["),
        (" ]", "]"),
        (" ; ", "; "),
        ("' ", "'"),
    ] {
        s = s.replace(a, b);
    }
    s
}

fn last_ident(ty: &Type) -> Option<(String, &PathArguments, usize)> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let seg = p.path.segments.last()?;
    Some((seg.ident.to_string(), &seg.arguments, p.path.segments.len()))
}

fn primitive(ty: &Type) -> Option<Kind> {
    let (name, args, n) = last_ident(ty)?;
    if n != 1 || !matches!(args, PathArguments::None) {
        return None;
    }
    Some(match name.as_str() {
        "i8" => Kind::Int(1),
        "i16" => Kind::Int(2),
        "i32" => Kind::Int(4),
        "i64" | "isize" => Kind::Int(8),
        "u8" => Kind::Uint(1),
        "u16" => Kind::Uint(2),
        "u32" => Kind::Uint(4),
        "u64" | "usize" => Kind::Uint(8),
        "f32" => Kind::Float(4),
        "f64" => Kind::Float(8),
        "bool" => Kind::Bool,
        "char" => Kind::Char,
        _ => return None,
    })
}

/// `String` or `Vec<…>` (plain or through `std::`/`alloc::` paths).
fn owned_len(ty: &Type) -> bool {
    let Type::Path(p) = ty else { return false };
    let segs: Vec<String> = p
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let path: Vec<&str> = segs.iter().map(|s| s.as_str()).collect();
    matches!(
        path.as_slice(),
        ["String"]
            | ["std" | "alloc", "string", "String"]
            | ["Vec"]
            | ["std" | "alloc", "vec", "Vec"]
    )
}

/// The kind of a value of type `ty`, and how `value` (an expression of
/// that type, a place for `Read`) reaches the stub.
fn classify(ty: &Type, value: &TokenStream2) -> (Kind, Option<Operand>) {
    if let Some(k) = primitive(ty) {
        let size = matches!(last_ident(ty), Some((n, _, _)) if n == "isize" || n == "usize");
        let op = match k {
            _ if size => Operand::Size(quote!(#value), matches!(k, Kind::Int(_))),
            Kind::Int(n) | Kind::Uint(n) => Operand::Int(quote!(#value), n),
            Kind::Bool => Operand::Int(quote!(#value as u8), 1),
            Kind::Char => Operand::Int(quote!(#value as u32), 4),
            Kind::Float(n) => Operand::Float(quote!(#value), n),
            _ => unreachable!("primitive kinds"),
        };
        return (k, Some(op));
    }
    match ty {
        Type::Paren(p) => classify(&p.elem, value),
        Type::Group(g) => classify(&g.elem, value),
        Type::Ptr(_) => (
            Kind::Ptr,
            Some(Operand::Size(
                quote!(#value as *const _ as *const () as usize),
                false,
            )),
        ),
        Type::Reference(r) => {
            let is_str = matches!(&*r.elem, Type::Path(p) if p.path.is_ident("str"));
            if is_str || matches!(&*r.elem, Type::Slice(_)) {
                (Kind::Len, Some(Operand::Size(quote!(#value.len()), false)))
            } else {
                (
                    Kind::Ptr,
                    Some(Operand::Size(
                        quote!((&*#value) as *const _ as *const () as usize),
                        false,
                    )),
                )
            }
        }
        _ if owned_len(ty) && has_lifetime(ty) => (
            Kind::Len,
            Some(Operand::ReadDyn(
                quote!(&#value as *const _ as usize),
                quote!(::tracer::__private::values::len_reader(&#value)),
            )),
        ),
        _ if owned_len(ty) => (
            Kind::Len,
            Some(Operand::Read(
                quote!(&#value as *const _ as usize),
                quote!(::tracer::__private::values::read_len::<#ty>),
            )),
        ),
        _ => (Kind::Opaque, None),
    }
}

/// Whether a type can be named inside the body (no `impl Trait`).
fn nameable(ty: &Type) -> bool {
    struct F(bool);
    impl<'a> syn::visit::Visit<'a> for F {
        fn visit_type_impl_trait(&mut self, _: &'a syn::TypeImplTrait) {
            self.0 = false;
        }
        fn visit_type_infer(&mut self, _: &'a syn::TypeInfer) {
            self.0 = false;
        }
        fn visit_type_macro(&mut self, _: &'a syn::TypeMacro) {
            self.0 = false;
        }
    }
    let mut f = F(true);
    syn::visit::Visit::visit_type(&mut f, ty);
    f.0
}

/// The parameters under `target`'s convention: the signature lines, and
/// the values captured.
pub fn params(sig: &Signature, target: Target) -> (String, Capture) {
    let mut text = String::new();
    let mut ops = Vec::new();
    let mut places = Vec::new();
    let mut regs = Regs::new(target);
    for arg in &sig.inputs {
        let (name, ty_text, kind, op) = match arg {
            FnArg::Receiver(r) => {
                let ty = &*r.ty;
                if r.reference.is_some() {
                    (
                        "self".to_string(),
                        type_text(ty),
                        Kind::Ptr,
                        Some((
                            Operand::Size(
                                quote!((&*self) as *const Self as *const () as usize),
                                false,
                            ),
                            None,
                        )),
                    )
                } else {
                    ("self".to_string(), type_text(ty), Kind::Opaque, None)
                }
            }
            FnArg::Typed(pt) => {
                let name = match &*pt.pat {
                    Pat::Ident(i) if i.subpat.is_none() => Some(i.ident.clone()),
                    _ => None,
                };
                let text_name = match &name {
                    Some(i) => i.to_string().trim_start_matches("r#").to_string(),
                    None => pt.pat.to_token_stream().to_string().replace(' ', ""),
                };
                let (kind, op) = match &name {
                    Some(i) if nameable(&pt.ty) => classify(&pt.ty, &quote!(#i)),
                    _ => (Kind::Opaque, None),
                };
                // A primitive captured as itself can be tied (ARM, below).
                let place = match (&name, kind, &op) {
                    (
                        Some(i),
                        _,
                        Some(Operand::Int(..) | Operand::Size(..) | Operand::Float(..)),
                    ) if primitive(&pt.ty).is_some()
                        && !matches!(kind, Kind::Bool | Kind::Char) =>
                    {
                        Some((i.clone(), (*pt.ty).clone()))
                    }
                    _ => None,
                };
                (text_name, type_text(&pt.ty), kind, op.map(|o| (o, place)))
            }
        };
        let a = match arg {
            FnArg::Receiver(_) => Abi::Word,
            FnArg::Typed(pt) => abi(&pt.ty),
        };
        let in_regs = regs.take(a);
        let (kind, op) = if ops.len() >= MAX_VALUES || !in_regs {
            (Kind::Opaque, None)
        } else {
            (kind, op)
        };
        text.push_str(&format!("{name}:{}:{ty_text}\n", kind.token()));
        if let Some((op, place)) = op {
            ops.push(op);
            places.push(place);
        }
    }
    (text, Capture { ops, places })
}

/// The return value, if the macro captures it: the signature line, the
/// type (nameable), and the capture of `__tracer_ret`. `by_address`
/// (`#[traceable(ret)]`): also values the pad takes by address (`Result`,
/// `Option`, `String`, `Vec`), which are otherwise not captured.
pub fn ret(sig: &Signature, by_address: bool) -> Option<(String, Type, Capture)> {
    let ReturnType::Type(_, ty) = &sig.output else {
        return None;
    };
    if !nameable(ty) {
        return None;
    }
    let value = quote!(__tracer_ret);
    let text = type_text(ty);
    if let Some((name, PathArguments::AngleBracketed(a), _)) = last_ident(ty) {
        let tys: Vec<&Type> = a
            .args
            .iter()
            .filter_map(|g| match g {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect();
        let payload = |t: Option<&&Type>| match t {
            Some(t) => classify(t, &quote!(__tracer_x)).0,
            None => Kind::Opaque,
        };
        let kinds = match (name.as_str(), tys.len()) {
            ("Result", 1 | 2) => Some((
                format!(
                    "res/{}/{}",
                    payload(tys.first()).token(),
                    payload(tys.get(1)).token()
                ),
                payload(tys.first()),
                payload(tys.get(1)),
            )),
            ("Option", 1) => Some((
                format!("opt/{}", payload(tys.first()).token()),
                payload(tys.first()),
                Kind::Opaque,
            )),
            _ => None,
        };
        if kinds.is_some() && !by_address {
            return None;
        }
        if let Some((k, a, b)) = kinds {
            let (ma, mb) = (a.marker(), b.marker());
            let addr = quote!(&#value as *const _ as usize);
            let op = if has_lifetime(ty) {
                Operand::ReadDyn(
                    addr,
                    quote!(::tracer::__private::values::variant_reader::<_, #ma, #mb>(&#value)),
                )
            } else {
                Operand::Read(
                    addr,
                    quote!(::tracer::__private::values::read_variant::<#ty, #ma, #mb>),
                )
            };
            return Some((
                format!("->{k}:{text}\n"),
                (**ty).clone(),
                Capture {
                    ops: vec![op],
                    places: vec![None],
                },
            ));
        }
    }
    match classify(ty, &value) {
        (Kind::Opaque, _) | (_, None) => None,
        (_, Some(Operand::Read(..) | Operand::ReadDyn(..))) if !by_address => None,
        (k, Some(op)) => Some((
            format!("->{}:{text}\n", k.token()),
            (**ty).clone(),
            Capture {
                ops: vec![op],
                places: vec![None],
            },
        )),
    }
}

/// The names of the 32-bit shadows of value `i`'s halves (ARMv7).
fn halves(i: usize) -> (syn::Ident, syn::Ident) {
    (
        format_ident!("__tracer_lo{i}"),
        format_ident!("__tracer_hi{i}"),
    )
}

impl Capture {
    /// The capturing stub's code for `target`, calling `tramp`, and the
    /// operands (see the module's doc for the block it builds).
    fn stub(&self, target: Target, tramp: &str) -> (String, Vec<TokenStream2>) {
        match target {
            Target::X86_64 => self.stub_x86_64(tramp),
            Target::Aarch64 => self.stub_aarch64(tramp),
            Target::Arm => self.stub_arm(tramp),
        }
    }

    /// x86-64: the values are pushed (the last first), then the count; the
    /// stub calls the trampoline with the record in `r11`.
    fn stub_x86_64(&self, tramp: &str) -> (String, Vec<TokenStream2>) {
        let mut code = Vec::new();
        let mut operands = Vec::new();
        for (i, op) in self.ops.iter().enumerate().rev() {
            let v = format_ident!("v{i}");
            match op {
                Operand::Int(e, 1) => {
                    code.push("push 0".to_string());
                    code.push(format!("movzx r11d, {{v{i}}}"));
                    code.push("push r11".to_string());
                    operands.push(quote!(#v = in(reg_byte) #e));
                }
                Operand::Int(e, _) | Operand::Size(e, _) => {
                    code.push("push 0".to_string());
                    code.push(format!("push {{v{i}:r}}"));
                    operands.push(quote!(#v = in(reg) #e));
                }
                Operand::Float(e, _) => {
                    code.push("push 0".to_string());
                    code.push("sub rsp, 8".to_string());
                    code.push(format!("movq qword ptr [rsp], {{v{i}}}"));
                    operands.push(quote!(#v = in(xmm_reg) #e));
                }
                Operand::ReadDyn(e, reader) => {
                    let r = format_ident!("r{i}");
                    code.push(format!("push {{r{i}:r}}"));
                    code.push(format!("push {{v{i}:r}}"));
                    operands.push(quote!(#v = in(reg) #e));
                    operands.push(quote!(#r = in(reg) #reader));
                }
                Operand::Read(e, reader) => {
                    let r = format_ident!("r{i}");
                    code.push(format!("lea r11, [rip + {{r{i}}}]"));
                    code.push("push r11".to_string());
                    code.push(format!("push {{v{i}:r}}"));
                    operands.push(quote!(#v = in(reg) #e));
                    operands.push(quote!(#r = sym #reader));
                }
            }
        }
        let n = self.ops.len();
        code.push(format!("push {n}"));
        code.push("lea r11, [rip + 4f]".to_string());
        code.push(format!("call {tramp}"));
        code.push(format!("lea rsp, [rsp + {}]", 8 * (2 * n + 1)));
        code.push("ret".to_string());
        (code.join("\n"), operands)
    }

    /// AArch64: reached by the pad's `BL` (`x30`: the pad's successor;
    /// `x9`: the function's own `x30`, saved by the pad head; `x16` free).
    /// The block is stored below the stack pointer (16-aligned), `x30`
    /// in its last 8 bytes; the stub calls the trampoline with the record
    /// in `x16`, which returns with `x30` = `x9`, and returns to the pad
    /// with `ret x16`. A value the compiler put in `x30` is read from `x9`
    /// (the `BL` replaced it; the pad head had copied it).
    fn stub_aarch64(&self, tramp: &str) -> (String, Vec<TokenStream2>) {
        let n = self.ops.len();
        let size = 16 * (n + 1);
        let mut code = vec![
            format!("sub sp, sp, #{size}"),
            format!("str x30, [sp, #{}]", size - 8),
            format!("mov x16, #{n}"),
            "str x16, [sp]".to_string(),
        ];
        let mut operands = Vec::new();
        // Store register `{name:x}` at `off`, from x9 if it is x30.
        let store = |code: &mut Vec<String>, name: &str, off: usize| {
            code.push(format!(".ifc {{{name}:x}},x30"));
            code.push(format!("str x9, [sp, #{off}]"));
            code.push(".else".to_string());
            code.push(format!("str {{{name}:x}}, [sp, #{off}]"));
            code.push(".endif".to_string());
        };
        for (i, op) in self.ops.iter().enumerate() {
            let v = format_ident!("v{i}");
            let off = 8 + 16 * i;
            match op {
                Operand::Int(e, _) | Operand::Size(e, _) => {
                    store(&mut code, &format!("v{i}"), off);
                    code.push(format!("str xzr, [sp, #{}]", off + 8));
                    operands.push(self.operand(i, quote!(reg), e));
                }
                Operand::Float(e, 4) => {
                    code.push(format!("str {{v{i}:s}}, [sp, #{off}]"));
                    code.push(format!("str wzr, [sp, #{}]", off + 4));
                    code.push(format!("str xzr, [sp, #{}]", off + 8));
                    operands.push(self.operand(i, quote!(vreg), e));
                }
                Operand::Float(e, _) => {
                    code.push(format!("str {{v{i}:d}}, [sp, #{off}]"));
                    code.push(format!("str xzr, [sp, #{}]", off + 8));
                    operands.push(self.operand(i, quote!(vreg), e));
                }
                Operand::ReadDyn(e, reader) => {
                    let r = format_ident!("r{i}");
                    store(&mut code, &format!("v{i}"), off);
                    store(&mut code, &format!("r{i}"), off + 8);
                    operands.push(quote!(#v = in(reg) #e));
                    operands.push(quote!(#r = in(reg) #reader));
                }
                Operand::Read(e, reader) => {
                    let r = format_ident!("r{i}");
                    store(&mut code, &format!("v{i}"), off);
                    code.push(format!("adrp x16, {{r{i}}}"));
                    code.push(format!("add x16, x16, :lo12:{{r{i}}}"));
                    code.push(format!("str x16, [sp, #{}]", off + 8));
                    operands.push(quote!(#v = in(reg) #e));
                    operands.push(quote!(#r = sym #reader));
                }
            }
        }
        code.extend([
            "adrp x16, 4f".to_string(),
            "add x16, x16, :lo12:4f".to_string(),
            format!("bl {tramp}"),
            format!("ldr x16, [sp, #{}]", size - 8),
            format!("add sp, sp, #{size}"),
            "ret x16".to_string(),
        ]);
        (code.join("\n"), operands)
    }

    /// ARMv7 (the same text for Thumb-2 and A32: `{pcb}` is the pad
    /// macro's PC bias, 4 or 8): reached by the pad's `BL` (`lr`: the
    /// pad's successor; `r12` free, `lr` and `r12` are the pad's
    /// clobbers). The block is stored below the stack pointer (8-aligned),
    /// `lr` in its last 8 bytes; the stub calls the trampoline with the
    /// record in `r12` and returns to the pad with `bx lr`. Readers'
    /// addresses are PC-relative words after the code (Thumb ones carry
    /// bit 0 from the relocation).
    fn stub_arm(&self, tramp: &str) -> (String, Vec<TokenStream2>) {
        let n = self.ops.len();
        let size = 16 * (n + 1);
        let mut code = vec![
            format!("sub sp, sp, #{size}"),
            format!("str lr, [sp, #{}]", size - 8),
            format!("mov r12, #{n}"),
            "str r12, [sp]".to_string(),
            "mov r12, #0".to_string(),
        ];
        let mut pool = Vec::new();
        let mut operands = Vec::new();
        // r12 into `r12` the address `.word` `label` holds (PC-relative).
        let pcrel = |code: &mut Vec<String>, lit: usize, at: usize| {
            code.push(format!("ldr r12, {lit}f"));
            code.push(format!("{at}:"));
            code.push(".if {pcb} == 4".to_string());
            code.push("add r12, pc".to_string());
            code.push(".else".to_string());
            code.push("add r12, pc, r12".to_string());
            code.push(".endif".to_string());
        };
        for (i, op) in self.ops.iter().enumerate() {
            let v = format_ident!("v{i}");
            let off = 8 + 16 * i;
            let mut reader_zero = true;
            match op {
                Operand::Int(e, 8) => {
                    let h = format_ident!("h{i}");
                    code.push(format!("str {{v{i}}}, [sp, #{off}]"));
                    code.push(format!("str {{h{i}}}, [sp, #{}]", off + 4));
                    if let Some(Some(_)) = self.places.get(i) {
                        // Its halves' shadows (see `shadows`).
                        let (lo, hi) = halves(i);
                        operands.push(quote!(#v = inout(reg) #lo));
                        operands.push(quote!(#h = inout(reg) #hi));
                    } else {
                        operands.push(quote!(#v = in(reg) (#e as u64) as u32));
                        operands.push(quote!(#h = in(reg) ((#e as u64) >> 32) as u32));
                    }
                }
                Operand::Int(e, _) | Operand::Size(e, false) => {
                    code.push(format!("str {{v{i}}}, [sp, #{off}]"));
                    code.push(format!("str r12, [sp, #{}]", off + 4));
                    operands.push(self.operand(i, quote!(reg), e));
                }
                Operand::Size(e, true) => {
                    code.push(format!("str {{v{i}}}, [sp, #{off}]"));
                    code.push(format!("asr r12, {{v{i}}}, #31"));
                    code.push(format!("str r12, [sp, #{}]", off + 4));
                    code.push("mov r12, #0".to_string());
                    operands.push(self.operand(i, quote!(reg), e));
                }
                Operand::Float(e, 4) => {
                    code.push(format!("vstr {{v{i}}}, [sp, #{off}]"));
                    code.push(format!("str r12, [sp, #{}]", off + 4));
                    operands.push(self.operand(i, quote!(sreg), e));
                }
                Operand::Float(e, _) => {
                    code.push(format!("vstr {{v{i}}}, [sp, #{off}]"));
                    operands.push(self.operand(i, quote!(dreg_low16), e));
                }
                Operand::ReadDyn(e, reader) => {
                    let r = format_ident!("r{i}");
                    code.push(format!("str {{v{i}}}, [sp, #{off}]"));
                    code.push(format!("str r12, [sp, #{}]", off + 4));
                    code.push(format!("str {{r{i}}}, [sp, #{}]", off + 8));
                    code.push(format!("str r12, [sp, #{}]", off + 12));
                    reader_zero = false;
                    operands.push(quote!(#v = in(reg) #e));
                    operands.push(quote!(#r = in(reg) #reader));
                }
                Operand::Read(e, reader) => {
                    let r = format_ident!("r{i}");
                    code.push(format!("str {{v{i}}}, [sp, #{off}]"));
                    code.push(format!("str r12, [sp, #{}]", off + 4));
                    code.push(format!("str r12, [sp, #{}]", off + 12));
                    let (lit, at) = (30 + i, 50 + i);
                    pcrel(&mut code, lit, at);
                    code.push(format!("str r12, [sp, #{}]", off + 8));
                    code.push("mov r12, #0".to_string());
                    pool.push(format!("{lit}: .word {{r{i}}} - {at}b - {{pcb}}"));
                    reader_zero = false;
                    operands.push(quote!(#v = in(reg) #e));
                    operands.push(quote!(#r = sym #reader));
                }
            }
            if reader_zero {
                code.push(format!("str r12, [sp, #{}]", off + 8));
                code.push(format!("str r12, [sp, #{}]", off + 12));
            }
        }
        pcrel(&mut code, 29, 49);
        code.extend([
            format!("bl {tramp}"),
            format!("ldr lr, [sp, #{}]", size - 8),
            format!("add sp, sp, #{size}"),
            "bx lr".to_string(),
            ".p2align 2".to_string(),
            "29: .word 4f - 49b - {pcb}".to_string(),
        ]);
        code.extend(pool);
        (code.join("\n"), operands)
    }

    /// Value `i`'s operand of register class `class` on ARM: `inout` on
    /// its parameter's shadow where it is one (see [`Capture::places`]),
    /// else `in`.
    fn operand(&self, i: usize, class: TokenStream2, e: &TokenStream2) -> TokenStream2 {
        let v = format_ident!("v{i}");
        match self.places.get(i) {
            Some(Some((p, _))) => quote!(#v = inout(#class) #p),
            _ => quote!(#v = in(#class) #e),
        }
    }

    /// The statements before and after the pad that give the ARM pads
    /// their `inout` places: a mutable shadow of each parameter; on ARMv7
    /// a 64-bit one is two 32-bit shadows before, put back together after
    /// (which costs nothing: it stays in its register pair).
    fn shadows(&self, target: Target) -> (TokenStream2, TokenStream2) {
        let (mut before, mut after) = (TokenStream2::new(), TokenStream2::new());
        if target == Target::X86_64 {
            return (before, after);
        }
        let arch = target.arch();
        for (i, (op, place)) in self.ops.iter().zip(&self.places).enumerate() {
            let Some((p, ty)) = place else { continue };
            if target == Target::Arm && matches!(op, Operand::Int(_, 8)) {
                let (lo, hi) = halves(i);
                before.extend(quote! {
                    #[cfg(target_arch = #arch)]
                    let mut #lo = (#p as u64) as u32;
                    #[cfg(target_arch = #arch)]
                    let mut #hi = ((#p as u64) >> 32) as u32;
                });
                after.extend(quote! {
                    #[cfg(target_arch = #arch)]
                    #[allow(unused_mut)]
                    let mut #p = ((#hi as u64) << 32 | #lo as u64) as #ty;
                });
                continue;
            }
            before.extend(quote! {
                #[cfg(target_arch = #arch)]
                #[allow(unused_mut)]
                let mut #p = #p;
            });
        }
        (before, after)
    }

    /// The pad statement: the capturing pad of an entry or an exit
    /// (`exit`) on each target of `caps`, elsewhere the plain one (`plain`).
    pub fn pad(caps: &[(Target, &Capture)], exit: bool, plain: TokenStream2) -> TokenStream2 {
        Self::pad_of(caps, exit, false, plain)
    }

    /// [`Capture::pad`] for an async fn's pads (`tracer_core::site`'s
    /// `KIND_ASYNC_*`), on x86-64 only (elsewhere the plain pad): the
    /// future's token goes in `r10`, as in the plain async pads, from
    /// `__tracer_token`.
    pub fn async_pad(caps: &[(Target, &Capture)], exit: bool, plain: TokenStream2) -> TokenStream2 {
        let x86: Vec<(Target, &Capture)> = caps
            .iter()
            .copied()
            .filter(|(t, _)| *t == Target::X86_64)
            .collect();
        Self::pad_of(&x86, exit, true, plain)
    }

    fn pad_of(
        caps: &[(Target, &Capture)],
        exit: bool,
        is_async: bool,
        plain: TokenStream2,
    ) -> TokenStream2 {
        let (tramp, ctramp, kind) = match (exit, is_async) {
            (false, false) => (
                "__tracer_v1_tramp_entry",
                "__tracer_v1_tramp_entry_args",
                0u32,
            ),
            (true, false) => ("__tracer_v1_tramp_exit", "__tracer_v1_tramp_exit_args", 1),
            (false, true) => (
                "__tracer_v1_tramp_entry",
                "__tracer_v1_tramp_async_entry_args",
                0,
            ),
            (true, true) => (
                "__tracer_v1_tramp_exit",
                "__tracer_v1_tramp_async_exit_args",
                1,
            ),
        };
        // KIND_ASYNC_ENTRY = 2, KIND_ASYNC_EXIT = 3.
        let kind = kind + if is_async { 2 } else { 0 };
        let mut out = TokenStream2::new();
        let mut archs = Vec::new();
        for (target, cap) in caps {
            let (code, mut operands) = cap.stub(*target, ctramp);
            if is_async {
                // x86-64 only (see `async_pad`).
                operands.push(quote!(in("r10") __tracer_token));
            }
            let arch = target.arch();
            archs.push(arch);
            let (before, after) = cap.shadows(*target);
            out.extend(quote! {
                #before
                // SAFETY: the pad is a no-op until enabled; enabled, it calls
                // one of the tracer's stubs, which preserve every register
                // but the pad macro's clobbers.
                #[cfg(target_arch = #arch)]
                #[allow(unused_unsafe)]
                unsafe {
                    ::tracer::__private::capture_pad!(
                        __TRACER_DESC,
                        #kind | ::tracer::__private::FLAG_CAPTURE_STUB,
                        #tramp,
                        #code
                        #(, #operands)*
                    );
                }
                #after
            });
        }
        out.extend(quote! {
            #[cfg(not(any(#(target_arch = #archs),*)))]
            #plain
        });
        out
    }
}
