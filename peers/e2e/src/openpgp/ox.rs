//! The `ox` engine: XEP-0373 "OpenPGP for XMPP" with the XEP-0374 instant-messaging profile
//! (see the module docs of [`super`] for what is published, sent and checked).

use std::collections::{BTreeMap, BTreeSet};

use core::time::Duration;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use pgp::composed::SignedPublicKey;
use rand_core::RngCore;

use super::keys::{self, OwnKey};
use super::trust::{self, KeyRing};
use super::{parse_time, unb64};
use crate::kit;
use crate::kit::codec::b64;
use crate::kit::directory::{self, Directory, Failure, Forwarding, Keyed, Limits, NotSent, Pep, Sealed};
use crate::kit::trust::TrustState;
use crate::rng06::Rng06;
use crate::time::format_stamp;
use crate::xml::{ElementExt, NS_CLIENT, NS_EME, NS_HINTS, NS_SERVER, el, sender, text_el};
use crate::{
    Action, Content, Cx, E2eError, Engine, EngineConfig, Event, OutOfBand, Output, Protocol, Theft, Trust,
};

/// `urn:xmpp:openpgp:0` (XEP-0373).
pub const NS: &str = "urn:xmpp:openpgp:0";
/// The public-key metadata node (XEP-0373 §4.2).
pub const NODE_PUBLIC_KEYS: &str = "urn:xmpp:openpgp:0:public-keys";
/// The unencrypted body XEP-0374 §3.2 ("Provide Hints") recommends.
pub const FALLBACK: &str = "This message is encrypted using OpenPGP.";
/// How far in the future a `<time/>` may lie before the content is refused (XEP-0373 §3.2
/// "verify the 'time' element for plausibility"; the XEP gives no number).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// At most 64 received stanzas wait for their senders' keys in all (a flood of stanzas naming
/// unknown signers must not grow the state without bound); beyond it a stanza is refused as
/// `unknown-signer` at once. At most 4 wait for one sender's keys; a fifth evicts that
/// sender's oldest (reported as `dropped`), so one account cannot fill the whole inbox.
const WAITING: Limits = Limits { total: 64, per_sender: Some(4) };
/// At most this many keys of one account are taken from its metadata list (XEP-0373 sets no
/// number; a client has a handful of devices). Beyond it the list is cut to the most
/// recently dated keys and `too-many-keys` is reported: one list of thousands of
/// fingerprints must not make us fetch and store thousands of keys.
pub const MAX_KEYS_PER_ACCOUNT: usize = 16;

/// The data node of the key with this fingerprint (XEP-0373 §4.1).
pub fn data_node(fpr: &str) -> String {
    format!("{NODE_PUBLIC_KEYS}:{fpr}")
}

