//! Reads a text or HTML part for what makes it protected: armored OpenPGP
//! lines and secure-mail portal notices.
//!
//! A part is read a bounded piece at a time: the HTML-to-text reduction
//! hands over pieces of whole lines, and the vendor sentences are looked
//! for in a folded copy of at most [`FOLDED_PIECE`] bytes plus an overlap.
//! A 40 MiB body therefore costs no second or third 40 MiB copy (issue 5's
//! memory target: peak RSS under 3x the largest message). The exception is
//! HTML whose text has no line break at all, which comes as one piece.

use super::sniff::{self, Armor, ArmorLines};

/// What a text part holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct TextFindings {
    pub(super) armor: Armor,
    /// The vendor whose secure-mail notice the text is.
    pub(super) portal: Option<&'static str>,
}

/// Bytes of reduced HTML handed to the readers at a time.
const TEXT_PIECE: usize = 64 * 1024;

/// Bytes of folded text searched at a time (plus the overlap that keeps a
/// sentence cut by a piece boundary whole).
const FOLDED_PIECE: usize = 64 * 1024;

/// Reads a plain text part.
pub(super) fn read_text(text: &str) -> TextFindings {
    let mut words = VendorWords::default();
    words.read(text);
    TextFindings {
        armor: sniff::armor(text),
        portal: words.vendor(),
    }
}

/// Reads an HTML part: its text as a reader sees it, for armor and
/// sentences, and its markup as written, for portal links in attributes.
pub(super) fn read_html(html: &str) -> TextFindings {
    let mut lines = ArmorLines::default();
    let mut words = VendorWords::default();
    sniff::html_text(html, TEXT_PIECE, |piece| {
        lines.read(piece);
        words.read(piece);
    });
    let mut markup = VendorWords::default();
    markup.read(html);
    TextFindings {
        armor: lines.found(),
        portal: words.vendor().or_else(|| markup.vendor()),
    }
}

/// Portal notices are recognised by their vendor's link or default text.
/// Each marker pairs a vendor-specific host or path with nothing more
/// generic than that, so an ordinary mail quoting a vendor name passes.
/// Markers are written folded: ASCII lower case, single spaces.
const MARKERS: &[(&str, &str)] = &[
    ("/securereader/", "Proofpoint Encryption"),
    ("/formpostdir/securereader", "Proofpoint Encryption"),
    ("res.cisco.com/websafe", CISCO),
    ("secure.virtru.com", "Virtru"),
    ("mail.proton.me/eo/", "Proton Mail (password-protected)"),
    (
        "mail.protonmail.com/eo/",
        "Proton Mail (password-protected)",
    ),
    (
        "you have just received a confidential email via tuta",
        "Tuta",
    ),
    (
        "you have just received a confidential email via tutanota",
        "Tuta",
    ),
    ("zixmail.net/s/", "Zix"),
    (
        "login.mimecast.com/u/login/?gta=secure",
        "Mimecast Secure Messaging",
    ),
    ("switch.egress.com", "Egress"),
    (
        "has sent you a protected message",
        "Microsoft 365 Message Encryption",
    ),
    (
        "outlook.office365.com/encryption/",
        "Microsoft 365 Message Encryption",
    ),
    ("zixmessage center", "Zix"),
    (
        "save and open the attachment (message.html)",
        "Microsoft 365 Message Encryption (legacy OME)",
    ),
    (
        "this email has been sent to you securely using egress",
        "Egress",
    ),
    (
        "secure-messaging.trendmicro",
        "Trend Micro Email Encryption",
    ),
    // NOTE: Confidential mode strips the body and attachments from the
    // copy a non-Gmail reader gets, leaving a "View the email" link
    // (encryption-markers.md P14); the link goes to this host, as public
    // browser-routing configs that match it show (P14 names no host).
    ("confidential-mail.google.com", "Gmail confidential mode"),
];

const CISCO: &str = "Cisco Secure Email (Registered Envelope)";

/// A Cisco envelope may link to the customer's own appliance: its path
/// and its sentence together mark it.
const CISCO_OWN_HOST: (&str, &str) = ("/websafe/", "registered envelope");

/// Bytes of folded text kept from one search to the next: one less than
/// the longest marker, so a marker cut by the boundary is found whole.
const OVERLAP: usize = {
    let mut longest = CISCO_OWN_HOST.1.len();
    let mut at = 0;
    while at < MARKERS.len() {
        if MARKERS[at].0.len() > longest {
            longest = MARKERS[at].0.len();
        }
        at += 1;
    }
    longest - 1
};

