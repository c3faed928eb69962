//! OpenPGP interop (XEP-0027 `pgp` and XEP-0373/0374 `ox`) with two independent
//! implementations driven as child processes: Sequoia's `sqop` (Stateless OpenPGP, apt `sqop`)
//! and GnuPG 2.2 (`gpg`, apt `gnupg`, a throwaway `GNUPGHOME`, `--batch --status-fd`).
//!
//! Each direction is its own test, for each payload kind and each tool:
//! - ours → theirs: the recipient's key is made by the tool; its certificate reaches our engine
//!   as the PEP answer the simulator would deliver (keyserver node for `pgp`, metadata + data
//!   nodes for `ox`); our engine encrypts (`ox`: signs with our key too); the tool decrypts (and
//!   verifies our signature with our exported certificate); the test checks the plaintext (for
//!   `ox`: the `<signcrypt/>`'s `to`, `time` and payload).
//! - theirs → ours: the tool encrypts (`ox`: and signs) to our engine's exported certificate;
//!   the test wraps it in the stanza; our engine's `receive()` shows the text with the trust
//!   it should have.
//! - signed presence both ways (`pgp`): the tool verifies our `jabber:x:signed` signature over
//!   the empty status; our engine verifies the tool's detached signature.
//!
//! Feature `interop`; a missing tool is a failure, never a skip.

#![cfg(feature = "interop")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output as ProcOutput, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jabberwock_e2e::kit::codec::{b64, unb64_wrapped};
use jabberwock_e2e::openpgp::keys::{self, Block};
use jabberwock_e2e::openpgp::{Ox, Pgp, ox, xep0027};
use jabberwock_e2e::time::EPOCH;
use jabberwock_e2e::xml::{ElementExt, NS_CLIENT, NS_PUBSUB, el, text_el};
use jabberwock_e2e::{Action, BareJid, Cx, Element, Engine, EngineConfig, Event, Output, Protocol, Trust};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

#[path = "common/interop_record.rs"]
mod interop_record;
use interop_record::Direction::{OursToTheirs, TheirsToOurs};
use interop_record::{Part, Recorder, start, succeeded, tool_output, version_in};

const NOW: Duration = EPOCH.saturating_add(Duration::from_secs(3600));
const OURS: &str = "alice@a.example/rust";
const THEIRS: &str = "bob@b.example";
const THEIR_UID: &str = "xmpp:bob@b.example";

/// Base64 our engine or the tool wrote (line breaks allowed).
fn unb64(s: &str) -> Vec<u8> {
    unb64_wrapped("base64", s).unwrap()
}

/// A fresh directory for one test.
fn workdir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "openpgp-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command, stdin: &[u8]) -> ProcOutput {
    let what = format!("{cmd:?} runs (apt install sqop gnupg)");
    let mut child = start(cmd, Stdio::piped(), &what);
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    succeeded(&format!("{cmd:?}"), child.wait_with_output().unwrap())
}

/// What a test needs from an independent OpenPGP implementation.
trait Tool {
    /// Makes the tool's own key for `THEIR_UID`; returns its binary certificate.
    fn generate(&mut self) -> Vec<u8>;
    /// The tool's fingerprint (40 upper-case hex).
    fn fingerprint(&self) -> String;
    /// Decrypts `msg` with the tool's key; verifies its signature against `signer` (armoured
    /// certificate) if one is given; returns the plaintext and the verified signer fingerprint.
    fn decrypt(&mut self, msg: &[u8], signer: Option<&str>) -> (Vec<u8>, Option<String>);
    /// Encrypts `data` to `to` (armoured certificate), signing with the tool's key if asked;
    /// binary output.
    fn encrypt(&mut self, data: &[u8], to: &str, sign: bool) -> Vec<u8>;
    /// Encrypts `data` to `to`, ASCII-armoured.
    fn encrypt_armored(&mut self, data: &[u8], to: &str) -> String;
    /// A detached binary signature over `data`, armoured.
    fn sign(&mut self, data: &[u8]) -> String;
    /// Verifies a detached armoured signature over `data` by `signer`; the signer fingerprint.
    fn verify(&mut self, sig: &str, data: &[u8], signer: &str) -> Option<String>;
}

// ---- sqop ----------------------------------------------------------------------------------

struct Sqop {
    dir: PathBuf,
    fingerprint: String,
}

impl Sqop {
    fn new() -> Sqop {
        Sqop { dir: workdir("sqop"), fingerprint: String::new() }
    }
    fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.join(name);
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, data).unwrap();
        p
    }
    fn key(&self) -> PathBuf {
        self.dir.join("bob.key")
    }
}

