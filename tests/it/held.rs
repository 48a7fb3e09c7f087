//! Held mail end to end: the held folder, the notice to the helpdesk, the
//! auto-reply to the sender, the rate limit, and `deskbridge release`.

use std::process::Command;

use deskbridge::store::{MessageFilter, State, Store};

use crate::helpers::{
    ConfigOptions, TestEnv, binary, find, message, read_folder, rows_in_state, run_pass,
    split_delivered, wait_for_helpdesk, wait_until_queue_clear,
};

/// This world's config with a rate limit of three messages an hour and
/// `mailbox_lines` in its mailbox; its path and settings.
fn rate_limited(
    env: &TestEnv,
    mailbox_lines: &str,
) -> (std::path::PathBuf, deskbridge::config::Settings) {
    let text = format!(
        "{}\n[policy]\nrate_limit_messages = 3\nrate_limit_minutes = 60\n",
        env.config_text(&ConfigOptions {
            extra_mailbox: mailbox_lines.to_owned(),
            ..ConfigOptions::default()
        })
    );
    let config = env.dir.path().join("deskbridge.toml");
    std::fs::write(&config, text).expect("write config");
    let settings = deskbridge::config::load(&config).expect("config");
    (config, settings)
}

/// `count` replies from one Firefox Relay alias, as a loop sends them:
/// subjects `Re: Re: N`, Message-IDs `<tag>.N@x.test`.
fn loop_messages(tag: &str, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|index| {
            message(
                "Loop <loop@mozmail.com>",
                &format!("Re: Re: {index}"),
                &format!("{tag}.{index}@x.test"),
                "again",
            )
        })
        .collect()
}

fn encrypted(from: &str, message_id: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: support@company.test\r\nSubject: Quarterly numbers\r\nDate: Sat, 28 Nov 2026 06:00:00 +0000\r\nMessage-ID: <{message_id}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee below.\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA3ZqN2c5c2VjcmV0AQf/U0VDUkVUIENPTlRFTlQgSEVSRQ==\r\n=Qx1a\r\n-----END PGP MESSAGE-----\r\n"
    )
    .into_bytes()
}

