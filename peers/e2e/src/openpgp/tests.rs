#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, VecDeque};

use core::time::Duration;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::keys::{self, OwnKey};
use super::*;
use crate::kit::codec::b64;
use crate::time::EPOCH;
use crate::testing::{flip_bit, random_element};
use crate::xml::{ElementExt, NS_CLIENT, NS_EME, NS_PUBSUB, NS_PUBSUB_EVENT, el, text_el};
use crate::{
    Action, BareJid, Cx, Element, Engine, EngineConfig, Event, FullJid, Jid, OutOfBand, Output, Protocol, Theft,
    Trust, TrustPolicy, VerificationResult,
};
use pgp::types::KeyDetails as _;

const NOW: Duration = EPOCH.saturating_add(Duration::from_secs(3600));
const ALICE: &str = "alice@a.example/phone";
const ALICE2: &str = "alice@a.example/laptop";
const BOB: &str = "bob@b.example/laptop";
const CAROL: &str = "carol@c.example/desk";
const MALLORY: &str = "mallory@m.example/pc";

fn cx(r: &mut ChaCha20Rng) -> Cx<'_> {
    Cx { rng: r, now: NOW }
}

fn bare(s: &str) -> BareJid {
    s.parse::<FullJid>().unwrap().to_bare()
}

fn make(protocol: Protocol, jid: &str, seed: u64, policy: TrustPolicy) -> Box<dyn Engine> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let me: FullJid = jid.parse().unwrap();
    let config = EngineConfig::with_trust(policy);
    crate::new_engine(protocol, &me, &mut rng, &config)
}

type Poison = Box<dyn Fn(&BareJid, &str, &mut Vec<(String, Element)>)>;

/// Devices, a PEP service and the wire between them.
struct Net {
    devices: Vec<(FullJid, Box<dyn Engine>)>,
    pep: BTreeMap<(BareJid, String), Vec<(String, Element)>>,
    rng: ChaCha20Rng,
    now: Duration,
    /// Every message stanza sent: (sender index, stanza as routed).
    wire: Vec<(usize, Element)>,
    events: Vec<(usize, Event)>,
    errors: Vec<(usize, &'static str)>,
    /// A malicious server rewriting PEP answers (owner, node, items).
    poison: Option<Poison>,
    /// Deliver sent messages to the sender's other devices too (carbons).
    carbons: bool,
}

enum Deliver {
    Stanza(Element),
    FetchFailed(BareJid, String),
}

impl Net {
    fn new(protocol: Protocol, jids: &[&str], policy: TrustPolicy) -> Net {
        let devices = jids
            .iter()
            .enumerate()
            .map(|(i, j)| (j.parse().unwrap(), make(protocol, j, 100 + i as u64, policy)))
            .collect();
        let mut net = Net {
            devices,
            pep: BTreeMap::new(),
            rng: ChaCha20Rng::seed_from_u64(7),
            now: NOW,
            wire: vec![],
            events: vec![],
            errors: vec![],
            poison: None,
            carbons: false,
        };
        for i in 0..jids.len() {
            net.call(i, |e, cx| e.publish(cx));
        }
        net
    }

    fn idx(&self, jid: &str) -> usize {
        self.devices.iter().position(|(j, _)| j.to_string() == jid).unwrap()
    }

    fn call(&mut self, i: usize, f: impl FnOnce(&mut dyn Engine, &mut Cx<'_>) -> Result<Output, E2eError>) {
        let mut rng = self.rng.clone();
        let result = f(self.devices[i].1.as_mut(), &mut Cx { rng: &mut rng, now: self.now });
        self.rng = rng;
        match result {
            Ok(out) => self.run(i, out),
            Err(e) => self.errors.push((i, e.code())),
        }
    }

    fn run(&mut self, i: usize, out: Output) {
        let mut queue: VecDeque<(usize, Deliver)> = VecDeque::new();
        self.absorb(i, out, &mut queue);
        while let Some((to, d)) = queue.pop_front() {
            let mut rng = self.rng.clone();
            let engine = self.devices[to].1.as_mut();
            let mut cx = Cx { rng: &mut rng, now: self.now };
            let result = match d {
                Deliver::Stanza(s) => engine.receive(&mut cx, &s),
                Deliver::FetchFailed(owner, node) => {
                    engine.fetch_failed(&mut cx, &owner, &node, "item-not-found")
                }
            };
            self.rng = rng;
            match result {
                Ok(out) => self.absorb(to, out, &mut queue),
                Err(e) => self.errors.push((to, e.code())),
            }
        }
    }

    fn absorb(&mut self, i: usize, out: Output, queue: &mut VecDeque<(usize, Deliver)>) {
        let me = self.devices[i].0.clone();
        for e in out.events {
            // A held stanza refused later is an error, as a client records it.
            if let Event::Rejected { error, .. } = &e {
                self.errors.push((i, error.code()));
            }
            self.events.push((i, e));
        }
        for a in out.actions {
            match a {
                Action::Publish { node, id, item, .. } => {
                    let list = self.pep.entry((me.to_bare(), node)).or_default();
                    list.retain(|(x, _)| *x != id);
                    list.push((id, item));
                }
                Action::Fetch { owner, node } => {
                    let mut items = self.pep.get(&(owner.clone(), node.clone())).cloned().unwrap_or_default();
                    if let Some(p) = &self.poison {
                        p(&owner, &node, &mut items);
                    }
                    if items.is_empty() {
                        queue.push_back((i, Deliver::FetchFailed(owner, node)));
                    } else {
                        let mut list = el("items", NS_PUBSUB).with("node", node);
                        for (id, item) in items {
                            list.append_child(el("item", NS_PUBSUB).with("id", id).child(item));
                        }
                        let iq = el("iq", NS_CLIENT)
                            .with("type", "result")
                            .with("from", owner.to_string())
                            .with("to", me.to_string())
                            .child(el("pubsub", NS_PUBSUB).child(list));
                        queue.push_back((i, Deliver::Stanza(iq)));
                    }
                }
                Action::Send(mut s) => {
                    s.set("from", me.to_string());
                    let to = s.attr("to").unwrap().parse::<Jid>().unwrap().to_bare();
                    self.wire.push((i, s.clone()));
                    for (k, (j, _)) in self.devices.iter().enumerate() {
                        if k != i && (j.to_bare() == to || (self.carbons && j.to_bare() == me.to_bare())) {
                            queue.push_back((k, Deliver::Stanza(s.clone())));
                        }
                    }
                }
            }
        }
    }

    fn send(&mut self, from: &str, to: &str, body: &str) {
        let i = self.idx(from);
        let to = bare(to);
        self.call(i, |e, cx| e.send(cx, &to, body));
    }

    fn deliver(&mut self, to: &str, stanza: Element) {
        let i = self.idx(to);
        self.call(i, |e, cx| e.receive(cx, &stanza));
    }

    fn shown(&self, jid: &str) -> Vec<(String, Trust)> {
        let i = self.idx(jid);
        self.events
            .iter()
            .filter(|(k, _)| *k == i)
            .filter_map(|(_, e)| match e {
                Event::Plaintext { body, trust, .. } => Some((body.clone(), *trust)),
                _ => None,
            })
            .collect()
    }

    fn alerts(&self, jid: &str) -> Vec<&'static str> {
        let i = self.idx(jid);
        self.events
            .iter()
            .filter(|(k, _)| *k == i)
            .filter_map(|(_, e)| match e {
                Event::Alert { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    fn errors_of(&self, jid: &str) -> Vec<&'static str> {
        let i = self.idx(jid);
        self.errors.iter().filter(|(k, _)| *k == i).map(|(_, c)| *c).collect()
    }

    fn last_wire(&self) -> Element {
        self.wire.last().unwrap().1.clone()
    }

    fn oob(&self, jid: &str) -> OutOfBand {
        self.devices[self.idx(jid)].1.out_of_band()
    }

    fn verify(&mut self, who: &str, peer: &str, oob: &OutOfBand) {
        let i = self.idx(who);
        let peer = bare(peer);
        self.call(i, |e, cx| e.verify(cx, &peer, oob));
    }
}

// ---- the core ----------------------------------------------------------------------------------

#[test]
fn keys_are_deterministic_and_well_formed() {
    let uid = "xmpp:alice@a.example";
    let a = OwnKey::generate(uid, keys::KEY_CREATED, &mut ChaCha20Rng::seed_from_u64(1)).unwrap();
    let b = OwnKey::generate(uid, keys::KEY_CREATED, &mut ChaCha20Rng::seed_from_u64(1)).unwrap();
    let c = OwnKey::generate(uid, keys::KEY_CREATED, &mut ChaCha20Rng::seed_from_u64(2)).unwrap();
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.public_bytes().unwrap(), b.public_bytes().unwrap());
    assert_ne!(a.fingerprint(), c.fingerprint());
    assert_eq!(a.fingerprint().len(), 40);
    assert!(a.fingerprint().bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()));
    // It parses back, its bindings verify, it names the account, it can be encrypted to.
    let cert = keys::parse_cert(&a.public_bytes().unwrap()).unwrap();
    assert_eq!(keys::fingerprint_hex(&cert), a.fingerprint());
    assert!(keys::has_xmpp_uid(&cert, &bare(ALICE)));
    assert!(!keys::has_xmpp_uid(&cert, &bare(BOB)));
    assert_eq!(keys::encryption_keys(&cert, NOW).len(), 1);
    assert_eq!(cert.primary_key.created_at().as_secs() as u64, keys::KEY_CREATED.as_secs());
    let armored = keys::parse_cert(a.public_armored().unwrap().as_bytes()).unwrap();
    assert_eq!(keys::fingerprint_hex(&armored), a.fingerprint());
    // A grouped, lower-case fingerprint reads the same.
    let grouped: String = a
        .fingerprint()
        .to_lowercase()
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c) + " ")
        .collect();
    assert_eq!(keys::normalise_fingerprint(&grouped), a.fingerprint());
}

