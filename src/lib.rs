//! deskbridge redirects a support mailbox to a helpdesk's intake address.
//!
//! It runs as a scheduled job: each `deskbridge run` is one pass that polls
//! every configured mailbox over TLS IMAP, records each new message in a
//! SQLite log, classifies it, redirects the eligible ones over TLS SMTP with
//! their original bytes unchanged, and settles them on the IMAP server.
//!
//! # Code map
//!
//! Data flows one way:
//!
//! ```text
//! config ──► source (IMAP) ──► mail + classify (pure) ──► store ──► sink (SMTP) ──► store ──► source (settle)
//! ```
//!
//! - [`config`]: TOML file → validated [`config::Settings`]. Resolves secrets
//!   (passwords, or OAuth 2.0 access tokens for XOAUTH2).
//! - [`source`]: the only module that talks IMAP: connect, select, fetch,
//!   and the settle step (keywords, moves).
//! - [`mail`]: mail-parser → [`mail::MailSummary`], the header fields we log.
//! - [`classify`]: pure decision: forward, hold or skip, with a reason.
//! - [`trace`]: pure: the Received/Resent-* block prepended on redirect.
//! - [`notice`]: pure: the held notice and the RFC 3834 auto-reply.
//! - [`store`]: the only module with SQL; applies `migrations/` at open.
//!   Its `Journal` is the writer thread: it records each fetched batch and
//!   group-commits send outcomes; its
//!   `threads` part attaches messages to conversations.
//! - [`thread`]: pure: thread keys (references, ticket tokens, normalised
//!   subject, correspondent addresses) and thread repair lines.
//! - [`sink`]: the only module that talks SMTP.
//! - [`worker`]: `run_once`, `release` and `probe` (`check-config
//!   --connect`), the only module that composes the stages (`record` a
//!   batch, its pure part on a blocking thread; `send` it over a pool of
//!   SMTP sessions; follow up `held` mail). While one batch is sent, the
//!   IMAP connection settles the one before and fetches ahead, and the
//!   next one is examined and recorded.
//! - [`report`]: renders for the CLI: the log (`status`, `messages`,
//!   `show`, `threads`), a pass's summary, the verdict of `status --check`
//!   and the findings of `check-config --connect`.
//! - [`clock`], [`tls`], [`lock`], [`net`]: small shared utilities.
//!
//! # Invariants
//!
//! 1. `mail`, `classify`, `thread`, `trace` and `notice` do no I/O, no async and no SQL, and
//!    never panic on malformed mail (were one to, `worker` holds that message alone as
//!    unparseable).
//! 2. Only `source` talks IMAP, only `sink` talks SMTP, only `store` opens
//!    SQLite. Stages share types (a classification, a thread key) but never
//!    call into one another's I/O; only `worker` composes them.
//! 3. Record before send: nothing is sent before its row exists in the
//!    store, and a row is marked `forwarded` only after the SMTP server's
//!    250. A rerun never re-sends a `forwarded` row. Outcomes are on disk
//!    (journal flushed) before anything is settled on the IMAP server.
//!    Nothing is recorded or sent while the log's file system has less
//!    than `[store] min_free_mb` free, so an outcome is not lost to a full
//!    disk after the server took the message.
//! 4. IMAP changes (keywords, moves) happen in `source::settle`, only after
//!    the store records the row's final state. Bodies are fetched with
//!    `BODY.PEEK[]`, so `\Seen` is never set by fetching.
//! 5. The bytes sent are the fetched bytes, with only the trace block (and,
//!    when a thread repair is safe, In-Reply-To/References) prepended; bare
//!    LF line ends become CRLF, as SMTP requires.
//! 6. One pass per database at a time: [`lock::PassLock`] is held for the
//!    whole pass.
//! 7. TLS certificate verification is always on; secrets never reach logs,
//!    errors or the database.
//! 8. Bounded memory: a batch holds at most `batch_mb` of mail, or one
//!    larger message alone; while one batch is sent the next is prepared,
//!    and a third is fetched ahead only while all three stay within twice
//!    `batch_mb`.

pub mod classify;
pub mod clock;
pub mod config;
pub mod lock;
pub mod mail;
pub mod net;
pub mod notice;
pub mod report;
pub mod sink;
pub mod source;
pub mod store;
pub mod thread;
pub mod tls;
pub mod trace;
pub mod worker;
