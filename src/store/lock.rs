//! One broker per data directory: two writing the same logs would interleave records and
//! each compaction would erase the other's.
//!
//! The lock is `flock` on `DIR/lock`: the kernel releases it when the process dies however
//! it dies (`kill -9` included), so a crash never leaves a stale lock to clean up. The file
//! holds the holder's process id, for the refusal to name.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::StoreError;

const LOCK_FILE: &str = "lock";
/// The longest lock file read: a process id in decimal and a newline.
const LOCK_FILE_BYTES_MAX: u64 = 32;

/// Held while the broker runs; dropped (or the process gone), the directory is free.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Creates `dir` if needed and takes its lock, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, StoreError> {
        std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    dir: dir.to_path_buf(),
                    pid: holder(&mut file),
                });
            }
            Err(TryLockError::Error(source)) => return Err(StoreError::Io { path, source }),
        }
        let write_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())
        };
        write_pid(&mut file).map_err(StoreError::io(PathBuf::from(&path)))?;
        Ok(DataDirLock { _file: file })
    }
}

/// The process id the holder wrote, if it is readable yet.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.take(LOCK_FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_pid() {
        let dir = std::env::temp_dir().join(format!("fanfare-lock-{}", std::process::id()));
        let first = DataDirLock::acquire(&dir).expect("free");
        let second = DataDirLock::acquire(&dir).expect_err("held");
        assert!(
            matches!(second, StoreError::Locked { pid: Some(pid), .. } if pid == std::process::id())
        );
        assert!(second.to_string().contains(&dir.display().to_string()));
        drop(first);
        DataDirLock::acquire(&dir).expect("free again");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