/// A v4 fingerprint string as XEP-0373 §4.1 writes it: 40 upper-case hex digits.
fn is_fingerprint(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// One device's OX state.
#[derive(Debug, Clone)]
pub struct Ox {
    me: FullJid,
    key: OwnKey,
    ring: KeyRing,
    /// Each account's metadata list (§4.2), once read.
    announced: BTreeMap<BareJid, BTreeSet<String>>,
    /// Announced keys whose data node is being fetched.
    missing: BTreeMap<BareJid, BTreeSet<String>>,
    /// Fetches in flight, messages waiting for the recipient's keys, and received stanzas
    /// waiting for the sender's keys (§3.2: "the recipient may need to retrieve the key").
    dir: Directory,
}

impl Ox {
    /// A new device with a fresh key from `rng` (user ID `xmpp:<bare JID>`).
    pub fn new(me: FullJid, rng: &mut dyn RngCore, config: &EngineConfig) -> Ox {
        let uid = keys::xmpp_uid(&me.to_bare());
        let key = match OwnKey::generate(&uid, keys::KEY_CREATED, rng) {
            Ok(k) => k,
            Err(first) => OwnKey::generate(&uid, keys::KEY_CREATED, rng)
                .unwrap_or_else(|e| unreachable!("OpenPGP key generation failed twice: {first}; {e}")),
        };
        Ox {
            me,
            key,
            ring: trust::ring(config.trust),
            announced: BTreeMap::new(),
            missing: BTreeMap::new(),
            dir: Directory::default(),
        }
    }

    /// Our key (fingerprint, certificate, and armoured exports for interop tests).
    pub fn key(&self) -> &OwnKey {
        &self.key
    }

    fn own(&self) -> BareJid {
        self.me.to_bare()
    }

    // ---- PEP (XEP-0373 §4) ----------------------------------------------------------------

    fn publish_metadata(&self, cx: &Cx<'_>, fprs: &BTreeSet<String>) -> Action {
        let date = format_stamp(Duration::from_secs(cx.now.as_secs()));
        let mut list = el("public-keys-list", NS);
        for fpr in fprs {
            list.append_child(
                el("pubkey-metadata", NS).with("v4-fingerprint", fpr.clone()).with("date", date.clone()),
            );
        }
        Action::Publish {
            node: NODE_PUBLIC_KEYS.into(),
            id: "current".into(),
            item: list,
            options: vec![("pubsub#access_model".into(), "open".into())],
        }
    }

    fn metadata(&mut self, cx: &mut Cx<'_>, owner: &BareJid, pep: &Pep<'_>, out: &mut Output) -> Result<(), E2eError> {
        self.dir.answered(owner, NODE_PUBLIC_KEYS);
        // One item, `current` (§4.2); should several come, the last one in the answer.
        let Some(list) = pep.items.children().filter_map(|i| i.get_child("public-keys-list", NS)).last() else {
            // A notification without payload (§4.5 "notification-only"): read the node.
            if !pep.complete {
                self.dir.fetch(owner, NODE_PUBLIC_KEYS, out);
            }
            return Ok(());
        };
        let mut dated: BTreeMap<String, Duration> = BTreeMap::new();
        for meta in list.children().filter(|m| m.is("pubkey-metadata", NS)) {
            let fpr = meta.attr("v4-fingerprint").ok_or(E2eError::Missing { what: "v4-fingerprint" })?;
            if !is_fingerprint(fpr) {
                return Err(E2eError::Malformed { what: "v4-fingerprint", detail: format!("`{fpr}`") });
            }
            let date = meta.attr("date").and_then(parse_time).unwrap_or_default();
            let entry = dated.entry(fpr.to_owned()).or_default();
            *entry = (*entry).max(date);
        }
        let mut fprs: BTreeSet<String> = dated.keys().cloned().collect();
        if dated.len() > MAX_KEYS_PER_ACCOUNT {
            // The most recently dated keys (ties: the smaller fingerprint), deterministically.
            let mut by_date: Vec<(Duration, String)> = dated.into_iter().map(|(f, d)| (d, f)).collect();
            by_date.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            fprs = by_date.into_iter().take(MAX_KEYS_PER_ACCOUNT).map(|(_, f)| f).collect();
            out.events.push(Event::Alert {
                reason: "too-many-keys",
                detail: format!(
                    "{owner} announces more than {MAX_KEYS_PER_ACCOUNT} keys; the newest are used"
                ),
            });
        }
        let own = self.own();
        if *owner == own && !fprs.contains(self.key.fingerprint()) {
            // §6.3 "Key Enforcement": "If the key has been removed, the entity SHOULD
            // reannounce it."
            let mut merged = fprs.clone();
            merged.insert(self.key.fingerprint().to_owned());
            out.actions.push(self.publish_metadata(cx, &merged));
        }
        let mut missing = BTreeSet::new();
        for fpr in &fprs {
            let ours = *owner == own && fpr == self.key.fingerprint();
            if !ours && self.ring.get(owner, fpr).is_none() {
                missing.insert(fpr.clone());
                self.dir.fetch(owner, &data_node(fpr), out);
            }
        }
        self.ring.pin_first(owner, &fprs);
        self.announced.insert(owner.clone(), fprs);
        self.missing.insert(owner.clone(), missing);
        self.keys_arrived(cx, owner, out);
        Ok(())
    }

    /// A data node: the most recent item's key (§4.4: "Only the public keys found in the most
    /// recent item MUST be used": the item whose `<pubkey date/>` is latest; ties and
    /// undated items: the later one in the answer), which must have the node's fingerprint
    /// and the user ID `xmpp:<owner>`. Only keys the owner announced are taken (a key pushed
    /// to a node its metadata list does not name is ignored): nothing else reaches the ring.
    fn data(&mut self, cx: &mut Cx<'_>, owner: &BareJid, fpr: &str, items: &Element, out: &mut Output) {
        self.dir.answered(owner, &data_node(fpr));
        let wanted = self.announced.get(owner).is_some_and(|a| a.contains(fpr))
            || self.missing.get(owner).is_some_and(|m| m.contains(fpr));
        if !wanted {
            // Not (yet) in the owner's metadata list: ignored, not stored. A publisher writes the
            // data node before the metadata (XEP-0373 §4.1), so its contacts see this first for
            // every honest new key; the list that follows makes us fetch it.
            return;
        }
        let newest = items.children().filter(|i| i.name() == "item").enumerate().max_by_key(|(n, i)| {
            let date = i.get_child("pubkey", NS).and_then(|p| p.attr("date")).and_then(parse_time);
            (date, *n)
        });
        if let Some((_, item)) = newest {
            match parse_pubkey(item, owner, fpr) {
                Ok(cert) => {
                    trust::observe(&mut self.ring, owner, cert, out);
                }
                Err(e) => out.events.push(Event::Alert {
                    reason: e.code(),
                    detail: format!("public key {fpr} of {owner} refused: {e}"),
                }),
            }
        }
        if let Some(m) = self.missing.get_mut(owner) {
            m.remove(fpr);
        }
        self.keys_arrived(cx, owner, out);
    }

    /// When no key of `owner` is still being fetched: send what waited, read what waited.
    fn keys_arrived(&mut self, cx: &mut Cx<'_>, owner: &BareJid, out: &mut Output) {
        if self.missing.get(owner).is_some_and(|m| !m.is_empty()) {
            return;
        }
        directory::flush(self, cx, out);
        directory::retry(self, cx, owner, out);
    }

    // ---- sending (XEP-0374 §2.2) ----------------------------------------------------------

    fn usable(&self, owner: &BareJid) -> Vec<SignedPublicKey> {
        self.announced
            .get(owner)
            .into_iter()
            .flatten()
            .filter(|fpr| fpr.as_str() != self.key.fingerprint())
            .filter_map(|fpr| self.ring.get(owner, fpr))
            .filter(|k| k.state != TrustState::Untrusted)
            .map(|k| k.key.clone())
            .collect()
    }

    /// XEP-0373 §3.1 `<signcrypt>` (to, time, rpad, payload), signed and encrypted, in the
    /// XEP-0374 §2.2 message.
    fn stanza(
        &self,
        cx: &mut Cx<'_>,
        to: &BareJid,
        body: &str,
        parts: &[Element],
        certs: &[SignedPublicKey],
    ) -> Result<Element, E2eError> {
        let mut signcrypt = signcrypt(cx, to, body);
        // XEP-0374 §openpgp-secured-im: the children of <payload/> are the stanza's extension
        // elements, encrypted and signed (chat states, XHTML-IM, ... "can be any extension
        // element"): the message's other parts go there beside the body.
        if let Some(payload) = signcrypt.get_child_mut("payload", NS) {
            for p in parts {
                payload.append_child(p.clone());
            }
        }
        let refs: Vec<&SignedPublicKey> = certs.iter().collect();
        let bytes = self.key.encrypt(cx.rng, &refs, String::from(&signcrypt).as_bytes(), cx.now, true)?;
        Ok(message(to, &bytes))
    }

    // ---- surreptitious forwarding (Davis 2001), for `Engine::forward` ----------------------

    /// The keys of `to` a forgery is encrypted to, or the fetches that would find them: the
    /// metadata node when `to`'s list was never read, the data nodes still missing. The
    /// fetches are always emitted (not only when none is in flight, as for `send`): the
    /// caller answers them at once, and a stolen engine may hold stale in-flight marks.
    fn forward_keys(&mut self, to: &BareJid) -> Result<Vec<SignedPublicKey>, Vec<Action>> {
        let nodes: Vec<String> = if !self.announced.contains_key(to) {
            vec![NODE_PUBLIC_KEYS.to_owned()]
        } else {
            self.missing.get(to).into_iter().flatten().map(|fpr| data_node(fpr)).collect()
        };
        if nodes.is_empty() {
            return Ok(self.usable(to));
        }
        let mut out = Output::default();
        for node in nodes {
            self.dir.refetch(to, &node, &mut out);
        }
        Err(out.actions)
    }

    // ---- receiving (XEP-0373 §3.2 "Verification") ------------------------------------------

    fn receive_openpgp(
        &mut self,
        cx: &mut Cx<'_>,
        stanza: &Element,
        may_fetch: bool,
        out: &mut Output,
    ) -> Result<(), E2eError> {
        let from: Jid = sender(stanza)?;
        let from_bare = from.to_bare();
        let own = self.own();
        // "At least one of the XMPP addresses found in the 'to' elements [...] MUST correspond
        // to the outer 'to'": the stanza's (bare), or our account when it has none. A stanza
        // not for our account is only ours to read as a carbon of our own message.
        let outer_to = match stanza.attr("to") {
            Some(t) => t
                .parse::<Jid>()
                .map_err(|e| E2eError::Malformed { what: "to", detail: e.to_string() })?
                .to_bare(),
            None => own.clone(),
        };
        if outer_to != own && from_bare != own {
            return Err(E2eError::Rejected {
                reason: "not-for-us",
                detail: format!("addressed to {outer_to}"),
            });
        }
        let openpgp = stanza.get_child("openpgp", NS).ok_or(E2eError::Missing { what: "openpgp" })?;
        let decrypted = self.key.decrypt(&unb64("openpgp", &openpgp.text())?)?;
        // XEP-0374 §3.1: only <signcrypt/>; XEP-0373 §3.1: it MUST be signed and encrypted.
        let sig = decrypted.signature.ok_or(E2eError::Rejected {
            reason: "not-signed",
            detail: "an OpenPGP message without a signature (only <signcrypt/> is allowed)".into(),
        })?;
        let issuers = keys::issuers(&sig);
        let candidates: Vec<String> = self
            .signers(&from_bare)
            .into_iter()
            .filter(|(_, cert)| issuers.iter().any(|i| keys::cert_matches_issuer(cert, i)))
            .map(|(fpr, _)| fpr)
            .collect();
        if candidates.is_empty() {
            if may_fetch && self.dir.hold(stanza, WAITING, out) {
                // The signer is not an announced key of the sender (yet): read the sender's
                // keys (unless a read is under way), and this stanza again once they are in.
                self.dir.fetch(&from_bare, NODE_PUBLIC_KEYS, out);
                return Ok(());
            }
            return Err(E2eError::Rejected {
                reason: "unknown-signer",
                detail: format!("signed by {}, not an announced key of {from_bare}", issuers.join(", ")),
            });
        }
        let fpr = candidates
            .into_iter()
            .find(|fpr| {
                self.cert_of(&from_bare, fpr).is_some_and(|c| keys::verify_by(c, &sig, &decrypted.data))
            })
            .ok_or(E2eError::Rejected { reason: "bad-signature", detail: format!("from {from}") })?;
        let text = String::from_utf8(decrypted.data)
            .map_err(|e| E2eError::Malformed { what: "signcrypt", detail: e.to_string() })?;
        let (body, parts) = check_signcrypt(cx, &text, &outer_to)?;
        let trust = if from_bare == own && fpr == self.key.fingerprint() {
            Trust::Verified // our own key
        } else {
            self.ring.trust_of(&from_bare, &fpr)
        };
        if trust == Trust::Untrusted {
            out.events.push(Event::Alert {
                reason: "untrusted-key",
                detail: format!("{from} signed with the untrusted key {fpr}"),
            });
        }
        if let Some(body) = body {
            out.events.push(Event::Plaintext { from: from.clone(), body, trust, delay: None, carbon: None });
        }
        // XEP-0374 §openpgp-secured-im: the payload's other children are processed as if they
        // had been direct extension elements of the stanza.
        if !parts.is_empty() {
            out.events.push(Event::Parts { from, stanza: "message", parts });
        }
        Ok(())
    }

    /// The metadata list of `owner` could not be read (malformed): the stanzas waiting for
    /// its keys are refused ([`Event::Rejected`] with that error) rather than kept forever, and
    /// messages waiting to be sent to it are reported `not-sent`.
    fn keys_failed(&mut self, owner: &BareJid, error: &E2eError, out: &mut Output) {
        for (from, _) in self.dir.release(owner) {
            out.events.push(Event::Rejected { from, error: error.clone() });
        }
        self.dir.give_up(owner, &format!("its OpenPGP keys could not be read ({error})"), out);
    }

    /// The keys that may sign for `owner`: its announced keys we hold (and ours, for our own
    /// account).
    fn signers(&self, owner: &BareJid) -> Vec<(String, SignedPublicKey)> {
        let mut out: Vec<(String, SignedPublicKey)> = self
            .announced
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|fpr| self.ring.get(owner, fpr).map(|k| (fpr.clone(), k.key.clone())))
            .collect();
        if *owner == self.own() {
            out.push((self.key.fingerprint().to_owned(), self.key.public().clone()));
        }
        out
    }

    fn cert_of(&self, owner: &BareJid, fpr: &str) -> Option<&SignedPublicKey> {
        if *owner == self.own() && fpr == self.key.fingerprint() {
            return Some(self.key.public());
        }
        self.ring.get(owner, fpr).map(|k| &k.key)
    }
}

