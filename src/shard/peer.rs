//! One connection as the shard sees it: where its byte stream is (HTTP upgrade, CONNECT,
//! connected, handing off, closing), the decoding state that survives between receives, and
//! why it closes. The socket and its send queue are `net/`'s ([`crate::net::io`]).
//!
//! Memory budget of an idle connection on x86-64, field by field (checked by a test below):
//!
//! | field | bytes | note |
//! |---|---|---|
//! | `addr` | 32 | `SocketAddr` |
//! | `phase`, `transport`, flags (`sealed`, `slow_logged`) | 8 | the handoff target is a `u16` |
//! | `pending` | 24 | an empty `Vec`: no allocation while idle |
//! | `ws` | 8 | boxed `FrameDecoder` (56 B on the heap) on WebSocket listeners only |
//! | `rare` | 8 | boxed: since when it closes, its TLS client identity |
//! | `limits` | 8 | its decoding bounds, shared by the connections of one configuration |
//! | **`Peer`** | **88** | |
//! | the socket beside it (`net/io.rs`) | 80 | send queue 64, descriptor and flags 8, TLS layer 8 (boxed, TLS listeners only) |
//! | **slot** | **176** | with its generation, in the connection table (`slots.rs`) |
//!
//! Heap held while idle: the WebSocket decoder (56 B; its 125-B buffer for control payloads
//! comes with the first ping or close frame that carries one) and the send queue's ring of
//! 40-B entries: one entry until two chunks wait at once, then at most 4 kept once drained (so
//! a connection receiving one message per turn never allocates). The receive buffer is lent by
//! the shard's buffer ring only while bytes are being read; the `msghdr` and iovecs of a send
//! come from the shard's send pool only while the send is in flight. Next to it: the kernel's
//! ≈ 3.7 KB socket and ≈ 0.9 KB armed multishot receive, and the broker's session (client
//! identifier, subscription, trie node, 512 B; see `broker/session.rs`).

use super::address_book::AddressRefusal;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use crate::broker::CloseReason;
use crate::config::Limits;
use crate::conn::Transport;
use crate::net::preamble::PreambleRefusal;
use crate::protocol::mqtt::{DecodeError, DecodeLimits, ProtocolVersion};
use crate::protocol::ws::frame::{FrameDecoder, FrameLimits, WsError};
use crate::protocol::ws::handshake::HandshakeError;
use crate::tls::TlsFailure;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// WebSocket listener: reading the HTTP upgrade request.
    WsHandshake,
    /// Waiting for CONNECT.
    AwaitConnect,
    Connected(ProtocolVersion),
    /// CONNECT names a session that shard `0` owns: collecting bytes until the receive ends,
    /// then the socket moves there. (A `u16`: shards are at most 1 024, and a smaller phase
    /// leaves room for the connection's flags within its budget.)
    HandingOff(u16),
    /// A verifier checks the CONNECT's password: nothing is read meanwhile, and the CONNECT
    /// waits in the pending bytes.
    Verifying,
    /// In cluster mode, the CONNECT resumes a session another node may hold: nothing is read
    /// until the cluster answers (`cluster.rs`), and the CONNECT waits in the pending bytes.
    FetchingSession,
    /// Nothing more is read; what is queued is sent, then the socket closes.
    Closing,
}

/// Why a connection ended, for the one log line it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    Broker(CloseReason),
    PeerClosed,
    /// A receive or send failed with this errno.
    NetworkError(i32),
    Decode(DecodeError),
    Ws(WsError),
    /// The client sent a WebSocket close frame with this code.
    WsClosedByPeer(Option<u16>),
    Handshake(HandshakeError),
    /// The TLS layer failed (handshake or record); its alert went out first.
    Tls(TlsFailure),
    /// The first bytes on a listener with the PROXY protocol on were refused: a header from
    /// an untrusted source, or none (or a bad one) from a trusted proxy.
    Preamble(PreambleRefusal),
    /// The client's real address, named by a PROXY header or `Forwarded`, is over a
    /// per-address limit.
    Address(AddressRefusal),
    /// A plain HTTP request on the WebSocket listener was answered with this status.
    HttpServed(u16),
    HandshakeTimeout,
    ConnectTimeout,
    /// The peer stopped reading and the send queue hit twice `queue_bytes_max`.
    SendQueueOverflow,
    /// The handoff queue to the owning shard was full.
    HandoffFailed,
    Shutdown,
}

impl CloseCause {
    /// Causes worth a line at `info`: something went wrong with or for this client. Orderly
    /// ends are logged at `debug`.
    pub const fn is_error(self) -> bool {
        !matches!(
            self,
            CloseCause::PeerClosed
                | CloseCause::Broker(CloseReason::ClientDisconnected)
                | CloseCause::Broker(CloseReason::ServerShutdown)
                | CloseCause::WsClosedByPeer(_)
                | CloseCause::HttpServed(_)
                | CloseCause::Shutdown
        )
    }

