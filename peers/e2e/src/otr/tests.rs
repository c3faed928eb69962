#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use num_bigint::BigUint;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::crypto::{self, PrivateKey};
use super::*;
use crate::{Action, Wire as _};

fn cx(r: &mut ChaCha20Rng) -> Cx<'_> {
    Cx { rng: r, now: crate::time::EPOCH }
}

/// Two OTR devices and a wire between them: every stanza one sends is handed to the other
/// (with a `from`), until nothing moves.
pub(super) struct Pair {
    pub alice: Otr,
    pub bob: Otr,
    pub rng: ChaCha20Rng,
    /// Every stanza that crossed, in order, with its direction (true: Alice → Bob).
    pub wire: Vec<(bool, Element)>,
    pub shown: Vec<(bool, String)>,
    pub events: Vec<(bool, Event)>,
    pub errors: Vec<(bool, &'static str)>,
}

pub(super) const ALICE: &str = "alice@a.example/phone";
pub(super) const BOB: &str = "bob@b.example/laptop";

impl Pair {
    /// Both users write at once ("from alice", "from bob"): what each would send.
    pub fn both_send(&mut self) -> (Output, Output) {
        let (a, b): (BareJid, BareJid) = ("alice@a.example".parse().unwrap(), "bob@b.example".parse().unwrap());
        let mut rng = self.rng.clone();
        let out_a = self.alice.send(&mut cx(&mut rng), &b, "from alice").unwrap();
        let out_b = self.bob.send(&mut cx(&mut rng), &a, "from bob").unwrap();
        self.rng = rng;
        (out_a, out_b)
    }

    pub fn new(seed: u64, config: OtrConfig) -> Pair {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let secret =
            |peer: &str| BTreeMap::from([(peer.parse::<BareJid>().unwrap(), "amber birch".to_owned())]);
        let alice = Otr::new(ALICE.parse().unwrap(), &mut rng, config).with_secrets(secret("bob@b.example"));
        let bob = Otr::new(BOB.parse().unwrap(), &mut rng, config).with_secrets(secret("alice@a.example"));
        Pair { alice, bob, rng, wire: vec![], shown: vec![], events: vec![], errors: vec![] }
    }

    fn engine(&mut self, alice: bool) -> &mut Otr {
        if alice { &mut self.alice } else { &mut self.bob }
    }

    /// Delivers `out` from one side, and everything that follows.
    pub fn run(&mut self, from_alice: bool, out: Output) {
        let mut queue: Vec<(bool, Element)> = Vec::new();
        self.collect(from_alice, out, &mut queue);
        self.run_all(queue);
    }

    /// Delivers the queued stanzas in order, and everything that follows.
    pub fn run_all(&mut self, mut queue: Vec<(bool, Element)>) {
        let mut i = 0;
        while i < queue.len() {
            let (by_alice, mut stanza) = queue[i].clone();
            i += 1;
            stanza.set("from", if by_alice { ALICE } else { BOB });
            self.wire.push((by_alice, stanza.clone()));
            let mut rng = self.rng.clone();
            let result = self.engine(!by_alice).receive(&mut cx(&mut rng), &stanza);
            let left = self.engine(!by_alice).drain(&mut cx(&mut rng));
            self.rng = rng;
            match result {
                Ok(out) => self.collect(!by_alice, out, &mut queue),
                Err(e) => self.errors.push((!by_alice, e.code())),
            }
            self.collect(!by_alice, left, &mut queue);
        }
    }

    fn collect(&mut self, by_alice: bool, out: Output, queue: &mut Vec<(bool, Element)>) {
        for a in out.actions {
            if let Action::Send(s) = a {
                queue.push((by_alice, s));
            }
        }
        for e in out.events {
            if let Event::Plaintext { body, .. } = &e {
                self.shown.push((by_alice, body.clone()));
            }
            self.events.push((by_alice, e));
        }
    }

    pub fn send(&mut self, from_alice: bool, body: &str) {
        let to: BareJid = if from_alice { "bob@b.example" } else { "alice@a.example" }.parse().unwrap();
        let mut rng = self.rng.clone();
        let out = self.engine(from_alice).send(&mut cx(&mut rng), &to, body).unwrap();
        self.rng = rng;
        self.run(from_alice, out);
    }

