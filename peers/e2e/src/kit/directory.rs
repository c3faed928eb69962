//! The key directory: the cycle every engine runs that finds peers' keys in PEP (XEP-0163).
//!
//! A message to an account whose keys are not known waits in the [`Directory`]'s pending
//! queue while the account's node is fetched ([`Action::Fetch`], once while it is in flight:
//! the asked list). The answer — the node's items ([`pep`], which [`receive`] hands to
//! [`Keyed::items`]), or an error ([`failed`], [`no_keys`]) — tells the engine what it needs,
//! and the queue is flushed ([`flush`]): each message is sent, waits on, or is given up with
//! the alert `not-sent`. A received stanza signed by a key not yet seen may likewise be held until the
//! sender's node has been read, then read again ([`retry`]), its refusal then reported as an
//! [`Event::Rejected`]. What the nodes hold, and what a message needs, is the engine's own
//! ([`Keyed`]).

use std::collections::BTreeSet;

use jid::{BareJid, Jid};
use minidom::Element;

use crate::Content;
use crate::xml::{NS_CLIENT, NS_PUBSUB, NS_PUBSUB_EVENT};
use crate::{Action, Cx, E2eError, Event, Output};

/// The fetches in flight and what waits for them.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Fetches asked for and not yet answered: (owner, node).
    asked: BTreeSet<(BareJid, String)>,
    /// Messages the user sent, waiting for their recipient's keys: (to, content).
    pending: Vec<(BareJid, Content)>,
    /// Received stanzas waiting for their sender's keys, in arrival order.
    held: Vec<Element>,
    /// Nodes read whole (a fetch result) or known not to exist (a failed fetch): (owner, node).
    read: BTreeSet<(BareJid, String)>,
}

/// How many received stanzas may wait for keys.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// In all: beyond it a stanza is not held.
    pub total: usize,
    /// Per sending account: beyond it the sender's oldest is dropped (alert `dropped`).
    pub per_sender: Option<usize>,
}

/// The sending account of a held stanza (only stanzas whose `from` parses are held).
fn sender_of(stanza: &Element) -> Option<Jid> {
    stanza.attr("from").and_then(|f| f.parse::<Jid>().ok())
}

impl Directory {
    /// Asks for `owner`'s `node`, unless that fetch is in flight.
    pub fn fetch(&mut self, owner: &BareJid, node: &str, out: &mut Output) {
        if self.asked.insert((owner.clone(), node.to_owned())) {
            out.actions.push(Action::Fetch { owner: owner.clone(), node: node.to_owned() });
        }
    }

    /// Asks for `owner`'s `node` again, in flight or not (our own node at login; a caller
    /// that answers at once).
    pub fn refetch(&mut self, owner: &BareJid, node: &str, out: &mut Output) {
        self.answered(owner, node);
        self.fetch(owner, node, out);
    }

    /// The fetch of `owner`'s `node` is answered: a later one may be asked.
    pub fn answered(&mut self, owner: &BareJid, node: &str) {
        self.asked.remove(&(owner.clone(), node.to_owned()));
    }

    /// Records that `owner`'s `node` was read whole, or found missing: what it holds (perhaps
    /// nothing) is known.
    pub fn mark_read(&mut self, owner: &BareJid, node: &str) {
        self.read.insert((owner.clone(), node.to_owned()));
    }

    /// Forgets that `owner`'s `node` was read: the next message to `owner` reads it again.
    pub fn unread(&mut self, owner: &BareJid, node: &str) {
        self.read.remove(&(owner.clone(), node.to_owned()));
    }

    /// Whether `owner`'s `node` was read ([`Directory::mark_read`]).
    pub fn is_read(&self, owner: &BareJid, node: &str) -> bool {
        self.read.contains(&(owner.clone(), node.to_owned()))
    }

    /// Whether `owner`'s `node` was read ([`Directory::mark_read`]); if not, it is fetched (once
    /// while in flight).
    pub fn read_or_fetch(&mut self, owner: &BareJid, node: &str, out: &mut Output) -> bool {
        let read = self.is_read(owner, node);
        if !read {
            self.fetch(owner, node, out);
        }
        read
    }

