//! The pipeline end to end on the real stack: what arrives at the helpdesk,
//! byte for byte, and what a second pass does.

use deskbridge::store::{MessageFilter, State, Store};

use crate::helpers::{
    ConfigOptions, TestEnv, message, read_folder, read_folder_if_any, rows_in_state, run_pass,
    set_recipient_access, sorted_originals, split_delivered, wait_for_helpdesk,
    wait_until_queue_clear,
};

fn relay_reply() -> Vec<u8> {
    b"From: Jane Doe <jane_at_example_org_qx7@simplelogin.co>\r\n\
To: support@company.test\r\n\
Reply-To: \"Jane Doe\" <ra+jane.example.org+qx7xk2ab@simplelogin.co>\r\n\
Subject: Re: [#4411] Printer still offline\r\n\
Date: Sat, 28 Nov 2026 09:12:00 +0100\r\n\
Message-ID: <1732781520.sl.9f2@simplelogin.co>\r\n\
In-Reply-To: <ticket-4411@helpdesk.test>\r\n\
References: <ticket-4411@helpdesk.test>\r\n\
DKIM-Signature: v=1; a=rsa-sha256; d=simplelogin.co; s=dkim; h=From:To:Subject:Message-ID:Date;\r\n\
 \x20bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\n\
X-SimpleLogin-Type: Reply\r\n\
\r\n\
It is still offline after the update.\r\n\
\r\n\
> On Friday you wrote:\r\n\
> Please restart it.\r\n"
        .to_vec()
}

fn html_with_attachment() -> Vec<u8> {
    b"From: Ops <ops@example.net>\r\n\
To: support@company.test\r\n\
Subject: Invoice =?utf-8?q?M=C3=A4rz?=\r\n\
Date: Sat, 28 Nov 2026 08:00:00 +0000\r\n\
Message-ID: <html.1@example.net>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
\r\n\
--outer\r\n\
Content-Type: multipart/alternative; boundary=\"alt\"\r\n\
\r\n\
--alt\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
See the invoice.\r\n\
--alt\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p>See the <b>invoice</b>.</p>\r\n\
--alt--\r\n\
--outer\r\n\
Content-Type: application/pdf; name=\"invoice.pdf\"\r\n\
Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PD4+CmVuZG9iagp0cmFpbGVyCjw8Pj4KJSVFT0YK\r\n\
--outer--\r\n"
        .to_vec()
}

/// Lines starting with a dot must survive SMTP dot-stuffing, and 8-bit
/// UTF-8 must survive unchanged.
fn dots_and_eight_bit() -> Vec<u8> {
    "From: Zoë <zoe@example.de>\r\nTo: support@company.test\r\nSubject: Grüße\r\nDate: Sat, 28 Nov 2026 07:00:00 +0000\r\nMessage-ID: <dots.1@example.de>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nstraße ✓\r\n"
        .as_bytes()
        .to_vec()
}

/// 8-bit content that is not UTF-8 (Latin-1) takes the sink's byte path;
/// it must arrive unchanged too, dots included.
fn latin1_with_dots() -> Vec<u8> {
    b"From: Jos\xe9 <jose@example.es>\r\nTo: support@company.test\r\nSubject: Factura\r\nDate: Sat, 28 Nov 2026 07:30:00 +0000\r\nMessage-ID: <latin1.1@example.es>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n.punto inicial\r\nse\xf1or, la factura est\xe1 mal\r\n"
        .to_vec()
}

fn pgp_mime() -> Vec<u8> {
    b"From: Secret <secret@example.com>\r\n\
To: support@company.test\r\n\
Subject: ...\r\n\
Date: Sat, 28 Nov 2026 06:00:00 +0000\r\n\
Message-ID: <pgp.1@example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"enc\"\r\n\
\r\n\
This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n\
--enc\r\n\
Content-Type: application/pgp-encrypted\r\n\
Content-Description: PGP/MIME version identification\r\n\
\r\n\
Version: 1\r\n\
\r\n\
--enc\r\n\
Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
\r\n\
-----BEGIN PGP MESSAGE-----\r\n\
\r\n\
hQEMA1t2c3VwcG9ydBAH/0xvcmVtIGlwc3VtIGRvbG9yIHNpdCBhbWV0\r\n\
=abcd\r\n\
-----END PGP MESSAGE-----\r\n\
\r\n\
--enc--\r\n"
        .to_vec()
}