/// The XEP-0374 §2.2 message around an `<openpgp/>` (plus the XEP-0380 and XEP-0334 hints and
/// the fallback body of §3.2 "Provide Hints").
fn message(to: &BareJid, openpgp: &[u8]) -> Element {
    el("message", NS_CLIENT)
        .with("to", to.to_string())
        .with("type", "chat")
        .child(text_el("openpgp", NS, b64(openpgp)))
        .child(el("encryption", NS_EME).with("namespace", NS).with("name", "OpenPGP for XMPP"))
        .child(text_el("body", NS_CLIENT, FALLBACK))
        .child(el("store", NS_HINTS))
}

/// A local failure of an OpenPGP operation on data we built ourselves.
fn local(e: pgp::errors::Error) -> E2eError {
    E2eError::Policy { detail: format!("OpenPGP operation failed: {e}") }
}

/// The signed OpenPGP message inside a received encrypted one, rebuilt around the sender's
/// signature packet (RFC 4880 §11.3: one-pass signature, literal data, signature), ready to be
/// encrypted again. What the signature covers is kept byte for byte: the literal data (a v4
/// binary signature hashes the literal data's content only, RFC 4880 §5.2.4, not the
/// packet's file name or date) and the signature packet itself. The literal data packet is
/// written as rPGP's message builder writes it (binary, no file name, date 0).
fn signed_message(signature: &pgp::packet::Signature, data: &[u8]) -> Result<Vec<u8>, E2eError> {
    use pgp::packet::{OnePassSignature, PacketHeader, PacketTrait as _, SignatureVersion};
    use pgp::ser::Serialize as _;
    use pgp::types::{KeyId, Tag};

    // OX keys are v4 (XEP-0373 §"OpenPGP Version"), and a v4 signature goes with a v3
    // one-pass signature packet (RFC 9580 §5.4).
    if signature.version() != SignatureVersion::V4 {
        return Err(E2eError::Malformed {
            what: "signature",
            detail: format!("a {:?} signature where v4 is expected", signature.version()),
        });
    }
    let config = signature
        .config()
        .ok_or(E2eError::Malformed { what: "signature", detail: "an unknown signature version".into() })?;
    let key_id = match signature.issuer_key_id().first() {
        Some(id) => **id,
        None => {
            // A v4 key ID is the last eight octets of the v4 fingerprint (RFC 4880 §12.2).
            let fpr =
                signature.issuer_fingerprint().first().map(|f| f.as_bytes().to_vec()).unwrap_or_default();
            let tail: [u8; 8] = fpr
                .get(fpr.len().saturating_sub(8)..)
                .and_then(|t| t.try_into().ok())
                .ok_or(E2eError::Missing { what: "issuer" })?;
            KeyId::from(tail)
        }
    };
    let ops = OnePassSignature::v3(config.typ, config.hash_alg, config.pub_alg, key_id);
    let mut out = Vec::new();
    ops.to_writer_with_header(&mut out).map_err(local)?;
    // RFC 4880 §5.9: format 'b', an empty file name, date 0, then the data.
    let mut body = vec![b'b', 0, 0, 0, 0, 0];
    body.extend_from_slice(data);
    let len = u32::try_from(body.len())
        .map_err(|_| E2eError::Malformed { what: "signcrypt", detail: "too long".into() })?;
    PacketHeader::new_fixed(Tag::LiteralData, len).to_writer(&mut out).map_err(local)?;
    out.extend_from_slice(&body);
    signature.to_writer_with_header(&mut out).map_err(local)?;
    Ok(out)
}

