//! The TOML config file, read once and validated into [`Settings`].
//!
//! Owns the file's shape (serde structs with `deny_unknown_fields`, so a typo
//! is an error naming the key), the defaults, and secret resolution
//! (`password_env` / `password_file` / `password_command`). Nothing here
//! touches the network. Only [`Settings`] and its parts leave this module.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Errors reading or validating the config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// How a connection is encrypted. There is deliberately no plaintext mode
/// and no opportunistic mode: STARTTLS is required when chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Implicit,
    /// Plain greeting, then STARTTLS, which must succeed before anything else.
    Starttls,
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Implicit => "implicit TLS",
            TlsMode::Starttls => "STARTTLS",
        })
    }
}

/// What happens on the IMAP server to a message once it is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterForward {
    /// Set the keyword `$Forwarded`; leave `\Seen` alone.
    Keyword,
    /// Set `$Forwarded` and `\Seen`.
    KeywordAndSeen,
    /// Set `$Forwarded`, then move the message to `forwarded_folder`.
    Move,
}

/// What happens on the IMAP server to a held message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterHold {
    /// Set the keyword `$DeskbridgeHeld` and leave it in place.
    Keyword,
    /// Set `$DeskbridgeHeld`, then move it to `held_folder`.
    Move,
}

/// A password that never prints itself.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that hands it to a server.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A user name with its resolved password (or access token).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
    pub method: AuthMethod,
}

/// How deskbridge proves who it is, from the `auth` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// IMAP LOGIN; SMTP AUTH PLAIN or LOGIN.
    #[default]
    Password,
    /// SASL XOAUTH2 with an OAuth 2.0 access token as the secret, for
    /// providers that no longer take passwords (Microsoft 365). The token
    /// comes from the same keys as a password, usually `password_command`
    /// running a helper that refreshes it: deskbridge does not run OAuth
    /// flows itself.
    Xoauth2,
}

impl Credentials {
    /// The client's SASL XOAUTH2 message (before base64), the same for
    /// IMAP and SMTP: user and bearer token.
    pub fn xoauth2_response(&self) -> String {
        format!(
            "user={}\x01auth=Bearer {}\x01\x01",
            self.username,
            self.password.expose()
        )
    }
}

/// The validated configuration of one run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Path of the SQLite database, resolved against the config file's folder.
    pub store_path: PathBuf,
    /// Free bytes the log's file system must have before a batch is sent
    /// (0: not checked), from `[store] min_free_mb`.
    pub store_min_free: u64,
    /// Measures the free space of the log's file system
    /// ([`crate::store::free_bytes`]); tests replace it to run out of space
    /// in the middle of a pass.
    #[doc(hidden)]
    pub log_free_space: fn(&Path) -> std::io::Result<u64>,
    pub smtp: SmtpSettings,
    pub mailboxes: Vec<MailboxSettings>,
    pub policy: Policy,
    /// Extra relay domains → relay names, from `[relays]`.
    pub extra_relays: Vec<(String, String)>,
    pub threading: Threading,
}

/// How messages are attached to threads, from `[threading]`.
#[derive(Debug, Clone)]
pub struct Threading {
    /// Built-in helpdesk ticket tokens plus the config's `ticket_patterns`.
    pub patterns: crate::thread::TicketPatterns,
    /// A relayed message without references joins an earlier thread of the
    /// same correspondent with the same normalised subject only if that
    /// thread was active within this window.
    pub relay_window: Duration,
}

/// The loop guard's settings, from `[policy]`.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Whether loop findings (own redirects, helpdesk mail, bounces,
    /// auto-replies) are skipped or held.
    pub loop_action: crate::classify::LoopAction,
    /// The helpdesk's own sender addresses; each mailbox's `forward_to`
    /// counts too.
    pub helpdesk_addresses: Vec<String>,
    /// A correspondent sending more than this many messages within
    /// `rate_limit_window` is held as `rate-limited` until released;
    /// 0 turns the limit off.
    pub rate_limit_messages: u32,
    pub rate_limit_window: Duration,
}

/// Where and how redirected mail is submitted.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// Extra trusted CA certificates (PEM), added to the system roots.
    pub ca_file: Option<PathBuf>,
    pub credentials: Option<Credentials>,
    /// MAIL FROM of every redirect; its domain names deskbridge's own
    /// Resent-Message-IDs, which the loop guard recognises.
    pub envelope_from: String,
    /// The name deskbridge gives in EHLO and in its Received line.
    pub helo_name: String,
    /// Limit for each network operation (connect, TLS, one command).
    pub timeout: Duration,
    /// A message deferred (4xx) for longer than this is marked failed.
    pub give_up_after: Duration,
    /// SMTP sessions used side by side to send a batch.
    pub sessions: usize,
}

/// One support mailbox and the helpdesk address its mail goes to.
#[derive(Debug, Clone)]
pub struct MailboxSettings {
    /// The mailbox's name in the log; unique within the config.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    pub credentials: Credentials,
    pub folder: String,
    pub forward_to: String,
    pub after_forward: AfterForward,
    /// Folder path with `/` as separator; mapped onto the server's delimiter.
    pub forwarded_folder: String,
    pub after_hold: AfterHold,
    pub held_folder: String,
    /// UIDs fetched per FETCH command.
    pub batch_size: usize,
    /// Bytes fetched per FETCH command (a single larger message still goes
    /// alone). With the next batch fetched while one is sent, at most two
    /// batches are in memory.
    pub batch_bytes: u64,
    pub timeout: Duration,
    /// Larger messages are held as `too-large` instead of forwarded.
    pub max_message_bytes: u64,
    /// Send the helpdesk a short notice (no content) per held message.
    pub held_notice: bool,
    /// Send the sender of a held message an RFC 3834 auto-reply.
    pub auto_reply: bool,
    /// From of the auto-reply; defaults to the mailbox's username.
    pub auto_reply_from: String,
    /// At most one auto-reply per sender within this period.
    pub auto_reply_interval: Duration,
    /// Add In-Reply-To/References to a reference-less message attached to
    /// a thread by ticket token or relay and subject (when DKIM allows).
    pub repair_threading: bool,
}

