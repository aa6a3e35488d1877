//! Stack walks (`_Unwind_Backtrace`, glibc's `backtrace`) that see the
//! real callers: on x86-64, where hooked returns are given back and
//! hooked again around the walk.

use super::*;

/// The function that starts a frame's FDE (0: none).
///
/// # Safety
/// `ctx` is the unwinder's context of a frame being walked.
unsafe fn frame_func(ctx: *mut libc::c_void) -> usize {
    let mut before = 0;
    // SAFETY: per the caller.
    let ip = unsafe { _Unwind_GetIPInfo(ctx, &mut before) };
    let pc = if before != 0 { ip } else { ip.wrapping_sub(1) };
    let mut bases = Bases {
        text: 0,
        data: 0,
        func: 0,
    };
    // SAFETY: a lookup by address; `bases` is written only if found.
    if unsafe { _Unwind_Find_FDE(pc as *mut libc::c_void, &mut bases) }.is_null() {
        0
    } else {
        bases.func
    }
}

struct Walk {
    step: Step,
    arg: *mut libc::c_void,
    own: [usize; 4],
    past_own: bool,
}

extern "C" fn walk_step(ctx: *mut libc::c_void, arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Walk` of `walk`; `ctx` the unwinder's context.
    unsafe {
        let w = &mut *(arg as *mut Walk);
        if !w.past_own {
            if w.own.contains(&frame_func(ctx)) {
                return URC_NO_REASON;
            }
            w.past_own = true;
        }
        (w.step)(ctx, w.arg)
    }
}

/// Walk this thread's stack with `step`, as `_Unwind_Backtrace`, with
/// the hooked return addresses given back for the walk (so it sees the
/// real callers, not the return trampoline) and the tracer's own frames
/// `own` left out of it.
///
/// # Safety
/// As libgcc's `_Unwind_Backtrace`.
unsafe fn walk(step: Step, arg: *mut libc::c_void, own: [usize; 2]) -> libc::c_int {
    let mut w = Walk {
        step,
        arg,
        own: [
            own[0],
            own[1],
            walk as *const () as usize,
            real_backtrace as *const () as usize,
        ],
        past_own: false,
    };
    let gave = crate::thread::unhook_for_walk();
    // SAFETY: `walk_step` matches the callback type and uses only `w`.
    let r = unsafe { real_backtrace(walk_step, &mut w as *mut Walk as *mut libc::c_void) };
    if gave {
        let here = 0u8;
        crate::thread::rehook_after_catch(std::hint::black_box(&here) as *const u8 as usize);
    }
    r
}

/// `_Unwind_Backtrace` (Rust's `std::backtrace`, the `backtrace`
/// crate): the walk sees the real return addresses. `wrapper` as for
/// [`raise`].
///
/// # Safety
/// As libgcc's.
pub unsafe extern "C" fn backtrace_walk(
    step: Step,
    arg: *mut libc::c_void,
    wrapper: usize,
) -> libc::c_int {
    // SAFETY: per the caller.
    unsafe { walk(step, arg, [backtrace_walk as *const () as usize, wrapper]) }
}

struct Collect {
    buf: *mut *mut libc::c_void,
    size: usize,
    n: usize,
}

extern "C" fn collect_step(ctx: *mut libc::c_void, arg: *mut libc::c_void) -> libc::c_int {
    const URC_END_OF_STACK: libc::c_int = 5;
    // SAFETY: `arg` is the `Collect` of `backtrace`, whose buffer has
    // `size` entries; `ctx` is the unwinder's context.
    unsafe {
        let c = &mut *(arg as *mut Collect);
        if c.n >= c.size {
            return URC_END_OF_STACK;
        }
        *c.buf.add(c.n) = _Unwind_GetIP(ctx) as *mut libc::c_void;
        c.n += 1;
        if c.n == c.size {
            URC_END_OF_STACK
        } else {
            URC_NO_REASON
        }
    }
}

/// glibc's `backtrace(buf, size)`, which calls libgcc's unwinder
/// directly (no interposer sees it): the return addresses of the caller
/// and its callers, real ones, into `buf`. Exported by the preload
/// library, `wrapper` being its export.
///
/// # Safety
/// As glibc's: `buf` has room for `size` pointers.
pub unsafe extern "C" fn backtrace(
    buf: *mut *mut libc::c_void,
    size: libc::c_int,
    wrapper: usize,
) -> libc::c_int {
    if buf.is_null() || size <= 0 {
        return 0;
    }
    let mut c = Collect {
        buf,
        size: size as usize,
        n: 0,
    };
    let own = [backtrace as *const () as usize, wrapper];
    // SAFETY: `collect_step` matches the callback type and writes at
    // most `size` entries of `buf`.
    unsafe {
        walk(
            collect_step,
            &mut c as *mut Collect as *mut libc::c_void,
            own,
        )
    };
    // The outermost frame's return address is 0 on some stacks.
    // SAFETY: entries below `c.n` were written.
    if c.n > 1 && unsafe { *buf.add(c.n - 1) }.is_null() {
        c.n -= 1;
    }
    c.n as libc::c_int
}
