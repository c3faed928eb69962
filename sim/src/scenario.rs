//! Scenario files: the YAML a user writes, parsed strictly (unknown fields are errors), then
//! validated into a [`Scenario`] the runner can execute. Every error names the file, the line
//! and column, and the path of the field.
//!
//! The JSON Schema in `scenarios/scenario.schema.json` is generated from these same types
//! (`jabberwock schema`), so editors validate while the user types.

use core::fmt;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use jabberwock_e2e::{BareJid, Element, FullJid, Protocol, Theft, TrustPolicy};
use jabberwock_xmpp::{Command, Hop};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::units::{At, Dur, DurRange};

// ---- the file format ---------------------------------------------------------------------

/// A scenario file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Jabberwock scenario")]
pub struct ScenarioFile {
    /// A short kebab-case name.
    pub name: String,
    /// One or two sentences: what the scenario shows.
    #[serde(default)]
    pub about: String,
    /// The seed of every random choice in the run (latencies, keys, nonces).
    pub seed: u64,
    /// How long to simulate; by default the last timeline step plus `settle`.
    #[serde(default)]
    pub duration: Option<Dur>,
    /// Extra simulated time after the last step (default 5s).
    #[serde(default)]
    pub settle: Option<Dur>,
    /// The simulation's resolution (default 1ms): the network moves packets once per tick.
    /// A coarser tick makes long simulated waits cheap; it must be at most the smallest
    /// latency of any link, so no packet arrives later than its latency allows.
    #[serde(default)]
    pub tick: Option<At<Dur>>,
    /// The XMPP domains, one server each.
    pub servers: Vec<At<String>>,
    /// How clients reach their servers: `tls` (default: RFC 6120 STARTTLS, required by every
    /// server, each with a certificate for its domain from the scenario's server CA) or
    /// `plain` (no TLS). Server-to-server links are plain either way.
    #[serde(default)]
    pub transport: TransportSpec,
    /// Federated pairs; by default every server federates with every other.
    #[serde(default)]
    pub federation: Option<Vec<At<[String; 2]>>>,
    /// Accounts by bare JID.
    pub accounts: BTreeMap<String, At<AccountSpec>>,
    /// Network conditions.
    #[serde(default)]
    pub network: NetworkSpec,
    /// The attacker, if any.
    #[serde(default)]
    pub attacker: Option<AttackerSpec>,
    /// What happens, in time order.
    #[serde(default)]
    pub timeline: Vec<At<Step>>,
    /// Assertions: keys are devices (`alice/phone`) or `attacker`.
    #[serde(default)]
    pub expect: BTreeMap<String, At<PartyExpect>>,
}

/// An account. Besides the fields below it takes the options the protocols declare
/// ([`jabberwock_e2e::OptionDecl`]: `otr: opportunistic`, `cipher: cbc`, ...), each a key of its
/// own; a key that is neither a field nor a declared option is an error.
#[derive(Debug, Clone)]
pub struct AccountSpec {
    /// Devices by resource name, each with its protocol (`plain`, ...).
    pub devices: BTreeMap<String, String>,
    /// The SASL password (default: derived from the account name).
    pub password: Option<String>,
    /// Accounts this one subscribes to; default: every other account in the scenario.
    pub contacts: Option<Vec<String>>,
    /// How this account's devices trust keys they have not verified (default `btbv`).
    pub trust: TrustSpec,
    /// How this account's devices treat the server's TLS certificate (with `transport: tls`).
    pub tls: Option<At<TlsSpec>>,
    /// The protocols' options, by key, with where the file wrote each value (checked against the
    /// declarations when the scenario is validated).
    pub options: BTreeMap<String, At<String>>,
}

/// The fixed fields of an account, as the schema shows them (the options are added from the
/// registry, see [`AccountSpec`]'s `JsonSchema`).
#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct AccountFields {
    /// Devices by resource name, each with its protocol (`plain`, ...).
    devices: BTreeMap<String, String>,
    /// The SASL password (default: derived from the account name).
    #[serde(default)]
    password: Option<String>,
    /// Accounts this one subscribes to; default: every other account in the scenario.
    #[serde(default)]
    contacts: Option<Vec<String>>,
    /// How this account's devices trust keys they have not verified (default `btbv`).
    #[serde(default)]
    trust: TrustSpec,
    /// How this account's devices treat the server's TLS certificate (with `transport: tls`).
    #[serde(default)]
    tls: Option<TlsSpec>,
}

const ACCOUNT_FIELDS: &[&str] = &["devices", "password", "contacts", "trust", "tls"];

/// Every key an account takes: its fields, then the protocols' options in registry order.
fn account_keys() -> &'static [&'static str] {
    static KEYS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        ACCOUNT_FIELDS.iter().copied().chain(Protocol::all_options().map(|(_, o)| o.key)).collect()
    })
}

impl<'de> Deserialize<'de> for AccountSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, Visitor};
        struct Account;
        impl<'de> Visitor<'de> for Account {
            type Value = AccountSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an account: a map with `devices`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AccountSpec, A::Error> {
                let mut devices = None;
                let mut acc = AccountSpec {
                    devices: BTreeMap::new(),
                    password: None,
                    contacts: None,
                    trust: TrustSpec::default(),
                    tls: None,
                    options: BTreeMap::new(),
                };
                let mut seen = BTreeSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    let Some(known) = account_keys().iter().copied().find(|k| *k == key) else {
                        return Err(A::Error::unknown_field(&key, account_keys()));
                    };
                    if !seen.insert(known) {
                        return Err(A::Error::duplicate_field(known));
                    }
                    match known {
                        "devices" => devices = Some(map.next_value()?),
                        "password" => acc.password = map.next_value()?,
                        "contacts" => acc.contacts = map.next_value()?,
                        "trust" => acc.trust = map.next_value()?,
                        "tls" => acc.tls = map.next_value()?,
                        option => {
                            acc.options.insert(option.to_owned(), map.next_value()?);
                        }
                    }
                }
                acc.devices = devices.ok_or_else(|| A::Error::missing_field("devices"))?;
                Ok(acc)
            }
        }
        d.deserialize_map(Account)
    }
}

