//! The `omemo` and `omemo-legacy` engines: XEP-0384 (`urn:xmpp:omemo:2`, with the XEP-0420
//! SCE envelope) and OMEMO 0.3 (`eu.siacs.conversations.axolotl`, wire formats in
//! [`super::legacy`]) over the core in this module. The two versions share the session logic
//! and never talk to each other: each reads only its own namespace.
//!
//! - §devices / §bundles: the device list (item `current`) and one bundle item per device,
//!   both published with `pubsub#access_model=open` (bundles also `pubsub#max_items=max`);
//!   the own device list is fetched and re-announced when this device is missing from it.
//! - §usecases-messagesend: the SCE envelope (rpad, time, to, from) is encrypted once and its
//!   key is ratcheted to every device of the recipient and the sender's other devices;
//!   sessions start just in time from a fetched bundle and repeat their `OMEMOKeyExchange`
//!   until the peer answers. A listed device whose bundle a read does not have (a stale
//!   device id, or one a server made up) is named in a `no-bundle` alert and left out; the
//!   other devices get the message. Its bundle is read again with later messages, at most
//!   [`MAX_BUNDLE_READS`] reads in all, never in answer to a read.
//! - §usecases-receiving: a key exchange builds (or replaces) the session, the used PreKey is
//!   replaced and the bundle republished, and an empty OMEMO message answers it. A replaced
//!   session is kept as a previous state and messages are tried against it too, as
//!   libsignal's `SessionRecord` does ([`super::session`]): a simultaneous start recovers.
//! - Trust, as the device's [`TrustPolicy`] says: BTBV (a new device is trusted blindly until
//!   the user verified one of the contact's devices; from then on unverified devices are not
//!   encrypted to), TOFU (every device's first key is trusted), manual (only verified keys).
//!   Under every policy an IdentityKey that changes for a known device is distrusted with an
//!   alert, untrusted devices are not encrypted to, and a message from one is shown with an
//!   alert.
//! - OMEMO 0.3 differs in what is on the wire: one bundle node per device, no SCE (the
//!   payload is the body text, AES-128-GCM), keys not grouped by JID, a fallback `<body/>`.

use std::collections::{BTreeMap, BTreeSet};

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use prost::Message;
use rand_core::RngCore;

use super::ratchet::{Profile, Ratchet};
use super::session::{Session, SessionRecord};
use super::wire::{OmemoAuthenticatedMessage, OmemoKeyExchange, decode, key32};
use super::x3dh::{self, Bundle, KeyExchangeHeader, KeyStore, PREKEYS};
use super::quirks::Quirks;
use super::{gcm, legacy, payload, random_bytes};
use crate::kit;
use crate::kit::codec::{b64, hex, unb64};
use crate::kit::directory::{self, Directory, Failure, Keyed, Pep, Sealed};
use crate::kit::trust::{Known, TrustBook, TrustState, Wording};
use crate::time::{format_stamp, parse_stamp};
use crate::xml::{ElementExt, NS_CARBONS, NS_CLIENT, NS_EME, NS_HINTS, el, sender, text_el};
use crate::{
    Action, Content, Cx, E2eError, Engine, Event, OutOfBand, Output, Protocol, Theft, Trust, TrustPolicy,
};

/// `urn:xmpp:omemo:2`.
pub const NS: &str = "urn:xmpp:omemo:2";
/// The device list node.
pub const NODE_DEVICES: &str = "urn:xmpp:omemo:2:devices";
/// The bundles node.
pub const NODE_BUNDLES: &str = "urn:xmpp:omemo:2:bundles";
/// XEP-0420 Stanza Content Encryption.
pub const NS_SCE: &str = "urn:xmpp:sce:1";
/// How far in the future an envelope's `<time/>` may lie before it is rejected.
const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// How many reads of a listed device's bundle may come back without it before the device is
/// given up on (§usecases-building: "in order to build a session with a device, their bundle
/// information is fetched"; a device without one cannot be encrypted to). The first read is
/// made for the first message to the device; each later message the user sends reads it once
/// more (a read never follows the answer of the last), until this bound. After that the device
/// stays left out until a bundle of it arrives (a PEP notification: a device that published
/// its list before its bundle is caught that way) or it leaves the device list and comes back.
pub const MAX_BUNDLE_READS: u32 = 3;

/// A listed device whose bundle a read did not have.
#[derive(Debug, Clone, Copy, Default)]
struct MissingBundle {
    /// How many reads came back without it.
    reads: u32,
    /// A message the user sent since the last read: one more read is due.
    due: bool,
}

/// A device id: XEP-0384 §bundles, "a positive integer between 1 and 2^31 - 1".
fn device_id(what: &'static str, s: Option<&str>) -> Result<u32, E2eError> {
    let s = s.ok_or(E2eError::Missing { what })?;
    match s.parse::<u32>() {
        Ok(id) if (1..=0x7FFF_FFFF).contains(&id) => Ok(id),
        _ => Err(E2eError::Malformed { what, detail: format!("`{s}` is not an id in 1..2^31-1") }),
    }
}

/// The fallback body an OMEMO 0.3 message carries for clients without OMEMO (the text
/// Conversations sends).
const LEGACY_FALLBACK: &str = "I sent you an OMEMO encrypted message but your client doesn’t seem to support that. Find more information on https://conversations.im/omemo";

/// Which OMEMO an engine speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// XEP-0384 0.8+, `urn:xmpp:omemo:2`.
    Omemo2,
    /// XEP-0384 0.3, `eu.siacs.conversations.axolotl`.
    Legacy,
}

impl Version {
    fn ns(self) -> &'static str {
        match self {
            Version::Omemo2 => NS,
            Version::Legacy => legacy::NS,
        }
    }

    fn devices_node(self) -> &'static str {
        match self {
            Version::Omemo2 => NODE_DEVICES,
            Version::Legacy => legacy::NODE_DEVICES,
        }
    }

    /// The node holding `device`'s bundle: one node for all devices in OMEMO 2, one per
    /// device in 0.3.
    fn bundle_node(self, device: u32) -> String {
        match self {
            Version::Omemo2 => NODE_BUNDLES.to_owned(),
            Version::Legacy => legacy::bundle_node(device),
        }
    }

    fn profile(self) -> Profile {
        match self {
            Version::Omemo2 => Profile::Omemo2,
            Version::Legacy => Profile::Legacy,
        }
    }
}

/// One `<key rid/>`: the ratchet message, wrapped in this version's key exchange while the
/// peer has not answered ours (OMEMO 2: `kex='true'` and `OMEMOKeyExchange`; 0.3:
/// `prekey='true'` and `PreKeyWhisperMessage`).
fn key_element(
    version: Version,
    rid: u32,
    message: Vec<u8>,
    pending_kex: Option<&KeyExchangeHeader>,
) -> Result<Element, E2eError> {
    let mut k = el("key", version.ns()).with("rid", rid.to_string());
    let bytes = match (pending_kex, version) {
        (None, _) => message,
        (Some(h), Version::Omemo2) => {
            k.set("kex", "true");
            let authenticated: OmemoAuthenticatedMessage = decode("OMEMOAuthenticatedMessage", &message)?;
            OmemoKeyExchange {
                pk_id: h.pk_id,
                spk_id: h.spk_id,
                ik: h.ik.to_vec(),
                ek: h.ek.to_vec(),
                message: authenticated,
            }
            .encode_to_vec()
        }
        (Some(h), Version::Legacy) => {
            k.set("prekey", "true");
            legacy::encode_key_exchange(h, message)
        }
    };
    k.append_text(b64(&bytes));
    Ok(k)
}

