//! OMEMO 0.3 (`eu.siacs.conversations.axolotl`): the wire formats that differ from OMEMO 2.
//!
//! The XML is that of XEP-0384 0.2–0.3 as deployed (Conversations, python oldmemo): the
//! device list node `eu.siacs.conversations.axolotl.devicelist` with `<list><device id/></list>`
//! (0.2 changelog: "Changed to eu.siacs.conversations.axolotl Namespace which is currently used
//! in the wild"), one bundle node per device `eu.siacs.conversations.axolotl.bundles:<id>`
//! (`signedPreKeyPublic`, `signedPreKeySignature`, `identityKey`, `prekeys/preKeyPublic`), and
//! `<encrypted><header sid><key rid prekey?/>…<iv/></header><payload/></encrypted>`.
//!
//! Keys travel as libsignal serialises them: `0x05 || Curve25519 key`; the IdentityKey in its
//! Curve25519 form, the signed PreKey signature with the Ed25519 sign bit in the top bit of its
//! last byte ([`super::x3dh::verify_curve_signature`]). The payload is AES-128-GCM under a fresh
//! 16-byte key and a 12-byte IV; `key || tag` (32 bytes) is what the ratchet carries. See the
//! module [`super::ratchet`] (`Profile::Legacy`) for why the deployed libsignal format is
//! followed where the 0.3.0 text's protocol section says otherwise.

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, AesGcm, Nonce, Tag};
use minidom::Element;
use prost::Message;
use rand_core::RngCore;

use super::wire::{LegacyKeyExchange, decode};
use super::x3dh::{Bundle, KeyExchangeHeader, djb_encode};
use crate::E2eError;
use crate::kit::codec::{b64, unb64};
use crate::xml::{ElementExt, el, text_el};

/// The OMEMO 0.3 namespace.
pub const NS: &str = "eu.siacs.conversations.axolotl";
/// The device list node.
pub const NODE_DEVICES: &str = "eu.siacs.conversations.axolotl.devicelist";
/// The prefix of every per-device bundle node.
pub const NODE_BUNDLE_PREFIX: &str = "eu.siacs.conversations.axolotl.bundles:";
/// libsignal's message version byte, also in front of a `PreKeyWhisperMessage`.
const VERSION: u8 = 0x33;
/// The AES-128 key length.
const KEY_LEN: usize = 16;
/// The GCM tag length (not truncated).
const TAG_LEN: usize = 16;
/// `key || tag`, what the ratchet encrypts.
pub const KEY_AND_TAG: usize = KEY_LEN + TAG_LEN;
/// The IV length we send (what oldmemo and current Conversations send).
pub const IV_LEN: usize = 12;

/// The bundle node of one device.
pub fn bundle_node(device: u32) -> String {
    format!("{NODE_BUNDLE_PREFIX}{device}")
}

/// A `0x05 || key` from untrusted bytes.
fn undjb(what: &'static str, bytes: &[u8]) -> Result<[u8; 32], E2eError> {
    match bytes.split_first() {
        Some((&0x05, key)) if key.len() == 32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(key);
            Ok(k)
        }
        _ => Err(E2eError::Malformed {
            what,
            detail: format!("{} bytes, expected 0x05 and a 32-byte key", bytes.len()),
        }),
    }
}

fn prekey_id(what: &'static str, s: Option<&str>) -> Result<u32, E2eError> {
    let s = s.ok_or(E2eError::Missing { what })?;
    s.parse().map_err(|_| E2eError::Malformed { what, detail: format!("`{s}` is not an unsigned id") })
}

/// A bundle as published (the Bundle's `ik` is the Curve25519 form, `spks` in wire convention).
pub fn bundle_element(b: &Bundle) -> Element {
    let mut prekeys = el("prekeys", NS);
    for (id, pk) in &b.prekeys {
        prekeys
            .append_child(text_el("preKeyPublic", NS, b64(&djb_encode(pk))).with("preKeyId", id.to_string()));
    }
    el("bundle", NS)
        .child(
            text_el("signedPreKeyPublic", NS, b64(&djb_encode(&b.spk)))
                .with("signedPreKeyId", b.spk_id.to_string()),
        )
        .child(text_el("signedPreKeySignature", NS, b64(&b.spks)))
        .child(text_el("identityKey", NS, b64(&djb_encode(&b.ik))))
        .child(prekeys)
}

