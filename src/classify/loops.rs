//! The loop guard's header checks: deskbridge's own redirects coming back,
//! mail from the helpdesk itself, bounces and auto-replies.
//!
//! Relays strip Auto-Submitted and friends (`relays-and-helpdesks.md` §0.3),
//! so these checks are necessary but not sufficient; the worker adds a
//! per-correspondent rate limit on top.

use mail_parser::{Message, MimeHeaders};

use super::{Reason, Rules};

/// Why a message looks like part of a loop, with a sentence.
pub(super) fn detect(message: &Message<'_>, rules: &Rules) -> Option<(Reason, String)> {
    let resent_ids = crate::mail::resent_message_ids(message);
    if let Some(id) = resent_ids
        .iter()
        .find(|id| is_own_resent_id(id, rules.own_domain.as_deref()))
    {
        return Some((
            Reason::OwnRedirect,
            format!(
                "the message carries deskbridge's own Resent-Message-ID <{id}>: it was already redirected once (mail loop)"
            ),
        ));
    }
    if let Some(id) = message
        .message_id()
        .filter(|id| is_own_notice_id(id, rules.own_domain.as_deref()))
    {
        return Some((
            Reason::OwnRedirect,
            format!("the message is deskbridge's own held notice <{id}> come back (mail loop)"),
        ));
    }
    if let Some(from) = crate::mail::from_address(message) {
        let from_lower = from.to_ascii_lowercase();
        if rules
            .helpdesk_addresses
            .iter()
            .any(|address| address.eq_ignore_ascii_case(&from_lower))
        {
            return Some((
                Reason::FromHelpdesk,
                format!(
                    "the message comes from the helpdesk's own address {from}; sending it back would loop"
                ),
            ));
        }
        let local = from_lower.split('@').next().unwrap_or_default();
        if local == "mailer-daemon" || local == "postmaster" {
            return Some((
                Reason::Bounce,
                format!("the message is a delivery report from {from}"),
            ));
        }
    }
    let root_type = message.root_part().content_type();
    if let Some(content_type) = root_type
        && content_type.ctype().eq_ignore_ascii_case("multipart")
        && content_type
            .subtype()
            .is_some_and(|subtype| subtype.eq_ignore_ascii_case("report"))
    {
        let report_type = content_type.attribute("report-type").unwrap_or("unknown");
        return Some((
            Reason::Bounce,
            format!(
                "the message is an automatic report (multipart/report; report-type={report_type})"
            ),
        ));
    }
    if let Some(return_path) = header(message, "Return-Path")
        && return_path
            .trim_matches(|c: char| c.is_whitespace() || c == '<' || c == '>')
            .is_empty()
    {
        return Some((
            Reason::Bounce,
            "the message has a null sender (Return-Path: <>), as bounces do".to_owned(),
        ));
    }
    if let Some(value) = header(message, "Auto-Submitted") {
        let keyword = value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if !keyword.is_empty() && keyword != "no" {
            return Some((
                Reason::AutoReply,
                format!("the message is automatic (Auto-Submitted: {keyword}, RFC 3834)"),
            ));
        }
    }
    for name in ["X-Autoreply", "X-Autorespond", "X-Autoresponder"] {
        if header(message, name).is_some() {
            return Some((
                Reason::AutoReply,
                format!("the message is an auto-reply ({name})"),
            ));
        }
    }
    if let Some(value) = header(message, "Precedence") {
        let value = value.trim().to_ascii_lowercase();
        if matches!(value.as_str(), "auto_reply" | "bulk" | "junk") {
            return Some((
                Reason::AutoReply,
                format!("the message is automatic (Precedence: {value})"),
            ));
        }
    }
    None
}

/// `deskbridge.<row>.<hash>@<domain>`, the shape [`crate::trace`] writes.
/// Without a configured domain (offline `inspect`), any domain matches.
fn is_own_resent_id(id: &str, own_domain: Option<&str>) -> bool {
    own_id_shape(id, own_domain, "deskbridge", u8::is_ascii_hexdigit)
}

/// `deskbridge-notice.<row>.<time>@<domain>`, the Message-ID of a held
/// notice ([`crate::notice::held_notice`]).
fn is_own_notice_id(id: &str, own_domain: Option<&str>) -> bool {
    own_id_shape(id, own_domain, "deskbridge-notice", u8::is_ascii_digit)
}

/// Whether `id` (angle brackets or not) is `<prefix>.<row>.<tail>@<domain>`
/// with a decimal row, a tail of `tail_byte`s, and the own domain when one
/// is configured; letter case does not matter.
fn own_id_shape(
    id: &str,
    own_domain: Option<&str>,
    prefix: &str,
    tail_byte: fn(&u8) -> bool,
) -> bool {
    let id = id
        .trim_matches(|c| c == '<' || c == '>')
        .to_ascii_lowercase();
    let Some((local, domain)) = id.rsplit_once('@') else {
        return false;
    };
    let made_of = |part: Option<&str>, byte: fn(&u8) -> bool| {
        part.is_some_and(|part| !part.is_empty() && part.bytes().all(|b| byte(&b)))
    };
    let mut parts = local.split('.');
    let shape = parts.next() == Some(prefix)
        && made_of(parts.next(), u8::is_ascii_digit)
        && made_of(parts.next(), tail_byte)
        && parts.next().is_none();
    shape && own_domain.is_none_or(|own| own.eq_ignore_ascii_case(domain))
}

fn header<'a>(message: &'a Message<'_>, name: &'a str) -> Option<&'a str> {
    message.header_raw(name).map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_notice_id_shape() {
        assert!(is_own_notice_id(
            "deskbridge-notice.42.1764400000@company.test",
            Some("company.test")
        ));
        assert!(is_own_notice_id(
            "deskbridge-notice.42.1764400000@any.test",
            None
        ));
        assert!(!is_own_notice_id(
            "deskbridge-notice.42.1764400000@other.test",
            Some("company.test")
        ));
        assert!(!is_own_notice_id(
            "deskbridge-notice.x.1@company.test",
            None
        ));
        assert!(!is_own_notice_id("deskbridge-notice.1@company.test", None));
    }

    #[test]
    fn own_resent_id_shape() {
        assert!(is_own_resent_id(
            "deskbridge.7.0a1b@company.test",
            Some("company.test")
        ));
        assert!(is_own_resent_id("<deskbridge.7.0a1b@company.test>", None));
        assert!(!is_own_resent_id(
            "deskbridge.7.0a1b@other.test",
            Some("company.test")
        ));
        assert!(!is_own_resent_id("deskbridge.x.0a1b@company.test", None));
        assert!(!is_own_resent_id("notdeskbridge.7.0a1b@company.test", None));
    }
}
