//! The `xmlsec` engine: W3C XML Signature 1.1 (xmldsig-core1) and XML Encryption 1.1
//! (xmlenc-core1) applied to XMPP chat messages, directed presence and iq requests.
//!
//! No XEP defines this; the binding below is ours, and this text is its specification
//! (`urn:xmpp:jabberwock:xmlsec:0`). Where the W3C texts leave a choice, it is named here.
//!
//! # Keys and their discovery
//!
//! Every device has one RSA-2048 key pair, made once when the engine is built. Its
//! **fingerprint** is the SHA-256 of the DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7), as 64
//! lower-case hex digits; users compare it out of band.
//!
//! Each device publishes its public key to the PEP node `urn:xmpp:jabberwock:xmlsec:keys:0`
//! (XEP-0163; `pubsub#access_model=open`, `pubsub#max_items=max`), one item per device, item id
//! = the fingerprint, payload an xmldsig `KeyInfo` (§4.5.2.2, `CryptoBinary` base64):
//!
//! ```xml
//! <item id='3f0c…e1'>
//!   <KeyInfo xmlns='http://www.w3.org/2000/09/xmldsig#'>
//!     <KeyValue><RSAKeyValue><Modulus>wq3…</Modulus><Exponent>AQAB</Exponent></RSAKeyValue></KeyValue>
//!   </KeyInfo>
//! </item>
//! ```
//!
//! An item whose id is not the fingerprint of its key, or whose modulus is below 2048 or above
//! 4096 bits, is ignored with an alert (`bad-key-item`), and so are items beyond the first
//! [`MAX_KEYS`] of a node. An account never holds more than [`MAX_KEYS`] keys in total,
//! however many notifications arrive: a new key first evicts a key no longer listed in the
//! node (inactive), oldest first, then the oldest key trusted blindly (never verified); when
//! every key held is active and verified or untrusted, the new key is refused with the alert
//! `bad-key-item`. An evicted key that comes back is a new key to the trust policy. PEP
//! payloads are read only from our own account (no `from`, RFC 6120 §8.1.2.1) or from a
//! `from` that parses; the whole node only from an `<iq type='result'/>`, a notification only
//! from a `<message/>`. A sender fetches the recipient's node
//! when it holds no key for that account (the message waits), and its own node at login to
//! find its other devices. A receiver fetches the sender's node when the message is signed by
//! a key it does not know (the message waits, once; see `unknown-signer`). A fetched node
//! replaces the set of keys encrypted to for that account; keys once seen stay known for
//! checking signatures and keep their trust. A key is a device: there is no separate device id.
//!
//! # Trust
//!
//! As the device's `TrustPolicy` says. *BTBV*: a new key is trusted blindly (`unverified`)
//! until the user verified one key of that contact, after that new keys are `untrusted`.
//! *TOFU*: every new key is trusted blindly (with no device id, a key seen for the first time
//! is a device seen for the first time — the policy is BTBV that never closes). *Manual*:
//! only verified keys. Each decision is a `TrustChanged` event (device = fingerprint).
//! `verify` compares every key held for the peer with the fingerprints its devices show out
//! of band: found → `verified`, missing → `untrusted` (alert `fingerprint-mismatch`).
//! Untrusted keys are not encrypted to; a message signed by one is shown with trust
//! `untrusted` and the alert `untrusted-key`.
//!
//! # Sending: sign, then encrypt
//!
//! 1. The **payload** is one element, signed with an enveloped signature:
//!
//! ```xml
//! <signed xmlns='urn:xmpp:jabberwock:xmlsec:0' Id='m5e1d…(32 hex)'>
//!   <to>bob@b.example</to>
//!   <from>alice@a.example</from>
//!   <time>2026-01-01T00:00:00.000Z</time>
//!   <body>Hello</body>
//!   <Signature xmlns='http://www.w3.org/2000/09/xmldsig#'>
//!     <SignedInfo>
//!       <CanonicalizationMethod Algorithm='http://www.w3.org/2001/10/xml-exc-c14n#'/>
//!       <SignatureMethod Algorithm='http://www.w3.org/2001/04/xmldsig-more#rsa-sha256'/>
//!       <Reference URI='#m5e1d…'>
//!         <Transforms>
//!           <Transform Algorithm='http://www.w3.org/2000/09/xmldsig#enveloped-signature'/>
//!           <Transform Algorithm='http://www.w3.org/2001/10/xml-exc-c14n#'/>
//!         </Transforms>
//!         <DigestMethod Algorithm='http://www.w3.org/2001/04/xmlenc#sha256'/>
//!         <DigestValue>…</DigestValue>
//!       </Reference>
//!     </SignedInfo>
//!     <SignatureValue>…</SignatureValue>
//!     <KeyInfo><KeyName>(signer's fingerprint)</KeyName></KeyInfo>
//!   </Signature>
//! </signed>
//! ```
//!
//! `Id` is `m` and 16 random bytes in hex (an `xs:ID`, unique per message). What the
//! signature covers, and why: `<to/>` (the recipient's bare JID) stops a recipient from
//! re-encrypting a signed message to a third party as if it had been sent to them
//! ("surreptitious forwarding", D. Davis, *Defective Sign & Encrypt*, 2001); `<from/>` (the
//! sender's bare JID) binds the signature to the account the stanza claims, so a server cannot
//! re-attribute it; `<time/>` (XEP-0082, milliseconds, from the simulated clock) and `Id` let
//! the receiver refuse stale and replayed copies; `<body/>` is the message. Not covered: the
//! stanza's attributes and the fallback `<body/>` (never shown), and the list of
//! `EncryptedKey`s (who else can read it; removing one only denies that device the message).
//!
//! A message with content beyond its body (XEP-0210 §4.1: a subject, a thread, XHTML-IM, an
//! out-of-band URL, a chat state, a correction) carries it after `<body/>`, in one
//! `<parts xmlns='urn:xmpp:jabberwock:xmlsec:0'/>` holding those elements as the message
//! would (`<subject xmlns='jabber:client'/>`, `<composing xmlns='…chatstates'/>`, …), inside
//! the signed element. A body-only message has no `<parts/>`: its payload is the one above,
//! byte for byte. Presence and iq: see "Presence and iq" below.
//!
//! 2. The serialised payload (xmlenc §4.1 `Type='…#Element'`) is encrypted once under a fresh
//!    AES-128 key, whose copy is wrapped for every recipient key: every trusted key of the
//!    recipient and every trusted key of our own other devices.
//!
//! ```xml
//! <message xmlns='jabber:client' to='bob@b.example' type='chat'>
//!   <body>This message is signed and encrypted with XML Signature and XML Encryption (urn:xmpp:jabberwock:xmlsec:0).</body>
//!   <EncryptedData xmlns='http://www.w3.org/2001/04/xmlenc#' Type='http://www.w3.org/2001/04/xmlenc#Element'>
//!     <EncryptionMethod Algorithm='http://www.w3.org/2009/xmlenc11#aes128-gcm'/>
//!     <KeyInfo xmlns='http://www.w3.org/2000/09/xmldsig#'>
//!       <EncryptedKey xmlns='http://www.w3.org/2001/04/xmlenc#' Recipient='bob@b.example'>
//!         <EncryptionMethod Algorithm='http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p'>
//!           <DigestMethod xmlns='http://www.w3.org/2000/09/xmldsig#' Algorithm='http://www.w3.org/2000/09/xmldsig#sha1'/>
//!         </EncryptionMethod>
//!         <KeyInfo xmlns='http://www.w3.org/2000/09/xmldsig#'><KeyName>(recipient key's fingerprint)</KeyName></KeyInfo>
//!         <CipherData><CipherValue>(RSA-OAEP of the AES key)</CipherValue></CipherData>
//!       </EncryptedKey>
//!       <!-- one EncryptedKey per recipient key -->
//!     </KeyInfo>
//!     <CipherData><CipherValue>(IV ‖ ciphertext ‖ tag)</CipherValue></CipherData>
//!   </EncryptedData>
//!   <encryption xmlns='urn:xmpp:eme:0' namespace='urn:xmpp:jabberwock:xmlsec:0' name='XML Encryption'/>
//!   <store xmlns='urn:xmpp:hints'/>
//! </message>
//! ```
//!
//! Key transport is `rsa-oaep-mgf1p` (xmlenc §5.5.2) with SHA-1 as digest and MGF1 hash —
//! the variant xmlsec1 1.2 reads and writes; receivers also accept a `sha256` DigestMethod
//! and xmlenc11 `rsa-oaep` with MGF1-SHA1. The content cipher is selectable
//! ([`Xmlsec::with_cipher`]): AES-128-GCM (xmlenc-core1 §5.2.4, 96-bit IV, 128-bit tag,
//! the default) or AES-128-CBC (§5.2.1, 128-bit IV, padding whose last octet is its length).
//!
//! # Receiving: decrypt, then verify by reference resolution
//!
//! 1. Exactly one `<EncryptedData/>` in the message (else `malformed`); a message with none
//!    but a `<body/>` is shown flagged `unencrypted` (a downgrade).
//! 2. `Type` must be `#Element` (`unsupported-type`), the cipher one of the two above
//!    (`unsupported-algorithm`) and one this device accepts: a device configured for GCM
//!    refuses CBC (`cipher-not-allowed`, see "What CBC leaves open"), a CBC device reads both.
//!    More than `2 × MAX_KEYS` `EncryptedKey`s (one account's keys and the sender's own) is
//!    `malformed`. The `EncryptedKey` whose `KeyName` is our fingerprint is unwrapped
//!    (`key-transport-failed`; not 16 bytes: `bad-key-length`); without one, the first
//!    [`MAX_KEYS`] without a `KeyName` are tried (one RSA private-key operation each, and
//!    anyone can encrypt to us); if none opens, the alert `not-for-this-device`.
//! 3. The content is decrypted: GCM checks its tag (`bad-mac`); CBC checks only the last
//!    padding octet, in 1..=16, as §5.2 requires (`bad-padding`) — the other padding octets are
//!    "arbitrary" and not checked.
//! 4. The plaintext (UTF-8) is parsed (no DTD, depth ≤ 256, xml-sec's size limits; else
//!    `malformed`) and verified by `dsig::verify` — its checks 1–8 are the complete list;
//!    codes `not-signed-payload`, `misplaced-signature`, `bad-reference`, `duplicate-id`,
//!    `unsupported-algorithm`, `bad-digest`, `bad-signature`, `missing-element`, `malformed`.
//!    The verifying key must be a key of the stanza's sender account (`KeyName` looked up
//!    among them only). An unknown `KeyName` makes the receiver fetch the sender's node and
//!    try again when it arrives; still unknown: `unknown-signer`.
//! 5. Then the statements: `<from/>` must be the stanza sender's bare JID
//!    (`from-mismatch`); `<to/>` must be our bare JID, or — for a copy of a message one of our
//!    own devices sent — the stanza's `to` (`to-mismatch`); `<time/>` must parse (`malformed`),
//!    lie no more than [`MAX_FUTURE_SECS`] ahead of our clock (`message-from-future`) and no
//!    more than [`MAX_AGE_SECS`] behind it (`message-too-old`, offline storage and archives
//!    deliver late); the pair (sender, `Id`) must not have been accepted before within that
//!    window (`replay`). An `Id` longer than [`MAX_ID_LEN`] characters is `malformed`; the
//!    replay cache holds at most [`MAX_SEEN_PER_SENDER`] entries per sender (beyond that,
//!    that sender's messages not newer than the oldest dropped entry are refused as `replay`),
//!    and expires entries in time order.
//!
//! # Presence and iq
//!
//! XEP-0210 §4.1 asks for the full content of any stanza kind sent between two entities; the
//! same payload carries it, with `<presence/>` or `<iq/>` (in this binding's namespace) in
//! place of `<body/>`, holding the stanza's content as its children:
//!
//! ```xml
//! <signed xmlns='urn:xmpp:jabberwock:xmlsec:0' Id='m…'>
//!   <to>bob@b.example</to><from>alice@a.example</from><time>…</time>
//!   <presence><status xmlns='jabber:client'>out walking</status></presence>
//!   <Signature xmlns='http://www.w3.org/2000/09/xmldsig#'>…</Signature>
//! </signed>
//! ```
//!
//! encrypted as for a message and sent as the `<EncryptedData/>` child of a directed
//! `<presence to='…'/>` (RFC 6121 §4.6; broadcast presence is not covered) or as the one child
//! of an `<iq type='set'/>` to the device (RFC 6120 §8.2.3), with no fallback body, EME or hint.
//! Both wait for the recipient's keys as a message does. The receiver runs steps 1–5 unchanged
//! (the same `to`, `from`, `time` and replay checks, over the same `Id` space), then requires
//! the payload to be signed as the kind of stanza that carried it — a signed presence
//! re-encrypted into a message, or any other mix, is `malformed`, and so is a payload holding
//! more than one of `<body/>`, `<presence/>`, `<iq/>` — and reports the content as parts
//! ([`Event::Parts`]). An iq request is always answered (RFC 6120 §8.2.3): an empty result when
//! it was read, and one and the same `<not-acceptable/>` error whatever failed — the padding,
//! the tag, the parse, the signature, a replay — so the answer tells the sender no more than
//! that it failed (a message, as above, gets no answer at all).
//!
//! ## What defeats signature wrapping
//!
//! XML signature wrapping (McIntyre et al. 2005; Somorovsky et al. 2011–12) makes a verifier
//! check one element and the application read another. Here the attacker can encrypt any
//! plaintext to us (our key is public), so a wrapped document reaches the verifier. The
//! checks that stop it: the payload is the document element and is the element the one
//! Reference must resolve to; the Signature must be its direct child and the only Signature
//! in the document; the ID value must occur exactly once in the whole document, counting
//! every `Id`, `ID`, `id` and `xml:id` attribute (a processor that picks "the first" or "the
//! last" has nothing to pick between); the transforms are fixed (no XPath/XSLT filter can
//! shrink what is digested); and the fields are read from that very node (by node identity
//! in the parsed tree, not by a second search), as its direct children, each exactly once.
//! The parts too: only the children of the one `<parts/>`, `<presence/>` or `<iq/>` that is a
//! direct child of that node are read; a `<parts/>` anywhere else — in the stanza around the
//! `EncryptedData`, in the Signature's `KeyInfo` (which the enveloped-signature transform
//! leaves out of the digest), in a wrapper beside the payload — is never shown as protected.
//!
//! ## What CBC leaves open
//!
//! AES-CBC has no integrity: flipping bits of the IV flips the same bits of the first
//! plaintext block, flipping bits of a ciphertext block garbles that block and flips the next.
//! The enveloped signature catches every change to what it covers, and a change elsewhere
//! (in the Signature) breaks the signature or the parse. What remains is the oracle: the
//! receiver distinguishes `bad-padding` from `malformed` (parse) from signature errors, so a
//! sender who sees those errors can decrypt byte by byte (Jager and Somorovsky, CCS 2011).
//! This engine reports errors faithfully to its user and answers nothing on the wire; the
//! oracle exists wherever those local outcomes become observable (a reply, a read marker,
//! timing).
//!
//! GCM closes it only if the receiver refuses CBC. The `EncryptionMethod` URI is not
//! authenticated, and the content key of a recorded GCM message can be reused under a CBC
//! label: a receiver that reads CBC then answers CBC questions about a key that protects GCM
//! traffic (the backwards-compatibility attack of Jager, Paterson and Somorovsky, "One Bad
//! Apple", NDSS 2013, §3 on XML Encryption). So a device configured for GCM
//! ([`Xmlsec::with_cipher`], the default) refuses CBC content with `cipher-not-allowed`
//! before it unwraps any key. A device configured for CBC reads both, and stays the oracle for
//! every content key wrapped to it, GCM messages included: the sender cannot tell which
//! setting the recipient's devices have (nothing in the key node says), so a GCM sender's
//! messages to a CBC device are no safer than CBC ones.
//!
//! Forward secrecy: none. The long-term RSA key decrypts every message ever sent to it;
//! a stolen engine ([`Engine::steal`]) is the attacker's tool, it skips the freshness and
//! replay checks (a receiver policy, not cryptography) and reads old traffic. Deniability:
//! none; only the sender's key makes its signature, [`Engine::forge`] returns `Ok(None)`.

