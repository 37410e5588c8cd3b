//! The shard's side of cluster mode (`crate::cluster`): each loop turn it hands the bridge
//! this turn's publishes, interest changes and accepted client ids, closes the connections
//! whose client ids other nodes accepted, and the intake shard takes the messages from
//! other nodes, a bounded number per turn.
//!
//! Persistent sessions (`crate::cluster::sessions`): the images of the sessions that changed
//! go to the bridge with the store's flushes, or every `session_sync_interval_ms` without a
//! data directory; a CONNECT that waits for its session from the cluster is read again with
//! the answer; and a session another node takes is handed over, its answer queued behind
//! the writes that came before it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::warn;

use super::Shard;
use super::peer::{Phase, SessionWait};
use crate::broker::SessionWrite;
use crate::cluster::sessions::{BucketMark, SessionFetch, SessionFetched, SessionOut};
use crate::cluster::{ClusterLink, FROM_CLUSTER_PER_TURN_MAX, INTAKE_SHARD};
use crate::cluster::{QosPublish, Ticket};
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
        let link = Arc::clone(link);
        self.take_sessions(&link, now);
        if self.id != INTAKE_SHARD || self.stop_deadline.is_some() {
            return;
        }
        for n in 0..FROM_CLUSTER_PER_TURN_MAX {
            let Some((message, ticket)) = link.take_qos() else {
                break;
            };
            self.broker
                .publish_from_remote(message, now, &mut self.outbox);
            self.broker.acknowledge_stream(ticket, &mut self.outbox);
            if n + 1 == FROM_CLUSTER_PER_TURN_MAX {
                self.busy = true;
            }
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

    /// The sessions this shard's CONNECTs waited for, and the sessions other nodes take.
    fn take_sessions(&mut self, link: &ClusterLink, now: Instant) {
        for n in 0..FROM_CLUSTER_PER_TURN_MAX {
            let Some(fetched) = link.take_fetched(self.id) else {
                break;
            };
            self.resume_connect(fetched, now);
            if n + 1 == FROM_CLUSTER_PER_TURN_MAX {
                self.busy = true;
            }
        }
        for n in 0..FROM_CLUSTER_PER_TURN_MAX {
            let Some(take) = link.take_session_take(self.id) else {
                break;
            };
            if link.sessions_full() {
                // Not answered, the session stays: the node that asks reads the bucket.
                warn!(
                    "shard {}: session {:?} not handed over: sessions_waiting_max reached",
                    self.id, take.client_id
                );
                continue;
            }
            let image = self
                .broker
                .hand_over_session(&take.client_id, now, &mut self.outbox)
                .map(Box::new);
            let Some(reply) = take.reply else {
                // A stale copy loaded at start-up: ended, nobody to answer.
                continue;
            };
            if self.persist.is_none() {
                // Ends written before the answer: the node that asks may read the bucket.
                self.sync_sessions();
            }
            let answer = SessionOut::Handed {
                reply,
                client_id: take.client_id,
                asker: take.asker,
                image,
            };
            if link.session_out(answer).is_err() {
                warn!(
                    "shard {}: a session take not answered: its queue filled",
                    self.id
                );
            }
            link.pipes.wake_remote();
            if n + 1 == FROM_CLUSTER_PER_TURN_MAX {
                self.busy = true;
            }
        }
    }

    /// Reads again the CONNECT that waited for its session from the cluster: found, a new
    /// one, or refused as unavailable.
    fn resume_connect(&mut self, fetched: SessionFetched, now: Instant) {
        let SessionFetched {
            conn: id,
            client_id,
            image,
            unavailable,
        } = fetched;
        let Some(peer) = self.io.state_mut(id) else {
            // Gone meanwhile (closed, or its CONNECT deadline passed).
            return;
        };
        let waiting = peer.rare.as_mut().and_then(|rare| rare.session.take());
        let Some(SessionWait::Waiting {
            client_id: waited,
            identity,
        }) = waiting
        else {
            return;
        };
        if peer.phase != Phase::FetchingSession || waited != client_id {
            // Another connection with the same number since.
            peer.rare_mut().session = Some(SessionWait::Waiting {
                client_id: waited,
                identity,
            });
            return;
        }
        peer.phase = Phase::AwaitConnect;
        peer.rare_mut().session = Some(SessionWait::Answered {
            identity,
            image,
            unavailable,
        });
        self.read_parked_connect(id, now);
    }

    /// Hands the bridge the persistent sessions that changed since the last time, when due
    /// (cluster mode without a data directory; with one they go with the store's flushes).
    fn sync_sessions_when_due(&mut self, now: Instant) {
        if self.persist.is_some() || now < self.next_session_sync {
            return;
        }
        let interval_ms = self.config.cluster.session_sync_interval_ms;
        self.next_session_sync = now + Duration::from_millis(interval_ms.into());
        self.sync_sessions();
    }

    fn sync_sessions(&mut self) {
        let writes = self.broker.take_session_writes();
        self.share_sessions(&writes, None);
    }

    /// At stop, after the store's last flush: the sessions' last changes (the stop's
    /// disconnections among them) for the bucket, waiting for room in the queue while the
    /// bridge writes, at most `session_stop_write_ms`.
    pub(super) fn sync_sessions_at_stop(&mut self) {
        if self.cluster.is_none() {
            return;
        }
        let wait = Duration::from_millis(self.config.cluster.session_stop_write_ms.into());
        let deadline = Instant::now() + wait;
        loop {
            // With a data directory, those its flush took went to the bucket with it: what
            // is left is what the queue had no room for.
            let writes = self.broker.take_session_writes();
            if writes.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                warn!(
                    "shard {}: {} session changes not written to the bucket at stop: no room in its queue within {} ms (session_stop_write_ms)",
                    self.id,
                    writes.len(),
                    wait.as_millis()
                );
                return;
            }
            self.share_sessions(&writes, None);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Queues `writes` for the cluster's bucket; those the queue has no room for are noted
    /// again in the broker, for the next time. Under `sync`, `mark` is the flush's that took
    /// them, which what it gated waits for in the bucket too (`cluster/bucket_marks.rs`).
    pub(super) fn share_sessions(&mut self, writes: &[SessionWrite], mark: Option<u64>) {
        let Some(link) = &self.cluster else {
            return;
        };
        let bucket_mark = mark.map(|mark| BucketMark {
            shard: self.id,
            mark,
        });
        let mut left = Vec::new();
        for write in writes {
            let out = match write {
                SessionWrite::Set(image) => SessionOut::Put(Box::new(image.clone()), bucket_mark),
                SessionWrite::Ended(client_id) => SessionOut::Delete(client_id.clone()),
                // The node it moved to writes it.
                SessionWrite::Moved(_) => continue,
            };
            if !left.is_empty() || link.session_out(out).is_err() {
                left.push(write.clone());
            }
        }
        if !writes.is_empty() {
            link.pipes.wake_remote();
        }
        if let Some(mark) = mark {
            self.bucket_gate.shared(mark, left.is_empty());
        }
        if !left.is_empty() {
            self.broker.return_session_writes(left);
        }
    }

    /// What a connection's held sends may go up to (`durable_sends.rs`): the flushes on
    /// disk, `disk`, and in cluster mode those the bucket holds too.
    pub(super) fn sends_durable_mark(&mut self, disk: u64) -> u64 {
        match &self.cluster {
            Some(link) => disk.min(self.bucket_gate.held(link.bucket_marks.held(self.id))),
            None => disk,
        }
    }

    /// Asks the cluster for the sessions this turn's CONNECTs wait for; one that finds the
    /// queue full gets a new session at once.
    fn fetch_sessions(&mut self, now: Instant) {
        let Some(link) = &self.cluster else {
            return;
        };
        let link = Arc::clone(link);
        let fetches = std::mem::take(&mut self.outbox.session_fetches);
        for (conn, client_id) in fetches {
            let fetch = SessionFetch {
                shard: self.id,
                conn,
                client_id,
            };
            if let Err(fetch) = link.fetch_session(fetch) {
                let figures = &link.figures;
                figures
                    .session_fetches_failed
                    .fetch_add(1, Ordering::Relaxed);
                // Refused rather than started anew: its client comes back for its session.
                warn!(
                    "shard {}: client {:?} refused (server unavailable): sessions_waiting_max searches queued for the cluster",
                    self.id, fetch.client_id
                );
                let refused = SessionFetched {
                    conn: fetch.conn,
                    client_id: fetch.client_id,
                    image: None,
                    unavailable: true,
                };
                self.resume_connect(refused, now);
                self.busy = true;
            }
        }
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
    pub(super) fn post_to_cluster(&mut self, now: Instant) {
        if self.cluster.is_none() {
            return;
        }
        self.sync_sessions_when_due(now);
        let any_fetch = !self.outbox.session_fetches.is_empty();
        self.fetch_sessions(now);
        let Some(link) = &self.cluster else {
            return;
        };
        link.qos_delivered(self.outbox.stream_acks.drain(..));
        self.broker.take_interest(&mut self.interest_changes);
        let any = any_fetch
            || !self.outbox.to_remote.is_empty()
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
                    sessions_stored: figures.sessions_stored.load(Ordering::Relaxed),
                    sessions_store_failed: figures.sessions_store_failed.load(Ordering::Relaxed),
                    sessions_fetched: figures.sessions_fetched.load(Ordering::Relaxed),
                    session_fetches_failed: figures.session_fetches_failed.load(Ordering::Relaxed),
                    retained_unsent: figures.retained_unsent.load(Ordering::Relaxed),
                    qos_stored: figures.qos_stored.load(Ordering::Relaxed),
                    qos_store_failed: figures.qos_store_failed.load(Ordering::Relaxed),
                    qos_stream_ready: figures.qos_stream_ready.load(Ordering::Relaxed),
                    qos_acks_waiting: figures.qos_acks_waiting.load(Ordering::Relaxed),
                    qos_consumers: figures.qos_consumers.load(Ordering::Relaxed),
                    qos_received: figures.qos_received.load(Ordering::Relaxed),
                    qos_redelivered: figures.qos_redelivered.load(Ordering::Relaxed),
                    qos_duplicates: figures.qos_duplicates.load(Ordering::Relaxed),
                    qos_resends_held: figures.qos_resends_held.load(Ordering::Relaxed),
                }
            }
            _ => crate::metrics::ClusterCounts::default(),
        }
    }
}

