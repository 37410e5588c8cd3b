//! What happens to received bytes: HTTP upgrade, then WebSocket frames unmasked in place, then
//! MQTT packets decoded as borrowed views and handed to the broker.
//!
//! Packets are decoded straight from the receive buffer; only a packet that straddles two
//! buffers is copied, into the connection's pending bytes, which the packet size limit bounds.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info};

use super::address_book::AddressBook;
use super::auth_gate::{AuthGate, Entry};
use super::peer::{CloseCause, Peer, Phase, SessionWait, Verified, WireLimits};
use super::publish_rate::{PublishRate, RateLimits};
use crate::auth::{Identity, Refusal};
use crate::broker::{Broker, Outbox};
use crate::config::Config;
use crate::conn::{Chunk, ConnId, Droppable, Transport};
use crate::http::{self, Site};
use crate::metrics::{self, Metrics};
use crate::protocol::forwarded::forwarded_client;
use crate::protocol::http::{Fields, Method, RequestHead, parse_head};
use crate::protocol::mqtt::{
    ConnAck, Connect, DecodeError, Disconnect, Packet, PropertiesBuf, Property, ProtocolVersion,
    ReasonCode, ReasonCodeOf, decode,
};
use crate::protocol::ws::frame::{FeedError, WsEvent, write_pong};
use crate::protocol::ws::handshake::{
    HandshakeConfig, HandshakeError, accept_upgrade, write_accept_response,
};

/// What the event loop must do with the connection after its bytes were taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close(CloseCause),
    /// The CONNECT names a session of another shard: move the socket there.
    HandOff(usize),
    /// The CONNECT waits for a verifier's verdict: stop reading.
    Verify,
    /// The connection published past its rate: read nothing more from it until then.
    Throttle(Instant),
    /// The connection holds `inbound_qos2_max` acknowledgements waiting for the disk
    /// (`durability = "sync"`): its next publish is not taken, and nothing more is read from
    /// it until some are sent.
    AwaitAcks,
}

/// Everything of the shard that taking in bytes needs, borrowed for one call.
pub struct Ingest<'a> {
    pub id: ConnId,
    pub shard: usize,
    pub shard_count: usize,
    pub broker: &'a mut Broker,
    pub out: &'a mut Outbox,
    pub config: &'a Config,
    /// The decoding bounds in force, which a connection takes at its CONNECT.
    pub wire_limits: &'a Rc<WireLimits>,
    /// Every shard's figures, for `GET /metrics`.
    pub metrics: &'a Metrics,
    /// Judges CONNECTs' credentials.
    pub auth: &'a mut AuthGate,
    /// Counts connections per client address.
    pub addresses: &'a AddressBook,
    pub now: Instant,
}

/// Takes in one receive buffer's bytes. `data` is the kernel-filled buffer; it is unmasked in
/// place.
pub fn ingest(cx: &mut Ingest<'_>, conn: &mut Peer, data: &mut [u8]) -> Flow {
    match conn.phase {
        Phase::Closing => Flow::Continue,
        Phase::WsHandshake => ingest_upgrade(cx, conn, data),
        Phase::AwaitConnect
        | Phase::Connected(_)
        | Phase::HandingOff(_)
        | Phase::Verifying
        | Phase::FetchingSession => ingest_stream(cx, conn, data),
    }
}

