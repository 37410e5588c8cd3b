//! What the operations listener reads of a broker: listings paged by client identifier, one
//! client's subscriptions, the subscribers of a topic, and a kick.

use super::*;
use crate::broker::admin::{ClientFilter, KICKED, Kick};

fn page(h: &Harness, filter: &ClientFilter) -> Vec<String> {
    h.broker
        .client_rows(filter, 2, |_| true)
        .into_iter()
        .map(|row| row.client_id.to_string())
        .collect()
}

#[test]
fn listing_pages_by_client_id() {
    let mut h = Harness::new();
    for (conn, id) in ["c", "a", "e", "b", "d", "x1"].iter().enumerate() {
        h.connect(conn as u64 + 1, &Client::new(id));
    }
    let after = |after: &str| ClientFilter {
        after: Some(after.into()),
        ..ClientFilter::default()
    };
    assert_eq!(page(&h, &ClientFilter::default()), ["a", "b"]);
    assert_eq!(page(&h, &after("b")), ["c", "d"]);
    assert_eq!(page(&h, &after("d")), ["e", "x1"]);
    assert!(page(&h, &after("x1")).is_empty());
    let prefixed = ClientFilter {
        prefix: Some("x".into()),
        ..ClientFilter::default()
    };
    assert_eq!(page(&h, &prefixed), ["x1"]);
    let user = ClientFilter {
        user: Some("alice".into()),
        ..ClientFilter::default()
    };
    assert!(page(&h, &user).is_empty(), "anonymous clients have no user");
}

#[test]
fn detail_subscribers_and_kick() {
    let mut h = Harness::new();
    h.subscriber(1, "fan", "score/+", QoS::AtLeastOnce);
    h.subscriber(2, "other", "news/#", QoS::AtMostOnce);
    let detail = h.broker.client_detail("fan").expect("fan is known");
    assert_eq!(detail.row.conn, Some(ConnId(1)));
    assert_eq!(detail.subscriptions.len(), 1);
    assert_eq!(&*detail.subscriptions[0].filter, "score/+");
    assert_eq!(detail.subscriptions[0].qos, QoS::AtLeastOnce);
    assert!(h.broker.client_detail("nobody").is_none());

    let (subscribers, truncated) = h.broker.subscribers("score/1", 10);
    assert!(!truncated);
    assert_eq!(subscribers.len(), 1);
    assert_eq!(&*subscribers[0].client_id, "fan");
    assert!(h.broker.subscribers("weather", 10).0.is_empty());

    let mut out = Outbox::default();
    let now = h.at(1.0);
    assert_eq!(h.broker.kick("fan", now, &mut out), Kick::Closed(ConnId(1)));
    assert_eq!(out.closes, [(ConnId(1), KICKED)]);
    assert_eq!(
        h.broker.kick("fan", now, &mut out),
        Kick::Unknown,
        "clean session ended"
    );
    assert_eq!(h.broker.kick("nobody", now, &mut out), Kick::Unknown);
}
