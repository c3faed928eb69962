//! Forgeries and forwarding: what the attacker makes at an injection's time with its own
//! engines and the public keys it recorded, or with a stolen state.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use jabberwock_e2e::xml::ElementExt;
use jabberwock_e2e::xml::{NS_CLIENT, NS_PUBSUB, NS_PUBSUB_EVENT, el};
use jabberwock_e2e::{
    Action as EngineAction, BareJid, Cx, Element, Engine, EngineConfig, FullJid, Jid, Output, Protocol,
    new_engine,
};
use jabberwock_xmpp::{Hop, Release};

use super::ForgeKeys;
use super::knowledge::messages_in;
use super::mitm::{id_of, is_engine_iq, receive_all, remember_requests};
use super::{Attacker, Seen};

/// A forger that has heard nothing from its victim for this long retires: what the victim
/// sends to the claimed device afterwards goes to the real one again.
const FORGER_IDLE: Duration = Duration::from_secs(30);

/// The attacker's engine posing as `from` toward `victim`, after a planned forgery: what the
/// victim sends back to `from` it takes (and keeps from `from`), so a session protocol's
/// handshake runs between the victim and the forger.
#[derive(Debug)]
pub(super) struct Forger {
    from: FullJid,
    pub(super) victim: BareJid,
    pub(super) engine: Box<dyn Engine>,
    /// The `<iq/>` requests it sent, as (to whom, id): only their answers are its.
    asked: BTreeSet<(BareJid, String)>,
    /// When the victim last sent it something (or it was made): see [`FORGER_IDLE`].
    last: Duration,
}

