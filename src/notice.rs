//! The two messages deskbridge writes itself: the notice that tells the
//! helpdesk a message is held, and the optional auto-reply to its sender.
//!
//! Pure: builds RFC 5322 text from a log row. Neither message ever quotes
//! the original's content; the notice names the sender, date, subject
//! (unless it is a protected-headers placeholder), the reason in plain
//! words and where the original sits.

use crate::clock;

/// What a notice or auto-reply says about a held message.
#[derive(Debug, Clone)]
pub struct HeldFacts<'a> {
    pub row_id: i64,
    pub mailbox: &'a str,
    pub folder: &'a str,
    pub from: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub date: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub reason: &'a str,
    pub detail: &'a str,
}

/// Subjects that encrypting clients put outside in place of the real one
/// (`encryption-markers.md` H1); showing them would only confuse.
fn visible_subject(subject: Option<&str>) -> Option<&str> {
    let subject = subject?.trim();
    let placeholder = subject.is_empty()
        || subject == "..."
        || subject == "[...]"
        || subject.eq_ignore_ascii_case("encrypted message");
    if placeholder { None } else { Some(subject) }
}

/// The notice to the helpdesk, CRLF line ends, ready for SMTP.
///
/// NOTE: It carries no `Auto-Submitted`: it exists to become a ticket, and
/// Zendesk suspends mail with an auto-generated header of any kind
/// (relays-and-helpdesks.md, suspension cause `auto_mailer`). Should it
/// come back to a polled mailbox, the loop guard knows it by its
/// Message-ID.
pub fn held_notice(
    facts: &HeldFacts<'_>,
    notice_from: &str,
    helpdesk: &str,
    now_unix: i64,
) -> String {
    let domain = notice_from
        .rsplit_once('@')
        .map_or("localhost", |(_, domain)| domain);
    let from = clean(facts.from.unwrap_or("an unknown sender"));
    let subject_line = match visible_subject(facts.subject) {
        Some(subject) => format!("Held message from {from}: {}", clean(subject)),
        None => format!("Held message from {from}"),
    };
    let subject_text = match visible_subject(facts.subject) {
        Some(subject) => clean(subject),
        None => "(not shown: protected or empty)".to_owned(),
    };
    let body = format!(
        "deskbridge held a message instead of forwarding it.\r\n\
         \r\n\
         From:    {from}\r\n\
         Date:    {date}\r\n\
         Subject: {subject_text}\r\n\
         Reason:  {reason} ({detail})\r\n\
         \r\n\
         The original is in mailbox \"{mailbox}\", folder \"{folder}\", deskbridge log #{id}.\r\n\
         Nothing of its content is included here.\r\n\
         A person can read it there, and forward it with:\r\n\
         \r\n\
         \x20   deskbridge release {id}\r\n",
        date = clean(facts.date.unwrap_or("unknown")),
        reason = facts.reason,
        detail = clean(facts.detail),
        mailbox = clean(facts.mailbox),
        folder = clean(facts.folder),
        id = facts.row_id,
    );
    format!(
        "From: deskbridge <{notice_from}>\r\n\
         To: <{helpdesk}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <deskbridge-notice.{id}.{now_unix}@{domain}>\r\n\
         X-Deskbridge-Held: {id}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         {body}",
        subject = encode_header(&subject_line),
        date = clock::rfc5322(now_unix),
        id = facts.row_id,
    )
}

/// The RFC 3834 auto-reply to the sender of a held message.
pub fn auto_reply(
    facts: &HeldFacts<'_>,
    reply_from: &str,
    recipient: &str,
    now_unix: i64,
) -> String {
    let domain = reply_from
        .rsplit_once('@')
        .map_or("localhost", |(_, domain)| domain);
    let subject = match visible_subject(facts.subject) {
        Some(subject) => format!("Auto: {}", clean(subject)),
        None => "Auto: your message to support".to_owned(),
    };
    let threading = match facts.message_id {
        Some(id) => format!("In-Reply-To: <{id}>\r\nReferences: <{id}>\r\n"),
        None => String::new(),
    };
    format!(
        "From: <{reply_from}>\r\n\
         To: <{recipient}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <deskbridge-autoreply.{id}.{now_unix}@{domain}>\r\n\
         {threading}\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         Thank you for your message. It arrived in a form our support system\r\n\
         cannot open automatically: {reason}.\r\n\
         It is waiting for a person to look at it; you do not need to send\r\n\
         it again.\r\n\
         \r\n\
         {ask}",
        subject = encode_header(&subject),
        date = clock::rfc5322(now_unix),
        id = facts.row_id,
        reason = plain_reason(facts.reason, facts.detail),
        ask = what_to_ask(facts.reason),
    )
}