pub mod dsig;
pub mod enc;
pub mod keys;
mod seam;

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use rand_core::RngCore;

pub use self::enc::Cipher;
use self::enc::{Accept, Recipient};
pub use self::keys::{KeyPair, PublicKey};
use crate::kit;
use crate::kit::directory::{self, Directory, Failure, Forwarding, Keyed, Limits, NotSent, Pep, Placement, Sealed};
use crate::kit::trust::{Known, TrustBook, TrustState, Wording};
use crate::time::{format_stamp, parse_stamp};
use crate::xml::{ElementExt, NS_CLIENT, NS_EME, NS_HINTS, NS_STANZAS, el, sender, text_el};
use crate::{Action, Content, Cx, E2eError, Engine, EngineConfig, Event, OutOfBand, Output, Protocol, Theft, Trust};

/// The registry entry: the content cipher is an account option.
pub static PROTOCOL: crate::ProtocolDef =
    crate::ProtocolDef::new("xmlsec", module_path!(), build_engine, &seam::WIRE, include_str!("reasons.txt")).with_options(&[&CIPHER_OPTION]);

/// `cipher: gcm | cbc` under an account.
pub static CIPHER_OPTION: crate::OptionDecl = crate::OptionDecl {
    key: "cipher",
    about: "The XML Encryption content cipher of this account's `xmlsec` devices (default `gcm`).",
    values: &[
        ("gcm", "AES-128-GCM (xmlenc11), authenticated."),
        ("cbc", "AES-128-CBC (xmlenc), malleable: for the attacks CBC allows."),
    ],
};

