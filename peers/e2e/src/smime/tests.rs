#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use cms::content_info::ContentInfo;
use cms::enveloped_data::EnvelopedData;
use der::asn1::OctetString;
use der::{Any, Decode, Encode};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::{TrustPolicy, VerificationResult};
use crate::time::EPOCH;
use crate::xml::{NS_PUBSUB, NS_PUBSUB_EVENT};

const NOW: Duration = EPOCH;
const SEED: [u8; 32] = [7u8; 32];
const ALICE: &str = "alice@a.example/phone";
const ALICE2: &str = "alice@a.example/laptop";
const BOB: &str = "bob@b.example/laptop";
const CAROL: &str = "carol@c.example/desk";
const MALLORY: &str = "mallory@m.example/evil";

fn honest() -> EngineConfig {
    EngineConfig { ca: Some(SEED), ..EngineConfig::default() }
}

fn jid(s: &str) -> FullJid {
    s.parse().unwrap()
}

fn bare(s: &str) -> BareJid {
    s.parse::<Jid>().unwrap().to_bare()
}

/// Devices, a PEP store, and the wire between them. Stanzas to a bare JID reach every
/// device of that account but the sender.
struct World {
    devices: Vec<(FullJid, Smime)>,
    rng: ChaCha20Rng,
    now: Duration,
    pep: BTreeMap<(BareJid, String), BTreeMap<String, Element>>,
    /// (sender index, recipient index, stanza as delivered).
    wire: Vec<(usize, usize, Element)>,
    shown: Vec<(usize, String, Trust)>,
    events: Vec<(usize, Event)>,
    errors: Vec<(usize, &'static str)>,
}

impl World {
    fn new(seed: u64, devices: &[(&str, EngineConfig)]) -> World {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let devices = devices.iter().map(|(j, c)| (jid(j), Smime::new(jid(j), &mut rng, c))).collect();
        World {
            devices,
            rng,
            now: NOW,
            pep: BTreeMap::new(),
            wire: vec![],
            shown: vec![],
            events: vec![],
            errors: vec![],
        }
    }

    fn idx(&self, j: &str) -> usize {
        self.devices.iter().position(|(d, _)| d.to_string() == j).unwrap()
    }

