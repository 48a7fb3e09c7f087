//! The header block prepended to every redirected message.
//!
//! Pure. A redirect (RFC 5322 §3.6.6) leaves every original byte alone and
//! prepends a trace block: our Received line, then one Resent-* set. The set
//! is complete (From, Date, Message-ID, To) on purpose: an MTA completes a
//! partial set by appending fields at the end of the header block, which
//! would alter the original header bytes.

/// The facts a trace block records.
#[derive(Debug, Clone)]
pub struct TraceFacts<'a> {
    /// Our name in EHLO; the `by` of the Received line.
    pub helo_name: &'a str,
    /// The IMAP host the message came from; the `from` of the Received line.
    pub imap_host: &'a str,
    pub mailbox_name: &'a str,
    pub uid: u32,
    /// Resent-From: the envelope sender, an address on the organisation's domain.
    pub resent_from: &'a str,
    /// Resent-To: the helpdesk's intake address.
    pub resent_to: &'a str,
    /// Resent-Message-ID, with angle brackets.
    pub resent_message_id: &'a str,
    /// Unix time of the redirect.
    pub now_unix: i64,
}

/// The Resent-Message-ID for a log row, stable across retries of the same
/// row so that a resend after an interrupted session is recognisable.
pub fn resent_message_id(row_id: i64, sha256_hex: &str, envelope_from: &str) -> String {
    let domain = envelope_from
        .rsplit_once('@')
        .map(|(_, domain)| domain)
        .unwrap_or("localhost");
    let short_hash = sha256_hex.get(..16).unwrap_or(sha256_hex);
    format!("<deskbridge.{row_id}.{short_hash}@{domain}>")
}

/// The block to write before the original bytes, CRLF line ends.
pub fn trace_block(facts: &TraceFacts<'_>) -> String {
    let date = crate::clock::rfc5322(facts.now_unix);
    let version = env!("CARGO_PKG_VERSION");
    format!(
        "Received: from {imap_host} (mailbox {mailbox} uid {uid})\r\n\
         \tby {helo} (deskbridge {version}) for <{to}>;\r\n\
         \t{date}\r\n\
         Resent-From: <{from}>\r\n\
         Resent-Date: {date}\r\n\
         Resent-Message-ID: {resent_id}\r\n\
         Resent-To: <{to}>\r\n",
        imap_host = sanitize(facts.imap_host),
        mailbox = sanitize(facts.mailbox_name),
        uid = facts.uid,
        helo = sanitize(facts.helo_name),
        to = facts.resent_to,
        from = facts.resent_from,
        resent_id = facts.resent_message_id,
    )
}

/// Keeps configured names from breaking the header syntax.
fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() && !matches!(c, '(' | ')' | ';'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_is_complete_and_parseable() {
        let id = resent_message_id(42, "0123456789abcdef0123", "bridge@company.test");
        assert_eq!(id, "<deskbridge.42.0123456789abcdef@company.test>");
        let block = trace_block(&TraceFacts {
            helo_name: "bridge.company.test",
            imap_host: "imap.company.test",
            mailbox_name: "support",
            uid: 7,
            resent_from: "bridge@company.test",
            resent_to: "intake@helpdesk.test",
            resent_message_id: &id,
            now_unix: 1_795_884_480,
        });
        assert!(block.starts_with("Received: from imap.company.test (mailbox support uid 7)\r\n"));
        assert!(block.ends_with("Resent-To: <intake@helpdesk.test>\r\n"));
        assert!(!block.replace("\r\n", "").contains('\n'));
        let message = format!("{block}From: a@b.test\r\n\r\nbody\r\n");
        let parsed = crate::mail::parse(message.as_bytes()).expect("parses");
        assert_eq!(
            crate::mail::resent_message_ids(&parsed),
            vec!["deskbridge.42.0123456789abcdef@company.test".to_owned()]
        );
        for field in [
            "Resent-From",
            "Resent-Date",
            "Resent-Message-ID",
            "Resent-To",
        ] {
            assert_eq!(
                block.matches(&format!("\r\n{field}: ")).count(),
                1,
                "{field}"
            );
        }
    }
}