/// Parses a `<bundle/>` element.
pub fn parse_bundle(bundle: &Element) -> Result<Bundle, E2eError> {
    let child = |name: &'static str| bundle.get_child(name, NS).ok_or(E2eError::Missing { what: name });
    let spk_el = child("signedPreKeyPublic")?;
    let spks: [u8; 64] =
        unb64("signedPreKeySignature", &child("signedPreKeySignature")?.text())?.try_into().map_err(
            |_| E2eError::Malformed { what: "signedPreKeySignature", detail: "expected 64 bytes".into() },
        )?;
    let mut prekeys = Vec::new();
    for pk in child("prekeys")?.children().filter(|c| c.is("preKeyPublic", NS)) {
        let id = prekey_id("preKeyId", pk.attr("preKeyId"))?;
        prekeys.push((id, undjb("preKeyPublic", &unb64("preKeyPublic", &pk.text())?)?));
    }
    let ik = undjb("identityKey", &unb64("identityKey", &child("identityKey")?.text())?)?;
    let spk_id = prekey_id("signedPreKeyId", spk_el.attr("signedPreKeyId"))?;
    let spk = undjb("signedPreKeyPublic", &unb64("signedPreKeyPublic", &spk_el.text())?)?;
    Ok(Bundle { ik, spk_id, spk, spks, prekeys })
}

/// `0x33 || PreKeyWhisperMessage` around a whole `WhisperMessage`.
pub fn encode_key_exchange(header: &KeyExchangeHeader, message: Vec<u8>) -> Vec<u8> {
    let mut out = vec![VERSION];
    LegacyKeyExchange {
        pk_id: header.pk_id,
        ek: djb_encode(&header.ek).to_vec(),
        ik: djb_encode(&header.ik).to_vec(),
        message,
        registration_id: None,
        spk_id: header.spk_id,
    }
    .encode(&mut out)
    .unwrap_or_default(); // a Vec grows as needed: encoding cannot run out of space
    out
}

/// Takes a `PreKeyWhisperMessage` apart: the X3DH header (keys in Curve25519 form) and the
/// `WhisperMessage` inside.
pub fn decode_key_exchange(bytes: &[u8]) -> Result<(KeyExchangeHeader, Vec<u8>), E2eError> {
    let body = match bytes.split_first() {
        Some((&VERSION, body)) => body,
        _ => {
            return Err(E2eError::Malformed {
                what: "PreKeyWhisperMessage",
                detail: "version byte is not 0x33".into(),
            });
        }
    };
    let m: LegacyKeyExchange = decode("PreKeyWhisperMessage", body)?;
    let header = KeyExchangeHeader {
        pk_id: m.pk_id,
        spk_id: m.spk_id,
        ik: undjb("ik", &m.ik)?,
        ek: undjb("ek", &m.ek)?,
    };
    Ok((header, m.message))
}

/// Encrypts a payload: returns `key || tag`, the IV and the ciphertext.
pub fn seal(plaintext: &[u8], rng: &mut dyn RngCore) -> ([u8; KEY_AND_TAG], [u8; IV_LEN], Vec<u8>) {
    let mut key = [0u8; KEY_LEN];
    let mut iv = [0u8; IV_LEN];
    rng.fill_bytes(&mut key);
    rng.fill_bytes(&mut iv);
    let mut buffer = plaintext.to_vec();
    let mut key_and_tag = [0u8; KEY_AND_TAG];
    key_and_tag[..KEY_LEN].copy_from_slice(&key);
    // GCM fails only for plaintexts beyond 64 GiB; a stanza is far below.
    if let Ok(tag) =
        Aes128Gcm::new(&key.into()).encrypt_in_place_detached(Nonce::from_slice(&iv), b"", &mut buffer)
    {
        key_and_tag[KEY_LEN..].copy_from_slice(&tag);
    }
    (key_and_tag, iv, buffer)
}

