//! MQTT 5: CONNECT / CONNACK properties, session expiry, will delay, flow control, topic
//! aliases, message expiry, subscription options and identifiers, reason codes, server
//! DISCONNECT, the authentication hook, and 3.x subscribers of MQTT 5 publishers.

use super::*;
use crate::broker::auth::{AuthDecision, AuthRequest, Authenticator};
use crate::protocol::mqtt::{
    Ack, Disconnect, PropertiesBuf, Property, PropertyScope, RetainHandling, Unsubscribe,
};

fn props(buf: &PropertiesBuf) -> Properties<'_> {
    buf.as_properties()
}

fn read(raw: &[u8], scope: PropertyScope) -> Properties<'_> {
    Properties::parse(raw, scope).expect("the broker sends valid properties")
}

fn publish5<'a>(
    topic: &'a str,
    payload: &'a [u8],
    delivery: Delivery,
    retain: bool,
    properties: Properties<'a>,
) -> Packet<'a> {
    Packet::Publish(Publish {
        dup: false,
        retain,
        delivery,
        topic,
        payload,
        properties,
    })
}

fn subscribe5<'a>(
    packet_id: u16,
    filters: &[(&'a str, SubscriptionOptions)],
    properties: Properties<'a>,
) -> Packet<'a> {
    Packet::Subscribe(Subscribe {
        packet_id: id(packet_id),
        filters: filters.to_vec(),
        properties,
    })
}