    fn call<T>(&mut self, i: usize, f: impl FnOnce(&mut Smime, &mut Cx<'_>) -> T) -> T {
        let mut rng = self.rng.clone();
        let now = self.now;
        let r = f(&mut self.devices[i].1, &mut Cx { rng: &mut rng, now });
        self.rng = rng;
        r
    }

    fn publish_all(&mut self) {
        for i in 0..self.devices.len() {
            let out = self.call(i, |e, cx| e.publish(cx).unwrap());
            self.run(i, out);
        }
    }

    fn items(&self, owner: &BareJid, node: &str) -> Element {
        let mut items = el("items", NS_PUBSUB).with("node", node);
        if let Some(m) = self.pep.get(&(owner.clone(), node.to_owned())) {
            for (id, item) in m {
                items.append_child(el("item", NS_PUBSUB).with("id", id.clone()).child(item.clone()));
            }
        }
        items
    }

    /// Handles one device's output: PEP directly, stanzas through the queue.
    fn run(&mut self, from: usize, out: Output) {
        let mut queue: VecDeque<(usize, Output)> = VecDeque::from([(from, out)]);
        while let Some((by, out)) = queue.pop_front() {
            for e in &out.events {
                if let Event::Plaintext { body, trust, .. } = e {
                    self.shown.push((by, body.clone(), *trust));
                }
                self.events.push((by, e.clone()));
            }
            for a in out.actions {
                match a {
                    Action::Publish { node, id, item, .. } => {
                        let owner = self.devices[by].0.to_bare();
                        self.pep.entry((owner, node)).or_default().insert(id, item);
                    }
                    Action::Fetch { owner, node } => {
                        let iq = el("iq", NS_CLIENT)
                            .with("type", "result")
                            .with("from", owner.to_string())
                            .child(el("pubsub", NS_PUBSUB).child(self.items(&owner, &node)));
                        let o = self.call(by, |e, cx| e.receive(cx, &iq)).unwrap();
                        queue.push_back((by, o));
                    }
                    Action::Send(mut s) => {
                        s.set("from", self.devices[by].0.to_string());
                        let to: Jid = s.attr("to").unwrap().parse().unwrap();
                        let targets: Vec<usize> = (0..self.devices.len())
                            .filter(|&t| t != by)
                            .filter(|&t| match to.try_as_full() {
                                Ok(f) => self.devices[t].0 == *f,
                                Err(b) => self.devices[t].0.to_bare() == *b,
                            })
                            .collect();
                        for t in targets {
                            self.wire.push((by, t, s.clone()));
                            for o in self.deliver(t, &s) {
                                queue.push_back((t, o));
                            }
                        }
                    }
                }
            }
        }
    }

    /// `receive` then `drain`, as the client does; errors recorded.
    fn deliver(&mut self, t: usize, s: &Element) -> Vec<Output> {
        let r = if s.name() == "presence" {
            self.call(t, |e, cx| e.receive_presence(cx, s))
        } else {
            self.call(t, |e, cx| e.receive(cx, s))
        };
        let mut outs = vec![];
        match r {
            Ok(o) => outs.push(o),
            Err(e) => self.errors.push((t, e.code())),
        }
        outs.push(self.call(t, |e, cx| e.drain(cx)));
        outs
    }

    /// Delivers a recorded stanza to device `t` again, returning what came of it.
    fn replay(&mut self, t: usize, s: &Element) -> (Result<Output, E2eError>, Output) {
        let r = if s.name() == "presence" {
            self.call(t, |e, cx| e.receive_presence(cx, s))
        } else {
            self.call(t, |e, cx| e.receive(cx, s))
        };
        let d = self.call(t, |e, cx| e.drain(cx));
        (r, d)
    }

    fn send(&mut self, from: &str, to: &str, body: &str) {
        let i = self.idx(from);
        let to = bare(to);
        let out = self.call(i, |e, cx| e.send(cx, &to, body).unwrap());
        self.run(i, out);
    }

    fn shown_by(&self, j: &str) -> Vec<(String, Trust)> {
        let i = self.idx(j);
        self.shown.iter().filter(|(d, _, _)| *d == i).map(|(_, b, t)| (b.clone(), *t)).collect()
    }

    fn last_e2e_to(&self, j: &str) -> Element {
        let i = self.idx(j);
        self.wire
            .iter()
            .rev()
            .find(|(_, t, s)| *t == i && s.get_child("e2e", NS_E2E).is_some())
            .map(|(_, _, s)| s.clone())
            .unwrap()
    }
}

fn plaintexts(out: &Output) -> Vec<String> {
    out.events
        .iter()
        .filter_map(|e| if let Event::Plaintext { body, .. } = e { Some(body.clone()) } else { None })
        .collect()
}

fn error_condition(drained: &Output) -> Option<String> {
    drained.actions.iter().find_map(|a| match a {
        Action::Send(s) if s.attr("type") == Some("error") => {
            s.get_child("error", NS_CLIENT).and_then(|e| e.children().next()).map(|c| c.name().to_owned())
        }
        _ => None,
    })
}

fn pair(seed: u64) -> World {
    let mut w = World::new(seed, &[(ALICE, honest()), (BOB, honest())]);
    w.publish_all();
    w
}

#[test]
fn every_honest_engine_derives_the_same_ca() {
    let w = World::new(1, &[(ALICE, honest()), (BOB, honest())]);
    assert_eq!(w.devices[0].1.ca_certificate_pem(), w.devices[1].1.ca_certificate_pem());
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let impostor = Smime::new(jid(MALLORY), &mut rng, &EngineConfig::default());
    assert_ne!(impostor.ca_certificate_pem(), w.devices[0].1.ca_certificate_pem());
}

#[test]
fn round_trip_both_ways_nothing_in_clear() {
    let mut w = pair(1);
    w.send(ALICE, "bob@b.example", "wherefore art thou");
    assert_eq!(w.shown_by(BOB), [("wherefore art thou".to_owned(), Trust::Unverified)], "{:?}", w.errors);
    w.send(BOB, "alice@a.example", "here");
    assert_eq!(w.shown_by(ALICE), [("here".to_owned(), Trust::Unverified)], "{:?}", w.errors);
    assert!(w.errors.is_empty(), "{:?}", w.errors);
    for (_, _, s) in &w.wire {
        let text = String::from(s);
        assert!(!text.contains("wherefore") && !text.contains(">here<"), "{text}");
        assert!(s.get_child("e2e", NS_E2E).is_some());
        assert!(s.get_child("body", NS_CLIENT).is_none());
    }
    // Certificates went to PEP, named by fingerprint.
    let fp = w.devices[1].1.out_of_band().peer_says[0].clone();
    assert!(w.pep[&(bare(BOB), NODE.to_owned())].contains_key(&fp));
    // Trust events for the peer's certificate.
    assert!(w.events.iter().any(|(d, e)| *d == 0
        && matches!(e, Event::TrustChanged { peer, trust: Trust::Unverified, fingerprint, .. } if *peer == bare(BOB) && *fingerprint == fp)));
}

#[test]
fn same_seed_same_bytes() {
    let run = || {
        let mut w = pair(3);
        w.send(ALICE, "bob@b.example", "x");
        w.wire.iter().map(|(_, _, s)| String::from(s)).collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn own_devices_and_sent_carbons_read_it() {
    let mut w = World::new(4, &[(ALICE, honest()), (ALICE2, honest()), (BOB, honest())]);
    w.publish_all();
    // The laptop published after the phone: the phone learns it from a fresh fetch.
    let phone = w.idx(ALICE);
    let out = w.call(phone, |e, cx| e.publish(cx).unwrap());
    w.run(phone, out);
    w.send(BOB, "alice@a.example", "to both");
    assert_eq!(w.shown_by(ALICE).len(), 1, "{:?}", w.errors);
    assert_eq!(w.shown_by(ALICE2).len(), 1, "{:?}", w.errors);
    w.send(ALICE, "bob@b.example", "mine");
    assert_eq!(w.shown_by(BOB).len(), 1, "{:?}", w.errors);
    // A sent carbon: the phone's stanza reaches the laptop.
    let s = w.last_e2e_to(BOB);
    let laptop = w.idx(ALICE2);
    let (r, _) = w.replay(laptop, &s);
    assert_eq!(plaintexts(&r.unwrap()), ["mine"]);
}

#[test]
fn unknown_recipient_is_fetched_then_sent() {
    let mut w = World::new(5, &[(ALICE, honest()), (BOB, honest())]);
    let b = w.idx(BOB);
    let out = w.call(b, |e, cx| e.publish(cx).unwrap());
    w.run(b, out);
    let a = w.idx(ALICE);
    let out = w.call(a, |e, cx| e.send(cx, &bare(BOB), "queued").unwrap());
    assert!(matches!(&out.actions[..], [Action::Fetch { node, .. }] if node == NODE), "{out:?}");
    w.run(a, out);
    assert_eq!(w.shown_by(BOB).len(), 1, "{:?}", w.errors);
    // No certificate at all: a fetch failure reports the message as not sent.
    let mut w = World::new(6, &[(ALICE, honest())]);
    let out = w.call(0, |e, cx| e.send(cx, &bare(CAROL), "void").unwrap());
    assert_eq!(out.actions.len(), 1);
    let out = w.call(0, |e, cx| e.fetch_failed(cx, &bare(CAROL), NODE, "item-not-found").unwrap());
    assert!(out.events.iter().any(|e| matches!(e, Event::Alert { reason: "not-sent", .. })), "{out:?}");
}

#[test]
fn tampered_base64_is_rejected_with_a_stanza_error() {
    let mut w = pair(7);
    w.send(ALICE, "bob@b.example", "original");
    let mut s = w.last_e2e_to(BOB);
    let e2e = s.get_child_mut("e2e", NS_E2E).unwrap();
    let mut der = unb64("e2e", &e2e.text()).unwrap();
    let n = der.len();
    der[n - 5] ^= 0x01;
    let _ = e2e.take_nodes();
    e2e.append_text(b64(&der));
    let (r, d) = w.replay(1, &s);
    assert_eq!(r.unwrap_err().code(), "bad-padding");
    assert_eq!(error_condition(&d).as_deref(), Some("bad-request"));
    let err =
        d.actions.iter().find_map(|a| if let Action::Send(s) = a { Some(s.clone()) } else { None }).unwrap();
    assert_eq!(err.attr("to"), Some(ALICE));
    // Not base64 at all.
    let mut s = w.last_e2e_to(BOB);
    let e2e = s.get_child_mut("e2e", NS_E2E).unwrap();
    let _ = e2e.take_nodes();
    e2e.append_text("!!!");
    let (r, d) = w.replay(1, &s);
    assert_eq!(r.unwrap_err().code(), "malformed");
    assert_eq!(error_condition(&d).as_deref(), Some("bad-request"));
    // The sender is told, and does not answer the error.
    let a = w.idx(ALICE);
    let mut err = err;
    err.set("from", BOB);
    let (r, d) = w.replay(a, &err);
    assert!(r.unwrap().events.iter().any(|e| matches!(e, Event::Alert { reason: "peer-error", .. })));
    assert!(d.actions.is_empty());
}

/// Rewrites the AES-CBC ciphertext (or IV) of an `<e2e/>` stanza.
fn modify_ciphertext(s: &Element, f: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>)) -> Element {
    let mut s = s.clone();
    let e2e = s.get_child_mut("e2e", NS_E2E).unwrap();
    let der = unb64("e2e", &e2e.text()).unwrap();
    let ci = ContentInfo::from_der(&der).unwrap();
    let mut ed: EnvelopedData = ci.content.decode_as().unwrap();
    let mut ct = ed.encrypted_content.encrypted_content.as_ref().unwrap().as_bytes().to_vec();
    let params = ed.encrypted_content.content_enc_alg.parameters.as_ref().unwrap();
    let mut iv = params.decode_as::<OctetString>().unwrap().as_bytes().to_vec();
    f(&mut ct, &mut iv);
    ed.encrypted_content.encrypted_content = Some(OctetString::new(ct).unwrap());
    ed.encrypted_content.content_enc_alg.parameters = Some(Any::new(der::Tag::OctetString, iv).unwrap());
    let ci = ContentInfo { content_type: ci.content_type, content: Any::encode_from(&ed).unwrap() };
    let _ = e2e.take_nodes();
    e2e.append_text(b64(&ci.to_der().unwrap()));
    s
}

/// EFAIL-style CBC malleability: flipping a bit in any ciphertext block (or the IV) never gets
/// a *different* plaintext shown. Which error comes back depends on where: the last block
/// breaks the padding (`bad-padding`, answered `<bad-request/>`); any other block garbles the
/// DER of the SignedData or the signed content (`malformed`/`bad-signature`/a certificate
/// error, answered `<not-acceptable/>`) — two different answers: an error oracle for the
/// attacker. A flip inside the SignedData's certificate set (which no signature covers) can go
/// unnoticed when the garbled certificate no longer names the signer and the receiver falls
/// back to the signer's certificate it already holds: the original, authentic body is shown.
#[test]
fn cbc_bit_flips_never_show_a_plaintext() {
    let mut w = pair(8);
    w.send(ALICE, "bob@b.example", "transfer 100 to carol");
    let s = w.last_e2e_to(BOB);
    let blocks = {
        let der = unb64("e2e", &s.get_child("e2e", NS_E2E).unwrap().text()).unwrap();
        let ed: EnvelopedData = ContentInfo::from_der(&der).unwrap().content.decode_as().unwrap();
        ed.encrypted_content.encrypted_content.unwrap().as_bytes().len() / 16
    };
    let mut codes = BTreeMap::new();
    let mut conditions = BTreeSet::new();
    let mut unchanged = 0;
    for block in 0..=blocks {
        // block 0 = the IV; block k = ciphertext block k-1. Flip one bit in the middle.
        let t =
            modify_ciphertext(
                &s,
                |ct, iv| if block == 0 { iv[7] ^= 0x10 } else { ct[(block - 1) * 16 + 7] ^= 0x10 },
            );
        let (r, d) = w.replay(1, &t);
        match r {
            Err(e) => {
                *codes.entry(e.code()).or_insert(0) += 1;
                conditions.insert(error_condition(&d).unwrap());
            }
            Ok(o) => {
                assert_eq!(plaintexts(&o), ["transfer 100 to carol"], "block {block}");
                unchanged += 1;
            }
        }
    }
    assert!(codes.contains_key("bad-padding"), "{codes:?}");
    assert!(codes.keys().any(|c| ["bad-signature", "malformed"].contains(c)), "{codes:?}");
    assert_eq!(conditions, BTreeSet::from(["bad-request".to_owned(), "not-acceptable".to_owned()]));
    assert!(unchanged * 4 < blocks, "{unchanged} of {blocks} flips went unnoticed: {codes:?}");
    eprintln!("CBC flips over {} blocks: {codes:?}, unnoticed (authentic body): {unchanged}", blocks + 1);
    // Truncating whole blocks keeps the padding valid only by chance; a truncated DER fails.
    let t = modify_ciphertext(&s, |ct, _| ct.truncate(ct.len() - 32));
    assert!(w.replay(1, &t).0.is_err());
}

#[test]
fn a_message_for_someone_else_is_not_for_this_device() {
    let mut w = World::new(9, &[(ALICE, honest()), (BOB, honest()), (CAROL, honest())]);
    w.publish_all();
    w.send(ALICE, "carol@c.example", "for carol only");
    let mut s = w.last_e2e_to(CAROL);
    s.set("to", "bob@b.example");
    let (r, d) = w.replay(1, &s);
    assert_eq!(r.unwrap_err().code(), "not-for-this-device");
    assert_eq!(error_condition(&d).as_deref(), Some("bad-request"));
}

#[test]
fn surreptitious_forwarding_fails_the_cpim_to_check() {
    // Bob re-encrypts Alice's signed message to Carol and spoofs Alice as the sender.
    let mut w = World::new(10, &[(ALICE, honest()), (BOB, honest()), (CAROL, honest())]);
    w.publish_all();
    w.send(ALICE, "bob@b.example", "I love you, Bob");
    let s = w.last_e2e_to(BOB);
    let der = unb64("e2e", &s.get_child("e2e", NS_E2E).unwrap().text()).unwrap();
    let (bob_cert, bob_key) = (w.devices[1].1.cert.clone().unwrap(), w.devices[1].1.key.clone());
    let (_, signed) = envelope::open(&der, &bob_cert, &bob_key, &mut w.rng).unwrap();
    let carol_cert = w.devices[2].1.cert.clone().unwrap();
    let again = envelope::envelope(&signed, &[&carol_cert], &mut w.rng).unwrap();
    let forwarded = el("message", NS_CLIENT)
        .with("from", ALICE)
        .with("to", "carol@c.example")
        .with("type", "chat")
        .child(text_el("e2e", NS_E2E, b64(&again)));
    let (r, d) = w.replay(2, &forwarded);
    assert_eq!(r.unwrap_err().code(), "cpim-to-mismatch");
    assert_eq!(error_condition(&d).as_deref(), Some("not-acceptable"));
    // Sent honestly by Bob (from Bob), the signer is not the sender.
    let mut from_bob = forwarded.clone();
    from_bob.set("from", BOB);
    assert_eq!(w.replay(2, &from_bob).0.unwrap_err().code(), "certificate-mismatch");
}

#[test]
fn an_impostor_certificate_is_untrusted() {
    // The attacker's own engine, claiming to be Alice, with a CA of its own.
    let mut w = World::new(11, &[(ALICE, EngineConfig::default()), (BOB, honest())]);
    w.publish_all();
    w.send(ALICE, "bob@b.example", "it is me, alice");
    assert!(w.shown_by(BOB).is_empty());
    assert_eq!(w.errors, [(1, "untrusted-certificate")]);
    // Bob answered with <not-acceptable/>, and the impostor just reported it.
    assert!(w.wire.iter().any(|(by, _, s)| *by == 1
        && s.attr("type") == Some("error")
        && String::from(s).contains("not-acceptable")));
    // Alice's PEP item was the impostor's certificate: an honest sender will not use it.
    let mut w2 = World::new(12, &[(ALICE, EngineConfig::default()), (BOB, honest())]);
    w2.publish_all();
    w2.send(BOB, "alice@a.example", "hello?");
    assert!(
        w2.events
            .iter()
            .any(|(d, e)| *d == 1 && matches!(e, Event::Alert { reason: "untrusted-certificate", .. }))
    );
    assert!(w2.events.iter().any(|(d, e)| *d == 1 && matches!(e, Event::Alert { reason: "not-sent", .. })));
    assert!(w2.wire.is_empty());
}

#[test]
fn pep_key_substitution_is_caught_by_the_ca() {
    let mut w = World::new(13, &[(ALICE, honest()), (BOB, honest())]);
    w.publish_all();
    // The server swaps Bob's certificate item for one the attacker's CA issued to "bob".
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let mut evil = Smime::new(jid(BOB), &mut rng, &EngineConfig::default());
    let cert = evil.enrol_now(&mut Cx { rng: &mut rng, now: NOW }).unwrap().clone();
    let node = w.pep.get_mut(&(bare(BOB), NODE.to_owned())).unwrap();
    node.clear();
    node.insert(cert.fingerprint.clone(), text_el("certificate", NODE, b64(&cert.der)));
    w.send(ALICE, "bob@b.example", "secret");
    assert!(w.wire.is_empty());
    assert!(w.events.iter().any(|(_, e)| matches!(e, Event::Alert { reason: "untrusted-certificate", .. })));
}

#[test]
fn expired_and_not_yet_valid_certificates() {
    let mut w = pair(14);
    w.send(ALICE, "bob@b.example", "old");
    let s = w.last_e2e_to(BOB);
    w.now = NOW + pki::DEVICE_VALIDITY + Duration::from_secs(1);
    let (r, d) = w.replay(1, &s);
    assert_eq!(r.unwrap_err().code(), "certificate-expired");
    assert_eq!(error_condition(&d).as_deref(), Some("not-acceptable"));
    w.now = NOW - Duration::from_secs(10);
    assert_eq!(w.replay(1, &s).0.unwrap_err().code(), "certificate-not-yet-valid");
}

fn alerts(out: &Output) -> Vec<(&'static str, String)> {
    out.events
        .iter()
        .filter_map(|e| match e {
            Event::Alert { reason, detail } => Some((*reason, detail.clone())),
            _ => None,
        })
        .collect()
}

fn codes(out: &Output) -> Vec<&'static str> {
    alerts(out).into_iter().map(|(r, _)| r).collect()
}

/// `s` with a XEP-0203 `<delay/>` from `server` stamped `stamp`, as offline storage adds it.
fn delayed(s: &Element, server: &str, stamp: Duration) -> Element {
    let mut s = s.clone();
    s.append_child(
        el("delay", NS_DELAY).with("from", server).with("stamp", format_stamp(stamp)).text_node("Offline Storage"),
    );
    s
}

#[test]
fn a_replay_inside_the_window_is_a_decreasing_timestamp_shown_marked() {
    let mut w = pair(15);
    w.send(ALICE, "bob@b.example", "now");
    assert_eq!(w.shown_by(BOB), [("now".to_owned(), Trust::Unverified)]);
    assert!(w.events.iter().all(|(_, e)| !matches!(e, Event::Alert { reason: "timestamp-decreasing", .. })));
    let s = w.last_e2e_to(BOB);
    // RFC 3923 §6.9's second check: not greater than a DateTime already received.
    w.now = NOW + Duration::from_secs(299);
    let (r, d) = w.replay(1, &s);
    let out = r.unwrap();
    assert_eq!(plaintexts(&out), ["now"]);
    assert_eq!(codes(&out), ["timestamp-decreasing"]);
    assert!(alerts(&out)[0].1.starts_with("decreasing timestamp (RFC 3923 §6.9)"), "{:?}", alerts(&out));
    // Case #3: shown, so no §7 error goes back.
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    // A newer message passes both checks.
    w.send(ALICE, "bob@b.example", "later");
    assert_eq!(w.shown_by(BOB).last().unwrap().0, "later");
    assert!(
        w.events.iter().all(|(_, e)| !matches!(e, Event::Alert { reason, .. } if reason.starts_with("timestamp"))),
        "{:?}",
        w.events
    );
    assert!(w.errors.is_empty(), "{:?}", w.errors);
}

#[test]
fn an_old_timestamp_is_shown_marked_with_what_our_server_claims() {
    let mut w = pair(16);
    w.send(ALICE, "bob@b.example", "held");
    let s = w.last_e2e_to(BOB);
    w.now = NOW + Duration::from_secs(301);
    // No delay stamp: nothing explains the age.
    let (r, d) = w.replay(1, &s);
    let out = r.unwrap();
    assert_eq!(plaintexts(&out), ["held"]);
    let a = alerts(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].0, "timestamp-too-old");
    assert!(a[0].1.starts_with("old timestamp (RFC 3923 §6.9)") && a[0].1.contains("no delay stamp"), "{}", a[0].1);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    // Our server's stamp is repeated as its claim; it changes nothing else: even a stamp
    // claiming it stored the message a second ago leaves it an "old timestamp".
    for stamp in [NOW, NOW + Duration::from_secs(300)] {
        let (r, _) = w.replay(1, &delayed(&s, "b.example", stamp));
        let out = r.unwrap();
        let a = alerts(&out);
        assert_eq!(plaintexts(&out), ["held"]);
        assert_eq!(codes(&out), ["timestamp-too-old"]);
        let claim = format!("b.example says it stored the message offline at {}", format_stamp(stamp));
        assert!(a[0].1.contains(&claim), "{}", a[0].1);
    }
    // Anyone else's <delay/> is not our server's word: not repeated.
    let (r, _) = w.replay(1, &delayed(&s, "a.example", NOW));
    assert!(alerts(&r.unwrap())[0].1.contains("no delay stamp"));
}

#[test]
fn a_fresh_delay_stamp_does_not_hide_a_replay() {
    // The server replays a message Bob already read, stamped as if it had just stored it: the
    // stamp changes nothing, the second check still marks it.
    let mut w = pair(17);
    w.send(ALICE, "bob@b.example", "pay once");
    let s = w.last_e2e_to(BOB);
    w.now = NOW + Duration::from_secs(60);
    let (r, _) = w.replay(1, &delayed(&s, "b.example", NOW + Duration::from_secs(59)));
    let out = r.unwrap();
    assert_eq!(codes(&out), ["timestamp-decreasing"]);
}

#[test]
fn a_future_timestamp_is_shown_marked() {
    let mut w = pair(18);
    w.now = NOW + Duration::from_secs(600);
    w.send(ALICE, "bob@b.example", "from the future");
    let s = w.last_e2e_to(BOB);
    // Bob's copy above arrived at the same time; here the same signed message reaches him
    // earlier than five minutes before its DateTime (the certificate is valid from NOW).
    w.now = NOW + Duration::from_secs(240);
    let (r, _) = w.replay(1, &s);
    let out = r.unwrap();
    assert_eq!(plaintexts(&out), ["from the future"]);
    assert_eq!(codes(&out), ["timestamp-in-future"]);
}

#[test]
fn the_second_check_is_per_signing_certificate() {
    // Alice's laptop signs with its own certificate and clock: a DateTime earlier than her
    // phone's newest is not a decreasing one.
    let mut w = World::new(19, &[(ALICE, honest()), (ALICE2, honest()), (BOB, honest())]);
    w.publish_all();
    w.now = NOW + Duration::from_secs(2);
    w.send(ALICE, "bob@b.example", "from the phone");
    w.now = NOW + Duration::from_secs(1);
    w.send(ALICE2, "bob@b.example", "from the laptop");
    let bob: Vec<String> = w.shown_by(BOB).into_iter().map(|(b, _)| b).collect();
    assert_eq!(bob, ["from the phone", "from the laptop"]);
    assert!(w.events.iter().all(|(_, e)| !matches!(e, Event::Alert { reason: "timestamp-decreasing", .. })));
}

#[test]
fn certificate_validity_is_checked_before_the_timestamps() {
    let mut w = pair(20);
    w.send(ALICE, "bob@b.example", "now");
    let s = w.last_e2e_to(BOB);
    w.now = NOW - Duration::from_secs(301);
    assert_eq!(w.replay(1, &s).0.unwrap_err().code(), "certificate-not-yet-valid");
}

#[test]
fn timestamps_increase_strictly_even_when_the_clock_does_not_move() {
    let mut w = pair(21);
    let mut stamps = Vec::new();
    for _ in 0..3 {
        stamps.push(w.devices[0].1.next_stamp(NOW));
    }
    assert!(stamps.windows(2).all(|p| p[0] < p[1]), "{stamps:?}");
}

#[test]
fn verification_and_trust_policies() {
    let mut w = pair(16);
    w.send(ALICE, "bob@b.example", "one");
    let oob = w.devices[0].1.out_of_band();
    let out = w.call(1, |e, cx| e.verify(cx, &bare(ALICE), &oob).unwrap());
    assert!(
        out.events.iter().any(|e| matches!(e, Event::Verification { result: VerificationResult::Match, .. }))
    );
    w.send(ALICE, "bob@b.example", "two");
    assert_eq!(w.shown_by(BOB).last().unwrap(), &("two".to_owned(), Trust::Verified));
    // A wrong fingerprint: mismatch, the certificate becomes untrusted and is not used.
    let wrong = OutOfBand { peer_says: vec!["00".repeat(32)] };
    let out = w.call(0, |e, cx| e.verify(cx, &bare(BOB), &wrong).unwrap());
    assert!(
        out.events
            .iter()
            .any(|e| matches!(e, Event::Verification { result: VerificationResult::Mismatch, .. }))
    );
    let before = w.wire.len();
    w.send(ALICE, "bob@b.example", "three");
    assert_eq!(w.wire.len(), before);
    assert!(w.events.iter().any(|(d, e)| *d == 0 && matches!(e, Event::Alert { reason: "not-sent", .. })));
    // Bob's messages to Alice are still read, flagged as untrusted.
    w.send(BOB, "alice@a.example", "four");
    assert_eq!(w.shown_by(ALICE).last().unwrap(), &("four".to_owned(), Trust::Untrusted));
    // Manual policy: nothing is trusted (or encrypted to) before verification.
    let manual = EngineConfig { trust: TrustPolicy::Manual, ..honest() };
    let mut w = World::new(17, &[(ALICE, manual), (BOB, honest())]);
    w.publish_all();
    w.send(ALICE, "bob@b.example", "x");
    assert!(w.wire.is_empty());
    w.send(BOB, "alice@a.example", "y");
    assert_eq!(w.shown_by(ALICE), [("y".to_owned(), Trust::Untrusted)]);
}

#[test]
fn stolen_keys_read_old_traffic_and_forging_is_impossible() {
    let mut w = pair(18);
    w.send(ALICE, "bob@b.example", "yesterday's secret");
    let s = w.last_e2e_to(BOB);
    let mut thief = w.devices[1].1.steal(Theft::LongTermKeys);
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    // A day later: the RFC's window no longer matters to whoever holds the key.
    let out = thief.receive(&mut Cx { rng: &mut rng, now: NOW + Duration::from_secs(86_400) }, &s).unwrap();
    assert_eq!(plaintexts(&out), ["yesterday's secret"]);
    assert!(thief.drain(&mut Cx { rng: &mut rng, now: NOW }).actions.is_empty());
    // Two years later, with every certificate expired: still readable. A full-state theft too.
    let later = NOW + 2 * pki::DEVICE_VALIDITY;
    assert_eq!(
        plaintexts(&thief.receive(&mut Cx { rng: &mut rng, now: later }, &s).unwrap()),
        ["yesterday's secret"]
    );
    let mut full = w.devices[1].1.steal(Theft::FullState);
    assert_eq!(
        plaintexts(&full.receive(&mut Cx { rng: &mut rng, now: later }, &s).unwrap()),
        ["yesterday's secret"]
    );
    let forged = w.call(1, |e, cx| e.forge(cx, &Jid::from(jid(ALICE)), "fake").unwrap());
    assert!(forged.is_none());
}

#[test]
fn a_plain_body_is_flagged() {
    let mut w = pair(19);
    let s = el("message", NS_CLIENT)
        .with("from", ALICE)
        .with("type", "chat")
        .child(text_el("body", NS_CLIENT, "hi"));
    let out = w.replay(1, &s).0.unwrap();
    assert!(out.events.iter().any(|e| matches!(e, Event::Alert { reason: "unencrypted", .. })));
    assert!(out.events.iter().any(|e| matches!(e, Event::Plaintext { trust: Trust::Unencrypted, .. })));
}

/// Seeded mutations of recorded stanzas, of the base64 CMS inside them, and of the DER bytes:
/// typed errors, never a panic, never a plaintext that differs from the original.
#[test]
fn mutated_smime_stanzas_never_panic() {
    let mut w = World::new(20, &[(ALICE, honest()), (BOB, honest()), (MALLORY, honest())]);
    w.publish_all();
    w.send(ALICE, "bob@b.example", "one");
    w.send(BOB, "alice@a.example", "two");
    let recorded: Vec<(usize, Element)> = w.wire.iter().map(|(_, t, s)| (*t, s.clone())).collect();
    let pep: Vec<Element> = w.pep.values().flat_map(|m| m.values().cloned()).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let mut codes = BTreeSet::new();
    for round in 0..400usize {
        let (target, stanza) = &recorded[round % recorded.len()];
        let mut s = stanza.clone();
        let e2e_text = s.get_child("e2e", NS_E2E).map(Element::text).unwrap_or_default();
        let mut der = unb64("e2e", &e2e_text).unwrap_or_default();
        match rng.next_u32() % 8 {
            0 if !der.is_empty() => {
                let i = (rng.next_u32() as usize) % der.len();
                der[i] ^= 1 << (rng.next_u32() % 8);
            }
            1 if !der.is_empty() => {
                let n = (rng.next_u32() as usize) % der.len();
                der.truncate(n);
            }
            2 => {
                let i = (rng.next_u32() as usize) % (der.len() + 1);
                let mut junk = vec![0u8; (rng.next_u32() % 40) as usize];
                rng.fill_bytes(&mut junk);
                der.splice(i..i, junk);
            }
            3 => {
                // Broken DER lengths: set a random byte to 0x84 (a four-byte length).
                if !der.is_empty() {
                    let i = (rng.next_u32() as usize) % der.len();
                    der[i] = 0x84;
                }
            }
            4 => {
                let e = s.get_child_mut("e2e", NS_E2E).unwrap();
                let _ = e.take_nodes();
                e.append_text(["", "====", "AAAA", "not base64 at all"][(rng.next_u32() % 4) as usize]);
                der.clear();
            }
            5 => s.set(
                "from",
                [MALLORY, "alice@a.example", "bob@b.example/x", "not a jid@@"][(rng.next_u32() % 4) as usize],
            ),
            6 => s.set("type", ["error", "chat", "groupchat"][(rng.next_u32() % 3) as usize]),
            _ => {
                // A pubsub result with a mutated certificate item.
                let mut item = pep[(rng.next_u32() as usize) % pep.len()].clone();
                let mut c = unb64("c", &item.text()).unwrap_or_default();
                if !c.is_empty() {
                    let i = (rng.next_u32() as usize) % c.len();
                    c[i] ^= 0xff;
                }
                let _ = item.take_nodes();
                item.append_text(b64(&c));
                s = el("iq", NS_CLIENT).with("type", "result").with("from", "alice@a.example").child(
                    el("pubsub", NS_PUBSUB).child(
                        el("items", NS_PUBSUB)
                            .with("node", NODE)
                            .child(el("item", NS_PUBSUB).with("id", "x").child(item)),
                    ),
                );
            }
        }
        if !der.is_empty()
            && let Some(e) = s.get_child_mut("e2e", NS_E2E)
        {
            let _ = e.take_nodes();
            e.append_text(b64(&der));
        }
        let (r, _) = w.replay(*target, &s);
        match r {
            Ok(out) => {
                for p in plaintexts(&out) {
                    assert!(["one", "two"].contains(&p.as_str()), "mutation produced {p:?}");
                }
            }
            Err(e) => {
                codes.insert(e.code());
            }
        }
    }
    assert!(codes.contains("malformed"), "{codes:?}");
    assert!(codes.len() >= 4, "{codes:?}");
}

#[test]
fn rfc_style_stanza_without_namespace_is_read_in_jabber_client() {
    let e = parse_xmpp_xml("<message from='juliet@example.com/balcony' to='romeo@example.net' xml:lang='en'>\n  <body>Wherefore art thou, Romeo?</body>\n</message>").unwrap();
    assert_eq!(e.get_child("body", NS_CLIENT).unwrap().text(), "Wherefore art thou, Romeo?");
    assert!(parse_xmpp_xml("<message><body>").is_err());
    assert!(parse_xmpp_xml("").is_err());
}

#[test]
fn wire_shapes() {
    let mut w = pair(22);
    w.send(ALICE, "bob@b.example", "hi");
    let s = w.last_e2e_to(BOB);
    let text = s.get_child("e2e", NS_E2E).unwrap().text();
    eprintln!("e2e base64 length {} for two recipients", text.len());
    eprintln!("{}", String::from(&s).replace(&text, "BASE64"));
    let mut bad = s.clone();
    bad.set("id", "m1");
    let e = bad.get_child_mut("e2e", NS_E2E).unwrap();
    let _ = e.take_nodes();
    e.append_text("AAAA");
    let (_, d) = w.replay(1, &bad);
    for a in &d.actions {
        if let Action::Send(s) = a {
            eprintln!("{}", String::from(s));
        }
    }
    let item = w.pep[&(bare(BOB), NODE.to_owned())].values().next().unwrap();
    eprintln!("{}", String::from(item).chars().take(160).collect::<String>());
    assert!(text.len() > 1000);
}

/// `Engine::forward`: Mallory, a legitimate correspondent of Alice, re-envelopes Alice's
/// signed message to Bob with Alice as the sender (Davis 2001). The stanza decrypts at Bob and
/// carries Alice's valid signature; only the signed CPIM `To:` gives it away.
#[test]
fn forward_is_caught_by_the_cpim_to_header() {
    let mut w = World::new(23, &[(ALICE, honest()), (BOB, honest()), (MALLORY, honest())]);
    w.publish_all();
    w.send(ALICE, "mallory@m.example", "I love you, Mallory");
    assert_eq!(w.shown_by(MALLORY).len(), 1, "{:?}", w.errors);
    let recorded = w.last_e2e_to(MALLORY);
    let m = w.idx(MALLORY);
    let b = w.idx(BOB);
    let to_bob = bare(BOB);
    // Mallory has never written to Bob: the first call only asks for his certificates.
    let out = w.call(m, |e, cx| e.forward(cx, &recorded, &to_bob, "ignored").unwrap().unwrap());
    assert!(out.events.is_empty());
    assert_eq!(out.actions, [Action::Fetch { owner: to_bob.clone(), node: NODE.into() }]);
    w.run(m, out);
    assert!(w.wire.iter().all(|(by, _, _)| *by != m), "nothing was sent yet");
    let out = w.call(m, |e, cx| e.forward(cx, &recorded, &to_bob, "ignored").unwrap().unwrap());
    let [Action::Send(forged)] = &out.actions[..] else { panic!("{out:?}") };
    assert_eq!(forged.attr("to"), Some("bob@b.example"));
    assert_eq!(forged.attr("type"), Some("chat"));
    let mut forged = forged.clone();
    forged.set("from", ALICE);

    // It really is for Bob, and inside is Alice's SignedData byte for byte, still valid.
    let opened = |stanza: &Element, i: usize, w: &mut World| {
        let der = unb64("e2e", &stanza.get_child("e2e", NS_E2E).unwrap().text()).unwrap();
        let (cert, key) = (w.devices[i].1.cert.clone().unwrap(), w.devices[i].1.key.clone());
        envelope::open(&der, &cert, &key, &mut w.rng).unwrap().1
    };
    let at_bob = opened(&forged, b, &mut w);
    assert_eq!(at_bob, opened(&recorded, m, &mut w), "the SignedData is forwarded unchanged");
    let signed = envelope::verify(&at_bob, &[]).unwrap();
    assert_eq!(signed.signer.fingerprint, w.devices[0].1.certificate().unwrap().fingerprint);
    let object = cpim::parse(core::str::from_utf8(&signed.content).unwrap()).unwrap();
    assert_eq!(object.to, [bare(MALLORY)]);

    // Bob's honest engine: decryption and signature pass (the §7 answer is <not-acceptable/>,
    // not <bad-request/>), the CPIM To check refuses it.
    let (r, d) = w.replay(b, &forged);
    assert_eq!(r.unwrap_err().code(), "cpim-to-mismatch");
    assert_eq!(error_condition(&d).as_deref(), Some("not-acceptable"));
    assert!(w.shown_by(BOB).is_empty());

    // A thief holding Mallory's stolen keys forwards the same way; garbage is a typed error.
    let mut thief = w.devices[m].1.steal(Theft::LongTermKeys);
    let mut rng = ChaCha20Rng::seed_from_u64(24);
    let mut cx = Cx { rng: &mut rng, now: NOW + Duration::from_secs(86_400) };
    let out = thief.forward(&mut cx, &recorded, &to_bob, "").unwrap().unwrap();
    let [Action::Send(again)] = &out.actions[..] else { panic!("{out:?}") };
    let mut again = again.clone();
    again.set("from", ALICE);
    assert_eq!(w.replay(b, &again).0.unwrap_err().code(), "cpim-to-mismatch");
    let plain = el("message", NS_CLIENT).with("from", ALICE).child(text_el("body", NS_CLIENT, "hi"));
    assert_eq!(thief.forward(&mut cx, &plain, &to_bob, "").unwrap_err().code(), "missing-element");
    // Not for Mallory: Alice's message to Bob cannot be opened with Mallory's key.
    w.send(ALICE, "bob@b.example", "for bob");
    let for_bob = w.last_e2e_to(BOB);
    assert_eq!(thief.forward(&mut cx, &for_bob, &bare(CAROL), "").unwrap_err().code(), "not-for-this-device");
}

// ---- review fixes: message types, PEP origin, eContentType, signed attributes as sent ------

/// Opens the SignedData Alice sent Bob in `s` (Bob's keys).
fn signed_data_in(w: &mut World, s: &Element) -> Vec<u8> {
    let der = unb64("e2e", &s.get_child("e2e", NS_E2E).unwrap().text()).unwrap();
    let b = w.idx(BOB);
    let (cert, key) = (w.devices[b].1.cert.clone().unwrap(), w.devices[b].1.key.clone());
    envelope::open(&der, &cert, &key, &mut w.rng).unwrap().1
}

/// Re-envelopes a SignedData to Bob as a message from Alice.
fn to_bob(w: &mut World, signed: &[u8]) -> Element {
    let bob_cert = w.devices[w.idx(BOB)].1.cert.clone().unwrap();
    let enveloped = envelope::envelope(signed, &[&bob_cert], &mut w.rng).unwrap();
    el("message", NS_CLIENT)
        .with("from", ALICE)
        .with("to", "bob@b.example")
        .with("type", "chat")
        .child(text_el("e2e", NS_E2E, b64(&enveloped)))
}

fn replace_once(haystack: &mut [u8], needle: &[u8], with: &[u8]) {
    assert_eq!(needle.len(), with.len());
    let at: Vec<usize> =
        haystack.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect();
    assert_eq!(at.len(), 1, "the bytes occur once");
    haystack[at[0]..at[0] + with.len()].copy_from_slice(with);
}

#[test]
fn groupchat_and_headline_e2e_is_ignored_without_an_answer() {
    let mut w = pair(30);
    w.send(ALICE, "bob@b.example", "one to one");
    assert_eq!(w.shown_by(BOB).len(), 1, "{:?}", w.errors);
    let s = w.last_e2e_to(BOB);
    let broken = modify_ciphertext(&s, |ct, _| {
        let n = ct.len();
        ct[n - 17] ^= 0x01;
    });
    for kind in ["groupchat", "headline"] {
        for stanza in [&s, &broken] {
            let mut t = stanza.clone();
            t.set("type", kind);
            let (r, d) = w.replay(1, &t);
            let out = r.unwrap();
            assert!(out.events.is_empty() && out.actions.is_empty(), "{kind}: {out:?}");
            assert!(d.actions.is_empty(), "{kind}: no §7 answer, {d:?}");
        }
    }
    // chat, normal, no type and a type we do not know (RFC 6121 §5.2.2: normal) are read.
    for kind in [Some("normal"), None, Some("x-unknown")] {
        let mut t = s.clone();
        match kind {
            Some(k) => t.set("type", k),
            None => t.unset("type"),
        }
        let (r, _) = w.replay(1, &t);
        assert_eq!(plaintexts(&r.unwrap()), ["one to one"], "{kind:?}");
        let mut t = broken.clone();
        if let Some(k) = kind {
            t.set("type", k);
        }
        let (r, d) = w.replay(1, &t);
        assert_eq!(r.unwrap_err().code(), "bad-padding");
        assert_eq!(error_condition(&d).as_deref(), Some("bad-request"));
    }
}

#[test]
fn pep_items_are_read_only_from_where_they_belong() {
    const BOB2: &str = "bob@b.example/phone";
    let mut w = World::new(31, &[(ALICE, honest()), (BOB, honest()), (BOB2, honest())]);
    let der_of = |w: &mut World, j: &str| {
        let i = w.idx(j);
        w.call(i, |e, cx| e.enrol_now(cx).unwrap().der.clone())
    };
    let alice_der = der_of(&mut w, ALICE);
    let bob2_der = der_of(&mut w, BOB2);
    let b = w.idx(BOB);
    let items = |der: &[u8], ns: &str| {
        el("items", ns).with("node", NODE).child(el("item", ns).with("id", "x").child(text_el(
            "certificate",
            NODE,
            b64(der),
        )))
    };
    let result = |from: Option<&str>, kind: &str, der: &[u8]| {
        let mut iq = el("iq", NS_CLIENT)
            .with("type", kind)
            .child(el("pubsub", NS_PUBSUB).child(items(der, NS_PUBSUB)));
        if let Some(f) = from {
            iq.set("from", f);
        }
        iq
    };
    let event = |name: &str, from: Option<&str>, der: &[u8]| {
        let mut m =
            el(name, NS_CLIENT).child(el("event", NS_PUBSUB_EVENT).child(items(der, NS_PUBSUB_EVENT)));
        if let Some(f) = from {
            m.set("from", f);
        }
        m
    };
    let bad_from = "@b.example";
    assert!(bad_from.parse::<Jid>().is_err());
    let message_with_pubsub = el("message", NS_CLIENT)
        .with("from", "alice@a.example")
        .child(el("pubsub", NS_PUBSUB).child(items(&alice_der, NS_PUBSUB)));
    let ignored = [
        // A `from` that does not parse is not our own account.
        result(Some(bad_from), "result", &bob2_der),
        event("message", Some(bad_from), &bob2_der),
        // Items outside an `<iq type='result'/>` are no fetch result.
        result(Some("alice@a.example"), "set", &alice_der),
        result(Some("alice@a.example"), "error", &alice_der),
        message_with_pubsub,
        // Notifications come in messages only.
        event("iq", Some("alice@a.example"), &alice_der),
        event("presence", Some("alice@a.example"), &alice_der),
    ];
    for stanza in &ignored {
        let (r, d) = w.replay(b, stanza);
        let out = r.unwrap();
        assert!(out.events.is_empty() && out.actions.is_empty(), "{out:?} for {}", String::from(stanza));
        assert!(d.actions.is_empty());
        let bob = &w.devices[b].1;
        let read = bob.dir.is_read(&bare(ALICE), NODE) || bob.dir.is_read(&bare(BOB), NODE);
        assert!(bob.trust.is_empty() && !read, "{}", String::from(stanza));
    }
    // Accepted: a notification in a message (no `from`: our own account), an iq result.
    let (r, _) = w.replay(b, &event("message", None, &bob2_der));
    assert!(
        r.unwrap().events.iter().any(|e| matches!(e, Event::TrustChanged { peer, .. } if *peer == bare(BOB)))
    );
    assert!(!w.devices[b].1.dir.is_read(&bare(BOB), NODE), "a notification is not the whole node");
    let (r, _) = w.replay(b, &result(Some("alice@a.example"), "result", &alice_der));
    assert!(
        r.unwrap()
            .events
            .iter()
            .any(|e| matches!(e, Event::TrustChanged { peer, .. } if *peer == bare(ALICE)))
    );
    assert!(w.devices[b].1.dir.is_read(&bare(ALICE), NODE));
}

/// RFC 3923 signs a CPIM object: the SignedData's eContentType must be id-data, even when the
/// signer's content-type attribute agrees with another type.
#[test]
fn a_signed_content_type_other_than_id_data_is_malformed() {
    use cms::signed_data::{SignedData, SignerInfos};
    use der::asn1::SetOfVec;
    use rsa::Pkcs1v15Sign;
    use sha2::{Digest, Sha256};
    let mut w = pair(32);
    w.send(ALICE, "bob@b.example", "typed");
    let s = w.last_e2e_to(BOB);
    let signed = signed_data_in(&mut w, &s);
    let other = envelope::ID_ENVELOPED_DATA;
    let ci = ContentInfo::from_der(&signed).unwrap();
    let mut sd: SignedData = ci.content.decode_as().unwrap();
    sd.encap_content_info.econtent_type = other;
    let mut si = sd.signer_infos.0.iter().next().unwrap().clone();
    let attrs: Vec<x509_cert::attr::Attribute> = si
        .signed_attrs
        .as_ref()
        .unwrap()
        .iter()
        .map(|a| {
            let mut a = a.clone();
            if a.oid.to_string() == "1.2.840.113549.1.9.3" {
                a.values = SetOfVec::try_from(vec![Any::from(other)]).unwrap();
            }
            a
        })
        .collect();
    let attrs = SetOfVec::try_from(attrs).unwrap();
    let key = w.devices[0].1.key.clone();
    let sig = key.sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(attrs.to_der().unwrap())).unwrap();
    si.signed_attrs = Some(attrs);
    si.signature = OctetString::new(sig).unwrap();
    sd.signer_infos = SignerInfos(SetOfVec::try_from(vec![si]).unwrap());
    let resigned = ContentInfo { content_type: ci.content_type, content: Any::encode_from(&sd).unwrap() }
        .to_der()
        .unwrap();
    let err = envelope::verify(&resigned, &[]).unwrap_err();
    assert_eq!((err.code(), format!("{err}").contains("eContentType")), ("malformed", true), "{err}");
    let m = to_bob(&mut w, &resigned);
    let (r, d) = w.replay(1, &m);
    assert_eq!(r.unwrap_err().code(), "malformed");
    assert_eq!(error_condition(&d).as_deref(), Some("not-acceptable"));
    // The untouched SignedData still verifies.
    assert!(envelope::verify(&signed, &[]).is_ok());
}

