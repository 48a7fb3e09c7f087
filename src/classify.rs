//! The decision for each message: forward, hold or skip, with a reason.
//!
//! Pure: takes parsed mail and [`Rules`], returns a [`Decision`]. No I/O, no
//! async, no SQL, and no panic on any input. The whole MIME tree is walked,
//! nested `message/rfc822` parts included, so encrypted content wrapped in a
//! readable message is still found. Signed mail is never held for being
//! signed. The markers come from `encryption-markers.md` (E1–E7, P1).

use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

/// What the worker does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Redirect to the helpdesk.
    Forward,
    /// Keep it back for a person: the helpdesk cannot or must not read it.
    Hold,
    /// Deliberately not forwarded, and needs nobody (loops, duplicates).
    Skip,
}

/// Why a message is held or skipped; `as_str` is the machine reason stored
/// in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    SmimeEnveloped,
    SmimeOpaqueSigned,
    PgpEncrypted,
    Portal,
    Unparseable,
    TooLarge,
    OwnRedirect,
    Duplicate,
}

impl Reason {
    /// The stable machine name of the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SmimeEnveloped => "smime-enveloped",
            Reason::SmimeOpaqueSigned => "smime-opaque-signed",
            Reason::PgpEncrypted => "pgp-encrypted",
            Reason::Portal => "portal",
            Reason::Unparseable => "unparseable",
            Reason::TooLarge => "too-large",
            Reason::OwnRedirect => "own-redirect",
            Reason::Duplicate => "duplicate",
        }
    }
}

/// One message's decision, with a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// `None` exactly when the action is [`Action::Forward`].
    pub reason: Option<Reason>,
    pub detail: String,
}

impl Decision {
    fn forward() -> Decision {
        Decision {
            action: Action::Forward,
            reason: None,
            detail: "readable by the helpdesk".to_owned(),
        }
    }

    fn hold(reason: Reason, detail: impl Into<String>) -> Decision {
        Decision {
            action: Action::Hold,
            reason: Some(reason),
            detail: detail.into(),
        }
    }

    fn skip(reason: Reason, detail: impl Into<String>) -> Decision {
        Decision {
            action: Action::Skip,
            reason: Some(reason),
            detail: detail.into(),
        }
    }
}

/// What the classifier needs to know about this installation.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The domain of deskbridge's own Resent-Message-IDs (the envelope
    /// sender's domain): mail carrying one has been through deskbridge.
    pub own_domain: String,
    /// Larger messages are held as `too-large`.
    pub max_message_bytes: u64,
}

/// Nesting deeper than this is treated as hostile and held.
const MAX_DEPTH: usize = 64;

/// Decides for a message too large to be worth parsing.
pub fn too_large(size: u64, rules: &Rules) -> Option<Decision> {
    if size <= rules.max_message_bytes {
        return None;
    }
    Some(Decision::hold(
        Reason::TooLarge,
        format!(
            "the message is {} MiB, over the {} MiB limit (max_message_mb)",
            size.div_ceil(1024 * 1024),
            rules.max_message_bytes / (1024 * 1024)
        ),
    ))
}

/// Decides for bytes that mail-parser could not read as a message.
pub fn unparseable() -> Decision {
    Decision::hold(
        Reason::Unparseable,
        "the message has no readable header block, so it cannot be checked for encryption",
    )
}

/// Decides for a parsed message.
pub fn classify(message: &Message<'_>, resent_ids: &[String], rules: &Rules) -> Decision {
    let own_suffix = format!("@{}", rules.own_domain.to_ascii_lowercase());
    if resent_ids
        .iter()
        .any(|id| is_own_resent_id(id, &own_suffix))
    {
        return Decision::skip(
            Reason::OwnRedirect,
            "the message carries deskbridge's own Resent-Message-ID: it was already redirected once (mail loop)",
        );
    }
    match find_protection(message, 0) {
        Some(decision) => decision,
        None => Decision::forward(),
    }
}

fn is_own_resent_id(id: &str, own_suffix: &str) -> bool {
    let id = id
        .trim_matches(|c| c == '<' || c == '>')
        .to_ascii_lowercase();
    id.starts_with("deskbridge.") && id.ends_with(own_suffix)
}

/// Walks every part of `message`, nested messages included.
fn find_protection(message: &Message<'_>, depth: usize) -> Option<Decision> {
    if MAX_DEPTH < depth {
        return Some(Decision::hold(
            Reason::Unparseable,
            format!("the message nests more than {MAX_DEPTH} levels deep"),
        ));
    }
    for part in &message.parts {
        if let Some(decision) = inspect_part(part, depth) {
            return Some(decision);
        }
    }
    None
}

