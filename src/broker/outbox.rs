//! What the broker asks the network layer to do: the boundary between sans-IO state and sockets.
//!
//! The broker never touches a socket. Every call into it takes an `&mut Outbox`, appends what
//! must happen, and the shard's event loop carries it out after the call returns.

use std::rc::Rc;
use std::sync::Arc;

use crate::protocol::mqtt::QoS;

/// A connection as the network layer names it. Opaque to the broker; never reused while the
/// broker may still refer to it (the network layer puts a generation in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// How a connection's bytes are framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    /// Each outgoing MQTT packet travels in one binary WebSocket frame (server frames are not
    /// masked, RFC 6455 §5.1), so framed bytes are identical for every WebSocket subscriber.
    Ws,
}

/// Bytes ready for the wire, transport framing included.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Encoded once and shared by every subscriber of the same wire variant on this shard.
    Shared(Rc<[u8]>),
    /// Specific to one connection (acks, or a publish with this subscriber's packet id).
    Owned(Vec<u8>),
}

impl Chunk {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Shared(bytes) => bytes,
            Chunk::Owned(bytes) => bytes,
        }
    }
}

/// Whether the network layer may drop a chunk when the connection's queue is over
/// `queue_bytes_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Droppable {
    /// A QoS 0 publish: losing it is allowed by the protocol.
    Yes,
    /// Acks, QoS 1/2 publishes, CONNACK, ...: if it cannot be queued the connection is closed.
    No,
}

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
}

/// A publish leaving its shard: owned, immutable, shared by every shard that receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedMessage {
    pub topic: Box<str>,
    pub payload: Box<[u8]>,
    pub qos: QoS,
    pub retain: bool,
}

#[derive(Debug, Default)]
pub struct Outbox {
    /// Bytes to append to a connection's send queue, in order.
    pub sends: Vec<(ConnId, Chunk, Droppable)>,
    /// Connections to close once what was queued for them before is sent.
    pub closes: Vec<(ConnId, CloseReason)>,
    /// Publishes every other shard must also deliver (and apply to its retained replica).
    pub to_other_shards: Vec<Arc<RoutedMessage>>,
}

impl Outbox {
    pub fn send(&mut self, conn: ConnId, chunk: Chunk, droppable: Droppable) {
        self.sends.push((conn, chunk, droppable));
    }

    pub fn close(&mut self, conn: ConnId, reason: CloseReason) {
        self.closes.push((conn, reason));
    }

    pub fn is_empty(&self) -> bool {
        self.sends.is_empty() && self.closes.is_empty() && self.to_other_shards.is_empty()
    }
}
