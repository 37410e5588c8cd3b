//! The store's one thread: it takes each shard's conflated retained updates and persistent
//! session changes from a bounded queue, appends them to that shard's log, syncs as `durability` says, and compacts a log
//! grown past its live data. The shards never wait on it: a full queue leaves the updates in
//! the shard, conflated further, until the next flush (see `docs/persistence.md` for why a
//! thread rather than the shards' rings).
//!
//! Each shard's files are written only for that shard's batches; the thread's state per
//! shard ([`ShardLog`]) is the live set of the shard's topics, shared with the replicas
//! (`Arc`), from which a snapshot is written.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use log::{error, info};

use super::files;
use super::record::{self, SetRef};
use super::session_record::{self, SessionRef};
use crate::broker::{
    COVER_LEVELS, RetainedWrite, RoutedMessage, SessionImage, SessionWrite, barrier_level,
};
use crate::config::{Durability, StoreLimits};

/// What a shard's broker changed since its last flush: retained topics it owns, and its
/// persistent sessions; under `durability = "sync"`, the barriers it answers with this flush.
#[derive(Default)]
pub struct Flush {
    pub retained: Vec<RetainedWrite>,
    pub sessions: Vec<SessionWrite>,
    /// Reported to their entry shards once this flush, and every one of this shard before it,
    /// is on disk (`docs/persistence.md`, "Acknowledgements under sync").
    pub echoes: Vec<Echo>,
    /// Under `sync`: the number of this flush among its shard's (from 1, growing), reported
    /// back once it is on disk ([`StoreHandle::durable_mark`]); 0 for none. What the shard
    /// sends only once a change of its own is durable waits for it (`shard/durable_sends.rs`).
    pub mark: u64,
}

impl Flush {
    pub fn is_empty(&self) -> bool {
        self.retained.is_empty() && self.sessions.is_empty() && self.echoes.is_empty()
    }
}

/// A barrier of shard `entry`, numbered `seq`, that the flushing shard read after every
/// publish `entry` had posted to it before: once the flush is durable, so is what those
/// publishes changed on the flushing shard. A `seq` with [`COVER_BARRIER`] set is a cover of
/// shared subscription messages, counted apart (`shard/persist.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    pub entry: usize,
    pub seq: u64,
}

/// For each pair (entry shard, flushing shard), the highest barrier of the entry shard that
/// the flushing shard's files hold durably; written by the writer, read by the entry shard.
/// Per shard, the highest mark of its own flushes on disk. And per shard, whether the queue
/// refused its last flush, so that the writer wakes it once there is room (under `sync` its
/// barriers wait in that flush).
pub(super) struct Durable {
    shard_count: usize,
    seqs: Box<[AtomicU64]>,
    /// The same for covers, per level (`covers[(level - 1) * shard_count² + …]`): a cover
    /// answered never stands for a publish barrier, nor for a cover of another level.
    covers: Box<[AtomicU64]>,
    marks: Box<[AtomicU64]>,
    refused: Box<[AtomicBool]>,
}