    /// The WebSocket close code sent before closing (RFC 6455 §7.4.1); `None` when the peer is
    /// gone and nothing can be sent.
    pub const fn ws_close_code(self) -> Option<u16> {
        match self {
            CloseCause::PeerClosed | CloseCause::NetworkError(_) | CloseCause::HandoffFailed => {
                None
            }
            CloseCause::Handshake(_)
            | CloseCause::HandshakeTimeout
            | CloseCause::Tls(_)
            | CloseCause::Preamble(_)
            | CloseCause::Address(_) => None,
            CloseCause::HttpServed(_) => None,
            CloseCause::Ws(error) => Some(error.close_code()),
            CloseCause::WsClosedByPeer(_) => Some(1000),
            CloseCause::Decode(_)
            | CloseCause::Broker(CloseReason::ProtocolViolation(_))
            | CloseCause::Broker(CloseReason::Refused(..)) => Some(1002),
            CloseCause::Broker(CloseReason::ServerShutdown) | CloseCause::Shutdown => Some(1001),
            CloseCause::SendQueueOverflow | CloseCause::Broker(CloseReason::SlowConsumer) => {
                Some(1008)
            }
            CloseCause::Broker(_) | CloseCause::ConnectTimeout => Some(1000),
        }
    }
}

impl std::fmt::Display for CloseCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseCause::Broker(CloseReason::ConnectRefused) => f.write_str("CONNECT refused"),
            CloseCause::Broker(CloseReason::SessionTakenOver) => {
                f.write_str("session taken over by a new connection with the same client id")
            }
            CloseCause::Broker(CloseReason::KeepAliveTimeout) => f.write_str("keep-alive timeout"),
            CloseCause::Broker(CloseReason::ProtocolViolation(why)) => {
                write!(f, "protocol violation: {why}")
            }
            CloseCause::Broker(CloseReason::Refused(reason, why)) => {
                write!(f, "{why} (reason code {:#04x})", reason.0)
            }
            CloseCause::Broker(CloseReason::SlowConsumer) => f.write_str(
                "QoS 1/2 publishes unacknowledged past inflight_max and session_queue_bytes_max",
            ),
            CloseCause::Broker(CloseReason::ClientDisconnected) => {
                f.write_str("client sent DISCONNECT")
            }
            CloseCause::Broker(CloseReason::ServerShutdown) | CloseCause::Shutdown => {
                f.write_str("server shutting down")
            }
            CloseCause::PeerClosed => f.write_str("peer closed the connection"),
            CloseCause::NetworkError(errno) => write!(
                f,
                "network error: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            CloseCause::Decode(error) => {
                write!(f, "malformed MQTT packet: {}", error.description())
            }
            CloseCause::Ws(error) => write!(
                f,
                "WebSocket error {}: {}",
                error.close_code(),
                error.description()
            ),
            CloseCause::WsClosedByPeer(Some(code)) => {
                write!(f, "WebSocket closed by peer with code {code}")
            }
            CloseCause::WsClosedByPeer(None) => f.write_str("WebSocket closed by peer"),
            CloseCause::Tls(failure) => write!(f, "TLS: {failure}"),
            CloseCause::Preamble(refusal) => write!(f, "PROXY protocol: {refusal}"),
            CloseCause::Address(refusal) => f.write_str(refusal.description()),
            CloseCause::Handshake(error) => {
                write!(
                    f,
                    "WebSocket upgrade refused with {}: {}",
                    error.status(),
                    error.reason()
                )
            }
            CloseCause::HttpServed(status) => write!(f, "HTTP request answered {status}"),
            CloseCause::HandshakeTimeout => {
                f.write_str("no complete WebSocket upgrade request in time")
            }
            CloseCause::ConnectTimeout => f.write_str("no CONNECT in time"),
            CloseCause::SendQueueOverflow => {
                f.write_str("peer stopped reading: send queue over its limit")
            }
            CloseCause::HandoffFailed => {
                f.write_str("could not hand the connection to its session's shard")
            }
        }
    }
}

