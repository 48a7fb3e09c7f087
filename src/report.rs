//! Renders the log for people and for scripts.
//!
//! Owns the text tables and JSON Lines of `status`, `messages` and `show`,
//! the summary of a pass, the verdict of `status --check` and the findings
//! of `check-config --connect`.
//! Pure formatting: the rows come from the store, the rest from `worker`.

use std::fmt::Write as _;

use crate::store::{
    CorrespondentRow, DIED_PASS_ENDING, Event, MailboxStatus, MessageRow, ThreadRow,
};
use crate::worker::PassReport;
use crate::worker::probe::{Check, Finding};

/// The findings of `check-config --connect`, one line each under its
/// target, marked `ok`, `warning` or `FAILED`.
pub fn connection_checks(checks: &[Check]) -> String {
    let mut out = String::new();
    for check in checks {
        let _ = writeln!(out, "{}", terminal_safe(&check.target));
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
        match &status.retired_at {
            Some(since) => {
                let _ = writeln!(
                    out,
                    "mailbox {} (not in the config since {since})",
                    status.name
                );
            }
            None => {
                let _ = writeln!(out, "mailbox {}", status.name);
            }
        }
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

/// The verdict of `status --check`, in the terms of Nagios-style monitoring
/// plugins, whose exit codes deskbridge's own already match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Ok,
    Warning,
    Critical,
}

impl Health {
    /// 0, 1 or 2, as monitoring systems read a check's exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Health::Ok => 0,
            Health::Warning => 1,
            Health::Critical => 2,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Health::Ok => "OK",
            Health::Warning => "WARNING",
            Health::Critical => "CRITICAL",
        }
    }
}

/// A pass at work for longer than this (or than `max_age`, if longer) is
/// stuck; `run` reports a lock held this long as stuck too.
pub const STUCK_AFTER_SECS: i64 = 3600;

/// How far ahead of this machine's clock a time in the log may be before
/// the check distrusts it: a clock stepped back would otherwise make old
/// passes look recent.
const CLOCK_SLACK_SECS: i64 = 60;

/// Judges whether the scheduled passes are running and succeeding, for a
/// monitoring system: each mailbox in `expected` (the config's; when
/// `None`, those in the log that the last pass's config still named) needs a pass that finished within `max_age_secs` of
/// `now`, and without error. A pass at work counts as fresh for every
/// mailbox (they are worked on one after another) until it is stuck.
/// `lock_held` says whether a pass holds the pass lock now (`None`: not
/// known); when none does, a start without a finish is a pass that died.
/// A failed message is a warning. The first line is the plugin-style
/// summary; one line per mailbox follows.
pub fn health_check(
    statuses: &[MailboxStatus],
    expected: Option<&[String]>,
    (max_age_secs, now): (i64, i64),
    lock_held: Option<bool>,
) -> (Health, String) {
    let names: Vec<&str> = match expected {
        Some(names) => names.iter().map(String::as_str).collect(),
        None => statuses
            .iter()
            .filter(|status| status.retired_at.is_none())
            .map(|status| status.name.as_str())
            .collect(),
    };
    let clock = Clock {
        now,
        max_age_secs,
        stuck_after_secs: max_age_secs.max(STUCK_AFTER_SECS),
        lock_held,
    };
    let pass_at_work = lock_held != Some(false)
        && statuses
            .iter()
            .filter(|status| names.contains(&status.name.as_str()))
            .any(|status| {
                running_since(status).is_some_and(|started| {
                    clock.age(started).is_some_and(|age| {
                        -CLOCK_SLACK_SECS <= age && age <= clock.stuck_after_secs
                    })
                })
            });
    let mut worst = Health::Ok;
    let mut problems = Vec::new();
    let mut lines = String::new();
    for name in &names {
        let status = statuses.iter().find(|status| status.name == *name);
        let (health, verdict) = mailbox_health(status, &clock, pass_at_work);
        let verdict = one_plugin_line(&verdict);
        if health != Health::Ok {
            problems.push(format!("{name}: {verdict}"));
        }
        worst = worst.max(health);
        let held = status
            .and_then(|status| status.counts.iter().find(|(state, _)| state == "held"))
            .map_or(0, |(_, count)| *count);
        let _ = writeln!(
            lines,
            "{:<8} {name}: {verdict}; {held} held",
            health.label()
        );
    }
    let summary = if names.is_empty() {
        worst = Health::Critical;
        "no mailbox has been worked on yet".to_owned()
    } else if problems.is_empty() {
        format!(
            "{} mailbox(es) passed within the last {}",
            names.len(),
            age_text(max_age_secs)
        )
    } else {
        problems.join("; ")
    };
    (
        worst,
        format!("DESKBRIDGE {} - {summary}\n{lines}", worst.label()),
    )
}

