//! One pass: the only module that composes the stages.
//!
//! For each mailbox: connect (source), select, find the UIDs to work on
//! (new ones past the checkpoint, plus pending ones from earlier passes),
//! fetch them in batches, parse and classify (mail, classify), record the
//! batch (store), send the eligible ones (sink), record each outcome
//! (store), then settle them on the server (source). The order
//! record → send → mark → settle is what makes reruns safe.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use tracing::{error, info, warn};

use crate::classify::{self, Action, Classification, CryptoClass, Decision, Reason, Rules};
use crate::config::{AfterForward, AfterHold, MailboxSettings, Settings};
use crate::lock::PassLock;
use crate::sink::{self, SendError, SmtpSink};
use crate::source::{self, ImapSource, RawMail, Settlement};
use crate::store::{Checkpoint, MessageRow, NewMessage, State, Store, StoreError};
use crate::{clock, mail, notice, thread, trace};

/// What one pass did, per mailbox.
#[derive(Debug, Default, Clone)]
pub struct PassReport {
    pub mailboxes: Vec<MailboxReport>,
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
    /// Why the mailbox could not be processed (TLS, login, SMTP session),
    /// with the full cause chain.
    pub error: Option<String>,
}

impl PassReport {
    /// 2 when a mailbox could not be processed, 1 when some messages
    /// failed, 0 otherwise. Held mail is normal and exits 0.
    pub fn exit_code(&self) -> u8 {
        if self.mailboxes.iter().any(|report| report.error.is_some()) {
            return 2;
        }
        if self
            .mailboxes
            .iter()
            .any(|report| 0 < report.failed || 0 < report.settle_errors)
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

/// A message of the current batch and what remains to do with it.
struct Item {
    row_id: i64,
    uid: u32,
    sha256: String,
    /// Index into the fetched batch.
    mail_index: usize,
    state: State,
    first_seen_unix: i64,
    /// Recorded in this pass (not carried over or recognised again).
    fresh: bool,
    /// In-Reply-To/References lines added on redirect (thread repair).
    repair: Option<String>,
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
    let mut store = Store::open(&settings.store_path)?;
    let mut sink: Option<SmtpSink> = None;
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
        let outcome = process_mailbox(
            settings,
            mailbox,
            &mut store,
            &mut sink,
            stop,
            &mut mailbox_report,
        )
        .await;
        match outcome {
            Ok(()) => {
                let outcome = if 0 < mailbox_report.failed {
                    format!("partial: {} failed", mailbox_report.failed)
                } else {
                    "ok".to_owned()
                };
                store.finish_pass(&mailbox.name, &outcome)?;
            }
            Err(Stop::Store(err)) => {
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
    if let Some(sink) = sink {
        sink.quit().await;
    }
    Ok(report)
}

async fn process_mailbox(
    settings: &Settings,
    mailbox: &MailboxSettings,
    store: &mut Store,
    sink: &mut Option<SmtpSink>,
    stop: &AtomicBool,
    report: &mut MailboxReport,
) -> Result<(), Stop> {
    let mut source = source::connect(mailbox)
        .await
        .with_context(|| format!("mailbox {}", mailbox.name))
        .map_err(Stop::Mailbox)?;
    let result = work_mailbox(settings, mailbox, store, sink, &mut source, stop, report).await;
    source.logout().await;
    result
}

async fn work_mailbox(
    settings: &Settings,
    mailbox: &MailboxSettings,
    store: &mut Store,
    sink: &mut Option<SmtpSink>,
    source: &mut ImapSource,
    stop: &AtomicBool,
    report: &mut MailboxReport,
) -> Result<(), Stop> {
    let mailbox_context = || format!("mailbox {} folder {}", mailbox.name, mailbox.folder);
    let folder = source
        .select()
        .await
        .with_context(mailbox_context)
        .map_err(Stop::Mailbox)?;
    let uidvalidity = folder.uidvalidity;
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
        mailbox,
        unsettled
            .iter()
            .map(|row| (row.uid, row.id, row.state()))
            .collect(),
        report,
    )
    .await?;

    let has_new = folder
        .uid_next
        .is_none_or(|uid_next| last_uid + 1 < uid_next)
        && 0 < folder.exists;
    let new_uids = if has_new {
        source
            .uids_from(last_uid + 1)
            .await
            .with_context(mailbox_context)
            .map_err(Stop::Mailbox)?
    } else {
        Vec::new()
    };
    let mut work: Vec<u32> = carried.keys().copied().chain(new_uids).collect();
    work.sort_unstable();
    work.dedup();
    if work.is_empty() {
        return Ok(());
    }
    info!(mailbox = %mailbox.name, messages = work.len(), "fetching");

    for chunk in work.chunks(mailbox.batch_size) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mails = source
            .fetch(chunk)
            .await
            .with_context(mailbox_context)
            .map_err(Stop::Mailbox)?;
        report.fetched += mails.len() as u32;
        for uid in chunk {
            if let Some(row) = carried.get(uid)
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
        let items = record_batch(
            settings,
            mailbox,
            store,
            sink,
            &mails,
            &carried,
            uidvalidity,
            chunk,
            report,
        )
        .await?;
        let fresh_held: Vec<i64> = items
            .iter()
            .filter(|item| item.fresh && item.state == State::Held)
            .map(|item| item.row_id)
            .collect();
        let settled =
            send_items(settings, mailbox, store, sink, &mails, items, stop, report).await?;
        settle_rows(store, source, mailbox, settled, report).await?;
        follow_up_held(settings, mailbox, store, sink, &fresh_held, report).await?;
    }
    Ok(())
}

/// Sends the held notice to the helpdesk and the auto-reply to the sender,
/// as configured, for messages held in this pass. Failures are recorded
/// and counted; they never undo the hold.
async fn follow_up_held(
    settings: &Settings,
    mailbox: &MailboxSettings,
    store: &mut Store,
    sink: &mut Option<SmtpSink>,
    held: &[i64],
    report: &mut MailboxReport,
) -> Result<(), Stop> {
    if held.is_empty() || !(mailbox.held_notice || mailbox.auto_reply) {
        return Ok(());
    }
    let folder = match mailbox.after_hold {
        AfterHold::Move => mailbox.held_folder.as_str(),
        AfterHold::Keyword => mailbox.folder.as_str(),
    };
    for id in held {
        let Some(row) = store.message(*id)? else {
            continue;
        };
        let reason = row.reason.clone().unwrap_or_default();
        let facts = notice::HeldFacts {
            row_id: row.id,
            mailbox: &mailbox.name,
            folder,
            from: row.from.as_deref(),
            subject: row.subject.as_deref(),
            date: row.date.as_deref(),
            message_id: row.message_id.as_deref(),
            reason: &reason,
            detail: row.detail.as_deref().unwrap_or_default(),
        };
        let now = clock::unix_now();
        let mut outgoing: Vec<(&'static str, String, String, bool)> = Vec::new();
        if mailbox.held_notice {
            let text = notice::held_notice(
                &facts,
                &settings.smtp.envelope_from,
                &mailbox.forward_to,
                now,
            );
            outgoing.push(("notice", mailbox.forward_to.clone(), text, false));
        }
        // NOTE: Never auto-reply to a rate-limited correspondent: that is
        // exactly how two auto-responders loop.
        let recipient = row
            .reply_token
            .clone()
            .or_else(|| {
                row.reply_to
                    .as_deref()
                    .and_then(|list| list.split(", ").next())
                    .map(str::to_owned)
            })
            .or_else(|| row.from.clone());
        if mailbox.auto_reply
            && reason != Reason::RateLimited.as_str()
            && let Some(recipient) = recipient
        {
            let since = clock::rfc3339(now - mailbox.auto_reply_interval.as_secs() as i64);
            if store.auto_replied_since(&recipient, &since)? {
                store.add_event(
                    row.id,
                    "auto-reply-skipped",
                    &format!("{recipient} already had one since {since}"),
                )?;
            } else {
                let text = notice::auto_reply(&facts, &mailbox.auto_reply_from, &recipient, now);
                outgoing.push(("auto-reply", recipient, text, true));
            }
        }
        for (kind, recipient, text, null_sender) in outgoing {
            if sink.is_none() {
                match sink::connect(&settings.smtp).await {
                    Ok(connected) => *sink = Some(connected),
                    Err(err) => {
                        store.add_event(row.id, &format!("{kind}-failed"), &err.to_string())?;
                        report.settle_errors += 1;
                        continue;
                    }
                }
            }
            let Some(session) = sink.as_mut() else {
                continue;
            };
            match session
                .send_own(&recipient, text.as_bytes(), null_sender)
                .await
            {
                Ok(reply) if kind == "notice" => store.record_notice(row.id, &reply)?,
                Ok(reply) => store.record_auto_reply(row.id, &recipient, &reply)?,
                Err(err) => {
                    warn!(mailbox = %mailbox.name, row = row.id, error.message = %err, "cannot send {kind}");
                    store.add_event(row.id, &format!("{kind}-failed"), &err.to_string())?;
                    report.settle_errors += 1;
                    if matches!(err, SendError::Broken { .. }) || session.reset().await.is_err() {
                        *sink = None;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Classifies a fetched batch and records it in one transaction, together
/// with the new checkpoint. Connects the SMTP session first when something
/// will be sent, so a broken SMTP setup records nothing.
#[allow(clippy::too_many_arguments)]
async fn record_batch(
    settings: &Settings,
    mailbox: &MailboxSettings,
    store: &mut Store,
    sink: &mut Option<SmtpSink>,
    mails: &[RawMail],
    carried: &HashMap<u32, MessageRow>,
    uidvalidity: u32,
    chunk: &[u32],
    report: &mut MailboxReport,
) -> Result<Vec<Item>, Stop> {
    let rules = Rules {
        own_domain: settings
            .smtp
            .envelope_from
            .rsplit_once('@')
            .map(|(_, domain)| domain.to_owned()),
        max_message_bytes: Some(mailbox.max_message_bytes),
        helpdesk_addresses: settings.policy.helpdesk_addresses.clone(),
        extra_relays: settings.extra_relays.clone(),
        loop_action: settings.policy.loop_action,
    };
    let mut batch_counts: HashMap<String, u32> = HashMap::new();
    let now = clock::unix_now();
    let mut items = Vec::new();
    let mut new_rows: Vec<(usize, NewMessage)> = Vec::new();
    for (mail_index, raw) in mails.iter().enumerate() {
        if let Some(row) = carried.get(&raw.uid) {
            items.push(Item {
                row_id: row.id,
                uid: raw.uid,
                sha256: row.sha256.clone(),
                mail_index,
                state: State::Pending,
                first_seen_unix: clock::parse_rfc3339(&row.first_seen_at).unwrap_or(now),
                fresh: false,
                repair: row.repair_headers.clone(),
            });
            continue;
        }
        let sha256 = mail::content_hash(&raw.bytes);
        if let Some(existing) = store.find_by_content(&mailbox.name, &sha256)? {
            if existing.uidvalidity != uidvalidity {
                // NOTE: The same bytes under an old UIDVALIDITY are the same
                // message after a server-side rebuild: carry its row over.
                store.adopt(existing.id, uidvalidity, raw.uid)?;
                info!(mailbox = %mailbox.name, uid = raw.uid, row = existing.id, state = %existing.state, "recognised after UIDVALIDITY change");
                let state = existing.state();
                if state == State::Pending || existing.settled_at.is_none() {
                    items.push(Item {
                        row_id: existing.id,
                        uid: raw.uid,
                        sha256,
                        mail_index,
                        state,
                        first_seen_unix: clock::parse_rfc3339(&existing.first_seen_at)
                            .unwrap_or(now),
                        fresh: false,
                        repair: existing.repair_headers.clone(),
                    });
                }
                continue;
            }
            let classification = Classification {
                decision: Decision::skip(
                    Reason::Duplicate,
                    format!(
                        "same bytes as message #{} (UID {}), which is {}",
                        existing.id, existing.uid, existing.state
                    ),
                ),
                class: CryptoClass::None,
                relay: None,
            };
            new_rows.push((
                mail_index,
                new_message(settings, mailbox, uidvalidity, raw, sha256, classification),
            ));
            continue;
        }
        let mut classification = classify::classify(&raw.bytes, &rules);
        if classification.decision.action == Action::Forward {
            skip_relay_copy(settings, mailbox, store, raw, &mut classification)?;
        }
        if classification.decision.action == Action::Forward {
            apply_rate_limit(
                settings,
                mailbox,
                store,
                raw,
                &mut classification,
                &mut batch_counts,
            )?;
        }
        let decision = &classification.decision;
        info!(
            mailbox = %mailbox.name,
            uid = raw.uid,
            decision = decision.action.as_str(),
            reason = decision.reason.map_or("-", |reason| reason.as_str()),
            relay = classification.relay.as_ref().map_or("-", |relay| relay.name.as_str()),
            "classified"
        );
        new_rows.push((
            mail_index,
            new_message(settings, mailbox, uidvalidity, raw, sha256, classification),
        ));
    }

    let needs_smtp = items.iter().any(|item| item.state == State::Pending)
        || new_rows
            .iter()
            .any(|(_, row)| row.state == Some(State::Pending));
    if needs_smtp && sink.is_none() {
        let connected = sink::connect(&settings.smtp)
            .await
            .context("cannot open the SMTP session; nothing was sent or recorded for this batch")
            .map_err(Stop::Mailbox)?;
        *sink = Some(connected);
    }

    let checkpoint = Checkpoint {
        uidvalidity,
        last_uid: chunk.iter().copied().max().unwrap_or(0),
    };
    let rows: Vec<NewMessage> = new_rows.iter().map(|(_, row)| row.clone()).collect();
    let relay_window_since = clock::rfc3339(now - settings.threading.relay_window.as_secs() as i64);
    let ids = store.record_batch(
        &rows,
        Some((&mailbox.name, checkpoint)),
        &relay_window_since,
    )?;
    for ((mail_index, row), (row_id, attachment)) in new_rows.into_iter().zip(ids) {
        let state = row.state.unwrap_or(State::Pending);
        match state {
            State::Held => report.held += 1,
            State::Skipped => report.skipped += 1,
            _ => (),
        }
        items.push(Item {
            row_id,
            uid: row.uid,
            sha256: row.sha256,
            mail_index,
            state,
            first_seen_unix: now,
            fresh: true,
            repair: attachment.repair_headers,
        });
    }
    items.sort_by_key(|item| item.uid);
    Ok(items)
}

/// Skips a copy of a message already forwarded to the same helpdesk: same
/// Message-ID and same body, arriving again (SimpleLogin sends one
/// Message-ID to each of our addresses a customer wrote to). The copy is
/// logged as `duplicate-message-id` and joins the same thread; a message
/// that reuses a Message-ID with a different body is forwarded.
fn skip_relay_copy(
    settings: &Settings,
    mailbox: &MailboxSettings,
    store: &Store,
    raw: &RawMail,
    classification: &mut Classification,
) -> Result<(), Stop> {
    let Some(message) = mail::parse(&raw.bytes) else {
        return Ok(());
    };
    let Some(message_id) = message.message_id() else {
        return Ok(());
    };
    let body_sha256 = mail::body_hash(&message, &raw.bytes);
    for earlier in store.rows_with_message_id(message_id.trim())? {
        let same_helpdesk = settings
            .mailboxes
            .iter()
            .find(|other| other.name == earlier.mailbox)
            .is_some_and(|other| other.forward_to.eq_ignore_ascii_case(&mailbox.forward_to));
        let delivered = matches!(earlier.state(), State::Forwarded | State::Pending);
        if same_helpdesk
            && delivered
            && earlier.body_sha256.as_deref() == Some(body_sha256.as_str())
        {
            classification.decision = Decision::skip(
                Reason::DuplicateMessageId,
                format!(
                    "a copy of message #{} (mailbox {}, same Message-ID and body), which already went to {}",
                    earlier.id, earlier.mailbox, mailbox.forward_to
                ),
            );
            return Ok(());
        }
    }
    Ok(())
}

/// Holds a forwardable message as `rate-limited` when its correspondent
/// is blocked, or has now sent more than the limit within the window (a
/// loop with a relay that stripped the auto-reply headers looks like this).
fn apply_rate_limit(
    settings: &Settings,
    mailbox: &MailboxSettings,
    store: &Store,
    raw: &RawMail,
    classification: &mut Classification,
    batch_counts: &mut HashMap<String, u32>,
) -> Result<(), Stop> {
    let policy = &settings.policy;
    if policy.rate_limit_messages == 0 {
        return Ok(());
    }
    let correspondent = match &classification.relay {
        Some(relay) => Some(relay.alias.clone()),
        None => mail::parse(&raw.bytes).and_then(|message| mail::from_address(&message)),
    };
    let Some(correspondent) = correspondent else {
        return Ok(());
    };
    if let Some(reason) = store.blocked(&correspondent)? {
        classification.decision = Decision::hold(
            Reason::RateLimited,
            format!(
                "{correspondent} is blocked by the rate limit ({reason}); `deskbridge release ID` forwards a message and lifts the block"
            ),
        );
        return Ok(());
    }
    let since = clock::rfc3339(clock::unix_now() - policy.rate_limit_window.as_secs() as i64);
    let in_batch = batch_counts.entry(correspondent.clone()).or_insert(0);
    *in_batch += 1;
    let recent = store.count_from_since(&mailbox.name, &correspondent, &since)? + *in_batch;
    if policy.rate_limit_messages < recent {
        let reason = format!(
            "more than {} messages within {} minutes",
            policy.rate_limit_messages,
            policy.rate_limit_window.as_secs() / 60
        );
        store.block(&correspondent, &reason)?;
        warn!(mailbox = %mailbox.name, %correspondent, "rate limit reached; holding this correspondent's mail");
        classification.decision = Decision::hold(
            Reason::RateLimited,
            format!(
                "{correspondent} sent {reason} (a possible mail loop); their mail is held until `deskbridge release ID`"
            ),
        );
    }
    Ok(())
}

/// The log row for a freshly classified message, with its thread keys.
fn new_message(
    settings: &Settings,
    mailbox: &MailboxSettings,
    uidvalidity: u32,
    raw: &RawMail,
    sha256: String,
    classification: Classification,
) -> NewMessage {
    let state = match classification.decision.action {
        Action::Forward => State::Pending,
        Action::Hold => State::Held,
        Action::Skip => State::Skipped,
    };
    let parsed = mail::parse(&raw.bytes);
    let (summary, thread, body_sha256) = match &parsed {
        Some(message) => (
            mail::summarize(message),
            Some(thread::keys(
                message,
                classification.relay.as_ref(),
                &settings.threading.patterns,
            )),
            Some(mail::body_hash(message, &raw.bytes)),
        ),
        None => (mail::MailSummary::default(), None, None),
    };
    NewMessage {
        thread,
        repair_enabled: mailbox.repair_threading,
        body_sha256,
        mailbox: mailbox.name.clone(),
        uidvalidity,
        uid: raw.uid,
        summary,
        size: raw.bytes.len() as u64,
        sha256,
        state: Some(state),
        reason: classification
            .decision
            .reason
            .map(|reason| reason.as_str().to_owned()),
        detail: (state != State::Pending).then_some(classification.decision.detail),
        class: Some(classification.class.as_str().to_owned()),
        relay: classification.relay,
    }
}

/// Sends the pending items of a batch and records each outcome. Returns
/// what is ready to settle: (uid, row id, final state).
#[allow(clippy::too_many_arguments)]
async fn send_items(
    settings: &Settings,
    mailbox: &MailboxSettings,
    store: &mut Store,
    sink: &mut Option<SmtpSink>,
    mails: &[RawMail],
    items: Vec<Item>,
    stop: &AtomicBool,
    report: &mut MailboxReport,
) -> Result<Vec<(u32, i64, State)>, Stop> {
    let mut settle = Vec::new();
    let mut stopped = false;
    for item in items {
        if item.state != State::Pending {
            settle.push((item.uid, item.row_id, item.state));
            continue;
        }
        if stopped || stop.load(Ordering::Relaxed) {
            stopped = true;
            continue;
        }
        if sink.is_none() {
            // The session broke on an earlier message: open a new one.
            let connected = sink::connect(&settings.smtp)
                .await
                .context("cannot reopen the SMTP session; unsent messages stay pending")
                .map_err(Stop::Mailbox)?;
            *sink = Some(connected);
        }
        let Some(session) = sink.as_mut() else {
            continue;
        };
        let raw = &mails[item.mail_index];
        let resent_id =
            trace::resent_message_id(item.row_id, &item.sha256, &settings.smtp.envelope_from);
        let attempt = store.mark_send_attempt(item.row_id, &resent_id)?;
        let mut block = trace::trace_block(&trace::TraceFacts {
            helo_name: &settings.smtp.helo_name,
            imap_host: &mailbox.host,
            mailbox_name: &mailbox.name,
            uid: item.uid,
            resent_from: &settings.smtp.envelope_from,
            resent_to: &mailbox.forward_to,
            resent_message_id: &resent_id,
            now_unix: clock::unix_now(),
        });
        if let Some(repair) = &item.repair {
            block.push_str(repair);
        }
        match session
            .send(&mailbox.forward_to, block.as_bytes(), &raw.bytes)
            .await
        {
            Ok(reply) => {
                store.mark_forwarded(item.row_id, &reply)?;
                info!(mailbox = %mailbox.name, uid = item.uid, row = item.row_id, attempt, %reply, "forwarded");
                report.forwarded += 1;
                settle.push((item.uid, item.row_id, State::Forwarded));
            }
            Err(SendError::Permanent { reply }) => {
                store.mark_failed(item.row_id, "rejected", &reply)?;
                warn!(mailbox = %mailbox.name, uid = item.uid, row = item.row_id, %reply, "rejected by the SMTP server");
                report.failed += 1;
                settle.push((item.uid, item.row_id, State::Failed));
                if session.reset().await.is_err() {
                    *sink = None;
                }
            }
            Err(SendError::Temporary { reply }) => {
                let age = clock::unix_now() - item.first_seen_unix;
                if settings.smtp.give_up_after.as_secs() as i64 <= age {
                    store.mark_failed(
                        item.row_id,
                        "gave-up",
                        &format!("still deferred after {} hours: {reply}", age / 3600),
                    )?;
                    report.failed += 1;
                    settle.push((item.uid, item.row_id, State::Failed));
                } else {
                    store.mark_deferred(item.row_id, &reply)?;
                    report.deferred += 1;
                }
                warn!(mailbox = %mailbox.name, uid = item.uid, row = item.row_id, %reply, "deferred by the SMTP server");
                if session.reset().await.is_err() {
                    *sink = None;
                }
            }
            Err(err @ SendError::Broken { .. }) => {
                let message = err.to_string();
                store.mark_deferred(item.row_id, &message)?;
                warn!(mailbox = %mailbox.name, uid = item.uid, row = item.row_id, error.message = %message, "SMTP session broke; message stays pending");
                report.deferred += 1;
                *sink = None;
            }
        }
    }
    Ok(settle)
}

/// Settles final rows on the server, grouped by what is done to them, and
/// records it. A failed settle is logged and retried on the next pass.
async fn settle_rows(
    store: &mut Store,
    source: &mut ImapSource,
    mailbox: &MailboxSettings,
    rows: Vec<(u32, i64, State)>,
    report: &mut MailboxReport,
) -> Result<(), Stop> {
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
    for ((flags, move_to), members) in groups {
        let settlement = Settlement { flags, move_to };
        let uids: Vec<u32> = members.iter().map(|(uid, _)| *uid).collect();
        let ids: Vec<i64> = members.iter().map(|(_, id)| *id).collect();
        match source.settle(&uids, &settlement).await {
            Ok(()) => store.mark_settled(&ids, &settlement.describe())?,
            Err(err) => {
                let message = err.to_string();
                error!(mailbox = %mailbox.name, error.message = %message, "cannot settle messages; retrying next pass");
                for id in &ids {
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

/// Forwards one held message after a person decided it may go: finds it on
/// the IMAP server (in the held folder when it was moved), checks it is
/// the same bytes, redirects it, marks it forwarded, sets `$Forwarded`, and
/// lifts a rate-limit block on its correspondent.
///
/// # Errors
/// The row is missing or not held, the message is no longer on the
/// server, or IMAP, SMTP or the database fail.
pub async fn release(settings: &Settings, id: i64) -> anyhow::Result<String> {
    let _lock = PassLock::acquire(&settings.store_path)?;
    let mut store = Store::open(&settings.store_path)?;
    let row = store
        .message(id)?
        .with_context(|| format!("no message with id {id} in the log"))?;
    if row.state() != State::Held {
        anyhow::bail!(
            "message {id} is {}, not held: only held messages can be released",
            row.state
        );
    }
    let mailbox = settings
        .mailboxes
        .iter()
        .find(|mailbox| mailbox.name == row.mailbox)
        .with_context(|| {
            format!(
                "message {id} came from mailbox {}, which the config no longer has",
                row.mailbox
            )
        })?;
    let mut source = source::connect(mailbox)
        .await
        .with_context(|| format!("mailbox {}", mailbox.name))?;
    let moved_to = row
        .settled_as
        .as_deref()
        .and_then(|how| how.split_once(" and moved to "))
        .map(|(_, folder)| folder.to_owned());
    let folder = moved_to.clone().unwrap_or_else(|| mailbox.folder.clone());
    let state = source
        .select_path(&folder)
        .await
        .with_context(|| format!("mailbox {} folder {folder}", mailbox.name))?;
    let candidates = if moved_to.is_none() && state.uidvalidity == row.uidvalidity {
        vec![row.uid]
    } else {
        match &row.message_id {
            Some(message_id) => source.uids_with_message_id(message_id).await?,
            None => source.uids_from(1).await?,
        }
    };
    let raw = source
        .fetch(&candidates)
        .await?
        .into_iter()
        .find(|mail| mail::content_hash(&mail.bytes) == row.sha256)
        .with_context(|| {
            format!(
                "message {id} is no longer in folder {folder} of mailbox {} (moved or deleted?); nothing was sent",
                mailbox.name
            )
        })?;
    let mut session = sink::connect(&settings.smtp)
        .await
        .context("cannot open the SMTP session; nothing was sent")?;
    let resent_id = trace::resent_message_id(row.id, &row.sha256, &settings.smtp.envelope_from);
    store.mark_send_attempt(row.id, &resent_id)?;
    let block = trace::trace_block(&trace::TraceFacts {
        helo_name: &settings.smtp.helo_name,
        imap_host: &mailbox.host,
        mailbox_name: &mailbox.name,
        uid: raw.uid,
        resent_from: &settings.smtp.envelope_from,
        resent_to: &mailbox.forward_to,
        resent_message_id: &resent_id,
        now_unix: clock::unix_now(),
    });
    let reply = match session
        .send(&mailbox.forward_to, block.as_bytes(), &raw.bytes)
        .await
    {
        Ok(reply) => reply,
        Err(err) => {
            store.add_event(row.id, "release-failed", &err.to_string())?;
            anyhow::bail!("the SMTP server did not take message {id}: {err}; it stays held");
        }
    };
    store.mark_released(row.id, &reply)?;
    session.quit().await;
    let mut outcome = format!("released message {id} to {}: {reply}", mailbox.forward_to);
    let correspondent = row.relay_alias.clone().or_else(|| row.from.clone());
    if let Some(correspondent) = correspondent
        && store.unblock(&correspondent)?
    {
        outcome.push_str(&format!("\nlifted the rate-limit block on {correspondent}"));
    }
    let settlement = Settlement {
        flags: "$Forwarded".to_owned(),
        move_to: None,
    };
    match source.settle(&[raw.uid], &settlement).await {
        Ok(()) => store.mark_settled(
            &[row.id],
            &format!("{} (released in {folder})", settlement.describe()),
        )?,
        Err(err) => {
            store.add_event(row.id, "settle-failed", &err.to_string())?;
            outcome.push_str(&format!("\nwarning: could not set $Forwarded: {err}"));
        }
    }
    source.logout().await;
    Ok(outcome)
}
