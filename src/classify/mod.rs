//! The decision for each message: forward, hold or skip, with a reason.
//!
//! Pure: raw bytes and [`Rules`] in, a [`Classification`] out. No I/O, no
//! async, no SQL, and no panic on any input. The order of checks:
//!
//! 1. too large → hold `too-large` (the worker fetches only its header block);
//! 2. no header block → hold `unparseable`;
//! 3. loop guard → skip (or hold, per config): own redirect, mail from the
//!    helpdesk, bounces, auto-replies;
//! 4. protected content anywhere in the MIME tree → hold with the most
//!    specific reason (encryption over portals over opaque signatures over
//!    password-protected attachments);
//! 5. otherwise forward. Signed mail is never held for being signed.
//!
//! Relay recognition runs alongside and never changes the decision.
//! Submodules: `scan` walks the tree, `sniff` reads bytes, `relay` and
//! `loops` read headers.

mod loops;
mod pdf;
pub mod relay;
mod scan;
mod sniff;
mod text;

pub use relay::RelayMatch;

/// The detail of a 7z held because its packed file list hides whether it
/// is encrypted; the auto-reply words it apart from a known password.
pub const SEVENZIP_UNSEEN: &str = "a 7z attachment keeps its file list packed, so whether it is password-protected cannot be seen; held to be safe";

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

impl Action {
    /// `forward`, `hold` or `skip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Forward => "forward",
            Action::Hold => "hold",
            Action::Skip => "skip",
        }
    }
}

/// Why a message is held or skipped; `as_str` is the machine reason stored
/// in the log and printed by `inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    SmimeEnveloped,
    SmimeOpaqueSigned,
    PgpEncrypted,
    Portal,
    PasswordAttachment,
    Unparseable,
    TooLarge,
    RateLimited,
    OwnRedirect,
    FromHelpdesk,
    Bounce,
    AutoReply,
    Duplicate,
    DuplicateMessageId,
}

impl Reason {
    /// Every reason, for reading one back from the log by its name.
    const ALL: [Reason; 14] = [
        Reason::SmimeEnveloped,
        Reason::SmimeOpaqueSigned,
        Reason::PgpEncrypted,
        Reason::Portal,
        Reason::PasswordAttachment,
        Reason::Unparseable,
        Reason::TooLarge,
        Reason::RateLimited,
        Reason::OwnRedirect,
        Reason::FromHelpdesk,
        Reason::Bounce,
        Reason::AutoReply,
        Reason::Duplicate,
        Reason::DuplicateMessageId,
    ];

    /// The reason with this machine name ([`Reason::as_str`]).
    pub fn parse(name: &str) -> Option<Reason> {
        Reason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == name)
    }

    /// A loop finding (mail that is itself automatic, or deskbridge's own
    /// come back) or the rate limit's hold: answering such mail is how two
    /// auto-responders loop (RFC 3834 §2), and the rate limit already
    /// dealt with it.
    pub fn is_loop_or_limit(self) -> bool {
        matches!(
            self,
            Reason::RateLimited
                | Reason::OwnRedirect
                | Reason::FromHelpdesk
                | Reason::Bounce
                | Reason::AutoReply
        )
    }

    /// The stable machine name of the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SmimeEnveloped => "smime-enveloped",
            Reason::SmimeOpaqueSigned => "smime-opaque-signed",
            Reason::PgpEncrypted => "pgp-encrypted",
            Reason::Portal => "portal",
            Reason::PasswordAttachment => "password-attachment",
            Reason::Unparseable => "unparseable",
            Reason::TooLarge => "too-large",
            Reason::RateLimited => "rate-limited",
            Reason::OwnRedirect => "own-redirect",
            Reason::FromHelpdesk => "from-helpdesk",
            Reason::Bounce => "bounce",
            Reason::AutoReply => "auto-reply",
            Reason::Duplicate => "duplicate",
            Reason::DuplicateMessageId => "duplicate-message-id",
        }
    }
}

/// What cryptography or protection the message carries, whatever the
/// decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoClass {
    None,
    SmimeEnveloped,
    SmimeSigned,
    SmimeOpaqueSigned,
    PgpEncrypted,
    PgpSigned,
    Portal,
    PasswordAttachment,
    Unparseable,
}

impl CryptoClass {
    /// The stable name printed by `inspect` and stored in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            CryptoClass::None => "none",
            CryptoClass::SmimeEnveloped => "smime-enveloped",
            CryptoClass::SmimeSigned => "smime-signed",
            CryptoClass::SmimeOpaqueSigned => "smime-opaque-signed",
            CryptoClass::PgpEncrypted => "pgp-encrypted",
            CryptoClass::PgpSigned => "pgp-signed",
            CryptoClass::Portal => "portal",
            CryptoClass::PasswordAttachment => "password-attachment",
            CryptoClass::Unparseable => "unparseable",
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

