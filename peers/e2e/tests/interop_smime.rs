//! S/MIME (RFC 3923) interop with an independent implementation: OpenSSL 3's `openssl cms`,
//! driven as child processes in a temporary directory. The other party's RSA key and
//! certificate are made by OpenSSL (`genrsa`, `req`, `x509 -req`), issued by the scenario CA
//! our engine derives (its Ed25519 key exported as PKCS#8), with the `id-on-xmppAddr`
//! subjectAltName of RFC 6120 §13.7.1.4.
//!
//! - ours → theirs: our engine sends an `<e2e/>` message; `openssl cms -decrypt` with the
//!   OpenSSL-made key, then `openssl cms -verify -CAfile` against the CA certificate, must
//!   give back the CPIM object with the stanza XML.
//! - theirs → ours: `openssl cms -sign` then `openssl cms -encrypt -aes128` of a CPIM object
//!   the test writes, to our certificate (exported PEM), wrapped in `<e2e/>`: our engine shows
//!   the body as unverified, then verified once the fingerprint is compared. The second
//!   message is signed with `-md sha1` (RFC 3923 §6.10's mandatory digest, accepted on receipt).
//!
//! Feature `interop`; a missing `openssl` fails the test, it is never skipped.

#![cfg(feature = "interop")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use jabberwock_e2e::smime::pki::Cert;
use jabberwock_e2e::smime::{NODE, NS_E2E, Smime};
use jabberwock_e2e::time::format_stamp;
use jabberwock_e2e::xml::{ElementExt, NS_CLIENT, NS_PUBSUB, el, text_el};
use jabberwock_e2e::{
    Action, BareJid, Cx, Element, Engine, EngineConfig, Event, OutOfBand, Protocol, Trust, VerificationResult,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

#[path = "common/interop_record.rs"]
mod interop_record;
use interop_record::{Direction, Part, Recorder, tool_output, version_in};

const SEED: [u8; 32] = [42u8; 32];

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jabberwock-smime-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `openssl args…` in `dir`; panics with its stderr unless it succeeds.
fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the `openssl` command (OpenSSL 3) is installed");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "openssl {args:?} failed: {stderr}");
    stderr
}

/// An RSA-2048 key and a certificate for `jid`, both made by OpenSSL, issued by the CA in
/// `ca.pem`/`ca.key`. Returns the certificate (DER, parsed by us for its fingerprint/validity).
fn openssl_identity(dir: &Path, name: &str, jid: &str) -> Cert {
    openssl(dir, &["genrsa", "-out", &format!("{name}.key"), "2048"]);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/O=OpenSSL/CN={jid}"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=emailProtection\nsubjectAltName=otherName:1.3.6.1.5.5.7.8.5;UTF8:{jid}\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "0x4a57",
            "-days",
            "30",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
    openssl(dir, &["x509", "-in", &format!("{name}.pem"), "-outform", "DER", "-out", &format!("{name}.der")]);
    Cert::from_der(&std::fs::read(dir.join(format!("{name}.der"))).unwrap()).unwrap()
}

/// The installed OpenSSL, as `openssl version` reports it.
fn openssl_version() -> Vec<Part> {
    let out = tool_output("openssl", &["version"]);
    vec![Part::new("OpenSSL", &version_in(&out).unwrap_or_else(|| panic!("openssl version: {out:?}")))]
}

fn honest() -> EngineConfig {
    EngineConfig { ca: Some(SEED), ..EngineConfig::default() }
}

fn write_ca(dir: &Path, engine: &Smime) {
    std::fs::write(dir.join("ca.pem"), engine.ca_certificate_pem()).unwrap();
    std::fs::write(dir.join("ca.key"), engine.ca_key_pem()).unwrap();
}

