//! Off-the-Record Messaging version 3 (`otr-protocol-v3.html`), carried in message bodies as
//! XEP-0364 describes: to a full JID once the correspondent's resource is known, with
//! `<no-copy/>`, `<no-permanent-store/>` (XEP-0334), `<private/>` (XEP-0280) and the XEP-0380
//! `urn:xmpp:otr:0` hint.
//!
//! - [`wire`]: data types, AKE and Data messages, fragments, Query / whitespace tag / Error;
//! - [`ake`]: the AKE and the authentication state machine;
//! - [`session`]: key management, Data Messages, revealed MAC keys;
//! - [`smp`]: the Socialist Millionaires' Protocol (the verification ceremony);
//! - [`crypto`]: the 1536-bit group, AES-CTR, hashes, DSA.
//!
//! Only version 3 is spoken (no v1/v2: ALLOW_V3 alone). One conversation per correspondent
//! instance tag; user messages go to the instance that most recently became (or spoke)
//! encrypted, as libotr's `OTRL_INSTAG_BEST` does.

pub mod ake;
pub mod crypto;
mod seam;
pub mod session;
pub mod smp;
pub mod wire;

use std::collections::BTreeMap;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use rand_core::RngCore;

use self::ake::AuthState;
use self::crypto::PrivateKey;
use self::session::Session;
use self::smp::SmpState;
use self::wire::{Header, Message, Reassembly, Text};
use crate::kit;
use crate::kit::codec::hex;
use crate::kit::crypto::{equal, hmac_sha1};
use crate::kit::trust;
use crate::xml::{ElementExt, NS_CARBONS, NS_CLIENT, NS_EME, NS_HINTS, el, sender, text_el};
use crate::{Cx, E2eError, Engine, Event, OutOfBand, Output, Protocol, Theft, Trust, VerificationResult};

/// The XEP-0380 namespace for OTR.
pub const NS_OTR: &str = "urn:xmpp:otr:0";
/// TLV type 1: Disconnected.
const TLV_DISCONNECTED: u16 = 1;

/// §"Policies", as clients offer them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum OtrPolicy {
    /// ALLOW_V3, REQUIRE_ENCRYPTION, WHITESPACE_START_AKE, ERROR_START_AKE: nothing leaves
    /// unencrypted; a message typed before the AKE is stored and a Query sent.
    #[default]
    Require,
    /// ALLOW_V3, SEND_WHITESPACE_TAG, WHITESPACE_START_AKE, ERROR_START_AKE (libotr's
    /// default): plaintext with a whitespace tag until a peer starts the AKE.
    Opportunistic,
    /// OTR off: plaintext only, OTR messages shown as they are.
    Never,
}

impl OtrPolicy {
    /// The policies as scenario files name them (the first is the default), with what each
    /// means.
    const NAMES: &[(&str, &str)] = &[
        ("require", "Never send unencrypted: store the message, send a Query, send it once private."),
        ("opportunistic", "libotr's default: plaintext with a whitespace tag until the peer starts the AKE."),
        ("never", "OTR off."),
    ];
}

/// The registry entry: the policy is an account option (§"Policies").
pub static PROTOCOL: crate::ProtocolDef =
    crate::ProtocolDef::new("otr", module_path!(), build_engine, &seam::OtrWire, include_str!("reasons.txt")).with_options(&[&POLICY_OPTION]);

/// `otr: require | opportunistic | never` under an account.
pub static POLICY_OPTION: crate::OptionDecl = crate::OptionDecl {
    key: "otr",
    about: "The OTR policy of this account's `otr` devices (default `require`).",
    values: OtrPolicy::NAMES,
};

fn build_engine(me: &FullJid, rng: &mut dyn RngCore, config: &crate::EngineConfig) -> Box<dyn Engine> {
    let policy = match POLICY_OPTION.value_in(config) {
        "opportunistic" => OtrPolicy::Opportunistic,
        "never" => OtrPolicy::Never,
        _ => OtrPolicy::Require,
    };
    let otr = OtrConfig { policy, max_message: config.max_message };
    Box::new(Otr::new(me.clone(), rng, otr).with_secrets(config.secrets.clone()))
}