#[test]
fn signatures_and_messages_are_deterministic_and_check_out() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let a = OwnKey::generate("xmpp:alice@a.example", keys::KEY_CREATED, &mut rng).unwrap();
    let b = OwnKey::generate("xmpp:bob@b.example", keys::KEY_CREATED, &mut rng).unwrap();
    let s1 = a.sign_detached(&mut ChaCha20Rng::seed_from_u64(9), b"status", NOW).unwrap();
    let s2 = a.sign_detached(&mut ChaCha20Rng::seed_from_u64(9), b"status", NOW).unwrap();
    assert_eq!(s1, s2);
    let sig = keys::parse_signature(&s1).unwrap();
    assert_eq!(sig.created().unwrap().as_secs() as u64, NOW.as_secs());
    assert!(keys::verify_by(a.public(), &sig, b"status"));
    assert!(!keys::verify_by(a.public(), &sig, b"statuS"));
    assert!(!keys::verify_by(b.public(), &sig, b"status"));
    assert!(keys::issuers(&sig).iter().any(|i| i == a.fingerprint()));

    let m1 = a.encrypt(&mut ChaCha20Rng::seed_from_u64(4), &[b.public()], b"hi", NOW, true).unwrap();
    let m2 = a.encrypt(&mut ChaCha20Rng::seed_from_u64(4), &[b.public()], b"hi", NOW, true).unwrap();
    assert_eq!(m1, m2, "same seed, same clock, same bytes");
    let d = b.decrypt(&m1).unwrap();
    assert_eq!(d.data, b"hi");
    assert!(keys::verify_by(a.public(), d.signature.as_ref().unwrap(), &d.data));
    assert_eq!(a.decrypt(&m1).unwrap_err().code(), "undecryptable");
}

#[test]
fn armour_round_trips_and_checks_its_crc() {
    let data: Vec<u8> = (0..200u8).collect();
    let body = keys::armor_body(&data);
    assert!(!body.contains("BEGIN"));
    assert!(body.lines().last().unwrap().starts_with('='));
    assert_eq!(keys::dearmor_body(&body).unwrap(), data);
    // Indented as a pretty-printer would leave it.
    let indented: String = body.lines().map(|l| format!("\n    {l}")).collect();
    assert_eq!(keys::dearmor_body(&indented).unwrap(), data);
    // The whole armour is read too.
    assert_eq!(keys::dearmor_body(&keys::armor_full(keys::Block::Message, &body)).unwrap(), data);
    let mut bad = body.clone();
    bad.replace_range(0..1, if bad.starts_with('A') { "B" } else { "A" });
    assert_eq!(keys::dearmor_body(&bad).unwrap_err().code(), "bad-checksum");
    assert_eq!(keys::dearmor_body("  ").unwrap_err().code(), "missing-element");
}

#[test]
fn stamps_with_offsets_are_read() {
    assert_eq!(parse_time("2014-07-10T17:06:00+02:00"), crate::time::parse_stamp("2014-07-10T15:06:00Z"));
    assert_eq!(parse_time("2014-07-10T17:06:00-01:30"), crate::time::parse_stamp("2014-07-10T18:36:00Z"));
    assert_eq!(parse_time("2014-07-10T17:06:00+2:00"), None);
    assert_eq!(parse_time("garbage+02:00"), None);
}

// ---- XEP-0027 ----------------------------------------------------------------------------------

#[test]
fn pgp_message_round_trip_through_the_keyserver() {
    let mut net = Net::new(Protocol::of(&PGP), &[ALICE, BOB], TrustPolicy::Btbv);
    net.send(ALICE, BOB, "hello bob");
    assert_eq!(net.shown(BOB), [("hello bob".to_owned(), Trust::Unverified)], "{:?}", net.errors);
    let s = net.last_wire();
    assert!(!String::from(&s).contains("hello bob"));
    assert_eq!(s.get_child("body", NS_CLIENT).unwrap().text(), xep0027::FALLBACK);
    let x = s.get_child("x", xep0027::NS_ENCRYPTED).unwrap();
    assert!(!x.text().contains("BEGIN PGP"), "armour headers are removed (XEP-0027 §1)");
    // Alice learnt Bob's key from the keyserver node and reported it.
    let bob_fpr = net.oob(BOB).peer_says[0].clone();
    assert!(net.events.iter().any(|(i, e)| *i == 0
        && matches!(e, Event::TrustChanged { fingerprint, trust: Trust::Unverified, .. } if *fingerprint == bob_fpr)));
    // And back.
    net.send(BOB, ALICE, "hi alice");
    assert_eq!(net.shown(ALICE), [("hi alice".to_owned(), Trust::Unverified)]);
}

#[test]
fn pgp_verified_contact_still_reads_unverified_and_anybody_can_forge() {
    let mut net = Net::new(Protocol::of(&PGP), &[ALICE, BOB, CAROL], TrustPolicy::Btbv);
    net.send(ALICE, BOB, "first");
    let oob = net.oob(ALICE);
    net.send(BOB, ALICE, "warm up"); // Bob fetches Alice's key
    net.verify(BOB, ALICE, &oob);
    assert!(
        net.events
            .iter()
            .any(|(i, e)| *i == 1
                && matches!(e, Event::Verification { result: VerificationResult::Match, .. }))
    );
    net.send(ALICE, BOB, "second");
    // Nothing signs an XEP-0027 message: verification of Alice's key says nothing about it.
    assert_eq!(net.shown(BOB).last().unwrap(), &("second".to_owned(), Trust::Unverified));

    // Carol knows Bob's public key (from the keyserver) and writes "as Alice".
    net.send(CAROL, BOB, "hello from carol");
    let mut forged = net.last_wire();
    let x = forged.get_child("x", xep0027::NS_ENCRYPTED).unwrap().clone();
    forged = el("message", NS_CLIENT)
        .with("from", ALICE)
        .with("to", "bob@b.example")
        .with("type", "chat")
        .child(x);
    net.deliver(BOB, forged);
    let shown = net.shown(BOB);
    assert_eq!(shown.last().unwrap().0, "hello from carol");

    // The engine's own forge() agrees: the recipient can make one too.
    let bob = net.idx(BOB);
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let from: Jid = ALICE.parse().unwrap();
    let f = net.devices[bob].1.forge(&mut cx(&mut rng), &from, "forged").unwrap().unwrap();
    net.deliver(BOB, f);
    assert_eq!(net.shown(BOB).last().unwrap(), &("forged".to_owned(), Trust::Unverified));
}

#[test]
fn pgp_replay_is_accepted_as_the_xep_says() {
    let mut net = Net::new(Protocol::of(&PGP), &[ALICE, BOB], TrustPolicy::Btbv);
    net.send(ALICE, BOB, "pay 10");
    let s = net.last_wire();
    net.now += Duration::from_secs(86_400);
    net.deliver(BOB, s);
    assert_eq!(net.shown(BOB).iter().filter(|(b, _)| b == "pay 10").count(), 2);
}

