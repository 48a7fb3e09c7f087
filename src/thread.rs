//! The keys that place a message in a conversation, and thread repair.
//!
//! Pure: reads a parsed message and returns [`ThreadKeys`]: the Message-IDs
//! it names, helpdesk ticket tokens, the normalised subject and the
//! correspondent's addresses. The store matches them, in order, against
//! the log (references, then ticket token, then relay correspondent with
//! subject). Also decides whether adding In-Reply-To/References is safe
//! for DKIM, and writes those lines.

use std::borrow::Cow;

use mail_parser::decoders::html::html_to_text;
use mail_parser::{HeaderValue, Message, PartType};
use regex::Regex;

use crate::classify::RelayMatch;

/// What the store needs to attach a message to a thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadKeys {
    /// The message's own Message-ID.
    pub own_id: Option<String>,
    /// In-Reply-To and References IDs, in header order, without brackets.
    pub referenced_ids: Vec<String>,
    /// Helpdesk ticket tokens found in subject, body or referenced IDs.
    pub tokens: Vec<String>,
    /// The subject as written, and normalised for comparison.
    pub subject: Option<String>,
    pub subject_key: Option<String>,
    /// The relay hiding the correspondent, if any.
    pub relay: Option<String>,
    /// The correspondent's addresses with their kind (`alias`, `token`,
    /// `address`); the first one names the correspondent.
    pub addresses: Vec<(String, &'static str)>,
    /// When a DKIM signature covers In-Reply-To or References (present or
    /// not), adding them would break it: this says which signature.
    pub repair_blocked_by: Option<String>,
}

impl ThreadKeys {
    /// Whether the message already names earlier messages.
    pub fn has_references(&self) -> bool {
        !self.referenced_ids.is_empty()
    }
}

/// Ticket-token patterns: the built-in helpdesks and the config's own.
#[derive(Debug, Clone)]
pub struct TicketPatterns {
    /// (token prefix, pattern, searched in bodies too); the token is the
    /// prefix plus the pattern's capture groups joined.
    text_patterns: Vec<(String, Regex, Scope)>,
    zendesk_message_id: Regex,
}

impl TicketPatterns {
    /// The built-in patterns plus `custom` ones from the config.
    ///
    /// # Errors
    /// A custom pattern that is not a valid regular expression.
    pub fn new(custom: &[String]) -> Result<TicketPatterns, regex::Error> {
        // NOTE: These patterns are constants known to compile; a failure
        // here would be a bug caught by the unit tests.
        let mut text_patterns = vec![
            // Zendesk's encoded ticket ID, e.g. [1G7EOR-0Q2J] (any body or subject).
            (
                "zendesk".to_owned(),
                Regex::new(r"\[([A-Z0-9]{6})-([A-Z0-9]{4})\]")?,
                Scope::SubjectAndBody,
            ),
            // Freshdesk's ticket number, e.g. [#1234], or with a configured
            // prefix, [#Freshworks-1234]. Freshdesk looks for it in the
            // subject only, and so do we: "[#2]" in a body is as likely a
            // footnote as a ticket.
            (
                "freshdesk".to_owned(),
                Regex::new(r"\[#(?:[A-Za-z][A-Za-z0-9_]*-)?(\d{1,12})\]")?,
                Scope::Subject,
            ),
            // Zammad's default ticket hook, e.g. [Ticket#31001].
            (
                "zammad".to_owned(),
                Regex::new(r"(?i)\[Ticket#(\d{1,20})\]")?,
                Scope::SubjectAndBody,
            ),
        ];
        for pattern in custom {
            text_patterns.push((
                "custom".to_owned(),
                Regex::new(pattern)?,
                Scope::SubjectAndBody,
            ));
        }
        Ok(TicketPatterns {
            text_patterns,
            // Zendesk Message-IDs carry the encoded ID without its dash:
            // <L7VKGOM25K_5ffc…_sprut@zendesk.com> or <L7VKGOM25K@zendesk.com>.
            zendesk_message_id: Regex::new(r"(?i)^([A-Z0-9]{10})(?:_[0-9a-z_]*)?@zendesk\.com$")?,
        })
    }

