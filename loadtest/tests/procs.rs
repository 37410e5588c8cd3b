//! `--procs`: worker processes share the run, and the parent's one report adds them up.

mod common;

use std::process::Command;

use common::{Misbehave, start_broker};
use serde_json::Value;

fn loadtest(args: &str) -> (std::process::Output, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_fanfare-loadtest"))
        .args(args.split_whitespace())
        .output()
        .expect("running fanfare-loadtest");
    let summary = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, summary)
}

fn sum(processes: &[Value], key: &str) -> u64 {
    processes.iter().filter_map(|p| p[key].as_u64()).sum()
}

#[test]
fn two_processes_make_one_run() {
    let port = start_broker(Misbehave::None);
    // Subscribers and publishers land in both processes, so deliveries cross between them.
    let (out, s) = loadtest(&format!(
        "fanout --url tcp://127.0.0.1:{port} --subscribers 6 --publishers 2 --rate 200 \
         --procs 2 --workers 1 --no-pin --warmup 0.2 --duration 1 --drain 2 --timeout 5"
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{s:#}\n{stderr}");
    assert_eq!(s["params"]["procs"], 2);
    assert_eq!(s["connections"]["ok"], 8, "{s:#}");
    let processes = s["loadgen"]["processes"].as_array().expect("per process");
    assert_eq!(processes.len(), 2, "{s:#}");
    assert_eq!(sum(processes, "connections"), 8);

    // The merged counts are the sums of the parts, and every expected delivery arrived.
    let delivered = s["delivered"].as_u64().expect("delivered");
    assert!(delivered > 0, "{s:#}");
    assert_eq!(sum(processes, "delivered"), delivered);
    assert_eq!(
        sum(processes, "published"),
        s["published"].as_u64().unwrap()
    );
    assert_eq!(s["expected"].as_u64(), Some(delivered), "{s:#}");
    assert_eq!(s["latency_us"]["samples"].as_u64(), Some(delivered));

    // Each process bound its own loopback address and says which cores it had.
    let sources: Vec<&Value> = processes.iter().map(|p| &p["sources"]).collect();
    assert_eq!(sources[0][0], "127.0.0.1", "{s:#}");
    assert_eq!(sources[1][0], "127.0.0.2", "{s:#}");
    for p in processes {
        assert!(!p["cores"].as_array().expect("cores").is_empty(), "{s:#}");
        assert!(p["pid"].as_u64().is_some());
    }
    // One progress line per second, from the parent only, and one text report.
    assert_eq!(
        stderr.matches("connections: 8 of 8 ok").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("process 1 (pid "), "{stderr}");
}

#[test]
fn failures_in_a_worker_process_fail_the_run() {
    // Nothing listens there: every connection of both processes fails.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("bound")
        .port();
    let (out, s) = loadtest(&format!(
        "conn --url tcp://127.0.0.1:{port} --subscribers 4 --procs 2 --workers 1 --no-pin \
         --duration 0.5 --timeout 5"
    ));
    assert_eq!(out.status.code(), Some(1), "{s:#}");
    let failed = &s["connections"]["failed"];
    let total: u64 = ["connect", "timeout", "upgrade", "refused", "closed", "tls"]
        .iter()
        .filter_map(|k| failed[k].as_u64())
        .sum();
    assert_eq!(total, 4, "{s:#}");
    let errors = s["errors"].as_array().expect("errors");
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("process "))),
        "{s:#}"
    );
}
