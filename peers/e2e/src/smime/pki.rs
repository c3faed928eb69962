//! Certificates for RFC 3923: the scenario's certificate authority, device enrolment, and the
//! checks a recipient makes on a signer's certificate.
//!
//! - The CA key is Ed25519 (RFC 8410), derived from the scenario's CA seed with SHA-256, so
//!   every honest engine holds the same CA at no cost (an RSA CA would cost a 2048-bit key
//!   generation per engine). The CA certificate is self-signed, valid 2000-01-01 to
//!   9999-12-31 (RFC 5280 §4.1.2.5: "no well-defined expiration date"), so it is the same
//!   bytes in every engine whatever its clock.
//! - Device certificates carry the device's RSA key (CMS key transport needs RSA,
//!   RFC 3370 §4.2.1) and the account's bare JID as an `id-on-xmppAddr` otherName in
//!   subjectAltName (RFC 6120 §13.7.1.4; RFC 3923 §6.3 names certificates by XMPP address).
//!   They are issued directly by the CA: no intermediates.
//! - Certificates are built as plain `TbsCertificate` structures and signed by hand (x509-cert's
//!   builder wants a signer trait Ed25519 does not implement in this dependency set).

use core::time::Duration;

use der::asn1::{BitString, GeneralizedTime, OctetString, SetOfVec, UtcTime, Utf8StringRef};
use der::{Any, Decode, Encode, Tag};
use ed25519_dalek::{Signer, SigningKey, Verifier};
use jid::BareJid;
use rsa::pkcs8::{DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::{GeneralName, OtherName};
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use crate::E2eError;
use crate::kit::codec::{hex, pem};
use crate::kit::crypto::sha256;

/// `id-on-xmppAddr` (RFC 6120 §13.7.1.4).
pub const ID_ON_XMPP_ADDR: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.8.5");
/// `id-Ed25519` (RFC 8410).
pub const ID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// `rsaEncryption` (RFC 8017).
pub const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const ID_O: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
const ID_KP_EMAIL_PROTECTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4");
const ID_CE_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const ID_CE_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const ID_CE_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const ID_CE_SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");

/// How long a device certificate is valid from its issuance.
pub const DEVICE_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// The CA's notBefore: 2000-01-01T00:00:00Z.
const CA_NOT_BEFORE: Duration = Duration::from_secs(946_684_800);
/// 9999-12-31T23:59:59Z.
const CA_NOT_AFTER: Duration = Duration::from_secs(253_402_300_799);
/// 2050-01-01T00:00:00Z: from here on RFC 5280 §4.1.2.5 wants GeneralizedTime.
const UTC_TIME_END: Duration = Duration::from_secs(2_524_608_000);

fn asn1(what: &'static str) -> impl Fn(der::Error) -> E2eError {
    move |e| E2eError::Malformed { what, detail: e.to_string() }
}

/// A local (our own) encoding failure: these are our own well-formed values, so this does
/// not happen in practice; it is reported as a policy error rather than a panic.
fn local(e: impl core::fmt::Display) -> E2eError {
    E2eError::Policy { detail: format!("encoding our own certificate: {e}") }
}

/// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
fn x509_time(t: Duration) -> Result<Time, der::Error> {
    let t = Duration::from_secs(t.as_secs());
    if t < UTC_TIME_END {
        Ok(Time::UtcTime(UtcTime::from_unix_duration(t)?))
    } else {
        Ok(Time::GeneralTime(GeneralizedTime::from_unix_duration(t)?))
    }
}

/// A Name with organisation and common name, built attribute by attribute (a JID may hold
/// characters the RFC 4514 string parser treats as syntax).
fn name(org: &str, cn: &str) -> Result<Name, der::Error> {
    let rdn = |oid: ObjectIdentifier, value: &str| -> Result<RelativeDistinguishedName, der::Error> {
        let atv = AttributeTypeAndValue { oid, value: Any::new(Tag::Utf8String, value.as_bytes())? };
        Ok(RelativeDistinguishedName(SetOfVec::try_from(vec![atv])?))
    };
    Ok(RdnSequence(vec![rdn(ID_O, org)?, rdn(ID_CN, cn)?]))
}

fn extension(oid: ObjectIdentifier, critical: bool, value: &impl Encode) -> Result<Extension, der::Error> {
    Ok(Extension { extn_id: oid, critical, extn_value: OctetString::new(value.to_der()?)? })
}

fn ed25519_alg() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned { oid: ID_ED25519, parameters: None }
}

