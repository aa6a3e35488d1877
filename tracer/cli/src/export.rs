//! The `report` and `export` verbs: a recording (see [`crate::record`])
//! read back and shown as a table or JSON ([`report`]), or converted into
//! files ([`export`]) that are written whole or not at all
//! ([`write_atomically`]).

use crate::out::io_err;
use crate::record::Recording;
use crate::session::LOSS_HINT;
use crate::{exit, Error};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `tracer report FILE`: one row per function, sorted by `sort` (see
/// [`crate::report::SORT_KEYS`]), as a table or (`json`) a JSON array of
/// [`crate::report::Row`].
pub fn report(file: &Path, sort: &str, json: bool) -> Result<i32, Error> {
    let rec = Recording::open(file)?;
    let mut rows = crate::report::rows(&rec)?;
    crate::report::add_values(&rec, &mut rows)?;
    crate::report::sort(&mut rows, sort).map_err(|m| Error {
        code: exit::USAGE,
        msg: m,
    })?;
    let mut out = std::io::stdout().lock();
    if json {
        let s = serde_json::to_string_pretty(&rows).expect("rows serialize");
        writeln!(out, "{s}").map_err(io_err)?;
    } else {
        if let Some(t) = &rec.trailer {
            let lost: u64 = t.lost.iter().map(|(_, n)| n).sum();
            if lost > 0 {
                writeln!(out, "# {lost} events were lost while recording (ring overruns); figures are low. {LOSS_HINT}").map_err(io_err)?;
            }
        } else {
            writeln!(
                out,
                "# the recording has no trailer (recorder killed?); showing what it holds"
            )
            .map_err(io_err)?;
        }
        write!(out, "{}", crate::report::table(&rows)).map_err(io_err)?;
        write!(out, "{}", crate::report::values_text(&rows)).map_err(io_err)?;
    }
    Ok(exit::OK)
}

/// `tracer export FILE`: Perfetto's protobuf, Chrome trace JSON and/or
/// folded stacks, each written atomically.
pub fn export(
    file: &Path,
    perfetto: Option<PathBuf>,
    chrome: Option<PathBuf>,
    folded: Option<PathBuf>,
) -> Result<i32, Error> {
    if chrome.is_none() && folded.is_none() && perfetto.is_none() {
        return Err(Error {
            code: exit::USAGE,
            msg: "say what to write: --perfetto OUT.pftrace, --chrome OUT.json and/or --folded OUT"
                .into(),
        });
    }
    let rec = Recording::open(file)?;
    if rec.trailer.is_none() {
        eprintln!(
            "tracer: {} has no trailer (recorder killed?); converting what it holds",
            file.display()
        );
    }
    if let Some(p) = perfetto {
        let n = write_atomically(&p, |w| crate::perfetto::write(&rec, w))?;
        eprintln!(
            "wrote {} ({n} Perfetto trace packets: open it in https://ui.perfetto.dev)",
            p.display()
        );
    }
    if let Some(p) = chrome {
        let n = write_atomically(&p, |w| crate::report::write_chrome(&rec, w))?;
        eprintln!(
            "wrote {} ({n} Chrome trace events: open it in https://ui.perfetto.dev)",
            p.display()
        );
    }
    if let Some(p) = folded {
        let text = crate::report::folded(&rec)?;
        write_atomically(&p, |w| {
            w.write_all(text.as_bytes()).map_err(|e| {
                Error::failed(format!(
                    "cannot write {}: {e}; choose a writable path",
                    p.display()
                ))
            })
        })?;
        eprintln!(
            "wrote {} (folded stacks: flamegraph.pl or inferno-flamegraph)",
            p.display()
        );
    }
    Ok(exit::OK)
}

/// Write `path` through a temporary file next to it, renamed over it once
/// complete: a failed or interrupted export never leaves half a file.
pub fn write_atomically<T>(
    path: &Path,
    f: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<T, Error>,
) -> Result<T, Error> {
    let cannot = |e: std::io::Error| {
        Error::failed(format!(
            "cannot write {}: {e}; choose a writable path",
            path.display()
        ))
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let file = std::fs::File::create(&tmp).map_err(cannot)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let done = f(&mut w).and_then(|v| {
        w.flush().map_err(cannot)?;
        std::fs::rename(&tmp, path).map_err(cannot)?;
        Ok(v)
    });
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tracer-export-unit-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join(name)
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let p = scratch("failed.out");
        std::fs::write(&p, "old").unwrap();
        let r: Result<(), Error> = write_atomically(&p, |w| {
            w.write_all(b"half").unwrap();
            Err(Error::failed("no"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
        let left: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let n = write_atomically(&p, |w| {
            w.write_all(b"new").unwrap();
            Ok(3)
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }

    #[test]
    fn export_says_what_to_write() {
        let e = export(Path::new("/nonexistent.rec"), None, None, None).unwrap_err();
        assert_eq!(e.code, exit::USAGE);
        assert!(e.msg.contains("--perfetto"), "{}", e.msg);
    }
}