    /// Queues a message for [`flush`].
    pub fn queue(&mut self, to: &BareJid, body: &str) {
        self.pending.push((to.clone(), Content::body(body)));
    }

    /// Queues a message with parts beyond its body for [`flush`] ([`Keyed::seal_content`]).
    pub fn queue_content(&mut self, to: &BareJid, content: &Content) {
        self.pending.push((to.clone(), content.clone()));
    }

    /// Gives up every message waiting for `to` (alert `not-sent`, saying `why`).
    pub fn give_up(&mut self, to: &BareJid, why: &str, out: &mut Output) {
        let (given_up, rest): (Vec<_>, Vec<_>) =
            core::mem::take(&mut self.pending).into_iter().partition(|(t, _)| t == to);
        self.pending = rest;
        for _ in given_up {
            out.events.push(Event::Alert {
                reason: crate::reason::NOT_SENT.code,
                detail: format!("to {to}: {why}"),
            });
        }
    }

    /// Holds a received stanza (its `from` parsed) until its sender's keys are in, within
    /// `limits`; `false` when it cannot be held (refuse it now).
    pub fn hold(&mut self, stanza: &Element, limits: Limits, out: &mut Output) -> bool {
        let Some(sender) = sender_of(stanza).map(|j| j.to_bare()) else { return false };
        let of_sender = |s: &Element| sender_of(s).is_some_and(|j| j.to_bare() == sender);
        if let Some(max) = limits.per_sender
            && self.held.iter().filter(|s| of_sender(s)).count() >= max
        {
            if let Some(oldest) = self.held.iter().position(of_sender) {
                self.held.remove(oldest);
            }
            out.events.push(Event::Alert {
                reason: crate::reason::DROPPED.code,
                detail: format!(
                    "more than {max} stanzas of {sender} wait for its keys: the oldest is dropped"
                ),
            });
        } else if self.held.len() >= limits.total {
            return false;
        }
        self.held.push(stanza.clone());
        true
    }

    /// Takes the stanzas of `owner` out of the held ones, each with its sender.
    pub fn release(&mut self, owner: &BareJid) -> Vec<(Jid, Element)> {
        let mut released = Vec::new();
        for stanza in core::mem::take(&mut self.held) {
            match sender_of(&stanza) {
                Some(from) if from.to_bare() == *owner => released.push((from, stanza)),
                _ => self.held.push(stanza),
            }
        }
        released
    }

    /// Forgets everything in flight (what a thief of long-term keys does not get): the
    /// pending messages, the held stanzas, the fetches asked for. What was read stays known.
    pub fn wipe(&mut self) {
        self.pending.clear();
        self.held.clear();
        self.asked.clear();
    }
}

/// Why a waiting message is not sent: the detail of its `not-sent` alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotSent(pub String);

impl From<E2eError> for NotSent {
    fn from(e: E2eError) -> Self {
        NotSent(e.to_string())
    }
}

/// A waiting message, sealed: the stanza to send, `None` while keys are still being fetched.
pub type Sealed = Result<Option<Element>, NotSent>;

/// A fetch answered with an error.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// The account whose node was asked for.
    pub owner: &'a BareJid,
    /// The node.
    pub node: &'a str,
    /// The stanza error condition (`item-not-found` when the node does not exist).
    pub condition: &'a str,
}

/// A surreptitious forwarding ([`crate::Engine::forward`]): a signed message the device
/// received, to be sent on to `to` as if written to `to` (`body`, if any, slipped in around
/// the signed part).
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The stanza as it crossed the wire.
    pub recorded: &'a Element,
    /// Whom the forgery goes to.
    pub to: &'a BareJid,
    /// What to slip in (empty: nothing).
    pub body: &'a str,
}

/// What an engine that keeps a [`Directory`] tells the kit.
pub trait Keyed {
    /// Its directory.
    fn directory(&mut self) -> &mut Directory;

