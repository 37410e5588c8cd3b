//! Coordinated omission: a broker that stalls for a second must show in the latency measured
//! from each message's intended send time, while the latency from its actual send time hides
//! it.
//!
//! The broker (`common`) stops for `STALL` — reads nothing, answers nothing — after forwarding
//! the `STALL_AT`-th QoS 1 publish, before its PUBACK. The generator runs `qos1` with
//! `--inflight 1`, so its publisher cannot send while the broker stalls: the messages the
//! schedule meant to send then leave late, and only their intended send time remembers it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Misbehave, start_broker};
use serde_json::Value;

/// The QoS 1 publish after which the broker stalls: half a second into a 50 msgs/s run.
const STALL_AT: u64 = 25;
const STALL: Duration = Duration::from_secs(1);

fn micros(summary: &Value, field: &str, quantile: &str) -> f64 {
    summary[field][quantile]
        .as_f64()
        .unwrap_or_else(|| panic!("{field}.{quantile} in {summary:#}"))
}

#[test]
fn a_broker_stall_shows_in_intended_latency_and_hides_in_actual() {
    let port = start_broker(Misbehave::Stall {
        after: STALL_AT,
        pause: STALL,
    });
    let args = format!(
        "qos1 --url tcp://127.0.0.1:{port} --subscribers 1 --rate 50 --inflight 1 \
         --warmup 0 --duration 3 --drain 3 --workers 1 --no-pin --timeout 5"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_fanfare-loadtest"))
        .args(args.split_whitespace())
        .output()
        .expect("running fanfare-loadtest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args}: {stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}); stderr: {stderr}"));
    assert_eq!(summary["lost"].as_u64(), Some(0), "{summary:#}");
    assert!(stderr.contains("from intended send"), "{stderr}");
    // Every message after the stall was due at least a second before it arrived...
    let intended_max = micros(&summary, "intended_latency_us", "max");
    assert!(intended_max >= 900_000.0, "{summary:#}");
    // ...but was sent only after the stall, so its actual-send latency is that of a quiet
    // broker.
    let actual_max = micros(&summary, "latency_us", "max");
    assert!(actual_max < 900_000.0, "{summary:#}");
    assert!(
        micros(&summary, "intended_latency_us", "p99") > micros(&summary, "latency_us", "p99"),
        "{summary:#}"
    );
}