fn smime_enveloped() -> Vec<u8> {
    b"From: Legal <legal@example.com>\r\n\
To: support@company.test\r\n\
Subject: Contract\r\n\
Date: Sat, 28 Nov 2026 05:00:00 +0000\r\n\
Message-ID: <smime.1@example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=\"smime.p7m\"\r\n\
Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
MIAGCSqGSIb3DQEHA6CAMIACAQAxggFMMIIBSAIBADAwMCQxIjAgBgNVBAMMGWRlc2ti\r\n"
        .to_vec()
}

/// Each eligible message arrives exactly once, its original bytes unchanged
/// after the prepended trace block; encrypted mail is held and never
/// arrives; a second pass sends nothing.
#[tokio::test]
async fn redirects_eligible_mail_once_with_original_bytes() {
    let env = TestEnv::new("pipeline");
    let plain = message(
        "Ann <ann@example.org>",
        "Login fails",
        "plain.1@example.org",
        "I cannot log in.",
    );
    let originals = [
        plain.clone(),
        relay_reply(),
        html_with_attachment(),
        dots_and_eight_bit(),
        latin1_with_dots(),
    ];
    let held = [pgp_mime(), smime_enveloped()];
    let seeded: Vec<&[u8]> = originals
        .iter()
        .chain(held.iter())
        .map(Vec::as_slice)
        .collect();
    env.seed(&seeded).await;
    let settings = env.settings(&ConfigOptions::default());

    let report = run_pass(&settings).await.expect("pass runs");
    let mailbox = &report.mailboxes[0];
    assert_eq!(mailbox.error, None);
    assert_eq!(
        (
            mailbox.fetched,
            mailbox.forwarded,
            mailbox.held,
            mailbox.failed
        ),
        (7, 5, 2, 0)
    );
    assert_eq!(report.exit_code(), 0, "held mail is normal");

    let delivered = wait_for_helpdesk(&env, originals.len()).await;
    assert_eq!(
        delivered.len(),
        originals.len(),
        "each eligible message exactly once"
    );
    for original in &originals {
        let matching: Vec<_> = delivered
            .iter()
            .filter(|seen| split_delivered(&seen.bytes).1 == *original)
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "original bytes arrive unchanged exactly once:\n{}",
            String::from_utf8_lossy(original)
        );
        let (trace, _) = split_delivered(&matching[0].bytes);
        // Return-Path is the envelope sender the helpdesk's delivery saw:
        // the organisation's own domain, so SPF passes for it.
        assert!(
            matching[0]
                .bytes
                .starts_with(b"Return-Path: <bridge@company.test>\r\n"),
            "{}",
            String::from_utf8_lossy(&matching[0].bytes[..200.min(matching[0].bytes.len())])
        );
        for field in [
            "Resent-From: <bridge@company.test>\r\n",
            "Resent-Date: ",
            "Resent-Message-ID: <deskbridge.",
            &format!("Resent-To: <{}>\r\n", env.helpdesk_user),
        ] {
            assert!(trace.contains(field), "trace block lacks {field}: {trace}");
        }
    }
    let token = b"Reply-To: \"Jane Doe\" <ra+jane.example.org+qx7xk2ab@simplelogin.co>\r\n";
    assert!(
        delivered
            .iter()
            .any(|seen| crate::helpers::find(&seen.bytes, token).is_some()),
        "the relay's Reply-To token arrives byte-identical"
    );
    for encrypted in ["pgp.1@example.com", "smime.1@example.com"] {
        assert!(
            !delivered
                .iter()
                .any(|seen| crate::helpers::find(&seen.bytes, encrypted.as_bytes()).is_some()),
            "{encrypted} must not reach the helpdesk"
        );
    }

    let store = Store::open(&settings.store_path).expect("open log");
    let rows = store
        .list_messages(&MessageFilter::default())
        .expect("rows");
    assert_eq!(rows.len(), 7);
    let reason_of = |message_id: &str| {
        rows.iter()
            .find(|row| row.message_id.as_deref() == Some(message_id))
            .map(|row| (row.state(), row.reason.clone()))
    };
    assert_eq!(
        reason_of("pgp.1@example.com"),
        Some((State::Held, Some("pgp-encrypted".to_owned())))
    );
    assert_eq!(
        reason_of("smime.1@example.com"),
        Some((State::Held, Some("smime-enveloped".to_owned())))
    );
    let relay_row = rows
        .iter()
        .find(|row| row.message_id.as_deref() == Some("1732781520.sl.9f2@simplelogin.co"))
        .expect("relay row");
    assert_eq!(relay_row.state(), State::Forwarded);
    assert_eq!(
        relay_row.reply_to.as_deref(),
        Some("ra+jane.example.org+qx7xk2ab@simplelogin.co")
    );
    assert_eq!(
        relay_row.in_reply_to.as_deref(),
        Some("ticket-4411@helpdesk.test")
    );
    assert!(
        relay_row
            .smtp_reply
            .as_deref()
            .is_some_and(|reply| reply.starts_with("250")),
        "{:?}",
        relay_row.smtp_reply
    );

    // The support mailbox shows what happened, and nothing was marked read:
    // forwarded mail stays with $Forwarded, held mail moved to the held folder.
    let support = read_folder(&env.stack, &env.support_user, "INBOX").await;
    let held_folder = read_folder(&env.stack, &env.support_user, "Deskbridge.Held").await;
    assert_eq!((support.len(), held_folder.len()), (5, 2));
    assert!(
        support
            .iter()
            .all(|seen| seen.flags.iter().any(|flag| flag.contains("$Forwarded")))
    );
    assert!(held_folder.iter().all(|seen| {
        seen.flags
            .iter()
            .any(|flag| flag.contains("$DeskbridgeHeld"))
    }));
    assert!(
        support
            .iter()
            .chain(&held_folder)
            .all(|seen| !seen.flags.iter().any(|flag| flag.contains("Seen"))),
        "fetching must not set \\Seen: {:?}",
        support.iter().map(|seen| &seen.flags).collect::<Vec<_>>()
    );

    let second = run_pass(&settings).await.expect("second pass runs");
    let mailbox = &second.mailboxes[0];
    assert_eq!((mailbox.fetched, mailbox.forwarded), (0, 0));
    let delivered = wait_for_helpdesk(&env, originals.len()).await;
    assert_eq!(
        delivered.len(),
        originals.len(),
        "a second pass sends nothing"
    );
}