impl Durable {
    pub(super) fn new(shard_count: usize) -> Durable {
        Durable {
            shard_count,
            seqs: (0..shard_count * shard_count)
                .map(|_| AtomicU64::new(0))
                .collect(),
            covers: (0..COVER_LEVELS * shard_count * shard_count)
                .map(|_| AtomicU64::new(0))
                .collect(),
            marks: (0..shard_count).map(|_| AtomicU64::new(0)).collect(),
            refused: (0..shard_count).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// The shards whose flush the queue refused since the last call.
    fn take_refused(&self) -> impl Iterator<Item = usize> + '_ {
        self.refused
            .iter()
            .enumerate()
            .filter(|(_, refused)| refused.swap(false, Relaxed))
            .map(|(shard, _)| shard)
    }

    fn report(&self, echo: Echo, flushed_by: usize) {
        let cell = echo.entry * self.shard_count + flushed_by;
        match barrier_level(echo.seq) {
            (0, seq) => self.seqs[cell].fetch_max(seq, Release),
            (level, seq) => {
                let table = (level - 1) * self.shard_count * self.shard_count;
                self.covers[table + cell].fetch_max(seq, Release)
            }
        };
    }

    /// Per level, the highest cover of `entry` that every shard reported durable.
    fn covered_everywhere(&self, entry: usize) -> [u64; COVER_LEVELS] {
        let n = self.shard_count;
        std::array::from_fn(|level| {
            let row = level * n * n + entry * n;
            let row = &self.covers[row..row + n];
            row.iter().map(|seq| seq.load(Acquire)).min().unwrap_or(0)
        })
    }

    /// Records that shard `shard`'s flushes up to `mark` are on disk; whether that is news.
    fn report_mark(&self, shard: usize, mark: u64) -> bool {
        self.marks[shard].fetch_max(mark, Release) < mark
    }

    /// The highest barrier of `entry` that every shard reported durable.
    fn durable_everywhere(&self, entry: usize) -> u64 {
        let row = &self.seqs[entry * self.shard_count..(entry + 1) * self.shard_count];
        row.iter().map(|seq| seq.load(Acquire)).min().unwrap_or(0)
    }
}

/// One shard's flush, on the queue.
pub(super) struct Batch {
    shard: usize,
    flush: Flush,
}

/// A shard's end of the queue.
pub struct StoreHandle {
    shard: usize,
    sender: SyncSender<Batch>,
    write_errors: Arc<[AtomicU64]>,
    writable: Arc<AtomicBool>,
    durable: Arc<Durable>,
}

impl StoreHandle {
    pub(super) fn new(
        shard: usize,
        sender: SyncSender<Batch>,
        write_errors: Arc<[AtomicU64]>,
        writable: Arc<AtomicBool>,
        durable: Arc<Durable>,
    ) -> StoreHandle {
        StoreHandle {
            shard,
            sender,
            write_errors,
            writable,
            durable,
        }
    }

    /// The highest barrier of this shard that every shard's files hold durably: an
    /// acknowledgement held with a barrier up to it may be sent.
    pub fn durable_barrier(&self) -> u64 {
        self.durable.durable_everywhere(self.shard)
    }

    /// Per level, the highest cover of this shard that every shard's files hold durably:
    /// every shared subscription message of that level this shard posted before it is on
    /// disk.
    pub fn durable_covers(&self) -> [u64; COVER_LEVELS] {
        self.durable.covered_everywhere(self.shard)
    }

    /// The highest mark of this shard's flushes that is on disk: everything they carried is.
    pub fn durable_mark(&self) -> u64 {
        self.durable.marks[self.shard].load(Acquire)
    }

    /// Queues `flush` without waiting; gives it back when the queue is full.
    pub fn try_send(&self, flush: Flush) -> Result<(), Flush> {
        let batch = Batch {
            shard: self.shard,
            flush,
        };
        match self.sender.try_send(batch) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(batch) | TrySendError::Disconnected(batch)) => {
                self.durable.refused[self.shard].store(true, Relaxed);
                Err(batch.flush)
            }
        }
    }

    /// Queues `flush`, waiting for room: only when the shard stops.
    pub fn send(&self, flush: Flush) {
        let batch = Batch {
            shard: self.shard,
            flush,
        };
        // The writer ends only once every handle is dropped: it is there to receive.
        let _ = self.sender.send(batch);
    }

    /// Writes of this shard's files that failed, since start.
    pub fn write_errors(&self) -> u64 {
        self.write_errors[self.shard].load(Relaxed)
    }

    /// Whether the store writes now: false from a failed write or sync of any shard's files
    /// until every shard's files were written again.
    pub fn writable(&self) -> bool {
        self.writable.load(Relaxed)
    }
}

/// A live message of a shard's topics, as last written.
struct Live {
    stamp: u64,
    message: Arc<RoutedMessage>,
    /// Wall-clock expiry, fixed when first written so that every rewrite keeps it.
    expires_at_ms: Option<u64>,
    record_bytes: u64,
}

