//! XML Signature / XML Encryption interop with an independent implementation: the xmlsec1
//! command-line tool (apt `xmlsec1`, 1.2.37, libxmlsec1 over OpenSSL), driven as a child
//! process, both directions, both content ciphers.
//!
//! - ours → theirs: our engine sends to a peer whose key `openssl genpkey` made (fed to the
//!   engine as the answer to its PEP fetch); `xmlsec1 --decrypt` opens the `<EncryptedData/>`
//!   with that private key, and `xmlsec1 --verify` checks the enveloped signature of the
//!   decrypted payload with our public key. A changed body must then fail to verify.
//! - theirs → ours: xmlsec1 signs a payload template with the peer's key, then encrypts it
//!   (`--xml-data`, `--node-name`) with a template to our public key; our engine receives it in
//!   a message, fetches the signer's key and shows the plaintext.
//!
//! Feature `interop` (CI installs xmlsec1); without xmlsec1 or openssl the tests fail, they
//! are never skipped.

#![cfg(feature = "interop")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use jabberwock_e2e::time::{EPOCH, format_stamp};
use jabberwock_e2e::xml::{ElementExt, NS_CLIENT, NS_PUBSUB, el, text_el};
use jabberwock_e2e::xmlsec::{Cipher, KeyPair, NODE_KEYS, NS, PublicKey, Xmlsec};
use jabberwock_e2e::{Action, BareJid, Cx, Element, Engine, EngineConfig, Event, FullJid, Protocol, Trust};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

#[path = "common/interop_record.rs"]
mod interop_record;
use interop_record::{Direction, Part, Recorder, succeeded, tool_output, version_in};

const NOW: Duration = EPOCH;
const OURS: &str = "alice@a.example/rust";
const PEER: &str = "peer@x.example/xmlsec1";
const ID_ATTR: &str = "urn:xmpp:jabberwock:xmlsec:0:signed";

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("xmlsec-interop").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(program: &str, args: &[&str], cwd: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (apt install xmlsec1 openssl): {e}"))
}

fn ok(program: &str, args: &[&str], cwd: &Path) -> Output {
    succeeded(&format!("{program} {args:?}"), run(program, args, cwd))
}

/// An RSA-2048 key made by OpenSSL: (private key file, public key PEM).
fn openssl_key(d: &Path, name: &str) -> (String, String) {
    let private = format!("{name}.pem");
    let public = format!("{name}.pub.pem");
    ok("openssl", &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &private], d);
    ok("openssl", &["pkey", "-in", &private, "-pubout", "-out", &public], d);
    (private, std::fs::read_to_string(d.join(&public)).unwrap())
}

