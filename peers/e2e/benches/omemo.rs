//! Per-message cost of the `omemo` engine (encrypt + decrypt, 1 and 10 recipient devices),
//! next to the cost of the raw primitives doing the same cryptographic work, measured in the
//! same run. A plain binary (`harness = false`), not a timed test:
//!
//! ```text
//! cargo bench -p jabberwock-e2e --bench omemo            # 2,000 / 300 messages
//! cargo bench -p jabberwock-e2e --bench omemo -- --quick # a smoke run
//! ```
//!
//! Steady state: sessions are established first (the key exchange is not measured); Alice then
//! sends to Bob's devices, which read every message. Per message and recipient the engine does:
//! the SCE envelope and its payload (HKDF, AES-256-CBC, HMAC) once, then per device KDF_CK
//! (2 HMAC), HKDF of the message key, AES-256-CBC of 48 bytes, HMAC over AD and header, protobuf
//! and base64; each device reverses it. The primitives line does exactly those crypto calls.

// The benchmark measures wall time: the one place `Instant::now` is allowed (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Instant;

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use common::{NOW, header, quick};
use hmac::Mac;
use jabberwock_e2e::omemo::engine::{NODE_BUNDLES, NODE_DEVICES, Omemo};
use jabberwock_e2e::xml::{ElementExt, NS_CLIENT, NS_PUBSUB, el};
use jabberwock_e2e::{Action, BareJid, Cx, Element, Engine, TrustPolicy};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

fn cx(r: &mut ChaCha20Rng) -> Cx<'_> {
    Cx { rng: r, now: NOW }
}

/// Publications of one engine: (node, id, item).
fn publications(engine: &mut Omemo, owner: &BareJid, r: &mut ChaCha20Rng) -> Vec<(String, String, Element)> {
    let mut out = Vec::new();
    let mut queue = engine.publish(&mut cx(r)).unwrap().actions;
    while let Some(a) = queue.pop() {
        match a {
            Action::Publish { node, id, item, .. } => out.push((node, id, item)),
            Action::Fetch { owner: o, node } if o == *owner => {
                queue.extend(engine.fetch_failed(&mut cx(r), owner, &node, "item-not-found").unwrap().actions)
            }
            _ => {}
        }
    }
    out
}

fn answer(owner: &BareJid, node: &str, items: &[(String, Element)]) -> Element {
    let mut list = el("items", NS_PUBSUB).with("node", node);
    for (id, item) in items {
        list.append_child(el("item", NS_PUBSUB).with("id", id.clone()).child(item.clone()));
    }
    el("iq", NS_CLIENT)
        .with("type", "result")
        .with("from", owner.to_string())
        .child(el("pubsub", NS_PUBSUB).child(list))
}

struct World {
    alice: Omemo,
    bobs: Vec<Omemo>,
    bob: BareJid,
    devices: Element,
    bundles: Element,
    rng: ChaCha20Rng,
}

impl World {
    fn new(recipients: usize) -> World {
        let mut rng = ChaCha20Rng::seed_from_u64(recipients as u64);
        let alice_jid: BareJid = "alice@a.example".parse().unwrap();
        let bob: BareJid = "bob@b.example".parse().unwrap();
        let mut alice = Omemo::new("alice@a.example/phone".parse().unwrap(), &mut rng, TrustPolicy::Btbv);
        let _ = publications(&mut alice, &alice_jid, &mut rng);
        let mut bobs = Vec::new();
        let mut list = el("devices", "urn:xmpp:omemo:2");
        let mut bundles = Vec::new();
        for i in 0..recipients {
            let mut b =
                Omemo::new(format!("bob@b.example/d{i}").parse().unwrap(), &mut rng, TrustPolicy::Btbv);
            for (node, id, item) in publications(&mut b, &bob, &mut rng) {
                if node == NODE_BUNDLES {
                    list.append_child(el("device", "urn:xmpp:omemo:2").with("id", id.clone()));
                    bundles.push((id, item));
                }
            }
            bobs.push(b);
        }
        let devices = answer(&bob, NODE_DEVICES, &[("current".into(), list)]);
        let bundles = answer(&bob, NODE_BUNDLES, &bundles);
        let mut w = World { alice, bobs, bob, devices, bundles, rng };
        w.exchange("warm-up"); // the key exchange, not measured
        w.exchange("warm-up 2");
        w
    }

