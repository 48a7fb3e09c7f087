//! The log's writer thread: group commit for send outcomes, and the
//! transaction that records each fetched batch.
//!
//! Marking a message `forwarded` must be durable (`synchronous = FULL`), and
//! one fsync per message would block the pass's only thread and stall every
//! SMTP session. The journal owns a second connection on its own thread:
//! outcomes queue up while it commits, and each commit takes everything
//! queued so far. [`Journal::flush`] waits until every outcome sent before
//! it is on disk; the worker flushes before it settles anything on the IMAP
//! server, so "settle after a durable forwarded mark" still holds.
//! Recording a batch ([`Journal::record`]) runs here too, for the same
//! reason: its insert and fsync took 10-60 ms, during which no session
//! on the pass's thread could read a reply or send the next message.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use super::{Attachment, Cached, Checkpoint, NewMessage, insert_event, record_in};

use super::StoreError;
use crate::clock;

/// How long the writer waits for more outcomes before it commits the
/// first one: short against a send (milliseconds), long against the gap
/// between replies of several sessions.
const GROUP_WINDOW: Duration = Duration::from_millis(5);

enum Command {
    Attempts(Vec<(i64, String)>),
    NotAttempted(Vec<i64>),
    Forwarded {
        id: i64,
        reply: String,
    },
    Deferred {
        id: i64,
        error: String,
    },
    Failed {
        id: i64,
        reason: String,
        error: String,
    },
    Flush(tokio::sync::oneshot::Sender<Result<(), String>>),
    Record(Box<Recording>),
}

/// A fetched batch to record, and where its row ids go.
struct Recording {
    batch: Vec<NewMessage>,
    checkpoint: Option<(String, Checkpoint)>,
    relay_window_since: String,
    done: tokio::sync::oneshot::Sender<Result<Vec<(i64, Attachment)>, String>>,
}