/// `inner` (an OpenPGP message, kept as it is) encrypted to every encryption key of `to`
/// (RFC 4880 §11.3 encrypted message: one PKESK per key, then SEIPD v1 with AES-256, as
/// [`keys::OwnKey::encrypt`] makes them), with no signature of ours added.
fn encrypt_raw(
    rng: &mut dyn RngCore,
    now: Duration,
    to: &[SignedPublicKey],
    inner: &[u8],
) -> Result<Vec<u8>, E2eError> {
    use pgp::crypto::sym::SymmetricKeyAlgorithm;
    use pgp::packet::{PacketTrait as _, PublicKeyEncryptedSessionKey, SymEncryptedProtectedData};

    let mut rng = Rng06(rng);
    let alg = SymmetricKeyAlgorithm::AES256;
    let session_key = alg.new_session_key(&mut rng);
    let mut out = Vec::new();
    let mut recipients = 0usize;
    for cert in to {
        for key in keys::encryption_keys(cert, now) {
            PublicKeyEncryptedSessionKey::from_session_key_v3(&mut rng, &session_key, alg, key)
                .map_err(local)?
                .to_writer_with_header(&mut out)
                .map_err(local)?;
            recipients += 1;
        }
    }
    if recipients == 0 {
        return Err(E2eError::Policy { detail: "no encryption-capable key to encrypt to".into() });
    }
    SymEncryptedProtectedData::encrypt_seipdv1(&mut rng, alg, session_key.as_ref(), inner)
        .map_err(local)?
        .to_writer_with_header(&mut out)
        .map_err(local)?;
    Ok(out)
}

