//! Persistence of retained messages and persistent sessions in `data_dir` (see `docs/persistence.md`): one
//! append-only log and snapshot per shard, written by one thread off the shards' loops.
//!
//! - `record.rs`: the bytes of a record and of a file, sans-IO: checksums, torn tails;
//! - `session_record.rs`: the bytes of a persistent session's record;
//! - `files.rs`: the shard directories, start-up load, compaction's renames;
//! - `uncommitted.rs`: at load, the copies of QoS 2 publishes never committed dropped;
//! - `writer.rs`: the thread, its bounded queue and each shard's handle to it;
//! - `lock.rs`: one broker per data directory;
//! - `error.rs`: what stops start-up, naming the file.
//!
//! Each retained topic is written by one shard only, its owner (`Broker::owner_shard` of the
//! topic): every shard applies every retained publish to its replica, so the owner sees every
//! change of its topics, and a topic's changes reach disk once, not once per shard. A session
//! is written by the shard it lives on, the owner of its client identifier.

mod error;
mod files;
mod lock;
pub mod record;
pub mod session_record;
mod uncommitted;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant, SystemTime};

use log::info;

use crate::broker::message_ids::MessageId;
use crate::broker::{Broker, QueuedImage, RoutedMessage, SessionImage, WillImage};
use crate::config::{Durability, StoreLimits};
pub use error::StoreError;
pub use lock::DataDirLock;
use session_record::StoredSession;
use writer::{Durable, LiveSession, Writer, WriterLinks};
pub use writer::{Echo, Flush, StoreHandle};
pub(crate) use writer::{unix_ms, wall_expiry};

/// How long a writer whose start-up compaction was deferred waits for the broker to serve
/// (`Store::serving`) before it builds its state and rewrites the snapshots: until then the
/// shards, loading their replicas, have the cores to themselves. Bounded so that a broker
/// that never says it serves still gets its snapshots rewritten.
const DEFERRED_START_WAIT: Duration = Duration::from_secs(10);

/// The writer: built and its start-up compaction done before `ready`, or built on its own
/// thread, which compacts in its first turn (`Store::open`).
enum WriterStart<F: FnOnce() -> Writer> {
    Built(Writer),
    Deferred(F),
}

/// The open store: the directory's lock, the writer thread, and what start-up loaded.
pub struct Store {
    _lock: DataDirLock,
    handles: Vec<StoreHandle>,
    /// Every retained message loaded, for each shard's replica.
    pub loaded: Arc<[Arc<RoutedMessage>]>,
    /// The persistent sessions loaded, by the shard that owns each (taken once).
    sessions: Vec<Vec<SessionImage>>,
    /// Dropped once the broker serves: a deferred writer starts then (`DEFERRED_START_WAIT`).
    serving: Option<std::sync::mpsc::Sender<()>>,
    thread: std::thread::JoinHandle<()>,
}

