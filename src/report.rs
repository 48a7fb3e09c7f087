//! Renders the log for people and for scripts.
//!
//! Owns the text tables and JSON Lines of `status`, `messages` and `show`,
//! the summary of a pass and the findings of `check-config --connect`.
//! Pure formatting: the rows come from the store, the rest from `worker`.

use std::fmt::Write as _;

use crate::store::{CorrespondentRow, Event, MailboxStatus, MessageRow, ThreadRow};
use crate::worker::PassReport;
use crate::worker::probe::{Check, Finding};

/// The findings of `check-config --connect`, one line each under its
/// target, marked `ok`, `warning` or `FAILED`.
pub fn connection_checks(checks: &[Check]) -> String {
    let mut out = String::new();
    for check in checks {
        let _ = writeln!(out, "{}", check.target);
        for finding in &check.findings {
            let (mark, text) = match finding {
                Finding::Ok(text) => ("ok     ", text),
                Finding::Warning(text) => ("warning", text),
                Finding::Failed(text) => ("FAILED ", text),
            };
            // NOTE: Findings quote servers' replies, which no one vetted.
            let _ = writeln!(out, "  {mark} {}", terminal_safe(text));
        }
    }
    let failed = checks.iter().filter(|check| check.failed()).count();
    if failed == 0 {
        out.push_str("every connection works; nothing was sent, changed or logged\n");
    } else {
        let _ = writeln!(
            out,
            "{failed} of {} checks failed (see FAILED above); nothing was sent, changed or logged",
            checks.len()
        );
    }
    out
}

/// One line per mailbox after a pass.
pub fn pass_summary(report: &PassReport) -> String {
    let mut out = String::new();
    for mailbox in &report.mailboxes {
        match &mailbox.error {
            Some(error) => {
                let _ = writeln!(out, "{}: not processed: {error}", mailbox.name);
            }
            None => {
                let _ = writeln!(
                    out,
                    "{}: fetched {}, forwarded {}, held {}, skipped {}, failed {}, deferred {}{}{}",
                    mailbox.name,
                    mailbox.fetched,
                    mailbox.forwarded,
                    mailbox.held,
                    mailbox.skipped,
                    mailbox.failed,
                    mailbox.deferred,
                    if 0 < mailbox.settle_errors {
                        format!(", {} settle errors", mailbox.settle_errors)
                    } else {
                        String::new()
                    },
                    if 0 < mailbox.unfetched {
                        format!(
                            ", {} refused by the IMAP server (left in the folder; see the warnings)",
                            mailbox.unfetched
                        )
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    if report.interrupted {
        out.push_str(
            "pass interrupted by a signal: nothing was lost; what is left is done by the next pass\n",
        );
    }
    out
}

/// `deskbridge status` as text.
pub fn status_table(statuses: &[MailboxStatus]) -> String {
    if statuses.is_empty() {
        return "no pass has run yet\n".to_owned();
    }
    let mut out = String::new();
    for status in statuses {
        let _ = writeln!(out, "mailbox {}", status.name);
        let _ = writeln!(
            out,
            "  last pass   {} .. {}  {}",
            status.last_pass_started_at.as_deref().unwrap_or("never"),
            status
                .last_pass_finished_at
                .as_deref()
                .unwrap_or("(unfinished)"),
            status.last_pass_outcome.as_deref().unwrap_or("")
        );
        let _ = writeln!(
            out,
            "  checkpoint  UIDVALIDITY {} last UID {}",
            status
                .uidvalidity
                .map_or_else(|| "-".to_owned(), |value| value.to_string()),
            status.last_uid
        );
        let counts: Vec<String> = status
            .counts
            .iter()
            .map(|(state, count)| format!("{state} {count}"))
            .collect();
        let _ = writeln!(out, "  messages    {}", counts.join(", "));
    }
    out
}

/// `deskbridge messages` as an aligned table, newest first.
pub fn messages_table(rows: &[MessageRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6}  {:<10} {:>6}  {:<9}  {:<20}  {:<28}  SUBJECT",
        "ID", "MAILBOX", "UID", "STATE", "REASON", "FROM"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:>6}  {:<10} {:>6}  {:<9}  {:<20}  {:<28}  {}",
            row.id,
            clip(&row.mailbox, 10),
            row.uid,
            row.state,
            clip(row.reason.as_deref().unwrap_or("-"), 20),
            clip(row.from.as_deref().unwrap_or("-"), 28),
            clip(row.subject.as_deref().unwrap_or(""), 60),
        );
    }
    out
}

/// Text as the CLI prints it: control characters other than line feed and
/// tab, and the bidirectional overrides, become U+FFFD. Subjects, file
/// names and addresses come from strangers' mail; printed raw, an escape
/// sequence in one could rewrite the terminal (or a Trojan-Source style
/// override reorder what a person reads). JSON already escapes controls.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.contains(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| if unsafe_char(c) { '\u{fffd}' } else { c })
            .collect(),
    )
}

