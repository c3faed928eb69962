//! Implementations named per device: the registry, mixed pairs in scenarios, and the report's
//! columns of independent implementations — exercised with our own adapter
//! (`jabberwock adapter`) registered as if it were another library, so that every verdict it
//! gets must be ours (the same engines, behind a pipe).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use jabberwock_e2e::Protocol;
use jabberwock_sim::implementations::{Implementation, Registry};
use jabberwock_sim::properties::{PROPERTIES, Side, Theirs};
use jabberwock_sim::report::{Column, run_columns};

const BIN: &str = env!("CARGO_BIN_EXE_jabberwock");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A reference folder of our own, with one implementation, `piped`: our adapter, speaking
/// every protocol.
fn reference(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jabberwock-implementations-{name}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("piped")).unwrap();
    let protocols: Vec<&str> = Protocol::ALL.iter().map(|p| p.name()).collect();
    std::fs::write(
        dir.join("registry.yaml"),
        format!(
            "piped: {{protocols: [{}], run: [{BIN}, adapter], needs: this build}}\n",
            protocols.join(", ")
        ),
    )
    .unwrap();
    dir
}

fn jabberwock(reference: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(repo())
        .env("JABBERWOCK_REFERENCE_DIR", reference)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The outcome part of a transcript (what each device was shown, the expectations).
fn outcome(transcript: &str) -> &str {
    transcript.split("== outcome ==").nth(1).unwrap_or_default()
}

#[test]
fn a_mixed_pair_runs_a_shipped_scenario_as_ours_does() {
    let dir = reference("mixed");
    let file = "scenarios/omemo/first-contact.yaml";
    let (ok, ours, _) = jabberwock(&dir, &["run", file]);
    assert!(ok);
    for side in ["alice", "bob@b.example"] {
        let (ok, mixed, err) = jabberwock(&dir, &["run", file, "--implementation", &format!("{side}=piped")]);
        assert!(ok, "{err}{mixed}");
        let header = mixed.lines().nth(1).unwrap_or_default();
        assert!(
            header.ends_with(&format!(
                "runs piped (its adapter says: jabberwock {})",
                env!("CARGO_PKG_VERSION")
            )),
            "{header}"
        );
        assert_eq!(outcome(&mixed), outcome(&ours), "{side}");
    }
    // Named in the file, at the device: the same.
    let yaml = std::fs::read_to_string(repo().join(file)).unwrap();
    let named = yaml.replacen("laptop: omemo", "laptop: {protocol: omemo, implementation: piped}", 1);
    assert_ne!(named, yaml);
    let path = dir.join("named.yaml");
    std::fs::write(&path, named).unwrap();
    let (ok, mixed, err) = jabberwock(&dir, &["run", path.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(outcome(&mixed), outcome(&ours));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_bad_implementation_is_refused_with_where_and_why() {
    let dir = reference("bad");
    let (ok, _, err) =
        jabberwock(&dir, &["run", "scenarios/omemo/first-contact.yaml", "--implementation", "bob=nobody"]);
    assert!(!ok);
    assert!(err.contains("--implementation bob=nobody: unknown implementation `nobody` (implementations: jabberwock, piped)"), "{err}");
    let (ok, _, err) =
        jabberwock(&dir, &["run", "scenarios/omemo/first-contact.yaml", "--implementation", "bob"]);
    assert!(!ok && err.contains("is not ACCOUNT=NAME"), "{err}");
    // Registered, but its adapter cannot start: refused up front, with what it needs.
    std::fs::write(
        dir.join("registry.yaml"),
        "piped: {protocols: [omemo], run: [./no-such-adapter], needs: a build}\n",
    )
    .unwrap();
    let yaml = "name: x\nseed: 1\nservers: [a.example]\naccounts:\n  alice@a.example: {devices: {phone: omemo}}\n  bob@a.example:\n    devices:\n      laptop: {protocol: omemo, implementation: piped}\n";
    let path = dir.join("x.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (ok, _, err) = jabberwock(&dir, &["run", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("x.yaml:8:15: at `accounts.bob@a.example.devices.laptop.implementation`: `piped` cannot run here: its adapter fails"), "{err}");
    assert!(err.trim_end().ends_with("it needs: a build"), "{err}");
    // A broken registry names its own line and field.
    std::fs::write(dir.join("registry.yaml"), "piped: {protocols: [omemo, rot13], run: [x]}\n").unwrap();
    let (ok, _, err) = jabberwock(&dir, &["run", path.to_str().unwrap()]);
    assert!(!ok && err.contains("registry.yaml:1:28: `piped.protocols`: unknown protocol `rot13`"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// Our engines behind the pipe, as Alice and as Bob, get our verdicts on properties that
/// steal state, forge, replay and tamper: the report's columns, and the markdown says so.
#[test]
fn our_adapter_as_an_independent_implementation_gets_our_verdicts() {
    let dir = reference("columns");
    let registry = Registry::load_from(&dir.join("registry.yaml")).unwrap();
    let piped: Implementation = registry.get("piped").unwrap().clone();
    let ids = ["confidentiality", "replay", "deniability", "post-compromise"];
    let properties: Vec<_> = PROPERTIES.iter().filter(|p| ids.contains(&p.id)).collect();
    assert_eq!(properties.len(), ids.len());
    let omemo: Protocol = "omemo".parse().unwrap();
    let ours = run_columns(&properties, &[Column { protocol: omemo, theirs: None }], 2);
    let columns: Vec<Column> = Side::BOTH
        .iter()
        .map(|side| Column {
            protocol: omemo,
            theirs: Some(Theirs { implementation: piped.clone(), side: *side }),
        })
        .collect();
    let theirs = run_columns(&properties, &columns, 2);
    assert_eq!(theirs.cells.len(), ids.len() * 2);
    for cell in &theirs.cells {
        let our = ours.cell(cell.property.id, omemo).unwrap();
        assert!(cell.verdict().is_some(), "{}: {:?}", cell.anchor(), cell.error());
        assert_eq!((cell.mark(), cell.reason()), (our.mark(), our.reason()), "{}", cell.anchor());
        assert!(
            cell.yaml.starts_with("# run with: jabberwock run <this file> --implementation "),
            "{}",
            cell.yaml
        );
    }
    let said = [("piped".to_owned(), omemo, "jabberwock 0".to_owned(), None)];
    let md = jabberwock_sim::independent::markdown(&theirs, &ours, &[], &said);
    assert!(md.contains("| property | ours | piped as Alice | piped as Bob |"), "{md}");
    assert!(md.contains("\nEvery verdict is ours.\n"), "{md}");
    assert!(!md.contains(" ≠ |"), "{md}");
    let html = theirs.html("../scenarios/properties");
    for cell in &theirs.cells {
        assert!(html.contains(&format!("href=\"#{}-transcript\"", cell.anchor())));
    }
    std::fs::remove_dir_all(dir).ok();
}

/// The scenarios of faulty peers run with Bob on every implementation of his protocol: ours
/// first, then the registry's.
#[test]
fn peer_fault_scenarios_run_with_bob_on_each_implementation() {
    let dir = reference("faults");
    let scenarios = dir.join("quirks");
    std::fs::create_dir_all(&scenarios).unwrap();
    std::fs::copy(repo().join("scenarios/omemo/first-contact.yaml"), scenarios.join("a.yaml")).unwrap();
    std::fs::write(scenarios.join("b.yaml"), "name: [oops]\n").unwrap();
    let registry = Registry::load_from(&dir.join("registry.yaml")).unwrap();
    let rows = jabberwock_sim::independent::peer_faults(&scenarios, &registry);
    assert_eq!(rows.len(), 2);
    let runs: Vec<(&str, bool)> =
        rows[0].runs.iter().map(|(n, r)| (n.as_str(), matches!(r, Ok(None)))).collect();
    assert_eq!(runs, [("jabberwock", true), ("piped", true)]);
    assert!(matches!(&rows[1].runs[..], [(ours, Err(_))] if ours == "jabberwock"));
    let md = jabberwock_sim::independent::peer_faults_markdown(&rows);
    assert!(md.contains("| [a.yaml](../scenarios/quirks/a.yaml) | piped | ✅ |"), "{md}");
    assert!(md.contains("| [b.yaml](../scenarios/quirks/b.yaml) | jabberwock | ❓ "), "{md}");
    std::fs::remove_dir_all(dir).ok();
}
