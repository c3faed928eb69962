//! PEP (XEP-0163 over XEP-0060): publishing with publish-options preconditions, item
//! retrieval with access checks.

use std::rc::Rc;

use jabberwock_e2e::xml::{ElementExt, NS_CLIENT, NS_DATA, NS_PUBSUB, NS_PUBSUB_ERRORS, NS_PUBSUB_EVENT, el};
use jabberwock_e2e::{BareJid, Element, Jid};

use super::{Origin, PepNode, Server};
use crate::stanza::{error_reply, iq_payload, iq_result, stanza_type};
use crate::wire::Transport;

/// At most this many items stay in one PEP node, whatever `pubsub#max_items` asks.
const MAX_ITEMS: usize = 256;

impl<T: Transport> Server<T> {
    pub(super) fn pep(
        self: &Rc<Self>,
        owner: &BareJid,
        requester: &Jid,
        iq: &Element,
        pubsub: &Element,
        is_owner: bool,
    ) {
        let t = stanza_type(iq);
        let Some(op) = iq_payload(pubsub).or_else(|| pubsub.children().next()) else {
            self.reply_error(iq, "modify", "bad-request");
            return;
        };
        match (t, op.name()) {
            ("set", "publish") if is_owner => self.pep_publish(owner, iq, pubsub, op),
            ("set", "publish") => self.reply_error(iq, "auth", "forbidden"),
            ("get", "items") => self.pep_items(owner, requester, iq, op, is_owner),
            _ => {
                // XEP-0060 §publisher-publish-error / §entity-features: not implemented here.
                let mut reply = error_reply(iq, "cancel", "feature-not-implemented", None);
                if let Some(r) = reply.as_mut()
                    && let Some(e) = r.get_child_mut("error", NS_CLIENT)
                {
                    e.append_child(el("unsupported", NS_PUBSUB_ERRORS).with("feature", op.name()));
                }
                if let Some(r) = reply {
                    self.route(r, Origin::Server);
                }
            }
        }
    }

    fn pubsub_error(self: &Rc<Self>, iq: &Element, kind: &str, condition: &str, app: &str) {
        if let Some(mut r) = error_reply(iq, kind, condition, None) {
            if let Some(e) = r.get_child_mut("error", NS_CLIENT) {
                e.append_child(el(app, NS_PUBSUB_ERRORS));
            }
            self.route(r, Origin::Server);
        }
    }

    /// XEP-0163 §4.3 publishing with XEP-0060 §7.1.5 publish-options preconditions.
    fn pep_publish(self: &Rc<Self>, owner: &BareJid, iq: &Element, pubsub: &Element, publish: &Element) {
        let Some(node) = publish.attr("node").map(str::to_owned) else {
            self.pubsub_error(iq, "modify", "bad-request", "nodeid-required");
            return;
        };
        let items: Vec<&Element> = publish.children().filter(|c| c.is("item", NS_PUBSUB)).collect();
        let [item] = items.as_slice() else {
            self.pubsub_error(iq, "modify", "bad-request", "item-required");
            return;
        };
        let Some(payload) = item.children().next().cloned() else {
            self.pubsub_error(iq, "modify", "bad-request", "payload-required");
            return;
        };
        let options = publish_options(pubsub);
        let id = item.attr("id").map(str::to_owned).unwrap_or_else(|| self.next_id("item"));
        {
            let mut disk = self.disk.borrow_mut();
            let Some(acc) = disk.accounts.get_mut(owner) else { return };
            let node_cfg = match acc.pep.get_mut(&node) {
                Some(existing) => {
                    // §7.1.5: an existing node must already match the preconditions.
                    let mismatch = options.iter().any(|(var, value)| match var.as_str() {
                        "pubsub#access_model" => existing.access_model != *value,
                        "pubsub#max_items" => parse_max_items(value) != Some(existing.max_items),
                        _ => false,
                    });
                    if mismatch {
                        drop(disk);
                        self.pubsub_error(iq, "cancel", "conflict", "precondition-not-met");
                        return;
                    }
                    existing
                }
                None => {
                    // XEP-0163 §4.1 / §8: auto-create with presence access and one item, unless
                    // publish-options say otherwise.
                    let mut cfg = PepNode { access_model: "presence".into(), max_items: 1, items: vec![] };
                    for (var, value) in &options {
                        match var.as_str() {
                            "pubsub#access_model" if value == "open" || value == "presence" => {
                                cfg.access_model = value.clone()
                            }
                            "pubsub#access_model" => {
                                drop(disk);
                                self.pubsub_error(iq, "cancel", "conflict", "precondition-not-met");
                                return;
                            }
                            "pubsub#max_items" => cfg.max_items = parse_max_items(value).unwrap_or(1),
                            _ => {}
                        }
                    }
                    acc.pep.entry(node.clone()).or_insert(cfg)
                }
            };
            node_cfg.items.retain(|(i, _)| *i != id);
            node_cfg.items.push((id.clone(), payload.clone()));
            let keep = node_cfg.max_items.clamp(1, MAX_ITEMS);
            let excess = node_cfg.items.len().saturating_sub(keep);
            node_cfg.items.drain(..excess);
        }
        let result = el("pubsub", NS_PUBSUB).child(
            el("publish", NS_PUBSUB)
                .with("node", node.clone())
                .child(el("item", NS_PUBSUB).with("id", id.clone())),
        );
        self.route(iq_result(iq, None, Some(result)), Origin::Server);

        // XEP-0163 §4.3.2: notify the owner's resources and the contacts subscribed to the
        // owner's presence (this server does not filter on entity capabilities).
        let event = |to: String| {
            el("message", NS_CLIENT)
                .with("from", owner.to_string())
                .with("to", to)
                .with("type", "headline")
                .with("id", self.next_id("ev"))
                .child(
                    el("event", NS_PUBSUB_EVENT).child(
                        el("items", NS_PUBSUB_EVENT)
                            .with("node", node.clone())
                            .child(el("item", NS_PUBSUB_EVENT).with("id", id.clone()).child(payload.clone())),
                    ),
                )
        };
        for full in self.available_sessions(owner) {
            self.send_to_session(&full, event(full.to_string()));
        }
        for (contact, item) in self.roster_of(owner) {
            if item.subscription.has_from() {
                self.route(event(contact.to_string()), Origin::Server);
            }
        }
    }