/// The writer thread's handle.
#[derive(Debug)]
pub struct Journal {
    sender: Option<mpsc::Sender<Command>>,
    /// Set by the writer thread when a commit of send outcomes fails
    /// (a failed recording fails only its batch): senders check it before
    /// each message, so no more mail goes out unrecorded.
    failed: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Journal {
    /// Opens the journal's own connection to the (already migrated) log.
    ///
    /// # Errors
    /// The database cannot be opened.
    pub fn open(path: &Path) -> Result<Journal, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        conn.set_prepared_statement_cache_capacity(super::STATEMENT_CACHE);
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
        )
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let (sender, receiver) = mpsc::channel();
        let failed = Arc::new(AtomicBool::new(false));
        let thread_failed = Arc::clone(&failed);
        let thread = std::thread::Builder::new()
            .name("deskbridge-journal".to_owned())
            .spawn(move || write_loop(conn, &receiver, &thread_failed))
            .map_err(|err| StoreError::Open {
                path: path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(err)),
            })?;
        Ok(Journal {
            sender: Some(sender),
            failed,
            thread: Some(thread),
            path: path.to_path_buf(),
        })
    }

    fn send(&self, command: Command) {
        // NOTE: A send fails only when the writer thread has died; the next
        // flush reports that.
        if let Some(sender) = &self.sender {
            let _ = sender.send(command);
        }
    }

    /// Queues: sends of these rows are about to start; each attempt counts
    /// and each row's Resent-Message-ID is fixed. Flush before sending.
    pub fn attempts(&self, rows: Vec<(i64, String)>) {
        self.send(Command::Attempts(rows));
    }

    /// Queues: these rows were counted by [`Journal::attempts`] but never
    /// sent (the pass stopped, or no session was left to take them), so
    /// their count goes back down: only a real attempt counts towards
    /// giving up. Like every write after a failed one, it is dropped once
    /// writing outcomes has failed, which errs towards giving up sooner.
    pub fn not_attempted(&self, rows: Vec<i64>) {
        if !rows.is_empty() {
            self.send(Command::NotAttempted(rows));
        }
    }

    /// Queues: the SMTP server accepted message `id` with `reply`.
    pub fn forwarded(&self, id: i64, reply: &str) {
        self.send(Command::Forwarded {
            id,
            reply: reply.to_owned(),
        });
    }

    /// Queues: message `id` was deferred (4xx, broken session).
    pub fn deferred(&self, id: i64, error: &str) {
        self.send(Command::Deferred {
            id,
            error: error.to_owned(),
        });
    }

    /// Queues: message `id` failed for good.
    pub fn failed(&self, id: i64, reason: &str, error: &str) {
        self.send(Command::Failed {
            id,
            reason: reason.to_owned(),
            error: error.to_owned(),
        });
    }

    /// Records a fetched batch and advances the checkpoint, in one
    /// transaction (the rows, their thread links and `recorded` events),
    /// on the writer thread, so the pass's thread keeps the SMTP sessions
    /// going while it commits. Outcomes queued before it are committed
    /// first.
    ///
    /// # Errors
    /// The write failed (nothing of the batch is recorded), or an earlier
    /// outcome could not be written.
    pub async fn record(
        &self,
        batch: Vec<NewMessage>,
        checkpoint: Option<(String, Checkpoint)>,
        relay_window_since: String,
    ) -> Result<Vec<(i64, Attachment)>, StoreError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send(Command::Record(Box::new(Recording {
            batch,
            checkpoint,
            relay_window_since,
            done,
        })));
        let outcome = wait
            .await
            .unwrap_or_else(|_| Err("the journal thread stopped".to_owned()));
        outcome.map_err(|message| self.error("record fetched messages", message))
    }

    fn error(&self, action: &'static str, message: String) -> StoreError {
        StoreError::Journal {
            path: self.path.clone(),
            action,
            message,
        }
    }

    /// Whether a commit of send outcomes has failed: nothing more should
    /// be sent.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Waits until every outcome queued before this call is committed.
    ///
    /// # Errors
    /// A write failed (disk full, database locked too long, ...).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send(Command::Flush(done));
        let outcome = wait
            .await
            .unwrap_or_else(|_| Err("the journal thread stopped".to_owned()));
        outcome.map_err(|message| self.error("record send outcomes", message))
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // Closing the channel ends the loop after it commits what is queued.
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_loop(mut conn: Connection, receiver: &mpsc::Receiver<Command>, failed: &AtomicBool) {
    let mut failure: Option<String> = None;
    while let Ok(first) = receiver.recv() {
        // NOTE: Gather what arrives within GROUP_WINDOW of the first
        // outcome (a flush or a recording, which someone awaits, cuts it
        // short): replies from several sessions
        // then share one commit and one fsync, where committing each on
        // arrival would pay for both about once per message.
        let deadline = Instant::now() + GROUP_WINDOW;
        let mut flush_waiting = is_waited_for(&first);
        let mut commands = vec![first];
        while commands.len() < 1000 {
            let next = if flush_waiting {
                receiver.try_recv().ok()
            } else {
                receiver
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    .ok()
            };
            let Some(next) = next else {
                break;
            };
            flush_waiting |= is_waited_for(&next);
            commands.push(next);
        }
        let mut flushes = Vec::new();
        let mut recordings = Vec::new();
        let mut writes = Vec::new();
        for command in commands {
            match command {
                Command::Flush(done) => flushes.push(done),
                Command::Record(recording) => recordings.push(recording),
                write => writes.push(write),
            }
        }
        if !writes.is_empty()
            && failure.is_none()
            && let Err(err) = apply_patiently(&mut conn, &writes)
        {
            failure = Some(err.to_string());
            failed.store(true, Ordering::Relaxed);
        }
        // NOTE: Outcomes are about rows recorded in earlier rounds (a batch
        // is sent only after its recording is answered), so committing them
        // first changes nothing for the batch recorded now.
        for recording in recordings {
            let Recording {
                batch,
                checkpoint,
                relay_window_since,
                done,
            } = *recording;
            let recorded = match &failure {
                Some(message) => Err(format!(
                    "not recorded, because writing send outcomes failed earlier: {message}"
                )),
                None => record_in(
                    &mut conn,
                    &batch,
                    checkpoint.as_ref().map(|(name, at)| (name.as_str(), *at)),
                    &relay_window_since,
                )
                // NOTE: A failed recording is the caller's error alone: it
                // stops the pass, while the outcomes of messages already on
                // their way must still be written, or they would be sent
                // again. A disk that is really full fails those too.
                .map_err(|err| err.to_string()),
            };
            let _ = done.send(recorded);
        }
        for done in flushes {
            let _ = done.send(match &failure {
                Some(message) => Err(message.clone()),
                None => Ok(()),
            });
        }
    }
}

