//! CONNECT, takeover and the end of a connection: where sessions are created, resumed,
//! parked offline and discarded, and where wills are published.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Broker;
use super::outbox::{Chunk, CloseReason, ConnId, Droppable, Outbox, RoutedMessage, Transport};
use super::session::{Connection, Session};
use super::slab::SessionKey;
use super::wire;
use crate::protocol::mqtt::{ConnAck, Connect, ConnectReturnCode, Packet, ProtocolVersion};

/// Candidates tried per shard when assigning a client identifier that hashes to this shard;
/// past it any unused identifier will do (clean sessions never need to be found again).
const ASSIGN_ATTEMPTS_PER_SHARD_MAX: usize = 64;

/// Appends a control packet (not a fanned-out publish) for `conn`.
pub(crate) fn send_packet(
    out: &mut Outbox,
    conn: ConnId,
    transport: Transport,
    version: ProtocolVersion,
    packet: &Packet<'_>,
) {
    let bytes = wire::frame(packet, version, transport);
    out.send(conn, Chunk::Owned(bytes), Droppable::No);
}

impl Broker {
    /// A connection's CONNECT (already decoded and validated by the codec). Queues CONNACK and
    /// the session's pending traffic, or a refusing CONNACK followed by
    /// `out.close(conn, ConnectRefused)`.
    pub fn connect(
        &mut self,
        conn: ConnId,
        transport: Transport,
        connect: &Connect<'_>,
        now: Instant,
        out: &mut Outbox,
    ) {
        if self.connections.contains_key(&conn) {
            // [MQTT-3.1.0-2]
            self.protocol_violation(conn, "second CONNECT", now, out);
            return;
        }
        if connect.version == ProtocolVersion::V5 {
            // Not implemented yet: answered the 3.1.1 way, as [MQTT-3.1.2-2] describes.
            let code = ConnectReturnCode::UnacceptableProtocolVersion;
            self.refuse(conn, transport, ProtocolVersion::V311, code, out);
            return;
        }
        let assigned;
        let client_id = if !connect.client_id.is_empty() {
            connect.client_id
        } else if connect.version == ProtocolVersion::V311 && connect.clean_session {
            // [MQTT-3.1.3-6]: the server assigns a unique identifier.
            assigned = self.assign_client_id();
            &assigned
        } else {
            // [MQTT-3.1.3-8]; MQTT 3.1 requires 1 to 23 characters (longer ones are accepted
            // up to `client_id_bytes_max`, as most 3.1 servers do).
            let code = ConnectReturnCode::IdentifierRejected;
            self.refuse(conn, transport, connect.version, code, out);
            return;
        };
        if client_id.len() > usize::from(self.limits.client_id_bytes_max) {
            let code = ConnectReturnCode::IdentifierRejected;
            self.refuse(conn, transport, connect.version, code, out);
            return;
        }
        self.take_over(client_id, now, out);
        let (key, session_present) =
            self.open_session(client_id, connect.version, !connect.clean_session);
        self.attach(conn, transport, connect, key, now);
        let connack = ConnAck::new(
            // Session present exists in 3.1.1 only [MQTT-3.2.2-1..3].
            session_present && connect.version == ProtocolVersion::V311,
            ConnectReturnCode::Accepted,
        );
        send_packet(
            out,
            conn,
            transport,
            connect.version,
            &Packet::ConnAck(connack),
        );
        self.resume_outbound(key, out);
    }

    /// The connection's socket is gone (peer closed, network error, or a decode error /
    /// WebSocket violation found by the network layer, which then calls this right after
    /// closing). Publishes the will unless DISCONNECT was received ([MQTT-3.1.2-8/10]).
    /// Idempotent; accepted for a connection the broker itself closed, or never saw.
    pub fn connection_lost(&mut self, conn: ConnId, now: Instant, out: &mut Outbox) {
        self.end_connection(conn, None, true, now, out);
    }

    /// Closes `conn` for breaking a rule of the protocol, and publishes its will.
    pub(crate) fn protocol_violation(
        &mut self,
        conn: ConnId,
        rule: &'static str,
        now: Instant,
        out: &mut Outbox,
    ) {
        self.stats.protocol_violations += 1;
        if self.connections.contains_key(&conn) {
            let reason = CloseReason::ProtocolViolation(rule);
            self.end_connection(conn, Some(reason), true, now, out);
        } else {
            out.close(conn, CloseReason::ProtocolViolation(rule));
        }
    }

    /// Forgets `conn`, asks for its close (unless the socket is already gone), parks or
    /// discards its session, then publishes its will if asked to.
    ///
    /// The session is detached before the will is routed, so a client subscribed to its own
    /// will topic does not get it queued on the connection being closed.
    pub(crate) fn end_connection(
        &mut self,
        conn: ConnId,
        reason: Option<CloseReason>,
        publish_will: bool,
        now: Instant,
        out: &mut Outbox,
    ) {
        let Some(connection) = self.connections.remove(&conn) else {
            return;
        };
        if let Some(reason) = reason {
            out.close(conn, reason);
        }
        self.detach(connection.session);
        if let (true, Some(will)) = (publish_will, connection.will) {
            self.stats.wills_published += 1;
            self.route(will, now, out);
        }
    }

