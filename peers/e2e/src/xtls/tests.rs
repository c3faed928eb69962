#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::TrustPolicy;
use crate::kit::codec::unb64;
use crate::time::EPOCH;

const ALICE: &str = "alice@a.example/phone";
const BOB: &str = "bob@b.example/laptop";
const BOB2: &str = "bob@b.example/tablet";
const NOW: Duration = EPOCH;

fn cx(r: &mut ChaCha20Rng) -> Cx<'_> {
    Cx { rng: r, now: NOW }
}

fn jid(s: &str) -> FullJid {
    s.parse().unwrap()
}

fn bare(s: &str) -> BareJid {
    s.parse::<Jid>().unwrap().to_bare()
}

/// Devices and the server between them: stanzas go to the full JID in `to`; an `<iq/>` to a
/// device that is not online bounces with `<service-unavailable/>` (RFC 6120 §10.5.3.1).
struct Net {
    devices: BTreeMap<String, Xtls>,
    online: BTreeSet<String>,
    rng: ChaCha20Rng,
    /// Every stanza delivered, with its sender.
    wire: Vec<(String, Element)>,
    events: Vec<(String, Event)>,
    errors: Vec<(String, &'static str)>,
    /// Stanzas matching this are kept back instead of delivered.
    hold: Option<fn(&str, &Element) -> bool>,
    held: Vec<(String, Element)>,
}

impl Net {
    fn new(seed: u64, devices: &[&str], policy: TrustPolicy) -> Net {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let config = EngineConfig::with_trust(policy);
        let devices: BTreeMap<String, Xtls> =
            devices.iter().map(|d| (d.to_string(), Xtls::new(jid(d), &mut rng, &config))).collect();
        Net {
            online: devices.keys().cloned().collect(),
            devices,
            rng,
            wire: vec![],
            events: vec![],
            errors: vec![],
            hold: None,
            held: vec![],
        }
    }

    /// Everyone sees everyone's presence (with the caps `<c/>`).
    fn presences(&mut self) {
        let names: Vec<String> = self.online.iter().cloned().collect();
        for from in &names {
            let mut rng = self.rng.clone();
            let ext = self.devices.get_mut(from).unwrap().presence(&mut cx(&mut rng)).unwrap();
            let mut p = el("presence", NS_CLIENT).with("from", from.clone());
            for e in ext {
                p.append_child(e);
            }
            for to in &names {
                if to != from {
                    let out =
                        self.devices.get_mut(to).unwrap().receive_presence(&mut cx(&mut rng), &p).unwrap();
                    self.run(to, out);
                }
            }
            self.rng = rng;
        }
    }

    fn run(&mut self, by: &str, out: Output) {
        for e in out.events {
            self.events.push((by.to_owned(), e));
        }
        let mut queue: VecDeque<(String, Element)> = sends(by, out.actions).into();
        while let Some((from, mut s)) = queue.pop_front() {
            s.set("from", from.clone());
            if let Some(hold) = self.hold
                && hold(&from, &s)
            {
                self.held.push((from, s));
                continue;
            }
            let to = s.attr("to").unwrap().to_owned();
            self.wire.push((from.clone(), s.clone()));
            if !self.online.contains(&to) || !self.devices.contains_key(&to) {
                if s.name() == "iq" && matches!(s.attr("type"), Some("set" | "get")) {
                    let id = s.attr("id").unwrap_or_default();
                    let mut e = iq_error(&Jid::from(jid(&from)), id, "service-unavailable");
                    e.set("from", to.clone());
                    queue.push_back((to.clone(), e.with("to", from.clone())));
                }
                continue;
            }
            let (out, left) = self.deliver(&to, &s);
            for e in out.events.into_iter().chain(left.events) {
                self.events.push((to.clone(), e));
            }
            queue.extend(sends(&to, out.actions));
            queue.extend(sends(&to, left.actions));
        }
    }

    fn deliver(&mut self, to: &str, s: &Element) -> (Output, Output) {
        let mut rng = self.rng.clone();
        let engine = self.devices.get_mut(to).unwrap();
        let result = engine.receive(&mut cx(&mut rng), s);
        let left = engine.drain(&mut cx(&mut rng));
        self.rng = rng;
        match result {
            Ok(out) => (out, left),
            Err(e) => {
                self.errors.push((to.to_owned(), e.code()));
                (Output::default(), left)
            }
        }
    }

    /// Delivers one held stanza to its `to`; what that makes is held too.
    fn step(&mut self, s: Element) {
        let to = s.attr("to").unwrap().to_owned();
        self.wire.push((s.attr("from").unwrap().to_owned(), s.clone()));
        let (out, left) = self.deliver(&to, &s);
        for e in out.events.into_iter().chain(left.events) {
            self.events.push((to.clone(), e));
        }
        for (_, mut s) in sends(&to, out.actions).into_iter().chain(sends(&to, left.actions)) {
            s.set("from", to.clone());
            self.held.push((to.clone(), s));
        }
    }

    /// Delivers one recorded or forged stanza to its `to`.
    fn inject(&mut self, s: Element) {
        let from = s.attr("from").unwrap().to_owned();
        let mut out = Output::default();
        out.actions.push(Action::Send(s));
        // `run` sets `from` again: keep the stanza's own.
        self.run(&from, out);
    }

