//! Persistent sessions for the store: what is noted and taken per flush, and a session loaded
//! into another broker (as after a restart) resumed with its subscriptions and messages.

use super::*;

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
    let images: Vec<SessionImage> = first
        .broker
        .take_session_writes()
        .into_iter()
        .filter_map(|write| match write {
            SessionWrite::Set(image) => Some(image),
            SessionWrite::Ended(_) => None,
        })
        .collect();

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
