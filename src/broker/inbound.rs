//! Every packet of a connection after its CONNECT: publishes and their acks in both
//! directions, SUBSCRIBE / UNSUBSCRIBE, PINGREQ and DISCONNECT.
//!
//! MQTT 5 adds here: Topic Aliases on inbound publishes (§3.3.2.3.4), the Message Expiry
//! Interval (§3.3.2.3.3), the Payload Format Indicator check (§3.3.2.3.2), reason codes on
//! acknowledgements, subscription options and identifiers (§3.8.3.1, §3.8.2.1.2), one reason
//! per filter in UNSUBACK (§3.11.3), and DISCONNECT with a reason and a new Session Expiry
//! Interval (§3.14).

use std::sync::Arc;
use std::time::Instant;

use super::Broker;
use super::held_acks::AckKind;
use super::outbox::{CloseReason, Denial, Outbox, RoutedMessage};
use super::qos_window::AckOutcome;
use super::reply::send_packet;
use super::session::SessionKey;
use super::share_groups;
use super::subscription::Grant;
use crate::conn::ConnId;
use crate::protocol::mqtt::{
    Ack, Delivery, Disconnect, Packet, PacketId, Properties, ProtocolVersion, Publish, ReasonCode,
    RetainHandling, SubAck, Subscribe, SubscribeReturnCode, UnsubAck, Unsubscribe,
};

impl Broker {
    /// Any later packet of a connection. A second CONNECT or a packet only a server sends is a
    /// protocol violation: the connection is closed and its will published.
    ///
    /// Packets of a connection the broker does not know (it already asked for its close, or
    /// the network layer never called `connect`) are ignored: the network layer hands a
    /// connection's first packet to `connect`, and may still drain packets read before a close.
    pub fn packet(&mut self, conn: ConnId, packet: &Packet<'_>, now: Instant, out: &mut Outbox) {
        self.now = now;
        let Some(connection) = self.clients.get_mut(conn) else {
            return;
        };
        // Any control packet counts for the keep-alive [MQTT-3.1.2-23].
        connection.last_packet_at = now;
        let key = connection.session;
        let v5 = connection.version == ProtocolVersion::V5;
        match packet {
            Packet::Connect(_) => self.protocol_violation(conn, "second CONNECT", now, out),
            Packet::Publish(publish) => self.publish(conn, key, publish, now, out),
            Packet::PubAck(Ack { packet_id: id, .. }) => {
                let outcome = self.outbound_mut(key).map(|o| o.puback(*id));
                self.after_ack(conn, key, *id, outcome, out);
            }
            Packet::PubRec(Ack { packet_id: id, .. }) => {
                let outcome = self.outbound_mut(key).map(|o| o.pubrec(*id));
                self.after_ack(conn, key, *id, outcome, out);
            }
            Packet::PubRel(Ack { packet_id: id, .. }) => {
                let mut known = false;
                if let Some(session) = self.sessions.get_mut(key) {
                    known = session.release_inbound_qos2(*id);
                }
                if known {
                    self.note_inbound_qos2(key);
                }
                // Sent for an unknown identifier too: the PUBREL may repeat after a reconnect
                // whose PUBCOMP was lost [MQTT-4.3.3-2]. MQTT 5 says so with 0x92.
                let mut pubcomp = Ack::new(*id);
                if v5 && !known {
                    pubcomp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                }
                self.reply(conn, &Packet::PubComp(pubcomp), out);
            }
            Packet::PubComp(Ack { packet_id: id, .. }) => {
                let outcome = self.outbound_mut(key).map(|o| o.pubcomp(*id));
                self.after_ack(conn, key, *id, outcome, out);
            }
            Packet::Subscribe(subscribe) => {
                self.subscribe(conn, key, subscribe, out);
                self.note_session(key);
            }
            Packet::Unsubscribe(unsubscribe) => {
                self.unsubscribe(conn, key, unsubscribe, out);
                self.note_session(key);
            }
            Packet::PingReq => self.reply(conn, &Packet::PingResp, out),
            Packet::Disconnect(disconnect) => self.disconnect(conn, key, disconnect, now, out),
            Packet::ConnAck(_) => self.protocol_violation(conn, "CONNACK from a client", now, out),
            Packet::SubAck(_) => self.protocol_violation(conn, "SUBACK from a client", now, out),
            Packet::UnsubAck(_) => {
                self.protocol_violation(conn, "UNSUBACK from a client", now, out)
            }
            Packet::PingResp => self.protocol_violation(conn, "PINGRESP from a client", now, out),
            // No multi-step authentication or re-authentication is offered (see `auth.rs`).
            Packet::Auth(_) => {
                self.protocol_violation(conn, "AUTH without an exchange in progress", now, out)
            }
        }
    }

