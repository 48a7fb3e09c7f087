//! Walks a message's whole MIME tree looking for protected content.
//!
//! Visits every part of every level, nested `message/rfc822` included (and
//! re-parses nested messages mail-parser left as bytes), and reports the
//! strongest finding: encryption over portals over opaque signatures over
//! password-protected attachments (`encryption-markers.md` §1f). Signatures
//! on readable content are recorded but never held.

use std::collections::HashSet;

use mail_parser::{HeaderName, HeaderValue, Message, MessagePart, MimeHeaders, PartType};

use super::sniff::{self, CmsKind};
use super::text::{self, TextFindings};
use super::{CryptoClass, Reason};

/// Nested messages deeper than this are held as unparseable: no real
/// mail nests that far, and the walk must stay bounded.
const MAX_DEPTH: usize = 32;

/// Parts visited at most per message, across all levels.
const MAX_PARTS: usize = 10_000;

/// ZIP archives inside ZIP archives are opened this many levels deep.
const MAX_ARCHIVE_DEPTH: usize = 3;

/// What opening archive members may cost one message. A small archive can
/// inflate to gigabytes, list one member thousands of times, or hold
/// deflate streams that are slow without being large, and the message
/// must stay within its memory bound and be classified in bounded time. A
/// member beyond these is not checked (the archive is forwarded if nothing
/// else holds it):
/// - members read or tried, across all levels;
const MAX_MEMBERS: usize = 1000;
/// - bytes of member content read, stored or inflated;
const INSPECT_BUDGET: usize = 256 * 1024 * 1024;
/// - bytes one inflation may write, and bytes inflation may write in all
///   (failed attempts included). A member's bytes are dropped once it is
///   inspected, so the memory held at once is at most one member per
///   archive level ([`MAX_ARCHIVE_DEPTH`] x 16 MiB); the budget in all
///   bounds the time (inflating runs at hundreds of MB/s), and lets an
///   ordinary archive of a few hundred MB be checked whole.
const MEMBER_LIMIT: usize = 16 * 1024 * 1024;
const INFLATE_BUDGET: usize = 256 * 1024 * 1024;
/// - compressed bytes read in chunks that wrote little, in all (each
///   stream is given up after a few KiB of them).
const SLOW_INPUT_BUDGET: usize = 64 * 1024;

/// Archive members opened for a second look: what can carry encryption
/// of its own. Anything else (images, text, an Office file's XML) is
/// neither opened nor inflated.
const OPENED_MEMBERS: &[&str] = &[
    ".zip", ".pdf", ".7z", ".rar", ".doc", ".xls", ".ppt", ".docx", ".xlsx", ".pptx", ".docm",
    ".xlsm", ".pptm", ".p7m", ".pgp", ".gpg", ".asc", ".eml", ".rpmsg", ".odt", ".ods", ".odp",
    ".odg",
];

/// Where an OpenDocument file (`.odt`, `.ods`, ...: a ZIP) lists its
/// members, and how it marks one encrypted with a password: ODF encrypts
/// member data itself and leaves the ZIP encryption flag clear.
const ODF_MANIFEST: &[u8] = b"META-INF/manifest.xml";
const ODF_ENCRYPTION_DATA: &[u8] = b"encryption-data";

/// One protected thing found in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Finding {
    pub(super) reason: Reason,
    pub(super) class: CryptoClass,
    pub(super) detail: String,
}

/// Everything the walk learned.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// The strongest hold-worthy finding.
    pub(super) protected: Option<Finding>,
    /// `smime-signed` or `pgp-signed` when readable signed content was seen.
    pub(super) signed: Option<CryptoClass>,
    /// How many ZIP archives the bytes being inspected sit in.
    archive_depth: usize,
    /// What the whole message's walk has cost so far, archive members
    /// included: one count for every level.
    spent: Spent,
}

/// The costs bounded per message, counted across all levels.
#[derive(Debug, Clone, Copy, Default)]
struct Spent {
    parts_seen: usize,
    /// Archive members read or tried, bytes of them read, and what
    /// inflating them cost.
    members_opened: usize,
    inspected: usize,
    inflated: sniff::InflateCost,
}