#[test]
fn ours_to_openssl() {
    let rec = Recorder::start();
    let dir = workdir("ours-to-theirs");
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut alice = Smime::new("alice@a.example/phone".parse().unwrap(), &mut rng, &honest());
    write_ca(&dir, &alice);
    let bob = openssl_identity(&dir, "bob", "bob@b.example");
    // Our clock: a minute into the OpenSSL certificate's validity.
    let now = bob.validity().0 + Duration::from_secs(60);
    let mut cx = Cx { rng: &mut rng, now };
    alice.publish(&mut cx).unwrap();
    let to: BareJid = "bob@b.example".parse().unwrap();
    let out = alice.send(&mut cx, &to, "Wherefore art thou, Romeo?").unwrap();
    assert!(matches!(&out.actions[..], [Action::Fetch { node, .. }] if node == NODE), "{out:?}");
    // Bob's certificate arrives through PEP.
    let result = el("iq", NS_CLIENT).with("type", "result").with("from", "bob@b.example").child(
        el("pubsub", NS_PUBSUB).child(el("items", NS_PUBSUB).with("node", NODE).child(
            el("item", NS_PUBSUB).with("id", bob.fingerprint.clone()).child(text_el(
                "certificate",
                NODE,
                b64(&bob.der),
            )),
        )),
    );
    let out = alice.receive(&mut cx, &result).unwrap();
    let stanza = out
        .actions
        .iter()
        .find_map(|a| if let Action::Send(s) = a { Some(s.clone()) } else { None })
        .unwrap_or_else(|| panic!("no message sent: {out:?}"));
    let e2e = stanza.get_child("e2e", NS_E2E).unwrap().text();
    let der = base64::engine::general_purpose::STANDARD.decode(e2e.trim()).unwrap();
    std::fs::write(dir.join("msg.der"), der).unwrap();
    // OpenSSL decrypts with its own key…
    openssl(
        &dir,
        &[
            "cms",
            "-decrypt",
            "-inform",
            "DER",
            "-in",
            "msg.der",
            "-recip",
            "bob.pem",
            "-inkey",
            "bob.key",
            "-binary",
            "-out",
            "signed.der",
        ],
    );
    // …and verifies the signature and the chain to the CA at our clock.
    let attime = now.as_secs().to_string();
    let stderr = openssl(
        &dir,
        &[
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            "signed.der",
            "-CAfile",
            "ca.pem",
            "-binary",
            "-attime",
            &attime,
            "-out",
            "cpim.txt",
        ],
    );
    assert!(stderr.contains("Verification successful"), "{stderr}");
    let cpim = std::fs::read_to_string(dir.join("cpim.txt")).unwrap();
    assert!(cpim.starts_with("Content-type: Message/CPIM\r\n\r\n"), "{cpim}");
    assert!(cpim.contains("From: <im:alice@a.example>\r\n"), "{cpim}");
    assert!(cpim.contains("To: <im:bob@b.example>\r\n"), "{cpim}");
    assert!(cpim.contains(&format!("DateTime: {}\r\n", format_stamp(now))), "{cpim}");
    assert!(cpim.contains("Content-type: application/xmpp+xml; charset=utf-8\r\n\r\n<message"), "{cpim}");
    let xml = cpim.split("\r\n\r\n").nth(3).unwrap();
    let message: Element = xml.parse().unwrap();
    assert_eq!(message.attr("to"), Some("bob@b.example"));
    assert_eq!(message.get_child("body", NS_CLIENT).unwrap().text(), "Wherefore art thou, Romeo?");
    // The signer OpenSSL saw is our certificate.
    openssl(
        &dir,
        &[
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            "signed.der",
            "-CAfile",
            "ca.pem",
            "-attime",
            &attime,
            "-signer",
            "signer.pem",
            "-out",
            "/dev/null",
        ],
    );
    let signer = std::fs::read_to_string(dir.join("signer.pem")).unwrap();
    assert_eq!(signer.trim(), alice.certificate().unwrap().pem().trim());
    let _ = std::fs::remove_dir_all(&dir);
    rec.passed(
        Protocol::of(&jabberwock_e2e::smime::PROTOCOL),
        &openssl_version(),
        &[(Direction::OursToTheirs, &["signed and enveloped message (`openssl cms`)"])],
    );
}

