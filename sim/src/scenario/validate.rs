//! Validation: a parsed file checked field by field (every error at its line, column and
//! path) and turned into the [`Scenario`] the runner executes.

use core::fmt;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use jabberwock_e2e::{BareJid, Element, FullJid, Jid, MessageParts, Protocol, Theft, TrustPolicy};
use jabberwock_xmpp::{Command, Hop};

use crate::attacker::{Action, AttackerPlan, ForgeKeys, HopKind, Injection, POWERS, Position, Rule, ids};
use crate::implementations::{Implementation, OURS, Registry};
use crate::units::{At, Dur, DurRange};

use super::schema::*;

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
    /// The independent implementation that runs its engine, behind its adapter (`None`: ours).
    pub implementation: Option<Implementation>,
    /// The faults of real clients its engine reproduces (declared by its protocol; ours only).
    pub quirks: BTreeSet<String>,
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
    /// When it first appears on the network, since the start (`None`: from the start). Before
    /// then it does not log in, and its schedule is empty.
    pub joins: Option<Duration>,
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
    /// Whether one certification authority enrolls every device (`pki: shared-ca`), or none
    /// does (`pki: none`).
    pub shared_ca: bool,
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

impl Scenario {
    /// Runs every device of `account` (its local part, `bob`, or its bare JID) on the
    /// implementation `name` of the registry ([`OURS`] for our own engines), as if the file
    /// named it for each of them (`jabberwock run --implementation bob=python-omemo`). It must
    /// be in the registry, speak each device's protocol and be installed here. Answers how many
    /// devices it moved.
    pub fn use_implementation_named(&mut self, account: &str, name: &str) -> Result<usize, String> {
        if name == OURS {
            return self.use_implementation(account, None);
        }
        let registry = Registry::load().map_err(|e| format!("the registry of implementations: {e}"))?;
        self.use_implementation(account, Some(registry.find(name)?))
    }

    /// [`Scenario::use_implementation_named`] with the implementation at hand (`None`: ours).
    pub fn use_implementation(
        &mut self,
        account: &str,
        chosen: Option<&Implementation>,
    ) -> Result<usize, String> {
        let mut moved = 0;
        for device in &mut self.devices {
            let bare = device.jid.to_bare();
            if bare.to_string() != account && bare.node().is_none_or(|n| n.as_str() != account) {
                continue;
            }
            if let Some(chosen) = chosen {
                let name = &chosen.name;
                if !device.quirks.is_empty() {
                    let quirks: Vec<&str> = device.quirks.iter().map(String::as_str).collect();
                    return Err(format!(
                        "{} has quirks ({}): they are our engine's, `{name}` cannot run it",
                        device.short,
                        quirks.join(", ")
                    ));
                }
                chosen.ready_for(device.protocol).map_err(|e| format!("{}: {e}", device.short))?;
            }
            device.implementation = chosen.cloned();
            moved += 1;
        }
        if moved == 0 {
            return Err(format!("no device of an account `{account}` in {}", self.name));
        }
        Ok(moved)
    }
}

/// Federated server pairs, each in name order.
type Federation = BTreeSet<(String, String)>;

/// Two servers as a [`Federation`] holds them: in name order.
/// The largest iq payload a step may send, in bytes.
const MAX_IQ_PAYLOAD: usize = 4096;
/// How deep an iq payload may nest: far below what a client accepts in a stanza
/// ([`jabberwock_xmpp::MAX_DEPTH`]), with room for the layers an engine wraps around it.
const MAX_IQ_DEPTH: usize = 8;
const _: () = assert!(MAX_IQ_DEPTH + 8 < jabberwock_xmpp::MAX_DEPTH);

/// How many elements deep `e` nests (itself counts one).
fn depth(e: &Element) -> usize {
    1 + e.children().map(depth).max().unwrap_or(0)
}

fn server_pair(a: &str, b: &str) -> (String, String) {
    if a < b { (a.to_owned(), b.to_owned()) } else { (b.to_owned(), a.to_owned()) }
}

