//! The engine protocol's JSON shapes (`docs/engine-protocol.md`), and their translation to and
//! from the engine's types. What comes from the other side is untrusted: every translation
//! from JSON is a `Result`, its error a sentence for the transcript.

use core::time::Duration;
use std::collections::BTreeMap;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use serde::{Deserialize, Serialize};

use crate::intern;
use jabberwock_e2e::kit::codec::{hex, unhex};
use jabberwock_e2e::{
    Action, Carbon, Ceremony, E2eError, EngineConfig, Event, IdentityMarks, Output, Protocol, Theft, Trust,
    TrustPolicy, VerificationResult, reason,
};

/// One request: a line from the caller to the adapter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Request {
    /// Echoed in the answer.
    pub id: u64,
    /// The call and its arguments (`"call": "receive", "stanza": ...`).
    #[serde(flatten)]
    pub call: Call,
    /// The engine the call is for: the handle `new` or `steal` answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The simulated time, in milliseconds since the Unix epoch (calls that take a `Cx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<u64>,
    /// 32 bytes in hex, drawn from the caller's random stream: the call's randomness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
}

/// Every call, with its arguments. Stanzas and elements are XML text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub(super) enum Call {
    Hello { version: u32 },
    New { me: String, config: ConfigWire },
    Publish,
    GoingOffline,
    Presence,
    ReceivePresence { stanza: String },
    Send { to: String, body: String },
    SendMessage { to: String, body: String, parts: Vec<String> },
    SendPresence { to: String, status: String },
    SendIq { to: String, payload: String },
    OwnsPart { part: String },
    MessageId { to: String },
    Receive { stanza: String },
    Drain,
    FetchFailed { owner: String, node: String, condition: String },
    Verify { peer: String, peer_says: Vec<String> },
    OutOfBand,
    IdentityMarks,
    PeerMarks { peer: String },
    Ceremony { peer: String },
    Forge { from: String, body: String },
    Forward { recorded: String, to: String, body: String },
    Reencrypt { stanza: String, body: String },
    Steal { what: String },
    Restore { state: String },
    Drop,
}

/// Every call's name, as requests write it.
pub(super) const CALLS: &[&str] = &[
    "hello",
    "new",
    "publish",
    "going_offline",
    "presence",
    "receive_presence",
    "send",
    "send_message",
    "send_presence",
    "send_iq",
    "owns_part",
    "message_id",
    "receive",
    "drain",
    "fetch_failed",
    "verify",
    "out_of_band",
    "identity_marks",
    "peer_marks",
    "ceremony",
    "forge",
    "forward",
    "reencrypt",
    "steal",
    "restore",
    "drop",
];

impl Call {
    /// The call's name ([`CALLS`]).
    pub fn name(&self) -> &'static str {
        let value = serde_json::to_value(self).ok();
        let name = value.as_ref().and_then(|v| v.get("call")).and_then(|c| c.as_str()).unwrap_or("");
        CALLS.iter().copied().find(|c| *c == name).unwrap_or("unknown")
    }
}

/// One answer: a line from the adapter to the caller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Answer {
    /// The request's id (`null` when the request could not be read at all).
    pub id: Option<u64>,
    /// `"ok": {...}`, `"error": {...}` or `"unimplemented": "why"`.
    #[serde(flatten)]
    pub reply: Reply,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Reply {
    Ok(serde_json::Value),
    Error(ErrorWire),
    Unimplemented(String),
}

/// An engine error: its code (`E2eError::code`), the element for `malformed` and
/// `missing-element`, and details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ErrorWire {
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub what: Option<String>,
    #[serde(default)]
    pub detail: String,
}

