//! Trust in peers' keys, and the policies that decide it before the user verified anything
//! ([`TrustPolicy`]: BTBV, TOFU, manual), as the engines that keep per-key trust share them.
//!
//! A [`TrustBook`] holds, per account, the key seen for each device (a device id, a resource,
//! or — where a protocol has no device of its own — the key's fingerprint), with the trust it
//! has. The policies:
//!
//! - *BTBV* (blind trust before verification): a new key is trusted blindly until the user
//!   verified a key of that contact once; from then on new keys are untrusted.
//! - *TOFU*: a new key is trusted blindly — unless a first key *set* was pinned for the account
//!   ([`TrustBook::pin_first`]) and the key is not in it: then it is untrusted, with the alert
//!   `new-key-untrusted`, until the user verifies it.
//! - *Manual*: only keys the user verified are trusted.
//!
//! Under every policy a device that presents a key other than the one seen before is
//! distrusted with the alert `identity-changed`. Every decision is a [`Event::TrustChanged`].
//! The verification ceremony ([`TrustBook::verify`]) compares the keys held for a peer with the
//! fingerprints its devices show out of band: shown → verified, not shown → untrusted (alert
//! `fingerprint-mismatch`).

use core::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use jid::BareJid;

use crate::{Event, Output, Trust, TrustPolicy, VerificationResult};

/// How much a key is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustState {
    /// Trusted without verification (BTBV before the contact was verified; TOFU).
    Blind,
    /// Verified out of band.
    Verified,
    /// Not trusted: the policy's decision, a changed key, or a failed verification.
    Untrusted,
}

impl TrustState {
    /// What the user is shown for a message under a key in this state.
    pub fn trust(self) -> Trust {
        match self {
            TrustState::Blind => Trust::Unverified,
            TrustState::Verified => Trust::Verified,
            TrustState::Untrusted => Trust::Untrusted,
        }
    }
}

/// A key held for one device of an account.
#[derive(Debug, Clone)]
pub struct Known<K> {
    /// The key itself (a certificate, a public key; `()` where the fingerprint is all that
    /// is kept).
    pub key: K,
    /// Its trust.
    pub state: TrustState,
    /// The device as [`Event::TrustChanged`] names it.
    pub device: String,
    /// The fingerprint, as users compare it.
    pub fingerprint: String,
}

impl<K> Known<K> {
    /// A key seen for the first time (its trust is set when the book takes it).
    pub fn new(key: K, device: impl Into<String>, fingerprint: impl Into<String>) -> Self {
        Known { key, state: TrustState::Untrusted, device: device.into(), fingerprint: fingerprint.into() }
    }
}

/// How an engine words its trust alerts (they reach transcripts word for word).
#[derive(Debug)]
pub struct Wording {
    /// The detail of `identity-changed`: (account, device) presents a new key.
    pub changed: fn(&BareJid, &str) -> String,
    /// The detail of `fingerprint-mismatch`: (account, device, fingerprint) is not shown.
    pub mismatch: fn(&BareJid, &str, &str) -> String,
    /// What `nothing-to-verify` says was not seen: "no {unseen} of {peer} seen yet".
    pub unseen: &'static str,
}

impl Wording {
    /// For engines where a key is the device, held by its fingerprint (a key never changes
    /// under its own name: `identity-changed` does not arise).
    pub const KEYS: Wording = Wording {
        changed: |owner, fingerprint| format!("key {fingerprint} of {owner} changed"),
        mismatch: |owner, _, fingerprint| format!("key {fingerprint} of {owner} is not one the peer shows"),
        unseen: "key",
    };
}

/// The keys seen per account and device, their trust, and the policy deciding it.
#[derive(Debug, Clone)]
pub struct TrustBook<D, K = ()> {
    policy: TrustPolicy,
    wording: &'static Wording,
    keys: BTreeMap<BareJid, BTreeMap<D, Known<K>>>,
    /// Contacts the user verified once (BTBV closes for them).
    verified: BTreeSet<BareJid>,
    /// TOFU: the first key set (fingerprints) pinned for an account.
    pinned: BTreeMap<BareJid, BTreeSet<String>>,
}

