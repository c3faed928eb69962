//! OMEMO (XEP-0384 version 0.8+, namespace `urn:xmpp:omemo:2`): the cryptographic core.
//!
//! - [`x3dh`]: the modified X3DH key agreement of XEP-0384 §protocol-key_exchange;
//! - [`ratchet`]: the Double Ratchet with the parameters of §protocol-double_ratchet;
//! - [`session`]: a peer device's current session and the previous states kept beside it
//!   (libsignal's `SessionRecord`), so a simultaneous session start recovers;
//! - [`payload`]: the content encryption of §protocol-message_encryption / §…decryption;
//! - [`wire`]: the protobuf structures of §protobuf-schema (and libsignal's, for 0.3);
//! - [`legacy`]: the OMEMO 0.3 (`eu.siacs.conversations.axolotl`) XML and payload formats;
//! - [`gcm`]: AES-128-GCM as a holder of the key sees it: 0.3's payload tag against a recipient;
//! - [`quirks`]: faults real clients shipped, reproduced on request (a device's `quirks:`).
//!
//! Everything is sans-I/O and deterministic: key material comes from the caller's RNG
//! ([`random_bytes`]), never from the OS.

pub mod engine;
pub mod gcm;
pub mod legacy;
pub mod payload;
pub mod quirks;
pub mod ratchet;
mod session;
mod seam;
pub mod wire;
pub mod x3dh;

pub use crate::kit::crypto::random_bytes;
use jid::FullJid;
use rand_core::RngCore;

use crate::{Engine, EngineConfig};
use crate::kit::crypto::hmac_sha256;

/// The registry entry of OMEMO 2 (`urn:xmpp:omemo:2`).
pub static OMEMO: crate::ProtocolDef =
    crate::ProtocolDef::new("omemo", module_path!(), build, &seam::OMEMO2, include_str!("reasons.txt"))
        .with_device_id(DEVICE_ID)
        .with_quirks(quirks::OMEMO2);

/// What an OMEMO device id is (both versions).
const DEVICE_ID: &str = "the OMEMO device id (XEP-0384 §devices: a number in 1..2^31-1)";

/// Builds an OMEMO 2 engine for a device.
fn build(me: &FullJid, rng: &mut dyn RngCore, config: &EngineConfig) -> Box<dyn Engine> {
    let quirks = quirks::Quirks::from_names(&config.quirks);
    Box::new(engine::Omemo::new(me.clone(), rng, config.trust).with_quirks(quirks, rng))
}

/// The registry entry of OMEMO 0.3 (`eu.siacs.conversations.axolotl`).
pub static OMEMO_LEGACY: crate::ProtocolDef =
    crate::ProtocolDef::new("omemo-legacy", module_path!(), build_legacy, &seam::LEGACY, include_str!("reasons-legacy.txt"))
        .with_device_id(DEVICE_ID)
        .with_quirks(quirks::LEGACY);

/// Builds an OMEMO 0.3 engine for a device.
fn build_legacy(me: &FullJid, rng: &mut dyn RngCore, config: &EngineConfig) -> Box<dyn Engine> {
    let quirks = quirks::Quirks::from_names(&config.quirks);
    Box::new(engine::Omemo::legacy(me.clone(), rng, config.trust).with_quirks(quirks, rng))
}

/// HKDF-SHA-256 with a 256-bit zero salt, as XEP-0384 uses it for message keys and payloads.
fn hkdf_zero_salt<const N: usize>(ikm: &[u8], info: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    // N is at most 80 here, far below HKDF-SHA-256's 8160-byte limit, so expand cannot fail.
    let _ = hkdf::Hkdf::<sha2::Sha256>::new(Some(&[0u8; 32]), ikm).expand(info, &mut out);
    out
}

/// The 80-byte HKDF expansion both OMEMO encryption layers use, split into an AES-256 key,
/// an HMAC key and an IV (§protocol-double_ratchet ENCRYPT step 2, §protocol-message_encryption
/// step 3).
fn aead_keys(ikm: &[u8], info: &[u8]) -> ([u8; 32], [u8; 32], [u8; 16]) {
    let okm: [u8; 80] = hkdf_zero_salt(ikm, info);
    let (mut enc, mut auth, mut iv) = ([0u8; 32], [0u8; 32], [0u8; 16]);
    enc.copy_from_slice(&okm[..32]);
    auth.copy_from_slice(&okm[32..64]);
    iv.copy_from_slice(&okm[64..]);
    (enc, auth, iv)
}

/// HMAC-SHA-256 truncated to 16 bytes (XEP-0384: "authentication tag truncation").
fn hmac16(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&hmac_sha256(key, parts)[..16]);
    out
}

#[cfg(test)]
mod tests;