fn disconnect(reason: ReasonCode, properties: Properties<'_>) -> Packet<'_> {
    Packet::Disconnect(Disconnect { reason, properties })
}

fn connack5(step: &Step, conn: u64) -> (bool, ReasonCode, Vec<u8>) {
    match &step.to(conn)[0] {
        Got::ConnAck5(present, reason, raw) => (*present, *reason, raw.clone()),
        other => panic!("expected an MQTT 5 CONNACK, got {other:?}"),
    }
}

/// Connects a clean MQTT 5 client subscribed to `filter` with `options`.
fn subscriber5(h: &mut Harness, conn: u64, client_id: &str, filter: &str, qos: QoS) {
    h.connect(conn, &Client::v5(client_id));
    let step = h.packet(conn, &subscribe(1, &[(filter, qos)]));
    assert_eq!(
        step.to(conn)[0],
        Got::SubAck(1, vec![SubscribeReturnCode::Granted(qos)])
    );
}

#[test]
fn connack_announces_what_the_server_offers() {
    let mut h = Harness::new();
    let step = h.connect(1, &Client::v5(""));
    let (present, reason, raw) = connack5(&step, 1);
    assert!(!present);
    assert_eq!(reason, ReasonCode::SUCCESS);
    let properties = read(&raw, PropertyScope::ConnAck);
    let assigned = properties
        .assigned_client_identifier()
        .expect("an empty id is assigned [MQTT-3.2.2-16]");
    assert!(assigned.starts_with("fanfare-0-"));
    let limits = Limits::default();
    assert_eq!(properties.receive_maximum(), Some(limits.inbound_qos2_max));
    assert_eq!(
        properties.topic_alias_maximum(),
        Some(limits.topic_aliases_max)
    );
    assert_eq!(
        properties.maximum_packet_size_bytes(),
        Some(limits.packet_bytes_max)
    );
    assert_eq!(properties.maximum_qos(), None, "QoS 2 is supported");
    assert_eq!(properties.retain_available(), Some(true));
    assert_eq!(properties.wildcard_subscription_available(), Some(true));
    assert_eq!(properties.subscription_identifier_available(), Some(true));
    assert_eq!(properties.shared_subscription_available(), Some(true));

    // A given identifier is not echoed.
    let step = h.connect(2, &Client::v5("named"));
    let (_, _, raw) = connack5(&step, 2);
    let properties = read(&raw, PropertyScope::ConnAck);
    assert_eq!(properties.assigned_client_identifier(), None);
}

#[test]
fn session_expiry_keeps_the_session_then_ends_it() {
    let mut h = Harness::new();
    let mut expiry = PropertiesBuf::new();
    expiry.push(Property::SessionExpiryInterval(10));
    let mut client = Client::v5("sub");
    client.properties = props(&expiry);
    h.connect(1, &client);
    h.packet(1, &subscribe(1, &[("t", QoS::AtLeastOnce)]));
    h.packet(1, &disconnect(ReasonCode::SUCCESS, Properties::EMPTY));
    assert_eq!(h.broker.stats().offline_sessions, 1);

    h.connect(2, &Client::new("pub"));
    h.packet(
        2,
        &publish("t", b"queued", Delivery::AtLeastOnce(id(1)), false),
    );

    // Back within 10 s with Clean Start = 0: session present, queued message delivered.
    client.clean = false;
    let step = h.connect_at(3, &client, 5.0);
    assert!(connack5(&step, 3).0, "session present");
    assert_eq!(step.publishes(3).len(), 1);
    h.packet(3, &Packet::PubAck(Ack::new(id(1))));
    h.packet_at(3, &disconnect(ReasonCode::SUCCESS, Properties::EMPTY), 5.0);

    // Not back within 10 s: the session ends.
    assert!(h.tick(14.0).sends.is_empty());
    assert_eq!(h.broker.stats().offline_sessions, 1);
    h.tick(15.5);
    assert_eq!(h.broker.stats().offline_sessions, 0);
    assert_eq!(h.broker.stats().sessions, 1, "only the publisher's");
    let step = h.connect_at(4, &client, 16.0);
    assert!(!connack5(&step, 4).0, "no session present");
}

#[test]
fn expiry_zero_ends_the_session_and_disconnect_may_not_extend_it() {
    let mut h = Harness::new();
    h.connect(1, &Client::v5("c"));
    let mut expiry = PropertiesBuf::new();
    expiry.push(Property::SessionExpiryInterval(30));
    let step = h.packet(1, &disconnect(ReasonCode::SUCCESS, props(&expiry)));
    // [MQTT-3.14.2-2]: 0 in CONNECT, non-zero in DISCONNECT is a Protocol Error.
    assert_eq!(
        step.to(1),
        vec![Got::Disconnect(ReasonCode::PROTOCOL_ERROR)]
    );
    assert_eq!(h.broker.stats().sessions, 0);

    // From non-zero to 0 in DISCONNECT: the session ends with the connection.
    let mut client = Client::v5("d");
    client.properties = props(&expiry);
    h.connect(2, &client);
    let mut zero = PropertiesBuf::new();
    zero.push(Property::SessionExpiryInterval(0));
    h.packet(2, &disconnect(ReasonCode::SUCCESS, props(&zero)));
    assert_eq!(h.broker.stats().sessions, 0);
}

fn delayed_will_client<'a>(
    id: &'a str,
    connect: &'a PropertiesBuf,
    will: &'a PropertiesBuf,
) -> Client<'a> {
    let mut client = Client::v5(id);
    client.properties = props(connect);
    client.will = Some(Will {
        topic: "wills/x",
        payload: b"bye",
        qos: QoS::AtMostOnce,
        retain: false,
        properties: props(will),
    });
    client
}

#[test]
fn will_delay_publishes_late_unless_the_client_returns() {
    let mut h = Harness::new();
    subscriber5(&mut h, 9, "watcher", "wills/#", QoS::AtMostOnce);
    let mut connect = PropertiesBuf::new();
    connect.push(Property::SessionExpiryInterval(60));
    let mut will = PropertiesBuf::new();
    will.push(Property::WillDelayInterval(5))
        .push(Property::ContentType("text/plain"));
    let client = delayed_will_client("w", &connect, &will);

    h.connect(1, &client);
    assert!(h.lost(1).publishes(9).is_empty(), "delayed");
    assert!(h.tick(4.0).publishes(9).is_empty());
    let step = h.tick(5.5);
    let got = step.publishes(9);
    assert_eq!(got.len(), 1);
    let forwarded = read(&got[0].properties, PropertyScope::Publish);
    assert_eq!(forwarded.content_type(), Some("text/plain"));
    assert_eq!(forwarded.will_delay_interval_s(), None);

    // Back before the delay: no will [MQTT-3.1.3-9].
    let mut back = client.clone();
    back.clean = false;
    h.connect_at(2, &client, 10.0);
    h.lost(2);
    h.connect_at(3, &back, 11.0);
    assert!(h.tick(20.0).publishes(9).is_empty());
}

