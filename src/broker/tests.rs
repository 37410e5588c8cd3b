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

#[test]
fn offline_queue_then_redelivery_with_dup_and_pubrel_in_order() {
    let mut h = Harness::new();
    h.connect(1, &Client::new("sub").persistent());
    h.packet(1, &subscribe(1, &[("t/#", QoS::ExactlyOnce)]));
    h.connect(2, &Client::new("pub"));
    // Two in flight: one QoS 1, one QoS 2 that gets PUBREC'd.
    let step = h.packet(
        2,
        &publish("t/1", b"one", Delivery::AtLeastOnce(id(10)), false),
    );
    assert_eq!(step.to(2), vec![Got::PubAck(10)]);
    assert_eq!(
        step.publishes(1),
        vec![pub_got(
            "t/1",
            b"one",
            QoS::AtLeastOnce,
            Some(1),
            false,
            false
        )]
    );
    let step = h.packet(
        2,
        &publish("t/2", b"two", Delivery::ExactlyOnce(id(11)), false),
    );
    assert_eq!(step.to(2), vec![Got::PubRec(11)]);
    assert_eq!(
        step.publishes(1),
        vec![pub_got(
            "t/2",
            b"two",
            QoS::ExactlyOnce,
            Some(2),
            false,
            false
        )]
    );
    assert_eq!(
        h.packet(1, &Packet::PubRec(id(2))).to(1),
        vec![Got::PubRel(2)]
    );
    assert_eq!(
        h.packet(2, &Packet::PubRel(id(11))).to(2),
        vec![Got::PubComp(11)]
    );
    h.lost(1);

    // While away: QoS 1 queued, QoS 0 not.
    h.packet(
        2,
        &publish("t/3", b"three", Delivery::AtLeastOnce(id(12)), false),
    );
    h.packet(2, &publish("t/4", b"four", Delivery::AtMostOnce, false));

    let step = h.connect(3, &Client::new("sub").persistent());
    assert_eq!(
        step.to(3),
        vec![
            Got::ConnAck(true, ConnectReturnCode::Accepted),
            Got::Publish(pub_got(
                "t/1",
                b"one",
                QoS::AtLeastOnce,
                Some(1),
                false,
                true
            )),
            Got::PubRel(2),
            Got::Publish(pub_got(
                "t/3",
                b"three",
                QoS::AtLeastOnce,
                Some(3),
                false,
                false
            )),
        ]
    );
    assert!(step.sends.iter().all(|(_, _, d)| *d == Droppable::No));
    assert!(h.packet(3, &Packet::PubAck(id(1))).sends.is_empty());
    assert!(h.packet(3, &Packet::PubComp(id(2))).sends.is_empty());
    assert!(h.packet(3, &Packet::PubAck(id(3))).sends.is_empty());
    // Acks for unknown identifiers are ignored.
    let step = h.packet(3, &Packet::PubAck(id(77)));
    assert!(step.sends.is_empty() && step.closes.is_empty());
    h.lost(3);
    let step = h.connect(4, &Client::new("sub").persistent());
    assert_eq!(
        step.to(4),
        vec![Got::ConnAck(true, ConnectReturnCode::Accepted)]
    );
}

#[test]
fn inbound_qos2_delivered_once_and_survives_reconnect() {
    let mut h = Harness::new();
    h.subscriber(9, "watcher", "t", QoS::AtMostOnce);
    h.connect(1, &Client::new("pub").persistent());
    let qos2 = publish("t", b"x", Delivery::ExactlyOnce(id(5)), false);
    let step = h.packet(1, &qos2);
    assert_eq!(step.to(1), vec![Got::PubRec(5)]);
    assert_eq!(step.publishes(9).len(), 1);
    let duplicate = Packet::Publish(Publish {
        dup: true,
        retain: false,
        delivery: Delivery::ExactlyOnce(id(5)),
        topic: "t",
        payload: b"x",
    });
    let step = h.packet(1, &duplicate);
    assert_eq!(step.to(1), vec![Got::PubRec(5)]);
    assert!(step.publishes(9).is_empty());
    // The publisher reconnects before sending PUBREL: still not delivered again.
    h.lost(1);
    h.connect(2, &Client::new("pub").persistent());
    let step = h.packet(2, &duplicate);
    assert_eq!(step.to(2), vec![Got::PubRec(5)]);
    assert!(step.publishes(9).is_empty());
    assert_eq!(
        h.packet(2, &Packet::PubRel(id(5))).to(2),
        vec![Got::PubComp(5)]
    );
    // PUBCOMP answers an unknown PUBREL too.
    assert_eq!(
        h.packet(2, &Packet::PubRel(id(6))).to(2),
        vec![Got::PubComp(6)]
    );
    // The identifier is free again: a new publish with it is delivered.
    assert_eq!(h.packet(2, &qos2).publishes(9).len(), 1);
}

