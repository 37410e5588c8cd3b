//! One bridge's queue of messages to the remote, on the bridge's thread (`client.rs`):
//! store-and-forward (`docs/bridges.md`).
//!
//! - **QoS 1** messages are numbered, appended to the journal (`journal.rs`) when the bridge
//!   has a queue directory, and held until the remote acknowledges them (PUBACK), sent in
//!   order, at most `inflight_max` at a time, and again (DUP) after a reconnection. They are
//!   held in memory as well, so sending never reads the disk: the files are read only at
//!   start-up. Bounded by `queue_bytes_max`, counted in record bytes
//!   ([`journal::message_record_bytes`]); past it `queue_full_policy` applies: `drop_oldest`
//!   drops from the front; `refuse` raises [`OutQueue::refusing`] once the queue is full, and
//!   the shards refuse publishes for it from their next turn. What they acknowledged before
//!   that is still queued, past the bound (at most what their queue to the bridge holds,
//!   `out_queue_bytes_max`): under `refuse` nothing acknowledged is dropped.
//! - **QoS 0** messages wait in memory only, up to `out_queue_bytes_max`; past it the newest
//!   are dropped, as QoS 0 allows.
//!
//! - **QoS 2** messages are queued as QoS 1 ones are, and leave the queue at PUBCOMP: PUBREC
//!   makes them released (PUBREL sent, and sent again after a reconnection instead of the
//!   PUBLISH [MQTT-4.4.0-1]). That state is not written: after a restart a released message
//!   is sent again as a new PUBLISH, so across a crash QoS 2 is at least once, as QoS 1.
//!
//! What leaves the front of the queue (acknowledged, or dropped by `drop_oldest`) is noted in
//! the journal as one DONE record per batch, so a restart sends only the rest.
//!
//! A message's MQTT 5 properties are written with it, and its Message Expiry Interval as a
//! wall-clock deadline: one that expired while the broker was down is dropped at load and
//! counted ([`OutQueue::expired_at_load`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};

use super::journal::{self, Journal, Loaded, StoredMessage};
use crate::broker::RoutedMessage;
use crate::config::Durability;
use crate::config::bridge::QueueFullPolicy;
use crate::protocol::mqtt::{PacketId, QoS};
use crate::store::{unix_ms, wall_expiry};

/// Under `refuse`, publishes are accepted again once the queue is back under this share of
/// its bound (in quarters), so that refusing does not flip on and off with every message.
const REFUSE_UNTIL_QUARTERS: u64 = 3;

/// The time now on both clocks: the monotonic one that messages' expiries are held in, and
/// the wall clock that the files keep them in, since an `Instant` means nothing after a
/// restart.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub unix_ms: u64,
}

impl Now {
    pub fn read() -> Now {
        Now {
            at: Instant::now(),
            unix_ms: unix_ms(SystemTime::now()),
        }
    }
}

/// A QoS 1 or 2 message waiting for the remote's acknowledgement.
pub struct Queued {
    seq: u64,
    /// The topic on the remote broker.
    pub topic: Box<str>,
    pub message: Arc<RoutedMessage>,
    /// The QoS it is sent with: 1 or 2.
    pub qos: QoS,
    /// QoS 2: PUBREC came and PUBREL went; PUBCOMP is awaited.
    pub released: bool,
    bytes: u64,
    /// The packet id it was sent with; `None`: not sent yet.
    pub id: Option<PacketId>,
    /// Acknowledged, behind an older message that is not yet.
    acked: bool,
}

/// What became of a QoS 1 message offered to the queue.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued, after dropping this many older messages (`drop_oldest`).
    Queued { dropped: u64 },
    /// Not queued: larger than the whole bound.
    Dropped,
}

