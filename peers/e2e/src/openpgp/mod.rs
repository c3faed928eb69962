//! OpenPGP in XMPP, two ways, on one core ([`keys`]: rPGP with the device's seeded RNG and the
//! simulated clock):
//!
//! - [`Pgp`] — XEP-0027 "Current Jabber OpenPGP Usage" (`pgp`): signed presence
//!   (`jabber:x:signed`) and encrypted message bodies (`jabber:x:encrypted`).
//! - [`Ox`] — XEP-0373 "OpenPGP for XMPP" with the XEP-0374 instant-messaging profile (`ox`):
//!   public keys in PEP, `<openpgp/>` carrying a signed and encrypted `<signcrypt/>`.
//!
//! # Keys
//!
//! Every device makes its own key at construction: an Ed25519 primary key (certify + sign)
//! with the user ID `xmpp:<bare JID>` and a Curve25519 encryption subkey, OpenPGP v4 — the
//! shape GnuPG 2.2 and Sequoia both read (see [`keys`]). The constructors get no clock, so keys
//! are dated [`keys::KEY_CREATED`] (the simulator's epoch); every later signature carries the
//! simulated time of the call. Fingerprints are shown as the XEP-0373 v4 fingerprint string:
//! 40 upper-case hex digits, no spaces (GnuPG's grouping minus the spaces); a fingerprint
//! given with spaces or in lower case compares equal.
//!
//! # XEP-0027: how it is modelled
//!
//! XEP-0027 §1 says keys come from OpenPGP keyservers, "usually retrieved when a signed
//! presence stanza is received (key retrieval does not happen in-band)". The simulation has no
//! keyserver, so one is modelled as a PEP node on each account, [`xep0027::NODE_KEYSERVER`]
//! (`urn:xmpp:jabberwock:keyserver:0`, access model `open`, every item kept): one item per
//! device key, item id = its fingerprint, payload
//! `<pubkey xmlns='urn:xmpp:jabberwock:keyserver:0'>BASE64 transferable public key</pubkey>`.
//! Like an SKS keyserver, which accepted any upload, the node proves nothing: the item id is
//! informational (the fingerprint is computed from the key), and the only check is the one
//! XEP-0027 §4 leaves ("checking the user IDs on a key"): a key must carry a self-certified
//! user ID naming the account (`xmpp:<bare>`, `<bare>`, or `... <bare>`). A malicious server
//! that substitutes the items plays the poisoned keyserver. The node is read when signed
//! presence arrives from an account whose key we do not hold, when we send to an account
//! whose keys we never looked up, and (our own account) at [`crate::Engine::publish`], so a
//! message is also encrypted to our other devices.
//!
//! What XEP-0027 does not protect, and this engine therefore does not either (§4):
//! - messages are encrypted, never signed ("it does not enable both signing and encryption"):
//!   the sender of a decrypted message is unauthenticated, so every plaintext is reported
//!   `Trust::Unverified`, even from a contact whose key the user verified (the key that was
//!   verified is the one we encrypt *to*; nothing binds a received message to it). Anyone who
//!   has our public key can write such a message, so [`crate::Engine::forge`] returns one;
//! - the recipient is not named inside the encrypted body: a recorded message replays;
//! - signed presence replays too (the signature covers the status text only).
//!
//! # XEP-0373/0374: what is checked
//!
//! Keys: the metadata node [`ox::NODE_PUBLIC_KEYS`] (one item `current`,
//! `<public-keys-list><pubkey-metadata v4-fingerprint date/></public-keys-list>`) and one data
//! node per key, `urn:xmpp:openpgp:0:public-keys:FINGERPRINT` (item id = the publication time,
//! `<pubkey date><data>BASE64</data></pubkey>`), both `open` (§4.1–4.3). Our own metadata list
//! is fetched at publish and our fingerprint added if missing (§6.3's re-announce rule). A
//! fetched key must have the fingerprint its node names and the user ID `xmpp:<bare>`
//! (§3.2, §8.5 "OpenPGP User IDs"), compared as a normalised bare JID (§7.3); the most recent
//! item counts (§4.4).
//!
//! Messages (XEP-0374 §2.2, §3): `<signcrypt>` with one `<to jid=bare/>`, `<time stamp/>`, an
//! `<rpad/>` of random length (0–199 characters) and `<payload><body xmlns='jabber:client'/>
//! </payload>`; signed by our primary key, then encrypted (SEIPD v1, AES-256) to every announced
//! key of the recipient that is not untrusted, to our own key and our other announced keys
//! (XEP-0373 §3.1: "SHOULD also be encrypted to self"); plus a fallback `<body/>`, the XEP-0380 EME hint and a
//! XEP-0334 store hint. On receipt (XEP-0373 §3.2 "Verification"): the message must decrypt
//! with our key, be signed, the signature must verify with an announced key of the `from`
//! account (fetched if unknown: the stanza waits for it), one of the `<to/>` must be the
//! stanza's `to` (bare; our own account when the stanza has none), and `time` must be plausible.
//! Plausible is read as "not more than [`ox::MAX_CLOCK_SKEW`] (5 minutes) in the future":
//! an old stamp is normal for offline or archived messages and cannot be refused without state.
//! Before the decrypted `<signcrypt/>` is parsed, it is bounded: at most
//! [`keys::MAX_PLAINTEXT`] (64 KiB) is decompressed and read (one compression layer), and
//! elements nested more than 32 deep are refused (minidom recurses).
//!
//! Limits on what the network can make us keep (the XEPs set none): at most
//! [`ox::MAX_KEYS_PER_ACCOUNT`] (16) announced keys per account, key data only for announced
//! fingerprints, at most 4 received stanzas per sender (64 in all) waiting for the sender's
//! keys; for XEP-0027 [`xep0027::MAX_KEYS_PER_ACCOUNT`] (16) keyserver keys per account and
//! [`xep0027::MAX_PENDING_PRESENCE`] (64) presences waiting for a lookup. Revoked keys (0x20),
//! revoked user IDs (0x30 newer than every self-certification) and keys or subkeys expired at
//! the simulated time are not used.
//! XEP-0373 §8.3 (Rationale, "Addressing the Issues and Problems of XEP-0027") says the `to`
//! and `time` elements *mitigate* replay and (in a note) that "full Replay attack prevention
//! would require a counter based approach", which it does
//! not define: so there is no replay cache, and a replayed stanza is shown again.
//! The secret key backup node (§5) is optional and not implemented: every device has its own
//! key and announces it.
//!
//! Where the specifications are silent (interpretations, also noted at the code):
//! - XEP-0027 does not say which OpenPGP signature type signs presence: a binary signature
//!   (0x00, `gpg --detach-sign`) over the UTF-8 status; text signatures are accepted.
//! - XEP-0027 does not say what happens to a signed presence whose key is unknown: the
//!   keyserver is consulted and the signature verified when the key arrives.
//! - Our client sends no `<status/>`, so presence signs the empty string (XEP-0027 1.3 allows it).
//! - Trust policies with keys as devices: see [`trust`].

