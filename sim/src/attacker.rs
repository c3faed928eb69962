//! The attacker: composable rules over every hop it can see, passing everything by default
//! (after turmoil-net's `Verdict` and s2n-quic's interceptor). Everything it sees is its
//! knowledge; what it can *read* is computed later by running engines over that knowledge.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use jabberwock_e2e::codec::{armor_body, dearmor_body};
use jabberwock_e2e::xml::ElementExt;
use jabberwock_e2e::xml::{NS_CLIENT, NS_PUBSUB, NS_PUBSUB_EVENT, el};
use jabberwock_e2e::{
    Action as EngineAction, BareJid, Cx, Element, Engine, EngineConfig, Event, FullJid, Jid, Output,
    Protocol, new_engine,
};
use jabberwock_xmpp::{Hop, Release, Ticket};
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;

use crate::scenario::{Action, AttackerPlan, Encoding, HopKind, Position, Rule, StanzaKind};

/// How long a reordered stanza waits for a successor before it is released anyway.
const REORDER_MAX_HOLD: Duration = Duration::from_secs(5);

/// A forger that has heard nothing from its victim for this long retires: what the victim
/// sends to the claimed device afterwards goes to the real one again.
const FORGER_IDLE: Duration = Duration::from_secs(30);

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

/// A stanza the attacker saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When.
    pub at: Duration,
    /// Where.
    pub hop: Hop,
    /// What, as it was before any rule touched it.
    pub stanza: Element,
}

/// The attacker's running state.
#[derive(Debug)]
pub struct Attacker {
    plan: AttackerPlan,
    applied: Vec<u32>,
    held: BTreeMap<u64, (Hop, Element)>,
    next_ticket: u64,
    reorder_slot: BTreeMap<Hop, u64>,
    /// Everything seen, in order.
    pub seen: Vec<Seen>,
    /// TLS records seen on a client link it could not open, and their bytes.
    pub records: usize,
    /// See `records`.
    pub record_bytes: usize,
    /// How many times each power acted.
    pub acted: BTreeMap<&'static str, u32>,
    rng: ChaCha20Rng,
    /// Key material the attacker made to pass off as other accounts', by account.
    pub impostors: BTreeMap<BareJid, Impostor>,
    /// Engines stolen from compromised devices, in order.
    pub stolen: Vec<(Duration, FullJid, Box<dyn Engine>)>,
    /// The Unix time the simulation starts at (engines run by the attacker need a clock).
    pub epoch: Duration,
    /// PEP item requests in flight, (owner, iq id) → node: a server answering for an owner
    /// knows what was asked, so an impostor can answer a request for a node that does not
    /// exist (OMEMO 0.3 keeps one bundle node per device).
    requests: BTreeMap<(BareJid, String), String>,
    /// Forgers still talking: a session protocol's forgery is a handshake first.
    forgers: Vec<Forger>,
    /// How many stanzas it made up without an id of their own (forged or forwarded): the
    /// next one's number, so ids never repeat.
    made: u32,
}

/// The attacker's engine posing as `from` toward `victim`, after a forgery order: what the
/// victim sends back to `from` it takes (and keeps from `from`), so a session protocol's
/// handshake runs between the victim and the forger.
#[derive(Debug)]
struct Forger {
    from: FullJid,
    victim: BareJid,
    engine: Box<dyn Engine>,
    /// The `<iq/>` requests it sent, as (to whom, id): only their answers are its.
    asked: BTreeSet<(BareJid, String)>,
    /// When the victim last sent it something (or it was made): see [`FORGER_IDLE`].
    last: Duration,
}

impl Attacker {
    /// An attacker following `plan`.
    pub fn new(plan: AttackerPlan, rng: ChaCha20Rng) -> Self {
        let applied = vec![0; plan.rules.len()];
        Attacker {
            plan,
            applied,
            held: BTreeMap::new(),
            next_ticket: 0,
            reorder_slot: BTreeMap::new(),
            seen: vec![],
            records: 0,
            record_bytes: 0,
            acted: BTreeMap::new(),
            stolen: vec![],
            rng,
            impostors: BTreeMap::new(),
            epoch: Duration::ZERO,
            requests: BTreeMap::new(),
            forgers: vec![],
            made: 0,
        }
    }

