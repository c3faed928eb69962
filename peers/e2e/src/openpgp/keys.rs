//! The OpenPGP core both engines share: deterministic keys, certificates, and the four
//! operations (encrypt, decrypt, sign, verify) over rPGP (`pgp` 0.21), with every random byte
//! from the caller's RNG and every creation time from the caller's clock.
//!
//! rPGP's key builder and its default signature subpackets read the wall clock, so the key is
//! assembled by hand here (RFC 4880 §11.1 transferable secret key): an Ed25519 primary key
//! (legacy EdDSA, v4, certify + sign) with a positive self-certification of the user ID
//! `xmpp:<bare JID>` (XEP-0373 §"OpenPGP User IDs"), and a Curve25519 ECDH encryption subkey
//! bound by a subkey binding signature. This is the shape GnuPG 2.2 (`--quick-gen-key ...
//! future-default`) makes, and Sequoia reads it; RSA would be slower to generate for every
//! simulated device. Every signature carries explicit subpackets whose creation time is
//! passed in.

use core::time::Duration;

use pgp::composed::KeyType;
use pgp::composed::{
    Deserializable, DetachedSignature, Message, MessageBuilder, SignedKeyDetails, SignedPublicKey,
    SignedPublicSubKey, SignedSecretKey, SignedSecretSubKey, SubpacketConfig,
};
use pgp::crypto::ecc_curve::ECCCurve;
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::{
    self, Features, KeyFlags, PubKeyInner, Signature, SignatureConfig, SignatureType, Subpacket,
    SubpacketData, UserId,
};
use pgp::ser::Serialize;
use pgp::types::{
    CompressionAlgorithm, KeyDetails, KeyVersion, PacketHeaderVersion, Password, SignedUser, Tag, Timestamp,
};
use rand_core::RngCore;

use crate::E2eError;

use crate::rng06::Rng06;

/// When the constructor makes a key: the engines' constructors get no clock, so keys are dated
/// at the simulator's fixed epoch, 2026-01-01T00:00:00Z ([`crate::time::EPOCH`]).
/// Signatures made later (presence, messages) carry the simulated time of the call.
pub const KEY_CREATED: Duration = crate::time::EPOCH;

/// The hash every signature of ours uses.
const HASH: HashAlgorithm = HashAlgorithm::Sha256;

fn pgp_err(what: &'static str) -> impl Fn(pgp::errors::Error) -> E2eError {
    move |e| E2eError::Malformed { what, detail: e.to_string() }
}

/// A local failure of our own key operations (never input from the network).
fn local(e: pgp::errors::Error) -> E2eError {
    E2eError::Policy { detail: format!("OpenPGP operation failed: {e}") }
}

/// An OpenPGP timestamp (seconds, u32) from simulated time, saturating.
pub(crate) fn timestamp(t: Duration) -> Timestamp {
    Timestamp::from_secs(u32::try_from(t.as_secs()).unwrap_or(u32::MAX))
}

/// The XEP-0373 §4.1 "OpenPGP v4 fingerprint string": the 20 fingerprint bytes as upper-case
/// hex, no spaces (GnuPG's form minus the spaces). This is also how the engines show
/// fingerprints to users ([`crate::Engine::out_of_band`], [`crate::Event::TrustChanged`]).
pub fn fingerprint_hex(key: &impl KeyDetails) -> String {
    key.fingerprint().as_bytes().iter().map(|b| format!("{b:02X}")).collect()
}

/// A fingerprint as a user may type or read it: spaces dropped, upper case (so GnuPG's
/// grouped `ABCD EF01 ...` form compares equal to the plain one).
pub fn normalise_fingerprint(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).flat_map(char::to_uppercase).collect()
}

/// The user ID XEP-0373 §"OpenPGP User IDs" requires: `xmpp:juliet@example.org`.
pub fn xmpp_uid(bare: &jid::BareJid) -> String {
    format!("xmpp:{bare}")
}

/// This device's key pair.
#[derive(Clone)]
pub struct OwnKey {
    secret: SignedSecretKey,
    public: SignedPublicKey,
    fingerprint: String,
}

