//! One pass: the only module that composes the stages.
//!
//! For each mailbox: connect (source), select, find the UIDs to work on
//! (new ones past the checkpoint, plus pending ones from earlier passes),
//! fetch them in batches, parse and classify (mail, classify), record the
//! batch (store), send the eligible ones (sink), record each outcome
//! (store), then settle them on the server (source). The order
//! record → send → mark → settle is what makes reruns safe.

//!
//! Submodules: `record` classifies and records a batch, `send` sends it
//! over a pool of SMTP sessions, `held` follows up held mail (notices,
//! auto-replies) and releases it.

mod held;
pub mod probe;
mod record;
mod send;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use tracing::{error, info, warn};

use crate::config::{AfterForward, AfterHold, MailboxSettings, Settings};
use crate::lock::PassLock;
use crate::source::{self, ImapSource, RawMail, Settlement};
use crate::store::{Checkpoint, Journal, MessageRow, State, Store, StoreError};

pub use held::release;
use send::SinkPool;

/// What one pass did, per mailbox.
#[derive(Debug, Default, Clone)]
pub struct PassReport {
    pub mailboxes: Vec<MailboxReport>,
    /// A signal stopped the pass early: the rest is left for the next one.
    pub interrupted: bool,
}

/// What one pass did in one mailbox.
#[derive(Debug, Default, Clone)]
pub struct MailboxReport {
    pub name: String,
    pub fetched: u32,
    pub forwarded: u32,
    pub held: u32,
    pub skipped: u32,
    /// Rejected (5xx) or given up during this pass.
    pub failed: u32,
    /// Left pending for a later pass (4xx, broken session).
    pub deferred: u32,
    /// Batches whose IMAP settle failed; retried on the next pass.
    pub settle_errors: u32,
    /// Messages the IMAP server listed but refused to return; they stay in
    /// the folder (pending ones stay pending) for the next pass.
    pub unfetched: u32,
    /// Why the mailbox could not be processed (TLS, login, SMTP session),
    /// with the full cause chain.
    pub error: Option<String>,
    /// A UID the server listed but did not return: the checkpoint stays
    /// below it for the rest of the pass, so the next pass looks again.
    checkpoint_ceiling: Option<u32>,
}

impl MailboxReport {
    /// Adds another report's counts (from work done side by side).
    fn absorb(&mut self, other: &MailboxReport) {
        self.fetched += other.fetched;
        self.forwarded += other.forwarded;
        self.held += other.held;
        self.skipped += other.skipped;
        self.failed += other.failed;
        self.deferred += other.deferred;
        self.settle_errors += other.settle_errors;
        self.unfetched += other.unfetched;
        self.checkpoint_ceiling = match (self.checkpoint_ceiling, other.checkpoint_ceiling) {
            (Some(mine), Some(theirs)) => Some(mine.min(theirs)),
            (mine, theirs) => mine.or(theirs),
        };
    }
}

impl PassReport {
    /// 2 when a mailbox could not be processed, 1 when some messages
    /// failed or a signal stopped the pass early, 0 otherwise. Held mail is
    /// normal and exits 0.
    pub fn exit_code(&self) -> u8 {
        if self.mailboxes.iter().any(|report| report.error.is_some()) {
            return 2;
        }
        if self.interrupted
            || self
                .mailboxes
                .iter()
                .any(|report| 0 < report.failed || 0 < report.settle_errors || 0 < report.unfetched)
        {
            return 1;
        }
        0
    }
}

/// Why processing a mailbox stopped early.
enum Stop {
    /// The log database failed: the whole pass must stop.
    Store(StoreError),
    /// This mailbox cannot be processed now (IMAP or SMTP session).
    Mailbox(anyhow::Error),
}

impl From<StoreError> for Stop {
    fn from(err: StoreError) -> Stop {
        Stop::Store(err)
    }
}

/// Refuses to go on while the log's file system has less free space than
/// `[store] min_free_mb`: once the log cannot record that a message was
/// forwarded, the next pass sends it again. Checked at the start of a pass
/// and of a release (which then stop), before each batch is recorded or
/// sent (where it stops the mailbox, reported like any other), and before
/// held mail is followed up (which then waits for the next pass).
fn ensure_log_space(settings: &Settings) -> Result<(), StoreError> {
    if settings.store_min_free == 0 {
        return Ok(());
    }
    match (settings.log_free_space)(&settings.store_path) {
        Ok(free) if settings.store_min_free <= free => Ok(()),
        Ok(free) => Err(StoreError::LowSpace {
            path: settings.store_path.clone(),
            free_kib: free / 1024,
            min_free_mb: settings.store_min_free / (1024 * 1024),
        }),
        Err(err) => {
            warn!(path = %settings.store_path.display(), error.message = %err, "cannot tell how much space the log's file system has left; going on");
            Ok(())
        }
    }
}

/// [`ensure_log_space`] within a mailbox's work: too little space stops
/// that mailbox, not the pass (a [`StoreError`] would stop the pass).
fn ensure_log_space_for_mailbox(settings: &Settings) -> Result<(), Stop> {
    ensure_log_space(settings).map_err(|err| Stop::Mailbox(err.into()))
}

