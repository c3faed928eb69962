//! The reasons S/MIME (RFC 3923) reports (its registry entry's
//! [`crate::ProtocolDef::reasons`]).

use crate::Reason;
use crate::reason as shared;

/// Everything the S/MIME engine reports beyond what every engine reports.
pub(super) static REASONS: &[Reason] = &[
    Reason::new("untrusted-certificate", "A certificate is not issued by the certification authority the device trusts."),
    Reason::new("certificate-mismatch", "A certificate's xmppAddr does not name the account that uses it."),
    Reason::new("certificate-expired", "A certificate's validity ended before the message's time."),
    Reason::new("certificate-not-yet-valid", "A certificate's validity starts after the message's time."),
    Reason::new("no-certificate", "A contact's certificates could not be fetched."),
    Reason::new("decryption-failed", "The content-encryption key does not unwrap, or has the wrong length."),
    Reason::new("cpim-from-mismatch", "The CPIM From header is not the stanza's sender (RFC 3923 §8)."),
    Reason::new("cpim-to-mismatch", "The CPIM To header does not name this account (RFC 3923 §8)."),
    Reason::new("timestamp-too-old", "The CPIM DateTime is older than the accepted window: a replay, or a message held too long."),
    Reason::new("timestamp-in-future", "The CPIM DateTime lies ahead of the accepted window."),
    Reason::new("peer-error", "The recipient answered a message with a stanza error."),
    shared::NOT_FOR_THIS_DEVICE,
    shared::UNKNOWN_SIGNER,
    shared::BAD_SIGNATURE,
    shared::BAD_PADDING,
    shared::UNSUPPORTED_ALGORITHM,
    shared::UNTRUSTED_KEY,
    shared::FINGERPRINT_MISMATCH,
    shared::UNENCRYPTED,
    shared::NOT_SENT,
    shared::NOTHING_TO_VERIFY,
];