#[test]
fn pgp_signed_presence_is_verified_with_the_keyserver_key() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let mut net = Net::new(Protocol::of(&PGP), &[ALICE, BOB, CAROL], TrustPolicy::Btbv);
    let alice = net.idx(ALICE);
    let x = net.devices[alice].1.presence(&mut cx(&mut rng)).unwrap();
    assert_eq!(x.len(), 1);
    assert!(x[0].is("x", xep0027::NS_SIGNED));
    let presence =
        el("presence", NS_CLIENT).with("from", ALICE).with("to", "bob@b.example").child(x[0].clone());
    let bob = net.idx(BOB);
    net.call(bob, |e, cx| e.receive_presence(cx, &presence));
    // Bob looked Alice up and verified her presence: nothing to report but her key.
    assert!(net.errors_of(BOB).is_empty(), "{:?}", net.errors);
    assert!(net.alerts(BOB).is_empty(), "{:?}", net.alerts(BOB));
    // The Pgp accessor shows which key signed it.
    let mut pgp_bob =
        Pgp::new(BOB.parse().unwrap(), &mut ChaCha20Rng::seed_from_u64(1), &EngineConfig::default());
    let alice_item = net.pep.get(&(bare(ALICE), xep0027::NODE_KEYSERVER.to_owned())).unwrap().clone();
    let mut items = el("items", NS_PUBSUB).with("node", xep0027::NODE_KEYSERVER);
    for (id, item) in alice_item {
        items.append_child(el("item", NS_PUBSUB).with("id", id).child(item));
    }
    let iq = el("iq", NS_CLIENT)
        .with("type", "result")
        .with("from", "alice@a.example")
        .child(el("pubsub", NS_PUBSUB).child(items));
    pgp_bob.receive(&mut cx(&mut rng), &iq).unwrap();
    pgp_bob.receive_presence(&mut cx(&mut rng), &presence).unwrap();
    assert_eq!(pgp_bob.presence_key(&bare(ALICE)), Some(net.oob(ALICE).peer_says[0].as_str()));

    // A status the signature does not cover.
    let mut changed = presence.clone();
    changed.append_child(text_el("status", NS_CLIENT, "Away"));
    assert_eq!(pgp_bob.receive_presence(&mut cx(&mut rng), &changed).unwrap_err().code(), "bad-signature");
    // Carol's signature on a presence claiming to be Alice's: Carol's key is not Alice's.
    let carol = net.idx(CAROL);
    let cx_ = net.devices[carol].1.presence(&mut cx(&mut rng)).unwrap();
    let fake = el("presence", NS_CLIENT).with("from", ALICE).child(cx_[0].clone());
    let out = pgp_bob.receive_presence(&mut cx(&mut rng), &fake).unwrap();
    assert!(
        out.actions.iter().any(|a| matches!(a, Action::Fetch { .. })),
        "an unknown issuer sends Bob to the keyserver"
    );
    let out = pgp_bob.receive(&mut cx(&mut rng), &iq).unwrap();
    assert!(
        out.events
            .iter()
            .any(|e| matches!(e, Event::Rejected { error, .. } if error.code() == "unknown-signer")),
        "{out:?}"
    );
    // A replayed presence verifies again (XEP-0027 §4).
    assert!(pgp_bob.receive_presence(&mut cx(&mut rng), &presence).is_ok());

    // A signed presence from an account with nothing on the keyserver: refused once the
    // lookup fails, with the error it gets when the keyserver's answer is already in.
    let stranger = el("presence", NS_CLIENT).with("from", "dave@d.example/pc").child(cx_[0].clone());
    net.call(bob, |e, cx| e.receive_presence(cx, &stranger));
    assert_eq!(net.errors_of(BOB), ["unknown-signer"], "{:?}", net.events);
    assert!(net.alerts(BOB).is_empty(), "{:?}", net.events);
}

#[test]
fn pgp_poisoned_keyserver_reads_and_verification_catches_it() {
    let mut net = Net::new(Protocol::of(&PGP), &[ALICE, BOB], TrustPolicy::Btbv);
    // Mallory's key names bob@b.example, uploaded to the "keyserver" in place of Bob's.
    let mut mallory = make(Protocol::of(&PGP), "bob@b.example/impostor", 66, TrustPolicy::Btbv);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let published = mallory.publish(&mut cx(&mut rng)).unwrap();
    let Some(Action::Publish { id, item, .. }) = published.actions.into_iter().next() else { panic!() };
    net.poison = Some(Box::new(move |owner, node, items| {
        if owner.to_string() == "bob@b.example" && node == xep0027::NODE_KEYSERVER {
            *items = vec![(id.clone(), item.clone())];
        }
    }));
    net.send(ALICE, BOB, "for bob only");
    let s = net.last_wire();
    // Bob cannot read it; the impostor can.
    assert_eq!(net.errors_of(BOB), ["undecryptable"]);
    let out = mallory.receive(&mut cx(&mut rng), &s).unwrap();
    assert!(matches!(&out.events[0], Event::Plaintext { body, .. } if body == "for bob only"));
    // Comparing fingerprints with the real Bob shows the substitution.
    let oob = net.oob(BOB);
    net.verify(ALICE, BOB, &oob);
    assert!(net.events.iter().any(
        |(i, e)| *i == 0 && matches!(e, Event::Verification { result: VerificationResult::Mismatch, .. })
    ));
    // After that the substituted key is not encrypted to.
    net.send(ALICE, BOB, "again");
    assert!(net.alerts(ALICE).contains(&"not-sent"));
}

#[test]
fn pgp_key_for_another_account_is_refused() {
    let mut net = Net::new(Protocol::of(&PGP), &[ALICE, BOB, CAROL], TrustPolicy::Btbv);
    let carol_items = net.pep.get(&(bare(CAROL), xep0027::NODE_KEYSERVER.to_owned())).unwrap().clone();
    net.poison = Some(Box::new(move |owner, node, items| {
        if owner.to_string() == "bob@b.example" && node == xep0027::NODE_KEYSERVER {
            *items = carol_items.clone();
        }
    }));
    net.send(ALICE, BOB, "x");
    let alerts = net.alerts(ALICE);
    assert!(alerts.contains(&"bad-key") && alerts.contains(&"not-sent"), "{alerts:?}");
}

#[test]
fn pgp_own_devices_read_what_the_other_sent_and_theft_reads_the_past() {
    let mut net = Net::new(Protocol::of(&PGP), &[ALICE, ALICE2, BOB], TrustPolicy::Btbv);
    // The laptop published after the phone looked its own account up: look again.
    net.call(0, |e, cx| e.publish(cx));
    net.carbons = true;
    net.send(ALICE, BOB, "seen on both of mine");
    assert_eq!(net.shown(BOB).len(), 1, "{:?}", net.errors);
    assert_eq!(
        net.shown(ALICE2),
        [("seen on both of mine".to_owned(), Trust::Unverified)],
        "{:?}",
        net.errors
    );
    // Theft of Bob's long-term key reads the recorded stanza.
    let recorded = net.last_wire();
    let bob = net.idx(BOB);
    let mut thief = net.devices[bob].1.steal(Theft::LongTermKeys);
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let out = thief.receive(&mut cx(&mut rng), &recorded).unwrap();
    assert!(matches!(&out.events[0], Event::Plaintext { body, .. } if body == "seen on both of mine"));
    // A stranger cannot.
    let mut stranger = make(Protocol::of(&PGP), CAROL, 9, TrustPolicy::Btbv);
    assert_eq!(stranger.receive(&mut cx(&mut rng), &recorded).unwrap_err().code(), "undecryptable");
}

#[test]
fn pgp_plain_body_is_flagged() {
    let mut net = Net::new(Protocol::of(&PGP), &[ALICE, BOB], TrustPolicy::Btbv);
    let plain = el("message", NS_CLIENT)
        .with("from", ALICE)
        .with("to", "bob@b.example")
        .child(text_el("body", NS_CLIENT, "psst"));
    net.deliver(BOB, plain);
    assert_eq!(net.shown(BOB), [("psst".to_owned(), Trust::Unencrypted)]);
    assert!(net.alerts(BOB).contains(&"unencrypted"));
}

// ---- XEP-0373 / XEP-0374 -----------------------------------------------------------------------

#[test]
fn ox_round_trip_publishes_and_discovers_keys() {
    let mut net = Net::new(Protocol::of(&OX), &[ALICE, BOB], TrustPolicy::Btbv);
    let alice_fpr = net.oob(ALICE).peer_says[0].clone();
    // §4: a data node and the metadata list.
    let meta = &net.pep[&(bare(ALICE), ox::NODE_PUBLIC_KEYS.to_owned())];
    assert_eq!(meta.len(), 1);
    let list = &meta[0].1;
    assert!(list.is("public-keys-list", ox::NS));
    assert_eq!(list.children().next().unwrap().attr("v4-fingerprint"), Some(alice_fpr.as_str()));
    assert!(net.pep.contains_key(&(bare(ALICE), ox::data_node(&alice_fpr))));

    net.send(ALICE, BOB, "hello bob");
    assert_eq!(
        net.shown(BOB),
        [("hello bob".to_owned(), Trust::Unverified)],
        "{:?} {:?}",
        net.errors,
        net.events
    );
    let s = net.last_wire();
    assert!(!String::from(&s).contains("hello bob"));
    assert!(s.get_child("openpgp", ox::NS).is_some());
    assert_eq!(s.get_child("encryption", NS_EME).unwrap().attr("namespace"), Some(ox::NS));
    assert_eq!(s.get_child("body", NS_CLIENT).unwrap().text(), ox::FALLBACK);
    net.send(BOB, ALICE, "hi");
    assert_eq!(net.shown(ALICE), [("hi".to_owned(), Trust::Unverified)]);

    // Verification turns the trust to verified.
    let oob = net.oob(ALICE);
    net.verify(BOB, ALICE, &oob);
    net.send(ALICE, BOB, "verified now");
    assert_eq!(net.shown(BOB).last().unwrap(), &("verified now".to_owned(), Trust::Verified));
}

#[test]
fn ox_signcrypt_shape() {
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let mut net = Net::new(Protocol::of(&OX), &[ALICE, BOB], TrustPolicy::Btbv);
    net.send(ALICE, BOB, "shape");
    let s = net.last_wire();
    // Decrypt by hand with Bob's key (the Ox accessor).
    let mut bob =
        Ox::new(BOB.parse().unwrap(), &mut ChaCha20Rng::seed_from_u64(101), &EngineConfig::default());
    let _ = &mut rng;
    let bytes = unb64("openpgp", &s.get_child("openpgp", ox::NS).unwrap().text()).unwrap();
    let d = bob.key().decrypt(&bytes).unwrap();
    assert_content(&d.data, "signcrypt", "shape");
    assert!(d.signature.is_some());
    let _ = bob.out_of_band();
    let _ = &mut bob;
}

