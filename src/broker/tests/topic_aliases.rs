//! Outbound MQTT 5 Topic Aliases: one number per topic and shard, each connection sent the
//! topic once with it and the alias alone after, the encodings shared, nothing surviving a
//! reconnect.

use super::*;
use crate::protocol::mqtt::{PropertiesBuf, Property, PropertyScope};

/// CONNECT properties asking for `max` outbound aliases, with a session outliving the
/// connection when `expiry_s` > 0.
fn alias_properties(max: u16, expiry_s: u32) -> PropertiesBuf {
    let mut buf = PropertiesBuf::new();
    buf.push(Property::TopicAliasMaximum(max));
    if expiry_s > 0 {
        buf.push(Property::SessionExpiryInterval(expiry_s));
    }
    buf
}

/// Connects MQTT 5 client `client_id` on `conn` asking for `max` aliases, subscribed to `#`
/// at `qos`.
fn alias_subscriber(h: &mut Harness, conn: u64, client_id: &str, max: u16, qos: QoS) {
    let buf = alias_properties(max, 0);
    let client = Client {
        properties: buf.as_properties(),
        ..Client::v5(client_id)
    };
    h.connect(conn, &client);
    let step = h.packet(conn, &subscribe(1, &[("#", qos)]));
    assert_eq!(
        step.to(conn)[0],
        Got::SubAck(1, vec![SubscribeReturnCode::Granted(qos)])
    );
}

/// The topic name and Topic Alias of a delivered publish.
fn named(got: &Pub) -> (&str, Option<u16>) {
    let properties = Properties::parse(&got.properties, PropertyScope::Publish)
        .expect("the broker sends valid properties");
    (got.topic.as_str(), properties.topic_alias())
}

/// `conn`'s publishes of a step, as (topic, alias).
fn names(step: &Step, conn: u64) -> Vec<(String, Option<u16>)> {
    step.publishes(conn)
        .iter()
        .map(|got| {
            let (topic, alias) = named(got);
            (topic.to_string(), alias)
        })
        .collect()
}

fn send(h: &mut Harness, topic: &str) -> Step {
    h.packet(9, &publish(topic, b"1", Delivery::AtMostOnce, false))
}

fn with_topic(topic: &str, alias: u16) -> (String, Option<u16>) {
    (topic.to_string(), Some(alias))
}

fn alias_only(alias: u16) -> (String, Option<u16>) {
    (String::new(), Some(alias))
}

fn plain(topic: &str) -> (String, Option<u16>) {
    (topic.to_string(), None)
}

#[test]
fn each_topic_has_one_number_on_every_connection_and_goes_once_by_name() {
    let mut h = Harness::new();
    h.connect(9, &Client::new("pub"));
    alias_subscriber(&mut h, 1, "s1", 10, QoS::AtMostOnce);
    alias_subscriber(&mut h, 2, "s2", 10, QoS::AtMostOnce);
    let step = send(&mut h, "scores/a");
    for conn in [1, 2] {
        assert_eq!(names(&step, conn), [with_topic("scores/a", 1)]);
    }
    let step = send(&mut h, "scores/b");
    for conn in [1, 2] {
        assert_eq!(names(&step, conn), [with_topic("scores/b", 2)]);
    }
    let step = send(&mut h, "scores/a");
    for conn in [1, 2] {
        assert_eq!(names(&step, conn), [alias_only(1)]);
    }
    // Encoded once for both connections in the same state.
    let shared: Vec<_> = step
        .chunks
        .iter()
        .map(|(_, chunk)| match chunk {
            Chunk::Shared(bytes) => Rc::clone(bytes),
            other => panic!("a QoS 0 publish is shared, got {other:?}"),
        })
        .collect();
    assert_eq!(shared.len(), 2);
    assert!(Rc::ptr_eq(&shared[0], &shared[1]));

    // A later connection gets the numbers the shard gave, and its own first sends by name.
    alias_subscriber(&mut h, 3, "s3", 10, QoS::AtMostOnce);
    let step = send(&mut h, "scores/b");
    assert_eq!(names(&step, 1), [alias_only(2)]);
    assert_eq!(names(&step, 3), [with_topic("scores/b", 2)]);
    let step = send(&mut h, "scores/c");
    for conn in [1, 2, 3] {
        assert_eq!(names(&step, conn), [with_topic("scores/c", 3)]);
    }
}

