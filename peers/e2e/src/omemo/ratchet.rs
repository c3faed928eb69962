//! XEP-0384 §protocol-double_ratchet: the Double Ratchet (Signal specification, §3) with
//! OMEMO's parameters:
//!
//! - `KDF_RK(rk, dh_out)`: HKDF-SHA-256, salt `rk`, input `dh_out`, info "OMEMO Root Chain";
//! - `KDF_CK(ck)`: HMAC-SHA-256 keyed with `ck` over `0x01` (message key) and `0x02` (chain key);
//! - `ENCRYPT(mk, …)`: HKDF-SHA-256 of `mk` (zero salt, info "OMEMO Message Key Material") into
//!   a 32-byte AES key, a 32-byte HMAC key and a 16-byte IV; AES-256-CBC with PKCS#7; the HMAC
//!   over `ad || OMEMOMessage` truncated to 16 bytes;
//! - MAX_SKIP: at most [`MAX_SKIP`] keys skipped by one message, at most [`MAX_STORED`] kept per
//!   session, evicted first-in first-out.
//!
//! A message that fails authentication leaves the state untouched (Signal §3.5: "if an
//! exception is raised … discard any changes to the state").

use std::collections::VecDeque;

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use prost::Message;
use rand_core::RngCore;
use x25519_dalek::{PublicKey, StaticSecret};

use super::wire::{LegacyMessage, OmemoAuthenticatedMessage, OmemoMessage, decode, key32};
use super::{aead_keys, random_bytes};
use crate::kit::crypto::{equal, hmac_sha256};
use crate::E2eError;

/// The most message keys one incoming message may make us skip.
pub const MAX_SKIP: u32 = 1000;
/// The most skipped message keys kept per session (XEP-0384 recommends 1000), FIFO.
pub const MAX_STORED: usize = 1000;

/// A skipped message key is found by the sender's ratchet key and the message number.
type SkippedKeyId = ([u8; 32], u32);

/// The wire format and KDF labels of an OMEMO version; the ratchet itself is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Profile {
    /// XEP-0384 0.8+ (`urn:xmpp:omemo:2`): `OMEMOAuthenticatedMessage` protobuf, 16-byte MAC.
    Omemo2,
    /// XEP-0384 0.3 (`eu.siacs.conversations.axolotl`): libsignal v3 — version byte 0x33,
    /// `WhisperMessage` protobuf with 0x05-prefixed keys, 8-byte MAC appended.
    ///
    /// A deliberate choice: the "Protocol Definition" section of the 0.3.0 text
    /// (`xep-0384-v0.3.xml`, §protocol-double_ratchet) describes OMEMO-2-style labels ("OMEMO
    /// Root Chain", 16-byte tags, `OMEMOAuthenticatedMessage`), but every deployed
    /// implementation of this namespace (Conversations' libsignal, python oldmemo) speaks
    /// libsignal's protocol, which the XEP's own introduction points to. We follow the
    /// deployed wire format, checked against oldmemo's vectors.
    Legacy,
}

/// libsignal's message version byte (current version 3 in both nibbles).
const LEGACY_VERSION: u8 = 0x33;
/// libsignal's type byte for Curve25519 public keys.
pub const DJB_TYPE: u8 = 0x05;

/// A ratchet message taken apart.
struct Parsed {
    /// The bytes the MAC covers after the associated data.
    authenticated: Vec<u8>,
    mac: Vec<u8>,
    n: u32,
    pn: u32,
    dh: [u8; 32],
    ciphertext: Vec<u8>,
}