    /// One message from Alice, read by every device of Bob's.
    fn exchange(&mut self, body: &str) {
        let mut queue = self.alice.send(&mut cx(&mut self.rng), &self.bob, body).unwrap().actions;
        while let Some(a) = queue.pop() {
            match a {
                Action::Fetch { node, .. } => {
                    let reply = if node == NODE_DEVICES { &self.devices } else { &self.bundles };
                    queue.extend(self.alice.receive(&mut cx(&mut self.rng), reply).unwrap().actions);
                }
                Action::Send(mut stanza) => {
                    stanza.set("from", "alice@a.example/phone");
                    for b in &mut self.bobs {
                        let out = b.receive(&mut cx(&mut self.rng), &stanza).unwrap();
                        // Answers to the key exchange go back to Alice.
                        for a in out.actions {
                            if let Action::Send(mut reply) = a {
                                reply.set("from", "bob@b.example/x");
                                let _ = self.alice.receive(&mut cx(&mut self.rng), &reply);
                            }
                        }
                        black_box(out.events);
                    }
                }
                _ => {}
            }
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().into()
}

fn hkdf80(ikm: &[u8], info: &[u8]) -> [u8; 80] {
    let mut okm = [0u8; 80];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(&[0u8; 32]), ikm).expand(info, &mut okm).unwrap();
    okm
}

/// The crypto calls one message costs, without the engine: payload sealed and opened once per
/// recipient, key material ratcheted to and from each device.
fn primitives(recipients: usize, envelope: &[u8], rng: &mut ChaCha20Rng) {
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    let okm = hkdf80(&key, b"OMEMO Payload");
    let (ek, ak, iv) = (&okm[..32], &okm[32..64], &okm[64..]);
    let ct =
        cbc::Encryptor::<aes::Aes256>::new(ek.into(), iv.into()).encrypt_padded_vec_mut::<Pkcs7>(envelope);
    black_box(hmac(ak, &ct));
    let ck = [7u8; 32];
    for _ in 0..recipients {
        for _side in 0..2 {
            let mk = hmac(&ck, &[1]);
            black_box(hmac(&ck, &[2]));
            let okm = hkdf80(&mk, b"OMEMO Message Key Material");
            let (ek, ak, iv) = (&okm[..32], &okm[32..64], &okm[64..]);
            let c = cbc::Encryptor::<aes::Aes256>::new(ek.into(), iv.into())
                .encrypt_padded_vec_mut::<Pkcs7>(&[0u8; 48]);
            black_box(hmac(ak, &[&[0u8; 64][..], &c, &[0u8; 44]].concat()));
        }
        // Each device opens the payload.
        black_box(hmac(ak, &ct));
        let p = cbc::Decryptor::<aes::Aes256>::new(ek.into(), iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(&ct)
            .unwrap();
        black_box(p);
    }
}

fn main() {
    let quick = quick();
    let envelope = vec![b'x'; 320]; // an SCE envelope with a short body and its rpad
    header(&[
        "recipients",
        "messages",
        "engine per message",
        "primitives per message",
        "engine / primitives",
    ]);
    for (recipients, messages) in
        [(1usize, if quick { 50 } else { 2000 }), (10, if quick { 10 } else { 300 })]
    {
        let mut w = World::new(recipients);
        let t0 = Instant::now();
        for i in 0..messages {
            w.exchange(&format!("message number {i}"));
        }
        let engine = t0.elapsed() / messages as u32;
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let t1 = Instant::now();
        for _ in 0..messages {
            primitives(recipients, &envelope, &mut rng);
        }
        let raw = t1.elapsed() / messages as u32;
        println!(
            "| {recipients} | {messages} | {:.1} µs | {:.1} µs | {:.1}× |",
            engine.as_secs_f64() * 1e6,
            raw.as_secs_f64() * 1e6,
            engine.as_secs_f64() / raw.as_secs_f64()
        );
    }
}