    /// Where it believes PEP payloads ([`pep`]).
    fn placement(&self) -> Placement {
        Placement::Anywhere
    }

    /// PEP items: a fetch answered, or a notification.
    fn items(&mut self, cx: &mut Cx<'_>, pep: &Pep<'_>, out: &mut Output) -> Result<(), E2eError>;

    /// Any other stanza addressed to the device (a message, most of all).
    fn message(&mut self, cx: &mut Cx<'_>, stanza: &Element, out: &mut Output) -> Result<(), E2eError>;

    /// A waiting message to `to`, sealed; fetches for missing keys go into `out`.
    fn seal(&mut self, cx: &mut Cx<'_>, to: &BareJid, body: &str, out: &mut Output) -> Sealed;

    /// A waiting message with parts beyond its body (XEP-0210 §4.1), sealed. By default the
    /// body alone: an engine whose protocol protects the other parts seals them too.
    fn seal_content(&mut self, cx: &mut Cx<'_>, to: &BareJid, content: &Content, out: &mut Output) -> Sealed {
        self.seal(cx, to, &content.body, out)
    }

    /// What follows from a failed fetch (after the fetch is marked answered).
    fn failed(&mut self, cx: &mut Cx<'_>, failure: Failure<'_>, out: &mut Output);

    /// Reads a held stanza again (its sender's keys are in); the error is what
    /// [`crate::Engine::receive`] would have returned had the keys been there.
    fn reread(&mut self, cx: &mut Cx<'_>, stanza: &Element, out: &mut Output) -> Result<(), E2eError> {
        let _ = (cx, stanza, out);
        Ok(())
    }

    /// A forgery under the recorded sender's signature, sealed to the keys of `order.to` in
    /// the directory (`Ok(None)`: the protocol has no sender signature to reuse). Without
    /// them, the output holds the fetches that find them.
    fn forwarding(&mut self, cx: &mut Cx<'_>, order: Forwarding<'_>) -> Result<Option<Output>, E2eError> {
        let _ = (cx, order);
        Ok(None)
    }
}

/// Queues a message and sends whatever can go.
pub fn send(engine: &mut dyn Keyed, cx: &mut Cx<'_>, to: &BareJid, body: &str) -> Output {
    let mut out = Output::default();
    engine.directory().queue(to, body);
    flush(engine, cx, &mut out);
    out
}

/// Queues a message with parts beyond its body and sends whatever can go.
pub fn send_content(engine: &mut dyn Keyed, cx: &mut Cx<'_>, to: &BareJid, content: &Content) -> Output {
    let mut out = Output::default();
    engine.directory().queue_content(to, content);
    flush(engine, cx, &mut out);
    out
}

/// Seals every waiting message whose keys are complete; the others wait on (or are given up,
/// alert `not-sent`).
pub fn flush(engine: &mut dyn Keyed, cx: &mut Cx<'_>, out: &mut Output) {
    for (to, content) in core::mem::take(&mut engine.directory().pending) {
        let sealed = if content.parts.is_empty() {
            engine.seal(cx, &to, &content.body, out)
        } else {
            engine.seal_content(cx, &to, &content, out)
        };
        match sealed {
            Ok(Some(stanza)) => out.actions.push(Action::Send(stanza)),
            Ok(None) => engine.directory().pending.push((to, content)),
            Err(NotSent(why)) => out.events.push(Event::Alert {
                reason: crate::reason::NOT_SENT.code,
                detail: format!("to {to}: {why}"),
            }),
        }
    }
}

/// Reads again the stanzas held for `owner`'s keys; each refusal is an [`Event::Rejected`].
pub fn retry(engine: &mut dyn Keyed, cx: &mut Cx<'_>, owner: &BareJid, out: &mut Output) {
    for (from, stanza) in engine.directory().release(owner) {
        if let Err(error) = engine.reread(cx, &stanza, out) {
            out.events.push(Event::Rejected { from, error });
        }
    }
}

/// The usual failure of the fetch of an account's one key node: the account has no keys (an
/// answer: what waits for them is sealed or refused now), reported with the alert `alert`
/// makes of (owner, condition) unless the account is our own (`own`).
pub fn no_keys(
    engine: &mut dyn Keyed,
    cx: &mut Cx<'_>,
    failure: Failure<'_>,
    own: &BareJid,
    alert: impl FnOnce(&BareJid, &str) -> Event,
    out: &mut Output,
) {
    let Failure { owner, node, condition } = failure;
    engine.directory().mark_read(owner, node);
    if owner != own {
        out.events.push(alert(owner, condition));
    }
    flush(engine, cx, out);
    retry(engine, cx, owner, out);
}

/// [`crate::Engine::fetch_failed`] for an engine that keeps a directory.
pub fn failed(engine: &mut dyn Keyed, cx: &mut Cx<'_>, failure: Failure<'_>) -> Output {
    let mut out = Output::default();
    engine.directory().answered(failure.owner, failure.node);
    engine.failed(cx, failure, &mut out);
    out
}

/// Where PEP items are looked for in a stanza.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// `<pubsub><items/>` and `<event><items/>` in any stanza.
    Anywhere,
    /// A fetch result only in an `<iq type='result'/>`, a notification only in a `<message/>`
    /// (XEP-0060 §6.5, §4.3); PEP payloads anywhere else are ignored.
    Strict,
}

/// PEP items that reached the engine.
#[derive(Debug, Clone, Copy)]
pub struct Pep<'a> {
    /// The stanza that carried them.
    pub stanza: &'a Element,
    /// The node, as `<items node/>` names it.
    pub node: Option<&'a str>,
    /// The `<items/>`.
    pub items: &'a Element,
    /// A fetch result (the whole node) rather than an event notification (what was just
    /// published).
    pub complete: bool,
}

