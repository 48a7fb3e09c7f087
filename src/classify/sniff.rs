//! Byte-level sniffers for protected content: CMS content types, OpenPGP
//! armor, encrypted ZIP entries, encrypted PDFs and encrypted OOXML.
//!
//! Pure functions over decoded part bodies. Each reads only a bounded
//! prefix or does a linear scan, so hostile input costs linear time.

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
/// header; a sentence that mentions the marker mid-line does not count.
pub(super) fn armor(text: &str) -> Armor {
    let mut found = Armor::default();
    for line in text.lines() {
        let line =
            line.trim_start_matches(|c: char| c.is_whitespace() || c == '>' || c == '\u{a0}');
        if line.starts_with("-----BEGIN PGP MESSAGE") {
            found.message = true;
        } else if line.starts_with("-----BEGIN PGP SIGNED MESSAGE") {
            found.signed = true;
        }
    }
    found
}

/// Armor in bytes that may not be UTF-8 (binary attachments).
pub(super) fn armor_bytes(bytes: &[u8]) -> Armor {
    armor(&String::from_utf8_lossy(bytes))
}

/// Whether an OpenPGP file holds a key (public or secret, binary or
/// armored) rather than a message: a key is informational, and a `.gpg`
/// name alone does not make it ciphertext.
pub(super) fn openpgp_key(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(512)];
    let text = String::from_utf8_lossy(head);
    let text = text.trim_start();
    if text.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK")
        || text.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK")
    {
        return true;
    }
    // NOTE: RFC 9580 §4.2: the first octet has bit 7 set; bit 6 chooses the
    // new format (tag in bits 0-5) or the legacy one (tag in bits 2-5).
    let Some(&first) = bytes.first() else {
        return false;
    };
    if first & 0x80 == 0 {
        return false;
    }
    let tag = if first & 0x40 != 0 {
        first & 0x3f
    } else {
        (first >> 2) & 0x0f
    };
    // Secret key, public key, secret subkey, public subkey.
    matches!(tag, 5 | 6 | 7 | 14)
}

/// Reduces HTML to text lines so armor split by `<br>` or wrapped in
/// `<pre>` is seen line by line.
pub(super) fn html_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut in_tag = false;
    let mut tag = String::new();
    for c in html.chars() {
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
                if matches!(
                    name.as_str(),
                    "br" | "p" | "div" | "pre" | "tr" | "li" | "blockquote"
                ) {
                    text.push('\n');
                }
            }
            (true, c) => {
                if tag.len() < 32 {
                    tag.push(c);
                }
            }
            (false, c) => text.push(c),
        }
    }
    text.replace("&nbsp;", " ")
        .replace("&#160;", " ")
        .replace("&gt;", ">")
}

/// True when any entry of a ZIP archive is encrypted: general-purpose flag
/// bit 0 (traditional or AES, APPNOTE 4.4.4) or bit 6 (strong encryption).
/// Reads the central directory; falls back to walking local headers when
/// the archive is truncated.
pub(super) fn zip_encrypted(bytes: &[u8]) -> bool {
    const ENCRYPTED: u16 = 0x0001 | 0x0040;
    if let Some(entries) = central_directory_flags(bytes) {
        return entries.iter().any(|flags| flags & ENCRYPTED != 0);
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

/// The general-purpose flags of every central directory entry, or `None`
/// when no consistent end-of-central-directory record is found.
fn central_directory_flags(bytes: &[u8]) -> Option<Vec<u16>> {
    let search_from = bytes.len().saturating_sub(65_557);
    let tail = &bytes[search_from..];
    let eocd = search_from
        + tail
            .windows(4)
            .rposition(|window| window == b"PK\x05\x06")?;
    let record = bytes.get(eocd..eocd + 22)?;
    let entries = usize::from(u16::from_le_bytes([record[10], record[11]]));
    let mut offset = u32::from_le_bytes([record[16], record[17], record[18], record[19]]) as usize;
    let mut flags = Vec::with_capacity(entries.min(4096));
    for _ in 0..entries {
        let header = bytes.get(offset..offset + 46)?;
        if &header[..4] != b"PK\x01\x02" {
            return None;
        }
        flags.push(u16::from_le_bytes([header[8], header[9]]));
        let name_len = usize::from(u16::from_le_bytes([header[28], header[29]]));
        let extra_len = usize::from(u16::from_le_bytes([header[30], header[31]]));
        let comment_len = usize::from(u16::from_le_bytes([header[32], header[33]]));
        offset += 46 + name_len + extra_len + comment_len;
    }
    Some(flags)
}

/// True for a ZIP archive.
pub(super) fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

/// True for a PDF whose trailer or cross-reference stream names an
/// `/Encrypt` dictionary.
pub(super) fn pdf_encrypted(bytes: &[u8]) -> bool {
    is_pdf(bytes) && find(bytes, b"/Encrypt").is_some()
}

/// True for a PDF (the header may follow a little junk, as readers allow).
pub(super) fn is_pdf(bytes: &[u8]) -> bool {
    find(&bytes[..bytes.len().min(1024)], b"%PDF-").is_some()
}

/// True for a Compound File (OLE2) holding the `EncryptionInfo` and
/// `EncryptedPackage` streams of an encrypted OOXML document
/// (MS-OFFCRYPTO §2.3.4). Directory entry names are UTF-16LE.
pub(super) fn ooxml_encrypted(bytes: &[u8]) -> bool {
    const CFB: [u8; 8] = [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1];
    if !bytes.starts_with(&CFB) {
        return false;
    }
    let utf16 =
        |name: &str| -> Vec<u8> { name.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    find(bytes, &utf16("EncryptedPackage")).is_some()
        && find(bytes, &utf16("EncryptionInfo")).is_some()
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
    fn armor_lines_not_mentions() {
        assert!(armor("x\n  > -----BEGIN PGP MESSAGE-----\n").message);
        assert!(armor("\u{a0}-----BEGIN PGP MESSAGE, PART 1/2-----").message);
        assert!(!armor("see -----BEGIN PGP MESSAGE----- above").message);
        assert!(armor("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256").signed);
        assert!(
            armor(&html_text(
                "<p>hi</p><pre>-----BEGIN PGP MESSAGE-----<br>abc</pre>"
            ))
            .message
        );
    }

    #[test]
    fn zip_flags() {
        let mut entry = b"PK\x03\x04\x14\x00\x01\x00".to_vec();
        entry.extend_from_slice(&[0; 22]);
        assert!(is_zip(&entry));
        assert!(zip_encrypted(&entry));
        entry[6] = 0;
        assert!(!zip_encrypted(&entry));
    }

    #[test]
    fn pdf_and_ooxml() {
        assert!(pdf_encrypted(
            b"%PDF-1.7\n1 0 obj\ntrailer << /Encrypt 5 0 R >>"
        ));
        assert!(!pdf_encrypted(b"%PDF-1.7\ntrailer << /Root 1 0 R >>"));
        let mut cfb = vec![0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1];
        for name in ["EncryptionInfo", "EncryptedPackage"] {
            cfb.extend(name.encode_utf16().flat_map(u16::to_le_bytes));
        }
        assert!(ooxml_encrypted(&cfb));
        assert!(!ooxml_encrypted(&cfb[..20]));
    }
}
