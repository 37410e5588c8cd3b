//! Retained messages, locally and through routing between shards.

use super::*;
use crate::protocol::mqtt::{Delivery, QoS, SubscribeReturnCode};

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
    let message = RoutedMessage::new("score/1", b"2-1", QoS::AtLeastOnce, true);
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