/// Network events with their times.
type NetEvents = Vec<(Duration, NetEvent)>;

/// What a YAML error says, once: its message alone (the location is the error's own
/// `file:line:column`, not repeated, and no snippet with another column), on one line, with
/// control characters escaped (the text may quote the file).
fn yaml_message(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::MessageFormatter as _;
    let message = serde_saphyr::DefaultMessageFormatter.format_message(e.without_snippet());
    message.chars().flat_map(|c| if c.is_control() { c.escape_debug().collect() } else { vec![c] }).collect()
}

/// Parses and validates a scenario. `file` is only used in error messages.
pub fn parse(file: &str, yaml: &str) -> Result<Scenario, ScenarioError> {
    let raw: ScenarioFile = serde_saphyr::from_str(yaml).map_err(|e| {
        let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
        ScenarioError { file: file.to_owned(), line, column, path: String::new(), message: yaml_message(&e) }
    })?;
    Validator { file, raw: &raw, devices: BTreeMap::new(), registry: None }.run()
}

struct Validator<'a> {
    file: &'a str,
    raw: &'a ScenarioFile,
    /// full JID → (short name, protocol)
    devices: BTreeMap<FullJid, Known>,
    /// The registry of implementations, read when a device first names one.
    registry: Option<Registry>,
}

/// A device as the rest of the file may name it.
struct Known {
    /// How the scenario names it (`alice/phone`).
    short: String,
    protocol: Protocol,
    /// When it first appears on the network (`None`: from the start).
    joins: Option<Duration>,
    /// Who runs its engine (`None`: ours).
    implementation: Option<Implementation>,
    /// The quirks our engine reproduces on it.
    quirks: BTreeSet<String>,
}