pub struct OutQueue {
    name: String,
    entries: VecDeque<Queued>,
    /// Entries at the front that were sent; the rest wait.
    sent: usize,
    /// Sent and neither acknowledged nor dropped: what `inflight_max` bounds.
    in_flight: usize,
    bytes: u64,
    bytes_max: u64,
    policy: QueueFullPolicy,
    next_seq: u64,
    /// Every message up to this one left the queue.
    done_through: u64,
    /// `done_through` moved since the journal last noted it.
    done_pending: bool,
    /// Packet ids in use: the sequence number of the message sent with it, or `None` for one
    /// dropped while in flight, whose id stays taken until its PUBACK or the next connection.
    ids: BTreeMap<u16, Option<u64>>,
    next_id: u16,
    journal: Option<Journal>,
    /// `batch` durability: how often written records are synced.
    sync_interval: Option<Duration>,
    sync_due: Option<Instant>,
    write_failing: bool,
    refusing: bool,
    volatile: VecDeque<(Box<str>, Arc<RoutedMessage>)>,
    volatile_bytes: u64,
    volatile_bytes_max: u64,
    /// Messages loaded from the files whose expiry had passed: dropped, never queued.
    expired_at_load: u64,
}

/// The parts of [`OutQueue::new`] that come from the configuration.
pub struct QueueSettings {
    pub name: String,
    pub bytes_max: u64,
    pub policy: QueueFullPolicy,
    pub volatile_bytes_max: u64,
    pub durability: Durability,
    pub sync_interval: Duration,
}

impl OutQueue {
    /// The queue, with what `journal` loaded, or in memory only without one; loaded messages
    /// whose expiry passed before `now` are dropped.
    pub fn new(settings: QueueSettings, journal: Option<(Journal, Loaded)>, now: Now) -> OutQueue {
        let (journal, loaded) = match journal {
            Some((journal, loaded)) => (Some(journal), Some(loaded)),
            None => (None, None),
        };
        let mut queue = OutQueue {
            name: settings.name,
            entries: VecDeque::new(),
            sent: 0,
            in_flight: 0,
            bytes: 0,
            bytes_max: settings.bytes_max,
            policy: settings.policy,
            next_seq: 1,
            done_through: 0,
            done_pending: false,
            ids: BTreeMap::new(),
            next_id: 0,
            journal,
            sync_interval: (settings.durability == Durability::Batch)
                .then_some(settings.sync_interval),
            sync_due: None,
            write_failing: false,
            refusing: false,
            volatile: VecDeque::new(),
            volatile_bytes: 0,
            volatile_bytes_max: settings.volatile_bytes_max,
            expired_at_load: 0,
        };
        if let Some(loaded) = loaded {
            queue.next_seq = loaded.next_seq;
            queue.done_through = loaded.done_through;
            for stored in loaded.messages {
                if stored.expires_at_ms.is_some_and(|at| at <= now.unix_ms) {
                    // Gone to no one [MQTT-3.3.2-5]; a later DONE record covers it.
                    queue.expired_at_load += 1;
                    continue;
                }
                let bytes = journal::message_record_bytes(
                    &stored.topic,
                    &stored.payload,
                    &stored.properties,
                );
                let expires_at = stored
                    .expires_at_ms
                    .map(|at| now.at + Duration::from_millis(at - now.unix_ms));
                let message = RoutedMessage {
                    topic: stored.topic.clone(),
                    payload: stored.payload,
                    qos: stored.qos,
                    retain: stored.retain,
                    properties: stored.properties,
                    expires_at,
                    bridged: false,
                    origin: None,
                    id: None,
                };
                queue.bytes += bytes;
                queue.entries.push_back(Queued {
                    seq: stored.seq,
                    topic: stored.topic,
                    message: Arc::new(message),
                    qos: stored.qos,
                    released: false,
                    bytes,
                    id: None,
                    acked: false,
                });
            }
        }
        queue
    }

