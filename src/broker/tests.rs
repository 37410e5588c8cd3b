//! Scenario tests: a `Broker` driven with packets and virtual time, its outbox decoded with the
//! codec's client-side decoder.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::protocol::mqtt::{
    ConnAck, Connect, ConnectReturnCode, DecodeLimits, Delivery, Packet, PacketId, ProtocolVersion,
    Publish, QoS, Subscribe, SubscribeReturnCode, Unsubscribe, Will, decode_from_server,
};

/// A packet the broker sent, owned so tests can keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    ConnAck(bool, ConnectReturnCode),
    Publish(Pub),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    SubAck(u16, Vec<SubscribeReturnCode>),
    UnsubAck(u16),
    PingResp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pub {
    topic: String,
    payload: Vec<u8>,
    qos: QoS,
    id: Option<u16>,
    retain: bool,
    dup: bool,
}

fn id(value: u16) -> PacketId {
    PacketId::new(value).expect("test ids are non-zero")
}

fn decode_all(bytes: &[u8], transport: Transport, version: ProtocolVersion) -> Vec<Got> {
    let limits = DecodeLimits::from_limits(&Limits::default());
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
    vec![match packet {
        Packet::ConnAck(ConnAck {
            session_present,
            code,
        }) => Got::ConnAck(session_present, code),
        Packet::Publish(p) => Got::Publish(Pub {
            topic: p.topic.to_string(),
            payload: p.payload.to_vec(),
            qos: p.delivery.qos(),
            id: p.delivery.packet_id().map(PacketId::get),
            retain: p.retain,
            dup: p.dup,
        }),
        Packet::PubAck(i) => Got::PubAck(i.get()),
        Packet::PubRec(i) => Got::PubRec(i.get()),
        Packet::PubRel(i) => Got::PubRel(i.get()),
        Packet::PubComp(i) => Got::PubComp(i.get()),
        Packet::SubAck(s) => Got::SubAck(s.packet_id.get(), s.codes),
        Packet::UnsubAck(i) => Got::UnsubAck(i.get()),
        Packet::PingResp => Got::PingResp,
        other => panic!("a server never sends {other:?}"),
    }]
}

/// What one call produced, decoded.
#[derive(Debug, Default)]
struct Step {
    sends: Vec<(ConnId, Got, Droppable)>,
    chunks: Vec<(ConnId, Chunk)>,
    closes: Vec<(ConnId, CloseReason)>,
    routed: Vec<Arc<RoutedMessage>>,
}

impl Step {
    fn to(&self, conn: u64) -> Vec<Got> {
        self.sends
            .iter()
            .filter(|(c, _, _)| *c == ConnId(conn))
            .map(|(_, got, _)| got.clone())
            .collect()
    }

    fn publishes(&self, conn: u64) -> Vec<Pub> {
        self.to(conn)
            .into_iter()
            .filter_map(|got| match got {
                Got::Publish(p) => Some(p),
                _ => None,
            })
            .collect()
    }
}

struct Harness {
    broker: Broker,
    t0: Instant,
    wires: HashMap<ConnId, (Transport, ProtocolVersion)>,
}

struct Client<'a> {
    id: &'a str,
    clean: bool,
    version: ProtocolVersion,
    transport: Transport,
    keep_alive_s: u16,
    will: Option<Will<'a>>,
}

impl<'a> Client<'a> {
    fn new(id: &'a str) -> Client<'a> {
        Client {
            id,
            clean: true,
            version: ProtocolVersion::V311,
            transport: Transport::Tcp,
            keep_alive_s: 0,
            will: None,
        }
    }

    fn persistent(mut self) -> Self {
        self.clean = false;
        self
    }
}

fn publish<'a>(topic: &'a str, payload: &'a [u8], delivery: Delivery, retain: bool) -> Packet<'a> {
    Packet::Publish(Publish {
        dup: false,
        retain,
        delivery,
        topic,
        payload,
    })
}

fn subscribe<'a>(packet_id: u16, filters: &[(&'a str, QoS)]) -> Packet<'a> {
    Packet::Subscribe(Subscribe {
        packet_id: id(packet_id),
        filters: filters.to_vec(),
    })
}

impl Harness {
    fn new() -> Harness {
        Harness::with(Limits::default(), 1)
    }

    fn with(limits: Limits, shard_count: usize) -> Harness {
        Harness {
            broker: Broker::new(0, shard_count, limits),
            t0: Instant::now(),
            wires: HashMap::new(),
        }
    }

    fn at(&self, s: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(s)
    }

    fn finish(&self, out: Outbox) -> Step {
        let mut step = Step::default();
        for (conn, chunk, droppable) in out.sends {
            let (transport, version) = self.wires[&conn];
            for got in decode_all(chunk.bytes(), transport, version) {
                step.sends.push((conn, got, droppable));
            }
            step.chunks.push((conn, chunk));
        }
        step.closes = out.closes;
        step.routed = out.to_other_shards;
        step
    }

