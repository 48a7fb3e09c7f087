//! `status --check`: the verdict a monitoring system reads from the log,
//! through the real CLI, after real passes.

use std::process::{Command, Output};

use crate::helpers::{
    ConfigOptions, TestEnv, backlog, binary, sorted_originals, wait_for_helpdesk,
};

fn deskbridge(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run deskbridge")
}

/// Starts `deskbridge run --quiet` in the background, for a signal.
fn start_pass(config: &std::path::Path) -> std::process::Child {
    Command::new(binary())
        .arg("--config")
        .arg(config)
        .args(["run", "--quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start a pass")
}

/// Runs one pass, which must succeed.
fn run_pass(config: &std::path::Path) {
    let run = deskbridge(config, &["run", "--quiet"]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// Before any pass the check is critical; after a pass it is ok; once the
/// passes stop, it turns critical again and says why.
#[tokio::test]
async fn status_check_follows_the_passes() {
    let env = TestEnv::new("monitor");
    env.seed(&backlog("monitor", 1)).await;
    let config = env.write_config(&ConfigOptions::default());

    let before = deskbridge(&config, &["status", "--check"]);
    let said = String::from_utf8_lossy(&before.stdout);
    assert_eq!(before.status.code(), Some(2), "{said}");
    assert!(
        said.starts_with("DESKBRIDGE CRITICAL - no log at "),
        "{said}"
    );

    run_pass(&config);
    let after = deskbridge(&config, &["status", "--check", "--max-age", "10m"]);
    let said = String::from_utf8_lossy(&after.stdout);
    assert_eq!(after.status.code(), Some(0), "{said}");
    assert!(
        said.starts_with("DESKBRIDGE OK - 1 mailbox(es) passed within the last 10m\n"),
        "{said}"
    );
    assert!(said.contains("OK       support: last pass "), "{said}");

    // The timer stopped two hours ago.
    let log = rusqlite::Connection::open(env.db_path()).expect("open the log");
    let two_hours_ago = deskbridge::clock::rfc3339(deskbridge::clock::unix_now() - 7200);
    log.execute(
        "UPDATE mailboxes SET last_pass_started_at = ?1, last_pass_finished_at = ?1",
        [&two_hours_ago],
    )
    .expect("age the last pass");
    drop(log);
    let stale = deskbridge(&config, &["status", "--check"]);
    let said = String::from_utf8_lossy(&stale.stdout);
    assert_eq!(stale.status.code(), Some(2), "{said}");
    assert!(
        said.contains("support: no pass finished within 15m")
            && said.contains("is the timer or cron job running?"),
        "{said}"
    );

    // The next pass fails at login: critical, with the error.
    std::fs::write(env.dir.path().join("password"), "wrong-password-8k\n").expect("write");
    let failed_run = deskbridge(&config, &["run", "--quiet"]);
    assert_eq!(failed_run.status.code(), Some(2));
    let failing = deskbridge(&config, &["status", "--check"]);
    let said = String::from_utf8_lossy(&failing.stdout);
    assert_eq!(failing.status.code(), Some(2), "{said}");
    assert!(said.contains("error: mailbox support"), "{said}");
    assert!(said.contains("rejected the login"), "{said}");
    assert!(!said.contains("wrong-password-8k"), "{said}");
}

/// A mailbox taken out of the config stays in the log, but `status --check
/// --db` (which has no config to read) stops expecting passes over it once
/// a pass has run without it.
#[tokio::test]
async fn status_check_by_log_forgets_mailboxes_removed_from_the_config() {
    let env = TestEnv::new("monitor-retire");
    env.seed(&backlog("monitor-retire", 1)).await;
    let config = env.write_config(&ConfigOptions::default());
    // An earlier config also had "sales", whose last pass was yesterday.
    run_pass(&config);
    let log = rusqlite::Connection::open(env.db_path()).expect("open the log");
    let yesterday = deskbridge::clock::rfc3339(deskbridge::clock::unix_now() - 86_400);
    log.execute(
        "INSERT INTO mailboxes (name, last_pass_started_at, last_pass_finished_at, last_pass_outcome)
         VALUES ('sales', ?1, ?1, 'ok')",
        [&yesterday],
    )
    .expect("an old mailbox");
    drop(log);
    let db = env.db_path();
    let db = db.to_str().expect("a UTF-8 path");
    let by_log = |args: &[&str]| {
        Command::new(binary())
            .args(["--db", db])
            .args(args)
            .output()
            .expect("run deskbridge")
    };
    let before = by_log(&["status", "--check"]);
    let said = String::from_utf8_lossy(&before.stdout);
    assert_eq!(before.status.code(), Some(2), "{said}");
    assert!(
        said.contains("sales: no pass finished within 15m"),
        "{said}"
    );

    run_pass(&config);
    let after = by_log(&["status", "--check"]);
    let said = String::from_utf8_lossy(&after.stdout);
    assert_eq!(after.status.code(), Some(0), "{said}");
    assert!(
        said.starts_with("DESKBRIDGE OK - 1 mailbox(es) passed"),
        "{said}"
    );
    assert!(!said.contains("sales"), "{said}");
    let status = by_log(&["status"]);
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(
        said.contains("mailbox sales (not in the config since "),
        "{said}"
    );
}

/// A second signal ends a pass at once (exit 130), here while it waits on
/// an IMAP server that accepted and says nothing: the log records a stop,
/// not a death, so `status --check` warns rather than calling it critical,
/// and the next pass does not take it for a killed one.
#[tokio::test]
async fn a_pass_ended_by_a_second_signal_is_a_warning() {
    let env = TestEnv::new("monitor-sig");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let holder = std::thread::spawn(move || {
        let connection = listener.accept();
        std::thread::sleep(std::time::Duration::from_secs(3));
        drop(connection);
    });
    let config = env.write_config(&ConfigOptions {
        imap_port: Some(port),
        imap_timeout_secs: 30,
        ..ConfigOptions::default()
    });
    let mut pass = start_pass(&config);
    // Wait until the pass has recorded its start, then signal twice.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while rusqlite::Connection::open(env.db_path())
        .and_then(|db| {
            db.query_row(
                "SELECT count(*) FROM mailboxes WHERE last_pass_started_at IS NOT NULL",
                [],
                |row| row.get::<_, i64>(0),
            )
        })
        .unwrap_or(0)
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the pass never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for _ in 0..2 {
        let sent = Command::new("kill")
            .args(["-INT", &pass.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        // NOTE: Apart enough that the pass sees two signals, not one: two
        // that arrive before its watcher runs count once.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let code = pass.wait().expect("the pass ends").code();
    assert_eq!(code, Some(130), "the second signal exits at once");

    let check = deskbridge(&config, &["status", "--check"]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert!(
        said.starts_with("DESKBRIDGE WARNING - support: last pass ")
            && said.contains(": interrupted by a second signal"),
        "{said}"
    );
    holder.join().expect("holder thread");
}

/// One SIGTERM (what `systemctl stop` sends) ends a pass between messages:
/// exit 1, the log says it was interrupted, and the next pass sends the
/// rest, each message exactly once.
#[tokio::test]
async fn one_sigterm_ends_a_pass_and_the_next_sends_the_rest_once() {
    const TOTAL: usize = 300;
    let env = TestEnv::new("monitor-term");
    let originals = backlog("monitor-term", TOTAL);
    env.seed(&originals).await;
    let config = env.write_config(&ConfigOptions {
        extra_mailbox: "batch_size = 20\n".to_owned(),
        ..ConfigOptions::default()
    });
    // One session, so the pass lasts long enough to be stopped.
    let text = std::fs::read_to_string(&config).expect("read config");
    let slow = text.replace(
        "helo_name = \"bridge.company.test\"\n",
        "helo_name = \"bridge.company.test\"\nsessions = 1\n",
    );
    assert_ne!(slow, text, "the config names its helo_name");
    std::fs::write(&config, slow).expect("write config");
    let forwarded = || {
        rusqlite::Connection::open(env.db_path())
            .and_then(|db| {
                db.query_row(
                    "SELECT count(*) FROM messages WHERE state = 'forwarded'",
                    [],
                    |row| row.get::<_, i64>(0),
                )
            })
            .unwrap_or(0)
    };
    let mut pass = start_pass(&config);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while forwarded() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing was forwarded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let sent = Command::new("kill")
        .args(["-TERM", &pass.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
    let code = pass.wait().expect("the pass ends").code();
    assert_eq!(code, Some(1), "a stopped pass exits 1");
    let before = forwarded();
    assert!(
        0 < before && before < TOTAL as i64,
        "stopped mid-pass: {before} forwarded"
    );
    let check = deskbridge(&config, &["status", "--check"]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(said.contains("interrupted"), "{said}");

    run_pass(&config);
    assert_eq!(forwarded(), TOTAL as i64);
    let delivered = wait_for_helpdesk(&env, TOTAL).await;
    let mut expected = originals.clone();
    expected.sort();
    assert_eq!(sorted_originals(&delivered), expected);
}