/// A message of the current batch and what remains to do with it.
#[derive(Clone)]
struct Item {
    row_id: i64,
    uid: u32,
    /// Its Resent-Message-ID, fixed from the row id, the content hash and
    /// the envelope sender's domain.
    resent_id: String,
    /// Index into the fetched batch.
    mail_index: usize,
    state: State,
    first_seen_unix: i64,
    /// Recorded in this pass (not carried over or recognised again).
    fresh: bool,
    /// In-Reply-To/References lines added on redirect (thread repair).
    repair: Option<String>,
    /// Send attempts before this pass.
    attempts: u32,
}

/// Runs one pass over every configured mailbox.
///
/// `stop` is checked between messages: once set (SIGINT/SIGTERM), the pass
/// finishes the message in flight, settles, and returns.
///
/// # Errors
/// Fatal problems for the whole pass: another pass holds the lock, or the
/// database cannot be opened or written.
pub async fn run_once(settings: &Settings, stop: &AtomicBool) -> anyhow::Result<PassReport> {
    let _lock = PassLock::acquire(&settings.store_path)?;
    // NOTE: Before opening: on a full disk, opening (and migrating) the log
    // would fail with SQLite's less helpful error.
    ensure_log_space(settings)?;
    let mut store = Store::open(&settings.store_path)?;
    let configured: Vec<&str> = settings
        .mailboxes
        .iter()
        .map(|mailbox| mailbox.name.as_str())
        .collect();
    store.retire_mailboxes_except(&configured)?;
    let journal = Journal::open(&settings.store_path)?;
    let mut pool = SinkPool::default();
    let mut report = PassReport::default();
    for mailbox in &settings.mailboxes {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut mailbox_report = MailboxReport {
            name: mailbox.name.clone(),
            ..MailboxReport::default()
        };
        store.begin_pass(&mailbox.name)?;
        store.record_account(&mailbox.name, &mailbox.account())?;
        let outcome = process_mailbox(
            settings,
            mailbox,
            &mut store,
            &journal,
            &mut pool,
            stop,
            &mut mailbox_report,
        )
        .await;
        match outcome {
            Ok(()) => {
                let outcome = if stop.load(Ordering::Relaxed) {
                    "interrupted by a signal".to_owned()
                } else {
                    partial_outcome(&mailbox_report).unwrap_or_else(|| "ok".to_owned())
                };
                store.finish_pass(&mailbox.name, &outcome)?;
            }
            Err(Stop::Store(err)) => {
                // Best effort: the log is what failed, but a record of the
                // failure lets `status --check` name it.
                let _ = store.finish_pass(&mailbox.name, &format!("error: the log: {err}"));
                return Err(anyhow::Error::new(err)
                    .context(format!("pass stopped in mailbox {}", mailbox.name)));
            }
            Err(Stop::Mailbox(err)) => {
                let message = format!("{err:#}");
                error!(mailbox = %mailbox.name, error.message = %message, "mailbox not processed");
                store.finish_pass(&mailbox.name, &format!("error: {message}"))?;
                mailbox_report.error = Some(message);
            }
        }
        report.mailboxes.push(mailbox_report);
    }
    pool.quit().await;
    report.interrupted = stop.load(Ordering::Relaxed);
    Ok(report)
}

/// What went wrong in a completed pass over one mailbox, as the log's
/// `last_pass_outcome` (`partial: 2 failed, 1 refused by the IMAP
/// server`): the same counts that make the pass exit 1, so that `status
/// --check` warns about them too.
fn partial_outcome(report: &MailboxReport) -> Option<String> {
    let parts: Vec<String> = [
        (report.failed, "failed"),
        (report.unfetched, "refused by the IMAP server"),
        (report.settle_errors, "settle or notice errors"),
    ]
    .into_iter()
    .filter(|(count, _)| 0 < *count)
    .map(|(count, what)| format!("{count} {what}"))
    .collect();
    (!parts.is_empty()).then(|| format!("partial: {}", parts.join(", ")))
}

