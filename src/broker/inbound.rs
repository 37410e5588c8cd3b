//! Every packet of a connection after its CONNECT: publishes and their acks in both
//! directions, SUBSCRIBE / UNSUBSCRIBE, PINGREQ and DISCONNECT.

use std::sync::Arc;
use std::time::Instant;

use super::Broker;
use super::connect::send_packet;
use super::outbound::AckOutcome;
use super::outbox::{CloseReason, ConnId, Outbox, RoutedMessage};
use super::slab::SessionKey;
use crate::protocol::mqtt::{
    Ack, Delivery, Packet, PacketId, Properties, Publish, SubAck, Subscribe, SubscribeReturnCode,
    UnsubAck, Unsubscribe,
};

impl Broker {
    /// Any later packet of a connection. A second CONNECT or a packet only a server sends is a
    /// protocol violation: the connection is closed and its will published.
    ///
    /// Packets of a connection the broker does not know (it already asked for its close, or
    /// the network layer never called `connect`) are ignored: the network layer hands a
    /// connection's first packet to `connect`, and may still drain packets read before a close.
    pub fn packet(&mut self, conn: ConnId, packet: &Packet<'_>, now: Instant, out: &mut Outbox) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        // Any control packet counts for the keep-alive [MQTT-3.1.2-23].
        connection.last_packet_at = now;
        let key = connection.session;
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
                if let Some(session) = self.sessions.get_mut(key) {
                    session.inbound_qos2.retain(|pending| pending != id);
                }
                // Sent for an unknown identifier too: the PUBREL may repeat after a reconnect
                // whose PUBCOMP was lost [MQTT-4.3.3-2].
                self.reply(conn, &Packet::PubComp(Ack::new(*id)), out);
            }
            Packet::PubComp(Ack { packet_id: id, .. }) => {
                let outcome = self.outbound_mut(key).map(|o| o.pubcomp(*id));
                self.after_ack(conn, key, *id, outcome, out);
            }
            Packet::Subscribe(subscribe) => self.subscribe(conn, key, subscribe, out),
            Packet::Unsubscribe(unsubscribe) => self.unsubscribe(conn, key, unsubscribe, out),
            Packet::PingReq => self.reply(conn, &Packet::PingResp, out),
            Packet::Disconnect(_) => {
                // The will is discarded [MQTT-3.1.2-10].
                let reason = Some(CloseReason::ClientDisconnected);
                self.end_connection(conn, reason, false, now, out);
            }
            Packet::ConnAck(_) => self.protocol_violation(conn, "CONNACK from a client", now, out),
            Packet::SubAck(_) => self.protocol_violation(conn, "SUBACK from a client", now, out),
            Packet::UnsubAck(_) => {
                self.protocol_violation(conn, "UNSUBACK from a client", now, out)
            }
            Packet::PingResp => self.protocol_violation(conn, "PINGRESP from a client", now, out),
            // Only MQTT 5 has AUTH, and MQTT 5 clients are refused at CONNECT for now.
            Packet::Auth(_) => self.protocol_violation(conn, "AUTH is not supported", now, out),
        }
    }

    fn outbound_mut(&mut self, key: SessionKey) -> Option<&mut super::outbound::Outbound> {
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
        match outcome {
            None | Some(AckOutcome::Ignored) => {}
            Some(AckOutcome::Freed) => self.drain_queue(key, out),
            Some(AckOutcome::SendPubRel) => self.reply(conn, &Packet::PubRel(Ack::new(id)), out),
        }
    }

    /// Sends a control packet on `conn`, framed for its transport and version.
    fn reply(&self, conn: ConnId, packet: &Packet<'_>, out: &mut Outbox) {
        if let Some(connection) = self.connections.get(&conn) {
            send_packet(out, conn, connection.transport, connection.version, packet);
        }
    }

    /// A client's PUBLISH. Topics starting with `$` are delivered like any other: 3.1.1 only
    /// says they are reserved for server use (§4.7.2), and subscribers only get them through
    /// filters naming the `$` level explicitly [MQTT-4.7.2-1].
    fn publish(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        publish: &Publish<'_>,
        now: Instant,
        out: &mut Outbox,
    ) {
        self.stats.publishes_received += 1;
        let message = || {
            Arc::new(RoutedMessage {
                topic: publish.topic.into(),
                payload: publish.payload.into(),
                qos: publish.delivery.qos(),
                retain: publish.retain,
            })
        };
        match publish.delivery {
            Delivery::AtMostOnce => self.route(message(), now, out),
            Delivery::AtLeastOnce(id) => {
                self.route(message(), now, out);
                self.reply(conn, &Packet::PubAck(Ack::new(id)), out);
            }
            Delivery::ExactlyOnce(id) => {
                let inbound_qos2_max = usize::from(self.limits.inbound_qos2_max);
                let Some(session) = self.sessions.get_mut(key) else {
                    return;
                };
                if session.inbound_qos2.contains(&id) {
                    // Already delivered: a retransmission gets its PUBREC again, nothing more
                    // [MQTT-4.3.3-2].
                    self.reply(conn, &Packet::PubRec(Ack::new(id)), out);
                    return;
                }
                if session.inbound_qos2.len() >= inbound_qos2_max {
                    self.protocol_violation(
                        conn,
                        "too many QoS 2 publishes awaiting PUBREL",
                        now,
                        out,
                    );
                    return;
                }
                session.inbound_qos2.push(id);
                self.route(message(), now, out);
                self.reply(conn, &Packet::PubRec(Ack::new(id)), out);
            }
        }
    }

    /// SUBACK with one code per filter in order [MQTT-3.8.4-5], then the retained messages
    /// of every granted filter (also when it replaced an existing one [MQTT-3.8.4-3]).
    ///
    /// A filter past `subscriptions_per_session_max` gets 0x80. MQTT 3.1 has no failure
    /// code; 0x80 is sent to 3.1 clients too, as common 3.1 implementations understand it.
    fn subscribe(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        subscribe: &Subscribe<'_>,
        out: &mut Outbox,
    ) {
        let subscriptions_max = self.limits.subscriptions_per_session_max as usize;
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        for &(filter, options) in &subscribe.filters {
            let qos = options.qos;
            let known = session.subscriptions.contains_key(filter);
            if !known && session.subscriptions.len() >= subscriptions_max {
                self.stats.subscriptions_refused += 1;
                codes.push(SubscribeReturnCode::Failure);
                continue;
            }
            // Granted QoS = requested QoS: every QoS is supported.
            session.subscriptions.insert(filter.into(), qos);
            self.trie.insert(filter, key, qos);
            codes.push(SubscribeReturnCode::Granted(qos));
        }
        let suback = SubAck {
            packet_id: subscribe.packet_id,
            codes,
            properties: Properties::EMPTY,
        };
        self.reply(conn, &Packet::SubAck(suback.clone()), out);
        for (&(filter, _), code) in subscribe.filters.iter().zip(&suback.codes) {
            if let SubscribeReturnCode::Granted(qos) = *code {
                self.send_retained(key, filter, qos, out);
            }
        }
    }

    /// Removes each filter; UNSUBACK even when nothing was subscribed [MQTT-3.10.4-5].
    fn unsubscribe(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        unsubscribe: &Unsubscribe<'_>,
        out: &mut Outbox,
    ) {
        if let Some(session) = self.sessions.get_mut(key) {
            for &filter in &unsubscribe.filters {
                if session.subscriptions.remove(filter).is_some() {
                    self.trie.remove(filter, key);
                }
            }
        }
        self.reply(
            conn,
            &Packet::UnsubAck(UnsubAck::new(unsubscribe.packet_id)),
            out,
        );
    }
}
