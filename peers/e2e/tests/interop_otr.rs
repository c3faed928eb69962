//! OTR v3 interop with an independent implementation: libotr 4.1 (apt `libotr5-dev`) behind
//! `peers/reference/otr/harness.c`, compiled here and driven over stdin/stdout. The AKE started
//! from either side, ten messages each way, fragmented messages both ways, SMP started from
//! either side, succeeding on the agreed answer and failing on a wrong one.
//!
//! Feature `interop` (CI installs libotr and runs it); without a C compiler or libotr the test
//! fails, it is never skipped.

#![cfg(feature = "interop")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command};
use std::sync::OnceLock;

use jabberwock_e2e::otr::{Otr, OtrConfig, OtrPolicy};
use jabberwock_e2e::time::EPOCH;
use jabberwock_e2e::xml::{ElementExt, NS_CLIENT, el, text_el};
use jabberwock_e2e::{Action, BareJid, Cx, Engine, Event, OutOfBand, Protocol, VerificationResult};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

#[path = "common/interop_record.rs"]
mod interop_record;
use interop_record::{Direction, Part, Recorder, spawn_harness, tool_output, version_in};

const RUST: &str = "alice@a.example/rust";
const LIBOTR: &str = "bob@b.example/libotr";
const SECRET: &str = "amber birch cobalt";

fn harness() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../reference/otr/harness.c");
        let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("otr-harness");
        let status = Command::new("cc")
            .args([src, "-o"])
            .arg(&bin)
            .args(["-lotr", "-lgcrypt"])
            .status()
            .expect("a C compiler (cc) builds the libotr harness");
        assert!(status.success(), "the libotr harness compiles (apt install libotr5-dev)");
        bin
    })
}

/// libotr as the harness is built against it: `OTRL_VERSION` from the installed headers.
fn libotr() -> Vec<Part> {
    let macros = tool_output("cc", &["-E", "-dM", "-include", "libotr/version.h", "-x", "c", "/dev/null"]);
    let line = macros.lines().find(|l| l.starts_with("#define OTRL_VERSION \"")).unwrap_or_default();
    let version = version_in(line).unwrap_or_else(|| panic!("no OTRL_VERSION in libotr/version.h"));
    vec![Part::new("libotr", &version)]
}

