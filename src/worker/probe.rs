//! `check-config --connect`: opens each connection a pass would open, the
//! way a pass opens it (same TLS, certificate checks and credentials), and
//! asks each server what a pass will need of it. It changes nothing: the
//! log is neither opened nor locked, folders are opened read-only
//! (EXAMINE), and the SMTP test of each envelope ends with RSET before
//! DATA, so no message is sent, flagged or moved.

use std::time::Instant;

use crate::config::{AfterForward, AfterHold, AuthMethod, MailboxSettings, Settings};
use crate::sink::EnvelopeProbe;
use crate::{sink, source, store};

/// One finding about one connection or place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Ok(String),
    /// Works, but not as well as it could: a pass will still run.
    Warning(String),
    /// A pass would fail here.
    Failed(String),
}

impl Finding {
    /// A failure, told with the chain of its causes, as the CLI prints
    /// errors.
    fn failure(err: impl std::error::Error + Send + Sync + 'static) -> Finding {
        Finding::Failed(format!("{:#}", anyhow::Error::from(err)))
    }
}

/// The findings for one target: the log, the SMTP server, or a mailbox.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked, e.g. `smtp mail.example.com:465`.
    pub target: String,
    pub findings: Vec<Finding>,
}

impl Check {
    /// Whether a pass would fail on something found here.
    pub fn failed(&self) -> bool {
        self.findings
            .iter()
            .any(|finding| matches!(finding, Finding::Failed(_)))
    }
}

/// Checks the log's folder, the SMTP server and every mailbox, in the
/// config's order. Every target is checked even when an earlier one
/// failed, so one run shows everything that needs fixing.
pub async fn probe(settings: &Settings) -> Vec<Check> {
    let mut checks = vec![check_log(settings), check_smtp(settings).await];
    for mailbox in &settings.mailboxes {
        checks.push(check_mailbox(mailbox).await);
    }
    checks
}

fn check_log(settings: &Settings) -> Check {
    let path = &settings.store_path;
    let mut findings = Vec::new();
    match store::log_location(path) {
        Err(err) => findings.push(Finding::Failed(format!(
            "cannot use the folder of {}: {err}",
            path.display()
        ))),
        Ok(location) => {
            findings.push(Finding::Ok(if location.exists {
                "the log exists".to_owned()
            } else {
                "no log yet: the first pass creates it".to_owned()
            }));
            if !location.folder_writable {
                findings.push(Finding::Failed(
                    "this user cannot create files in the log's folder (the log's -wal and -shm files and the lock file live there): run as the user that owns it".to_owned(),
                ));
            }
            for file in location.unwritable {
                findings.push(Finding::Failed(format!(
                    "this user cannot read and write {}: run as the user that owns it",
                    file.display()
                )));
            }
        }
    }
    if settings.store_min_free == 0 {
        findings.push(Finding::Ok(
            "free space not checked (min_free_mb = 0)".to_owned(),
        ));
        return Check {
            target: format!("log {}", path.display()),
            findings,
        };
    }
    match (settings.log_free_space)(path) {
        Ok(free) if settings.store_min_free <= free => findings.push(Finding::Ok(format!(
            "{} MiB free (min_free_mb = {})",
            free >> 20,
            settings.store_min_free >> 20
        ))),
        Ok(free) => findings.push(Finding::Failed(format!(
            "{} KiB free, under min_free_mb = {}: a pass would send nothing",
            free >> 10,
            settings.store_min_free >> 20
        ))),
        Err(err) => findings.push(Finding::Warning(format!(
            "cannot read the free space of its file system: {err}"
        ))),
    }
    Check {
        target: format!("log {}", path.display()),
        findings,
    }
}

async fn check_smtp(settings: &Settings) -> Check {
    let smtp = &settings.smtp;
    let target = format!("smtp {}:{}", smtp.host, smtp.port);
    let started = Instant::now();
    let mut sink = match sink::connect(smtp).await {
        Ok(sink) => sink,
        Err(err) => {
            return Check {
                target,
                findings: vec![Finding::failure(err)],
            };
        }
    };
    let login = match &smtp.credentials {
        Some(credentials) => format!(
            "logged in as {} ({})",
            credentials.username,
            method_name(credentials.method)
        ),
        None => "no login configured".to_owned(),
    };
    let mut findings = vec![Finding::Ok(format!(
        "{} and {login} in {} ms",
        smtp.tls,
        started.elapsed().as_millis()
    ))];
    findings.extend(ehlo_findings(settings, &sink));

    // NOTE: Held notices go to the forward_to addresses from envelope_from,
    // as redirects do; auto-replies go from the null sender to senders,
    // whom no check can name in advance, so only MAIL FROM:<> is tried.
    let mut envelopes: Vec<(bool, Option<&str>)> = Vec::new();
    if settings.mailboxes.iter().any(|mailbox| mailbox.auto_reply) {
        envelopes.push((true, None));
    }
    let mut recipients: Vec<&str> = settings
        .mailboxes
        .iter()
        .map(|mailbox| mailbox.forward_to.as_str())
        .collect();
    recipients.sort_unstable();
    recipients.dedup();
    envelopes.extend(
        recipients
            .into_iter()
            .map(|recipient| (false, Some(recipient))),
    );

    let from = &smtp.envelope_from;
    let mut not_checked: Option<String> = None;
    for (null_sender, recipient) in envelopes {
        let what = match recipient {
            Some(recipient) => format!("mail from <{from}> to <{recipient}>"),
            None => "mail from the null sender <> (auto-replies)".to_owned(),
        };
        if let Some(why) = &not_checked {
            findings.push(Finding::Failed(format!("{what}: not checked, {why}")));
            continue;
        }
        match sink.probe_envelope(null_sender, recipient).await {
            Ok(EnvelopeProbe::Accepted(reply)) => findings.push(Finding::Ok(format!(
                "takes {what} ({reply}); reset before DATA, nothing sent"
            ))),
            Ok(EnvelopeProbe::SenderRefused(err)) if null_sender => {
                findings.push(Finding::Failed(format!(
                    "refuses {what}: {err}; allow it, or set auto_reply = false"
                )));
            }
            Ok(EnvelopeProbe::SenderRefused(err)) => {
                findings.push(Finding::Failed(format!(
                    "refuses envelope_from <{from}>: {err}; it must be an address this login may send as"
                )));
                not_checked = Some("because the server refused envelope_from".to_owned());
            }
            Ok(EnvelopeProbe::RecipientRefused(err @ sink::SendError::Temporary { .. })) => {
                findings.push(Finding::Failed(format!(
                    "defers {what} (4xx): {err}; a pass would keep such mail and try again until give_up_after, so if this lasts, the server's policy refuses it"
                )));
            }
            Ok(EnvelopeProbe::RecipientRefused(err)) => {
                findings.push(Finding::Failed(format!("refuses {what}: {err}")));
            }
            Err(err) => {
                findings.push(Finding::Failed(format!("{what}: {err}")));
                not_checked = Some("because the session broke".to_owned());
            }
        }
    }
    if not_checked.is_none() {
        sink.quit().await;
    }
    Check { target, findings }
}