/// One JSON object (no newline) for a message row.
pub fn message_json(row: &MessageRow) -> String {
    serde_json::to_string(row).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
}

/// One `deskbridge inspect` line (no newline) for a classified file.
pub fn inspect_json(
    file: &str,
    classification: &crate::classify::Classification,
    message_id: Option<&str>,
) -> String {
    let relay = classification.relay.as_ref();
    serde_json::json!({
        "file": file,
        "decision": classification.decision.action.as_str(),
        "reason": classification.decision.reason.map(|reason| reason.as_str()),
        "class": classification.class.as_str(),
        "relay": relay.map(|relay| relay.name.as_str()),
        "relay_alias": relay.map(|relay| relay.alias.as_str()),
        "reply_token": relay.map(|relay| relay.reply_token.as_str()),
        "message_id": message_id,
        "detail": classification.decision.detail,
    })
    .to_string()
}

/// `deskbridge show ID` as text.
pub fn message_detail(row: &MessageRow, events: &[Event]) -> String {
    let mut out = String::new();
    let fields: [(&str, Option<String>); 21] = [
        ("id", Some(row.id.to_string())),
        ("mailbox", Some(row.mailbox.clone())),
        (
            "uid",
            Some(format!("{} (UIDVALIDITY {})", row.uid, row.uidvalidity)),
        ),
        ("state", Some(row.state.clone())),
        ("reason", row.reason.clone()),
        ("detail", row.detail.clone()),
        ("message-id", row.message_id.clone()),
        ("in-reply-to", row.in_reply_to.clone()),
        ("references", row.references.clone()),
        ("from", row.from.clone()),
        ("reply-to", row.reply_to.clone()),
        ("subject", row.subject.clone()),
        ("date", row.date.clone()),
        ("size", Some(format!("{} bytes", row.size))),
        ("sha256", Some(row.sha256.clone())),
        ("attempts", Some(row.attempts.to_string())),
        ("last error", row.last_error.clone()),
        ("smtp reply", row.smtp_reply.clone()),
        ("resent-msg-id", row.resent_message_id.clone()),
        ("first seen", Some(row.first_seen_at.clone())),
        (
            "settled",
            row.settled_at
                .as_ref()
                .map(|at| format!("{at} ({})", row.settled_as.as_deref().unwrap_or(""))),
        ),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            let _ = writeln!(out, "{name:<14} {value}");
        }
    }
    let _ = writeln!(out, "history");
    for event in events {
        let _ = writeln!(
            out,
            "  {}  {:<13} {}",
            event.at,
            event.kind,
            event.detail.as_deref().unwrap_or("")
        );
    }
    out
}

/// `deskbridge threads` as a table.
pub fn threads_table(rows: &[ThreadRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6}  {:<20}  {:<11}  {:>4}  {:>4}  {:<30}  SUBJECT",
        "ID", "LAST ACTIVITY", "RELAY", "MSGS", "HELD", "CORRESPONDENT"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:>6}  {:<20}  {:<11}  {:>4}  {:>4}  {:<30}  {}",
            row.id,
            row.last_activity,
            clip(row.relay.as_deref().unwrap_or("-"), 11),
            row.messages,
            row.held,
            clip(row.correspondent.as_deref().unwrap_or("-"), 30),
            clip(row.subject.as_deref().unwrap_or(""), 60),
        );
    }
    out
}