struct Libotr {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

#[derive(Debug, Default)]
struct Reply {
    out: Vec<String>,
    shown: Vec<String>,
    events: Vec<String>,
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Libotr {
    fn start(max_message: usize, secret: &str) -> Libotr {
        let (child, stdin, stdout) = spawn_harness(&mut Command::new(harness()), "the libotr harness runs");
        let mut l = Libotr { child, stdin, stdout };
        let init = l.call(&format!("init\tbob@b.example\t{max_message}"));
        assert!(init.events.is_empty(), "{init:?}");
        l.call(&format!("secret\t{RUST}\t{secret}"));
        l
    }

    fn call(&mut self, line: &str) -> Reply {
        writeln!(self.stdin, "{line}").unwrap();
        let mut reply = Reply::default();
        loop {
            let mut l = String::new();
            assert!(self.stdout.read_line(&mut l).unwrap() > 0, "the harness ended");
            let l = l.trim_end_matches('\n');
            if l == "end" {
                return reply;
            }
            let mut parts = l.splitn(3, '\t');
            let (kind, _a, b) =
                (parts.next().unwrap(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            match kind {
                "out" => reply.out.push(unescape(b)),
                "shown" => reply.shown.push(unescape(b)),
                "event" => reply.events.push(format!("{_a} {}", unescape(b))),
                _ => {}
            }
        }
    }
}

impl Drop for Libotr {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Our engine and libotr, with the wire between them.
struct Bench {
    rust: Otr,
    libotr: Libotr,
    rng: ChaCha20Rng,
    /// What our engine showed and reported.
    shown: Vec<String>,
    events: Vec<Event>,
    /// What libotr showed and reported.
    their_shown: Vec<String>,
    their_events: Vec<String>,
    /// Largest body either side sent.
    largest: usize,
    /// Bodies that went across, as (from Rust, text).
    wire: Vec<(bool, String)>,
}

impl Bench {
    fn new(seed: u64, max_message: Option<usize>, our_secret: &str, their_secret: &str) -> Bench {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let config = OtrConfig { policy: OtrPolicy::Require, max_message };
        let secrets = BTreeMap::from([("bob@b.example".parse::<BareJid>().unwrap(), our_secret.to_owned())]);
        let rust = Otr::new(RUST.parse().unwrap(), &mut rng, config).with_secrets(secrets);
        let libotr = Libotr::start(max_message.unwrap_or(0), their_secret);
        Bench {
            rust,
            libotr,
            rng,
            shown: vec![],
            events: vec![],
            their_shown: vec![],
            their_events: vec![],
            largest: 0,
            wire: vec![],
        }
    }

    fn cx(rng: &mut ChaCha20Rng) -> Cx<'_> {
        Cx { rng, now: EPOCH }
    }

    /// Delivers until nothing moves: our stanzas to libotr, libotr's bodies to us.
    fn pump(&mut self, mut to_libotr: Vec<String>, mut to_rust: Vec<String>) {
        while !to_libotr.is_empty() || !to_rust.is_empty() {
            for body in core::mem::take(&mut to_libotr) {
                self.largest = self.largest.max(body.len());
                self.wire.push((true, body.clone()));
                let r = self.libotr.call(&format!("recv\t{RUST}\t{body}"));
                self.their_shown.extend(r.shown);
                self.their_events.extend(r.events);
                to_rust.extend(r.out);
            }
            for body in core::mem::take(&mut to_rust) {
                self.largest = self.largest.max(body.len());
                self.wire.push((false, body.clone()));
                let stanza = el("message", NS_CLIENT)
                    .with("from", LIBOTR)
                    .with("to", RUST)
                    .with("type", "chat")
                    .child(text_el("body", NS_CLIENT, body));
                let mut rng = self.rng.clone();
                let result = self.rust.receive(&mut Self::cx(&mut rng), &stanza);
                let left = self.rust.drain(&mut Self::cx(&mut rng));
                self.rng = rng;
                let out = result.unwrap_or_else(|e| panic!("our engine rejected libotr's message: {e}"));
                to_libotr.extend(bodies(&out.actions));
                to_libotr.extend(bodies(&left.actions));
                for e in out.events {
                    if let Event::Plaintext { body, .. } = &e {
                        self.shown.push(body.clone());
                    }
                    self.events.push(e);
                }
            }
        }
    }

    fn rust_sends(&mut self, body: &str) {
        let mut rng = self.rng.clone();
        let out = self.rust.send(&mut Self::cx(&mut rng), &"bob@b.example".parse().unwrap(), body).unwrap();
        self.rng = rng;
        self.pump(bodies(&out.actions), vec![]);
    }

    fn libotr_sends(&mut self, body: &str) {
        let r = self.libotr.call(&format!("send\t{RUST}\t{body}"));
        self.their_events.extend(r.events);
        self.pump(vec![], r.out);
    }

    fn rust_verifies(&mut self) {
        let mut rng = self.rng.clone();
        let oob = OutOfBand { peer_says: vec![] };
        let out = self.rust.verify(&mut Self::cx(&mut rng), &"bob@b.example".parse().unwrap(), &oob).unwrap();
        self.rng = rng;
        self.pump(bodies(&out.actions), vec![]);
    }

    fn libotr_verifies(&mut self) {
        let r = self.libotr.call(&format!("smp\t{RUST}"));
        self.their_events.extend(r.events);
        self.pump(vec![], r.out);
    }

    fn our_verifications(&self) -> Vec<VerificationResult> {
        self.events
            .iter()
            .filter_map(|e| if let Event::Verification { result, .. } = e { Some(*result) } else { None })
            .collect()
    }

    fn their(&self, prefix: &str) -> usize {
        self.their_events.iter().filter(|e| e.starts_with(prefix)).count()
    }
}

fn bodies(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(s) => s.get_child("body", NS_CLIENT).map(|b| b.text()),
            _ => None,
        })
        .collect()
}

fn talk(b: &mut Bench) {
    for i in 0..10 {
        b.rust_sends(&format!("rust to libotr {i}"));
        b.libotr_sends(&format!("libotr to rust {i}"));
    }
    let ours: Vec<String> = (0..10).map(|i| format!("rust to libotr {i}")).collect();
    let theirs: Vec<String> = (0..10).map(|i| format!("libotr to rust {i}")).collect();
    assert!(b.their_shown.ends_with(&ours), "libotr showed {:?}; events {:?}", b.their_shown, b.their_events);
    assert!(b.shown.ends_with(&theirs), "we showed {:?}", b.shown);
    // Nothing ever crossed in clear.
    let leaked = b.wire.iter().filter(|(_, w)| w.contains("rust to libotr") || w.contains("libotr to rust"));
    assert_eq!(leaked.count(), 0);
}

#[test]
fn rust_starts_the_ake_and_both_sides_talk() {
    let rec = Recorder::start();
    let mut b = Bench::new(1, None, SECRET, SECRET);
    b.rust_sends("hello libotr");
    assert_eq!(b.their_shown, ["hello libotr"], "libotr events {:?}", b.their_events);
    assert_eq!(b.their("gone-secure"), 1);
    talk(&mut b);
    rec.passed(
        Protocol::of(&jabberwock_e2e::otr::PROTOCOL),
        &libotr(),
        &[
            (Direction::OursToTheirs, &["first message starts the AKE", "10 messages"]),
            (Direction::TheirsToOurs, &["10 messages"]),
        ],
    );
}

#[test]
fn libotr_starts_the_ake_and_both_sides_talk() {
    let rec = Recorder::start();
    let mut b = Bench::new(2, None, SECRET, SECRET);
    b.libotr_sends("hello rust");
    assert_eq!(b.shown, ["hello rust"], "libotr events {:?}", b.their_events);
    talk(&mut b);
    rec.passed(
        Protocol::of(&jabberwock_e2e::otr::PROTOCOL),
        &libotr(),
        &[
            (Direction::TheirsToOurs, &["first message starts the AKE", "10 messages"]),
            (Direction::OursToTheirs, &["10 messages"]),
        ],
    );
}

#[test]
fn fragmented_both_ways() {
    let rec = Recorder::start();
    let mut b = Bench::new(3, Some(150), SECRET, SECRET);
    let long_ours = "a long message from rust ".repeat(12);
    let long_theirs = "a long message from libotr ".repeat(12);
    b.rust_sends(&long_ours);
    b.libotr_sends(&long_theirs);
    b.rust_sends("short");
    assert_eq!(b.their_shown, [long_ours, "short".to_owned()], "libotr events {:?}", b.their_events);
    assert_eq!(b.shown, [long_theirs]);
    assert!(b.largest <= 150, "a body of {} bytes crossed", b.largest);
    assert!(b.wire.iter().filter(|(_, w)| w.starts_with("?OTR|")).count() > 10);
    let what: &[&str] = &["fragmented messages"];
    rec.passed(
        Protocol::of(&jabberwock_e2e::otr::PROTOCOL),
        &libotr(),
        &[(Direction::OursToTheirs, what), (Direction::TheirsToOurs, what)],
    );
}

#[test]
fn smp_succeeds_from_either_side_on_the_agreed_answer() {
    let rec = Recorder::start();
    let mut b = Bench::new(4, None, SECRET, SECRET);
    b.rust_sends("hi");
    b.rust_verifies();
    assert_eq!(b.our_verifications(), [VerificationResult::Match], "libotr events {:?}", b.their_events);
    assert_eq!(b.their("smp-success"), 1, "{:?}", b.their_events);
    b.libotr_verifies();
    assert_eq!(b.our_verifications(), [VerificationResult::Match, VerificationResult::Match]);
    assert_eq!(b.their("smp-success"), 2, "{:?}", b.their_events);
    let what: &[&str] = &["SMP on the agreed answer"];
    rec.passed(
        Protocol::of(&jabberwock_e2e::otr::PROTOCOL),
        &libotr(),
        &[(Direction::OursToTheirs, what), (Direction::TheirsToOurs, what)],
    );
}

#[test]
fn smp_fails_from_either_side_on_a_wrong_answer() {
    let rec = Recorder::start();
    let mut b = Bench::new(5, None, SECRET, "something else");
    b.libotr_sends("hi");
    b.rust_verifies();
    assert_eq!(b.our_verifications(), [VerificationResult::Mismatch], "libotr events {:?}", b.their_events);
    assert_eq!(b.their("smp-failure"), 1, "{:?}", b.their_events);
    b.libotr_verifies();
    assert_eq!(b.our_verifications(), [VerificationResult::Mismatch, VerificationResult::Mismatch]);
    assert_eq!(b.their("smp-failure"), 2, "{:?}", b.their_events);
    let what: &[&str] = &["SMP on a wrong answer fails"];
    rec.passed(
        Protocol::of(&jabberwock_e2e::otr::PROTOCOL),
        &libotr(),
        &[(Direction::OursToTheirs, what), (Direction::TheirsToOurs, what)],
    );
}