/// The `<signcrypt/>` we send (XEP-0373 §3.1): one `<to/>` (bare), `<time/>` now, `<rpad/>` of
/// a random length, `<payload/>` with the body.
fn signcrypt(cx: &mut Cx<'_>, to: &BareJid, body: &str) -> Element {
    content("signcrypt", cx, to, body)
}

/// An OpenPGP content element (XEP-0373 §3.1) named `name` (`signcrypt` or `crypt`), with the
/// children of [`signcrypt`].
fn content(name: &str, cx: &mut Cx<'_>, to: &BareJid, body: &str) -> Element {
    const PAD: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_!%^";
    let len = (cx.rng.next_u32() % 200) as usize;
    let mut bytes = vec![0u8; len];
    cx.rng.fill_bytes(&mut bytes);
    let pad: String = bytes.iter().map(|b| char::from(PAD[usize::from(*b) % PAD.len()])).collect();
    el(name, NS)
        .child(el("to", NS).with("jid", to.to_string()))
        .child(el("time", NS).with("stamp", format_stamp(cx.now)))
        .child(text_el("rpad", NS, pad))
        .child(el("payload", NS).child(text_el("body", NS_CLIENT, body)))
}

/// The largest `<signcrypt/>` we parse (bytes; see [`keys::MAX_PLAINTEXT`], which the
/// decryption already enforces).
const MAX_CONTENT: usize = 64 * 1024;
/// The deepest element nesting a `<signcrypt/>` may have. Ours is four deep
/// (`signcrypt/payload/body`); 32 leaves room for richer payloads. minidom builds and frees
/// trees recursively, so tens of thousands of nested elements (a kilobyte once compressed)
/// would overflow the stack: the nesting is counted before the parser sees the text.
const MAX_DEPTH: usize = 32;