    /// Queues a message for the remote under its remote `topic`, to be sent at `qos` (1 or
    /// 2); its expiry is written as the wall-clock time it falls at, seen from `now`.
    pub fn push(
        &mut self,
        topic: Box<str>,
        message: Arc<RoutedMessage>,
        qos: QoS,
        now: Now,
    ) -> Pushed {
        assert!(qos != QoS::AtMostOnce, "QoS 0 waits in memory only");
        let bytes = journal::message_record_bytes(&topic, &message.payload, &message.properties);
        if bytes > self.bytes_max {
            return Pushed::Dropped;
        }
        let mut dropped = 0;
        while self.policy == QueueFullPolicy::DropOldest && self.bytes + bytes > self.bytes_max {
            self.drop_oldest();
            dropped += 1;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(journal) = self.journal.as_mut() {
            let stored = StoredMessage {
                seq,
                topic: topic.clone(),
                qos,
                retain: message.retain,
                payload: message.payload.clone(),
                properties: message.properties.clone(),
                expires_at_ms: wall_expiry(message.expires_at, now.at, now.unix_ms),
            };
            if let Err(e) = journal.append(&stored) {
                self.write_failed(&e);
            }
        }
        self.bytes += bytes;
        self.entries.push_back(Queued {
            seq,
            topic,
            message,
            qos,
            released: false,
            bytes,
            id: None,
            acked: false,
        });
        if self.policy == QueueFullPolicy::Refuse && self.bytes >= self.bytes_max {
            self.refusing = true;
        }
        Pushed::Queued { dropped }
    }

    /// Keeps a QoS 0 message in memory for the remote; `false`: no room, dropped.
    pub fn push_volatile(&mut self, topic: Box<str>, message: Arc<RoutedMessage>) -> bool {
        let bytes = message.bytes() as u64;
        if self.volatile_bytes + bytes > self.volatile_bytes_max {
            return false;
        }
        self.volatile_bytes += bytes;
        self.volatile.push_back((topic, message));
        true
    }

    /// The next QoS 0 message to send.
    pub fn pop_volatile(&mut self) -> Option<(Box<str>, Arc<RoutedMessage>)> {
        let (topic, message) = self.volatile.pop_front()?;
        self.volatile_bytes -= message.bytes() as u64;
        Some((topic, message))
    }

    /// The next QoS 1 message to send, with the packet id it now holds, if fewer than
    /// `window` are in flight.
    pub fn next_to_send(&mut self, window: usize) -> Option<&Queued> {
        if self.in_flight >= window || self.sent == self.entries.len() {
            return None;
        }
        let id = self.allocate_id();
        let entry = &mut self.entries[self.sent];
        entry.id = Some(id);
        self.ids.insert(id.get(), Some(entry.seq));
        self.sent += 1;
        self.in_flight += 1;
        Some(&self.entries[self.sent - 1])
    }

    /// The messages sent and not acknowledged, in order: sent again after a reconnection.
    pub fn in_flight(&self) -> impl Iterator<Item = &Queued> {
        self.entries.range(..self.sent).filter(|entry| !entry.acked)
    }

    /// A new connection: ids of dropped messages are free again (their PUBACKs will not come).
    pub fn reconnected(&mut self) {
        self.ids.retain(|_, seq| seq.is_some());
    }

    /// A packet id no message in flight holds; there is always one, since `inflight_max` is
    /// a `u16` and a SUBSCRIBE's id is given back at once.
    pub fn allocate_id(&mut self) -> PacketId {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if let Some(id) = PacketId::new(self.next_id)
                && !self.ids.contains_key(&id.get())
            {
                return id;
            }
        }
    }

    /// The remote's PUBREC for `id`: the QoS 2 message sent with it is released; `true` when
    /// PUBREL is to be sent, which is whenever the id is in use (a message dropped while in
    /// flight too: the remote then ends its side, and the id is free at PUBCOMP).
    pub fn received(&mut self, id: PacketId) -> bool {
        let Some(&seq) = self.ids.get(&id.get()) else {
            return false;
        };
        if let Some(seq) = seq
            && let Ok(at) = self.entries.binary_search_by_key(&seq, |entry| entry.seq)
        {
            self.entries[at].released = true;
        }
        true
    }

