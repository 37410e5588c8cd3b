//! The shard's side of cluster mode (`crate::cluster`): each loop turn it hands the bridge
//! this turn's publishes and interest changes, and the intake shard takes the messages from
//! other nodes, a bounded number per turn.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Shard;
use crate::cluster::{FROM_CLUSTER_PER_TURN_MAX, INTAKE_SHARD};

impl Shard {
    /// Publishes the messages from other nodes waiting for this shard, as the node's own.
    pub(super) fn take_from_cluster(&mut self, now: Instant) {
        let Some(link) = &self.cluster else {
            return;
        };
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

    /// Hands the NATS bridge this turn's publishes and interest changes, and wakes it once;
    /// `Outbox::to_remote` is emptied by `post_to_bridges`, after the bridges had theirs.
    pub(super) fn post_to_cluster(&mut self) {
        let Some(link) = &self.cluster else {
            return;
        };
        self.broker.take_interest(&mut self.interest_changes);
        let any = !self.outbox.to_remote.is_empty() || !self.interest_changes.is_empty();
        for change in self.interest_changes.drain(..) {
            link.change_interest(change);
        }
        for message in &self.outbox.to_remote {
            link.send(Arc::clone(message));
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
                }
            }
            _ => crate::metrics::ClusterCounts::default(),
        }
    }
}
