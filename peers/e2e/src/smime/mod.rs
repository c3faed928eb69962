//! S/MIME over XMPP, RFC 3923: the engine `smime`.
//!
//! - [`cpim`]: the `Message/CPIM` object (RFC 3862) that carries the stanza (§3.1 step 2);
//! - [`pidf`]: the `application/pidf+xml` object (RFC 3863) that carries directed presence (§4.1);
//! - [`envelope`]: CMS SignedData inside EnvelopedData (§6.5), algorithms of §6.10;
//! - [`pki`]: the scenario CA, device certificates with `id-on-xmppAddr`, the checks.
//!
//! Sending (§3.1): the `<message/>` XML is wrapped in CPIM with From, To and DateTime
//! (§6.9: UTC, fractions of a second, strictly increasing per sender), signed, then
//! enveloped to every certificate we hold for the recipient and to our own certificates (ours
//! and our other devices', so they and sent carbons can read it), and sent as the base64 text
//! of `<e2e xmlns='urn:ietf:params:xml:ns:xmpp-e2e'/>` in a `<message type='chat'/>` to the
//! bare JID.
//!
//! Receiving, in this order: decrypt (EnvelopedData) → verify the signature (SignedData) →
//! check the signer's certificate (issued by the scenario CA, valid at `cx.now`, xmppAddr equal
//! to the stanza's sender) → check CPIM (From is the sender; To is us, or the sender is our
//! own account: a sent carbon) → the body, with the trust the policy gives the certificate,
//! marked when its DateTime fails a §6.9 check (see "Timestamps" below). §7: a message that
//! cannot be decrypted is answered with a `<bad-request/>` stanza error, one whose signature,
//! certificate or CPIM From/To fail with `<not-acceptable/>` (both `type='modify'`, returned from
//! [`Engine::drain`] after the failed `receive`). The error carries no part of the original,
//! but which of the two it is tells the decryption step's outcome: see "What the §7 replies
//! reveal" below. Only messages of type `chat` or `normal` (or no type, or a type we do not
//! know: RFC 6121 §5.2.2 reads those as `normal`) are processed; `<e2e/>` in `groupchat` or
//! `headline` messages is ignored without an answer (RFC 3923 secures one-to-one stanzas, and
//! an answer to a room or a broadcast would go to whoever the `from` names).
//!
//! # Presence and iq (§4, §5)
//!
//! RFC 3923 secures "presence information that is directed to a specific user, and [...] any
//! arbitrary XMPP stanza directed to a specific user" (§1) — the whole content of every stanza
//! kind (XEP-0210 §4.1):
//!
//! - Directed presence, §4.1: "Generate an "application/pidf+xml" object as defined in
//!   [PIDF]", sign it, envelope it, and send it in an `<e2e/>` child of a `<presence/>` that
//!   "MUST include a 'to' attribute". The PIDF document ([`pidf`]) holds the status as its
//!   `<note/>` and the `<timestamp/>` of §6.9; it is signed as it is (no CPIM around it: §4.1
//!   names none). The receiver decrypts, verifies and checks the certificate as for a message,
//!   requires the PIDF `entity` to be the stanza's sender (`pidf-entity-mismatch`), runs §6.9's
//!   two checks on the `<timestamp/>` — against the same per-certificate newest DateTime as
//!   messages: §6.9 asks for a timestamp "greater than any timestamp received", and the sender
//!   stamps every object from one increasing clock — and reports the notes as the presence's
//!   `<status/>` ([`Event::Parts`]). A PIDF document names no recipient: whoever can open a
//!   secured presence can re-envelope it, signature intact, to anyone (surreptitious
//!   forwarding) — RFC 3923's format, measured as it is.
//! - An iq, §5 ("Securing Arbitrary XMPP Data"): the `<iq type='set'/>` with its payload as
//!   `application/xmpp+xml` inside a CPIM object, exactly as a message (§5: "Because [MSGFMT]
//!   specifies the ability to encapsulate any MIME type, the approach taken in this memo is to
//!   include arbitrary XMPP data in an XML media type named "application/xmpp+xml""), so the
//!   CPIM From, To and DateTime checks apply. The `<e2e/>` is the one child of an
//!   `<iq type='set'/>` to the device (§5's closing sentence names a `<presence/>` as the
//!   carrier even there; §9 has `<e2e/>` wrap any of the three objects, and an iq's semantics
//!   need an `<iq/>`). The receiver answers a secured iq it read with an empty result (RFC 6120
//!   §8.2.3), one it could not with §7's error as an `<iq type='error'/>`, and reports the
//!   payload as the iq's part. The secured stanza must be of the kind that carried it — a
//!   signed iq re-enveloped into a `<message/>` is `malformed`, and the reverse.
//!
//! Presence and iq wait for the recipient's certificates as messages do. A presence that
//! fails is refused without a §7 answer (§7's SHOULDs): the client hands presence to the
//! engine without collecting answers afterwards, and the answer would be one more instance of
//! the oracle described below.
//!
//! # Timestamps (§6.9), delayed delivery and replay
//!
//! RFC 3923 §6.9, "Inclusion and Checking of Timestamps":
//!
//! > Timestamps are included in "Message/CPIM" and "application/pidf+xml" objects to help
//! > prevent replay attacks. [...] The following rules apply to the receiving application:
//! >
//! > o  It MUST verify that the timestamp received is within five minutes of the current time.
//! >
//! > o  It SHOULD verify that the timestamp received is greater than any timestamp received
//! >    in the last 10 minutes which passed the previous check.
//! >
//! > o  If any of the foregoing checks fails, the timestamp SHOULD be presented to the
//! >    receiving entity (human or application) marked as "old timestamp", "future
//! >    timestamp", or "decreasing timestamp", and the receiving entity MAY return a stanza
//! >    error to the sender as described under Recipient Error Handling (Section 7).
//!
//! and §7 calls such a message "Case #3": decrypted, signature verified, timestamps failing.
//! So both checks run on the signed DateTime of a verified message, and a failure does not
//! refuse it: the message is shown, preceded by the alert `timestamp-too-old` ("old
//! timestamp"), `timestamp-in-future` ("future timestamp") or `timestamp-decreasing`
//! ("decreasing timestamp"). No §7 error is returned for Case #3 (the RFC's MAY): the message
//! was shown, and a `<not-acceptable/>` would tell its sender the opposite — or tell a sender
//! who never sent it twice that a replayed copy arrived.
//!
//! The second check compares with the newest DateTime that passed the first, per signing
//! certificate (the sending agent: an authenticated name the path cannot relabel, and one
//! clock, so a sender's other devices never trip it). Keeping that one value instead of the
//! last ten minutes' is the same check: a DateTime that passes the first check now is later
//! than any that passed it more than ten minutes ago (both lie within five minutes of their
//! arrival). Together the checks catch every replay of a message already received: within
//! ten minutes of the original as "decreasing", later as "old" — where the RFC wants them
//! caught, and as it wants them shown.
//!
//! A message held in offline storage (XEP-0160) longer than five minutes fails the first check
//! too: it is an "old timestamp" by the RFC's rule, shown and marked. Our server's XEP-0203
//! `<delay/>` says when it stored the message, and the alert repeats what it says — but only as
//! the server's claim: the same server that stamps offline messages can stamp a replay, and
//! XEP-0203 §5 warns that "a recipient SHOULD NOT rely on delayed delivery notations to provide
//! a completely accurate representation of the delivery path or timing of a stanza". So the
//! stamp explains, and never decides: it does not widen the window, stand in for the DateTime,
//! or exempt a message from the second check.
//!
//! # What the §7 replies reveal
//!
//! The two answers are a padding oracle on AES-CBC (Vaudenay, "Security Flaws Induced by CBC
//! Padding", EUROCRYPT 2002). Decryption ends with the PKCS #7 padding check: bad padding is a
//! decryption failure (`bad-padding`, `<bad-request/>`); a ciphertext whose padding happens to
//! be valid decrypts to garbage that fails the signature (`malformed`/`bad-signature`,
//! `<not-acceptable/>`). CBC is malleable, so whoever can replay a recorded `<e2e/>` with a
//! changed IV or ciphertext block to the recipient, under the original sender's address, and
//! see the answer (the answer goes to that address: the sender's server, the recipient's
//! server, anyone on a hop that is not encrypted) learns one bit per query — was the padding
//! valid — and with at most 256 queries per byte decrypts the whole SignedData, CPIM object
//! and body included, without any key. The scenario `scenarios/attacks/smime-cbc-malleability.yaml`
//! shows the two answers to two modified copies. The signature stops a modified message from
//! being *shown*, not from being *measured*. We keep RFC 3923's distinct answers — the bench
//! measures the protocol as specified; changing them would be measuring another protocol.
//!
//! Before the content, the content key is unwrapped with RSA PKCS #1 v1.5 (RFC 3370 §4.2.1).
//! RFC 3218 §2.3 advises that on an RSA failure the receiver go on with a random content key,
//! so that the failure looks like a later one (Bleichenbacher's million-message attack,
//! CRYPTO 1998). This engine does not: with RFC 3923 §7's two answers, the step after the
//! random key — the CBC padding check — still answers `<bad-request/>` or `<not-acceptable/>`
//! depending on the padding, so the mitigation would only move the oracle to the padding step,
//! where it is anyway. As it is, an RSA failure is `decryption-failed` and answered
//! `<bad-request/>`, like bad padding; a wrapped key that is PKCS #1 conformant but wrong
//! yields a random key, whose padding is valid about once in 256, answered
//! `<not-acceptable/>` — a weak Bleichenbacher oracle. Only one answer for every failure (or
//! none), or an authenticated content cipher (AuthEnvelopedData, RFC 5083), would close
//! these; both depart from RFC 3923.
//!
//! Interpretations where RFC 3923 is silent or cannot be followed literally (also in the
//! bench's README notes):
//! - §6.4 says the transfer encoding is "binary", but binary cannot be XML character data:
//!   the `<e2e/>` text is the base64 of the DER ContentInfo (EnvelopedData). The inner layers
//!   are bare CMS (id-data holding the SignedData DER, id-data holding the CPIM object), not
//!   MIME entities with `application/pkcs7-mime` headers: the CMS content types say the same.
//! - Certificate discovery is out of band in RFC 3923 (§6.2 leaves retrieval open; §6.6 lets
//!   certificates ride in the SignedData, which we do and learn from). The bench publishes each
//!   device's certificate to the PEP node [`NODE`] (item id = SHA-256 fingerprint of the DER,
//!   payload `<certificate xmlns='urn:xmpp:jabberwock:smime:certs:0'>base64 DER</certificate>`),
//!   fetched the first time we send to an account.
//! - Trust: a certificate that chains to the scenario CA is `Unverified` until the user
//!   compares fingerprints ([`Engine::verify`]); policies as in the OMEMO engine (BTBV: new
//!   certificates of a verified contact are untrusted; manual: only verified ones). Untrusted
//!   certificates are not encrypted to; a message signed by one is shown with an alert.
//! - An engine without a scenario CA (`EngineConfig::ca == None`, the attacker's impostor)
//!   makes its own CA and accepts any certificate, any CPIM header and any time; a stolen copy
//!   ([`Engine::steal`]) ignores the DateTime window and certificate validity periods (the
//!   thief reads old traffic whenever it likes) but still checks chain and names.

