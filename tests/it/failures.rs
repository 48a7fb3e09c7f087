//! Failures on the real stack: bad certificates, bad passwords, SMTP 4xx
//! and 5xx, a hanging server, overlapping passes. Each must say what
//! failed and lose or duplicate nothing.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deskbridge::config::Settings;
use deskbridge::lock::PassLock;
use deskbridge::store::{MessageFilter, State, Store};
use deskbridge::worker;
use futures::StreamExt;

use crate::helpers::{
    ConfigOptions, FetchRefusal, TestEnv, backlog, binary, fake_imap, fake_imap_with, fake_smtp,
    find, message, read_folder, rows_in_state, run_pass, second_mailbox, set_recipient_access,
    sorted_originals, split_delivered, wait_for_helpdesk,
};

/// A CA that did not sign the IMAP server's certificate fails the TLS
/// handshake with a message naming the server and what to fix; nothing is
/// recorded or sent.
#[tokio::test]
async fn wrong_imap_ca_fails_clearly_and_changes_nothing() {
    let env = TestEnv::new("wrongcaimap");
    env.seed(&[&message("E <e@example.org>", "x", "ca.1@example.org", "x")])
        .await;
    let settings = env.settings(&ConfigOptions {
        imap_ca: Some(env.stack.wrong_ca.clone()),
        ..ConfigOptions::default()
    });
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(report.exit_code(), 2);
    let error = report.mailboxes[0].error.clone().expect("mailbox error");
    assert!(
        error.contains("TLS handshake with IMAP server 127.0.0.1:"),
        "{error}"
    );
    assert!(
        error.contains("ca_file"),
        "the error says what to fix: {error}"
    );
    let store = Store::open(&settings.store_path).expect("open log");
    assert!(
        store
            .list_messages(&MessageFilter::default())
            .expect("rows")
            .is_empty()
    );
    let support = read_folder(&env.stack, &env.support_user, "INBOX").await;
    assert!(
        support[0]
            .flags
            .iter()
            .all(|flag| !flag.contains("Deskbridge") && !flag.contains("Forwarded"))
    );
}

/// A wrong CA for SMTP stops before anything is recorded or sent; with the
/// right CA the next pass delivers.
#[tokio::test]
async fn wrong_smtp_ca_sends_nothing_until_fixed() {
    let env = TestEnv::new("wrongcasmtp");
    let original = message("F <f@example.org>", "y", "ca.2@example.org", "y");
    env.seed(&[&original]).await;
    pass_with_wrong_smtp_ca(&env).await;

    let right = env.settings(&ConfigOptions::default());
    let report = run_pass(&right).await.expect("pass runs");
    assert_eq!(report.mailboxes[0].forwarded, 1);
    let delivered = wait_for_helpdesk(&env, 1).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(split_delivered(&delivered[0].bytes).1, original);
}

/// Runs a pass with the wrong SMTP CA: exit 2, an error that names the
/// SMTP server and the certificate problem, and nothing recorded. Returns
/// the error.
async fn pass_with_wrong_smtp_ca(env: &TestEnv) -> String {
    let wrong = env.settings(&ConfigOptions {
        smtp_ca: Some(env.stack.wrong_ca.clone()),
        ..ConfigOptions::default()
    });
    let report = run_pass(&wrong).await.expect("pass runs");
    assert_eq!(report.exit_code(), 2);
    let error = report.mailboxes[0].error.clone().expect("mailbox error");
    assert!(error.contains("SMTP server 127.0.0.1:"), "{error}");
    assert!(error.contains("certificate"), "{error}");
    let store = Store::open(&wrong.store_path).expect("open log");
    assert!(
        store
            .list_messages(&MessageFilter::default())
            .expect("rows")
            .is_empty()
    );
    error
}

/// With a backlog the SMTP sessions are opened while the sizes are
/// fetched; when none opens, the first batch fails at once with that error
/// (no second wait), nothing is recorded, and the fixed config delivers
/// every message exactly once.
#[tokio::test]
async fn smtp_failure_with_a_backlog_is_reported_once_and_records_nothing() {
    let env = TestEnv::new("warmup");
    let originals = backlog("warm", 40);
    env.seed(&originals).await;
    let error = pass_with_wrong_smtp_ca(&env).await;
    assert!(error.contains("not tried again in this pass"), "{error}");

    let right = env.settings(&ConfigOptions::default());
    let report = run_pass(&right).await.expect("pass runs");
    assert_eq!(report.mailboxes[0].forwarded, 40);
    let delivered = wait_for_helpdesk(&env, 40).await;
    assert_eq!(delivered.len(), 40, "each message exactly once");
}

/// A wrong IMAP password makes `deskbridge run` exit 2 with an error that
/// names the server and user, and never prints the password.
#[tokio::test]
async fn wrong_password_exits_2_with_clear_error() {
    let env = TestEnv::new("wrongpw");
    std::fs::write(env.dir.path().join("bad-password"), "not-the-password-7x\n").expect("write");
    let config = env.write_config(&ConfigOptions {
        imap_password_file: Some("bad-password".to_owned()),
        ..ConfigOptions::default()
    });
    // With every log target at its most verbose, async-imap's own (which
    // would print the LOGIN line) included: the password still never shows.
    let output = Command::new(binary())
        .args(["--config"])
        .arg(&config)
        .arg("run")
        .env("DESKBRIDGE_LOG", "trace,async_imap::imap_stream=trace")
        .output()
        .expect("run deskbridge");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("rejected the login"), "{stderr}");
    assert!(stderr.contains(&env.support_user), "{stderr}");
    assert!(!stderr.contains("not-the-password-7x"), "{stderr}");
}

/// An SMTP 4xx leaves the message pending with the reply recorded; a later
/// pass, once the server accepts, delivers it exactly once.
#[tokio::test]
async fn smtp_4xx_leaves_message_pending_until_a_later_pass() {
    let env = TestEnv::new("defer");
    let original = message("G <g@example.org>", "Later", "defer.1@example.org", "later");
    env.seed(&[&original]).await;
    let settings = env.settings(&ConfigOptions::default());
    set_recipient_access(
        &env.stack,
        &env.helpdesk_user,
        Some("450 4.2.0 test says try later"),
    );

    let report = run_pass(&settings).await.expect("pass runs");
    set_recipient_access(&env.stack, &env.helpdesk_user, None);
    let mailbox = &report.mailboxes[0];
    assert_eq!(
        (mailbox.forwarded, mailbox.deferred, mailbox.failed),
        (0, 1, 0)
    );
    assert_eq!(report.exit_code(), 0, "a deferral is not a failure");
    let store = Store::open(&settings.store_path).expect("open log");
    let row = store
        .list_messages(&MessageFilter::default())
        .expect("rows")[0]
        .clone();
    assert_eq!(row.state(), State::Pending);
    assert_eq!(row.attempts, 1);
    let last_error = row.last_error.clone().unwrap_or_default();
    assert!(last_error.contains("450"), "{last_error}");
    drop(store);

    let report = run_pass(&settings).await.expect("second pass runs");
    assert_eq!(report.mailboxes[0].forwarded, 1);
    let delivered = wait_for_helpdesk(&env, 1).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(split_delivered(&delivered[0].bytes).1, original);
    let store = Store::open(&settings.store_path).expect("open log");
    let row = store.message(row.id).expect("read").expect("row");
    assert_eq!((row.state(), row.attempts), (State::Forwarded, 2));
}