fn ingest_upgrade(cx: &mut Ingest<'_>, conn: &mut Peer, data: &[u8]) -> Flow {
    conn.pending.extend_from_slice(data);
    let handshake = HandshakeConfig {
        path: &cx.config.ws_path,
        allow_no_subprotocol: cx.config.ws_allow_no_subprotocol,
        allowed_origins: &cx.config.ws_allowed_origins,
    };
    let bytes_max = cx.config.limits.ws_handshake_bytes_max as usize;
    // Parsed once: the upgrade decides from the head, and a file may answer from it instead.
    let mut fields = Fields::new();
    let (head, consumed) = match parse_head(&conn.pending, bytes_max, &mut fields) {
        Ok(None) => return Flow::Continue,
        Ok(Some(parsed)) => parsed,
        Err(error) => {
            let method = Method::from_start(&conn.pending);
            let refusal = HandshakeError::from_request(error, method);
            return Flow::Close(CloseCause::Handshake(refusal));
        }
    };
    if let Some(client) = forwarded_client_of(cx, conn.addr, &head) {
        // Counted by the per-address limits from now on, like any direct client; refused, the
        // connection keeps the proxy's address, which is not counted.
        let ip = client.ip();
        if cx.addresses.counts(ip)
            && let Err(refusal) = cx.addresses.admit(ip, cx.now)
        {
            info!(
                "{}: the client {ip} is refused: {}",
                conn.addr,
                refusal.description()
            );
            return Flow::Close(CloseCause::Address(refusal));
        }
        conn.addr = client;
    }
    match accept_upgrade(&head, &handshake) {
        Err(error) if may_serve_file(error) => serve_file(cx, &head, error),
        Err(error) => Flow::Close(CloseCause::Handshake(error)),
        Ok(upgrade) => {
            let mut response = Vec::with_capacity(160);
            write_accept_response(&upgrade, &mut response);
            cx.out.send(cx.id, Chunk::Owned(response), Droppable::No);
            conn.phase = Phase::AwaitConnect;
            // Bytes after the request are already WebSocket frames.
            let mut rest = conn.pending.split_off(consumed);
            conn.pending = Vec::new();
            if rest.is_empty() {
                Flow::Continue
            } else {
                ingest_stream(cx, conn, &mut rest)
            }
        }
    }
}

fn ingest_stream(cx: &mut Ingest<'_>, conn: &mut Peer, data: &mut [u8]) -> Flow {
    if conn.transport == Transport::Tcp {
        return ingest_mqtt(cx, conn, data);
    }
    let Some(mut decoder) = conn.ws.take() else {
        return ingest_mqtt(cx, conn, data);
    };
    let mut flow = Flow::Continue;
    let limits = Rc::clone(&conn.limits);
    let fed = decoder.feed(data, &limits.frame, |event| {
        let next = match event {
            WsEvent::Data(bytes) => ingest_mqtt(cx, conn, bytes),
            WsEvent::Ping(payload) => {
                if !matches!(conn.phase, Phase::HandingOff(_)) {
                    let mut pong = Vec::with_capacity(payload.len() + 2);
                    write_pong(payload, &mut pong);
                    cx.out.send(cx.id, Chunk::Owned(pong), Droppable::No);
                }
                Flow::Continue
            }
            WsEvent::Pong => Flow::Continue,
            WsEvent::Close { code, .. } => Flow::Close(CloseCause::WsClosedByPeer(code)),
        };
        match next {
            Flow::Continue => Ok(()),
            // Keep feeding: the rest of the buffer is kept in the pending bytes, for the owning
            // shard or for after the verdict.
            Flow::HandOff(_) | Flow::Verify | Flow::Throttle(_) | Flow::AwaitAcks => {
                flow = next;
                Ok(())
            }
            Flow::Close(_) => {
                flow = next;
                Err(())
            }
        }
    });
    conn.ws = Some(decoder);
    match fed {
        Ok(()) | Err(FeedError::Callback(())) => flow,
        Err(FeedError::Ws(error)) => Flow::Close(CloseCause::Ws(error)),
    }
}

/// Takes in MQTT stream bytes: decodes every complete packet, keeps a partial one.
fn ingest_mqtt(cx: &mut Ingest<'_>, conn: &mut Peer, bytes: &[u8]) -> Flow {
    if let Phase::HandingOff(_) | Phase::Verifying | Phase::FetchingSession = conn.phase {
        // The owning shard decodes, or this one once the verdict is in; bytes are only kept,
        // in order, until then.
        conn.pending.extend_from_slice(bytes);
        return Flow::Continue;
    }
    if conn.pending.is_empty() {
        let (flow, used) = decode_all(cx, conn, bytes);
        if matches!(
            flow,
            Flow::Continue | Flow::HandOff(_) | Flow::Verify | Flow::Throttle(_) | Flow::AwaitAcks
        ) {
            conn.pending.extend_from_slice(&bytes[used..]);
        }
        return flow;
    }
    let mut spill = std::mem::take(&mut conn.pending);
    spill.extend_from_slice(bytes);
    let (flow, used) = decode_all(cx, conn, &spill);
    spill.drain(..used);
    conn.pending = spill;
    flow
}