fn build_engine(me: &FullJid, rng: &mut dyn RngCore, config: &EngineConfig) -> Box<dyn Engine> {
    let cipher = match CIPHER_OPTION.value_in(config) {
        "cbc" => Cipher::Aes128Cbc,
        _ => Cipher::Aes128Gcm,
    };
    Box::new(Xmlsec::new(me.clone(), rng, config).with_cipher(cipher))
}

/// The binding's namespace (the signed payload's).
pub const NS: &str = "urn:xmpp:jabberwock:xmlsec:0";
/// The PEP node of device keys.
pub const NODE_KEYS: &str = "urn:xmpp:jabberwock:xmlsec:keys:0";
/// XML Signature.
pub const NS_DS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// XML Encryption 1.0.
pub const NS_XENC: &str = "http://www.w3.org/2001/04/xmlenc#";
/// XML Encryption 1.1.
pub const NS_XENC11: &str = "http://www.w3.org/2009/xmlenc11#";
/// The fallback body for clients without this binding.
pub const FALLBACK: &str = "This message is signed and encrypted with XML Signature and XML Encryption (urn:xmpp:jabberwock:xmlsec:0).";
/// How far ahead of our clock a payload's `<time/>` may be (clock skew).
pub const MAX_FUTURE_SECS: u64 = 300;
/// How far behind our clock a payload's `<time/>` may be (offline storage, archives).
pub const MAX_AGE_SECS: u64 = 7 * 24 * 3600;
/// The most keys of one account we hold, and so encrypt to (each costs an RSA-OAEP per
/// message): items of a fetched node beyond this many are ignored, and an account's total,
/// whatever notifications add, is capped here (module docs, "Keys and their discovery").
/// Also the most `EncryptedKey`s without a `KeyName` we try to unwrap in one message.
pub const MAX_KEYS: usize = 32;
/// How many incoming messages may wait for their sender's keys.
const HELD: Limits = Limits { total: 32, per_sender: None };
/// The longest payload `Id` accepted, in characters (ours are 33); longer is `malformed`.
pub const MAX_ID_LEN: usize = 64;
/// How many accepted payload `Id`s of one sender the replay cache holds. Beyond it the
/// sender's oldest entry is dropped, and every later message of that sender whose `<time/>`
/// is not newer than the dropped entry's is refused as a `replay` (it can no longer be told
/// from one): the cache stays bounded and sound, at the price of refusing very late
/// deliveries from a sender who sent more than this many messages within [`MAX_AGE_SECS`].
pub const MAX_SEEN_PER_SENDER: usize = 4096;

/// Accepted (sender, payload `Id`) pairs within [`MAX_AGE_SECS`], for replay detection.
#[derive(Debug, Clone, Default)]
struct Seen {
    senders: BTreeMap<BareJid, SenderSeen>,
    /// Every entry, time first: expired entries are popped from the front.
    by_time: BTreeSet<(Duration, BareJid, String)>,
}