/// RFC 5652 §5.4: the signature covers the signed attributes as the signer encoded them. A
/// signer that does not sort them (BER habits) must still verify: the bytes are taken from
/// the input, not re-encoded (which would sort them).
#[test]
fn signed_attributes_are_verified_as_sent() {
    use cms::signed_data::SignedData;
    use der::asn1::AnyRef;
    use rsa::Pkcs1v15Sign;
    use sha2::{Digest, Sha256};
    let mut w = pair(33);
    w.send(ALICE, "bob@b.example", "in any order");
    let s = w.last_e2e_to(BOB);
    let mut signed = signed_data_in(&mut w, &s);
    let sd: SignedData = ContentInfo::from_der(&signed).unwrap().content.decode_as().unwrap();
    let si = sd.signer_infos.0.iter().next().unwrap().clone();
    let encoded: Vec<Vec<u8>> =
        si.signed_attrs.as_ref().unwrap().iter().map(|a| a.to_der().unwrap()).collect();
    assert_eq!(encoded.len(), 3);
    let sorted: Vec<u8> = encoded.concat();
    let reversed: Vec<u8> = encoded.iter().rev().flatten().copied().collect();
    assert_ne!(sorted, reversed);
    replace_once(&mut signed, &sorted, &reversed);
    let as_sent = AnyRef::new(der::Tag::Set, &reversed).unwrap().to_der().unwrap();
    let key = w.devices[0].1.key.clone();
    let sig = key.sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(&as_sent)).unwrap();
    replace_once(&mut signed, si.signature.as_bytes(), &sig);
    // The decoder sorts: a re-encoding is not what was signed.
    let again: SignedData = ContentInfo::from_der(&signed).unwrap().content.decode_as().unwrap();
    assert_ne!(
        again.signer_infos.0.iter().next().unwrap().signed_attrs.as_ref().unwrap().to_der().unwrap(),
        as_sent
    );
    let v = envelope::verify(&signed, &[]).unwrap();
    assert!(String::from_utf8(v.content).unwrap().contains("in any order"));
    let m = to_bob(&mut w, &signed);
    let (r, _) = w.replay(1, &m);
    assert_eq!(plaintexts(&r.unwrap()), ["in any order"]);
    // Any change to the attributes as sent still breaks the signature.
    let mut swapped: Vec<u8> = encoded[1].clone();
    swapped.extend(&encoded[2]);
    swapped.extend(&encoded[0]);
    replace_once(&mut signed, &reversed, &swapped);
    assert_eq!(envelope::verify(&signed, &[]).unwrap_err().code(), "bad-signature");
}