/// A certificate with what we use of it precomputed.
#[derive(Clone)]
pub struct Cert {
    /// The parsed certificate.
    pub cert: Certificate,
    /// Its DER encoding.
    pub der: Vec<u8>,
    /// SHA-256 of the DER, lowercase hex: the fingerprint users compare and the PEP item id.
    pub fingerprint: String,
}

impl core::fmt::Debug for Cert {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Cert").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl Cert {
    /// Parses a DER certificate (from the network: every failure is an error).
    pub fn from_der(der: &[u8]) -> Result<Cert, E2eError> {
        let cert = Certificate::from_der(der).map_err(asn1("certificate"))?;
        Ok(Cert { cert, der: der.to_vec(), fingerprint: hex(&sha256(&[der])) })
    }

    fn from_cert(cert: Certificate) -> Result<Cert, E2eError> {
        let der = cert.to_der().map_err(local)?;
        Ok(Cert { fingerprint: hex(&sha256(&[&der])), cert, der })
    }

    /// The certificate's serial number, hex (names the device in trust events).
    pub fn serial_hex(&self) -> String {
        hex(self.cert.tbs_certificate.serial_number.as_bytes())
    }

    /// The RSA public key of the certificate (the only key type CMS key transport and our
    /// signatures use).
    pub fn rsa_public(&self) -> Result<RsaPublicKey, E2eError> {
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        if spki.algorithm.oid != RSA_ENCRYPTION {
            return Err(E2eError::Rejected {
                reason: "unsupported-algorithm",
                detail: format!("certificate key algorithm {}", spki.algorithm.oid),
            });
        }
        let der = spki.to_der().map_err(asn1("subjectPublicKeyInfo"))?;
        RsaPublicKey::from_public_key_der(&der)
            .map_err(|e| E2eError::Malformed { what: "subjectPublicKeyInfo", detail: e.to_string() })
    }

    /// The `id-on-xmppAddr` values of the subjectAltName (RFC 6120 §13.7.1.4), as bare JIDs.
    /// Values that are not JIDs are skipped.
    pub fn xmpp_addrs(&self) -> Result<Vec<BareJid>, E2eError> {
        let Some((_, san)) =
            self.cert.tbs_certificate.get::<SubjectAltName>().map_err(asn1("subjectAltName"))?
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for gn in san.0 {
            if let GeneralName::OtherName(on) = gn
                && on.type_id == ID_ON_XMPP_ADDR
                && let Ok(s) = Utf8StringRef::try_from(&on.value)
                && let Ok(j) = s.as_str().parse::<BareJid>()
            {
                out.push(j);
            }
        }
        Ok(out)
    }

    /// The validity window as durations since the Unix epoch.
    pub fn validity(&self) -> (Duration, Duration) {
        let v = &self.cert.tbs_certificate.validity;
        (v.not_before.to_unix_duration(), v.not_after.to_unix_duration())
    }

    /// PEM (RFC 7468) of the certificate.
    pub fn pem(&self) -> String {
        pem("CERTIFICATE", &self.der)
    }
}


/// A certificate authority: an Ed25519 key and its self-signed certificate.
#[derive(Clone)]
pub struct Ca {
    key: SigningKey,
    /// The CA certificate.
    pub cert: Cert,
}

impl core::fmt::Debug for Ca {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ca").field("cert", &self.cert).finish_non_exhaustive()
    }
}

impl Ca {
    /// The CA every engine given `seed` derives: same key, same certificate bytes.
    pub fn from_seed(seed: &[u8; 32]) -> Result<Ca, E2eError> {
        let secret: [u8; 32] =
            Sha256::new().chain_update(b"jabberwock smime ca key\0").chain_update(seed).finalize().into();
        let key = SigningKey::from_bytes(&secret);
        let public = key.verifying_key().to_bytes();
        let subject =
            name("Jabberwock", &format!("Jabberwock S/MIME CA {}", hex(&public[..4]))).map_err(local)?;
        let spki = SubjectPublicKeyInfoOwned {
            algorithm: ed25519_alg(),
            subject_public_key: BitString::from_bytes(&public).map_err(local)?,
        };
        let ku = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
        let extensions = vec![
            extension(
                ID_CE_BASIC_CONSTRAINTS,
                true,
                &BasicConstraints { ca: true, path_len_constraint: Some(0) },
            )
            .map_err(local)?,
            extension(ID_CE_KEY_USAGE, true, &ku).map_err(local)?,
        ];
        let tbs = TbsCertificate {
            version: Version::V3,
            serial_number: SerialNumber::new(&[1]).map_err(local)?,
            signature: ed25519_alg(),
            issuer: subject.clone(),
            validity: Validity {
                not_before: x509_time(CA_NOT_BEFORE).map_err(local)?,
                not_after: x509_time(CA_NOT_AFTER).map_err(local)?,
            },
            subject,
            subject_public_key_info: spki,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(extensions),
        };
        let cert = Self::sign_with(&key, tbs)?;
        Ok(Ca { key, cert })
    }