/// Decodes and dispatches the pending bytes alone: used when a handed-off connection arrives.
pub fn ingest_pending(cx: &mut Ingest<'_>, conn: &mut Peer) -> Flow {
    let spill = std::mem::take(&mut conn.pending);
    let (flow, used) = decode_all(cx, conn, &spill);
    let mut spill = spill;
    spill.drain(..used);
    conn.pending = spill;
    flow
}

/// Decodes packets from `bytes` until it runs out or the flow changes; returns how many bytes
/// were consumed. On a handoff, the CONNECT itself is not consumed: the owning shard reads it.
fn decode_all(cx: &mut Ingest<'_>, conn: &mut Peer, bytes: &[u8]) -> (Flow, usize) {
    let mut used = 0;
    loop {
        let version = match conn.phase {
            Phase::Connected(version) => Some(version),
            _ => None,
        };
        let (packet, len) = match decode(&bytes[used..], version, &conn.limits.decode) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => return (Flow::Continue, used),
            Err(error) => {
                match version {
                    None => refuse_connect(cx, conn.transport, &bytes[used..], error),
                    Some(ProtocolVersion::V5) => disconnect_v5(cx, conn.transport, error),
                    Some(_) => {}
                }
                return (Flow::Close(CloseCause::Decode(error)), used);
            }
        };
        let flow = dispatch(cx, conn, &packet);
        if let Flow::HandOff(_) | Flow::Verify | Flow::AwaitAcks = flow {
            return (flow, used);
        }
        used += len;
        if flow != Flow::Continue {
            return (flow, used);
        }
        if conn.phase == Phase::Closing {
            return (Flow::Continue, used);
        }
    }
}

fn dispatch(cx: &mut Ingest<'_>, conn: &mut Peer, packet: &Packet<'_>) -> Flow {
    match (conn.phase, packet) {
        (Phase::AwaitConnect, Packet::Connect(connect)) => {
            let owner = Broker::owner_shard(connect.client_id, cx.shard_count);
            // An empty client id gets an identifier assigned here, so it stays on this shard.
            if owner != cx.shard
                && !connect.client_id.is_empty()
                && let Ok(target) = u16::try_from(owner)
            {
                conn.phase = Phase::HandingOff(target);
                return Flow::HandOff(owner);
            }
            let identity = match conn.rare.as_mut().and_then(|rare| rare.session.take()) {
                Some(SessionWait::Answered { unavailable, .. }) if unavailable => {
                    info!(
                        "{}: CONNECT refused: its session did not come from the cluster in time",
                        conn.addr
                    );
                    // As `refuse_entry` does: later packets go to the broker while it closes.
                    conn.phase = Phase::Connected(connect.version);
                    cx.broker.refuse_connect(
                        cx.id,
                        conn.transport,
                        connect.version,
                        ReasonCode::SERVER_UNAVAILABLE,
                        cx.out,
                    );
                    return Flow::Continue;
                }
                Some(SessionWait::Answered {
                    identity, image, ..
                }) => {
                    if let Some(image) = image {
                        cx.broker.install_session(&image, cx.now, cx.out);
                    }
                    identity
                }
                _ => {
                    let identity = match admit(cx, conn, connect) {
                        Ok(identity) => identity,
                        Err(flow) => return flow,
                    };
                    if cx.broker.fetches_session(connect) {
                        // The CONNACK waits for the session from the cluster (`cluster.rs`).
                        let client_id: Box<str> = connect.client_id.into();
                        cx.out.session_fetches.push((cx.id, client_id.clone()));
                        let wait = SessionWait::Waiting {
                            client_id,
                            identity,
                        };
                        conn.rare_mut().session = Some(wait);
                        conn.phase = Phase::FetchingSession;
                        return Flow::Verify;
                    }
                    identity
                }
            };
            conn.phase = Phase::Connected(connect.version);
            // The bounds its CONNACK announces, from the same configuration.
            conn.limits = Rc::clone(cx.wire_limits);
            // With `identity_as_username` the client certificate names the user.
            let connect = Connect {
                username: conn.identity().or(connect.username),
                ..connect.clone()
            };
            cx.broker
                .connect(cx.id, conn.transport, &connect, cx.now, cx.out);
            if let Some(identity) = identity {
                let expires_in = identity.expires_at.map(seconds_until);
                cx.broker
                    .set_identity(cx.id, Arc::new(identity), expires_in);
            }
            Flow::Continue
        }
        (Phase::Connected(_), Packet::Publish(_))
            if cx.broker.acks_waiting_of(cx.id) >= cx.config.limits.inbound_qos2_max =>
        {
            Flow::AwaitAcks
        }
        (Phase::Connected(version), Packet::Publish(publish)) => {
            let within = within_rate(cx, conn, publish.payload.len() + publish.topic.len());
            match within {
                Err(_) if cx.config.limits.disconnect_on_rate && version == ProtocolVersion::V5 => {
                    cx.broker.disconnect_for_rate(cx.id, cx.now, cx.out);
                    Flow::Continue
                }
                Err(until) => {
                    cx.broker.packet(cx.id, packet, cx.now, cx.out);
                    Flow::Throttle(until)
                }
                Ok(()) => {
                    cx.broker.packet(cx.id, packet, cx.now, cx.out);
                    Flow::Continue
                }
            }
        }
        (Phase::Connected(_), packet) => {
            cx.broker.packet(cx.id, packet, cx.now, cx.out);
            Flow::Continue
        }
        // The decoder accepts only CONNECT before the version is known.
        _ => Flow::Continue,
    }
}

