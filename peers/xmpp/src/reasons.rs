//! The reasons the client reports on its own (not its engine's): the stanza errors it receives
//! (RFC 6120 §8.3.3), the stream errors that end its stream (RFC 6120 §4.9.3) and its own
//! alerts. The simulator writes them into a device's `errors` and `alerts`, beside its
//! engine's, and scenarios expect them by these codes.

use jabberwock_e2e::Reason;

/// The defined conditions of stanza errors (RFC 6120 §8.3.3). A received error with any other
/// condition (or none) is reported `undefined-condition`.
pub static STANZA_ERRORS: &[Reason] = &[
    Reason::new(
        "bad-request",
        "The stanza does not conform to the schema or cannot be processed (RFC 6120 §8.3.3.1).",
    ),
    Reason::new(
        "conflict",
        "An existing resource or session has the same name or address (RFC 6120 §8.3.3.2).",
    ),
    Reason::new(
        "feature-not-implemented",
        "The recipient or a server does not implement what the stanza asks (RFC 6120 §8.3.3.3).",
    ),
    Reason::new("forbidden", "The sender lacks the permissions the action needs (RFC 6120 §8.3.3.4)."),
    Reason::new("gone", "The recipient can no longer be contacted at this address (RFC 6120 §8.3.3.5)."),
    Reason::new(
        "internal-server-error",
        "A server could not process the stanza: misconfiguration or an internal error (RFC 6120 §8.3.3.6).",
    ),
    Reason::new("item-not-found", "The addressed JID or requested item does not exist (RFC 6120 §8.3.3.7)."),
    Reason::new("jid-malformed", "An address in the stanza is not a valid JID (RFC 6120 §8.3.3.8)."),
    Reason::new(
        "not-acceptable",
        "The recipient understood the stanza but will not accept it: it fails the recipient's criteria (RFC 6120 §8.3.3.9).",
    ),
    Reason::new("not-allowed", "No entity may perform this action (RFC 6120 §8.3.3.10)."),
    Reason::new(
        "not-authorized",
        "The sender must authenticate (or, for PEP, be subscribed) first (RFC 6120 §8.3.3.11).",
    ),
    Reason::new("policy-violation", "The stanza violates a local service policy (RFC 6120 §8.3.3.12)."),
    Reason::new("recipient-unavailable", "The recipient is temporarily unavailable (RFC 6120 §8.3.3.13)."),
    Reason::new("redirect", "The recipient redirects requests to another entity (RFC 6120 §8.3.3.14)."),
    Reason::new("registration-required", "The service requires registration first (RFC 6120 §8.3.3.15)."),
    Reason::new(
        "remote-server-not-found",
        "The recipient's server does not exist or cannot be reached (RFC 6120 §8.3.3.16).",
    ),
    Reason::new(
        "remote-server-timeout",
        "The recipient's server could not be contacted in time (RFC 6120 §8.3.3.17).",
    ),
    Reason::new(
        "resource-constraint",
        "The server or recipient lacks the resources to serve the stanza, e.g. a full offline store (RFC 6120 §8.3.3.18).",
    ),
    Reason::new(
        "service-unavailable",
        "The recipient or server does not provide the service (no such user or device, nothing to deliver to) (RFC 6120 §8.3.3.19).",
    ),
    Reason::new(
        "subscription-required",
        "The action needs a presence subscription first (RFC 6120 §8.3.3.20).",
    ),
    Reason::new(
        "undefined-condition",
        "An error with no defined condition, or one not listed here (RFC 6120 §8.3.3.21).",
    ),
    Reason::new(
        "unexpected-request",
        "The recipient understood the request but did not expect it now (RFC 6120 §8.3.3.22).",
    ),
];

