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

use deskbridge::store::{MessageFilter, State, Store};
use deskbridge::{config, report, worker};

/// Redirects a support mailbox to a helpdesk: holds encrypted mail, keeps
/// relay conversations whole, and logs every message in SQLite.
#[derive(Debug, Parser)]
#[command(name = "deskbridge", version)]
struct Cli {
    /// The TOML config file.
    #[arg(long, short = 'c', env = "DESKBRIDGE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The SQLite log to read, instead of the one the config names
    /// (status, messages, show).
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
    CheckConfig,
    /// Show each mailbox's last pass and its messages counted by state.
    Status {
        /// One JSON object per mailbox per line.
        #[arg(long)]
        json: bool,
    },
    /// List logged messages, newest first.
    Messages {
        /// Only this state: pending, forwarded, held, skipped or failed.
        #[arg(long, value_parser = parse_state)]
        state: Option<State>,
        /// Only this mailbox (its name in the config).
        #[arg(long)]
        mailbox: Option<String>,
        /// At most this many rows.
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
    /// Forward a held message after a person decided it may go.
    Release {
        /// The held message's id (first column of `messages`).
        id: i64,
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
    match cli.command {
        Command::Run { quiet } => {
            let settings = load_settings(cli.config.as_deref())?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let pass = runtime.block_on(async {
                let stop = Arc::new(AtomicBool::new(false));
                spawn_signal_watch(Arc::clone(&stop));
                worker::run_once(&settings, &stop).await
            })?;
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
        Command::CheckConfig => {
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
                    "  mailbox {}: {}@{}:{} ({}) folder {} -> {}\n",
                    mailbox.name,
                    mailbox.credentials.username,
                    mailbox.host,
                    mailbox.port,
                    mailbox.tls,
                    mailbox.folder,
                    mailbox.forward_to
                ));
            }
            write_stdout(&out)?;
            Ok(0)
        }
        Command::Status { json } => {
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
            write_stdout(&out)?;
            Ok(0)
        }
        Command::Messages {
            state,
            mailbox,
            limit,
            json,
        } => {
            let store = open_log(cli.db.as_deref(), cli.config.as_deref())?;
            let rows = store.list_messages(&MessageFilter {
                state,
                mailbox,
                limit,
            })?;
            let out = if json {
                rows.iter()
                    .map(|row| report::message_json(row) + "\n")
                    .collect()
            } else {
                report::messages_table(&rows)
            };
            write_stdout(&out)?;
            Ok(0)
        }
        Command::Inspect { files } => inspect(&files),
        Command::Release { id } => {
            let settings = load_settings(cli.config.as_deref())?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let outcome = runtime.block_on(worker::release(&settings, id))?;
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
            write_stdout(&out)?;
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
        write_stdout(&format!("{line}\n"))?;
    }
    Ok(code)
}

fn config_path(config: Option<&Path>) -> anyhow::Result<&Path> {
    config.context("no config file: pass --config PATH or set DESKBRIDGE_CONFIG")
}

fn load_settings(config: Option<&Path>) -> anyhow::Result<config::Settings> {
    Ok(config::load(config_path(config)?)?)
}

/// Opens the log for the read commands: `--db`, else the config's store.
fn open_log(db: Option<&Path>, config: Option<&Path>) -> anyhow::Result<Store> {
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
    Ok(Store::open_existing(&path)?)
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
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
    let filter = tracing_subscriber::EnvFilter::try_from_env("DESKBRIDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Sets `stop` on SIGINT or SIGTERM so the pass ends between messages.
fn spawn_signal_watch(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => (),
            () = terminate => (),
        }
        tracing::warn!("signal received: finishing the message in flight, then stopping");
        stop.store(true, Ordering::Relaxed);
    });
}
