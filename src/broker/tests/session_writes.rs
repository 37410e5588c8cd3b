//! Persistent sessions for the store: what is noted and taken per flush, and a session loaded
//! into another broker (as after a restart) resumed with its subscriptions and messages.

use super::*;
use crate::broker::message_ids::SentWindow;

fn qos1(packet_id: u16) -> Delivery {
    Delivery::AtLeastOnce(id(packet_id))
}

#[test]
fn a_session_is_taken_once_per_flush_whole_and_in_order() {
    let mut h = Harness::new();
    h.broker.keep_session_writes();
    h.connect(1, &Client::new("keep").persistent());
    h.packet(1, &subscribe(1, &[("s/#", QoS::AtLeastOnce)]));
    h.lost(1);
    h.connect(2, &Client::new("pub"));
    for n in 0..3u8 {
        h.packet(
            2,
            &publish("s/x", &[b'0' + n], qos1(u16::from(n) + 1), false),
        );
    }
    let writes = h.broker.take_session_writes();
    let [SessionWrite::Set(image)] = &writes[..] else {
        panic!("one session, written once: {writes:?}");
    };
    assert_eq!(&*image.client_id, "keep");
    assert_eq!(image.expiry_s, u32::MAX);
    assert_eq!(
        image.expires_at, None,
        "3.1.1 clean session 0 never expires"
    );
    assert_eq!(&*image.subscriptions[0].filter, "s/#");
    let payloads: Vec<&[u8]> = image.messages.iter().map(|m| &*m.message.payload).collect();
    assert_eq!(payloads, [b"0", b"1", b"2"]);
    assert!(
        !h.broker.session_writes_pending(),
        "clean sessions are not written"
    );

    // A clean start ends the persistent session: written as ended.
    h.connect(3, &Client::new("keep"));
    let writes = h.broker.take_session_writes();
    assert!(
        matches!(&writes[..], [SessionWrite::Ended(id)] if &**id == "keep"),
        "{writes:?}"
    );
}

#[test]
fn a_loaded_session_resumes_with_its_messages_and_subscriptions() {
    let mut first = Harness::new();
    first.broker.keep_session_writes();
    first.connect(1, &Client::new("keep").persistent());
    first.packet(1, &subscribe(1, &[("s/#", QoS::AtLeastOnce)]));
    first.lost(1);
    first.connect(2, &Client::new("pub"));
    first.packet(2, &publish("s/x", b"queued", qos1(1), false));
    let images = images(&mut first);

    let mut second = Harness::new();
    let mut out = Outbox::default();
    second.broker.load_sessions(&images, second.t0, &mut out);
    assert_eq!(second.broker.stats().offline_sessions, 1);
    let step = second.connect(1, &Client::new("keep").persistent());
    let got = step.to(1);
    assert_eq!(got[0], Got::ConnAck(true, ConnectReturnCode::Accepted));
    let queued = step.publishes(1);
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].payload, b"queued");
    second.connect(2, &Client::new("pub"));
    second.packet(2, &publish("s/y", b"live", qos1(1), false));
    let step = second.packet(1, &Packet::PubAck(crate::protocol::mqtt::Ack::new(id(1))));
    assert!(step.publishes(1).is_empty());
    let live = second.packet(2, &publish("s/z", b"after", qos1(2), false));
    assert_eq!(live.publishes(1)[0].payload, b"after");
}

fn ack(packet_id: u16) -> crate::protocol::mqtt::Ack<'static> {
    crate::protocol::mqtt::Ack::new(id(packet_id))
}

