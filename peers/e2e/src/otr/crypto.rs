//! The primitives of OTR v3 (`otr-protocol-v3.html`): the 1536-bit MODP group and DSA
//! long-term keys. AES-128-CTR, SHA-1/SHA-256 and their HMACs are the kit's
//! ([`crate::kit::crypto`]).

use std::sync::OnceLock;

use num_bigint::BigUint;
use rand_core::RngCore;

use super::wire::{Writer, mpi_bytes};
use crate::E2eError;
use crate::kit::codec::hex;
use crate::kit::crypto::sha1;

/// §"Encoded messages": the RFC 3526 1536-bit MODP group, generator 2.
const MODP_1536: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA237327FFFFFFFFFFFFFFFF";

/// The DH modulus p.
pub fn modulus() -> &'static BigUint {
    static P: OnceLock<BigUint> = OnceLock::new();
    P.get_or_init(|| BigUint::parse_bytes(MODP_1536.as_bytes(), 16).unwrap_or_default())
}

/// The SMP group order q = (p - 1) / 2 (§"SMP": "D values are calculated modulo q").
pub fn order() -> &'static BigUint {
    static Q: OnceLock<BigUint> = OnceLock::new();
    Q.get_or_init(|| (modulus() - 1u32) >> 1)
}

/// The generator g = 2 (also the SMP's g1).
pub fn generator() -> BigUint {
    BigUint::from(2u32)
}

/// A random integer of `bits` bits from the caller's RNG.
pub fn random_bits(rng: &mut dyn RngCore, bits: usize) -> BigUint {
    let mut bytes = vec![0u8; bits.div_ceil(8)];
    rng.fill_bytes(&mut bytes);
    BigUint::from_bytes_be(&bytes)
}

/// g^e mod p.
pub fn pow_g(e: &BigUint) -> BigUint {
    generator().modpow(e, modulus())
}

/// Checks a received group element: 2 <= v <= p - 2 (the SMP's and libotr's check on DH
/// public keys, which rules out 0, 1 and p - 1).
pub fn check_group_element(what: &'static str, v: &BigUint) -> Result<(), E2eError> {
    let two = BigUint::from(2u32);
    if *v < two || *v > modulus() - &two {
        return Err(E2eError::Rejected {
            reason: "bad-group-element",
            detail: format!("{what} out of range"),
        });
    }
    Ok(())
}

/// A Diffie-Hellman key pair; §"Key Management": "all DH key pairs should have a private part
/// that is at least 320 bits long".
#[derive(Clone)]
pub struct DhKey {
    secret: BigUint,
    /// g^secret.
    pub public: BigUint,
}

impl core::fmt::Debug for DhKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DhKey(..)")
    }
}

impl DhKey {
    /// A fresh key pair (320-bit exponent).
    pub fn generate(rng: &mut dyn RngCore) -> Self {
        let secret = random_bits(rng, 320);
        DhKey { public: pow_g(&secret), secret }
    }

    /// The shared secret with `their` public key, checked to be in range.
    pub fn shared(&self, their: &BigUint) -> Result<BigUint, E2eError> {
        check_group_element("D-H public key", their)?;
        Ok(their.modpow(&self.secret, modulus()))
    }
}

// ---- DSA ---------------------------------------------------------------------------------

/// The DSA domain parameters our devices share (p 1024 bits, q 160 bits, as §"Public keys"
/// expects: "len … must be 20 bytes"). Generated for Jabberwock with
/// `openssl genpkey -genparam -algorithm DSA -pkeyopt dsa_paramgen_bits:1024
/// -pkeyopt dsa_paramgen_q_bits:160`; a unit test re-checks them (p and q prime, q | p - 1,
/// g of order q). Sharing domain parameters is allowed by FIPS 186; each device has its own
/// x and y, and peers verify whatever parameters a public key carries.
const DSA_P: &str = "e7b1556753164ab221ff6f382a5e0565b49a6dcb13ff86d33daad77cf288da1e389ebdd1bbe34bd0299df9c8cb0b26729789ba1bce929dc0dd50d80e8d7ba7f8617e7aa6577f0e3c82a9cb6331969af8aca9bb123b6f290a08668d140068faeff8ac54fc2cf12219e11cfcd507961b43ad8138a62289d46484bf07d26e425a7f";
const DSA_Q: &str = "ec77f5b2c5988dddeb09b4bf63b682dafb9ea54b";
const DSA_G: &str = "3d901bdfdf113ec7602d68f5c28747842755944a10fca66816efd295538048eea605723ccc10b8a9a6cdd288b72a9c44119b26894171563674c2c8a9acbb02aaa5358efe70de4a70cb219c4c11b05f7798a0315791377b95a171866f863a897aa4d14279cb7f24165deeb0506e70aae9e0bf9edf0817327d66975b14ffa0e92f";