impl Scan {
    fn offer(&mut self, reason: Reason, class: CryptoClass, detail: impl Into<String>) {
        let rank = |reason: Reason| match reason {
            Reason::Unparseable => 5,
            Reason::SmimeEnveloped | Reason::PgpEncrypted => 4,
            Reason::Portal => 3,
            Reason::SmimeOpaqueSigned => 2,
            Reason::PasswordAttachment => 1,
            _ => 0,
        };
        let better = self
            .protected
            .as_ref()
            .is_none_or(|current| rank(current.reason) < rank(reason));
        if better {
            self.protected = Some(Finding {
                reason,
                class,
                detail: detail.into(),
            });
        }
    }
}

/// Scans a parsed message.
pub(super) fn scan(message: &Message<'_>) -> Scan {
    let mut scan = Scan::default();
    walk(message, 0, &mut scan);
    scan
}

fn walk(message: &Message<'_>, depth: usize, scan: &mut Scan) {
    if MAX_DEPTH < depth {
        scan.offer(
            Reason::Unparseable,
            CryptoClass::Unparseable,
            format!("the message nests more than {MAX_DEPTH} messages deep, so it cannot be checked completely"),
        );
        return;
    }
    inspect_message_headers(message, scan);
    // NOTE: A `.p7s` or `.p7c` file is informational beside a body, but
    // when it is the only content, the text may be inside it
    // (encryption-markers.md E5).
    let sole_content = message
        .parts
        .iter()
        .filter(|part| !matches!(part.body, PartType::Multipart(_)))
        .count()
        == 1;
    for part in &message.parts {
        scan.spent.parts_seen += 1;
        if MAX_PARTS < scan.spent.parts_seen {
            scan.offer(
                Reason::Unparseable,
                CryptoClass::Unparseable,
                format!("the message has more than {MAX_PARTS} MIME parts, so it cannot be checked completely"),
            );
            return;
        }
        inspect_part(part, depth, sole_content, scan);
    }
}

fn inspect_message_headers(message: &Message<'_>, scan: &mut Scan) {
    if message.header_raw("Autocrypt-Setup-Message").is_some() {
        scan.offer(
            Reason::PgpEncrypted,
            CryptoClass::PgpEncrypted,
            "the message is an Autocrypt Setup Message: an encrypted copy of someone's secret key",
        );
    }
    if message
        .header_raw("Content-Class")
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("rpmsg.message"))
    {
        scan.offer(Reason::Portal, CryptoClass::Portal, RPMSG);
    }
}

const RPMSG: &str = "the message is protected by Microsoft Purview / rights management (message.rpmsg); it opens only in Outlook for its recipient";

