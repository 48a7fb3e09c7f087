//! Byte-level sniffers for protected content: CMS content types, OpenPGP
//! armor, ZIP archives (encrypted entries, and members read for a second
//! look), encrypted PDFs, 7z, RAR and Office files.
//!
//! Pure functions over decoded part bodies. Each reads only a bounded
//! prefix or does a linear scan, so hostile input costs linear time; a
//! ZIP member is inflated only up to the limit its caller sets (the
//! caller, `scan`, bounds how many members and bytes one message may cost).

use std::borrow::Cow;

/// The kind of CMS (S/MIME) container, from its DER content-type OID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmsKind {
    /// envelopedData (1.2.840.113549.1.7.3) or authEnvelopedData
    /// (1.2.840.113549.1.9.16.1.23): encrypted.
    Enveloped,
    /// signedData (1.2.840.113549.1.7.2): opaque-signed.
    Signed,
    /// compressedData (1.2.840.113549.1.9.16.1.9).
    Compressed,
    /// Not recognisable as CMS.
    Unknown,
}

/// Reads the content-type OID at the start of a DER/BER ContentInfo:
/// `30 <len> 06 <oidlen> <oid>`. Definite and indefinite lengths both work.
pub(super) fn cms_kind(der: &[u8]) -> CmsKind {
    const PKCS7: [u8; 8] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07];
    const SMIME_CT: [u8; 10] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01];
    if der.first() != Some(&0x30) {
        return CmsKind::Unknown;
    }
    // Skip the outer SEQUENCE's length octets.
    let after_length = match der.get(1) {
        Some(0x80) => 2,
        Some(length) if *length < 0x80 => 2,
        Some(length) => 2 + usize::from(length & 0x7f),
        None => return CmsKind::Unknown,
    };
    let Some(oid_header) = der.get(after_length..after_length + 2) else {
        return CmsKind::Unknown;
    };
    if oid_header[0] != 0x06 {
        return CmsKind::Unknown;
    }
    let oid_len = usize::from(oid_header[1]);
    let Some(oid) = der.get(after_length + 2..after_length + 2 + oid_len) else {
        return CmsKind::Unknown;
    };
    if oid.len() == 9 && oid.starts_with(&PKCS7) {
        return match oid[8] {
            0x03 => CmsKind::Enveloped,
            0x02 => CmsKind::Signed,
            _ => CmsKind::Unknown,
        };
    }
    if oid.len() == 11 && oid.starts_with(&SMIME_CT) {
        return match oid[10] {
            0x17 => CmsKind::Enveloped,
            0x09 => CmsKind::Compressed,
            _ => CmsKind::Unknown,
        };
    }
    CmsKind::Unknown
}

/// Whether a CMS signedData carries its content (an opaque-signed message)
/// rather than none (a certificate bundle or a detached signature): walks
/// ContentInfo → SignedData → EncapsulatedContentInfo (RFC 5652 §5.1–5.2)
/// and looks for the optional `[0] eContent` after the content type.
/// `None` when the structure cannot be followed.
pub(super) fn signed_data_has_content(der: &[u8]) -> Option<bool> {
    let outer = Tlv::read(der, 0, 0x30)?;
    let oid = Tlv::read(der, outer.start, 0x06)?;
    let explicit = Tlv::read(der, oid.end?, 0xa0)?;
    let signed_data = Tlv::read(der, explicit.start, 0x30)?;
    let version = Tlv::read(der, signed_data.start, 0x02)?;
    let digest_algorithms = Tlv::read(der, version.end?, 0x31)?;
    let encapsulated = Tlv::read(der, digest_algorithms.end?, 0x30)?;
    let content_type = Tlv::read(der, encapsulated.start, 0x06)?;
    let after_type = content_type.end?;
    match encapsulated.end {
        Some(end) => Some(after_type < end),
        // Indefinite length: end-of-contents octets, or the [0] eContent.
        None => match der.get(after_type..after_type.checked_add(2)?)? {
            [0x00, 0x00] => Some(false),
            [0xa0, _] => Some(true),
            _ => None,
        },
    }
}

/// One BER/DER element header: where its contents start and, for a
/// definite length, where the element ends.
struct Tlv {
    start: usize,
    end: Option<usize>,
}

impl Tlv {
    /// The element at `at`, which must have the one-byte tag `tag`.
    fn read(der: &[u8], at: usize, tag: u8) -> Option<Tlv> {
        if *der.get(at)? != tag {
            return None;
        }
        let first = *der.get(at.checked_add(1)?)?;
        let after_first = at + 2;
        if first == 0x80 {
            return Some(Tlv {
                start: after_first,
                end: None,
            });
        }
        if first < 0x80 {
            return Some(Tlv {
                start: after_first,
                end: after_first.checked_add(usize::from(first)),
            });
        }
        let count = usize::from(first & 0x7f);
        if count > 4 {
            return None;
        }
        let mut length = 0usize;
        for byte in der.get(after_first..after_first + count)? {
            length = (length << 8) | usize::from(*byte);
        }
        let start = after_first + count;
        Some(Tlv {
            start,
            end: start.checked_add(length),
        })
    }
}

/// What armored OpenPGP blocks a text holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Armor {
    /// `-----BEGIN PGP MESSAGE-----` (also `, PART x/y`): ciphertext or a
    /// binary signed message; unreadable either way.
    pub(super) message: bool,
    /// `-----BEGIN PGP SIGNED MESSAGE-----`: readable clear-signed text.
    pub(super) signed: bool,
}

/// Finds armor header lines. A line counts when, after leading whitespace
/// (NBSP included) and quote markers (`>`), it starts with the armor
/// header; a sentence that mentions the marker mid-line does not count,
/// unless an armor tail line (`-----END PGP MESSAGE-----`) follows it: a
/// block pasted after a few words of text is a block all the same.
pub(super) fn armor(text: &str) -> Armor {
    let mut lines = ArmorLines::default();
    lines.read(text);
    lines.found()
}

/// [`armor`] over a text that arrives in pieces, each ending at the end
/// of a line (except, perhaps, the last).
#[derive(Debug, Default)]
pub(super) struct ArmorLines {
    found: Armor,
    /// A line mentioned the armor header after other words; an armor tail
    /// line after it makes it a block.
    mentioned: bool,
}

impl ArmorLines {
    pub(super) fn read(&mut self, lines: &str) {
        for line in lines.lines() {
            let line =
                line.trim_start_matches(|c: char| c.is_whitespace() || c == '>' || invisible(c));
            if line.starts_with("-----BEGIN PGP MESSAGE") {
                self.found.message = true;
            } else if line.starts_with("-----BEGIN PGP SIGNED MESSAGE") {
                self.found.signed = true;
            } else if line.contains("-----BEGIN PGP MESSAGE") {
                self.mentioned = true;
            } else if self.mentioned && line.starts_with("-----END PGP MESSAGE") {
                self.found.message = true;
            }
        }
    }

    pub(super) fn found(&self) -> Armor {
        self.found
    }
}

/// Armor in bytes that may not be UTF-8 (binary attachments).
pub(super) fn armor_bytes(bytes: &[u8]) -> Armor {
    armor(&String::from_utf8_lossy(bytes))
}

/// Whether an OpenPGP file holds a key (public or secret, binary or
/// armored) or a detached signature rather than a message: those are
/// informational, and a `.gpg` name alone does not make a file ciphertext.
pub(super) fn openpgp_informational(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(512)];
    let text = String::from_utf8_lossy(head);
    let text = text.trim_start_matches(|c: char| c.is_whitespace() || invisible(c));
    if let Some(kind) = text.strip_prefix("-----BEGIN PGP ") {
        return !kind.starts_with("MESSAGE");
    }
    // Signature, secret key, public key, secret subkey, public subkey.
    matches!(first_packet_tag(bytes), Some(2 | 5 | 6 | 7 | 14))
}