#[allow(clippy::too_many_arguments)]
async fn process_mailbox(
    settings: &Settings,
    mailbox: &MailboxSettings,
    store: &mut Store,
    journal: &Journal,
    pool: &mut SinkPool,
    stop: &AtomicBool,
    report: &mut MailboxReport,
) -> Result<(), Stop> {
    let mut source = source::connect(mailbox)
        .await
        .with_context(|| format!("mailbox {}", mailbox.name))
        .map_err(Stop::Mailbox)?;
    let result = work_mailbox(
        settings,
        mailbox,
        store,
        journal,
        pool,
        &mut source,
        stop,
        report,
    )
    .await;
    source.logout().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn work_mailbox(
    settings: &Settings,
    mailbox: &MailboxSettings,
    store: &mut Store,
    journal: &Journal,
    pool: &mut SinkPool,
    source: &mut ImapSource,
    stop: &AtomicBool,
    report: &mut MailboxReport,
) -> Result<(), Stop> {
    let mailbox_context = || folder_context(mailbox);
    let folder = source
        .select()
        .await
        .with_context(mailbox_context)
        .map_err(Stop::Mailbox)?;
    let uidvalidity = folder.uidvalidity;
    if !folder.keeps_keywords
        && (mailbox.after_forward != crate::config::AfterForward::Move
            || mailbox.after_hold != crate::config::AfterHold::Move)
    {
        // Nothing is lost (the log decides what was sent), but a person
        // looking at the mailbox would see no mark of what was done.
        warn!(
            mailbox = %mailbox.name,
            folder = %mailbox.folder,
            "the IMAP server does not keep new keywords in this folder (no \\* in PERMANENTFLAGS), so $Forwarded and $DeskbridgeHeld will not show; set after_forward = \"move\" and after_hold = \"move\" to sort mail into folders instead"
        );
    }
    let last_uid = match store.checkpoint(&mailbox.name)? {
        Some(checkpoint) if checkpoint.uidvalidity == uidvalidity => checkpoint.last_uid,
        Some(checkpoint) => {
            warn!(
                mailbox = %mailbox.name,
                old = checkpoint.uidvalidity,
                new = uidvalidity,
                "UIDVALIDITY changed: rescanning the folder, recognising handled messages by content"
            );
            store.reset_checkpoint(&mailbox.name, uidvalidity)?;
            0
        }
        None => {
            store.advance_checkpoint(
                &mailbox.name,
                Checkpoint {
                    uidvalidity,
                    last_uid: 0,
                },
            )?;
            0
        }
    };

    // Work left by earlier passes: final rows not yet settled, and pending
    // rows to send again.
    let mut carried: HashMap<u32, MessageRow> = HashMap::new();
    let mut unsettled: Vec<MessageRow> = Vec::new();
    for row in store.unfinished(&mailbox.name, uidvalidity)? {
        if row.state() == State::Pending {
            carried.insert(row.uid, row);
        } else {
            unsettled.push(row);
        }
    }
    settle_rows(
        store,
        source,
        (mailbox, uidvalidity),
        unsettled
            .iter()
            .map(|row| (row.uid, row.id, row.state()))
            .collect(),
        report,
    )
    .await?;

    if mailbox.held_notice {
        // Held in the last day by a pass that stopped before its notices.
        let since = crate::clock::rfc3339(crate::clock::unix_now() - 86_400);
        let missed = store.held_without_notice(&mailbox.name, &since)?;
        held::follow_up_held(
            settings,
            mailbox,
            store,
            pool,
            &missed,
            held::FollowUp::MissedNotices,
            report,
        )
        .await?;
    }

    let has_new = folder
        .uid_next
        .is_none_or(|uid_next| last_uid.saturating_add(1) < uid_next)
        && 0 < folder.exists;
    let mut new_uids = if has_new {
        source
            .uids_from(last_uid.saturating_add(1))
            .await
            .with_context(mailbox_context)
            .map_err(Stop::Mailbox)?
    } else {
        Vec::new()
    };
    // NOTE: Above the checkpoint, the log may already hold messages: the
    // checkpoint stays below a message the server would not return, and
    // the messages after it were logged meanwhile. Their work (pending,
    // unsettled) is carried above; fetching them again would cost a full
    // download of everything behind that one message on every pass.
    let logged = store.logged_uids_from(&mailbox.name, uidvalidity, last_uid.saturating_add(1))?;
    new_uids.retain(|uid| !logged.contains(uid));
    let mut work: Vec<u32> = carried.keys().copied().chain(new_uids).collect();
    work.sort_unstable();
    work.dedup();
    if work.is_empty() {
        return Ok(());
    }
    info!(mailbox = %mailbox.name, messages = work.len(), "fetching");

    // NOTE: With a backlog, the SMTP sessions are opened while the sizes
    // are fetched, so sending starts as soon as the first batch is
    // recorded. When none can be opened here, the error is only logged
    // now: the first batch that has something to send reports it
    // (recording nothing of that batch) without a second attempt, so a
    // server that hangs costs one timeout, not two (the next pass tries
    // afresh), while a batch with nothing to send (held or skipped mail
    // only) needs no SMTP at all.
    let warm_up = async {
        if FIRST_BATCH < work.len() {
            let _ = pool.fill(&settings.smtp, settings.smtp.sessions).await;
        }
    };
    let (sizes, ()) = futures::join!(source.sizes(&work), warm_up);
    let sizes: HashMap<u32, u64> = match sizes {
        Ok(sizes) => sizes,
        // NOTE: Dovecot reads a message file for its size when its name
        // does not carry it, and drops the connection if it cannot: asked
        // one by one, the others get theirs, that one's stays unknown.
        // NOTE: Exchange may stall on one message it must convert to
        // tell its size: a timeout is treated like a drop.
        Err(err) if err.needs_new_session() => {
            warn!(mailbox = %mailbox.name, error.message = %err, "the IMAP server dropped the connection or stopped answering while listing sizes; asking one message at a time");
            reconnect(source, mailbox, uidvalidity).await?;
            one_at_a_time(source, (mailbox, uidvalidity), &work, async |source, uid| {
                source.sizes(&[uid]).await
            })
            .await?
        }
        Err(err) => return Err(Stop::Mailbox(anyhow::Error::new(err).context(mailbox_context()))),
    }
    .into_iter()
    .collect();
    // NOTE: New messages over max_message_mb are held as too-large from
    // their header alone: their bodies are never fetched or parsed.
    let oversized: HashSet<u32> = work
        .iter()
        .copied()
        .filter(|uid| {
            !carried.contains_key(uid)
                && sizes
                    .get(uid)
                    .is_some_and(|size| mailbox.max_message_bytes < *size)
        })
        .collect();
    let chunks = batches(
        &work,
        &sizes,
        &oversized,
        mailbox.batch_size,
        mailbox.batch_bytes,
    );
    let examiner = record::Examiner::new(settings, mailbox);
    let batch = Batch {
        settings,
        mailbox,
        carried: &carried,
        sizes: &sizes,
        oversized: &oversized,
        uidvalidity,
        examiner: &examiner,
        journal,
        copies: std::cell::Cell::default(),
        refused: std::cell::RefCell::default(),
        gone: std::cell::RefCell::default(),
    };
    let Some(first_chunk) = chunks.first() else {
        return Ok(());
    };
    let first_mails = batch.fetch(source, first_chunk).await?;
    report.fetched += first_mails.len() as u32;
    let mut current = batch
        .record(store, Some(&mut *pool), first_chunk, first_mails, report)
        .await?;
    // The next batch, when the IMAP lane already fetched it.
    let mut fetched_ahead: Option<Vec<RawMail>> = None;
    // Sent but not yet settled: the previous batch's final rows, and its
    // freshly held rows whose follow-up (notice, auto-reply) comes after.
    let mut unsettled: Vec<(u32, i64, State)> = Vec::new();
    let mut held_to_follow: Vec<i64> = Vec::new();
    let mut failure: Option<Stop> = None;
    // The SMTP server refused the envelope in this mailbox's pass.
    let mut envelope_refused = false;
    for index in 0..chunks.len() {
        let Some((mails, items)) = current.take() else {
            break;
        };
        let fresh_held = fresh_held_of(&items);
        // Settled even if sending fails: final before any send.
        let final_before_send = final_rows_of(&items);
        // NOTE: Three lanes run side by side on this task while this batch
        // is sent: the IMAP lane settles the previous batch (its outcomes
        // are on disk already) and fetches the next one, then the one after
        // it; the record lane examines the next batch on another thread and
        // records it. The IMAP server, the SMTP server, the database and
        // the classifier all work at once, and the sessions never wait for
        // IMAP round trips.
        let next_chunk = chunks.get(index + 1).map(Vec::as_slice);
        let stopping = stop.load(Ordering::Relaxed);
        let next_chunk = next_chunk.filter(|_| !stopping);
        // NOTE: Fetching two batches ahead keeps three in memory: only
        // while the three together stay within twice batch_mb, the most
        // that sending one batch while preparing the next can hold.
        let after_chunk = chunks.get(index + 2).filter(|_| !stopping).filter(|after| {
            next_chunk.is_some_and(|next| {
                chunk_bytes(&chunks[index], &sizes, &oversized)
                    + chunk_bytes(next, &sizes, &oversized)
                    + chunk_bytes(after, &sizes, &oversized)
                    <= mailbox.batch_bytes.saturating_mul(2)
            })
        });
        let already_fetched = fetched_ahead.take();
        let to_settle = std::mem::take(&mut unsettled);
        let (hand_over, receive) = tokio::sync::oneshot::channel::<Vec<RawMail>>();
        let need_next_fetch = already_fetched.is_none() && next_chunk.is_some();
        let imap_lane = async {
            let settled = settle_on_server(source, (mailbox, uidvalidity), to_settle).await;
            // A failed fetch drops `hand_over`: the record lane stops too.
            let fetched = async {
                if need_next_fetch && let Some(next) = next_chunk {
                    let mails = batch.fetch(source, next).await?;
                    let _ = hand_over.send(mails);
                }
                match after_chunk {
                    Some(after) if !stop.load(Ordering::Relaxed) => {
                        Ok(Some(batch.fetch(source, after).await?))
                    }
                    _ => Ok::<_, Stop>(None),
                }
            }
            .await;
            (settled, fetched)
        };
        let mut next_report = MailboxReport {
            checkpoint_ceiling: report.checkpoint_ceiling,
            ..MailboxReport::default()
        };
        let record_lane = async {
            let Some(next) = next_chunk else {
                return Ok(None);
            };
            let mails = match already_fetched {
                Some(mails) => mails,
                // The IMAP lane failed to fetch: its error is reported.
                None => match receive.await {
                    Ok(mails) => mails,
                    Err(_) => return Ok(None),
                },
            };
            next_report.fetched += mails.len() as u32;
            batch
                .record(&mut *store, None, next, mails, &mut next_report)
                .await
        };
        let (sent, imap, next) = futures::join!(
            send::send_items(
                settings, mailbox, journal, pool, &mails, items, stop, report
            ),
            imap_lane,
            record_lane
        );
        report.absorb(&next_report);
        drop(mails);
        let (settled, fetched) = imap;
        // What the server settled is recorded even when a fetch failed.
        record_settled(store, mailbox, settled, report)?;
        // NOTE: After a refused envelope, notices (to the same address) and
        // auto-replies (from the same account) would be refused too, and an
        // auto-reply's claim spent on a doomed send: the next pass sends
        // the notices as missed ones.
        envelope_refused |= matches!(&sent, Ok(sent) if sent.envelope_refused);
        if !envelope_refused {
            held::follow_up_held(
                settings,
                mailbox,
                store,
                pool,
                &std::mem::take(&mut held_to_follow),
                held::FollowUp::Fresh,
                report,
            )
            .await?;
        }
        held_to_follow = fresh_held;
        unsettled = match sent {
            Ok(sent) => {
                if let Some(stop) = sent.stop {
                    failure = Some(graver(failure, stop));
                }
                sent.settle
            }
            Err(err) => {
                failure = Some(graver(failure, err));
                final_before_send
            }
        };
        match next {
            Ok(next) => current = next,
            Err(err) => failure = Some(graver(failure, err)),
        }
        match fetched {
            Ok(ahead) => fetched_ahead = ahead,
            Err(err) => failure = Some(graver(failure, err)),
        }
        if failure.is_some() {
            // NOTE: A batch recorded but not sent stays pending for the
            // next pass; what it holds final is settled and followed up now.
            if let Some((_, items)) = current.take() {
                unsettled.extend(final_rows_of(&items));
                held_to_follow.extend(fresh_held_of(&items));
            }
            break;
        }
    }
    settle_rows(store, source, (mailbox, uidvalidity), unsettled, report).await?;
    if !envelope_refused {
        held::follow_up_held(
            settings,
            mailbox,
            store,
            pool,
            &held_to_follow,
            held::FollowUp::Fresh,
            report,
        )
        .await?;
    }
    failure.map_or(Ok(()), Err)
}

/// Names the folder an IMAP error happened in.
fn folder_context(mailbox: &MailboxSettings) -> String {
    format!("mailbox {} folder {}", mailbox.name, mailbox.folder)
}

/// Rows of a batch that are final before sending (held, skipped, and
/// copies logged earlier), for settling: (uid, row id, state).
fn final_rows_of(items: &[Item]) -> Vec<(u32, i64, State)> {
    items
        .iter()
        .filter(|item| item.state != State::Pending)
        .map(|item| (item.uid, item.row_id, item.state))
        .collect()
}

/// Rows this pass held, whose follow-up (notice, auto-reply) is due.
fn fresh_held_of(items: &[Item]) -> Vec<i64> {
    items
        .iter()
        .filter(|item| item.fresh && item.state == State::Held)
        .map(|item| item.row_id)
        .collect()
}

/// Of two reasons to stop, the one that must end the whole pass: a store
/// failure outranks a mailbox failure; otherwise the first one stays.
fn graver(first: Option<Stop>, second: Stop) -> Stop {
    match (first, second) {
        (Some(Stop::Store(err)), _) | (_, Stop::Store(err)) => Stop::Store(err),
        (Some(first), Stop::Mailbox(_)) => first,
        (None, second) => second,
    }
}

/// Bytes of a batch in memory, by RFC822.SIZE; an oversized message is
/// fetched as its header alone and counts nothing.
fn chunk_bytes(chunk: &[u32], sizes: &HashMap<u32, u64>, oversized: &HashSet<u32>) -> u64 {
    chunk
        .iter()
        .filter(|uid| !oversized.contains(uid))
        .map(|uid| sizes.get(uid).copied().unwrap_or(0))
        .sum()
}

/// What every batch of one mailbox pass shares.
struct Batch<'a> {
    settings: &'a Settings,
    mailbox: &'a MailboxSettings,
    carried: &'a HashMap<u32, MessageRow>,
    /// RFC822.SIZE of each UID to work on.
    sizes: &'a HashMap<u32, u64>,
    oversized: &'a HashSet<u32>,
    uidvalidity: u32,
    examiner: &'a record::Examiner,
    journal: &'a Journal,
    /// Copies seen so far in this pass; taken out while a batch is
    /// recorded (batches are recorded one at a time).
    copies: std::cell::Cell<record::PassCopies>,
    /// UIDs the server still lists but refused to return in this pass.
    refused: std::cell::RefCell<HashSet<u32>>,
    /// UIDs asked for that the folder no longer holds (expunged meanwhile).
    gone: std::cell::RefCell<HashSet<u32>>,
}

