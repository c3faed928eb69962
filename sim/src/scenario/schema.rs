//! The file format: the YAML a user writes, as serde types (unknown fields are errors). The
//! JSON Schema is generated from them.

use core::fmt;
use std::collections::{BTreeMap, BTreeSet};

use jabberwock_e2e::Protocol;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::attacker::ForgeKeys;
pub use crate::attacker::{ActionSpec, MatchSpec};
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
    /// The trust infrastructure outside Alice and Bob (XEP-0210 §3.5): `shared-ca` (default:
    /// one certification authority, derived from the seed, enrolls every device, for the
    /// protocols that use one — S/MIME) or `none` (every device is its own authority: nobody
    /// vouches for anybody's key but the users themselves).
    #[serde(default)]
    pub pki: PkiSpec,
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
    /// Devices by resource name, each with its protocol (`plain`, ...) or a longer form
    /// (`{protocol: omemo, joins: 5s}`), with where the file wrote each.
    pub devices: BTreeMap<String, At<DeviceEntry>>,
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
    /// Devices by resource name, each with its protocol (`phone: omemo`), or with more to say
    /// about it (`phone: {protocol: omemo, joins: 5s}`).
    devices: BTreeMap<String, DeviceEntry>,
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

/// A device of an account: its protocol (`phone: omemo`), or the longer form
/// `phone: {protocol: omemo, joins: 5s}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    /// Its protocol (`plain`, `omemo`, ...).
    pub protocol: String,
    /// When it first appears on the network; `None`: from the start.
    pub joins: Option<Dur>,
    /// The implementation that runs its engine (`None`: ours).
    pub implementation: Option<String>,
    /// The faults of real clients its engine reproduces, by name, each with where the file
    /// wrote it (checked against its protocol's declarations when the scenario is validated).
    pub quirks: Vec<At<String>>,
}

/// A device in its longer form: its protocol, when it first appears, and which implementation
/// runs it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DeviceFields {
    /// Its protocol (`plain`, `omemo`, ...).
    protocol: String,
    /// When the device first appears on the network (default: from the start). Before then it
    /// does not exist there: it does not log in, sends no presence and publishes nothing (no
    /// keys), and no timeline step or offline window may name it. It then logs in as a new
    /// device does (an OMEMO device adds itself to its account's device list).
    #[serde(default)]
    joins: Option<Dur>,
    /// The implementation that runs its engine: `jabberwock` (ours, the default) or an
    /// independent one of the registry `peers/reference/registry.yaml`, behind its adapter
    /// (`docs/engine-protocol.md`), e.g. `python-omemo`. It must speak the device's protocol and
    /// be installed.
    #[serde(default)]
    implementation: Option<String>,
    /// Faults real clients of its protocol shipped, which our engine then reproduces on this
    /// device (`quirks: [iv-16]`), so the scenario shows how its peers cope: names its protocol
    /// declares (the list, each with the client issue it reproduces, is in the README's scenario
    /// reference). Our engine's alone: not with another `implementation`.
    #[serde(default)]
    quirks: Vec<At<String>>,
}

impl<'de> Deserialize<'de> for DeviceEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{MapAccess, Visitor, value::MapAccessDeserializer};
        struct Entry;
        impl<'de> Visitor<'de> for Entry {
            type Value = DeviceEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a protocol name, or a device (`{protocol: <name>, joins: 5s, implementation: <name>, quirks: [..]}`)",
                )
            }
            fn visit_str<E: serde::de::Error>(self, protocol: &str) -> Result<DeviceEntry, E> {
                Ok(DeviceEntry {
                    protocol: protocol.to_owned(),
                    joins: None,
                    implementation: None,
                    quirks: vec![],
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<DeviceEntry, A::Error> {
                let DeviceFields { protocol, joins, implementation, quirks } =
                    DeviceFields::deserialize(MapAccessDeserializer::new(map))?;
                Ok(DeviceEntry { protocol, joins, implementation, quirks })
            }
        }
        d.deserialize_any(Entry)
    }
}