/// The door: who the CONNECT's credentials prove the client to be (`None`: anonymous), or
/// the flow when it is refused or must wait for a verifier.
fn admit(
    cx: &mut Ingest<'_>,
    conn: &mut Peer,
    connect: &Connect<'_>,
) -> Result<Option<Identity>, Flow> {
    let verified = conn.rare.as_mut().and_then(|rare| rare.verified.take());
    let identity = match verified {
        Some(Verified::Accepted(identity)) => Some(identity),
        Some(Verified::Refused) => {
            let refusal = Refusal::BadCredentials("unknown user or wrong password");
            refuse_entry(cx, conn, connect.version, refusal);
            return Err(Flow::Continue);
        }
        None => {
            let certificate_user = conn.identity();
            let entry = cx.auth.judge(
                cx.id,
                certificate_user,
                connect.username,
                connect.password,
                cx.now,
            );
            match entry {
                Entry::Accept(identity) => identity,
                Entry::Pending => {
                    conn.phase = Phase::Verifying;
                    return Err(Flow::Verify);
                }
                Entry::Refuse(refusal) => {
                    refuse_entry(cx, conn, connect.version, refusal);
                    return Err(Flow::Continue);
                }
            }
        }
    };
    if let Some(will) = &connect.will
        && !cx
            .auth
            .policy()
            .may_publish(identity.as_ref(), connect.client_id, will.topic)
    {
        let refusal = Refusal::NotAuthorized("a will on a topic the client may not publish to");
        refuse_entry(cx, conn, connect.version, refusal);
        return Err(Flow::Continue);
    }
    Ok(identity)
}

/// Takes a publish of about `bytes` from the connection's allowance; `Err` says until when
/// it may not be read. (Topic and payload stand for the packet: the header's few bytes do not
/// change what a rate limit is for.)
fn within_rate(cx: &Ingest<'_>, conn: &mut Peer, bytes: usize) -> Result<(), Instant> {
    let limits = RateLimits {
        messages_per_s: cx.config.limits.publish_rate_max,
        bytes_per_s: cx.config.limits.publish_bytes_rate_max,
    };
    let now = cx.now;
    conn.rare_mut()
        .publish_rate
        .get_or_insert_with(|| PublishRate::new(limits, now))
        .take(limits, bytes, now)
        .map_err(|wait| now + wait)
}