pub mod cpim;
pub mod envelope;
pub mod pidf;
pub mod pki;
mod seam;

use core::fmt;
use core::time::Duration;
use std::collections::BTreeMap;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use rand_core::RngCore;
use rsa::RsaPrivateKey;

use self::pki::{Ca, Cert};
use crate::kit;
use crate::kit::codec::{b64, unb64_wrapped as unb64};
use crate::kit::directory::{self, Directory, Failure, Forwarding, Keyed, NotSent, Pep, Placement, Sealed};
use crate::kit::trust::{Known, TrustBook, TrustState, Wording};
use crate::time::{format_stamp, parse_stamp};
use crate::xml::{ElementExt, NS_CLIENT, NS_DELAY, NS_STANZAS, el, sender, text_el};
use crate::{
    Action, Content, Cx, E2eError, Engine, EngineConfig, Event, OutOfBand, Output, Protocol, Theft, Trust,
};

/// The registry entry.
pub static PROTOCOL: crate::ProtocolDef =
    crate::ProtocolDef::new("smime", module_path!(), build, &seam::WIRE, include_str!("reasons.txt"));

/// Builds its engine for a device.
fn build(me: &FullJid, rng: &mut dyn RngCore, config: &EngineConfig) -> Box<dyn Engine> {
    Box::new(Smime::new(me.clone(), rng, config))
}

/// `urn:ietf:params:xml:ns:xmpp-e2e` (RFC 3923 §9).
pub const NS_E2E: &str = "urn:ietf:params:xml:ns:xmpp-e2e";
/// The PEP node (and payload namespace) where devices publish their certificates (ours: RFC
/// 3923 leaves discovery out of band).
pub const NODE: &str = "urn:xmpp:jabberwock:smime:certs:0";
/// §6.9: "within five minutes of the current time".
pub const TIMESTAMP_WINDOW: Duration = Duration::from_secs(300);
/// RSA modulus size of device keys.
const RSA_BITS: usize = 2048;

