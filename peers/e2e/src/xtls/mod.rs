//! XMPP Transport Layer Security (XTLS, ProtoXEP 0.0.5, `../shared/specs/inbox-xtls.xml`):
//! a TLS 1.3 tunnel between two devices, its records carried base64 in `<iq/>` stanzas. The
//! engine `xtls`.
//!
//! - [`tunnel`]: the TLS connection of one tunnel (rustls, seeded by [`crate::tls`]).
//!
//! ## What the draft says, and what we do
//!
//! - §start: the initiator sends `<iq type='set'><start xmlns='urn:xmpp:tmp:xtls'/></iq>` to
//!   the responder's *full* JID; the responder answers `<iq type='result'><proceed/></iq>`.
//!   Both asking at once: the request of the party whose full JID sorts first ("i;octet")
//!   wins, the other gets `<conflict/>`.
//! - §handshake: "the initiator functions as a TLS client and the responder functions as a
//!   TLS server"; TLS bytes travel base64 in `<iq type='set'><data xmlns='urn:xmpp:tmp:xtls'/>`,
//!   the first one with `method='x509'`; every `<data/>` is acknowledged by an empty
//!   `<iq type='result'/>`. The responder sends a CertificateRequest ("mutual authentication
//!   is desired"). Stanzas do not follow record boundaries: we put everything rustls has to
//!   say after one input into one `<data/>`.
//! - §intro, §stanzas: after the handshake, "the entities can then exchange TLS-encrypted
//!   XMPP stanzas over that tunnel": the application data is whole stanzas with their routing
//!   stripped — a `<message type='chat'/>` with its body and every other part (the draft's
//!   example carries a `<thread/>` and a chat state), a directed `<presence/>` with its
//!   status, an `<iq/>` with its payload —, in the stream's default namespace, one after
//!   another (the draft shows no stream header). The receiver takes `from`/`to` from the
//!   outer `<iq/>`, whatever the inner stanza claims, and shows the body (`Plaintext`) and
//!   the other parts (`Parts`). Each inner stanza has an `id` of its own (RFC 6120 §8.1.3):
//!   an inner iq request is answered through the tunnel (RFC 6120 §8.2.3; `service-unavailable`,
//!   §8.4, as the client answers a payload it has no handler for), and a XEP-0308 correction
//!   names the inner message it corrects ([`Engine::message_id`]).
//! - §close: `<iq type='set'><close/></iq>`, answered by `<iq type='result'><closed/></iq>`,
//!   or `<item-not-found/>` for an unknown tunnel. "If an error is detected, the tunnel MUST
//!   be considered closed and invalid": any TLS error ends the tunnel (we send rustls' alert
//!   in a last `<data/>`, then `<close/>`).
//! - §disco: support is announced with the feature `urn:xmpp:tmp:xtls`, "directly via
//!   XEP-0030 or indirectly via XEP-0115". We use XEP-0115: the presence carries a caps
//!   `<c/>` whose `ver` is the hash of our disco#info (identity `client/pc//Jabberwock`,
//!   features caps, disco#info, xtls). A device is XTLS-capable when its presence carries
//!   that `ver` (a ver we know is a cached disco#info result, XEP-0115 §6.3).
//!
//! ## Where the draft is silent (our choices)
//!
//! - TLS version and suites: the draft names TLS 1.1-era mandatory suites (RSA key
//!   transport, 3DES); we speak TLS 1.3 only (RFC 8446), AES-128-GCM or ChaCha20-Poly1305
//!   with X25519, Ed25519 self-signed certificates (one per device, key from the device's
//!   RNG, subject and `id-on-xmppAddr` = the full JID). No resumption, no 0-RTT.
//! - Certificate validation: the draft defers to RFC 6120, which has no answer for
//!   self-signed client certificates. Any well-formed certificate completes the handshake
//!   (the CertificateVerify signature is checked); the engine then judges its SHA-256
//!   fingerprint under the user's trust policy (BTBV/TOFU/Manual), per device.
//! - The ceremony: the users compare certificate fingerprints, and a short authentication
//!   string (SAS) of the tunnel: 8 bytes of the TLS exporter with the label
//!   `EXPORTER-urn:xmpp:tmp:xtls sas` and no context (RFC 8446 §7.5), read as an unsigned
//!   big-endian integer modulo 10^15, shown as three groups of five digits. TLS has no
//!   commitment to key shares: an attacker in the middle fixing one tunnel can grind its key
//!   share in the other until 50 bits of SAS match, so the SAS is a second check next to
//!   the fingerprints, never the only one.
//! - close_notify: the draft's `<close/>` is an unauthenticated IQ. We send a TLS
//!   close_notify in a last `<data/>` before `<close/>`; a `<close/>` that was not preceded
//!   by the peer's close_notify still closes the tunnel (the draft's MUST) but raises an
//!   `xtls-unauthenticated-close` alert: truncation cannot be told from a forged close.
//! - XEP-0250 offers in `<start/>` are ignored (we only speak `x509`); a first `<data/>`
//!   announcing another method is answered `<not-acceptable/>`.
//! - Errors to our IQs (the peer went offline and its server bounced the `<data/>`): the
//!   tunnel is gone; the records in it are lost (`xtls-lost` alert).
//!
//! ## What TLS over stanzas really does (measured, not papered over)
//!
//! - One TLS session per device pair: a message to an account goes through one tunnel per
//!   XTLS-capable device of it. Our own other devices get no copy.
//! - No offline messages: "XTLS tunnels use IQ stanzas, which are not stored offline". A
//!   message to a contact with no XTLS device online waits (`xtls-waiting` alert) until one
//!   shows up in presence and the handshake completes.
//! - Records must arrive in order and exactly once: TLS numbers records implicitly, so a
//!   reordered, dropped or replayed record fails its AEAD check (`bad-record-mac`) and kills
//!   the tunnel, and every later record with it.
//! - Forward secrecy: the certificate key only signs; the traffic keys come from ephemeral
//!   X25519. Stolen long-term keys ([`Theft::LongTermKeys`]) do not decrypt recorded traffic.
//!   [`Theft::FullState`] copies live tunnels by replaying their logs ([`tunnel`]): the copy
//!   reads what comes after the theft, not what was already read (TLS 1.3 nonces move on).
//! - Deniability: both ends hold both traffic keys, so the receiver could make a record the
//!   sender never wrote; we do not implement that forgery (`forge` gives `None`).

