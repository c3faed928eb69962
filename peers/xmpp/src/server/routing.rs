//! Hops through the interception point, and routing (RFC 6120 §8, RFC 6121 §8): stanzas from
//! client sessions and federated servers go to sessions, accounts, the server itself, or a
//! remote domain.

use std::rc::Rc;

use jabberwock_e2e::xml::{ElementExt, NS_CARBONS, NS_PING, NS_PUBSUB, NS_ROSTER, el};
use jabberwock_e2e::{BareJid, Element, FullJid, Jid};

use super::{Deliver, Origin, Out, Server};
use crate::hooks::{Hop, Note, Release};
use crate::stanza::{Kind, error_reply, iq_payload, iq_result, jid_attr, kind, stanza_type};
use crate::wire::Transport;

const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

impl<T: Transport> Server<T> {
    // ---- hops -------------------------------------------------------------------------

    /// Sends `stanza` across `hop` through the interception point, then hands every release to
    /// `deliver` (now, or later for held-back copies).
    pub(super) fn through(self: &Rc<Self>, hop: Hop, stanza: Element, deliver: Deliver<T>) {
        for release in self.hooks.intercept(&hop, stanza) {
            match release {
                Release::Now(s) => deliver(self, &hop, s),
                Release::Reroute { hop: elsewhere, stanza } => {
                    if elsewhere.servers().contains(&self.domain()) {
                        self.hooks.note(Note::Injected { hop: &elsewhere, stanza: &stanza, rerouted: true });
                        self.put_on(&elsewhere, stanza);
                    } else {
                        self.hooks
                            .note(Note::Lost { hop: &elsewhere, reason: "rerouted to another server's hop" });
                    }
                }
                Release::Later { after, ticket } => {
                    let me = Rc::clone(self);
                    let hop = hop.clone();
                    tokio::task::spawn_local(async move {
                        tokio::time::sleep(after).await;
                        if let Some(s) = me.hooks.redeem(ticket) {
                            deliver(&me, &hop, s);
                        }
                    });
                }
            }
        }
    }

    pub(super) fn deliver_c2s(self: &Rc<Self>, hop: &Hop, stanza: Element) {
        if let Hop::ClientToServer { client, .. } = hop {
            self.from_client(client, stanza);
        }
    }

    fn deliver_s2c(self: &Rc<Self>, hop: &Hop, stanza: Element) {
        if let Hop::ServerToClient { client, .. } = hop {
            self.write_session(client, stanza);
        }
    }

    fn deliver_s2s(self: &Rc<Self>, hop: &Hop, stanza: Element) {
        if let Hop::ServerToServer { to, .. } = hop {
            let tx = self.s2s_link(to);
            if tx.send(stanza).is_err() {
                self.hooks.note(Note::Lost { hop, reason: "federation link closed" });
            }
        }
    }

    /// Writes to a client session without interception (the caller already intercepted).
    pub(super) fn write_session(&self, client: &FullJid, stanza: Element) {
        let sent = self.sessions.borrow().get(client).is_some_and(|s| s.tx.send(Out::Stanza(stanza)).is_ok());
        if !sent {
            let hop = Hop::ServerToClient { server: self.cfg.domain.clone(), client: client.clone() };
            self.hooks.note(Note::Lost { hop: &hop, reason: "session gone" });
        }
    }

    /// Sends a stanza to one of our client sessions across the server→client hop.
    pub(super) fn send_to_session(self: &Rc<Self>, client: &FullJid, stanza: Element) {
        let hop = Hop::ServerToClient { server: self.cfg.domain.clone(), client: client.clone() };
        self.through(hop, stanza, Self::deliver_s2c);
    }

    // ---- routing ------------------------------------------------------------------------

    pub(super) fn from_remote(self: &Rc<Self>, remote: &str, stanza: Element) {
        // RFC 6120 §8.1.2.2: a server must not accept stanzas whose `from` is not the peer's.
        let from_ok = matches!(jid_attr(&stanza, "from"), Ok(Some(j)) if j.domain().as_str() == remote);
        if !from_ok || kind(&stanza).is_none() {
            let party = format!("{} s2s-in", self.domain());
            self.hooks.note(Note::StreamError {
                party: &party,
                condition: "invalid-from",
                detail: format!("dropped a stanza from {remote} claiming from={:?}", stanza.attr("from")),
            });
            return;
        }
        self.route(stanza, Origin::Remote(remote.to_owned()));
    }

