//! The SQLite thread log: the only module with SQL.
//!
//! Owns the database file, the migrations in `migrations/` (applied in order
//! at open, tracked in `PRAGMA user_version`), and every read and write of
//! the log. Each state change is its own short transaction, so the file on
//! disk always tells the truth about what was sent.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::clock;

/// The migrations, in order. Append only: never edit a released one.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_create_log",
        include_str!("../../migrations/0001_create_log.sql"),
    ),
    (
        "0002_add_classification",
        include_str!("../../migrations/0002_add_classification.sql"),
    ),
    (
        "0003_add_held_followups",
        include_str!("../../migrations/0003_add_held_followups.sql"),
    ),
    (
        "0004_create_threads",
        include_str!("../../migrations/0004_create_threads.sql"),
    ),
    (
        "0005_index_unfinished",
        include_str!("../../migrations/0005_index_unfinished.sql"),
    ),
    (
        "0006_index_log_listing",
        include_str!("../../migrations/0006_index_log_listing.sql"),
    ),
    (
        "0007_rate_limit_lifts",
        include_str!("../../migrations/0007_rate_limit_lifts.sql"),
    ),
    (
        "0008_mailbox_retirement",
        include_str!("../../migrations/0008_mailbox_retirement.sql"),
    ),
    (
        "0009_mailbox_account",
        include_str!("../../migrations/0009_mailbox_account.sql"),
    ),
];

mod journal;
mod threads;

pub use journal::Journal;
pub use threads::{AttachContext, Attachment, CorrespondentRow, ThreadFilter, ThreadRow};

/// Errors from the log database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot apply migration {name} to {path}: {source}")]
    Migrate {
        path: PathBuf,
        name: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "database {path} was written by a newer deskbridge (schema {found}, this one knows {known})"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("database {path}: cannot {action}: {source}")]
    Query {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the file system holding {path} has {free_kib} KiB free, under [store] min_free_mb = {min_free_mb}: nothing more is sent until space is freed, because a message sent now might not be recorded as forwarded, and the next pass would send it again"
    )]
    LowSpace {
        path: PathBuf,
        free_kib: u64,
        min_free_mb: u64,
    },
    /// A write on the journal's thread failed; its error comes back as text.
    #[error("database {path}: cannot {action}: {message}")]
    Journal {
        path: PathBuf,
        action: &'static str,
        message: String,
    },
}

/// Result alias for store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The folder of the log at `path`, where its other files live too.
fn log_folder(path: &Path) -> &Path {
    path.parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// What a pass will find where the log lives, for `check-config
/// --connect`; nothing is created or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLocation {
    /// The log file is already there (else the first pass creates it).
    pub exists: bool,
    /// The folder lets this user create files (the log, its `-wal` and
    /// `-shm` files, the lock file).
    pub folder_writable: bool,
    /// Those of the log's files that exist and that this user cannot read
    /// and write.
    pub unwritable: Vec<PathBuf>,
}

/// Looks at the log's folder and file without touching them.
///
/// # Errors
/// The folder does not exist or cannot be examined.
pub fn log_location(path: &Path) -> std::io::Result<LogLocation> {
    let folder = log_folder(path);
    if !std::fs::metadata(folder)?.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a folder", folder.display()),
        ));
    }
    use rustix::fs::{Access, access};
    let writable = access(folder, Access::WRITE_OK | Access::EXEC_OK);
    let unwritable = ["", "-wal", "-shm", ".lock"]
        .iter()
        .map(|suffix| {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            PathBuf::from(file)
        })
        .filter(|file| file.exists() && access(file, Access::READ_OK | Access::WRITE_OK).is_err())
        .collect();
    Ok(LogLocation {
        exists: path.exists(),
        folder_writable: writable.is_ok(),
        unwritable,
    })
}

/// Bytes an unprivileged writer can still use on the file system that
/// holds the log at `path` (and its `-wal` file beside it): the file's own
/// (through a symbolic link, where SQLite writes), or its folder's before
/// the file exists.
///
/// # Errors
/// Neither can be examined.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let folder = log_folder(path);
    let stats = rustix::fs::statvfs(path).or_else(|_| rustix::fs::statvfs(folder))?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// The delivery state of a logged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Recorded, not yet accepted by the SMTP server (new, or deferred by 4xx).
    Pending,
    /// Accepted by the SMTP server with 250.
    Forwarded,
    /// Kept back for a person (encrypted, unreadable, too large).
    Held,
    /// Deliberately not forwarded (loop, duplicate).
    Skipped,
    /// Rejected (5xx) or given up; will not be retried.
    Failed,
}

impl State {
    /// The name stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Forwarded => "forwarded",
            State::Held => "held",
            State::Skipped => "skipped",
            State::Failed => "failed",
        }
    }

    /// Parses a `state` column value or a CLI argument.
    pub fn parse(text: &str) -> Option<State> {
        Some(match text {
            "pending" => State::Pending,
            "forwarded" => State::Forwarded,
            "held" => State::Held,
            "skipped" => State::Skipped,
            "failed" => State::Failed,
            _ => return None,
        })
    }

    /// Every state, in display order.
    pub const ALL: [State; 5] = [
        State::Pending,
        State::Forwarded,
        State::Held,
        State::Skipped,
        State::Failed,
    ];
}

/// A message as the worker first records it.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    pub mailbox: String,
    pub uidvalidity: u32,
    pub uid: u32,
    pub summary: crate::mail::MailSummary,
    pub size: u64,
    pub sha256: String,
    pub state: Option<State>,
    pub reason: Option<String>,
    pub detail: Option<String>,
    /// Protection class from the classifier (`none`, `pgp-encrypted`, ...).
    pub class: Option<String>,
    pub relay: Option<crate::classify::RelayMatch>,
    /// The keys that place it in a thread; `None` leaves it unthreaded.
    pub thread: Option<crate::thread::ThreadKeys>,
    /// Whether this mailbox may add In-Reply-To/References on redirect.
    pub repair_enabled: bool,
    pub body_sha256: Option<String>,
    /// The helpdesk address the mailbox forwards to, lowercased: ticket
    /// tokens and relay subjects match only threads of the same helpdesk.
    pub forward_to: String,
}

/// One row of the `messages` table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MessageRow {
    pub id: i64,
    pub mailbox: String,
    pub uidvalidity: u32,
    pub uid: u32,
    pub message_id: Option<String>,
    pub in_reply_to: Option<String>,
    pub references: Option<String>,
    pub from: Option<String>,
    pub reply_to: Option<String>,
    pub subject: Option<String>,
    pub date: Option<String>,
    pub size: u64,
    pub sha256: String,
    pub state: String,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub smtp_reply: Option<String>,
    pub resent_message_id: Option<String>,
    pub first_seen_at: String,
    pub updated_at: String,
    pub forwarded_at: Option<String>,
    pub settled_at: Option<String>,
    pub settled_as: Option<String>,
    pub class: Option<String>,
    pub relay: Option<String>,
    pub relay_alias: Option<String>,
    pub reply_token: Option<String>,
    pub thread_id: Option<i64>,
    pub thread_key: Option<String>,
    pub repaired: Option<String>,
    #[serde(skip)]
    pub repair_headers: Option<String>,
    #[serde(skip)]
    pub body_sha256: Option<String>,
    pub notice_sent_at: Option<String>,
    pub auto_replied_at: Option<String>,
}

impl MessageRow {
    /// The row's state as an enum; unknown text reads as failed.
    pub fn state(&self) -> State {
        State::parse(&self.state).unwrap_or(State::Failed)
    }

    /// Who the rate limit counts this message against: its relay alias,
    /// else its From (as `COALESCE(relay_alias, from_addr)` in the queries).
    pub fn correspondent(&self) -> Option<&str> {
        self.relay_alias.as_deref().or(self.from.as_deref())
    }
}

/// One entry of a message's history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    pub at: String,
    pub kind: String,
    pub detail: Option<String>,
}

/// Where a mailbox's fetching resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub uidvalidity: u32,
    pub last_uid: u32,
}

/// A mailbox's last pass and its counts by state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MailboxStatus {
    pub name: String,
    pub uidvalidity: Option<u32>,
    pub last_uid: u32,
    pub last_pass_started_at: Option<String>,
    pub last_pass_finished_at: Option<String>,
    pub last_pass_outcome: Option<String>,
    /// When a pass first ran without this mailbox in its config.
    pub retired_at: Option<String>,
    /// (state, count) for every state, zeros included.
    pub counts: Vec<(String, u64)>,
}