/// Engine settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OtrConfig {
    /// The policy for every correspondent.
    pub policy: OtrPolicy,
    /// The largest message body sent; longer OTR messages are fragmented (§"Fragmentation").
    pub max_message: Option<usize>,
}

/// §"Message state".
#[derive(Debug, Clone, Default)]
enum MsgState {
    #[default]
    Plaintext,
    Encrypted(Box<Session>),
    Finished,
}

/// One correspondent instance.
#[derive(Debug, Clone)]
struct Instance {
    jid: Jid,
    auth: AuthState,
    msg: MsgState,
    smp: SmpState,
    /// When it last became encrypted or spoke (for the "best" instance).
    last_active: u64,
}

impl Instance {
    fn new(jid: Jid) -> Self {
        Instance {
            jid,
            auth: AuthState::None,
            msg: MsgState::Plaintext,
            smp: SmpState::Expect1,
            last_active: 0,
        }
    }
}

/// Everything about one correspondent account.
#[derive(Debug, Clone, Default)]
struct Peer {
    /// By their instance tag; tag 0 holds an AKE we started before knowing their instance.
    instances: BTreeMap<u32, Instance>,
    /// Messages typed while no encrypted instance existed (REQUIRE_ENCRYPTION).
    stored: Vec<String>,
    /// Whether a plaintext message arrived since MSGSTATE_PLAINTEXT (no more whitespace tags).
    saw_plaintext: bool,
    /// Fragment reassembly per sending resource.
    reassembly: BTreeMap<String, Reassembly>,
    /// Fingerprints seen, with the trust the user gave them.
    fingerprints: BTreeMap<[u8; 20], Trust>,
    /// Whether we started an SMP (we show the result as a verification of this peer).
    smp_started: bool,
}

/// One device's OTR state.
#[derive(Debug, Clone)]
pub struct Otr {
    me: FullJid,
    instance: u32,
    key: PrivateKey,
    config: OtrConfig,
    peers: BTreeMap<BareJid, Peer>,
    clock: u64,
    /// Messages to send that came out of a call which failed (an Error Message answering an
    /// unreadable Data Message).
    deferred: Vec<Element>,
    /// The SMP answers this user agreed with each contact.
    secrets: BTreeMap<BareJid, String>,
}

impl Otr {
    /// A new device: a DSA key and a random instance tag.
    pub fn new(me: FullJid, rng: &mut dyn RngCore, config: OtrConfig) -> Self {
        let instance = wire::MIN_INSTANCE_TAG + rng.next_u32() % (u32::MAX - wire::MIN_INSTANCE_TAG);
        Otr {
            me,
            instance,
            key: PrivateKey::generate(rng),
            config,
            peers: BTreeMap::new(),
            clock: 0,
            deferred: Vec::new(),
            secrets: BTreeMap::new(),
        }
    }

    /// The answers this user agreed in person with each contact (what they type into SMP).
    pub fn with_secrets(mut self, secrets: BTreeMap<BareJid, String>) -> Self {
        self.secrets = secrets;
        self
    }

    /// Our fingerprint, as users compare it.
    pub fn fingerprint(&self) -> String {
        hex(&self.key.public.fingerprint())
    }

    /// Our instance tag.
    pub fn instance_tag(&self) -> u32 {
        self.instance
    }

    /// What this user types into SMP with `peer`: the answer they agreed in person, or
    /// (none agreed) an empty answer, which only matches another empty one.
    fn answer_for(&self, peer: &BareJid) -> String {
        self.secrets.get(peer).cloned().unwrap_or_default()
    }

    fn stanza(&self, to: &Jid, body: &str, otr: bool) -> Element {
        let mut m = el("message", NS_CLIENT)
            .with("to", to.to_string())
            .with("type", "chat")
            .child(text_el("body", NS_CLIENT, body));
        if otr {
            // XEP-0364 §"Best practices": hints, no carbons, and the XEP-0380 marker.
            m = m
                .child(el("encryption", NS_EME).with("namespace", NS_OTR).with("name", "OTR"))
                .child(el("no-copy", NS_HINTS))
                .child(el("no-permanent-store", NS_HINTS))
                .child(el("private", NS_CARBONS));
        }
        m
    }

