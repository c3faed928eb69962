//! XTLS's wire description: TLS records (RFC 8446 §5.1: type, version, length, fragment),
//! base64 in `<data/>` inside `<iq type='set'/>` stanzas. A `<data/>` holding only
//! application-data records (type 23) carries the conversation; one with a handshake (22) or
//! change-cipher-spec (20) record is the handshake, whatever rides with it. TLS 1.3 encrypts
//! the later handshake messages as application data too; without keys they look alike, so the
//! first flight of each side counts as handshake by the plaintext records beside them.

use core::ops::Range;

use minidom::Element;

use super::NS_XTLS;
use crate::wire::{Ciphertext, Wire, Withdrawn, base64_text, set_base64};
use crate::xml::{ElementExt, NS_CLIENT, el, text_el};

/// RFC 8446 §5.1 `ContentType.application_data`.
const APPLICATION_DATA: u8 = 23;

/// RFC 8446 §5.1 `ContentType.handshake`.
const HANDSHAKE: u8 = 22;

/// RFC 8446 §4 `HandshakeType.client_hello`.
const CLIENT_HELLO: u8 = 1;

/// XTLS.
#[derive(Debug)]
pub struct XtlsWire;

/// The TLS 1.3 cipher suites by their RFC 8446 §B.4 names.
fn suite_name(suite: [u8; 2]) -> String {
    match suite {
        [0x13, 0x01] => "TLS_AES_128_GCM_SHA256".to_owned(),
        [0x13, 0x02] => "TLS_AES_256_GCM_SHA384".to_owned(),
        [0x13, 0x03] => "TLS_CHACHA20_POLY1305_SHA256".to_owned(),
        [0x13, 0x04] => "TLS_AES_128_CCM_SHA256".to_owned(),
        [0x13, 0x05] => "TLS_AES_128_CCM_8_SHA256".to_owned(),
        [a, b] => format!("cipher suite 0x{a:02x}{b:02x}"),
    }
}

/// Takes the first (the client's preferred) cipher suite out of the ClientHello that starts
/// `fragment`, a handshake record's fragment, when another remains (RFC 8446 §4.1.2:
/// `cipher_suites` is "a list of the symmetric cipher options supported by the client …, in
/// descending order of client preference"). The suite list's length, the handshake message's
/// length and the fragment shrink by two bytes, so the server still parses it. Returns the
/// suite removed and those left.
fn without_preferred_suite(fragment: &mut Vec<u8>) -> Option<([u8; 2], Vec<[u8; 2]>)> {
    // Handshake: msg_type (1), length (3); ClientHello: legacy_version (2), random (32),
    // legacy_session_id <0..32> (1 + n), cipher_suites <2..2^16-2> (2 + n).
    if *fragment.first()? != CLIENT_HELLO {
        return None;
    }
    let length = usize::from(*fragment.get(1)?) << 16 | usize::from(*fragment.get(2)?) << 8 | usize::from(*fragment.get(3)?);
    if fragment.len() < 4 + length {
        return None;
    }
    let session_id = 4 + 2 + 32;
    let suites_at = session_id + 1 + usize::from(*fragment.get(session_id)?);
    let suites_len = usize::from(u16::from_be_bytes([*fragment.get(suites_at)?, *fragment.get(suites_at + 1)?]));
    let suites = fragment.get(suites_at + 2..suites_at + 2 + suites_len)?;
    if suites_len < 4 || suites_len % 2 != 0 || suites_at + 2 + suites_len > 4 + length {
        return None;
    }
    let all: Vec<[u8; 2]> = suites.chunks_exact(2).map(|c| [c[0], c[1]]).collect();
    let first = all[0];
    fragment.drain(suites_at + 2..suites_at + 4);
    let new_length = u32::try_from(length - 2).ok()?.to_be_bytes();
    fragment[1..4].copy_from_slice(&new_length[1..]);
    fragment[suites_at..suites_at + 2].copy_from_slice(&u16::try_from(suites_len - 2).ok()?.to_be_bytes());
    Some((first, all[1..].to_vec()))
}