/// Filters for [`Store::list_messages`].
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub state: Option<State>,
    pub mailbox: Option<String>,
    pub limit: Option<u32>,
}

const MESSAGE_COLUMNS: &str = "id, mailbox, uidvalidity, uid, message_id, in_reply_to, refs, \
    from_addr, reply_to, subject, date, size, sha256, state, reason, detail, attempts, \
    last_error, smtp_reply, resent_message_id, first_seen_at, updated_at, forwarded_at, \
    settled_at, settled_as, class, relay, relay_alias, reply_token, thread_id, thread_key, \
    repaired, repair_headers, body_sha256, notice_sent_at, auto_replied_at";

/// How the outcome recorded for a pass that died ends (after "error: the
/// pass started at TIME"), so `status --check` can tell it apart.
pub const DIED_PASS_ENDING: &str = " ended without finishing (killed, or the machine stopped)";

/// An open log database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// Prepared statements kept per connection.
pub(crate) const STATEMENT_CACHE: usize = 64;

/// `execute` and `query_row` through the connection's statement cache:
/// each SQL text is prepared once per connection, not once per call.
pub(crate) trait Cached {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;

    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, read: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, read: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, read)
    }
}

/// Appends one entry to a message's history (`events`).
pub(super) fn insert_event(
    conn: &Connection,
    id: i64,
    at: &str,
    kind: &str,
    detail: Option<&str>,
) -> rusqlite::Result<usize> {
    conn.execute_cached(
        "INSERT INTO events (message, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        params![id, at, kind, detail],
    )
}

