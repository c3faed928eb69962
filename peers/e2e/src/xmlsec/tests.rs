#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::OnceLock;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::enc::{self, Cipher, Recipient};
use super::keys::{KeyPair, b64, unb64};
use super::*;
use crate::{TrustPolicy, VerificationResult};
use crate::time::EPOCH;
use crate::testing::{alerts_of, damaged_codes, flip_base64, random_element, set_text};
use crate::xml::{NS_PUBSUB, NS_PUBSUB_EVENT};

const NOW: Duration = EPOCH;
const ALICE: &str = "alice@a.example/phone";
const ALICE2: &str = "alice@a.example/laptop";
const BOB: &str = "bob@b.example/laptop";
const MALLORY: &str = "mallory@m.example/evil";

/// RSA-2048 generation is slow in debug builds: the tests share a few keys, made once.
fn key(i: usize) -> KeyPair {
    static KEYS: OnceLock<Vec<KeyPair>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..5u64).map(|s| KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(1000 + s)).unwrap()).collect()
    })[i]
        .clone()
}

fn jid(s: &str) -> FullJid {
    s.parse().unwrap()
}

fn bare(s: &str) -> BareJid {
    s.parse::<FullJid>().unwrap().to_bare()
}

/// Rewrites a stanza in flight; `false` drops it.
type Tamper = Box<dyn FnMut(&mut Element) -> bool>;

/// Devices, a PEP service, and the wire between them.
struct Net {
    devices: BTreeMap<String, Xmlsec>,
    pep: BTreeMap<BareJid, BTreeMap<String, Element>>,
    rng: ChaCha20Rng,
    now: Duration,
    /// (sender, stanza) of every message sent.
    wire: Vec<(String, Element)>,
    shown: Vec<(String, Jid, String, Trust)>,
    events: Vec<(String, Event)>,
    errors: Vec<(String, &'static str)>,
    /// A stanza-layer attacker: may rewrite or drop each message in flight.
    tamper: Option<Tamper>,
}

impl Net {
    fn new(devices: &[(&str, usize)], policy: TrustPolicy, cipher: Cipher) -> Net {
        let config = EngineConfig::with_trust(policy);
        let mut net = Net {
            devices: devices
                .iter()
                .map(|(j, k)| {
                    ((*j).to_owned(), Xmlsec::with_key(jid(j), key(*k), &config).with_cipher(cipher))
                })
                .collect(),
            pep: BTreeMap::new(),
            rng: ChaCha20Rng::seed_from_u64(7),
            now: NOW,
            wire: vec![],
            shown: vec![],
            events: vec![],
            errors: vec![],
            tamper: None,
        };
        for (j, _) in devices {
            let mut rng = net.rng.clone();
            let out =
                net.devices.get_mut(*j).unwrap().publish(&mut Cx { rng: &mut rng, now: net.now }).unwrap();
            net.rng = rng;
            net.process(j, out);
        }
        net
    }

    fn items(&self, owner: &BareJid) -> Element {
        let mut items = el("items", NS_PUBSUB).with("node", NODE_KEYS);
        for (id, payload) in self.pep.get(owner).into_iter().flatten() {
            items.append_child(el("item", NS_PUBSUB).with("id", id.clone()).child(payload.clone()));
        }
        el("iq", NS_CLIENT)
            .with("type", "result")
            .with("from", owner.to_string())
            .child(el("pubsub", NS_PUBSUB).child(items))
    }

    fn deliver(&mut self, to: &str, stanza: &Element) -> Output {
        let mut rng = self.rng.clone();
        let now = self.now;
        let device = self.devices.get_mut(to).unwrap();
        let result = if stanza.name() == "presence" {
            device.receive_presence(&mut Cx { rng: &mut rng, now }, stanza)
        } else {
            device.receive(&mut Cx { rng: &mut rng, now }, stanza)
        };
        // As the client does: what is left (an iq's error answer) after every call.
        let left = device.drain(&mut Cx { rng: &mut rng, now });
        self.rng = rng;
        let mut out = match result {
            Ok(out) => out,
            Err(e) => {
                self.errors.push((to.to_owned(), e.code()));
                Output::default()
            }
        };
        out.actions.extend(left.actions);
        out
    }

    fn process(&mut self, who: &str, out: Output) {
        let mut queue: VecDeque<(String, Output)> = VecDeque::from([(who.to_owned(), out)]);
        while let Some((who, out)) = queue.pop_front() {
            for e in out.events {
                if let Event::Plaintext { from, body, trust, .. } = &e {
                    self.shown.push((who.clone(), from.clone(), body.clone(), *trust));
                }
                // A held stanza refused later is an error, as a client records it.
                if let Event::Rejected { error, .. } = &e {
                    self.errors.push((who.clone(), error.code()));
                }
                self.events.push((who.clone(), e));
            }
            for action in out.actions {
                match action {
                    Action::Publish { node, id, item, .. } => {
                        assert_eq!(node, NODE_KEYS);
                        self.pep.entry(bare(&who)).or_default().insert(id.clone(), item.clone());
                        // XEP-0163 §4.3.2: the account's own devices are notified.
                        let event = el("message", NS_CLIENT).with("from", bare(&who).to_string()).child(
                            el("event", NS_PUBSUB_EVENT).child(
                                el("items", NS_PUBSUB_EVENT)
                                    .with("node", NODE_KEYS)
                                    .child(el("item", NS_PUBSUB_EVENT).with("id", id).child(item)),
                            ),
                        );
                        let others: Vec<String> = self
                            .devices
                            .keys()
                            .filter(|d| bare(d) == bare(&who) && **d != who)
                            .cloned()
                            .collect();
                        for d in others {
                            let out = self.deliver(&d, &event);
                            queue.push_back((d, out));
                        }
                    }
                    Action::Fetch { owner, node } => {
                        assert_eq!(node, NODE_KEYS);
                        let result = if self.pep.contains_key(&owner) {
                            let iq = self.items(&owner);
                            self.deliver(&who, &iq)
                        } else {
                            let mut rng = self.rng.clone();
                            let o = self
                                .devices
                                .get_mut(&who)
                                .unwrap()
                                .fetch_failed(
                                    &mut Cx { rng: &mut rng, now: self.now },
                                    &owner,
                                    &node,
                                    "item-not-found",
                                )
                                .unwrap();
                            self.rng = rng;
                            o
                        };
                        queue.push_back((who.clone(), result));
                    }
                    Action::Send(mut stanza) => {
                        stanza.set("from", who.clone());
                        self.wire.push((who.clone(), stanza.clone()));
                        if let Some(t) = self.tamper.as_mut()
                            && !t(&mut stanza)
                        {
                            continue;
                        }
                        let to: BareJid = stanza.attr("to").unwrap().parse::<Jid>().unwrap().to_bare();
                        let sender = bare(&who);
                        // The account's devices, and (as carbons) the sender's other devices.
                        let targets: Vec<String> = self
                            .devices
                            .keys()
                            .filter(|d| bare(d) == to || (bare(d) == sender && **d != who))
                            .cloned()
                            .collect();
                        for t in targets {
                            let out = self.deliver(&t, &stanza);
                            queue.push_back((t, out));
                        }
                    }
                }
            }
        }
    }

    fn send(&mut self, from: &str, to: &str, body: &str) {
        let mut rng = self.rng.clone();
        let out = self
            .devices
            .get_mut(from)
            .unwrap()
            .send(&mut Cx { rng: &mut rng, now: self.now }, &bare(to), body)
            .unwrap();
        self.rng = rng;
        self.process(from, out);
    }

    fn shown_by(&self, who: &str) -> Vec<String> {
        self.shown.iter().filter(|(w, ..)| w == who).map(|(_, _, b, _)| b.clone()).collect()
    }

    fn alerts(&self, who: &str) -> Vec<&'static str> {
        alerts_of(&self.events, who)
    }

    fn errors_of(&self, who: &str) -> Vec<&'static str> {
        self.errors.iter().filter(|(w, _)| w == who).map(|(_, c)| *c).collect()
    }

    fn verify(&mut self, who: &str, peer: &str, says: Vec<String>) -> Output {
        let mut rng = self.rng.clone();
        let out = self
            .devices
            .get_mut(who)
            .unwrap()
            .verify(&mut Cx { rng: &mut rng, now: self.now }, &bare(peer), &OutOfBand { peer_says: says })
            .unwrap();
        self.rng = rng;
        out
    }

    fn last_message(&self, from: &str) -> Element {
        self.wire.iter().rev().find(|(w, _)| w == from).unwrap().1.clone()
    }
}

fn pair(cipher: Cipher) -> Net {
    Net::new(&[(ALICE, 0), (BOB, 1)], TrustPolicy::Btbv, cipher)
}

#[test]
fn constructor_is_deterministic_and_publishes_its_key() {
    let config = EngineConfig::default();
    let a = Xmlsec::new(jid(ALICE), &mut ChaCha20Rng::seed_from_u64(3), &config);
    let b = Xmlsec::new(jid(ALICE), &mut ChaCha20Rng::seed_from_u64(3), &config);
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.fingerprint().len(), 64);
    assert_eq!(a.protocol(), Protocol::of(&PROTOCOL));
    assert_eq!(a.cipher(), Cipher::Aes128Gcm);
    assert_eq!(a.clone().with_cipher(Cipher::Aes128Cbc).cipher(), Cipher::Aes128Cbc);
    let mut a = a;
    let out = a.publish(&mut Cx { rng: &mut ChaCha20Rng::seed_from_u64(1), now: NOW }).unwrap();
    let Action::Publish { node, id, item, .. } = &out.actions[0] else { panic!() };
    assert_eq!(node, NODE_KEYS);
    assert_eq!(id, a.fingerprint());
    assert_eq!(PublicKey::from_key_info(item).unwrap().fingerprint, a.fingerprint());
    assert!(matches!(&out.actions[1], Action::Fetch { node, .. } if node == NODE_KEYS));
    assert_eq!(a.out_of_band().peer_says, vec![a.fingerprint().to_owned()]);
}

