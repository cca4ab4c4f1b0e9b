//! Advisory file locks (flock) on files under `<run>/locks/`. On a local disk the kernel drops
//! a lock when its process dies, so a killed job never leaves a stale lock behind. On NFS or
//! Lustre the server keeps a dead node's locks until its lease runs out or the client is
//! evicted (about 90 s to minutes): `AGRA_LOCK_WAIT` lets a requeued Slurm task wait that out.

use crate::error::UsageError;
use anyhow::{Context, Result};
use std::fs::TryLockError;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a stage waits for its lock by default: long enough for `agra status`, which takes
/// each lock for an instant to see whether it is held, never to make a starting shard fail.
const WAIT: Duration = Duration::from_secs(2);

/// Held until dropped.
#[derive(Debug)]
pub struct Lock {
    file: File,
}

impl Lock {
    /// Takes the lock, or fails naming what holds it once `AGRA_LOCK_WAIT` seconds (default 2)
    /// have passed: two writers of one stage are a user's mistake (two commands on one run
    /// directory), not something to wait out for long.
    pub fn try_acquire(path: &Path, what: &str) -> Result<Lock> {
        Lock::try_acquire_within(path, what, lock_wait()?)
    }

    fn try_acquire_within(path: &Path, what: &str, wait: Duration) -> Result<Lock> {
        let file = open(path)?;
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Lock { file }),
                // A stop asked for while waiting (Slurm's USR1 near the time limit) ends the wait:
                // nothing has been done yet, so there is nothing to keep.
                Err(TryLockError::WouldBlock) if crate::farm::signals::stop_requested() => {
                    return Err(crate::error::Interrupted.into())
                }
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(TryLockError::WouldBlock) => {
                    let message = format!("{what} is in use by another agra process (lock {})", path.display());
                    return Err(UsageError::new(message).into());
                }
                Err(TryLockError::Error(e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
            }
        }
    }

    /// Whether another process holds the lock now; takes it for an instant if not. (Read-only:
    /// flock needs no write access, so another user's run shows its locks too.)
    pub fn is_held(path: &Path) -> bool {
        path.exists() && File::open(path).map_or(true, |file| matches!(file.try_lock(), Err(TryLockError::WouldBlock)))
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

/// `AGRA_LOCK_WAIT`, in seconds.
fn lock_wait() -> Result<Duration> {
    let Ok(text) = std::env::var("AGRA_LOCK_WAIT") else { return Ok(WAIT) };
    match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=86_400.0).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err(UsageError::new(format!("AGRA_LOCK_WAIT must be seconds from 0 to 86400, not {text:?}")).into()),
    }
}

/// Opens (creating) a lock file. Locks live in the run directory the user named, so one that
/// cannot be written there is their mistake (exit 2), like a run directory that cannot be made.
fn open(path: &Path) -> Result<File> {
    let named = |e: std::io::Error, what: &Path| -> anyhow::Error {
        match e.kind() {
            ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
                UsageError::new(format!("cannot write {}: {e} (is the run directory writable?)", what.display())).into()
            }
            _ => anyhow::Error::new(e).context(format!("opening lock {}", what.display())),
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| named(e, dir))?;
    }
    OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(|e| named(e, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_exclusive_lock_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/train.lock");
        let first = Lock::try_acquire(&path, "train").unwrap();
        assert!(Lock::is_held(&path));
        let err = Lock::try_acquire_within(&path, "train", Duration::from_millis(200)).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(err.to_string().contains("in use"), "{err}");
        drop(first);
        assert!(!Lock::is_held(&path));
        Lock::try_acquire(&path, "train").unwrap();
    }

    /// A lock held for a moment (as `agra status` holds each one it looks at) is waited for.
    #[test]
    fn a_lock_held_for_a_moment_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/member-0001.lock");
        let brief = Lock::try_acquire(&path, "member 1").unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(brief);
        });
        let start = Instant::now();
        Lock::try_acquire_within(&path, "member 1", Duration::from_secs(5)).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(250));
        release.join().unwrap();
    }
}