/// A decrypted XEP-0373 §3.1 content element: `<name/>` for Bob, sent now, padded, `body`.
fn assert_content(data: &[u8], name: &str, body: &str) {
    let content: Element = String::from_utf8(data.to_vec()).unwrap().parse().unwrap();
    assert!(content.is(name, ox::NS), "{}", String::from(&content));
    let child = |n: &str| content.get_child(n, ox::NS).unwrap();
    assert_eq!(child("to").attr("jid"), Some("bob@b.example"));
    assert_eq!(child("time").attr("stamp"), Some(crate::time::format_stamp(NOW).as_str()));
    assert!(content.get_child("rpad", ox::NS).is_some());
    assert_eq!(child("payload").get_child("body", NS_CLIENT).unwrap().text(), body);
}

/// Builds an `<openpgp/>` stanza from `from` (whose key signs) to the recipient certificates,
/// with the signcrypt XML given.
fn handmade(
    signer: &OwnKey,
    to: &[&pgp::composed::SignedPublicKey],
    from: &str,
    stanza_to: &str,
    xml: &str,
) -> Element {
    let bytes = signer.encrypt(&mut ChaCha20Rng::seed_from_u64(77), to, xml.as_bytes(), NOW, true).unwrap();
    el("message", NS_CLIENT).with("from", from).with("to", stanza_to).with("type", "chat").child(text_el(
        "openpgp",
        ox::NS,
        b64(&bytes),
    ))
}

fn sc_xml(to: &str, stamp: &str, body: &str) -> String {
    format!(
        "<signcrypt xmlns='urn:xmpp:openpgp:0'><to jid='{to}'/><time stamp='{stamp}'/><rpad>x</rpad><payload><body xmlns='jabber:client'>{body}</body></payload></signcrypt>"
    )
}

/// Alice's, Bob's and Carol's Ox engines with the keys the Net made for them.
fn ox_keys(net: &Net) -> BTreeMap<&'static str, OwnKey> {
    let mut out = BTreeMap::new();
    for (jid, seed) in [(ALICE, 100), (BOB, 101), (CAROL, 102)] {
        if net.devices.iter().any(|(j, _)| j.to_string() == jid) {
            let ox = Ox::new(
                jid.parse().unwrap(),
                &mut ChaCha20Rng::seed_from_u64(seed),
                &EngineConfig::default(),
            );
            out.insert(jid, ox.key().clone());
        }
    }
    out
}

#[test]
fn ox_checks_to_time_and_signer() {
    let mut net = Net::new(Protocol::of(&OX), &[ALICE, BOB, CAROL], TrustPolicy::Btbv);
    let k = ox_keys(&net);
    assert_eq!(k[ALICE].fingerprint(), net.oob(ALICE).peer_says[0]);
    let now = crate::time::format_stamp(NOW);

    // Well-formed, by hand: accepted (and Bob fetches Alice's keys first).
    let ok = handmade(
        &k[ALICE],
        &[k[BOB].public()],
        ALICE,
        "bob@b.example",
        &sc_xml("bob@b.example", &now, "by hand"),
    );
    net.deliver(BOB, ok);
    assert_eq!(net.shown(BOB), [("by hand".to_owned(), Trust::Unverified)], "{:?}", net.errors);

    // Surreptitious forwarding: Alice's signed content for Bob, re-encrypted to Carol.
    let fwd = handmade(
        &k[ALICE],
        &[k[CAROL].public()],
        ALICE,
        "carol@c.example",
        &sc_xml("bob@b.example", &now, "fwd"),
    );
    net.deliver(CAROL, fwd.clone());
    // Carol first fetched Alice's keys; the stanza was checked when they came, and refused
    // with the error it gets when the keys are already there.
    assert_eq!(net.errors_of(CAROL), ["to-mismatch"]);
    assert!(net.alerts(CAROL).is_empty(), "{:?}", net.events);
    net.deliver(CAROL, fwd);
    assert_eq!(net.errors_of(CAROL), ["to-mismatch", "to-mismatch"]);

    // From the future.
    let later = crate::time::format_stamp(NOW + Duration::from_secs(3600));
    let future = handmade(
        &k[ALICE],
        &[k[BOB].public()],
        ALICE,
        "bob@b.example",
        &sc_xml("bob@b.example", &later, "future"),
    );
    net.deliver(BOB, future);
    assert_eq!(net.errors_of(BOB), ["time-implausible"]);
    // Within the allowed skew, and from the past: accepted.
    let soon = crate::time::format_stamp(NOW + Duration::from_secs(60));
    let old = crate::time::format_stamp(NOW - Duration::from_secs(86_400 * 30));
    for stamp in [soon, old] {
        let s = handmade(
            &k[ALICE],
            &[k[BOB].public()],
            ALICE,
            "bob@b.example",
            &sc_xml("bob@b.example", &stamp, "t"),
        );
        net.deliver(BOB, s);
    }
    assert_eq!(net.shown(BOB).len(), 3);

    // Carol signs, claiming to be Alice: not a key of Alice's (after a fresh look at Alice's keys).
    let spoof = handmade(
        &k[CAROL],
        &[k[BOB].public()],
        ALICE,
        "bob@b.example",
        &sc_xml("bob@b.example", &now, "spoof"),
    );
    net.deliver(BOB, spoof);
    assert!(net.errors_of(BOB).contains(&"unknown-signer"), "{:?}", net.events);
    assert!(!net.shown(BOB).iter().any(|(b, _)| b == "spoof"));

    // Encrypted but not signed (a <crypt/> in XEP-0373 terms): refused for IM (XEP-0374 §4).
    let bytes = k[ALICE]
        .encrypt(
            &mut ChaCha20Rng::seed_from_u64(1),
            &[k[BOB].public()],
            sc_xml("bob@b.example", &now, "unsigned").as_bytes(),
            NOW,
            false,
        )
        .unwrap();
    let unsigned = el("message", NS_CLIENT).with("from", ALICE).with("to", "bob@b.example").child(text_el(
        "openpgp",
        ox::NS,
        b64(&bytes),
    ));
    net.deliver(BOB, unsigned);
    assert_eq!(net.errors_of(BOB), ["time-implausible", "unknown-signer", "not-signed"]);

    // Two <time/> elements, a <sign/> instead of <signcrypt/>, no <to/>.
    for (xml, code) in [
        (
            format!(
                "<signcrypt xmlns='urn:xmpp:openpgp:0'><to jid='bob@b.example'/><time stamp='{now}'/><time stamp='{now}'/><payload/></signcrypt>"
            ),
            "malformed",
        ),
        (
            format!(
                "<sign xmlns='urn:xmpp:openpgp:0'><to jid='bob@b.example'/><time stamp='{now}'/><payload/></sign>"
            ),
            "malformed",
        ),
        (
            format!("<signcrypt xmlns='urn:xmpp:openpgp:0'><time stamp='{now}'/><payload/></signcrypt>"),
            "missing-element",
        ),
    ] {
        let s = handmade(&k[ALICE], &[k[BOB].public()], ALICE, "bob@b.example", &xml);
        net.errors.clear();
        net.deliver(BOB, s);
        assert_eq!(net.errors_of(BOB), [code], "{xml}");
    }
}

#[test]
fn ox_tampering_and_wrong_keys_are_rejected() {
    let mut net = Net::new(Protocol::of(&OX), &[ALICE, BOB, CAROL], TrustPolicy::Btbv);
    net.send(ALICE, BOB, "original");
    let s = net.last_wire();
    // One flipped bit anywhere in the OpenPGP message.
    let bytes = unb64("x", &s.get_child("openpgp", ox::NS).unwrap().text()).unwrap();
    for i in [10usize, bytes.len() / 2, bytes.len() - 3] {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        let mut t = s.clone();
        let o = t.get_child_mut("openpgp", ox::NS).unwrap();
        let _ = o.take_nodes();
        o.append_text(b64(&b));
        net.deliver(BOB, t);
    }
    assert_eq!(net.shown(BOB).len(), 1);
    assert_eq!(net.errors_of(BOB).len(), 3, "{:?}", net.errors);
    // Carol is not a recipient (the stanza readdressed to her).
    let mut t = s.clone();
    t.set("to", "carol@c.example");
    net.deliver(CAROL, t);
    assert_eq!(net.errors_of(CAROL), ["undecryptable"]);
    // Addressed elsewhere, not ours to read.
    let mut t = s.clone();
    t.set("to", "carol@c.example");
    net.deliver(BOB, t);
    assert_eq!(net.errors_of(BOB).last(), Some(&"not-for-us"));
}

#[test]
fn ox_replay_succeeds_as_the_xep_allows() {
    let mut net = Net::new(Protocol::of(&OX), &[ALICE, BOB], TrustPolicy::Btbv);
    net.send(ALICE, BOB, "once");
    let s = net.last_wire();
    net.now += Duration::from_secs(600);
    net.deliver(BOB, s);
    assert_eq!(net.shown(BOB).iter().filter(|(b, _)| b == "once").count(), 2, "{:?}", net.errors);
}

#[test]
fn ox_forge_is_impossible_and_theft_reads_the_past() {
    let mut net = Net::new(Protocol::of(&OX), &[ALICE, BOB], TrustPolicy::Btbv);
    net.send(ALICE, BOB, "secret");
    let recorded = net.last_wire();
    let bob = net.idx(BOB);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let from: Jid = ALICE.parse().unwrap();
    assert!(net.devices[bob].1.forge(&mut cx(&mut rng), &from, "x").unwrap().is_none());
    let mut thief = net.devices[bob].1.steal(Theft::LongTermKeys);
    let out = thief.receive(&mut cx(&mut rng), &recorded).unwrap();
    assert!(out.events.iter().any(|e| matches!(e, Event::Plaintext { body, .. } if body == "secret")));
}

