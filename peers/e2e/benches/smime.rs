//! Costs of the `smime` engine (RFC 3923) next to the raw work the same steps need, measured in
//! the same run. A plain binary (`harness = false`, like the other engine benches), not a timed
//! test:
//!
//! ```text
//! cargo bench -p jabberwock-e2e --bench smime            # full run
//! cargo bench -p jabberwock-e2e --bench smime -- --quick # a smoke run
//! ```
//!
//! - message: one `<e2e/>` message each way in turn, send and receive (CPIM, SignedData with
//!   RSA-2048/SHA-256, EnvelopedData to the peer's and the sender's own certificate with
//!   AES-128-CBC, base64, XML; on receipt decryption, signature, certificate chain and CPIM
//!   checks).
//! - CMS layers: the same sign + envelope (two recipients) + open + verify through the
//!   engine's `envelope` module, without CPIM, XML and the certificate checks.
//! - raw primitives: one RSA-2048 PKCS #1 v1.5 signature and its verification, two RSA key
//!   transports and one RSA decryption, AES-128-CBC both ways over the same length, SHA-256 of
//!   content and attributes, one Ed25519 verification (the certificate's CA signature).
//! - enrolment: a new engine (RSA-2048 key generation) and its certificate, against the bare
//!   `RsaPrivateKey::new`.

// The benchmark measures wall time: the one place `Instant::now` is allowed (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use common::rng06::Rng06;
use common::{ALICE, BOB, BODY, NOW, header, quick, row};
use ed25519_dalek::{Signer, SigningKey, Verifier};
use jabberwock_e2e::smime::{Smime, envelope};
use jabberwock_e2e::xml::{ElementExt, NS_CLIENT, NS_PUBSUB, el};
use jabberwock_e2e::{Action, BareJid, Cx, Element, Engine, EngineConfig, Event, Output};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rsa::{Pkcs1v15Encrypt, Pkcs1v15Sign, RsaPrivateKey};
use sha2::{Digest, Sha256};

fn config() -> EngineConfig {
    EngineConfig { ca: Some([9u8; 32]), ..EngineConfig::default() }
}

/// Two devices, a PEP store, and a clock that moves a second per message.
struct Pair {
    alice: Smime,
    bob: Smime,
    rng: ChaCha20Rng,
    now: Duration,
    pep: BTreeMap<BareJid, Vec<Element>>,
    shown: usize,
}

impl Pair {
    fn new(seed: u64) -> Pair {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let alice = Smime::new(ALICE.parse().unwrap(), &mut rng, &config());
        let bob = Smime::new(BOB.parse().unwrap(), &mut rng, &config());
        let mut p = Pair { alice, bob, rng, now: NOW, pep: BTreeMap::new(), shown: 0 };
        for a in [true, false] {
            let out =
                p.engine(a).publish(&mut Cx { rng: &mut ChaCha20Rng::seed_from_u64(1), now: NOW }).unwrap();
            p.run(a, out);
        }
        p
    }

    fn engine(&mut self, alice: bool) -> &mut Smime {
        if alice { &mut self.alice } else { &mut self.bob }
    }

    fn run(&mut self, by_alice: bool, out: Output) {
        let mut queue = vec![(by_alice, out)];
        while let Some((by, out)) = queue.pop() {
            self.shown += out.events.iter().filter(|e| matches!(e, Event::Plaintext { .. })).count();
            for a in out.actions {
                match a {
                    Action::Publish { item, .. } => {
                        let owner: BareJid = (if by { ALICE } else { BOB })
                            .parse::<jabberwock_e2e::FullJid>()
                            .unwrap()
                            .to_bare();
                        self.pep.entry(owner).or_default().push(item);
                    }
                    Action::Fetch { owner, node } => {
                        let mut items = el("items", NS_PUBSUB).with("node", node);
                        for (i, it) in self.pep.get(&owner).into_iter().flatten().enumerate() {
                            items.append_child(
                                el("item", NS_PUBSUB).with("id", i.to_string()).child(it.clone()),
                            );
                        }
                        let iq = el("iq", NS_CLIENT)
                            .with("type", "result")
                            .with("from", owner.to_string())
                            .child(el("pubsub", NS_PUBSUB).child(items));
                        let (rng, now) = (&mut self.rng, self.now);
                        let engine = if by { &mut self.alice } else { &mut self.bob };
                        let o = engine.receive(&mut Cx { rng, now }, &iq).unwrap();
                        queue.push((by, o));
                    }
                    Action::Send(mut s) => {
                        s.set("from", if by { ALICE } else { BOB });
                        let (rng, now) = (&mut self.rng, self.now);
                        let engine = if by { &mut self.bob } else { &mut self.alice };
                        let o = engine.receive(&mut Cx { rng, now }, &s).unwrap();
                        queue.push((!by, o));
                    }
                }
            }
        }
    }

    fn send(&mut self, from_alice: bool, body: &str) {
        self.now += Duration::from_secs(1);
        let to: BareJid = if from_alice { "bob@b.example" } else { "alice@a.example" }.parse().unwrap();
        let (rng, now) = (&mut self.rng, self.now);
        let engine = if from_alice { &mut self.alice } else { &mut self.bob };
        let out = engine.send(&mut Cx { rng, now }, &to, body).unwrap();
        self.run(from_alice, out);
    }
}