#[test]
fn round_trip_both_ciphers_both_ways() {
    for cipher in [Cipher::Aes128Gcm, Cipher::Aes128Cbc] {
        let mut net = pair(cipher);
        net.send(ALICE, BOB, "hello <bob> & 'co'");
        net.send(BOB, ALICE, "hi alice");
        net.send(ALICE, BOB, "third");
        assert_eq!(net.shown_by(BOB), vec!["hello <bob> & 'co'", "third"], "{cipher:?}");
        assert_eq!(net.shown_by(ALICE), vec!["hi alice"]);
        assert!(net.errors.is_empty(), "{:?}", net.errors);
        assert!(net.shown.iter().all(|(_, _, _, t)| *t == Trust::Unverified));
        let m = net.last_message(ALICE);
        let data = m.get_child("EncryptedData", NS_XENC).unwrap();
        assert_eq!(
            data.get_child("EncryptionMethod", NS_XENC).unwrap().attr("Algorithm"),
            Some(cipher.uri())
        );
        assert_eq!(m.get_child("body", NS_CLIENT).unwrap().text(), FALLBACK);
        assert!(!String::from(&m).contains("third"), "the body is not in clear");
        // The first message waited for Bob's keys; both saw the other's key once.
        let trust_events = net.events.iter().filter(|(_, e)| matches!(e, Event::TrustChanged { .. })).count();
        assert_eq!(trust_events, 2);
    }
}

#[test]
fn own_devices_get_a_copy_and_a_new_device_is_fetched() {
    let mut net = Net::new(&[(ALICE, 0), (ALICE2, 2), (BOB, 1)], TrustPolicy::Btbv, Cipher::Aes128Gcm);
    net.send(ALICE, BOB, "to bob, copied to laptop");
    assert_eq!(net.shown_by(BOB), vec!["to bob, copied to laptop"]);
    assert_eq!(net.shown_by(ALICE2), vec!["to bob, copied to laptop"]);
    let m = net.last_message(ALICE);
    assert_eq!(
        m.get_child("EncryptedData", NS_XENC)
            .unwrap()
            .get_child("KeyInfo", NS_DS)
            .unwrap()
            .children()
            .count(),
        2
    );
    // Bob answers to both of Alice's devices.
    net.send(BOB, ALICE, "both");
    assert_eq!(net.shown_by(ALICE), vec!["both"]);
    assert_eq!(net.shown_by(ALICE2), vec!["to bob, copied to laptop", "both"]);
    assert!(net.errors.is_empty(), "{:?}", net.errors);
}

#[test]
fn unknown_signer_key_is_fetched_then_verified() {
    let mut net = pair(Cipher::Aes128Gcm);
    net.send(ALICE, BOB, "one");
    // Alice's new device appears after Bob fetched her keys: Bob fetches again on receipt.
    let config = EngineConfig::default();
    net.devices.insert(ALICE2.into(), Xmlsec::with_key(jid(ALICE2), key(2), &config));
    let mut rng = net.rng.clone();
    let out = net.devices.get_mut(ALICE2).unwrap().publish(&mut Cx { rng: &mut rng, now: NOW }).unwrap();
    net.process(ALICE2, out);
    net.send(ALICE2, BOB, "from the laptop");
    assert_eq!(net.shown_by(BOB), vec!["one", "from the laptop"]);
    assert!(net.errors.is_empty(), "{:?}", net.errors);
}

#[test]
fn tampering_is_rejected_under_both_ciphers() {
    for cipher in [Cipher::Aes128Gcm, Cipher::Aes128Cbc] {
        let mut net = pair(cipher);
        net.send(ALICE, BOB, "warm up");
        // Flip one bit of the content ciphertext's first block (the IV under CBC).
        net.tamper = Some(Box::new(|m: &mut Element| {
            let data = m.get_child_mut("EncryptedData", NS_XENC).unwrap();
            let value = data
                .get_child_mut("CipherData", NS_XENC)
                .unwrap()
                .get_child_mut("CipherValue", NS_XENC)
                .unwrap();
            let mut bytes = unb64("x", &value.text()).unwrap();
            bytes[20] ^= 0x01;
            let _ = value.take_nodes();
            value.append_text(b64(&bytes));
            true
        }));
        net.send(ALICE, BOB, "tampered");
        assert_eq!(net.shown_by(BOB), vec!["warm up"]);
        let errors = net.errors_of(BOB);
        match cipher {
            Cipher::Aes128Gcm => assert_eq!(errors, vec!["bad-mac"]),
            // CBC decrypts garbage in one block and flips a bit in the next: the parser or
            // the signature catches it.
            Cipher::Aes128Cbc => {
                assert!(
                    matches!(errors.as_slice(), ["malformed" | "bad-digest" | "bad-signature"]),
                    "{errors:?}"
                )
            }
        }
    }
}

/// The CBC malleability attack: flip IV bits so the first plaintext block changes in a
/// chosen way (`<signed xmlns="u` → a different, still well-formed prefix). The signature
/// over the payload catches it.
#[test]
fn cbc_bit_flipping_is_caught_by_the_signature() {
    let mut net = pair(Cipher::Aes128Cbc);
    net.send(ALICE, BOB, "warm up");
    net.tamper = Some(Box::new(|m: &mut Element| {
        let value = m
            .get_child_mut("EncryptedData", NS_XENC)
            .unwrap()
            .get_child_mut("CipherData", NS_XENC)
            .unwrap()
            .get_child_mut("CipherValue", NS_XENC)
            .unwrap();
        let mut bytes = unb64("x", &value.text()).unwrap();
        // Plaintext starts `<signed xmlns="urn:xmpp:...` or `<signed Id=`; rename the element
        // by XOR: `signed` → `sighed` keeps the XML well-formed only if the end tag changes too,
        // so instead turn the Id's first letter `m` into `n` wherever it sits in block 0.
        let known = b"<signed xmlns=\"u";
        let wanted = b"<signed xmlns=\"U";
        for i in 0..16 {
            bytes[i] ^= known[i] ^ wanted[i];
        }
        let _ = value.take_nodes();
        value.append_text(b64(&bytes));
        true
    }));
    net.send(ALICE, BOB, "flipped");
    assert_eq!(net.shown_by(BOB), vec!["warm up"]);
    // The namespace changed: the decrypted element is no longer our payload.
    assert_eq!(net.errors_of(BOB), vec!["not-signed-payload"]);
}

#[test]
fn wrong_key_and_impostor_are_rejected() {
    let mut net = Net::new(&[(ALICE, 0), (BOB, 1), (MALLORY, 3)], TrustPolicy::Btbv, Cipher::Aes128Gcm);
    net.send(ALICE, BOB, "hello");
    // Mallory re-sends Alice's stanza as her own: the signed <from/> and key are Alice's.
    let (_, mut stanza) = net.wire.last().cloned().unwrap();
    stanza.set("from", MALLORY);
    let out = net.deliver(BOB, &stanza);
    net.process(BOB, out);
    // Bob fetches Mallory's keys to find the signer, then refuses the held message.
    assert_eq!(net.errors_of(BOB), ["unknown-signer"], "{:?}", net.events);
    assert!(!net.alerts(BOB).contains(&"unknown-signer"), "{:?}", net.events);
    // A message for Bob that Mallory decrypts with her own key: not for her device.
    let out = net.deliver(MALLORY, &stanza);
    assert!(out.events.iter().any(|e| matches!(e, Event::Alert { reason: "not-for-this-device", .. })));
    assert!(net.shown_by(MALLORY).is_empty());
}

#[test]
fn surreptitious_forwarding_is_rejected() {
    // Bob decrypts Alice's signed payload and re-encrypts it to Carol as if Alice wrote to her.
    let carol = "carol@c.example/pc";
    let mut net = Net::new(&[(ALICE, 0), (BOB, 1), (carol, 2)], TrustPolicy::Btbv, Cipher::Aes128Gcm);
    net.send(ALICE, BOB, "for bob only");
    net.send(ALICE, carol, "hi carol");
    let (_, stanza) = net.wire.iter().find(|(w, _)| w == ALICE).cloned().unwrap();
    let data = stanza.get_child("EncryptedData", NS_XENC).unwrap();
    let plain = enc::open(data, &key(1), Accept::Any, &mut net.rng).unwrap().unwrap();
    let carol_key = key(2).public;
    let resealed = enc::seal(
        &plain,
        Cipher::Aes128Gcm,
        &[Recipient { jid: "carol@c.example", key: &carol_key }],
        &mut net.rng,
    )
    .unwrap();
    let forwarded = el("message", NS_CLIENT)
        .with("from", ALICE)
        .with("to", "carol@c.example")
        .with("type", "chat")
        .child(resealed);
    let out = net.deliver(carol, &forwarded);
    net.process(carol, out);
    assert_eq!(net.errors_of(carol), vec!["to-mismatch"]);
    assert_eq!(net.shown_by(carol), vec!["hi carol"]);
}

#[test]
fn replay_and_stale_messages_are_rejected() {
    let mut net = pair(Cipher::Aes128Gcm);
    net.send(ALICE, BOB, "once");
    let (_, stanza) = net.wire.last().cloned().unwrap();
    net.deliver(BOB, &stanza);
    assert_eq!(net.errors_of(BOB), vec!["replay"]);
    net.send(ALICE, BOB, "late");
    let (_, late) = net.wire.last().cloned().unwrap();
    net.now += Duration::from_secs(MAX_AGE_SECS + 1);
    net.deliver(BOB, &late);
    // Seen already, and too old anyway: the age check comes first.
    assert_eq!(net.errors_of(BOB), vec!["replay", "message-too-old"]);
    net.now = NOW - Duration::from_secs(MAX_FUTURE_SECS + 10);
    net.send(BOB, ALICE, "x");
    net.now = NOW;
    let mut rng = net.rng.clone();
    let mut bob = net.devices[BOB].clone();
    let out = bob
        .send(
            &mut Cx { rng: &mut rng, now: NOW + Duration::from_secs(MAX_FUTURE_SECS + 60) },
            &bare(ALICE),
            "from the future",
        )
        .unwrap();
    let Action::Send(mut m) = out.actions[0].clone() else { panic!() };
    m.set("from", BOB);
    net.deliver(ALICE, &m);
    assert_eq!(net.errors_of(ALICE), vec!["message-from-future"]);
}

