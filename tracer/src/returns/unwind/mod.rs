//! The unwinder's entry points, interposed: hooked return addresses are
//! given back before the unwinder walks (see the module above for the rules).

use std::sync::atomic::{AtomicUsize, Ordering};

static REAL: [AtomicUsize; 7] = [
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
];
const NAMES: [&std::ffi::CStr; 7] = [
    c"_Unwind_RaiseException",
    c"_Unwind_ForcedUnwind",
    c"_Unwind_Resume_or_Rethrow",
    c"_Unwind_Resume",
    c"_Unwind_DeleteException",
    c"_Unwind_Backtrace",
    c"pthread_exit",
];

fn real(i: usize) -> usize {
    let mut f = REAL[i].load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: a symbol lookup with a NUL-terminated name.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, NAMES[i].as_ptr()) } as usize;
        if f == 0 {
            eprintln!(
                "tracer: fatal: {} not found after the tracer's interposer (no libgcc_s?)",
                NAMES[i].to_string_lossy()
            );
            std::process::abort();
        }
        REAL[i].store(f, Ordering::Release);
    }
    f
}

type Raise = unsafe extern "C" fn(*mut libc::c_void) -> libc::c_int;
type Forced =
    unsafe extern "C" fn(*mut libc::c_void, *mut libc::c_void, *mut libc::c_void) -> libc::c_int;

/// A stack walk's callback, as `_Unwind_Backtrace` takes it.
pub type Step = extern "C" fn(*mut libc::c_void, *mut libc::c_void) -> libc::c_int;
type Backtrace = unsafe extern "C" fn(Step, *mut libc::c_void) -> libc::c_int;

/// libgcc's `_Unwind_Backtrace` (never the interposer: the search phase
/// below runs with the returns already given back).
///
/// # Safety
/// As libgcc's.
unsafe fn real_backtrace(step: Step, arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: the real function has this signature; per the caller.
    unsafe { std::mem::transmute::<usize, Backtrace>(real(5))(step, arg) }
}

// What finding the catching frame needs from libgcc's unwinder (all
// exported by libgcc_s since GCC 3.0 / 4.2).
extern "C" {
    fn _Unwind_GetIP(ctx: *mut libc::c_void) -> usize;
    fn _Unwind_GetIPInfo(ctx: *mut libc::c_void, before: *mut libc::c_int) -> usize;
    fn _Unwind_GetCFA(ctx: *mut libc::c_void) -> usize;
    fn _Unwind_Find_FDE(pc: *mut libc::c_void, bases: *mut Bases) -> *const u8;
}

#[repr(C)]
struct Bases {
    text: usize,
    data: usize,
    func: usize,
}

type Personality = unsafe extern "C" fn(
    libc::c_int,
    libc::c_int,
    u64,
    *mut libc::c_void,
    *mut libc::c_void,
) -> libc::c_int;

const URC_NO_REASON: libc::c_int = 0;
const URC_NORMAL_STOP: libc::c_int = 4;
const URC_HANDLER_FOUND: libc::c_int = 6;
const UA_SEARCH_PHASE: libc::c_int = 1;

struct Search {
    exc: *mut libc::c_void,
    class: u64,
    cfa: usize,
    frames: usize,
    /// The interposer's own functions: the frames up to them are the
    /// tracer's, whose landing pads (Rust's abort-on-unwind guard of an
    /// `extern "C"` function) must not be taken for the catch.
    own: [usize; 2],
    past_own: bool,
    /// What the architecture's walk keeps (nothing on x86-64).
    #[allow(dead_code)]
    arch: per_arch::Walk,
}

/// Read a ULEB128 at `*p`, advancing it.
///
/// # Safety
/// `*p` points into a mapped CIE.
unsafe fn uleb(p: &mut *const u8) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        // SAFETY: per the caller.
        let b = unsafe { **p };
        *p = p.wrapping_add(1);
        if shift < 64 {
            v |= u64::from(b & 0x7f) << shift;
        }
        shift += 7;
        if b & 0x80 == 0 {
            return v;
        }
    }
}

/// Read a pointer in DWARF EH encoding `enc` at `*p`, advancing it.
///
/// # Safety
/// `*p` points into a mapped CIE; indirect pointers point at mapped words.
unsafe fn encoded(enc: u8, p: &mut *const u8, bases: &Bases) -> Option<usize> {
    let at = *p as usize;
    // SAFETY: per the caller (unaligned reads of CIE bytes).
    let v: usize = unsafe {
        match enc & 0x0f {
            0x00 | 0x04 | 0x0c => {
                let v = (*p as *const u64).read_unaligned() as usize;
                *p = p.wrapping_add(8);
                v
            }
            0x03 => {
                let v = (*p as *const u32).read_unaligned() as usize;
                *p = p.wrapping_add(4);
                v
            }
            0x0b => {
                let v = (*p as *const i32).read_unaligned() as isize as usize;
                *p = p.wrapping_add(4);
                v
            }
            0x02 => {
                let v = usize::from((*p as *const u16).read_unaligned());
                *p = p.wrapping_add(2);
                v
            }
            0x0a => {
                let v = (*p as *const i16).read_unaligned() as isize as usize;
                *p = p.wrapping_add(2);
                v
            }
            0x01 => uleb(p) as usize,
            _ => return None,
        }
    };
    let v = match enc & 0x70 {
        0x00 => v,
        0x10 => v.wrapping_add(at),
        0x20 => v.wrapping_add(bases.text),
        0x30 => v.wrapping_add(bases.data),
        0x40 => v.wrapping_add(bases.func),
        _ => return None,
    };
    if enc & 0x80 != 0 {
        // SAFETY: an indirect pointer (to the personality's GOT slot).
        return Some(unsafe { *(v as *const usize) });
    }
    Some(v)
}

