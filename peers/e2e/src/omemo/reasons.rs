//! The reasons both OMEMO versions report (their registry entries'
//! [`crate::ProtocolDef::reasons`]).

use crate::Reason;
use crate::reason as shared;

/// What only OMEMO 0.8+ reports: the XEP-0420 envelope checks.
const SCE_FROM_MISMATCH: Reason =
    Reason::new("sce-from-mismatch", "The SCE envelope's `<from/>` (XEP-0420) is not the stanza's sender.");
const SCE_TO_MISMATCH: Reason =
    Reason::new("sce-to-mismatch", "The SCE envelope's `<to/>` (XEP-0420) is not the stanza's recipient.");
const SCE_TIME_MISMATCH: Reason =
    Reason::new("sce-time-mismatch", "The SCE envelope's `<time/>` (XEP-0420) lies in the future, past the allowed clock skew.");

/// Both versions.
macro_rules! common {
    ($($more:expr),* $(,)?) => {
        &[
            Reason::new("no-bundle", "A peer's device list or one of its bundles could not be fetched."),
            Reason::new("unknown-prekey", "A key exchange names a PreKey this device does not have (already used, or never ours)."),
            Reason::new("no-message-key", "A message's key is gone: it was already read (a replay), or its chain is unknown."),
            Reason::new("too-many-skipped", "A message would skip more message keys than the ratchet keeps."),
            shared::NOT_FOR_THIS_DEVICE,
            shared::IDENTITY_CHANGED,
            shared::UNTRUSTED_DEVICE,
            shared::FINGERPRINT_MISMATCH,
            shared::BAD_MAC,
            shared::BAD_PADDING,
            shared::BAD_SIGNATURE,
            shared::WEAK_KEY,
            shared::NO_SESSION,
            shared::UNENCRYPTED,
            shared::NOT_SENT,
            shared::NOTHING_TO_VERIFY,
            $($more),*
        ]
    };
}

/// OMEMO 0.8+ (`urn:xmpp:omemo:2`).
pub(super) static OMEMO: &[Reason] = common![SCE_FROM_MISMATCH, SCE_TO_MISMATCH, SCE_TIME_MISMATCH];
/// OMEMO 0.3.
pub(super) static LEGACY: &[Reason] = common![];
