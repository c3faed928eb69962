#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};

use rustls::{ClientConnection, Connection, ServerConnection};

use super::*;
use crate::time::EPOCH;

const NOW: Duration = EPOCH;

fn seed(n: u8) -> [u8; 32] {
    [n; 32]
}

/// Moves records between the two ends until neither has anything to say; returns every
/// record each side wrote, in order (the transcript).
fn pump(client: &mut Connection, server: &mut Connection) -> Result<Vec<(bool, Vec<u8>)>, Error> {
    let mut transcript = Vec::new();
    for _ in 0..20 {
        let mut moved = false;
        for from_client in [true, false] {
            let (a, b) =
                if from_client { (&mut *client, &mut *server) } else { (&mut *server, &mut *client) };
            let mut buf = Vec::new();
            while a.wants_write() {
                a.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                moved = true;
                transcript.push((from_client, buf.clone()));
                let mut rd = &buf[..];
                while !rd.is_empty() {
                    b.read_tls(&mut rd).unwrap();
                    b.process_new_packets()?;
                }
            }
        }
        if !moved {
            break;
        }
    }
    Ok(transcript)
}

fn pair(
    client_seed: u8,
    server_seed: u8,
    client_cfg: Arc<ClientConfig>,
    server: &Identity,
) -> (Connection, Connection) {
    let time = SimTime::at(NOW);
    let _ = client_seed;
    let scfg = server_config(provider(seed(server_seed)), server, &time).unwrap();
    let c = ClientConnection::new(client_cfg, ServerName::try_from("xmpp.example").unwrap()).unwrap();
    let s = ServerConnection::new(scfg).unwrap();
    (Connection::Client(c), Connection::Server(s))
}

fn handshake(client_seed: u8, server_seed: u8) -> (Vec<(bool, Vec<u8>)>, Vec<u8>) {
    let time = SimTime::at(NOW);
    let ca = ca("Jabberwock CA", seed(1), NOW - Duration::from_secs(3600)).unwrap();
    let server = issued_by(&ca, &["xmpp.example"], seed(2), NOW - Duration::from_secs(60)).unwrap();
    let ccfg = client_config(provider(seed(client_seed)), Some(&ca), None, true, &time).unwrap();
    let (mut c, mut s) = pair(client_seed, server_seed, ccfg, &server);
    let mut t = pump(&mut c, &mut s).unwrap();
    assert!(!c.is_handshaking() && !s.is_handshaking());
    c.writer().write_all(b"<message><body>hi</body></message>").unwrap();
    s.writer().write_all(b"<message><body>ho</body></message>").unwrap();
    t.extend(pump(&mut c, &mut s).unwrap());
    let mut got = Vec::new();
    let _ = s.reader().read_to_end(&mut got);
    assert_eq!(got, b"<message><body>hi</body></message>");
    let mut exporter = [0u8; 16];
    c.export_keying_material(&mut exporter, b"EXPORTER-test", None).unwrap();
    (t, exporter.to_vec())
}

#[test]
fn same_seeds_give_identical_transcripts_and_different_seeds_differ() {
    let (a, ea) = handshake(10, 20);
    let (b, eb) = handshake(10, 20);
    assert_eq!(a, b, "two runs with the same seeds must be byte-identical");
    assert_eq!(ea, eb);
    // ClientHello, server flight, client Finished, two application records.
    assert!(a.len() >= 4, "{}", a.len());
    let (c, ec) = handshake(11, 20);
    assert_ne!(a[0], c[0], "another client seed changes the ClientHello");
    assert_ne!(ea, ec);
    let (d, _) = handshake(10, 21);
    assert_eq!(a[0], d[0]);
    assert_ne!(a[1], d[1], "another server seed changes the ServerHello");
}

#[test]
fn certificates_are_deterministic_and_fingerprinted() {
    let a = self_signed(&["alice@a.example/phone"], seed(3), NOW).unwrap();
    let b = self_signed(&["alice@a.example/phone"], seed(3), NOW).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.fingerprint().len(), 64);
    assert_ne!(a.fingerprint(), self_signed(&["alice@a.example/phone"], seed(4), NOW).unwrap().fingerprint());
    assert!(a.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(a.key_pem().contains("PRIVATE KEY"));
}