/// Under `sync`, the flushes whose images the bridge's queue had no room for: they go back to
/// the broker and with a later flush, so the bucket holding the marks up to theirs says
/// nothing of them. Until the bucket holds the later flush that took them again, nothing
/// from the first refused mark on counts as held.
#[derive(Debug, Default)]
pub(super) struct BucketGate {
    /// The first flush of which an image was refused.
    refused_at: Option<u64>,
    /// The first later flush all of whose images were queued: the refused ones among them.
    shared_again_at: Option<u64>,
}

impl BucketGate {
    /// Flush `mark`'s images were queued (`all`), or some were refused.
    fn shared(&mut self, mark: u64, all: bool) {
        match (all, self.refused_at) {
            (false, _) => {
                self.refused_at.get_or_insert(mark);
                self.shared_again_at = None;
            }
            (true, Some(refused)) if mark > refused && self.shared_again_at.is_none() => {
                self.shared_again_at = Some(mark);
            }
            (true, _) => {}
        }
    }

    /// The highest mark held, given that the bucket answered every write up to `answered`.
    fn held(&mut self, answered: u64) -> u64 {
        match (self.refused_at, self.shared_again_at) {
            (None, _) => answered,
            (Some(_), Some(again)) if answered >= again => {
                *self = BucketGate::default();
                answered
            }
            (Some(refused), _) => answered.min(refused - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BucketGate;

    #[test]
    fn a_refused_image_holds_the_gate_until_the_flush_that_took_it_again_is_held() {
        let mut gate = BucketGate::default();
        gate.shared(1, true);
        assert_eq!(gate.held(1), 1);
        gate.shared(2, false);
        assert_eq!(
            gate.held(2),
            1,
            "flush 2's refused image is not in the bucket"
        );
        gate.shared(3, false);
        gate.shared(4, true);
        assert_eq!(gate.held(3), 1, "flush 4 took them again, not held yet");
        assert_eq!(
            gate.held(4),
            4,
            "held: the refused images are in the bucket"
        );
        assert_eq!(gate.held(5), 5, "and the gate is open again");
    }
}