    /// Where it sits.
    pub fn position(&self) -> &Position {
        &self.plan.position
    }

    /// Forged stanzas, with their times since the start.
    pub fn injections(&self) -> &[(Duration, Hop, Element)] {
        &self.plan.inject
    }

    fn hold(&mut self, hop: &Hop, stanza: Element) -> Ticket {
        self.next_ticket += 1;
        self.held.insert(self.next_ticket, (hop.clone(), stanza));
        Ticket(self.next_ticket)
    }

    /// Takes back a held stanza (`None` if it was already released or dropped).
    pub fn redeem(&mut self, ticket: Ticket) -> Option<(Hop, Element)> {
        self.reorder_slot.retain(|_, t| *t != ticket.0);
        self.held.remove(&ticket.0)
    }

    /// A stanza crosses `hop` at `at`: record it and apply the first matching rule. `log`
    /// receives one line per attacker action.
    pub fn intercept(
        &mut self,
        at: Duration,
        hop: &Hop,
        stanza: Element,
        log: &mut Vec<String>,
    ) -> Vec<Release> {
        if !self.plan.position.sees(hop) {
            return vec![Release::Now(stanza)];
        }
        self.seen.push(Seen { at, hop: hop.clone(), stanza: stanza.clone() });
        if let Some((owner, id, node)) = items_request(&stanza) {
            self.requests.insert((owner, id), node);
        }
        let id = stanza.attr("id").unwrap_or("-").to_owned();
        // A stanza held for reordering goes on behind the next one that reaches the attacker
        // on its hop, whatever becomes of that one.
        let waiting = self.reorder_slot.remove(hop).and_then(|t| self.held.remove(&t));
        let mut out = match self.hand_to_forger(at, hop, stanza, &id, log) {
            Ok(releases) => releases,
            Err(stanza) => self.apply_rules(at, hop, stanza, &id, waiting.is_some(), log),
        };
        if let Some((_, held)) = waiting {
            log.push(format!("releases held {} behind {id} (reordered)", held.attr("id").unwrap_or("-")));
            out.push(Release::Now(held));
        }
        out
    }