impl core::fmt::Debug for OwnKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OwnKey").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl OwnKey {
    /// A new key for `uid`, created at `created`, from `rng` (see the module docs for its shape).
    pub fn generate(uid: &str, created: Duration, rng: &mut dyn RngCore) -> Result<OwnKey, E2eError> {
        let mut rng = Rng06(rng);
        let created_ts = timestamp(created);
        let pw = Password::empty();

        // The primary key: Ed25519 (legacy EdDSA), certify + sign.
        let (public_params, secret_params) = KeyType::Ed25519Legacy.generate(&mut rng).map_err(local)?;
        let primary_pub = packet::PublicKey::from_inner(
            PubKeyInner::new(
                KeyVersion::V4,
                PublicKeyAlgorithm::EdDSALegacy,
                created_ts,
                None,
                public_params,
            )
            .map_err(local)?,
        )
        .map_err(local)?;
        let primary = packet::SecretKey::new(primary_pub.clone(), secret_params).map_err(local)?;

        let base = |typ: SignatureType| -> Result<SignatureConfig, E2eError> {
            let mut config = SignatureConfig::v4(typ, PublicKeyAlgorithm::EdDSALegacy, HASH);
            config.hashed_subpackets = vec![
                Subpacket::regular(SubpacketData::SignatureCreationTime(created_ts)).map_err(local)?,
                Subpacket::regular(SubpacketData::IssuerFingerprint(primary_pub.fingerprint()))
                    .map_err(local)?,
            ];
            config.unhashed_subpackets = vec![
                Subpacket::regular(SubpacketData::IssuerKeyId(primary_pub.legacy_key_id())).map_err(local)?,
            ];
            Ok(config)
        };

        // RFC 4880 §5.2.1 0x13 positive certification of the user ID, carrying the key's
        // flags and preferences (§5.2.3.7-9, §5.2.3.21, §5.2.3.24).
        let user_id = UserId::from_str(PacketHeaderVersion::New, uid).map_err(local)?;
        let mut cert = base(SignatureType::CertPositive)?;
        let mut flags = KeyFlags::default();
        flags.set_certify(true);
        flags.set_sign(true);
        let mut features = Features::default();
        features.set_seipd_v1(true);
        for data in [
            SubpacketData::KeyFlags(flags),
            SubpacketData::Features(features),
            SubpacketData::PreferredSymmetricAlgorithms(
                vec![SymmetricKeyAlgorithm::AES256, SymmetricKeyAlgorithm::AES128].into(),
            ),
            SubpacketData::PreferredHashAlgorithms(vec![HashAlgorithm::Sha256, HashAlgorithm::Sha512].into()),
            SubpacketData::PreferredCompressionAlgorithms(
                vec![
                    CompressionAlgorithm::ZLIB,
                    CompressionAlgorithm::ZIP,
                    CompressionAlgorithm::Uncompressed,
                ]
                .into(),
            ),
            SubpacketData::IsPrimary(true),
        ] {
            cert.hashed_subpackets.push(Subpacket::regular(data).map_err(local)?);
        }
        let cert_sig =
            cert.sign_certification(&primary, &primary_pub, &pw, Tag::UserId, &user_id).map_err(local)?;

        // The encryption subkey: Curve25519 ECDH, bound with a 0x18 subkey binding signature.
        let (public_params, secret_params) =
            KeyType::ECDH(ECCCurve::Curve25519Legacy).generate(&mut rng).map_err(local)?;
        let sub_pub = packet::PublicSubkey::from_inner(
            PubKeyInner::new(KeyVersion::V4, PublicKeyAlgorithm::ECDH, created_ts, None, public_params)
                .map_err(local)?,
        )
        .map_err(local)?;
        let sub = packet::SecretSubkey::new(sub_pub.clone(), secret_params).map_err(local)?;
        let mut binding = base(SignatureType::SubkeyBinding)?;
        let mut flags = KeyFlags::default();
        flags.set_encrypt_comms(true);
        flags.set_encrypt_storage(true);
        binding.hashed_subpackets.push(Subpacket::regular(SubpacketData::KeyFlags(flags)).map_err(local)?);
        let binding_sig =
            binding.sign_subkey_binding(&primary, &primary_pub, &pw, &sub_pub).map_err(local)?;

        let secret = SignedSecretKey::new(
            primary,
            SignedKeyDetails::new(vec![], vec![], vec![SignedUser::new(user_id, vec![cert_sig])], vec![]),
            vec![],
            vec![SignedSecretSubKey::new(sub, vec![binding_sig])],
        );
        let public = secret.to_public_key();
        let fingerprint = fingerprint_hex(&public);
        Ok(OwnKey { secret, public, fingerprint })
    }

    /// Our secret key (tests build revocations and expiring certifications with it).
    #[cfg(test)]
    pub(crate) fn secret_key(&self) -> &SignedSecretKey {
        &self.secret
    }

    /// Our fingerprint (XEP-0373 v4 fingerprint string).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// What the device shows out of band: its fingerprint.
    pub fn out_of_band(&self) -> crate::OutOfBand {
        crate::OutOfBand { peer_says: vec![self.fingerprint().to_owned()] }
    }

    /// What identifies our key to whoever sees it travel: the transferable public key, its
    /// v4 fingerprint and its key ID (the fingerprint's low 64 bits, RFC 4880 §12.2), which
    /// signatures name their issuer by.
    pub fn identity_marks(&self) -> crate::IdentityMarks {
        let mut marks = Vec::new();
        if let Ok(bytes) = self.public_bytes() {
            marks.push(("public key", bytes));
        }
        if let Some(fp) = crate::kit::codec::unhex(self.fingerprint()) {
            if let Some(id) = fp.get(fp.len().saturating_sub(8)..) {
                marks.push(("key ID", id.to_vec()));
            }
            marks.push(("fingerprint", fp));
        }
        marks
    }

    /// Our certificate.
    pub fn public(&self) -> &SignedPublicKey {
        &self.public
    }

    /// Our transferable public key, binary (RFC 4880 §11.1).
    pub fn public_bytes(&self) -> Result<Vec<u8>, E2eError> {
        self.public.to_bytes().map_err(local)
    }

    /// Our transferable public key, ASCII-armoured.
    pub fn public_armored(&self) -> Result<String, E2eError> {
        self.public.to_armored_string(None.into()).map_err(local)
    }

    /// Our transferable secret key, ASCII-armoured and unprotected.
    pub fn secret_armored(&self) -> Result<String, E2eError> {
        self.secret.to_armored_string(None.into()).map_err(local)
    }

    /// A detached binary signature (RFC 4880 §5.2.1 type 0x00) over `data`, made at `now`;
    /// returns the signature packet.
    pub fn sign_detached(
        &self,
        rng: &mut dyn RngCore,
        data: &[u8],
        now: Duration,
    ) -> Result<Vec<u8>, E2eError> {
        let sig = DetachedSignature::sign_binary_data_with_subpackets(
            Rng06(rng),
            &self.secret.primary_key,
            &Password::empty(),
            HASH,
            data,
            self.subpackets(now)?,
        )
        .map_err(local)?;
        sig.to_bytes().map_err(local)
    }

    fn subpackets(&self, now: Duration) -> Result<SubpacketConfig, E2eError> {
        Ok(SubpacketConfig::UserDefined {
            hashed: vec![
                Subpacket::regular(SubpacketData::SignatureCreationTime(timestamp(now))).map_err(local)?,
                Subpacket::regular(SubpacketData::IssuerFingerprint(self.public.fingerprint()))
                    .map_err(local)?,
            ],
            unhashed: vec![
                Subpacket::regular(SubpacketData::IssuerKeyId(self.public.legacy_key_id())).map_err(local)?,
            ],
        })
    }

    /// An OpenPGP message (RFC 4880 §11.3, SEIPD v1 with AES-256) holding `data` as binary
    /// literal data, encrypted to every encryption key of every certificate in `to` that is
    /// valid at `now` ([`encryption_keys`]), and, when `sign` is set, one-pass signed by us at
    /// `now` before encryption.
    pub fn encrypt(
        &self,
        rng: &mut dyn RngCore,
        to: &[&SignedPublicKey],
        data: &[u8],
        now: Duration,
        sign: bool,
    ) -> Result<Vec<u8>, E2eError> {
        let sign_at = sign.then_some(now);
        let mut rng = Rng06(rng);
        let mut builder =
            MessageBuilder::from_bytes("", data.to_vec()).seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
        let mut recipients = 0;
        for cert in to {
            for key in encryption_keys(cert, now) {
                builder.encrypt_to_key(&mut rng, key).map_err(local)?;
                recipients += 1;
            }
        }
        if recipients == 0 {
            return Err(E2eError::Policy { detail: "no encryption-capable key to encrypt to".into() });
        }
        if let Some(at) = sign_at {
            builder.sign_with_subpackets(
                &self.secret.primary_key,
                Password::empty(),
                HASH,
                self.subpackets(at)?,
            );
        }
        builder.to_vec(&mut rng).map_err(local)
    }

    /// Decrypts an OpenPGP message with our key: the literal data, and the signature it
    /// carried if it was signed (not verified here: see [`verify_by`]).
    pub fn decrypt(&self, bytes: &[u8]) -> Result<Decrypted, E2eError> {
        let message = Message::from_bytes(bytes).map_err(pgp_err("openpgp message"))?;
        if !message.is_encrypted() {
            return Err(E2eError::Rejected {
                reason: "not-encrypted",
                detail: "the OpenPGP message is not encrypted".into(),
            });
        }
        let message = message.decrypt(&Password::empty(), &self.secret).map_err(|e| E2eError::Rejected {
            reason: "undecryptable",
            detail: format!("not decryptable with our key {}: {e}", self.fingerprint),
        })?;
        let mut message = open_layers(message)?;
        // Streamed through a bounded reader, never `as_data_vec` (rPGP: it "may be arbitrarily
        // large"): a few hundred compressed bytes can inflate to gigabytes (XEP-0373
        // §"Security Considerations" cites CVE-2013-4402). One byte over the limit is enough
        // to know the message is too large; the signature is only read at the end, so a
        // message cut short is refused, never passed on unverified.
        let mut data = Vec::new();
        let limit = u64::try_from(MAX_PLAINTEXT).unwrap_or(u64::MAX).saturating_add(1);
        std::io::Read::read_to_end(&mut std::io::Read::take(&mut message, limit), &mut data)
            .map_err(|e| E2eError::Rejected { reason: "undecryptable", detail: e.to_string() })?;
        if data.len() > MAX_PLAINTEXT {
            return Err(E2eError::Rejected {
                reason: "too-large",
                detail: format!("the decrypted content exceeds {MAX_PLAINTEXT} bytes"),
            });
        }
        let signature = match &message {
            Message::Signed { reader, .. } => reader.signature(0).cloned(),
            _ => None,
        };
        Ok(Decrypted { data, signature })
    }
}