/// The fingerprint as OpenSSL sees it: SHA-256 of the DER SubjectPublicKeyInfo.
fn openssl_fingerprint(d: &Path, public_pem_file: &str) -> String {
    ok("openssl", &["pkey", "-pubin", "-in", public_pem_file, "-outform", "DER", "-out", "spki.der"], d);
    let out = ok("openssl", &["dgst", "-sha256", "-r", "spki.der"], d);
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

/// The answer to a fetch of `owner`'s key node, with one item per key.
fn key_node(owner: &BareJid, keys: &[&PublicKey]) -> Element {
    let mut items = el("items", NS_PUBSUB).with("node", NODE_KEYS);
    for k in keys {
        items.append_child(el("item", NS_PUBSUB).with("id", k.fingerprint.clone()).child(k.key_info()));
    }
    el("iq", NS_CLIENT)
        .with("type", "result")
        .with("from", owner.to_string())
        .child(el("pubsub", NS_PUBSUB).child(items))
}

fn engine(me: &str, seed: u64, cipher: Cipher) -> Xmlsec {
    let me: FullJid = me.parse().unwrap();
    Xmlsec::new(me, &mut ChaCha20Rng::seed_from_u64(seed), &EngineConfig::default()).with_cipher(cipher)
}

fn parse_document(text: &str) -> Element {
    let text = match text.find("?>") {
        Some(end) if text.starts_with("<?xml") => &text[end + 2..],
        _ => text,
    };
    text.trim().parse().unwrap()
}

fn ours_to_theirs(cipher: Cipher, name: &str) {
    let d = dir(name);
    let (peer_private, peer_public) = openssl_key(&d, "recipient");
    let peer_key = PublicKey::from_pem(&peer_public).unwrap();
    assert_eq!(peer_key.fingerprint, openssl_fingerprint(&d, "recipient.pub.pem"));
    // A second device of the peer, so xmlsec1 must find its own EncryptedKey among two.
    let other = KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(77)).unwrap();
    let peer: BareJid = PEER.parse::<FullJid>().unwrap().to_bare();
    let mut alice = engine(OURS, 1, cipher);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let body = "Hello xmlsec1 <&> 'quoted' \u{e9}t\u{e9}";
    let out = alice.send(&mut Cx { rng: &mut rng, now: NOW }, &peer, body).unwrap();
    assert!(matches!(&out.actions[..], [Action::Fetch { node, .. }] if node == NODE_KEYS), "{out:?}");
    let out = alice
        .receive(&mut Cx { rng: &mut rng, now: NOW }, &key_node(&peer, &[&peer_key, &other.public]))
        .unwrap();
    let stanza = out
        .actions
        .iter()
        .find_map(|a| if let Action::Send(s) = a { Some(s.clone()) } else { None })
        .expect("the message goes out once the keys arrived");
    let data = stanza.get_child("EncryptedData", "http://www.w3.org/2001/04/xmlenc#").unwrap();
    assert_eq!(
        data.get_child("KeyInfo", "http://www.w3.org/2000/09/xmldsig#").unwrap().children().count(),
        2
    );
    std::fs::write(d.join("message.xml"), String::from(data)).unwrap();
    let key_arg = format!("--privkey-pem:{}", peer_key.fingerprint);
    ok("xmlsec1", &["--decrypt", &key_arg, &peer_private, "--output", "payload.xml", "message.xml"], &d);
    let payload = std::fs::read_to_string(d.join("payload.xml")).unwrap();
    // libxml2 writes non-ASCII as character references.
    assert!(
        payload.contains("Hello xmlsec1 &lt;&amp;&gt; 'quoted' \u{e9}t\u{e9}")
            || payload.contains("Hello xmlsec1 &lt;&amp;&gt; 'quoted' &#xE9;t&#xE9;"),
        "{payload}"
    );
    assert!(payload.contains("<to>peer@x.example</to>") && payload.contains("<from>alice@a.example</from>"));
    std::fs::write(d.join("ours.pub.pem"), alice.public_key_pem()).unwrap();
    let verified = ok(
        "xmlsec1",
        &["--verify", "--pubkey-pem", "ours.pub.pem", "--id-attr:Id", ID_ATTR, "payload.xml"],
        &d,
    );
    assert!(String::from_utf8_lossy(&verified.stderr).contains("OK"), "{verified:?}");
    // Control: a changed body no longer verifies, nor does the right payload under another key.
    std::fs::write(d.join("changed.xml"), payload.replace("Hello", "Jello")).unwrap();
    let changed = run(
        "xmlsec1",
        &["--verify", "--pubkey-pem", "ours.pub.pem", "--id-attr:Id", ID_ATTR, "changed.xml"],
        &d,
    );
    assert!(!changed.status.success(), "xmlsec1 accepted a changed body");
    let wrong = run(
        "xmlsec1",
        &["--verify", "--pubkey-pem", "recipient.pub.pem", "--id-attr:Id", ID_ATTR, "payload.xml"],
        &d,
    );
    assert!(!wrong.status.success(), "xmlsec1 verified under the wrong key");
}