impl Store {
    /// Locks `data_dir`, loads it, rewrites each shard's snapshot, and starts the writer.
    /// `wake(shard)` wakes a shard's loop when barriers of it became durable (`sync` only).
    /// `limits` bound the queue, the group commit, compaction and retries.
    pub fn open(
        data_dir: &Path,
        durability: Durability,
        limits: StoreLimits,
        shard_count: usize,
        recover: bool,
        wake: Box<dyn Fn(usize) + Send>,
    ) -> Result<Store, StoreError> {
        let lock = DataDirLock::acquire(data_dir)?;
        let started = Instant::now();
        let now_ms = unix_ms(SystemTime::now());
        let found = files::shard_dirs(data_dir)?;
        let mut loaded = files::load(data_dir, recover, now_ms)?;
        let uncommitted = uncommitted::drop_uncommitted(&mut loaded.sessions);
        if uncommitted > 0 {
            info!(
                "data directory {}: {uncommitted} queued copies of QoS 2 publishes never committed dropped (their publishers send them again)",
                data_dir.display()
            );
        }
        let now = Instant::now();
        let messages: Vec<(Arc<RoutedMessage>, Option<u64>)> = loaded
            .messages
            .into_iter()
            .map(|stored| {
                let expires_at = stored
                    .expires_at_ms
                    .map(|at| now + Duration::from_millis(at.saturating_sub(now_ms)));
                let message = RoutedMessage {
                    topic: stored.topic,
                    payload: stored.payload,
                    qos: stored.qos,
                    retain: true,
                    properties: stored.properties,
                    expires_at,
                    bridged: false,
                    origin: None,
                    id: None,
                };
                (Arc::new(message), stored.expires_at_ms)
            })
            .collect();
        let replicas: Arc<[Arc<RoutedMessage>]> = messages
            .iter()
            .map(|(message, _)| Arc::clone(message))
            .collect();
        let mut live_sessions: Vec<LiveSession> = loaded
            .sessions
            .into_iter()
            .map(|stored| restore_session(stored, now, now_ms))
            .collect();
        // The longest offline first, as the shards' offline bound counts them.
        live_sessions.sort_by_key(|session| session.offline_since_ms);
        let mut sessions: Vec<Vec<SessionImage>> = vec![Vec::new(); shard_count];
        for session in &live_sessions {
            let shard = Broker::owner_shard(&session.image.client_id, shard_count);
            sessions[shard].push(session.image.clone());
        }
        let write_errors: Arc<[AtomicU64]> = (0..shard_count).map(|_| AtomicU64::new(0)).collect();
        let writable = Arc::new(AtomicBool::new(true));
        let durable = Arc::new(Durable::new(shard_count));
        let stamp_max = loaded.stamp_max;
        let dir = data_dir.to_path_buf();
        let new_writer = {
            let links = WriterLinks {
                write_errors: Arc::clone(&write_errors),
                writable: Arc::clone(&writable),
                durable: Arc::clone(&durable),
                wake,
            };
            move || {
                Writer::new(
                    &dir,
                    durability,
                    limits,
                    stamp_max,
                    messages,
                    live_sessions,
                    links,
                )
            }
        };
        // The start-up compaction (every current shard's snapshot rewritten from what was
        // loaded) cuts torn tails and moves records to their owner shard. With nothing to
        // repair and no shard directory to remove, the loaded files are whole and the load
        // needs nothing more from them: the store thread then builds its state and rewrites
        // the snapshots once the broker serves, before it takes any batch. A crash before
        // that finds the same files.
        let removed: Vec<usize> = found
            .into_iter()
            .filter(|&shard| shard >= shard_count)
            .collect();
        // Dropped copies are also gone from the files before the broker serves: left in the
        // log, a later load would keep them once their publishers' commit marks passed them
        // (`uncommitted.rs`), and deliver them beside the publishes sent again.
        let writer = if loaded.repairs > 0 || !removed.is_empty() || uncommitted > 0 {
            let mut writer = new_writer();
            let compacted = writer.compact_all();
            if !compacted && uncommitted > 0 {
                return Err(StoreError::UncommittedNotRewritten {
                    dir: data_dir.to_path_buf(),
                    copies: uncommitted,
                });
            }
            // A shard directory past this broker's shards is removed only once every topic
            // it held is in a current shard's snapshot.
            if compacted {
                for shard in removed {
                    files::remove_shard_dir(data_dir, shard)?;
                }
            }
            WriterStart::Built(writer)
        } else {
            WriterStart::Deferred(new_writer)
        };
        info!(
            "data directory {}: {} retained messages and {} sessions loaded in {} ms{}; durability {}",
            data_dir.display(),
            replicas.len(),
            sessions.iter().map(Vec::len).sum::<usize>(),
            started.elapsed().as_millis(),
            if loaded.repairs > 0 {
                " (repaired, see above)"
            } else {
                ""
            },
            durability.name()
        );
        // A flush holds at most one message per retained topic of its shard, shared with the
        // replicas: the queue pins at most this many of them while the disk is slow.
        let queue_len = limits.queue_flushes_per_shard_max as usize * shard_count;
        let (sender, receiver) = std::sync::mpsc::sync_channel(queue_len);
        let handles = (0..shard_count)
            .map(|shard| {
                let errors = Arc::clone(&write_errors);
                let durable = Arc::clone(&durable);
                StoreHandle::new(
                    shard,
                    sender.clone(),
                    errors,
                    Arc::clone(&writable),
                    durable,
                )
            })
            .collect();
        let (serving, wait_for_serving) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("store".to_owned())
            .spawn(move || {
                let writer = match writer {
                    WriterStart::Built(writer) => writer,
                    WriterStart::Deferred(new_writer) => {
                        // Nothing is ever sent: the sender is dropped when the broker serves.
                        let _ = wait_for_serving.recv_timeout(DEFERRED_START_WAIT);
                        let mut writer = new_writer();
                        // Before any batch: what the shards handed over meanwhile then goes
                        // to the new logs. A failure is the writer's to retry, as any other.
                        writer.compact_all();
                        writer
                    }
                };
                writer.run(receiver)
            })
            .map_err(StoreError::io(data_dir))?;
        Ok(Store {
            _lock: lock,
            handles,
            loaded: replicas,
            sessions,
            serving: Some(serving),
            thread,
        })
    }

