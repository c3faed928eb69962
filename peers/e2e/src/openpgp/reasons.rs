//! The reasons XEP-0027 and OX report (their registry entries' [`crate::ProtocolDef::reasons`]).

use crate::Reason;
use crate::reason as shared;

/// What both report: keys, decryption and the key ring they share.
macro_rules! common {
    ($($more:expr),* $(,)?) => {
        &[
            Reason::new("key-not-for-account", "A published key has no user ID naming the account that publishes it."),
            Reason::new("bad-key-binding", "A key's self-signatures (user ID or subkey bindings) do not verify."),
            Reason::new("key-revoked", "A key carries a key revocation signature."),
            Reason::new("too-many-keys", "An account announces more keys than the engine keeps: the rest are ignored."),
            shared::NEW_KEY_UNTRUSTED,
            Reason::new("not-encrypted", "An OpenPGP message that should be encrypted is not."),
            Reason::new("undecryptable", "An OpenPGP message does not decrypt with this device's key."),
            Reason::new("too-large", "The decrypted content exceeds the size the engine reads."),
            shared::UNKNOWN_SIGNER,
            shared::BAD_SIGNATURE,
            shared::UNTRUSTED_KEY,
            shared::FINGERPRINT_MISMATCH,
            shared::UNENCRYPTED,
            shared::NOT_SENT,
            shared::NOTHING_TO_VERIFY,
            $($more),*
        ]
    };
}

/// XEP-0027.
pub(super) static PGP: &[Reason] = common![
    Reason::new("presence-key-changed", "A contact now signs its presence with another key than before."),
    Reason::new("too-many-pending", "Too many signed presences already wait for a keyserver lookup: this one is refused."),
    shared::BAD_KEY,
    shared::BAD_CHECKSUM,
];
/// OX (XEP-0373/0374).
pub(super) static OX: &[Reason] = common![
    Reason::new("no-public-key", "A contact announces no key, or one of its announced keys could not be fetched."),
    Reason::new("not-signed", "An OX message is encrypted but not signed (only `<signcrypt/>` is accepted)."),
    Reason::new("not-for-us", "An OX message is addressed to another account."),
    Reason::new("time-implausible", "The `<signcrypt/>` time lies in the future, past the allowed clock skew."),
    shared::DROPPED,
    shared::TO_MISMATCH,
];
