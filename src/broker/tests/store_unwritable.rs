//! While the store cannot write: QoS 1/2 publishes refused (MQTT 5 0x97, 3.x unacknowledged)
//! and not delivered, QoS 0 served, and acknowledgements back once it writes again.

use super::*;

#[test]
fn qos1_and_qos2_are_refused_while_the_store_cannot_write_and_qos0_flows() {
    let mut h = Harness::new();
    h.subscriber(9, "watcher", "t", QoS::ExactlyOnce);
    h.connect(1, &Client::v5("pub5"));
    h.connect(2, &Client::new("pub3"));
    h.broker.set_store_writable(false);

    let step = h.packet(1, &publish("t", b"a", Delivery::AtLeastOnce(id(1)), false));
    assert_eq!(
        step.to(1),
        vec![Got::AckReason(4, 1, ReasonCode::QUOTA_EXCEEDED)]
    );
    assert!(step.publishes(9).is_empty());
    let step = h.packet(1, &publish("t", b"b", Delivery::ExactlyOnce(id(2)), false));
    assert_eq!(
        step.to(1),
        vec![Got::AckReason(5, 2, ReasonCode::QUOTA_EXCEEDED)]
    );
    assert!(step.publishes(9).is_empty());
    let step = h.packet(2, &publish("t", b"c", Delivery::AtLeastOnce(id(3)), false));
    assert!(step.to(2).is_empty(), "3.x has no code: no PUBACK");
    assert!(step.publishes(9).is_empty());
    let step = h.packet(2, &publish("t", b"d", Delivery::ExactlyOnce(id(4)), false));
    assert!(step.to(2).is_empty(), "3.x has no code: no PUBREC");
    let step = h.packet(2, &publish("t", b"e", Delivery::AtMostOnce, false));
    assert_eq!(step.publishes(9)[0].payload, b"e");
    assert_eq!(h.broker.stats().publishes_refused_unwritable, 4);

    // Writable again: the client's retry is acknowledged and delivered.
    h.broker.set_store_writable(true);
    let step = h.packet(2, &publish("t", b"d", Delivery::ExactlyOnce(id(4)), false));
    assert_eq!(step.to(2), vec![Got::PubRec(4)]);
    assert_eq!(step.publishes(9)[0].payload, b"d");
    let step = h.packet(1, &publish("t", b"a", Delivery::AtLeastOnce(id(1)), false));
    assert_eq!(step.to(1), vec![Got::PubAck(1)]);
}

#[test]
fn a_full_bridge_queue_refuses_only_the_publishes_it_would_carry() {
    let mut h = Harness::new();
    h.subscriber(9, "watcher", "#", QoS::AtLeastOnce);
    h.connect(1, &Client::v5("pub5"));
    h.connect(2, &Client::new("pub3"));
    h.broker.set_bridge_refusals(vec!["out/#".into()]);

    let step = h.packet(
        1,
        &publish("out/a", b"a", Delivery::AtLeastOnce(id(1)), false),
    );
    assert_eq!(
        step.to(1),
        vec![Got::AckReason(4, 1, ReasonCode::QUOTA_EXCEEDED)]
    );
    assert!(step.publishes(9).is_empty(), "not delivered here either");
    let step = h.packet(
        2,
        &publish("out/b", b"b", Delivery::ExactlyOnce(id(2)), false),
    );
    assert!(step.to(2).is_empty(), "3.x has no code: no PUBREC");
    let step = h.packet(
        1,
        &publish("local/c", b"c", Delivery::AtLeastOnce(id(3)), false),
    );
    assert_eq!(step.to(1), vec![Got::PubAck(3)]);
    let step = h.packet(2, &publish("out/d", b"d", Delivery::AtMostOnce, false));
    assert_eq!(step.publishes(9)[0].payload, b"d", "QoS 0 flows");
    assert_eq!(h.broker.stats().publishes_refused_bridge_full, 2);

    h.broker.set_bridge_refusals(Vec::new());
    let step = h.packet(
        1,
        &publish("out/a", b"a", Delivery::AtLeastOnce(id(1)), false),
    );
    assert_eq!(step.to(1), vec![Got::PubAck(1)]);
    assert_eq!(step.publishes(9)[0].payload, b"a");
}
