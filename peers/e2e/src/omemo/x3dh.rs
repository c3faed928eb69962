//! XEP-0384 §protocol-key_exchange: X3DH with curve Curve25519/Ed25519, SHA-256 and the info
//! string "OMEMO X3DH".
//!
//! The IdentityKey is an Ed25519 key pair (the second option of the XEP's XEdDSA rules): it
//! signs directly, and is converted with the RFC 7748 birational map to do X25519 — the
//! private half as libsodium's `crypto_sign_ed25519_sk_to_curve25519` does (the clamped
//! SHA-512 prefix of the seed), the public half to its Montgomery u-coordinate.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::RngCore;
use x25519_dalek::{PublicKey, StaticSecret};

use super::random_bytes;
use crate::kit::codec::hex;
use crate::E2eError;

/// The X3DH info string (XEP-0384 §protocol-key_exchange, "info string").
pub const X3DH_INFO: &[u8] = b"OMEMO X3DH";
/// OMEMO 0.3 uses libsignal's X3DH info string.
pub const LEGACY_INFO: &[u8] = b"WhisperText";
/// libsignal's type byte in front of every Curve25519 public key (OMEMO 0.3 encoding).
const DJB_TYPE: u8 = 0x05;

/// Verifies an OMEMO 0.3 signature (over the signed PreKey) under a Curve25519 identity key,
/// in the libsignal wire convention: the Edwards point's sign bit travels in the top bit of the
/// signature's last byte (always 0 for XEdDSA proper, whose signer forces sign 0), the key is
/// mapped to the Edwards point with that sign (RFC 7748 birational map) and the signature is
/// checked as Ed25519.
pub fn verify_curve_signature(
    curve_pub: &[u8; 32],
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), E2eError> {
    let bad = || E2eError::Rejected {
        reason: "bad-signature",
        detail: "signature under the Curve25519 identity key".into(),
    };
    let sign = signature[63] >> 7;
    let mut sig = *signature;
    sig[63] &= 0x7f;
    let edwards =
        curve25519_dalek::montgomery::MontgomeryPoint(*curve_pub).to_edwards(sign).ok_or_else(bad)?;
    let vk = VerifyingKey::from_bytes(&edwards.compress().to_bytes()).map_err(|_| bad())?;
    vk.verify_strict(message, &Signature::from_bytes(&sig)).map_err(|_| bad())
}

/// OMEMO 0.3 key encoding: 0x05 || Curve25519 public key.
pub fn djb_encode(key: &[u8; 32]) -> [u8; 33] {
    let mut out = [DJB_TYPE; 33];
    out[1..].copy_from_slice(key);
    out
}

/// A device's long-term IdentityKey (Ed25519).
#[derive(Clone)]
pub struct IdentityKey {
    signing: SigningKey,
}

impl core::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "IdentityKey({})", hex(&self.public()))
    }
}

impl IdentityKey {
    /// A new IdentityKey from the caller's RNG.
    pub fn generate(rng: &mut dyn RngCore) -> Self {
        IdentityKey { signing: SigningKey::from_bytes(&random_bytes(rng)) }
    }

    /// `Encode(IK)`: the RFC 8032 encoding of the public key.
    pub fn public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// `Sig(IK, M)`: an RFC 8032 Ed25519 signature.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    fn x25519(&self) -> StaticSecret {
        StaticSecret::from(self.signing.to_scalar_bytes())
    }

    /// The Curve25519 form of the public key, as OMEMO 0.3 transfers it.
    pub fn curve_public(&self) -> [u8; 32] {
        PublicKey::from(&self.x25519()).to_bytes()
    }

    /// An OMEMO 0.3 signature in the libsignal wire convention: Ed25519 over `message`, with
    /// the Edwards public key's sign bit moved into the top bit of byte 63 (as oldmemo does),
    /// so [`verify_curve_signature`] accepts it under [`IdentityKey::curve_public`].
    pub fn sign_curve(&self, message: &[u8]) -> [u8; 64] {
        let mut sig = self.sign(message);
        sig[63] |= self.public()[31] & 0x80;
        sig
    }
}

/// Converts an encoded Ed25519 IdentityKey (from the network) to its X25519 form.
pub fn identity_to_x25519(ik: &[u8; 32]) -> Result<PublicKey, E2eError> {
    let vk = VerifyingKey::from_bytes(ik)
        .map_err(|e| E2eError::Malformed { what: "identity key", detail: e.to_string() })?;
    Ok(PublicKey::from(vk.to_montgomery().to_bytes()))
}