    fn tokens_in_text(&self, text: &str, scope: Scope, tokens: &mut Vec<String>) {
        for (prefix, pattern, _) in self
            .text_patterns
            .iter()
            .filter(|(_, _, searched)| scope == Scope::Subject || *searched == scope)
        {
            for captures in pattern.captures_iter(text) {
                let value: String = if captures.len() <= 1 {
                    captures
                        .get(0)
                        .map_or("", |whole| whole.as_str())
                        .to_owned()
                } else {
                    captures
                        .iter()
                        .skip(1)
                        .flatten()
                        .map(|group| group.as_str())
                        .collect()
                };
                if MAX_TOKENS <= tokens.len() {
                    return;
                }
                let token = format!("{prefix}:{}", value.to_ascii_uppercase());
                if !tokens.contains(&token) {
                    tokens.push(token);
                }
            }
        }
    }
}

/// Where a ticket-token pattern is looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Subject,
    SubjectAndBody,
}

/// Referenced Message-IDs kept per message: the first few and the newest.
const MAX_REFERENCED_IDS: usize = 100;
const FIRST_REFERENCED_IDS: usize = 10;

/// Ticket tokens kept per message (a real one names a ticket or two).
const MAX_TOKENS: usize = 32;

/// Bodies are searched for tokens only this far: tokens sit in the quoted
/// text near the top, and the walk must stay cheap.
const BODY_TOKEN_WINDOW: usize = 256 * 1024;

/// HTML bodies up to this size are reduced to text by mail-parser, whole;
/// a larger one is read by [`large_html_text`] only until its text fills
/// [`BODY_TOKEN_WINDOW`] (mail-parser's `body_text` would copy all of it),
/// however much markup (a pasted image or an embedded font as a `data:`
/// URI) comes before the text.
const WHOLE_HTML_LIMIT: usize = 1024 * 1024;

/// Extracts the thread keys of a message.
pub fn keys(
    message: &Message<'_>,
    relay: Option<&RelayMatch>,
    patterns: &TicketPatterns,
) -> ThreadKeys {
    let own_id = message.message_id().map(|id| id.trim().to_owned());
    let mut referenced_ids = Vec::new();
    let mut seen_ids = std::collections::HashSet::new();
    for value in [message.in_reply_to(), message.references()] {
        let ids: Vec<&str> = match value {
            HeaderValue::Text(id) => vec![id.as_ref()],
            HeaderValue::TextList(list) => list.iter().map(|id| id.as_ref()).collect(),
            _ => Vec::new(),
        };
        for id in ids {
            let id = id.trim();
            if !id.is_empty() && seen_ids.insert(id) {
                referenced_ids.push(id.to_owned());
            }
        }
    }
    // NOTE: Each ID costs a lookup and a row in the log: a hostile header
    // of a million IDs keeps its first (In-Reply-To and the thread's root)
    // and its newest, which are the ones a reply's thread is found by.
    if MAX_REFERENCED_IDS < referenced_ids.len() {
        let newest = referenced_ids.len() - (MAX_REFERENCED_IDS - FIRST_REFERENCED_IDS);
        referenced_ids.drain(FIRST_REFERENCED_IDS..newest);
    }
    let subject = message.subject().map(|subject| subject.trim().to_owned());
    let mut tokens = Vec::new();
    if let Some(subject) = &subject {
        patterns.tokens_in_text(subject, Scope::Subject, &mut tokens);
    }
    let body: Option<Cow<'_, str>> = message.text_part(0).and_then(|part| match &part.body {
        PartType::Text(text) => Some(Cow::Borrowed(text.as_ref())),
        PartType::Html(html) => Some(Cow::Owned(html_token_text(html))),
        _ => None,
    });
    if let Some(body) = body {
        let end = floor_char_boundary(&body, BODY_TOKEN_WINDOW);
        patterns.tokens_in_text(&body[..end], Scope::SubjectAndBody, &mut tokens);
    }
    for id in &referenced_ids {
        if let Some(captures) = patterns.zendesk_message_id.captures(id)
            && let Some(encoded) = captures.get(1)
        {
            let token = format!("zendesk:{}", encoded.as_str().to_ascii_uppercase());
            if tokens.len() < MAX_TOKENS && !tokens.contains(&token) {
                tokens.push(token);
            }
        }
    }
    let mut addresses = Vec::new();
    match relay {
        Some(relay) => {
            addresses.push((relay.alias.clone(), "alias"));
            if !relay.reply_token.eq_ignore_ascii_case(&relay.alias) {
                addresses.push((relay.reply_token.clone(), "token"));
            }
        }
        None => {
            // NOTE: Firefox Relay's shared reply address stands for every
            // user at once: as a correspondent it would merge them all.
            if let Some(from) = crate::mail::from_address(message).filter(|from| {
                !from.eq_ignore_ascii_case(crate::classify::relay::FIREFOX_SHARED_REPLY_TO)
            }) {
                addresses.push((from, "address"));
            }
        }
    }
    ThreadKeys {
        own_id,
        referenced_ids,
        tokens,
        subject_key: subject.as_deref().map(normalize_subject),
        subject,
        relay: relay.map(|relay| relay.name.clone()),
        addresses,
        repair_blocked_by: dkim_covering_threading(message),
    }
}

