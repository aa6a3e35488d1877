//! The `tracer` program against real processes: every verb, protocol abuse,
//! a target dying mid-trace, record → report → export, histogram ordering.
//!
//! Each test runs its fixture and the program with a private
//! `XDG_RUNTIME_DIR`, so tests never see each other's processes (or other
//! programs of this user that link the tracer crate).

use crate::helpers::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn by_name<'a>(arr: &'a Value, suffix: &str) -> &'a Value {
    arr.as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("no {suffix} in {arr}"))
}

#[test]
fn list_finds_the_only_process_and_prints_json() {
    let d = Dir::new();
    let _fx = d.fixture(&[]);
    let v = json(&d.tracer(&["list", "--json"]));
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for f in ["fast", "medium", "slow", "outer"] {
        assert!(
            names.contains(&format!("tracer_fixture::{f}").as_str()),
            "{names:?}"
        );
    }
    let slow = by_name(&v, "::slow");
    assert_eq!(slow["enabled"], false);
    assert!(slow["file"]
        .as_str()
        .unwrap()
        .ends_with("tracer-fixture.rs"));
    assert!(slow["line"].as_u64().unwrap() > 0);
    let text = ok(&d.tracer(&["list", "s*"]));
    assert!(
        text.contains("tracer_fixture::slow") && !text.contains("::fast"),
        "{text}"
    );
}