// ---- presence (§4) and iq (§5), message parts (XEP-0210 §4.1) ---------------------------------

/// The parts device `j` was shown, by stanza kind, with their text.
fn parts_shown(w: &World, j: &str) -> Vec<(&'static str, String)> {
    let i = w.idx(j);
    w.events
        .iter()
        .filter(|(d, _)| *d == i)
        .filter_map(|(_, e)| if let Event::Parts { stanza, parts, .. } = e { Some((*stanza, parts)) } else { None })
        .flat_map(|(stanza, parts)| parts.iter().map(move |p| (stanza, String::from(p))))
        .collect()
}

fn note_payload() -> Element {
    text_el("query", "urn:example:notes", "note about the capybara")
}

#[test]
fn message_parts_presence_status_and_iq_payload_round_trip_sealed() {
    let mut w = pair(40);
    let a = w.idx(ALICE);
    let content = Content {
        body: "meet me".into(),
        parts: vec![text_el("subject", NS_CLIENT, "tapir census"), el("composing", crate::content::NS_CHATSTATES)],
    };
    let out = w.call(a, |e, cx| e.send_message(cx, &bare(BOB), &content).unwrap());
    w.run(a, out);
    let out = w.call(a, |e, cx| e.send_presence(cx, &Jid::from(bare(BOB)), "walking the quokka").unwrap());
    w.run(a, out);
    let out = w.call(a, |e, cx| e.send_iq(cx, &jid(BOB), &note_payload()).unwrap());
    w.run(a, out);
    assert!(w.errors.is_empty(), "{:?}", w.errors);
    assert_eq!(w.shown_by(BOB), [("meet me".to_owned(), Trust::Unverified)]);
    let shown = parts_shown(&w, BOB);
    let kinds: Vec<&str> = shown.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["message", "message", "presence", "iq"], "{shown:?}");
    assert!(shown[0].1.contains("tapir census") && shown[1].1.contains("composing"));
    assert!(shown[2].1.contains(">walking the quokka<") && shown[2].1.contains("jabber:client"), "{shown:?}");
    assert!(shown[3].1.contains("note about the capybara") && shown[3].1.contains("urn:example:notes"));
    // Nothing of it in clear; the presence is directed (§4.1 step 3), the iq answered.
    for (_, _, s) in &w.wire {
        let text = String::from(s);
        for secret in ["tapir", "composing", "quokka", "capybara", "urn:example:notes"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    let presence = w.wire.iter().find(|(_, _, s)| s.name() == "presence").map(|(_, _, s)| s.clone()).unwrap();
    assert_eq!(presence.attr("to"), Some("bob@b.example"));
    assert!(presence.get_child("e2e", NS_E2E).is_some());
    assert!(w.wire.iter().any(|(by, to, s)| *by == 1
        && *to == a
        && s.name() == "iq"
        && s.attr("type") == Some("result")));
    // Alice takes Bob's answer without a word.
    assert!(w.events.iter().all(|(d, e)| *d != a || !matches!(e, Event::Alert { .. })), "{:?}", w.events);
}

#[test]
fn presence_and_iq_wait_for_the_certificates_then_go() {
    let mut w = pair(41);
    let a = w.idx(ALICE);
    // Nothing of Bob's read yet: the first call fetches, the fetch answer releases both.
    let out = w.call(a, |e, cx| e.send_presence(cx, &Jid::from(jid(BOB)), "here").unwrap());
    assert!(out.actions.iter().any(|a| matches!(a, Action::Fetch { node, .. } if node == NODE)), "{out:?}");
    assert!(!out.actions.iter().any(|a| matches!(a, Action::Send(_))));
    let out2 = w.call(a, |e, cx| e.send_iq(cx, &jid(BOB), &note_payload()).unwrap());
    w.run(a, out);
    w.run(a, out2);
    let kinds: Vec<&str> = parts_shown(&w, BOB).iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["presence", "iq"]);
    // An account without certificates: given up with `not-sent`.
    let out = w.call(a, |e, cx| e.send_presence(cx, &Jid::from(bare(CAROL)), "x").unwrap());
    w.run(a, out);
    assert!(w.events.iter().any(|(d, e)| *d == a && matches!(e, Event::Alert { reason: "not-sent", .. })));
}

