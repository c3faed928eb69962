//! RFC 3923's wire description: the `<e2e/>` element (§4) carrying base64 CMS, enveloped
//! (RFC 5652 §6) around the signed CPIM message; the encrypted content is the
//! EnvelopedData's `encryptedContent`.

use cms::content_info::ContentInfo;
use cms::enveloped_data::EnvelopedData;
use der::{Decode, Encode};
use super::NS_E2E;
use crate::wire::{ElementWire, TextEncoding};

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

/// RFC 3923.
pub(super) static WIRE: ElementWire = ElementWire {
    element: ("e2e", NS_E2E),
    text_at: &[],
    encoding: TextEncoding::Base64,
    what: "the CMS object",
    content: encrypted_content,
    labels: &[(NS_E2E, "S/MIME")],
};
