//! The keys both OpenPGP engines hold for other accounts, and how far each is trusted.
//!
//! OpenPGP names a key by its fingerprint and has no device id of its own, so a "device" here
//! is a key: [`crate::Event::TrustChanged`] reports `device` = `fingerprint` = the XEP-0373 v4
//! fingerprint string. The policies read as for OMEMO with that reading: BTBV trusts a new key
//! blindly until the user verified one key of the contact, then only verified keys; manual
//! trusts only verified keys. TOFU pins the first key *set* seen for an account (the first
//! metadata list an OX engine reads, the first keyserver answer an XEP-0027 engine gets, see
//! [`KeyRing::pin_first`]): those keys are trusted blindly, any key that appears later is
//! `Untrusted` and reported with the alert `new-key-untrusted` until the user verifies it.
//! (Trusting every new key on first sight would make TOFU the same as BTBV before
//! verification, and a substituted key would be trusted as readily as a new device.)

use std::collections::{BTreeMap, BTreeSet};

use jid::BareJid;
use pgp::composed::SignedPublicKey;

use super::keys::{fingerprint_hex, normalise_fingerprint};
use crate::{Event, OutOfBand, Output, Trust, TrustPolicy, VerificationResult};

/// How much a key is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TrustState {
    /// Trusted without verification (BTBV before any verification of the contact, TOFU).
    Blind,
    /// Verified out of band.
    Verified,
    /// Not trusted.
    Untrusted,
}

impl TrustState {
    pub(crate) fn trust(self) -> Trust {
        match self {
            TrustState::Blind => Trust::Unverified,
            TrustState::Verified => Trust::Verified,
            TrustState::Untrusted => Trust::Untrusted,
        }
    }
}

/// A certificate of another account (or of another device of ours).
#[derive(Debug, Clone)]
pub(crate) struct PeerKey {
    pub(crate) cert: SignedPublicKey,
    pub(crate) state: TrustState,
}

/// Every key seen, by account and fingerprint.
#[derive(Debug, Clone)]
pub(crate) struct KeyRing {
    policy: TrustPolicy,
    keys: BTreeMap<BareJid, BTreeMap<String, PeerKey>>,
    verified_contacts: BTreeSet<BareJid>,
    /// TOFU: the first key set seen for each account.
    pinned: BTreeMap<BareJid, BTreeSet<String>>,
}

fn trust_event(owner: &BareJid, fpr: &str, state: TrustState) -> Event {
    Event::TrustChanged {
        peer: owner.clone(),
        device: fpr.to_owned(),
        fingerprint: fpr.to_owned(),
        trust: state.trust(),
    }
}

impl KeyRing {
    pub(crate) fn new(policy: TrustPolicy) -> Self {
        KeyRing { policy, keys: BTreeMap::new(), verified_contacts: BTreeSet::new(), pinned: BTreeMap::new() }
    }

    /// TOFU: records `fprs` as the first key set of `owner`, unless one was pinned already.
    /// Called by the engines when they first learn which keys an account has.
    pub(crate) fn pin_first(&mut self, owner: &BareJid, fprs: &BTreeSet<String>) {
        self.pinned.entry(owner.clone()).or_insert_with(|| fprs.clone());
    }

    /// Records a certificate for `owner` (binding signatures already checked); a new key gets
    /// its trust from the policy and is reported. Returns its fingerprint and trust.
    pub(crate) fn observe(
        &mut self,
        owner: &BareJid,
        cert: SignedPublicKey,
        out: &mut Output,
    ) -> (String, TrustState) {
        let fpr = fingerprint_hex(&cert);
        let keys = self.keys.entry(owner.clone()).or_default();
        if let Some(known) = keys.get_mut(&fpr) {
            // The same key again (perhaps with newer self-signatures): its trust stays.
            known.cert = cert;
            return (fpr, known.state);
        }
        let state = match self.policy {
            TrustPolicy::Btbv if self.verified_contacts.contains(owner) => TrustState::Untrusted,
            TrustPolicy::Btbv => TrustState::Blind,
            TrustPolicy::Tofu => match self.pinned.get(owner) {
                Some(first) if !first.contains(&fpr) => {
                    out.events.push(Event::Alert {
                        reason: "new-key-untrusted",
                        detail: format!("{owner} has a new key {fpr} not in the first key set seen"),
                    });
                    TrustState::Untrusted
                }
                _ => TrustState::Blind,
            },
            TrustPolicy::Manual => TrustState::Untrusted,
        };
        keys.insert(fpr.clone(), PeerKey { cert, state });
        out.events.push(trust_event(owner, &fpr, state));
        (fpr, state)
    }

    pub(crate) fn get(&self, owner: &BareJid, fpr: &str) -> Option<&PeerKey> {
        self.keys.get(owner).and_then(|k| k.get(fpr))
    }

    pub(crate) fn has(&self, owner: &BareJid, fpr: &str) -> bool {
        self.get(owner, fpr).is_some()
    }

    pub(crate) fn trust_of(&self, owner: &BareJid, fpr: &str) -> Trust {
        self.get(owner, fpr).map_or(Trust::Unverified, |k| k.state.trust())
    }

    /// Fingerprint comparison: every key of `peer` that is `current` (announced in its
    /// metadata list, OX; listed by the keyserver, XEP-0027) and that we hold must be one the
    /// peer shows out of band (spaces and case ignored). Keys it shows are verified, the
    /// others distrusted. Keys no longer current (rotated away, or a stray key seen once) are
    /// not compared: they are not used, and would make an honest peer look like a mismatch.
    pub(crate) fn verify(&mut self, peer: &BareJid, oob: &OutOfBand, current: &BTreeSet<String>) -> Output {
        let mut out = Output::default();
        self.verified_contacts.insert(peer.clone());
        let says: BTreeSet<String> = oob.peer_says.iter().map(|s| normalise_fingerprint(s)).collect();
        let mut result = VerificationResult::Match;
        let mut seen = 0;
        for (fpr, key) in self.keys.get_mut(peer).into_iter().flatten().filter(|(f, _)| current.contains(*f))
        {
            seen += 1;
            let before = key.state;
            key.state = if says.contains(fpr) { TrustState::Verified } else { TrustState::Untrusted };
            if key.state != before {
                out.events.push(trust_event(peer, fpr, key.state));
            }
            if key.state == TrustState::Untrusted {
                result = VerificationResult::Mismatch;
                out.events.push(Event::Alert {
                    reason: "fingerprint-mismatch",
                    detail: format!("key {fpr} of {peer} is not one the peer shows"),
                });
            }
        }
        if seen == 0 {
            result = VerificationResult::Mismatch;
            out.events.push(Event::Alert {
                reason: "nothing-to-verify",
                detail: format!("no key of {peer} seen yet"),
            });
        }
        out.events.push(Event::Verification { peer: peer.clone(), result });
        out
    }
}
