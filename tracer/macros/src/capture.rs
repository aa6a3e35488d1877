//! Argument and return-value capture at `#[traceable]` pads (x86-64).
//!
//! The macro knows each parameter's name and type (as written). Values of
//! the kinds it can show (integers, floats, `bool`, `char`, raw pointers and
//! references as addresses, the length of `&str`, slices, `String` and
//! `Vec`) become operands of the entry pad's `asm!` block, which are in
//! registers at the top of the body already; the block emits a second,
//! *capturing* stub that pushes them and calls the capturing trampoline.
//! The runtime picks that stub only for functions enabled with capture, so
//! the disabled pad and the plain stub are what they were. The return value
//! goes to a second exit pad the same way. The text the reader names and
//! types the values by (`FnDesc::sig`) is `tracer_core::capture::TraceableSig`'s.

use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote, ToTokens};
use syn::{FnArg, GenericArgument, Pat, PathArguments, ReturnType, Signature, Type};

/// Most values one pad captures (`tracer_core::site::MAX_TRACEABLE_VALUES`).
const MAX_VALUES: usize = 16;

/// Integer argument registers (x86-64: rdi rsi rdx rcx r8 r9).
const INT_REGS: usize = 6;
/// Vector argument registers (xmm0–xmm7).
const FLOAT_REGS: usize = 8;