/// The most decrypted content either engine reads: 64 KiB. An XMPP stanza is far smaller in
/// practice (servers commonly cap stanzas at 64–256 KiB), the OX `<signcrypt/>` of a chat
/// message and an XEP-0027 body too; anything larger is refused as `too-large`.
pub const MAX_PLAINTEXT: usize = 64 * 1024;

/// Opens at most one compression layer (RFC 4880 §5.6; GnuPG and Sequoia write one). A
/// compressed packet inside a compressed packet is refused: nesting only multiplies a
/// decompression bomb's ratio.
fn open_layers(message: Message<'_>) -> Result<Message<'_>, E2eError> {
    if !message.is_compressed() {
        return Ok(message);
    }
    let message = message.decompress().map_err(pgp_err("compressed data"))?;
    if message.is_compressed() {
        return Err(E2eError::Malformed {
            what: "openpgp message",
            detail: "compressed data inside compressed data".into(),
        });
    }
    Ok(message)
}

/// What [`OwnKey::decrypt`] found.
#[derive(Debug, Clone)]
pub struct Decrypted {
    /// The literal data.
    pub data: Vec<u8>,
    /// The message's signature, if it was signed.
    pub signature: Option<Signature>,
}

/// Parses and checks a transferable public key (binary or armoured): every self-signature
/// and subkey binding (with back-signatures for signing subkeys) must verify.
pub fn parse_cert(bytes: &[u8]) -> Result<SignedPublicKey, E2eError> {
    let key = if bytes.starts_with(b"-----BEGIN") {
        SignedPublicKey::from_armor_single(bytes).map(|(k, _)| k)
    } else {
        SignedPublicKey::from_bytes(bytes)
    }
    .map_err(pgp_err("public key"))?;
    if key.primary_key.version() != KeyVersion::V4 {
        // XEP-0373 §"OpenPGP Version": v4 or higher; the fingerprint string is the v4 one.
        return Err(E2eError::Malformed { what: "public key", detail: "not a v4 key".into() });
    }
    key.verify_bindings()
        .map_err(|e| E2eError::Rejected { reason: "bad-key-binding", detail: e.to_string() })?;
    // RFC 4880 §5.2.1 0x20: a key revocation signature (verified just now with the primary
    // key) revokes the whole certificate.
    if key.details.revocation_signatures.iter().any(|s| s.typ() == Some(SignatureType::KeyRevocation)) {
        return Err(E2eError::Rejected {
            reason: "key-revoked",
            detail: format!("key {} carries a key revocation signature", fingerprint_hex(&key)),
        });
    }
    Ok(key)
}

/// Whether `cert` has a valid (see [`valid_user_ids`]) user ID naming `bare`: `xmpp:<bare>`
/// (XEP-0373, compared as [`has_xmpp_uid`] does), or, for keys made for e-mail that XEP-0027
/// users kept, `<bare>` as the whole ID or in angle brackets.
pub fn names_account(cert: &SignedPublicKey, bare: &jid::BareJid) -> bool {
    let text = bare.to_string();
    let angle = format!("<{text}>");
    valid_user_ids(cert).any(|id| {
        let id = id.trim();
        uid_is_xmpp_of(id, bare) || id == text || id.ends_with(&angle)
    })
}

/// Whether `cert` has a valid user ID `xmpp:<bare>` (XEP-0373 §7.3 "OpenPGP User IDs": "The
/// OpenPGP User ID [...] MUST be the XMPP address prefixed with 'xmpp:'"): the address after
/// the prefix is parsed and compared as a bare JID (so `xmpp:Juliet@Example.org` names
/// `juliet@example.org`: JID normalisation, RFC 7622), never as raw text.
pub fn has_xmpp_uid(cert: &SignedPublicKey, bare: &jid::BareJid) -> bool {
    valid_user_ids(cert).any(|id| uid_is_xmpp_of(id, bare))
}

fn uid_is_xmpp_of(id: &str, bare: &jid::BareJid) -> bool {
    id.strip_prefix("xmpp:").and_then(|a| a.parse::<jid::BareJid>().ok()).is_some_and(|a| a == *bare)
}

fn sig_secs(sig: &Signature) -> u32 {
    sig.created().map(Timestamp::as_secs).unwrap_or(0)
}

fn is_self_certification(sig: &Signature) -> bool {
    matches!(
        sig.typ(),
        Some(
            SignatureType::CertGeneric
                | SignatureType::CertPersona
                | SignatureType::CertCasual
                | SignatureType::CertPositive
        )
    )
}

/// A user ID counts when a self-certification (RFC 4880 §5.2.1 0x10–0x13) on it is newer than
/// every certification revocation (0x30) on it (a revocation at the same second wins). Every
/// signature on a user ID was verified by [`parse_cert`] (rPGP checks them all against the
/// primary key).
fn user_valid(user: &SignedUser) -> bool {
    let revoked =
        user.signatures.iter().filter(|s| s.typ() == Some(SignatureType::CertRevocation)).map(sig_secs).max();
    user.signatures
        .iter()
        .filter(|s| is_self_certification(s))
        .map(sig_secs)
        .any(|t| revoked.is_none_or(|r| t > r))
}

/// The user IDs of `cert` that are not revoked (see [`user_valid`]).
pub fn valid_user_ids(cert: &SignedPublicKey) -> impl Iterator<Item = &str> {
    cert.details.users.iter().filter(|u| user_valid(u)).filter_map(|u| u.id.as_str())
}

/// When the primary key expires (RFC 4880 §5.2.3.6, seconds since the epoch): the key
/// expiration time of its newest self-signature (a valid user ID's certification or a direct
/// key signature), counted from the key's creation; `None` when it never expires.
fn primary_expiry(cert: &SignedPublicKey) -> Option<u64> {
    let newest = cert
        .details
        .users
        .iter()
        .filter(|u| user_valid(u))
        .flat_map(|u| u.signatures.iter().filter(|s| is_self_certification(s)))
        .chain(cert.details.direct_signatures.iter())
        .max_by_key(|s| sig_secs(s))?;
    expiry(cert.primary_key.created_at(), newest)
}

fn expiry(created: Timestamp, sig: &Signature) -> Option<u64> {
    let d = u64::from(sig.key_expiration_time()?.as_secs());
    // "If this is not present or has a value of zero, the key never expires" (§5.2.3.6).
    (d != 0).then(|| u64::from(created.as_secs()) + d)
}

/// Whether `cert`'s primary key has expired at `now`.
pub fn expired_at(cert: &SignedPublicKey, now: Duration) -> bool {
    primary_expiry(cert).is_some_and(|t| now.as_secs() >= t)
}

fn latest_binding(sub: &SignedPublicSubKey) -> Option<&Signature> {
    sub.signatures.iter().max_by_key(|s| sig_secs(s))
}

/// The subkeys a message to `cert` is encrypted to at `now`: none if the primary key has
/// expired; otherwise those whose latest binding signature is a subkey binding (0x18, not a
/// 0x28 revocation) that allows encryption (RFC 4880 §5.2.3.21 flags 0x04/0x08), whose
/// algorithm can encrypt, and whose binding's key expiration time has not passed.
pub fn encryption_keys(cert: &SignedPublicKey, now: Duration) -> Vec<&SignedPublicSubKey> {
    if expired_at(cert, now) {
        return vec![];
    }
    cert.public_subkeys
        .iter()
        .filter(|s| s.key.algorithm().can_encrypt())
        .filter(|s| {
            latest_binding(s).is_some_and(|b| {
                b.typ() == Some(SignatureType::SubkeyBinding)
                    && (b.key_flags().encrypt_comms() || b.key_flags().encrypt_storage())
                    && expiry(s.key.created_at(), b).is_none_or(|t| now.as_secs() < t)
            })
        })
        .collect()
}

/// Verifies `sig` over `data` with the primary key of `cert` or one of its signing subkeys
/// (the signature names its issuer; rPGP refuses a key that is not it). Binding signatures
/// were checked by [`parse_cert`], back-signatures included.
pub fn verify_by(cert: &SignedPublicKey, sig: &Signature, data: &[u8]) -> bool {
    if sig.verify(&cert.primary_key, data).is_ok() {
        return true;
    }
    cert.public_subkeys
        .iter()
        .filter(|s| latest_binding(s).is_some_and(|b| b.key_flags().sign()))
        .any(|s| sig.verify(&s.key, data).is_ok())
}

/// The fingerprints or key ids a signature names as its issuer, upper-case hex.
pub fn issuers(sig: &Signature) -> Vec<String> {
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02X}")).collect::<String>();
    let mut out: Vec<String> = sig.issuer_fingerprint().iter().map(|f| hex(f.as_bytes())).collect();
    out.extend(sig.issuer_key_id().iter().map(|k| hex(k.as_ref())));
    out
}