/// IMAP with STARTTLS and SMTP with implicit TLS (SMTPS) work as well.
#[tokio::test]
async fn starttls_imap_and_implicit_tls_smtp() {
    let env = TestEnv::new("tlsmodes");
    let original = message(
        "Bo <bo@example.org>",
        "Modes",
        "modes.1@example.org",
        "Hello",
    );
    env.seed(&[&original]).await;
    let settings = env.settings(&ConfigOptions {
        imap_tls: "starttls",
        smtp_tls: "implicit",
        ..ConfigOptions::default()
    });
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(report.mailboxes[0].error, None);
    assert_eq!(report.mailboxes[0].forwarded, 1);
    let delivered = wait_for_helpdesk(&env, 1).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(split_delivered(&delivered[0].bytes).1, original);
}

/// Held mail can be moved to a held folder; the configured path's `/` is
/// mapped onto Dovecot's `.` delimiter. Forwarded mail can be moved too.
#[tokio::test]
async fn held_and_forwarded_mail_can_be_moved() {
    let env = TestEnv::new("moves");
    let plain = message(
        "Cy <cy@example.org>",
        "Move me",
        "move.1@example.org",
        "Hello",
    );
    env.seed(&[&plain, &pgp_mime()]).await;
    let settings = env.settings(&ConfigOptions {
        extra_mailbox: "after_hold = \"move\"\nafter_forward = \"move\"\n".to_owned(),
        ..ConfigOptions::default()
    });
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(report.exit_code(), 0, "{report:?}");
    assert_eq!(
        read_folder(&env.stack, &env.support_user, "INBOX")
            .await
            .len(),
        0
    );
    let held = read_folder(&env.stack, &env.support_user, "Deskbridge.Held").await;
    assert_eq!(held.len(), 1);
    assert!(crate::helpers::find(&held[0].bytes, b"pgp.1@example.com").is_some());
    assert!(
        held[0]
            .flags
            .iter()
            .any(|flag| flag.contains("$DeskbridgeHeld"))
    );
    let forwarded = read_folder(&env.stack, &env.support_user, "Deskbridge.Forwarded").await;
    assert_eq!(forwarded.len(), 1);
    assert_eq!(wait_for_helpdesk(&env, 1).await.len(), 1);

    // A pass after the moves finds nothing new and sends nothing.
    let second = run_pass(&settings).await.expect("second pass");
    assert_eq!(second.mailboxes[0].forwarded, 0);
    assert_eq!(wait_for_helpdesk(&env, 1).await.len(), 1);
}