    /// A hold with a reason and a sentence.
    pub fn hold(reason: Reason, detail: impl Into<String>) -> Decision {
        Decision {
            action: Action::Hold,
            reason: Some(reason),
            detail: detail.into(),
        }
    }

    /// A skip with a reason and a sentence.
    pub fn skip(reason: Reason, detail: impl Into<String>) -> Decision {
        Decision {
            action: Action::Skip,
            reason: Some(reason),
            detail: detail.into(),
        }
    }
}

/// Everything the classifier says about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub decision: Decision,
    pub class: CryptoClass,
    pub relay: Option<RelayMatch>,
}

/// What loop-guard findings turn into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoopAction {
    /// Not forwarded, needs nobody.
    #[default]
    Skip,
    /// Kept for a person to look at.
    Hold,
}

/// What the classifier needs to know about this installation. The default
/// is what `deskbridge inspect` uses offline.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// The domain of deskbridge's own Resent-Message-IDs (the envelope
    /// sender's domain). `None` matches deskbridge's IDs on any domain.
    pub own_domain: Option<String>,
    /// Larger messages are held as `too-large`; `None` for no limit.
    pub max_message_bytes: Option<u64>,
    /// The helpdesk's own addresses: mail from them is a loop.
    pub helpdesk_addresses: Vec<String>,
    /// Further relay domains → relay names, from the config.
    pub extra_relays: Vec<(String, String)>,
    /// Whether loop findings are skipped or held.
    pub loop_action: LoopAction,
}

/// Why a message left unparsed (see [`crate::mail::too_many_part_delimiters`])
/// is held.
pub(crate) const TOO_MANY_PART_DELIMITERS: &str = "the message has more MIME part delimiters than can be parsed within its memory bound (tens of thousands), so it cannot be checked for encryption";

/// Classifies one message from its raw bytes.
pub fn classify(raw: &[u8], rules: &Rules) -> Classification {
    let parsed = crate::mail::parse_checked(raw);
    classify_parsed(parsed.as_ref().map_err(|why| *why), raw.len() as u64, rules)
}

/// What a loop finding becomes: skipped, or held when so configured.
fn loop_decision(reason: Reason, detail: String, action: LoopAction) -> Decision {
    match action {
        LoopAction::Skip => Decision::skip(reason, detail),
        LoopAction::Hold => Decision::hold(reason, detail),
    }
}

/// Classifies a message the caller already parsed (or why it could not);
/// `size` is its length in bytes.
pub fn classify_parsed(
    parsed: Result<&mail_parser::Message<'_>, crate::mail::Unparsed>,
    size: u64,
    rules: &Rules,
) -> Classification {
    if let Some(limit) = rules.max_message_bytes
        && limit < size
    {
        // NOTE: A bounce or auto-reply too large to forward is a loop
        // finding first: held as too-large, it would get the auto-reply
        // that RFC 3834 §2 forbids sending to automatic mail.
        if let Some(message) = parsed.ok().filter(|message| has_header_block(message))
            && let Some((reason, detail)) = loops::detect(message, rules)
        {
            return Classification {
                decision: loop_decision(reason, detail, rules.loop_action),
                class: CryptoClass::None,
                relay: relay::detect(message, &rules.extra_relays),
            };
        }
        return Classification {
            decision: Decision::hold(
                Reason::TooLarge,
                format!(
                    "the message is {} MiB, over the {} MiB limit (max_message_mb)",
                    size.div_ceil(1024 * 1024),
                    limit / (1024 * 1024)
                ),
            ),
            class: CryptoClass::None,
            // NOTE: The relay is read from the header, which is all a
            // message too large to fetch has: its reply address and its
            // correspondent (for rate limits and release) need it.
            relay: parsed
                .ok()
                .filter(|message| has_header_block(message))
                .and_then(|message| relay::detect(message, &rules.extra_relays)),
        };
    }
    let message = match parsed {
        Ok(message) if has_header_block(message) => message,
        Err(crate::mail::Unparsed::TooManyParts) => {
            return Classification {
                decision: Decision::hold(Reason::Unparseable, TOO_MANY_PART_DELIMITERS),
                class: CryptoClass::Unparseable,
                relay: None,
            };
        }
        _ => {
            return Classification {
                decision: Decision::hold(
                    Reason::Unparseable,
                    "the message has no readable header block, so it cannot be checked for encryption",
                ),
                class: CryptoClass::Unparseable,
                relay: None,
            };
        }
    };
    let relay = relay::detect(message, &rules.extra_relays);
    let scan = scan::scan(message);
    let class = match (&scan.protected, scan.signed) {
        (Some(finding), _) => finding.class,
        (None, Some(signed)) => signed,
        (None, None) => CryptoClass::None,
    };
    if let Some((reason, detail)) = loops::detect(message, rules) {
        return Classification {
            decision: loop_decision(reason, detail, rules.loop_action),
            class,
            relay,
        };
    }
    let decision = match scan.protected {
        Some(finding) => Decision::hold(finding.reason, finding.detail),
        None => Decision::forward(),
    };
    Classification {
        decision,
        class,
        relay,
    }
}