fn inspect_part(part: &MessagePart<'_>, depth: usize, sole_content: bool, scan: &mut Scan) {
    let (ctype, subtype) = content_type(part);
    let names = part_names(part);
    match (ctype.as_str(), subtype.as_str()) {
        ("multipart", "encrypted") => scan.offer(
            Reason::PgpEncrypted,
            CryptoClass::PgpEncrypted,
            "the message is encrypted with OpenPGP (multipart/encrypted); only the recipient's key opens it",
        ),
        ("multipart", "signed") => {
            let protocol = part
                .content_type()
                .and_then(|ct| ct.attribute("protocol"))
                .unwrap_or_default()
                .to_ascii_lowercase();
            if protocol.contains("pkcs7") {
                scan.signed.get_or_insert(CryptoClass::SmimeSigned);
            } else if protocol.contains("pgp") {
                scan.signed.get_or_insert(CryptoClass::PgpSigned);
            }
        }
        ("application", "pgp-encrypted") => scan.offer(
            Reason::PgpEncrypted,
            CryptoClass::PgpEncrypted,
            "the message holds an OpenPGP encrypted part (application/pgp-encrypted)",
        ),
        ("application", "pkcs7-mime" | "x-pkcs7-mime") => inspect_labelled_pkcs7(part, scan),
        ("application", "pgp") => {
            let action = part
                .content_type()
                .and_then(|ct| ct.attribute("x-action"))
                .unwrap_or_default()
                .to_ascii_lowercase();
            if action.starts_with("encrypt") {
                scan.offer(
                    Reason::PgpEncrypted,
                    CryptoClass::PgpEncrypted,
                    "the message is OpenPGP encrypted (application/pgp; x-action=encrypt)",
                );
            } else {
                scan.signed.get_or_insert(CryptoClass::PgpSigned);
            }
        }
        ("application", "autocrypt-setup") => scan.offer(
            Reason::PgpEncrypted,
            CryptoClass::PgpEncrypted,
            "the message is an Autocrypt Setup Message: an encrypted copy of someone's secret key",
        ),
        ("application", "x-microsoft-rpmsg-message") => {
            scan.offer(Reason::Portal, CryptoClass::Portal, RPMSG)
        }
        ("application", "ms-tnef" | "vnd.ms-tnef") => inspect_tnef(part, scan),
        _ => (),
    }
    inspect_other_content_types(part, (&ctype, &subtype), scan);
    for name in &names {
        inspect_name(name, part, sole_content, scan);
    }
    if part.is_encoding_problem
        && part
            .content_transfer_encoding()
            .is_some_and(|encoding| encoding.trim().eq_ignore_ascii_case("base64"))
    {
        // NOTE: mail-parser keeps a part's base64 undecoded when decoding
        // fails (a stray character, an appended footer, a cut-off part) and
        // flags it; other readers decode past the damage, so check what
        // they would show.
        let decoded = sniff::lenient_base64(part.contents());
        inspect_text(&String::from_utf8_lossy(&decoded), scan);
        // NOTE: A damaged forwarded message is a message all the same: its
        // S/MIME or rpmsg parts are themselves base64, out of sight of the
        // text and byte checks until it is parsed.
        let is_message = ctype == "message" || names.iter().any(|name| name.ends_with(".eml"));
        if !is_message || !walk_message_bytes(&decoded, depth + 1, scan) || ctype != "message" {
            inspect_bytes(&decoded, scan);
        }
    }
    match &part.body {
        PartType::Text(text) => inspect_text(text, scan),
        PartType::Html(html) => report_text(text::read_html(html), scan),
        PartType::Message(nested) => walk(nested, depth + 1, scan),
        PartType::Binary(bytes) | PartType::InlineBinary(bytes) => {
            if ctype == "message" || names.iter().any(|name| name.ends_with(".eml")) {
                // NOTE: mail-parser leaves base64/QP-encoded message/rfc822
                // parts more than three levels deep as bytes
                // (encryption-markers.md §2.6); parse them here.
                // A `.eml` attachment sent as application/octet-stream is a
                // message all the same.
                // Named .eml, but it may be an archive all the same.
                if !walk_message_bytes(bytes, depth + 1, scan) || ctype != "message" {
                    inspect_bytes(bytes, scan);
                }
            } else {
                inspect_bytes(bytes, scan);
            }
        }
        PartType::Multipart(_) => (),
    }
}

/// [`inspect_pkcs7`] with the part's own `smime-type` parameter, if any.
fn inspect_labelled_pkcs7(part: &MessagePart<'_>, scan: &mut Scan) {
    let smime_type = part
        .content_type()
        .and_then(|ct| ct.attribute("smime-type"))
        .map(str::to_ascii_lowercase);
    inspect_pkcs7(part.contents(), smime_type.as_deref(), scan);
}

fn inspect_pkcs7(der: &[u8], smime_type: Option<&str>, scan: &mut Scan) {
    let kind = match smime_type {
        Some("enveloped-data" | "authenveloped-data") => CmsKind::Enveloped,
        Some("signed-data") => CmsKind::Signed,
        Some("compressed-data") => CmsKind::Compressed,
        // A certificate bundle (signedData without content) carries nothing
        // confidential (RFC 8551 §3.8), but the label is only a claim:
        // ciphertext under it is still ciphertext.
        Some("certs-only") => match sniff::cms_kind(der) {
            CmsKind::Enveloped => CmsKind::Enveloped,
            CmsKind::Signed if sniff::signed_data_has_content(der) == Some(true) => CmsKind::Signed,
            _ => return,
        },
        // NOTE: Unlabelled signedData without content is a certificate
        // bundle or a detached signature: nothing in it to read. When the
        // structure cannot be followed, it may hold content: fail closed.
        _ => match sniff::cms_kind(der) {
            CmsKind::Signed if sniff::signed_data_has_content(der) == Some(false) => return,
            kind => kind,
        },
    };
    match kind {
        CmsKind::Enveloped => scan.offer(
            Reason::SmimeEnveloped,
            CryptoClass::SmimeEnveloped,
            "the message is S/MIME encrypted (enveloped-data); only the recipient's key opens it",
        ),
        CmsKind::Signed => scan.offer(
            Reason::SmimeOpaqueSigned,
            CryptoClass::SmimeOpaqueSigned,
            "the message is S/MIME opaque-signed: its text is inside a signature container the helpdesk cannot open",
        ),
        CmsKind::Compressed => scan.offer(
            Reason::SmimeOpaqueSigned,
            CryptoClass::SmimeOpaqueSigned,
            "the message is S/MIME compressed-data: its text is inside a container the helpdesk cannot open",
        ),
        // NOTE: Fail closed: an S/MIME container we cannot identify may be
        // encrypted (Outlook sends .p7m without smime-type).
        CmsKind::Unknown => scan.offer(
            Reason::SmimeEnveloped,
            CryptoClass::SmimeEnveloped,
            format!(
                "the message holds an S/MIME container of unknown kind (smime-type={}); treated as encrypted",
                smime_type.unwrap_or("none")
            ),
        ),
    }
}