/// A message the server keeps deferring is given up once it is older than
/// `give_up_after_hours`: failed as `gave-up` with the last reply, marked
/// `$DeskbridgeFailed`, exit 1, and not tried again.
#[tokio::test]
async fn a_message_deferred_past_give_up_after_is_failed() {
    let env = TestEnv::new("giveup");
    env.seed(&[&message(
        "G <g@example.org>",
        "Old",
        "giveup.1@example.org",
        "old",
    )])
    .await;
    let settings = env.settings(&ConfigOptions::default());
    set_recipient_access(
        &env.stack,
        &env.helpdesk_user,
        Some("450 4.2.0 test says later"),
    );
    let first = run_pass(&settings).await;
    // The message was first seen long ago, as if deferred for days.
    rusqlite::Connection::open(&settings.store_path)
        .and_then(|db| {
            db.execute(
                "UPDATE messages SET first_seen_at = '2000-01-01T00:00:00Z'",
                [],
            )
        })
        .expect("backdate");
    let second = run_pass(&settings).await;
    set_recipient_access(&env.stack, &env.helpdesk_user, None);
    assert_eq!(first.expect("first pass").mailboxes[0].deferred, 1);
    let second = second.expect("second pass");
    assert_eq!(
        (second.mailboxes[0].failed, second.mailboxes[0].deferred),
        (1, 0),
        "{:?}",
        second.mailboxes[0]
    );
    assert_eq!(second.exit_code(), 1);
    let failed = rows_in_state(&settings, State::Failed);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].reason.as_deref(), Some("gave-up"));
    let error = failed[0].last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("still deferred after") && error.contains("450"),
        "{error}"
    );
    let support = read_folder(&env.stack, &env.support_user, "INBOX").await;
    assert!(
        support[0]
            .flags
            .iter()
            .any(|flag| flag.contains("$DeskbridgeFailed"))
    );

    let third = run_pass(&settings).await.expect("third pass");
    assert_eq!(
        (third.mailboxes[0].fetched, third.mailboxes[0].forwarded),
        (0, 0)
    );
    wait_for_helpdesk(&env, 0).await;
}

/// A 5xx to a message's content marks that message failed with the
/// reply, and the pass goes on: a second mailbox in the same pass still
/// forwards.
#[tokio::test]
async fn smtp_5xx_fails_one_message_and_the_pass_goes_on() {
    let env = TestEnv::new("reject");
    let other = TestEnv::new("rejectok");
    env.seed(&[&message(
        "H <h@example.org>",
        "deskbridge-test reject-content no",
        "reject.1@example.org",
        "no",
    )])
    .await;
    other
        .seed(&[&message(
            "I <i@example.org>",
            "Yes",
            "reject.2@example.org",
            "yes",
        )])
        .await;
    let second_mailbox = second_mailbox(&env.stack, "other", &other, &other.helpdesk_user);
    let settings = env.settings(&ConfigOptions {
        extra_mailbox: second_mailbox,
        ..ConfigOptions::default()
    });
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(report.mailboxes[0].failed, 1);
    assert_eq!(report.mailboxes[1].forwarded, 1);
    assert_eq!(report.exit_code(), 1);
    assert_eq!(wait_for_helpdesk(&other, 1).await.len(), 1);

    let failed = rows_in_state(&settings, State::Failed);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].reason.as_deref(), Some("rejected"));
    assert!(
        failed[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("(550): 5.7.1")
    );
    let support = read_folder(&env.stack, &env.support_user, "INBOX").await;
    assert!(
        support[0]
            .flags
            .iter()
            .any(|flag| flag.contains("$DeskbridgeFailed"))
    );

    // A failed message is not retried.
    let again = run_pass(&settings).await.expect("pass runs");
    assert_eq!(
        (again.mailboxes[0].fetched, again.mailboxes[0].failed),
        (0, 0)
    );
}

/// A 5xx to the envelope (here RCPT TO: the intake address is refused) is
/// refused for every message of the mailbox, so none of them fails: the
/// mailbox stops with the server's reply (exit 2), its mail stays pending
/// with no attempt counted and no `$DeskbridgeFailed`, and another
/// mailbox still forwards. Once the server takes the envelope again, the
/// next pass sends each message exactly once.
#[tokio::test]
async fn refused_envelope_stops_the_mailbox_and_fails_nothing() {
    const TOTAL: usize = 6;
    let env = TestEnv::new("envrefused");
    let other = TestEnv::new("envrefusedok");
    let originals = backlog("envrefused", TOTAL);
    // Held with a notice due: a notice to the refused address is not tried
    // (it would be refused too), and goes out with the next pass.
    let held = message(
        "P <p@example.org>",
        "Sealed",
        "envrefused.held@example.org",
        "-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA3ZqN2c5c2VjcmV0AQf/U0VDUkVUIENPTlRFTlQgSEVSRQ==\r\n=Qx1a\r\n-----END PGP MESSAGE-----",
    );
    let mut seeded: Vec<&[u8]> = vec![&held];
    seeded.extend(originals.iter().map(Vec::as_slice));
    env.seed(&seeded).await;
    other
        .seed(&[&message(
            "K <k@example.org>",
            "Fine",
            "envok.1@example.org",
            "ok",
        )])
        .await;
    set_recipient_access(
        &env.stack,
        &env.helpdesk_user,
        Some("550 5.1.1 test says no such intake address"),
    );
    let second_mailbox = second_mailbox(&env.stack, "other", &other, &other.helpdesk_user);
    let settings = env.settings(&ConfigOptions {
        extra_mailbox: format!("batch_size = 2\nheld_notice = true\n{second_mailbox}"),
        ..ConfigOptions::default()
    });
    let report = run_pass(&settings).await;
    set_recipient_access(&env.stack, &env.helpdesk_user, None);
    let report = report.expect("pass runs");
    assert_eq!(report.exit_code(), 2);
    let refused = &report.mailboxes[0];
    assert_eq!(
        (
            refused.forwarded,
            refused.failed,
            refused.held,
            refused.settle_errors
        ),
        (0, 0, 1, 0),
        "{refused:?}"
    );
    let error = refused.error.as_deref().expect("mailbox error");
    for part in [
        "refused the envelope",
        "RCPT TO: permanent error (550): 5.1.1",
        "test says no such intake address",
        &env.helpdesk_user,
        "stays pending",
    ] {
        assert!(error.contains(part), "{part:?} not in {error}");
    }
    assert_eq!(report.mailboxes[1].forwarded, 1);
    assert_eq!(wait_for_helpdesk(&other, 1).await.len(), 1);

    // Batches after the refused one stay unrecorded on the server, or are
    // recorded and left pending: nothing of this mailbox is final.
    let pending = rows_in_state(&settings, State::Pending);
    assert!(2 <= pending.len(), "{} pending", pending.len());
    for state in [State::Forwarded, State::Failed] {
        let rows = rows_in_state(&settings, state);
        assert!(rows.iter().all(|row| row.mailbox == "other"), "{state:?}");
    }
    for row in &pending {
        assert_eq!(row.attempts, 0, "uid {}", row.uid);
    }
    assert!(
        pending.iter().any(|row| row
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("(550): 5.1.1")),
        "the refusal is kept as an error"
    );
    for mail in read_folder(&env.stack, &env.support_user, "INBOX").await {
        assert!(
            !mail.flags.iter().any(|flag| flag.contains("$Deskbridge")),
            "{:?}",
            mail.flags
        );
    }

    let again = run_pass(&settings).await.expect("pass runs");
    assert_eq!(again.exit_code(), 0);
    assert_eq!(again.mailboxes[0].forwarded as usize, TOTAL);
    let delivered = wait_for_helpdesk(&env, TOTAL + 1).await;
    let (notices, forwarded): (Vec<_>, Vec<_>) = delivered
        .into_iter()
        .partition(|mail| find(&mail.bytes, b"Subject: Held message from p@example.org").is_some());
    assert_eq!(notices.len(), 1, "the notice went out with the next pass");
    let mut expected = originals.clone();
    expected.sort();
    assert_eq!(sorted_originals(&forwarded), expected);
}