/// The personality routine of the FDE at `fde` (from its CIE's `P`
/// augmentation), if it has one.
///
/// # Safety
/// `fde` is an FDE `_Unwind_Find_FDE` returned.
unsafe fn personality(fde: *const u8, bases: &Bases) -> Option<Personality> {
    // SAFETY: walking the FDE and its CIE, as the unwinder does.
    unsafe {
        if (fde as *const u32).read_unaligned() == 0xffff_ffff {
            return None; // 64-bit DWARF: not emitted for x86-64 code
        }
        let id_at = fde.add(4);
        let cie = id_at.sub((id_at as *const u32).read_unaligned() as usize);
        let version = *cie.add(8);
        let aug = std::ffi::CStr::from_ptr(cie.add(9) as *const libc::c_char).to_bytes();
        if aug.first() != Some(&b'z') {
            return None;
        }
        let mut p = cie.add(9 + aug.len() + 1);
        uleb(&mut p); // code alignment
        uleb(&mut p); // data alignment (sleb: only skipped)
        if version == 1 {
            p = p.add(1);
        } else {
            uleb(&mut p);
        }
        uleb(&mut p); // augmentation data length
        for &c in &aug[1..] {
            match c {
                b'P' => {
                    let enc = *p;
                    p = p.add(1);
                    let f = encoded(enc, &mut p, bases)?;
                    return (f != 0).then(|| std::mem::transmute::<usize, Personality>(f));
                }
                b'L' | b'R' => p = p.add(1),
                b'S' | b'B' => {}
                _ => return None,
            }
        }
        None
    }
}

