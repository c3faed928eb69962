//! The text encodings engines put binary data in: base64 (RFC 4648 §4), lower-case hex, and
//! the 64-column base64 of textual armour (RFC 7468 PEM; OpenPGP's armour body, RFC 4880 §6.3).
//!
//! Decoding takes text from the network: a bad encoding is an [`E2eError::Malformed`] naming
//! the field, never a panic.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::E2eError;

/// Base64 (RFC 4648 §4, with padding).
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Base64 from untrusted text: white space around it is ignored, none inside.
pub fn unb64(what: &'static str, text: &str) -> Result<Vec<u8>, E2eError> {
    decode(what, text.trim())
}

/// Base64 that may be line-wrapped (XML Schema `base64Binary`, which XML Signature and OpenPGP
/// implementations wrap at 64 or 76 columns): every XML white space character (space, tab,
/// CR, LF; XML 1.0 `S`) is dropped first, wherever it stands.
pub fn unb64_wrapped(what: &'static str, text: &str) -> Result<Vec<u8>, E2eError> {
    let compact: String = text.chars().filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n')).collect();
    decode(what, &compact)
}

fn decode(what: &'static str, text: &str) -> Result<Vec<u8>, E2eError> {
    STANDARD.decode(text).map_err(|e| E2eError::Malformed { what, detail: e.to_string() })
}

/// Lower-case hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string, its separators (spaces, colons) ignored, either case: `None` when
/// anything else is in it, or the digits are odd in number, or there are none.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text
        .chars()
        .filter(|c| !matches!(c, ' ' | ':'))
        .map(|c| c.to_digit(16).and_then(|d| u8::try_from(d).ok()))
        .collect::<Option<_>>()?;
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return None;
    }
    Some(digits.chunks(2).map(|p| p.iter().fold(0, |acc, d| acc * 16 + d)).collect())
}

/// The base64 of `bytes` in lines of 64 characters, each ending in `\n`: the body of a PEM
/// block (RFC 7468 §2) and of an OpenPGP armour (RFC 4880 §6.3).
pub fn b64_lines(bytes: &[u8]) -> String {
    let encoded = b64(bytes);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 64 + 1);
    for chunk in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out
}

/// RFC 7468 textual encoding: `-----BEGIN label-----`, the base64 lines, `-----END label-----`.
pub fn pem(label: &str, der: &[u8]) -> String {
    format!("-----BEGIN {label}-----\n{}-----END {label}-----\n", b64_lines(der))
}

/// RFC 4880 §6.2, as XEP-0027 §1 carries it: "US-ASCII armored output with the headers removed": the armour's base64
/// lines (64 columns, RFC 4880 §6.3) and its `=` CRC-24 checksum line, without the
/// `-----BEGIN`/`-----END` lines and the armour headers.
pub fn armor_body(bytes: &[u8]) -> String {
    let crc = crc24(bytes).to_be_bytes();
    format!("{}={}", b64_lines(bytes), b64(&crc[1..]))
}

/// Decodes a header-less armour body: whitespace around lines ignored, the
/// checksum line (`=XXXX`, RFC 4880 §6.1 CRC-24) checked when present.
pub fn dearmor_body(text: &str) -> Result<Vec<u8>, E2eError> {
    let bad = |detail: String| E2eError::Malformed { what: "armor", detail };
    let mut lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    // A whole armour (headers kept) is accepted too: some clients sent it.
    if lines.first().is_some_and(|l| l.starts_with("-----BEGIN ")) {
        let end =
            lines.iter().position(|l| l.starts_with("-----END ")).ok_or_else(|| bad("no END line".into()))?;
        lines.truncate(end);
        lines.remove(0);
        // Armour headers are `Key: value` lines before the body.
        while lines.first().is_some_and(|l| l.contains(": ")) {
            lines.remove(0);
        }
    }
    let checksum = match lines.last() {
        Some(l) if l.len() == 5 && l.starts_with('=') => {
            let c = STANDARD.decode(&l[1..]).map_err(|e| bad(format!("checksum: {e}")))?;
            lines.pop();
            Some(c)
        }
        _ => None,
    };
    let joined: String = lines.concat();
    if joined.is_empty() {
        return Err(E2eError::Missing { what: "armor" });
    }
    let bytes = STANDARD.decode(joined).map_err(|e| bad(e.to_string()))?;
    if let Some(c) = checksum
        && c.as_slice() != &crc24(&bytes).to_be_bytes()[1..]
    {
        return Err(E2eError::Rejected { reason: "bad-checksum", detail: "armour CRC-24 mismatch".into() });
    }
    Ok(bytes)
}

/// RFC 4880 §6.1 CRC-24.
fn crc24(data: &[u8]) -> u32 {
    const INIT: u32 = 0x00B7_04CE;
    const POLY: u32 = 0x0186_4CFB;
    let mut crc = INIT;
    for &b in data {
        crc ^= u32::from(b) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x0100_0000 != 0 {
                crc ^= POLY;
            }
        }
    }
    crc & 0x00FF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_names_what_is_bad() {
        assert_eq!(b64(b"hello"), "aGVsbG8=");
        assert_eq!(unb64("x", " aGVsbG8=\n").unwrap(), b"hello");
        assert!(matches!(unb64("x", "aGVs bG8="), Err(E2eError::Malformed { what: "x", .. })));
        assert_eq!(unb64_wrapped("x", "aGVs\r\n\tbG8=").unwrap(), b"hello");
        assert!(matches!(unb64_wrapped("y", "aGVs*bG8="), Err(E2eError::Malformed { what: "y", .. })));
        assert_eq!(unb64_wrapped("x", "").unwrap(), b"");
    }

    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab]), "000fab");
    }

    #[test]
    fn pem_wraps_at_64_columns() {
        let text = pem("THING", &[0u8; 60]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN THING-----"));
        assert_eq!(lines.last(), Some(&"-----END THING-----"));
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.len(), 4);
        assert_eq!(pem("E", &[]), "-----BEGIN E-----\n-----END E-----\n");
    }
}