    fn outbound_mut(&mut self, key: SessionKey) -> Option<&mut super::qos_window::QosWindow> {
        self.sessions
            .get_mut(key)
            .map(|session| &mut session.outbound)
    }

    fn after_ack(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        id: PacketId,
        outcome: Option<AckOutcome>,
        out: &mut Outbox,
    ) {
        if outcome.is_some_and(|outcome| outcome != AckOutcome::Ignored) {
            self.note_session(key);
        }
        match outcome {
            None | Some(AckOutcome::Ignored) => {}
            Some(AckOutcome::Freed) => self.drain_queue(key, out),
            Some(AckOutcome::SendPubRel) => self.reply(conn, &Packet::PubRel(Ack::new(id)), out),
        }
    }

    /// Sends a control packet on `conn`, framed for its transport and version.
    pub(super) fn reply(&self, conn: ConnId, packet: &Packet<'_>, out: &mut Outbox) {
        if let Some(connection) = self.clients.get(conn) {
            send_packet(out, conn, connection.transport, connection.version, packet);
        }
    }

    /// DISCONNECT: the will is discarded [MQTT-3.1.2-10] unless an MQTT 5 client asks for it
    /// with 0x04 (§3.14.2.1). An MQTT 5 client may change its Session Expiry Interval here,
    /// but not from 0 to anything else [MQTT-3.14.2-2].
    fn disconnect(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        disconnect: &Disconnect<'_>,
        now: Instant,
        out: &mut Outbox,
    ) {
        if let Some(expiry_s) = disconnect.properties.session_expiry_interval_s()
            && let Some(session) = self.sessions.get_mut(key)
        {
            if session.expiry_s == 0 && expiry_s != 0 {
                let rule = "Session Expiry Interval set in DISCONNECT after 0 in CONNECT";
                self.protocol_violation(conn, rule, now, out);
                return;
            }
            session.expiry_s = expiry_s;
        }
        let publish_will = disconnect.reason == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE;
        let reason = Some(CloseReason::ClientDisconnected);
        self.end_connection(conn, reason, publish_will, now, out);
    }

    /// The topic of an inbound publish, through the connection's Topic Aliases (§3.3.2.3.4):
    /// a topic with an alias sets it, an empty topic with an alias uses it. `Err` when the
    /// alias is 0, above `topic_aliases_max` [MQTT-3.3.2-9] or unknown; `Ok(None)` when the
    /// publish's own topic stands (no copy of it is made then).
    fn resolve_topic(
        &mut self,
        conn: ConnId,
        publish: &Publish<'_>,
    ) -> Result<Option<Box<str>>, ()> {
        let aliases_max = usize::from(self.limits.topic_aliases_max);
        let Some(connection) = self.clients.get_mut(conn) else {
            return Err(());
        };
        let Some(alias) = publish.properties.topic_alias() else {
            return if publish.topic.is_empty() {
                Err(())
            } else {
                Ok(None)
            };
        };
        let index = usize::from(alias);
        if index == 0 || index > aliases_max {
            return Err(());
        }
        let aliases = &mut connection.topic_aliases;
        if publish.topic.is_empty() {
            return aliases.inbound(index).map(Box::from).ok_or(()).map(Some);
        }
        aliases.set_inbound(index, publish.topic);
        Ok(None)
    }