extern "C" fn search_step(ctx: *mut libc::c_void, arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Search` of `catching_sp`; `ctx` is the
    // unwinder's context for this frame.
    unsafe {
        let s = &mut *(arg as *mut Search);
        s.frames += 1;
        if s.frames > 100_000 {
            return URC_NORMAL_STOP;
        }
        let mut before = 0;
        let ip = _Unwind_GetIPInfo(ctx, &mut before);
        if ip == 0 {
            return URC_NORMAL_STOP;
        }
        if let Some(stop) = per_arch::at_frame(s, ctx, ip) {
            return stop;
        }
        if s.exc.is_null() {
            return URC_NO_REASON; // only giving returns back
        }
        let pc = if before != 0 { ip } else { ip - 1 };
        let mut bases = Bases {
            text: 0,
            data: 0,
            func: 0,
        };
        let fde = _Unwind_Find_FDE(pc as *mut libc::c_void, &mut bases);
        if fde.is_null() {
            return URC_NO_REASON;
        }
        if !s.past_own {
            s.past_own = s.own.contains(&bases.func);
            return URC_NO_REASON;
        }
        if let Some(pers) = personality(fde, &bases) {
            if pers(1, UA_SEARCH_PHASE, s.class, s.exc, ctx) == URC_HANDLER_FOUND {
                s.cfa = _Unwind_GetCFA(ctx);
                return URC_NORMAL_STOP;
            }
        }
        URC_NO_REASON
    }
}

std::thread_local! {
    /// This thread's exceptions being raised or unwound, with the stack
    /// address of the frame that catches each (`usize::MAX`: none, or a
    /// forced unwind). More than one when a destructor run by an unwind
    /// throws and catches an exception of its own.
    static IN_FLIGHT: std::cell::RefCell<Vec<(usize, usize)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Remember that `exc`, being raised, is caught by the frame at `limit`.
/// Exceptions whose catching frame lies below this point are over (the
/// catch has returned) and forgotten.
fn in_flight(exc: *mut libc::c_void, limit: usize) {
    crate::thread::set_unwind_limit(limit);
    let here = 0u8;
    let here = std::hint::black_box(&here) as *const u8 as usize;
    let _ = IN_FLIGHT.try_with(|v| {
        let mut v = v.borrow_mut();
        v.retain(|&(e, l)| e != exc as usize && l > here);
        if v.len() >= 16 {
            v.remove(0);
        }
        v.push((exc as usize, limit));
    });
}

/// Where the unwind of `exc` stops (as [`in_flight`] recorded it): each
/// exception's own limit, not the last raised one's (an exception thrown
/// and caught inside a cleanup of another must not make the outer
/// unwind meet hooked returns).
fn limit_of(exc: *mut libc::c_void) -> usize {
    IN_FLIGHT
        .try_with(|v| {
            v.borrow()
                .iter()
                .rev()
                .find(|&&(e, _)| e == exc as usize)
                .map(|&(_, l)| l)
        })
        .ok()
        .flatten()
        .unwrap_or_else(crate::thread::unwind_limit)
}

/// `_Unwind_RaiseException`, after `prepare`. `wrapper` is the
/// function that called this one in place of the unwinder's (the preload
/// library's export), or 0 (the program's weak definition jumps here).
///
/// # Safety
/// As the unwinder's own: `exc` is an exception object.
pub unsafe extern "C" fn raise(exc: *mut libc::c_void, wrapper: usize) -> libc::c_int {
    // SAFETY: per the caller.
    unsafe { prepare(exc, [raise as *const () as usize, wrapper]) };
    // SAFETY: the real function has this signature.
    unsafe { std::mem::transmute::<usize, Raise>(real(0))(exc) }
}

/// `_Unwind_ForcedUnwind` (`pthread_cancel`, `pthread_exit`), with every
/// hooked return of the thread given back.
///
/// # Safety
/// As the unwinder's own.
pub unsafe extern "C" fn forced(
    exc: *mut libc::c_void,
    stop: *mut libc::c_void,
    arg: *mut libc::c_void,
) -> libc::c_int {
    // Every frame up to the stop function's choice may be unwound.
    give_back_below(usize::MAX);
    in_flight(exc, usize::MAX);
    // SAFETY: the real function has this signature.
    unsafe { std::mem::transmute::<usize, Forced>(real(1))(exc, stop, arg) }
}

/// `pthread_exit`: glibc unwinds the thread (running C++ destructors and
/// cleanup handlers) through libgcc's `_Unwind_ForcedUnwind`, which it
/// reaches by its own handle, past any interposer; so every hooked
/// return is given back here first. Exported by the preload library.
///
/// # Safety
/// As glibc's.
pub unsafe extern "C" fn thread_exit(value: *mut libc::c_void) -> ! {
    give_back_below(usize::MAX);
    type Exit = unsafe extern "C" fn(*mut libc::c_void) -> !;
    // SAFETY: the real function has this signature.
    unsafe { std::mem::transmute::<usize, Exit>(real(6))(value) }
}

/// `_Unwind_Resume_or_Rethrow` (C++ `throw;`): a new raise, after
/// `prepare`, unless it continues a forced unwind. `wrapper` as for
/// [`raise`].
///
/// # Safety
/// As the unwinder's own.
pub unsafe extern "C" fn rethrow(exc: *mut libc::c_void, wrapper: usize) -> libc::c_int {
    // SAFETY: `_Unwind_Exception` is {class, cleanup, private_1, ...};
    // private_1 is the stop function of a forced unwind.
    if unsafe { *(exc as *const usize).add(2) } != 0 {
        give_back_below(usize::MAX);
        in_flight(exc, usize::MAX);
    } else {
        // SAFETY: per the caller.
        unsafe { prepare(exc, [rethrow as *const () as usize, wrapper]) };
    }
    // SAFETY: the real function has this signature.
    unsafe { std::mem::transmute::<usize, Raise>(real(2))(exc) }
}

/// `_Unwind_Resume` (the end of a cleanup landing pad): frames below the
/// catching one that traced calls in the cleanup hooked again are given
/// back before the unwind goes on. It does not return.
///
/// # Safety
/// As the unwinder's own.
pub unsafe extern "C" fn resume(exc: *mut libc::c_void) {
    // Only below the catching frame: the unwind stops there.
    give_back_below(limit_of(exc));
    type Resume = unsafe extern "C" fn(*mut libc::c_void);
    // SAFETY: the real function has this signature.
    unsafe { std::mem::transmute::<usize, Resume>(real(3))(exc) }
}

/// `_Unwind_DeleteException` (a caught foreign or C++ exception is
/// finished with, at the end of a `catch`): frames given back that
/// survived are hooked again, where `prepare` could not tell the
/// catching frame (its search found none; Rust's `catch_unwind` does not
/// come here, its frame is found by the search).
///
/// # Safety
/// As the unwinder's own.
pub unsafe extern "C" fn delete(exc: *mut libc::c_void) {
    type Delete = unsafe extern "C" fn(*mut libc::c_void);
    // SAFETY: the real function has this signature.
    unsafe { std::mem::transmute::<usize, Delete>(real(4))(exc) };
    let _ = IN_FLIGHT.try_with(|v| v.borrow_mut().retain(|&(e, _)| e != exc as usize));
    per_arch::after_catch();
}

// The architecture's side: how hooked returns are given back around the
// search, and the weak definitions of the unwinder's entry points.
crate::sys::per_arch! {
    "x86_64": "x86_64.rs", "aarch64": "aarch64.rs";
    pub(super) mod per_arch;
}
use per_arch::*;