/// The first delay's timer is still queued when the client leaves again: it must not publish
/// the new will before the new delay ends.
#[test]
fn a_will_delayed_again_waits_its_whole_new_delay() {
    let mut h = Harness::new();
    subscriber5(&mut h, 9, "watcher", "wills/#", QoS::AtMostOnce);
    let mut connect = PropertiesBuf::new();
    connect.push(Property::SessionExpiryInterval(60));
    let mut will = PropertiesBuf::new();
    will.push(Property::WillDelayInterval(5));
    let client = delayed_will_client("w", &connect, &will);
    let mut back = client.clone();
    back.clean = false;

    h.connect(1, &client);
    h.lost_at(1, 0.0);
    h.connect_at(2, &back, 1.0);
    h.lost_at(2, 3.0);
    assert!(
        h.tick(5.5).publishes(9).is_empty(),
        "the first delay is over"
    );
    assert_eq!(h.tick(8.5).publishes(9).len(), 1);
    assert!(h.tick(20.0).publishes(9).is_empty(), "published once");
}

#[test]
fn disconnect_with_will_message_publishes_the_will() {
    let mut h = Harness::new();
    h.subscriber(9, "watcher", "wills/#", QoS::AtMostOnce);
    let mut client = will_client("w", QoS::AtMostOnce, false);
    client.version = ProtocolVersion::V5;
    h.connect(1, &client);
    let step = h.packet(
        1,
        &disconnect(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE, Properties::EMPTY),
    );
    assert_eq!(step.publishes(9).len(), 1);
    h.connect(2, &client);
    let step = h.packet(2, &disconnect(ReasonCode::SUCCESS, Properties::EMPTY));
    assert!(
        step.publishes(9).is_empty(),
        "normal disconnection drops it"
    );
}

#[test]
fn receive_maximum_bounds_publishes_in_flight_to_the_client() {
    let mut h = Harness::new();
    let mut receive = PropertiesBuf::new();
    receive.push(Property::ReceiveMaximum(2));
    let mut client = Client::v5("slow");
    client.properties = props(&receive);
    h.connect(1, &client);
    h.packet(1, &subscribe(1, &[("t", QoS::AtLeastOnce)]));
    h.connect(2, &Client::new("pub"));
    let mut sent = 0;
    for i in 1..=3 {
        let step = h.packet(2, &publish("t", b"x", Delivery::AtLeastOnce(id(i)), false));
        sent += step.publishes(1).len();
    }
    assert_eq!(sent, 2, "the third waits for an acknowledgement");
    let step = h.packet(1, &Packet::PubAck(Ack::new(id(1))));
    assert_eq!(step.publishes(1).len(), 1);
}

#[test]
fn our_receive_maximum_is_enforced_with_0x93() {
    let limits = Limits {
        inbound_qos2_max: 1,
        ..Limits::default()
    };
    let mut h = Harness::with(limits, 1);
    h.connect(1, &Client::v5("pub"));
    h.packet(1, &publish("t", b"x", Delivery::ExactlyOnce(id(1)), false));
    let step = h.packet(1, &publish("t", b"x", Delivery::ExactlyOnce(id(2)), false));
    assert_eq!(
        step.to(1),
        vec![Got::Disconnect(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)]
    );
    assert_eq!(step.closes.len(), 1);
}

#[test]
fn maximum_packet_size_skips_only_that_subscriber() {
    let mut h = Harness::new();
    let mut small = PropertiesBuf::new();
    small.push(Property::MaximumPacketSize(64));
    let mut client = Client::v5("small");
    client.properties = props(&small);
    h.connect(1, &client);
    h.packet(1, &subscribe(1, &[("t", QoS::AtLeastOnce)]));
    subscriber5(&mut h, 2, "big", "t", QoS::AtLeastOnce);
    h.connect(3, &Client::new("pub"));
    let large = [7u8; 100];
    let step = h.packet(
        3,
        &publish("t", &large, Delivery::AtLeastOnce(id(1)), false),
    );
    assert!(step.publishes(1).is_empty());
    assert_eq!(step.publishes(2).len(), 1);
    assert_eq!(h.broker.stats().too_large_for_client, 1);
    let step = h.packet(
        3,
        &publish("t", b"tiny", Delivery::AtLeastOnce(id(2)), false),
    );
    assert_eq!(step.publishes(1).len(), 1, "the window was not used up");
}

