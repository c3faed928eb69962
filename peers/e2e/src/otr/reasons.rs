//! The reasons OTR reports (its registry entry's [`crate::ProtocolDef::reasons`]).

use crate::Reason;
use crate::reason as shared;

/// Everything the OTR engine reports beyond what every engine reports.
pub(super) static REASONS: &[Reason] = &[
    Reason::new("otr-session", "A private conversation started (the AKE finished): the alert carries the instance, fingerprint and ssid."),
    Reason::new("otr-finished", "The peer ended the private conversation (TLV Disconnected)."),
    Reason::new("otr-error", "The peer sent an OTR Error message; a new AKE is started."),
    Reason::new("new-fingerprint", "The peer uses a fingerprint never verified, after another one of its was."),
    Reason::new("smp-failed", "The Socialist Millionaires' Protocol ended: the secrets differ (or someone is in the middle)."),
    Reason::new("smp-aborted", "The peer aborted the Socialist Millionaires' Protocol."),
    Reason::new("smp-proof", "A zero-knowledge proof in an SMP message does not verify."),
    Reason::new("bad-instance-tag", "A message's sender or receiver instance tag is below the minimum."),
    Reason::new("unsupported-version", "A message of an OTR protocol version other than 3."),
    Reason::new("unsupported-key", "The AKE carries a public key of a type other than DSA."),
    Reason::new("unknown-keyid", "A Data Message names a key id this side no longer (or never) had."),
    Reason::new("replayed-counter", "A Data Message's counter is not above the last one seen under its keys: a replay."),
    Reason::new("keyid-exhausted", "The key ids ran out."),
    shared::BAD_COMMITMENT,
    shared::BAD_GROUP_ELEMENT,
    shared::BAD_SIGNATURE,
    shared::BAD_MAC,
    shared::NO_SESSION,
    shared::UNENCRYPTED,
    shared::NOT_SENT,
    shared::NOTHING_TO_VERIFY,
];