/// What the auto-reply asks the sender to do instead, by why it was held.
fn what_to_ask(reason: &str) -> &'static str {
    match reason {
        "too-large" => {
            "If you can, please send it in smaller parts, or share large files\r\n\
             through a link.\r\n"
        }
        "portal" => {
            "If you can, please send the information in the message itself\r\n\
             rather than through a secure-mail portal, or tell us how you\r\n\
             would like to exchange it.\r\n"
        }
        "smime-opaque-signed" => {
            "If you can, please send it again with an ordinary (detached)\r\n\
             signature or none, or tell us how you would like to exchange it.\r\n"
        }
        "unparseable" => {
            "If you can, please send it again as an ordinary message, or tell\r\n\
             us how you would like to exchange it.\r\n"
        }
        _ => {
            "If you can, please send the information without encryption or\r\n\
             password protection, or tell us how you would like to exchange it.\r\n"
        }
    }
}

/// A reason in words a customer understands.
fn plain_reason(reason: &str, detail: &str) -> &'static str {
    if detail == crate::classify::SEVENZIP_UNSEEN {
        return "a 7z archive attached to it could not be checked";
    }
    match reason {
        "smime-enveloped" | "pgp-encrypted" => "it is encrypted",
        "smime-opaque-signed" => "it is wrapped in a digital signature container",
        "portal" => "its content sits on a secure-mail portal",
        "password-attachment" => "an attachment is password-protected",
        "too-large" => "it is too large",
        _ => "its format could not be read",
    }
}

/// Text placed in headers or the notice body: line breaks and control
/// characters become spaces, and it is cut to [`MAX_TEXT_BYTES`] bytes of
/// whole characters, so no line nears the 998-octet limit a server may
/// refuse.
fn clean(text: &str) -> String {
    let mut cleaned = String::new();
    for c in text.chars() {
        if MAX_TEXT_BYTES < cleaned.len() + c.len_utf8() {
            cleaned.push_str("...");
            break;
        }
        cleaned.push(if c.is_control() { ' ' } else { c });
    }
    cleaned
}

/// The most of a text (a subject, an address, a reason's detail) a notice
/// or reply repeats in its body, in bytes.
const MAX_TEXT_BYTES: usize = 300;

/// A header value as written: cut to [`MAX_HEADER_CHARS`] characters,
/// and RFC 2047 encoded when not plain ASCII, in encoded-words of at most
/// 75 characters on folded lines (RFC 2047 §2, RFC 5322 §2.2.3), so no
/// line nears the 998-octet limit a server may refuse.
fn encode_header(text: &str) -> String {
    let text: String = match text.char_indices().nth(MAX_HEADER_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    };
    if text.is_ascii() {
        return text;
    }
    // NOTE: 45 bytes of UTF-8 make 60 base64 characters, 72 with the
    // `=?utf-8?b?` and `?=` around them; the first word, which shares its
    // line with the field name, takes 36. A character is never split.
    let word = |piece: &str| format!("=?utf-8?b?{}?=", base64(piece.as_bytes()));
    let mut words = Vec::new();
    let mut piece = String::new();
    for c in text.chars() {
        let room = if words.is_empty() { 36 } else { 45 };
        if room < piece.len() + c.len_utf8() {
            words.push(word(&piece));
            piece.clear();
        }
        piece.push(c);
    }
    if !piece.is_empty() {
        words.push(word(&piece));
    }
    words.join("\r\n ")
}

