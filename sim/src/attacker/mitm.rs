//! The man in the middle: the attacker's own engines posing as each side of a session protocol
//! (one that publishes no keys), and the impostor that serves its own keys as someone else's.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use jabberwock_e2e::xml::ElementExt;
use jabberwock_e2e::{
    Action as EngineAction, BareJid, Cx, Element, Engine, EngineConfig, Event, FullJid, Jid, Output,
    Protocol, new_engine,
};
use jabberwock_xmpp::{Hop, Release};
use rand_chacha::ChaCha20Rng;

use super::Attacker;
use super::forge::learn;

/// The attacker's own engine posing as an account, and the PEP items it publishes.
#[derive(Debug)]
pub struct Impostor {
    /// The engine that holds the impostor's keys (and reads what is encrypted to them).
    pub engine: Box<dyn Engine>,
    /// Items by PEP node, as the engine would publish them.
    pub items: BTreeMap<String, Vec<(String, Element)>>,
    /// The protocol (to make the engines that pose as the victims).
    pub protocol: Protocol,
    /// For protocols that publish no keys (a session protocol: OTR, ESessions), the man in the
    /// middle: engines posing as each victim toward the owner, by victim account.
    pub toward_owner: BTreeMap<BareJid, Box<dyn Engine>>,
    /// The victims' devices, as seen on their hops.
    pub victims: BTreeMap<BareJid, FullJid>,
    /// The owner's full JID, once seen.
    pub owner_device: Option<Jid>,
    /// What the relays read, live: (when, body, how).
    pub read: Vec<(Duration, String, String)>,
    /// The `<iq/>` requests its engines sent, as (to whom, id): only their answers are taken
    /// off the wire (each engine numbers its own requests, so an id alone is ambiguous).
    pub asked: BTreeSet<(BareJid, String)>,
}

impl Attacker {
    /// The man in the middle of a session protocol (one that publishes no keys, so there is
    /// nothing to substitute): chat messages between `owner` and a victim of this server are
    /// taken off their hops and handed to the attacker's own engines — one posing as `owner`
    /// toward the victim, one posing as the victim toward `owner` — which run the real
    /// protocol with each side; whatever one of them decrypts, the other re-encrypts and
    /// sends on. `None` when the stanza is not such a message (or the protocol publishes
    /// keys: then substitution is the attack).
    pub(super) fn in_the_middle(
        &mut self,
        owner: &BareJid,
        at: Duration,
        hop: &Hop,
        stanza: &Element,
        tag: &str,
        log: &mut Vec<String>,
    ) -> Option<Vec<Release>> {
        let imp = self.impostors.get_mut(owner).filter(|i| i.items.is_empty())?;
        // The owner's own devices (carbons, notes to self) are not victims.
        let device = match hop {
            Hop::ClientToServer { client, .. } | Hop::ServerToClient { client, .. } => client,
            Hop::ServerToServer { .. } => return None,
        };
        if device.to_bare() == *owner {
            return None;
        }
        let bare = |a: Option<&str>| a.and_then(|j| j.parse::<Jid>().ok()).map(|j| j.to_bare());
        let now = self.epoch + at;
        if stanza.name() == "presence" {
            return self.presence_in_the_middle(owner, now, hop, stanza);
        }
        // What the session protocols exchange: chat messages, and (XTLS) the engine's own
        // `<iq/>` requests and the answers to the ones its engines sent.
        let sender = match hop {
            Hop::ClientToServer { client, .. } => Some(client.to_bare()),
            _ => bare(stanza.attr("from")),
        };
        let answer = stanza.attr("id").zip(sender).map(|(id, s)| (s, id.to_owned()));
        let engine_iq = is_engine_iq(imp.engine.as_ref(), stanza, &imp.asked, answer.as_ref());
        if !(engine_iq || stanza.name() == "message" && stanza.attr("type") != Some("error")) {
            return None;
        }

        let mut releases = Vec::new();
        let read_before = imp.read.len();
        match hop {
            // The victim writes to the owner: the impostor posing as the owner answers.
            Hop::ClientToServer { client, server } if bare(stanza.attr("to")).as_ref() == Some(owner) => {
                let victim = client.to_bare();
                imp.victims.insert(victim.clone(), client.clone());
                // An `<iq/>` goes to one of the owner's devices: the impostor answers as it.
                if let Some(to) =
                    stanza.attr("to").and_then(|t| t.parse::<FullJid>().ok()).filter(|_| engine_iq)
                {
                    imp.owner_device = Some(Jid::from(to));
                }
                let mut s = stanza.clone();
                s.set("from", client.to_string());
                let mut cx = Cx { rng: &mut self.rng, now };
                let out = receive_all(imp.engine.as_mut(), &mut cx, &s);
                learn(&mut self.learned, at, &victim, imp.engine.as_ref());
                log.push(format!(
                    "takes {} from {client} into its engine posing as {owner} ({tag})",
                    id_of(stanza)
                ));
                let owner_jid = imp.owner_device.clone().unwrap_or_else(|| Jid::from(owner.clone()));
                for m in sends(&out) {
                    releases.push(to_victim(m, &owner_jid, client, server));
                }
                for body in plaintexts(&out) {
                    imp.read.push((
                        at,
                        body.clone(),
                        format!("in the middle, posing as {owner} to {victim}"),
                    ));
                    let relay = imp.toward_owner.entry(victim.clone()).or_insert_with(|| {
                        new_engine(imp.protocol, client, &mut self.rng, &EngineConfig::default())
                    });
                    let mut cx = Cx { rng: &mut self.rng, now };
                    if let Ok(out) = relay.send(&mut cx, owner, &body) {
                        for m in sends(&out) {
                            releases.push(Release::Reroute {
                                hop: Hop::ClientToServer { client: client.clone(), server: server.clone() },
                                stanza: m,
                            });
                        }
                    }
                }
            }
            // The owner writes to the victim: the impostor posing as the victim answers.
            Hop::ServerToClient { server, client } if bare(stanza.attr("from")).as_ref() == Some(owner) => {
                let victim = client.to_bare();
                imp.victims.insert(victim.clone(), client.clone());
                if let Some(from) = stanza.attr("from").and_then(|f| f.parse::<Jid>().ok()) {
                    imp.owner_device = Some(from);
                }
                let relay = imp.toward_owner.entry(victim.clone()).or_insert_with(|| {
                    new_engine(imp.protocol, client, &mut self.rng, &EngineConfig::default())
                });
                let mut cx = Cx { rng: &mut self.rng, now };
                let out = receive_all(relay.as_mut(), &mut cx, stanza);
                learn(&mut self.learned, at, owner, relay.as_ref());
                log.push(format!(
                    "takes {} to {client} into its engine posing as {victim} ({tag})",
                    id_of(stanza)
                ));
                for m in sends(&out) {
                    releases.push(Release::Reroute {
                        hop: Hop::ClientToServer { client: client.clone(), server: server.clone() },
                        stanza: m,
                    });
                }
                let owner_jid = imp.owner_device.clone().unwrap_or_else(|| Jid::from(owner.clone()));
                for body in plaintexts(&out) {
                    imp.read.push((
                        at,
                        body.clone(),
                        format!("in the middle, posing as {victim} to {owner}"),
                    ));
                    let mut cx = Cx { rng: &mut self.rng, now };
                    if let Ok(out) = imp.engine.send(&mut cx, &victim, &body) {
                        for m in sends(&out) {
                            releases.push(to_victim(m, &owner_jid, client, server));
                        }
                    }
                }
            }
            _ => return None,
        }
        if let Some(answer) = answer.filter(|_| matches!(stanza.attr("type"), Some("result" | "error"))) {
            imp.asked.remove(&answer);
        }
        remember_requests(&mut imp.asked, releases.iter().filter_map(released));
        // It acted when its engines made something of the stanza: an answer, a relayed copy or
        // a plaintext (a stanza they ignore is merely dropped).
        if !releases.is_empty() || imp.read.len() > read_before {
            *self.acted.entry("impersonate").or_default() += 1;
        }
        Some(releases)
    }
}

