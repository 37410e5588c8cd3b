//! Scenario tests: a `Broker` driven with packets and virtual time, its outbox decoded with the
//! codec's client-side decoder. This file holds the harness; each submodule one area.

mod admin;
mod bridges;
mod cluster;
mod connect;
mod origins;
mod qos;
mod retained;
mod session_writes;
mod share_groups;
mod store_unwritable;
mod topic_aliases;
mod v5;
mod wills;
mod wire;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
pub(super) use crate::conn::{Chunk, ConnId, Droppable, Transport};
use crate::protocol::mqtt::{
    ConnAck, Connect, ConnectReturnCode, DecodeLimits, Delivery, Packet, PacketId, Properties,
    ProtocolVersion, Publish, QoS, ReasonCode, Subscribe, SubscribeReturnCode, SubscriptionOptions,
    Will, decode_from_server,
};

/// A packet the broker sent, owned so tests can keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Got {
    ConnAck(bool, ConnectReturnCode),
    Publish(Pub),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    SubAck(u16, Vec<SubscribeReturnCode>),
    UnsubAck(u16),
    PingResp,
    /// MQTT 5 CONNACK: session present, reason, raw properties.
    ConnAck5(bool, ReasonCode, Vec<u8>),
    /// An MQTT 5 acknowledgement with a reason other than Success: packet type, id, reason.
    AckReason(u8, u16, ReasonCode),
    /// MQTT 5 UNSUBACK with its reasons.
    UnsubAck5(u16, Vec<ReasonCode>),
    /// MQTT 5 DISCONNECT from the server.
    Disconnect(ReasonCode),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pub {
    pub(super) topic: String,
    pub(super) payload: Vec<u8>,
    pub(super) qos: QoS,
    pub(super) id: Option<u16>,
    pub(super) retain: bool,
    pub(super) dup: bool,
    /// Raw MQTT 5 properties (empty for 3.x).
    pub(super) properties: Vec<u8>,
}

pub(super) fn id(value: u16) -> PacketId {
    PacketId::new(value).expect("test ids are non-zero")
}

pub(super) fn decode_all(bytes: &[u8], transport: Transport, version: ProtocolVersion) -> Vec<Got> {
    // The broker's output as a client reads it: whatever the protocol can express.
    let limits = DecodeLimits {
        packet_bytes_max: 268_435_460,
        topic_bytes_max: u16::MAX,
        topic_levels_max: u16::MAX,
        client_id_bytes_max: u16::MAX,
        filters_per_packet_max: u32::MAX,
    };
    let mut bytes = bytes;
    if transport == Transport::Ws {
        // One unmasked binary frame holding exactly one packet.
        assert_eq!(bytes[0], 0x82, "FIN + binary opcode");
        assert_eq!(bytes[1] & 0x80, 0, "server frames are not masked");
        let (len, header) = match bytes[1] {
            126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => (
                usize::try_from(u64::from_be_bytes(
                    bytes[2..10].try_into().expect("8 bytes"),
                ))
                .expect("fits"),
                10,
            ),
            len => (usize::from(len), 2),
        };
        bytes = &bytes[header..];
        assert_eq!(bytes.len(), len, "the frame holds the packet exactly");
    }
    let (packet, used) = decode_from_server(bytes, version, &limits)
        .expect("the broker sends valid packets")
        .expect("complete");
    assert_eq!(used, bytes.len(), "one packet per chunk");
    let v5 = version == ProtocolVersion::V5;
    let ack = |kind: u8, ack: &crate::protocol::mqtt::Ack<'_>| {
        (ack.reason != ReasonCode::SUCCESS)
            .then(|| Got::AckReason(kind, ack.packet_id.get(), ack.reason))
    };
    vec![match packet {
        Packet::ConnAck(ConnAck {
            session_present,
            reason,
            properties,
        }) if v5 => Got::ConnAck5(session_present, reason, properties.raw().to_vec()),
        Packet::PubAck(a) if v5 && ack(4, &a).is_some() => ack(4, &a).expect("checked"),
        Packet::PubRec(a) if v5 && ack(5, &a).is_some() => ack(5, &a).expect("checked"),
        Packet::PubComp(a) if v5 && ack(7, &a).is_some() => ack(7, &a).expect("checked"),
        Packet::UnsubAck(u) if v5 => Got::UnsubAck5(u.packet_id.get(), u.reasons),
        Packet::Disconnect(d) => Got::Disconnect(d.reason),
        Packet::ConnAck(ConnAck {
            session_present,
            reason,
            ..
        }) => Got::ConnAck(
            session_present,
            ConnectReturnCode::from_reason_code(reason).expect("a 3.x return code"),
        ),
        Packet::Publish(p) => Got::Publish(Pub {
            topic: p.topic.to_string(),
            payload: p.payload.to_vec(),
            qos: p.delivery.qos(),
            id: p.delivery.packet_id().map(PacketId::get),
            retain: p.retain,
            dup: p.dup,
            properties: p.properties.raw().to_vec(),
        }),
        Packet::PubAck(i) => Got::PubAck(i.packet_id.get()),
        Packet::PubRec(i) => Got::PubRec(i.packet_id.get()),
        Packet::PubRel(i) => Got::PubRel(i.packet_id.get()),
        Packet::PubComp(i) => Got::PubComp(i.packet_id.get()),
        Packet::SubAck(s) => Got::SubAck(s.packet_id.get(), s.codes),
        Packet::UnsubAck(i) => Got::UnsubAck(i.packet_id.get()),
        Packet::PingResp => Got::PingResp,
        other => panic!("a server never sends {other:?}"),
    }]
}