/// The longest subject (or other header text) a notice or reply repeats.
const MAX_HEADER_CHARS: usize = 200;

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (index, shift) in [18, 12, 6, 0].iter().enumerate() {
            if index <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(subject: Option<&'a str>) -> HeldFacts<'a> {
        HeldFacts {
            row_id: 42,
            mailbox: "support",
            folder: "Deskbridge/Held",
            from: Some("alice@example.com"),
            subject,
            date: Some("2026-11-27T14:10:00Z"),
            message_id: Some("pgp.1@example.com"),
            reason: "pgp-encrypted",
            detail: "the message is encrypted with OpenPGP",
        }
    }

    #[test]
    fn notice_names_the_facts_and_parses() {
        let text = held_notice(
            &facts(Some("Contract")),
            "bridge@company.test",
            "intake@helpdesk.test",
            0,
        );
        let message = crate::mail::parse(text.as_bytes()).expect("parses");
        assert_eq!(
            message.subject(),
            Some("Held message from alice@example.com: Contract")
        );
        let body = message.body_text(0).expect("body");
        for needle in [
            "pgp-encrypted",
            "Deskbridge/Held",
            "deskbridge release 42",
            "alice@example.com",
        ] {
            assert!(body.contains(needle), "{needle} missing in {body}");
        }
        assert_eq!(message.header_raw("Auto-Submitted"), None);
        assert!(message.message_id().is_some_and(
            |id| id.starts_with("deskbridge-notice.42.") && id.ends_with("@company.test")
        ));
    }

    #[test]
    fn placeholder_subjects_are_not_shown() {
        let text = held_notice(
            &facts(Some("...")),
            "bridge@company.test",
            "intake@helpdesk.test",
            0,
        );
        assert!(text.contains("Subject: Held message from alice@example.com\r\n"));
        assert!(text.contains("(not shown: protected or empty)"));
    }

    #[test]
    fn auto_reply_does_not_claim_a_password_it_could_not_see() {
        let mut held = facts(Some("Logs"));
        held.reason = "password-attachment";
        let known = auto_reply(&held, "support@company.test", "alice@example.com", 0);
        assert!(
            known.contains("an attachment is password-protected"),
            "{known}"
        );
        held.detail = crate::classify::SEVENZIP_UNSEEN;
        let unseen = auto_reply(&held, "support@company.test", "alice@example.com", 0);
        assert!(
            unseen.contains("a 7z archive attached to it could not be checked"),
            "{unseen}"
        );
        assert!(!unseen.contains("is password-protected"), "{unseen}");
    }

    #[test]
    fn auto_reply_asks_for_what_would_help() {
        let mut held = facts(Some("Logs"));
        let encrypted = auto_reply(&held, "support@company.test", "alice@example.com", 0);
        assert!(encrypted.contains("without encryption"), "{encrypted}");
        held.reason = "too-large";
        let large = auto_reply(&held, "support@company.test", "alice@example.com", 0);
        assert!(large.contains("it is too large"), "{large}");
        assert!(large.contains("in smaller parts"), "{large}");
        assert!(!large.contains("encryption"), "{large}");
        held.reason = "unparseable";
        let garbled = auto_reply(&held, "support@company.test", "alice@example.com", 0);
        assert!(garbled.contains("as an ordinary message"), "{garbled}");
        assert!(!garbled.contains("encryption"), "{garbled}");
        for text in [encrypted, large, garbled] {
            assert!(text.lines().all(|line| line.len() < 80), "{text}");
        }
    }

    #[test]
    fn long_subjects_are_cut_and_folded() {
        let long = "Grüße aus Zürich, ".repeat(40);
        let text = auto_reply(
            &facts(Some(&long)),
            "support@company.test",
            "alice@example.com",
            0,
        );
        assert!(text.lines().all(|line| line.len() <= 78), "{text}");
        let message = crate::mail::parse(text.as_bytes()).expect("parses");
        let subject = message.subject().expect("subject");
        assert!(
            subject.starts_with("Auto: Grüße aus Zürich, Grüße"),
            "{subject}"
        );
        assert!(subject.ends_with("..."), "{subject}");
        assert_eq!(subject.chars().count(), MAX_HEADER_CHARS + "...".len());
        let emoji = "\u{1F600}".repeat(2000);
        let notice = held_notice(
            &facts(Some(&emoji)),
            "bridge@company.test",
            "desk@helpdesk.test",
            0,
        );
        assert!(notice.lines().all(|line| line.len() < 330), "{notice}");
        let ascii = "x".repeat(2000);
        let notice = held_notice(
            &facts(Some(&ascii)),
            "bridge@company.test",
            "desk@helpdesk.test",
            0,
        );
        assert!(notice.lines().all(|line| line.len() < 330), "{notice}");
    }

    #[test]
    fn auto_reply_follows_rfc_3834() {
        let text = auto_reply(
            &facts(Some("Grüße")),
            "support@company.test",
            "alice@example.com",
            0,
        );
        let message = crate::mail::parse(text.as_bytes()).expect("parses");
        assert_eq!(message.subject(), Some("Auto: Grüße"));
        assert_eq!(
            message.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-replied")
        );
        assert_eq!(message.in_reply_to().as_text(), Some("pgp.1@example.com"));
        assert!(!text.contains("BEGIN PGP"));
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
    }
}