impl JsonSchema for AccountSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AccountSpec".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = AccountFields::json_schema(generator);
        schema.insert(
            "description".into(),
            "An account. Besides its fields it takes the options the protocols declare.".into(),
        );
        if let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
            for (_, option) in Protocol::all_options() {
                let values: Vec<&str> = option.values.iter().map(|(v, _)| *v).collect();
                let described: Vec<String> =
                    option.values.iter().map(|(v, about)| format!("`{v}`: {about}")).collect();
                props.insert(
                    option.key.to_owned(),
                    serde_json::json!({
                        "description": format!("{} {}", option.about, described.join(" ")),
                        "type": "string",
                        "enum": values,
                        "default": option.default_value(),
                    }),
                );
            }
        }
        schema
    }
}

/// The client-to-server transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TransportSpec {
    /// STARTTLS (RFC 6120 §5) with TLS 1.3, required by the servers.
    #[default]
    Tls,
    /// No TLS: a network attacker on a client's link reads and changes stanzas.
    Plain,
}

/// A device's TLS settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// Verify the server's certificate chain (up to the scenario's server CA) and that it
    /// names the server's domain (default true). `false` accepts any certificate: a network
    /// attacker that terminates TLS is then let in.
    #[serde(default = "yes")]
    pub verify: bool,
}

fn yes() -> bool {
    true
}

/// A trust policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrustSpec {
    /// Blind trust before verification.
    #[default]
    Btbv,
    /// Trust on first use.
    Tofu,
    /// Only verified keys.
    Manual,
}

/// Network conditions.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Default one-way latency of every link (turmoil's exponential distribution between the
    /// bounds). Default 1ms..10ms.
    #[serde(default)]
    pub latency: Option<DurRange>,
    /// Per-link overrides.
    #[serde(default)]
    pub links: Vec<At<LinkSpec>>,
    /// Links cut for a time window (packets silently dropped; TCP sessions die by timeout).
    #[serde(default)]
    pub partitions: Vec<At<PartitionSpec>>,
    /// Server crashes (and restarts).
    #[serde(default)]
    pub crashes: Vec<At<CrashSpec>>,
    /// Devices that log out for a window.
    #[serde(default)]
    pub offline: Vec<At<OfflineSpec>>,
    /// Silence before a client pings its server and then gives the stream up (default 10s).
    #[serde(default)]
    pub keepalive: Option<Dur>,
    /// The largest message body (bytes) engines that fragment (OTR) send in one stanza.
    #[serde(default)]
    pub max_message: Option<At<usize>>,
}

/// One link's conditions. Endpoints are servers (`a.example`) or devices (`alice/phone`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// The two endpoints.
    pub between: [String; 2],
    /// One-way latency range.
    #[serde(default)]
    pub latency: Option<DurRange>,
    /// Probability per packet that the link fails, dropping what is in flight and breaking
    /// the TCP streams on it until it is repaired (turmoil's fail rate).
    #[serde(default)]
    pub loss: Option<f64>,
    /// Probability per step that a failed link is repaired (default 0.1 when `loss` is set).
    #[serde(default)]
    pub repair: Option<f64>,
}

/// A partition window.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    /// The two endpoints.
    pub between: [String; 2],
    /// Start.
    pub from: Dur,
    /// End (never repaired when absent).
    #[serde(default)]
    pub until: Option<Dur>,
}

/// A server crash.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CrashSpec {
    /// The server's domain.
    pub server: String,
    /// When it crashes.
    pub at: Dur,
    /// When it restarts (never when absent).
    #[serde(default)]
    pub restart: Option<Dur>,
}

/// A device offline window.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OfflineSpec {
    /// The device.
    pub device: String,
    /// When it logs out.
    pub from: Dur,
    /// When it logs back in (never when absent).
    #[serde(default)]
    pub until: Option<Dur>,
}

/// The attacker.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttackerSpec {
    /// Where it sits: `everywhere` (every hop), `server a.example` (a malicious server: every
    /// hop that server touches, and the PEP items it serves), or `network X <-> Y` (one link,
    /// between a device and its server or between two servers).
    pub position: At<String>,
    /// Rules applied in order to every stanza the attacker sees. Observing and modifying rules
    /// (observe, strip, replace, flip, substitute) act and let later rules see the result; the
    /// first matching delivery rule (drop, delay, reorder, duplicate, replay) decides how the
    /// stanza travels. A stanza no rule matches passes untouched.
    #[serde(default)]
    pub rules: Vec<At<RuleSpec>>,
    /// Forged stanzas put on a hop at a time.
    #[serde(default)]
    pub inject: Vec<At<InjectSpec>>,
    /// At a `network <device> <-> <server>` position under `transport: tls`: answer the
    /// device's TLS handshake with a certificate of the attacker's own for the server's name
    /// (self-signed, from the attacker's seeded keys). A device that verifies refuses it; one
    /// with `tls: {verify: false}` connects, and the attacker then reads and changes its
    /// stanzas. Without it, an attacker on a TLS link sees only the sizes of TLS records.
    #[serde(default)]
    pub terminate_tls: Option<At<bool>>,
}