#[test]
fn a_tampered_presence_or_iq_is_refused_and_a_replayed_one_marked() {
    let mut w = pair(42);
    let a = w.idx(ALICE);
    let out = w.call(a, |e, cx| e.send_presence(cx, &Jid::from(bare(BOB)), "original").unwrap());
    w.run(a, out);
    let out = w.call(a, |e, cx| e.send_iq(cx, &jid(BOB), &note_payload()).unwrap());
    w.run(a, out);
    let presence = w.wire.iter().find(|(_, _, s)| s.name() == "presence").unwrap().2.clone();
    let iq = w.wire.iter().rev().find(|(_, _, s)| s.name() == "iq" && s.attr("type") == Some("set")).unwrap().2.clone();
    let tamper = |s: &Element| {
        let mut s = s.clone();
        let e2e = s.get_child_mut("e2e", NS_E2E).unwrap();
        let mut der = unb64("e2e", &e2e.text()).unwrap();
        let n = der.len();
        der[n - 5] ^= 0x01;
        let _ = e2e.take_nodes();
        e2e.append_text(b64(&der));
        s
    };
    assert_eq!(presence.name(), "presence");
    let (r, d) = w.replay(1, &tamper(&presence));
    assert_eq!(r.unwrap_err().code(), "bad-padding");
    assert!(d.actions.is_empty(), "no §7 answer to presence");
    let (r, d) = w.replay(1, &tamper(&iq));
    assert_eq!(r.unwrap_err().code(), "bad-padding");
    let answer = d.actions.iter().find_map(|x| if let Action::Send(s) = x { Some(s.clone()) } else { None }).unwrap();
    assert_eq!((answer.name(), answer.attr("type"), answer.attr("to")), ("iq", Some("error"), Some(ALICE)));
    assert_eq!(error_condition(&d).as_deref(), Some("bad-request"));
    // §6.9 for presence too: the same PIDF again is a "decreasing timestamp", shown marked.
    let (r, _) = w.replay(1, &presence);
    let out = r.unwrap();
    assert_eq!(codes(&out), ["timestamp-decreasing"]);
    assert!(out.events.iter().any(|e| matches!(e, Event::Parts { stanza: "presence", .. })));
    w.now = NOW + Duration::from_secs(3600);
    let (r, _) = w.replay(1, &iq);
    assert_eq!(codes(&r.unwrap()), ["timestamp-too-old"]);
}

