//! The files of one bridge's store-and-forward queue (`queue.rs`), written and read on the
//! bridge's own thread only, never on a shard loop (`docs/bridges.md`).
//!
//! ```text
//! DIR/lock                          flock'd while a broker uses the queue
//! DIR/<first seq, 20 digits>.queue  MAGIC record*, in the store's framing
//!                                   (`crate::store::record`: length, CRC-32, body)
//! body = kind u8 | seq u64 LE | topic_len u16 LE | topic
//!   kind 1 MESSAGE: qos u8 | flags u8 (bit 0 RETAIN) | payload_len u32 LE | payload
//!                   (written before the queue kept properties: still read, no longer written)
//!   kind 2 DONE:    every message up to `seq` was acknowledged by the remote or dropped
//!                   (`topic` empty)
//!   kind 3 MESSAGE: qos u8 | flags u8 (bit 0 RETAIN) | expires_at_ms u64 LE (Unix ms,
//!                   0: never) | payload_len u32 LE | payload | properties_len u32 LE |
//!                   properties (the MQTT 5 property bytes of `RoutedMessage::properties`)
//! ```
//!
//! The expiry is kept as a wall-clock deadline, since an `Instant` means nothing after a
//! restart: a message whose deadline passed while the broker was down is dropped at load.
//!
//! Messages are appended to the newest file (a *segment*) in the order they are sent; a
//! segment past `queue_segment_bytes_max` is closed and the next one named after its first
//! sequence number. DONE records go to the newest segment too, so every DONE record sits in
//! a segment no older than the messages it covers, and a closed segment whose messages are
//! all done is removed whole. At load, what is done is the highest DONE record, or everything
//! before the oldest segment left; a torn last record of a segment is cut (a crash in the
//! middle of a write), anything else unreadable stops start-up with the file and offset.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use log::warn;

use crate::config::Durability;
use crate::protocol::mqtt::QoS;
use crate::store::record::{self, Reader, finish, put_bytes32};
use crate::store::{DataDirLock, StoreError};

/// The first bytes of every segment: not a store file (`crate::store::record::MAGIC`).
pub const MAGIC: [u8; 8] = *b"fnfqueu\x01";

/// A message without properties or expiry: what the queue wrote before it kept them.
const KIND_MESSAGE_BARE: u8 = 1;
const KIND_DONE: u8 = 2;
const KIND_MESSAGE: u8 = 3;
const FLAG_RETAIN: u8 = 1;
const SUFFIX: &str = "queue";

/// A message of the queue as its record holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub seq: u64,
    /// The topic on the remote broker.
    pub topic: Box<str>,
    pub qos: QoS,
    pub retain: bool,
    pub payload: Box<[u8]>,
    /// The MQTT 5 properties forwarded with it (`RoutedMessage::properties`); empty for none.
    pub properties: Box<[u8]>,
    /// When its Message Expiry Interval runs out, in Unix milliseconds; `None`: never.
    pub expires_at_ms: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Message(StoredMessage),
    Done(u64),
}

/// Bytes of the MESSAGE record of `topic`, `payload` and `properties`: what the queue counts
/// against `queue_bytes_max`, on disk or not.
pub fn message_record_bytes(topic: &str, payload: &[u8], properties: &[u8]) -> u64 {
    let head = record::HEADER_BYTES + 1 + 8 + 2 + topic.len();
    (head + 1 + 1 + 8 + 4 + payload.len() + 4 + properties.len()) as u64
}

fn encode_message(out: &mut Vec<u8>, message: &StoredMessage) -> usize {
    let start = record::begin(out, KIND_MESSAGE, message.seq, &message.topic);
    out.push(message.qos as u8);
    out.push(if message.retain { FLAG_RETAIN } else { 0 });
    assert!(message.expires_at_ms != Some(0), "0 stands for never");
    out.extend_from_slice(&message.expires_at_ms.unwrap_or(0).to_le_bytes());
    put_bytes32(out, &message.payload);
    put_bytes32(out, &message.properties);
    finish(out, start)
}

fn encode_done(out: &mut Vec<u8>, through: u64) -> usize {
    let start = record::begin(out, KIND_DONE, through, "");
    finish(out, start)
}

fn parse(body: &[u8]) -> Option<Entry> {
    let mut reader = Reader(body);
    let kind = reader.u8()?;
    let seq = reader.u64()?;
    let topic_len = usize::from(reader.u16()?);
    let topic = std::str::from_utf8(reader.take(topic_len)?).ok()?;
    let entry = match kind {
        KIND_DONE if topic.is_empty() => Entry::Done(seq),
        KIND_MESSAGE_BARE | KIND_MESSAGE => {
            let qos = QoS::from_bits(reader.u8()?)?;
            let flags = reader.u8()?;
            let expires_at_ms = match kind {
                KIND_MESSAGE => Some(reader.u64()?).filter(|&ms| ms != 0),
                _ => None,
            };
            let payload = reader.bytes32()?.into();
            let properties = match kind {
                KIND_MESSAGE => reader.bytes32()?.into(),
                _ => Box::default(),
            };
            Entry::Message(StoredMessage {
                seq,
                topic: topic.into(),
                qos,
                retain: flags & FLAG_RETAIN != 0,
                payload,
                properties,
                expires_at_ms,
            })
        }
        _ => return None,
    };
    reader.0.is_empty().then_some(entry)
}

