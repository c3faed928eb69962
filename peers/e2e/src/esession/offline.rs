//! Offline ESessions (XEP-0187): the options a device publishes before it goes offline, and
//! the offline ESessions a sender starts from them.
//!
//! XEP-0187 names its parties the other way round from the rest of this engine: its "Alice"
//! publishes options and is offline, its "Bob" starts the offline ESession. Here they are the
//! *publisher* and the *sender*. The negotiation is XEP-0116's 3-message variant with the
//! publisher's first message taken from PEP (§init): the sender answers as XEP-0116's
//! responder and proves its identity at once; the publisher, back online, verifies it.
//!
//! Choices where the text leaves room (README "Protocol choices"):
//! - every message to an absent peer is its own offline ESession, terminated in its first and
//!   only stanza (§init-offline-start: "a single stanza is encrypted and sent in isolation …
//!   including perfect forward secrecy"): the publisher destroys its keys as soon as it is read
//!   (XEP-0210 §reqs-forward: "Offline ESession keys are destroyed as soon as the stanza is
//!   decrypted"), and the sender has no session to end when the publisher comes back
//!   (§terminate);
//! - the sender fetches the options beside its online request (XEP-0116 §init-online-request),
//!   which the publisher answers when it is back: options on the subscribers' node mean the
//!   publisher is offline (it withdraws them when it returns, §init-offline-accept step 1), and
//!   its answer to the online request means it is back;
//! - the options' `signs` are verified with a key the sender already holds for the publisher, or
//!   else with the keys the publisher publishes under XEP-0189 (§init-offline-request);
//! - the options expire a day after they are published (§sec-expire leaves it to the
//!   publisher, who does not know when it will be back);
//! - the publisher's private values, stored while it is offline, are long-term secrets (a theft
//!   of its long-term keys before it returns gets them: §sec-conclusion); back online it keeps
//!   them in memory only (§init-offline-accept step 2) until it next goes offline or they
//!   expire.

use core::fmt;
use core::time::Duration;
use std::collections::BTreeSet;

use jid::{BareJid, Jid};
use minidom::Element;
use num_bigint::BigUint;

use super::crypto::{self, check_public, counter_mpi, mpi};
use super::forms::{self, FORM_TYPE, Field, Form, NS_DATA, form_content};
use super::{
    Esession, Kind, NS_C, NS_INIT, REKEY_FREQ, Sealed, Session, Unreadable, counter_b, escape, hide_identity,
    open, open_identity, parse_counter, random_counter, random_vec, seal, session_message, termination,
};
use crate::kit::codec::{b64, hex, unb64};
use crate::kit::crypto::sha256;
use crate::time::{format_stamp, parse_stamp};
use crate::xml::{ElementExt, NS_PUBSUB, el, sender};
use crate::{Action, Cx, E2eError, Event, Output, Trust};

/// XEP-0187 §ns: the PEP node of the offline options for presence subscribers
/// (§init-offline-publish).
pub const NS_OFFLINE: &str = "http://www.xmpp.org/extensions/xep-0187.html#ns";
/// XEP-0189's PEP node of an entity's long-term public keys, as XEP-0189 defined it while
/// XEP-0187 was current (0.4–0.6; not in specs/, see
/// <https://xmpp.org/extensions/attic/xep-0189-0.6.html>): each key a `<KeyInfo/>` of XML
/// Signature with a `<KeyName/>`, its item id the SHA-256 fingerprint of the normalized
/// `<KeyValue/>`. (Its later versions dropped XML Signature for a format of their own.)
pub const NS_PUBKEYS: &str = "http://www.xmpp.org/extensions/xep-0189.html#ns";
/// W3C XML Signature.
const NS_XMLDSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
/// XEP-0131 stanza headers (the `Created` header of §exchange).
pub(super) const NS_SHIM: &str = "http://jabber.org/protocol/shim";
/// How long published options stay usable (§sec-expire).
const OFFLINE_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The groups we publish a DH value for, in our order of preference.
const OFFLINE_GROUPS: [u32; 2] = [14, 5];
/// The id of the one item on the options node.
const OPTIONS_ITEM: &str = "current";
/// At most this many signatures, and published keys, are tried (each an RSA verification):
/// the options and the keys come from the network.
const MAX_TRIED: usize = 8;

