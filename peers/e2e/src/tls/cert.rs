//! Ed25519 X.509 certificates (RFC 8410) made with rcgen, signed by `ed25519-dalek`.

use core::fmt;
use core::time::Duration;

use ed25519_dalek::Signer as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyIdMethod,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use rustls::Error;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::kit::codec::{hex, pem};

/// RFC 6120 §13.7.1.4 `id-on-xmppAddr` (1.3.6.1.5.5.7.8.5).
const ID_ON_XMPPADDR: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 8, 5];
/// How long a certificate is valid after its `not_before`: twenty years of 365 days.
const VALIDITY: Duration = Duration::from_secs(20 * 365 * 86_400);
/// Latest `not_before` accepted (9000-01-01), so that `not_before + VALIDITY` stays a date.
const LATEST: Duration = Duration::from_secs(221_845_392_000);

/// A certificate and its Ed25519 private key.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// The X.509 certificate, DER.
    pub cert_der: Vec<u8>,
    /// The Ed25519 private key (the RFC 8032 32-byte seed).
    pub key: [u8; 32],
    /// The subject's common name (the first name it was made for); an issuer's subject.
    pub subject: String,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("subject", &self.subject)
            .field("fingerprint", &fingerprint(&self.cert_der))
            .finish_non_exhaustive()
    }
}

/// RFC 8410 §7 PKCS#8 v1 `OneAsymmetricKey` prefix for an Ed25519 private key.
const PKCS8_ED25519: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

impl Identity {
    /// The certificate, as rustls takes it.
    pub fn cert(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.cert_der.clone())
    }

    /// The private key as PKCS#8 (RFC 5958 / RFC 8410).
    pub fn key_pkcs8(&self) -> Vec<u8> {
        let mut der = PKCS8_ED25519.to_vec();
        der.extend_from_slice(&self.key);
        der
    }

    /// The private key, as rustls takes it.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8()))
    }

    /// The certificate as PEM (`CERTIFICATE`), for OpenSSL.
    pub fn cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert_der)
    }

    /// The private key as PEM (`PRIVATE KEY`, PKCS#8), for OpenSSL.
    pub fn key_pem(&self) -> String {
        pem("PRIVATE KEY", &self.key_pkcs8())
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        ed25519_dalek::SigningKey::from_bytes(&self.key).verifying_key().to_bytes()
    }

    /// The SHA-256 fingerprint of the certificate ([`fingerprint`]).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }
}

/// The SHA-256 fingerprint of a DER certificate, lowercase hex without separators (what
/// `openssl x509 -fingerprint -sha256` prints, lowercased and without colons).
pub fn fingerprint(cert_der: &[u8]) -> String {
    hex(&Sha256::digest(cert_der))
}

/// rcgen's signing seam over an `ed25519-dalek` key.
struct EdKey {
    key: ed25519_dalek::SigningKey,
    public: [u8; 32],
}

impl EdKey {
    fn new(seed: &[u8; 32]) -> EdKey {
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let public = key.verifying_key().to_bytes();
        EdKey { key, public }
    }
}

impl PublicKeyData for EdKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

impl rcgen::SigningKey for EdKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(self.key.sign(msg).to_bytes().to_vec())
    }
}

fn cert_error(e: rcgen::Error) -> Error {
    Error::General(format!("certificate: {e}"))
}

/// Parameters shared by every certificate: subject CN = the first name, SANs (names with an
/// `@` are JIDs: `id-on-xmppAddr`; the others DNS names), validity from `not_before`, the
/// serial and key identifier derived from the public key (no RNG needed).
fn params(names: &[&str], key: &EdKey, not_before: Duration) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, names.first().copied().unwrap_or("jabberwock"));
    p.distinguished_name = dn;
    for name in names {
        if name.contains('@') {
            p.subject_alt_names.push(SanType::OtherName((ID_ON_XMPPADDR.to_vec(), (*name).into())));
        } else {
            let ia5 = (*name).try_into().map_err(|e: rcgen::Error| cert_error(e))?;
            p.subject_alt_names.push(SanType::DnsName(ia5));
        }
    }
    let not_before = not_before.min(LATEST);
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    p.not_before = epoch + not_before;
    p.not_after = epoch + not_before + VALIDITY;
    let digest = Sha256::digest(key.public);
    let mut serial = digest[..16].to_vec();
    if let Some(first) = serial.first_mut() {
        *first &= 0x7f;
    }
    p.serial_number = Some(SerialNumber::from(serial));
    p.key_identifier_method = KeyIdMethod::PreSpecified(digest[..20].to_vec());
    Ok(p)
}

/// A self-signed end-entity certificate for `names`, key from `seed`.
pub fn self_signed(names: &[&str], seed: [u8; 32], not_before: Duration) -> Result<Identity, Error> {
    let key = EdKey::new(&seed);
    let mut p = params(names, &key, not_before)?;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = p.self_signed(&key).map_err(cert_error)?;
    Ok(Identity {
        cert_der: cert.der().to_vec(),
        key: seed,
        subject: names.first().copied().unwrap_or("jabberwock").to_owned(),
    })
}

/// A self-signed certificate authority called `name`, key from `seed`.
pub fn ca(name: &str, seed: [u8; 32], not_before: Duration) -> Result<Identity, Error> {
    let key = EdKey::new(&seed);
    let p = ca_params(name, &key, not_before)?;
    let cert = p.self_signed(&key).map_err(cert_error)?;
    Ok(Identity { cert_der: cert.der().to_vec(), key: seed, subject: name.to_owned() })
}

fn ca_params(name: &str, key: &EdKey, not_before: Duration) -> Result<CertificateParams, Error> {
    // A CA has no subjectAltName: its name is the subject.
    let mut p = params(&[], key, not_before)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(p)
}

/// An end-entity certificate for `names` (key from `seed`) issued by `ca`, made by [`ca`].
pub fn issued_by(
    ca: &Identity,
    names: &[&str],
    seed: [u8; 32],
    not_before: Duration,
) -> Result<Identity, Error> {
    let ca_key = EdKey::new(&ca.key);
    // The issuer's parameters are rebuilt from its subject and key: the same subject DN and
    // key identifier as in its certificate. Its validity does not matter for issuing.
    let issuer = Issuer::new(ca_params(&ca.subject, &ca_key, Duration::ZERO)?, ca_key);
    let key = EdKey::new(&seed);
    let mut p = params(names, &key, not_before)?;
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &issuer).map_err(cert_error)?;
    Ok(Identity {
        cert_der: cert.der().to_vec(),
        key: seed,
        subject: names.first().copied().unwrap_or("jabberwock").to_owned(),
    })
}