pub mod tunnel;
mod seam;

#[cfg(test)]
mod tests;

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use rand_core::RngCore;
use sha1::{Digest as _, Sha1};

use self::tunnel::{MAX_DATA, Role, Tunnel};
use crate::kit;
use crate::kit::codec::{b64, unb64_wrapped};
use crate::kit::trust::{Known, TrustBook, TrustState, Wording};
use crate::tls::{self, Identity};
use crate::xml::{ElementExt, NS_CLIENT, NS_STANZAS, el, sender, text_el};
use crate::{
    Action, Content, Cx, E2eError, Engine, EngineConfig, Event, OutOfBand, Output, Protocol, Theft,
    Trust, VerificationResult,
};

/// The registry entry.
pub static PROTOCOL: crate::ProtocolDef =
    crate::ProtocolDef::new("xtls", module_path!(), build, &seam::XtlsWire, include_str!("reasons.txt"));

/// Builds its engine for a device.
fn build(me: &FullJid, rng: &mut dyn RngCore, config: &EngineConfig) -> Box<dyn Engine> {
    Box::new(Xtls::new(me.clone(), rng, config))
}

/// The XTLS namespace (§ns: "Until this proposal is accepted ... `urn:xmpp:tmp:xtls`").
pub const NS_XTLS: &str = "urn:xmpp:tmp:xtls";
/// XEP-0115 entity capabilities.
pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";
/// XEP-0030 disco#info.
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// The caps node we announce.
pub const CAPS_NODE: &str = "https://jabberwock.invalid/xtls";
/// The exporter label of the short authentication string.
pub const SAS_LABEL: &[u8] = b"EXPORTER-urn:xmpp:tmp:xtls sas";
/// Largest plaintext buffered while a stanza is incomplete.
const MAX_PLAIN: usize = 256 * 1024;
/// Deepest element nesting accepted in tunnelled stanzas.
const MAX_DEPTH: usize = 64;

/// XEP-0115 §5.1 verification string of our disco#info, hashed with SHA-1, base64.
pub fn caps_ver() -> String {
    let mut features = [NS_CAPS, NS_DISCO_INFO, NS_XTLS];
    features.sort_unstable();
    let mut s = String::from("client/pc//Jabberwock<");
    for f in features {
        s.push_str(f);
        s.push('<');
    }
    b64(&Sha1::digest(s.as_bytes()))
}

/// How the trust alerts read: a device is a full JID, its key the certificate's fingerprint.
static WORDING: Wording = Wording {
    changed: |owner, resource| format!("{owner}/{resource} presents a new certificate"),
    mismatch: |owner, resource, _| format!("{owner}/{resource}: what the peer shows out of band is not what this tunnel saw"),
    unseen: "certificate",
};

/// An XTLS `<iq/>` from a peer device: who sent it, and the id an answer repeats.
#[derive(Debug, Clone, Copy)]
struct Iq<'a> {
    from: &'a FullJid,
    id: &'a str,
}

impl Iq<'_> {
    /// The `<iq type='error'/>` answering it with `condition`.
    fn error(&self, condition: &str) -> Action {
        Action::Send(iq_error(&Jid::from(self.from.clone()), self.id, condition))
    }

    /// The `<iq type='result'/>` answering it, with `payload` if any.
    fn result(&self, payload: Option<Element>) -> Action {
        Action::Send(iq_result(&Jid::from(self.from.clone()), self.id, payload))
    }
}

/// Where a tunnel stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// We sent `<start/>` with this id and wait for `<proceed/>`.
    Requested(String),
    /// TLS handshake running.
    Handshake,
    /// Application data flows.
    Open,
}

/// One tunnel with one peer device.
#[derive(Debug, Clone)]
struct Session {
    phase: Phase,
    role: Role,
    tunnel: Option<Tunnel>,
    /// Stanzas waiting for the handshake (or for the peer's certificate to be trusted).
    outbox: Vec<Queued>,
    /// Whether the responder saw the first `<data/>` (which carries `method`).
    method_seen: bool,
    /// Plaintext received that does not make a whole stanza yet.
    plain: Vec<u8>,
    sas: Option<String>,
    fingerprint: Option<String>,
    /// Our IQ counter when the session began: an error to an IQ sent before belongs to an
    /// older session (a crossing `<start/>` answered `<conflict/>`), not to this one.
    first_id: u64,
}

impl Session {
    fn new(phase: Phase, role: Role, outbox: Vec<Queued>, first_id: u64) -> Session {
        Session {
            first_id,
            phase,
            role,
            tunnel: None,
            outbox,
            method_seen: false,
            plain: Vec::new(),
            sas: None,
            fingerprint: None,
        }
    }
}

/// A stanza waiting to go through a tunnel.
#[derive(Debug, Clone)]
struct Queued {
    /// The one device it is for (an iq, presence directed to a full JID); `None`: every
    /// XTLS device of the account (a message, presence to the account).
    device: Option<FullJid>,
    /// The stanza, routing stripped (§stanzas).
    stanza: Element,
}

/// One device's XTLS state.
#[derive(Debug, Clone)]
pub struct Xtls {
    me: FullJid,
    /// The seed of our certificate key, drawn from the device's RNG at creation.
    key_seed: [u8; 32],
    /// Our certificate, made at the first call that has the time.
    identity: Option<Identity>,
    /// XTLS-capable devices seen in presence, per account.
    devices: BTreeMap<BareJid, BTreeSet<FullJid>>,
    sessions: BTreeMap<FullJid, Session>,
    /// Stanzas for accounts (or devices) with no XTLS device online.
    pending: BTreeMap<BareJid, Vec<Queued>>,
    /// Our inner stanza counter (their `id`s, RFC 6120 §8.1.3).
    next_inner: u64,
    /// The id of the last message we tunnelled to each account: what a XEP-0308 correction
    /// names ([`Engine::message_id`]).
    last_message: BTreeMap<BareJid, String>,
    /// The certificate fingerprint seen per peer device, and its trust.
    certs: TrustBook<FullJid>,
    next_id: u64,
    /// What a failed `receive` still has to send (drained by [`Engine::drain`]).
    left: Output,
}

