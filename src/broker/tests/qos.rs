//! QoS 1/2 flows in both directions, windows and queues, overlapping subscriptions.

use super::*;
use crate::protocol::mqtt::{
    Ack, ConnectReturnCode, Delivery, Packet, Properties, Publish, QoS, SubscribeReturnCode,
    Unsubscribe,
};

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
        h.packet(1, &Packet::PubRec(Ack::new(id(2)))).to(1),
        vec![Got::PubRel(2)]
    );
    assert_eq!(
        h.packet(2, &Packet::PubRel(Ack::new(id(11)))).to(2),
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
    assert!(
        h.packet(3, &Packet::PubAck(Ack::new(id(1))))
            .sends
            .is_empty()
    );
    assert!(
        h.packet(3, &Packet::PubComp(Ack::new(id(2))))
            .sends
            .is_empty()
    );
    assert!(
        h.packet(3, &Packet::PubAck(Ack::new(id(3))))
            .sends
            .is_empty()
    );
    // Acks for unknown identifiers are ignored.
    let step = h.packet(3, &Packet::PubAck(Ack::new(id(77))));
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
        properties: Properties::EMPTY,
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
        h.packet(2, &Packet::PubRel(Ack::new(id(5)))).to(2),
        vec![Got::PubComp(5)]
    );
    // PUBCOMP answers an unknown PUBREL too.
    assert_eq!(
        h.packet(2, &Packet::PubRel(Ack::new(id(6)))).to(2),
        vec![Got::PubComp(6)]
    );
    // The identifier is free again: a new publish with it is delivered.
    assert_eq!(h.packet(2, &qos2).publishes(9).len(), 1);
}

#[test]
fn inbound_qos2_past_its_limit_exceeds_the_receive_maximum() {
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
        [(
            ConnId(1),
            CloseReason::Refused(
                crate::protocol::mqtt::ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                _
            )
        )]
    ));
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
            properties: Properties::EMPTY,
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
    let step = h.packet(1, &Packet::PubAck(Ack::new(id(2))));
    assert_eq!(
        step.publishes(1),
        vec![pub_got("t", &[3], QoS::AtLeastOnce, Some(3), false, false)]
    );
    let step = h.packet(1, &Packet::PubAck(Ack::new(id(1))));
    assert_eq!(
        step.publishes(1),
        vec![pub_got("t", &[4], QoS::AtLeastOnce, Some(4), false, false)]
    );
    assert!(
        h.packet(1, &Packet::PubAck(Ack::new(id(3))))
            .sends
            .is_empty()
    );
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
fn connected_qos1_subscriber_past_window_and_queue_is_closed() {
    let limits = Limits {
        inflight_max: 1,
        session_queue_bytes_max: 25,
        ..Limits::default()
    };
    let mut h = Harness::with(limits, 1);
    h.subscriber(1, "sub", "t", QoS::AtLeastOnce);
    h.connect(2, &Client::new("pub"));
    let mut closes = Vec::new();
    let mut sent_to_sub = 0;
    // One in flight, two queued (10 bytes each), the fourth overflows the queue. The close
    // takes a while on the network side: publishes meanwhile neither reach the closing
    // connection nor close it again.
    for i in 1..=8u8 {
        let step = h.packet(
            2,
            &publish("t", &[i; 9], Delivery::AtLeastOnce(id(u16::from(i))), false),
        );
        if i > 4 {
            sent_to_sub += step.to(1).len();
        }
        closes.extend(step.closes);
    }
    assert_eq!(closes, vec![(ConnId(1), CloseReason::SlowConsumer)]);
    assert_eq!(h.broker.stats().slow_consumer_closes, 1);
    assert_eq!(sent_to_sub, 0);
}