/// A held message lands in the held folder, the helpdesk gets a notice
/// without the original content, and `deskbridge release` then forwards
/// the original exactly once.
#[tokio::test]
async fn held_message_gets_a_notice_and_can_be_released_once() {
    let env = TestEnv::new("release");
    let original = encrypted("Alice <alice@example.com>", "held.1@example.com");
    env.seed(&[&original]).await;
    let options = ConfigOptions {
        extra_mailbox: "held_notice = true\n".to_owned(),
        ..ConfigOptions::default()
    };
    let settings = env.settings(&options);
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(
        (report.mailboxes[0].held, report.mailboxes[0].forwarded),
        (1, 0)
    );
    assert_eq!(report.exit_code(), 0);

    let held = read_folder(&env.stack, &env.support_user, "Deskbridge.Held").await;
    assert_eq!(held.len(), 1, "the held message sits in the held folder");
    assert_eq!(held[0].bytes, original);

    let arrived = wait_for_helpdesk(&env, 1).await;
    assert_eq!(arrived.len(), 1, "exactly one notice");
    let notice = String::from_utf8_lossy(&arrived[0].bytes).into_owned();
    assert!(
        notice.contains("Subject: Held message from alice@example.com: Quarterly numbers"),
        "{notice}"
    );
    assert!(notice.contains("pgp-encrypted"), "{notice}");
    assert!(notice.contains("Deskbridge/Held"), "{notice}");
    // No Auto-Submitted: Zendesk would suspend the notice; the loop guard
    // knows it by its Message-ID instead, should it ever come back.
    assert!(!notice.contains("Auto-Submitted"), "{notice}");
    let back =
        deskbridge::classify::classify(&arrived[0].bytes, &deskbridge::classify::Rules::default());
    assert_eq!(
        (back.decision.action, back.decision.reason),
        (
            deskbridge::classify::Action::Skip,
            Some(deskbridge::classify::Reason::OwnRedirect)
        ),
        "{back:?}"
    );
    for secret in [
        "-----BEGIN PGP MESSAGE-----\r\n",
        "hQEMA3ZqN2c5",
        "See below.",
    ] {
        assert!(
            !notice.contains(secret),
            "the notice must not carry content ({secret})"
        );
    }

    let store = Store::open(&settings.store_path).expect("log");
    let row = store
        .list_messages(&MessageFilter::default())
        .expect("rows")[0]
        .clone();
    assert_eq!(
        (row.state(), row.reason.as_deref()),
        (State::Held, Some("pgp-encrypted"))
    );
    drop(store);

    let config = env.write_config(&options);
    let release = Command::new(binary())
        .arg("--config")
        .arg(&config)
        .args(["release", &row.id.to_string()])
        .output()
        .expect("release");
    assert_eq!(
        release.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&release.stderr)
    );
    let delivered = wait_for_helpdesk(&env, 2).await;
    assert_eq!(delivered.len(), 2, "the notice and the released original");
    let originals: Vec<_> = delivered
        .iter()
        .filter(|seen| find(&seen.bytes, b"Received: from 127.0.0.1 (mailbox ").is_some())
        .collect();
    assert_eq!(originals.len(), 1);
    assert_eq!(split_delivered(&originals[0].bytes).1, original);

    let again = Command::new(binary())
        .arg("--config")
        .arg(&config)
        .args(["release", &row.id.to_string()])
        .output()
        .expect("release again");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not held"));
    let store = Store::open(&settings.store_path).expect("log");
    let row = store.message(row.id).expect("read").expect("row");
    assert_eq!(row.state(), State::Forwarded);
    let kinds: Vec<String> = store
        .events(row.id)
        .expect("events")
        .into_iter()
        .map(|event| event.kind)
        .collect();
    assert!(
        kinds.contains(&"notice-sent".to_owned()) && kinds.contains(&"released".to_owned()),
        "{kinds:?}"
    );
    assert_eq!(
        wait_for_helpdesk(&env, 2).await.len(),
        2,
        "a second release sends nothing"
    );
}

/// A notice the helpdesk's server refuses for its content (a 5xx to the
/// final dot) would be refused again: the next pass does not send it
/// again as a missed notice, while one that could not be sent for other
/// reasons would be.
#[tokio::test]
async fn a_notice_refused_for_its_content_is_not_sent_again() {
    let env = TestEnv::new("noticerefused");
    let original = String::from_utf8(encrypted(
        "Rita <rita@example.com>",
        "refusednotice.1@example.com",
    ))
    .expect("ASCII")
    .replace(
        "Subject: Quarterly numbers",
        "Subject: deskbridge-test reject-content sealed",
    )
    .into_bytes();
    env.seed(&[&original]).await;
    let settings = env.settings(&ConfigOptions {
        extra_mailbox: "held_notice = true\n".to_owned(),
        ..ConfigOptions::default()
    });
    let report = run_pass(&settings).await.expect("pass runs");
    let mailbox = &report.mailboxes[0];
    assert_eq!((mailbox.held, mailbox.settle_errors), (1, 1), "{mailbox:?}");
    assert_eq!(report.exit_code(), 1);
    let store = Store::open(&settings.store_path).expect("open log");
    let row = &rows_in_state(&settings, State::Held)[0];
    let kinds: Vec<String> = store
        .events(row.id)
        .expect("events")
        .into_iter()
        .map(|event| event.kind)
        .collect();
    assert!(
        kinds.iter().any(|kind| kind == "notice-refused"),
        "{kinds:?}"
    );
    drop(store);

    let again = run_pass(&settings).await.expect("second pass runs");
    assert_eq!(
        again.mailboxes[0].settle_errors, 0,
        "{:?}",
        again.mailboxes[0]
    );
    assert_eq!(again.exit_code(), 0);
    wait_until_queue_clear(&env.stack, &env.helpdesk_user).await;
    wait_for_helpdesk(&env, 0).await;
}