fn inspect_name(name: &str, part: &MessagePart<'_>, sole_content: bool, scan: &mut Scan) {
    let portal = |vendor: &str| {
        format!(
            "the message is a {vendor} secure-mail notice: the content sits on the vendor's portal, not in the mail"
        )
    };
    if name.ends_with(".p7m") {
        inspect_pkcs7(part.contents(), None, scan);
    } else if sole_content && (name.ends_with(".p7s") || name.ends_with(".p7c")) {
        inspect_labelled_pkcs7(part, scan);
    } else if name == "winmail.dat" {
        inspect_tnef(part, scan);
    } else if name.ends_with(".p7z") {
        scan.offer(
            Reason::SmimeOpaqueSigned,
            CryptoClass::SmimeOpaqueSigned,
            "the message holds S/MIME compressed data (.p7z) the helpdesk cannot open",
        );
    } else if name == "message.rpmsg" || name == "message_v2.rpmsg" {
        scan.offer(Reason::Portal, CryptoClass::Portal, RPMSG);
    } else if name == "securemessageatt.html" {
        scan.offer(
            Reason::Portal,
            CryptoClass::Portal,
            portal("Proofpoint Encryption"),
        );
    } else if (name.starts_with("securedoc_") && name.ends_with(".html"))
        || name == "securedoc.html"
    {
        scan.offer(
            Reason::Portal,
            CryptoClass::Portal,
            portal("Cisco Secure Email (Registered Envelope)"),
        );
    } else if name == "encrypted_message.htm" {
        scan.offer(
            Reason::Portal,
            CryptoClass::Portal,
            portal("Trend Micro Email Encryption"),
        );
    } else if name == "message_zdm.html" {
        scan.offer(
            Reason::Portal,
            CryptoClass::Portal,
            portal("Forcepoint Email Encryption"),
        );
    } else if name == "message.html"
        && String::from_utf8_lossy(part.contents())
            .to_ascii_lowercase()
            .contains("one-time passcode")
    {
        scan.offer(
            Reason::Portal,
            CryptoClass::Portal,
            portal("Microsoft 365 Message Encryption (legacy OME)"),
        );
    } else if name.ends_with(".tdf.html") || name.ends_with(".tdf") {
        scan.offer(Reason::Portal, CryptoClass::Portal, portal("Virtru"));
    } else if (name.ends_with(".pgp") || name.ends_with(".gpg"))
        && !sniff::openpgp_informational(part.contents())
    {
        scan.offer(
            Reason::PgpEncrypted,
            CryptoClass::PgpEncrypted,
            format!("the message has an OpenPGP encrypted attachment ({name})"),
        );
    } else if name.ends_with(".asc") && sniff::armor_bytes(part.contents()).message {
        scan.offer(
            Reason::PgpEncrypted,
            CryptoClass::PgpEncrypted,
            format!("the message has an OpenPGP message attachment ({name})"),
        );
    }
}

