//! The agent under pressure (issue 10): slow, stalled and idle clients never
//! delay a legitimate `tracer list` or a running `record`; connections
//! beyond the cap are refused with a reason; a socket-level fuzz of a live
//! agent leaves it serving with flat descriptors and memory; a program
//! short of file descriptors keeps its own; one agent per process.
//!
//! Each test runs its fixture with a private `XDG_RUNTIME_DIR`. Time limits
//! are generous (they catch the old 30 s stalls, not scheduling noise).

use crate::helpers::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A legitimate request must finish within this, however others behave
/// (the old agent made it wait 30 s and fail).
const PROMPT: Duration = Duration::from_secs(10);
/// Longer than the agent's `IDLE_EVICT` (1 s): a connection idle this long
/// makes room at the cap.
const IDLE_EVICT_PASSED: Duration = Duration::from_millis(1500);

impl Dir {
    /// `tracer list --json -p PID`, timed.
    fn timed_list(&self, pid: &str) -> (Output, Duration) {
        let t = Instant::now();
        let o = self.tracer(&["list", "--json", "-p", pid]);
        (o, t.elapsed())
    }

    fn status(&self, p: &Proc) -> Value {
        json(&self.tracer(&["status", "--json", "-p", &p.p()]))
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn connect(sock: &Path) -> UnixStream {
    let s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    s
}

fn reply(s: &mut UnixStream) -> std::io::Result<Value> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut b = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut b)?;
    serde_json::from_slice(&b).map_err(std::io::Error::other)
}

fn call(s: &mut UnixStream, req: Value) -> Value {
    s.write_all(&frame(&serde_json::to_vec(&req).unwrap()))
        .unwrap();
    reply(s).unwrap()
}