    /// A second connection with a connected client's identifier closes the first
    /// [MQTT-3.1.4-2]. Its will is published: the first network connection ends without a
    /// DISCONNECT, which is exactly when [MQTT-3.1.2-8] asks for the will (Mosquitto does the
    /// same). A client that wants no will on takeover sends DISCONNECT first.
    fn take_over(&mut self, client_id: &str, now: Instant, out: &mut Outbox) {
        let Some(&key) = self.client_ids.get(client_id) else {
            return;
        };
        let Some(old) = self.sessions.get(key).and_then(|session| session.conn) else {
            return;
        };
        self.stats.takeovers += 1;
        self.end_connection(old, Some(CloseReason::SessionTakenOver), true, now, out);
    }

    /// Resumes the offline session of `client_id` if `persistent`, else starts a new one
    /// (discarding any previous session [MQTT-3.1.2-6]). Returns it and whether it was resumed.
    fn open_session(
        &mut self,
        client_id: &str,
        version: ProtocolVersion,
        persistent: bool,
    ) -> (SessionKey, bool) {
        if let Some(&key) = self.client_ids.get(client_id) {
            if persistent {
                let session = self
                    .sessions
                    .get_mut(key)
                    .expect("client_ids holds live keys");
                debug_assert!(session.conn.is_none(), "take_over detached it");
                self.offline.forget(session);
                session.version = version;
                return (key, true);
            }
            self.discard_session(key);
        }
        let key = self
            .sessions
            .insert(Session::new(client_id, version, persistent));
        self.client_ids.insert(client_id.into(), key);
        (key, false)
    }

    fn attach(
        &mut self,
        conn: ConnId,
        transport: Transport,
        connect: &Connect<'_>,
        key: SessionKey,
        now: Instant,
    ) {
        let session = self
            .sessions
            .get_mut(key)
            .expect("open_session returned it");
        session.conn = Some(conn);
        let will = connect.will.as_ref().map(|will| {
            Arc::new(RoutedMessage {
                topic: will.topic.into(),
                payload: will.payload.into(),
                qos: will.qos,
                retain: will.retain,
            })
        });
        // [MQTT-3.1.2-24]: one and a half times the keep-alive; 0 turns it off.
        let keep_alive_grace = (connect.keep_alive_s > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive_s) * 1500));
        if let Some(grace) = keep_alive_grace {
            self.deadlines.push(now + grace, conn);
        }
        let connection = Connection {
            session: key,
            transport,
            version: connect.version,
            keep_alive_grace,
            last_packet_at: now,
            will,
        };
        self.connections.insert(conn, connection);
    }

    /// The connection of `key` ended: a clean session ends with it [MQTT-3.1.2-6], a
    /// persistent one goes offline, evicting the longest-offline session past the bound.
    pub(crate) fn detach(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        session.conn = None;
        if !session.persistent {
            self.discard_session(key);
            return;
        }
        self.offline.push(key, session);
        let offline_max = self.limits.offline_sessions_per_shard_max as usize;
        loop {
            let sessions = &self.sessions;
            let ticket_of = |key| sessions.get(key).map(|session| session.offline_ticket);
            let Some(oldest) = self.offline.over_limit(offline_max, ticket_of) else {
                break;
            };
            self.stats.sessions_evicted += 1;
            self.discard_session(oldest);
        }
    }

    fn discard_session(&mut self, key: SessionKey) {
        let Some(mut session) = self.sessions.remove(key) else {
            return;
        };
        self.offline.forget(&mut session);
        for filter in session.subscriptions.keys() {
            self.trie.remove(filter, key);
        }
        if self.client_ids.get(&session.client_id) == Some(&key) {
            self.client_ids.remove(&session.client_id);
        }
    }

    fn refuse(
        &mut self,
        conn: ConnId,
        transport: Transport,
        version: ProtocolVersion,
        code: ConnectReturnCode,
        out: &mut Outbox,
    ) {
        self.stats.connects_refused += 1;
        let connack = ConnAck::new(false, code);
        send_packet(out, conn, transport, version, &Packet::ConnAck(connack));
        out.close(conn, CloseReason::ConnectRefused);
    }

    /// A fresh identifier `fanfare-<shard>-<n>` for a client that sent an empty one. It is
    /// chosen to hash to this shard when possible, so a later CONNECT with it finds this
    /// session (and takes it over) like any other identifier.
    fn assign_client_id(&mut self) -> String {
        let attempts_max = ASSIGN_ATTEMPTS_PER_SHARD_MAX * self.shard_count;
        let mut attempts = 0;
        loop {
            self.assigned_ids += 1;
            attempts += 1;
            let id = format!("fanfare-{}-{}", self.shard, self.assigned_ids);
            let ours = Broker::owner_shard(&id, self.shard_count) == self.shard;
            if (ours || attempts >= attempts_max) && !self.client_ids.contains_key(id.as_str()) {
                return id;
            }
        }
    }
}
