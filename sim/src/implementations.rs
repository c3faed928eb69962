//! The registry of independent implementations: `peers/reference/registry.yaml`, one line per
//! library whose adapter (`docs/engine-protocol.md`) lives in the folder of the same name beside
//! it. A device names one in its scenario (`phone: {protocol: omemo, implementation:
//! python-omemo}`); [`OURS`] — this crate's own engines, in process — is the default.
//!
//! The registry is read when a scenario names an implementation, from
//! `$JABBERWOCK_REFERENCE_DIR/registry.yaml`, by default the `peers/reference/` folder of the
//! checkout this binary was built from: adding an implementation is its folder plus one line,
//! with nothing to rebuild.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use jabberwock_e2e::Protocol;
use jabberwock_external::{DEFAULT_LIMIT, PipeEngine};
use serde::Deserialize;

use crate::units::At;

/// The environment variable naming the folder that holds `registry.yaml` and the adapters.
pub const REFERENCE_DIR: &str = "JABBERWOCK_REFERENCE_DIR";

/// Our own engines' name as an implementation (the default).
pub const OURS: &str = "jabberwock";

/// The registry file's largest size, in bytes.
pub const MAX_REGISTRY_BYTES: usize = 64 * 1024;
/// The most implementations a registry lists.
pub const MAX_IMPLEMENTATIONS: usize = 64;
/// The longest implementation name, in bytes.
pub const MAX_NAME: usize = 32;
/// The most words in an adapter's command.
pub const MAX_RUN_WORDS: usize = 16;

/// One independent implementation, as its registry line describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Implementation {
    /// The name scenarios use, which is also its folder's.
    pub name: String,
    /// The protocols its adapter speaks, in registry order.
    pub protocols: Vec<Protocol>,
    /// The command that starts its adapter (the protocol's name is appended).
    pub run: Vec<String>,
    /// What to install for it.
    pub needs: String,
    /// What varies from run to run for a given seed, when its library's randomness cannot be
    /// drawn from the seed (`None`: its runs repeat byte for byte). Reports mask what varies.
    pub varies: Option<String>,
    /// Its folder: the adapter's working directory.
    pub folder: PathBuf,
}

impl Implementation {
    /// Whether its adapter speaks `protocol`.
    pub fn speaks(&self, protocol: Protocol) -> bool {
        self.protocols.contains(&protocol)
    }

    /// Whether it can run a device of `protocol` here: it speaks it, and its adapter starts and
    /// greets ([`probe`]).
    pub fn ready_for(&self, protocol: Protocol) -> Result<(), String> {
        let name = &self.name;
        if !self.speaks(protocol) {
            let speaks: Vec<&str> = self.protocols.iter().map(|p| p.name()).collect();
            return Err(format!("`{name}` speaks {}, not {protocol}", speaks.join(", ")));
        }
        probe(self, protocol).map(|_| ()).map_err(|why| format!("`{name}` cannot run here: {why}"))
    }

    /// The command that starts its adapter for `protocol`, in its folder.
    pub fn command(&self, protocol: Protocol) -> Command {
        let program = self.run.first().map_or("", String::as_str);
        let mut command = if program.contains('/') {
            Command::new(self.folder.join(program))
        } else {
            Command::new(program)
        };
        command.args(self.run.iter().skip(1)).arg(protocol.name()).current_dir(&self.folder);
        command
    }
}

/// The registry as read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// The file it was read from.
    pub file: PathBuf,
    /// The implementations, in the file's order.
    pub implementations: Vec<Implementation>,
}

/// A registry that cannot be used: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct RegistryError {
    /// The registry file.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// What is wrong, naming the field.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    protocols: Vec<At<String>>,
    run: Vec<String>,
    #[serde(default)]
    needs: String,
    #[serde(default)]
    varies: Option<String>,
}