/// What one of the attacker's engines learned of a victim's long-term identity in a session
/// it ran with them ([`Engine::peer_marks`]): when it first held it, the victim's account,
/// what the mark is, its bytes.
pub type Learned = (Duration, String, &'static str, Vec<u8>);

/// Adds to `learned` what `engine` holds at `at` of `victim`'s long-term identity, each mark
/// once (with the time it was first seen).
pub(super) fn learn(learned: &mut Vec<Learned>, at: Duration, victim: &BareJid, engine: &dyn Engine) {
    let victim_name = victim.to_string();
    for (name, bytes) in engine.peer_marks(victim) {
        if !learned.iter().any(|(_, v, _, b)| *v == victim_name && *b == bytes) {
            learned.push((at, victim_name.clone(), name, bytes));
        }
    }
}

impl Attacker {
    /// Carries out a planned forgery at `now` (since the Unix epoch): a fresh engine of the
    /// protocol (or, with [`ForgeKeys::Stolen`], the state last stolen of `from`; with
    /// [`ForgeKeys::Served`], the impostor whose keys it serves as `from`'s), posing as the
    /// claimed sender, sends the text with the public keys recorded so far. Returns the stanzas
    /// and a line for the transcript.
    #[expect(clippy::too_many_arguments, reason = "one planned injection's fields")]
    pub fn forge(
        &mut self,
        now: Duration,
        hop: &Hop,
        from: &FullJid,
        to: &BareJid,
        protocol: Protocol,
        body: &str,
        keys: ForgeKeys,
    ) -> (Vec<Element>, String) {
        let owner = from.to_bare();
        let made = match keys {
            ForgeKeys::Stolen => {
                let Some(engine) = self.stolen.iter().rev().find(|(_, d, _)| d == from).map(|(_, _, e)| e)
                else {
                    return (
                        vec![],
                        format!("cannot forge {body:?} as {from}: it holds no stolen state of {from}"),
                    );
                };
                let mut engine = engine.steal(jabberwock_e2e::Theft::FullState);
                let made = self.write_as(now, engine.as_mut(), from, to, body);
                made.map(|s| (s, Some(engine), format!("the stolen state of {from}")))
            }
            ForgeKeys::Public => {
                let mut engine = new_engine(protocol, from, &mut self.rng, &EngineConfig::default());
                let made = self.write_as(now, engine.as_mut(), from, to, body);
                made.map(|s| (s, Some(engine), format!("its own {protocol} engine")))
            }
            // The impostor itself writes, out of its place while it does: what the victim
            // answers then reaches it as any stanza to the account it poses as does.
            ForgeKeys::Served => {
                let Some(mut imp) = self.impostors.remove(&owner) else {
                    return (
                        vec![],
                        format!("cannot forge {body:?} as {from}: it serves no keys of its own as {owner}'s"),
                    );
                };
                let made = self.write_as(now, imp.engine.as_mut(), from, to, body);
                if let Ok(stanzas) = &made {
                    remember_requests(&mut imp.asked, stanzas);
                }
                self.impostors.insert(owner.clone(), imp);
                made.map(|s| (s, None, format!("the keys it serves as {owner}'s")))
            }
        };
        let (stanzas, engine, keys) = match made {
            Ok(made) => made,
            Err(why) => return (vec![], format!("cannot forge {body:?} as {from} ({protocol}): {why}")),
        };
        *self.acted.entry("forge").or_default() += 1;
        if let Some(engine) = engine
            && matches!(hop, Hop::ServerToClient { client, .. } if client.to_bare() == *to)
        {
            let mut asked = BTreeSet::new();
            remember_requests(&mut asked, &stanzas);
            let at = now.saturating_sub(self.epoch);
            self.forgers.push(Forger { from: from.clone(), victim: to.clone(), engine, asked, last: at });
        }
        let line = format!(
            "forges {body:?} as {from} to {to} with {keys} and recorded public keys ({} stanza{})",
            stanzas.len(),
            if stanzas.len() == 1 { "" } else { "s" }
        );
        (stanzas, line)
    }

    /// What `engine`, posing as `from`, sends `to` for `body`, after hearing the presence the
    /// recording holds of `to`'s devices; `Err` says why nothing was made.
    fn write_as(
        &mut self,
        now: Duration,
        engine: &mut dyn Engine,
        from: &FullJid,
        to: &BareJid,
        body: &str,
    ) -> Result<Vec<Element>, String> {
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
                sender.filter(|j| j.to_bare() == *to && p.attr("type").is_none_or(|t| t == "unavailable"))
            {
                p.set("to", from.to_string());
                latest.insert(sender.to_string(), p);
            }
        }
        let mut heard = Output::default();
        for p in latest.values().filter(|p| p.attr("type").is_none()) {
            if let Ok(out) = engine.receive_presence(&mut cx, p) {
                let out = answer_fetches(engine, &mut cx, out, &self.seen);
                heard.actions.extend(out.actions);
            }
        }
        let mut out = match engine.send(&mut cx, to, body) {
            Ok(out) => answer_fetches(engine, &mut cx, out, &self.seen),
            Err(e) => return Err(e.to_string()),
        };
        heard.actions.append(&mut out.actions);
        let stanzas = self.as_sent_by(&from.to_string(), "forged", heard);
        if stanzas.is_empty() {
            return Err("its engine sent nothing".into());
        }
        Ok(stanzas)
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
    pub(super) fn hand_to_forger(
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
        learn(&mut self.learned, at, &forger.victim, forger.engine.as_ref());
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

    /// Carries out a planned forwarding at `now` (since the Unix epoch). Returns the stanzas and
    /// a line for the transcript.
    pub fn forward(
        &mut self,
        now: Duration,
        stolen: &FullJid,
        from: &BareJid,
        to: &BareJid,
        body: &str,
    ) -> (Vec<Element>, String) {
        let (stolen, from, to, body) = (stolen.clone(), from.clone(), to.clone(), body.to_owned());
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
pub fn answer_fetches(engine: &mut dyn Engine, cx: &mut Cx<'_>, mut out: Output, seen: &[Seen]) -> Output {
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
pub(super) fn recorded_items(seen: &[Seen], owner: &BareJid, node: &str) -> Vec<Element> {
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