/// The text of an HTML body to look for tokens in.
fn html_token_text(html: &str) -> String {
    if html.len() <= WHOLE_HTML_LIMIT {
        html_to_text(html)
    } else {
        large_html_text(html, BODY_TOKEN_WINDOW)
    }
}

/// The first `max` bytes of a large HTML body's text, read in one pass
/// that copies only text: tags and comments are left out, and so is the
/// content of `<head>`, `<style>`, `<script>` and `<template>`, as
/// mail-parser leaves them out. A block tag ends a line; an inline one
/// joins its neighbours (`[Ticket#<b>31001</b>]` stays one token).
/// Character references stay as written.
fn large_html_text(html: &str, max: usize) -> String {
    const SKIPPED: &[&str] = &["head", "style", "script", "template"];
    const BLOCK: &[&str] = &[
        "br",
        "p",
        "div",
        "tr",
        "td",
        "th",
        "li",
        "table",
        "blockquote",
        "pre",
        "hr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
    ];
    let bytes = html.as_bytes();
    let mut text = String::new();
    let push = |text: &mut String, run: &str| {
        let room = max.saturating_sub(text.len());
        text.push_str(&run[..floor_char_boundary(run, room)]);
    };
    let mut at = 0;
    while at < bytes.len() && text.len() < max {
        let Some(open) = memchr::memchr(b'<', &bytes[at..]).map(|i| at + i) else {
            push(&mut text, &html[at..]);
            break;
        };
        push(&mut text, &html[at..open]);
        if bytes[open..].starts_with(b"<!--") {
            at = memchr::memmem::find(&bytes[open + 4..], b"-->")
                .map_or(bytes.len(), |i| open + 4 + i + 3);
            continue;
        }
        let Some(end) = memchr::memchr(b'>', &bytes[open..]).map(|i| open + i + 1) else {
            break;
        };
        let tag = &html[open + 1..end - 1];
        let closing = tag.starts_with('/');
        let name = tag
            .trim_start_matches('/')
            .split(|c: char| !c.is_ascii_alphanumeric())
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        at = end;
        if !closing && !tag.ends_with('/') && SKIPPED.contains(&name.as_str()) {
            // Past the matching end tag (`</style ...>`), in any case.
            let mut search = at;
            at = bytes.len();
            while let Some(lt) = memchr::memchr(b'<', &bytes[search..]).map(|i| search + i) {
                let after = lt + 2 + name.len();
                if bytes.get(lt + 1) == Some(&b'/')
                    && bytes
                        .get(lt + 2..after)
                        .is_some_and(|candidate| candidate.eq_ignore_ascii_case(name.as_bytes()))
                {
                    at = memchr::memchr(b'>', &bytes[after..])
                        .map_or(bytes.len(), |i| after + i + 1);
                    break;
                }
                search = lt + 1;
            }
        } else if BLOCK.contains(&name.as_str()) {
            push(&mut text, "\n");
        }
    }
    text
}