#[test]
fn in_flight_identifiers_and_qos2_state_come_back_after_a_load() {
    let mut first = Harness::new();
    first.broker.keep_session_writes();
    first.connect(1, &Client::new("sub").persistent());
    first.packet(1, &subscribe(1, &[("s/#", QoS::ExactlyOnce)]));
    first.connect(2, &Client::new("pub").persistent());
    let step = first.packet(
        2,
        &publish("s/a", b"two", Delivery::ExactlyOnce(id(7)), false),
    );
    assert_eq!(step.to(2), [Got::PubRec(7)]);
    let released = step.publishes(1)[0].id.expect("QoS 2 has an id");
    assert_eq!(
        first.packet(1, &Packet::PubRec(ack(released))).to(1),
        [Got::PubRel(released)]
    );
    let step = first.packet(2, &publish("s/b", b"one", qos1(8), false));
    let unacked = step.publishes(1)[0].id.expect("QoS 1 has an id");
    let images = images(&mut first);
    // The publisher's inbound QoS 2 state is written after what its publishes queued here.
    let order: Vec<&str> = images.iter().map(|image| &*image.client_id).collect();
    assert_eq!(order, ["sub", "pub"]);
    assert_eq!(images[1].inbound_qos2, [id(7)]);
    assert_eq!(images[0].released, [id(released)]);
    assert_eq!(images[0].messages[0].packet_id, Some(id(unacked)));

    let mut second = Harness::new();
    let mut out = Outbox::default();
    assert_eq!(second.broker.load_sessions(&images, second.t0, &mut out), 0);
    second.connect(1, &Client::new("sub").persistent());
    // The publisher's PUBLISH again: recognised, not routed; its PUBREL is known.
    second.connect(2, &Client::new("pub").persistent());
    let mut again = publish("s/a", b"two", Delivery::ExactlyOnce(id(7)), false);
    if let Packet::Publish(publish) = &mut again {
        publish.dup = true;
    }
    let step = second.packet(2, &again);
    assert_eq!(step.to(2), [Got::PubRec(7)]);
    assert!(step.publishes(1).is_empty(), "delivered once");
    assert_eq!(
        second.packet(2, &Packet::PubRel(ack(7))).to(2),
        [Got::PubComp(7)]
    );
    // The subscriber, on its next connection: PUBREL, then the PUBLISH with DUP.
    second.lost(1);
    let step = second.connect(3, &Client::new("sub").persistent());
    assert_eq!(
        step.to(3),
        [
            Got::ConnAck(true, ConnectReturnCode::Accepted),
            Got::PubRel(released),
            Got::Publish(pub_got(
                "s/b",
                b"one",
                QoS::AtLeastOnce,
                Some(unacked),
                false,
                true
            )),
        ]
    );
}

#[test]
fn a_delayed_will_is_kept_and_published_at_its_deadline_after_a_load() {
    use crate::protocol::mqtt::{PropertiesBuf, Property, Will};
    let mut connect = PropertiesBuf::new();
    connect.push(Property::SessionExpiryInterval(600));
    let mut will = PropertiesBuf::new();
    will.push(Property::WillDelayInterval(30));
    let mut client = Client::v5("w");
    client.properties = connect.as_properties();
    client.will = Some(Will {
        topic: "wills/w",
        payload: b"bye",
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: will.as_properties(),
    });
    let mut first = Harness::new();
    first.broker.keep_session_writes();
    first.connect(1, &client);
    first.lost_at(1, 0.0);
    let images = images(&mut first);
    let will = images[0].delayed_will.as_ref().expect("a will waits");
    assert_eq!(will.due, first.at(30.0));

    let mut second = Harness::new();
    second.subscriber(9, "watcher", "wills/#", QoS::AtLeastOnce);
    let mut out = Outbox::default();
    second.broker.load_sessions(&images, second.t0, &mut out);
    assert!(second.tick(29.0).publishes(9).is_empty());
    let got = second.tick(31.0).publishes(9);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"bye");
    assert_eq!(second.broker.stats().wills_published, 1);
}

#[test]
fn sessions_loaded_past_the_offline_bound_end_the_longest_offline_first() {
    let mut first = Harness::new();
    first.broker.keep_session_writes();
    for (conn, client_id) in [(1, "a"), (2, "b"), (3, "c")] {
        first.connect(conn, &Client::new(client_id).persistent());
        first.lost(conn);
    }
    let mut images = images(&mut first);
    // The store hands them over the longest offline first.
    images.sort_by(|x, y| x.client_id.cmp(&y.client_id));
    let limits = Limits {
        offline_sessions_per_shard_max: 2,
        ..Limits::default()
    };
    let mut second = Harness::with(limits, 1);
    second.broker.keep_session_writes();
    let mut out = Outbox::default();
    assert_eq!(second.broker.load_sessions(&images, second.t0, &mut out), 1);
    assert_eq!(second.broker.stats().offline_sessions, 2);
    let writes = second.broker.take_session_writes();
    assert!(
        matches!(&writes[..], [SessionWrite::Ended(id)] if &**id == "a"),
        "written as ended: {writes:?}"
    );
    let step = second.connect(1, &Client::new("b").persistent());
    assert_eq!(
        step.to(1)[0],
        Got::ConnAck(true, ConnectReturnCode::Accepted)
    );
}