impl Profile {
    fn root_info(self) -> &'static [u8] {
        match self {
            Profile::Omemo2 => b"OMEMO Root Chain",
            Profile::Legacy => b"WhisperRatchet",
        }
    }

    fn key_info(self) -> &'static [u8] {
        match self {
            Profile::Omemo2 => b"OMEMO Message Key Material",
            Profile::Legacy => b"WhisperMessageKeys",
        }
    }

    fn mac_len(self) -> usize {
        match self {
            Profile::Omemo2 => 16,
            Profile::Legacy => 8,
        }
    }

    /// Serialises a message and authenticates it (serialised once, MAC over exactly those bytes).
    fn seal(
        self,
        ad: &[u8],
        auth: &[u8; 32],
        n: u32,
        pn: u32,
        dh: &[u8; 32],
        ciphertext: Vec<u8>,
    ) -> Vec<u8> {
        match self {
            Profile::Omemo2 => {
                let message =
                    OmemoMessage { n, pn, dh_pub: dh.to_vec(), ciphertext: Some(ciphertext) }.encode_to_vec();
                let mac = hmac_trunc(auth, &[ad, &message], self.mac_len());
                OmemoAuthenticatedMessage { mac, message }.encode_to_vec()
            }
            Profile::Legacy => {
                let mut dh_pub = vec![DJB_TYPE];
                dh_pub.extend_from_slice(dh);
                let mut message = vec![LEGACY_VERSION];
                message.extend(LegacyMessage { dh_pub, n, pn, ciphertext: Some(ciphertext) }.encode_to_vec());
                let mac = hmac_trunc(auth, &[ad, &message], self.mac_len());
                message.extend(mac);
                message
            }
        }
    }

    fn parse(self, bytes: &[u8]) -> Result<Parsed, E2eError> {
        match self {
            Profile::Omemo2 => {
                let outer: OmemoAuthenticatedMessage = decode("OMEMOAuthenticatedMessage", bytes)?;
                let header: OmemoMessage = decode("OMEMOMessage", &outer.message)?;
                Ok(Parsed {
                    dh: key32("dh_pub", &header.dh_pub)?,
                    n: header.n,
                    pn: header.pn,
                    ciphertext: header
                        .ciphertext
                        .ok_or(E2eError::Missing { what: "OMEMOMessage ciphertext" })?,
                    authenticated: outer.message,
                    mac: outer.mac,
                })
            }
            Profile::Legacy => {
                let split = bytes.len().checked_sub(self.mac_len()).filter(|s| *s > 1).ok_or(
                    E2eError::Malformed {
                        what: "WhisperMessage",
                        detail: format!("{} bytes is too short", bytes.len()),
                    },
                )?;
                let (message, mac) = bytes.split_at(split);
                if message.first() != Some(&LEGACY_VERSION) {
                    return Err(E2eError::Malformed {
                        what: "WhisperMessage",
                        detail: "version byte is not 0x33".into(),
                    });
                }
                let header: LegacyMessage = decode("WhisperMessage", &message[1..])?;
                let dh = match header.dh_pub.split_first() {
                    Some((&DJB_TYPE, key)) => key32("ratchet key", key)?,
                    _ => {
                        return Err(E2eError::Malformed {
                            what: "ratchet key",
                            detail: "not a 0x05 key".into(),
                        });
                    }
                };
                Ok(Parsed {
                    dh,
                    n: header.n,
                    pn: header.pn,
                    ciphertext: header
                        .ciphertext
                        .ok_or(E2eError::Missing { what: "WhisperMessage ciphertext" })?,
                    authenticated: message.to_vec(),
                    mac: mac.to_vec(),
                })
            }
        }
    }
}

/// HMAC-SHA-256 over the concatenation of `parts`, truncated to `len` bytes.
fn hmac_trunc(key: &[u8; 32], parts: &[&[u8]], len: usize) -> Vec<u8> {
    hmac_sha256(key, parts)[..len].to_vec()
}

/// One Double Ratchet session with one peer device.
#[derive(Clone)]
pub struct Ratchet {
    profile: Profile,
    /// Whether this side started the session (X3DH's active party, "Alice").
    initiator: bool,
    dhs: StaticSecret,
    /// The public half of `dhs`, kept so encrypting does not redo a scalar multiplication.
    dhs_pub: [u8; 32],
    dhr: Option<[u8; 32]>,
    rk: [u8; 32],
    cks: Option<[u8; 32]>,
    ckr: Option<[u8; 32]>,
    ns: u32,
    nr: u32,
    pn: u32,
    skipped: VecDeque<(SkippedKeyId, [u8; 32])>,
    ad: Vec<u8>,
}

impl core::fmt::Debug for Ratchet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ratchet")
            .field("ns", &self.ns)
            .field("nr", &self.nr)
            .field("pn", &self.pn)
            .field("skipped", &self.skipped.len())
            .finish_non_exhaustive()
    }
}

