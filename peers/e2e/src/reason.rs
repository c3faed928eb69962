//! The reasons engines report: the stable kebab-case codes of [`E2eError::code`] and of
//! [`Event::Alert`], which transcripts print and scenarios expect (`expect: {bob/laptop:
//! {errors: [bad-mac]}}`).
//!
//! Every reason is declared once, with what it means. The ones every engine may report (the
//! variants of [`E2eError`] other than `Rejected`) and the ones several engines share are
//! declared here; a protocol's own are declared in its folder, and its registry entry
//! ([`crate::ProtocolDef::reasons`]) lists everything it reports beyond [`EVERY_ENGINE`]. The
//! simulator assembles the whole list (with the client's stanza and stream errors) and rejects
//! a scenario that expects a reason nobody reports; its tests fail when code reports a reason
//! that is not declared.
//!
//! Every engine reason carries who is at fault when it is reported ([`Reason::fault`]: the
//! rule is in [`crate::error`]'s module docs), so an error's blame is declared where the
//! reason is, once.
//!
//! [`E2eError`]: crate::E2eError
//! [`E2eError::code`]: crate::E2eError::code
//! [`Event::Alert`]: crate::Event::Alert

use crate::Fault;

/// A reason a device reports (an error or an alert), with what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    /// The code (lowercase kebab-case), as transcripts print it and `expect:` writes it.
    pub code: &'static str,
    /// What it means, in one line, for the schema and the documentation.
    pub meaning: &'static str,
    /// An engine's reason: who is at fault when it is reported ([`crate::error`]'s module docs,
    /// "Who is at fault"); `None` for a notice (a session came up) and for the client's
    /// reasons, which are not an engine's to blame.
    pub fault: Option<Fault>,
}

impl Reason {
    /// A reason with its meaning and no fault: the client's, or an engine's notice.
    pub const fn new(code: &'static str, meaning: &'static str) -> Reason {
        Reason { code, meaning, fault: None }
    }

    /// An engine's reason, with who is at fault when it is reported.
    pub const fn engine(code: &'static str, fault: Fault, meaning: &'static str) -> Reason {
        Reason { code, meaning, fault: Some(fault) }
    }
}

// ---- every engine --------------------------------------------------------------------------

/// [`crate::E2eError::Malformed`].
pub const MALFORMED: Reason = Reason::engine(
    "malformed",
    Fault::PeerOrPath,
    "A stanza or payload does not have the shape the protocol requires (bad base64, XML, encoding or length).",
);
/// [`crate::E2eError::Missing`].
pub const MISSING_ELEMENT: Reason = Reason::engine(
    "missing-element",
    Fault::PeerOrPath,
    "A stanza lacks an element or field the protocol requires.",
);
/// [`crate::E2eError::Policy`].
pub const POLICY: Reason = Reason::engine(
    "policy",
    Fault::Local,
    "The device refuses to act on its own side: no trusted key of the recipient, no session to send in, a local failure.",
);

/// [`crate::E2eError::Adapter`]: the process exited.
pub const ADAPTER_CRASHED: Reason = Reason::engine(
    "adapter-crashed",
    Fault::Local,
    "The engine runs in another process (an adapter) and it exited or closed its output before answering.",
);
/// [`crate::E2eError::Adapter`]: no answer within the time limit.
pub const ADAPTER_TIMEOUT: Reason = Reason::engine(
    "adapter-timeout",
    Fault::Local,
    "The engine runs in another process (an adapter) and it did not answer within the time limit: it was stopped.",
);
/// [`crate::E2eError::Adapter`]: an answer the engine protocol does not allow.
pub const ADAPTER_GARBAGE: Reason = Reason::engine(
    "adapter-garbage",
    Fault::Local,
    "The engine runs in another process (an adapter) and it answered what the engine protocol does not allow (not JSON, too long, an unknown event or reason).",
);
/// The adapter's failures, [`crate::E2eError::Adapter`]'s reasons.
pub static ADAPTER: &[Reason] = &[ADAPTER_CRASHED, ADAPTER_TIMEOUT, ADAPTER_GARBAGE];
/// [`crate::E2eError::Unimplemented`].
pub const UNIMPLEMENTED: Reason = Reason::engine(
    "unimplemented",
    Fault::Local,
    "The engine runs behind an adapter that does not implement this call: no verdict is drawn from it.",
);