impl JsonSchema for DeviceEntry {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DeviceEntry".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let long = generator.subschema_for::<DeviceFields>();
        schemars::json_schema!({
            "description": "A device: its protocol's name, or `{protocol: <name>, joins: 5s, implementation: <name>, quirks: [..]}`.",
            "anyOf": [{"type": "string", "description": "Its protocol's name."}, long]
        })
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
    /// (observe, strip, replace, rewrite, set, flip, downgrade, substitute, impersonate) act and let later rules see the result; the
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

/// A forged stanza.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectSpec {
    /// When.
    pub at: Dur,
    /// The hop: `c2s alice/phone`, `s2c bob/laptop` or `s2s a.example -> b.example`.
    pub hop: String,
    /// The stanza, as XML in `jabber:client` (declare `xmlns='jabber:client'`). Give this,
    /// `forge` or `forward`. `$id(bob/phone)` in a text or an attribute value is that
    /// device's id (its OMEMO device id, known only once the run's seed made it); `$$` is a `$`.
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
    /// Whose keys it makes the message with: `public` (the default: its own engine and the
    /// public keys it recorded, as any outsider could) or `stolen` (the state it stole of
    /// `from` with a `compromise` earlier in the timeline: what stolen keys are worth when
    /// the rest of the device's state — sessions, retained secrets — is not theirs) or
    /// `served` (the keys an `impersonate` rule for `from`'s account serves as theirs: a server
    /// that hands out another key for someone and then writes with it).
    #[serde(default)]
    pub keys: ForgeKeys,
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

/// The trust infrastructure outside the users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PkiSpec {
    /// One certification authority enrolls every device.
    #[default]
    SharedCa,
    /// None: every device is its own authority.
    None,
}

/// What an attacker steals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TheftSpec {
    /// The identity key alone, none of the secrets the device built up by talking (an
    /// ESession's retained secrets).
    IdentityKey,
    /// Identity keys only.
    LongTermKeys,
    /// All state, sessions included.
    FullState,
}

/// A message to send: a body, and optionally the other parts a message stanza may carry
/// (XEP-0210 §4.1 asks for the whole content to be protected). The engine protects what its
/// protocol can; the client sends the rest in clear.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SendSpec {
    /// The recipient account.
    pub to: String,
    /// The plaintext.
    pub body: String,
    /// A subject (RFC 6121 §5.2.4).
    #[serde(default)]
    pub subject: Option<String>,
    /// A thread id (RFC 6121 §5.2.5).
    #[serde(default)]
    pub thread: Option<String>,
    /// The message as XHTML-IM (XEP-0071): this text, in one paragraph.
    #[serde(default)]
    pub xhtml: Option<String>,
    /// A URL sent out of band (XEP-0066).
    #[serde(default)]
    pub oob: Option<String>,
    /// A chat state (XEP-0085).
    #[serde(default)]
    pub chat_state: Option<ChatStateSpec>,
    /// The message corrects this device's previous message to the same account (XEP-0308):
    /// an earlier `send` to it must come first.
    #[serde(default)]
    pub correction: bool,
}

/// A chat state (XEP-0085).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ChatStateSpec {
    /// Taking part in the chat.
    Active,
    /// Typing.
    Composing,
    /// Stopped typing.
    Paused,
    /// Not taking part for a while.
    Inactive,
    /// Left the chat.
    Gone,
}

impl ChatStateSpec {
    /// The element name XEP-0085 gives it.
    pub fn name(self) -> &'static str {
        match self {
            ChatStateSpec::Active => "active",
            ChatStateSpec::Composing => "composing",
            ChatStateSpec::Paused => "paused",
            ChatStateSpec::Inactive => "inactive",
            ChatStateSpec::Gone => "gone",
        }
    }
}

/// Directed presence with a status (RFC 6121 §4.6): to one contact, not broadcast.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PresenceSpec {
    /// The recipient: an account (`bob@b.example`) or one of its devices (`bob/laptop`).
    pub to: String,
    /// The status text (RFC 6121 §4.7.2.2).
    pub status: String,
}