fn theirs_to_ours(cipher: Cipher, name: &str) {
    let d = dir(name);
    let (peer_private, peer_public) = openssl_key(&d, "sender");
    let peer_key = PublicKey::from_pem(&peer_public).unwrap();
    assert_eq!(peer_key.fingerprint, openssl_fingerprint(&d, "sender.pub.pem"));
    let mut bob = engine("bob@b.example/rust", 3, cipher);
    std::fs::write(d.join("bob.pub.pem"), bob.public_key_pem()).unwrap();
    let body = "Hi from xmlsec1 & <OpenSSL> \u{2603}";
    let escaped = body.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let template = format!(
        "<signed xmlns=\"{NS}\" Id=\"mx0001\">\n  <to>bob@b.example</to>\n  <from>peer@x.example</from>\n  \
         <time>{}</time>\n  <body>{escaped}</body>\n  \
         <Signature xmlns=\"http://www.w3.org/2000/09/xmldsig#\">\n    <SignedInfo>\n      \
         <CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\n      \
         <SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/>\n      \
         <Reference URI=\"#mx0001\">\n        <Transforms>\n          \
         <Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>\n          \
         <Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\n        </Transforms>\n        \
         <DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/>\n        <DigestValue/>\n      \
         </Reference>\n    </SignedInfo>\n    <SignatureValue/>\n    <KeyInfo><KeyName/></KeyInfo>\n  \
         </Signature>\n</signed>\n",
        format_stamp(NOW - Duration::from_secs(5))
    );
    std::fs::write(d.join("template.xml"), template).unwrap();
    let sign_key = format!("--privkey-pem:{}", peer_key.fingerprint);
    ok(
        "xmlsec1",
        &[
            "--sign",
            &sign_key,
            &peer_private,
            "--id-attr:Id",
            ID_ATTR,
            "--output",
            "signed.xml",
            "template.xml",
        ],
        &d,
    );
    let enc_template = format!(
        "<EncryptedData xmlns=\"http://www.w3.org/2001/04/xmlenc#\" Type=\"http://www.w3.org/2001/04/xmlenc#Element\">\
         <EncryptionMethod Algorithm=\"{}\"/>\
         <KeyInfo xmlns=\"http://www.w3.org/2000/09/xmldsig#\">\
         <EncryptedKey xmlns=\"http://www.w3.org/2001/04/xmlenc#\" Recipient=\"bob@b.example\">\
         <EncryptionMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p\"/>\
         <KeyInfo xmlns=\"http://www.w3.org/2000/09/xmldsig#\"><KeyName/></KeyInfo>\
         <CipherData><CipherValue/></CipherData></EncryptedKey></KeyInfo>\
         <CipherData><CipherValue/></CipherData></EncryptedData>",
        cipher.uri()
    );
    std::fs::write(d.join("enc-template.xml"), enc_template).unwrap();
    let enc_key = format!("--pubkey-pem:{}", bob.fingerprint());
    ok(
        "xmlsec1",
        &[
            "--encrypt",
            &enc_key,
            "bob.pub.pem",
            "--session-key",
            "aes-128",
            "--xml-data",
            "signed.xml",
            "--node-name",
            ID_ATTR,
            "--output",
            "encrypted.xml",
            "enc-template.xml",
        ],
        &d,
    );
    let encrypted = parse_document(&std::fs::read_to_string(d.join("encrypted.xml")).unwrap());
    let message = el("message", NS_CLIENT)
        .with("from", PEER)
        .with("to", "bob@b.example")
        .with("type", "chat")
        .child(text_el("body", NS_CLIENT, "fallback"))
        .child(encrypted);
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    // The signer is unknown: Bob fetches the peer's keys and holds the message.
    let out = bob.receive(&mut Cx { rng: &mut rng, now: NOW }, &message).unwrap();
    let peer: BareJid = PEER.parse::<FullJid>().unwrap().to_bare();
    assert!(
        matches!(&out.actions[..], [Action::Fetch { owner, node }] if *owner == peer && node == NODE_KEYS),
        "{out:?}"
    );
    let out = bob.receive(&mut Cx { rng: &mut rng, now: NOW }, &key_node(&peer, &[&peer_key])).unwrap();
    let shown: Vec<(String, Trust)> = out
        .events
        .iter()
        .filter_map(|e| {
            if let Event::Plaintext { body, trust, .. } = e { Some((body.clone(), *trust)) } else { None }
        })
        .collect();
    assert_eq!(shown, vec![(body.to_owned(), Trust::Unverified)], "{out:?}");
    // The same stanza again is a replay.
    let again = bob.receive(&mut Cx { rng: &mut rng, now: NOW }, &message).unwrap_err();
    assert_eq!(again.code(), "replay");
}

/// The installed xmlsec1, as `xmlsec1 --version` reports it.
fn xmlsec1() -> Vec<Part> {
    let out = tool_output("xmlsec1", &["--version"]);
    vec![Part::new("xmlsec1", &version_in(&out).unwrap_or_else(|| panic!("xmlsec1 --version: {out:?}")))]
}

/// One recorded exchange with xmlsec1: a signed message in `cipher`, the way `direction`
/// says, in the working directory `dir`.
fn exchange(direction: Direction, cipher: Cipher, dir: &str) {
    let rec = Recorder::start();
    match direction {
        Direction::OursToTheirs => ours_to_theirs(cipher, dir),
        Direction::TheirsToOurs => theirs_to_ours(cipher, dir),
    }
    let what = match cipher {
        Cipher::Aes128Gcm => "signed message in AES-128-GCM",
        Cipher::Aes128Cbc => "signed message in AES-128-CBC",
    };
    rec.passed(Protocol::of(&jabberwock_e2e::xmlsec::PROTOCOL), &xmlsec1(), &[(direction, &[what])]);
}

/// The tests, one per row of `reports/interop.md`: name, direction, cipher, working directory.
macro_rules! exchanges {
    ($($name:ident: $direction:ident, $cipher:ident, $dir:literal;)+) => {$(
        #[test]
        fn $name() {
            exchange(Direction::$direction, Cipher::$cipher, $dir);
        }
    )+};
}

exchanges! {
    ours_to_xmlsec1_aes_gcm: OursToTheirs, Aes128Gcm, "ours-gcm";
    ours_to_xmlsec1_aes_cbc: OursToTheirs, Aes128Cbc, "ours-cbc";
    xmlsec1_to_ours_aes_gcm: TheirsToOurs, Aes128Gcm, "theirs-gcm";
    xmlsec1_to_ours_aes_cbc: TheirsToOurs, Aes128Cbc, "theirs-cbc";
}
