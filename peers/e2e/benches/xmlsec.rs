//! Per-message cost of the `xmlsec` engine (sign + encrypt on one side, decrypt + verify on
//! the other) next to the cost of the raw primitives doing the same work on the same payload,
//! measured in the same run. A plain binary (`harness = false`), like the other engine
//! benches:
//!
//! ```text
//! cargo bench -p jabberwock-e2e --bench xmlsec            # 200 messages
//! cargo bench -p jabberwock-e2e --bench xmlsec -- --quick # a smoke run
//! ```
//!
//! One message from Alice to Bob's single device (Alice has no other device: one
//! EncryptedKey). The engine builds the payload, canonicalises it twice (the Reference, then
//! SignedInfo; each a parse of the serialised element), signs RSA-2048/SHA-256, encrypts the
//! payload with AES-128 (GCM or CBC) and wraps the key with RSA-OAEP; Bob unwraps, decrypts,
//! parses, resolves the Reference, canonicalises twice, digests, verifies, checks the
//! statements. The primitives line does those crypto and c14n calls on the same bytes:
//! exc-c14n of the payload without its Signature and of SignedInfo (each parsed from text),
//! SHA-256, RSA sign and verify, RSA-OAEP encrypt and decrypt, AES-128 both ways — twice
//! each c14n and digest (sender and receiver). The two lines alternate message by message, so
//! both see the same machine load.

// The benchmark measures wall time: the one place `Instant::now` is allowed (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::rng06::Rng06;
use common::{ALICE, BOB, BODY, NOW, header, quick, row_with};
use jabberwock_e2e::xml::ElementExt;
use jabberwock_e2e::xmlsec::{Cipher, KeyPair, Xmlsec};
use jabberwock_e2e::{Action, BareJid, Cx, Element, Engine, EngineConfig, Event, FullJid};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use rsa::Oaep;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::signature::{Signer, Verifier};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use xml_sec::c14n::{C14nAlgorithm, canonicalize_xml};

fn row(what: &str, n: u32, engine: Duration, raw: Duration) {
    row_with(what, n, engine, raw, 2);
}

/// Alice and Bob, each holding the other's key (as a fetched key node would give it).
fn pair(cipher: Cipher, alice_key: &KeyPair, bob_key: &KeyPair) -> (Xmlsec, Xmlsec) {
    let config = EngineConfig::default();
    let mut alice =
        Xmlsec::with_key(ALICE.parse::<FullJid>().unwrap(), alice_key.clone(), &config).with_cipher(cipher);
    let mut bob =
        Xmlsec::with_key(BOB.parse::<FullJid>().unwrap(), bob_key.clone(), &config).with_cipher(cipher);
    alice.import_peer_key(&bare(BOB), &bob.public_key_pem()).unwrap();
    bob.import_peer_key(&bare(ALICE), &alice.public_key_pem()).unwrap();
    (alice, bob)
}

fn bare(s: &str) -> BareJid {
    s.parse::<FullJid>().unwrap().to_bare()
}

/// One message through both engines; returns the stanza.
fn one(alice: &mut Xmlsec, bob: &mut Xmlsec, rng: &mut ChaCha20Rng) -> Element {
    let out = alice.send(&mut Cx { rng, now: NOW }, &bare(BOB), BODY).unwrap();
    let Some(Action::Send(mut stanza)) = out.actions.into_iter().next() else { panic!("no stanza") };
    stanza.set("from", ALICE);
    let out = bob.receive(&mut Cx { rng, now: NOW }, &stanza).unwrap();
    assert!(out.events.iter().any(|e| matches!(e, Event::Plaintext { body, .. } if body == BODY)));
    stanza
}

/// The raw work of one message on the payload bytes the engine made.
struct Raw {
    reference: String,
    signed_info: String,
    payload: Vec<u8>,
}

fn raw_message(raw: &Raw, cipher: Cipher, alice: &KeyPair, bob: &KeyPair, rng: &mut ChaCha20Rng) {
    let exc = C14nAlgorithm::from_uri("http://www.w3.org/2001/10/xml-exc-c14n#").unwrap();
    let mut rng06 = Rng06(rng);
    // Sender: digest, SignedInfo, signature, content encryption, key transport.
    let digest = Sha256::digest(canonicalize_xml(raw.reference.as_bytes(), &exc).unwrap());
    let si = canonicalize_xml(raw.signed_info.as_bytes(), &exc).unwrap();
    let sig: Signature = SigningKey::<Sha256>::new(alice.private.clone()).sign(&si);
    let mut key = [0u8; 16];
    rng06.0.fill_bytes(&mut key);
    let content = cipher.seal(&key, &raw.payload, rng06.0);
    let wrapped = bob.public.key.encrypt(&mut rng06, Oaep::new::<Sha1>(), &key).unwrap();
    // Receiver: key transport, content, digest, signature.
    let key2 = bob.private.decrypt_blinded(&mut rng06, Oaep::new::<Sha1>(), &wrapped).unwrap();
    let plain = cipher.open(&key2, &content).unwrap();
    black_box(&plain);
    let digest2 = Sha256::digest(canonicalize_xml(raw.reference.as_bytes(), &exc).unwrap());
    assert_eq!(digest, digest2);
    let si2 = canonicalize_xml(raw.signed_info.as_bytes(), &exc).unwrap();
    VerifyingKey::<Sha256>::new(alice.public.key.clone()).verify(&si2, &sig).unwrap();
}

fn main() {
    let messages: u32 = if quick() { 10 } else { 200 };
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let alice_key = KeyPair::generate(&mut rng).unwrap();
    let bob_key = KeyPair::generate(&mut rng).unwrap();
    header(&["what", "count", "engine", "raw primitives", "engine / raw"]);
    for cipher in [Cipher::Aes128Gcm, Cipher::Aes128Cbc] {
        let (mut alice, mut bob) = pair(cipher, &alice_key, &bob_key);
        // The payload the engine signs, in the forms the raw line canonicalises.
        let mut cx_rng = ChaCha20Rng::seed_from_u64(2);
        one(&mut alice, &mut bob, &mut cx_rng);
        let payload = alice.sign_payload(&mut Cx { rng: &mut cx_rng, now: NOW }, &bare(BOB), BODY).unwrap();
        let start = payload.find("<Signature").unwrap();
        let end = payload.find("</Signature>").unwrap() + "</Signature>".len();
        let reference = format!("{}{}", &payload[..start], &payload[end..]);
        let si_start = payload.find("<SignedInfo>").unwrap();
        let si_end = payload.find("</SignedInfo>").unwrap() + "</SignedInfo>".len();
        let signed_info = payload[si_start..si_end].replacen(
            "<SignedInfo>",
            "<SignedInfo xmlns='http://www.w3.org/2000/09/xmldsig#'>",
            1,
        );
        let raw = Raw { reference, signed_info, payload: payload.into_bytes() };

        // Interleaved, so both lines see the same machine load.
        let (mut engine, mut raw_time) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..messages {
            let t = Instant::now();
            black_box(one(&mut alice, &mut bob, &mut cx_rng));
            engine += t.elapsed();
            let t = Instant::now();
            raw_message(&raw, cipher, &alice_key, &bob_key, &mut cx_rng);
            raw_time += t.elapsed();
        }
        let what = match cipher {
            Cipher::Aes128Gcm => "message, AES-128-GCM (sign+encrypt, decrypt+verify)",
            Cipher::Aes128Cbc => "message, AES-128-CBC (sign+encrypt, decrypt+verify)",
        };
        row(what, messages, engine, raw_time);
    }
}