/// Who runs the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// An enrolled device: checks everything.
    Honest,
    /// The attacker's own engine: its own CA, believes every certificate and header.
    Impostor,
    /// A copy stolen from a device: honest checks but no replay window.
    Stolen,
}

/// How the certificate alerts read. A certificate is held by its fingerprint, so none can change
/// under the same name (`identity-changed` does not arise).
static WORDING: Wording = Wording {
    changed: |owner, serial| format!("certificate {serial} of {owner} changed"),
    mismatch: |owner, _, fingerprint| format!("certificate {fingerprint} of {owner} is not what the peer shows"),
    unseen: "certificate",
};

/// One device's S/MIME state.
#[derive(Clone)]
pub struct Smime {
    me: FullJid,
    mode: Mode,
    ca: Ca,
    key: RsaPrivateKey,
    serial: [u8; 16],
    /// Issued on the first call that knows the time.
    cert: Option<Cert>,
    /// Certificates per account (ours included: our other devices), by fingerprint; the
    /// `TrustChanged` device is the serial number.
    trust: TrustBook<String, Cert>,
    /// The certificate nodes asked for and read, the messages waiting for them.
    dir: Directory,
    last_stamp: Option<Duration>,
    /// §6.9's second check: per signing certificate (fingerprint), the newest CPIM DateTime
    /// that passed the first check (module docs, "Timestamps"). Only certificates the CA
    /// issued and whose signature verified get an entry.
    newest: BTreeMap<String, Duration>,
    /// §7 error stanzas waiting for [`Engine::drain`].
    outbox: Vec<Element>,
    /// Directed presence and iq payloads the user sent, waiting for their recipient's
    /// certificates (messages wait in [`Directory`]).
    waiting: Vec<Waiting>,
}

/// A presence or iq to seal once its recipient's certificate node is read (§4.1, §5).
type Waiting = crate::content::Directed;

/// What an `<e2e/>` object held once decrypted and its signature and certificate checked.
struct Opened {
    signer: Cert,
    content: Vec<u8>,
}

impl fmt::Debug for Smime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smime")
            .field("me", &self.me)
            .field("mode", &self.mode)
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

fn rejected(reason: &'static str, detail: impl Into<String>) -> E2eError {
    E2eError::Rejected { reason, detail: detail.into() }
}

/// The §7 condition for a failure: decryption → `bad-request`, the rest → `not-acceptable`.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Decrypt,
    Verify,
}

/// The outcome of §6.9's checks on a verified message's DateTime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// Within five minutes of now, and newer than any before from its signer.
    Fresh,
    /// More than five minutes before now: "old timestamp".
    Old,
    /// More than five minutes after now: "future timestamp".
    Future,
    /// Not after this DateTime, already received from the same signer: "decreasing timestamp".
    Decreasing(Duration),
}

impl Smime {
    /// A new device. Honest devices (`config.ca` set) derive the scenario CA from its seed;
    /// the attacker's engines make their own CA from `rng`. The RSA-2048 key comes from `rng`
    /// now; the certificate is issued on the first call that carries the simulated time.
    pub fn new(me: FullJid, rng: &mut dyn RngCore, config: &EngineConfig) -> Smime {
        let (mode, seed) = match config.ca {
            Some(seed) => (Mode::Honest, seed),
            None => {
                let mut seed = [0u8; 32];
                rng.fill_bytes(&mut seed);
                (Mode::Impostor, seed)
            }
        };
        let mut serial = [0u8; 16];
        rng.fill_bytes(&mut serial);
        // A positive INTEGER with no leading zero octet (RFC 5280 §4.1.2.2).
        serial[0] = (serial[0] & 0x7f) | 0x01;
        let key = Self::generate_key(rng);
        // Deriving the CA cannot fail on our own constants; should it, the device holds a CA
        // of its own (and nobody will believe its certificate), which tests would show.
        let ca = Ca::from_seed(&seed).or_else(|_| Ca::from_seed(&[0u8; 32]));
        #[allow(clippy::expect_used)]
        let ca = ca.expect("CA derivation from fixed inputs");
        Smime {
            me,
            mode,
            ca,
            key,
            serial,
            cert: None,
            trust: TrustBook::new(config.trust, &WORDING),
            dir: Directory::default(),
            last_stamp: None,
            newest: BTreeMap::new(),
            outbox: Vec::new(),
            waiting: Vec::new(),
        }
    }

    fn generate_key(rng: &mut dyn RngCore) -> RsaPrivateKey {
        loop {
            // Generation only fails on an RNG that never yields a prime; ours is ChaCha20.
            if let Ok(k) = crate::rsa_keygen::generate(&mut *rng, RSA_BITS) {
                return k;
            }
        }
    }

    fn own(&self) -> BareJid {
        self.me.to_bare()
    }

    /// Issues our certificate from the CA at the first call that knows the time.
    fn enrol(&mut self, cx: &Cx<'_>) -> Result<Cert, E2eError> {
        if let Some(c) = &self.cert {
            return Ok(c.clone());
        }
        let cert = self.ca.issue(&self.own(), &self.key.to_public_key(), &self.serial, cx.now)?;
        self.cert = Some(cert.clone());
        Ok(cert)
    }

    // ---- accessors for harnesses ------------------------------------------------------------

    /// Our certificate, once issued (after the first call with a [`Cx`]).
    pub fn certificate(&self) -> Option<&Cert> {
        self.cert.as_ref()
    }

    /// Issues our certificate now if it is not yet (for harnesses that export it first).
    pub fn enrol_now(&mut self, cx: &mut Cx<'_>) -> Result<&Cert, E2eError> {
        self.enrol(cx)?;
        self.cert.as_ref().ok_or(E2eError::Missing { what: "certificate" })
    }

    /// The CA certificate this engine trusts, PEM.
    pub fn ca_certificate_pem(&self) -> String {
        self.ca.cert.pem()
    }

    /// The CA's private key, PKCS#8 PEM (test harnesses issue certificates with OpenSSL).
    pub fn ca_key_pem(&self) -> String {
        self.ca.key_pem()
    }