#[test]
fn inbound_qos2_past_its_limit_is_a_violation() {
    let limits = Limits {
        inbound_qos2_max: 2,
        ..Limits::default()
    };
    let mut h = Harness::with(limits, 1);
    h.connect(1, &Client::new("pub"));
    for i in 1..=2 {
        let step = h.packet(1, &publish("t", b"x", Delivery::ExactlyOnce(id(i)), false));
        assert_eq!(step.to(1), vec![Got::PubRec(i)]);
    }
    let step = h.packet(1, &publish("t", b"x", Delivery::ExactlyOnce(id(3)), false));
    assert!(matches!(
        step.closes[..],
        [(ConnId(1), CloseReason::ProtocolViolation(_))]
    ));
}

#[test]
fn retained_set_clear_wildcards_and_dollar_topics() {
    let mut h = Harness::new();
    h.connect(1, &Client::new("pub"));
    h.packet(1, &publish("a/b", b"1", Delivery::AtLeastOnce(id(1)), true));
    h.packet(1, &publish("a/b", b"2", Delivery::AtMostOnce, true));
    h.packet(1, &publish("$sys/x", b"s", Delivery::AtMostOnce, true));
    h.packet(1, &publish("c", b"c", Delivery::AtMostOnce, true));
    h.packet(1, &publish("c", b"", Delivery::AtMostOnce, true));
    assert_eq!(h.broker.stats().retained, 2);

    h.connect(2, &Client::new("sub"));
    let step = h.packet(2, &subscribe(1, &[("#", QoS::AtLeastOnce)]));
    assert_eq!(
        step.to(2),
        vec![
            Got::SubAck(1, vec![SubscribeReturnCode::Granted(QoS::AtLeastOnce)]),
            // The replacing message was QoS 0: min(0, 1).
            Got::Publish(pub_got("a/b", b"2", QoS::AtMostOnce, None, true, false)),
        ]
    );
    let step = h.packet(2, &subscribe(2, &[("$sys/+", QoS::AtMostOnce)]));
    assert_eq!(
        step.publishes(2),
        vec![pub_got("$sys/x", b"s", QoS::AtMostOnce, None, true, false)]
    );
    // Subscribing again to the same filter resends retained [MQTT-3.8.4-3].
    let step = h.packet(2, &subscribe(3, &[("$sys/+", QoS::AtMostOnce)]));
    assert_eq!(step.publishes(2).len(), 1);
    // Live forwarding clears RETAIN [MQTT-3.3.1-9].
    let step = h.packet(1, &publish("a/b", b"3", Delivery::AtMostOnce, true));
    assert_eq!(
        step.publishes(2),
        vec![pub_got("a/b", b"3", QoS::AtMostOnce, None, false, false)]
    );
}

#[test]
fn retained_limit_rejects_new_topics_but_forwards() {
    let limits = Limits {
        retained_messages_max: 1,
        ..Limits::default()
    };
    let mut h = Harness::with(limits, 1);
    h.subscriber(9, "watcher", "#", QoS::AtMostOnce);
    h.connect(1, &Client::new("pub"));
    h.packet(1, &publish("a", b"1", Delivery::AtMostOnce, true));
    let step = h.packet(1, &publish("b", b"1", Delivery::AtMostOnce, true));
    assert_eq!(step.publishes(9).len(), 1);
    assert_eq!(h.broker.stats().retained, 1);
    assert_eq!(h.broker.stats().retained_rejected, 1);
}

#[test]
fn remote_delivery_updates_the_retained_replica() {
    let mut h = Harness::with(Limits::default(), 2);
    h.subscriber(9, "watcher", "score/+", QoS::AtLeastOnce);
    let message = RoutedMessage {
        topic: "score/1".into(),
        payload: b"2-1".to_vec().into(),
        qos: QoS::AtLeastOnce,
        retain: true,
    };
    let step = h.remote(&message);
    assert_eq!(
        step.publishes(9),
        vec![pub_got(
            "score/1",
            b"2-1",
            QoS::AtLeastOnce,
            Some(1),
            false,
            false
        )]
    );
    assert!(
        step.routed.is_empty(),
        "a routed message is not routed again"
    );
    assert_eq!(h.broker.stats().retained, 1);
    h.connect(2, &Client::new("late"));
    let step = h.packet(2, &subscribe(1, &[("score/#", QoS::AtMostOnce)]));
    assert_eq!(
        step.publishes(2),
        vec![pub_got(
            "score/1",
            b"2-1",
            QoS::AtMostOnce,
            None,
            true,
            false
        )]
    );
    let clear = RoutedMessage {
        payload: Box::new([]),
        ..message
    };
    h.remote(&clear);
    assert_eq!(h.broker.stats().retained, 0);
}

