//! The reasons XML Signature + XML Encryption reports (its registry entry's
//! [`crate::ProtocolDef::reasons`]).

use crate::Reason;
use crate::reason as shared;

/// Everything the XML Security engine reports beyond what every engine reports.
pub(super) static REASONS: &[Reason] = &[
    Reason::new("bad-digest", "The digest of the signed element does not match its Reference's DigestValue."),
    Reason::new("bad-reference", "The Signature's Reference is not the single same-document #id of the signed payload."),
    Reason::new("duplicate-id", "Several elements carry the ID the Reference names (signature wrapping)."),
    Reason::new("misplaced-signature", "The ds:Signature is not the one child of the signed payload it must be."),
    Reason::new("not-signed-payload", "The decrypted element is not the signed payload it must be."),
    Reason::new("unsupported-type", "The EncryptedData Type is not Element."),
    Reason::new("cipher-not-allowed", "The content cipher is one this device's `cipher:` setting refuses."),
    Reason::new("bad-key-length", "A content key of the wrong length for its cipher."),
    Reason::new("key-transport-failed", "The EncryptedKey does not decrypt (RSA-OAEP) with this device's key."),
    Reason::new("from-mismatch", "The signed payload's from is not the stanza's sender."),
    Reason::new("message-too-old", "The signed payload's time is older than the accepted age."),
    Reason::new("message-from-future", "The signed payload's time lies in the future, past the allowed skew."),
    Reason::new("replay", "A signed payload id seen before: a replay."),
    Reason::new("bad-key-item", "A published key item is refused (its id is not its fingerprint, it does not parse, or there are too many)."),
    Reason::new("no-keys", "A contact's keys could not be fetched."),
    shared::NOT_FOR_THIS_DEVICE,
    shared::DROPPED,
    shared::TO_MISMATCH,
    shared::UNKNOWN_SIGNER,
    shared::BAD_SIGNATURE,
    shared::BAD_MAC,
    shared::BAD_PADDING,
    shared::UNSUPPORTED_ALGORITHM,
    shared::WEAK_KEY,
    shared::UNTRUSTED_KEY,
    shared::FINGERPRINT_MISMATCH,
    shared::UNENCRYPTED,
    shared::NOT_SENT,
    shared::NOTHING_TO_VERIFY,
];
