//! A small MQTT 3.1.1 broker in the test process, plain TCP, that can misbehave on purpose.
//!
//! It knows just enough: CONNACK, SUBACK, PINGRESP, and every PUBLISH forwarded at QoS 0 to
//! the connections subscribed to exactly its topic, with a PUBACK for QoS 1.

// Each test file is its own crate and uses only some of the ways to misbehave.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Subscriptions = Arc<Mutex<HashMap<String, Vec<Sender<Vec<u8>>>>>>;

/// How the broker departs from a well-behaved one.
#[derive(Clone, Copy)]
pub enum Misbehave {
    /// Forwards everything, answers at once.
    None,
    /// After forwarding the `after`-th QoS 1 publish of a connection, reads nothing and
    /// answers nothing for `pause`, then sends its PUBACK.
    Stall { after: u64, pause: Duration },
    /// Forwards no publish whose number (from 1, per connection) is a multiple of this.
    DropEvery(u64),
}

/// Starts the broker on a loopback port; it runs until the test process ends.
pub fn start_broker(misbehave: Misbehave) -> u16 {
    start_node(Arc::default(), misbehave).port
}

/// One listener of the broker, and how many clients it has accepted.
pub struct Node {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
}

/// A "cluster": `nodes` listeners on their own ports sharing one set of subscriptions, so a
/// publish on one node reaches the subscribers of every node.
pub fn start_cluster(nodes: usize) -> Vec<Node> {
    let subs: Subscriptions = Arc::default();
    (0..nodes)
        .map(|_| start_node(subs.clone(), Misbehave::None))
        .collect()
}

fn start_node(subs: Subscriptions, misbehave: Misbehave) -> Node {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("bound").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            counter.fetch_add(1, Ordering::Relaxed);
            let subs = subs.clone();
            std::thread::spawn(move || {
                let _ = serve(stream, &subs, misbehave);
            });
        }
    });
    Node { port, connections }
}

/// One client: a poll loop over its socket (1 ms read timeout) and its forwarding queue.
fn serve(mut stream: TcpStream, subs: &Subscriptions, misbehave: Misbehave) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(1)))?;
    stream.set_nodelay(true)?;
    let (tx, rx): (Sender<Vec<u8>>, Receiver<Vec<u8>>) = channel();
    let mut input = Vec::new();
    let mut publishes = 0u64;
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
                    publishes += 1;
                    if !matches!(misbehave, Misbehave::DropEvery(n) if publishes.is_multiple_of(n))
                    {
                        forward(subs, &topic, &packet[payload_at..]);
                    }
                    if qos == 1 {
                        if let Misbehave::Stall { after, pause } = misbehave
                            && publishes == after
                        {
                            std::thread::sleep(pause);
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
