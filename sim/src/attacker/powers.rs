//! The powers: how each acts on a stanza, how it is counted, and whether it decides how the
//! stanza travels. Adding a power: its `ActionSpec`, `Action`, `from_spec` arm and `POWERS`
//! entry in `plan.rs` (the schema takes `ActionSpec` from there), its arms in `act` and
//! `power` here.

use core::time::Duration;

use base64::Engine as _;
use jabberwock_e2e::kit::codec::{armor_body, dearmor_body};
use jabberwock_e2e::xml::ElementExt;
use jabberwock_e2e::xml::{NS_CLIENT, NS_PUBSUB, el};
use jabberwock_e2e::{BareJid, Cx, Element, Jid, Protocol, Theft};
use jabberwock_xmpp::{Hop, Release};
use rand_core::RngCore;

use super::forge::recorded_items;
use super::plan::{Action, Encoding, HopKind, Rule, StanzaKind};
use super::{Attacker, REORDER_MAX_HOLD};

impl Attacker {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn act(
        &mut self,
        rule: usize,
        action: &Action,
        (at, hop): (Duration, &Hop),
        stanza: Element,
        id: &str,
        slot_busy: bool,
        log: &mut Vec<String>,
    ) -> Vec<Release> {
        let tag = format!("rule {rule}");
        // Powers that may find nothing to change count only when they change something.
        if !matches!(
            action,
            Action::Substitute { .. }
                | Action::Impersonate(_)
                | Action::Republish { .. }
                | Action::Reencrypt { .. }
                | Action::Set(..)
                | Action::Strip(_)
                | Action::Replace(..)
                | Action::Flip(..)
                | Action::FlipCiphertext(_)
                | Action::Downgrade(_)
                | Action::Rollback
        ) {
            *self.acted.entry(action.power()).or_default() += 1;
        }
        match action {
            Action::Observe => {
                log.push(format!("observes {id} ({tag})"));
                vec![Release::Now(stanza)]
            }
            Action::Drop => {
                log.push(format!("drops {id} ({tag})"));
                vec![]
            }
            Action::Delay(d) => {
                log.push(format!("delays {id} by {} ({tag})", crate::units::fmt_time(*d)));
                let t = self.hold(hop, stanza);
                vec![Release::Later { after: *d, ticket: t }]
            }
            Action::Jitter(max) => {
                let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
                let d = Duration::from_millis(self.rng.next_u64() % ms.saturating_add(1));
                log.push(format!("delays {id} by {} at random ({tag})", crate::units::fmt_time(d)));
                let t = self.hold(hop, stanza);
                vec![Release::Later { after: d, ticket: t }]
            }
            Action::Reorder if slot_busy => {
                log.push(format!("lets {id} overtake the held stanza ({tag})"));
                vec![Release::Now(stanza)]
            }
            Action::Reorder => {
                log.push(format!("holds {id} until the next stanza on this hop passes ({tag})"));
                let t = self.hold(hop, stanza);
                self.reorder_slot.insert(hop.clone(), t.0);
                vec![Release::Later { after: REORDER_MAX_HOLD, ticket: t }]
            }
            Action::Duplicate(n) => {
                log.push(format!("duplicates {id} ×{n} ({tag})"));
                vec![Release::Now(stanza); *n as usize + 1]
            }
            Action::Replay(d) => {
                log.push(format!("records {id} to replay it in {} ({tag})", crate::units::fmt_time(*d)));
                let t = self.hold(hop, stanza.clone());
                vec![Release::Now(stanza), Release::Later { after: *d, ticket: t }]
            }
            Action::Strip(name) => {
                let mut s = stanza;
                let n = strip(&mut s, name);
                if n > 0 {
                    *self.acted.entry(action.power()).or_default() += 1;
                }
                log.push(format!("strips {n} <{name}/> from {id} ({tag})"));
                vec![Release::Now(s)]
            }
            Action::Replace(name, with) => {
                let mut s = stanza;
                let done = replace_first(&mut s, name, with);
                if done {
                    *self.acted.entry(action.power()).or_default() += 1;
                }
                log.push(format!("{} <{name}/> in {id} ({tag})", if done { "replaces" } else { "finds no" }));
                vec![Release::Now(s)]
            }
            Action::Rewrite(with) => {
                let mut s = with.clone();
                for attr in ["from", "to", "id"] {
                    if let Some(v) = stanza.attr(attr) {
                        s.set(attr, v.to_owned());
                    }
                }
                log.push(format!("rewrites {id} as a <{}/> ({tag})", s.name()));
                vec![Release::Now(s)]
            }
            Action::Set(attr, value, element) => {
                let mut s = stanza;
                let target = match element {
                    None => Some(&mut s),
                    Some(path) => find_path_mut(&mut s, path),
                };
                let on = element.as_ref().map(|e| format!(" on <{e}/>")).unwrap_or_default();
                match target {
                    Some(t) => {
                        let before = t.attr(attr.as_str()).unwrap_or("(none)").to_owned();
                        t.set(attr, value.clone());
                        *self.acted.entry(action.power()).or_default() += 1;
                        log.push(format!("sets {attr}='{value}' (was '{before}'){on} in {id} ({tag})"));
                    }
                    None => log.push(format!("finds nothing to set {attr} on{on} in {id} ({tag})")),
                }
                vec![Release::Now(s)]
            }
            Action::Flip(name, bit, encoding) => {
                let mut s = stanza;
                match flip(&mut s, name, *bit, *encoding) {
                    Some((flipped, what)) => {
                        *self.acted.entry(action.power()).or_default() += 1;
                        log.push(format!("flips bit {flipped} of {what} <{name}/> in {id} ({tag})"))
                    }
                    None => log.push(format!("finds no <{name}/> text to flip in {id} ({tag})")),
                }
                vec![Release::Now(s)]
            }
            Action::FlipCiphertext(bit) => {
                let mut s = stanza;
                match flip_ciphertext(&self.plan.protocols, &mut s, *bit) {
                    Some((flipped, what)) => {
                        *self.acted.entry(action.power()).or_default() += 1;
                        log.push(format!("flips bit {flipped} of the ciphertext ({what}) in {id} ({tag})"))
                    }
                    None => log.push(format!("finds no ciphertext to flip in {id} ({tag})")),
                }
                vec![Release::Now(s)]
            }
            Action::Downgrade(body) => {
                let mut s = stanza;
                let done = self.plan.protocols.iter().any(|p| p.wire().strip_encryption(&mut s, body));
                if done {
                    *self.acted.entry(action.power()).or_default() += 1;
                    log.push(format!("strips the encryption from {id}, a plain body in its place ({tag})"));
                } else {
                    log.push(format!("finds no encryption to strip in {id} ({tag})"));
                }
                vec![Release::Now(s)]
            }
            Action::Rollback => {
                let mut s = stanza;
                // Most stanzas carry no offer: they pass unremarked (as `substitute` leaves
                // stanzas without the node).
                if let Some(w) = self.plan.protocols.iter().find_map(|p| p.wire().withdraw_newest(&mut s)) {
                    *self.acted.entry(action.power()).or_default() += 1;
                    log.push(format!("withdraws {} in {id}, leaving {} ({tag})", w.removed, w.left));
                    self.withdrawn.push(w);
                }
                vec![Release::Now(s)]
            }
            Action::Substitute { node, owner, with } => {
                let mut s = stanza;
                let from_owner = owner.as_ref().is_none_or(|o| {
                    s.attr("from").and_then(|f| f.parse::<Jid>().ok()).is_some_and(|j| j.to_bare() == *o)
                });
                let n = if from_owner { substitute(&mut s, node, with) } else { 0 };
                if n > 0 {
                    *self.acted.entry("substitute").or_default() += 1;
                    log.push(format!("substitutes {n} item(s) of {node} in {id} ({tag})"));
                }
                vec![Release::Now(s)]
            }
            Action::Republish { of, as_ } => self.republish(of, as_, hop, stanza, id, &tag, log),
            Action::Reencrypt { stolen, body } => {
                let own_copy = matches!(hop,
                    Hop::ServerToClient { client, .. } | Hop::ClientToServer { client, .. } if client == stolen);
                let conversation = self.plan.protocols.iter().any(|p| p.wire().carries_conversation(&stanza));
                if own_copy || stanza.name() != "message" || !conversation {
                    return vec![Release::Now(stanza)];
                }
                let Some(engine) = self.stolen.iter().rev().find(|(_, d, _)| d == stolen).map(|(_, _, e)| e)
                else {
                    log.push(format!(
                        "cannot re-encrypt {id}: it holds no stolen state of {stolen} yet ({tag})"
                    ));
                    return vec![Release::Now(stanza)];
                };
                let mut reader = engine.steal(Theft::FullState);
                let protocol = reader.protocol();
                let mut cx = Cx { rng: &mut self.rng, now: self.epoch + at };
                match reader.reencrypt(&mut cx, &stanza, body) {
                    Ok(Some(altered)) => {
                        *self.acted.entry(action.power()).or_default() += 1;
                        log.push(format!(
                            "re-encrypts {id} for its other recipients under the payload key the stolen state of \
                             {stolen} reads in it: {body:?} in place of its text, {stolen}'s key removed ({tag})"
                        ));
                        vec![Release::Now(altered)]
                    }
                    Ok(None) => {
                        log.push(format!(
                            "cannot re-encrypt {id}: {protocol} encrypts nothing once for several recipients ({tag})"
                        ));
                        vec![Release::Now(stanza)]
                    }
                    Err(e) => {
                        log.push(format!(
                            "cannot re-encrypt {id} with the stolen state of {stolen}: {e} ({tag})"
                        ));
                        vec![Release::Now(stanza)]
                    }
                }
            }
            Action::Impersonate(owner) => {
                if let Some(releases) = self.in_the_middle(owner, at, hop, &stanza, &tag, log) {
                    return releases;
                }
                let mut s = stanza;
                let from_owner =
                    s.attr("from").and_then(|f| f.parse::<Jid>().ok()).is_some_and(|j| j.to_bare() == *owner);
                let mut replaced = Vec::new();
                if let Some(impostor) = self.impostors.get(owner).filter(|_| from_owner) {
                    // The owner's server found no such node: the impostor's server answers.
                    let asked = s
                        .attr("id")
                        .filter(|_| s.name() == "iq" && s.attr("type") == Some("error"))
                        .and_then(|id| self.requests.get(&(owner.clone(), id.to_owned())))
                        .filter(|node| impostor.items.contains_key(*node));
                    if let Some(node) = asked {
                        s = iq_result_with_items(&s, node);
                    }
                    for (node, items) in &impostor.items {
                        if replace_items(&mut s, node, items) {
                            replaced.push(node.clone());
                        }
                    }
                }
                if !replaced.is_empty() {
                    *self.acted.entry("impersonate").or_default() += 1;
                    log.push(format!(
                        "serves its own keys as {owner}'s on {} in {id} ({tag})",
                        replaced.join(", ")
                    ));
                }
                vec![Release::Now(s)]
            }
        }
    }
}

