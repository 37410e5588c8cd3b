//! The broker's side of cluster mode (`crate::cluster`): which filters this shard's sessions
//! hold, for the node's NATS interest, and publishes from other nodes.

use std::sync::Arc;
use std::time::Instant;

use std::sync::Mutex;

use super::Broker;
use super::crossings::{Crossings, Path, fingerprint};
use super::message_ids::{DeliveredIds, MessageId, MessageIds, SentWindow};
use super::origins::Origin;
use super::outbox::{Outbox, RoutedMessage};
use super::session::SessionKey;
use crate::locks::lock;
use crate::protocol::mqtt::topic::filter_matches;
use crate::protocol::mqtt::{PacketId, QoS};

impl Broker {
    /// Turns cluster mode on, right after `Broker::new` (the interest of subscriptions made
    /// before would not be known): from now on publishes that enter on this shard also go to
    /// `Outbox::to_remote`, and the tries record the filters that gain their first or lose
    /// their last subscriber, and the client identifiers of accepted CONNECTs go to
    /// `Outbox::connected_clients`.
    pub fn join_cluster(&mut self) {
        self.forwards_out = true;
        self.announces_clients = true;
        self.message_ids = Some(MessageIds::new(self.shard));
        self.trie.record_interest();
        self.shared.record_interest();
    }

    /// What each connected persistent session remembers of the messages from the cluster it
    /// was sent, for a replay after its node's death to know them (`message_ids.rs`).
    pub fn remember_sent(&mut self, window: SentWindow) {
        self.sent_window = Some(window);
    }

    /// Shares the node's memory of the QoS 2 publishes with an origin it delivered
    /// (`message_ids.rs`), in cluster mode, right after `join_cluster`.
    pub fn share_delivered_ids(&mut self, ids: Arc<Mutex<DeliveredIds>>) {
        self.delivered_ids = Some(ids);
    }

    /// In cluster mode, gives a QoS 2 publish with an `origin` the identity every node
    /// derives alike from its origin and `packet_id`, and says whether it is to be delivered
    /// on this node: not when it is a resend (`dup`) that this node had from the QoS stream
    /// already, the original having been stored by the node that died under it
    /// (`message_ids.rs`). It goes to the stream all the same: JetStream keeps one of the two,
    /// and its answer releases the PUBREC.
    pub(super) fn identify_qos2(
        &mut self,
        message: &mut Arc<RoutedMessage>,
        origin: &Origin,
        packet_id: PacketId,
        dup: bool,
    ) -> bool {
        if self.message_ids.is_none() || message.topic.starts_with('$') {
            return true;
        }
        let id = MessageId::of_publish(origin.incarnation, origin.seq, packet_id.get());
        Arc::make_mut(message).id = Some(id);
        match (&self.delivered_ids, dup) {
            (Some(delivered), true) => lock(delivered).first(id),
            _ => true,
        }
    }

    /// In cluster mode, `message` with its identity across the nodes: a QoS 1/2 publish
    /// that enters here gets one before its first delivery.
    pub(super) fn with_cluster_id(
        &mut self,
        mut message: Arc<RoutedMessage>,
    ) -> Arc<RoutedMessage> {
        if let Some(ids) = self.message_ids.as_mut()
            && message.qos != QoS::AtMostOnce
            && message.id.is_none()
        {
            Arc::make_mut(&mut message).id = Some(ids.next());
        }
        message
    }

    /// Moves the filters whose first subscriber came (`true`) or last went (`false`) since
    /// the last call to `into`, in order. A filter held both by sessions and by a shared group
    /// counts once for each.
    pub fn take_interest(&mut self, into: &mut Vec<(Box<str>, bool)>) {
        self.trie.take_interest(into);
        self.shared.take_interest(into);
    }

    /// Another node accepted a CONNECT with `client_id`: a connection of this shard with it is
    /// closed as a local takeover closes it (`connect.rs`). Its session stays here.
    pub fn taken_over_elsewhere(&mut self, client_id: &str, now: Instant, out: &mut Outbox) {
        self.now = now;
        self.take_over(client_id, now, out);
    }