#[test]
fn topic_aliases_resolve_and_unknown_ones_disconnect() {
    let mut h = Harness::new();
    h.subscriber(9, "watcher", "a/#", QoS::AtMostOnce);
    h.connect(1, &Client::v5("pub"));
    let mut alias = PropertiesBuf::new();
    alias.push(Property::TopicAlias(3));
    h.packet(
        1,
        &publish5("a/b", b"1", Delivery::AtMostOnce, false, props(&alias)),
    );
    let step = h.packet(
        1,
        &publish5("", b"2", Delivery::AtMostOnce, false, props(&alias)),
    );
    assert_eq!(step.publishes(9)[0].topic, "a/b");
    assert!(step.publishes(9)[0].properties.is_empty(), "3.x gets none");

    let mut unknown = PropertiesBuf::new();
    unknown.push(Property::TopicAlias(4));
    let step = h.packet(
        1,
        &publish5("", b"3", Delivery::AtMostOnce, false, props(&unknown)),
    );
    assert_eq!(
        step.to(1),
        vec![Got::Disconnect(ReasonCode::TOPIC_ALIAS_INVALID)]
    );
    assert!(step.publishes(9).is_empty());

    // Above topic_aliases_max.
    h.connect(2, &Client::v5("pub2"));
    let mut high = PropertiesBuf::new();
    high.push(Property::TopicAlias(
        Limits::default().topic_aliases_max + 1,
    ));
    let step = h.packet(
        2,
        &publish5("a/c", b"4", Delivery::AtMostOnce, false, props(&high)),
    );
    assert_eq!(
        step.to(2),
        vec![Got::Disconnect(ReasonCode::TOPIC_ALIAS_INVALID)]
    );
}

#[test]
fn message_expiry_counts_down_and_drops_expired_messages() {
    let mut h = Harness::new();
    let mut expiry = PropertiesBuf::new();
    expiry.push(Property::SessionExpiryInterval(100));
    let mut client = Client::v5("away");
    client.properties = props(&expiry);
    h.connect(1, &client);
    h.packet(1, &subscribe(1, &[("t/#", QoS::AtLeastOnce)]));
    h.lost(1);

    h.connect(2, &Client::v5("pub"));
    let mut ten = PropertiesBuf::new();
    ten.push(Property::MessageExpiryInterval(10))
        .push(Property::UserProperty("k", "v"));
    h.packet(
        2,
        &publish5(
            "t/q",
            b"q",
            Delivery::AtLeastOnce(id(1)),
            false,
            props(&ten),
        ),
    );
    h.packet(
        2,
        &publish5("t/r", b"r", Delivery::AtMostOnce, true, props(&ten)),
    );

    // Back after 4 s: the queued message says 6 s remain; user properties are kept.
    client.clean = false;
    let step = h.connect_at(3, &client, 4.0);
    let got = step.publishes(3);
    assert_eq!(got.len(), 1);
    let forwarded = read(&got[0].properties, PropertyScope::Publish);
    assert_eq!(forwarded.message_expiry_interval_s(), Some(6));
    assert_eq!(
        forwarded.user_properties().collect::<Vec<_>>(),
        [("k", "v")]
    );

    // The retained one, subscribed at 7 s: 3 s remain.
    subscriber5(&mut h, 4, "late", "nothing", QoS::AtMostOnce);
    let step = h.packet_at(4, &subscribe(2, &[("t/r", QoS::AtMostOnce)]), 7.0);
    let got = step.publishes(4);
    assert_eq!(got.len(), 1);
    let forwarded = read(&got[0].properties, PropertyScope::Publish);
    assert_eq!(forwarded.message_expiry_interval_s(), Some(3));

    // After 10 s neither is delivered.
    h.connect_at(5, &Client::v5("later"), 11.0);
    let step = h.packet_at(5, &subscribe(1, &[("t/#", QoS::AtMostOnce)]), 11.0);
    assert!(step.publishes(5).is_empty());
}

