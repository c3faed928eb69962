//! AES-128-GCM as a holder of the key sees it (NIST SP 800-38D): what OMEMO 0.3's payload tag
//! is worth against a recipient, who learns the payload key.
//!
//! OMEMO 0.3 (XEP-0384 0.3.0, §"Sending a message") encrypts the body once under a fresh
//! AES-128-GCM key and ratchets "the 16 bytes key and the GCM authentication tag" to every
//! recipient device: the tag sits in each device's `<key/>`, where no other recipient can
//! change it. That answered the 2016 audit (Radically Open Security, "OMEMO: Cryptographic
//! Analysis Report", §2.2.3 "Malicious device": "A malicious device has access to that key and
//! can thus re-encrypt and re-authenticate any payload with that key"), when the tag still
//! travelled with the payload. But a GCM tag binds a ciphertext only for those who do not hold
//! the key: GHASH (SP 800-38D §6.4) is linear in the ciphertext over GF(2^128), and its hash key
//! H = E_K(0^128) (§7.1 step 1) is known to anyone with K. So a recipient can write a
//! ciphertext of its choosing that meets the tag every other recipient holds: all but 128 of
//! its bits freely, those 128 solved for. [`meet_tag`] does that, keeping the free bits in a
//! printable tail. (OMEMO 2's HMAC-SHA-256 of the ciphertext, 16 bytes in the `<key/>`, would
//! need a second preimage instead: a key holder is no better placed than anyone else.)

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit};

/// The GF(2^128) product of SP 800-38D §6.3 (Algorithm 1), on blocks read big-endian (the
/// leftmost bit of a block is the most significant bit of the `u128`).
fn gf_mul(x: u128, y: u128) -> u128 {
    // R = 11100001 || 0^120.
    const R: u128 = 0xE1 << 120;
    let mut z = 0u128;
    let mut v = y;
    for i in 0..128 {
        if (x >> (127 - i)) & 1 == 1 {
            z ^= v;
        }
        v = if v & 1 == 0 { v >> 1 } else { (v >> 1) ^ R };
    }
    z
}

/// GHASH_H over `blocks` (SP 800-38D §6.4): Y_i = (Y_{i-1} ⊕ X_i) · H.
fn ghash(h: u128, blocks: impl IntoIterator<Item = u128>) -> u128 {
    blocks.into_iter().fold(0, |y, x| gf_mul(y ^ x, h))
}

/// `bytes` as 16-byte blocks, the last one padded with zeros (SP 800-38D §7.1 step 5: 0^u).
fn blocks(bytes: &[u8]) -> impl Iterator<Item = u128> + '_ {
    bytes.chunks(16).map(|c| {
        let mut b = [0u8; 16];
        b[..c.len()].copy_from_slice(c);
        u128::from_be_bytes(b)
    })
}

/// The block [len(A)]_64 || [len(C)]_64 closing GHASH's input (§7.1 step 5), A empty here.
fn length_block(ciphertext_len: usize) -> u128 {
    (ciphertext_len as u128) * 8
}

/// AES-128-GCM's pieces under a known key and IV.
struct Gcm {
    cipher: Aes128,
    /// The hash subkey H = E_K(0^128) (§7.1 step 1).
    h: u128,
    /// The pre-counter block J0 (§7.1 step 2).
    j0: u128,
}

impl Gcm {
    fn new(key: &[u8; 16], iv: &[u8]) -> Gcm {
        let cipher = Aes128::new(key.into());
        let mut gcm = Gcm { cipher, h: 0, j0: 0 };
        gcm.h = gcm.encrypt_block(0);
        // §7.1 step 2: IV || 0^31 || 1 for a 96-bit IV, else GHASH_H(IV || 0^(s+64) || [len(IV)]_64).
        gcm.j0 = if iv.len() == 12 {
            let mut b = [0u8; 16];
            b[..12].copy_from_slice(iv);
            b[15] = 1;
            u128::from_be_bytes(b)
        } else {
            ghash(gcm.h, blocks(iv).chain([(iv.len() as u128) * 8]))
        };
        gcm
    }

    fn encrypt_block(&self, block: u128) -> u128 {
        let mut b = block.to_be_bytes().into();
        self.cipher.encrypt_block(&mut b);
        u128::from_be_bytes(b.into())
    }

    /// The GCTR keystream for `len` bytes, counting from inc32(J0) (§6.5, §7.1 step 3).
    fn keystream(&self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 16);
        let mut counter = self.j0;
        while out.len() < len {
            // inc32: the rightmost 32 bits count, modulo 2^32 (§6.2).
            let low = (counter as u32).wrapping_add(1);
            counter = (counter & !0xFFFF_FFFF) | u128::from(low);
            out.extend_from_slice(&self.encrypt_block(counter).to_be_bytes());
        }
        out.truncate(len);
        out
    }

    /// The tag of `ciphertext` (no additional data), untruncated (§7.1 steps 5–6).
    fn tag(&self, ciphertext: &[u8]) -> u128 {
        let s = ghash(self.h, blocks(ciphertext).chain([length_block(ciphertext.len())]));
        self.encrypt_block(self.j0) ^ s
    }
}

