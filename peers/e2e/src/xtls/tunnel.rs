//! One XTLS tunnel's TLS 1.3 connection, sans-I/O, with the log that lets it be copied.
//!
//! rustls connections cannot be cloned. Everything a connection does is a function of its
//! seed, its configuration, the bytes fed to it, the plaintext written to it and the time
//! at each step (the provider is seeded, see [`crate::tls`]): a copy is made by replaying
//! that log into a fresh connection, which ends in exactly the same state (the same traffic
//! keys and record sequence numbers). This is what [`crate::Theft::FullState`] hands the
//! attacker. The log keeps every byte that crossed the tunnel, so its memory grows with the
//! traffic; that is the price of an honest copy.

use core::time::Duration;
use std::io::{Read, Write};
use std::sync::Arc;

use rustls::{ClientConnection, Connection, ServerConnection};
use rustls_pki_types::ServerName;

use crate::E2eError;
use crate::tls::{self, Identity, SimTime};

/// Which end of the TLS handshake we are (XTLS §glossary: the initiator is the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The initiator: TLS client.
    Client,
    /// The responder: TLS server.
    Server,
}

#[derive(Debug, Clone)]
enum Step {
    Read(Vec<u8>),
    Write(Vec<u8>),
    CloseNotify,
}

/// Largest TLS input one `<data/>` may carry, decoded (a few records).
pub const MAX_DATA: usize = 256 * 1024;

/// A TLS connection and how it was made.
pub struct Tunnel {
    role: Role,
    seed: [u8; 32],
    identity: Identity,
    server_name: String,
    time: SimTime,
    conn: Option<Connection>,
    log: Vec<(Duration, Step)>,
    peer_closed: bool,
}

impl core::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tunnel")
            .field("role", &self.role)
            .field("handshaking", &self.is_handshaking())
            .field("log", &self.log.len())
            .finish_non_exhaustive()
    }
}

/// Maps a rustls error to the engine's typed error (the reason codes are stable).
pub fn tls_error(e: &rustls::Error) -> E2eError {
    use rustls::Error as R;
    let reason = match e {
        R::InvalidCertificate(_) | R::NoCertificatesPresented | R::UnsupportedNameType => "bad-certificate",
        R::DecryptError => "bad-record-mac",
        R::AlertReceived(_) => "tls-alert",
        R::InvalidMessage(_) | R::InappropriateMessage { .. } | R::InappropriateHandshakeMessage { .. } => {
            "tls-invalid-message"
        }
        R::PeerMisbehaved(_) | R::PeerIncompatible(_) => "tls-peer-misbehaved",
        _ => "tls-error",
    };
    E2eError::Rejected { reason, detail: e.to_string() }
}

impl Tunnel {
    /// A new connection: a client presenting `identity` to `server_name`, or a server asking
    /// for the client's certificate. The peer's certificate is any well-formed one: the engine
    /// judges its fingerprint after the handshake (trust policy, verification ceremony).
    pub fn new(
        role: Role,
        seed: [u8; 32],
        identity: &Identity,
        server_name: &str,
        now: Duration,
    ) -> Result<Tunnel, E2eError> {
        let time = SimTime::at(now);
        let conn = Self::connect(role, seed, identity, server_name, &time)?;
        Ok(Tunnel {
            role,
            seed,
            identity: identity.clone(),
            server_name: server_name.to_owned(),
            time,
            conn: Some(conn),
            log: Vec::new(),
            peer_closed: false,
        })
    }

    fn connect(
        role: Role,
        seed: [u8; 32],
        identity: &Identity,
        server_name: &str,
        time: &SimTime,
    ) -> Result<Connection, E2eError> {
        let local = |e: rustls::Error| E2eError::Policy { detail: format!("TLS configuration: {e}") };
        let provider = tls::provider(seed);
        Ok(match role {
            Role::Client => {
                let config = tls::client_config_with_auth(provider, Some(identity), None, None, false, time)
                    .map_err(local)?;
                let name = ServerName::try_from(server_name.to_owned())
                    .map_err(|e| E2eError::Malformed { what: "server name", detail: e.to_string() })?;
                Connection::Client(ClientConnection::new(config, name).map_err(local)?)
            }
            Role::Server => {
                let config =
                    tls::server_config_with_auth(provider, identity, Some(None), time).map_err(local)?;
                Connection::Server(ServerConnection::new(Arc::clone(&config)).map_err(local)?)
            }
        })
    }

    fn conn(&mut self) -> Result<&mut Connection, E2eError> {
        self.conn
            .as_mut()
            .ok_or(E2eError::Rejected { reason: "no-session", detail: "the TLS connection is gone".into() })
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        self.conn.as_ref().is_none_or(|c| c.is_handshaking())
    }