/// One attacker rule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Which stanzas it applies to (all of them when empty).
    #[serde(default, rename = "match")]
    pub matcher: MatchSpec,
    /// What it does to them.
    #[serde(rename = "do")]
    pub action: ActionSpec,
}

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
        /// The replacement, as XML (namespaces must be declared).
        with: String,
    },
    /// Replace the whole stanza by the given one, keeping the original's `from`, `to` and
    /// `id` so it is delivered where the original was going: an `<iq/>` becomes a
    /// `<message/>` (a tunnel record swapped for a plain body), for instance.
    Rewrite {
        /// The new stanza, as XML (namespaces must be declared).
        with: String,
    },
    /// Set an attribute of the stanza itself: `{set: {attribute: from, value: mallory@b.example/x}}`
    /// relabels a message as another sender's (a server can write any `from` to its own
    /// clients).
    Set {
        /// The attribute's name.
        attribute: String,
        /// Its new value.
        value: String,
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
    /// Serve different PEP items: in pubsub results and notifications for `node` (from
    /// `owner`, when given), replace each item's payload by the given XML. Server position only.
    Substitute {
        /// The PEP node.
        node: String,
        /// Only items of this account.
        #[serde(default)]
        owner: Option<String>,
        /// The replacement payload, as XML.
        with: String,
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

/// A forged stanza.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectSpec {
    /// When.
    pub at: Dur,
    /// The hop: `c2s alice/phone`, `s2c bob/laptop` or `s2s a.example -> b.example`.
    pub hop: String,
    /// The stanza, as XML in `jabber:client` (declare `xmlns='jabber:client'`). Give this or
    /// `forge`.
    #[serde(default)]
    pub stanza: Option<String>,
    /// A message made at that moment by the attacker's own engine of the device's protocol,
    /// posing as that device, with the public keys the attacker recorded: what an outsider
    /// can make a recipient believe.
    #[serde(default)]
    pub forge: Option<ForgeSpec>,
    /// Surreptitious forwarding (and, for XML Signature, signature wrapping): with a device's
    /// stolen state, the last signed message it received from `from` goes on to `to` as if
    /// `from` had written to `to` (see the engine's `forward`).
    #[serde(default)]
    pub forward: Option<ForwardSpec>,
}

/// A signed message passed on by an attacker holding its recipient's stolen state.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardSpec {
    /// The device whose state was stolen (`compromise` it earlier in the timeline).
    pub stolen: String,
    /// The account whose signed message it received.
    pub from: String,
    /// The account it goes on to.
    pub to: String,
    /// Text slipped in around the signed part where the signature leaves room for it
    /// (XML signature wrapping); empty for plain forwarding.
    #[serde(default)]
    pub body: String,
}

/// A message the attacker makes with the protocol's own code and public keys only.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgeSpec {
    /// The device it claims to come from (`alice/phone`).
    pub from: String,
    /// The recipient account.
    pub to: String,
    /// The text.
    pub body: String,
}

/// `online` or `offline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Go {
    /// Log in.
    Online,
    /// Log out.
    Offline,
}

/// What an attacker steals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TheftSpec {
    /// Identity keys only.
    LongTermKeys,
    /// All state, sessions included.
    FullState,
}

/// A message to send.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendSpec {
    /// The recipient account.
    pub to: String,
    /// The plaintext.
    pub body: String,
}

/// A timeline step: `at` plus exactly one action (`wait` needs no device).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// When, in simulated time from the start.
    pub at: Dur,
    /// The acting device (`alice/phone` or `alice@a.example/phone`).
    #[serde(default)]
    pub device: Option<String>,
    /// Send a message through the device's engine.
    #[serde(default)]
    pub send: Option<SendSpec>,
    /// Log out or in.
    #[serde(default)]
    pub go: Option<Go>,
    /// Write raw bytes on the device's stream (for malformed XML).
    #[serde(default)]
    pub raw: Option<String>,
    /// Run the verification ceremony with this account over an out-of-band channel.
    #[serde(default)]
    pub verify: Option<String>,
    /// The attacker steals the device's keys or state.
    #[serde(default)]
    pub compromise: Option<TheftSpec>,
    /// Keep the simulation running at least until `at` (the text is a label).
    #[serde(default)]
    pub wait: Option<String>,
}

/// Expectations for one party.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PartyExpect {
    /// Device: the plaintexts shown to the user, in order (carbons included).
    #[serde(default)]
    pub received: Option<Vec<String>>,
    /// Device: compare `received` ignoring order.
    #[serde(default)]
    pub unordered: bool,
    /// Device: who each shown plaintext came from, as the client shows it (the stanza's
    /// `from`), in order: `["alice@a.example/phone"]`.
    #[serde(default)]
    pub senders: Option<Vec<String>>,
    /// Device: plaintexts that must have arrived with a XEP-0203 delay stamp.
    #[serde(default)]
    pub delayed: Vec<String>,
    /// Device: plaintexts that must have arrived as XEP-0280 carbons.
    #[serde(default)]
    pub carbons: Vec<String>,
    /// Device: alert reasons, in order (each a known reason: scenarios/reasons.md).
    #[serde(default)]
    #[schemars(schema_with = "crate::reasons::list_schema")]
    pub alerts: Option<Vec<At<String>>>,
    /// Device: error codes (engine errors, stanza errors, stream errors), in order (each a
    /// known reason: scenarios/reasons.md).
    #[serde(default)]
    #[schemars(schema_with = "crate::reasons::list_schema")]
    pub errors: Option<Vec<At<String>>>,
    /// Attacker: the plaintexts it could read, in any order.
    #[serde(default)]
    pub read: Option<Vec<String>>,
    /// Attacker: how many times each power acted (`drop: 1`, `substitute: 2`, ...), so a
    /// scenario fails when its attack never fired.
    #[serde(default)]
    pub acted: BTreeMap<String, u32>,
}

// ---- errors ------------------------------------------------------------------------------

/// A scenario that cannot be run, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// The field path, e.g. `timeline[2].device`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "at `{}`: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ScenarioError {}

// ---- the validated model -----------------------------------------------------------------

/// One device, ready to run.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Its full JID.
    pub jid: FullJid,
    /// How the scenario names it (`alice/phone`).
    pub short: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its trust policy.
    pub trust: TrustPolicy,
    /// Its account's protocol options, by key (declared keys and values only).
    pub options: BTreeMap<String, String>,
    /// The largest message body (bytes) a protocol that fragments sends in one stanza.
    pub max_message: Option<usize>,
    /// The account password.
    pub password: String,
    /// Whether it verifies the server's TLS certificate (with `transport: tls`).
    pub tls_verify: bool,
    /// Accounts it subscribes to.
    pub contacts: BTreeSet<BareJid>,
    /// Its commands, by time since the start.
    pub schedule: Vec<(Duration, Command)>,
}

/// A network event the runner applies between simulation steps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum NetEvent {
    /// Cut a link.
    Partition(String, String),
    /// Repair a link.
    Repair(String, String),
    /// Crash a server.
    Crash(String),
    /// Restart a crashed server.
    Restart(String),
}

/// Per-link settings (host names).
#[derive(Debug, Clone)]
pub struct LinkConf {
    /// Endpoint host names.
    pub between: [String; 2],
    /// Latency.
    pub latency: Option<DurRange>,
    /// Failure and repair rates.
    pub loss: Option<(f64, f64)>,
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
    /// Injections (time since start, hop, stanza).
    pub inject: Vec<(Duration, Hop, Element)>,
    /// It terminates TLS on its client link with its own certificate.
    pub terminate_tls: bool,
    /// The protocols the scenario's devices speak: whose wire descriptions the protocol-neutral
    /// words (`conversation`, `protected`, `ciphertext`, `downgrade`) consult.
    pub protocols: Vec<Protocol>,
}