/// The fingerprint of a certificate, read with our own parser (the tools print their own
/// forms; this one is checked against gpg's below).
fn fingerprint_of(cert: &[u8]) -> String {
    keys::fingerprint_hex(&keys::parse_cert(cert).unwrap())
}

impl Tool for Sqop {
    fn generate(&mut self) -> Vec<u8> {
        let key = run(Command::new("sqop").args(["generate-key", THEIR_UID]), b"").stdout;
        std::fs::write(self.key(), &key).unwrap();
        let cert = run(Command::new("sqop").args(["extract-cert", "--no-armor"]), &key).stdout;
        self.fingerprint = fingerprint_of(&cert);
        cert
    }
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
    fn decrypt(&mut self, msg: &[u8], signer: Option<&str>) -> (Vec<u8>, Option<String>) {
        let verifications = self.dir.join("verifications");
        let _ = std::fs::remove_file(&verifications);
        let mut cmd = Command::new("sqop");
        cmd.arg("decrypt");
        if let Some(cert) = signer {
            cmd.arg("--verifications-out").arg(&verifications);
            cmd.arg("--verify-with").arg(self.file("signer.cert", cert.as_bytes()));
        }
        cmd.arg(self.key());
        let out = run(&mut cmd, msg);
        let who = signer.map(|_| {
            // SOP VERIFICATIONS: "<date> <signing key fpr> <primary fpr> ...".
            let text = std::fs::read_to_string(&verifications).unwrap();
            let line = text.lines().next().unwrap_or_else(|| panic!("sqop verified no signature"));
            line.split_whitespace().nth(2).unwrap().to_uppercase()
        });
        (out.stdout, who)
    }
    fn encrypt(&mut self, data: &[u8], to: &str, sign: bool) -> Vec<u8> {
        let mut cmd = Command::new("sqop");
        cmd.args(["encrypt", "--no-armor"]);
        if sign {
            cmd.arg("--sign-with").arg(self.key());
        }
        cmd.arg(self.file("to.cert", to.as_bytes()));
        run(&mut cmd, data).stdout
    }
    fn encrypt_armored(&mut self, data: &[u8], to: &str) -> String {
        let cert = self.file("to.cert", to.as_bytes());
        String::from_utf8(run(Command::new("sqop").arg("encrypt").arg(cert), data).stdout).unwrap()
    }
    fn sign(&mut self, data: &[u8]) -> String {
        String::from_utf8(
            run(Command::new("sqop").args(["sign", "--as", "binary"]).arg(self.key()), data).stdout,
        )
        .unwrap()
    }
    fn verify(&mut self, sig: &str, data: &[u8], signer: &str) -> Option<String> {
        let sig = self.file("sig.asc", sig.as_bytes());
        let cert = self.file("signer.cert", signer.as_bytes());
        let out = run(Command::new("sqop").arg("verify").arg(sig).arg(cert), data);
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines().next().and_then(|l| l.split_whitespace().nth(2)).map(str::to_uppercase)
    }
}

// ---- gpg -----------------------------------------------------------------------------------

struct Gpg {
    home: PathBuf,
    fingerprint: String,
}

impl Gpg {
    fn new() -> Gpg {
        let home = workdir("gpg");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        Gpg { home, fingerprint: String::new() }
    }
    fn gpg(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", &self.home).args([
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--ignore-time-conflict",
            "--trust-model",
            "always",
            "--status-fd",
            "2",
        ]);
        cmd
    }
    fn import(&self, armored: &str) {
        run(self.gpg().arg("--import"), armored.as_bytes());
    }
    fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.home.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
    fn status(out: &ProcOutput) -> String {
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
    /// `[GNUPG:] VALIDSIG <signing key fpr> ... <primary fpr>`: the primary key's fingerprint.
    fn validsig(status: &str) -> Option<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix("[GNUPG:] VALIDSIG "))
            .and_then(|rest| rest.split_whitespace().last())
            .map(str::to_owned)
    }
}

/// The agent gpg started for this home goes with it.
impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf").env("GNUPGHOME", &self.home).args(["--kill", "gpg-agent"]).status();
    }
}

