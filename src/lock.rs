//! One pass per database at a time.
//!
//! Owns the lock file `<database>.lock`. The OS releases an advisory lock
//! when its process dies, so a crashed pass never leaves a stale lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long [`PassLock::acquire`] keeps trying a busy lock before it calls
/// the lock taken. `status --check` holds a shared lock for an instant, and
/// a pass that starts in that instant should wait it out, not skip its
/// work; a real pass holds the lock far longer than this.
const BUSY_GRACE: Duration = Duration::from_secs(1);
const BUSY_RETRY_EVERY: Duration = Duration::from_millis(25);

/// Errors taking the pass lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another deskbridge pass is running on {database} ({holder}); nothing was done")]
    Busy {
        database: PathBuf,
        holder: String,
        /// When the holder took the lock, from its holder line.
        since_unix: Option<i64>,
    },
    #[error("cannot open lock file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held for the whole pass; dropping it releases the lock.
#[derive(Debug)]
pub struct PassLock {
    _file: File,
}

impl PassLock {
    /// Takes the lock beside `database`, waiting at most a second (`BUSY_GRACE`).
    ///
    /// # Errors
    /// [`LockError::Busy`] when another process holds it that long.
    pub fn acquire(database: &Path) -> Result<PassLock, LockError> {
        let path = lock_path(database);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| LockError::Open {
                path: path.clone(),
                source,
            })?;
        let mut waited = Duration::ZERO;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if waited < BUSY_GRACE => {
                    std::thread::sleep(BUSY_RETRY_EVERY);
                    waited += BUSY_RETRY_EVERY;
                }
                Err(TryLockError::WouldBlock) => return Err(busy(database, &path)),
                Err(TryLockError::Error(source)) => {
                    return Err(LockError::Open { path, source });
                }
            }
        }
        // NOTE: The holder line is informational; failing to write it is harmless.
        let _ = file.set_len(0);
        let _ = writeln!(
            file,
            "pid {} since {}",
            std::process::id(),
            crate::clock::rfc3339(crate::clock::unix_now())
        );
        Ok(PassLock { _file: file })
    }
}

/// [`LockError::Busy`], with the holder line the holder wrote.
fn busy(database: &Path, path: &Path) -> LockError {
    let holder = std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "holder unknown".to_owned());
    let since_unix = holder
        .split_once(" since ")
        .and_then(|(_, since)| crate::clock::parse_rfc3339(since));
    LockError::Busy {
        database: database.to_path_buf(),
        holder,
        since_unix,
    }
}

/// `<database>.lock`.
fn lock_path(database: &Path) -> PathBuf {
    let mut path = database.as_os_str().to_owned();
    path.push(".lock");
    PathBuf::from(path)
}

/// Whether a pass holds the lock beside `database` now, for `status
/// --check`: a start without a finish is a pass at work only if so.
///
/// NOTE: It takes a shared lock for an instant; a pass starting in that
/// instant waits it out (`BUSY_GRACE`).
///
/// # Errors
/// The lock file exists but cannot be opened or locked.
pub fn is_held(database: &Path) -> Result<bool, LockError> {
    let path = lock_path(database);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(LockError::Open { path, source }),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(source)) => Err(LockError::Open { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = dir.path().join("log.db");
        let first = PassLock::acquire(&database).expect("first lock");
        let err = PassLock::acquire(&database).expect_err("second refused");
        assert!(err.to_string().contains("another deskbridge pass"), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        let LockError::Busy { since_unix, .. } = err else {
            panic!("not Busy: {err}");
        };
        let age = crate::clock::unix_now() - since_unix.expect("the holder line has a time");
        assert!((0..60).contains(&age), "{age}");
        assert!(is_held(&database).expect("probe"));
        drop(first);
        assert!(!is_held(&database).expect("probe"));
        PassLock::acquire(&database).expect("free again");
    }

    #[test]
    fn a_pass_waits_out_a_probe_holding_the_lock_for_an_instant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = dir.path().join("log.db");
        std::fs::write(lock_path(&database), "").expect("lock file");
        let probe = File::open(lock_path(&database)).expect("open");
        probe.lock_shared().expect("shared lock");
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(probe);
        });
        let started = std::time::Instant::now();
        PassLock::acquire(&database).expect("taken once the probe let go");
        assert!(started.elapsed() >= Duration::from_millis(150));
        release.join().expect("probe thread");
    }

    #[test]
    fn no_lock_file_is_no_pass() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!is_held(&dir.path().join("log.db")).expect("probe"));
    }
}