impl<'a> Pep<'a> {
    /// The account the node belongs to: the stanza's `from`, our own account (`own`) when it
    /// has none (RFC 6120 §8.1.2.1); `None` when `from` does not parse.
    pub fn owner(&self, own: &BareJid) -> Option<BareJid> {
        match self.stanza.attr("from") {
            None => Some(own.clone()),
            Some(f) => f.parse::<Jid>().ok().map(|j| j.to_bare()),
        }
    }

    /// The `<item/>` children.
    pub fn each(&self) -> impl Iterator<Item = &'a Element> + use<'a> {
        self.items.children().filter(|i| i.name() == "item")
    }
}

/// The PEP items in `stanza`, if it carries any where `placement` looks.
pub fn pep(stanza: &Element, placement: Placement) -> Option<Pep<'_>> {
    let strict = placement == Placement::Strict;
    let result = stanza
        .get_child("pubsub", NS_PUBSUB)
        .and_then(|p| p.get_child("items", NS_PUBSUB))
        .filter(|_| !strict || (stanza.is("iq", NS_CLIENT) && stanza.attr("type") == Some("result")));
    let event = stanza
        .get_child("event", NS_PUBSUB_EVENT)
        .and_then(|e| e.get_child("items", NS_PUBSUB_EVENT))
        .filter(|_| !strict || stanza.is("message", NS_CLIENT));
    let (items, complete) = result.map(|i| (i, true)).or(event.map(|i| (i, false)))?;
    Some(Pep { stanza, node: items.attr("node"), items, complete })
}