/// What every engine may report: the codes of [`crate::E2eError`]'s variants other than
/// `Rejected` (an adapter's failures included: any protocol's engine may run behind one).
pub static EVERY_ENGINE: &[Reason] =
    &[MALFORMED, MISSING_ELEMENT, POLICY, ADAPTER_CRASHED, ADAPTER_TIMEOUT, ADAPTER_GARBAGE, UNIMPLEMENTED];

// ---- shared by several engines ---------------------------------------------------------------

/// A clear body where end-to-end encryption was expected ([`crate::Output`]'s helper).
pub const UNENCRYPTED: Reason = Reason::engine(
    "unencrypted",
    Fault::PeerOrPath,
    "A message arrived without end-to-end encryption: shown, and flagged (what a downgrade must not get past).",
);
/// A message the user typed could not be sent.
pub const NOT_SENT: Reason = Reason::engine(
    "not-sent",
    Fault::Local,
    "A message the user typed was not sent (no usable key, session or device for the recipient).",
);
/// A verification ceremony with nothing to compare.
pub const NOTHING_TO_VERIFY: Reason = Reason::engine(
    "nothing-to-verify",
    Fault::Local,
    "The verification ceremony found no key or session of the peer to compare.",
);
/// The verification ceremony showed another key.
pub const FINGERPRINT_MISMATCH: Reason = Reason::engine(
    "fingerprint-mismatch",
    Fault::Path,
    "A key the device uses for the peer is not the one the peer shows out of band: someone is in the middle.",
);
/// The short authentication strings differ.
pub const SAS_MISMATCH: Reason = Reason::engine(
    "sas-mismatch",
    Fault::Path,
    "The short authentication string the peer reads out is not ours: someone is in the middle (the session is closed).",
);
/// A message signed with a key the user does not trust.
pub const UNTRUSTED_KEY: Reason = Reason::engine(
    "untrusted-key",
    Fault::Local,
    "A message is signed with (or a session runs under) a key the user does not trust.",
);
/// A device the user does not trust.
pub const UNTRUSTED_DEVICE: Reason = Reason::engine(
    "untrusted-device",
    Fault::Local,
    "A peer device's key is not trusted: what it sends is flagged, nothing is sent to it.",
);
/// A peer device presents another identity key.
pub const IDENTITY_CHANGED: Reason = Reason::engine(
    "identity-changed",
    Fault::PeerOrPath,
    "A peer device presents an identity key (or certificate) other than the one seen before.",
);
/// A MAC or authentication tag does not verify.
pub const BAD_MAC: Reason = Reason::engine(
    "bad-mac",
    Fault::PeerOrPath,
    "A MAC or authentication tag does not verify: the ciphertext was changed, or is not for these keys.",
);
/// A signature does not verify.
pub const BAD_SIGNATURE: Reason =
    Reason::engine("bad-signature", Fault::PeerOrPath, "A signature does not verify under the sender's key.");
