//! OMEMO's wire description (XEP-0384 §"Sending a message"): the `<encrypted/>` element with
//! its `<header/>` of per-device keys and the `<payload/>` that carries the conversation.

use crate::Wire;

/// One OMEMO version's wire.
#[derive(Debug)]
pub struct OmemoWire {
    labels: &'static [(&'static str, &'static str)],
}

impl OmemoWire {
    /// OMEMO 2 (`urn:xmpp:omemo:2`).
    pub const OMEMO2: OmemoWire = OmemoWire { labels: &[("urn:xmpp:omemo:2", "OMEMO encrypted")] };
    /// OMEMO 0.3 (`eu.siacs.conversations.axolotl`).
    pub const LEGACY: OmemoWire =
        OmemoWire { labels: &[("eu.siacs.conversations.axolotl", "OMEMO 0.3 encrypted")] };
}

impl Wire for OmemoWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        self.labels
    }
}
