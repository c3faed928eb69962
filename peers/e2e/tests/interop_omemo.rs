//! OMEMO interop with an independent implementation: python-omemo with its twomemo (OMEMO 2)
//! and oldmemo (OMEMO 0.3) backends, driven through `peers/reference/omemo/harness.py` over
//! stdin/stdout. For each version: both directions, first contact via a bundle from either
//! side, ten messages each way with some delivered out of order, and the empty messages that
//! complete a key exchange delivered back (in 0.3 this also checks libsignal's MAC order, sender
//! before receiver, in both directions).
//!
//! Feature `interop` (CI installs the Python packages and runs it); without Python or the
//! packages the test fails, it is never skipped.

#![cfg(feature = "interop")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command};

use jabberwock_e2e::omemo::engine::{NODE_BUNDLES, NODE_DEVICES, Omemo};
use jabberwock_e2e::omemo::legacy;
use jabberwock_e2e::time::EPOCH;
use jabberwock_e2e::xml::{ElementExt, NS_CLIENT, NS_PUBSUB, el};
use jabberwock_e2e::{Action, BareJid, Cx, Element, Engine, Event, Protocol, TrustPolicy};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use serde_json::{Value, json};

#[path = "common/interop_record.rs"]
mod interop_record;
use interop_record::{Direction, Part, Recorder, spawn_harness, tool_output, version_in};

/// One OMEMO version on both sides.
#[derive(Clone, Copy)]
struct Version {
    /// Our engine.
    protocol: Protocol,
    /// The python backend.
    python: &'static str,
    make: fn(jabberwock_e2e::FullJid, &mut dyn rand_core::RngCore, TrustPolicy) -> Omemo,
    ns: &'static str,
    devices_node: &'static str,
}

const OMEMO2: Version = Version {
    protocol: Protocol::of(&jabberwock_e2e::omemo::OMEMO),
    python: "twomemo",
    make: Omemo::new,
    ns: NS_OMEMO2,
    devices_node: NODE_DEVICES,
};
const OMEMO03: Version = Version {
    protocol: Protocol::of(&jabberwock_e2e::omemo::OMEMO_LEGACY),
    python: "oldmemo",
    make: Omemo::legacy,
    ns: legacy::NS,
    devices_node: legacy::NODE_DEVICES,
};
const NS_OMEMO2: &str = "urn:xmpp:omemo:2";

impl Version {
    /// python-omemo and this version's backend, as installed (for the interop table).
    fn theirs(self) -> Vec<Part> {
        let installed = |package: &str| {
            let script = "import importlib.metadata, sys; print(importlib.metadata.version(sys.argv[1]))";
            let out = tool_output("python3", &["-c", script, package]);
            version_in(&out).unwrap_or_else(|| panic!("no version of {package} in {out:?}"))
        };
        vec![Part::new("python-omemo", &installed("omemo")), Part::new(self.python, &installed(self.python))]
    }

    /// The node and item id a device's bundle is published under.
    fn bundle_at(self, device: &str) -> (String, String) {
        if self.python == "oldmemo" {
            (format!("{}{device}", legacy::NODE_BUNDLE_PREFIX), "current".into())
        } else {
            (NODE_BUNDLES.into(), device.into())
        }
    }
}

struct Python {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Python {
    fn start() -> Python {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../reference/omemo/harness.py");
        let mut python = Command::new("python3");
        let how = "python3 runs the OMEMO harness (pip install omemo 'twomemo[xml]')";
        let (child, stdin, stdout) = spawn_harness(python.arg(script), how);
        Python { child, stdin, stdout }
    }

    fn call(&mut self, request: Value) -> Value {
        writeln!(self.stdin, "{request}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let reply: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("harness said {line:?}: {e}"));
        assert!(reply.get("error").is_none(), "python harness: {reply} (for {request})");
        reply
    }
}

impl Python {
    /// Tells python about a Rust device: its device list and bundle, as published.
    fn introduce(&mut self, v: Version, engine: &mut Omemo, jid: &str, r: &mut ChaCha20Rng) {
        let (devices, bundle) = publications(v, engine, &jid.parse().unwrap(), r);
        let id = engine.device_id().to_string();
        assert!(devices.contains(&format!("id='{id}'")), "{devices}");
        self.call(json!({"cmd": "peer", "jid": jid, "devicelist": devices, "bundles": {id: bundle}}));
    }

