//! Used by the code `#[traceable]` generates. Not a public API.

pub use tracer_core::site::{clean_path, FnDesc};

pub use crate::arch::{async_entry_pad, async_exit_pad, capture_pad, entry_pad, exit_pad};
pub use tracer_core::site::FLAG_CAPTURE_STUB;

/// Values `#[traceable]` captures through a reader (in the capturing
/// path only: the pad hands over the value's address, and the hook calls
/// the reader with it).
pub mod values {
    /// A value shown as itself (integers, floats by their bits, `bool`, `char`).
    pub trait Scalar {
        /// The value as one word.
        fn word(&self) -> u64;
    }
    macro_rules! scalar {
        ($($t:ty),*) => { $(impl Scalar for $t {
            #[inline]
            fn word(&self) -> u64 { *self as u64 }
        })* };
    }
    scalar!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);
    impl Scalar for bool {
        #[inline]
        fn word(&self) -> u64 {
            u64::from(*self)
        }
    }
    impl Scalar for char {
        #[inline]
        fn word(&self) -> u64 {
            u64::from(u32::from(*self))
        }
    }
    impl Scalar for f32 {
        #[inline]
        fn word(&self) -> u64 {
            u64::from(self.to_bits())
        }
    }
    impl Scalar for f64 {
        #[inline]
        fn word(&self) -> u64 {
            self.to_bits()
        }
    }

    /// A value shown as an address (references, raw pointers).
    pub trait Address {
        /// The address.
        fn addr(&self) -> u64;
    }
    impl<T: ?Sized> Address for &T {
        #[inline]
        fn addr(&self) -> u64 {
            *self as *const T as *const () as usize as u64
        }
    }
    impl<T: ?Sized> Address for &mut T {
        #[inline]
        fn addr(&self) -> u64 {
            &**self as *const T as *const () as usize as u64
        }
    }
    impl<T: ?Sized> Address for *const T {
        #[inline]
        fn addr(&self) -> u64 {
            *self as *const () as usize as u64
        }
    }
    impl<T: ?Sized> Address for *mut T {
        #[inline]
        fn addr(&self) -> u64 {
            *self as *const () as usize as u64
        }
    }

    /// A value shown by its length (`&str`, slices, `String`, `Vec`).
    pub trait Length {
        /// The length.
        fn length(&self) -> u64;
    }
    impl Length for &str {
        #[inline]
        fn length(&self) -> u64 {
            self.len() as u64
        }
    }
    impl Length for &mut str {
        #[inline]
        fn length(&self) -> u64 {
            self.len() as u64
        }
    }
    impl<T> Length for &[T] {
        #[inline]
        fn length(&self) -> u64 {
            self.len() as u64
        }
    }
    impl<T> Length for &mut [T] {
        #[inline]
        fn length(&self) -> u64 {
            self.len() as u64
        }
    }
    impl Length for String {
        #[inline]
        fn length(&self) -> u64 {
            self.len() as u64
        }
    }
    impl<T> Length for Vec<T> {
        #[inline]
        fn length(&self) -> u64 {
            self.len() as u64
        }
    }

    /// How a payload is shown: [`V`] (a scalar), [`A`] (an address), [`L`]
    /// (a length), [`N`] (by name only).
    pub trait Pick<T: ?Sized> {
        /// The payload's word.
        fn pick(t: &T) -> u64;
    }
    /// A scalar payload.
    pub struct V;
    /// An address payload.
    pub struct A;
    /// A length payload.
    pub struct L;
    /// A payload shown by name only.
    pub struct N;
    impl<T: Scalar> Pick<T> for V {
        #[inline]
        fn pick(t: &T) -> u64 {
            t.word()
        }
    }
    impl<T: Address> Pick<T> for A {
        #[inline]
        fn pick(t: &T) -> u64 {
            t.addr()
        }
    }
    impl<T: Length> Pick<T> for L {
        #[inline]
        fn pick(t: &T) -> u64 {
            t.length()
        }
    }
    impl<T: ?Sized> Pick<T> for N {
        #[inline]
        fn pick(_: &T) -> u64 {
            0
        }
    }

    /// `Result` and `Option`: which variant, and its payload.
    pub trait Variant {
        /// The payload of `Ok` / `Some`.
        type First;
        /// The payload of `Err` (`()` for `Option`).
        type Second;
        /// The variant.
        fn split(&self) -> Result<&Self::First, Option<&Self::Second>>;
    }
    impl<T, E> Variant for Result<T, E> {
        type First = T;
        type Second = E;
        #[inline]
        fn split(&self) -> Result<&T, Option<&E>> {
            match self {
                Ok(t) => Ok(t),
                Err(e) => Err(Some(e)),
            }
        }
    }
    impl<T> Variant for Option<T> {
        type First = T;
        type Second = ();
        #[inline]
        fn split(&self) -> Result<&T, Option<&()>> {
            match self {
                Some(t) => Ok(t),
                None => Err(None),
            }
        }
    }

    /// Reader of a length (a `String` or `Vec` passed by value): `out[0]`.
    ///
    /// # Safety
    /// `p` must be the address of a live `T`.
    pub unsafe extern "C" fn read_len<T: Length>(p: usize, out: *mut [u64; 2]) {
        // SAFETY: per the caller; `out` is the hook's.
        unsafe {
            let v = (*(p as *const T)).length();
            *out = [v, 0];
        }
    }

    /// [`read_len`] for `t`'s type (which may hold references).
    pub fn len_reader<T: Length>(_: &T) -> usize {
        read_len::<T> as unsafe extern "C" fn(usize, *mut [u64; 2]) as usize
    }

    /// [`read_variant`] for `r`'s type (which may hold references).
    pub fn variant_reader<R: Variant, P: Pick<R::First>, Q: Pick<R::Second>>(_: &R) -> usize {
        read_variant::<R, P, Q> as unsafe extern "C" fn(usize, *mut [u64; 2]) as usize
    }

    /// Reader of a `Result` or `Option`: `out` = (payload word, variant:
    /// 0 `Ok`/`Some`, 1 `Err`/`None`).
    ///
    /// # Safety
    /// `p` must be the address of a live `R`.
    pub unsafe extern "C" fn read_variant<R: Variant, P: Pick<R::First>, Q: Pick<R::Second>>(
        p: usize,
        out: *mut [u64; 2],
    ) {
        // SAFETY: per the caller; `out` is the hook's.
        unsafe {
            *out = match (*(p as *const R)).split() {
                Ok(a) => [P::pick(a), 0],
                Err(Some(b)) => [Q::pick(b), 1],
                Err(None) => [0, 1],
            };
        }
    }
}