/// How the trust alerts read: a device is its id, its key the IdentityKey's fingerprint.
static WORDING: Wording = Wording {
    changed: |owner, device| format!("device {device} of {owner} presents a new IdentityKey"),
    mismatch: |owner, device, fingerprint| {
        format!("device {device} of {owner}: {fingerprint} is not what the peer shows")
    },
    unseen: "key",
};

/// The `<header/>`: OMEMO 2 groups the keys by owner (`<keys jid/>`); 0.3 lists them flat
/// (device ids only) and carries the payload's IV.
fn header(
    version: Version,
    sid: u32,
    keys: Vec<(BareJid, Element)>,
    iv: Option<Vec<u8>>,
) -> Element {
    let ns = version.ns();
    let mut header = el("header", ns).with("sid", sid.to_string());
    match version {
        Version::Omemo2 => {
            let mut by_owner: BTreeMap<BareJid, Element> = BTreeMap::new();
            for (owner, k) in keys {
                by_owner
                    .entry(owner.clone())
                    .or_insert_with(|| el("keys", ns).with("jid", owner.to_string()))
                    .append_child(k);
            }
            for keys in by_owner.into_values() {
                header.append_child(keys);
            }
        }
        Version::Legacy => {
            for (_, k) in keys {
                header.append_child(k);
            }
            if let Some(iv) = iv {
                header.append_child(text_el("iv", ns, b64(&iv)));
            }
        }
    }
    header
}

/// One device's OMEMO state.
#[derive(Debug, Clone)]
pub struct Omemo {
    version: Version,
    me: FullJid,
    device: u32,
    keys: KeyStore,
    /// Per peer device, the current session and the previous states kept beside it
    /// ([`SessionRecord`]).
    sessions: BTreeMap<(BareJid, u32), SessionRecord>,
    devices: BTreeMap<BareJid, BTreeSet<u32>>,
    bundles: BTreeMap<(BareJid, u32), Bundle>,
    /// Listed devices whose bundle could not be had (bounded by [`MAX_BUNDLE_READS`]).
    missing: BTreeMap<(BareJid, u32), MissingBundle>,
    /// The IdentityKey seen for each device, and its trust.
    trust: TrustBook<u32>,
    dir: Directory,
    /// The faults of real clients this device reproduces ([`super::quirks`]).
    quirks: Quirks,
    /// With the quirk `also-legacy`, the OMEMO 0.3 half of this OMEMO 2 device: same device id
    /// and IdentityKey, its own PreKeys, sessions and trust.
    companion: Option<Box<Omemo>>,
}

impl Omemo {
    /// A new OMEMO 2 device: a fresh identity, signed PreKey, 100 PreKeys and a random
    /// device id.
    pub fn new(me: FullJid, rng: &mut dyn RngCore, policy: TrustPolicy) -> Self {
        Self::with_version(Version::Omemo2, me, rng, policy)
    }

    /// A new OMEMO 0.3 device.
    pub fn legacy(me: FullJid, rng: &mut dyn RngCore, policy: TrustPolicy) -> Self {
        Self::with_version(Version::Legacy, me, rng, policy)
    }

    fn with_version(version: Version, me: FullJid, rng: &mut dyn RngCore, policy: TrustPolicy) -> Self {
        let device = (rng.next_u32() % 0x7FFF_FFFF) + 1;
        Omemo {
            version,
            me,
            device,
            keys: KeyStore::generate(rng, PREKEYS),
            sessions: BTreeMap::new(),
            devices: BTreeMap::new(),
            bundles: BTreeMap::new(),
            missing: BTreeMap::new(),
            trust: TrustBook::new(policy, &WORDING),
            dir: Directory::default(),
            quirks: Quirks::default(),
            companion: None,
        }
    }

    /// This device with the given quirks ([`super::quirks`]). `also-legacy` (OMEMO 2 only)
    /// builds the 0.3 half from `rng`: fresh PreKeys under this device's IdentityKey and id.
    pub fn with_quirks(mut self, quirks: Quirks, rng: &mut dyn RngCore) -> Self {
        self.quirks = quirks;
        if quirks.also_legacy && self.version == Version::Omemo2 {
            let mut half = Omemo::legacy(self.me.clone(), rng, self.trust.policy());
            half.device = self.device;
            half.keys = half.keys.with_identity(self.keys.identity.clone());
            half.quirks = quirks.for_companion();
            self.companion = Some(Box::new(half));
        }
        self
    }

    /// The payload form this device sends (0.3: [`legacy::Form`]).
    fn form(&self) -> legacy::Form {
        legacy::Form { iv_16: self.quirks.iv_16, tag_in_payload: self.quirks.tag_in_payload }
    }

    fn own(&self) -> BareJid {
        self.me.to_bare()
    }

    fn fingerprint(ik: &[u8; 32]) -> String {
        hex(ik)
    }

    /// Our IdentityKey as this version transfers it: Ed25519 (OMEMO 2) or Curve25519 (0.3).
    fn own_ik(&self) -> [u8; 32] {
        match self.version {
            Version::Omemo2 => self.keys.identity.public(),
            Version::Legacy => self.keys.identity.curve_public(),
        }
    }

    /// This device's id.
    pub fn device_id(&self) -> u32 {
        self.device
    }

    /// The sessions with `owner`'s device `device`.
    #[cfg(test)]
    pub(super) fn session_record(&self, owner: &BareJid, device: u32) -> Option<&SessionRecord> {
        self.sessions.get(&(owner.clone(), device))
    }

    // ---- PEP ------------------------------------------------------------------------------

    fn bundle_element(&self) -> Element {
        if self.version == Version::Legacy {
            return legacy::bundle_element(&self.keys.legacy_bundle());
        }
        let b = self.keys.bundle();
        let mut prekeys = el("prekeys", NS);
        for (id, pk) in &b.prekeys {
            prekeys.append_child(text_el("pk", NS, b64(pk)).with("id", id.to_string()));
        }
        el("bundle", NS)
            .child(text_el("spk", NS, b64(&b.spk)).with("id", b.spk_id.to_string()))
            .child(text_el("spks", NS, b64(&b.spks)))
            .child(text_el("ik", NS, b64(&b.ik)))
            .child(prekeys)
    }