/// After UIDVALIDITY changes, the rescan recognises handled messages by
/// content and sends only the new one.
/// Gives the support folder a new UIDVALIDITY, as a server-side rebuild
/// would: Dovecot keeps it in the Maildir's dovecot-uidlist header.
fn rebuild_uidvalidity(env: &TestEnv) {
    let maildir = env.support_maildir();
    let uidlist = maildir.join("dovecot-uidlist");
    let text = std::fs::read_to_string(&uidlist).expect("read dovecot-uidlist");
    let (header, rest) = text.split_once('\n').expect("uidlist header");
    let new_header: Vec<String> = header
        .split(' ')
        .map(|field| match field.strip_prefix('V') {
            Some(value) => format!("V{}", value.parse::<u64>().expect("uidvalidity") + 1000),
            None => field.to_owned(),
        })
        .collect();
    std::fs::write(&uidlist, format!("{}\n{rest}", new_header.join(" "))).expect("write uidlist");
    for index in ["dovecot.index", "dovecot.index.log", "dovecot.index.cache"] {
        let _ = std::fs::remove_file(maildir.join(index));
    }
}

/// After a rebuild, a failed message and its byte-identical copy both come
/// back under new UIDs, in different batches: the failed one is re-keyed,
/// and the copy is still its duplicate, not a message to send.
#[tokio::test]
async fn a_failed_message_and_its_copy_stay_unsent_after_a_rebuild() {
    let env = TestEnv::new("rebuiltfailed");
    let copy = message(
        "Ida <ida@example.org>",
        "deskbridge-test reject-content twice",
        "rb.1@example.org",
        "same bytes",
    );
    env.seed(&[&copy, &copy]).await;
    let settings = env.settings(&ConfigOptions {
        extra_mailbox: "batch_size = 1\n".to_owned(),
        ..ConfigOptions::default()
    });
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(
        (report.mailboxes[0].failed, report.mailboxes[0].skipped),
        (1, 1)
    );

    rebuild_uidvalidity(&env);
    let report = run_pass(&settings).await.expect("pass after the rebuild");
    let mailbox = &report.mailboxes[0];
    assert_eq!(mailbox.error, None);
    assert_eq!(mailbox.forwarded, 0, "nothing is sent again: {mailbox:?}");
    wait_until_queue_clear(&env.stack, &env.helpdesk_user).await;
    let arrived = read_folder_if_any(&env.stack, &env.helpdesk_user, "INBOX")
        .await
        .unwrap_or_default();
    assert!(arrived.is_empty(), "{} arrived", arrived.len());
    let store = Store::open(&settings.store_path).expect("open log");
    let rows = store
        .list_messages(&MessageFilter::default())
        .expect("rows");
    let states: Vec<&str> = rows.iter().map(|row| row.state.as_str()).collect();
    assert_eq!(rows.len(), 3, "{states:?}");
    assert_eq!(
        rows.iter()
            .filter(|row| row.state() == State::Failed)
            .count(),
        1,
        "{states:?}"
    );
}