/// Descriptors open in process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Sockets open in process `pid` (the agent's listener and its
/// connections: the fixtures open no other).
fn sockets_open(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// Wait until the agent serves only the connection asking, then until it
/// has closed that one too (only its listening socket is left).
fn settle(d: &Dir, p: &Proc) {
    poll(
        || d.status(p)["agent"]["connections"] == 1,
        "the agent to close the test's connections",
    );
    poll(
        || sockets_open(p.pid()) == 1,
        "the agent to close the last connection",
    );
}

/// Has `s` something to read (data, or the end)?
fn readable(s: &UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

/// Make every worker's block, then stop tracing: the rings stop filling
/// (their pages would count in VmRSS as they are first written).
fn blocks_then_quiet(d: &Dir, p: &str) {
    ok(&d.tracer(&["enable", "fast", "-p", p]));
    ok(&d.tracer(&["hist", "--duration", "300ms", "-p", p]));
    ok(&d.tracer(&["disable", "fast", "-p", p]));
}

/// Framed replies in `b` (a connection's whole output).
fn count_frames(mut b: &[u8]) -> usize {
    let mut n = 0;
    while b.len() >= 4 {
        let len = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
        if b.len() < 4 + len {
            break;
        }
        b = &b[4 + len..];
        n += 1;
    }
    n
}

#[test]
fn stalled_clients_delay_neither_list_nor_a_running_record() {
    let d = Dir::new();
    let fx = d.fixture(&["2"]);
    let p = fx.p();
    ok(&d.tracer(&["enable", "*", "-p", &p]));
    let sock = d.sock(fx.pid());

    let (o, quiet) = d.timed_list(&p);
    ok(&o);

    // 20 idle connections.
    let idle: Vec<UnixStream> = (0..20).map(|_| connect(&sock)).collect();

    // One client trickling a request, a byte every 100 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let mut s = connect(&sock);
        let stop = stop.clone();
        std::thread::spawn(move || {
            let msg = frame(br#"{"v":1,"op":"status","pad":"..............................."}"#);
            let t = Instant::now();
            // Requests end to end, a byte at a time, until the agent hangs
            // up (or 15 s, so that an agent that never does fails the test
            // instead of hanging it).
            for b in msg.iter().cycle() {
                if stop.load(Ordering::Relaxed)
                    || t.elapsed() > PROMPT + PROMPT / 2
                    || s.write_all(&[*b]).is_err()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // Dropped by the agent once its whole-message deadline passed:
            // it wrote nothing back but the close.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            t.elapsed()
        })
    };

    // One client that sends requests and never reads a reply.
    let deaf = {
        let mut s = connect(&sock);
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let hello = frame(br#"{"v":1,"op":"hello"}"#);
            let t = Instant::now();
            while !stop.load(Ordering::Relaxed) && s.write_all(&hello).is_ok() {}
            t.elapsed()
        })
    };

    // A recording session running through all of it.
    let rec = d.0.join("t.rec");
    let recorder = d
        .cmd_args(
            TRACER,
            &[
                "record",
                "-o",
                rec.to_str().unwrap(),
                "--duration",
                "2s",
                "-p",
                &p,
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let (o, t) = d.timed_list(&p);
        let v = json(&o);
        assert!(v.as_array().unwrap().len() >= 4, "{v}");
        worst = worst.max(t);
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("list: {quiet:?} alone, at worst {worst:?} with 22 stalled or idle clients");
    assert!(
        worst < PROMPT,
        "list took {worst:?} next to stalled clients"
    );

    let r = recorder.wait_with_output().unwrap();
    assert!(stderr(&r).contains("recorded"), "{}", stderr(&r));
    ok(&r);
    let recording = tracer_cli::record::Recording::read(&rec).unwrap();
    assert!(recording.trailer.is_some(), "the recording has its trailer");

    let trickled = trickler.join().unwrap();
    assert!(
        trickled < PROMPT,
        "the trickling client was dropped after {trickled:?}"
    );
    let deafened = deaf.join().unwrap();
    assert!(
        deafened < Duration::from_secs(20),
        "the client that never reads was dropped after {deafened:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let a = d.status(&fx)["agent"].clone();
    eprintln!("agent counters: {a}");
    assert!(a["dropped_slow_request"].as_u64().unwrap() >= 1, "{a}");
    assert!(a["dropped_unread_reply"].as_u64().unwrap() >= 1, "{a}");
    drop(idle);
}

#[test]
fn connections_beyond_the_cap_are_refused_with_a_reason() {
    let d = Dir::new();
    let fx = d.fixture(&[]);
    let p = fx.p();
    let sock = d.sock(fx.pid());
    let cap = d.status(&fx)["agent"]["max_connections"].as_u64().unwrap() as usize;
    assert!((4..=32).contains(&cap), "cap {cap}");

    // cap + 5 connections at once, each in the middle of a request (not
    // idle, so none can be closed to make room).
    let conns: Vec<UnixStream> = (0..cap + 5)
        .map(|_| {
            let mut s = connect(&sock);
            s.write_all(&[9, 0]).unwrap();
            s
        })
        .collect();
    // The agent refuses the 5 beyond the cap at once.
    poll(
        || conns.iter().filter(|s| readable(s)).count() >= 5,
        "the refusals of the connections beyond the cap",
    );
    let mut refused = 0;
    for mut s in conns.iter() {
        s.set_nonblocking(true).unwrap();
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_ok() {
            let mut b = vec![0u8; u32::from_le_bytes(len) as usize];
            s.set_nonblocking(false).unwrap();
            s.read_exact(&mut b).unwrap();
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["ok"], false, "{v}");
            assert!(
                v["error"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("limit of {cap} connections")),
                "{v}"
            );
            refused += 1;
        }
    }
    assert_eq!(refused, 5, "connections over the cap of {cap} are refused");

    // The real program says why (the agent keeps the refused connection
    // open until its request arrives, so it reads the refusal rather than
    // failing to send).
    let o = d.tracer(&["list", "-p", &p]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("limit of") && stderr(&o).contains("connections"),
        "{}",
        stderr(&o)
    );

    // Once the stalled requests' deadlines pass, the agent serves again.
    drop(conns);
    let (o, t) = d.timed_list(&p);
    ok(&o);
    assert!(t < PROMPT);

    // Idle connections do not lock anyone out: at the cap, one idle for a
    // second makes room (until then a new client is refused).
    let idle: Vec<UnixStream> = (0..cap).map(|_| connect(&sock)).collect();
    let mut served = None;
    poll(
        || {
            let (o, t) = d.timed_list(&p);
            let done = o.status.success();
            served = Some((o, t));
            done
        },
        "a list at the cap to be served once an idle connection made room",
    );
    let (o, t) = served.unwrap();
    ok(&o);
    assert!(t < PROMPT);
    assert!(d.status(&fx)["agent"]["evicted_idle"].as_u64().unwrap() >= 1);
    drop(idle);
}

/// xorshift64*: a seeded, reproducible generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One fuzzed message (already framed, or deliberately not).
fn fuzz_message(r: &mut Rng) -> Vec<u8> {
    let ops = [
        "hello", "list", "status", "attach", "rings", "detach", "enable", "disable", "", "lsit",
    ];
    let op = ops[r.below(ops.len() as u64) as usize];
    match r.below(14) {
        // A well-formed request, with odd fields.
        0..=7 => {
            let mut v = json!({"v": 1, "op": op});
            match r.below(6) {
                0 => v["pattern"] = json!(String::from_utf8_lossy(&r.bytes(8)).into_owned()),
                1 => v["pattern"] = json!(format!("nomatch{}*", r.next())),
                2 => v["known"] = json!((0..r.below(50)).map(|_| r.next()).collect::<Vec<_>>()),
                3 => v["known"] = json!("not a list"),
                4 => v["pattern"] = json!(r.next()),
                _ => {}
            }
            frame(&serde_json::to_vec(&v).unwrap())
        }
        // Random bytes in a frame.
        8 | 9 => {
            let n = r.below(200) as usize;
            frame(&r.bytes(n))
        }
        // JSON that is not a request.
        10 => {
            let bodies: [&[u8]; 6] = [
                b"[]",
                b"null",
                br#"{"v":"1","op":"hello"}"#,
                br#"{"v":1}"#,
                br#"{"v":2,"op":"hello"}"#,
                b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
            ];
            frame(bodies[r.below(bodies.len() as u64) as usize])
        }
        // Truncated: the header promises more than follows.
        11 => {
            let mut f = frame(br#"{"v":1,"op":"status"}"#);
            f.truncate(r.below(f.len() as u64) as usize);
            f
        }
        // Oversized header, with a little body.
        12 => {
            let mut f = (MAX + 1 + r.below(1 << 30) as u32).to_le_bytes().to_vec();
            f.extend_from_slice(&r.bytes(16));
            f
        }
        // Raw bytes, no frame at all.
        _ => {
            let n = 1 + r.below(64) as usize;
            r.bytes(n)
        }
    }
}

const MAX: u32 = 1 << 20;

/// Send `count` fuzzed messages over connections of up to 12 messages each
/// from `threads` threads; every connection is read to its end (replies
/// drained), so nothing is left to the agent's deadlines. Returns how many
/// messages were sent, over how many connections, and how many replies came
/// back (an error reply closes the connection, so later messages on it are
/// not read).
fn fuzz(sock: &Path, seed: u64, count: usize, threads: usize) -> (usize, usize, usize) {
    let sent = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(AtomicUsize::new(0));
    let replies = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let sock = sock.to_path_buf();
            let (sent, conns, replies) = (sent.clone(), conns.clone(), replies.clone());
            std::thread::spawn(move || {
                let mut r = Rng(seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                while sent.load(Ordering::Relaxed) < count {
                    let Ok(mut s) = UnixStream::connect(&sock) else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    s.set_read_timeout(Some(PATIENCE)).unwrap();
                    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                    let k = 1 + r.below(12) as usize;
                    let mut buf = Vec::new();
                    for _ in 0..k {
                        buf.extend_from_slice(&fuzz_message(&mut r));
                    }
                    // The agent may close early (an error reply ends the
                    // connection): a failed write is fine.
                    let _ = s.write_all(&buf);
                    sent.fetch_add(k, Ordering::Relaxed);
                    let _ = s.shutdown(std::net::Shutdown::Write);
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink);
                    conns.fetch_add(1, Ordering::Relaxed);
                    replies.fetch_add(count_frames(&sink), Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    (
        sent.load(Ordering::Relaxed),
        conns.load(Ordering::Relaxed),
        replies.load(Ordering::Relaxed),
    )
}

#[test]
fn fuzzing_a_live_agent_leaves_it_serving_with_flat_descriptors_and_memory() {
    let d = Dir::new();
    let fx = d.fixture(&["2"]);
    let p = fx.p();
    let sock = d.sock(fx.pid());
    blocks_then_quiet(&d, &p);

    // Warm up (allocator arenas, runtime), then take the baseline.
    let (warm, _, _) = fuzz(&sock, 1, 2_000, 4);
    settle(&d, &fx);
    let fd0 = fd_count(fx.pid());
    let rss0 = rss_kib(fx.pid());

    let t = Instant::now();
    // TRACER_FUZZ_MESSAGES=N runs a longer fuzz (default 20,000).
    let count = std::env::var("TRACER_FUZZ_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let (sent, conns, replies) = fuzz(&sock, 0x5eed_1234, count, 4);
    let took = t.elapsed();
    settle(&d, &fx);
    let fd1 = fd_count(fx.pid());
    let rss1 = rss_kib(fx.pid());
    eprintln!(
        "fuzz: {warm} + {sent} messages ({conns} connections, {replies} replies) in {took:?}; \
         descriptors {fd0} -> {fd1}; VmRSS {rss0} -> {rss1} KiB"
    );

    let v = json(&d.tracer(&["list", "--json", "-p", &p]));
    assert!(v.as_array().unwrap().len() >= 4);
    assert!(
        fd1 <= fd0,
        "the agent kept descriptors after the fuzz: {fd0} -> {fd1}"
    );
    assert!(
        rss1 <= rss0 + 4096,
        "VmRSS grew from {rss0} to {rss1} KiB over {sent} fuzzed messages"
    );
    let a = d.status(&fx)["agent"].clone();
    eprintln!("agent counters: {a}");
}

#[test]
fn many_rings_requests_on_one_connection_leave_no_memory_behind() {
    let d = Dir::new();
    let fx = d.fixture(&["2"]);
    let p = fx.p();
    blocks_then_quiet(&d, &p);
    let mut s = connect(&d.sock(fx.pid()));
    assert_eq!(call(&mut s, json!({"v": 1, "op": "attach"}))["ok"], true);
    // Without `known`, every reply hands every block again (and the agent
    // once remembered each hand-over: 12 MB after 500,000 requests).
    let req = frame(br#"{"v":1,"op":"rings","arena":true}"#);
    let batch = 500;
    let mut round = |n: usize| {
        for _ in 0..n / batch {
            let mut buf = Vec::with_capacity(req.len() * batch);
            for _ in 0..batch {
                buf.extend_from_slice(&req);
            }
            s.write_all(&buf).unwrap();
            for _ in 0..batch {
                let v = reply(&mut s).unwrap();
                assert_eq!(v["ok"], true, "{v}");
            }
        }
    };
    round(5_000);
    let rss0 = rss_kib(fx.pid());
    let fd0 = fd_count(fx.pid());
    let t = Instant::now();
    round(100_000);
    let rss1 = rss_kib(fx.pid());
    let fd1 = fd_count(fx.pid());
    eprintln!(
        "100,000 rings requests in {:?}: VmRSS {rss0} -> {rss1} KiB, descriptors {fd0} -> {fd1}",
        t.elapsed()
    );
    assert!(
        rss1 <= rss0 + 1024,
        "VmRSS grew from {rss0} to {rss1} KiB over 100,000 rings requests"
    );
    assert_eq!(fd0, fd1);
}

/// Descriptors of process `pid` that are the tracer's thread-block arena.
fn arena_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|t| t.to_string_lossy().contains("memfd:tracer-thread"))
        })
        .count()
}

/// The fixture with `threads` workers under `RLIMIT_NOFILE` `limit`, every
/// function enabled and 100 idle connections on top, once the connections
/// have aged enough for one to make room: its status.
fn short_of_descriptors(d: &Dir, limit: u64, threads: usize) -> (Proc, Value) {
    let mut c = d.cmd_args(FIXTURE, &[&threads.to_string()]);
    c.env("TRACER_FIXTURE_OPEN", "1");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        c.pre_exec(move || {
            let l = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut fx = d.start(c);
    let p = fx.p();
    let sock = d.sock(fx.pid());
    ok(&d.tracer(&["enable", "*", "-p", &p]));
    poll(
        || {
            d.status(&fx)["threads_detail"]
                .as_array()
                .is_some_and(|t| t.len() >= threads)
        },
        "a block for each worker",
    );
    let idle: Vec<UnixStream> = (0..100)
        .filter_map(|_| UnixStream::connect(&sock).ok())
        .collect();
    // Not a wait for a condition: the connections must age past the
    // agent's IDLE_EVICT (1 s) before one makes room for `status` below.
    std::thread::sleep(IDLE_EVICT_PASSED);

    let fds = fd_count(fx.pid());
    eprintln!(
        "RLIMIT_NOFILE {limit}, {threads} threads, {} idle connections: the program holds {fds} \
         descriptors, {} of them the arena's",
        idle.len(),
        arena_fds(fx.pid())
    );
    assert!(
        fx.running(),
        "the program's own open() failed: {}",
        fx.stderr()
    );
    assert!(
        fds as u64 + 16 <= limit,
        "{fds} descriptors open: the tracer took some of the program's last 16"
    );
    // Its status still comes through (an idle connection makes room).
    let st = d.status(&fx);
    assert!(st["agent"]["connections"].as_u64().unwrap() <= 8, "{st}");
    drop(idle);
    poll(
        || sockets_open(fx.pid()) == 1,
        "the agent to close the dropped connections",
    );
    assert!(
        fx.running(),
        "the program's own open() failed: {}",
        fx.stderr()
    );
    (fx, st)
}

#[test]
fn a_program_short_of_descriptors_keeps_its_own_and_every_thread_is_seen() {
    let d = Dir::new();
    // 40 threads, far more than the descriptors the tracer may take (it
    // leaves the program's last 32 alone): their blocks share the arena.
    let (fx, st) = short_of_descriptors(&d, 64, 40);
    let threads = st["threads_detail"].as_array().unwrap();
    assert!(threads.len() >= 40, "{st}");
    assert_eq!(st["not_visible"], 0, "{st}");
    assert!(threads.iter().all(|t| t["shared"] == true), "{st}");
    // 40 blocks of about 6 MiB (the default ring) fill segments of 64, 128
    // and 256 MiB: a descriptor per doubling, not per thread.
    let arena = arena_fds(fx.pid());
    assert!(
        (1..=3).contains(&arena),
        "{arena} arena descriptors for 40 threads' blocks"
    );
    assert_eq!(st["arena_segments"], arena, "{st}");
    // And a reader sees all of them.
    let p = fx.p();
    let out = ok(&d.tracer(&["trace", "--duration", "300ms", "-p", &p]));
    // Each thread's lines carry its number where ftrace puts the CPU.
    let seen: std::collections::HashSet<&str> = out
        .lines()
        .filter_map(|l| l.split_once(" [").and_then(|(_, r)| r.split_once(']')))
        .map(|(n, _)| n)
        .collect();
    assert!(
        seen.len() >= 40,
        "{} threads in the trace, 40 calling: {}",
        seen.len(),
        out.lines().take(20).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn a_program_without_room_for_the_arena_is_told_why() {
    let d = Dir::new();
    // So few descriptors that even the arena's first segment would take one
    // of the program's last 32: the blocks stay private, and status says so.
    let (fx, st) = short_of_descriptors(&d, 34, 4);
    let threads = st["threads_detail"].as_array().unwrap();
    let hidden: Vec<&Value> = threads
        .iter()
        .filter(|t| !t["not_visible"].is_null())
        .collect();
    assert!(!hidden.is_empty(), "{st}");
    assert_eq!(st["not_visible"].as_u64().unwrap() as usize, hidden.len());
    assert!(
        hidden[0]["not_visible"]
            .as_str()
            .unwrap()
            .contains("descriptors"),
        "{}",
        hidden[0]
    );
    assert_eq!(arena_fds(fx.pid()), 0);
    let human = ok(&d.tracer(&["status", "-p", &fx.p()]));
    assert!(
        human.contains("not visible: ") && human.contains("ulimit -n"),
        "{human}"
    );
}

/// Threads of `pid` named `tracer-agent`.
fn agent_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "tracer-agent")
        })
        .count()
}

#[test]
fn a_program_linking_tracer_and_preloaded_with_it_runs_one_agent() {
    let lib = preload();
    let d = Dir::new();
    let mut c = d.cmd_args(FIXTURE, &[]);
    c.env("LD_PRELOAD", lib);
    let fx = d.start(c);
    let p = fx.p();
    let v = json(&d.tracer(&["list", "--json", "-p", &p]));
    assert!(v.as_array().unwrap().len() >= 4, "{v}");
    assert_eq!(agent_threads(fx.pid()), 1, "one agent thread");
    ok(&d.tracer(&["enable", "fast", "-p", &p]));
    ok(&d.tracer(&["hist", "--duration", "300ms", "-p", &p]));
}

#[test]
fn the_arena_memfd_is_sealed_against_resizing() {
    let d = Dir::new();
    let fx = d.fixture(&["2"]);
    let p = fx.p();
    blocks_then_quiet(&d, &p);
    // The test process finds the socket through the fixture's environment.
    let mut c = tracer_cli::client::Client::connect(fx.pid() as i32).unwrap();
    c.call("attach", json!({})).unwrap();
    let (v, fds) = c.call_fds("rings", json!({"arena": true})).unwrap();
    assert!(!fds.is_empty(), "{v}");
    for fd in &fds {
        use std::os::fd::AsRawFd;
        let fd = fd.as_raw_fd();
        // SAFETY: fcntl and ftruncate on a descriptor this test owns.
        let (seals, shrink, grow) = unsafe {
            (
                libc::fcntl(fd, libc::F_GET_SEALS),
                libc::ftruncate(fd, 0),
                libc::ftruncate(fd, 1 << 40),
            )
        };
        assert!(
            seals >= 0,
            "F_GET_SEALS: {}",
            std::io::Error::last_os_error()
        );
        for seal in [libc::F_SEAL_SHRINK, libc::F_SEAL_GROW, libc::F_SEAL_SEAL] {
            assert_ne!(seals & seal, 0, "seals {seals:#x} lack {seal:#x}");
        }
        assert_eq!(shrink, -1, "a reader cannot shrink a ring's memfd");
        assert_eq!(grow, -1, "a reader cannot grow a ring's memfd");
    }
    // The agent's own copies are close-on-exec (a child the program starts
    // does not inherit them): their /proc entries say so.
    let fdinfo = std::fs::read_dir(format!("/proc/{}/fdinfo", fx.pid())).unwrap();
    let mut memfds = 0;
    for e in fdinfo.flatten() {
        let target = std::fs::read_link(format!(
            "/proc/{}/fd/{}",
            fx.pid(),
            e.file_name().to_string_lossy()
        ));
        if !target.is_ok_and(|t| t.to_string_lossy().contains("memfd:tracer-thread")) {
            continue;
        }
        memfds += 1;
        let info = std::fs::read_to_string(e.path()).unwrap();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap();
        assert_ne!(flags & libc::O_CLOEXEC as u32, 0, "{info}");
    }
    // Two threads' blocks, one arena segment.
    assert_eq!(memfds, 1, "{memfds} memfds");
    c.call("detach", json!({})).unwrap();
}

/// CPU time (user + system, in clock ticks) of process `pid`'s
/// `tracer-agent` thread.
fn agent_cpu_ticks(pid: u32) -> u64 {
    let task = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "tracer-agent")
        })
        .expect("an agent thread");
    let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Set process `pid`'s soft RLIMIT_NOFILE; returns the old one.
fn set_nofile(pid: u32, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(
        // SAFETY: prlimit with a valid out-pointer, reading first.
        unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) },
        0
    );
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    assert_eq!(
        // SAFETY: prlimit with valid pointers; same user, soft below hard.
        unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) },
        0,
        "prlimit: {}",
        std::io::Error::last_os_error()
    );
    old.rlim_cur
}

#[test]
fn accept_failures_back_off_instead_of_spinning() {
    let d = Dir::new();
    let fx = d.fixture(&[]);
    let p = fx.p();
    settle(&d, &fx);
    // No descriptor left (the limit at the lowest free one): every accept
    // fails with EMFILE while clients wait.
    let used: Vec<u64> = std::fs::read_dir(format!("/proc/{}/fd", fx.pid()))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let lowest_free = (0..).find(|n| !used.contains(n)).unwrap();
    let old = set_nofile(fx.pid(), lowest_free);
    let waiting: Vec<UnixStream> = (0..5).map(|_| connect(&d.sock(fx.pid()))).collect();
    // Not waits for a condition: the agent meets the failing accepts, then
    // its CPU is measured over a fixed window.
    std::thread::sleep(Duration::from_millis(300));
    let t0 = agent_cpu_ticks(fx.pid());
    std::thread::sleep(Duration::from_secs(2));
    let spent = agent_cpu_ticks(fx.pid()) - t0;
    set_nofile(fx.pid(), old);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    eprintln!("agent CPU while accept fails: {spent} ticks in 2 s ({hz} ticks/s)");
    assert!(
        spent * 4 < 2 * hz,
        "the agent spent {spent} ticks of 2 s ({hz}/s) retrying accept"
    );
    // The limit back, the waiting clients and new ones are served.
    let (o, t) = d.timed_list(&p);
    ok(&o);
    assert!(t < PROMPT);
    let a = d.status(&fx)["agent"].clone();
    assert!(a["accept_failures"].as_u64().unwrap() >= 1, "{a}");
    drop(waiting);
}
