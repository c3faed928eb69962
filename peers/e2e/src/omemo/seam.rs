//! OMEMO's wire description (XEP-0384 §"Sending a message"; 0.3: §4.5): the `<encrypted/>`
//! element, its `<header/>` of per-device keys, and the `<payload/>` that carries the text
//! (a message without one is a key transport, not the conversation).

use minidom::Element;

use crate::wire::{Ciphertext, Wire, base64_text, find, find_mut, is_message, replace_with_body, set_base64, whole};

/// One OMEMO version's wire.
#[derive(Debug)]
pub struct OmemoWire {
    ns: &'static str,
    labels: &'static [(&'static str, &'static str)],
}

impl OmemoWire {
    /// OMEMO 2 (`urn:xmpp:omemo:2`).
    pub const OMEMO2: OmemoWire =
        OmemoWire { ns: super::engine::NS, labels: &[(super::engine::NS, "OMEMO encrypted")] };
    /// OMEMO 0.3 (`eu.siacs.conversations.axolotl`).
    pub const LEGACY: OmemoWire =
        OmemoWire { ns: super::legacy::NS, labels: &[(super::legacy::NS, "OMEMO 0.3 encrypted")] };

    fn payload<'a>(&self, stanza: &'a Element) -> Option<&'a Element> {
        find(stanza, "encrypted", self.ns)?.get_child("payload", self.ns)
    }
}

impl Wire for OmemoWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        self.labels
    }

    fn carries_conversation(&self, stanza: &Element) -> bool {
        is_message(stanza) && self.payload(stanza).is_some()
    }

    fn ciphertext(&self, stanza: &Element) -> Option<Ciphertext> {
        Some(whole(base64_text(self.payload(stanza)?)?, "the OMEMO payload"))
    }

    fn set_ciphertext(&self, stanza: &mut Element, bytes: &[u8]) -> bool {
        let ns = self.ns;
        match find_mut(stanza, "encrypted", ns).and_then(|e| e.get_child_mut("payload", ns)) {
            Some(payload) => {
                set_base64(payload, bytes);
                true
            }
            None => false,
        }
    }

    fn strip_encryption(&self, stanza: &mut Element, body: &str) -> bool {
        is_message(stanza) && replace_with_body(stanza, "encrypted", self.ns, body)
    }
}
