//! The engine kit: the machinery every engine shares, kept once beside the protocol folders
//! (as rustls keeps its shared parts beside its protocol states).
//!
//! - [`directory`]: the key directory — fetches of peers' PEP nodes and the asked list, the
//!   pending queue of messages waiting for keys, stanzas held for their sender's keys, the
//!   answer to a failed fetch;
//! - [`trust`]: trust in peers' keys and the policies (BTBV, TOFU, manual) that decide it, and
//!   the fingerprint-comparison ceremony;
//! - [`codec`]: base64, hex and PEM-style armour;
//! - [`crypto`]: hashes, HMACs, AES-CTR, a constant-time comparison, random bytes.
//!
//! Nothing here knows a protocol: what a node holds, what a message needs and how an alert is
//! worded come from the engine (a small trait, a closure, a wording table).

pub mod codec;
pub mod crypto;
pub mod directory;
pub mod trust;

use crate::{Engine, Theft};

/// A copy of an engine as a thief holds it ([`Engine::steal`]): all of `copy` after
/// [`Theft::FullState`]; after [`Theft::LongTermKeys`] or [`Theft::IdentityKey`], what `forget`
/// leaves of it (sessions and whatever was in flight go; identity keys and the keys of others
/// stay). An engine that keeps long-term secrets beyond its identity key (ESessions' retained
/// secrets) drops them itself for [`Theft::IdentityKey`].
pub fn stolen<E: Engine + 'static>(mut copy: E, what: Theft, forget: impl FnOnce(&mut E)) -> Box<dyn Engine> {
    if what != Theft::FullState {
        forget(&mut copy);
    }
    Box::new(copy)
}
