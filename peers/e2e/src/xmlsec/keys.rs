//! Device keys: RSA-2048 key pairs, their fingerprints, and the `<ds:KeyInfo/>` PEP payload
//! (xmldsig-core1 §4.5.2.2 `RSAKeyValue`: `Modulus` and `Exponent` as base64 `CryptoBinary`,
//! big-endian with leading zero octets stripped, §4.0.1).

use minidom::Element;
use rand_core::RngCore;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};

use super::NS_DS;
use crate::E2eError;
// XML Signature and XML Encryption carry `base64Binary`, which implementations (xmlsec1 among
// them) wrap at 64 columns: every XML white space is dropped before decoding.
pub(crate) use crate::kit::codec::{b64, hex, unb64_wrapped as unb64};
use crate::xml::{ElementExt, el, text_el};

/// The modulus size of the keys we make, and the smallest we accept from a peer.
pub const MIN_BITS: usize = 2048;

/// A peer's (or our own) public key with its fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The key.
    pub key: RsaPublicKey,
    /// SHA-256 of the DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7), lower-case hex: the PEP
    /// item id, the `<ds:KeyName/>`, and what users compare.
    pub fingerprint: String,
}

impl core::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint)
    }
}

impl PublicKey {
    /// Wraps a key that passed the size checks, computing its fingerprint.
    pub fn new(key: RsaPublicKey) -> Result<Self, E2eError> {
        let bits = key.n().bits();
        if !(MIN_BITS..=RsaPublicKey::MAX_SIZE).contains(&bits) {
            return Err(E2eError::Rejected {
                reason: "weak-key",
                detail: format!("a {bits}-bit RSA modulus (we accept {MIN_BITS} to 4096)"),
            });
        }
        let der = key
            .to_public_key_der()
            .map_err(|e| E2eError::Malformed { what: "RSAKeyValue", detail: e.to_string() })?;
        let fingerprint = hex(&Sha256::digest(der.as_bytes()));
        Ok(PublicKey { key, fingerprint })
    }

    /// The PEP payload: `<KeyInfo xmlns=ds><KeyValue><RSAKeyValue><Modulus/><Exponent/>`.
    pub fn key_info(&self) -> Element {
        let rsa = el("RSAKeyValue", NS_DS)
            .child(text_el("Modulus", NS_DS, b64(&self.key.n().to_bytes_be())))
            .child(text_el("Exponent", NS_DS, b64(&self.key.e().to_bytes_be())));
        el("KeyInfo", NS_DS).child(el("KeyValue", NS_DS).child(rsa))
    }

    /// Reads a `<ds:KeyInfo/>` PEP payload (or a bare `<ds:KeyValue/>`).
    pub fn from_key_info(info: &Element) -> Result<Self, E2eError> {
        let value = if info.is("KeyValue", NS_DS) {
            info
        } else if info.is("KeyInfo", NS_DS) {
            info.get_child("KeyValue", NS_DS).ok_or(E2eError::Missing { what: "KeyValue" })?
        } else {
            return Err(E2eError::Missing { what: "KeyInfo" });
        };
        let rsa = value.get_child("RSAKeyValue", NS_DS).ok_or(E2eError::Missing { what: "RSAKeyValue" })?;
        let part = |name: &'static str| -> Result<BigUint, E2eError> {
            let text = rsa.get_child(name, NS_DS).ok_or(E2eError::Missing { what: name })?.text();
            Ok(BigUint::from_bytes_be(&unb64(name, &text)?))
        };
        let key = RsaPublicKey::new(part("Modulus")?, part("Exponent")?)
            .map_err(|e| E2eError::Malformed { what: "RSAKeyValue", detail: e.to_string() })?;
        PublicKey::new(key)
    }

    /// The key as a PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`).
    pub fn to_pem(&self) -> String {
        self.key.to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    /// Reads a PEM SubjectPublicKeyInfo.
    pub fn from_pem(pem: &str) -> Result<Self, E2eError> {
        let key = RsaPublicKey::from_public_key_pem(pem)
            .map_err(|e| E2eError::Malformed { what: "public key PEM", detail: e.to_string() })?;
        PublicKey::new(key)
    }
}

/// A device's own key pair.
#[derive(Clone)]
pub struct KeyPair {
    /// The private key.
    pub private: RsaPrivateKey,
    /// Its public half.
    pub public: PublicKey,
}

impl core::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "KeyPair({})", self.public.fingerprint)
    }
}

impl KeyPair {
    /// A fresh RSA-2048 key pair from the device's seeded stream.
    pub fn generate(rng: &mut dyn RngCore) -> Result<Self, E2eError> {
        let private = crate::rsa_keygen::generate(rng, MIN_BITS)
            .map_err(|e| E2eError::Policy { detail: format!("RSA key generation: {e}") })?;
        Self::from_private(private)
    }

    /// Wraps an existing private key.
    pub fn from_private(private: RsaPrivateKey) -> Result<Self, E2eError> {
        let public = PublicKey::new(private.to_public_key())?;
        Ok(KeyPair { private, public })
    }

    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`, what `openssl genpkey`
    /// writes).
    pub fn from_pem(pem: &str) -> Result<Self, E2eError> {
        let private = RsaPrivateKey::from_pkcs8_pem(pem)
            .map_err(|e| E2eError::Malformed { what: "private key PEM", detail: e.to_string() })?;
        Self::from_private(private)
    }

    /// The private key as PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        self.private.to_pkcs8_pem(LineEnding::LF).map(|p| p.to_string()).unwrap_or_default()
    }
}
