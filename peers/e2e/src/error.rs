//! Typed engine errors that say who is at fault (modelled on rustls' `PeerMisbehaved`).
//!
//! Anything that arrives from the network may come from an attacker, so input problems are
//! errors with a [`Fault`], never panics. The sim writes [`E2eError::code`] into the transcript,
//! with the fault: `✗ engine error bad-mac (peer or path at fault): …`.
//!
//! # Who is at fault
//!
//! An engine blames whom its evidence allows, and no one further. Between two devices sit
//! both servers and every network hop (the *path*), and any of them may be the attacker; what
//! the path cannot do is make what the peer's keys authenticate, and what the peer cannot do
//! is decide how its stanza travels. So:
//!
//! - [`Fault::Peer`]: the evidence is authenticated as the peer's (its signature, or a MAC of a
//!   session only it shares with us, verified) and what is wrong is in what it authenticated:
//!   a signed header naming another sender, a signed time ahead of ours, a bad proof inside the
//!   session, a key it revoked itself. Only the holder of the peer's keys made it (the peer,
//!   unless its keys were stolen or were never its own: the verification ceremony tells).
//! - [`Fault::Path`]: the evidence is authenticated as the peer's and intact, and what is wrong
//!   is how it travelled — it arrived twice, too late, out of order, redirected to us from
//!   another recipient — or the keys the path served are not the ones the peer shows out of
//!   band. The peer made the message right; a server or the network (or whoever controls
//!   one) did the rest. This assumes the peer's clock is right: a signed time *ahead* of ours
//!   is the peer's, since holding a stanza only makes it older.
//! - [`Fault::PeerOrPath`]: nothing authenticates the evidence — a MAC or signature that does
//!   not verify, malformed or missing data, an unknown signer, a key or a negotiation offer
//!   nobody vouches for, a stanza error, more input than a limit allows. The peer or anyone
//!   able to put a stanza on the path could have sent it. An offer of something the engine
//!   does not speak (a version, an algorithm) counts here too: a downgrade attacker sends
//!   exactly that.
//! - [`Fault::Local`]: this device refused on its own — its user's trust decisions, its
//!   settings, its own state or limits — about input that is not itself wrong.
//!
//! Every reason is declared once with its fault (a protocol's in its `reasons.txt`, shared
//! ones in [`crate::reason`]): a reason that is only ever a notice (a session came up, the
//! peer ended one) is declared `notice` and has none. [`E2eError::fault`] reads the
//! declaration; the registry's tests fail when a reason lacks one, and the simulator's when an
//! engine raises a notice (or an undeclared reason) as an error. The variants other than
//! `Rejected` are every engine's: `malformed` and `missing-element` are the peer's or the
//! path's, `policy` is ours, and so are an adapter's failures and calls it does not implement
//! (`adapter-crashed`, `adapter-timeout`, `adapter-garbage`, `unimplemented`: the engine runs
//! in another process, `jabberwock-external`).

use core::fmt;

use thiserror::Error;

use crate::reason;

/// Who caused an error, as far as the evidence shows (module docs, "Who is at fault").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// The holder of the peer's keys: what they authenticated is wrong.
    Peer,
    /// A server or the network: an authenticated, intact stanza travelled wrongly (twice, too
    /// late, redirected), or the path served keys that are not the peer's.
    Path,
    /// The peer or anyone on the path: the evidence is not authenticated.
    PeerOrPath,
    /// This device: its own policy, settings, state or limits.
    Local,
}

impl Fault {
    /// Every fault, in declaration order.
    pub const ALL: [Fault; 4] = [Fault::Peer, Fault::Path, Fault::PeerOrPath, Fault::Local];

    /// The word a `reasons.txt` line writes in brackets (`bad-mac [peer-or-path]: …`).
    pub const fn tag(self) -> &'static str {
        match self {
            Fault::Peer => "peer",
            Fault::Path => "path",
            Fault::PeerOrPath => "peer-or-path",
            Fault::Local => "local",
        }
    }

    /// The fault a tag names.
    pub fn from_tag(tag: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.tag() == tag)
    }
}

/// As a transcript reads it: `(peer at fault)`, `(path at fault)`, `(peer or path at fault)`,
/// `(this device at fault)`.
impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::Peer => "peer",
            Fault::Path => "path",
            Fault::PeerOrPath => "peer or path",
            Fault::Local => "this device",
        })
    }
}

/// An error from an engine.
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
        /// its protocol declares ([`crate::ProtocolDef::reasons`]), with its fault.
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
    /// The engine runs in another process behind the engine protocol (`jabberwock-external`) and
    /// that process failed: it exited, hung past the time limit, or answered what the protocol
    /// does not allow (not JSON, a line too long, an unknown event, an undeclared reason).
    /// The process is stopped; every later call on the engine answers the same.
    #[error("adapter failed ({reason}): {detail}")]
    Adapter {
        /// `adapter-crashed`, `adapter-timeout` or `adapter-garbage` ([`reason::ADAPTER`]).
        reason: &'static str,
        /// What happened.
        detail: String,
    },
    /// The engine runs behind an adapter (`jabberwock-external`) that does not implement this call
    /// (as BoGo's shim exits 89): the judges give ⚪ with this reason, never a guess.
    #[error("unimplemented by the adapter: {call}: {detail}")]
    Unimplemented {
        /// The call, as the engine protocol names it (`forge`, `steal`).
        call: &'static str,
        /// What the adapter said.
        detail: String,
    },
}

