//! RFC 6121 roster and presence: presence broadcast and probes, subscription management on
//! both sides, roster pushes and the roster iq.

use std::collections::BTreeMap;
use std::rc::Rc;

use jabberwock_e2e::xml::{ElementExt, NS_CLIENT, NS_ROSTER, el};
use jabberwock_e2e::{BareJid, Element, FullJid, Jid};

use super::{Origin, RosterItem, Server};
use crate::stanza::{iq_result, jid_attr, stanza_type};
use crate::wire::Transport;

/// At most this many subscription requests wait for one account; more are dropped.
const MAX_PENDING: usize = 1_000;

impl<T: Transport> Server<T> {
    pub(super) fn roster_of(&self, bare: &BareJid) -> BTreeMap<BareJid, RosterItem> {
        self.disk.borrow().accounts.get(bare).map(|a| a.roster.clone()).unwrap_or_default()
    }

    /// RFC 6121 §4.2 (initial presence), §4.4 (updates) and §4.5 (unavailable).
    pub(super) fn own_presence(self: &Rc<Self>, client: &FullJid, stanza: Element) {
        let t = stanza_type(&stanza).to_owned();
        let priority = stanza
            .get_child("priority", NS_CLIENT)
            .and_then(|p| p.text().trim().parse::<i32>().ok())
            .unwrap_or(0)
            .clamp(-128, 127);
        let initial = {
            let mut sessions = self.sessions.borrow_mut();
            let Some(s) = sessions.get_mut(client) else { return };
            let initial = !s.available && t == "available";
            match t.as_str() {
                "available" => {
                    s.available = true;
                    s.priority = priority;
                    s.presence = Some(stanza.clone());
                }
                "unavailable" => {
                    s.available = false;
                    s.presence = None;
                }
                _ => return,
            }
            initial
        };
        if initial {
            // §4.2.2: probe the contacts the user is subscribed to.
            let me = client.to_bare();
            for (contact, item) in self.roster_of(&me) {
                if item.subscription.has_to() {
                    let probe = el("presence", NS_CLIENT)
                        .with("type", "probe")
                        .with("from", me.to_string())
                        .with("to", contact.to_string());
                    self.route(probe, Origin::Server);
                }
            }
        }
        self.broadcast_presence(client, stanza);
        if initial && priority >= 0 {
            self.flush_offline(client);
        }
    }

    pub(super) fn broadcast_presence(self: &Rc<Self>, client: &FullJid, stanza: Element) {
        let me = client.to_bare();
        for (contact, item) in self.roster_of(&me) {
            if item.subscription.has_from() {
                let mut copy = stanza.clone();
                copy.set("to", contact.to_string());
                self.route(copy, Origin::Server);
            }
        }
        // §4.2.2 / §4.4.2: the user's other resources see it too.
        let others: Vec<FullJid> = self
            .sessions
            .borrow()
            .iter()
            .filter(|(j, s)| j.to_bare() == me && *j != client && s.available)
            .map(|(j, _)| j.clone())
            .collect();
        for other in others {
            let mut copy = stanza.clone();
            copy.set("to", other.to_string());
            self.send_to_session(&other, copy);
        }
    }

    fn roster_push(self: &Rc<Self>, owner: &BareJid, contact: &BareJid) {
        let item = self.disk.borrow().accounts.get(owner).and_then(|a| a.roster.get(contact).cloned());
        let mut it = el("item", NS_ROSTER).with("jid", contact.to_string());
        match item {
            Some(item) => {
                it.set("subscription", item.subscription.name());
                if item.ask {
                    it.set("ask", "subscribe");
                }
            }
            None => it.set("subscription", "remove"),
        }
        let sessions: Vec<FullJid> =
            self.sessions.borrow().keys().filter(|j| j.to_bare() == *owner).cloned().collect();
        for full in sessions {
            // RFC 6121 §2.1.6: roster push.
            let push = el("iq", NS_CLIENT)
                .with("type", "set")
                .with("id", self.next_id("push"))
                .with("to", full.to_string())
                .child(el("query", NS_ROSTER).child(it.clone()));
            self.send_to_session(&full, push);
        }
    }

    fn update_roster(&self, owner: &BareJid, contact: &BareJid, f: impl FnOnce(&mut RosterItem)) {
        if let Some(acc) = self.disk.borrow_mut().accounts.get_mut(owner) {
            f(acc.roster.entry(contact.clone()).or_default());
        }
    }