/// A part with two Content-Type headers: mail-parser obeys the last, but
/// another reader (the helpdesk's) may obey the first. When one of them
/// names encrypted content, the part is held as that.
fn inspect_other_content_types(part: &MessagePart<'_>, used: (&str, &str), scan: &mut Scan) {
    for header in &part.headers {
        if header.name != HeaderName::ContentType {
            continue;
        }
        let HeaderValue::ContentType(other) = &header.value else {
            continue;
        };
        let ctype = other.ctype().to_ascii_lowercase();
        let subtype = other.subtype().unwrap_or_default().to_ascii_lowercase();
        if (ctype.as_str(), subtype.as_str()) == used {
            continue;
        }
        let smime_type = other.attribute("smime-type").map(str::to_ascii_lowercase);
        match (ctype.as_str(), subtype.as_str()) {
            ("multipart", "encrypted") | ("application", "pgp-encrypted") => scan.offer(
                Reason::PgpEncrypted,
                CryptoClass::PgpEncrypted,
                format!("the message has a second Content-Type header, {ctype}/{subtype}: another reader may take it for OpenPGP encrypted"),
            ),
            ("application", "pkcs7-mime" | "x-pkcs7-mime")
                if smime_type.as_deref() != Some("certs-only") =>
            {
                scan.offer(
                    Reason::SmimeEnveloped,
                    CryptoClass::SmimeEnveloped,
                    format!("the message has a second Content-Type header, {ctype}/{subtype}: another reader may take it for S/MIME encrypted"),
                )
            }
            _ => (),
        }
    }
}

/// Outlook's TNEF wrapper (`winmail.dat`) can carry a protected message
/// (encryption-markers.md P16); ordinary rich text in it is forwarded.
fn inspect_tnef(part: &MessagePart<'_>, scan: &mut Scan) {
    if sniff::tnef_holds_rpmsg(part.contents()) {
        scan.offer(Reason::Portal, CryptoClass::Portal, RPMSG);
    }
}

fn inspect_text(text: &str, scan: &mut Scan) {
    report_text(text::read_text(text), scan);
}

fn report_text(findings: TextFindings, scan: &mut Scan) {
    if findings.armor.message {
        scan.offer(
            Reason::PgpEncrypted,
            CryptoClass::PgpEncrypted,
            "a text part holds an OpenPGP message block (-----BEGIN PGP MESSAGE-----)",
        );
    }
    if findings.armor.signed {
        scan.signed.get_or_insert(CryptoClass::PgpSigned);
    }
    if let Some(vendor) = findings.portal {
        scan.offer(
            Reason::Portal,
            CryptoClass::Portal,
            format!("the message is a {vendor} secure-mail notice: the content sits on the vendor's portal, not in the mail"),
        );
    }
}

fn inspect_bytes(bytes: &[u8], scan: &mut Scan) {
    let head = &bytes[..bytes.len().min(4096)];
    if sniff::armor_bytes(head).message {
        scan.offer(
            Reason::PgpEncrypted,
            CryptoClass::PgpEncrypted,
            "an attachment holds an OpenPGP message block (-----BEGIN PGP MESSAGE-----)",
        );
    }
    if sniff::is_zip(bytes) {
        // One read of the directory serves both questions.
        let entries = sniff::zip_entries(bytes);
        if sniff::zip_encrypted(bytes, entries.as_deref()) {
            scan.offer(
                Reason::PasswordAttachment,
                CryptoClass::PasswordAttachment,
                "a ZIP attachment is password-protected",
            );
        } else if let Some(entries) = entries {
            if odf_encrypted(bytes, &entries, scan) {
                scan.offer(
                    Reason::PasswordAttachment,
                    CryptoClass::PasswordAttachment,
                    "an OpenDocument attachment is password-protected (its manifest lists encryption data)",
                );
            }
            inspect_zip_members(bytes, entries, scan);
        }
    } else if sniff::pdf_encrypted(bytes) && !super::pdf::opens_without_password(bytes) {
        scan.offer(
            Reason::PasswordAttachment,
            CryptoClass::PasswordAttachment,
            "a PDF attachment is encrypted (password-protected)",
        );
    } else if let Some(sevenzip) = sniff::sevenzip_encryption(bytes) {
        scan.offer(
            Reason::PasswordAttachment,
            CryptoClass::PasswordAttachment,
            match sevenzip {
                sniff::SevenZip::Encrypted => "a 7z attachment is password-protected (AES-256)",
                // NOTE: Fail closed: 7-Zip packs the file list of any archive
                // of two or more files, and an encrypted one's coders are in it.
                sniff::SevenZip::Hidden => super::SEVENZIP_UNSEEN,
            },
        );
    } else if sniff::rar5_encrypted(bytes) || sniff::rar4_encrypted(bytes) {
        scan.offer(
            Reason::PasswordAttachment,
            CryptoClass::PasswordAttachment,
            "a RAR attachment is password-protected",
        );
    } else if sniff::legacy_office_encrypted(bytes) {
        scan.offer(
            Reason::PasswordAttachment,
            CryptoClass::PasswordAttachment,
            "a Word, Excel or PowerPoint 97-2003 attachment is password-protected",
        );
    } else if sniff::ooxml_encrypted(bytes) {
        scan.offer(
            Reason::PasswordAttachment,
            CryptoClass::PasswordAttachment,
            "an Office document attachment is password-protected",
        );
    } else if bytes.starts_with(&sniff::RPMSG_MAGIC) {
        scan.offer(Reason::Portal, CryptoClass::Portal, RPMSG);
    }
}