/// Block-cipher padding is invalid.
pub const BAD_PADDING: Reason = Reason::engine(
    "bad-padding",
    Fault::PeerOrPath,
    "The padding of a decrypted block is invalid: the ciphertext was changed.",
);
/// A revealed value does not match its commitment.
pub const BAD_COMMITMENT: Reason = Reason::engine(
    "bad-commitment",
    Fault::PeerOrPath,
    "A key-exchange value does not match the hash committed to earlier.",
);
/// A Diffie-Hellman value outside the group.
pub const BAD_GROUP_ELEMENT: Reason = Reason::engine(
    "bad-group-element",
    Fault::PeerOrPath,
    "A Diffie-Hellman public value is outside the group's safe range.",
);
/// A public key that cannot be used.
pub const BAD_KEY: Reason = Reason::engine(
    "bad-key",
    Fault::PeerOrPath,
    "A peer's public key cannot be parsed or is too small to use.",
);
/// A weak key.
pub const WEAK_KEY: Reason = Reason::engine(
    "weak-key",
    Fault::PeerOrPath,
    "A peer's key is weak: a low-order curve point, or an RSA modulus outside the accepted sizes.",
);
/// No session for a session message.
pub const NO_SESSION: Reason = Reason::engine(
    "no-session",
    Fault::PeerOrPath,
    "A message belongs to a session this device does not have (or no longer has).",
);
/// Not encrypted for this device.
pub const NOT_FOR_THIS_DEVICE: Reason = Reason::engine(
    "not-for-this-device",
    Fault::PeerOrPath,
    "A message carries no key encrypted for this device.",
);
/// The signed recipient is not this account.
pub const TO_MISMATCH: Reason = Reason::engine(
    "to-mismatch",
    Fault::Path,
    "The recipient named inside the signed content is not the one the stanza was delivered to.",
);
/// A protocol message out of sequence.
pub const UNEXPECTED: Reason = Reason::engine(
    "unexpected",
    Fault::PeerOrPath,
    "A protocol message that does not fit the current state (an answer to nothing asked).",
);
/// A signer the device has no key for.
pub const UNKNOWN_SIGNER: Reason = Reason::engine(
    "unknown-signer",
    Fault::PeerOrPath,
    "A message is signed by a key the device does not know for its sender.",
);
/// An algorithm the engine does not accept.
pub const UNSUPPORTED_ALGORITHM: Reason = Reason::engine(
    "unsupported-algorithm",
    Fault::PeerOrPath,
    "A message names an algorithm (digest, signature, cipher, transform) the engine does not accept.",
);
/// The CRC-24 of ASCII armour.
pub const BAD_CHECKSUM: Reason = Reason::engine(
    "bad-checksum",
    Fault::PeerOrPath,
    "The CRC-24 checksum of ASCII armour does not match its content.",
);

/// Too many stanzas wait for one sender's keys.
pub const DROPPED: Reason = Reason::engine(
    "dropped",
    Fault::PeerOrPath,
    "Too many stanzas of one sender wait for its keys: the oldest is dropped.",
);
/// Trust on first use meets a key outside the first set.
pub const NEW_KEY_UNTRUSTED: Reason = Reason::engine(
    "new-key-untrusted",
    Fault::PeerOrPath,
    "An account shows a key that was not in the first key set seen for it (trust on first use).",
);

/// The reasons declared here that several engines report; each protocol's registry entry
/// lists those it reports.
pub static SHARED: &[Reason] = &[
    UNENCRYPTED,
    NOT_SENT,
    NOTHING_TO_VERIFY,
    FINGERPRINT_MISMATCH,
    SAS_MISMATCH,
    UNTRUSTED_KEY,
    UNTRUSTED_DEVICE,
    IDENTITY_CHANGED,
    BAD_MAC,
    BAD_SIGNATURE,
    BAD_PADDING,
    BAD_COMMITMENT,
    BAD_GROUP_ELEMENT,
    BAD_KEY,
    WEAK_KEY,
    NO_SESSION,
    NOT_FOR_THIS_DEVICE,
    TO_MISMATCH,
    UNEXPECTED,
    UNKNOWN_SIGNER,
    UNSUPPORTED_ALGORITHM,
    BAD_CHECKSUM,
    DROPPED,
    NEW_KEY_UNTRUSTED,
];

