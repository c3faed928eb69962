//! The XML Security binding's wire description: `<EncryptedData/>` (xmlenc-core §3.1) whose
//! `CipherData/CipherValue` (§3.3) is the content ciphertext, IV first; the keys travel in
//! `EncryptedKey`s with CipherValues of their own, inside `KeyInfo`.

use minidom::Element;

use super::{NS_DS, NS_XENC, NS_XENC11};
use crate::wire::{Ciphertext, Wire, base64_text, find, find_mut, is_message, replace_with_body, set_base64, whole};

/// XML Signature + XML Encryption.
#[derive(Debug)]
pub struct XmlsecWire;

fn cipher_value(data: &Element) -> Option<&Element> {
    data.get_child("CipherData", NS_XENC)?.get_child("CipherValue", NS_XENC)
}

impl Wire for XmlsecWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        &[(NS_XENC, "XML Encryption"), (NS_XENC11, "XML Encryption 1.1"), (NS_DS, "XML Signature")]
    }

    fn carries_conversation(&self, stanza: &Element) -> bool {
        is_message(stanza) && find(stanza, "EncryptedData", NS_XENC).is_some()
    }

    fn ciphertext(&self, stanza: &Element) -> Option<Ciphertext> {
        let value = cipher_value(find(stanza, "EncryptedData", NS_XENC)?)?;
        Some(whole(base64_text(value)?, "the XML Encryption content CipherValue"))
    }

    fn set_ciphertext(&self, stanza: &mut Element, bytes: &[u8]) -> bool {
        let value = find_mut(stanza, "EncryptedData", NS_XENC)
            .and_then(|d| d.get_child_mut("CipherData", NS_XENC))
            .and_then(|c| c.get_child_mut("CipherValue", NS_XENC));
        match value {
            Some(v) => {
                set_base64(v, bytes);
                true
            }
            None => false,
        }
    }

    fn strip_encryption(&self, stanza: &mut Element, body: &str) -> bool {
        is_message(stanza) && replace_with_body(stanza, "EncryptedData", NS_XENC, body)
    }
}