#[test]
fn unknown_pattern_names_the_closest_functions() {
    let d = Dir::new();
    let fx = d.fixture(&[]);
    let o = d.tracer(&["enable", "slwo", "-p", &fx.p()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("slow"), "{}", stderr(&o));
}

#[test]
fn enable_disable_and_status() {
    let d = Dir::new();
    let fx = d.fixture(&[]);
    let p = fx.p();
    let out = ok(&d.tracer(&["enable", "fast", "medium", "-p", &p]));
    assert!(out.contains("enabled tracer_fixture::fast"), "{out}");
    assert!(out.contains("enabled tracer_fixture::medium"), "{out}");
    let out = ok(&d.tracer(&["enable", "fast", "-p", &p]));
    assert!(out.contains("nothing changed"), "{out}");
    let st = json(&d.tracer(&["status", "--json", "-p", &p]));
    let enabled: Vec<&str> = st["enabled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(enabled, ["tracer_fixture::fast", "tracer_fixture::medium"]);
    assert!(["tsc", "monotonic"].contains(&st["clock"].as_str().unwrap()));
    assert_eq!(st["reader_attached"], false);
    poll(
        || json(&d.tracer(&["status", "--json", "-p", &p]))["threads"].as_u64() >= Some(1),
        "a thread with a buffer",
    );
    let text = ok(&d.tracer(&["status", "-p", &p]));
    assert!(text.contains("clock:") && text.contains("drops:"), "{text}");
    let out = ok(&d.tracer(&["disable", "*", "-p", &p]));
    assert!(out.contains("disabled tracer_fixture::fast"), "{out}");
    let v = json(&d.tracer(&["list", "--json", "-p", &p]));
    assert!(v.as_array().unwrap().iter().all(|f| f["enabled"] == false));
}

#[test]
fn buffer_sizes_the_rings_of_threads_that_start_later() {
    let d = Dir::new();
    let fx = d.fixture(&[]);
    let p = fx.p();
    ok(&d.tracer(&["enable", "fast", "-p", &p]));
    poll(
        || json(&d.tracer(&["status", "--json", "-p", &p]))["threads"].as_u64() >= Some(1),
        "a thread with a ring",
    );
    let o = d.tracer(&[
        "record",
        "-o",
        "/dev/null",
        "--duration",
        "200ms",
        "--buffer",
        "1000",
        "-p",
        &p,
    ]);
    ok(&o);
    // Rounded up to a power of two, for new threads; the running ones keep
    // theirs, and the user is told so and how to size them all.
    let err = stderr(&o);
    assert!(
        err.contains("rings of 1024 events") && err.contains("tracer run --buffer 1000"),
        "{err}"
    );
    let st = json(&d.tracer(&["status", "--json", "-p", &p]));
    assert_eq!(st["buffer_events"], 1024, "{st}");
    // A size the runtime cannot take is refused before anything is asked.
    let o = d.tracer(&["trace", "--buffer", "many", "-p", &p]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a number of events"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn hist_orders_functions_by_their_work() {
    let d = Dir::new();
    let fx = d.fixture(&[]);
    let v = json(&d.tracer(&[
        "hist",
        "fast medium slow",
        "--duration",
        "2s",
        "--json",
        "-p",
        &fx.p(),
    ]));
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3, "{v}");
    let (f, m, s) = (
        by_name(&v, "::fast"),
        by_name(&v, "::medium"),
        by_name(&v, "::slow"),
    );
    for x in [f, m, s] {
        let g = |k: &str| x[k].as_u64().unwrap();
        assert!(g("count") > 0);
        assert!(g("min") <= g("p50") && g("p50") <= g("p90") && g("p90") <= g("p99"));
        assert!(g("p99") <= g("p999") && g("p999") <= g("max"), "{x}");
    }
    let p50 = |x: &Value| x["p50"].as_u64().unwrap() as f64;
    // Work is 1 : 10 : 100; allow a wide margin for noise.
    assert!(p50(m) / p50(f) > 3.0, "{v}");
    assert!(p50(s) / p50(m) > 3.0, "{v}");
    assert!(p50(s) / p50(f) > 20.0, "{v}");
    // outer calls fast 4 times and medium twice for each slow.
    let c = |x: &Value| x["count"].as_u64().unwrap();
    assert!(c(f) >= 3 * c(s) && c(m) >= c(s), "{v}");
    // hist enabled them for the collection only.
    let st = json(&d.tracer(&["status", "--json", "-p", &fx.p()]));
    assert_eq!(st["enabled"].as_array().unwrap().len(), 0, "{st}");
    assert_eq!(st["reader_attached"], false);
}

#[test]
fn hist_text_has_table_and_log2_chart() {
    let d = Dir::new();
    let fx = d.fixture(&[]);
    let out = ok(&d.tracer(&["hist", "slow", "--duration", "500ms", "-p", &fx.p()]));
    assert!(out.contains("p99.9"), "{out}");
    assert!(out.contains("@tracer_fixture::slow (ns):"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with('[') && l.ends_with('|') && l.contains('@')),
        "{out}"
    );
    assert!(
        !out.contains('\x1b'),
        "no colour with NO_COLOR / without a terminal"
    );
}

#[test]
fn trace_graph_format() {
    let d = Dir::new();
    let fx = d.fixture(&[]);
    let p = fx.p();
    ok(&d.tracer(&["enable", "outer", "fast", "-p", &p]));
    let out = ok(&d.tracer(&["trace", "--graph", "--duration", "1s", "-p", &p]));
    let leaf = out
        .lines()
        .find(|l| l.ends_with("tracer_fixture::fast();"))
        .unwrap_or_else(|| panic!("no leaf line:\n{out}"));
    // ` 1)   2.215 us    |    tracer_fixture::fast();`
    let (cols, call) = leaf.split_once('|').unwrap();
    assert!(
        cols.trim_start().chars().next().unwrap().is_ascii_digit(),
        "{leaf}"
    );
    assert!(cols.trim_end().ends_with("us"), "{leaf}");
    assert!(
        call.starts_with("    tracer_fixture::fast"),
        "nested one level: {leaf}"
    );
    assert!(out.contains("|  tracer_fixture::outer() {"), "{out}");
    assert!(out.contains("} /* tracer_fixture::outer */"), "{out}");
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("# ") && last.contains("events") && last.contains("lost"),
        "{last}"
    );

    let out = ok(&d.tracer(&["trace", "--duration", "500ms", "-p", &p]));
    assert!(
        out.contains("tracer_fixture::fast <-tracer_fixture::outer"),
        "{out}"
    );

    let out = ok(&d.tracer(&[
        "trace",
        "--graph",
        "--depth",
        "1",
        "--duration",
        "500ms",
        "-p",
        &p,
    ]));
    assert!(out.contains("outer();") && !out.contains("fast"), "{out}");
}

#[test]
fn target_dying_mid_trace_ends_cleanly() {
    let d = Dir::new();
    let mut fx = d.fixture(&[]);
    let p = fx.p();
    ok(&d.tracer(&["enable", "slow", "-p", &p]));
    let mut tr = d
        .cmd_args(TRACER, &["trace", "--graph", "-p", &p])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tr.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let l = lines
            .next()
            .expect("trace ended before showing a call")
            .unwrap();
        let done = l.contains("tracer_fixture::slow();");
        seen.push(l);
        if done {
            break;
        }
    }
    fx.child.kill().unwrap();
    fx.child.wait().unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let st = tr.wait().unwrap();
    assert!(st.success(), "{st:?}: {seen:?} {rest:?}");
    let last = rest.last().unwrap_or_else(|| seen.last().unwrap());
    assert!(last.contains(&format!("process {p} ended")), "{last}");
}