/// Verifies `Sig(IK, Encode(SPK))` on a bundle's signed PreKey.
pub fn verify_spk(ik: &[u8; 32], spk: &[u8; 32], signature: &[u8; 64]) -> Result<(), E2eError> {
    let vk = VerifyingKey::from_bytes(ik)
        .map_err(|e| E2eError::Malformed { what: "identity key", detail: e.to_string() })?;
    vk.verify_strict(spk, &Signature::from_bytes(signature))
        .map_err(|_| E2eError::Rejected { reason: "bad-signature", detail: "signed PreKey signature".into() })
}

/// An X25519 key pair with an id (a signed PreKey or a one-time PreKey).
#[derive(Clone)]
pub struct PreKeyPair {
    /// Its id in the bundle.
    pub id: u32,
    secret: StaticSecret,
}

impl core::fmt::Debug for PreKeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PreKey({}, {})", self.id, hex(&self.public()))
    }
}

impl PreKeyPair {
    fn generate(id: u32, rng: &mut dyn RngCore) -> Self {
        PreKeyPair { id, secret: StaticSecret::from(random_bytes(rng)) }
    }

    /// `Encode(PK)`: the little-endian u-coordinate.
    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&self.secret).to_bytes()
    }

    /// The private half, for the Double Ratchet's first responder key.
    pub fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

/// What a device publishes (XEP-0384 §bundles), already decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The IdentityKey, Ed25519 encoding.
    pub ik: [u8; 32],
    /// The signed PreKey id.
    pub spk_id: u32,
    /// The signed PreKey.
    pub spk: [u8; 32],
    /// `Sig(IK, Encode(SPK))`.
    pub spks: [u8; 64],
    /// One-time PreKeys by id.
    pub prekeys: Vec<(u32, [u8; 32])>,
}

/// A device's private key material for X3DH.
#[derive(Clone)]
pub struct KeyStore {
    /// The IdentityKey.
    pub identity: IdentityKey,
    spk: PreKeyPair,
    spk_signature: [u8; 64],
    prekeys: BTreeMap<u32, PreKeyPair>,
    next_prekey_id: u32,
    target: usize,
}

impl core::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyStore")
            .field("identity", &self.identity)
            .field("spk", &self.spk)
            .field("prekeys", &self.prekeys.len())
            .finish()
    }
}

/// XEP-0384 §protocol-key_exchange: the bundle "SHOULD always contain around 100 PreKeys".
pub const PREKEYS: usize = 100;

impl KeyStore {
    /// A new identity, signed PreKey (id 1) and `prekeys` one-time PreKeys (ids 1..).
    pub fn generate(rng: &mut dyn RngCore, prekeys: usize) -> Self {
        let identity = IdentityKey::generate(rng);
        let spk = PreKeyPair::generate(1, rng);
        let spk_signature = identity.sign(&spk.public());
        let mut store = KeyStore {
            identity,
            spk,
            spk_signature,
            prekeys: BTreeMap::new(),
            next_prekey_id: 1,
            target: prekeys,
        };
        store.refill(rng);
        store
    }

    /// The same PreKeys under another IdentityKey, the signed PreKey signed anew (an OMEMO 2
    /// device's 0.3 half shares its IdentityKey: [`super::quirks::ALSO_LEGACY`]).
    pub fn with_identity(self, identity: IdentityKey) -> Self {
        let spk_signature = identity.sign(&self.spk.public());
        KeyStore { identity, spk_signature, ..self }
    }

    /// Restores a store from its secrets: the Ed25519 identity seed, the signed PreKey and the
    /// one-time PreKeys (X25519 private keys with their ids). `target` is how many one-time
    /// PreKeys [`KeyStore::refill`] keeps.
    pub fn from_secrets(
        identity_seed: [u8; 32],
        spk: (u32, [u8; 32]),
        prekeys: &[(u32, [u8; 32])],
        target: usize,
    ) -> Self {
        let identity = IdentityKey { signing: SigningKey::from_bytes(&identity_seed) };
        let spk = PreKeyPair { id: spk.0, secret: StaticSecret::from(spk.1) };
        let spk_signature = identity.sign(&spk.public());
        let prekeys: BTreeMap<u32, PreKeyPair> = prekeys
            .iter()
            .map(|(id, k)| (*id, PreKeyPair { id: *id, secret: StaticSecret::from(*k) }))
            .collect();
        let next_prekey_id = prekeys.keys().next_back().map_or(1, |id| id.wrapping_add(1).max(1));
        KeyStore { identity, spk, spk_signature, prekeys, next_prekey_id, target }
    }

