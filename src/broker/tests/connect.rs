//! CONNECT, client identifiers, takeover, session lifetimes, shutdown.

use super::*;
use crate::protocol::mqtt::ReasonCode;
use crate::protocol::mqtt::{
    ConnectReturnCode, Disconnect, Packet, Properties, ProtocolVersion, QoS, Will,
};

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

    // MQTT 5, persistent, empty id: assigned (tested in `v5.rs`); too long: 0x85.
    let mut client = Client::new(&long);
    client.version = ProtocolVersion::V5;
    let step = h.connect(6, &client);
    assert!(matches!(
        &step.to(6)[..],
        [Got::ConnAck5(
            false,
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            _
        )]
    ));
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
    for key in h.broker.client_ids.keys() {
        let id = &h
            .broker
            .sessions
            .get(key)
            .expect("a named session")
            .client_id;
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
        properties: Properties::EMPTY,
        bridge: false,
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
        properties: Properties::EMPTY,
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
    h.packet(1, &Packet::Disconnect(Disconnect::NORMAL));
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
