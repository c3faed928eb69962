//! XTLS interop with an independent TLS 1.3 implementation: OpenSSL 3's `s_server` and
//! `s_client`, driven as child processes over loopback TCP. The test is the bridge: it takes
//! the base64 records out of our engine's `<data/>` stanzas and writes the raw bytes to the
//! socket, and wraps what it reads from the socket into `<data/>` stanzas for the engine
//! (OpenSSL plays the other device; the test answers `<start/>`/`<proceed/>` for it).
//!
//! - our client → their server: `openssl s_server -tls1_3 -Verify 1` (a client certificate
//!   is required), our `Xtls` initiates; a chat message each way.
//! - their client → our server: `openssl s_client -tls1_3 -cert`, our `Xtls` responds; a
//!   chat message each way.
//!
//! OpenSSL's certificates are made by our `tls` module (Ed25519, written as PEM). The
//! fingerprints are checked both ways: the one our engine reports for the peer against the
//! certificate we gave OpenSSL, and the certificate OpenSSL prints for its peer against our
//! engine's own (and `openssl x509 -fingerprint -sha256` against our `fingerprint`).
//!
//! Feature `interop`; a missing `openssl` fails the test, it is never skipped.

#![cfg(feature = "interop")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jabberwock_e2e::kit::codec::{b64, unb64_wrapped};
use jabberwock_e2e::time::EPOCH;
use jabberwock_e2e::tls::{self, Identity};
use jabberwock_e2e::xml::{ElementExt, NS_CLIENT, el, text_el};
use jabberwock_e2e::xtls::{NS_XTLS, Xtls};
use jabberwock_e2e::{
    Action, BareJid, Cx, Element, Engine, EngineConfig, Event, FullJid, Output, Protocol, Trust,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

#[path = "common/interop_record.rs"]
mod interop_record;
use interop_record::{Direction, Part, Recorder, tool_output, version_in};

const NOW: Duration = EPOCH;
const OURS: &str = "alice@a.example/phone";
const THEIRS: &str = "openssl@o.example/cli";

/// Base64 our engine or the tool wrote (line breaks allowed).
fn unb64(s: &str) -> Vec<u8> {
    unb64_wrapped("base64", s).unwrap()
}

fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jabberwock-xtls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The installed OpenSSL, as `openssl version` reports it.
fn openssl_version() -> Vec<Part> {
    let out = tool_output("openssl", &["version"]);
    vec![Part::new("OpenSSL", &version_in(&out).unwrap_or_else(|| panic!("openssl version: {out:?}")))]
}

fn openssl_identity(dir: &Path) -> Identity {
    let id = tls::self_signed(&[THEIRS, "o.example"], [77; 32], NOW - Duration::from_secs(86_400)).unwrap();
    std::fs::write(dir.join("theirs.pem"), id.cert_pem()).unwrap();
    std::fs::write(dir.join("theirs.key"), id.key_pem()).unwrap();
    // OpenSSL reads our certificate and computes the same fingerprint.
    let out = Command::new("openssl")
        .args(["x509", "-in", "theirs.pem", "-noout", "-fingerprint", "-sha256"])
        .current_dir(dir)
        .output()
        .expect("the `openssl` command (OpenSSL 3) is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let theirs = line.trim().rsplit('=').next().unwrap().replace(':', "").to_lowercase();
    assert_eq!(theirs, id.fingerprint(), "openssl x509 -fingerprint -sha256");
    id
}

/// Collects a child's stdout in the background.
fn collect(child: &mut Child) -> Arc<Mutex<String>> {
    let out = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&out);
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        // Raw chunks, not lines: OpenSSL prints the peer's data as it comes, without a newline.
        let mut r = stdout;
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut s) = sink.lock() {
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    out
}

fn wait_for(what: &str, out: &Arc<Mutex<String>>, needle: &str) {
    for _ in 0..200 {
        if out.lock().unwrap().contains(needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what}: `{needle}` never appeared in:\n{}", out.lock().unwrap());
}

/// The fingerprint of the first PEM certificate after `heading` in OpenSSL's output.
fn printed_fingerprint(out: &str, heading: &str) -> String {
    let after = out.split(heading).nth(1).unwrap_or_else(|| panic!("no `{heading}` in:\n{out}"));
    let body = after
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|r| r.split("-----END CERTIFICATE-----").next())
        .unwrap();
    tls::fingerprint(&unb64(body))
}

/// Our engine, the socket, and the stanzas between them.
struct Bridge {
    engine: Xtls,
    rng: ChaCha20Rng,
    sock: TcpStream,
    shown: Vec<(String, Trust)>,
    events: Vec<Event>,
    next: u32,
    /// The `<start/>` id we answered (our client side).
    pending_start: Option<String>,
}

impl Bridge {
    fn new(sock: TcpStream) -> Bridge {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let engine = Xtls::new(OURS.parse().unwrap(), &mut rng, &EngineConfig::default());
        sock.set_read_timeout(Some(Duration::from_millis(150))).unwrap();
        Bridge { engine, rng, sock, shown: vec![], events: vec![], next: 0, pending_start: None }
    }

    /// What the engine asked for: records go to the socket, `<start/>` is answered for OpenSSL.
    fn apply(&mut self, out: Output) {
        for e in out.events {
            if let Event::Plaintext { body, trust, .. } = &e {
                self.shown.push((body.clone(), *trust));
            }
            self.events.push(e);
        }
        for a in out.actions {
            let Action::Send(s) = a else { continue };
            assert_eq!(s.attr("to"), Some(THEIRS));
            if s.has_child("start", NS_XTLS) {
                self.pending_start = s.attr("id").map(str::to_owned);
            } else if let Some(d) = s.get_child("data", NS_XTLS) {
                self.sock.write_all(&unb64(&d.text())).unwrap();
            }
        }
        if let Some(id) = self.pending_start.take() {
            let proceed = el("iq", NS_CLIENT)
                .with("type", "result")
                .with("from", THEIRS)
                .with("to", OURS)
                .with("id", id)
                .child(el("proceed", NS_XTLS));
            let out = self.engine.receive(&mut Cx { rng: &mut self.rng, now: NOW }, &proceed).unwrap();
            self.apply(out);
        }
    }

    fn iq(&mut self, child: Element) -> Element {
        self.next += 1;
        el("iq", NS_CLIENT)
            .with("type", "set")
            .with("from", THEIRS)
            .with("to", OURS)
            .with("id", format!("ossl-{}", self.next))
            .child(child)
    }

    /// Reads what the socket has (until it is quiet) into `<data/>` stanzas for the engine.
    fn pump(&mut self, first: bool) -> usize {
        let mut total = 0;
        let mut first = first;
        for _ in 0..20 {
            let mut buf = vec![0u8; 65536];
            let n = match self.sock.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    if total > 0 {
                        break;
                    }
                    continue;
                }
                Err(e) => panic!("socket: {e}"),
            };
            total += n;
            let mut data = text_el("data", NS_XTLS, b64(&buf[..n]));
            if first {
                data.set("method", "x509");
                first = false;
            }
            let stanza = self.iq(data);
            let out = self
                .engine
                .receive(&mut Cx { rng: &mut self.rng, now: NOW }, &stanza)
                .unwrap_or_else(|e| panic!("engine: {e}"));
            self.apply(out);
        }
        total
    }

    fn peer_fingerprint(&self) -> String {
        self.events
            .iter()
            .find_map(|e| match e {
                Event::TrustChanged { fingerprint, .. } => Some(fingerprint.clone()),
                _ => None,
            })
            .expect("a TrustChanged event for OpenSSL's certificate")
    }
}

