//! Cluster mode: what goes to the other nodes, what comes from them, and the interest changes.

use super::*;
use std::sync::Mutex;

use crate::broker::message_ids::{DeliveredIds, MessageId};
use crate::protocol::mqtt::{Delivery, QoS};

fn topics(messages: &[Arc<RoutedMessage>]) -> Vec<&str> {
    messages.iter().map(|m| &*m.topic).collect()
}

#[test]
fn off_by_default_nothing_goes_to_the_cluster() {
    let mut h = Harness::new();
    h.connect(1, &Client::new("pub"));
    let step = h.packet(1, &publish("a/b", b"1", Delivery::AtMostOnce, false));
    assert!(step.to_remote.is_empty());
    let mut interest = Vec::new();
    h.broker.take_interest(&mut interest);
    assert!(interest.is_empty());
}

#[test]
fn a_local_publish_goes_once_to_the_cluster_but_not_a_dollar_topic() {
    let mut h = Harness::new();
    h.broker.join_cluster();
    h.connect(1, &Client::new("pub"));
    let step = h.packet(1, &publish("a/b", b"1", Delivery::AtLeastOnce(id(1)), true));
    assert_eq!(topics(&step.to_remote), ["a/b"]);
    let step = h.packet(1, &publish("$x/y", b"2", Delivery::AtMostOnce, false));
    assert!(step.to_remote.is_empty(), "$ topics are the node's own");
}

#[test]
fn a_qos_1_or_2_publish_is_acknowledged_only_once_jetstream_stored_it() {
    let mut h = Harness::new();
    h.broker.join_cluster();
    h.broker.hold_acks_for_cluster();
    h.connect(1, &Client::new("v3"));
    h.connect(2, &Client::v5("v5"));
    let mut tickets = Vec::new();
    for (conn, delivery) in [
        (1, Delivery::AtLeastOnce(id(1))),
        (1, Delivery::ExactlyOnce(id(2))),
        (2, Delivery::AtLeastOnce(id(3))),
        (2, Delivery::ExactlyOnce(id(4))),
    ] {
        let step = h.packet(conn, &publish("a/b", b"1", delivery, false));
        assert!(
            step.to(conn).is_empty(),
            "no acknowledgement before JetStream answered"
        );
        // The ticket is the copy that went to the cluster, with its identity: the shard
        // pairs the two by pointer.
        let [(sent, ticket)] = &step.cluster_tickets[..] else {
            panic!("one ticket: {:?}", step.cluster_tickets);
        };
        assert!(Arc::ptr_eq(sent, &step.to_remote[0]));
        assert!(sent.id.is_some());
        tickets.push(*ticket);
    }
    // Stored: acknowledged. Not stored: no acknowledgement for 3.1.1, 0x97 for MQTT 5.
    let mut out = Outbox::default();
    for (ticket, stored) in tickets.into_iter().zip([true, false, true, false]) {
        h.broker.settle_cluster_ack(ticket, stored, &mut out);
    }
    let step = h.finish(out);
    assert_eq!(step.to(1), [Got::PubAck(1)]);
    assert_eq!(
        step.to(2),
        [
            Got::PubAck(3),
            Got::AckReason(5, 4, ReasonCode::QUOTA_EXCEEDED)
        ]
    );
}

#[test]
fn a_publish_from_the_cluster_is_delivered_and_not_sent_back() {
    let mut h = Harness::new();
    h.broker.join_cluster();
    h.connect(1, &Client::new("sub"));
    h.packet(1, &subscribe(1, &[("score/#", QoS::AtMostOnce)]));
    let mut out = Outbox::default();
    let message = Arc::new(RoutedMessage::new(
        "score/m1",
        b"1-0",
        QoS::AtMostOnce,
        false,
    ));
    let now = h.at(0.0);
    h.broker.publish_from_remote(message, now, &mut out);
    let step = h.finish(out);
    assert!(step.to_remote.is_empty());
    let got = step.to(1);
    assert_eq!(got.len(), 1);
    assert!(matches!(&got[0], Got::Publish(p) if p.topic == "score/m1" && p.payload == b"1-0"));
}

