//! The engine seam: what a protocol implementation offers to the virtual client.

use core::fmt;
use core::time::Duration;
use std::collections::BTreeMap;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use rand_core::RngCore;

use crate::content::Content;
use crate::kit::directory::{self, Failure, Forwarding, Keyed};
use crate::{E2eError, Protocol};

/// How a device's engine is set up: the user's choices, and what the user knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineConfig {
    /// How unverified keys are trusted.
    pub trust: TrustPolicy,
    /// The account's protocol options, by key, as the scenario set them: only keys and values a
    /// protocol declares ([`crate::OptionDecl`]); a protocol reads its own with
    /// [`crate::OptionDecl::value_in`].
    pub options: BTreeMap<String, String>,
    /// The largest message body (bytes) a protocol that fragments sends in one stanza.
    pub max_message: Option<usize>,
    /// For each contact, the answer this user agreed with them in person; a ceremony that
    /// compares secrets (a socialist millionaires' protocol) uses it. An attacker's own engines
    /// do not have it.
    pub secrets: BTreeMap<BareJid, String>,
    /// The seed of the scenario's certificate authority (certificates for protocols that use
    /// X.509). Honest devices are enrolled with it; an attacker's own engines have `None` and
    /// must make their own.
    pub ca: Option<[u8; 32]>,
    /// The faults of real clients this device reproduces, by name: only names its protocol
    /// declares ([`crate::QuirkDecl`], [`crate::ProtocolDef::quirks`]; the scenario loader checks
    /// them), read by our own engines alone (an independent implementation behind an adapter
    /// has its own faults, and never gets these). Empty: a faithful device.
    pub quirks: std::collections::BTreeSet<String>,
}

impl EngineConfig {
    /// A configuration with this trust policy and nothing else set.
    pub fn with_trust(trust: TrustPolicy) -> Self {
        EngineConfig { trust, ..EngineConfig::default() }
    }
}

/// How a client decides to trust a peer's key before (or without) verification — the
/// policies clients really ship.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum TrustPolicy {
    /// Blind trust before verification: new keys are trusted until the user verified one key
    /// of that contact; after that, only verified keys.
    #[default]
    Btbv,
    /// Trust on first use: the first key seen for each device is trusted.
    Tofu,
    /// Only keys the user verified are trusted.
    Manual,
}

/// Everything an engine call may use from the outside world. The engine has no clock and no
/// RNG of its own: both come from here, seeded and simulated by the caller.
pub struct Cx<'a> {
    /// The device's own deterministic random stream.
    pub rng: &'a mut dyn RngCore,
    /// The simulated time, as a duration since the Unix epoch.
    pub now: Duration,
}

impl fmt::Debug for Cx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cx").field("now", &self.now).finish_non_exhaustive()
    }
}

/// What an engine asks its client to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this stanza (the client fills in an `id` when it has none).
    Send(Element),
    /// Publish `item` to the device owner's PEP node `node` (XEP-0163), with the given access
    /// model (`open` or `presence`, XEP-0060 §4.5).
    Publish {
        /// The PEP node.
        node: String,
        /// The item id.
        id: String,
        /// The payload.
        item: Element,
        /// XEP-0060 §7.1.5 publish-options (`pubsub#access_model`, `pubsub#max_items`, ...).
        options: Vec<(String, String)>,
    },
    /// Fetch the items of `owner`'s PEP node `node`; the result reaches [`Engine::receive`] as an
    /// `<iq type='result'>` stanza.
    Fetch {
        /// The account whose node is read.
        owner: BareJid,
        /// The PEP node.
        node: String,
    },
}

/// How far a party trusts the key a plaintext arrived under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trust {
    /// The message was not end-to-end protected at all.
    Unencrypted,
    /// Protected, but the key has not been verified out of band.
    Unverified,
    /// Protected, and the key was verified out of band.
    Verified,
    /// Protected under a key the user marked untrusted.
    Untrusted,
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trust::Unencrypted => "unencrypted",
            Trust::Unverified => "unverified",
            Trust::Verified => "verified",
            Trust::Untrusted => "untrusted",
        })
    }
}

/// Which kind of XEP-0280 carbon copy carried a message, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Carbon {
    /// A copy of a message another of our devices received.
    Received,
    /// A copy of a message another of our devices sent.
    Sent,
}