/// Loop mail in a real pass: a bounce, an auto-reply, mail from the
/// helpdesk and deskbridge's own redirect come back are skipped with their
/// reasons and none reaches the helpdesk, while a person's message beside
/// them is forwarded. (Held loop mail and its auto-replies: the next test.)
#[tokio::test]
async fn loop_mail_is_skipped_and_never_answered() {
    let env = TestEnv::new("loops");
    let sender = format!("sender-{}", env.helpdesk_user);
    let person = message(
        &format!("Pat <{sender}>"),
        "Real question",
        "loops.person@example.org",
        "hello",
    );
    let bounce = "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\nTo: support@company.test\r\nSubject: Undelivered Mail Returned to Sender\r\nMessage-ID: <loops.bounce@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nIt bounced.\r\n--b--\r\n"
        .as_bytes()
        .to_vec();
    let auto_reply = format!(
        "From: Away <{sender}>\r\nTo: support@company.test\r\nSubject: Out of office\r\nMessage-ID: <loops.ooo@example.org>\r\nAuto-Submitted: auto-replied\r\nContent-Type: text/plain\r\n\r\nI am away.\r\n"
    )
    .into_bytes();
    let from_helpdesk = message(
        &format!("Desk <{}>", env.helpdesk_user),
        "Ticket updated",
        "loops.desk@example.org",
        "an update",
    );
    let own = format!(
        "From: Pat <{sender}>\r\nTo: support@company.test\r\nSubject: Came back\r\nMessage-ID: <loops.own@example.org>\r\nResent-Message-ID: <deskbridge.7.abcdef@company.test>\r\nContent-Type: text/plain\r\n\r\nagain\r\n"
    )
    .into_bytes();
    env.seed(&[&person, &bounce, &auto_reply, &from_helpdesk, &own])
        .await;
    let settings = env.settings(&ConfigOptions {
        extra_mailbox:
            "auto_reply = true\nauto_reply_from = \"support@company.test\"\nheld_notice = true\n"
                .to_owned(),
        ..ConfigOptions::default()
    });
    let report = run_pass(&settings).await.expect("pass runs");
    let mailbox = &report.mailboxes[0];
    assert_eq!(
        (mailbox.forwarded, mailbox.skipped, mailbox.held),
        (1, 4, 0),
        "{mailbox:?}"
    );
    let mut reasons: Vec<String> = rows_in_state(&settings, State::Skipped)
        .into_iter()
        .filter_map(|row| row.reason)
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["auto-reply", "bounce", "from-helpdesk", "own-redirect"]
    );
    let delivered = wait_for_helpdesk(&env, 1).await;
    assert_eq!(split_delivered(&delivered[0].bytes).1, person);
    wait_until_queue_clear(&env.stack, &sender).await;
    let replies = crate::helpers::read_folder_if_any(&env.stack, &sender, "INBOX")
        .await
        .unwrap_or_default();
    assert!(replies.is_empty(), "{} auto-replies", replies.len());
}