/// Opens the members of a readable ZIP archive that can carry encryption
/// of their own (an encrypted PDF, a ZIP in a ZIP, an encrypted message
/// saved as `.eml`) and inspects them as attachments, within
/// [`MAX_ARCHIVE_DEPTH`], [`MAX_MEMBERS`] and the byte budgets.
/// Whether a ZIP is an OpenDocument file whose manifest marks a member
/// encrypted. The manifest is read within the archive budgets.
fn odf_encrypted(bytes: &[u8], entries: &[sniff::ZipEntry], scan: &mut Scan) -> bool {
    let Some(manifest) = entries
        .iter()
        .find(|entry| entry.name(bytes) == ODF_MANIFEST)
    else {
        return false;
    };
    let limit = member_limit(scan, manifest);
    if limit == 0 {
        return false;
    }
    let Ok(content) = sniff::zip_member(bytes, manifest, limit, &mut scan.spent.inflated) else {
        return false;
    };
    scan.spent.inspected += content.len();
    memchr::memmem::find(&content, ODF_ENCRYPTION_DATA).is_some()
}

/// How many bytes of a member may still be read: what is left of the
/// inspection budget and, for a deflated one, of the inflation budgets.
fn member_limit(scan: &Scan, entry: &sniff::ZipEntry) -> usize {
    let inflate_left = if SLOW_INPUT_BUDGET <= scan.spent.inflated.slow_input {
        0
    } else {
        MEMBER_LIMIT.min(INFLATE_BUDGET.saturating_sub(scan.spent.inflated.written))
    };
    INSPECT_BUDGET
        .saturating_sub(scan.spent.inspected)
        .min(if entry.is_stored() {
            usize::MAX
        } else {
            inflate_left
        })
}

fn inspect_zip_members(bytes: &[u8], entries: Vec<sniff::ZipEntry>, scan: &mut Scan) {
    if MAX_ARCHIVE_DEPTH <= scan.archive_depth {
        return;
    }
    // NOTE: Entries can all point at one member's bytes; each is tried once.
    let mut tried_at = HashSet::new();
    for entry in entries {
        let name = entry.name(bytes);
        if !OPENED_MEMBERS.iter().any(|suffix| {
            name.len() >= suffix.len()
                && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
        }) || !tried_at.insert(entry.local_header())
        {
            continue;
        }
        if MAX_MEMBERS <= scan.spent.members_opened {
            return;
        }
        scan.spent.members_opened += 1;
        let limit = member_limit(scan, &entry);
        if limit == 0 {
            continue;
        }
        let Ok(content) = sniff::zip_member(bytes, &entry, limit, &mut scan.spent.inflated) else {
            continue;
        };
        scan.spent.inspected += content.len();
        let name = String::from_utf8_lossy(name);
        let mut inner = Scan {
            archive_depth: scan.archive_depth + 1,
            spent: scan.spent,
            ..Scan::default()
        };
        inspect_member(&name.to_lowercase(), &content, &mut inner);
        scan.spent = inner.spent;
        if let Some(found) = inner.protected {
            let name: String = name
                .chars()
                .take(120)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            scan.offer(
                found.reason,
                found.class,
                format!("{}, inside a ZIP attachment as {name}", found.detail),
            );
        }
    }
}

/// Parses `bytes` as a message and walks it at `depth`. False when they
/// have no header (not a message); a message with too many part
/// delimiters to parse is held.
fn walk_message_bytes(bytes: &[u8], depth: usize, scan: &mut Scan) -> bool {
    match crate::mail::parse_checked(bytes) {
        Ok(nested) => walk(&nested, depth, scan),
        Err(crate::mail::Unparsed::TooManyParts) => scan.offer(
            Reason::Unparseable,
            CryptoClass::Unparseable,
            super::TOO_MANY_PART_DELIMITERS,
        ),
        Err(crate::mail::Unparsed::NoHeader) => return false,
    }
    true
}

