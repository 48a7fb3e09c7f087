//! Held mail after the hold: the notice to the helpdesk, the auto-reply to
//! the sender, and `deskbridge release`.

use anyhow::Context as _;
use tracing::warn;

use super::send::SinkPool;
use super::{MailboxReport, Stop};
use crate::classify::Reason;
use crate::config::{AfterHold, MailboxSettings, Settings};
use crate::lock::PassLock;
use crate::sink::{self, SendError};
use crate::source::{self, Settlement};
use crate::store::{State, Store};
use crate::{clock, mail, notice, trace};

/// Why `recipient` must get no auto-reply, if it must not: it is one of our
/// own addresses (a reply would become a ticket, or come back to a polled
/// mailbox), or one that takes no replies: no-reply senders and the list
/// and bounce machinery (RFC 3834 §2).
fn unanswerable(recipient: &str, settings: &Settings) -> Option<&'static str> {
    // NOTE: Helpdesks reply from plus-tagged addresses
    // (`support+id123@…zendesk.com`): compared without the tag.
    let untagged = |address: &str| {
        let address = address.to_ascii_lowercase();
        match address.rsplit_once('@') {
            Some((local, domain)) => {
                let local = local.split_once('+').map_or(local, |(base, _)| base);
                format!("{local}@{domain}")
            }
            None => address,
        }
    };
    let bare = untagged(recipient);
    let own = settings
        .policy
        .helpdesk_addresses
        .iter()
        .chain(std::iter::once(&settings.smtp.envelope_from))
        .chain(
            settings
                .mailboxes
                .iter()
                .flat_map(|mailbox| [&mailbox.auto_reply_from, &mailbox.credentials.username]),
        )
        .any(|address| untagged(address) == bare);
    if own {
        return Some("one of deskbridge's or the helpdesk's own addresses");
    }
    let local = bare
        .rsplit_once('@')
        .map_or(bare.as_str(), |(local, _)| local);
    let squeezed: String = local.chars().filter(char::is_ascii_alphanumeric).collect();
    // NOTE: `noreply` anywhere (`jira-noreply`, `secure-noreply`: portal
    // notices come from such senders); the rest as RFC 3834 §2 and list
    // software name them.
    let machinery = ["noreply", "donotreply"]
        .iter()
        .any(|word| squeezed.contains(word))
        || [
            "mailerdaemon",
            "postmaster",
            "listserv",
            "majordomo",
            "bounce",
        ]
        .iter()
        .any(|word| squeezed.starts_with(word))
        || local.starts_with("owner-")
        || ["-request", "-bounces"]
            .iter()
            .any(|suffix| local.ends_with(suffix));
    machinery.then_some("an address that takes no replies (no-reply, list or bounce handling)")
}

/// Which follow-ups to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FollowUp {
    /// Messages held in this pass: notice and auto-reply, as configured.
    Fresh,
    /// Notices an interrupted earlier pass did not send. Auto-replies are
    /// never retried: one lost reply is better than one too many.
    MissedNotices,
}

