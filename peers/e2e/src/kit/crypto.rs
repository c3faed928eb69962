//! The primitives several engines build on (RustCrypto underneath): SHA-1 and SHA-256 over a
//! list of parts, their HMACs (RFC 2104), AES-128 in counter mode, a constant-time comparison,
//! and random bytes from the caller's seeded RNG.

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::Mac;
use rand_core::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// SHA-1 of the concatenation of `parts`.
pub fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HMAC-SHA-256 of the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length: the error branch is never taken.
    let Ok(mut m) = hmac::Hmac::<Sha256>::new_from_slice(key) else { return [0; 32] };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// HMAC-SHA-1 of the concatenation of `parts`.
pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let Ok(mut m) = hmac::Hmac::<Sha1>::new_from_slice(key) else { return [0; 20] };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Constant-time comparison (for MACs): the time depends on the lengths only.
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// AES-128 in counter mode with a 16-byte initial counter block, big-endian increment (in
/// place: encryption and decryption are the same).
pub fn aes_ctr(key: &[u8; 16], counter: &[u8; 16], data: &mut [u8]) {
    ctr::Ctr128BE::<aes::Aes128>::new(key.into(), counter.into()).apply_keystream(data);
}

/// 32 bytes from the caller's (seeded) RNG.
pub fn random_bytes(rng: &mut dyn RngCore) -> [u8; 32] {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit::codec::hex;

    #[test]
    fn known_answers() {
        // FIPS 180-2 "abc"; RFC 4231 test case 2; RFC 2202 test case 2.
        assert_eq!(
            hex(&sha256(&[b"a", b"bc"])),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(&sha1(&[b"abc"])), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha1(b"Jefe", &[b"what do ya want for nothing?"])),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn equal_compares_contents_and_lengths() {
        assert!(equal(b"abc", b"abc"));
        assert!(!equal(b"abc", b"abd"));
        assert!(!equal(b"abc", b"ab"));
    }

    #[test]
    fn counter_mode_is_its_own_inverse() {
        let mut data = *b"sixteen byte msg and some more";
        aes_ctr(&[7; 16], &[0; 16], &mut data);
        assert_ne!(&data, b"sixteen byte msg and some more");
        aes_ctr(&[7; 16], &[0; 16], &mut data);
        assert_eq!(&data, b"sixteen byte msg and some more");
    }
}