/// The bits of the tail that are free: the low four of each tail byte, which keep it within
/// `@ABCDEFGHIJKLMNO` (0x40–0x4F: printable, and an affine space, so the solution stays in it).
const FREE_BITS: u8 = 4;
/// How many tail bytes: 40 × 4 = 160 unknowns for 128 equations, so a solution exists unless
/// the 160 columns happen to span less than GF(2)^128 (about one chance in 2^32).
const TAIL: usize = 40;

/// With the key and IV of an AES-128-GCM payload and the 16-byte tag its recipients hold, a
/// ciphertext they accept under that tag, decrypting to `text`, a space and a 40-character tail
/// of `@A-O` solved for (the GHASH equations of the module docs). Returns the plaintext and the
/// ciphertext; `None` when the tail's bits do not span every tag (about one key in 2^32) or the
/// IV is empty.
pub fn meet_tag(key: &[u8; 16], iv: &[u8], tag: &[u8; 16], text: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    if iv.is_empty() {
        return None;
    }
    let gcm = Gcm::new(key, iv);
    let mut plaintext = text.as_bytes().to_vec();
    plaintext.push(b' ');
    let tail_start = plaintext.len();
    plaintext.extend(core::iter::repeat_n(0x40u8, TAIL));
    let keystream = gcm.keystream(plaintext.len());
    let xor = |p: &[u8]| -> Vec<u8> { p.iter().zip(&keystream).map(|(a, b)| a ^ b).collect() };
    // The tag is E_K(J0) ⊕ GHASH(C); a plaintext bit flips the same ciphertext bit, whose share of
    // GHASH is that bit's block times H^(blocks after it, the length block included, plus one).
    let want = u128::from_be_bytes(*tag) ^ gcm.tag(&xor(&plaintext));
    let total_blocks = plaintext.len().div_ceil(16) + 1;
    let mut powers = vec![gcm.h; total_blocks + 1];
    for i in 1..powers.len() {
        powers[i] = gf_mul(powers[i - 1], gcm.h);
    }
    let columns: Vec<(usize, u8, u128)> = (tail_start..plaintext.len())
        .flat_map(|pos| (0..FREE_BITS).map(move |bit| (pos, bit)))
        .map(|(pos, bit)| {
            let (block, byte) = (pos / 16, pos % 16);
            let delta = 1u128 << (120 - 8 * byte + usize::from(bit));
            // Block `block` (0-based) of `total_blocks` is multiplied by H^(total_blocks - block).
            (pos, bit, gf_mul(delta, powers[total_blocks - block - 1]))
        })
        .collect();
    let chosen = solve(&columns.iter().map(|c| c.2).collect::<Vec<_>>(), want)?;
    for (j, (pos, bit, _)) in columns.iter().enumerate() {
        if chosen.get(j).copied().unwrap_or(false) {
            plaintext[*pos] ^= 1 << bit;
        }
    }
    let ciphertext = xor(&plaintext);
    (gcm.tag(&ciphertext).to_be_bytes() == *tag).then_some((plaintext, ciphertext))
}