/// The client-to-server transport of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// STARTTLS on every client stream.
    Tls,
    /// Plain client streams.
    Plain,
}

/// A party in `expect:`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Party {
    /// A device, by full JID.
    Device(FullJid),
    /// The attacker.
    Attacker,
}

/// A scenario ready to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file it came from.
    pub file: String,
    /// Its name.
    pub name: String,
    /// What it shows.
    pub about: String,
    /// The seed.
    pub seed: u64,
    /// How long to simulate.
    pub end: Duration,
    /// The simulation's resolution (turmoil's tick).
    pub tick: Duration,
    /// Server domains.
    pub servers: Vec<String>,
    /// The client-to-server transport.
    pub transport: Transport,
    /// Federated pairs (each pair sorted).
    pub federation: BTreeSet<(String, String)>,
    /// Accounts and passwords.
    pub accounts: BTreeMap<BareJid, String>,
    /// Devices.
    pub devices: Vec<DeviceSpec>,
    /// Default latency.
    pub latency: DurRange,
    /// Link settings.
    pub links: Vec<LinkConf>,
    /// Network events by time.
    pub events: Vec<(Duration, NetEvent)>,
    /// Keepalive.
    pub keepalive: Duration,
    /// The attacker.
    pub attacker: Option<AttackerPlan>,
    /// Expectations.
    pub expect: Vec<(Party, String, PartyExpect)>,
}

/// Parses and validates a scenario. `file` is only used in error messages.
pub fn parse(file: &str, yaml: &str) -> Result<Scenario, ScenarioError> {
    let raw: ScenarioFile = serde_saphyr::from_str(yaml).map_err(|e| {
        let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
        ScenarioError { file: file.to_owned(), line, column, path: String::new(), message: e.to_string() }
    })?;
    Validator { file, raw: &raw, devices: BTreeMap::new() }.run()
}

struct Validator<'a> {
    file: &'a str,
    raw: &'a ScenarioFile,
    /// full JID → (short name, protocol)
    devices: BTreeMap<FullJid, (String, Protocol)>,
}

