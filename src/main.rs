//! The `deskbridge` command: parses the CLI, sets up logging, runs the
//! chosen command and maps its outcome to the exit code (0 ok, 1 some
//! messages failed, 2 fatal).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{Signal, SignalKind, signal};

use deskbridge::lock::LockError;
use deskbridge::store::{MessageFilter, State, Store, ThreadFilter};
use deskbridge::{config, report, worker};

/// Redirects a support mailbox to a helpdesk: holds encrypted mail, keeps
/// relay conversations whole, and logs every message in SQLite.
#[derive(Debug, Parser)]
#[command(name = "deskbridge", version)]
struct Cli {
    /// The TOML config file.
    #[arg(long, short = 'c', env = "DESKBRIDGE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The SQLite log to use instead of the one the config names (status,
    /// messages, show, threads, thread, correspondents, prune, unblock; a
    /// pass, check-config and release always use the config's).
    #[arg(long, global = true)]
    db: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug). DESKBRIDGE_LOG
    /// takes a full tracing filter.
    #[arg(long, short = 'v', action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one pass over every mailbox, then exit (for cron or a systemd timer).
    Run {
        /// Print nothing on success; errors still go to stderr.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Validate the config file and resolve its secrets, without touching the network.
    CheckConfig {
        /// Then connect to every server as a pass would (TLS, login, the
        /// folder, an SMTP envelope to each forward_to, reset before DATA)
        /// and report what works. Sends, changes and logs nothing.
        #[arg(long)]
        connect: bool,
    },
    /// Show each mailbox's last pass and its messages counted by state.
    Status {
        /// One JSON object per mailbox per line.
        #[arg(long, conflicts_with = "check")]
        json: bool,
        /// For monitoring (Nagios-style verdict on stdout): exit 0 when every
        /// mailbox had a pass finish within --max-age without error (or a
        /// pass is at work), 1 when the last pass left failed or refused
        /// messages or a signal stopped it, 2 when there is no log, a pass
        /// failed or died, none finished in time, one is stuck, or the
        /// check itself failed.
        #[arg(long)]
        check: bool,
        /// With --check: how long ago the last pass may have finished
        /// (e.g. 15m, 2h).
        #[arg(long, default_value = "15m", requires = "check")]
        max_age: String,
    },
    /// List logged messages, newest first.
    Messages {
        /// Only this state: pending, forwarded, held, skipped or failed.
        #[arg(long, value_parser = parse_state)]
        state: Option<State>,
        /// Only this mailbox (its name in the config).
        #[arg(long)]
        mailbox: Option<String>,
        /// At most this many rows (0 for all, as without it).
        #[arg(long)]
        limit: Option<u32>,
        /// One JSON object per message per line.
        #[arg(long)]
        json: bool,
    },
    /// Classify .eml files offline (no config, no network): one JSON object
    /// per file per line. `-` reads standard input.
    Inspect {
        /// The message files; `-` for standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List conversations, most recently active first.
    Threads {
        /// Only this mailbox (its name in the config).
        #[arg(long)]
        mailbox: Option<String>,
        /// Only threads of this relay (apple, firefox, duckduckgo, simplelogin, addy, proton, ...).
        #[arg(long)]
        relay: Option<String>,
        /// Only threads with a message in this state.
        #[arg(long, value_parser = parse_state)]
        state: Option<State>,
        /// Only threads active since this date (2026-11-01) or for this long (7d, 12h).
        #[arg(long)]
        since: Option<String>,
        /// At most this many threads (default 50; 0 for all).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// One JSON object per thread per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one conversation in order: each message's decision, reason, the
    /// key that attached it, and whether its threading headers were repaired.
    Thread {
        /// The thread's id, as `threads` lists it.
        id: i64,
        /// The thread and its messages as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List hidden correspondents with their relay aliases, reply tokens and threads.
    Correspondents {
        /// Only correspondents behind this relay (apple, firefox, ...).
        #[arg(long)]
        relay: Option<String>,
        /// At most this many (default 100; 0 for all).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON object per correspondent per line.
        #[arg(long)]
        json: bool,
    },
    /// Remove content fields of old messages, keeping what threading needs.
    Prune {
        /// Age, e.g. 90d, 12w, 36h; 30 days at least (see --force).
        #[arg(long)]
        older_than: String,
        /// Prune history younger than 30 days too, although relay threading
        /// (relay_subject_window_days) and auto-reply pacing still use it.
        #[arg(long)]
        force: bool,
    },
    /// Forward a held message after a person decided it may go.
    Release {
        /// The held message's id (first column of `messages`).
        id: i64,
        /// Release it although an earlier release may have delivered it
        /// (its reply never came); look for it at the helpdesk first.
        #[arg(long)]
        force: bool,
    },
    /// Lift the rate limit's block on a correspondent (relay alias or
    /// address) without forwarding any of its held mail, which stays held.
    Unblock {
        /// The blocked address, as `show` names it in a held message's
        /// detail; any letter case.
        address: String,
    },
    /// Show one message's record and history.
    Show {
        /// The message's id (first column of `messages`).
        id: i64,
        /// The record and its history as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn parse_state(text: &str) -> Result<State, String> {
    State::parse(text).ok_or_else(|| {
        format!("unknown state '{text}': use pending, forwarded, held, skipped or failed")
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("deskbridge: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    // NOTE: These commands work on the log the config names; taking --db
    // silently would let `release` send a held message of one log while
    // the operator looked at another.
    if let (Some(db), Command::Run { .. } | Command::CheckConfig { .. } | Command::Release { .. }) =
        (&cli.db, &cli.command)
    {
        anyhow::bail!(
            "--db {} is for the commands that only read the log (and prune); run, check-config and release use the log the config names: leave --db out, or point --config at the config of that log",
            db.display()
        );
    }
    match cli.command {
        Command::Run { quiet } => {
            let settings = load_settings(cli.config.as_deref())?;
            let runtime = async_runtime()?;
            let pass = runtime.block_on(async {
                let stop = Arc::new(AtomicBool::new(false));
                spawn_signal_watch(Arc::clone(&stop), settings.store_path.clone())?;
                worker::run_once(&settings, &stop).await
            });
            // NOTE: From cron, a pass that outlasts the interval meets the
            // next one here. That is a normal pass still at work, not an
            // error worth a mail every minute. A pass that has held the lock
            // for an hour is not normal: that is an error again.
            let pass = match pass {
                Err(err) if busy_for_less_than(&err, STUCK_AFTER_SECS) => {
                    if !quiet {
                        write_stdout(&format!("{err}\n"))?;
                    }
                    return Ok(0);
                }
                Err(err) if matches!(err.downcast_ref(), Some(LockError::Busy { .. })) => {
                    return Err(err.context(
                        "that pass has held the lock for over an hour: check whether it is stuck",
                    ));
                }
                pass => pass?,
            };
            let summary = report::pass_summary(&pass);
            let code = pass.exit_code();
            if code == 0 {
                if !quiet {
                    write_stdout(&summary)?;
                }
            } else {
                eprint!("{summary}");
            }
            Ok(code)
        }
        Command::CheckConfig { connect } => {
            let path = config_path(cli.config.as_deref())?;
            let settings = config::load(path)?;
            let mut out = format!(
                "config {} is valid\n  store  {}\n  smtp   {}:{} ({}), envelope from {}\n",
                path.display(),
                settings.store_path.display(),
                settings.smtp.host,
                settings.smtp.port,
                settings.smtp.tls,
                settings.smtp.envelope_from
            );
            for mailbox in &settings.mailboxes {
                out.push_str(&format!(
                    "  mailbox {}: user {} at {}:{} ({}), folder {} -> {}\n",
                    mailbox.name,
                    mailbox.credentials.username,
                    mailbox.host,
                    mailbox.port,
                    mailbox.tls,
                    mailbox.folder,
                    mailbox.forward_to
                ));
            }
            if !connect {
                write_stdout(&out)?;
                return Ok(0);
            }
            let runtime = async_runtime()?;
            let checks = runtime.block_on(worker::probe::probe(&settings));
            out.push_str(&report::connection_checks(&checks));
            if checks.iter().any(worker::probe::Check::failed) {
                eprint!("{out}");
                Ok(2)
            } else {
                write_stdout(&out)?;
                Ok(0)
            }
        }
        Command::Status {
            check: true,
            max_age,
            ..
        } => status_check(cli.db.as_deref(), cli.config.as_deref(), &max_age),
        Command::Status { json, .. } => {
            let store = open_log(cli.db.as_deref(), cli.config.as_deref())?;
            let statuses = store.mailbox_status()?;
            let out = if json {
                statuses
                    .iter()
                    .map(|status| serde_json::to_string(status).map(|line| line + "\n"))
                    .collect::<Result<String, _>>()?
            } else {
                report::status_table(&statuses)
            };
            write_output(&out, json)?;
            Ok(0)
        }
        Command::Messages {
            state,
            mailbox,
            limit,
            json,
        } => {
            let store = open_log(cli.db.as_deref(), cli.config.as_deref())?;
            warn_unknown_mailbox(&store, mailbox.as_deref())?;
            let rows = store.list_messages(&MessageFilter {
                state,
                mailbox,
                limit: limit.filter(|&limit| limit != 0),
            })?;
            let out = if json {
                rows.iter()
                    .map(|row| report::message_json(row) + "\n")
                    .collect()
            } else {
                report::messages_table(&rows)
            };
            write_output(&out, json)?;
            Ok(0)
        }
        Command::Inspect { files } => inspect(&files),
        Command::Threads {
            mailbox,
            relay,
            state,
            since,
            limit,
            json,
        } => {
            let store = open_log(cli.db.as_deref(), cli.config.as_deref())?;
            warn_unknown_mailbox(&store, mailbox.as_deref())?;
            let since = match since {
                Some(text) => Some(parse_since(&text)?),
                None => None,
            };
            let rows = store.list_threads(&ThreadFilter {
                mailbox,
                relay,
                state: state.map(|state| state.as_str().to_owned()),
                since,
                limit: (0 < limit).then_some(limit),
            })?;
            let out = if json {
                json_lines(&rows)?
            } else {
                report::threads_table(&rows)
            };
            write_output(&out, json)?;
            Ok(0)
        }
        Command::Thread { id, json } => {
            let store = open_log(cli.db.as_deref(), cli.config.as_deref())?;
            let (thread, messages) = store
                .thread(id)?
                .with_context(|| format!("no thread with id {id} in the log"))?;
            let out = if json {
                serde_json::json!({ "thread": thread, "messages": messages }).to_string() + "\n"
            } else {
                report::thread_detail(&thread, &messages)
            };
            write_output(&out, json)?;
            Ok(0)
        }
        Command::Correspondents { relay, limit, json } => {
            let store = open_log(cli.db.as_deref(), cli.config.as_deref())?;
            let rows = store.correspondents(relay.as_deref(), (0 < limit).then_some(limit))?;
            let out = if json {
                json_lines(&rows)?
            } else {
                report::correspondents_table(&rows)
            };
            write_output(&out, json)?;
            Ok(0)
        }
        Command::Prune { older_than, force } => {
            let age = parse_age(&older_than)?;
            // NOTE: A slip such as `6m` (minutes, not months) would clear
            // the subjects relay threading compares and the auto-reply
            // records that pace replies, for mail of the last minutes.
            if age < PRUNE_FLOOR_SECS && !force {
                anyhow::bail!(
                    "--older-than {older_than} is less than 30 days: prune would clear the subjects that relay threading still compares (relay_subject_window_days, 30 by default) and the records that keep a sender from a second auto-reply; choose 30d or more (at least your relay_subject_window_days), or add --force"
                );
            }
            let path = log_path(cli.db.as_deref(), cli.config.as_deref())?;
            // NOTE: Pruning rewrites many rows in one transaction: under a
            // pass it could hold the write lock long enough to make that
            // pass's outcome commits fail.
            let _lock = deskbridge::lock::PassLock::acquire(&path)?;
            let mut store = Store::open_existing(&path)?;
            let cutoff = deskbridge::clock::rfc3339(deskbridge::clock::unix_now() - age);
            let (messages, events) = store.prune(&cutoff)?;
            write_stdout(&format!(
                "pruned messages first seen before {cutoff}: cleared subject, from, reply-to, relay alias, reply token, date, detail, last error and SMTP reply of {messages} messages and removed {events} of their history events (held messages stay whole until released), forgot auto-replies sent and rate-limit blocks lifted before then, cleared the subjects of threads idle since then; kept Message-IDs, references, threads, correspondents with their addresses (threading needs them), states, reasons and hashes\n"
            ))?;
            Ok(0)
        }
        Command::Unblock { address } => {
            let path = log_path(cli.db.as_deref(), cli.config.as_deref())?;
            let _lock = deskbridge::lock::PassLock::acquire(&path)?;
            let store = Store::open_existing(&path)?;
            if store.unblock(&address)? {
                write_stdout(&format!(
                    "lifted the rate-limit block on {address}: only mail logged from now on counts towards the limit; its held messages stay held (`deskbridge release ID` forwards one)\n"
                ))?;
                Ok(0)
            } else {
                eprintln!("deskbridge: {address} is not blocked by the rate limit");
                Ok(1)
            }
        }
        Command::Release { id, force } => {
            let settings = load_settings(cli.config.as_deref())?;
            let runtime = async_runtime()?;
            let outcome = runtime.block_on(worker::release(&settings, id, force))?;
            write_stdout(&format!("{outcome}\n"))?;
            Ok(0)
        }
        Command::Show { id, json } => {
            let store = open_log(cli.db.as_deref(), cli.config.as_deref())?;
            let row = store
                .message(id)?
                .with_context(|| format!("no message with id {id} in the log"))?;
            let events = store.events(id)?;
            let out = if json {
                serde_json::json!({ "message": row, "history": events }).to_string() + "\n"
            } else {
                report::message_detail(&row, &events)
            };
            write_output(&out, json)?;
            Ok(0)
        }
    }
}

/// Classifies each file; unreadable files are reported on stderr and make
/// the exit code 1, the others are still printed.
fn inspect(files: &[PathBuf]) -> anyhow::Result<u8> {
    let rules = deskbridge::classify::Rules::default();
    let mut code = 0;
    for file in files {
        let (name, bytes) = if file.as_os_str() == "-" {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
                .context("cannot read standard input")?;
            ("-".to_owned(), bytes)
        } else {
            match std::fs::read(file) {
                Ok(bytes) => (file.display().to_string(), bytes),
                Err(err) => {
                    eprintln!("deskbridge: cannot read {}: {err}", file.display());
                    code = 1;
                    continue;
                }
            }
        };
        let classification = deskbridge::classify::classify(&bytes, &rules);
        let message_id = deskbridge::mail::parse(&bytes)
            .and_then(|message| message.message_id().map(str::to_owned));
        let line = report::inspect_json(&name, &classification, message_id.as_deref());
        write_output(&format!("{line}\n"), true)?;
    }
    Ok(code)
}

/// `status --check`: the verdict on stdout, whatever it is, as monitoring
/// systems read it; the exit code is the verdict's.
fn status_check(db: Option<&Path>, config: Option<&Path>, max_age: &str) -> anyhow::Result<u8> {
    // NOTE: A monitoring system shows what the check prints on stdout; an
    // error only on stderr would reach it as a verdict without a reason.
    check_or_report(db, config, max_age).or_else(|err| {
        write_stdout(&format!("DESKBRIDGE CRITICAL - cannot check: {err:#}\n"))?;
        Ok(report::Health::Critical.exit_code())
    })
}

fn check_or_report(db: Option<&Path>, config: Option<&Path>, max_age: &str) -> anyhow::Result<u8> {
    let max_age = parse_age(max_age).context("--max-age")?;
    let (path, expected) = match (db, config) {
        (Some(db), _) => (db.to_path_buf(), None),
        (None, config) => {
            let (path, names) = config::load_log_view(config_path(config)?)?;
            (path, Some(names))
        }
    };
    if !path.exists() {
        write_stdout(&format!(
            "DESKBRIDGE CRITICAL - no log at {}: no pass has run\n",
            path.display()
        ))?;
        return Ok(report::Health::Critical.exit_code());
    }
    let statuses = Store::open_existing(&path)?.mailbox_status()?;
    let lock_held = deskbridge::lock::is_held(&path).ok();
    let (health, text) = report::health_check(
        &statuses,
        expected.as_deref(),
        (max_age, deskbridge::clock::unix_now()),
        lock_held,
    );
    write_stdout(&text)?;
    Ok(health.exit_code())
}

fn json_lines<T: serde::Serialize>(rows: &[T]) -> anyhow::Result<String> {
    let mut out = String::new();
    for row in rows {
        out.push_str(&serde_json::to_string(row)?);
        out.push('\n');
    }
    Ok(out)
}

/// The youngest history `prune` clears without `--force`: the default
/// relay-subject window.
const PRUNE_FLOOR_SECS: i64 = 30 * 86_400;

/// `90d`, `12w`, `36h`, `30m` → seconds.
fn parse_age(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: i64 = number
        .parse()
        .with_context(|| format!("'{text}' is not an age like 90d, 12w, 36h or 30m"))?;
    let unit_secs = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => anyhow::bail!("'{text}' is not an age like 90d, 12w, 36h or 30m"),
    };
    Ok(number.saturating_mul(unit_secs))
}

/// A date (`2026-11-01`, RFC 3339) or an age (`7d`) → RFC 3339.
fn parse_since(text: &str) -> anyhow::Result<String> {
    if let Some(unix) = deskbridge::clock::parse_rfc3339(text) {
        return Ok(deskbridge::clock::rfc3339(unix));
    }
    let age = parse_age(text).with_context(|| {
        format!("--since '{text}' is neither a date (2026-11-01) nor an age (7d)")
    })?;
    Ok(deskbridge::clock::rfc3339(
        deskbridge::clock::unix_now() - age,
    ))
}

/// The single-threaded runtime every networked command runs on.
fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn config_path(config: Option<&Path>) -> anyhow::Result<&Path> {
    config.context("no config file: pass --config PATH or set DESKBRIDGE_CONFIG")
}

fn load_settings(config: Option<&Path>) -> anyhow::Result<config::Settings> {
    Ok(config::load(config_path(config)?)?)
}

/// How long another pass may hold the lock before a run that meets it
/// reports an error instead of leaving the work to it (`status --check`
/// calls such a pass stuck too).
const STUCK_AFTER_SECS: i64 = report::STUCK_AFTER_SECS;

/// Whether `err` is a busy pass lock taken less than `secs` ago (a lock
/// whose holder line gives no time counts as just taken).
fn busy_for_less_than(err: &anyhow::Error, secs: i64) -> bool {
    match err.downcast_ref() {
        Some(LockError::Busy { since_unix, .. }) => {
            let since = since_unix.unwrap_or_else(deskbridge::clock::unix_now);
            deskbridge::clock::unix_now().saturating_sub(since) < secs
        }
        _ => false,
    }
}

/// Opens the log for the read commands: `--db`, else the config's store.
fn open_log(db: Option<&Path>, config: Option<&Path>) -> anyhow::Result<Store> {
    Ok(Store::open_existing(&log_path(db, config)?)?)
}

/// The log database named by `--db`, else by the config; it must exist.
fn log_path(db: Option<&Path>, config: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match db {
        Some(path) => path.to_path_buf(),
        None => config::load_store_path(config_path(config)?)?,
    };
    if !path.exists() {
        anyhow::bail!(
            "no log database at {}: run `deskbridge run` first, or pass --db PATH",
            path.display()
        );
    }
    Ok(path)
}

/// Says on stderr when `--mailbox` names no mailbox of the log: an empty
/// list would otherwise read as "nothing there" (names are exact: `Support`
/// is not `support`).
fn warn_unknown_mailbox(store: &Store, mailbox: Option<&str>) -> anyhow::Result<()> {
    let Some(wanted) = mailbox else {
        return Ok(());
    };
    let known: Vec<String> = store
        .mailbox_status()?
        .into_iter()
        .map(|status| status.name)
        .collect();
    if !known.iter().any(|name| name == wanted) {
        eprintln!(
            "{}",
            report::terminal_safe(&format!(
                "deskbridge: warning: the log has no mailbox named '{wanted}' (it has: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        );
    }
    Ok(())
}

/// JSON or text on stdout, each made safe for a terminal its own way:
/// JSON escapes what text shows as U+FFFD, so its values stay exact.
fn write_output(text: &str, json: bool) -> anyhow::Result<()> {
    let safe = if json {
        report::json_terminal_safe(text)
    } else {
        report::terminal_safe(text)
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(safe.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    write_output(text, false)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "deskbridge=warn",
        1 => "deskbridge=info",
        _ => "deskbridge=debug",
    };
    // NOTE: async-imap logs every line it sends and receives at trace
    // level: LOGIN with its password, AUTHENTICATE with its token. Any
    // directive for its targets is dropped from DESKBRIDGE_LOG (a more
    // specific one, `async_imap::imap_stream=trace`, would outdo the `off`
    // added below). The filter stays global, so its level hint keeps the
    // `log` records of rustls and async-imap off the hot path.
    let given = std::env::var("DESKBRIDGE_LOG").ok();
    let requested = given.as_deref().map(|text| {
        text.split(',')
            .filter(|directive| !directive.trim_start().starts_with("async_imap"))
            .collect::<Vec<_>>()
            .join(",")
    });
    let filter = requested
        .filter(|text| !text.trim().is_empty())
        .and_then(|text| match tracing_subscriber::EnvFilter::try_new(&text) {
            Ok(filter) => Some(filter),
            Err(err) => {
                // NOTE: Said, not swallowed: a typo would otherwise look like
                // a filter that matched nothing. The value is quoted as set.
                eprintln!(
                    "deskbridge: DESKBRIDGE_LOG '{}' is not a tracing filter ({err}); using the default",
                    given.as_deref().unwrap_or_default()
                );
                None
            }
        })
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    let filter = match "async_imap=off".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    // NOTE: Colour only on a terminal: from cron and systemd, stderr ends
    // up in mail and the journal, where escape codes are noise.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// Returns at the next SIGINT or SIGTERM.
async fn next_signal(interrupt: &mut Signal, terminate: &mut Signal) {
    tokio::select! {
        _ = interrupt.recv() => (),
        _ = terminate.recv() => (),
    }
}

/// Sets `stop` on SIGINT or SIGTERM so the pass ends between messages.
///
/// # Errors
/// The signal handlers cannot be installed.
fn spawn_signal_watch(stop: Arc<AtomicBool>, log: PathBuf) -> anyhow::Result<()> {
    // NOTE: Installed here, before the pass starts: a task spawned on this
    // one thread is first polled at the pass's first await, and a signal
    // before its handler exists would kill the pass mid-step.
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    tokio::spawn(async move {
        next_signal(&mut interrupt, &mut terminate).await;
        tracing::warn!(
            "signal received: finishing the messages in flight, then stopping (a second signal exits at once)"
        );
        stop.store(true, Ordering::Relaxed);
        // NOTE: A second signal means "now": a step may wait out its
        // timeout otherwise. Exiting here is a crash as far as the log is
        // concerned, which record-before-send makes safe.
        next_signal(&mut interrupt, &mut terminate).await;
        eprintln!(
            "deskbridge: second signal: exiting now; pending messages are sent by the next pass"
        );
        // NOTE: A moment for the journal's writer thread, which commits
        // what arrived within 5 ms: a 250 already received must reach the
        // log, or that message would be sent again.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // Best effort: without this, the next pass and `status --check`
        // would take the open pass for one that died.
        if let Ok(store) = Store::open_existing(&log) {
            let _ = store.interrupt_open_passes();
        }
        std::process::exit(130);
    });
    Ok(())
}