/// Whether an OpenPGP file holds encrypted data: armored as a message, or
/// binary starting with an encrypted-session-key or encrypted-data packet
/// (RFC 9580 §5: tags 1, 3, 9, 18 and 20), or with the marker packet
/// (tag 10) that PGP 5 wrote before them.
pub(super) fn openpgp_encrypted(bytes: &[u8]) -> bool {
    match first_packet_tag(bytes) {
        Some(tag) => matches!(tag, 1 | 3 | 9 | 10 | 18 | 20),
        None => armor_bytes(&bytes[..bytes.len().min(4096)]).message,
    }
}

/// The packet tag of binary OpenPGP data's first packet; `None` when the
/// bytes do not start with a packet header.
///
/// NOTE: RFC 9580 §4.2: the first octet has bit 7 set; bit 6 chooses the
/// new format (tag in bits 0-5) or the legacy one (tag in bits 2-5).
fn first_packet_tag(bytes: &[u8]) -> Option<u8> {
    let first = *bytes.first()?;
    if first & 0x80 == 0 {
        return None;
    }
    Some(if first & 0x40 != 0 {
        first & 0x3f
    } else {
        (first >> 2) & 0x0f
    })
}

/// Characters that show as nothing (or as a box) before a line's text: a
/// byte-order mark, zero-width spaces and joiners, and the replacement
/// character a NBSP becomes in quoted-printable text without a charset.
/// Armor behind them is still armor to a reader.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{a0}' | '\u{feff}' | '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{2060}' | '\u{fffd}'
    )
}

/// Tags that sit inside a line of text. Every other tag (block elements,
/// `<td>`, `<hr>`, `<title>`, `</style>`, `<body>`, unknown ones) ends a
/// line, so armor right after it starts a line as a reader sees it, while
/// armor styled within its line (`-----BEGIN PGP <b>MESSAGE</b>-----`)
/// stays whole.
const INLINE_TAGS: &[&str] = &[
    "a", "abbr", "b", "bdi", "bdo", "big", "cite", "code", "data", "dfn", "em", "font", "i", "kbd",
    "label", "mark", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "sup", "time",
    "tt", "u", "var", "wbr",
];

/// Reduces HTML to text lines so armor split by `<br>` or wrapped in
/// `<pre>` is seen line by line. The text is handed to `read` in pieces
/// of about `piece` bytes, each ending at the end of a line (the last
/// piece, or a single line longer than `piece`, may be longer), so a large
/// HTML part needs no copy of its whole text.
pub(super) fn html_text(html: &str, piece: usize, mut read: impl FnMut(&str)) {
    let mut text = String::with_capacity(html.len().min(piece) + 64);
    let mut in_tag = false;
    let mut tag = String::new();
    // NOTE: Character references are decoded as the text is copied, so a
    // large HTML part costs one copy, not two.
    let mut skip_to = 0;
    for (at, c) in html.char_indices() {
        if at < skip_to {
            continue;
        }
        match (in_tag, c) {
            (false, '<') => {
                in_tag = true;
                tag.clear();
            }
            (true, '>') => {
                in_tag = false;
                let name = tag
                    .trim_start_matches('/')
                    .split(|c: char| c.is_whitespace() || c == '/')
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if !INLINE_TAGS.contains(&name.as_str()) {
                    text.push('\n');
                }
            }
            (true, c) => {
                if tag.len() < 32 {
                    tag.push(c);
                }
            }
            (false, '&') => match entity(&html[at + 1..]) {
                Some((decoded, length)) => {
                    text.push(decoded);
                    skip_to = at + 1 + length;
                }
                None => text.push('&'),
            },
            (false, c) => text.push(c),
        }
        if text.len() >= piece && text.ends_with('\n') {
            read(&text);
            text.clear();
        }
    }
    if !text.is_empty() {
        read(&text);
    }
}

/// The character a reference stands for, given the text after its `&`,
/// and how many bytes of that text it takes (its `;` included): numeric
/// references (`&#160;`, `&#xa0;`) and the common named ones, which can
/// stand before or inside an armor line; NBSP is read as a space. `None`
/// for anything else, which stays as written.
fn entity(after: &str) -> Option<(char, usize)> {
    // NOTE: A reference is short; looking further for its `;` would make
    // a text of many `&` quadratic.
    let end = after.bytes().take(11).position(|byte| byte == b';')?;
    let name = after.get(..end)?.to_ascii_lowercase();
    let c = match name.as_str() {
        "nbsp" => ' ',
        "gt" => '>',
        "lt" => '<',
        "amp" => '&',
        "quot" => '"',
        "#x" | "#" => return None,
        lower => {
            let number = match lower.strip_prefix("#x") {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => lower.strip_prefix('#').and_then(|dec| dec.parse().ok()),
            };
            match number.and_then(char::from_u32)? {
                '\u{a0}' => ' ',
                c => c,
            }
        }
    };
    Some((c, end + 1))
}

