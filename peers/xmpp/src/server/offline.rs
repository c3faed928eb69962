//! XEP-0160 offline storage with XEP-0203 delay stamps.

use std::rc::Rc;

use jabberwock_e2e::time::format_stamp;
use jabberwock_e2e::xml::{ElementExt, NS_CLIENT, NS_DELAY, el};
use jabberwock_e2e::{BareJid, Element, FullJid};

use super::Server;
use crate::hooks::Note;
use crate::wire::Transport;

/// At most this many messages wait for one offline account; past it, senders get an error.
const MAX_OFFLINE: usize = 10_000;

impl<T: Transport> Server<T> {
    /// XEP-0160 §3: keep the message and stamp it with XEP-0203 delayed delivery (§3 of 0203:
    /// `from` is the server, `stamp` the time it was stored, in simulated time).
    pub(super) fn store_offline(self: &Rc<Self>, bare: &BareJid, mut stanza: Element) {
        let full = {
            let disk = self.disk.borrow();
            disk.accounts.get(bare).is_none_or(|a| a.offline.len() >= MAX_OFFLINE)
        };
        if full {
            self.reply_error(&stanza, "wait", "resource-constraint");
            return;
        }
        stanza.append_child(
            el("delay", NS_DELAY)
                .with("from", self.domain())
                .with("stamp", format_stamp(self.hooks.now()))
                .text_node("Offline Storage"),
        );
        let id = stanza.attr("id").unwrap_or_default().to_owned();
        if let Some(acc) = self.disk.borrow_mut().accounts.get_mut(bare) {
            acc.offline.push(stanza);
        }
        let account = bare.to_string();
        self.hooks.note(Note::StoredOffline { server: self.domain(), account: &account, id: &id });
    }

    /// XEP-0160 §4: stored messages go to the first resource that sends initial presence with
    /// non-negative priority; pending subscription requests are re-sent (RFC 6121 §3.1.3).
    pub(super) fn flush_offline(self: &Rc<Self>, client: &FullJid) {
        let bare = client.to_bare();
        let (stored, pending) = {
            let mut disk = self.disk.borrow_mut();
            match disk.accounts.get_mut(&bare) {
                Some(acc) => (core::mem::take(&mut acc.offline), acc.pending_in.clone()),
                None => return,
            }
        };
        for contact in pending {
            let req = el("presence", NS_CLIENT)
                .with("type", "subscribe")
                .with("from", contact.to_string())
                .with("to", bare.to_string());
            self.send_to_session(client, req);
        }
        for mut msg in stored {
            msg.set("to", client.to_string());
            self.send_to_session(client, msg);
        }
    }
}