/// A server that refuses a message after its content (a content filter's
/// 5xx to the final dot) fails that message alone. With one session, each
/// next message's envelope travels with the previous message's end, so
/// the refusal arrives while the next message is already open: that one,
/// and every other, still arrives exactly once.
#[tokio::test]
async fn content_refused_at_the_final_dot_fails_alone() {
    let env = TestEnv::new("dotreject");
    let subjects = [
        "first",
        "deskbridge-test reject-content one",
        "third",
        "deskbridge-test reject-content two",
        "fifth",
    ];
    let originals: Vec<Vec<u8>> = subjects
        .iter()
        .enumerate()
        .map(|(index, subject)| {
            message(
                "J <j@example.org>",
                subject,
                &format!("dotreject.{index}@example.org"),
                "content",
            )
        })
        .collect();
    env.seed(&originals).await;
    let mut settings = env.settings(&ConfigOptions::default());
    settings.smtp.sessions = 1;

    let report = run_pass(&settings).await.expect("pass runs");
    let mailbox = &report.mailboxes[0];
    assert_eq!(
        (mailbox.forwarded, mailbox.failed, mailbox.deferred),
        (3, 2, 0)
    );
    let delivered = wait_for_helpdesk(&env, 3).await;
    let mut expected = vec![
        originals[0].clone(),
        originals[2].clone(),
        originals[4].clone(),
    ];
    expected.sort();
    assert_eq!(sorted_originals(&delivered), expected);

    let failed = rows_in_state(&settings, State::Failed);
    let mut failed_uids: Vec<u32> = failed.iter().map(|row| row.uid).collect();
    failed_uids.sort_unstable();
    assert_eq!(failed_uids, vec![2, 4]);
    for row in &failed {
        let error = row.last_error.as_deref().unwrap_or_default();
        assert!(error.contains("5.7.1"), "{error}");
        assert_eq!(row.reason.as_deref(), Some("rejected"));
    }

    let again = run_pass(&settings).await.expect("pass runs");
    assert_eq!(again.mailboxes[0].fetched, 0);
    assert_eq!(wait_for_helpdesk(&env, 3).await.len(), 3);
}

/// A stop (SIGTERM or Ctrl-C to `deskbridge run`) ends the pass after the
/// message in flight. With one session, the next message's envelope is
/// nearly always open by then: it is abandoned by closing the connection,
/// so the server drops it. Nothing is lost or sent twice: the next pass
/// sends the rest, and every message arrives exactly once.
#[tokio::test]
async fn stop_mid_pass_loses_and_duplicates_nothing() {
    const TOTAL: usize = 40;
    let env = TestEnv::new("stopmid");
    let originals = backlog("stopmid", TOTAL);
    env.seed(&originals).await;
    let mut settings = env.settings(&ConfigOptions::default());
    settings.smtp.sessions = 1;

    // Stops once the log shows a few messages forwarded, mid-send.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = Arc::clone(&stop);
        let path = settings.store_path.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let forwarded = rusqlite::Connection::open(&path)
                    .and_then(|db| {
                        db.query_row(
                            "SELECT count(*) FROM messages WHERE state = 'forwarded'",
                            [],
                            |row| row.get::<_, i64>(0),
                        )
                    })
                    .unwrap_or(0);
                if forwarded >= 3 {
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
            }
        })
    };
    let first = worker::run_once(&settings, &stop)
        .await
        .expect("stopped pass runs");
    watcher.abort();
    assert!(first.interrupted);
    assert_eq!(first.exit_code(), 1, "a stopped pass is not a clean one");
    let first = &first.mailboxes[0];
    // What the stopped pass fetched was forwarded or left pending; what it
    // did not fetch waits for the next pass.
    assert_eq!(
        (first.forwarded + first.deferred, first.failed),
        (first.fetched, 0),
        "{first:?}"
    );
    assert!(
        (first.forwarded as usize) < TOTAL,
        "the stop came after the last message: {first:?}"
    );
    // Counted attempts are real ones: what the stop left unsent has none,
    // so stops never bring a message closer to being given up.
    let left = rows_in_state(&settings, State::Pending);
    assert_eq!(left.len(), first.deferred as usize, "{first:?}");
    // The first batch holds 25 messages and the stop comes after the third:
    // some were fetched and recorded but not sent.
    assert!(!left.is_empty(), "the stop left nothing pending: {first:?}");
    let attempts: Vec<(i64, u32)> = left.iter().map(|row| (row.id, row.attempts)).collect();
    assert!(
        attempts.iter().all(|(_, count)| *count == 0),
        "{attempts:?}"
    );

    let second = run_pass(&settings).await.expect("second pass runs");
    assert_eq!(
        (first.forwarded + second.mailboxes[0].forwarded) as usize,
        TOTAL
    );
    let delivered = wait_for_helpdesk(&env, TOTAL).await;
    let mut expected = originals.clone();
    expected.sort();
    assert_eq!(sorted_originals(&delivered), expected);
    assert_eq!(rows_in_state(&settings, State::Forwarded).len(), TOTAL);
}

