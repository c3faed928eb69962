//! The `pgp` engine: XEP-0027 "Current Jabber OpenPGP Usage" (see the module docs of
//! [`super`] for the keyserver model and what the XEP leaves unprotected).
//!
//! - §2 Signing: available presence carries `<x xmlns='jabber:x:signed'>`, a detached
//!   signature over the `<status/>` character data (the empty string: our client sends no
//!   status), "US-ASCII armored output with the headers removed" (§1).
//! - §3 Encrypting: `<message type='chat'><body>fallback</body><x xmlns='jabber:x:encrypted'>`
//!   with the armoured (headers removed) OpenPGP message of the body's character data,
//!   encrypted to every key of the recipient and to ours (and our other devices' keys).

use std::collections::{BTreeMap, BTreeSet};

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use rand_core::RngCore;

use super::keys::{self, OwnKey};
use super::trust::{self, KeyRing};
use super::unb64;
use crate::kit;
use crate::kit::codec::b64;
use crate::kit::directory::{self, Directory, Failure, Keyed, NotSent, Pep, Sealed};
use crate::kit::trust::TrustState;
use crate::xml::{ElementExt, NS_CLIENT, el, sender, text_el};
use crate::{Action, Cx, E2eError, Engine, EngineConfig, Event, OutOfBand, Output, Protocol, Theft, Trust};

/// `jabber:x:encrypted` (XEP-0027 §3).
pub const NS_ENCRYPTED: &str = "jabber:x:encrypted";
/// `jabber:x:signed` (XEP-0027 §2).
pub const NS_SIGNED: &str = "jabber:x:signed";
/// The PEP node standing in for an OpenPGP keyserver (see the module docs of [`super`]), and
/// the namespace of its `<pubkey/>` payload.
pub const NODE_KEYSERVER: &str = "urn:xmpp:jabberwock:keyserver:0";
/// The unencrypted body XEP-0027 §3 calls polite.
pub const FALLBACK: &str = "This message is encrypted (XEP-0027 OpenPGP).";

/// At most this many keys are taken for one account from the keyserver (items beyond it in
/// an answer are not even parsed; event notifications add no more once it is reached, and
/// `too-many-keys` is reported). A real account has a handful of keys.
pub const MAX_KEYS_PER_ACCOUNT: usize = 16;
/// At most this many signed presences wait for a keyserver lookup (one per account, the
/// latest kept); a presence from yet another account is refused as `too-many-pending`.
pub const MAX_PENDING_PRESENCE: usize = 64;

/// One device's XEP-0027 state.
#[derive(Debug, Clone)]
pub struct Pgp {
    me: FullJid,
    key: OwnKey,
    ring: KeyRing,
    /// The keys the keyserver returned for each account at its latest lookup.
    listed: BTreeMap<BareJid, BTreeSet<String>>,
    /// The key each contact's resources signed their latest verified presence with, by
    /// resource (XEP-0027 §3: the key to encrypt to "corresponds to the private key used in
    /// signing presence"; every device of ours has its own key).
    presence_key: BTreeMap<BareJid, BTreeMap<String, String>>,
    /// Lookups in flight, messages waiting for them.
    dir: Directory,
    /// Signed presence waiting for a keyserver lookup, by sending resource: the status text and
    /// the signature.
    pending_presence: BTreeMap<Jid, (String, Vec<u8>)>,
}

impl Pgp {
    /// A new device with a fresh key from `rng` (user ID `xmpp:<bare JID>`).
    pub fn new(me: FullJid, rng: &mut dyn RngCore, config: &EngineConfig) -> Pgp {
        let key = make_key(&me, rng);
        Pgp {
            me,
            key,
            ring: trust::ring(config.trust),
            listed: BTreeMap::new(),
            presence_key: BTreeMap::new(),
            dir: Directory::default(),
            pending_presence: BTreeMap::new(),
        }
    }

    /// Our key (fingerprint, certificate, and armoured exports for interop tests).
    pub fn key(&self) -> &OwnKey {
        &self.key
    }

