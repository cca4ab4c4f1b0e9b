//! Advisory file locks (flock) on files under `<run>/locks/`. The kernel drops a lock when its
//! process dies, so a killed or requeued job never leaves a stale lock behind.

use crate::error::UsageError;
use anyhow::{Context, Result};
use std::fs::TryLockError;
use std::fs::{File, OpenOptions};
use std::path::Path;

/// Held until dropped.
#[derive(Debug)]
pub struct Lock {
    file: File,
}

impl Lock {
    /// Takes the lock or fails at once, naming what holds it: two writers of one stage are a
    /// user's mistake (two commands on one run directory), not something to wait out.
    pub fn try_acquire(path: &Path, what: &str) -> Result<Lock> {
        let file = open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Lock { file }),
            Err(TryLockError::WouldBlock) => Err(UsageError::new(format!(
                "{what} is in use by another agra process (lock {})",
                path.display()
            ))
            .into()),
            Err(TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }

    /// Waits for the lock: for short critical sections shared by concurrent shards.
    pub fn acquire(path: &Path) -> Result<Lock> {
        let file = open(path)?;
        file.lock().with_context(|| format!("locking {}", path.display()))?;
        Ok(Lock { file })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

fn open(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_exclusive_lock_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/train.lock");
        let first = Lock::try_acquire(&path, "train").unwrap();
        let err = Lock::try_acquire(&path, "train").unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(err.to_string().contains("in use"), "{err}");
        drop(first);
        Lock::try_acquire(&path, "train").unwrap();
    }
}