/// Whether `implementation`'s adapter starts here and greets as a speaker of `protocol`: its
/// name and exact version as its hello says, or why it cannot run (with what it needs). Each
/// (adapter, protocol) is asked once per process.
pub fn probe(implementation: &Implementation, protocol: Protocol) -> Result<String, String> {
    type Probes = BTreeMap<(PathBuf, String, &'static str), Result<String, String>>;
    static PROBES: Mutex<Probes> = Mutex::new(BTreeMap::new());
    let key = (implementation.folder.clone(), implementation.run.join(" "), protocol.name());
    if let Some(known) = PROBES.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
        return known.clone();
    }
    let answer = if implementation.folder.is_dir() {
        PipeEngine::probe(implementation.command(protocol), DEFAULT_LIMIT, protocol)
            .map_err(|e| format!("its adapter fails: {e}"))
    } else {
        Err(format!("its folder {} is missing", implementation.folder.display()))
    };
    let answer = answer.map_err(|why| format!("{why}; it needs: {}", implementation.needs));
    PROBES.lock().unwrap_or_else(PoisonError::into_inner).insert(key, answer.clone());
    answer
}

/// The folder holding the registry: [`REFERENCE_DIR`] when set, else this checkout's
/// `peers/reference/`.
pub fn reference_dir() -> PathBuf {
    match std::env::var_os(REFERENCE_DIR) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../peers/reference"),
    }
}