    fn connect_at(&mut self, conn: u64, client: &Client<'_>, s: f64) -> Step {
        let mut out = Outbox::default();
        let connect = Connect {
            version: client.version,
            clean_session: client.clean,
            keep_alive_s: client.keep_alive_s,
            client_id: client.id,
            will: client.will.clone(),
            username: None,
            password: None,
        };
        let wire_version = match client.version {
            ProtocolVersion::V5 => ProtocolVersion::V311,
            version => version,
        };
        self.wires
            .insert(ConnId(conn), (client.transport, wire_version));
        let now = self.at(s);
        self.broker
            .connect(ConnId(conn), client.transport, &connect, now, &mut out);
        self.finish(out)
    }

    fn connect(&mut self, conn: u64, client: &Client<'_>) -> Step {
        self.connect_at(conn, client, 0.0)
    }

    fn packet_at(&mut self, conn: u64, packet: &Packet<'_>, s: f64) -> Step {
        let mut out = Outbox::default();
        let now = self.at(s);
        self.broker.packet(ConnId(conn), packet, now, &mut out);
        self.finish(out)
    }

    fn packet(&mut self, conn: u64, packet: &Packet<'_>) -> Step {
        self.packet_at(conn, packet, 0.0)
    }

    fn lost(&mut self, conn: u64) -> Step {
        let mut out = Outbox::default();
        let now = self.at(0.0);
        self.broker.connection_lost(ConnId(conn), now, &mut out);
        self.finish(out)
    }

    fn tick(&mut self, s: f64) -> Step {
        let mut out = Outbox::default();
        let now = self.at(s);
        self.broker.tick(now, &mut out);
        self.finish(out)
    }

    fn remote(&mut self, message: &RoutedMessage) -> Step {
        let mut out = Outbox::default();
        let now = self.at(0.0);
        self.broker.deliver_remote(message, now, &mut out);
        self.finish(out)
    }

    /// Connects `conn` as a clean 3.1.1 client subscribed to `filter`.
    fn subscriber(&mut self, conn: u64, client_id: &str, filter: &str, qos: QoS) {
        self.connect(conn, &Client::new(client_id));
        let step = self.packet(conn, &subscribe(1, &[(filter, qos)]));
        assert_eq!(
            step.to(conn)[0],
            Got::SubAck(1, vec![SubscribeReturnCode::Granted(qos)])
        );
    }
}

fn pub_got(topic: &str, payload: &[u8], qos: QoS, id: Option<u16>, retain: bool, dup: bool) -> Pub {
    Pub {
        topic: topic.into(),
        payload: payload.to_vec(),
        qos,
        id,
        retain,
        dup,
    }
}

#[test]
fn owner_shard_is_stable_fnv1a() {
    // FNV-1a 64 of "" is the offset basis; of "a" is 0xaf63dc4c8601ec8c.
    assert_eq!(
        Broker::owner_shard("", 7),
        (0xcbf2_9ce4_8422_2325u64 % 7) as usize
    );
    assert_eq!(
        Broker::owner_shard("a", 1000),
        (0xaf63_dc4c_8601_ec8cu64 % 1000) as usize
    );
    assert_eq!(Broker::owner_shard("anything", 1), 0);
}

#[test]
fn connack_codes_and_client_ids() {
    let mut h = Harness::new();
    let step = h.connect(1, &Client::new("c1"));
    assert_eq!(
        step.to(1),
        vec![Got::ConnAck(false, ConnectReturnCode::Accepted)]
    );
    assert!(step.closes.is_empty());

    // 3.1.1, empty id, clean session: an identifier is assigned.
    let step = h.connect(2, &Client::new(""));
    assert_eq!(
        step.to(2),
        vec![Got::ConnAck(false, ConnectReturnCode::Accepted)]
    );
    assert_eq!(h.broker.stats().sessions, 2);

    // 3.1.1, empty id, persistent: rejected [MQTT-3.1.3-8].
    let step = h.connect(3, &Client::new("").persistent());
    assert_eq!(
        step.to(3),
        vec![Got::ConnAck(false, ConnectReturnCode::IdentifierRejected)]
    );
    assert_eq!(step.closes, vec![(ConnId(3), CloseReason::ConnectRefused)]);

    // 3.1, empty id: rejected even with clean session.
    let mut client = Client::new("");
    client.version = ProtocolVersion::V31;
    let step = h.connect(4, &client);
    assert_eq!(
        step.to(4),
        vec![Got::ConnAck(false, ConnectReturnCode::IdentifierRejected)]
    );

    // Longer than client_id_bytes_max.
    let long = "x".repeat(300);
    let step = h.connect(5, &Client::new(&long));
    assert_eq!(
        step.to(5),
        vec![Got::ConnAck(false, ConnectReturnCode::IdentifierRejected)]
    );

    // MQTT 5 is not served yet.
    let mut client = Client::new("v5");
    client.version = ProtocolVersion::V5;
    let step = h.connect(6, &client);
    assert_eq!(
        step.to(6),
        vec![Got::ConnAck(
            false,
            ConnectReturnCode::UnacceptableProtocolVersion
        )]
    );
    assert_eq!(h.broker.stats().connects_refused, 4);

    // A refused connection is then reported lost: nothing happens.
    assert!(h.lost(3).sends.is_empty());
    assert_eq!(h.broker.stats().connections, 2);
}