    fn publish_bundle(&self) -> Action {
        let node = self.version.bundle_node(self.device);
        let item = self.bundle_element();
        match self.version {
            Version::Omemo2 => Action::Publish {
                node,
                id: self.device.to_string(),
                item,
                options: vec![
                    ("pubsub#max_items".into(), "max".into()),
                    ("pubsub#access_model".into(), "open".into()),
                ],
            },
            // One node per device, one item in it (as Conversations publishes it).
            Version::Legacy => Action::Publish {
                node,
                id: "current".into(),
                item,
                options: vec![("pubsub#access_model".into(), "open".into())],
            },
        }
    }

    fn publish_devices(&self, ids: &BTreeSet<u32>) -> Action {
        let ns = self.version.ns();
        let mut list = el(if self.version == Version::Legacy { "list" } else { "devices" }, ns);
        for id in ids {
            list.append_child(el("device", ns).with("id", id.to_string()));
        }
        Action::Publish {
            node: self.version.devices_node().into(),
            id: "current".into(),
            item: list,
            options: vec![("pubsub#access_model".into(), "open".into())],
        }
    }

    fn parse_bundle(&self, item: &Element) -> Result<Bundle, E2eError> {
        if self.version == Version::Legacy {
            let bundle = item.get_child("bundle", legacy::NS).ok_or(E2eError::Missing { what: "bundle" })?;
            return legacy::parse_bundle(bundle);
        }
        let bundle = item.get_child("bundle", NS).ok_or(E2eError::Missing { what: "bundle" })?;
        let child = |name: &'static str| bundle.get_child(name, NS).ok_or(E2eError::Missing { what: name });
        let spk_el = child("spk")?;
        let spks: [u8; 64] = unb64("spks", &child("spks")?.text())?
            .try_into()
            .map_err(|_| E2eError::Malformed { what: "spks", detail: "expected 64 bytes".into() })?;
        let mut prekeys = Vec::new();
        for pk in child("prekeys")?.children().filter(|c| c.is("pk", NS)) {
            prekeys.push((device_id("pk id", pk.attr("id"))?, key32("pk", &unb64("pk", &pk.text())?)?));
        }
        Ok(Bundle {
            ik: key32("ik", &unb64("ik", &child("ik")?.text())?)?,
            spk_id: device_id("spk id", spk_el.attr("id"))?,
            spk: key32("spk", &unb64("spk", &spk_el.text())?)?,
            spks,
            prekeys,
        })
    }

    /// Items of a device list or bundles node, from an iq result or an event notification.
    fn pep_items(&mut self, cx: &mut Cx<'_>, owner: &BareJid, pep: &Pep<'_>, out: &mut Output) -> Result<(), E2eError> {
        let (Some(node), items) = (pep.node, pep.items) else { return Ok(()) };
        let (ns, version) = (self.version.ns(), self.version);
        if node == version.devices_node() {
            self.dir.answered(owner, node);
            let list_name = if version == Version::Legacy { "list" } else { "devices" };
            let mut ids = BTreeSet::new();
            if let Some(list) = items.children().find_map(|i| i.get_child(list_name, ns)) {
                for d in list.children().filter(|d| d.is("device", ns)) {
                    ids.insert(device_id("device id", d.attr("id"))?);
                }
            }
            // §devices: our own id must be on our own list, or we re-announce it.
            if *owner == self.own() && !ids.contains(&self.device) {
                let mut merged = ids.clone();
                merged.insert(self.device);
                out.actions.push(self.publish_devices(&merged));
            }
            // A device that left the list is forgotten; if it comes back, it is read afresh.
            self.missing.retain(|(o, d), _| o != owner || ids.contains(d));
            self.devices.insert(owner.clone(), ids);
        } else if version == Version::Omemo2 && node == NODE_BUNDLES {
            self.dir.answered(owner, node);
            for item in pep.each() {
                let id = device_id("bundle item id", item.attr("id"))?;
                let bundle = self.parse_bundle(item)?;
                self.missing.remove(&(owner.clone(), id));
                self.bundles.insert((owner.clone(), id), bundle);
            }
            // A read of the whole node (not a notification of one item): a listed device
            // waiting for its bundle that is not in it has none.
            if pep.complete {
                for d in self.waiting_for_bundle(owner) {
                    self.bundle_missing(owner, d, "its bundles node has no item for it", out);
                }
            }
        } else if let Some(id) = node.strip_prefix(legacy::NODE_BUNDLE_PREFIX)
            && version == Version::Legacy
        {
            self.dir.answered(owner, node);
            let id = device_id("bundle node", Some(id))?;
            // The node holds one bundle; if a server keeps several items, the last counts.
            if let Some(item) = pep.each().last() {
                let bundle = self.parse_bundle(item)?;
                self.missing.remove(&(owner.clone(), id));
                self.bundles.insert((owner.clone(), id), bundle);
            } else if pep.complete && self.waiting_for_bundle(owner).contains(&id) {
                self.bundle_missing(owner, id, "its bundle node is empty", out);
            }
        } else {
            return Ok(());
        }
        directory::flush(self, cx, out);
        Ok(())
    }

    // ---- trust ----------------------------------------------------------------------------

    /// Records the IdentityKey seen for a device; returns its trust, raising an alert when
    /// the key changed (trust policies: module docs).
    fn observe_identity(&mut self, owner: &BareJid, device: u32, ik: [u8; 32], out: &mut Output) -> TrustState {
        self.trust.observe(owner, device, Known::new((), device.to_string(), Self::fingerprint(&ik)), out)
    }

    // ---- sending --------------------------------------------------------------------------

    /// `owner`'s listed devices (ours but this one) we neither have a session with nor a
    /// bundle of, and whose bundle is to be read: never read yet, or a read is due.
    fn waiting_for_bundle(&self, owner: &BareJid) -> Vec<u32> {
        let own = *owner == self.own();
        let Some(ids) = self.devices.get(owner) else { return Vec::new() };
        ids.iter()
            .copied()
            .filter(|d| !(own && *d == self.device))
            .filter(|d| {
                let key = (owner.clone(), *d);
                !self.sessions.contains_key(&key)
                    && !self.bundles.contains_key(&key)
                    && self.missing.get(&key).is_none_or(|m| m.due)
            })
            .collect()
    }

    /// A read came back without the bundle of `owner`'s listed `device` (`why`): the alert
    /// `no-bundle` names it, and messages go to the other devices without it. Later messages
    /// read it again, up to [`MAX_BUNDLE_READS`] reads.
    fn bundle_missing(&mut self, owner: &BareJid, device: u32, why: &str, out: &mut Output) {
        let missing = self.missing.entry((owner.clone(), device)).or_default();
        missing.reads = missing.reads.saturating_add(1);
        missing.due = false;
        let reads = missing.reads;
        let then = if reads < MAX_BUNDLE_READS { "read again with the next message" } else { "not read again" };
        out.events.push(Event::Alert {
            reason: "no-bundle",
            detail: format!(
                "device {device} of {owner} is on its device list but has no bundle ({why}): not \
                 encrypted to; read {reads} of {MAX_BUNDLE_READS}, {then}"
            ),
        });
    }