#[tokio::test]
async fn uidvalidity_change_rescans_without_resending() {
    let env = TestEnv::new("uidvalidity");
    let first = message("Di <di@example.org>", "One", "uv.1@example.org", "one");
    let second = message("Di <di@example.org>", "Two", "uv.2@example.org", "two");
    env.seed(&[&first, &second]).await;
    let settings = env.settings(&ConfigOptions::default());
    assert_eq!(
        run_pass(&settings).await.expect("pass").mailboxes[0].forwarded,
        2
    );
    assert_eq!(wait_for_helpdesk(&env, 2).await.len(), 2);
    let before = Store::open(&settings.store_path)
        .expect("open log")
        .list_messages(&MessageFilter::default())
        .expect("rows")[0]
        .uidvalidity;

    rebuild_uidvalidity(&env);

    let third = message("Di <di@example.org>", "Three", "uv.3@example.org", "three");
    env.seed(&[&third]).await;
    let report = run_pass(&settings).await.expect("rescan pass");
    let mailbox = &report.mailboxes[0];
    assert_eq!(mailbox.error, None);
    assert_eq!(
        mailbox.forwarded, 1,
        "only the new message is sent: {mailbox:?}"
    );
    let delivered = wait_for_helpdesk(&env, 3).await;
    assert_eq!(delivered.len(), 3);

    let store = Store::open(&settings.store_path).expect("open log");
    let rows = store
        .list_messages(&MessageFilter::default())
        .expect("rows");
    assert_eq!(rows.len(), 3, "old rows were re-keyed, not duplicated");
    let uidvalidities: std::collections::HashSet<u32> =
        rows.iter().map(|row| row.uidvalidity).collect();
    assert_eq!(
        uidvalidities.len(),
        1,
        "every row now carries the new UIDVALIDITY"
    );
    assert!(
        !uidvalidities.contains(&before),
        "the folder really got a new UIDVALIDITY"
    );
}

/// Renaming a mailbox in the config starts a new checkpoint, so the pass
/// sees the whole folder again: what the old name already forwarded is
/// recognised (same Message-ID and body) and not sent a second time.
#[tokio::test]
async fn a_renamed_mailbox_does_not_forward_its_folder_again() {
    let env = TestEnv::new("renamed");
    let first = message("Gus <gus@example.org>", "One", "rn.1@example.org", "one");
    let second = message("Gus <gus@example.org>", "Two", "rn.2@example.org", "two");
    env.seed(&[&first, &second]).await;
    let settings = env.settings(&ConfigOptions::default());
    assert_eq!(
        run_pass(&settings).await.expect("pass").mailboxes[0].forwarded,
        2
    );
    assert_eq!(wait_for_helpdesk(&env, 2).await.len(), 2);

    let third = message(
        "Gus <gus@example.org>",
        "Three",
        "rn.3@example.org",
        "three",
    );
    env.seed(&[&third]).await;
    let renamed = env
        .config_text(&ConfigOptions::default())
        .replace("name = \"support\"", "name = \"support-desk\"");
    let path = env.dir.path().join("deskbridge.toml");
    std::fs::write(&path, renamed).expect("write renamed config");
    let settings = deskbridge::config::load(&path).expect("renamed config is valid");
    let report = run_pass(&settings).await.expect("pass under the new name");
    let mailbox = &report.mailboxes[0];
    assert_eq!(mailbox.name, "support-desk");
    assert_eq!(
        (mailbox.forwarded, mailbox.skipped),
        (1, 2),
        "only the new message is sent: {mailbox:?}"
    );
    let skipped = rows_in_state(&settings, State::Skipped);
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped.iter().all(|row| row.mailbox == "support-desk"
            && row.reason.as_deref() == Some("duplicate-message-id")
            && row
                .detail
                .as_deref()
                .is_some_and(|detail| detail.contains("no longer in the config"))),
        "{skipped:?}"
    );
    wait_until_queue_clear(&env.stack, &env.helpdesk_user).await;
    assert_eq!(wait_for_helpdesk(&env, 3).await.len(), 3);
}