// ---- surreptitious forwarding (D. Davis, USENIX ATC 2001) -------------------------------------

/// Alice writes to Mallory; returns the stanza as Mallory's device received it. Bob already
/// holds Alice's keys (she wrote to him), and Mallory Bob's when `mallory_knows_bob`.
fn alice_writes_to_mallory(mallory_knows_bob: bool) -> (Net, Element) {
    let mut net = Net::new(Protocol::of(&OX), &[ALICE, BOB, MALLORY], TrustPolicy::Btbv);
    net.send(ALICE, BOB, "hello bob");
    if mallory_knows_bob {
        net.send(MALLORY, BOB, "hello from mallory");
    }
    net.send(ALICE, MALLORY, "for mallory only");
    assert_eq!(net.shown(MALLORY).last().unwrap().0, "for mallory only", "{:?}", net.errors);
    let recorded = net.last_wire();
    assert_eq!(recorded.attr("from"), Some(ALICE));
    net.events.clear();
    net.errors.clear();
    (net, recorded)
}

/// The one stanza of an output that must hold only a `Send`, from `from` (as the attacker sets it).
fn the_send(out: Output, from: &str) -> Element {
    let [Action::Send(s)] = out.actions.as_slice() else {
        panic!("expected one Send, got {:?}", out.actions);
    };
    let mut s = s.clone();
    s.set("from", from);
    s
}

/// The device's own key, as the Net made it (seed 100 + position).
fn key_of(jid: &str, seed: u64) -> OwnKey {
    Ox::new(jid.parse().unwrap(), &mut ChaCha20Rng::seed_from_u64(seed), &EngineConfig::default())
        .key()
        .clone()
}

fn openpgp_bytes(s: &Element) -> Vec<u8> {
    unb64("openpgp", &s.get_child("openpgp", ox::NS).unwrap().text()).unwrap()
}

#[test]
fn ox_surreptitious_forwarding_decrypts_at_bob_and_fails_the_to_check() {
    use pgp::ser::Serialize as _;
    let (mut net, recorded) = alice_writes_to_mallory(true);
    let (alice, bob, mallory) = (key_of(ALICE, 100), key_of(BOB, 101), key_of(MALLORY, 102));
    assert_eq!(mallory.fingerprint(), net.oob(MALLORY).peer_says[0]);
    let m = net.idx(MALLORY);
    let mut rng = ChaCha20Rng::seed_from_u64(31);
    let out = net.devices[m].1.forward(&mut cx(&mut rng), &recorded, &bare(BOB), "").unwrap().unwrap();
    assert!(out.events.is_empty());
    let fwd = the_send(out, ALICE);
    // The shape `send` produces, addressed to Bob.
    assert_eq!(fwd.attr("to"), Some("bob@b.example"));
    assert_eq!(fwd.attr("type"), Some("chat"));
    assert_eq!(fwd.get_child("encryption", NS_EME).unwrap().attr("namespace"), Some(ox::NS));
    assert_eq!(fwd.get_child("body", NS_CLIENT).unwrap().text(), ox::FALLBACK);

    // It really decrypts with Bob's key, and carries Alice's signature over her <signcrypt/>
    // for Mallory, byte for byte.
    let original = mallory.decrypt(&openpgp_bytes(&recorded)).unwrap();
    let at_bob = bob.decrypt(&openpgp_bytes(&fwd)).unwrap();
    assert_eq!(at_bob.data, original.data);
    let (sig, sig0) = (at_bob.signature.unwrap(), original.signature.unwrap());
    assert_eq!(sig.to_bytes().unwrap(), sig0.to_bytes().unwrap());
    assert!(keys::verify_by(alice.public(), &sig, &at_bob.data));
    let sc: Element = String::from_utf8(at_bob.data).unwrap().parse().unwrap();
    assert!(sc.is("signcrypt", ox::NS));
    assert_eq!(sc.get_child("to", ox::NS).unwrap().attr("jid"), Some("mallory@m.example"));
    // Mallory no longer can read it: only Bob's key was used.
    assert!(mallory.decrypt(&openpgp_bytes(&fwd)).is_err());

    // Bob's engine verifies Alice's signature, then refuses the content: XEP-0373 §3.2.
    net.deliver(BOB, fwd);
    assert_eq!(net.errors_of(BOB), ["to-mismatch"], "{:?}", net.events);
    assert!(net.shown(BOB).is_empty());
}

#[test]
fn ox_forwarded_message_is_accepted_where_its_to_matches() {
    // The control: the rebuilt message is a valid signed OX message. Alice writes to Bob, and
    // Bob's laptop passes it on to Bob's other device, for which the <to/> still holds.
    const BOB2: &str = "bob@b.example/phone";
    let mut net = Net::new(Protocol::of(&OX), &[ALICE, BOB, BOB2], TrustPolicy::Btbv);
    net.call(1, |e, cx| e.publish(cx)); // the laptop learns of the phone's key
    net.send(ALICE, BOB, "to both of bob's devices");
    let recorded = net.last_wire();
    let mut rng = ChaCha20Rng::seed_from_u64(36);
    let out = net.devices[1].1.forward(&mut cx(&mut rng), &recorded, &bare(BOB), "").unwrap().unwrap();
    let fwd = the_send(out, ALICE);
    assert!(key_of(BOB, 101).decrypt(&openpgp_bytes(&fwd)).is_err(), "only the phone's key");
    net.events.clear();
    net.deliver(BOB2, fwd);
    assert_eq!(
        net.shown(BOB2),
        [("to both of bob's devices".to_owned(), Trust::Unverified)],
        "{:?}",
        net.errors
    );
}

#[test]
fn ox_signature_stripping_is_refused_as_not_signed() {
    const TEXT: &str = "wire the money to mallory";
    let (mut net, recorded) = alice_writes_to_mallory(true);
    let bob = key_of(BOB, 101);
    let m = net.idx(MALLORY);
    let mut rng = ChaCha20Rng::seed_from_u64(32);
    let out = net.devices[m].1.forward(&mut cx(&mut rng), &recorded, &bare(BOB), TEXT).unwrap().unwrap();
    let fwd = the_send(out, ALICE);
    assert_eq!(fwd.attr("to"), Some("bob@b.example"));
    assert!(!String::from(&fwd).contains(TEXT));
    // A well-formed XEP-0373 <crypt/> for Bob, encrypted and not signed.
    let at_bob = bob.decrypt(&openpgp_bytes(&fwd)).unwrap();
    assert!(at_bob.signature.is_none());
    assert_content(&at_bob.data, "crypt", TEXT);

    // XEP-0374 §3.1: only <signcrypt/> for IM.
    net.deliver(BOB, fwd);
    assert_eq!(net.errors_of(BOB), ["not-signed"], "{:?}", net.events);
    assert!(net.shown(BOB).is_empty());
    assert!(!format!("{:?}", net.events).contains(TEXT));
}

/// What the sim answers a fetch with: the node's items from `owner`'s PEP service.
fn pubsub_result(net: &Net, owner: &BareJid, node: &str) -> Element {
    let mut items = el("items", NS_PUBSUB).with("node", node);
    for (id, item) in net.pep.get(&(owner.clone(), node.to_owned())).cloned().unwrap_or_default() {
        items.append_child(el("item", NS_PUBSUB).with("id", id).child(item));
    }
    el("iq", NS_CLIENT)
        .with("type", "result")
        .with("from", owner.to_string())
        .child(el("pubsub", NS_PUBSUB).child(items))
}

#[test]
fn ox_forwarding_fetches_the_recipients_keys_first() {
    let (mut net, recorded) = alice_writes_to_mallory(false);
    let bob_fpr = net.oob(BOB).peer_says[0].clone();
    let m = net.idx(MALLORY);
    let mut thief = net.devices[m].1.steal(Theft::LongTermKeys);
    let mut rng = ChaCha20Rng::seed_from_u64(33);
    let to = bare(BOB);

    // No key of Bob's known: only the fetch `send` would make, nothing queued.
    let out = thief.forward(&mut cx(&mut rng), &recorded, &to, "").unwrap().unwrap();
    let meta = Action::Fetch { owner: to.clone(), node: ox::NODE_PUBLIC_KEYS.to_owned() };
    assert_eq!(out, Output { actions: vec![meta.clone()], events: vec![] });
    // Asked again before the answer: the same fetch again (the caller may have lost it).
    let again = thief.forward(&mut cx(&mut rng), &recorded, &to, "").unwrap().unwrap();
    assert_eq!(again.actions, [meta]);

    // The metadata list: the engine asks for the data node.
    let out = thief.receive(&mut cx(&mut rng), &pubsub_result(&net, &to, ox::NODE_PUBLIC_KEYS)).unwrap();
    let data = Action::Fetch { owner: to.clone(), node: ox::data_node(&bob_fpr) };
    assert_eq!(out.actions, core::slice::from_ref(&data));
    // forward meanwhile asks for the missing data node.
    let between = thief.forward(&mut cx(&mut rng), &recorded, &to, "").unwrap().unwrap();
    assert_eq!(between.actions, [data]);

    // The key: nothing is sent by `receive` (no pending send), and `forward` now sends.
    let out = thief.receive(&mut cx(&mut rng), &pubsub_result(&net, &to, &ox::data_node(&bob_fpr))).unwrap();
    assert!(out.actions.is_empty(), "{:?}", out.actions);
    let out = thief.forward(&mut cx(&mut rng), &recorded, &to, "").unwrap().unwrap();
    let fwd = the_send(out, ALICE);

    // At Bob: decrypted, Alice's signature verified, and refused by the <to/> check.
    net.deliver(BOB, fwd);
    assert_eq!(net.errors_of(BOB), ["to-mismatch"], "{:?}", net.events);
    assert!(net.shown(BOB).is_empty());

    // Without any announced key of the recipient: an error, no stanza.
    let mut rng = ChaCha20Rng::seed_from_u64(34);
    let nobody = bare("nobody@n.example/x");
    let empty = el("iq", NS_CLIENT).with("type", "result").with("from", "nobody@n.example").child(
        el("pubsub", NS_PUBSUB).child(
            el("items", NS_PUBSUB)
                .with("node", ox::NODE_PUBLIC_KEYS)
                .child(el("item", NS_PUBSUB).with("id", "current").child(el("public-keys-list", ox::NS))),
        ),
    );
    thief.receive(&mut cx(&mut rng), &empty).unwrap();
    assert_eq!(thief.forward(&mut cx(&mut rng), &recorded, &nobody, "").unwrap_err().code(), "policy");
}