/// Runs `f` (`#[traceable]` runs a body whose return value it captures in
/// a closure, so that `return` and `?` come back to the exit pad; as an
/// `FnOnce` the closure may return what it captured, `&mut self`).
#[inline(always)]
pub fn once<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Returns `f` (`#[traceable(values)]` runs an async fn's body as an inner
/// `async move` block whose value it captures; naming the output type `R`
/// here lets the block's `?`s know what they convert to).
#[inline(always)]
pub fn async_once<R, F: core::future::Future<Output = R>>(f: F) -> F {
    f
}

/// What the runtime's ELF constructor does (the preload library calls it
/// from its own): convert GCC's NOP pads while single-threaded, start the
/// agent, apply `TRACER_ENABLE`. Runs once however often it is called.
pub fn start() {
    #[cfg(target_os = "linux")]
    crate::startup::agent_constructor();
}

/// `tracer attach` of a process whose preload library is loaded already
/// (attached, then detached): start its agent again. 0: it serves.
pub fn start_agent_again() -> i32 {
    #[cfg(target_os = "linux")]
    return crate::agent::start_again();
    #[cfg(not(target_os = "linux"))]
    1
}

/// For tests: whether this architecture's patch protocol plants traps
/// (x86-64's int3 and Thumb-2's half-word breakpoint do; AArch64's and
/// A32's single aligned store never does).
pub fn protocol_traps() -> bool {
    use tracer_core::backend::Backend;
    !<crate::arch::Arch as Backend>::TRAP.is_empty()
}

/// For tests: the backend's name (`x86-64`, `aarch64`, `thumb2`, `a32`).
pub fn backend_name() -> &'static str {
    use tracer_core::backend::Backend;
    <crate::arch::Arch as Backend>::NAME
}

/// For tests: spin this many iterations inside the SIGTRAP handler.
pub fn set_trap_handler_delay(spins: u64) {
    crate::trap::TEST_HANDLER_DELAY.store(spins, std::sync::atomic::Ordering::Relaxed);
}

/// For tests: the protection of the page holding `addr`.
pub fn page_protection(addr: usize) -> Option<i32> {
    crate::text::protection_of(addr)
}