    /// Our RSA private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> Result<String, E2eError> {
        pki::rsa_key_pem(&self.key)
    }

    /// Adds a peer's certificate (DER) learned out of band, after the same checks as one
    /// fetched from PEP; returns the trust events.
    pub fn import_certificate(&mut self, cx: &mut Cx<'_>, der: &[u8]) -> Result<Output, E2eError> {
        let cert = Cert::from_der(der)?;
        let owner = cert
            .xmpp_addrs()?
            .into_iter()
            .next()
            .ok_or_else(|| rejected("certificate-mismatch", "no xmppAddr in the certificate"))?;
        let mut out = Output::default();
        self.check_certificate(cx, &cert, &owner)?;
        self.observe(&owner, cert, &mut out);
        Ok(out)
    }

    // ---- certificates and trust -------------------------------------------------------------

    /// The recipient's checks on a certificate presented for `owner`.
    fn check_certificate(&self, cx: &Cx<'_>, cert: &Cert, owner: &BareJid) -> Result<(), E2eError> {
        if self.mode == Mode::Impostor {
            return Ok(());
        }
        if !self.ca.issued(cert) {
            return Err(rejected(
                "untrusted-certificate",
                format!("certificate {} is not issued by our CA", cert.fingerprint),
            ));
        }
        let (not_before, not_after) = cert.validity();
        // A thief reads old traffic whenever it likes: only the honest device checks time.
        if self.mode == Mode::Honest {
            if cx.now < not_before {
                return Err(rejected(
                    "certificate-not-yet-valid",
                    format!("valid from {}", format_stamp(not_before)),
                ));
            }
            if cx.now > not_after {
                return Err(rejected("certificate-expired", format!("expired {}", format_stamp(not_after))));
            }
        }
        let addrs = cert.xmpp_addrs()?;
        if !addrs.contains(owner) {
            return Err(rejected(
                "certificate-mismatch",
                format!("certificate names {addrs:?}, the stanza comes from {owner}"),
            ));
        }
        Ok(())
    }

    /// Records a (checked) certificate for `owner`; returns its trust (our own is ours).
    fn observe(&mut self, owner: &BareJid, cert: Cert, out: &mut Output) -> TrustState {
        if self.cert.as_ref().is_some_and(|c| c.fingerprint == cert.fingerprint) {
            return TrustState::Verified;
        }
        let (serial, fingerprint) = (cert.serial_hex(), cert.fingerprint.clone());
        self.trust.observe(owner, fingerprint.clone(), Known::new(cert, serial, fingerprint), out)
    }

    /// The certificates held for `owner` that `keep` selects.
    fn certificates(&self, owner: &BareJid, keep: impl Fn(&Known<Cert>) -> bool) -> Vec<Cert> {
        self.trust.of(owner).map(|(_, k)| k).filter(|k| keep(k)).map(|k| k.key.clone()).collect()
    }

    fn publish_action(cert: &Cert) -> Action {
        Action::Publish {
            node: NODE.into(),
            id: cert.fingerprint.clone(),
            item: text_el("certificate", NODE, b64(&cert.der)),
            options: vec![
                ("pubsub#max_items".into(), "max".into()),
                ("pubsub#access_model".into(), "open".into()),
            ],
        }
    }

    // ---- sending ----------------------------------------------------------------------------

    /// §6.9: timestamps increase strictly (by a millisecond when the clock has not moved).
    fn next_stamp(&mut self, now: Duration) -> Duration {
        let now = Duration::from_millis(u64::try_from(now.as_millis()).unwrap_or(u64::MAX));
        let stamp = match self.last_stamp {
            Some(last) if now <= last => last + Duration::from_millis(1),
            _ => now,
        };
        self.last_stamp = Some(stamp);
        stamp
    }

    // ---- receiving --------------------------------------------------------------------------

    /// RFC 3923 §6.9's two checks on the DateTime `sent` of a message `signer` signed (module
    /// docs, "Timestamps"). The first: "within five minutes of the current time" (MUST). The
    /// second: "greater than any timestamp received in the last 10 minutes which passed the
    /// previous check" (SHOULD), against the newest DateTime of that signer that passed the
    /// first check, which a DateTime passing the first check here becomes (if newer).
    fn check_timestamp(&mut self, signer: &str, sent: Duration, now: Duration) -> Freshness {
        if sent.saturating_add(TIMESTAMP_WINDOW) < now {
            return Freshness::Old;
        }
        if sent > now.saturating_add(TIMESTAMP_WINDOW) {
            return Freshness::Future;
        }
        match self.newest.get(signer) {
            Some(&newest) if sent <= newest => Freshness::Decreasing(newest),
            _ => {
                self.newest.insert(signer.to_owned(), sent);
                Freshness::Fresh
            }
        }
    }

    /// The §6.9 marking of a message whose DateTime failed a check: "old timestamp", "future
    /// timestamp" or "decreasing timestamp". An old one repeats what our server's XEP-0203
    /// `<delay/>` claims, as its claim (it decides nothing: module docs, "Timestamps").
    fn timestamp_alert(&self, freshness: Freshness, stanza: &Element, date_time: &str, now: Duration) -> Option<Event> {
        let now = format_stamp(now);
        match freshness {
            Freshness::Fresh => None,
            Freshness::Old => {
                let server = self.me.domain().as_str();
                let stamp = stanza
                    .children()
                    .find(|d| d.is("delay", NS_DELAY) && d.attr("from") == Some(server))
                    .and_then(|d| d.attr("stamp"));
                let held = match stamp {
                    Some(stamp) => format!(
                        "{server} says it stored the message offline at {stamp} (its claim, not authenticated)"
                    ),
                    None => "no delay stamp from our server: a replay, or a message held on the way".to_owned(),
                };
                Some(Event::Alert {
                    reason: "timestamp-too-old",
                    detail: format!("old timestamp (RFC 3923 §6.9): sent {date_time}, now {now}; {held}"),
                })
            }
            Freshness::Future => Some(Event::Alert {
                reason: "timestamp-in-future",
                detail: format!("future timestamp (RFC 3923 §6.9): sent {date_time}, now {now}"),
            }),
            Freshness::Decreasing(newest) => Some(Event::Alert {
                reason: "timestamp-decreasing",
                detail: format!(
                    "decreasing timestamp (RFC 3923 §6.9): sent {date_time}, not after {} already received from the same certificate",
                    format_stamp(newest)
                ),
            }),
        }
    }

    /// The §7 answer to a stanza we could not decrypt or verify: an error of the same stanza
    /// kind (for an iq, also RFC 6120 §8.2.3's answer every request gets).
    fn error_stanza(stanza: &Element, from: &Jid, stage: Stage) -> Element {
        let condition = match stage {
            Stage::Decrypt => "bad-request",
            Stage::Verify => "not-acceptable",
        };
        let kind = if stanza.name() == "iq" { "iq" } else { "message" };
        let mut m = el(kind, NS_CLIENT).with("to", from.to_string()).with("type", "error");
        if let Some(id) = stanza.attr("id") {
            m.set("id", id);
        }
        m.child(el("error", NS_CLIENT).with("type", "modify").child(el(condition, NS_STANZAS)))
    }

    /// Receiving's first three steps for any stanza (module docs): decrypt the EnvelopedData,
    /// verify the SignedData, check the signer's certificate. The signed content is returned
    /// for the stanza kind's own checks.
    fn open_e2e(&mut self, cx: &mut Cx<'_>, sender: &BareJid, e2e: &Element) -> Result<Opened, (Stage, E2eError)> {
        let mine = self.enrol(cx).map_err(|e| (Stage::Decrypt, e))?;
        // Decrypt.
        let der = unb64("e2e", &e2e.text()).map_err(|e| (Stage::Decrypt, e))?;
        let (_content_type, inner) =
            envelope::open(&der, &mine, &self.key, cx.rng).map_err(|e| (Stage::Decrypt, e))?;
        // Verify the signature (the signer's certificate from the SignedData or our store).
        let v = |e| (Stage::Verify, e);
        let known = self.certificates(sender, |_| true);
        let signed = envelope::verify(&inner, &known).map_err(v)?;
        // Check the certificate.
        self.check_certificate(cx, &signed.signer, sender).map_err(v)?;
        Ok(Opened { signer: signed.signer, content: signed.content })
    }

    /// What follows a verified object's own checks, for every stanza kind: §6.9's checks on
    /// its timestamp `date_time` (module docs, "Timestamps": a failure is shown, marked — §7's
    /// Case #3, never refused; a thief and the impostor skip them), then the trust the policy
    /// gives the signer's certificate.
    fn admit(
        &mut self,
        cx: &Cx<'_>,
        stanza: &Element,
        sender: &BareJid,
        signer: Cert,
        date_time: &str,
        out: &mut Output,
    ) -> Result<Trust, E2eError> {
        let sent = parse_stamp(date_time.trim())
            .ok_or_else(|| E2eError::Malformed { what: "timestamp", detail: date_time.to_owned() })?;
        if self.mode == Mode::Honest {
            let freshness = self.check_timestamp(&signer.fingerprint, sent, cx.now);
            if let Some(alert) = self.timestamp_alert(freshness, stanza, date_time, cx.now) {
                out.events.push(alert);
            }
        }
        let trust = self.observe(sender, signer, out).trust();
        if trust == Trust::Untrusted {
            out.events.push(Event::Alert {
                reason: "untrusted-key",
                detail: format!("{sender} signed with a certificate the user does not trust"),
            });
        }
        Ok(trust)
    }

    /// A `<message/>` or `<iq/>` (§3.1, §5): the CPIM object around the `application/xmpp+xml`
    /// stanza; its From must be the sender, its To us (or the sender our own account: a sent
    /// carbon), and the secured stanza of the same kind as the one that carried it (a signed
    /// iq shown as a message, or the reverse, would say what its sender never said).
    fn receive_e2e(
        &mut self,
        cx: &mut Cx<'_>,
        from: &Jid,
        stanza: &Element,
        e2e: &Element,
        out: &mut Output,
    ) -> Result<(), (Stage, E2eError)> {
        let sender = from.to_bare();
        let opened = self.open_e2e(cx, &sender, e2e)?;
        let v = |e| (Stage::Verify, e);
        // Check CPIM.
        let text = String::from_utf8(opened.content)
            .map_err(|e| v(E2eError::Malformed { what: "cpim", detail: e.to_string() }))?;
        let object = cpim::parse(&text).map_err(v)?;
        if self.mode != Mode::Impostor {
            if object.from != sender {
                return Err(v(rejected(
                    "cpim-from-mismatch",
                    format!("CPIM From {}, stanza from {sender}", object.from),
                )));
            }
            let own = self.own();
            if sender != own && !object.to.contains(&own) {
                return Err(v(rejected(
                    "cpim-to-mismatch",
                    format!("CPIM To {:?}, we are {own}", object.to),
                )));
            }
        }
        parse_stamp(&object.date_time).ok_or_else(|| {
            v(E2eError::Malformed { what: "CPIM DateTime", detail: object.date_time.clone() })
        })?;
        let xml = parse_xmpp_xml(&object.xml).map_err(v)?;
        if xml.name() != stanza.name() || !(xml.ns() == NS_CLIENT || xml.ns().is_empty()) {
            return Err(v(E2eError::Malformed {
                what: "xmpp+xml",
                detail: format!("a secured <{}/> in a <{}/>", xml.name(), stanza.name()),
            }));
        }
        let trust = self.admit(cx, stanza, &sender, opened.signer, &object.date_time, out).map_err(v)?;
        if xml.name() == "iq" {
            // §5: the iq's payload, reported as a part; RFC 6120 §8.2.3: answered.
            let parts: Vec<Element> = xml.children().cloned().collect();
            out.events.push(Event::Parts { from: from.clone(), stanza: "iq", parts });
            let mut result = el("iq", NS_CLIENT).with("type", "result").with("to", from.to_string());
            if let Some(id) = stanza.attr("id") {
                result.set("id", id);
            }
            out.actions.push(Action::Send(result));
            return Ok(());
        }
        let body = xml
            .children()
            .find(|c| c.name() == "body" && (c.ns() == NS_CLIENT || c.ns().is_empty()))
            .map(Element::text)
            .unwrap_or_default();
        out.events.push(Event::Plaintext { from: from.clone(), body, trust, delay: None, carbon: None });
        // The secured stanza's other children: the message's other parts, shown as if they
        // had come in clear.
        let parts = crate::content::decrypted_parts(&xml);
        if !parts.is_empty() {
            out.events.push(Event::Parts { from: from.clone(), stanza: "message", parts });
        }
        Ok(())
    }

    /// Directed presence (§4): the PIDF document, whose `entity` must be the sender; its
    /// `<timestamp/>` gets §6.9's checks, its notes are the presence's `<status/>`.
    fn receive_presence_e2e(
        &mut self,
        cx: &mut Cx<'_>,
        from: &Jid,
        stanza: &Element,
        e2e: &Element,
        out: &mut Output,
    ) -> Result<(), E2eError> {
        let sender = from.to_bare();
        let opened = self.open_e2e(cx, &sender, e2e).map_err(|(_, e)| e)?;
        let text = String::from_utf8(opened.content)
            .map_err(|e| E2eError::Malformed { what: "pidf", detail: e.to_string() })?;
        let document = pidf::parse(&text)?;
        if self.mode != Mode::Impostor && document.entity != sender {
            return Err(rejected(
                "pidf-entity-mismatch",
                format!("PIDF entity {}, stanza from {sender}", document.entity),
            ));
        }
        self.admit(cx, stanza, &sender, opened.signer, &document.timestamp, out)?;
        let parts: Vec<Element> = document.notes.iter().map(|n| text_el("status", NS_CLIENT, n.as_str())).collect();
        if !parts.is_empty() {
            out.events.push(Event::Parts { from: from.clone(), stanza: "presence", parts });
        }
        Ok(())
    }

    // ---- presence and iq: sending -----------------------------------------------------------

    /// The certificates a stanza to `to` is enveloped to — ours first, then `to`'s usable
    /// ones, then our other devices' — with our own; `None` while `to`'s node is being read.
    fn recipients(&mut self, cx: &Cx<'_>, to: &BareJid, out: &mut Output) -> Result<Option<(Cert, Vec<Cert>)>, NotSent> {
        if !self.dir.read_or_fetch(to, NODE, out) {
            return Ok(None);
        }
        let own = self.own();
        let mine = self.enrol(cx)?;
        let usable = |k: &Known<Cert>| k.state != TrustState::Untrusted;
        let mut theirs = self.certificates(to, usable);
        theirs.retain(|c| c.fingerprint != mine.fingerprint);
        if theirs.is_empty() && *to != own {
            return Err(E2eError::Policy { detail: format!("no trusted certificate of {to}") }.into());
        }
        let mut recipients: Vec<Cert> = vec![mine.clone()];
        for c in theirs.into_iter().chain(self.certificates(&own, usable)) {
            if !recipients.iter().any(|r| r.fingerprint == c.fingerprint) {
                recipients.push(c);
            }
        }
        Ok(Some((mine, recipients)))
    }

    /// Signs `object` and envelopes it to `recipients` (§6.5): the `<e2e/>` element.
    fn e2e_element(&self, cx: &mut Cx<'_>, mine: &Cert, recipients: &[Cert], object: &[u8]) -> Result<Element, E2eError> {
        let signed = envelope::sign(&self.key, mine, object, cx.now)?;
        let refs: Vec<&Cert> = recipients.iter().collect();
        let enveloped = envelope::envelope(&signed, &refs, cx.rng)?;
        Ok(text_el("e2e", NS_E2E, b64(&enveloped)))
    }

    /// A waiting presence or iq, sealed: §4.1 for presence (a PIDF document), §5 for an iq (a
    /// CPIM object around the `application/xmpp+xml` iq, as a message's).
    fn seal_waiting(&mut self, cx: &mut Cx<'_>, waiting: &Waiting, out: &mut Output) -> Sealed {
        let to = waiting.to();
        let Some((mine, recipients)) = self.recipients(cx, &to, out)? else { return Ok(None) };
        let own = self.own();
        let stamp = format_stamp(self.next_stamp(cx.now));
        match waiting {
            Waiting::Presence { to, status } => {
                let object = pidf::build(&own, status, &stamp);
                let e2e = self.e2e_element(cx, &mine, &recipients, object.as_bytes())?;
                // §4.1 step 3: "The <presence/> stanza MUST include a 'to' attribute".
                Ok(Some(el("presence", NS_CLIENT).with("to", to.to_string()).child(e2e)))
            }
            Waiting::Iq { to, payload } => {
                let inner = el("iq", NS_CLIENT)
                    .with("type", "set")
                    .with("from", self.me.to_string())
                    .with("to", to.to_string())
                    .child(payload.clone());
                let object = cpim::build(&own, &to.to_bare(), &stamp, &String::from(&inner));
                let e2e = self.e2e_element(cx, &mine, &recipients, object.as_bytes())?;
                Ok(Some(el("iq", NS_CLIENT).with("type", "set").with("to", to.to_string()).child(e2e)))
            }
        }
    }

    /// An iq the client handed us (§5): a secured request, read and answered — a result, or
    /// §7's error — or the answer to one of ours.
    fn iq(&mut self, cx: &mut Cx<'_>, stanza: &Element, out: &mut Output) -> Result<(), E2eError> {
        let from: Jid = sender(stanza)?;
        match stanza.attr("type") {
            Some("result") => Ok(()),
            Some("error") => {
                // Reported, never answered (RFC 6120 §8.3: no error about an error).
                let condition = stanza
                    .get_child("error", NS_CLIENT)
                    .and_then(|e| e.children().find(|c| c.ns() == NS_STANZAS))
                    .map(|c| c.name().to_owned())
                    .unwrap_or_else(|| "undefined-condition".into());
                out.events.push(Event::Alert {
                    reason: "peer-error",
                    detail: format!("{from} returned <{condition}/> for an iq"),
                });
                Ok(())
            }
            Some("set" | "get") => {
                let Some(e2e) = stanza.get_child("e2e", NS_E2E) else { return Ok(()) };
                self.receive_e2e(cx, &from, stanza, e2e, out).map_err(|(stage, e)| {
                    if self.mode == Mode::Honest {
                        self.outbox.push(Self::error_stanza(stanza, &from, stage));
                    }
                    e
                })
            }
            _ => Ok(()),
        }
    }

    /// Seals every waiting presence and iq whose recipient's certificates are known; the
    /// others wait on, or are given up (alert `not-sent`).
    fn flush_waiting(&mut self, cx: &mut Cx<'_>, out: &mut Output) {
        for waiting in core::mem::take(&mut self.waiting) {
            match self.seal_waiting(cx, &waiting, out) {
                Ok(Some(stanza)) => out.actions.push(Action::Send(stanza)),
                Ok(None) => self.waiting.push(waiting),
                Err(NotSent(why)) => out.events.push(Event::Alert {
                    reason: crate::reason::NOT_SENT.code,
                    detail: format!("to {}: {why}", waiting.to()),
                }),
            }
        }
    }
}