impl Attacker {
    /// [`Action::Republish`]: in what `as_` serves anyone but its own devices, the items of
    /// each node become the latest the attacker recorded of `of` for the same node; a read of a
    /// node `as_` lacks is answered with them, as `as_`'s server would if the node were there.
    #[allow(clippy::too_many_arguments)]
    fn republish(
        &mut self,
        of: &BareJid,
        as_: &BareJid,
        hop: &Hop,
        stanza: Element,
        id: &str,
        tag: &str,
        log: &mut Vec<String>,
    ) -> Vec<Release> {
        let mut s = stanza;
        // `as_`'s own devices read their own nodes as they are (a device missing from its own
        // list would publish it again, and again).
        let to_own = matches!(hop,
            Hop::ServerToClient { client, .. } | Hop::ClientToServer { client, .. } if client.to_bare() == *as_);
        let from_as = s.attr("from").and_then(|f| f.parse::<Jid>().ok()).is_some_and(|j| j.to_bare() == *as_);
        if to_own || !from_as {
            return vec![Release::Now(s)];
        }
        let recorded = |node: &str| -> Vec<(String, Element)> {
            recorded_items(&self.seen, of, node)
                .into_iter()
                .filter_map(|item| {
                    let payload = item.children().next()?.clone();
                    Some((item.attr("id")?.to_owned(), payload))
                })
                .collect()
        };
        let asked = s
            .attr("id")
            .filter(|_| s.name() == "iq" && s.attr("type") == Some("error"))
            .and_then(|i| self.requests.get(&(as_.clone(), i.to_owned())))
            .filter(|node| !recorded(node).is_empty())
            .cloned();
        if let Some(node) = asked {
            s = iq_result_with_items(&s, &node);
        }
        let mut served = Vec::new();
        for node in item_nodes(&s) {
            let items = recorded(&node);
            if !items.is_empty() && replace_items(&mut s, &node, &items) {
                served.push(node);
            }
        }
        if !served.is_empty() {
            *self.acted.entry("republish").or_default() += 1;
            log.push(format!(
                "serves {of}'s recorded items as {as_}'s on {} in {id} ({tag})",
                served.join(", ")
            ));
        }
        vec![Release::Now(s)]
    }
}