    pub fn verify(&mut self, from_alice: bool) {
        let to: BareJid = if from_alice { "bob@b.example" } else { "alice@a.example" }.parse().unwrap();
        let mut rng = self.rng.clone();
        let oob = OutOfBand { peer_says: vec![] };
        let out = self.engine(from_alice).verify(&mut cx(&mut rng), &to, &oob).unwrap();
        self.rng = rng;
        self.run(from_alice, out);
    }

    pub fn shown_by(&self, alice: bool) -> Vec<String> {
        self.shown.iter().filter(|(a, _)| *a == alice).map(|(_, b)| b.clone()).collect()
    }
}

#[test]
fn dsa_parameters_are_sound() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let key = PrivateKey::generate(&mut rng);
    let PublicKeyParts { p, q, g } = parts(&key);
    assert_eq!(p.bits(), 1024);
    assert_eq!(q.bits(), 160);
    assert_eq!((&p - 1u32) % &q, BigUint::default(), "q divides p - 1");
    assert_eq!(g.modpow(&q, &p), BigUint::from(1u32), "g has order q");
    for n in [&p, &q] {
        assert!(probably_prime(n, &mut rng));
    }
}

struct PublicKeyParts {
    p: BigUint,
    q: BigUint,
    g: BigUint,
}

fn parts(key: &PrivateKey) -> PublicKeyParts {
    PublicKeyParts { p: key.public.p.clone(), q: key.public.q.clone(), g: key.public.g.clone() }
}

/// Miller–Rabin with 32 random bases.
fn probably_prime(n: &BigUint, rng: &mut ChaCha20Rng) -> bool {
    let one = BigUint::from(1u32);
    let n1 = n - &one;
    let s = n1.trailing_zeros().unwrap_or(0);
    let d = &n1 >> s;
    'bases: for _ in 0..32 {
        let a = crypto::random_below(rng, &n1) + &one;
        let mut x = a.modpow(&d, n);
        if x == one || x == n1 {
            continue;
        }
        for _ in 1..s {
            x = x.modpow(&BigUint::from(2u32), n);
            if x == n1 {
                continue 'bases;
            }
        }
        return false;
    }
    true
}

#[test]
fn dsa_signs_and_verifies() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let key = PrivateKey::generate(&mut rng);
    let m = [7u8; 32];
    let sig = key.sign(&m, &mut rng);
    key.public.verify(&m, &sig).unwrap();
    let mut bad = sig.clone();
    bad[3] ^= 1;
    assert_eq!(key.public.verify(&m, &bad).unwrap_err().code(), "bad-signature");
    assert_eq!(key.public.verify(&[8u8; 32], &sig).unwrap_err().code(), "bad-signature");
}

#[test]
fn require_policy_ake_then_both_ways_with_key_rotation() {
    let mut p = Pair::new(3, OtrConfig::default());
    p.send(true, "hello bob");
    assert_eq!(p.shown_by(false), ["hello bob"], "errors: {:?}", p.errors);
    // The first stanza was a Query, the message itself left only encrypted.
    let bodies: Vec<String> =
        p.wire.iter().filter_map(|(_, s)| s.get_child("body", NS_CLIENT).map(|b| b.text())).collect();
    assert_eq!(bodies[0], "?OTRv3?");
    assert!(bodies.iter().all(|b| !b.contains("hello bob")));
    for i in 0..6 {
        p.send(i % 2 == 0, &format!("message {i}"));
    }
    assert_eq!(p.shown_by(false), ["hello bob", "message 0", "message 2", "message 4"]);
    assert_eq!(p.shown_by(true), ["message 1", "message 3", "message 5"]);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    // Keys rotated, so MAC keys were revealed on the wire.
    let revealed = p.wire.iter().any(|(_, s)| {
        let body = s.get_child("body", NS_CLIENT).map(|b| b.text()).unwrap_or_default();
        match wire::classify(&body) {
            Ok(Text::Encoded(bytes)) => {
                matches!(wire::decode(&bytes), Ok((_, Message::Data(d))) if !d.old_mac_keys.is_empty())
            }
            _ => false,
        }
    });
    assert!(revealed);
}