    /// The devices a message to `to` goes to: all of `to`'s and our own others, minus the
    /// untrusted ones. `None` (after asking for it) while `to`'s device list is unknown.
    fn recipients(&mut self, to: &BareJid, out: &mut Output) -> Option<Vec<(BareJid, u32)>> {
        let Some(theirs) = self.devices.get(to).cloned() else {
            self.dir.fetch(to, self.version.devices_node(), out);
            return None;
        };
        let own = self.own();
        let mine = self.devices.get(&own).cloned().unwrap_or_default();
        let mut all: Vec<(BareJid, u32)> = theirs.into_iter().map(|d| (to.clone(), d)).collect();
        if *to != own {
            all.extend(mine.into_iter().filter(|d| *d != self.device).map(|d| (own.clone(), d)));
        } else {
            all.retain(|(_, d)| *d != self.device);
        }
        all.retain(|(owner, d)| !self.trust.distrusts(owner, d));
        Some(all)
    }

    /// §sce: the OMEMO SCE profile — rpad always, time, to and from. XEP-0420 §sending: the
    /// message's other parts (`parts`) go into `<content/>` beside the body.
    fn envelope(&self, cx: &mut Cx<'_>, to: &BareJid, text: &str, parts: &[Element]) -> Element {
        let pad_len = (cx.rng.next_u32() % 200) as usize;
        let pad: String =
            random_bytes(cx.rng).iter().cycle().take(pad_len).map(|b| char::from(b'a' + b % 26)).collect();
        let mut content = el("content", NS_SCE).child(text_el("body", NS_CLIENT, text));
        for p in parts {
            content.append_child(p.clone());
        }
        el("envelope", NS_SCE)
            .child(content)
            .child(text_el("rpad", NS_SCE, pad))
            .child(el("time", NS_SCE).with("stamp", format_stamp(cx.now)))
            .child(el("to", NS_SCE).with("jid", to.to_string()))
            .child(el("from", NS_SCE).with("jid", self.own().to_string()))
    }

    // ---- receiving ------------------------------------------------------------------------

    /// §usecases-receiving up to the payload: the key material `stanza` carries for this
    /// device, read through the session with the sender's device (a key exchange builds the
    /// session, or replaces it). `None` when the stanza has no key for this device (with the
    /// `not-for-this-device` alert when it withheld a payload from it).
    fn open_key(
        &mut self,
        cx: &mut Cx<'_>,
        stanza: &Element,
        out: &mut Output,
    ) -> Result<Option<Vec<u8>>, E2eError> {
        let (version, ns) = (self.version, self.version.ns());
        let encrypted = stanza.get_child("encrypted", ns).ok_or(E2eError::Missing { what: "encrypted" })?;
        let from: Jid = sender(stanza)?;
        let sender = from.to_bare();
        let header = encrypted.get_child("header", ns).ok_or(E2eError::Missing { what: "header" })?;
        let sid = device_id("sid", header.attr("sid"))?;
        let own = self.own().to_string();
        let rid = self.device.to_string();
        let is_mine = |k: &&Element| k.is("key", ns) && k.attr("rid") == Some(rid.as_str());
        let my_key = match version {
            Version::Omemo2 => header
                .children()
                .filter(|k| k.is("keys", ns) && k.attr("jid") == Some(own.as_str()))
                .flat_map(|k| k.children())
                .find(is_mine),
            // 0.3 names devices by id alone.
            Version::Legacy => header.children().find(is_mine),
        };
        let Some(my_key) = my_key else {
            if encrypted.get_child("payload", ns).is_none() {
                return Ok(None); // an empty message for another device: nothing was withheld
            }
            // §usecases-receiving: "a warning message SHOULD be displayed instead".
            out.events.push(Event::Alert {
                reason: "not-for-this-device",
                detail: format!("an OMEMO message from {from} carries no key for device {}", self.device),
            });
            return Ok(None);
        };
        let bytes = unb64("key", &my_key.text())?;
        let session_key = (sender.clone(), sid);
        let flag = if version == Version::Legacy { "prekey" } else { "kex" };
        let kex = matches!(my_key.attr(flag), Some("true") | Some("1"));
        let key_material = if kex {
            let (kex_header, message) = match version {
                Version::Omemo2 => {
                    let exchange: OmemoKeyExchange = decode("OMEMOKeyExchange", &bytes)?;
                    let header = KeyExchangeHeader {
                        pk_id: exchange.pk_id,
                        spk_id: exchange.spk_id,
                        ik: key32("ik", &exchange.ik)?,
                        ek: key32("ek", &exchange.ek)?,
                    };
                    (header, exchange.message.encode_to_vec())
                }
                Version::Legacy => legacy::decode_key_exchange(&bytes)?,
            };
            let (ik, ek) = (kex_header.ik, kex_header.ek);
            // A key exchange is repeated until answered: one whose ephemeral key started a
            // state we hold (current or previous) is read by that state, not built again.
            let started = self.sessions.get(&session_key).and_then(|r| r.started_by(&ek));
            if let (Some(at), Some(record)) = (started, self.sessions.get_mut(&session_key)) {
                record.decrypt_at(at, &message, cx.rng)?
            } else {
                // §usecases-receiving: a new session. Work on copies and keep them only if the
                // message authenticates; it replaces the current session, which is kept as a
                // previous state (module `session`: a simultaneous start).
                let mut keys = self.keys.clone();
                let (agreement, spk) = match version {
                    Version::Omemo2 => x3dh::accept(&mut keys, &kex_header)?,
                    Version::Legacy => x3dh::accept_legacy(&mut keys, &kex_header)?,
                };
                let mut ratchet =
                    Ratchet::init_bob(version.profile(), &agreement.sk, agreement.ad, spk.secret());
                let material = ratchet.decrypt(&message, cx.rng)?;
                self.keys = keys;
                let session = Session { ratchet, pending_kex: None, their_ek: Some(ek) };
                match self.sessions.get_mut(&session_key) {
                    Some(record) => record.replace(session),
                    None => {
                        self.sessions.insert(session_key.clone(), SessionRecord::new(session));
                    }
                }
                self.observe_identity(&sender, sid, ik, out);
                // The used PreKey is replaced and the bundle republished; the key exchange is
                // answered with an empty OMEMO message so the initiator stops repeating it.
                self.keys.refill(cx.rng);
                if !self.quirks.unpublished_bundle {
                    out.actions.push(self.publish_bundle());
                }
                let reply_to = sender.clone();
                if let Some(mut reply) = self.empty_to(cx, &reply_to, sid) {
                    reply.set("to", from.to_string());
                    out.actions.push(Action::Send(reply));
                }
                material
            }
        } else {
            // §usecases-receiving: decrypted with the session with the sender's device — the
            // current state, or a previous one, which then becomes current (module `session`).
            let record = self.sessions.get_mut(&session_key).ok_or(E2eError::Rejected {
                reason: "no-session",
                detail: format!("no session with device {sid} of {sender}"),
            })?;
            record.decrypt(&bytes, cx.rng)?
        };
        Ok(Some(key_material))
    }

