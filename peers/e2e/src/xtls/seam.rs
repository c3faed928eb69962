//! XTLS's wire description: TLS records (RFC 8446 §5.1: type, version, length, fragment),
//! base64 in `<data/>` inside `<iq type='set'/>` stanzas. A `<data/>` holding only
//! application-data records (type 23) carries the conversation; one with a handshake (22) or
//! change-cipher-spec (20) record is the handshake, whatever rides with it. TLS 1.3 encrypts
//! the later handshake messages as application data too; without keys they look alike, so the
//! first flight of each side counts as handshake by the plaintext records beside them.

use core::ops::Range;

use minidom::Element;

use super::NS_XTLS;
use crate::wire::{Ciphertext, Wire, base64_text, set_base64};
use crate::xml::{ElementExt, NS_CLIENT, el, text_el};

/// RFC 8446 §5.1 `ContentType.application_data`.
const APPLICATION_DATA: u8 = 23;

/// XTLS.
#[derive(Debug)]
pub struct XtlsWire;

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