/// Which of `columns` (vectors of GF(2)^128) add up to `target`: Gaussian elimination, each
/// basis vector kept with the columns it is made of. `None` when `target` is out of their span.
fn solve(columns: &[u128], target: u128) -> Option<Vec<bool>> {
    // basis[p]: a vector whose highest set bit is p, and the columns it sums.
    let mut basis: Vec<Option<(u128, Vec<bool>)>> = vec![None; 128];
    for (j, &column) in columns.iter().enumerate() {
        let mut v = column;
        let mut made = vec![false; columns.len()];
        made[j] = true;
        while v != 0 {
            let p = 127 - v.leading_zeros() as usize;
            match &basis[p] {
                Some((b, m)) => {
                    v ^= b;
                    for (x, y) in made.iter_mut().zip(m) {
                        *x ^= y;
                    }
                }
                None => {
                    basis[p] = Some((v, made));
                    break;
                }
            }
        }
    }
    let mut left = target;
    let mut chosen = vec![false; columns.len()];
    while left != 0 {
        let p = 127 - left.leading_zeros() as usize;
        let (b, m) = basis[p].as_ref()?;
        left ^= b;
        for (x, y) in chosen.iter_mut().zip(m) {
            *x ^= y;
        }
    }
    Some(chosen)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use aes_gcm::aead::AeadInPlace;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};

    use super::*;
    use crate::omemo::legacy;

    /// Our GHASH and GCTR agree with the aes-gcm crate: the tag it makes is the tag we compute,
    /// for a 96-bit IV and for a 128-bit one (the older Conversations IV), over several lengths.
    #[test]
    fn our_gcm_pieces_agree_with_aes_gcm() {
        let r = &mut ChaCha20Rng::seed_from_u64(9);
        for len in [0usize, 1, 15, 16, 17, 100] {
            let mut plaintext = vec![0u8; len];
            r.fill_bytes(&mut plaintext);
            let (key_and_tag, iv, ciphertext) = legacy::seal(&plaintext, r);
            let key: [u8; 16] = key_and_tag[..16].try_into().unwrap();
            let gcm = Gcm::new(&key, &iv);
            assert_eq!(gcm.tag(&ciphertext).to_be_bytes(), key_and_tag[16..], "len {len}");
            let ks = gcm.keystream(len);
            let back: Vec<u8> = ciphertext.iter().zip(&ks).map(|(c, k)| c ^ k).collect();
            assert_eq!(back, plaintext);
            let iv16 = [7u8; 16];
            let mut buffer = plaintext.clone();
            let tag = aes_gcm::AesGcm::<Aes128, aes_gcm::aead::consts::U16>::new(&key.into())
                .encrypt_in_place_detached((&iv16).into(), b"", &mut buffer)
                .unwrap();
            assert_eq!(Gcm::new(&key, &iv16).tag(&buffer).to_be_bytes(), tag[..], "len {len}, 16-byte IV");
        }
    }

    /// The multiplication is the field's: commutative, H·1 = H (1 is the leftmost bit), and the
    /// SP 800-38D test case 2 hash key gives its GHASH.
    #[test]
    fn gf_mul_is_the_fields() {
        let one = 1u128 << 127;
        let h = 0x66e94bd4ef8a2c3b884cfa59ca342b2e_u128;
        assert_eq!(gf_mul(h, one), h);
        assert_eq!(gf_mul(h, 0x0388dace60b6a392f328c2b971b2fe78), gf_mul(0x0388dace60b6a392f328c2b971b2fe78, h));
        // GCM spec (McGrew & Viega) test case 2: K = 0^128, P = 0^128, IV = 0^96:
        // C = 0388dace60b6a392f328c2b971b2fe78, GHASH(H, {}, C) = f38cbb1ad69223dcc3457ae5b6b0f885.
        let s = ghash(h, [0x0388dace60b6a392f328c2b971b2fe78, 128]);
        assert_eq!(s, 0xf38cbb1ad69223dcc3457ae5b6b0f885);
    }

    /// A key holder meets a tag it did not make: the original `key || tag` opens the new
    /// ciphertext, to the chosen text and a printable tail.
    #[test]
    fn a_key_holder_meets_the_recipients_tag() {
        let r = &mut ChaCha20Rng::seed_from_u64(10);
        for (i, text) in ["meet me at the back door", "", "a much longer text, well past a block or two of AES"]
            .into_iter()
            .enumerate()
        {
            let (key_and_tag, iv, _) = legacy::seal(format!("original {i}").as_bytes(), r);
            let key: [u8; 16] = key_and_tag[..16].try_into().unwrap();
            let tag: [u8; 16] = key_and_tag[16..].try_into().unwrap();
            let (plaintext, ciphertext) = meet_tag(&key, &iv, &tag, text).unwrap();
            assert_eq!(legacy::open(&key_and_tag, &iv, &ciphertext).unwrap(), plaintext);
            let shown = String::from_utf8(plaintext).unwrap();
            let tail = shown.strip_prefix(text).and_then(|t| t.strip_prefix(' ')).unwrap();
            assert_eq!(tail.len(), TAIL);
            assert!(tail.bytes().all(|b| (0x40..=0x4F).contains(&b)), "{shown}");
            // A 16-byte IV (older deployments) works the same way.
            let iv16 = [3u8; 16];
            let mut buffer = b"original".to_vec();
            let tag16 = aes_gcm::AesGcm::<Aes128, aes_gcm::aead::consts::U16>::new(&key.into())
                .encrypt_in_place_detached((&iv16).into(), b"", &mut buffer)
                .unwrap();
            let tag16: [u8; 16] = tag16.into();
            let (p, c) = meet_tag(&key, &iv16, &tag16, text).unwrap();
            let material = [key.as_slice(), tag16.as_slice()].concat();
            assert_eq!(legacy::open(&material, &iv16, &c).unwrap(), p);
        }
        // Not with an empty IV.
        assert!(meet_tag(&[0; 16], &[], &[0; 16], "x").is_none());
    }
}