#[test]
fn local_publish_is_routed_once_to_other_shards() {
    let mut h = Harness::with(Limits::default(), 3);
    h.connect(1, &Client::new("pub"));
    let step = h.packet(1, &publish("t", b"x", Delivery::AtLeastOnce(id(1)), true));
    assert_eq!(step.routed.len(), 1);
    assert_eq!(&*step.routed[0].topic, "t");
    assert!(step.routed[0].retain);
    assert_eq!(step.routed[0].qos, QoS::AtLeastOnce);
}

fn will_client<'a>(id: &'a str, qos: QoS, retain: bool) -> Client<'a> {
    let mut client = Client::new(id);
    client.keep_alive_s = 10;
    client.will = Some(Will {
        topic: "wills/x",
        payload: b"bye",
        qos,
        retain,
    });
    client
}

#[test]
fn keep_alive_at_one_and_a_half_times_publishes_the_will() {
    let mut h = Harness::new();
    h.subscriber(9, "watcher", "wills/#", QoS::AtMostOnce);
    h.connect(1, &will_client("dev", QoS::AtMostOnce, false));
    assert!(h.tick(14.9).closes.is_empty());
    // A packet moves the deadline to 5 + 15 s.
    h.packet_at(1, &Packet::PingReq, 5.0);
    assert!(h.tick(15.1).closes.is_empty());
    assert!(h.tick(19.9).closes.is_empty());
    let step = h.tick(20.1);
    assert_eq!(
        step.closes,
        vec![(ConnId(1), CloseReason::KeepAliveTimeout)]
    );
    assert_eq!(
        step.publishes(9),
        vec![pub_got(
            "wills/x",
            b"bye",
            QoS::AtMostOnce,
            None,
            false,
            false
        )]
    );
    assert_eq!(h.broker.stats().keep_alive_timeouts, 1);
    assert!(h.lost(1).sends.is_empty(), "the will is published once");
    assert!(h.tick(100.0).closes.is_empty());
}

#[test]
fn keep_alive_zero_never_times_out() {
    let mut h = Harness::new();
    h.connect(1, &Client::new("c"));
    assert!(h.tick(1e6).closes.is_empty());
}

#[test]
fn will_on_loss_not_after_disconnect_and_retained_will() {
    let mut h = Harness::new();
    h.subscriber(9, "watcher", "wills/#", QoS::AtLeastOnce);
    h.connect(1, &will_client("a", QoS::AtLeastOnce, false));
    let step = h.lost(1);
    assert_eq!(
        step.publishes(9),
        vec![pub_got(
            "wills/x",
            b"bye",
            QoS::AtLeastOnce,
            Some(1),
            false,
            false
        )]
    );
    assert!(step.closes.is_empty(), "the socket is already gone");

    h.connect(2, &will_client("b", QoS::AtMostOnce, false));
    let step = h.packet(2, &Packet::Disconnect);
    assert_eq!(
        step.closes,
        vec![(ConnId(2), CloseReason::ClientDisconnected)]
    );
    assert!(step.publishes(9).is_empty());
    assert!(h.lost(2).publishes(9).is_empty());

    h.connect(3, &will_client("c", QoS::ExactlyOnce, true));
    h.lost(3);
    assert_eq!(h.broker.stats().retained, 1);
    h.connect(4, &Client::new("late"));
    let step = h.packet(4, &subscribe(1, &[("wills/x", QoS::ExactlyOnce)]));
    assert_eq!(
        step.publishes(4),
        vec![pub_got(
            "wills/x",
            b"bye",
            QoS::ExactlyOnce,
            Some(1),
            true,
            false
        )]
    );
    assert_eq!(h.broker.stats().wills_published, 2);
}

#[test]
fn will_on_protocol_violation() {
    let mut h = Harness::new();
    h.subscriber(9, "watcher", "wills/#", QoS::AtMostOnce);
    h.connect(1, &will_client("a", QoS::AtMostOnce, false));
    let step = h.packet(1, &Packet::PingResp);
    assert_eq!(step.publishes(9).len(), 1);
}

