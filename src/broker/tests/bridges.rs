//! Connections of other brokers' bridges (`Connect::bridge`, or the MQTT 5 user property):
//! what crossed a bridge crosses no other, and the second copy of a message that came over
//! both bridges of a pair is dropped.

use std::sync::Mutex;

use super::*;
use crate::broker::crossings::{Crossings, Path, fingerprint};
use crate::protocol::mqtt::{BRIDGE_USER_PROPERTY, Delivery, PropertiesBuf, Property, QoS};

fn payloads(got: &[Got]) -> Vec<&[u8]> {
    got.iter()
        .filter_map(|got| match got {
            Got::Publish(p) => Some(&p.payload[..]),
            _ => None,
        })
        .collect()
}

/// Conn 1 an ordinary subscriber of `a/#`, conn 2 a 3.1.1 bridge subscribed to `a/#`, conn
/// 3 an ordinary publisher; the broker has bridges of its own.
fn harness() -> Harness {
    let mut h = Harness::new();
    h.broker.forward_out();
    h.connect(1, &Client::new("sub"));
    h.packet(1, &subscribe(1, &[("a/#", QoS::AtMostOnce)]));
    let bridge = Client {
        bridge: true,
        ..Client::new("bridge")
    };
    h.connect(2, &bridge);
    h.packet(2, &subscribe(1, &[("a/#", QoS::AtMostOnce)]));
    h.connect(3, &Client::new("pub"));
    h
}

#[test]
fn a_local_publish_goes_to_bridges_and_bridge_connections() {
    let mut h = harness();
    let step = h.packet(3, &publish("a/1", b"local", Delivery::AtMostOnce, false));
    assert_eq!(step.to_remote.len(), 1);
    assert_eq!(payloads(&step.to(1)), [b"local"]);
    assert_eq!(payloads(&step.to(2)), [b"local"]);
}

#[test]
fn what_a_bridge_connection_publishes_is_delivered_here_only() {
    let mut h = harness();
    let step = h.packet(2, &publish("a/1", b"pushed", Delivery::AtMostOnce, false));
    assert!(step.to_remote.is_empty(), "not sent on over a bridge");
    assert_eq!(payloads(&step.to(1)), [b"pushed"]);
    assert!(step.to(2).is_empty(), "not back to a bridge connection");
}

#[test]
fn what_a_bridge_brought_in_goes_to_no_bridge_connection() {
    let mut h = harness();
    let mut message = RoutedMessage::new("a/1", b"pulled", QoS::AtMostOnce, false);
    message.bridged = true;
    let mut out = Outbox::default();
    let now = h.at(0.0);
    h.broker
        .publish_from_remote(Arc::new(message), now, &mut out);
    let step = h.finish(out);
    assert_eq!(payloads(&step.to(1)), [b"pulled"]);
    assert!(step.to(2).is_empty());
}

#[test]
fn an_mqtt5_bridge_is_known_by_its_user_property() {
    let mut h = Harness::new();
    let mut properties = PropertiesBuf::new();
    properties.push(Property::UserProperty(BRIDGE_USER_PROPERTY, "1"));
    let bridge = Client {
        properties: properties.as_properties(),
        ..Client::v5("bridge5")
    };
    h.connect(1, &bridge);
    h.broker.forward_out();
    let step = h.packet(1, &publish("a/1", b"x", Delivery::AtMostOnce, false));
    assert!(step.to_remote.is_empty());
}

#[test]
fn the_second_copy_of_a_message_that_came_both_ways_is_dropped() {
    let mut h = harness();
    let crossings = Arc::new(Mutex::new(Crossings::new(vec!["a/#".into()], 16)));
    h.broker.set_crossings(vec![Arc::clone(&crossings)]);
    // Brought in by this broker's bridge first, then pushed by the remote's bridge.
    crossings
        .lock()
        .expect("one thread")
        .note(Path::Pulled, fingerprint("a/1", b"twice"));
    let step = h.packet(
        2,
        &publish("a/1", b"twice", Delivery::AtLeastOnce(id(7)), false),
    );
    assert!(step.to(1).is_empty(), "the second copy is not delivered");
    assert_eq!(step.to(2), [Got::PubAck(7)], "but acknowledged");
    // The other way round: pushed first, remembered for the bridge to drop its copy.
    let step = h.packet(2, &publish("a/1", b"once", Delivery::AtMostOnce, false));
    assert_eq!(payloads(&step.to(1)), [b"once"]);
    let mut crossings = crossings.lock().expect("one thread");
    assert!(crossings.second_copy(Path::Pulled, fingerprint("a/1", b"once")));
    assert_eq!(crossings.second_copies(), 2);
}

#[test]
fn what_crossed_a_bridge_goes_to_no_bridge_member_of_a_shared_group() {
    let mut h = Harness::new();
    // Group g: conn 1 an ordinary client, conn 2 a bridge; group solo: conn 3, a bridge only.
    h.connect(1, &Client::new("member"));
    h.packet(1, &subscribe(1, &[("$share/g/a/#", QoS::AtMostOnce)]));
    for (conn, id, filter) in [
        (2, "bridge", "$share/g/a/#"),
        (3, "solo", "$share/solo/a/#"),
    ] {
        let bridge = Client {
            bridge: true,
            ..Client::new(id)
        };
        h.connect(conn, &bridge);
        h.packet(conn, &subscribe(1, &[(filter, QoS::AtMostOnce)]));
    }
    for _ in 0..4 {
        let mut message = RoutedMessage::new("a/1", b"pulled", QoS::AtMostOnce, false);
        message.bridged = true;
        let mut out = Outbox::default();
        let now = h.at(0.0);
        h.broker
            .publish_from_remote(Arc::new(message), now, &mut out);
        let step = h.finish(out);
        assert_eq!(
            payloads(&step.to(1)),
            [b"pulled"],
            "the member that may take it"
        );
        assert!(step.to(2).is_empty());
        assert!(step.to(3).is_empty());
    }
    assert_eq!(h.broker.stats().shared_dropped, 0, "left out, not dropped");
    // What did not cross a bridge goes to bridge members as to any other, in turn.
    h.connect(4, &Client::new("pub"));
    let mut got = [0; 4];
    for _ in 0..2 {
        let step = h.packet(4, &publish("a/1", b"local", Delivery::AtMostOnce, false));
        for (conn, count) in got.iter_mut().enumerate() {
            *count += payloads(&step.to(conn as u64)).len();
        }
    }
    assert_eq!(got, [0, 1, 1, 2]);
}