/// Decodes base64 that mail-parser gave up on (a stray character, a
/// footer a gateway appended, a part cut short): characters outside the
/// alphabet are skipped, decoding stops at the first `=` pad, and a last
/// incomplete group yields the bytes it holds. What a lenient reader
/// would show is what must be checked.
pub(super) fn lenient_base64(encoded: &[u8]) -> Vec<u8> {
    let value = |byte: u8| -> Option<u32> {
        match byte {
            b'A'..=b'Z' => Some(u32::from(byte - b'A')),
            b'a'..=b'z' => Some(u32::from(byte - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(byte - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(encoded.len() / 4 * 3);
    let (mut group, mut count) = (0u32, 0);
    for &byte in encoded {
        if byte == b'=' {
            break;
        }
        let Some(bits) = value(byte) else {
            continue;
        };
        group = (group << 6) | bits;
        count += 1;
        if count == 4 {
            out.extend_from_slice(&group.to_be_bytes()[1..]);
            (group, count) = (0, 0);
        }
    }
    match count {
        2 => out.push((group >> 4) as u8),
        3 => out.extend_from_slice(&((group >> 2) as u16).to_be_bytes()),
        _ => (),
    }
    out
}

/// True when a TNEF file (`winmail.dat`) carries a rights-protected
/// message: TNEF stores attachment data as it is, so the rpmsg container's
/// magic is there. (Its name alone is not enough: the rich-text body may
/// just mention it.)
pub(super) fn tnef_holds_rpmsg(bytes: &[u8]) -> bool {
    find(bytes, &RPMSG_MAGIC).is_some()
}

/// The first bytes of a `message.rpmsg` container.
pub(super) const RPMSG_MAGIC: [u8; 8] = [0x76, 0xe8, 0x04, 0x60, 0xc4, 0x11, 0xe3, 0x86];

/// True when any entry of a ZIP archive is encrypted: general-purpose flag
/// bit 0 (traditional or AES, APPNOTE 4.4.4) or bit 6 (strong encryption).
/// Reads the central directory's `entries` ([`zip_entries`]); falls back to
/// walking local headers when there are none (a truncated archive).
pub(super) fn zip_encrypted(bytes: &[u8], entries: Option<&[ZipEntry]>) -> bool {
    const ENCRYPTED: u16 = 0x0001 | 0x0040;
    if let Some(entries) = entries {
        return entries.iter().any(|entry| entry.flags & ENCRYPTED != 0);
    }
    let mut offset = 0;
    while let Some(header) = bytes.get(offset..offset + 30) {
        if &header[..4] != b"PK\x03\x04" {
            break;
        }
        let flags = u16::from_le_bytes([header[6], header[7]]);
        if flags & ENCRYPTED != 0 {
            return true;
        }
        let compressed =
            u32::from_le_bytes([header[18], header[19], header[20], header[21]]) as usize;
        let name_len = usize::from(u16::from_le_bytes([header[26], header[27]]));
        let extra_len = usize::from(u16::from_le_bytes([header[28], header[29]]));
        if flags & 0x0008 != 0 && compressed == 0 {
            // Sizes follow the data (data descriptor): cannot skip ahead.
            break;
        }
        offset += 30 + name_len + extra_len + compressed;
    }
    false
}

/// One member of a ZIP archive, as its central directory describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ZipEntry {
    /// Where the name is in the archive's bytes (no copy per entry: a
    /// directory can list 65,535 of them).
    name_at: usize,
    name_len: usize,
    flags: u16,
    method: u16,
    compressed_size: u64,
    size: u64,
    local_header: u64,
}

/// Every central directory entry, or `None` when no consistent
/// end-of-central-directory record is found.
pub(super) fn zip_entries(bytes: &[u8]) -> Option<Vec<ZipEntry>> {
    let search_from = bytes.len().saturating_sub(65_557);
    let tail = &bytes[search_from..];
    let eocd = search_from
        + tail
            .windows(4)
            .rposition(|window| window == b"PK\x05\x06")?;
    let record = bytes.get(eocd..eocd + 22)?;
    let count = usize::from(u16::from_le_bytes([record[10], record[11]]));
    let mut offset = u32::from_le_bytes([record[16], record[17], record[18], record[19]]) as usize;
    let mut entries = Vec::with_capacity(count.min(4096));
    let u32_at = |header: &[u8], at: usize| {
        u64::from(u32::from_le_bytes([
            header[at],
            header[at + 1],
            header[at + 2],
            header[at + 3],
        ]))
    };
    for _ in 0..count {
        let header = bytes.get(offset..offset + 46)?;
        if &header[..4] != b"PK\x01\x02" {
            return None;
        }
        let name_len = usize::from(u16::from_le_bytes([header[28], header[29]]));
        let extra_len = usize::from(u16::from_le_bytes([header[30], header[31]]));
        let comment_len = usize::from(u16::from_le_bytes([header[32], header[33]]));
        bytes.get(offset + 46..offset + 46 + name_len)?;
        entries.push(ZipEntry {
            name_at: offset + 46,
            name_len,
            flags: u16::from_le_bytes([header[8], header[9]]),
            method: u16::from_le_bytes([header[10], header[11]]),
            compressed_size: u32_at(header, 20),
            size: u32_at(header, 24),
            local_header: u32_at(header, 42),
        });
        offset += 46 + name_len + extra_len + comment_len;
    }
    Some(entries)
}

impl ZipEntry {
    /// The name as stored, in the archive it was read from.
    pub(super) fn name<'a>(&self, archive: &'a [u8]) -> &'a [u8] {
        archive
            .get(self.name_at..self.name_at + self.name_len)
            .unwrap_or_default()
    }

    /// Where the member's local header is: one place, however many
    /// entries name it.
    pub(super) fn local_header(&self) -> u64 {
        self.local_header
    }

    /// Stored as it is (no compression): reading it copies nothing.
    pub(super) fn is_stored(&self) -> bool {
        self.method == 0
    }
}

/// Why a ZIP member's content could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unread {
    /// Larger than the bytes allowed for it.
    TooLarge,
    /// Encrypted, compressed other than stored or deflated, ZIP64, or its
    /// bytes are not where the directory says.
    Unreadable,
}

/// A member's content: its stored bytes (no copy), or its deflated bytes
/// inflated. Either is refused as [`Unread::TooLarge`] beyond `limit`
/// bytes, so a small archive cannot inflate to gigabytes. `cost` grows by
/// what inflating took, whether or not it succeeded.
pub(super) fn zip_member<'a>(
    bytes: &'a [u8],
    entry: &ZipEntry,
    limit: usize,
    cost: &mut InflateCost,
) -> Result<Cow<'a, [u8]>, Unread> {
    const STORED: u16 = 0;
    const DEFLATED: u16 = 8;
    // NOTE: 0xffffffff sizes or offsets are in a ZIP64 extra field; such a
    // member is larger than any limit used here.
    const ZIP64: u64 = 0xffff_ffff;
    if entry.flags & 0x0041 != 0 {
        return Err(Unread::Unreadable);
    }
    if entry.size == ZIP64 || entry.compressed_size == ZIP64 || entry.local_header == ZIP64 {
        return Err(Unread::TooLarge);
    }
    let start = usize::try_from(entry.local_header).map_err(|_| Unread::Unreadable)?;
    let header = bytes.get(start..start + 30).ok_or(Unread::Unreadable)?;
    if &header[..4] != b"PK\x03\x04" {
        return Err(Unread::Unreadable);
    }
    let name_len = usize::from(u16::from_le_bytes([header[26], header[27]]));
    let extra_len = usize::from(u16::from_le_bytes([header[28], header[29]]));
    let data_start = start + 30 + name_len + extra_len;
    let data_end = usize::try_from(entry.compressed_size)
        .ok()
        .and_then(|length| data_start.checked_add(length))
        .ok_or(Unread::Unreadable)?;
    let data = bytes.get(data_start..data_end).ok_or(Unread::Unreadable)?;
    match entry.method {
        STORED if data.len() <= limit => Ok(Cow::Borrowed(data)),
        STORED => Err(Unread::TooLarge),
        // An honest directory says at once that the member is too large.
        DEFLATED if entry.size > limit as u64 => Err(Unread::TooLarge),
        DEFLATED => inflate(data, entry.size, limit, cost).map(Cow::Owned),
        _ => Err(Unread::Unreadable),
    }
}

/// What inflating ZIP members has cost so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct InflateCost {
    /// Bytes written: the memory the inflated members take.
    pub(super) written: usize,
    /// Compressed bytes read in chunks that wrote less than half as much.
    /// Real deflate streams write at least about what they read; blocks
    /// that carry nothing make a stream slow without making it large.
    pub(super) slow_input: usize,
}

/// Compressed bytes fed to the inflater at a time.
const INFLATE_CHUNK: usize = 1024;

/// Chunks of one stream that may write less than half what they read
/// before it is given up: real compressors write such chunks only where a
/// block header meets a tiny block, while a stream of empty blocks writes
/// nothing at all and costs about 2.5 us a byte (miniz_oxide rebuilds its
/// tables for every block). Writing a lot first buys no licence to read
/// empty blocks after: every chunk is judged on its own.
const MAX_SLOW_CHUNKS: usize = 16;

/// Inflates a raw deflate stream into at most `limit` bytes.
///
/// NOTE: The buffer starts at the size the directory declares (at least
/// 64 KiB, at most the limit) and doubles as needed up to the limit, so a
/// member that understates its size is still read, and memory follows
/// what is written.
fn inflate(
    data: &[u8],
    declared: u64,
    limit: usize,
    cost: &mut InflateCost,
) -> Result<Vec<u8>, Unread> {
    use miniz_oxide::inflate::TINFLStatus;
    use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
    // One byte more than the limit: a member of exactly `limit` bytes may
    // need room for nothing more to finish its last block.
    let room = limit.saturating_add(1);
    let start = usize::try_from(declared)
        .unwrap_or(usize::MAX)
        .max(64 * 1024)
        .min(room);
    let mut out = vec![0u8; start];
    let mut state = Box::<DecompressorOxide>::default();
    let (mut read, mut written, mut slow_chunks) = (0usize, 0usize, 0usize);
    let result = loop {
        let end = data.len().min(read + INFLATE_CHUNK);
        let more = end < data.len();
        let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF
            | if more {
                inflate_flags::TINFL_FLAG_HAS_MORE_INPUT
            } else {
                0
            };
        let (status, consumed, produced) =
            decompress(&mut state, &data[read..end], &mut out, written, flags);
        read += consumed;
        written += produced;
        if produced < consumed / 2 {
            slow_chunks += 1;
            cost.slow_input += consumed;
        }
        match status {
            TINFLStatus::Done if written <= limit => break Ok(()),
            TINFLStatus::Done => break Err(Unread::TooLarge),
            TINFLStatus::HasMoreOutput if out.len() < room => {
                let grown = out.len().saturating_mul(2).min(room);
                out.resize(grown, 0);
            }
            TINFLStatus::HasMoreOutput => break Err(Unread::TooLarge),
            TINFLStatus::NeedsMoreInput if more && slow_chunks <= MAX_SLOW_CHUNKS => {}
            _ => break Err(Unread::Unreadable),
        }
    };
    cost.written += written;
    result.map(|()| {
        out.truncate(written);
        out
    })
}

/// True for a ZIP archive.
pub(super) fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

/// What a 7z archive's header shows of encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SevenZip {
    /// The header names the AES-256 coder (`06 F1 07 01`, with its flag
    /// byte `24`): the file data is encrypted, and with encrypted file
    /// names the header itself is.
    Encrypted,
    /// The header is packed (`kEncodedHeader`) with other coders only: the
    /// coders of the files are inside it, out of sight without unpacking.
    Hidden,
}

