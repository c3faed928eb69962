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

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use jabberwock_e2e::otr::crypto::{DhKey, PrivateKey, aes_ctr, hmac_sha1, hmac_sha256, sha1, sha256};
use jabberwock_e2e::otr::{Otr, OtrConfig};
use jabberwock_e2e::xml::ElementExt;
use jabberwock_e2e::{Action, BareJid, Cx, Element, Engine, Event, Output};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

const NOW: Duration = Duration::from_secs(1_767_225_600);
const ALICE: &str = "alice@a.example/phone";
const BOB: &str = "bob@b.example/laptop";

struct Pair {
    alice: Otr,
    bob: Otr,
    rng: ChaCha20Rng,
    shown: usize,
}

impl Pair {
    fn new(seed: u64) -> Pair {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let alice =
            Otr::new(ALICE.parse().unwrap(), &mut rng, OtrConfig::default()).with_secrets(BTreeMap::new());
        let bob = Otr::new(BOB.parse().unwrap(), &mut rng, OtrConfig::default());
        Pair { alice, bob, rng, shown: 0 }
    }

    fn run(&mut self, from_alice: bool, out: Output) {
        let mut queue: std::collections::VecDeque<(bool, Element)> = sends(from_alice, out).into();
        while let Some((by_alice, mut s)) = queue.pop_front() {
            s.set("from", if by_alice { ALICE } else { BOB });
            let engine = if by_alice { &mut self.bob } else { &mut self.alice };
            let mut cx = Cx { rng: &mut self.rng, now: NOW };
            let out = engine.receive(&mut cx, &s).unwrap();
            self.shown += out.events.iter().filter(|e| matches!(e, Event::Plaintext { .. })).count();
            queue.extend(sends(!by_alice, out));
        }
    }

    fn send(&mut self, from_alice: bool, body: &str) {
        let to: BareJid = if from_alice { "bob@b.example" } else { "alice@a.example" }.parse().unwrap();
        let engine = if from_alice { &mut self.alice } else { &mut self.bob };
        let mut cx = Cx { rng: &mut self.rng, now: NOW };
        let out = engine.send(&mut cx, &to, body).unwrap();
        self.run(from_alice, out);
    }
}

fn sends(by_alice: bool, out: Output) -> Vec<(bool, Element)> {
    out.actions
        .into_iter()
        .filter_map(|a| if let Action::Send(s) = a { Some((by_alice, s)) } else { None })
        .collect()
}

fn per(total: Duration, n: u32) -> f64 {
    total.as_secs_f64() * 1e6 / f64::from(n)
}

fn row(what: &str, n: u32, engine: Duration, raw: Duration) {
    println!(
        "| {what} | {n} | {:.1} µs | {:.1} µs | {:.1}× |",
        per(engine, n),
        per(raw, n),
        engine.as_secs_f64() / raw.as_secs_f64()
    );
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
    let quick = std::env::args().any(|a| a == "--quick");
    let (handshakes, messages) = if quick { (3u32, 20u32) } else { (30, 1000) };
    println!("| what | count | engine | raw primitives | engine / raw |");
    println!("|---|---|---|---|---|");

    // Handshakes.
    let mut engine = Duration::ZERO;
    for i in 0..handshakes {
        let mut p = Pair::new(u64::from(i));
        let t = Instant::now();
        p.send(true, "first");
        engine += t.elapsed();
        assert_eq!(p.shown, 1);
    }
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (ka, kb) = (PrivateKey::generate(&mut rng), PrivateKey::generate(&mut rng));
    let t = Instant::now();
    for _ in 0..handshakes {
        raw_handshake(&mut rng, &ka, &kb);
    }
    row("handshake (AKE + first message)", handshakes, engine, t.elapsed());

    // One-way stream.
    let mut p = Pair::new(100);
    p.send(true, "warm-up");
    let body = "a typical chat message of some sixty bytes, give or take";
    let t = Instant::now();
    for _ in 0..messages {
        p.send(true, body);
    }
    let engine = t.elapsed();
    assert_eq!(p.shown, messages as usize + 1);
    let t = Instant::now();
    for _ in 0..messages {
        raw_message(body.as_bytes());
    }
    row("message, one way (cached keys)", messages, engine, t.elapsed());

    // Alternating: keys rotate on every message.
    let mut p = Pair::new(200);
    p.send(true, "warm-up");
    let n = messages / 10;
    let t = Instant::now();
    for i in 0..n {
        p.send(i % 2 == 1, body);
    }
    let engine = t.elapsed();
    assert_eq!(p.shown, n as usize + 1);
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
