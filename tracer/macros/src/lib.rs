//! `#[traceable]`: the attribute that gives a function a tracer pad.
//!
//! Use it through the `tracer` crate (`#[tracer::traceable]`); the generated
//! code names only `::tracer::__private::…` paths.
#![deny(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{AttrStyle, Attribute, Block, Expr, ExprAsync, ExprCall, Item, ItemFn, Stmt};

mod capture;

/// Make a function traceable.
///
/// The function gets an entry pad and an exit pad (in the drop of a guard, so
/// the exit is seen on `return`, on `?` and while a panic unwinds through it).
/// While disabled, each pad is one no-op instruction and nothing else. Works on
/// free functions, inherent and trait methods, generic functions (every
/// instantiation is a site of the same function) and `async fn` (the entry is
/// the first poll, the exit the completion or the drop of the future).
///
/// Functions that return a future without being `async fn` are timed the
/// same way, from the future's first poll to its completion or drop, when
/// their last expression builds the future in one of the shapes
/// `tracing::instrument` recognises:
///
/// - `Box::pin(async move { … })`, which is what `#[async_trait]` makes of an
///   `async fn` in a trait or impl (it runs before `#[traceable]`, so this is
///   the shape the attribute sees, in whichever order they are written);
/// - a bare `async { … }` / `async move { … }` block;
/// - `Box::pin(inner(…))` where `inner` is an `async fn` declared in the same
///   body (the expansion of async-trait 0.1.43 and older).
///
/// Any other `fn` returning a future (`fn f() -> impl Future`, or
/// `-> Pin<Box<dyn Future>>`, whose body returns, say, `other(x)` or
/// `future.map(…)`) is an ordinary function to the attribute: the call timed
/// is the **construction** of the future, not its execution. Write it as an
/// `async fn`, or end it with an `async move` block, to time the execution.
///
/// Inner attributes at the top of the body (`#![allow(unused_variables)]`)
/// stay inner attributes of the body.
///
/// ```ignore
/// #[tracer::traceable]
/// fn parse(input: &str) -> Result<u32, std::num::ParseIntError> {
///     input.trim().parse()
/// }
/// ```
///
/// **Values.** Enabled with `--args`/`--retval` (`tracer::enable_with`),
/// the pads capture the parameters the macro can show (integers, floats,
/// `bool`, `char`, pointers and references as addresses, lengths of `&str`
/// and slices, and of `String`/`Vec` passed by value) and a return value of
/// those kinds, as operands of the pads' `asm!` blocks: they are in
/// registers at the pads already, so a disabled pad costs what it did. A
/// `Result`, `Option`, `String` or `Vec` return value would have to be
/// handed over by address (a store and a load in every call, enabled or
/// not): `#[tracer::traceable(values)]` (or its older name `ret`) asks for
/// that; without it such a return value is not captured.
///
/// An `async fn`'s values are captured only with
/// `#[tracer::traceable(values)]`: at its first poll its parameters live
/// in the future, not in registers, so handing them to the entry pad costs
/// loads even while disabled, and its return value is taken when the body
/// (run as an inner `async move` block) completes, which costs every poll
/// a nested future. The arguments come with the entry at the first poll,
/// the return value with the exit at completion (a future dropped
/// unfinished has an exit without one).
///
/// It rejects what it cannot trace with a compile error: `const fn` (it may
/// run at compile time, where there is no pad) and functions without a body.
#[proc_macro_attribute]
pub fn traceable(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = TokenStream2::from(attr);
    // `values` (`ret`): also capture what costs the disabled function
    // something: return values the exit pad takes by address, an async fn's
    // values.
    let by_address = match attr.to_string().as_str() {
        "" => false,
        "values" | "ret" => true,
        _ => {
            return syn::Error::new(
                attr.span(),
                "#[traceable] takes no arguments but `values`: write #[tracer::traceable], or \
                 #[tracer::traceable(values)] to capture a Result, Option, String or Vec return \
                 value too (its exit pad then takes the value by address, which costs the \
                 disabled pad a store and a load) and an async fn's arguments and return value",
            )
            .to_compile_error()
            .into();
        }
    };
    let item2 = TokenStream2::from(item.clone());
    let f = match syn::parse2::<ItemFn>(item2) {
        Ok(f) => f,
        Err(_) => {
            // A function without a body (a trait's required method) or not a function.
            let probe = TokenStream2::from(item);
            return syn::Error::new(
                probe.span(),
                "#[traceable] goes on a function with a body (free function, method, \
                 trait method with a default body, or async fn)",
            )
            .to_compile_error()
            .into();
        }
    };
    match expand(f, by_address) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(f: ItemFn, by_address: bool) -> syn::Result<TokenStream2> {
    let sig = &f.sig;
    if let Some(c) = &sig.constness {
        return Err(syn::Error::new(
            c.span(),
            "#[traceable] cannot trace a `const fn`: it may run at compile time, where there \
             is no pad to patch; remove `const` or the attribute",
        ));
    }
    let ident_str = sig.ident.to_string();
    // syn puts the body's inner attributes (`#![allow(unused_variables)]` as
    // the first thing in the body) into `f.attrs` with `AttrStyle::Inner`.
    // Re-emitted before the fn they would be rejected ("an inner attribute is
    // not permitted in this context"), so they go back where they were: at the
    // top of the generated body. An inner attribute of a fn body applies to the
    // whole fn, and the generated body *is* that fn's body, so the meaning is
    // unchanged (it now covers the generated pads too, which only matters for
    // lints, and the generated code is lint-clean).
    let (outer, inner): (Vec<&Attribute>, Vec<&Attribute>) = f
        .attrs
        .iter()
        .partition(|a| matches!(a.style, AttrStyle::Outer));
    let vis = &f.vis;
    let span = Span::call_site();

    // What the pads capture: a synchronous function's values are in
    // registers at its pads; an async fn's are in its future, so they are
    // captured only when asked for (`values`). Functions that build the
    // future they return (`#[async_trait]`) capture nothing.
    let plain_sync = sig.asyncness.is_none() && future_tail(&f.block).is_none();
    let async_values = sig.asyncness.is_some() && by_address;
    // A `#[track_caller]` body must not move into a closure (its panics
    // would name the closure's caller): no return value there.
    let track_caller = f.attrs.iter().any(|a| a.path().is_ident("track_caller"));
    // Each target's view: which parameters are in registers at the pad.
    let per_target: Vec<(capture::Target, String, capture::Capture)> = capture::Target::ALL
        .iter()
        .map(|&t| {
            let (text, cap) = capture::params(sig, t);
            (t, text, cap)
        })
        .collect();
    let ret = if (plain_sync || async_values) && !track_caller {
        capture::ret(sig, by_address)
    } else {
        None
    };
    // An async fn's values are captured on x86-64 only.
    let sig_texts: Vec<String> = per_target
        .iter()
        .map(|(t, param_text, _)| {
            if plain_sync || (async_values && *t == capture::Target::X86_64) {
                let mut t = param_text.clone();
                if let Some((r, _, _)) = &ret {
                    t.push_str(r);
                }
                t
            } else {
                String::new()
            }
        })
        .collect();
    // One text when the targets agree; else the target's, chosen at compile time.
    let sig_text = if sig_texts.iter().all(|t| *t == sig_texts[0]) {
        let t = &sig_texts[0];
        quote!(#t)
    } else {
        let (x86, a64, arm) = (&sig_texts[0], &sig_texts[1], &sig_texts[2]);
        quote! {
            if ::core::cfg!(target_arch = "aarch64") {
                #a64
            } else if ::core::cfg!(target_arch = "arm") {
                #arm
            } else {
                #x86
            }
        }
    };

    let items = quote_spanned! {span=>
        #[doc(hidden)]
        fn __tracer_path() -> &'static str {
            ::tracer::__private::clean_path(::core::any::type_name_of_val(&__tracer_path))
        }
        #[doc(hidden)]
        static __TRACER_DESC: ::tracer::__private::FnDesc = ::tracer::__private::FnDesc {
            path: __tracer_path,
            ident: #ident_str,
            file: ::core::file!(),
            line: ::core::line!(),
            sig: #sig_text,
        };
    };

    let body = if sig.asyncness.is_some() && async_values {
        let guard = async_guard_item(span);
        let plain_entry = async_entry_pad(span);
        let entry = if sig.inputs.is_empty() {
            plain_entry
        } else {
            let caps: Vec<(capture::Target, &capture::Capture)> =
                per_target.iter().map(|(t, _, c)| (*t, c)).collect();
            capture::Capture::async_pad(&caps, false, plain_entry)
        };
        let block = &f.block;
        let run = match &ret {
            None => quote_spanned! {span=> #block },
            Some((_, ty, cap)) => {
                let plain_exit = quote_spanned! {span=>
                    // SAFETY: as the entry pad.
                    #[allow(unused_unsafe)]
                    unsafe { ::tracer::__private::async_exit_pad!(__TRACER_DESC, __tracer_token); }
                };
                let caps: Vec<(capture::Target, &capture::Capture)> =
                    capture::Target::ALL.iter().map(|&t| (t, cap)).collect();
                let exit = capture::Capture::async_pad(&caps, true, plain_exit);
                // The body runs in an inner future so that its `return`s
                // and `?`s come back here, where the value goes to the exit
                // pad; the guard stays for a future dropped unfinished.
                quote_spanned! {span=>
                    let __tracer_ret: #ty =
                        ::tracer::__private::async_once::<#ty, _>(async move #block).await;
                    let __tracer_token = &mut __tracer_guard.0 as *mut u64 as usize;
                    #exit
                    ::core::mem::forget(__tracer_guard);
                    __tracer_ret
                }
            }
        };
        quote_spanned! {span=>
            #items
            #guard
            let mut __tracer_guard = __TracerAsyncGuard(0);
            {
                let __tracer_token = &mut __tracer_guard.0 as *mut u64 as usize;
                #entry
            }
            #run
        }
    } else if sig.asyncness.is_some() {
        let guard = async_guard_item(span);
        let prologue = async_prologue(span);
        let block = &f.block;
        quote_spanned! {span=>
            #items
            #guard
            #prologue
            #block
        }
    } else if let Some(tail) = future_tail(&f.block) {
        // A fn that returns a future it builds in its tail: `#[async_trait]`'s
        // expansion (`Box::pin(async move { … })`), a bare `async` block, or
        // the immediately-called inner `async fn` of async-trait ≤ 0.1.43.
        // The future is what the call means, so the pads go into it (entry at
        // its first poll, exit at its completion or drop), exactly as for an
        // `async fn`; the items stay in the fn, so the path is the method's.
        let guard = async_guard_item(span);
        let stmts = rewrite_tail(&f.block, tail, span);
        quote_spanned! {span=>
            #items
            #guard
            #(#stmts)*
        }
    } else {
        let block = &f.block;
        let plain_entry = quote_spanned! {span=>
            // SAFETY: the pad is a no-op until enabled; enabled, it calls
            // the tracer's stub, which preserves every register but r11.
            #[allow(unused_unsafe)]
            unsafe { ::tracer::__private::entry_pad!(__TRACER_DESC); }
        };
        let entry = if sig.inputs.is_empty() {
            plain_entry
        } else {
            let caps: Vec<(capture::Target, &capture::Capture)> =
                per_target.iter().map(|(t, _, c)| (*t, c)).collect();
            capture::Capture::pad(&caps, false, plain_entry)
        };
        let run = match &ret {
            None => quote_spanned! {span=> #block },
            Some((_, ty, cap)) => {
                let plain_exit = quote_spanned! {span=>
                    // SAFETY: as the entry pad.
                    #[allow(unused_unsafe)]
                    unsafe { ::tracer::__private::exit_pad!(__TRACER_DESC); }
                };
                let caps: Vec<(capture::Target, &capture::Capture)> =
                    capture::Target::ALL.iter().map(|&t| (t, cap)).collect();
                let exit = capture::Capture::pad(&caps, true, plain_exit);
                // The body runs in a closure so that its `return`s and `?`s
                // come back here, where the value goes to the exit pad;
                // the guard stays for the exit of an unwinding panic.
                quote_spanned! {span=>
                    let __tracer_ret: #ty = ::tracer::__private::once(move || -> #ty #block);
                    ::core::mem::forget(__tracer_guard);
                    #exit
                    __tracer_ret
                }
            }
        };
        quote_spanned! {span=>
            #items
            #[doc(hidden)]
            struct __TracerGuard;
            impl ::core::ops::Drop for __TracerGuard {
                #[inline(always)]
                fn drop(&mut self) {
                    // SAFETY: the pad is a no-op until enabled; enabled, it calls
                    // the tracer's stub, which preserves every register but r11.
                    #[allow(unused_unsafe)]
                    unsafe { ::tracer::__private::exit_pad!(__TRACER_DESC); }
                }
            }
            #entry
            let __tracer_guard = __TracerGuard;
            #run
        }
    };
    Ok(quote! {
        #(#outer)*
        #vis #sig {
            #(#inner)*
            #body
        }
    })
}

/// The guard type of an async call: its drop (at completion, or when the
/// future is dropped unfinished) is the exit.
fn async_guard_item(span: Span) -> TokenStream2 {
    quote_spanned! {span=>
        #[doc(hidden)]
        struct __TracerAsyncGuard(u64);
        impl ::core::ops::Drop for __TracerAsyncGuard {
            #[inline(always)]
            fn drop(&mut self) {
                let __tracer_token = &mut self.0 as *mut u64 as usize;
                // SAFETY: the pad is a no-op until enabled; enabled, it calls
                // the tracer's stub, which preserves every register but r11.
                #[allow(unused_unsafe)]
                unsafe { ::tracer::__private::async_exit_pad!(__TRACER_DESC, __tracer_token); }
            }
        }
    }
}

/// The first statements of an async body: the guard (its address, stable
/// once the future is pinned, is the token matching entry and exit across
/// threads) and the entry pad, run at the first poll.
fn async_prologue(span: Span) -> TokenStream2 {
    let entry = async_entry_pad(span);
    quote_spanned! {span=>
        let mut __tracer_guard = __TracerAsyncGuard(0);
        {
            let __tracer_token = &mut __tracer_guard.0 as *mut u64 as usize;
            #entry
        }
    }
}

/// An async fn's plain entry pad, with `__tracer_token` in scope.
fn async_entry_pad(span: Span) -> TokenStream2 {
    quote_spanned! {span=>
        // SAFETY: as in the guard's drop.
        #[allow(unused_unsafe)]
        unsafe { ::tracer::__private::async_entry_pad!(__TRACER_DESC, __tracer_token); }
    }
}

/// Where a non-`async` fn builds the future it returns, in the shapes
/// `tracing::instrument` recognises.
enum FutureTail<'a> {
    /// The tail is `async { … }` (or `async move`), bare or as the argument of
    /// `Box::pin(…)` (async-trait ≥ 0.1.44).
    Block { stmt: usize, block: &'a ExprAsync },
    /// The tail is `Box::pin(inner(…))` where `inner` is an `async fn`
    /// declared in the same body (async-trait ≤ 0.1.43).
    Function { item: usize },
}

fn future_tail(block: &Block) -> Option<FutureTail<'_>> {
    // The tail: the last statement that is an expression without `;`
    // (items may follow it).
    let (stmt, tail) = block
        .stmts
        .iter()
        .enumerate()
        .rev()
        .find(|(_, s)| !matches!(s, Stmt::Item(_)))
        .and_then(|(i, s)| match s {
            Stmt::Expr(e, None) => Some((i, e)),
            _ => None,
        })?;
    let arg = match tail {
        Expr::Async(a) => return Some(FutureTail::Block { stmt, block: a }),
        Expr::Call(ExprCall { func, args, .. }) if args.len() == 1 && is_box_pin(func) => &args[0],
        _ => return None,
    };
    match arg {
        Expr::Async(a) => Some(FutureTail::Block { stmt, block: a }),
        Expr::Call(ExprCall { func, .. }) => {
            let Expr::Path(p) = &**func else { return None };
            let name = p.path.get_ident()?;
            block
                .stmts
                .iter()
                .position(|s| {
                    matches!(s, Stmt::Item(Item::Fn(inner))
                    if inner.sig.asyncness.is_some() && inner.sig.ident == *name)
                })
                .map(|item| FutureTail::Function { item })
        }
        _ => None,
    }
}

/// `Box::pin`, however qualified (`::std::boxed::Box::pin`, …).
fn is_box_pin(func: &Expr) -> bool {
    let Expr::Path(p) = func else { return false };
    let segs: Vec<_> = p.path.segments.iter().map(|s| &s.ident).collect();
    segs.len() >= 2 && segs[segs.len() - 1] == "pin" && segs[segs.len() - 2] == "Box"
}

/// The body's statements with the async prologue put at the top of the
/// future's body.
fn rewrite_tail(block: &Block, tail: FutureTail<'_>, span: Span) -> Vec<TokenStream2> {
    let prologue = async_prologue(span);
    let mut out: Vec<TokenStream2> = block.stmts.iter().map(|s| s.to_token_stream()).collect();
    match tail {
        FutureTail::Block { stmt, block: a } => {
            let ExprAsync {
                attrs,
                async_token,
                capture,
                block: inner,
            } = a;
            let (a_outer, a_inner): (Vec<&Attribute>, Vec<&Attribute>) = attrs
                .iter()
                .partition(|a| matches!(a.style, AttrStyle::Outer));
            // The block's statements are spliced after the prologue rather
            // than nested as a block: a nested `{ x + 1 }` in tail position
            // would draw `unused_braces` on the user's code.
            let inner = &inner.stmts;
            let new_async = quote! {
                #(#a_outer)* #async_token #capture {
                    #(#a_inner)*
                    #prologue
                    #(#inner)*
                }
            };
            // Replace the async block inside the tail expression (bare or in
            // `Box::pin(…)`), leaving the rest of the expression as it is.
            let Stmt::Expr(e, _) = &block.stmts[stmt] else {
                unreachable!("future_tail returns an expression statement")
            };
            out[stmt] = match e {
                Expr::Call(ExprCall { attrs, func, .. }) => quote! { #(#attrs)* #func(#new_async) },
                _ => new_async,
            };
        }
        FutureTail::Function { item } => {
            let Stmt::Item(Item::Fn(inner)) = &block.stmts[item] else {
                unreachable!("future_tail returns an async fn item")
            };
            let (i_outer, i_inner): (Vec<&Attribute>, Vec<&Attribute>) = inner
                .attrs
                .iter()
                .partition(|a| matches!(a.style, AttrStyle::Outer));
            let (vis, sig, body) = (&inner.vis, &inner.sig, &inner.block);
            out[item] = quote! {
                #(#i_outer)*
                #vis #sig {
                    #(#i_inner)*
                    #prologue
                    #body
                }
            };
        }
    }
    out
}