#[test]
fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    let mut h = Harness::new();
    h.connect(1, &Client::new("sub"));
    h.packet(
        1,
        &subscribe(
            1,
            &[
                ("a/+", QoS::AtMostOnce),
                ("a/#", QoS::ExactlyOnce),
                ("a/b", QoS::AtLeastOnce),
            ],
        ),
    );
    h.connect(2, &Client::new("pub"));
    let step = h.packet(
        2,
        &publish("a/b", b"x", Delivery::ExactlyOnce(id(1)), false),
    );
    assert_eq!(
        step.publishes(1),
        vec![pub_got(
            "a/b",
            b"x",
            QoS::ExactlyOnce,
            Some(1),
            false,
            false
        )]
    );
    // Delivery QoS is capped by the publish QoS.
    let step = h.packet(
        2,
        &publish("a/b", b"y", Delivery::AtLeastOnce(id(2)), false),
    );
    assert_eq!(
        step.publishes(1),
        vec![pub_got(
            "a/b",
            b"y",
            QoS::AtLeastOnce,
            Some(2),
            false,
            false
        )]
    );
    // After unsubscribing the QoS 2 filter, the next highest applies.
    let step = h.packet(
        1,
        &Packet::Unsubscribe(Unsubscribe {
            packet_id: id(3),
            filters: vec!["a/#", "never"],
        }),
    );
    assert_eq!(step.to(1), vec![Got::UnsubAck(3)]);
    let step = h.packet(
        2,
        &publish("a/b", b"z", Delivery::ExactlyOnce(id(3)), false),
    );
    assert_eq!(
        step.publishes(1),
        vec![pub_got(
            "a/b",
            b"z",
            QoS::AtLeastOnce,
            Some(3),
            false,
            false
        )]
    );
}

#[test]
fn qos0_subscribers_share_one_encoding_per_wire_variant() {
    let mut h = Harness::new();
    h.subscriber(1, "s1", "t", QoS::AtMostOnce);
    h.subscriber(2, "s2", "t", QoS::AtMostOnce);
    let mut ws = Client::new("s3");
    ws.transport = Transport::Ws;
    h.connect(3, &ws);
    h.packet(3, &subscribe(1, &[("t", QoS::AtMostOnce)]));
    h.connect(4, &Client::new("pub"));
    let step = h.packet(4, &publish("t", b"x", Delivery::AtMostOnce, false));
    let shared: Vec<&Rc<[u8]>> = step
        .chunks
        .iter()
        .map(|(_, chunk)| match chunk {
            Chunk::Shared(bytes) => bytes,
            Chunk::Owned(_) => panic!("QoS 0 fan-out is shared"),
        })
        .collect();
    assert_eq!(shared.len(), 3);
    assert!(Rc::ptr_eq(shared[0], shared[1]));
    assert!(
        !Rc::ptr_eq(shared[0], shared[2]),
        "WebSocket framing is another variant"
    );
    assert!(step.sends.iter().all(|(_, _, d)| *d == Droppable::Yes));
    // The WebSocket subscriber's chunk decoded as one frame holding the same publish.
    assert_eq!(step.publishes(3), step.publishes(1));
}

#[test]
fn ws_transport_frames_every_packet() {
    let mut h = Harness::new();
    let mut client = Client::new("ws");
    client.transport = Transport::Ws;
    // Every chunk is checked to be one binary frame by the harness decoder.
    let step = h.connect(1, &client);
    assert_eq!(
        step.to(1),
        vec![Got::ConnAck(false, ConnectReturnCode::Accepted)]
    );
    h.packet(1, &subscribe(1, &[("t", QoS::AtLeastOnce)]));
    let payload = vec![1u8; 70_000];
    let step = h.packet(
        1,
        &publish("t", &payload, Delivery::AtLeastOnce(id(4)), false),
    );
    assert_eq!(
        step.to(1),
        vec![
            Got::Publish(pub_got(
                "t",
                &payload,
                QoS::AtLeastOnce,
                Some(1),
                false,
                false
            )),
            Got::PubAck(4)
        ]
    );
}

#[test]
fn subscription_limit_gives_failure_per_filter() {
    let limits = Limits {
        subscriptions_per_session_max: 2,
        ..Limits::default()
    };
    let mut h = Harness::with(limits, 1);
    h.connect(1, &Client::new("c"));
    let step = h.packet(
        1,
        &subscribe(
            1,
            &[
                ("a", QoS::AtMostOnce),
                ("b", QoS::AtLeastOnce),
                ("c", QoS::AtMostOnce),
                ("a", QoS::ExactlyOnce),
            ],
        ),
    );
    use SubscribeReturnCode::*;
    assert_eq!(
        step.to(1),
        vec![Got::SubAck(
            1,
            vec![
                Granted(QoS::AtMostOnce),
                Granted(QoS::AtLeastOnce),
                Failure,
                Granted(QoS::ExactlyOnce)
            ]
        )]
    );
    assert_eq!(h.broker.stats().subscriptions, 2);
    assert_eq!(h.broker.stats().subscriptions_refused, 1);
}