    /// Encodes a binary message to `to`, fragmented to the configured size.
    fn send_binary(&self, to: &Jid, kind: u8, receiver: u32, message: &Message, out: &mut Output) {
        let header = Header { kind, sender: self.instance, receiver };
        let armored = wire::armor(&wire::encode(header, message));
        let pieces = match self.config.max_message {
            Some(max) => {
                wire::fragment(&armored, self.instance, receiver, max).unwrap_or_else(|| vec![armored])
            }
            None => vec![armored],
        };
        for piece in pieces {
            out.actions.push(crate::Action::Send(self.stanza(to, &piece, true)));
        }
    }

    fn kind_of(message: &Message) -> u8 {
        match message {
            Message::DhCommit { .. } => wire::DH_COMMIT,
            Message::DhKey { .. } => wire::DH_KEY,
            Message::RevealSig { .. } => wire::REVEAL_SIG,
            Message::Sig { .. } => wire::SIG,
            Message::Data(_) => wire::DATA,
        }
    }

    /// The instance user messages go to: the most recently active encrypted one.
    fn best(peer: &Peer) -> Option<u32> {
        peer.instances
            .iter()
            .filter(|(_, i)| matches!(i.msg, MsgState::Encrypted(_)))
            .max_by_key(|(_, i)| i.last_active)
            .map(|(tag, _)| *tag)
    }

    /// Encrypts `plaintext` (with TLVs) as a Data Message to one instance.
    fn send_data(
        &mut self,
        peer_jid: &BareJid,
        tag: u32,
        text: &str,
        tlvs: &[(u16, Vec<u8>)],
        flags: u8,
        out: &mut Output,
    ) -> Result<(), E2eError> {
        let me = self.instance;
        let Some(inst) = self.peers.get_mut(peer_jid).and_then(|p| p.instances.get_mut(&tag)) else {
            return Err(E2eError::Missing { what: "OTR instance" });
        };
        let MsgState::Encrypted(session) = &mut inst.msg else {
            return Err(E2eError::Policy { detail: "no encrypted OTR session".into() });
        };
        let data = session.encrypt(&wire::join_tlvs(text, tlvs), flags, (me, tag))?;
        let to = inst.jid.clone();
        self.send_binary(&to, wire::DATA, tag, &Message::Data(data), out);
        Ok(())
    }

    fn trust_of(&mut self, peer_jid: &BareJid, fp: [u8; 20], out: &mut Output) -> Trust {
        let peer = self.peers.entry(peer_jid.clone()).or_default();
        if let Some(t) = peer.fingerprints.get(&fp) {
            return *t;
        }
        if peer.fingerprints.values().any(|t| *t == Trust::Verified) {
            out.events.push(Event::Alert {
                reason: "new-fingerprint",
                detail: format!("{peer_jid} uses a fingerprint never verified: {}", hex(&fp)),
            });
        }
        peer.fingerprints.insert(fp, Trust::Unverified);
        out.events.push(Event::TrustChanged {
            peer: peer_jid.clone(),
            device: "otr".into(),
            fingerprint: hex(&fp),
            trust: Trust::Unverified,
        });
        Trust::Unverified
    }

