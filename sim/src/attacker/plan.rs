//! The attacker's plan, as the scenario's validation hands it over: where it sits, its rules
//! (what they match and which power they use) and what it injects when.

use core::fmt;
use core::time::Duration;

use jabberwock_e2e::{BareJid, Element, FullJid, Protocol};
use jabberwock_xmpp::Hop;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::units::DurRange;

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
    /// The stanza's `<body/>` contains this text (`?OTR:AAMD` picks OTR Data Messages).
    #[serde(default)]
    pub text: Option<String>,
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
    "substitute",
    "impersonate",
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
    /// See [`ActionSpec::Set`].
    Set(String, String),
    /// See [`ActionSpec::Flip`].
    Flip(String, i64, Option<Encoding>),
    /// See [`ActionSpec::Flip`] with `ciphertext`: the bit.
    FlipCiphertext(i64),
    /// See [`ActionSpec::Downgrade`]: the body.
    Downgrade(String),
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
    /// words (`conversation`, `protected`, `ciphertext`, `downgrade`) consult.
    pub protocols: Vec<Protocol>,
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
