//! Codecs more than one part of the bench speaks: OpenPGP's ASCII armour (RFC 4880 §6), which
//! XEP-0027 carries without its headers and which an attacker re-encodes after changing the
//! packets inside (anyone can recompute the CRC-24).

use base64::Engine as _;

use crate::E2eError;

/// RFC 4880 §6.2, as XEP-0027 §1 carries it: "US-ASCII armored output with the headers removed": the armour's base64
/// lines (64 columns, RFC 4880 §6.3) and its `=` CRC-24 checksum line, without the
/// `-----BEGIN`/`-----END` lines and the armour headers.
pub fn armor_body(bytes: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::new();
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    let crc = crc24(bytes).to_be_bytes();
    out.push('=');
    out.push_str(&base64::engine::general_purpose::STANDARD.encode(&crc[1..]));
    out
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
            let c = base64::engine::general_purpose::STANDARD
                .decode(&l[1..])
                .map_err(|e| bad(format!("checksum: {e}")))?;
            lines.pop();
            Some(c)
        }
        _ => None,
    };
    let joined: String = lines.concat();
    if joined.is_empty() {
        return Err(E2eError::Missing { what: "armor" });
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(joined).map_err(|e| bad(e.to_string()))?;
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
