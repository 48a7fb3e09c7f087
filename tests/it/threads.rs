//! Thread identity end to end: each test is one conversation seeded into a
//! real mailbox, and checks the log's threads and what the helpdesk got.

use deskbridge::store::{MessageFilter, MessageRow, State, Store};

use crate::helpers::{
    ConfigOptions, TestEnv, find, run_pass, second_mailbox, split_delivered, wait_for_helpdesk,
};

fn mail(headers: &[&str], body: &str) -> Vec<u8> {
    let mut text = String::new();
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
    text.push_str(body);
    text.push_str("\r\n");
    text.into_bytes()
}

fn rows(env: &TestEnv) -> Vec<MessageRow> {
    let store = Store::open(&env.db_path()).expect("log");
    let mut rows = store
        .list_messages(&MessageFilter::default())
        .expect("rows");
    rows.sort_by_key(|row| row.id);
    rows
}

/// The delivered copy of the message with this Message-ID.
fn delivered_with(delivered: &[crate::helpers::Seen], message_id: &str) -> Vec<u8> {
    delivered
        .iter()
        .find(|seen| {
            find(
                &seen.bytes,
                format!("Message-ID: <{message_id}>").as_bytes(),
            )
            .is_some()
        })
        .map(|seen| seen.bytes.clone())
        .unwrap_or_else(|| panic!("{message_id} did not arrive"))
}

/// `relay_subject_window_days = 0` turns joining by correspondent and
/// subject off: a relay reply without references starts its own thread
/// and goes unrepaired, even right after the first message.
#[tokio::test]
async fn a_relay_subject_window_of_zero_joins_nothing() {
    let env = TestEnv::new("thwindow0");
    let settings = env.settings(&ConfigOptions {
        extra_mailbox: "\n[threading]\nrelay_subject_window_days = 0\n".to_owned(),
        ..ConfigOptions::default()
    });
    let first = mail(
        &[
            "From: w0x1y2z3@mozmail.com",
            "To: support@company.test",
            "Subject: Refund",
            "Message-ID: <w0-1@email.amazonses.com>",
        ],
        "Where is my refund?",
    );
    let reply = mail(
        &[
            "From: w0x1y2z3@mozmail.com",
            "To: support@company.test",
            "Subject: Re: Refund",
            "Message-ID: <w0-2@email.amazonses.com>",
        ],
        "Any news?",
    );
    env.seed(&[&first, &reply]).await;
    run_pass(&settings).await.expect("pass");
    let rows = rows(&env);
    assert_eq!(rows.len(), 2);
    assert_ne!(rows[0].thread_id, rows[1].thread_id, "two conversations");
    assert_eq!(rows[1].thread_key.as_deref(), Some("new"));
    assert_eq!(rows[1].repaired, None);
}