/// The nodes of the `<items/>` elements in a pubsub result or event notification, in order.
fn item_nodes(el: &Element) -> Vec<String> {
    let mut nodes = Vec::new();
    for child in el.children() {
        if child.name() == "items"
            && let Some(node) = child.attr("node")
        {
            if !nodes.iter().any(|n| n == node) {
                nodes.push(node.to_owned());
            }
        } else {
            for n in item_nodes(child) {
                if !nodes.contains(&n) {
                    nodes.push(n);
                }
            }
        }
    }
    nodes
}

fn jid_matches(pattern: &str, value: Option<&str>) -> bool {
    let Some(v) = value else { return false };
    v == pattern || v.strip_prefix(pattern).is_some_and(|rest| rest.starts_with('/'))
}

fn any_element(el: &Element, f: &dyn Fn(&Element) -> bool) -> bool {
    f(el) || el.children().any(|c| any_element(c, f))
}

pub(super) fn matches(
    rule: &Rule,
    protocols: &[Protocol],
    at: Duration,
    hop: &Hop,
    stanza: &Element,
) -> bool {
    let m = &rule.matcher;
    let hop_ok = m.hop.is_none_or(|k| {
        matches!(
            (k, hop),
            (HopKind::C2s, Hop::ClientToServer { .. })
                | (HopKind::S2s, Hop::ServerToServer { .. })
                | (HopKind::S2c, Hop::ServerToClient { .. })
        )
    });
    let kind_ok = m.kind.is_none_or(|k| {
        let name = match k {
            StanzaKind::Message => "message",
            StanzaKind::Presence => "presence",
            StanzaKind::Iq => "iq",
        };
        stanza.name() == name && stanza.ns() == NS_CLIENT
    });
    hop_ok
        && kind_ok
        && m.stanza_type.as_deref().is_none_or(|t| jabberwock_xmpp::stanza::stanza_type(stanza) == t)
        && m.from.as_deref().is_none_or(|p| jid_matches(p, stanza.attr("from")))
        && m.to.as_deref().is_none_or(|p| jid_matches(p, stanza.attr("to")))
        && m.element.as_deref().is_none_or(|n| stanza.children().any(|c| any_element(c, &|e| e.name() == n)))
        && m.namespace.as_deref().is_none_or(|ns| any_element(stanza, &|e| e.ns() == ns))
        && m.text
            .as_deref()
            .is_none_or(|t| stanza.get_child("body", NS_CLIENT).is_some_and(|b| b.text().contains(t)))
        && (m.attributes.is_empty() || {
            let has = |e: &Element| {
                m.element.as_deref().is_none_or(|n| e.name() == n)
                    && m.attributes.iter().all(|(name, value)| e.attr(name.as_str()) == Some(value.as_str()))
            };
            // `element` names an element inside the stanza; without it the stanza counts too.
            (m.element.is_none() && has(stanza)) || stanza.children().any(|c| any_element(c, &has))
        })
        && m.window.is_none_or(|w| w.min <= at && at <= w.max)
        && m.conversation.is_none_or(|c| protocols.iter().any(|p| p.wire().carries_conversation(stanza)) == c)
        && m.protected.is_none_or(|want| {
            // What `downgrade` could strip, tried on a copy.
            protocols.iter().any(|p| p.wire().strip_encryption(&mut stanza.clone(), "")) == want
        })
}