impl MailboxSettings {
    /// The account and folder this mailbox reads, `user@host:port/folder`:
    /// what stays the same when only its name changes.
    ///
    /// Host and username in lower case, INBOX in upper case (IMAP reads it
    /// in any case): a rename that also retypes them is still a rename.
    pub fn account(&self) -> String {
        let folder = if self.folder.eq_ignore_ascii_case("INBOX") {
            "INBOX"
        } else {
            self.folder.as_str()
        };
        format!(
            "{}@{}:{}/{folder}",
            self.credentials.username.to_lowercase(),
            self.host.to_ascii_lowercase(),
            self.port
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    store: RawStore,
    smtp: RawSmtp,
    #[serde(default)]
    mailbox: Vec<RawMailbox>,
    policy: Option<RawPolicy>,
    #[serde(default)]
    relays: std::collections::BTreeMap<String, String>,
    threading: Option<RawThreading>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThreading {
    #[serde(default)]
    ticket_patterns: Vec<String>,
    relay_subject_window_days: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    loop_action: Option<crate::classify::LoopAction>,
    #[serde(default)]
    helpdesk_addresses: Vec<String>,
    rate_limit_messages: Option<u32>,
    rate_limit_minutes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: PathBuf,
    min_free_mb: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: u16,
    tls: TlsMode,
    ca_file: Option<PathBuf>,
    username: Option<String>,
    auth: Option<AuthMethod>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
    envelope_from: String,
    helo_name: Option<String>,
    timeout_secs: Option<u64>,
    give_up_after_hours: Option<u64>,
    sessions: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMailbox {
    name: String,
    host: String,
    port: u16,
    tls: TlsMode,
    ca_file: Option<PathBuf>,
    username: String,
    auth: Option<AuthMethod>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
    folder: Option<String>,
    forward_to: String,
    after_forward: Option<AfterForward>,
    forwarded_folder: Option<String>,
    after_hold: Option<AfterHold>,
    held_folder: Option<String>,
    batch_size: Option<usize>,
    batch_mb: Option<u64>,
    timeout_secs: Option<u64>,
    max_message_mb: Option<u64>,
    held_notice: Option<bool>,
    auto_reply: Option<bool>,
    auto_reply_from: Option<String>,
    auto_reply_interval_hours: Option<u64>,
    repair_threading: Option<bool>,
}

/// The three ways to give a password; at most one is allowed.
#[derive(Debug, Default)]
struct RawPassword {
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
}

const DEFAULT_TIMEOUT_SECS: u64 = 60;
const DEFAULT_GIVE_UP_AFTER_HOURS: u64 = 120;
const DEFAULT_BATCH_SIZE: usize = 200;
const DEFAULT_BATCH_MB: u64 = 16;
/// What a pass's log writes can take: SQLite's WAL grows to about 4 MiB
/// between checkpoints, and the log by a few KiB per message.
const DEFAULT_MIN_FREE_MB: u64 = 16;
const DEFAULT_SMTP_SESSIONS: usize = 4;
const DEFAULT_MAX_MESSAGE_MB: u64 = 50;
const DEFAULT_RATE_LIMIT_MESSAGES: u32 = 30;
const DEFAULT_RATE_LIMIT_MINUTES: u64 = 10;
const DEFAULT_AUTO_REPLY_INTERVAL_HOURS: u64 = 24;
const DEFAULT_RELAY_WINDOW_DAYS: u64 = 30;

/// Reads, parses and validates the config file, resolving every secret.
///
/// # Errors
/// Any unreadable file, unknown key, missing key, bad value or unresolvable
/// secret, with the key named.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses config text; `path` locates relative paths and names the file in
/// errors.
///
/// # Errors
/// As [`load`], without the read.
pub fn parse(text: &str, path: &Path) -> Result<Settings, ConfigError> {
    parse_with_env(text, path, &|name| std::env::var(name).ok())
}

/// Looks up an environment variable for `password_env`.
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// [`parse_with_env`] on the example config, for other modules' tests.
#[cfg(test)]
pub(crate) fn example_settings() -> Settings {
    let env = |name: &str| Some(format!("{name}-secret"));
    parse_with_env(
        include_str!("../config/deskbridge.example.toml"),
        Path::new("/etc/deskbridge/deskbridge.toml"),
        &env,
    )
    .expect("the example config parses")
}

/// [`parse`], reading `password_env` variables through `env`: the tests
/// give theirs without touching the process's environment.
fn parse_with_env(text: &str, path: &Path, env: Env<'_>) -> Result<Settings, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|err| ConfigError::Parse {
        path: path.to_path_buf(),
        message: parse_error_message(&err, text),
    })?;
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let smtp = validate_smtp(raw.smtp, base_dir, env).map_err(invalid)?;
    if raw.mailbox.is_empty() {
        return Err(invalid("no [[mailbox]] is configured".to_owned()));
    }
    let mut mailboxes = Vec::with_capacity(raw.mailbox.len());
    for raw_mailbox in raw.mailbox {
        let mailbox = validate_mailbox(raw_mailbox, base_dir, env).map_err(invalid)?;
        if mailboxes
            .iter()
            .any(|seen: &MailboxSettings| seen.name == mailbox.name)
        {
            return Err(invalid(format!(
                "mailbox name '{}' is used twice",
                mailbox.name
            )));
        }
        mailboxes.push(mailbox);
    }
    // NOTE: A redirect into a polled mailbox comes back with deskbridge's
    // own Resent-Message-ID and is skipped as own-redirect: the helpdesk
    // would silently get nothing.
    for mailbox in &mailboxes {
        if let Some(polled) = mailboxes.iter().find(|other| {
            other
                .credentials
                .username
                .eq_ignore_ascii_case(&mailbox.forward_to)
        }) {
            return Err(invalid(format!(
                "mailbox {}: forward_to {} is the address of mailbox {}, which deskbridge polls: set it to the helpdesk's intake address",
                mailbox.name, mailbox.forward_to, polled.name
            )));
        }
    }
    let raw_policy = raw.policy.unwrap_or_default();
    for address in &raw_policy.helpdesk_addresses {
        check_address("[policy] helpdesk_addresses", address).map_err(invalid)?;
    }
    if raw_policy.rate_limit_minutes == Some(0) {
        // NOTE: A zero-minute window would still count the mail of one
        // batch, which is neither "off" nor a limit anyone means.
        return Err(invalid(
            "[policy] rate_limit_minutes must be at least 1 (rate_limit_messages = 0 turns the limit off)"
                .to_owned(),
        ));
    }
    let mut helpdesk_addresses = raw_policy.helpdesk_addresses;
    helpdesk_addresses.extend(mailboxes.iter().map(|mailbox| mailbox.forward_to.clone()));
    // NOTE: Held notices come from envelope_from, and helpdesks suspend
    // mail from their own addresses (Zendesk's from_support_address); the
    // redirects' bounces would go to the helpdesk too.
    if let Some(helpdesk) = helpdesk_addresses
        .iter()
        .find(|address| address.eq_ignore_ascii_case(&smtp.envelope_from))
    {
        return Err(invalid(format!(
            "[smtp] envelope_from {} is the helpdesk's address {helpdesk} (a forward_to or [policy] helpdesk_addresses): the helpdesk would suspend deskbridge's held notices as its own mail, and bounces would go to it; use an address of your own domain that the helpdesk does not receive",
            smtp.envelope_from
        )));
    }
    let policy = Policy {
        loop_action: raw_policy.loop_action.unwrap_or_default(),
        helpdesk_addresses,
        rate_limit_messages: raw_policy
            .rate_limit_messages
            .unwrap_or(DEFAULT_RATE_LIMIT_MESSAGES),
        rate_limit_window: span(
            "[policy] rate_limit_minutes",
            raw_policy
                .rate_limit_minutes
                .unwrap_or(DEFAULT_RATE_LIMIT_MINUTES),
            60,
        )
        .map_err(invalid)?,
    };
    let mut extra_relays = Vec::new();
    for (domain, name) in raw.relays {
        if domain.is_empty() || !domain.contains('.') || domain.contains(['@', ' ']) {
            return Err(invalid(format!("[relays] '{domain}' is not a domain name")));
        }
        extra_relays.push((domain.to_ascii_lowercase(), name));
    }
    let raw_threading = raw.threading.unwrap_or_default();
    let patterns = crate::thread::TicketPatterns::new(&raw_threading.ticket_patterns)
        .map_err(|err| invalid(format!("[threading] ticket_patterns: {err}")))?;
    let threading = Threading {
        patterns,
        relay_window: span(
            "[threading] relay_subject_window_days",
            raw_threading
                .relay_subject_window_days
                .unwrap_or(DEFAULT_RELAY_WINDOW_DAYS),
            86_400,
        )
        .map_err(invalid)?,
    };
    let min_free_mb = raw.store.min_free_mb.unwrap_or(DEFAULT_MIN_FREE_MB);
    if 1_048_576 < min_free_mb {
        return Err(invalid(
            "[store] min_free_mb must be between 0 (no check) and 1048576".to_owned(),
        ));
    }
    Ok(Settings {
        store_path: base_dir.join(raw.store.path),
        store_min_free: min_free_mb * 1024 * 1024,
        log_free_space: crate::store::free_bytes,
        smtp,
        mailboxes,
        policy,
        extra_relays,
        threading,
    })
}

/// Reads only `[store] path`, for the commands that just query the log and
/// should work without any secret being available.
///
/// # Errors
/// An unreadable or unparsable file.
pub fn load_store_path(path: &Path) -> Result<PathBuf, ConfigError> {
    Ok(load_log_view(path)?.0)
}

/// Reads only `[store] path` and the mailboxes' names, for `status --check`:
/// the mailboxes a monitoring check expects passes for, without secrets.
///
/// # Errors
/// An unreadable or unparsable file.
pub fn load_log_view(path: &Path) -> Result<(PathBuf, Vec<String>), ConfigError> {
    #[derive(Deserialize)]
    struct NameOnly {
        name: String,
    }
    #[derive(Deserialize)]
    struct StoreAndNames {
        store: RawStore,
        #[serde(default)]
        mailbox: Vec<NameOnly>,
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // NOTE: toml's Display quotes the offending line, which may hold a
    // pasted secret; status --check prints this error to monitoring.
    let raw: StoreAndNames = toml::from_str(&text).map_err(|err| ConfigError::Parse {
        path: path.to_path_buf(),
        message: parse_error_message(&err, &text),
    })?;
    Ok((
        path.parent().unwrap_or(Path::new(".")).join(raw.store.path),
        raw.mailbox
            .into_iter()
            .map(|mailbox| mailbox.name)
            .collect(),
    ))
}

fn validate_smtp(raw: RawSmtp, base_dir: &Path, env: Env<'_>) -> Result<SmtpSettings, String> {
    let password = RawPassword {
        password_env: raw.password_env,
        password_file: raw.password_file,
        password_command: raw.password_command,
    };
    check_host("[smtp] host", &raw.host)?;
    check_port("[smtp] port", raw.port)?;
    check_address("[smtp] envelope_from", &raw.envelope_from)?;
    let credentials = match raw.username {
        Some(username) => Some(Credentials {
            password: resolve_password("[smtp]", &password, base_dir, env)?.ok_or_else(|| {
                "[smtp] username is set but none of password_env, password_file or password_command is".to_owned()
            })?,
            username,
            method: raw.auth.unwrap_or_default(),
        }),
        None => {
            if resolve_password("[smtp]", &password, base_dir, env)?.is_some() {
                return Err("[smtp] has a password but no username".to_owned());
            }
            if raw.auth.is_some() {
                return Err("[smtp] has auth but no username".to_owned());
            }
            None
        }
    };
    let helo_name = match raw.helo_name {
        Some(name) => {
            // NOTE: It goes into EHLO and into the Received line of every
            // redirect: a line break there would forge headers.
            let is_host_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
            if !is_host_name {
                return Err(format!(
                    "[smtp] helo_name '{}' is not a host name",
                    name.escape_debug()
                ));
            }
            name
        }
        None => system_hostname(),
    };
    let sessions = raw.sessions.unwrap_or(DEFAULT_SMTP_SESSIONS);
    if !(1..=32).contains(&sessions) {
        return Err("[smtp] sessions must be between 1 and 32".to_owned());
    }
    if let Some(credentials) = &credentials {
        check_login("[smtp]", credentials)?;
    }
    Ok(SmtpSettings {
        sessions,
        host: raw.host,
        port: raw.port,
        tls: raw.tls,
        ca_file: checked_ca_file("[smtp] ca_file", raw.ca_file, base_dir)?,
        credentials,
        envelope_from: raw.envelope_from,
        helo_name,
        timeout: timeout_from("[smtp] timeout_secs", raw.timeout_secs)?,
        give_up_after: match raw.give_up_after_hours {
            // NOTE: 0 is not "never": every deferral would be older than it,
            // so each 4xx would fail its message at once.
            Some(0) => {
                return Err(
                    "[smtp] give_up_after_hours must be at least 1: with 0, a message the server defers (4xx) would fail at once instead of being tried again"
                        .to_owned(),
                );
            }
            hours => span(
                "[smtp] give_up_after_hours",
                hours.unwrap_or(DEFAULT_GIVE_UP_AFTER_HOURS),
                3600,
            )?,
        },
    })
}

fn validate_mailbox(
    raw: RawMailbox,
    base_dir: &Path,
    env: Env<'_>,
) -> Result<MailboxSettings, String> {
    let section = format!("[[mailbox]] '{}'", raw.name);
    let password = RawPassword {
        password_env: raw.password_env,
        password_file: raw.password_file,
        password_command: raw.password_command,
    };
    if raw.name.is_empty()
        || raw
            .name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{section}: name must be non-empty and without spaces"
        ));
    }
    check_host(&format!("{section} host"), &raw.host)?;
    check_port(&format!("{section} port"), raw.port)?;
    check_address(&format!("{section} forward_to"), &raw.forward_to)?;
    let credentials = Credentials {
        password: resolve_password(&section, &password, base_dir, env)?.ok_or_else(|| {
            format!("{section}: one of password_env, password_file or password_command is required")
        })?,
        username: raw.username,
        method: raw.auth.unwrap_or_default(),
    };
    check_login(&section, &credentials)?;
    let batch_size = raw.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
    if !(1..=5000).contains(&batch_size) {
        return Err(format!("{section}: batch_size must be between 1 and 5000"));
    }
    let folder = raw.folder.unwrap_or_else(|| "INBOX".to_owned());
    let forwarded_folder = raw
        .forwarded_folder
        .unwrap_or_else(|| "Deskbridge/Forwarded".to_owned());
    let held_folder = raw
        .held_folder
        .unwrap_or_else(|| "Deskbridge/Held".to_owned());
    for (key, value) in [
        ("folder", &folder),
        ("forwarded_folder", &forwarded_folder),
        ("held_folder", &held_folder),
    ] {
        check_folder(&format!("{section} {key}"), value)?;
    }
    let auto_reply_from = raw
        .auto_reply_from
        .unwrap_or_else(|| credentials.username.clone());
    if raw.auto_reply == Some(true) {
        check_address(&format!("{section} auto_reply_from"), &auto_reply_from)?;
    }
    Ok(MailboxSettings {
        repair_threading: raw.repair_threading.unwrap_or(true),
        held_notice: raw.held_notice.unwrap_or(false),
        auto_reply: raw.auto_reply.unwrap_or(false),
        auto_reply_from,
        auto_reply_interval: span(
            &format!("{section}: auto_reply_interval_hours"),
            raw.auto_reply_interval_hours
                .unwrap_or(DEFAULT_AUTO_REPLY_INTERVAL_HOURS),
            3600,
        )?,
        host: raw.host,
        port: raw.port,
        tls: raw.tls,
        ca_file: checked_ca_file(&format!("{section} ca_file"), raw.ca_file, base_dir)?,
        credentials,
        folder,
        forward_to: raw.forward_to,
        after_forward: raw.after_forward.unwrap_or(AfterForward::Keyword),
        forwarded_folder,
        after_hold: raw.after_hold.unwrap_or(AfterHold::Move),
        held_folder,
        batch_size,
        batch_bytes: mebibytes(
            &format!("{section}: batch_mb"),
            raw.batch_mb.unwrap_or(DEFAULT_BATCH_MB),
        )?,
        timeout: timeout_from(&format!("{section} timeout_secs"), raw.timeout_secs)?,
        max_message_bytes: mebibytes(
            &format!("{section}: max_message_mb"),
            raw.max_message_mb.unwrap_or(DEFAULT_MAX_MESSAGE_MB),
        )?,
        name: raw.name,
    })
}