    /// The remote's PUBACK (QoS 1) or PUBCOMP (QoS 2) for `id`, or a PUBREC that refused the
    /// message; `true` when it acknowledged a message still queued.
    pub fn ack(&mut self, id: PacketId) -> bool {
        let Some(Some(seq)) = self.ids.remove(&id.get()) else {
            return false;
        };
        let Ok(at) = self.entries.binary_search_by_key(&seq, |entry| entry.seq) else {
            return false;
        };
        self.entries[at].acked = true;
        self.in_flight -= 1;
        while self.entries.front().is_some_and(|entry| entry.acked) {
            self.pop_front();
        }
        true
    }

    /// Writes to the journal what was queued and what left the queue since the last flush,
    /// in one write, and syncs as the durability asks; once per batch of work.
    pub fn flush(&mut self, now: Instant) {
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        if self.done_pending {
            self.done_pending = false;
            if let Err(e) = journal.done(self.done_through) {
                self.write_failed(&e);
                return;
            }
        }
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        let written = journal.write();
        self.wrote(written, now);
        let due = match self.sync_interval {
            None => true,
            Some(_) => self.sync_due.is_some_and(|at| now >= at),
        };
        if due {
            self.sync();
        }
    }

    /// Syncs the journal now: at a clean stop.
    pub fn sync(&mut self) {
        self.sync_due = None;
        if let Some(journal) = self.journal.as_mut() {
            let synced = journal.sync();
            if let Err(e) = synced {
                self.write_failed(&e);
            }
        }
    }

    /// When [`OutQueue::flush`] has a sync to do (`batch` durability).
    pub fn sync_due(&self) -> Option<Instant> {
        self.sync_due
    }

    /// QoS 1 and QoS 0 messages waiting for the remote.
    pub fn messages(&self) -> usize {
        self.entries.len() + self.volatile.len()
    }