#[test]
fn smp_succeeds_between_the_real_peers() {
    let mut p = Pair::new(4, OtrConfig::default());
    p.send(true, "hi");
    p.verify(true);
    let results: Vec<(bool, VerificationResult)> = p
        .events
        .iter()
        .filter_map(
            |(a, e)| if let Event::Verification { result, .. } = e { Some((*a, *result)) } else { None },
        )
        .collect();
    assert_eq!(
        results,
        [(false, VerificationResult::Match), (true, VerificationResult::Match)],
        "{:?}",
        p.errors
    );
    p.send(false, "after smp");
    let trust = p.events.iter().rev().find_map(|(a, e)| match e {
        Event::Plaintext { trust, .. } if *a => Some(*trust),
        _ => None,
    });
    assert_eq!(trust, Some(Trust::Verified));
}

#[test]
fn smp_fails_on_different_secrets() {
    let mut p = Pair::new(5, OtrConfig::default());
    p.send(true, "hi");
    // Bob's user types another answer: make his phrase differ by giving him another JID view.
    let tag = Otr::best(p.alice.peers.get(&"bob@b.example".parse::<BareJid>().unwrap()).unwrap()).unwrap();
    let inst = p
        .alice
        .peers
        .get_mut(&"bob@b.example".parse::<BareJid>().unwrap())
        .unwrap()
        .instances
        .get_mut(&tag)
        .unwrap();
    let MsgState::Encrypted(session) = &inst.msg else { panic!() };
    let x = smp::secret(
        &p.alice.key.public.fingerprint(),
        &session.their_pub.fingerprint(),
        &session.ssid,
        "wrong",
    );
    let tlv = smp::start(&mut inst.smp, x, &mut p.rng);
    let mut out = Output::default();
    let bob: BareJid = "bob@b.example".parse().unwrap();
    p.alice.send_data(&bob, tag, "", &[tlv], wire::IGNORE_UNREADABLE, &mut out).unwrap();
    p.run(true, out);
    let results: Vec<VerificationResult> = p
        .events
        .iter()
        .filter_map(|(_, e)| if let Event::Verification { result, .. } = e { Some(*result) } else { None })
        .collect();
    assert_eq!(results, [VerificationResult::Mismatch, VerificationResult::Mismatch]);
}

#[test]
fn fragments_stay_under_the_limit_and_reassemble() {
    let config = OtrConfig { policy: OtrPolicy::Require, max_message: Some(140) };
    let mut p = Pair::new(6, config);
    p.send(true, &"a long message ".repeat(20));
    p.send(false, "short");
    assert_eq!(p.shown_by(false), ["a long message ".repeat(20)], "{:?}", p.errors);
    assert_eq!(p.shown_by(true), ["short"]);
    for (_, s) in &p.wire {
        let body = s.get_child("body", NS_CLIENT).unwrap().text();
        assert!(body.len() <= 140, "{} bytes: {body}", body.len());
    }
    assert!(p.wire.len() > 10);
}

#[test]
fn opportunistic_leaks_the_first_message_then_encrypts() {
    let config = OtrConfig { policy: OtrPolicy::Opportunistic, max_message: None };
    let mut p = Pair::new(7, config);
    p.send(true, "first");
    p.send(true, "second");
    let bodies: Vec<String> =
        p.wire.iter().filter_map(|(_, s)| s.get_child("body", NS_CLIENT).map(|b| b.text())).collect();
    assert!(bodies[0].starts_with("first\x20\x09"), "{:?}", bodies[0]);
    assert!(bodies.iter().skip(1).all(|b| !b.contains("second")));
    assert_eq!(p.shown_by(false), ["first", "second"]);
}