impl Batch<'_> {
    /// Fetches one batch.
    ///
    /// A server may refuse a whole FETCH for one message it cannot read:
    /// then the batch is fetched one message at a time, and what it still
    /// refuses is left where it is for the next pass (counted in the
    /// report), so one bad message does not hold up the folder. A pending
    /// row from an earlier pass whose UID did not come back is marked
    /// `vanished` when recorded, so the server is first asked whether it
    /// still holds that UID; if it does, that row stays pending too.
    async fn fetch(&self, source: &mut ImapSource, chunk: &[u32]) -> Result<Vec<RawMail>, Stop> {
        let mailbox = self.mailbox;
        let context = || folder_context(mailbox);
        let mails = match fetch_batch(source, chunk, self.sizes, self.oversized).await {
            Ok(mails) => mails,
            // NOTE: Dovecot drops the connection (BYE) on a message it
            // cannot read, where other servers answer NO, and a server may
            // stall on one (or a slow link outlast its time): either way,
            // the batch is fetched again one message at a time, so one
            // message cannot hold up the folder pass after pass.
            Err(err) if err.is_refusal() || err.needs_new_session() => {
                warn!(mailbox = %mailbox.name, uids = %source::uid_set(chunk), error.message = %err, "the IMAP server would not return this batch; fetching its messages one at a time");
                if !err.is_refusal() {
                    reconnect(source, mailbox, self.uidvalidity).await?;
                }
                one_at_a_time(
                    source,
                    (mailbox, self.uidvalidity),
                    chunk,
                    async |source, uid| {
                        fetch_batch(source, &[uid], self.sizes, self.oversized).await
                    },
                )
                .await?
            }
            Err(err) => return Err(Stop::Mailbox(anyhow::Error::new(err).context(context()))),
        };
        // NOTE: A UID asked for but not returned was either expunged
        // meanwhile (by another client) or is one the server will not give
        // out. Only the server can tell which.
        let not_returned: Vec<u32> = chunk
            .iter()
            .copied()
            .filter(|uid| {
                !self.refused.borrow().contains(uid) && !mails.iter().any(|mail| mail.uid == *uid)
            })
            .collect();
        let still_there = source
            .existing(&not_returned)
            .await
            .with_context(context)
            .map_err(Stop::Mailbox)?;
        if !still_there.is_empty() {
            warn!(mailbox = %mailbox.name, uids = %source::uid_set(&still_there), "the IMAP server lists these messages but did not return them; they stay in the folder (pending ones pending) and are tried again next pass");
        }
        self.gone.borrow_mut().extend(
            not_returned
                .iter()
                .filter(|uid| !still_there.contains(uid))
                .copied(),
        );
        self.refused.borrow_mut().extend(still_there);
        Ok(mails)
    }

    /// Examines and records a fetched batch. Given the pool (first batch),
    /// it opens an SMTP session before recording anything to send.
    async fn record(
        &self,
        store: &mut Store,
        pool: Option<&mut SinkPool>,
        chunk: &[u32],
        mails: Vec<RawMail>,
        report: &mut MailboxReport,
    ) -> Result<Option<(Vec<RawMail>, Vec<Item>)>, Stop> {
        ensure_log_space_for_mailbox(self.settings)?;
        let refused = self.refused.borrow().clone();
        report.unfetched += chunk.iter().filter(|uid| refused.contains(uid)).count() as u32;
        fail_vanished(
            store,
            self.mailbox,
            (self.carried, &refused),
            chunk,
            &mails,
            report,
        )?;
        let (mails, examined) = record::examine_batch(self.examiner.clone(), mails).await?;
        let mut copies = self.copies.take();
        let gone = self.gone.borrow().clone();
        let items = record::record_batch(
            self.settings,
            self.mailbox,
            (store, self.journal),
            pool,
            (&mails, examined),
            (self.carried, &mut copies, &gone, self.sizes),
            self.uidvalidity,
            chunk,
            report,
        )
        .await;
        self.copies.set(copies);
        Ok(Some((mails, items?)))
    }
}