/// mail-parser accepts any bytes; a message needs at least one header
/// field it recognised (a line of prose or binary noise yields none).
fn has_header_block(message: &mail_parser::Message<'_>) -> bool {
    message
        .root_part()
        .headers
        .iter()
        .any(|header| !header.name().is_empty() && header.name().is_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            own_domain: Some("company.test".to_owned()),
            max_message_bytes: Some(1024 * 1024),
            helpdesk_addresses: vec!["intake@helpdesk.test".to_owned()],
            ..Rules::default()
        }
    }

    fn decide(raw: &str) -> Classification {
        let raw = raw.replace('\n', "\r\n");
        classify(raw.as_bytes(), &rules())
    }

    /// Held, for `reason`: never forwarded.
    fn assert_held(result: &Classification, reason: Reason) {
        assert_eq!(
            (result.decision.action, result.decision.reason),
            (Action::Hold, Some(reason)),
            "{}",
            result.decision.detail
        );
    }

    #[test]
    fn every_reason_reads_back_from_its_name() {
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(Reason::parse("no-such-reason"), None);
    }

    #[test]
    fn a_bounce_too_large_to_forward_is_still_a_bounce() {
        let headers = "Return-Path: <>\r\nFrom: MAILER-DAEMON@mx.example\r\nSubject: Undelivered Mail\r\n\r\n";
        let header_only = crate::mail::parse(headers.as_bytes());
        let result = classify_parsed(
            header_only.as_ref().ok_or(crate::mail::Unparsed::NoHeader),
            30 * 1024 * 1024,
            &rules(),
        );
        assert_eq!(result.decision.action, Action::Skip);
        assert_eq!(result.decision.reason, Some(Reason::Bounce));
        let ordinary = crate::mail::parse(b"From: a@b.test\r\nSubject: big\r\n\r\n");
        let result = classify_parsed(
            ordinary.as_ref().ok_or(crate::mail::Unparsed::NoHeader),
            30 * 1024 * 1024,
            &rules(),
        );
        assert_held(&result, Reason::TooLarge);
        assert_eq!(result.relay, None);
        // A relayed one keeps its relay: the header names it.
        let relayed = crate::mail::parse(
            b"From: \"Jane via SimpleLogin\" <jane.x1@simplelogin.com>\r\nSubject: big\r\n\r\n",
        );
        let result = classify_parsed(
            relayed.as_ref().ok_or(crate::mail::Unparsed::NoHeader),
            30 * 1024 * 1024,
            &rules(),
        );
        assert_held(&result, Reason::TooLarge);
        let relay = result.relay.expect("the relay is known from the header");
        assert_eq!(
            (relay.name.as_str(), relay.alias.as_str()),
            ("simplelogin", "jane.x1@simplelogin.com")
        );
    }

    #[test]
    fn a_message_of_countless_tiny_parts_is_held_unparsed() {
        let head = "From: a@b.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n";
        let many = format!("{head}{}--b--\r\n", "--b\r\n\r\n".repeat(20_001));
        assert!(crate::mail::too_many_part_delimiters(many.as_bytes()));
        let result = decide(&many);
        assert_held(&result, Reason::Unparseable);
        assert_eq!(result.decision.detail, TOO_MANY_PART_DELIMITERS);
        // Delimiters in the middle of a line count too, as mail-parser
        // takes them; so does a boundary parameter in any case.
        let mid_line = format!(
            "{}--B--\r\n",
            head.replace("boundary=\"b\"", "BOUNDARY=B") + &"X--B\r\n\r\n".repeat(20_001)
        );
        assert!(crate::mail::too_many_part_delimiters(mid_line.as_bytes()));
        // SQL comments and table rules are no delimiters.
        let dump = format!(
            "{head}--b\r\nContent-Type: text/plain\r\n\r\n{}--b--\r\n",
            "-- comment\r\n---------+------\r\n".repeat(30_000)
        );
        assert!(!crate::mail::too_many_part_delimiters(dump.as_bytes()));
        // A long text with a dash line per 128 bytes or fewer is parsed.
        let log = format!(
            "From: a@b.test\r\nSubject: log\r\n\r\n{}",
            format!("--------\r\n{}\r\n", "x".repeat(120)).repeat(30_000)
        );
        assert!(!crate::mail::too_many_part_delimiters(log.as_bytes()));
        // A boundary longer than RFC 2046's 70 bytes counts by its first
        // 70, which match wherever the whole does.
        let long = "L".repeat(100);
        let long_parts = format!(
            "{}--{long}--\r\n",
            head.replace("\"b\"", &long) + &format!("--{long}\r\n\r\n").repeat(20_001)
        );
        assert!(crate::mail::too_many_part_delimiters(long_parts.as_bytes()));
        // 64 declared boundaries that each run to the end of a 4 MiB line
        // are cut, not copied whole (a gigabyte at 16 MiB), and judged.
        let hostile = format!(
            "From: a@b.test\r\n\r\n{}{}\r\n",
            "boundary=".repeat(64),
            "A".repeat(4 << 20)
        );
        assert!(!crate::mail::too_many_part_delimiters(hostile.as_bytes()));
    }

    #[test]
    fn plain_mail_is_forwarded() {
        let result = decide("From: a@b.test\nSubject: hi\n\nHello\n");
        assert_eq!(result.decision.action, Action::Forward);
        assert_eq!(result.decision.reason, None);
        assert_eq!(result.class, CryptoClass::None);
    }

    #[test]
    fn pgp_mime_is_held() {
        let result = decide(
            "From: a@b.test\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=X\n\n--X\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n--X\nContent-Type: application/octet-stream\n\n-----BEGIN PGP MESSAGE-----\nabc\n-----END PGP MESSAGE-----\n--X--\n",
        );
        assert_held(&result, Reason::PgpEncrypted);
        assert_eq!(result.class, CryptoClass::PgpEncrypted);
    }

    #[test]
    fn smime_parameter_value_case_is_ignored() {
        let result = decide(
            "From: a@b.test\nContent-Type: application/x-pkcs7-mime; smime-type=authEnveloped-data; name=smime.p7m\nContent-Transfer-Encoding: base64\n\nMIAGCSqGSIb3DQEHA6CA\n",
        );
        assert_held(&result, Reason::SmimeEnveloped);
    }

    #[test]
    fn p7m_without_smime_type_is_sniffed() {
        // DER of a signedData ContentInfo header: 30 80 06 09 2A864886F70D010702.
        let result = decide(
            "From: a@b.test\nContent-Type: application/octet-stream; name=smime.p7m\nContent-Transfer-Encoding: base64\n\nMIAGCSqGSIb3DQEHAqCA\n",
        );
        assert_held(&result, Reason::SmimeOpaqueSigned);
    }

    #[test]
    fn clear_signed_smime_is_forwarded_and_classed() {
        let result = decide(
            "From: a@b.test\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=S\n\n--S\nContent-Type: text/plain\n\nHello\n--S\nContent-Type: application/pkcs7-signature; name=smime.p7s\nContent-Transfer-Encoding: base64\n\nMIAGCSqGSIb3DQEHAqCA\n--S--\n",
        );
        assert_eq!(result.decision.action, Action::Forward);
        assert_eq!(result.class, CryptoClass::SmimeSigned);
    }

    #[test]
    fn encrypted_message_forwarded_as_attachment_is_found() {
        let result = decide(
            "From: a@b.test\nContent-Type: multipart/mixed; boundary=M\n\n--M\nContent-Type: text/plain\n\nSee attached.\n--M\nContent-Type: message/rfc822\n\nFrom: c@d.test\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\nContent-Transfer-Encoding: base64\n\nMIAGCSqGSIb3DQEHA6CA\n--M--\n",
        );
        assert_held(&result, Reason::SmimeEnveloped);
    }

    #[test]
    fn quoted_armor_is_held_but_a_mention_is_not() {
        let held = decide("From: a@b.test\n\nHi\n> -----BEGIN PGP MESSAGE-----\n> hQEM\n");
        assert_held(&held, Reason::PgpEncrypted);
        let mention = decide(
            "From: a@b.test\n\nWhy does my mail start with -----BEGIN PGP MESSAGE----- now?\n",
        );
        assert_eq!(mention.decision.action, Action::Forward);
    }

    #[test]
    fn loops_are_skipped_first() {
        let own = decide(
            "Resent-Message-ID: <deskbridge.7.abcdef@company.test>\nFrom: a@b.test\n\nHello\n",
        );
        assert_eq!(own.decision.action, Action::Skip);
        assert_eq!(own.decision.reason, Some(Reason::OwnRedirect));
        let foreign = decide(
            "Resent-Message-ID: <deskbridge.7.abcdef@other.test>\nFrom: a@b.test\n\nHello\n",
        );
        assert_eq!(foreign.decision.action, Action::Forward);
        let helpdesk = decide("From: Intake <INTAKE@helpdesk.test>\n\nTicket update\n");
        assert_eq!(helpdesk.decision.reason, Some(Reason::FromHelpdesk));
        let auto = decide("From: a@b.test\nAuto-Submitted: auto-replied\n\nAway\n");
        assert_eq!(auto.decision.reason, Some(Reason::AutoReply));
        let not_auto = decide("From: a@b.test\nAuto-Submitted: no\n\nHello\n");
        assert_eq!(not_auto.decision.action, Action::Forward);
        let bounce = decide(
            "From: MAILER-DAEMON@mx.test\nContent-Type: multipart/report; report-type=delivery-status; boundary=R\n\n--R\n\nfailed\n--R--\n",
        );
        assert_eq!(bounce.decision.reason, Some(Reason::Bounce));
    }

    #[test]
    fn loop_findings_can_be_held() {
        let rules = Rules {
            loop_action: LoopAction::Hold,
            ..rules()
        };
        let result = classify(
            b"From: a@b.test\r\nPrecedence: bulk\r\n\r\nNews\r\n",
            &rules,
        );
        assert_eq!(result.decision.action, Action::Hold);
        assert_eq!(result.decision.reason, Some(Reason::AutoReply));
    }

    #[test]
    fn portals_and_password_attachments() {
        let rpmsg = decide(
            "From: a@b.test\nContent-Type: multipart/mixed; boundary=M\n\n--M\nContent-Type: text/plain\n\nProtected\n--M\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename=\"message.rpmsg\"\n\nxx\n--M--\n",
        );
        assert_held(&rpmsg, Reason::Portal);
        let proton = decide("From: a@b.test\n\nOpen https://mail.proton.me/eo/abc123 to read.\n");
        assert_held(&proton, Reason::Portal);
        // A ZIP local header with flag bit 0 set, base64-encoded.
        let zip = decide(
            "From: a@b.test\nContent-Type: multipart/mixed; boundary=M\n\n--M\nContent-Type: text/plain\n\nAttached\n--M\nContent-Type: application/zip; name=a.zip\nContent-Transfer-Encoding: base64\n\nUEsDBBQAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n--M--\n",
        );
        assert_held(&zip, Reason::PasswordAttachment);
    }

    #[test]
    fn size_limit_and_garbage() {
        let big = vec![b'a'; 2 * 1024 * 1024];
        assert_eq!(
            classify(&big, &rules()).decision.reason,
            Some(Reason::TooLarge)
        );
        let garbage = classify(&[0xff, 0x00, 0x13, 0x37, 0x80], &Rules::default());
        assert_held(&garbage, Reason::Unparseable);
        assert_eq!(garbage.class, CryptoClass::Unparseable);
    }

    #[test]
    fn relays_are_recognised_without_changing_the_decision() {
        let result = decide("From: k3x9w2q7a@mozmail.com\nReply-To: k3x9w2q7a@mozmail.com\n\nHi\n");
        assert_eq!(result.decision.action, Action::Forward);
        let relay = result.relay.expect("relay");
        assert_eq!(
            (relay.name.as_str(), relay.alias.as_str()),
            ("firefox", "k3x9w2q7a@mozmail.com")
        );
    }

    #[test]
    fn hostile_nesting_is_bounded() {
        let mut raw = String::from("From: a@b.test\r\nSubject: deep\r\n");
        for level in 0..150 {
            raw.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n"
            ));
        }
        raw.push_str("Content-Type: text/plain\r\n\r\nbottom\r\n");
        let result = classify(raw.as_bytes(), &rules());
        assert_ne!(result.decision.action, Action::Skip);
        let mut nested = String::from("From: a@b.test\r\n");
        for _ in 0..100 {
            nested.push_str("Content-Type: message/rfc822\r\n\r\nFrom: a@b.test\r\n");
        }
        nested.push_str("\r\nbottom\r\n");
        let result = classify(nested.as_bytes(), &rules());
        assert_held(&result, Reason::Unparseable);
    }
}