fn kdf_rk(rk: &[u8; 32], dh_out: &[u8; 32], info: &[u8]) -> ([u8; 32], [u8; 32]) {
    let mut okm = [0u8; 64];
    let _ = hkdf::Hkdf::<sha2::Sha256>::new(Some(rk), dh_out).expand(info, &mut okm);
    let (mut root, mut chain) = ([0u8; 32], [0u8; 32]);
    root.copy_from_slice(&okm[..32]);
    chain.copy_from_slice(&okm[32..]);
    (root, chain)
}

fn hmac32(key: &[u8; 32], input: u8) -> [u8; 32] {
    hmac_sha256(key, &[&[input]])
}

/// `KDF_CK`: (next chain key, message key).
fn kdf_ck(ck: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    (hmac32(ck, 0x02), hmac32(ck, 0x01))
}

/// The 80 bytes of "OMEMO Message Key Material": (AES key, HMAC key, IV).
fn message_keys(mk: &[u8; 32], info: &[u8]) -> ([u8; 32], [u8; 32], [u8; 16]) {
    aead_keys(mk, info)
}

pub(crate) fn aes_cbc_encrypt(key: &[u8; 32], iv: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
    cbc::Encryptor::<aes::Aes256>::new(key.into(), iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plaintext)
}

pub(crate) fn aes_cbc_decrypt(key: &[u8; 32], iv: &[u8; 16], ciphertext: &[u8]) -> Result<Vec<u8>, E2eError> {
    cbc::Decryptor::<aes::Aes256>::new(key.into(), iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .map_err(|_| E2eError::Rejected { reason: "bad-padding", detail: "AES-256-CBC padding".into() })
}

impl Ratchet {
    /// Alice (the active initiator) after X3DH: Signal §3.3 `RatchetInitAlice(SK, bob_dh_public_key)`,
    /// with Bob's signed PreKey as his first ratchet key.
    pub fn init_alice(
        profile: Profile,
        sk: &[u8; 32],
        ad: Vec<u8>,
        bob_spk: &[u8; 32],
        rng: &mut dyn RngCore,
    ) -> Result<Self, E2eError> {
        let dhs = StaticSecret::from(random_bytes(rng));
        let dh_out = contributory(&dhs, bob_spk)?;
        let (rk, cks) = kdf_rk(sk, &dh_out, profile.root_info());
        let mut ratchet = Ratchet::init_bob(profile, &rk, ad, &dhs);
        ratchet.initiator = true;
        ratchet.dhr = Some(*bob_spk);
        ratchet.cks = Some(cks);
        Ok(ratchet)
    }

    /// Bob after X3DH: `RatchetInitBob(SK, bob_dh_key_pair)` with his signed PreKey pair.
    pub fn init_bob(profile: Profile, sk: &[u8; 32], ad: Vec<u8>, spk: &StaticSecret) -> Self {
        Ratchet {
            profile,
            initiator: false,
            dhs_pub: PublicKey::from(spk).to_bytes(),
            dhs: spk.clone(),
            dhr: None,
            rk: *sk,
            cks: None,
            ckr: None,
            ns: 0,
            nr: 0,
            pn: 0,
            skipped: VecDeque::new(),
            ad,
        }
    }

    /// The associated data a MAC covers. OMEMO 2: `IK_A || IK_B` (A the initiator) both ways.
    /// OMEMO 0.3 follows libsignal, which orders it `sender || receiver` whoever initiated
    /// (python oldmemo's `encrypt_key_material` rebuilds it the same way).
    fn mac_ad(&self, sending: bool) -> Vec<u8> {
        match self.profile {
            Profile::Legacy if sending != self.initiator => {
                let (a, b) = self.ad.split_at(self.ad.len() / 2);
                [b, a].concat()
            }
            _ => self.ad.clone(),
        }
    }

    /// A digest of the whole state, secrets included, for tests that check a state did not
    /// change.
    #[cfg(test)]
    pub(crate) fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update([self.profile as u8, u8::from(self.initiator)]);
        h.update(self.dhs.to_bytes());
        h.update(self.dhs_pub);
        for key in [self.dhr, self.cks, self.ckr] {
            h.update(key.map_or(vec![0], |k| [&[1u8][..], &k].concat()));
        }
        h.update(self.rk);
        for n in [self.ns, self.nr, self.pn] {
            h.update(n.to_be_bytes());
        }
        for ((dh, n), mk) in &self.skipped {
            h.update(dh);
            h.update(n.to_be_bytes());
            h.update(mk);
        }
        h.update(&self.ad);
        h.finalize().into()
    }

    /// How many skipped message keys are stored.
    pub fn skipped_keys(&self) -> usize {
        self.skipped.len()
    }

    /// Signal §3.4 `RatchetEncrypt`: the serialised message of this profile.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, E2eError> {
        let Some(cks) = self.cks else {
            return Err(E2eError::Policy {
                detail: "no sending chain yet: the peer has not answered".into(),
            });
        };
        let (next, mk) = kdf_ck(&cks);
        self.cks = Some(next);
        let n = self.ns;
        self.ns =
            self.ns.checked_add(1).ok_or(E2eError::Policy { detail: "sending chain exhausted".into() })?;
        let (enc, auth, iv) = message_keys(&mk, self.profile.key_info());
        let ciphertext = aes_cbc_encrypt(&enc, &iv, plaintext);
        Ok(self.profile.seal(&self.mac_ad(true), &auth, n, self.pn, &self.dhs_pub, ciphertext))
    }

    /// What the *receiver* of this session can make on its own: the next message of the peer's
    /// current sending chain, encrypting `plaintext`. Every key involved is one the receiver
    /// holds (the MACs are symmetric), so the result is indistinguishable from a message the
    /// peer sent — which is what makes OMEMO messages deniable. `None` before the peer sent
    /// anything.
    pub fn forge_incoming(&self, plaintext: &[u8]) -> Option<Vec<u8>> {
        let (ckr, dhr) = (self.ckr?, self.dhr?);
        let (_, mk) = kdf_ck(&ckr);
        let (enc, auth, iv) = message_keys(&mk, self.profile.key_info());
        let ciphertext = aes_cbc_encrypt(&enc, &iv, plaintext);
        Some(self.profile.seal(&self.mac_ad(false), &auth, self.nr, 0, &dhr, ciphertext))
    }

    /// Signal §3.5 `RatchetDecrypt` of a serialised message of this profile. The RNG supplies
    /// the fresh key pair of a DH ratchet step (`GENERATE_DH`): deriving it from the state
    /// instead would let a thief of the state follow every future step.
    ///
    /// All or nothing: the work is done on a copy that replaces the state only once the
    /// message authenticated, and the fresh key pair is drawn only then, so a message that
    /// fails (a forgery, or one tried against a session it does not belong to) changes
    /// neither the state nor the RNG stream.
    pub fn decrypt(&mut self, bytes: &[u8], rng: &mut dyn RngCore) -> Result<Vec<u8>, E2eError> {
        let m = self.profile.parse(bytes)?;
        // A skipped key: try it, and forget it only if the message authenticates.
        if let Some(pos) = self.skipped.iter().position(|(k, _)| *k == (m.dh, m.n)) {
            let mk = self.skipped[pos].1;
            let plaintext = self.open(&mk, &m)?;
            self.skipped.remove(pos);
            return Ok(plaintext);
        }
        let mut trial = self.clone();
        let step = trial.dhr != Some(m.dh);
        if step {
            trial.skip(m.pn)?;
            trial.dh_ratchet_receiving(&m.dh)?;
        }
        trial.skip(m.n)?;
        let ckr = trial
            .ckr
            .ok_or(E2eError::Rejected { reason: "no-message-key", detail: "no receiving chain".into() })?;
        if m.n < trial.nr {
            return Err(E2eError::Rejected {
                reason: "no-message-key",
                detail: format!("message {} of this chain was already read or its key discarded", m.n),
            });
        }
        let (next, mk) = kdf_ck(&ckr);
        trial.ckr = Some(next);
        trial.nr += 1;
        let plaintext = trial.open(&mk, &m)?;
        if step {
            trial.dh_ratchet_sending(random_bytes(rng))?;
        }
        *self = trial;
        Ok(plaintext)
    }

    /// [`Ratchet::decrypt`] of an already parsed `OMEMOAuthenticatedMessage` (OMEMO 2).
    pub fn decrypt_authenticated(
        &mut self,
        outer: &OmemoAuthenticatedMessage,
        rng: &mut dyn RngCore,
    ) -> Result<Vec<u8>, E2eError> {
        self.decrypt(&outer.encode_to_vec(), rng)
    }

    fn open(&self, mk: &[u8; 32], m: &Parsed) -> Result<Vec<u8>, E2eError> {
        let (enc, auth, iv) = message_keys(mk, self.profile.key_info());
        let expected = hmac_trunc(&auth, &[&self.mac_ad(false), &m.authenticated], self.profile.mac_len());
        if !equal(&expected, &m.mac) {
            return Err(E2eError::Rejected { reason: "bad-mac", detail: "ratchet message MAC".into() });
        }
        aes_cbc_decrypt(&enc, &iv, &m.ciphertext)
    }

    /// Signal §3.5 `SkipMessageKeys`, bounded by MAX_SKIP and the FIFO store.
    fn skip(&mut self, until: u32) -> Result<(), E2eError> {
        let Some(mut ckr) = self.ckr else { return Ok(()) };
        if until > self.nr.saturating_add(MAX_SKIP) {
            return Err(E2eError::Rejected {
                reason: "too-many-skipped",
                detail: format!("message {until} would skip more than {MAX_SKIP} keys"),
            });
        }
        let Some(dhr) = self.dhr else { return Ok(()) };
        while self.nr < until {
            let (next, mk) = kdf_ck(&ckr);
            ckr = next;
            if self.skipped.len() >= MAX_STORED {
                self.skipped.pop_front();
            }
            self.skipped.push_back(((dhr, self.nr), mk));
            self.nr += 1;
        }
        self.ckr = Some(ckr);
        Ok(())
    }

    /// Signal §3.5 `DHRatchet`, its first half: the peer's new ratchet key `dh` and the
    /// receiving chain it opens.
    fn dh_ratchet_receiving(&mut self, dh: &[u8; 32]) -> Result<(), E2eError> {
        self.pn = self.ns;
        self.ns = 0;
        self.nr = 0;
        self.dhr = Some(*dh);
        let (rk, ckr) = kdf_rk(&self.rk, &contributory(&self.dhs, dh)?, self.profile.root_info());
        self.rk = rk;
        self.ckr = Some(ckr);
        Ok(())
    }

    /// Signal §3.5 `DHRatchet`, its second half: `fresh` as the new sending private key and
    /// the sending chain it opens with the peer's ratchet key.
    fn dh_ratchet_sending(&mut self, fresh: [u8; 32]) -> Result<(), E2eError> {
        let dh = self.dhr.ok_or(E2eError::Missing { what: "peer ratchet key" })?;
        self.dhs = StaticSecret::from(fresh);
        self.dhs_pub = PublicKey::from(&self.dhs).to_bytes();
        let (rk, cks) = kdf_rk(&self.rk, &contributory(&self.dhs, &dh)?, self.profile.root_info());
        self.rk = rk;
        self.cks = Some(cks);
        Ok(())
    }
}

