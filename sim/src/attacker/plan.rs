//! The attacker's plan, as the scenario's validation hands it over: where it sits, its rules
//! (what they match and which power they use) and what it injects when.

use core::fmt;
use core::time::Duration;
use std::collections::BTreeMap;

use jabberwock_e2e::{BareJid, Element, FullJid, Protocol};
use jabberwock_xmpp::Hop;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::units::{Dur, DurRange};

/// A hop kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HopKind {
    /// Client to server.
    C2s,
    /// Server to server.
    S2s,
    /// Server to client.
    S2c,
}

/// A stanza kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StanzaKind {
    /// `<message/>`
    Message,
    /// `<presence/>`
    Presence,
    /// `<iq/>`
    Iq,
}

/// What a rule matches. All given fields must match.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// The hop kind.
    #[serde(default)]
    pub hop: Option<HopKind>,
    /// The stanza's `from`: a bare JID matches all its resources.
    #[serde(default)]
    pub from: Option<String>,
    /// The stanza's `to`: a bare JID matches all its resources.
    #[serde(default)]
    pub to: Option<String>,
    /// The stanza kind.
    #[serde(default)]
    pub kind: Option<StanzaKind>,
    /// The stanza's `type` attribute (`chat`, `headline`, `get`, ...; messages default to
    /// `normal`, presence to `available`).
    #[serde(default, rename = "type")]
    pub stanza_type: Option<String>,
    /// The stanza has an element with this local name (at any depth).
    #[serde(default)]
    pub element: Option<String>,
    /// The stanza has an element in this namespace (at any depth).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The stanza's `<body/>` contains this text. `$id(bob/phone)` in it is that device's id
    /// (its OMEMO device id); `$$` is a `$`.
    #[serde(default)]
    pub text: Option<String>,
    /// The stanza has an element with these attribute values: the stanza itself or any
    /// element in it, or with `element`, an element of that name. `$id(bob/phone)` in a value
    /// is that device's id: `{element: key, attributes: {rid: $id(bob/phone)}}` matches an
    /// OMEMO message carrying a key for Bob's phone.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The stanza carries the conversation (`true`), the text users write, encrypted or not,
    /// as the wire description of a protocol spoken in the scenario tells it; or does not
    /// (`false`: key material, handshakes, plumbing).
    #[serde(default)]
    pub conversation: Option<bool>,
    /// The stanza carries a protocol's end-to-end layer (`true`): anything `downgrade` can
    /// strip — a ciphertext, a key exchange, a tunnel record, an OTR query; or does not.
    #[serde(default)]
    pub protected: Option<bool>,
    /// Only within this window of simulated time (`1s..5s`).
    #[serde(default)]
    pub window: Option<DurRange>,
    /// Act on at most this many stanzas.
    #[serde(default)]
    pub count: Option<u32>,
}

/// How an element's text is read before a bit is flipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Base64: the bit lands in the decoded payload.
    Base64,
    /// The UTF-8 bytes of the text.
    Text,
    /// OpenPGP ASCII armour with its headers stripped, as XEP-0027 carries it: the bit lands
    /// in the packets and the CRC-24 line (RFC 4880 §6.1) is recomputed, as anyone can.
    Armor,
}

/// Where the attacker sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// Sees every hop.
    Everywhere,
    /// A malicious server: every hop it touches.
    Server(String),
    /// One link between a device and its server.
    ClientLink(FullJid),
    /// The federation link between two servers.
    ServerLink(String, String),
}

impl Position {
    /// Whether a hop is within reach.
    pub fn sees(&self, hop: &Hop) -> bool {
        match (self, hop) {
            (Position::Everywhere, _) => true,
            (Position::Server(d), h) => h.servers().contains(&d.as_str()),
            (
                Position::ClientLink(dev),
                Hop::ClientToServer { client, .. } | Hop::ServerToClient { client, .. },
            ) => client == dev,
            (Position::ServerLink(a, b), Hop::ServerToServer { from, to }) => {
                (from == a && to == b) || (from == b && to == a)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Everywhere => f.write_str("everywhere"),
            Position::Server(d) => write!(f, "server {d}"),
            Position::ClientLink(j) => write!(f, "network {j} <-> {}", j.domain()),
            Position::ServerLink(a, b) => write!(f, "network {a} <-> {b}"),
        }
    }
}

/// The attacker's powers, as `acted:` and the transcript name them.
pub const POWERS: &[&str] = &[
    "observe",
    "drop",
    "delay",
    "jitter",
    "reorder",
    "duplicate",
    "replay",
    "strip",
    "replace",
    "rewrite",
    "set",
    "flip",
    "downgrade",
    "rollback",
    "substitute",
    "impersonate",
    "republish",
    "reencrypt",
    "inject",
    "forge",
    "forward",
];

/// A validated attacker rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its index in the file.
    pub index: usize,
    /// Match.
    pub matcher: MatchSpec,
    /// Action, with XML pre-parsed.
    pub action: Action,
}