fn main() {
    let (messages, enrolments) = if quick() { (10u32, 1u32) } else { (200, 5) };
    header(&["what", "count", "measured", "raw primitives", "measured / raw"]);
    let body = BODY;

    // Engine: send + receive, alternating directions (first message out of the loop: it
    // fetches the certificates).
    let mut p = Pair::new(1);
    p.send(true, "warm-up");
    p.send(false, "warm-up");
    assert_eq!(p.shown, 2);
    let t = Instant::now();
    for i in 0..messages {
        p.send(i % 2 == 0, body);
    }
    let engine = t.elapsed();
    assert_eq!(p.shown, messages as usize + 2);

    // Raw primitives for the same work.
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let signer = RsaPrivateKey::new(&mut Rng06(&mut rng), 2048).unwrap();
    let recipient = RsaPrivateKey::new(&mut Rng06(&mut rng), 2048).unwrap();
    let ca = SigningKey::from_bytes(&[3u8; 32]);
    let tbs = vec![0x5au8; 700];
    let ca_sig = ca.sign(&tbs);
    // The SignedData is about the size the engine encrypts (content + certificate + signature).
    let content_len = 1500;
    let raw = {
        let t = Instant::now();
        for _ in 0..messages {
            let mut content = vec![0u8; content_len];
            rng.fill_bytes(&mut content);
            let digest = Sha256::digest(&content[..300]);
            let attrs_digest = Sha256::digest(digest);
            let sig = signer.sign(Pkcs1v15Sign::new::<Sha256>(), &attrs_digest).unwrap();
            let (mut cek, mut iv) = ([0u8; 16], [0u8; 16]);
            rng.fill_bytes(&mut cek);
            rng.fill_bytes(&mut iv);
            let ct = cbc::Encryptor::<aes::Aes128>::new(&cek.into(), &iv.into())
                .encrypt_padded_vec_mut::<Pkcs7>(&content);
            let k1 = recipient.to_public_key().encrypt(&mut Rng06(&mut rng), Pkcs1v15Encrypt, &cek).unwrap();
            black_box(signer.to_public_key().encrypt(&mut Rng06(&mut rng), Pkcs1v15Encrypt, &cek).unwrap());
            let cek2 = recipient.decrypt_blinded(&mut Rng06(&mut rng), Pkcs1v15Encrypt, &k1).unwrap();
            let key: [u8; 16] = cek2.try_into().unwrap();
            let pt = cbc::Decryptor::<aes::Aes128>::new(&key.into(), &iv.into())
                .decrypt_padded_vec_mut::<Pkcs7>(&ct)
                .unwrap();
            let d2 = Sha256::digest(Sha256::digest(&pt[..300]));
            signer.to_public_key().verify(Pkcs1v15Sign::new::<Sha256>(), &d2, &sig).unwrap();
            ca.verifying_key().verify(&tbs, &ca_sig).unwrap();
        }
        t.elapsed()
    };
    row("message (send + receive, 2 key transports)", messages, engine, raw);

    // The engine's CMS layers alone.
    let mut q = Pair::new(3);
    let mut cx = Cx { rng: &mut ChaCha20Rng::seed_from_u64(4), now: NOW };
    let a_cert = q.alice.enrol_now(&mut cx).unwrap().clone();
    let b_cert = q.bob.enrol_now(&mut cx).unwrap().clone();
    let a_key: RsaPrivateKey =
        rsa::pkcs8::DecodePrivateKey::from_pkcs8_pem(&q.alice.key_pem().unwrap()).unwrap();
    let b_key: RsaPrivateKey =
        rsa::pkcs8::DecodePrivateKey::from_pkcs8_pem(&q.bob.key_pem().unwrap()).unwrap();
    let cpim = vec![b'x'; 300];
    let t = Instant::now();
    for _ in 0..messages {
        let signed = envelope::sign(&a_key, &a_cert, &cpim, NOW).unwrap();
        let env = envelope::envelope(&signed, &[&b_cert, &a_cert], &mut q.rng).unwrap();
        let (_, inner) = envelope::open(&env, &b_cert, &b_key, &mut q.rng).unwrap();
        black_box(envelope::verify(&inner, &[]).unwrap());
    }
    row("CMS layers (sign, envelope, open, verify)", messages, t.elapsed(), raw);

    // Enrolment.
    let t = Instant::now();
    for i in 0..enrolments {
        let mut r = ChaCha20Rng::seed_from_u64(u64::from(i) + 10);
        let mut e = Smime::new(ALICE.parse().unwrap(), &mut r, &config());
        black_box(e.enrol_now(&mut Cx { rng: &mut r, now: NOW }).unwrap());
    }
    let engine = t.elapsed();
    let t = Instant::now();
    for i in 0..enrolments {
        let mut r = ChaCha20Rng::seed_from_u64(u64::from(i) + 10);
        black_box(RsaPrivateKey::new(&mut Rng06(&mut r), 2048).unwrap());
    }
    row("enrolment (RSA-2048 key + certificate)", enrolments, engine, t.elapsed());
}