    fn sign_with(key: &SigningKey, tbs: TbsCertificate) -> Result<Cert, E2eError> {
        let tbs_der = tbs.to_der().map_err(local)?;
        let sig = key.sign(&tbs_der).to_bytes();
        Cert::from_cert(Certificate {
            tbs_certificate: tbs,
            signature_algorithm: ed25519_alg(),
            signature: BitString::from_bytes(&sig).map_err(local)?,
        })
    }

    /// Issues a device certificate for `owner`'s RSA key, valid from `not_before` for
    /// [`DEVICE_VALIDITY`].
    pub fn issue(
        &self,
        owner: &BareJid,
        public: &RsaPublicKey,
        serial: &[u8],
        not_before: Duration,
    ) -> Result<Cert, E2eError> {
        let spki_der = public.to_public_key_der().map_err(local)?;
        let spki = SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes()).map_err(local)?;
        let xmpp_addr = OtherName {
            type_id: ID_ON_XMPP_ADDR,
            value: Any::new(Tag::Utf8String, owner.as_str().as_bytes()).map_err(local)?,
        };
        let san = SubjectAltName(vec![GeneralName::OtherName(xmpp_addr)]);
        let ku =
            KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation | KeyUsages::KeyEncipherment);
        let extensions = vec![
            extension(
                ID_CE_BASIC_CONSTRAINTS,
                true,
                &BasicConstraints { ca: false, path_len_constraint: None },
            )
            .map_err(local)?,
            extension(ID_CE_KEY_USAGE, true, &ku).map_err(local)?,
            extension(ID_CE_EXT_KEY_USAGE, false, &ExtendedKeyUsage(vec![ID_KP_EMAIL_PROTECTION]))
                .map_err(local)?,
            extension(ID_CE_SUBJECT_ALT_NAME, false, &san).map_err(local)?,
        ];
        let tbs = TbsCertificate {
            version: Version::V3,
            serial_number: SerialNumber::new(serial).map_err(local)?,
            signature: ed25519_alg(),
            issuer: self.cert.cert.tbs_certificate.subject.clone(),
            validity: Validity {
                not_before: x509_time(not_before).map_err(local)?,
                not_after: x509_time(not_before + DEVICE_VALIDITY).map_err(local)?,
            },
            subject: name("Jabberwock", owner.as_str()).map_err(local)?,
            subject_public_key_info: spki,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(extensions),
        };
        Self::sign_with(&self.key, tbs)
    }

    /// Whether this CA issued `cert`: the issuer name matches and the CA's Ed25519 signature
    /// over the TBSCertificate verifies (RFC 5280 §6.1.3 (a)(1), (a)(4), one level deep).
    pub fn issued(&self, cert: &Cert) -> bool {
        let tbs = &cert.cert.tbs_certificate;
        if tbs.issuer != self.cert.cert.tbs_certificate.subject
            || cert.cert.signature_algorithm.oid != ID_ED25519
            || tbs.signature.oid != ID_ED25519
        {
            return false;
        }
        let Ok(tbs_der) = tbs.to_der() else { return false };
        let Some(sig) = cert.cert.signature.as_bytes() else { return false };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else { return false };
        self.key.verifying_key().verify(&tbs_der, &sig).is_ok()
    }

    /// The CA's private key as PKCS#8 PEM (RFC 8410 §7), for test harnesses that issue
    /// certificates with other tools.
    pub fn key_pem(&self) -> String {
        // PrivateKeyInfo { version 0, algorithm id-Ed25519, privateKey OCTET STRING { OCTET STRING seed } }
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
        ];
        der.extend_from_slice(&self.key.to_bytes());
        pem("PRIVATE KEY", &der)
    }
}

/// An RSA private key as PKCS#8 PEM.
pub fn rsa_key_pem(key: &RsaPrivateKey) -> Result<String, E2eError> {
    Ok(key.to_pkcs8_pem(LineEnding::LF).map_err(local)?.to_string())
}