/// The private side of options this device published (the publisher's `N_A`, one `x` for each
/// MODP group, the expiry time: §init-offline-publish), and the DH values and nonces of the
/// offline requests accepted under them (§sec-replay).
#[derive(Clone)]
pub(super) struct OfflineSecrets {
    n_a: Vec<u8>,
    dh: Vec<(u32, BigUint)>,
    expires: Duration,
    seen: BTreeSet<[u8; 32]>,
}

impl fmt::Debug for OfflineSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OfflineSecrets(expires {})", format_stamp(self.expires))
    }
}

/// A peer's offline options, verified and found acceptable: what a sender needs to start an
/// offline ESession (§init-offline-start).
#[derive(Clone)]
pub(super) struct PeerOptions {
    n_a: Vec<u8>,
    group: u32,
    e: BigUint,
    expires: Duration,
    /// The peer's bare JID, or its `match_resource`.
    to: Jid,
    rekey_freq: u32,
    logging: String,
}

impl PeerOptions {
    /// Whether they can still be used at `now` (§init-offline-request: not expired).
    pub(super) fn usable(&self, now: Duration) -> bool {
        now < self.expires
    }
}

impl fmt::Debug for PeerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerOptions({} until {})", self.to, format_stamp(self.expires))
    }
}

/// A fetch for an offline ESession in flight.
#[derive(Debug, Clone)]
pub(super) enum Lookup {
    /// The peer's options node (§init-offline-request).
    Options,
    /// Its XEP-0189 keys, to verify these options' signatures.
    Keys(Box<Element>),
}

/// The value of `var` the peer offers that we accept: its options (or values) in the peer's
/// order of preference.
pub(super) fn choose(form: &Form, var: &'static str, ours: &[&str]) -> Result<String, E2eError> {
    let f = form.field(var).ok_or(E2eError::Missing { what: var })?;
    let offered = if f.options.is_empty() { &f.values } else { &f.options };
    offered.iter().find(|o| ours.contains(&o.as_str())).cloned().ok_or(E2eError::Rejected {
        reason: "not-acceptable",
        detail: format!("no acceptable option in `{var}`"),
    })
}

/// The ESession options we accept, besides the group (XEP-0116 §init-online-request; logging
/// under its XEP-0155 name).
const ACCEPTED: [(&str, &[&str]); 8] = [
    ("disclosure", &["never"]),
    ("security", &["e2e"]),
    ("crypt_algs", &["aes128-ctr"]),
    ("hash_algs", &["sha256"]),
    ("sign_algs", &[crypto::RSA_SHA256]),
    ("compress", &["none"]),
    ("stanzas", &["message"]),
    ("ver", &["1.0"]),
];

/// Whether a form's boolean field is set ("1" or "true", XEP-0004).
fn is_set(form: &Form, var: &str) -> bool {
    form.field(var).and_then(|f| f.values.first()).is_some_and(|v| v == "1" || v == "true")
}

/// XEP-0189's `<KeyInfo/>` for our key, under `name`.
fn key_info(key_value: &str, name: &str) -> Result<Element, E2eError> {
    format!("<KeyInfo xmlns='{NS_XMLDSIG}'><KeyName>{}</KeyName>{key_value}</KeyInfo>", escape(name))
        .parse()
        .map_err(|e: minidom::Error| E2eError::Malformed { what: "KeyInfo", detail: e.to_string() })
}

/// The normalized `<KeyValue/>` of a published `<KeyInfo/>` (XEP-0116 §sign-normal).
fn key_value_in(info: &Element) -> Option<String> {
    let kv = info.get_child("KeyValue", NS_XMLDSIG)?;
    let mut out = String::new();
    forms::normalize(kv, &mut out);
    Some(out)
}

/// Whether one of `signs` is the signature by `key_value` of the options' content.
fn signed_by(key_value: &str, content: &[u8], signs: &[String]) -> bool {
    signs.iter().take(MAX_TRIED).any(|sig| {
        let plain = format!("{key_value}<SignatureValue>{}</SignatureValue>", sig.trim());
        crypto::verify_identity(&plain, content).is_ok()
    })
}