    /// A client's PUBLISH, once the topic rules allow it (`authorization.rs`). Topics starting
    /// with `$` are reserved for server use (§4.7.2): under topic rules a client's publish to
    /// one is refused like any denied publish; without rules every client may do everything.
    /// Subscribers get `$` topics only through filters naming the `$` level explicitly
    /// [MQTT-4.7.2-1].
    fn publish(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        publish: &Publish<'_>,
        now: Instant,
        out: &mut Outbox,
    ) {
        self.stats.publishes_received += 1;
        let Ok(aliased) = self.resolve_topic(conn, publish) else {
            let reason = CloseReason::Refused(ReasonCode::TOPIC_ALIAS_INVALID, "topic alias");
            self.close_for(conn, reason, now, out);
            return;
        };
        // [MQTT-3.3.2-4] lets the receiver check a payload said to be UTF-8.
        let bad_payload = publish.properties.payload_format_indicator() == Some(1)
            && std::str::from_utf8(publish.payload).is_err();
        let topic = aliased.as_deref().unwrap_or(publish.topic);
        if !self.may_publish(key, topic) {
            self.report_denial(conn, Denial::Publish(topic.into()), out);
            self.refuse_publish(conn, key, publish, out);
            return;
        }
        let v5 = self
            .clients
            .get(conn)
            .is_some_and(|connection| connection.version == ProtocolVersion::V5);
        let message = || Arc::new(RoutedMessage::of_publish(publish, topic, now));
        match publish.delivery {
            Delivery::AtMostOnce if bad_payload => {
                let reason = CloseReason::Refused(ReasonCode::PAYLOAD_FORMAT_INVALID, "payload");
                self.close_for(conn, reason, now, out);
            }
            Delivery::AtMostOnce => self.route_from(key, message(), now, out),
            Delivery::AtLeastOnce(id) if bad_payload => {
                self.reply(conn, &Packet::PubAck(payload_refused(id)), out)
            }
            Delivery::AtLeastOnce(id) if !self.store_writable => {
                self.stats.publishes_refused_unwritable += 1;
                self.refuse_quota(conn, v5, Packet::PubAck, id, out)
            }
            Delivery::AtLeastOnce(id) if self.refused_by_bridge(topic) => {
                self.stats.publishes_refused_bridge_full += 1;
                self.refuse_quota(conn, v5, Packet::PubAck, id, out)
            }
            Delivery::AtLeastOnce(id) if self.refused_by_cluster(topic) => {
                self.stats.publishes_refused_cluster += 1;
                self.refuse_quota(conn, v5, Packet::PubAck, id, out)
            }
            Delivery::AtLeastOnce(id) => {
                let remote_before = out.to_remote.len();
                self.route_from(key, message(), now, out);
                let ack = self.accepted(id, v5, topic);
                let ack = (conn, AckKind::PubAck, ack);
                self.acknowledge_after_cluster(ack, None, remote_before, out);
            }
            Delivery::ExactlyOnce(id) if bad_payload => {
                // Not kept: a PUBREC with an error ends the exchange (§4.3.3), unless it is a
                // retransmission of one already delivered.
                let held = self
                    .sessions
                    .get(key)
                    .is_some_and(|session| session.holds_inbound_qos2(id));
                if held {
                    self.acknowledge(conn, AckKind::PubRec, Ack::new(id), out);
                } else {
                    self.reply(conn, &Packet::PubRec(payload_refused(id)), out);
                }
            }
            Delivery::ExactlyOnce(id) => {
                let publish = (id, topic, v5, publish.dup);
                self.publish_exactly_once(conn, key, publish, message, now, out)
            }
        }
    }

    /// A PUBLISH the topic rules do not allow: QoS 0 is dropped; QoS 1 and 2 get PUBACK or
    /// PUBREC 0x87 Not authorized in MQTT 5, and in 3.x are acknowledged and dropped, which the
    /// spec allows (3.1.1 §3.3.5: the server may discard it) and which keeps the client from
    /// resending it for ever. A 3.x QoS 2 exchange goes on to PUBCOMP as usual.
    fn refuse_publish(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        publish: &Publish<'_>,
        out: &mut Outbox,
    ) {
        self.stats.publishes_denied += 1;
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let v5 = session.version == ProtocolVersion::V5;
        let refused = |id| match v5 {
            true => Ack {
                packet_id: id,
                reason: ReasonCode::NOT_AUTHORIZED,
                properties: Properties::EMPTY,
            },
            false => Ack::new(id),
        };
        match publish.delivery {
            Delivery::AtMostOnce => {}
            Delivery::AtLeastOnce(id) => self.reply(conn, &Packet::PubAck(refused(id)), out),
            Delivery::ExactlyOnce(id) => {
                let room = session.inbound_qos2_len() < usize::from(self.limits.inbound_qos2_max);
                if !v5 && room && !session.holds_inbound_qos2(id) {
                    session.hold_inbound_qos2(id);
                    self.note_inbound_qos2(key);
                }
                self.reply(conn, &Packet::PubRec(refused(id)), out);
            }
        }
    }

