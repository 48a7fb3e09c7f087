//! XOAUTH2 logins, as Microsoft 365 requires: against the stack's Dovecot
//! (IMAP) and Postfix (SMTP AUTH through Dovecot), which validate HS256
//! tokens locally.

use deskbridge::config::{self, Settings};

use crate::helpers::{
    ConfigOptions, TestEnv, binary, message, oauth_token, run_pass, wait_for_helpdesk, write_secret,
};

/// The config of `env` with `auth = "xoauth2"` for the mailbox and for
/// SMTP, each reading its token from a file: `imap_token` and `smtp_token`.
fn xoauth2_settings(env: &TestEnv, imap_token: &str, smtp_token: &str) -> Settings {
    let text = env.config_text(&ConfigOptions::default());
    let smtp_login = "username = \"bridge@company.test\"\npassword_file = \"password\"";
    let imap_login = format!(
        "username = \"{}\"\npassword_file = \"password\"",
        env.support_user
    );
    assert!(
        text.contains(smtp_login) && text.contains(&imap_login),
        "{text}"
    );
    let text = text
        .replacen(
            smtp_login,
            "username = \"bridge@company.test\"\nauth = \"xoauth2\"\npassword_file = \"smtp-token\"",
            1,
        )
        .replacen(
            &imap_login,
            &format!(
                "username = \"{}\"\nauth = \"xoauth2\"\npassword_file = \"imap-token\"",
                env.support_user
            ),
            1,
        );
    for (name, token) in [("imap-token", imap_token), ("smtp-token", smtp_token)] {
        write_secret(&env.dir.path().join(name), token);
    }
    let path = env.dir.path().join("deskbridge.toml");
    std::fs::write(&path, text).expect("write config");
    config::load(&path).expect("config with xoauth2 loads")
}

/// With current tokens, a pass logs in to IMAP and SMTP by XOAUTH2 and
/// forwards the message once.
#[tokio::test]
async fn xoauth2_tokens_log_in_to_imap_and_smtp() {
    let env = TestEnv::new("xoauth2");
    env.seed(&[&message(
        "O <o@example.org>",
        "Token",
        "token.1@example.org",
        "o",
    )])
    .await;
    let settings = xoauth2_settings(
        &env,
        &oauth_token(&env.stack, &env.support_user, 3600),
        &oauth_token(&env.stack, "bridge@company.test", 3600),
    );
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(report.exit_code(), 0, "{report:?}");
    assert_eq!(report.mailboxes[0].forwarded, 1, "{report:?}");
    wait_for_helpdesk(&env, 1).await;
}

/// A refused token is a login error that says which server refused whose
/// token and what to check, and nothing is recorded or sent: for IMAP an
/// expired token, for SMTP one signed with another key.
#[tokio::test]
async fn a_refused_token_is_a_clear_login_error() {
    let env = TestEnv::new("xoauth2bad");
    env.seed(&[&message(
        "P <p@example.org>",
        "Token",
        "token.2@example.org",
        "p",
    )])
    .await;
    let expired = xoauth2_settings(
        &env,
        &oauth_token(&env.stack, &env.support_user, -60),
        &oauth_token(&env.stack, "bridge@company.test", 3600),
    );
    let report = run_pass(&expired).await.expect("pass runs");
    assert_eq!(report.exit_code(), 2, "{report:?}");
    let error = report.mailboxes[0].error.clone().expect("login error");
    assert!(
        error.contains(&format!("rejected the login of user {}", env.support_user)),
        "{error}"
    );
    assert!(error.contains("access token is current"), "{error}");
    // Dovecot's reasons, from the challenge that preceded its NO (2.3 and
    // 2.4 order the JSON's keys differently).
    assert!(
        error.contains("(the server said {") && error.contains(r#""status":"401""#),
        "{error}"
    );

    let mut other_key = env.stack.clone();
    other_key.oauth_key = "not-the-stack-key".to_owned();
    let forged = xoauth2_settings(
        &env,
        &oauth_token(&env.stack, &env.support_user, 3600),
        &oauth_token(&other_key, "bridge@company.test", 3600),
    );
    // The CLI, as cron runs it, with every log target at trace (async-imap's
    // own would print the AUTHENTICATE line): exit 2, and neither token
    // anywhere in what it prints.
    let forged_token = std::fs::read_to_string(env.dir.path().join("smtp-token")).expect("token");
    let imap_token = std::fs::read_to_string(env.dir.path().join("imap-token")).expect("token");
    let output = std::process::Command::new(binary())
        .arg("--config")
        .arg(env.dir.path().join("deskbridge.toml"))
        .args(["-vv", "run"])
        .env("DESKBRIDGE_LOG", "trace,async_imap::imap_stream=trace")
        .output()
        .expect("run deskbridge");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(2), "{printed}");
    assert!(printed.contains("rejected AUTH"), "{printed}");
    for token in [forged_token.trim(), imap_token.trim()] {
        let signature = token.rsplit('.').next().expect("a JWT");
        assert!(
            !printed.contains(signature),
            "a token was printed: {printed}"
        );
    }
    // Nor the IMAP login as it went over the wire, base64-encoded.
    let sasl = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!(
            "user={}\x01auth=Bearer {}\x01\x01",
            env.support_user,
            imap_token.trim()
        ))
    };
    assert!(
        !printed.contains(&sasl[..40]),
        "the SASL exchange was printed: {printed}"
    );
    let report = run_pass(&forged).await.expect("pass runs");
    assert_eq!(report.exit_code(), 2, "{report:?}");
    let error = report.mailboxes[0].error.clone().expect("AUTH error");
    assert!(
        error.contains("rejected AUTH for user bridge@company.test"),
        "{error}"
    );
    // The final refusal, after the empty line its 334 asked for, with the
    // reasons the 334 carried.
    assert!(error.contains("535"), "{error}");
    assert!(
        error.contains("(the server said {") && error.contains(r#""status":"401""#),
        "{error}"
    );
    assert!(error.contains("allows SMTP submission"), "{error}");
    assert_eq!(report.mailboxes[0].forwarded, 0);
    wait_for_helpdesk(&env, 0).await;
}