/// An `<iq type='set'/>` with a payload, to another device.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IqSpec {
    /// The recipient device (`bob/laptop` or its full JID).
    pub to: String,
    /// The payload: one XML element with its namespace, at most 4096 bytes and 8 levels deep
    /// (`<query xmlns='urn:example:notes'>text</query>`).
    pub payload: String,
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
    /// Send directed presence with a status.
    #[serde(default)]
    pub presence: Option<PresenceSpec>,
    /// Send an iq payload to another device.
    #[serde(default)]
    pub iq: Option<IqSpec>,
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

/// A text a device showed, as `received` expects it: the whole text (a plain string), or
/// `{starts-with: "..."}` for one whose end the scenario cannot know in advance (an attack that
/// appends what it solves for under the run's keys).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shown {
    /// Exactly this text.
    Exact(String),
    /// A text that starts with this.
    StartsWith(String),
}

impl Shown {
    /// Whether `body` is a text this expects.
    pub fn matches(&self, body: &str) -> bool {
        match self {
            Shown::Exact(text) => body == text,
            Shown::StartsWith(start) => body.starts_with(start.as_str()),
        }
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shown::Exact(text) => write!(f, "{text:?}"),
            Shown::StartsWith(start) => write!(f, "{start:?}…"),
        }
    }
}

impl<'de> Deserialize<'de> for Shown {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, Visitor};
        struct ShownVisitor;
        impl<'de> Visitor<'de> for ShownVisitor {
            type Value = Shown;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text, or `{starts-with: text}`")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Shown, E> {
                Ok(Shown::Exact(v.to_owned()))
            }
            fn visit_bool<E: Error>(self, v: bool) -> Result<Shown, E> {
                Ok(Shown::Exact(v.to_string()))
            }
            fn visit_i64<E: Error>(self, v: i64) -> Result<Shown, E> {
                Ok(Shown::Exact(v.to_string()))
            }
            fn visit_u64<E: Error>(self, v: u64) -> Result<Shown, E> {
                Ok(Shown::Exact(v.to_string()))
            }
            fn visit_f64<E: Error>(self, v: f64) -> Result<Shown, E> {
                Ok(Shown::Exact(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shown, A::Error> {
                let mut start = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "starts-with" {
                        return Err(A::Error::custom(format!(
                            "`{key}` is not a key of a received text: write the text, or `{{starts-with: text}}`"
                        )));
                    }
                    if start.is_some() {
                        return Err(A::Error::duplicate_field("starts-with"));
                    }
                    start = Some(map.next_value::<String>()?);
                }
                start.map(Shown::StartsWith).ok_or_else(|| {
                    A::Error::custom("a received text written as a map is `{starts-with: text}`")
                })
            }
        }
        d.deserialize_any(ShownVisitor)
    }
}

impl serde::Serialize for Shown {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Shown::Exact(text) => s.serialize_str(text),
            Shown::StartsWith(start) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("starts-with", start)?;
                map.end()
            }
        }
    }
}

impl JsonSchema for Shown {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Shown".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A text the device showed: the whole text, or `{starts-with: text}` for one whose end the scenario cannot know in advance.",
            "anyOf": [
                {"type": "string"},
                {
                    "type": "object",
                    "properties": {"starts-with": {"type": "string", "description": "How the text starts."}},
                    "required": ["starts-with"],
                    "additionalProperties": false,
                },
            ],
        })
    }
}

/// Expectations for one party.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PartyExpect {
    /// Device: the plaintexts shown to the user, in order (carbons included); an entry
    /// `{starts-with: text}` takes any text that starts so.
    #[serde(default)]
    pub received: Option<Vec<Shown>>,
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
    /// Device: parts of stanzas beyond message bodies it must have been shown (XEP-0210
    /// §4.1), each `name: text` — `subject: …`, `thread: …`, `xhtml: …`, `oob: <url>`,
    /// `chat-state: composing`, `correction: <replaced id>`, `status: …` (a presence), `payload:
    /// <text>` (an iq).
    #[serde(default)]
    pub parts: Vec<String>,
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