fn inspect_part(part: &MessagePart<'_>, depth: usize) -> Option<Decision> {
    let (ctype, subtype) = match part.content_type() {
        Some(content_type) => (
            content_type.ctype().to_ascii_lowercase(),
            content_type
                .subtype()
                .map(|sub| sub.to_ascii_lowercase())
                .unwrap_or_default(),
        ),
        None => ("text".to_owned(), "plain".to_owned()),
    };
    let names = part_names(part);
    match (ctype.as_str(), subtype.as_str()) {
        ("multipart", "encrypted") => {
            return Some(Decision::hold(
                Reason::PgpEncrypted,
                "the message is encrypted (multipart/encrypted, PGP/MIME); only the recipient's key can open it",
            ));
        }
        ("application", "pgp-encrypted") => {
            return Some(Decision::hold(
                Reason::PgpEncrypted,
                "the message holds a PGP/MIME encrypted part (application/pgp-encrypted)",
            ));
        }
        ("application", "pkcs7-mime" | "x-pkcs7-mime") => {
            return classify_pkcs7(
                part,
                part.content_type()
                    .and_then(|ct| ct.attribute("smime-type")),
            );
        }
        ("application", "x-microsoft-rpmsg-message") => {
            return Some(portal_rpmsg());
        }
        _ => (),
    }
    if names.iter().any(|name| name.ends_with(".p7m")) {
        return classify_pkcs7(part, None);
    }
    if names
        .iter()
        .any(|name| name == "message.rpmsg" || name == "message_v2.rpmsg")
    {
        return Some(portal_rpmsg());
    }
    match &part.body {
        PartType::Text(text) | PartType::Html(text) if has_pgp_armor(text) => {
            return Some(Decision::hold(
                Reason::PgpEncrypted,
                "a text part holds an inline PGP message (-----BEGIN PGP MESSAGE-----)",
            ));
        }
        PartType::Message(nested) => return find_protection(nested, depth + 1),
        PartType::Binary(bytes) if ctype == "message" => {
            // NOTE: mail-parser leaves deeply encoded message/rfc822 parts
            // unparsed (encryption-markers.md §2.6); parse them here.
            if let Some(nested) = crate::mail::parse(bytes) {
                return find_protection(&nested, depth + 1);
            }
        }
        _ => (),
    }
    None
}

/// Both the Content-Type `name` and the Content-Disposition `filename`,
/// lowercased: mail-parser's `attachment_name` returns only one of them.
fn part_names(part: &MessagePart<'_>) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(name) = part.content_type().and_then(|ct| ct.attribute("name")) {
        names.push(name.to_ascii_lowercase());
    }
    if let Some(name) = part
        .content_disposition()
        .and_then(|cd| cd.attribute("filename"))
    {
        names.push(name.to_ascii_lowercase());
    }
    names
}

fn classify_pkcs7(part: &MessagePart<'_>, smime_type: Option<&str>) -> Option<Decision> {
    let smime_type = smime_type.map(str::to_ascii_lowercase);
    let kind = match smime_type.as_deref() {
        Some("enveloped-data" | "authenveloped-data") => CmsKind::Enveloped,
        Some("signed-data") => CmsKind::Signed,
        Some("certs-only") => return None,
        _ => sniff_cms(part.contents()),
    };
    Some(match kind {
        CmsKind::Signed => Decision::hold(
            Reason::SmimeOpaqueSigned,
            "the message is S/MIME opaque-signed: its content is wrapped in a signature container the helpdesk cannot open",
        ),
        CmsKind::Enveloped => Decision::hold(
            Reason::SmimeEnveloped,
            "the message is S/MIME encrypted (enveloped-data); only the recipient's key can open it",
        ),
        CmsKind::Unknown => Decision::hold(
            Reason::SmimeEnveloped,
            "the message holds an S/MIME container of unknown kind; treated as encrypted",
        ),
    })
}

enum CmsKind {
    Enveloped,
    Signed,
    Unknown,
}

/// Looks at the DER content-type OID at the start of a CMS ContentInfo.
fn sniff_cms(der: &[u8]) -> CmsKind {
    const PKCS7: [u8; 8] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07];
    const PKCS9_SMIME_CT: [u8; 10] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01];
    let head = &der[..der.len().min(32)];
    let Some(oid_at) = head
        .windows(2)
        .position(|w| w == [0x06, 0x09] || w == [0x06, 0x0b])
    else {
        return CmsKind::Unknown;
    };
    let oid = &head[oid_at + 2..];
    if oid.starts_with(&PKCS7) {
        return match oid.get(8) {
            Some(0x03) => CmsKind::Enveloped,
            Some(0x02) => CmsKind::Signed,
            _ => CmsKind::Unknown,
        };
    }
    if oid.starts_with(&PKCS9_SMIME_CT) && oid.get(10) == Some(&0x17) {
        return CmsKind::Enveloped;
    }
    CmsKind::Unknown
}

fn portal_rpmsg() -> Decision {
    Decision::hold(
        Reason::Portal,
        "the message is protected by Microsoft Purview / rights management (message.rpmsg); it opens only in Outlook for the recipient",
    )
}