impl Attacker {
    /// Presence passes unchanged, but the attacker's engines read it as the clients would:
    /// a protocol that learns its peers' devices from presence (XTLS announces support in
    /// XEP-0115 caps) must know them to talk to them. The owner's presence goes to the relay
    /// posing as the victim; the victim's (broadcast, or directed to the owner) to the
    /// impostor posing as the owner. Whatever they send in answer goes out as theirs.
    fn presence_in_the_middle(
        &mut self,
        owner: &BareJid,
        now: Duration,
        hop: &Hop,
        stanza: &Element,
    ) -> Option<Vec<Release>> {
        let imp = self.impostors.get_mut(owner)?;
        let from = stanza.attr("from").and_then(|j| j.parse::<Jid>().ok());
        let to = stanza.attr("to").and_then(|j| j.parse::<Jid>().ok());
        let mut releases = vec![Release::Now(stanza.clone())];
        match hop {
            Hop::ServerToClient { server, client }
                if from.as_ref().is_some_and(|f| f.to_bare() == *owner) =>
            {
                if let Some(f) = from.filter(|f| f.resource().is_some()) {
                    imp.owner_device = Some(f);
                }
                let relay = imp.toward_owner.entry(client.to_bare()).or_insert_with(|| {
                    new_engine(imp.protocol, client, &mut self.rng, &EngineConfig::default())
                });
                let mut cx = Cx { rng: &mut self.rng, now };
                let out = relay.receive_presence(&mut cx, stanza).unwrap_or_default();
                for m in sends(&out) {
                    releases.push(Release::Reroute {
                        hop: Hop::ClientToServer { client: client.clone(), server: server.clone() },
                        stanza: m,
                    });
                }
            }
            Hop::ClientToServer { client, server } if to.as_ref().is_none_or(|t| t.to_bare() == *owner) => {
                imp.victims.insert(client.to_bare(), client.clone());
                let mut s = stanza.clone();
                s.set("from", client.to_string());
                let mut cx = Cx { rng: &mut self.rng, now };
                let out = imp.engine.receive_presence(&mut cx, &s).unwrap_or_default();
                let owner_jid = imp.owner_device.clone().unwrap_or_else(|| Jid::from(owner.clone()));
                for m in sends(&out) {
                    releases.push(to_victim(m, &owner_jid, client, server));
                }
            }
            _ => return None,
        }
        remember_requests(&mut imp.asked, releases.iter().filter_map(released));
        Some(releases)
    }
}

