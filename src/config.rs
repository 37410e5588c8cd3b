//! Configuration: where to listen, how many shards, and every bound the broker enforces.
//!
//! Every limit is a named field with a default, a comment saying why, and its unit in the name.
//! `0` never means "unlimited": a limit is always a limit.

use std::net::SocketAddr;

/// Every bound the broker enforces on what peers control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest MQTT packet accepted, fixed header included. Limits the spill allocation a
    /// peer controls; checked on the fixed header before the body is read.
    pub packet_bytes_max: u32,
    /// Longest topic name or filter, in bytes. The spec allows 65 535; a live-score topic is
    /// tens of bytes, and every byte is stored per subscription.
    pub topic_bytes_max: u16,
    /// Most levels in a topic name or filter: bounds the trie walk per publish.
    pub topic_levels_max: u16,
    /// Longest client identifier, in bytes.
    pub client_id_bytes_max: u16,
    /// Most subscriptions one session may hold: bounds the trie memory a client controls.
    pub subscriptions_per_session_max: u32,
    /// Most outgoing QoS 1/2 publishes awaiting acknowledgement per session.
    pub inflight_max: u16,
    /// Most incoming QoS 2 publishes awaiting PUBREL per session.
    pub inbound_qos2_max: u16,
    /// Bytes of QoS 1/2 messages queued for a session that is offline or whose in-flight window
    /// is full. Past it, the oldest queued message is dropped and counted.
    pub session_queue_bytes_max: u64,
    /// Bytes waiting to be sent on one connection. QoS 0 publishes past it are dropped and
    /// counted, so a stalled reader cannot grow the broker's memory.
    pub queue_bytes_max: u64,
    /// Most retained messages held (each shard holds a replica).
    pub retained_messages_max: u32,
    /// Largest WebSocket frame payload accepted (close 1009 past it).
    pub ws_frame_bytes_max: u32,
    /// Largest HTTP upgrade request, in bytes (400 past it).
    pub ws_handshake_bytes_max: u32,
    /// Time from accept to a complete WebSocket upgrade request.
    pub ws_handshake_timeout_ms: u32,
    /// Time from accept (or upgrade) to a complete CONNECT packet.
    pub connect_timeout_ms: u32,
    /// Most connections one shard serves; accepts past it are closed at once.
    pub connections_per_shard_max: u32,
    /// Messages buffered from one shard to another before the sender holds back.
    pub cross_shard_queue_len_max: u32,
    /// Persistent sessions kept per shard while their clients are away.
    pub offline_sessions_per_shard_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            packet_bytes_max: 1024 * 1024,
            topic_bytes_max: 1024,
            topic_levels_max: 32,
            client_id_bytes_max: 256,
            subscriptions_per_session_max: 1024,
            inflight_max: 32,
            inbound_qos2_max: 64,
            session_queue_bytes_max: 1024 * 1024,
            queue_bytes_max: 1024 * 1024,
            retained_messages_max: 100_000,
            ws_frame_bytes_max: 1024 * 1024 + 16,
            ws_handshake_bytes_max: 8 * 1024,
            ws_handshake_timeout_ms: 10_000,
            connect_timeout_ms: 10_000,
            connections_per_shard_max: 20_000,
            cross_shard_queue_len_max: 65_536,
            offline_sessions_per_shard_max: 100_000,
        }
    }
}
