//! §"Authenticated Key Exchange (AKE)" of OTR v3: D-H Commit, D-H Key, Reveal Signature,
//! Signature, with the authentication state machine of §"The protocol state machine"
//! ("Receiving a D-H Commit Message" … "Receiving a Signature Message").

use num_bigint::BigUint;
use rand_core::RngCore;

use super::crypto::{DhKey, PrivateKey, PublicKey, check_group_element};
use crate::kit::crypto::{aes_ctr, equal, hmac_sha256, sha256};
use super::wire::{Message, Reader, Writer, mpi_bytes};
use crate::E2eError;

/// §"Computing AES keys, MAC keys, and the secure session id": the values derived from s.
#[derive(Clone)]
pub struct AkeKeys {
    /// The secure session id (first 64 bits of h2(0x00)).
    pub ssid: [u8; 8],
    c: [u8; 16],
    c_prime: [u8; 16],
    m1: [u8; 32],
    m2: [u8; 32],
    m1_prime: [u8; 32],
    m2_prime: [u8; 32],
}

impl core::fmt::Debug for AkeKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AkeKeys").field("ssid", &self.ssid).finish_non_exhaustive()
    }
}

/// `secbytes`: s as a minimum-length MPI.
pub fn secbytes(s: &BigUint) -> Vec<u8> {
    let mut w = Writer::default();
    w.mpi(s);
    w.into_bytes()
}

impl AkeKeys {
    fn derive(s: &BigUint) -> Self {
        let sb = secbytes(s);
        let h2 = |b: u8| sha256(&[&[b], &sb]);
        let (h0, h1) = (h2(0x00), h2(0x01));
        let mut ssid = [0u8; 8];
        ssid.copy_from_slice(&h0[..8]);
        let (mut c, mut c_prime) = ([0u8; 16], [0u8; 16]);
        c.copy_from_slice(&h1[..16]);
        c_prime.copy_from_slice(&h1[16..]);
        AkeKeys { ssid, c, c_prime, m1: h2(0x02), m2: h2(0x03), m1_prime: h2(0x04), m2_prime: h2(0x05) }
    }
}

/// What a finished AKE hands to the message state: everything a Data Message needs.
#[derive(Debug, Clone)]
pub struct Established {
    /// Our D-H key used in the AKE (keyid `our_keyid`).
    pub our_dh: DhKey,
    /// Its keyid.
    pub our_keyid: u32,
    /// Their D-H public key from the AKE.
    pub their_y: BigUint,
    /// Its keyid.
    pub their_keyid: u32,
    /// Their long-term public key.
    pub their_pub: PublicKey,
    /// The secure session id.
    pub ssid: [u8; 8],
    /// Whether we sent the Reveal Signature message (we started the AKE).
    pub we_revealed: bool,
}

/// The authentication state (§"Authentication state").
#[derive(Clone, Default)]
pub enum AuthState {
    /// No AKE in progress.
    #[default]
    None,
    /// We sent a D-H Commit.
    AwaitingDhKey {
        /// Our D-H key x.
        x: DhKey,
        /// The AES key r that hides g^x.
        r: [u8; 16],
        /// The commit we sent (to resend).
        commit: Message,
    },
    /// We answered a D-H Commit with a D-H Key.
    AwaitingRevealSig {
        /// Our D-H key y.
        y: DhKey,
        /// Their encrypted g^x.
        encrypted_gx: Vec<u8>,
        /// Their hashed g^x.
        hashed_gx: Vec<u8>,
        /// The D-H Key we sent (to resend).
        dh_key: Message,
    },
    /// We sent a Reveal Signature.
    AwaitingSig {
        /// Our D-H key x.
        x: DhKey,
        /// Their g^y.
        gy: BigUint,
        /// The keys derived from s.
        keys: Box<AkeKeysBox>,
        /// The Reveal Signature we sent (to resend).
        reveal: Message,
    },
}

/// The AKE keys, boxed (they are large and the state enum should stay small).
#[derive(Debug, Clone)]
pub struct AkeKeysBox(AkeKeys);