impl Tool for Gpg {
    fn generate(&mut self) -> Vec<u8> {
        // ed25519 primary (sign, certify) and a cv25519 encryption subkey.
        run(self.gpg().args(["--quick-gen-key", THEIR_UID, "future-default", "default", "never"]), b"");
        let cert = run(self.gpg().args(["--export", THEIR_UID]), b"").stdout;
        self.fingerprint = fingerprint_of(&cert);
        // gpg's own listing agrees with our reading of the fingerprint.
        let listing =
            String::from_utf8(run(self.gpg().args(["--with-colons", "--list-keys", THEIR_UID]), b"").stdout)
                .unwrap();
        let fpr = listing.lines().find_map(|l| l.strip_prefix("fpr:")).unwrap();
        assert!(fpr.contains(&self.fingerprint), "{listing}");
        cert
    }
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
    fn decrypt(&mut self, msg: &[u8], signer: Option<&str>) -> (Vec<u8>, Option<String>) {
        if let Some(cert) = signer {
            self.import(cert);
        }
        let out = run(self.gpg().arg("--decrypt"), msg);
        let status = Gpg::status(&out);
        assert!(status.contains("[GNUPG:] DECRYPTION_OKAY"), "{status}");
        (out.stdout, Gpg::validsig(&status))
    }
    fn encrypt(&mut self, data: &[u8], to: &str, sign: bool) -> Vec<u8> {
        self.import(to);
        let to_fpr = fingerprint_of(to.as_bytes());
        let mut cmd = self.gpg();
        cmd.args(["--encrypt", "--recipient", &to_fpr]);
        if sign {
            cmd.args(["--sign", "--local-user", &self.fingerprint]);
        }
        run(&mut cmd, data).stdout
    }
    fn encrypt_armored(&mut self, data: &[u8], to: &str) -> String {
        self.import(to);
        let to_fpr = fingerprint_of(to.as_bytes());
        String::from_utf8(run(self.gpg().args(["--armor", "--encrypt", "--recipient", &to_fpr]), data).stdout)
            .unwrap()
    }
    fn sign(&mut self, data: &[u8]) -> String {
        String::from_utf8(
            run(self.gpg().args(["--armor", "--detach-sign", "--local-user", &self.fingerprint]), data)
                .stdout,
        )
        .unwrap()
    }
    fn verify(&mut self, sig: &str, data: &[u8], signer: &str) -> Option<String> {
        self.import(signer);
        let sig = self.file("sig.asc", sig.as_bytes());
        let data = self.file("data", data);
        let out = run(self.gpg().arg("--verify").arg(sig).arg(data), b"");
        let status = Gpg::status(&out);
        assert!(status.contains("[GNUPG:] GOODSIG"), "{status}");
        Gpg::validsig(&status)
    }
}

// ---- driving our engines -------------------------------------------------------------------

fn cx(rng: &mut ChaCha20Rng) -> Cx<'_> {
    Cx { rng, now: NOW }
}

/// PEP items: (item id, payload).
type Items = Vec<(String, Element)>;

/// The `<iq type='result'>` the simulator delivers for a PEP fetch.
fn pep_result(owner: &str, node: &str, items: Vec<(String, Element)>) -> Element {
    let mut list = el("items", NS_PUBSUB).with("node", node);
    for (id, item) in items {
        list.append_child(el("item", NS_PUBSUB).with("id", id).child(item));
    }
    el("iq", NS_CLIENT)
        .with("type", "result")
        .with("from", owner)
        .with("to", OURS)
        .child(el("pubsub", NS_PUBSUB).child(list))
}

/// Answers every fetch of `THEIRS`'s nodes from `pep` until the engine sends something;
/// returns what it sent and the events.
fn drive(
    engine: &mut dyn Engine,
    rng: &mut ChaCha20Rng,
    first: Output,
    pep: &dyn Fn(&str) -> Option<Items>,
) -> (Vec<Element>, Vec<Event>) {
    let mut sent = vec![];
    let mut events = vec![];
    let mut queue = vec![first];
    while let Some(out) = queue.pop() {
        events.extend(out.events);
        for action in out.actions {
            match action {
                Action::Send(s) => sent.push(s),
                Action::Fetch { owner, node } if owner.to_string() == THEIRS => match pep(&node) {
                    Some(items) => {
                        queue.push(engine.receive(&mut cx(rng), &pep_result(THEIRS, &node, items)).unwrap())
                    }
                    None => queue
                        .push(engine.fetch_failed(&mut cx(rng), &owner, &node, "item-not-found").unwrap()),
                },
                _ => {}
            }
        }
    }
    (sent, events)
}

