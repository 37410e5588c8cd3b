//! An in-process fan-out rig: one `Broker`, a send queue per connection and the shard's send
//! pool, with the loop turn of `shard/mod.rs` reduced to what involves no socket: continue the
//! fan-out, append the outbox to the queues, start one send per dirty connection and complete
//! it at once. Shared by `tests/fanout_alloc.rs` and `benches/fanout.rs`.

#![allow(dead_code)]

use std::time::Instant;

use fanfare::broker::{Broker, Outbox};

use fanfare::config::Limits;
use fanfare::conn::SlowConsumer;
use fanfare::conn::{Chunk, ConnId, Transport};
use fanfare::net::send_buf::SendPool;
use fanfare::net::send_queue::SendQueue;
use fanfare::protocol::mqtt::{
    Ack, Connect, Delivery, Packet, PacketId, Properties, PropertiesBuf, Property, ProtocolVersion,
    Publish, QoS, Subscribe, SubscriptionOptions,
};

pub struct Rig {
    pub broker: Broker,
    pub queues: Vec<SendQueue>,
    pub pool: SendPool,
    out: Outbox,
    dirty: Vec<usize>,
    /// QoS 1 deliveries of the last turn, acknowledged by `ack_all`.
    to_ack: Vec<(usize, PacketId)>,
    now: Instant,
    limits: Limits,
    pub delivered_bytes: u64,
}

/// The publisher is connection 0; subscribers are 1..=n.
pub const PUBLISHER: usize = 0;

impl Rig {
    /// `n` subscribers to `topic`, alternating TCP and WebSocket; every `qos1_every`-th one
    /// (if non-zero) subscribes at QoS 1, the rest at QoS 0.
    pub fn new(n: usize, topic: &str, qos1_every: usize) -> Rig {
        Rig::with_clients(n, topic, qos1_every, ProtocolVersion::V311, 0)
    }

    /// As [`Rig::new`], the clients speaking `version`; MQTT 5 subscribers ask for
    /// `topic_alias_max` outbound Topic Aliases (none if 0).
    pub fn with_clients(
        n: usize,
        topic: &str,
        qos1_every: usize,
        version: ProtocolVersion,
        topic_alias_max: u16,
    ) -> Rig {
        let mut properties = PropertiesBuf::new();
        if topic_alias_max > 0 {
            properties.push(Property::TopicAliasMaximum(topic_alias_max));
        }
        let limits = Limits::default();
        let now = Instant::now();
        let mut rig = Rig {
            broker: Broker::new(0, 1, limits.clone(), now),
            queues: (0..=n).map(|_| SendQueue::default()).collect(),
            pool: SendPool::default(),
            out: Outbox::default(),
            dirty: Vec::new(),
            to_ack: Vec::new(),
            now,
            limits,
            delivered_bytes: 0,
        };
        for conn in 0..=n {
            let transport = if conn % 2 == 0 {
                Transport::Tcp
            } else {
                Transport::Ws
            };
            let client_id = format!("c{conn}");
            let connect = Connect {
                version,
                clean_session: true,
                keep_alive_s: 0,
                client_id: &client_id,
                will: None,
                username: None,
                password: None,
                properties: properties.as_properties(),
                bridge: false,
            };
            rig.broker.connect(
                ConnId(conn as u64),
                transport,
                &connect,
                rig.now,
                &mut rig.out,
            );
            if conn == PUBLISHER {
                continue;
            }
            let qos = if qos1_every != 0 && conn % qos1_every == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            let subscribe = Packet::Subscribe(Subscribe {
                packet_id: PacketId::new(1).expect("non-zero"),
                filters: vec![(topic, SubscriptionOptions::new(qos))],
                properties: Properties::EMPTY,
            });
            rig.broker
                .packet(ConnId(conn as u64), &subscribe, rig.now, &mut rig.out);
        }
        rig.turns();
        rig
    }

    /// The publisher sends one PUBLISH; loop turns run until every delivery is sent.
    pub fn publish(&mut self, topic: &str, payload: &[u8], delivery: Delivery) {
        let packet = Packet::Publish(Publish {
            dup: false,
            retain: false,
            delivery,
            topic,
            payload,
            properties: Properties::EMPTY,
        });
        self.broker
            .packet(ConnId(PUBLISHER as u64), &packet, self.now, &mut self.out);
        self.turns();
        self.ack_all();
    }

    /// Acknowledges every QoS 1 publish delivered so far.
    pub fn ack_all(&mut self) {
        for index in 0..self.to_ack.len() {
            let (conn, id) = self.to_ack[index];
            self.broker.packet(
                ConnId(conn as u64),
                &Packet::PubAck(Ack::new(id)),
                self.now,
                &mut self.out,
            );
        }
        self.to_ack.clear();
        self.turns();
    }

    /// Loop turns until the broker has nothing pending and every queue is empty.
    pub fn turns(&mut self) {
        loop {
            let pending = self.broker.continue_fanout(self.now, &mut self.out);
            self.carry_out();
            self.send_all();
            if !pending && self.out.sends.is_empty() {
                return;
            }
        }
    }

    fn carry_out(&mut self) {
        for (conn, chunk, droppable) in self.out.sends.drain(..) {
            let index = conn.0 as usize;
            if let Chunk::SharedWithId { id, .. } = &chunk {
                self.to_ack.push((index, *id));
            }
            let pushed = self.queues[index].push(
                chunk,
                droppable,
                self.limits.queue_bytes_max,
                SlowConsumer::DropOldest,
                &mut self.pool,
            );
            assert!(pushed.queued, "a reader that keeps up loses nothing");
            self.dirty.push(index);
        }
        self.out.closes.clear();
    }

    /// One send per dirty connection, completed in full at once (a reader that keeps up).
    fn send_all(&mut self) {
        for index in self.dirty.drain(..) {
            if let Some(sent) = self.queues[index].send_at_once(&mut self.pool) {
                self.delivered_bytes += sent as u64;
            }
        }
    }
}
