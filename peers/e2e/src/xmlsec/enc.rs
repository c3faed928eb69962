//! XML Encryption (xmlenc-core1) as this binding uses it: one `<EncryptedData
//! Type='…#Element'>` whose content key travels in one `<EncryptedKey/>` per recipient key
//! (RSA-OAEP key transport, §5.5.2), inside the EncryptedData's `<ds:KeyInfo/>` (§3.5.1).

use aes::Aes128;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use cbc::cipher::block_padding::{NoPadding, Pkcs7};
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use minidom::Element;
use rand_core::RngCore;
use rsa::Oaep;
use sha1::Sha1;
use sha2::Sha256;

use super::keys::{KeyPair, PublicKey, b64, unb64};
use super::{MAX_KEYS, NS_DS, NS_XENC, NS_XENC11};
use crate::E2eError;
use crate::rng06::Rng06;
use crate::xml::{ElementExt, el, text_el};

/// §3.5.1 / §4.1: the plaintext is one serialised element.
pub const TYPE_ELEMENT: &str = "http://www.w3.org/2001/04/xmlenc#Element";
/// §5.2.1 AES-128 in CBC mode.
pub const AES128_CBC: &str = "http://www.w3.org/2001/04/xmlenc#aes128-cbc";
/// xmlenc-core1 §5.2.4 AES-128 in GCM mode.
pub const AES128_GCM: &str = "http://www.w3.org/2009/xmlenc11#aes128-gcm";
/// §5.5.2 RSA-OAEP with MGF1 over SHA-1 (the digest is SHA-1 unless a `ds:DigestMethod` says
/// otherwise).
pub const RSA_OAEP_MGF1P: &str = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p";
/// xmlenc-core1 §5.5.2 RSA-OAEP with a selectable MGF (MGF1 over SHA-1 by default): read only.
pub const RSA_OAEP_11: &str = "http://www.w3.org/2009/xmlenc11#rsa-oaep";
/// xmldsig SHA-1 (the default OAEP digest).
pub const SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";
/// xmlenc SHA-256.
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
const MGF1_SHA1: &str = "http://www.w3.org/2009/xmlenc11#mgf1sha1";

const KEY_LEN: usize = 16;
const GCM_IV_LEN: usize = 12;
const GCM_TAG_LEN: usize = 16;
const BLOCK: usize = 16;

/// The content cipher of `<EncryptedData/>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cipher {
    /// AES-128-GCM (xmlenc-core1 §5.2.4): authenticated; the default.
    #[default]
    Aes128Gcm,
    /// AES-128-CBC (§5.2.1): unauthenticated, malleable, and a padding/parsing oracle if a
    /// receiver's errors can be observed (Jager and Somorovsky, "How to Break XML Encryption",
    /// CCS 2011). Only the enveloped signature inside protects the content.
    Aes128Cbc,
}

