//! Why the store cannot start, naming the file or directory at fault.

use std::path::PathBuf;

use super::record::RecordError;

#[derive(Debug)]
pub enum StoreError {
    /// A file or directory could not be read, written or created.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Unreadable bytes before the end of a file (a torn tail is cut, not an error).
    Corrupt {
        path: PathBuf,
        offset: usize,
        error: RecordError,
    },
    /// The file does not start with the store's magic bytes: not a file of this format.
    NotAStoreFile { path: PathBuf },
    /// Another process holds the data directory's lock.
    Locked { dir: PathBuf, pid: Option<u32> },
    /// Copies of QoS 2 publishes never committed were dropped at load, and the snapshots
    /// without them could not be written (the cause was logged): served on, a later load
    /// could read the copies again once their publishers committed past them.
    UncommittedNotRewritten { dir: PathBuf, copies: usize },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StoreError::Corrupt {
                path,
                offset,
                error,
            } => write!(
                f,
                "{}: {error} at byte {offset}, before the end of the file: the file is corrupt (start with --recover to keep what is readable)",
                path.display()
            ),
            StoreError::NotAStoreFile { path } => write!(
                f,
                "{}: not a fanfare store file (unknown header; start with --recover to skip it)",
                path.display()
            ),
            StoreError::Locked { dir, pid } => {
                write!(
                    f,
                    "data directory {} is in use by another fanfare",
                    dir.display()
                )?;
                match pid {
                    Some(pid) => write!(f, " (pid {pid})"),
                    None => Ok(()),
                }
            }
            StoreError::UncommittedNotRewritten { dir, copies } => write!(
                f,
                "data directory {}: {copies} queued copies of QoS 2 publishes never committed were dropped, and the snapshots without them could not be written (see above); not serving, since a later start could deliver them a second time",
                dir.display()
            ),
        }
    }
}

// The cause is part of the message (`Io` writes it after the path): no `source`, so that a
// chain printer does not repeat it.
impl std::error::Error for StoreError {}