/// Sends the held notice to the helpdesk and the auto-reply to the sender,
/// as configured, for messages held in this pass. Failures are recorded
/// and counted; they never undo the hold.
pub(super) async fn follow_up_held(
    settings: &Settings,
    mailbox: &MailboxSettings,
    store: &mut Store,
    pool: &mut SinkPool,
    held: &[i64],
    which: FollowUp,
    report: &mut MailboxReport,
) -> Result<(), Stop> {
    if held.is_empty() || !(mailbox.held_notice || mailbox.auto_reply) {
        return Ok(());
    }
    // NOTE: Sent but not recorded, a notice would go out again with the
    // next pass's missed notices. Skipped here, it goes out with them.
    if let Err(err) = super::ensure_log_space(settings) {
        warn!(mailbox = %mailbox.name, error.message = %err, "held mail not followed up (notices, auto-replies) until there is space");
        return Ok(());
    }
    for id in held {
        let Some(row) = store.message(*id)? else {
            continue;
        };
        // NOTE: Follow-ups come after settling; a move that failed left
        // the original where it was (the next pass moves it).
        let folder = match mailbox.after_hold {
            AfterHold::Move if row.settled_at.is_some() => mailbox.held_folder.as_str(),
            AfterHold::Move | AfterHold::Keyword => mailbox.folder.as_str(),
        };
        let reason = row.reason.clone().unwrap_or_default();
        let held_for = Reason::parse(&reason);
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
        let correspondent = row.correspondent();
        let mut outgoing: Vec<(&'static str, String, String, bool)> = Vec::new();
        if mailbox.held_notice && row.notice_sent_at.is_none() {
            // NOTE: Of a correspondent the rate limit holds, one notice a
            // day (per mailbox) tells the helpdesk; one per message of a
            // loop would flood it with tickets.
            let day_ago = clock::rfc3339(now - 24 * 3600);
            let noticed = match correspondent {
                Some(correspondent) if held_for == Some(Reason::RateLimited) => {
                    store.rate_limit_noticed_since(&mailbox.name, correspondent, &day_ago)?
                }
                _ => false,
            };
            if noticed {
                store.add_event(
                    row.id,
                    "notice-skipped",
                    "a notice for this correspondent's rate-limited mail went out within the last day",
                )?;
            } else {
                let text = notice::held_notice(
                    &facts,
                    &settings.smtp.envelope_from,
                    &mailbox.forward_to,
                    now,
                );
                outgoing.push(("notice", mailbox.forward_to.clone(), text, false));
            }
        }
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
            && which == FollowUp::Fresh
            && row.auto_replied_at.is_none()
            && !held_for.is_some_and(Reason::is_loop_or_limit)
            && let Some(recipient) = recipient
        {
            let since = clock::rfc3339(now - mailbox.auto_reply_interval.as_secs() as i64);
            // NOTE: Never auto-reply to a correspondent the rate limit
            // blocks: that is exactly how two auto-responders loop.
            let blocked = match correspondent {
                Some(correspondent) => store.blocked(correspondent)?.is_some(),
                None => false,
            };
            if let Some(why) = unanswerable(&recipient, settings).or(blocked.then_some(
                "its correspondent is blocked by the rate limit until a person releases a message",
            )) {
                store.add_event(row.id, "auto-reply-skipped", &format!("{recipient}: {why}"))?;
            // NOTE: An interval of 0 replies to every held message, even
            // two from one sender in the same second.
            } else if !mailbox.auto_reply_interval.is_zero()
                && store.auto_replied_since(&recipient, &since)?
            {
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
            let session = match pool.one(&settings.smtp).await {
                Ok(session) => session,
                Err(err) => {
                    store.add_event(row.id, &format!("{kind}-failed"), &err.to_string())?;
                    report.settle_errors += 1;
                    continue;
                }
            };
            // NOTE: The sender's turn is taken once a session is there to
            // use it, and before sending, so a break after the server took
            // the reply cannot lead to a second one.
            if kind == "auto-reply" {
                store.claim_auto_reply(&recipient)?;
            }
            match session
                .send_own(&recipient, text.as_bytes(), null_sender)
                .await
            {
                Ok(reply) if kind == "notice" => store.record_notice(row.id, &reply)?,
                Ok(reply) => store.record_auto_reply(row.id, &recipient, &reply)?,
                Err(err) => {
                    warn!(mailbox = %mailbox.name, row = row.id, error.message = %err, "cannot send {kind}");
                    // NOTE: A notice refused for its content would be refused
                    // every pass for a day, and one whose reply never came
                    // may have arrived: neither is among the missed notices
                    // the next pass sends.
                    let outcome = match &err {
                        SendError::Permanent { .. } if kind == "notice" => "notice-refused",
                        SendError::Broken {
                            content_sent: true, ..
                        } if kind == "notice" => "notice-unknown",
                        _ if kind == "notice" => "notice-failed",
                        _ => "auto-reply-failed",
                    };
                    store.add_event(row.id, outcome, &err.to_string())?;
                    report.settle_errors += 1;
                    if matches!(err, SendError::Broken { .. }) || session.reset().await.is_err() {
                        pool.discard_first();
                    }
                }
            }
        }
    }
    Ok(())
}

/// Forwards one held message after a person decided it may go: finds it on
/// the IMAP server (in the held folder when it was moved), checks it is
/// the same bytes, redirects it, marks it forwarded, sets `$Forwarded`, and
/// lifts a rate-limit block on its correspondent.
///
/// # Errors
/// The row is missing or not held, the message is no longer on the
/// server, or IMAP, SMTP or the database fail.
pub async fn release(settings: &Settings, id: i64, force: bool) -> anyhow::Result<String> {
    let _lock = PassLock::acquire(&settings.store_path)?;
    // NOTE: A release sends the message; as in a pass, nothing is sent
    // that the log might not have room to record.
    super::ensure_log_space(settings)?;
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
    // NOTE: A release whose reply never came may have delivered the
    // message: a second one needs the operator to have looked.
    if !force
        && store
            .events(id)?
            .iter()
            .any(|event| event.kind == "release-unknown")
    {
        anyhow::bail!(
            "an earlier release of message {id} sent it, but the SMTP server's reply never came, so it may already be at {}: look there for Resent-Message-ID {}, and release it again with --force only if it is not",
            settings
                .mailboxes
                .iter()
                .find(|mailbox| mailbox.name == row.mailbox)
                .map_or("the helpdesk", |mailbox| mailbox.forward_to.as_str()),
            row.resent_message_id
                .as_deref()
                .unwrap_or("(none recorded)")
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
    // NOTE: Only a message of the logged size can be this one, and the
    // candidates are fetched one at a time: a search through a whole folder
    // (a message without Message-ID, moved) holds one message in memory.
    let candidates: Vec<u32> = if candidates.len() <= 1 {
        candidates
    } else {
        source
            .sizes(&candidates)
            .await?
            .into_iter()
            .filter(|(_, size)| *size == row.size)
            .map(|(uid, _)| uid)
            .collect()
    };
    let mut found = None;
    for uid in candidates {
        found = source
            .fetch(&[uid], row.size, row.size)
            .await?
            .into_iter()
            // NOTE: A too-large message was logged from its header block
            // alone, so its hash is the header's.
            .find(|mail| {
                mail::content_hash(&mail.bytes) == row.sha256
                    || mail::content_hash(mail::header_block(&mail.bytes)) == row.sha256
            });
        if found.is_some() {
            break;
        }
    }
    let raw = found.with_context(|| {
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
    // NOTE: A relayed reply held (rate-limited, say) and released later
    // needs the same thread repair it would have had if forwarded at once,
    // or the helpdesk splits the conversation.
    let repair = match mail::parse(&raw.bytes) {
        Some(message) => {
            // NOTE: With the relay, as when it was recorded: the alias, not
            // a relay's shared From, names the correspondent.
            let relay = crate::classify::relay::detect(&message, &settings.extra_relays);
            let keys = crate::thread::keys(&message, relay.as_ref(), &settings.threading.patterns);
            store.plan_release_repair(&row, &keys, mailbox.repair_threading)?
        }
        None => None,
    };
    let mut block = trace::trace_block(&trace::TraceFacts {
        helo_name: &settings.smtp.helo_name,
        imap_host: &mailbox.host,
        mailbox_name: &mailbox.name,
        uid: raw.uid,
        resent_from: &settings.smtp.envelope_from,
        resent_to: &mailbox.forward_to,
        resent_message_id: &resent_id,
        now_unix: clock::unix_now(),
    });
    if let Some(lines) = &repair {
        block.push_str(lines);
    }
    let reply = match session
        .send(&mailbox.forward_to, block.as_bytes(), &raw.bytes)
        .await
    {
        Ok(reply) => reply,
        // NOTE: A break after the content went out may have delivered it:
        // saying it was not taken would invite a second release, a second
        // copy at the helpdesk.
        Err(
            err @ SendError::Broken {
                content_sent: true, ..
            },
        ) => {
            store.add_event(row.id, "release-unknown", &err.to_string())?;
            anyhow::bail!(
                "message {id} was sent, but the SMTP server's reply never came ({err}): it may have reached {} (look for Resent-Message-ID {resent_id} there) before you release it again; it stays held in the log",
                mailbox.forward_to
            );
        }
        Err(err) => {
            store.add_event(row.id, "release-failed", &err.to_string())?;
            anyhow::bail!("the SMTP server did not take message {id}: {err}; it stays held");
        }
    };
    store.mark_released(row.id, &reply)?;
    session.quit().await;
    let mut outcome = format!("released message {id} to {}: {reply}", mailbox.forward_to);
    if let Some(correspondent) = row.correspondent()
        && store.unblock(correspondent)?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_auto_reply_goes_to_our_own_or_to_machinery() {
        let settings = crate::config::example_settings();
        for own in [
            "support@example.zendesk.com",
            "Bridge@Example.com",
            "support@example.com",
        ] {
            assert!(unanswerable(own, &settings).is_some(), "{own}");
        }
        for machinery in [
            "noreply@bank.example",
            "No-Reply+billing@shop.example",
            "do_not_reply@shop.example",
            "MAILER-DAEMON@mx.example",
            "owner-users@lists.example",
            "users-request@lists.example",
            "users-bounces@lists.example",
            "bounces+1234@mail.example",
            "jira-noreply@tracker.example",
            "secure-noreply@bank.example",
            "support+id123@example.zendesk.com",
        ] {
            assert!(unanswerable(machinery, &settings).is_some(), "{machinery}");
        }
        for person in [
            "alice@example.org",
            "nora.reply@example.org",
            "abc_def_123@icloud.com",
            "ra+token@simplelogin.co",
            "business-owner@shop.example",
        ] {
            assert_eq!(unanswerable(person, &settings), None, "{person}");
        }
    }
}