#[derive(Debug, Clone, Default)]
struct SenderSeen {
    ids: BTreeSet<String>,
    /// The same entries, time first: the oldest is dropped when over the cap.
    by_time: BTreeSet<(Duration, String)>,
    /// The newest `<time/>` dropped for [`MAX_SEEN_PER_SENDER`].
    floor: Option<Duration>,
}

impl Seen {
    fn is_replay(&self, sender: &BareJid, id: &str, sent: Duration) -> bool {
        self.senders.get(sender).is_some_and(|s| s.ids.contains(id) || s.floor.is_some_and(|f| sent <= f))
    }

    /// Drops entries older than `horizon` (their messages are refused as `message-too-old`).
    fn prune(&mut self, horizon: Duration) {
        while self.by_time.first().is_some_and(|(t, _, _)| *t < horizon) {
            let Some((t, sender, id)) = self.by_time.pop_first() else { break };
            if let Some(s) = self.senders.get_mut(&sender) {
                s.ids.remove(&id);
                s.by_time.remove(&(t, id));
                if s.ids.is_empty() && s.floor.is_none_or(|f| f < horizon) {
                    self.senders.remove(&sender);
                }
            }
        }
    }

    fn insert(&mut self, sender: &BareJid, id: &str, sent: Duration) {
        let s = self.senders.entry(sender.clone()).or_default();
        if s.ids.len() >= MAX_SEEN_PER_SENDER
            && let Some((t, old)) = s.by_time.pop_first()
        {
            s.ids.remove(&old);
            self.by_time.remove(&(t, sender.clone(), old));
            s.floor = Some(s.floor.map_or(t, |f| f.max(t)));
        }
        s.ids.insert(id.to_owned());
        s.by_time.insert((sent, id.to_owned()));
        self.by_time.insert((sent, sender.clone(), id.to_owned()));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_time.len()
    }
}

/// A key of another account (or of another device of ours), as held.
#[derive(Debug, Clone)]
struct PeerKey {
    key: PublicKey,
    /// Listed in the account's node the last time we fetched it: encrypted to.
    active: bool,
    /// When we first saw it (older is smaller).
    since: u64,
}

/// The key of `owner` to evict to make room for a new one: an inactive key, oldest first
/// (verified ones last), else the oldest blindly trusted (never verified) active key. `None`:
/// every key held is active and verified or untrusted — a user's or the policy's decision we
/// keep.
fn victim(trust: &TrustBook<String, PeerKey>, owner: &BareJid) -> Option<String> {
    let inactive = trust
        .of(owner)
        .filter(|(_, k)| !k.key.active)
        .min_by_key(|(_, k)| (k.state == TrustState::Verified, k.key.since));
    let blind = || trust.of(owner).filter(|(_, k)| k.state == TrustState::Blind).min_by_key(|(_, k)| k.key.since);
    inactive.or_else(blind).map(|(f, _)| f.clone())
}

/// One device's XML Signature / XML Encryption state.
#[derive(Debug, Clone)]
pub struct Xmlsec {
    me: FullJid,
    key: KeyPair,
    cipher: Cipher,
    /// The keys of every account, by fingerprint (at most [`MAX_KEYS`] each).
    trust: TrustBook<String, PeerKey>,
    /// The `since` of the next key learned.
    next: u64,
    /// Key nodes asked for and read (an empty key set is an answer too), messages waiting for
    /// keys, incoming messages signed by a key we are fetching.
    dir: Directory,
    /// Accepted (sender, payload Id) pairs and their `<time/>`, for replay detection.
    seen: Seen,
    /// An attacker's copy ([`Engine::steal`]): no freshness or replay policy.
    stolen: bool,
    /// Directed presence and iq payloads the user sent, waiting for their recipient's keys
    /// (messages wait in [`Directory`]).
    waiting: Vec<Waiting>,
    /// Answers to iq requests that failed, for [`Engine::drain`].
    outbox: Vec<Element>,
}

/// A presence or iq to seal once its recipient's keys are known.
type Waiting = crate::content::Directed;

impl Xmlsec {
    /// A new device: an RSA-2048 key pair from `rng` (slow in debug builds), the content
    /// cipher AES-128-GCM, trust as `config.trust` says.
    pub fn new(me: FullJid, rng: &mut dyn RngCore, config: &EngineConfig) -> Self {
        // Generation fails only if the prime search is exhausted, which a working RNG never does;
        // retry rather than panic.
        let key = loop {
            if let Ok(k) = KeyPair::generate(rng) {
                break k;
            }
        };
        Self::with_key(me, key, config)
    }

    /// A device with a given key pair (interop tests, benches).
    pub fn with_key(me: FullJid, key: KeyPair, config: &EngineConfig) -> Self {
        Xmlsec {
            me,
            key,
            cipher: Cipher::default(),
            trust: TrustBook::new(config.trust, &Wording::KEYS),
            next: 0,
            dir: Directory::default(),
            seen: Seen::default(),
            stolen: false,
            waiting: Vec::new(),
            outbox: Vec::new(),
        }
    }

    /// The content cipher for messages this device sends, and the weakest it reads: a GCM
    /// device refuses CBC content (`cipher-not-allowed`, module docs "What CBC leaves open"),
    /// a CBC device reads both.
    pub fn with_cipher(mut self, cipher: Cipher) -> Self {
        self.cipher = cipher;
        self
    }

    /// The content cipher this device sends with.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// This device's key fingerprint (64 hex digits).
    pub fn fingerprint(&self) -> &str {
        &self.key.public.fingerprint
    }

    /// This device's public key, PEM SubjectPublicKeyInfo.
    pub fn public_key_pem(&self) -> String {
        self.key.public.to_pem()
    }

    /// This device's private key, PEM PKCS#8 (interop tests hand it to xmlsec1).
    pub fn private_key_pem(&self) -> String {
        self.key.to_pem()
    }

    /// Records `pem` (a SubjectPublicKeyInfo) as a key of `peer`, as if fetched from its node;
    /// trust follows the policy. Returns the fingerprint.
    pub fn import_peer_key(&mut self, peer: &BareJid, pem: &str) -> Result<String, E2eError> {
        let key = PublicKey::from_pem(pem)?;
        let fingerprint = key.fingerprint.clone();
        let mut out = Output::default();
        self.learn(peer, vec![key], false, &mut out);
        // As if the node had been read: nothing more to fetch before a first message.
        self.dir.mark_read(peer, NODE_KEYS);
        Ok(fingerprint)
    }

    fn own(&self) -> BareJid {
        self.me.to_bare()
    }

    fn publish_action(&self) -> Action {
        Action::Publish {
            node: NODE_KEYS.into(),
            id: self.key.public.fingerprint.clone(),
            item: self.key.public.key_info(),
            options: vec![
                ("pubsub#max_items".into(), "max".into()),
                ("pubsub#access_model".into(), "open".into()),
            ],
        }
    }

    // ---- keys and trust ---------------------------------------------------------------------

