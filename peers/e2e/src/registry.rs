//! The protocol registry: what the rest of the bench may know of a protocol.
//!
//! A protocol lives in its own folder and exports one [`ProtocolDef`]: its name, how to build
//! an engine, the scenario options it accepts, and the reasons (error codes and alerts) it
//! reports. The list of them is the registry ([`Protocol::ALL`], made by the `protocols!` line
//! in `lib.rs`); nothing outside a protocol's folder names it (`peers/e2e/tests/registry.rs`
//! checks it), so adding one is its folder plus one registry line. The simulator, the attacker and the judges see protocols only through
//! this seam (after tlspuffin's `Put`, looked up by name).

use core::cmp::Ordering;
use core::fmt;
use core::str::FromStr;

use jid::FullJid;
use rand_core::RngCore;

use crate::{Engine, EngineConfig, Reason, Wire};

/// A protocol as its folder describes it to the registry.
pub struct ProtocolDef {
    /// The identifier scenario files and reports use (`omemo-legacy`): lowercase kebab-case.
    pub name: &'static str,
    /// The module it lives in (`module_path!()` where the entry is written): its folder.
    pub module: &'static str,
    /// Builds a fresh engine (new identity from `rng`, no sessions) for the device `me`.
    pub build: fn(me: &FullJid, rng: &mut dyn RngCore, config: &EngineConfig) -> Box<dyn Engine>,
    /// The account-level scenario options it reads (validated generically by the scenario
    /// loader: a key no protocol declares, or a value the declaration does not list, is an
    /// error at its line and column).
    pub options: &'static [&'static OptionDecl],
    /// What the attacker, the judges and the diagrams may know of its wire format.
    pub wire: &'static dyn Wire,
    /// Every reason its engine reports (error codes and alerts) beyond those every engine
    /// reports ([`crate::reason::EVERY_ENGINE`]), as a text file in its folder declares them
    /// (`include_str!`; the format is [`crate::reason::parse`]'s): its own, and the shared ones
    /// of [`crate::reason`] it uses. Read them with [`Protocol::reasons`]. Scenario files may
    /// expect only declared reasons; the simulator's tests fail when its code reports one that
    /// is not listed.
    pub reasons: &'static str,
    /// What a device's id is, for a protocol whose devices carry one that peers see on the
    /// wire (OMEMO's device id, XEP-0384 §devices), in a few words for error messages and the
    /// documentation; `None` when its devices have none. Its engines give theirs with
    /// [`Engine::device_id`] (scenario files name it `$id(bob/phone)`).
    pub device_id: Option<&'static str>,
    /// The faults real clients of this protocol have shipped that its engine can reproduce on
    /// request (a device's `quirks: [..]` in a scenario; [`EngineConfig::quirks`]), so a
    /// scenario can ask how an implementation copes with a peer that has one. Empty for most.
    pub quirks: &'static [QuirkDecl],
}

impl ProtocolDef {
    /// An entry without options.
    pub const fn new(
        name: &'static str,
        module: &'static str,
        build: fn(&FullJid, &mut dyn RngCore, &EngineConfig) -> Box<dyn Engine>,
        wire: &'static dyn Wire,
        reasons: &'static str,
    ) -> ProtocolDef {
        ProtocolDef { name, module, build, options: &[], wire, reasons, device_id: None, quirks: &[] }
    }

    /// The entry for a protocol whose devices have an id ([`ProtocolDef::device_id`]).
    pub const fn with_device_id(self, what: &'static str) -> ProtocolDef {
        ProtocolDef { device_id: Some(what), ..self }
    }

    /// The entry with these quirks ([`ProtocolDef::quirks`]).
    pub const fn with_quirks(self, quirks: &'static [QuirkDecl]) -> ProtocolDef {
        ProtocolDef { quirks, ..self }
    }

