//! Deterministic TLS 1.3 plumbing on rustls, sans-I/O: used by the XTLS engine
//! ([`crate::xtls`]) and by the client-to-server STARTTLS code of the virtual XMPP client.
//!
//! rustls draws every random byte from its [`CryptoProvider`] (`secure_random`, and the key
//! exchange group's `start()`), and every time from a [`TimeProvider`]. Both are replaced
//! here, so the same seed and the same inputs give byte-identical records:
//!
//! - [`Seeded`] / [`provider`]: a provider whose `secure_random` is a ChaCha20 stream seeded
//!   by the caller, and whose only key exchange group is an X25519 implementation taking its
//!   private keys from that same stream (the stock groups of `rustls-rustcrypto` read
//!   `OsRng`). TLS 1.3 only (RFC 8446): `TLS13_AES_128_GCM_SHA256` and
//!   `TLS13_CHACHA20_POLY1305_SHA256` from `rustls-rustcrypto`; its signature verification
//!   algorithms (webpki); its key loader (Ed25519 signing is deterministic, RFC 8032).
//! - [`SimTime`]: a [`TimeProvider`] the caller moves with simulated time.
//! - [`Identity`] ([`self_signed`], [`ca`], [`issued_by`]): Ed25519 certificates made by
//!   rcgen without its ring backend (we sign with `ed25519-dalek`), with the RFC 6120
//!   §13.7.1.4 `id-on-xmppAddr` subjectAltName for names that are JIDs.
//! - [`client_config`], [`server_config`] (and the mutual-authentication variants the XTLS
//!   engine uses): no session tickets, no resumption, no early data.
//!
//! ## The `&'static` fields of a provider, and what is leaked
//!
//! `CryptoProvider::secure_random` and every entry of `kx_groups` are `&'static` references,
//! while our random stream belongs to one connection (one device, one session). Each provider
//! therefore points at a *slot*: a leaked `(ChaCha20 stream, random source, X25519 group)`
//! triple. Slots live in a process-wide pool and are reused once the provider that used
//! them is gone (the pool keeps a `Weak` to it): the memory that stays leaked is bounded by
//! the largest number of providers alive at the same time (about 600 bytes a slot), not by
//! the number ever made. The pool is only an allocator: a slot is reseeded when it is handed
//! out and serves a single provider at a time, so it carries no state between devices or
//! sessions and never influences output. Do not copy a provider out of its `Arc` (a clone
//! outliving the `Arc` would keep using a slot the pool believes free).

mod cert;
#[cfg(test)]
mod tests;

use core::fmt;
use core::time::Duration;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom, SharedSecret, SupportedKxGroup,
    WebPkiSupportedAlgorithms,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, ParsedCertificate};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::time_provider::TimeProvider;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, NamedGroup,
    RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

pub use self::cert::{Identity, ca, fingerprint, issued_by, self_signed};

// ---- the seeded provider ------------------------------------------------------------------

/// One leaked random stream with the two `'static` objects a provider points at.
struct Slot {
    rng: &'static Mutex<ChaCha20Rng>,
    random: SlotRandom,
    x25519: SlotX25519,
}

/// Leaks one slot (see the module documentation for the bound).
fn leak_slot(seed: [u8; 32]) -> &'static Slot {
    let rng: &'static Mutex<ChaCha20Rng> = Box::leak(Box::new(Mutex::new(ChaCha20Rng::from_seed(seed))));
    Box::leak(Box::new(Slot { rng, random: SlotRandom(rng), x25519: SlotX25519(rng) }))
}

/// The `secure_random` of a seeded provider.
struct SlotRandom(&'static Mutex<ChaCha20Rng>);

/// X25519 (RFC 7748) whose private keys come from the slot's stream.
struct SlotX25519(&'static Mutex<ChaCha20Rng>);

impl fmt::Debug for SlotRandom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeededRandom")
    }
}

impl fmt::Debug for SlotX25519 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeededX25519")
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves a usable stream.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SecureRandom for SlotRandom {
    fn fill(&self, bytes: &mut [u8]) -> Result<(), GetRandomFailed> {
        lock(self.0).fill_bytes(bytes);
        Ok(())
    }
}