/// The outcome of a verification ceremony.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum VerificationResult {
    /// The ceremony matched: the peer's key is now verified.
    Match,
    /// The ceremony failed: someone is in the middle.
    Mismatch,
    /// This protocol has no ceremony (the `plain` control).
    NotSupported,
    /// There was nothing of the peer to compare yet (no key or session seen): neither a match
    /// nor a sign of someone in the middle. The engine says so with `nothing-to-verify`.
    NothingToCompare,
}

/// What the users do in a verification ceremony, as the verifying device presents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ceremony {
    /// They read each other this text out of band and compare it (a fingerprint, a short
    /// authentication string).
    Compare(String),
    /// They type in a secret they agreed on out of band beforehand (OTR's Socialist
    /// Millionaires' Protocol): nothing to read out.
    SharedSecret,
}

impl Ceremony {
    /// How many letters and digits the users must compare (none for a shared secret).
    pub fn alphanumerics(&self) -> usize {
        match self {
            Ceremony::Compare(text) => text.chars().filter(char::is_ascii_alphanumeric).count(),
            Ceremony::SharedSecret => 0,
        }
    }
}

impl fmt::Display for Ceremony {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ceremony::Compare(text) => {
                write!(f, "the users compare {text:?} ({} alphanumerics)", self.alphanumerics())
            }
            Ceremony::SharedSecret => f.write_str("the users type in a secret they share"),
        }
    }
}

/// What identifies a device's long-term key: named byte strings ([`Engine::identity_marks`]).
pub type IdentityMarks = Vec<(&'static str, Vec<u8>)>;

/// What an engine reports to its user.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message was decrypted (or, for `plain`, read) and is shown to the user.
    Plaintext {
        /// The sending device, as the stanza claimed it.
        from: Jid,
        /// The text.
        body: String,
        /// The trust in the key it arrived under.
        trust: Trust,
        /// How long ago it was sent, when the server stamped a XEP-0203 delay (filled by the client).
        delay: Option<Duration>,
        /// Whether it arrived as a carbon copy (filled by the client).
        carbon: Option<Carbon>,
    },
    /// Parts of a stanza's content beyond a message body that reached the user end-to-end
    /// protected (XEP-0210 §4.1): a message's subject, thread, XHTML, out-of-band URL, chat
    /// state or correction ([`crate::content::describe`]) — reported after the message's
    /// [`Event::Plaintext`] — a presence's `<status/>`, an iq's payload.
    Parts {
        /// The sending device, as the stanza claimed it.
        from: Jid,
        /// The stanza they came in: `message`, `presence` or `iq`.
        stanza: &'static str,
        /// The parts, as the elements they are.
        parts: Vec<Element>,
    },
    /// Something the user must be warned about.
    Alert {
        /// A stable kebab-case reason: one its protocol declares
        /// ([`crate::ProtocolDef::reasons`]).
        reason: &'static str,
        /// Details for the transcript.
        detail: String,
    },
    /// The engine decided how much a peer device's key is trusted: a key seen for the first
    /// time, a key that changed, a verification.
    TrustChanged {
        /// The account.
        peer: BareJid,
        /// The device, as the protocol names it (an OMEMO device id).
        device: String,
        /// The key's fingerprint, as the user would compare it.
        fingerprint: String,
        /// The new trust.
        trust: Trust,
    },
    /// A verification ceremony starts: what the users do in it (the client reports it from
    /// [`Engine::ceremony`] before it calls [`Engine::verify`]).
    Ceremony {
        /// The account being verified.
        peer: BareJid,
        /// What the users compare or share.
        ceremony: Ceremony,
    },
    /// A verification ceremony finished.
    Verification {
        /// The account that was verified.
        peer: BareJid,
        /// What came out of it.
        result: VerificationResult,
    },
    /// A stanza that arrived earlier and was held (waiting for its sender's keys) was refused
    /// now: the error [`Engine::receive`] (or [`Engine::receive_presence`]) would have returned
    /// for it had the keys been there when it arrived, so the same rejection reads the same
    /// whatever the timing.
    Rejected {
        /// The sending device, as the held stanza claimed it.
        from: Jid,
        /// Why it was refused.
        error: E2eError,
    },
}

/// An engine's response to one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// What the client must do.
    pub actions: Vec<Action>,
    /// What the user is told.
    pub events: Vec<Event>,
}

