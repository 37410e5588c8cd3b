//! emqtt-bench's `pub` and `sub` run against a broker and mean what they say there.

mod common;

use std::process::Command;

use common::{Misbehave, start_broker};
use serde_json::Value;

fn run(args: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_fanfare-loadtest"))
        .args(args.split_whitespace())
        .output()
        .expect("running fanfare-loadtest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args}: {stderr}");
    serde_json::from_slice(&out.stdout).expect("the summary is JSON")
}

#[test]
fn pub_and_sub_in_emqtt_bench_flags() {
    let port = start_broker(Misbehave::None);
    let short = "--warmup 0 --duration 1 --drain 1 --workers 1 --no-pin";
    let s = run(&format!(
        "pub -h 127.0.0.1 -p {port} -c 2 -I 20 -t bench/%i -s 64 -q 1 {short}"
    ));
    assert_eq!(s["connections"]["ok"].as_u64(), Some(2), "{s:#}");
    assert_eq!(s["params"]["rate"].as_f64(), Some(100.0), "{s:#}");
    assert!(s["published"].as_u64().is_some_and(|n| n > 0), "{s:#}");
    let s = run(&format!(
        "sub -h 127.0.0.1 -p {port} -c 3 -t bench/%i {short}"
    ));
    assert_eq!(s["connections"]["ok"].as_u64(), Some(3), "{s:#}");
    assert_eq!(s["params"]["publishers"].as_u64(), Some(0), "{s:#}");
}