#[test]
fn invalid_utf8_payload_is_refused_with_0x99() {
    let mut h = Harness::new();
    h.subscriber(9, "watcher", "t", QoS::AtMostOnce);
    h.connect(1, &Client::v5("pub"));
    let mut utf8 = PropertiesBuf::new();
    utf8.push(Property::PayloadFormatIndicator(1));
    let bad = [0xff, 0xfe];
    let step = h.packet(
        1,
        &publish5("t", &bad, Delivery::AtLeastOnce(id(1)), false, props(&utf8)),
    );
    assert_eq!(
        step.to(1),
        vec![Got::AckReason(4, 1, ReasonCode::PAYLOAD_FORMAT_INVALID)]
    );
    let step = h.packet(
        1,
        &publish5("t", &bad, Delivery::ExactlyOnce(id(2)), false, props(&utf8)),
    );
    assert_eq!(
        step.to(1),
        vec![Got::AckReason(5, 2, ReasonCode::PAYLOAD_FORMAT_INVALID)]
    );
    assert!(step.publishes(9).is_empty());
    let step = h.packet(
        1,
        &publish5(
            "t",
            "é".as_bytes(),
            Delivery::AtMostOnce,
            false,
            props(&utf8),
        ),
    );
    assert_eq!(step.publishes(9).len(), 1, "valid UTF-8 passes");
    let step = h.packet(
        1,
        &publish5("t", &bad, Delivery::AtMostOnce, false, props(&utf8)),
    );
    assert_eq!(
        step.to(1),
        vec![Got::Disconnect(ReasonCode::PAYLOAD_FORMAT_INVALID)]
    );
}

#[test]
fn pubrel_for_an_unknown_id_gets_0x92() {
    let mut h = Harness::new();
    h.connect(1, &Client::v5("c"));
    let step = h.packet(1, &Packet::PubRel(Ack::new(id(5))));
    assert_eq!(
        step.to(1),
        vec![Got::AckReason(
            7,
            5,
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        )]
    );
    h.packet(1, &publish("t", b"x", Delivery::ExactlyOnce(id(6)), false));
    let step = h.packet(1, &Packet::PubRel(Ack::new(id(6))));
    assert_eq!(step.to(1), vec![Got::PubComp(6)]);
}

#[test]
fn no_local_and_retain_as_published() {
    let mut h = Harness::new();
    h.connect(1, &Client::v5("both"));
    let no_local = SubscriptionOptions {
        no_local: true,
        ..SubscriptionOptions::new(QoS::AtMostOnce)
    };
    let keep_retain = SubscriptionOptions {
        retain_as_published: true,
        ..SubscriptionOptions::new(QoS::AtMostOnce)
    };
    h.packet(
        1,
        &subscribe5(
            1,
            &[("mine", no_local), ("kept", keep_retain)],
            Properties::EMPTY,
        ),
    );
    let step = h.packet(1, &publish("mine", b"x", Delivery::AtMostOnce, false));
    assert!(step.publishes(1).is_empty(), "[MQTT-3.8.3-3]");
    h.connect(2, &Client::v5("other"));
    let step = h.packet(2, &publish("mine", b"x", Delivery::AtMostOnce, false));
    assert_eq!(step.publishes(1).len(), 1);
    let step = h.packet(2, &publish("kept", b"r", Delivery::AtMostOnce, true));
    assert!(step.publishes(1)[0].retain, "[MQTT-3.3.1-12]");
}

#[test]
fn retain_handling_0_1_2() {
    let mut h = Harness::new();
    h.connect(9, &Client::new("pub"));
    h.packet(9, &publish("r", b"kept", Delivery::AtMostOnce, true));
    h.connect(1, &Client::v5("sub"));
    let with = |handling| SubscriptionOptions {
        retain_handling: handling,
        ..SubscriptionOptions::new(QoS::AtMostOnce)
    };
    let count = |h: &mut Harness, packet_id, handling| {
        let packet = subscribe5(packet_id, &[("r", with(handling))], Properties::EMPTY);
        h.packet(1, &packet).publishes(1).len()
    };
    assert_eq!(count(&mut h, 1, RetainHandling::SendAtNewSubscribe), 1);
    assert_eq!(count(&mut h, 2, RetainHandling::SendAtNewSubscribe), 0);
    assert_eq!(count(&mut h, 3, RetainHandling::SendAtSubscribe), 1);
    assert_eq!(count(&mut h, 4, RetainHandling::DoNotSend), 0);
}

