//! `--url` repeated and `--pub-url`: connections spread over the nodes of a cluster, and
//! deliveries that cross from the publishers' node to the subscribers'.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;

use common::start_cluster;
use serde_json::Value;

fn loadtest(args: &str) -> (std::process::Output, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_fanfare-loadtest"))
        .args(args.split_whitespace())
        .output()
        .expect("running fanfare-loadtest");
    let summary = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, summary)
}

fn connections(nodes: &[common::Node]) -> Vec<usize> {
    nodes
        .iter()
        .map(|n| n.connections.load(Ordering::Relaxed))
        .collect()
}

#[test]
fn connections_spread_over_the_urls() {
    let nodes = start_cluster(2);
    let (a, b) = (nodes[0].port, nodes[1].port);
    // 6 subscribers and 2 publishers: connections 0, 2, 4, 6 on A and 1, 3, 5, 7 on B.
    let (out, s) = loadtest(&format!(
        "fanout --url tcp://127.0.0.1:{a} --url tcp://127.0.0.1:{b} --subscribers 6 \
         --publishers 2 --rate 100 --workers 1 --no-pin --warmup 0.2 --duration 0.5 --drain 2"
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{s:#}\n{stderr}");
    assert_eq!(connections(&nodes), [4, 4], "{s:#}");
    assert_eq!(s["params"]["urls"].as_array().map(Vec::len), Some(2));
}

#[test]
fn publishers_on_their_own_node_reach_subscribers_on_others() {
    let nodes = start_cluster(3);
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    // Subscribers on the first two nodes, publishers on the third, over two processes.
    let (out, s) = loadtest(&format!(
        "fanout --url tcp://127.0.0.1:{} --url tcp://127.0.0.1:{} --pub-url tcp://127.0.0.1:{} \
         --subscribers 4 --publishers 2 --rate 100 --procs 2 --workers 1 --no-pin \
         --warmup 0.2 --duration 0.5 --drain 2",
        ports[0], ports[1], ports[2]
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{s:#}\n{stderr}");
    assert_eq!(connections(&nodes), [2, 2, 2], "{s:#}");
    let delivered = s["delivered"].as_u64().expect("delivered");
    assert!(delivered > 0, "{s:#}");
    assert_eq!(s["expected"].as_u64(), Some(delivered), "{s:#}");
    assert_eq!(s["params"]["pub_urls"].as_array().map(Vec::len), Some(1));
}
