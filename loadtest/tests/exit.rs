//! Exit status for scripts: 0 when the run passed, 1 when it ran but a connection failed or
//! more messages were lost than `--max-loss` allows, 2 when it could not run.

mod common;

use std::net::TcpListener;
use std::process::{Command, Output};

use common::{Misbehave, start_broker};
use serde_json::Value;

fn loadtest(args: &str) -> (Output, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_fanfare-loadtest"))
        .args(args.split_whitespace())
        .output()
        .expect("running fanfare-loadtest");
    let summary = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, summary)
}

const SHORT: &str = "--warmup 0.2 --duration 1 --drain 2 --workers 1 --no-pin --timeout 5";

#[test]
fn a_clean_run_exits_zero() {
    let port = start_broker(Misbehave::None);
    let (out, summary) = loadtest(&format!(
        "fanout --url tcp://127.0.0.1:{port} --subscribers 2 --rate 200 {SHORT}"
    ));
    assert_eq!(out.status.code(), Some(0), "{summary:#}");
    assert_eq!(summary["failed_checks"], Value::Array(Vec::new()));
}

#[test]
fn loss_beyond_max_loss_exits_one() {
    // Every second publish is not forwarded: about half the deliveries are lost.
    let port = start_broker(Misbehave::DropEvery(2));
    let args = format!("fanout --url tcp://127.0.0.1:{port} --subscribers 2 --rate 200 {SHORT}");
    let (out, summary) = loadtest(&args);
    assert_eq!(out.status.code(), Some(1), "{summary:#}");
    let why = summary["failed_checks"][0].as_str().unwrap_or_default();
    assert!(why.contains("lost"), "{summary:#}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failed: "), "{stderr}");
    let (out, summary) = loadtest(&format!("{args} --max-loss 75"));
    assert_eq!(out.status.code(), Some(0), "{summary:#}");
}

#[test]
fn failed_connections_exit_one() {
    // A port nothing listens on: bound, then closed again.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("bound")
        .port();
    let (out, summary) = loadtest(&format!(
        "conn --url tcp://127.0.0.1:{port} --subscribers 3 {SHORT}"
    ));
    assert_eq!(out.status.code(), Some(1), "{summary:#}");
    assert!(
        summary["failed_checks"][0]
            .as_str()
            .is_some_and(|why| why.contains("connections failed")),
        "{summary:#}"
    );
}

#[test]
fn a_run_that_cannot_start_exits_two() {
    let (out, _) = loadtest("fanout --max-loss 101");
    assert_eq!(out.status.code(), Some(2));
}