/// Marks pending rows from earlier passes that the server no longer has.
fn fail_vanished(
    store: &Store,
    mailbox: &MailboxSettings,
    (carried, refused): (&HashMap<u32, MessageRow>, &HashSet<u32>),
    chunk: &[u32],
    mails: &[RawMail],
    report: &mut MailboxReport,
) -> Result<(), Stop> {
    for uid in chunk {
        if let Some(row) = carried.get(uid)
            && !refused.contains(uid)
            && !mails.iter().any(|mail| mail.uid == *uid)
        {
            store.mark_failed(
                row.id,
                "vanished",
                &format!(
                    "UID {uid} is no longer in folder {} (deleted or moved by someone else) and was never forwarded",
                    mailbox.folder
                ),
            )?;
            report.failed += 1;
        }
    }
    Ok(())
}

/// Fetches a batch: whole messages, or only the header of an oversized one
/// (such a batch holds that message alone).
async fn fetch_batch(
    source: &mut ImapSource,
    batch: &[u32],
    sizes: &HashMap<u32, u64>,
    oversized: &HashSet<u32>,
) -> Result<Vec<RawMail>, source::SourceError> {
    if batch.iter().all(|uid| oversized.contains(uid)) {
        return source.fetch_headers(batch).await;
    }
    let known = || batch.iter().filter_map(|uid| sizes.get(uid)).copied();
    let largest = known().max().unwrap_or(0);
    source.fetch(batch, largest, known().sum()).await
}

