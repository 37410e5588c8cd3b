//! The files of a data directory: `DIR/shard-<n>/retained.snapshot` (every live message of
//! shard n's topics, and every persistent session of its client identifiers, at its last
//! compaction) and `DIR/shard-<n>/retained.log` (what changed since), read at start-up and
//! rewritten by compaction.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use log::warn;

use super::StoreError;
use super::record::{self, Key, MAGIC, Record, StoredMessage};
use super::session_record::StoredSession;

pub const SNAPSHOT_FILE: &str = "retained.snapshot";
pub const LOG_FILE: &str = "retained.log";
/// Written beside a snapshot or log and renamed over it once complete.
const TMP_SUFFIX: &str = ".tmp";

pub fn shard_dir(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join(format!("shard-{shard}"))
}

/// The shard numbers of the `shard-<n>` directories in `data_dir`.
pub fn shard_dirs(data_dir: &Path) -> Result<Vec<usize>, StoreError> {
    let mut shards = Vec::new();
    for entry in std::fs::read_dir(data_dir).map_err(StoreError::io(data_dir))? {
        let entry = entry.map_err(StoreError::io(data_dir))?;
        let name = entry.file_name();
        let shard = name
            .to_str()
            .and_then(|name| name.strip_prefix("shard-"))
            .and_then(|n| n.parse().ok());
        if let Some(shard) = shard {
            shards.push(shard);
        }
    }
    shards.sort_unstable();
    Ok(shards)
}

/// What the files of a data directory hold, newest record per topic.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The messages still retained: deleted and expired ones are left out.
    pub messages: Vec<StoredMessage>,
    /// The persistent sessions: ended and expired ones are left out, and so are their
    /// expired messages.
    pub sessions: Vec<StoredSession>,
    /// The largest stamp read: stamps written from now on are larger.
    pub stamp_max: u64,
    /// Torn tails cut, and records skipped with `recover`, for the start-up log.
    pub repairs: usize,
}

/// Reads every shard directory's snapshot and log. `now_ms` (Unix milliseconds) decides what
/// expired.
pub fn load(data_dir: &Path, recover: bool, now_ms: u64) -> Result<Loaded, StoreError> {
    // Keyed by (is a session, topic or client identifier).
    let mut newest: HashMap<(bool, Box<str>), Record> = HashMap::new();
    let mut loaded = Loaded::default();
    for shard in shard_dirs(data_dir)? {
        let dir = shard_dir(data_dir, shard);
        for name in [SNAPSHOT_FILE, LOG_FILE] {
            let path = dir.join(name);
            let Some(records) = read_records(&path, recover, &mut loaded.repairs)? else {
                continue;
            };
            for record in records {
                loaded.stamp_max = loaded.stamp_max.max(record.stamp());
                let key = match record.key() {
                    Key::Retained(topic) => (false, topic.into()),
                    Key::Session(client_id) => (true, client_id.into()),
                };
                match newest.get(&key) {
                    Some(held) if held.stamp() >= record.stamp() => {}
                    _ => {
                        newest.insert(key, record);
                    }
                }
            }
        }
    }
    let live = |expires_at_ms: Option<u64>| expires_at_ms.is_none_or(|at| at > now_ms);
    for record in newest.into_values() {
        match record {
            Record::Set { message, .. } if live(message.expires_at_ms) => {
                loaded.messages.push(message);
            }
            Record::Session { mut session, .. } if live(session.expires_at_ms) => {
                session
                    .messages
                    .retain(|queued| live(queued.message.expires_at_ms));
                loaded.sessions.push(session);
            }
            Record::Set { .. }
            | Record::Session { .. }
            | Record::Delete { .. }
            | Record::SessionEnd { .. } => {}
        }
    }
    Ok(loaded)
}

/// The records of one file; `None` if it does not exist. A torn tail is cut here only in what
/// is returned: the start-up compaction rewrites the file without it.
fn read_records(
    path: &Path,
    recover: bool,
    repairs: &mut usize,
) -> Result<Option<Vec<Record>>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.into(),
                source,
            });
        }
    };
    if bytes.len() < MAGIC.len() && MAGIC.starts_with(&bytes) {
        // Created, and the crash came before its header was written.
        return Ok(Some(Vec::new()));
    }
    if !bytes.starts_with(&MAGIC) {
        if recover {
            warn!("{}: not a store file, skipped (--recover)", path.display());
            *repairs += 1;
            return Ok(Some(Vec::new()));
        }
        return Err(StoreError::NotAStoreFile { path: path.into() });
    }
    let body = &bytes[MAGIC.len()..];
    let scan = record::scan(body, recover).map_err(|corrupt| StoreError::Corrupt {
        path: path.into(),
        offset: MAGIC.len() + corrupt.offset,
        error: corrupt.error,
    })?;
    if let Some(at) = scan.torn_at {
        warn!(
            "{}: torn record at byte {} cut ({} bytes): the last write before the broker stopped did not complete",
            path.display(),
            MAGIC.len() + at,
            body.len() - at
        );
        *repairs += 1;
    }
    for (start, end) in &scan.skipped {
        warn!(
            "{}: unreadable bytes {}..{} skipped (--recover)",
            path.display(),
            MAGIC.len() + start,
            MAGIC.len() + end
        );
        *repairs += 1;
    }
    Ok(Some(scan.records))
}

/// Replaces the shard's snapshot with `records` (encoded, without the header) and its log with
/// an empty one; returns the new log, open for appending.
///
/// Crash-safe at every step: each new file is written beside the old and renamed over it, and
/// a crash between the two renames leaves the new snapshot with the old log, whose records are
/// all older (smaller stamps) than the snapshot's of the same topics, so a load keeps the
/// newest anyway.
pub fn compact(dir: &Path, records: &[u8], sync: bool) -> Result<File, StoreError> {
    std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
    let snapshot = dir.join(SNAPSHOT_FILE);
    replace(&snapshot, records, sync)?;
    let log = dir.join(LOG_FILE);
    replace(&log, &[], sync)?;
    if sync {
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(StoreError::io(dir))?;
    }
    OpenOptions::new()
        .append(true)
        .open(&log)
        .map_err(StoreError::io(log))
}

/// Writes `MAGIC` and `records` to `path.tmp`, then renames it over `path`.
fn replace(path: &Path, records: &[u8], sync: bool) -> Result<(), StoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(&MAGIC)?;
        file.write_all(records)?;
        if sync {
            file.sync_data()?;
        }
        Ok(())
    };
    write().map_err(StoreError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(StoreError::io(path))
}

/// Removes the directory of a shard this broker no longer has (fewer shards than before),
/// once its topics live in the other shards' snapshots.
pub fn remove_shard_dir(data_dir: &Path, shard: usize) -> Result<(), StoreError> {
    let dir = shard_dir(data_dir, shard);
    std::fs::remove_dir_all(&dir).map_err(StoreError::io(dir))
}