impl Esession {
    // ---- the publisher ------------------------------------------------------------------------

    /// §init-offline-publish, just before going offline: new options (a new `N_A` and new `x`
    /// values each time, §sec-replay), signed, on the subscribers' node with the `presence`
    /// access model and never pushed; our key beside them (XEP-0189) for senders that do not
    /// have it yet. The private values are kept "in a secure way" until we are back.
    pub(super) fn publish_offline(&mut self, cx: &mut Cx<'_>, out: &mut Output) -> Result<(), E2eError> {
        let identity = self.identity(cx.rng)?;
        let n_a = random_vec(cx.rng, 16);
        let mut dh = Vec::new();
        let mut dhkeys = Vec::new();
        for g in OFFLINE_GROUPS {
            let Some(p) = crypto::group_prime(g) else { continue };
            let x = crypto::secret_exponent(cx.rng);
            dhkeys.push(b64(&mpi(&BigUint::from(2u32).modpow(&x, p))));
            dh.push((g, x));
        }
        let expires = cx.now + OFFLINE_LIFETIME;
        let groups: Vec<String> = OFFLINE_GROUPS.iter().map(u32::to_string).collect();
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        let dhkeys: Vec<&str> = dhkeys.iter().map(String::as_str).collect();
        let resource = self.me.resource().to_string();
        // "in exactly the same way as … an online ESession request data form … except she MUST
        // omit the 'accept' and 'pubkey' fields"; 3-message style: DH values, not hashes, and
        // no SAS.
        let mut form = Form {
            kind: "form".into(),
            fields: [
                vec![Field::values("FORM_TYPE", Some("hidden"), &[FORM_TYPE])],
                super::offered_options(&groups),
                vec![
                Field::options("ver", "list-single", &["1.0"], false),
                Field::values("rekey_freq", Some("text-single"), &[&REKEY_FREQ.to_string()]),
                Field::values("expires", None, &[&format_stamp(expires)]),
                Field::values("my_nonce", None, &[&b64(&n_a)]),
                Field::values("dhkeys", None, &dhkeys),
                // Our state is this device's: only this resource can decrypt.
                Field::values("match_resource", None, &[&resource]),
                ],
            ]
            .concat(),
        };
        let signature = identity.signature(&form_content(&form.to_element(), &[]), cx.rng);
        form.fields.push(Field::values("signs", None, &[&b64(&signature)]));
        let never_pushed = |access: &str| {
            vec![
                ("pubsub#access_model".to_owned(), access.to_owned()),
                ("pubsub#deliver_notifications".to_owned(), "0".to_owned()),
                ("pubsub#send_last_published_item".to_owned(), "never".to_owned()),
            ]
        };
        out.actions.push(Action::Publish {
            node: NS_OFFLINE.into(),
            id: OPTIONS_ITEM.into(),
            item: form.to_element(),
            options: never_pushed("presence"),
        });
        // XEP-0189: the item id is the key's fingerprint, and its <KeyName/> (unique for the
        // user) may be the same.
        let key_value = identity.key_value();
        let fingerprint = hex(&crypto::fingerprint(&key_value));
        out.actions.push(Action::Publish {
            node: NS_PUBKEYS.into(),
            id: fingerprint.clone(),
            item: key_info(&key_value, &fingerprint)?,
            options: never_pushed("presence"),
        });
        self.offline_stored = Some(OfflineSecrets { n_a, dh, expires, seen: BTreeSet::new() });
        self.offline_retrieved = None;
        Ok(())
    }

    /// §init-offline-accept steps 1 and 2, at login: withdraw the options (XEP-0187 shows an
    /// empty `<item/>`, which XEP-0060 §7.1.3.6 refuses on a node with payloads; an empty
    /// cancelled form says the same) and take the stored values into memory, leaving no stored
    /// copy.
    pub(super) fn back_online(&mut self, out: &mut Output) {
        let Some(secrets) = self.offline_stored.take() else { return };
        self.offline_retrieved = Some(secrets);
        out.actions.push(Action::Publish {
            node: NS_OFFLINE.into(),
            id: OPTIONS_ITEM.into(),
            item: el("x", NS_DATA).with("type", "cancel"),
            options: vec![("pubsub#access_model".to_owned(), "presence".to_owned())],
        });
    }