    /// A stanza read from a client session (after the client→server hop).
    pub(super) fn from_client(self: &Rc<Self>, client: &FullJid, mut stanza: Element) {
        let Some(k) = kind(&stanza) else {
            let party = format!("{} c2s of {client}", self.domain());
            self.hooks.note(Note::StreamError {
                party: &party,
                condition: "unsupported-stanza-type",
                detail: format!("ignored <{} xmlns='{}'/>", stanza.name(), stanza.ns()),
            });
            return;
        };
        let stype = stanza_type(&stanza).to_owned();
        // RFC 6120 §8.1.2.1 and RFC 6121 §3.1.2: the server stamps the sender's address
        // (the bare JID on subscription management presence).
        let bare_from = k == Kind::Presence
            && matches!(stype.as_str(), "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed");
        let from = if bare_from { client.to_bare().to_string() } else { client.to_string() };
        stanza.set("from", from);
        if jid_attr(&stanza, "to").is_err() {
            if let Some(reply) = error_reply(&stanza, "modify", "jid-malformed", Some(self.domain())) {
                self.send_to_session(client, reply);
            }
            return;
        }
        match k {
            Kind::Presence if stanza.attr("to").is_none() => self.own_presence(client, stanza),
            Kind::Presence => self.outbound_presence(client, stanza, &stype),
            Kind::Iq if stanza.attr("to").is_none() => {
                stanza.set("to", client.to_bare().to_string());
                self.route(stanza, Origin::Local);
            }
            Kind::Message => {
                if stanza.attr("to").is_none() {
                    stanza.set("to", client.to_bare().to_string());
                }
                self.sent_carbons(client, &stanza);
                self.route(stanza, Origin::Local);
            }
            Kind::Iq => self.route(stanza, Origin::Local),
        }
    }

    pub(super) fn route(self: &Rc<Self>, stanza: Element, origin: Origin) {
        let Ok(Some(to)) = jid_attr(&stanza, "to") else { return };
        if to.domain().as_str() != self.domain() {
            match origin {
                Origin::Remote(remote) => {
                    let party = format!("{} s2s-in", self.domain());
                    self.hooks.note(Note::StreamError {
                        party: &party,
                        condition: "improper-addressing",
                        detail: format!("{remote} asked us to relay to {to}"),
                    });
                }
                Origin::Local | Origin::Server => self.send_remote(to.domain().as_str(), stanza),
            }
            return;
        }
        if to.node().is_none() {
            self.for_server(stanza);
            return;
        }
        let bare = to.to_bare();
        if !self.disk.borrow().accounts.contains_key(&bare) {
            // RFC 6121 §8.5.1: no such account.
            if stanza.name() != "presence" && !matches!(stanza_type(&stanza), "groupchat" | "result") {
                self.reply_error(&stanza, "cancel", "service-unavailable");
            }
            return;
        }
        match kind(&stanza) {
            Some(Kind::Message) => self.deliver_message(&to, stanza),
            Some(Kind::Presence) => self.inbound_presence(&to, stanza),
            Some(Kind::Iq) => self.account_iq(&to, stanza, origin),
            None => {}
        }
    }

    fn send_remote(self: &Rc<Self>, domain: &str, stanza: Element) {
        if !self.cfg.peers.contains(domain) {
            self.reply_error(&stanza, "cancel", "remote-server-not-found");
            return;
        }
        let hop = Hop::ServerToServer { from: self.cfg.domain.clone(), to: domain.to_owned() };
        self.through(hop, stanza, Self::deliver_s2s);
    }

    /// Sends an error reply to the sender of `stanza`, from whoever it was addressed to.
    pub(super) fn reply_error(self: &Rc<Self>, stanza: &Element, kind: &str, condition: &str) {
        if let Some(reply) = error_reply(stanza, kind, condition, None) {
            self.route(reply, Origin::Server);
        }
    }

    fn for_server(self: &Rc<Self>, stanza: Element) {
        if stanza.name() != "iq" {
            return;
        }
        let t = stanza_type(&stanza);
        if t == "result" || t == "error" {
            return; // answers to roster pushes and pings
        }
        let payload = iq_payload(&stanza);
        let reply = match payload {
            // XEP-0199 §4.2: client-to-server ping.
            Some(p) if t == "get" && p.is("ping", NS_PING) => iq_result(&stanza, Some(self.domain()), None),
            // XEP-0030 §3.1: the features this server implements.
            Some(p) if t == "get" && p.is("query", NS_DISCO_INFO) => {
                let mut q = el("query", NS_DISCO_INFO).child(
                    el("identity", NS_DISCO_INFO)
                        .with("category", "server")
                        .with("type", "im")
                        .with("name", "jabberwock"),
                );
                for var in [NS_DISCO_INFO, NS_PING, NS_CARBONS, "msgoffline", "urn:xmpp:delay", NS_PUBSUB] {
                    q.append_child(el("feature", NS_DISCO_INFO).with("var", var));
                }
                iq_result(&stanza, Some(self.domain()), Some(q))
            }
            _ => {
                self.reply_error(&stanza, "cancel", "service-unavailable");
                return;
            }
        };
        self.route(reply, Origin::Server);
    }