fn resolve_password(
    section: &str,
    raw: &RawPassword,
    base_dir: &Path,
    env: Env<'_>,
) -> Result<Option<Secret>, String> {
    let given = [
        raw.password_env.is_some(),
        raw.password_file.is_some(),
        raw.password_command.is_some(),
    ]
    .iter()
    .filter(|set| **set)
    .count();
    if 1 < given {
        return Err(format!(
            "{section}: set only one of password_env, password_file and password_command"
        ));
    }
    if let Some(name) = &raw.password_env {
        // NOTE: Checked before it is echoed: a password pasted here by
        // mistake must not reach an error message.
        let is_variable_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !is_variable_name {
            return Err(format!(
                "{section}: password_env must be the name of an environment variable (letters, digits and _), not the password itself"
            ));
        }
        return match env(name) {
            Some(value) if !value.is_empty() => {
                one_line_secret(section, "password_env", value).map(Some)
            }
            _ => Err(format!(
                "{section}: password_env names {name}, which is not set or empty"
            )),
        };
    }
    if let Some(file) = &raw.password_file {
        let file = base_dir.join(file);
        let text = std::fs::read_to_string(&file).map_err(|err| {
            format!(
                "{section}: cannot read password_file {}: {err}",
                file.display()
            )
        })?;
        warn_if_world_readable(&file);
        return one_line_secret(section, "password_file", trim_line_end(text)).map(Some);
    }
    if let Some(command) = &raw.password_command {
        let output = run_with_timeout(command, PASSWORD_COMMAND_TIMEOUT)
            .map_err(|err| format!("{section}: password_command: {err}"))?;
        if !output.status.success() {
            // NOTE: The command's output is not quoted: it may hold the secret.
            return Err(format!(
                "{section}: password_command failed with {}",
                output.status
            ));
        }
        let text = String::from_utf8(output.stdout)
            .map_err(|_| format!("{section}: password_command printed non-UTF-8 output"))?;
        // NOTE: The first line, as isync's PassCmd takes it: `pass show`
        // prints the password first and the entry's other lines after it.
        let first_line = text.lines().next().unwrap_or_default().to_owned();
        return one_line_secret(section, "password_command", first_line).map(Some);
    }
    Ok(None)
}