/// The defined conditions of stream errors (RFC 6120 §4.9.3), which end a device's stream:
/// received from its server, or detected by the device itself (a stanza nested too deep is a
/// `policy-violation`). Any other condition received is reported `undefined-condition`.
pub static STREAM_ERRORS: &[Reason] = &[
    Reason::new("bad-format", "The stream carried XML that cannot be processed (RFC 6120 §4.9.3.1)."),
    Reason::new(
        "bad-namespace-prefix",
        "The stream used an unsupported namespace prefix, or none where one is needed (RFC 6120 §4.9.3.2).",
    ),
    Reason::new(
        "conflict",
        "The stream is closed because a new stream for the same resource replaced it (RFC 6120 §4.9.3.3).",
    ),
    Reason::new(
        "connection-timeout",
        "The stream is closed because the other side seems to have lost the connection (RFC 6120 §4.9.3.4).",
    ),
    Reason::new(
        "host-gone",
        "The domain the stream is addressed to is no longer served (RFC 6120 §4.9.3.5).",
    ),
    Reason::new(
        "host-unknown",
        "The domain the stream is addressed to is not served here (RFC 6120 §4.9.3.6).",
    ),
    Reason::new("improper-addressing", "A stanza between servers lacks its to or from (RFC 6120 §4.9.3.7)."),
    Reason::new(
        "internal-server-error",
        "The server cannot serve the stream: misconfiguration or an internal error (RFC 6120 §4.9.3.8).",
    ),
    Reason::new(
        "invalid-from",
        "A from address does not match the authenticated JID or validated domain (RFC 6120 §4.9.3.9).",
    ),
    Reason::new(
        "invalid-namespace",
        "The stream or content namespace is not the one expected (RFC 6120 §4.9.3.10).",
    ),
    Reason::new(
        "invalid-xml",
        "The stream carried XML that is invalid for the protocol (RFC 6120 §4.9.3.11).",
    ),
    Reason::new(
        "not-authorized",
        "Stanzas were sent before the stream was authenticated, or authentication failed (RFC 6120 §4.9.3.12).",
    ),
    Reason::new("not-well-formed", "The stream carried XML that is not well-formed (RFC 6120 §4.9.3.13)."),
    Reason::new(
        "policy-violation",
        "The stream violated a local policy, e.g. a stanza nested too deep, or not STARTTLS first (RFC 6120 §4.9.3.14).",
    ),
    Reason::new(
        "remote-connection-failed",
        "The server could not reach a remote entity it needs for the stream (RFC 6120 §4.9.3.15).",
    ),
    Reason::new(
        "reset",
        "The stream is closed because its security context or features changed (RFC 6120 §4.9.3.16).",
    ),
    Reason::new(
        "resource-constraint",
        "The server lacks the resources to serve the stream (RFC 6120 §4.9.3.17).",
    ),
    Reason::new(
        "restricted-xml",
        "The stream carried a comment, processing instruction, DTD or entity reference (RFC 6120 §4.9.3.18).",
    ),
    Reason::new("see-other-host", "The server sends the client to another host (RFC 6120 §4.9.3.19)."),
    Reason::new("system-shutdown", "The server is shutting down (RFC 6120 §4.9.3.20)."),
    Reason::new(
        "undefined-condition",
        "A stream error with no defined condition, or one not listed here (RFC 6120 §4.9.3.21).",
    ),
    Reason::new("unsupported-encoding", "The stream is not encoded in UTF-8 (RFC 6120 §4.9.3.22)."),
    Reason::new(
        "unsupported-feature",
        "A mandatory stream feature the other side does not support (RFC 6120 §4.9.3.23).",
    ),
    Reason::new(
        "unsupported-stanza-type",
        "A first-level element the server does not support (RFC 6120 §4.9.3.24).",
    ),
    Reason::new("unsupported-version", "An XMPP version the server does not support (RFC 6120 §4.9.3.25)."),
];

/// A carbon that does not come from the device's own account (XEP-0280 §11): ignored.
pub const FORGED_CARBON: Reason = Reason::new(
    "forged-carbon",
    "A carbon copy (XEP-0280) that does not come from the device's own account: ignored (XEP-0280 §11).",
);

/// The alerts the client raises itself.
pub static CLIENT_ALERTS: &[Reason] = &[FORGED_CARBON];

/// The declared condition of `list` named `name`, if it is one.
pub(crate) fn defined(list: &'static [Reason], name: &str) -> Option<&'static str> {
    list.iter().map(|r| r.code).find(|c| *c == name)
}