impl Validator<'_> {
    fn err<T>(
        &self,
        at: (u64, u64),
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<T, ScenarioError> {
        Err(self.error(at, path, message))
    }

    fn error(&self, at: (u64, u64), path: impl Into<String>, message: impl Into<String>) -> ScenarioError {
        ScenarioError {
            file: self.file.to_owned(),
            line: at.0,
            column: at.1,
            path: path.into(),
            message: message.into(),
        }
    }

    fn device_ref(&self, at: (u64, u64), path: &str, name: &str) -> Result<FullJid, ScenarioError> {
        if let Ok(full) = name.parse::<FullJid>()
            && self.devices.contains_key(&full)
        {
            return Ok(full);
        }
        let matches: Vec<&FullJid> =
            self.devices.iter().filter(|(_, d)| d.short == name).map(|(j, _)| j).collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => {
                let known: Vec<&str> = self.devices.values().map(|d| d.short.as_str()).collect();
                self.err(at, path, format!("unknown device `{name}` (devices: {})", known.join(", ")))
            }
            _ => self.err(at, path, format!("`{name}` is ambiguous: write the full JID")),
        }
    }

    /// When `dev` joins the network, if that is after `at`: what it does at `at` cannot be.
    fn not_yet_joined(&self, dev: &FullJid, at: Duration) -> Option<(&str, Duration)> {
        let known = self.devices.get(dev)?;
        known.joins.filter(|joins| at < *joins).map(|joins| (known.short.as_str(), joins))
    }

    /// A protocol option under an account: a value its declaration lists.
    /// The registry's implementation `name` for a device of `protocol`: listed, speaking it,
    /// and installed here (its adapter answers a hello).
    fn implementation(
        &mut self,
        at: (u64, u64),
        path: &str,
        name: &str,
        protocol: Protocol,
    ) -> Result<Implementation, ScenarioError> {
        if self.registry.is_none() {
            let registry = Registry::load()
                .map_err(|e| self.error(at, path, format!("the registry of implementations: {e}")))?;
            self.registry = Some(registry);
        }
        let Some(registry) = self.registry.as_ref() else { return self.err(at, path, "no registry") };
        let found = registry.find(name).map_err(|e| self.error(at, path, e))?.clone();
        found.ready_for(protocol).map_err(|e| self.error(at, path, e))?;
        Ok(found)
    }

    /// A device's quirks: each one its protocol declares, named once, and only on a device our
    /// engine runs (an independent implementation has faults of its own).
    fn quirks(
        &self,
        path: &str,
        entry: &At<DeviceEntry>,
        protocol: Protocol,
    ) -> Result<BTreeSet<String>, ScenarioError> {
        let mut quirks = BTreeSet::new();
        for (i, quirk) in entry.quirks.iter().enumerate() {
            let (at, path) = ((quirk.line, quirk.column), format!("{path}.quirks[{i}]"));
            let declared = protocol.def().quirks;
            if declared.is_empty() {
                return self.err(at, path, format!("{protocol} declares no quirks"));
            }
            if protocol.def().quirk(quirk).is_none() {
                let names: Vec<&str> = declared.iter().map(|q| q.name).collect();
                return self.err(
                    at,
                    path,
                    format!("unknown quirk `{}` (quirks of {protocol}: {})", quirk.value, names.join(", ")),
                );
            }
            if !quirks.insert(quirk.value.clone()) {
                return self.err(at, path, format!("quirk `{}` named twice", quirk.value));
            }
            if let Some(name) = entry.implementation.as_deref().filter(|n| *n != OURS) {
                return self.err(
                    at,
                    path,
                    format!("quirks are our engine's: a device run by `{name}` cannot have them"),
                );
            }
        }
        Ok(quirks)
    }

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
                    "`{}` is not a value of `{key}` (an option of {protocol}): expected one of {}",
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

    /// A text that may name devices' ids (`$id(bob/phone)`), checked and made canonical
    /// ([`ids::canonical`]).
    fn with_ids(&self, at: (u64, u64), path: &str, text: &str) -> Result<String, ScenarioError> {
        ids::canonical(text, &mut |name| self.id_device(at, path, name), &|message| {
            self.error(at, path, message)
        })
    }

    /// XML whose texts and attribute values may name devices' ids, checked and made canonical.
    fn xml_with_ids(&self, at: (u64, u64), path: &str, xml: &str) -> Result<Element, ScenarioError> {
        let mut element = self.xml(at, path, xml)?;
        ids::canonical_element(&mut element, &mut |name| self.id_device(at, path, name), &|message| {
            self.error(at, path, message)
        })?;
        Ok(element)
    }

    /// The device a `$id(..)` names: one of the scenario's, whose protocol gives it an id.
    fn id_device(&self, at: (u64, u64), path: &str, name: &str) -> Result<FullJid, ScenarioError> {
        let dev = self.device_ref(at, path, name).map_err(|mut e| {
            e.message = format!("`$id({name})`: {}", e.message);
            e
        })?;
        match self.devices.get(&dev) {
            Some(known) if known.protocol.def().device_id.is_none() => {
                let with: Vec<&str> =
                    Protocol::ALL.iter().filter(|p| p.def().device_id.is_some()).map(|p| p.name()).collect();
                self.err(
                    at,
                    path,
                    format!(
                        "`$id({name})`: {} speaks {}, whose devices have no id (devices have one in: {})",
                        known.short,
                        known.protocol,
                        with.join(", ")
                    ),
                )
            }
            _ => Ok(dev),
        }
    }

    fn run(mut self) -> Result<Scenario, ScenarioError> {
        let raw = self.raw;
        let top = (1, 1);
        let (servers, federation) = self.servers()?;
        let accounts = self.accounts(&servers)?;
        let mut device_specs = self.device_specs(&accounts)?;
        let (links, events) = self.network(&servers, &mut device_specs)?;
        let mut end = self.timeline(&mut device_specs)?;
        for spec in device_specs.values_mut() {
            spec.schedule.sort_by_key(|(at, _)| *at);
            if let Some((at, _)) = spec.schedule.last() {
                end = end.max(*at);
            }
            // A device that joins after everything else still joins.
            end = end.max(spec.joins.unwrap_or_default());
        }
        for (at, _) in &events {
            end = end.max(*at);
        }
        let attacker = match &raw.attacker {
            None => None,
            Some(a) => {
                // Which devices the timeline compromises, and when (`forge: {keys: stolen}`).
                let compromises: Vec<(FullJid, Duration)> = device_specs
                    .iter()
                    .flat_map(|(jid, spec)| {
                        spec.schedule
                            .iter()
                            .filter(|(_, c)| matches!(c, Command::Compromise(_)))
                            .map(move |(at, _)| (jid.clone(), *at))
                    })
                    .collect();
                Some(self.attacker(a, &servers, &federation, &compromises)?)
            }
        };
        if let Some(plan) = &attacker {
            for (at, _, _) in &plan.inject {
                end = end.max(*at);
            }
        }
        let expect = self.expectations()?;
        let net = &raw.network;
        let latency =
            net.latency.unwrap_or(DurRange { min: Duration::from_millis(1), max: Duration::from_millis(10) });
        let tick = self.tick(latency, &links)?;
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
            shared_ca: raw.pki == PkiSpec::SharedCa,
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

    /// The servers, and which of them federate.
    fn servers(&self) -> Result<(Vec<String>, Federation), ScenarioError> {
        let raw = self.raw;
        let top = (1, 1);
        if raw.servers.is_empty() {
            return self.err(top, "servers", "at least one server is needed");
        }
        let mut servers = Vec::new();
        for (i, s) in raw.servers.iter().enumerate() {
            let pos = (s.line, s.column);
            if s.value.parse::<Jid>().map(|j| j.node().is_some() || j.resource().is_some()).unwrap_or(true) {
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
                    federation.insert(server_pair(a, b));
                }
            }
        }

        Ok((servers, federation))
    }

    /// The accounts (with their passwords) and their devices, which it records in
    /// `self.devices` for later references.
    fn accounts(&mut self, servers: &[String]) -> Result<BTreeMap<BareJid, String>, ScenarioError> {
        let raw = self.raw;
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
            for (res, entry) in &acc.devices {
                let dpos = (entry.line, entry.column);
                let Ok(full) = bare.with_resource_str(res) else {
                    return self.err(
                        dpos,
                        format!("{path}.devices.{res}"),
                        format!("`{res}` is not a valid resource"),
                    );
                };
                let protocol = entry
                    .protocol
                    .parse::<Protocol>()
                    .or_else(|e| self.err(dpos, format!("{path}.devices.{res}"), e))?;
                let short = format!("{}/{res}", bare.node().map(|n| n.to_string()).unwrap_or_default());
                let joins = entry.joins.map(|d| d.0).filter(|d| !d.is_zero());
                let quirks = self.quirks(&format!("{path}.devices.{res}"), entry, protocol)?;
                let implementation = match entry.implementation.as_deref() {
                    None | Some(OURS) => None,
                    Some(name) => Some(self.implementation(
                        dpos,
                        &format!("{path}.devices.{res}.implementation"),
                        name,
                        protocol,
                    )?),
                };
                self.devices.insert(full, Known { short, protocol, joins, implementation, quirks });
            }
        }
        Ok(accounts)
    }

    /// Every device, ready to run but for its schedule.
    fn device_specs(
        &self,
        accounts: &BTreeMap<BareJid, String>,
    ) -> Result<BTreeMap<FullJid, DeviceSpec>, ScenarioError> {
        let raw = self.raw;
        let mut device_specs: BTreeMap<FullJid, DeviceSpec> = BTreeMap::new();
        for (full, Known { short, protocol, joins, implementation, quirks }) in &self.devices {
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
                    implementation: implementation.clone(),
                    quirks: quirks.clone(),
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
                    joins: *joins,
                    schedule: vec![],
                },
            );
        }

        Ok(device_specs)
    }

    /// Links, and the network events in time order; offline windows go into the devices'
    /// schedules.
    fn network(
        &self,
        servers: &[String],
        device_specs: &mut BTreeMap<FullJid, DeviceSpec>,
    ) -> Result<(Vec<LinkConf>, NetEvents), ScenarioError> {
        let raw = self.raw;
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
            // Offline until it joins already: a window from then on is a later join in disguise.
            if let Some(Known { short, joins: Some(joins), .. }) = self.devices.get(&dev)
                && o.from.0 <= *joins
            {
                return self.err(
                    pos,
                    format!("{path}.from"),
                    format!(
                        "{short} joins at {} and is offline until then: an offline window must start later (this one starts at {}; to have it join later, change its `joins`)",
                        Dur(*joins),
                        o.from
                    ),
                );
            }
            if let Some(spec) = device_specs.get_mut(&dev) {
                spec.schedule.push((o.from.0, Command::GoOffline));
                if let Some(u) = o.until {
                    spec.schedule.push((u.0, Command::GoOnline));
                }
            }
        }
        events.sort();

        Ok((links, events))
    }

    /// The timeline's steps, into the devices' schedules. Returns the time of the last one.
    fn timeline(&self, device_specs: &mut BTreeMap<FullJid, DeviceSpec>) -> Result<Duration, ScenarioError> {
        let raw = self.raw;
        let mut last = Duration::ZERO;
        let mut end = Duration::ZERO;
        // (device, account) pairs with a message sent so far: what a correction may replace.
        let mut sent_to: BTreeSet<(FullJid, BareJid)> = BTreeSet::new();
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
                step.presence.is_some(),
                step.iq.is_some(),
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
                        "a step needs exactly one of send, presence, iq, go, raw, verify, compromise, wait (found {n})"
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
            if let Some((short, joins)) = self.not_yet_joined(&dev, at) {
                return self.err(
                    pos,
                    format!("{path}.at"),
                    format!(
                        "{short} joins at {}: a step at {} comes before it exists on the network",
                        Dur(joins),
                        step.at
                    ),
                );
            }
            let command = if let Some(s) = &step.send {
                let to = self.account_ref(pos, &format!("{path}.send.to"), &s.to)?;
                if s.correction && !sent_to.contains(&(dev.clone(), to.clone())) {
                    return self.err(
                        pos,
                        format!("{path}.send.correction"),
                        format!(
                            "a correction replaces an earlier message: this device sends none to {to} before"
                        ),
                    );
                }
                sent_to.insert((dev.clone(), to.clone()));
                let parts = MessageParts {
                    subject: s.subject.clone(),
                    thread: s.thread.clone(),
                    xhtml: s.xhtml.clone(),
                    oob: s.oob.clone(),
                    chat_state: s.chat_state.map(|c| c.name().to_owned()),
                    correction: s.correction,
                };
                Command::Send { to, body: s.body.clone(), parts }
            } else if let Some(p) = &step.presence {
                let field = format!("{path}.presence.to");
                let to = match self.account_ref(pos, &field, &p.to) {
                    Ok(account) => Jid::from(account),
                    Err(_) => Jid::from(self.device_ref(pos, &field, &p.to).map_err(|mut e| {
                        e.message = format!("`{}` is neither an account nor a device", p.to);
                        e
                    })?),
                };
                Command::Presence { to, status: p.status.clone() }
            } else if let Some(q) = &step.iq {
                let to = self.device_ref(pos, &format!("{path}.iq.to"), &q.to)?;
                let field = format!("{path}.iq.payload");
                if q.payload.len() > MAX_IQ_PAYLOAD {
                    return self.err(pos, field, format!("a payload is at most {MAX_IQ_PAYLOAD} bytes"));
                }
                let payload = self.xml(pos, &field, &q.payload)?;
                if depth(&payload) > MAX_IQ_DEPTH {
                    return self.err(
                        pos,
                        field,
                        format!("a payload nests at most {MAX_IQ_DEPTH} elements deep"),
                    );
                }
                Command::Iq { to, payload }
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
                    TheftSpec::IdentityKey => Theft::IdentityKey,
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
        Ok(end)
    }

    /// `expect:`, party by party.
    fn expectations(&self) -> Result<Vec<(Party, String, PartyExpect)>, ScenarioError> {
        let raw = self.raw;
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
                    || !e.parts.is_empty()
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

        Ok(expect)
    }

    /// The simulation's tick: longer than zero, and no longer than the smallest latency.
    fn tick(&self, latency: DurRange, links: &[LinkConf]) -> Result<Duration, ScenarioError> {
        let raw = self.raw;
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
        Ok(tick)
    }

    fn attacker(
        &self,
        a: &AttackerSpec,
        servers: &[String],
        federation: &Federation,
        compromises: &[(FullJid, Duration)],
    ) -> Result<AttackerPlan, ScenarioError> {
        let position = self.position(a, servers, federation)?;
        let rules = self.rules(a, &position, servers, federation, compromises)?;
        let inject = self.injections(a, &position, federation, compromises, &rules)?;
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
        let mut protocols: Vec<Protocol> = self.devices.values().map(|d| d.protocol).collect();
        protocols.sort();
        protocols.dedup();
        // The wires are asked in this order: one that claims every body (the control) last.
        protocols.sort_by_key(|p| p.wire().claims_every_body());
        Ok(AttackerPlan { position, rules, inject, terminate_tls, protocols })
    }

    /// Where the attacker sits.
    fn position(
        &self,
        a: &AttackerSpec,
        servers: &[String],
        federation: &Federation,
    ) -> Result<Position, ScenarioError> {
        let pos = (a.position.line, a.position.column);
        let words: Vec<&str> = a.position.value.split_whitespace().collect();
        let position = match words.as_slice() {
            ["everywhere"] => Position::Everywhere,
            ["server", d] if servers.iter().any(|s| s == d) => Position::Server((*d).to_owned()),
            ["network", x, "<->", y] => {
                let is_server = |n: &str| servers.iter().any(|s| s == n);
                match (is_server(x), is_server(y)) {
                    (true, true) => {
                        let pair = server_pair(x, y);
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
        Ok(position)
    }

    /// The rules: what each matches (names that exist, hops the position sees) and its power.
    fn rules(
        &self,
        a: &AttackerSpec,
        position: &Position,
        servers: &[String],
        federation: &Federation,
        compromises: &[(FullJid, Duration)],
    ) -> Result<Vec<Rule>, ScenarioError> {
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
            let reachable_kind = |k: HopKind| match (position, k) {
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
            let mut matcher = m.clone();
            if let Some(text) = &m.text {
                matcher.text = Some(self.with_ids(rpos, &format!("{path}.match.text"), text)?);
            }
            for (name, value) in matcher.attributes.iter_mut() {
                let apath = format!("{path}.match.attributes.{name}");
                if let Err(why) = crate::attacker::attribute_name(name) {
                    return self.err(rpos, apath, why);
                }
                *value = self.with_ids(rpos, &apath, value)?;
            }
            let action = Action::from_spec(
                &r.action,
                position,
                &RuleCx { v: self, at: rpos, path: &path, compromises },
            )?;
            rules.push(Rule { index: i, matcher, action });
        }
        Ok(rules)
    }

    /// The injections: their hops (within the position's reach) and what they put there.
    fn injections(
        &self,
        a: &AttackerSpec,
        position: &Position,
        federation: &Federation,
        compromises: &[(FullJid, Duration)],
        rules: &[Rule],
    ) -> Result<Vec<(Duration, Hop, Injection)>, ScenarioError> {
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
                    let pair = server_pair(a, b);
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
            if let Hop::ClientToServer { client, .. } | Hop::ServerToClient { client, .. } = &hop
                && let Some((short, joins)) = self.not_yet_joined(client, inj.at.0)
            {
                return self.err(
                    ipos,
                    format!("{path}.at"),
                    format!("{short} joins at {}: at {} it has no link to inject on", Dur(joins), inj.at),
                );
            }
            let what = match (&inj.stanza, &inj.forge, &inj.forward) {
                (Some(xml), None, None) => {
                    let stanza = self.xml_with_ids(ipos, &format!("{path}.stanza"), xml)?;
                    if stanza.ns() != jabberwock_e2e::xml::NS_CLIENT {
                        return self.err(
                            ipos,
                            format!("{path}.stanza"),
                            "an injected stanza is in xmlns='jabber:client'",
                        );
                    }
                    Injection::Stanza(stanza)
                }
                (None, Some(f), None) => {
                    let from = self.device_ref(ipos, &format!("{path}.forge.from"), &f.from)?;
                    let to = self.account_ref(ipos, &format!("{path}.forge.to"), &f.to)?;
                    let Some(protocol) = self.devices.get(&from).map(|d| d.protocol) else {
                        return self.err(ipos, format!("{path}.forge.from"), "not a device of this scenario");
                    };
                    if f.keys == ForgeKeys::Stolen
                        && !compromises.iter().any(|(d, at)| *d == from && *at < inj.at.0)
                    {
                        return self.err(
                            ipos,
                            format!("{path}.forge.keys"),
                            format!(
                                "`stolen` needs a `compromise` of {} in the timeline before {}",
                                f.from, inj.at
                            ),
                        );
                    }
                    let owner = from.to_bare();
                    if f.keys == ForgeKeys::Served
                        && !rules.iter().any(|r| matches!(&r.action, Action::Impersonate(o) if *o == owner))
                    {
                        return self.err(
                            ipos,
                            format!("{path}.forge.keys"),
                            format!("`served` needs a rule `impersonate: {{owner: {owner}}}` to serve them"),
                        );
                    }
                    Injection::Forge { from, to, protocol, body: f.body.clone(), keys: f.keys }
                }
                (None, None, Some(f)) => {
                    let stolen = self.device_ref(ipos, &format!("{path}.forward.stolen"), &f.stolen)?;
                    let from = self.account_ref(ipos, &format!("{path}.forward.from"), &f.from)?;
                    let to = self.account_ref(ipos, &format!("{path}.forward.to"), &f.to)?;
                    Injection::Forward { stolen, from, to, body: f.body.clone() }
                }
                _ => return self.err(ipos, path, "give exactly one of `stanza`, `forge` or `forward`"),
            };
            inject.push((inj.at.0, hop, what));
        }
        Ok(inject)
    }
}

/// The JSON Schema of scenario files, pretty-printed with a trailing newline.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(ScenarioFile);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}

/// What a rule's power needs from the validation: XML parsed and accounts resolved, errors at
/// the rule's line and column, under `<path>.do`.
struct RuleCx<'a, 'b> {
    v: &'a Validator<'b>,
    at: (u64, u64),
    path: &'a str,
    /// The devices the timeline compromises, and when.
    compromises: &'a [(FullJid, Duration)],
}

impl crate::attacker::Resolve for RuleCx<'_, '_> {
    type Error = ScenarioError;

    fn xml(&self, field: &str, xml: &str) -> Result<Element, ScenarioError> {
        self.v.xml_with_ids(self.at, &format!("{}.do.{field}", self.path), xml)
    }

    fn account(&self, field: &str, name: &str) -> Result<BareJid, ScenarioError> {
        self.v.account_ref(self.at, &format!("{}.do.{field}", self.path), name)
    }

    fn stolen(&self, field: &str, name: &str) -> Result<FullJid, ScenarioError> {
        let device = self.v.device_ref(self.at, &format!("{}.do.{field}", self.path), name)?;
        if !self.compromises.iter().any(|(d, _)| *d == device) {
            return Err(self.fail(field, &format!("needs a `compromise` of {name} in the timeline")));
        }
        Ok(device)
    }

    fn fail(&self, field: &str, message: &str) -> ScenarioError {
        ScenarioError {
            file: self.v.file.to_owned(),
            line: self.at.0,
            column: self.at.1,
            path: format!("{}.do.{field}", self.path),
            message: message.to_owned(),
        }
    }
}