#[test]
fn a_secured_stanza_of_another_kind_or_entity_is_refused() {
    let mut w = pair(43);
    let a = w.idx(ALICE);
    let out = w.call(a, |e, cx| e.send_iq(cx, &jid(BOB), &note_payload()).unwrap());
    w.run(a, out);
    let iq = w.wire.iter().rev().find(|(_, _, s)| s.name() == "iq" && s.attr("type") == Some("set")).unwrap().2.clone();
    // Alice's signed iq, re-enveloped into a message: not a message she wrote.
    let signed = signed_data_in(&mut w, &iq);
    let as_message = to_bob(&mut w, &signed);
    let (r, d) = w.replay(1, &as_message);
    let e = r.unwrap_err();
    assert_eq!(e.code(), "malformed", "{e}");
    assert_eq!(error_condition(&d).as_deref(), Some("not-acceptable"));
    // Alice's signed presence, claimed by Carol's stanza: the PIDF entity names Alice.
    let out = w.call(a, |e, cx| e.send_presence(cx, &Jid::from(bare(BOB)), "mine").unwrap());
    w.run(a, out);
    let mut presence = w.last_e2e_to(BOB);
    presence.set("from", MALLORY);
    let (r, _) = w.replay(1, &presence);
    // The signer's certificate names Alice, not the stanza's sender: refused before the PIDF.
    assert_eq!(r.unwrap_err().code(), "certificate-mismatch");
}