    /// The declared quirk named `name`, if it is one.
    pub fn quirk(&self, name: &str) -> Option<&'static QuirkDecl> {
        self.quirks.iter().find(|q| q.name == name)
    }

    /// The entry with these account options.
    pub const fn with_options(self, options: &'static [&'static OptionDecl]) -> ProtocolDef {
        ProtocolDef { options, ..self }
    }
}

impl fmt::Debug for ProtocolDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtocolDef")
            .field("name", &self.name)
            .field("options", &self.options)
            .field("reasons", &self.reasons.lines().count())
            .finish()
    }
}

/// A fault a real client of a protocol shipped, which the protocol's engine reproduces when a
/// device asks for it (`phone: {protocol: omemo-legacy, quirks: [iv-16]}`).
#[derive(Debug)]
pub struct QuirkDecl {
    /// Its name in scenario files (lowercase kebab-case).
    pub name: &'static str,
    /// What the device then does on the wire, in a sentence.
    pub reproduces: &'static str,
    /// The known client issue it reproduces: where it was reported (issue threads, by
    /// repository and number), as found, never guessed.
    pub issue: &'static str,
}

/// A setting a protocol reads from its accounts in scenario files (`otr: opportunistic` under an
/// account): a key, and the values it may take, the first of them the default.
#[derive(Debug)]
pub struct OptionDecl {
    /// The key under the account (lowercase kebab-case).
    pub key: &'static str,
    /// What it sets, for the schema and error messages.
    pub about: &'static str,
    /// The values it takes, each with what it means; the first is the default.
    pub values: &'static [(&'static str, &'static str)],
}

impl OptionDecl {
    /// The default value.
    pub fn default_value(&self) -> &'static str {
        self.values.first().map_or("", |(v, _)| v)
    }

    /// The declared value equal to `value`, if it is one.
    pub fn accepts(&self, value: &str) -> Option<&'static str> {
        self.values.iter().map(|(v, _)| *v).find(|v| *v == value)
    }

    /// This option's value in `config`: what the scenario set, else the default.
    pub fn value_in(&self, config: &EngineConfig) -> &'static str {
        config.options.get(self.key).and_then(|v| self.accepts(v)).unwrap_or_else(|| self.default_value())
    }
}

/// A protocol: a handle on its registry entry. Scenario files name it by [`Protocol::name`];
/// protocols compare and sort in registry order, which is the order reports list them in.
#[derive(Clone, Copy)]
pub struct Protocol(&'static ProtocolDef);

impl Protocol {
    /// Every protocol this build implements, in the order reports list them.
    pub const ALL: &'static [Protocol] = crate::PROTOCOLS;

    /// The handle on a protocol's own entry (for its engine's [`Engine::protocol`]).
    pub const fn of(def: &'static ProtocolDef) -> Protocol {
        Protocol(def)
    }

    /// The identifier used in scenario files and reports.
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// Its wire description.
    pub fn wire(self) -> &'static dyn Wire {
        self.0.wire
    }

    /// The protocol's registry entry.
    pub fn def(self) -> &'static ProtocolDef {
        self.0
    }

    /// The reasons it reports beyond every engine's ([`ProtocolDef::reasons`], read once).
    pub fn reasons(self) -> &'static [Reason] {
        static READ: std::sync::OnceLock<Vec<Vec<Reason>>> = std::sync::OnceLock::new();
        let all = READ.get_or_init(|| {
            Protocol::ALL.iter().map(|p| crate::reason::parse(p.0.reasons).unwrap_or_default()).collect()
        });
        all.get(self.index()).map_or(&[], Vec::as_slice)
    }

    /// Every option any protocol declares, with the protocol declaring it, in registry order.
    pub fn all_options() -> impl Iterator<Item = (Protocol, &'static OptionDecl)> {
        Protocol::ALL.iter().flat_map(|p| p.0.options.iter().map(move |o| (*p, *o)))
    }

    fn index(self) -> usize {
        Protocol::ALL.iter().position(|p| p.0.name == self.0.name).unwrap_or(usize::MAX)
    }
}