#[test]
fn subscription_identifiers_go_with_each_delivery() {
    let mut h = Harness::new();
    h.connect(1, &Client::v5("sub"));
    let mut one = PropertiesBuf::new();
    one.push(Property::SubscriptionIdentifier(1));
    let mut two = PropertiesBuf::new();
    two.push(Property::SubscriptionIdentifier(200));
    let qos0 = SubscriptionOptions::new(QoS::AtMostOnce);
    h.packet(1, &subscribe5(1, &[("a/+", qos0)], props(&one)));
    h.packet(1, &subscribe5(2, &[("a/#", qos0)], props(&two)));
    h.connect(2, &Client::new("pub"));
    let step = h.packet(2, &publish("a/b", b"x", Delivery::AtMostOnce, false));
    let got = step.publishes(1);
    assert_eq!(got.len(), 1, "one copy for overlapping subscriptions");
    let mut ids: Vec<u32> = read(&got[0].properties, PropertyScope::Publish)
        .subscription_identifiers()
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 200]);

    // Retained messages carry the identifier of the subscription that sent them.
    h.packet(2, &publish("c", b"r", Delivery::AtMostOnce, true));
    let step = h.packet(1, &subscribe5(3, &[("c", qos0)], props(&one)));
    let ids: Vec<u32> = read(&step.publishes(1)[0].properties, PropertyScope::Publish)
        .subscription_identifiers()
        .collect();
    assert_eq!(ids, [1]);
}

#[test]
fn unsuback_has_a_reason_per_filter() {
    let mut h = Harness::new();
    subscriber5(&mut h, 1, "sub", "a", QoS::AtMostOnce);
    let step = h.packet(
        1,
        &Packet::Unsubscribe(Unsubscribe {
            packet_id: id(2),
            filters: vec!["a", "b"],
            properties: Properties::EMPTY,
        }),
    );
    assert_eq!(
        step.to(1),
        vec![Got::UnsubAck5(
            2,
            vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
        )]
    );
}

#[test]
fn server_disconnects_say_why() {
    let mut h = Harness::new();
    h.connect(1, &Client::v5("same"));
    let step = h.connect(2, &Client::v5("same"));
    assert_eq!(
        step.to(1),
        vec![Got::Disconnect(ReasonCode::SESSION_TAKEN_OVER)]
    );
    assert_eq!(
        step.closes,
        vec![(ConnId(1), CloseReason::SessionTakenOver)]
    );

    let mut client = Client::v5("sleepy");
    client.keep_alive_s = 10;
    h.connect(3, &client);
    let step = h.tick(16.0);
    assert_eq!(
        step.to(3),
        vec![Got::Disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT)]
    );

    let mut out = Outbox::default();
    h.broker.shutdown(&mut out);
    let step = h.finish(out);
    assert_eq!(
        step.to(2),
        vec![Got::Disconnect(ReasonCode::SERVER_SHUTTING_DOWN)]
    );

    // A 3.x client only sees the close.
    let mut h = Harness::new();
    h.connect(1, &Client::new("old"));
    let step = h.connect(2, &Client::new("old"));
    assert!(step.to(1).is_empty());
}

struct Token;

impl Authenticator for Token {
    fn method(&self) -> &str {
        "token"
    }

    fn authenticate(&mut self, request: &AuthRequest<'_>) -> AuthDecision {
        if request.data == Some(b"open sesame") {
            AuthDecision::Accept
        } else {
            AuthDecision::Refuse(ReasonCode::NOT_AUTHORIZED)
        }
    }
}