/// What a verdict is judged against: the time, the limits, and whether a
/// pass holds the lock.
struct Clock {
    now: i64,
    max_age_secs: i64,
    stuck_after_secs: i64,
    lock_held: Option<bool>,
}

impl Clock {
    /// Seconds since a time in the log; `None` when it cannot be read.
    fn age(&self, at: &str) -> Option<i64> {
        crate::clock::parse_rfc3339(at).map(|unix| self.now.saturating_sub(unix))
    }

    /// `2026-11-29T12:00:00Z, 3m ago`.
    fn ago(&self, at: &str) -> String {
        match self.age(at) {
            Some(age) if 0 <= age => format!("{at}, {} ago", age_text(age)),
            _ => at.to_owned(),
        }
    }
}

/// The start of a pass at work now (or one that died since), if the last
/// start came after the last finish; both are written in one sortable form.
fn running_since(status: &MailboxStatus) -> Option<&str> {
    let started = status.last_pass_started_at.as_deref()?;
    status
        .last_pass_finished_at
        .as_deref()
        .is_none_or(|finished| finished < started)
        .then_some(started)
}

fn mailbox_health(
    status: Option<&MailboxStatus>,
    clock: &Clock,
    pass_at_work: bool,
) -> (Health, String) {
    let Some(status) = status else {
        return if pass_at_work {
            (
                Health::Ok,
                "not worked on yet; a pass is at work".to_owned(),
            )
        } else {
            (Health::Critical, "no pass has run".to_owned())
        };
    };
    let times = [
        status.last_pass_started_at.as_deref(),
        status.last_pass_finished_at.as_deref(),
    ];
    if let Some(ahead) = times
        .into_iter()
        .flatten()
        .find(|at| clock.age(at).is_some_and(|age| age < -CLOCK_SLACK_SECS))
    {
        return (
            Health::Critical,
            format!("the log says {ahead}, ahead of this machine's clock: was the clock set back?"),
        );
    }
    let running = running_since(status);
    if let Some(started) = running
        && clock.lock_held == Some(false)
    {
        return (
            Health::Critical,
            format!(
                "the pass started {} ended without finishing (killed, or the machine stopped)",
                clock.ago(started)
            ),
        );
    }
    if let Some(started) = running
        && clock
            .age(started)
            .is_none_or(|age| clock.stuck_after_secs < age)
    {
        return (
            Health::Critical,
            format!(
                "a pass started {} has not finished: is it stuck?",
                clock.ago(started)
            ),
        );
    }
    let Some(finished) = status.last_pass_finished_at.as_deref() else {
        return match running {
            Some(started) => (
                Health::Ok,
                format!("the first pass is at work, since {}", clock.ago(started)),
            ),
            None => (Health::Critical, "no pass has finished yet".to_owned()),
        };
    };
    // NOTE: A long pass (a backlog, or another mailbox's) is not a stopped
    // timer; one that runs too long is caught above.
    if !pass_at_work
        && clock
            .age(finished)
            .is_none_or(|age| clock.max_age_secs < age)
    {
        return (
            Health::Critical,
            format!(
                "no pass finished within {} (the last at {}): is the timer or cron job running?",
                age_text(clock.max_age_secs),
                clock.ago(finished)
            ),
        );
    }
    let outcome = status.last_pass_outcome.as_deref().unwrap_or("");
    // NOTE: A pass that died is recorded when the next one reaches its
    // mailbox; while that one works, the death is history, not the state.
    let died_before_this_pass =
        running.is_some() && clock.lock_held == Some(true) && outcome.ends_with(DIED_PASS_ENDING);
    let health = if outcome.starts_with("error") && !died_before_this_pass {
        Health::Critical
    } else if outcome == "ok" {
        Health::Ok
    } else {
        Health::Warning
    };
    let mut verdict = format!("last pass {}: {outcome}", clock.ago(finished));
    if let Some(started) = running {
        verdict.push_str(&format!("; a pass at work since {}", clock.ago(started)));
    }
    (health, verdict)
}