impl core::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            AuthState::None => "AUTHSTATE_NONE",
            AuthState::AwaitingDhKey { .. } => "AUTHSTATE_AWAITING_DHKEY",
            AuthState::AwaitingRevealSig { .. } => "AUTHSTATE_AWAITING_REVEALSIG",
            AuthState::AwaitingSig { .. } => "AUTHSTATE_AWAITING_SIG",
        })
    }
}

/// What the AKE state machine does with a message.
#[derive(Debug, Default)]
pub struct Step {
    /// A message to send back.
    pub reply: Option<Message>,
    /// The AKE finished.
    pub established: Option<Established>,
}

/// The keyid we use for the AKE's D-H key (§"Key Management": the AKE sends
/// `our_dh[our_keyid-1]` with `our_keyid = 2`).
pub const AKE_KEYID: u32 = 1;

fn gx_mpi(x: &DhKey) -> Vec<u8> {
    secbytes(&x.public)
}

/// Starts an AKE (we are "Bob" in the spec's naming): the D-H Commit.
pub fn commit(state: &mut AuthState, rng: &mut dyn RngCore) -> Message {
    let x = DhKey::generate(rng);
    let mut r = [0u8; 16];
    rng.fill_bytes(&mut r);
    let gxmpi = gx_mpi(&x);
    let mut encrypted_gx = gxmpi.clone();
    aes_ctr(&r, &[0u8; 16], &mut encrypted_gx);
    let commit = Message::DhCommit { encrypted_gx, hashed_gx: sha256(&[&gxmpi]).to_vec() };
    *state = AuthState::AwaitingDhKey { x, r, commit: commit.clone() };
    commit
}

/// The signed part of Reveal Signature / Signature: `X = pub, keyid, sig(M)` where
/// `M = HMAC_m1(g^a, g^b, pub, keyid)`, encrypted with `c`, MACed with `m2`.
fn authenticator(
    ours: &PrivateKey,
    own_g: &BigUint,
    their_g: &BigUint,
    keyid: u32,
    (c, m1, m2): (&[u8; 16], &[u8; 32], &[u8; 32]),
    rng: &mut dyn RngCore,
) -> (Vec<u8>, [u8; 20]) {
    let mut pubw = Writer::default();
    ours.public.encode(&mut pubw);
    let mut mw = Writer::default();
    mw.mpi(own_g).mpi(their_g).raw(pubw.bytes()).int(keyid);
    let m = hmac_sha256(m1, &[mw.bytes()]);
    let mut x = Writer::default();
    x.raw(pubw.bytes()).int(keyid).raw(&ours.sign(&m, rng));
    let mut encrypted = x.into_bytes();
    aes_ctr(c, &[0u8; 16], &mut encrypted);
    let mut data = Writer::default();
    data.data(&encrypted);
    let full = hmac_sha256(m2, &[data.bytes()]);
    let mut mac = [0u8; 20];
    mac.copy_from_slice(&full[..20]);
    (encrypted, mac)
}

/// Checks and opens the other side's authenticator. `sender_g` is the sender's D-H public key,
/// `receiver_g` ours.
fn open_authenticator(
    encrypted: &[u8],
    mac: &[u8; 20],
    sender_g: &BigUint,
    receiver_g: &BigUint,
    (c, m1, m2): (&[u8; 16], &[u8; 32], &[u8; 32]),
) -> Result<(PublicKey, u32), E2eError> {
    let mut data = Writer::default();
    data.data(encrypted);
    if !equal(&hmac_sha256(m2, &[data.bytes()])[..20], mac) {
        return Err(E2eError::Rejected { reason: "bad-mac", detail: "AKE signature MAC".into() });
    }
    let mut x = encrypted.to_vec();
    aes_ctr(c, &[0u8; 16], &mut x);
    let mut r = Reader::new("AKE signature", &x);
    let kind = r.short()?;
    if kind != 0 {
        return Err(E2eError::Rejected {
            reason: "unsupported-key",
            detail: format!("public key type {kind}"),
        });
    }
    let their_pub = PublicKey { p: r.mpi()?, q: r.mpi()?, g: r.mpi()?, y: r.mpi()? };
    let keyid = r.int()?;
    // Keyids count up from here and must stay representable.
    if keyid == 0 || keyid > u32::MAX / 2 {
        return Err(E2eError::Malformed { what: "AKE signature", detail: "keyid 0".into() });
    }
    let qlen = mpi_bytes(&their_pub.q).len();
    let sig = r.take(2 * qlen)?;
    r.finish()?;
    let mut pubw = Writer::default();
    their_pub.encode(&mut pubw);
    let mut mw = Writer::default();
    mw.mpi(sender_g).mpi(receiver_g).raw(pubw.bytes()).int(keyid);
    their_pub.verify(&hmac_sha256(m1, &[mw.bytes()]), sig)?;
    Ok((their_pub, keyid))
}

