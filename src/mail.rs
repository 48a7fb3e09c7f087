//! Parsing fetched mail into the header fields the log keeps.
//!
//! Owns the use of mail-parser. Pure: no I/O, and malformed mail is never an
//! error here (mail-parser parses best-effort and returns `None` only when it
//! finds no headers at all, which the classifier holds as `unparseable`).

use mail_parser::{Address, HeaderValue, Message, MessageParser};
use sha2::{Digest, Sha256};

/// The header fields of one message, as written to the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailSummary {
    /// Message-ID without angle brackets.
    pub message_id: Option<String>,
    /// In-Reply-To, IDs without angle brackets, space-separated.
    pub in_reply_to: Option<String>,
    /// References, IDs without angle brackets, space-separated.
    pub references: Option<String>,
    /// First From address (`local@domain`).
    pub from: Option<String>,
    /// Every Reply-To address, comma-separated, exactly as decoded.
    pub reply_to: Option<String>,
    pub subject: Option<String>,
    /// The Date header as RFC 3339 UTC, when it parses.
    pub date: Option<String>,
}

/// Parses raw message bytes. `None` when [`parse_checked`] gives no message.
pub fn parse(raw: &[u8]) -> Option<Message<'_>> {
    parse_checked(raw).ok()
}

/// Why raw bytes gave no message to examine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unparsed {
    /// mail-parser found no header.
    NoHeader,
    /// More MIME part delimiters than [`too_many_part_delimiters`] allows:
    /// left unparsed.
    TooManyParts,
}

/// Parses raw message bytes, unless the message has so many MIME part
/// delimiters that parsing it would take far more memory than the message
/// itself.
pub fn parse_checked(raw: &[u8]) -> Result<Message<'_>, Unparsed> {
    if too_many_part_delimiters(raw) {
        return Err(Unparsed::TooManyParts);
    }
    MessageParser::default()
        .parse(raw)
        .ok_or(Unparsed::NoHeader)
}

/// Whether `raw` has more MIME part delimiters (`--` and a boundary the
/// message declares, wherever they stand: mail-parser takes one in the
/// middle of a line too) than 20,000 or one per 128 bytes, whichever is
/// more.
///
/// NOTE: mail-parser keeps about 190 bytes for every part; a 10 MiB message
/// of 1.5 million one-line parts took 272 MiB to parse. At one part per
/// 128 bytes a message costs at most about 1.5 times its size again, while
/// real mail has far fewer (the classifier holds any message with more
/// than 10,000 parts as unparseable anyway). Counting delimiters of the
/// declared boundaries, not lines that start with `--`, leaves SQL dumps
/// and ASCII tables alone. A message declaring more than 64 boundaries is
/// judged by every `--` in it.
pub fn too_many_part_delimiters(raw: &[u8]) -> bool {
    const MAX_BOUNDARIES: usize = 64;
    const MAX_BOUNDARY_LEN: usize = 70;
    let bound = (raw.len() / 128).max(20_000);
    let mut boundaries: Vec<Vec<u8>> = Vec::new();
    for equals in memchr::memchr_iter(b'=', raw) {
        // `boundary`, in any case, and perhaps spaces, before the `=`.
        let name_end = raw[..equals]
            .iter()
            .rposition(|&c| c != b' ' && c != b'\t')
            .map_or(0, |last| last + 1);
        if name_end < 8 || !raw[name_end - 8..name_end].eq_ignore_ascii_case(b"boundary") {
            continue;
        }
        let value = raw[equals + 1..].trim_ascii_start();
        let boundary = match value.first() {
            Some(b'"') => value[1..].split(|&c| c == b'"' || c == b'\n').next(),
            _ => value
                .split(|&c| c == b';' || c.is_ascii_whitespace())
                .next(),
        }
        .unwrap_or_default();
        // NOTE: RFC 2046 allows 70 bytes. A longer value is cut there: its
        // prefix matches wherever the whole would (so nothing is missed),
        // and a hostile value that runs for megabytes is not copied 64
        // times.
        let boundary = &boundary[..boundary.len().min(MAX_BOUNDARY_LEN)];
        let mut delimiter = b"--".to_vec();
        delimiter.extend_from_slice(boundary);
        if !boundaries.contains(&delimiter) {
            if boundaries.len() == MAX_BOUNDARIES {
                return memchr::memmem::find_iter(raw, b"--").nth(bound).is_some();
            }
            boundaries.push(delimiter);
        }
    }
    let mut delimiters = 0;
    for delimiter in &boundaries {
        delimiters += memchr::memmem::find_iter(raw, delimiter)
            .take(bound + 1)
            .count();
        if bound < delimiters {
            return true;
        }
    }
    false
}