    /// Each shard's handle, in shard order; taken once, for the shards.
    pub fn take_handles(&mut self) -> Vec<StoreHandle> {
        std::mem::take(&mut self.handles)
    }

    /// The sessions loaded for each shard, in shard order; taken once, for the shards.
    pub fn take_sessions(&mut self) -> Vec<Vec<SessionImage>> {
        std::mem::take(&mut self.sessions)
    }

    /// Says that every shard loaded what it was handed and serves: a writer whose start-up
    /// work was deferred begins it now.
    pub fn serving(&mut self) {
        self.serving = None;
    }

    /// Waits for the writer to write what the stopped shards handed it. Call it once every
    /// shard has stopped (their handles dropped); the lock is released after.
    pub fn finish(self) {
        drop(self.handles);
        drop(self.serving);
        if self.thread.join().is_err() {
            log::error!("store: the writer thread panicked");
        }
    }
}

/// A session image as one SESSION record with its times on the wall clock (Unix ms), as the
/// store writes it: the value other nodes read it back from (`crate::cluster::sessions`).
/// Messages past the largest record are left out, the oldest first; returns how many too.
pub fn encode_session_image(image: SessionImage, now: Instant, now_ms: u64) -> (Vec<u8>, usize) {
    let session = LiveSession::new(0, image, None, now, now_ms);
    let mut out = Vec::new();
    let (_, left_out) = session_record::encode(&mut out, &session.record());
    (out, left_out)
}

/// The session image of a record [`encode_session_image`] wrote, its wall-clock times turned
/// into instants of this process (one that was connected when written is offline from now);
/// `None` for bytes that are not one whole SESSION record.
pub fn decode_session_image(bytes: &[u8], now: Instant, now_ms: u64) -> Option<SessionImage> {
    match record::decode(bytes) {
        Ok(Some((record::Record::Session { session, .. }, len))) if len == bytes.len() => {
            Some(restore_session(*session, now, now_ms).image)
        }
        _ => None,
    }
}