fn kebab(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

impl Registry {
    /// Reads the registry in [`reference_dir`].
    pub fn load() -> Result<Registry, RegistryError> {
        Registry::load_from(&reference_dir().join("registry.yaml"))
    }

    /// Reads and checks a registry file.
    pub fn load_from(file: &Path) -> Result<Registry, RegistryError> {
        let shown = file.display().to_string();
        let fail = |line: u64, column: u64, message: String| RegistryError {
            file: shown.clone(),
            line,
            column,
            message,
        };
        let bytes = std::fs::read(file).map_err(|e| fail(0, 0, format!("cannot read the registry: {e}")))?;
        if bytes.len() > MAX_REGISTRY_BYTES {
            return Err(fail(0, 0, format!("the registry is over {MAX_REGISTRY_BYTES} bytes")));
        }
        let text = String::from_utf8(bytes).map_err(|e| fail(0, 0, format!("not UTF-8: {e}")))?;
        Registry::parse(file, &text)
    }

    /// Checks a registry's text; `file` is where it is (the adapters' folders are beside it).
    pub fn parse(file: &Path, text: &str) -> Result<Registry, RegistryError> {
        let shown = file.display().to_string();
        let fail = |line: u64, column: u64, message: String| RegistryError {
            file: shown.clone(),
            line,
            column,
            message,
        };
        let lines: BTreeMap<String, At<Line>> = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
            use serde_saphyr::MessageFormatter as _;
            let message = serde_saphyr::DefaultMessageFormatter.format_message(e.without_snippet());
            fail(line, column, message.lines().next().unwrap_or_default().to_owned())
        })?;
        if lines.len() > MAX_IMPLEMENTATIONS {
            return Err(fail(0, 0, format!("more than {MAX_IMPLEMENTATIONS} implementations")));
        }
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut implementations: Vec<(u64, Implementation)> = Vec::new();
        for (name, line) in lines {
            let at = |message: String| fail(line.line, line.column, format!("`{name}`: {message}"));
            if !kebab(&name) {
                return Err(at(format!("a name is lowercase kebab-case, at most {MAX_NAME} bytes")));
            }
            if name == OURS || name.parse::<Protocol>().is_ok() {
                return Err(at("the name is taken (our engines, or a protocol)".into()));
            }
            let mut protocols = Vec::new();
            for p in &line.protocols {
                let protocol = p
                    .parse::<Protocol>()
                    .map_err(|e| fail(p.line, p.column, format!("`{name}.protocols`: {e}")))?;
                if protocols.contains(&protocol) {
                    return Err(fail(p.line, p.column, format!("`{name}.protocols`: `{}` twice", **p)));
                }
                protocols.push(protocol);
            }
            if protocols.is_empty() {
                return Err(at("`protocols` lists none".into()));
            }
            if line.run.is_empty() || line.run.len() > MAX_RUN_WORDS || line.run.iter().any(String::is_empty)
            {
                return Err(at(format!("`run` is 1 to {MAX_RUN_WORDS} non-empty words")));
            }
            implementations.push((
                line.line,
                Implementation {
                    folder: base.join(&name),
                    name,
                    protocols,
                    run: line.value.run,
                    needs: line.value.needs,
                    varies: line.value.varies,
                },
            ));
        }
        implementations.sort_by_key(|(line, _)| *line);
        Ok(Registry {
            file: file.to_path_buf(),
            implementations: implementations.into_iter().map(|(_, i)| i).collect(),
        })
    }

    /// The implementation of that name.
    pub fn get(&self, name: &str) -> Option<&Implementation> {
        self.implementations.iter().find(|i| i.name == name)
    }

    /// The implementation of that name, or why there is none (every name, ours first).
    pub fn find(&self, name: &str) -> Result<&Implementation, String> {
        self.get(name).ok_or_else(|| {
            let mut names = vec![OURS];
            names.extend(self.names());
            format!("unknown implementation `{name}` (implementations: {})", names.join(", "))
        })
    }

    /// Every name, for error messages.
    pub fn names(&self) -> Vec<&str> {
        self.implementations.iter().map(|i| i.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Registry, RegistryError> {
        Registry::parse(Path::new("/r/registry.yaml"), text)
    }

    #[test]
    fn reads_lines_in_file_order() {
        let r = parse(
            "zz: {protocols: [omemo], run: [python3, a.py]}\naa: {protocols: [otr, plain], run: [./x]}\n",
        )
        .unwrap();
        assert_eq!(r.names(), ["zz", "aa"]);
        let zz = r.get("zz").unwrap();
        assert_eq!(zz.folder, Path::new("/r/zz"));
        let cmd = zz.command("omemo".parse().unwrap());
        assert_eq!(cmd.get_program(), "python3");
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["a.py", "omemo"]);
        assert_eq!(r.get("aa").unwrap().command("otr".parse().unwrap()).get_program(), "/r/aa/./x");
    }

    #[test]
    fn refusals_name_line_column_and_field() {
        let e = parse("lib: {protocols: [omemo, nope], run: [x]}\n").unwrap_err();
        assert_eq!((e.line, e.column), (1, 26), "{e}");
        assert!(e.message.contains("lib.protocols") && e.message.contains("nope"), "{e}");
        assert!(parse("Lib: {protocols: [omemo], run: [x]}").unwrap_err().message.contains("kebab"));
        assert!(parse("jabberwock: {protocols: [omemo], run: [x]}").unwrap_err().message.contains("taken"));
        assert!(parse("lib: {protocols: [], run: [x]}").unwrap_err().message.contains("lists none"));
        assert!(parse("lib: {protocols: [otr], run: []}").unwrap_err().message.contains("`run`"));
        assert!(parse("lib: {protocols: [otr, otr], run: [x]}").unwrap_err().message.contains("twice"));
        let twice =
            parse("lib: {protocols: [otr], run: [x]}\nlib: {protocols: [omemo], run: [y]}\n").unwrap_err();
        assert_eq!((twice.line, twice.column), (2, 1), "{twice}");
        assert!(twice.message.starts_with("duplicate mapping key: lib"), "{twice}");
        let unknown = parse("lib: {protocols: [otr], run: [x], colour: red}").unwrap_err();
        assert!(unknown.message.contains("colour") && unknown.line == 1, "{unknown}");
    }

    #[test]
    fn the_shipped_registry_is_valid() {
        let r = Registry::load_from(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../peers/reference/registry.yaml"),
        )
        .unwrap();
        assert!(!r.implementations.is_empty());
    }
}
