//! The system side: per-architecture code (the backend in use, thread
//! pointer, text reads), the trampolines, writing live text, the SIGTRAP
//! handler, the clock and the veneers that bring far targets in reach.

pub(crate) mod arch;
pub mod clock;
pub(crate) mod text;
mod trampolines;
pub(crate) mod trap;
pub(crate) mod veneer;

/// The one place generic code picks a file per architecture:
///
/// ```ignore
/// per_arch! {
///     "x86_64": "capture_x86_64.rs", "aarch64": "capture_aarch64.rs";
///     mod capture_arch;
///     pub(crate) use capture_arch::*;
/// }
/// ```
///
/// declares the module from the file given for the architecture being
/// built (relative to the invoking file's directory, as `#[path]`), and the
/// items after it; on an architecture not listed, none of them.
macro_rules! per_arch {
    ($($arch:literal: $file:literal),+ $(,)?;
     $(#[$m:meta])* $vis:vis mod $name:ident; $($item:item)*) => {
        $(#[cfg_attr(target_arch = $arch, path = $file)])+
        $(#[$m])*
        #[cfg(any($(target_arch = $arch),+))]
        $vis mod $name;
        $crate::sys::per_arch!(@only ($(target_arch = $arch),+) $($item)*);
    };
    (@only $archs:tt $($item:item)*) => { $(#[cfg(any $archs)] $item)* };
}
pub(crate) use per_arch;

/// Give the C heap's free pages back to the system (glibc's
/// `malloc_trim`): after a heavy request (naming 10^5-10^6 functions, a
/// page of `list`) the memory it freed lies between chunks still in use,
/// where glibc keeps it; the traced program's resident size would stay
/// grown by it. Elsewhere nothing.
pub(crate) fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
