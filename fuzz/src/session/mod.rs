//! Brokers of one to three shards driven as their event loops drive them, with virtual time:
//! connections come and go, send packets (built, or raw bytes) that go through the real decoder
//! to `Broker::packet`, time advances, keep-alive ticks run, fan-out continues and shards take
//! each other's mail. After every call the outbox is drained and checked against a model of the
//! network layer.
//!
//! Input: a configuration byte (shard count `1 + byte % 3`; bit 2: tight limits), then
//! [`Step`]s, read with `arbitrary` one byte per field (see [`Step::read`]), so that a seed is
//! easy to write ([`Step::write`]) and a mutated byte changes one field.
//!
//! What must hold after every call:
//! - every chunk goes to a connection of that shard that is open, with its current id, and that
//!   the broker did not already close; every close likewise, once (except the close of a slow
//!   consumer, which the broker asks for without forgetting the connection: docs/testing.md);
//! - every chunk is whole packets a client decodes at its version (one binary frame each over
//!   WebSocket), which encode back to the same bytes; only QoS 0 publishes may be dropped;
//! - a publish has a topic, or a Topic Alias the broker set on that connection before (an alias
//!   within the client's Topic Alias Maximum, set by a publish that may not be dropped and
//!   forgotten at reconnect [MQTT-3.3.2-7]); it fits the client's Maximum Packet Size
//!   [MQTT-3.1.2-24] (except a resend at reconnect: docs/testing.md), and uses a packet
//!   identifier not in flight on that connection [MQTT-2.2.1-3], within the client's window
//!   (min(Receive Maximum, `inflight_max`)) [MQTT-3.3.4-9];
//! - the broker counts as many connections as the model holds, and keeps its bounds;
//! - mail goes to another shard, and only when there are several.
//!
//! At the end, mail and fan-out drain within a bounded number of turns, and after `shutdown`
//! no connection is left and every remaining session is offline.

mod build;
mod check;
mod step;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use fanfare::broker::{Broker, Outbox, ShardMessage};
use fanfare::config::Limits;
use fanfare::conn::{ConnId, Transport};
use fanfare::protocol::mqtt::{
    Connect, DecodeLimits, Packet, Properties, PropertiesBuf, ProtocolVersion, QoS, Unsubscribe,
    decode, encode,
};

pub use build::{CLIENT_IDS, FILTERS, TOPICS};
pub use step::Step;

/// Connection slots per shard; a connection is named by its slot and the slot's generation,
/// as the network layer names them.
pub const SLOTS: usize = 4;

/// Steps read from one input, at most.
const STEPS_MAX: usize = 512;

/// Loop turns the final drain may take: shared subscription deliveries hop between shards at
/// most `SHARE_TRIES_MAX` (4) times, and a turn serves every session of these small shards.
const DRAIN_TURNS_MAX: usize = 32;

/// The fuzz target: a configuration byte, then steps until the input ends.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(config) = u8::arbitrary(&mut u) else {
        return;
    };
    let mut world = World::new(1 + usize::from(config % 3), config & 0b100 != 0);
    for _ in 0..STEPS_MAX {
        if u.is_empty() {
            break;
        }
        match Step::read(&mut u) {
            Ok(step) => world.step(&step),
            Err(_) => break,
        }
    }
    world.finish();
}

/// The limits of the brokers: small, so that a few steps reach them.
pub fn limits(tight: bool) -> Limits {
    let limits = Limits {
        packet_bytes_max: 4096,
        topic_bytes_max: 64,
        topic_levels_max: 8,
        client_id_bytes_max: 23,
        subscriptions_per_session_max: if tight { 2 } else { 8 },
        inflight_max: if tight { 2 } else { 8 },
        inbound_qos2_max: if tight { 1 } else { 8 },
        topic_aliases_max: if tight { 0 } else { 4 },
        topic_aliases_per_shard_max: if tight { 2 } else { 4 },
        session_queue_bytes_max: if tight { 200 } else { 4096 },
        retained_messages_max: if tight { 1 } else { 8 },
        connections_per_shard_max: SLOTS as u32,
        offline_sessions_per_shard_max: if tight { 1 } else { 4 },
        ..Limits::default()
    };
    assert_eq!(limits.validate(), Ok(()), "the fuzz limits are valid");
    limits
}

/// Where a connection stands, as the network layer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Connected: its packets go to the broker.
    Open,
    /// The network layer is closing it, after a decode error or a slow consumer close that the
    /// broker asked for; the broker knows it until `connection_lost`.
    Closing,
    /// The broker asked for its close and forgot it: nothing more may be sent to it.
    Closed,
}

