//! The reasons XTLS reports (its registry entry's [`crate::ProtocolDef::reasons`]).

use crate::Reason;
use crate::reason as shared;

/// Everything the XTLS engine reports beyond what every engine reports.
pub(super) static REASONS: &[Reason] = &[
    Reason::new("xtls-established", "A TLS 1.3 tunnel is up: the alert carries its suite, the peer's certificate and the SAS."),
    Reason::new("xtls-waiting", "No XTLS device of the recipient is online: messages wait (XTLS has no offline sessions)."),
    Reason::new("xtls-refused", "The peer refused the tunnel with a stanza error."),
    Reason::new("xtls-lost", "The peer answered a record with a stanza error: the tunnel and its records are lost."),
    Reason::new("xtls-restarted", "The peer started a new tunnel: the old one is dropped."),
    Reason::new("xtls-close-notify", "The peer ended the TLS session with close_notify."),
    Reason::new("xtls-closed", "The peer closed the tunnel after a TLS close_notify."),
    Reason::new("xtls-unauthenticated-close", "The tunnel was closed without a TLS close_notify (truncation, or a forged `<close/>`)."),
    Reason::new("unknown-tunnel", "Data for a tunnel this device does not have."),
    Reason::new("unsupported-method", "The peer asked for a tunnel method other than TLS."),
    Reason::new("bad-certificate", "TLS: the peer's certificate is missing or invalid."),
    Reason::new("bad-record-mac", "TLS: a record does not decrypt (its AEAD tag fails): it was changed."),
    Reason::new("tls-alert", "TLS: the peer sent a fatal alert."),
    Reason::new("tls-invalid-message", "TLS: a malformed message, or one out of place in the handshake."),
    Reason::new("tls-peer-misbehaved", "TLS: the peer broke the protocol, or offers nothing compatible."),
    Reason::new("tls-error", "TLS: any other failure."),
    shared::IDENTITY_CHANGED,
    shared::UNTRUSTED_DEVICE,
    shared::FINGERPRINT_MISMATCH,
    shared::SAS_MISMATCH,
    shared::NO_SESSION,
    shared::UNEXPECTED,
    shared::UNENCRYPTED,
    shared::NOT_SENT,
    shared::NOTHING_TO_VERIFY,
];