/// Flips bit `bit` of the encrypted content the first protocol's wire description finds in
/// `stanza` (wrapped around it, negative from its end) and puts it back encoded. Where the
/// changed bytes cannot be put back (text that would no longer be UTF-8 or XML), the next
/// bits are tried. Returns the bit flipped, counted in the whole decoded blob, and what it is.
fn flip_ciphertext(protocols: &[Protocol], stanza: &mut Element, bit: i64) -> Option<(u32, &'static str)> {
    let (wire, ct) = protocols.iter().find_map(|p| Some((p.wire(), p.wire().ciphertext(stanza)?)))?;
    let content_bits = ct.content.len() * 8;
    if content_bits == 0 {
        return None;
    }
    (0..content_bits).find_map(|k| {
        let i = ct.content.start * 8 + (bit_index(bit, content_bits) + k) % content_bits;
        let mut bytes = ct.bytes.clone();
        bytes[i / 8] ^= 1 << (i % 8);
        let mut changed = stanza.clone();
        wire.set_ciphertext(&mut changed, &bytes).then(|| {
            *stanza = changed;
            (u32::try_from(i).unwrap_or(u32::MAX), ct.what)
        })
    })
}

/// Removes every descendant named `name`; returns how many.
fn strip(el: &mut Element, name: &str) -> usize {
    let nodes = el.take_nodes();
    let mut removed = 0;
    for node in nodes {
        match node {
            minidom::Node::Element(mut child) => {
                if child.name() == name {
                    removed += 1;
                } else {
                    removed += strip(&mut child, name);
                    el.append_child(child);
                }
            }
            minidom::Node::Text(t) => el.append_text(t),
        }
    }
    removed
}