/// One connection of the model.
struct Conn {
    state: State,
    transport: Transport,
    version: ProtocolVersion,
    /// Bytes received and not yet a whole packet (the network layer's spill).
    input: Vec<u8>,
    /// The client's Maximum Packet Size (MQTT 5 §3.1.2.11.4).
    packet_bytes_max: u32,
    /// QoS 1/2 publishes to the client that it has not completed: identifier and QoS; a QoS 2
    /// identifier stays until PUBCOMP.
    inflight: Vec<(u16, QoS)>,
    /// min(the client's Receive Maximum, `inflight_max`).
    window: usize,
    /// The client's Topic Alias Maximum (MQTT 5 §3.1.2.11.5): the aliases the broker may set.
    alias_max: u16,
    /// The topic of each alias the broker set on this connection, by alias - 1.
    aliases: Vec<Option<String>>,
}

struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

struct Shard {
    broker: Broker,
    slots: [Slot; SLOTS],
}

struct World {
    shards: Vec<Shard>,
    limits: Limits,
    decode_limits: DecodeLimits,
    /// Messages posted by one shard for another and not yet taken: `mail[from][to]`.
    mail: Vec<Vec<VecDeque<ShardMessage>>>,
    now: Instant,
}

impl World {
    fn new(shard_count: usize, tight: bool) -> World {
        let limits = limits(tight);
        let now = Instant::now();
        let shards = (0..shard_count)
            .map(|shard| Shard {
                broker: Broker::new(shard, shard_count, limits.clone(), now),
                slots: std::array::from_fn(|_| Slot {
                    generation: 1,
                    conn: None,
                }),
            })
            .collect();
        World {
            shards,
            decode_limits: limits.decode_limits(),
            limits,
            mail: vec![vec![VecDeque::new(); shard_count]; shard_count],
            now,
        }
    }

    fn step(&mut self, step: &Step) {
        match *step {
            Step::Connect {
                shard,
                client,
                flags,
                keep_alive,
                v5,
            } => self.connect_built(shard, client, flags, keep_alive, v5),
            Step::RawConnect { shard, ref bytes } => {
                if let Ok(Some((Packet::Connect(connect), used))) =
                    decode(bytes, None, &self.decode_limits)
                    && let Some((shard, slot)) = self.connect(shard, &connect, Transport::Tcp)
                {
                    self.receive(shard, slot, &bytes[used..]);
                }
            }
            Step::Publish {
                conn,
                topic,
                flags,
                id,
                payload,
            } => self.send_built(conn, |version, props| {
                build::publish(version, props, topic, flags, id, payload)
            }),
            Step::Subscribe {
                conn,
                filter,
                options,
                id,
            } => self.send_built(conn, |version, props| {
                build::subscribe(version, props, filter, options, id)
            }),
            Step::Unsubscribe { conn, filter, id } => self.send_built(conn, |_, _| {
                Packet::Unsubscribe(Unsubscribe {
                    packet_id: build::packet_id(id),
                    filters: vec![FILTERS[usize::from(filter) % FILTERS.len()]],
                    properties: Properties::EMPTY,
                })
            }),
            Step::Ack { conn, kind, id } => {
                self.send_built(conn, |version, _| build::ack(version, kind, id))
            }
            Step::PingReq { conn } => self.send_built(conn, |_, _| Packet::PingReq),
            Step::Disconnect { conn, flags } => self.send_built(conn, |version, props| {
                build::disconnect(version, props, flags)
            }),
            Step::Raw { conn, ref bytes } => {
                if let Some((shard, slot)) = self.open_conn(conn) {
                    self.receive(shard, slot, bytes);
                }
            }
            Step::Advance { amount } => {
                let step = match amount {
                    0..128 => Duration::from_millis(100 * u64::from(amount)),
                    _ => Duration::from_secs(30 * u64::from(amount - 127)),
                };
                self.now += step;
            }
            Step::Tick { shard } => {
                for shard in self.pick_shards(shard) {
                    let mut out = Outbox::default();
                    self.shards[shard].broker.tick(self.now, &mut out);
                    self.after(shard, out);
                }
            }
            Step::Lost { conn } => self.lost(conn),
            Step::Fanout { shard } => {
                for shard in self.pick_shards(shard) {
                    let mut out = Outbox::default();
                    self.shards[shard]
                        .broker
                        .continue_fanout(self.now, &mut out);
                    self.after(shard, out);
                }
            }
            Step::Mail { route } => {
                let n = self.shards.len();
                if n > 1 {
                    let from = usize::from(route) % n;
                    let to = (from + 1 + usize::from(route >> 4) % (n - 1)) % n;
                    let count = if route & 0x80 != 0 { usize::MAX } else { 1 };
                    self.take_mail(from, to, count);
                }
            }
        }
    }

    /// One shard (`byte % shards`), or all of them from 128 on.
    fn pick_shards(&self, byte: u8) -> std::ops::Range<usize> {
        let n = self.shards.len();
        match byte {
            0..128 => {
                let shard = usize::from(byte) % n;
                shard..shard + 1
            }
            _ => 0..n,
        }
    }