/// The encapsulated `application/xmpp+xml` (RFC 3923 §10): one stanza; a stanza without a
/// namespace declaration (as in RFC 3923's own examples) is read in `jabber:client`. §10's
/// `<xmpp/>` root ("MUST contain one and only one child element") is read too, as its child.
fn parse_xmpp_xml(xml: &str) -> Result<Element, E2eError> {
    let malformed = |e: minidom::Error| E2eError::Malformed { what: "xmpp+xml", detail: e.to_string() };
    if !crate::xml::nesting_within(xml, crate::xml::MAX_DEPTH) {
        return Err(E2eError::Malformed { what: "xmpp+xml", detail: "nested too deep".into() });
    }
    let t = xml.trim();
    let t = t.strip_prefix("<?xml").and_then(|r| r.split_once("?>")).map_or(t, |(_, r)| r.trim_start());
    let root = match t.parse::<Element>() {
        Ok(e) => e,
        Err(first) => {
            let name = ["message", "iq", "presence", "xmpp"].into_iter().find(|n| {
                t.strip_prefix('<').and_then(|r| r.strip_prefix(n)).is_some_and(|r| r.starts_with([' ', '>', '/', '\n', '\t', '\r']))
            });
            let Some(name) = name else { return Err(malformed(first)) };
            let rest = &t[1 + name.len()..];
            format!("<{name} xmlns='{NS_CLIENT}'{rest}").parse::<Element>().map_err(|_| malformed(first))?
        }
    };
    if root.name() != "xmpp" {
        return Ok(root);
    }
    let mut children = root.children();
    match (children.next(), children.next()) {
        (Some(only), None) => Ok(only.clone()),
        _ => Err(E2eError::Malformed { what: "xmpp+xml", detail: "<xmpp/> must hold one and only one stanza".into() }),
    }
}

