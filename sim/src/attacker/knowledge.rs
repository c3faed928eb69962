//! What the attacker knows and reads: everything it saw, run through the protocols' own
//! engines — a fresh one with no keys, the impostors', and every state it stole.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use jabberwock_e2e::xml::NS_CLIENT;
use jabberwock_e2e::{Cx, E2eError, Element, Engine, EngineConfig, Event, FullJid, Jid, new_engine};
use rand_chacha::ChaCha20Rng;

use super::Attacker;
use super::forge::answer_fetches;
use crate::units::fmt_time;

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

/// Something the attacker could read, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The plaintext.
    pub body: String,
    /// How it was read.
    pub means: String,
    /// When the stanza was seen.
    pub at: Duration,
}

/// What the attacker ended up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttackerReport {
    /// Its position.
    pub position: String,
    /// How many stanzas it saw.
    pub seen: usize,
    /// How many of those carry something to read (messages, and `<iq/>` requests: a tunnel's
    /// records): a run in which it saw none tests nothing about what it can read.
    pub carriers: usize,
    /// Devices whose state it stole.
    pub stolen: Vec<String>,
    /// Stolen states it could not use because the implementation behind them could not do what
    /// it asked (an adapter's `unimplemented`, or its failure): each once, with the error.
    pub unusable: Vec<String>,
    /// What it could read.
    pub read: Vec<Read>,
    /// How many times each power acted.
    pub acted: BTreeMap<String, u32>,
    /// What `rollback` took out of offers, in order.
    pub withdrawn: Vec<jabberwock_e2e::Withdrawn>,
    /// The deniability test, run on every stolen device state: could the recipient alone make
    /// a message its own protocol code accepts as sent by its peer?
    pub forgeries: Vec<Forgery>,
    /// The transcript test, for protocols that publish old MAC keys (OTR): of the recorded
    /// encrypted messages, how many verify under a MAC key published in the same recording —
    /// messages anyone holding the recording could have made. (forgeable, total)
    pub public_forgery: Option<(usize, usize)>,
    /// TLS records it saw on a client link and could not open: (records, bytes).
    pub records: (usize, usize),
    /// What its own engines learned of their peers' long-term identities in the sessions they
    /// ran (forgers, impostors and their relays): (when first, the peer account, what the mark
    /// is, its bytes).
    pub learned: Vec<super::forge::Learned>,
}

/// One recipient-forgery attempt (the deniability test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgery {
    /// The device whose state made the forgery.
    pub recipient: String,
    /// Whom the forgery claims as its sender.
    pub claimed: String,
    /// Whether the recipient's own engine accepted it as that sender's.
    pub accepted: bool,
    /// What happened.
    pub detail: String,
}

/// Text a forgery carries.
const FORGED: &str = "forged by the recipient";

/// Runs the deniability test on a stolen state: forge a message from `claimed` with a copy of
/// the state, and feed it to another copy.
fn forgery(
    engine: &dyn Engine,
    recipient: &FullJid,
    claimed: &Jid,
    rng: &mut ChaCha20Rng,
    now: Duration,
) -> Forgery {
    let mut forger = engine.steal(jabberwock_e2e::Theft::FullState);
    let mut checker = engine.steal(jabberwock_e2e::Theft::FullState);
    let (accepted, detail) = match forger.forge(&mut Cx { rng: &mut *rng, now }, claimed, FORGED) {
        Ok(Some(stanza)) => match checker.receive(&mut Cx { rng: &mut *rng, now }, &stanza) {
            Ok(out) => {
                let ok = out.events.iter().any(|e| {
                    matches!(e, Event::Plaintext { from, body, .. } if from.to_bare() == claimed.to_bare() && body == FORGED)
                });
                (
                    ok,
                    if ok {
                        "accepted as genuine".to_owned()
                    } else {
                        "not shown as the sender's".to_owned()
                    },
                )
            }
            Err(e) => (false, format!("rejected: {e}")),
        },
        Ok(None) => {
            (false, "this state cannot make one (no session, or a key only the sender holds)".to_owned())
        }
        Err(e) => (false, format!("forging failed: {e}")),
    };
    Forgery { recipient: recipient.to_string(), claimed: claimed.to_string(), accepted, detail }
}

