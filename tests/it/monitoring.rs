//! `status --check`: the verdict a monitoring system reads from the log,
//! through the real CLI, after real passes.

use std::process::{Command, Output};

use crate::helpers::{ConfigOptions, TestEnv, backlog, binary};

fn deskbridge(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run deskbridge")
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

    let run = deskbridge(&config, &["run", "--quiet"]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
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