    /// A QoS 2 PUBLISH: delivered once, then held until its PUBREL, so a retransmission only
    /// gets its PUBREC again [MQTT-4.3.3-2].
    fn publish_exactly_once(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        (id, topic, v5, dup): (PacketId, &str, bool, bool),
        message: impl FnOnce() -> Arc<RoutedMessage>,
        now: Instant,
        out: &mut Outbox,
    ) {
        let inbound_qos2_max = usize::from(self.limits.inbound_qos2_max);
        let refused_by_bridge = self.refused_by_bridge(topic);
        let refused_by_cluster = self.refused_by_cluster(topic);
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if session.holds_inbound_qos2(id) {
            // Held like the first PUBREC, and behind it: the retransmission of a publish whose
            // PUBREC is not sent yet must not be acknowledged before it is durable.
            self.acknowledge(conn, AckKind::PubRec, Ack::new(id), out);
            return;
        }
        if session.inbound_qos2_len() >= inbound_qos2_max {
            // Our Receive Maximum, announced in CONNACK [MQTT-3.3.4-7].
            let reason = CloseReason::Refused(
                ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                "too many QoS 2 publishes awaiting PUBREL",
            );
            self.close_for(conn, reason, now, out);
            return;
        }
        if !self.store_writable {
            self.stats.publishes_refused_unwritable += 1;
            self.refuse_quota(conn, v5, Packet::PubRec, id, out);
            return;
        }
        if refused_by_bridge {
            self.stats.publishes_refused_bridge_full += 1;
            self.refuse_quota(conn, v5, Packet::PubRec, id, out);
            return;
        }
        if refused_by_cluster {
            self.stats.publishes_refused_cluster += 1;
            self.refuse_quota(conn, v5, Packet::PubRec, id, out);
            return;
        }
        session.hold_inbound_qos2(id);
        let mut message = message();
        // Under `sync`, tentative until its identifier is on disk (`origins.rs`).
        let origin = self.new_origin(key);
        let mut deliver_here = true;
        if let Some(origin) = &origin {
            Arc::make_mut(&mut message).origin = Some(Arc::clone(origin));
            deliver_here = self.identify_qos2(&mut message, origin, id, dup);
        }
        let remote_before = out.to_remote.len();
        if deliver_here {
            self.route_from(key, message, now, out);
        } else {
            // Delivered here from the stream already: to the stream only, for its answer.
            self.forward(message, out);
        }
        // Written after what the routing changed on this shard (`session_writes.rs`), and
        // under `sync` only once every shard has it (`held_acks.rs`).
        self.note_inbound_qos2(key);
        let ack = self.accepted(id, v5, topic);
        let ack = (conn, AckKind::PubRec, ack);
        self.acknowledge_after_cluster(ack, Some((key, origin)), remote_before, out);
    }

    /// A QoS 1/2 publish while the store cannot write, or that a bridge whose queue is full
    /// under `refuse` would carry, or while a cluster node has no NATS connection: not
    /// routed, since what it changes (a retained message, an offline session's queue, the
    /// bridge's queue, the other nodes' subscribers) could not be kept. MQTT 5 gets PUBACK or
    /// PUBREC 0x97 Quota exceeded; 3.x has no code for it and gets no acknowledgement, so the
    /// client sends it again (on its next connection at the latest). QoS 0 is served as
    /// usual.
    fn refuse_quota(
        &mut self,
        conn: ConnId,
        v5: bool,
        packet: fn(Ack<'static>) -> Packet<'static>,
        id: PacketId,
        out: &mut Outbox,
    ) {
        if v5 {
            let ack = Ack {
                packet_id: id,
                reason: ReasonCode::QUOTA_EXCEEDED,
                properties: Properties::EMPTY,
            };
            self.reply(conn, &packet(ack), out);
        }
    }

    /// The PUBACK or PUBREC of an accepted publish to `topic`: MQTT 5 says 0x10 No matching
    /// subscribers when the broker knows there are none (`fanout.rs`).
    fn accepted(&mut self, id: PacketId, v5: bool, topic: &str) -> Ack<'static> {
        let mut ack = Ack::new(id);
        // In cluster mode another node may have subscribers.
        if v5 && self.cluster_acks.is_none() && self.known_unsubscribed(topic) {
            ack.reason = ReasonCode::NO_MATCHING_SUBSCRIBERS;
        }
        ack
    }

