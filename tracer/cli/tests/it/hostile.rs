//! The `tracer` program against hostile agents and hijacked sockets.
//!
//! A fake agent runs inside this test process (so the kernel's `SO_PEERCRED`
//! names this process, and `-p` is this process's pid): it speaks the
//! protocol of the `tracer` crate's `agent.rs` and serves crafted replies and
//! crafted shared memory (rings of absurd capacity, lengths beyond their
//! memfd, impossible positions, escape sequences in names, replies that are
//! too large or never come). Every verb must end with a clear message and an
//! exit code, never by a signal, and within its `--duration` plus a margin.
//!
//! Hijacks: a socket directory anyone may write to or owned by another user,
//! and a socket served by a process other than the target, are refused.

use crate::helpers::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Generous: only detects a hang; no test asserts a tight bound.
const HANG: Duration = Duration::from_secs(20);

/// The program ended by itself with `code`, and stderr has every `words`.
#[track_caller]
fn ended(o: &Output, code: i32, words: &[&str]) {
    let why = format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    assert_eq!(o.status.signal(), None, "killed by a signal: {why}");
    assert_eq!(o.status.code(), Some(code), "{why}");
    for w in words {
        assert!(stderr(o).contains(w), "no {w:?} in stderr: {why}");
    }
}

/// What the fake agent does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    /// Good replies, names full of escape sequences, a ring with one call.
    Escapes,
    /// A ring header claiming 2^62 events in a 4 KiB block.
    HugeCapacity,
    /// A block declaring 1 MiB in a 4 KiB memfd.
    BeyondMemfd,
    /// A block at an offset whose end overflows 64 bits.
    OffsetOverflow,
    /// A block at an offset that is not page-aligned.
    OffsetUnaligned,
    /// A block in a memfd the reply did not attach.
    MissingFd,
    /// A ring whose producer is 2^63 events ahead of its consumer.
    Wrapped,
    /// Every reply announces 100 MiB.
    Oversized,
    /// `hello` is answered; every other request never is.
    Stall,
    /// Good until the first ring is handed over; the next `rings` request
    /// (in the middle of a session) is never answered.
    StallLater,
    /// A full ring of random events: unknown functions, absurd depths and
    /// durations, exits without entries, unknown kinds.
    Garbage,
    /// `list` in two pages: functions as an agent writes them (escapes in
    /// their strings), then odd ones (fields of other types, a key twice).
    Pages,
}

/// The functions of [`Scenario::Pages`]' two pages, as JSON text.
const PAGES: [&str; 2] = [
    r#"[{"index": 0, "name": "app::q\"b\\\u001b\u0085\u00e9\u007f", "file": "src/\u009bx.rs",
         "line": 3, "enabled": true, "problems": ["odd\u001b", "two"], "signature": "(n: u32)",
         "ident": "q", "compiler_pad": false, "loaded": true, "object_offset": null, "sites": 1},
        {"index": 1, "name": "c_fn", "file": "/no/such/object.so", "line": 0,
         "enabled": false, "problems": [], "object_offset": 4096, "signature": ""}]"#,
    r#"[{"index": 2, "name": 5, "enabled": "yes", "problems": {"a": [1, null]}},
        {"index": 3, "name": "first", "name": "second", "line": -1},
        {}]"#,
];

const EVIL: &str = "evil\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m";

/// A fake agent serving `scenario` at `<dir>/<as_pid>.sock` until dropped.
struct Fake {
    stop: Arc<AtomicBool>,
    path: PathBuf,
}