#[test]
fn wrong_certificates_are_refused() {
    let time = SimTime::at(NOW);
    let ca1 = ca("CA one", seed(1), NOW - Duration::from_secs(3600)).unwrap();
    let ca2 = ca("CA two", seed(5), NOW - Duration::from_secs(3600)).unwrap();
    let good = issued_by(&ca1, &["xmpp.example"], seed(2), NOW - Duration::from_secs(60)).unwrap();
    let other_name = issued_by(&ca1, &["evil.example"], seed(6), NOW - Duration::from_secs(60)).unwrap();
    let future = issued_by(&ca1, &["xmpp.example"], seed(7), NOW + Duration::from_secs(86_400)).unwrap();
    let selfie = self_signed(&["xmpp.example"], seed(8), NOW).unwrap();

    let run = |roots: Option<&Identity>, pinned: Option<&str>, verify: bool, server: &Identity| {
        let ccfg = client_config(provider(seed(9)), roots, pinned, verify, &time).unwrap();
        let (mut c, mut s) = pair(9, 10, ccfg, server);
        pump(&mut c, &mut s)
    };
    assert!(run(Some(&ca1), None, true, &good).is_ok());
    for (what, r) in [
        ("other CA", run(Some(&ca2), None, true, &good)),
        ("wrong name", run(Some(&ca1), None, true, &other_name)),
        ("not yet valid", run(Some(&ca1), None, true, &future)),
        ("self-signed", run(Some(&ca1), None, true, &selfie)),
        ("no roots, no pin", run(None, None, true, &good)),
        ("pin mismatch", run(None, Some(&good.fingerprint()), true, &selfie)),
    ] {
        assert!(matches!(r, Err(Error::InvalidCertificate(_))), "{what}: {r:?}");
    }
    assert!(run(None, Some(&selfie.fingerprint()), true, &selfie).is_ok(), "pinned");
    assert!(run(None, None, false, &selfie).is_ok(), "verify off");
}

#[test]
fn mutual_authentication_presents_the_client_certificate() {
    let time = SimTime::at(NOW);
    let alice = self_signed(&["alice@a.example/phone"], seed(3), NOW).unwrap();
    let bob = self_signed(&["bob@b.example/laptop"], seed(4), NOW).unwrap();
    let ccfg =
        client_config_with_auth(provider(seed(9)), Some(&alice), None, Some(&bob.fingerprint()), true, &time)
            .unwrap();
    let scfg = server_config_with_auth(provider(seed(10)), &bob, Some(None), &time).unwrap();
    let mut c =
        Connection::Client(ClientConnection::new(ccfg, ServerName::try_from("b.example").unwrap()).unwrap());
    let mut s = Connection::Server(ServerConnection::new(scfg).unwrap());
    pump(&mut c, &mut s).unwrap();
    let seen = s.peer_certificates().unwrap();
    assert_eq!(fingerprint(&seen[0]), alice.fingerprint());
    // A server pinning another client certificate refuses Alice's.
    let ccfg = client_config_with_auth(provider(seed(9)), Some(&alice), None, None, false, &time).unwrap();
    let scfg =
        server_config_with_auth(provider(seed(10)), &bob, Some(Some(&bob.fingerprint())), &time).unwrap();
    let mut c =
        Connection::Client(ClientConnection::new(ccfg, ServerName::try_from("b.example").unwrap()).unwrap());
    let mut s = Connection::Server(ServerConnection::new(scfg).unwrap());
    assert!(matches!(pump(&mut c, &mut s), Err(Error::InvalidCertificate(_))));
}

#[test]
fn slots_are_reused_once_providers_are_gone() {
    // Other tests run in parallel and take slots too: only check that making and dropping
    // many providers does not leak one slot each.
    for i in 0..200u8 {
        let p = provider(seed(i));
        drop(p);
    }
    assert!(leaked_slots() < 100, "{}", leaked_slots());
}
