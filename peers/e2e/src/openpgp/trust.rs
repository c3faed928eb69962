//! The keys both OpenPGP engines hold for other accounts, and how far each is trusted (the
//! kit's [`TrustBook`], its policies and ceremony).
//!
//! OpenPGP names a key by its fingerprint and has no device id of its own, so a "device" here
//! is a key: [`crate::Event::TrustChanged`] reports `device` = `fingerprint` = the XEP-0373 v4
//! fingerprint string. The policies read as for OMEMO with that reading: BTBV trusts a new key
//! blindly until the user verified one key of the contact, then only verified keys; manual
//! trusts only verified keys. TOFU pins the first key *set* seen for an account (the first
//! metadata list an OX engine reads, the first keyserver answer an XEP-0027 engine gets, see
//! [`TrustBook::pin_first`]): those keys are trusted blindly, any key that appears later is
//! `Untrusted` and reported with the alert `new-key-untrusted` until the user verifies it.
//! (Trusting every new key on first sight would make TOFU the same as BTBV before
//! verification, and a substituted key would be trusted as readily as a new device.)

use std::collections::BTreeSet;

use jid::BareJid;
use pgp::composed::SignedPublicKey;

use super::keys::{fingerprint_hex, normalise_fingerprint};
use crate::kit::trust::{Known, TrustBook, TrustState, Wording};
use crate::{OutOfBand, Output, TrustPolicy};

/// Every key seen, by account and fingerprint.
pub(crate) type KeyRing = TrustBook<String, SignedPublicKey>;

/// An empty ring deciding by `policy`.
pub(crate) fn ring(policy: TrustPolicy) -> KeyRing {
    TrustBook::new(policy, &Wording::KEYS)
}

/// Records a certificate for `owner` (binding signatures already checked); a new key gets its
/// trust from the policy and is reported. Returns its fingerprint and trust.
pub(crate) fn observe(
    ring: &mut KeyRing,
    owner: &BareJid,
    cert: SignedPublicKey,
    out: &mut Output,
) -> (String, TrustState) {
    let fpr = fingerprint_hex(&cert);
    let state = ring.observe(owner, fpr.clone(), Known::new(cert, fpr.clone(), fpr.clone()), out);
    (fpr, state)
}

/// Fingerprint comparison: every key of `peer` that is `current` (announced in its metadata
/// list, OX; listed by the keyserver, XEP-0027) and that we hold must be one the peer shows
/// out of band (spaces and case ignored). Keys it shows are verified, the others distrusted.
/// Keys no longer current (rotated away, or a stray key seen once) are not compared: they are
/// not used, and would make an honest peer look like a mismatch.
pub(crate) fn verify(
    ring: &mut KeyRing,
    peer: &BareJid,
    oob: &OutOfBand,
    current: Option<&BTreeSet<String>>,
) -> Output {
    let says: BTreeSet<String> = oob.peer_says.iter().map(|s| normalise_fingerprint(s)).collect();
    ring.verify(peer, |fpr| says.contains(fpr), |fpr| current.is_some_and(|c| c.contains(fpr)))
}