    /// The slot `byte` names, if it holds a connection.
    fn any_conn(&self, byte: u8) -> Option<(usize, usize)> {
        let index = usize::from(byte) % (self.shards.len() * SLOTS);
        let (shard, slot) = (index / SLOTS, index % SLOTS);
        self.shards[shard].slots[slot].conn.as_ref()?;
        Some((shard, slot))
    }

    /// The slot `byte` names, if it holds a connection whose packets reach the broker.
    fn open_conn(&self, byte: u8) -> Option<(usize, usize)> {
        let (shard, slot) = self.any_conn(byte)?;
        let conn = self.shards[shard].slots[slot].conn.as_ref()?;
        (conn.state == State::Open).then_some((shard, slot))
    }

    fn conn_id(&self, shard: usize, slot: usize) -> ConnId {
        let generation = self.shards[shard].slots[slot].generation;
        ConnId::new(slot as u32, generation)
    }

    fn connect_built(&mut self, shard: u8, client: u8, flags: u8, keep_alive: u8, v5: u8) {
        let (mut properties, mut will_properties) = (PropertiesBuf::new(), PropertiesBuf::new());
        let connect = build::connect(
            client,
            flags,
            keep_alive,
            v5,
            &mut properties,
            &mut will_properties,
        );
        let packet = Packet::Connect(connect);
        let mut bytes = Vec::new();
        encode(&packet, version_of(&packet), &mut bytes);
        match decode(&bytes, None, &self.decode_limits) {
            Ok(Some((decoded, used))) => {
                assert_eq!(
                    (&decoded, used),
                    (&packet, bytes.len()),
                    "CONNECT round trip"
                );
            }
            other => panic!("a CONNECT the encoder wrote does not decode: {other:?}"),
        }
        let Packet::Connect(connect) = packet else {
            unreachable!("built as a CONNECT")
        };
        self.connect(shard, &connect, build::transport(flags));
    }

    /// Opens a connection on a free slot of the shard that owns the client id (the network
    /// layer hands a CONNECT to that shard; an empty id stays on `shard`) and hands the broker
    /// its CONNECT. Returns the connection's place unless no slot was free.
    fn connect(
        &mut self,
        shard: u8,
        connect: &Connect<'_>,
        transport: Transport,
    ) -> Option<(usize, usize)> {
        let n = self.shards.len();
        let shard = match connect.client_id {
            "" => usize::from(shard) % n,
            id => Broker::owner_shard(id, n),
        };
        let slot = self.shards[shard]
            .slots
            .iter()
            .position(|slot| slot.conn.is_none())?;
        let receive_max = connect.properties.receive_maximum().unwrap_or(u16::MAX);
        let window = receive_max.min(self.limits.inflight_max);
        self.shards[shard].slots[slot].conn = Some(Conn {
            state: State::Open,
            transport,
            version: connect.version,
            input: Vec::new(),
            packet_bytes_max: connect
                .properties
                .maximum_packet_size_bytes()
                .unwrap_or(u32::MAX),
            inflight: Vec::new(),
            window: usize::from(window),
            alias_max: connect.properties.topic_alias_maximum().unwrap_or(0),
            aliases: Vec::new(),
        });
        let id = self.conn_id(shard, slot);
        let mut out = Outbox::default();
        self.shards[shard]
            .broker
            .connect(id, transport, connect, self.now, &mut out);
        self.after(shard, out);
        Some((shard, slot))
    }