pub mod keys;
pub mod ox;
mod seam;
mod trust;
pub mod xep0027;

#[cfg(test)]
mod tests;

use jid::FullJid;
use rand_core::RngCore;

use crate::{Engine, EngineConfig};
use core::time::Duration;

pub use ox::Ox;
pub use xep0027::Pgp;

use crate::E2eError;

/// The registry entry of XEP-0027.
pub static PGP: crate::ProtocolDef =
    crate::ProtocolDef::new("pgp", module_path!(), build_pgp, &seam::PGP, include_str!("reasons-pgp.txt"));

/// Builds an XEP-0027 engine for a device.
fn build_pgp(me: &FullJid, rng: &mut dyn RngCore, config: &EngineConfig) -> Box<dyn Engine> {
    Box::new(Pgp::new(me.clone(), rng, config))
}

/// The registry entry of OX (XEP-0373/0374).
pub static OX: crate::ProtocolDef =
    crate::ProtocolDef::new("ox", module_path!(), build_ox, &seam::OX, include_str!("reasons-ox.txt"));

/// Builds an OX engine for a device.
fn build_ox(me: &FullJid, rng: &mut dyn RngCore, config: &EngineConfig) -> Box<dyn Engine> {
    Box::new(Ox::new(me.clone(), rng, config))
}

use crate::kit::codec::unb64_wrapped;

/// Base64 with any whitespace inside (keys and messages are often line-wrapped); nothing at
/// all is a missing element.
pub(crate) fn unb64(what: &'static str, text: &str) -> Result<Vec<u8>, E2eError> {
    if text.trim().is_empty() {
        return Err(E2eError::Missing { what });
    }
    unb64_wrapped(what, text)
}

/// XEP-0082 DateTime: the strict UTC profile of [`crate::time::parse_stamp`], plus the
/// numeric offsets XEP-0373's own example uses (`2014-07-10T17:06:00+02:00`).
pub(crate) fn parse_time(s: &str) -> Option<Duration> {
    if let Some(t) = crate::time::parse_stamp(s) {
        return Some(t);
    }
    let (base, sign, off) = match s.len().checked_sub(6).and_then(|i| s.get(i..).map(|o| (i, o))) {
        Some((i, off)) if off.starts_with('+') || off.starts_with('-') => {
            (s.get(..i)?, off.starts_with('+'), off.get(1..)?)
        }
        _ => return None,
    };
    let (hh, mm) = off.split_once(':')?;
    if hh.len() != 2 || mm.len() != 2 {
        return None;
    }
    let (hh, mm): (u64, u64) = (hh.parse().ok()?, mm.parse().ok()?);
    if hh > 23 || mm > 59 {
        return None;
    }
    let local = crate::time::parse_stamp(&format!("{base}Z"))?;
    let offset = Duration::from_secs(hh * 3600 + mm * 60);
    // Local time = UTC + offset, so UTC = local - offset.
    if sign { local.checked_sub(offset) } else { local.checked_add(offset) }
}