/// For tests: make code written at `start..end` visible to instruction
/// fetch (cache maintenance on ARM; nothing to do on x86-64).
pub fn flush_code(start: usize, end: usize) {
    crate::arch::flush_icache(start, end);
}

/// For tests: the registry index of a function (as in events' `func`).
pub fn func_index(name: &str) -> Option<u32> {
    let rt = crate::runtime::runtime().ok()?;
    crate::runtime::lookup(&rt.lock_refreshed().reg, name).map(|i| i as u32)
}

/// For tests: see every event the collector drains, with the thread id.
pub fn set_event_tap(tap: Option<crate::collect::EventTap>) {
    if crate::runtime::runtime().is_ok() {
        crate::collect::lock().tap = tap;
    }
}

/// For tests: drain every ring now.
pub fn drain() {
    if crate::runtime::runtime().is_ok() {
        crate::collect::lock().drain_all();
    }
}

/// For tests: hand the rings to an external reader (`true`), as the agent
/// does when the `tracer` program attaches, or take them back.
pub fn set_external(on: bool) {
    if crate::runtime::runtime().is_ok() {
        crate::collect::set_external(on);
    }
}

/// For tests, while the rings are handed out ([`set_external`]): consume
/// every ring's events as an external reader would, and forget them.
/// Returns how many. Nothing while the collector owns the rings.
pub fn consume_as_reader() -> usize {
    if crate::runtime::runtime().is_err() || !crate::collect::external() {
        return 0;
    }
    crate::thread::all()
        .filter(|st| st.owner.load(std::sync::atomic::Ordering::Acquire) != 0)
        .map(|st| st.ring.drain(usize::MAX, |_| {}))
        .sum()
}

pub use tracer_core::event::{Event, KIND_ENTRY, KIND_EXIT};
/// For tests: the values events of capturing functions (issue 14), and
/// their argument words decoded.
pub use tracer_core::{
    capture::Args,
    event::{KIND_ARGS, KIND_RETVAL},
};

/// For tests: how many functions have a latency histogram (one is made
/// at a function's first completed call, not at registration).
pub fn histograms_made() -> usize {
    if crate::runtime::runtime().is_err() {
        return 0;
    }
    crate::collect::lock().made()
}

/// What the preload library exports and calls: the `dlsym`/`dlopen`
/// shims' entry (a tail call from a hooked function gets its real caller
/// back), the unwinder's interposed entry points (they give the thread's
/// hooked return addresses back, then call the real ones), and on x86-64
/// the stack walks (hooked returns are given back around the walk).
#[cfg(target_os = "linux")]
#[allow(unused_imports)] // none on ARMv7
pub use crate::returns::exports::*;

/// For benches and tests: run one batch over raw pads (the
/// architecture's NOP, in memory the caller mapped executable), making
/// them call `target` (`on`, through a veneer where it is out of reach)
/// or restoring the NOP, through the same engine, text writer and trap
/// handler as `enable`.
pub fn patch_raw_sites(
    addrs: &[usize],
    target: usize,
    on: bool,
) -> Result<crate::BatchReport, crate::WriteError> {
    use tracer_core::backend::Backend;
    use tracer_core::engine::{SiteRequest, Want};
    if let Err(e) = crate::runtime::runtime() {
        return Err(crate::WriteError {
            message: e.to_string(),
        });
    }
    let nop = crate::arch::Arch::encode_nop(0);
    let reqs: Vec<SiteRequest> = addrs
        .iter()
        .map(|&addr| {
            let target = crate::veneer::call_target(addr, target).unwrap_or(target);
            SiteRequest {
                addr,
                want: if on {
                    Want::Call { target }
                } else {
                    Want::Nop {
                        original: nop,
                        from: target,
                    }
                },
            }
        })
        .collect();
    let mut w = crate::text::LiveText::default();
    tracer_core::engine::apply_batch::<crate::arch::Arch, _>(&mut w, &reqs)
}

/// For tests and benches: the sites of a function, `(addr, kind)`.
pub fn sites_of(name: &str) -> Vec<(usize, u32)> {
    let Ok(rt) = crate::runtime::runtime() else {
        return Vec::new();
    };
    let st = rt.lock_refreshed();
    let Some(f) = crate::runtime::lookup(&st.reg, name) else {
        return Vec::new();
    };
    st.reg.funcs[f]
        .sites
        .iter()
        .map(|&s| (st.reg.sites[s as usize].addr, st.reg.sites[s as usize].kind))
        .collect()
}