/// A closed segment: removed once every message in it is done.
struct Closed {
    path: PathBuf,
    /// The sequence number of its last message; `None`: it holds none.
    last_seq: Option<u64>,
}

/// The segment written to.
struct Open {
    path: PathBuf,
    file: File,
    bytes: u64,
    last_seq: Option<u64>,
}

/// What the files held at start-up.
pub struct Loaded {
    /// The messages not yet done, in order.
    pub messages: Vec<StoredMessage>,
    /// The highest sequence number done: the next message is numbered above every one seen.
    pub done_through: u64,
    pub next_seq: u64,
}

pub struct Journal {
    dir: PathBuf,
    _lock: DataDirLock,
    closed: VecDeque<Closed>,
    /// `None` after a failed write, until the next append opens a new segment: a write that
    /// failed may have left part of a record, which must stay the segment's last.
    open: Option<Open>,
    segment_bytes_max: u64,
    durability: Durability,
    /// Above every message written: a segment started here holds no message yet.
    next_seq: u64,
    /// Written since the last sync.
    dirty: bool,
    buf: Vec<u8>,
}

impl Journal {
    /// Locks `dir` (created if missing), reads its segments and starts a new one.
    pub fn open(
        dir: &Path,
        segment_bytes_max: u64,
        durability: Durability,
    ) -> Result<(Journal, Loaded), StoreError> {
        let lock = DataDirLock::acquire(dir)?;
        let mut closed = VecDeque::new();
        let mut messages = Vec::new();
        let mut done_through = 0;
        let mut next_seq = 1;
        for (index, (first_seq, path)) in segments(dir)?.into_iter().enumerate() {
            if index == 0 {
                // Segments before this one were removed: all theirs was done.
                done_through = first_seq.saturating_sub(1);
            }
            next_seq = next_seq.max(first_seq);
            let mut last_seq = None;
            for entry in read_segment(&path)? {
                match entry {
                    Entry::Done(through) => done_through = done_through.max(through),
                    Entry::Message(message) => {
                        next_seq = next_seq.max(message.seq.saturating_add(1));
                        last_seq = Some(message.seq);
                        messages.push(message);
                    }
                }
            }
            closed.push_back(Closed { path, last_seq });
        }
        messages.retain(|message| message.seq > done_through);
        messages.sort_by_key(|message| message.seq);
        messages.dedup_by_key(|message| message.seq);
        let mut journal = Journal {
            dir: dir.to_path_buf(),
            _lock: lock,
            closed,
            open: None,
            segment_bytes_max,
            durability,
            next_seq,
            dirty: false,
            buf: Vec::new(),
        };
        journal.release(done_through);
        journal
            .start_segment(next_seq)
            .map_err(StoreError::io(dir))?;
        let loaded = Loaded {
            messages,
            done_through,
            next_seq,
        };
        Ok((journal, loaded))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `message`, numbered above every message before it, to what the next
    /// [`Journal::write`] writes; returns its bytes. A segment past `queue_segment_bytes_max`
    /// is written and closed first, which bounds what waits to be written.
    pub fn append(&mut self, message: &StoredMessage) -> std::io::Result<u64> {
        assert!(
            message.seq >= self.next_seq,
            "messages are numbered in order"
        );
        let pending = self.buf.len() as u64;
        let full = self
            .open
            .as_ref()
            .is_none_or(|open| open.bytes + pending >= self.segment_bytes_max);
        self.next_seq = message.seq.saturating_add(1);
        if full {
            self.write()?;
            self.start_segment(message.seq)?;
        }
        let bytes = encode_message(&mut self.buf, message) as u64;
        if let Some(open) = self.open.as_mut() {
            open.last_seq = Some(message.seq);
        }
        Ok(bytes)
    }

    /// Notes that every message up to `through` is done (written by the next
    /// [`Journal::write`]), and removes the closed segments that hold no other: they can go
    /// before the note is on disk, since a load counts everything before the oldest segment
    /// left as done.
    pub fn done(&mut self, through: u64) -> std::io::Result<()> {
        if self.open.is_none() {
            self.start_segment(self.next_seq)?;
        }
        encode_done(&mut self.buf, through);
        self.release(through);
        Ok(())
    }

    /// Writes what was appended since the last write, in one system call.
    pub fn write(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(open) = self.open.as_mut() else {
            self.buf.clear();
            return Err(std::io::Error::other("no segment open"));
        };
        self.dirty = true;
        let written = open.file.write_all(&self.buf);
        let bytes = self.buf.len() as u64;
        self.buf.clear();
        match written {
            Ok(()) => {
                open.bytes += bytes;
                Ok(())
            }
            Err(e) => {
                // Part of a record may have reached the file: it must stay the last one.
                self.close_open();
                Err(e)
            }
        }
    }

    /// Whether something was written and not yet synced, under a durability that syncs.
    pub fn unsynced(&self) -> bool {
        self.dirty && self.durability != Durability::None
    }

    /// Writes what waits, then syncs what was written since the last sync, if the
    /// durability asks for syncs at all.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.write()?;
        if !self.dirty || self.durability == Durability::None {
            return Ok(());
        }
        if let Some(open) = &self.open {
            open.file.sync_data()?;
        }
        self.dirty = false;
        Ok(())
    }