// ---- answers of each call ------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct HelloOk {
    pub version: u32,
    pub implementation: String,
    pub implementation_version: String,
    pub protocol: String,
    pub calls: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct EngineOk {
    pub engine: String,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub iq_namespaces: Vec<String>,
    /// `steal`: the stolen state as an opaque blob another child may `restore`, when the
    /// adapter can serialise it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct OutputWire {
    #[serde(default)]
    pub actions: Vec<ActionWire>,
    #[serde(default)]
    pub events: Vec<EventWire>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ElementsOk {
    pub elements: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct OwnsOk {
    pub owns: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct MessageIdOk {
    pub id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct OutOfBandOk {
    pub peer_says: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct MarksOk {
    pub marks: Vec<MarkWire>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct MarkWire {
    pub name: String,
    pub hex: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct CeremonyOk {
    pub ceremony: Option<CeremonyWire>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StanzaOk {
    pub stanza: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ForwardOk {
    pub output: Option<OutputWire>,
}

// ---- actions and events --------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ActionWire {
    Send { stanza: String },
    Publish { node: String, id: String, item: String, options: Vec<(String, String)> },
    Fetch { owner: String, node: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum EventWire {
    Plaintext {
        from: String,
        body: String,
        trust: String,
        #[serde(default)]
        delay_ms: Option<u64>,
        #[serde(default)]
        carbon: Option<String>,
    },
    Parts {
        from: String,
        stanza: String,
        parts: Vec<String>,
    },
    /// An [`Event::Alert`] (named apart so that its `reason` reads as the adapter's copy).
    #[serde(rename = "alert")]
    Alerted {
        reason: String,
        detail: String,
    },
    TrustChanged {
        peer: String,
        device: String,
        fingerprint: String,
        trust: String,
    },
    Ceremony {
        peer: String,
        ceremony: CeremonyWire,
    },
    Verification {
        peer: String,
        result: String,
    },
    Rejected {
        from: String,
        error: ErrorWire,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(super) enum CeremonyWire {
    Compare { text: String },
    SharedSecret,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct ConfigWire {
    pub trust: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub max_message: Option<usize>,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub ca: Option<String>,
}

// ---- words ---------------------------------------------------------------------------------

const TRUSTS: &[(Trust, &str)] = &[
    (Trust::Unencrypted, "unencrypted"),
    (Trust::Unverified, "unverified"),
    (Trust::Verified, "verified"),
    (Trust::Untrusted, "untrusted"),
];
const POLICIES: &[(TrustPolicy, &str)] =
    &[(TrustPolicy::Btbv, "btbv"), (TrustPolicy::Tofu, "tofu"), (TrustPolicy::Manual, "manual")];
const CARBONS: &[(Carbon, &str)] = &[(Carbon::Received, "received"), (Carbon::Sent, "sent")];
const RESULTS: &[(VerificationResult, &str)] = &[
    (VerificationResult::Match, "match"),
    (VerificationResult::Mismatch, "mismatch"),
    (VerificationResult::NotSupported, "not-supported"),
    (VerificationResult::NothingToCompare, "nothing-to-compare"),
];
const THEFTS: &[(Theft, &str)] = &[
    (Theft::IdentityKey, "identity-key"),
    (Theft::LongTermKeys, "long-term-keys"),
    (Theft::FullState, "full-state"),
];
const STANZAS: &[&str] = &["message", "presence", "iq"];

fn word<T: PartialEq + Copy>(table: &[(T, &'static str)], value: T) -> &'static str {
    table.iter().find(|(v, _)| *v == value).map_or("", |(_, w)| w)
}

fn value<T: Copy>(table: &[(T, &'static str)], what: &str, word: &str) -> Result<T, String> {
    table.iter().find(|(_, w)| *w == word).map(|(v, _)| *v).ok_or_else(|| format!("unknown {what} `{word}`"))
}

pub(super) fn theft_word(theft: Theft) -> &'static str {
    word(THEFTS, theft)
}

pub(super) fn theft(w: &str) -> Result<Theft, String> {
    value(THEFTS, "theft", w)
}

// ---- XML and JIDs --------------------------------------------------------------------------

pub(super) fn xml(e: &Element) -> String {
    String::from(e)
}

pub(super) fn element(what: &str, text: &str) -> Result<Element, String> {
    if !jabberwock_e2e::xml::nesting_within(text, jabberwock_e2e::xml::MAX_DEPTH) {
        return Err(format!("{what} is nested deeper than {} elements", jabberwock_e2e::xml::MAX_DEPTH));
    }
    text.parse::<Element>().map_err(|e| format!("{what} is not XML: {e}"))
}

pub(super) fn jid<J: core::str::FromStr<Err = jid::Error>>(what: &str, text: &str) -> Result<J, String> {
    text.parse::<J>().map_err(|e| format!("{what} `{text}` is not a JID: {e}"))
}

// ---- the engine's types to JSON (the adapter's side) ---------------------------------------

pub(super) fn output_wire(out: &Output) -> OutputWire {
    OutputWire {
        actions: out.actions.iter().map(action_wire).collect(),
        events: out.events.iter().map(event_wire).collect(),
    }
}

fn action_wire(a: &Action) -> ActionWire {
    match a {
        Action::Send(s) => ActionWire::Send { stanza: xml(s) },
        Action::Publish { node, id, item, options } => ActionWire::Publish {
            node: node.clone(),
            id: id.clone(),
            item: xml(item),
            options: options.clone(),
        },
        Action::Fetch { owner, node } => ActionWire::Fetch { owner: owner.to_string(), node: node.clone() },
    }
}

fn event_wire(e: &Event) -> EventWire {
    match e {
        Event::Plaintext { from, body, trust, delay, carbon } => EventWire::Plaintext {
            from: from.to_string(),
            body: body.clone(),
            trust: word(TRUSTS, *trust).to_owned(),
            delay_ms: delay.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            carbon: carbon.map(|c| word(CARBONS, c).to_owned()),
        },
        Event::Parts { from, stanza, parts } => EventWire::Parts {
            from: from.to_string(),
            stanza: (*stanza).to_owned(),
            parts: parts.iter().map(xml).collect(),
        },
        Event::Alert { reason, detail } => {
            EventWire::Alerted { reason: (*reason).to_owned(), detail: detail.clone() }
        }
        Event::TrustChanged { peer, device, fingerprint, trust } => EventWire::TrustChanged {
            peer: peer.to_string(),
            device: device.clone(),
            fingerprint: fingerprint.clone(),
            trust: word(TRUSTS, *trust).to_owned(),
        },
        Event::Ceremony { peer, ceremony } => {
            EventWire::Ceremony { peer: peer.to_string(), ceremony: ceremony_wire(ceremony) }
        }
        Event::Verification { peer, result } => {
            EventWire::Verification { peer: peer.to_string(), result: word(RESULTS, *result).to_owned() }
        }
        Event::Rejected { from, error } => {
            EventWire::Rejected { from: from.to_string(), error: error_wire(error) }
        }
    }
}

pub(super) fn ceremony_wire(c: &Ceremony) -> CeremonyWire {
    match c {
        Ceremony::Compare(text) => CeremonyWire::Compare { text: text.clone() },
        Ceremony::SharedSecret => CeremonyWire::SharedSecret,
    }
}

pub(super) fn error_wire(e: &E2eError) -> ErrorWire {
    let (what, detail) = match e {
        E2eError::Malformed { what, detail } => (Some((*what).to_owned()), detail.clone()),
        E2eError::Missing { what } => (Some((*what).to_owned()), String::new()),
        E2eError::Rejected { detail, .. }
        | E2eError::Policy { detail }
        | E2eError::Adapter { detail, .. }
        | E2eError::Unimplemented { detail, .. } => (None, detail.clone()),
    };
    ErrorWire { code: e.code().to_owned(), what, detail }
}

pub(super) fn marks_wire(marks: &IdentityMarks) -> MarksOk {
    MarksOk {
        marks: marks
            .iter()
            .map(|(name, bytes)| MarkWire { name: (*name).to_owned(), hex: hex(bytes) })
            .collect(),
    }
}

pub(super) fn config_wire(c: &EngineConfig) -> ConfigWire {
    ConfigWire {
        trust: word(POLICIES, c.trust).to_owned(),
        options: c.options.clone(),
        max_message: c.max_message,
        secrets: c.secrets.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        ca: c.ca.map(|ca| hex(&ca)),
    }
}

pub(super) fn config(c: &ConfigWire) -> Result<EngineConfig, String> {
    let mut secrets = BTreeMap::new();
    for (peer, secret) in &c.secrets {
        secrets.insert(jid::<BareJid>("a secret's peer", peer)?, secret.clone());
    }
    let ca = match &c.ca {
        None => None,
        Some(text) => Some(
            unhex(text)
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| "ca is not 32 bytes in hex".to_owned())?,
        ),
    };
    Ok(EngineConfig {
        trust: value(POLICIES, "trust policy", &c.trust)?,
        options: c.options.clone(),
        max_message: c.max_message,
        secrets,
        ca,
        // Quirks are our engines' own: they never cross the pipe.
        quirks: Default::default(),
    })
}

// ---- JSON to the engine's types (the caller's side: untrusted) -----------------------------

/// The declared reason `code` that an engine of `protocol` may report, as the engine API holds
/// it. An adapter's own failures (`adapter-*`, `unimplemented`) are the caller's to report,
/// never the child's.
fn reported(protocol: Protocol, code: &str) -> Result<reason::Reason, String> {
    let ours = reason::ADAPTER.iter().chain([&reason::UNIMPLEMENTED]).any(|r| r.code == code);
    let declared = reason::EVERY_ENGINE.iter().chain(protocol.reasons()).find(|r| r.code == code);
    match declared {
        Some(r) if !ours => Ok(*r),
        _ => Err(format!("the reason `{code}` is not one {protocol} declares")),
    }
}

/// A declared reason, read where it was checked: its code is what the engine API carries.
struct Declared(reason::Reason);

impl Declared {
    fn code(&self) -> &'static str {
        self.0.code
    }
}

pub(super) fn error(protocol: Protocol, w: &ErrorWire) -> Result<E2eError, String> {
    let what = || -> Result<&'static str, String> {
        let what = w.what.as_deref().unwrap_or("element");
        intern(what).ok_or_else(|| format!("`what` too long or too many of them: {what:.40}"))
    };
    Ok(match w.code.as_str() {
        c if c == reason::MALFORMED.code => E2eError::Malformed { what: what()?, detail: w.detail.clone() },
        c if c == reason::MISSING_ELEMENT.code => E2eError::Missing { what: what()? },
        c if c == reason::POLICY.code => E2eError::Policy { detail: w.detail.clone() },
        code => {
            let declared = Declared(reported(protocol, code)?);
            if declared.0.fault.is_none() {
                return Err(format!("`{code}` is a notice, not an error"));
            }
            E2eError::Rejected { reason: declared.code(), detail: w.detail.clone() }
        }
    })
}

pub(super) fn output(protocol: Protocol, w: OutputWire) -> Result<Output, String> {
    let mut out = Output::default();
    for a in w.actions {
        out.actions.push(match a {
            ActionWire::Send { stanza } => Action::Send(element("a sent stanza", &stanza)?),
            ActionWire::Publish { node, id, item, options } => {
                Action::Publish { node, id, item: element("a published item", &item)?, options }
            }
            ActionWire::Fetch { owner, node } => {
                Action::Fetch { owner: jid("a fetch's owner", &owner)?, node }
            }
        });
    }
    for e in w.events {
        out.events.push(event(protocol, e)?);
    }
    Ok(out)
}

fn event(protocol: Protocol, e: EventWire) -> Result<Event, String> {
    Ok(match e {
        EventWire::Plaintext { from, body, trust, delay_ms, carbon } => Event::Plaintext {
            from: jid::<Jid>("a plaintext's sender", &from)?,
            body,
            trust: value(TRUSTS, "trust", &trust)?,
            delay: delay_ms.map(Duration::from_millis),
            carbon: carbon.map(|c| value(CARBONS, "carbon", &c)).transpose()?,
        },
        EventWire::Parts { from, stanza, parts } => Event::Parts {
            from: jid::<Jid>("the parts' sender", &from)?,
            stanza: STANZAS
                .iter()
                .copied()
                .find(|s| *s == stanza)
                .ok_or_else(|| format!("unknown stanza `{stanza}`"))?,
            parts: parts.iter().map(|p| element("a part", p)).collect::<Result<_, _>>()?,
        },
        EventWire::Alerted { reason, detail } => {
            let declared = Declared(reported(protocol, &reason)?);
            Event::Alert { reason: declared.code(), detail }
        }
        EventWire::TrustChanged { peer, device, fingerprint, trust } => Event::TrustChanged {
            peer: jid("a trusted peer", &peer)?,
            device,
            fingerprint,
            trust: value(TRUSTS, "trust", &trust)?,
        },
        EventWire::Ceremony { peer, ceremony: c } => {
            Event::Ceremony { peer: jid("a ceremony's peer", &peer)?, ceremony: ceremony(c) }
        }
        EventWire::Verification { peer, result } => Event::Verification {
            peer: jid("a verified peer", &peer)?,
            result: value(RESULTS, "verification result", &result)?,
        },
        EventWire::Rejected { from, error: e } => Event::Rejected {
            from: jid::<Jid>("a rejected stanza's sender", &from)?,
            error: error(protocol, &e)?,
        },
    })
}

pub(super) fn ceremony(c: CeremonyWire) -> Ceremony {
    match c {
        CeremonyWire::Compare { text } => Ceremony::Compare(text),
        CeremonyWire::SharedSecret => Ceremony::SharedSecret,
    }
}

pub(super) fn marks(w: MarksOk) -> Result<IdentityMarks, String> {
    w.marks
        .into_iter()
        .map(|m| {
            let name =
                intern(&m.name).ok_or_else(|| format!("mark name too long or too many: {:.40}", m.name))?;
            let bytes = unhex(&m.hex).ok_or_else(|| format!("mark {name} is not hex"))?;
            Ok((name, bytes))
        })
        .collect()
}

/// A full JID for `send_iq`'s `to` (the adapter's side).
pub(super) fn full_jid(what: &str, text: &str) -> Result<FullJid, String> {
    jid(what, text)
}
