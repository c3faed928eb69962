//! Costs of the `otr` engine next to the raw bignum / AES / HMAC work the same steps need,
//! measured in the same run. A plain binary (`harness = false`), not a timed test:
//!
//! ```text
//! cargo bench -p jabberwock-e2e --bench otr            # full run
//! cargo bench -p jabberwock-e2e --bench otr -- --quick # a smoke run
//! ```
//!
//! - handshake: Query, the four AKE messages and the first Data Message, both engines. The raw
//!   work: 8 modular exponentiations in the 1536-bit group with 320-bit exponents (x, y, s on
//!   both sides, the next D-H key on both sides, the first message's session keys on both
//!   sides), two DSA signatures and two verifications, SHA-256/HMAC/AES-CTR over the AKE data.
//! - message, one way: Alice keeps writing, Bob reads; session keys are cached per key pair,
//!   so each message is AES-128-CTR and two HMAC-SHA1 (plus encoding).
//! - message, alternating: every message answers the previous one, so keys rotate on every
//!   message: a new D-H key and one new session-key computation per side, i.e. three 320-bit
//!   exponentiations on top.

// The benchmark measures wall time: the one place `Instant::now` is allowed (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use common::{ALICE, BOB, BODY, header, quick, row, time_handshakes};
use jabberwock_e2e::kit::crypto::{aes_ctr, hmac_sha1, hmac_sha256, sha1, sha256};
use jabberwock_e2e::otr::crypto::{DhKey, PrivateKey};
use jabberwock_e2e::otr::{Otr, OtrConfig};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

type Pair = common::Pair<Otr>;

fn pair(seed: u64) -> Pair {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let alice =
        Otr::new(ALICE.parse().unwrap(), &mut rng, OtrConfig::default()).with_secrets(BTreeMap::new());
    let bob = Otr::new(BOB.parse().unwrap(), &mut rng, OtrConfig::default());
    Pair::new(alice, bob, rng)
}

/// The raw work of one handshake (see the module comment).
fn raw_handshake(rng: &mut ChaCha20Rng, alice: &PrivateKey, bob: &PrivateKey) {
    let (x, y) = (DhKey::generate(rng), DhKey::generate(rng));
    let s1 = x.shared(&y.public).unwrap();
    let s2 = y.shared(&x.public).unwrap();
    let (next_a, next_b) = (DhKey::generate(rng), DhKey::generate(rng));
    black_box((x.shared(&next_b.public).unwrap(), y.shared(&next_a.public).unwrap()));
    let m = hmac_sha256(&sha256(&[&s1.to_bytes_be()]), &[b"AKE data"]);
    let sig_b = bob.sign(&m, rng);
    let sig_a = alice.sign(&m, rng);
    bob.public.verify(&m, &sig_b).unwrap();
    alice.public.verify(&m, &sig_a).unwrap();
    let mut block = vec![0u8; 600];
    aes_ctr(&[1; 16], &[0; 16], &mut block);
    black_box((s2, block));
}

/// The raw work of one Data Message with cached keys: encrypt, MAC, verify, decrypt.
fn raw_message(body: &[u8]) {
    let mut c = body.to_vec();
    aes_ctr(&[1; 16], &[2; 16], &mut c);
    let mac = hmac_sha1(&[3; 20], &[&c]);
    black_box(hmac_sha1(&[3; 20], &[&c]) == mac);
    aes_ctr(&[1; 16], &[2; 16], &mut c);
    black_box(sha1(&[&c]));
}

fn main() {
    let (handshakes, messages) = if quick() { (3u32, 20u32) } else { (30, 1000) };
    header(&["what", "count", "engine", "raw primitives", "engine / raw"]);

    // Handshakes.
    let engine = time_handshakes(handshakes, pair);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (ka, kb) = (PrivateKey::generate(&mut rng), PrivateKey::generate(&mut rng));
    let t = Instant::now();
    for _ in 0..handshakes {
        raw_handshake(&mut rng, &ka, &kb);
    }
    row("handshake (AKE + first message)", handshakes, engine, t.elapsed());

    // One-way stream.
    let engine = pair(100).time_messages(messages, |_| true);
    let body = BODY;
    let t = Instant::now();
    for _ in 0..messages {
        raw_message(body.as_bytes());
    }
    row("message, one way (cached keys)", messages, engine, t.elapsed());

    // Alternating: keys rotate on every message.
    let n = messages / 10;
    let engine = pair(200).time_messages(n, |i| i % 2 == 1);
    let (b, c) = (DhKey::generate(&mut rng), DhKey::generate(&mut rng));
    let t = Instant::now();
    for _ in 0..n {
        // The receiver's next key, and the new pair's session keys on each side.
        let a = DhKey::generate(&mut rng);
        black_box((a.shared(&b.public).unwrap(), c.shared(&b.public).unwrap()));
        raw_message(body.as_bytes());
    }
    row("message, alternating (keys rotate)", n, engine, t.elapsed());
}
