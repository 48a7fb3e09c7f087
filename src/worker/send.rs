//! Sending a batch: a pool of SMTP sessions working through the batch's
//! pending messages concurrently, each outcome recorded as it happens.
//!
//! The sessions run as futures on the pass's single task, so the store is
//! shared without locks. Each message is marked with the server's reply
//! the moment it arrives; a session that breaks leaves its message pending
//! and drops out, and the others carry on.
//!
//! A session takes its next message from the queue before it sends the
//! current one, so the next envelope can ride on the current message's end
//! ([`SmtpSink::send_then_open`]). A message whose envelope is open when
//! the pass must stop is abandoned by closing the connection, which makes
//! the server discard it; it stays pending.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{info, warn};

use super::{Item, MailboxReport, Stop};
use crate::config::{MailboxSettings, Settings, SmtpSettings};
use crate::sink::{self, NextEnvelope, NextMessage, SendError, SinkError, SmtpSink};
use crate::source::RawMail;
use crate::store::{Journal, State};
use crate::{clock, trace};

/// A message whose session breaks on this attempt or a later one is given
/// up: each break may have delivered it. Every counted attempt counts
/// (4xx deferrals too), so a message that keeps failing stops somewhere.
const MAX_BROKEN_ATTEMPTS: u32 = 5;

/// How many times a batch's work is handed to sessions: fresh ones are
/// opened when every session broke with messages still unsent.
const SEND_ROUNDS: u32 = 3;

/// The SMTP sessions of a pass, opened on demand and reused across batches
/// and mailboxes.
#[derive(Debug, Default)]
pub(super) struct SinkPool {
    sessions: Vec<SmtpSink>,
    /// Why the last attempt opened no session at all (server, error): the
    /// rest of the pass fails at once instead of waiting for a dead or
    /// misconfigured server again; the next pass tries afresh.
    open_failure: Option<(String, String)>,
}