    /// §usecases-receiving: an `<encrypted/>` message.
    fn decrypt(&mut self, cx: &mut Cx<'_>, stanza: &Element, out: &mut Output) -> Result<(), E2eError> {
        let Some(key_material) = self.open_key(cx, stanza, out)? else { return Ok(()) };
        let (version, ns) = (self.version, self.version.ns());
        // `open_key` read these already: they are there and well formed.
        let encrypted = stanza.get_child("encrypted", ns).ok_or(E2eError::Missing { what: "encrypted" })?;
        let from: Jid = sender(stanza)?;
        let sender = from.to_bare();
        let header = encrypted.get_child("header", ns).ok_or(E2eError::Missing { what: "header" })?;
        let sid = device_id("sid", header.attr("sid"))?;
        let Some(payload_el) = encrypted.get_child("payload", ns) else {
            return Ok(()); // an empty OMEMO message: session management only
        };
        let payload = unb64("payload", &payload_el.text())?;
        let mut parts = Vec::new();
        let body = match version {
            Version::Omemo2 => {
                let plaintext = payload::open(&key_material, &payload)?;
                let text = String::from_utf8(plaintext)
                    .map_err(|e| E2eError::Malformed { what: "envelope", detail: e.to_string() })?;
                let envelope: Element = text.parse().map_err(|e: minidom::Error| E2eError::Malformed {
                    what: "envelope",
                    detail: e.to_string(),
                })?;
                let (body, found) = self.check_envelope(cx, stanza, &sender, &envelope)?;
                parts = found;
                body
            }
            // 0.3 has no envelope: the plaintext is the body, and nothing binds it to a sender,
            // a recipient or a time beyond the ratchet session it came through.
            Version::Legacy => {
                let iv = header.get_child("iv", ns).ok_or(E2eError::Missing { what: "iv" })?;
                let plaintext = legacy::open(&key_material, &unb64("iv", &iv.text())?, &payload)?;
                String::from_utf8(plaintext)
                    .map_err(|e| E2eError::Malformed { what: "payload", detail: e.to_string() })?
            }
        };
        let trust = self.trust.trust_of(&sender, &sid);
        if trust == Trust::Untrusted {
            out.events.push(Event::Alert {
                reason: "untrusted-device",
                detail: format!("device {sid} of {sender} is not trusted"),
            });
        }
        out.events.push(Event::Plaintext { from: from.clone(), body, trust, delay: None, carbon: None });
        if !parts.is_empty() {
            out.events.push(Event::Parts { from, stanza: "message", parts });
        }
        Ok(())
    }

    /// An empty OMEMO message to one device of `owner` (a session must exist). OMEMO 2
    /// ratchets 32 zero bytes; 0.3 a fresh 16-byte key and sends an IV (oldmemo's empty
    /// message, libsignal's `KeyTransportMessage`).
    fn empty_to(&mut self, cx: &mut Cx<'_>, owner: &BareJid, device: u32) -> Option<Element> {
        let version = self.version;
        let (material, iv) = match version {
            Version::Omemo2 => (vec![0u8; 32], None),
            Version::Legacy => {
                let (key, iv) = legacy::empty_key_as(self.form(), cx.rng);
                (key.to_vec(), Some(iv))
            }
        };
        let session = self.sessions.get_mut(&(owner.clone(), device))?.current_mut();
        let message = session.ratchet.encrypt(&material).ok()?;
        let key = key_element(version, device, message, session.pending_kex.as_ref()).ok()?;
        let header = header(version, self.device, vec![(owner.clone(), key)], iv);
        // Session management for one device only: no carbon copies (XEP-0280 §6 `<private/>`),
        // no copies elsewhere (XEP-0334), but kept for an offline device.
        Some(
            el("message", NS_CLIENT)
                .with("type", "chat")
                .child(el("encrypted", version.ns()).child(header))
                .child(el("private", NS_CARBONS))
                .child(el("no-copy", NS_HINTS))
                .child(el("store", NS_HINTS)),
        )
    }

    /// XEP-0420 §affix checks for the OMEMO profile; returns the body and the other parts of
    /// the content (§receiving).
    fn check_envelope(
        &self,
        cx: &Cx<'_>,
        stanza: &Element,
        sender: &BareJid,
        envelope: &Element,
    ) -> Result<(String, Vec<Element>), E2eError> {
        if !envelope.is("envelope", NS_SCE) {
            return Err(E2eError::Malformed { what: "envelope", detail: "not an SCE envelope".into() });
        }
        if envelope.get_child("rpad", NS_SCE).is_none() {
            return Err(E2eError::Missing { what: "rpad" });
        }
        let affix =
            |name: &str| envelope.get_child(name, NS_SCE).and_then(|a| a.attr("jid")).map(str::to_owned);
        if let Some(f) = affix("from")
            && f != sender.to_string()
        {
            return Err(E2eError::Rejected {
                reason: "sce-from-mismatch",
                detail: format!("envelope from {f}, stanza from {sender}"),
            });
        }
        if let Some(t) = affix("to") {
            let stanza_to =
                stanza.attr("to").and_then(|t| t.parse::<Jid>().ok()).map(|j| j.to_bare().to_string());
            if stanza_to.as_deref().is_some_and(|st| st != t) {
                return Err(E2eError::Rejected {
                    reason: "sce-to-mismatch",
                    detail: format!("envelope to {t}, stanza to {stanza_to:?}"),
                });
            }
        }
        if let Some(stamp) = envelope.get_child("time", NS_SCE).and_then(|t| t.attr("stamp")) {
            let sent =
                parse_stamp(stamp).ok_or(E2eError::Malformed { what: "time", detail: stamp.to_owned() })?;
            if sent.as_secs() > cx.now.as_secs() + MAX_CLOCK_SKEW_SECS {
                return Err(E2eError::Rejected {
                    reason: "sce-time-mismatch",
                    detail: format!("sent at {stamp}, in the future"),
                });
            }
        }
        let content = envelope.get_child("content", NS_SCE).ok_or(E2eError::Missing { what: "content" })?;
        let body = content.get_child("body", NS_CLIENT).map(Element::text).unwrap_or_default();
        Ok((body, crate::content::decrypted_parts(content)))
    }
}

/// Appends `more` to `out`.
fn merge(out: &mut Output, more: Output) {
    out.actions.extend(more.actions);
    out.events.extend(more.events);
}

/// What the 0.3 half of an `also-legacy` device reports, but its `not-sent` alerts: a peer
/// without a 0.3 device is skipped silently (the OMEMO 2 stanza answers for the message).
fn from_half(mut out: Output) -> Output {
    out.events.retain(|e| !matches!(e, Event::Alert { reason, .. } if *reason == crate::reason::NOT_SENT.code));
    out
}

/// Whether a stanza is OMEMO 0.3's: its `<encrypted/>`, or a node of its (an item, a
/// notification, a fetch's answer) named anywhere in it.
fn names_legacy(e: &Element) -> bool {
    e.is("encrypted", legacy::NS)
        || e.attr("node").is_some_and(|n| n.starts_with(legacy::NS))
        || e.children().any(names_legacy)
}

