//! Classifying and recording a fetched batch, in two steps:
//!
//! - [`examine_batch`], pure and CPU-bound (hashes, parse, classifier,
//!   thread keys): it runs off the pass's thread, on one thread per core
//!   (at most four), so the SMTP sessions keep sending meanwhile;
//! - [`record_batch`], on the pass's thread: content-hash recognition
//!   (duplicates, UIDVALIDITY rescans), the relay-copy and rate-limit
//!   checks against the log; then one transaction per batch, committed
//!   on the journal's writer thread.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use tracing::{info, warn};

use super::send::SinkPool;
use super::{Item, MailboxReport, Stop};
use crate::classify::{self, Action, Classification, CryptoClass, Decision, Reason, Rules};
use crate::config::{MailboxSettings, Settings};
use crate::source::RawMail;
use crate::store::{Checkpoint, Journal, MessageRow, NewMessage, State, Store};
use crate::thread::{ThreadKeys, TicketPatterns};
use crate::{clock, mail, thread, trace};

/// What the pure step learns from one fetched message.
pub(super) struct Examined {
    sha256: String,
    classification: Classification,
    /// `None` when mail-parser found no header block.
    facts: Option<Facts>,
}

/// What a parsed message contributes to its log row and to the checks.
struct Facts {
    body_sha256: String,
    /// Message-ID as written, trimmed (the copy check compares it).
    message_id: Option<String>,
    from_address: Option<String>,
    summary: mail::MailSummary,
    thread: ThreadKeys,
}

/// Everything the pure step needs, owned, so it can move to another thread.
#[derive(Clone)]
pub(super) struct Examiner {
    rules: Rules,
    patterns: TicketPatterns,
}

impl Examiner {
    pub(super) fn new(settings: &Settings, mailbox: &MailboxSettings) -> Examiner {
        Examiner {
            rules: Rules {
                own_domain: settings
                    .smtp
                    .envelope_from
                    .rsplit_once('@')
                    .map(|(_, domain)| domain.to_owned()),
                max_message_bytes: Some(mailbox.max_message_bytes),
                helpdesk_addresses: settings.policy.helpdesk_addresses.clone(),
                extra_relays: settings.extra_relays.clone(),
                loop_action: settings.policy.loop_action,
            },
            patterns: settings.threading.patterns.clone(),
        }
    }

    /// One parse serves the classifier, the copy and rate checks, the
    /// summary and the thread keys.
    fn examine(&self, raw: &RawMail) -> Examined {
        examine_guarded(raw, || {
            let parsed = mail::parse_checked(&raw.bytes);
            let classification = classify::classify_parsed(
                parsed.as_ref().map_err(|why| *why),
                raw.size,
                &self.rules,
            );
            let facts = parsed.as_ref().ok().map(|message| Facts {
                body_sha256: mail::body_hash(message, &raw.bytes),
                message_id: message.message_id().map(|id| id.trim().to_owned()),
                from_address: mail::from_address(message),
                summary: mail::summarize(message),
                thread: thread::keys(message, classification.relay.as_ref(), &self.patterns),
            });
            (classification, facts)
        })
    }
}

/// Runs the pure examination of one message, holding the message as
/// `unparseable` if it panics.
///
/// NOTE: The pure stages must never panic on malformed mail (invariant 1),
/// and a panic there is a bug. But were one message to hit such a bug, a
/// failed batch would come back on every pass and hold up everything after
/// it: that one message is held for a person instead, and the rest go on.
fn examine_guarded(
    raw: &RawMail,
    examine: impl FnOnce() -> (Classification, Option<Facts>),
) -> Examined {
    let sha256 = mail::content_hash(&raw.bytes);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(examine)) {
        Ok((classification, facts)) => Examined {
            sha256,
            classification,
            facts,
        },
        Err(_) => {
            warn!(
                uid = raw.uid,
                "examining this message panicked; holding it as unparseable"
            );
            Examined {
                sha256,
                classification: Classification {
                    decision: Decision::hold(
                        Reason::Unparseable,
                        "examining this message failed inside deskbridge (a bug; please report it with the message); held so a person can look at it",
                    ),
                    class: CryptoClass::Unparseable,
                    relay: None,
                },
                facts: None,
            }
        }
    }
}