    /// RFC 6121 §3: the user's server handles outbound subscription management.
    pub(super) fn outbound_presence(self: &Rc<Self>, client: &FullJid, stanza: Element, stype: &str) {
        let Ok(Some(to)) = jid_attr(&stanza, "to") else { return };
        let me = client.to_bare();
        let contact = to.to_bare();
        match stype {
            "subscribe" => {
                self.update_roster(&me, &contact, |i| i.ask = !i.subscription.has_to());
                self.roster_push(&me, &contact);
            }
            "subscribed" => {
                let was_pending = self
                    .disk
                    .borrow_mut()
                    .accounts
                    .get_mut(&me)
                    .is_some_and(|a| a.pending_in.remove(&contact));
                let already = self.roster_of(&me).get(&contact).is_some_and(|i| i.subscription.has_from());
                if !was_pending && !already {
                    return; // §3.1.5: nothing to approve
                }
                self.update_roster(&me, &contact, |i| {
                    i.subscription = i.subscription.with(i.subscription.has_to(), true)
                });
                self.roster_push(&me, &contact);
                self.route(stanza, Origin::Local);
                // §3.1.5: the contact's server sends the user's current presence.
                let mine: Vec<(FullJid, Element)> = self
                    .sessions
                    .borrow()
                    .iter()
                    .filter(|(j, s)| j.to_bare() == me && s.presence.is_some())
                    .filter_map(|(j, s)| s.presence.clone().map(|p| (j.clone(), p)))
                    .collect();
                for (full, mut p) in mine {
                    p.set("from", full.to_string());
                    p.set("to", contact.to_string());
                    self.route(p, Origin::Server);
                }
                return;
            }
            "unsubscribe" => {
                self.update_roster(&me, &contact, |i| {
                    i.ask = false;
                    i.subscription = i.subscription.with(false, i.subscription.has_from());
                });
                self.roster_push(&me, &contact);
            }
            "unsubscribed" => {
                if let Some(acc) = self.disk.borrow_mut().accounts.get_mut(&me) {
                    acc.pending_in.remove(&contact);
                }
                let had_from = self.roster_of(&me).get(&contact).is_some_and(|i| i.subscription.has_from());
                self.update_roster(&me, &contact, |i| {
                    i.subscription = i.subscription.with(i.subscription.has_to(), false)
                });
                self.roster_push(&me, &contact);
                self.route(stanza, Origin::Local);
                if had_from {
                    // §3.2.2: the contact stops seeing the user: unavailable from each resource.
                    self.unavailable_to(&me, &contact);
                }
                return;
            }
            _ => {}
        }
        self.route(stanza, Origin::Local);
    }

    /// Sends unavailable presence from each of `user`'s available resources to `contact`.
    fn unavailable_to(self: &Rc<Self>, user: &BareJid, contact: &BareJid) {
        for full in self.available_sessions(user) {
            let p = el("presence", NS_CLIENT)
                .with("type", "unavailable")
                .with("from", full.to_string())
                .with("to", contact.to_string());
            self.route(p, Origin::Server);
        }
    }