/// A persistent session of a shard's client identifiers, as last written.
pub(super) struct LiveSession {
    pub(super) stamp: u64,
    pub(super) image: SessionImage,
    /// Wall-clock times, fixed when first written so that every rewrite keeps them.
    pub(super) expires_at_ms: Option<u64>,
    pub(super) message_expiry_ms: Vec<Option<u64>>,
    /// Since when its client is away, fixed by the first record written while it was;
    /// `None` while connected. Orders the sessions at load for the offline bound.
    pub(super) offline_since_ms: Option<u64>,
    /// When the delayed will is due, and when its message expires.
    pub(super) will_due_ms: u64,
    pub(super) will_expiry_ms: Option<u64>,
    pub(super) record_bytes: u64,
}

impl LiveSession {
    /// `image` with its times on the wall clock; `was_offline_since_ms` from the session's
    /// earlier record, if any, so that a session offline since then stays so.
    pub(super) fn new(
        stamp: u64,
        image: SessionImage,
        was_offline_since_ms: Option<u64>,
        now: Instant,
        now_ms: u64,
    ) -> LiveSession {
        let will = image.delayed_will.as_ref();
        LiveSession {
            stamp,
            expires_at_ms: wall_expiry(image.expires_at, now, now_ms),
            message_expiry_ms: image
                .messages
                .iter()
                .map(|queued| wall_expiry(queued.message.expires_at, now, now_ms))
                .collect(),
            offline_since_ms: match image.connected {
                true => None,
                false => Some(was_offline_since_ms.unwrap_or(now_ms)),
            },
            will_due_ms: will
                .and_then(|will| wall_expiry(Some(will.due), now, now_ms))
                .unwrap_or(0),
            will_expiry_ms: will.and_then(|will| wall_expiry(will.message.expires_at, now, now_ms)),
            image,
            record_bytes: 0,
        }
    }

    /// What its SESSION record is encoded from.
    pub(super) fn record(&self) -> SessionRef<'_> {
        SessionRef {
            stamp: self.stamp,
            image: &self.image,
            expires_at_ms: self.expires_at_ms,
            offline_since_ms: self.offline_since_ms,
            message_expiry_ms: &self.message_expiry_ms,
            will_due_ms: self.will_due_ms,
            will_expiry_ms: self.will_expiry_ms,
        }
    }
}

/// One shard's files and what they hold.
struct ShardLog {
    dir: PathBuf,
    /// `None` until the first compaction opened it, or after it failed.
    log: Option<File>,
    /// Bytes of records in the log (the header not counted).
    log_bytes: u64,
    live: HashMap<Box<str>, Live>,
    sessions: HashMap<Box<str>, LiveSession>,
    /// Bytes of the records of `live` and `sessions`.
    live_bytes: u64,
    /// Records encoded since the last write.
    buf: Vec<u8>,
    /// A write or sync failed: the log may end in a partial record, so it is not appended to
    /// again; the next write rewrites the snapshot from `live` instead.
    dirty: bool,
    /// Barriers answered by the batches applied since the last successful write: reported
    /// once the shard's files hold them (kept while `dirty`).
    echoes: Vec<Echo>,
    /// The highest mark of the batches applied so far: reported likewise.
    mark: u64,
}

/// The writer thread's state.
pub(super) struct Writer {
    logs: Vec<ShardLog>,
    durability: Durability,
    /// `compaction_log_ratio` and `compaction_log_bytes_min` say when a log is compacted,
    /// `store_flushes_per_write_max` how many batches one write and sync cover (group commit),
    /// `store_retry_interval_ms` how soon a failed write is tried again (by rewriting the
    /// shard's snapshot) even if no update comes.
    limits: StoreLimits,
    /// The last stamp given; stamps grow across restarts (see [`Writer::next_stamp`]).
    stamp: u64,
    /// Whether writes are failing now: logged once when they start failing and once when
    /// every shard's files are written again.
    failing: bool,
    write_errors: Arc<[AtomicU64]>,
    /// `!failing`, for the shards: while false they refuse QoS 1/2 publishes.
    writable: Arc<AtomicBool>,
    /// Where durable barriers are reported, and how their entry shard is woken to read them.
    durable: Arc<Durable>,
    wake: Box<dyn Fn(usize) + Send>,
}