    /// Their bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes + self.volatile_bytes
    }

    /// Messages the files held whose expiry passed while the broker was down: dropped at
    /// load.
    pub fn expired_at_load(&self) -> u64 {
        self.expired_at_load
    }

    /// Under `refuse`: whether the queue is full and publishes it would take are refused.
    pub fn refusing(&self) -> bool {
        self.refusing
    }

    fn drop_oldest(&mut self) {
        let Some(oldest) = self.entries.front() else {
            return;
        };
        if let Some(id) = oldest.id {
            // In flight: its id stays taken until its PUBACK, which frees nothing else.
            self.ids.insert(id.get(), None);
            self.in_flight -= 1;
        }
        self.pop_front();
    }

    fn pop_front(&mut self) {
        let Some(entry) = self.entries.pop_front() else {
            return;
        };
        if entry.id.is_some() {
            self.sent -= 1;
        }
        self.bytes -= entry.bytes;
        self.done_through = entry.seq;
        self.done_pending = true;
        let room_again = self.bytes_max / 4 * REFUSE_UNTIL_QUARTERS;
        if self.refusing && self.bytes <= room_again {
            self.refusing = false;
        }
    }

    fn wrote(&mut self, written: std::io::Result<()>, now: Instant) {
        match written {
            Ok(()) => {
                if self.write_failing {
                    self.write_failing = false;
                    info!("bridge {}: the queue is written again", self.name);
                }
                let unsynced = self.journal.as_ref().is_some_and(Journal::unsynced);
                if let Some(interval) = self.sync_interval
                    && self.sync_due.is_none()
                    && unsynced
                {
                    self.sync_due = Some(now + interval);
                }
            }
            Err(e) => self.write_failed(&e),
        }
    }

    fn write_failed(&mut self, e: &std::io::Error) {
        if self.write_failing {
            return;
        }
        self.write_failing = true;
        let dir = self
            .journal
            .as_ref()
            .map(|journal| journal.dir().display().to_string())
            .unwrap_or_default();
        warn!(
            "bridge {}: cannot write the queue in {dir}: {e}; messages wait in memory only until writes succeed",
            self.name
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(bytes_max: u64, policy: QueueFullPolicy) -> QueueSettings {
        QueueSettings {
            name: "up".into(),
            bytes_max,
            policy,
            volatile_bytes_max: 1000,
            durability: Durability::None,
            sync_interval: Duration::from_millis(100),
        }
    }

    fn queue(bytes_max: u64, policy: QueueFullPolicy) -> OutQueue {
        OutQueue::new(settings(bytes_max, policy), None, Now::read())
    }

    fn message(n: u8) -> (Box<str>, Arc<RoutedMessage>) {
        let message = RoutedMessage::new("t", &[n; 10], QoS::AtLeastOnce, false);
        ("t".into(), Arc::new(message))
    }

    fn push(queue: &mut OutQueue, n: u8) -> Pushed {
        let (topic, message) = message(n);
        queue.push(topic, message, QoS::AtLeastOnce, Now::read())
    }

    fn one() -> u64 {
        journal::message_record_bytes("t", &[0; 10], &[])
    }

    fn payloads(queue: &OutQueue) -> Vec<u8> {
        queue.entries.iter().map(|e| e.message.payload[0]).collect()
    }

    #[test]
    fn properties_and_expiry_survive_a_restart_and_what_expired_meanwhile_is_dropped() {
        let dir = std::env::temp_dir().join(format!("fanfare-queue-props-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let open = || Some(Journal::open(&dir, 1 << 20, Durability::None).expect("opens"));
        let now = Now::read();
        // A user property ("k", "v") and content type "text".
        let properties: Box<[u8]> = (*b"\x26\x00\x01k\x00\x01v\x03\x00\x04text").into();
        let bare = |payload: &[u8]| RoutedMessage::new("t", payload, QoS::AtLeastOnce, false);
        let lasting = RoutedMessage {
            properties: properties.clone(),
            expires_at: Some(now.at + Duration::from_secs(60)),
            ..bare(b"a")
        };
        let brief = RoutedMessage {
            expires_at: Some(now.at + Duration::from_secs(1)),
            ..bare(b"b")
        };
        let mut queue = OutQueue::new(settings(1 << 20, QueueFullPolicy::DropOldest), open(), now);
        for message in [lasting, brief, bare(b"c")] {
            queue.push("t".into(), Arc::new(message), QoS::AtLeastOnce, now);
        }
        let with_properties = journal::message_record_bytes("t", b"a", &properties);
        assert_eq!(with_properties, one() - 10 + 1 + properties.len() as u64);
        assert_eq!(queue.bytes(), with_properties + 2 * (one() - 9));
        queue.flush(now.at);
        drop(queue);

        // Two seconds later by the wall clock: the brief one expired while the broker was down.
        let later = Now {
            at: Instant::now(),
            unix_ms: now.unix_ms + 2_000,
        };
        let queue = OutQueue::new(
            settings(1 << 20, QueueFullPolicy::DropOldest),
            open(),
            later,
        );
        assert_eq!(queue.expired_at_load(), 1);
        assert_eq!(payloads(&queue), b"ac".to_vec());
        assert_eq!(queue.bytes(), with_properties + one() - 9);
        let first = &queue.entries[0].message;
        assert_eq!(first.properties, properties);
        let left = first.expires_at.map(|at| at.duration_since(later.at));
        assert_eq!(
            left,
            Some(Duration::from_secs(58)),
            "the deadline, not the interval"
        );
        assert_eq!(queue.entries[1].message.expires_at, None);
        drop(queue);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_qos2_message_is_released_at_pubrec_and_leaves_at_pubcomp() {
        let mut queue = queue(one() * 10, QueueFullPolicy::DropOldest);
        let (topic, message) = message(7);
        queue.push(topic, message, QoS::ExactlyOnce, Now::read());
        let id = queue.next_to_send(4).and_then(|e| e.id).expect("sent");
        assert!(queue.received(id), "PUBREL goes");
        let entry = queue.in_flight().next().expect("still in flight");
        assert!(entry.released && entry.qos == QoS::ExactlyOnce);
        assert!(queue.ack(id), "PUBCOMP");
        assert_eq!(queue.messages(), 0);
        assert!(!queue.received(id), "an unknown id gets no PUBREL");
    }

    #[test]
    fn sent_in_order_within_the_window_and_removed_when_acknowledged() {
        let mut queue = queue(one() * 10, QueueFullPolicy::DropOldest);
        for n in 0..4 {
            assert_eq!(push(&mut queue, n), Pushed::Queued { dropped: 0 });
        }
        let first = queue.next_to_send(2).and_then(|e| e.id).expect("sent");
        let second = queue.next_to_send(2).and_then(|e| e.id).expect("sent");
        assert!(queue.next_to_send(2).is_none(), "the window is full");
        assert!(queue.ack(second), "out of order");
        assert_eq!(queue.messages(), 4, "the first is not acknowledged yet");
        assert!(queue.ack(first));
        assert_eq!(payloads(&queue), vec![2, 3]);
        assert_eq!(queue.bytes(), one() * 2);
        assert!(!queue.ack(first), "once");
    }

    #[test]
    fn in_flight_messages_go_again_after_a_reconnection() {
        let mut queue = queue(one() * 10, QueueFullPolicy::DropOldest);
        push(&mut queue, 0);
        push(&mut queue, 1);
        queue.next_to_send(8);
        queue.next_to_send(8);
        let again: Vec<u8> = queue.in_flight().map(|e| e.message.payload[0]).collect();
        assert_eq!(again, vec![0, 1]);
    }

    #[test]
    fn drop_oldest_makes_room_even_for_a_message_in_flight() {
        let mut queue = queue(one() * 3, QueueFullPolicy::DropOldest);
        for n in 0..3 {
            push(&mut queue, n);
        }
        let id = queue.next_to_send(8).and_then(|e| e.id).expect("sent");
        assert_eq!(push(&mut queue, 3), Pushed::Queued { dropped: 1 });
        assert_eq!(payloads(&queue), vec![1, 2, 3]);
        assert_ne!(queue.allocate_id(), id, "its id waits for its PUBACK");
        assert!(
            !queue.ack(id),
            "a dropped message's PUBACK frees only its id"
        );
        assert_eq!(queue.messages(), 3);
    }

    #[test]
    fn refuse_keeps_what_is_queued_until_there_is_room() {
        let mut queue = queue(one() * 4, QueueFullPolicy::Refuse);
        for n in 0..3 {
            push(&mut queue, n);
        }
        assert!(!queue.refusing());
        push(&mut queue, 3);
        assert!(queue.refusing(), "full");
        assert_eq!(
            push(&mut queue, 4),
            Pushed::Queued { dropped: 0 },
            "acknowledged before the shards saw the queue full: kept past the bound"
        );
        let id = queue.next_to_send(8).and_then(|e| e.id).expect("sent");
        queue.ack(id);
        assert!(queue.refusing(), "full again, still refusing");
        let id = queue.next_to_send(8).and_then(|e| e.id).expect("sent");
        queue.ack(id);
        assert!(!queue.refusing(), "at 3/4 of the bound");
        assert_eq!(payloads(&queue), vec![2, 3, 4]);
    }

    #[test]
    fn qos_0_is_bounded_on_its_own() {
        let mut queue = queue(one(), QueueFullPolicy::Refuse);
        let (topic, message) = message(0);
        let each = message.bytes() as u64;
        let fit = 1000 / each;
        for _ in 0..fit {
            assert!(queue.push_volatile(topic.clone(), Arc::clone(&message)));
        }
        assert!(!queue.push_volatile(topic, message));
        assert_eq!(queue.messages() as u64, fit);
        assert!(queue.pop_volatile().is_some());
    }
}
