//! OTR's wire description: everything travels in `<body/>` text (XEP-0364). Data Messages
//! (§"Data Message") are armoured as `?OTR:…`; their encrypted message is a DATA field past
//! the header, flags, key ids, next D-H key and counter. Query, Error and AKE messages are the
//! protocol's own plumbing; plain text (tagged or not) is the conversation in clear.

use minidom::Element;

use super::wire::{DATA, Reader, Text, armor, classify, without_newest};
use crate::wire::{Ciphertext, Wire, Withdrawn, is_message, set_body};
use crate::xml::NS_CLIENT;

/// OTR v3.
#[derive(Debug)]
pub struct OtrWire;

fn body(stanza: &Element) -> Option<&Element> {
    if !is_message(stanza) {
        return None;
    }
    stanza.get_child("body", NS_CLIENT)
}

/// The decoded Data Message in a body, if it is one.
fn data_message(stanza: &Element) -> Option<Vec<u8>> {
    match classify(&body(stanza)?.text()).ok()? {
        Text::Encoded(bytes) if bytes.get(2) == Some(&DATA) => Some(bytes),
        _ => None,
    }
}

/// Where a Data Message's encrypted message sits: past the protocol version (SHORT), type
/// (BYTE), instance tags (INT, INT), flags (BYTE), key ids (INT, INT), next D-H key (MPI)
/// and top half of the counter (CTR, 8 bytes), inside its DATA field.
fn encrypted_message(bytes: &[u8]) -> Option<core::ops::Range<usize>> {
    let mut r = Reader::new("OTR Data Message", bytes);
    r.take(2 + 1 + 4 + 4 + 1 + 4 + 4).ok()?;
    r.data().ok()?;
    r.take(8).ok()?;
    let len = r.int().ok()? as usize;
    let start = r.position();
    r.take(len).ok()?;
    Some(start..start + len)
}

impl Wire for OtrWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        &[(super::NS_OTR, "OTR")]
    }

    fn carries_conversation(&self, stanza: &Element) -> bool {
        match body(stanza).map(|b| classify(&b.text())) {
            Some(Ok(Text::Encoded(bytes))) => bytes.get(2) == Some(&DATA),
            Some(Ok(Text::Plain { .. })) => true,
            _ => false,
        }
    }

    fn ciphertext(&self, stanza: &Element) -> Option<Ciphertext> {
        let bytes = data_message(stanza)?;
        let content = encrypted_message(&bytes)?;
        Some(Ciphertext { bytes, content, what: "the OTR Data Message" })
    }

    fn set_ciphertext(&self, stanza: &mut Element, bytes: &[u8]) -> bool {
        if data_message(stanza).is_none() {
            return false;
        }
        set_body(stanza, &armor(bytes))
    }

    /// Any OTR message (a Query, an AKE step, a Data Message, a tagged plaintext) gives way to
    /// the plain body; untagged plain text has no OTR to strip.
    fn strip_encryption(&self, stanza: &mut Element, body_text: &str) -> bool {
        let otr = match body(stanza).map(|b| classify(&b.text())) {
            Some(Ok(Text::Plain { tagged, .. })) => !tagged.is_empty(),
            Some(Ok(_)) => true,
            Some(Err(_)) | None => false,
        };
        otr && set_body(stanza, body_text)
    }

    /// The newest version out of a Query Message or a whitespace tag (§"OTR Query Messages":
    /// Alice's message says "what versions of OTR she is willing to use with Bob"). We offer
    /// version 3 alone, so nothing is left: "?OTRv?".
    fn withdraw_newest(&self, stanza: &mut Element) -> Option<Withdrawn> {
        let (text, removed, left, offer) = without_newest(&body(stanza)?.text())?;
        if !set_body(stanza, &text) {
            return None;
        }
        let left = match left.as_slice() {
            [] => "no version at all".to_owned(),
            [v] => format!("version {v}"),
            vs => format!("versions {}", vs.iter().map(u8::to_string).collect::<Vec<_>>().join(", ")),
        };
        Some(Withdrawn { removed: format!("OTR version {removed} from {offer}"), left })
    }

    fn forgeable_from_recording(&self, recording: &[(String, String)]) -> Option<(usize, usize)> {
        Some(super::forgeable_by_anyone(recording))
    }
}