/// Reads a protocol's reasons file: one reason a line, `code [fault]: meaning`, where `fault`
/// is who is at fault when it is reported — `peer`, `path`, `peer-or-path` or `local`
/// ([`Fault::tag`]; the rule is in [`crate::error`]'s module docs) — or `notice` for a reason
/// only ever reported as a notice; then lines `shared: code code …` naming reasons of
/// [`SHARED`]; blank lines and `#` comments are skipped. An error names the line that is not
/// one of these, so no reason goes without its fault (the registry's tests read every
/// protocol's file with it).
pub fn parse(text: &'static str) -> Result<Vec<Reason>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("line {}: not `code [fault]: meaning` or `shared: codes`: {line}", n + 1);
        match line.split_once(": ") {
            Some(("shared", codes)) => {
                for code in codes.split_whitespace() {
                    let shared = SHARED.iter().find(|r| r.code == code);
                    out.push(
                        *shared.ok_or_else(|| format!("line {}: `{code}` is not a shared reason", n + 1))?,
                    );
                }
            }
            Some((head, meaning)) if !meaning.trim().is_empty() => {
                let (code, tag) = head
                    .split_once(" [")
                    .and_then(|(code, rest)| Some((code, rest.strip_suffix(']')?)))
                    .ok_or_else(bad)?;
                if !is_kebab_case(code) {
                    return Err(bad());
                }
                let fault = match tag {
                    "notice" => None,
                    tag => Some(Fault::from_tag(tag).ok_or_else(|| {
                        format!(
                            "line {}: `{tag}` is not a fault (peer, path, peer-or-path, local) or `notice`",
                            n + 1
                        )
                    })?),
                };
                out.push(Reason { code, meaning: meaning.trim(), fault });
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// The declaration of an engine's reason `code`: every engine's, a shared one, or a protocol's
/// own (a code means one thing wherever it is declared: the tests hold every declaration of a
/// code to the same meaning and fault).
pub fn declared(code: &str) -> Option<Reason> {
    EVERY_ENGINE
        .iter()
        .chain(SHARED)
        .chain(crate::Protocol::ALL.iter().flat_map(|p| p.reasons()))
        .find(|r| r.code == code)
        .copied()
}

/// Whether `code` is lowercase kebab-case: words of `a-z` and `0-9` joined by single hyphens.
pub fn is_kebab_case(code: &str) -> bool {
    !code.is_empty()
        && code
            .split('-')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;

    #[test]
    fn reasons_are_kebab_case_and_declared_once() {
        assert!(is_kebab_case("bad-mac") && is_kebab_case("x3dh"));
        for bad in ["", "Bad", "bad--mac", "-bad", "bad-", "bad_mac", "bad mac"] {
            assert!(!is_kebab_case(bad), "{bad}");
        }
        let mut seen = std::collections::BTreeMap::new();
        for r in EVERY_ENGINE.iter().chain(SHARED) {
            assert!(is_kebab_case(r.code), "{}", r.code);
            assert!(!r.meaning.is_empty() && r.meaning.ends_with('.'), "{}: {}", r.code, r.meaning);
            assert!(seen.insert(r.code, *r).is_none(), "{} declared twice", r.code);
        }
        // Every protocol's file reads cleanly.
        for p in Protocol::ALL {
            assert!(parse(p.def().reasons).is_ok(), "{p}: {:?}", parse(p.def().reasons));
        }
        let read = parse("replay [path]: x.\nhello [notice]: y.\nshared: bad-mac").unwrap();
        assert_eq!(read, [Reason::engine("replay", Fault::Path, "x."), Reason::new("hello", "y."), BAD_MAC]);
        for bad in [
            "Bad [peer]: x.",
            "shared: no-such-thing",
            "nonsense",
            "bad-mac: a reason without its fault.",
            "bad-mac [Peer]: x.",
            "bad-mac [everyone]: x.",
            "bad-mac [peer: x.",
            "bad-mac [peer]:",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("bad-mac: x.").unwrap_err().contains("`code [fault]: meaning`"));
        // A protocol lists each reason once, never one every engine reports, and a code means
        // one thing: declared by several protocols (or here), it is the same declaration.
        for p in Protocol::ALL {
            let mut own = std::collections::BTreeSet::new();
            for r in p.reasons() {
                assert!(is_kebab_case(r.code), "{p}: {}", r.code);
                assert!(!r.meaning.is_empty() && r.meaning.ends_with('.'), "{p}: {}: {}", r.code, r.meaning);
                assert!(own.insert(r.code), "{p} lists {} twice", r.code);
                assert!(
                    !EVERY_ENGINE.iter().any(|e| e.code == r.code),
                    "{p} lists {}, which every engine reports",
                    r.code
                );
                let first = *seen.entry(r.code).or_insert(*r);
                assert_eq!(first, *r, "{p} declares {} again with another meaning or fault", r.code);
                assert_eq!(declared(r.code), Some(*r));
            }
        }
        // Every shared reason is reported by some protocol.
        for r in SHARED {
            assert!(
                Protocol::ALL.iter().any(|p| p.reasons().contains(r)),
                "no protocol lists the shared reason {}",
                r.code
            );
        }
    }
}
