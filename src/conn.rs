//! A connection as the broker and the network layer both name it, and what the broker queues
//! on it: its id, its framing, bytes ready for the wire, and whether they may be dropped when the
//! peer reads too slowly.
//!
//! The nouns of the boundary between `broker/` (which decides what to send) and `net/` (which
//! sends it). Neither side owns them, so neither has to import the other.

use std::num::NonZeroU64;
use std::rc::Rc;

use crate::protocol::mqtt::PacketId;

/// A connection as the network layer names it: the index of its slot in the shard's
/// connection table (low 32 bits) and how many times that slot was used (the high bits), so an
/// id is never reused while the broker may still refer to it.
///
/// The lowest free slot is reused first ([`Slots`](crate::slots::Slots)), so indices are dense:
/// the broker indexes its own table of connections by them too. Generations wrap at 24 bits,
/// so an id fits in the 56 payload bits of an io_uring `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    pub const fn new(index: u32, generation: u32) -> ConnId {
        ConnId((generation as u64) << 32 | index as u64)
    }

    /// The slot in the network layer's connection table.
    pub const fn index(self) -> usize {
        (self.0 & 0xFFFF_FFFF) as usize
    }

    pub const fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

impl crate::slots::SlotKey for ConnId {
    fn from_parts(index: u32, generation: u32) -> ConnId {
        ConnId::new(index, generation)
    }

    fn index(self) -> usize {
        ConnId::index(self)
    }

    fn generation(self) -> u32 {
        ConnId::generation(self)
    }
}

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
    /// Specific to one connection (acks, CONNACK, close frames).
    Owned(Vec<u8>),
    /// A QoS 1/2 publish: the shared encoding of its wire variant with this subscriber's
    /// packet identifier in place of the two bytes at `id_offset`. Sent as three iovecs
    /// (before, identifier, after), so no subscriber gets a copy of the payload.
    SharedWithId {
        template: Rc<[u8]>,
        id_offset: u32,
        id: PacketId,
    },
}

impl Chunk {
    /// Length on the wire.
    pub fn len(&self) -> usize {
        match self {
            Chunk::Shared(bytes) => bytes.len(),
            Chunk::Owned(bytes) => bytes.len(),
            Chunk::SharedWithId { template, .. } => template.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes as up to three slices, in wire order; `id` holds the identifier's bytes
    /// for [`Chunk::SharedWithId`].
    pub fn parts<'a>(&'a self, id: &'a mut [u8; 2]) -> [&'a [u8]; 3] {
        *id = self.id_bytes();
        self.parts_around(id)
    }

    /// The bytes of the packet identifier of a [`Chunk::SharedWithId`] (zeros otherwise).
    pub fn id_bytes(&self) -> [u8; 2] {
        match self {
            Chunk::SharedWithId { id, .. } => id.get().to_be_bytes(),
            Chunk::Shared(_) | Chunk::Owned(_) => [0; 2],
        }
    }

    /// [`Chunk::parts`] with the identifier's bytes already in `id` ([`Chunk::id_bytes`]), so
    /// that the slices of several chunks can be held at once.
    pub fn parts_around<'a>(&'a self, id: &'a [u8; 2]) -> [&'a [u8]; 3] {
        match self {
            Chunk::Shared(bytes) => [bytes, &[], &[]],
            Chunk::Owned(bytes) => [bytes, &[], &[]],
            Chunk::SharedWithId {
                template,
                id_offset,
                ..
            } => {
                let offset = *id_offset as usize;
                [&template[..offset], &id[..], &template[offset + 2..]]
            }
        }
    }

    /// The bytes in one buffer (tests and diagnostics; the send path uses [`Chunk::parts`]).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut id = [0; 2];
        self.parts(&mut id).concat()
    }
}

/// Names the topic of a QoS 0 publish for conflation: a 64-bit FNV-1a hash of the topic name.
/// Two topics share a key with probability ~n²/2⁶⁵ (10⁻¹³ for a thousand topics); the only
/// effect of a collision is that one topic's unsent publish replaces the other's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopicKey(pub NonZeroU64);

impl TopicKey {
    pub fn of(topic: &str) -> TopicKey {
        const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let hash = topic.bytes().fold(OFFSET_BASIS, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        });
        TopicKey(NonZeroU64::new(hash).unwrap_or(NonZeroU64::MIN))
    }
}

/// Whether the network layer may drop a chunk when the connection's queue is over
/// `queue_bytes_max`, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Droppable {
    /// A QoS 0 publish: losing it is allowed by the protocol. `on_full` is the policy of the
    /// first `[[policy]]` filter its topic matches; `None` leaves it to the listener's.
    Yes {
        topic: TopicKey,
        on_full: Option<SlowConsumer>,
    },
    /// Acks, QoS 1/2 publishes, CONNACK, ...: if it cannot be queued the connection is closed.
    No,
}

/// What happens to a QoS 0 publish for a connection whose send queue already holds
/// `queue_bytes_max`: the peer reads more slowly than messages arrive. Configured per listener
/// (`tcp_slow_consumer`, `ws_slow_consumer`) and per topic filter (`[[policy]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowConsumer {
    /// Drop the oldest queued QoS 0 publishes until the new one fits: a reader that fell
    /// behind skips ahead to the newest messages.
    DropOldest,
    /// Drop the new publish: the reader gets the oldest messages it has not read yet.
    DropNewest,
    /// Keep only the latest unsent publish per topic: every queued publish superseded by a
    /// later one of its topic (the new one included) is removed; if the new one still does
    /// not fit, the oldest go. A browser that fell behind jumps to the newest score of every
    /// match.
    Conflate,
    /// Close the connection (WebSocket close code 1008).
    Disconnect,
}

impl SlowConsumer {
    pub const fn name(self) -> &'static str {
        match self {
            SlowConsumer::DropOldest => "drop-oldest",
            SlowConsumer::DropNewest => "drop-newest",
            SlowConsumer::Conflate => "conflate",
            SlowConsumer::Disconnect => "disconnect",
        }
    }
}