/// With `loop_action = "hold"` loop mail is held, and still gets no
/// auto-reply; nor does held mail from a no-reply sender, which is logged
/// as skipped. A person's held message beside them gets its reply.
#[tokio::test]
async fn held_loop_mail_and_no_reply_senders_get_no_auto_reply() {
    let env = TestEnv::new("loopshold");
    let sender = format!("sender-{}", env.helpdesk_user);
    let person = encrypted(&format!("Pat <{sender}>"), "loopshold.person@example.org");
    let auto_reply = format!(
        "From: Away <{sender}>\r\nTo: support@company.test\r\nSubject: Out of office\r\nMessage-ID: <loopshold.ooo@example.org>\r\nAuto-Submitted: auto-replied\r\nContent-Type: text/plain\r\n\r\nI am away.\r\n"
    )
    .into_bytes();
    let own = format!(
        "From: Pat <{sender}>\r\nTo: support@company.test\r\nSubject: Came back\r\nMessage-ID: <loopshold.own@example.org>\r\nResent-Message-ID: <deskbridge.7.abcdef@company.test>\r\nContent-Type: text/plain\r\n\r\nagain\r\n"
    )
    .into_bytes();
    let no_reply = encrypted(
        "Bank <secure-noreply@bank.example>",
        "loopshold.bank@example.org",
    );
    // The person's message last: replies to the others, had they been
    // sent, would have taken the sender's one reply per period.
    env.seed(&[&auto_reply, &own, &no_reply, &person]).await;
    let settings = env.settings(&ConfigOptions {
        extra_mailbox: "auto_reply = true\nauto_reply_from = \"support@company.test\"\n\n[policy]\nloop_action = \"hold\"\n".to_owned(),
        ..ConfigOptions::default()
    });
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(report.mailboxes[0].held, 4, "{:?}", report.mailboxes[0]);
    let held = rows_in_state(&settings, State::Held);
    let mut reasons: Vec<String> = held.iter().filter_map(|row| row.reason.clone()).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "auto-reply",
            "own-redirect",
            "pgp-encrypted",
            "pgp-encrypted"
        ]
    );
    let bank = held
        .iter()
        .find(|row| row.from.as_deref() == Some("secure-noreply@bank.example"))
        .expect("the bank's row");
    let store = Store::open(&settings.store_path).expect("open log");
    let skipped: Vec<String> = store
        .events(bank.id)
        .expect("events")
        .into_iter()
        .filter(|event| event.kind == "auto-reply-skipped")
        .filter_map(|event| event.detail)
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].contains("takes no replies"), "{skipped:?}");

    wait_until_queue_clear(&env.stack, &sender).await;
    let replies = read_folder(&env.stack, &sender, "INBOX").await;
    assert_eq!(replies.len(), 1, "only the person's message is answered");
    let reply = String::from_utf8_lossy(&replies[0].bytes).into_owned();
    assert!(
        reply.contains("In-Reply-To: <loopshold.person@example.org>"),
        "{reply}"
    );
}

/// The optional auto-reply reaches the sender once per period, marked
/// Auto-Submitted: auto-replied, and never quotes the original.
#[tokio::test]
async fn auto_reply_goes_to_the_sender_once() {
    let env = TestEnv::new("autoreply");
    // The sender's mailbox is on the stack's relayed domain so the reply can be read back.
    let sender = format!("sender-{}", env.helpdesk_user);
    let first = encrypted(&format!("Sam <{sender}>"), "auto.1@example.com");
    let second = encrypted(&format!("Sam <{sender}>"), "auto.2@example.com");
    env.seed(&[&first, &second]).await;
    let settings = env.settings(&ConfigOptions {
        extra_mailbox: "auto_reply = true\nauto_reply_from = \"support@company.test\"\n".to_owned(),
        ..ConfigOptions::default()
    });
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(report.mailboxes[0].held, 2);
    wait_until_queue_clear(&env.stack, &sender).await;
    let replies = read_folder(&env.stack, &sender, "INBOX").await;
    assert_eq!(replies.len(), 1, "one auto-reply per sender per period");
    let reply = String::from_utf8_lossy(&replies[0].bytes).into_owned();
    assert!(reply.contains("Auto-Submitted: auto-replied"), "{reply}");
    assert!(
        reply.contains("Return-Path: <>"),
        "null envelope sender: {reply}"
    );
    assert!(
        reply.contains("In-Reply-To: <auto.1@example.com>"),
        "{reply}"
    );
    assert!(!reply.contains("BEGIN PGP"), "{reply}");
    wait_for_helpdesk(&env, 0).await;
}