    /// SUBACK with one code per filter in order [MQTT-3.8.4-5], then the retained messages
    /// of every granted filter (also when it replaced an existing one [MQTT-3.8.4-3]), as the
    /// MQTT 5 Retain Handling option says (§3.8.3.1).
    ///
    /// A filter past `subscriptions_per_session_max` gets 0x80. MQTT 3.1 has no failure
    /// code; 0x80 is sent to 3.1 clients too, as common 3.1 implementations understand it.
    /// A shared subscription (`$share/`, see `share_groups.rs`) joins its group and gets no retained
    /// messages (§4.8.2); an invalid share name gets 0x8F (0x80 before MQTT 5).
    fn subscribe(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        subscribe: &Subscribe<'_>,
        out: &mut Outbox,
    ) {
        let subscriptions_max = self.limits.subscriptions_per_session_max as usize;
        // Judged first: the rules read the session, which the loop below holds.
        let denied: Vec<&str> = subscribe
            .filters
            .iter()
            .map(|&(filter, _)| filter)
            .filter(|filter| !self.may_subscribe(key, filter))
            .collect();
        if let Some(&filter) = denied.first() {
            self.report_denial(conn, Denial::Subscribe(filter.into()), out);
        }
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let v5 = session.version == ProtocolVersion::V5;
        // At most one identifier per SUBSCRIBE; the decoder refused more (§3.8.2.1.2).
        let id = subscribe
            .properties
            .subscription_identifiers()
            .next()
            .unwrap_or(0);
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        let mut joins = Vec::new();
        for &(filter, options) in &subscribe.filters {
            let shared = share_groups::parse(filter);
            if let Some(Err(())) = shared {
                codes.push(match v5 {
                    true => SubscribeReturnCode::Refused(ReasonCode::TOPIC_FILTER_INVALID),
                    false => SubscribeReturnCode::Failure,
                });
                continue;
            }
            if denied.contains(&filter) {
                self.stats.subscriptions_denied += 1;
                codes.push(match v5 {
                    true => SubscribeReturnCode::Refused(ReasonCode::NOT_AUTHORIZED),
                    false => SubscribeReturnCode::Failure,
                });
                continue;
            }
            let known = session.subscriptions.contains_key(filter);
            if !known && session.subscriptions.len() >= subscriptions_max {
                self.stats.subscriptions_refused += 1;
                codes.push(SubscribeReturnCode::Failure);
                continue;
            }
            // A 3.x bridge cannot ask for No Local and Retain As Published; it gets them, as
            // Mosquitto gives them to a bridge, so its own publishes do not come back to it.
            let mut options = options;
            if session.bridge && !v5 {
                options.no_local = true;
                options.retain_as_published = true;
            }
            // Granted QoS = requested QoS: every QoS is supported.
            let grant = Grant::new(options, id);
            session.subscriptions.insert(filter.into(), grant);
            codes.push(SubscribeReturnCode::Granted(options.qos));
            if shared.is_some() {
                if !known {
                    joins.push(filter);
                }
                continue;
            }
            self.trie.insert(filter, key, grant);
            let send_retained = match options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendAtNewSubscribe => !known,
                RetainHandling::DoNotSend => false,
            };
            if send_retained {
                retained.push((filter, grant));
            }
        }
        let suback = SubAck {
            packet_id: subscribe.packet_id,
            codes,
            properties: Properties::EMPTY,
        };
        self.reply(conn, &Packet::SubAck(suback), out);
        for filter in joins {
            self.share_join(key, filter, out);
        }
        for (filter, grant) in retained {
            self.send_retained(key, filter, grant, out);
        }
    }

    /// Removes each filter; UNSUBACK even when nothing was subscribed [MQTT-3.10.4-5], with
    /// one reason per filter for MQTT 5 [MQTT-3.11.3-1]: Success or 0x11 No subscription
    /// existed.
    fn unsubscribe(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        unsubscribe: &Unsubscribe<'_>,
        out: &mut Outbox,
    ) {
        let mut reasons = Vec::new();
        let mut leaves = Vec::new();
        if let Some(session) = self.sessions.get_mut(key) {
            let v5 = session.version == ProtocolVersion::V5;
            for &filter in &unsubscribe.filters {
                let existed = session.subscriptions.remove(filter).is_some();
                if existed && filter.starts_with(share_groups::SHARED_PREFIX) {
                    leaves.push(filter);
                } else if existed {
                    self.trie.remove(filter, key);
                }
                if v5 {
                    reasons.push(if existed {
                        ReasonCode::SUCCESS
                    } else {
                        ReasonCode::NO_SUBSCRIPTION_EXISTED
                    });
                }
            }
        }
        for filter in leaves {
            self.share_leave(key, filter, out);
        }
        let unsuback = UnsubAck {
            packet_id: unsubscribe.packet_id,
            reasons,
            properties: Properties::EMPTY,
        };
        self.reply(conn, &Packet::UnsubAck(unsuback), out);
    }
}

/// A PUBACK or PUBREC refusing a payload that is not the UTF-8 it claims to be.
fn payload_refused(id: PacketId) -> Ack<'static> {
    Ack {
        packet_id: id,
        reason: ReasonCode::PAYLOAD_FORMAT_INVALID,
        properties: Properties::EMPTY,
    }
}
