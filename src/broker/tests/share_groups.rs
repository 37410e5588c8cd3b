//! Shared subscriptions across shards: several `Broker`s wired together by hand, each
//! shard's outbox carried to the others in order, as the shard mailboxes do.

use std::collections::VecDeque;

use super::*;
use crate::protocol::mqtt::{Ack, Unsubscribe};

/// A tiny multi-shard broker: one `Harness` per shard, clients placed on the shard that owns
/// their identifier.
struct Cluster {
    shards: Vec<Harness>,
    home: HashMap<u64, usize>,
}

/// What reached clients during one call, everything the shards sent each other included.
type Delivered = Vec<(u64, Got)>;

impl Cluster {
    fn new(shard_count: usize) -> Cluster {
        let t0 = Instant::now();
        Cluster {
            shards: (0..shard_count)
                .map(|shard| Harness {
                    broker: Broker::new(shard, shard_count, Limits::default(), t0),
                    t0,
                    wires: HashMap::new(),
                })
                .collect(),
            home: HashMap::new(),
        }
    }

    /// A client identifier with `prefix` whose session lives on `shard`.
    fn id_on(&self, prefix: &str, shard: usize) -> String {
        (0..)
            .map(|n| format!("{prefix}-{n}"))
            .find(|id| Broker::owner_shard(id, self.shards.len()) == shard)
            .expect("some identifier hashes to every shard")
    }

    fn connect(&mut self, conn: u64, client: &Client<'_>) -> Delivered {
        let shard = Broker::owner_shard(client.id, self.shards.len());
        self.home.insert(conn, shard);
        let step = self.shards[shard].connect(conn, client);
        self.settle(shard, step)
    }

    fn packet(&mut self, conn: u64, packet: &Packet<'_>) -> Delivered {
        let shard = self.home[&conn];
        let step = self.shards[shard].packet(conn, packet);
        self.settle(shard, step)
    }

    fn lost(&mut self, conn: u64) -> Delivered {
        let shard = self.home[&conn];
        let step = self.shards[shard].lost(conn);
        self.settle(shard, step)
    }

    /// Carries every message between shards until none is left, each pair in FIFO order,
    /// shared subscription messages before publishes as the shard loop posts them.
    fn settle(&mut self, shard: usize, step: Step) -> Delivered {
        let mut delivered = Vec::new();
        let mut steps = VecDeque::from([(shard, step)]);
        while let Some((from, step)) = steps.pop_front() {
            for (conn, got, _) in step.sends {
                delivered.push((conn.0, got));
            }
            let mut messages: Vec<(usize, ShardMessage)> = step.posted;
            for message in step.routed {
                for to in (0..self.shards.len()).filter(|&to| to != from) {
                    messages.push((to, ShardMessage::Publish(Arc::clone(&message))));
                }
            }
            for (to, message) in messages {
                assert_ne!(to, from, "a shard handles its own messages");
                let harness = &mut self.shards[to];
                let mut out = Outbox::default();
                let now = harness.at(0.0);
                harness.broker.shard_message(message, now, &mut out);
                steps.push_back((to, harness.finish(out)));
            }
        }
        delivered
    }

    /// Publishes `count` QoS 1 messages `0..count` to `topic` from `conn`; returns who got
    /// each payload.
    fn publish_many(&mut self, conn: u64, topic: &str, count: u16) -> HashMap<u64, Vec<u16>> {
        let mut got: HashMap<u64, Vec<u16>> = HashMap::new();
        for n in 0..count {
            let payload = n.to_be_bytes();
            let delivered = self.packet(
                conn,
                &publish(topic, &payload, Delivery::AtLeastOnce(id(n + 1)), false),
            );
            for (to, packet) in delivered {
                if let Got::Publish(p) = packet {
                    got.entry(to)
                        .or_default()
                        .push(u16::from_be_bytes([p.payload[0], p.payload[1]]));
                    if let Some(packet_id) = p.id {
                        // Acknowledged at once, so in-flight windows never fill.
                        self.packet(to, &Packet::PubAck(Ack::new(id(packet_id))));
                    }
                }
            }
        }
        got
    }
}

fn share(filter: &str, qos: QoS) -> Packet<'_> {
    subscribe(1, &[(filter, qos)])
}

