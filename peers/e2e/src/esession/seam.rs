//! ESessions' wire description: XEP-0116 negotiation in data forms, XEP-0200 §4 `<c/>`
//! elements whose `<data/>` is the encrypted stanza content.

use minidom::Element;

use super::NS_C;
use crate::wire::{Ciphertext, Wire, base64_text, find, find_mut, is_message, replace_with_body, set_base64, whole};

/// XEP-0116 / XEP-0200.
#[derive(Debug)]
pub struct EsessionWire;

fn data(c: &Element) -> Option<&Element> {
    c.children().find(|d| d.name() == "data")
}

impl Wire for EsessionWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        &[(NS_C, "ESession c"), (super::NS_INIT, "ESession init")]
    }

    fn carries_conversation(&self, stanza: &Element) -> bool {
        is_message(stanza) && find(stanza, "c", NS_C).and_then(data).is_some()
    }

    fn ciphertext(&self, stanza: &Element) -> Option<Ciphertext> {
        Some(whole(base64_text(data(find(stanza, "c", NS_C)?)?)?, "the XEP-0200 data"))
    }

    fn set_ciphertext(&self, stanza: &mut Element, bytes: &[u8]) -> bool {
        let Some(c) = find_mut(stanza, "c", NS_C) else { return false };
        match c.children_mut().find(|d| d.name() == "data") {
            Some(d) => {
                set_base64(d, bytes);
                true
            }
            None => false,
        }
    }

    fn strip_encryption(&self, stanza: &mut Element, body: &str) -> bool {
        is_message(stanza) && replace_with_body(stanza, "c", NS_C, body)
    }
}