/// What only some connections have, boxed in [`Peer`] so that the others do not pay for it.
#[derive(Debug, Clone, Default)]
pub struct Rare {
    /// When its close began, once it is closing: past `CLOSE_LINGER` it is cut.
    pub closing_since: Option<Instant>,
    /// When its last words were all sent and its write side shut, if it lingers: what the
    /// peer still sends is read and dropped until it closes or `close_linger_ms` passes.
    pub lingering_since: Option<Instant>,
    /// The name its TLS client certificate gives it, with `identity_as_username`.
    pub identity: Option<Box<str>>,
    /// What a verifier said about the CONNECT's password, for the CONNECT read again then.
    pub verified: Option<Verified>,
    /// In cluster mode: the session its CONNECT waits for from the cluster, or found.
    pub session: Option<SessionWait>,
    /// Its publish allowance, once it publishes under `publish_rate_max` or
    /// `publish_bytes_rate_max`.
    pub publish_rate: Option<super::publish_rate::PublishRate>,
}

/// A CONNECT admitted and waiting for its session from another node, or with its answer.
#[derive(Debug, Clone)]
pub enum SessionWait {
    Waiting {
        client_id: Box<str>,
        identity: Option<crate::auth::Identity>,
    },
    /// Read again with the session found (`None`: a new one) and who the client proved to be;
    /// `unavailable` when the cluster did not answer in time (the CONNECT is refused).
    Answered {
        identity: Option<crate::auth::Identity>,
        image: Option<Box<crate::broker::SessionImage>>,
        unavailable: bool,
    },
}

/// A verifier's verdict on a CONNECT's password.
#[derive(Debug, Clone)]
pub enum Verified {
    Accepted(crate::auth::Identity),
    Refused,
}

/// The bounds a connection's bytes are decoded with. A connection keeps those in force at its
/// CONNECT: an MQTT 5 client was told the Maximum Packet Size in CONNACK, and is held to no
/// less, whatever a reload lowers it to. Shared by every connection of one configuration.
#[derive(Debug, PartialEq, Eq)]
pub struct WireLimits {
    pub decode: DecodeLimits,
    pub frame: FrameLimits,
}

impl WireLimits {
    pub fn new(limits: &Limits) -> WireLimits {
        WireLimits {
            decode: limits.decode_limits(),
            frame: limits.frame_limits(),
        }
    }
}

pub struct Peer {
    pub addr: SocketAddr,
    pub transport: Transport,
    pub phase: Phase,
    /// Set once the last bytes (close frame, HTTP error) are queued: nothing may follow them.
    pub sealed: bool,
    /// The slow consumer policy dropped publishes for this peer, and that was logged once.
    pub slow_logged: bool,
    pub ws: Option<Box<FrameDecoder>>,
    /// Bytes kept between receives: before the upgrade, the HTTP request so far; then the MQTT
    /// bytes of a packet that straddles receive buffers (bounded by `packet_bytes_max`);
    /// during a handoff, every MQTT byte from CONNECT on.
    pub pending: Vec<u8>,
    pub rare: Option<Box<Rare>>,
    /// Taken from the shard at accept, and again at CONNECT.
    pub limits: Rc<WireLimits>,
}

impl Peer {
    pub fn new(addr: SocketAddr, transport: Transport, limits: Rc<WireLimits>) -> Peer {
        let (phase, ws) = match transport {
            Transport::Tcp => (Phase::AwaitConnect, None),
            Transport::Ws => (Phase::WsHandshake, Some(Box::new(FrameDecoder::new()))),
        };
        Peer {
            addr,
            transport,
            phase,
            sealed: false,
            slow_logged: false,
            ws,
            pending: Vec::new(),
            rare: None,
            limits,
        }
    }

    /// The client behind a proxy is `client`: from now on it is the connection's address, in
    /// its log lines and to every check that reads the address. A mapped IPv4 address is
    /// written as IPv4, as the listeners' own addresses are.
    pub fn proxied_for(&mut self, client: SocketAddr) {
        self.addr = SocketAddr::new(client.ip().to_canonical(), client.port());
    }

    /// The rare part, made when first needed.
    pub fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    pub fn identity(&self) -> Option<&str> {
        self.rare.as_ref()?.identity.as_deref()
    }

    /// Whether the shard still reads the connection: not once it is closing or moving to
    /// another shard.
    pub fn reads(&self) -> bool {
        matches!(
            self.phase,
            Phase::WsHandshake | Phase::AwaitConnect | Phase::Connected(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// The budget in the module documentation, checked field by field.
    #[test]
    fn an_idle_peer_fits_its_budget() {
        assert!(size_of::<SocketAddr>() <= 32);
        assert!(size_of::<Phase>() <= 4);
        assert!(size_of::<Option<Box<FrameDecoder>>>() <= 8);
        assert!(size_of::<Option<Box<Rare>>>() <= 8);
        assert_eq!(size_of::<Peer>(), 88);
        assert!(size_of::<FrameDecoder>() <= 56);
        assert!(size_of::<crate::conn::Chunk>() <= 32);
        assert_eq!(crate::net::io::slot_bytes::<Peer>(), 176);
    }
}
