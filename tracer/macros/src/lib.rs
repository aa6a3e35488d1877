//! `#[traceable]`: the attribute that gives a function a tracer pad.
//!
//! Use it through the `tracer` crate (`#[tracer::traceable]`); the generated
//! code names only `::tracer::__private::…` paths.
#![deny(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::ItemFn;

/// Make a function traceable.
///
/// The function gets an entry pad and an exit pad (in the drop of a guard, so
/// the exit is seen on `return`, on `?` and while a panic unwinds through it).
/// While disabled, each pad is one no-op instruction and nothing else. Works on
/// free functions, inherent and trait methods, generic functions (every
/// instantiation is a site of the same function) and `async fn` (the entry is
/// the first poll, the exit the completion or the drop of the future).
///
/// ```ignore
/// #[tracer::traceable]
/// fn parse(input: &str) -> Result<u32, std::num::ParseIntError> {
///     input.trim().parse()
/// }
/// ```
///
/// It rejects what it cannot trace with a compile error: `const fn` (it may
/// run at compile time, where there is no pad) and functions without a body.
#[proc_macro_attribute]
pub fn traceable(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = TokenStream2::from(attr);
    if !attr.is_empty() {
        return syn::Error::new(
            attr.span(),
            "#[traceable] takes no arguments: write #[tracer::traceable]",
        )
        .to_compile_error()
        .into();
    }
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
    match expand(f) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(f: ItemFn) -> syn::Result<TokenStream2> {
    let sig = &f.sig;
    if let Some(c) = &sig.constness {
        return Err(syn::Error::new(
            c.span(),
            "#[traceable] cannot trace a `const fn`: it may run at compile time, where there \
             is no pad to patch; remove `const` or the attribute",
        ));
    }
    let ident_str = sig.ident.to_string();
    let attrs = &f.attrs;
    let vis = &f.vis;
    let block = &f.block;
    let span = Span::call_site();

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
        };
    };

    let body = if sig.asyncness.is_some() {
        quote_spanned! {span=>
            #items
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
            let mut __tracer_guard = __TracerAsyncGuard(0);
            {
                let __tracer_token = &mut __tracer_guard.0 as *mut u64 as usize;
                // SAFETY: as above.
                #[allow(unused_unsafe)]
                unsafe { ::tracer::__private::async_entry_pad!(__TRACER_DESC, __tracer_token); }
            }
            #block
        }
    } else {
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
            // SAFETY: as above.
            #[allow(unused_unsafe)]
            unsafe { ::tracer::__private::entry_pad!(__TRACER_DESC); }
            let __tracer_guard = __TracerGuard;
            #block
        }
    };
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #body
        }
    })
}