impl SupportedKxGroup for SlotX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let mut secret = [0u8; 32];
        lock(self.0).fill_bytes(&mut secret);
        let secret = x25519_dalek::StaticSecret::from(secret);
        let public = x25519_dalek::PublicKey::from(&secret);
        Ok(Box::new(X25519Exchange { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

struct X25519Exchange {
    secret: x25519_dalek::StaticSecret,
    public: x25519_dalek::PublicKey,
}

impl ActiveKeyExchange for X25519Exchange {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, Error> {
        let peer: [u8; 32] =
            peer.try_into().map_err(|_| Error::from(rustls::PeerMisbehaved::InvalidKeyShare))?;
        let shared = self.secret.diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        // RFC 8446 §7.4.2: an all-zero X25519 output MUST be refused (a low-order point).
        if !shared.was_contributory() {
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        self.public.as_bytes()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// What a pool entry is doing.
enum Use {
    Free,
    /// Handed to a [`Seeded`] that has not made its provider yet.
    Reserved,
    /// Serving this provider while it lives.
    Owned(Weak<CryptoProvider>),
}

struct Pool {
    entries: Vec<(&'static Slot, Use)>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { entries: Vec::new() });

/// How many slots have ever been leaked (the pool's size): for tests and reports.
pub fn leaked_slots() -> usize {
    lock(&POOL).entries.len()
}

/// A rustls [`CryptoProvider`] builder whose randomness is a ChaCha20 stream seeded by the
/// caller (see the module documentation for how its `'static` parts are pooled).
pub struct Seeded {
    index: usize,
    slot: &'static Slot,
    built: bool,
}

impl fmt::Debug for Seeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Seeded").field("slot", &self.index).finish()
    }
}

impl Seeded {
    /// Takes a free slot (or leaks a new one) and seeds its stream with `seed`.
    pub fn new(seed: [u8; 32]) -> Seeded {
        let mut pool = lock(&POOL);
        let free = pool.entries.iter().position(|(_, u)| match u {
            Use::Free => true,
            Use::Reserved => false,
            Use::Owned(w) => w.strong_count() == 0,
        });
        let index = match free {
            Some(i) => i,
            None => {
                pool.entries.push((leak_slot(seed), Use::Free));
                pool.entries.len() - 1
            }
        };
        let Some(entry) = pool.entries.get_mut(index) else {
            // Unreachable: `index` was found in or pushed onto `entries` under this lock.
            return Seeded::detached(seed);
        };
        entry.1 = Use::Reserved;
        let slot = entry.0;
        *lock(slot.rng) = ChaCha20Rng::from_seed(seed);
        Seeded { index, slot, built: false }
    }

    /// A slot outside the pool (leaked for good); only if the pool is inconsistent.
    fn detached(seed: [u8; 32]) -> Seeded {
        Seeded { index: usize::MAX, slot: leak_slot(seed), built: false }
    }

    /// The provider: TLS 1.3 suites AES-128-GCM and ChaCha20-Poly1305, X25519 only, the
    /// seeded stream as `secure_random`.
    pub fn provider(mut self) -> Arc<CryptoProvider> {
        let stock = rustls_rustcrypto::provider();
        let provider = Arc::new(CryptoProvider {
            cipher_suites: vec![
                rustls_rustcrypto::TLS13_AES_128_GCM_SHA256,
                rustls_rustcrypto::TLS13_CHACHA20_POLY1305_SHA256,
            ],
            kx_groups: vec![&self.slot.x25519],
            signature_verification_algorithms: stock.signature_verification_algorithms,
            secure_random: &self.slot.random,
            key_provider: &rustls_rustcrypto::Provider,
        });
        if let Some(entry) = lock(&POOL).entries.get_mut(self.index) {
            entry.1 = Use::Owned(Arc::downgrade(&provider));
        }
        self.built = true;
        provider
    }
}

impl Drop for Seeded {
    fn drop(&mut self) {
        if !self.built
            && let Some(entry) = lock(&POOL).entries.get_mut(self.index)
        {
            entry.1 = Use::Free;
        }
    }
}

/// A seeded TLS 1.3 provider: [`Seeded::new`] then [`Seeded::provider`].
pub fn provider(seed: [u8; 32]) -> Arc<CryptoProvider> {
    Seeded::new(seed).provider()
}

// ---- simulated time -----------------------------------------------------------------------

/// A [`TimeProvider`] on simulated time: the caller sets it (from `Cx::now`) before it drives
/// a connection. Clones share the same clock. Starts at the Unix epoch.
#[derive(Debug, Clone, Default)]
pub struct SimTime(Arc<AtomicU64>);

impl SimTime {
    /// A clock reading `now` (a duration since the Unix epoch).
    pub fn at(now: Duration) -> SimTime {
        let t = SimTime::default();
        t.set(now);
        t
    }

    /// Moves the clock to `now` (milliseconds are kept).
    pub fn set(&self, now: Duration) {
        self.0.store(u64::try_from(now.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// What the clock reads.
    pub fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

impl TimeProvider for SimTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(self.now()))
    }
}

// ---- certificate verification -------------------------------------------------------------

/// How a peer certificate is judged.
#[derive(Debug)]
struct PeerVerifier {
    /// RFC 5280 path validation to this CA (name, validity and signatures), via webpki.
    roots: Option<Arc<WebPkiServerVerifier>>,
    /// Accepted whatever the CA says when its SHA-256 fingerprint is this.
    pinned: Option<String>,
    /// `false`: any well-formed certificate is accepted (a careless client; or XTLS, whose
    /// engine judges the fingerprint after the handshake).
    verify: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: Option<&ServerName<'_>>,
        now: UnixTime,
    ) -> Result<(), Error> {
        // Whatever the policy, the certificate must at least parse as an X.509 end entity
        // (the CertificateVerify signature is checked against its key).
        ParsedCertificate::try_from(end_entity)?;
        if !self.verify {
            return Ok(());
        }
        if let Some(pin) = &self.pinned
            && fingerprint(end_entity).eq_ignore_ascii_case(pin)
        {
            return Ok(());
        }
        match (&self.roots, name) {
            (Some(roots), Some(name)) => {
                roots.verify_server_cert(end_entity, intermediates, name, &[], now).map(|_| ())
            }
            (Some(_), None) => {
                Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
            }
            (None, _) if self.pinned.is_some() => {
                Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
            }
            (None, _) => Err(Error::InvalidCertificate(CertificateError::UnknownIssuer)),
        }
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check(end_entity, intermediates, Some(server_name), now)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // TLS 1.3 only: a 1.2 handshake never gets this far.
        Err(Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

/// The server side of mutual authentication: a client certificate is required, judged like
/// a server's (without a name to match).
#[derive(Debug)]
struct ClientVerifier(PeerVerifier);

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let v = &self.0;
        if v.verify && v.roots.is_some() {
            // Path validation without a name: webpki's client verifier would need a
            // provider-wide default; a pinned fingerprint or `verify = false` is what XTLS uses.
            return Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
        }
        v.check(end_entity, intermediates, None, now).map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

fn peer_verifier(
    provider: &Arc<CryptoProvider>,
    roots: Option<&Identity>,
    pinned: Option<&str>,
    verify: bool,
) -> Result<PeerVerifier, Error> {
    let roots = match roots {
        Some(ca) => {
            let mut store = RootCertStore::empty();
            store.add(ca.cert())?;
            let v = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| Error::General(format!("verifier: {e}")))?;
            Some(v)
        }
        None => None,
    };
    Ok(PeerVerifier {
        roots,
        pinned: pinned.map(str::to_owned),
        verify,
        algorithms: provider.signature_verification_algorithms,
    })
}

// ---- configurations -----------------------------------------------------------------------

/// A TLS 1.3 client configuration without a client certificate (c2s STARTTLS).
///
/// The server certificate is accepted when `verify` is false (whatever it is); otherwise when
/// its fingerprint is `pinned`, or when it chains to `roots` (the CA) with the server name
/// and the validity period checked at `time`. No resumption, no tickets, no early data, no
/// SNI-less quirks: SNI is sent for DNS names.
pub fn client_config(
    provider: Arc<CryptoProvider>,
    roots: Option<&Identity>,
    pinned: Option<&str>,
    verify: bool,
    time: &SimTime,
) -> Result<Arc<ClientConfig>, Error> {
    client_config_with_auth(provider, None, roots, pinned, verify, time)
}

/// [`client_config`] presenting `identity` when the server asks for a certificate
/// (mutual authentication, as XTLS wants: "mutual authentication is desired").
pub fn client_config_with_auth(
    provider: Arc<CryptoProvider>,
    identity: Option<&Identity>,
    roots: Option<&Identity>,
    pinned: Option<&str>,
    verify: bool,
    time: &SimTime,
) -> Result<Arc<ClientConfig>, Error> {
    let verifier = peer_verifier(&provider, roots, pinned, verify)?;
    let builder = ClientConfig::builder_with_details(provider.clone(), Arc::new(time.clone()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        Some(id) => {
            let key = provider.key_provider.load_private_key(id.key_der())?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(CertifiedKey::new(
                vec![id.cert()],
                key,
            ))))
        }
        None => builder.with_no_client_auth(),
    };
    config.resumption = Resumption::disabled();
    config.enable_early_data = false;
    Ok(Arc::new(config))
}

/// A TLS 1.3 server configuration presenting `identity`, not asking for a client
/// certificate (c2s STARTTLS). No tickets, no session cache, no early data.
pub fn server_config(
    provider: Arc<CryptoProvider>,
    identity: &Identity,
    time: &SimTime,
) -> Result<Arc<ServerConfig>, Error> {
    server_config_with_auth(provider, identity, None, time)
}

/// [`server_config`] that requires a client certificate (RFC 8446 §4.3.2
/// CertificateRequest): accepted when its fingerprint is `client_pinned`, or any well-formed
/// certificate when `client_pinned` is `None` (the XTLS engine then judges its fingerprint
/// under the user's trust policy).
pub fn server_config_with_auth(
    provider: Arc<CryptoProvider>,
    identity: &Identity,
    client_auth: Option<Option<&str>>,
    time: &SimTime,
) -> Result<Arc<ServerConfig>, Error> {
    let builder = ServerConfig::builder_with_details(provider.clone(), Arc::new(time.clone()))
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match client_auth {
        Some(pinned) => {
            let verifier = peer_verifier(&provider, None, pinned, pinned.is_some())?;
            builder.with_client_cert_verifier(Arc::new(ClientVerifier(verifier)))
        }
        None => builder.with_no_client_auth(),
    };
    let key = provider.key_provider.load_private_key(identity.key_der())?;
    let mut config = builder
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(CertifiedKey::new(vec![identity.cert()], key))));
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}