fn keyserver(cert: Vec<u8>) -> impl Fn(&str) -> Option<Items> {
    move |node| {
        (node == xep0027::NODE_KEYSERVER)
            .then(|| vec![(fingerprint_of(&cert), text_el("pubkey", xep0027::NODE_KEYSERVER, b64(&cert)))])
    }
}

fn ox_nodes(cert: Vec<u8>) -> impl Fn(&str) -> Option<Items> {
    let fpr = fingerprint_of(&cert);
    move |node| {
        if node == ox::NODE_PUBLIC_KEYS {
            let list = el("public-keys-list", ox::NS).child(
                el("pubkey-metadata", ox::NS)
                    .with("v4-fingerprint", fpr.clone())
                    .with("date", "2026-01-01T00:00:00Z"),
            );
            Some(vec![("current".into(), list)])
        } else if node == ox::data_node(&fpr) {
            let item = el("pubkey", ox::NS).child(text_el("data", ox::NS, b64(&cert)));
            Some(vec![("2026-01-01T00:00:00Z".into(), item)])
        } else {
            None
        }
    }
}

fn theirs() -> BareJid {
    THEIRS.parse().unwrap()
}

/// Strips an armour's BEGIN/END lines and headers, as XEP-0027 §1 carries it.
fn strip_headers(armored: &str) -> String {
    let mut lines: Vec<&str> = armored.lines().collect();
    lines.retain(|l| !l.starts_with("-----"));
    while lines.first().is_some_and(|l| l.contains(": ") || l.is_empty()) {
        lines.remove(0);
    }
    lines.join("\n")
}

fn plaintexts(events: &[Event]) -> Vec<(String, Trust)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Plaintext { body, trust, .. } => Some((body.clone(), *trust)),
            _ => None,
        })
        .collect()
}

// ---- XEP-0027 ------------------------------------------------------------------------------

fn pgp_ours_to_theirs(tool: &mut dyn Tool) {
    let cert = tool.generate();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut engine = Pgp::new(OURS.parse().unwrap(), &mut rng, &EngineConfig::default());
    let body = "XEP-0027 to an independent peer ✓";
    let first = engine.send(&mut cx(&mut rng), &theirs(), body).unwrap();
    let (sent, _) = drive(&mut engine, &mut rng, first, &keyserver(cert));
    assert_eq!(sent.len(), 1);
    let x = sent[0].get_child("x", xep0027::NS_ENCRYPTED).unwrap().text();
    assert!(!x.contains("-----BEGIN"));
    let armored = keys::armor_full(Block::Message, &x);
    let (plain, signer) = tool.decrypt(armored.as_bytes(), None);
    assert_eq!(String::from_utf8(plain).unwrap(), body);
    assert_eq!(signer, None, "XEP-0027 does not sign messages");
}

fn pgp_theirs_to_ours(tool: &mut dyn Tool) {
    let cert = tool.generate();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut engine = Pgp::new(OURS.parse().unwrap(), &mut rng, &EngineConfig::default());
    let _ = cert;
    let body = "XEP-0027 from an independent peer ✓";
    let armored = tool.encrypt_armored(body.as_bytes(), &engine.key().public_armored().unwrap());
    let stanza = el("message", NS_CLIENT)
        .with("from", format!("{THEIRS}/tool"))
        .with("to", OURS)
        .with("type", "chat")
        .child(text_el("body", NS_CLIENT, "This message is encrypted."))
        .child(text_el("x", xep0027::NS_ENCRYPTED, strip_headers(&armored)));
    let out = engine.receive(&mut cx(&mut rng), &stanza).unwrap();
    assert_eq!(plaintexts(&out.events), [(body.to_owned(), Trust::Unverified)]);
}

fn presence_ours_to_theirs(tool: &mut dyn Tool) {
    tool.generate();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut engine = Pgp::new(OURS.parse().unwrap(), &mut rng, &EngineConfig::default());
    let x = engine.presence(&mut cx(&mut rng)).unwrap();
    let sig = keys::armor_full(Block::Signature, &x[0].text());
    let signer = tool.verify(&sig, b"", &engine.key().public_armored().unwrap());
    assert_eq!(signer.as_deref(), Some(engine.key().fingerprint()));
}