/// The encryption a 7z archive shows; `None` for a 7z whose plain header
/// names no AES coder, and for anything that is not 7z.
pub(super) fn sevenzip_encryption(bytes: &[u8]) -> Option<SevenZip> {
    const SIGNATURE: [u8; 6] = [0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c];
    const AES_CODER: [u8; 5] = [0x24, 0x06, 0xf1, 0x07, 0x01];
    const ENCODED_HEADER: u8 = 0x17;
    if !bytes.starts_with(&SIGNATURE) {
        return None;
    }
    let start_header = bytes.get(12..28)?;
    let mut offset = [0; 8];
    offset.copy_from_slice(&start_header[..8]);
    let mut size = [0; 8];
    size.copy_from_slice(&start_header[8..]);
    let begin = usize::try_from(u64::from_le_bytes(offset))
        .ok()?
        .checked_add(32)?;
    let end = begin.checked_add(usize::try_from(u64::from_le_bytes(size)).ok()?)?;
    let header = bytes.get(begin..end.min(bytes.len()))?;
    if find(header, &AES_CODER).is_some() {
        Some(SevenZip::Encrypted)
    } else if header.first() == Some(&ENCODED_HEADER) {
        Some(SevenZip::Hidden)
    } else {
        None
    }
}

/// True for a RAR 5 archive with encrypted headers (an archive encryption
/// block first) or an encrypted file (a file block whose extra area holds
/// a file encryption record), per the RAR 5.0 format.
pub(super) fn rar5_encrypted(bytes: &[u8]) -> bool {
    const SIGNATURE: &[u8] = b"Rar!\x1a\x07\x01\x00";
    const ENCRYPTION_BLOCK: u64 = 4;
    const FILE_BLOCK: u64 = 2;
    const FILE_ENCRYPTION_RECORD: u64 = 1;
    if !bytes.starts_with(SIGNATURE) {
        return false;
    }
    let mut at = SIGNATURE.len();
    // NOTE: Bounded: real archives put the encryption block first, and a
    // file's record in its own header; 64 blocks is plenty to see one.
    for _ in 0..64 {
        let Some(block) = Rar5Block::read(bytes, at) else {
            return false;
        };
        if block.kind == ENCRYPTION_BLOCK {
            return true;
        }
        if block.kind == FILE_BLOCK
            && let Some(extra) = block.extra
        {
            let mut record_at = extra.start;
            while record_at < extra.end {
                let Some((record_size, after_size)) = vint(bytes, record_at) else {
                    break;
                };
                let Some((record_kind, _)) = vint(bytes, after_size) else {
                    break;
                };
                if record_kind == FILE_ENCRYPTION_RECORD {
                    return true;
                }
                let Some(next) = usize::try_from(record_size)
                    .ok()
                    .and_then(|size| after_size.checked_add(size))
                else {
                    break;
                };
                record_at = next;
            }
        }
        at = block.next;
    }
    false
}

/// True for a RAR 1.5-4.x archive (WinRAR's format before RAR 5, still
/// written with `-ma4` and by older tools) with encrypted headers (the main
/// header's `MHD_PASSWORD` flag) or an encrypted file (a file header's
/// `LHD_PASSWORD` flag), per RARLAB's technote for that format.
pub(super) fn rar4_encrypted(bytes: &[u8]) -> bool {
    const SIGNATURE: &[u8] = b"Rar!\x1a\x07\x00";
    const MAIN_HEADER: u8 = 0x73;
    const FILE_HEADER: u8 = 0x74;
    const END_OF_ARCHIVE: u8 = 0x7b;
    const MHD_PASSWORD: u16 = 0x0080;
    const LHD_PASSWORD: u16 = 0x0004;
    // Set on blocks followed by data (always on file headers): a 4-byte
    // data size follows the 7-byte base header.
    const LONG_BLOCK: u16 = 0x8000;
    if !bytes.starts_with(SIGNATURE) {
        return false;
    }
    let mut at = SIGNATURE.len();
    // NOTE: Bounded as for RAR 5: the main header comes first, and each
    // file's flag is in its own header.
    for _ in 0..64 {
        let Some(header) = bytes.get(at..at.saturating_add(7)) else {
            return false;
        };
        let kind = header[2];
        let flags = u16::from_le_bytes([header[3], header[4]]);
        let head_size = usize::from(u16::from_le_bytes([header[5], header[6]]));
        if head_size < 7 {
            return false;
        }
        match kind {
            MAIN_HEADER if flags & MHD_PASSWORD != 0 => return true,
            FILE_HEADER if flags & LHD_PASSWORD != 0 => return true,
            END_OF_ARCHIVE => return false,
            _ => {}
        }
        let data_size = if flags & LONG_BLOCK != 0 {
            match bytes.get(at + 7..at + 11) {
                Some(size) => u32::from_le_bytes([size[0], size[1], size[2], size[3]]),
                None => return false,
            }
        } else {
            0
        };
        let Some(next) = usize::try_from(data_size)
            .ok()
            .and_then(|data| at.checked_add(head_size)?.checked_add(data))
        else {
            return false;
        };
        at = next;
    }
    false
}

/// One RAR 5 block header: its type, where its extra area lies, and where
/// the next block starts.
struct Rar5Block {
    kind: u64,
    extra: Option<std::ops::Range<usize>>,
    next: usize,
}

impl Rar5Block {
    fn read(bytes: &[u8], at: usize) -> Option<Rar5Block> {
        // CRC32, then the header size counted from the byte after it.
        let (header_size, header_start) = vint(bytes, at.checked_add(4)?)?;
        let header_end = header_start.checked_add(usize::try_from(header_size).ok()?)?;
        let (kind, after_kind) = vint(bytes, header_start)?;
        let (flags, mut cursor) = vint(bytes, after_kind)?;
        let mut extra_size = 0;
        if flags & 0x01 != 0 {
            (extra_size, cursor) = vint(bytes, cursor)?;
        }
        let mut data_size = 0;
        if flags & 0x02 != 0 {
            (data_size, _) = vint(bytes, cursor)?;
        }
        let extra_start = header_end.checked_sub(usize::try_from(extra_size).ok()?)?;
        Some(Rar5Block {
            kind,
            extra: (extra_size > 0 && header_start <= extra_start)
                .then_some(extra_start..header_end),
            next: header_end.checked_add(usize::try_from(data_size).ok()?)?,
        })
    }
}

/// A RAR 5 variable-length integer at `at`: its value and the position
/// after it.
fn vint(bytes: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (index, byte) in bytes.get(at..)?.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, at + index + 1));
        }
    }
    None
}

/// True for a PDF whose trailer or cross-reference stream names an
/// `/Encrypt` dictionary: the key followed by a dictionary (`<<`) or an
/// indirect reference (`5 0 R`). The word in a page's text, or a longer key
/// such as `/EncryptMetadata`, is not one.
pub(super) fn pdf_encrypted(bytes: &[u8]) -> bool {
    is_pdf(bytes) && encrypt_keys(bytes).next().is_some()
}

/// Where the `/Encrypt` keys followed by a value (see [`pdf_encrypted`])
/// stand in a PDF's bytes.
pub(super) fn encrypt_keys(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    const KEY: &[u8] = b"/Encrypt";
    positions(bytes, KEY).filter(move |&at| {
        let value_at = at + KEY.len();
        encrypt_value(&bytes[value_at..bytes.len().min(value_at + 40)])
    })
}

/// Whether the bytes after an `/Encrypt` key start its value: `<<`, or
/// `N G R` (PDF whitespace between the parts).
fn encrypt_value(after_key: &[u8]) -> bool {
    let is_space = |byte: &u8| super::pdf::is_white(*byte);
    let mut rest = after_key;
    let skip_space = |rest: &mut &[u8]| {
        while rest.first().is_some_and(is_space) {
            *rest = &rest[1..];
        }
    };
    let digits = |rest: &mut &[u8]| {
        let count = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
        *rest = &rest[count..];
        count > 0
    };
    skip_space(&mut rest);
    if rest.starts_with(b"<<") {
        return true;
    }
    if !digits(&mut rest) || !rest.first().is_some_and(is_space) {
        return false;
    }
    skip_space(&mut rest);
    if !digits(&mut rest) || !rest.first().is_some_and(is_space) {
        return false;
    }
    skip_space(&mut rest);
    rest.first() == Some(&b'R')
}