/// A password command that has not answered by then is killed.
const PASSWORD_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `sh -c command`, killing it after `timeout` (a vault prompt that
/// waits for a person would otherwise hang every scheduled pass).
fn run_with_timeout(command: &str, timeout: Duration) -> Result<std::process::Output, String> {
    use std::io::IsTerminal as _;
    // NOTE: Its own process group, so a timeout ends the whole pipeline
    // (`gpg -d f | head -1`), not only the shell. Not when run by hand from
    // a terminal: a background group would be stopped if the command asks
    // there (`age -d`), and Ctrl-C reaches the foreground group anyway.
    run_in_group(command, timeout, !std::io::stdin().is_terminal())
}

/// [`run_with_timeout`], with the choice of a process group made.
fn run_in_group(
    command: &str,
    timeout: Duration,
    own_group: bool,
) -> Result<std::process::Output, String> {
    use std::os::unix::process::CommandExt as _;
    let mut command = {
        let mut shell = std::process::Command::new("sh");
        shell.arg("-c").arg(command);
        shell
    };
    if own_group {
        command.process_group(0);
    }
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        // Its complaints (a locked vault, a missing key) are what the
        // person reading the error needs; the secret is on stdout.
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|err| format!("cannot run it: {err}"))?;
    let started = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                // NOTE: bash's own kill, which takes a process group (dash's
                // does not, and a kill binary may not be installed; bash is
                // an essential package on Debian).
                if own_group {
                    let _ = std::process::Command::new("bash")
                        .arg("-c")
                        .arg(format!("kill -KILL -- -{}", child.id()))
                        .stderr(std::process::Stdio::null())
                        .status();
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {} s; killed", timeout.as_secs()));
            }
            Err(err) => return Err(format!("cannot wait for it: {err}")),
        }
    }
    child
        .wait_with_output()
        .map_err(|err| format!("cannot read its output: {err}"))
}

