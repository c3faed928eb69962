//! The cryptography of XEP-0116 (§init-keys, §init-hide, §sas) and XEP-0200: the MODP groups,
//! the key derivation, identity hiding, the SAS, AES-128-CTR with running block counters, and
//! RSA signatures over the SIGMA MACs.

use std::sync::OnceLock;

use crate::rng06::Rng06;
use num_bigint::BigUint;
use rand_core::RngCore;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

use crate::E2eError;
use crate::kit::codec::{b64, hex, unb64};
use crate::kit::crypto::{aes_ctr, hmac_sha256, sha256};

/// RFC 2409 §6.2 (Second Oakley Group, 1024-bit).
const GROUP_2: &str = "\
    FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD\
    EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED\
    EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF";
/// RFC 3526 §2 (1536-bit).
const GROUP_5: &str = "\
    FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD\
    EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED\
    EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F\
    83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA237327FFFFFFFFFFFFFFFF";
/// RFC 3526 §3 (2048-bit).
const GROUP_14: &str = "\
    FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD\
    EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED\
    EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F\
    83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B\
    E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510\
    15728E5A8AACAA68FFFFFFFFFFFFFFFF";
/// RFC 3526 §4 (3072-bit).
const GROUP_15: &str = "\
    FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD\
    EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED\
    EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F\
    83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B\
    E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510\
    15728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7\
    ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864D87602733EC86A64521F2B18177B200C\
    BBE117577A615D6C770988C0BAD946E208E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF";

/// The MODP groups we accept, by their number in the `modp` field (XEP-0116
/// §init-online-request item 1); groups 3 and 4 are EC2N groups, not MODP, and 1 (768-bit) is
/// too weak to accept. The generator is 2 for all.
pub const GROUPS: [u32; 4] = [14, 5, 15, 2];

/// The prime of a supported group.
pub fn group_prime(group: u32) -> Option<&'static BigUint> {
    static PRIMES: OnceLock<[BigUint; 4]> = OnceLock::new();
    let primes = PRIMES.get_or_init(|| {
        [GROUP_14, GROUP_5, GROUP_15, GROUP_2]
            .map(|h| BigUint::parse_bytes(h.as_bytes(), 16).unwrap_or_default())
    });
    GROUPS.iter().position(|g| *g == group).map(|i| &primes[i])
}

/// Multi-precision integers (§sign-bigint): big-endian, leading zero octets stripped.
pub fn mpi(v: &BigUint) -> Vec<u8> {
    if *v == BigUint::default() { vec![0] } else { v.to_bytes_be() }
}

/// A secret exponent with 2^(2n-1) < x < p - 1 for n = 128 (§init-online-request: the bound
/// is the `&twosup2n;` entity, 2^(2n-1)): 256 random bits with the top bit set.
pub fn secret_exponent(rng: &mut dyn RngCore) -> BigUint {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    b[0] |= 0x80;
    b[31] |= 1;
    BigUint::from_bytes_be(&b)
}

/// Checks 1 < v < p - 1 (§init-acceptalice-prep, §init-acceptbob-verify).
pub fn check_public(what: &'static str, v: &BigUint, p: &BigUint) -> Result<(), E2eError> {
    if *v <= BigUint::from(1u32) || *v >= p - 1u32 {
        return Err(E2eError::Rejected {
            reason: "bad-group-element",
            detail: format!("{what} out of range"),
        });
    }
    Ok(())
}

/// The six keys of §init-keys (or the four of a rekey).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    /// Cipher key: the 16 least significant bytes of the HMAC (aes128-ctr).
    pub kc: [u8; 16],
    /// MAC key: the whole HMAC output.
    pub km: [u8; 32],
}

impl core::fmt::Debug for Keys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// `HMAC(HASH, K, label)` with "as many bits of key data as are needed … taken from the least
/// significant bits of the HMAC output" (§init-keys).
pub fn derive(k: &[u8], cipher_label: &str, mac_label: &str) -> Keys {
    let c = hmac_sha256(k, &[cipher_label.as_bytes()]);
    let mut kc = [0u8; 16];
    kc.copy_from_slice(&c[16..]);
    Keys { kc, km: hmac_sha256(k, &[mac_label.as_bytes()]) }
}

/// The initiator's and responder's keys and SIGMA keys from K (§init-keys).
pub fn session_keys(k: &[u8; 32]) -> (Keys, Keys, [u8; 32], [u8; 32]) {
    (
        derive(k, "Initiator Cipher Key", "Initiator MAC Key"),
        derive(k, "Responder Cipher Key", "Responder MAC Key"),
        hmac_sha256(k, &[b"Initiator SIGMA Key"]),
        hmac_sha256(k, &[b"Responder SIGMA Key"]),
    )
}

/// XEP-0200 §rekey-init: K = d^x mod p, *not* hashed, as the HMAC key (as an MPI); labels
/// "Rekey Initiator Crypt" etc. Returns (the rekeying party's keys, the other party's).
pub fn rekey_keys(k: &BigUint) -> (Keys, Keys) {
    let k = mpi(k);
    (
        derive(&k, "Rekey Initiator Crypt", "Rekey Initiator MAC"),
        derive(&k, "Rekey Acceptor Crypt", "Rekey Acceptor MAC"),
    )
}

/// AES-128-CTR from the running block counter `counter`, which advances by one per block or
/// partial block (§init-hide step 6; XEP-0200 §encrypt). The first block uses the counter's
/// current value (our reading of an ambiguity the XEP itself lists in §open-todo).
pub fn ctr(key: &[u8; 16], counter: &mut u128, data: &mut [u8]) {
    aes_ctr(key, &counter.to_be_bytes(), data);
    let blocks = data.len().div_ceil(16).max(1) as u128;
    *counter = counter.wrapping_add(blocks);
}