impl SinkPool {
    /// Opens sessions until there are `wanted` (at most `smtp.sessions`).
    /// Failing to open the first is an error; failing later ones only
    /// means fewer sessions.
    pub(super) async fn fill(
        &mut self,
        smtp: &SmtpSettings,
        wanted: usize,
    ) -> Result<(), SinkError> {
        let wanted = wanted.clamp(1, smtp.sessions);
        if wanted <= self.sessions.len() {
            return Ok(());
        }
        if self.sessions.is_empty()
            && let Some((addr, message)) = &self.open_failure
        {
            return Err(SinkError::Session {
                addr: addr.clone(),
                operation: "opening a session",
                message: format!("{message} (not tried again in this pass)"),
            });
        }
        // NOTE: Handshakes (TCP, TLS, EHLO, AUTH) run side by side: opening
        // sessions one after another costs a round trip chain each.
        let missing = wanted - self.sessions.len();
        let opened = futures::future::join_all((0..missing).map(|_| sink::connect(smtp))).await;
        let mut first_error = None;
        for result in opened {
            match result {
                Ok(session) => self.sessions.push(session),
                Err(err) => {
                    warn!(error.message = %err, "cannot open an SMTP session");
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error
            && self.sessions.is_empty()
        {
            self.open_failure = Some((format!("{}:{}", smtp.host, smtp.port), err.to_string()));
            return Err(err);
        }
        Ok(())
    }

    /// A session for a single message (notices, releases).
    pub(super) async fn one(&mut self, smtp: &SmtpSettings) -> Result<&mut SmtpSink, SinkError> {
        self.fill(smtp, 1).await?;
        match self.sessions.first_mut() {
            Some(session) => Ok(session),
            None => Err(SinkError::Session {
                addr: format!("{}:{}", smtp.host, smtp.port),
                operation: "opening a session",
                message: "no session available".to_owned(),
            }),
        }
    }

    /// Drops the first session (it broke).
    pub(super) fn discard_first(&mut self) {
        if !self.sessions.is_empty() {
            self.sessions.remove(0);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Ends every session politely.
    pub(super) async fn quit(self) {
        futures::future::join_all(self.sessions.into_iter().map(SmtpSink::quit)).await;
    }
}

/// What sending a batch left.
pub(super) struct Sent {
    /// What is ready to settle: (uid, row id, final state).
    pub settle: Vec<(u32, i64, State)>,
    /// Set when the mailbox must stop, its unsent mail pending: the server
    /// refused the envelope, or no new session could be opened.
    pub stop: Option<Stop>,
    /// The server refused the envelope: held follow-ups (to the same
    /// address, from the same sender) would be refused too.
    pub envelope_refused: bool,
}

impl Sent {
    /// A batch of which nothing was sent: only its final rows to settle.
    fn nothing_sent(settle: Vec<(u32, i64, State)>) -> Sent {
        Sent {
            settle,
            stop: None,
            envelope_refused: false,
        }
    }
}

/// Sends the pending items of a batch and records each outcome.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send_items(
    settings: &Settings,
    mailbox: &MailboxSettings,
    journal: &Journal,
    pool: &mut SinkPool,
    mails: &[RawMail],
    items: Vec<Item>,
    stop: &AtomicBool,
    report: &mut MailboxReport,
) -> Result<Sent, Stop> {
    let mut settle = super::final_rows_of(&items);
    let pending: VecDeque<Item> = items
        .into_iter()
        .filter(|item| item.state == State::Pending)
        .collect();
    if pending.is_empty() {
        return Ok(Sent::nothing_sent(settle));
    }
    // NOTE: A stop that came while this batch was prepared: nothing of it
    // was tried, so no attempt is counted; it stays pending for next pass.
    if stop.load(Ordering::Relaxed) {
        report.deferred += pending.len() as u32;
        return Ok(Sent::nothing_sent(settle));
    }
    super::ensure_log_space_for_mailbox(settings)?;
    pool.fill(&settings.smtp, pending.len())
        .await
        .map_err(|err| {
            Stop::Mailbox(
                anyhow::Error::new(err)
                    .context("cannot open an SMTP session; unsent messages stay pending"),
            )
        })?;
    // NOTE: One transaction fixes every Resent-Message-ID and counts every
    // attempt before the first byte is sent, so a crash mid-batch is visible.
    let attempts: Vec<(i64, String)> = pending
        .iter()
        .map(|item| (item.row_id, item.resent_id.clone()))
        .collect();
    let n_attempts = attempts.len();
    journal.attempts(attempts);
    journal.flush().await?;
    tracing::debug!(
        messages = n_attempts,
        sessions = pool.sessions.len(),
        "sending batch"
    );

    let queue = RefCell::new(pending);
    let outcomes: RefCell<Vec<Outcome>> = RefCell::new(Vec::new());
    let refusal: RefCell<Option<String>> = RefCell::new(None);
    let early_breaks: RefCell<HashSet<i64>> = RefCell::new(HashSet::new());
    let mut stop_mailbox = None;
    for round in 1..=SEND_ROUNDS {
        let sessions = std::mem::take(&mut pool.sessions);
        let workers = sessions.into_iter().map(|session| {
            let context = Worker {
                settings,
                mailbox,
                journal,
                mails,
                queue: &queue,
                outcomes: &outcomes,
                refusal: &refusal,
                early_breaks: &early_breaks,
                stop,
            };
            context.run(session)
        });
        let results = futures::future::join_all(workers).await;
        for session in results.into_iter().flatten() {
            pool.sessions.push(session);
        }
        let left = queue.borrow().len();
        let halted =
            stop.load(Ordering::Relaxed) || journal.has_failed() || refusal.borrow().is_some();
        if left == 0 || halted || round == SEND_ROUNDS {
            break;
        }
        // NOTE: Work is left when sessions broke with messages still
        // queued (pushed back, or never reached): fresh sessions take it,
        // as pooled sessions the server closed while a long mailbox was
        // read need. One that cannot be opened stops the mailbox.
        if let Err(err) = pool.fill(&settings.smtp, left).await {
            stop_mailbox = Some(Stop::Mailbox(
                anyhow::Error::new(err)
                    .context("cannot open a new SMTP session; unsent messages stay pending"),
            ));
            break;
        }
    }
    // Whatever no session could take (all broke, or a stop signal) stays
    // pending for the next pass, its attempt not counted after all.
    let untried: Vec<i64> = queue.borrow().iter().map(|item| item.row_id).collect();
    report.deferred += untried.len() as u32;
    journal.not_attempted(untried);
    // Settling comes next: every outcome must be on disk first.
    journal.flush().await?;
    for outcome in outcomes.into_inner() {
        match outcome {
            Outcome::Forwarded(uid, row_id) => {
                report.forwarded += 1;
                settle.push((uid, row_id, State::Forwarded));
            }
            Outcome::Failed(uid, row_id) => {
                report.failed += 1;
                settle.push((uid, row_id, State::Failed));
            }
            Outcome::Deferred => report.deferred += 1,
        }
    }
    let refused = refusal.into_inner().map(|reply| {
        Stop::Mailbox(anyhow::anyhow!(
            "the SMTP server {}:{} refused the envelope (MAIL FROM <{}>, RCPT TO <{}>): {reply}; \
             this mailbox's unsent mail stays pending, none of it failed. Check that this login \
             may send as envelope_from, that forward_to is the helpdesk's intake address, and the \
             account's sending limits; `deskbridge check-config --connect` tries the envelope",
            settings.smtp.host,
            settings.smtp.port,
            settings.smtp.envelope_from,
            mailbox.forward_to,
        ))
    });
    Ok(Sent {
        settle,
        envelope_refused: refused.is_some(),
        stop: refused.or(stop_mailbox),
    })
}

enum Outcome {
    Forwarded(u32, i64),
    Failed(u32, i64),
    Deferred,
}

/// One session working through the shared queue.
struct Worker<'a> {
    settings: &'a Settings,
    mailbox: &'a MailboxSettings,
    journal: &'a Journal,
    mails: &'a [RawMail],
    queue: &'a RefCell<VecDeque<Item>>,
    outcomes: &'a RefCell<Vec<Outcome>>,
    /// The first refused envelope's reply: every session stops.
    refusal: &'a RefCell<Option<String>>,
    /// Rows whose session broke before their content in this batch.
    early_breaks: &'a RefCell<HashSet<i64>>,
    stop: &'a AtomicBool,
}

impl Worker<'_> {
    /// Returns the session when it is still usable.
    async fn run(self, mut session: SmtpSink) -> Option<SmtpSink> {
        // The message whose envelope went out with the previous one's end
        // and was answered with 354, and the trace block it was sent with.
        let mut opened: Option<(Item, String)> = None;
        loop {
            // NOTE: Once the log cannot record outcomes, sending more would
            // only widen what a rerun resends.
            // A refused envelope will be refused for the rest too.
            let halt = self.stop.load(Ordering::Relaxed)
                || self.journal.has_failed()
                || self.refusal.borrow().is_some();
            let (item, block) = match opened.take() {
                // NOTE: Dropping the session mid-DATA makes the server
                // discard the opened message; it stays pending.
                Some((item, _)) if halt => {
                    self.queue.borrow_mut().push_front(item);
                    return None;
                }
                Some(opened) => opened,
                None if halt => return Some(session),
                None => {
                    let Some(item) = self.queue.borrow_mut().pop_front() else {
                        return Some(session);
                    };
                    let block = self.trace_block(&item);
                    (item, block)
                }
            };
            let next = if session.pipelines() {
                self.queue.borrow_mut().pop_front()
            } else {
                None
            };
            let next_block = next.as_ref().map(|next| self.trace_block(next));
            let next_message =
                next.as_ref()
                    .zip(next_block.as_ref())
                    .map(|(next, block)| NextMessage {
                        forward_to: &self.mailbox.forward_to,
                        trace: block.as_bytes(),
                        original: &self.mails[next.mail_index].bytes,
                    });
            let raw = &self.mails[item.mail_index];
            let (sent, next_envelope) = session
                .send_then_open(
                    &self.mailbox.forward_to,
                    block.as_bytes(),
                    &raw.bytes,
                    next_message,
                )
                .await;
            let mut refused = None;
            let mut lost = false;
            match (next.zip(next_block), next_envelope) {
                (Some(pair), NextEnvelope::Open) => opened = Some(pair),
                (Some((next, _)), NextEnvelope::Refused(err)) => refused = Some((next, err)),
                (Some((next, _)), NextEnvelope::Lost) => {
                    self.queue.borrow_mut().push_front(next);
                    lost = true;
                }
                (Some((next, _)), NextEnvelope::NotSent) => {
                    self.queue.borrow_mut().push_front(next);
                }
                (None, _) => {}
            }
            if !self.record(&item, sent, &mut session).await || lost {
                if let Some((item, _)) = opened.take() {
                    self.queue.borrow_mut().push_front(item);
                }
                // NOTE: Nothing of a message whose envelope was refused went
                // out: another session takes it (and records that answer).
                if let Some((next, _)) = refused {
                    self.queue.borrow_mut().push_front(next);
                }
                return None;
            }
            if let Some((next, err)) = refused
                && !self.record(&next, Err(err), &mut session).await
            {
                return None;
            }
        }
    }

    /// The trace block for one message, with its relay repair headers.
    fn trace_block(&self, item: &Item) -> String {
        let mut block = trace::trace_block(&trace::TraceFacts {
            helo_name: &self.settings.smtp.helo_name,
            imap_host: &self.mailbox.host,
            mailbox_name: &self.mailbox.name,
            uid: item.uid,
            resent_from: &self.settings.smtp.envelope_from,
            resent_to: &self.mailbox.forward_to,
            resent_message_id: &item.resent_id,
            now_unix: clock::unix_now(),
        });
        if let Some(repair) = &item.repair {
            block.push_str(repair);
        }
        block
    }

    /// Whether a message first seen `age` seconds ago is past
    /// `give_up_after`: it fails as `gave-up` instead of waiting again.
    fn past_give_up(&self, age: i64) -> bool {
        self.settings.smtp.give_up_after.as_secs() as i64 <= age
    }

    /// Records one outcome; returns whether the session is still usable.
    async fn record(
        &self,
        item: &Item,
        sent: Result<String, SendError>,
        session: &mut SmtpSink,
    ) -> bool {
        let name = &self.mailbox.name;
        let outcome = match sent {
            Ok(reply) => {
                self.journal.forwarded(item.row_id, &reply);
                info!(mailbox = %name, uid = item.uid, row = item.row_id, %reply, "forwarded");
                Outcome::Forwarded(item.uid, item.row_id)
            }
            Err(SendError::Permanent { reply }) => {
                self.journal.failed(item.row_id, "rejected", &reply);
                warn!(mailbox = %name, uid = item.uid, row = item.row_id, %reply, "rejected by the SMTP server");
                self.outcomes
                    .borrow_mut()
                    .push(Outcome::Failed(item.uid, item.row_id));
                return session.reset().await.is_ok();
            }
            // NOTE: Every message of a mailbox has the same envelope
            // (envelope_from, forward_to), so a 5xx to it says the account
            // or the address is refused (a sending quota, a lost send-as
            // right, an unknown intake address), not this message. Failing
            // it, and the backlog after it, would leave each to be moved
            // back by hand: it stays pending, unattempted, and the mailbox
            // stops.
            Err(SendError::EnvelopeRefused { reply }) => {
                self.journal.not_attempted(vec![item.row_id]);
                self.journal.deferred(item.row_id, &reply);
                warn!(mailbox = %name, uid = item.uid, row = item.row_id, %reply, "the SMTP server refused the envelope");
                self.refusal.borrow_mut().get_or_insert(reply);
                self.outcomes.borrow_mut().push(Outcome::Deferred);
                return session.reset().await.is_ok();
            }
            Err(SendError::Temporary { reply }) => {
                let age = clock::unix_now() - item.first_seen_unix;
                let outcome = if self.past_give_up(age) {
                    self.journal.failed(
                        item.row_id,
                        "gave-up",
                        &format!("still deferred after {} hours: {reply}", age / 3600),
                    );
                    Outcome::Failed(item.uid, item.row_id)
                } else {
                    self.journal.deferred(item.row_id, &reply);
                    Outcome::Deferred
                };
                warn!(mailbox = %name, uid = item.uid, row = item.row_id, %reply, "deferred by the SMTP server");
                self.outcomes.borrow_mut().push(outcome);
                return session.reset().await.is_ok();
            }
            Err(err @ SendError::Broken { .. }) => {
                let content_sent = matches!(
                    err,
                    SendError::Broken {
                        content_sent: true,
                        ..
                    }
                );
                let message = err.to_string();
                let age = clock::unix_now() - item.first_seen_unix;
                let too_old = self.past_give_up(age);
                // NOTE: A break before the content (a session the server
                // closed while idle) cannot have delivered the message: that
                // was no attempt. It goes to the back of the queue for
                // another session, once: a second such break in this batch
                // suggests the message itself breaks sessions, so it waits
                // for the next pass rather than take every session down.
                if !content_sent && !too_old && self.early_breaks.borrow_mut().insert(item.row_id) {
                    self.journal.deferred(item.row_id, &message);
                    warn!(mailbox = %name, uid = item.uid, row = item.row_id, error.message = %message, "SMTP session broke before the message was sent; another session takes it");
                    self.queue.borrow_mut().push_back(item.clone());
                    return false;
                }
                if !content_sent {
                    self.journal.not_attempted(vec![item.row_id]);
                }
                // NOTE: A session that breaks mid-message may have delivered
                // it; retrying forever could flood the helpdesk with copies.
                let outcome =
                    if (content_sent && MAX_BROKEN_ATTEMPTS <= item.attempts + 1) || too_old {
                        self.journal.failed(
                        item.row_id,
                        "gave-up",
                        &format!(
                            "the SMTP session broke during attempt {} at this message: {message}",
                            item.attempts + 1
                        ),
                    );
                        Outcome::Failed(item.uid, item.row_id)
                    } else {
                        self.journal.deferred(item.row_id, &message);
                        Outcome::Deferred
                    };
                warn!(mailbox = %name, uid = item.uid, row = item.row_id, error.message = %message, "SMTP session broke");
                self.outcomes.borrow_mut().push(outcome);
                return false;
            }
        };
        self.outcomes.borrow_mut().push(outcome);
        true
    }
}
