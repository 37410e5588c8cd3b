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

/// The fanfare binary the workspace's tests built beside this test (`target/<profile>/`);
/// `cargo test --workspace` builds it before any test runs.
fn fanfare_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/procs-<hash> → target/<profile>/fanfare
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let binary = profile_dir.join("fanfare");
    assert!(
        binary.exists(),
        "{} missing: run `cargo build --bin fanfare` (or `cargo test --workspace`) first",
        binary.display()
    );
    binary
}

/// A real fanfare on a loopback port 0; killed on drop.
struct Fanfare(std::process::Child, u16);

impl Drop for Fanfare {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_fanfare() -> Fanfare {
    use std::io::BufRead;
    let mut child = Command::new(fanfare_binary())
        .args([
            "--shards",
            "1",
            "--tcp",
            "127.0.0.1:0",
            "--ws",
            "off",
            "--admin",
            "off",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting fanfare");
    let stdout = child.stdout.take().expect("stdout");
    let mut port = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("fanfare's output");
        if let Some(addr) = line.strip_prefix("listening tcp ") {
            port = addr.rsplit(':').next().and_then(|p| p.parse().ok());
        }
        if line == "ready" {
            break;
        }
    }
    Fanfare(child, port.expect("fanfare printed its tcp port"))
}

/// Runs the load generator under an open-file limit of `files`, soft and hard, as a machine
/// with that limit would.
fn loadtest_limited(files: u32, args: &str) -> (std::process::Output, Value) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {files} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_fanfare-loadtest"))
        .args(args.split_whitespace())
        .output()
        .expect("running fanfare-loadtest");
    let summary = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, summary)
}

#[test]
fn more_connections_than_one_process_may_hold() {
    let broker = start_fanfare();
    // 300 open files hold 200 connections per process: 500 subscribers and a publisher need
    // three processes.
    let run = |procs: usize| {
        loadtest_limited(
            300,
            &format!(
                "fanout --url tcp://127.0.0.1:{} --subscribers 500 --rate 20 --procs {procs} \
                 --workers 1 --no-pin --conn-rate 2000 --warmup 0.2 --duration 1 --drain 2 \
                 --timeout 10",
                broker.1
            ),
        )
    };
    let (out, _) = run(1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("use --procs 3"), "{stderr}");

    let (out, s) = run(3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{s:#}\n{stderr}");
    assert_eq!(s["connections"]["ok"], 501, "{s:#}");
    let processes = s["loadgen"]["processes"].as_array().expect("per process");
    assert_eq!(processes.len(), 3, "{s:#}");
    assert_eq!(sum(processes, "connections"), 501);
    for p in processes {
        assert!(p["connections"].as_u64().is_some_and(|c| c <= 200), "{s:#}");
    }
    // Every subscriber in every process got every message, and the parts add up.
    let delivered = s["delivered"].as_u64().expect("delivered");
    assert!(delivered >= 500, "{s:#}");
    assert_eq!(s["expected"].as_u64(), Some(delivered), "{s:#}");
    assert_eq!(sum(processes, "delivered"), delivered);
    assert_eq!(s["latency_us"]["samples"].as_u64(), Some(delivered));
}