    fn account_iq(self: &Rc<Self>, to: &Jid, stanza: Element, origin: Origin) {
        let t = stanza_type(&stanza).to_owned();
        if let Ok(full) = to.clone().try_into_full() {
            // RFC 6121 §8.5.3.1 / §8.5.3.2.3: an iq to a full JID goes to that session only.
            if self.sessions.borrow().contains_key(&full) {
                self.send_to_session(&full, stanza);
            } else if t == "get" || t == "set" {
                self.reply_error(&stanza, "cancel", "service-unavailable");
            }
            return;
        }
        if t == "result" || t == "error" {
            return;
        }
        let owner = to.to_bare();
        let requester = match jid_attr(&stanza, "from") {
            Ok(Some(j)) => j,
            _ => return,
        };
        let is_owner = requester.to_bare() == owner && matches!(origin, Origin::Local);
        let payload = iq_payload(&stanza).cloned();
        match payload {
            Some(p) if p.is("pubsub", NS_PUBSUB) => self.pep(&owner, &requester, &stanza, &p, is_owner),
            Some(p) if p.is("query", NS_ROSTER) && is_owner => self.roster_iq(&owner, &stanza, &p, &t),
            Some(p)
                if (p.is("enable", NS_CARBONS) || p.is("disable", NS_CARBONS)) && is_owner && t == "set" =>
            {
                // XEP-0280 §5: carbons are switched per session.
                let enable = p.name() == "enable";
                let full = requester.clone().try_into_full().ok();
                let found = full
                    .as_ref()
                    .and_then(|f| self.sessions.borrow_mut().get_mut(f).map(|s| s.carbons = enable));
                match (full, found) {
                    (Some(full), Some(())) => self.send_to_session(&full, iq_result(&stanza, None, None)),
                    _ => self.reply_error(&stanza, "modify", "bad-request"),
                }
            }
            Some(p) if p.is("ping", NS_PING) && t == "get" => {
                self.route(iq_result(&stanza, Some(&owner.to_string()), None), Origin::Server)
            }
            _ => self.reply_error(&stanza, "cancel", "service-unavailable"),
        }
    }

    // ---- messages -----------------------------------------------------------------------

    pub(super) fn available_sessions(&self, bare: &BareJid) -> Vec<FullJid> {
        self.sessions
            .borrow()
            .iter()
            .filter(|(j, s)| j.to_bare() == *bare && s.available && s.priority >= 0)
            .map(|(j, _)| j.clone())
            .collect()
    }

    /// RFC 6121 §8.5.2 (bare JID) and §8.5.3 (full JID) message delivery, XEP-0160 offline
    /// storage, XEP-0280 received carbons.
    fn deliver_message(self: &Rc<Self>, to: &Jid, stanza: Element) {
        let mtype = stanza_type(&stanza).to_owned();
        if let Ok(full) = to.clone().try_into_full() {
            if self.sessions.borrow().contains_key(&full) {
                self.received_carbons(&full, &stanza);
                self.send_to_session(&full, stanza);
                return;
            }
            // §8.5.3.2.1: no such resource — chat and normal are treated as if sent to the bare JID.
            if mtype != "chat" && mtype != "normal" {
                if mtype != "error" && mtype != "headline" {
                    self.reply_error(&stanza, "cancel", "service-unavailable");
                }
                return;
            }
        }
        let bare = to.to_bare();
        let targets = self.available_sessions(&bare);
        if mtype == "error" {
            return;
        }
        if !targets.is_empty() {
            // §8.5.2.1.1: deliver to all available resources with non-negative priority;
            // XEP-0280 §7.1: carbons-enabled resources that did not get it get a copy.
            let carbons: Vec<FullJid> = if Self::carbon_eligible(&stanza) {
                self.carbon_copies(&targets[0]).into_iter().filter(|j| !targets.contains(j)).collect()
            } else {
                vec![]
            };
            for other in carbons {
                let copy = Self::wrap_carbon("received", &bare, &other, &stanza);
                self.send_to_session(&other, copy);
            }
            for full in targets {
                self.send_to_session(&full, stanza.clone());
            }
            return;
        }
        if mtype == "headline" || mtype == "groupchat" {
            return; // §8.5.2.2.1: silently ignored when nobody is online
        }
        self.store_offline(&bare, stanza);
    }
}