#[test]
fn authentication_method_needs_a_hook() {
    let mut h = Harness::new();
    let mut method = PropertiesBuf::new();
    method.push(Property::AuthenticationMethod("token"));
    let mut client = Client::v5("a");
    client.properties = props(&method);
    let step = h.connect(1, &client);
    assert_eq!(connack5(&step, 1).1, ReasonCode::BAD_AUTHENTICATION_METHOD);
    assert_eq!(step.closes, vec![(ConnId(1), CloseReason::ConnectRefused)]);

    h.broker.set_authenticator(Box::new(Token));
    let step = h.connect(2, &client);
    assert_eq!(connack5(&step, 2).1, ReasonCode::NOT_AUTHORIZED);
    let mut good = PropertiesBuf::new();
    good.push(Property::AuthenticationMethod("token"))
        .push(Property::AuthenticationData(b"open sesame"));
    client.properties = props(&good);
    let step = h.connect(3, &client);
    assert_eq!(connack5(&step, 3).1, ReasonCode::SUCCESS);
    let mut other = PropertiesBuf::new();
    other.push(Property::AuthenticationMethod("SCRAM-SHA-1"));
    client.properties = props(&other);
    let step = h.connect(4, &client);
    assert_eq!(connack5(&step, 4).1, ReasonCode::BAD_AUTHENTICATION_METHOD);
}

#[test]
fn each_version_gets_what_it_can_express() {
    let mut h = Harness::new();
    let mut v31 = Client::new("v31");
    v31.version = ProtocolVersion::V31;
    h.connect(1, &v31);
    h.packet(1, &subscribe(1, &[("mix", QoS::AtLeastOnce)]));
    h.subscriber(2, "v311", "mix", QoS::AtLeastOnce);
    subscriber5(&mut h, 3, "v5", "mix", QoS::AtLeastOnce);

    h.connect(4, &Client::v5("pub5"));
    let mut user = PropertiesBuf::new();
    user.push(Property::UserProperty("team", "home"))
        .push(Property::ContentType("text/plain"));
    let step = h.packet(
        4,
        &publish5(
            "mix",
            b"goal",
            Delivery::AtLeastOnce(id(1)),
            false,
            props(&user),
        ),
    );
    for conn in [1, 2] {
        let got = step.publishes(conn);
        assert_eq!(got.len(), 1);
        assert!(got[0].properties.is_empty());
        assert_eq!(got[0].payload, b"goal");
    }
    let got = step.publishes(3);
    let forwarded = read(&got[0].properties, PropertyScope::Publish);
    assert_eq!(forwarded.content_type(), Some("text/plain"));
    assert_eq!(
        forwarded.user_properties().collect::<Vec<_>>(),
        [("team", "home")]
    );

    // A 3.1 publisher reaches the MQTT 5 subscriber without properties.
    let step = h.packet(1, &publish("mix", b"point", Delivery::AtMostOnce, false));
    assert_eq!(step.publishes(3).len(), 1);
    assert!(step.publishes(3)[0].properties.is_empty());
}

/// Publishes parked behind a large fan-out are grouped only with those of the same publisher:
/// No Local is decided per publisher, and interleaved publishers keep their order.
#[test]
fn grouped_fanout_keeps_no_local_per_publisher() {
    let mut h = Harness::new();
    let filler = crate::broker::FANOUT_SESSIONS_PER_TURN_MAX as u64 + 10;
    for conn in 1..=filler {
        h.subscriber(conn, &format!("s{conn}"), "t", QoS::AtMostOnce);
    }
    let me = filler + 1;
    h.connect(me, &Client::v5("me"));
    let no_local = SubscriptionOptions {
        no_local: true,
        ..SubscriptionOptions::new(QoS::AtMostOnce)
    };
    h.packet(me, &subscribe5(1, &[("t", no_local)], Properties::EMPTY));
    let other = me + 1;
    h.connect(other, &Client::v5("other"));
    // One turn: the first publish fills the turn's budget; the rest park behind it, my own
    // publishes interleaved with the other publisher's.
    let mut out = Outbox::default();
    let now = h.at(0.0);
    for (from, payload) in [
        (other, b"1"),
        (me, b"2"),
        (me, b"3"),
        (other, b"4"),
        (other, b"5"),
    ] {
        let packet = publish("t", payload, Delivery::AtMostOnce, false);
        h.broker.packet(ConnId(from), &packet, now, &mut out);
    }
    let mut steps = vec![h.finish(out)];
    for _ in 0..8 {
        steps.push(h.tick(0.0));
    }
    let mine: Vec<Vec<u8>> = steps
        .iter()
        .flat_map(|step| step.publishes(me))
        .map(|p| p.payload)
        .collect();
    assert_eq!(mine, [b"1", b"4", b"5"], "[MQTT-3.8.3-3]: never my own");
    let everyone: Vec<Vec<u8>> = steps
        .iter()
        .flat_map(|step| step.publishes(1))
        .map(|p| p.payload)
        .collect();
    assert_eq!(everyone, [b"1", b"2", b"3", b"4", b"5"]);
}