/// The event reporting `known`'s trust.
fn changed<K>(owner: &BareJid, known: &Known<K>) -> Event {
    Event::TrustChanged {
        peer: owner.clone(),
        device: known.device.clone(),
        fingerprint: known.fingerprint.clone(),
        trust: known.state.trust(),
    }
}

impl<D: Ord + Clone, K> TrustBook<D, K> {
    /// An empty book deciding by `policy`, alerting in `wording`.
    pub fn new(policy: TrustPolicy, wording: &'static Wording) -> Self {
        TrustBook {
            policy,
            wording,
            keys: BTreeMap::new(),
            verified: BTreeSet::new(),
            pinned: BTreeMap::new(),
        }
    }

    /// The policy it decides by.
    pub fn policy(&self) -> TrustPolicy {
        self.policy
    }

    /// TOFU: records `fingerprints` as the first key set of `owner`, unless one was pinned
    /// already.
    pub fn pin_first(&mut self, owner: &BareJid, fingerprints: &BTreeSet<String>) {
        self.pinned.entry(owner.clone()).or_insert_with(|| fingerprints.clone());
    }

    /// The trust the policy gives a key of `owner` seen for the first time (reporting the
    /// TOFU alert, see the module docs).
    pub fn first_sight(&self, owner: &BareJid, fingerprint: &str, out: &mut Output) -> TrustState {
        match self.policy {
            TrustPolicy::Btbv if self.verified.contains(owner) => TrustState::Untrusted,
            TrustPolicy::Btbv => TrustState::Blind,
            TrustPolicy::Tofu => match self.pinned.get(owner) {
                Some(first) if !first.contains(fingerprint) => {
                    out.events.push(Event::Alert {
                        reason: crate::reason::NEW_KEY_UNTRUSTED.code,
                        detail: format!("{owner} has a new key {fingerprint} not in the first key set seen"),
                    });
                    TrustState::Untrusted
                }
                _ => TrustState::Blind,
            },
            // Nothing is trusted before the user verified it.
            TrustPolicy::Manual => TrustState::Untrusted,
        }
    }

    /// Records the key seen for `device` of `owner` and returns its trust: the same
    /// fingerprint as before keeps its trust (the key is updated, say with newer
    /// self-signatures); another one replaces it, untrusted, with the alert `identity-changed`;
    /// a first one gets what the policy gives. A new trust is reported.
    pub fn observe(
        &mut self,
        owner: &BareJid,
        device: D,
        mut seen: Known<K>,
        out: &mut Output,
    ) -> TrustState {
        seen.state = match self.get_mut(owner, &device) {
            Some(known) if known.fingerprint == seen.fingerprint => {
                known.key = seen.key;
                return known.state;
            }
            Some(_) => {
                out.events.push(Event::Alert {
                    reason: crate::reason::IDENTITY_CHANGED.code,
                    detail: (self.wording.changed)(owner, &seen.device),
                });
                TrustState::Untrusted
            }
            None => self.first_sight(owner, &seen.fingerprint, out),
        };
        let state = seen.state;
        self.insert(owner, device, seen, out);
        state
    }

    /// Holds `known` (its trust decided) for `device` of `owner`, reporting its trust.
    pub fn insert(&mut self, owner: &BareJid, device: D, known: Known<K>, out: &mut Output) {
        out.events.push(changed(owner, &known));
        self.keys.entry(owner.clone()).or_default().insert(device, known);
    }

    /// Sets the trust of a key held, reporting it when it changes; returns the trust before.
    pub fn set_state<Q: Ord + ?Sized>(
        &mut self,
        owner: &BareJid,
        device: &Q,
        state: TrustState,
        out: &mut Output,
    ) -> Option<TrustState>
    where
        D: Borrow<Q>,
    {
        let known = self.get_mut(owner, device)?;
        let before = core::mem::replace(&mut known.state, state);
        if before != state {
            out.events.push(changed(owner, known));
        }
        Some(before)
    }

    /// Forgets the key of `device` of `owner`.
    pub fn remove<Q: Ord + ?Sized>(&mut self, owner: &BareJid, device: &Q) -> Option<Known<K>>
    where
        D: Borrow<Q>,
    {
        self.keys.get_mut(owner)?.remove(device)
    }

    /// The key held for `device` of `owner`.
    pub fn get<Q: Ord + ?Sized>(&self, owner: &BareJid, device: &Q) -> Option<&Known<K>>
    where
        D: Borrow<Q>,
    {
        self.keys.get(owner).and_then(|k| k.get(device))
    }