impl Output {
    /// A `<body/>` that arrived in clear where end-to-end encryption was expected: shown, and
    /// flagged with an `unencrypted` alert (what a downgrade must not get past) saying how
    /// `from` sent it (`"without OMEMO"`).
    pub(crate) fn unencrypted(&mut self, from: Jid, body: &Element, how: &str) {
        let detail = format!("{from} sent a message {how}");
        self.events.push(Event::Alert { reason: crate::reason::UNENCRYPTED.code, detail });
        self.events.push(Event::Plaintext {
            from,
            body: body.text(),
            trust: Trust::Unencrypted,
            delay: None,
            carbon: None,
        });
    }
}

/// The out-of-band channel of a verification ceremony: both parties' view of it, which the
/// attacker cannot touch (a phone call, a meeting in person).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfBand {
    /// What the peer's own device says about itself (fingerprints, a shared secret, ...).
    pub peer_says: Vec<String>,
}

/// What an attacker steals when it compromises a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Theft {
    /// The identity key alone: what a key backup, an escrowed copy or a broken algorithm
    /// yields — none of the secrets the device built up by talking (sessions, ESessions'
    /// retained secrets). What is public anyway (others' keys) may stay.
    IdentityKey,
    /// Long-term identity keys only; sessions are wiped.
    LongTermKeys,
    /// Everything the device holds, sessions included.
    FullState,
}

/// An end-to-end encryption engine: one device's protocol state.
///
/// Sans-I/O: every call takes a [`Cx`] for randomness and time and returns what to do.
/// Input from the network may come from an attacker: implementations return [`E2eError`],
/// never panic.
pub trait Engine: fmt::Debug + Send {
    /// The protocol this engine speaks.
    fn protocol(&self) -> Protocol;

    /// What the device publishes once it is online (PEP items): nothing, for a protocol whose
    /// keys travel inside its own handshake.
    fn publish(&mut self, cx: &mut Cx<'_>) -> Result<Output, E2eError> {
        let _ = cx;
        Ok(Output::default())
    }

    /// The device is about to log out cleanly (a scenario's `go: offline`): what it sends or
    /// publishes while it still can. The client carries out the actions before its unavailable
    /// presence. A device that loses its connection is not asked. ESessions need it: XEP-0116
    /// §terminate ("Entities MUST terminate all open ESessions before they go offline") and
    /// XEP-0187 §init-offline-publish (offline options published "just before she goes
    /// offline").
    fn going_offline(&mut self, cx: &mut Cx<'_>) -> Result<Output, E2eError> {
        let _ = cx;
        Ok(Output::default())
    }

    /// Extensions for the device's available presence, which the client sends after every
    /// login (XEP-0027 signs the presence status here).
    fn presence(&mut self, cx: &mut Cx<'_>) -> Result<Vec<Element>, E2eError> {
        let _ = cx;
        Ok(Vec::new())
    }

