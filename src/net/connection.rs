//! One client connection as the event loop holds it.
//!
//! Memory budget of an idle connection on x86-64, field by field (checked by a test below):
//!
//! | field | bytes | note |
//! |---|---|---|
//! | `fd` | 4 | |
//! | `peer` | 32 | `SocketAddr` |
//! | `transport`, flags (`recv_armed`, `recv_cancel_sent`, `sealed`, `fixed`) | 5 | packed into padding |
//! | `phase` | 8 | the handoff target is a `u16` |
//! | `request`, `spill` | 2 × 24 | empty `Vec`s: no allocation while idle |
//! | `ws` | 8 | boxed `FrameDecoder` (56 B on the heap) on WebSocket listeners only |
//! | `out` (`SendQueue`) | 72 | `VecDeque` 32, sent/queued/in-flight counters 24, send buffer handle 16 |
//! | `close_cause`, `closing_since` | 24 + 16 | |
//! | `dropped_publishes` | 8 | |
//! | **struct** | **224** | 232 with its slot's generation in the connection table (`net/slots.rs`) |
//!
//! Heap held while idle: the WebSocket decoder (56 B; its 125-B buffer for control payloads
//! comes with the first ping or close frame that carries one) and the send queue's ring of
//! 40-B entries: one entry until two chunks wait at once, then at most 4 kept once drained (so
//! a connection receiving one message per turn never allocates) — 40 B for a subscriber that
//! only ever got its handshake response, CONNACK and SUBACK one by one, 160 B once it had a
//! backlog. The receive buffer is lent by the shard's buffer ring only while bytes are being
//! read; the `msghdr` and iovecs of a send come from the shard's send pool only while the send
//! is in flight. Total 328 B for an idle WebSocket subscriber (232 B slot, 56 B decoder, 40 B
//! queue ring), 272 B over TCP, next to the kernel's ≈ 3.7 KB socket and ≈ 0.9 KB armed
//! multishot receive; the broker's session (client identifier, subscription, trie node,
//! 544 B; see `broker/session.rs`) comes on top.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Instant;

use crate::broker::CloseReason;

use crate::conn::Transport;
use crate::net::send_queue::SendQueue;
use crate::protocol::mqtt::{DecodeError, ProtocolVersion};
use crate::protocol::ws::frame::{FrameDecoder, WsError};
use crate::protocol::ws::handshake::HandshakeError;

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
            CloseCause::Handshake(_) | CloseCause::HandshakeTimeout => None,
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

pub struct Connection {
    pub fd: OwnedFd,
    pub peer: SocketAddr,
    pub transport: Transport,
    pub phase: Phase,
    /// An incomplete HTTP upgrade request (WebSocket listener, before the upgrade).
    pub request: Vec<u8>,
    pub ws: Option<Box<FrameDecoder>>,
    /// MQTT bytes of a packet that straddles receive buffers; during a handoff, every MQTT byte
    /// from CONNECT on.
    pub spill: Vec<u8>,
    pub out: SendQueue,
    pub recv_armed: bool,
    pub recv_cancel_sent: bool,
    /// Set once the last bytes (close frame, HTTP error) are queued: nothing may follow them.
    pub sealed: bool,
    /// The socket is also in the ring's fixed-file table, at the slot of the connection's
    /// index; operations name it by slot.
    pub fixed: bool,
    /// Why the connection is closing, once it is.
    pub close_cause: Option<CloseCause>,
    pub closing_since: Option<Instant>,
    /// QoS 0 publishes dropped because this peer read too slowly.
    pub dropped_publishes: u64,
}

impl Connection {
    pub fn new(fd: OwnedFd, peer: SocketAddr, transport: Transport) -> Connection {
        let (phase, ws) = match transport {
            Transport::Tcp => (Phase::AwaitConnect, None),
            Transport::Ws => (Phase::WsHandshake, Some(Box::new(FrameDecoder::new()))),
        };
        Connection {
            fd,
            peer,
            transport,
            phase,
            request: Vec::new(),
            ws,
            spill: Vec::new(),
            out: SendQueue::new(),
            recv_armed: false,
            recv_cancel_sent: false,
            sealed: false,
            fixed: false,
            close_cause: None,
            closing_since: None,
            dropped_publishes: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// The budget in the module documentation, checked field by field.
    #[test]
    fn an_idle_connection_fits_its_budget() {
        assert!(size_of::<OwnedFd>() <= 4);
        assert!(size_of::<SocketAddr>() <= 32);
        assert!(size_of::<Phase>() <= 8);
        assert!(size_of::<Option<Box<FrameDecoder>>>() <= 8);
        assert!(size_of::<SendQueue>() <= 72);
        assert!(size_of::<Option<CloseCause>>() <= 24);
        assert!(size_of::<Option<Instant>>() <= 16);
        assert!(size_of::<Connection>() <= 224);
        assert_eq!(crate::slots::slot_bytes::<Connection>(), 232);
        assert!(size_of::<FrameDecoder>() <= 56);
        assert!(size_of::<crate::conn::Chunk>() <= 32);
    }
}