impl Omemo {
    /// Quirk `also-legacy`: the 0.3 half sends `body` to `to` too, in a stanza of its own
    /// ([`from_half`]).
    fn companion_sends(&mut self, cx: &mut Cx<'_>, to: &BareJid, body: &str, out: &mut Output) {
        let Some(half) = self.companion.as_mut() else { return };
        if let Ok(more) = half.send(cx, to, body) {
            merge(out, from_half(more));
        }
    }

    /// A new message to `to`: each device of `to` (and of our own account) whose bundle a read
    /// did not have is due one more read, up to [`MAX_BUNDLE_READS`].
    fn bundles_due(&mut self, to: &BareJid) {
        let own = self.own();
        for ((owner, _), missing) in self.missing.iter_mut() {
            if (owner == to || *owner == own) && missing.reads < MAX_BUNDLE_READS {
                missing.due = true;
            }
        }
    }

    /// Builds the `<message/>` carrying `body` (and, OMEMO 2, the other `parts` in the SCE
    /// envelope) to `to`, or `None` while key material is still being fetched.
    fn seal_parts(&mut self, cx: &mut Cx<'_>, to: &BareJid, body: &str, parts: &[Element], out: &mut Output) -> Sealed {
        let Some(devices) = self.recipients(to, out) else { return Ok(None) };
        // §usecases-building: the bundles of devices without a session are read first (a
        // device whose bundle was found missing only when a read is due, [`MAX_BUNDLE_READS`]).
        let mut waiting = false;
        for (owner, d) in &devices {
            if self.waiting_for_bundle(owner).contains(d) {
                self.dir.fetch(owner, &self.version.bundle_node(*d), out);
                waiting = true;
            }
        }
        if waiting {
            return Ok(None);
        }
        if devices.is_empty() {
            return Err(E2eError::Policy { detail: format!("{to} has no trusted OMEMO device") }.into());
        }
        // §protocol-message_encryption: the content is encrypted once, its key for each device
        // (OMEMO 2: the SCE envelope; 0.3: the body text, AES-128-GCM).
        let (key_material, iv, ciphertext) = match self.version {
            Version::Omemo2 => {
                let envelope = self.envelope(cx, to, body, parts);
                let (k, c) = payload::seal(String::from(&envelope).as_bytes(), cx.rng);
                (k.to_vec(), None, c)
            }
            Version::Legacy => {
                let (k, iv, c) = legacy::seal_as(self.form(), body.as_bytes(), cx.rng);
                (k, Some(iv), c)
            }
        };
        let mut keys = Vec::new();
        for (owner, d) in devices {
            let key = (owner.clone(), d);
            if !self.sessions.contains_key(&key) {
                // A device without a bundle (alert `no-bundle` when its read came back) is left out.
                let Some(bundle) = self.bundles.get(&key).cloned() else { continue };
                if self.observe_identity(&owner, d, bundle.ik, out) == TrustState::Untrusted {
                    continue;
                }
                let (agreement, kex) = match self.version {
                    Version::Omemo2 => x3dh::initiate(&self.keys.identity, &bundle, cx.rng)?,
                    Version::Legacy => x3dh::initiate_legacy(&self.keys.identity, &bundle, cx.rng)?,
                };
                let ratchet = Ratchet::init_alice(
                    self.version.profile(),
                    &agreement.sk,
                    agreement.ad,
                    &bundle.spk,
                    cx.rng,
                )?;
                let session = Session { ratchet, pending_kex: Some(kex), their_ek: None };
                self.sessions.insert(key.clone(), SessionRecord::new(session));
                // Quirk `key-transport-first`: the new session opens with an empty message.
                if self.quirks.key_transport_first
                    && let Some(mut opening) = self.empty_to(cx, &owner, d)
                {
                    opening.set("to", owner.to_string());
                    out.actions.push(Action::Send(opening));
                }
            }
            let Some(session) = self.sessions.get_mut(&key).map(SessionRecord::current_mut) else { continue };
            let message = session.ratchet.encrypt(&key_material)?;
            keys.push((owner, key_element(self.version, d, message, session.pending_kex.as_ref())?));
        }
        if !keys.iter().any(|(owner, _)| owner == to) {
            return Err(E2eError::Policy { detail: format!("{to} has no trusted OMEMO device") }.into());
        }
        let ns = self.version.ns();
        let encrypted = el("encrypted", ns)
            .child(header(self.version, self.device, keys, iv))
            .child(text_el("payload", ns, b64(&ciphertext)));
        let mut stanza =
            el("message", NS_CLIENT).with("to", to.to_string()).with("type", "chat").child(encrypted);
        if self.version == Version::Legacy && !self.quirks.no_fallback_body {
            // What clients without OMEMO show (and, unlike the XEP-0380 hint, always shown).
            stanza.append_child(text_el("body", NS_CLIENT, LEGACY_FALLBACK));
        }
        // XEP-0380: tell clients without OMEMO what this is; XEP-0334: keep it in archives.
        Ok(Some(
            stanza
                .child(el("encryption", NS_EME).with("namespace", ns).with("name", "OMEMO"))
                .child(el("store", NS_HINTS)),
        ))
    }
}

impl Keyed for Omemo {
    fn directory(&mut self) -> &mut Directory {
        &mut self.dir
    }

    /// PEP: iq results of our fetches and event notifications (a `from` that does not parse
    /// is read as our own account).
    fn items(&mut self, cx: &mut Cx<'_>, pep: &Pep<'_>, out: &mut Output) -> Result<(), E2eError> {
        let own = self.own();
        let owner = pep.owner(&own).unwrap_or(own);
        self.pep_items(cx, &owner, pep, out)
    }

    fn message(&mut self, cx: &mut Cx<'_>, stanza: &Element, out: &mut Output) -> Result<(), E2eError> {
        if stanza.name() != "message" {
            return Ok(());
        }
        if stanza.has_child("encrypted", self.version.ns()) {
            return self.decrypt(cx, stanza, out);
        }
        // The other OMEMO (a peer in the 0.3-to-2 migration, quirk `also-legacy`): not for this
        // device to read, and its fallback `<body/>` is not the sender's text — a notice, not a
        // message in clear.
        let other = match self.version {
            Version::Omemo2 => legacy::NS,
            Version::Legacy => NS,
        };
        if stanza.has_child("encrypted", other) {
            let from = stanza.attr("from").unwrap_or("?");
            out.events.push(Event::Alert {
                reason: "other-omemo-version",
                detail: format!("{from} sent a message encrypted with {other}, which this device does not speak"),
            });
            return Ok(());
        }
        if let Some(body) = stanza.get_child("body", NS_CLIENT) {
            // A plaintext body where OMEMO was expected: shown, but flagged (a downgrade).
            let from = stanza.attr("from").and_then(|f| f.parse::<Jid>().ok()).unwrap_or(Jid::from(self.own()));
            out.unencrypted(from, body, "without OMEMO");
        }
        Ok(())
    }

