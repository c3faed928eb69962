//! The sessions with one peer device: the current one and the states kept beside it.
//!
//! XEP-0384 §usecases-receiving (0.3 and current): a received key exchange builds a new
//! session, and "if the client already has a session with the sender's device, it MUST
//! replace this session with the newly built session". Taken literally, a simultaneous start
//! breaks both sides for good: Alice and Bob each send an `OMEMOKeyExchange` before either
//! has seen the other's, each then replaces the session its own key exchange started with the
//! one the peer's key exchange builds — and each side's new session is the partner of the
//! session the other side just threw away. Every later message fails its MAC.
//!
//! Deployed clients do not throw the replaced session away. libsignal's `SessionRecord`
//! (Conversations, and every OMEMO 0.3 client built on libsignal) keeps the current state
//! plus up to 40 previous ones: a key exchange makes its new session current and archives
//! the old one; a message is tried against the current state, then each previous one, newest
//! first, and the one that reads it becomes current again ("promoted"), so the state that
//! works is the one we send with. A key exchange whose ephemeral key started a state we hold
//! (it is repeated until answered) is read by that state, not built again. We do the same,
//! with the same bound ([`MAX_PREVIOUS`]): the replaced session is still replaced for sending,
//! as the XEP says, and kept only to read what its partner sends.
//!
//! Every trial works on a copy of the state, which replaces it only when the message
//! authenticated: a message that no state reads changes nothing.

use std::collections::VecDeque;

use rand_core::RngCore;

use super::ratchet::Ratchet;
use super::x3dh::KeyExchangeHeader;
use crate::E2eError;

/// How many previous states a peer device's record keeps beside the current one (libsignal's
/// `ARCHIVED_STATES_MAX_LENGTH`); the oldest beyond it is forgotten. Each is a whole ratchet
/// state (its skipped keys included), so this also bounds what a full-state thief gets.
pub const MAX_PREVIOUS: usize = 40;

/// One Double Ratchet session with a peer device.
#[derive(Debug, Clone)]
pub struct Session {
    /// The ratchet.
    pub ratchet: Ratchet,
    /// The X3DH header we repeat until the peer answers (we initiated).
    pub pending_kex: Option<KeyExchangeHeader>,
    /// The initiator's ephemeral key (they initiated): a repeated key exchange with the same
    /// key is not a new session.
    pub their_ek: Option<[u8; 32]>,
}

/// The sessions with one peer device: the current state, which we send with, and the
/// previous ones, newest first, at most [`MAX_PREVIOUS`].
#[derive(Debug, Clone)]
pub struct SessionRecord {
    current: Session,
    previous: VecDeque<Session>,
}

impl SessionRecord {
    /// A record holding one session.
    pub fn new(current: Session) -> Self {
        SessionRecord { current, previous: VecDeque::new() }
    }

    /// The state we send with.
    pub fn current(&self) -> &Session {
        &self.current
    }

    /// The state we send with, to ratchet it forward.
    pub fn current_mut(&mut self) -> &mut Session {
        &mut self.current
    }

    /// How many previous states are kept.
    #[cfg(test)]
    pub fn previous_len(&self) -> usize {
        self.previous.len()
    }

    /// A digest of every state in order, for tests that check a record did not change.
    #[cfg(test)]
    pub fn digest(&self) -> Vec<[u8; 32]> {
        use sha2::Digest;
        core::iter::once(&self.current)
            .chain(&self.previous)
            .map(|s| {
                let mut h = sha2::Sha256::new();
                h.update(s.ratchet.digest());
                h.update(s.their_ek.unwrap_or_default());
                if let Some(k) = &s.pending_kex {
                    h.update(k.pk_id.to_be_bytes());
                    h.update(k.spk_id.to_be_bytes());
                    h.update(k.ik);
                    h.update(k.ek);
                }
                h.finalize().into()
            })
            .collect()
    }

    /// §usecases-receiving: a newly built session replaces the current one, which is kept as
    /// the newest previous state (the oldest beyond [`MAX_PREVIOUS`] is forgotten).
    pub fn replace(&mut self, session: Session) {
        let old = core::mem::replace(&mut self.current, session);
        self.previous.push_front(old);
        self.previous.truncate(MAX_PREVIOUS);
    }

    /// The state a key exchange with ephemeral key `ek` started, if we hold it: `0` is the
    /// current state, `i + 1` the `i`-th previous one.
    pub fn started_by(&self, ek: &[u8; 32]) -> Option<usize> {
        core::iter::once(&self.current).chain(&self.previous).position(|s| s.their_ek.as_ref() == Some(ek))
    }

    /// Reads the ratchet message of a repeated key exchange with the state at `at`
    /// ([`SessionRecord::started_by`]); on success that state becomes current.
    pub fn decrypt_at(&mut self, at: usize, bytes: &[u8], rng: &mut dyn RngCore) -> Result<Vec<u8>, E2eError> {
        let state = if at == 0 { Some(&self.current) } else { self.previous.get(at - 1) };
        let state = state.ok_or(E2eError::Missing { what: "session state" })?;
        let (trial, plaintext) = Self::trial(state, bytes, rng)?;
        self.promote(at, trial);
        Ok(plaintext)
    }

    /// Reads a ratchet message (not a key exchange): the current state first, then each
    /// previous one, newest first; the state that reads it becomes current, and since the
    /// peer answered through it, our key exchange on it is complete. When none reads it, the
    /// current state's refusal is returned — except that a message some previous state had
    /// already read is reported as such (`no-message-key`), not as a bad MAC.
    pub fn decrypt(&mut self, bytes: &[u8], rng: &mut dyn RngCore) -> Result<Vec<u8>, E2eError> {
        let first = match Self::trial(&self.current, bytes, rng) {
            Ok((trial, plaintext)) => {
                self.promote(0, trial);
                return Ok(plaintext);
            }
            Err(e) => e,
        };
        let mut replay = None;
        for (i, state) in self.previous.iter().enumerate() {
            match Self::trial(state, bytes, rng) {
                Ok((trial, plaintext)) => {
                    self.promote(i + 1, trial);
                    return Ok(plaintext);
                }
                Err(e) if replay.is_none() && e.code() == "no-message-key" => replay = Some(e),
                Err(_) => {}
            }
        }
        Err(match replay {
            Some(replay) if first.code() == "bad-mac" => replay,
            _ => first,
        })
    }

    /// Decrypts with a copy of `state`: the copy, advanced, and the plaintext.
    fn trial(state: &Session, bytes: &[u8], rng: &mut dyn RngCore) -> Result<(Session, Vec<u8>), E2eError> {
        let mut trial = state.clone();
        let plaintext = trial.ratchet.decrypt(bytes, rng)?;
        Ok((trial, plaintext))
    }

    /// Makes `state` (the advanced copy of the state at `at`) current; a previous state
    /// promoted leaves its place, and the current one becomes the newest previous state.
    fn promote(&mut self, at: usize, mut state: Session) {
        // The peer's message came through this state: it has our key exchange.
        state.pending_kex = None;
        if at == 0 {
            self.current = state;
            return;
        }
        self.previous.remove(at - 1);
        let old = core::mem::replace(&mut self.current, state);
        self.previous.push_front(old);
    }
}