    /// Handles a whole (reassembled) OTR text from `from`.
    fn on_text(&mut self, cx: &mut Cx<'_>, from: &Jid, body: &str, out: &mut Output) -> Result<(), E2eError> {
        let peer_jid = from.to_bare();
        let text = wire::classify(body)?;
        let policy = self.config.policy;
        match text {
            Text::Fragment { tags, k, n, piece } => {
                // §"Instance Tags": for another instance of ours, or from an invalid sender tag.
                // (The v2 form has none: what it carries is checked once it is whole.)
                if let Some((sender, receiver)) = tags
                    && ((receiver != 0 && receiver != self.instance) || sender < wire::MIN_INSTANCE_TAG)
                {
                    return Ok(());
                }
                let whole = self
                    .peers
                    .entry(peer_jid.clone())
                    .or_default()
                    .reassembly
                    .entry(from.to_string())
                    .or_default()
                    .push(k, n, &piece);
                if let Some(whole) = whole {
                    // A reassembled message is an encoded message, never another fragment
                    // (which would let nested fragments recurse without bound).
                    if whole.contains("?OTR|") || whole.contains("?OTR,") {
                        return Err(E2eError::Malformed {
                            what: "OTR fragment",
                            detail: "a reassembled message is itself a fragment".into(),
                        });
                    }
                    return self.on_text(cx, from, &whole, out);
                }
                Ok(())
            }
            Text::Query(versions) => {
                self.reset_fragments(&peer_jid, from);
                if versions.contains(&3) {
                    self.start_ake(cx, from, out);
                }
                Ok(())
            }
            Text::Error(message) => {
                self.reset_fragments(&peer_jid, from);
                out.events.push(Event::Alert { reason: "otr-error", detail: format!("{from}: {message}") });
                // ERROR_START_AKE.
                out.actions.push(crate::Action::Send(self.stanza(from, wire::QUERY, true)));
                Ok(())
            }
            Text::Plain { text, tagged } => {
                self.reset_fragments(&peer_jid, from);
                let peer = self.peers.entry(peer_jid.clone()).or_default();
                peer.saw_plaintext = true;
                let encrypted = peer.instances.values().any(|i| !matches!(i.msg, MsgState::Plaintext));
                if policy == OtrPolicy::Require || encrypted {
                    out.events.push(Event::Alert {
                        reason: "unencrypted",
                        detail: format!("{from} sent a message without OTR"),
                    });
                }
                if !text.is_empty() {
                    out.events.push(Event::Plaintext {
                        from: from.clone(),
                        body: text,
                        trust: Trust::Unencrypted,
                        delay: None,
                        carbon: None,
                    });
                }
                // WHITESPACE_START_AKE.
                if tagged.contains(&3) {
                    self.start_ake(cx, from, out);
                }
                Ok(())
            }
            Text::Encoded(bytes) => {
                self.reset_fragments(&peer_jid, from);
                let (header, message) = wire::decode(&bytes)?;
                if header.sender < wire::MIN_INSTANCE_TAG {
                    return Err(E2eError::Rejected {
                        reason: "bad-instance-tag",
                        detail: format!("sender instance tag {:#x}", header.sender),
                    });
                }
                let commit = matches!(message, Message::DhCommit { .. });
                if header.receiver != self.instance && !(commit && header.receiver == 0) {
                    if header.receiver != 0 && header.receiver < wire::MIN_INSTANCE_TAG {
                        return Err(E2eError::Rejected {
                            reason: "bad-instance-tag",
                            detail: format!("receiver instance tag {:#x}", header.receiver),
                        });
                    }
                    return Ok(()); // for another instance of ours: discard
                }
                match message {
                    Message::Data(data) => self.receive_data(cx, from, header, &data, out),
                    ake => self.receive_ake(cx, from, header, &ake, out),
                }
            }
        }
    }

    fn reset_fragments(&mut self, peer_jid: &BareJid, from: &Jid) {
        if let Some(r) = self.peers.get_mut(peer_jid).and_then(|p| p.reassembly.get_mut(&from.to_string())) {
            r.reset();
        }
    }

    /// "Receiving a Query Message" / whitespace tag: send a D-H Commit (receiver tag 0).
    fn start_ake(&mut self, cx: &mut Cx<'_>, from: &Jid, out: &mut Output) {
        if self.config.policy == OtrPolicy::Never {
            return;
        }
        let peer = self.peers.entry(from.to_bare()).or_default();
        let inst = peer.instances.entry(0).or_insert_with(|| Instance::new(from.clone()));
        inst.jid = from.clone();
        let commit = ake::commit(&mut inst.auth, cx.rng);
        self.send_binary(from, wire::DH_COMMIT, 0, &commit, out);
    }

