//! RFC 3923's wire description: the `<e2e/>` element (§4) carrying base64 CMS, enveloped
//! (RFC 5652 §6) around the signed CPIM message; the encrypted content is the
//! EnvelopedData's `encryptedContent`.

use cms::content_info::ContentInfo;
use cms::enveloped_data::EnvelopedData;
use der::{Decode, Encode};
use minidom::Element;

use super::NS_E2E;
use crate::wire::{Ciphertext, Wire, base64_text, find, find_mut, is_message, replace_with_body, set_base64};

/// RFC 3923.
#[derive(Debug)]
pub struct SmimeWire;

/// Where the EnvelopedData's encrypted content sits in the DER (all of it when it is not an
/// EnvelopedData).
fn encrypted_content(der_bytes: &[u8]) -> core::ops::Range<usize> {
    let content = ContentInfo::from_der(der_bytes)
        .ok()
        .and_then(|ci| ci.content.to_der().ok())
        .and_then(|inner| EnvelopedData::from_der(&inner).ok())
        .and_then(|env| env.encrypted_content.encrypted_content)
        .map(|octets| octets.as_bytes().to_vec());
    match content {
        // The octets are the last part of the EnvelopedData that is this long and random.
        Some(c) if !c.is_empty() && c.len() <= der_bytes.len() => der_bytes
            .windows(c.len())
            .rposition(|w| w == c.as_slice())
            .map_or(0..der_bytes.len(), |at| at..at + c.len()),
        _ => 0..der_bytes.len(),
    }
}

impl Wire for SmimeWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        &[(NS_E2E, "S/MIME")]
    }

    fn carries_conversation(&self, stanza: &Element) -> bool {
        is_message(stanza) && find(stanza, "e2e", NS_E2E).is_some()
    }

    fn ciphertext(&self, stanza: &Element) -> Option<Ciphertext> {
        let bytes = base64_text(find(stanza, "e2e", NS_E2E)?)?;
        Some(Ciphertext { content: encrypted_content(&bytes), bytes, what: "the CMS object" })
    }

    fn set_ciphertext(&self, stanza: &mut Element, bytes: &[u8]) -> bool {
        match find_mut(stanza, "e2e", NS_E2E) {
            Some(e) => {
                set_base64(e, bytes);
                true
            }
            None => false,
        }
    }

    fn strip_encryption(&self, stanza: &mut Element, body: &str) -> bool {
        is_message(stanza) && replace_with_body(stanza, "e2e", NS_E2E, body)
    }
}