impl Keyed for Smime {
    fn directory(&mut self) -> &mut Directory {
        &mut self.dir
    }

    fn failed(&mut self, cx: &mut Cx<'_>, failure: Failure<'_>, out: &mut Output) {
        if failure.node == NODE {
            let own = self.own();
            let alert = |owner: &BareJid, condition: &str| Event::Alert {
                reason: "no-certificate",
                detail: format!("certificates of {owner} could not be fetched ({condition})"),
            };
            directory::no_keys(self, cx, failure, &own, alert, out);
            self.flush_waiting(cx, out);
        }
    }

    /// Only a fetch result is the whole node, and only an `<iq type='result'/>` is one; a
    /// notification is believed in a `<message/>` only.
    fn placement(&self) -> Placement {
        Placement::Strict
    }

    /// Items of the certificate node, from a fetch result or a notification (which carries the
    /// item just published: the node must still be read before a first message).
    fn items(&mut self, cx: &mut Cx<'_>, pep: &Pep<'_>, out: &mut Output) -> Result<(), E2eError> {
        let (Some(NODE), Some(owner)) = (pep.node, pep.owner(&self.own())) else { return Ok(()) };
        let owner = &owner;
        if pep.complete {
            self.dir.answered(owner, NODE);
            self.dir.mark_read(owner, NODE);
        }
        for item in pep.each() {
            let Some(payload) = item.get_child("certificate", NODE) else { continue };
            let cert = unb64("certificate", &payload.text()).and_then(|der| Cert::from_der(&der));
            let checked = cert.and_then(|c| self.check_certificate(cx, &c, owner).map(|()| c));
            match checked {
                Ok(c) => {
                    self.observe(owner, c, out);
                }
                Err(e) => out.events.push(Event::Alert {
                    reason: e.code(),
                    detail: format!("certificate item {:?} of {owner}: {e}", item.attr("id")),
                }),
            }
        }
        directory::flush(self, cx, out);
        self.flush_waiting(cx, out);
        Ok(())
    }