fn granted(delivered: &Delivered, conn: u64, qos: QoS) -> bool {
    delivered.contains(&(
        conn,
        Got::SubAck(1, vec![SubscribeReturnCode::Granted(qos)]),
    ))
}

/// Checks every message went to exactly one of `members`, and returns how many each got.
fn once_each(got: &HashMap<u64, Vec<u16>>, members: &[u64], count: u16) -> Vec<usize> {
    let mut all: Vec<u16> = members
        .iter()
        .flat_map(|member| got.get(member).cloned().unwrap_or_default())
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..count).collect::<Vec<_>>(),
        "each message exactly once"
    );
    members
        .iter()
        .map(|member| got.get(member).map_or(0, Vec::len))
        .collect()
}

#[test]
fn each_message_goes_to_one_member_round_robin_across_shards() {
    let mut c = Cluster::new(3);
    let mut members = Vec::new();
    // Members on every shard, two on shard 1.
    for (conn, shard) in [(1, 0), (2, 1), (3, 2), (4, 1)] {
        let id = c.id_on(&format!("member{conn}"), shard);
        c.connect(conn, &Client::new(&id));
        let delivered = c.packet(conn, &share("$share/g/scores/+", QoS::AtLeastOnce));
        assert!(granted(&delivered, conn, QoS::AtLeastOnce));
        members.push(conn);
    }
    let plain = c.id_on("plain", 2);
    c.connect(10, &Client::new(&plain));
    c.packet(10, &subscribe(1, &[("scores/#", QoS::AtLeastOnce)]));
    for (conn, shard) in [(20, 0), (21, 1)] {
        let id = c.id_on("publisher", shard);
        c.connect(conn, &Client::new(&id));
    }

    let got = c.publish_many(20, "scores/final", 40);
    assert_eq!(once_each(&got, &members, 40), [10, 10, 10, 10]);
    assert_eq!(
        got[&10],
        (0..40).collect::<Vec<_>>(),
        "plain subscriber: all, in order"
    );
    // From another shard too; each member keeps the publisher's order.
    let got = c.publish_many(21, "scores/final", 40);
    assert_eq!(once_each(&got, &members, 40), [10, 10, 10, 10]);
    for member in &members {
        assert!(
            got[member].is_sorted(),
            "per-publisher order holds per member"
        );
    }
    // Topics the filter does not match go to nobody in the group.
    let got = c.publish_many(21, "other", 3);
    assert!(got.is_empty());
}

#[test]
fn two_groups_on_one_filter_each_get_a_copy() {
    let mut c = Cluster::new(2);
    for (conn, group, shard) in [(1, "a", 0), (2, "a", 1), (3, "b", 0), (4, "b", 1)] {
        let id = c.id_on(&format!("m{conn}"), shard);
        c.connect(conn, &Client::new(&id));
        let filter = format!("$share/{group}/t");
        c.packet(conn, &share(&filter, QoS::AtMostOnce));
    }
    let publisher = c.id_on("p", 1);
    c.connect(9, &Client::new(&publisher));
    let got = c.publish_many(9, "t", 10);
    assert_eq!(once_each(&got, &[1, 2], 10), [5, 5]);
    assert_eq!(once_each(&got, &[3, 4], 10), [5, 5]);
    for member in 1..=4 {
        assert!(got[&member].is_sorted());
    }
}

#[test]
fn members_leave_on_disconnect_unsubscribe_and_takeover() {
    let mut c = Cluster::new(2);
    let ids: Vec<String> = [(1, 0), (2, 1), (3, 0)]
        .iter()
        .map(|&(conn, shard)| c.id_on(&format!("m{conn}"), shard))
        .collect();
    for (conn, id) in (1..).zip(&ids) {
        c.connect(conn, &Client::new(id));
        c.packet(conn, &share("$share/g/t", QoS::AtLeastOnce));
    }
    let publisher = c.id_on("p", 1);
    c.connect(9, &Client::new(&publisher));
    assert_eq!(
        once_each(&c.publish_many(9, "t", 9), &[1, 2, 3], 9),
        [3, 3, 3]
    );

    // A clean session ends with its connection.
    c.lost(1);
    assert_eq!(once_each(&c.publish_many(9, "t", 6), &[2, 3], 6), [3, 3]);

    let unsubscribe = Packet::Unsubscribe(Unsubscribe {
        packet_id: id(2),
        filters: vec!["$share/g/t"],
        properties: Properties::EMPTY,
    });
    assert!(c.packet(2, &unsubscribe).contains(&(2, Got::UnsubAck(2))));
    assert_eq!(once_each(&c.publish_many(9, "t", 4), &[3], 4), [4]);

    // A new connection with a clean session discards the old session and its membership.
    c.connect(4, &Client::new(&ids[2]));
    assert!(
        c.publish_many(9, "t", 4).is_empty(),
        "the group has no members"
    );
    let stats = |c: &Cluster| -> u64 {
        c.shards
            .iter()
            .map(|h| h.broker.stats().shared_dropped)
            .sum()
    };
    assert_eq!(
        stats(&c),
        0,
        "no delivery was attempted to a member that left"
    );
}