    /// Our logical clock, one tick per message received: the instance that spoke last wins.
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn receive_ake(
        &mut self,
        cx: &mut Cx<'_>,
        from: &Jid,
        header: Header,
        message: &Message,
        out: &mut Output,
    ) -> Result<(), E2eError> {
        let peer_jid = from.to_bare();
        let tag = header.sender;
        let clock = self.tick();
        let key = self.key.clone();
        let peer = self.peers.entry(peer_jid.clone()).or_default();
        // The commit we sent before we knew their instance (tag 0) is this instance's AKE when
        // the peer answers it (a D-H Key) or crosses it with its own commit (then the spec's
        // hash comparison decides), unless this instance is in an AKE of its own already.
        let pending = peer
            .instances
            .get(&0)
            .filter(|i| matches!(i.auth, AuthState::AwaitingDhKey { .. }))
            .map(|i| i.auth.clone());
        if let Some(auth) = pending {
            let current = peer.instances.get(&tag).map(|i| &i.auth);
            let adopt = match message {
                Message::DhKey { .. } => !matches!(current, Some(AuthState::AwaitingDhKey { .. })),
                Message::DhCommit { .. } => matches!(current, None | Some(AuthState::None)),
                _ => false,
            };
            if adopt {
                let inst = peer.instances.entry(tag).or_insert_with(|| Instance::new(from.clone()));
                inst.auth = auth;
            }
        }
        let inst = peer.instances.entry(tag).or_insert_with(|| Instance::new(from.clone()));
        inst.jid = from.clone();
        let step = ake::receive(&mut inst.auth, &key, message, cx.rng)?;
        if let Some(reply) = &step.reply {
            let to = from.clone();
            self.send_binary(&to, Self::kind_of(reply), tag, reply, out);
        }
        if let Some(established) = step.established {
            let fp = established.their_pub.fingerprint();
            let session = Session::new(established, cx.rng);
            let ssid = session.ssid;
            if let Some(inst) = self.peers.get_mut(&peer_jid).and_then(|p| p.instances.get_mut(&tag)) {
                inst.msg = MsgState::Encrypted(Box::new(session));
                inst.smp = SmpState::Expect1;
                inst.last_active = clock;
            }
            let trust = self.trust_of(&peer_jid, fp, out);
            out.events.push(Event::Alert {
                reason: "otr-session",
                detail: format!(
                    "private conversation with {from} (instance {tag:#x}), fingerprint {} ({trust}), ssid {}",
                    hex(&fp),
                    hex(&ssid)
                ),
            });
            // "If there is a recent stored message, encrypt it and send it."
            let stored =
                self.peers.get_mut(&peer_jid).map(|p| core::mem::take(&mut p.stored)).unwrap_or_default();
            for body in stored {
                self.send_data(&peer_jid, tag, &body, &[], 0, out)?;
            }
        }
        Ok(())
    }