#[test]
fn interest_changes_on_the_first_and_last_subscriber_of_a_filter() {
    let mut h = Harness::new();
    h.broker.join_cluster();
    h.connect(1, &Client::new("one"));
    h.connect(2, &Client::new("two"));
    h.packet(
        1,
        &subscribe(1, &[("s/+", QoS::AtMostOnce), ("s/#", QoS::AtMostOnce)]),
    );
    h.packet(2, &subscribe(1, &[("s/+", QoS::AtLeastOnce)]));
    let mut interest = Vec::new();
    h.broker.take_interest(&mut interest);
    let gained: Vec<(Box<str>, bool)> = vec![("s/+".into(), true), ("s/#".into(), true)];
    assert_eq!(interest, gained);

    interest.clear();
    h.lost(1);
    h.broker.take_interest(&mut interest);
    let lost: Vec<(Box<str>, bool)> = vec![("s/#".into(), false)];
    assert_eq!(interest, lost, "s/+ is still held by the other session");
}

#[test]
fn a_retained_message_from_the_stream_is_kept_not_delivered() {
    let mut h = Harness::new();
    h.broker.join_cluster();
    h.connect(1, &Client::new("live"));
    h.packet(1, &subscribe(1, &[("score/#", QoS::AtMostOnce)]));
    let kept = Arc::new(RoutedMessage::new(
        "score/m1",
        b"2-1",
        QoS::AtMostOnce,
        true,
    ));
    assert!(h.broker.retain_from_cluster(&kept));
    let mut out = Outbox::default();
    h.broker.continue_fanout(h.at(0.0), &mut out);
    let step = h.finish(out);
    assert!(
        step.to(1).is_empty(),
        "live subscribers had it as a publish"
    );
    assert!(step.routed.is_empty(), "every shard takes it itself");

    h.connect(2, &Client::new("late"));
    let step = h.packet(2, &subscribe(1, &[("score/+", QoS::AtMostOnce)]));
    let got = step.publishes(2);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (
            got[0].topic.as_str(),
            got[0].payload.as_slice(),
            got[0].retain
        ),
        ("score/m1", &b"2-1"[..], true)
    );

    let cleared = Arc::new(RoutedMessage::new("score/m1", b"", QoS::AtMostOnce, true));
    assert!(h.broker.retain_from_cluster(&cleared));
    h.connect(3, &Client::new("later"));
    let step = h.packet(3, &subscribe(1, &[("score/+", QoS::AtMostOnce)]));
    assert!(step.publishes(3).is_empty());
}

#[test]
fn accepted_client_ids_are_announced_in_cluster_mode_only() {
    let mut h = Harness::new();
    let step = h.connect(1, &Client::new("alone"));
    assert!(step.connected_clients.is_empty(), "not in cluster mode");
    h.broker.join_cluster();
    let step = h.connect(2, &Client::new("dev"));
    assert_eq!(step.connected_clients, vec!["dev".into()]);
    let step = h.connect(3, &Client::new(""));
    assert!(
        step.connected_clients.is_empty(),
        "an assigned id is this node's own"
    );
}

#[test]
fn a_connect_on_another_node_takes_over_like_a_local_one() {
    let mut h = Harness::new();
    h.broker.join_cluster();
    h.connect(1, &Client::new("dev"));
    h.connect(2, &Client::new("other"));
    let mut out = Outbox::default();
    let now = h.at(1.0);
    h.broker.taken_over_elsewhere("dev", now, &mut out);
    h.broker.taken_over_elsewhere("nobody", now, &mut out);
    let step = h.finish(out);
    assert_eq!(
        step.closes,
        vec![(ConnId(1), CloseReason::SessionTakenOver)]
    );
    assert_eq!(h.broker.stats().takeovers, 1);
}

