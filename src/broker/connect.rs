//! CONNECT, takeover and the end of a connection: where sessions are created, resumed,
//! parked offline and discarded, and where wills are published.
//!
//! MQTT 5 adds to CONNECT (§3.1.2.11): Session Expiry Interval (how long the session outlives
//! the connection; replaces clean session = 0), Receive Maximum (the client's in-flight
//! window), Maximum Packet Size (larger publishes are not sent to it), Topic Alias Maximum
//! (aliases the broker may set; it sets none), Request Response Information (answered with
//! Response Information, see [`Broker::set_response_topic_prefix`]), Request Problem
//! Information (the broker sends Reason Strings only in CONNACK and DISCONNECT, and User
//! Properties only in forwarded PUBLISHes, where [MQTT-3.1.2-29] still allows them, so 0 is
//! honoured as it stands), Authentication Method (see `auth.rs`); and will properties
//! (§3.1.3.2), of which the Will Delay Interval is applied and the rest forwarded with the will.
//!
//! Keep Alive: an MQTT 5 client asking for more than `keep_alive_max_s`, or for 0, gets that
//! cap as Server Keep Alive [MQTT-3.2.2-21] and is held to it. A 3.x client cannot be told
//! another value, so the one it asked for stands: closing it sooner would cut a client that
//! does exactly what it said it would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Broker;
use super::auth::{AuthDecision, AuthRequest};
use super::clients::{Client, ClientWill};
use super::outbox::{CloseReason, Outbox, RoutedMessage};
use super::reply::{self, say_goodbye, send_packet};
use super::session::SessionKey;
use super::session::{SESSION_NEVER_EXPIRES_S, Session};
use super::timers::TimerKind;
use super::topic_aliases::TopicAliases;
use crate::conn::{Chunk, ConnId, Droppable, Transport};
use crate::protocol::mqtt::BRIDGE_USER_PROPERTY;
use crate::protocol::mqtt::topic::validate_topic_name;
use crate::protocol::mqtt::{
    ConnAck, Connect, ConnectReturnCode, Packet, Properties, PropertiesBuf, Property,
    ProtocolVersion, ReasonCode, property_id,
};

/// Candidates tried per shard when assigning a client identifier that hashes to this shard;
/// past it any unused identifier will do (clean sessions never need to be found again).
const ASSIGN_ATTEMPTS_PER_SHARD_MAX: usize = 64;

/// Receive Maximum when the client sends none (§3.1.2.11.3).
const RECEIVE_MAXIMUM_DEFAULT: u16 = 65_535;

/// Largest packet MQTT can express: the Maximum Packet Size when the client sends none
/// (§3.1.2.11.4).
const PACKET_BYTES_PROTOCOL_MAX: u32 = 268_435_460;

/// The keep-alive of a connection (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeepAlive {
    /// The client's own, in seconds (0: none).
    AsAsked(u16),
    /// `keep_alive_max_s`, told to an MQTT 5 client as Server Keep Alive.
    Capped(u16),
}

impl KeepAlive {
    fn seconds(self) -> u16 {
        match self {
            KeepAlive::AsAsked(seconds) | KeepAlive::Capped(seconds) => seconds,
        }
    }

    /// What CONNACK must say [MQTT-3.2.2-21]: only when it differs from what the client asked.
    fn server_keep_alive_s(self) -> Option<u16> {
        match self {
            KeepAlive::AsAsked(_) => None,
            KeepAlive::Capped(seconds) => Some(seconds),
        }
    }
}

/// What an accepted MQTT 5 client is told in CONNACK about itself.
struct Granted<'a> {
    assigned_client_id: Option<&'a str>,
    server_keep_alive_s: Option<u16>,
    response_information: Option<String>,
}

/// Whether the client says it is another broker's bridge: bit 7 of the protocol level
/// (3.1, 3.1.1), or the user property [`BRIDGE_USER_PROPERTY`] (MQTT 5, where Mosquitto
/// sends no mark and No Local does the rest).
fn is_bridge(connect: &Connect<'_>) -> bool {
    connect.bridge
        || connect
            .properties
            .user_properties()
            .any(|(name, _)| name == BRIDGE_USER_PROPERTY)
}