/// A server that accepts the connection and never answers is cut off by
/// the timeout, with an error naming the server and the time it waited.
#[tokio::test]
async fn hanging_imap_server_times_out() {
    let env = TestEnv::new("hang");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let holder = std::thread::spawn(move || {
        // Accept and hold the connection open without a word.
        let connection = listener.accept();
        std::thread::sleep(std::time::Duration::from_secs(4));
        drop(connection);
    });
    let settings = env.settings(&ConfigOptions {
        imap_port: Some(port),
        imap_timeout_secs: 1,
        ..ConfigOptions::default()
    });
    // The holder closes the connection after 4 s, which would give another
    // error: this one says the timeout cut it off first.
    let report = run_pass(&settings).await.expect("pass runs");
    let error = report.mailboxes[0].error.clone().expect("timeout error");
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    assert!(error.contains("did not answer within 1 s"), "{error}");
    holder.join().expect("holder thread");
}

/// Two passes on one database at once: the second does nothing and says
/// why. From the CLI that is a normal outcome (exit 0, silent with
/// `--quiet`), as cron meets it when a pass outlasts the interval; `prune`
/// waits for no pass and refuses with exit 2.
#[tokio::test]
async fn overlapping_pass_is_refused() {
    let env = TestEnv::new("overlap");
    env.seed(&[&message(
        "J <j@example.org>",
        "z",
        "lock.1@example.org",
        "z",
    )])
    .await;
    let settings = env.settings(&ConfigOptions::default());
    let held = PassLock::acquire(&settings.store_path).expect("first pass holds the lock");
    let err = run_pass(&settings).await.expect_err("second pass refused");
    assert!(
        format!("{err:#}").contains("another deskbridge pass is running"),
        "{err:#}"
    );
    let config = env.write_config(&ConfigOptions::default());
    let cli = |args: &[&str]| {
        Command::new(binary())
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("deskbridge runs")
    };
    let run = cli(&["run"]);
    assert_eq!(run.status.code(), Some(0));
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(
        said.contains("another deskbridge pass is running"),
        "{said}"
    );
    let quiet = cli(&["run", "--quiet"]);
    assert_eq!(quiet.status.code(), Some(0));
    assert!(
        quiet.stdout.is_empty() && quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    // A holder for over an hour may be stuck: that is an error again.
    let lock_file = format!("{}.lock", settings.store_path.display());
    std::fs::write(&lock_file, "pid 1 since 2026-01-01T00:00:00Z\n").expect("age the lock");
    let stuck = cli(&["run", "--quiet"]);
    assert_eq!(stuck.status.code(), Some(2));
    let said = String::from_utf8_lossy(&stuck.stderr);
    assert!(said.contains("over an hour"), "{said}");
    drop(held);
    wait_for_helpdesk(&env, 0).await;
    let report = run_pass(&settings)
        .await
        .expect("runs once the lock is free");
    assert_eq!(report.mailboxes[0].forwarded, 1);

    let held = PassLock::acquire(&settings.store_path).expect("a pass holds the lock");
    let prune = cli(&["prune", "--older-than", "90d"]);
    assert_eq!(prune.status.code(), Some(2));
    let said = String::from_utf8_lossy(&prune.stderr);
    assert!(
        said.contains("another deskbridge pass is running"),
        "{said}"
    );
    drop(held);
    assert_eq!(
        cli(&["prune", "--older-than", "90d"]).status.code(),
        Some(0)
    );
    // Minutes are no months: an age under 30 days needs --force (0m would
    // prune the message forwarded a moment ago).
    let slip = cli(&["prune", "--older-than", "0m"]);
    assert_eq!(slip.status.code(), Some(2));
    let said = String::from_utf8_lossy(&slip.stderr);
    assert!(said.contains("less than 30 days"), "{said}");
    assert!(
        rows_in_state(&settings, State::Forwarded)[0]
            .subject
            .is_some(),
        "nothing was pruned"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        cli(&["prune", "--older-than", "0m", "--force"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        rows_in_state(&settings, State::Forwarded)[0].subject,
        None,
        "--force prunes"
    );
}

/// `deskbridge messages --json` prints one object per line with the fields
/// scripts rely on; `status` and `show` read the same log.
#[tokio::test]
async fn cli_reads_the_log() {
    let env = TestEnv::new("cli");
    env.seed(&[
        &message("K <k@example.org>", "Plain", "cli.1@example.org", "k"),
        &message(
            "L <l@example.org>",
            "Armored",
            "cli.2@example.org",
            "-----BEGIN PGP MESSAGE-----\r\nhQEMA\r\n-----END PGP MESSAGE-----",
        ),
    ])
    .await;
    let config = env.write_config(&ConfigOptions::default());
    let run = Command::new(binary())
        .arg("--config")
        .arg(&config)
        .arg("run")
        .output()
        .expect("run");
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary = String::from_utf8_lossy(&run.stdout);
    assert!(summary.contains("forwarded 1, held 1"), "{summary}");

    let output = Command::new(binary())
        .arg("--config")
        .arg(&config)
        .args(["messages", "--json"])
        .output()
        .expect("messages");
    assert!(output.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 2);
    // A mailbox name the log does not have is said, not shown as "none".
    let unknown = Command::new(binary())
        .arg("--config")
        .arg(&config)
        .args(["messages", "--mailbox", "Support"])
        .output()
        .expect("messages --mailbox");
    assert!(unknown.status.success());
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        said.contains("no mailbox named 'Support' (it has: support)"),
        "{said}"
    );
    for line in &lines {
        for key in ["id", "mailbox", "uid", "message_id", "state", "reason"] {
            assert!(line.get(key).is_some(), "missing {key} in {line}");
        }
    }
    let held = lines
        .iter()
        .find(|line| line["state"] == "held")
        .expect("held line");
    assert_eq!(held["reason"], "pgp-encrypted");
    assert_eq!(held["message_id"], "cli.2@example.org");

    let held_id = held["id"].as_i64().expect("id");
    let show = Command::new(binary())
        .arg("--db")
        .arg(env.db_path())
        .args(["show", &held_id.to_string()])
        .output()
        .expect("show");
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("pgp-encrypted") && text.contains("history"),
        "{text}"
    );

    let status = Command::new(binary())
        .arg("--config")
        .arg(&config)
        .arg("status")
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("forwarded 1, held 1"), "{text}");
}

