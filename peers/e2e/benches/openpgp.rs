//! Per-message cost of the `pgp` (XEP-0027) and `ox` (XEP-0373/0374) engines, next to the
//! raw rPGP work on the same payload, measured in the same run. A plain binary
//! (`harness = false`, like the other engine benches), not a timed test:
//!
//! ```text
//! cargo bench -p jabberwock-e2e --bench openpgp            # 300 messages
//! cargo bench -p jabberwock-e2e --bench openpgp -- --quick # a smoke run
//! ```
//!
//! Steady state: keys are discovered first (not measured); Alice then sends to Bob, who reads.
//! Both engines encrypt to two keys (Bob's, and Alice's own so her other devices can read).
//! - `pgp`: the raw line is rPGP encrypting the body to the same two Curve25519 subkeys
//!   (SEIPD v1, AES-256), ASCII armour, and Bob's decryption. The engine adds the XEP-0027
//!   stanza, header stripping and parsing.
//! - `ox`: the raw line is rPGP signing (Ed25519) and encrypting a `<signcrypt/>` of the same
//!   size to the two subkeys, Bob's decryption and signature verification. The engine adds the
//!   XML (`<signcrypt/>`, rpad), base64 and the XEP-0373 §3.1 checks.

// The benchmark measures wall time: the one place `Instant::now` is allowed (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::rng06::Rng06;
use common::{ALICE, BOB, BODY, header, quick, row_with};
use jabberwock_e2e::openpgp::keys::armor_body;
use jabberwock_e2e::openpgp::{Ox, Pgp};
use jabberwock_e2e::xml::{ElementExt, NS_CLIENT, NS_PUBSUB, el};
use jabberwock_e2e::{Action, BareJid, Cx, Element, Engine, EngineConfig, Event, FullJid};
use pgp::composed::{Deserializable, Message, MessageBuilder, SignedPublicKey, SignedSecretKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::Password;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

// An hour after the other benches' clock.
const NOW: Duration = common::NOW.saturating_add(Duration::from_secs(3600));

/// Two engines and a PEP service: fetches are answered from what they published.
struct Pair {
    alice: Box<dyn Engine>,
    bob: Box<dyn Engine>,
    pep: Vec<(BareJid, String, String, Element)>,
    rng: ChaCha20Rng,
    shown: usize,
}

impl Pair {
    fn new(make: fn(&str, &mut ChaCha20Rng) -> Box<dyn Engine>) -> Pair {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let alice = make(ALICE, &mut rng);
        let bob = make(BOB, &mut rng);
        let mut p = Pair { alice, bob, pep: vec![], rng, shown: 0 };
        for a in [true, false] {
            let mut rng = p.rng.clone();
            let out = p.engine(a).publish(&mut Cx { rng: &mut rng, now: NOW }).unwrap();
            p.run(a, out.actions);
        }
        p
    }

    fn engine(&mut self, alice: bool) -> &mut dyn Engine {
        if alice { self.alice.as_mut() } else { self.bob.as_mut() }
    }

    fn jid(alice: bool) -> &'static str {
        if alice { ALICE } else { BOB }
    }

    fn run(&mut self, by_alice: bool, actions: Vec<Action>) {
        let mut queue: Vec<(bool, Action)> = actions.into_iter().map(|a| (by_alice, a)).collect();
        while let Some((who, action)) = queue.pop() {
            let me: FullJid = Pair::jid(who).parse().unwrap();
            let out = match action {
                Action::Publish { node, id, item, .. } => {
                    self.pep.retain(|(o, n, i, _)| !(*o == me.to_bare() && *n == node && *i == id));
                    self.pep.push((me.to_bare(), node, id, item));
                    continue;
                }
                Action::Fetch { owner, node } => {
                    let items: Vec<_> =
                        self.pep.iter().filter(|(o, n, _, _)| *o == owner && *n == node).cloned().collect();
                    let mut rng = self.rng.clone();
                    let cx = &mut Cx { rng: &mut rng, now: NOW };
                    let out = if items.is_empty() {
                        self.engine(who).fetch_failed(cx, &owner, &node, "item-not-found").unwrap()
                    } else {
                        let mut list = el("items", NS_PUBSUB).with("node", node);
                        for (_, _, id, item) in items {
                            list.append_child(el("item", NS_PUBSUB).with("id", id).child(item));
                        }
                        let iq = el("iq", NS_CLIENT)
                            .with("type", "result")
                            .with("from", owner.to_string())
                            .child(el("pubsub", NS_PUBSUB).child(list));
                        self.engine(who).receive(cx, &iq).unwrap()
                    };
                    self.rng = rng;
                    out
                }
                Action::Send(mut s) => {
                    s.set("from", me.to_string());
                    let mut rng = self.rng.clone();
                    let out = self.engine(!who).receive(&mut Cx { rng: &mut rng, now: NOW }, &s).unwrap();
                    self.rng = rng;
                    self.shown += out.events.iter().filter(|e| matches!(e, Event::Plaintext { .. })).count();
                    queue.extend(out.actions.into_iter().map(|a| (!who, a)));
                    continue;
                }
            };
            self.shown += out.events.iter().filter(|e| matches!(e, Event::Plaintext { .. })).count();
            queue.extend(out.actions.into_iter().map(|a| (who, a)));
        }
    }

    fn send(&mut self, body: &str) {
        let to: BareJid = "bob@b.example".parse().unwrap();
        let mut rng = self.rng.clone();
        let out = self.alice.send(&mut Cx { rng: &mut rng, now: NOW }, &to, body).unwrap();
        self.rng = rng;
        self.run(true, out.actions);
    }
}