impl Validator<'_> {
    fn err<T>(
        &self,
        at: (u64, u64),
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<T, ScenarioError> {
        Err(ScenarioError {
            file: self.file.to_owned(),
            line: at.0,
            column: at.1,
            path: path.into(),
            message: message.into(),
        })
    }

    fn device_ref(&self, at: (u64, u64), path: &str, name: &str) -> Result<FullJid, ScenarioError> {
        if let Ok(full) = name.parse::<FullJid>()
            && self.devices.contains_key(&full)
        {
            return Ok(full);
        }
        let matches: Vec<&FullJid> =
            self.devices.iter().filter(|(_, (short, _))| short == name).map(|(j, _)| j).collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => {
                let known: Vec<&str> = self.devices.values().map(|(s, _)| s.as_str()).collect();
                self.err(at, path, format!("unknown device `{name}` (devices: {})", known.join(", ")))
            }
            _ => self.err(at, path, format!("`{name}` is ambiguous: write the full JID")),
        }
    }

    /// A protocol option under an account: a value its declaration lists.
    fn option(&self, path: &str, key: &str, value: &At<String>) -> Result<(), ScenarioError> {
        let at = (value.line, value.column);
        let Some((protocol, decl)) = Protocol::all_options().find(|(_, o)| o.key == key) else {
            return self.err(at, path, format!("no protocol declares the option `{key}`"));
        };
        if decl.accepts(value).is_none() {
            let values: Vec<&str> = decl.values.iter().map(|(v, _)| *v).collect();
            return self.err(
                at,
                path,
                format!(
                    "`{}` is not a value of `{key}` ({protocol}), expected one of: {}",
                    **value,
                    values.join(", ")
                ),
            );
        }
        Ok(())
    }

    fn account_ref(&self, at: (u64, u64), path: &str, name: &str) -> Result<BareJid, ScenarioError> {
        match name.parse::<BareJid>() {
            Ok(b) if self.raw.accounts.contains_key(&b.to_string()) => Ok(b),
            _ => self.err(at, path, format!("unknown account `{name}`")),
        }
    }

    /// A server or a device, as a turmoil host name.
    fn endpoint(&self, at: (u64, u64), path: &str, name: &str) -> Result<String, ScenarioError> {
        if self.raw.servers.iter().any(|s| s.value == name) {
            return Ok(name.to_owned());
        }
        self.device_ref(at, path, name).map(|j| j.to_string())
    }

    fn xml(&self, at: (u64, u64), path: &str, xml: &str) -> Result<Element, ScenarioError> {
        xml.parse::<Element>().or_else(|e| self.err(at, path, format!("not well-formed XML: {e}")))
    }

    fn run(mut self) -> Result<Scenario, ScenarioError> {
        let raw = self.raw;
        let top = (1, 1);
        if raw.servers.is_empty() {
            return self.err(top, "servers", "at least one server is needed");
        }
        let mut servers = Vec::new();
        for (i, s) in raw.servers.iter().enumerate() {
            let pos = (s.line, s.column);
            if s.value
                .parse::<jabberwock_e2e::Jid>()
                .map(|j| j.node().is_some() || j.resource().is_some())
                .unwrap_or(true)
            {
                return self.err(pos, format!("servers[{i}]"), format!("`{}` is not a domain", s.value));
            }
            if servers.contains(&s.value) {
                return self.err(pos, format!("servers[{i}]"), format!("`{}` is listed twice", s.value));
            }
            servers.push(s.value.clone());
        }
        let mut federation = BTreeSet::new();
        match &raw.federation {
            None => {
                for a in &servers {
                    for b in &servers {
                        if a < b {
                            federation.insert((a.clone(), b.clone()));
                        }
                    }
                }
            }
            Some(pairs) => {
                for (i, p) in pairs.iter().enumerate() {
                    let [a, b] = &p.value;
                    for d in [a, b] {
                        if !servers.contains(d) {
                            return self.err(
                                (p.line, p.column),
                                format!("federation[{i}]"),
                                format!("unknown server `{d}`"),
                            );
                        }
                    }
                    if a == b {
                        return self.err(
                            (p.line, p.column),
                            format!("federation[{i}]"),
                            "a server cannot federate with itself",
                        );
                    }
                    federation.insert(if a < b { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) });
                }
            }
        }

        // Accounts and devices.
        let mut accounts = BTreeMap::new();
        for (name, acc) in &raw.accounts {
            let pos = (acc.line, acc.column);
            let path = format!("accounts.{name}");
            let Ok(bare) = name.parse::<BareJid>() else {
                return self.err(pos, path, format!("`{name}` is not a bare JID"));
            };
            if bare.node().is_none() {
                return self.err(pos, path, format!("`{name}` needs a local part (user@domain)"));
            }
            if !servers.contains(&bare.domain().to_string()) {
                return self.err(pos, path, format!("no server hosts `{}`", bare.domain()));
            }
            if acc.devices.is_empty() {
                return self.err(pos, format!("{path}.devices"), "an account needs at least one device");
            }
            if let Some(t) = &acc.tls
                && raw.transport == TransportSpec::Plain
            {
                return self.err(
                    (t.line, t.column),
                    format!("{path}.tls"),
                    "`tls` settings need `transport: tls`",
                );
            }
            let password = acc
                .password
                .clone()
                .unwrap_or_else(|| format!("pw-{}", bare.node().map(|n| n.to_string()).unwrap_or_default()));
            accounts.insert(bare.clone(), password);
            for (key, value) in &acc.options {
                self.option(&format!("{path}.{key}"), key, value)?;
            }
            for (res, proto) in &acc.devices {
                let Ok(full) = bare.with_resource_str(res) else {
                    return self.err(
                        pos,
                        format!("{path}.devices.{res}"),
                        format!("`{res}` is not a valid resource"),
                    );
                };
                let protocol = proto
                    .parse::<Protocol>()
                    .or_else(|e| self.err(pos, format!("{path}.devices.{res}"), e))?;
                let short = format!("{}/{res}", bare.node().map(|n| n.to_string()).unwrap_or_default());
                self.devices.insert(full, (short, protocol));
            }
        }
        let mut device_specs: BTreeMap<FullJid, DeviceSpec> = BTreeMap::new();
        for (full, (short, protocol)) in &self.devices {
            let bare = full.to_bare();
            let acc = &raw.accounts[&bare.to_string()];
            let contacts = match &acc.contacts {
                None => accounts.keys().filter(|b| **b != bare).cloned().collect(),
                Some(list) => {
                    let mut set = BTreeSet::new();
                    for (i, c) in list.iter().enumerate() {
                        set.insert(self.account_ref(
                            (acc.line, acc.column),
                            &format!("accounts.{bare}.contacts[{i}]"),
                            c,
                        )?);
                    }
                    set
                }
            };
            device_specs.insert(
                full.clone(),
                DeviceSpec {
                    jid: full.clone(),
                    short: short.clone(),
                    protocol: *protocol,
                    trust: match acc.trust {
                        TrustSpec::Btbv => TrustPolicy::Btbv,
                        TrustSpec::Tofu => TrustPolicy::Tofu,
                        TrustSpec::Manual => TrustPolicy::Manual,
                    },
                    options: acc.options.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect(),
                    max_message: raw.network.max_message.as_ref().map(|m| **m),
                    password: accounts[&bare].clone(),
                    tls_verify: acc.tls.as_ref().is_none_or(|t| t.verify),
                    contacts,
                    schedule: vec![],
                },
            );
        }

        // Network.
        let net = &raw.network;
        if let Some(max) = &net.max_message
            && **max < 64
        {
            return self.err(
                (max.line, max.column),
                String::from("network.max_message"),
                "at least 64 bytes: a protocol that fragments needs room for its framing (up to 38 bytes) around each piece",
            );
        }
        let mut links = Vec::new();
        for (i, l) in net.links.iter().enumerate() {
            let pos = (l.line, l.column);
            let path = format!("network.links[{i}]");
            let a = self.endpoint(pos, &path, &l.between[0])?;
            let b = self.endpoint(pos, &path, &l.between[1])?;
            let loss = match l.loss {
                Some(p) if !(0.0..=1.0).contains(&p) => {
                    return self.err(pos, format!("{path}.loss"), "a probability is between 0 and 1");
                }
                Some(p) => Some((p, l.repair.unwrap_or(0.1).clamp(0.0, 1.0))),
                None => None,
            };
            links.push(LinkConf { between: [a, b], latency: l.latency, loss });
        }
        let mut events = Vec::new();
        for (i, p) in net.partitions.iter().enumerate() {
            let pos = (p.line, p.column);
            let path = format!("network.partitions[{i}]");
            let a = self.endpoint(pos, &path, &p.between[0])?;
            let b = self.endpoint(pos, &path, &p.between[1])?;
            if let Some(until) = p.until
                && until <= p.from
            {
                return self.err(pos, format!("{path}.until"), "the window ends before it starts");
            }
            events.push((p.from.0, NetEvent::Partition(a.clone(), b.clone())));
            if let Some(until) = p.until {
                events.push((until.0, NetEvent::Repair(a, b)));
            }
        }
        for (i, c) in net.crashes.iter().enumerate() {
            let pos = (c.line, c.column);
            let path = format!("network.crashes[{i}]");
            if !servers.contains(&c.server) {
                return self.err(pos, format!("{path}.server"), format!("unknown server `{}`", c.server));
            }
            if let Some(r) = c.restart
                && r <= c.at
            {
                return self.err(pos, format!("{path}.restart"), "the restart comes before the crash");
            }
            events.push((c.at.0, NetEvent::Crash(c.server.clone())));
            if let Some(r) = c.restart {
                events.push((r.0, NetEvent::Restart(c.server.clone())));
            }
        }
        for (i, o) in net.offline.iter().enumerate() {
            let pos = (o.line, o.column);
            let path = format!("network.offline[{i}]");
            let dev = self.device_ref(pos, &format!("{path}.device"), &o.device)?;
            if let Some(u) = o.until
                && u <= o.from
            {
                return self.err(pos, format!("{path}.until"), "the window ends before it starts");
            }
            if let Some(spec) = device_specs.get_mut(&dev) {
                spec.schedule.push((o.from.0, Command::GoOffline));
                if let Some(u) = o.until {
                    spec.schedule.push((u.0, Command::GoOnline));
                }
            }
        }
        events.sort();

        // Timeline.
        let mut last = Duration::ZERO;
        let mut end = Duration::ZERO;
        for (i, step) in raw.timeline.iter().enumerate() {
            let pos = (step.line, step.column);
            let path = format!("timeline[{i}]");
            let at = step.at.0;
            if at < last {
                return self.err(
                    pos,
                    format!("{path}.at"),
                    format!(
                        "{} is earlier than the previous step ({}): steps go in time order",
                        step.at,
                        Dur(last)
                    ),
                );
            }
            last = at;
            end = end.max(at);
            let actions = [
                step.send.is_some(),
                step.go.is_some(),
                step.raw.is_some(),
                step.verify.is_some(),
                step.compromise.is_some(),
                step.wait.is_some(),
            ];
            let n = actions.iter().filter(|a| **a).count();
            if n != 1 {
                return self.err(
                    pos,
                    path,
                    format!(
                        "a step needs exactly one of send, go, raw, verify, compromise, wait (found {n})"
                    ),
                );
            }
            if step.wait.is_some() {
                if step.device.is_some() {
                    return self.err(pos, format!("{path}.device"), "`wait` takes no device");
                }
                continue;
            }
            let Some(dev_name) = &step.device else {
                return self.err(pos, path, "this step needs a `device`");
            };
            let dev = self.device_ref(pos, &format!("{path}.device"), dev_name)?;
            let command = if let Some(s) = &step.send {
                let to = self.account_ref(pos, &format!("{path}.send.to"), &s.to)?;
                Command::Send { to, body: s.body.clone() }
            } else if let Some(go) = step.go {
                match go {
                    Go::Online => Command::GoOnline,
                    Go::Offline => Command::GoOffline,
                }
            } else if let Some(raw_bytes) = &step.raw {
                Command::Raw(raw_bytes.clone())
            } else if let Some(peer) = &step.verify {
                let peer = self.account_ref(pos, &format!("{path}.verify"), peer)?;
                Command::Verify { peer }
            } else if let Some(theft) = step.compromise {
                if raw.attacker.is_none() {
                    return self.err(
                        pos,
                        format!("{path}.compromise"),
                        "a compromise needs an `attacker:` to hand the keys to",
                    );
                }
                Command::Compromise(match theft {
                    TheftSpec::LongTermKeys => Theft::LongTermKeys,
                    TheftSpec::FullState => Theft::FullState,
                })
            } else {
                continue;
            };
            if let Some(spec) = device_specs.get_mut(&dev) {
                spec.schedule.push((at, command));
            }
        }
        for spec in device_specs.values_mut() {
            spec.schedule.sort_by_key(|(at, _)| *at);
            if let Some((at, _)) = spec.schedule.last() {
                end = end.max(*at);
            }
        }
        for (at, _) in &events {
            end = end.max(*at);
        }

        // Attacker.
        let attacker = match &raw.attacker {
            None => None,
            Some(a) => Some(self.attacker(a, &servers, &federation)?),
        };
        if let Some(plan) = &attacker {
            for (at, _, _) in &plan.inject {
                end = end.max(*at);
            }
        }

        // Expectations.
        let mut expect = Vec::new();
        for (key, e) in &raw.expect {
            let pos = (e.line, e.column);
            let path = format!("expect.{key}");
            if key == "attacker" {
                if raw.attacker.is_none() {
                    return self.err(pos, path, "there is no attacker in this scenario");
                }
                if e.received.is_some()
                    || e.senders.is_some()
                    || !e.delayed.is_empty()
                    || !e.carbons.is_empty()
                    || e.alerts.is_some()
                    || e.errors.is_some()
                {
                    return self.err(pos, path, "the attacker only has `read` and `acted`");
                }
                for power in e.acted.keys() {
                    if !POWERS.contains(&power.as_str()) {
                        let known = POWERS.join(", ");
                        return self.err(
                            pos,
                            format!("{path}.acted.{power}"),
                            format!("unknown power `{power}` (powers: {known})"),
                        );
                    }
                }
                expect.push((Party::Attacker, key.clone(), e.value.clone()));
            } else {
                let dev = self.device_ref(pos, &path, key)?;
                if e.read.is_some() || !e.acted.is_empty() {
                    return self.err(pos, path, "`read` and `acted` are for the attacker");
                }
                if let Err((at, field, message)) =
                    crate::reasons::check_expected(e.alerts.as_deref(), e.errors.as_deref())
                {
                    return self.err(at, format!("{path}.{field}"), message);
                }
                expect.push((Party::Device(dev), key.clone(), e.value.clone()));
            }
        }

        let latency =
            net.latency.unwrap_or(DurRange { min: Duration::from_millis(1), max: Duration::from_millis(10) });
        let tick = match &raw.tick {
            None => Duration::from_millis(1),
            Some(t) if t.0.is_zero() => {
                return self.err((t.line, t.column), "tick", "a tick must be longer than 0ms");
            }
            Some(t) => {
                // The smallest latency any packet can have: the default's, or a link's.
                let (smallest, whose) = links
                    .iter()
                    .filter_map(|l| {
                        l.latency.map(|r| (r.min, format!("the link {} ⇆ {}", l.between[0], l.between[1])))
                    })
                    .fold((latency.min, "network.latency".to_owned()), |a, b| if b.0 < a.0 { b } else { a });
                if t.0 > smallest {
                    return self.err(
                        (t.line, t.column),
                        "tick",
                        format!(
                            "a tick of {}ms is longer than the smallest latency, {}ms ({whose}): the network moves packets once per tick, so they would arrive late",
                            t.0.as_millis(),
                            smallest.as_millis()
                        ),
                    );
                }
                t.0
            }
        };
        let settle = raw.settle.map(|d| d.0).unwrap_or(Duration::from_secs(5));
        let end = match raw.duration {
            Some(d) if d.0 < end => {
                return self.err(top, "duration", format!("{d} ends before the last event at {}", Dur(end)));
            }
            Some(d) => d.0,
            None => end + settle,
        };
        Ok(Scenario {
            file: self.file.to_owned(),
            name: raw.name.clone(),
            about: raw.about.clone(),
            seed: raw.seed,
            end,
            tick,
            servers,
            transport: match raw.transport {
                TransportSpec::Tls => Transport::Tls,
                TransportSpec::Plain => Transport::Plain,
            },
            federation,
            accounts,
            devices: device_specs.into_values().collect(),
            latency,
            links,
            events,
            keepalive: net.keepalive.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
            attacker,
            expect,
        })
    }

    fn attacker(
        &self,
        a: &AttackerSpec,
        servers: &[String],
        federation: &BTreeSet<(String, String)>,
    ) -> Result<AttackerPlan, ScenarioError> {
        let pos = (a.position.line, a.position.column);
        let words: Vec<&str> = a.position.value.split_whitespace().collect();
        let position = match words.as_slice() {
            ["everywhere"] => Position::Everywhere,
            ["server", d] if servers.iter().any(|s| s == d) => Position::Server((*d).to_owned()),
            ["network", x, "<->", y] => {
                let is_server = |n: &str| servers.iter().any(|s| s == n);
                match (is_server(x), is_server(y)) {
                    (true, true) => {
                        let pair = if x < y {
                            ((*x).to_owned(), (*y).to_owned())
                        } else {
                            ((*y).to_owned(), (*x).to_owned())
                        };
                        if !federation.contains(&pair) {
                            return self.err(
                                pos,
                                "attacker.position",
                                format!("{x} and {y} are not federated"),
                            );
                        }
                        Position::ServerLink(pair.0, pair.1)
                    }
                    (false, true) | (true, false) => {
                        let (dev, srv) = if is_server(y) { (*x, *y) } else { (*y, *x) };
                        let dev = self.device_ref(pos, "attacker.position", dev)?;
                        if dev.domain().as_str() != srv {
                            return self.err(
                                pos,
                                "attacker.position",
                                format!("{dev} does not connect to {srv}"),
                            );
                        }
                        Position::ClientLink(dev)
                    }
                    (false, false) => {
                        return self.err(
                            pos,
                            "attacker.position",
                            "a network position names a link with at least one server",
                        );
                    }
                }
            }
            _ => {
                return self.err(
                    pos,
                    "attacker.position",
                    format!(
                        "`{}`: write `everywhere`, `server <domain>` or `network <a> <-> <b>`",
                        a.position.value
                    ),
                );
            }
        };
        let mut rules = Vec::new();
        for (i, r) in a.rules.iter().enumerate() {
            let rpos = (r.line, r.column);
            let path = format!("attacker.rules[{i}]");
            let m = &r.matcher;
            for (field, value) in [("from", &m.from), ("to", &m.to)] {
                if let Some(v) = value {
                    let known =
                        self.devices.keys().any(|d| d.to_string() == *v || d.to_bare().to_string() == *v)
                            || servers.iter().any(|s| s == v);
                    if !known {
                        return self.err(
                            rpos,
                            format!("{path}.match.{field}"),
                            format!("`{v}` matches no device, account or server"),
                        );
                    }
                }
            }
            if let Some(HopKind::S2s) = m.hop
                && federation.is_empty()
            {
                return self.err(
                    rpos,
                    format!("{path}.match.hop"),
                    "no federation link exists: this rule matches nothing",
                );
            }
            let reachable_kind = |k: HopKind| match (&position, k) {
                (Position::ServerLink(..), HopKind::S2s) => true,
                (Position::ServerLink(..), _) => false,
                (Position::ClientLink(_), HopKind::S2s) => false,
                _ => true,
            };
            if let Some(k) = m.hop
                && !reachable_kind(k)
            {
                return self.err(
                    rpos,
                    format!("{path}.match.hop"),
                    format!("an attacker at `{position}` never sees this hop: the rule matches nothing"),
                );
            }
            if m.count == Some(0) {
                return self.err(rpos, format!("{path}.match.count"), "count 0 matches nothing");
            }
            let action = match &r.action {
                ActionSpec::Observe => Action::Observe,
                ActionSpec::Drop => Action::Drop,
                ActionSpec::Delay(d) => Action::Delay(d.0),
                ActionSpec::Jitter(d) => Action::Jitter(d.0),
                ActionSpec::Reorder => Action::Reorder,
                ActionSpec::Duplicate(n) if *n == 0 || *n > 1000 => {
                    return self.err(rpos, format!("{path}.do.duplicate"), "between 1 and 1000 extra copies");
                }
                ActionSpec::Duplicate(n) => Action::Duplicate(*n),
                ActionSpec::Replay(d) => Action::Replay(d.0),
                ActionSpec::Strip(e) => Action::Strip(e.clone()),
                ActionSpec::Replace { element, with } => Action::Replace(
                    element.clone(),
                    self.xml(rpos, &format!("{path}.do.replace.with"), with)?,
                ),
                ActionSpec::Rewrite { with } => {
                    Action::Rewrite(self.xml(rpos, &format!("{path}.do.rewrite.with"), with)?)
                }
                ActionSpec::Set { attribute, value } => {
                    if let Err(why) = settable_attribute(attribute) {
                        return self.err(rpos, format!("{path}.do.set.attribute"), why);
                    }
                    Action::Set(attribute.clone(), value.clone())
                }
                ActionSpec::Flip { ciphertext: true, element: None, bit, encoding: None } => {
                    Action::FlipCiphertext(*bit)
                }
                ActionSpec::Flip { ciphertext: false, element: Some(element), bit, encoding } => {
                    Action::Flip(element.clone(), *bit, *encoding)
                }
                ActionSpec::Flip { ciphertext: true, encoding: Some(_), .. } => {
                    return self.err(
                        rpos,
                        format!("{path}.do.flip.encoding"),
                        "the protocol knows how its ciphertext is encoded: `encoding` goes with `element`",
                    );
                }
                ActionSpec::Flip { .. } => {
                    return self.err(
                        rpos,
                        format!("{path}.do.flip"),
                        "give exactly one of `ciphertext` or `element`",
                    );
                }
                ActionSpec::Downgrade { body } => Action::Downgrade(body.clone()),
                ActionSpec::Impersonate { owner } => {
                    if !matches!(position, Position::Server(_) | Position::Everywhere) {
                        return self.err(
                            rpos,
                            format!("{path}.do.impersonate"),
                            "only a server position serves PEP items",
                        );
                    }
                    Action::Impersonate(self.account_ref(
                        rpos,
                        &format!("{path}.do.impersonate.owner"),
                        owner,
                    )?)
                }
                ActionSpec::Substitute { node, owner, with } => {
                    if !matches!(position, Position::Server(_) | Position::Everywhere) {
                        return self.err(
                            rpos,
                            format!("{path}.do.substitute"),
                            "only a server position serves PEP items",
                        );
                    }
                    let owner = match owner {
                        Some(o) => Some(self.account_ref(rpos, &format!("{path}.do.substitute.owner"), o)?),
                        None => None,
                    };
                    Action::Substitute {
                        node: node.clone(),
                        owner,
                        with: self.xml(rpos, &format!("{path}.do.substitute.with"), with)?,
                    }
                }
            };
            rules.push(Rule { index: i, matcher: m.clone(), action });
        }
        let mut inject = Vec::new();
        for (i, inj) in a.inject.iter().enumerate() {
            let ipos = (inj.line, inj.column);
            let path = format!("attacker.inject[{i}]");
            let words: Vec<&str> = inj.hop.split_whitespace().collect();
            let hop = match words.as_slice() {
                ["c2s", d] => {
                    let dev = self.device_ref(ipos, &format!("{path}.hop"), d)?;
                    Hop::ClientToServer { server: dev.domain().to_string(), client: dev }
                }
                ["s2c", d] => {
                    let dev = self.device_ref(ipos, &format!("{path}.hop"), d)?;
                    Hop::ServerToClient { server: dev.domain().to_string(), client: dev }
                }
                ["s2s", a, "->", b] => {
                    let pair = if a < b {
                        ((*a).to_owned(), (*b).to_owned())
                    } else {
                        ((*b).to_owned(), (*a).to_owned())
                    };
                    if !federation.contains(&pair) {
                        return self.err(
                            ipos,
                            format!("{path}.hop"),
                            format!("{a} and {b} are not federated"),
                        );
                    }
                    Hop::ServerToServer { from: (*a).to_owned(), to: (*b).to_owned() }
                }
                _ => {
                    return self.err(
                        ipos,
                        format!("{path}.hop"),
                        format!(
                            "`{}`: write `c2s <device>`, `s2c <device>` or `s2s <from> -> <to>`",
                            inj.hop
                        ),
                    );
                }
            };
            if !position.sees(&hop) {
                return self.err(
                    ipos,
                    format!("{path}.hop"),
                    format!("an attacker at `{position}` cannot reach {hop}"),
                );
            }
            let stanza = match (&inj.stanza, &inj.forge, &inj.forward) {
                (Some(xml), None, None) => self.xml(ipos, &format!("{path}.stanza"), xml)?,
                (None, Some(f), None) => {
                    let from = self.device_ref(ipos, &format!("{path}.forge.from"), &f.from)?;
                    let to = self.account_ref(ipos, &format!("{path}.forge.to"), &f.to)?;
                    let Some(protocol) = self.devices.get(&from).map(|(_, p)| *p) else {
                        return self.err(ipos, format!("{path}.forge.from"), "not a device of this scenario");
                    };
                    crate::attacker::forge_order(&from, &to, protocol, &f.body)
                }
                (None, None, Some(f)) => {
                    let stolen = self.device_ref(ipos, &format!("{path}.forward.stolen"), &f.stolen)?;
                    let from = self.account_ref(ipos, &format!("{path}.forward.from"), &f.from)?;
                    let to = self.account_ref(ipos, &format!("{path}.forward.to"), &f.to)?;
                    crate::attacker::forward_order(&stolen, &from, &to, &f.body)
                }
                _ => return self.err(ipos, path, "give exactly one of `stanza`, `forge` or `forward`"),
            };
            if stanza.ns() != jabberwock_e2e::xml::NS_CLIENT && !crate::attacker::is_order(&stanza) {
                return self.err(
                    ipos,
                    format!("{path}.stanza"),
                    "an injected stanza is in xmlns='jabber:client'",
                );
            }
            inject.push((inj.at.0, hop, stanza));
        }
        let tls = self.raw.transport == TransportSpec::Tls;
        let terminate_tls = match &a.terminate_tls {
            Some(t) if t.value => {
                let tpos = (t.line, t.column);
                if !matches!(position, Position::ClientLink(_)) {
                    return self.err(
                        tpos,
                        "attacker.terminate_tls",
                        "only an attacker on a client's link (`network <device> <-> <server>`) meets its TLS handshake",
                    );
                }
                if !tls {
                    return self.err(
                        tpos,
                        "attacker.terminate_tls",
                        "there is no TLS to terminate with `transport: plain`",
                    );
                }
                true
            }
            _ => false,
        };
        // Under TLS a wire attacker on a client link sees records it cannot open: rules that
        // would read or change stanzas there could never act.
        if tls
            && !terminate_tls
            && let Position::ClientLink(dev) = &position
        {
            let sealed = format!(
                "{dev}'s link is under TLS: an attacker on it sees only TLS records (write `transport: plain`, or `terminate_tls: true`)"
            );
            if let Some(r) = a.rules.first() {
                return self.err((r.line, r.column), "attacker.rules[0]", sealed);
            }
            if let Some(i) = a.inject.first() {
                return self.err((i.line, i.column), "attacker.inject[0]", sealed);
            }
        }
        let mut protocols: Vec<Protocol> = self.devices.values().map(|(_, p)| *p).collect();
        protocols.sort();
        protocols.dedup();
        Ok(AttackerPlan { position, rules, inject, terminate_tls, protocols })
    }
}

/// The JSON Schema of scenario files, pretty-printed with a trailing newline.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(ScenarioFile);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}

/// Whether `name` can be set on a stanza as a plain attribute: an XML name (XML 1.0 §2.3,
/// restricted to ASCII, which every stanza attribute is) without a prefix, and not a namespace
/// declaration (`xmlns` changes what the stanza *is*, not one of its attributes; XML
/// Namespaces §3).
fn settable_attribute(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return Err(format!(
            "{name:?} is not an attribute name (a letter or _, then letters, digits, _, - or .)"
        ));
    }
    if name == "xmlns" || name.to_ascii_lowercase().starts_with("xml") {
        return Err(format!("{name:?} is reserved by XML: a namespace cannot be set as an attribute"));
    }
    Ok(())
}