    fn send(&mut self, from: &str, to: &str, body: &str) {
        let mut rng = self.rng.clone();
        let out = self.devices.get_mut(from).unwrap().send(&mut cx(&mut rng), &bare(to), body).unwrap();
        self.rng = rng;
        self.run(from, out);
    }

    fn shown(&self, device: &str) -> Vec<(String, Trust)> {
        self.events
            .iter()
            .filter(|(d, _)| d == device)
            .filter_map(|(_, e)| match e {
                Event::Plaintext { body, trust, .. } => Some((body.clone(), *trust)),
                _ => None,
            })
            .collect()
    }

    fn alerts(&self, device: &str) -> Vec<&'static str> {
        crate::testing::alerts_of(&self.events, device)
    }

    fn dev(&self, d: &str) -> &Xtls {
        self.devices.get(d).unwrap()
    }

    fn verify(&mut self, who: &str, peer: &str) -> Output {
        let oob = OutOfBand {
            peer_says: self
                .devices
                .iter()
                .filter(|(d, _)| jid(d).to_bare() == bare(peer))
                .flat_map(|(_, e)| e.out_of_band().peer_says)
                .collect(),
        };
        let mut rng = self.rng.clone();
        let out = self.devices.get_mut(who).unwrap().verify(&mut cx(&mut rng), &bare(peer), &oob).unwrap();
        self.rng = rng;
        self.run(who, out.clone());
        out
    }
}

fn sends(by: &str, actions: Vec<Action>) -> Vec<(String, Element)> {
    actions
        .into_iter()
        .filter_map(|a| if let Action::Send(s) = a { Some((by.to_owned(), s)) } else { None })
        .collect()
}

fn data_of(s: &Element) -> Option<Vec<u8>> {
    let d = s.get_child("data", NS_XTLS)?;
    unb64("data", &d.text()).ok()
}

fn with_data(s: &Element, bytes: &[u8]) -> Element {
    let mut s = s.clone();
    let d = s.get_child_mut("data", NS_XTLS).unwrap();
    let _ = d.take_nodes();
    d.append_text(b64(bytes));
    s
}

fn app_records(net: &Net, from: &str) -> Vec<Element> {
    // Application data: <data/> sent after both ends are open, i.e. after the client's
    // Finished; we take those from `from` that follow its first plaintext delivery.
    net.wire
        .iter()
        .filter(|(f, s)| f == from && s.attr("type") == Some("set") && s.has_child("data", NS_XTLS))
        .map(|(_, s)| s.clone())
        .collect()
}

#[test]
fn handshake_then_messages_both_ways() {
    let mut net = Net::new(1, &[ALICE, BOB], TrustPolicy::Btbv);
    net.presences();
    net.send(ALICE, "bob@b.example", "hello bob <&>");
    assert_eq!(net.shown(BOB), [("hello bob <&>".to_owned(), Trust::Unverified)], "{:?}", net.errors);
    net.send(BOB, "alice@a.example", "hi alice");
    assert_eq!(net.shown(ALICE), [("hi alice".to_owned(), Trust::Unverified)]);
    assert!(net.errors.is_empty(), "{:?}", net.errors);
    // The wire: <start/>, <proceed/>, ClientHello with method='x509', acknowledgements.
    let (_, first) = &net.wire[0];
    assert!(first.has_child("start", NS_XTLS) && first.attr("type") == Some("set"));
    assert_eq!(first.attr("to"), Some(BOB));
    assert!(net.wire[1].1.has_child("proceed", NS_XTLS));
    assert_eq!(net.wire[2].1.get_child("data", NS_XTLS).unwrap().attr("method"), Some("x509"));
    assert_eq!(data_of(&net.wire[2].1).unwrap()[0], 0x16, "a TLS handshake record");
    assert!(net.wire.iter().all(|(_, s)| !String::from(s).contains("hello bob")));
    // Both ends derived the same SAS; each saw the other's certificate.
    let (a, b) = (net.dev(ALICE).sas(&jid(BOB)).unwrap(), net.dev(BOB).sas(&jid(ALICE)).unwrap());
    assert_eq!(a, b);
    assert_eq!(a.len(), 17);
    let fp_alice = net.dev(ALICE).fingerprint().unwrap();
    assert!(net.events.iter().any(|(d, e)| d == BOB
        && matches!(e, Event::TrustChanged { fingerprint, trust: Trust::Unverified, .. } if *fingerprint == fp_alice)));
    // Every <data/> was acknowledged with an empty result.
    let sets = net.wire.iter().filter(|(_, s)| s.has_child("data", NS_XTLS)).count();
    let acks = net
        .wire
        .iter()
        .filter(|(_, s)| s.attr("type") == Some("result") && s.children().next().is_none())
        .count();
    assert_eq!(sets, acks);
}