#[test]
fn offline_members_are_skipped_until_every_member_is_offline() {
    let mut c = Cluster::new(2);
    let ids: Vec<String> = [(1, 0), (2, 1)]
        .iter()
        .map(|&(conn, shard)| c.id_on(&format!("m{conn}"), shard))
        .collect();
    for (conn, id) in (1..).zip(&ids) {
        c.connect(conn, &Client::new(id).persistent());
        c.packet(conn, &share("$share/g/t", QoS::AtLeastOnce));
    }
    let publisher = c.id_on("p", 0);
    c.connect(9, &Client::new(&publisher));
    c.lost(1);
    let got = c.publish_many(9, "t", 6);
    assert_eq!(
        once_each(&got, &[2], 6),
        [6],
        "the offline member is skipped"
    );

    // Everyone offline: QoS 1 messages wait in one session each, none is lost.
    c.lost(2);
    assert!(c.publish_many(9, "t", 4).is_empty());
    let mut queued = Vec::new();
    for (conn, id) in (11..).zip(&ids) {
        for (to, got) in c.connect(conn, &Client::new(id).persistent()) {
            if let Got::Publish(p) = got {
                assert_eq!(to, conn);
                queued.push(u16::from_be_bytes([p.payload[0], p.payload[1]]));
            }
        }
    }
    queued.sort_unstable();
    assert_eq!(queued, [0, 1, 2, 3]);
    let handed_back: u64 = c
        .shards
        .iter()
        .map(|h| h.broker.stats().shared_handed_back)
        .sum();
    assert!(handed_back > 0);
}

#[test]
fn retained_messages_are_not_sent_to_shared_subscriptions() {
    let mut c = Cluster::new(2);
    let publisher = c.id_on("p", 0);
    c.connect(9, &Client::new(&publisher));
    c.packet(9, &publish("t", b"kept", Delivery::AtMostOnce, true));
    let member = c.id_on("m", 1);
    c.connect(1, &Client::new(&member));
    let delivered = c.packet(1, &share("$share/g/t", QoS::AtMostOnce));
    assert_eq!(
        delivered,
        [(
            1,
            Got::SubAck(1, vec![SubscribeReturnCode::Granted(QoS::AtMostOnce)])
        )]
    );
    // Live retained publishes do reach the group, with RETAIN cleared [MQTT-3.3.1-9].
    let delivered = c.packet(9, &publish("t", b"live", Delivery::AtMostOnce, true));
    let live = pub_got("t", b"live", QoS::AtMostOnce, None, false, false);
    assert_eq!(delivered, [(1, Got::Publish(live))]);
}

#[test]
fn invalid_share_names_are_refused() {
    let mut c = Cluster::new(1);
    c.connect(1, &Client::v5("five"));
    c.connect(2, &Client::new("three"));
    let filters = [
        ("$share//t", QoS::AtMostOnce),
        ("$share/g", QoS::AtMostOnce),
        ("$share/g/t", QoS::ExactlyOnce),
    ];
    let invalid = SubscribeReturnCode::Refused(ReasonCode::TOPIC_FILTER_INVALID);
    let granted = SubscribeReturnCode::Granted(QoS::ExactlyOnce);
    assert_eq!(
        c.packet(1, &subscribe(1, &filters)),
        [(1, Got::SubAck(1, vec![invalid, invalid, granted]))]
    );
    let failure = SubscribeReturnCode::Failure;
    assert_eq!(
        c.packet(2, &subscribe(1, &filters)),
        [(2, Got::SubAck(1, vec![failure, failure, granted]))]
    );
}