fn presence_theirs_to_ours(tool: &mut dyn Tool) {
    let cert = tool.generate();
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let mut engine = Pgp::new(OURS.parse().unwrap(), &mut rng, &EngineConfig::default());
    let sig = tool.sign(b"");
    let presence = el("presence", NS_CLIENT)
        .with("from", format!("{THEIRS}/tool"))
        .with("to", OURS)
        .child(text_el("x", xep0027::NS_SIGNED, strip_headers(&sig)));
    let first = engine.receive_presence(&mut cx(&mut rng), &presence).unwrap();
    let (_, events) = drive(&mut engine, &mut rng, first, &keyserver(cert));
    assert!(!events.iter().any(|e| matches!(e, Event::Alert { .. } | Event::Rejected { .. })), "{events:?}");
    assert_eq!(engine.presence_key(&theirs()), Some(tool.fingerprint().as_str()));
    // A status the signature does not cover is refused.
    let mut changed = presence.clone();
    changed.append_child(text_el("status", NS_CLIENT, "Away"));
    assert_eq!(engine.receive_presence(&mut cx(&mut rng), &changed).unwrap_err().code(), "bad-signature");
}

// ---- XEP-0373/0374 -------------------------------------------------------------------------

fn ox_ours_to_theirs(tool: &mut dyn Tool) {
    let cert = tool.generate();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut engine = Ox::new(OURS.parse().unwrap(), &mut rng, &EngineConfig::default());
    let body = "OX to an independent peer ✓ <&>";
    let first = engine.send(&mut cx(&mut rng), &theirs(), body).unwrap();
    let (sent, _) = drive(&mut engine, &mut rng, first, &ox_nodes(cert));
    assert_eq!(sent.len(), 1);
    let bytes = unb64(&sent[0].get_child("openpgp", ox::NS).unwrap().text());
    let (plain, signer) = tool.decrypt(&bytes, Some(&engine.key().public_armored().unwrap()));
    assert_eq!(signer.as_deref(), Some(engine.key().fingerprint()), "the tool verified our signature");
    let signcrypt: Element = String::from_utf8(plain).unwrap().parse().unwrap();
    assert!(signcrypt.is("signcrypt", ox::NS));
    assert_eq!(signcrypt.get_child("to", ox::NS).unwrap().attr("jid"), Some(THEIRS));
    assert_eq!(
        signcrypt.get_child("time", ox::NS).unwrap().attr("stamp"),
        Some(jabberwock_e2e::time::format_stamp(NOW).as_str())
    );
    assert!(signcrypt.get_child("rpad", ox::NS).is_some());
    let payload = signcrypt.get_child("payload", ox::NS).unwrap();
    assert_eq!(payload.get_child("body", NS_CLIENT).unwrap().text(), body);
}

fn ox_theirs_to_ours(tool: &mut dyn Tool) {
    let cert = tool.generate();
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let mut engine = Ox::new(OURS.parse().unwrap(), &mut rng, &EngineConfig::default());
    let body = "OX from an independent peer ✓";
    let our_bare = OURS.split('/').next().unwrap();
    let xml = format!(
        "<signcrypt xmlns='urn:xmpp:openpgp:0'><to jid='{our_bare}'/><time stamp='{}'/><rpad>q9-x</rpad><payload><body xmlns='jabber:client'>{body}</body></payload></signcrypt>",
        jabberwock_e2e::time::format_stamp(NOW - Duration::from_secs(5))
    );
    let bytes = tool.encrypt(xml.as_bytes(), &engine.key().public_armored().unwrap(), true);
    let stanza = el("message", NS_CLIENT)
        .with("from", format!("{THEIRS}/tool"))
        .with("to", OURS)
        .with("type", "chat")
        .child(text_el("openpgp", ox::NS, b64(&bytes)))
        .child(text_el("body", NS_CLIENT, "This message is encrypted using OpenPGP."));
    // The signer is not known yet: our engine fetches the sender's keys, then reads it.
    let first = engine.receive(&mut cx(&mut rng), &stanza).unwrap();
    let (_, events) = drive(&mut engine, &mut rng, first, &ox_nodes(cert));
    assert_eq!(plaintexts(&events), [(body.to_owned(), Trust::Unverified)], "{events:?}");
    // Unsigned (a <crypt/>-style message) is refused for IM.
    let unsigned = tool.encrypt(xml.as_bytes(), &engine.key().public_armored().unwrap(), false);
    let mut s = stanza.clone();
    let o = s.get_child_mut("openpgp", ox::NS).unwrap();
    let _ = o.take_nodes();
    o.append_text(b64(&unsigned));
    assert_eq!(engine.receive(&mut cx(&mut rng), &s).unwrap_err().code(), "not-signed");
}

// ---- the tests, each recorded for the interop table ---------------------------------------