    /// Tops the one-time PreKeys back up to the target count (after consumption).
    pub fn refill(&mut self, rng: &mut dyn RngCore) -> bool {
        let mut added = false;
        while self.prekeys.len() < self.target {
            let id = self.next_prekey_id;
            self.next_prekey_id = self.next_prekey_id.wrapping_add(1).max(1);
            self.prekeys.insert(id, PreKeyPair::generate(id, rng));
            added = true;
        }
        added
    }

    /// The public bundle.
    pub fn bundle(&self) -> Bundle {
        Bundle {
            ik: self.identity.public(),
            spk_id: self.spk.id,
            spk: self.spk.public(),
            spks: self.spk_signature,
            prekeys: self.prekeys.values().map(|p| (p.id, p.public())).collect(),
        }
    }

    /// The public bundle in OMEMO 0.3 form: the IdentityKey as its Curve25519 public key and
    /// the signed PreKey signed over `0x05 || SPK` in the libsignal wire convention.
    pub fn legacy_bundle(&self) -> Bundle {
        Bundle {
            ik: self.identity.curve_public(),
            spks: self.identity.sign_curve(&djb_encode(&self.spk.public())),
            ..self.bundle()
        }
    }

    /// How many one-time PreKeys are left.
    pub fn prekey_count(&self) -> usize {
        self.prekeys.len()
    }
}

/// The X3DH header an initiator sends (the fields of `OMEMOKeyExchange` besides the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyExchangeHeader {
    /// The one-time PreKey used.
    pub pk_id: u32,
    /// The signed PreKey used.
    pub spk_id: u32,
    /// The initiator's IdentityKey (Ed25519 encoding).
    pub ik: [u8; 32],
    /// The initiator's ephemeral key.
    pub ek: [u8; 32],
}

/// The result of X3DH on either side.
#[derive(Clone)]
pub struct Agreement {
    /// The shared secret SK.
    pub sk: [u8; 32],
    /// `AD = Encode(IK_A) || Encode(IK_B)`, A the active initiator.
    pub ad: Vec<u8>,
}

impl core::fmt::Debug for Agreement {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Agreement").field("ad", &hex(&self.ad)).finish_non_exhaustive()
    }
}

fn dh(secret: &StaticSecret, public: &PublicKey) -> Result<[u8; 32], E2eError> {
    let shared = secret.diffie_hellman(public);
    if !shared.was_contributory() {
        return Err(E2eError::Rejected { reason: "weak-key", detail: "a low-order public key".into() });
    }
    Ok(shared.to_bytes())
}

/// X3DH's KDF: HKDF-SHA-256 over `F || KM` with F = 32 0xFF bytes, a zero salt of hash
/// length, and the info string (X3DH §2.2).
fn kdf(km: &[[u8; 32]], info: &[u8]) -> [u8; 32] {
    let mut ikm = vec![0xFFu8; 32];
    for part in km {
        ikm.extend_from_slice(part);
    }
    let mut sk = [0u8; 32];
    let _ = hkdf::Hkdf::<sha2::Sha256>::new(Some(&[0u8; 32]), &ikm).expand(info, &mut sk);
    sk
}

/// Alice's side (X3DH §3.3): verifies the bundle, picks a one-time PreKey (XEP-0384: "All
/// key exchanges MUST use a PreKey"), and derives SK.
pub fn initiate(
    identity: &IdentityKey,
    bundle: &Bundle,
    rng: &mut dyn RngCore,
) -> Result<(Agreement, KeyExchangeHeader), E2eError> {
    verify_spk(&bundle.ik, &bundle.spk, &bundle.spks)?;
    let ik_b = identity_to_x25519(&bundle.ik)?;
    let (sk, pk_id, ek) = active(identity, &ik_b, &bundle.spk, &bundle.prekeys, X3DH_INFO, rng)?;
    let mut ad = identity.public().to_vec();
    ad.extend_from_slice(&bundle.ik);
    Ok((Agreement { sk, ad }, KeyExchangeHeader { pk_id, spk_id: bundle.spk_id, ik: identity.public(), ek }))
}