    fn message(&mut self, cx: &mut Cx<'_>, stanza: &Element, out: &mut Output) -> Result<(), E2eError> {
        if stanza.name() == "iq" {
            return self.iq(cx, stanza, out);
        }
        if stanza.name() != "message" {
            return Ok(());
        }
        let from: Jid = sender(stanza)?;
        // RFC 6121 §5.2.2: a type we do not understand is `normal`. RFC 3923 secures one-to-one
        // messages: `<e2e/>` in a room's or a broadcast's message is ignored, never answered
        // (a §7 error would go to whoever the `from` names).
        if matches!(stanza.attr("type"), Some("groupchat" | "headline")) {
            return Ok(());
        }
        if stanza.attr("type") == Some("error") {
            // §7 errors from the peer: reported, never answered (no error loops).
            let condition = stanza
                .get_child("error", NS_CLIENT)
                .and_then(|e| e.children().find(|c| c.ns() == NS_STANZAS))
                .map(|c| c.name().to_owned())
                .unwrap_or_else(|| "undefined-condition".into());
            out.events.push(Event::Alert {
                reason: "peer-error",
                detail: format!("{from} returned <{condition}/> for a message"),
            });
            return Ok(());
        }
        if let Some(e2e) = stanza.get_child("e2e", NS_E2E) {
            match self.receive_e2e(cx, &from, stanza, e2e, out) {
                Ok(()) => return Ok(()),
                Err((stage, e)) => {
                    if self.mode == Mode::Honest {
                        self.outbox.push(Self::error_stanza(stanza, &from, stage));
                    }
                    return Err(e);
                }
            }
        }
        if let Some(body) = stanza.get_child("body", NS_CLIENT) {
            out.unencrypted(from, body, "without S/MIME");
        }
        Ok(())
    }

    /// §3.1: the message to `to`, once its certificate node was read.
    fn seal(&mut self, cx: &mut Cx<'_>, to: &BareJid, body: &str, out: &mut Output) -> Sealed {
        self.seal_content(cx, to, &Content::body(body), out)
    }

    /// §3.1: the message to `to` with its other parts (XEP-0210 §4.1): step 1 secures the
    /// whole `<message/>` stanza, every child of it.
    fn seal_content(&mut self, cx: &mut Cx<'_>, to: &BareJid, content: &Content, out: &mut Output) -> Sealed {
        let body = content.body.as_str();
        let Some((mine, recipients)) = self.recipients(cx, to, out)? else { return Ok(None) };
        let own = self.own();
        // §3.1 step 1: the stanza to secure.
        let mut inner = el("message", NS_CLIENT)
            .with("from", self.me.to_string())
            .with("to", to.to_string())
            .with("type", "chat")
            .child(text_el("body", NS_CLIENT, body));
        for p in &content.parts {
            inner.append_child(p.clone());
        }
        // Step 2: CPIM with From, To, DateTime (§6.9).
        let stamp = self.next_stamp(cx.now);
        let object = cpim::build(&own, to, &format_stamp(stamp), &String::from(&inner));
        // Steps 3-4: sign, then encrypt (§6.5).
        let e2e = self.e2e_element(cx, &mine, &recipients, object.as_bytes())?;
        Ok(Some(el("message", NS_CLIENT).with("to", to.to_string()).with("type", "chat").child(e2e)))
    }