/// A mailbox removed from the config that read another account is not
/// this one renamed: its forwarded copy of a message (sent to its own
/// helpdesk) does not stop this mailbox's copy from reaching this one's.
#[tokio::test]
async fn a_removed_mailbox_of_another_account_does_not_swallow_copies() {
    let env = TestEnv::new("removedhere");
    let other = TestEnv::new("removedthere");
    let copy = message(
        "Hal <hal@example.org>",
        "Both",
        "rm.1@example.org",
        "to both desks",
    );
    env.seed(&[&copy]).await;
    other.seed(&[&copy]).await;
    // First the other account, under the name "sales", to its own helpdesk.
    let sales = env
        .config_text(&ConfigOptions::default())
        .replace("name = \"support\"", "name = \"sales\"")
        .replace(&env.support_user, &other.support_user)
        .replace(&env.helpdesk_user, &other.helpdesk_user);
    let path = env.dir.path().join("deskbridge.toml");
    std::fs::write(&path, sales).expect("write sales config");
    let settings = deskbridge::config::load(&path).expect("sales config is valid");
    assert_eq!(
        run_pass(&settings).await.expect("sales pass").mailboxes[0].forwarded,
        1
    );
    assert_eq!(wait_for_helpdesk(&other, 1).await.len(), 1);
    // Then "sales" is gone and "support" reads its own account.
    let settings = env.settings(&ConfigOptions::default());
    let report = run_pass(&settings).await.expect("support pass");
    assert_eq!(
        (report.mailboxes[0].forwarded, report.mailboxes[0].skipped),
        (1, 0),
        "{:?}",
        report.mailboxes[0]
    );
    assert_eq!(wait_for_helpdesk(&env, 1).await.len(), 1);
}

/// A backlog larger than one batch: every eligible message arrives exactly
/// once with its bytes intact, and the held ones never arrive.
#[tokio::test]
async fn backlog_in_several_batches_arrives_exactly_once() {
    let env = TestEnv::new("backlog");
    let mut originals = Vec::new();
    let mut seeded = Vec::new();
    for index in 0..230 {
        let bytes = if index % 23 == 0 {
            pgp_mime()
                .into_iter()
                .chain(format!("X-Seq: {index}\r\n").into_bytes())
                .collect()
        } else {
            let body = format!(
                "Message number {index}.\r\n{}",
                "lorem ipsum ".repeat(index % 40)
            );
            let bytes = message(
                &format!("C{index} <c{index}@example.org>"),
                &format!("Backlog {index}"),
                &format!("backlog.{index}@example.org"),
                &body,
            );
            originals.push(bytes.clone());
            bytes
        };
        seeded.push(bytes);
    }
    env.seed(&seeded).await;
    let settings = env.settings(&ConfigOptions {
        extra_mailbox: "batch_size = 60\n".to_owned(),
        ..ConfigOptions::default()
    });
    let report = run_pass(&settings).await.expect("pass runs");
    let mailbox = &report.mailboxes[0];
    assert_eq!(
        (mailbox.fetched, mailbox.forwarded, mailbox.held),
        (230, 220, 10)
    );

    let delivered = wait_for_helpdesk(&env, originals.len()).await;
    assert_eq!(delivered.len(), originals.len());
    originals.sort();
    assert!(
        sorted_originals(&delivered) == originals,
        "every original arrives once, byte for byte"
    );

    let second = run_pass(&settings).await.expect("second pass");
    assert_eq!(
        (second.mailboxes[0].fetched, second.mailboxes[0].forwarded),
        (0, 0)
    );
    assert_eq!(
        wait_for_helpdesk(&env, originals.len()).await.len(),
        originals.len()
    );
}

