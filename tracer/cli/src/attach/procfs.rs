//! What `/proc/PID` says about a process: its mappings, its threads, its
//! status lines, and its memory (read and written through `/proc/PID/mem`,
//! which a ptrace-attached tracer may write even in read-only text).

use std::os::unix::fs::FileExt;

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Start address.
    pub start: usize,
    /// End address (exclusive).
    pub end: usize,
    /// `r`, `w`, `x` permissions.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
    /// Offset in the file.
    pub offset: usize,
    /// The file (empty for anonymous memory; `[stack]`, `[vdso]`…).
    pub path: String,
}

/// Parse the text of `/proc/PID/maps`.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(off), Some(_dev), Some(_ino)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        let path = it.next().unwrap_or("").trim_start().to_string();
        let Some((s, e)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset)) = (
            usize::from_str_radix(s, 16),
            usize::from_str_radix(e, 16),
            usize::from_str_radix(off, 16),
        ) else {
            continue;
        };
        let p = perms.as_bytes();
        out.push(Mapping {
            start,
            end,
            read: p.first() == Some(&b'r'),
            write: p.get(1) == Some(&b'w'),
            exec: p.get(2) == Some(&b'x'),
            offset,
            path,
        });
    }
    out
}

/// The mappings of process `pid`.
pub fn maps(pid: i32) -> std::io::Result<Vec<Mapping>> {
    Ok(parse_maps(&std::fs::read_to_string(format!(
        "/proc/{pid}/maps"
    ))?))
}

/// The thread ids of process `pid`, sorted (the main thread first).
pub fn tasks(pid: i32) -> std::io::Result<Vec<i32>> {
    let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable_by_key(|&t| (t != pid, t));
    Ok(v)
}

/// A field of `/proc/PID/status` (`TracerPid`, `Uid`…), its value trimmed.
pub fn status_field(pid: i32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field_of(&text, field)
}

/// A field of a `status` text.
pub fn status_field_of(text: &str, field: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == field).then(|| v.trim().to_string())
    })
}

/// Signals pending for thread `tid` of `pid` (its own and the process's),
/// as the bit masks of `SigPnd` and `ShdPnd`.
pub fn pending_signals(pid: i32, tid: i32) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")) else {
        return 0;
    };
    ["SigPnd", "ShdPnd"]
        .iter()
        .filter_map(|f| status_field_of(&text, f))
        .filter_map(|v| u64::from_str_radix(&v, 16).ok())
        .fold(0, |a, b| a | b)
}

/// The memory of a process, through `/proc/PID/mem`.
pub struct Mem {
    file: std::fs::File,
}

impl Mem {
    /// Open the memory of `pid` for reading and writing (the caller must be
    /// allowed to ptrace it).
    pub fn open(pid: i32) -> std::io::Result<Mem> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))?;
        Ok(Mem { file })
    }

    /// Read `buf.len()` bytes at `addr`.
    pub fn read(&self, addr: usize, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, addr as u64)
    }

    /// Read a NUL-terminated string at `addr` (at most `max` bytes).
    pub fn read_cstr(&self, addr: usize, max: usize) -> String {
        let mut out = Vec::new();
        let mut chunk = [0u8; 64];
        while out.len() < max {
            if self.read(addr + out.len(), &mut chunk).is_err() {
                break;
            }
            match chunk.iter().position(|&b| b == 0) {
                Some(n) => {
                    out.extend_from_slice(&chunk[..n]);
                    break;
                }
                None => out.extend_from_slice(&chunk),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Write `bytes` at `addr` (text included: the kernel copies the page on
    /// write, as it does for a debugger's breakpoint).
    pub fn write(&self, addr: usize, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(bytes, addr as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let m = parse_maps(
            "55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 123 /usr/bin/prog\n\
             55d0c0a01000-55d0c0a02000 r-xp 00001000 08:01 123 /usr/bin/prog\n\
             7ffd1000-7ffd2000 rw-p 00000000 00:00 0 \n\
             7f0000000000-7f0000001000 r-xp 00000000 08:01 9 /lib/with space.so\n",
        );
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].start, 0x55d0c0a01000);
        assert!(m[1].exec && m[1].read && !m[1].write);
        assert_eq!(m[1].offset, 0x1000);
        assert_eq!(m[1].path, "/usr/bin/prog");
        assert_eq!(m[2].path, "");
        assert_eq!(m[3].path, "/lib/with space.so");
    }

    #[test]
    fn status_fields() {
        let t = "Name:\tx\nTracerPid:\t42\nSigPnd:\t0000000000000000\n";
        assert_eq!(status_field_of(t, "TracerPid").as_deref(), Some("42"));
        assert_eq!(status_field_of(t, "Tracer"), None);
    }
}