impl Cipher {
    /// The `EncryptionMethod` Algorithm URI.
    pub fn uri(self) -> &'static str {
        match self {
            Cipher::Aes128Gcm => AES128_GCM,
            Cipher::Aes128Cbc => AES128_CBC,
        }
    }

    /// The cipher an Algorithm URI names, if we implement it.
    pub fn from_uri(uri: &str) -> Option<Self> {
        match uri {
            AES128_GCM => Some(Cipher::Aes128Gcm),
            AES128_CBC => Some(Cipher::Aes128Cbc),
            _ => None,
        }
    }

    /// Encrypts with a fresh IV: `IV || ciphertext` (CBC, §5.2) or `IV || ciphertext || tag`
    /// (GCM, xmlenc-core1 §5.2.4).
    pub fn seal(self, key: &[u8; KEY_LEN], plaintext: &[u8], rng: &mut dyn RngCore) -> Vec<u8> {
        match self {
            Cipher::Aes128Gcm => {
                let mut iv = [0u8; GCM_IV_LEN];
                rng.fill_bytes(&mut iv);
                let aead = Aes128Gcm::new(key.into());
                // Encryption fails only for inputs over 2^36 bytes.
                let ct = aead.encrypt(Nonce::from_slice(&iv), plaintext).unwrap_or_default();
                [iv.as_slice(), &ct].concat()
            }
            Cipher::Aes128Cbc => {
                let mut iv = [0u8; BLOCK];
                rng.fill_bytes(&mut iv);
                // §5.2: the padding's last octet is its length; PKCS#7 is one valid choice.
                let ct = cbc::Encryptor::<Aes128>::new(key.into(), &iv.into())
                    .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
                [iv.as_slice(), &ct].concat()
            }
        }
    }

    /// Decrypts `IV || ciphertext [|| tag]`.
    pub fn open(self, key: &[u8], data: &[u8]) -> Result<Vec<u8>, E2eError> {
        let key: &[u8; KEY_LEN] = key.try_into().map_err(|_| E2eError::Rejected {
            reason: "bad-key-length",
            detail: format!("a {}-byte content key for AES-128", key.len()),
        })?;
        match self {
            Cipher::Aes128Gcm => {
                if data.len() < GCM_IV_LEN + GCM_TAG_LEN {
                    return Err(E2eError::Malformed {
                        what: "CipherValue",
                        detail: format!("{} bytes is shorter than IV and tag", data.len()),
                    });
                }
                let (iv, ct) = data.split_at(GCM_IV_LEN);
                Aes128Gcm::new(key.into()).decrypt(Nonce::from_slice(iv), ct).map_err(|_| {
                    E2eError::Rejected { reason: "bad-mac", detail: "AES-GCM tag mismatch".into() }
                })
            }
            Cipher::Aes128Cbc => {
                if data.len() < 2 * BLOCK || !data.len().is_multiple_of(BLOCK) {
                    return Err(E2eError::Malformed {
                        what: "CipherValue",
                        detail: format!("{} bytes is not IV plus whole AES blocks", data.len()),
                    });
                }
                let (iv, ct) = data.split_at(BLOCK);
                let iv: &[u8; BLOCK] = iv.try_into().map_err(|_| E2eError::Missing { what: "IV" })?;
                let mut plain = cbc::Decryptor::<Aes128>::new(key.into(), iv.into())
                    .decrypt_padded_vec_mut::<NoPadding>(ct)
                    .map_err(|e| E2eError::Malformed { what: "CipherValue", detail: e.to_string() })?;
                // §5.2 (Padding): only the last octet is defined; the others are "arbitrary"
                // and, as the spec requires, not checked.
                let pad = usize::from(plain.last().copied().unwrap_or(0));
                if pad == 0 || pad > BLOCK || pad > plain.len() {
                    return Err(E2eError::Rejected {
                        reason: "bad-padding",
                        detail: format!("padding length octet {pad}"),
                    });
                }
                plain.truncate(plain.len() - pad);
                Ok(plain)
            }
        }
    }
}

/// One key to wrap the content key for.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    /// The account, as the `EncryptedKey Recipient` hint (§3.5.1).
    pub jid: &'a str,
    /// The device key.
    pub key: &'a PublicKey,
}

fn cipher_data(bytes: &[u8]) -> Element {
    el("CipherData", NS_XENC).child(text_el("CipherValue", NS_XENC, b64(bytes)))
}