/// XEP-0373 §3.2 checks on a verified `<signcrypt/>`; the body, if the payload has one, and
/// the payload's other children.
fn check_signcrypt(
    cx: &Cx<'_>,
    text: &str,
    outer_to: &BareJid,
) -> Result<(Option<String>, Vec<Element>), E2eError> {
    if text.len() > MAX_CONTENT {
        return Err(E2eError::Malformed {
            what: "signcrypt",
            detail: format!("{} bytes, more than {MAX_CONTENT}", text.len()),
        });
    }
    if !crate::xml::nesting_within(text, MAX_DEPTH) {
        return Err(E2eError::Malformed {
            what: "signcrypt",
            detail: format!("elements nested more than {MAX_DEPTH} deep"),
        });
    }
    let content: Element = text
        .parse()
        .map_err(|e: minidom::Error| E2eError::Malformed { what: "signcrypt", detail: e.to_string() })?;
    if !content.is("signcrypt", NS) {
        return Err(E2eError::Malformed {
            what: "signcrypt",
            detail: format!("<{}/> where <signcrypt/> is required (XEP-0374 §3.1)", content.name()),
        });
    }
    let times: Vec<&Element> = content.children().filter(|c| c.is("time", NS)).collect();
    let [time] = times.as_slice() else {
        return Err(E2eError::Malformed {
            what: "time",
            detail: format!("{} <time/> elements, exactly one required", times.len()),
        });
    };
    let stamp = time.attr("stamp").ok_or(E2eError::Missing { what: "stamp" })?;
    let sent =
        parse_time(stamp).ok_or_else(|| E2eError::Malformed { what: "time", detail: stamp.to_owned() })?;
    if sent > cx.now + MAX_CLOCK_SKEW {
        return Err(E2eError::Rejected {
            reason: "time-implausible",
            detail: format!("sent at {stamp}, in the future"),
        });
    }
    let tos: Vec<BareJid> = content
        .children()
        .filter(|c| c.is("to", NS))
        .filter_map(|c| c.attr("jid"))
        .filter_map(|j| j.parse::<Jid>().ok())
        .map(|j| j.to_bare())
        .collect();
    if tos.is_empty() {
        return Err(E2eError::Missing { what: "to" });
    }
    if !tos.contains(outer_to) {
        return Err(E2eError::Rejected {
            reason: "to-mismatch",
            detail: format!("signed for {tos:?}, delivered to {outer_to}"),
        });
    }
    let payloads: Vec<&Element> = content.children().filter(|c| c.is("payload", NS)).collect();
    let [payload] = payloads.as_slice() else {
        return Err(E2eError::Malformed {
            what: "payload",
            detail: format!("{} <payload/> elements", payloads.len()),
        });
    };
    // XEP-0374 §2.2: the body in 'jabber:client', and 'jabber:server' accepted too.
    let body = payload
        .children()
        .find(|c| c.name() == "body" && (c.ns() == NS_CLIENT || c.ns() == NS_SERVER))
        .map(Element::text);
    let parts = crate::content::decrypted_parts(payload).into_iter().filter(|c| c.name() != "body" || c.ns() != NS_SERVER).collect();
    Ok((body, parts))
}

/// A data node item: `<pubkey><data>BASE64</data></pubkey>` holding the key `fpr` of `owner`.
fn parse_pubkey(item: &Element, owner: &BareJid, fpr: &str) -> Result<SignedPublicKey, E2eError> {
    let pubkey = item.get_child("pubkey", NS).ok_or(E2eError::Missing { what: "pubkey" })?;
    let data = pubkey.get_child("data", NS).ok_or(E2eError::Missing { what: "data" })?;
    let cert = keys::parse_cert(&unb64("data", &data.text())?)?;
    let actual = keys::fingerprint_hex(&cert);
    if actual != fpr {
        return Err(E2eError::Rejected {
            reason: "fingerprint-mismatch",
            detail: format!("node {fpr} holds key {actual}"),
        });
    }
    if !keys::has_xmpp_uid(&cert, owner) {
        return Err(E2eError::Rejected {
            reason: "key-not-for-account",
            detail: format!("key {fpr} has no user ID xmpp:{owner}"),
        });
    }
    Ok(cert)
}

impl Keyed for Ox {
    fn directory(&mut self) -> &mut Directory {
        &mut self.dir
    }