    /// Builds the `<message/>` carrying `body` to `to`, or `None` while key material is still
    /// being fetched. (Empty OMEMO messages are built by `Omemo::empty_to`.)
    fn seal(&mut self, cx: &mut Cx<'_>, to: &BareJid, body: &str, out: &mut Output) -> Sealed {
        self.seal_parts(cx, to, body, &[], out)
    }

    /// OMEMO 2 seals the message's other parts in the SCE envelope with its body (XEP-0420
    /// §sending); OMEMO 0.3 never gets here (its `send_message` keeps the default).
    fn seal_content(&mut self, cx: &mut Cx<'_>, to: &BareJid, content: &Content, out: &mut Output) -> Sealed {
        self.seal_parts(cx, to, &content.body, &content.parts, out)
    }

    fn failed(&mut self, cx: &mut Cx<'_>, failure: Failure<'_>, out: &mut Output) {
        let Failure { owner, node, condition } = failure;
        let version = self.version;
        if node == version.devices_node() {
            // No device list: the account has no OMEMO device (yet). Ours gets announced.
            if *owner == self.own() {
                out.actions.push(self.publish_devices(&BTreeSet::from([self.device])));
            }
            self.devices.entry(owner.clone()).or_default();
        } else if version == Version::Omemo2 && node == NODE_BUNDLES {
            // No bundles node: none of the listed devices waiting for a bundle has one.
            for d in self.waiting_for_bundle(owner) {
                self.bundle_missing(owner, d, &format!("its bundles node could not be read: {condition}"), out);
            }
        } else if version == Version::Legacy
            && let Some(Ok(device)) =
                node.strip_prefix(legacy::NODE_BUNDLE_PREFIX).map(|id| device_id("bundle node", Some(id)))
        {
            // 0.3: this one device's bundle node.
            if self.waiting_for_bundle(owner).contains(&device) {
                self.bundle_missing(owner, device, &format!("its bundle node could not be read: {condition}"), out);
            }
        } else {
            return;
        }
        directory::flush(self, cx, out);
    }
}

impl Engine for Omemo {
    fn protocol(&self) -> Protocol {
        match self.version {
            Version::Omemo2 => Protocol::of(&super::OMEMO),
            Version::Legacy => Protocol::of(&super::OMEMO_LEGACY),
        }
    }

    /// A new message: each device of `to` (and of our own account) whose bundle a read did
    /// not have is due one more read, up to [`MAX_BUNDLE_READS`]; then the message is queued
    /// in the key directory as every keyed engine's is.
    fn send(&mut self, cx: &mut Cx<'_>, to: &BareJid, body: &str) -> Result<Output, E2eError> {
        self.bundles_due(to);
        let mut out = directory::send(self, cx, to, body);
        self.companion_sends(cx, to, body, &mut out);
        Ok(out)
    }

    /// OMEMO 2 (XEP-0384 §sce, XEP-0420 §sending): the message's other parts travel in the SCE
    /// envelope's `<content/>` with the body. OMEMO 0.3 encrypts the body text alone
    /// (XEP-0384 v0.3 §glossary-general: a MessageElement's payload "corresponds to a
    /// <message>'s <body>"): the other parts go in clear, the default.
    fn send_message(&mut self, cx: &mut Cx<'_>, to: &BareJid, content: &Content) -> Result<Output, E2eError> {
        if self.version == Version::Legacy {
            let mut out = self.send(cx, to, &content.body)?;
            if !content.parts.is_empty() {
                out.actions.push(Action::Send(crate::content::clear_message(to, &content.parts)));
            }
            return Ok(out);
        }
        self.bundles_due(to);
        let mut out = directory::send_content(self, cx, to, content);
        self.companion_sends(cx, to, &content.body, &mut out);
        Ok(out)
    }

    // `cx` goes to the 0.3 half of an `also-legacy` device: another engine, not a recursion.
    #[allow(clippy::only_used_in_recursion)]
    fn publish(&mut self, cx: &mut Cx<'_>) -> Result<Output, E2eError> {
        let mut out = Output::default();
        // Quirk `unpublished-bundle`: the device list names this device, no bundle follows.
        if !self.quirks.unpublished_bundle {
            out.actions.push(self.publish_bundle());
        }
        // Our own device list: re-announced when this device is missing from it.
        self.dir.refetch(&self.own(), self.version.devices_node(), &mut out);
        if let Some(half) = self.companion.as_mut() {
            merge(&mut out, half.publish(cx)?);
        }
        Ok(out)
    }

    /// With the quirk `also-legacy`, stanzas of OMEMO 0.3 (its messages, its nodes' items and
    /// notifications) go to the 0.3 half; the rest, as always, to the key directory.
    fn receive(&mut self, cx: &mut Cx<'_>, stanza: &Element) -> Result<Output, E2eError> {
        if let Some(half) = self.companion.as_mut()
            && !stanza.has_child("encrypted", NS)
            && names_legacy(stanza)
        {
            return half.receive(cx, stanza).map(from_half);
        }
        directory::receive(self, cx, stanza)
    }

    fn fetch_failed(
        &mut self,
        cx: &mut Cx<'_>,
        owner: &BareJid,
        node: &str,
        condition: &str,
    ) -> Result<Output, E2eError> {
        if let Some(half) = self.companion.as_mut()
            && node.starts_with(legacy::NS)
        {
            return half.fetch_failed(cx, owner, node, condition).map(from_half);
        }
        Ok(directory::failed(self, cx, Failure { owner, node, condition }))
    }

    // `cx` goes to the 0.3 half of an `also-legacy` device: another engine, not a recursion.
    #[allow(clippy::only_used_in_recursion)]
    fn verify(&mut self, cx: &mut Cx<'_>, peer: &BareJid, oob: &OutOfBand) -> Result<Output, E2eError> {
        // Fingerprint comparison: every IdentityKey we hold for the peer must be one its devices
        // show out of band.
        let mut out = self.trust.verify(peer, |fp| oob.peer_says.iter().any(|s| s == fp), |_| true);
        if let Some(half) = self.companion.as_mut() {
            merge(&mut out, half.verify(cx, peer, oob)?);
        }
        Ok(out)
    }

    fn forge(&mut self, cx: &mut Cx<'_>, from: &Jid, body: &str) -> Result<Option<Element>, E2eError> {
        let sender = from.to_bare();
        let me = self.own();
        let Some((sid, session)) =
            self.sessions.iter().find(|((owner, _), _)| *owner == sender).map(|((_, sid), s)| (*sid, s.current()))
        else {
            return Ok(None);
        };
        let version = self.version;
        let (key_material, iv, ciphertext) = match version {
            Version::Omemo2 => {
                // The envelope the sender would have written (SCE affixes from the sender, to us).
                let envelope = el("envelope", NS_SCE)
                    .child(el("content", NS_SCE).child(text_el("body", NS_CLIENT, body)))
                    .child(text_el("rpad", NS_SCE, "forged"))
                    .child(el("time", NS_SCE).with("stamp", format_stamp(cx.now)))
                    .child(el("to", NS_SCE).with("jid", me.to_string()))
                    .child(el("from", NS_SCE).with("jid", sender.to_string()));
                let (k, c) = payload::seal(String::from(&envelope).as_bytes(), cx.rng);
                (k.to_vec(), None, c)
            }
            Version::Legacy => {
                let (k, iv, c) = legacy::seal(body.as_bytes(), cx.rng);
                (k.to_vec(), Some(iv.to_vec()), c)
            }
        };
        let Some(message) = session.ratchet.forge_incoming(&key_material) else { return Ok(None) };
        let key = key_element(version, self.device, message, None)?;
        let ns = version.ns();
        let encrypted = el("encrypted", ns)
            .child(header(version, sid, vec![(me.clone(), key)], iv))
            .child(text_el("payload", ns, b64(&ciphertext)));
        Ok(Some(
            el("message", NS_CLIENT)
                .with("from", from.to_string())
                .with("to", me.to_string())
                .with("type", "chat")
                .child(encrypted),
        ))
    }