/// Whether `issuer` (a fingerprint or a 16-hex key id) names `cert` or one of its subkeys.
pub fn cert_matches_issuer(cert: &SignedPublicKey, issuer: &str) -> bool {
    let mut names = vec![fingerprint_hex(&cert.primary_key)];
    names.extend(cert.public_subkeys.iter().map(|s| fingerprint_hex(&s.key)));
    names.iter().any(|fpr| fpr == issuer || (issuer.len() == 16 && fpr.ends_with(issuer)))
}

/// Parses one signature packet (a detached signature).
pub fn parse_signature(bytes: &[u8]) -> Result<Signature, E2eError> {
    DetachedSignature::from_bytes(bytes).map(|d| d.signature).map_err(pgp_err("signature"))
}

// ---- ASCII armour, as XEP-0027 carries it ------------------------------------------------------

/// The armour block kinds XEP-0027 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// `PGP MESSAGE` (`jabber:x:encrypted`).
    Message,
    /// `PGP SIGNATURE` (`jabber:x:signed`).
    Signature,
}

impl Block {
    fn label(self) -> &'static str {
        match self {
            Block::Message => "PGP MESSAGE",
            Block::Signature => "PGP SIGNATURE",
        }
    }
}

pub use crate::kit::codec::{armor_body, dearmor_body};

/// The full armour of a header-less XEP-0027 body (what `gpg` reads).
pub fn armor_full(block: Block, body: &str) -> String {
    let lines: Vec<&str> = body.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    format!("-----BEGIN {0}-----\n\n{1}\n-----END {0}-----\n", block.label(), lines.join("\n"))
}