    /// Python encrypts each body to `to`; returns the `<encrypted/>` XML of each.
    fn encrypt_all(&mut self, to: &str, bodies: &[String]) -> Vec<String> {
        bodies
            .iter()
            .map(|b| {
                self.call(json!({"cmd": "encrypt", "to": to, "body": b}))["encrypted"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn cx(r: &mut ChaCha20Rng) -> Cx<'_> {
    Cx { rng: r, now: EPOCH }
}

/// The Rust device's publications, as XML strings: (device list, bundle).
fn publications(v: Version, engine: &mut Omemo, owner: &BareJid, r: &mut ChaCha20Rng) -> (String, String) {
    let (mut devices, mut bundle) = (None, None);
    let bundle_node = v.bundle_at(&engine.device_id().to_string()).0;
    let mut queue = engine.publish(&mut cx(r)).unwrap().actions;
    while let Some(a) = queue.pop() {
        match a {
            Action::Publish { node, item, .. } if node == v.devices_node => {
                devices = Some(String::from(&item))
            }
            Action::Publish { node, item, .. } if node == bundle_node => bundle = Some(String::from(&item)),
            Action::Fetch { owner: o, node } if o == *owner => {
                queue.extend(engine.fetch_failed(&mut cx(r), owner, &node, "item-not-found").unwrap().actions)
            }
            _ => {}
        }
    }
    (devices.unwrap(), bundle.unwrap())
}

fn items_result(owner: &str, node: &str, id: &str, payload: &str) -> Element {
    let payload: Element = payload.parse().unwrap();
    el("iq", NS_CLIENT).with("type", "result").with("from", owner).child(el("pubsub", NS_PUBSUB).child(
        el("items", NS_PUBSUB).with("node", node).child(el("item", NS_PUBSUB).with("id", id).child(payload)),
    ))
}

fn message_from(from: &str, to: &str, encrypted: &str) -> Element {
    // (0.3 messages also carry a fallback body; the engines ignore it next to <encrypted/>.)
    el("message", NS_CLIENT)
        .with("from", from)
        .with("to", to)
        .with("type", "chat")
        .child(encrypted.parse().unwrap())
}

fn shown(events: Vec<Event>) -> Vec<String> {
    events
        .into_iter()
        .filter_map(|e| if let Event::Plaintext { body, .. } = e { Some(body) } else { None })
        .collect()
}

/// Encrypts `body` from the Rust engine to `peer`, answering its PEP fetches with the
/// python device's publications; returns the `<encrypted/>` XML.
fn rust_encrypt(
    v: Version,
    engine: &mut Omemo,
    r: &mut ChaCha20Rng,
    peer: &str,
    py: &Value,
    body: &str,
) -> String {
    let peer_jid: BareJid = peer.parse().unwrap();
    let (bundle_node, bundle_id) = v.bundle_at(&py["device_id"].to_string());
    let mut queue = engine.send(&mut cx(r), &peer_jid, body).unwrap().actions;
    let mut out = None;
    while let Some(a) = queue.pop() {
        match a {
            Action::Fetch { node, .. } if node == v.devices_node => {
                let reply = items_result(peer, v.devices_node, "current", py["devicelist"].as_str().unwrap());
                queue.extend(engine.receive(&mut cx(r), &reply).unwrap().actions);
            }
            Action::Fetch { node, .. } if node == bundle_node => {
                let reply = items_result(peer, &bundle_node, &bundle_id, py["bundle"].as_str().unwrap());
                queue.extend(engine.receive(&mut cx(r), &reply).unwrap().actions);
            }
            Action::Fetch { node, .. } => panic!("unexpected fetch of {node}"),
            Action::Send(stanza) => {
                let encrypted = stanza.get_child("encrypted", v.ns).unwrap();
                out = Some(String::from(encrypted));
            }
            _ => {}
        }
    }
    out.expect("the Rust engine produced a message")
}

/// What `rust_initiates_and_both_sides_talk` exchanges, for the interop table.
const RUST_INITIATES: &[(Direction, &[&str])] = &[
    (Direction::OursToTheirs, &["first contact (key exchange)", "10 messages out of order"]),
    (Direction::TheirsToOurs, &["10 messages out of order"]),
];

/// What `python_initiates_first_contact` exchanges, for the interop table.
const PYTHON_INITIATES: &[(Direction, &[&str])] = &[
    (Direction::TheirsToOurs, &["first contact (key exchange)", "10 messages out of order"]),
    (Direction::OursToTheirs, &["empty key-exchange answer"]),
];

/// The tests, one per row of `reports/interop.md`: name, the exchange, the OMEMO version, and
/// what it exchanges.
macro_rules! exchanges {
    ($($name:ident: $exchange:ident, $version:ident, $what:ident;)+) => {$(
        #[test]
        fn $name() {
            let rec = Recorder::start();
            $exchange($version);
            rec.passed($version.protocol, &$version.theirs(), $what);
        }
    )+};
}

exchanges! {
    omemo2_rust_initiates_and_both_sides_talk: rust_initiates_and_both_sides_talk, OMEMO2, RUST_INITIATES;
    omemo03_rust_initiates_and_both_sides_talk: rust_initiates_and_both_sides_talk, OMEMO03, RUST_INITIATES;
    omemo2_python_initiates_first_contact: python_initiates_first_contact, OMEMO2, PYTHON_INITIATES;
    omemo03_python_initiates_first_contact: python_initiates_first_contact, OMEMO03, PYTHON_INITIATES;
}

fn rust_initiates_and_both_sides_talk(v: Version) {
    let r = &mut ChaCha20Rng::seed_from_u64(1);
    let mut python = Python::start();
    let bob = python.call(json!({"cmd": "init", "jid": "bob@b.example", "version": v.python}));
    let mut alice = (v.make)("alice@a.example/rust".parse().unwrap(), r, TrustPolicy::Btbv);
    python.introduce(v, &mut alice, "alice@a.example", r);

    // Rust → python: ten messages, the second pair swapped; the first carries the key exchange.
    let sent: Vec<String> = (0..10).map(|i| format!("rust to python {i}")).collect();
    let mut wire: Vec<String> =
        sent.iter().map(|b| rust_encrypt(v, &mut alice, r, "bob@b.example", &bob, b)).collect();
    wire.swap(2, 3);
    let mut order: Vec<usize> = (0..10).collect();
    order.swap(2, 3);
    for (i, encrypted) in order.iter().zip(&wire) {
        let reply = python.call(json!({"cmd": "decrypt", "from": "alice@a.example", "encrypted": encrypted}));
        assert_eq!(reply["body"].as_str(), Some(sent[*i].as_str()));
        // Python answers the key exchange with an empty message: deliver it.
        for m in reply["outbox"].as_array().unwrap() {
            let stanza =
                message_from("bob@b.example/python", "alice@a.example", m["encrypted"].as_str().unwrap());
            assert!(shown(alice.receive(&mut cx(r), &stanza).unwrap().events).is_empty());
        }
    }

    // Python → Rust: ten messages, delivered with a pair swapped.
    let sent: Vec<String> = (0..10).map(|i| format!("python to rust {i}")).collect();
    let mut wire = python.encrypt_all("alice@a.example", &sent);
    wire.swap(5, 6);
    let mut got = Vec::new();
    for encrypted in &wire {
        let stanza = message_from("bob@b.example/python", "alice@a.example", encrypted);
        got.extend(shown(alice.receive(&mut cx(r), &stanza).unwrap().events));
    }
    let mut expected = sent.clone();
    expected.swap(5, 6);
    assert_eq!(got, expected);
}

fn python_initiates_first_contact(v: Version) {
    let r = &mut ChaCha20Rng::seed_from_u64(2);
    let mut python = Python::start();
    python.call(json!({"cmd": "init", "jid": "bob@b.example", "version": v.python}));
    let mut carol = (v.make)("carol@c.example/rust".parse().unwrap(), r, TrustPolicy::Btbv);
    python.introduce(v, &mut carol, "carol@c.example", r);

    let sent: Vec<String> = (0..10).map(|i| format!("first contact {i}")).collect();
    let mut wire = python.encrypt_all("carol@c.example", &sent);
    // The key exchange rides on every message until answered: deliver the third one first.
    wire.swap(0, 2);
    let mut got = Vec::new();
    let mut answers = Vec::new();
    for encrypted in &wire {
        let stanza = message_from("bob@b.example/python", "carol@c.example", encrypted);
        let out = carol.receive(&mut cx(r), &stanza).unwrap();
        for a in out.actions {
            if let Action::Send(s) = a
                && let Some(e) = s.get_child("encrypted", v.ns)
            {
                answers.push(String::from(e));
            }
        }
        got.extend(shown(out.events));
    }
    let mut expected = sent.clone();
    expected.swap(0, 2);
    assert_eq!(got, expected);
    // Our empty answer to the key exchange is a valid OMEMO message for python.
    assert!(!answers.is_empty());
    for a in answers {
        let reply = python.call(json!({"cmd": "decrypt", "from": "carol@c.example", "encrypted": a}));
        assert!(reply["body"].is_null(), "an empty OMEMO message has no body: {reply}");
    }
}