    /// Public keys (§4): answers and notifications, from an account we can name (from any
    /// other, the stanza is read as a message).
    fn items(&mut self, cx: &mut Cx<'_>, pep: &Pep<'_>, out: &mut Output) -> Result<(), E2eError> {
        let Some(owner) = pep.owner(&self.own()) else { return self.message(cx, pep.stanza, out) };
        match pep.node {
            Some(NODE_PUBLIC_KEYS) => {
                if let Err(e) = self.metadata(cx, &owner, pep, out) {
                    // Reported as an alert, not returned as an error, so that the
                    // stanzas it refuses (`Event::Rejected`) reach the caller too.
                    out.events.push(Event::Alert {
                        reason: e.code(),
                        detail: format!("the public-key list of {owner} is refused: {e}"),
                    });
                    self.keys_failed(&owner, &e, out);
                }
            }
            Some(node) => {
                if let Some(fpr) = node.strip_prefix(NODE_PUBLIC_KEYS).and_then(|r| r.strip_prefix(':')) {
                    self.data(cx, &owner, fpr, pep.items, out);
                }
            }
            None => {}
        }
        Ok(())
    }

    fn message(&mut self, cx: &mut Cx<'_>, stanza: &Element, out: &mut Output) -> Result<(), E2eError> {
        if stanza.name() != "message" {
            return Ok(());
        }
        if stanza.get_child("openpgp", NS).is_some() {
            self.receive_openpgp(cx, stanza, true, out)?;
            return Ok(());
        }
        if let Some(body) = stanza.get_child("body", NS_CLIENT) {
            let from: Jid = sender(stanza)?;
            out.unencrypted(from, body, "without OX");
        }
        Ok(())
    }

    fn reread(&mut self, cx: &mut Cx<'_>, stanza: &Element, out: &mut Output) -> Result<(), E2eError> {
        self.receive_openpgp(cx, stanza, false, out)
    }

    /// XEP-0374 §2.2, once every announced key of `to` is in.
    fn seal(&mut self, cx: &mut Cx<'_>, to: &BareJid, body: &str, out: &mut Output) -> Sealed {
        self.seal_parts(cx, to, body, &[], out)
    }

    fn seal_content(&mut self, cx: &mut Cx<'_>, to: &BareJid, content: &Content, out: &mut Output) -> Sealed {
        self.seal_parts(cx, to, &content.body, &content.parts, out)
    }

    fn failed(&mut self, cx: &mut Cx<'_>, failure: Failure<'_>, out: &mut Output) {
        self.keys_failed_after_fetch(cx, failure, out)
    }

    /// The surreptitious-forwarding test (D. Davis, USENIX ATC 2001), with this device's key.
    ///
    /// `body` empty: the sender's signed OpenPGP message inside `recorded` (the `<signcrypt/>`
    /// as signed, its `<to/>` naming this device's account) is encrypted again, unchanged, to
    /// `to`'s keys. The signature still verifies at `to`; what stops the forgery there is the
    /// `<to/>` that XEP-0373 §3.1 (#exchange) puts in signed content "to prevent Surreptitious
    /// Forward Attacks", checked per §3.2 (#openpgp-verification): "At least one of the XMPP
    /// addresses found in the 'to' elements [...] MUST correspond to the outer 'to'"
    /// (`to-mismatch`).
    ///
    /// `body` given: signature stripping. XEP-0373 §3.1 also defines `<crypt/>` (encrypted,
    /// "MUST NOT be signed"), which anybody holding `to`'s public keys can write in the
    /// original sender's name; one is made (`<to/>`, `<time/>` now, `<rpad/>`, the body) and
    /// encrypted, unsigned, to `to`. The honest receiver refuses it because XEP-0374 §3.1
    /// (#signcrypt-im-use-case) "Always Use <signcrypt/>" ("Only <signcrypt/> MUST be used for
    /// the IM use case. Encrypted but unsigned messages (<crypt/>) do not provide an advantage
    /// over unencrypted ones since the sender can not be verified"; §2.2 too: IM clients "MUST
    /// use the <signcrypt/> OpenPGP content element") allows only signed content for instant
    /// messages: the message decrypts but carries no signature (`not-signed`).
    fn forwarding(&mut self, cx: &mut Cx<'_>, order: Forwarding<'_>) -> Result<Option<Output>, E2eError> {
        let Forwarding { recorded, to, body } = order;
        // Read as `receive` does, without its checks (signer, `to`, time): a thief holding
        // this device's key reads what the device received.
        let openpgp = recorded.get_child("openpgp", NS).ok_or(E2eError::Missing { what: "openpgp" })?;
        let decrypted = self.key.decrypt(&unb64("openpgp", &openpgp.text())?)?;
        let certs = match self.forward_keys(to) {
            Ok(certs) => certs,
            Err(fetches) => return Ok(Some(Output { actions: fetches, events: vec![] })),
        };
        if certs.is_empty() {
            return Err(E2eError::Policy { detail: format!("no usable OpenPGP key of {to} is announced") });
        }
        let bytes = if body.is_empty() {
            let signature = decrypted.signature.ok_or(E2eError::Rejected {
                reason: "not-signed",
                detail: "the recorded OpenPGP message carries no signature to reuse".into(),
            })?;
            encrypt_raw(cx.rng, cx.now, &certs, &signed_message(&signature, &decrypted.data)?)?
        } else {
            let crypt = content("crypt", cx, to, body);
            let refs: Vec<&SignedPublicKey> = certs.iter().collect();
            self.key.encrypt(cx.rng, &refs, String::from(&crypt).as_bytes(), cx.now, false)?
        };
        Ok(Some(Output { actions: vec![Action::Send(message(to, &bytes))], events: vec![] }))
    }
}