/// The stanza a release puts on a hop now (`None` for one held back).
pub(super) fn released(r: &Release) -> Option<&Element> {
    match r {
        Release::Now(s) | Release::Reroute { stanza: s, .. } => Some(s),
        Release::Later { .. } => None,
    }
}

/// Adds the `<iq/>` requests among `stanzas` to `asked`, as (to whom, id).
pub(super) fn remember_requests<'a>(
    asked: &mut BTreeSet<(BareJid, String)>,
    stanzas: impl IntoIterator<Item = &'a Element>,
) {
    for s in stanzas {
        if s.name() == "iq"
            && matches!(s.attr("type"), Some("get" | "set"))
            && let Some(id) = s.attr("id")
            && let Some(to) = s.attr("to").and_then(|t| t.parse::<Jid>().ok())
        {
            asked.insert((to.to_bare(), id.to_owned()));
        }
    }
}

/// An `<iq/>` request of `engine`'s protocol (a child in one of its namespaces), or the
/// result or error answering one of the requests in `asked`: `answer` is (its sender, its
/// id), as an answer cannot be told from a non-engine one by its content.
pub(super) fn is_engine_iq(
    engine: &dyn Engine,
    stanza: &Element,
    asked: &BTreeSet<(BareJid, String)>,
    answer: Option<&(BareJid, String)>,
) -> bool {
    stanza.name() == "iq"
        && match stanza.attr("type") {
            Some("result" | "error") => answer.is_some_and(|a| asked.contains(a)),
            _ => stanza.children().any(|c| engine.iq_namespaces().contains(&c.ns().as_str())),
        }
}

/// `receive`, then whatever the engine has left to send.
pub(super) fn receive_all(engine: &mut dyn Engine, cx: &mut Cx<'_>, stanza: &Element) -> Output {
    let mut out = engine.receive(cx, stanza).unwrap_or_default();
    let left = engine.drain(cx);
    out.actions.extend(left.actions);
    out.events.extend(left.events);
    out
}

pub(super) fn sends(out: &Output) -> Vec<Element> {
    out.actions
        .iter()
        .filter_map(|a| if let EngineAction::Send(s) = a { Some(s.clone()) } else { None })
        .collect()
}

pub(super) fn plaintexts(out: &Output) -> Vec<String> {
    out.events
        .iter()
        .filter_map(|e| if let Event::Plaintext { body, .. } = e { Some(body.clone()) } else { None })
        .collect()
}

pub(super) fn id_of(stanza: &Element) -> String {
    stanza.attr("id").unwrap_or("-").to_owned()
}

/// A stanza the impostor-as-owner sends, written to the victim's session as if it came from
/// the owner.
pub(super) fn to_victim(mut m: Element, owner: &Jid, client: &FullJid, server: &str) -> Release {
    m.set("from", owner.to_string());
    m.set("to", client.to_string());
    Release::Reroute {
        hop: Hop::ServerToClient { server: server.to_owned(), client: client.clone() },
        stanza: m,
    }
}

impl Impostor {
    /// The attacker's own engine for `owner`'s protocol (drawn from `rng`), posing as `owner`,
    /// and everything it would publish (running the engine's own code: `publish`, and
    /// `fetch_failed` for its own nodes, which do not exist yet).
    pub fn new(
        protocol: Protocol,
        owner: &BareJid,
        rng: &mut ChaCha20Rng,
        epoch: Duration,
    ) -> Option<Impostor> {
        let me = owner.with_resource_str("impostor").ok()?;
        let mut engine = new_engine(protocol, &me, &mut *rng, &EngineConfig::default());
        let mut cx = Cx { rng: &mut *rng, now: epoch };
        let mut items: BTreeMap<String, Vec<(String, Element)>> = BTreeMap::new();
        let mut queue = engine.publish(&mut cx).ok()?.actions;
        while let Some(action) = queue.pop() {
            match action {
                EngineAction::Publish { node, id, item, .. } => {
                    let list = items.entry(node).or_default();
                    list.retain(|(i, _)| *i != id);
                    list.push((id, item));
                }
                EngineAction::Fetch { owner: o, node } if o == *owner => {
                    queue.extend(engine.fetch_failed(&mut cx, owner, &node, "item-not-found").ok()?.actions);
                }
                _ => {}
            }
        }
        Some(Impostor {
            engine,
            items,
            protocol,
            toward_owner: BTreeMap::new(),
            victims: BTreeMap::new(),
            owner_device: None,
            read: Vec::new(),
            asked: BTreeSet::new(),
        })
    }
}