/// True for a PDF (the header may follow a little junk, as readers allow).
pub(super) fn is_pdf(bytes: &[u8]) -> bool {
    find(&bytes[..bytes.len().min(1024)], b"%PDF-").is_some()
}

/// The first bytes of a Compound File (OLE2), the container of encrypted
/// OOXML and of legacy Office documents.
const CFB_SIGNATURE: [u8; 8] = [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1];

/// True for a Compound File (OLE2) holding the `EncryptionInfo` and
/// `EncryptedPackage` streams of an encrypted OOXML document
/// (MS-OFFCRYPTO §2.3.4). Directory entry names are UTF-16LE.
pub(super) fn ooxml_encrypted(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&CFB_SIGNATURE) {
        return false;
    }
    find(bytes, &utf16("EncryptedPackage")).is_some()
        && find(bytes, &utf16("EncryptionInfo")).is_some()
}

/// True for a legacy binary Office file (Word, Excel or PowerPoint 97–2003,
/// a Compound File) with a password to open it: Word's FIB with
/// `fEncrypted` (MS-DOC §2.5.2); a workbook whose BOF record is followed
/// by FILEPASS, after WRITEPROT when there is one (MS-XLS §2.4.117); or
/// PowerPoint's `EncryptedSummary` stream or encrypted Current User token
/// (MS-PPT §2.3.2, §2.3.7). The Word and Excel streams are found by their
/// directory entries; one small enough for the mini stream is not read.
/// (Excel's "VelvetSweatshop" default password, which opens without a
/// prompt, is not told apart: such a workbook is held.)
pub(super) fn legacy_office_encrypted(bytes: &[u8]) -> bool {
    const F_ENCRYPTED: u16 = 0x0100;
    const EXCEL_BOF: [u8; 4] = [0x09, 0x08, 0x10, 0x00];
    const WRITEPROT: [u8; 4] = [0x86, 0x00, 0x00, 0x00];
    const FILEPASS: [u8; 2] = [0x2f, 0x00];
    const PPT_ENCRYPTED_USER: [u8; 8] = [0x14, 0x00, 0x00, 0x00, 0xdf, 0xc4, 0xd1, 0xf3];
    if !bytes.starts_with(&CFB_SIGNATURE) {
        return false;
    }
    if find(bytes, &utf16("EncryptedSummary")).is_some() {
        return true;
    }
    // The CurrentUserAtom record (type 0x0FF6, then its length) whose size
    // field (0x14) is followed by the encrypted-document token.
    if positions(bytes, &PPT_ENCRYPTED_USER)
        .any(|at| at >= 6 && bytes[at - 6..at - 4] == [0xf6, 0x0f])
    {
        return true;
    }
    let sector_size = match bytes.get(0x1e..0x20) {
        Some([12, 0]) => 4096,
        Some([9, 0]) => 512,
        _ => return false,
    };
    let word = cfb_stream_start(bytes, sector_size, "WordDocument").is_some_and(|fib| {
        fib.starts_with(&[0xec, 0xa5])
            && fib
                .get(0x0a..0x0c)
                .is_some_and(|flags| u16::from_le_bytes([flags[0], flags[1]]) & F_ENCRYPTED != 0)
    });
    let excel = ["Workbook", "Book"].iter().any(|name| {
        cfb_stream_start(bytes, sector_size, name).is_some_and(|stream| {
            let after_bof = if stream.get(20..24) == Some(&WRITEPROT[..]) {
                24
            } else {
                20
            };
            stream.starts_with(&EXCEL_BOF)
                && stream.get(after_bof..after_bof + 2) == Some(&FILEPASS[..])
        })
    });
    word || excel
}

/// The first sector of a Compound File stream, found by its directory
/// entry (128 bytes: the UTF-16LE name, its length in bytes with the
/// terminator at 0x40, the starting sector at 0x74, the size at 0x78).
/// `None` for a stream in the mini stream (under 4096 bytes).
fn cfb_stream_start<'a>(bytes: &'a [u8], sector_size: usize, name: &str) -> Option<&'a [u8]> {
    const MINI_STREAM_CUTOFF: u64 = 4096;
    let name = utf16(name);
    let name_length = u16::try_from(name.len() + 2).ok()?;
    let stream_size = |entry: &[u8]| {
        let mut size = [0; 8];
        size.copy_from_slice(&entry[0x78..0x80]);
        u64::from_le_bytes(size)
    };
    // NOTE: Directory entries sit on 128-byte boundaries after the header
    // sector; a match elsewhere is data that happens to spell the name.
    let entry = positions(bytes, &name)
        .filter(|at| sector_size <= *at && at % 128 == 0)
        .map_while(|at| bytes.get(at..at + 128))
        .find(|entry| {
            entry[0x40..0x42] == name_length.to_le_bytes()
                && entry[0x42] == 2
                && MINI_STREAM_CUTOFF <= stream_size(entry)
        })?;
    let start = u32::from_le_bytes([entry[0x74], entry[0x75], entry[0x76], entry[0x77]]);
    let offset = usize::try_from(start)
        .ok()?
        .checked_add(1)?
        .checked_mul(sector_size)?;
    bytes.get(offset..offset.checked_add(sector_size)?.min(bytes.len()))
}