#[test]
fn pgp_has_no_signature_to_forward() {
    let mut net = Net::new(Protocol::of(&PGP), &[ALICE, BOB], TrustPolicy::Btbv);
    net.send(ALICE, BOB, "unsigned by design");
    let (recorded, b, mut rng) = (net.last_wire(), net.idx(BOB), ChaCha20Rng::seed_from_u64(35));
    assert_eq!(net.devices[b].1.forward(&mut cx(&mut rng), &recorded, &bare(CAROL), "").unwrap(), None);
}

#[test]
fn ox_substituted_keys_and_policies() {
    // Manual: nothing is trusted before verification, so nothing is sent.
    let mut net = Net::new(Protocol::of(&OX), &[ALICE, BOB], TrustPolicy::Manual);
    net.send(ALICE, BOB, "x");
    assert!(net.alerts(ALICE).contains(&"not-sent"));
    assert!(
        net.events
            .iter()
            .any(|(i, e)| *i == 0 && matches!(e, Event::TrustChanged { trust: Trust::Untrusted, .. }))
    );
    let oob = net.oob(BOB);
    net.verify(ALICE, BOB, &oob);
    net.send(ALICE, BOB, "after verification");
    assert_eq!(net.shown(BOB).last().unwrap().0, "after verification");

    // A data node holding another key than its name says: refused.
    let mut net = Net::new(Protocol::of(&OX), &[ALICE, BOB, CAROL], TrustPolicy::Btbv);
    let carol_fpr = net.oob(CAROL).peer_says[0].clone();
    let carol_data = net.pep[&(bare(CAROL), ox::data_node(&carol_fpr))].clone();
    net.poison = Some(Box::new(move |owner, node, items| {
        if owner.to_string() == "bob@b.example" && node.starts_with(&format!("{}:", ox::NODE_PUBLIC_KEYS)) {
            *items = carol_data.clone();
        }
    }));
    net.send(ALICE, BOB, "y");
    let alerts = net.alerts(ALICE);
    assert!(alerts.contains(&"fingerprint-mismatch") && alerts.contains(&"not-sent"), "{alerts:?}");
}

#[test]
fn ox_own_devices_and_carbons() {
    let mut net = Net::new(Protocol::of(&OX), &[ALICE, ALICE2, BOB], TrustPolicy::Btbv);
    // Both devices announced: the metadata list holds both fingerprints.
    let list = &net.pep[&(bare(ALICE), ox::NODE_PUBLIC_KEYS.to_owned())][0].1;
    assert_eq!(list.children().count(), 2, "{list:?}");
    net.call(0, |e, cx| e.publish(cx));
    net.carbons = true;
    net.send(ALICE, BOB, "to bob, copy to me");
    assert_eq!(net.shown(BOB).len(), 1, "{:?}", net.errors);
    assert_eq!(net.shown(ALICE2), [("to bob, copy to me".to_owned(), Trust::Unverified)], "{:?}", net.errors);
}

// ---- mutation ----------------------------------------------------------------------------------

/// Flips, truncates, extends and replaces the text of a random element of recorded stanzas
/// (messages, presence, PEP results), adds junk children; every outcome is a value or a typed
/// error, never a panic.
fn mutate_and_feed(protocol: Protocol, seed: u64) -> std::collections::BTreeSet<&'static str> {
    let mut net = Net::new(protocol, &[ALICE, BOB], TrustPolicy::Btbv);
    net.send(ALICE, BOB, "one");
    net.send(BOB, ALICE, "two");
    let mut recorded: Vec<(usize, Element)> = net.wire.iter().map(|(i, s)| (1 - *i, s.clone())).collect();
    // PEP answers as the devices saw them.
    for ((owner, node), items) in &net.pep {
        let mut list = el("items", NS_PUBSUB).with("node", node.clone());
        for (id, item) in items {
            list.append_child(el("item", NS_PUBSUB).with("id", id.clone()).child(item.clone()));
        }
        let iq = el("iq", NS_CLIENT)
            .with("type", "result")
            .with("from", owner.to_string())
            .child(el("pubsub", NS_PUBSUB).child(list));
        recorded.push((0, iq.clone()));
        recorded.push((1, iq));
    }
    // Signed presence (pgp).
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let x = net.devices[0].1.presence(&mut cx(&mut rng)).unwrap();
    let presence = x.into_iter().fold(el("presence", NS_CLIENT).with("from", ALICE), |p, c| p.child(c));
    let mut codes = std::collections::BTreeSet::new();
    for round in 0..400usize {
        let (target, stanza) = if round % 7 == 0 {
            (1, &presence)
        } else {
            let (t, s) = &recorded[round % recorded.len()];
            (*t, s)
        };
        let mut s = stanza.clone();
        let node = random_element(&mut s, &mut rng);
        let text = node.text();
        match rng.next_u32() % 7 {
            0 => {
                // Flip a bit in the decoded payload (base64 or armour).
                let decoded = unb64("x", &text).ok().or_else(|| keys::dearmor_body(&text).ok());
                if let Some(mut b) = decoded.filter(|b| !b.is_empty()) {
                    flip_bit(&mut b, &mut rng);
                    let _ = node.take_nodes();
                    node.append_text(if text.contains('=') && text.contains('\n') {
                        keys::armor_body(&b)
                    } else {
                        b64(&b)
                    });
                }
            }
            1 => {
                // Truncate the packet stream.
                if let Ok(b) = unb64("x", &text) {
                    let keep = (rng.next_u32() as usize) % (b.len() + 1);
                    let _ = node.take_nodes();
                    node.append_text(b64(&b[..keep]));
                } else if text.len() > 2 {
                    let keep = (rng.next_u32() as usize) % text.len();
                    let _ = node.take_nodes();
                    node.append_text(text.chars().take(keep).collect::<String>());
                }
            }
            2 => {
                let _ = node.take_nodes();
                node.append_text("!!not base64!!");
            }
            3 => {
                let _ = node.take_nodes();
            }
            4 => {
                node.append_child(el("junk", "urn:example:junk").child(text_el(
                    "x",
                    "urn:example:junk",
                    "y",
                )));
            }
            5 => {
                for attr in ["jid", "stamp", "v4-fingerprint", "node", "from", "to"] {
                    if node.attr(attr).is_some() {
                        node.set(
                            attr,
                            ["", "x@@y", "2026-13-01T00:00:00Z", "ZZ", "urn:xmpp:openpgp:0:public-keys:00"]
                                [(rng.next_u32() % 5) as usize],
                        );
                    }
                }
            }
            _ => {
                // Random bytes in place of the payload.
                let mut b = vec![0u8; (rng.next_u32() % 300) as usize];
                rng.fill_bytes(&mut b);
                let _ = node.take_nodes();
                node.append_text(b64(&b));
            }
        }
        let mut engine = net.devices[target].1.steal(Theft::FullState);
        let result = if s.name() == "presence" {
            engine.receive_presence(&mut cx(&mut rng), &s)
        } else {
            engine.receive(&mut cx(&mut rng), &s)
        };
        match result {
            Ok(out) => {
                for e in out.events {
                    if let Event::Alert { reason, .. } = e {
                        codes.insert(reason);
                    }
                }
            }
            Err(e) => {
                codes.insert(e.code());
            }
        }
    }
    codes
}

#[test]
fn mutated_pgp_and_ox_stanzas_never_panic() {
    for (protocol, seed) in [(Protocol::of(&PGP), 21), (Protocol::of(&OX), 22)] {
        let codes = mutate_and_feed(protocol, seed);
        eprintln!("{protocol} mutation outcomes: {codes:?}");
        assert!(codes.contains("malformed") || codes.contains("missing-element"), "{protocol}: {codes:?}");
        assert!(codes.len() >= 3, "{protocol}: {codes:?}");
    }
}

#[test]
fn same_seed_same_wire() {
    for protocol in [Protocol::of(&PGP), Protocol::of(&OX)] {
        let run = || {
            let mut net = Net::new(protocol, &[ALICE, BOB], TrustPolicy::Btbv);
            net.send(ALICE, BOB, "determinism");
            net.send(BOB, ALICE, "both ways");
            net.wire.iter().map(|(_, s)| String::from(s)).collect::<Vec<_>>()
        };
        let (a, b) = (run(), run());
        assert_eq!(a.len(), 2, "{protocol}");
        assert_eq!(a, b, "{protocol}");
    }
}