#[test]
fn stolen_keys_read_old_traffic() {
    let mut net = pair(Cipher::Aes128Cbc);
    net.send(ALICE, BOB, "secret one");
    net.send(ALICE, BOB, "secret two");
    let recorded: Vec<Element> =
        net.wire.iter().filter(|(w, _)| w == ALICE).map(|(_, s)| s.clone()).collect();
    for theft in [Theft::LongTermKeys, Theft::FullState] {
        let mut thief = net.devices[BOB].steal(theft);
        let mut rng = ChaCha20Rng::seed_from_u64(99);
        let mut read = vec![];
        for s in &recorded {
            // A month later: no freshness or replay policy stops the attacker.
            let out = thief
                .receive(&mut Cx { rng: &mut rng, now: NOW + Duration::from_secs(30 * 86_400) }, s)
                .unwrap();
            for e in out.events {
                if let Event::Plaintext { body, .. } = e {
                    read.push(body);
                }
            }
        }
        assert_eq!(read, vec!["secret one", "secret two"], "{theft:?}");
    }
    // The honest device refuses the same stanzas again (replays).
    net.deliver(BOB, &recorded[0]);
    assert_eq!(net.errors_of(BOB), vec!["replay"]);
    let mut alice = net.devices[ALICE].clone();
    assert_eq!(
        alice.forge(&mut Cx { rng: &mut net.rng, now: NOW }, &Jid::from(jid(BOB)), "x").unwrap(),
        None
    );
}

#[test]
fn verification_and_trust_policies() {
    let mut net = pair(Cipher::Aes128Gcm);
    net.send(ALICE, BOB, "hello");
    let bob_fpr = net.devices[BOB].fingerprint().to_owned();
    let out = net.verify(ALICE, BOB, vec![bob_fpr.clone()]);
    assert!(out.events.contains(&Event::Verification { peer: bare(BOB), result: VerificationResult::Match }));
    assert!(out.events.iter().any(|e| matches!(e, Event::TrustChanged { trust: Trust::Verified, .. })));
    net.send(BOB, ALICE, "now verified");
    assert_eq!(net.shown.last().unwrap().3, Trust::Verified);
    // A wrong fingerprint out of band: mismatch, untrusted, and no longer encrypted to.
    let out = net.verify(ALICE, BOB, vec!["00".repeat(32)]);
    assert!(
        out.events.contains(&Event::Verification { peer: bare(BOB), result: VerificationResult::Mismatch })
    );
    assert!(out.events.iter().any(|e| matches!(e, Event::Alert { reason: "fingerprint-mismatch", .. })));
    net.send(ALICE, BOB, "not sent");
    assert!(net.alerts(ALICE).contains(&"not-sent"));
    net.send(BOB, ALICE, "shown, flagged");
    assert_eq!(net.shown.last().unwrap().3, Trust::Untrusted);
    assert!(net.alerts(ALICE).contains(&"untrusted-key"));
    // Nothing known: nothing to verify.
    let out = net.verify(ALICE, "nobody@x.example/r", vec![]);
    assert!(out.events.contains(&Event::Verification {
        peer: bare("nobody@x.example/r"),
        result: VerificationResult::NothingToCompare
    }));

    // Manual: nothing trusted before verification.
    let mut net = Net::new(&[(ALICE, 0), (BOB, 1)], TrustPolicy::Manual, Cipher::Aes128Gcm);
    net.send(ALICE, BOB, "refused");
    assert!(net.alerts(ALICE).contains(&"not-sent"));
    let bob_fpr = net.devices[BOB].fingerprint().to_owned();
    net.verify(ALICE, BOB, vec![bob_fpr]);
    net.send(ALICE, BOB, "after verification");
    assert_eq!(net.shown_by(BOB), vec!["after verification"]);
    // Bob (manual, Alice unverified) shows it as untrusted.
    assert_eq!(net.shown.last().unwrap().3, Trust::Untrusted);
}

#[test]
fn btbv_distrusts_new_keys_after_verification_and_key_substitution_is_caught() {
    let mut net = pair(Cipher::Aes128Gcm);
    net.send(ALICE, BOB, "hello");
    let bob_fpr = net.devices[BOB].fingerprint().to_owned();
    net.verify(ALICE, BOB, vec![bob_fpr]);
    // The server substitutes Bob's key item with Mallory's key.
    let mallory = key(3).public;
    net.pep.insert(bare(BOB), BTreeMap::from([(mallory.fingerprint.clone(), mallory.key_info())]));
    let iq = net.items(&bare(BOB));
    let out = net.deliver(ALICE, &iq);
    assert!(out.events.iter().any(|e| matches!(e, Event::TrustChanged { trust: Trust::Untrusted, .. })));
    net.process(ALICE, out);
    net.send(ALICE, BOB, "not to mallory");
    assert!(net.alerts(ALICE).contains(&"not-sent"));
    // Under TOFU the substituted key would be trusted; verification then shows the mismatch.
    let mut net = Net::new(&[(ALICE, 0), (BOB, 1)], TrustPolicy::Tofu, Cipher::Aes128Gcm);
    net.pep.insert(bare(BOB), BTreeMap::from([(mallory.fingerprint.clone(), mallory.key_info())]));
    net.send(ALICE, BOB, "to mallory");
    assert!(net.errors_of(BOB).is_empty() && net.shown_by(BOB).is_empty());
    assert!(net.alerts(BOB).contains(&"not-for-this-device"));
    let bob_fpr = net.devices[BOB].fingerprint().to_owned();
    let out = net.verify(ALICE, BOB, vec![bob_fpr]);
    assert!(
        out.events.contains(&Event::Verification { peer: bare(BOB), result: VerificationResult::Mismatch })
    );
}

#[test]
fn bad_key_items_are_ignored() {
    let mut net = pair(Cipher::Aes128Gcm);
    let k = key(1).public;
    net.pep.insert(bare(BOB), BTreeMap::from([("not-the-fingerprint".to_owned(), k.key_info())]));
    net.send(ALICE, BOB, "x");
    assert!(net.alerts(ALICE).contains(&"bad-key-item"));
    assert!(net.alerts(ALICE).contains(&"not-sent"));
}

#[test]
fn unencrypted_and_missing_keys() {
    let mut net = pair(Cipher::Aes128Gcm);
    let plain = el("message", NS_CLIENT)
        .with("from", ALICE)
        .with("to", "bob@b.example")
        .with("type", "chat")
        .child(text_el("body", NS_CLIENT, "in clear"));
    let out = net.deliver(BOB, &plain);
    assert!(out.events.iter().any(|e| matches!(e, Event::Alert { reason: "unencrypted", .. })));
    assert!(out.events.iter().any(|e| matches!(e, Event::Plaintext { trust: Trust::Unencrypted, .. })));
    // Nobody published for carol: the fetch fails and the message is not sent.
    net.send(ALICE, "carol@c.example/x", "nobody home");
    assert!(net.alerts(ALICE).contains(&"no-keys"));
    assert!(net.alerts(ALICE).contains(&"not-sent"));
}

// ---- signature wrapping ----------------------------------------------------------------------

/// Builds a stanza from Alice to Bob whose encrypted plaintext is `text` (an attacker can
/// encrypt anything to Bob).
fn sealed_to_bob(text: &str, cipher: Cipher, rng: &mut dyn RngCore) -> Element {
    let bob = key(1).public;
    let data =
        enc::seal(text.as_bytes(), cipher, &[Recipient { jid: "bob@b.example", key: &bob }], rng).unwrap();
    el("message", NS_CLIENT).with("from", ALICE).with("to", "bob@b.example").with("type", "chat").child(data)
}

/// Alice's genuine signed payload for Bob, as text (not delivered).
fn genuine(net: &mut Net, body: &str) -> String {
    let alice_pem = net.devices[ALICE].public_key_pem();
    net.devices.get_mut(BOB).unwrap().import_peer_key(&bare(ALICE), &alice_pem).unwrap();
    let mut rng = net.rng.clone();
    let signed =
        net.devices[ALICE].signed_payload(&mut Cx { rng: &mut rng, now: NOW }, &bare(BOB), body).unwrap();
    net.rng = rng;
    String::from(&signed)
}

fn try_plaintext(net: &mut Net, text: &str) -> Result<Vec<String>, &'static str> {
    let stanza = sealed_to_bob(text, Cipher::Aes128Gcm, &mut net.rng.clone());
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    match net.devices.get_mut(BOB).unwrap().receive(&mut Cx { rng: &mut rng, now: NOW }, &stanza) {
        // An unknown signing key: the stanza waits for the sender's keys.
        Ok(out) if out.actions.iter().any(|a| matches!(a, Action::Fetch { .. })) => Err("fetching"),
        Ok(out) => Ok(out
            .events
            .into_iter()
            .filter_map(|e| if let Event::Plaintext { body, .. } = e { Some(body) } else { None })
            .collect()),
        Err(e) => Err(e.code()),
    }
}