/// Looks for the vendor markers in a text with ASCII case folded and every
/// run of whitespace (NBSP included) read as one space: a notice's sentence
/// may be wrapped onto two lines or joined by NBSPs.
#[derive(Debug, Default)]
struct VendorWords {
    /// The folded text not yet searched, after the overlap kept from the
    /// previous search.
    folded: String,
    pending_space: bool,
    /// The marker found that comes first in [`MARKERS`], and its vendor.
    found: Option<(usize, &'static str)>,
    own_host_path: bool,
    own_host_sentence: bool,
    /// A Proofpoint URL Defense v2 link was seen.
    url_defense: bool,
}

/// A link's `%2F` (and the like) read as `/`: Microsoft Defender Safe
/// Links and other URL rewriters carry the original link percent-encoded
/// in a query parameter (`…safelinks.protection.outlook.com/?url=https%3A%2F%2F…`).
/// Only the characters the link markers contain are decoded.
fn percent_decoded(hex: &[u8]) -> Option<char> {
    match hex {
        b"2f" => Some('/'),
        b"3a" => Some(':'),
        b"3f" => Some('?'),
        b"3d" => Some('='),
        b"2d" => Some('-'),
        _ => None,
    }
}

/// Proofpoint URL Defense v2 writes the original link into its `u=`
/// parameter with `/` as `_` and other characters as `-XX`
/// (`u=https-3A__mail.proton.me_eo_…`); this is a link marker so written.
fn url_defense_v2(marker: &str) -> String {
    let mut written = String::with_capacity(marker.len() * 2);
    for c in marker.chars() {
        match c {
            '/' => written.push('_'),
            ':' => written.push_str("-3a"),
            '?' => written.push_str("-3f"),
            '=' => written.push_str("-3d"),
            '-' => written.push_str("-2d"),
            '_' => written.push_str("-5f"),
            other => written.push(other),
        }
    }
    written
}

/// What every URL Defense v2 link holds: its scheme's `://`, encoded.
const URL_DEFENSE_V2_SCHEME: &str = "-3a__";

/// [`CISCO_OWN_HOST`]'s path as URL Defense v2 writes it.
const CISCO_OWN_PATH_URL_DEFENSE: &str = "_websafe_";

/// [`MARKERS`] as URL Defense v2 writes them, for those it writes
/// differently (links and host names).
static URL_DEFENSE_MARKERS: std::sync::LazyLock<Vec<Option<String>>> =
    std::sync::LazyLock::new(|| {
        MARKERS
            .iter()
            .map(|(marker, _)| Some(url_defense_v2(marker)).filter(|written| written != marker))
            .collect()
    });

impl VendorWords {
    fn read(&mut self, text: &str) {
        for c in text.chars() {
            if c.is_whitespace() {
                self.pending_space = !self.folded.is_empty();
                continue;
            }
            if self.pending_space {
                self.folded.push(' ');
                self.pending_space = false;
            }
            self.folded.push(c.to_ascii_lowercase());
            if c.is_ascii_hexdigit()
                && let Some(escape) = self.folded.len().checked_sub(3)
                && self.folded.as_bytes()[escape] == b'%'
                && let Some(decoded) = percent_decoded(&self.folded.as_bytes()[escape + 1..])
            {
                self.folded.truncate(escape);
                self.folded.push(decoded);
            }
            if self.folded.len() >= FOLDED_PIECE + OVERLAP {
                self.search();
                let mut cut = self.folded.len() - OVERLAP;
                while !self.folded.is_char_boundary(cut) {
                    cut -= 1;
                }
                self.folded.drain(..cut);
            }
        }
    }

    fn search(&mut self) {
        // NOTE: The first marker in the list names the vendor, wherever in
        // the text each one is, as when the whole text was searched at once.
        let listed_before = self.found.map_or(MARKERS.len(), |(at, _)| at);
        // NOTE: Once a URL Defense link was seen, links are also looked for
        // as it writes them; the scheme comes before the host in the same
        // link, so it is seen no later than the marker.
        self.url_defense |= self.folded.contains(URL_DEFENSE_V2_SCHEME);
        let rewritten = &*URL_DEFENSE_MARKERS;
        if let Some(at) =
            MARKERS[..listed_before]
                .iter()
                .zip(rewritten)
                .position(|((marker, _), rewritten)| {
                    self.folded.contains(marker)
                        || (self.url_defense
                            && rewritten
                                .as_deref()
                                .is_some_and(|rewritten| self.folded.contains(rewritten)))
                })
        {
            self.found = Some((at, MARKERS[at].1));
        }
        self.own_host_path |= self.folded.contains(CISCO_OWN_HOST.0)
            || (self.url_defense && self.folded.contains(CISCO_OWN_PATH_URL_DEFENSE));
        self.own_host_sentence |= self.folded.contains(CISCO_OWN_HOST.1);
    }