    /// RFC 6121 §3 and §4 on the contact's side: a presence stanza addressed to one of our
    /// accounts.
    pub(super) fn inbound_presence(self: &Rc<Self>, to: &Jid, stanza: Element) {
        let user = to.to_bare();
        let Ok(Some(from)) = jid_attr(&stanza, "from") else { return };
        let contact = from.to_bare();
        let item = self.roster_of(&user).get(&contact).cloned().unwrap_or_default();
        let deliver_all = |me: &Rc<Self>, s: &Element| {
            for full in me.available_sessions(&user) {
                let mut copy = s.clone();
                copy.set("to", full.to_string());
                me.send_to_session(&full, copy);
            }
        };
        match stanza_type(&stanza) {
            "subscribe" => {
                if item.subscription.has_from() {
                    // §3.1.3: already approved — the server answers on the user's behalf.
                    let ok = el("presence", NS_CLIENT)
                        .with("type", "subscribed")
                        .with("from", user.to_string())
                        .with("to", contact.to_string());
                    self.route(ok, Origin::Server);
                    return;
                }
                let stored = self.disk.borrow_mut().accounts.get_mut(&user).is_some_and(|a| {
                    a.pending_in.len() < MAX_PENDING && a.pending_in.insert(contact.clone())
                });
                if stored {
                    deliver_all(self, &stanza);
                }
            }
            "subscribed" => {
                if !item.ask {
                    return; // §3.1.6: unsolicited approval is ignored
                }
                self.update_roster(&user, &contact, |i| {
                    i.ask = false;
                    i.subscription = i.subscription.with(true, i.subscription.has_from());
                });
                self.roster_push(&user, &contact);
                deliver_all(self, &stanza);
            }
            "unsubscribe" => {
                // §3.3.3: only a contact with a subscription (or a pending request) can take it
                // back; anything else is ignored silently.
                let was_pending = self
                    .disk
                    .borrow_mut()
                    .accounts
                    .get_mut(&user)
                    .is_some_and(|a| a.pending_in.remove(&contact));
                if !item.subscription.has_from() && !was_pending {
                    return;
                }
                let had_from = item.subscription.has_from();
                self.update_roster(&user, &contact, |i| {
                    i.subscription = i.subscription.with(i.subscription.has_to(), false)
                });
                self.roster_push(&user, &contact);
                deliver_all(self, &stanza);
                if had_from {
                    // §3.3.3: the former subscriber sees the user go unavailable.
                    self.unavailable_to(&user, &contact);
                }
            }
            "unsubscribed" => {
                // §3.2.3: only meaningful when the user has (or asked for) a subscription.
                if !item.subscription.has_to() && !item.ask {
                    return;
                }
                self.update_roster(&user, &contact, |i| {
                    i.ask = false;
                    i.subscription = i.subscription.with(false, i.subscription.has_from());
                });
                self.roster_push(&user, &contact);
                deliver_all(self, &stanza);
            }
            "probe" => {
                // §4.3.2: answer only subscribers.
                if !item.subscription.has_from() {
                    return;
                }
                let mine: Vec<(FullJid, Element)> = self
                    .sessions
                    .borrow()
                    .iter()
                    .filter(|(j, s)| j.to_bare() == user && s.available)
                    .filter_map(|(j, s)| s.presence.clone().map(|p| (j.clone(), p)))
                    .collect();
                for (full, mut p) in mine {
                    p.set("from", full.to_string());
                    p.set("to", contact.to_string());
                    self.route(p, Origin::Server);
                }
            }
            _ => {
                // §4.4.3 / §4.5.3: availability from contacts the user subscribed to, or from
                // the user's own resources.
                if !(item.subscription.has_to() || contact == user) {
                    return;
                }
                match to.clone().try_into_full() {
                    Ok(full) if self.sessions.borrow().contains_key(&full) => {
                        self.send_to_session(&full, stanza)
                    }
                    Ok(_) => {}
                    Err(_) => deliver_all(self, &stanza),
                }
            }
        }
    }

    /// RFC 6121 §2.1.3 (get) and §2.3 / §2.5 (set: add, update, remove).
    pub(super) fn roster_iq(self: &Rc<Self>, owner: &BareJid, iq: &Element, query: &Element, t: &str) {
        let Ok(Some(from)) = jid_attr(iq, "from") else { return };
        let Ok(client) = from.try_into_full() else { return };
        if t == "get" {
            let mut q = el("query", NS_ROSTER);
            for (contact, item) in self.roster_of(owner) {
                let mut it = el("item", NS_ROSTER)
                    .with("jid", contact.to_string())
                    .with("subscription", item.subscription.name());
                if item.ask {
                    it.set("ask", "subscribe");
                }
                q.append_child(it);
            }
            self.send_to_session(&client, iq_result(iq, None, Some(q)));
            return;
        }
        let items: Vec<&Element> = query.children().filter(|c| c.is("item", NS_ROSTER)).collect();
        let [item] = items.as_slice() else {
            self.reply_error(iq, "modify", "bad-request");
            return;
        };
        let Some(contact) = item.attr("jid").and_then(|j| j.parse::<BareJid>().ok()) else {
            self.reply_error(iq, "modify", "bad-request");
            return;
        };
        if item.attr("subscription") == Some("remove") {
            let old = self.disk.borrow_mut().accounts.get_mut(owner).and_then(|acc| {
                acc.pending_in.remove(&contact);
                acc.roster.remove(&contact)
            });
            // §2.5.2: removing a contact cancels both directions of the subscription.
            if let Some(old) = old {
                let cancel = |t: &str| {
                    el("presence", NS_CLIENT)
                        .with("type", t.to_owned())
                        .with("from", owner.to_string())
                        .with("to", contact.to_string())
                };
                if old.subscription.has_to() || old.ask {
                    self.route(cancel("unsubscribe"), Origin::Server);
                }
                if old.subscription.has_from() {
                    self.route(cancel("unsubscribed"), Origin::Server);
                    self.unavailable_to(owner, &contact);
                }
            }
        } else {
            self.update_roster(owner, &contact, |_| {});
        }
        self.send_to_session(&client, iq_result(iq, None, None));
        self.roster_push(owner, &contact);
    }
}