fn replace_first(el: &mut Element, name: &str, with: &Element) -> bool {
    for child in el.children_mut() {
        if child.name() == name {
            *child = with.clone();
            return true;
        }
        if replace_first(child, name, with) {
            return true;
        }
    }
    false
}

fn find_first_mut<'a>(el: &'a mut Element, name: &str) -> Option<&'a mut Element> {
    for child in el.children_mut() {
        if child.name() == name {
            return Some(child);
        }
        if let Some(found) = find_first_mut(child, name) {
            return Some(found);
        }
    }
    None
}

/// The element a path `a/b/c` names: the first `a` at any depth, then its child `b`, then that
/// one's child `c`.
fn find_path_mut<'a>(el: &'a mut Element, path: &str) -> Option<&'a mut Element> {
    let mut steps = path.split('/');
    let mut target = find_first_mut(el, steps.next()?)?;
    for step in steps {
        target = target.children_mut().find(|c| c.name() == step)?;
    }
    Some(target)
}

/// Flips one bit in the text of the first `name` element: in the decoded payload when the
/// text is base64, in the UTF-8 bytes otherwise. Returns which it was.
/// A path `a/b/c` names the first `a` (at any depth), then its child `b`, then that one's
/// child `c` (XML Encryption keeps a `CipherValue` in every `EncryptedKey` before the content's).
fn flip(el: &mut Element, name: &str, bit: i64, encoding: Option<Encoding>) -> Option<(u32, &'static str)> {
    let target = find_path_mut(el, name)?;
    let text = target.text();
    if text.is_empty() {
        return None;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    if encoding == Some(Encoding::Armor) {
        let mut bytes = dearmor_body(&text).ok()?;
        let i = bit_index(bit, bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        let _ = target.take_nodes();
        target.append_text(armor_body(&bytes));
        return Some((i as u32, "the armoured packets (CRC-24 recomputed) of"));
    }
    // Base64 may be wrapped (XML Security's serialisers break it every 64 columns): white
    // space is not part of it.
    let compact: String = text.chars().filter(|c| !matches!(c, ' ' | '\t' | '\n' | '\r')).collect();
    let trimmed = compact.as_str();
    let decoded = b64.decode(trimmed).ok().filter(|b| !b.is_empty());
    let as_b64 = match encoding {
        Some(Encoding::Base64) => decoded,
        Some(Encoding::Text | Encoding::Armor) => None,
        None => decoded.filter(|_| trimmed.len() >= 16 && trimmed.len().is_multiple_of(4)),
    };
    let (bytes, is_b64) = match as_b64 {
        Some(b) => (b, true),
        None => (text.clone().into_bytes(), false),
    };
    // In text, a flip must leave characters XML can carry (XML 1.0 §2.2), or the stanza
    // could not be serialised at all: try the following bits until one does.
    let total = bytes.len() * 8;
    let (flipped, new_text) = (0..total).find_map(|k| {
        let i = (bit_index(bit, total) + k) % total;
        let mut b = bytes.clone();
        b[i / 8] ^= 1 << (i % 8);
        if is_b64 {
            return Some((i, b64.encode(&b)));
        }
        let t = String::from_utf8(b).ok()?;
        t.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r')).then_some((i, t))
    })?;
    let children: Vec<Element> = target.children().cloned().collect();
    let _ = target.take_nodes();
    target.append_text(new_text);
    for c in children {
        target.append_child(c);
    }
    Some((flipped as u32, if is_b64 { "the base64 payload of" } else { "the text of" }))
}

/// A bit position in a payload of `total` bits: wrapped around, negative from the end.
fn bit_index(bit: i64, total: usize) -> usize {
    let total = total.max(1) as i64;
    bit.rem_euclid(total) as usize
}

/// `(owner, id, node)` of an `<iq type='get'><pubsub><items node/></pubsub></iq>`.
pub(super) fn items_request(stanza: &Element) -> Option<(BareJid, String, String)> {
    if stanza.name() != "iq" || stanza.attr("type") != Some("get") {
        return None;
    }
    let items = stanza.get_child("pubsub", NS_PUBSUB)?.get_child("items", NS_PUBSUB)?;
    let owner = stanza.attr("to")?.parse::<Jid>().ok()?.to_bare();
    Some((owner, stanza.attr("id")?.to_owned(), items.attr("node")?.to_owned()))
}

/// An empty pubsub result for `node` answering the same request as the error `error`.
fn iq_result_with_items(error: &Element, node: &str) -> Element {
    let mut result = el("iq", NS_CLIENT).with("type", "result");
    for attr in ["id", "from", "to"] {
        if let Some(v) = error.attr(attr) {
            result.set(attr, v);
        }
    }
    result.child(el("pubsub", NS_PUBSUB).child(el("items", NS_PUBSUB).with("node", node)))
}

/// Replaces all items of `node` in pubsub results and event notifications by `items`.
fn replace_items(el: &mut Element, node: &str, items: &[(String, Element)]) -> bool {
    let mut done = false;
    for child in el.children_mut() {
        if child.name() == "items" && child.attr("node") == Some(node) {
            let ns = child.ns();
            let _ = child.take_nodes();
            for (id, payload) in items {
                child.append_child(
                    jabberwock_e2e::xml::el("item", &ns).with("id", id.clone()).child(payload.clone()),
                );
            }
            done = true;
        } else {
            done |= replace_items(child, node, items);
        }
    }
    done
}

/// Replaces the payload of each item of `node` in pubsub results and event notifications.
fn substitute(el: &mut Element, node: &str, with: &Element) -> usize {
    let mut n = 0;
    for child in el.children_mut() {
        if child.name() == "items" && child.attr("node") == Some(node) {
            for item in child.children_mut().filter(|i| i.name() == "item") {
                let _ = item.take_nodes();
                item.append_child(with.clone());
                n += 1;
            }
        } else {
            n += substitute(child, node, with);
        }
    }
    n
}

impl Action {
    /// Whether this power decides how the stanza travels (and so ends rule evaluation), as
    /// opposed to observing or modifying it.
    pub fn delivers(&self) -> bool {
        matches!(
            self,
            Action::Drop
                | Action::Delay(_)
                | Action::Jitter(_)
                | Action::Reorder
                | Action::Duplicate(_)
                | Action::Replay(_)
        )
    }

    /// The power's name, as `acted:` counts it.
    pub fn power(&self) -> &'static str {
        match self {
            Action::Observe => "observe",
            Action::Drop => "drop",
            Action::Delay(_) => "delay",
            Action::Jitter(_) => "jitter",
            Action::Reorder => "reorder",
            Action::Duplicate(_) => "duplicate",
            Action::Replay(_) => "replay",
            Action::Strip(_) => "strip",
            Action::Replace(..) => "replace",
            Action::Rewrite(_) => "rewrite",
            Action::Set(..) => "set",
            Action::Flip(..) | Action::FlipCiphertext(_) => "flip",
            Action::Downgrade(_) => "downgrade",
            Action::Rollback => "rollback",
            Action::Substitute { .. } => "substitute",
            Action::Impersonate(_) => "impersonate",
            Action::Republish { .. } => "republish",
            Action::Reencrypt { .. } => "reencrypt",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The protocol-neutral flip goes through the wire description: for the control, the body
    /// text itself, moving on past bits that would not leave text XML can carry.
    #[test]
    fn flip_ciphertext_asks_the_protocol_where_its_ciphertext_is() {
        let plain: Protocol = "plain".parse().unwrap();
        let mut m: Element =
            "<message xmlns='jabber:client' type='chat'><body>A</body></message>".parse().unwrap();
        assert_eq!(flip_ciphertext(&[plain], &mut m, 6), Some((0, "the body, in clear")));
        assert_eq!(m.get_child("body", NS_CLIENT).unwrap().text(), "@");
        // Nothing to flip in a stanza without the conversation, or with no protocol to ask.
        let mut iq: Element = "<iq xmlns='jabber:client' type='get' id='1'/>".parse().unwrap();
        assert_eq!(flip_ciphertext(&[plain], &mut iq, 6), None);
        assert_eq!(flip_ciphertext(&[], &mut m, 6), None);
    }

    #[test]
    fn flip_changes_one_payload_bit() {
        let mut el: Element =
            "<m xmlns='jabber:client'><payload xmlns='urn:x'>AAAAAAAAAAAAAAAAAAAAAAAA</payload></m>"
                .parse()
                .unwrap();
        assert_eq!(flip(&mut el, "payload", 9, None), Some((9, "the base64 payload of")));
        let mut word: Element = "<m xmlns='jabber:client'><body>password</body></m>".parse().unwrap();
        assert_eq!(flip(&mut word, "body", 0, None), Some((0, "the text of")));
        assert_eq!(word.children().next().unwrap().text(), "qassword");
        // Bit 6 of 'A' gives a control character and bit 7 invalid UTF-8: the flip moves on
        // (wrapping around) to the first bit that leaves text XML can carry.
        let mut word: Element = "<m xmlns='jabber:client'><body>A</body></m>".parse().unwrap();
        assert_eq!(flip(&mut word, "body", 6, None), Some((0, "the text of")));
        assert_eq!(word.children().next().unwrap().text(), "@");
        let text = el.children().next().unwrap().text();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(text).unwrap(), {
            let mut v = vec![0u8; 18];
            v[1] = 2;
            v
        });
    }

    /// Base64 wrapped in lines (as xmlsec1 writes a CipherValue) is still base64: the flip
    /// lands in the decoded bytes, not in the text.
    #[test]
    fn flip_reads_wrapped_base64() {
        let mut el: Element =
            "<m xmlns='jabber:client'><c xmlns='urn:x'>AAAAAAAAAAAAAAAA\nAAAAAAAA\n</c></m>".parse().unwrap();
        assert_eq!(flip(&mut el, "c", 9, Some(Encoding::Base64)), Some((9, "the base64 payload of")));
        let text = el.children().next().unwrap().text();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(text).unwrap()[1], 2);
    }

    #[test]
    fn strip_and_replace_reach_nested_elements() {
        let mut el: Element =
            "<m xmlns='jabber:client'><a><body>x</body></a><body>y</body></m>".parse().unwrap();
        assert_eq!(strip(&mut el, "body"), 2);
        let mut el: Element = "<m xmlns='jabber:client'><a><body>x</body></a></m>".parse().unwrap();
        let with: Element = "<body xmlns='jabber:client'>evil</body>".parse().unwrap();
        assert!(replace_first(&mut el, "body", &with));
        assert_eq!(el.children().next().unwrap().children().next().unwrap().text(), "evil");
    }
}