#[test]
fn signature_wrapping_attacks_are_rejected() {
    let mut net = pair(Cipher::Aes128Gcm);
    net.send(ALICE, BOB, "pay 10 to carol");
    let fresh = genuine(&mut net, "pay 20 to dave");
    let fresh_id = fresh.split("Id='").nth(1).unwrap().split('\'').next().unwrap().to_owned();
    let inner_sig = &fresh[fresh.find("<Signature").unwrap()..fresh.find("</signed>").unwrap()];
    let evil_fields = "<to>bob@b.example</to><from>alice@a.example</from><time>2026-01-01T00:00:00.000Z</time><body>pay 1000 to mallory</body>";
    let ns = NS;

    let attacks: Vec<(&str, String, &str)> = vec![
        // XSW1: the signed original moved into a wrapper, the wrapper carries the evil body and
        // the original's Signature; the Reference still resolves to the (moved) original.
        (
            "wrapper-root",
            format!(
                "<signed xmlns=\"{ns}\" Id=\"evil\">{evil_fields}{inner_sig}<wrap>{}</wrap></signed>",
                fresh.replacen(inner_sig, "", 1)
            ),
            "bad-reference",
        ),
        // Duplicated Id: an evil root with the same Id as the original hidden inside.
        (
            "duplicate-id",
            format!(
                "<signed xmlns=\"{ns}\" Id=\"{fresh_id}\">{evil_fields}{inner_sig}<wrap>{}</wrap></signed>",
                fresh.replacen(inner_sig, "", 1)
            ),
            "duplicate-id",
        ),
        // The genuine payload with a second <body/> appended after the Signature.
        (
            "second-body",
            fresh.replacen("</signed>", "<body>pay 1000 to mallory</body></signed>", 1),
            "bad-digest",
        ),
        // The whole genuine payload nested in an unsigned root (Signature not enveloped by root).
        (
            "nested",
            format!("<signed xmlns=\"{ns}\" Id=\"x\">{evil_fields}{fresh}</signed>"),
            "misplaced-signature",
        ),
        // Two Signatures.
        (
            "two-signatures",
            fresh.replacen("</signed>", &format!("{inner_sig}</signed>"), 1),
            "misplaced-signature",
        ),
        // xml:id with the same value on a descendant.
        (
            "xml-id-duplicate",
            fresh.replacen("<body>", &format!("<body xml:id=\"{fresh_id}\">"), 1),
            "duplicate-id",
        ),
        // A reference to the whole document.
        ("empty-uri", fresh.replacen(&format!("URI='#{fresh_id}'"), "URI=''", 1), "bad-reference"),
        // An XPointer reference.
        (
            "xpointer",
            fresh.replacen(&format!("URI='#{fresh_id}'"), &format!("URI=\"#xpointer(id('{fresh_id}'))\""), 1),
            "bad-reference",
        ),
        // Not our payload at all.
        ("foreign-root", format!("<other xmlns=\"urn:x\">{fresh}</other>"), "not-signed-payload"),
    ];
    for (name, text, want) in attacks {
        assert_eq!(try_plaintext(&mut net, &text), Err(want), "{name}: {text}");
    }
    // Control: the fresh one, untouched, is accepted once, and then it is a replay.
    assert_eq!(try_plaintext(&mut net, &fresh), Ok(vec!["pay 20 to dave".into()]));
    assert_eq!(try_plaintext(&mut net, &fresh), Err("replay"));
}

#[test]
fn c14n_invariant_changes_still_verify() {
    // What canonicalization erases (quote style, a redundant namespace declaration,
    // attribute order, whitespace inside tags) does not break the signature.
    let mut net = pair(Cipher::Aes128Gcm);
    let fresh = genuine(&mut net, "same meaning");
    let changed =
        fresh.replacen("<signed ", "<signed xmlns:unused=\"urn:unused\" ", 1).replacen("<to>", "<to  >", 1);
    assert_ne!(changed, fresh);
    assert_eq!(try_plaintext(&mut net, &changed), Ok(vec!["same meaning".into()]));
}

// ---- robustness ----------------------------------------------------------------------------

#[test]
fn hostile_plaintexts_are_typed_errors() {
    let mut net = pair(Cipher::Aes128Gcm);
    let fresh = genuine(&mut net, "x");
    let deep = format!("{}{}", "<a>".repeat(5000), "</a>".repeat(5000));
    let deep_in_body = fresh.replacen(
        "<body>x</body>",
        &format!("<body>{}x{}</body>", "<b>".repeat(200), "</b>".repeat(200)),
        1,
    );
    let cases: Vec<(String, &[&str])> = vec![
        ("".into(), &["malformed"]),
        ("<signed".into(), &["malformed"]),
        ("not xml at all".into(), &["malformed"]),
        (deep, &["malformed"]),
        (deep_in_body, &["bad-digest", "malformed"]),
        ("<!DOCTYPE x [<!ENTITY a \"aaaa\">]><x>&a;</x>".into(), &["malformed"]),
        (format!("<signed xmlns=\"{NS}\" xmlns:p=\"relative/ns\"><p:x/></signed>"), &["missing-element"]),
        (fresh.replacen("xmlns='urn:xmpp:jabberwock:xmlsec:0'", "xmlns=''", 1), &["not-signed-payload"]),
        (fresh.replacen(NS, "urn:xmpp:jabberwock:xmlsec:1", 1), &["not-signed-payload"]),
        (fresh.replacen("rsa-sha256", "rsa-sha1", 1), &["unsupported-algorithm"]),
        (fresh.replacen("enveloped-signature", "xpath", 1), &["unsupported-algorithm"]),
        (fresh.replacen("<DigestValue>", "<DigestValue>!!", 1), &["malformed"]),
        (fresh.replacen("<SignatureValue>", "<SignatureValue>AAAA", 1), &["bad-signature", "malformed"]),
        (fresh.replacen("<KeyName>", "<KeyName>00", 1), &["fetching"]),
        (String::from_utf8_lossy(&[0xff, 0xfe, b'<']).into_owned(), &["malformed"]),
    ];
    for (text, want) in cases {
        let got = try_plaintext(&mut net, &text);
        assert!(
            matches!(got, Err(code) if want.contains(&code)),
            "{got:?} for {}",
            &text[..text.len().min(200)]
        );
    }
    // Invalid UTF-8 in the plaintext.
    let bob = key(1).public;
    let data =
        enc::seal(&[0xff, 0xfe, 0xfd], Cipher::Aes128Gcm, &[Recipient { jid: "b", key: &bob }], &mut net.rng)
            .unwrap();
    let m = el("message", NS_CLIENT).with("from", ALICE).with("to", "bob@b.example").child(data);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    assert_eq!(
        net.devices
            .get_mut(BOB)
            .unwrap()
            .receive(&mut Cx { rng: &mut rng, now: NOW }, &m)
            .unwrap_err()
            .code(),
        "malformed"
    );
}

#[test]
fn cbc_padding_is_checked_as_xmlenc_specifies() {
    let key = [7u8; 16];
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut ct = Cipher::Aes128Cbc.seal(&key, b"0123456789abcdef0123", &mut rng);
    assert_eq!(Cipher::Aes128Cbc.open(&key, &ct).unwrap(), b"0123456789abcdef0123");
    // Flip the last byte of the next-to-last block: the padding length octet changes.
    let n = ct.len();
    ct[n - 17] ^= 0x40;
    assert_eq!(Cipher::Aes128Cbc.open(&key, &ct).unwrap_err().code(), "bad-padding");
    assert_eq!(Cipher::Aes128Cbc.open(&key, &ct[..20]).unwrap_err().code(), "malformed");
    assert_eq!(Cipher::Aes128Gcm.open(&key, &[0; 10]).unwrap_err().code(), "malformed");
    assert_eq!(Cipher::Aes128Gcm.open(&key[..8], &[0; 40]).unwrap_err().code(), "bad-key-length");
}

#[test]
fn mutated_xmlsec_stanzas_never_panic() {
    let mut net = Net::new(&[(ALICE, 0), (ALICE2, 2), (BOB, 1)], TrustPolicy::Btbv, Cipher::Aes128Cbc);
    net.send(ALICE, BOB, "one");
    net.devices.get_mut(BOB).unwrap().cipher = Cipher::Aes128Gcm;
    net.send(BOB, ALICE, "two");
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let damage = |s: &mut Element, rng: &mut ChaCha20Rng| {
        let target = random_element(s, rng);
        match rng.next_u32() % 6 {
            0 => flip_base64(target, rng),
            1 => set_text(target, "!!"),
            2 => target.set(
                "Algorithm",
                ["", "x", enc::AES128_CBC, enc::AES128_GCM, enc::RSA_OAEP_11][(rng.next_u32() % 5) as usize],
            ),
            3 => target.set("Type", "http://www.w3.org/2001/04/xmlenc#Content"),
            4 => {
                // Duplicate a child (EncryptedKey, CipherData, EncryptedData, ...).
                if let Some(c) = target.children().next().cloned() {
                    target.append_child(c);
                }
            }
            _ => {
                let _ = target.take_nodes();
            }
        }
    };
    let read = |sender: &String, s: &Element, rng: &mut ChaCha20Rng| {
        let receiver = if bare(sender) == bare(BOB) { ALICE } else { BOB };
        net.devices[receiver].clone().receive(&mut Cx { rng, now: NOW }, s)
    };
    let mut codes = damaged_codes(&net.wire, 300, &mut rng, damage, read);
    assert!(codes.contains("malformed") || codes.contains("missing-element"), "{codes:?}");
    assert!(codes.len() >= 3, "{codes:?}");

    // Hostile plaintexts under a real encryption, chosen by the seeded stream: mutated
    // base64, bad XML, deep nesting, odd namespaces, duplicated Ids.
    let fresh = genuine(&mut net, "base");
    let pieces = [
        "<",
        ">",
        "</signed>",
        "<signed xmlns=\"urn:xmpp:jabberwock:xmlsec:0\" Id=\"a\">",
        "Id=\"a\"",
        "xmlns:p=\"u\"",
        "<p:x/>",
        "&amp;",
        "&bogus;",
        "<![CDATA[x]]>",
        "<!--c-->",
        "<?pi x?>",
        "xmlns=\"\"",
        "<body>",
        "</body>",
        "\u{0}",
    ];
    for round in 0..120usize {
        let mut text = fresh.clone();
        for _ in 0..(1 + rng.next_u32() % 3) {
            let at = (rng.next_u32() as usize) % text.len();
            let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            match rng.next_u32() % 3 {
                0 => text.insert_str(at, pieces[(rng.next_u32() as usize) % pieces.len()]),
                1 => {
                    let end = (at + 1 + (rng.next_u32() as usize) % 8).min(text.len());
                    if text.is_char_boundary(end) {
                        text.replace_range(at..end, "");
                    }
                }
                _ => {
                    let n = 1 + (rng.next_u32() as usize) % 300;
                    text.insert_str(at, &format!("{}{}", "<d>".repeat(n), "</d>".repeat(n)));
                }
            }
        }
        let mut bob = net.devices[BOB].clone();
        let stanza = sealed_to_bob(
            &text,
            if round % 2 == 0 { Cipher::Aes128Gcm } else { Cipher::Aes128Cbc },
            &mut rng,
        );
        match bob.receive(&mut Cx { rng: &mut rng, now: NOW }, &stanza) {
            Ok(out) => assert!(
                !out.events.iter().any(|e| matches!(e, Event::Plaintext { body, .. } if body != "base")),
                "a changed payload was accepted: {text}"
            ),
            Err(e) => {
                codes.insert(e.code());
            }
        }
    }
    eprintln!("error codes seen: {codes:?}");
    assert!(codes.contains("bad-digest"), "{codes:?}");
}