    /// Records keys of `owner`. `complete`: the whole node (an iq result), whose set replaces
    /// the keys we encrypt to; otherwise (a notification) the keys are added. The account holds
    /// at most [`MAX_KEYS`]: a new key evicts [`victim`], or is refused with the alert
    /// `bad-key-item` when there is none.
    fn learn(&mut self, owner: &BareJid, keys: Vec<PublicKey>, complete: bool, out: &mut Output) {
        let own_fpr = self.key.public.fingerprint.clone();
        // A notification carries only the item just published: the node still has to be read
        // whole before we know every key of the account.
        if complete {
            self.dir.mark_read(owner, NODE_KEYS);
            for (_, k) in self.trust.of_mut(owner) {
                k.key.active = false;
            }
        }
        // Keys we hold first, so that making room for a new key never evicts one the same
        // node lists.
        let mut new = Vec::new();
        for key in keys {
            if key.fingerprint == own_fpr {
                continue;
            }
            match self.trust.get_mut(owner, &key.fingerprint) {
                Some(known) => known.key.active = true,
                None => new.push(key),
            }
        }
        for key in new {
            let fpr = key.fingerprint.clone();
            if self.trust.get(owner, &fpr).is_some() {
                continue;
            }
            if self.trust.of(owner).count() >= MAX_KEYS {
                let Some(victim) = victim(&self.trust, owner) else {
                    out.events.push(Event::Alert {
                        reason: "bad-key-item",
                        detail: format!(
                            "{owner} already has {MAX_KEYS} active, verified or untrusted keys; key {fpr} ignored"
                        ),
                    });
                    continue;
                };
                self.trust.remove(owner, &victim);
            }
            let mut known = Known::new(PeerKey { key, active: true, since: self.next }, fpr.clone(), fpr.clone());
            self.next += 1;
            known.state = self.trust.first_sight(owner, &fpr, out);
            self.trust.insert(owner, fpr, known, out);
        }
    }

    /// The active keys of `owner` that `keep` selects, each with its owner.
    fn active(&self, owner: &BareJid, keep: impl Fn(TrustState) -> bool) -> Vec<(BareJid, PublicKey)> {
        let usable = |k: &&Known<PeerKey>| k.key.active && keep(k.state);
        self.trust.of(owner).map(|(_, k)| k).filter(usable).map(|k| (owner.clone(), k.key.key.clone())).collect()
    }

    // ---- sending ----------------------------------------------------------------------------

    /// The keys a message to `to` is encrypted for: `to`'s and our other devices' active,
    /// not untrusted keys. Errors when `to` has none.
    fn recipients(&self, to: &BareJid) -> Result<Vec<(BareJid, PublicKey)>, E2eError> {
        let own = self.own();
        let usable = |owner: &BareJid| self.active(owner, |state| state != TrustState::Untrusted);
        let mut all = usable(to);
        if all.is_empty() {
            return Err(E2eError::Policy { detail: format!("{to} has no trusted XML Encryption key") });
        }
        if *to != own {
            all.extend(usable(&own));
        }
        Ok(all)
    }

    /// The signed payload for `to` (sign, xmldsig §3.1): `<to/>`, `<from/>`, `<time/>`, then
    /// `content` — a message's `<body/>` (and `<parts/>`), or a `<presence/>` or `<iq/>`.
    fn signed_payload_of(&self, cx: &mut Cx<'_>, to: &BareJid, content: Vec<Element>) -> Result<Element, E2eError> {
        let mut id = [0u8; 16];
        cx.rng.fill_bytes(&mut id);
        let id = format!("m{}", keys::hex(&id));
        let mut payload = el("signed", NS)
            .child(text_el("to", NS, to.to_string()))
            .child(text_el("from", NS, self.own().to_string()))
            .child(text_el("time", NS, format_stamp(cx.now)));
        for c in content {
            payload.append_child(c);
        }
        dsig::sign(payload, &id, &self.key)
    }

    /// The signed payload of a message to `to` (module docs, "Sending"); with no parts it is
    /// the body-only payload, byte for byte.
    fn signed_payload(&self, cx: &mut Cx<'_>, to: &BareJid, body: &str) -> Result<Element, E2eError> {
        self.signed_payload_of(cx, to, vec![text_el("body", NS, body)])
    }

    /// The signed payload this device would encrypt for `to`, serialised (benches compare the
    /// engine with the raw work on these bytes). Uses the RNG for its `Id`.
    pub fn sign_payload(&self, cx: &mut Cx<'_>, to: &BareJid, body: &str) -> Result<String, E2eError> {
        Ok(String::from(&self.signed_payload(cx, to, body)?))
    }

    /// Sign, then encrypt for every recipient key; the `<message/>` to send.
    fn encrypt(&self, cx: &mut Cx<'_>, to: &BareJid, body: &str) -> Result<Element, E2eError> {
        let recipients = self.recipients(to)?;
        let signed = self.signed_payload(cx, to, body)?;
        self.seal_message(cx, to, &recipients, &String::from(&signed))
    }

    /// A waiting presence or iq, signed and encrypted (module docs, "Presence and iq"): the
    /// `<presence/>` or `<iq type='set'/>` carrying the `EncryptedData`.
    fn seal_waiting(&mut self, cx: &mut Cx<'_>, waiting: &Waiting, out: &mut Output) -> Sealed {
        let to = waiting.to();
        if !self.dir.read_or_fetch(&to, NODE_KEYS, out) {
            return Ok(None);
        }
        let recipients = self.recipients(&to)?;
        let (content, stanza) = match waiting {
            Waiting::Presence { to, status } => (
                el("presence", NS).child(text_el("status", NS_CLIENT, status.as_str())),
                el("presence", NS_CLIENT).with("to", to.to_string()),
            ),
            Waiting::Iq { to, payload } => (
                el("iq", NS).child(payload.clone()),
                el("iq", NS_CLIENT).with("type", "set").with("to", to.to_string()),
            ),
        };
        let signed = String::from(&self.signed_payload_of(cx, &to, vec![content])?);
        let jids: Vec<String> = recipients.iter().map(|(j, _)| j.to_string()).collect();
        let list: Vec<Recipient<'_>> =
            recipients.iter().zip(&jids).map(|((_, key), jid)| Recipient { jid, key }).collect();
        let encrypted = enc::seal(signed.as_bytes(), self.cipher, &list, cx.rng)?;
        Ok(Some(stanza.child(encrypted)))
    }

    /// Seals every waiting presence and iq whose recipient's keys are known; the others wait
    /// on, or are given up (alert `not-sent`).
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

