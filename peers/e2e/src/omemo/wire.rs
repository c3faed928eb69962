//! XEP-0384 §protobuf-schema: the three protobuf (proto2) structures of OMEMO 2.
//!
//! ```text
//! message OMEMOMessage {
//!     required uint32 n          = 1;
//!     required uint32 pn         = 2;
//!     required bytes  dh_pub     = 3;
//!     optional bytes  ciphertext = 4;
//! }
//! message OMEMOAuthenticatedMessage {
//!     required bytes mac     = 1;
//!     required bytes message = 2; // Byte-encoding of an OMEMOMessage
//! }
//! message OMEMOKeyExchange {
//!     required uint32 pk_id  = 1;
//!     required uint32 spk_id = 2;
//!     required bytes  ik     = 3;
//!     required bytes  ek     = 4;
//!     required OMEMOAuthenticatedMessage message = 5;
//! }
//! ```

use prost::Message;

use crate::E2eError;

/// `OMEMOMessage`: the Double Ratchet header and the ciphertext.
#[derive(Clone, PartialEq, Message)]
pub struct OmemoMessage {
    /// Message number in the sending chain.
    #[prost(uint32, required, tag = "1")]
    pub n: u32,
    /// Length of the previous sending chain.
    #[prost(uint32, required, tag = "2")]
    pub pn: u32,
    /// The sender's current ratchet public key (X25519).
    #[prost(bytes = "vec", required, tag = "3")]
    pub dh_pub: Vec<u8>,
    /// AES-256-CBC ciphertext of the key and HMAC of the payload.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub ciphertext: Option<Vec<u8>>,
}

/// `OMEMOAuthenticatedMessage`: an `OMEMOMessage` and its truncated HMAC.
#[derive(Clone, PartialEq, Message)]
pub struct OmemoAuthenticatedMessage {
    /// HMAC-SHA-256 over `ad || message`, truncated to 16 bytes.
    #[prost(bytes = "vec", required, tag = "1")]
    pub mac: Vec<u8>,
    /// The serialised `OMEMOMessage`, kept byte for byte as it was authenticated.
    #[prost(bytes = "vec", required, tag = "2")]
    pub message: Vec<u8>,
}

/// `OMEMOKeyExchange`: the X3DH header sent until the recipient answers.
#[derive(Clone, PartialEq, Message)]
pub struct OmemoKeyExchange {
    /// The id of the recipient's one-time PreKey that was used.
    #[prost(uint32, required, tag = "1")]
    pub pk_id: u32,
    /// The id of the recipient's signed PreKey that was used.
    #[prost(uint32, required, tag = "2")]
    pub spk_id: u32,
    /// The sender's IdentityKey, Ed25519 encoding.
    #[prost(bytes = "vec", required, tag = "3")]
    pub ik: Vec<u8>,
    /// The sender's ephemeral X25519 key.
    #[prost(bytes = "vec", required, tag = "4")]
    pub ek: Vec<u8>,
    /// The first (or a later) ratchet message.
    #[prost(message, required, tag = "5")]
    pub message: OmemoAuthenticatedMessage,
}

/// libsignal's `WhisperMessage` as OMEMO 0.3 uses it (after the 0x33 version byte).
#[derive(Clone, PartialEq, Message)]
pub struct LegacyMessage {
    /// The sender's ratchet key, 0x05 || X25519 key.
    #[prost(bytes = "vec", required, tag = "1")]
    pub dh_pub: Vec<u8>,
    /// Message number (`counter`).
    #[prost(uint32, required, tag = "2")]
    pub n: u32,
    /// Previous chain length (`previousCounter`).
    #[prost(uint32, required, tag = "3")]
    pub pn: u32,
    /// AES-256-CBC ciphertext.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub ciphertext: Option<Vec<u8>>,
}

/// libsignal's `PreKeyWhisperMessage` as OMEMO 0.3 uses it (after the 0x33 version byte).
/// Field numbers are libsignal's; oldmemo requires all but the registration id.
#[derive(Clone, PartialEq, Message)]
pub struct LegacyKeyExchange {
    /// The id of the recipient's one-time PreKey that was used (`preKeyId`).
    #[prost(uint32, required, tag = "1")]
    pub pk_id: u32,
    /// The initiator's ephemeral key (`baseKey`), 0x05 || X25519 key.
    #[prost(bytes = "vec", required, tag = "2")]
    pub ek: Vec<u8>,
    /// The initiator's identity key, 0x05 || Curve25519 form.
    #[prost(bytes = "vec", required, tag = "3")]
    pub ik: Vec<u8>,
    /// A whole `WhisperMessage`: version byte, protobuf and MAC.
    #[prost(bytes = "vec", required, tag = "4")]
    pub message: Vec<u8>,
    /// libsignal's `registrationId`, unused by OMEMO.
    #[prost(uint32, optional, tag = "5")]
    pub registration_id: Option<u32>,
    /// The id of the recipient's signed PreKey that was used (`signedPreKeyId`).
    #[prost(uint32, required, tag = "6")]
    pub spk_id: u32,
}

/// Decodes a protobuf structure from untrusted bytes.
pub fn decode<M: Message + Default>(what: &'static str, bytes: &[u8]) -> Result<M, E2eError> {
    M::decode(bytes).map_err(|e| E2eError::Malformed { what, detail: e.to_string() })
}

/// A 32-byte key field from untrusted bytes.
pub fn key32(what: &'static str, bytes: &[u8]) -> Result<[u8; 32], E2eError> {
    <[u8; 32]>::try_from(bytes)
        .map_err(|_| E2eError::Malformed { what, detail: format!("{} bytes, expected 32", bytes.len()) })
}