    /// §init-offline-accept: an offline ESession request (the sender's `<init/>` form, type
    /// `submit`), with the encrypted content of the same stanza.
    pub(super) fn accept_offline(
        &mut self,
        cx: &mut Cx<'_>,
        from: &Jid,
        thread: &str,
        stanza: &Element,
        x: &Element,
        out: &mut Output,
    ) -> Result<(), E2eError> {
        let peer = from.to_bare();
        let form = Form::parse(x)?;
        // Back online they are in memory; a copy of the stored ones (a thief's) reads too.
        let Some(secrets) = self.offline_retrieved.clone().or_else(|| self.offline_stored.clone()) else {
            // §init-offline-accept step 1's note: without the stored x, nothing can be read.
            return Err(E2eError::Rejected {
                reason: "bad-nonce",
                detail: format!("an offline ESession from {from} under options this device does not hold"),
            });
        };
        // "If the current time is after her offline ESession options expiry time then she MUST
        // discard all stanzas from offline ESessions without decrypting them."
        if cx.now > secrets.expires {
            if self.offline_retrieved.is_some() {
                self.offline_retrieved = None;
            } else {
                self.offline_stored = None;
            }
            return Err(E2eError::Rejected {
                reason: "offline-expired",
                detail: format!("an offline ESession from {from} under options that have expired"),
            });
        }
        // Step 1: the x for the 'nonce' and 'modp' fields.
        if unb64("nonce", form.value("nonce")?)? != secrets.n_a {
            return Err(E2eError::Rejected {
                reason: "bad-nonce",
                detail: format!("an offline ESession from {from} under options we no longer hold"),
            });
        }
        // Step 3, XEP-0116 §init-acceptalice-prep: the options must be ones we published.
        for (var, ours) in ACCEPTED {
            if !ours.contains(&form.value(var)?) {
                return Err(E2eError::Rejected {
                    reason: "not-acceptable",
                    detail: format!("`{var}` we did not offer"),
                });
            }
        }
        if !matches!(form.value("logging")?, "mustnot" | "may") {
            return Err(E2eError::Rejected { reason: "not-acceptable", detail: "`logging` we did not offer".into() });
        }
        if form.value("rekey_freq")?.trim().parse::<u32>().map_or(true, |f| f < REKEY_FREQ) {
            return Err(E2eError::Rejected { reason: "not-acceptable", detail: "`rekey_freq` below ours".into() });
        }
        let group: u32 = form
            .value("modp")?
            .trim()
            .parse()
            .map_err(|_| E2eError::Malformed { what: "modp", detail: "not a group number".into() })?;
        let (_, x_secret) = secrets.dh.iter().find(|(g, _)| *g == group).cloned().ok_or(E2eError::Rejected {
            reason: "not-acceptable",
            detail: format!("group {group} was not offered"),
        })?;
        let p = crypto::group_prime(group).ok_or(E2eError::Missing { what: "group" })?;
        let d_bytes = unb64("dhkeys", form.value("dhkeys")?)?;
        let d = BigUint::from_bytes_be(&d_bytes);
        check_public("d", &d, p)?;
        let n_b = unb64("my_nonce", form.value("my_nonce")?)?;
        // Step 2 and §sec-replay: a value of d, or a sender's nonce, already received under
        // these options is a replayed offline ESession.
        let marks = [sha256(&[b"d", &d_bytes]), sha256(&[b"n", &n_b])];
        if marks.iter().any(|m| secrets.seen.contains(m)) {
            return Err(E2eError::Rejected {
                reason: "replayed-stanza",
                detail: format!("an offline ESession from {from} that was already received"),
            });
        }
        let c_a = parse_counter(form.value("counter")?)?;
        // XEP-0116 §init-acceptalice-prep (3-message): K = HASH(d^x mod p); the keys as
        // §init-keys; C_B from C_A.
        let k = sha256(&[&mpi(&d.modpow(&x_secret, p))]);
        let (a_keys, b_keys, _, ks_b) = crypto::session_keys(&k);
        // §init-online-bobid: the sender's identity, under its keys, signed over
        // {N_A, N_B, d, pubKey, form_B}.
        let id = unb64("identity", form.value("identity")?)?;
        let m = unb64("mac", form.value("mac")?)?;
        let form_b = form_content(x, &["identity", "mac"]);
        let (their_key, after) = open_identity(
            &b_keys,
            &ks_b,
            counter_b(c_a),
            (&id, &m, "M_B"),
            [&secrets.n_a, &n_b, &d_bytes],
            [&form_b, b""],
        )?;
        if let Some(s) = self.offline_retrieved.as_mut().or(self.offline_stored.as_mut()) {
            s.seen.extend(marks);
        }
        self.observe_key(&peer, &their_key, out);
        let trust = self.keys.get(&peer).and_then(|k| k.get(&their_key)).copied().unwrap_or(Trust::Unverified);
        if trust == Trust::Untrusted {
            out.events.push(Event::Alert {
                reason: "untrusted-key",
                detail: format!("{from} presents a key whose SAS did not match before: its offline message is not read"),
            });
            return Ok(());
        }
        let mut session = Session {
            thread: thread.to_owned(),
            peer: from.clone(),
            group,
            own_secret: x_secret,
            peer_public: d,
            send: a_keys,
            recv: b_keys,
            old_recv: None,
            send_ctr: c_a,
            recv_ctr: after,
            sent_since_rekey: 0,
            rekey_freq: REKEY_FREQ,
            keys_received: 0,
            sas: String::new(),
            verified: trust == Trust::Verified,
            chain_broken: false,
            their_key,
            initiator: false,
            seen_macs: Default::default(),
            skip: None,
            offline: true,
            // §exchange: an offline ESession carries the one message it was started for.
            stanzas: vec![Kind::Message],
        };
        out.events.push(Event::Alert {
            reason: "esession-offline",
            detail: format!("offline ESession from {from} (XEP-0187), under the options we published"),
        });
        let mut ended = is_set(&form, "terminate");
        if let Some(c) = stanza.get_child("c", NS_C) {
            let sealed = Sealed::read(c)?;
            let opened = match open(&session, &sealed, session.recv_ctr) {
                Ok(o) => o,
                Err(Unreadable::Mac) => {
                    return Err(E2eError::Rejected {
                        reason: "bad-mac",
                        detail: format!("XEP-0200 stanza MAC in the offline ESession from {from}"),
                    });
                }
                Err(Unreadable::Content(e, _)) => return Err(e),
            };
            session.consumed(&sealed.mac, opened.counter);
            ended |= termination(&opened.text).is_some();
            opened.show(from, Kind::Message, session.trust(), out);
        }
        if ended {
            // §init-offline-start: "the ESession is terminated immediately"; its keys go now
            // (XEP-0210 §reqs-forward).
            self.remember_ended(peer, thread);
        } else {
            self.sessions.insert(peer, session);
        }
        Ok(())
    }