/// Node `shared`'s shard under `sync` in cluster mode, with a QoS 2 subscriber on 1.
fn sync_node(shared: &Arc<Mutex<DeliveredIds>>) -> Harness {
    let mut h = Harness::new();
    h.broker.keep_session_writes();
    h.broker.hold_acks_until_durable();
    h.broker.join_cluster();
    h.broker.hold_acks_for_cluster();
    h.broker.share_delivered_ids(Arc::clone(shared));
    h.subscriber(1, "sub", "s/#", QoS::ExactlyOnce);
    h
}

fn resent<'a>(topic: &'a str, payload: &'a [u8], packet_id: u16) -> Packet<'a> {
    let mut packet = publish(topic, payload, Delivery::ExactlyOnce(id(packet_id)), false);
    if let Packet::Publish(publish) = &mut packet {
        publish.dup = true;
    }
    packet
}

#[test]
fn a_qos2_publish_resent_after_its_nodes_death_has_the_identity_of_the_first() {
    // Node 1: the publisher's new session is written, then its client sends a QoS 2
    // publish that JetStream stores and whose PUBREC never leaves (the node dies).
    let first_ids = Arc::new(Mutex::new(DeliveredIds::new(16)));
    let mut first = sync_node(&first_ids);
    first.connect(2, &Client::new("pub").persistent());
    let images = images(&mut first);
    let incarnation = images
        .iter()
        .find(|image| &*image.client_id == "pub")
        .map(|image| image.incarnation);
    assert!(
        incarnation.is_some_and(|drawn| drawn != 0),
        "drawn before any publish, so every image carries it"
    );
    let publish_ = publish("s/a", b"goal", Delivery::ExactlyOnce(id(7)), false);
    let step = first.packet(2, &publish_);
    let sent = &step.to_remote[0];
    let origin = sent.origin.as_ref().expect("tentative under sync");
    assert_eq!(Some(origin.incarnation), incarnation);
    let identity = MessageId::of_publish(origin.incarnation, origin.seq, 7);
    assert_eq!(sent.id, Some(identity), "derived, not counted by the node");

    // Node 2 had the stored original from the stream, then takes the session from its
    // image, and the client sends the publish again.
    let second_ids = Arc::new(Mutex::new(DeliveredIds::new(16)));
    assert!(second_ids.lock().expect("unpoisoned").first(identity));
    let mut second = sync_node(&second_ids);
    let mut out = Outbox::default();
    second.broker.load_sessions(&images, second.t0, &mut out);
    second.connect(2, &Client::new("pub").persistent());
    let step = second.packet(2, &resent("s/a", b"goal", 7));
    assert!(step.publishes(1).is_empty(), "not delivered a second time");
    assert!(
        step.to(2).is_empty(),
        "the PUBREC waits for JetStream's answer"
    );
    let [(again, ticket)] = &step.cluster_tickets[..] else {
        panic!("to the stream: {:?}", step.cluster_tickets);
    };
    assert_eq!(again.id, Some(identity), "JetStream keeps one of the two");
    let mut out = Outbox::default();
    second.broker.settle_cluster_ack(*ticket, true, &mut out);
    second.finish(out);
    let barrier = second.broker.seal_held_acks().expect("held for the disk");
    let mut out = Outbox::default();
    second.broker.release_held_acks(barrier, &mut out);
    assert_eq!(second.finish(out).to(2), [Got::PubRec(7)]);

    // A resend the node had not had from the stream (the first node died before storing
    // it) is delivered, and remembered: the stream's copy is then skipped.
    let step = second.packet(2, &resent("s/b", b"save", 8));
    assert_eq!(step.publishes(1).len(), 1);
    let id8 = step.to_remote[0].id.expect("identified");
    assert!(!second_ids.lock().expect("unpoisoned").first(id8));
    // A first sending is not remembered: only a resend can meet its own copy here.
    let step = second.packet(
        2,
        &publish("s/c", b"new", Delivery::ExactlyOnce(id(9)), false),
    );
    assert_eq!(step.publishes(1).len(), 1);
    let id9 = step.to_remote[0].id.expect("identified");
    assert!(second_ids.lock().expect("unpoisoned").first(id9));
}