/// A validated attacker action.
#[derive(Debug, Clone)]
pub enum Action {
    /// See [`ActionSpec::Observe`].
    Observe,
    /// See [`ActionSpec::Drop`].
    Drop,
    /// See [`ActionSpec::Delay`].
    Delay(Duration),
    /// See [`ActionSpec::Jitter`].
    Jitter(Duration),
    /// See [`ActionSpec::Reorder`].
    Reorder,
    /// See [`ActionSpec::Duplicate`].
    Duplicate(u32),
    /// See [`ActionSpec::Replay`].
    Replay(Duration),
    /// See [`ActionSpec::Strip`].
    Strip(String),
    /// See [`ActionSpec::Replace`].
    Replace(String, Element),
    /// See [`ActionSpec::Rewrite`].
    Rewrite(Element),
    /// See [`ActionSpec::Set`]: the attribute, its value, and the element that carries it
    /// (`None`: the stanza itself).
    Set(String, String, Option<String>),
    /// See [`ActionSpec::Flip`].
    Flip(String, i64, Option<Encoding>),
    /// See [`ActionSpec::Flip`] with `ciphertext`: the bit.
    FlipCiphertext(i64),
    /// See [`ActionSpec::Downgrade`]: the body.
    Downgrade(String),
    /// See [`ActionSpec::Rollback`].
    Rollback,
    /// See [`ActionSpec::Substitute`].
    Substitute {
        /// Node.
        node: String,
        /// Owner.
        owner: Option<BareJid>,
        /// Replacement payload.
        with: Element,
    },
    /// See [`ActionSpec::Impersonate`].
    Impersonate(BareJid),
    /// See [`ActionSpec::Republish`].
    Republish {
        /// The account whose recorded items are served.
        of: BareJid,
        /// The account they are served as.
        as_: BareJid,
    },
    /// See [`ActionSpec::Reencrypt`].
    Reencrypt {
        /// The recipient device whose stolen state reads the message.
        stolen: FullJid,
        /// The text put in for the other recipients.
        body: String,
    },
}

/// The validated attacker.
#[derive(Debug, Clone)]
pub struct AttackerPlan {
    /// Position.
    pub position: Position,
    /// Rules.
    pub rules: Vec<Rule>,
    /// Injections (time since start, hop, what).
    pub inject: Vec<(Duration, Hop, Injection)>,
    /// It terminates TLS on its client link with its own certificate.
    pub terminate_tls: bool,
    /// The protocols the scenario's devices speak: whose wire descriptions the protocol-neutral
    /// words (`conversation`, `protected`, `ciphertext`, `downgrade`) consult, in the order
    /// they are asked (registry order, a description that claims every body last).
    pub protocols: Vec<Protocol>,
}

impl AttackerPlan {
    /// Puts the devices' ids in place of the `$id(..)` words the scenario wrote (validated and
    /// made canonical by [`super::ids::canonical`]), from the ids the devices' engines gave.
    pub fn fill_ids(&mut self, ids: &BTreeMap<FullJid, String>) -> Result<(), String> {
        use super::ids::{fill, fill_element};
        for rule in &mut self.rules {
            let m = &mut rule.matcher;
            if let Some(text) = &mut m.text {
                *text = fill(text, ids)?;
            }
            for value in m.attributes.values_mut() {
                *value = fill(value, ids)?;
            }
            match &mut rule.action {
                Action::Replace(_, with) | Action::Rewrite(with) | Action::Substitute { with, .. } => {
                    fill_element(with, ids)?;
                }
                _ => {}
            }
        }
        for (_, _, injection) in &mut self.inject {
            if let Injection::Stanza(stanza) = injection {
                fill_element(stanza, ids)?;
            }
        }
        Ok(())
    }
}