// ---- Engine::forward: surreptitious forwarding and signature wrapping ------------------------

/// A deliberately naive XML Signature consumer, as the wrapping papers describe the victims:
/// it takes the first `ds:Signature` anywhere, resolves its Reference `#id` to the first
/// element anywhere with that `Id`, applies the enveloped-signature transform (drop the
/// Signature if it lies inside that element) and exclusive C14N, checks the digest and the
/// RSA-SHA256 signature under `signer` — and then reads `(to, body)` from the **document
/// element**, not from the element it verified.
fn naive_verify(payload: &str, signer: &PublicKey) -> Result<(String, String), &'static str> {
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier;
    use sha2::{Digest, Sha256};
    use xml_sec::c14n::{C14nAlgorithm, canonicalize};
    use xml_sec::{XmlDomDocument as Document, XmlDomNode as Node, XmlDomNodeId as NodeId};

    fn is(n: Node<'_, '_>, ns: &str, name: &str) -> bool {
        n.is_element() && n.tag_name().name() == name && n.tag_name().namespace() == Some(ns)
    }
    fn child<'a, 'i>(n: Node<'a, 'i>, ns: &str, name: &str) -> Option<Node<'a, 'i>> {
        n.children().find(|c| is(*c, ns, name))
    }
    fn text(n: Node<'_, '_>) -> String {
        n.children().filter(|c| c.is_text()).map(|c| c.text().unwrap_or_default()).collect()
    }
    fn span(n: Node<'_, '_>) -> (NodeId, NodeId) {
        (n.id(), n.descendants().next_back().map_or(n.id(), |d| d.id()))
    }
    fn within(id: NodeId, (a, b): (NodeId, NodeId)) -> bool {
        a <= id && id <= b
    }
    let doc = Document::parse(payload).map_err(|_| "parse")?;
    let sig = doc.descendants().find(|n| is(*n, NS_DS, "Signature")).ok_or("no signature")?;
    let signed_info = child(sig, NS_DS, "SignedInfo").ok_or("no SignedInfo")?;
    let reference = child(signed_info, NS_DS, "Reference").ok_or("no Reference")?;
    let id = reference.attribute("URI").and_then(|u| u.strip_prefix('#')).ok_or("bad URI")?;
    let target =
        doc.descendants().find(|n| n.is_element() && n.attribute("Id") == Some(id)).ok_or("no target")?;
    let algo = C14nAlgorithm::from_uri(dsig::EXC_C14N).unwrap();
    let (keep, drop) = (span(target), span(sig));
    let visible = move |n: Node<'_, '_>| within(n.id(), keep) && !within(n.id(), drop);
    let mut octets = Vec::new();
    canonicalize(&doc, Some(&visible), &algo, &mut octets).map_err(|_| "c14n")?;
    let digest = unb64("d", text(child(reference, NS_DS, "DigestValue").ok_or("no DigestValue")?).trim())
        .map_err(|_| "digest base64")?;
    if Sha256::digest(&octets).as_slice() != digest.as_slice() {
        return Err("bad digest");
    }
    let keep = span(signed_info);
    let visible = move |n: Node<'_, '_>| within(n.id(), keep);
    let mut octets = Vec::new();
    canonicalize(&doc, Some(&visible), &algo, &mut octets).map_err(|_| "c14n")?;
    let value = unb64("s", text(child(sig, NS_DS, "SignatureValue").ok_or("no value")?).trim())
        .map_err(|_| "signature base64")?;
    let value = Signature::try_from(value.as_slice()).map_err(|_| "signature bytes")?;
    VerifyingKey::<Sha256>::new(signer.key.clone()).verify(&octets, &value).map_err(|_| "bad signature")?;
    let root = doc.root_element();
    let field = |name| child(root, NS, name).map(text).ok_or("no field");
    Ok((field("to")?, field("body")?))
}

/// Mallory's engine forwards `recorded` to Bob: the first call asks for Bob's keys (Mallory
/// never wrote to him), the second returns the message. Returns it with `from` set to Alice,
/// as the attacker sends it.
fn forward_to_bob(net: &mut Net, recorded: &Element, body: &str) -> Element {
    let mut rng = net.rng.clone();
    let mut call = |net: &mut Net| {
        net.devices
            .get_mut(MALLORY)
            .unwrap()
            .forward(&mut Cx { rng: &mut rng, now: NOW }, recorded, &bare(BOB), body)
            .unwrap()
            .unwrap()
    };
    let first = call(net);
    let out = if first.actions.iter().any(|a| matches!(a, Action::Send(_))) {
        first
    } else {
        assert_eq!(first.actions, [Action::Fetch { owner: bare(BOB), node: NODE_KEYS.into() }]);
        net.process(MALLORY, first);
        call(net)
    };
    net.rng = rng;
    let [Action::Send(m)] = &out.actions[..] else { panic!("{out:?}") };
    assert_eq!(m.attr("to"), Some("bob@b.example"));
    assert_eq!(m.attr("type"), Some("chat"));
    let mut m = m.clone();
    m.set("from", ALICE);
    m
}

/// The payload inside a message, decrypted with device key `k`.
fn decrypt_with(m: &Element, k: usize) -> String {
    let data = m.get_child("EncryptedData", NS_XENC).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    String::from_utf8(
        enc::open(data, &key(k), Accept::Any, &mut rng).unwrap().expect("a key for this device"),
    )
    .unwrap()
}

fn bob_receives(net: &mut Net, m: &Element) -> Result<Vec<String>, &'static str> {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    match net.devices.get_mut(BOB).unwrap().receive(&mut Cx { rng: &mut rng, now: NOW }, m) {
        Ok(out) => {
            assert!(out.actions.is_empty(), "Bob already holds Alice's key: {out:?}");
            Ok(out
                .events
                .into_iter()
                .filter_map(|e| if let Event::Plaintext { body, .. } = e { Some(body) } else { None })
                .collect())
        }
        Err(e) => Err(e.code()),
    }
}

/// Alice writes to Bob (so Bob holds her key) and to Mallory; Mallory's message as recorded.
fn alice_to_mallory() -> (Net, Element) {
    let mut net = Net::new(&[(ALICE, 0), (BOB, 1), (MALLORY, 2)], TrustPolicy::Btbv, Cipher::Aes128Gcm);
    net.send(ALICE, BOB, "warm up");
    net.send(ALICE, MALLORY, "the meeting is at noon");
    assert_eq!(net.shown_by(MALLORY), vec!["the meeting is at noon"]);
    assert!(net.errors.is_empty(), "{:?}", net.errors);
    let recorded = net.last_message(ALICE);
    (net, recorded)
}

#[test]
fn forward_with_wrapping_is_rejected_by_reference_resolution() {
    let (mut net, recorded) = alice_to_mallory();
    let forged = forward_to_bob(&mut net, &recorded, "pay 1000 to mallory");
    // (a) Bob's honest engine: the Reference resolves to an element that is not the document
    // element.
    assert_eq!(bob_receives(&mut net, &forged), Err("bad-reference"));
    // It did decrypt at Bob, and it is the wrapping document around Alice's intact signature.
    let text = decrypt_with(&forged, 1);
    let original = decrypt_with(&recorded, 2);
    let original_id = original.split("Id='").nth(1).unwrap().split('\'').next().unwrap();
    assert!(text.contains(&format!("URI='#{original_id}'")), "{text}");
    assert!(!text.starts_with(&format!("<signed xmlns='{NS}' Id='{original_id}'")), "{text}");
    assert_eq!(text.matches("<Signature xmlns=").count(), 1, "{text}");
    let mut lookup = |_: Option<&str>| Ok(vec![key(0).public]);
    assert_eq!(dsig::verify(&text, &mut lookup).unwrap_err().code(), "bad-reference");
    // (b) It is a real wrapping attack: the naive verifier checks Alice's digest and signature
    // and then reads the attacker's fields from the document element.
    let alice = key(0).public;
    assert_eq!(
        naive_verify(&text, &alice),
        Ok(("bob@b.example".to_owned(), "pay 1000 to mallory".to_owned()))
    );
    // Controls: the naive verifier is a verifier — it reads Alice's genuine payload, and it
    // refuses an edited body, a foreign key and a payload without the original element.
    assert_eq!(
        naive_verify(&original, &alice),
        Ok(("mallory@m.example".to_owned(), "the meeting is at noon".to_owned()))
    );
    let edited = original.replacen("the meeting is at noon", "pay 1000 to mallory", 1);
    assert_eq!(naive_verify(&edited, &alice), Err("bad digest"));
    assert_eq!(naive_verify(&text, &key(1).public), Err("bad signature"));
    let no_original = text.split("<wrapper").next().unwrap().to_owned() + "</signed>";
    assert_eq!(naive_verify(&no_original, &alice), Err("no target"));
    assert!(net.shown_by(BOB).iter().all(|b| b == "warm up"));
}

