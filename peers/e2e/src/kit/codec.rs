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