/// Hex SHA-256 of the exact bytes, the content identity of a message.
pub fn content_hash(raw: &[u8]) -> String {
    let digest = Sha256::digest(raw);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    hex
}

/// 128 bits of SHA-256 over a Message-ID and a [`body_hash`]: a compact
/// key for recognising copies of one message within a pass.
///
/// NOTE: The worker keeps one per forwarded message for a whole pass, and a
/// first pass may take a backlog of tens of thousands: the two strings cost
/// about 270 bytes a message (5 MiB at 20,000), this key about 30.
pub fn copy_key(message_id: &str, body_sha256: &str) -> [u8; 16] {
    let digest = Sha256::new()
        .chain_update(message_id.as_bytes())
        .chain_update([0])
        .chain_update(body_sha256.as_bytes())
        .finalize();
    let mut key = [0; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Extracts the logged header fields.
pub fn summarize(message: &Message<'_>) -> MailSummary {
    MailSummary {
        message_id: message.message_id().map(clean),
        in_reply_to: id_list(message.in_reply_to()),
        references: id_list(message.references()),
        from: from_address(message),
        reply_to: message
            .reply_to()
            .and_then(all_addresses)
            .or_else(|| written_address(message, "Reply-To")),
        subject: message.subject().map(clean),
        date: message
            .date()
            .map(|date| crate::clock::rfc3339(date.to_timestamp())),
    }
}

/// Hex SHA-256 of the body (everything after the header block): equal for
/// copies of one message whose headers differ (e.g. in To or Received).
pub fn body_hash(message: &Message<'_>, raw: &[u8]) -> String {
    let start = (message.root_part().offset_body as usize).min(raw.len());
    content_hash(&raw[start..])
}

/// The header block with the blank line that ends it, as IMAP's
/// `BODY[HEADER]` returns it; the whole input when it has no body.
pub fn header_block(raw: &[u8]) -> &[u8] {
    match raw.windows(4).position(|window| window == b"\r\n\r\n") {
        Some(end) => &raw[..end + 4],
        None => raw,
    }
}

/// The first From address (`local@domain`).
pub fn from_address(message: &Message<'_>) -> Option<String> {
    first_of(message, message.from(), "From")
}

/// The first Reply-To address (`local@domain`).
pub fn reply_to_address(message: &Message<'_>) -> Option<String> {
    first_of(message, message.reply_to(), "Reply-To")
}

/// The first address mail-parser read from header `name`, else the one
/// written there (see [`written_address`]).
fn first_of(message: &Message<'_>, parsed: Option<&Address<'_>>, name: &str) -> Option<String> {
    parsed
        .and_then(first_address)
        .or_else(|| written_address(message, name))
}

/// The address of a one-address header as written, for what mail-parser
/// cannot read: it takes a bare quoted local part (`"jane.doe."@duck.com`)
/// for a display name and keeps only `@duck.com`. The address is a relay's
/// token, so it is kept exactly, quotes included.
fn written_address(message: &Message<'_>, name: &str) -> Option<String> {
    let raw = message.header_raw(name)?;
    // NOTE: One pass over the whole value that knows quotes: comments go,
    // `<` starts the address afresh (what came before was a display name)
    // and `>` ends it, folding whitespace goes except inside quotes (where
    // a space is part of the address), and `,`, `;` or `:` outside quotes
    // mean a list or a group, which mail-parser read or nobody can.
    let mut written = String::with_capacity(raw.len());
    let (mut quoted, mut escaped, mut comment_depth) = (false, false, 0usize);
    let mut angle = None;
    for c in raw.chars() {
        if escaped {
            escaped = false;
            if comment_depth == 0 {
                written.push(c);
            }
            continue;
        }
        if comment_depth > 0 {
            match c {
                '\\' => escaped = true,
                '(' => comment_depth += 1,
                ')' => comment_depth -= 1,
                _ => (),
            }
            continue;
        }
        if quoted {
            match c {
                '\\' => escaped = true,
                '"' => quoted = false,
                '\r' | '\n' => continue,
                _ => (),
            }
            written.push(c);
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                written.push(c);
            }
            '(' => comment_depth = 1,
            '<' if angle.is_none() => {
                written.clear();
                angle = Some(false);
            }
            '>' if angle == Some(false) => angle = Some(true),
            ',' | ';' | ':' | '<' | '>' => return None,
            c if c.is_whitespace() => (),
            _ if angle == Some(true) => return None,
            c => written.push(c),
        }
    }
    let (local, domain) = written.rsplit_once('@')?;
    (!quoted
        && comment_depth == 0
        && angle != Some(false)
        && !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('"'))
    .then(|| clean(&written))
}

/// The values of every Resent-Message-ID header, without angle brackets.
pub fn resent_message_ids(message: &Message<'_>) -> Vec<String> {
    let mut ids = Vec::new();
    for value in message.header_values("Resent-Message-ID") {
        match value {
            HeaderValue::Text(text) => ids.push(clean(text)),
            HeaderValue::TextList(list) => ids.extend(list.iter().map(|id| clean(id))),
            _ => (),
        }
    }
    ids
}

fn id_list(value: &HeaderValue<'_>) -> Option<String> {
    let ids: Vec<String> = match value {
        HeaderValue::Text(text) => vec![clean(text)],
        HeaderValue::TextList(list) => list.iter().map(|id| clean(id)).collect(),
        _ => return None,
    };
    let joined = ids.join(" ");
    if joined.is_empty() {
        None
    } else {
        Some(joined)
    }
}

/// An address mail-parser read in full: `@domain` alone is what is left of
/// a quoted local part it could not read (see [`written_address`]).
fn whole(address: &str) -> bool {
    !address.trim_start().starts_with('@')
}

fn first_address(address: &Address<'_>) -> Option<String> {
    address
        .first()
        .and_then(|addr| addr.address())
        .filter(|address| whole(address))
        .map(clean)
}

fn all_addresses(address: &Address<'_>) -> Option<String> {
    if address
        .iter()
        .any(|addr| addr.address().is_some_and(|address| !whole(address)))
    {
        return None;
    }
    let list: Vec<String> = address
        .iter()
        .filter_map(|addr| addr.address())
        .map(clean)
        .collect();
    if list.is_empty() {
        None
    } else {
        Some(list.join(", "))
    }
}

/// Drops control characters so a hostile header cannot corrupt a terminal
/// or a JSON line; mail-parser has already decoded encoded words.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_relay_reply() {
        let raw = b"From: Jane <jane_at_example_com_abc123@simplelogin.co>\r\n\
Reply-To: ra+token.xyz@simplelogin.co\r\n\
To: support@company.test\r\n\
Subject: =?utf-8?q?Re=3A_Printer_=E2=9C=93?=\r\n\
Date: Sat, 28 Nov 2026 10:00:00 +0100\r\n\
Message-ID: <new.1@simplelogin.co>\r\n\
In-Reply-To: <ticket.7@zendesk.com>\r\n\
References: <a@x.test>\r\n <ticket.7@zendesk.com>\r\n\
\r\n\
Body\r\n";
        let message = parse(raw).expect("parses");
        let summary = summarize(&message);
        assert_eq!(summary.message_id.as_deref(), Some("new.1@simplelogin.co"));
        assert_eq!(summary.in_reply_to.as_deref(), Some("ticket.7@zendesk.com"));
        assert_eq!(
            summary.references.as_deref(),
            Some("a@x.test ticket.7@zendesk.com")
        );
        assert_eq!(
            summary.from.as_deref(),
            Some("jane_at_example_com_abc123@simplelogin.co")
        );
        assert_eq!(
            summary.reply_to.as_deref(),
            Some("ra+token.xyz@simplelogin.co")
        );
        assert_eq!(summary.subject.as_deref(), Some("Re: Printer \u{2713}"));
        assert_eq!(summary.date.as_deref(), Some("2026-11-28T09:00:00Z"));
    }

    #[test]
    fn quoted_local_parts_are_kept_as_written() {
        let raw = b"From: \"jane.doe.\"@mozmail.com\r\nReply-To: Jane <\"jane\"@duck.com>\r\nSubject: hi\r\n\r\nbody\r\n";
        let message = parse(raw).expect("parses");
        assert_eq!(
            from_address(&message).as_deref(),
            Some("\"jane.doe.\"@mozmail.com")
        );
        assert_eq!(
            reply_to_address(&message).as_deref(),
            Some("\"jane\"@duck.com")
        );
        let summary = summarize(&message);
        assert_eq!(summary.from.as_deref(), Some("\"jane.doe.\"@mozmail.com"));
        assert_eq!(summary.reply_to.as_deref(), Some("\"jane\"@duck.com"));
        let spaced = parse(b"From: \"jane doe\"@duck.com\r\n\r\nbody\r\n").expect("parses");
        assert_eq!(
            from_address(&spaced).as_deref(),
            Some("\"jane doe\"@duck.com")
        );
        let list =
            parse(b"From: a@b.example\r\nReply-To: \"a\"@x.example, c@y.example\r\n\r\nbody\r\n")
                .expect("parses");
        assert_eq!(reply_to_address(&list), None);
        for (header, expected) in [
            (
                "\"jane.doe.\"@duck.com (Jane Doe)",
                Some("\"jane.doe.\"@duck.com"),
            ),
            (
                "\"jane.doe.\"@duck.com (via <bob@other.example>)",
                Some("\"jane.doe.\"@duck.com"),
            ),
            (
                "Jane <\"jane doe\"@duck.com>",
                Some("\"jane doe\"@duck.com"),
            ),
            ("\"a\\\"b\"@duck.com", Some("\"a\\\"b\"@duck.com")),
            (
                "\"a\"@x.example, Orders <orders@jmiller.anonaddy.com>",
                None,
            ),
            ("\"a\"@x.example; c@y.example", None),
            ("undisclosed:\"a\"@x.example;", None),
            ("<\"a\"@x.example> trailing", None),
            ("\"unterminated@x.example", None),
        ] {
            let raw = format!("From: {header}\r\n\r\nbody\r\n");
            let message = parse(raw.as_bytes()).expect("parses");
            assert_eq!(
                written_address(&message, "From").as_deref(),
                expected,
                "{header}"
            );
        }
        assert_eq!(summarize(&list).reply_to, None);
        let plain = parse(b"From: Jane <jane@example.org>\r\n\r\nbody\r\n").expect("parses");
        assert_eq!(from_address(&plain).as_deref(), Some("jane@example.org"));
    }

    #[test]
    fn header_block_ends_after_the_blank_line() {
        assert_eq!(
            header_block(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
            b"A: 1\r\nB: 2\r\n\r\n"
        );
        assert_eq!(header_block(b"A: 1\r\n"), b"A: 1\r\n");
    }

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(
            content_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