#[test]
fn forward_without_body_is_plain_surreptitious_forwarding() {
    let (mut net, recorded) = alice_to_mallory();
    let forged = forward_to_bob(&mut net, &recorded, "");
    // (c) Alice's payload, byte for byte, re-encrypted to Bob: a valid signature of Alice's…
    let text = decrypt_with(&forged, 1);
    assert_eq!(text, decrypt_with(&recorded, 2));
    let mut lookup = |_: Option<&str>| Ok(vec![key(0).public]);
    let payload = dsig::verify(&text, &mut lookup).unwrap();
    assert_eq!((payload.to.as_str(), payload.from.as_str()), ("mallory@m.example", "alice@a.example"));
    // …over a `<to/>` that names Mallory: Bob refuses it.
    assert_eq!(bob_receives(&mut net, &forged), Err("to-mismatch"));
    // The keys of Bob are known now: a second forward needs no fetch, and a stolen copy of
    // Mallory's device forwards the same way.
    let mut thief = net.devices[MALLORY].steal(Theft::LongTermKeys);
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let out = thief.forward(&mut Cx { rng: &mut rng, now: NOW }, &recorded, &bare(BOB), "").unwrap().unwrap();
    let [Action::Send(again)] = &out.actions[..] else { panic!("{out:?}") };
    let mut again = again.clone();
    again.set("from", ALICE);
    assert_eq!(bob_receives(&mut net, &again), Err("to-mismatch"));
}

#[test]
fn forward_refuses_what_it_cannot_use() {
    let (mut net, recorded) = alice_to_mallory();
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let mut cx = Cx { rng: &mut rng, now: NOW };
    let mallory = net.devices.get_mut(MALLORY).unwrap();
    // Alice's message to Bob carries no key for Mallory.
    let to_bob = net.wire.iter().find(|(_, m)| m.attr("to") == Some("bob@b.example")).unwrap().1.clone();
    assert_eq!(mallory.forward(&mut cx, &to_bob, &bare(BOB), "x").unwrap_err().code(), "not-for-this-device");
    // A plain message has nothing to forward.
    let plain = el("message", NS_CLIENT).with("from", ALICE).child(text_el("body", NS_CLIENT, "hi"));
    assert_eq!(mallory.forward(&mut cx, &plain, &bare(BOB), "x").unwrap_err().code(), "missing-element");
    // A payload that is not signed (an attacker's own encryption to Mallory).
    let m = key(2).public;
    let data = enc::seal(
        format!("<signed xmlns='{NS}' Id='a'><body>x</body></signed>").as_bytes(),
        Cipher::Aes128Gcm,
        &[Recipient { jid: "mallory@m.example", key: &m }],
        cx.rng,
    )
    .unwrap();
    let unsigned = el("message", NS_CLIENT).with("from", ALICE).child(data);
    assert_eq!(mallory.forward(&mut cx, &unsigned, &bare(BOB), "x").unwrap_err().code(), "missing-element");
    // An account without keys: fetched, then refused.
    let carol = bare("carol@c.example/x");
    let out = mallory.forward(&mut cx, &recorded, &carol, "x").unwrap().unwrap();
    assert_eq!(out.actions, [Action::Fetch { owner: carol.clone(), node: NODE_KEYS.into() }]);
    mallory.fetch_failed(&mut cx, &carol, NODE_KEYS, "item-not-found").unwrap();
    assert_eq!(mallory.forward(&mut cx, &recorded, &carol, "x").unwrap_err().code(), "policy");
}

// ---- review fixes: cipher downgrade, key-set and trial-decryption bounds, PEP origin, replay cache

/// A syntactically valid 2048-bit RSA public key nobody holds the private half of (fast: no
/// prime search), for tests that need many distinct keys.
fn fake_key(i: u64) -> PublicKey {
    let mut n = [0u8; 256];
    ChaCha20Rng::seed_from_u64(5000 + i).fill_bytes(&mut n);
    n[0] |= 0x80;
    n[255] |= 1;
    let key = rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(&n), rsa::BigUint::from(65_537u32)).unwrap();
    PublicKey::new(key).unwrap()
}

/// A PEP notification of one key item, as the account's server sends it.
fn notification(from: &str, key: &PublicKey) -> Element {
    el("message", NS_CLIENT).with("from", from).child(
        el("event", NS_PUBSUB_EVENT).child(
            el("items", NS_PUBSUB_EVENT)
                .with("node", NODE_KEYS)
                .child(el("item", NS_PUBSUB_EVENT).with("id", key.fingerprint.clone()).child(key.key_info())),
        ),
    )
}

fn items_of(keys: &[&PublicKey]) -> Element {
    let mut items = el("items", NS_PUBSUB).with("node", NODE_KEYS);
    for k in keys {
        items.append_child(el("item", NS_PUBSUB).with("id", k.fingerprint.clone()).child(k.key_info()));
    }
    items
}

fn holds(net: &Net, who: &str, owner: &str, fingerprint: &str) -> bool {
    net.devices[who].trust.get(&owner.parse::<BareJid>().unwrap(), &fingerprint.to_owned()).is_some()
}

/// One Bad Apple (Jager, Paterson, Somorovsky, NDSS 2013): the `EncryptionMethod` URI is not
/// authenticated, so a GCM device that also read CBC would answer CBC questions about GCM
/// content keys. A GCM device refuses CBC before unwrapping anything; a CBC device reads both.
#[test]
fn a_gcm_device_refuses_cbc_and_a_cbc_device_reads_both() {
    // Bob on GCM, Alice (misconfigured or downgraded) on CBC.
    let mut net = pair(Cipher::Aes128Gcm);
    net.devices.get_mut(ALICE).unwrap().cipher = Cipher::Aes128Cbc;
    net.send(ALICE, BOB, "in cbc");
    assert_eq!(net.errors_of(BOB), vec!["cipher-not-allowed"]);
    assert!(net.shown_by(BOB).is_empty());
    // A recorded GCM message relabelled as CBC under the same content key.
    net.devices.get_mut(ALICE).unwrap().cipher = Cipher::Aes128Gcm;
    net.send(ALICE, BOB, "in gcm");
    assert_eq!(net.shown_by(BOB), vec!["in gcm"]);
    let mut relabelled = net.last_message(ALICE);
    relabelled
        .get_child_mut("EncryptedData", NS_XENC)
        .unwrap()
        .get_child_mut("EncryptionMethod", NS_XENC)
        .unwrap()
        .set("Algorithm", enc::AES128_CBC);
    net.deliver(BOB, &relabelled);
    assert_eq!(net.errors_of(BOB), vec!["cipher-not-allowed", "cipher-not-allowed"]);
    // Bob on CBC reads both; so does a thief's copy of the GCM Bob.
    let mut net = pair(Cipher::Aes128Cbc);
    net.send(ALICE, BOB, "cbc to cbc");
    net.devices.get_mut(ALICE).unwrap().cipher = Cipher::Aes128Gcm;
    net.send(ALICE, BOB, "gcm to cbc");
    assert_eq!(net.shown_by(BOB), vec!["cbc to cbc", "gcm to cbc"]);
    assert!(net.errors.is_empty(), "{:?}", net.errors);
    let mut net = pair(Cipher::Aes128Gcm);
    net.devices.get_mut(ALICE).unwrap().cipher = Cipher::Aes128Cbc;
    let alice_pem = net.devices[ALICE].public_key_pem();
    net.devices.get_mut(BOB).unwrap().import_peer_key(&bare(ALICE), &alice_pem).unwrap();
    net.send(ALICE, BOB, "for the thief");
    assert_eq!(net.errors_of(BOB), vec!["cipher-not-allowed"]);
    let recorded = net.last_message(ALICE);
    let mut thief = net.devices[BOB].steal(Theft::LongTermKeys);
    let out =
        thief.receive(&mut Cx { rng: &mut ChaCha20Rng::seed_from_u64(3), now: NOW }, &recorded).unwrap();
    assert!(out.events.iter().any(|e| matches!(e, Event::Plaintext { body, .. } if body == "for the thief")));
}

#[test]
fn encrypted_keys_and_trial_decryption_are_bounded() {
    let bob = key(1);
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let sealed =
        enc::seal(b"<x/>", Cipher::Aes128Gcm, &[Recipient { jid: "b", key: &bob.public }], &mut rng).unwrap();
    let content = unb64(
        "c",
        &sealed.get_child("CipherData", NS_XENC).unwrap().get_child("CipherValue", NS_XENC).unwrap().text(),
    )
    .unwrap();
    let named =
        sealed.get_child("KeyInfo", NS_DS).unwrap().get_child("EncryptedKey", NS_XENC).unwrap().clone();
    // The same wrapped key without a KeyName: found only by trial decryption.
    let mut unnamed = el("EncryptedKey", NS_XENC);
    for c in named.children().filter(|c| !c.is("KeyInfo", NS_DS)) {
        unnamed.append_child(c.clone());
    }
    // Junk that fails before any RSA operation, but counts as a key to try.
    let junk = el("EncryptedKey", NS_XENC)
        .child(el("EncryptionMethod", NS_XENC).with("Algorithm", "urn:example:junk"))
        .child(el("CipherData", NS_XENC).child(text_el("CipherValue", NS_XENC, "AAAA")));
    let data = |keys: Vec<Element>| enc::encrypted_data(Cipher::Aes128Gcm, &content, keys);
    let accept = Accept::Configured(Cipher::Aes128Gcm);
    // Within the bound: found.
    let mut keys = vec![junk.clone(); MAX_KEYS - 1];
    keys.push(unnamed.clone());
    assert_eq!(enc::open(&data(keys), &bob, accept, &mut rng).unwrap().unwrap(), b"<x/>");
    // Behind MAX_KEYS unnamed keys: never tried.
    let mut keys = vec![junk.clone(); MAX_KEYS];
    keys.push(unnamed.clone());
    assert_eq!(enc::open(&data(keys), &bob, accept, &mut rng).unwrap(), None);
    // A named key is found wherever it is.
    let mut keys = vec![junk.clone(); enc::MAX_ENCRYPTED_KEYS - 1];
    keys.push(named.clone());
    assert_eq!(enc::open(&data(keys), &bob, accept, &mut rng).unwrap().unwrap(), b"<x/>");
    // Too many EncryptedKeys: malformed, before any work.
    let mut keys = vec![junk; enc::MAX_ENCRYPTED_KEYS];
    keys.push(named);
    assert_eq!(enc::open(&data(keys), &bob, accept, &mut rng).unwrap_err().code(), "malformed");
}