/// A counter as an MPI (stripped), for the MACs (`M_A = HMAC(KM_A, C_A | ID_A)`).
pub fn counter_mpi(c: u128) -> Vec<u8> {
    mpi(&BigUint::from(c))
}

/// §sas, `sas28x5`: SHA256(M_A | form_B | "Short Authentication String"), its 24 least
/// significant bits as five base-28 digits, most significant first.
pub fn sas(m_a: &[u8], form_b: &[u8]) -> String {
    let h = sha256(&[m_a, form_b, b"Short Authentication String"]);
    sas_digits(u32::from_be_bytes([0, h[29], h[30], h[31]]))
}

/// Five base-28 digits of a 24-bit value, most significant first, padded with `a` (zero).
pub fn sas_digits(mut v: u32) -> String {
    const ALPHABET: &[u8; 28] = b"acdefghikmopqruvwxy123456789";
    let mut out = [b'a'; 5];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v % 28) as usize];
        v /= 28;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The signature algorithm we offer and accept (§sec-mandatory-sign: MUST).
pub const RSA_SHA256: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha256";

/// A device's RSA identity key (2048 bits).
#[derive(Clone)]
pub struct Identity {
    key: RsaPrivateKey,
}

impl core::fmt::Debug for Identity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Identity({})", hex(&fingerprint(&self.key_value())[..8]))
    }
}

impl Identity {
    /// A new key from the caller's RNG.
    pub fn generate(rng: &mut dyn RngCore) -> Result<Self, E2eError> {
        let key = crate::rsa_keygen::generate(rng, 2048)
            .map_err(|e| E2eError::Policy { detail: format!("RSA key generation: {e}") })?;
        Ok(Identity { key })
    }

    /// The normalized `<KeyValue/>` (§init-hide step 1, §sec-mandatory-public).
    pub fn key_value(&self) -> String {
        key_value(&self.key.to_public_key())
    }

    /// The RSA modulus, big-endian.
    pub fn modulus(&self) -> Vec<u8> {
        self.key.to_public_key().n().to_bytes_be()
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over the MAC bytes, wrapped as `<SignatureValue/>`.
    pub fn sign(&self, mac: &[u8], rng: &mut dyn RngCore) -> String {
        format!("<SignatureValue>{}</SignatureValue>", b64(&self.signature(mac, rng)))
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `data` (XEP-0187's `signs` of an options form).
    pub fn signature(&self, data: &[u8], rng: &mut dyn RngCore) -> Vec<u8> {
        let signer = SigningKey::<Sha256>::new(self.key.clone());
        signer.sign_with_rng(&mut Rng06(rng), data).to_vec()
    }
}

/// The normalized `<KeyValue/>` of a public key (no xmlns, §sign-normal).
pub fn key_value(public: &RsaPublicKey) -> String {
    let n = BigUint::from_bytes_be(&public.n().to_bytes_be());
    let e = BigUint::from_bytes_be(&public.e().to_bytes_be());
    format!(
        "<KeyValue><RSAKeyValue><Modulus>{}</Modulus><Exponent>{}</Exponent></RSAKeyValue></KeyValue>",
        b64(&mpi(&n)),
        b64(&mpi(&e))
    )
}

/// What users compare for a key: SHA-256 of the normalized `<KeyValue/>`.
pub fn fingerprint(key_value: &str) -> [u8; 32] {
    sha256(&[key_value.as_bytes()])
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let end = s[start..].find(close)? + start;
    Some(&s[start..end])
}

/// Splits a decrypted identity `pubKey | <SignatureValue/>` and verifies the signature over
/// `mac`. Returns the `<KeyValue/>` string as received.
pub fn verify_identity(plain: &str, mac: &[u8]) -> Result<String, E2eError> {
    let bad = |d: &str| E2eError::Malformed { what: "identity", detail: d.to_owned() };
    let split = plain.find("<SignatureValue>").ok_or_else(|| bad("no <SignatureValue/>"))?;
    let (key_value, sig) = plain.split_at(split);
    let modulus =
        unb64("Modulus", between(key_value, "<Modulus>", "</Modulus>").ok_or_else(|| bad("no <Modulus/>"))?)?;
    let exponent = unb64(
        "Exponent",
        between(key_value, "<Exponent>", "</Exponent>").ok_or_else(|| bad("no <Exponent/>"))?,
    )?;
    let sig = unb64(
        "SignatureValue",
        between(sig, "<SignatureValue>", "</SignatureValue>").ok_or_else(|| bad("no <SignatureValue/>"))?,
    )?;
    let public =
        RsaPublicKey::new(rsa::BigUint::from_bytes_be(&modulus), rsa::BigUint::from_bytes_be(&exponent))
            .map_err(|e| E2eError::Rejected { reason: "bad-key", detail: e.to_string() })?;
    if public.size() < 128 {
        return Err(E2eError::Rejected { reason: "bad-key", detail: "RSA key under 1024 bits".into() });
    }
    let signature = Signature::try_from(sig.as_slice())
        .map_err(|_| E2eError::Rejected { reason: "bad-signature", detail: "RSA signature".into() })?;
    VerifyingKey::<Sha256>::new(public).verify(mac, &signature).map_err(|_| E2eError::Rejected {
        reason: "bad-signature",
        detail: "RSA signature over the SIGMA MAC".into(),
    })?;
    Ok(key_value.to_owned())
}