    /// Publishes that enter on this node also go to `Outbox::to_remote`, for the bridges
    /// (`crate::bridge`); unlike `join_cluster`, no interest is recorded: a bridge subscribes
    /// to the filters of its configuration.
    pub fn forward_out(&mut self) {
        self.forwards_out = true;
    }

    /// The local filters of the `out` mappings of the bridges whose store-and-forward queue
    /// is full under `queue_full_policy = "refuse"`: QoS 1/2 publishes they match are refused
    /// like those made while the store cannot write (`inbound.rs`). Empty: none refuses.
    pub fn set_bridge_refusals(&mut self, filters: Vec<Box<str>>) {
        self.bridge_refusals = filters;
    }

    /// Whether a full bridge queue refuses a QoS 1/2 publish to `topic`.
    pub(super) fn refused_by_bridge(&self, topic: &str) -> bool {
        !self.bridge_refusals.is_empty()
            && self
                .bridge_refusals
                .iter()
                .any(|filter| filter_matches(filter, topic))
    }

    /// The bridges' memories of the messages that came both ways (`crossings.rs`), one per
    /// bridge, shared with its thread.
    pub fn set_crossings(&mut self, crossings: Vec<Arc<Mutex<Crossings>>>) {
        self.crossings = crossings;
    }

    /// A client's publish, from session `publisher`. One from another broker's bridge
    /// connection crossed a bridge: it is delivered on this node only, like what this
    /// node's bridges bring in, and not at all when one of them already brought it in
    /// (`crossings.rs`).
    pub(super) fn route_from(
        &mut self,
        publisher: SessionKey,
        mut message: Arc<RoutedMessage>,
        now: Instant,
        out: &mut Outbox,
    ) {
        let bridge = self
            .sessions
            .get(publisher)
            .is_some_and(|session| session.bridge);
        if !bridge {
            self.route(message, Some(publisher), now, out);
            return;
        }
        if self.second_copy_pushed(&message) {
            return;
        }
        if let Some(fresh) = Arc::get_mut(&mut message) {
            fresh.bridged = true;
        }
        self.route_on_node(message, Some(publisher), now, out);
    }

    /// Whether a bridge of this node already brought in a message equal to `message`,
    /// published here by a bridge connection; if not, each bridge that could bring it in
    /// remembers it.
    fn second_copy_pushed(&mut self, message: &RoutedMessage) -> bool {
        if self.crossings.is_empty() {
            return false;
        }
        let print = fingerprint(&message.topic, &message.payload);
        // Held from the look to the note, as the bridge holds its own while it looks, hands
        // the message over and notes it: a pulled copy checked in between would find neither
        // way noted and both copies would be delivered. Taken in one order, and the bridge
        // holds only its own, so no two lockers wait on each other.
        let mut covering: Vec<_> = self
            .crossings
            .iter()
            .map(|crossings| lock(crossings))
            .filter(|crossings| crossings.covers(&message.topic))
            .collect();
        if covering
            .iter_mut()
            .any(|crossings| crossings.second_copy(Path::Pushed, print))
        {
            return true;
        }
        for crossings in &mut covering {
            crossings.note(Path::Pushed, print);
        }
        false
    }

    /// A retained message from the cluster's JetStream stream: applied to this shard's
    /// replica (and noted for the store, with `--data-dir`), delivered to no one: the live
    /// subscribers got it as a publish. Each shard takes it from the cluster itself, so it is
    /// not posted to the others. Returns whether it fitted the retained bounds.
    pub fn retain_from_cluster(&mut self, message: &Arc<RoutedMessage>) -> bool {
        debug_assert!(message.retain, "the stream holds retained messages only");
        let rejected = self.stats.retained_rejected;
        self.retain(message);
        self.stats.retained_rejected == rejected
    }

    /// A publish from another node or a bridged broker: delivered on this node as a publish
    /// of its own (on this shard, and once posted to every other), never sent back to the
    /// cluster or to any bridge, so that no message loops between brokers.
    pub fn publish_from_remote(
        &mut self,
        message: Arc<RoutedMessage>,
        now: Instant,
        out: &mut Outbox,
    ) {
        self.route_on_node(message, None, now, out);
    }
}