fn contributory(secret: &StaticSecret, public: &[u8; 32]) -> Result<[u8; 32], E2eError> {
    let shared = secret.diffie_hellman(&PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(E2eError::Rejected { reason: "weak-key", detail: "a low-order ratchet key".into() });
    }
    Ok(shared.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OMEMO 0.3 authenticates `sender || receiver` (libsignal); OMEMO 2 `initiator || responder`.
    #[test]
    fn mac_associated_data_order() {
        let (a_ik, b_ik) = ([[5u8].as_slice(), &[1u8; 32]].concat(), [[5u8].as_slice(), &[2u8; 32]].concat());
        let ab = [a_ik.as_slice(), &b_ik].concat();
        let ba = [b_ik.as_slice(), &a_ik].concat();
        let spk = StaticSecret::from([9u8; 32]);
        for (profile, alice_sends, alice_reads, bob_sends, bob_reads) in
            [(Profile::Legacy, &ab, &ba, &ba, &ab), (Profile::Omemo2, &ab, &ab, &ab, &ab)]
        {
            let alice = Ratchet { initiator: true, ..Ratchet::init_bob(profile, &[0; 32], ab.clone(), &spk) };
            let bob = Ratchet::init_bob(profile, &[0; 32], ab.clone(), &spk);
            assert_eq!(&alice.mac_ad(true), alice_sends, "{profile:?}");
            assert_eq!(&alice.mac_ad(false), alice_reads, "{profile:?}");
            assert_eq!(&bob.mac_ad(true), bob_sends, "{profile:?}");
            assert_eq!(&bob.mac_ad(false), bob_reads, "{profile:?}");
        }
    }
}