/// Feeds one AKE message to the state machine. Messages the spec says to ignore give an
/// empty [`Step`]; messages that fail verification give an error and leave the state as the
/// spec says ("regardless of whether the signature verifications succeed, the authstate
/// variable is transitioned to AUTHSTATE_NONE" for Reveal Signature and Signature).
pub fn receive(
    state: &mut AuthState,
    ours: &PrivateKey,
    message: &Message,
    rng: &mut dyn RngCore,
) -> Result<Step, E2eError> {
    match message {
        Message::DhCommit { encrypted_gx, hashed_gx } => {
            if hashed_gx.len() != 32 {
                return Err(E2eError::Malformed {
                    what: "D-H Commit",
                    detail: format!("hashed g^x of {} bytes", hashed_gx.len()),
                });
            }
            if let AuthState::AwaitingDhKey { x, commit, .. } = state {
                // "The trickiest transition": the higher hashed g^x keeps its commit.
                let ours_hash = sha256(&[&gx_mpi(x)]);
                if ours_hash.as_slice() > hashed_gx.as_slice() {
                    return Ok(Step { reply: Some(commit.clone()), established: None });
                }
            }
            if let AuthState::AwaitingRevealSig { y, dh_key, .. } = state {
                // Retransmit the same D-H Key, but use the new commit.
                let (y, dh_key) = (y.clone(), dh_key.clone());
                *state = AuthState::AwaitingRevealSig {
                    y,
                    encrypted_gx: encrypted_gx.clone(),
                    hashed_gx: hashed_gx.clone(),
                    dh_key: dh_key.clone(),
                };
                return Ok(Step { reply: Some(dh_key), established: None });
            }
            let y = DhKey::generate(rng);
            let dh_key = Message::DhKey { gy: y.public.clone() };
            *state = AuthState::AwaitingRevealSig {
                y,
                encrypted_gx: encrypted_gx.clone(),
                hashed_gx: hashed_gx.clone(),
                dh_key: dh_key.clone(),
            };
            Ok(Step { reply: Some(dh_key), established: None })
        }
        Message::DhKey { gy } => match state {
            AuthState::AwaitingDhKey { x, r, .. } => {
                check_group_element("g^y", gy)?;
                let keys = AkeKeys::derive(&x.shared(gy)?);
                let (encrypted_sig, mac) =
                    authenticator(ours, &x.public, gy, AKE_KEYID, (&keys.c, &keys.m1, &keys.m2), rng);
                let reveal = Message::RevealSig { r: r.to_vec(), encrypted_sig, mac };
                *state = AuthState::AwaitingSig {
                    x: x.clone(),
                    gy: gy.clone(),
                    keys: Box::new(AkeKeysBox(keys)),
                    reveal: reveal.clone(),
                };
                Ok(Step { reply: Some(reveal), established: None })
            }
            AuthState::AwaitingSig { gy: known, reveal, .. } if known == gy => {
                Ok(Step { reply: Some(reveal.clone()), established: None })
            }
            _ => Ok(Step::default()),
        },
        Message::RevealSig { r, encrypted_sig, mac } => {
            // In any other state the message is ignored, and the AKE in progress kept.
            if !matches!(state, AuthState::AwaitingRevealSig { .. }) {
                return Ok(Step::default());
            }
            let AuthState::AwaitingRevealSig { y, encrypted_gx, hashed_gx, .. } = core::mem::take(state)
            else {
                return Ok(Step::default());
            };
            let r: [u8; 16] = r.as_slice().try_into().map_err(|_| E2eError::Malformed {
                what: "Reveal Signature",
                detail: format!("revealed key of {} bytes", r.len()),
            })?;
            let mut gxmpi = encrypted_gx;
            aes_ctr(&r, &[0u8; 16], &mut gxmpi);
            if !equal(&sha256(&[&gxmpi]), &hashed_gx) {
                return Err(E2eError::Rejected {
                    reason: "bad-commitment",
                    detail: "g^x does not match its hash".into(),
                });
            }
            let mut rd = Reader::new("g^x", &gxmpi);
            let gx = rd.mpi()?;
            rd.finish()?;
            check_group_element("g^x", &gx)?;
            let keys = AkeKeys::derive(&y.shared(&gx)?);
            let (their_pub, their_keyid) =
                open_authenticator(encrypted_sig, mac, &gx, &y.public, (&keys.c, &keys.m1, &keys.m2))?;
            let (encrypted_sig, mac) = authenticator(
                ours,
                &y.public,
                &gx,
                AKE_KEYID,
                (&keys.c_prime, &keys.m1_prime, &keys.m2_prime),
                rng,
            );
            Ok(Step {
                reply: Some(Message::Sig { encrypted_sig, mac }),
                established: Some(Established {
                    our_dh: y,
                    our_keyid: AKE_KEYID,
                    their_y: gx,
                    their_keyid,
                    their_pub,
                    ssid: keys.ssid,
                    we_revealed: false,
                }),
            })
        }
        Message::Sig { encrypted_sig, mac } => {
            if !matches!(state, AuthState::AwaitingSig { .. }) {
                return Ok(Step::default());
            }
            let AuthState::AwaitingSig { x, gy, keys, .. } = core::mem::take(state) else {
                return Ok(Step::default());
            };
            let keys = keys.0;
            let (their_pub, their_keyid) = open_authenticator(
                encrypted_sig,
                mac,
                &gy,
                &x.public,
                (&keys.c_prime, &keys.m1_prime, &keys.m2_prime),
            )?;
            Ok(Step {
                reply: None,
                established: Some(Established {
                    our_dh: x,
                    our_keyid: AKE_KEYID,
                    their_y: gy,
                    their_keyid,
                    their_pub,
                    ssid: keys.ssid,
                    we_revealed: true,
                }),
            })
        }
        Message::Data(_) => Ok(Step::default()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    /// A Reveal Signature whose keyid is near the end of the range is refused (keyids count
    /// up from it), and a message for another state leaves the AKE in progress alone.
    #[test]
    fn huge_keyids_and_stray_messages() {
        let rng = &mut ChaCha20Rng::seed_from_u64(1);
        let (alice, bob) = (PrivateKey::generate(rng), PrivateKey::generate(rng));
        let mut bob_state = AuthState::None;
        let commit = commit(&mut bob_state, rng);
        let mut alice_state = AuthState::None;
        let Some(Message::DhKey { gy }) = receive(&mut alice_state, &alice, &commit, rng).unwrap().reply
        else {
            panic!("no D-H Key");
        };
        // A Signature now is for another state: ignored, the AKE stays.
        let stray = Message::Sig { encrypted_sig: vec![1, 2, 3], mac: [0; 20] };
        assert!(receive(&mut alice_state, &alice, &stray, rng).unwrap().reply.is_none());
        assert!(matches!(alice_state, AuthState::AwaitingRevealSig { .. }));
        let AuthState::AwaitingDhKey { x, r, .. } = &bob_state else { panic!("bob is not waiting") };
        let keys = AkeKeys::derive(&x.shared(&gy).unwrap());
        let (encrypted_sig, mac) =
            authenticator(&bob, &x.public, &gy, u32::MAX, (&keys.c, &keys.m1, &keys.m2), rng);
        let reveal = Message::RevealSig { r: r.to_vec(), encrypted_sig, mac };
        let err = receive(&mut alice_state, &alice, &reveal, rng).unwrap_err();
        assert_eq!(err.code(), "malformed", "{err}");
    }
}