/// At the largest sizes the configuration allows, a PUBLISH re-encoded for a subscriber still
/// fits what MQTT can express: a 3.1.1 publish of the largest size goes to an MQTT 5 WebSocket
/// subscriber with four Subscription Identifiers, and an MQTT 5 publish that names its longest
/// topic through a Topic Alias goes to it with a Message Expiry Interval too.
#[test]
fn the_largest_publishes_fit_every_re_encoding() {
    let mut limits = Limits {
        topic_bytes_max: u16::MAX,
        topic_levels_max: u16::MAX,
        ..Limits::default()
    };
    let packet_max = 268_435_460 - limits.publish_growth_bytes_max();
    limits.packet_bytes_max = u32::try_from(packet_max).expect("below 2^32");
    assert_eq!(limits.validate(), Ok(()));
    limits.packet_bytes_max += 1;
    let refused = limits.validate().expect_err("one byte more does not fit");
    assert!(
        refused.message.contains("packet_bytes_max"),
        "{}",
        refused.message
    );
    limits.packet_bytes_max -= 1;
    let packet_max = packet_max as usize;

    let mut h = Harness::with(limits, 1);
    let mut watcher = Client::v5("watcher");
    watcher.transport = Transport::Ws;
    h.connect(1, &watcher);
    let qos0 = SubscriptionOptions::new(QoS::AtMostOnce);
    for (n, filter) in ["#", "+/#", "+/+/#", "+/+/+/#"].into_iter().enumerate() {
        let mut ids = PropertiesBuf::new();
        ids.push(Property::SubscriptionIdentifier(268_435_455 - n as u32));
        h.packet(1, &subscribe5(n as u16 + 1, &[(filter, qos0)], props(&ids)));
    }
    // The longest topic: levels of one byte, so every wildcard filter above matches it.
    let topic: String = (0..usize::from(u16::MAX))
        .map(|i| if i % 2 == 1 { '/' } else { 'x' })
        .collect();
    h.connect(2, &Client::new("publisher"));
    // 1 + 4 (remaining length) + 2 + topic + payload = the largest packet.
    let payload = vec![7u8; packet_max - 7 - topic.len()];
    let step = h.packet(2, &publish(&topic, &payload, Delivery::AtMostOnce, false));
    assert_received_within_the_protocol(&step, payload.len());

    h.connect(3, &Client::v5("aliaser"));
    let mut alias = PropertiesBuf::new();
    alias.push(Property::TopicAlias(1));
    h.packet(
        3,
        &publish5(&topic, b"set", Delivery::AtMostOnce, false, props(&alias)),
    );
    let mut alias_and_expiry = PropertiesBuf::new();
    alias_and_expiry.push(Property::TopicAlias(1));
    alias_and_expiry.push(Property::MessageExpiryInterval(u32::MAX));
    // 1 + 4 + 2 (empty topic) + 1 (property length) + 3 + 5 + payload.
    let payload = vec![7u8; packet_max - 16];
    let step = h.packet(
        3,
        &publish5(
            "",
            &payload,
            Delivery::AtMostOnce,
            false,
            props(&alias_and_expiry),
        ),
    );
    assert_received_within_the_protocol(&step, payload.len());
}

fn assert_received_within_the_protocol(step: &Step, payload_bytes: usize) {
    let got = step.publishes(1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload.len(), payload_bytes);
    let ids = read(&got[0].properties, PropertyScope::Publish).subscription_identifiers();
    assert_eq!(ids.count(), 4);
    for (_, chunk) in &step.chunks {
        // A 10-byte WebSocket header around at most the largest MQTT packet.
        assert!(chunk.len() <= 10 + 268_435_460);
    }
}