/// The will of a CONNECT as it will be published: MQTT 5 will properties forwarded except the
/// Will Delay Interval, which is the broker's business, and the Message Expiry Interval, which
/// starts when the will is published. Returns it with its expiry interval.
fn will_message(connect: &Connect<'_>) -> Option<(Arc<RoutedMessage>, Option<u32>)> {
    let will = connect.will.as_ref()?;
    let mut message = RoutedMessage::new(will.topic, will.payload, will.qos, will.retain);
    if !will.properties.is_empty() {
        let mut forwarded = PropertiesBuf::new();
        let skip = [
            property_id::WILL_DELAY_INTERVAL,
            property_id::MESSAGE_EXPIRY_INTERVAL,
        ];
        will.properties.copy_except(&skip, &mut forwarded);
        message.properties = forwarded.as_properties().raw().into();
    }
    Some((
        Arc::new(message),
        will.properties.message_expiry_interval_s(),
    ))
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
        self.now = now;
        if self.clients.contains(conn) {
            // [MQTT-3.1.0-2]
            self.protocol_violation(conn, "second CONNECT", now, out);
            return;
        }
        let version = connect.version;
        let v5 = version == ProtocolVersion::V5;
        if let Err(reason) = self.authenticate(connect) {
            self.refuse_connect(conn, transport, version, reason, out);
            return;
        }
        let assigned;
        let client_id = if !connect.client_id.is_empty() {
            connect.client_id
        } else if v5 || (version == ProtocolVersion::V311 && connect.clean_session) {
            // [MQTT-3.1.3-6]; MQTT 5 assigns one whatever Clean Start says and tells the
            // client in CONNACK [MQTT-3.2.2-16].
            assigned = self.assign_client_id();
            &assigned
        } else {
            // [MQTT-3.1.3-8]; MQTT 3.1 requires 1 to 23 characters (longer ones are accepted
            // up to `client_id_bytes_max`, as most 3.1 servers do).
            let reason = ReasonCode::CLIENT_IDENTIFIER_NOT_VALID;
            self.refuse_connect(conn, transport, version, reason, out);
            return;
        };
        if client_id.len() > usize::from(self.limits.client_id_bytes_max) {
            let reason = ReasonCode::CLIENT_IDENTIFIER_NOT_VALID;
            self.refuse_connect(conn, transport, version, reason, out);
            return;
        }
        let expiry_s = match (v5, connect.clean_session) {
            (true, _) => connect.properties.session_expiry_interval_s().unwrap_or(0),
            (false, true) => 0,
            (false, false) => SESSION_NEVER_EXPIRES_S,
        };
        self.take_over(client_id, now, out);
        let (key, session_present) = self.open_session(
            client_id,
            version,
            !connect.clean_session,
            expiry_s,
            now,
            out,
        );
        if let Some(session) = self.sessions.get_mut(key) {
            session.bridge = is_bridge(connect);
        }
        let keep_alive = self.keep_alive(connect);
        self.attach(conn, transport, connect, keep_alive.seconds(), key, now);
        // A resumed session may have been written when it was persistent.
        if session_present || expiry_s > 0 {
            self.note_session(key);
        }
        // A session that comes back is anonymous until the shard says who proved what.
        if let Some(session) = self.sessions.get_mut(key)
            && session.identity().is_some()
        {
            session.set_identity(None);
        }
        let granted = Granted {
            assigned_client_id: connect.client_id.is_empty().then_some(client_id),
            server_keep_alive_s: keep_alive.server_keep_alive_s(),
            response_information: self.response_information(connect, client_id),
        };
        let connack = self.accepting_connack(version, transport, session_present, &granted);
        out.send(conn, Chunk::Owned(connack), Droppable::No);
        // An assigned identifier is unique on this node only: the other nodes are not told.
        if self.announces_clients && !connect.client_id.is_empty() {
            out.connected_clients.push(client_id.into());
        }
        self.resume_outbound(key, out);
    }

    /// The keep-alive `connect` gets: its own, or `keep_alive_max_s` for an MQTT 5 client
    /// that asks for more or for none (see the module documentation).
    fn keep_alive(&self, connect: &Connect<'_>) -> KeepAlive {
        let max_s = self.limits.keep_alive_max_s;
        let asked_s = connect.keep_alive_s;
        let over = asked_s == 0 || asked_s > max_s;
        if connect.version == ProtocolVersion::V5 && over {
            KeepAlive::Capped(max_s)
        } else {
            KeepAlive::AsAsked(asked_s)
        }
    }

    /// The Response Information an MQTT 5 client that asks for it gets (§3.1.2.11.6): the
    /// configured prefix and its client identifier, a topic name under which it may receive
    /// responses. Left out (the spec allows it, §3.2.2.3.15) when no prefix is set, or when
    /// the two do not make a topic name within `topic_bytes_max` and `topic_levels_max` (an
    /// identifier with a wildcard in it, or too long).
    fn response_information(&self, connect: &Connect<'_>, client_id: &str) -> Option<String> {
        let prefix = self.response_topic_prefix.as_deref()?;
        if connect.properties.request_response_information() != Some(true) {
            return None;
        }
        let topic = format!("{prefix}{client_id}");
        let limits = self.limits.decode_limits();
        validate_topic_name(&topic, &limits).ok().map(|()| topic)
    }

    /// The CONNACK accepting a connection, framed for it; an MQTT 5 one says what the broker
    /// allows and what it `granted` this client.
    fn accepting_connack(
        &self,
        version: ProtocolVersion,
        transport: Transport,
        session_present: bool,
        granted: &Granted<'_>,
    ) -> Vec<u8> {
        if version == ProtocolVersion::V5 {
            let properties = self.connack_properties(granted);
            let connack = ConnAck {
                session_present,
                reason: ReasonCode::SUCCESS,
                properties: properties.as_properties(),
            };
            reply::frame(&Packet::ConnAck(connack), version, transport)
        } else {
            // Session present exists from 3.1.1 on [MQTT-3.2.2-1..3].
            let present = session_present && version == ProtocolVersion::V311;
            let connack = ConnAck::new(present, ConnectReturnCode::Accepted);
            reply::frame(&Packet::ConnAck(connack), version, transport)
        }
    }

    /// Runs the authentication hook for a CONNECT with an Authentication Method. `Err` holds
    /// the CONNACK reason code of a refusal.
    fn authenticate(&mut self, connect: &Connect<'_>) -> Result<(), ReasonCode> {
        let Some(method) = connect.properties.authentication_method() else {
            return Ok(());
        };
        let Some(authenticator) = self.authenticator.as_mut() else {
            return Err(ReasonCode::BAD_AUTHENTICATION_METHOD);
        };
        if authenticator.method() != method {
            return Err(ReasonCode::BAD_AUTHENTICATION_METHOD);
        }
        let request = AuthRequest {
            client_id: connect.client_id,
            username: connect.username,
            password: connect.password,
            data: connect.properties.authentication_data(),
        };
        match authenticator.authenticate(&request) {
            AuthDecision::Accept => Ok(()),
            AuthDecision::Refuse(reason) if reason.is_error() => Err(reason),
            AuthDecision::Refuse(_) => Err(ReasonCode::NOT_AUTHORIZED),
        }
    }

    /// What an MQTT 5 client must know of this server (§3.2.2.3). Maximum QoS is left out:
    /// every QoS is supported, and so are shared subscriptions (`share_groups.rs`).
    fn connack_properties(&self, granted: &Granted<'_>) -> PropertiesBuf {
        let mut properties = PropertiesBuf::new();
        if let Some(id) = granted.assigned_client_id {
            properties.push(Property::AssignedClientIdentifier(id));
        }
        if let Some(seconds) = granted.server_keep_alive_s {
            properties.push(Property::ServerKeepAlive(seconds));
        }
        if let Some(topic) = &granted.response_information {
            properties.push(Property::ResponseInformation(topic));
        }
        properties
            .push(Property::ReceiveMaximum(self.limits.inbound_qos2_max))
            .push(Property::RetainAvailable(1))
            .push(Property::MaximumPacketSize(self.limits.packet_bytes_max));
        if self.limits.topic_aliases_max > 0 {
            properties.push(Property::TopicAliasMaximum(self.limits.topic_aliases_max));
        }
        properties
            .push(Property::WildcardSubscriptionAvailable(1))
            .push(Property::SubscriptionIdentifierAvailable(1))
            .push(Property::SharedSubscriptionAvailable(1));
        properties
    }

    /// The connection's socket is gone (peer closed, network error, or a decode error /
    /// WebSocket violation found by the network layer, which then calls this right after
    /// closing). Publishes the will unless DISCONNECT was received ([MQTT-3.1.2-8/10]).
    /// Idempotent; accepted for a connection the broker itself closed, or never saw.
    pub fn connection_lost(&mut self, conn: ConnId, now: Instant, out: &mut Outbox) {
        self.now = now;
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
        self.close_for(conn, CloseReason::ProtocolViolation(rule), now, out);
    }

    /// Closes `conn` for a broken rule with `reason` (an MQTT 5 client gets a DISCONNECT with
    /// its code), and publishes its will.
    pub(crate) fn close_for(
        &mut self,
        conn: ConnId,
        reason: CloseReason,
        now: Instant,
        out: &mut Outbox,
    ) {
        self.stats.protocol_violations += 1;
        if self.clients.contains(conn) {
            self.end_connection(conn, Some(reason), true, now, out);
        } else {
            out.close(conn, reason);
        }
    }

    /// Forgets `conn`, asks for its close (unless the socket is already gone), parks or
    /// discards its session, then publishes its will if asked to: at once, or after its Will
    /// Delay Interval if the session outlives the connection (§3.1.3.2.2).
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
        let Some(mut connection) = self.clients.remove(conn) else {
            return;
        };
        if let Some(reason) = reason {
            say_goodbye(out, conn, &connection, reason);
        }
        let key = connection.session;
        for will in self.detach(key, now, out) {
            self.publish_will(will, now, out);
        }
        let Some(ClientWill {
            message,
            expiry_s,
            delay_s,
        }) = connection
            .will
            .take()
            .filter(|_| publish_will)
            .map(|will| *will)
        else {
            return;
        };
        let will = match expiry_s {
            Some(expiry_s) => {
                let mut message = RoutedMessage::clone(&message);
                message.expires_at = now.checked_add(Duration::from_secs(expiry_s.into()));
                Arc::new(message)
            }
            None => message,
        };
        match self.sessions.get_mut(key) {
            Some(session) if delay_s > 0 => {
                let Some(due) = now.checked_add(Duration::from_secs(delay_s.into())) else {
                    // A delay of at most 2^32 s past `now` fits the monotonic clock; if it
                    // ever did not, the will is dropped rather than the shard.
                    return;
                };
                session.delay_will(will, due);
                let stamp = session.offline_ticket();
                self.timers.push_at(due, key, stamp, TimerKind::WillDelay);
                // The store keeps the will with its deadline (`session_writes.rs`).
                self.note_session(key);
            }
            _ => self.publish_will(will, now, out),
        }
    }

    pub(crate) fn publish_will(
        &mut self,
        will: Arc<RoutedMessage>,
        now: Instant,
        out: &mut Outbox,
    ) {
        self.stats.wills_published += 1;
        self.route(will, None, now, out);
    }

    /// A second connection with a connected client's identifier closes the first
    /// [MQTT-3.1.4-2]. Its will is published: the first network connection ends without a
    /// DISCONNECT, which is exactly when [MQTT-3.1.2-8] asks for the will (Mosquitto does the
    /// same). A client that wants no will on takeover sends DISCONNECT first. An MQTT 5 will
    /// with a delay is cancelled by the new connection resuming the session [MQTT-3.1.3-9].
    pub(super) fn take_over(&mut self, client_id: &str, now: Instant, out: &mut Outbox) {
        let Some(key) = self.client_ids.get(client_id, &self.sessions) else {
            return;
        };
        let Some(old) = self.sessions.get(key).and_then(|session| session.conn) else {
            return;
        };
        self.stats.takeovers += 1;
        self.end_connection(old, Some(CloseReason::SessionTakenOver), true, now, out);
    }

    /// Resumes the session of `client_id` if `resume` and it exists, else starts a new one
    /// (discarding any previous session [MQTT-3.1.2-6], [MQTT-3.1.2-4]). Returns it and whether
    /// it was resumed. A delayed will of the session is dropped: the client is back.
    fn open_session(
        &mut self,
        client_id: &str,
        version: ProtocolVersion,
        resume: bool,
        expiry_s: u32,
        now: Instant,
        out: &mut Outbox,
    ) -> (SessionKey, bool) {
        if let Some(key) = self.client_ids.get(client_id, &self.sessions) {
            if resume {
                let session = self
                    .sessions
                    .get_mut(key)
                    .expect("client_ids holds live keys");
                debug_assert!(session.conn.is_none(), "take_over detached it");
                self.offline.forget(session);
                session.version = version;
                session.expiry_s = expiry_s;
                session.cancel_delayed_will();
                return (key, true);
            }
            if let Some(will) = self.discard_session(key, out) {
                // The session ends here, before its will delay ran out: the will goes now
                // (§3.1.3.2.2, "or the Session ends, whichever happens first").
                self.publish_will(will, now, out);
            }
        }
        let key = self
            .sessions
            .insert(Session::new(client_id, version, expiry_s));
        self.client_ids.insert(key, &self.sessions);
        self.draw_incarnation_early(key);
        (key, false)
    }

    fn attach(
        &mut self,
        conn: ConnId,
        transport: Transport,
        connect: &Connect<'_>,
        keep_alive_s: u16,
        key: SessionKey,
        now: Instant,
    ) {
        let session = self
            .sessions
            .get_mut(key)
            .expect("open_session returned it");
        session.conn = Some(conn);
        let delay_s = connect
            .will
            .as_ref()
            .and_then(|will| will.properties.will_delay_interval_s())
            .unwrap_or(0);
        let will = will_message(connect).map(|(message, expiry_s)| {
            Box::new(ClientWill {
                message,
                expiry_s,
                delay_s,
            })
        });
        // [MQTT-3.1.2-24]: one and a half times the keep-alive; 0 turns it off.
        let keep_alive_grace_ms = u32::from(keep_alive_s) * 1500;
        if keep_alive_grace_ms > 0 {
            let grace = Duration::from_millis(keep_alive_grace_ms.into());
            self.deadlines.push(now + grace, conn);
        }
        let properties = &connect.properties;
        let receive_maximum = properties
            .receive_maximum()
            .unwrap_or(RECEIVE_MAXIMUM_DEFAULT);
        let connection = Client {
            session: key,
            transport,
            version: connect.version,
            closing: false,
            denial_reported: false,
            keep_alive_grace_ms,
            last_packet_at: now,
            will,
            send_window: receive_maximum.min(self.limits.inflight_max),
            packet_bytes_max: properties
                .maximum_packet_size_bytes()
                .unwrap_or(PACKET_BYTES_PROTOCOL_MAX),
            // Aliases start anew on every connection [MQTT-3.3.2-7].
            topic_aliases: TopicAliases::new(
                properties
                    .topic_alias_maximum()
                    .unwrap_or(0)
                    .min(self.limits.topic_aliases_per_shard_max),
            ),
        };
        self.clients.insert(conn, connection);
    }

    /// The connection of `key` ended: a session without expiry ends with it [MQTT-3.1.2-6],
    /// one with an expiry goes offline until it runs out, evicting the longest-offline session
    /// past the bound. Returns the delayed wills of sessions ended here, to publish.
    pub(crate) fn detach(
        &mut self,
        key: SessionKey,
        now: Instant,
        out: &mut Outbox,
    ) -> Vec<Arc<RoutedMessage>> {
        let mut wills = Vec::new();
        let Some(session) = self.sessions.get_mut(key) else {
            return wills;
        };
        session.conn = None;
        if !session.persistent() {
            wills.extend(self.discard_session(key, out));
            return wills;
        }
        self.offline.push(key, session);
        if session.expiry_s != SESSION_NEVER_EXPIRES_S {
            let (expiry_s, ticket) = (session.expiry_s, session.offline_ticket());
            if let Some(deadline) = now.checked_add(Duration::from_secs(expiry_s.into())) {
                session.set_offline_deadline(deadline);
            }
            self.timers
                .push(now, expiry_s, key, ticket, TimerKind::SessionExpiry);
        }
        wills.extend(self.evict_offline_past_bound(out).into_iter().flatten());
        self.note_session(key);
        wills
    }

    /// Ends the sessions offline the longest while more than `offline_sessions_per_shard_max`
    /// are; returns, for each, its delayed will if it had one, to publish.
    pub(crate) fn evict_offline_past_bound(
        &mut self,
        out: &mut Outbox,
    ) -> Vec<Option<Arc<RoutedMessage>>> {
        let mut ended = Vec::new();
        let offline_max = self.limits.offline_sessions_per_shard_max as usize;
        loop {
            let sessions = &self.sessions;
            let ticket_of = |key| sessions.get(key).map(|session| session.offline_ticket());
            let Some(oldest) = self.offline.over_limit(offline_max, ticket_of) else {
                return ended;
            };
            self.stats.sessions_evicted += 1;
            ended.push(self.discard_session(oldest, out));
        }
    }

    /// Ends a session, leaving its shared subscription groups; returns its delayed will, which
    /// the caller publishes (the session ended before the will delay did) or drops.
    pub(crate) fn discard_session(
        &mut self,
        key: SessionKey,
        out: &mut Outbox,
    ) -> Option<Arc<RoutedMessage>> {
        let mut session = self.sessions.remove(key)?;
        self.offline.forget(&mut session);
        for filter in session.subscriptions.keys() {
            if filter.starts_with(super::share_groups::SHARED_PREFIX) {
                self.share_leave(key, filter, out);
            } else {
                self.trie.remove(filter, key);
            }
        }
        self.client_ids.remove(&session.client_id, key);
        // Noted whatever its expiry now: it may have been written while it had one.
        self.note_session_ended(&session.client_id);
        session.into_delayed_will()
    }

    /// An MQTT 5 client published past its rate with `disconnect_on_rate` on: DISCONNECT 0x96
    /// Message rate too high, then the close; its will is published.
    pub fn disconnect_for_rate(&mut self, conn: ConnId, now: Instant, out: &mut Outbox) {
        if !self.clients.contains(conn) {
            // Ended by an earlier publish of the same receive.
            return;
        }
        self.stats.rate_disconnects += 1;
        let reason = CloseReason::Refused(ReasonCode::MESSAGE_RATE_TOO_HIGH, "publish rate");
        self.end_connection(conn, Some(reason), true, now, out);
    }

    /// CONNACK refusing the CONNECT with `reason`, then close. A 3.x client gets the return
    /// code with the same meaning ([`ConnectReturnCode::from_reason_code`]), or 0x03 Server
    /// unavailable when 3.x has none.
    pub fn refuse_connect(
        &mut self,
        conn: ConnId,
        transport: Transport,
        version: ProtocolVersion,
        reason: ReasonCode,
        out: &mut Outbox,
    ) {
        self.stats.connects_refused += 1;
        let connack = if version == ProtocolVersion::V5 {
            ConnAck {
                session_present: false,
                reason,
                properties: Properties::EMPTY,
            }
        } else {
            let code = ConnectReturnCode::from_reason_code(reason)
                .unwrap_or(ConnectReturnCode::ServerUnavailable);
            ConnAck::new(false, code)
        };
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
            if (ours || attempts >= attempts_max)
                && self.client_ids.get(&id, &self.sessions).is_none()
            {
                return id;
            }
        }
    }
}