fn data(stanza: &Element) -> Option<&Element> {
    if !stanza.is("iq", NS_CLIENT) || stanza.attr("type") != Some("set") {
        return None;
    }
    stanza.get_child("data", NS_XTLS)
}

/// The records in `bytes`: their content types and where their fragments sit. `None` when the
/// bytes are not whole records.
fn records(bytes: &[u8]) -> Option<Vec<(u8, Range<usize>)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let header = bytes.get(at..at + 5)?;
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let fragment = at + 5..at + 5 + len;
        bytes.get(fragment.clone())?;
        out.push((header[0], fragment.clone()));
        at = fragment.end;
    }
    Some(out)
}

impl Wire for XtlsWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        &[(NS_XTLS, "XTLS")]
    }

    fn carries_conversation(&self, stanza: &Element) -> bool {
        let Some(bytes) = data(stanza).and_then(base64_text) else { return false };
        records(&bytes).is_some_and(|r| !r.is_empty() && r.iter().all(|(t, _)| *t == APPLICATION_DATA))
    }

    /// The last application-data record's encrypted fragment (what a flipped bit breaks).
    fn ciphertext(&self, stanza: &Element) -> Option<Ciphertext> {
        let bytes = base64_text(data(stanza)?)?;
        let content = records(&bytes)?.into_iter().rev().find(|(t, _)| *t == APPLICATION_DATA)?.1;
        Some(Ciphertext { bytes, content, what: "the TLS records" })
    }

    fn set_ciphertext(&self, stanza: &mut Element, bytes: &[u8]) -> bool {
        if data(stanza).is_none() {
            return false;
        }
        match stanza.get_child_mut("data", NS_XTLS) {
            Some(d) => {
                set_base64(d, bytes);
                true
            }
            None => false,
        }
    }

    /// The client's preferred cipher suite out of the ClientHello a record stanza carries (TLS
    /// is "upgradable" by what the ClientHello offers, RFC 8446 §4.1.2), the record's length
    /// rewritten: the server then picks the next suite. TLS 1.3's Finished messages are MACs
    /// over the whole transcript, the ClientHello as each side saw it (RFC 8446 §4.4.4).
    fn withdraw_newest(&self, stanza: &mut Element) -> Option<Withdrawn> {
        let mut bytes = base64_text(data(stanza)?)?;
        let (removed, left) = records(&bytes)?.into_iter().filter(|(kind, _)| *kind == HANDSHAKE).find_map(
            |(_, fragment)| {
                let mut hello = bytes[fragment.clone()].to_vec();
                let withdrawn = without_preferred_suite(&mut hello)?;
                // The record's length (RFC 8446 §5.1), just before its fragment.
                let len = u16::try_from(hello.len()).ok()?.to_be_bytes();
                bytes[fragment.start - 2..fragment.start].copy_from_slice(&len);
                bytes.splice(fragment, hello);
                Some(withdrawn)
            },
        )?;
        let d = stanza.get_child_mut("data", NS_XTLS)?;
        set_base64(d, &bytes);
        let left: Vec<String> = left.into_iter().map(suite_name).collect();
        Some(Withdrawn {
            removed: format!("{} from the TLS ClientHello's cipher suites", suite_name(removed)),
            left: left.join(", "),
        })
    }

    /// A tunnel cannot be stripped from inside: the record stanza becomes a plain message from
    /// the same sender to the same recipient, so no tunnel forms.
    fn strip_encryption(&self, stanza: &mut Element, body: &str) -> bool {
        if data(stanza).is_none() {
            return false;
        }
        let mut message =
            el("message", NS_CLIENT).with("type", "chat").child(text_el("body", NS_CLIENT, body));
        for attr in ["from", "to", "id"] {
            if let Some(v) = stanza.attr(attr) {
                message.set(attr, v);
            }
        }
        *stanza = message;
        true
    }
}