    /// The fingerprint of the key `contact`'s latest verified presence was signed with (of its
    /// first resource by name, when several sign).
    pub fn presence_key(&self, contact: &BareJid) -> Option<&str> {
        self.presence_key.get(contact).and_then(|r| r.values().next()).map(String::as_str)
    }

    fn own(&self) -> BareJid {
        self.me.to_bare()
    }

    fn lookup(&mut self, owner: &BareJid, out: &mut Output) {
        self.dir.fetch(owner, NODE_KEYSERVER, out);
    }

    /// The keyserver's answer for `owner`: every key in it naming the account is taken (the
    /// item id is not trusted: the fingerprint comes from the key).
    fn keyserver_items(&mut self, cx: &mut Cx<'_>, owner: &BareJid, pep: &Pep<'_>, out: &mut Output) {
        self.dir.answered(owner, NODE_KEYSERVER);
        let first_answer = !self.listed.contains_key(owner);
        let mut listed = self.listed.remove(owner).unwrap_or_default();
        if pep.complete {
            // A lookup answers with everything the keyserver holds for the account.
            listed.clear();
        }
        let room = MAX_KEYS_PER_ACCOUNT.saturating_sub(listed.len());
        let all: Vec<&Element> = pep.each().collect();
        if all.len() > room {
            out.events.push(Event::Alert {
                reason: "too-many-keys",
                detail: format!(
                    "more than {MAX_KEYS_PER_ACCOUNT} keyserver keys for {owner}: the rest ignored"
                ),
            });
        }
        let parsed: Vec<Result<pgp::composed::SignedPublicKey, E2eError>> =
            all.into_iter().take(room).map(|item| parse_item(item, owner)).collect();
        if first_answer {
            // TOFU pins the keys of the first answer (see `trust`).
            let fprs = parsed.iter().flatten().map(keys::fingerprint_hex).collect();
            self.ring.pin_first(owner, &fprs);
        }
        for parsed in parsed {
            match parsed {
                // Our own key is ours, not a peer's to trust or distrust.
                Ok(cert)
                    if keys::fingerprint_hex(&cert) == self.key.fingerprint() && *owner == self.own() =>
                {
                    listed.insert(self.key.fingerprint().to_owned());
                }
                Ok(cert) => {
                    let (fpr, _) = trust::observe(&mut self.ring, owner, cert, out);
                    listed.insert(fpr);
                }
                Err(e) => out.events.push(Event::Alert {
                    reason: "bad-key",
                    detail: format!("a keyserver item of {owner} was refused: {e}"),
                }),
            }
        }
        self.listed.insert(owner.clone(), listed);
        let waiting: Vec<Jid> =
            self.pending_presence.keys().filter(|j| j.to_bare() == *owner).cloned().collect();
        for from in waiting {
            let Some((status, sig)) = self.pending_presence.remove(&from) else { continue };
            if let Err(error) = self.check_presence(owner, &from, &status, &sig, false, out) {
                // The error `receive_presence` would have returned had the keys been there.
                out.events.push(Event::Rejected { from, error });
            }
        }
        directory::flush(self, cx, out);
    }

