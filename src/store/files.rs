//! The files of a data directory: `DIR/shard-<n>/retained.snapshot` (every live message of
//! shard n's topics, and every persistent session of its client identifiers, at its last
//! compaction) and `DIR/shard-<n>/retained.log` (what changed since), read at start-up and
//! rewritten by compaction.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
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

/// Files decoded at once at start-up, each on a thread of its own: checksums and allocating
/// the decoded records are most of a load's time, and files are independent. Bounded by the
/// cores too, so a directory of many shards does not start as many threads.
const LOAD_THREADS_MAX: usize = 16;

/// Reads every shard directory's snapshot and log. `now_ms` (Unix milliseconds) decides what
/// expired.
pub fn load(data_dir: &Path, recover: bool, now_ms: u64) -> Result<Loaded, StoreError> {
    let mut paths = Vec::new();
    for shard in shard_dirs(data_dir)? {
        let dir = shard_dir(data_dir, shard);
        paths.extend([SNAPSHOT_FILE, LOG_FILE].map(|name| dir.join(name)));
    }
    let mut loaded = Loaded::default();
    let files = read_all(&paths, recover, &mut loaded.repairs)?;
    // The newest record of each key, as (file, index), borrowing the key from the records
    // rather than copying a million topics.
    let total = files.iter().map(Vec::len).sum();
    let mut newest: HashMap<Key<'_>, (usize, usize)> = HashMap::with_capacity(total);
    for (file, records) in files.iter().enumerate() {
        for (index, record) in records.iter().enumerate() {
            loaded.stamp_max = loaded.stamp_max.max(record.stamp());
            match newest.entry(record.key()) {
                Entry::Occupied(mut held) => {
                    let (f, i) = *held.get();
                    if files[f][i].stamp() < record.stamp() {
                        held.insert((file, index));
                    }
                }
                Entry::Vacant(vacant) => {
                    vacant.insert((file, index));
                }
            }
        }
    }
    let mut keep: Vec<Vec<bool>> = files
        .iter()
        .map(|records| vec![false; records.len()])
        .collect();
    for (file, index) in newest.into_values() {
        keep[file][index] = true;
    }
    let live = |expires_at_ms: Option<u64>| expires_at_ms.is_none_or(|at| at > now_ms);
    for (records, keep) in files.into_iter().zip(keep) {
        for (record, _) in records.into_iter().zip(keep).filter(|(_, keep)| *keep) {
            match record {
                Record::Set { message, .. } if live(message.expires_at_ms) => {
                    loaded.messages.push(message);
                }
                Record::Session { mut session, .. } if live(session.expires_at_ms) => {
                    session
                        .messages
                        .retain(|queued| live(queued.message.expires_at_ms));
                    loaded.sessions.push(*session);
                }
                Record::Set { .. }
                | Record::Session { .. }
                | Record::Delete { .. }
                | Record::SessionEnd { .. } => {}
            }
        }
    }
    Ok(loaded)
}

/// A file's records, and the repairs its reading made (a torn tail cut, ranges skipped).
type FileRecords = (Vec<Record>, usize);

/// The records of each of `paths`, in order (none for a file that does not exist), decoded on
/// up to [`LOAD_THREADS_MAX`] threads; the first error in path order stops the load.
fn read_all(
    paths: &[PathBuf],
    recover: bool,
    repairs: &mut usize,
) -> Result<Vec<Vec<Record>>, StoreError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = paths.len().clamp(1, cores.min(LOAD_THREADS_MAX));
    let mut results: Vec<Option<Result<FileRecords, StoreError>>> =
        (0..paths.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|first| {
                scope.spawn(move || {
                    // Thread `first` takes files first, first + threads, ...
                    (first..paths.len())
                        .step_by(threads)
                        .map(|at| {
                            let mut repairs = 0;
                            let records = read_records(&paths[at], recover, &mut repairs)
                                .map(|records| (records.unwrap_or_default(), repairs));
                            (at, records)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            let done = worker.join().expect("decoding a store file does not panic");
            for (at, result) in done {
                results[at] = Some(result);
            }
        }
    });
    let mut files = Vec::with_capacity(paths.len());
    for result in results {
        let (records, file_repairs) = result.expect("every path was given to a thread")?;
        *repairs += file_repairs;
        files.push(records);
    }
    Ok(files)
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