/// What the server's EHLO told: pipelining, and its size limit against
/// the largest message a mailbox forwards.
fn ehlo_findings(settings: &Settings, sink: &sink::SmtpSink) -> Vec<Finding> {
    let mut findings = Vec::new();
    if !sink.pipelines() {
        findings.push(Finding::Warning(
            "no PIPELINING: each message costs an extra round trip".to_owned(),
        ));
    }
    if let Some(limit) = sink.size_limit() {
        // A redirect is the message plus the trace block deskbridge adds.
        let largest = settings
            .mailboxes
            .iter()
            .map(|mailbox| mailbox.max_message_bytes.saturating_add(TRACE_ALLOWANCE))
            .max()
            .unwrap_or(0);
        if limit < largest {
            findings.push(Finding::Warning(format!(
                "takes messages up to {} KiB, less than max_message_mb allows: larger ones will fail there instead of being held as too-large; lower max_message_mb below the server's limit",
                limit >> 10
            )));
        } else {
            findings.push(Finding::Ok(format!(
                "takes messages up to {} KiB",
                limit >> 10
            )));
        }
    }
    findings
}

/// Room for the trace block on top of a message, in the size comparison.
const TRACE_ALLOWANCE: u64 = 4096;

async fn check_mailbox(mailbox: &MailboxSettings) -> Check {
    let target = format!(
        "mailbox {} ({}:{})",
        mailbox.name, mailbox.host, mailbox.port
    );
    let started = Instant::now();
    let mut session = match source::connect(mailbox).await {
        Ok(session) => session,
        Err(err) => {
            return Check {
                target,
                findings: vec![Finding::failure(err)],
            };
        }
    };
    let mut findings = vec![Finding::Ok(format!(
        "{} and logged in as {} ({}) in {} ms",
        mailbox.tls,
        mailbox.credentials.username,
        method_name(mailbox.credentials.method),
        started.elapsed().as_millis()
    ))];
    // NOTE: EXAMINE reports no PERMANENTFLAGS, so whether the folder keeps
    // keywords shows only in a pass, which SELECTs it and warns.
    match session.examine_path(&mailbox.folder).await {
        Ok(folder) => findings.push(Finding::Ok(format!(
            "folder {}: {} messages, UIDVALIDITY {}",
            mailbox.folder, folder.exists, folder.uidvalidity
        ))),
        Err(err) => findings.push(Finding::failure(err)),
    }
    let mut destinations = Vec::new();
    if mailbox.after_forward == AfterForward::Move {
        destinations.push(("forwarded_folder", &mailbox.forwarded_folder));
    }
    if mailbox.after_hold == AfterHold::Move {
        destinations.push(("held_folder", &mailbox.held_folder));
    }
    let moves = !destinations.is_empty();
    for (key, path) in destinations {
        let folder = session.server_folder(path);
        let name = if folder == *path {
            folder.clone()
        } else {
            format!("{path} ({folder} on this server)")
        };
        match session.folder_exists(&folder).await {
            Ok(true) => findings.push(Finding::Ok(format!("{key} {name} exists"))),
            Ok(false) => findings.push(Finding::Ok(format!(
                "{key} {name} does not exist yet: the first move creates it"
            ))),
            Err(err) => {
                findings.push(Finding::failure(err));
            }
        }
    }
    if moves && !session.can_move() {
        findings.push(Finding::Warning(if session.can_uid_expunge() {
            "no MOVE: a move is a copy, then a delete of the original".to_owned()
        } else {
            "no MOVE and no UIDPLUS: a move copies the message and only marks the original \\Deleted; it goes at the folder's next expunge".to_owned()
        }));
    }
    session.logout().await;
    Check { target, findings }
}

fn method_name(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::Password => "password",
        AuthMethod::Xoauth2 => "XOAUTH2",
    }
}