    /// XEP-0027 §2: verifies a presence signature with a key of `owner` the signature names.
    fn check_presence(
        &mut self,
        owner: &BareJid,
        from: &Jid,
        status: &str,
        sig_bytes: &[u8],
        may_look_up: bool,
        out: &mut Output,
    ) -> Result<(), E2eError> {
        let sig = keys::parse_signature(sig_bytes)?;
        let issuers = keys::issuers(&sig);
        let candidates: Vec<String> = self
            .listed
            .get(owner)
            .into_iter()
            .flatten()
            .filter(|fpr| {
                self.ring
                    .get(owner, *fpr)
                    .is_some_and(|k| issuers.iter().any(|i| keys::cert_matches_issuer(&k.key, i)))
            })
            .cloned()
            .collect();
        if candidates.is_empty() {
            if may_look_up {
                if self.pending_presence.len() >= MAX_PENDING_PRESENCE
                    && !self.pending_presence.contains_key(from)
                {
                    return Err(E2eError::Rejected {
                        reason: "too-many-pending",
                        detail: format!(
                            "{MAX_PENDING_PRESENCE} signed presences already wait for a keyserver lookup"
                        ),
                    });
                }
                // "Usually retrieved when a signed presence stanza is received" (§1).
                self.pending_presence.insert(from.clone(), (status.to_owned(), sig_bytes.to_vec()));
                self.lookup(owner, out);
                return Ok(());
            }
            return Err(E2eError::Rejected {
                reason: "unknown-signer",
                detail: format!("no key of {owner} made this signature (issuer {})", issuers.join(", ")),
            });
        }
        let Some(fpr) = candidates.into_iter().find(|fpr| {
            self.ring.get(owner, fpr).is_some_and(|k| keys::verify_by(&k.key, &sig, status.as_bytes()))
        }) else {
            return Err(E2eError::Rejected {
                reason: "bad-signature",
                detail: format!("the presence signature of {from} does not verify"),
            });
        };
        if self.ring.trust_of(owner, &fpr) == Trust::Untrusted {
            out.events.push(Event::Alert {
                reason: "untrusted-key",
                detail: format!("{from} signed its presence with the untrusted key {fpr}"),
            });
        }
        let resource = from.resource().map(|r| r.to_string()).unwrap_or_default();
        if let Some(before) =
            self.presence_key.entry(owner.clone()).or_default().insert(resource, fpr.clone())
            && before != fpr
        {
            out.events.push(Event::Alert {
                reason: "presence-key-changed",
                detail: format!("{from} now signs its presence with {fpr} (was {before})"),
            });
        }
        Ok(())
    }

    /// The keys a message to `to` is encrypted to, `None` while they are being looked up.
    ///
    /// §3: "the public key whose KeyID corresponds to the private key used in signing
    /// presence" (SHOULD): when a presence of `to` was verified and its key is still listed and
    /// not untrusted, that key alone; otherwise every listed key (the XEP says nothing for a
    /// contact whose presence we have not seen). Then our own keys.
    fn recipients(&mut self, to: &BareJid, out: &mut Output) -> Option<Vec<pgp::composed::SignedPublicKey>> {
        if !self.listed.contains_key(to) {
            self.lookup(to, out);
            return None;
        }
        let own = self.own();
        let usable = |ring: &KeyRing, owner: &BareJid, fprs: Option<&BTreeSet<String>>| {
            fprs.into_iter()
                .flatten()
                .filter_map(|f| ring.get(owner, f))
                .filter(|k| k.state != TrustState::Untrusted)
                .map(|k| k.key.clone())
                .collect::<Vec<_>>()
        };
        // The keys the contact's resources signed presence with, where still listed.
        let presence_only = self.presence_key.get(to).map(|by_resource| {
            by_resource
                .values()
                .filter(|fpr| self.listed.get(to).is_some_and(|l| l.contains(*fpr)))
                .cloned()
                .collect::<BTreeSet<String>>()
        });
        let mut certs = match presence_only {
            Some(one) if !usable(&self.ring, to, Some(&one)).is_empty() => usable(&self.ring, to, Some(&one)),
            _ => usable(&self.ring, to, self.listed.get(to)),
        };
        if certs.is_empty() && *to != own {
            return Some(certs);
        }
        if *to != own {
            certs.extend(usable(&self.ring, &own, self.listed.get(&own)));
        }
        // Our own key, once (XEP-0027 does not say; our other devices and carbons need it).
        certs.push(self.key.public().clone());
        Some(certs)
    }

    /// §3: `<x xmlns='jabber:x:encrypted'>` over the body's character data.
    fn encrypted(
        &self,
        cx: &mut Cx<'_>,
        certs: &[pgp::composed::SignedPublicKey],
        body: &str,
    ) -> Result<Element, E2eError> {
        let refs: Vec<&pgp::composed::SignedPublicKey> = certs.iter().collect();
        let bytes = self.key.encrypt(cx.rng, &refs, body.as_bytes(), cx.now, false)?;
        Ok(text_el("x", NS_ENCRYPTED, keys::armor_body(&bytes)))
    }
}