    /// Builds a packet for the open connection `byte` names, at its version, checks that it
    /// decodes back, and receives its bytes.
    fn send_built(
        &mut self,
        byte: u8,
        build: impl for<'p> FnOnce(ProtocolVersion, &'p mut PropertiesBuf) -> Packet<'p>,
    ) {
        let Some((shard, slot)) = self.open_conn(byte) else {
            return;
        };
        let version = self.conn(shard, slot).version;
        let mut properties = PropertiesBuf::new();
        let packet = build(version, &mut properties);
        let mut bytes = Vec::new();
        encode(&packet, version, &mut bytes);
        match decode(&bytes, Some(version), &self.decode_limits) {
            Ok(Some((decoded, used))) => {
                assert_eq!((&decoded, used), (&packet, bytes.len()), "round trip");
            }
            Ok(None) => panic!("a whole packet is incomplete: {packet:?}"),
            // The decoder refuses what the spec forbids and a builder may make (No Local on a
            // shared subscription, a Topic Alias and no topic without a mapping, ...).
            Err(_) => {}
        }
        self.receive(shard, slot, &bytes);
    }

    fn conn(&self, shard: usize, slot: usize) -> &Conn {
        self.shards[shard].slots[slot]
            .conn
            .as_ref()
            .expect("a connection in this slot")
    }

    fn conn_mut(&mut self, shard: usize, slot: usize) -> &mut Conn {
        self.shards[shard].slots[slot]
            .conn
            .as_mut()
            .expect("a connection in this slot")
    }

    /// Bytes arrive on a connection: decoded after what it kept, packet by packet, each handed
    /// to the broker as the network layer does (`shard/ingest.rs`), even after the broker asked
    /// for its close in this read. A decode error closes the connection.
    fn receive(&mut self, shard: usize, slot: usize, bytes: &[u8]) {
        let id = self.conn_id(shard, slot);
        let conn = self.conn_mut(shard, slot);
        if conn.state != State::Open {
            return;
        }
        let version = conn.version;
        let mut input = std::mem::take(&mut conn.input);
        input.extend_from_slice(bytes);
        let mut used = 0;
        loop {
            match decode(&input[used..], Some(version), &self.decode_limits) {
                Ok(Some((packet, len))) => {
                    used += len;
                    self.client_sent(shard, slot, &packet);
                    let mut out = Outbox::default();
                    self.shards[shard]
                        .broker
                        .packet(id, &packet, self.now, &mut out);
                    self.after(shard, out);
                }
                Ok(None) => {
                    input.drain(..used);
                    let conn = self.conn_mut(shard, slot);
                    if conn.state == State::Open {
                        conn.input = input;
                    }
                    return;
                }
                Err(_) => {
                    let conn = self.conn_mut(shard, slot);
                    if conn.state == State::Open {
                        conn.state = State::Closing;
                    }
                    return;
                }
            }
        }
    }

    /// What the model learns from a packet the client sends: acknowledgements end flows.
    fn client_sent(&mut self, shard: usize, slot: usize, packet: &Packet<'_>) {
        let conn = self.conn_mut(shard, slot);
        let (ended, qos) = match packet {
            // Any reason ends a QoS 1 flow.
            Packet::PubAck(ack) => (ack.packet_id, QoS::AtLeastOnce),
            // A failure reason ends a QoS 2 flow at PUBREC (MQTT 5 §4.3.3).
            Packet::PubRec(ack) if ack.reason.is_error() => (ack.packet_id, QoS::ExactlyOnce),
            Packet::PubComp(ack) => (ack.packet_id, QoS::ExactlyOnce),
            _ => return,
        };
        conn.inflight.retain(|&entry| entry != (ended.get(), qos));
    }

    fn lost(&mut self, byte: u8) {
        let Some((shard, slot)) = self.any_conn(byte) else {
            return;
        };
        let id = self.conn_id(shard, slot);
        let place = &mut self.shards[shard].slots[slot];
        place.conn = None;
        place.generation += 1;
        let mut out = Outbox::default();
        self.shards[shard]
            .broker
            .connection_lost(id, self.now, &mut out);
        self.after(shard, out);
    }

    /// Hands up to `count` messages posted by `from` to `to`.
    fn take_mail(&mut self, from: usize, to: usize, count: usize) {
        for _ in 0..count {
            let Some(message) = self.mail[from][to].pop_front() else {
                return;
            };
            let mut out = Outbox::default();
            self.shards[to]
                .broker
                .shard_message(message, self.now, &mut out);
            self.after(to, out);
        }
    }

    /// Lets mail and fan-out run dry, then shuts every shard down.
    fn finish(mut self) {
        let n = self.shards.len();
        let mut quiet = false;
        for _ in 0..DRAIN_TURNS_MAX {
            for from in 0..n {
                for to in 0..n {
                    self.take_mail(from, to, usize::MAX);
                }
            }
            let mut pending = false;
            for shard in 0..n {
                let mut out = Outbox::default();
                pending |= self.shards[shard]
                    .broker
                    .continue_fanout(self.now, &mut out);
                self.after(shard, out);
            }
            let mail = self.mail.iter().flatten().any(|queue| !queue.is_empty());
            if !pending && !mail {
                quiet = true;
                break;
            }
        }
        assert!(
            quiet,
            "mail and fan-out drain within {DRAIN_TURNS_MAX} turns"
        );
        for shard in 0..n {
            let mut out = Outbox::default();
            self.shards[shard].broker.shutdown(&mut out);
            self.after(shard, out);
            let stats = self.shards[shard].broker.stats();
            assert_eq!(stats.connections, 0, "no connection after shutdown");
            assert_eq!(
                stats.sessions, stats.offline_sessions,
                "only offline sessions after shutdown"
            );
        }
    }
}

/// The version a CONNECT names.
fn version_of(packet: &Packet<'_>) -> ProtocolVersion {
    match packet {
        Packet::Connect(connect) => connect.version,
        _ => unreachable!("a CONNECT"),
    }
}