/// Connections the server may drop in a row, while messages are asked for
/// one at a time, before the mailbox stops for the pass.
const MAX_LOST_IN_A_ROW: u32 = 3;

/// Asks the server about each of `uids` on its own, after it refused or
/// dropped the command for all of them: what it answers is gathered; a
/// message it refuses is left out (the caller asks whether it still holds
/// it); a dropped connection is replaced, up to [`MAX_LOST_IN_A_ROW`] in a
/// row.
async fn one_at_a_time<T>(
    source: &mut ImapSource,
    (mailbox, uidvalidity): (&MailboxSettings, u32),
    uids: &[u32],
    mut ask: impl AsyncFnMut(&mut ImapSource, u32) -> source::Result<Vec<T>>,
) -> Result<Vec<T>, Stop> {
    let mut answers = Vec::with_capacity(uids.len());
    let mut losses_in_a_row = 0;
    for uid in uids.iter().copied() {
        match ask(source, uid).await {
            Ok(found) => {
                losses_in_a_row = 0;
                answers.extend(found);
            }
            // RFC 2180 §4.1.2 servers also refuse one expunged meanwhile.
            Err(err) if err.is_refusal() => {
                warn!(mailbox = %mailbox.name, uid, error.message = %err, "the IMAP server refused this message");
            }
            // NOTE: A server that drops every session, or answers none, is
            // down, not choosy about one message: stop after a few drops or
            // timeouts in a row (several unreadable files are fine). A
            // timed-out session is out of step: it is replaced too.
            Err(err) if err.needs_new_session() && losses_in_a_row < MAX_LOST_IN_A_ROW => {
                losses_in_a_row += 1;
                warn!(mailbox = %mailbox.name, uid, error.message = %err, "the IMAP server dropped the connection or stopped answering on this message");
                reconnect(source, mailbox, uidvalidity).await?;
            }
            Err(err) => {
                return Err(Stop::Mailbox(
                    anyhow::Error::new(err).context(folder_context(mailbox)),
                ));
            }
        }
    }
    Ok(answers)
}