// ---- review fixes: bounds, revocation, expiry, key choice, verification, TOFU --------------------

/// An `<openpgp/>` stanza from Alice to Bob (keys from a fresh Net) carrying `xml`, and a
/// standalone Ox Bob with Alice's keys known.
fn bob_with_alice_known() -> (Net, BTreeMap<&'static str, OwnKey>) {
    let mut net = Net::new(Protocol::of(&OX), &[ALICE, BOB], TrustPolicy::Btbv);
    net.send(BOB, ALICE, "hello"); // Bob reads Alice's keys
    net.send(ALICE, BOB, "hello"); // and Alice Bob's
    let k = ox_keys(&net);
    (net, k)
}

#[test]
fn ox_deeply_nested_signcrypt_is_refused_before_parsing() {
    let (mut net, k) = bob_with_alice_known();
    let now = crate::time::format_stamp(NOW);
    let deep = |open: &str, close: &str, n: usize| {
        format!(
            "<signcrypt xmlns='urn:xmpp:openpgp:0'><to jid='bob@b.example'/><time stamp='{now}'/><payload><body xmlns='jabber:client'>deep</body>{}{}</payload></signcrypt>",
            open.repeat(n),
            close.repeat(n)
        )
    };
    // 33 levels inside <payload/> (35 in all): refused. A `/>` inside a quoted attribute
    // value does not end the tag, so it does not hide the nesting either.
    for xml in [deep("<a>", "</a>", 33), deep("<a x='/>'>", "</a>", 33), deep("<a x=\"/>\">", "</a>", 33)] {
        net.errors.clear();
        net.deliver(BOB, handmade(&k[ALICE], &[k[BOB].public()], ALICE, "bob@b.example", &xml));
        assert_eq!(net.errors_of(BOB), ["malformed"], "{xml}");
    }
    // Shallow extra elements: accepted.
    net.errors.clear();
    let ok = deep("<a>", "</a>", 20);
    net.deliver(BOB, handmade(&k[ALICE], &[k[BOB].public()], ALICE, "bob@b.example", &ok));
    assert!(net.errors_of(BOB).is_empty(), "{:?}", net.errors);
    assert_eq!(net.shown(BOB).last().unwrap().0, "deep");
}

/// A message to `to` holding `data`, compressed (ZLIB) before encryption.
fn compressed_message(to: &OwnKey, data: Vec<u8>) -> Vec<u8> {
    use pgp::composed::MessageBuilder;
    use pgp::crypto::sym::SymmetricKeyAlgorithm;
    use pgp::types::CompressionAlgorithm;
    let mut r = ChaCha20Rng::seed_from_u64(9);
    let mut rng = crate::rng06::Rng06(&mut r);
    let mut builder = MessageBuilder::from_bytes("", data);
    builder.compression(CompressionAlgorithm::ZLIB);
    let mut builder = builder.seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
    for key in keys::encryption_keys(to.public(), NOW) {
        builder.encrypt_to_key(&mut rng, key).unwrap();
    }
    builder.to_vec(&mut rng).unwrap()
}

#[test]
fn decompression_is_bounded() {
    let bob = key_of(BOB, 5);
    // 16 MiB of zeros compress to a few KiB: refused without inflating it all.
    let bomb = compressed_message(&bob, vec![0u8; 16 << 20]);
    assert!(bomb.len() < 64 * 1024);
    assert_eq!(bob.decrypt(&bomb).unwrap_err().code(), "too-large");
    // Exactly the limit is fine, one byte more is not.
    let at = compressed_message(&bob, vec![b'x'; keys::MAX_PLAINTEXT]);
    assert_eq!(bob.decrypt(&at).unwrap().data.len(), keys::MAX_PLAINTEXT);
    let over = compressed_message(&bob, vec![b'x'; keys::MAX_PLAINTEXT + 1]);
    assert_eq!(bob.decrypt(&over).unwrap_err().code(), "too-large");
}

fn ox_alone(jid: &str, policy: TrustPolicy) -> Ox {
    Ox::new(jid.parse().unwrap(), &mut ChaCha20Rng::seed_from_u64(900), &EngineConfig::with_trust(policy))
}