/// The stanza errors XTLS uses (§start, §close).
fn iq_error(to: &Jid, id: &str, condition: &str) -> Element {
    el("iq", NS_CLIENT)
        .with("type", "error")
        .with("to", to.to_string())
        .with("id", id)
        .child(el("error", NS_CLIENT).with("type", "cancel").child(el(condition, NS_STANZAS)))
}

fn iq_result(to: &Jid, id: &str, child: Option<Element>) -> Element {
    let iq = el("iq", NS_CLIENT).with("type", "result").with("to", to.to_string()).with("id", id);
    match child {
        Some(c) => iq.child(c),
        None => iq,
    }
}

/// A stanza as it travels in the tunnel (§stanzas, "A Stanza to Send (No Routing)"): without
/// routing (we build the stanzas we tunnel without it, [`Xtls::inner`]), in the default
/// namespace of the tunnelled stream (`jabber:client`, not declared again on the stanza, as
/// in the draft's example). The inner stream is the stanzas alone, one after another: the
/// draft shows no stream header.
fn stanza_xml(stanza: &Element) -> String {
    // Serialised inside a wrapper in the stream's namespace, the stanza needs no `xmlns`;
    // the wrapper's start tag (no `>` in its one attribute) and end tag are cut off again.
    let wrapped = String::from(&el("tunnel", NS_CLIENT).child(stanza.clone()));
    let inner = wrapped
        .split_once('>')
        .and_then(|(_, rest)| rest.strip_suffix("</tunnel>"))
        .map(str::to_owned);
    // Not the shape expected: the stanza with its own declaration (the same stanza).
    inner.unwrap_or_else(|| String::from(stanza))
}

/// Splits complete top-level elements off the front of `buf` (the tunnelled stanza stream).
/// The peer may be hostile: nesting, size and shape are checked before any parser sees it.
fn split_stanzas(buf: &mut Vec<u8>) -> Result<Vec<String>, E2eError> {
    let malformed = |d: &str| E2eError::Malformed { what: "tunnelled stanza", detail: d.into() };
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut depth = 0usize;
    let mut i = 0usize;
    let mut consumed = 0usize;
    while i < buf.len() {
        let Some(&b) = buf.get(i) else { break };
        if depth == 0 && b != b'<' {
            if !b.is_ascii_whitespace() {
                return Err(malformed("text outside a stanza"));
            }
            i += 1;
            consumed = i;
            continue;
        }
        if b != b'<' {
            i += 1;
            continue;
        }
        if depth == 0 {
            start = i;
        }
        // Find the end of this tag, skipping quoted attribute values.
        let mut j = i + 1;
        let mut quote: Option<u8> = None;
        let mut end = None;
        while let Some(&c) = buf.get(j) {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == b'"' || c == b'\'' => quote = Some(c),
                None if c == b'>' => {
                    end = Some(j);
                    break;
                }
                None => {}
            }
            j += 1;
        }
        let Some(end) = end else { break }; // incomplete tag: wait for more
        match buf.get(i + 1) {
            Some(b'/') => {
                depth = depth.checked_sub(1).ok_or_else(|| malformed("end tag without start"))?;
            }
            Some(b'?' | b'!') => return Err(malformed("processing instruction or declaration")),
            _ if buf.get(end.wrapping_sub(1)) == Some(&b'/') => {}
            _ => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(malformed("nested too deep"));
                }
            }
        }
        i = end + 1;
        if depth == 0 {
            let chunk = buf.get(start..i).ok_or_else(|| malformed("range"))?;
            out.push(String::from_utf8(chunk.to_vec()).map_err(|e| malformed(&e.to_string()))?);
            consumed = i;
        }
    }
    buf.drain(..consumed.min(buf.len()));
    if buf.len() > MAX_PLAIN {
        return Err(malformed("stanza too large"));
    }
    Ok(out)
}

/// Parses one tunnelled stanza in the stream's namespace (`jabber:client`).
fn parse_stanza(text: &str) -> Result<Element, E2eError> {
    let wrapped = format!("<tunnel xmlns='{NS_CLIENT}'>{text}</tunnel>");
    let root: Element = wrapped.parse().map_err(|e: minidom::Error| E2eError::Malformed {
        what: "tunnelled stanza",
        detail: e.to_string(),
    })?;
    root.children().next().cloned().ok_or(E2eError::Missing { what: "tunnelled stanza" })
}

/// The SAS of a tunnel: 8 exporter bytes as an integer modulo 10^15, three groups of five.
fn sas_of(tunnel: &Tunnel) -> Option<String> {
    let bytes: [u8; 8] = tunnel.export(SAS_LABEL, 8)?.try_into().ok()?;
    let n = u64::from_be_bytes(bytes) % 1_000_000_000_000_000;
    let d = format!("{n:015}");
    Some(format!("{} {} {}", d.get(0..5)?, d.get(5..10)?, d.get(10..15)?))
}

impl Xtls {
    /// A new device: its certificate key seed comes from `rng`; the certificate itself is
    /// made at the first call that knows the time (its validity starts then).
    pub fn new(me: FullJid, rng: &mut dyn RngCore, config: &EngineConfig) -> Xtls {
        let mut key_seed = [0u8; 32];
        rng.fill_bytes(&mut key_seed);
        Xtls {
            me,
            key_seed,
            identity: None,
            devices: BTreeMap::new(),
            sessions: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_inner: 0,
            last_message: BTreeMap::new(),
            certs: TrustBook::new(config.trust, &WORDING),
            next_id: 0,
            left: Output::default(),
        }
    }

    /// Our certificate (made on first use, valid from then).
    pub fn identity(&mut self, now: Duration) -> Result<Identity, E2eError> {
        if let Some(id) = &self.identity {
            return Ok(id.clone());
        }
        let id = tls::self_signed(&[&self.me.to_string()], self.key_seed, now)
            .map_err(|e| E2eError::Policy { detail: format!("certificate: {e}") })?;
        self.identity = Some(id.clone());
        Ok(id)
    }

    /// Our certificate's SHA-256 fingerprint, once it exists.
    pub fn fingerprint(&self) -> Option<String> {
        self.identity.as_ref().map(Identity::fingerprint)
    }