/// True when a line of `text`, trimmed of whitespace (NBSP included) and
/// quote markers, starts an armored PGP message. A sentence that merely
/// mentions the marker mid-line does not count.
fn has_pgp_armor(text: &str) -> bool {
    text.lines().any(|line| {
        let line =
            line.trim_start_matches(|c: char| c.is_whitespace() || c == '>' || c == '\u{a0}');
        line.starts_with("-----BEGIN PGP MESSAGE")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            own_domain: "company.test".to_owned(),
            max_message_bytes: 1024 * 1024,
        }
    }

    fn decide(raw: &str) -> Decision {
        let raw = raw.replace('\n', "\r\n");
        let message = crate::mail::parse(raw.as_bytes()).expect("parses");
        let resent = crate::mail::resent_message_ids(&message);
        classify(&message, &resent, &rules())
    }

    #[test]
    fn plain_mail_is_forwarded() {
        let decision = decide("From: a@b.test\nSubject: hi\n\nHello\n");
        assert_eq!(decision.action, Action::Forward);
        assert_eq!(decision.reason, None);
    }

    #[test]
    fn pgp_mime_is_held() {
        let decision = decide(
            "From: a@b.test\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=X\n\n--X\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n--X\nContent-Type: application/octet-stream\n\n-----BEGIN PGP MESSAGE-----\nabc\n-----END PGP MESSAGE-----\n--X--\n",
        );
        assert_eq!(decision.reason, Some(Reason::PgpEncrypted));
    }

    #[test]
    fn smime_parameter_value_case_is_ignored() {
        let decision = decide(
            "From: a@b.test\nContent-Type: application/x-pkcs7-mime; smime-type=authEnveloped-data; name=smime.p7m\nContent-Transfer-Encoding: base64\n\nMIAGCSqGSIb3DQEHA6CA\n",
        );
        assert_eq!(decision.reason, Some(Reason::SmimeEnveloped));
    }

    #[test]
    fn p7m_without_smime_type_is_sniffed() {
        // DER of a signedData ContentInfo header: 30 80 06 09 2A864886F70D010702.
        let decision = decide(
            "From: a@b.test\nContent-Type: application/octet-stream; name=smime.p7m\nContent-Transfer-Encoding: base64\n\nMIAGCSqGSIb3DQEHAqCA\n",
        );
        assert_eq!(decision.reason, Some(Reason::SmimeOpaqueSigned));
    }

    #[test]
    fn clear_signed_smime_is_forwarded() {
        let decision = decide(
            "From: a@b.test\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=S\n\n--S\nContent-Type: text/plain\n\nHello\n--S\nContent-Type: application/pkcs7-signature; name=smime.p7s\nContent-Transfer-Encoding: base64\n\nMIAGCSqGSIb3DQEHAqCA\n--S--\n",
        );
        assert_eq!(decision.action, Action::Forward);
    }

    #[test]
    fn encrypted_message_forwarded_as_attachment_is_found() {
        let decision = decide(
            "From: a@b.test\nContent-Type: multipart/mixed; boundary=M\n\n--M\nContent-Type: text/plain\n\nSee attached.\n--M\nContent-Type: message/rfc822\n\nFrom: c@d.test\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\nContent-Transfer-Encoding: base64\n\nMIAGCSqGSIb3DQEHA6CA\n--M--\n",
        );
        assert_eq!(decision.reason, Some(Reason::SmimeEnveloped));
    }

    #[test]
    fn quoted_armor_is_held_but_a_mention_is_not() {
        let held = decide("From: a@b.test\n\nHi\n> -----BEGIN PGP MESSAGE-----\n> hQEM\n");
        assert_eq!(held.reason, Some(Reason::PgpEncrypted));
        let mention = decide(
            "From: a@b.test\n\nWhy does my mail start with -----BEGIN PGP MESSAGE----- now?\n",
        );
        assert_eq!(mention.action, Action::Forward);
    }

    #[test]
    fn own_resent_message_id_is_skipped() {
        let decision = decide(
            "Resent-Message-ID: <deskbridge.7.abcdef@company.test>\nFrom: a@b.test\n\nHello\n",
        );
        assert_eq!(decision.action, Action::Skip);
        assert_eq!(decision.reason, Some(Reason::OwnRedirect));
        let foreign = decide(
            "Resent-Message-ID: <deskbridge.7.abcdef@other.test>\nFrom: a@b.test\n\nHello\n",
        );
        assert_eq!(foreign.action, Action::Forward);
    }

    #[test]
    fn rpmsg_is_a_portal() {
        let decision = decide(
            "From: a@b.test\nContent-Type: multipart/mixed; boundary=M\n\n--M\nContent-Type: text/plain\n\nProtected\n--M\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename=\"message.rpmsg\"\n\nxx\n--M--\n",
        );
        assert_eq!(decision.reason, Some(Reason::Portal));
    }

    #[test]
    fn size_limit_holds() {
        assert!(too_large(1024, &rules()).is_none());
        let decision = too_large(3 * 1024 * 1024, &rules()).expect("held");
        assert_eq!(decision.reason, Some(Reason::TooLarge));
    }
}