    /// The malicious recipient (Radically Open Security, "OMEMO: Cryptographic Analysis
    /// Report", 2016, §2.2.3 "Malicious device"): this device reads its key of `stanza` and,
    /// under the payload key it learned, puts `body` in the payload for the other recipients,
    /// keeping their `<key/>` elements and removing its own ("Eve needs to strip of her own
    /// <key/> element from the list of keys in every message in order to remain undetected").
    ///
    /// - OMEMO 2 (§protocol-message_encryption): the SCE envelope as the sender wrote it
    ///   (affixes, padding), `body` in its `<content/>`, sealed under the same key. Each other
    ///   recipient's `<key/>` carries "the key and the HMAC" of the sender's ciphertext
    ///   (§encrypt), out of this device's reach, so the new ciphertext fails it (`bad-mac`):
    ///   doing better would take a second preimage of HMAC-SHA-256 truncated to 16 bytes.
    /// - 0.3 (the payload is the body text, AES-128-GCM): with a bare 16-byte key (the tag
    ///   appended to the payload, as clients sent it when the audit was written) `body` is
    ///   encrypted and tagged anew; with `key || tag` in the `<key/>` (XEP-0384 0.3.0, "the 16
    ///   bytes key and the GCM authentication tag ... are concatenated"), a ciphertext that meets
    ///   that tag is solved for ([`gcm::meet_tag`]): `body`, a space and a 40-character tail.
    fn reencrypt(&mut self, cx: &mut Cx<'_>, stanza: &Element, body: &str) -> Result<Option<Element>, E2eError> {
        let mut heard = Output::default();
        let key_material =
            self.open_key(cx, stanza, &mut heard)?.ok_or(E2eError::Missing { what: "key for this device" })?;
        let (version, ns) = (self.version, self.version.ns());
        let mut altered = stanza.clone();
        let encrypted =
            altered.get_child_mut("encrypted", ns).ok_or(E2eError::Missing { what: "encrypted" })?;
        let payload_text =
            encrypted.get_child("payload", ns).ok_or(E2eError::Missing { what: "payload" })?.text();
        let ciphertext = unb64("payload", &payload_text)?;
        let header = encrypted.get_child_mut("header", ns).ok_or(E2eError::Missing { what: "header" })?;
        let replaced = match version {
            Version::Omemo2 => {
                let text = String::from_utf8(payload::open(&key_material, &ciphertext)?)
                    .map_err(|e| E2eError::Malformed { what: "envelope", detail: e.to_string() })?;
                let mut envelope: Element = text
                    .parse()
                    .map_err(|e: minidom::Error| E2eError::Malformed { what: "envelope", detail: e.to_string() })?;
                let content =
                    envelope.get_child_mut("content", NS_SCE).ok_or(E2eError::Missing { what: "content" })?;
                let _ = content.take_nodes();
                content.append_child(text_el("body", NS_CLIENT, body));
                let key: [u8; 32] = key_material
                    .get(..32)
                    .and_then(|k| k.try_into().ok())
                    .ok_or(E2eError::Malformed { what: "payload key", detail: "shorter than 32 bytes".into() })?;
                payload::seal_with_key(&key, String::from(&envelope).as_bytes()).1
            }
            Version::Legacy => {
                let iv = unb64("iv", &header.get_child("iv", ns).ok_or(E2eError::Missing { what: "iv" })?.text())?;
                let key: Option<[u8; 16]> = key_material.get(..16).and_then(|k| k.try_into().ok());
                let tag: Option<[u8; 16]> = key_material.get(16..).and_then(|t| t.try_into().ok());
                match (key, tag, key_material.len()) {
                    (Some(key), Some(tag), legacy::KEY_AND_TAG) => {
                        gcm::meet_tag(&key, &iv, &tag, body)
                            .ok_or(E2eError::Policy { detail: "no ciphertext meets the tag in this key".into() })?
                            .1
                    }
                    (Some(key), None, 16) => legacy::seal_tag_appended(&key, &iv, body.as_bytes())
                        .ok_or(E2eError::Malformed { what: "iv", detail: format!("{} bytes", iv.len()) })?,
                    (.., n) => {
                        return Err(E2eError::Malformed { what: "payload key", detail: format!("{n} bytes") });
                    }
                }
            }
        };
        // This device's own key goes (and an OMEMO 2 `<keys/>` it leaves empty).
        let (own, rid) = (self.own().to_string(), self.device.to_string());
        let is_mine = |k: &Element| k.is("key", ns) && k.attr("rid") == Some(rid.as_str());
        for node in header.take_nodes() {
            match node {
                minidom::Node::Element(k) if is_mine(&k) => {}
                minidom::Node::Element(mut keys) if keys.is("keys", ns) && keys.attr("jid") == Some(own.as_str()) => {
                    let left: Vec<Element> = keys.children().filter(|k| !is_mine(k)).cloned().collect();
                    if !left.is_empty() {
                        let _ = keys.take_nodes();
                        for k in left {
                            keys.append_child(k);
                        }
                        header.append_child(keys);
                    }
                }
                minidom::Node::Element(other) => {
                    header.append_child(other);
                }
                minidom::Node::Text(t) => header.append_text(t),
            }
        }
        let payload_el = encrypted.get_child_mut("payload", ns).ok_or(E2eError::Missing { what: "payload" })?;
        let _ = payload_el.take_nodes();
        payload_el.append_text(b64(&replaced));
        Ok(Some(altered))
    }

    fn keyed(&mut self) -> Option<&mut dyn Keyed> {
        Some(self)
    }

    fn out_of_band(&self) -> OutOfBand {
        OutOfBand { peer_says: vec![Self::fingerprint(&self.own_ik())] }
    }

    fn identity_marks(&self) -> crate::IdentityMarks {
        // The fingerprint is the IdentityKey itself (§security: "the fingerprint of the
        // IdentityKey"), as the bundle publishes it.
        vec![("identity key", self.own_ik().to_vec())]
    }

    fn device_id(&self) -> Option<String> {
        Some(self.device.to_string())
    }

    fn steal(&self, what: Theft) -> Box<dyn Engine> {
        kit::stolen(self.clone(), what, |copy| {
            copy.sessions.clear();
            copy.dir.wipe();
        })
    }
}

