//! The OpenPGP protocols' wire descriptions: XEP-0027 §3's armoured `<x xmlns='jabber:x:encrypted'/>`
//! (and §4's signed presence, which is not the conversation), and XEP-0373 §3.1's base64
//! `<openpgp/>`. The encrypted content is the encrypted data packet (RFC 4880 §5.13), past the
//! session-key packets.

use core::ops::Range;

use minidom::Element;

use super::ox::NS as NS_OX;
use super::xep0027::{NS_ENCRYPTED, NS_SIGNED};
use crate::codec::{armor_body, dearmor_body};
use crate::wire::{
    Ciphertext, Wire, base64_text, find, find_mut, is_message, replace_with_body, set_base64, set_text,
};

fn packets(bytes: Vec<u8>, what: &'static str) -> Ciphertext {
    let content = encrypted_data(&bytes).unwrap_or(0..bytes.len());
    Ciphertext { bytes, content, what }
}

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

/// XEP-0027.
#[derive(Debug)]
pub struct PgpWire;

impl Wire for PgpWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        &[(NS_ENCRYPTED, "PGP encrypted"), (NS_SIGNED, "PGP signed")]
    }

    fn carries_conversation(&self, stanza: &Element) -> bool {
        is_message(stanza) && find(stanza, "x", NS_ENCRYPTED).is_some()
    }

    fn ciphertext(&self, stanza: &Element) -> Option<Ciphertext> {
        let bytes = dearmor_body(&find(stanza, "x", NS_ENCRYPTED)?.text()).ok()?;
        Some(packets(bytes, "the armoured OpenPGP message (CRC-24 recomputed)"))
    }

    fn set_ciphertext(&self, stanza: &mut Element, bytes: &[u8]) -> bool {
        match find_mut(stanza, "x", NS_ENCRYPTED) {
            Some(x) => {
                set_text(x, armor_body(bytes));
                true
            }
            None => false,
        }
    }

    fn strip_encryption(&self, stanza: &mut Element, body: &str) -> bool {
        is_message(stanza) && replace_with_body(stanza, "x", NS_ENCRYPTED, body)
    }
}

/// OX (XEP-0373/0374).
#[derive(Debug)]
pub struct OxWire;

impl Wire for OxWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        &[(NS_OX, "OX openpgp")]
    }

    fn carries_conversation(&self, stanza: &Element) -> bool {
        is_message(stanza) && find(stanza, "openpgp", NS_OX).is_some()
    }

    fn ciphertext(&self, stanza: &Element) -> Option<Ciphertext> {
        Some(packets(base64_text(find(stanza, "openpgp", NS_OX)?)?, "the OpenPGP message"))
    }

    fn set_ciphertext(&self, stanza: &mut Element, bytes: &[u8]) -> bool {
        match find_mut(stanza, "openpgp", NS_OX) {
            Some(e) => {
                set_base64(e, bytes);
                true
            }
            None => false,
        }
    }

    fn strip_encryption(&self, stanza: &mut Element, body: &str) -> bool {
        is_message(stanza) && replace_with_body(stanza, "openpgp", NS_OX, body)
    }
}

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