/// A pending message (deferred last pass) that someone else deletes before
/// the next pass is marked failed as `vanished`, after the server confirms
/// it is gone; the other pending message of the batch is forwarded.
#[tokio::test]
async fn pending_message_deleted_meanwhile_is_marked_vanished() {
    let env = TestEnv::new("vanish");
    env.seed(&[
        &message("M <m@example.org>", "One", "gone.1@example.org", "one"),
        &message("M <m@example.org>", "Two", "gone.2@example.org", "two"),
    ])
    .await;
    let settings = env.settings(&ConfigOptions::default());
    set_recipient_access(&env.stack, &env.helpdesk_user, Some("450 4.2.0 later"));
    let report = run_pass(&settings).await.expect("pass runs");
    set_recipient_access(&env.stack, &env.helpdesk_user, None);
    assert_eq!(report.mailboxes[0].deferred, 2);

    let mut session = crate::helpers::imap_login(&env.stack, &env.support_user).await;
    session.select("INBOX").await.expect("select");
    let found = session
        .uid_search("HEADER Message-ID gone.1@example.org")
        .await
        .expect("search");
    let uid = *found.iter().next().expect("the first message");
    let stored: Vec<_> = session
        .uid_store(uid.to_string(), "+FLAGS.SILENT (\\Deleted)")
        .await
        .expect("store")
        .collect()
        .await;
    assert!(stored.iter().all(Result::is_ok));
    let expunged: Vec<_> = session.expunge().await.expect("expunge").collect().await;
    assert_eq!(expunged.len(), 1);
    let _ = session.logout().await;

    let report = run_pass(&settings).await.expect("second pass runs");
    let mailbox = &report.mailboxes[0];
    assert_eq!(mailbox.error, None);
    assert_eq!((mailbox.forwarded, mailbox.failed), (1, 1));
    assert_eq!(report.exit_code(), 1);
    let failed = rows_in_state(&settings, State::Failed);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].uid, uid);
    assert_eq!(failed[0].reason.as_deref(), Some("vanished"));
    assert_eq!(wait_for_helpdesk(&env, 1).await.len(), 1);
}

/// Lines a man in the middle appends to the plaintext reply to STARTTLS
/// must not be read later as the server's replies inside TLS (they would
/// shift every reply by one, and a message could be marked forwarded on
/// DATA's 354): deskbridge leaves them in the socket, where they break the
/// TLS handshake.
#[tokio::test]
async fn starttls_reply_injection_breaks_the_handshake() {
    let env = TestEnv::new("inject");
    let port = fake_smtp(&env.stack, b"250 injected\r\n", |command| {
        Some(if command.starts_with("EHLO") {
            b"250-fake\r\n250 PIPELINING\r\n"
        } else {
            b"221 bye\r\n"
        })
    })
    .await;
    let mut settings = env.settings(&ConfigOptions::default());
    settings.smtp.port = port;
    settings.smtp.credentials = None;
    let err = deskbridge::sink::connect(&settings.smtp)
        .await
        .expect_err("the injected line must not become a reply");
    let message = err.to_string();
    assert!(message.contains("TLS with SMTP server"), "{message}");
}

/// A 4xx to AUTH (454: the server cannot check logins just now) is no
/// verdict on the password: the error says so, and that the next pass
/// tries again, instead of sending the user to check the credentials.
#[tokio::test]
async fn a_temporary_auth_failure_is_not_called_a_wrong_password() {
    let env = TestEnv::new("auth454");
    let port = fake_smtp(&env.stack, b"", |command| {
        Some(if command.starts_with("EHLO") {
            b"250-fake\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n"
        } else if command.starts_with("AUTH") {
            b"454 4.7.0 Temporary authentication failure\r\n"
        } else {
            b"221 bye\r\n"
        })
    })
    .await;
    let mut settings = env.settings(&ConfigOptions::default());
    settings.smtp.port = port;
    let err = deskbridge::sink::connect(&settings.smtp)
        .await
        .expect_err("AUTH was deferred");
    let message = err.to_string();
    assert!(
        message.contains("454 4.7.0") || message.contains("(454)"),
        "{message}"
    );
    assert!(message.contains("the next pass tries again"), "{message}");
    assert!(
        !message.contains("check username and password"),
        "{message}"
    );
}

/// On a file system with less free space than `[store] min_free_mb`, a
/// pass stops before it sends anything, with an error that names the log
/// and the setting: a message sent but not recorded would be sent again.
/// Once there is room, the next pass sends each message once.
#[tokio::test]
async fn a_nearly_full_log_disk_stops_the_pass_before_sending() {
    let env = TestEnv::new("lowspace");
    env.seed(&[&message(
        "L <l@example.org>",
        "Space",
        "space.1@example.org",
        "l",
    )])
    .await;
    let mut settings = env.settings(&ConfigOptions::default());
    // More than any disk has: the check must stop the pass.
    settings.store_min_free = u64::MAX;
    let err = run_pass(&settings).await.expect_err("too little space");
    let message = format!("{err:#}");
    assert!(message.contains("min_free_mb"), "{message}");
    assert!(
        message.contains(&settings.store_path.display().to_string()),
        "{message}"
    );
    wait_for_helpdesk(&env, 0).await;
    assert!(rows_in_state(&settings, State::Forwarded).is_empty());

    settings.store_min_free = 16 * 1024 * 1024;
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(report.mailboxes[0].forwarded, 1, "{report:?}");
    wait_for_helpdesk(&env, 1).await;
}

/// Free space as if the disk filled up once the first batch (25
/// messages) was forwarded: plenty before, none after.
fn full_after_the_first_batch(path: &std::path::Path) -> std::io::Result<u64> {
    let forwarded: i64 = rusqlite::Connection::open(path)
        .and_then(|db| {
            db.query_row(
                "SELECT count(*) FROM messages WHERE state = 'forwarded'",
                [],
                |row| row.get(0),
            )
        })
        .unwrap_or(0);
    Ok(if forwarded < 25 { u64::MAX } else { 0 })
}

/// A disk that fills up in the middle of a pass stops it before the next
/// batch is recorded or sent: the mailbox reports the error (exit 2), what
/// was recorded stays pending with no attempt counted, and the next pass
/// sends the rest, each message once.
#[tokio::test]
async fn a_disk_filling_mid_pass_stops_before_the_next_batch() {
    const TOTAL: usize = 30;
    let env = TestEnv::new("fillsmid");
    let originals = backlog("fillsmid", TOTAL);
    env.seed(&originals).await;
    let mut settings = env.settings(&ConfigOptions::default());
    settings.log_free_space = full_after_the_first_batch;
    let first = run_pass(&settings).await.expect("pass runs");
    assert_eq!(first.exit_code(), 2, "{first:?}");
    let mailbox = &first.mailboxes[0];
    assert_eq!(mailbox.forwarded, 25, "{mailbox:?}");
    let error = mailbox.error.clone().expect("low-space error");
    assert!(error.contains("min_free_mb"), "{error}");
    let pending = rows_in_state(&settings, State::Pending);
    assert!(pending.iter().all(|row| row.attempts == 0), "{pending:?}");

    settings.log_free_space = deskbridge::store::free_bytes;
    let second = run_pass(&settings).await.expect("pass runs");
    assert_eq!(second.mailboxes[0].forwarded, 5, "{second:?}");
    let delivered = wait_for_helpdesk(&env, TOTAL).await;
    let mut expected = originals.clone();
    expected.sort();
    assert_eq!(sorted_originals(&delivered), expected);
}

