//! `check-config --connect`: every connection is tried as a pass would try
//! it, each failure is named, and nothing is sent, changed or logged.

use std::process::{Command, Output};

use crate::helpers::{
    ConfigOptions, TestEnv, backlog, binary, read_folder, read_folder_if_any, set_recipient_access,
    wait_until_queue_clear, write_secret,
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
    let delivered = read_folder_if_any(&env.stack, &env.helpdesk_user, "INBOX")
        .await
        .unwrap_or_default();
    assert!(delivered.is_empty(), "the check delivered mail");
    let support = read_folder(&env.stack, &env.support_user, "INBOX").await;
    assert_eq!(support.len(), 2, "both messages stay in the folder");
    for message in &support {
        assert!(
            message.flags.iter().all(|flag| flag == "Recent"),
            "the check changed flags: {:?}",
            message.flags
        );
    }
    assert!(
        read_folder_if_any(&env.stack, &env.support_user, "Done.Forwarded")
            .await
            .is_none(),
        "the check created the forwarded folder"
    );
}

/// A refused login and a refused recipient are both reported in one run,
/// each naming what failed, and the exit code is 2.
#[tokio::test]
async fn connect_check_names_every_failure() {
    let env = TestEnv::new("probe-bad");
    write_secret(&env.dir.path().join("wrong"), "not-the-password-3q");
    let config = env.write_config(&ConfigOptions {
        imap_password_file: Some("wrong".to_owned()),
        ..ConfigOptions::default()
    });
    set_recipient_access(
        &env.stack,
        &env.helpdesk_user,
        Some("550 5.1.1 no such intake address"),
    );
    let output = check_connect(&config);
    set_recipient_access(&env.stack, &env.helpdesk_user, None);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "FAILED  refuses mail from <bridge@company.test> to <{}>",
            env.helpdesk_user
        )),
        "{stderr}"
    );
    assert!(stderr.contains("no such intake address"), "{stderr}");
    assert!(stderr.contains("rejected the login"), "{stderr}");
    assert!(stderr.contains("check username and password"), "{stderr}");
    assert!(stderr.contains("2 of 3 checks failed"), "{stderr}");
    assert!(!stderr.contains("not-the-password-3q"), "{stderr}");
    assert!(!env.db_path().exists(), "the check created the log");
}