fn make_key(me: &FullJid, rng: &mut dyn RngCore) -> OwnKey {
    let uid = keys::xmpp_uid(&me.to_bare());
    // Key generation on our own, valid parameters cannot fail; if rPGP ever refused, a key for
    // a fixed placeholder ID is the only alternative and would be no better, so retry once
    // with fresh randomness and otherwise stop loudly.
    match OwnKey::generate(&uid, keys::KEY_CREATED, rng) {
        Ok(k) => k,
        Err(first) => OwnKey::generate(&uid, keys::KEY_CREATED, rng)
            .unwrap_or_else(|e| unreachable!("OpenPGP key generation failed twice: {first}; {e}")),
    }
}

/// A keyserver item: `<pubkey xmlns='urn:xmpp:jabberwock:keyserver:0'>BASE64</pubkey>`, a key
/// that names `owner` in a user ID.
fn parse_item(item: &Element, owner: &BareJid) -> Result<pgp::composed::SignedPublicKey, E2eError> {
    let pubkey = item.get_child("pubkey", NODE_KEYSERVER).ok_or(E2eError::Missing { what: "pubkey" })?;
    let cert = keys::parse_cert(&unb64("pubkey", &pubkey.text())?)?;
    if !keys::names_account(&cert, owner) {
        return Err(E2eError::Rejected {
            reason: "key-not-for-account",
            detail: format!("key {} has no user ID naming {owner}", keys::fingerprint_hex(&cert)),
        });
    }
    Ok(cert)
}

impl Keyed for Pgp {
    fn directory(&mut self) -> &mut Directory {
        &mut self.dir
    }

    fn seal(&mut self, cx: &mut Cx<'_>, to: &BareJid, body: &str, out: &mut Output) -> Sealed {
        let Some(certs) = self.recipients(to, out) else { return Ok(None) };
        if certs.is_empty() {
            return Err(NotSent(format!("no usable OpenPGP key of {to} is known")));
        }
        let x = self.encrypted(cx, &certs, body)?;
        Ok(Some(
            el("message", NS_CLIENT)
                .with("to", to.to_string())
                .with("type", "chat")
                .child(text_el("body", NS_CLIENT, FALLBACK))
                .child(x),
        ))
    }

    /// Keyserver answers and notifications, from an account we can name (from any other, the
    /// stanza is read as a message).
    fn items(&mut self, cx: &mut Cx<'_>, pep: &Pep<'_>, out: &mut Output) -> Result<(), E2eError> {
        let Some(owner) = pep.owner(&self.own()) else { return self.message(cx, pep.stanza, out) };
        if pep.node == Some(NODE_KEYSERVER) {
            self.keyserver_items(cx, &owner, pep, out);
        }
        Ok(())
    }

    fn message(&mut self, _cx: &mut Cx<'_>, stanza: &Element, out: &mut Output) -> Result<(), E2eError> {
        if stanza.name() != "message" {
            return Ok(());
        }
        if let Some(x) = stanza.get_child("x", NS_ENCRYPTED) {
            let from: Jid = sender(stanza)?;
            let bytes = keys::dearmor_body(&x.text())?;
            let decrypted = self.key.decrypt(&bytes)?;
            let body = String::from_utf8(decrypted.data)
                .map_err(|e| E2eError::Malformed { what: "body", detail: e.to_string() })?;
            // §4: encrypted, never signed — the sender is not authenticated, whatever we know
            // of its keys (see the module docs). No replay protection either.
            out.events.push(Event::Plaintext {
                from,
                body,
                trust: Trust::Unverified,
                delay: None,
                carbon: None,
            });
            return Ok(());
        }
        if let Some(body) = stanza.get_child("body", NS_CLIENT) {
            let from: Jid = sender(stanza)?;
            out.unencrypted(from, body, "without XEP-0027 encryption");
        }
        Ok(())
    }