/// What the writer shares with the shards: its error counts and state, the durable barriers,
/// and how to wake a shard.
pub(super) struct WriterLinks {
    pub(super) write_errors: Arc<[AtomicU64]>,
    pub(super) writable: Arc<AtomicBool>,
    pub(super) durable: Arc<Durable>,
    pub(super) wake: Box<dyn Fn(usize) + Send>,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The wall-clock time of `at`, in Unix milliseconds.
pub(crate) fn wall_expiry(at: Option<Instant>, now: Instant, now_ms: u64) -> Option<u64> {
    let left = at?.saturating_duration_since(now);
    let left_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
    // 0 means "never" in a record.
    Some(now_ms.saturating_add(left_ms).max(1))
}

impl Writer {
    /// The writer of `shard_count` shards' directories, with what start-up loaded: each
    /// message (with its wall-clock expiry) goes to its owner shard's live set.
    pub(super) fn new(
        data_dir: &Path,
        durability: Durability,
        limits: StoreLimits,
        stamp: u64,
        loaded: Vec<(Arc<RoutedMessage>, Option<u64>)>,
        sessions: Vec<LiveSession>,
        links: WriterLinks,
    ) -> Writer {
        let WriterLinks {
            write_errors,
            writable,
            durable,
            wake,
        } = links;
        let shard_count = write_errors.len();
        let mut writer = Writer {
            logs: (0..shard_count)
                .map(|shard| ShardLog {
                    dir: files::shard_dir(data_dir, shard),
                    log: None,
                    log_bytes: 0,
                    live: HashMap::new(),
                    sessions: HashMap::new(),
                    live_bytes: 0,
                    buf: Vec::new(),
                    dirty: true,
                    echoes: Vec::new(),
                    mark: 0,
                })
                .collect(),
            durability,
            limits,
            stamp,
            failing: false,
            write_errors,
            writable,
            durable,
            wake,
        };
        for (message, expires_at_ms) in loaded {
            let shard = crate::broker::Broker::owner_shard(&message.topic, shard_count);
            let stamp = writer.next_stamp();
            writer.logs[shard].live.insert(
                message.topic.clone(),
                Live {
                    stamp,
                    message,
                    expires_at_ms,
                    record_bytes: 0,
                },
            );
        }
        for mut session in sessions {
            let shard = crate::broker::Broker::owner_shard(&session.image.client_id, shard_count);
            session.stamp = writer.next_stamp();
            let client_id = session.image.client_id.clone();
            writer.logs[shard].sessions.insert(client_id, session);
        }
        writer
    }

    /// Rewrites every shard's snapshot from what was loaded, so that torn tails are cut and
    /// every topic is in its owner's files. Returns whether all succeeded.
    pub(super) fn compact_all(&mut self) -> bool {
        let now_ms = unix_ms(SystemTime::now());
        let all = (0..self.logs.len()).all(|shard| self.compact(shard, now_ms));
        self.note_recovery();
        all
    }

