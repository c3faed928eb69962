//! Costs of the `esession` engine next to the raw work the same steps need, measured in the
//! same run. A plain binary (`harness = false`), not a timed test:
//!
//! ```text
//! cargo bench -p jabberwock-e2e --bench esession            # full run
//! cargo bench -p jabberwock-e2e --bench esession -- --quick # a smoke run
//! ```
//!
//! - handshake: the four negotiation messages and the first encrypted stanza, both engines
//!   (RSA keys made beforehand). The raw work: three 256-bit exponentiations in the 2048-bit
//!   group on Alice's side for the two groups she offers and the shared secret, two on Bob's,
//!   two RSA-2048 signatures and two verifications, and the SHA-256/HMAC/AES-CTR of the
//!   identities.
//! - message: one XEP-0200 stanza each way in turn (encrypt, MAC, verify, decrypt); every
//!   fiftieth stanza a party sends rekeys (a new e and K = d^x on its side, K = e^y on the
//!   other: three 256-bit exponentiations in the 2048-bit group).

// The benchmark measures wall time: the one place `Instant::now` is allowed (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Instant;

use common::{ALICE, BOB, BODY, Pair, header, quick, row, time_handshakes};
use jabberwock_e2e::esession::Esession;
use jabberwock_e2e::esession::crypto::{self, Identity, ctr, derive};
use jabberwock_e2e::kit::crypto::{hmac_sha256, sha256};
use num_bigint::BigUint;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

/// A pair whose RSA keys exist already (a first session made them), with the sessions ended.
fn warmed_pair(seed: u64) -> Pair<Esession> {
    let mut p = Pair::new(
        Esession::new(ALICE.parse().unwrap()),
        Esession::new(BOB.parse().unwrap()),
        ChaCha20Rng::seed_from_u64(seed),
    );
    p.send(true, "make the keys");
    let out = p.alice.terminate(&"bob@b.example".parse().unwrap()).unwrap();
    p.run(true, out);
    p.shown = 0;
    p
}

fn main() {
    let (handshakes, messages) = if quick() { (2u32, 20u32) } else { (20, 1000) };
    header(&["what", "count", "engine", "raw primitives", "engine / raw"]);

    let engine = time_handshakes(handshakes, warmed_pair);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (ida, idb) = (Identity::generate(&mut rng).unwrap(), Identity::generate(&mut rng).unwrap());
    let p14 = crypto::group_prime(14).unwrap();
    let p5 = crypto::group_prime(5).unwrap();
    let t = Instant::now();
    for _ in 0..handshakes {
        let x14 = crypto::secret_exponent(&mut rng);
        let x5 = crypto::secret_exponent(&mut rng);
        let y = crypto::secret_exponent(&mut rng);
        let e = BigUint::from(2u32).modpow(&x14, p14);
        black_box(BigUint::from(2u32).modpow(&x5, p5));
        let d = BigUint::from(2u32).modpow(&y, p14);
        let k = sha256(&[&d.modpow(&x14, p14).to_bytes_be()]);
        black_box(e.modpow(&y, p14));
        let mac = hmac_sha256(&k, &[b"identity"]);
        let sig_a = ida.sign(&mac, &mut rng);
        let sig_b = idb.sign(&mac, &mut rng);
        crypto::verify_identity(&format!("{}{sig_a}", ida.key_value()), &mac).unwrap();
        crypto::verify_identity(&format!("{}{sig_b}", idb.key_value()), &mac).unwrap();
        let mut id = vec![0u8; 700];
        let mut c = 1u128;
        ctr(&derive(&k, "a", "b").kc, &mut c, &mut id);
        black_box(id);
    }
    row("handshake (4 messages + first stanza)", handshakes, engine, t.elapsed());

    let engine = warmed_pair(100).time_messages(messages, |i| i % 2 == 1);
    let body = BODY;
    let keys = derive(&[1; 32], "a", "b");
    let t = Instant::now();
    for i in 0..messages {
        let mut c = u128::from(i) * 8;
        let mut data = format!("<body>{body}</body>").into_bytes();
        ctr(&keys.kc, &mut c, &mut data);
        let mac = hmac_sha256(&keys.km, &[&data]);
        black_box(hmac_sha256(&keys.km, &[&data]) == mac);
        ctr(&keys.kc, &mut c, &mut data);
        if i % 50 == 49 {
            // The rekeying side makes e and K = d^x; the other side K = e^y.
            let (x, y) = (crypto::secret_exponent(&mut rng), crypto::secret_exponent(&mut rng));
            let e = BigUint::from(2u32).modpow(&x, p14);
            black_box((e.modpow(&y, p14), e.modpow(&x, p14)));
        }
    }
    row("message (XEP-0200 stanza, rekey every 50)", messages, engine, t.elapsed());
}