impl Attacker {
    /// What the attacker ended up with once the run is over (at `end` since the start). It
    /// decrypts honestly: it runs the protocols' own engines — a fresh one of its own (no
    /// keys), the impostors', and every engine it stole — over every message it saw; `rng` is
    /// its own stream for the engines it makes.
    pub fn report(&mut self, rng: &mut ChaCha20Rng, end: Duration) -> AttackerReport {
        let me: FullJid = match "mallory@attacker.invalid/tap".parse() {
            Ok(j) => j,
            Err(_) => {
                return AttackerReport {
                    position: self.position().to_string(),
                    seen: 0,
                    carriers: 0,
                    stolen: vec![],
                    unusable: vec![],
                    read: vec![],
                    acted: BTreeMap::new(),
                    withdrawn: vec![],
                    forgeries: vec![],
                    public_forgery: None,
                    records: (0, 0),
                    learned: vec![],
                };
            }
        };
        // Its own readers in registry order (the plan asks the wires in another).
        let mut protocols = self.plan.protocols.clone();
        protocols.sort();
        let mut readers: Vec<(String, Box<dyn Engine>)> = protocols
            .iter()
            .map(|p| {
                (format!("no key needed ({p})"), new_engine(*p, &me, &mut *rng, &EngineConfig::default()))
            })
            .collect();
        // What the sessions its engines ran with the victims revealed of them.
        let learned = core::mem::take(&mut self.learned);
        let mut read: Vec<Read> = Vec::new();
        for (owner, imp) in core::mem::take(&mut self.impostors) {
            for (at, body, means) in imp.read {
                if !read.iter().any(|r| r.body == body) {
                    read.push(Read { body, means, at });
                }
            }
            readers.push((format!("impersonating {owner} with keys it substituted"), imp.engine));
        }
        let mut forgeries = Vec::new();
        for (_, dev, engine) in &self.stolen {
            // The peers that wrote to this device, as the recording shows them.
            let mut claimed: Vec<Jid> = Vec::new();
            for seen in &self.seen {
                for msg in messages_in(&seen.stanza) {
                    let from = msg.attr("from").and_then(|f| f.parse::<Jid>().ok());
                    let to = msg.attr("to").and_then(|t| t.parse::<Jid>().ok());
                    if let (Some(from), Some(to)) = (from, to)
                        && to.to_bare() == dev.to_bare()
                        && from.to_bare() != dev.to_bare()
                        && !claimed.iter().any(|c| c.to_bare() == from.to_bare())
                    {
                        claimed.push(from);
                    }
                }
            }
            for c in &claimed {
                forgeries.push(forgery(engine.as_ref(), dev, c, rng, self.epoch + end));
            }
        }
        // The transcript test: a protocol that publishes old MAC keys lets a third party check them
        // against the recording alone (its wire description says what the recording gives away).
        let mut bodies: Vec<(String, String)> = Vec::new();
        for seen in &self.seen {
            for msg in messages_in(&seen.stanza) {
                let Some(body) = msg.get_child("body", NS_CLIENT).map(|b| b.text()) else {
                    continue;
                };
                let from = msg.attr("from").unwrap_or_default().to_owned();
                if !bodies.iter().any(|(_, b)| *b == body) {
                    bodies.push((from, body));
                }
            }
        }
        let public_forgery = protocols.iter().find_map(|p| p.wire().forgeable_from_recording(&bodies));
        let mut stolen = Vec::new();
        for (at, dev, engine) in self.stolen.drain(..) {
            stolen.push(format!("{dev} at {}", fmt_time(at)));
            readers.push((format!("with the state of {dev} stolen at {}", fmt_time(at)), engine));
        }
        // The protocols' own `<iq/>` namespaces (a tunnel's records: XTLS).
        let namespaces: BTreeSet<&'static str> =
            readers.iter().flat_map(|(_, e)| e.iq_namespaces().iter().copied()).collect();
        let mut carriers = 0;
        let mut unusable: Vec<String> = Vec::new();
        for seen in &self.seen {
            let readable = readable_in(&seen.stanza, &namespaces);
            carriers += usize::from(!readable.is_empty());
            for msg in readable {
                for (means, engine) in readers.iter_mut() {
                    let mut cx = Cx { rng: &mut *rng, now: self.epoch + seen.at };
                    // A stanza the engine rejects leaves it as it was: the attacker tries every
                    // recorded stanza, and a protocol that drops its session on a bad MAC (an
                    // ESession) must not lose it to a stanza from before the theft.
                    let mut trial = engine.steal(jabberwock_e2e::Theft::FullState);
                    let out = match trial.receive(&mut cx, &msg) {
                        Ok(out) => out,
                        Err(e @ (E2eError::Unimplemented { .. } | E2eError::Adapter { .. })) => {
                            let line = format!("{means}: {e}");
                            if !unusable.contains(&line) {
                                unusable.push(line);
                            }
                            continue;
                        }
                        Err(_) => continue,
                    };
                    // A protocol that must check a signature asks for the sender's public key
                    // first: keys are public, and the attacker answers from what it recorded.
                    let out = answer_fetches(trial.as_mut(), &mut cx, out, &self.seen);
                    // Nor does it let a stanza that only makes the engine warn (an old XTLS
                    // `<start/>` that would replace the tunnel it holds), or that it refuses once
                    // the keys are in (as it would have refused it at once), cost it its state: it
                    // keeps what it has and reads on. (Keeping both states instead grows without
                    // bound.)
                    let plaintext = out.events.iter().any(|e| matches!(e, Event::Plaintext { .. }));
                    if !plaintext
                        && out
                            .events
                            .iter()
                            .any(|e| matches!(e, Event::Alert { .. } | Event::Rejected { .. }))
                    {
                        continue;
                    }
                    *engine = trial;
                    for event in out.events {
                        if let Event::Plaintext { body, .. } = event
                            && !read.iter().any(|r| r.body == body)
                        {
                            read.push(Read { body, means: means.clone(), at: seen.at });
                        }
                    }
                }
            }
        }
        AttackerReport {
            position: self.position().to_string(),
            seen: self.seen.len(),
            carriers,
            stolen,
            unusable,
            read,
            acted: self.acted.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            withdrawn: self.withdrawn.clone(),
            forgeries,
            public_forgery,
            records: (self.records, self.record_bytes),
            learned,
        }
    }
}