#[test]
fn replayed_and_tampered_data_messages_are_rejected() {
    let mut p = Pair::new(8, OtrConfig::default());
    p.send(true, "one");
    let last = p.wire.iter().rev().find(|(a, _)| *a).unwrap().1.clone();
    let before = p.shown_by(false).len();
    let mut rng = p.rng.clone();
    assert_eq!(p.bob.receive(&mut cx(&mut rng), &last).unwrap_err().code(), "replayed-counter");
    let mut tampered = last.clone();
    let body = tampered.get_child("body", NS_CLIENT).unwrap().text();
    let mut bytes = match wire::classify(&body).unwrap() {
        Text::Encoded(b) => b,
        other => panic!("{other:?}"),
    };
    let n = bytes.len();
    bytes[n - 25] ^= 1; // inside the encrypted message (then the MAC and the old-keys DATA)
    let body_el = tampered.get_child_mut("body", NS_CLIENT).unwrap();
    let _ = body_el.take_nodes();
    body_el.append_text(wire::armor(&bytes));
    let e = p.bob.receive(&mut cx(&mut rng), &tampered).unwrap_err();
    assert_eq!(e.code(), "bad-mac", "{e}");
    // The error is answered with an OTR Error Message.
    let left = p.bob.drain(&mut cx(&mut rng));
    assert_eq!(left.actions.len(), 2);
    assert_eq!(p.shown_by(false).len(), before);
}

#[test]
fn simultaneous_queries_settle_on_one_session() {
    let mut p = Pair::new(9, OtrConfig::default());
    let (out_a, out_b) = p.both_send();
    p.run(true, out_a);
    p.run(false, out_b);
    assert_eq!(p.shown_by(false), ["from alice"], "{:?}", p.errors);
    assert_eq!(p.shown_by(true), ["from bob"]);
}

/// Once keys rotate, the MAC keys of earlier messages appear in the transcript, and a third
/// party can check that they verify those messages: anyone could have made them.
#[test]
fn revealed_mac_keys_make_the_transcript_forgeable_by_anyone() {
    let mut p = Pair::new(12, OtrConfig::default());
    for i in 0..6 {
        p.send(i % 2 == 0, &format!("message {i}"));
    }
    let bodies: Vec<(String, String)> =
        p.wire.iter().map(|(a, s)| (a.to_string(), s.get_child("body", NS_CLIENT).unwrap().text())).collect();
    let (forgeable, total) = forgeable_by_anyone(&bodies);
    assert_eq!(total, 6);
    assert!(forgeable >= 3, "{forgeable} of {total}");
    // Before any rotation nothing is public yet.
    assert_eq!(forgeable_by_anyone(&bodies[..5]).0, 0);
}

/// Both users start at once: the two Queries cross, then the two D-H Commits cross, and the
/// spec's hashed-g^x comparison settles on one AKE.
#[test]
fn crossing_commits_settle_on_one_ake() {
    let mut p = Pair::new(14, OtrConfig::default());
    let (out_a, out_b) = p.both_send();
    let mut queue = Vec::new();
    p.collect(true, out_a, &mut queue);
    p.collect(false, out_b, &mut queue);
    p.run_all(queue);
    assert_eq!(p.shown_by(false), ["from alice"], "{:?}", p.errors);
    assert_eq!(p.shown_by(true), ["from bob"]);
}

/// A second AKE with an instance we already know (the peer asks again) completes, and the
/// conversation goes on under the new keys.
#[test]
fn a_second_ake_with_a_known_instance_completes() {
    let mut p = Pair::new(15, OtrConfig::default());
    p.send(true, "first");
    let query = el("message", NS_CLIENT).with("to", ALICE).child(text_el("body", NS_CLIENT, "?OTRv3?"));
    p.run_all(vec![(false, query)]);
    p.send(true, "second");
    p.send(false, "third");
    assert_eq!(p.shown_by(false), ["first", "second"], "{:?}", p.errors);
    assert_eq!(p.shown_by(true), ["third"]);
    let sessions =
        p.events.iter().filter(|(_, e)| matches!(e, Event::Alert { reason: "otr-session", .. })).count();
    assert_eq!(sessions, 4);
}

#[test]
fn the_recipient_can_forge_a_message_from_the_sender() {
    let mut p = Pair::new(10, OtrConfig::default());
    p.send(true, "real");
    let mut rng = p.rng.clone();
    crate::testing::reads_own_forgery(&mut p.bob, &mut rng, &ALICE.parse().unwrap());
}