#[test]
fn same_seed_same_wire_and_another_seed_differs() {
    let run = |seed| {
        let mut net = Net::new(seed, &[ALICE, BOB], TrustPolicy::Btbv);
        net.presences();
        net.send(ALICE, "bob@b.example", "one");
        net.send(BOB, "alice@a.example", "two");
        net.wire.iter().map(|(f, s)| format!("{f} {}", String::from(s))).collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn first_contact_waits_for_the_peer_to_be_online() {
    let mut net = Net::new(2, &[ALICE, BOB], TrustPolicy::Btbv);
    net.online.remove(BOB);
    net.presences();
    net.send(ALICE, "bob@b.example", "are you there?");
    assert!(net.alerts(ALICE).contains(&"xtls-waiting"));
    assert!(net.wire.is_empty(), "nothing can go: XTLS has no offline sessions");
    net.online.insert(BOB.to_owned());
    net.presences();
    assert_eq!(net.shown(BOB), [("are you there?".to_owned(), Trust::Unverified)], "{:?}", net.errors);
}

#[test]
fn a_peer_that_went_offline_bounces_the_records_and_the_tunnel_is_lost() {
    let mut net = Net::new(3, &[ALICE, BOB], TrustPolicy::Btbv);
    net.presences();
    net.send(ALICE, "bob@b.example", "one");
    net.online.remove(BOB);
    net.send(ALICE, "bob@b.example", "two");
    assert!(net.alerts(ALICE).contains(&"xtls-lost"), "{:?}", net.alerts(ALICE));
    assert!(!net.dev(ALICE).is_open(&jid(BOB)));
}

#[test]
fn one_tunnel_per_device() {
    let mut net = Net::new(4, &[ALICE, BOB, BOB2], TrustPolicy::Btbv);
    net.presences();
    net.send(ALICE, "bob@b.example", "to both");
    assert_eq!(net.shown(BOB).len(), 1);
    assert_eq!(net.shown(BOB2).len(), 1);
    let starts = net.wire.iter().filter(|(_, s)| s.has_child("start", NS_XTLS)).count();
    assert_eq!(starts, 2);
    assert_ne!(net.dev(ALICE).sas(&jid(BOB)), net.dev(ALICE).sas(&jid(BOB2)));
}

#[test]
fn tampered_replayed_and_reordered_records_kill_the_tunnel() {
    let mut net = Net::new(5, &[ALICE, BOB], TrustPolicy::Btbv);
    net.presences();
    net.send(ALICE, "bob@b.example", "one");
    // Tampered: one bit of the ciphertext.
    net.hold = Some(|from, s| from == ALICE && s.has_child("data", NS_XTLS));
    net.send(ALICE, "bob@b.example", "two");
    let (_, rec) = net.held.pop().unwrap();
    let mut bytes = data_of(&rec).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    net.hold = None;
    let snapshot = (net.devices.clone(), net.events.len());
    net.inject(with_data(&rec, &bytes));
    assert_eq!(net.errors[0], (BOB.to_owned(), "bad-record-mac"));
    assert!(!net.dev(BOB).is_open(&jid(ALICE)));
    // Bob sent rustls' alert (bad_record_mac), then <close/>: Alice's tunnel is gone too.
    assert_eq!(net.errors[1], (ALICE.to_owned(), "tls-alert"));
    assert!(!net.dev(ALICE).is_open(&jid(BOB)));
    net.errors.clear();

    // Replayed: the record Bob already read comes again.
    net.devices = snapshot.0.clone();
    net.inject(rec.clone());
    assert_eq!(net.shown(BOB).last().unwrap().0, "two");
    net.inject(rec.clone());
    assert_eq!(net.errors[0], (BOB.to_owned(), "bad-record-mac"));

    // Reordered: "four" arrives before "three".
    net.devices = snapshot.0;
    net.hold = Some(|from, s| from == ALICE && s.has_child("data", NS_XTLS));
    net.send(ALICE, "bob@b.example", "three");
    net.send(ALICE, "bob@b.example", "four");
    net.hold = None;
    let four = net.held.pop().unwrap().1;
    let three = net.held.pop().unwrap().1;
    net.inject(rec);
    let errors = net.errors.len();
    net.inject(four);
    assert_eq!(net.errors[errors], (BOB.to_owned(), "bad-record-mac"));
    let errors = net.errors.len();
    net.inject(three);
    assert_eq!(
        net.errors[errors],
        (BOB.to_owned(), "unknown-tunnel"),
        "the tunnel died with the reordered record"
    );
    assert!(!net.shown(BOB).iter().any(|(b, _)| b == "three" || b == "four"));
}

#[test]
fn verification_matches_and_a_man_in_the_middle_is_caught() {
    let mut net = Net::new(6, &[ALICE, BOB], TrustPolicy::Btbv);
    net.presences();
    net.send(ALICE, "bob@b.example", "one");
    let out = net.verify(ALICE, BOB);
    assert!(out.events.contains(&Event::Verification { peer: bare(BOB), result: VerificationResult::Match }));
    assert!(out.events.iter().any(|e| matches!(e, Event::TrustChanged { trust: Trust::Verified, .. })));
    net.send(BOB, "alice@a.example", "two");
    assert_eq!(net.shown(ALICE).last().unwrap(), &("two".to_owned(), Trust::Verified));

    // Mallory answers for Bob's device (a server that routes Bob's full JID to her): her
    // certificate completes the handshake, and the ceremony exposes it.
    let mut net = Net::new(7, &[ALICE, BOB], TrustPolicy::Btbv);
    net.presences();
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let mallory = Xtls::new(jid(BOB), &mut rng, &EngineConfig::default());
    let honest_bob = net.devices.insert(BOB.to_owned(), mallory).unwrap();
    net.send(ALICE, "bob@b.example", "secret");
    assert_eq!(net.shown(BOB).len(), 1, "Mallory reads it");
    let mallory = net.devices.insert(BOB.to_owned(), honest_bob).unwrap();
    let oob = OutOfBand { peer_says: net.dev(BOB).out_of_band().peer_says };
    let mut rng2 = net.rng.clone();
    let out = net.devices.get_mut(ALICE).unwrap().verify(&mut cx(&mut rng2), &bare(BOB), &oob).unwrap();
    assert!(
        out.events.contains(&Event::Verification { peer: bare(BOB), result: VerificationResult::Mismatch })
    );
    assert!(out.events.iter().any(|e| matches!(e, Event::Alert { reason: "fingerprint-mismatch", .. })));
    assert!(!net.dev(ALICE).is_open(&jid(BOB)));
    drop(mallory);
}

#[test]
fn manual_trust_holds_messages_until_verified() {
    let mut net = Net::new(8, &[ALICE, BOB], TrustPolicy::Manual);
    net.presences();
    net.send(ALICE, "bob@b.example", "held");
    assert!(net.dev(ALICE).is_open(&jid(BOB)));
    assert!(net.shown(BOB).is_empty(), "an unverified certificate gets nothing");
    assert!(net.alerts(ALICE).contains(&"untrusted-device"));
    net.verify(ALICE, BOB);
    assert_eq!(net.shown(BOB), [("held".to_owned(), Trust::Untrusted)], "Bob has not verified Alice");
}

#[test]
fn stolen_keys_do_not_decrypt_recorded_traffic_but_a_full_copy_reads_what_follows() {
    let mut net = Net::new(9, &[ALICE, BOB], TrustPolicy::Btbv);
    net.presences();
    net.send(ALICE, "bob@b.example", "before the theft");
    let recorded: Vec<Element> = app_records(&net, ALICE);
    let long_term = net.dev(BOB).steal(Theft::LongTermKeys);
    let full = net.dev(BOB).steal(Theft::FullState);
    let full_again = net.dev(BOB).steal(Theft::FullState);
    net.send(ALICE, "bob@b.example", "after the theft");
    let after: Vec<Element> = app_records(&net, ALICE).split_off(recorded.len());

    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut attacker = long_term;
    for s in recorded.iter().chain(&after) {
        let r = attacker.receive(&mut cx(&mut rng), s);
        assert!(r.is_err_and(|e| e.code() == "unknown-tunnel"), "no session, no plaintext");
    }
    let mut read = |mut attacker: Box<dyn Engine>, records: &[Element]| {
        let mut shown = Vec::new();
        for s in records {
            if let Ok(out) = attacker.receive(&mut cx(&mut rng), s) {
                shown.extend(out.events.into_iter().filter_map(|e| match e {
                    Event::Plaintext { body, .. } => Some(body),
                    _ => None,
                }));
            }
        }
        shown
    };
    // The copy is in the victim's state at the theft: what comes after is readable; what
    // was already read is gone (TLS 1.3 nonces moved on: an old record fails its AEAD check
    // and kills the copy's tunnel).
    assert_eq!(read(full, &after), ["after the theft"]);
    assert!(read(full_again, &recorded).is_empty());
}

#[test]
fn crossing_starts_settle_on_one_tunnel() {
    let mut net = Net::new(10, &[ALICE, BOB], TrustPolicy::Btbv);
    net.presences();
    let mut rng = net.rng.clone();
    let out_a =
        net.devices.get_mut(ALICE).unwrap().send(&mut cx(&mut rng), &bare(BOB), "from alice").unwrap();
    let out_b = net.devices.get_mut(BOB).unwrap().send(&mut cx(&mut rng), &bare(ALICE), "from bob").unwrap();
    net.rng = rng;
    // Both <start/> are in flight before either arrives; then every stanza is delivered
    // in the order it was sent (the server keeps order between two parties).
    net.hold = Some(|_, _| true);
    net.run(ALICE, out_a);
    net.run(BOB, out_b);
    let mut steps = 0;
    while !net.held.is_empty() && steps < 100 {
        let (_, s) = net.held.remove(0);
        net.step(s);
        steps += 1;
    }
    net.hold = None;
    assert_eq!(net.shown(BOB), [("from alice".to_owned(), Trust::Unverified)], "{:?}", net.errors);
    assert_eq!(net.shown(ALICE), [("from bob".to_owned(), Trust::Unverified)]);
    // alice@a.example/phone sorts first: her request won, Bob's got <conflict/>.
    assert!(net.wire.iter().any(|(f, s)| f == ALICE && String::from(s).contains("conflict")));
    assert!(net.errors.is_empty(), "{:?}", net.errors);
}

#[test]
fn close_sends_close_notify_and_a_forged_close_is_flagged() {
    let mut net = Net::new(11, &[ALICE, BOB], TrustPolicy::Btbv);
    net.presences();
    net.send(ALICE, "bob@b.example", "one");
    let mut rng = net.rng.clone();
    let out = net.devices.get_mut(ALICE).unwrap().close(&mut cx(&mut rng), &jid(BOB)).unwrap();
    net.run(ALICE, out);
    assert!(net.alerts(BOB).contains(&"xtls-close-notify"));
    assert!(net.alerts(BOB).contains(&"xtls-closed"));
    assert!(net.wire.iter().any(|(f, s)| f == BOB && s.has_child("closed", NS_XTLS)));
    // A new message opens a new tunnel.
    net.send(ALICE, "bob@b.example", "two");
    assert_eq!(net.shown(BOB).len(), 2);
    // A <close/> nobody authenticated (the attacker's) still closes, with an alert.
    let forged = el("iq", NS_CLIENT)
        .with("type", "set")
        .with("from", ALICE)
        .with("to", BOB)
        .with("id", "x")
        .child(el("close", NS_XTLS));
    net.inject(forged.clone());
    assert!(net.alerts(BOB).contains(&"xtls-unauthenticated-close"));
    // On an unknown tunnel: <item-not-found/>.
    net.inject(forged);
    assert!(net.wire.iter().any(|(f, s)| f == BOB && String::from(s).contains("item-not-found")));
}

#[test]
fn plain_body_is_flagged_and_unknown_method_refused() {
    let mut net = Net::new(12, &[ALICE, BOB], TrustPolicy::Btbv);
    let m = el("message", NS_CLIENT)
        .with("from", ALICE)
        .with("to", BOB)
        .with("type", "chat")
        .child(text_el("body", NS_CLIENT, "clear"));
    net.inject(m);
    assert_eq!(net.shown(BOB), [("clear".to_owned(), Trust::Unencrypted)]);
    assert!(net.alerts(BOB).contains(&"unencrypted"));
    // A first <data/> for method `srp`.
    net.presences();
    net.hold = Some(|_, s| s.get_child("data", NS_XTLS).is_some_and(|d| d.attr("method").is_some()));
    net.send(ALICE, "bob@b.example", "x");
    net.hold = None;
    let (_, mut hello) = net.held.pop().unwrap();
    hello.get_child_mut("data", NS_XTLS).unwrap().set("method", "srp");
    net.inject(hello);
    assert_eq!(net.errors.last().unwrap().1, "unsupported-method");
    assert!(net.wire.iter().any(|(f, s)| f == BOB && String::from(s).contains("not-acceptable")));
}

#[test]
fn stanza_splitter_handles_pieces_and_refuses_junk() {
    let mut buf = b"<message type='chat'><body>a&gt;b</body></message>  <message><body x='>'>".to_vec();
    let got = split_stanzas(&mut buf).unwrap();
    assert_eq!(got.len(), 1);
    buf.extend_from_slice(b"c</body></message>");
    let got = split_stanzas(&mut buf).unwrap();
    assert_eq!(parse_stanza(&got[0]).unwrap().get_child("body", NS_CLIENT).unwrap().text(), "c");
    assert!(buf.is_empty());
    for junk in [&b"text"[..], b"</x>", b"<?xml version='1.0'?>", b"<!DOCTYPE x>"] {
        assert!(split_stanzas(&mut junk.to_vec()).is_err(), "{junk:?}");
    }
    let deep = "<a>".repeat(MAX_DEPTH + 1);
    assert!(split_stanzas(&mut deep.into_bytes()).is_err());
}

/// Garbled records, truncated handshakes, wrong certificates, junk XML: delivered at every
/// point of an honest exchange (the engines restored to their state at that point), they
/// give typed errors and never a panic.
#[test]
fn mutated_xtls_stanzas_never_panic() {
    let mut net = Net::new(13, &[ALICE, BOB], TrustPolicy::Btbv);
    net.presences();
    // Record the honest exchange stanza by stanza, with the engines before each delivery.
    net.hold = Some(|_, _| true);
    net.send(ALICE, "bob@b.example", "one");
    let mut snapshots = Vec::new();
    let mut steps = 0;
    while !net.held.is_empty() && steps < 40 {
        let (from, s) = net.held.remove(0);
        snapshots.push((net.devices.clone(), from.clone(), s.clone()));
        net.step(s);
        steps += 1;
        if net.held.is_empty() && steps < 20 {
            net.send(BOB, "alice@a.example", "two");
        }
    }
    net.hold = None;
    assert!(snapshots.len() >= 8, "{}", snapshots.len());
    // Another device's certificate, for the wrong-certificate mutation.
    let mut other = Net::new(14, &[ALICE, BOB], TrustPolicy::Btbv);
    other.presences();
    other.hold = Some(|_, _| true);
    other.send(ALICE, "bob@b.example", "x");
    let mut foreign = Vec::new();
    for _ in 0..6 {
        if other.held.is_empty() {
            break;
        }
        let (_, s) = other.held.remove(0);
        if let Some(d) = data_of(&s) {
            foreign.push(d);
        }
        other.step(s);
    }

    let mut rng = ChaCha20Rng::seed_from_u64(15);
    let mut codes = BTreeSet::new();
    for round in 0..400usize {
        let (devices, from, original) = &snapshots[round % snapshots.len()];
        let mut s = original.clone();
        match rng.next_u32() % 9 {
            // Garbled record: one bit anywhere.
            0 => {
                if let Some(mut b) = data_of(&s)
                    && !b.is_empty()
                {
                    let i = rng.next_u32() as usize % b.len();
                    b[i] ^= 1 << (rng.next_u32() % 8);
                    s = with_data(&s, &b);
                }
            }
            // Truncated: the record cut short, then the rest never comes.
            1 => {
                if let Some(b) = data_of(&s) {
                    let cut = rng.next_u32() as usize % b.len().max(1);
                    s = with_data(&s, &b[..cut]);
                }
            }
            // Wrong certificate / foreign handshake: another session's flight.
            2 => {
                if s.has_child("data", NS_XTLS) && !foreign.is_empty() {
                    let f = &foreign[rng.next_u32() as usize % foreign.len()];
                    s = with_data(&s, f);
                }
            }
            // Not base64.
            3 => {
                if s.has_child("data", NS_XTLS) {
                    let d = s.get_child_mut("data", NS_XTLS).unwrap();
                    let _ = d.take_nodes();
                    d.append_text("!!not base64!!");
                }
            }
            // Junk XML: another XTLS element, or none, or a foreign one.
            4 => {
                let name =
                    ["start", "proceed", "data", "close", "closed", "junk"][rng.next_u32() as usize % 6];
                let mut junk = el("iq", NS_CLIENT);
                for k in ["from", "to", "id", "type"] {
                    if let Some(v) = s.attr(k) {
                        junk.set(k, v);
                    }
                }
                s = junk.child(el(name, NS_XTLS).text_node("AAAA"));
            }
            5 => s.set("type", ["set", "get", "result", "error", "zzz"][rng.next_u32() as usize % 5]),
            6 => s.set(
                "from",
                ["mallory@m.example/x", "bob@b.example", "not a jid@@/"][rng.next_u32() as usize % 3],
            ),
            7 => s.unset("id"),
            // Random bytes as a record.
            _ => {
                if s.has_child("data", NS_XTLS) {
                    let mut b = vec![0u8; 1 + rng.next_u32() as usize % 300];
                    rng.fill_bytes(&mut b);
                    if rng.next_u32() % 2 == 0 {
                        b[0] = 0x17;
                        b[1] = 0x03;
                        b[2] = 0x03;
                    }
                    s = with_data(&s, &b);
                }
            }
        }
        let mut replay = Net::new(16, &[], TrustPolicy::Btbv);
        replay.devices = devices.clone();
        replay.online = devices.keys().cloned().collect();
        replay.rng = ChaCha20Rng::seed_from_u64(round as u64);
        let _ = from;
        let to = s.attr("to").unwrap_or(BOB).to_owned();
        if replay.devices.contains_key(&to) {
            let (_, _) = replay.deliver(&to, &s);
        }
        // Then the rest of the honest exchange, which may now fail, also without panics.
        for (_, _, later) in snapshots.iter().skip(round % snapshots.len() + 1) {
            replay.inject(later.clone());
        }
        codes.extend(replay.errors.iter().map(|(_, c)| *c));
    }
    for expected in ["bad-record-mac", "malformed", "unknown-tunnel"] {
        assert!(codes.contains(expected), "{expected} not among {codes:?}");
    }
    assert!(codes.iter().any(|c| c.starts_with("tls-")), "{codes:?}");
}

/// XEP-0210 §3.10 against a server on the path: it takes the preferred cipher suite out of
/// Alice's ClientHello. Bob's TLS parses what is left and picks the other suite; the
/// handshake then fails because the two transcripts differ (RFC 8446 §4.4.4), and someone
/// is told. Nothing is shown.
#[test]
fn a_rolled_back_client_hello_fails_the_handshake() {
    use crate::Wire as _;
    let mut net = Net::new(9, &[ALICE, BOB], TrustPolicy::Btbv);
    net.presences();
    net.hold = Some(|from, s| from == ALICE && s.has_child("data", NS_XTLS));
    net.send(ALICE, "bob@b.example", "hello bob");
    net.hold = None;
    let (_, mut hello) = net.held.remove(0);
    let before = data_of(&hello).unwrap();
    let w = seam::XtlsWire.withdraw_newest(&mut hello).expect("a ClientHello");
    assert_eq!(w.removed, "TLS_AES_128_GCM_SHA256 from the TLS ClientHello's cipher suites");
    assert_eq!(w.left, "TLS_CHACHA20_POLY1305_SHA256");
    assert_eq!(data_of(&hello).unwrap().len(), before.len() - 2);
    // One suite left: nothing more to withdraw.
    assert!(seam::XtlsWire.withdraw_newest(&mut hello.clone()).is_none());
    net.inject(hello);
    for (_, s) in core::mem::take(&mut net.held) {
        net.inject(s);
    }
    assert!(net.shown(BOB).is_empty());
    // Bob read the ClientHello and answered; Alice, her handshake keys drawn from the
    // transcript she sent, cannot open his encrypted flight.
    assert_eq!(net.errors[0], (ALICE.to_owned(), "bad-record-mac"), "{:?}", net.errors);
    assert!(!net.dev(ALICE).is_open(&jid(BOB)) && !net.dev(BOB).is_open(&jid(ALICE)));
}

impl Net {
    /// Runs one engine call of `from` and delivers what it sends.
    fn call(&mut self, from: &str, f: impl FnOnce(&mut Xtls, &mut Cx<'_>) -> Result<Output, E2eError>) {
        let mut rng = self.rng.clone();
        let out = f(self.devices.get_mut(from).unwrap(), &mut cx(&mut rng)).unwrap();
        self.rng = rng;
        self.run(from, out);
    }

    /// The parts `device` was shown, per stanza kind, as they arrived.
    fn parts(&self, device: &str) -> Vec<(&'static str, Vec<Element>)> {
        self.events
            .iter()
            .filter(|(d, _)| d == device)
            .filter_map(|(_, e)| match e {
                Event::Parts { stanza, parts, .. } => Some((*stanza, parts.clone())),
                _ => None,
            })
            .collect()
    }

    /// Everything the servers carried, serialised.
    fn carried(&self) -> String {
        self.wire.iter().map(|(_, s)| String::from(s)).collect()
    }
}

/// The parts of the generality run: subject, thread, XHTML-IM, an OOB URL, a chat state,
/// and a correction of `corrects`.
fn every_part(corrects: &str) -> Vec<Element> {
    let parts = crate::MessageParts {
        subject: Some("quarterly tapir census".into()),
        thread: Some("thread-okapi-4711".into()),
        xhtml: Some("the pangolin is in bold".into()),
        oob: Some("https://files.example/narwhal-photo.jpg".into()),
        chat_state: Some("composing".into()),
        correction: true,
    };
    parts.elements(Some(corrects))
}

#[test]
fn a_message_goes_whole_through_the_tunnel_and_its_correction_names_the_inner_id() {
    let mut net = Net::new(21, &[ALICE, BOB], TrustPolicy::Btbv);
    net.presences();
    let bob = bare(BOB);
    assert_eq!(net.dev(ALICE).message_id(&bob), None, "nothing sent yet");
    net.send(ALICE, "bob@b.example", "hello bob");
    // XEP-0308: the first message is known to Bob by the inner stanza's id, not by any
    // <iq/> of the tunnel.
    let first = net.dev(ALICE).message_id(&bob).unwrap();
    assert!(net.wire.iter().all(|(_, s)| s.attr("id") != Some(first.as_str())));
    let parts = every_part(&first);
    let content = Content { body: "meet me at the tapir gate".into(), parts: parts.clone() };
    net.call(ALICE, |e, cx| e.send_message(cx, &bob, &content));
    assert!(net.errors.is_empty(), "{:?}", net.errors);
    let shown: Vec<String> = net.shown(BOB).into_iter().map(|(b, _)| b).collect();
    assert_eq!(shown, ["hello bob", "meet me at the tapir gate"]);
    // Every part arrived as it was sent, the correction naming the first message.
    assert_eq!(net.parts(BOB), [("message", parts)]);
    let second = net.dev(ALICE).message_id(&bob).unwrap();
    assert_ne!(first, second);
    // The servers carried none of it.
    let carried = net.carried();
    for text in ["tapir", "okapi", "pangolin", "narwhal", "chatstates", "message-correct", &first] {
        assert!(!carried.contains(text), "{text} crossed the servers readable");
    }
    // Nothing went beside the tunnel: iq stanzas only.
    assert!(net.wire.iter().all(|(_, s)| s.name() == "iq"));
}

#[test]
fn a_tunnelled_stanza_is_whole_without_routing_or_a_namespace_of_its_own() {
    let mut rng = ChaCha20Rng::seed_from_u64(22);
    let mut alice = Xtls::new(jid(ALICE), &mut rng, &EngineConfig::default());
    let mut m = alice.inner("message").with("type", "chat");
    m.append_child(text_el("body", NS_CLIENT, "a <&> b"));
    m.append_child(el("active", crate::content::NS_CHATSTATES));
    let xml = stanza_xml(&m);
    assert_eq!(
        xml,
        "<message id='in-1' type='chat'><body>a &lt;&amp;&gt; b</body>\
         <active xmlns='http://jabber.org/protocol/chatstates'/></message>"
    );
    // The receiver reads it back as it was.
    let mut buf = xml.into_bytes();
    let got = split_stanzas(&mut buf).unwrap();
    assert_eq!(parse_stanza(&got[0]).unwrap(), m);
    assert_eq!(alice.inner("iq").attr("id"), Some("in-2"), "each inner stanza its own id");
}

#[test]
fn directed_presence_goes_through_the_tunnels_of_the_account_or_the_one_device() {
    let mut net = Net::new(23, &[ALICE, BOB, BOB2], TrustPolicy::Btbv);
    net.presences();
    let status = |e: &Element| e.is("status", NS_CLIENT).then(|| e.text());
    // To the account: each of its devices.
    let account: Jid = bare(BOB).into();
    net.call(ALICE, |e, cx| e.send_presence(cx, &account, "out walking the quokka"));
    for d in [BOB, BOB2] {
        let parts = net.parts(d);
        assert_eq!(parts.len(), 1, "{d}: {parts:?}");
        assert_eq!(parts[0].0, "presence");
        assert_eq!(parts[0].1.iter().filter_map(status).collect::<Vec<_>>(), ["out walking the quokka"]);
    }
    // To one device: that one only.
    let tablet: Jid = jid(BOB2).into();
    net.call(ALICE, |e, cx| e.send_presence(cx, &tablet, "back soon"));
    assert_eq!(net.parts(BOB).len(), 1);
    let last = net.parts(BOB2).pop().unwrap();
    assert_eq!(last.1.iter().filter_map(status).collect::<Vec<_>>(), ["back soon"]);
    assert!(!net.carried().contains("quokka") && !net.carried().contains("back soon"));
    assert!(net.shown(BOB).is_empty(), "a presence is no message");
    assert!(net.errors.is_empty(), "{:?}", net.errors);
}

#[test]
fn an_iq_goes_through_the_tunnel_and_is_answered_through_it() {
    let mut net = Net::new(24, &[ALICE, BOB], TrustPolicy::Btbv);
    net.online.remove(BOB);
    net.presences();
    let payload: Element = "<query xmlns='urn:example:notes'>note about the capybara</query>".parse().unwrap();
    let p = payload.clone();
    net.call(ALICE, |e, cx| e.send_iq(cx, &jid(BOB), &p));
    // No device online: it waits (an iq is not stored offline either).
    assert!(net.alerts(ALICE).contains(&"xtls-waiting"));
    assert!(net.wire.is_empty());
    net.online.insert(BOB.to_owned());
    net.presences();
    assert_eq!(net.parts(BOB), [("iq", vec![payload])]);
    assert!(!net.carried().contains("capybara"));
    // RFC 6120 §8.2.3: Bob answered, inside the tunnel: one record more from him than when
    // a message comes, and Alice took it without a word.
    let mut quiet = Net::new(24, &[ALICE, BOB], TrustPolicy::Btbv);
    quiet.presences();
    quiet.send(ALICE, "bob@b.example", "no answer to this");
    assert_eq!(app_records(&net, BOB).len(), app_records(&quiet, BOB).len() + 1);
    assert!(net.errors.is_empty(), "{:?}", net.errors);
    assert!(net.dev(ALICE).sessions.get(&jid(BOB)).unwrap().plain.is_empty(), "read whole");
    assert!(net.parts(ALICE).is_empty() && net.shown(ALICE).is_empty());
    // An iq for another device of the account waits for that device, not for the account.
    let mut net = Net::new(25, &[ALICE, BOB, BOB2], TrustPolicy::Btbv);
    net.online.remove(BOB2);
    net.presences();
    let p = el("x", "urn:example:notes");
    net.call(ALICE, |e, cx| e.send_iq(cx, &jid(BOB2), &p));
    assert!(net.alerts(ALICE).contains(&"xtls-waiting"));
    assert!(net.parts(BOB).is_empty());
    net.online.insert(BOB2.to_owned());
    net.presences();
    assert_eq!(net.parts(BOB2).len(), 1);
    assert!(net.parts(BOB).is_empty());
}

/// What comes out of the tunnel is the peer's, whatever it claims: an inner `from` is not
/// believed, answers and unknown stanzas show nothing, and a request without an id is shown
/// but cannot be answered.
#[test]
fn tunnelled_stanzas_are_the_peers_whatever_they_claim() {
    let mut net = Net::new(26, &[ALICE, BOB], TrustPolicy::Btbv);
    net.presences();
    net.send(ALICE, "bob@b.example", "open");
    let forged = "<message from='mallory@evil.example/x' type='chat'><body>from mallory?</body></message>\
        <iq type='result' id='in-9'/><iq type='error' id='in-8'/><stream xmlns='urn:example'/>\
        <presence type='subscribe'><status>sub</status></presence><iq type='get'><q xmlns='urn:example:q'/></iq>";
    let mut rng = net.rng.clone();
    let mut out = Output::default();
    let alice = net.devices.get_mut(ALICE).unwrap();
    let t = alice.sessions.get_mut(&jid(BOB)).unwrap().tunnel.as_mut().unwrap();
    t.write(cx(&mut rng).now, forged.as_bytes()).unwrap();
    alice.flush_tls(&jid(BOB), &mut out);
    net.rng = rng;
    net.run(ALICE, out);
    assert!(net.errors.is_empty(), "{:?}", net.errors);
    let shown: Vec<(Jid, String)> = net
        .events
        .iter()
        .filter(|(d, _)| d == BOB)
        .filter_map(|(_, e)| match e {
            Event::Plaintext { from, body, .. } => Some((from.clone(), body.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(shown.last().unwrap(), &(Jid::from(jid(ALICE)), "from mallory?".to_owned()));
    let parts = net.parts(BOB);
    assert_eq!(parts.len(), 1, "only the iq request is shown: {parts:?}");
    assert_eq!(parts[0].0, "iq");
}