/// Checks what goes into a login command: no control characters in the
/// user name (they would end IMAP's LOGIN line or XOAUTH2's fields), and
/// for XOAUTH2 a token of visible characters only, as bearer tokens are.
fn check_login(section: &str, credentials: &Credentials) -> Result<(), String> {
    if credentials.username.is_empty() || credentials.username.contains(char::is_control) {
        return Err(format!(
            "{section}: username must be non-empty and without control characters"
        ));
    }
    if credentials.method == AuthMethod::Xoauth2
        && !credentials
            .password
            .expose()
            .chars()
            .all(|c| c.is_ascii_graphic())
    {
        return Err(format!(
            "{section}: with auth = \"xoauth2\" the secret must be an access token (visible ASCII characters, no spaces)"
        ));
    }
    Ok(())
}

/// A password as given: not empty, and one line. A second line or a NUL
/// would be cut or refused by the server only at login, on every pass.
fn one_line_secret(section: &str, key: &str, value: String) -> Result<Secret, String> {
    if value.is_empty() {
        return Err(format!("{section}: {key} gives an empty password"));
    }
    if value.contains(['\r', '\n', '\0']) {
        return Err(format!(
            "{section}: {key} gives a password with a line break or NUL in it"
        ));
    }
    Ok(Secret(value))
}

/// Warns when a password file can be read by every user of the machine,
/// which mail tools such as fetchmail refuse outright.
fn warn_if_world_readable(file: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(metadata) = std::fs::metadata(file)
        && metadata.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(
            file = %file.display(),
            "password_file is readable by every user of this machine; chmod 600 it"
        );
    }
}

/// A TOML error as its message and position, without the excerpt of the
/// source line that toml adds: that line may hold a password someone put
/// straight into the file.
fn parse_error_message(err: &toml::de::Error, text: &str) -> String {
    let mut message = err.message().trim_end().replace('\n', " ");
    if message.contains("unknown field `password`") {
        message.push_str(
            " (give passwords with password_env, password_file or password_command, never in this file)",
        );
    }
    match err.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// Drops one trailing newline, as `echo` and editors leave one.
fn trim_line_end(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

/// The longest window a config key may give: ten years. The windows are
/// subtracted from the current time in seconds; a larger value would only
/// overflow that, and no mail tool needs more.
const LONGEST_SPAN_SECS: u64 = 10 * 365 * 86_400;

/// `count` units of `unit_secs` seconds, for a key that sets a window.
fn span(key: &str, count: u64, unit_secs: u64) -> Result<Duration, String> {
    match count.checked_mul(unit_secs) {
        Some(secs) if secs <= LONGEST_SPAN_SECS => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "{key} must be at most {} (ten years)",
            LONGEST_SPAN_SECS / unit_secs
        )),
    }
}