/// One archive member, by its name and by its bytes.
fn inspect_member(name: &str, bytes: &[u8], scan: &mut Scan) {
    if name.ends_with(".eml") {
        if MAX_PARTS < scan.spent.parts_seen {
            return;
        }
        walk_message_bytes(bytes, 0, scan);
    } else if name.ends_with(".p7m") {
        inspect_pkcs7(bytes, None, scan);
    } else if (name.ends_with(".pgp") || name.ends_with(".gpg")) && sniff::openpgp_encrypted(bytes)
    {
        // NOTE: Stricter than for an attachment: an archive may hold a
        // GnuPG home's files (trustdb.gpg), which are no ciphertext.
        scan.offer(
            Reason::PgpEncrypted,
            CryptoClass::PgpEncrypted,
            "an OpenPGP encrypted file",
        );
    } else if name.ends_with(".asc") && sniff::armor_bytes(bytes).message {
        scan.offer(
            Reason::PgpEncrypted,
            CryptoClass::PgpEncrypted,
            "an OpenPGP message file",
        );
    } else if name.ends_with(".rpmsg") {
        scan.offer(Reason::Portal, CryptoClass::Portal, RPMSG);
    }
    // A `.eml` may be an archive all the same, as for attachments.
    inspect_bytes(bytes, scan);
}

fn content_type(part: &MessagePart<'_>) -> (String, String) {
    match part.content_type() {
        Some(content_type) => (
            content_type.ctype().to_ascii_lowercase(),
            content_type
                .subtype()
                .map(str::to_ascii_lowercase)
                .unwrap_or_default(),
        ),
        None => ("text".to_owned(), "plain".to_owned()),
    }
}