/// X3DH §3.3 for the active party: picks one of the peer's one-time PreKeys (XEP-0384: "All
/// key exchanges MUST use a PreKey"), makes the ephemeral key and derives SK. Returns SK, the
/// PreKey id and the ephemeral public key.
fn active(
    identity: &IdentityKey,
    ik_b: &PublicKey,
    spk: &[u8; 32],
    prekeys: &[(u32, [u8; 32])],
    info: &[u8],
    rng: &mut dyn RngCore,
) -> Result<([u8; 32], u32, [u8; 32]), E2eError> {
    if prekeys.is_empty() {
        return Err(E2eError::Malformed { what: "bundle", detail: "no one-time PreKeys".into() });
    }
    let (pk_id, opk) = prekeys[(rng.next_u32() as usize) % prekeys.len()];
    let ek = StaticSecret::from(random_bytes(rng));
    let (spk_b, opk_b) = (PublicKey::from(*spk), PublicKey::from(opk));
    let sk =
        kdf(&[dh(&identity.x25519(), &spk_b)?, dh(&ek, ik_b)?, dh(&ek, &spk_b)?, dh(&ek, &opk_b)?], info);
    Ok((sk, pk_id, PublicKey::from(&ek).to_bytes()))
}

/// X3DH §3.4 for the passive party: derives SK and deletes the one-time PreKey it used.
fn passive(
    store: &mut KeyStore,
    pk_id: u32,
    spk_id: u32,
    ik_a: &PublicKey,
    ek: &[u8; 32],
    info: &[u8],
) -> Result<[u8; 32], E2eError> {
    if spk_id != store.spk.id {
        return Err(E2eError::Rejected {
            reason: "unknown-prekey",
            detail: format!("signed PreKey {spk_id}"),
        });
    }
    let ek_a = PublicKey::from(*ek);
    let opk = store.prekeys.get(&pk_id).cloned().ok_or(E2eError::Rejected {
        reason: "unknown-prekey",
        detail: format!("one-time PreKey {pk_id} (already used, or never ours)"),
    })?;
    let sk = kdf(
        &[
            dh(&store.spk.secret, ik_a)?,
            dh(&store.identity.x25519(), &ek_a)?,
            dh(&store.spk.secret, &ek_a)?,
            dh(&opk.secret, &ek_a)?,
        ],
        info,
    );
    store.prekeys.remove(&pk_id);
    Ok(sk)
}

/// Alice's side in OMEMO 0.3: the bundle's identity key is in Curve25519 form and its signed
/// PreKey signature in the libsignal wire convention. The returned header carries our
/// identity key in Curve25519 form too.
pub fn initiate_legacy(
    identity: &IdentityKey,
    bundle: &Bundle,
    rng: &mut dyn RngCore,
) -> Result<(Agreement, KeyExchangeHeader), E2eError> {
    verify_curve_signature(&bundle.ik, &djb_encode(&bundle.spk), &bundle.spks)?;
    let (sk, pk_id, ek) =
        active(identity, &PublicKey::from(bundle.ik), &bundle.spk, &bundle.prekeys, LEGACY_INFO, rng)?;
    let own = identity.curve_public();
    let ad = [djb_encode(&own), djb_encode(&bundle.ik)].concat();
    Ok((Agreement { sk, ad }, KeyExchangeHeader { pk_id, spk_id: bundle.spk_id, ik: own, ek }))
}

/// Bob's side: derives SK from a key exchange header, consuming the one-time PreKey it names.
/// Returns the agreement and the signed PreKey pair that starts Bob's ratchet.
pub fn accept(store: &mut KeyStore, header: &KeyExchangeHeader) -> Result<(Agreement, PreKeyPair), E2eError> {
    let ik_a = identity_to_x25519(&header.ik)?;
    let sk = passive(store, header.pk_id, header.spk_id, &ik_a, &header.ek, X3DH_INFO)?;
    let mut ad = header.ik.to_vec();
    ad.extend_from_slice(&store.identity.public());
    Ok((Agreement { sk, ad }, store.spk.clone()))
}

/// Bob's side in OMEMO 0.3 (libsignal X3DH, "WhisperText"): the initiator's identity key
/// arrives in Curve25519 form; the associated data is `0x05 || IK_A || 0x05 || IK_B`.
pub fn accept_legacy(
    store: &mut KeyStore,
    header: &KeyExchangeHeader,
) -> Result<(Agreement, PreKeyPair), E2eError> {
    let sk =
        passive(store, header.pk_id, header.spk_id, &PublicKey::from(header.ik), &header.ek, LEGACY_INFO)?;
    let own = store.identity.curve_public();
    let ad = [djb_encode(&header.ik), djb_encode(&own)].concat();
    Ok((Agreement { sk, ad }, store.spk.clone()))
}