#[test]
fn the_first_send_of_an_alias_is_never_dropped() {
    let mut h = Harness::new();
    h.connect(9, &Client::new("pub"));
    alias_subscriber(&mut h, 1, "s1", 10, QoS::AtMostOnce);
    let first = send(&mut h, "t");
    assert_eq!(first.sends[0].2, Droppable::No);
    let second = send(&mut h, "t");
    assert!(matches!(second.sends[0].2, Droppable::Yes { .. }));
}

#[test]
fn clients_without_aliases_or_with_room_for_fewer_get_names() {
    let mut h = Harness::new();
    h.connect(9, &Client::new("pub"));
    alias_subscriber(&mut h, 1, "small", 1, QoS::AtMostOnce);
    alias_subscriber(&mut h, 2, "none", 0, QoS::AtMostOnce);
    h.subscriber(3, "v3", "#", QoS::AtMostOnce);
    alias_subscriber(&mut h, 4, "big", 10, QoS::AtMostOnce);
    for _ in 0..2 {
        let step = send(&mut h, "a");
        assert_eq!(names(&step, 2), [plain("a")]);
        assert_eq!(names(&step, 3), [plain("a")]);
        let step = send(&mut h, "b");
        // "b" is number 2: past the maximum of "small".
        assert_eq!(names(&step, 1), [plain("b")]);
        assert_eq!(names(&step, 2), [plain("b")]);
    }
    let step = send(&mut h, "a");
    assert_eq!(names(&step, 1), [alias_only(1)]);
    assert_eq!(names(&step, 4), [alias_only(1)]);
}

#[test]
fn topics_past_the_shard_bound_go_by_name() {
    let limits = Limits {
        topic_aliases_per_shard_max: 1,
        ..Limits::default()
    };
    let mut h = Harness::with(limits, 1);
    h.connect(9, &Client::new("pub"));
    alias_subscriber(&mut h, 1, "s1", 10, QoS::AtMostOnce);
    for expected in [with_topic("a", 1), alias_only(1)] {
        assert_eq!(names(&send(&mut h, "a"), 1), [expected]);
        assert_eq!(names(&send(&mut h, "b"), 1), [plain("b")]);
    }

    let off = Limits {
        topic_aliases_per_shard_max: 0,
        ..Limits::default()
    };
    let mut h = Harness::with(off, 1);
    h.connect(9, &Client::new("pub"));
    alias_subscriber(&mut h, 1, "s1", 10, QoS::AtMostOnce);
    for _ in 0..2 {
        assert_eq!(names(&send(&mut h, "a"), 1), [plain("a")]);
    }
}

#[test]
fn qos_1_uses_aliases_and_a_reconnect_starts_without_any() {
    let mut h = Harness::new();
    h.connect(9, &Client::new("pub"));
    let buf = alias_properties(10, 3600);
    let client = Client {
        properties: buf.as_properties(),
        ..Client::v5("sub").persistent()
    };
    h.connect(1, &client);
    h.packet(1, &subscribe(1, &[("#", QoS::AtLeastOnce)]));
    let publish1 = |topic| publish(topic, b"1", Delivery::AtLeastOnce(id(1)), false);
    let step = h.packet(9, &publish1("t"));
    assert_eq!(names(&step, 1), [with_topic("t", 1)]);
    let step = h.packet(9, &publish1("t"));
    assert_eq!(names(&step, 1), [alias_only(1)]);
    // Unacknowledged, then the connection is lost; one more waits in the session's queue.
    h.lost(1);
    h.packet(9, &publish1("t"));

    let step = h.connect(2, &client);
    let resent = step.publishes(2);
    assert_eq!(resent.len(), 3);
    for (index, got) in resent.iter().enumerate() {
        // A new connection was sent no alias [MQTT-3.3.2-7]: resends and the queued message
        // name their topic.
        assert_eq!(named(got), ("t", None));
        assert_eq!(got.dup, index < 2);
    }
    let step = h.packet(9, &publish1("t"));
    assert_eq!(names(&step, 2), [with_topic("t", 1)]);
    let step = h.packet(9, &publish1("t"));
    assert_eq!(names(&step, 2), [alias_only(1)]);
}
