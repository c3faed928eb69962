//! Jabberwock's end-to-end encryption engines.
//!
//! Every protocol is a sans-I/O state machine behind the [`Engine`] trait: stanzas in,
//! [`Action`]s and [`Event`]s out. An engine owns no socket, no clock and no randomness:
//! the caller hands it a [`Cx`] carrying the seeded RNG and the simulated time, so the
//! same inputs always give the same bytes (the way quinn-proto and rustls are built).
//!
//! This crate must never depend on tokio or turmoil: an engine does not know it is simulated.

mod engine;
mod error;
pub mod esession;
pub mod omemo;
pub mod openpgp;
pub mod otr;
pub mod plain;
mod rng06;
mod rsa_keygen;
pub mod smime;
#[cfg(test)]
mod testing;
pub mod time;
pub mod tls;
pub mod xml;
pub mod xmlsec;
pub mod xtls;

pub use engine::{
    Action, Carbon, ContentCipher, Cx, Engine, EngineConfig, Event, OutOfBand, Output, Protocol, Theft,
    Trust, TrustPolicy, VerificationResult, new_engine,
};
pub use error::{E2eError, Fault};
pub use jid::{BareJid, FullJid, Jid};
pub use minidom::Element;
