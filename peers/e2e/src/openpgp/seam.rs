//! The OpenPGP protocols' wire descriptions: XEP-0027 §3's armoured `<x xmlns='jabber:x:encrypted'/>`
//! (and §4's signed presence, which is not the conversation), and XEP-0373 §3.1's base64
//! `<openpgp/>`. The encrypted content is the encrypted data packet (RFC 4880 §5.13), past the
//! session-key packets.

use core::ops::Range;

use super::ox::NS as NS_OX;
use super::xep0027::{NS_ENCRYPTED, NS_SIGNED};
use crate::wire::{ElementWire, TextEncoding};

/// Where the encrypted data in a sequence of OpenPGP packets sits (RFC 4880 §4.2 packet
/// headers, old and new format): the body of the first Symmetrically Encrypted Integrity
/// Protected Data packet (tag 18, past its version octet) or Symmetrically Encrypted Data
/// packet (tag 9). `None` when there is none or a header does not parse (a partial body
/// length, §4.2.2.4, is not followed: the packet's first part is taken).
fn encrypted_data(bytes: &[u8]) -> Option<Range<usize>> {
    let mut at = 0;
    while at < bytes.len() {
        let first = bytes[at];
        if first & 0x80 == 0 {
            return None;
        }
        let (tag, header, len) = if first & 0x40 != 0 {
            // New format: tag in the low six bits, then a one-, two- or five-octet length.
            let tag = first & 0x3f;
            let l0 = usize::from(*bytes.get(at + 1)?);
            match l0 {
                0..=191 => (tag, 2, l0),
                192..=223 => (tag, 3, ((l0 - 192) << 8) + usize::from(*bytes.get(at + 2)?) + 192),
                255 => {
                    let b = bytes.get(at + 2..at + 6)?;
                    (tag, 6, u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                }
                _ => (tag, 2, 1usize << (l0 & 0x1f)),
            }
        } else {
            // Old format: tag in bits 5..2, length type in bits 1..0.
            let tag = (first >> 2) & 0x0f;
            match first & 0x03 {
                0 => (tag, 2, usize::from(*bytes.get(at + 1)?)),
                1 => {
                    let b = bytes.get(at + 1..at + 3)?;
                    (tag, 3, usize::from(u16::from_be_bytes([b[0], b[1]])))
                }
                2 => {
                    let b = bytes.get(at + 1..at + 5)?;
                    (tag, 5, u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                }
                _ => (tag, 1, bytes.len().saturating_sub(at + 1)),
            }
        };
        let start = at + header;
        let end = start.checked_add(len)?.min(bytes.len());
        match tag {
            18 if end > start + 1 => return Some(start + 1..end),
            9 if end > start => return Some(start..end),
            _ => at = end.max(at + 1),
        }
    }
    None
}

/// The encrypted data packet's body, or all of the bytes when there is none.
fn encrypted_content(bytes: &[u8]) -> Range<usize> {
    encrypted_data(bytes).unwrap_or(0..bytes.len())
}

/// XEP-0027.
pub(super) static PGP: ElementWire = ElementWire {
    element: ("x", NS_ENCRYPTED),
    text_at: &[],
    encoding: TextEncoding::Armour,
    what: "the armoured OpenPGP message (CRC-24 recomputed)",
    content: encrypted_content,
    labels: &[(NS_ENCRYPTED, "PGP encrypted"), (NS_SIGNED, "PGP signed")],
};

/// OX (XEP-0373/0374).
pub(super) static OX: ElementWire = ElementWire {
    element: ("openpgp", NS_OX),
    text_at: &[],
    encoding: TextEncoding::Base64,
    what: "the OpenPGP message",
    content: encrypted_content,
    labels: &[(NS_OX, "OX openpgp")],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_encrypted_packet_past_key_packets() {
        // A new-format PKESK (tag 1, 3 bytes), then a SEIPD (tag 18, version 1, 4 bytes).
        let packets = [0xc1, 3, 9, 9, 9, 0xd2, 5, 1, 0xa, 0xb, 0xc, 0xd];
        assert_eq!(encrypted_data(&packets), Some(8..12));
        // Old format: a SED (tag 9) with a one-octet length.
        assert_eq!(encrypted_data(&[0x80 | 9 << 2, 2, 7, 7]), Some(2..4));
        assert_eq!(encrypted_data(&[0x00, 1, 2]), None);
        assert_eq!(encrypted_data(&[0xc1, 200]), None);
    }
}