    fn vendor(mut self) -> Option<&'static str> {
        self.search();
        self.found
            .map(|(_, vendor)| vendor)
            .or_else(|| (self.own_host_path && self.own_host_sentence).then_some(CISCO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vendor(text: &str) -> Option<&'static str> {
        let mut words = VendorWords::default();
        words.read(text);
        words.vendor()
    }

    #[test]
    fn vendor_text_is_compared_with_spacing_and_case_folded() {
        assert_eq!(
            vendor("  Has sent you a\r\n\tPROTECTED\u{a0}message  "),
            Some("Microsoft 365 Message Encryption")
        );
        assert_eq!(vendor("has sent you a protected"), None);
        assert_eq!(vendor(""), None);
        assert_eq!(vendor(" \u{a0}\n"), None);
        assert_eq!(
            vendor("Grüße  Ü, has sent you a protected message"),
            Some("Microsoft 365 Message Encryption")
        );
        assert_eq!(
            vendor("open https://mail.example.com/websafe/login, a Registered\nEnvelope"),
            Some(CISCO)
        );
        assert_eq!(vendor("a Registered Envelope, but no link"), None);
    }

    #[test]
    fn a_marker_cut_by_a_piece_boundary_is_found() {
        let sentence = "has sent you a protected message";
        // Every cut of the sentence by the boundary, with multi-byte
        // characters before it so the cut also lands inside a character.
        for shift in 0..sentence.len() + 2 {
            let filler = "é".repeat((FOLDED_PIECE + OVERLAP - shift) / 2);
            let text = format!("{filler}{sentence} and more");
            assert_eq!(
                vendor(&text),
                Some("Microsoft 365 Message Encryption"),
                "shift {shift}"
            );
        }
        // The Cisco pair, far apart in a large text.
        let far = format!(
            "/websafe/ {} registered envelope",
            "word ".repeat(4 * FOLDED_PIECE)
        );
        assert_eq!(vendor(&far), Some(CISCO));
    }

    #[test]
    fn the_first_listed_marker_names_the_vendor_across_pieces() {
        let text = format!(
            "has sent you a protected message {} see /securereader/ here",
            "word ".repeat(FOLDED_PIECE)
        );
        assert_eq!(vendor(&text), Some("Proofpoint Encryption"));
    }

    #[test]
    fn portal_links_behind_url_rewriters_are_found() {
        // Microsoft Defender Safe Links, in an HTML href and in plain text.
        let safe_links = r#"<a href="https://eur01.safelinks.protection.outlook.com/?url=https%3A%2F%2Fmail.proton.me%2Feo%2FAbC123&amp;data=05%7C02&amp;reserved=0">Unlock message</a>"#;
        assert_eq!(
            read_html(safe_links).portal,
            Some("Proton Mail (password-protected)")
        );
        assert_eq!(
            read_text("Open https://nam02.safelinks.protection.outlook.com/?url=https%3a%2f%2fwww.zixmail.net%2fs%2fe%3fb%3dx").portal,
            Some("Zix")
        );
        // Proofpoint URL Defense v2.
        let url_defense = "https://urldefense.proofpoint.com/v2/url?u=https-3A__mail.proton.me_eo_AbC123&d=DwMFaQ&c=x";
        assert_eq!(
            read_text(url_defense).portal,
            Some("Proton Mail (password-protected)")
        );
        let trend = "https://urldefense.proofpoint.com/v2/url?u=https-3A__secure-2Dmessaging.trendmicro.com_x&d=y";
        assert_eq!(
            read_text(trend).portal,
            Some("Trend Micro Email Encryption")
        );
        assert_eq!(url_defense_v2(CISCO_OWN_HOST.0), CISCO_OWN_PATH_URL_DEFENSE);
        // An encoded slash elsewhere does not make a marker of ordinary text.
        assert_eq!(read_text("path%2Fto%2Fa file, mail.proton.me").portal, None);
        assert_eq!(
            read_text("mail.proton.me_eo_ without a rewritten link").portal,
            None
        );
    }

    #[test]
    fn folded_copy_stays_bounded() {
        let mut words = VendorWords::default();
        words.read(&"line of a pasted log\n".repeat(100_000));
        assert!(words.folded.len() < FOLDED_PIECE + OVERLAP);
        assert!(words.folded.capacity() <= 2 * (FOLDED_PIECE + OVERLAP));
        assert_eq!(words.vendor(), None);
    }

    #[test]
    fn html_is_read_as_text_and_as_markup() {
        let html = "<p>Alice <b>has sent you a protected</b>\n message</p>";
        assert_eq!(
            read_html(html).portal,
            Some("Microsoft 365 Message Encryption")
        );
        let link = r#"<a href="https://secure.virtru.com/start?x=1">Unlock</a>"#;
        assert_eq!(read_html(link).portal, Some("Virtru"));
        // Armor after more than a piece of text is still found.
        let long = format!(
            "<pre>{}</pre><br>-----BEGIN PGP MESSAGE-----<br>hF4D<br>-----END PGP MESSAGE-----",
            "<p>a line of text</p>\n".repeat(2 * TEXT_PIECE / 10)
        );
        assert!(read_html(&long).armor.message);
        assert_eq!(read_text("plain words").portal, None);
        assert!(read_text("> -----BEGIN PGP MESSAGE-----\n").armor.message);
    }
}