/// A session the server drops before any of the content was sent (as a
/// server does with a session idle past its timeout) cannot have delivered
/// the message: it stays pending, and the attempt does not count towards
/// giving up.
#[tokio::test]
async fn a_break_before_the_content_is_not_an_attempt() {
    let env = TestEnv::new("earlybreak");
    env.seed(&[&message(
        "N <n@example.org>",
        "Early",
        "early.1@example.org",
        "n",
    )])
    .await;
    let port = fake_smtp(&env.stack, b"", |command| {
        if command.starts_with("EHLO") {
            Some(b"250-fake\r\n250 PIPELINING\r\n")
        } else {
            None
        }
    })
    .await;
    let mut settings = env.settings(&ConfigOptions::default());
    settings.smtp.port = port;
    settings.smtp.credentials = None;
    let report = run_pass(&settings).await.expect("pass runs");
    let mailbox = &report.mailboxes[0];
    assert_eq!((mailbox.forwarded, mailbox.deferred), (0, 1), "{mailbox:?}");
    let row = rows_in_state(&settings, State::Pending)
        .pop()
        .expect("still pending");
    assert_eq!(row.attempts, 0, "no content went out: no attempt");
    let error = row.last_error.unwrap_or_default();
    assert!(error.contains("broke"), "{error}");
}

/// A session that breaks before a message's content went out hands the
/// message back: a fresh session sends it in the same pass, counted as one
/// attempt, instead of leaving it for the next pass.
#[tokio::test]
async fn a_message_whose_session_broke_early_goes_out_on_a_fresh_one() {
    fn answer(command: &str) -> Option<&'static [u8]> {
        // The first MAIL FROM this server ever sees drops its connection.
        static DROPPED: AtomicBool = AtomicBool::new(false);
        let line = command.trim_end();
        Some(if line.starts_with("EHLO") {
            b"250-fake\r\n250 PIPELINING\r\n"
        } else if line.starts_with("MAIL FROM") {
            if !DROPPED.swap(true, Ordering::SeqCst) {
                return None;
            }
            b"250 2.1.0 ok\r\n"
        } else if line.starts_with("RCPT TO") || line == "RSET" {
            b"250 2.1.5 ok\r\n"
        } else if line == "DATA" {
            b"354 go on\r\n"
        } else if line == "." {
            b"250 2.0.0 queued as FAKE\r\n"
        } else if line == "QUIT" {
            b"221 bye\r\n"
        } else {
            b""
        })
    }
    let env = TestEnv::new("freshsession");
    env.seed(&[
        &message("F <f@example.org>", "One", "fresh.1@example.org", "one"),
        &message("F <f@example.org>", "Two", "fresh.2@example.org", "two"),
    ])
    .await;
    let port = fake_smtp(&env.stack, b"", answer).await;
    let mut settings = env.settings(&ConfigOptions::default());
    settings.smtp.port = port;
    settings.smtp.credentials = None;
    settings.smtp.sessions = 1;
    let report = run_pass(&settings).await.expect("pass runs");
    let mailbox = &report.mailboxes[0];
    assert_eq!(
        (mailbox.forwarded, mailbox.deferred, mailbox.failed),
        (2, 0, 0),
        "{mailbox:?}"
    );
    assert_eq!(report.exit_code(), 0);
    for row in rows_in_state(&settings, State::Forwarded) {
        assert_eq!(row.attempts, 1, "uid {}", row.uid);
        assert_eq!(row.smtp_reply.as_deref(), Some("250 2.0.0 queued as FAKE"));
    }
}

/// A message that breaks every session before its content (here: the
/// server drops the connection at `BODY=8BITMIME`, which only its 8-bit
/// bytes ask for) is handed to another session once, then waits for the
/// next pass: it cannot take every session down with it and leave the
/// rest of its batch unsent.
#[tokio::test]
async fn a_message_that_breaks_sessions_does_not_hold_up_its_batch() {
    fn answer(command: &str) -> Option<&'static [u8]> {
        let line = command.trim_end();
        Some(if line.starts_with("EHLO") {
            b"250-fake\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
        } else if line.starts_with("MAIL FROM") && line.contains("BODY=8BITMIME") {
            return None;
        } else if line.starts_with("MAIL FROM") || line.starts_with("RCPT TO") || line == "RSET" {
            b"250 2.1.0 ok\r\n"
        } else if line == "DATA" {
            b"354 go on\r\n"
        } else if line == "." {
            b"250 2.0.0 queued as FAKE\r\n"
        } else if line == "QUIT" {
            b"221 bye\r\n"
        } else {
            b""
        })
    }
    let env = TestEnv::new("breaker");
    env.seed(&[
        &message(
            "B <b@example.org>",
            "Zürich",
            "breaker.1@example.org",
            "Grüße",
        ),
        &message("B <b@example.org>", "Two", "breaker.2@example.org", "two"),
        &message(
            "B <b@example.org>",
            "Three",
            "breaker.3@example.org",
            "three",
        ),
    ])
    .await;
    let port = fake_smtp(&env.stack, b"", answer).await;
    let mut settings = env.settings(&ConfigOptions::default());
    settings.smtp.port = port;
    settings.smtp.credentials = None;
    settings.smtp.sessions = 1;
    let report = run_pass(&settings).await.expect("pass runs");
    let mailbox = &report.mailboxes[0];
    assert_eq!(
        (mailbox.forwarded, mailbox.deferred, mailbox.failed),
        (2, 1, 0),
        "{mailbox:?}"
    );
    let pending = rows_in_state(&settings, State::Pending);
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].uid, pending[0].attempts), (1, 0));
    assert!(
        pending[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("broke"),
        "{:?}",
        pending[0].last_error
    );
}

/// A message that disappears between the listing and the fetch (here its
/// Maildir file becomes a directory, which Dovecot then treats as
/// expunged) does not pin the checkpoint: the server says it is gone.
#[tokio::test]
async fn a_message_gone_before_its_fetch_does_not_pin_the_checkpoint() {
    let env = TestEnv::new("gone");
    env.seed(&[
        &message("R <r@example.org>", "One", "gone.1@example.org", "one"),
        &message("R <r@example.org>", "Two", "gone.2@example.org", "two"),
        &message("R <r@example.org>", "Three", "gone.3@example.org", "three"),
    ])
    .await;
    let path = env.support_file_with("gone.2@example.org");
    std::fs::remove_file(&path).expect("remove");
    std::fs::create_dir(&path).expect("a directory in its place");
    let settings = env.settings(&ConfigOptions::default());
    let report = run_pass(&settings).await.expect("pass runs");
    let mailbox = &report.mailboxes[0];
    assert_eq!(
        (mailbox.forwarded, mailbox.unfetched),
        (2, 0),
        "{mailbox:?}"
    );
    assert_eq!(report.exit_code(), 0);
    let checkpoint = Store::open(&settings.store_path)
        .expect("open log")
        .checkpoint("support")
        .expect("read")
        .expect("checkpoint");
    assert_eq!(checkpoint.last_uid, 3, "past the message that is gone");
}