#[test]
fn notifications_cannot_grow_an_accounts_key_set() {
    let mut net = pair(Cipher::Aes128Gcm);
    net.send(ALICE, BOB, "first");
    let alice = bare(ALICE);
    let real = key(0).public.fingerprint;
    let fakes: Vec<PublicKey> = (0..MAX_KEYS as u64 + 8).map(fake_key).collect();
    for k in &fakes {
        let n = notification("alice@a.example", k);
        let out = net.deliver(BOB, &n);
        net.process(BOB, out);
    }
    let held = |net: &Net| net.devices[BOB].trust.of(&alice).count();
    assert_eq!(held(&net), MAX_KEYS);
    // The oldest blindly trusted keys went first: Alice's real key, then the first fakes.
    assert!(!holds(&net, BOB, "alice@a.example", &real));
    assert!(!holds(&net, BOB, "alice@a.example", &fakes[7].fingerprint));
    assert!(holds(&net, BOB, "alice@a.example", &fakes[8].fingerprint));
    // A fetch of Alice's node brings her key back (the others are no longer listed: inactive).
    net.send(ALICE, BOB, "second");
    assert_eq!(net.shown_by(BOB), vec!["first", "second"]);
    assert!(holds(&net, BOB, "alice@a.example", &real));
    assert_eq!(held(&net), MAX_KEYS);
    // A new key now evicts an inactive one, never the active one.
    let n = notification("alice@a.example", &fake_key(100));
    net.deliver(BOB, &n);
    assert!(holds(&net, BOB, "alice@a.example", &real));
    assert!(holds(&net, BOB, "alice@a.example", &fake_key(100).fingerprint));
    assert_eq!(held(&net), MAX_KEYS);
    // Every key held active and verified: a new one is refused with an alert.
    let all: Vec<String> = net.devices[BOB].trust.of(&alice).map(|(f, _)| f.clone()).collect();
    for (_, k) in net.devices.get_mut(BOB).unwrap().trust.of_mut(&alice) {
        k.key.active = true;
    }
    net.verify(BOB, ALICE, all);
    let out = net.deliver(BOB, &notification("alice@a.example", &fake_key(101)));
    assert!(out.events.iter().any(|e| matches!(e, Event::Alert { reason: "bad-key-item", .. })), "{out:?}");
    assert!(!holds(&net, BOB, "alice@a.example", &fake_key(101).fingerprint));
    assert_eq!(held(&net), MAX_KEYS);
}

#[test]
fn pep_payloads_are_read_only_from_where_they_belong() {
    let mut net = pair(Cipher::Aes128Gcm);
    let bad_from = "@a.example";
    assert!(bad_from.parse::<Jid>().is_err());
    let k = fake_key(1);
    let pubsub = || el("pubsub", NS_PUBSUB).child(items_of(&[&k]));
    let event = || {
        el("event", NS_PUBSUB_EVENT).child(
            notification(ALICE, &k)
                .get_child("event", NS_PUBSUB_EVENT)
                .unwrap()
                .get_child("items", NS_PUBSUB_EVENT)
                .unwrap()
                .clone(),
        )
    };
    let cases = [
        // A `from` that does not parse is not our own account.
        el("iq", NS_CLIENT).with("type", "result").with("from", bad_from).child(pubsub()),
        el("message", NS_CLIENT).with("from", bad_from).child(event()),
        // Items in anything but an iq result are not a fetch result.
        el("message", NS_CLIENT).with("from", "alice@a.example").child(pubsub()),
        el("iq", NS_CLIENT).with("type", "set").with("from", "alice@a.example").child(pubsub()),
        el("iq", NS_CLIENT).with("type", "error").with("from", "alice@a.example").child(pubsub()),
        // Notifications come in messages only.
        el("iq", NS_CLIENT).with("type", "result").with("from", "alice@a.example").child(event()),
        el("presence", NS_CLIENT).with("from", "alice@a.example").child(event()),
    ];
    for stanza in &cases {
        let out = net.deliver(BOB, stanza);
        assert!(out.events.is_empty() && out.actions.is_empty(), "{out:?} for {}", String::from(stanza));
        for owner in ["alice@a.example", "bob@b.example"] {
            assert!(!holds(&net, BOB, owner, &k.fingerprint), "{owner} from {}", String::from(stanza));
        }
    }
    assert!(net.errors.is_empty(), "{:?}", net.errors);
    // What is accepted: a notification in a message, a result in an iq result, no `from` = ours.
    net.deliver(BOB, &notification("alice@a.example", &k));
    assert!(holds(&net, BOB, "alice@a.example", &k.fingerprint));
    let ours = el("iq", NS_CLIENT).with("type", "result").child(pubsub());
    net.deliver(BOB, &ours);
    assert!(holds(&net, BOB, "bob@b.example", &k.fingerprint));
}

#[test]
fn payload_ids_are_bounded() {
    let mut net = pair(Cipher::Aes128Gcm);
    let alice_pem = net.devices[ALICE].public_key_pem();
    net.devices.get_mut(BOB).unwrap().import_peer_key(&bare(ALICE), &alice_pem).unwrap();
    let payload = |id: &str| {
        let p = el("signed", NS)
            .child(text_el("to", NS, "bob@b.example"))
            .child(text_el("from", NS, "alice@a.example"))
            .child(text_el("time", NS, format_stamp(NOW)))
            .child(text_el("body", NS, "id test"));
        String::from(&dsig::sign(p, id, &key(0)).unwrap())
    };
    let at_limit = format!("m{}", "a".repeat(MAX_ID_LEN - 1));
    assert_eq!(try_plaintext(&mut net, &payload(&at_limit)), Ok(vec!["id test".to_owned()]));
    let over = format!("m{}", "a".repeat(MAX_ID_LEN));
    assert_eq!(try_plaintext(&mut net, &payload(&over)), Err("malformed"));
}

#[test]
fn the_replay_cache_expires_in_time_order_and_caps_each_sender() {
    let alice = bare(ALICE);
    let bob = bare(BOB);
    let t = |s: u64| NOW + Duration::from_secs(s);
    let mut seen = Seen::default();
    seen.insert(&alice, "a1", t(1));
    seen.insert(&bob, "b1", t(2));
    seen.insert(&alice, "a2", t(3));
    assert!(seen.is_replay(&alice, "a1", t(1)));
    assert!(!seen.is_replay(&bob, "a1", t(1)), "per sender");
    seen.prune(t(3));
    assert_eq!(seen.len(), 1);
    assert!(!seen.is_replay(&alice, "a1", t(1)) && !seen.is_replay(&bob, "b1", t(2)));
    assert!(seen.is_replay(&alice, "a2", t(3)));
    assert!(!seen.senders.contains_key(&bob), "a sender with nothing left is dropped");
    // Over the per-sender cap: the oldest goes, and nothing not newer than it is accepted.
    let mut seen = Seen::default();
    for i in 0..MAX_SEEN_PER_SENDER as u64 + 2 {
        seen.insert(&alice, &format!("m{i}"), t(10 + i));
    }
    seen.insert(&bob, "b", t(5));
    assert_eq!(seen.senders[&alice].ids.len(), MAX_SEEN_PER_SENDER);
    assert_eq!(seen.len(), MAX_SEEN_PER_SENDER + 1);
    assert!(seen.is_replay(&alice, "m0", t(10)) && seen.is_replay(&alice, "never-seen", t(11)));
    assert!(!seen.is_replay(&alice, "never-seen", t(12)));
    assert!(!seen.is_replay(&bob, "other", t(1)), "other senders are not affected");
}

// ---- message parts, presence and iq (XEP-0210 §4.1) -------------------------------------------

/// The parts `who` was shown: (stanza kind, serialised part).
fn parts_shown(net: &Net, who: &str) -> Vec<(&'static str, String)> {
    net.events
        .iter()
        .filter(|(w, _)| w == who)
        .filter_map(|(_, e)| if let Event::Parts { stanza, parts, .. } = e { Some((*stanza, parts)) } else { None })
        .flat_map(|(stanza, parts)| parts.iter().map(move |p| (stanza, String::from(p))))
        .collect()
}

fn note_payload() -> Element {
    text_el("query", "urn:example:notes", "note about the capybara")
}