    /// XEP-0060 §6.5 item retrieval with the access checks of §6.5.9.
    fn pep_items(
        self: &Rc<Self>,
        owner: &BareJid,
        requester: &Jid,
        iq: &Element,
        items: &Element,
        is_owner: bool,
    ) {
        let Some(node) = items.attr("node") else {
            self.pubsub_error(iq, "modify", "bad-request", "nodeid-required");
            return;
        };
        let found = self.disk.borrow().accounts.get(owner).and_then(|a| a.pep.get(node).cloned());
        let Some(cfg) = found else {
            // §subscriber-retrieve-error-node
            self.reply_error(iq, "cancel", "item-not-found");
            return;
        };
        let allowed = is_owner
            || cfg.access_model == "open"
            || self.roster_of(owner).get(&requester.to_bare()).is_some_and(|i| i.subscription.has_from());
        if !allowed {
            // §subscriber-retrieve-error-presence
            self.pubsub_error(iq, "auth", "not-authorized", "presence-subscription-required");
            return;
        }
        let wanted: Vec<&str> =
            items.children().filter(|c| c.is("item", NS_PUBSUB)).filter_map(|c| c.attr("id")).collect();
        let mut chosen: Vec<&(String, Element)> =
            cfg.items.iter().filter(|(id, _)| wanted.is_empty() || wanted.contains(&id.as_str())).collect();
        if let Some(max) = items.attr("max_items").and_then(|m| m.parse::<usize>().ok()) {
            // §subscriber-retrieve-requestrecent: the most recent N.
            let skip = chosen.len().saturating_sub(max);
            chosen.drain(..skip);
        }
        if !wanted.is_empty() && chosen.is_empty() {
            // §subscriber-retrieve-error-items
            self.reply_error(iq, "cancel", "item-not-found");
            return;
        }
        let mut out = el("items", NS_PUBSUB).with("node", node);
        for (id, payload) in chosen {
            out.append_child(el("item", NS_PUBSUB).with("id", id.clone()).child(payload.clone()));
        }
        self.route(
            iq_result(iq, Some(&owner.to_string()), Some(el("pubsub", NS_PUBSUB).child(out))),
            Origin::Server,
        );
    }
}

fn parse_max_items(v: &str) -> Option<usize> {
    if v == "max" { Some(MAX_ITEMS) } else { v.parse().ok() }
}

/// The fields of a XEP-0060 §7.1.5 `<publish-options/>` data form.
fn publish_options(pubsub: &Element) -> Vec<(String, String)> {
    let Some(form) = pubsub.get_child("publish-options", NS_PUBSUB).and_then(|o| o.get_child("x", NS_DATA))
    else {
        return vec![];
    };
    form.children()
        .filter(|f| f.is("field", NS_DATA))
        .filter_map(|f| {
            let var = f.attr("var")?;
            if var == "FORM_TYPE" {
                return None;
            }
            let value = f.get_child("value", NS_DATA).map(|v| v.text()).unwrap_or_default();
            Some((var.to_owned(), value))
        })
        .collect()
}
