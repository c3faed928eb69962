//! XEP-0280 message carbons.

use std::rc::Rc;

use jabberwock_e2e::xml::{ElementExt, NS_CARBONS, NS_CLIENT, NS_FORWARD, el};
use jabberwock_e2e::{BareJid, Element, FullJid};

use super::Server;
use crate::stanza::stanza_type;
use crate::wire::Transport;

const NS_HINTS: &str = "urn:xmpp:hints";

impl<T: Transport> Server<T> {
    pub(super) fn carbon_eligible(stanza: &Element) -> bool {
        // XEP-0280 §6: chat messages (and normal ones with a body), not private, not no-copy,
        // and never a carbon of a carbon.
        let t = stanza_type(stanza);
        let eligible_type = t == "chat" || (t == "normal" && stanza.get_child("body", NS_CLIENT).is_some());
        eligible_type
            && !stanza.has_child("private", NS_CARBONS)
            && !stanza.has_child("no-copy", NS_HINTS)
            && !stanza.has_child("received", NS_CARBONS)
            && !stanza.has_child("sent", NS_CARBONS)
    }

    pub(super) fn carbon_copies(&self, owner: &FullJid) -> Vec<FullJid> {
        self.sessions
            .borrow()
            .iter()
            .filter(|(j, s)| j.to_bare() == owner.to_bare() && *j != owner && s.carbons)
            .map(|(j, _)| j.clone())
            .collect()
    }

    pub(super) fn wrap_carbon(which: &str, owner: &BareJid, to: &FullJid, stanza: &Element) -> Element {
        el("message", NS_CLIENT)
            .with("from", owner.to_string())
            .with("to", to.to_string())
            .with("type", stanza_type(stanza))
            .child(el(which, NS_CARBONS).child(el("forwarded", NS_FORWARD).child(stanza.clone())))
    }

    /// XEP-0280 §7.1: copies of a message delivered to one resource go to the others.
    pub(super) fn received_carbons(self: &Rc<Self>, recipient: &FullJid, stanza: &Element) {
        if !Self::carbon_eligible(stanza) {
            return;
        }
        for other in self.carbon_copies(recipient) {
            let copy = Self::wrap_carbon("received", &recipient.to_bare(), &other, stanza);
            self.send_to_session(&other, copy);
        }
    }

    /// XEP-0280 §7.2: copies of a message one resource sends go to the sender's other resources.
    pub(super) fn sent_carbons(self: &Rc<Self>, sender: &FullJid, stanza: &Element) {
        if !Self::carbon_eligible(stanza) {
            return;
        }
        for other in self.carbon_copies(sender) {
            let copy = Self::wrap_carbon("sent", &sender.to_bare(), &other, stanza);
            self.send_to_session(&other, copy);
        }
    }
}