impl PartialEq for Protocol {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Protocol {}

impl PartialOrd for Protocol {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Protocol {
    fn cmp(&self, other: &Self) -> Ordering {
        self.index().cmp(&other.index()).then_with(|| self.0.name.cmp(other.0.name))
    }
}

impl core::hash::Hash for Protocol {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
    }
}

impl fmt::Debug for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Protocol({})", self.0.name)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::ALL.iter().copied().find(|p| p.name() == s).ok_or_else(|| {
            let known: Vec<&str> = Protocol::ALL.iter().map(|p| p.name()).collect();
            format!("unknown protocol `{s}`, expected one of: {}", known.join(", "))
        })
    }
}

/// Builds a fresh engine (new identity from `rng`, no sessions) for a device.
pub fn new_engine(
    protocol: Protocol,
    me: &FullJid,
    rng: &mut dyn RngCore,
    config: &EngineConfig,
) -> Box<dyn Engine> {
    (protocol.0.build)(me, rng, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_kebab_case_and_options_have_defaults() {
        let mut seen = std::collections::BTreeSet::new();
        for p in Protocol::ALL {
            let name = p.name();
            assert!(seen.insert(name), "{name} registered twice");
            assert!(
                !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert_eq!(name.parse::<Protocol>(), Ok(*p));
        }
        let mut keys = std::collections::BTreeSet::new();
        for (p, o) in Protocol::all_options() {
            assert!(keys.insert(o.key), "option {} declared twice ({p})", o.key);
            assert!(!o.values.is_empty(), "option {} of {p} has no values", o.key);
        }
        assert!("nope".parse::<Protocol>().unwrap_err().contains("expected one of: plain"));
        for p in Protocol::ALL {
            let mut quirks = std::collections::BTreeSet::new();
            for q in p.def().quirks {
                assert!(quirks.insert(q.name), "quirk {} of {p} declared twice", q.name);
                assert!(
                    !q.name.is_empty()
                        && q.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                    "{}",
                    q.name
                );
                assert!(!q.reproduces.is_empty() && !q.issue.is_empty(), "{}", q.name);
            }
        }
    }

    /// A protocol declares a device id exactly when its engines have one, and building an
    /// engine from the same random stream gives the same id (the runner reads it from the
    /// engine it builds: a scenario's `$id(..)` is the id the device then uses).
    #[test]
    fn engines_have_a_device_id_when_their_protocol_declares_one() {
        use rand_core::SeedableRng;
        let me: FullJid = "bob@b.example/phone".parse().unwrap_or_else(|e| panic!("{e}"));
        for p in Protocol::ALL {
            let id = |seed: u8| {
                let mut rng = rand_chacha::ChaCha20Rng::from_seed([seed; 32]);
                new_engine(*p, &me, &mut rng, &EngineConfig::default()).device_id()
            };
            let first = id(1);
            assert_eq!(first.is_some(), p.def().device_id.is_some(), "{p}");
            assert_eq!(first, id(1), "{p}");
            if first.is_some() {
                assert_ne!(first, id(2), "{p}: another stream, another id");
            }
        }
    }

    #[test]
    fn protocols_sort_in_registry_order() {
        let mut sorted = Protocol::ALL.to_vec();
        sorted.reverse();
        sorted.sort();
        assert_eq!(sorted, Protocol::ALL);
    }

    #[test]
    fn an_option_reads_its_default_unless_set_to_a_declared_value() {
        static DECL: OptionDecl =
            OptionDecl { key: "mode", about: "a mode", values: &[("fast", "quick"), ("slow", "careful")] };
        let mut config = EngineConfig::default();
        assert_eq!(DECL.value_in(&config), "fast");
        config.options.insert("mode".into(), "slow".into());
        assert_eq!(DECL.value_in(&config), "slow");
        config.options.insert("mode".into(), "bogus".into());
        assert_eq!(DECL.value_in(&config), "fast");
    }
}