/// `deskbridge thread ID`: the conversation in order.
pub fn thread_detail(thread: &ThreadRow, messages: &[MessageRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "thread {}  mailbox {}  relay {}  correspondent {}",
        thread.id,
        thread.mailbox,
        thread.relay.as_deref().unwrap_or("-"),
        thread.correspondent.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "subject {}
{} messages, {} held, started {}, last activity {}
",
        thread.subject.as_deref().unwrap_or("(pruned)"),
        thread.messages,
        thread.held,
        thread.created_at,
        thread.last_activity
    );
    for message in messages {
        let _ = writeln!(
            out,
            "#{:<6} {}  {:<9} {:<20} key {:<13} repaired {}",
            message.id,
            message.first_seen_at,
            message.state,
            message.reason.as_deref().unwrap_or("-"),
            message.thread_key.as_deref().unwrap_or("-"),
            message.repaired.as_deref().unwrap_or("-"),
        );
        let _ = writeln!(
            out,
            "        from {}  <{}>",
            message.from.as_deref().unwrap_or("-"),
            message.message_id.as_deref().unwrap_or("no Message-ID"),
        );
        if let Some(subject) = &message.subject {
            let _ = writeln!(out, "        {subject}");
        }
    }
    out
}

/// `deskbridge correspondents` as text.
pub fn correspondents_table(rows: &[CorrespondentRow]) -> String {
    let mut out = String::new();
    for row in rows {
        let _ = writeln!(
            out,
            "correspondent {}  relay {}  since {}",
            row.id,
            row.relay.as_deref().unwrap_or("-"),
            row.created_at
        );
        for (label, list) in [
            ("aliases", &row.aliases),
            ("tokens", &row.tokens),
            ("addresses", &row.addresses),
        ] {
            if !list.is_empty() {
                let _ = writeln!(out, "  {label:<9} {}", list.join(", "));
            }
        }
        let threads: Vec<String> = row.threads.iter().map(|id| format!("#{id}")).collect();
        let _ = writeln!(out, "  threads   {}", threads.join(" "));
    }
    out
}

/// Shortens to `width` characters with an ellipsis.
fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(width.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_checks_mark_each_finding_and_count_failures() {
        let smtp = Check {
            target: "smtp mail.test:465".to_owned(),
            findings: vec![
                Finding::Ok("implicit TLS".to_owned()),
                Finding::Warning("no PIPELINING".to_owned()),
            ],
        };
        let mailbox = Check {
            target: "mailbox support".to_owned(),
            findings: vec![Finding::Failed("login refused".to_owned())],
        };
        assert!(!smtp.failed(), "a warning is not a failure");
        assert!(mailbox.failed());
        let all_good = connection_checks(std::slice::from_ref(&smtp));
        assert_eq!(
            all_good,
            "smtp mail.test:465\n  ok      implicit TLS\n  warning no PIPELINING\nevery connection works; nothing was sent, changed or logged\n"
        );
        let one_bad = connection_checks(&[smtp, mailbox]);
        assert!(one_bad.contains("mailbox support\n  FAILED  login refused\n"));
        assert!(one_bad.ends_with(
            "1 of 2 checks failed (see FAILED above); nothing was sent, changed or logged\n"
        ));
    }

    #[test]
    fn escapes_and_overrides_never_reach_the_terminal() {
        let hostile = "Invoice \u{1b}]52;c;ZXZpbA==\u{7}paid\u{202e}fdp.exe\n\tnext\r";
        let shown = terminal_safe(hostile);
        assert!(
            !shown.contains(['\u{1b}', '\u{7}', '\u{202e}', '\r']),
            "{shown:?}"
        );
        assert!(shown.contains("\n\tnext"), "{shown:?}");
        assert!(matches!(
            terminal_safe("plain text\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