impl Store {
    /// Opens (creating if needed) the database and applies migrations.
    ///
    /// # Errors
    /// An unopenable file, a failed migration, or a newer schema.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Store::init(conn, path)
    }

    /// Opens an existing database without creating one, for the read-only
    /// commands: a mistyped path should not leave an empty database behind.
    ///
    /// # Errors
    /// A missing or unopenable file.
    pub fn open_existing(path: &Path) -> Result<Store> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
            | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Store::init(conn, path)
    }

    /// An in-memory database with the real migrations, for tests.
    ///
    /// # Errors
    /// A failed migration.
    pub fn open_in_memory() -> Result<Store> {
        let path = Path::new(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Store::init(conn, path)
    }

    fn init(conn: Connection, path: &Path) -> Result<Store> {
        // NOTE: Every statement is prepared once per connection and reused;
        // a pass uses a few dozen, more than rusqlite's default cache holds.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        // NOTE: WAL lets `deskbridge messages` and sqlite3 read while a pass
        // writes; synchronous=FULL keeps each "forwarded" mark durable
        // across power loss, which is what makes "never sent twice" hold.
        store
            .conn
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
            )
            .map_err(|source| store.query_error("configure the connection", source))?;
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<()> {
        let known = MIGRATIONS.len() as i64;
        if self.schema_version()? == known {
            return Ok(());
        }
        loop {
            // NOTE: The version is read again inside the write transaction:
            // a read command and a pass of a newer deskbridge that open an
            // older log together must not both apply the same migration.
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|source| self.query_error("start a schema upgrade", source))?;
            let rollback = || {
                let _ = self.conn.execute_batch("ROLLBACK");
            };
            let applied = self.schema_version().inspect_err(|_| rollback())?;
            if known < applied {
                rollback();
                return Err(StoreError::TooNew {
                    path: self.path.clone(),
                    found: applied,
                    known,
                });
            }
            let Some((name, sql)) = usize::try_from(applied)
                .ok()
                .and_then(|index| MIGRATIONS.get(index))
            else {
                rollback();
                return Ok(());
            };
            let step = format!("{sql}; PRAGMA user_version = {};", applied + 1);
            if let Err(source) = self
                .conn
                .execute_batch(&step)
                .and_then(|()| self.conn.execute_batch("COMMIT"))
            {
                rollback();
                return Err(StoreError::Migrate {
                    path: self.path.clone(),
                    name,
                    source,
                });
            }
        }
    }

    /// The schema version recorded in the file (`PRAGMA user_version`).
    fn schema_version(&self) -> Result<i64> {
        self.conn
            .query_row_cached("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|source| self.query_error("read the schema version", source))
    }

    fn query_error(&self, action: &'static str, source: rusqlite::Error) -> StoreError {
        StoreError::Query {
            path: self.path.clone(),
            action,
            source,
        }
    }

    /// The fetch checkpoint of a mailbox, if it was ever polled.
    pub fn checkpoint(&self, mailbox: &str) -> Result<Option<Checkpoint>> {
        self.conn
            .query_row_cached(
                "SELECT uidvalidity, last_uid FROM mailboxes WHERE name = ?1 AND uidvalidity IS NOT NULL",
                [mailbox],
                |row| {
                    Ok(Checkpoint {
                        uidvalidity: row.get(0)?,
                        last_uid: row.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(|source| self.query_error("read the mailbox checkpoint", source))
    }

    /// A pass that started after its mailbox's last finish: one at work,
    /// or one that died (both times are written in one sortable form).
    const OPEN_PASS: &str = "last_pass_started_at IS NOT NULL
        AND (last_pass_finished_at IS NULL OR last_pass_finished_at < last_pass_started_at)";

    /// Notes the start of a pass over a mailbox. A pass runs under the
    /// pass lock, so a start found without its finish belongs to a pass
    /// that died (killed, out of memory, a power cut): that pass is
    /// recorded as failed first, so that `status --check` does not take
    /// the last clean outcome for the current one.
    pub fn begin_pass(&self, mailbox: &str) -> Result<()> {
        let now = clock::rfc3339(clock::unix_now());
        self.conn
            .execute_cached(
                &format!(
                    "UPDATE mailboxes SET last_pass_finished_at = last_pass_started_at,
                         last_pass_outcome = 'error: the pass started at ' || last_pass_started_at
                             || ?2
                     WHERE name = ?1 AND {}",
                    Self::OPEN_PASS
                ),
                params![mailbox, DIED_PASS_ENDING],
            )
            .map_err(|source| self.query_error("record a pass that died", source))?;
        self.conn
            .execute_cached(
                "INSERT INTO mailboxes (name, last_pass_started_at) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET last_pass_started_at = ?2, retired_at = NULL",
                params![mailbox, now],
            )
            .map_err(|source| self.query_error("record the start of a pass", source))?;
        Ok(())
    }

    /// Records which account and folder a mailbox reads (see migration
    /// 0009), after [`Store::begin_pass`] created its row.
    pub fn record_account(&self, mailbox: &str, account: &str) -> Result<()> {
        self.conn
            .execute_cached(
                "UPDATE mailboxes SET account = ?2 WHERE name = ?1",
                params![mailbox, account],
            )
            .map_err(|source| self.query_error("record the mailbox's account", source))?;
        Ok(())
    }

    /// The account and folder a mailbox read when last worked on, if known.
    pub fn mailbox_account(&self, mailbox: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT account FROM mailboxes WHERE name = ?1",
                params![mailbox],
                |row| row.get(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(|source| self.query_error("read the mailbox's account", source))
    }

    /// Marks the mailboxes in the log that a pass's config no longer names
    /// as retired (from now, if not already), and those it names as not:
    /// `status --check` without a config expects passes over exactly the
    /// mailboxes of the last pass's config, even when that pass ends before
    /// it reaches them all.
    pub fn retire_mailboxes_except(&self, configured: &[&str]) -> Result<()> {
        let now = clock::rfc3339(clock::unix_now());
        // NOTE: The names go in as one JSON array: a config may name any
        // number of mailboxes, and SQL parameters are counted.
        let names = serde_json::to_string(configured).map_err(|source| {
            self.query_error(
                "list the configured mailboxes",
                rusqlite::Error::ToSqlConversionFailure(Box::new(source)),
            )
        })?;
        self.conn
            .execute_cached(
                "UPDATE mailboxes SET retired_at = CASE
                     WHEN name IN (SELECT value FROM json_each(?2)) THEN NULL
                     ELSE COALESCE(retired_at, ?1) END",
                params![now, names],
            )
            .map_err(|source| self.query_error("record mailboxes no longer configured", source))?;
        Ok(())
    }

    /// Ends every pass still open (started after its last finish) as
    /// stopped by a second signal, which exits at once: recorded, so that
    /// `status --check` and the next pass read a stop, not a death.
    pub fn interrupt_open_passes(&self) -> Result<()> {
        let now = clock::rfc3339(clock::unix_now());
        self.conn
            .execute(
                &format!(
                    "UPDATE mailboxes SET last_pass_finished_at = ?1,
                         last_pass_outcome = 'interrupted by a second signal'
                     WHERE {}",
                    Self::OPEN_PASS
                ),
                params![now],
            )
            .map_err(|source| self.query_error("record a pass stopped by a signal", source))?;
        Ok(())
    }

    /// Notes the end of a pass over a mailbox and how it went.
    pub fn finish_pass(&self, mailbox: &str, outcome: &str) -> Result<()> {
        let now = clock::rfc3339(clock::unix_now());
        self.conn
            .execute_cached(
                "UPDATE mailboxes SET last_pass_finished_at = ?2, last_pass_outcome = ?3 WHERE name = ?1",
                params![mailbox, now, outcome],
            )
            .map_err(|source| self.query_error("record the end of a pass", source))?;
        Ok(())
    }

    /// Starts over under a new UIDVALIDITY: the checkpoint goes back to 0.
    pub fn reset_checkpoint(&self, mailbox: &str, uidvalidity: u32) -> Result<()> {
        self.conn
            .execute_cached(
                "UPDATE mailboxes SET uidvalidity = ?2, last_uid = 0 WHERE name = ?1",
                params![mailbox, uidvalidity],
            )
            .map_err(|source| self.query_error("reset the mailbox checkpoint", source))?;
        Ok(())
    }

    /// Records a batch of new messages and advances the checkpoint in one
    /// transaction. Returns the new row ids in input order. Tests only: a
    /// pass records through [`Journal::record`], off its own thread.
    #[cfg(test)]
    pub fn record_batch(
        &mut self,
        batch: &[NewMessage],
        checkpoint: Option<(&str, Checkpoint)>,
        relay_window_since: &str,
    ) -> Result<Vec<(i64, Attachment)>> {
        record_in(&mut self.conn, batch, checkpoint, relay_window_since)
            .map_err(|source| self.query_error("record fetched messages", source))
    }

    /// Advances the checkpoint on its own (a batch whose messages were all
    /// recognised as already logged).
    pub fn advance_checkpoint(&self, mailbox: &str, checkpoint: Checkpoint) -> Result<()> {
        advance_checkpoint_in(&self.conn, mailbox, checkpoint)
            .map_err(|source| self.query_error("advance the mailbox checkpoint", source))
    }

    /// The row for a mailbox position, if logged.
    pub fn find_by_uid(
        &self,
        mailbox: &str,
        uidvalidity: u32,
        uid: u32,
    ) -> Result<Option<MessageRow>> {
        self.conn
            .query_row_cached(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE mailbox = ?1 AND uidvalidity = ?2 AND uid = ?3"
                ),
                params![mailbox, uidvalidity, uid],
                read_message,
            )
            .optional()
            .map_err(|source| self.query_error("look up a message by UID", source))
    }

    /// UIDs at or above `first` already logged for this folder identity.
    pub fn logged_uids_from(
        &self,
        mailbox: &str,
        uidvalidity: u32,
        first: u32,
    ) -> Result<HashSet<u32>> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT uid FROM messages WHERE mailbox = ?1 AND uidvalidity = ?2 AND uid >= ?3",
            )
            .map_err(|source| self.query_error("list logged UIDs", source))?;
        statement
            .query_map(params![mailbox, uidvalidity, first], |row| row.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|source| self.query_error("list logged UIDs", source))
    }

    /// The row of this mailbox with the same content, if any: the oldest
    /// that has not failed, else the oldest failed one, and a row skipped
    /// as a `duplicate` only when there is no other. A message that failed,
    /// came back and was forwarded has both kinds; the forwarded row says
    /// what the helpdesk already has. A duplicate row only points at
    /// another, whose state is the one that counts.
    pub fn find_by_content(&self, mailbox: &str, sha256: &str) -> Result<Option<MessageRow>> {
        self.conn
            .query_row_cached(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE mailbox = ?1 AND sha256 = ?2 ORDER BY reason IS 'duplicate', state = 'failed', id LIMIT 1"
                ),
                params![mailbox, sha256],
                read_message,
            )
            .optional()
            .map_err(|source| self.query_error("look up a message by content", source))
    }

    /// Rows carrying this Message-ID, oldest first.
    pub fn rows_with_message_id(&self, message_id: &str) -> Result<Vec<MessageRow>> {
        let mut statement = self
            .conn
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE message_id = ?1 ORDER BY id LIMIT 50"
            ))
            .map_err(|source| self.query_error("look up a Message-ID", source))?;
        statement
            .query_map([message_id], read_message)
            .and_then(|rows| rows.collect())
            .map_err(|source| self.query_error("look up a Message-ID", source))
    }

    /// Moves a row to its new position after a UIDVALIDITY change.
    pub fn adopt(&self, id: i64, uidvalidity: u32, uid: u32) -> Result<()> {
        let now = clock::rfc3339(clock::unix_now());
        let changed = self
            .conn
            .execute_cached(
                "UPDATE messages SET uidvalidity = ?2, uid = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, uidvalidity, uid, now],
            )
            .map_err(|source| {
                self.query_error("re-key a message after a UIDVALIDITY change", source)
            })?;
        if 0 < changed {
            self.add_event(
                id,
                "rescanned",
                &format!("found again as UID {uid} under UIDVALIDITY {uidvalidity}"),
            )?;
        }
        Ok(())
    }

    /// Rows of this mailbox position that still need work: pending ones to
    /// send, and final ones whose IMAP settle has not happened yet.
    pub fn unfinished(&self, mailbox: &str, uidvalidity: u32) -> Result<Vec<MessageRow>> {
        let mut statement = self
            .conn
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages
                 WHERE mailbox = ?1 AND uidvalidity = ?2 AND (state = 'pending' OR settled_at IS NULL)
                 ORDER BY uid"
            ))
            .map_err(|source| self.query_error("list unfinished messages", source))?;
        let rows = statement
            .query_map(params![mailbox, uidvalidity], read_message)
            .and_then(|rows| rows.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|source| self.query_error("list unfinished messages", source))?;
        Ok(rows)
    }

    /// Notes that a send is about to start: the attempt counts even if the
    /// process dies mid-send, and the Resent-Message-ID is fixed for good.
    pub fn mark_send_attempt(&self, id: i64, resent_message_id: &str) -> Result<u32> {
        let now = clock::rfc3339(clock::unix_now());
        journal::write_attempt(&self.conn, id, resent_message_id, &now)
            .map_err(|source| self.query_error("record a send attempt", source))
    }

    /// Marks a row failed for good.
    pub fn mark_failed(&self, id: i64, reason: &str, error: &str) -> Result<()> {
        let now = clock::rfc3339(clock::unix_now());
        let fail = |source| self.query_error("mark a message failed", source);
        let tx = self.conn.unchecked_transaction().map_err(fail)?;
        journal::write_failed(&tx, id, reason, error, &now).map_err(fail)?;
        tx.commit().map_err(fail)
    }

    /// Records that the IMAP side of these rows was updated.
    pub fn mark_settled(&mut self, ids: &[i64], how: &str) -> Result<()> {
        let now = clock::rfc3339(clock::unix_now());
        let path = self.path.clone();
        let fail = |source| StoreError::Query {
            path: path.clone(),
            action: "mark messages settled",
            source,
        };
        let tx = self.conn.transaction().map_err(fail)?;
        for id in ids {
            tx.execute_cached(
                "UPDATE messages SET settled_at = ?2, settled_as = ?3, updated_at = ?2 WHERE id = ?1",
                params![id, now, how],
            )
            .map_err(fail)?;
            insert_event(&tx, *id, &now, "settled", Some(how)).map_err(fail)?;
        }
        tx.commit().map_err(fail)
    }

    /// Appends to a message's history.
    pub fn add_event(&self, id: i64, kind: &str, detail: &str) -> Result<()> {
        let now = clock::rfc3339(clock::unix_now());
        insert_event(&self.conn, id, &now, kind, Some(detail))
            .map_err(|source| self.query_error("append to a message's history", source))?;
        Ok(())
    }

    /// How many messages of this mailbox came from `correspondent` (relay
    /// alias, else From, in any letter case) since `since` (RFC 3339), and
    /// were logged after a person last lifted its block.
    pub fn count_from_since(&self, mailbox: &str, correspondent: &str, since: &str) -> Result<u32> {
        self.conn
            .query_row_cached(
                "SELECT COUNT(*) FROM messages
                 WHERE mailbox = ?1 AND lower(COALESCE(relay_alias, from_addr)) = lower(?2)
                    AND first_seen_at >= ?3
                    AND id > COALESCE((SELECT lifted_after_message FROM blocked_correspondents
                        WHERE address = lower(?2)), 0)",
                params![mailbox, correspondent, since],
                |row| row.get(0),
            )
            .map_err(|source| self.query_error("count a correspondent's recent messages", source))
    }

    /// Why `address` (in any letter case) is blocked by the rate limit, if
    /// it is.
    pub fn blocked(&self, address: &str) -> Result<Option<String>> {
        self.conn
            .query_row_cached(
                "SELECT reason FROM blocked_correspondents WHERE address = lower(?1) AND lifted_at IS NULL",
                [address],
                |row| row.get(0),
            )
            .optional()
            .map_err(|source| self.query_error("look up a blocked correspondent", source))
    }

    /// Blocks a correspondent until a person releases one of its messages
    /// (again, if a block was lifted before).
    pub fn block(&self, address: &str, reason: &str) -> Result<()> {
        let now = clock::rfc3339(clock::unix_now());
        self.conn
            .execute_cached(
                "INSERT INTO blocked_correspondents (address, blocked_at, reason) VALUES (lower(?1), ?2, ?3)
                 ON CONFLICT (address) DO UPDATE
                    SET blocked_at = excluded.blocked_at, reason = excluded.reason,
                        lifted_at = NULL, lifted_after_message = NULL
                    WHERE lifted_at IS NOT NULL",
                params![address, now, reason],
            )
            .map_err(|source| self.query_error("block a correspondent", source))?;
        Ok(())
    }

    /// Lifts a block; returns whether there was one. The row stays, with
    /// the time and the last message logged, so that the messages that
    /// caused the block no longer count towards the limit
    /// ([`Store::count_from_since`]).
    pub fn unblock(&self, address: &str) -> Result<bool> {
        let now = clock::rfc3339(clock::unix_now());
        let lifted = self
            .conn
            .execute_cached(
                "UPDATE blocked_correspondents
                 SET lifted_at = ?2, lifted_after_message = (SELECT COALESCE(MAX(id), 0) FROM messages)
                 WHERE address = lower(?1) AND lifted_at IS NULL",
                params![address, now],
            )
            .map_err(|source| self.query_error("unblock a correspondent", source))?;
        Ok(0 < lifted)
    }

    /// Whether a held notice went out since `since` (RFC 3339) for a
    /// message of this mailbox from `correspondent` (relay alias, else
    /// From, in any letter case) that the rate limit held.
    pub fn rate_limit_noticed_since(
        &self,
        mailbox: &str,
        correspondent: &str,
        since: &str,
    ) -> Result<bool> {
        self.conn
            .query_row_cached(
                "SELECT EXISTS (SELECT 1 FROM messages
                 WHERE mailbox = ?1 AND lower(COALESCE(relay_alias, from_addr)) = lower(?2)
                    AND state = 'held' AND reason = 'rate-limited' AND notice_sent_at >= ?3)",
                params![mailbox, correspondent, since],
                |row| row.get(0),
            )
            .map_err(|source| self.query_error("look up rate-limit notices", source))
    }

    /// Whether deskbridge auto-replied to `address` (in any letter case)
    /// since `since`.
    pub fn auto_replied_since(&self, address: &str, since: &str) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM auto_replies WHERE lower(address) = lower(?1) AND last_sent_at >= ?2",
                params![address, since],
                |row| row.get::<_, i64>(0),
            )
            .map(|count| 0 < count)
            .map_err(|source| self.query_error("look up auto-replies", source))
    }

    /// Claims the auto-reply to `address` before it is sent: should the
    /// send break after the server took it, the next held message from the
    /// same sender must not get a second one (one lost is better than one
    /// too many for an auto-reply, RFC 3834 §2).
    pub fn claim_auto_reply(&self, address: &str) -> Result<()> {
        let now = clock::rfc3339(clock::unix_now());
        self.conn
            .execute_cached(
                "INSERT INTO auto_replies (address, last_sent_at) VALUES (lower(?1), ?2)
                 ON CONFLICT (address) DO UPDATE SET last_sent_at = ?2",
                params![address, now],
            )
            .map_err(|source| self.query_error("record an auto-reply", source))?;
        Ok(())
    }

    /// Records that the auto-reply to `address` about message `id` went.
    pub fn record_auto_reply(&self, id: i64, address: &str, reply: &str) -> Result<()> {
        let now = clock::rfc3339(clock::unix_now());
        self.conn
            .execute_cached(
                "UPDATE messages SET auto_replied_at = ?2, updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )
            .map_err(|source| self.query_error("record an auto-reply", source))?;
        self.add_event(id, "auto-replied", &format!("to {address}: {reply}"))
    }

    /// Held rows of a mailbox first seen since `since` whose helpdesk
    /// notice was never sent (the pass that held them was interrupted).
    pub fn held_without_notice(&self, mailbox: &str, since: &str) -> Result<Vec<i64>> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT id FROM messages WHERE mailbox = ?1 AND state = 'held'
                 AND notice_sent_at IS NULL AND first_seen_at >= ?2
                 AND NOT EXISTS (SELECT 1 FROM events WHERE events.message = messages.id
                                 AND events.kind IN ('notice-refused', 'notice-unknown', 'notice-skipped'))
                 ORDER BY id",
            )
            .map_err(|source| self.query_error("list held messages without notice", source))?;
        statement
            .query_map(params![mailbox, since], |row| row.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|source| self.query_error("list held messages without notice", source))
    }

    /// Records the held notice sent to the helpdesk for message `id`.
    pub fn record_notice(&self, id: i64, reply: &str) -> Result<()> {
        let now = clock::rfc3339(clock::unix_now());
        self.conn
            .execute_cached(
                "UPDATE messages SET notice_sent_at = ?2, updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )
            .map_err(|source| self.query_error("record a held notice", source))?;
        self.add_event(id, "notice-sent", reply)
    }

    /// Plans the thread repair for a held message about to be released, as
    /// recording would have for a message forwarded at once, and notes it
    /// on the row; returns the In-Reply-To/References lines to add. A
    /// repair planned by an earlier attempt is kept, so a retry sends the
    /// same bytes.
    pub fn plan_release_repair(
        &self,
        row: &MessageRow,
        keys: &crate::thread::ThreadKeys,
        repair_enabled: bool,
    ) -> Result<Option<String>> {
        if row.repaired.is_some() {
            return Ok(row.repair_headers.clone());
        }
        let (Some(thread_id), Some(key)) = (row.thread_id, row.thread_key.as_deref()) else {
            return Ok(None);
        };
        let correspondent = threads::known_correspondent(&self.conn, keys)
            .map_err(|source| self.query_error("plan the thread repair of a release", source))?;
        let (repaired, repair_headers) = threads::plan_repair(
            &self.conn,
            keys,
            key,
            (thread_id, correspondent),
            row.id,
            repair_enabled,
        )
        .map_err(|source| self.query_error("plan the thread repair of a release", source))?;
        self.conn
            .execute_cached(
                "UPDATE messages SET repaired = ?2, repair_headers = ?3 WHERE id = ?1",
                params![row.id, repaired, repair_headers],
            )
            .map_err(|source| self.query_error("record the thread repair of a release", source))?;
        Ok(repair_headers)
    }

    /// Marks a held message forwarded after a person released it, with
    /// its thread's held count and history, in one transaction.
    pub fn mark_released(&mut self, id: i64, smtp_reply: &str) -> Result<()> {
        let now = clock::rfc3339(clock::unix_now());
        let path = self.path.clone();
        let fail = |source| StoreError::Query {
            path: path.clone(),
            action: "mark a released message forwarded",
            source,
        };
        let tx = self.conn.transaction().map_err(fail)?;
        tx.execute_cached(
            "UPDATE messages SET state = 'forwarded', smtp_reply = ?2, last_error = NULL,
                forwarded_at = ?3, updated_at = ?3 WHERE id = ?1",
            params![id, smtp_reply, now],
        )
        .map_err(fail)?;
        tx.execute_cached(
            "UPDATE threads SET held_count = MAX(held_count - 1, 0)
             WHERE id = (SELECT thread_id FROM messages WHERE id = ?1)",
            [id],
        )
        .map_err(fail)?;
        insert_event(&tx, id, &now, "released", Some(smtp_reply)).map_err(fail)?;
        tx.commit().map_err(fail)
    }

    /// Threads, most recently active first.
    pub fn list_threads(&self, filter: &ThreadFilter) -> Result<Vec<ThreadRow>> {
        threads::list(&self.conn, filter).map_err(|source| self.query_error("list threads", source))
    }

    /// One thread and its messages in order.
    pub fn thread(&self, id: i64) -> Result<Option<(ThreadRow, Vec<MessageRow>)>> {
        let Some(thread) = threads::get(&self.conn, id)
            .map_err(|source| self.query_error("read a thread", source))?
        else {
            return Ok(None);
        };
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ?1 ORDER BY id"
            ))
            .map_err(|source| self.query_error("read a thread", source))?;
        let messages = statement
            .query_map([id], read_message)
            .and_then(|rows| rows.collect())
            .map_err(|source| self.query_error("read a thread", source))?;
        Ok(Some((thread, messages)))
    }

    /// Correspondents with their addresses and threads, newest first.
    pub fn correspondents(
        &self,
        relay: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Vec<CorrespondentRow>> {
        threads::correspondents(&self.conn, relay, limit)
            .map_err(|source| self.query_error("list correspondents", source))
    }

    /// Removes content fields of messages first seen before `cutoff`
    /// (subject, addresses, date, reasons' sentences, SMTP replies) and their
    /// event history, keeping what threading and deduplication need:
    /// Message-IDs, references, thread, correspondent, state, reason and
    /// hashes. Returns (messages pruned, events removed).
    pub fn prune(&mut self, cutoff: &str) -> Result<(usize, usize)> {
        let path = self.path.clone();
        let fail = |source| StoreError::Query {
            path: path.clone(),
            action: "prune old messages",
            source,
        };
        let tx = self.conn.transaction().map_err(fail)?;
        // NOTE: Held messages are left whole: they wait for a person, who
        // needs to see what they are, and `release` lifts a rate-limit
        // block by their sender. Their originals sit in the held folder.
        let events = tx
            .execute_cached(
                "DELETE FROM events WHERE message IN
                    (SELECT id FROM messages WHERE first_seen_at < ?1 AND state != 'held')",
                [cutoff],
            )
            .map_err(fail)?;
        let messages = tx
            .execute_cached(
                "UPDATE messages SET subject = NULL, from_addr = NULL, reply_to = NULL, date = NULL,
                    detail = NULL, last_error = NULL, smtp_reply = NULL, relay_alias = NULL,
                    reply_token = NULL
                 WHERE first_seen_at < ?1 AND state != 'held'
                    AND (subject IS NOT NULL OR from_addr IS NOT NULL
                    OR reply_to IS NOT NULL OR date IS NOT NULL OR detail IS NOT NULL
                    OR last_error IS NOT NULL OR smtp_reply IS NOT NULL
                    OR relay_alias IS NOT NULL OR reply_token IS NOT NULL)",
                [cutoff],
            )
            .map_err(fail)?;
        tx.execute_cached("DELETE FROM auto_replies WHERE last_sent_at < ?1", [cutoff])
            .map_err(fail)?;
        // NOTE: A lifted block only hides the messages logged before the
        // lift from the rate limit. Those older than the cutoff have just
        // lost their addresses and no longer count, except held ones, which
        // stay whole: a lift stays while one of those remains.
        tx.execute_cached(
            "DELETE FROM blocked_correspondents
             WHERE lifted_at IS NOT NULL AND lifted_at < ?1
                AND NOT EXISTS (SELECT 1 FROM messages
                    WHERE state = 'held' AND id <= blocked_correspondents.lifted_after_message
                        AND lower(COALESCE(relay_alias, from_addr)) = blocked_correspondents.address)",
            [cutoff],
        )
        .map_err(fail)?;
        tx.execute_cached(
            "UPDATE threads SET subject = NULL, subject_key = NULL
             WHERE last_activity_at < ?1 AND (subject IS NOT NULL OR subject_key IS NOT NULL)",
            [cutoff],
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
        Ok((messages, events))
    }

    /// Messages, newest first.
    pub fn list_messages(&self, filter: &MessageFilter) -> Result<Vec<MessageRow>> {
        // NOTE: The WHERE clause is built from the filters given, so each
        // query can use its index (a generic `?1 IS NULL OR ...` cannot).
        let mut conditions = Vec::new();
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::new();
        let state = filter.state.map(State::as_str);
        if let Some(state) = &state {
            conditions.push("state = ?");
            values.push(state);
        }
        if let Some(mailbox) = &filter.mailbox {
            conditions.push("mailbox = ?");
            values.push(mailbox);
        }
        let limit = filter.limit.map_or(-1, i64::from);
        values.push(&limit);
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages {where_clause} ORDER BY id DESC LIMIT ?"
            ))
            .map_err(|source| self.query_error("list messages", source))?;
        statement
            .query_map(values.as_slice(), read_message)
            .and_then(|rows| rows.collect())
            .map_err(|source| self.query_error("list messages", source))
    }

    /// One message by id.
    pub fn message(&self, id: i64) -> Result<Option<MessageRow>> {
        self.conn
            .query_row_cached(
                &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1"),
                [id],
                read_message,
            )
            .optional()
            .map_err(|source| self.query_error("read a message", source))
    }

    /// A message's history, oldest first.
    pub fn events(&self, id: i64) -> Result<Vec<Event>> {
        let mut statement = self
            .conn
            .prepare("SELECT at, kind, detail FROM events WHERE message = ?1 ORDER BY id")
            .map_err(|source| self.query_error("read a message's history", source))?;
        statement
            .query_map([id], |row| {
                Ok(Event {
                    at: row.get(0)?,
                    kind: row.get(1)?,
                    detail: row.get(2)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|source| self.query_error("read a message's history", source))
    }

    /// Every mailbox's last pass and counts by state.
    pub fn mailbox_status(&self) -> Result<Vec<MailboxStatus>> {
        let fail = |source| self.query_error("read mailbox status", source);
        let mut statement = self
            .conn
            .prepare(
                "SELECT name, uidvalidity, last_uid, last_pass_started_at, last_pass_finished_at,
                    last_pass_outcome, retired_at FROM mailboxes ORDER BY name",
            )
            .map_err(fail)?;
        let mut statuses: Vec<MailboxStatus> = statement
            .query_map([], |row| {
                Ok(MailboxStatus {
                    name: row.get(0)?,
                    uidvalidity: row.get(1)?,
                    last_uid: row.get(2)?,
                    last_pass_started_at: row.get(3)?,
                    last_pass_finished_at: row.get(4)?,
                    last_pass_outcome: row.get(5)?,
                    retired_at: row.get(6)?,
                    counts: Vec::new(),
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(fail)?;
        let mut count = self
            .conn
            .prepare("SELECT state, COUNT(*) FROM messages WHERE mailbox = ?1 GROUP BY state")
            .map_err(fail)?;
        for status in &mut statuses {
            let found: Vec<(String, u64)> = count
                .query_map([&status.name], |row| Ok((row.get(0)?, row.get(1)?)))
                .and_then(|rows| rows.collect())
                .map_err(fail)?;
            status.counts = State::ALL
                .iter()
                .map(|state| {
                    let n = found
                        .iter()
                        .find(|(name, _)| name == state.as_str())
                        .map_or(0, |(_, n)| *n);
                    (state.as_str().to_owned(), n)
                })
                .collect();
        }
        Ok(statuses)
    }
}

fn read_message(row: &Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        id: row.get(0)?,
        mailbox: row.get(1)?,
        uidvalidity: row.get(2)?,
        uid: row.get(3)?,
        message_id: row.get(4)?,
        in_reply_to: row.get(5)?,
        references: row.get(6)?,
        from: row.get(7)?,
        reply_to: row.get(8)?,
        subject: row.get(9)?,
        date: row.get(10)?,
        size: row.get::<_, i64>(11)?.max(0) as u64,
        sha256: row.get(12)?,
        state: row.get(13)?,
        reason: row.get(14)?,
        detail: row.get(15)?,
        attempts: row.get(16)?,
        last_error: row.get(17)?,
        smtp_reply: row.get(18)?,
        resent_message_id: row.get(19)?,
        first_seen_at: row.get(20)?,
        updated_at: row.get(21)?,
        forwarded_at: row.get(22)?,
        settled_at: row.get(23)?,
        settled_as: row.get(24)?,
        class: row.get(25)?,
        relay: row.get(26)?,
        relay_alias: row.get(27)?,
        reply_token: row.get(28)?,
        thread_id: row.get(29)?,
        thread_key: row.get(30)?,
        repaired: row.get(31)?,
        repair_headers: row.get(32)?,
        body_sha256: row.get(33)?,
        notice_sent_at: row.get(34)?,
        auto_replied_at: row.get(35)?,
    })
}

/// Inserts a batch of new messages (rows, thread links, `recorded` events)
/// and advances the checkpoint, in one transaction.
pub(super) fn record_in(
    conn: &mut Connection,
    batch: &[NewMessage],
    checkpoint: Option<(&str, Checkpoint)>,
    relay_window_since: &str,
) -> rusqlite::Result<Vec<(i64, Attachment)>> {
    let now = clock::rfc3339(clock::unix_now());
    let tx = conn.transaction()?;
    let mut ids = Vec::with_capacity(batch.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO messages (mailbox, uidvalidity, uid, message_id, in_reply_to, refs,
                    from_addr, reply_to, subject, date, size, sha256, state, reason, detail,
                    first_seen_at, updated_at, class, relay, relay_alias, reply_token, body_sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?16,
                    ?17, ?18, ?19, ?20, ?21)",
        )?;
        for message in batch {
            let state = message.state.unwrap_or(State::Pending);
            let summary = &message.summary;
            insert.execute(params![
                message.mailbox,
                message.uidvalidity,
                message.uid,
                summary.message_id,
                summary.in_reply_to,
                summary.references,
                summary.from,
                summary.reply_to,
                summary.subject,
                summary.date,
                message.size as i64,
                message.sha256,
                state.as_str(),
                message.reason,
                message.detail,
                now,
                message.class,
                message.relay.as_ref().map(|relay| relay.name.as_str()),
                message.relay.as_ref().map(|relay| relay.alias.as_str()),
                message
                    .relay
                    .as_ref()
                    .map(|relay| relay.reply_token.as_str()),
                message.body_sha256,
            ])?;
            let id = tx.last_insert_rowid();
            let attachment = match &message.thread {
                Some(keys) => {
                    let context = AttachContext {
                        row_id: id,
                        mailbox: &message.mailbox,
                        now: &now,
                        relay_window_since,
                        forwarding: state == State::Pending,
                        forward_to: &message.forward_to,
                        repair_enabled: message.repair_enabled,
                        held: state == State::Held,
                    };
                    let attachment = threads::attach(&tx, keys, &context)?;
                    tx.execute_cached(
                        "UPDATE messages SET thread_id = ?2, thread_key = ?3, repaired = ?4,
                            repair_headers = ?5 WHERE id = ?1",
                        params![
                            id,
                            attachment.thread_id,
                            attachment.key,
                            attachment.repaired,
                            attachment.repair_headers
                        ],
                    )?;
                    attachment
                }
                None => Attachment::default(),
            };
            let kind = match state {
                State::Pending => "recorded",
                other => other.as_str(),
            };
            insert_event(&tx, id, &now, kind, message.detail.as_deref())?;
            ids.push((id, attachment));
        }
    }
    if let Some((mailbox, checkpoint)) = checkpoint {
        advance_checkpoint_in(&tx, mailbox, checkpoint)?;
    }
    tx.commit()?;
    Ok(ids)
}

/// Moves a mailbox's checkpoint forward (`last_uid` never goes back):
/// alone, or inside the transaction that records a batch.
fn advance_checkpoint_in(
    conn: &Connection,
    mailbox: &str,
    checkpoint: Checkpoint,
) -> rusqlite::Result<()> {
    conn.execute_cached(
        "UPDATE mailboxes SET uidvalidity = ?2, last_uid = MAX(last_uid, ?3) WHERE name = ?1",
        params![mailbox, checkpoint.uidvalidity, checkpoint.last_uid],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_message(uid: u32, state: Option<State>) -> NewMessage {
        NewMessage {
            mailbox: "support".to_owned(),
            uidvalidity: 9,
            uid,
            summary: crate::mail::MailSummary {
                message_id: Some(format!("m{uid}@x.test")),
                ..Default::default()
            },
            size: 100,
            sha256: format!("{uid:064}"),
            state,
            reason: None,
            detail: None,
            class: None,
            relay: None,
            thread: None,
            repair_enabled: true,
            body_sha256: None,
            forward_to: "intake@helpdesk.test".to_owned(),
        }
    }

    #[test]
    fn a_pass_that_died_is_recorded_as_failed_at_the_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("log.db")).expect("open");
        store.begin_pass("support").expect("begin");
        store.finish_pass("support", "ok").expect("finish");
        let clean = store.mailbox_status().expect("status");
        assert_eq!(clean[0].last_pass_outcome.as_deref(), Some("ok"));

        // The next pass began (a minute on, not to wait a second) and was killed.
        let killed_start = clock::rfc3339(clock::unix_now() + 60);
        store
            .conn
            .execute(
                "UPDATE mailboxes SET last_pass_started_at = ?1",
                [&killed_start],
            )
            .expect("move the start");
        store.begin_pass("support").expect("begin again");
        let status = &store.mailbox_status().expect("status")[0];
        let outcome = status.last_pass_outcome.as_deref().unwrap_or_default();
        assert!(
            outcome.starts_with("error: the pass started at ")
                && outcome.ends_with(DIED_PASS_ENDING),
            "{outcome}"
        );
        assert_eq!(
            status.last_pass_finished_at.as_deref(),
            Some(killed_start.as_str()),
            "the dead pass ends where it started"
        );

        // A start after a clean finish is not a death.
        store.finish_pass("support", "ok").expect("finish");
        store.begin_pass("support").expect("begin");
        let status = &store.mailbox_status().expect("status")[0];
        assert_eq!(status.last_pass_outcome.as_deref(), Some("ok"));
    }

    #[test]
    fn mailboxes_left_out_of_the_config_are_retired_until_a_pass_returns() {
        let store = Store::open_in_memory().expect("open");
        for name in ["sales", "support"] {
            store.begin_pass(name).expect("begin");
            store.finish_pass(name, "ok").expect("finish");
        }
        let retired = |store: &Store| -> Vec<(String, bool)> {
            let statuses = store.mailbox_status().expect("status");
            statuses
                .into_iter()
                .map(|status| (status.name, status.retired_at.is_some()))
                .collect()
        };
        store.retire_mailboxes_except(&["support"]).expect("retire");
        assert_eq!(
            retired(&store),
            [("sales".to_owned(), true), ("support".to_owned(), false)]
        );
        // Retired once: a later pass keeps the first date.
        store
            .conn
            .execute(
                "UPDATE mailboxes SET retired_at = 'then' WHERE name = 'sales'",
                [],
            )
            .expect("date");
        store
            .retire_mailboxes_except(&["support"])
            .expect("retire again");
        let sales = &store.mailbox_status().expect("status")[0];
        assert_eq!(sales.retired_at.as_deref(), Some("then"));
        // Back in the config: the next pass clears the mark before it
        // reaches the mailbox.
        store
            .retire_mailboxes_except(&["sales", "support"])
            .expect("retire");
        assert_eq!(
            retired(&store),
            [("sales".to_owned(), false), ("support".to_owned(), false)]
        );
        // Names that need quoting in JSON are compared as written.
        store.begin_pass("quote\"d").expect("begin");
        store
            .retire_mailboxes_except(&["quote\"d", "sales", "support"])
            .expect("retire");
        assert!(retired(&store).iter().all(|(_, retired)| !retired));
    }

    #[test]
    fn a_second_signal_closes_only_the_open_pass() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("log.db")).expect("open");
        store.begin_pass("billing").expect("begin");
        store.finish_pass("billing", "ok").expect("finish");
        store.begin_pass("support").expect("begin");
        store.interrupt_open_passes().expect("interrupt");
        let statuses = store.mailbox_status().expect("status");
        let outcome = |name: &str| {
            statuses
                .iter()
                .find(|status| status.name == name)
                .and_then(|status| status.last_pass_outcome.clone())
        };
        assert_eq!(outcome("billing").as_deref(), Some("ok"));
        assert_eq!(
            outcome("support").as_deref(),
            Some("interrupted by a second signal")
        );
        // The next pass finds it closed: not a death.
        store.begin_pass("support").expect("begin");
        let statuses = store.mailbox_status().expect("status");
        let support = statuses.iter().find(|status| status.name == "support");
        assert_eq!(
            support.and_then(|status| status.last_pass_outcome.as_deref()),
            Some("interrupted by a second signal")
        );
    }

    #[test]
    fn log_location_looks_without_creating() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.db");
        let before = log_location(&path).expect("folder exists");
        assert!(!before.exists);
        assert!(before.folder_writable);
        assert!(before.unwritable.is_empty());
        assert!(!path.exists(), "looking created the log");
        drop(Store::open(&path).expect("open"));
        assert!(log_location(&path).expect("folder exists").exists);
        let missing = dir.path().join("no-such-folder").join("log.db");
        assert!(log_location(&missing).is_err());
        let file_as_folder = path.join("log.db");
        assert!(log_location(&file_as_folder).is_err());
    }

    /// The log in `dir` and its writer thread, on the same file.
    fn open_with_journal(dir: &Path) -> (Store, Journal) {
        let path = dir.join("log.db");
        let store = Store::open(&path).expect("open");
        let journal = Journal::open(&path).expect("journal");
        (store, journal)
    }

    /// Waits for the journal's writes, as the worker does before settling.
    fn flush(journal: &Journal) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(journal.flush())
            .expect("journal writes");
    }

    #[test]
    fn delivery_state_machine_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, journal) = open_with_journal(dir.path());
        store.begin_pass("support").expect("begin");
        let checkpoint = Checkpoint {
            uidvalidity: 9,
            last_uid: 2,
        };
        let ids = store
            .record_batch(
                &[new_message(1, None), new_message(2, Some(State::Held))],
                Some(("support", checkpoint)),
                "",
            )
            .expect("record")
            .into_iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>();
        assert_eq!(store.checkpoint("support").expect("read"), Some(checkpoint));
        assert_eq!(store.unfinished("support", 9).expect("unfinished").len(), 2);

        assert_eq!(
            store.mark_send_attempt(ids[0], "<r@x>").expect("attempt"),
            1
        );
        journal.deferred(ids[0], "450 try later");
        flush(&journal);
        assert_eq!(
            store.mark_send_attempt(ids[0], "<r@x>").expect("attempt"),
            2
        );
        journal.forwarded(ids[0], "250 ok");
        flush(&journal);
        store.mark_settled(&ids, "keyword").expect("settle");
        assert!(
            store
                .unfinished("support", 9)
                .expect("unfinished")
                .is_empty()
        );

        let row = store.message(ids[0]).expect("read").expect("exists");
        assert_eq!(row.state(), State::Forwarded);
        assert_eq!(row.attempts, 2);
        assert_eq!(row.smtp_reply.as_deref(), Some("250 ok"));
        let kinds: Vec<String> = store
            .events(ids[0])
            .expect("events")
            .into_iter()
            .map(|event| event.kind)
            .collect();
        assert_eq!(kinds, ["recorded", "deferred", "forwarded", "settled"]);

        let status = store.mailbox_status().expect("status");
        assert_eq!(status[0].counts[1], ("forwarded".to_owned(), 1));
        assert_eq!(status[0].counts[2], ("held".to_owned(), 1));
    }

    #[test]
    fn journal_records_batches_and_a_failed_one_fails_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, journal) = open_with_journal(dir.path());
        store.begin_pass("support").expect("begin");
        let first = store
            .record_batch(&[new_message(1, None)], None, "")
            .expect("record")[0]
            .0;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let checkpoint = Checkpoint {
            uidvalidity: 9,
            last_uid: 3,
        };
        // An outcome queued before the batch is committed with it or before.
        journal.forwarded(first, "250 ok");
        let ids = runtime
            .block_on(journal.record(
                vec![new_message(2, None), new_message(3, Some(State::Held))],
                Some(("support".to_owned(), checkpoint)),
                String::new(),
            ))
            .expect("recorded on the writer thread");
        assert_eq!(ids.len(), 2);
        assert_eq!(store.checkpoint("support").expect("read"), Some(checkpoint));
        let states: Vec<State> = [first, ids[0].0, ids[1].0]
            .iter()
            .map(|id| store.message(*id).expect("read").expect("row").state())
            .collect();
        assert_eq!(states, [State::Forwarded, State::Pending, State::Held]);

        // Counted, then found never sent: the count goes back, never below 0.
        journal.attempts(vec![(ids[0].0, "<r@x>".to_owned())]);
        journal.not_attempted(vec![ids[0].0, ids[1].0]);
        flush(&journal);
        let attempts: Vec<u32> = [ids[0].0, ids[1].0]
            .iter()
            .map(|id| store.message(*id).expect("read").expect("row").attempts)
            .collect();
        assert_eq!(attempts, [0, 0]);

        // UID 2 again breaks the log's uniqueness: that batch fails alone,
        // and outcomes of mail already sent are still written.
        let again =
            runtime.block_on(journal.record(vec![new_message(2, None)], None, String::new()));
        let message = again.expect_err("a duplicate UID is refused").to_string();
        assert!(message.contains("record fetched messages"), "{message}");
        assert!(!journal.has_failed());
        journal.forwarded(ids[0].0, "250 ok");
        runtime
            .block_on(journal.flush())
            .expect("outcomes still written");
        assert_eq!(
            store.message(ids[0].0).expect("read").expect("row").state(),
            State::Forwarded
        );
    }

    #[test]
    fn content_lookup_prefers_the_row_that_did_not_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, journal) = open_with_journal(dir.path());
        store.begin_pass("support").expect("begin");
        // The same bytes at UID 1 (rejected) and, moved back, at UID 2
        // (forwarded): the forwarded row is what the helpdesk has.
        let mut again = new_message(2, None);
        again.sha256 = new_message(1, None).sha256;
        let ids: Vec<i64> = store
            .record_batch(&[new_message(1, None), again], None, "")
            .expect("record")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        journal.failed(ids[0], "rejected", "550 no");
        flush(&journal);
        let sha256 = new_message(1, None).sha256;
        let found = store.find_by_content("support", &sha256).expect("lookup");
        assert_eq!(
            found.map(|row| row.id),
            Some(ids[1]),
            "still pending, not failed"
        );
        journal.forwarded(ids[1], "250 ok");
        flush(&journal);
        let found = store.find_by_content("support", &sha256).expect("lookup");
        assert_eq!(
            found.map(|row| (row.id, row.state())),
            Some((ids[1], State::Forwarded))
        );
        // With only the failed row, that one is found.
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, journal) = open_with_journal(dir.path());
        store.begin_pass("support").expect("begin");
        let only = store
            .record_batch(&[new_message(1, None)], None, "")
            .expect("record")[0]
            .0;
        journal.failed(only, "rejected", "550 no");
        flush(&journal);
        let found = store.find_by_content("support", &sha256).expect("lookup");
        assert_eq!(
            found.map(|row| (row.id, row.state())),
            Some((only, State::Failed))
        );
    }

    #[test]
    fn ticket_tokens_thread_only_within_one_helpdesk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _journal) = open_with_journal(dir.path());
        store.begin_pass("support").expect("begin");
        let patterns = crate::thread::TicketPatterns::new(&[]).expect("patterns");
        let with_token = |uid: u32, forward_to: &str| {
            let raw = format!(
                "From: c{uid}@example.org\r\nSubject: Re: Printer [#1234]\r\nMessage-ID: <t{uid}@x.test>\r\n\r\nx\r\n"
            );
            let message = crate::mail::parse(raw.as_bytes()).expect("parses");
            let mut row = new_message(uid, None);
            row.thread = Some(crate::thread::keys(&message, None, &patterns));
            row.forward_to = forward_to.to_owned();
            row
        };
        let rows = [
            with_token(1, "intake@a.freshdesk.test"),
            with_token(2, "intake@a.freshdesk.test"),
            with_token(3, "intake@b.freshdesk.test"),
        ];
        store.record_batch(&rows, None, "").expect("record");
        let threads: Vec<(Option<i64>, Option<String>)> = (1..=3)
            .map(|uid| {
                let row = store
                    .find_by_uid("support", 9, uid)
                    .expect("read")
                    .expect("row");
                (row.thread_id, row.thread_key)
            })
            .collect();
        assert_eq!(threads[1].0, threads[0].0, "same helpdesk, same ticket");
        assert_eq!(threads[1].1.as_deref(), Some("ticket-token"));
        assert_ne!(threads[2].0, threads[0].0, "another helpdesk's #1234");
        assert_eq!(threads[2].1.as_deref(), Some("new"));
    }

    #[test]
    fn an_auto_reply_is_claimed_before_sending_in_any_letter_case() {
        let store = Store::open_in_memory().expect("open");
        let since = "2000-01-01T00:00:00Z";
        assert!(
            !store
                .auto_replied_since("Alice@Example.org", since)
                .expect("read")
        );
        store.claim_auto_reply("Alice@Example.org").expect("claim");
        // Claimed, not yet sent: the sender's turn is taken all the same.
        assert!(
            store
                .auto_replied_since("alice@example.org", since)
                .expect("read")
        );
        assert!(
            store
                .auto_replied_since("ALICE@EXAMPLE.ORG", since)
                .expect("read")
        );
        assert!(
            !store
                .auto_replied_since("bob@example.org", since)
                .expect("read")
        );
    }

    #[test]
    fn prune_clears_content_but_keeps_threading_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, journal) = open_with_journal(dir.path());
        let mut message = new_message(1, None);
        message.summary.subject = Some("Secret plans".to_owned());
        message.summary.from = Some("a@example.org".to_owned());
        message.summary.references = Some("r1@x.test".to_owned());
        message.relay = Some(crate::classify::RelayMatch {
            name: "firefox".to_owned(),
            alias: "k3x9@mozmail.com".to_owned(),
            reply_token: "k3x9@mozmail.com".to_owned(),
        });
        message.thread = Some(crate::thread::ThreadKeys {
            own_id: Some("m1@x.test".to_owned()),
            subject: Some("Secret plans".to_owned()),
            subject_key: Some("secret plans".to_owned()),
            ..crate::thread::ThreadKeys::default()
        });
        let ids = store.record_batch(&[message], None, "").expect("record");
        let id = ids[0].0;
        journal.forwarded(id, "250 ok");
        flush(&journal);
        let (pruned, events) = store.prune("9999-01-01T00:00:00Z").expect("prune");
        assert_eq!((pruned, events), (1, 2));
        let row = store.message(id).expect("read").expect("row");
        assert_eq!(
            (&row.subject, &row.from, &row.smtp_reply),
            (&None, &None, &None)
        );
        assert_eq!((&row.relay_alias, &row.reply_token), (&None, &None));
        assert_eq!(row.message_id.as_deref(), Some("m1@x.test"));
        assert_eq!(row.references.as_deref(), Some("r1@x.test"));
        assert_eq!(row.state(), State::Forwarded);
        assert!(row.thread_id.is_some());
        let (thread, _) = store
            .thread(row.thread_id.unwrap_or_default())
            .expect("thread")
            .expect("exists");
        assert_eq!(thread.subject, None);
        let subject_key: Option<String> = store
            .conn
            .query_row(
                "SELECT subject_key FROM threads WHERE id = ?1",
                [thread.id],
                |row| row.get(0),
            )
            .expect("subject_key");
        assert_eq!(
            subject_key, None,
            "the normalised subject is personal data too"
        );
        assert_eq!(
            store.prune("9999-01-01T00:00:00Z").expect("again"),
            (0, 0),
            "idempotent"
        );
        assert_eq!(store.prune("2000-01-01T00:00:00Z").expect("none"), (0, 0));

        // A held message waits for a person: pruning leaves it whole.
        let mut held = new_message(2, Some(State::Held));
        held.summary.from = Some("b@example.org".to_owned());
        let held_id = store.record_batch(&[held], None, "").expect("record")[0].0;
        store.prune("9999-01-01T00:00:00Z").expect("prune");
        let row = store.message(held_id).expect("read").expect("row");
        assert_eq!(row.from.as_deref(), Some("b@example.org"));
    }

    /// A message from `from`, first seen now, in `state`.
    fn from_sender(uid: u32, from: &str, state: Option<State>) -> NewMessage {
        let mut message = new_message(uid, state);
        message.summary.from = Some(from.to_owned());
        message
    }

    #[test]
    fn a_lifted_block_counts_only_later_mail_and_can_come_back() {
        let mut store = Store::open_in_memory().expect("open");
        let flood: Vec<NewMessage> = (1..=4)
            .map(|uid| from_sender(uid, "loop@x.test", Some(State::Held)))
            .collect();
        store.record_batch(&flood, None, "").expect("record");
        let count = |store: &Store| {
            store
                .count_from_since("support", "loop@x.test", "2000-01-01T00:00:00Z")
                .expect("count")
        };
        assert_eq!(count(&store), 4);
        assert!(!store.unblock("loop@x.test").expect("no block yet"));

        store.block("loop@x.test", "flood").expect("block");
        assert_eq!(
            store.blocked("loop@x.test").expect("look up").as_deref(),
            Some("flood")
        );
        assert!(store.unblock("loop@x.test").expect("lift"));
        assert!(!store.unblock("loop@x.test").expect("already lifted"));
        assert_eq!(store.blocked("loop@x.test").expect("look up"), None);
        // The flood before the lift no longer counts; what follows does.
        assert_eq!(count(&store), 0);
        store
            .record_batch(&[from_sender(5, "Loop@X.test", None)], None, "")
            .expect("record");
        assert_eq!(
            count(&store),
            1,
            "any letter case is the same correspondent"
        );

        // A new block replaces the lifted one and counts from scratch once
        // lifted again.
        store.block("LOOP@x.test", "again").expect("block again");
        assert_eq!(
            store.blocked("loop@X.TEST").expect("look up").as_deref(),
            Some("again")
        );
        assert!(store.unblock("Loop@x.test").expect("lift again"));
        assert_eq!(count(&store), 0);

        // Pruning forgets the lift only once no held message from before
        // it remains, since those would count again.
        store.prune("9999-01-01T00:00:00Z").expect("prune");
        assert_eq!(count(&store), 0, "the held flood still does not count");
        let ids: Vec<i64> = store
            .list_messages(&MessageFilter::default())
            .expect("list")
            .iter()
            .filter(|row| row.state() == State::Held)
            .map(|row| row.id)
            .collect();
        assert_eq!(ids.len(), 4);
        for id in ids {
            store.mark_released(id, "250 ok").expect("release");
        }
        store.prune("9999-01-01T00:00:00Z").expect("prune");
        let lifts: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM blocked_correspondents", [], |row| {
                row.get(0)
            })
            .expect("count lifts");
        assert_eq!(lifts, 0);
    }

    #[test]
    fn a_log_from_before_lifts_keeps_its_blocks_in_lower_case() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.db");
        {
            // A log as deskbridge left it before migration 0007.
            let conn = Connection::open(&path).expect("create");
            for (_, sql) in &MIGRATIONS[..6] {
                conn.execute_batch(sql).expect("older migration");
            }
            conn.execute_batch(
                "PRAGMA user_version = 6;
                 INSERT INTO blocked_correspondents VALUES ('Loop@X.test', '2026-11-01T00:00:00Z', 'one');
                 INSERT INTO blocked_correspondents VALUES ('loop@x.test', '2026-11-02T00:00:00Z', 'two');
                 INSERT INTO blocked_correspondents VALUES ('Other@X.test', '2026-11-03T00:00:00Z', 'three');",
            )
            .expect("blocks");
        }
        let store = Store::open(&path).expect("migrates");
        assert_eq!(
            store.schema_version().expect("version"),
            MIGRATIONS.len() as i64
        );
        let addresses: Vec<String> = store
            .conn
            .prepare("SELECT address FROM blocked_correspondents ORDER BY address")
            .expect("prepare")
            .query_map([], |row| row.get(0))
            .expect("query")
            .collect::<std::result::Result<_, _>>()
            .expect("rows");
        assert_eq!(addresses, ["loop@x.test", "other@x.test"]);
        assert!(store.blocked("OTHER@x.test").expect("look up").is_some());
    }

    #[test]
    fn same_position_cannot_be_recorded_twice() {
        let mut store = Store::open_in_memory().expect("open");
        store
            .record_batch(&[new_message(1, None)], None, "")
            .expect("first");
        let err = store
            .record_batch(&[new_message(1, None)], None, "")
            .expect_err("a second row for the same mailbox, UIDVALIDITY and UID");
        assert!(
            err.to_string().contains("UNIQUE constraint failed"),
            "{err:#}"
        );
        // Nothing of the refused batch was kept.
        let rows = store
            .list_messages(&MessageFilter::default())
            .expect("list");
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn reopening_a_file_keeps_data_and_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.db");
        {
            let mut store = Store::open(&path).expect("open");
            store
                .record_batch(&[new_message(1, None)], None, "")
                .expect("record");
        }
        let store = Store::open(&path).expect("reopen");
        let rows = store
            .list_messages(&MessageFilter::default())
            .expect("list");
        assert_eq!(rows.len(), 1);
        assert!(Store::open_existing(&dir.path().join("missing.db")).is_err());
    }
}
