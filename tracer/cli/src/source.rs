//! Source lines of compiler-padded functions, from their object's DWARF.
//!
//! The agent names a compiler-padded function's object and its address in
//! it as linked (`object_offset`); the `tracer` program, not the traced
//! process, reads the object's debug information (`addr2line`) to turn that
//! into `file:line`, so the traced program never loads it. Each object is
//! loaded once, lazily, for the functions actually shown. An object without
//! debug information (or one that cannot be read) keeps its path and no
//! line.

use std::borrow::Cow;
use std::collections::HashMap;

/// Objects' debug information, loaded as needed.
#[derive(Default)]
pub struct SourceLines {
    objects: HashMap<String, Option<addr2line::Loader>>,
}

impl SourceLines {
    /// No object loaded yet.
    pub fn new() -> SourceLines {
        SourceLines::default()
    }

    /// The `(file, line)` of address `offset` in the object at `path`, if
    /// its debug information says.
    pub fn locate(&mut self, path: &str, offset: u64) -> Option<(String, u32)> {
        // Looked up without copying the path (once per function listed).
        if !self.objects.contains_key(path) {
            // Only regular files: a name from the agent could be a FIFO or a
            // device, which must not block or be read.
            let loader = std::fs::metadata(path)
                .ok()
                .filter(|md| md.is_file())
                .and_then(|_| addr2line::Loader::new(path).ok());
            self.objects.insert(path.to_string(), loader);
        }
        let loader = self.objects.get(path)?;
        let loc = loader.as_ref()?.find_location(offset).ok()??;
        let line = loc.line.filter(|&l| l > 0)?;
        Some((loc.file?.to_string(), line))
    }

    /// `(file, line)` for a function as the agent lists it: its DWARF line
    /// when it is a compiler pad in an object with debug information, else
    /// the file and line it came with.
    pub fn of(&mut self, f: &serde_json::Value) -> (String, u64) {
        let (file, line) = self.place(
            f["file"].as_str(),
            f["line"].as_u64(),
            f["object_offset"].as_u64(),
        );
        (file.into_owned(), line)
    }

    /// [`SourceLines::of`] from the function's `file`, `line` and
    /// `object_offset` (`None`: missing, or not of their type); the file
    /// borrowed when it is the one given.
    pub fn place<'f>(
        &mut self,
        file: Option<&'f str>,
        line: Option<u64>,
        object_offset: Option<u64>,
    ) -> (Cow<'f, str>, u64) {
        let file = file.unwrap_or("?");
        let line = line.unwrap_or(0);
        if line == 0 {
            if let Some(off) = object_offset {
                if let Some((src, l)) = self.locate(file, off) {
                    return (Cow::Owned(src), u64::from(l));
                }
            }
        }
        (Cow::Borrowed(file), line)
    }
}