impl E2eError {
    /// Who is at fault for this error: its reason's declared fault (module docs, "Who is at
    /// fault"). A `Rejected` reason declared nowhere, or declared a notice — which the tests
    /// do not let through — is taken as unauthenticated input ([`Fault::PeerOrPath`]).
    pub fn fault(&self) -> Fault {
        let declared = match self {
            E2eError::Malformed { .. } => reason::MALFORMED.fault,
            E2eError::Missing { .. } => reason::MISSING_ELEMENT.fault,
            E2eError::Rejected { reason, .. } => reason::declared(reason).and_then(|r| r.fault),
            E2eError::Policy { .. } => reason::POLICY.fault,
            E2eError::Adapter { reason, .. } => reason::declared(reason).and_then(|r| r.fault),
            E2eError::Unimplemented { .. } => reason::UNIMPLEMENTED.fault,
        };
        declared.unwrap_or(Fault::PeerOrPath)
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
            E2eError::Adapter { reason, .. } => reason,
            E2eError::Unimplemented { .. } => reason::UNIMPLEMENTED.code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;

    fn rejected(reason: &'static str) -> E2eError {
        E2eError::Rejected { reason, detail: String::new() }
    }

    #[test]
    fn faults_read_well_and_round_trip_their_tags() {
        let words: Vec<String> = Fault::ALL.iter().map(|f| format!("({f} at fault)")).collect();
        assert_eq!(
            words,
            ["(peer at fault)", "(path at fault)", "(peer or path at fault)", "(this device at fault)"]
        );
        for f in Fault::ALL {
            assert_eq!(Fault::from_tag(f.tag()), Some(f));
        }
        assert_eq!(Fault::from_tag("Peer"), None);
        assert_eq!(Fault::from_tag("notice"), None);
    }

    #[test]
    fn an_error_is_blamed_as_its_reason_is_declared() {
        let malformed = E2eError::Malformed { what: "x", detail: String::new() };
        assert_eq!(malformed.fault(), Fault::PeerOrPath);
        assert_eq!(E2eError::Missing { what: "x" }.fault(), Fault::PeerOrPath);
        assert_eq!(E2eError::Policy { detail: String::new() }.fault(), Fault::Local);
        // Unauthenticated: anyone on the path, or the peer.
        assert_eq!(rejected("bad-mac").fault(), Fault::PeerOrPath);
        assert_eq!(rejected("bad-signature").fault(), Fault::PeerOrPath);
        // Authenticated as the peer's, and wrong in what it says.
        assert_eq!(rejected("cpim-from-mismatch").fault(), Fault::Peer);
        assert_eq!(rejected("message-from-future").fault(), Fault::Peer);
        // Authenticated and intact, but twice, late or redirected: the path.
        assert_eq!(rejected("replayed-counter").fault(), Fault::Path);
        assert_eq!(rejected("replay").fault(), Fault::Path);
        assert_eq!(rejected("message-too-old").fault(), Fault::Path);
        assert_eq!(rejected("timestamp-too-old").fault(), Fault::Path);
        assert_eq!(rejected("to-mismatch").fault(), Fault::Path);
        // Our own setting.
        assert_eq!(rejected("cipher-not-allowed").fault(), Fault::Local);
        // Undeclared (the tests keep it from happening): unauthenticated input.
        assert_eq!(rejected("no-such-reason").fault(), Fault::PeerOrPath);
    }

    #[test]
    fn every_engine_reason_is_declared_with_a_fault_or_as_a_notice() {
        for r in reason::EVERY_ENGINE.iter().chain(reason::SHARED) {
            assert!(r.fault.is_some(), "{} has no fault", r.code);
        }
        // The notices: a session came up or ended, an offline session was used, a tunnel
        // waits, a new session broke the chain of retained secrets (a warning, only ever an
        // alert), a message came in the other OMEMO version. Nothing else goes without a fault (an error raised with one of these is caught by the simulator's scan).
        let mut notices: Vec<&str> = Protocol::ALL
            .iter()
            .flat_map(|p| p.reasons())
            .filter(|r| r.fault.is_none())
            .map(|r| r.code)
            .collect();
        notices.sort_unstable();
        notices.dedup();
        assert_eq!(
            notices,
            [
                "esession",
                "esession-offline",
                "esession-terminated",
                "other-omemo-version",
                "otr-finished",
                "otr-session",
                "retained-secret-lost",
                "smp-aborted",
                "xtls-close-notify",
                "xtls-closed",
                "xtls-established",
                "xtls-waiting"
            ]
        );
    }
}
