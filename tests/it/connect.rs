//! `check-config --connect`: every connection is tried as a pass would try
//! it, each failure is named, and nothing is sent, changed or logged.

use std::process::{Command, Output};

use crate::helpers::{
    ConfigOptions, TestEnv, backlog, binary, read_folder, read_folder_if_any, second_mailbox,
    set_recipient_access, wait_until_queue_clear, write_secret,
};

fn check_connect(config: &std::path::Path) -> Output {
    Command::new(binary())
        .arg("--config")
        .arg(config)
        .args(["check-config", "--connect"])
        .output()
        .expect("run deskbridge check-config --connect")
}

/// A working setup passes, and the check leaves no trace: no log, no mail
/// at the helpdesk, no flag or move in the support mailbox.
#[tokio::test]
async fn connect_check_passes_and_changes_nothing() {
    let env = TestEnv::new("probe-ok");
    env.seed(&backlog("probe-ok", 2)).await;
    let config = env.write_config(&ConfigOptions {
        extra_mailbox: "after_forward = \"move\"\nforwarded_folder = \"Done/Forwarded\"\n"
            .to_owned(),
        ..ConfigOptions::default()
    });

    let output = check_connect(&config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "takes mail from <bridge@company.test> to <{}>",
            env.helpdesk_user
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("logged in as {} (password)", env.support_user)),
        "{stdout}"
    );
    assert!(stdout.contains("folder INBOX: 2 messages"), "{stdout}");
    assert!(
        stdout.contains(
            "forwarded_folder Done/Forwarded (Done.Forwarded on this server) does not exist yet"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("no log yet"), "{stdout}");
    assert!(stdout.contains("every connection works"), "{stdout}");

    assert!(!env.db_path().exists(), "the check created the log");
    wait_until_queue_clear(&env.stack, &env.helpdesk_user).await;
    let delivered = read_folder_if_any(&env.stack, &env.helpdesk_user, "INBOX").await;
    assert!(
        delivered.as_ref().is_none_or(Vec::is_empty),
        "the check delivered mail"
    );
    let support = read_folder(&env.stack, &env.support_user, "INBOX").await;
    assert_eq!(support.len(), 2, "both messages stay in the folder");
    // NOTE: APPEND leaves a message \Recent until a session SELECTs its
    // folder; EXAMINE keeps it, so a check that selected would show here.
    for message in &support {
        assert_eq!(message.flags, ["Recent"], "the check changed flags");
    }
    assert!(
        read_folder_if_any(&env.stack, &env.support_user, "Done.Forwarded")
            .await
            .is_none(),
        "the check created the forwarded folder"
    );
}

/// A refused login, a refused recipient and a deferred one are all
/// reported in one run, each naming what failed, while the addresses and
/// mailboxes that work still show as ok; the exit code is 2.
#[tokio::test]
async fn connect_check_names_every_failure() {
    let env = TestEnv::new("probe-bad");
    let deferring = TestEnv::new("probe-defer");
    let fine = TestEnv::new("probe-fine");
    write_secret(&env.dir.path().join("wrong"), "not-the-password-3q");
    let mut extra = second_mailbox(
        &env.stack,
        "deferring",
        &deferring,
        &deferring.helpdesk_user,
    );
    extra.push_str(&second_mailbox(
        &env.stack,
        "fine",
        &fine,
        &fine.helpdesk_user,
    ));
    let config = env.write_config(&ConfigOptions {
        imap_password_file: Some("wrong".to_owned()),
        extra_mailbox: format!("auto_reply = true\n{extra}"),
        ..ConfigOptions::default()
    });
    set_recipient_access(
        &env.stack,
        &env.helpdesk_user,
        Some("550 5.1.1 no such intake address"),
    );
    set_recipient_access(
        &env.stack,
        &deferring.helpdesk_user,
        Some("450 4.2.1 intake busy"),
    );
    let output = check_connect(&config);
    set_recipient_access(&env.stack, &env.helpdesk_user, None);
    set_recipient_access(&env.stack, &deferring.helpdesk_user, None);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let from = "mail from <bridge@company.test>";
    assert!(
        stderr.contains(&format!(
            "FAILED  refuses {from} to <{}>: RCPT TO: permanent error (550): 5.1.1",
            env.helpdesk_user
        )),
        "{stderr}"
    );
    assert!(stderr.contains("no such intake address"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "FAILED  defers {from} to <{}> (4xx)",
            deferring.helpdesk_user
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("intake busy; a pass would keep such mail"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "ok      takes {from} to <{}> (250",
            fine.helpdesk_user
        )),
        "after two refusals the session still checks the next address: {stderr}"
    );
    assert!(
        stderr.contains("ok      takes mail from the null sender <> (auto-replies)"),
        "{stderr}"
    );
    assert!(stderr.contains("rejected the login"), "{stderr}");
    assert!(stderr.contains("check username and password"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "mailbox fine (127.0.0.1:{})\n  ok      implicit TLS and logged in as {}",
            env.stack.imaps_port, fine.support_user
        )),
        "{stderr}"
    );
    assert!(stderr.contains("2 of 5 checks failed"), "{stderr}");
    assert!(!stderr.contains("not-the-password-3q"), "{stderr}");
    assert!(!env.db_path().exists(), "the check created the log");
}