    /// The SAS of the tunnel with `peer`, once its handshake is done.
    pub fn sas(&self, peer: &FullJid) -> Option<&str> {
        self.sessions.get(peer).and_then(|s| s.sas.as_deref())
    }

    /// Whether the tunnel with `peer` carries application data.
    pub fn is_open(&self, peer: &FullJid) -> bool {
        self.sessions.get(peer).is_some_and(|s| s.phase == Phase::Open)
    }

    /// Marks `device` of `account` as XTLS-capable (what a caps presence does).
    pub fn add_device(&mut self, device: FullJid) {
        self.devices.entry(device.to_bare()).or_default().insert(device);
    }

    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("xtls-{}", self.next_id)
    }

    fn iq_set(&mut self, to: &FullJid, child: Element) -> Element {
        let id = self.id();
        el("iq", NS_CLIENT).with("type", "set").with("to", to.to_string()).with("id", id).child(child)
    }

    /// A stanza of the tunnelled stream (§stanzas): `name` (`message`, `presence`, `iq`) with
    /// an `id` of its own (RFC 6120 §8.1.3: an iq MUST have one; a XEP-0308 correction names
    /// a message by it) and no routing.
    fn inner(&mut self, name: &str) -> Element {
        self.next_inner += 1;
        el(name, NS_CLIENT).with("id", format!("in-{}", self.next_inner))
    }

    /// Queues `stanza` for `account` (for its one device `device`, if given), and sends what
    /// can go.
    fn submit(
        &mut self,
        cx: &mut Cx<'_>,
        account: &BareJid,
        device: Option<FullJid>,
        stanza: Element,
    ) -> Result<Output, E2eError> {
        let mut out = Output::default();
        self.identity(cx.now)?;
        let mut queued = self.pending.remove(account).unwrap_or_default();
        queued.push(Queued { device, stanza });
        self.dispatch(cx, account, queued, &mut out);
        Ok(out)
    }

    /// §start: asks `peer` for a tunnel; `outbox` goes through it once open.
    fn start(&mut self, peer: &FullJid, outbox: Vec<Queued>, out: &mut Output) {
        let first_id = self.next_id;
        let iq = self.iq_set(peer, el("start", NS_XTLS));
        let id = iq.attr("id").unwrap_or_default().to_owned();
        out.actions.push(Action::Send(iq));
        self.sessions
            .insert(peer.clone(), Session::new(Phase::Requested(id), Role::Client, outbox, first_id));
    }

    /// Sends whatever TLS bytes the tunnel has for the peer, as one `<data/>` (§handshake).
    fn flush_tls(&mut self, peer: &FullJid, out: &mut Output) {
        let Some(s) = self.sessions.get_mut(peer) else { return };
        let Some(t) = s.tunnel.as_mut() else { return };
        let bytes = t.take_tls();
        if bytes.is_empty() {
            return;
        }
        let mut data = text_el("data", NS_XTLS, b64(&bytes));
        // §handshake: "The first stanza MUST include a 'method' attribute".
        if s.role == Role::Client && !s.method_seen {
            s.method_seen = true;
            data.set("method", "x509");
        }
        let iq = self.iq_set(peer, data);
        out.actions.push(Action::Send(iq));
    }

    /// Writes the waiting stanzas into an open tunnel whose peer is not untrusted.
    fn flush_outbox(&mut self, cx: &mut Cx<'_>, peer: &FullJid, out: &mut Output) {
        if self.certs.distrusts(&peer.to_bare(), peer) {
            return;
        }
        let Some(s) = self.sessions.get_mut(peer) else { return };
        if s.phase != Phase::Open {
            return;
        }
        let Some(t) = s.tunnel.as_mut() else { return };
        for queued in core::mem::take(&mut s.outbox) {
            if let Err(e) = t.write(cx.now, stanza_xml(&queued.stanza).as_bytes()) {
                out.events.push(Event::Alert { reason: "not-sent", detail: format!("to {peer}: {e}") });
            }
        }
        self.flush_tls(peer, out);
    }

    /// Ends a tunnel after an error (§close: "the tunnel MUST be considered closed"): what
    /// rustls queued (its alert) goes in a last `<data/>`, then `<close/>`. Stanzas that were
    /// still waiting go back to the account's queue.
    fn kill(&mut self, peer: &FullJid, out: &mut Output) {
        self.flush_tls(peer, out);
        if let Some(s) = self.sessions.remove(peer) {
            if !s.outbox.is_empty() {
                self.pending.entry(peer.to_bare()).or_default().extend(s.outbox);
            }
            let close = self.iq_set(peer, el("close", NS_XTLS));
            out.actions.push(Action::Send(close));
        }
    }

    /// Ends the tunnel with `peer` (§close), after a TLS close_notify.
    pub fn close(&mut self, cx: &mut Cx<'_>, peer: &FullJid) -> Result<Output, E2eError> {
        let mut out = Output::default();
        let s = self
            .sessions
            .get_mut(peer)
            .ok_or(E2eError::Policy { detail: format!("no tunnel with {peer}") })?;
        if let Some(t) = s.tunnel.as_mut() {
            t.close_notify(cx.now);
        }
        self.flush_tls(peer, &mut out);
        if let Some(s) = self.sessions.remove(peer)
            && !s.outbox.is_empty()
        {
            self.pending.entry(peer.to_bare()).or_default().extend(s.outbox);
        }
        let close = self.iq_set(peer, el("close", NS_XTLS));
        out.actions.push(Action::Send(close));
        Ok(out)
    }

    /// Trust in a device's certificate, per the policy; emits `TrustChanged` when it moves.
    fn observe_cert(&mut self, peer: &FullJid, fp: &str, out: &mut Output) -> TrustState {
        let seen = Known::new((), peer.resource().to_string(), fp);
        self.certs.observe(&peer.to_bare(), peer.clone(), seen, out)
    }

    /// The handshake just finished: judge the certificate, compute the SAS, send what waits.
    fn established(&mut self, cx: &mut Cx<'_>, peer: &FullJid, out: &mut Output) {
        let Some(s) = self.sessions.get_mut(peer) else { return };
        s.phase = Phase::Open;
        let Some(t) = s.tunnel.as_ref() else { return };
        let fp = t.peer_certificate().map(|c| tls::fingerprint(&c)).unwrap_or_default();
        let sas = sas_of(t);
        let suite = t.suite();
        s.sas = sas.clone();
        s.fingerprint = Some(fp.clone());
        let state = self.observe_cert(peer, &fp, out);
        out.events.push(Event::Alert {
            reason: "xtls-established",
            detail: format!(
                "TLS 1.3 tunnel with {peer} ({suite}), certificate {fp}, SAS {}",
                sas.as_deref().unwrap_or("?")
            ),
        });
        if state == TrustState::Untrusted {
            out.events.push(Event::Alert {
                reason: "untrusted-device",
                detail: format!("{peer}'s certificate is not trusted: nothing is sent to it until verified"),
            });
        }
        self.flush_outbox(cx, peer, out);
    }

    // ---- receiving ------------------------------------------------------------------------

    fn on_start(&mut self, cx: &mut Cx<'_>, iq: Iq<'_>, out: &mut Output) -> Result<(), E2eError> {
        let from = iq.from;
        let mut outbox = Vec::new();
        if let Some(s) = self.sessions.get(from) {
            let ours_first = self.me.as_str().as_bytes() < from.as_str().as_bytes();
            let crossing = s.role == Role::Client && s.phase != Phase::Open;
            if crossing && ours_first {
                // §start: both asked at once; the request of the party whose JID sorts first
                // ("i;octet") is the one that goes on: theirs gets <conflict/>. (Ours may
                // already be in its handshake: their <start/> was sent before our <start/>
                // reached them.)
                out.actions.push(iq.error("conflict"));
                return Ok(());
            }
            if !matches!(s.phase, Phase::Requested(_)) {
                out.events.push(Event::Alert {
                    reason: "xtls-restarted",
                    detail: format!("{from} started a new tunnel: the old one is dropped"),
                });
            }
            if let Some(old) = self.sessions.remove(from) {
                outbox = old.outbox;
            }
        }
        self.add_device(from.clone());
        let identity = self.identity(cx.now)?;
        let mut seed = [0u8; 32];
        cx.rng.fill_bytes(&mut seed);
        let mut session = Session::new(Phase::Handshake, Role::Server, outbox, self.next_id);
        session.tunnel = Some(Tunnel::new(Role::Server, seed, &identity, from.domain().as_str(), cx.now)?);
        self.sessions.insert(from.clone(), session);
        out.actions.push(iq.result(Some(el("proceed", NS_XTLS))));
        Ok(())
    }

    fn on_proceed(&mut self, cx: &mut Cx<'_>, iq: Iq<'_>, out: &mut Output) -> Result<(), E2eError> {
        let Iq { from, id } = iq;
        let Some(s) = self.sessions.get(from) else {
            return Err(E2eError::Rejected {
                reason: "unexpected",
                detail: format!("<proceed/> from {from}"),
            });
        };
        if s.phase != Phase::Requested(id.to_owned()) {
            return Err(E2eError::Rejected {
                reason: "unexpected",
                detail: format!("<proceed/> from {from} for a request we did not make"),
            });
        }
        let identity = self.identity(cx.now)?;
        let mut seed = [0u8; 32];
        cx.rng.fill_bytes(&mut seed);
        let tunnel = Tunnel::new(Role::Client, seed, &identity, from.domain().as_str(), cx.now)?;
        if let Some(s) = self.sessions.get_mut(from) {
            s.tunnel = Some(tunnel);
            s.phase = Phase::Handshake;
        }
        // The ClientHello.
        self.flush_tls(from, out);
        Ok(())
    }

    fn on_data(&mut self, cx: &mut Cx<'_>, iq: Iq<'_>, data: &Element, out: &mut Output) -> Result<(), E2eError> {
        let from = iq.from;
        let Some(s) = self.sessions.get_mut(from) else {
            // §close: "If the tunnel is unknown to the receiving party, it MUST return an
            // <item-not-found/> error" (we answer the same to data for an unknown tunnel).
            out.actions.push(iq.error("item-not-found"));
            return Err(E2eError::Rejected {
                reason: "unknown-tunnel",
                detail: format!("<data/> from {from}"),
            });
        };
        if matches!(s.phase, Phase::Requested(_)) || s.tunnel.is_none() {
            out.actions.push(iq.error("unexpected-request"));
            return Err(E2eError::Rejected {
                reason: "unexpected",
                detail: format!("<data/> before <proceed/> from {from}"),
            });
        }
        if s.role == Role::Server && !s.method_seen {
            s.method_seen = true;
            match data.attr("method") {
                Some("x509") | None => {}
                Some(other) => {
                    let other = other.to_owned();
                    out.actions.push(iq.error("not-acceptable"));
                    self.sessions.remove(from);
                    return Err(E2eError::Rejected {
                        reason: "unsupported-method",
                        detail: format!("{from} asked for XTLS method `{other}`"),
                    });
                }
            }
        }
        let bytes = unb64_wrapped("data", &data.text());
        let bytes = match bytes {
            Ok(b) if b.len() <= MAX_DATA => b,
            Ok(b) => {
                out.actions.push(iq.error("not-acceptable"));
                return Err(E2eError::Malformed { what: "data", detail: format!("{} bytes", b.len()) });
            }
            Err(e) => {
                out.actions.push(iq.error("bad-request"));
                return Err(e);
            }
        };
        // §handshake: "The responder then acknowledges the stanza".
        out.actions.push(iq.result(None));
        let was_handshaking = s.phase == Phase::Handshake;
        let fed = match s.tunnel.as_mut() {
            Some(t) => t.feed(cx.now, &bytes),
            None => Err(E2eError::Rejected { reason: "no-session", detail: "no connection".into() }),
        };
        let plain = match fed {
            Ok(p) => p,
            Err(e) => {
                self.kill(from, out);
                return Err(e);
            }
        };
        let handshaking = s.tunnel.as_ref().is_none_or(Tunnel::is_handshaking);
        let peer_closed = s.tunnel.as_ref().is_some_and(Tunnel::peer_closed);
        s.plain.extend_from_slice(&plain);
        let stanzas = match split_stanzas(&mut s.plain) {
            Ok(v) => v,
            Err(e) => {
                self.kill(from, out);
                return Err(e);
            }
        };
        // Our flight (handshake messages, the alert of a close_notify answer).
        self.flush_tls(from, out);
        if was_handshaking && !handshaking {
            self.established(cx, from, out);
        }
        let trust = self.certs.trust_of(&from.to_bare(), from);
        let mut answers = Vec::new();
        for stanza in stanzas {
            let stanza = match parse_stanza(&stanza) {
                Ok(s) => s,
                Err(e) => {
                    self.kill(from, out);
                    return Err(e);
                }
            };
            // §stanzas: the receiver supplies `from` and `to` from the <iq/>: the sender is the
            // tunnel's peer, whatever routing the inner stanza claims.
            if let Some(answer) = self.tunnelled(from, trust, &stanza, out) {
                answers.push(Queued { device: Some(from.clone()), stanza: answer });
            }
        }
        if !answers.is_empty() {
            if let Some(s) = self.sessions.get_mut(from) {
                s.outbox.extend(answers);
            }
            self.flush_outbox(cx, from, out);
        }
        if peer_closed {
            out.events.push(Event::Alert {
                reason: "xtls-close-notify",
                detail: format!("{from} ended the TLS session (close_notify)"),
            });
        }
        Ok(())
    }

    /// One stanza that came out of the tunnel with `from` (§stanzas), shown to the user: a
    /// message's body and its other parts, a presence's status, an iq's payload. Returns the
    /// answer an iq request gets through the tunnel.
    fn tunnelled(&self, from: &FullJid, trust: Trust, stanza: &Element, out: &mut Output) -> Option<Element> {
        let sender = Jid::from(from.clone());
        let kind = stanza.attr("type");
        let mut shown = Vec::new();
        let mut answer = None;
        let parts_event = |name: &'static str, parts: Vec<Element>| {
            (!parts.is_empty()).then(|| Event::Parts { from: sender.clone(), stanza: name, parts })
        };
        match stanza.name() {
            _ if stanza.ns() != NS_CLIENT || kind == Some("error") => {} // an answer to one of ours
            "message" => {
                if let Some(body) = stanza.get_child("body", NS_CLIENT) {
                    let body = body.text();
                    shown.push(Event::Plaintext { from: sender.clone(), body, trust, delay: None, carbon: None });
                }
                // Reported after the body, as the other engines do.
                shown.extend(parts_event("message", crate::content::decrypted_parts(stanza)));
            }
            // RFC 6121 §4.6 directed presence, available or unavailable: its <status/>
            // (§4.7.2.2) and whatever else it carries.
            "presence" if kind.is_none_or(|k| k == "unavailable") => {
                shown.extend(parts_event("presence", crate::content::decrypted_parts(stanza)));
            }
            "iq" if matches!(kind, Some("get" | "set")) => {
                shown.extend(parts_event("iq", stanza.children().cloned().collect()));
                // RFC 6120 §8.2.3: a request MUST be answered; §8.4: a payload nobody here
                // handles (the user is shown it) gets <service-unavailable/>, as the client
                // answers one in clear. The answer goes back through the tunnel.
                answer = stanza.attr("id").map(|id| {
                    let condition = el("service-unavailable", NS_STANZAS);
                    let error = el("error", NS_CLIENT).with("type", "cancel").child(condition);
                    el("iq", NS_CLIENT).with("type", "error").with("id", id).child(error)
                });
            }
            _ => {} // an iq answer, another presence type: nothing to show
        }
        if trust == Trust::Untrusted && !shown.is_empty() {
            out.events.push(Event::Alert {
                reason: "untrusted-device",
                detail: format!("{from}'s certificate is not trusted"),
            });
        }
        out.events.extend(shown);
        answer
    }

    fn on_close(&mut self, iq: Iq<'_>, out: &mut Output) {
        let from = iq.from;
        let Some(s) = self.sessions.remove(from) else {
            out.actions.push(iq.error("item-not-found"));
            return;
        };
        out.actions.push(iq.result(Some(el("closed", NS_XTLS))));
        let clean = s.tunnel.as_ref().is_some_and(Tunnel::peer_closed);
        out.events.push(if clean {
            Event::Alert { reason: "xtls-closed", detail: format!("{from} closed the tunnel") }
        } else {
            Event::Alert {
                reason: "xtls-unauthenticated-close",
                detail: format!(
                    "{from} closed the tunnel without a TLS close_notify (truncation or a forged <close/>)"
                ),
            }
        });
        if !s.outbox.is_empty() {
            self.pending.entry(from.to_bare()).or_default().extend(s.outbox);
        }
    }

    /// An error answering one of our IQs: a refused `<start/>`, or a tunnel that is gone.
    fn on_error(&mut self, iq: Iq<'_>, stanza: &Element, out: &mut Output) {
        let Iq { from, id } = iq;
        let condition = stanza
            .get_child("error", NS_CLIENT)
            .and_then(|e| e.children().find(|c| c.ns() == NS_STANZAS))
            .map(|c| c.name().to_owned())
            .unwrap_or_else(|| "undefined-condition".into());
        let Some(s) = self.sessions.get(from) else { return };
        if s.phase == Phase::Requested(id.to_owned()) {
            if condition == "conflict" {
                // Their simultaneous request wins; it arrives (or arrived) as a <start/>.
                return;
            }
            if let Some(s) = self.sessions.remove(from) {
                self.pending.entry(from.to_bare()).or_default().extend(s.outbox);
            }
            if let Some(set) = self.devices.get_mut(&from.to_bare()) {
                set.remove(from);
            }
            out.events.push(Event::Alert {
                reason: "xtls-refused",
                detail: format!("{from} refused the tunnel ({condition})"),
            });
            return;
        }
        let ours = id.strip_prefix("xtls-").and_then(|n| n.parse::<u64>().ok());
        if ours.is_none_or(|n| n <= s.first_id) {
            return; // not an IQ of this session
        }
        if let Some(s) = self.sessions.remove(from) {
            if !s.outbox.is_empty() {
                self.pending.entry(from.to_bare()).or_default().extend(s.outbox);
            }
            out.events.push(Event::Alert {
                reason: "xtls-lost",
                detail: format!("{from} answered {id} with {condition}: the tunnel and its records are lost"),
            });
        }
    }

    /// Starts tunnels for (or writes into) every trusted device of `to`, with the stanzas
    /// `queued` for them; what has no device online waits in `pending`.
    fn dispatch(&mut self, cx: &mut Cx<'_>, to: &BareJid, queued: Vec<Queued>, out: &mut Output) {
        let devices: Vec<FullJid> =
            self.devices.get(to).map(|d| d.iter().cloned().collect()).unwrap_or_default();
        let mut outboxes: BTreeMap<FullJid, Vec<Queued>> = BTreeMap::new();
        let mut waiting = Vec::new();
        for q in queued {
            let targets: Vec<&FullJid> = match &q.device {
                Some(d) => devices.iter().filter(|x| *x == d).collect(),
                None => devices.iter().collect(),
            };
            if targets.is_empty() {
                waiting.push(q);
                continue;
            }
            for d in targets {
                outboxes.entry(d.clone()).or_default().push(q.clone());
            }
        }
        if !waiting.is_empty() {
            let messages = waiting.iter().all(|q| q.stanza.name() == "message");
            out.events.push(Event::Alert {
                reason: "xtls-waiting",
                detail: format!(
                    "no XTLS device of {to} is online: {} {} wait (XTLS has no offline sessions)",
                    waiting.len(),
                    if messages { "message(s)" } else { "stanza(s)" }
                ),
            });
            self.pending.entry(to.clone()).or_default().extend(waiting);
        }
        for (d, outbox) in outboxes {
            match self.sessions.get_mut(&d) {
                Some(s) => {
                    s.outbox.extend(outbox);
                    if self.certs.distrusts(to, &d) {
                        out.events.push(Event::Alert {
                            reason: "untrusted-device",
                            detail: format!(
                                "{d}'s certificate is not trusted: the message waits for verification"
                            ),
                        });
                    }
                    self.flush_outbox(cx, &d, out);
                }
                None => self.start(&d, outbox, out),
            }
        }
    }
}