/// A world whose support mailbox is a [`fake_imap`] server holding `count`
/// backlog messages (UIDs 1, 2, ...), UID `refused` treated as `how` says,
/// each response allowed `imap_timeout_secs`.
async fn on_fake_imap(
    tag: &str,
    count: usize,
    (refused, how): (u32, FetchRefusal),
    imap_timeout_secs: u64,
) -> (TestEnv, Settings, Vec<Vec<u8>>) {
    let env = TestEnv::new(tag);
    let messages = backlog(tag, count);
    let port = fake_imap(&env.stack, messages.clone(), refused, how).await;
    let settings = env.settings(&ConfigOptions {
        imap_port: Some(port),
        imap_timeout_secs,
        ..ConfigOptions::default()
    });
    (env, settings, messages)
}

/// A message the IMAP server will not return (it answers the FETCH with
/// NO, as Gmail and Exchange do for one they cannot read) is left in the
/// folder and reported with exit 1; the rest of the batch is forwarded,
/// and the next pass asks again for that one message only.
#[tokio::test]
async fn a_message_the_server_refuses_holds_up_nothing_else() {
    let (env, settings, _) = on_fake_imap("refused", 3, (2, FetchRefusal::No), 20).await;
    let report = run_pass(&settings).await.expect("pass runs");
    let mailbox = &report.mailboxes[0];
    assert_eq!(mailbox.error, None);
    assert_eq!(
        (mailbox.forwarded, mailbox.unfetched),
        (2, 1),
        "{mailbox:?}"
    );
    assert_eq!(report.exit_code(), 1);
    let delivered = wait_for_helpdesk(&env, 2).await;
    assert_eq!(delivered.len(), 2);
    let checkpoint = Store::open(&settings.store_path)
        .expect("open log")
        .checkpoint("support")
        .expect("read")
        .expect("checkpoint");
    assert_eq!(checkpoint.last_uid, 1, "held below the refused message");

    let again = run_pass(&settings).await.expect("second pass runs");
    let mailbox = &again.mailboxes[0];
    assert_eq!(
        (mailbox.fetched, mailbox.forwarded, mailbox.unfetched),
        (0, 0, 1),
        "only the refused message is asked for again: {mailbox:?}"
    );
    assert_eq!(wait_for_helpdesk(&env, 2).await.len(), 2);
}

/// A server that stalls on one message (no answer within the timeout)
/// holds up nothing else either: the batch is fetched again one message at
/// a time on a new session, the others are forwarded, and that one is
/// reported (exit 1) and stays in the folder for the next pass.
#[tokio::test]
async fn a_message_the_server_stalls_on_holds_up_nothing_else() {
    let (env, settings, messages) = on_fake_imap("stalled", 3, (2, FetchRefusal::Stall), 2).await;
    let report = run_pass(&settings).await.expect("pass runs");
    let mailbox = &report.mailboxes[0];
    assert_eq!(mailbox.error, None);
    assert_eq!(
        (mailbox.forwarded, mailbox.unfetched),
        (2, 1),
        "{mailbox:?}"
    );
    assert_eq!(report.exit_code(), 1);
    let delivered = wait_for_helpdesk(&env, 2).await;
    let mut expected = vec![messages[0].clone(), messages[2].clone()];
    expected.sort();
    assert_eq!(
        sorted_originals(&delivered),
        expected,
        "all but the stalled message"
    );
    let checkpoint = Store::open(&settings.store_path)
        .expect("open log")
        .checkpoint("support")
        .expect("read")
        .expect("checkpoint");
    assert_eq!(checkpoint.last_uid, 1, "held below the stalled message");
}

/// An IMAP session that drops while settling (here at the first STORE,
/// as a NAT drops a session left idle while a slow SMTP reply was
/// awaited) is replaced once and the settle tried again: the pass exits 0
/// with every message settled, not with settle errors for the next pass.
#[tokio::test]
async fn a_session_dropped_while_settling_is_replaced() {
    let (env, settings, _) =
        on_fake_imap("settledrop", 2, (0, FetchRefusal::DropFirstStore), 20).await;
    let report = run_pass(&settings).await.expect("pass runs");
    let mailbox = &report.mailboxes[0];
    assert_eq!(mailbox.error, None);
    assert_eq!(
        (mailbox.forwarded, mailbox.settle_errors),
        (2, 0),
        "{mailbox:?}"
    );
    assert_eq!(report.exit_code(), 0);
    assert_eq!(wait_for_helpdesk(&env, 2).await.len(), 2);
    let store = Store::open(&settings.store_path).expect("open log");
    assert!(
        store.unfinished("support", 7).expect("rows").is_empty(),
        "every row settled"
    );
}

/// A server that answers a FETCH with untagged lines for ever, never
/// finishing it, cannot hold the pass: the command as a whole gets ten
/// times the timeout, and the batch is then fetched one message at a time.
#[tokio::test]
async fn a_fetch_that_never_ends_is_cut_off() {
    let (env, settings, _) = on_fake_imap("flood", 2, (2, FetchRefusal::Flood), 2).await;
    let report = tokio::time::timeout(Duration::from_secs(60), run_pass(&settings))
        .await
        .expect("the pass ends")
        .expect("pass runs");
    let mailbox = &report.mailboxes[0];
    assert_eq!(mailbox.error, None);
    assert_eq!(
        (mailbox.forwarded, mailbox.unfetched),
        (2, 0),
        "{mailbox:?}"
    );
    assert_eq!(wait_for_helpdesk(&env, 2).await.len(), 2);
}

/// Held mail is moved to the held folder on servers without MOVE too: by
/// COPY and `\Deleted`, then UID EXPUNGE of those messages alone when the
/// server has UIDPLUS. Without it nothing is expunged: a plain EXPUNGE
/// would also remove what other clients marked deleted.
#[tokio::test]
async fn held_mail_is_moved_without_move_and_other_deletions_survive() {
    let env = TestEnv::new("nomove");
    let held = message(
        "P <p@example.org>",
        "Sealed",
        "nomove.1@example.org",
        "-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA3ZqN2c5c2VjcmV0AQf/U0VDUkVUIENPTlRFTlQgSEVSRQ==\r\n=Qx1a\r\n-----END PGP MESSAGE-----",
    );
    let plain = message(
        "Q <q@example.org>",
        "Plain",
        "nomove.2@example.org",
        "hello",
    );
    for (capabilities, expunges) in [("IMAP4rev1 UIDPLUS", true), ("IMAP4rev1", false)] {
        let (port, log) = fake_imap_with(
            &env.stack,
            vec![held.clone(), plain.clone()],
            (0, FetchRefusal::No),
            capabilities,
        )
        .await;
        let mut settings = env.settings(&ConfigOptions {
            imap_port: Some(port),
            ..ConfigOptions::default()
        });
        settings.store_path = env
            .db_path()
            .with_file_name(format!("nomove-{expunges}.db"));
        let report = run_pass(&settings).await.expect("pass runs");
        let mailbox = &report.mailboxes[0];
        assert_eq!(
            (mailbox.held, mailbox.forwarded, mailbox.settle_errors),
            (1, 1, 0),
            "{capabilities}: {mailbox:?}"
        );
        let commands = log.lock().expect("log").clone();
        let sent = |prefix: &str| commands.iter().any(|line| line.starts_with(prefix));
        assert!(!sent("UID MOVE"), "{commands:?}");
        assert!(sent("UID COPY 1 "), "{commands:?}");
        assert!(
            sent("UID STORE 1 +FLAGS.SILENT (\\Deleted)"),
            "{commands:?}"
        );
        assert_eq!(
            sent("UID EXPUNGE 1"),
            expunges,
            "{capabilities}: {commands:?}"
        );
        assert!(
            !commands.iter().any(|line| line.trim_end() == "EXPUNGE"),
            "{commands:?}"
        );
    }
    wait_for_helpdesk(&env, 2).await;
}

