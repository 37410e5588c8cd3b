//! What the broker asks the network layer to do: the boundary between sans-IO state and sockets.
//!
//! The broker never touches a socket. Every call into it takes an `&mut Outbox`, appends what
//! must happen, and the shard's event loop carries it out after the call returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::{Chunk, ConnId, Droppable};
use crate::protocol::mqtt::{PropertiesBuf, Publish, QoS, ReasonCode, property_id};
use crate::slots::shed;

/// Why the broker closes a connection; the network layer logs it with the peer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// CONNECT refused; the CONNACK carrying the code was queued before the close.
    ConnectRefused,
    /// Another connection connected with the same client identifier.
    SessionTakenOver,
    /// Nothing received for 1.5 × the keep-alive interval ([MQTT-3.1.2-24]).
    KeepAliveTimeout,
    /// The client broke a rule of the protocol; the reason names it.
    ProtocolViolation(&'static str),
    /// The client sent DISCONNECT.
    ClientDisconnected,
    /// The broker is shutting down.
    ServerShutdown,
    /// QoS 1/2 publishes outgrew the in-flight window and `session_queue_bytes_max` while the
    /// client was connected: it does not acknowledge, and may not lose them.
    SlowConsumer,
    /// The client broke a rule for which MQTT 5 names a reason code other than Protocol Error
    /// (Topic Alias invalid, Receive Maximum exceeded, Payload format invalid, ...). An MQTT 5
    /// client got a DISCONNECT with that code first.
    Refused(ReasonCode, &'static str),
}

impl CloseReason {
    /// The reason code of the DISCONNECT an MQTT 5 client gets before the broker closes its
    /// connection (§3.14.2.1, §4.13.2); `None` when none is sent (the client disconnected, or
    /// the CONNECT was refused with a CONNACK).
    pub const fn disconnect_reason(self) -> Option<ReasonCode> {
        match self {
            CloseReason::ConnectRefused | CloseReason::ClientDisconnected => None,
            CloseReason::SessionTakenOver => Some(ReasonCode::SESSION_TAKEN_OVER),
            CloseReason::KeepAliveTimeout => Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
            CloseReason::ProtocolViolation(_) => Some(ReasonCode::PROTOCOL_ERROR),
            CloseReason::ServerShutdown => Some(ReasonCode::SERVER_SHUTTING_DOWN),
            CloseReason::SlowConsumer => Some(ReasonCode::QUOTA_EXCEEDED),
            CloseReason::Refused(reason, _) => Some(reason),
        }
    }

    /// What the DISCONNECT's Reason String tells the client's developer (§3.14.2.2.3). A
    /// DISCONNECT may carry one even when the client asked for no problem information
    /// (§3.1.2.11.7).
    pub const fn reason_text(self) -> &'static str {
        match self {
            CloseReason::ConnectRefused | CloseReason::ClientDisconnected => "",
            CloseReason::SessionTakenOver => "another connection took over this client id",
            CloseReason::KeepAliveTimeout => "nothing received for 1.5 times the keep alive",
            CloseReason::ProtocolViolation(why) | CloseReason::Refused(_, why) => why,
            CloseReason::ServerShutdown => "the server is shutting down",
            CloseReason::SlowConsumer => {
                "unacknowledged QoS 1/2 messages outgrew the in-flight window and session queue"
            }
        }
    }
}

/// A publish leaving its shard: owned, immutable, shared by every shard that receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedMessage {
    pub topic: Box<str>,
    pub payload: Box<[u8]>,
    pub qos: QoS,
    pub retain: bool,
    /// The MQTT 5 properties of the message as forwarded to every subscriber (§3.3.2.3):
    /// validated PUBLISH property bytes without Topic Alias, Subscription Identifiers and
    /// Message Expiry Interval, which the broker writes per subscriber. Copied once at the
    /// routing boundary; empty for 3.x publishers. 3.x subscribers never see them.
    pub properties: Box<[u8]>,
    /// When the Message Expiry Interval runs out (§3.3.2.3.3): past it the message is not
    /// delivered to anyone, and until then subscribers get the interval that remains.
    pub expires_at: Option<Instant>,
    /// The message crossed a bridge to get here: a bridge of this broker brought it in, or
    /// another broker's bridge connection published it. It is delivered to local
    /// subscribers only: never to a bridge connection nor over a bridge (`docs/bridges.md`,
    /// Loops).
    pub bridged: bool,
    /// Under `durability = "sync"`, a QoS 2 publish of a persistent session: its origin,
    /// tentative until committed (`origins.rs`). Shared by every copy.
    pub origin: Option<Arc<super::origins::Origin>>,
    /// In cluster mode, a QoS 1/2 publish's identity across the nodes, given where it
    /// entered (`message_ids.rs`); `None` for the rest.
    pub id: Option<super::message_ids::MessageId>,
}