/// A name as Compound File directories and MAPI properties store it.
fn utf16(name: &str) -> Vec<u8> {
    name.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Every position of `needle` in `haystack`, first to last (overlapping
/// ones included).
fn positions<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let mut from = 0;
    std::iter::from_fn(move || {
        let at = from + find(haystack.get(from..)?, needle)?;
        from = at + 1;
        Some(at)
    })
}

/// First position of `needle` in `haystack`.
pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A ZIP archive of (name, content, deflate?) members, written the way
/// APPNOTE describes: local headers and data, central directory, end
/// record.
#[cfg(test)]
pub(super) fn zip_of(members: &[(&str, &[u8], bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut directory = Vec::new();
    for (name, content, deflate) in members {
        let data = if *deflate {
            miniz_oxide::deflate::compress_to_vec(content, 6)
        } else {
            content.to_vec()
        };
        let method: u16 = if *deflate { 8 } else { 0 };
        let offset = out.len() as u32;
        let mut fields = Vec::new();
        fields.extend(method.to_le_bytes());
        fields.extend([0; 8]); // time, date, CRC (not checked here)
        fields.extend((data.len() as u32).to_le_bytes());
        fields.extend((content.len() as u32).to_le_bytes());
        fields.extend((name.len() as u16).to_le_bytes());
        fields.extend([0, 0]); // extra length
        out.extend(b"PK\x03\x04\x14\x00\x00\x00");
        out.extend(&fields);
        out.extend(name.as_bytes());
        out.extend(&data);
        directory.extend(b"PK\x01\x02\x14\x00\x14\x00\x00\x00");
        directory.extend(&fields);
        directory.extend([0; 10]); // comment length, disk, attributes
        directory.extend(offset.to_le_bytes());
        directory.extend(name.as_bytes());
    }
    let start = out.len() as u32;
    let count = (members.len() as u16).to_le_bytes();
    out.extend(&directory);
    out.extend(b"PK\x05\x06\x00\x00\x00\x00");
    out.extend(count);
    out.extend(count);
    out.extend((directory.len() as u32).to_le_bytes());
    out.extend(start.to_le_bytes());
    out.extend([0, 0]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cms_oids() {
        // 30 80 06 09 2A864886F70D010703: indefinite-length envelopedData.
        let enveloped = [
            0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03,
        ];
        assert_eq!(cms_kind(&enveloped), CmsKind::Enveloped);
        let signed = [
            0x30, 0x82, 0x07, 0x85, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07,
            0x02,
        ];
        assert_eq!(cms_kind(&signed), CmsKind::Signed);
        let auth = [
            0x30, 0x81, 0x90, 0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10,
            0x01, 0x17,
        ];
        assert_eq!(cms_kind(&auth), CmsKind::Enveloped);
        assert_eq!(cms_kind(b"hello"), CmsKind::Unknown);
        assert_eq!(cms_kind(&[0x30]), CmsKind::Unknown);
    }

    #[test]
    fn signed_data_with_and_without_content() {
        const SIGNED: [u8; 11] = [
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
        ];
        const DATA: [u8; 11] = [
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01,
        ];
        // BER, indefinite lengths as Outlook writes them.
        let ber = |encapsulated_rest: &[u8]| {
            [
                &[0x30, 0x80][..],
                &SIGNED,
                &[
                    0xa0, 0x80, 0x30, 0x80, 0x02, 0x01, 0x01, 0x31, 0x00, 0x30, 0x80,
                ],
                &DATA,
                encapsulated_rest,
            ]
            .concat()
        };
        assert_eq!(signed_data_has_content(&ber(&[0x00, 0x00])), Some(false));
        assert_eq!(
            signed_data_has_content(&ber(&[0xa0, 0x80, 0x04])),
            Some(true)
        );
        // DER, definite lengths: encapsulated content info with and without
        // its [0] eContent.
        let der = |encapsulated: &[u8]| {
            let signed_data = [&[0x02, 0x01, 0x01, 0x31, 0x00][..], encapsulated].concat();
            let explicit = [&[0x30, signed_data.len() as u8][..], &signed_data].concat();
            let body = [&SIGNED[..], &[0xa0, explicit.len() as u8], &explicit].concat();
            [&[0x30, body.len() as u8][..], &body].concat()
        };
        let bare = [&[0x30, 0x0b][..], &DATA].concat();
        let carrying = [&[0x30, 0x10][..], &DATA, &[0xa0, 0x03, 0x04, 0x01, 0x41]].concat();
        assert_eq!(signed_data_has_content(&der(&bare)), Some(false));
        assert_eq!(signed_data_has_content(&der(&carrying)), Some(true));
        assert_eq!(signed_data_has_content(b"not der"), None);
        assert_eq!(signed_data_has_content(&ber(&[])), None);
    }

    /// The whole text of an HTML part, in one piece.
    fn whole_text(html: &str) -> String {
        let mut text = String::new();
        html_text(html, usize::MAX, |piece| text.push_str(piece));
        text
    }

    #[test]
    fn html_text_comes_in_pieces_of_whole_lines() {
        let html = "<p>one</p><p>two &amp; three</p>x<br>-----BEGIN PGP MESSAGE-----<br>hF4D<span>a\nb</span>end";
        let mut pieces = Vec::new();
        html_text(html, 4, |piece| pieces.push(piece.to_owned()));
        assert!(pieces.len() > 3, "{pieces:?}");
        for piece in &pieces[..pieces.len() - 1] {
            assert!(piece.ends_with('\n'), "{pieces:?}");
        }
        assert_eq!(pieces.concat(), whole_text(html));
        let mut lines = ArmorLines::default();
        for piece in &pieces {
            lines.read(piece);
        }
        assert!(lines.found().message);
        // A block whose head was mentioned in one piece and whose tail
        // line comes in a later one is still a block.
        let mut lines = ArmorLines::default();
        lines.read("Here it is: -----BEGIN PGP MESSAGE-----\n");
        lines.read("hF4D\n");
        assert!(!lines.found().message);
        lines.read("-----END PGP MESSAGE-----\n");
        assert!(lines.found().message);
    }

    #[test]
    fn armor_lines_not_mentions() {
        assert!(armor("x\n  > -----BEGIN PGP MESSAGE-----\n").message);
        assert!(armor("\u{a0}-----BEGIN PGP MESSAGE, PART 1/2-----").message);
        assert!(!armor("see -----BEGIN PGP MESSAGE----- above").message);
        assert!(
            armor("Here it is: -----BEGIN PGP MESSAGE-----\nhF4D\n-----END PGP MESSAGE-----")
                .message
        );
        assert!(!armor("-----END PGP MESSAGE-----\nsee -----BEGIN PGP MESSAGE-----").message);
        assert!(armor("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256").signed);
        assert!(
            armor(&whole_text(
                "<p>hi</p><pre>-----BEGIN PGP MESSAGE-----<br>abc</pre>"
            ))
            .message
        );
    }

    #[test]
    fn html_lines_break_at_block_tags_not_inline_ones() {
        for html in [
            "<title>x</title>-----BEGIN PGP MESSAGE-----",
            "<style>p{}</style></head><body>-----BEGIN PGP MESSAGE-----",
            "<table><tr><td>-----BEGIN PGP MESSAGE-----</td></tr></table>",
            "<h3>Note</h3>-----BEGIN PGP MESSAGE-----",
            "text<hr>-----BEGIN PGP MESSAGE-----",
            "<div>&#xa0;&#xA0;-----BEGIN PGP MESSAGE-----</div>",
            "<div>&#8203;-----BEGIN PGP MESSAGE-----</div>",
            "<p>-----BEGIN PGP <b>MESSAGE</b>-----</p>",
        ] {
            assert!(armor(&whole_text(html)).message, "{html}");
        }
        assert!(!armor(&whole_text("<p>see <b>-----BEGIN PGP MESSAGE-----</b></p>")).message);
        assert_eq!(
            whole_text("a &amp; b &#x263A; &bogus; &"),
            "a & b \u{263a} &bogus; &"
        );
    }

    #[test]
    fn positions_finds_every_match() {
        assert_eq!(positions(b"aaa", b"aa").collect::<Vec<_>>(), [0, 1]);
        assert_eq!(positions(b"x/Ey/E", b"/E").collect::<Vec<_>>(), [1, 4]);
        assert_eq!(positions(b"abc", b"").count(), 0);
        assert_eq!(positions(b"", b"a").count(), 0);
    }

    #[test]
    fn lenient_base64_reads_past_damage() {
        assert_eq!(lenient_base64(b"aGVs\r\n.\r\nbG8="), b"hello");
        assert_eq!(lenient_base64(b"aGVsbG8=\r\n-- footer text"), b"hello");
        assert_eq!(lenient_base64(b"aGVsbG"), b"hell");
        assert_eq!(lenient_base64(b"aGVsbA"), b"hell");
        assert!(lenient_base64(b"").is_empty());
    }

    #[test]
    fn tnef_with_rpmsg_is_seen() {
        assert!(tnef_holds_rpmsg(
            &[b"\x78\x9f\x3e\x22 xx".as_slice(), &RPMSG_MAGIC].concat()
        ));
        assert!(!tnef_holds_rpmsg(
            b"\x78\x9f\x3e\x22 I cannot open message.rpmsg"
        ));
        assert!(!tnef_holds_rpmsg(b"\x78\x9f\x3e\x22 rich text body"));
    }

    #[test]
    fn sevenzip_aes_coder_in_the_header() {
        let archive = |header: &[u8]| {
            let mut bytes = vec![0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c, 0, 4, 0, 0, 0, 0];
            bytes.extend_from_slice(&3u64.to_le_bytes()); // the header follows 3 bytes of data
            bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&[0; 4]); // CRC of the next header
            bytes.extend_from_slice(b"\x24\x06\xf1"); // data that looks like part of the coder ID
            bytes.extend_from_slice(header);
            bytes
        };
        assert_eq!(
            sevenzip_encryption(&archive(&[0x01, 0x04, 0x24, 0x06, 0xf1, 0x07, 0x01, 0x00])),
            Some(SevenZip::Encrypted)
        );
        assert_eq!(
            sevenzip_encryption(&archive(&[0x17, 0x06, 0x24, 0x06, 0xf1, 0x07, 0x01, 0x00])),
            Some(SevenZip::Encrypted)
        );
        assert_eq!(
            sevenzip_encryption(&archive(&[0x17, 0x06, 0x21, 0x21, 0x01, 0x00])),
            Some(SevenZip::Hidden)
        );
        assert_eq!(
            sevenzip_encryption(&archive(&[0x01, 0x04, 0x21, 0x21, 0x01, 0x00])),
            None
        );
        assert_eq!(sevenzip_encryption(&archive(&[0x07, 0x01])[..30]), None);
    }

    #[test]
    fn rar5_encryption_blocks() {
        let signature = b"Rar!\x1a\x07\x01\x00".to_vec();
        // Archive encryption block: CRC32, size 3, type 4, flags 0, version 0.
        let encrypted_headers = [signature.clone(), vec![0, 0, 0, 0, 3, 4, 0, 0]].concat();
        assert!(rar5_encrypted(&encrypted_headers));
        // Main block (type 1), then a file block (type 2, flags 0x03) with a
        // 3-byte extra area holding a file encryption record (size 2, type 1),
        // and 2 bytes of data.
        let main = vec![0, 0, 0, 0, 3, 1, 0, 0];
        let file = |record_kind: u8| {
            vec![
                0,
                0,
                0,
                0,
                9,
                2,
                0x03,
                3,
                2,
                0xAA,
                0xBB,
                2,
                record_kind,
                0,
                0xDE,
                0xAD,
            ]
        };
        assert!(rar5_encrypted(
            &[signature.clone(), main.clone(), file(1)].concat()
        ));
        assert!(!rar5_encrypted(
            &[signature.clone(), main.clone(), file(2)].concat()
        ));
        assert!(!rar5_encrypted(&[signature, main].concat()));
        assert!(!rar5_encrypted(b"Rar!\x1a\x07\x01\x00\xff\xff"));
    }

    #[test]
    fn rar4_encryption_flags() {
        let signature = b"Rar!\x1a\x07\x00".to_vec();
        // CRC16, type, flags (LE), size (LE), then the type's own fields.
        let main = |flags: u16| {
            let [low, high] = flags.to_le_bytes();
            vec![0, 0, 0x73, low, high, 13, 0, 0, 0, 0, 0, 0, 0]
        };
        assert!(rar4_encrypted(&[signature.clone(), main(0x0080)].concat()));
        // A file header: long block, 4-byte packed size 2, then 2 data bytes.
        let file = |flags: u16| {
            let [low, high] = (flags | 0x8000).to_le_bytes();
            let mut header = vec![0, 0, 0x74, low, high, 33, 0, 2, 0, 0, 0];
            header.resize(33, 0);
            header.extend_from_slice(&[0xDE, 0xAD]);
            header
        };
        let end = vec![0, 0, 0x7b, 0, 0x40, 7, 0];
        assert!(rar4_encrypted(
            &[
                signature.clone(),
                main(0),
                file(0),
                file(0x0004),
                end.clone()
            ]
            .concat()
        ));
        assert!(!rar4_encrypted(
            &[signature.clone(), main(0), file(0), end.clone()].concat()
        ));
        // A block after the end, a truncated header, a size below 7, and
        // RAR 5's signature are no RAR 4 encryption.
        assert!(!rar4_encrypted(
            &[signature.clone(), main(0), end, file(0x0004)].concat()
        ));
        assert!(!rar4_encrypted(
            &[signature.clone(), vec![0, 0, 0x73]].concat()
        ));
        assert!(!rar4_encrypted(
            &[signature, vec![0, 0, 0x73, 0x80, 0, 3, 0]].concat()
        ));
        assert!(!rar4_encrypted(
            b"Rar!\x1a\x07\x01\x00\x00\x00\x00\x00\x03\x04\x00\x00"
        ));
    }

    #[test]
    fn openpgp_ciphertext_is_told_from_other_gnupg_files() {
        assert!(openpgp_encrypted(&[0xc1, 0x0c, 0x03])); // PKESK, new format
        assert!(openpgp_encrypted(&[0x85, 0x01, 0x0c])); // PKESK, legacy format
        assert!(openpgp_encrypted(&[0xc3, 0x0d])); // SKESK
        assert!(openpgp_encrypted(&[0xd2, 0x40])); // SEIPD
        assert!(openpgp_encrypted(b"\n-----BEGIN PGP MESSAGE-----\n"));
        assert!(!openpgp_encrypted(&[0x99, 0x01, 0x0d])); // public key
        assert!(!openpgp_encrypted(&[0x01, b'g', b'p', b'g'])); // trustdb.gpg
        assert!(!openpgp_encrypted(b""));
    }

    #[test]
    fn zip_members_are_read_within_their_limit() {
        let text = b"line of a report\n".repeat(1000);
        let archive = zip_of(&[
            ("Report.TXT", &text, true),
            ("raw.bin", b"stored bytes", false),
        ]);
        let entries = zip_entries(&archive).expect("a directory");
        let mut spent = InflateCost::default();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name(&archive), b"Report.TXT");
        let inflated = zip_member(&archive, &entries[0], 1 << 20, &mut spent).expect("inflates");
        assert!(matches!(inflated, Cow::Owned(_)));
        assert_eq!(&*inflated, &text[..]);
        assert_eq!(spent.written, text.len());
        assert_eq!(spent.slow_input, 0);
        let stored = zip_member(&archive, &entries[1], 1 << 20, &mut spent).expect("stored");
        assert!(matches!(stored, Cow::Borrowed(b"stored bytes")));
        // A member that claims more than the limit is not read at all; one
        // that inflates past it (its header lying) stops at the limit, and
        // what it wrote is paid for.
        let before = spent;
        assert_eq!(
            zip_member(&archive, &entries[0], 100, &mut spent),
            Err(Unread::TooLarge)
        );
        assert_eq!(spent, before);
        let mut lying = entries[0].clone();
        lying.size = 10;
        assert_eq!(
            zip_member(&archive, &lying, 100, &mut spent),
            Err(Unread::TooLarge)
        );
        assert_eq!(
            spent.written - before.written,
            101,
            "the limit and the byte that shows it is past"
        );
        // Understating the size within the limit does not hide a member.
        assert_eq!(
            zip_member(&archive, &lying, 1 << 20, &mut spent).as_deref(),
            Ok(&text[..])
        );
        // A stored member is limited by the bytes it has, whatever it claims.
        let mut small_claim = entries[1].clone();
        small_claim.size = 0;
        assert_eq!(
            zip_member(&archive, &small_claim, 5, &mut spent),
            Err(Unread::TooLarge)
        );
        // Encrypted, unknown method, or bytes not where the directory says.
        let mut encrypted = entries[1].clone();
        encrypted.flags = 1;
        assert_eq!(
            zip_member(&archive, &encrypted, 1 << 20, &mut spent),
            Err(Unread::Unreadable)
        );
        let mut unknown = entries[1].clone();
        unknown.method = 14;
        assert_eq!(
            zip_member(&archive, &unknown, 1 << 20, &mut spent),
            Err(Unread::Unreadable)
        );
        let mut astray = entries[1].clone();
        astray.local_header = 3;
        assert_eq!(
            zip_member(&archive, &astray, 1 << 20, &mut spent),
            Err(Unread::Unreadable)
        );
        astray.local_header = u64::from(u32::MAX) - 1;
        assert_eq!(
            zip_member(&archive, &astray, 1 << 20, &mut spent),
            Err(Unread::Unreadable)
        );
        assert!(!zip_encrypted(&archive, zip_entries(&archive).as_deref()));
    }

    #[test]
    fn deflate_streams_of_empty_blocks_are_given_up_early() {
        // Empty fixed-Huffman blocks (10 bits each, never the last): a
        // stream that reads and never writes.
        let empty_blocks: Vec<u8> = [0x02, 0x08, 0x20, 0x80, 0x00]
            .iter()
            .cycle()
            .take(1 << 20)
            .copied()
            .collect();
        let mut cost = InflateCost::default();
        assert_eq!(
            inflate(&empty_blocks, 0, 1 << 20, &mut cost),
            Err(Unread::Unreadable)
        );
        assert_eq!(cost.written, 0);
        assert_eq!(cost.slow_input, (MAX_SLOW_CHUNKS + 1) * INFLATE_CHUNK);
        // An incompressible member (zlib stores it in blocks with a 5-byte
        // header each) is read, also when it is exactly the limit; one byte
        // over is not.
        let mut noise = vec![0u8; 3 << 20];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for byte in &mut noise {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *byte = seed as u8;
        }
        let stored = miniz_oxide::deflate::compress_to_vec(&noise, 6);
        let mut cost = InflateCost::default();
        assert_eq!(
            inflate(&stored, noise.len() as u64, noise.len(), &mut cost).as_deref(),
            Ok(&noise[..])
        );
        assert_eq!(cost.slow_input, 0);
        assert_eq!(
            inflate(&stored, 0, noise.len() - 1, &mut cost),
            Err(Unread::TooLarge)
        );
    }

    #[test]
    fn zip_flags() {
        let mut entry = b"PK\x03\x04\x14\x00\x01\x00".to_vec();
        entry.extend_from_slice(&[0; 22]);
        assert!(is_zip(&entry));
        assert!(zip_encrypted(&entry, zip_entries(&entry).as_deref()));
        entry[6] = 0;
        assert!(!zip_encrypted(&entry, zip_entries(&entry).as_deref()));
    }

    #[test]
    fn legacy_office_password() {
        // A Compound File: the header sector, a directory sector whose
        // second entry names `stream` starting at sector 1, then sectors.
        let cfb = |sector_shift: u8, stream: &str, size: u64, sectors: &[Vec<u8>]| {
            let sector_size = 1usize << sector_shift;
            let mut bytes = vec![0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1];
            bytes.resize(sector_size, 0);
            bytes[0x1e] = sector_shift;
            let mut directory = vec![0; sector_size];
            let entry = &mut directory[128..256];
            let name = utf16(stream);
            entry[..name.len()].copy_from_slice(&name);
            entry[0x40..0x42].copy_from_slice(&((name.len() + 2) as u16).to_le_bytes());
            entry[0x42] = 2;
            entry[0x74..0x78].copy_from_slice(&1u32.to_le_bytes());
            entry[0x78..0x80].copy_from_slice(&size.to_le_bytes());
            bytes.extend(directory);
            for sector in sectors {
                let mut sector = sector.clone();
                sector.resize(sector_size, 0);
                bytes.extend(sector);
            }
            bytes
        };
        // Word FIB: wIdent, nFib 0x00C1, unused, lid, pnNext, then the flags.
        let fib = |flags: u16| {
            let mut fib = vec![0xec, 0xa5, 0xc1, 0x00, 0, 0, 0x09, 0x04, 0, 0];
            fib.extend(flags.to_le_bytes());
            fib
        };
        let word = |flags: u16| cfb(9, "WordDocument", 8192, &[fib(flags)]);
        assert!(legacy_office_encrypted(&word(0x0100 | 0x0200)));
        assert!(!legacy_office_encrypted(&word(0x0200)));
        assert!(legacy_office_encrypted(&cfb(
            12,
            "WordDocument",
            8192,
            &[fib(0x0100)]
        )));
        // The same bytes in a sector no directory entry starts a stream at
        // (compressed image data, say) are not a FIB.
        assert!(!legacy_office_encrypted(&cfb(
            9,
            "WordDocument",
            8192,
            &[fib(0), fib(0x0100)]
        )));
        // A stream in the mini stream is not read.
        assert!(!legacy_office_encrypted(&cfb(
            9,
            "WordDocument",
            1000,
            &[fib(0x0100)]
        )));
        // Excel: BOF (type 0x0809, 16 bytes), then FILEPASS (0x002F), after
        // WRITEPROT (0x0086, empty) when both passwords are set.
        let bof = [&[0x09, 0x08, 0x10, 0x00][..], &[0; 16]].concat();
        let workbook = |records: &[u8]| cfb(9, "Workbook", 8192, &[[&bof[..], records].concat()]);
        assert!(legacy_office_encrypted(&workbook(&[
            0x2f, 0x00, 0x36, 0x00
        ])));
        assert!(legacy_office_encrypted(&workbook(&[
            0x86, 0x00, 0x00, 0x00, 0x2f, 0x00, 0x36, 0x00
        ])));
        assert!(!legacy_office_encrypted(&workbook(&[
            0x42, 0x00, 0x02, 0x00
        ])));
        assert!(legacy_office_encrypted(&cfb(
            9,
            "Book",
            8192,
            &[[&bof[..], &[0x2f, 0x00]].concat()]
        )));
        // PowerPoint: the EncryptedSummary stream, or the Current User atom
        // with the encrypted token.
        let mut ppt = cfb(9, "PowerPoint Document", 8192, &[]);
        ppt.extend(utf16("EncryptedSummary"));
        assert!(legacy_office_encrypted(&ppt));
        let mut current_user = cfb(9, "Current User", 8192, &[]);
        current_user.extend([
            0x00, 0x00, 0xf6, 0x0f, 0x20, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0xdf, 0xc4,
            0xd1, 0xf3,
        ]);
        assert!(legacy_office_encrypted(&current_user));
        current_user.truncate(current_user.len() - 4);
        current_user.extend([0x5f, 0xc0, 0x91, 0xe3]);
        assert!(!legacy_office_encrypted(&current_user));
    }

    #[test]
    fn container_sniffers_survive_random_bytes() {
        // A fixed xorshift sequence: the same inputs on every run.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let signatures: [&[u8]; 5] = [
            &[0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1],
            &[0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c],
            b"Rar!\x1a\x07\x01\x00",
            &[
                0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
            ],
            b"PK\x03\x04",
        ];
        let text = b"a line of text\n".repeat(200);
        let archive = zip_of(&[("a.txt", &text, true), ("b.zip", b"PK\x05\x06", false)]);
        for round in 0..4000 {
            // A real archive with a few bytes changed: lengths, offsets and
            // deflate streams that lie.
            let mut damaged = archive.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % damaged.len() as u64) as usize;
                damaged[at] = next() as u8;
            }
            for entry in zip_entries(&damaged).unwrap_or_default() {
                let _ = zip_member(&damaged, &entry, 1 << 16, &mut InflateCost::default());
            }
            let length = (next() % 9000) as usize;
            let mut bytes = signatures[round % signatures.len()].to_vec();
            // Small values are likelier to be taken as lengths and offsets.
            bytes.extend((0..length).map(|_| match next() % 4 {
                0 => 0,
                1 => (next() % 16) as u8,
                _ => next() as u8,
            }));
            if round % 3 == 0 && bytes.len() > 0x20 {
                bytes[0x1e] = if round % 2 == 0 { 9 } else { 12 };
            }
            let _ = legacy_office_encrypted(&bytes);
            let _ = ooxml_encrypted(&bytes);
            let _ = sevenzip_encryption(&bytes);
            let _ = rar5_encrypted(&bytes);
            let _ = rar4_encrypted(&bytes);
            let _ = signed_data_has_content(&bytes);
            let _ = cms_kind(&bytes);
            let _ = zip_encrypted(&bytes, zip_entries(&bytes).as_deref());
            let _ = lenient_base64(&bytes);
            html_text(&String::from_utf8_lossy(&bytes), 16, |_| ());
        }
    }

    #[test]
    fn pdf_and_ooxml() {
        assert!(pdf_encrypted(
            b"%PDF-1.7\n1 0 obj\ntrailer << /Encrypt 5 0 R >>"
        ));
        assert!(!pdf_encrypted(b"%PDF-1.7\ntrailer << /Root 1 0 R >>"));
        assert!(pdf_encrypted(
            b"%PDF-1.5\n<</Type/XRef/Size 9/Encrypt 8 0 R/W[1 2 1]>>"
        ));
        assert!(pdf_encrypted(
            b"%PDF-1.4\ntrailer\n<</Encrypt<</Filter/Standard>>>>"
        ));
        assert!(!pdf_encrypted(
            b"%PDF-1.7\nBT (Set the /Encrypt key to protect it) Tj ET\ntrailer << /Root 1 0 R >>"
        ));
        assert!(!pdf_encrypted(b"%PDF-1.7\n<< /EncryptMetadata false >>"));
        let mut cfb = vec![0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1];
        for name in ["EncryptionInfo", "EncryptedPackage"] {
            cfb.extend(name.encode_utf16().flat_map(u16::to_le_bytes));
        }
        assert!(ooxml_encrypted(&cfb));
        assert!(!ooxml_encrypted(&cfb[..20]));
    }
}