    /// The key held for `device` of `owner`, to change.
    pub fn get_mut<Q: Ord + ?Sized>(&mut self, owner: &BareJid, device: &Q) -> Option<&mut Known<K>>
    where
        D: Borrow<Q>,
    {
        self.keys.get_mut(owner).and_then(|k| k.get_mut(device))
    }

    /// The trust of the key held for `device` of `owner`.
    pub fn state<Q: Ord + ?Sized>(&self, owner: &BareJid, device: &Q) -> Option<TrustState>
    where
        D: Borrow<Q>,
    {
        self.get(owner, device).map(|k| k.state)
    }

    /// What a message under the key of `device` of `owner` is shown with (`Unverified` for a
    /// key not held).
    pub fn trust_of<Q: Ord + ?Sized>(&self, owner: &BareJid, device: &Q) -> Trust
    where
        D: Borrow<Q>,
    {
        self.state(owner, device).map_or(Trust::Unverified, TrustState::trust)
    }

    /// Whether the key of `device` of `owner` is held and untrusted.
    pub fn distrusts<Q: Ord + ?Sized>(&self, owner: &BareJid, device: &Q) -> bool
    where
        D: Borrow<Q>,
    {
        self.state(owner, device) == Some(TrustState::Untrusted)
    }

    /// Whether no key of anyone is held.
    pub fn is_empty(&self) -> bool {
        self.keys.values().all(BTreeMap::is_empty)
    }

    /// The devices of `owner` and their keys, in device order.
    pub fn of(&self, owner: &BareJid) -> impl Iterator<Item = (&D, &Known<K>)> {
        self.keys.get(owner).into_iter().flatten()
    }

    /// The devices of `owner` and their keys, to change.
    pub fn of_mut(&mut self, owner: &BareJid) -> impl Iterator<Item = (&D, &mut Known<K>)> {
        self.keys.get_mut(owner).into_iter().flatten()
    }

    /// The user verified `peer` (whatever the outcome): BTBV closes for it.
    pub fn verified(&mut self, peer: &BareJid) {
        self.verified.insert(peer.clone());
    }

    /// The fingerprint comparison (the ceremony of OMEMO, OpenPGP and certificate engines):
    /// every key held for `peer` that `compared` selects must be one the peer `shows` out of
    /// band; shown keys become verified, the others untrusted (`fingerprint-mismatch`). No key
    /// compared is reported as such (`nothing-to-verify`, [`VerificationResult::NothingToCompare`]):
    /// neither a match nor a man in the middle, and no change of trust.
    pub fn verify(
        &mut self,
        peer: &BareJid,
        shows: impl Fn(&str) -> bool,
        compared: impl Fn(&D) -> bool,
    ) -> Output {
        let mut out = Output::default();
        let wording = self.wording;
        let mut result = VerificationResult::Match;
        let mut seen = 0;
        for (_, known) in self.of_mut(peer).filter(|(d, _)| compared(d)) {
            seen += 1;
            let before = known.state;
            known.state =
                if shows(&known.fingerprint) { TrustState::Verified } else { TrustState::Untrusted };
            if known.state != before {
                out.events.push(changed(peer, known));
            }
            if known.state == TrustState::Untrusted {
                result = VerificationResult::Mismatch;
                out.events.push(Event::Alert {
                    reason: crate::reason::FINGERPRINT_MISMATCH.code,
                    detail: (wording.mismatch)(peer, &known.device, &known.fingerprint),
                });
            }
        }
        if seen > 0 {
            // The user compared keys of this contact: blind trust ends for it. A ceremony that
            // found nothing to compare verified nothing, and changes no trust.
            self.verified(peer);
        } else {
            result = VerificationResult::NothingToCompare;
            out.events.push(Event::Alert {
                reason: crate::reason::NOTHING_TO_VERIFY.code,
                detail: format!("no {} of {peer} seen yet", wording.unseen),
            });
        }
        out.events.push(Event::Verification { peer: peer.clone(), result });
        out
    }
}