/// Both the Content-Type `name` and the Content-Disposition `filename`,
/// lowercased: mail-parser's `attachment_name` returns only one of them.
fn part_names(part: &MessagePart<'_>) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(name) = part.content_type().and_then(|ct| ct.attribute("name")) {
        names.push(name.trim().to_ascii_lowercase());
    }
    if let Some(name) = part
        .content_disposition()
        .and_then(|cd| cd.attribute("filename"))
    {
        let name = name.trim().to_ascii_lowercase();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKED_PDF: &[u8] =
        b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\ntrailer\n<< /Root 1 0 R /Encrypt 5 0 R >>\n%%EOF\n";

    fn finding(bytes: &[u8]) -> Option<Finding> {
        let mut scan = Scan::default();
        inspect_bytes(bytes, &mut scan);
        scan.protected
    }

    #[test]
    fn archives_in_archives_are_opened_within_bounds() {
        let level1 = sniff::zip_of(&[
            ("notes.txt", b"hello", true),
            ("Secret.PDF", LOCKED_PDF, true),
        ]);
        let found = finding(&level1).expect("held");
        assert_eq!(found.reason, Reason::PasswordAttachment);
        assert!(
            found
                .detail
                .ends_with("inside a ZIP attachment as Secret.PDF"),
            "{}",
            found.detail
        );
        let level2 = sniff::zip_of(&[("a.zip", &level1, false)]);
        let level3 = sniff::zip_of(&[("b.zip", &level2, true)]);
        assert!(finding(&level3).is_some());
        // One level more than MAX_ARCHIVE_DEPTH is not opened.
        let level4 = sniff::zip_of(&[("c.zip", &level3, false)]);
        assert_eq!(finding(&level4), None);
        // Members that cannot carry encryption of their own are not opened.
        assert_eq!(
            finding(&sniff::zip_of(&[("scan.png", LOCKED_PDF, false)])),
            None
        );
    }

    #[test]
    fn password_protected_opendocument_files_are_held() {
        let manifest = |entry: &str| {
            format!(
                r#"<?xml version="1.0" encoding="UTF-8"?>
<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.3">
 <manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.text"/>
 <manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml" manifest:size="3512">{entry}</manifest:file-entry>
</manifest:manifest>"#
            )
        };
        let document = |manifest: &str| {
            sniff::zip_of(&[
                (
                    "mimetype",
                    b"application/vnd.oasis.opendocument.text",
                    false,
                ),
                ("content.xml", b"\x8f\x13\xa0 ciphertext", true),
                ("META-INF/manifest.xml", manifest.as_bytes(), true),
            ])
        };
        let locked = document(&manifest(
            r#"<manifest:encryption-data manifest:checksum-type="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0#sha256-1k" manifest:checksum="x"><manifest:algorithm manifest:algorithm-name="http://www.w3.org/2001/04/xmlenc#aes256-cbc" manifest:initialisation-vector="y"/></manifest:encryption-data>"#,
        ));
        let found = finding(&locked).expect("held");
        assert_eq!(found.reason, Reason::PasswordAttachment);
        assert!(found.detail.contains("OpenDocument"), "{}", found.detail);
        // Inside a ZIP too, by the document's name.
        let zipped = sniff::zip_of(&[("Offer.ODT", &locked, false)]);
        let found = finding(&zipped).expect("held");
        assert!(
            found
                .detail
                .ends_with("inside a ZIP attachment as Offer.ODT"),
            "{}",
            found.detail
        );
        // An ordinary document is forwarded.
        assert_eq!(finding(&document(&manifest(""))), None);
    }

    #[test]
    fn archive_members_are_read_within_the_budgets() {
        // Too large to inflate: not read, so not held.
        let mut large = vec![b' '; MEMBER_LIMIT];
        large.extend_from_slice(LOCKED_PDF);
        large[..8].copy_from_slice(b"%PDF-1.7");
        assert_eq!(
            finding(&sniff::zip_of(&[("large.pdf", &large, true)])),
            None
        );

        // Members that fit one by one, until inflation's budget is spent.
        let filler = vec![b' '; MEMBER_LIMIT - 100];
        let two = sniff::zip_of(&[("one.pdf", &filler, true), ("two.pdf", &[b' '; 300], true)]);
        let before = INFLATE_BUDGET - filler.len() - 200;
        let mut scan = Scan::default();
        scan.spent.inflated = sniff::InflateCost {
            written: before,
            slow_input: 0,
        };
        inspect_bytes(&two, &mut scan);
        assert_eq!(
            scan.spent.inflated.written - before,
            filler.len(),
            "the second is over the budget"
        );
        // Once it is spent, nothing more is inflated; stored bytes, which
        // cost no copy, are still read. Nor once streams have read too much
        // without writing.
        for spent in [
            sniff::InflateCost {
                written: INFLATE_BUDGET,
                slow_input: 0,
            },
            sniff::InflateCost {
                written: 0,
                slow_input: SLOW_INPUT_BUDGET,
            },
        ] {
            let mut scan = Scan::default();
            scan.spent.inflated = spent;
            inspect_bytes(&sniff::zip_of(&[("four.pdf", LOCKED_PDF, true)]), &mut scan);
            assert_eq!(scan.protected, None);
            let mut scan = Scan::default();
            scan.spent.inflated = spent;
            inspect_bytes(
                &sniff::zip_of(&[("four.pdf", LOCKED_PDF, false)]),
                &mut scan,
            );
            assert!(scan.protected.is_some());
        }

        // A member named by many entries is read once.
        let mut repeated = sniff::zip_of(&[
            ("a.pdf", b"%PDF-1.7 plain", false),
            ("b.pdf", b"%PDF-1.7 other", false),
        ]);
        // The central directory entry: 46 bytes before its name, the last
        // place the name is written.
        let second = repeated
            .windows(5)
            .rposition(|window| window == b"b.pdf")
            .expect("the second entry")
            - 46;
        repeated[second + 42..second + 46].copy_from_slice(&0u32.to_le_bytes());
        let mut scan = Scan::default();
        inspect_bytes(&repeated, &mut scan);
        assert_eq!(scan.spent.members_opened, 1);

        // At most MAX_MEMBERS members per message.
        let names: Vec<String> = (0..=MAX_MEMBERS).map(|n| format!("{n}.pdf")).collect();
        let mut members: Vec<(&str, &[u8], bool)> = names
            .iter()
            .map(|name| (name.as_str(), &b"%PDF-1.7 plain"[..], false))
            .collect();
        members[MAX_MEMBERS] = (names[MAX_MEMBERS].as_str(), LOCKED_PDF, false);
        let mut scan = Scan::default();
        inspect_bytes(&sniff::zip_of(&members), &mut scan);
        assert_eq!(scan.spent.members_opened, MAX_MEMBERS);
        assert_eq!(scan.protected, None);
    }
}
