//! The capturing hooks: the same work as the plain ones plus the values
//! events (`tracer_core::capture`). Only functions enabled with capture
//! reach them (through their own entry stub and trampolines), so the plain
//! hooks have no branch for capture. What every architecture shares is
//! here, with the hooks of `#[traceable]` pads (`on_entry_args`,
//! `on_exit_args`: their stubs build the same block on every
//! architecture); the compiler pads' hooks are the architecture's
//! (`capture_x86_64.rs`, `capture_aarch64.rs`).

use super::*;
use tracer_core::event::{KIND_ARGS, KIND_RETVAL};

/// Set once the capturing hooks were verified not to touch vector
/// registers (with the plain ones): their trampolines skip saving them.
pub static CAPTURE_LEAN: AtomicBool = AtomicBool::new(false);

/// What the check of the capturing hooks found (`None`: lean; x86-64
/// only: elsewhere the trampolines always save).
pub(crate) static CAPTURE_CHECK: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

pub use traceable::{on_entry_args, on_exit_args};

/// The values events of an entry: its `n` argument words, `word(0)` (the
/// spec) first; two words a ring event. Every capturing entry hook's.
#[inline(always)]
pub(crate) fn push_arg_words(
    st: &ThreadState,
    p: &mut Private,
    func: u32,
    n: usize,
    word: impl Fn(usize) -> u64,
) {
    let depth = p.depth;
    let mut k = 0;
    while k < n {
        let words = (word(k), if k + 1 < n { word(k + 1) } else { 0 });
        let flags = (k / 2) as u8;
        push_values(st, p, func, depth, (KIND_ARGS, flags), words);
        k += 2;
    }
}

/// The values event of an exit of `func` at `depth`: the return value's
/// two words. Every capturing exit hook's.
#[inline(always)]
pub(crate) fn push_ret_words(
    st: &ThreadState,
    p: &mut Private,
    func: u32,
    depth: usize,
    words: (u64, u64),
) {
    push_values(st, p, func, depth, (KIND_RETVAL, 0), words);
}

/// One values event of `func` at `depth`: `(kind, flags)`, two words.
#[inline(always)]
fn push_values(
    st: &ThreadState,
    p: &mut Private,
    func: u32,
    depth: usize,
    (kind, flags): (u8, u8),
    (ts, dur): (u64, u64),
) {
    st.ring.push(
        &mut p.cached_tail,
        &Event {
            ts,
            dur,
            func,
            depth: depth as u16,
            kind,
            flags,
        },
    );
}

/// The capturing hooks of `#[traceable]` pads (every architecture: the
/// macro's capturing stubs build the same block on each, see
/// `tracer_macros`' `capture` module; the async ones are x86-64's, in
/// `capture_x86_64.rs`).
pub(super) mod traceable {
    use super::*;

    /// A reader of a `#[traceable]` value (`tracer::__private::values`).
    type Reader = unsafe extern "C" fn(usize, *mut [u64; 2]);

    /// What [`read_c`] runs: a reader, its value's address, its output.
    struct ReadCall {
        reader: usize,
        addr: usize,
        /// Written by every reader (left uninitialised here: zeroing it
        /// would take a vector register, which the lean hooks must not).
        out: std::mem::MaybeUninit<[u64; 2]>,
    }

    /// Run a reader (through the saving shim on x86-64: the readers are the
    /// program's code, not verified free of vector registers).
    extern "C" fn read_c(call: usize) -> usize {
        // SAFETY: `call` is a `ReadCall` of `traceable_value`'s frame, whose
        // reader was put in the block by the macro's capturing stub (on
        // Thumb-2 an odd address: the call interworks).
        unsafe {
            let c = &mut *(call as *mut ReadCall);
            let f: Reader = std::mem::transmute::<usize, Reader>(c.reader);
            f(c.addr, c.out.as_mut_ptr());
        }
        0
    }