/// The end of a ceremony that compared one secret (a short authentication string read out, a
/// socialist millionaires' protocol): the key's new trust — verified when `matched`, else
/// untrusted — is reported for (`device`, `fingerprint`), then, when it failed, the alert
/// `mismatch` makes, then the verification's result. Returns the trust.
pub fn settle(
    peer: &BareJid,
    (device, fingerprint): (&str, String),
    matched: bool,
    mismatch: impl FnOnce() -> Event,
    out: &mut Output,
) -> Trust {
    let trust = if matched { Trust::Verified } else { Trust::Untrusted };
    out.events.push(Event::TrustChanged {
        peer: peer.clone(),
        device: device.to_owned(),
        fingerprint,
        trust,
    });
    if !matched {
        out.events.push(mismatch());
    }
    let result = if matched { VerificationResult::Match } else { VerificationResult::Mismatch };
    out.events.push(Event::Verification { peer: peer.clone(), result });
    trust
}

#[cfg(test)]
mod tests {
    use super::*;

    static WORDING: Wording = Wording {
        changed: |owner, device| format!("{device} of {owner} changed"),
        mismatch: |owner, device, fp| format!("{device} of {owner}: {fp}"),
        unseen: "key",
    };

    fn bare(s: &str) -> BareJid {
        s.parse().unwrap()
    }

    fn alerts(out: &Output) -> Vec<&'static str> {
        out.events
            .iter()
            .filter_map(|e| if let Event::Alert { reason, .. } = e { Some(*reason) } else { None })
            .collect()
    }

    #[test]
    fn btbv_closes_once_the_contact_was_verified() {
        let (bob, mut out) = (bare("bob@b.example"), Output::default());
        let mut book: TrustBook<u32> = TrustBook::new(TrustPolicy::Btbv, &WORDING);
        assert_eq!(book.observe(&bob, 1, Known::new((), "1", "aa"), &mut out), TrustState::Blind);
        let verified = book.verify(&bob, |f| f == "aa", |_| true);
        assert!(alerts(&verified).is_empty());
        assert_eq!(book.observe(&bob, 2, Known::new((), "2", "bb"), &mut out), TrustState::Untrusted);
        assert_eq!(book.trust_of(&bob, &1), Trust::Verified);
    }

    #[test]
    fn a_changed_key_is_distrusted_and_the_same_keeps_its_trust() {
        let (bob, mut out) = (bare("bob@b.example"), Output::default());
        let mut book: TrustBook<u32> = TrustBook::new(TrustPolicy::Tofu, &WORDING);
        book.observe(&bob, 1, Known::new((), "1", "aa"), &mut out);
        assert_eq!(book.observe(&bob, 1, Known::new((), "1", "aa"), &mut out), TrustState::Blind);
        assert_eq!(book.observe(&bob, 1, Known::new((), "1", "cc"), &mut out), TrustState::Untrusted);
        assert_eq!(alerts(&out), ["identity-changed"]);
        assert!(book.distrusts(&bob, &1));
    }

    #[test]
    fn tofu_pins_the_first_key_set_and_manual_trusts_nothing_unverified() {
        let (bob, mut out) = (bare("bob@b.example"), Output::default());
        let mut book: TrustBook<String> = TrustBook::new(TrustPolicy::Tofu, &WORDING);
        book.pin_first(&bob, &BTreeSet::from(["aa".to_owned()]));
        assert_eq!(book.observe(&bob, "aa".into(), Known::new((), "aa", "aa"), &mut out), TrustState::Blind);
        assert_eq!(
            book.observe(&bob, "bb".into(), Known::new((), "bb", "bb"), &mut out),
            TrustState::Untrusted
        );
        assert_eq!(alerts(&out), ["new-key-untrusted"]);
        let manual: TrustBook<String> = TrustBook::new(TrustPolicy::Manual, &WORDING);
        assert_eq!(manual.first_sight(&bob, "aa", &mut out), TrustState::Untrusted);
    }

    #[test]
    fn verification_with_nothing_held_is_a_mismatch() {
        let mut book: TrustBook<u32> = TrustBook::new(TrustPolicy::Btbv, &WORDING);
        let out = book.verify(&bare("bob@b.example"), |_| true, |_| true);
        assert_eq!(alerts(&out), ["nothing-to-verify"]);
        assert!(matches!(
            out.events.last(),
            Some(Event::Verification { result: VerificationResult::NothingToCompare, .. })
        ));
    }
}