#[test]
fn a_session_handed_over_ends_here_as_moved_and_resumes_on_the_other_node() {
    let mut first = Harness::new();
    first.broker.keep_session_writes();
    first.connect(1, &Client::new("mover").persistent());
    first.packet(1, &subscribe(1, &[("m/#", QoS::AtLeastOnce)]));
    first.lost(1);
    first.connect(2, &Client::new("pub"));
    first.packet(2, &publish("m/x", b"queued", qos1(1), false));
    first.broker.take_session_writes();
    let mut out = Outbox::default();
    let image = first
        .broker
        .hand_over_session("mover", first.t0, &mut out)
        .expect("a persistent session is held here");
    assert_eq!(image.subscriptions.len(), 1);
    assert_eq!(image.messages.len(), 1);
    assert!(
        first
            .broker
            .hand_over_session("mover", first.t0, &mut out)
            .is_none(),
        "gone from here"
    );
    assert!(
        first
            .broker
            .hand_over_session("pub", first.t0, &mut out)
            .is_none(),
        "a clean session does not move"
    );
    let writes = first.broker.take_session_writes();
    assert!(
        matches!(&writes[..], [SessionWrite::Moved(id)] if &**id == "mover"),
        "moved, not ended: {writes:?}"
    );

    let mut second = Harness::new();
    second.broker.join_cluster();
    let client = Client::new("mover").persistent();
    assert!(second.broker.fetches_session(&client.connect_packet()));
    second.broker.install_session(&image, second.t0, &mut out);
    assert!(!second.broker.fetches_session(&client.connect_packet()));
    let step = second.connect(1, &client);
    assert_eq!(
        step.to(1)[0],
        Got::ConnAck(true, ConnectReturnCode::Accepted)
    );
    assert_eq!(step.publishes(1)[0].payload, b"queued");
}

/// In cluster mode a QoS 1/2 publish gets its identity where it enters, before its first
/// delivery, and a connected persistent session's image lists what it was sent within the
/// margin: what a replay after the node's death skips (`message_ids.rs`).
#[test]
fn in_cluster_mode_an_image_knows_what_its_client_was_sent_by_identity() {
    let mut h = Harness::new();
    h.broker.join_cluster();
    h.broker.keep_session_writes();
    h.broker.remember_sent(SentWindow {
        margin: Duration::from_secs(2),
        max: 2,
    });
    h.connect(1, &Client::new("fan").persistent());
    h.packet(1, &subscribe(1, &[("m/#", QoS::AtLeastOnce)]));
    h.connect(2, &Client::new("pub"));
    let mut sent = Vec::new();
    for (n, payload) in [b"1", b"2", b"3"].iter().enumerate() {
        let step = h.packet(2, &publish("m/x", *payload, qos1(n as u16 + 1), false));
        let [message] = &step.to_remote[..] else {
            panic!("one publish for the cluster: {:?}", step.to_remote);
        };
        sent.push(message.id.expect("a QoS 1 publish has an identity"));
    }
    assert_ne!(sent[0], sent[1]);
    let step = h.packet(2, &publish("m/x", b"0", Delivery::AtMostOnce, false));
    assert_eq!(step.to_remote[0].id, None, "QoS 0 needs none");
    let image = images(&mut h)
        .into_iter()
        .find(|image| &*image.client_id == "fan")
        .expect("the subscriber's image");
    assert_eq!(image.sent_ids, sent[1..], "the newest `max`, oldest first");
    let queued: Vec<_> = image.messages.iter().map(|q| q.message.id).collect();
    assert_eq!(queued, sent.iter().copied().map(Some).collect::<Vec<_>>());
}
