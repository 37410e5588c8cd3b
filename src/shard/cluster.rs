//! The shard's side of cluster mode (`crate::cluster`): each loop turn it hands the bridge
//! this turn's publishes, interest changes and accepted client ids, closes the connections
//! whose client ids other nodes accepted, and the intake shard takes the messages from
//! other nodes, a bounded number per turn.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use log::warn;

use super::Shard;
use crate::cluster::{FROM_CLUSTER_PER_TURN_MAX, INTAKE_SHARD, QosPublish, Ticket};
use crate::protocol::mqtt::QoS;

impl Shard {
    /// Applies the retained messages from the JetStream stream waiting for this shard's
    /// replica, and publishes the messages from other nodes waiting for this shard (the
    /// intake shard), as the node's own.
    pub(super) fn take_from_cluster(&mut self, now: Instant) {
        let Some(link) = &self.cluster else {
            return;
        };
        let mut released = 0;
        // Bounded by the tickets this shard handed out, each answered once.
        while let Some((ticket, stored)) = link.take_settled(self.id) {
            released += self
                .broker
                .settle_cluster_ack(ticket, stored, &mut self.outbox);
        }
        if released > 0 {
            // Connections that waited for acknowledgements may be read again.
            self.resume_throttled(now);
        }
        let Some(link) = &self.cluster else {
            return;
        };
        for taken in 0..FROM_CLUSTER_PER_TURN_MAX {
            let Some(message) = link.take_retained(self.id) else {
                break;
            };
            if !self.broker.retain_from_cluster(&message) {
                self.retained_from_cluster_rejected += 1;
                // Logged at 1, 2, 4, 8, ... so that a stream far past the bounds cannot
                // flood the log; every one is counted in fanfare_retained_rejected_total.
                if self.retained_from_cluster_rejected.is_power_of_two() {
                    warn!(
                        "shard {}: {} retained messages from the cluster did not fit retained_messages_max or retained_bytes_max, the latest of {:?}",
                        self.id, self.retained_from_cluster_rejected, message.topic
                    );
                }
            }
            if taken + 1 == FROM_CLUSTER_PER_TURN_MAX {
                self.busy = true;
            }
        }
        for n in 0..FROM_CLUSTER_PER_TURN_MAX {
            let Some(taken) = link.take_taken_over(self.id) else {
                break;
            };
            // A CONNECT accepted this turn is stamped after the other node's, which was sent
            // before this turn took it: the one here is the newer (`client_ids.rs`).
            let accepted_now = self.outbox.connected_clients.contains(&taken.client_id);
            if !accepted_now && self.announced.is_newer(&taken) {
                self.broker
                    .taken_over_elsewhere(&taken.client_id, now, &mut self.outbox);
            }
            if n + 1 == FROM_CLUSTER_PER_TURN_MAX {
                self.busy = true;
            }
        }
        if self.id != INTAKE_SHARD || self.stop_deadline.is_some() {
            return;
        }
        for _ in 0..FROM_CLUSTER_PER_TURN_MAX {
            let Some(message) = link.pipes.take() else {
                return;
            };
            self.broker
                .publish_from_remote(message, now, &mut self.outbox);
        }
        self.busy = true;
    }

    /// Tells the broker whether NATS is connected, before this turn's publishes are read: one
    /// relaxed load per turn.
    pub(super) fn refresh_cluster_state(&mut self) {
        if let Some(link) = &self.cluster {
            let connected = link.figures.connected.load(Ordering::Relaxed);
            self.broker.set_cluster_writable(connected);
        }
    }

    /// Hands the NATS bridge this turn's publishes and interest changes, and wakes it once;
    /// `Outbox::to_remote` is emptied by `post_to_bridges`, after the bridges had theirs.
    pub(super) fn post_to_cluster(&mut self) {
        let Some(link) = &self.cluster else {
            return;
        };
        self.broker.take_interest(&mut self.interest_changes);
        let any = !self.outbox.to_remote.is_empty()
            || !self.interest_changes.is_empty()
            || !self.outbox.connected_clients.is_empty();
        for change in self.interest_changes.drain(..) {
            link.change_interest(change);
        }
        if !self.outbox.connected_clients.is_empty() {
            // Stamped before this turn's CONNACKs leave: a client that hears its CONNACK and
            // connects to another node is stamped later there (`client_ids.rs`).
            let at_us = crate::cluster::client_ids::now_us();
            for client_id in self.outbox.connected_clients.drain(..) {
                self.announced.note(&client_id, at_us, link.remembered);
                link.connected(client_id, at_us);
            }
        }
        // QoS 1/2 publishes go to JetStream, each with its ticket where its acknowledgement
        // waits (both lists keep the routing's order).
        let mut tickets = self.outbox.cluster_tickets.drain(..).peekable();
        let mut refused = Vec::new();
        for message in &self.outbox.to_remote {
            if message.qos == QoS::AtMostOnce {
                link.send(Arc::clone(message));
                continue;
            }
            let ticket = tickets
                .next_if(|(ticketed, _)| Arc::ptr_eq(ticketed, message))
                .map(|(_, number)| Ticket {
                    shard: self.id,
                    number,
                });
            let publish = QosPublish {
                message: Arc::clone(message),
                ticket,
            };
            if let Err(publish) = link.send_qos(publish)
                && let Some(ticket) = publish.ticket
            {
                refused.push(ticket.number);
            }
        }
        debug_assert!(tickets.next().is_none(), "every ticket is in to_remote");
        drop(tickets);
        for number in refused {
            self.broker
                .settle_cluster_ack(number, false, &mut self.outbox);
            // The refusals are sent next turn.
            self.busy = true;
        }
        if any {
            link.pipes.wake_remote();
        }
    }

    /// The cluster's figures for the metrics: the bridge's, on the intake shard only, so
    /// that the sums over shards count each once.
    pub(super) fn cluster_counts(&self) -> crate::metrics::ClusterCounts {
        match &self.cluster {
            Some(link) if self.id == INTAKE_SHARD => {
                let figures = &link.figures;
                crate::metrics::ClusterCounts {
                    connected: figures.connected.load(Ordering::Relaxed),
                    subjects: figures.subjects.load(Ordering::Relaxed),
                    sent: figures.sent.load(Ordering::Relaxed),
                    dropped: figures.dropped.load(Ordering::Relaxed),
                    received: figures.received.load(Ordering::Relaxed),
                    received_dropped: figures.received_dropped.load(Ordering::Relaxed),
                    retained_stored: figures.retained_stored.load(Ordering::Relaxed),
                    retained_store_failed: figures.retained_store_failed.load(Ordering::Relaxed),
                    retained_loaded: figures.retained_loaded.load(Ordering::Relaxed),
                    retained_caught_up: figures.retained_caught_up.load(Ordering::Relaxed),
                    retained_unsent: figures.retained_unsent.load(Ordering::Relaxed),
                    qos_stored: figures.qos_stored.load(Ordering::Relaxed),
                    qos_store_failed: figures.qos_store_failed.load(Ordering::Relaxed),
                    qos_stream_ready: figures.qos_stream_ready.load(Ordering::Relaxed),
                    qos_acks_waiting: figures.qos_acks_waiting.load(Ordering::Relaxed),
                    qos_consumers: figures.qos_consumers.load(Ordering::Relaxed),
                    qos_received: figures.qos_received.load(Ordering::Relaxed),
                    qos_redelivered: figures.qos_redelivered.load(Ordering::Relaxed),
                    qos_duplicates: figures.qos_duplicates.load(Ordering::Relaxed),
                }
            }
            _ => crate::metrics::ClusterCounts::default(),
        }
    }
}