/// What one call produced, decoded.
#[derive(Debug, Default)]
pub(super) struct Step {
    pub(super) sends: Vec<(ConnId, Got, Droppable)>,
    pub(super) chunks: Vec<(ConnId, Chunk)>,
    pub(super) closes: Vec<(ConnId, CloseReason)>,
    pub(super) routed: Vec<Arc<RoutedMessage>>,
    pub(super) posted: Vec<(usize, ShardMessage)>,
    pub(super) to_remote: Vec<Arc<RoutedMessage>>,
    pub(super) cluster_tickets: Vec<(Arc<RoutedMessage>, u64)>,
    pub(super) connected_clients: Vec<Box<str>>,
}

impl Step {
    pub(super) fn to(&self, conn: u64) -> Vec<Got> {
        self.sends
            .iter()
            .filter(|(c, _, _)| *c == ConnId(conn))
            .map(|(_, got, _)| got.clone())
            .collect()
    }

    pub(super) fn publishes(&self, conn: u64) -> Vec<Pub> {
        self.to(conn)
            .into_iter()
            .filter_map(|got| match got {
                Got::Publish(p) => Some(p),
                _ => None,
            })
            .collect()
    }
}

pub(super) struct Harness {
    pub(super) broker: Broker,
    pub(super) t0: Instant,
    pub(super) wires: HashMap<ConnId, (Transport, ProtocolVersion)>,
}

#[derive(Clone)]
pub(super) struct Client<'a> {
    pub(super) id: &'a str,
    pub(super) clean: bool,
    pub(super) version: ProtocolVersion,
    pub(super) transport: Transport,
    pub(super) keep_alive_s: u16,
    pub(super) will: Option<Will<'a>>,
    /// CONNECT properties (MQTT 5).
    pub(super) properties: Properties<'a>,
    /// Bit 7 of the protocol level: another broker's bridge.
    pub(super) bridge: bool,
}

impl<'a> Client<'a> {
    pub(super) fn new(id: &'a str) -> Client<'a> {
        Client {
            id,
            clean: true,
            version: ProtocolVersion::V311,
            transport: Transport::Tcp,
            keep_alive_s: 0,
            will: None,
            properties: Properties::EMPTY,
            bridge: false,
        }
    }

    pub(super) fn v5(id: &'a str) -> Client<'a> {
        Client {
            version: ProtocolVersion::V5,
            ..Client::new(id)
        }
    }

    pub(super) fn persistent(mut self) -> Self {
        self.clean = false;
        self
    }

    /// The CONNECT this client sends.
    pub(super) fn connect_packet(&self) -> Connect<'a> {
        Connect {
            version: self.version,
            clean_session: self.clean,
            keep_alive_s: self.keep_alive_s,
            client_id: self.id,
            will: self.will.clone(),
            username: None,
            password: None,
            properties: self.properties,
            bridge: self.bridge,
        }
    }
}

/// The session images a flush takes, in the order taken; ended and moved ones left out.
pub(super) fn images(h: &mut Harness) -> Vec<SessionImage> {
    h.broker
        .take_session_writes()
        .into_iter()
        .filter_map(|write| match write {
            SessionWrite::Set(image) => Some(image),
            SessionWrite::Ended(_) | SessionWrite::Moved(_) => None,
        })
        .collect()
}

pub(super) fn publish<'a>(
    topic: &'a str,
    payload: &'a [u8],
    delivery: Delivery,
    retain: bool,
) -> Packet<'a> {
    Packet::Publish(Publish {
        dup: false,
        retain,
        delivery,
        topic,
        payload,
        properties: Properties::EMPTY,
    })
}