impl Engine for Xtls {
    fn protocol(&self) -> Protocol {
        Protocol::of(&PROTOCOL)
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &["urn:xmpp:tmp:xtls"]
    }

    fn publish(&mut self, cx: &mut Cx<'_>) -> Result<Output, E2eError> {
        // Nothing in PEP: the draft discovers support through disco/caps, and the key is
        // presented in the handshake.
        self.identity(cx.now)?;
        Ok(Output::default())
    }

    fn presence(&mut self, cx: &mut Cx<'_>) -> Result<Vec<Element>, E2eError> {
        self.identity(cx.now)?;
        Ok(vec![el("c", NS_CAPS).with("hash", "sha-1").with("node", CAPS_NODE).with("ver", caps_ver())])
    }

    fn receive_presence(&mut self, cx: &mut Cx<'_>, stanza: &Element) -> Result<Output, E2eError> {
        let mut out = Output::default();
        let Some(from) = stanza.attr("from").and_then(|f| f.parse::<FullJid>().ok()) else { return Ok(out) };
        if from.to_bare() == self.me.to_bare() || stanza.attr("type").is_some_and(|t| t != "available") {
            return Ok(out);
        }
        let capable = stanza
            .get_child("c", NS_CAPS)
            .is_some_and(|c| c.attr("hash") == Some("sha-1") && c.attr("ver") == Some(caps_ver().as_str()));
        if !capable {
            return Ok(out);
        }
        self.add_device(from.clone());
        // A device that comes (back) online with a tunnel still being asked for: ask again
        // (the first <start/> may have been bounced while it was away).
        if self.sessions.get(&from).is_some_and(|s| matches!(s.phase, Phase::Requested(_)))
            && let Some(s) = self.sessions.remove(&from)
        {
            self.start(&from, s.outbox, &mut out);
        }
        let bare = from.to_bare();
        if let Some(queued) = self.pending.remove(&bare) {
            self.dispatch(cx, &bare, queued, &mut out);
        }
        Ok(out)
    }