#[test]
fn openssl_to_ours() {
    let rec = Recorder::start();
    let dir = workdir("theirs-to-ours");
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut bob = Smime::new("bob@b.example/laptop".parse().unwrap(), &mut rng, &honest());
    write_ca(&dir, &bob);
    let alice = openssl_identity(&dir, "alice", "alice@a.example");
    let now = alice.validity().0 + Duration::from_secs(60);
    let mut cx = Cx { rng: &mut rng, now };
    let ours = bob.enrol_now(&mut cx).unwrap().clone();
    std::fs::write(dir.join("bob.pem"), ours.pem()).unwrap();
    // `md`: the signer's digest; RFC 3923 §6.10 makes SHA-1 mandatory to implement on receipt.
    let send = |body: &str, n: u32, md: &str| -> Element {
        let cpim = format!(
            "Content-type: Message/CPIM\r\n\r\nFrom: Alice <im:alice@a.example>\r\nTo: Bob <im:bob@b.example>\r\n\
             DateTime: {}\r\n\r\nContent-type: application/xmpp+xml; charset=utf-8\r\n\r\n\
             <message xmlns='jabber:client' from='alice@a.example/phone' to='bob@b.example' type='chat'>\
             <body>{body}</body></message>",
            format_stamp(now + Duration::from_secs(u64::from(n)))
        );
        std::fs::write(dir.join("cpim.txt"), cpim).unwrap();
        openssl(
            &dir,
            &[
                "cms",
                "-sign",
                "-in",
                "cpim.txt",
                "-signer",
                "alice.pem",
                "-inkey",
                "alice.key",
                "-md",
                md,
                "-binary",
                "-nodetach",
                "-outform",
                "DER",
                "-out",
                "signed.der",
            ],
        );
        openssl(
            &dir,
            &[
                "cms",
                "-encrypt",
                "-in",
                "signed.der",
                "-binary",
                "-aes128",
                "-outform",
                "DER",
                "-out",
                "env.der",
                "bob.pem",
            ],
        );
        let der = std::fs::read(dir.join("env.der")).unwrap();
        el("message", NS_CLIENT)
            .with("from", "alice@a.example/phone")
            .with("to", "bob@b.example/laptop")
            .with("type", "chat")
            .child(text_el("e2e", NS_E2E, b64(&der)))
    };
    let first = send("hello from OpenSSL", 0, "sha256");
    let second = send("verified now", 1, "sha1");
    let out = bob.receive(&mut cx, &first).unwrap_or_else(|e| panic!("{e}"));
    let shown: Vec<(String, Trust)> = out
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Plaintext { body, trust, .. } => Some((body.clone(), *trust)),
            _ => None,
        })
        .collect();
    assert_eq!(shown, [("hello from OpenSSL".to_owned(), Trust::Unverified)]);
    assert!(
        out.events.iter().any(
            |e| matches!(e, Event::TrustChanged { fingerprint, .. } if *fingerprint == alice.fingerprint)
        )
    );
    // Compare fingerprints out of band.
    let out = bob
        .verify(
            &mut cx,
            &"alice@a.example".parse().unwrap(),
            &OutOfBand { peer_says: vec![alice.fingerprint.clone()] },
        )
        .unwrap();
    assert!(
        out.events.iter().any(|e| matches!(e, Event::Verification { result: VerificationResult::Match, .. }))
    );
    let out = bob.receive(&mut cx, &second).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.events.iter().any(
            |e| matches!(e, Event::Plaintext { body, trust: Trust::Verified, .. } if body == "verified now")
        ),
        "{out:?}"
    );
    // The same OpenSSL message to a Bob of another CA: the signer is not trusted.
    let mut rng2 = ChaCha20Rng::seed_from_u64(3);
    let mut other = Smime::new(
        "bob@b.example/laptop".parse().unwrap(),
        &mut rng2,
        &EngineConfig { ca: Some([1u8; 32]), ..EngineConfig::default() },
    );
    let cert = other.enrol_now(&mut Cx { rng: &mut rng2, now }).unwrap().clone();
    std::fs::write(dir.join("bob.pem"), cert.pem()).unwrap();
    let third = send("to the other CA", 2, "sha256");
    let err = other.receive(&mut Cx { rng: &mut rng2, now }, &third).unwrap_err();
    assert_eq!(err.code(), "untrusted-certificate");
    let _ = std::fs::remove_dir_all(&dir);
    rec.passed(
        Protocol::of(&jabberwock_e2e::smime::PROTOCOL),
        &openssl_version(),
        &[(
            Direction::TheirsToOurs,
            &[
                "signed and enveloped message (`openssl cms`)",
                "SHA-1 signature",
                "signer of another CA refused",
            ],
        )],
    );
}