/// A loop through a relay, held by the rate limit, costs the helpdesk one
/// notice (for the message that set off the block), not one per message,
/// in this pass or the next.
#[tokio::test]
async fn a_rate_limited_loop_gets_one_notice() {
    let env = TestEnv::new("loopnotice");
    let flood = loop_messages("loopnotice", 6);
    env.seed(&flood).await;
    let (_, settings) = rate_limited(&env, "held_notice = true\n");
    let report = run_pass(&settings).await.expect("pass runs");
    let mailbox = &report.mailboxes[0];
    assert_eq!(
        (mailbox.forwarded, mailbox.held, mailbox.settle_errors),
        (3, 3, 0),
        "{mailbox:?}"
    );
    let again = run_pass(&settings).await.expect("second pass runs");
    assert_eq!(again.mailboxes[0].settle_errors, 0);
    wait_until_queue_clear(&env.stack, &env.helpdesk_user).await;
    let arrived = wait_for_helpdesk(&env, 4).await;
    let notices: Vec<_> = arrived
        .iter()
        .filter(|mail| find(&mail.bytes, b"Subject: Held message from loop@mozmail.com").is_some())
        .collect();
    assert_eq!(notices.len(), 1, "one notice for the loop");
    let notice = String::from_utf8_lossy(&notices[0].bytes);
    assert!(
        notice.contains("Re: Re: 3"),
        "the message that set off the block: {notice}"
    );
}

/// Held mail counts towards the rate limit too: a loop whose every
/// message is encrypted is held as rate-limited past the limit (the detail
/// keeps what else it is), and costs no notice per message after that.
#[tokio::test]
async fn an_encrypted_loop_is_rate_limited_too() {
    let env = TestEnv::new("cryptoloop");
    let flood: Vec<Vec<u8>> = (0..5)
        .map(|index| {
            encrypted(
                "Loop <loop@mozmail.com>",
                &format!("cryptoloop.{index}@x.test"),
            )
        })
        .collect();
    env.seed(&flood).await;
    let (config, settings) = rate_limited(&env, "held_notice = true\n");
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(report.mailboxes[0].held, 5, "{:?}", report.mailboxes[0]);
    let held = rows_in_state(&settings, State::Held);
    let mut reasons: Vec<String> = held.iter().filter_map(|row| row.reason.clone()).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "pgp-encrypted",
            "pgp-encrypted",
            "pgp-encrypted",
            "rate-limited",
            "rate-limited"
        ]
    );
    for row in held
        .iter()
        .filter(|row| row.reason.as_deref() == Some("rate-limited"))
    {
        let detail = row.detail.as_deref().unwrap_or_default();
        assert!(detail.contains("it is also pgp-encrypted"), "{detail}");
    }
    wait_until_queue_clear(&env.stack, &env.helpdesk_user).await;
    assert_eq!(
        wait_for_helpdesk(&env, 4).await.len(),
        4,
        "notices for the three under the limit and the one that set off the block"
    );
    let store = Store::open(&settings.store_path).expect("open log");
    let skipped = held
        .iter()
        .filter(|row| {
            store
                .events(row.id)
                .expect("events")
                .iter()
                .any(|event| event.kind == "notice-skipped")
        })
        .count();
    assert_eq!(skipped, 1, "the one held while the block lasted");
    drop(store);

    // Lifted without forwarding anything: the ciphertext stays held, and
    // the next message is held for what it is, not for the old flood.
    let unblock = |address: &str| {
        Command::new(binary())
            .arg("--config")
            .arg(&config)
            .args(["unblock", address])
            .output()
            .expect("run unblock")
    };
    let lifted = unblock("LOOP@mozmail.com");
    assert_eq!(lifted.status.code(), Some(0), "{lifted:?}");
    assert!(String::from_utf8_lossy(&lifted.stdout).contains("lifted the rate-limit block"));
    assert_eq!(
        unblock("loop@mozmail.com").status.code(),
        Some(1),
        "not blocked any more"
    );
    env.seed(&[&encrypted(
        "Loop <loop@mozmail.com>",
        "cryptoloop.after@x.test",
    )])
    .await;
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(report.mailboxes[0].held, 1);
    assert_eq!(report.mailboxes[0].forwarded, 0, "nothing was forwarded");
    let after = rows_in_state(&settings, State::Held)
        .into_iter()
        .find(|row| row.message_id.as_deref() == Some("cryptoloop.after@x.test"))
        .expect("the new message");
    assert_eq!(after.reason.as_deref(), Some("pgp-encrypted"));
}