    /// Closes the open segment (synced first, so a removed later one never leaves an
    /// unsynced earlier one) and starts `DIR/<first_seq>.queue`.
    fn start_segment(&mut self, first_seq: u64) -> std::io::Result<()> {
        if let Some(open) = &self.open
            && self.durability != Durability::None
        {
            open.file.sync_data()?;
        }
        self.close_open();
        let path = self.dir.join(format!("{first_seq:020}.{SUFFIX}"));
        // A segment of this name holds no message (the next one is numbered `first_seq`),
        // so nothing in it is lost.
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        file.write_all(&MAGIC)?;
        if self.durability != Durability::None {
            file.sync_data()?;
            File::open(&self.dir)?.sync_all()?;
        }
        self.closed.retain(|closed| closed.path != path);
        self.open = Some(Open {
            path,
            file,
            bytes: MAGIC.len() as u64,
            last_seq: None,
        });
        Ok(())
    }

    fn close_open(&mut self) {
        if let Some(open) = self.open.take() {
            self.closed.push_back(Closed {
                path: open.path,
                last_seq: open.last_seq,
            });
        }
    }

    /// Removes the oldest closed segments whose messages are all done.
    fn release(&mut self, through: u64) {
        while let Some(oldest) = self.closed.front() {
            if oldest.last_seq.is_some_and(|last| last > through) {
                return;
            }
            if let Err(e) = std::fs::remove_file(&oldest.path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!("{}: cannot remove: {e}", oldest.path.display());
            }
            self.closed.pop_front();
        }
    }
}

/// The segments of `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(StoreError::io(dir))? {
        let entry = entry.map_err(StoreError::io(dir))?;
        let path = entry.path();
        let first_seq = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(SUFFIX)?.strip_suffix('.'))
            .and_then(|stem| stem.parse::<u64>().ok());
        if let Some(first_seq) = first_seq {
            found.push((first_seq, path));
        }
    }
    found.sort();
    Ok(found)
}