fn pgp_engine(jid: &str, rng: &mut ChaCha20Rng) -> Box<dyn Engine> {
    Box::new(Pgp::new(jid.parse().unwrap(), rng, &EngineConfig::default()))
}

fn ox_engine(jid: &str, rng: &mut ChaCha20Rng) -> Box<dyn Engine> {
    Box::new(Ox::new(jid.parse().unwrap(), rng, &EngineConfig::default()))
}

fn row(what: &str, n: u32, engine: Duration, raw: Duration) {
    row_with(what, n, engine, raw, 2);
}

/// Alice sends `n` messages to Bob with the engines `make` builds (keys discovered and one
/// message sent first, not measured); the time they took.
fn engine_time(make: fn(&str, &mut ChaCha20Rng) -> Box<dyn Engine>, n: u32) -> Duration {
    let mut p = Pair::new(make);
    p.send("warm-up");
    p.shown = 0;
    let t = Instant::now();
    for _ in 0..n {
        p.send(BODY);
    }
    let engine = t.elapsed();
    assert_eq!(p.shown, n as usize);
    engine
}

/// The same key material the engines make, as rPGP objects.
fn raw_keys() -> (SignedSecretKey, SignedPublicKey, SignedSecretKey, SignedPublicKey) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let alice = Pgp::new(ALICE.parse().unwrap(), &mut rng, &EngineConfig::default());
    let bob = Pgp::new(BOB.parse().unwrap(), &mut rng, &EngineConfig::default());
    let sec =
        |e: &Pgp| SignedSecretKey::from_armor_single(e.key().secret_armored().unwrap().as_bytes()).unwrap().0;
    let (a, b) = (sec(&alice), sec(&bob));
    let (ap, bp) = (a.to_public_key(), b.to_public_key());
    (a, ap, b, bp)
}

/// rPGP's own message of `data` (SEIPD v1, AES-256) to `to`'s encryption subkeys, signed by
/// `signer` when given: the raw work of one engine message.
fn raw_message(
    rng06: &mut Rng06<'_>,
    data: Vec<u8>,
    to: [&SignedPublicKey; 2],
    signer: Option<&SignedSecretKey>,
) -> Vec<u8> {
    let mut b = MessageBuilder::from_bytes("", data).seipd_v1(&mut *rng06, SymmetricKeyAlgorithm::AES256);
    for key in to {
        b.encrypt_to_key(&mut *rng06, &key.public_subkeys[0]).unwrap();
    }
    if let Some(signer) = signer {
        b.sign(&signer.primary_key, Password::empty(), HashAlgorithm::Sha256);
    }
    b.to_vec(&mut *rng06).unwrap()
}

fn main() {
    let n: u32 = if quick() { 20 } else { 300 };
    header(&["what", "messages", "engine (send + receive)", "raw rPGP", "engine / raw"]);
    let (alice_sec, alice_pub, bob_sec, bob_pub) = raw_keys();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let mut rng06 = Rng06(&mut rng);

    // ---- pgp ----
    let engine = engine_time(pgp_engine, n);
    let t = Instant::now();
    for _ in 0..n {
        let bytes = raw_message(&mut rng06, BODY.as_bytes().to_vec(), [&bob_pub, &alice_pub], None);
        black_box(armor_body(&bytes));
        let mut m = Message::from_bytes(&bytes[..]).unwrap().decrypt(&Password::empty(), &bob_sec).unwrap();
        black_box(m.as_data_vec().unwrap());
    }
    row("pgp message (XEP-0027, encrypt only)", n, engine, t.elapsed());

    // ---- ox ----
    let engine = engine_time(ox_engine, n);
    // A <signcrypt/> of typical size (rpad averages 100 characters).
    let signcrypt = format!(
        "<signcrypt xmlns='urn:xmpp:openpgp:0'><to jid='bob@b.example'/><time stamp='2026-01-01T01:00:00.000Z'/><rpad>{}</rpad><payload><body xmlns='jabber:client'>{BODY}</body></payload></signcrypt>",
        "x".repeat(100)
    );
    let t = Instant::now();
    for _ in 0..n {
        let data = signcrypt.clone().into_bytes();
        let bytes = raw_message(&mut rng06, data, [&bob_pub, &alice_pub], Some(&alice_sec));
        let mut m = Message::from_bytes(&bytes[..]).unwrap().decrypt(&Password::empty(), &bob_sec).unwrap();
        black_box(m.as_data_vec().unwrap());
        m.verify(&alice_pub.primary_key).unwrap();
    }
    row("ox message (XEP-0374 signcrypt, sign + encrypt)", n, engine, t.elapsed());
}