    // ---- the sender ---------------------------------------------------------------------------

    /// §init-offline-request: asks for the peer's options for subscribers (ours are contacts
    /// that share presence), unless a fetch is under way.
    pub(super) fn look_up(&mut self, to: &BareJid, out: &mut Output) {
        if self.lookups.contains_key(to) {
            return;
        }
        self.lookups.insert(to.clone(), Lookup::Options);
        out.actions.push(Action::Fetch { owner: to.clone(), node: NS_OFFLINE.into() });
    }

    /// A PEP answer to one of our lookups (`<iq type='result'/>` with `<items/>`).
    pub(super) fn pep_result(&mut self, cx: &mut Cx<'_>, stanza: &Element, out: &mut Output) -> Result<(), E2eError> {
        let Some(items) = stanza.get_child("pubsub", NS_PUBSUB).and_then(|p| p.get_child("items", NS_PUBSUB)) else {
            return Ok(());
        };
        let owner = sender::<Jid>(stanza)?.to_bare();
        match (self.lookups.get(&owner), items.attr("node")) {
            (Some(Lookup::Options), Some(NS_OFFLINE)) => {
                self.lookups.remove(&owner);
                self.options_arrived(cx, &owner, items, out)
            }
            (Some(Lookup::Keys(_)), Some(NS_PUBKEYS)) => match self.lookups.remove(&owner) {
                Some(Lookup::Keys(x)) => self.keys_arrived(cx, &owner, &x, items, out),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// A lookup's fetch failed (no such node: the peer never went offline with options).
    pub(super) fn lookup_failed(&mut self, owner: &BareJid, node: &str) {
        let ours = match self.lookups.get(owner) {
            Some(Lookup::Options) => node == NS_OFFLINE,
            Some(Lookup::Keys(_)) => node == NS_PUBKEYS,
            None => false,
        };
        if ours {
            self.lookups.remove(owner);
        }
    }

    /// The options node's items: none, or withdrawn, means the peer is not offline (the online
    /// request waits for its answer); options are checked and their signature verified.
    fn options_arrived(
        &mut self,
        cx: &mut Cx<'_>,
        owner: &BareJid,
        items: &Element,
        out: &mut Output,
    ) -> Result<(), E2eError> {
        let latest = items.children().filter(|i| i.is("item", NS_PUBSUB)).last();
        let Some(x) = latest.and_then(|i| i.get_child("x", NS_DATA)).filter(|x| x.attr("type") == Some("form"))
        else {
            return Ok(());
        };
        let (terms, content, signs) = self.offline_terms(owner, x, cx.now)?;
        let known: Vec<String> = self
            .keys
            .get(owner)
            .map(|k| k.iter().filter(|(_, t)| **t != Trust::Untrusted).map(|(kv, _)| kv.clone()).collect())
            .unwrap_or_default();
        if known.iter().any(|kv| signed_by(kv, &content, &signs)) {
            self.offline_ready(cx, owner, terms, out);
            return Ok(());
        }
        // "if he does not have a local copy of any of her public keys, her long-term public
        // signature-verification keys from her server".
        self.lookups.insert(owner.clone(), Lookup::Keys(Box::new(x.clone())));
        out.actions.push(Action::Fetch { owner: owner.clone(), node: NS_PUBKEYS.into() });
        Ok(())
    }

    /// The publisher's XEP-0189 keys: the one that signed its options is observed (a key
    /// never seen for the account alerts, XEP-0116 §sec-associations) and used.
    fn keys_arrived(
        &mut self,
        cx: &mut Cx<'_>,
        owner: &BareJid,
        x: &Element,
        items: &Element,
        out: &mut Output,
    ) -> Result<(), E2eError> {
        let (terms, content, signs) = self.offline_terms(owner, x, cx.now)?;
        let signer = items
            .children()
            .filter(|i| i.is("item", NS_PUBSUB))
            .filter_map(|i| i.get_child("KeyInfo", NS_XMLDSIG))
            .filter_map(key_value_in)
            .take(MAX_TRIED)
            .find(|kv| signed_by(kv, &content, &signs));
        // "If … Bob is unable to verify any of Alice's signatures … then he MUST proceed no
        // further": no offline ESession; the online request still waits.
        let Some(key) = signer else {
            return Err(E2eError::Rejected {
                reason: "bad-signature",
                detail: format!("no key {owner} publishes signed its offline ESession options: none is started"),
            });
        };
        if self.keys.get(owner).and_then(|k| k.get(&key)) == Some(&Trust::Untrusted) {
            out.events.push(Event::Alert {
                reason: "untrusted-key",
                detail: format!("{owner} signed its offline options with a key whose SAS did not match before"),
            });
            return Ok(());
        }
        self.observe_key(owner, &key, out);
        self.offline_ready(cx, owner, terms, out);
        Ok(())
    }

    /// Checks a peer's options (§init-offline-request: acquired, unexpired, every field with an
    /// option we support) and returns what an offline ESession needs, with the signed content
    /// and the signatures.
    fn offline_terms(
        &self,
        owner: &BareJid,
        x: &Element,
        now: Duration,
    ) -> Result<(PeerOptions, Vec<u8>, Vec<String>), E2eError> {
        let form = Form::parse(x)?;
        if form.value("FORM_TYPE")? != FORM_TYPE {
            return Err(E2eError::Malformed { what: "offline options", detail: "FORM_TYPE".into() });
        }
        let stamp = form.value("expires")?;
        let expires =
            parse_stamp(stamp).ok_or(E2eError::Malformed { what: "expires", detail: stamp.to_owned() })?;
        if expires <= now {
            return Err(E2eError::Rejected {
                reason: "offline-expired",
                detail: format!("{owner}'s offline ESession options expired at {stamp}"),
            });
        }
        for (var, ours) in ACCEPTED {
            choose(&form, var, ours)?;
        }
        let logging = choose(&form, "logging", &["mustnot", "may"])?;
        let groups: Vec<String> = crypto::GROUPS.iter().map(u32::to_string).collect();
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        let chosen = choose(&form, "modp", &groups)?;
        let modp = form.field("modp").ok_or(E2eError::Missing { what: "modp" })?;
        let offered = if modp.options.is_empty() { &modp.values } else { &modp.options };
        let index = offered.iter().position(|o| *o == chosen).unwrap_or(0);
        let group: u32 = chosen.parse().map_err(|_| E2eError::Malformed { what: "modp", detail: chosen.clone() })?;
        let e_text = form.field("dhkeys").and_then(|f| f.values.get(index)).ok_or(E2eError::Missing { what: "dhkeys" })?;
        let e = BigUint::from_bytes_be(&unb64("dhkeys", e_text)?);
        let p = crypto::group_prime(group).ok_or(E2eError::Missing { what: "group" })?;
        // §init-offline-start step 1: "If the value of e he selected is not valid, Bob SHOULD
        // terminate the ESession without sending an error."
        check_public("e", &e, p)?;
        let n_a = unb64("my_nonce", form.value("my_nonce")?)?;
        let rekey_freq = form.value("rekey_freq").ok().and_then(|f| f.trim().parse().ok()).unwrap_or(REKEY_FREQ);
        // §init-offline-start: "Bob MUST address all the stanzas … to the specified resource".
        let to = match form.value("match_resource") {
            Ok(resource) => Jid::from(owner.with_resource_str(resource).map_err(|e| E2eError::Malformed {
                what: "match_resource",
                detail: e.to_string(),
            })?),
            Err(_) => Jid::from(owner.clone()),
        };
        let signs = form.field("signs").map(|f| f.values.clone()).unwrap_or_default();
        let terms = PeerOptions { n_a, group, e, expires, to, rekey_freq: rekey_freq.max(REKEY_FREQ), logging };
        Ok((terms, form_content(x, &["signs"]), signs))
    }

    /// The peer is offline and its options are good: the messages waiting for it go, each in
    /// its own offline ESession.
    fn offline_ready(&mut self, cx: &mut Cx<'_>, to: &BareJid, terms: PeerOptions, out: &mut Output) {
        self.peer_options.insert(to.clone(), terms);
        self.send_offline(cx, to, out);
    }

    /// Sends the messages waiting for `to` in offline ESessions, when its options are known.
    pub(super) fn send_offline(&mut self, cx: &mut Cx<'_>, to: &BareJid, out: &mut Output) {
        let Some(terms) = self.peer_options.get(to).cloned() else { return };
        for item in self.stored.remove(to).unwrap_or_default() {
            if item.kind() != Kind::Message {
                // Directed presence and iq requests go to a device that is online (RFC 6121
                // §4.6, RFC 6120 §8.2.3): an offline ESession carries a message.
                out.events.push(Event::Alert {
                    reason: crate::reason::NOT_SENT.code,
                    detail: format!("{to} is offline: the {} is not sent", item.kind()),
                });
                continue;
            }
            match self.offline_message(cx, &terms, &item.content(), true) {
                Ok(stanza) => {
                    out.events.push(Event::Alert {
                        reason: "esession-offline",
                        detail: format!(
                            "{to} is offline: sent in an offline ESession (XEP-0187) under its options (until {})",
                            format_stamp(terms.expires)
                        ),
                    });
                    out.actions.push(Action::Send(stanza));
                }
                Err(e) => out.events.push(Event::Alert { reason: "not-sent", detail: e.to_string() }),
            }
        }
    }

    /// §init-offline-start: XEP-0116's responder steps (§init-online-bobprep for the
    /// 3-message variant, §init-keys, §init-hide) against the peer's published e, the form in
    /// `<init/>` (with `terminate` set: we always do), and the message encrypted in the same
    /// stanza (with the §exchange `Created` header). Nothing of the session is kept but its
    /// thread, so that what the peer may send on it is not answered.
    pub(super) fn offline_message(
        &mut self,
        cx: &mut Cx<'_>,
        terms: &PeerOptions,
        content: &str,
        terminate: bool,
    ) -> Result<Element, E2eError> {
        let p = crypto::group_prime(terms.group).ok_or(E2eError::Missing { what: "group" })?;
        let thread = hex(&random_vec(cx.rng, 16));
        let n_b = random_vec(cx.rng, 16);
        let c_a = random_counter(cx.rng);
        let y = crypto::secret_exponent(cx.rng);
        let d = BigUint::from(2u32).modpow(&y, p);
        let k = sha256(&[&mpi(&terms.e.modpow(&y, p))]);
        let (a_keys, b_keys, _, ks_b) = crypto::session_keys(&k);
        let group = terms.group.to_string();
        let freq = terms.rekey_freq.to_string();
        let mut form = Form {
            kind: "submit".into(),
            fields: vec![
                Field::values("FORM_TYPE", None, &[FORM_TYPE]),
                Field::values("logging", None, &[&terms.logging]),
                Field::values("disclosure", None, &["never"]),
                Field::values("security", None, &["e2e"]),
                Field::values("modp", None, &[&group]),
                Field::values("crypt_algs", None, &["aes128-ctr"]),
                Field::values("hash_algs", None, &["sha256"]),
                Field::values("sign_algs", None, &[crypto::RSA_SHA256]),
                Field::values("compress", None, &["none"]),
                Field::values("stanzas", None, &["message"]),
                Field::values("ver", None, &["1.0"]),
                Field::values("rekey_freq", None, &[&freq]),
                Field::values("my_nonce", None, &[&b64(&n_b)]),
                Field::values("dhkeys", None, &[&b64(&mpi(&d))]),
                Field::values("nonce", None, &[&b64(&terms.n_a)]),
                Field::values("counter", None, &[&b64(&counter_mpi(c_a))]),
            ],
        };
        if terminate {
            form.fields.push(Field::values("terminate", None, &["1"]));
        }
        let form_b = form_content(&form.to_element(), &[]);
        let identity = self.identity(cx.rng)?;
        let (id_b, m_b, after) = hide_identity(
            &identity,
            &b_keys,
            &ks_b,
            counter_b(c_a),
            [&terms.n_a, &n_b, &mpi(&d)],
            [&form_b, b""],
            cx.rng,
        );
        form.fields.push(Field::values("identity", None, &[&b64(&id_b)]));
        form.fields.push(Field::values("mac", None, &[&b64(&m_b)]));
        let mut session = Session {
            thread,
            peer: terms.to.clone(),
            group: terms.group,
            own_secret: y,
            peer_public: terms.e.clone(),
            send: b_keys,
            recv: a_keys,
            old_recv: None,
            send_ctr: after,
            recv_ctr: c_a,
            sent_since_rekey: 0,
            rekey_freq: terms.rekey_freq,
            keys_received: 0,
            sas: String::new(),
            verified: false,
            chain_broken: false,
            their_key: String::new(),
            initiator: false,
            seen_macs: Default::default(),
            skip: None,
            offline: true,
            // §exchange: an offline ESession carries the one message it was started for.
            stanzas: vec![Kind::Message],
        };
        let content = format!(
            "{content}<headers xmlns='{NS_SHIM}'><header name='Created'>{}</header></headers>",
            format_stamp(cx.now)
        );
        let c = seal(&mut session, &content, None)?;
        self.remember_ended(terms.to.to_bare(), &session.thread);
        Ok(session_message(&session, vec![el("init", NS_INIT).child(form.to_element()), c]))
    }
}
