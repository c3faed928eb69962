//! The reasons ESessions reports (its registry entry's [`crate::ProtocolDef::reasons`]).

use crate::Reason;
use crate::reason as shared;

/// Everything the ESession engine reports beyond what every engine reports.
pub(super) static REASONS: &[Reason] = &[
    Reason::new("esession", "An encrypted session is established (XEP-0116): the alert carries the thread and the SAS to compare."),
    Reason::new("esession-terminated", "The peer ended the encrypted session, or acknowledged our end of it (XEP-0116 §terminate)."),
    Reason::new("declined", "The peer declined the session negotiation (XEP-0155)."),
    Reason::new("not-acceptable", "The negotiation form offers or accepts no option we allow (cipher, group, rekey frequency)."),
    Reason::new("feature-not-implemented", "The peer asked for the 3-message negotiation (dhkeys without dhhashes): only the 4-message one is answered."),
    Reason::new("bad-nonce", "A negotiation message answers another request: its nonce is not the one we sent."),
    Reason::new("key-changed", "The peer presents a public key never seen before for its account."),
    shared::SAS_MISMATCH,
    shared::UNTRUSTED_KEY,
    shared::BAD_COMMITMENT,
    shared::BAD_GROUP_ELEMENT,
    shared::BAD_KEY,
    shared::BAD_SIGNATURE,
    shared::BAD_MAC,
    shared::NO_SESSION,
    shared::UNEXPECTED,
    shared::UNENCRYPTED,
    shared::NOT_SENT,
    shared::NOTHING_TO_VERIFY,
];