#[test]
fn record_report_export_round_trip() {
    let d = Dir::new();
    let fx = d.fixture(&["2"]);
    let p = fx.p();
    ok(&d.tracer(&["enable", "*", "-p", &p]));
    let rec = d.0.join("t.rec");
    let rec_s = rec.to_str().unwrap();
    let o = d.tracer(&["record", "-o", rec_s, "--duration", "1500ms", "-p", &p]);
    ok(&o);
    assert!(stderr(&o).contains("recorded"), "{}", stderr(&o));

    let rows = json(&d.tracer(&["report", rec_s, "--json"]));
    let g = |r: &Value, k: &str| r[k].as_u64().unwrap();
    let outer = by_name(&rows, "::outer");
    let fast = by_name(&rows, "::fast");
    let slow = by_name(&rows, "::slow");
    assert!(g(outer, "calls") > 0);
    assert!(g(fast, "calls") >= 3 * g(outer, "calls"), "{rows}");
    assert!(
        g(outer, "self") < g(outer, "total"),
        "outer's callees are traced: {rows}"
    );
    assert_eq!(
        g(fast, "self"),
        g(fast, "total"),
        "fast calls nothing traced"
    );
    assert!(g(slow, "p50") > g(fast, "p50"));
    assert!(g(outer, "total") >= g(slow, "total"));
    for r in rows.as_array().unwrap() {
        assert!(
            g(r, "p50") <= g(r, "p99") && g(r, "p99") <= g(r, "max"),
            "{r}"
        );
        // The times are those of the calls that returned (calls still
        // running when the recording ended are counted, but not timed).
        let timed = g(r, "calls") - g(r, "not_returned");
        assert_eq!(g(r, "avg"), g(r, "total") / timed, "{r}");
    }
    // Default sort: total time, largest first.
    assert!(
        rows[0]["name"].as_str().unwrap().ends_with("::outer"),
        "{rows}"
    );
    let by_calls = json(&d.tracer(&["report", rec_s, "--json", "--sort", "calls"]));
    assert!(
        by_calls[0]["name"].as_str().unwrap().ends_with("::fast"),
        "{by_calls}"
    );
    let text = ok(&d.tracer(&["report", rec_s]));
    assert!(
        text.contains("self") && text.contains("tracer_fixture::medium"),
        "{text}"
    );

    let chrome = d.0.join("t.json");
    let folded = d.0.join("t.folded");
    ok(&d.tracer(&[
        "export",
        rec_s,
        "--chrome",
        chrome.to_str().unwrap(),
        "--folded",
        folded.to_str().unwrap(),
    ]));
    let c: Value = serde_json::from_slice(&std::fs::read(&chrome).unwrap()).unwrap();
    // Threads are named in the JSON.
    let thread_names = c["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .count();
    assert!(thread_names >= 2, "{c}");

    // Perfetto's protobuf format, decoded with Perfetto's own schema: a
    // slice for every call of the report, nested, threads named.
    let pf = d.0.join("t.pftrace");
    ok(&d.tracer(&["export", rec_s, "--perfetto", pf.to_str().unwrap()]));
    let check = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/perfetto_check.py");
    let o = Command::new("python3")
        .arg(&check)
        .arg(&pf)
        .output()
        .expect("python3 runs");
    assert!(
        o.status.success(),
        "decoding with Perfetto's schema failed (install it: pip install perfetto protobuf):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let p: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(p["nested"], true, "{p}");
    for r in rows.as_array().unwrap() {
        let name = r["name"].as_str().unwrap();
        assert_eq!(
            p["counts"][name].as_u64(),
            Some(g(r, "calls")),
            "{name}: {p}"
        );
    }
    assert!(p["threads"].as_array().unwrap().len() >= 2, "{p}");

    let evs: Vec<&Value> = c["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .collect();
    // Every call is an event: complete (`X`), or begun and still running
    // when the recording ended (`B`).
    let running = c["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "B")
        .count();
    let total_calls: u64 = rows.as_array().unwrap().iter().map(|r| g(r, "calls")).sum();
    assert_eq!((evs.len() + running) as u64, total_calls);
    assert!(evs
        .iter()
        .all(|e| e["ts"].as_f64().unwrap() >= 0.0 && e["dur"].as_f64().unwrap() >= 0.0));
    assert!(
        evs.iter().any(|e| e["ts"].as_f64() == Some(0.0)),
        "relative to the start"
    );
    let tids: std::collections::BTreeSet<u64> =
        evs.iter().map(|e| e["tid"].as_u64().unwrap()).collect();
    assert_eq!(tids.len(), 2, "two worker threads");
    let f = std::fs::read_to_string(&folded).unwrap();
    let line = f
        .lines()
        .find(|l| l.starts_with("tracer_fixture::outer;tracer_fixture::slow "))
        .unwrap_or_else(|| panic!("{f}"));
    assert!(line.rsplit(' ').next().unwrap().parse::<u64>().unwrap() > 0);

    let o = d.tracer(&["export", rec_s]);
    assert_eq!(o.status.code(), Some(2));
    std::fs::write(d.0.join("junk"), b"hello").unwrap();
    let o = d.tracer(&["report", d.0.join("junk").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("tracer record"), "{}", stderr(&o));
}

#[test]
fn run_enables_shows_and_returns_the_status() {
    let d = Dir::new();
    let o = d
        .cmd_args(
            TRACER,
            &["run", "--enable", "slow", "--hist", "--", FIXTURE],
        )
        .env("TRACER_FIXTURE_ROUNDS", "300")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}\n{}", stdout(&o), stderr(&o));
    // What the tracer prints goes to stderr: the program's stdout is its own.
    assert!(
        stderr(&o).contains("enabled tracer_fixture::slow"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("@tracer_fixture::slow (ns):"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("exited with status 3"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn no_agent_no_process_and_ambiguity_are_explained() {
    let d = Dir::new();
    let o = d.tracer(&["list"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("tracer demo"), "{}", stderr(&o));

    let sleeper = Proc::new(Command::new("sleep").arg("60").spawn().unwrap());
    let o = d.tracer(&["status", "-p", &sleeper.p()]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("cargo add tracer"), "{}", stderr(&o));

    let off = d.spawn(FIXTURE, &[], &[("TRACER_AGENT", "0")]);
    let o = d.tracer(&["status", "-p", &off.p()]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("TRACER_AGENT=0"), "{}", stderr(&o));

    let a = d.fixture(&[]);
    let b = d.fixture(&[]);
    let o = d.tracer(&["status"]);
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(
        e.contains("-p PID") && e.contains(&a.p()) && e.contains(&b.p()),
        "{e}"
    );
}

fn send(s: &mut UnixStream, bytes: &[u8]) {
    s.write_all(&(bytes.len() as u32).to_le_bytes()).unwrap();
    s.write_all(bytes).unwrap();
}

fn reply(s: &mut UnixStream) -> Value {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut b = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut b).unwrap();
    serde_json::from_slice(&b).unwrap()
}

fn closed(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn malformed_oversized_and_unknown_requests_are_refused() {
    let d = Dir::new();
    let fx = d.fixture(&[]);
    let sock: PathBuf = d.0.join("tracer").join(format!("{}.sock", fx.pid()));
    let connect = |p: &Path| {
        let s = UnixStream::connect(p).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s
    };

    let mut s = connect(&sock);
    send(&mut s, br#"{"v":1,"op":"hello"}"#);
    assert_eq!(reply(&mut s)["ok"], true);

    let cases: [(&[u8], &str); 4] = [
        (b"this is not json", "malformed"),
        (br#"[1,2,3]"#, "malformed"),
        (br#"{"v":99,"op":"hello"}"#, "version"),
        (br#"{"v":1,"op":"format_disk"}"#, "unknown"),
    ];
    for (msg, word) in cases {
        let mut s = connect(&sock);
        send(&mut s, msg);
        let r = reply(&mut s);
        assert_eq!(r["ok"], false, "{r}");
        assert!(r["error"].as_str().unwrap().contains(word), "{r}");
        assert!(closed(&mut s), "connection closed after {word}");
    }

    let mut s = connect(&sock);
    s.write_all(&(8u32 << 20).to_le_bytes()).unwrap();
    let r = reply(&mut s);
    assert!(r["error"].as_str().unwrap().contains("limit"), "{r}");
    assert!(closed(&mut s));

    // A client that sends half a message and vanishes.
    let mut s = connect(&sock);
    s.write_all(&100u32.to_le_bytes()).unwrap();
    s.write_all(b"{\"v\"").unwrap();
    drop(s);

    // The program and its agent are unaffected.
    let v = json(&d.tracer(&["list", "--json", "-p", &fx.p()]));
    assert!(v.as_array().unwrap().len() >= 4);
    assert!(std::fs::metadata(format!("/proc/{}", fx.pid())).is_ok());
}

/// `list`'s pages (issue 12: the agent sorts a selection once and cuts
/// the pages of it): whatever the page size, every function comes exactly
/// once, in name order, with `total` and `next` right; pages of another
/// pattern asked in between neither mix in nor lose their place; a
/// function's state changed between pages shows on the later ones.
#[test]
fn list_pages_give_every_function_once_in_name_order() {
    let d = Dir::new();
    let fx = d.fixture(&[]);
    let mut s = UnixStream::connect(d.sock(fx.pid())).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut page = |pattern: Option<&str>, from: u64, max: Option<u64>| -> Value {
        let mut req = serde_json::json!({"v": 1, "op": "list", "from": from});
        if let Some(p) = pattern {
            req["pattern"] = p.into();
        }
        if let Some(m) = max {
            req["max"] = m.into();
        }
        send(&mut s, &serde_json::to_vec(&req).unwrap());
        let r = reply(&mut s);
        assert_eq!(r["ok"], true, "{r}");
        r
    };
    let names = |r: &Value| -> Vec<String> {
        r["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    };
    let all = page(None, 0, None);
    let every = names(&all);
    assert!(every.len() >= 4, "{all}");
    assert_eq!(all["total"], every.len());
    assert_eq!(all["next"], Value::Null);
    let mut sorted = every.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(every, sorted, "not in name order, or a name twice");
    let s_star: Vec<String> = every
        .iter()
        .filter(|n| n.rsplit("::").next().unwrap().starts_with(['s', 't', 'f']))
        .cloned()
        .collect();
    assert!(s_star.len() >= 3, "{every:?}");

    for max in 1..=3u64 {
        let (mut got, mut other, mut from, mut other_from) = (Vec::new(), Vec::new(), 0, 0);
        loop {
            let r = page(None, from, Some(max));
            assert_eq!(r["total"], every.len(), "{r}");
            let n = names(&r);
            assert!(n.len() as u64 <= max && !n.is_empty(), "{r}");
            got.extend(n);
            // A page of another pattern in between.
            if other_from < s_star.len() as u64 {
                let o = page(Some("s* t* f*"), other_from, Some(1));
                assert_eq!(o["total"], s_star.len(), "{o}");
                other.extend(names(&o));
                other_from += 1;
            }
            match r["next"].as_u64() {
                Some(next) => {
                    assert_eq!(next, from + max, "{r}");
                    from = next;
                }
                None => break,
            }
        }
        assert_eq!(got, every, "pages of {max}");
        assert_eq!(other, s_star[..other.len()], "pages of 1 of s* t* f*");
    }

    // Enabled between two pages: the next page says so.
    let first = page(None, 0, Some(1));
    let second_name = every[1].clone();
    ok(&d.tracer(&["enable", &second_name, "-p", &fx.p()]));
    let second = page(None, 1, Some(1));
    assert_eq!(names(&second), [second_name], "{first} {second}");
    assert_eq!(second["functions"][0]["enabled"], true, "{second}");
    // Past the end: an empty page, no next.
    let past = page(None, every.len() as u64 + 5, Some(2));
    assert!(names(&past).is_empty() && past["next"].is_null(), "{past}");
}

/// What `list --json` and `list` wrote before they read the agent's pages
/// typed and streamed them (issue 12), made from `functions` as the agent
/// lists them: the array of `{"enabled", "file", "line", "name",
/// "problems"[, "signature"]}` maps pretty-printed, and the text lines.
pub fn list_outputs_of(functions: &[Value]) -> (String, String) {
    use tracer_cli::printable;
    let mut lines = tracer_cli::source::SourceLines::new();
    let (mut items, mut text) = (Vec::new(), String::new());
    for f in functions {
        let (file, line) = lines.of(f);
        let mut item = serde_json::json!({
            "name": f["name"], "file": file, "line": line,
            "enabled": f["enabled"], "problems": f["problems"],
        });
        if let Some(sig) = f["signature"].as_str().filter(|s| !s.is_empty()) {
            item["signature"] = sig.into();
        }
        let t = tracer_cli::printable_json(serde_json::to_string_pretty(&item).unwrap());
        items.push(format!("  {}", t.replace('\n', "\n  ")));
        let state = if f["enabled"] == true { "on " } else { "off" };
        let place = if line > 0 {
            format!("{}:{line}", printable(&file))
        } else {
            printable(&file).into_owned()
        };
        let name = printable(f["name"].as_str().unwrap_or("?")).into_owned();
        text += &format!("{state}  {name}  {place}\n");
        for p in f["problems"].as_array().into_iter().flatten() {
            let p = printable(p.as_str().unwrap_or("?")).into_owned();
            text += &format!("     problem: {p} (this pad is never written)\n");
        }
    }
    let json = if items.is_empty() {
        "[]\n".to_string()
    } else {
        format!("[\n{}\n]\n", items.join(",\n"))
    };
    (json, text)
}

/// `list --json` and `list` write, byte for byte, what the agent's list
/// says, as they did before reading its pages typed (the JSON shape is a
/// contract).
#[test]
fn list_output_is_exactly_the_agents_list() {
    let d = Dir::new();
    let fx = d.fixture(&[]);
    let p = fx.p();
    // One function enabled, so both states show.
    ok(&d.tracer(&["enable", "tracer_fixture::slow", "-p", &p]));
    let mut s = UnixStream::connect(d.sock(fx.pid())).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    send(&mut s, br#"{"v": 1, "op": "list"}"#);
    let all = reply(&mut s);
    let funcs = all["functions"].as_array().unwrap();
    assert!(funcs.len() >= 4, "{all}");
    assert!(funcs.iter().any(|f| f["enabled"] == true), "{all}");
    let (json, text) = list_outputs_of(funcs);
    assert_eq!(ok(&d.tracer(&["list", "--json", "-p", &p])), json);
    assert_eq!(ok(&d.tracer(&["list", "-p", &p])), text);
    let s_star: Vec<Value> = funcs
        .iter()
        .filter(|f| f["ident"].as_str().unwrap().starts_with('s'))
        .cloned()
        .collect();
    assert!(!s_star.is_empty());
    let (json, text) = list_outputs_of(&s_star);
    assert_eq!(ok(&d.tracer(&["list", "s*", "--json", "-p", &p])), json);
    assert_eq!(ok(&d.tracer(&["list", "s*", "-p", &p])), text);
}

#[test]
fn socket_and_directory_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let d = Dir::new();
    let fx = d.fixture(&[]);
    let dir = d.0.join("tracer");
    let sock = dir.join(format!("{}.sock", fx.pid()));
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A stale socket of a dead process is removed when the next agent starts.
    let stale = dir.join("999999999.sock");
    std::fs::write(&stale, b"").unwrap();
    let _fx2 = d.fixture(&[]);
    assert!(!stale.exists());
}

#[test]
fn demo_shows_a_graph_and_histograms() {
    let d = Dir::new();
    assert!(Path::new(DEMO).exists());
    let out = ok(&d.tracer(&["demo", "--duration", "1s"]));
    assert!(out.contains("function_graph"), "{out}");
    assert!(out.contains("tracer_demo::parse();"), "{out}");
    assert!(out.contains("@tracer_demo::Cache::lookup (ns):"), "{out}");
    assert!(out.contains("p99.9"), "{out}");
}

#[test]
fn help_has_an_example_per_verb() {
    for verb in [
        "list", "enable", "disable", "status", "trace", "hist", "record", "report", "export",
        "run", "demo",
    ] {
        let o = Command::new(TRACER)
            .args([verb, "--help"])
            .output()
            .unwrap();
        assert!(stdout(&o).contains("Example"), "{verb}: {}", stdout(&o));
    }
    let o = Command::new(TRACER).arg("--help").output().unwrap();
    assert!(stdout(&o).contains("Exit codes"));
    let o = Command::new(TRACER)
        .arg("hist")
        .arg("--duration")
        .arg("5")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("500ms"), "{}", stderr(&o));
}

/// Read lines from `r` until one satisfies `f`; returns all lines read.
fn lines_until(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    f: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let l = lines
            .next()
            .unwrap_or_else(|| panic!("output ended early: {seen:?}"))
            .unwrap();
        let done = f(&l);
        seen.push(l);
        if done {
            return seen;
        }
    }
}

#[test]
fn ctrl_c_ends_a_trace_with_a_summary_and_returns_the_rings() {
    let d = Dir::new();
    let fx = d.fixture(&[]);
    let p = fx.p();
    ok(&d.tracer(&["enable", "fast", "-p", &p]));
    let mut tr = d
        .cmd_args(TRACER, &["trace", "--graph", "-p", &p])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tr.stdout.take().unwrap()).lines();
    lines_until(&mut lines, |l| l.contains("tracer_fixture::fast();"));
    assert_eq!(
        json(&d.tracer(&["status", "--json", "-p", &p]))["reader_attached"],
        true
    );
    let second = d.tracer(&["trace", "--duration", "100ms", "-p", &p]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("already reading"),
        "{}",
        stderr(&second)
    );
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(tr.id() as i32, libc::SIGINT) }, 0);
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(tr.wait().unwrap().success());
    let last = rest.last().expect("a summary line");
    assert!(
        last.starts_with("# ") && last.ends_with("interrupted"),
        "{last}"
    );
    // The agent took the rings back: the in-process collector drains again.
    poll(
        || json(&d.tracer(&["status", "--json", "-p", &p]))["reader_attached"] == false,
        "the rings to be handed back",
    );
}

#[test]
fn record_is_flushed_and_closed_when_the_target_exits() {
    let d = Dir::new();
    let mut fx = d.fixture(&[]);
    let p = fx.p();
    ok(&d.tracer(&["enable", "outer", "-p", &p]));
    let rec = d.0.join("exit.rec");
    let mut r = d
        .cmd_args(TRACER, &["record", "-o", rec.to_str().unwrap(), "-p", &p])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until some events reached the file (it is flushed as it goes).
    poll(
        || {
            std::fs::metadata(&rec)
                .map(|m| m.len() > 4096)
                .unwrap_or(false)
        },
        "events in the recording",
    );
    fx.child.kill().unwrap();
    fx.child.wait().unwrap();
    let mut err = String::new();
    r.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(r.wait().unwrap().success(), "{err}");
    assert!(err.contains(&format!("process {p} ended")), "{err}");
    let rec = tracer_cli::record::Recording::read(&rec).unwrap();
    let t = rec.trailer.as_ref().expect("a trailer");
    assert_eq!(t.end, format!("process {p} ended"));
    assert_eq!(t.events, rec.events.len() as u64);
    assert!(rec
        .header
        .functions
        .iter()
        .any(|f| f == "tracer_fixture::outer"));
}

#[test]
fn an_enable_whose_client_vanishes_is_still_completed() {
    let d = Dir::new();
    let fx = d.fixture(&[]);
    let sock = d.0.join("tracer").join(format!("{}.sock", fx.pid()));
    let mut s = UnixStream::connect(&sock).unwrap();
    send(&mut s, br#"{"v":1,"op":"enable","pattern":"slow medium"}"#);
    drop(s);
    poll(
        || {
            let v = json(&d.tracer(&["list", "--json", "-p", &fx.p()]));
            by_name(&v, "::slow")["enabled"] == true && by_name(&v, "::medium")["enabled"] == true
        },
        "the batch to complete",
    );
}

#[test]
fn run_with_trace_streams_until_the_command_exits() {
    let d = Dir::new();
    let o = d
        .cmd_args(
            TRACER,
            &["run", "--enable", "outer", "--trace", "--", FIXTURE, "2"],
        )
        .env("TRACER_FIXTURE_ROUNDS", "200")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    // The trace goes to stderr; the program's stdout stays the program's.
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("tracer_fixture::outer();"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("# ") && l.contains("ended")),
        "{err}"
    );
    // Or to a file.
    let file = d.0.join("trace.txt");
    let o = d
        .cmd_args(
            TRACER,
            &[
                "run",
                "--enable",
                "outer",
                "--trace",
                "-o",
                file.to_str().unwrap(),
                "--",
                FIXTURE,
            ],
        )
        .env("TRACER_FIXTURE_ROUNDS", "100")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = std::fs::read_to_string(&file).unwrap();
    assert!(out.contains("tracer_fixture::outer();"), "{out}");
    assert!(out.lines().last().unwrap().contains("ended"), "{out}");
    assert!(!stderr(&o).contains("tracer_fixture::outer();"));
}

#[test]
fn hist_interval_prints_as_it_goes() {
    let d = Dir::new();
    let fx = d.fixture(&[]);
    let mut h = d
        .cmd_args(
            TRACER,
            &[
                "hist",
                "fast",
                "--interval",
                "200ms",
                "--json",
                "-p",
                &fx.p(),
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(h.stdout.take().unwrap()).lines();
    let got = lines_until(&mut lines, |l| {
        serde_json::from_str::<Value>(l)
            .map(|v| v.as_array().is_some_and(|a| !a.is_empty()))
            .unwrap_or(false)
    });
    let v: Value = serde_json::from_str(got.last().unwrap()).unwrap();
    assert!(by_name(&v, "::fast")["count"].as_u64().unwrap() > 0);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(h.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(h.wait().unwrap().success());
    let last: Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    assert!(
        by_name(&last, "::fast")["count"].as_u64() >= by_name(&v, "::fast")["count"].as_u64(),
        "cumulative"
    );
}

#[test]
fn overruns_are_counted_per_thread() {
    let d = Dir::new();
    let fx = d.spawn(
        FIXTURE,
        &[],
        &[
            ("TRACER_BUFFER_EVENTS", "64"),
            ("TRACER_FIXTURE_BURST", "5000"),
        ],
    );
    let sock = d.0.join("tracer").join(format!("{}.sock", fx.pid()));
    poll(|| sock.exists(), "the fixture's agent socket");
    let p = fx.p();
    ok(&d.tracer(&["enable", "tiny", "-p", &p]));
    let out = ok(&d.tracer(&["trace", "--graph", "--duration", "500ms", "-p", &p]));
    let last = out.lines().last().unwrap();
    assert!(last.contains("lost to full buffers (tid "), "{last}");
    assert!(last.contains("--buffer"), "says what to do: {last}");
    let st = json(&d.tracer(&["status", "--json", "-p", &p]));
    assert!(st["dropped"].as_u64().unwrap() > 0, "{st}");
    let t = &st["threads_detail"][0];
    assert_eq!(t["capacity"], 64);
    assert!(t["dropped"].as_u64().unwrap() > 0, "{st}");
    // A later session reports only its own losses: none, with nothing enabled.
    ok(&d.tracer(&["disable", "*", "-p", &p]));
    let out = ok(&d.tracer(&["trace", "--duration", "300ms", "-p", &p]));
    let last = out.lines().last().unwrap();
    assert!(last.contains("; 0 lost;"), "{last}");
    let rows = json(&d.tracer(&["hist", "--json", "--duration", "300ms", "-p", &p, "outer"]));
    let row = by_name(&rows, "outer");
    assert_eq!(row["lost_events"], 0, "{rows}");
}

#[test]
fn run_records_from_the_first_call() {
    let d = Dir::new();
    let rec = d.0.join("run.trace");
    let o = d
        .cmd_args(
            TRACER,
            &[
                "run",
                "--enable",
                "outer slow",
                "--buffer",
                "1048576",
                "--record",
                rec.to_str().unwrap(),
                "--",
                FIXTURE,
                "2",
            ],
        )
        .env("TRACER_FIXTURE_ROUNDS", "50")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}\n{}", stdout(&o), stderr(&o));
    let rows = json(&d.tracer(&["report", "--json", rec.to_str().unwrap()]));
    // Every call of the two threads, from the very first.
    for f in ["tracer_fixture::outer", "tracer_fixture::slow"] {
        let r = by_name(&rows, f);
        assert_eq!(r["calls"], 100, "{f}: {rows}");
        assert_eq!(r["lost_events"], 0, "{rows}");
    }
    // A ring size the runtime would not make is refused up front.
    let o = d.tracer(&["run", "--buffer", "3", "--", FIXTURE]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("64..="), "{}", stderr(&o));
}

#[test]
fn a_killed_reader_gives_the_rings_back() {
    let d = Dir::new();
    let fx = d.fixture(&[]);
    let p = fx.p();
    ok(&d.tracer(&["enable", "fast", "-p", &p]));
    let mut tr = d
        .cmd_args(TRACER, &["trace", "-p", &p])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tr.stdout.take().unwrap()).lines();
    lines_until(&mut lines, |l| l.contains("tracer_fixture::fast"));
    tr.kill().unwrap();
    tr.wait().unwrap();
    poll(
        || json(&d.tracer(&["status", "--json", "-p", &p]))["reader_attached"] == false,
        "the agent to notice the reader is gone",
    );
    // A new reader can attach and sees new calls.
    let out = ok(&d.tracer(&["trace", "--duration", "300ms", "-p", &p]));
    assert!(out.contains("tracer_fixture::fast <-"), "{out}");
}