/// A correspondent sending more than the limit is held as rate-limited
/// until a person releases one message, which lifts the block: what it
/// sends next counts from the release.
#[tokio::test]
async fn rate_limit_holds_a_flood_until_released() {
    let env = TestEnv::new("ratelimit");
    let flood = loop_messages("flood", 5);
    env.seed(&flood).await;
    let (_, settings) = rate_limited(&env, "");
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(
        (report.mailboxes[0].forwarded, report.mailboxes[0].held),
        (3, 2)
    );
    assert_eq!(wait_for_helpdesk(&env, 3).await.len(), 3);

    let limited = rows_in_state(&settings, State::Held);
    assert_eq!(limited.len(), 2);
    assert!(
        limited
            .iter()
            .all(|row| row.reason.as_deref() == Some("rate-limited")),
        "{limited:?}"
    );
    assert_eq!(limited[0].relay.as_deref(), Some("firefox"));

    // Still blocked on the next pass, until a person releases a message.
    env.seed(&[&message(
        "Loop <loop@mozmail.com>",
        "Re: 6",
        "flood.6@x.test",
        "again",
    )])
    .await;
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(
        (report.mailboxes[0].forwarded, report.mailboxes[0].held),
        (0, 1)
    );
    assert_eq!(rows_in_state(&settings, State::Held).len(), 3);
    let outcome = deskbridge::worker::release(&settings, limited[0].id, false)
        .await
        .expect("release");
    assert!(
        outcome.contains("lifted the rate-limit block on loop@mozmail.com"),
        "{outcome}"
    );
    assert_eq!(wait_for_helpdesk(&env, 4).await.len(), 4);

    // Lifted: the flood before the release no longer counts, so the next
    // three go through, and a fourth within the window blocks again.
    let after: Vec<Vec<u8>> = (7..11)
        .map(|index| {
            message(
                "Loop <loop@mozmail.com>",
                &format!("Re: {index}"),
                &format!("flood.{index}@x.test"),
                "again",
            )
        })
        .collect();
    env.seed(&after).await;
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(
        (report.mailboxes[0].forwarded, report.mailboxes[0].held),
        (3, 1),
        "{report:?}"
    );
    let store = Store::open(&settings.store_path).expect("open log");
    assert!(
        store
            .blocked("loop@mozmail.com")
            .expect("look up")
            .is_some(),
        "blocked again"
    );
    assert_eq!(wait_for_helpdesk(&env, 7).await.len(), 7);
}

/// A message over max_message_mb is held as too-large from its header
/// alone, with its real size in the log, and never reaches the helpdesk.
#[tokio::test]
async fn oversized_message_is_held_from_its_header() {
    let env = TestEnv::new("toolarge");
    let mut big = message(
        "Big <big@example.org>",
        "Huge scan",
        "big.1@example.org",
        "see attachment",
    );
    big.extend(
        std::iter::repeat_n(b'x', 76)
            .chain(*b"\r\n")
            .cycle()
            .take(2 * 1024 * 1024),
    );
    let small = message(
        "Sam <sam@example.org>",
        "Small",
        "small.1@example.org",
        "hello",
    );
    env.seed(&[&big, &small]).await;
    let settings = env.settings(&ConfigOptions {
        extra_mailbox: "max_message_mb = 1\n".to_owned(),
        ..ConfigOptions::default()
    });
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(
        (report.mailboxes[0].held, report.mailboxes[0].forwarded),
        (1, 1)
    );
    let held = rows_in_state(&settings, State::Held);
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].reason.as_deref(), Some("too-large"));
    assert_eq!(
        held[0].size,
        big.len() as u64,
        "the real size, from RFC822.SIZE"
    );
    assert_eq!(
        held[0].subject.as_deref(),
        Some("Huge scan"),
        "summarised from the header"
    );
    let delivered = wait_for_helpdesk(&env, 1).await;
    assert_eq!(delivered.len(), 1);
    assert!(find(&delivered[0].bytes, b"small.1@example.org").is_some());
    let held_folder = read_folder(&env.stack, &env.support_user, "Deskbridge.Held").await;
    assert_eq!(held_folder.len(), 1);
    assert_eq!(
        held_folder[0].bytes.len(),
        big.len(),
        "the original is moved intact"
    );
}