impl Fake {
    fn start(dir: &Path, as_pid: u32, scenario: Scenario) -> Fake {
        let path = dir.join(format!("{as_pid}.sock"));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || serve(c, scenario, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Fake { stop, path }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(mut c: UnixStream, sc: Scenario, stop: &AtomicBool) {
    c.set_nonblocking(false).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut rings = 0;
    loop {
        let mut len = [0u8; 4];
        match c.read_exact(&mut len) {
            Ok(()) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock && !stop.load(Ordering::Relaxed) =>
            {
                continue
            }
            Err(_) => return,
        }
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        if c.read_exact(&mut body).is_err() {
            return;
        }
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let op = req["op"].as_str().unwrap_or("").to_string();
        if sc == Scenario::Oversized {
            let _ = c.write_all(&(100u32 << 20).to_le_bytes());
            return;
        }
        if op == "rings" {
            rings += 1;
        }
        let stall = match sc {
            Scenario::Stall => op != "hello",
            Scenario::StallLater => rings > 1,
            _ => false,
        };
        if stall {
            // Never answer; hold the connection until the client leaves.
            let mut b = [0u8; 1];
            while !stop.load(Ordering::Relaxed) && !matches!(c.read(&mut b), Ok(0)) {}
            return;
        }
        let mut fds: Vec<OwnedFd> = Vec::new();
        let reply = match op.as_str() {
            "hello" => json!({
                "pid": std::process::id(), "exe": format!("/bin/{EVIL}"), "clock": EVIL,
                "ticks_per_ns": 1.0,
                "functions": [{"index": 0, "name": format!("app::{EVIL}")}],
            }),
            "list" if sc == Scenario::Pages => {
                let page = usize::from(req["from"].as_u64().unwrap_or(0) > 0);
                // As text: a key twice is only possible so.
                let mut body = format!(r#"{{"ok": true, "v": 1, "functions": {}"#, PAGES[page]);
                if page == 0 {
                    body += r#", "next": 2"#;
                }
                body += "}";
                let mut frame = (body.len() as u32).to_le_bytes().to_vec();
                frame.extend_from_slice(body.as_bytes());
                if c.write_all(&frame).is_err() {
                    return;
                }
                continue;
            }
            "list" => json!({"functions": [{
                "index": 0, "name": format!("app::{EVIL}"), "file": format!("{EVIL}.rs"),
                "line": 3, "enabled": true, "problems": [EVIL],
            }]}),
            "status" => json!({
                "enabled": [format!("app::{EVIL}")], "runtime_error": EVIL, "clock": EVIL,
                "sync": EVIL, "threads": 1, "threads_detail": [],
            }),
            "enable" | "disable" => {
                json!({"ok": false, "error": format!("refused: {EVIL}")})
            }
            "rings" if req["known"].as_array().is_some_and(|a| a.is_empty()) => {
                let (fd, info) = block(sc);
                fds.push(fd);
                json!({"rings": [info], "unshared": 0, "ticks_per_ns": 1.0, "functions": 1})
            }
            _ => json!({"rings": [], "unshared": 0, "ticks_per_ns": 1.0, "functions": 1}),
        };
        let mut reply = reply;
        if reply.get("ok").is_none() {
            reply["ok"] = json!(true);
        }
        reply["v"] = json!(1);
        if send(&c, &reply, &fds).is_err() {
            return;
        }
    }
}

/// A memfd of `size` bytes with `bytes` written at offset 0.
fn memfd(size: u64, bytes: &[u8]) -> OwnedFd {
    // SAFETY: a NUL-terminated name and valid flags.
    let fd = unsafe { libc::memfd_create(c"hostile".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor that nothing else owns.
    let f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    f.set_len(size).unwrap();
    f.write_all_at(bytes, 0).unwrap();
    f.into()
}

/// A ring header (`tracer_core::event::RingHeader`'s layout): magic,
/// version, capacity, tid, dropped, head at 64, tail at 128; 192 bytes.
fn ring_header(capacity: u64, head: u64, tail: u64) -> Vec<u8> {
    let mut h = vec![0u8; 192];
    h[0..4].copy_from_slice(&0x7472_6331u32.to_le_bytes());
    h[4..8].copy_from_slice(&1u32.to_le_bytes());
    h[8..16].copy_from_slice(&capacity.to_le_bytes());
    h[16..24].copy_from_slice(&4242u64.to_le_bytes());
    h[64..72].copy_from_slice(&head.to_le_bytes());
    h[128..136].copy_from_slice(&tail.to_le_bytes());
    h
}

/// One 24-byte event.
fn event(ts: u64, dur: u64, kind: u8) -> [u8; 24] {
    let mut e = [0u8; 24];
    e[0..8].copy_from_slice(&ts.to_le_bytes());
    e[8..16].copy_from_slice(&dur.to_le_bytes());
    e[22] = kind;
    e
}

/// The block a `rings` reply hands over in scenario `sc`.
fn block(sc: Scenario) -> (OwnedFd, Value) {
    let (size, declared, bytes) = match sc {
        Scenario::HugeCapacity => (4096, 4096, ring_header(1 << 62, 0, 0)),
        Scenario::BeyondMemfd => (4096, 1 << 20, ring_header(64, 0, 0)),
        Scenario::OffsetOverflow | Scenario::OffsetUnaligned | Scenario::MissingFd => {
            (4096, 4096, ring_header(64, 0, 0))
        }
        Scenario::Wrapped => (4096, 4096, ring_header(64, 1 << 63, 0)),
        Scenario::Garbage => {
            let mut b = ring_header(64, 64, 0);
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..64 * 24 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                b.push((x >> 56) as u8);
            }
            (4096, 4096, b)
        }
        _ => {
            // A good ring: one call of function 0, entry then exit.
            let mut b = ring_header(64, 2, 0);
            b.extend_from_slice(&event(1000, 0, 0));
            b.extend_from_slice(&event(1500, 500, 1));
            (4096, 4096, b)
        }
    };
    let mut info = json!({"id": 7, "tid": 4242, "len": declared, "ring": 0, "counters": 0,
                      "nfuncs": 1, "dead": false});
    match sc {
        Scenario::OffsetOverflow => info["offset"] = json!(u64::MAX - 4095),
        Scenario::OffsetUnaligned => info["offset"] = json!(100),
        Scenario::MissingFd => info["fd"] = json!(3),
        _ => {}
    }
    (memfd(size, &bytes), info)
}

/// Send one framed message with `fds` attached (as the agent does).
fn send(s: &UnixStream, v: &Value, fds: &[OwnedFd]) -> std::io::Result<()> {
    let body = serde_json::to_vec(v).unwrap();
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let fd_bytes = std::mem::size_of_val(&raw[..]);
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: frame.as_mut_ptr() as *mut libc::c_void,
        iov_len: frame.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is `space` bytes, room for one cmsg
        // holding `raw`; CMSG_* stay inside it.
        unsafe {
            let cm = libc::CMSG_FIRSTHDR(&msg);
            (*cm).cmsg_level = libc::SOL_SOCKET;
            (*cm).cmsg_type = libc::SCM_RIGHTS;
            (*cm).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(raw.as_ptr() as *const u8, libc::CMSG_DATA(cm), fd_bytes);
        }
    }
    // SAFETY: `msg` points at live buffers of the lengths it declares.
    let n = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    (&*s).write_all(&frame[n as usize..])
}

fn me() -> String {
    std::process::id().to_string()
}

/// The reading verbs, each bounded by a 1 s duration.
fn reading_verbs(d: &Dir) -> Vec<(&'static str, Vec<String>)> {
    let rec = d.0.join("out.rec").display().to_string();
    let p = me();
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        ("trace", v(&["trace", "--duration", "1s", "-p", &p])),
        ("hist", v(&["hist", "--duration", "1s", "-p", &p])),
        (
            "record",
            v(&["record", "-o", &rec, "--duration", "1s", "-p", &p]),
        ),
    ]
}

fn run(d: &Dir, args: &[String]) -> Output {
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    d.tracer_within(HANG, &a)
}

#[test]
fn crafted_rings_end_every_reading_verb_with_an_error() {
    for (sc, words) in [
        (
            Scenario::HugeCapacity,
            &["bad event buffer", "smaller than its declared size"][..],
        ),
        (
            Scenario::BeyondMemfd,
            &["bad event buffer", "declares 1048576 bytes", "holds 4096"],
        ),
        (Scenario::Wrapped, &["corrupt", "thread 4242"]),
        (
            Scenario::OffsetOverflow,
            &[
                "bad event buffer",
                "at offset 18446744073709547520",
                "holds 4096",
            ],
        ),
        (
            Scenario::OffsetUnaligned,
            &["bad event buffer", "offset 100", "page size"],
        ),
        (
            Scenario::MissingFd,
            &[
                "bad event buffer",
                "names descriptor 3 of the 1 it attached",
            ],
        ),
    ] {
        let d = Dir::with_sockets();
        let _fake = Fake::start(&d.sockets(), std::process::id(), sc);
        // Verbs that do not read rings are unaffected.
        ended(&d.tracer_within(HANG, &["list", "-p", &me()]), 0, &[]);
        ended(&d.tracer_within(HANG, &["status", "-p", &me()]), 0, &[]);
        for (verb, args) in reading_verbs(&d) {
            let o = run(&d, &args);
            eprintln!("{sc:?} {verb}: {}", stderr(&o).trim());
            ended(&o, 1, words);
            assert!(stderr(&o).contains("restart it"), "{verb}: {}", stderr(&o));
        }
    }
}

#[test]
fn random_events_are_shown_not_crashed_on() {
    let d = Dir::with_sockets();
    let _fake = Fake::start(&d.sockets(), std::process::id(), Scenario::Garbage);
    let p = me();
    let mut verbs = reading_verbs(&d);
    verbs.push((
        "graph",
        ["trace", "--graph", "--duration", "1s", "-p", &p]
            .map(String::from)
            .to_vec(),
    ));
    for (verb, args) in verbs {
        let o = run(&d, &args);
        eprintln!("garbage {verb}: {}", stderr(&o).trim());
        ended(&o, 0, &[]);
    }
    let rec = d.0.join("out.rec").display().to_string();
    ended(&d.tracer_within(HANG, &["report", &rec]), 0, &[]);
    let (chrome, folded) = (d.0.join("c.json"), d.0.join("f.txt"));
    ended(
        &d.tracer_within(
            HANG,
            &[
                "export",
                &rec,
                "--chrome",
                &chrome.display().to_string(),
                "--folded",
                &folded.display().to_string(),
            ],
        ),
        0,
        &[],
    );
}

/// `list` over pages of functions as an agent writes them and odd ones:
/// the output is, byte for byte, what it was when every page was read as a
/// JSON value (the odd ones are shown as they came, not refused).
#[test]
fn listed_pages_of_odd_functions_are_written_as_before() {
    let d = Dir::with_sockets();
    let _fake = Fake::start(&d.sockets(), std::process::id(), Scenario::Pages);
    let p = me();
    let mut funcs: Vec<Value> = Vec::new();
    for page in PAGES {
        let v: Value = serde_json::from_str(page).unwrap();
        funcs.extend(v.as_array().unwrap().iter().cloned());
    }
    assert_eq!(funcs.len(), 5);
    let (json, text) = crate::cli::list_outputs_of(&funcs);
    let o = d.tracer_within(HANG, &["list", "--json", "-p", &p]);
    ended(&o, 0, &[]);
    assert_eq!(stdout(&o), json);
    assert!(
        !json.contains(|c: char| c.is_control() && c != '\n'),
        "{json}"
    );
    let o = d.tracer_within(HANG, &["list", "-p", &p]);
    ended(&o, 0, &[]);
    assert_eq!(stdout(&o), text);
}

#[test]
fn escape_sequences_from_an_agent_are_never_printed() {
    let d = Dir::with_sockets();
    let _fake = Fake::start(&d.sockets(), std::process::id(), Scenario::Escapes);
    let p = me();
    let mut outputs = vec![
        d.tracer_within(HANG, &["list", "-p", &p]),
        d.tracer_within(HANG, &["status", "-p", &p]),
        d.tracer_within(HANG, &["enable", "x", "-p", &p]),
    ];
    let json_out = [
        d.tracer_within(HANG, &["list", "--json", "-p", &p]),
        d.tracer_within(HANG, &["status", "--json", "-p", &p]),
    ];
    for o in &json_out {
        ended(o, 0, &[]);
        let t = stdout(o);
        assert!(
            !t.contains(|c: char| c.is_control() && c != '\n'),
            "raw control in JSON: {t:?}"
        );
        let v: Value = serde_json::from_str(&t).unwrap();
        assert!(v.to_string().contains("evil"), "{v}");
    }
    for (_, args) in reading_verbs(&d) {
        outputs.push(run(&d, &args));
    }
    let rec = d.0.join("out.rec").display().to_string();
    outputs.push(d.tracer_within(HANG, &["report", &rec]));
    for (i, o) in outputs.iter().enumerate() {
        assert_eq!(o.status.signal(), None);
        let all = [&o.stdout[..], &o.stderr[..]].concat();
        let text = String::from_utf8_lossy(&all);
        assert!(
            !all.iter().any(|b| *b == 0x1b || *b == 0x07) && !text.contains('\u{9b}'),
            "output {i} has raw control characters: {text:?}"
        );
    }
    let has = |i: usize, w: &str| {
        let t = stdout(&outputs[i]) + &stderr(&outputs[i]);
        assert!(t.contains(w), "output {i} lacks {w:?}: {t}");
    };
    has(0, "app::evil\\x{1b}]0;owned\\x{7}\\x{1b}[2J\\x{9b}31m");
    has(1, "app::evil\\x{1b}");
    // The agent's refusal is relayed, escaped.
    ended(&outputs[2], 1, &["refused: evil\\x{1b}"]);
    // The good ring's call shows under its escaped name.
    has(3, "app::evil\\x{1b}");
    has(4, "app::evil\\x{1b}");
    for o in &outputs[3..] {
        ended(o, 0, &[]);
    }
    has(6, "app::evil\\x{1b}");
}

#[test]
fn oversized_and_missing_replies_are_explained() {
    let d = Dir::with_sockets();
    let _fake = Fake::start(&d.sockets(), std::process::id(), Scenario::Oversized);
    let o = d.tracer_within(HANG, &["list", "-p", &me()]);
    ended(&o, 1, &["104857600 bytes", "limit of 67108864 bytes"]);

    for sc in [Scenario::Stall, Scenario::StallLater] {
        let d = Dir::with_sockets();
        let _fake = Fake::start(&d.sockets(), std::process::id(), sc);
        stalled_verbs(&d);
    }
}

/// Every reading verb facing a stalled agent ends soon after its duration
/// (the verbs run at once: each waits seconds for the agent).
fn stalled_verbs(d: &Dir) {
    std::thread::scope(|s| {
        for (verb, args) in reading_verbs(d) {
            s.spawn(move || {
                let t0 = Instant::now();
                let o = run(d, &args);
                eprintln!("stall {verb}: {:?} {}", t0.elapsed(), stderr(&o).trim());
                ended(
                    &o,
                    1,
                    &[
                        "did not answer",
                        "may still take effect",
                        "tracer status -p",
                    ],
                );
            });
        }
    });
}

#[test]
fn ctrl_c_ends_a_request_to_a_stalled_agent() {
    let d = Dir::with_sockets();
    let _fake = Fake::start(&d.sockets(), std::process::id(), Scenario::Stall);
    let mut child = Command::new(TRACER)
        .args(["list", "-p", &me()])
        .env("XDG_RUNTIME_DIR", &d.0)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < HANG, "Ctrl-C did not end a stalled request");
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = child.wait_with_output().unwrap();
    ended(&o, 1, &["interrupted while waiting", "tracer status -p"]);
}

#[test]
fn a_request_over_the_agents_limit_is_refused_before_sending() {
    let d = Dir::with_sockets();
    let _fake = Fake::start(&d.sockets(), std::process::id(), Scenario::Escapes);
    // 12 patterns of 100 KB: 1.2 MB, over the agent's 1 MiB.
    let pat = "a".repeat(100_000);
    let mut args = vec!["enable"];
    args.extend(std::iter::repeat_n(pat.as_str(), 12));
    let p = me();
    args.extend(["-p", &p]);
    let o = d.tracer_within(HANG, &args);
    ended(
        &o,
        1,
        &["limit of 1048576 bytes", "fewer or shorter patterns"],
    );
    assert!(!stderr(&o).contains("Broken pipe"), "{}", stderr(&o));
}

#[test]
fn durations_beyond_a_year_are_refused() {
    let d = Dir::with_sockets();
    let o = d.tracer_within(HANG, &["trace", "--duration", "99999999999s", "-p", &me()]);
    ended(&o, 2, &["one-year limit"]);
}

#[test]
fn untrusted_socket_directories_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let d = Dir::with_sockets();
    let dir = d.sockets();
    let _fake = Fake::start(&dir, std::process::id(), Scenario::Escapes);
    let shown = dir.display().to_string();

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = d.tracer_within(HANG, &["list", "-p", &me()]);
    ended(
        &o,
        3,
        &[
            "refusing the socket directory",
            &shown,
            "0777",
            "XDG_RUNTIME_DIR",
        ],
    );
    // Found without -p too: the same refusal, not a list of impostors.
    let o = d.tracer_within(HANG, &["status"]);
    ended(&o, 3, &["refusing the socket directory", &shown]);

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let o = d.tracer_within(HANG, &["list", "-p", &me()]);
    ended(
        &o,
        3,
        &[
            "refusing the socket directory",
            &shown,
            "uid 65534",
            "remove it",
        ],
    );

    // Given back to the process's user: served.
    std::os::unix::fs::chown(&dir, Some(0), Some(0)).unwrap();
    ended(&d.tracer_within(HANG, &["list", "-p", &me()]), 0, &[]);
}

#[test]
fn a_socket_served_by_another_process_is_refused() {
    let d = Dir::with_sockets();
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let target = sleeper.id();
    // This test process answers on the sleeper's socket.
    let _fake = Fake::start(&d.sockets(), target, Scenario::Escapes);
    let o = d.tracer_within(HANG, &["status", "-p", &target.to_string()]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    ended(
        &o,
        3,
        &[
            &format!("served by process {}", std::process::id()),
            &format!("not by process {target}"),
            "impersonating",
        ],
    );
}

/// A real traced process running as uid 65534, its socket where that user's
/// agent puts it (`XDG_RUNTIME_DIR` of its own, or `/tmp/tracer-65534`):
/// this program, run as root with another runtime directory, finds it, and
/// checks the directory and the peer against uid 65534, not its own.
#[test]
fn root_finds_and_serves_another_users_agent() {
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    const FIXTURE: &str = env!("CARGO_BIN_EXE_tracer-fixture");
    let root = Dir::with_sockets();
    let user = Dir::with_sockets();
    std::fs::remove_dir(user.sockets()).unwrap();
    std::os::unix::fs::chown(&user.0, Some(65534), Some(65534)).unwrap();
    for xdg in [Some(&user.0), None] {
        let mut c = Command::new(FIXTURE);
        c.uid(65534)
            .gid(65534)
            .stdout(Stdio::null())
            .env_remove("TRACER_AGENT");
        match xdg {
            Some(d) => c.env("XDG_RUNTIME_DIR", d),
            None => c.env_remove("XDG_RUNTIME_DIR"),
        };
        let mut fx = c.spawn().unwrap();
        let pid = fx.id();
        let sock = match xdg {
            Some(d) => d.join("tracer").join(format!("{pid}.sock")),
            None => PathBuf::from(format!("/tmp/tracer-65534/{pid}.sock")),
        };
        let t0 = Instant::now();
        while !sock.exists() && t0.elapsed() < HANG {
            std::thread::sleep(Duration::from_millis(5));
        }
        let o = root.tracer_within(HANG, &["list", "--json", "-p", &pid.to_string()]);
        let _ = fx.kill();
        let _ = fx.wait();
        let _ = std::fs::remove_file(&sock);
        ended(&o, 0, &[]);
        assert!(
            stdout(&o).contains("tracer_fixture::slow"),
            "{xdg:?}: {}",
            stdout(&o)
        );
    }
}
