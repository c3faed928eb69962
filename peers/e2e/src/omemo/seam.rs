//! OMEMO's wire description (XEP-0384 §"Sending a message"; 0.3: §4.5): the `<encrypted/>`
//! element, its `<header/>` of per-device keys, and the `<payload/>` that carries the text
//! (a message without one is a key transport, not the conversation).

use crate::wire::{ElementWire, TextEncoding, all_content};

const fn omemo(ns: &'static str, labels: &'static [(&'static str, &'static str)]) -> ElementWire {
    ElementWire {
        element: ("encrypted", ns),
        text_at: &["payload"],
        encoding: TextEncoding::Base64,
        what: "the OMEMO payload",
        content: all_content,
        labels,
    }
}

/// OMEMO 2 (`urn:xmpp:omemo:2`).
pub(super) static OMEMO2: ElementWire =
    omemo(super::engine::NS, &[(super::engine::NS, "OMEMO encrypted"), (super::engine::NS_SCE, "SCE")]);

/// OMEMO 0.3 (`eu.siacs.conversations.axolotl`).
pub(super) static LEGACY: ElementWire = omemo(super::legacy::NS, &[(super::legacy::NS, "OMEMO 0.3 encrypted")]);
