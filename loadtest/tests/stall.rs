//! Coordinated omission: a broker that stalls for a second must show in the latency measured
//! from each message's intended send time, while the latency from its actual send time hides
//! it.
//!
//! The broker here knows just enough MQTT 3.1.1: CONNACK, SUBACK, PINGRESP, and every PUBLISH
//! forwarded at QoS 0 to the connections subscribed to exactly its topic. After forwarding the
//! `STALL_AT`-th QoS 1 publish it stops for `STALL` — reads nothing, answers nothing — before
//! its PUBACK. The generator runs `qos1` with `--inflight 1`, so its publisher cannot send
//! while the broker stalls: the messages the schedule meant to send then leave late, and only
//! their intended send time remembers it.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// The QoS 1 publish after which the broker stalls: half a second into a 50 msgs/s run.
const STALL_AT: u64 = 25;
const STALL: Duration = Duration::from_secs(1);

type Subscriptions = Arc<Mutex<HashMap<String, Vec<Sender<Vec<u8>>>>>>;

/// Starts the broker on a loopback port; it runs until the test process ends.
fn start_broker() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("bound").port();
    let subs: Subscriptions = Arc::default();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let subs = subs.clone();
            std::thread::spawn(move || {
                let _ = serve(stream, &subs);
            });
        }
    });
    port
}

/// One client: a poll loop over its socket (1 ms read timeout) and its forwarding queue.
fn serve(mut stream: TcpStream, subs: &Subscriptions) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(1)))?;
    stream.set_nodelay(true)?;
    let (tx, rx): (Sender<Vec<u8>>, Receiver<Vec<u8>>) = channel();
    let mut input = Vec::new();
    let mut qos1_publishes = 0u64;
    let mut buf = [0u8; 65536];
    loop {
        while let Ok(publish) = rx.try_recv() {
            stream.write_all(&publish)?;
        }
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => input.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        }
        while let Some((first, body, end)) = next_packet(&input) {
            let packet: Vec<u8> = input.drain(..end).collect();
            match first >> 4 {
                1 => stream.write_all(&[0x20, 2, 0, 0])?,
                8 => {
                    let topic = string_at(&packet, body + 2);
                    subs.lock()
                        .unwrap()
                        .entry(topic)
                        .or_default()
                        .push(tx.clone());
                    let (hi, lo) = (packet[body], packet[body + 1]);
                    stream.write_all(&[0x90, 3, hi, lo, 1])?;
                }
                3 => {
                    let qos = (first >> 1) & 3;
                    let topic = string_at(&packet, body);
                    let after_topic = body + 2 + topic.len();
                    let payload_at = after_topic + if qos > 0 { 2 } else { 0 };
                    forward(subs, &topic, &packet[payload_at..]);
                    if qos == 1 {
                        qos1_publishes += 1;
                        if qos1_publishes == STALL_AT {
                            std::thread::sleep(STALL);
                        }
                        let id = &packet[after_topic..after_topic + 2];
                        stream.write_all(&[0x40, 2, id[0], id[1]])?;
                    }
                }
                12 => stream.write_all(&[0xd0, 0])?,
                14 => return Ok(()),
                _ => {}
            }
        }
    }
}

/// Sends `payload` on `topic` at QoS 0 to every subscriber of exactly that topic.
fn forward(subs: &Subscriptions, topic: &str, payload: &[u8]) {
    let mut body = Vec::with_capacity(2 + topic.len() + payload.len());
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(payload);
    let mut packet = vec![0x30];
    let mut len = body.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        packet.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    if let Some(targets) = subs.lock().unwrap().get(topic) {
        for target in targets {
            let _ = target.send(packet.clone());
        }
    }
}

/// The next whole MQTT packet: (first byte, offset of the variable header, total length).
fn next_packet(b: &[u8]) -> Option<(u8, usize, usize)> {
    let mut len = 0usize;
    for i in 0..4 {
        let byte = *b.get(1 + i)?;
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let body = 2 + i;
            return (b.len() >= body + len).then_some((b[0], body, body + len));
        }
    }
    None
}

fn string_at(b: &[u8], at: usize) -> String {
    let len = usize::from(u16::from_be_bytes([b[at], b[at + 1]]));
    String::from_utf8_lossy(&b[at + 2..at + 2 + len]).into_owned()
}

fn micros(summary: &Value, field: &str, quantile: &str) -> f64 {
    summary[field][quantile]
        .as_f64()
        .unwrap_or_else(|| panic!("{field}.{quantile} in {summary:#}"))
}

#[test]
fn a_broker_stall_shows_in_intended_latency_and_hides_in_actual() {
    let port = start_broker();
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