/// What an injection puts on its hop when its time comes.
#[derive(Debug, Clone)]
pub enum Injection {
    /// A stanza the scenario wrote out.
    Stanza(Element),
    /// A message the attacker's own engine of `protocol` makes as `from` for `to`, with the
    /// public keys recorded by then.
    Forge {
        /// The device it claims to come from.
        from: FullJid,
        /// The recipient account.
        to: BareJid,
        /// The claimed sender's protocol.
        protocol: Protocol,
        /// The text.
        body: String,
        /// Whose keys it is made with.
        keys: ForgeKeys,
    },
    /// With `stolen`'s state, the last signed message it received from `from` goes on to `to`
    /// as `from`'s (`body` wrapped around it where the signature leaves room).
    Forward {
        /// The device whose state was stolen.
        stolen: FullJid,
        /// The account whose signed message it received.
        from: BareJid,
        /// The account it goes on to.
        to: BareJid,
        /// Text slipped in around the signed part.
        body: String,
    },
}

/// An attacker power.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ActionSpec {
    /// Mark the stanza in the transcript (everything seen is knowledge anyway).
    Observe,
    /// Never deliver it.
    Drop,
    /// Deliver it later.
    Delay(Dur),
    /// Deliver it after a random delay between 0 and this (drawn from the attacker's seeded
    /// RNG), so a run of stanzas arrives shuffled.
    Jitter(Dur),
    /// Hold it until the next stanza on the same hop has passed (or `max` elapsed: default 5s),
    /// so the two arrive in the other order.
    Reorder,
    /// Deliver this many extra copies right away.
    Duplicate(u32),
    /// Deliver it, and again this much later.
    Replay(Dur),
    /// Remove every element with this local name.
    Strip(String),
    /// Replace the first element with this local name by the given XML.
    Replace {
        /// Local name of the element to replace.
        element: String,
        /// The replacement, as XML (namespaces must be declared; `$id(bob/phone)` in a text
        /// or an attribute value is that device's id, `$$` a `$`).
        with: String,
    },
    /// Replace the whole stanza by the given one, keeping the original's `from`, `to` and
    /// `id` so it is delivered where the original was going: an `<iq/>` becomes a
    /// `<message/>` (a tunnel record swapped for a plain body), for instance.
    Rewrite {
        /// The new stanza, as XML (namespaces must be declared; `$id(bob/phone)` in a text or
        /// an attribute value is that device's id, `$$` a `$`).
        with: String,
    },
    /// Set an attribute of the stanza itself: `{set: {attribute: from, value: mallory@b.example/x}}`
    /// relabels a message as another sender's (a server can write any `from` to its own
    /// clients); with `element`, of the first element of that name inside it (`{set:
    /// {element: keys, attribute: jid, value: alice@a.example}}`: an address in a header the
    /// encryption does not cover).
    Set {
        /// The attribute's name.
        attribute: String,
        /// Its new value.
        value: String,
        /// Local name of the element that carries it, or a path `a/b/c` (as `flip` takes it):
        /// the first match at any depth. By default the stanza itself.
        #[serde(default)]
        element: Option<String>,
    },
    /// Flip one bit. `{ciphertext: true, bit: N}`: bit N of the encrypted content the
    /// protocol's wire description finds in the stanza (past headers and key packets; in the
    /// body itself for `plain`), re-encoded as the protocol encodes it (base64, armour with
    /// its CRC recomputed). `{element: E, bit: N}`: bit N in the text of the first element
    /// named E; with `encoding: base64` the text is decoded first and re-encoded after, so the
    /// bit lands in the payload; with `text` it lands in the UTF-8 bytes. By default: base64
    /// when the text is at least 16 characters of valid padded base64, text otherwise.
    Flip {
        /// The protocol's ciphertext (give this or `element`).
        #[serde(default, deserialize_with = "present")]
        #[schemars(with = "Option<bool>")]
        ciphertext: bool,
        /// Local name of the element, or a path `a/b/c`: the first `a` at any depth, then
        /// its child `b`, then that one's child `c` (give this or `ciphertext`).
        #[serde(default)]
        element: Option<String>,
        /// Bit index (wraps around the payload length); negative counts from the end
        /// (`-1` is the last bit: CBC padding lives in the last block).
        bit: i64,
        /// How to read the text.
        #[serde(default)]
        encoding: Option<Encoding>,
    },
    /// Strip the end-to-end encryption, as the protocol's wire description says what it is,
    /// and put `body` in clear in its place (a tunnel's record stanza becomes a plain
    /// message; for `plain`, the body is rewritten). Pair it with `match: {protected: true}`.
    Downgrade {
        /// The plain text put in place of what was protected.
        body: String,
    },
    /// Take the newest version, or the preferred algorithm, out of an offer the stanza carries
    /// (XEP-0210 §3.10: "Alice MUST tell Bob which versions of the protocol she is prepared to
    /// support"), as the protocol's wire description finds it — a version list, a negotiation
    /// form's options, a handshake's cipher suites — and rewrite the rest so that the peer
    /// still parses it: `{rollback: true}`. Anyone on the path can; stanzas that carry no
    /// offer pass untouched.
    Rollback(bool),
    /// Serve different PEP items: in pubsub results and notifications for `node` (from
    /// `owner`, when given), replace each item's payload by the given XML. Server position only.
    Substitute {
        /// The PEP node.
        node: String,
        /// Only items of this account.
        #[serde(default)]
        owner: Option<String>,
        /// The replacement payload, as XML (`$id(bob/phone)` in a text or an attribute value is
        /// that device's id, `$$` a `$`: a device list naming only some of the devices).
        with: String,
    },
    /// Serve one account's published keys as another's: in pubsub results and notifications
    /// from `as` (to anyone but `as`'s own devices), the items of each node are replaced by the
    /// latest items of the same node the attacker recorded of `of` (its publications, reads and
    /// notifications), and a read of a node `as` lacks is answered with them. The unknown
    /// key-share of Frosch et al. ("How Secure is TextSecure?", IEEE EuroS&P 2016): Mallory
    /// publishes Alice's public keys as her own, so what is encrypted to "Mallory" only Alice can
    /// read. The attacker makes no keys and reads nothing by it. Server position only.
    Republish {
        /// The account whose recorded items are served.
        of: String,
        /// The account they are served as.
        #[serde(rename = "as")]
        as_: String,
    },
    /// Re-encrypt for the other recipients (Radically Open Security, "OMEMO: Cryptographic
    /// Analysis Report", 2016, §2.2.3 "Malicious device"): with the state stolen of `stolen`, a
    /// recipient of the message, read it and put `body` in place of its content for the
    /// other recipients, under the key they share (the protocol's own code does it:
    /// `Engine::reencrypt`), `stolen`'s own key removed. The stolen device's own copy passes
    /// untouched; a protocol that encrypts nothing once for several recipients has nothing to
    /// re-encrypt. Needs a `compromise` of `stolen` in the timeline; before it, the stanza passes.
    Reencrypt {
        /// The recipient device whose state was stolen (`compromise` it in the timeline).
        stolen: String,
        /// The text put in for the other recipients.
        body: String,
    },
    /// Impersonate an account toward others: the attacker makes key material of its own for
    /// `owner`'s protocol (a fresh engine) and serves it in place of `owner`'s on every PEP node
    /// that protocol publishes (device lists, bundles, keys). What is then encrypted to the
    /// attacker's keys it reads. Server position only.
    Impersonate {
        /// The account whose keys are replaced.
        owner: String,
    },
}