/// Runs one engine call of `who` and the network after it.
fn act(net: &mut Net, who: &str, f: impl FnOnce(&mut Xmlsec, &mut Cx<'_>) -> Result<Output, E2eError>) {
    let mut rng = net.rng.clone();
    let out = f(net.devices.get_mut(who).unwrap(), &mut Cx { rng: &mut rng, now: net.now }).unwrap();
    net.rng = rng;
    net.process(who, out);
}

#[test]
fn message_parts_presence_and_iq_round_trip_signed_and_encrypted() {
    let mut net = pair(Cipher::Aes128Gcm);
    let content = Content {
        body: "meet me".into(),
        parts: vec![text_el("subject", NS_CLIENT, "tapir census"), el("composing", crate::content::NS_CHATSTATES)],
    };
    act(&mut net, ALICE, |e, cx| e.send_message(cx, &bare(BOB), &content));
    act(&mut net, ALICE, |e, cx| e.send_presence(cx, &Jid::from(bare(BOB)), "walking the quokka"));
    act(&mut net, ALICE, |e, cx| e.send_iq(cx, &jid(BOB), &note_payload()));
    assert!(net.errors.is_empty(), "{:?}", net.errors);
    assert_eq!(net.shown_by(BOB), ["meet me"]);
    let shown = parts_shown(&net, BOB);
    let kinds: Vec<&str> = shown.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["message", "message", "presence", "iq"], "{shown:?}");
    assert!(shown[0].1.contains(">tapir census<") && shown[1].1.contains("composing"));
    assert!(shown[2].1.contains(">walking the quokka<") && shown[2].1.contains("jabber:client"), "{shown:?}");
    assert!(shown[3].1.contains("note about the capybara") && shown[3].1.contains("urn:example:notes"));
    for (_, s) in &net.wire {
        let text = String::from(s);
        for secret in ["tapir", "composing", "quokka", "capybara", "urn:example:notes"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    // The iq is answered with a result, which Alice takes without a word.
    assert!(net.wire.iter().any(|(w, s)| w == BOB && s.name() == "iq" && s.attr("type") == Some("result")));
    assert!(net.alerts(ALICE).is_empty(), "{:?}", net.alerts(ALICE));
}

#[test]
fn a_body_only_payload_keeps_its_schema() {
    let mut net = pair(Cipher::Aes128Gcm);
    let text = genuine(&mut net, "plain words");
    assert!(!text.contains("<parts") && !text.contains("<presence") && !text.contains("<iq"), "{text}");
    let fields: Vec<String> = text.parse::<Element>().unwrap().children().map(|c| c.name().to_owned()).collect();
    assert_eq!(fields, ["to", "from", "time", "body", "Signature"]);
}

#[test]
fn presence_and_iq_wait_for_keys_and_fail_closed() {
    let mut net = Net::new(&[(ALICE, 0), (BOB, 1)], TrustPolicy::Btbv, Cipher::Aes128Gcm);
    net.pep.remove(&bare(BOB));
    // Bob's node is empty: nothing to encrypt to, so nothing goes, in clear or otherwise.
    act(&mut net, ALICE, |e, cx| e.send_presence(cx, &Jid::from(bare(BOB)), "quokka"));
    act(&mut net, ALICE, |e, cx| e.send_iq(cx, &jid(BOB), &note_payload()));
    assert_eq!(net.alerts(ALICE).iter().filter(|a| **a == "not-sent").count(), 2, "{:?}", net.alerts(ALICE));
    assert!(net.wire.iter().all(|(_, s)| s.name() != "presence" && s.name() != "iq"));
}

/// Alice's genuine signed payload for Bob with `content` after `<time/>` (not delivered).
fn genuine_of(net: &mut Net, content: Vec<Element>) -> String {
    let alice_pem = net.devices[ALICE].public_key_pem();
    net.devices.get_mut(BOB).unwrap().import_peer_key(&bare(ALICE), &alice_pem).unwrap();
    let mut rng = net.rng.clone();
    let signed =
        net.devices[ALICE].signed_payload_of(&mut Cx { rng: &mut rng, now: NOW }, &bare(BOB), content).unwrap();
    net.rng = rng;
    String::from(&signed)
}

/// Bob reads `text`, encrypted to him in a stanza of `kind` from Alice: what he is shown
/// (body and parts), or the error.
fn bob_reads(net: &mut Net, kind: &str, text: &str) -> Result<(Vec<String>, Vec<String>), &'static str> {
    let mut stanza = sealed_to_bob(text, Cipher::Aes128Gcm, &mut net.rng.clone());
    if kind != "message" {
        let data = stanza.get_child("EncryptedData", NS_XENC).unwrap().clone();
        stanza = el(kind, NS_CLIENT).with("from", ALICE).with("to", BOB).with("id", "q1").child(data);
        if kind == "iq" {
            stanza.set("type", "set");
        }
    }
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let bob = net.devices.get_mut(BOB).unwrap();
    let mut cx = Cx { rng: &mut rng, now: NOW };
    let r = if kind == "presence" { bob.receive_presence(&mut cx, &stanza) } else { bob.receive(&mut cx, &stanza) };
    let out = r.map_err(|e| e.code())?;
    let mut bodies = vec![];
    let mut parts = vec![];
    for e in out.events {
        match e {
            Event::Plaintext { body, .. } => bodies.push(body),
            Event::Parts { parts: p, .. } => parts.extend(p.iter().map(String::from)),
            _ => {}
        }
    }
    Ok((bodies, parts))
}

#[test]
fn a_part_outside_what_was_signed_is_never_shown() {
    let mut net = pair(Cipher::Aes128Gcm);
    let signed_parts = el("parts", NS).child(text_el("subject", NS_CLIENT, "signed subject"));
    let text = genuine_of(&mut net, vec![text_el("body", NS, "hi"), signed_parts]);
    assert_eq!(bob_reads(&mut net, "message", &text).unwrap().1.len(), 1);
    let injected = format!("<subject xmlns='{NS_CLIENT}'>injected</subject>");
    // A part slipped into the signed element: the digest no longer matches.
    let into_parts = text.replacen("</parts>", &format!("{injected}</parts>"), 1);
    assert_eq!(bob_reads(&mut net, "message", &into_parts), Err("bad-digest"));
    let text2 = genuine_of(&mut net, vec![text_el("body", NS, "hi")]);
    let second_holder = text2.replacen("<Signature", &format!("<parts xmlns='{NS}'>{injected}</parts><Signature"), 1);
    assert_eq!(bob_reads(&mut net, "message", &second_holder), Err("bad-digest"));
    // Parts inside the Signature's KeyInfo, which the enveloped-signature transform leaves out
    // of the digest: the signature verifies, and the parts are not read from there.
    let text3 = genuine_of(&mut net, vec![text_el("body", NS, "hi")]);
    let in_key_info = text3.replacen("</KeyInfo>", &format!("<parts xmlns='{NS}'>{injected}</parts></KeyInfo>"), 1);
    assert_ne!(in_key_info, text3);
    let (bodies, parts) = bob_reads(&mut net, "message", &in_key_info).unwrap();
    assert_eq!((bodies, parts), (vec!["hi".to_owned()], vec![]));
    // The wrapping document of `dsig::wrap` with a presence where the body was: refused by
    // reference resolution before any field is read.
    let original = dsig::signed_original(&genuine_of(&mut net, vec![text_el("body", NS, "hi")])).unwrap();
    let wrapped = String::from(&dsig::wrap(original, "mfresh", "bob@b.example", &format_stamp(NOW), "x").unwrap());
    assert_eq!(bob_reads(&mut net, "message", &wrapped), Err("bad-reference"));
}

#[test]
fn a_payload_signed_for_one_stanza_kind_is_refused_in_another() {
    let mut net = pair(Cipher::Aes128Gcm);
    let presence = genuine_of(&mut net, vec![el("presence", NS).child(text_el("status", NS_CLIENT, "away"))]);
    let (_, parts) = bob_reads(&mut net, "presence", &presence).unwrap();
    assert_eq!(parts.len(), 1);
    assert!(parts[0].contains(">away<"));
    for kind in ["message", "iq"] {
        let fresh = genuine_of(&mut net, vec![el("presence", NS).child(text_el("status", NS_CLIENT, "away"))]);
        assert_eq!(bob_reads(&mut net, kind, &fresh), Err("malformed"), "{kind}");
    }
    let iq = genuine_of(&mut net, vec![el("iq", NS).child(note_payload())]);
    assert_eq!(bob_reads(&mut net, "presence", &iq), Err("malformed"));
    // Two kinds in one payload.
    let both = genuine_of(&mut net, vec![text_el("body", NS, "b"), el("iq", NS).child(note_payload())]);
    assert_eq!(bob_reads(&mut net, "message", &both), Err("malformed"));
}

#[test]
fn a_tampered_presence_or_iq_is_refused_and_the_iq_answered_with_an_error() {
    let mut net = pair(Cipher::Aes128Gcm);
    net.tamper = Some(Box::new(|s: &mut Element| {
        if matches!(s.name(), "presence" | "iq")
            && let Some(data) = s.get_child_mut("EncryptedData", NS_XENC)
        {
            let cv = data.get_child_mut("CipherData", NS_XENC).unwrap().get_child_mut("CipherValue", NS_XENC).unwrap();
            let mut bytes = unb64("CipherValue", &cv.text()).unwrap();
            bytes[20] ^= 0x01;
            set_text(cv, &b64(&bytes));
        }
        true
    }));
    act(&mut net, ALICE, |e, cx| e.send_presence(cx, &Jid::from(bare(BOB)), "quokka"));
    act(&mut net, ALICE, |e, cx| e.send_iq(cx, &jid(BOB), &note_payload()));
    assert_eq!(net.errors_of(BOB), ["bad-mac", "bad-mac"]);
    assert!(parts_shown(&net, BOB).is_empty());
    let answer = net.wire.iter().find(|(w, s)| w == BOB && s.name() == "iq").unwrap().1.clone();
    assert_eq!(answer.attr("type"), Some("error"));
    assert!(answer.get_child("error", NS_CLIENT).unwrap().has_child("not-acceptable", NS_STANZAS));
    // A replayed presence is refused too.
    net.tamper = None;
    act(&mut net, ALICE, |e, cx| e.send_presence(cx, &Jid::from(bare(BOB)), "quokka"));
    let presence = net.last_message(ALICE);
    assert_eq!(parts_shown(&net, BOB).len(), 1);
    let _ = net.deliver(BOB, &presence);
    assert_eq!(net.errors_of(BOB).last(), Some(&"replay"));
}