/// Lowercases and strips reply/forward prefixes in the languages mail
/// clients use (`Re:`, `Fwd:`, `AW:`, `SV:`, `RE[2]:`, `Antw:` ...), so a
/// reply compares equal to the message it answers.
pub fn normalize_subject(subject: &str) -> String {
    const PREFIXES: &[&str] = &[
        "re", "fw", "fwd", "aw", "wg", "sv", "vs", "antw", "antwort", "rif", "r", "tr", "enc",
        "res", "odp", "ynt", "ref", "rv", "vb", "vl", "vá", "atb", "bls", "trs", "fs", "答复",
        "回复", "转发",
    ];
    let mut rest = subject.trim();
    while let Some(colon) = rest.find([':', '：']) {
        let head = rest[..colon].trim();
        // Drop a counter such as RE[2] or Re(3).
        let word = head
            .split(['[', '('])
            .next()
            .unwrap_or_default()
            .trim()
            .to_lowercase();
        if word.is_empty() || !PREFIXES.contains(&word.as_str()) {
            break;
        }
        let colon_len = rest[colon..].chars().next().map_or(1, char::len_utf8);
        rest = rest[colon + colon_len..].trim_start();
    }
    rest.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Names the DKIM signature whose `h=` list covers In-Reply-To or
/// References. Signers may list absent headers on purpose (RFC 6376 §5.4
/// "oversigning"); adding such a header later breaks the signature.
pub fn dkim_covering_threading(message: &Message<'_>) -> Option<String> {
    for (name, value) in message.headers_raw() {
        if !name.eq_ignore_ascii_case("DKIM-Signature") {
            continue;
        }
        let mut domain = "unknown";
        let mut covered = None;
        for tag in value.split(';') {
            let Some((tag_name, tag_value)) = tag.split_once('=') else {
                continue;
            };
            match tag_name.trim() {
                "d" => domain = tag_value.trim(),
                "h" => {
                    covered = tag_value
                        .split(':')
                        .map(|header| {
                            header
                                .split_whitespace()
                                .collect::<String>()
                                .to_ascii_lowercase()
                        })
                        .find(|header| header == "in-reply-to" || header == "references");
                }
                _ => (),
            }
        }
        if let Some(header) = covered {
            return Some(format!(
                "the DKIM signature of {domain} covers {header} (h=)"
            ));
        }
    }
    None
}

/// The header lines a repair adds: In-Reply-To the latest earlier message,
/// References all of them (oldest first). `ids` are without brackets.
pub fn repair_lines(ids: &[String]) -> Option<String> {
    let last = ids.last()?;
    let references: Vec<String> = ids.iter().map(|id| format!("<{id}>")).collect();
    Some(format!(
        "In-Reply-To: <{last}>\r\nReferences: {}\r\n",
        references.join("\r\n ")
    ))
}

/// The largest index ≤ `index` on a char boundary of `text`.
fn floor_char_boundary(text: &str, index: usize) -> usize {
    if text.len() <= index {
        return text.len();
    }
    let mut end = index;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns() -> TicketPatterns {
        TicketPatterns::new(&[r"\[CASE-(\d+)\]".to_owned()]).expect("patterns compile")
    }

    fn keys_of(raw: &str) -> ThreadKeys {
        let raw = raw.replace('\n', "\r\n");
        let message = crate::mail::parse(raw.as_bytes()).expect("parses");
        let relay = crate::classify::relay::detect(&message, &[]);
        keys(&message, relay.as_ref(), &patterns())
    }

    #[test]
    fn hostile_references_and_tokens_are_bounded() {
        let ids: String = (0..200_000).map(|n| format!(" <{n}@x.example>")).collect();
        let body: String = (0..5_000).map(|n| format!("[CASE-{n}] ")).collect();
        let raw = format!(
            "From: a@b.example\nSubject: [CASE-7] many\nIn-Reply-To: <parent@x.example>\nReferences:{ids}\n\n{body}\n"
        );
        let keys = keys_of(&raw);
        assert_eq!(keys.referenced_ids.len(), MAX_REFERENCED_IDS);
        assert_eq!(keys.referenced_ids[0], "parent@x.example");
        assert_eq!(keys.referenced_ids[1], "0@x.example", "the thread's root");
        assert_eq!(
            keys.referenced_ids.last().map(String::as_str),
            Some("199999@x.example"),
            "the newest"
        );
        assert_eq!(keys.tokens.len(), MAX_TOKENS);
        assert_eq!(keys.tokens[0], "custom:7");
    }

    #[test]
    fn the_shared_firefox_reply_address_is_nobody() {
        let shared =
            keys_of("From: \"x [via Relay]\" <replies@relay.firefox.com>\nSubject: s\n\nbody\n");
        assert!(shared.addresses.is_empty(), "{:?}", shared.addresses);
        let plain = keys_of("From: Jane <jane@example.org>\nSubject: s\n\nbody\n");
        assert_eq!(
            plain.addresses,
            vec![("jane@example.org".to_owned(), "address")]
        );
    }

    #[test]
    fn subjects_normalise_across_languages() {
        for subject in [
            "Printer offline",
            "Re: Printer offline",
            "RE[2]: Fwd: printer  offline",
            "AW: WG: Printer offline",
            "SV: Re(3): Printer offline",
            "  re : Printer Offline ",
        ] {
            assert_eq!(normalize_subject(subject), "printer offline", "{subject}");
        }
        assert_eq!(
            normalize_subject("Regarding: invoices"),
            "regarding: invoices"
        );
        assert_eq!(normalize_subject("Re: [#12] X"), "[#12] x");
    }

    #[test]
    fn tokens_from_subject_body_and_zendesk_ids() {
        let keys = keys_of(
            "From: a@b.test\nSubject: Re: [#4411] Printer [Ticket#31001]\nReferences: <L7VKGOM25K_5ffc9f6678dde_503f05c010585f_sprut@zendesk.com>\n\n> Your request [1G7EOR-0Q2J] was updated. See [CASE-77] and footnote [#2].\n",
        );
        assert_eq!(
            keys.tokens,
            [
                "freshdesk:4411",
                "zammad:31001",
                "zendesk:1G7EOR0Q2J",
                "custom:77",
                "zendesk:L7VKGOM25K"
            ]
        );
        assert_eq!(keys.referenced_ids.len(), 1);
    }

    #[test]
    fn tokens_in_an_html_only_body_are_found_within_its_window() {
        let html = |filler: usize| {
            format!(
                "From: a@b.test\nSubject: Printer\nContent-Type: text/html\n\n<html><body><p>{}</p><blockquote>Your request <b>[Ticket#31001]</b> was updated</blockquote></body></html>\n",
                "x".repeat(filler)
            )
        };
        assert_eq!(keys_of(&html(10)).tokens, ["zammad:31001"]);
        // Megabytes of markup before the text (a pasted screenshot, an
        // embedded font) do not push the token out of reach, and what a
        // reader does not see is not read as text.
        let large = |markup: &str| {
            format!(
                "From: a@b.test\nSubject: Printer\nContent-Type: text/html\n\n<html><head><title>x</title></head><body>{markup}<!-- {} --><p>See:</p><img src=\"data:image/png;base64,{}\"><blockquote>[Ticket#<b>31001</b>]</blockquote></body></html>\n",
                "c".repeat(WHOLE_HTML_LIMIT),
                "iVBORw0K".repeat(WHOLE_HTML_LIMIT / 8)
            )
        };
        for markup in [
            String::new(),
            format!(
                "<STYLE>@font-face{{src:url(data:font/woff2;base64,{})}}</Style >",
                "A".repeat(WHOLE_HTML_LIMIT + 300_000)
            ),
            format!("<script>var a = '<p>{}';</script>", "b".repeat(300_000)),
            // Self-closing: nothing to skip.
            "<script src=\"x.js\"/>".to_owned(),
        ] {
            assert_eq!(keys_of(&large(&markup)).tokens, ["zammad:31001"]);
        }
        let text = large_html_text(
            &format!("<p>{}</p>", "word ".repeat(WHOLE_HTML_LIMIT)),
            BODY_TOKEN_WINDOW,
        );
        assert_eq!(text.len(), BODY_TOKEN_WINDOW);
        // Past the text window: not searched, as for a text body.
        assert_eq!(
            keys_of(&html(BODY_TOKEN_WINDOW)).tokens,
            Vec::<String>::new()
        );
    }

    #[test]
    fn freshdesk_tokens_take_a_prefix_and_come_from_the_subject_only() {
        let keys = keys_of("From: a@b.test\nSubject: Re: Printer [#Freshworks-1234]\n\nx\n");
        assert_eq!(keys.tokens, ["freshdesk:1234"]);
        let keys =
            keys_of("From: a@b.test\nSubject: Printer\n\nAs noted [#1234] and [Ticket#9].\n");
        assert_eq!(keys.tokens, ["zammad:9"]);
    }

    #[test]
    fn relay_addresses_name_the_correspondent() {
        let keys = keys_of(
            "From: jane.x@simplelogin.com\nReply-To: ra+token@simplelogin.co\nSubject: Hi\n\nx\n",
        );
        assert_eq!(keys.relay.as_deref(), Some("simplelogin"));
        assert_eq!(
            keys.addresses,
            [
                ("jane.x@simplelogin.com".to_owned(), "alias"),
                ("ra+token@simplelogin.co".to_owned(), "token")
            ]
        );
        let plain = keys_of("From: Ann <ann@example.org>\nSubject: Hi\n\nx\n");
        assert_eq!(plain.addresses, [("ann@example.org".to_owned(), "address")]);
    }

    #[test]
    fn dkim_h_list_blocks_repair() {
        let signed = keys_of(
            "DKIM-Signature: v=1; a=rsa-sha256; d=icloud.com; s=1a1hai;\n h=From:To:Subject:Message-Id:Date:In-Reply-To:x-icloud-hme; bh=x; b=y\nFrom: x@privaterelay.appleid.com\n\nx\n",
        );
        assert_eq!(
            signed.repair_blocked_by.as_deref(),
            Some("the DKIM signature of icloud.com covers in-reply-to (h=)")
        );
        let other = keys_of(
            "DKIM-Signature: v=1; d=sl.test; h=From:To:Subject; b=y\nFrom: x@y.test\n\nx\n",
        );
        assert_eq!(other.repair_blocked_by, None);
    }

    #[test]
    fn repair_lines_name_earlier_messages() {
        assert_eq!(repair_lines(&[]), None);
        assert_eq!(
            repair_lines(&["a@x".to_owned(), "b@x".to_owned()]).as_deref(),
            Some("In-Reply-To: <b@x>\r\nReferences: <a@x>\r\n <b@x>\r\n")
        );
    }
}