/// A verdict as part of one plugin output line: outcomes quote servers'
/// replies, whose line breaks would end the line and whose `|` would
/// start the plugin's performance data.
fn one_plugin_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| match c {
            '\r' | '\n' => ' ',
            '|' => '/',
            other => other,
        })
        .collect();
    terminal_safe(&flat).into_owned()
}

/// `90s`, `12m`, `5h`, `3d`: the largest whole unit.
fn age_text(secs: i64) -> String {
    if secs < 120 {
        format!("{secs}s")
    } else if secs < 7200 {
        format!("{}m", secs / 60)
    } else if secs < 172_800 {
        format!("{}h", secs / 3600)
    } else {
        format!("{}d", secs / 86_400)
    }
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

/// Control characters other than line feed and tab, and the bidirectional
/// overrides and isolates: what must not reach a terminal as written.
fn terminal_unsafe(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text as the CLI prints it: control characters other than line feed and
/// tab, and the bidirectional overrides, become U+FFFD. Subjects, file
/// names and addresses come from strangers' mail; printed raw, an escape
/// sequence in one could rewrite the terminal (or a Trojan-Source style
/// override reorder what a person reads). JSON goes through
/// [`json_terminal_safe`] instead.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = terminal_unsafe;
    if !text.contains(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| if unsafe_char(c) { '\u{fffd}' } else { c })
            .collect(),
    )
}