/// The argument registers a parameter of type `ty` takes: (integer,
/// vector). Fat references and pointers take two; structs are guessed at
/// one (a pointer, or up to 8 bytes), which is only a guess: a wrong one
/// costs the capture of a later value, or a load before the pad.
fn slots(ty: &Type) -> (usize, usize) {
    if let Some(k) = primitive(ty) {
        return match k {
            Kind::Float(_) => (0, 1),
            _ => (1, 0),
        };
    }
    let fat = |t: &Type| match t {
        Type::Slice(_) | Type::TraitObject(_) => true,
        Type::Path(p) => p.path.is_ident("str"),
        _ => false,
    };
    match ty {
        Type::Paren(p) => slots(&p.elem),
        Type::Group(g) => slots(&g.elem),
        Type::Reference(r) if fat(&r.elem) => (2, 0),
        Type::Ptr(p) if fat(&p.elem) => (2, 0),
        Type::Path(p) if p.path.is_ident("i128") || p.path.is_ident("u128") => (2, 0),
        Type::Tuple(t) if t.elems.is_empty() => (0, 0),
        _ => (1, 0),
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

/// How one value reaches the capturing stub.
enum Operand {
    /// A general register (the whole register is pushed; the reader masks
    /// it to the type's width).
    Reg(TokenStream2),
    /// A byte register (`u8`, `i8`, `bool`).
    Byte(TokenStream2),
    /// An `xmm` register (`f32`, `f64`).
    Xmm(TokenStream2),
    /// An address, and the reader the hook calls with it (a `sym`).
    Read(TokenStream2, TokenStream2),
    /// An address, and the reader as a value: for types with references,
    /// which cannot be named in a `sym` (their lifetimes would have to be
    /// made `'static`, which a generic type may not satisfy). Costs the
    /// reader's address (one `lea`) before the pad.
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
        let op = match k {
            Kind::Int(1) | Kind::Uint(1) => Operand::Byte(quote!(#value)),
            Kind::Bool => Operand::Byte(quote!(#value as u8)),
            Kind::Char => Operand::Reg(quote!(#value as u32)),
            Kind::Float(_) => Operand::Xmm(quote!(#value)),
            _ => Operand::Reg(quote!(#value)),
        };
        return (k, Some(op));
    }
    match ty {
        Type::Paren(p) => classify(&p.elem, value),
        Type::Group(g) => classify(&g.elem, value),
        Type::Ptr(_) => (
            Kind::Ptr,
            Some(Operand::Reg(
                quote!(#value as *const _ as *const () as usize),
            )),
        ),
        Type::Reference(r) => {
            let is_str = matches!(&*r.elem, Type::Path(p) if p.path.is_ident("str"));
            if is_str || matches!(&*r.elem, Type::Slice(_)) {
                (Kind::Len, Some(Operand::Reg(quote!(#value.len()))))
            } else {
                (
                    Kind::Ptr,
                    Some(Operand::Reg(
                        quote!((&*#value) as *const _ as *const () as usize),
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

/// The parameters: the signature lines, and the values captured.
pub fn params(sig: &Signature) -> (String, Capture) {
    let mut text = String::new();
    let mut ops = Vec::new();
    let (mut ints, mut floats) = (0usize, 0usize);
    for arg in &sig.inputs {
        let (name, ty_text, kind, op) = match arg {
            FnArg::Receiver(r) => {
                let ty = &*r.ty;
                if r.reference.is_some() {
                    (
                        "self".to_string(),
                        type_text(ty),
                        Kind::Ptr,
                        Some(Operand::Reg(quote!(
                            (&*self) as *const Self as *const () as usize
                        ))),
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
                (text_name, type_text(&pt.ty), kind, op)
            }
        };
        // Only values in argument registers at the pad are taken: one on
        // the stack would cost a load in the disabled pad. The x86-64
        // convention (which the Rust ABI follows for these kinds) has 6
        // integer and 8 vector argument registers; the count of integer
        // ones a parameter takes is estimated from its type.
        let (n_int, n_float) = match arg {
            FnArg::Receiver(_) => (1, 0),
            FnArg::Typed(pt) => slots(&pt.ty),
        };
        ints += n_int;
        floats += n_float;
        let (kind, op) = if ops.len() >= MAX_VALUES || ints > INT_REGS || floats > FLOAT_REGS {
            (Kind::Opaque, None)
        } else {
            (kind, op)
        };
        text.push_str(&format!("{name}:{}:{ty_text}\n", kind.token()));
        if let Some(op) = op {
            ops.push(op);
        }
    }
    (text, Capture { ops })
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
                Capture { ops: vec![op] },
            ));
        }
    }
    match classify(ty, &value) {
        (Kind::Opaque, _) | (_, None) => None,
        (_, Some(Operand::Read(..) | Operand::ReadDyn(..))) if !by_address => None,
        (k, Some(op)) => Some((
            format!("->{}:{text}\n", k.token()),
            (**ty).clone(),
            Capture { ops: vec![op] },
        )),
    }
}

impl Capture {
    /// The capturing stub's code, calling `tramp`, and the operands.
    fn stub(&self, tramp: &str) -> (String, Vec<TokenStream2>) {
        let mut code = Vec::new();
        let mut operands = Vec::new();
        for (i, op) in self.ops.iter().enumerate().rev() {
            let v = format_ident!("v{i}");
            match op {
                Operand::Reg(e) => {
                    code.push("push 0".to_string());
                    code.push(format!("push {{v{i}:r}}"));
                    operands.push(quote!(#v = in(reg) #e));
                }
                Operand::Byte(e) => {
                    code.push("push 0".to_string());
                    code.push(format!("movzx r11d, {{v{i}}}"));
                    code.push("push r11".to_string());
                    operands.push(quote!(#v = in(reg_byte) #e));
                }
                Operand::Xmm(e) => {
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

    /// The pad statement: on x86-64 the capturing pad of an entry or an
    /// exit (`exit`), elsewhere the plain one (`plain`).
    pub fn pad(&self, exit: bool, plain: TokenStream2) -> TokenStream2 {
        self.pad_of(exit, false, plain)
    }

    /// [`Capture::pad`] for an async fn's pads (`tracer_core::site`'s
    /// `KIND_ASYNC_*`): the future's token goes in `r10`, as in the plain
    /// async pads, from `__tracer_token`.
    pub fn async_pad(&self, exit: bool, plain: TokenStream2) -> TokenStream2 {
        self.pad_of(exit, true, plain)
    }

    fn pad_of(&self, exit: bool, is_async: bool, plain: TokenStream2) -> TokenStream2 {
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
        let (code, mut operands) = self.stub(ctramp);
        if is_async {
            operands.push(quote!(in("r10") __tracer_token));
        }
        quote! {
            // SAFETY: the pad is a no-op until enabled; enabled, it calls one
            // of the tracer's stubs, which preserve every register but r11.
            #[cfg(target_arch = "x86_64")]
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
            #[cfg(not(target_arch = "x86_64"))]
            #plain
        }
    }
}
