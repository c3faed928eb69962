//! Costs of the `xtls` engine next to bare rustls over memory buffers, measured in the same
//! run. A plain binary (`harness = false`), not a timed test:
//!
//! ```text
//! cargo bench -p jabberwock-e2e --bench xtls            # full run
//! cargo bench -p jabberwock-e2e --bench xtls -- --quick # a smoke run
//! ```
//!
//! - handshake: `<start/>`, `<proceed/>`, the TLS 1.3 handshake in `<data/>` stanzas with
//!   their acknowledgements, and the first message, both engines (certificates made
//!   beforehand). Bare rustls: the same seeded providers, the same Ed25519 certificates and
//!   mutual authentication, a client and a server connection made and driven to the end of
//!   the handshake through `Vec<u8>` buffers, and one application record.
//! - message: one chat message each way in turn (engine: the stanza written into TLS, base64
//!   in an `<iq/>`, acknowledged, decoded and parsed on the other side; bare rustls: the same
//!   bytes written and read through buffers).
//!
//! Bytes on the wire per message are printed too (the base64 and the `<iq/>` around a record).

// The benchmark measures wall time: the one place `Instant::now` is allowed (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::io::{Read, Write};
use std::time::Instant;

use common::{ALICE, BOB, NOW, header, quick, row, time_handshakes};
use jabberwock_e2e::EngineConfig;
use jabberwock_e2e::tls::{self, Identity, SimTime};
use jabberwock_e2e::xtls::Xtls;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use rustls::{ClientConnection, Connection, ServerConnection};
use rustls_pki_types::ServerName;

type Pair = common::Pair<Xtls>;

/// Two engines whose certificates exist and who know each other's device; stanza bytes counted.
fn pair(seed: u64) -> Pair {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let config = EngineConfig::default();
    let mut alice = Xtls::new(ALICE.parse().unwrap(), &mut rng, &config);
    let mut bob = Xtls::new(BOB.parse().unwrap(), &mut rng, &config);
    // Certificates exist before the clock starts (they are made once per device).
    alice.identity(NOW).unwrap();
    bob.identity(NOW).unwrap();
    alice.add_device(BOB.parse().unwrap());
    bob.add_device(ALICE.parse().unwrap());
    Pair { wire_bytes: Some(0), ..Pair::new(alice, bob, rng) }
}

/// Moves TLS bytes from `a` to `b`; returns how many.
fn pass(a: &mut Connection, b: &mut Connection) -> usize {
    let mut buf = Vec::new();
    while a.wants_write() {
        a.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        b.read_tls(&mut rd).unwrap();
        b.process_new_packets().unwrap();
    }
    buf.len()
}

struct Bare {
    client: Connection,
    server: Connection,
}

fn bare_handshake(alice: &Identity, bob: &Identity, seed: u8) -> Bare {
    let time = SimTime::at(NOW);
    let ccfg = tls::client_config_with_auth(tls::provider([seed; 32]), Some(alice), None, None, false, &time)
        .unwrap();
    let scfg =
        tls::server_config_with_auth(tls::provider([seed ^ 0xff; 32]), bob, Some(None), &time).unwrap();
    let mut client =
        Connection::Client(ClientConnection::new(ccfg, ServerName::try_from("b.example").unwrap()).unwrap());
    let mut server = Connection::Server(ServerConnection::new(scfg).unwrap());
    while client.is_handshaking() || server.is_handshaking() {
        pass(&mut client, &mut server);
        pass(&mut server, &mut client);
    }
    Bare { client, server }
}

fn message(from: &mut Connection, to: &mut Connection, body: &[u8]) -> usize {
    from.writer().write_all(body).unwrap();
    let n = pass(from, to);
    let mut got = Vec::new();
    let _ = to.reader().read_to_end(&mut got);
    assert_eq!(got, body);
    n
}

fn main() {
    let (handshakes, messages) = if quick() { (3u32, 50u32) } else { (100, 5000) };
    header(&["what", "count", "engine", "bare rustls", "engine / bare"]);

    let alice = tls::self_signed(&[ALICE], [1; 32], NOW).unwrap();
    let bob = tls::self_signed(&[BOB], [2; 32], NOW).unwrap();
    // One unmeasured round of each, so neither side pays for first-use costs.
    pair(999).send(true, "warm up");
    black_box(bare_handshake(&alice, &bob, 200).client.is_handshaking());

    let engine = time_handshakes(handshakes, pair);
    let body = b"<message type='chat'><body>first</body></message>";
    let t = Instant::now();
    for i in 0..handshakes {
        let mut b = bare_handshake(&alice, &bob, i as u8);
        black_box(message(&mut b.client, &mut b.server, body));
    }
    row("handshake + first message", handshakes, engine, t.elapsed());

    let mut p = pair(1000);
    p.send(true, "warm up");
    p.wire_bytes = Some(0);
    let t = Instant::now();
    for i in 0..messages {
        p.send(i % 2 == 0, &format!("message number {i}, about as long as a chat line"));
    }
    let engine = t.elapsed();
    assert_eq!(p.shown, messages as usize + 1);
    let engine_bytes = p.wire_bytes.unwrap_or(0) / messages as usize;
    let mut b = bare_handshake(&alice, &bob, 77);
    let mut raw_bytes = 0;
    let t = Instant::now();
    for i in 0..messages {
        let text = format!(
            "<message type='chat'><body>message number {i}, about as long as a chat line</body></message>"
        );
        raw_bytes += if i % 2 == 0 {
            message(&mut b.client, &mut b.server, text.as_bytes())
        } else {
            message(&mut b.server, &mut b.client, text.as_bytes())
        };
    }
    row("message (alternating directions)", messages, engine, t.elapsed());
    println!();
    println!(
        "wire bytes per message: engine {engine_bytes} (the <iq/> with the base64 record, and its \
         acknowledgement), bare TLS record {}",
        raw_bytes / messages as usize
    );
}