/// Encrypts `plaintext` (a serialised element) for every recipient key.
pub fn seal(
    plaintext: &[u8],
    cipher: Cipher,
    recipients: &[Recipient<'_>],
    rng: &mut dyn RngCore,
) -> Result<Element, E2eError> {
    let mut key = [0u8; KEY_LEN];
    rng.fill_bytes(&mut key);
    let content = cipher.seal(&key, plaintext, rng);
    Ok(encrypted_data(cipher, &content, wrap_keys(&key, recipients, rng)?))
}

/// §3.5.1: one `<EncryptedKey/>` per recipient key, RSA-OAEP-MGF1P with SHA-1.
fn wrap_keys(
    key: &[u8],
    recipients: &[Recipient<'_>],
    rng: &mut dyn RngCore,
) -> Result<Vec<Element>, E2eError> {
    let mut out = Vec::new();
    for r in recipients {
        let wrapped =
            r.key.key.encrypt(&mut Rng06(&mut *rng), Oaep::new::<Sha1>(), key).map_err(|e| {
                E2eError::Policy { detail: format!("RSA-OAEP to {}: {e}", r.key.fingerprint) }
            })?;
        out.push(
            el("EncryptedKey", NS_XENC)
                .with("Recipient", r.jid)
                .child(
                    el("EncryptionMethod", NS_XENC)
                        .with("Algorithm", RSA_OAEP_MGF1P)
                        .child(el("DigestMethod", NS_DS).with("Algorithm", SHA1)),
                )
                .child(el("KeyInfo", NS_DS).child(text_el("KeyName", NS_DS, r.key.fingerprint.clone())))
                .child(cipher_data(&wrapped)),
        );
    }
    Ok(out)
}

/// The `<EncryptedData/>` element around encrypted content and its wrapped keys.
pub fn encrypted_data(cipher: Cipher, content: &[u8], keys: Vec<Element>) -> Element {
    let mut info = el("KeyInfo", NS_DS);
    for k in keys {
        info.append_child(k);
    }
    el("EncryptedData", NS_XENC)
        .with("Type", TYPE_ELEMENT)
        .child(el("EncryptionMethod", NS_XENC).with("Algorithm", cipher.uri()))
        .child(info)
        .child(cipher_data(content))
}

fn algorithm<'a>(parent: &'a Element, what: &'static str) -> Result<&'a str, E2eError> {
    parent
        .get_child("EncryptionMethod", NS_XENC)
        .ok_or(E2eError::Missing { what })?
        .attr("Algorithm")
        .ok_or(E2eError::Missing { what: "Algorithm" })
}

fn cipher_value(parent: &Element) -> Result<Vec<u8>, E2eError> {
    let data = parent.get_child("CipherData", NS_XENC).ok_or(E2eError::Missing { what: "CipherData" })?;
    if data.get_child("CipherReference", NS_XENC).is_some() {
        return Err(E2eError::Rejected {
            reason: "unsupported-algorithm",
            detail: "CipherReference (§3.3.1): content must be inline".into(),
        });
    }
    let value = data.get_child("CipherValue", NS_XENC).ok_or(E2eError::Missing { what: "CipherValue" })?;
    unb64("CipherValue", &value.text())
}

fn unsupported(what: &str, uri: &str) -> E2eError {
    E2eError::Rejected { reason: "unsupported-algorithm", detail: format!("{what} `{uri}`") }
}

/// §5.5.2: RSA-OAEP key transport, MGF1 with SHA-1, digest SHA-1 or SHA-256, no OAEPparams.
fn unwrap_key(ek: &Element, me: &KeyPair, rng: &mut dyn RngCore) -> Result<Vec<u8>, E2eError> {
    let method =
        ek.get_child("EncryptionMethod", NS_XENC).ok_or(E2eError::Missing { what: "EncryptionMethod" })?;
    let uri = method.attr("Algorithm").ok_or(E2eError::Missing { what: "Algorithm" })?;
    if uri != RSA_OAEP_MGF1P && uri != RSA_OAEP_11 {
        return Err(unsupported("key transport", uri));
    }
    if let Some(mgf) = method.get_child("MGF", NS_XENC11).and_then(|m| m.attr("Algorithm"))
        && mgf != MGF1_SHA1
    {
        return Err(unsupported("mask generation function", mgf));
    }
    if method.get_child("OAEPparams", NS_XENC).is_some_and(|p| !p.text().trim().is_empty()) {
        return Err(unsupported("OAEPparams", "non-empty"));
    }
    let digest = method.get_child("DigestMethod", NS_DS).and_then(|d| d.attr("Algorithm")).unwrap_or(SHA1);
    let padding = match digest {
        SHA1 => Oaep::new::<Sha1>(),
        SHA256 => Oaep::new_with_mgf_hash::<Sha256, Sha1>(),
        other => return Err(unsupported("OAEP digest", other)),
    };
    let wrapped = cipher_value(ek)?;
    me.private.decrypt_blinded(&mut Rng06(rng), padding, &wrapped).map_err(|_| E2eError::Rejected {
        reason: "key-transport-failed",
        detail: "RSA-OAEP decryption of the EncryptedKey failed".into(),
    })
}

/// The most `<EncryptedKey/>`s an `<EncryptedData/>` may carry: one per key of the recipient
/// account and one per key of the sender's own account, each at most [`MAX_KEYS`]. More is
/// `malformed`, before any RSA operation.
pub const MAX_ENCRYPTED_KEYS: usize = 2 * MAX_KEYS;

/// Which content ciphers a receiver accepts.
///
/// A device configured for GCM accepts only GCM: the `EncryptionMethod` URI is not
/// authenticated, so if it also accepted CBC, a recorded GCM message could be relabelled as CBC
/// under the same content key and the receiver's CBC errors would become an oracle on that key
/// (Jager, Paterson and Somorovsky, "One Bad Apple: Backwards Compatibility Attacks on
/// State-of-the-Art Cryptography", NDSS 2013). A CBC device accepts both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Only the given cipher and anything stronger: [`Cipher::Aes128Gcm`] accepts GCM only,
    /// [`Cipher::Aes128Cbc`] accepts both.
    Configured(Cipher),
    /// Every cipher we implement (an attacker's tool reading recorded traffic).
    Any,
}

impl Accept {
    /// Whether content under `cipher` is read.
    pub fn allows(self, cipher: Cipher) -> bool {
        match self {
            Accept::Any | Accept::Configured(Cipher::Aes128Cbc) => true,
            Accept::Configured(Cipher::Aes128Gcm) => cipher == Cipher::Aes128Gcm,
        }
    }
}

/// Decrypts an `<EncryptedData/>` with our key. `Ok(None)` when it carries no
/// `<EncryptedKey/>` for us: none names our fingerprint in its `<ds:KeyName/>`, and none of
/// the first [`MAX_KEYS`] without a KeyName opens with our key (trial decryption, as xmlsec1
/// does: one RSA private-key operation each, and anyone can encrypt to us, so it is bounded).
///
/// A content cipher `accept` does not allow is refused with `cipher-not-allowed` before any
/// key is unwrapped; more than [`MAX_ENCRYPTED_KEYS`] `<EncryptedKey/>`s is `malformed`.
pub fn open(
    encrypted: &Element,
    me: &KeyPair,
    accept: Accept,
    rng: &mut dyn RngCore,
) -> Result<Option<Vec<u8>>, E2eError> {
    match encrypted.attr("Type") {
        Some(TYPE_ELEMENT) => {}
        other => {
            return Err(E2eError::Rejected {
                reason: "unsupported-type",
                detail: format!("EncryptedData Type {other:?}, expected {TYPE_ELEMENT}"),
            });
        }
    }
    let uri = algorithm(encrypted, "EncryptionMethod")?;
    let cipher = Cipher::from_uri(uri).ok_or_else(|| unsupported("content cipher", uri))?;
    if !accept.allows(cipher) {
        return Err(E2eError::Rejected {
            reason: "cipher-not-allowed",
            detail: format!("content cipher `{uri}` on a device configured for {accept:?}"),
        });
    }
    let keys: Vec<&Element> = encrypted
        .get_child("KeyInfo", NS_DS)
        .map(|info| info.children().filter(|c| c.is("EncryptedKey", NS_XENC)).collect())
        .unwrap_or_default();
    if keys.len() > MAX_ENCRYPTED_KEYS {
        return Err(E2eError::Malformed {
            what: "EncryptedData",
            detail: format!("{} EncryptedKeys, at most {MAX_ENCRYPTED_KEYS}", keys.len()),
        });
    }
    let name_of = |ek: &Element| {
        ek.get_child("KeyInfo", NS_DS)
            .and_then(|i| i.get_child("KeyName", NS_DS))
            .map(|n| n.text().trim().to_owned())
    };
    let mine = &me.public.fingerprint;
    let key = if let Some(ek) = keys.iter().find(|ek| name_of(ek).as_ref() == Some(mine)) {
        unwrap_key(ek, me, rng)?
    } else {
        let mut found = None;
        for ek in keys.iter().filter(|ek| name_of(ek).is_none()).take(MAX_KEYS) {
            if let Ok(k) = unwrap_key(ek, me, rng) {
                found = Some(k);
                break;
            }
        }
        match found {
            Some(k) => k,
            None => return Ok(None),
        }
    };
    let content = cipher_value(encrypted)?;
    cipher.open(&key, &content).map(Some)
}