#[test]
fn assigned_ids_are_unique_and_hash_to_the_shard() {
    let mut h = Harness::with(Limits::default(), 4);
    for conn in 0..20 {
        h.connect(conn, &Client::new(""));
    }
    assert_eq!(h.broker.stats().sessions, 20);
    for id in h.broker.client_ids.keys() {
        assert_eq!(Broker::owner_shard(id, 4), 0, "{id}");
    }
}

#[test]
fn second_connect_and_server_packets_are_violations() {
    let mut h = Harness::new();
    h.connect(1, &Client::new("c1"));
    let connect = Connect {
        version: ProtocolVersion::V311,
        clean_session: true,
        keep_alive_s: 0,
        client_id: "c1",
        will: None,
        username: None,
        password: None,
    };
    let step = h.packet(1, &Packet::Connect(connect));
    assert!(matches!(
        step.closes[..],
        [(ConnId(1), CloseReason::ProtocolViolation(_))]
    ));
    h.connect(2, &Client::new("c2"));
    let step = h.packet(2, &Packet::PingResp);
    assert!(matches!(
        step.closes[..],
        [(ConnId(2), CloseReason::ProtocolViolation(_))]
    ));
    assert_eq!(h.broker.stats().connections, 0);
    // Packets after the close are ignored; so is connection_lost.
    assert!(h.packet(2, &Packet::PingReq).sends.is_empty());
    assert!(h.lost(2).closes.is_empty());
}

#[test]
fn ping() {
    let mut h = Harness::new();
    h.connect(1, &Client::new("c1"));
    assert_eq!(h.packet(1, &Packet::PingReq).to(1), vec![Got::PingResp]);
}

#[test]
fn takeover_closes_old_connection_and_publishes_its_will() {
    let mut h = Harness::new();
    h.subscriber(9, "watcher", "wills/#", QoS::AtMostOnce);
    let mut client = Client::new("dev");
    client.will = Some(Will {
        topic: "wills/dev",
        payload: b"gone",
        qos: QoS::AtMostOnce,
        retain: false,
    });
    h.connect(1, &client);
    let step = h.connect(2, &Client::new("dev"));
    assert_eq!(
        step.closes,
        vec![(ConnId(1), CloseReason::SessionTakenOver)]
    );
    assert_eq!(
        step.to(2),
        vec![Got::ConnAck(false, ConnectReturnCode::Accepted)]
    );
    assert_eq!(
        step.publishes(9),
        vec![pub_got(
            "wills/dev",
            b"gone",
            QoS::AtMostOnce,
            None,
            false,
            false
        )]
    );
    assert_eq!(h.broker.stats().takeovers, 1);
    assert_eq!(h.broker.stats().connections, 2);
    // The old connection's loss is reported afterwards: nothing more happens.
    let step = h.lost(1);
    assert!(step.sends.is_empty() && step.closes.is_empty());
    assert_eq!(h.broker.stats().connections, 2);
}

#[test]
fn clean_and_persistent_sessions_with_session_present() {
    let mut h = Harness::new();
    let step = h.connect(1, &Client::new("p").persistent());
    assert_eq!(
        step.to(1),
        vec![Got::ConnAck(false, ConnectReturnCode::Accepted)]
    );
    h.packet(1, &subscribe(1, &[("t", QoS::AtLeastOnce)]));
    h.packet(1, &Packet::Disconnect);
    assert_eq!(h.broker.stats().offline_sessions, 1);
    assert_eq!(h.broker.stats().subscriptions, 1);

    let step = h.connect(2, &Client::new("p").persistent());
    assert_eq!(
        step.to(2),
        vec![Got::ConnAck(true, ConnectReturnCode::Accepted)]
    );
    assert_eq!(h.broker.stats().offline_sessions, 0);
    h.lost(2);

    // Clean session discards it [MQTT-3.1.2-6] and ends with its connection.
    let step = h.connect(3, &Client::new("p"));
    assert_eq!(
        step.to(3),
        vec![Got::ConnAck(false, ConnectReturnCode::Accepted)]
    );
    assert_eq!(h.broker.stats().subscriptions, 0);
    h.lost(3);
    assert_eq!(h.broker.stats().sessions, 0);
    let step = h.connect(4, &Client::new("p").persistent());
    assert_eq!(
        step.to(4),
        vec![Got::ConnAck(false, ConnectReturnCode::Accepted)]
    );

    // MQTT 3.1 never reports a session present.
    h.lost(4);
    let mut client = Client::new("p").persistent();
    client.version = ProtocolVersion::V31;
    let step = h.connect(5, &client);
    assert_eq!(
        step.to(5),
        vec![Got::ConnAck(false, ConnectReturnCode::Accepted)]
    );
}