    /// The rules, in order, on a stanza no forger took.
    fn apply_rules(
        &mut self,
        at: Duration,
        hop: &Hop,
        stanza: Element,
        id: &str,
        slot_busy: bool,
        log: &mut Vec<String>,
    ) -> Vec<Release> {
        // Rules compose in order: observing and modifying rules change the stanza and let later
        // rules act on the result; the first delivery rule (drop, delay, reorder, duplicate,
        // replay) decides how it travels.
        let mut current = Some(stanza);
        let mut out = None;
        for i in 0..self.plan.rules.len() {
            let Some(stanza) = current.take() else { break };
            let rule = &self.plan.rules[i];
            if rule.matcher.count.is_some_and(|c| self.applied[i] >= c)
                || !matches(rule, &self.plan.protocols, at, hop, &stanza)
            {
                current = Some(stanza);
                continue;
            }
            self.applied[i] += 1;
            let action = rule.action.clone();
            let releases = self.act(i, &action, (at, hop), stanza, id, slot_busy, log);
            match (action.delivers(), <[Release; 1]>::try_from(releases)) {
                (false, Ok([Release::Now(modified)])) => current = Some(modified),
                (_, Ok(one)) => {
                    out = Some(Vec::from(one));
                    break;
                }
                (_, Err(many)) => {
                    out = Some(many);
                    break;
                }
            }
        }
        match out {
            Some(out) => out,
            None => current.map(|s| vec![Release::Now(s)]).unwrap_or_default(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn act(
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
                | Action::Strip(_)
                | Action::Replace(..)
                | Action::Flip(..)
                | Action::FlipCiphertext(_)
                | Action::Downgrade(_)
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
            Action::Set(attr, value) => {
                let mut s = stanza;
                let before = s.attr(attr.as_str()).unwrap_or("(none)").to_owned();
                s.set(attr, value.clone());
                log.push(format!("sets {attr}='{value}' (was '{before}') in {id} ({tag})"));
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
    /// The man in the middle of a session protocol (one that publishes no keys, so there is
    /// nothing to substitute): chat messages between `owner` and a victim of this server are
    /// taken off their hops and handed to the attacker's own engines — one posing as `owner`
    /// toward the victim, one posing as the victim toward `owner` — which run the real
    /// protocol with each side; whatever one of them decrypts, the other re-encrypts and
    /// sends on. `None` when the stanza is not such a message (or the protocol publishes
    /// keys: then substitution is the attack).
    fn in_the_middle(
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
fn released(r: &Release) -> Option<&Element> {
    match r {
        Release::Now(s) | Release::Reroute { stanza: s, .. } => Some(s),
        Release::Later { .. } => None,
    }
}

/// Adds the `<iq/>` requests among `stanzas` to `asked`, as (to whom, id).
fn remember_requests<'a>(
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
fn is_engine_iq(
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
fn receive_all(engine: &mut dyn Engine, cx: &mut Cx<'_>, stanza: &Element) -> Output {
    let mut out = engine.receive(cx, stanza).unwrap_or_default();
    let left = engine.drain(cx);
    out.actions.extend(left.actions);
    out.events.extend(left.events);
    out
}

fn sends(out: &Output) -> Vec<Element> {
    out.actions
        .iter()
        .filter_map(|a| if let EngineAction::Send(s) = a { Some(s.clone()) } else { None })
        .collect()
}

fn plaintexts(out: &Output) -> Vec<String> {
    out.events
        .iter()
        .filter_map(|e| if let Event::Plaintext { body, .. } = e { Some(body.clone()) } else { None })
        .collect()
}

fn id_of(stanza: &Element) -> String {
    stanza.attr("id").unwrap_or("-").to_owned()
}

/// A stanza the impostor-as-owner sends, written to the victim's session as if it came from
/// the owner.
fn to_victim(mut m: Element, owner: &Jid, client: &FullJid, server: &str) -> Release {
    m.set("from", owner.to_string());
    m.set("to", client.to_string());
    Release::Reroute {
        hop: Hop::ServerToClient { server: server.to_owned(), client: client.clone() },
        stanza: m,
    }
}

fn jid_matches(pattern: &str, value: Option<&str>) -> bool {
    let Some(v) = value else { return false };
    v == pattern || v.strip_prefix(pattern).is_some_and(|rest| rest.starts_with('/'))
}

fn any_element(el: &Element, f: &dyn Fn(&Element) -> bool) -> bool {
    f(el) || el.children().any(|c| any_element(c, f))
}

fn matches(rule: &Rule, protocols: &[Protocol], at: Duration, hop: &Hop, stanza: &Element) -> bool {
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

/// Flips one bit in the text of the first `name` element: in the decoded payload when the
/// text is base64, in the UTF-8 bytes otherwise. Returns which it was.
/// A path `a/b/c` names the first `a` (at any depth), then its child `b`, then that one's
/// child `c` (XML Encryption keeps a `CipherValue` in every `EncryptedKey` before the content's).
fn flip(el: &mut Element, name: &str, bit: i64, encoding: Option<Encoding>) -> Option<(u32, &'static str)> {
    let mut steps = name.split('/');
    let mut target = find_first_mut(el, steps.next()?)?;
    for step in steps {
        target = target.children_mut().find(|c| c.name() == step)?;
    }
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
    let trimmed = text.trim();
    let decoded = b64.decode(trimmed).ok().filter(|b| !b.is_empty());
    let as_b64 = match encoding {
        Some(Encoding::Base64) => decoded,
        Some(Encoding::Text | Encoding::Armor) => None,
        None => decoded.filter(|_| trimmed.len() >= 16 && trimmed.len() % 4 == 0),
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

/// Replaces all items of `node` in pubsub results and event notifications by `items`.
/// `(owner, id, node)` of an `<iq type='get'><pubsub><items node/></pubsub></iq>`.
fn items_request(stanza: &Element) -> Option<(BareJid, String, String)> {
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

/// The namespace of a forgery order: a placeholder the plan carries until the injection's
/// time, when [`Attacker::forge`] makes the stanza.
const NS_FORGE: &str = "urn:jabberwock:attacker:forge";

/// A forgery order for an injection: `body` as if `from` (a `protocol` device) sent it to `to`.
pub fn forge_order(from: &FullJid, to: &BareJid, protocol: Protocol, body: &str) -> Element {
    el("forge", NS_FORGE)
        .with("from", from.to_string())
        .with("to", to.to_string())
        .with("protocol", protocol.name())
        .text_node(body)
}

/// A forwarding order for an injection: with `stolen`'s state, the last signed message it
/// received from `from` goes on to `to`, with `body` wrapped around it where possible.
pub fn forward_order(stolen: &FullJid, from: &BareJid, to: &BareJid, body: &str) -> Element {
    el("forward", NS_FORGE)
        .with("stolen", stolen.to_string())
        .with("from", from.to_string())
        .with("to", to.to_string())
        .text_node(body)
}

/// Whether a planned injection is an order ([`forge_order`], [`forward_order`]) rather than
/// a stanza.
pub fn is_order(stanza: &Element) -> bool {
    stanza.ns() == NS_FORGE
}

impl Attacker {
    /// Carries out a forgery order at `now` (since the Unix epoch): a fresh engine of the
    /// protocol, posing as the claimed sender, sends the text with the public keys recorded so
    /// far. Returns the stanzas and a line for the transcript.
    pub fn forge(&mut self, now: Duration, hop: &Hop, order: &Element) -> (Vec<Element>, String) {
        let parsed = (
            order.attr("from").and_then(|f| f.parse::<FullJid>().ok()),
            order.attr("to").and_then(|t| t.parse::<BareJid>().ok()),
            order.attr("protocol").and_then(|p| p.parse::<Protocol>().ok()),
        );
        let (Some(from), Some(to), Some(protocol)) = parsed else {
            return (vec![], "cannot read its forgery order".into());
        };
        let body = order.text();
        let mut engine = new_engine(protocol, &from, &mut self.rng, &EngineConfig::default());
        let mut cx = Cx { rng: &mut self.rng, now };
        // Presence is public too: what the victim's devices announced (XTLS support in caps,
        // XEP-0027 signed presence, whose keys it then fetches like any client) — the latest
        // of each device once, as a client holds it, though the recording may have it from
        // several hops.
        let mut latest: BTreeMap<String, Element> = BTreeMap::new();
        for seen in self.seen.iter().filter(|s| s.stanza.name() == "presence") {
            let mut p = seen.stanza.clone();
            if let Hop::ClientToServer { client, .. } = &seen.hop {
                p.set("from", client.to_string());
            }
            let sender = p.attr("from").and_then(|j| j.parse::<Jid>().ok());
            if let Some(sender) =
                sender.filter(|j| j.to_bare() == to && p.attr("type").is_none_or(|t| t == "unavailable"))
            {
                p.set("to", from.to_string());
                latest.insert(sender.to_string(), p);
            }
        }
        let mut heard = Output::default();
        for p in latest.values().filter(|p| p.attr("type").is_none()) {
            if let Ok(out) = engine.receive_presence(&mut cx, p) {
                let out = answer_fetches(engine.as_mut(), &mut cx, out, &self.seen);
                heard.actions.extend(out.actions);
            }
        }
        let mut out = match engine.send(&mut cx, &to, &body) {
            Ok(out) => answer_fetches(engine.as_mut(), &mut cx, out, &self.seen),
            Err(e) => return (vec![], format!("cannot forge {body:?} as {from} ({protocol}): {e}")),
        };
        heard.actions.append(&mut out.actions);
        let out = heard;
        let stanzas = self.as_sent_by(&from.to_string(), "forged", out);
        if stanzas.is_empty() {
            return (
                vec![],
                format!("cannot forge {body:?} as {from} ({protocol}): its engine sent nothing"),
            );
        }
        *self.acted.entry("forge").or_default() += 1;
        if matches!(hop, Hop::ServerToClient { client, .. } if client.to_bare() == to) {
            let mut asked = BTreeSet::new();
            remember_requests(&mut asked, &stanzas);
            let at = now.saturating_sub(self.epoch);
            self.forgers.push(Forger { from: from.clone(), victim: to.clone(), engine, asked, last: at });
        }
        let line = format!(
            "forges {body:?} as {from} to {to} with its own {protocol} engine and recorded public keys ({} stanza{})",
            stanzas.len(),
            if stanzas.len() == 1 { "" } else { "s" }
        );
        (stanzas, line)
    }

    /// What one of its engines sends, as `from`'s stanzas; those without an id get a made-up
    /// one, `{prefix}-{n}`, never the same twice in a run.
    fn as_sent_by(&mut self, from: &str, prefix: &str, out: Output) -> Vec<Element> {
        let mut stanzas = Vec::new();
        for a in out.actions {
            if let EngineAction::Send(mut s) = a {
                s.set("from", from);
                if s.attr("id").is_none() {
                    self.made += 1;
                    s.set("id", format!("{prefix}-{}", self.made));
                }
                stanzas.push(s);
            }
        }
        stanzas
    }

    /// A stanza from a forger's victim to the device the forger poses as (a message, a
    /// request of the forger's protocol, or the answer to one of the forger's requests): the
    /// forger takes it (the real device never sees it) and answers on the victim's hop. `Err`
    /// gives the stanza back when no forger wants it. Forgers idle for [`FORGER_IDLE`] retire.
    fn hand_to_forger(
        &mut self,
        at: Duration,
        hop: &Hop,
        stanza: Element,
        id: &str,
        log: &mut Vec<String>,
    ) -> Result<Vec<Release>, Element> {
        let Hop::ClientToServer { client, server } = hop else { return Err(stanza) };
        self.forgers.retain(|f| at.saturating_sub(f.last) < FORGER_IDLE);
        let to = stanza.attr("to").and_then(|t| t.parse::<FullJid>().ok());
        let answer = stanza.attr("id").map(|id| (client.to_bare(), id.to_owned()));
        let Some(i) = self.forgers.iter().position(|f| {
            f.victim == client.to_bare()
                && to.as_ref() == Some(&f.from)
                && (stanza.name() == "message"
                    || is_engine_iq(f.engine.as_ref(), &stanza, &f.asked, answer.as_ref()))
        }) else {
            return Err(stanza);
        };
        let now = self.epoch + at;
        let mut s = stanza;
        s.set("from", client.to_string());
        let forger = &mut self.forgers[i];
        forger.last = at;
        if let Some(answer) = answer.filter(|_| matches!(s.attr("type"), Some("result" | "error"))) {
            forger.asked.remove(&answer);
        }
        let mut cx = Cx { rng: &mut self.rng, now };
        let out = receive_all(forger.engine.as_mut(), &mut cx, &s);
        let out = answer_fetches(forger.engine.as_mut(), &mut cx, out, &self.seen);
        let from = forger.from.clone();
        let mut answers = self.as_sent_by(&from.to_string(), "forged", out);
        for m in &mut answers {
            m.set("to", client.to_string());
        }
        if let Some(forger) = self.forgers.get_mut(i) {
            remember_requests(&mut forger.asked, &answers);
        }
        log.push(format!(
            "keeps {id} from {from} and hands it to its forger, which answers with {} stanza{}",
            answers.len(),
            if answers.len() == 1 { "" } else { "s" }
        ));
        Ok(answers
            .into_iter()
            .map(|mut m| {
                m.set("to", client.to_string());
                Release::Reroute {
                    hop: Hop::ServerToClient { server: server.clone(), client: client.clone() },
                    stanza: m,
                }
            })
            .collect())
    }

    /// Carries out a forwarding order at `now` (since the Unix epoch). Returns the stanzas and
    /// a line for the transcript.
    pub fn forward(&mut self, now: Duration, order: &Element) -> (Vec<Element>, String) {
        let parsed = (
            order.attr("stolen").and_then(|f| f.parse::<FullJid>().ok()),
            order.attr("from").and_then(|t| t.parse::<BareJid>().ok()),
            order.attr("to").and_then(|t| t.parse::<BareJid>().ok()),
        );
        let (Some(stolen), Some(from), Some(to)) = parsed else {
            return (vec![], "cannot read its forwarding order".into());
        };
        let body = order.text();
        let Some(engine) = self.stolen.iter().rev().find(|(_, d, _)| *d == stolen).map(|(_, _, e)| e) else {
            return (vec![], format!("cannot forward: it holds no stolen state of {stolen}"));
        };
        let mut engine = engine.steal(jabberwock_e2e::Theft::FullState);
        // The last message from `from` that reached the stolen device (its server-to-client
        // hop), as it crossed the wire.
        let recorded = self.seen.iter().rev().find_map(|s| match &s.hop {
            Hop::ServerToClient { client, .. } if *client == stolen => {
                messages_in(&s.stanza).into_iter().find(|m| {
                    let sender = m.attr("from").and_then(|j| j.parse::<Jid>().ok()).map(|j| j.to_bare());
                    sender.as_ref() == Some(&from) && m.attr("type") != Some("error")
                })
            }
            _ => None,
        });
        let Some(recorded) = recorded else {
            return (vec![], format!("cannot forward: it recorded no message from {from} to {stolen}"));
        };
        let sender = recorded.attr("from").unwrap_or_default().to_owned();
        let mut cx = Cx { rng: &mut self.rng, now };
        let mut out = None;
        // At most one round of key fetches (answered from the recording), then the forgery.
        for _ in 0..2 {
            match engine.forward(&mut cx, &recorded, &to, &body) {
                Ok(Some(o)) if o.actions.iter().any(|a| matches!(a, EngineAction::Fetch { .. })) => {
                    let _ = answer_fetches(engine.as_mut(), &mut cx, o, &self.seen);
                }
                Ok(Some(o)) => {
                    out = Some(o);
                    break;
                }
                Ok(None) => {
                    return (
                        vec![],
                        format!("cannot forward: {} has no signature to reuse", engine.protocol()),
                    );
                }
                Err(e) => return (vec![], format!("cannot forward {}: {e}", id_of(&recorded))),
            }
        }
        let Some(out) = out else {
            return (vec![], format!("cannot forward: no public keys of {to} recorded"));
        };
        let stanzas = self.as_sent_by(&sender, "forwarded", out);
        if stanzas.is_empty() {
            return (vec![], format!("cannot forward {}: the engine sent nothing", id_of(&recorded)));
        }
        *self.acted.entry("forward").or_default() += 1;
        let how = if body.is_empty() { String::new() } else { format!(", slipping in {body:?}") };
        let line = format!(
            "passes {} ({sender} → {stolen}) on to {to} with the stolen state of {stolen}{how}",
            id_of(&recorded)
        );
        (stanzas, line)
    }
}

/// Runs the engine's own key fetches against the public key material the attacker recorded
/// (PEP publications, fetch results, notifications), as any third party could read it, and
/// gathers what the engine reports and asks once it has the keys.
pub(crate) fn answer_fetches(
    engine: &mut dyn Engine,
    cx: &mut Cx<'_>,
    mut out: Output,
    seen: &[Seen],
) -> Output {
    let mut events = core::mem::take(&mut out.events);
    let mut done = Vec::new();
    let mut pending = out.actions;
    // Each answer may ask for more (a key list, then the keys): a few rounds at most.
    for _ in 0..4 {
        let mut next = Vec::new();
        for action in core::mem::take(&mut pending) {
            let EngineAction::Fetch { owner, node } = action else {
                done.push(action);
                continue;
            };
            let items = recorded_items(seen, &owner, &node);
            let result = el("iq", NS_CLIENT).with("type", "result").with("from", owner.to_string()).child(
                el("pubsub", NS_PUBSUB).child({
                    let mut list = el("items", NS_PUBSUB).with("node", node);
                    for item in items {
                        list.append_child(item);
                    }
                    list
                }),
            );
            if let Ok(more) = engine.receive(cx, &result) {
                events.extend(more.events);
                next.extend(more.actions);
            }
        }
        pending = next;
        if pending.is_empty() {
            break;
        }
    }
    done.extend(pending.into_iter().filter(|a| !matches!(a, EngineAction::Fetch { .. })));
    Output { actions: done, events }
}

/// The latest items of `owner`'s PEP node `node` in the recording, as pubsub `<item/>`s.
fn recorded_items(seen: &[Seen], owner: &BareJid, node: &str) -> Vec<Element> {
    let mut latest: BTreeMap<String, Element> = BTreeMap::new();
    for s in seen {
        let from = s.stanza.attr("from").and_then(|f| f.parse::<Jid>().ok()).map(|j| j.to_bare());
        let to = s.stanza.attr("to").and_then(|f| f.parse::<Jid>().ok()).map(|j| j.to_bare());
        let lists: Vec<&Element> = match s.stanza.name() {
            // A publish by one of the owner's devices, on its way to its server.
            "iq" if s.stanza.attr("type") == Some("set")
                && matches!(&s.hop, Hop::ClientToServer { client, .. } if client.to_bare() == *owner)
                && to.as_ref().is_none_or(|t| t == owner) =>
            {
                s.stanza
                    .get_child("pubsub", NS_PUBSUB)
                    .into_iter()
                    .flat_map(|p| p.children().filter(|c| c.is("publish", NS_PUBSUB)))
                    .collect()
            }
            "iq" if s.stanza.attr("type") == Some("result") && from.as_ref() == Some(owner) => s
                .stanza
                .get_child("pubsub", NS_PUBSUB)
                .into_iter()
                .flat_map(|p| p.children().filter(|c| c.is("items", NS_PUBSUB)))
                .collect(),
            "message" if from.as_ref() == Some(owner) => s
                .stanza
                .get_child("event", NS_PUBSUB_EVENT)
                .into_iter()
                .flat_map(|p| p.children().filter(|c| c.is("items", NS_PUBSUB_EVENT)))
                .collect(),
            _ => vec![],
        };
        for list in lists.into_iter().filter(|l| l.attr("node") == Some(node)) {
            for item in list.children().filter(|i| i.name() == "item") {
                let id = item.attr("id").unwrap_or_default().to_owned();
                let mut copy = el("item", NS_PUBSUB).with("id", id.clone());
                for payload in item.children() {
                    copy.append_child(payload.clone());
                }
                latest.insert(id, copy);
            }
        }
    }
    latest.into_values().collect()
}

/// What the attacker can try to read in a stanza: its messages with a body or a payload
/// ([`messages_in`]) or, for an `<iq/>` request with a child in one of `namespaces` (the
/// protocols' own), the request itself (a tunnel's records travel in `<iq/>`s: the XTLS ProtoXEP, "Protocol").
pub fn readable_in(stanza: &Element, namespaces: &BTreeSet<&str>) -> Vec<Element> {
    if stanza.name() == "iq" {
        let engine_request = stanza.ns() == NS_CLIENT
            && matches!(stanza.attr("type"), Some("get" | "set"))
            && stanza.children().any(|c| namespaces.contains(c.ns().as_str()));
        return if engine_request { vec![stanza.clone()] } else { vec![] };
    }
    messages_in(stanza)
        .into_iter()
        .filter(|m| m.children().any(|c| c.name() == "body" || c.ns() != NS_CLIENT))
        .collect()
}

/// The messages inside a stanza the attacker can try to read: the stanza itself and any
/// forwarded copies (carbons).
pub fn messages_in(stanza: &Element) -> Vec<Element> {
    let mut out = Vec::new();
    if stanza.name() == "message" && stanza.ns() == NS_CLIENT {
        out.push(stanza.clone());
    }
    for child in stanza.children() {
        for m in messages_in(child) {
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    out
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
            Action::Substitute { .. } => "substitute",
            Action::Impersonate(_) => "impersonate",
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
