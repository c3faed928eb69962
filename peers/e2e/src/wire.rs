//! The wire description: what the attacker, the judges and the diagrams may know of a
//! protocol's wire format, and nothing more. Each protocol's folder implements [`Wire`] and
//! hands it to the registry ([`crate::ProtocolDef::wire`]); scenarios then speak
//! protocol-neutral words (`flip: {ciphertext: true, bit: 77}`, `match: {conversation: true}`,
//! `downgrade: {body: ...}`) and a property template is the same for every protocol.
//!
//! Everything here works on what crosses the wire: it holds no keys, and what it lets the
//! attacker do (find the ciphertext, re-encode it, strip it) anyone on the path can do.

use core::ops::Range;

use minidom::Element;

/// A protocol's ciphertext, as it travels in a stanza, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ciphertext {
    /// The protocol's protected blob, decoded from its transport encoding (base64, armour,
    /// text): a Data Message, OpenPGP packets, a CMS object, a TLS record, an OMEMO payload.
    pub bytes: Vec<u8>,
    /// Where the encrypted content proper sits in `bytes` (past headers, key ids and key
    /// packets): what a bit index in `flip: {ciphertext: true}` counts in.
    pub content: Range<usize>,
    /// What the blob is, for the transcript (`the OTR Data Message`).
    pub what: &'static str,
}

/// What a protocol's wire format looks like to someone on the path.
///
/// Every method has a default that knows nothing: a protocol says what applies to it.
pub trait Wire: Sync {
    /// Short labels of the payloads this protocol puts in stanzas, by namespace (`OMEMO
    /// encrypted`): what sequence diagrams print for them.
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// Whether this stanza carries the conversation, the text users write (encrypted or not),
    /// rather than key material, a handshake or session plumbing.
    fn carries_conversation(&self, stanza: &Element) -> bool {
        let _ = stanza;
        false
    }

    /// The ciphertext this stanza carries, decoded, if it carries one.
    fn ciphertext(&self, stanza: &Element) -> Option<Ciphertext> {
        let _ = stanza;
        None
    }

    /// Puts `bytes` (a changed [`Ciphertext::bytes`] of this stanza) back in place, encoded
    /// as the protocol encodes it (base64, armour with its CRC recomputed, as anyone can).
    /// `false` when the stanza carries no ciphertext.
    fn set_ciphertext(&self, stanza: &mut Element, bytes: &[u8]) -> bool {
        let _ = (stanza, bytes);
        false
    }

    /// What a downgrade attacker leaves: the encryption removed from the stanza and `body`
    /// put in clear in its place. `false` when the stanza carries no encryption to strip.
    fn strip_encryption(&self, stanza: &mut Element, body: &str) -> bool {
        let _ = (stanza, body);
        false
    }

    /// What a recording alone lets anyone forge: of the messages in a recording (each body
    /// with its sender, in order), how many anyone holding the recording could have made, and
    /// of how many that carry the protocol's messages. `None` when the protocol publishes
    /// nothing that helps (every protocol but one that reveals its old MAC keys).
    fn forgeable_from_recording(&self, recording: &[(String, String)]) -> Option<(usize, usize)> {
        let _ = recording;
        None
    }
}
