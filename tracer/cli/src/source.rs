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
                .filter(|md| md.is_file() && may_have_lines(path))
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

/// Can the object at `path` have DWARF lines, as `addr2line::Loader` reads
/// them: has it a `.debug_info` section? Only its section headers and
/// their names are read. An object without one is not loaded: the loader
/// would index every symbol of it (10^6 functions: 100 MB) to find no line.
/// (`true` when the file is not an ELF object this can read: the loader
/// decides.)
fn may_have_lines(path: &str) -> bool {
    use object::read::elf::{FileHeader, SectionHeader as _};
    fn elf<E: FileHeader<Endian = object::Endianness>>(
        data: &object::ReadCache<std::fs::File>,
    ) -> Option<bool> {
        let header = E::parse(data).ok()?;
        let endian = header.endian().ok()?;
        let sections = header.sections(endian, data).ok()?;
        Some(sections.iter().any(|s| {
            matches!(
                sections.section_name(endian, s),
                Ok(b".debug_info" | b".zdebug_info")
            ) && s.sh_type(endian) != object::elf::SHT_NOBITS
        }))
    }
    let Ok(f) = std::fs::File::open(path) else {
        return true;
    };
    let data = object::ReadCache::new(f);
    let found = match object::FileKind::parse(&data) {
        Ok(object::FileKind::Elf64) => elf::<object::elf::FileHeader64<object::Endianness>>(&data),
        Ok(object::FileKind::Elf32) => elf::<object::elf::FileHeader32<object::Endianness>>(&data),
        _ => None,
    };
    found.unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_without_dwarf_are_not_loaded() {
        // This test program has DWARF (tests build with debug information).
        let me = std::env::current_exe().unwrap();
        let me = me.to_str().unwrap();
        assert!(may_have_lines(me));
        // A copy without it: no line, and no loader kept for it.
        let dir = std::env::temp_dir().join(format!("tracer-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stripped = dir.join("stripped");
        let st = std::process::Command::new("objcopy")
            .args(["--strip-debug", me, stripped.to_str().unwrap()])
            .status();
        if st.is_ok_and(|s| s.success()) {
            let p = stripped.to_str().unwrap();
            assert!(!may_have_lines(p));
            let mut sl = SourceLines::new();
            assert_eq!(sl.locate(p, 0x1000), None);
            assert!(sl.objects[p].is_none());
        }
        // Not ELF: the loader decides (and fails).
        let text = dir.join("text");
        std::fs::write(&text, b"not an object").unwrap();
        assert!(may_have_lines(text.to_str().unwrap()));
        assert!(may_have_lines("/no/such/file"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
