//! The agent and the shared-memory reader, exercised inside one process (so
//! it also runs under qemu-user, where a test cannot spawn ARM programs):
//! the process connects to its own agent socket as the `tracer` program
//! would, lists and enables functions, attaches, drains its own rings
//! through the memfd mappings, and checks every call arrives, paired.
//!
//! Its own test binary, not a module of `tests/it`: a process that links the
//! runtime has an agent answering for its pid, and the `hostile` tests
//! there serve fake agents for theirs.
use serde_json::json;
use std::collections::HashMap;
use std::hint::black_box;
use tracer_cli::client::Client;
use tracer_cli::reader::Reader;

#[tracer::traceable]
fn attach_leaf(x: u64) -> u64 {
    black_box(x + 1)
}

#[tracer::traceable]
fn attach_outer(x: u64) -> u64 {
    attach_leaf(x) * 2
}

#[test]
fn own_agent_lists_enables_and_hands_over_the_rings() {
    black_box(attach_outer(1));
    let pid = std::process::id() as i32;
    // The constructor created the agent's socket before main.
    let mut c = Client::connect(pid).expect("the agent of this very process");
    let v = c.call("list", json!({ "pattern": "attach_*" })).unwrap();
    let names: Vec<String> = v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("attach_leaf")),
        "{names:?}"
    );
    let v = c.call("enable", json!({ "pattern": "attach_*" })).unwrap();
    assert_eq!(v["changed"].as_array().unwrap().len(), 2, "{v}");

    let mut reader = Reader::attach(Client::connect(pid).unwrap()).expect("attach");
    let workers: Vec<_> = (0..3)
        .map(|t| std::thread::spawn(move || (0..5000u64).map(|i| attach_outer(i + t)).sum::<u64>()))
        .collect();
    for w in workers {
        black_box(w.join().unwrap());
    }
    let leaf = tracer_fn_index("attach_leaf");
    let outer = tracer_fn_index("attach_outer");
    let mut exits: HashMap<u32, u64> = HashMap::new();
    let mut entries = 0u64;
    // Drain until every call of the workers has arrived (or the rings say
    // they dropped some).
    for _ in 0..2000 {
        reader
            .poll_each(|_, e| {
                if e.kind == tracer::__private::KIND_EXIT {
                    *exits.entry(e.func).or_default() += 1;
                } else {
                    entries += 1;
                }
            })
            .unwrap();
        if exits.get(&outer).copied().unwrap_or(0) >= 15_000 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let lost: u64 = reader.losses().iter().map(|l| l.dropped).sum();
    reader.detach();
    let v = c.call("disable", json!({ "pattern": "attach_*" })).unwrap();
    assert_eq!(v["changed"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(lost, 0, "3 x 5000 calls fit the default rings");
    assert_eq!(exits.get(&outer).copied(), Some(15_000));
    assert_eq!(exits.get(&leaf).copied(), Some(15_000));
    assert_eq!(entries, 30_000);
}

fn tracer_fn_index(own: &str) -> u32 {
    tracer::__private::func_index(own).expect("registered")
}