impl Ox {
    /// XEP-0374 §2.2, once every announced key of `to` is in: `body` and the message's other
    /// `parts` in one `<signcrypt/>`.
    fn seal_parts(&mut self, cx: &mut Cx<'_>, to: &BareJid, body: &str, parts: &[Element], out: &mut Output) -> Sealed {
        if !self.announced.contains_key(to) {
            self.dir.fetch(to, NODE_PUBLIC_KEYS, out);
            return Ok(None);
        }
        if self.missing.get(to).is_some_and(|m| !m.is_empty()) {
            return Ok(None);
        }
        let own = self.own();
        let mut certs = self.usable(to);
        if certs.is_empty() && *to != own {
            return Err(NotSent(format!("no usable OpenPGP key of {to} is announced")));
        }
        // "SHOULD also be encrypted to self" (XEP-0373 §3.1): our key and our other devices'.
        certs.push(self.key.public().clone());
        if *to != own {
            certs.extend(self.usable(&own));
        }
        Ok(Some(self.stanza(cx, to, body, parts, &certs)?))
    }

    fn keys_failed_after_fetch(&mut self, cx: &mut Cx<'_>, failure: Failure<'_>, out: &mut Output) {
        let Failure { owner, node, condition } = failure;
        if node == NODE_PUBLIC_KEYS {
            if *owner == self.own() {
                // No metadata node yet: announce our key (§4.2).
                let ours = BTreeSet::from([self.key.fingerprint().to_owned()]);
                out.actions.push(self.publish_metadata(cx, &ours));
                self.announced.insert(owner.clone(), ours);
            } else {
                self.announced.entry(owner.clone()).or_default();
                out.events.push(Event::Alert {
                    reason: "no-public-key",
                    detail: format!("{owner} announces no OpenPGP key ({condition})"),
                });
            }
            self.missing.remove(owner);
            self.keys_arrived(cx, owner, out);
        } else if let Some(fpr) = node.strip_prefix(NODE_PUBLIC_KEYS).and_then(|r| r.strip_prefix(':')) {
            out.events.push(Event::Alert {
                reason: "no-public-key",
                detail: format!("public key {fpr} of {owner} could not be fetched ({condition})"),
            });
            if let Some(m) = self.missing.get_mut(owner) {
                m.remove(fpr);
            }
            self.keys_arrived(cx, owner, out);
        }
    }

}

impl Engine for Ox {
    fn protocol(&self) -> Protocol {
        Protocol::of(&super::OX)
    }

    /// XEP-0374 §openpgp-secured-im: the message's other parts go into the `<payload/>` with
    /// the body, signed and encrypted.
    fn send_message(&mut self, cx: &mut Cx<'_>, to: &BareJid, content: &Content) -> Result<Output, E2eError> {
        Ok(directory::send_content(self, cx, to, content))
    }

    fn keyed(&mut self) -> Option<&mut dyn Keyed> {
        Some(self)
    }

    fn publish(&mut self, cx: &mut Cx<'_>) -> Result<Output, E2eError> {
        // §4.1 the data node first ("before adding a fingerprint to the metadata node, the
        // publisher MUST ensure that the public key is available"), then our metadata list is
        // read and our fingerprint added to it (see `metadata`, and `failed` for a node not there).
        let fpr = self.key.fingerprint().to_owned();
        let date = format_stamp(Duration::from_secs(cx.now.as_secs()));
        let item = el("pubkey", NS).with("date", date.clone()).child(text_el(
            "data",
            NS,
            b64(&self.key.public_bytes()?),
        ));
        let mut out = Output {
            actions: vec![Action::Publish {
                node: data_node(&fpr),
                id: date,
                item,
                options: vec![("pubsub#access_model".into(), "open".into())],
            }],
            events: vec![],
        };
        self.dir.refetch(&self.own(), NODE_PUBLIC_KEYS, &mut out);
        Ok(out)
    }

    fn verify(&mut self, _cx: &mut Cx<'_>, peer: &BareJid, oob: &OutOfBand) -> Result<Output, E2eError> {
        Ok(trust::verify(&mut self.ring, peer, oob, self.announced.get(peer)))
    }

    fn out_of_band(&self) -> OutOfBand {
        self.key.out_of_band()
    }

    fn identity_marks(&self) -> crate::IdentityMarks {
        self.key.identity_marks()
    }

    // `forge`: the default `Ok(None)` — a <signcrypt/> must be signed by the sender's key,
    // which the recipient does not hold.

    fn steal(&self, what: Theft) -> Box<dyn Engine> {
        kit::stolen(self.clone(), what, |copy| copy.dir.wipe())
    }
}