    fn failed(&mut self, cx: &mut Cx<'_>, failure: Failure<'_>, out: &mut Output) {
        let Failure { owner, node, condition } = failure;
        if node != NODE_KEYSERVER {
            return;
        }
        // The keyserver has nothing for the account.
        self.listed.entry(owner.clone()).or_default();
        let waiting: Vec<Jid> =
            self.pending_presence.keys().filter(|j| j.to_bare() == *owner).cloned().collect();
        for from in waiting {
            self.pending_presence.remove(&from);
            let error = E2eError::Rejected {
                reason: "unknown-signer",
                detail: format!("no key of {owner} on the keyserver ({condition}): presence not verified"),
            };
            out.events.push(Event::Rejected { from, error });
        }
        directory::flush(self, cx, out);
    }
}

impl Engine for Pgp {
    fn protocol(&self) -> Protocol {
        Protocol::of(&super::PGP)
    }

    fn publish(&mut self, _cx: &mut Cx<'_>) -> Result<Output, E2eError> {
        let item = text_el("pubkey", NODE_KEYSERVER, b64(&self.key.public_bytes()?));
        let mut out = Output {
            actions: vec![Action::Publish {
                node: NODE_KEYSERVER.into(),
                id: self.key.fingerprint().to_owned(),
                item,
                options: vec![
                    ("pubsub#max_items".into(), "max".into()),
                    ("pubsub#access_model".into(), "open".into()),
                ],
            }],
            events: vec![],
        };
        // Our other devices' keys, so what we send can be read there (and in carbons).
        self.dir.refetch(&self.own(), NODE_KEYSERVER, &mut out);
        Ok(out)
    }

    fn presence(&mut self, cx: &mut Cx<'_>) -> Result<Vec<Element>, E2eError> {
        // §2: sign the <status/> character data; we send none, so the empty string.
        let sig = self.key.sign_detached(cx.rng, b"", cx.now)?;
        Ok(vec![text_el("x", NS_SIGNED, keys::armor_body(&sig))])
    }

    fn receive_presence(&mut self, _cx: &mut Cx<'_>, stanza: &Element) -> Result<Output, E2eError> {
        let mut out = Output::default();
        let Some(x) = stanza.get_child("x", NS_SIGNED) else { return Ok(out) };
        let from: Jid = sender(stanza)?;
        if from.to_string() == self.me.to_string() {
            return Ok(out); // our own presence, reflected
        }
        let status = stanza.get_child("status", NS_CLIENT).map(Element::text).unwrap_or_default();
        let sig = keys::dearmor_body(&x.text())?;
        self.check_presence(&from.to_bare(), &from, &status, &sig, true, &mut out)?;
        Ok(out)
    }

    fn keyed(&mut self) -> Option<&mut dyn Keyed> {
        Some(self)
    }

    fn verify(&mut self, _cx: &mut Cx<'_>, peer: &BareJid, oob: &OutOfBand) -> Result<Output, E2eError> {
        Ok(trust::verify(&mut self.ring, peer, oob, self.listed.get(peer)))
    }

    fn out_of_band(&self) -> OutOfBand {
        self.key.out_of_band()
    }

    fn identity_marks(&self) -> crate::IdentityMarks {
        self.key.identity_marks()
    }

    /// Anyone holding our public key can write us an XEP-0027 message, the recipient included:
    /// the body is encrypted, not signed, so nothing in it names its author.
    fn forge(&mut self, cx: &mut Cx<'_>, from: &Jid, body: &str) -> Result<Option<Element>, E2eError> {
        let x = self.encrypted(cx, &[self.key.public().clone()], body)?;
        Ok(Some(
            el("message", NS_CLIENT)
                .with("from", from.to_string())
                .with("to", self.own().to_string())
                .with("type", "chat")
                .child(text_el("body", NS_CLIENT, FALLBACK))
                .child(x),
        ))
    }

    fn steal(&self, what: Theft) -> Box<dyn Engine> {
        // The key is all there is; what was in flight stays behind.
        kit::stolen(self.clone(), what, |copy| {
            copy.dir.wipe();
            copy.pending_presence.clear();
        })
    }
}

