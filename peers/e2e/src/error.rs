//! Typed engine errors that say who is at fault (modelled on rustls' `PeerMisbehaved`).
//!
//! Anything that arrives from the network may come from an attacker, so input problems are
//! errors with a [`Fault`], never panics. The sim writes [`E2eError::code`] into the transcript.

use thiserror::Error;

use crate::reason;

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// The remote party (or whoever sits on the path and forged its stanza).
    Peer,
    /// Our own configuration or call sequence.
    Local,
}

/// An error from an engine.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum E2eError {
    /// A stanza or payload does not have the shape the protocol requires.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which element or field was wrong.
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// A stanza is missing an element the protocol requires.
    #[error("missing {what}")]
    Missing {
        /// The element that was expected.
        what: &'static str,
    },
    /// Cryptographic checks rejected the input (a bad MAC, a bad signature, a message key
    /// that no longer exists because the message was already read).
    #[error("rejected ({reason}): {detail}")]
    Rejected {
        /// A stable kebab-case reason, e.g. `bad-mac`, `bad-signature`, `no-message-key`: one
        /// its protocol declares ([`crate::ProtocolDef::reasons`]).
        reason: &'static str,
        /// Details.
        detail: String,
    },
    /// The local policy refuses the operation (for example: no keys known for the peer).
    #[error("refused by local policy: {detail}")]
    Policy {
        /// Why it was refused.
        detail: String,
    },
}

impl E2eError {
    /// Who is at fault for this error.
    pub fn fault(&self) -> Fault {
        match self {
            E2eError::Malformed { .. } | E2eError::Missing { .. } | E2eError::Rejected { .. } => Fault::Peer,
            E2eError::Policy { .. } => Fault::Local,
        }
    }

    /// A short stable kebab-case code, used in transcripts and in `expect:` blocks: one of
    /// [`reason::EVERY_ENGINE`], or a `Rejected` reason its protocol declares
    /// ([`crate::ProtocolDef::reasons`]).
    pub fn code(&self) -> &'static str {
        match self {
            E2eError::Malformed { .. } => reason::MALFORMED.code,
            E2eError::Missing { .. } => reason::MISSING_ELEMENT.code,
            E2eError::Rejected { reason, .. } => reason,
            E2eError::Policy { .. } => reason::POLICY.code,
        }
    }
}