pub(super) fn subscribe<'a>(packet_id: u16, filters: &[(&'a str, QoS)]) -> Packet<'a> {
    Packet::Subscribe(Subscribe {
        packet_id: id(packet_id),
        filters: filters
            .iter()
            .map(|&(filter, qos)| (filter, SubscriptionOptions::new(qos)))
            .collect(),
        properties: Properties::EMPTY,
    })
}

impl Harness {
    pub(super) fn new() -> Harness {
        Harness::with(Limits::default(), 1)
    }

    pub(super) fn with(limits: Limits, shard_count: usize) -> Harness {
        let t0 = Instant::now();
        Harness {
            broker: Broker::new(0, shard_count, limits, t0),
            t0,
            wires: HashMap::new(),
        }
    }

    pub(super) fn at(&self, s: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(s)
    }

    /// Ends a loop turn: what the broker produced, with parked fan-out continued first as
    /// the shard does once per turn.
    pub(super) fn finish(&mut self, mut out: Outbox) -> Step {
        // The latest time the test gave the broker: a turn ends at the moment of its last event.
        let now = self.broker.now;
        self.broker.continue_fanout(now, &mut out);
        let mut step = Step::default();
        for (conn, chunk, droppable) in out.sends {
            let (transport, version) = self.wires[&conn];
            for got in decode_all(&chunk.to_vec(), transport, version) {
                step.sends.push((conn, got, droppable));
            }
            step.chunks.push((conn, chunk));
        }
        step.closes = out.closes;
        step.routed = out.to_other_shards;
        step.posted = out.to_shard;
        step.to_remote = out.to_remote;
        step.cluster_tickets = out.cluster_tickets;
        step.connected_clients = out.connected_clients;
        step
    }

    pub(super) fn connect_at(&mut self, conn: u64, client: &Client<'_>, s: f64) -> Step {
        let mut out = Outbox::default();
        let connect = client.connect_packet();
        self.wires
            .insert(ConnId(conn), (client.transport, client.version));
        let now = self.at(s);
        self.broker
            .connect(ConnId(conn), client.transport, &connect, now, &mut out);
        self.finish(out)
    }

    pub(super) fn connect(&mut self, conn: u64, client: &Client<'_>) -> Step {
        self.connect_at(conn, client, 0.0)
    }

    pub(super) fn packet_at(&mut self, conn: u64, packet: &Packet<'_>, s: f64) -> Step {
        let mut out = Outbox::default();
        let now = self.at(s);
        self.broker.packet(ConnId(conn), packet, now, &mut out);
        self.finish(out)
    }

    pub(super) fn packet(&mut self, conn: u64, packet: &Packet<'_>) -> Step {
        self.packet_at(conn, packet, 0.0)
    }

    pub(super) fn lost_at(&mut self, conn: u64, s: f64) -> Step {
        let mut out = Outbox::default();
        let now = self.at(s);
        self.broker.connection_lost(ConnId(conn), now, &mut out);
        self.finish(out)
    }

    pub(super) fn lost(&mut self, conn: u64) -> Step {
        self.lost_at(conn, 0.0)
    }

    pub(super) fn tick(&mut self, s: f64) -> Step {
        let mut out = Outbox::default();
        let now = self.at(s);
        self.broker.tick(now, &mut out);
        self.finish(out)
    }

    pub(super) fn remote(&mut self, message: &RoutedMessage) -> Step {
        let mut out = Outbox::default();
        let now = self.at(0.0);
        self.broker
            .deliver_remote(Arc::new(message.clone()), now, &mut out);
        self.finish(out)
    }

    /// Connects `conn` as a clean 3.1.1 client subscribed to `filter`.
    pub(super) fn subscriber(&mut self, conn: u64, client_id: &str, filter: &str, qos: QoS) {
        self.connect(conn, &Client::new(client_id));
        let step = self.packet(conn, &subscribe(1, &[(filter, qos)]));
        assert_eq!(
            step.to(conn)[0],
            Got::SubAck(1, vec![SubscribeReturnCode::Granted(qos)])
        );
    }
}

pub(super) fn pub_got(
    topic: &str,
    payload: &[u8],
    qos: QoS,
    id: Option<u16>,
    retain: bool,
    dup: bool,
) -> Pub {
    Pub {
        topic: topic.into(),
        payload: payload.to_vec(),
        qos,
        id,
        retain,
        dup,
        properties: Vec::new(),
    }
}

pub(super) fn will_client<'a>(id: &'a str, qos: QoS, retain: bool) -> Client<'a> {
    let mut client = Client::new(id);
    client.keep_alive_s = 10;
    client.will = Some(Will {
        topic: "wills/x",
        payload: b"bye",
        qos,
        retain,
        properties: Properties::EMPTY,
    });
    client
}