fn say(stdin: &mut ChildStdin, line: &str) {
    stdin.write_all(line.as_bytes()).unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn our_client_to_openssl_s_server() {
    let rec = Recorder::start();
    let dir = workdir("client");
    let theirs = openssl_identity(&dir);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new("openssl")
        .args(["s_server", "-tls1_3", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cert", "theirs.pem", "-key", "theirs.key", "-Verify", "1", "-naccept", "1"])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the `openssl` command (OpenSSL 3) is installed");
    let out = collect(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    let _guard = Kill(child);
    wait_for("s_server", &out, "ACCEPT");
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut b = Bridge::new(sock);
    b.engine.add_device(THEIRS.parse::<FullJid>().unwrap());
    let to: BareJid = "openssl@o.example".parse().unwrap();
    let sent = b.engine.send(&mut Cx { rng: &mut b.rng, now: NOW }, &to, "hello openssl").unwrap();
    b.apply(sent);
    // ServerHello .. Finished, then tickets: the engine answers with its Finished and the
    // message it held.
    while b.pump(false) > 0 {}
    assert!(b.engine.is_open(&THEIRS.parse().unwrap()), "handshake with s_server: {:?}", b.events);
    wait_for("s_server", &out, "<message id='in-1' type='chat'><body>hello openssl</body></message>");
    say(&mut stdin, "<message type='chat'><body>hello xtls, from s_server</body></message>");
    for _ in 0..20 {
        b.pump(false);
        if !b.shown.is_empty() {
            break;
        }
    }
    assert_eq!(b.shown, [("hello xtls, from s_server".to_owned(), Trust::Unverified)]);
    // Fingerprints both ways.
    assert_eq!(b.peer_fingerprint(), theirs.fingerprint());
    let printed = out.lock().unwrap().clone();
    assert_eq!(printed_fingerprint(&printed, "Client certificate"), b.engine.fingerprint().unwrap());
    // A TLS 1.3 suite (`-tls1_3` allows nothing else).
    assert!(printed.contains("CIPHER is TLS_AES_128_GCM_SHA256"), "{printed}");
    // Teardown: close_notify reaches OpenSSL.
    let close = b.engine.close(&mut Cx { rng: &mut b.rng, now: NOW }, &THEIRS.parse().unwrap()).unwrap();
    b.apply(close);
    wait_for("s_server", &out, "DONE");
    rec.passed(
        Protocol::of(&jabberwock_e2e::xtls::PROTOCOL),
        &openssl_version(),
        &[
            (Direction::OursToTheirs, &["TLS 1.3 handshake to `s_server`", "message", "close_notify"]),
            (Direction::TheirsToOurs, &["message"]),
        ],
    );
}

#[test]
fn openssl_s_client_to_our_server() {
    let rec = Recorder::start();
    let dir = workdir("server");
    let theirs = openssl_identity(&dir);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut child = Command::new("openssl")
        .args(["s_client", "-tls1_3", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cert", "theirs.pem", "-key", "theirs.key", "-servername", "a.example"])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the `openssl` command (OpenSSL 3) is installed");
    let out = collect(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    let _guard = Kill(child);
    let (sock, _) = listener.accept().unwrap();
    let mut b = Bridge::new(sock);
    // OpenSSL's side of §start: it asks, we proceed.
    let start = b.iq(el("start", NS_XTLS));
    let out_start = b.engine.receive(&mut Cx { rng: &mut b.rng, now: NOW }, &start).unwrap();
    let proceed =
        out_start.actions.iter().any(|a| matches!(a, Action::Send(s) if s.has_child("proceed", NS_XTLS)));
    assert!(proceed);
    b.apply(out_start);
    // ClientHello (with method='x509'), then the client's Certificate .. Finished.
    assert!(b.pump(true) > 0);
    while b.pump(false) > 0 {}
    assert!(b.engine.is_open(&THEIRS.parse().unwrap()), "handshake with s_client: {:?}", b.events);
    let to: BareJid = "openssl@o.example".parse().unwrap();
    let sent = b.engine.send(&mut Cx { rng: &mut b.rng, now: NOW }, &to, "hello s_client").unwrap();
    b.apply(sent);
    wait_for("s_client", &out, "<message id='in-1' type='chat'><body>hello s_client</body></message>");
    say(&mut stdin, "<message type='chat'><body>hello xtls, from s_client</body></message>");
    for _ in 0..20 {
        b.pump(false);
        if !b.shown.is_empty() {
            break;
        }
    }
    assert_eq!(b.shown, [("hello xtls, from s_client".to_owned(), Trust::Unverified)]);
    assert_eq!(b.peer_fingerprint(), theirs.fingerprint());
    let printed = out.lock().unwrap().clone();
    assert_eq!(printed_fingerprint(&printed, "Server certificate"), b.engine.fingerprint().unwrap());
    assert!(printed.contains("TLSv1.3"), "{printed}");
    // Teardown: our close_notify; s_client reports the closed connection.
    let close = b.engine.close(&mut Cx { rng: &mut b.rng, now: NOW }, &THEIRS.parse().unwrap()).unwrap();
    b.apply(close);
    wait_for("s_client", &out, "closed");
    rec.passed(
        Protocol::of(&jabberwock_e2e::xtls::PROTOCOL),
        &openssl_version(),
        &[
            (Direction::TheirsToOurs, &["TLS 1.3 handshake from `s_client`", "message"]),
            (Direction::OursToTheirs, &["message", "close_notify"]),
        ],
    );
}