/// Fragments nested in fragments are refused, not followed.
#[test]
fn nested_fragments_are_refused() {
    let mut p = Pair::new(13, OtrConfig::default());
    let mut body = String::from("?OTR:AAMD.");
    for _ in 0..1000 {
        body = format!("?OTR|00000100|00000000,00001,00001,{body},");
    }
    let stanza = el("message", NS_CLIENT)
        .with("from", ALICE)
        .with("type", "chat")
        .child(text_el("body", NS_CLIENT, body));
    let mut rng = p.rng.clone();
    assert_eq!(p.bob.receive(&mut cx(&mut rng), &stanza).unwrap_err().code(), "malformed");
}

/// §"Transmitting Fragments": the v2 form, `?OTR,k,n,piece,`, without instance tags — how
/// libotr 4.1 fragments the Query text it sends before any tags are known — is reassembled
/// like the v3 form: Bob answers the whole Query with a D-H Commit. Nested v2 fragments are
/// refused too.
#[test]
fn v2_fragments_are_reassembled() {
    let mut p = Pair::new(14, OtrConfig::default());
    let query = "?OTRv3? Alice has requested an Off-the-Record private conversation.";
    let (a, b) = query.split_at(20);
    let stanza = |body: String| {
        el("message", NS_CLIENT).with("from", ALICE).with("type", "chat").child(text_el("body", NS_CLIENT, body))
    };
    let mut rng = p.rng.clone();
    let first = p.bob.receive(&mut cx(&mut rng), &stanza(format!("?OTR,1,2,{a},"))).unwrap();
    assert!(first.actions.is_empty() && first.events.is_empty(), "{first:?}");
    let second = p.bob.receive(&mut cx(&mut rng), &stanza(format!("?OTR,2,2,{b},"))).unwrap();
    let sent: Vec<String> = second
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(s) => s.get_child("body", NS_CLIENT).map(|b| b.text()),
            _ => None,
        })
        .collect();
    assert!(sent.iter().any(|b| b.starts_with("?OTR:AAMC")), "a D-H Commit answers the Query: {sent:?}");
    let nested = format!("?OTR,1,1,?OTR,1,1,{query},,");
    assert_eq!(p.bob.receive(&mut cx(&mut rng), &stanza(nested)).unwrap_err().code(), "malformed");
}

/// Seeded damage to every kind of OTR message on the wire (AKE, data, SMP, fragments):
/// typed errors or nothing, never a panic.
#[test]
fn mutated_otr_messages_never_panic() {
    // Whole messages here (fragments are damaged by the junk prefixes below and by
    // `fragments_stay_under_the_limit_and_reassemble`'s own traffic).
    let mut p = Pair::new(11, OtrConfig::default());
    p.send(true, "one");
    p.send(false, "two");
    p.verify(true);
    p.send(true, "three");
    let damage = |s: &mut Element, rng: &mut ChaCha20Rng| {
        let body = s.get_child("body", NS_CLIENT).unwrap().text();
        let mutated = match rng.next_u32() % 4 {
            0 => {
                // Flip a bit inside the binary message.
                match wire::classify(&body) {
                    Ok(Text::Encoded(mut bytes)) if !bytes.is_empty() => {
                        let i = (rng.next_u32() as usize) % (bytes.len() * 8);
                        bytes[i / 8] ^= 1 << (i % 8);
                        wire::armor(&bytes)
                    }
                    _ => format!("{body}x"),
                }
            }
            1 => {
                // Truncate the binary message.
                match wire::classify(&body) {
                    Ok(Text::Encoded(bytes)) => {
                        let keep = (rng.next_u32() as usize) % (bytes.len() + 1);
                        wire::armor(&bytes[..keep])
                    }
                    _ => body[..body.len() / 2].to_owned(),
                }
            }
            2 => {
                // Damage the text: cut anywhere.
                let cut = (rng.next_u32() as usize) % (body.len() + 1);
                body.get(..cut).unwrap_or_default().to_owned()
            }
            _ => {
                let junk = [
                    "?OTR|",
                    "?OTR:",
                    "?OTR:AAMK",
                    "?OTRv3?",
                    "?OTR|1|2,3,2,x,",
                    "?OTR|100|0,1,1,?OTR:AAM.,",
                ];
                format!("{}{}", junk[(rng.next_u32() as usize) % junk.len()], &body[body.len() / 2..])
            }
        };
        crate::testing::set_text(s.get_child_mut("body", NS_CLIENT).unwrap(), &mutated);
    };
    let read = |by_alice: &bool, s: &Element, rng: &mut ChaCha20Rng| {
        let mut recipient = if *by_alice { p.bob.clone() } else { p.alice.clone() };
        recipient.receive(&mut cx(rng), s)
    };
    let codes = crate::testing::damaged_codes(&p.wire, 1500, &mut ChaCha20Rng::seed_from_u64(99), damage, read);
    assert!(codes.contains("malformed") && codes.contains("bad-mac"), "{codes:?}");
}