/// JSON text as the CLI prints it: the characters [`terminal_safe`]
/// replaces (serde_json leaves DEL, C1 controls and the bidirectional
/// overrides as they are) written as `\uXXXX` escapes instead, which a
/// JSON reader turns back into the very characters. They can stand only
/// inside strings, where such an escape is valid; all are in the BMP.
pub fn json_terminal_safe(json: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = terminal_unsafe;
    if !json.contains(unsafe_char) {
        return std::borrow::Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
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

    /// A mailbox whose last pass started and finished the given number of
    /// seconds before `NOW` (None: never).
    fn pass(
        name: &str,
        started_ago: Option<i64>,
        finished_ago: Option<i64>,
        outcome: &str,
    ) -> MailboxStatus {
        let at = |ago: i64| crate::clock::rfc3339(NOW - ago);
        MailboxStatus {
            name: name.to_owned(),
            uidvalidity: Some(1),
            last_uid: 10,
            last_pass_started_at: started_ago.map(at),
            last_pass_finished_at: finished_ago.map(at),
            last_pass_outcome: finished_ago.map(|_| outcome.to_owned()),
            retired_at: None,
            counts: vec![("held".to_owned(), 3), ("forwarded".to_owned(), 7)],
        }
    }

    const NOW: i64 = 1_795_953_600;
    const FIFTEEN_MINUTES: i64 = 900;

    fn verdict(statuses: &[MailboxStatus], expected: Option<&[String]>) -> (Health, String) {
        health_check(statuses, expected, (FIFTEEN_MINUTES, NOW), None)
    }

    #[test]
    fn json_keeps_every_character_while_staying_terminal_safe() {
        let subject = "Invoice\u{7f} \u{85}evil\u{202e}gpj.exe\u{1b}[2J\ttab";
        let json =
            serde_json::to_string(&serde_json::json!({ "subject": subject })).expect("serialises");
        let printed = json_terminal_safe(&json);
        assert!(
            !printed
                .chars()
                .any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
            "{printed}"
        );
        let back: serde_json::Value = serde_json::from_str(&printed).expect("still JSON");
        assert_eq!(back["subject"], subject);
        assert_eq!(json_terminal_safe("{\"a\":\"plain\"}"), "{\"a\":\"plain\"}");
    }

    #[test]
    fn retired_mailboxes_are_not_expected_without_a_config() {
        let mut removed = pass("old-support", Some(90_000), Some(89_990), "ok");
        removed.retired_at = Some(crate::clock::rfc3339(NOW - 3600));
        let statuses = [pass("support", Some(62), Some(60), "ok"), removed];
        let (health, text) = verdict(&statuses, None);
        assert_eq!(health, Health::Ok, "{text}");
        assert!(!text.contains("old-support"), "{text}");
        // A config that names it again still expects it.
        let expected = ["support".to_owned(), "old-support".to_owned()];
        assert_eq!(verdict(&statuses, Some(&expected)).0, Health::Critical);
        assert!(status_table(&statuses).contains("mailbox old-support (not in the config since "));
    }

    #[test]
    fn health_is_ok_after_a_recent_clean_pass() {
        let (health, text) = verdict(&[pass("support", Some(62), Some(60), "ok")], None);
        assert_eq!(health, Health::Ok);
        assert_eq!(health.exit_code(), 0);
        assert!(
            text.starts_with("DESKBRIDGE OK - 1 mailbox(es) passed within the last 15m\n"),
            "{text}"
        );
        assert!(text.contains("OK       support: last pass "), "{text}");
        assert!(text.contains(", 60s ago: ok; 3 held"), "{text}");
    }

    #[test]
    fn health_is_critical_when_passes_stop_or_fail() {
        let (health, text) = verdict(&[pass("support", Some(7300), Some(7200), "ok")], None);
        assert_eq!(health, Health::Critical);
        assert!(
            text.contains("no pass finished within 15m (the last at ")
                && text.contains(", 2h ago): is the timer or cron job running?"),
            "{text}"
        );

        let (health, text) = verdict(
            &[pass("support", Some(61), Some(60), "error: login refused")],
            None,
        );
        assert_eq!(health, Health::Critical);
        assert!(
            text.starts_with("DESKBRIDGE CRITICAL - support: last pass "),
            "{text}"
        );
        assert!(text.contains("error: login refused"), "{text}");

        let (health, text) = verdict(&[pass("support", Some(3700), Some(4000), "ok")], None);
        assert_eq!(
            health,
            Health::Critical,
            "a pass at work for over an hour is stuck"
        );
        assert!(
            text.contains(", 61m ago has not finished: is it stuck?"),
            "{text}"
        );
        let (health, _) = verdict(&[pass("support", Some(3500), Some(4000), "ok")], None);
        assert_eq!(
            health,
            Health::Ok,
            "a long pass is not stuck before an hour"
        );

        let (health, text) = verdict(&[pass("support", Some(-600), Some(-599), "ok")], None);
        assert_eq!(health, Health::Critical, "times ahead of the clock");
        assert!(text.contains("was the clock set back?"), "{text}");
        let (health, _) = verdict(&[pass("support", Some(-20), Some(-19), "ok")], None);
        assert_eq!(health, Health::Ok, "a little clock skew is fine");

        let expected = ["support".to_owned(), "billing".to_owned()];
        let (health, text) = verdict(
            &[pass("support", Some(61), Some(60), "ok")],
            Some(&expected),
        );
        assert_eq!(
            health,
            Health::Critical,
            "a configured mailbox never worked on"
        );
        assert!(text.contains("billing: no pass has run"), "{text}");

        let (health, _) = verdict(&[], None);
        assert_eq!(health, Health::Critical, "an empty log");
    }

    #[test]
    fn health_warns_on_failed_messages_and_takes_the_worst_mailbox() {
        let statuses = [
            pass("billing", Some(61), Some(60), "partial: 2 failed"),
            pass("support", Some(61), Some(60), "ok"),
        ];
        let (health, text) = verdict(&statuses, None);
        assert_eq!(health, Health::Warning);
        assert_eq!(health.exit_code(), 1);
        assert!(text.contains("WARNING  billing:"), "{text}");
        assert!(text.contains("OK       support:"), "{text}");

        let with_stale = [statuses[0].clone(), pass("support", None, Some(3600), "ok")];
        assert_eq!(verdict(&with_stale, None).0, Health::Critical);
    }

    #[test]
    fn health_counts_a_pass_at_work_on_one_mailbox_for_all() {
        // The pass is on "billing"; "support", worked on after it, last
        // finished half an hour ago, and "new" was just added to the config.
        let statuses = [
            pass("billing", Some(300), Some(1800), "ok"),
            pass("support", Some(1810), Some(1800), "ok"),
        ];
        let expected = ["billing".to_owned(), "support".to_owned(), "new".to_owned()];
        let (health, text) = verdict(&statuses, Some(&expected));
        assert_eq!(health, Health::Ok, "{text}");
        assert!(
            text.contains("new: not worked on yet; a pass is at work"),
            "{text}"
        );
        let (health, _) = verdict(&statuses[1..], None);
        assert_eq!(
            health,
            Health::Critical,
            "without a pass at work, 30m is stale"
        );
    }

    #[test]
    fn health_takes_an_unfinished_start_without_the_lock_for_a_dead_pass() {
        let statuses = [pass("support", Some(120), Some(1800), "ok")];
        let (health, text) = health_check(&statuses, None, (FIFTEEN_MINUTES, NOW), Some(false));
        assert_eq!(health, Health::Critical, "{text}");
        assert!(text.contains(", 2m ago ended without finishing"), "{text}");
        let (health, text) = health_check(&statuses, None, (FIFTEEN_MINUTES, NOW), Some(true));
        assert_eq!(health, Health::Ok, "a pass holds the lock: {text}");
        // A dead pass on a mailbox the config no longer has keeps no other
        // mailbox fresh.
        let statuses = [
            pass("old", Some(120), Some(1800), "ok"),
            pass("support", Some(1810), Some(1800), "ok"),
        ];
        let expected = ["support".to_owned()];
        assert_eq!(verdict(&statuses, Some(&expected)).0, Health::Critical);
    }

    #[test]
    fn health_warns_of_a_dead_pass_while_the_next_one_works() {
        // The next pass recorded the dead one's outcome when it began.
        let died = format!(
            "error: the pass started at {}{DIED_PASS_ENDING}",
            crate::clock::rfc3339(NOW - 600)
        );
        let working = [pass("support", Some(30), Some(600), &died)];
        let (health, text) = health_check(&working, None, (FIFTEEN_MINUTES, NOW), Some(true));
        assert_eq!(health, Health::Warning, "{text}");
        assert!(text.contains("a pass at work since"), "{text}");
        // Once no pass is at work, the death is the last word again.
        let finished = [pass("support", Some(600), Some(600), &died)];
        let (health, text) = health_check(&finished, None, (FIFTEEN_MINUTES, NOW), Some(false));
        assert_eq!(health, Health::Critical, "{text}");
        // Any other error stays critical while a pass works.
        let failed = [pass("support", Some(30), Some(600), "error: login refused")];
        let (health, text) = health_check(&failed, None, (FIFTEEN_MINUTES, NOW), Some(true));
        assert_eq!(health, Health::Critical, "{text}");
    }

    #[test]
    fn health_keeps_server_text_on_one_line() {
        let (_, text) = verdict(
            &[pass(
                "support",
                Some(61),
                Some(60),
                "error: the server said: no\r\n| load=9 \u{1b}[2J",
            )],
            None,
        );
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.ends_with("error: the server said: no  / load=9 \u{fffd}[2J"),
            "{first}"
        );
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn health_lets_a_pass_at_work_finish() {
        // A first pass through a backlog, 5 minutes in.
        let (health, text) = verdict(&[pass("support", Some(300), None, "")], None);
        assert_eq!(health, Health::Ok, "{text}");
        assert!(text.contains("the first pass is at work, since "), "{text}");
        // A long pass after an old one: not stale while it is within max_age.
        let (health, text) = verdict(&[pass("support", Some(600), Some(1200), "ok")], None);
        assert_eq!(health, Health::Ok, "{text}");
        assert!(text.contains("a pass at work since "), "{text}");
    }

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