    fn send(&mut self, cx: &mut Cx<'_>, to: &BareJid, body: &str) -> Result<Output, E2eError> {
        self.send_message(cx, to, &Content::body(body))
    }

    /// §stanzas: the whole `<message/>` goes through the tunnel, every part with the body
    /// (the draft's example carries a `<thread/>` and a chat state).
    fn send_message(&mut self, cx: &mut Cx<'_>, to: &BareJid, content: &Content) -> Result<Output, E2eError> {
        let mut message = self.inner("message").with("type", "chat");
        if !content.body.is_empty() || content.parts.is_empty() {
            message.append_child(text_el("body", NS_CLIENT, content.body.as_str()));
        }
        for part in &content.parts {
            message.append_child(part.clone());
        }
        if let Some(id) = message.attr("id") {
            self.last_message.insert(to.clone(), id.to_owned());
        }
        self.submit(cx, to, None, message)
    }

    /// §stanzas: directed presence (RFC 6121 §4.6) goes through the tunnel of every XTLS
    /// device of the account, or of the one device named.
    fn send_presence(&mut self, cx: &mut Cx<'_>, to: &Jid, status: &str) -> Result<Output, E2eError> {
        let presence = self.inner("presence").child(text_el("status", NS_CLIENT, status));
        let device = to.clone().try_into_full().ok();
        self.submit(cx, &to.to_bare(), device, presence)
    }