/// From now to `unix_s` on the wall clock (zero once past), for a token's expiry.
fn seconds_until(unix_s: u64) -> Duration {
    let target = UNIX_EPOCH + Duration::from_secs(unix_s);
    target
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

/// A CONNECT the door refused: its CONNACK and one log line, then the close.
pub fn refuse_entry(
    cx: &mut Ingest<'_>,
    conn: &mut Peer,
    version: ProtocolVersion,
    refusal: Refusal,
) {
    info!("{}: CONNECT refused: {}", conn.addr, refusal.reason());
    // As for the broker's own refusals: later packets go to the broker, which no longer knows
    // the connection, while its close runs.
    conn.phase = Phase::Connected(version);
    let reason = match refusal {
        Refusal::BadCredentials(_) => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        Refusal::NotAuthorized(_) => ReasonCode::NOT_AUTHORIZED,
        Refusal::Busy => ReasonCode::SERVER_BUSY,
    };
    cx.broker
        .refuse_connect(cx.id, conn.transport, version, reason, cx.out);
}

/// Answers a CONNECT the codec rejected, when the spec gives an answer. A CONNECT whose
/// protocol level reads 5 gets an MQTT 5 CONNACK with the error's reason code
/// ([MQTT-3.2.2-8], §4.13.1); an earlier level gets the 3.1.1 return code the spec gives for
/// the error, if any ([MQTT-3.1.2-2]: unacceptable protocol level → 0x01), then the close.
fn refuse_connect(cx: &mut Ingest<'_>, transport: Transport, bytes: &[u8], error: DecodeError) {
    let reason = error.reason_code();
    let mut properties = PropertiesBuf::new();
    properties.push(Property::ReasonString(error.description()));
    let (version, connack) = if connect_level(bytes) == Some(ProtocolVersion::V5.level())
        && reason.is_valid_for(ReasonCodeOf::ConnAck)
    {
        let connack = ConnAck {
            session_present: false,
            reason,
            properties: properties.as_properties(),
        };
        (ProtocolVersion::V5, connack)
    } else {
        let Some(code) = error.connack_code() else {
            return;
        };
        (ProtocolVersion::V311, ConnAck::new(false, code))
    };
    send_framed(cx, transport, version, &Packet::ConnAck(connack));
}

/// An MQTT 5 connection sent a packet the codec rejected: DISCONNECT with the error's reason
/// code before the close (§4.13.2, [MQTT-4.13.2-1]).
fn disconnect_v5(cx: &mut Ingest<'_>, transport: Transport, error: DecodeError) {
    let reason = error.reason_code();
    if !reason.is_valid_for(ReasonCodeOf::Disconnect) {
        return;
    }
    // The Reason String names the broken rule, for the client's developer (§3.14.2.2.3).
    let mut properties = PropertiesBuf::new();
    properties.push(Property::ReasonString(error.description()));
    let disconnect = Packet::Disconnect(Disconnect {
        reason,
        properties: properties.as_properties(),
    });
    send_framed(cx, transport, ProtocolVersion::V5, &disconnect);
}

fn send_framed(
    cx: &mut Ingest<'_>,
    transport: Transport,
    version: ProtocolVersion,
    packet: &Packet<'_>,
) {
    let bytes = crate::broker::reply::frame(packet, version, transport);
    cx.out.send(cx.id, Chunk::Owned(bytes), Droppable::No);
}

/// Where the WebSocket listener answers with every shard's counters, with `http_metrics` on
/// (off by default: the operations listener serves them, `crate::admin`).
const METRICS_PATH: &str = "/metrics";

thread_local! {
    /// The files this shard serves, with its own cache: shard-local like the rest of its
    /// state, and built on the first plain HTTP request.
    static SITE: std::cell::RefCell<Option<Site>> = const { std::cell::RefCell::new(None) };
}

/// The client a request relayed by a trusted proxy names in `Forwarded` or `X-Forwarded-For`
/// (`protocol/forwarded.rs`), to be the connection's address from then on (see
/// [`Peer::proxied_for`]); `None` when the request comes from the client itself. `addr` is the
/// one a PROXY header gave, if any, so the proxy that sends the fields must be trusted too.
/// The fields are read without the client's port: it is 0.
fn forwarded_client_of(
    cx: &Ingest<'_>,
    addr: SocketAddr,
    head: &RequestHead<'_>,
) -> Option<SocketAddr> {
    let trusted = &cx.config.trusted_proxies;
    let client = forwarded_client(head, addr.ip(), |address| trusted.contains(address));
    if client == addr.ip() {
        return None;
    }
    debug!("{addr}: forwarded for {client}");
    Some(SocketAddr::new(client.to_canonical(), 0))
}

/// Refusals of an upgrade that a static file may answer instead: a GET for another path, a
/// GET of the upgrade path without upgrade headers, and a HEAD (the upgrade takes only GET).
fn may_serve_file(error: HandshakeError) -> bool {
    matches!(
        error,
        HandshakeError::NotFound | HandshakeError::UpgradeRequired | HandshakeError::MethodNotGet
    )
}

/// Answers a plain HTTP request with the metrics, the built-in assets or a file of `http_dir`,
/// then closes; falls back to the upgrade's own refusal when nothing is served at the path.
fn serve_file(cx: &mut Ingest<'_>, request: &RequestHead<'_>, refusal: HandshakeError) -> Flow {
    let reply = if cx.config.http_metrics && is_metrics_path(request.target) {
        let asset = http::response::Asset::new(metrics::CONTENT_TYPE, cx.metrics.render().into());
        Some(http::response::reply_with(&asset, request))
    } else {
        SITE.with(|site| {
            let mut site = site.borrow_mut();
            let site = site.get_or_insert_with(|| Site::new(cx.config.site()));
            site.respond(request, cx.now)
        })
    };
    // Nothing at the path: a plain request for a missing file is an HTTP 404 (and logged as
    // one); only a GET of the upgrade path without its headers is a refused upgrade.
    let reply = match reply {
        Some(reply) => reply,
        None if request.method == Method::Get && refusal != HandshakeError::NotFound => {
            return Flow::Close(CloseCause::Handshake(refusal));
        }
        None => http::response::reply_status(404, request.method),
    };
    cx.out.send(cx.id, Chunk::Owned(reply.head), Droppable::No);
    if let Some(body) = reply.body {
        cx.out.send(cx.id, Chunk::Shared(body), Droppable::No);
    }
    Flow::Close(CloseCause::HttpServed(reply.status))
}

/// `/metrics`, with or without a query string (scrapers may add one).
fn is_metrics_path(target: &[u8]) -> bool {
    let path = target.split(|&b| b == b'?').next().unwrap_or(target);
    path == METRICS_PATH.as_bytes()
}

/// The protocol level byte of the CONNECT at the start of `bytes`, if that much of it is
/// there: type byte, remaining length (1 to 4 bytes), protocol name (a 2-byte length and the
/// name), then the level (MQTT 5 §3.1.2.2).
fn connect_level(bytes: &[u8]) -> Option<u8> {
    if bytes.first()? >> 4 != 1 {
        return None;
    }
    let mut at = 1;
    loop {
        let byte = *bytes.get(at)?;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return None;
        }
    }
    let name_len = usize::from(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]));
    bytes.get(at + 2 + name_len).copied()
}

#[cfg(test)]
mod tests {
    use super::connect_level;

    #[test]
    fn connect_level_reads_the_level_byte() {
        // CONNECT, remaining length 16, "MQTT", level 5, ...
        let v5 = [
            0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(connect_level(&v5), Some(5));
        let v31 = [
            0x10, 0x80, 0x01, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3,
        ];
        assert_eq!(connect_level(&v31), Some(3));
        assert_eq!(connect_level(&v5[..5]), None);
        assert_eq!(connect_level(&[0x30, 0]), None);
        assert_eq!(connect_level(&[0x10, 0xff, 0xff, 0xff, 0xff, 0]), None);
    }
}