/// Copies arriving in the same batch are recognised too: identical bytes
/// appended twice, and a relay's two copies of one Message-ID (different
/// To) delivered into the same mailbox. Each arrives once.
#[tokio::test]
async fn copies_in_one_batch_are_sent_once() {
    let env = TestEnv::new("samebatch");
    let twice = message(
        "Eve <eve@example.org>",
        "Twice",
        "twice.1@example.org",
        "same bytes",
    );
    let copy_a = b"From: bob.q@simplelogin.com\r\nTo: sales@company.test\r\nSubject: Call\r\nMessage-ID: <copy.1@simplelogin.com>\r\n\r\nCall me.\r\n".to_vec();
    let copy_b = b"From: bob.q@simplelogin.com\r\nTo: support@company.test\r\nSubject: Call\r\nMessage-ID: <copy.1@simplelogin.com>\r\n\r\nCall me.\r\n".to_vec();
    env.seed(&[&twice, &twice, &copy_a, &copy_b]).await;
    let settings = env.settings(&ConfigOptions::default());
    let report = run_pass(&settings).await.expect("pass runs");
    assert_eq!(
        (report.mailboxes[0].forwarded, report.mailboxes[0].skipped),
        (2, 2)
    );
    let reasons: Vec<Option<String>> = rows_in_state(&settings, State::Skipped)
        .into_iter()
        .map(|row| row.reason)
        .collect();
    assert!(
        reasons.contains(&Some("duplicate".to_owned())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&Some("duplicate-message-id".to_owned())),
        "{reasons:?}"
    );
    assert_eq!(wait_for_helpdesk(&env, 2).await.len(), 2);
}

/// A relay's two copies of one Message-ID in adjacent batches: the second
/// is recorded while the first is still being sent, and is skipped all the
/// same. One ticket, not two. The helpdesk defers everything in the first
/// pass, so the first copy is certainly still pending when the second is
/// judged.
#[tokio::test]
async fn copies_in_adjacent_batches_are_sent_once() {
    let env = TestEnv::new("nextbatch");
    let copy_a = b"From: bob.q@simplelogin.com\r\nTo: sales@company.test\r\nSubject: Call\r\nMessage-ID: <copy.2@simplelogin.com>\r\n\r\nCall me.\r\n".to_vec();
    let copy_b = b"From: bob.q@simplelogin.com\r\nTo: support@company.test\r\nSubject: Call\r\nMessage-ID: <copy.2@simplelogin.com>\r\n\r\nCall me.\r\n".to_vec();
    let other = message(
        "Fay <fay@example.org>",
        "Other",
        "other.2@example.org",
        "other",
    );
    env.seed(&[&copy_a, &copy_b, &other]).await;
    let settings = env.settings(&ConfigOptions {
        extra_mailbox: "batch_size = 1\n".to_owned(),
        ..ConfigOptions::default()
    });
    set_recipient_access(&env.stack, &env.helpdesk_user, Some("450 4.2.0 later"));
    let report = run_pass(&settings).await.expect("pass runs");
    set_recipient_access(&env.stack, &env.helpdesk_user, None);
    let mailbox = &report.mailboxes[0];
    assert_eq!(
        (mailbox.forwarded, mailbox.deferred, mailbox.skipped),
        (0, 2, 1)
    );
    let report = run_pass(&settings).await.expect("second pass runs");
    assert_eq!(report.mailboxes[0].forwarded, 2);
    let skipped = rows_in_state(&settings, State::Skipped);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].reason.as_deref(), Some("duplicate-message-id"));
    assert_eq!(skipped[0].uid, 2, "the later copy is the one skipped");
    assert_eq!(wait_for_helpdesk(&env, 2).await.len(), 2);
}