/// The records of one segment; a torn last record is cut from the file.
fn read_segment(path: &Path) -> Result<Vec<Entry>, StoreError> {
    let bytes = std::fs::read(path).map_err(StoreError::io(path))?;
    if bytes.len() < MAGIC.len() && MAGIC.starts_with(&bytes) {
        // Created, and the crash came before its header was written.
        return Ok(Vec::new());
    }
    if !bytes.starts_with(&MAGIC) {
        return Err(StoreError::NotAStoreFile { path: path.into() });
    }
    let body = &bytes[MAGIC.len()..];
    let scan = record::scan_with(body, false, parse).map_err(|corrupt| StoreError::Corrupt {
        path: path.into(),
        offset: MAGIC.len() + corrupt.offset,
        error: corrupt.error,
    })?;
    if let Some(at) = scan.torn_at {
        let keep = (MAGIC.len() + at) as u64;
        warn!(
            "{}: torn record at byte {keep} cut ({} bytes): the last write before the broker stopped did not complete",
            path.display(),
            body.len() - at
        );
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(StoreError::io(path))?;
        file.set_len(keep).map_err(StoreError::io(path))?;
    }
    Ok(scan.records)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("fanfare-journal-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn message(seq: u64) -> StoredMessage {
        StoredMessage {
            seq,
            topic: format!("t/{seq}").into(),
            qos: QoS::AtLeastOnce,
            retain: seq.is_multiple_of(2),
            payload: vec![seq as u8; 100].into(),
            // A user property ("k", "v"), then content type "t" on every other message.
            properties: match seq % 2 {
                0 => Box::default(),
                _ => vec![0x26, 0, 1, b'k', 0, 1, b'v', 0x03, 0, 1, b't'].into(),
            },
            expires_at_ms: seq.is_multiple_of(3).then_some(1_700_000_000_000 + seq),
        }
    }

    /// A MESSAGE record as the queue wrote it before it kept properties and expiry.
    fn encode_bare(out: &mut Vec<u8>, seq: u64) {
        let start = record::begin(out, KIND_MESSAGE_BARE, seq, &format!("t/{seq}"));
        out.push(QoS::AtLeastOnce as u8);
        out.push(FLAG_RETAIN);
        put_bytes32(out, b"old");
        finish(out, start);
    }

    fn open(dir: &Path) -> (Journal, Loaded) {
        Journal::open(dir, 1024, Durability::Batch).expect("opens")
    }

    fn seqs(loaded: &Loaded) -> Vec<u64> {
        loaded.messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn records_round_trip_and_the_size_is_known_before_encoding() {
        let mut out = Vec::new();
        for seq in [6, 7] {
            let stored = message(seq);
            let written = encode_message(&mut out, &stored) as u64;
            let expected = message_record_bytes(&stored.topic, &stored.payload, &stored.properties);
            assert_eq!(written, expected);
        }
        encode_done(&mut out, 7);
        let scan = record::scan_with(&out, false, parse).expect("clean");
        let expected = vec![
            Entry::Message(message(6)),
            Entry::Message(message(7)),
            Entry::Done(7),
        ];
        assert_eq!(scan.records, expected);
        assert!(!message(7).properties.is_empty());
        assert_eq!(message(6).expires_at_ms, Some(1_700_000_000_006));
    }

    #[test]
    fn records_written_before_properties_still_load() {
        let dir = TempDir::new("bare");
        std::fs::create_dir_all(dir.path()).expect("created");
        let mut bytes = MAGIC.to_vec();
        encode_bare(&mut bytes, 1);
        encode_message(&mut bytes, &message(2));
        let path = dir.path().join(format!("{:020}.{SUFFIX}", 1));
        std::fs::write(&path, &bytes).expect("written");
        let (_journal, loaded) = open(dir.path());
        let old = StoredMessage {
            seq: 1,
            topic: "t/1".into(),
            qos: QoS::AtLeastOnce,
            retain: true,
            payload: (*b"old").into(),
            properties: Box::default(),
            expires_at_ms: None,
        };
        assert_eq!(loaded.messages, vec![old, message(2)]);
    }

    #[test]
    fn what_is_not_done_survives_a_reopen_in_order() {
        let dir = TempDir::new("survives");
        let (mut journal, loaded) = open(dir.path());
        assert_eq!((loaded.messages.len(), loaded.next_seq), (0, 1));
        for seq in 1..=30 {
            journal.append(&message(seq)).expect("written");
        }
        journal.done(12).expect("written");
        journal.write().expect("written");
        drop(journal);
        let (mut journal, loaded) = open(dir.path());
        assert_eq!(seqs(&loaded), (13..=30).collect::<Vec<_>>());
        assert_eq!(loaded.messages[0], message(13));
        assert_eq!((loaded.done_through, loaded.next_seq), (12, 31));
        journal.done(30).expect("written");
        journal.write().expect("written");
        drop(journal);
        let (_journal, loaded) = open(dir.path());
        assert!(loaded.messages.is_empty());
        assert_eq!(loaded.next_seq, 31, "numbers keep growing");
    }

    #[test]
    fn done_segments_are_removed() {
        let dir = TempDir::new("removed");
        let (mut journal, _) = open(dir.path());
        for seq in 1..=40 {
            journal.append(&message(seq)).expect("written");
        }
        journal.write().expect("written");
        let count = || segments(dir.path()).expect("listed").len();
        let before = count();
        assert!(before > 3, "1 KiB segments: {before}");
        journal.done(40).expect("written");
        assert_eq!(count(), 1, "only the open segment is left");
    }

    #[test]
    fn a_torn_tail_is_cut_and_corruption_names_the_file() {
        let dir = TempDir::new("torn");
        let (mut journal, _) = open(dir.path());
        for seq in 1..=3 {
            journal.append(&message(seq)).expect("written");
        }
        journal.write().expect("written");
        drop(journal);
        let (_, path) = segments(dir.path()).expect("listed").pop().expect("one");
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() - 10]).expect("cut");
        let (journal, loaded) = open(dir.path());
        assert_eq!(seqs(&loaded), vec![1, 2]);
        drop(journal);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[MAGIC.len() + record::HEADER_BYTES + 4] ^= 0x40;
        std::fs::write(&path, &bytes).expect("damaged");
        let Err(error) = Journal::open(dir.path(), 1024, Durability::Batch) else {
            panic!("corruption stops the load");
        };
        assert!(matches!(error, StoreError::Corrupt { offset, .. } if offset == MAGIC.len()));
    }

    #[test]
    fn arbitrary_bodies_never_panic() {
        for len in 0..64 {
            let body: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let _ = parse(&body);
        }
    }
}