#[test]
fn inflight_window_queues_and_releases_in_order() {
    let limits = Limits {
        inflight_max: 2,
        ..Limits::default()
    };
    let mut h = Harness::with(limits, 1);
    h.subscriber(1, "sub", "t", QoS::ExactlyOnce);
    h.connect(2, &Client::new("pub"));
    let mut sent = Vec::new();
    for i in 1..=4u16 {
        let payload = [i as u8];
        let step = h.packet(
            2,
            &publish("t", &payload, Delivery::AtLeastOnce(id(i)), false),
        );
        sent.extend(step.publishes(1));
    }
    assert_eq!(
        sent.iter().map(|p| p.payload[0]).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let step = h.packet(1, &Packet::PubAck(id(2)));
    assert_eq!(
        step.publishes(1),
        vec![pub_got("t", &[3], QoS::AtLeastOnce, Some(3), false, false)]
    );
    let step = h.packet(1, &Packet::PubAck(id(1)));
    assert_eq!(
        step.publishes(1),
        vec![pub_got("t", &[4], QoS::AtLeastOnce, Some(4), false, false)]
    );
    assert!(h.packet(1, &Packet::PubAck(id(3))).sends.is_empty());
}

#[test]
fn session_queue_bytes_drop_oldest() {
    let limits = Limits {
        session_queue_bytes_max: 25,
        ..Limits::default()
    };
    let mut h = Harness::with(limits, 1);
    h.connect(1, &Client::new("sub").persistent());
    h.packet(1, &subscribe(1, &[("t", QoS::AtLeastOnce)]));
    h.lost(1);
    h.connect(2, &Client::new("pub"));
    // Each counts 1 topic byte + 9 payload bytes: the third drops the first.
    for i in 1..=3u8 {
        h.packet(
            2,
            &publish("t", &[i; 9], Delivery::AtLeastOnce(id(u16::from(i))), false),
        );
    }
    assert_eq!(h.broker.stats().session_queue_dropped, 1);
    let step = h.connect(3, &Client::new("sub").persistent());
    let payloads: Vec<u8> = step.publishes(3).iter().map(|p| p.payload[0]).collect();
    assert_eq!(payloads, vec![2, 3]);
}

#[test]
fn offline_sessions_are_bounded_oldest_first() {
    let limits = Limits {
        offline_sessions_per_shard_max: 2,
        ..Limits::default()
    };
    let mut h = Harness::with(limits, 1);
    for (conn, name) in [(1, "a"), (2, "b"), (3, "c")] {
        h.connect(conn, &Client::new(name).persistent());
        h.packet(conn, &subscribe(1, &[("t", QoS::AtLeastOnce)]));
    }
    // "a" comes back in between, so "b" is the oldest disconnection when "c" leaves.
    h.lost(1);
    h.lost(2);
    h.connect(4, &Client::new("a").persistent());
    h.lost(4);
    h.lost(3);
    let stats = h.broker.stats();
    assert_eq!(stats.offline_sessions, 2);
    assert_eq!(stats.sessions_evicted, 1);
    assert_eq!(stats.subscriptions, 2);
    let present = |h: &mut Harness, conn, name| match h
        .connect(conn, &Client::new(name).persistent())
        .to(conn)[0]
    {
        Got::ConnAck(present, _) => present,
        ref other => panic!("{other:?}"),
    };
    assert!(present(&mut h, 5, "a"));
    assert!(!present(&mut h, 6, "b"));
    assert!(present(&mut h, 7, "c"));
}

#[test]
fn shutdown_closes_everything_without_wills() {
    let mut h = Harness::new();
    h.subscriber(9, "watcher", "wills/#", QoS::AtLeastOnce);
    h.connect(1, &will_client("a", QoS::AtMostOnce, false));
    h.connect(2, &Client::new("p").persistent());
    let mut out = Outbox::default();
    h.broker.shutdown(&mut out);
    assert!(out.sends.is_empty());
    assert_eq!(
        out.closes,
        vec![
            (ConnId(1), CloseReason::ServerShutdown),
            (ConnId(2), CloseReason::ServerShutdown),
            (ConnId(9), CloseReason::ServerShutdown)
        ]
    );
    let stats = h.broker.stats();
    assert_eq!(stats.connections, 0);
    assert_eq!(stats.offline_sessions, 1);
    assert!(h.lost(1).sends.is_empty());
}