/// [`crate::Engine::receive`] for an engine that keeps a directory: PEP items go to
/// [`Keyed::items`], everything else to [`Keyed::message`] — except, under
/// [`Placement::Strict`], a stanza with a PEP payload where it is not believed: ignored.
pub fn receive(engine: &mut dyn Keyed, cx: &mut Cx<'_>, stanza: &Element) -> Result<Output, E2eError> {
    let mut out = Output::default();
    let placement = engine.placement();
    let misplaced = || stanza.has_child("pubsub", NS_PUBSUB) || stanza.has_child("event", NS_PUBSUB_EVENT);
    if let Some(pep) = pep(stanza, placement) {
        engine.items(cx, &pep, &mut out)?;
    } else if placement == Placement::Anywhere || !misplaced() {
        engine.message(cx, stanza, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{ElementExt, el};

    fn bare(s: &str) -> BareJid {
        s.parse().unwrap()
    }

    fn message(from: &str, n: usize) -> Element {
        el("message", NS_CLIENT).with("from", from).with("id", n.to_string())
    }

    #[test]
    fn a_fetch_is_asked_once_while_in_flight() {
        let (mut dir, mut out, bob) = (Directory::default(), Output::default(), bare("bob@b.example"));
        dir.fetch(&bob, "keys", &mut out);
        dir.fetch(&bob, "keys", &mut out);
        assert_eq!(out.actions.len(), 1);
        dir.answered(&bob, "keys");
        dir.fetch(&bob, "keys", &mut out);
        dir.refetch(&bob, "keys", &mut out);
        assert_eq!(out.actions.len(), 3);
    }

    #[test]
    fn held_stanzas_are_bounded_per_sender_and_in_all() {
        let (mut dir, mut out) = (Directory::default(), Output::default());
        let limits = Limits { total: 3, per_sender: Some(2) };
        for n in 0..3 {
            assert!(dir.hold(&message("bob@b.example/a", n), limits, &mut out));
        }
        assert_eq!(out.events.len(), 1, "the third of bob's drops his oldest");
        assert!(dir.hold(&message("carol@c.example/a", 3), limits, &mut out));
        assert!(!dir.hold(&message("dave@d.example/a", 4), limits, &mut out));
        assert!(!dir.hold(&el("message", NS_CLIENT), limits, &mut out), "no sender, not held");
        let bob: Vec<String> = dir
            .release(&bare("bob@b.example"))
            .iter()
            .map(|(_, s)| s.attr("id").unwrap().to_owned())
            .collect();
        assert_eq!(bob, ["1", "2"]);
        assert_eq!(dir.held.len(), 1);
    }

    #[test]
    fn giving_up_reports_each_message_to_that_account() {
        let (mut dir, mut out) = (Directory::default(), Output::default());
        dir.queue(&bare("bob@b.example"), "a");
        dir.queue(&bare("carol@c.example"), "b");
        dir.queue(&bare("bob@b.example"), "c");
        dir.give_up(&bare("bob@b.example"), "no keys", &mut out);
        assert_eq!(out.events.len(), 2);
        assert_eq!(dir.pending, [(bare("carol@c.example"), Content::body("b"))]);
    }

    #[test]
    fn strict_placement_believes_results_in_iq_and_notifications_in_message() {
        let own = bare("me@a.example");
        let items = |ns: &str| el("items", ns).with("node", "n");
        let result = el("iq", NS_CLIENT)
            .with("type", "result")
            .with("from", "bob@b.example")
            .child(el("pubsub", NS_PUBSUB).child(items(NS_PUBSUB)));
        let pep_result = pep(&result, Placement::Strict).unwrap();
        assert!(pep_result.complete);
        assert_eq!(pep_result.owner(&own), Some(bare("bob@b.example")));
        assert_eq!(pep_result.node, Some("n"));
        let misplaced = el("message", NS_CLIENT).child(el("pubsub", NS_PUBSUB).child(items(NS_PUBSUB)));
        assert!(pep(&misplaced, Placement::Strict).is_none());
        let lenient = pep(&misplaced, Placement::Anywhere).unwrap();
        assert_eq!(lenient.owner(&own), Some(own.clone()));
        let event = el("message", NS_CLIENT)
            .with("from", "not a jid@@")
            .child(el("event", NS_PUBSUB_EVENT).child(items(NS_PUBSUB_EVENT)));
        let notification = pep(&event, Placement::Strict).unwrap();
        assert!(!notification.complete);
        assert_eq!(notification.owner(&own), None);
    }
}