/// Replaces a session the server dropped with a new one on the same
/// folder, which must still have the same UIDVALIDITY.
async fn reconnect(
    source: &mut ImapSource,
    mailbox: &MailboxSettings,
    uidvalidity: u32,
) -> Result<(), Stop> {
    let mut fresh = source::connect(mailbox)
        .await
        .with_context(|| format!("mailbox {} (reconnecting)", mailbox.name))
        .map_err(Stop::Mailbox)?;
    let folder = fresh
        .select()
        .await
        .with_context(|| folder_context(mailbox))
        .map_err(Stop::Mailbox)?;
    if folder.uidvalidity != uidvalidity {
        return Err(Stop::Mailbox(anyhow::anyhow!(
            "{}: UIDVALIDITY changed during the pass; the next pass rescans the folder",
            folder_context(mailbox)
        )));
    }
    *source = fresh;
    Ok(())
}

/// The first batch of a pass holds at most this many messages; each
/// following one may hold twice as many as the one before, up to
/// `batch_size`.
const FIRST_BATCH: usize = 25;

/// Splits the work into batches of at most `max_count` UIDs and
/// `max_bytes` bytes; a message larger than `max_bytes` goes alone, and so
/// does each oversized one (fetched as a header only).
///
/// NOTE: The batches start small and double ([`FIRST_BATCH`]): nothing is
/// sent until the first batch is fetched, examined and recorded, so a
/// small first batch gets the SMTP sessions going early, and each next
/// batch is prepared while the one before, half its size, is sent.
fn batches(
    work: &[u32],
    sizes: &HashMap<u32, u64>,
    oversized: &HashSet<u32>,
    max_count: usize,
    max_bytes: u64,
) -> Vec<Vec<u32>> {
    let mut batches = Vec::new();
    let mut current = Vec::new();
    let mut current_bytes = 0;
    let mut count_limit = FIRST_BATCH.min(max_count);
    for uid in work {
        if oversized.contains(uid) {
            if !current.is_empty() {
                batches.push(std::mem::take(&mut current));
                current_bytes = 0;
            }
            batches.push(vec![*uid]);
            continue;
        }
        let size = sizes.get(uid).copied().unwrap_or(0);
        if !current.is_empty() && (count_limit <= current.len() || max_bytes < current_bytes + size)
        {
            batches.push(std::mem::take(&mut current));
            current_bytes = 0;
            count_limit = count_limit.saturating_mul(2).min(max_count);
        }
        current.push(*uid);
        current_bytes += size;
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Settles final rows on the server, grouped by what is done to them, and
/// records it. A failed settle is logged and retried on the next pass.
async fn settle_rows(
    store: &mut Store,
    source: &mut ImapSource,
    (mailbox, uidvalidity): (&MailboxSettings, u32),
    rows: Vec<(u32, i64, State)>,
    report: &mut MailboxReport,
) -> Result<(), Stop> {
    let settled = settle_on_server(source, (mailbox, uidvalidity), rows).await;
    record_settled(store, mailbox, settled, report)
}

/// One group of rows settled alike, and how the server took it.
struct Settled {
    ids: Vec<i64>,
    how: String,
    outcome: Result<(), String>,
}

/// The IMAP half of settling: flags and moves, grouped by what is done to
/// the rows. Touches no database, so it can run beside recording.
///
/// A session that dropped or stopped answering (idle while a slow SMTP
/// reply was awaited, and cut by a NAT or the server) is replaced once and
/// the group tried again: setting flags or moving (with MOVE) twice does
/// no harm.
async fn settle_on_server(
    source: &mut ImapSource,
    (mailbox, uidvalidity): (&MailboxSettings, u32),
    rows: Vec<(u32, i64, State)>,
) -> Vec<Settled> {
    // Keyed by (flags, destination folder); values are (uid, row id).
    type Groups = BTreeMap<(String, Option<String>), Vec<(u32, i64)>>;
    let mut groups = Groups::new();
    for (uid, row_id, state) in rows {
        let Some(settlement) = settlement_for(state, mailbox) else {
            continue;
        };
        groups
            .entry((settlement.flags, settlement.move_to))
            .or_default()
            .push((uid, row_id));
    }
    let mut settled = Vec::new();
    let mut reconnected = false;
    for ((flags, move_to), members) in groups {
        let settlement = Settlement { flags, move_to };
        let uids: Vec<u32> = members.iter().map(|(uid, _)| *uid).collect();
        let mut outcome = source.settle(&uids, &settlement).await;
        // NOTE: Without MOVE a move is COPY then \Deleted: a COPY the
        // server finished before the break would be made twice.
        let repeatable = settlement.move_to.is_none() || source.can_move();
        if let Err(err) = &outcome
            && err.needs_new_session()
            && repeatable
            && !reconnected
        {
            reconnected = true;
            warn!(mailbox = %mailbox.name, error.message = %err, "the IMAP session broke while settling; reconnecting once");
            match reconnect(source, mailbox, uidvalidity).await {
                Ok(()) => outcome = source.settle(&uids, &settlement).await,
                Err(Stop::Mailbox(err)) => {
                    warn!(mailbox = %mailbox.name, error.message = %format!("{err:#}"), "cannot reconnect to settle");
                }
                Err(Stop::Store(err)) => {
                    warn!(mailbox = %mailbox.name, error.message = %err, "cannot reconnect to settle");
                }
            }
        }
        let outcome = outcome.map_err(|err| err.to_string());
        settled.push(Settled {
            ids: members.iter().map(|(_, id)| *id).collect(),
            how: settlement.describe(),
            outcome,
        });
    }
    settled
}

/// The database half of settling: marks settled rows, or notes why they
/// were not (the next pass tries again).
fn record_settled(
    store: &mut Store,
    mailbox: &MailboxSettings,
    settled: Vec<Settled>,
    report: &mut MailboxReport,
) -> Result<(), Stop> {
    for group in settled {
        match group.outcome {
            Ok(()) => store.mark_settled(&group.ids, &group.how)?,
            Err(message) => {
                error!(mailbox = %mailbox.name, error.message = %message, "cannot settle messages; retrying next pass");
                for id in &group.ids {
                    store.add_event(*id, "settle-failed", &message)?;
                }
                report.settle_errors += 1;
            }
        }
    }
    Ok(())
}

/// What a final state does on the IMAP server, per the mailbox's config.
fn settlement_for(state: State, mailbox: &MailboxSettings) -> Option<Settlement> {
    Some(match state {
        State::Pending => return None,
        State::Forwarded => Settlement {
            flags: match mailbox.after_forward {
                AfterForward::KeywordAndSeen => "$Forwarded \\Seen".to_owned(),
                AfterForward::Keyword | AfterForward::Move => "$Forwarded".to_owned(),
            },
            move_to: (mailbox.after_forward == AfterForward::Move)
                .then(|| mailbox.forwarded_folder.clone()),
        },
        State::Held => Settlement {
            flags: "$DeskbridgeHeld".to_owned(),
            move_to: (mailbox.after_hold == AfterHold::Move).then(|| mailbox.held_folder.clone()),
        },
        State::Skipped => Settlement {
            flags: "$DeskbridgeSkipped".to_owned(),
            move_to: None,
        },
        State::Failed => Settlement {
            flags: "$DeskbridgeFailed".to_owned(),
            move_to: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_count_that_makes_a_pass_exit_1_makes_it_partial() {
        let mut report = MailboxReport::default();
        assert_eq!(partial_outcome(&report), None);
        report.unfetched = 1;
        assert_eq!(
            partial_outcome(&report).as_deref(),
            Some("partial: 1 refused by the IMAP server")
        );
        report.failed = 2;
        report.settle_errors = 3;
        assert_eq!(
            partial_outcome(&report).as_deref(),
            Some("partial: 2 failed, 1 refused by the IMAP server, 3 settle or notice errors")
        );
        let pass = PassReport {
            mailboxes: vec![report],
            interrupted: false,
        };
        assert_eq!(pass.exit_code(), 1);
    }

    #[test]
    fn a_store_failure_outranks_a_mailbox_failure() {
        let store = || {
            Stop::Store(StoreError::Open {
                path: "log.db".into(),
                source: rusqlite::Error::InvalidQuery,
            })
        };
        let mailbox = |text: &str| Stop::Mailbox(anyhow::anyhow!("{text}"));
        let kind = |stop: Stop| match stop {
            Stop::Store(_) => "store".to_owned(),
            Stop::Mailbox(err) => format!("mailbox: {err}"),
        };
        assert_eq!(kind(graver(None, mailbox("fetch"))), "mailbox: fetch");
        assert_eq!(
            kind(graver(Some(mailbox("send")), mailbox("fetch"))),
            "mailbox: send"
        );
        assert_eq!(kind(graver(Some(mailbox("send")), store())), "store");
        assert_eq!(kind(graver(Some(store()), mailbox("fetch"))), "store");
    }

    #[test]
    fn batches_respect_count_and_bytes() {
        let work = [1, 2, 3, 4, 5, 6];
        let sizes: HashMap<u32, u64> =
            [(1, 10), (2, 10), (3, 100), (4, 10), (5, 10), (6, 10)].into();
        let none = HashSet::new();
        let many: Vec<u32> = (1..=200).collect();
        let lengths: Vec<usize> = batches(&many, &HashMap::new(), &none, 60, 1000)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(
            lengths,
            [25, 50, 60, 60, 5],
            "small first, doubling up to the limit"
        );
        assert_eq!(
            batches(&work, &sizes, &none, 2, 1000),
            [vec![1, 2], vec![3, 4], vec![5, 6]]
        );
        assert_eq!(
            batches(&work, &sizes, &none, 10, 50),
            [vec![1, 2], vec![3], vec![4, 5, 6]]
        );
        assert!(batches(&[], &sizes, &none, 10, 50).is_empty());
        let big: HashSet<u32> = [4].into();
        assert_eq!(
            batches(&work, &sizes, &big, 10, 1000),
            [vec![1, 2, 3], vec![4], vec![5, 6]]
        );
    }
}
