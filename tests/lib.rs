//! Shared helpers of the integration tests.
#![deny(missing_docs)]

use std::ffi::CString;
use std::path::{Path, PathBuf};

/// A shared library built from C source with clang-19 and
/// `-fpatchable-function-entry=5` (one 5-byte NOP per function, patchable
/// live), loaded with `dlopen`. The build directory is removed on drop; the
/// library stays loaded.
pub struct CLib {
    dir: PathBuf,
    handle: *mut libc::c_void,
}

impl CLib {
    /// Build `src` as `lib<name>.so` and load it (`RTLD_NOW`). Panics with
    /// what to install if clang-19 is missing (`.ci/run` installs it through
    /// scripts/setup-whole.sh).
    pub fn build(name: &str, src: &str) -> CLib {
        let dir = std::env::temp_dir().join(format!("tracer-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = dir.join(format!("{name}.c"));
        std::fs::write(&c, src).unwrap();
        let so = dir.join(format!("lib{name}.so"));
        let out = std::process::Command::new("clang-19")
            .args([
                "-O1",
                "-shared",
                "-fPIC",
                "-fpatchable-function-entry=5",
                "-o",
            ])
            .arg(&so)
            .arg(&c)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run clang-19 ({e}); install it: apt-get install -y clang-19")
            });
        assert!(
            out.status.success(),
            "clang-19 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = CString::new(so.to_str().unwrap()).unwrap();
        // SAFETY: a plain C library without constructors.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
        assert!(!handle.is_null(), "dlopen {}", so.display());
        CLib { dir, handle }
    }

    /// The address of function `name` of the library.
    pub fn sym(&self, name: &str) -> usize {
        let n = CString::new(name).unwrap();
        // SAFETY: a valid handle and NUL-terminated name.
        let p = unsafe { libc::dlsym(self.handle, n.as_ptr()) };
        assert!(
            !p.is_null(),
            "{name} not found in {}",
            self.path().display()
        );
        p as usize
    }

    /// Where the library was built.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for CLib {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