    /// A stamp larger than every one before, in this run or an earlier one: the wall clock in
    /// nanoseconds, or the last stamp + 1 when the clock is behind it.
    fn next_stamp(&mut self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            });
        self.stamp = wall.max(self.stamp + 1);
        self.stamp
    }

    pub(super) fn run(mut self, batches: Receiver<Batch>) {
        let retry_after = Duration::from_millis(self.limits.retry_interval_ms.into());
        let group_more = self.limits.flushes_per_write_max as usize - 1;
        loop {
            let first = if self.logs.iter().any(|log| log.dirty) {
                match batches.recv_timeout(retry_after) {
                    Ok(batch) => Some(batch),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match batches.recv() {
                    Ok(batch) => Some(batch),
                    Err(_) => break,
                }
            };
            if let Some(batch) = first {
                self.apply(batch);
                for batch in batches.try_iter().take(group_more) {
                    self.apply(batch);
                }
                // The queue has room now: a shard it refused hands its flush over while this
                // group is written, rather than at its next tick (still the fallback, should
                // the refusal be noted just after this).
                for shard in self.durable.take_refused() {
                    (self.wake)(shard);
                }
            }
            self.write_out();
        }
        self.write_out();
    }

    /// Encodes a batch's writes into its shard's buffer and live set: retained updates
    /// first, then sessions in the order the shard gave them, so that a session's inbound
    /// QoS 2 state follows what its publishes changed (`broker/session_writes.rs`).
    fn apply(&mut self, batch: Batch) {
        let now = Instant::now();
        let now_ms = unix_ms(SystemTime::now());
        let log = &mut self.logs[batch.shard];
        log.echoes.extend(batch.flush.echoes);
        log.mark = log.mark.max(batch.flush.mark);
        self.apply_retained(batch.shard, batch.flush.retained, now, now_ms);
        for write in batch.flush.sessions {
            let stamp = self.next_stamp();
            let log = &mut self.logs[batch.shard];
            match write {
                SessionWrite::Set(image) => {
                    let was_offline_since_ms = log
                        .sessions
                        .get(&image.client_id)
                        .and_then(|old| old.offline_since_ms);
                    let mut session =
                        LiveSession::new(stamp, image, was_offline_since_ms, now, now_ms);
                    session.record_bytes = encode_session(&mut log.buf, &session);
                    log.live_bytes += session.record_bytes;
                    let client_id = session.image.client_id.clone();
                    if let Some(old) = log.sessions.insert(client_id, session) {
                        log.live_bytes -= old.record_bytes;
                    }
                }
                // A session moved to another node of the cluster ends here all the same.
                SessionWrite::Ended(client_id) | SessionWrite::Moved(client_id) => {
                    if let Some(old) = log.sessions.remove(&client_id) {
                        log.live_bytes -= old.record_bytes;
                        session_record::encode_end(&mut log.buf, stamp, &client_id);
                    }
                }
            }
        }
    }

    fn apply_retained(
        &mut self,
        shard: usize,
        retained: Vec<RetainedWrite>,
        now: Instant,
        now_ms: u64,
    ) {
        for write in retained {
            let stamp = self.next_stamp();
            let log = &mut self.logs[shard];
            match write.message {
                Some(message) => {
                    let expires_at_ms = wall_expiry(message.expires_at, now, now_ms);
                    let record_bytes = encode(&mut log.buf, stamp, &message, expires_at_ms);
                    log.live_bytes += record_bytes;
                    let live = Live {
                        stamp,
                        message,
                        expires_at_ms,
                        record_bytes,
                    };
                    if let Some(old) = log.live.insert(write.topic, live) {
                        log.live_bytes -= old.record_bytes;
                    }
                }
                // A topic not live has nothing on disk but older deletes: nothing to write.
                None => {
                    if let Some(old) = log.live.remove(&write.topic) {
                        log.live_bytes -= old.record_bytes;
                        record::encode_delete(&mut log.buf, stamp, &write.topic);
                    }
                }
            }
        }
    }

    /// Writes every shard's buffer, syncs as `durability` says, and compacts where due.
    fn write_out(&mut self) {
        let now_ms = unix_ms(SystemTime::now());
        let sync = self.durability != Durability::None;
        for shard in 0..self.logs.len() {
            let log = &mut self.logs[shard];
            if log.dirty {
                log.buf.clear();
                self.compact(shard, now_ms);
                continue;
            }
            if log.buf.is_empty() {
                continue;
            }
            let result = match log.log.as_mut() {
                Some(file) => file
                    .write_all(&log.buf)
                    .and_then(|()| if sync { file.sync_data() } else { Ok(()) }),
                None => Err(std::io::Error::other("the log is not open")),
            };
            let written = log.buf.len() as u64;
            log.buf.clear();
            match result {
                Ok(()) => log.log_bytes += written,
                Err(e) => {
                    let log = &mut self.logs[shard];
                    log.dirty = true;
                    log.log = None;
                    let path = log.dir.join(files::LOG_FILE);
                    self.failed(shard, &format!("{}: {e}", path.display()));
                    continue;
                }
            }
            let log = &self.logs[shard];
            // At most `compaction_log_ratio` × the live data on disk, and each byte written is
            // rewritten about 1/(ratio − 1) more times; a log under the floor is cheaper to keep
            // than to rewrite.
            let ratio = u64::from(self.limits.compaction_log_ratio);
            let compact_past = self
                .limits
                .compaction_log_bytes_min
                .max(ratio.saturating_mul(log.live_bytes));
            if log.log_bytes > compact_past {
                self.compact(shard, now_ms);
            }
        }
        self.note_recovery();
        self.report_echoes();
    }

    /// Reports the barriers and marks of every shard whose files now hold all it handed over
    /// (not `dirty`: the last write, sync or snapshot rewrite succeeded), and wakes each
    /// shard concerned once. A barrier or mark is reported only after the `fdatasync` that
    /// covers it, under `sync`, the only durability whose shards send them.
    fn report_echoes(&mut self) {
        let mut woken = vec![false; self.logs.len()];
        for (shard, log) in self.logs.iter_mut().enumerate() {
            if log.dirty {
                continue;
            }
            if self.durable.report_mark(shard, log.mark) {
                woken[shard] = true;
            }
            for echo in log.echoes.drain(..) {
                self.durable.report(echo, shard);
                if let Some(wake) = woken.get_mut(echo.entry) {
                    *wake = true;
                }
            }
        }
        for (shard, _) in woken.iter().enumerate().filter(|(_, wake)| **wake) {
            (self.wake)(shard);
        }
    }

    /// Rewrites shard `shard`'s snapshot from its live set, leaving out what expired, and
    /// starts an empty log. Returns whether it succeeded.
    fn compact(&mut self, shard: usize, now_ms: u64) -> bool {
        let log = &mut self.logs[shard];
        log.live
            .retain(|_, live| live.expires_at_ms.is_none_or(|at| at > now_ms));
        let mut records = Vec::new();
        let mut live_bytes = 0;
        for live in log.live.values_mut() {
            live.record_bytes = encode(&mut records, live.stamp, &live.message, live.expires_at_ms);
            live_bytes += live.record_bytes;
        }
        log.sessions
            .retain(|_, session| session.expires_at_ms.is_none_or(|at| at > now_ms));
        for session in log.sessions.values_mut() {
            session.record_bytes = encode_session(&mut records, session);
            live_bytes += session.record_bytes;
        }
        log.live_bytes = live_bytes;
        let sync = self.durability != Durability::None;
        match files::compact(&log.dir, &records, sync) {
            Ok(file) => {
                log.log = Some(file);
                log.log_bytes = 0;
                log.dirty = false;
                true
            }
            Err(e) => {
                log.log = None;
                log.dirty = true;
                self.failed(shard, &e.to_string());
                false
            }
        }
    }

    fn failed(&mut self, shard: usize, why: &str) {
        self.write_errors[shard].fetch_add(1, Relaxed);
        if !self.failing {
            self.failing = true;
            self.writable.store(false, Relaxed);
            error!(
                "store: cannot write retained messages and sessions: {why}; QoS 1/2 publishes refused (MQTT 5: 0x97 Quota exceeded, 3.x: not acknowledged) and QoS 0 served until it can, retrying every {} ms (counted in fanfare_store_write_errors_total)",
                self.limits.retry_interval_ms
            );
        }
    }

    /// Ends a failure once every shard's files were written again: a shard's log that failed
    /// stays unwritten (`dirty`) until its snapshot is rewritten.
    fn note_recovery(&mut self) {
        if self.failing && !self.logs.iter().any(|log| log.dirty) {
            self.failing = false;
            self.writable.store(true, Relaxed);
            info!("store: writes succeed again; QoS 1/2 publishes acknowledged again");
        }
    }
}