/// A loaded session, for its shard and the writer. One that was connected when it was last
/// written ends its Session Expiry Interval from now: when its connection ended is unknown.
fn restore_session(stored: StoredSession, now: Instant, now_ms: u64) -> LiveSession {
    let instant = |at_ms: u64| now + Duration::from_millis(at_ms.saturating_sub(now_ms));
    let expires_at_ms = match stored.expires_at_ms {
        None if stored.expiry_s != u32::MAX => {
            Some(now_ms.saturating_add(u64::from(stored.expiry_s) * 1000))
        }
        at => at,
    };
    let mut message_expiry_ms = Vec::with_capacity(stored.messages.len());
    let messages = stored
        .messages
        .into_iter()
        .map(|queued| {
            let stored = queued.message;
            message_expiry_ms.push(stored.expires_at_ms);
            let message = RoutedMessage {
                topic: stored.topic,
                payload: stored.payload,
                qos: stored.qos,
                retain: queued.retain,
                properties: stored.properties,
                expires_at: stored.expires_at_ms.map(instant),
                bridged: false,
                origin: None,
                id: queued.id.map(MessageId),
            };
            QueuedImage {
                message: Arc::new(message),
                qos: stored.qos,
                retain: queued.retain,
                ids: queued.ids,
                packet_id: queued.packet_id,
            }
        })
        .collect();
    let will_due_ms = stored.will.as_ref().map_or(0, |will| will.due_ms);
    let will_expiry_ms = stored
        .will
        .as_ref()
        .and_then(|will| will.message.expires_at_ms);
    let delayed_will = stored.will.map(|will| {
        let stored = will.message;
        let message = RoutedMessage {
            topic: stored.topic,
            payload: stored.payload,
            qos: stored.qos,
            retain: will.retain,
            properties: stored.properties,
            expires_at: stored.expires_at_ms.map(instant),
            bridged: false,
            origin: None,
            id: None,
        };
        // One due while the broker was down is due now: published at the first tick.
        WillImage {
            message: Arc::new(message),
            due: instant(will.due_ms),
        }
    });
    let image = SessionImage {
        client_id: stored.client_id,
        version: stored.version,
        expiry_s: stored.expiry_s,
        expires_at: expires_at_ms.map(instant),
        connected: false,
        subscriptions: stored.subscriptions,
        messages,
        released: stored.released,
        inbound_qos2: stored.inbound_qos2,
        delayed_will,
        incarnation: stored.incarnation,
        committed_seq: stored.committed_seq,
        sent_ids: stored.sent_ids.into_iter().map(MessageId).collect(),
    };
    LiveSession {
        stamp: 0,
        image,
        expires_at_ms,
        message_expiry_ms,
        // One connected when written is offline from the load.
        offline_since_ms: Some(stored.offline_since_ms.unwrap_or(now_ms)),
        will_due_ms,
        will_expiry_ms,
        record_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::session_record::{self, SessionRef};
    use super::*;
    use crate::broker::Origin;
    use crate::protocol::mqtt::{ProtocolVersion, QoS};

    fn session(client_id: &str, messages: Vec<QueuedImage>, committed_seq: u64) -> SessionImage {
        SessionImage {
            client_id: client_id.into(),
            version: ProtocolVersion::V311,
            expiry_s: u32::MAX,
            expires_at: None,
            connected: false,
            subscriptions: Vec::new(),
            messages,
            released: Vec::new(),
            inbound_qos2: Vec::new(),
            delayed_will: None,
            incarnation: 7,
            committed_seq,
            sent_ids: Vec::new(),
        }
    }

    fn copy(payload: &[u8], seq: u64) -> QueuedImage {
        QueuedImage {
            message: Arc::new(RoutedMessage {
                origin: Some(Arc::new(Origin::new("pub", 7, seq))),
                id: None,
                ..RoutedMessage::new("t", payload, QoS::ExactlyOnce, false)
            }),
            qos: QoS::ExactlyOnce,
            retain: false,
            ids: Vec::new(),
            packet_id: None,
        }
    }

    fn open(dir: &Path) -> Store {
        Store::open(
            dir,
            Durability::Sync,
            StoreLimits::default(),
            1,
            false,
            Box::new(|_| {}),
        )
        .expect("the data directory opens")
    }

    fn queued_payloads(store: &mut Store, client_id: &str) -> Vec<Vec<u8>> {
        let sessions = store.take_sessions().concat();
        let session = sessions
            .iter()
            .find(|session| &*session.client_id == client_id)
            .expect("the session is loaded");
        session
            .messages
            .iter()
            .map(|queued| queued.message.payload.to_vec())
            .collect()
    }

    /// Dropped at load, a copy must be gone from the files too: the publisher's later commits
    /// pass its number, and a second load would otherwise keep it.
    #[test]
    fn copies_dropped_at_load_are_gone_from_the_files_before_serving() {
        let dir = std::env::temp_dir().join(format!("fanfare-uncommitted-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let shard = files::shard_dir(&dir, 0);
        std::fs::create_dir_all(&shard).expect("shard directory");
        let mut log = record::MAGIC.to_vec();
        for (stamp, image) in [
            (1, session("pub", Vec::new(), 1)),
            (2, session("sub", vec![copy(b"one", 1), copy(b"two", 2)], 0)),
        ] {
            session_record::encode(
                &mut log,
                &SessionRef {
                    stamp,
                    image: &image,
                    expires_at_ms: None,
                    offline_since_ms: Some(1),
                    message_expiry_ms: &[None, None],
                    will_due_ms: 0,
                    will_expiry_ms: None,
                },
            );
        }
        std::fs::write(shard.join("retained.log"), &log).expect("log written");

        // A snapshot that cannot be written (a directory where its temporary file goes):
        // the broker must not serve with the dropped copy still in its files.
        let blocked = shard.join("retained.snapshot.tmp");
        std::fs::create_dir(&blocked).expect("blocking directory");
        let refused = Store::open(
            &dir,
            Durability::Sync,
            StoreLimits::default(),
            1,
            false,
            Box::new(|_| {}),
        );
        assert!(matches!(
            refused,
            Err(StoreError::UncommittedNotRewritten { copies: 1, .. })
        ));
        std::fs::remove_dir(&blocked).expect("unblocked");

        let mut store = open(&dir);
        assert_eq!(queued_payloads(&mut store, "sub"), [b"one".to_vec()]);
        store.finish();

        // The publisher's commit mark now passes the dropped copy's number, as after it sent
        // the publish again and had it committed: the files must not bring the copy back.
        let mut log = std::fs::read(shard.join("retained.log")).expect("log read");
        session_record::encode(
            &mut log,
            &SessionRef {
                stamp: u64::MAX / 2,
                image: &session("pub", Vec::new(), 2),
                expires_at_ms: None,
                offline_since_ms: Some(1),
                message_expiry_ms: &[],
                will_due_ms: 0,
                will_expiry_ms: None,
            },
        );
        std::fs::write(shard.join("retained.log"), &log).expect("log written");
        let mut store = open(&dir);
        assert_eq!(queued_payloads(&mut store, "sub"), [b"one".to_vec()]);
        store.finish();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