/// Firefox Relay strips every threading header: the reply joins the first
/// message's thread by relay alias and subject, and arrives with
/// In-Reply-To/References added in front of its unchanged bytes.
#[tokio::test]
async fn firefox_reply_without_references_is_repaired() {
    let env = TestEnv::new("thfirefox");
    let settings = env.settings(&ConfigOptions::default());
    let first = mail(
        &[
            "From: k3x9w2q7a@mozmail.com",
            "Reply-To: k3x9w2q7a@mozmail.com",
            "To: support@company.test",
            "Subject: Tracking link broken",
            "Date: Fri, 27 Nov 2026 10:00:00 +0000",
            "Message-ID: <ses-1@email.amazonses.com>",
        ],
        "The tracking link goes to a 404.",
    );
    env.seed(&[&first]).await;
    run_pass(&settings).await.expect("pass 1");
    let reply = mail(
        &[
            "From: k3x9w2q7a@mozmail.com",
            "Reply-To: k3x9w2q7a@mozmail.com",
            "To: support@company.test",
            "Subject: Re: Tracking link broken",
            "Date: Fri, 27 Nov 2026 12:00:00 +0000",
            "Message-ID: <ses-2@email.amazonses.com>",
        ],
        "Still broken today.",
    );
    env.seed(&[&reply]).await;
    run_pass(&settings).await.expect("pass 2");

    let rows = rows(&env);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].thread_id, rows[1].thread_id, "one conversation");
    assert_eq!(rows[0].thread_key.as_deref(), Some("new"));
    assert_eq!(rows[1].thread_key.as_deref(), Some("relay-subject"));
    assert_eq!(rows[1].repaired.as_deref(), Some("yes"));
    assert_eq!(rows[1].relay.as_deref(), Some("firefox"));

    let delivered = wait_for_helpdesk(&env, 2).await;
    let second = delivered_with(&delivered, "ses-2@email.amazonses.com");
    let (_, after_trace) = split_delivered(&second);
    let repair =
        b"In-Reply-To: <ses-1@email.amazonses.com>\r\nReferences: <ses-1@email.amazonses.com>\r\n";
    assert!(
        after_trace.starts_with(repair),
        "{}",
        String::from_utf8_lossy(&after_trace)
    );
    assert_eq!(
        &after_trace[repair.len()..],
        reply.as_slice(),
        "no other byte changes"
    );
    let first_delivered = delivered_with(&delivered, "ses-1@email.amazonses.com");
    assert_eq!(
        split_delivered(&first_delivered).1,
        first,
        "the first message is not touched"
    );

    // The same conversation through the CLI's read commands.
    let config = env.write_config(&ConfigOptions::default());
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(crate::helpers::binary())
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("run deskbridge");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).expect("UTF-8")
    };
    let json = |line: &str| -> serde_json::Value { serde_json::from_str(line).expect("JSON") };
    let threads = cli(&["threads", "--relay", "firefox", "--json"]);
    let lines: Vec<&str> = threads.lines().collect();
    assert_eq!(lines.len(), 1, "{threads}");
    let listed = json(lines[0]);
    assert_eq!(listed["messages"], 2, "{listed}");
    assert_eq!(listed["correspondent"], "k3x9w2q7a@mozmail.com");
    assert_eq!(listed["subject"], "Tracking link broken");
    let id = listed["id"].as_i64().expect("thread id");
    assert_eq!(Some(id), rows[0].thread_id);
    assert!(cli(&["threads", "--relay", "apple", "--json"]).is_empty());

    let thread = json(&cli(&["thread", &id.to_string(), "--json"]));
    let messages = thread["messages"].as_array().expect("messages");
    let keys: Vec<(&str, &str)> = messages
        .iter()
        .map(|message| {
            (
                message["thread_key"].as_str().unwrap_or_default(),
                message["repaired"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(keys, [("new", ""), ("relay-subject", "yes")], "{thread}");

    let people = cli(&["correspondents", "--relay", "firefox", "--json"]);
    let person = json(people.lines().next().expect("one correspondent"));
    assert_eq!(
        person["aliases"],
        serde_json::json!(["k3x9w2q7a@mozmail.com"])
    );
    assert_eq!(person["threads"], serde_json::json!([id]));
    let table = cli(&["thread", &id.to_string()]);
    assert!(table.contains("relay-subject repaired yes"), "{table}");
}

/// A Firefox Relay reply that was held (here: it pastes an armored
/// block) and released later gets the same repair as one forwarded at
/// once, so the helpdesk still sees one conversation.
#[tokio::test]
async fn released_relay_reply_is_repaired_too() {
    let env = TestEnv::new("threlease");
    let settings = env.settings(&ConfigOptions::default());
    let first = mail(
        &[
            "From: p7r2m9x4c@mozmail.com",
            "To: support@company.test",
            "Subject: Refund for order 8812",
            "Date: Fri, 27 Nov 2026 10:00:00 +0000",
            "Message-ID: <ses-r1@email.amazonses.com>",
        ],
        "Please refund order 8812.",
    );
    env.seed(&[&first]).await;
    run_pass(&settings).await.expect("pass 1");
    let reply = mail(
        &[
            "From: p7r2m9x4c@mozmail.com",
            "To: support@company.test",
            "Subject: Re: Refund for order 8812",
            "Date: Fri, 27 Nov 2026 12:00:00 +0000",
            "Message-ID: <ses-r2@email.amazonses.com>",
        ],
        "My bank details:\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhF4DAAAA\r\n-----END PGP MESSAGE-----",
    );
    env.seed(&[&reply]).await;
    run_pass(&settings).await.expect("pass 2");
    let held = rows(&env)[1].clone();
    assert_eq!(held.state(), State::Held);
    assert_eq!(held.thread_key.as_deref(), Some("relay-subject"));
    assert_eq!(held.repaired, None, "nothing to repair while held");

    deskbridge::worker::release(&settings, held.id, false)
        .await
        .expect("release");
    let released = rows(&env)[1].clone();
    assert_eq!(released.state(), State::Forwarded);
    assert_eq!(released.repaired.as_deref(), Some("yes"));

    let delivered = wait_for_helpdesk(&env, 2).await;
    let second = delivered_with(&delivered, "ses-r2@email.amazonses.com");
    let (_, after_trace) = split_delivered(&second);
    let repair =
        b"In-Reply-To: <ses-r1@email.amazonses.com>\r\nReferences: <ses-r1@email.amazonses.com>\r\n";
    assert!(
        after_trace.starts_with(repair),
        "{}",
        String::from_utf8_lossy(&after_trace)
    );
    assert_eq!(&after_trace[repair.len()..], reply.as_slice());
}

/// A SimpleLogin reply gets a new Message-ID but keeps In-Reply-To: it
/// joins the thread by reference, and nothing is added.
#[tokio::test]
async fn simplelogin_reply_with_new_message_id_joins_by_reference() {
    let env = TestEnv::new("thsimplelogin");
    let settings = env.settings(&ConfigOptions::default());
    let first = mail(
        &[
            "From: jane.x7@simplelogin.com",
            "To: support@company.test",
            "Subject: Invoice question",
            "Message-ID: <1.sl.1@simplelogin.com>",
            "X-SimpleLogin-Type: Reply",
        ],
        "Which invoice is this?",
    );
    env.seed(&[&first]).await;
    run_pass(&settings).await.expect("pass 1");
    // The helpdesk answered with <zd-1@zendesk.com> referencing the first
    // message; the customer's reply names both.
    let reply = mail(
        &[
            "From: jane.x7@simplelogin.com",
            "To: support@company.test",
            "Subject: Re: Invoice question (more)",
            "Message-ID: <2.sl.9@simplelogin.com>",
            "In-Reply-To: <zd-1@zendesk.com>",
            "References: <1.sl.1@simplelogin.com> <zd-1@zendesk.com>",
            "X-SimpleLogin-Type: Reply",
        ],
        "The one from March.",
    );
    env.seed(&[&reply]).await;
    run_pass(&settings).await.expect("pass 2");
    let rows = rows(&env);
    assert_eq!(rows[0].thread_id, rows[1].thread_id);
    assert_eq!(rows[1].thread_key.as_deref(), Some("references"));
    assert_eq!(
        rows[1].repaired, None,
        "it has references: nothing to repair"
    );
    let delivered = wait_for_helpdesk(&env, 2).await;
    assert_eq!(
        split_delivered(&delivered_with(&delivered, "2.sl.9@simplelogin.com")).1,
        reply
    );
}

/// An Apple relay reply whose DKIM signature lists In-Reply-To in h= is
/// attached to its thread but not repaired, and the log says why.
#[tokio::test]
async fn apple_reply_with_oversigned_in_reply_to_is_not_repaired() {
    let env = TestEnv::new("thapple");
    let settings = env.settings(&ConfigOptions::default());
    let first = mail(
        &[
            "From: rt8kd2mx4z@privaterelay.appleid.com",
            "To: support@company.test",
            "Subject: Refund",
            "Message-ID: <A1@icloud.com>",
        ],
        "Please refund the duplicate charge.",
    );
    env.seed(&[&first]).await;
    run_pass(&settings).await.expect("pass 1");
    let reply = mail(
        &[
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=icloud.com; s=1a1hai;\r\n h=From:To:Subject:Message-Id:Date:In-Reply-To:References:x-icloud-hme; bh=abc=; b=def=",
            "From: rt8kd2mx4z@privaterelay.appleid.com",
            "To: support@company.test",
            "Subject: Re: Refund",
            "Message-ID: <A2@icloud.com>",
        ],
        "Any news?",
    );
    env.seed(&[&reply]).await;
    run_pass(&settings).await.expect("pass 2");
    let rows = rows(&env);
    assert_eq!(rows[0].thread_id, rows[1].thread_id);
    assert_eq!(rows[1].thread_key.as_deref(), Some("relay-subject"));
    let repaired = rows[1].repaired.clone().unwrap_or_default();
    assert!(
        repaired.starts_with("no: the DKIM signature of icloud.com covers in-reply-to"),
        "{repaired}"
    );
    let delivered = wait_for_helpdesk(&env, 2).await;
    assert_eq!(
        split_delivered(&delivered_with(&delivered, "A2@icloud.com")).1,
        reply,
        "not a byte added"
    );
}

/// SimpleLogin sends one Message-ID to each of our addresses a customer
/// wrote to. Both copies are logged in one thread; the helpdesk gets one,
/// the other is skipped as `duplicate-message-id`, visibly.
#[tokio::test]
async fn simplelogin_copy_to_a_second_mailbox_is_logged_not_resent() {
    let env = TestEnv::new("thdupsales");
    let other = TestEnv::new("thdupsupport");
    let body = "Please call me back.";
    let to_sales = mail(
        &[
            "From: bob.q@simplelogin.com",
            "To: sales@company.test, support@company.test",
            "Subject: Call back",
            "Message-ID: <same.1@simplelogin.com>",
            "X-SimpleLogin-Type: Reply",
            "X-SimpleLogin-Envelope-To: sales@company.test",
        ],
        body,
    );
    let to_support = mail(
        &[
            "From: bob.q@simplelogin.com",
            "To: sales@company.test, support@company.test",
            "Subject: Call back",
            "Message-ID: <same.1@simplelogin.com>",
            "X-SimpleLogin-Type: Reply",
            "X-SimpleLogin-Envelope-To: support@company.test",
        ],
        body,
    );
    env.seed(&[&to_sales]).await;
    other.seed(&[&to_support]).await;
    let second_mailbox = second_mailbox(&env.stack, "second", &other, &env.helpdesk_user);
    let settings = env.settings(&ConfigOptions {
        extra_mailbox: second_mailbox,
        ..ConfigOptions::default()
    });
    let report = run_pass(&settings).await.expect("pass");
    assert_eq!(
        (report.mailboxes[0].forwarded, report.mailboxes[1].forwarded),
        (1, 0)
    );
    assert_eq!(report.mailboxes[1].skipped, 1);
    let rows = rows(&env);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].thread_id, rows[1].thread_id);
    assert_eq!(rows[1].state(), State::Skipped);
    assert_eq!(rows[1].reason.as_deref(), Some("duplicate-message-id"));
    assert_eq!(rows[1].thread_key.as_deref(), Some("message-id"));
    assert!(
        rows[1]
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains(&format!("#{}", rows[0].id))
    );
    assert_eq!(wait_for_helpdesk(&env, 1).await.len(), 1);
}

/// A message carrying a Zendesk encoded ID joins the ticket's thread even
/// from another address and without references, and is repaired.
#[tokio::test]
async fn zendesk_encoded_id_joins_its_ticket() {
    let env = TestEnv::new("thzendesk");
    let settings = env.settings(&ConfigOptions::default());
    let first = mail(
        &[
            "From: Ann <ann@example.org>",
            "To: support@company.test",
            "Subject: VPN drops",
            "Message-ID: <vpn-1@example.org>",
        ],
        "The VPN drops every hour.",
    );
    let reply = mail(
        &[
            "From: Ann <ann@example.org>",
            "To: support@company.test",
            "Subject: Re: [Company] Re: VPN drops",
            "Message-ID: <vpn-2@example.org>",
            "In-Reply-To: <L7VKGOM25K_5ffc9f66_sprut@zendesk.com>",
            "References: <vpn-1@example.org> <L7VKGOM25K_5ffc9f66_sprut@zendesk.com>",
        ],
        "Logs attached.\r\n\r\n> ##- Please type your reply above this line -##\r\n> Your request (4411) has been updated. [1G7EOR-0Q2J]",
    );
    env.seed(&[&first, &reply]).await;
    run_pass(&settings).await.expect("pass 1");
    let colleague = mail(
        &[
            "From: Ben <ben@example.org>",
            "To: support@company.test",
            "Subject: VPN problem of my colleague",
            "Message-ID: <vpn-3@example.org>",
        ],
        "Same here. Ref [1G7EOR-0Q2J]",
    );
    env.seed(&[&colleague]).await;
    run_pass(&settings).await.expect("pass 2");
    let rows = rows(&env);
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter().all(|row| row.thread_id == rows[0].thread_id),
        "{rows:?}"
    );
    assert_eq!(rows[2].thread_key.as_deref(), Some("ticket-token"));
    // NOTE: Another person's message is not repaired into the thread: a
    // token-like tag (a newsletter's `[SPRING-2024]`) would merge two
    // customers' tickets, and Zendesk matches a real token in the body
    // itself.
    assert!(
        rows[2].repaired.as_deref().is_some_and(
            |why| why.starts_with("no: the ticket token is in another correspondent's thread")
        ),
        "{:?}",
        rows[2].repaired
    );
    let delivered = wait_for_helpdesk(&env, 3).await;
    let third = delivered_with(&delivered, "vpn-3@example.org");
    assert_eq!(split_delivered(&third).1, colleague, "sent as it came");

    // The customer's own message with the token and no references is.
    let own = mail(
        &[
            "From: Ann <ann@example.org>",
            "To: support@company.test",
            "Subject: VPN again",
            "Message-ID: <vpn-4@example.org>",
        ],
        "Still dropping. [1G7EOR-0Q2J]",
    );
    env.seed(&[&own]).await;
    run_pass(&settings).await.expect("pass 2b");
    let rows = self::rows(&env);
    assert_eq!(rows[3].thread_id, rows[0].thread_id);
    assert_eq!(rows[3].thread_key.as_deref(), Some("ticket-token"));
    assert_eq!(rows[3].repaired.as_deref(), Some("yes"));
    let delivered = wait_for_helpdesk(&env, 4).await;
    let fourth = delivered_with(&delivered, "vpn-4@example.org");
    let (_, after_trace) = split_delivered(&fourth);
    assert!(after_trace.starts_with(b"In-Reply-To: <vpn-2@example.org>\r\nReferences: <vpn-1@example.org>\r\n <vpn-2@example.org>\r\n"), "{}", String::from_utf8_lossy(&after_trace));

    // Different conversations stay apart, even with the same subject.
    let unrelated = mail(
        &[
            "From: Cy <cy@example.org>",
            "To: support@company.test",
            "Subject: VPN drops",
            "Message-ID: <vpn-9@example.org>",
        ],
        "Mine too?",
    );
    env.seed(&[&unrelated]).await;
    run_pass(&settings).await.expect("pass 3");
    let rows = self::rows(&env);
    assert_ne!(
        rows[4].thread_id, rows[0].thread_id,
        "never joined on subject alone"
    );
    assert_eq!(rows[4].thread_key.as_deref(), Some("new"));
}
