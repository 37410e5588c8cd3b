//! Bytes on the wire: shared QoS 0 encodings and WebSocket framing.

use super::*;
use crate::protocol::mqtt::{ConnectReturnCode, Delivery, QoS};

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
            _ => panic!("QoS 0 fan-out is shared"),
        })
        .collect();
    assert_eq!(shared.len(), 3);
    assert!(Rc::ptr_eq(shared[0], shared[1]));
    assert!(
        !Rc::ptr_eq(shared[0], shared[2]),
        "WebSocket framing is another variant"
    );
    assert!(
        step.sends
            .iter()
            .all(|(_, _, d)| matches!(d, Droppable::Yes { .. }))
    );
    // The WebSocket subscriber's chunk decoded as one frame holding the same publish.
    assert_eq!(step.publishes(3), step.publishes(1));
}

#[test]
fn qos1_subscribers_share_the_payload_and_own_only_their_id() {
    let mut h = Harness::new();
    h.subscriber(1, "s1", "t", QoS::AtLeastOnce);
    h.subscriber(2, "s2", "t", QoS::AtLeastOnce);
    h.packet(1, &publish("t", b"first", Delivery::AtMostOnce, false));
    h.connect(3, &Client::new("pub"));
    let step = h.packet(3, &publish("t", b"x", Delivery::AtLeastOnce(id(9)), false));
    let templates: Vec<(&Rc<[u8]>, PacketId)> = step
        .chunks
        .iter()
        .filter_map(|(_, chunk)| match chunk {
            Chunk::SharedWithId { template, id, .. } => Some((template, *id)),
            _ => None,
        })
        .collect();
    assert_eq!(templates.len(), 2);
    assert!(Rc::ptr_eq(templates[0].0, templates[1].0));
    let (p1, p2) = (step.publishes(1), step.publishes(2));
    assert_eq!(p1[0].payload, b"x");
    assert_eq!(p2[0].payload, b"x");
    assert_eq!(p1[0].id, Some(templates[0].1.get()));
    assert_eq!(p2[0].id, Some(templates[1].1.get()));
}

#[test]
fn topic_policies_mark_qos0_publishes_by_topic() {
    let mut h = Harness::new();
    h.broker.set_topic_policies(&[crate::config::TopicPolicy {
        filter: "scores/#".into(),
        on_full: crate::conn::SlowConsumer::Conflate,
    }]);
    h.subscriber(1, "s1", "#", QoS::AtMostOnce);
    h.connect(2, &Client::new("pub"));
    let mut marks = Vec::new();
    for topic in ["scores/a", "scores/a", "news/a"] {
        let step = h.packet(2, &publish(topic, b"x", Delivery::AtMostOnce, false));
        marks.push(step.sends[0].2);
    }
    let Droppable::Yes { topic, on_full } = marks[0] else {
        panic!("QoS 0 is droppable");
    };
    assert_eq!(on_full, Some(crate::conn::SlowConsumer::Conflate));
    assert_eq!(marks[1], marks[0], "same topic, same key");
    let Droppable::Yes {
        topic: other,
        on_full: none,
    } = marks[2]
    else {
        panic!("QoS 0 is droppable");
    };
    assert_ne!(other, topic);
    assert_eq!(none, None, "no policy: the listener's applies");
}

#[test]
fn fanout_is_sliced_per_turn_and_keeps_order() {
    let mut h = Harness::new();
    let subscribers = FANOUT_SESSIONS_PER_TURN_MAX as u64 + 10;
    for conn in 1..=subscribers {
        h.subscriber(conn, &format!("s{conn}"), "t", QoS::AtMostOnce);
    }
    let publisher = subscribers + 1;
    h.connect(publisher, &Client::new("pub"));
    let first = h.packet(publisher, &publish("t", b"A", Delivery::AtMostOnce, false));
    assert_eq!(first.sends.len(), FANOUT_SESSIONS_PER_TURN_MAX);
    assert!(h.broker.fanout_pending());
    // The next publish waits behind the rest of the first: one turn's budget again.
    let second = h.packet(publisher, &publish("t", b"B", Delivery::AtMostOnce, false));
    assert_eq!(second.sends.len(), FANOUT_SESSIONS_PER_TURN_MAX);
    let third = h.tick(0.0);
    assert_eq!(third.sends.len(), 20, "2 × (budget + 10) deliveries in all");
    assert!(!h.broker.fanout_pending());
    for conn in 1..=subscribers {
        let payloads: Vec<Vec<u8>> = [&first, &second, &third]
            .iter()
            .flat_map(|step| step.publishes(conn))
            .map(|p| p.payload)
            .collect();
        assert_eq!(
            payloads,
            vec![b"A".to_vec(), b"B".to_vec()],
            "subscriber {conn}"
        );
    }
}

#[test]
fn parked_publishes_of_one_topic_are_delivered_together_in_order() {
    let mut h = Harness::new();
    let subscribers = FANOUT_SESSIONS_PER_TURN_MAX as u64 + 10;
    for conn in 1..=subscribers {
        h.subscriber(conn, &format!("s{conn}"), "t", QoS::AtMostOnce);
    }
    // The last subscriber also follows "u": a publish of "u" between those of "t" ends the
    // group, so this subscriber still gets every publish in order.
    h.packet(subscribers, &subscribe(2, &[("u", QoS::AtMostOnce)]));
    let publisher = subscribers + 1;
    h.connect(publisher, &Client::new("pub"));
    // One turn: A fills the turn's budget, the rest are parked behind it.
    let mut out = Outbox::default();
    let now = h.at(0.0);
    for (topic, payload) in [
        ("t", b"A"),
        ("t", b"B"),
        ("t", b"C"),
        ("u", b"D"),
        ("t", b"E"),
    ] {
        let packet = publish(topic, payload, Delivery::AtMostOnce, false);
        h.broker.packet(ConnId(publisher), &packet, now, &mut out);
    }
    let first = h.finish(out);
    assert_eq!(first.sends.len(), FANOUT_SESSIONS_PER_TURN_MAX);
    // Next turn: the rest of A, then B and C together to as many sessions as the turn serves.
    let second = h.tick(0.0);
    let together = FANOUT_SESSIONS_PER_TURN_MAX - 10;
    assert_eq!(second.sends.len(), 10 + 2 * together);
    let mut got_both = 0;
    for conn in 1..=subscribers {
        let payloads: Vec<Vec<u8>> = second
            .publishes(conn)
            .into_iter()
            .map(|p| p.payload)
            .collect();
        if payloads.iter().any(|p| p != b"A") {
            assert_eq!(
                payloads,
                [b"B", b"C"],
                "subscriber {conn}: B and C in one turn"
            );
            got_both += 1;
        }
    }
    assert_eq!(got_both, together);
    let mut steps = vec![first, second];
    while h.broker.fanout_pending() {
        assert!(steps.len() < 5, "the rest takes two more turns");
        steps.push(h.tick(0.0));
    }
    for conn in 1..=subscribers {
        let payloads: Vec<Vec<u8>> = steps
            .iter()
            .flat_map(|step| step.publishes(conn))
            .map(|p| p.payload)
            .collect();
        let expected: &[&[u8]] = if conn == subscribers {
            &[b"A", b"B", b"C", b"D", b"E"]
        } else {
            &[b"A", b"B", b"C", b"E"]
        };
        assert_eq!(payloads, expected, "subscriber {conn}");
    }
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