    /// §stanzas: the `<iq type='set'/>` goes through the tunnel with the device `to`.
    fn send_iq(&mut self, cx: &mut Cx<'_>, to: &FullJid, payload: &Element) -> Result<Output, E2eError> {
        let iq = self.inner("iq").with("type", "set").child(payload.clone());
        self.submit(cx, &to.to_bare(), Some(to.clone()), iq)
    }

    /// The inner message's id: the outer stanzas are `<iq/>`s of the tunnel, which the peer's
    /// user never sees.
    fn message_id(&self, to: &BareJid) -> Option<String> {
        self.last_message.get(to).cloned()
    }

    fn receive(&mut self, cx: &mut Cx<'_>, stanza: &Element) -> Result<Output, E2eError> {
        let mut out = Output::default();
        if stanza.is("message", NS_CLIENT) {
            if stanza.attr("type") == Some("error") {
                return Ok(out);
            }
            if let Some(body) = stanza.get_child("body", NS_CLIENT) {
                let from: Jid =
                    sender(stanza)?;
                out.unencrypted(from, body, "outside an XTLS tunnel");
            }
            return Ok(out);
        }
        if !stanza.is("iq", NS_CLIENT) {
            return Ok(out);
        }
        let from: FullJid = sender(stanza)?;
        let id = stanza.attr("id").ok_or(E2eError::Missing { what: "id" })?.to_owned();
        let child = stanza.children().find(|c| c.ns() == NS_XTLS);
        let iq = Iq { from: &from, id: &id };
        let result = match (stanza.attr("type"), child.map(Element::name)) {
            (Some("set"), Some("start")) => self.on_start(cx, iq, &mut out),
            (Some("set"), Some("data")) => match child {
                Some(data) => self.on_data(cx, iq, data, &mut out),
                None => Ok(()),
            },
            (Some("set"), Some("close")) => {
                self.on_close(iq, &mut out);
                Ok(())
            }
            (Some("set"), _) => {
                out.actions.push(iq.error("bad-request"));
                Err(E2eError::Missing { what: "XTLS payload" })
            }
            (Some("result"), Some("proceed")) => self.on_proceed(cx, iq, &mut out),
            (Some("result"), _) => Ok(()), // a <data/> acknowledged, or <closed/>
            (Some("error"), _) => {
                self.on_error(iq, stanza, &mut out);
                Ok(())
            }
            _ => Ok(()),
        };
        match result {
            Ok(()) => Ok(out),
            Err(e) => {
                // What must still go out (the acknowledgement, an alert, <close/>).
                self.left.actions.append(&mut out.actions);
                self.left.events.append(&mut out.events);
                Err(e)
            }
        }
    }