/// A size key in MiB, as bytes: 1 to 4096 MiB. Zero is refused rather
/// than read as "no limit", which it is not.
fn mebibytes(key: &str, value: u64) -> Result<u64, String> {
    if !(1..=4096).contains(&value) {
        return Err(format!("{key} must be between 1 and 4096 (MiB)"));
    }
    Ok(value * 1024 * 1024)
}

fn timeout_from(key: &str, secs: Option<u64>) -> Result<Duration, String> {
    let secs = secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
    if !(1..=3600).contains(&secs) {
        return Err(format!("{key} must be between 1 and 3600"));
    }
    Ok(Duration::from_secs(secs))
}

fn check_port(key: &str, port: u16) -> Result<(), String> {
    if port == 0 {
        return Err(format!("{key} must be between 1 and 65535"));
    }
    Ok(())
}

/// Resolves a `ca_file` against the config's folder and reads it once, so
/// `check-config` reports a missing or malformed file instead of every pass.
fn checked_ca_file(
    key: &str,
    file: Option<PathBuf>,
    base_dir: &Path,
) -> Result<Option<PathBuf>, String> {
    let Some(file) = file else {
        return Ok(None);
    };
    let path = base_dir.join(file);
    crate::tls::read_ca_file(&path).map_err(|err| format!("{key}: {err}"))?;
    Ok(Some(path))
}

fn check_host(key: &str, host: &str) -> Result<(), String> {
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(format!("{key} '{host}' is not a host name or IP address"));
    }
    Ok(())
}

/// Accepts a bare `local@domain` address, which is what an SMTP envelope
/// takes; display names and angle brackets are rejected.
pub fn check_address(key: &str, address: &str) -> Result<(), String> {
    let valid = match address.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && domain.contains('.')
                && !address.contains(|c: char| {
                    c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | '"')
                })
        }
        None => false,
    };
    if !valid {
        return Err(format!(
            "{key} '{address}' is not a plain address like name@example.com"
        ));
    }
    Ok(())
}

fn check_folder(key: &str, folder: &str) -> Result<(), String> {
    if folder.is_empty()
        || folder.starts_with('/')
        || folder.ends_with('/')
        || folder.contains("//")
        || folder.contains(|c: char| c.is_control() || c == '"' || c == '\\')
    {
        return Err(format!("{key} '{folder}' is not a valid folder path"));
    }
    // NOTE: IMAP names outside ASCII travel in modified UTF-7 (RFC 3501
    // §5.1.3), which deskbridge does not encode: sent as UTF-8, a folder
    // that exists would not be found, or one would be made with a garbled
    // name. Better said now than on every pass.
    if !folder.is_ascii() {
        return Err(format!(
            "{key} '{folder}': folder names outside ASCII are not supported; choose an ASCII name"
        ));
    }
    Ok(())
}