fn alerts_of(out: &Output) -> Vec<&'static str> {
    out.events
        .iter()
        .filter_map(|e| match e {
            Event::Alert { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn metadata_answer(owner: &str, fprs: &[String]) -> Element {
    let mut list = el("public-keys-list", ox::NS);
    for f in fprs {
        list.append_child(
            el("pubkey-metadata", ox::NS)
                .with("v4-fingerprint", f.clone())
                .with("date", "2026-01-01T00:00:00Z"),
        );
    }
    el("iq", NS_CLIENT).with("type", "result").with("from", owner).child(
        el("pubsub", NS_PUBSUB).child(
            el("items", NS_PUBSUB)
                .with("node", ox::NODE_PUBLIC_KEYS)
                .child(el("item", NS_PUBSUB).with("id", "current").child(list)),
        ),
    )
}

#[test]
fn ox_waiting_stanzas_are_capped_per_sender_and_drained_on_a_bad_list() {
    let net = Net::new(Protocol::of(&OX), &[ALICE, BOB], TrustPolicy::Btbv);
    let k = ox_keys(&net);
    let mut bob = ox_alone(BOB, TrustPolicy::Btbv);
    let now = crate::time::format_stamp(NOW);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut dropped = 0;
    for n in 0..6 {
        let s = handmade(
            &k[ALICE],
            &[bob.key().public()],
            ALICE,
            "bob@b.example",
            &sc_xml("bob@b.example", &now, &n.to_string()),
        );
        let out = bob.receive(&mut cx(&mut rng), &s).unwrap();
        dropped += alerts_of(&out).iter().filter(|a| **a == "dropped").count();
    }
    assert_eq!(dropped, 2, "a fifth and sixth stanza evict the oldest");
    // Alice's list names a malformed fingerprint: the four waiting stanzas are refused now.
    let out =
        bob.receive(&mut cx(&mut rng), &metadata_answer("alice@a.example", &["nothex".into()])).unwrap();
    // The list itself is an alert; each waiting stanza is refused with its error.
    let alerts = alerts_of(&out);
    assert_eq!(alerts, ["malformed"], "{out:?}");
    let refused: Vec<&str> = out
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Rejected { from, error } if from.to_bare() == bare(ALICE) => Some(error.code()),
            _ => None,
        })
        .collect();
    assert_eq!(refused, ["malformed"; 4], "{out:?}");
    // Nothing waits any more: a good list later brings nothing back.
    let good = metadata_answer("alice@a.example", &[k[ALICE].fingerprint().to_owned()]);
    let out = bob.receive(&mut cx(&mut rng), &good).unwrap();
    assert!(!out.events.iter().any(|e| matches!(e, Event::Plaintext { .. })));
}

#[test]
fn ox_keys_are_taken_only_when_announced_and_capped() {
    let net = Net::new(Protocol::of(&OX), &[ALICE, BOB, CAROL], TrustPolicy::Btbv);
    let carol_fpr = net.oob(CAROL).peer_says[0].clone();
    let node = ox::data_node(&carol_fpr);
    let data = net.pep[&(bare(CAROL), node.clone())].clone();
    let mut items = el("items", NS_PUBSUB_EVENT).with("node", node);
    for (id, item) in data {
        items.append_child(el("item", NS_PUBSUB_EVENT).with("id", id).child(item));
    }
    let push = el("message", NS_CLIENT)
        .with("from", "carol@c.example")
        .child(el("event", NS_PUBSUB_EVENT).child(items));
    let mut bob = ox_alone(BOB, TrustPolicy::Btbv);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let out = bob.receive(&mut cx(&mut rng), &push).unwrap();
    assert!(alerts_of(&out).is_empty(), "{out:?}");
    assert!(!out.events.iter().any(|e| matches!(e, Event::TrustChanged { .. })), "{out:?}");
    // A list of 20 keys: 16 fetched, and reported.
    let many: Vec<String> = (0..20).map(|n| format!("{n:040X}")).collect();
    let out = bob.receive(&mut cx(&mut rng), &metadata_answer("carol@c.example", &many)).unwrap();
    assert_eq!(alerts_of(&out), ["too-many-keys"]);
    assert_eq!(
        out.actions.iter().filter(|a| matches!(a, Action::Fetch { .. })).count(),
        ox::MAX_KEYS_PER_ACCOUNT
    );
}

/// `key` with `extra` signatures added to its (only) user ID, or as key revocations.
fn with_signatures(
    key: &OwnKey,
    extra: impl FnOnce(&OwnKey, &mut pgp::composed::SignedPublicKey),
) -> Vec<u8> {
    use pgp::ser::Serialize as _;
    let mut public = key.public().clone();
    extra(key, &mut public);
    public.to_bytes().unwrap()
}

fn sig_config(typ: pgp::packet::SignatureType, at: Duration, key: &OwnKey) -> pgp::packet::SignatureConfig {
    use pgp::packet::{SignatureConfig, Subpacket, SubpacketData};
    let mut c = SignatureConfig::v4(
        typ,
        pgp::crypto::public_key::PublicKeyAlgorithm::EdDSALegacy,
        pgp::crypto::hash::HashAlgorithm::Sha256,
    );
    c.hashed_subpackets = vec![
        Subpacket::regular(SubpacketData::SignatureCreationTime(keys::timestamp(at))).unwrap(),
        Subpacket::regular(SubpacketData::IssuerFingerprint(key.public().fingerprint())).unwrap(),
    ];
    c
}

fn certify(
    key: &OwnKey,
    p: &mut pgp::composed::SignedPublicKey,
    typ: pgp::packet::SignatureType,
    at: Duration,
    expires: Option<u32>,
) {
    use pgp::packet::{Subpacket, SubpacketData};
    use pgp::types::{Password, Tag};
    let mut c = sig_config(typ, at, key);
    if let Some(secs) = expires {
        c.hashed_subpackets.push(
            Subpacket::regular(SubpacketData::KeyExpirationTime(pgp::types::Duration::from_secs(secs)))
                .unwrap(),
        );
    }
    let sec = key.secret_key();
    let uid = p.details.users[0].id.clone();
    let sig = c
        .sign_certification(&sec.primary_key, &p.primary_key, &Password::empty(), Tag::UserId, &uid)
        .unwrap();
    p.details.users[0].signatures.push(sig);
}

#[test]
fn revoked_user_ids_and_keys_and_expired_keys_are_not_used() {
    use pgp::packet::SignatureType;
    use pgp::types::Password;
    let alice = key_of(ALICE, 8);
    let later = keys::KEY_CREATED + Duration::from_secs(60);
    // A certification revocation (0x30) newer than the self-certification: the user ID is gone.
    let revoked_uid = keys::parse_cert(&with_signatures(&alice, |k, p| {
        certify(k, p, SignatureType::CertRevocation, later, None)
    }))
    .unwrap();
    assert!(!keys::has_xmpp_uid(&revoked_uid, &bare(ALICE)));
    assert!(!keys::names_account(&revoked_uid, &bare(ALICE)));
    // ... and a new self-certification after it restores it.
    let restored = keys::parse_cert(&with_signatures(&alice, |k, p| {
        certify(k, p, SignatureType::CertRevocation, later, None);
        certify(k, p, SignatureType::CertPositive, later + Duration::from_secs(1), None);
    }))
    .unwrap();
    assert!(keys::has_xmpp_uid(&restored, &bare(ALICE)));
    // A key revocation (0x20): the certificate is refused.
    let revoked = with_signatures(&alice, |k, p| {
        let sig = sig_config(SignatureType::KeyRevocation, later, k)
            .sign_key(&k.secret_key().primary_key, &Password::empty(), &p.primary_key)
            .unwrap();
        p.details.revocation_signatures.push(sig);
    });
    assert_eq!(keys::parse_cert(&revoked).unwrap_err().code(), "key-revoked");
    // A newer self-certification giving the key one day: encrypted to before, not after.
    let expiring = keys::parse_cert(&with_signatures(&alice, |k, p| {
        certify(k, p, SignatureType::CertPositive, later, Some(86_400))
    }))
    .unwrap();
    assert_eq!(keys::encryption_keys(&expiring, keys::KEY_CREATED + Duration::from_secs(3600)).len(), 1);
    assert!(keys::expired_at(&expiring, keys::KEY_CREATED + Duration::from_secs(86_400)));
    assert!(keys::encryption_keys(&expiring, keys::KEY_CREATED + Duration::from_secs(86_400)).is_empty());
    assert!(
        alice
            .encrypt(
                &mut ChaCha20Rng::seed_from_u64(1),
                &[&expiring],
                b"x",
                keys::KEY_CREATED + Duration::from_secs(90_000),
                false
            )
            .is_err()
    );
}

#[test]
fn xmpp_user_ids_are_compared_as_jids() {
    let k = OwnKey::generate("xmpp:Alice@A.EXAMPLE", keys::KEY_CREATED, &mut ChaCha20Rng::seed_from_u64(3))
        .unwrap();
    assert!(
        keys::has_xmpp_uid(k.public(), &bare(ALICE)),
        "RFC 7622 normalisation: case-insensitive domain, nodeprep"
    );
    let k =
        OwnKey::generate("xmpp:alice@a.example/phone", keys::KEY_CREATED, &mut ChaCha20Rng::seed_from_u64(3))
            .unwrap();
    assert!(!keys::has_xmpp_uid(k.public(), &bare(ALICE)), "a full JID is not the account's user ID");
}

#[test]
fn pgp_encrypts_to_the_key_that_signed_presence() {
    let mut net = Net::new(Protocol::of(&PGP), &[ALICE, BOB], TrustPolicy::Btbv);
    // A second key naming alice@a.example on the keyserver, next to hers.
    let mut impostor = make(Protocol::of(&PGP), "alice@a.example/impostor", 66, TrustPolicy::Btbv);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let Some(Action::Publish { id, item, .. }) =
        impostor.publish(&mut cx(&mut rng)).unwrap().actions.into_iter().next()
    else {
        panic!()
    };
    net.poison = Some(Box::new(move |owner, node, items| {
        if owner.to_string() == "alice@a.example" && node == xep0027::NODE_KEYSERVER {
            items.push((id.clone(), item.clone()));
        }
    }));
    let alice = net.idx(ALICE);
    let x = net.devices[alice].1.presence(&mut cx(&mut rng)).unwrap();
    let presence =
        el("presence", NS_CLIENT).with("from", ALICE).with("to", "bob@b.example").child(x[0].clone());
    let bob = net.idx(BOB);
    net.call(bob, |e, cx| e.receive_presence(cx, &presence));
    assert!(net.errors_of(BOB).is_empty(), "{:?}", net.errors);
    net.send(BOB, ALICE, "for the presence key");
    let s = net.last_wire();
    assert_eq!(net.shown(ALICE).last().unwrap().0, "for the presence key");
    assert_eq!(impostor.receive(&mut cx(&mut rng), &s).unwrap_err().code(), "undecryptable");
}

/// A pubsub event carrying `owner`'s metadata list `fprs`.
fn metadata_event(owner: &str, fprs: &[String]) -> Element {
    let mut list = el("public-keys-list", ox::NS);
    for f in fprs {
        list.append_child(
            el("pubkey-metadata", ox::NS)
                .with("v4-fingerprint", f.clone())
                .with("date", "2026-01-01T02:00:00Z"),
        );
    }
    el("message", NS_CLIENT).with("from", owner).child(
        el("event", NS_PUBSUB_EVENT).child(
            el("items", NS_PUBSUB_EVENT)
                .with("node", ox::NODE_PUBLIC_KEYS)
                .child(el("item", NS_PUBSUB_EVENT).with("id", "current").child(list)),
        ),
    )
}

/// Net with Alice and Bob, where Alice knows Bob's first key, and Bob then adds a second
/// device (its data node published); returns both Bob fingerprints.
fn bob_adds_a_device(policy: TrustPolicy) -> (Net, String, String) {
    let mut net = Net::new(Protocol::of(&OX), &[ALICE, BOB], policy);
    net.send(ALICE, BOB, "first");
    let k1 = net.oob(BOB).peer_says[0].clone();
    let tablet: FullJid = "bob@b.example/tablet".parse().unwrap();
    net.devices.push((tablet, make(Protocol::of(&OX), "bob@b.example/tablet", 500, policy)));
    let i = net.devices.len() - 1;
    net.call(i, |e, cx| e.publish(cx));
    let k2 = net.devices[i].1.out_of_band().peer_says[0].clone();
    (net, k1, k2)
}

#[test]
fn ox_verification_compares_only_announced_keys() {
    let (mut net, k1, k2) = bob_adds_a_device(TrustPolicy::Btbv);
    // Bob's list now names both; Alice reads both. Then K1 is rotated away.
    net.deliver(ALICE, metadata_event("bob@b.example", &[k1.clone(), k2.clone()]));
    net.deliver(ALICE, metadata_event("bob@b.example", std::slice::from_ref(&k2)));
    // Bob shows his current key: a match, although Alice still holds the old one.
    net.verify(ALICE, BOB, &OutOfBand { peer_says: vec![k2] });
    assert!(
        net.events
            .iter()
            .any(|(i, e)| *i == 0
                && matches!(e, Event::Verification { result: VerificationResult::Match, .. })),
        "{:?}",
        net.alerts(ALICE)
    );
}

#[test]
fn tofu_pins_the_first_key_set() {
    let (mut net, k1, k2) = bob_adds_a_device(TrustPolicy::Tofu);
    net.deliver(ALICE, metadata_event("bob@b.example", &[k1.clone(), k2.clone()]));
    assert!(net.alerts(ALICE).contains(&"new-key-untrusted"), "{:?}", net.alerts(ALICE));
    let trust_of = |net: &Net, fpr: &str| {
        net.events
            .iter()
            .filter(|(i, _)| *i == 0)
            .filter_map(|(_, e)| match e {
                Event::TrustChanged { fingerprint, trust, .. } if fingerprint == fpr => Some(*trust),
                _ => None,
            })
            .next_back()
    };
    assert_eq!(trust_of(&net, &k1), Some(Trust::Unverified));
    assert_eq!(trust_of(&net, &k2), Some(Trust::Untrusted));
    // Verifying the new key trusts it.
    net.verify(ALICE, BOB, &OutOfBand { peer_says: vec![k1, k2.clone()] });
    assert_eq!(trust_of(&net, &k2), Some(Trust::Verified));
}