    fn receive_data(
        &mut self,
        cx: &mut Cx<'_>,
        from: &Jid,
        header: Header,
        data: &wire::DataMessage,
        out: &mut Output,
    ) -> Result<(), E2eError> {
        let peer_jid = from.to_bare();
        let tag = header.sender;
        let clock = self.tick();
        let me = self.instance;
        let session = self
            .peers
            .get_mut(&peer_jid)
            .and_then(|p| p.instances.get_mut(&tag))
            .and_then(|i| if let MsgState::Encrypted(s) = &mut i.msg { Some(s) } else { None });
        let result = match session {
            Some(s) => s.decrypt(data, (tag, me), cx.rng),
            None => Err(E2eError::Rejected {
                reason: "no-session",
                detail: format!("an encrypted message from {from} outside a private conversation"),
            }),
        };
        let plaintext = match result {
            Ok(p) => p,
            Err(e) => {
                if data.flags & wire::IGNORE_UNREADABLE != 0 {
                    return Ok(());
                }
                // "Inform the user … and reply with an Error Message."
                self.deferred.push(self.stanza(
                    from,
                    &format!(
                        "{} You sent encrypted data to {}, who wasn't expecting it.",
                        wire::ERROR_PREFIX,
                        self.me
                    ),
                    true,
                ));
                return Err(e);
            }
        };
        // A damaged TLV area does not cost the human-readable part (it decrypted and verified).
        let (text, tlvs) = wire::split_tlvs(&plaintext).unwrap_or_else(|_| {
            let end = plaintext.iter().position(|b| *b == 0).unwrap_or(plaintext.len());
            (String::from_utf8_lossy(&plaintext[..end]).into_owned(), Vec::new())
        });
        let fp;
        {
            let Some(inst) = self.peers.get_mut(&peer_jid).and_then(|p| p.instances.get_mut(&tag)) else {
                return Ok(());
            };
            inst.last_active = clock;
            inst.jid = from.clone();
            fp = match &inst.msg {
                MsgState::Encrypted(s) => s.their_pub.fingerprint(),
                _ => [0; 20],
            };
        }
        if !text.is_empty() {
            let trust = self
                .peers
                .get(&peer_jid)
                .and_then(|p| p.fingerprints.get(&fp))
                .copied()
                .unwrap_or(Trust::Unverified);
            out.events.push(Event::Plaintext {
                from: from.clone(),
                body: text,
                trust,
                delay: None,
                carbon: None,
            });
        }
        for (kind, value) in tlvs {
            match kind {
                TLV_DISCONNECTED => {
                    if let Some(inst) = self.peers.get_mut(&peer_jid).and_then(|p| p.instances.get_mut(&tag))
                    {
                        inst.msg = MsgState::Finished;
                        inst.smp = SmpState::Expect1;
                    }
                    out.events.push(Event::Alert {
                        reason: "otr-finished",
                        detail: format!("{from} ended the private conversation"),
                    });
                }
                smp::TLV_SMP1..=smp::TLV_SMP1Q => {
                    self.receive_smp(cx, &peer_jid, tag, fp, kind, &value, out)?
                }
                _ => {} // "Records with unrecognized types should be ignored" (padding, extra key).
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn receive_smp(
        &mut self,
        cx: &mut Cx<'_>,
        peer_jid: &BareJid,
        tag: u32,
        their_fp: [u8; 20],
        kind: u16,
        value: &[u8],
        out: &mut Output,
    ) -> Result<(), E2eError> {
        let our_fp = self.key.public.fingerprint();
        let phrase = self.answer_for(peer_jid);
        let Some(inst) = self.peers.get_mut(peer_jid).and_then(|p| p.instances.get_mut(&tag)) else {
            return Ok(());
        };
        let MsgState::Encrypted(session) = &inst.msg else { return Ok(()) };
        let ssid = session.ssid;
        // We answer: the initiator's fingerprint is theirs.
        let secret = |_question: Option<&str>| smp::secret(&their_fp, &our_fp, &ssid, &phrase);
        let step = smp::receive(&mut inst.smp, kind, value, secret, cx.rng);
        let step = match step {
            Ok(s) => s,
            Err(e) => {
                // The abort must go out although this call fails: it waits in `deferred`.
                let mut abort = Output::default();
                let tlv = [(smp::TLV_SMP_ABORT, Vec::new())];
                self.send_data(peer_jid, tag, "", &tlv, wire::IGNORE_UNREADABLE, &mut abort)?;
                self.deferred.extend(abort.actions.into_iter().filter_map(|a| match a {
                    crate::Action::Send(s) => Some(s),
                    _ => None,
                }));
                return Err(e);
            }
        };
        if let Some((t, v)) = step.reply {
            self.send_data(peer_jid, tag, "", &[(t, v)], wire::IGNORE_UNREADABLE, out)?;
        }
        if kind == smp::TLV_SMP_ABORT {
            out.events
                .push(Event::Alert { reason: "smp-aborted", detail: format!("{peer_jid} aborted SMP") });
        }
        if let Some(matched) = step.result {
            let mismatch = || Event::Alert {
                reason: "smp-failed",
                detail: format!("SMP with {peer_jid}: the secrets differ (or someone is in the middle)"),
            };
            let trust = trust::settle(peer_jid, ("otr", hex(&their_fp)), matched, mismatch, out);
            let peer = self.peers.entry(peer_jid.clone()).or_default();
            peer.smp_started = false;
            peer.fingerprints.insert(their_fp, trust);
        }
        Ok(())
    }
}

impl Engine for Otr {
    fn protocol(&self) -> Protocol {
        Protocol::of(&PROTOCOL)
    }

    // `publish`: the default, nothing — keys travel inside the AKE.

    fn send(&mut self, _cx: &mut Cx<'_>, to: &BareJid, body: &str) -> Result<Output, E2eError> {
        let mut out = Output::default();
        let policy = self.config.policy;
        let peer = self.peers.entry(to.clone()).or_default();
        if policy == OtrPolicy::Never {
            out.actions.push(crate::Action::Send(self.stanza(&Jid::from(to.clone()), body, false)));
            return Ok(out);
        }
        if let Some(tag) = Self::best(peer) {
            // A fingerprint that failed SMP gets nothing more (as OMEMO clients stop
            // encrypting to an untrusted device): the user was warned that someone may be in
            // the middle.
            let fp = peer.instances.get(&tag).and_then(|i| match &i.msg {
                MsgState::Encrypted(s) => Some(s.their_pub.fingerprint()),
                _ => None,
            });
            if let Some(fp) = fp
                && peer.fingerprints.get(&fp) == Some(&Trust::Untrusted)
            {
                out.events.push(Event::Alert {
                    reason: "not-sent",
                    detail: format!(
                        "{to}'s fingerprint {} failed verification: the message was not sent",
                        hex(&fp)
                    ),
                });
                return Ok(out);
            }
            self.send_data(to, tag, body, &[], 0, &mut out)?;
            return Ok(out);
        }
        if peer.instances.values().any(|i| matches!(i.msg, MsgState::Finished)) {
            peer.stored.push(body.to_owned());
            out.events.push(Event::Alert {
                reason: "not-sent",
                detail: format!("{to} ended the private conversation: the message was not sent"),
            });
            return Ok(out);
        }
        match policy {
            OtrPolicy::Require => {
                // Store the message and send a Query (once per pending batch).
                let first = peer.stored.is_empty();
                peer.stored.push(body.to_owned());
                if first {
                    out.actions.push(crate::Action::Send(self.stanza(
                        &Jid::from(to.clone()),
                        wire::QUERY,
                        true,
                    )));
                }
            }
            OtrPolicy::Opportunistic | OtrPolicy::Never => {
                let tag = if peer.saw_plaintext {
                    String::new()
                } else {
                    format!("{}{}", wire::WHITESPACE_BASE, wire::WHITESPACE_V3)
                };
                out.actions.push(crate::Action::Send(self.stanza(
                    &Jid::from(to.clone()),
                    &format!("{body}{tag}"),
                    false,
                )));
            }
        }
        Ok(out)
    }

    fn receive(&mut self, cx: &mut Cx<'_>, stanza: &Element) -> Result<Output, E2eError> {
        let mut out = Output::default();
        if !stanza.is("message", NS_CLIENT) || stanza.attr("type") == Some("error") {
            return Ok(out);
        }
        let Some(body) = stanza.get_child("body", NS_CLIENT) else { return Ok(out) };
        let from: Jid = sender(stanza)?;
        let text = body.text();
        if self.config.policy == OtrPolicy::Never {
            out.events.push(Event::Plaintext {
                from,
                body: text,
                trust: Trust::Unencrypted,
                delay: None,
                carbon: None,
            });
            return Ok(out);
        }
        self.on_text(cx, &from, &text, &mut out)?;
        Ok(out)
    }

    fn drain(&mut self, _cx: &mut Cx<'_>) -> Output {
        let actions = self.deferred.drain(..).map(crate::Action::Send).collect();
        Output { actions, events: Vec::new() }
    }

    fn verify(&mut self, cx: &mut Cx<'_>, peer: &BareJid, _oob: &OutOfBand) -> Result<Output, E2eError> {
        // The ceremony is SMP inside the private conversation, on the secret both users share.
        let mut out = Output::default();
        let our_fp = self.key.public.fingerprint();
        let phrase = self.answer_for(peer);
        let Some(tag) = self.peers.get(peer).and_then(Self::best) else {
            out.events.push(Event::Alert {
                reason: "nothing-to-verify",
                detail: format!("no private conversation with {peer} to run SMP in"),
            });
            out.events.push(Event::Verification { peer: peer.clone(), result: VerificationResult::NothingToCompare });
            return Ok(out);
        };
        let Some(p) = self.peers.get_mut(peer) else { return Ok(out) };
        p.smp_started = true;
        let Some(inst) = p.instances.get_mut(&tag) else { return Ok(out) };
        let MsgState::Encrypted(session) = &inst.msg else { return Ok(out) };
        let x = smp::secret(&our_fp, &session.their_pub.fingerprint(), &session.ssid, &phrase);
        let mut tlvs = Vec::new();
        if !matches!(inst.smp, SmpState::Expect1) {
            // "If you wish to restart SMP, send a type 6 TLV (SMP abort)".
            tlvs.push((smp::TLV_SMP_ABORT, Vec::new()));
        }
        tlvs.push(smp::start(&mut inst.smp, x, cx.rng));
        self.send_data(peer, tag, "", &tlvs, wire::IGNORE_UNREADABLE, &mut out)?;
        Ok(out)
    }

    fn forge(&mut self, _cx: &mut Cx<'_>, from: &Jid, body: &str) -> Result<Option<Element>, E2eError> {
        let peer_jid = from.to_bare();
        let me = self.instance;
        let Some((tag, session)) = self.peers.get(&peer_jid).and_then(|p| {
            p.instances.iter().find_map(|(t, i)| match &i.msg {
                MsgState::Encrypted(s) => Some((*t, s)),
                _ => None,
            })
        }) else {
            return Ok(None);
        };
        let data = session.forge_incoming(body.as_bytes(), (tag, me))?;
        let header = Header { kind: wire::DATA, sender: tag, receiver: me };
        let armored = wire::armor(&wire::encode(header, &Message::Data(data)));
        let mut stanza = self.stanza(&Jid::from(self.me.clone()), &armored, true);
        stanza.set("from", from.to_string());
        Ok(Some(stanza))
    }

    fn identity_marks(&self) -> crate::IdentityMarks {
        // §"Public keys, signatures, and fingerprints": the PUBKEY encoding, as the AKE's
        // Reveal Signature and Signature Messages carry it (encrypted), and its fingerprint.
        let mut w = wire::Writer::default();
        self.key.public.encode(&mut w);
        vec![("DSA public key", w.bytes().to_vec()), ("fingerprint", self.key.public.fingerprint().to_vec())]
    }

    fn peer_marks(&self, peer: &BareJid) -> crate::IdentityMarks {
        // The long-term key each encrypted instance's AKE revealed (§"Authenticated Key
        // Exchange": the Reveal Signature or Signature Message carries it, encrypted to us).
        let mut marks = crate::IdentityMarks::new();
        for instance in self.peers.get(peer).map(|p| p.instances.values()).into_iter().flatten() {
            if let MsgState::Encrypted(s) = &instance.msg {
                let mut w = wire::Writer::default();
                s.their_pub.encode(&mut w);
                marks.push(("DSA public key", w.bytes().to_vec()));
                marks.push(("fingerprint", s.their_pub.fingerprint().to_vec()));
            }
        }
        marks
    }

    fn ceremony(&self, peer: &BareJid) -> Option<crate::Ceremony> {
        // SMP (§"The Socialist Millionaires' Protocol") on a secret the users agreed on: run in
        // a private conversation, so there is nothing to verify without one.
        self.peers.get(peer).and_then(Self::best).map(|_| crate::Ceremony::SharedSecret)
    }

    fn out_of_band(&self) -> OutOfBand {
        OutOfBand { peer_says: vec![self.fingerprint()] }
    }

    fn steal(&self, what: Theft) -> Box<dyn Engine> {
        kit::stolen(self.clone(), what, |copy| {
            copy.peers.clear();
            copy.deferred.clear();
        })
    }
}

/// §"Revealing MAC keys", seen by a third party: of the Data Messages in a recording (message
/// bodies with their sender, in order), how many carry a MAC that a key published later in
/// the same recording verifies — messages anyone holding the transcript could have made.
/// Returns (forgeable, data messages).
pub fn forgeable_by_anyone(bodies: &[(String, String)]) -> (usize, usize) {
    let mut reassembly: BTreeMap<String, Reassembly> = BTreeMap::new();
    let mut data = Vec::new();
    for (sender, body) in bodies {
        let whole = match wire::classify(body) {
            Ok(Text::Fragment { k, n, piece, .. }) => {
                reassembly.entry(sender.clone()).or_default().push(k, n, &piece)
            }
            _ => Some(body.clone()),
        };
        if let Some(whole) = whole
            && let Ok(Text::Encoded(bytes)) = wire::classify(&whole)
            && let Ok((header, Message::Data(d))) = wire::decode(&bytes)
        {
            data.push((header, d));
        }
    }
    let revealed: Vec<&[u8]> = data.iter().flat_map(|(_, d)| d.old_mac_keys.chunks_exact(20)).collect();
    let forgeable = data
        .iter()
        .filter(|(h, d)| {
            let authenticated = d.authenticated(h.sender, h.receiver);
            revealed.iter().any(|k| equal(&hmac_sha1(k, &[&authenticated]), &d.mac))
        })
        .count();
    (forgeable, data.len())
}

#[cfg(test)]
mod tests;