/// The installed `sqop`, as `sqop version` reports it.
fn sqop() -> Vec<Part> {
    let out = tool_output("sqop", &["version"]);
    vec![Part::new("sqop", &version_in(&out).unwrap_or_else(|| panic!("sqop version: {out:?}")))]
}

/// The installed GnuPG, as `gpg --version` reports it.
fn gnupg() -> Vec<Part> {
    let out = tool_output("gpg", &["--version"]);
    vec![Part::new("GnuPG", &version_in(&out).unwrap_or_else(|| panic!("gpg --version: {out:?}")))]
}

const MESSAGE: &[&str] = &["encrypted message"];
const PRESENCE: &[&str] = &["signed presence"];
const SIGNCRYPT: &[&str] = &["signed and encrypted message"];

#[test]
fn sqop_reads_our_pgp_message() {
    let rec = Recorder::start();
    pgp_ours_to_theirs(&mut Sqop::new());
    rec.passed(Protocol::of(&jabberwock_e2e::openpgp::PGP), &sqop(), &[(OursToTheirs, MESSAGE)]);
}
#[test]
fn we_read_sqop_pgp_message() {
    let rec = Recorder::start();
    pgp_theirs_to_ours(&mut Sqop::new());
    rec.passed(Protocol::of(&jabberwock_e2e::openpgp::PGP), &sqop(), &[(TheirsToOurs, MESSAGE)]);
}
#[test]
fn sqop_verifies_our_signed_presence() {
    let rec = Recorder::start();
    presence_ours_to_theirs(&mut Sqop::new());
    rec.passed(Protocol::of(&jabberwock_e2e::openpgp::PGP), &sqop(), &[(OursToTheirs, PRESENCE)]);
}
#[test]
fn we_verify_sqop_signed_presence() {
    let rec = Recorder::start();
    presence_theirs_to_ours(&mut Sqop::new());
    rec.passed(Protocol::of(&jabberwock_e2e::openpgp::PGP), &sqop(), &[(TheirsToOurs, PRESENCE)]);
}
#[test]
fn sqop_reads_and_verifies_our_ox_message() {
    let rec = Recorder::start();
    ox_ours_to_theirs(&mut Sqop::new());
    rec.passed(Protocol::of(&jabberwock_e2e::openpgp::OX), &sqop(), &[(OursToTheirs, SIGNCRYPT)]);
}
#[test]
fn we_read_and_verify_sqop_ox_message() {
    let rec = Recorder::start();
    ox_theirs_to_ours(&mut Sqop::new());
    rec.passed(Protocol::of(&jabberwock_e2e::openpgp::OX), &sqop(), &[(TheirsToOurs, SIGNCRYPT)]);
}
#[test]
fn gpg_reads_our_pgp_message() {
    let rec = Recorder::start();
    pgp_ours_to_theirs(&mut Gpg::new());
    rec.passed(Protocol::of(&jabberwock_e2e::openpgp::PGP), &gnupg(), &[(OursToTheirs, MESSAGE)]);
}
#[test]
fn we_read_gpg_pgp_message() {
    let rec = Recorder::start();
    pgp_theirs_to_ours(&mut Gpg::new());
    rec.passed(Protocol::of(&jabberwock_e2e::openpgp::PGP), &gnupg(), &[(TheirsToOurs, MESSAGE)]);
}
#[test]
fn gpg_verifies_our_signed_presence() {
    let rec = Recorder::start();
    presence_ours_to_theirs(&mut Gpg::new());
    rec.passed(Protocol::of(&jabberwock_e2e::openpgp::PGP), &gnupg(), &[(OursToTheirs, PRESENCE)]);
}
#[test]
fn we_verify_gpg_signed_presence() {
    let rec = Recorder::start();
    presence_theirs_to_ours(&mut Gpg::new());
    rec.passed(Protocol::of(&jabberwock_e2e::openpgp::PGP), &gnupg(), &[(TheirsToOurs, PRESENCE)]);
}
#[test]
fn gpg_reads_and_verifies_our_ox_message() {
    let rec = Recorder::start();
    ox_ours_to_theirs(&mut Gpg::new());
    rec.passed(Protocol::of(&jabberwock_e2e::openpgp::OX), &gnupg(), &[(OursToTheirs, SIGNCRYPT)]);
}
#[test]
fn we_read_and_verify_gpg_ox_message() {
    let rec = Recorder::start();
    ox_theirs_to_ours(&mut Gpg::new());
    rec.passed(Protocol::of(&jabberwock_e2e::openpgp::OX), &gnupg(), &[(TheirsToOurs, SIGNCRYPT)]);
}