    fn drain(&mut self, _cx: &mut Cx<'_>) -> Output {
        core::mem::take(&mut self.left)
    }

    fn verify(&mut self, cx: &mut Cx<'_>, peer: &BareJid, oob: &OutOfBand) -> Result<Output, E2eError> {
        // The users compare certificate fingerprints and, per tunnel, the SAS (see the module
        // documentation) over a channel the attacker cannot touch.
        let mut out = Output::default();
        self.certs.verified(peer);
        let me = self.me.to_string();
        let mut result = VerificationResult::Match;
        let devices: Vec<(FullJid, String)> =
            self.certs.of(peer).map(|(d, k)| (d.clone(), k.fingerprint.clone())).collect();
        if devices.is_empty() {
            out.events.push(Event::Alert {
                reason: "nothing-to-verify",
                detail: format!("no certificate of {peer} seen yet"),
            });
            out.events.push(Event::Verification { peer: peer.clone(), result: VerificationResult::NothingToCompare });
            return Ok(out);
        }
        for (d, fp) in devices {
            let fp_ok = oob.peer_says.contains(&fp);
            let session = self.sessions.get(&d);
            // A live tunnel whose certificate is the one compared must also show the SAS.
            let sas_ok = match session.and_then(|s| s.sas.as_ref().map(|sas| (sas, s.fingerprint.as_ref()))) {
                Some((sas, Some(sfp))) if *sfp == fp => oob.peer_says.contains(&format!("sas {me}: {sas}")),
                _ => true,
            };
            let state = if fp_ok && sas_ok { TrustState::Verified } else { TrustState::Untrusted };
            self.certs.set_state(peer, &d, state, &mut out);
            if state == TrustState::Untrusted {
                result = VerificationResult::Mismatch;
                out.events.push(Event::Alert {
                    reason: if fp_ok { "sas-mismatch" } else { "fingerprint-mismatch" },
                    detail: (WORDING.mismatch)(peer, d.resource().as_str(), &fp),
                });
                // Someone is in the middle: end the tunnel; nothing more goes through it.
                if self.sessions.contains_key(&d) {
                    self.kill(&d, &mut out);
                }
            } else {
                self.flush_outbox(cx, &d, &mut out);
            }
        }
        out.events.push(Event::Verification { peer: peer.clone(), result });
        Ok(out)
    }

    fn identity_marks(&self) -> crate::IdentityMarks {
        let Some(identity) = &self.identity else { return Vec::new() };
        let mut marks = vec![("certificate", identity.cert_der.clone())];
        if let Some(fp) = kit::codec::unhex(&identity.fingerprint()) {
            marks.push(("certificate fingerprint", fp));
        }
        marks
    }

    fn peer_marks(&self, peer: &BareJid) -> crate::IdentityMarks {
        // The certificate each tunnel's handshake presented (sent encrypted under the
        // handshake keys, which both ends hold).
        let sessions = self.sessions.iter().filter(|(d, _)| d.to_bare() == *peer);
        let certs = sessions.filter_map(|(_, s)| s.tunnel.as_ref()?.peer_certificate());
        certs.map(|der| ("certificate", der)).collect()
    }

    fn ceremony(&self, peer: &BareJid) -> Option<crate::Ceremony> {
        // The users compare the certificate fingerprint and, per tunnel, its SAS (`verify`).
        let fingerprint = self.fingerprint()?;
        let sas = self.sessions.iter().filter(|(d, _)| d.to_bare() == *peer).find_map(|(_, s)| s.sas.clone());
        Some(crate::Ceremony::Compare(match sas {
            Some(sas) => format!("{fingerprint} {sas}"),
            None => fingerprint,
        }))
    }

    fn out_of_band(&self) -> OutOfBand {
        let mut says: Vec<String> = self.fingerprint().into_iter().collect();
        says.extend(
            self.sessions
                .iter()
                .filter_map(|(peer, s)| s.sas.as_ref().map(|sas| format!("sas {peer}: {sas}"))),
        );
        OutOfBand { peer_says: says }
    }

    fn steal(&self, what: Theft) -> Box<dyn Engine> {
        // The certificate key, the certificates seen and their trust are long-term; the tunnels
        // (their ephemeral X25519 secrets and traffic keys) are not.
        kit::stolen(self.clone(), what, |copy| {
            copy.sessions.clear();
            copy.pending.clear();
            copy.left = Output::default();
        })
    }
}