fn encode_session(out: &mut Vec<u8>, session: &LiveSession) -> u64 {
    let (bytes, left_out) = session_record::encode(out, &session.record());
    if left_out > 0 {
        log::warn!(
            "store: session {}: {left_out} queued messages past the largest record not written",
            session.image.client_id
        );
    }
    bytes as u64
}

fn encode(
    out: &mut Vec<u8>,
    stamp: u64,
    message: &RoutedMessage,
    expires_at_ms: Option<u64>,
) -> u64 {
    let set = SetRef {
        stamp,
        topic: &message.topic,
        qos: message.qos,
        expires_at_ms,
        properties: &message.properties,
        payload: &message.payload,
    };
    record::encode_set(out, &set) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::cover_barrier;

    #[test]
    fn a_barrier_is_durable_once_every_shard_reported_it() {
        let durable = Durable::new(3);
        assert_eq!(durable.durable_everywhere(1), 0);
        durable.report(Echo { entry: 1, seq: 2 }, 1);
        durable.report(Echo { entry: 1, seq: 1 }, 0);
        assert_eq!(durable.durable_everywhere(1), 0, "shard 2 reported nothing");
        durable.report(Echo { entry: 1, seq: 3 }, 2);
        assert_eq!(durable.durable_everywhere(1), 1);
        durable.report(Echo { entry: 1, seq: 3 }, 0);
        assert_eq!(durable.durable_everywhere(1), 2);
        // Another entry shard's barriers are counted apart.
        assert_eq!(durable.durable_everywhere(0), 0);
    }

    #[test]
    fn a_barrier_and_a_mark_are_reported_after_the_write_that_carries_them() {
        let dir = std::env::temp_dir().join(format!("fanfare-writer-{}", std::process::id()));
        let durable = Arc::new(Durable::new(2));
        let woken = Arc::new(std::sync::Mutex::new(Vec::new()));
        let wake = {
            let woken = Arc::clone(&woken);
            Box::new(move |shard| woken.lock().expect("not poisoned").push(shard))
        };
        let links = WriterLinks {
            write_errors: (0..2).map(|_| AtomicU64::new(0)).collect(),
            writable: Arc::new(AtomicBool::new(true)),
            durable: Arc::clone(&durable),
            wake,
        };
        let mut writer = Writer::new(
            &dir,
            Durability::Sync,
            StoreLimits::default(),
            0,
            Vec::new(),
            Vec::new(),
            links,
        );
        assert!(writer.compact_all(), "{} is writable", dir.display());
        let echo = Echo { entry: 1, seq: 3 };
        let message = Arc::new(RoutedMessage::new(
            "t",
            b"v",
            crate::protocol::mqtt::QoS::AtLeastOnce,
            true,
        ));
        let flush = Flush {
            retained: vec![RetainedWrite {
                topic: "t".into(),
                message: Some(message),
            }],
            echoes: vec![echo],
            mark: 7,
            ..Flush::default()
        };
        writer.apply(Batch { shard: 0, flush });
        assert_eq!(durable.durable_everywhere(1), 0, "applied, not written");
        assert_eq!(durable.marks[0].load(Relaxed), 0, "applied, not written");
        writer.write_out();
        assert_eq!(
            durable.seqs[2].load(Relaxed),
            3,
            "entry 1, flushed by shard 0"
        );
        assert_eq!(durable.marks[0].load(Relaxed), 7);
        assert_eq!(
            *woken.lock().expect("not poisoned"),
            [0, 1],
            "shard 0 for its mark, shard 1 for its barrier"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_late_report_never_lowers_a_barrier() {
        let durable = Durable::new(1);
        durable.report(Echo { entry: 0, seq: 5 }, 0);
        durable.report(Echo { entry: 0, seq: 4 }, 0);
        assert_eq!(durable.durable_everywhere(0), 5);
    }

    #[test]
    fn a_cover_is_counted_apart_from_publish_barriers_and_other_levels() {
        let durable = Durable::new(2);
        let cover = |level, flushed_by| {
            let echo = Echo {
                entry: 1,
                seq: cover_barrier(level, 9),
            };
            durable.report(echo, flushed_by);
        };
        cover(2, 0);
        cover(2, 1);
        cover(COVER_LEVELS, 0);
        assert_eq!(
            durable.durable_everywhere(1),
            0,
            "no publish barrier answered"
        );
        let mut expected = [0; COVER_LEVELS];
        expected[1] = 9;
        assert_eq!(
            durable.covered_everywhere(1),
            expected,
            "level 7 by one shard only"
        );
        assert_eq!(durable.covered_everywhere(0), [0; COVER_LEVELS]);
    }
}