    /// Encrypts a serialised payload for `recipients`; the `<message/>` to `to`.
    fn seal_message(
        &self,
        cx: &mut Cx<'_>,
        to: &BareJid,
        recipients: &[(BareJid, PublicKey)],
        plaintext: &str,
    ) -> Result<Element, E2eError> {
        let jids: Vec<String> = recipients.iter().map(|(j, _)| j.to_string()).collect();
        let list: Vec<Recipient<'_>> =
            recipients.iter().zip(&jids).map(|((_, key), jid)| Recipient { jid, key }).collect();
        let encrypted = enc::seal(plaintext.as_bytes(), self.cipher, &list, cx.rng)?;
        Ok(el("message", NS_CLIENT)
            .with("to", to.to_string())
            .with("type", "chat")
            .child(text_el("body", NS_CLIENT, FALLBACK))
            .child(encrypted)
            .child(el("encryption", NS_EME).with("namespace", NS).with("name", "XML Encryption"))
            .child(el("store", NS_HINTS)))
    }

    // ---- receiving --------------------------------------------------------------------------

    /// Receive steps 1–5 of the module docs. `hold`: how the stanza may wait if its signing key
    /// is unknown, while we fetch the sender's keys (`None`: it waited already, or this is a
    /// thief's copy that fetches nothing).
    fn receive_message(
        &mut self,
        cx: &mut Cx<'_>,
        stanza: &Element,
        hold: Option<Limits>,
        out: &mut Output,
    ) -> Result<(), E2eError> {
        let from: Jid = sender(stanza)?;
        let sender = from.to_bare();
        let mut blocks = stanza.children().filter(|c| c.is("EncryptedData", NS_XENC));
        let Some(encrypted) = blocks.next() else { return Err(E2eError::Missing { what: "EncryptedData" }) };
        if blocks.next().is_some() {
            return Err(E2eError::Malformed {
                what: "message",
                detail: "more than one EncryptedData".into(),
            });
        }
        // A thief reads whatever it recorded; a device only what its cipher setting allows.
        let accept = if self.stolen { Accept::Any } else { Accept::Configured(self.cipher) };
        let Some(plaintext) = enc::open(encrypted, &self.key, accept, cx.rng)? else {
            out.events.push(Event::Alert {
                reason: "not-for-this-device",
                detail: format!("a {} from {from} carries no key for {}", stanza.name(), self.key.public.fingerprint),
            });
            if stanza.name() == "iq" && !self.stolen {
                self.outbox.push(iq_answer(stanza, &from, false));
            }
            return Ok(());
        };
        let text = String::from_utf8(plaintext)
            .map_err(|e| E2eError::Malformed { what: "signed payload", detail: e.to_string() })?;
        let trust = &self.trust;
        let mut lookup = |name: Option<&str>| -> Result<Vec<PublicKey>, E2eError> {
            let keys: Vec<PublicKey> = trust
                .of(&sender)
                .filter(|(f, _)| name.is_none_or(|n| n == f.as_str()))
                .map(|(_, k)| k.key.key.clone())
                .collect();
            if keys.is_empty() {
                return Err(E2eError::Rejected {
                    reason: "unknown-signer",
                    detail: format!("no key {} of {sender}", name.unwrap_or("at all")),
                });
            }
            Ok(keys)
        };
        let payload = match dsig::verify(&text, &mut lookup) {
            Ok(p) => p,
            Err(e) if e.code() == "unknown-signer" && let Some(limits) = hold => {
                // The sender may have a device we have not seen: fetch its keys, try again then.
                if !self.dir.hold(stanza, limits, out) {
                    return Err(e);
                }
                self.dir.refetch(&sender, NODE_KEYS, out);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // What was signed as one stanza kind is never read as another (a signed presence
        // re-encrypted into a message would show its status as what the sender never said).
        if payload.stanza != stanza.name() {
            return Err(E2eError::Malformed {
                what: "signed payload",
                detail: format!("signed as a <{}/>, carried in a <{}/>", payload.stanza, stanza.name()),
            });
        }
        self.check_statements(cx, stanza, &sender, &payload)?;
        let trust = self.trust.state(&sender, &payload.signer).map_or(Trust::Untrusted, TrustState::trust);
        if trust == Trust::Untrusted {
            out.events.push(Event::Alert {
                reason: "untrusted-key",
                detail: format!("{from} signed with key {}, which is not trusted", payload.signer),
            });
        }
        match payload.stanza {
            "message" => {
                let parts = payload.parts;
                out.events.push(Event::Plaintext { from: from.clone(), body: payload.body, trust, delay: None, carbon: None });
                let mut holder = el("parts", NS);
                for p in parts {
                    holder.append_child(p);
                }
                let parts = crate::content::decrypted_parts(&holder);
                if !parts.is_empty() {
                    out.events.push(Event::Parts { from, stanza: "message", parts });
                }
            }
            "presence" => out.events.push(Event::Parts { from, stanza: "presence", parts: payload.parts }),
            _ => {
                out.events.push(Event::Parts { from: from.clone(), stanza: "iq", parts: payload.parts });
                out.actions.push(Action::Send(iq_answer(stanza, &from, true)));
            }
        }
        Ok(())
    }

    /// [`Xmlsec::receive_message`] for any stanza kind; an iq that fails is answered with an
    /// error (RFC 6120 §8.2.3: every request is answered), one and the same whatever failed
    /// (module docs, "Presence and iq").
    fn receive_sealed(
        &mut self,
        cx: &mut Cx<'_>,
        stanza: &Element,
        hold: Option<Limits>,
        out: &mut Output,
    ) -> Result<(), E2eError> {
        let result = self.receive_message(cx, stanza, hold, out);
        if result.is_err()
            && stanza.name() == "iq"
            && !self.stolen
            && let Ok(from) = sender(stanza)
        {
            self.outbox.push(iq_answer(stanza, &from, false));
        }
        result
    }

    /// Receive step 5: `from`, `to`, `time`, replay.
    fn check_statements(
        &mut self,
        cx: &Cx<'_>,
        stanza: &Element,
        sender: &BareJid,
        payload: &dsig::Payload,
    ) -> Result<(), E2eError> {
        let own = self.own();
        if payload.id.chars().count() > MAX_ID_LEN {
            return Err(E2eError::Malformed {
                what: "Id",
                detail: format!("{} characters, at most {MAX_ID_LEN}", payload.id.chars().count()),
            });
        }
        if payload.from != sender.to_string() {
            return Err(E2eError::Rejected {
                reason: "from-mismatch",
                detail: format!("signed from {}, stanza from {sender}", payload.from),
            });
        }
        let stanza_to =
            stanza.attr("to").and_then(|t| t.parse::<Jid>().ok()).map(|j| j.to_bare().to_string());
        let to_ok = payload.to == own.to_string()
            || (*sender == own && stanza_to.as_ref().is_none_or(|t| *t == payload.to));
        if !to_ok {
            return Err(E2eError::Rejected {
                reason: "to-mismatch",
                detail: format!("signed to {}, we are {own}", payload.to),
            });
        }
        let sent = parse_stamp(payload.time.trim())
            .ok_or_else(|| E2eError::Malformed { what: "time", detail: payload.time.clone() })?;
        if self.stolen {
            return Ok(());
        }
        if sent > cx.now + Duration::from_secs(MAX_FUTURE_SECS) {
            return Err(E2eError::Rejected {
                reason: "message-from-future",
                detail: format!("sent at {}, more than {MAX_FUTURE_SECS} s ahead", payload.time),
            });
        }
        if sent + Duration::from_secs(MAX_AGE_SECS) < cx.now {
            return Err(E2eError::Rejected {
                reason: "message-too-old",
                detail: format!("sent at {}, more than {MAX_AGE_SECS} s ago", payload.time),
            });
        }
        if self.seen.is_replay(sender, &payload.id, sent) {
            return Err(E2eError::Rejected {
                reason: "replay",
                detail: format!("message {} seen before", payload.id),
            });
        }
        let horizon = cx.now.saturating_sub(Duration::from_secs(MAX_AGE_SECS));
        self.seen.prune(horizon);
        self.seen.insert(sender, &payload.id, sent);
        Ok(())
    }
}

/// The answer to a secured iq request (RFC 6120 §8.2.3): an empty result, or — whatever
/// failed — one and the same `<not-acceptable/>` error.
fn iq_answer(request: &Element, from: &Jid, ok: bool) -> Element {
    let mut answer = el("iq", NS_CLIENT).with("type", if ok { "result" } else { "error" }).with("to", from.to_string());
    if let Some(id) = request.attr("id") {
        answer.set("id", id);
    }
    if !ok {
        answer.append_child(el("error", NS_CLIENT).with("type", "modify").child(el("not-acceptable", NS_STANZAS)));
    }
    answer
}

impl Keyed for Xmlsec {
    fn directory(&mut self) -> &mut Directory {
        &mut self.dir
    }

    /// PEP payloads in the wrong kind of stanza (neither a fetch result nor a notification)
    /// are ignored.
    fn placement(&self) -> Placement {
        Placement::Strict
    }

    fn reread(&mut self, cx: &mut Cx<'_>, stanza: &Element, out: &mut Output) -> Result<(), E2eError> {
        self.receive_sealed(cx, stanza, None, out)
    }

    /// The items of our node, from an iq result (the whole node) or a notification.
    /// RFC 6120 §8.1.2.1: only a stanza with no `from` comes from our own account; one whose
    /// `from` does not parse comes from nobody we can name, and its PEP payload is ignored.
    fn items(&mut self, cx: &mut Cx<'_>, pep: &Pep<'_>, out: &mut Output) -> Result<(), E2eError> {
        let Some(owner) = pep.owner(&self.own()).filter(|_| pep.node == Some(NODE_KEYS)) else { return Ok(()) };
        let owner = &owner;
        self.dir.answered(owner, NODE_KEYS);
        let mut keys = Vec::new();
        for (n, item) in pep.each().enumerate() {
            let id = item.attr("id").unwrap_or_default();
            if n >= MAX_KEYS {
                out.events.push(Event::Alert {
                    reason: "bad-key-item",
                    detail: format!("{owner} lists more than {MAX_KEYS} keys; the rest are ignored"),
                });
                break;
            }
            let parsed = item
                .children()
                .next()
                .ok_or(E2eError::Missing { what: "KeyInfo" })
                .and_then(PublicKey::from_key_info)
                .and_then(|k| {
                    if k.fingerprint == id {
                        Ok(k)
                    } else {
                        Err(E2eError::Rejected {
                            reason: "bad-key-item",
                            detail: format!("item id {id} is not the key's fingerprint {}", k.fingerprint),
                        })
                    }
                });
            match parsed {
                Ok(k) => keys.push(k),
                Err(e) => out.events.push(Event::Alert {
                    reason: "bad-key-item",
                    detail: format!("key item {id:?} of {owner}: {e}"),
                }),
            }
        }
        self.learn(owner, keys, pep.complete, out);
        directory::flush(self, cx, out);
        self.flush_waiting(cx, out);
        directory::retry(self, cx, owner, out);
        Ok(())
    }

    fn message(&mut self, cx: &mut Cx<'_>, stanza: &Element, out: &mut Output) -> Result<(), E2eError> {
        if stanza.is("iq", NS_CLIENT) {
            // A secured request; the answers to ours (results, errors) need nothing more.
            let request = matches!(stanza.attr("type"), Some("set" | "get"));
            if request && stanza.children().any(|c| c.is("EncryptedData", NS_XENC)) {
                self.receive_sealed(cx, stanza, (!self.stolen).then_some(HELD), out)?;
            }
            return Ok(());
        }
        if !stanza.is("message", NS_CLIENT) || stanza.attr("type") == Some("error") {
            return Ok(());
        }
        if stanza.children().any(|c| c.is("EncryptedData", NS_XENC)) {
            self.receive_message(cx, stanza, (!self.stolen).then_some(HELD), out)?;
            return Ok(());
        }
        if let Some(body) = stanza.get_child("body", NS_CLIENT) {
            let from = match stanza.attr("from") {
                None => Jid::from(self.own()),
                Some(_) => sender(stanza)?,
            };
            out.unencrypted(from, body, "without XML Encryption");
        }
        Ok(())
    }

    fn seal(&mut self, cx: &mut Cx<'_>, to: &BareJid, body: &str, out: &mut Output) -> Sealed {
        if !self.dir.read_or_fetch(to, NODE_KEYS, out) {
            return Ok(None);
        }
        Ok(Some(self.encrypt(cx, to, body)?))
    }

    /// A message with parts beyond its body (XEP-0210 §4.1): the parts are signed and
    /// encrypted with the body, in the payload's `<parts/>` (module docs, "Presence and iq").
    fn seal_content(&mut self, cx: &mut Cx<'_>, to: &BareJid, content: &Content, out: &mut Output) -> Sealed {
        if !self.dir.read_or_fetch(to, NODE_KEYS, out) {
            return Ok(None);
        }
        let recipients = self.recipients(to)?;
        let mut holder = el("parts", NS);
        for p in &content.parts {
            holder.append_child(p.clone());
        }
        let signed = self.signed_payload_of(cx, to, vec![text_el("body", NS, content.body.as_str()), holder])?;
        Ok(Some(self.seal_message(cx, to, &recipients, &String::from(&signed))?))
    }

    fn failed(&mut self, cx: &mut Cx<'_>, failure: Failure<'_>, out: &mut Output) {
        if failure.node == NODE_KEYS {
            let own = self.own();
            let alert = |owner: &BareJid, condition: &str| Event::Alert {
                reason: "no-keys",
                detail: format!("the keys of {owner} could not be fetched ({condition})"),
            };
            directory::no_keys(self, cx, failure, &own, alert, out);
            self.flush_waiting(cx, out);
        }
    }

    /// Surreptitious forwarding (Davis 2001, §5 "XML") and signature wrapping, with this
    /// device's key: `recorded` is decrypted (no signature, freshness or replay check — the
    /// attacker forwards what it recorded), and the sender's signed payload is sent on to `to`:
    ///
    /// - `body` empty: the payload **unchanged**, byte for byte, re-encrypted to `to`'s keys.
    ///   Sign-then-encrypt lets anyone who can decrypt do this; the signed `<to/>` (our binding,
    ///   module docs) still names us, and the honest receiver refuses it with `to-mismatch`.
    /// - `body` set: the wrapping document of [`dsig::wrap`], which carries `body` in unsigned fields
    ///   next to the sender's intact signature.
    ///
    /// Keys of `to` are fetched first if we never fetched its node (the output then holds only
    /// the `Fetch`); every key listed there is used, whatever our trust in it.
    fn forwarding(&mut self, cx: &mut Cx<'_>, order: Forwarding<'_>) -> Result<Option<Output>, E2eError> {
        let Forwarding { recorded, to, body } = order;
        let mut blocks = recorded.children().filter(|c| c.is("EncryptedData", NS_XENC));
        let encrypted = blocks.next().ok_or(E2eError::Missing { what: "EncryptedData" })?;
        if blocks.next().is_some() {
            return Err(E2eError::Malformed {
                what: "message",
                detail: "more than one EncryptedData".into(),
            });
        }
        let plaintext =
            enc::open(encrypted, &self.key, Accept::Any, cx.rng)?.ok_or_else(|| E2eError::Rejected {
                reason: "not-for-this-device",
                detail: format!("the recorded message carries no key for {}", self.key.public.fingerprint),
            })?;
        let text = String::from_utf8(plaintext)
            .map_err(|e| E2eError::Malformed { what: "signed payload", detail: e.to_string() })?;
        // Only a signed payload of this binding is worth forwarding.
        let original = dsig::signed_original(&text)?;
        // Key discovery, as `send` does; no queue: the caller answers and calls again.
        if !self.dir.is_read(to, NODE_KEYS) {
            let mut out = Output::default();
            self.dir.refetch(to, NODE_KEYS, &mut out);
            return Ok(Some(out));
        }
        let forged = if body.is_empty() {
            // Plain surreptitious forwarding: the very bytes we decrypted.
            text
        } else {
            let mut id = [0u8; 16];
            cx.rng.fill_bytes(&mut id);
            let fresh = format!("m{}", keys::hex(&id));
            String::from(&dsig::wrap(original, &fresh, &to.to_string(), &format_stamp(cx.now), body)?)
        };
        let recipients = self.active(to, |_| true);
        if recipients.is_empty() {
            return Err(E2eError::Policy { detail: format!("{to} has no XML Encryption key to forward to") });
        }
        let stanza = self.seal_message(cx, to, &recipients, &forged)?;
        Ok(Some(Output { actions: vec![Action::Send(stanza)], events: vec![] }))
    }
}

impl Engine for Xmlsec {
    fn protocol(&self) -> Protocol {
        Protocol::of(&PROTOCOL)
    }

    fn publish(&mut self, _cx: &mut Cx<'_>) -> Result<Output, E2eError> {
        let mut out = Output { actions: vec![self.publish_action()], events: vec![] };
        // Our own node lists our other devices.
        self.dir.refetch(&self.own(), NODE_KEYS, &mut out);
        Ok(out)
    }

    fn keyed(&mut self) -> Option<&mut dyn Keyed> {
        Some(self)
    }

    fn send(&mut self, cx: &mut Cx<'_>, to: &BareJid, body: &str) -> Result<Output, E2eError> {
        if self.active(to, |_| true).is_empty() {
            // Nothing to encrypt to: ask the node again before giving up.
            self.dir.unread(to, NODE_KEYS);
        }
        Ok(directory::send(self, cx, to, body))
    }

    /// Every part of the message is signed and encrypted with its body.
    fn send_message(&mut self, cx: &mut Cx<'_>, to: &BareJid, content: &Content) -> Result<Output, E2eError> {
        if content.parts.is_empty() {
            return self.send(cx, to, &content.body);
        }
        if self.active(to, |_| true).is_empty() {
            self.dir.unread(to, NODE_KEYS);
        }
        Ok(directory::send_content(self, cx, to, content))
    }

    /// Directed presence, its status signed and encrypted (module docs, "Presence and iq").
    fn send_presence(&mut self, cx: &mut Cx<'_>, to: &Jid, status: &str) -> Result<Output, E2eError> {
        self.waiting.push(Waiting::Presence { to: to.clone(), status: status.to_owned() });
        let mut out = Output::default();
        self.flush_waiting(cx, &mut out);
        Ok(out)
    }

    /// An `<iq type='set'/>` whose payload is signed and encrypted.
    fn send_iq(&mut self, cx: &mut Cx<'_>, to: &FullJid, payload: &Element) -> Result<Output, E2eError> {
        self.waiting.push(Waiting::Iq { to: to.clone(), payload: payload.clone() });
        let mut out = Output::default();
        self.flush_waiting(cx, &mut out);
        Ok(out)
    }

    /// A secured iq carries one `EncryptedData`.
    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[NS_XENC]
    }

    /// Directed presence carrying an `EncryptedData`: its signed status.
    fn receive_presence(&mut self, cx: &mut Cx<'_>, stanza: &Element) -> Result<Output, E2eError> {
        let mut out = Output::default();
        let sealed = stanza.children().any(|c| c.is("EncryptedData", NS_XENC));
        if sealed && stanza.attr("type").is_none_or(|t| t == "available") {
            self.receive_sealed(cx, stanza, (!self.stolen).then_some(HELD), &mut out)?;
        }
        Ok(out)
    }

    fn drain(&mut self, _cx: &mut Cx<'_>) -> Output {
        Output {
            actions: core::mem::take(&mut self.outbox).into_iter().map(Action::Send).collect(),
            events: vec![],
        }
    }

    fn verify(&mut self, _cx: &mut Cx<'_>, peer: &BareJid, oob: &OutOfBand) -> Result<Output, E2eError> {
        Ok(self.trust.verify(peer, |fp| oob.peer_says.iter().any(|s| s == fp), |_| true))
    }

    fn out_of_band(&self) -> OutOfBand {
        OutOfBand { peer_says: vec![self.key.public.fingerprint.clone()] }
    }

    fn identity_marks(&self) -> crate::IdentityMarks {
        // The RSA modulus (in a <RSAKeyValue/>'s <Modulus/>, XML Signature §4.4.2.2) and the
        // fingerprint of the SubjectPublicKeyInfo.
        let mut marks = vec![("RSA modulus", rsa::traits::PublicKeyParts::n(&self.key.public.key).to_bytes_be())];
        if let Some(fp) = kit::codec::unhex(&self.key.public.fingerprint) {
            marks.push(("fingerprint", fp));
        }
        marks
    }

    // `forge`: the default `Ok(None)` — anyone can encrypt to us, but only the sender's private
    // key makes its signature.

    fn steal(&self, what: Theft) -> Box<dyn Engine> {
        let mut copy = self.clone();
        copy.stolen = true;
        // The key pair and the public keys of others are long-term; queues are not.
        copy.outbox.clear();
        kit::stolen(copy, what, |copy| {
            copy.dir.wipe();
            copy.seen = Seen::default();
            copy.waiting.clear();
        })
    }
}

#[cfg(test)]
mod tests;
