//! The XML Security binding's wire description: `<EncryptedData/>` (xmlenc-core §3.1) whose
//! `CipherData/CipherValue` (§3.3) is the content ciphertext, IV first; the keys travel in
//! `EncryptedKey`s with CipherValues of their own, inside `KeyInfo`.

use super::{NS_DS, NS_XENC, NS_XENC11};
use crate::wire::{ElementWire, TextEncoding, all_content};

/// XML Signature + XML Encryption.
pub(super) static WIRE: ElementWire = ElementWire {
    element: ("EncryptedData", NS_XENC),
    text_at: &["CipherData", "CipherValue"],
    encoding: TextEncoding::Base64,
    what: "the XML Encryption content CipherValue",
    content: all_content,
    labels: &[(NS_XENC, "XML Encryption"), (NS_XENC11, "XML Encryption 1.1"), (NS_DS, "XML Signature")],
};