    /// Value `i` of a `#[traceable]` capturing stub's block: (word, second
    /// word; the reader's two words, or the value twice).
    ///
    /// # Safety
    /// `block` must be the stub's block with more than `i` values.
    #[inline(always)]
    unsafe fn traceable_value(block: *const u64, i: usize) -> (u64, u64) {
        // SAFETY: per the caller.
        let (v, reader) = unsafe { (*block.add(1 + 2 * i), *block.add(2 + 2 * i)) };
        if reader == 0 {
            return (v, v);
        }
        let mut c = ReadCall {
            reader: reader as usize,
            addr: v as usize,
            out: std::mem::MaybeUninit::uninit(),
        };
        call_slow_arg(read_c, &mut c as *mut ReadCall as usize);
        // SAFETY: the reader wrote both words. Read one at a time
        // (volatile): a 16-byte copy would take a vector register.
        unsafe {
            let w = c.out.as_ptr() as *const u64;
            (w.read_volatile(), w.add(1).read_volatile())
        }
    }

    /// The values in a `#[traceable]` capturing stub's block, and the stack
    /// pointer at the pad (above the block's count, its values and the 8
    /// bytes the stub keeps: the pad's return address).
    ///
    /// # Safety
    /// `block` must be such a block.
    #[inline(always)]
    pub(crate) unsafe fn traceable_block(block: *const u64) -> (usize, usize) {
        // The count is the low 32 bits of the first word (on ARMv7 the high
        // half is padding the stub does not write).
        // SAFETY: per the caller.
        let pushed = unsafe { *(block as *const u32) } as usize;
        let n = pushed.min(tracer_core::site::MAX_TRACEABLE_VALUES);
        (n, block as usize + 16 * pushed + 16)
    }

    /// Called by `__tracer_v1_tramp_entry_args`: the capturing stub of a
    /// `#[traceable]` entry pad pushed the parameters' values (`block`); as
    /// [`on_entry`], with the values events just before the entry event.
    ///
    /// # Safety
    /// `rec` must be a site record, `block` its capturing stub's block.
    pub unsafe extern "C" fn on_entry_args(
        rec: *const SiteRecord,
        block: *const u64,
        token: usize,
    ) {
        // SAFETY: per the caller.
        let (n, sp) = unsafe { traceable_block(block) };
        // SAFETY: per the caller (`values` inlined: the only call of it).
        unsafe {
            entry_body::<{ sites::SYNC }>(rec, sp, token, |st, p, func| {
                push_args(st, p, func, n, block)
            })
        }
    }

    /// The values events of an entry: the spec, then the `n` values of
    /// `block`.
    #[inline(always)]
    pub(crate) fn push_args(
        st: &ThreadState,
        p: &mut Private,
        func: u32,
        n: usize,
        block: *const u64,
    ) {
        let spec = u64::from(tracer_core::capture::SPEC_TRACEABLE | n as u32);
        push_arg_words(st, p, func, n + 1, |k| match k {
            0 => spec,
            // SAFETY: k - 1 < n values are in the block.
            k => unsafe { traceable_value(block, k - 1) }.0,
        });
    }

    /// Called by `__tracer_v1_tramp_exit_args`: the capturing stub of a
    /// `#[traceable]` exit pad pushed the return value; as [`on_exit`], with
    /// one values event (the value's word; its second word: the variant of a
    /// `Result`/`Option`) just before the exit event.
    ///
    /// # Safety
    /// As [`on_entry_args`].
    pub unsafe extern "C" fn on_exit_args(rec: *const SiteRecord, block: *const u64, token: usize) {
        // SAFETY: per the caller.
        let (n, sp) = unsafe { traceable_block(block) };
        // SAFETY: per the caller.
        unsafe {
            exit_body::<{ sites::SYNC }>(rec, sp, token, |st, p, func, depth| {
                push_ret(st, p, func, depth, n, block)
            })
        }
    }

    /// The values event of an exit: the return value's two words, if the
    /// stub pushed one.
    #[inline(always)]
    pub(crate) fn push_ret(
        st: &ThreadState,
        p: &mut Private,
        func: u32,
        depth: usize,
        n: usize,
        block: *const u64,
    ) {
        if n == 0 {
            return;
        }
        // SAFETY: one value is in the block (the stub's count says so).
        push_ret_words(st, p, func, depth, unsafe { traceable_value(block, 0) });
    }
}