impl RoutedMessage {
    /// A message without MQTT 5 properties or expiry: what a 3.x client publishes.
    pub fn new(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> RoutedMessage {
        RoutedMessage {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            properties: Box::default(),
            expires_at: None,
            bridged: false,
            origin: None,
            id: None,
        }
    }

    /// The message a PUBLISH carries, published to `topic` (its own, or the one its Topic
    /// Alias stands for, or its name on this side of a bridge): owned once here, at the
    /// routing boundary, with its MQTT 5 properties but those written per connection or per
    /// subscriber, and its expiry counted from `now`.
    pub fn of_publish(publish: &Publish<'_>, topic: &str, now: Instant) -> RoutedMessage {
        let properties = &publish.properties;
        let mut message = RoutedMessage::new(
            topic,
            publish.payload,
            publish.delivery.qos(),
            publish.retain,
        );
        if !properties.is_empty() {
            // Per connection or rewritten per subscriber [MQTT-3.3.2-7], [MQTT-3.3.4-4].
            let skip = [
                property_id::TOPIC_ALIAS,
                property_id::SUBSCRIPTION_IDENTIFIER,
                property_id::MESSAGE_EXPIRY_INTERVAL,
            ];
            let mut forwarded = PropertiesBuf::new();
            properties.copy_except(&skip, &mut forwarded);
            message.properties = forwarded.as_properties().raw().into();
            message.expires_at = properties
                .message_expiry_interval_s()
                .and_then(|s| now.checked_add(Duration::from_secs(s.into())));
        }
        message
    }

    /// Bytes the message holds: what a queue of messages is bounded by.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<RoutedMessage>()
            + self.topic.len()
            + self.payload.len()
            + self.properties.len()
    }

    /// Whether the message expired at `now` and may no longer be delivered [MQTT-3.3.2-5].
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The Message Expiry Interval to send at `now`: what remains, rounded up so that a message
    /// still deliverable never says 0 [MQTT-3.3.2-6].
    pub fn remaining_expiry_s(&self, now: Instant) -> Option<u32> {
        let left = self.expires_at?.saturating_duration_since(now);
        let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(u32::try_from(seconds.max(1)).unwrap_or(u32::MAX))
    }
}

#[derive(Debug, Default)]
pub struct Outbox {
    /// Bytes to append to a connection's send queue, in order.
    pub sends: Vec<(ConnId, Chunk, Droppable)>,
    /// Connections to close once what was queued for them before is sent.
    pub closes: Vec<(ConnId, CloseReason)>,
    /// The first thing the topic rules denied each connection, for its one log line.
    pub denials: Vec<(ConnId, Denial)>,
    /// Publishes every other shard must also deliver (and apply to its retained replica).
    pub to_other_shards: Vec<Arc<RoutedMessage>>,
    /// Messages for one other shard (shared subscriptions), in order; posted before the
    /// turn's publishes (see `share_groups.rs`).
    pub to_shard: Vec<(usize, ShardMessage)>,
    /// In cluster mode or with bridges: publishes that entered on this node, for the other
    /// nodes (`crate::cluster`) and the bridged brokers (`crate::bridge`).
    pub to_remote: Vec<Arc<RoutedMessage>>,
    /// In cluster mode: the QoS 1/2 publishes of `to_remote` whose acknowledgement waits for
    /// JetStream, in the same order, each with its ticket (`cluster_acks.rs`).
    pub cluster_tickets: Vec<(Arc<RoutedMessage>, u64)>,
    /// In cluster mode: the tickets of messages from the QoS stream that this node has
    /// delivered (under `sync`, durably), whose acknowledgement to JetStream may go
    /// (`crate::cluster::qos`).
    pub stream_acks: Vec<u64>,
    /// In cluster mode: the client identifiers of the CONNECTs accepted this turn, for the
    /// other nodes to take down their connections with them (`crate::cluster::client_ids`).
    pub connected_clients: Vec<Box<str>>,
    /// In cluster mode: the connections whose CONNECT waits for its session from another
    /// node, and the client identifier (`session_moves.rs`).
    pub session_fetches: Vec<(ConnId, Box<str>)>,
}

/// What the topic rules denied a client: a publish to a topic or a subscription to a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    Publish(Box<str>),
    Subscribe(Box<str>),
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denial::Publish(topic) => write!(f, "publishing to {topic:?}"),
            Denial::Subscribe(filter) => write!(f, "subscribing to {filter:?}"),
        }
    }
}