/// Whether someone awaits this command: it ends the wait for more.
fn is_waited_for(command: &Command) -> bool {
    matches!(command, Command::Flush(_) | Command::Record(_))
}

/// Applies queued outcomes in one transaction: one fsync for all of them.
/// [`apply`], tried again while another connection holds the write lock
/// past the busy timeout (someone's long `sqlite3` transaction): these
/// outcomes are of mail already sent, and losing them means sending it
/// again next pass. A failed try rolls back, so trying again is safe.
fn apply_patiently(conn: &mut Connection, writes: &[Command]) -> rusqlite::Result<()> {
    const TRIES: u32 = 3;
    let mut tries = 1;
    loop {
        match apply(conn, writes) {
            Err(rusqlite::Error::SqliteFailure(error, _))
                if tries < TRIES
                    && matches!(
                        error.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) =>
            {
                tracing::warn!(
                    attempt = tries,
                    "the log stayed locked by another connection; trying again"
                );
                tries += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            outcome => return outcome,
        }
    }
}

fn apply(conn: &mut Connection, writes: &[Command]) -> rusqlite::Result<()> {
    let now = clock::rfc3339(clock::unix_now());
    let tx = conn.transaction()?;
    for write in writes {
        match write {
            Command::Attempts(rows) => {
                for (id, resent_message_id) in rows {
                    write_attempt(&tx, *id, resent_message_id, &now)?;
                }
            }
            Command::NotAttempted(rows) => {
                for id in rows {
                    tx.execute_cached(
                        "UPDATE messages SET attempts = attempts - 1 WHERE id = ?1 AND 0 < attempts",
                        params![id],
                    )?;
                }
            }
            Command::Forwarded { id, reply } => write_forwarded(&tx, *id, reply, &now)?,
            Command::Deferred { id, error } => write_deferred(&tx, *id, error, &now)?,
            Command::Failed { id, reason, error } => write_failed(&tx, *id, reason, error, &now)?,
            Command::Flush(_) | Command::Record(_) => (),
        }
    }
    tx.commit()
}

/// A send is about to start: count it and fix the Resent-Message-ID.
/// Returns the attempts so far, this one included.
pub(super) fn write_attempt(
    conn: &Connection,
    id: i64,
    resent_message_id: &str,
    now: &str,
) -> rusqlite::Result<u32> {
    conn.query_row_cached(
        "UPDATE messages SET attempts = attempts + 1, resent_message_id = ?2, updated_at = ?3
         WHERE id = ?1 RETURNING attempts",
        params![id, resent_message_id, now],
        |row| row.get(0),
    )
}

/// The SMTP server accepted the message: state, reply, history.
pub(super) fn write_forwarded(
    conn: &Connection,
    id: i64,
    reply: &str,
    now: &str,
) -> rusqlite::Result<()> {
    conn.execute_cached(
        "UPDATE messages SET state = 'forwarded', smtp_reply = ?2, last_error = NULL,
            forwarded_at = ?3, updated_at = ?3 WHERE id = ?1",
        params![id, reply, now],
    )?;
    insert_event(conn, id, now, "forwarded", Some(reply))?;
    Ok(())
}

/// A temporary failure: the row stays pending with the error.
pub(super) fn write_deferred(
    conn: &Connection,
    id: i64,
    error: &str,
    now: &str,
) -> rusqlite::Result<()> {
    conn.execute_cached(
        "UPDATE messages SET last_error = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, error, now],
    )?;
    insert_event(conn, id, now, "deferred", Some(error))?;
    Ok(())
}

/// A permanent failure with its machine reason.
pub(super) fn write_failed(
    conn: &Connection,
    id: i64,
    reason: &str,
    error: &str,
    now: &str,
) -> rusqlite::Result<()> {
    conn.execute_cached(
        "UPDATE messages SET state = 'failed', reason = ?2, detail = ?3, last_error = ?3,
            updated_at = ?4 WHERE id = ?1",
        params![id, reason, error, now],
    )?;
    insert_event(conn, id, now, "failed", Some(&format!("{reason}: {error}")))?;
    Ok(())
}