/// Encrypts a payload under a given key and IV (12 or 16 bytes) in the older form, the tag
/// appended to the ciphertext (what [`open`] reads with a bare 16-byte key): what anyone holding
/// the key can write when the tag travels with the payload. `None` for another IV length.
pub fn seal_tag_appended(key: &[u8; KEY_LEN], iv: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
    let mut buffer = plaintext.to_vec();
    let tag = match iv.len() {
        IV_LEN => Aes128Gcm::new(key.into()).encrypt_in_place_detached(Nonce::from_slice(iv), b"", &mut buffer),
        16 => AesGcm::<aes::Aes128, U16>::new(key.into()).encrypt_in_place_detached(iv.into(), b"", &mut buffer),
        _ => return None,
    }
    .ok()?;
    buffer.extend_from_slice(&tag);
    Some(buffer)
}

/// How a sender lays the payload out (the forms clients have sent: [`super::quirks`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Form {
    /// A 16-byte IV (quirk `iv-16`) instead of [`IV_LEN`].
    pub iv_16: bool,
    /// The tag appended to the payload and the bare key ratcheted (quirk `tag-in-payload`)
    /// instead of `key || tag`.
    pub tag_in_payload: bool,
}

impl Form {
    fn iv_len(self) -> usize {
        if self.iv_16 { 16 } else { IV_LEN }
    }
}

/// Encrypts a payload in the given form: returns the key material the ratchet carries, the IV
/// and the payload. The default form is [`seal`]'s, drawing the same bytes from `rng`.
pub fn seal_as(form: Form, plaintext: &[u8], rng: &mut dyn RngCore) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    if form == Form::default() {
        let (k, iv, c) = seal(plaintext, rng);
        return (k.to_vec(), iv.to_vec(), c);
    }
    let mut key = [0u8; KEY_LEN];
    let mut iv = vec![0u8; form.iv_len()];
    rng.fill_bytes(&mut key);
    rng.fill_bytes(&mut iv);
    // A 12- or 16-byte IV: seal_tag_appended takes both.
    let tagged = seal_tag_appended(&key, &iv, plaintext).unwrap_or_default();
    if form.tag_in_payload {
        return (key.to_vec(), iv, tagged);
    }
    let (ciphertext, tag) = tagged.split_at(tagged.len().saturating_sub(TAG_LEN));
    ([key.as_slice(), tag].concat(), iv, ciphertext.to_vec())
}

/// The key and IV of an empty message in the given form ([`empty_key`]'s with the default one).
pub fn empty_key_as(form: Form, rng: &mut dyn RngCore) -> ([u8; KEY_LEN], Vec<u8>) {
    let mut key = [0u8; KEY_LEN];
    let mut iv = vec![0u8; form.iv_len()];
    rng.fill_bytes(&mut key);
    rng.fill_bytes(&mut iv);
    (key, iv)
}

/// The key for an empty (key transport) message: 16 fresh bytes, no tag, as oldmemo sends it.
pub fn empty_key(rng: &mut dyn RngCore) -> ([u8; KEY_LEN], [u8; IV_LEN]) {
    let mut key = [0u8; KEY_LEN];
    let mut iv = [0u8; IV_LEN];
    rng.fill_bytes(&mut key);
    rng.fill_bytes(&mut iv);
    (key, iv)
}