/// A message file Dovecot cannot read: it drops the connection (BYE) on
/// the FETCH instead of answering NO. deskbridge reconnects, fetches the
/// batch one message at a time, forwards the others and reports that one
/// (exit 1), which stays in the folder for the next pass.
#[tokio::test]
async fn a_message_dovecot_cannot_read_holds_up_nothing_else() {
    let env = TestEnv::new("unreadable");
    env.seed(&[
        &message(
            "U <u@example.org>",
            "One",
            "unreadable.1@example.org",
            "one",
        ),
        &message(
            "U <u@example.org>",
            "Two",
            "unreadable.2@example.org",
            "two",
        ),
        &message(
            "U <u@example.org>",
            "Three",
            "unreadable.3@example.org",
            "three",
        ),
    ])
    .await;
    // Dovecot's mail processes run as `mail`, which may not read it.
    std::fs::set_permissions(
        env.support_file_with("unreadable.2@example.org"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .expect("chmod 000");
    let settings = env.settings(&ConfigOptions::default());
    let report = run_pass(&settings).await.expect("pass runs");
    let mailbox = &report.mailboxes[0];
    assert_eq!(mailbox.error, None);
    assert_eq!(
        (mailbox.forwarded, mailbox.unfetched),
        (2, 1),
        "{mailbox:?}"
    );
    assert_eq!(report.exit_code(), 1);
    assert_eq!(wait_for_helpdesk(&env, 2).await.len(), 2);

    // Readable again (Dovecot may have renamed the file meanwhile): the
    // next pass forwards it.
    let locked: Vec<_> = env
        .support_files()
        .into_iter()
        .filter(|path| {
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(path).expect("stat").permissions(),
            );
            mode & 0o777 == 0
        })
        .collect();
    assert_eq!(locked.len(), 1);
    std::fs::set_permissions(
        &locked[0],
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod back");
    let again = run_pass(&settings).await.expect("second pass runs");
    let mailbox = &again.mailboxes[0];
    assert_eq!(
        (mailbox.fetched, mailbox.forwarded, mailbox.unfetched),
        (1, 1, 0),
        "{mailbox:?}"
    );
    assert_eq!(wait_for_helpdesk(&env, 3).await.len(), 3);
}

/// The same, for a message file whose name does not carry its size (mail
/// delivered by other tools than Dovecot): Dovecot must read the file to
/// answer RFC822.SIZE, and drops the connection while sizes are listed.
/// deskbridge asks one message at a time, and the rest goes on.
#[tokio::test]
async fn a_message_whose_size_dovecot_cannot_read_holds_up_nothing_else() {
    let env = TestEnv::new("sizeless");
    env.seed(&[
        &message("V <v@example.org>", "One", "sizeless.1@example.org", "one"),
        &message("V <v@example.org>", "Two", "sizeless.2@example.org", "two"),
        &message(
            "V <v@example.org>",
            "Three",
            "sizeless.3@example.org",
            "three",
        ),
    ])
    .await;
    // A name without ",S=…,W=…", as other delivery tools write.
    let path = env.support_file_with("sizeless.2@example.org");
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .expect("file name");
    let base = name.split(',').next().expect("base name");
    let bare = env.support_maildir().join("new").join(format!("{base}x"));
    std::fs::rename(&path, &bare).expect("rename");
    std::fs::set_permissions(&bare, std::os::unix::fs::PermissionsExt::from_mode(0o000))
        .expect("chmod 000");
    let settings = env.settings(&ConfigOptions::default());
    let report = run_pass(&settings).await.expect("pass runs");
    let mailbox = &report.mailboxes[0];
    assert_eq!(mailbox.error, None);
    assert_eq!(
        (mailbox.forwarded, mailbox.unfetched),
        (2, 1),
        "{mailbox:?}"
    );
    assert_eq!(wait_for_helpdesk(&env, 2).await.len(), 2);
}

/// A release whose reply never came may have delivered the message: it
/// stays held, the error says where to look, and a second release needs
/// `--force`, which then sends it.
#[tokio::test]
async fn a_release_without_a_reply_needs_force_to_go_again() {
    let env = TestEnv::new("releaseunknown");
    let locked = b"From: Kai <kai@example.org>\r\nTo: support@company.test\r\nSubject: locked\r\nMessage-ID: <ru.1@example.org>\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA1xZ0k2a9fQbAQf/ZmFrZQ==\r\n=abcd\r\n-----END PGP MESSAGE-----\r\n".to_vec();
    env.seed(&[&locked]).await;
    let mut settings = env.settings(&ConfigOptions {
        extra_mailbox: "held_notice = false\nauto_reply = false\n".to_owned(),
        ..ConfigOptions::default()
    });
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(report.mailboxes[0].held, 1);
    let id = rows_in_state(&settings, State::Held)[0].id;

    // The server takes the whole content, then drops the connection.
    let port = fake_smtp(&env.stack, b"", |command| {
        if command.starts_with("EHLO") {
            Some(b"250-fake\r\n250 PIPELINING\r\n")
        } else if command.starts_with("MAIL") || command.starts_with("RCPT") {
            Some(b"250 2.0.0 ok\r\n")
        } else if command.starts_with("DATA") {
            Some(b"354 go ahead\r\n")
        } else if command.trim_end() == "." {
            None
        } else {
            Some(b"")
        }
    })
    .await;
    let real_port = settings.smtp.port;
    let real_credentials = settings.smtp.credentials.take();
    settings.smtp.port = port;
    let unknown = deskbridge::worker::release(&settings, id, false)
        .await
        .expect_err("no reply")
        .to_string();
    assert!(unknown.contains("reply never came"), "{unknown}");
    assert!(unknown.contains("Resent-Message-ID"), "{unknown}");
    settings.smtp.port = real_port;
    settings.smtp.credentials = real_credentials;
    let refused = deskbridge::worker::release(&settings, id, false)
        .await
        .expect_err("a second release needs --force")
        .to_string();
    assert!(refused.contains("--force"), "{refused}");
    assert_eq!(rows_in_state(&settings, State::Held).len(), 1);
    deskbridge::worker::release(&settings, id, true)
        .await
        .expect("released with --force");
    assert_eq!(wait_for_helpdesk(&env, 1).await.len(), 1);
}
