//! Jabberwock's end-to-end encryption engines.
//!
//! Every protocol is a sans-I/O state machine behind the [`Engine`] trait: stanzas in,
//! [`Action`]s and [`Event`]s out. An engine owns no socket, no clock and no randomness:
//! the caller hands it a [`Cx`] carrying the seeded RNG and the simulated time, so the
//! same inputs always give the same bytes (the way quinn-proto and rustls are built).
//!
//! This crate must never depend on tokio or turmoil: an engine does not know it is simulated.

pub mod content;
mod engine;
mod error;
pub mod kit;
pub mod reason;
mod registry;
mod rng06;
mod rsa_keygen;
#[cfg(test)]
mod testing;
pub mod time;
pub mod tls;
pub mod wire;
pub mod xml;

/// The registry's lines: each names a protocol folder and the [`ProtocolDef`]s it exports, in the
/// order reports list them. This is the only place outside a protocol's folder that names it.
macro_rules! protocols {
    ($($module:ident => [$($entry:ident),+ $(,)?]),+ $(,)?) => {
        $(pub mod $module;)+
        /// Every protocol, in report order ([`Protocol::ALL`]).
        pub(crate) static PROTOCOLS: &[Protocol] = &[$($(Protocol::of(&$module::$entry)),+),+];
    };
}

protocols! {
    plain => [PROTOCOL],
    openpgp => [PGP, OX],
    smime => [PROTOCOL],
    xmlsec => [PROTOCOL],
    otr => [PROTOCOL],
    esession => [PROTOCOL],
    xtls => [PROTOCOL],
    omemo => [OMEMO, OMEMO_LEGACY],
}

pub use content::{Content, MessageParts};
pub use engine::{
    Action, Carbon, Ceremony, Cx, Engine, EngineConfig, Event, IdentityMarks, OutOfBand, Output, Theft,
    Trust, TrustPolicy, VerificationResult,
};
pub use error::{E2eError, Fault};
pub use jid::{BareJid, FullJid, Jid};
pub use minidom::Element;
pub use reason::Reason;
pub use registry::{OptionDecl, Protocol, ProtocolDef, QuirkDecl, new_engine};
pub use wire::{Ciphertext, Wire, Withdrawn};