/// A flag written as a bare key (`{ciphertext, bit: 7}`) or `key: true`: present and not
/// `false` is true.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

/// What turning a power's YAML into an [`Action`] needs from the scenario's validation: XML
/// parsed, accounts resolved, and errors that point at the rule (`field` is the path under the
/// rule's `do`, such as `replace.with`).
pub trait Resolve {
    /// The validation's error.
    type Error;
    /// Parses XML written in the field (checking the devices its `$id(..)` words name).
    fn xml(&self, field: &str, xml: &str) -> Result<Element, Self::Error>;
    /// Resolves an account named in the field.
    fn account(&self, field: &str, name: &str) -> Result<BareJid, Self::Error>;
    /// Resolves a device named in the field that the timeline compromises (at any time).
    fn stolen(&self, field: &str, name: &str) -> Result<FullJid, Self::Error>;
    /// An error about the field.
    fn fail(&self, field: &str, message: &str) -> Self::Error;
}

impl Action {
    /// The power a rule's `do:` asks for, checked: an attacker at `position` must be able to use
    /// it, and what it names must exist.
    pub fn from_spec<R: Resolve>(spec: &ActionSpec, position: &Position, r: &R) -> Result<Action, R::Error> {
        Ok(match spec {
            ActionSpec::Observe => Action::Observe,
            ActionSpec::Drop => Action::Drop,
            ActionSpec::Delay(d) => Action::Delay(d.0),
            ActionSpec::Jitter(d) => Action::Jitter(d.0),
            ActionSpec::Reorder => Action::Reorder,
            ActionSpec::Duplicate(n) if *n == 0 || *n > 1000 => {
                return Err(r.fail("duplicate", "between 1 and 1000 extra copies"));
            }
            ActionSpec::Duplicate(n) => Action::Duplicate(*n),
            ActionSpec::Replay(d) => Action::Replay(d.0),
            ActionSpec::Strip(e) => Action::Strip(e.clone()),
            ActionSpec::Replace { element, with } => {
                Action::Replace(element.clone(), r.xml("replace.with", with)?)
            }
            ActionSpec::Rewrite { with } => Action::Rewrite(r.xml("rewrite.with", with)?),
            ActionSpec::Set { attribute, value, element } => {
                if let Err(why) = settable_attribute(attribute) {
                    return Err(r.fail("set.attribute", &why));
                }
                if let Some(e) = element.as_deref()
                    && (e.is_empty() || e.split('/').any(str::is_empty))
                {
                    return Err(r.fail("set.element", "an element's local name, or a path `a/b/c` of them"));
                }
                Action::Set(attribute.clone(), value.clone(), element.clone())
            }
            ActionSpec::Flip { ciphertext: true, element: None, bit, encoding: None } => {
                Action::FlipCiphertext(*bit)
            }
            ActionSpec::Flip { ciphertext: false, element: Some(element), bit, encoding } => {
                Action::Flip(element.clone(), *bit, *encoding)
            }
            ActionSpec::Flip { ciphertext: true, encoding: Some(_), .. } => {
                return Err(r.fail(
                    "flip.encoding",
                    "the protocol knows how its ciphertext is encoded: `encoding` goes with `element`",
                ));
            }
            ActionSpec::Flip { .. } => {
                return Err(r.fail("flip", "give exactly one of `ciphertext` or `element`"));
            }
            ActionSpec::Downgrade { body } => Action::Downgrade(body.clone()),
            ActionSpec::Rollback(true) => Action::Rollback,
            ActionSpec::Rollback(false) => {
                return Err(r.fail("rollback", "`rollback: false` does nothing: leave the rule out"));
            }
            ActionSpec::Impersonate { owner } => {
                if !matches!(position, Position::Server(_) | Position::Everywhere) {
                    return Err(r.fail("impersonate", "only a server position serves PEP items"));
                }
                Action::Impersonate(r.account("impersonate.owner", owner)?)
            }
            ActionSpec::Republish { of, as_ } => {
                if !matches!(position, Position::Server(_) | Position::Everywhere) {
                    return Err(r.fail("republish", "only a server position serves PEP items"));
                }
                let of = r.account("republish.of", of)?;
                let as_ = r.account("republish.as", as_)?;
                if of == as_ {
                    return Err(
                        r.fail("republish.as", "serving an account's items as its own changes nothing")
                    );
                }
                Action::Republish { of, as_ }
            }
            ActionSpec::Reencrypt { stolen, body } => {
                Action::Reencrypt { stolen: r.stolen("reencrypt.stolen", stolen)?, body: body.clone() }
            }
            ActionSpec::Substitute { node, owner, with } => {
                if !matches!(position, Position::Server(_) | Position::Everywhere) {
                    return Err(r.fail("substitute", "only a server position serves PEP items"));
                }
                let owner = match owner {
                    Some(o) => Some(r.account("substitute.owner", o)?),
                    None => None,
                };
                Action::Substitute { node: node.clone(), owner, with: r.xml("substitute.with", with)? }
            }
        })
    }
}

/// Whether `name` can be set on a stanza as a plain attribute: an XML name (XML 1.0 §2.3,
/// restricted to ASCII, which every stanza attribute is) without a prefix, and not a namespace
/// declaration (`xmlns` changes what the stanza *is*, not one of its attributes; XML
/// Namespaces §3).
fn settable_attribute(name: &str) -> Result<(), String> {
    attribute_name(name)?;
    if name == "xmlns" || name.to_ascii_lowercase().starts_with("xml") {
        return Err(format!("{name:?} is reserved by XML: a namespace cannot be set as an attribute"));
    }
    Ok(())
}

/// Whether `name` is a plain attribute name: an XML name restricted to ASCII, without a prefix.
pub(crate) fn attribute_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return Err(format!(
            "{name:?} is not an attribute name (a letter or _, then letters, digits, _, - or .)"
        ));
    }
    Ok(())
}

/// The keys a forgery is made with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ForgeKeys {
    /// A fresh engine of the attacker's own, with the public keys it recorded.
    #[default]
    Public,
    /// The state it stole of the claimed sender.
    Stolen,
    /// The keys its `impersonate` rule for the claimed sender's account serves as theirs.
    Served,
}