/// What one shard's mailbox carries to another, in the order it was posted.
///
/// Kept at two words: the mailboxes preallocate `cross_shard_queue_len_max` slots per shard
/// pair (16 shards × 16 × 65 536 × (16 B + the queue's 8 B stamp) = 400 MiB at most), so the
/// rarer shared subscription messages pay a box instead of widening every slot.
#[derive(Debug, Clone)]
pub enum ShardMessage {
    /// A publish to deliver and apply to the retained replica ([`Outbox::to_other_shards`]).
    Publish(Arc<RoutedMessage>),
    /// Membership and deliveries of shared subscriptions.
    Group(Box<super::GroupMessage>),
    /// Under `durability = "sync"`: everything the sending shard posted before this is
    /// applied once it is read; the receiving shard answers it with its next durable flush
    /// (`shard/persist.rs`). Taken by the shard, never handed to the broker. With
    /// [`COVER_BARRIER`] set, it covers shared subscription messages of one hop
    /// ([`cover_barrier`]) rather than publishes.
    Barrier(u64),
    /// Under `sync`: tentative QoS 2 publishes of the sending shard were committed on disk;
    /// sessions waiting for one send what they can (`origins.rs`).
    Committed,
}

const _: () = assert!(std::mem::size_of::<ShardMessage>() <= 16);

/// The bit of a [`ShardMessage::Barrier`] that makes it a cover of shared subscription
/// messages (`shard/persist.rs`). Barrier numbers count loop turns and never reach it.
pub const COVER_BARRIER: u64 = 1 << 63;

/// The levels of covers: one per hop a shared subscription message can take between shards
/// (`share_groups.rs`: a `Deliver` of try `t` is level 2t + 1, the hand-back of try `t` level
/// 2t), so that the answer to a barrier or cover of one level waits only for covers of higher
/// levels, and the highest is answered at once: the waits end.
pub const COVER_LEVELS: usize = 2 * super::share_groups::SHARE_TRIES_MAX as usize - 1;

/// Where a cover's level sits in a barrier as posted; its number takes the bits below.
const COVER_LEVEL_SHIFT: u32 = 56;

/// A cover of `level` (1 to [`COVER_LEVELS`]) numbered `seq`, as posted and answered.
pub const fn cover_barrier(level: usize, seq: u64) -> u64 {
    COVER_BARRIER | ((level as u64) << COVER_LEVEL_SHIFT) | seq
}

/// The level of a barrier as posted (0 for a publish barrier, 1 to [`COVER_LEVELS`] for a
/// cover) and its number.
pub const fn barrier_level(posted: u64) -> (usize, u64) {
    if posted & COVER_BARRIER == 0 {
        return (0, posted);
    }
    let level = ((posted & !COVER_BARRIER) >> COVER_LEVEL_SHIFT) as usize;
    let level = if level == 0 {
        1
    } else if level > COVER_LEVELS {
        COVER_LEVELS
    } else {
        level
    };
    (level, posted & ((1 << COVER_LEVEL_SHIFT) - 1))
}

impl ShardMessage {
    /// Bytes the message holds, counted against the cross-shard backlog's bound.
    pub fn bytes(&self) -> usize {
        match self {
            ShardMessage::Publish(message) => message.bytes(),
            ShardMessage::Group(share) => share.bytes(),
            ShardMessage::Barrier(_) | ShardMessage::Committed => {
                std::mem::size_of::<ShardMessage>()
            }
        }
    }
}

impl Outbox {
    pub fn send(&mut self, conn: ConnId, chunk: Chunk, droppable: Droppable) {
        self.sends.push((conn, chunk, droppable));
    }

    pub fn close(&mut self, conn: ConnId, reason: CloseReason) {
        self.closes.push((conn, reason));
    }

    /// Gives back room the last bursts needed and the last second did not (see [`shed`]).
    pub fn shed(&mut self) {
        shed(&mut self.sends);
        shed(&mut self.closes);
        shed(&mut self.denials);
        shed(&mut self.to_other_shards);
        shed(&mut self.to_shard);
        shed(&mut self.to_remote);
        shed(&mut self.cluster_tickets);
        shed(&mut self.stream_acks);
        shed(&mut self.connected_clients);
        shed(&mut self.session_fetches);
    }

    pub fn is_empty(&self) -> bool {
        self.sends.is_empty()
            && self.closes.is_empty()
            && self.to_other_shards.is_empty()
            && self.to_shard.is_empty()
            && self.to_remote.is_empty()
    }
}
