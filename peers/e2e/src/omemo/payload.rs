//! XEP-0384 §protocol-message_encryption and §protocol-message_decryption: the payload is
//! encrypted once under a fresh 32-byte key; `key || HMAC` (48 bytes) is what the Double
//! Ratchet then encrypts for each recipient device.

use rand_core::RngCore;

use super::ratchet::{aes_cbc_decrypt, aes_cbc_encrypt};
use super::{aead_keys, hmac16, random_bytes};
use crate::kit::crypto::equal;
use crate::E2eError;

const PAYLOAD_INFO: &[u8] = b"OMEMO Payload";

/// The length of `key || HMAC`.
pub const KEY_AND_MAC: usize = 48;

fn keys(key: &[u8]) -> ([u8; 32], [u8; 32], [u8; 16]) {
    aead_keys(key, PAYLOAD_INFO)
}

/// Encrypts `plaintext` (steps 1–5): returns `key || HMAC` and the ciphertext.
pub fn seal(plaintext: &[u8], rng: &mut dyn RngCore) -> ([u8; KEY_AND_MAC], Vec<u8>) {
    seal_with_key(&random_bytes(rng), plaintext)
}

/// Encrypts `plaintext` under a given `key` (steps 2–5): returns `key || HMAC` and the
/// ciphertext. Whoever holds the key can do it — a recipient too: what stops a recipient from
/// passing another payload to the others under the same key is that the HMAC each of them
/// holds came through its own ratchet session (step 6).
pub fn seal_with_key(key: &[u8; 32], plaintext: &[u8]) -> ([u8; KEY_AND_MAC], Vec<u8>) {
    let (enc, auth, iv) = keys(key);
    let ciphertext = aes_cbc_encrypt(&enc, &iv, plaintext);
    let mac = hmac16(&auth, &[&ciphertext]);
    let mut key_and_mac = [0u8; KEY_AND_MAC];
    key_and_mac[..32].copy_from_slice(key);
    key_and_mac[32..].copy_from_slice(&mac);
    (key_and_mac, ciphertext)
}

/// Decrypts a payload (steps 2–5) with the `key || HMAC` a ratchet message carried.
pub fn open(key_and_mac: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, E2eError> {
    if key_and_mac.len() != KEY_AND_MAC {
        return Err(E2eError::Malformed {
            what: "payload key",
            detail: format!("{} bytes, expected {KEY_AND_MAC}", key_and_mac.len()),
        });
    }
    let (key, mac) = key_and_mac.split_at(32);
    let (enc, auth, iv) = keys(key);
    if !equal(&hmac16(&auth, &[ciphertext]), mac) {
        return Err(E2eError::Rejected { reason: "bad-mac", detail: "payload HMAC".into() });
    }
    aes_cbc_decrypt(&enc, &iv, ciphertext)
}