/// An OTR public key (§"Public keys, signatures, and fingerprints": type 0x0000, DSA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// DSA p.
    pub p: BigUint,
    /// DSA q.
    pub q: BigUint,
    /// DSA g.
    pub g: BigUint,
    /// DSA y.
    pub y: BigUint,
}

impl PublicKey {
    /// The PUBKEY encoding: type SHORT 0x0000, then p, q, g, y as MPIs.
    pub fn encode(&self, w: &mut Writer) {
        w.short(0);
        for v in [&self.p, &self.q, &self.g, &self.y] {
            w.mpi(v);
        }
    }

    /// The fingerprint: SHA-1 of the encoding without the two type bytes.
    pub fn fingerprint(&self) -> [u8; 20] {
        let mut w = Writer::default();
        self.encode(&mut w);
        sha1(&[&w.bytes()[2..]])
    }

    /// Verifies a SIG (r || s, each as long as q) over `m`. The 32-byte M is used as the DSA
    /// input as it is ("does not need to be hashed again"), reduced mod q — as libgcrypt does
    /// for libotr's plain-MPI input, and otr4j and otr.js do.
    pub fn verify(&self, m: &[u8], sig: &[u8]) -> Result<(), E2eError> {
        let bad = || E2eError::Rejected { reason: "bad-signature", detail: "DSA signature".into() };
        let qlen = mpi_bytes(&self.q).len();
        // Sizes OTR keys have (§"Public keys": q of 160 bits; p of 1024 to 3072 bits): larger
        // ones from the network would make verification run for ever.
        let one = BigUint::from(1u32);
        if sig.len() != 2 * qlen
            || self.q.bits() != 160
            || !(1024..=3072).contains(&self.p.bits())
            || self.g <= one
            || self.g >= self.p
            || self.y <= one
            || self.y >= self.p
        {
            return Err(bad());
        }
        let r = BigUint::from_bytes_be(&sig[..qlen]);
        let s = BigUint::from_bytes_be(&sig[qlen..]);
        let zero = BigUint::default();
        if r == zero || s == zero || r >= self.q || s >= self.q {
            return Err(bad());
        }
        // q is prime, so s^(q-2) is s^-1 mod q (Fermat).
        let w = s.modpow(&(&self.q - 2u32), &self.q);
        let h = BigUint::from_bytes_be(m) % &self.q;
        let u1 = (&h * &w) % &self.q;
        let u2 = (&r * &w) % &self.q;
        let v = ((self.g.modpow(&u1, &self.p) * self.y.modpow(&u2, &self.p)) % &self.p) % &self.q;
        if v == r { Ok(()) } else { Err(bad()) }
    }
}

/// A DSA private key.
#[derive(Clone)]
pub struct PrivateKey {
    x: BigUint,
    /// The public half.
    pub public: PublicKey,
}

impl core::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PrivateKey({})", hex(&self.public.fingerprint()))
    }
}

impl PrivateKey {
    /// A new key over the shared domain parameters.
    pub fn generate(rng: &mut dyn RngCore) -> Self {
        let parse = |h: &str| BigUint::parse_bytes(h.as_bytes(), 16).unwrap_or_default();
        let (p, q, g) = (parse(DSA_P), parse(DSA_Q), parse(DSA_G));
        let x = random_below(rng, &q);
        let y = g.modpow(&x, &p);
        PrivateKey { x, public: PublicKey { p, q, g, y } }
    }

    /// A DSA signature (FIPS 186-4 §4.6) over the 32-byte `m`, r || s, each 20 bytes.
    pub fn sign(&self, m: &[u8], rng: &mut dyn RngCore) -> Vec<u8> {
        let PublicKey { p, q, g, .. } = &self.public;
        let h = BigUint::from_bytes_be(m) % q;
        loop {
            let k = random_below(rng, q);
            let r = g.modpow(&k, p) % q;
            if r == BigUint::default() {
                continue;
            }
            let k_inv = k.modpow(&(q - 2u32), q);
            let s = (k_inv * ((&h + &self.x * &r) % q)) % q;
            if s == BigUint::default() {
                continue;
            }
            let qlen = mpi_bytes(q).len();
            let mut out = vec![0u8; 2 * qlen];
            let (rb, sb) = (r.to_bytes_be(), s.to_bytes_be());
            out[qlen - rb.len()..qlen].copy_from_slice(&rb);
            out[2 * qlen - sb.len()..].copy_from_slice(&sb);
            return out;
        }
    }
}

/// A uniformly random integer in [1, n - 1] (rejection sampling).
pub fn random_below(rng: &mut dyn RngCore, n: &BigUint) -> BigUint {
    let bits = usize::try_from(n.bits()).unwrap_or(usize::MAX);
    loop {
        let mut v = random_bits(rng, bits);
        let excess = v.bits().saturating_sub(n.bits());
        v >>= excess;
        if v > BigUint::default() && v < *n {
            return v;
        }
    }
}