    /// Surreptitious forwarding (Davis 2001, §2 "S/MIME"): RFC 3923's layers are
    /// sign-then-encrypt, and the EnvelopedData binds nothing about the signer, so whoever can
    /// open it can re-envelope the SignedData, byte for byte, to anyone. What stops it is the
    /// CPIM object inside the signature: its `To:` header names the account the sender wrote to
    /// (§3.1 step 2), which the honest recipient compares with itself (`cpim-to-mismatch`).
    /// `body` has no use here: CMS signs the whole CPIM object, there is nothing around it to
    /// rewrite. The policy checks of [`Engine::receive`] (certificate validity, DateTime
    /// window, trust) are skipped: the attacker forwards whatever it recorded.
    fn forwarding(&mut self, cx: &mut Cx<'_>, order: Forwarding<'_>) -> Result<Option<Output>, E2eError> {
        let Forwarding { recorded, to, .. } = order;
        let e2e = recorded.get_child("e2e", NS_E2E).ok_or(E2eError::Missing { what: "e2e" })?;
        let mine = self.enrol(cx)?;
        let der = unb64("e2e", &e2e.text())?;
        let (_content_type, signed) = envelope::open(&der, &mine, &self.key, cx.rng)?;
        // Only a SignedData is worth forwarding; it is left exactly as the sender made it.
        envelope::content_of(&signed, envelope::ID_SIGNED_DATA, "signed-data")?;
        // Key discovery, as `send` does: without `to`'s certificates there is nothing to
        // envelope to. No queue: the caller feeds the result to `receive` and calls again.
        if !self.dir.is_read(to, NODE) {
            let mut out = Output::default();
            self.dir.refetch(to, NODE, &mut out);
            return Ok(Some(out));
        }
        // Every certificate held for `to`, whatever the victim's trust in it: the attacker
        // wants the forgery read.
        let theirs = self.certificates(to, |k| k.key.fingerprint != mine.fingerprint);
        if theirs.is_empty() {
            return Err(E2eError::Policy { detail: format!("no certificate of {to} to forward to") });
        }
        let refs: Vec<&Cert> = theirs.iter().collect();
        let enveloped = envelope::envelope(&signed, &refs, cx.rng)?;
        let stanza = el("message", NS_CLIENT).with("to", to.to_string()).with("type", "chat").child(text_el(
            "e2e",
            NS_E2E,
            b64(&enveloped),
        ));
        Ok(Some(Output { actions: vec![Action::Send(stanza)], events: vec![] }))
    }
}

impl Engine for Smime {
    fn protocol(&self) -> Protocol {
        Protocol::of(&PROTOCOL)
    }

    fn publish(&mut self, cx: &mut Cx<'_>) -> Result<Output, E2eError> {
        let cert = self.enrol(cx)?;
        let mut out = Output { actions: vec![Self::publish_action(&cert)], events: vec![] };
        // Our other devices' certificates: messages we send are encrypted to them too.
        self.dir.refetch(&self.own(), NODE, &mut out);
        Ok(out)
    }

    fn send(&mut self, cx: &mut Cx<'_>, to: &BareJid, body: &str) -> Result<Output, E2eError> {
        self.enrol(cx)?;
        Ok(directory::send(self, cx, to, body))
    }

    /// RFC 3923 §3.1 secures the whole `<message/>`: its other parts travel inside with the
    /// body.
    fn send_message(&mut self, cx: &mut Cx<'_>, to: &BareJid, content: &Content) -> Result<Output, E2eError> {
        self.enrol(cx)?;
        Ok(directory::send_content(self, cx, to, content))
    }

    /// RFC 3923 §4.1: directed presence, its status in a signed and enveloped PIDF document;
    /// it waits for `to`'s certificates as a message does.
    fn send_presence(&mut self, cx: &mut Cx<'_>, to: &Jid, status: &str) -> Result<Output, E2eError> {
        self.enrol(cx)?;
        self.waiting.push(Waiting::Presence { to: to.clone(), status: status.to_owned() });
        let mut out = Output::default();
        self.flush_waiting(cx, &mut out);
        Ok(out)
    }

    /// RFC 3923 §5: the iq, whole, in a signed and enveloped CPIM object; it waits for `to`'s
    /// certificates as a message does.
    fn send_iq(&mut self, cx: &mut Cx<'_>, to: &FullJid, payload: &Element) -> Result<Output, E2eError> {
        self.enrol(cx)?;
        self.waiting.push(Waiting::Iq { to: to.clone(), payload: payload.clone() });
        let mut out = Output::default();
        self.flush_waiting(cx, &mut out);
        Ok(out)
    }

    /// §5: a secured iq carries one `<e2e/>`; the client hands it (and the answers to ours)
    /// to [`Engine::receive`].
    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[NS_E2E]
    }

    /// §4: directed presence carrying `<e2e/>`. A failure is refused (the error returned);
    /// no §7 answer goes back (module docs, "Presence and iq").
    fn receive_presence(&mut self, cx: &mut Cx<'_>, stanza: &Element) -> Result<Output, E2eError> {
        let mut out = Output::default();
        let Some(e2e) = stanza.get_child("e2e", NS_E2E) else { return Ok(out) };
        if stanza.attr("type").is_some_and(|t| t != "available") {
            return Ok(out);
        }
        let from: Jid = sender(stanza)?;
        self.receive_presence_e2e(cx, &from, stanza, e2e, &mut out)?;
        Ok(out)
    }

    fn drain(&mut self, _cx: &mut Cx<'_>) -> Output {
        Output {
            actions: core::mem::take(&mut self.outbox).into_iter().map(Action::Send).collect(),
            events: vec![],
        }
    }

    fn keyed(&mut self) -> Option<&mut dyn Keyed> {
        Some(self)
    }

    fn verify(&mut self, _cx: &mut Cx<'_>, peer: &BareJid, oob: &OutOfBand) -> Result<Output, E2eError> {
        Ok(self.trust.verify(peer, |fp| oob.peer_says.iter().any(|s| s == fp), |_| true))
    }

    fn out_of_band(&self) -> OutOfBand {
        OutOfBand { peer_says: self.cert.iter().map(|c| c.fingerprint.clone()).collect() }
    }

    fn identity_marks(&self) -> crate::IdentityMarks {
        let mut marks = Vec::new();
        if let Some(c) = &self.cert {
            marks.push(("certificate", c.der.clone()));
            if let Some(fp) = kit::codec::unhex(&c.fingerprint) {
                marks.push(("certificate fingerprint", fp));
            }
        }
        marks
    }

    // `forge`: the default `Ok(None)` — every message is signed with the sender's private key:
    // the recipient cannot make one.

    fn steal(&self, what: Theft) -> Box<dyn Engine> {
        let mut copy = self.clone();
        if copy.mode == Mode::Honest {
            copy.mode = Mode::Stolen;
        }
        copy.outbox.clear();
        kit::stolen(copy, what, |copy| {
            copy.dir.wipe();
            copy.waiting.clear();
        })
    }
}

#[cfg(test)]
mod tests;