/// Examines a fetched batch on a blocking thread and hands the mail back
/// with the findings, in the same order.
///
/// # Errors
/// The blocking task itself failed (the runtime is shutting down, or a
/// panic outside the per-message guard of [`examine_guarded`]): the
/// mailbox stops here and nothing of this batch is recorded.
pub(super) async fn examine_batch(
    examiner: Examiner,
    mails: Vec<RawMail>,
) -> Result<(Vec<RawMail>, Vec<Examined>), Stop> {
    tokio::task::spawn_blocking(move || {
        let examined = examine_in_parallel(&examiner, &mails);
        (mails, examined)
    })
    .await
    .map_err(|err| {
        Stop::Mailbox(anyhow::anyhow!(
            "examining fetched mail failed ({err}); nothing of this batch was recorded"
        ))
    })
}

/// Examines mail on as many threads as there are cores (at most 4), in
/// slices of at least `MIN_SLICE` messages; the result keeps input order.
fn examine_in_parallel(examiner: &Examiner, mails: &[RawMail]) -> Vec<Examined> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    examine_on_threads(examiner, mails, cores.clamp(1, 4))
}

/// [`examine_in_parallel`] on at most `most_threads` threads.
fn examine_on_threads(
    examiner: &Examiner,
    mails: &[RawMail],
    most_threads: usize,
) -> Vec<Examined> {
    const MIN_SLICE: usize = 16;
    let threads = most_threads.min(mails.len() / MIN_SLICE).max(1);
    if threads == 1 {
        return mails.iter().map(|raw| examiner.examine(raw)).collect();
    }
    let slice = mails.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = mails
            .chunks(slice)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|raw| examiner.examine(raw))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| match worker.join() {
                Ok(examined) => examined,
                // Each message is guarded on its own; a panic here is outside
                // that guard and fails the batch, as on the calling thread.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// Messages taken for forwarding so far in a mailbox's pass, by
/// [`mail::copy_key`], with their UIDs: how copies in later batches are
/// recognised before the log says the first was forwarded.
pub(super) type PassCopies = HashMap<[u8; 16], u32>;

/// Classifies a fetched batch and records it in one transaction, together
/// with the new checkpoint. Given the pool (first batch of a mailbox), it
/// opens an SMTP session first when something will be sent, so a broken
/// SMTP setup records nothing.
#[allow(clippy::too_many_arguments)]
pub(super) async fn record_batch(
    settings: &Settings,
    mailbox: &MailboxSettings,
    (store, journal): (&Store, &Journal),
    pool: Option<&mut SinkPool>,
    (mails, examined): (&[RawMail], Vec<Examined>),
    (carried, pass_copies, gone, listed): (
        &HashMap<u32, MessageRow>,
        &mut PassCopies,
        &HashSet<u32>,
        &HashMap<u32, u64>,
    ),
    uidvalidity: u32,
    chunk: &[u32],
    report: &mut MailboxReport,
) -> Result<Vec<Item>, Stop> {
    let mut batch_counts: HashMap<String, u32> = HashMap::new();
    let now = clock::unix_now();
    let envelope_from = settings.smtp.envelope_from.as_str();
    let mut items = Vec::new();
    let mut new_rows: Vec<(usize, NewMessage)> = Vec::new();
    // Copies within this batch are not in the log yet: track them here.
    let mut batch_hashes: HashMap<String, u32> = HashMap::new();
    let mut seen_uids = std::collections::HashSet::new();
    for (mail_index, (raw, examined)) in mails.iter().zip(examined).enumerate() {
        // NOTE: Recording runs beside the SMTP sessions on one thread: give
        // them a turn between messages, so a session whose reply arrived
        // sends its next message now rather than after the whole batch.
        tokio::task::yield_now().await;
        if !seen_uids.insert(raw.uid) {
            // A server that answered twice for one UID: the first answer counts.
            continue;
        }
        // Already logged at this very position: pending from an earlier pass,
        // or recorded (or re-keyed by a rescan) by a pass that was interrupted.
        let logged_here = match carried.get(&raw.uid) {
            Some(row) => Some(row.clone()),
            None => store.find_by_uid(&mailbox.name, uidvalidity, raw.uid)?,
        };
        if let Some(row) = logged_here {
            if row.state() == State::Pending || row.settled_at.is_none() {
                items.push(logged_item(&row, raw.uid, mail_index, now, envelope_from));
            }
            continue;
        }
        let sha256 = examined.sha256.clone();
        if let Some(first_uid) = batch_hashes.get(&sha256) {
            let detail = format!("same bytes as UID {first_uid}, fetched in the same batch");
            let row = duplicate(mailbox, uidvalidity, raw, examined, detail);
            new_rows.push((mail_index, row));
            continue;
        }
        batch_hashes.insert(sha256.clone(), raw.uid);
        let earlier = store
            .find_by_content(&mailbox.name, &sha256)?
            // NOTE: A message that failed and came back (moved into the
            // folder again) deserves another try, not a duplicate mark. Not
            // so after a server-side rebuild (below): a failed row may have
            // given up after a broken session that delivered it after all.
            // Nor when the failed one is still in the folder at the UID it
            // was logged at (a rebuild re-keyed it earlier in this pass):
            // this is a second copy of it, not the same one come back.
            .filter(|row| {
                row.state() != State::Failed
                    || row.uidvalidity != uidvalidity
                    || (row.uid != raw.uid && listed.contains_key(&row.uid))
            });
        if let Some(existing) = earlier {
            if existing.uidvalidity != uidvalidity {
                // NOTE: The same bytes under an old UIDVALIDITY are the same
                // message after a server-side rebuild: carry its row over,
                // whatever its state, so nothing is sent a second time.
                store.adopt(existing.id, uidvalidity, raw.uid)?;
                info!(mailbox = %mailbox.name, uid = raw.uid, row = existing.id, state = %existing.state, "recognised after UIDVALIDITY change");
                if existing.state() == State::Pending || existing.settled_at.is_none() {
                    items.push(logged_item(
                        &existing,
                        raw.uid,
                        mail_index,
                        now,
                        envelope_from,
                    ));
                }
                continue;
            }
            let detail = format!(
                "same bytes as message #{} (UID {}), which is {}",
                existing.id, existing.uid, existing.state
            );
            let row = duplicate(mailbox, uidvalidity, raw, examined, detail);
            new_rows.push((mail_index, row));
            continue;
        }
        let Examined {
            sha256,
            mut classification,
            facts,
        } = examined;
        // The identity of a message with a Message-ID among this pass's
        // copies, computed once for the lookup and the insert below.
        let copy = facts.as_ref().and_then(|facts| {
            let message_id = facts.message_id.as_deref()?;
            Some((message_id, mail::copy_key(message_id, &facts.body_sha256)))
        });
        if let (Some(facts), Some((message_id, copy_key))) = (&facts, copy)
            && classification.decision.action == Action::Forward
        {
            skip_copy(
                settings,
                mailbox,
                store,
                (message_id, &facts.body_sha256, copy_key),
                pass_copies,
                &mut classification,
            )?;
        }
        if let Some(facts) = &facts
            && counts_towards_rate_limit(&classification)
        {
            apply_rate_limit(
                settings,
                mailbox,
                store,
                facts.from_address.as_deref(),
                &mut classification,
                &mut batch_counts,
            )?;
        }
        // Later copies of a message that goes forward in this pass are
        // skipped; of one held (rate-limited), they are judged on their own.
        if let Some((_, copy_key)) = copy
            && classification.decision.action == Action::Forward
        {
            pass_copies.entry(copy_key).or_insert(raw.uid);
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
        let row = new_message(mailbox, uidvalidity, raw, facts, sha256, classification);
        new_rows.push((mail_index, row));
    }

    let needs_smtp = items.iter().any(|item| item.state == State::Pending)
        || new_rows
            .iter()
            .any(|(_, row)| row.state == Some(State::Pending));
    if needs_smtp
        && let Some(pool) = pool
        && pool.is_empty()
    {
        pool.fill(&settings.smtp, 1)
            .await
            .context(
                "cannot open the SMTP session; no new message of this batch was recorded or sent",
            )
            .map_err(Stop::Mailbox)?;
    }

    // NOTE: A new UID the server still lists but did not return (a message
    // it cannot read) must not be stepped over for good; one it no longer
    // holds (expunged meanwhile) may be.
    let missing = chunk
        .iter()
        .copied()
        .filter(|uid| {
            !carried.contains_key(uid)
                && !gone.contains(uid)
                && !mails.iter().any(|mail| mail.uid == *uid)
        })
        .min();
    if let Some(uid) = missing {
        warn!(mailbox = %mailbox.name, uid, "listed by SEARCH but not returned by FETCH; will look again next pass");
        report.checkpoint_ceiling = Some(
            report
                .checkpoint_ceiling
                .map_or(uid, |ceiling| ceiling.min(uid)),
        );
    }
    let highest = chunk.iter().copied().max().unwrap_or(0);
    let checkpoint = Checkpoint {
        uidvalidity,
        last_uid: match report.checkpoint_ceiling {
            Some(ceiling) => highest.min(ceiling.saturating_sub(1)),
            None => highest,
        },
    };
    // What the work items need once the rows have gone to the journal.
    let kept: Vec<(usize, u32, String, State)> = new_rows
        .iter()
        .map(|(mail_index, row)| {
            let state = row.state.unwrap_or(State::Pending);
            (*mail_index, row.uid, row.sha256.clone(), state)
        })
        .collect();
    let rows: Vec<NewMessage> = new_rows.into_iter().map(|(_, row)| row).collect();
    // NOTE: A window of 0 days means relay-subject matching is off: no
    // thread's last activity is at or after the end of time.
    let relay_window_since = if settings.threading.relay_window.is_zero() {
        "9999-12-31T23:59:59Z".to_owned()
    } else {
        clock::rfc3339(now - settings.threading.relay_window.as_secs() as i64)
    };
    // NOTE: The insert and its fsync run on the journal's thread: on this
    // thread they stalled every SMTP session for 10-60 ms per batch.
    let ids = journal
        .record(
            rows,
            Some((mailbox.name.clone(), checkpoint)),
            relay_window_since,
        )
        .await?;
    for ((mail_index, uid, sha256, state), (row_id, attachment)) in kept.into_iter().zip(ids) {
        match state {
            State::Held => report.held += 1,
            State::Skipped => report.skipped += 1,
            _ => (),
        }
        items.push(Item {
            row_id,
            uid,
            resent_id: trace::resent_message_id(row_id, &sha256, envelope_from),
            mail_index,
            state,
            first_seen_unix: now,
            fresh: true,
            repair: attachment.repair_headers,
            attempts: 0,
        });
    }
    items.sort_by_key(|item| item.uid);
    Ok(items)
}

/// Skips a copy of a message already forwarded to the same helpdesk, or
/// already taken for forwarding earlier in this pass: same Message-ID and
/// same body (SimpleLogin sends one Message-ID to each of our addresses a
/// customer wrote to). The copy is logged as `duplicate-message-id` and
/// joins the same thread; a message that reuses a Message-ID with a
/// different body is forwarded.
fn skip_copy(
    settings: &Settings,
    mailbox: &MailboxSettings,
    store: &Store,
    (message_id, body_sha256, copy_key): (&str, &str, [u8; 16]),
    pass_copies: &PassCopies,
    classification: &mut Classification,
) -> Result<(), Stop> {
    for earlier in store.rows_with_message_id(message_id)? {
        // NOTE: A mailbox no longer in the config that read this same
        // account and folder is this one under its old name: renaming a
        // mailbox must not send its whole folder to the helpdesk again.
        // One that read elsewhere was removed, and its helpdesk may not be
        // this one's.
        let configured = settings
            .mailboxes
            .iter()
            .find(|other| other.name == earlier.mailbox);
        let same_helpdesk = match configured {
            Some(other) => other.forward_to.eq_ignore_ascii_case(&mailbox.forward_to),
            // NOTE: A mailbox last worked on before the log recorded
            // accounts (migration 0009) has none: taken for a rename, as
            // sending a whole folder again is the graver mistake.
            None => store
                .mailbox_account(&earlier.mailbox)?
                .is_none_or(|account| account == mailbox.account()),
        };
        // NOTE: From the log, only a copy that reached the helpdesk counts:
        // one still pending from an earlier pass may yet fail, and this copy
        // must not be lost. Copies within this pass are below.
        let delivered = earlier.state() == State::Forwarded;
        if same_helpdesk && delivered && earlier.body_sha256.as_deref() == Some(body_sha256) {
            let went_to = match configured {
                Some(_) => mailbox.forward_to.clone(),
                None => format!(
                    "the helpdesk of that mailbox, which is no longer in the config and read this same account and folder ({}, or was last worked on before accounts were recorded): renamed",
                    mailbox.account()
                ),
            };
            classification.decision = Decision::skip(
                Reason::DuplicateMessageId,
                format!(
                    "a copy of message #{} (mailbox {}, same Message-ID and body), which already went to {went_to}",
                    earlier.id, earlier.mailbox
                ),
            );
            return Ok(());
        }
    }
    // NOTE: A copy of a message taken for forwarding earlier in this pass
    // is skipped even while that one is still being sent (batches are
    // recorded while the one before is sent): forwarding both would give
    // the helpdesk two tickets. The copies differ only in headers such as
    // To, with the same envelope and helpdesk, so should the first fail,
    // this one would fail the same way; the first's failure is what the
    // log shows, and the copy's row points at it.
    if let Some(first_uid) = pass_copies.get(&copy_key) {
        classification.decision = Decision::skip(
            Reason::DuplicateMessageId,
            format!(
                "a copy of UID {first_uid}, taken for forwarding earlier in this pass (same Message-ID and body), which goes to {}",
                mailbox.forward_to
            ),
        );
    }
    Ok(())
}

/// The log row for a byte-identical copy: skipped as `duplicate`.
fn duplicate(
    mailbox: &MailboxSettings,
    uidvalidity: u32,
    raw: &RawMail,
    examined: Examined,
    detail: String,
) -> NewMessage {
    // NOTE: As before the examine step existed, a byte-identical copy
    // names no relay: it is not the correspondent's mail a second time, so
    // it does not count towards their rate limit.
    let classification = Classification {
        decision: Decision::skip(Reason::Duplicate, detail),
        class: CryptoClass::None,
        relay: None,
    };
    new_message(
        mailbox,
        uidvalidity,
        raw,
        examined.facts,
        examined.sha256,
        classification,
    )
}

/// The work item for a row already in the log.
fn logged_item(
    row: &MessageRow,
    uid: u32,
    mail_index: usize,
    now: i64,
    envelope_from: &str,
) -> Item {
    Item {
        row_id: row.id,
        uid,
        resent_id: trace::resent_message_id(row.id, &row.sha256, envelope_from),
        mail_index,
        state: row.state(),
        first_seen_unix: clock::parse_rfc3339(&row.first_seen_at).unwrap_or(now),
        fresh: false,
        repair: row.repair_headers.clone(),
        attempts: row.attempts,
    }
}

/// Whether the rate limit applies: to mail to forward, and to mail held
/// for what it carries. A loop whose every message is held (an
/// auto-responder that encrypts, behind a relay that strips its headers)
/// would otherwise cost the helpdesk a notice per message. Loop findings
/// are already kept from answers and notices of their own.
fn counts_towards_rate_limit(classification: &Classification) -> bool {
    match classification.decision.action {
        Action::Forward => true,
        Action::Hold => !classification
            .decision
            .reason
            .is_some_and(Reason::is_loop_or_limit),
        Action::Skip => false,
    }
}

/// What a message held for its content was held for, to keep in the
/// detail once the rate limit holds it instead.
fn also_held_for(classification: &Classification) -> String {
    match classification.decision.reason {
        Some(reason) if classification.decision.action == Action::Hold => format!(
            "; it is also {} ({})",
            reason.as_str(),
            classification.decision.detail
        ),
        _ => String::new(),
    }
}

/// Holds a message as `rate-limited` when its correspondent
/// is blocked, or has now sent more than the limit within the window (a
/// loop with a relay that stripped the auto-reply headers looks like this).
fn apply_rate_limit(
    settings: &Settings,
    mailbox: &MailboxSettings,
    store: &Store,
    from_address: Option<&str>,
    classification: &mut Classification,
    batch_counts: &mut HashMap<String, u32>,
) -> Result<(), Stop> {
    let policy = &settings.policy;
    if policy.rate_limit_messages == 0 {
        return Ok(());
    }
    // In any letter case, as the log counts them.
    let correspondent = match &classification.relay {
        Some(relay) => Some(relay.alias.to_ascii_lowercase()),
        None => from_address.map(str::to_ascii_lowercase),
    };
    let Some(correspondent) = correspondent else {
        return Ok(());
    };
    if let Some(reason) = store.blocked(&correspondent)? {
        let also = also_held_for(classification);
        classification.decision = Decision::hold(
            Reason::RateLimited,
            format!(
                "{correspondent} is blocked by the rate limit ({reason}){also}; `deskbridge release ID` forwards a message and lifts the block"
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
        let also = also_held_for(classification);
        classification.decision = Decision::hold(
            Reason::RateLimited,
            format!(
                "{correspondent} sent {reason} (a possible mail loop){also}; their mail is held until `deskbridge release ID`"
            ),
        );
    }
    Ok(())
}

/// The log row for a freshly classified message, with its thread keys.
fn new_message(
    mailbox: &MailboxSettings,
    uidvalidity: u32,
    raw: &RawMail,
    facts: Option<Facts>,
    sha256: String,
    classification: Classification,
) -> NewMessage {
    let state = match classification.decision.action {
        Action::Forward => State::Pending,
        Action::Hold => State::Held,
        Action::Skip => State::Skipped,
    };
    let (summary, thread, body_sha256) = match facts {
        Some(facts) => (facts.summary, Some(facts.thread), Some(facts.body_sha256)),
        None => (mail::MailSummary::default(), None, None),
    };
    NewMessage {
        thread,
        repair_enabled: mailbox.repair_threading,
        body_sha256,
        forward_to: mailbox.forward_to.to_ascii_lowercase(),
        mailbox: mailbox.name.clone(),
        uidvalidity,
        uid: raw.uid,
        summary,
        size: raw.size,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_examining_holds_that_message_alone() {
        let raw = RawMail {
            uid: 7,
            size: 12,
            bytes: b"Subject: x\r\n\r\n".to_vec(),
        };
        let examined = examine_guarded(&raw, || panic!("a parser bug"));
        assert_eq!(examined.classification.decision.action, Action::Hold);
        assert_eq!(
            examined.classification.decision.reason,
            Some(Reason::Unparseable)
        );
        assert_eq!(examined.sha256, mail::content_hash(&raw.bytes));
        assert!(examined.facts.is_none());
    }

    #[test]
    fn parallel_examination_keeps_the_batch_order() {
        let examiner = Examiner {
            rules: Rules::default(),
            patterns: TicketPatterns::new(&[]).expect("built-in patterns"),
        };
        let mails: Vec<RawMail> = (0..100u32)
            .map(|uid| {
                let bytes = format!(
                    "From: a{uid}@example.org\r\nSubject: s{uid}\r\nMessage-ID: <m{uid}@example.org>\r\n\r\nbody {uid}\r\n"
                )
                .into_bytes();
                RawMail {
                    uid,
                    size: bytes.len() as u64,
                    bytes,
                }
            })
            .collect();
        let expected: Vec<Option<String>> = (0..100)
            .map(|uid| Some(format!("m{uid}@example.org")))
            .collect();
        let direct: Vec<String> = mails
            .iter()
            .map(|raw| mail::content_hash(&raw.bytes))
            .collect();
        // Four threads whatever this machine has: 100 messages make four
        // slices of 25, so the order is that of the joins.
        for threads in [4, 3, 1] {
            let examined = examine_on_threads(&examiner, &mails, threads);
            let ids: Vec<Option<String>> = examined
                .iter()
                .map(|one| {
                    one.facts
                        .as_ref()
                        .and_then(|facts| facts.message_id.clone())
                })
                .collect();
            assert_eq!(ids, expected, "on {threads} threads");
            let hashes: Vec<&str> = examined.iter().map(|one| one.sha256.as_str()).collect();
            assert_eq!(hashes, direct, "on {threads} threads");
        }
    }
}