/// The machine's host name, for EHLO and the Received line.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../config/deskbridge.example.toml");

    /// Parses as if in `/etc/deskbridge`, with the example's two password
    /// variables set (and no other).
    fn parse_example(text: &str) -> Result<Settings, ConfigError> {
        let env = |name: &str| match name {
            "SMTP_PASSWORD" => Some("smtp-secret".to_owned()),
            "SUPPORT_PASSWORD" => Some("imap-secret".to_owned()),
            _ => None,
        };
        parse_with_env(text, Path::new("/etc/deskbridge/deskbridge.toml"), &env)
    }

    #[test]
    fn example_config_is_valid_and_complete() {
        let settings = parse_example(EXAMPLE).expect("example config parses");
        assert_eq!(
            settings.store_path,
            Path::new("/var/lib/deskbridge/deskbridge.db")
        );
        assert_eq!(settings.smtp.tls, TlsMode::Starttls);
        assert_eq!(settings.smtp.port, 587);
        let mailbox = &settings.mailboxes[0];
        assert_eq!(mailbox.folder, "INBOX");
        assert_eq!(mailbox.forward_to, "support@example.zendesk.com");
        assert_eq!(mailbox.credentials.password.expose(), "imap-secret");
    }

    #[test]
    fn envelope_from_must_not_be_a_helpdesk_address() {
        let same = EXAMPLE.replace(
            "envelope_from = \"bridge@example.com\"",
            "envelope_from = \"Support@Example.Zendesk.com\"",
        );
        assert_ne!(same, EXAMPLE, "the example sets envelope_from");
        let err = parse_example(&same).expect_err("refused").to_string();
        assert!(err.contains("envelope_from"), "{err}");
        assert!(err.contains("support@example.zendesk.com"), "{err}");
    }

    #[test]
    fn a_mailbox_account_ignores_the_case_imap_ignores() {
        let settings = parse_example(EXAMPLE).expect("example config parses");
        assert_eq!(
            settings.mailboxes[0].account(),
            "support@example.com@imap.example.com:993/INBOX"
        );
        let retyped = EXAMPLE
            .replace("host = \"imap.example.com\"", "host = \"IMAP.Example.com\"")
            .replace("folder = \"INBOX\"", "folder = \"Inbox\"");
        assert_ne!(retyped, EXAMPLE, "the example sets host and folder");
        let retyped = parse_example(&retyped).expect("parses");
        assert_eq!(
            retyped.mailboxes[0].account(),
            settings.mailboxes[0].account()
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let text = EXAMPLE.replace("folder = \"INBOX\"", "folder = \"INBOX\"\nfolderr = 1");
        let err = parse_example(&text).expect_err("typo rejected").to_string();
        assert!(err.contains("folderr"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let settings = parse_example(EXAMPLE).expect("example config parses");
        let printed = format!("{settings:?}");
        assert!(!printed.contains("imap-secret"), "{printed}");
        assert!(!printed.contains("smtp-secret"), "{printed}");
    }

    #[test]
    fn missing_password_env_is_explained() {
        let text = EXAMPLE.replace("SUPPORT_PASSWORD", "DESKBRIDGE_TEST_UNSET_VARIABLE");
        let err = parse_example(&text).expect_err("unset env").to_string();
        assert!(err.contains("DESKBRIDGE_TEST_UNSET_VARIABLE"), "{err}");
        assert!(err.contains("not set"), "{err}");
    }

    #[test]
    fn a_password_in_the_file_is_never_echoed() {
        let text = EXAMPLE.replace(
            "password_env = \"SMTP_PASSWORD\"",
            "password = \"hunter2-in-the-file\"",
        );
        assert_ne!(text, EXAMPLE);
        let err = parse_example(&text).expect_err("unknown key").to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(
            err.contains("password_env") && err.contains("line "),
            "{err}"
        );
        let text = EXAMPLE.replace("\"SMTP_PASSWORD\"", "\"hunter2 pasted\"");
        let err = parse_example(&text).expect_err("not a name").to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("name of an environment variable"), "{err}");
    }

    #[test]
    fn password_sources_give_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        let with = |line: &str| {
            EXAMPLE.replace(
                "password_env = \"SMTP_PASSWORD\"",
                &format!("{line}\nhelo_name = \"bridge.example.com\""),
            )
        };
        std::fs::write(&file, "").expect("write");
        let text = with(&format!("password_file = \"{}\"", file.display()));
        let err = parse_example(&text).expect_err("empty").to_string();
        assert!(err.contains("empty password"), "{err}");
        std::fs::write(&file, "first\nsecond\n").expect("write");
        let err = parse_example(&text).expect_err("two lines").to_string();
        assert!(err.contains("line break"), "{err}");
        std::fs::write(&file, "secret\n").expect("write");
        parse_example(&text).expect("one line with its newline");
        // A command's first line is the password, as `pass show` prints it.
        let text = with("password_command = \"printf 'cmd-secret\\\\nurl: x\\\\n'\"");
        let settings = parse_example(&text).expect("first line");
        let credentials = settings.smtp.credentials.expect("credentials");
        assert_eq!(credentials.password.expose(), "cmd-secret");
    }

    #[test]
    fn forwarding_into_a_polled_mailbox_is_refused() {
        let mailbox_user = EXAMPLE
            .lines()
            .skip_while(|line| !line.starts_with("[[mailbox]]"))
            .find_map(|line| line.strip_prefix("username = "))
            .expect("the example's mailbox username")
            .trim_matches('"')
            .to_owned();
        let forward_line = EXAMPLE
            .lines()
            .find(|line| line.starts_with("forward_to = "))
            .expect("the example's forward_to");
        let text = EXAMPLE.replace(forward_line, &format!("forward_to = \"{mailbox_user}\""));
        let err = parse_example(&text).expect_err("a loop").to_string();
        assert!(err.contains("which deskbridge polls"), "{err}");
    }

    #[test]
    fn ports_helo_names_and_ca_files_are_checked_up_front() {
        let text = EXAMPLE.replace("port = 587", "port = 0");
        let err = parse_example(&text).expect_err("port 0").to_string();
        assert!(err.contains("port must be between 1 and 65535"), "{err}");
        let text = EXAMPLE.replace(
            "# helo_name = \"bridge.example.com\"",
            "helo_name = \"bridge\\r\\nX-Forged: 1\"",
        );
        assert_ne!(text, EXAMPLE);
        let err = parse_example(&text).expect_err("line break").to_string();
        assert!(err.contains("is not a host name"), "{err}");
        let text = EXAMPLE.replace(
            "# ca_file = \"/etc/deskbridge/ca.pem\"",
            "ca_file = \"/nonexistent/deskbridge-ca.pem\"",
        );
        assert_ne!(text, EXAMPLE);
        let err = parse_example(&text)
            .expect_err("missing CA file")
            .to_string();
        assert!(err.contains("/nonexistent/deskbridge-ca.pem"), "{err}");
    }

    #[test]
    fn tls_has_no_plaintext_mode() {
        let text = EXAMPLE.replace("tls = \"starttls\"", "tls = \"none\"");
        let err = parse_example(&text)
            .expect_err("plaintext refused")
            .to_string();
        // The error names what may be chosen instead.
        assert!(
            err.contains("starttls") && err.contains("implicit"),
            "{err}"
        );
    }

    #[test]
    fn zero_minute_rate_window_is_refused_with_the_way_to_turn_it_off() {
        let text = EXAMPLE.replace("# rate_limit_minutes = 10", "rate_limit_minutes = 0");
        assert_ne!(text, EXAMPLE, "the example config documents the key");
        let err = parse_example(&text).expect_err("zero window").to_string();
        assert!(err.contains("rate_limit_minutes"), "{err}");
        assert!(err.contains("rate_limit_messages = 0"), "{err}");
    }

    #[test]
    fn the_log_view_never_quotes_a_broken_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deskbridge.toml");
        std::fs::write(
            &path,
            "[store]\npath = \"log.db\"\n[smtp]\npassword = hunter2 pasted\n",
        )
        .expect("write");
        let err = load_log_view(&path).expect_err("broken TOML").to_string();
        assert!(!err.contains("hunter2"), "{err}");
        std::fs::write(
            &path,
            "[store]\npath = \"log.db\"\n[[mailbox]]\nname = \"support\"\n[[mailbox]]\nname = \"sales\"\n",
        )
        .expect("write");
        let (log, names) = load_log_view(&path).expect("store and names");
        assert_eq!(log, dir.path().join("log.db"));
        assert_eq!(names, ["support", "sales"]);
    }

    #[test]
    fn giving_up_at_once_is_refused() {
        let text = EXAMPLE.replace("# give_up_after_hours = 120", "give_up_after_hours = 0");
        assert_ne!(text, EXAMPLE);
        let err = parse_example(&text).expect_err("0 hours").to_string();
        assert!(
            err.contains("give_up_after_hours must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn windows_beyond_ten_years_are_refused_by_name() {
        for (line, key) in [
            ("# give_up_after_hours = 120", "give_up_after_hours"),
            (
                "# relay_subject_window_days = 30",
                "relay_subject_window_days",
            ),
        ] {
            let text = EXAMPLE.replace(line, &format!("{key} = 999999999999999999"));
            assert_ne!(text, EXAMPLE, "the example config documents {key}");
            let err = parse_example(&text).expect_err("huge window").to_string();
            assert!(err.contains(key) && err.contains("ten years"), "{err}");
        }
        let text = EXAMPLE.replace("# give_up_after_hours = 120", "give_up_after_hours = 87600");
        let settings = parse_example(&text).expect("ten years is allowed");
        assert_eq!(settings.smtp.give_up_after.as_secs(), 87_600 * 3600);
    }

    #[test]
    fn sizes_out_of_range_are_refused_not_clamped() {
        for (line, key) in [
            ("# max_message_mb = 50", "max_message_mb"),
            ("# batch_mb = 16", "batch_mb"),
        ] {
            assert!(EXAMPLE.contains(line), "the example config documents {key}");
            for value in ["0", "5000"] {
                let text = EXAMPLE.replace(line, &format!("{key} = {value}"));
                let err = parse_example(&text).expect_err("out of range").to_string();
                assert!(
                    err.contains(key) && err.contains("between 1 and 4096"),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn auth_is_password_unless_xoauth2_is_chosen() {
        let default = parse_example(EXAMPLE).expect("example");
        assert_eq!(
            default.smtp.credentials.as_ref().map(|c| c.method),
            Some(AuthMethod::Password)
        );
        assert_eq!(
            default.mailboxes[0].credentials.method,
            AuthMethod::Password
        );
        let line = "# auth = \"password\"";
        assert_eq!(
            EXAMPLE.matches(line).count(),
            2,
            "documented in both sections"
        );
        let both = EXAMPLE.replace(line, "auth = \"xoauth2\"");
        let settings = parse_example(&both).expect("xoauth2");
        assert_eq!(
            settings.smtp.credentials.as_ref().map(|c| c.method),
            Some(AuthMethod::Xoauth2)
        );
        assert_eq!(
            settings.mailboxes[0].credentials.method,
            AuthMethod::Xoauth2
        );
        let err = parse_example(&EXAMPLE.replacen(line, "auth = \"cram-md5\"", 1))
            .expect_err("unknown method")
            .to_string();
        assert!(err.contains("xoauth2"), "{err}");
        // A token is visible ASCII: "imap-secret" is one, a phrase is not.
        let phrase = |name: &str| match name {
            "SMTP_PASSWORD" => Some("smtp-secret".to_owned()),
            _ => Some("two words".to_owned()),
        };
        let err = parse_with_env(&both, Path::new("/etc/deskbridge/deskbridge.toml"), &phrase)
            .expect_err("not a token")
            .to_string();
        assert!(err.contains("access token"), "{err}");
        assert!(!err.contains("two words"), "{err}");
        let err = parse_example(&EXAMPLE.replace(
            "username = \"support@example.com\"",
            "username = \"support@example.com\\u0001x\"",
        ))
        .expect_err("control character")
        .to_string();
        assert!(err.contains("control characters"), "{err}");
    }

    #[test]
    fn the_log_space_check_has_a_default_an_off_switch_and_a_limit() {
        let default = parse_example(EXAMPLE).expect("example");
        assert_eq!(default.store_min_free, 16 * 1024 * 1024);
        let line = "# min_free_mb = 16";
        assert!(
            EXAMPLE.contains(line),
            "the example config documents min_free_mb"
        );
        let off = parse_example(&EXAMPLE.replace(line, "min_free_mb = 0")).expect("0 is off");
        assert_eq!(off.store_min_free, 0);
        let err = parse_example(&EXAMPLE.replace(line, "min_free_mb = 2000000"))
            .expect_err("too large")
            .to_string();
        assert!(err.contains("min_free_mb"), "{err}");
    }

    #[test]
    fn folder_names_outside_ascii_are_refused_up_front() {
        let text = EXAMPLE.replace(
            "folder = \"INBOX\"",
            "folder = \"Eingang/Kunden-Übersicht\"",
        );
        assert_ne!(text, EXAMPLE);
        let err = parse_example(&text).expect_err("non-ASCII").to_string();
        assert!(err.contains("outside ASCII"), "{err}");
    }

    #[test]
    fn a_password_command_that_hangs_is_killed_with_its_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("child.pid");
        let command = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let started = std::time::Instant::now();
        let err = run_in_group(&command, Duration::from_secs(3), true).expect_err("timed out");
        assert!(err.contains("no answer within 3 s"), "{err}");
        // NOTE: Not a speed check: the background `sleep 30` holds the
        // output pipe open, and a timeout that waited for the pipe to close
        // would return after 30 s. Half of that separates the two.
        assert!(started.elapsed() < Duration::from_secs(15));
        let child: u32 = std::fs::read_to_string(&pid_file)
            .expect("the background child wrote its pid")
            .trim()
            .parse()
            .expect("a pid");
        // Killed with the group; reaped by init, it leaves /proc soon after.
        // Its own `sleep 30` would outlast this wait.
        let gone = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .map_or(true, |stat| stat.contains(") Z "))
        });
        assert!(gone, "the pipeline's child {child} outlived the timeout");
    }

    #[test]
    fn addresses_must_be_plain() {
        assert!(check_address("k", "a@b.example").is_ok());
        for refused in [
            "Name <a@b.example>",
            "a@localhost",
            "@b.example",
            "a@b.example, c@d.example",
        ] {
            let err = check_address("k", refused).expect_err(refused);
            assert!(err.contains("is not a plain address"), "{err}");
        }
    }
}