    /// The namespaces of `<iq/>` payloads this engine speaks (XTLS carries its whole protocol
    /// in iq stanzas). The client hands such requests, and the answers to the engine's own
    /// requests, to [`Engine::receive`]; the engine answers requests itself.
    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[]
    }

    /// Handles available presence from another device (XEP-0027 signed presence). The
    /// client calls it for presence that carries any extension.
    fn receive_presence(&mut self, cx: &mut Cx<'_>, stanza: &Element) -> Result<Output, E2eError> {
        let _ = (cx, stanza);
        Ok(Output::default())
    }

    /// Encrypts `body` for every device of `to` (and our own other devices where the protocol
    /// does that) and returns the stanzas to send. An engine that keeps a key directory
    /// ([`Engine::keyed`]) queues it there until `to`'s keys are known.
    fn send(&mut self, cx: &mut Cx<'_>, to: &BareJid, body: &str) -> Result<Output, E2eError> {
        match self.keyed() {
            Some(k) => Ok(directory::send(k, cx, to, body)),
            None => Err(E2eError::Policy { detail: format!("{} cannot send to {to}", self.protocol()) }),
        }
    }

    /// Sends a message with its whole content (XEP-0210 §4.1): `content.body` as
    /// [`Engine::send`] does, and the other parts as far as the protocol protects them. By
    /// default the protocol protects the body alone: the other parts go in clear, in a
    /// `<message/>` of their own beside the encrypted one (as clients of body-only protocols
    /// send chat states and out-of-band URLs). With no other part this is [`Engine::send`].
    fn send_message(&mut self, cx: &mut Cx<'_>, to: &BareJid, content: &Content) -> Result<Output, E2eError> {
        let mut out = self.send(cx, to, &content.body)?;
        if !content.parts.is_empty() {
            out.actions.push(Action::Send(crate::content::clear_message(to, &content.parts)));
        }
        Ok(out)
    }

    /// Sends directed presence (RFC 6121 §4.6) with a `<status/>` to `to` (XEP-0210 §4.1: one
    /// entity to another; broadcasts need not be covered). By default in clear.
    fn send_presence(&mut self, cx: &mut Cx<'_>, to: &Jid, status: &str) -> Result<Output, E2eError> {
        let _ = cx;
        let stanza = crate::content::clear_presence(&to.to_string(), status);
        Ok(Output { actions: vec![Action::Send(stanza)], events: vec![] })
    }

    /// Sends an `<iq type='set'/>` carrying `payload` to the device `to` (XEP-0210 §4.1). By
    /// default in clear.
    fn send_iq(&mut self, cx: &mut Cx<'_>, to: &FullJid, payload: &Element) -> Result<Output, E2eError> {
        let _ = cx;
        let stanza = crate::content::clear_iq(&to.to_string(), payload);
        Ok(Output { actions: vec![Action::Send(stanza)], events: vec![] })
    }

    /// Whether a child element the client would show as a message part in clear
    /// ([`crate::content::describe`]) is instead this protocol's own (XEP-0155 names a
    /// session by the message's `<thread/>`): the client does not show it.
    fn owns_part(&self, part: &Element) -> bool {
        let _ = part;
        false
    }

    /// The id of the last message this device sent `to`, as the user sent it, when that
    /// message travels inside the protocol's own stanzas with an id of its own (a tunnel's
    /// inner stanza): what a XEP-0308 correction sent afterwards names, since the peer's
    /// client knows the message by that id. `None` (the default): the `<message/>` stanzas
    /// the client sends carry the message, and the client names the last one it sent.
    fn message_id(&self, to: &BareJid) -> Option<String> {
        let _ = to;
        None
    }

    /// Handles a stanza addressed to this device: a message, or the result of an
    /// [`Action::Fetch`]. The client has already unwrapped carbons and checked their origin.
    /// An engine that keeps a key directory ([`Engine::keyed`]) reads PEP answers there.
    fn receive(&mut self, cx: &mut Cx<'_>, stanza: &Element) -> Result<Output, E2eError> {
        self.keyed().map_or(Ok(Output::default()), |k| directory::receive(k, cx, stanza))
    }

    /// What is left to do after a [`Engine::receive`] call, whether it succeeded or failed
    /// (OTR answers an unreadable message with an Error Message and still reports the error).
    /// The client calls it after every `receive`.
    fn drain(&mut self, cx: &mut Cx<'_>) -> Output {
        let _ = cx;
        Output::default()
    }

    /// A [`Action::Fetch`] was answered with an error (`condition`, e.g. `item-not-found` when
    /// the node does not exist). An engine that keeps a key directory ([`Engine::keyed`]) hears
    /// of it there; for the others there is nothing to do.
    fn fetch_failed(
        &mut self,
        cx: &mut Cx<'_>,
        owner: &BareJid,
        node: &str,
        condition: &str,
    ) -> Result<Output, E2eError> {
        let failure = Failure { owner, node, condition };
        Ok(self.keyed().map(|k| directory::failed(k, cx, failure)).unwrap_or_default())
    }

    /// The engine's key directory, when it finds peers' keys in PEP and keeps messages waiting
    /// for them ([`crate::kit::directory`]).
    fn keyed(&mut self) -> Option<&mut dyn Keyed> {
        None
    }

    /// Runs the protocol's verification ceremony with `peer` over an out-of-band channel.
    fn verify(&mut self, cx: &mut Cx<'_>, peer: &BareJid, oob: &OutOfBand) -> Result<Output, E2eError>;

    /// What this device can tell a peer out of band about itself (its fingerprints).
    fn out_of_band(&self) -> OutOfBand;

    /// What identifies this device's long-term key to anyone who sees it travel, as named
    /// byte strings: the public key as the protocol encodes it, and the identifiers derived
    /// from it that may travel (a fingerprint, an OpenPGP key ID, a certificate). XEP-0210
    /// §3.7's identity protection is measured by looking for these in what the servers
    /// carried. By default: the fingerprint the device says out of band, when it is hex.
    fn identity_marks(&self) -> IdentityMarks {
        self.out_of_band()
            .peer_says
            .first()
            .and_then(|fp| crate::kit::codec::unhex(fp))
            .map(|bytes| vec![("fingerprint", bytes)])
            .unwrap_or_default()
    }

    /// What this device learned of `peer`'s long-term identity in its sessions, as marks
    /// `peer`'s own [`Engine::identity_marks`] names too (its public key as encoded, its
    /// fingerprint, its certificate). XEP-0210 §3.7's active part asks the attacker's engines
    /// this after the sessions they started. By default nothing: a protocol that publishes
    /// its keys hands them to anyone, active or passive, and the passive search finds them.
    fn peer_marks(&self, peer: &BareJid) -> IdentityMarks {
        let _ = peer;
        Vec::new()
    }

    /// What the users do to verify `peer` with this device now (XEP-0210 §4.3 asks for no
    /// more than six alphanumerics): by default they compare the first thing the device says
    /// about itself out of band (its fingerprint; the peer's has the same length). `None`
    /// when there is nothing to compare.
    fn ceremony(&self, peer: &BareJid) -> Option<Ceremony> {
        let _ = peer;
        self.out_of_band().peer_says.into_iter().next().map(Ceremony::Compare)
    }

    /// The deniability test: using only this device's own state, make a stanza that this
    /// device would accept as `body` sent by `from`. `Ok(None)` when the protocol gives the
    /// recipient no way to (a signature only the sender can make, or no session yet).
    fn forge(&mut self, cx: &mut Cx<'_>, from: &Jid, body: &str) -> Result<Option<Element>, E2eError> {
        let _ = (cx, from, body);
        Ok(None)
    }

    /// The surreptitious-forwarding test (D. Davis, "Defective Sign & Encrypt in S/MIME,
    /// PKCS#7, MOSS, PEM, PGP, and XML", USENIX 2001): with this device's state (stolen by
    /// the attacker), take a signed message the device received (`recorded`, as it crossed
    /// the wire), keep its sender's signature, and send it on to `to` as if the sender had
    /// written to `to`. Where the signature covers less than the whole payload (XML
    /// Signature), `body` is what the attacker tries to slip in around the signed part
    /// (signature wrapping). The output's `Send` actions carry the forgery (the caller sets
    /// their `from` to the original sender). Without `to`'s public keys the output holds only
    /// the `Fetch` actions for them: the caller feeds the results to [`Engine::receive`] and
    /// calls again. `Ok(None)` when the protocol has no sender signature to reuse. The keys of
    /// `to` come from the engine's key directory ([`Keyed::forwarding`]).
    fn forward(
        &mut self,
        cx: &mut Cx<'_>,
        recorded: &Element,
        to: &BareJid,
        body: &str,
    ) -> Result<Option<Output>, E2eError> {
        let order = Forwarding { recorded, to, body };
        self.keyed().map_or(Ok(None), |k| k.forwarding(cx, order))
    }

    /// The malicious-recipient test (Radically Open Security, "OMEMO: Cryptographic Analysis
    /// Report", 2016, §2.2.3 "Malicious device"): with this device's state (stolen by the
    /// attacker), read `stanza` — a message that carries a key for this device among the keys
    /// of other recipients, as it crossed the wire — and put `body` in place of its content
    /// for the others, under what this device learned from it (a payload key all recipients
    /// share), keeping their keys and removing this device's own. Whether they accept the
    /// result is for their own engines to say. `Ok(None)` when the protocol encrypts no content
    /// once for several recipients (the default); an error when this device cannot read the
    /// stanza.
    fn reencrypt(
        &mut self,
        cx: &mut Cx<'_>,
        stanza: &Element,
        body: &str,
    ) -> Result<Option<Element>, E2eError> {
        let _ = (cx, stanza, body);
        Ok(None)
    }

    /// A copy of this engine as an attacker who compromised the device would hold it.
    fn steal(&self, what: Theft) -> Box<dyn Engine>;

    /// This device's id as peers see it on the wire, for a protocol that gives its devices one
    /// ([`crate::ProtocolDef::device_id`]: OMEMO's device id); `None` otherwise. It is fixed
    /// when the engine is built.
    fn device_id(&self) -> Option<String> {
        None
    }
}
