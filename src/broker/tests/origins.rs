//! Under `sync`, a QoS 2 publish of a persistent session is tentative until its commit is on
//! disk (`origins.rs`): its copies carry their origin, a persistent QoS 2 subscriber is sent
//! it only once committed, and the publisher's session writes the commit with the identifier.

use super::*;

fn image<'a>(images: &'a [SessionImage], client_id: &str) -> &'a SessionImage {
    images
        .iter()
        .find(|image| &*image.client_id == client_id)
        .expect("written")
}

/// A broker under `sync` with a persistent QoS 2 subscriber (1), a clean one (2), a
/// persistent QoS 1 one (3), and a persistent publisher (4).
fn sync_broker() -> Harness {
    let mut h = Harness::new();
    h.broker.keep_session_writes();
    h.broker.hold_acks_until_durable();
    for (conn, client, qos) in [
        (1, Client::new("keep2").persistent(), QoS::ExactlyOnce),
        (2, Client::new("clean2"), QoS::ExactlyOnce),
        (3, Client::new("keep1").persistent(), QoS::AtLeastOnce),
    ] {
        h.connect(conn, &client);
        h.packet(conn, &subscribe(1, &[("s/#", qos)]));
    }
    h.connect(4, &Client::new("pub").persistent());
    images(&mut h);
    h
}

/// Seals and releases the held acknowledgements, as a durable barrier would.
fn release_acks(h: &mut Harness) -> Step {
    let barrier = h.broker.seal_held_acks().expect("acknowledgements held");
    let mut out = Outbox::default();
    h.broker.release_held_acks(barrier, &mut out);
    h.finish(out)
}

#[test]
fn a_tentative_copy_waits_for_its_commit_only_where_a_crash_would_repeat_it() {
    let mut h = sync_broker();
    let step = h.packet(
        4,
        &publish("s/a", b"once", Delivery::ExactlyOnce(id(7)), false),
    );
    assert!(step.to(4).is_empty(), "the PUBREC is held");
    assert!(step.publishes(1).is_empty(), "tentative: held in the queue");
    assert_eq!(step.publishes(2).len(), 1, "a clean session does not wait");
    assert_eq!(step.publishes(3).len(), 1, "a QoS 1 copy does not wait");

    let written = images(&mut h);
    let queued = &image(&written, "keep2").messages[0];
    assert_eq!(queued.packet_id, None, "queued, not sent");
    let origin = queued.message.origin.as_ref().expect("tentative");
    assert_eq!((&*origin.client_id, origin.seq), ("pub", 1));
    let publisher = image(&written, "pub");
    assert_eq!(publisher.committed_seq, 0);
    assert!(publisher.inbound_qos2.is_empty(), "its PUBREC is held");

    let step = release_acks(&mut h);
    assert_eq!(step.to(4), [Got::PubRec(7)]);
    assert!(
        step.publishes(1).is_empty(),
        "the commit is not on disk yet"
    );
    let written = images(&mut h);
    let publisher = image(&written, "pub");
    assert_eq!(publisher.incarnation, origin.incarnation);
    assert_eq!(publisher.committed_seq, 1, "written with the identifier");
    assert_eq!(publisher.inbound_qos2, [id(7)]);

    let commits = h.broker.take_commits();
    assert_eq!(commits.len(), 1);
    let mut out = Outbox::default();
    h.broker.committed(&commits, &mut out);
    let step = h.finish(out);
    assert_eq!(step.publishes(1)[0].payload, b"once", "sent once committed");
}

#[test]
fn what_is_queued_behind_a_tentative_copy_waits_with_it() {
    let mut h = sync_broker();
    h.packet(
        4,
        &publish("s/a", b"first", Delivery::ExactlyOnce(id(1)), false),
    );
    h.connect(5, &Client::new("other"));
    let step = h.packet(
        5,
        &publish("s/b", b"second", Delivery::AtLeastOnce(id(1)), false),
    );
    assert!(step.publishes(1).is_empty(), "behind the tentative one");
    assert_eq!(
        step.publishes(3).len(),
        1,
        "a QoS 1 subscriber gets it at once"
    );
    release_acks(&mut h);
    // Committed on another shard: the notice reaches this one.
    for origin in h.broker.take_commits() {
        origin.mark_committed();
    }
    let mut out = Outbox::default();
    h.broker
        .shard_message(ShardMessage::Committed, h.t0, &mut out);
    let step = h.finish(out);
    let payloads: Vec<Vec<u8>> = step.publishes(1).into_iter().map(|p| p.payload).collect();
    assert_eq!(payloads, [b"first".to_vec(), b"second".to_vec()]);
}

#[test]
fn a_loaded_publisher_numbers_on_from_its_commit() {
    let mut first = sync_broker();
    for n in 1..=2 {
        first.packet(
            4,
            &publish("s/a", b"x", Delivery::ExactlyOnce(id(n)), false),
        );
    }
    release_acks(&mut first);
    let written = images(&mut first);
    let publisher = image(&written, "pub").clone();
    assert_eq!(publisher.committed_seq, 2);

    let mut second = Harness::new();
    second.broker.keep_session_writes();
    second.broker.hold_acks_until_durable();
    let mut out = Outbox::default();
    second
        .broker
        .load_sessions(std::slice::from_ref(&publisher), second.t0, &mut out);
    second.connect(1, &Client::new("keep2").persistent());
    second.packet(1, &subscribe(1, &[("s/#", QoS::ExactlyOnce)]));
    second.connect(4, &Client::new("pub").persistent());
    second.packet(
        4,
        &publish("s/a", b"y", Delivery::ExactlyOnce(id(3)), false),
    );
    let written = images(&mut second);
    let origin = image(&written, "keep2").messages[0]
        .message
        .origin
        .clone()
        .expect("tentative");
    assert_eq!(
        origin.incarnation, publisher.incarnation,
        "the same session"
    );
    assert_eq!(origin.seq, 3);
}

#[test]
fn without_sync_nothing_is_tentative() {
    let mut h = Harness::new();
    h.broker.keep_session_writes();
    h.connect(1, &Client::new("keep2").persistent());
    h.packet(1, &subscribe(1, &[("s/#", QoS::ExactlyOnce)]));
    h.connect(4, &Client::new("pub").persistent());
    let step = h.packet(
        4,
        &publish("s/a", b"x", Delivery::ExactlyOnce(id(1)), false),
    );
    assert_eq!(step.to(4), [Got::PubRec(1)]);
    let sent = step.publishes(1);
    assert_eq!(sent.len(), 1);
    let written = images(&mut h);
    assert!(
        image(&written, "keep2").messages[0]
            .message
            .origin
            .is_none()
    );
}