/// Decrypts a payload with the key material a ratchet message carried. `key || tag` is the
/// current form; a bare 16-byte key means the tag is appended to the payload, as older
/// Conversations versions sent it. The IV may be 12 or 16 bytes (both are deployed).
pub fn open(key_material: &[u8], iv: &[u8], payload: &[u8]) -> Result<Vec<u8>, E2eError> {
    let (key, tag, ciphertext) = match key_material.len() {
        KEY_AND_TAG => (&key_material[..KEY_LEN], &key_material[KEY_LEN..], payload),
        KEY_LEN if payload.len() >= TAG_LEN => {
            let (c, t) = payload.split_at(payload.len() - TAG_LEN);
            (key_material, t, c)
        }
        n => {
            return Err(E2eError::Malformed {
                what: "payload key",
                detail: format!(
                    "{n} bytes, expected {KEY_AND_TAG} (or {KEY_LEN} with the tag in the payload)"
                ),
            });
        }
    };
    let bad = || E2eError::Rejected { reason: "bad-mac", detail: "AES-GCM tag of the payload".into() };
    let mut buffer = ciphertext.to_vec();
    let tag = Tag::from_slice(tag);
    match iv.len() {
        12 => Aes128Gcm::new_from_slice(key)
            .map_err(|_| bad())?
            .decrypt_in_place_detached(Nonce::from_slice(iv), b"", &mut buffer, tag)
            .map_err(|_| bad())?,
        16 => AesGcm::<aes::Aes128, U16>::new_from_slice(key)
            .map_err(|_| bad())?
            .decrypt_in_place_detached(iv.into(), b"", &mut buffer, tag)
            .map_err(|_| bad())?,
        n => {
            return Err(E2eError::Malformed { what: "iv", detail: format!("{n} bytes, expected 12 or 16") });
        }
    }
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    #[test]
    fn payload_round_trip_and_tamper() {
        let rng = &mut ChaCha20Rng::seed_from_u64(3);
        let (key_and_tag, iv, ciphertext) = seal("hello".as_bytes(), rng);
        assert_eq!(open(&key_and_tag, &iv, &ciphertext).unwrap(), b"hello");
        let mut bad = ciphertext.clone();
        bad[0] ^= 1;
        assert_eq!(open(&key_and_tag, &iv, &bad).unwrap_err().code(), "bad-mac");
        assert_eq!(open(&key_and_tag[..20], &iv, &ciphertext).unwrap_err().code(), "malformed");
        assert_eq!(open(&key_and_tag, &iv[..8], &ciphertext).unwrap_err().code(), "malformed");
    }

    /// The older deployed forms: a 16-byte IV, and a bare key with the tag after the payload.
    #[test]
    fn older_conversations_forms_decrypt() {
        let key = [7u8; KEY_LEN];
        let iv = [9u8; 16];
        let mut buffer = b"from an old client".to_vec();
        let tag = AesGcm::<aes::Aes128, U16>::new(&key.into())
            .encrypt_in_place_detached((&iv).into(), b"", &mut buffer)
            .unwrap();
        let key_and_tag = [key.as_slice(), tag.as_slice()].concat();
        assert_eq!(open(&key_and_tag, &iv, &buffer).unwrap(), b"from an old client");
        let tag_in_payload = [buffer.as_slice(), tag.as_slice()].concat();
        assert_eq!(open(&key, &iv, &tag_in_payload).unwrap(), b"from an old client");
        // In that form whoever holds the key writes a payload the bare key opens.
        assert_eq!(seal_tag_appended(&key, &iv, b"from anyone").map(|p| open(&key, &iv, &p).unwrap()), Some(b"from anyone".to_vec()));
        assert_eq!(seal_tag_appended(&key, &iv[..12], b"x").map(|p| open(&key, &iv[..12], &p).unwrap()), Some(b"x".to_vec()));
        assert_eq!(seal_tag_appended(&key, &iv[..8], b"x"), None);
        assert_eq!(open(&key, &iv, &tag_in_payload[..20]).unwrap_err().code(), "bad-mac");
    }

    #[test]
    fn key_exchange_round_trip_and_bad_input() {
        let header = KeyExchangeHeader { pk_id: 4, spk_id: 0, ik: [1; 32], ek: [2; 32] };
        let bytes = encode_key_exchange(&header, vec![0x33, 1, 2]);
        let (back, message) = decode_key_exchange(&bytes).unwrap();
        assert_eq!(back, header);
        assert_eq!(message, [0x33, 1, 2]);
        assert_eq!(decode_key_exchange(&bytes[1..]).unwrap_err().code(), "malformed");
        assert_eq!(decode_key_exchange(&bytes[..bytes.len() - 3]).unwrap_err().code(), "malformed");
        assert_eq!(decode_key_exchange(&[]).unwrap_err().code(), "malformed");
    }
}