    /// Feeds TLS bytes from the peer and returns the plaintext they carried. On an error
    /// the connection is unusable (the caller drops it after sending [`Tunnel::take_tls`],
    /// which holds the alert rustls queued).
    pub fn feed(&mut self, now: Duration, bytes: &[u8]) -> Result<Vec<u8>, E2eError> {
        self.time.set(now);
        self.log.push((now, Step::Read(bytes.to_vec())));
        let conn = self.conn.as_mut().ok_or(E2eError::Rejected {
            reason: "no-session",
            detail: "the TLS connection is gone".into(),
        })?;
        let mut plain = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = conn
                .read_tls(&mut rest)
                .map_err(|e| E2eError::Malformed { what: "TLS record", detail: e.to_string() })?;
            let state = conn.process_new_packets().map_err(|e| tls_error(&e))?;
            let _ = conn.reader().read_to_end(&mut plain);
            if state.peer_has_closed() {
                self.peer_closed = true;
                break;
            }
            if n == 0 {
                break;
            }
        }
        Ok(plain)
    }

    /// Queues plaintext (sent once the handshake is done).
    pub fn write(&mut self, now: Duration, plaintext: &[u8]) -> Result<(), E2eError> {
        self.time.set(now);
        self.log.push((now, Step::Write(plaintext.to_vec())));
        self.conn()?
            .writer()
            .write_all(plaintext)
            .map_err(|e| E2eError::Policy { detail: format!("TLS write: {e}") })
    }

    /// Queues a close_notify alert (RFC 8446 §6.1).
    pub fn close_notify(&mut self, now: Duration) {
        self.time.set(now);
        self.log.push((now, Step::CloseNotify));
        if let Some(c) = self.conn.as_mut() {
            c.send_close_notify();
        }
    }

    /// Every TLS byte waiting to go to the peer.
    pub fn take_tls(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(c) = self.conn.as_mut() {
            while c.wants_write() {
                match c.write_tls(&mut out) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        out
    }

    /// The peer's certificate, once it was received.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.conn.as_ref()?.peer_certificates()?.first().map(|c| c.as_ref().to_vec())
    }

    /// The negotiated cipher suite's name.
    pub fn suite(&self) -> String {
        self.conn
            .as_ref()
            .and_then(|c| c.negotiated_cipher_suite())
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default()
    }

    /// RFC 8446 §7.5 exporter (RFC 5705 interface), once the handshake is done.
    pub fn export(&self, label: &[u8], len: usize) -> Option<Vec<u8>> {
        let conn = self.conn.as_ref()?;
        conn.export_keying_material(vec![0u8; len], label, None).ok()
    }

    /// Whether the peer sent close_notify (RFC 8446 §6.1).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// How many bytes the replay log holds.
    pub fn log_bytes(&self) -> usize {
        self.log
            .iter()
            .map(|(_, s)| match s {
                Step::Read(b) | Step::Write(b) => b.len(),
                Step::CloseNotify => 0,
            })
            .sum()
    }
}

impl Clone for Tunnel {
    /// A copy in the same state, by replaying the log into a new connection (the output is
    /// deterministic, so what comes out is the original's). If the replay failed the copy
    /// has no connection, and everything it is asked to do fails with `no-session`.
    fn clone(&self) -> Self {
        let time = SimTime::at(self.time.now());
        let mut conn = Self::connect(self.role, self.seed, &self.identity, &self.server_name, &time).ok();
        if let Some(c) = conn.as_mut() {
            let mut ok = true;
            for (at, step) in &self.log {
                time.set(*at);
                match step {
                    Step::Read(bytes) => {
                        let mut rest = &bytes[..];
                        while ok && !rest.is_empty() {
                            ok = matches!(c.read_tls(&mut rest), Ok(n) if n > 0)
                                && c.process_new_packets().is_ok();
                            let mut sink = Vec::new();
                            let _ = c.reader().read_to_end(&mut sink);
                        }
                    }
                    Step::Write(bytes) => ok = ok && c.writer().write_all(bytes).is_ok(),
                    Step::CloseNotify => c.send_close_notify(),
                }
                let mut sink = Vec::new();
                while c.wants_write() {
                    if !matches!(c.write_tls(&mut sink), Ok(n) if n > 0) {
                        break;
                    }
                }
            }
            if !ok {
                conn = None;
            }
        }
        time.set(self.time.now());
        Tunnel {
            role: self.role,
            seed: self.seed,
            identity: self.identity.clone(),
            server_name: self.server_name.clone(),
            time,
            conn,
            log: self.log.clone(),
            peer_closed: self.peer_closed,
        }
    }
}