/// §"OTR Query Messages": every example version string the spec gives reads as the versions
/// it names, "?OTRv?" (no version at all) included; "?OTR" followed by other text is text.
#[test]
fn query_messages_read_as_the_spec_lists_them() {
    for (body, versions) in [
        ("?OTR?", vec![1]),
        ("?OTRv2?", vec![2]),
        ("?OTRv23?", vec![2, 3]),
        ("?OTR?v2?", vec![1, 2]),
        ("?OTRv24x?", vec![2, 4]),
        ("?OTR?v?", vec![1]),
        ("?OTRv?", vec![]),
        ("Alice asks: ?OTRv3? (install a plugin)", vec![3]),
    ] {
        assert_eq!(wire::classify(body).unwrap(), Text::Query(versions), "{body}");
    }
    assert!(matches!(wire::classify("?OTRish talk").unwrap(), Text::Plain { .. }));
}

/// XEP-0210 §3.10's rollback on OTR's offer: the newest version goes, what is left still
/// reads as a Query Message or a whitespace tag, and the peer starts no AKE on "?OTRv?".
#[test]
fn a_rollback_takes_the_newest_version_out_of_the_offer() {
    let (text, removed, left, _) = wire::without_newest("?OTRv23?").unwrap();
    assert_eq!((text.as_str(), removed, left), ("?OTRv2?", 3, vec![2]));
    let (text, removed, left, _) = wire::without_newest("hi ?OTRv3? there").unwrap();
    assert_eq!((text.as_str(), removed, left), ("hi ?OTRv? there", 3, vec![]));
    let (text, removed, left, _) = wire::without_newest("?OTR?").unwrap();
    assert_eq!((text.as_str(), removed, left), ("?OTRv?", 1, vec![]));
    assert!(wire::without_newest("?OTRv?").is_none(), "nothing left to withdraw");
    assert!(wire::without_newest("just text").is_none());
    let tagged = format!("hello{}{}{}", wire::WHITESPACE_BASE, wire::WHITESPACE_V2, wire::WHITESPACE_V3);
    let (text, removed, left, _) = wire::without_newest(&tagged).unwrap();
    assert_eq!((removed, left), (3, vec![2]));
    assert_eq!(wire::classify(&text).unwrap(), Text::Plain { text: "hello".into(), tagged: vec![2] });

    // On the wire: Bob's engine gets "?OTRv?" and starts no AKE (no version it allows).
    let mut p = Pair::new(3, OtrConfig::default());
    let mut rng = p.rng.clone();
    let out = p.alice.send(&mut cx(&mut rng), &"bob@b.example".parse().unwrap(), "hello bob").unwrap();
    let Some(Action::Send(query)) = out.actions.first() else { panic!("{out:?}") };
    let mut query = query.clone();
    let w = seam::OtrWire.withdraw_newest(&mut query).unwrap();
    assert_eq!((w.removed.as_str(), w.left.as_str()), ("OTR version 3 from the Query Message's versions", "no version at all"));
    query.set("from", ALICE);
    let out = p.bob.receive(&mut cx(&mut rng), &query).unwrap();
    assert!(out.actions.is_empty() && out.events.is_empty(), "{out:?}");
}
