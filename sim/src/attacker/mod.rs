//! The attacker: composable rules over every hop it can see, passing everything by default
//! (after turmoil-net's `Verdict` and s2n-quic's interceptor). Everything it sees is its
//! knowledge; what it can *read* is computed later by running engines over that knowledge.

mod forge;
pub mod ids;
mod knowledge;
mod mitm;
mod plan;
mod powers;

use self::forge::Forger;
pub use self::knowledge::{AttackerReport, Forgery, Read, messages_in, readable_in};
pub use self::mitm::Impostor;
pub(crate) use self::plan::attribute_name;
pub use self::plan::{
    Action, ActionSpec, AttackerPlan, Encoding, ForgeKeys, HopKind, Injection, MatchSpec, POWERS, Position,
    Resolve, Rule, StanzaKind,
};
use self::powers::{items_request, matches};

use core::time::Duration;
use std::collections::BTreeMap;

use jabberwock_e2e::{BareJid, Element, Engine, FullJid, Withdrawn};
use jabberwock_xmpp::{Hop, Release, Ticket};
use rand_chacha::ChaCha20Rng;

/// How long a reordered stanza waits for a successor before it is released anyway.
const REORDER_MAX_HOLD: Duration = Duration::from_secs(5);

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
    /// What `rollback` took out of offers, in order.
    pub withdrawn: Vec<Withdrawn>,
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
    /// What its engines learned of their victims' long-term identities, as they learned it:
    /// see [`AttackerReport::learned`].
    learned: Vec<forge::Learned>,
    /// How many stanzas it made up without an id of their own (forged or forwarded): the
    /// next one's number, so ids never repeat.
    made: u32,
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
            withdrawn: vec![],
            stolen: vec![],
            rng,
            impostors: BTreeMap::new(),
            epoch: Duration::ZERO,
            requests: BTreeMap::new(),
            forgers: vec![],
            learned: vec![],
            made: 0,
        }
    }

    /// Where it sits.
    pub fn position(&self) -> &Position {
        &self.plan.position
    }

    /// Forged stanzas, with their times since the start.
    pub fn injections(&self) -> &[(Duration, Hop, Injection)] {
        &self.plan.inject
    }

    /// Puts the devices' ids into its plan ([`AttackerPlan::fill_ids`]), before it sees anything.
    pub fn fill_ids(&mut self, ids: &BTreeMap<FullJid, String>) -> Result<(), String> {
        self.plan.fill_ids(ids)
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
}
