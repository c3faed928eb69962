//! The interop tier's check of the independent implementations inside the simulator (CI runs
//! it, `--features interop`; never skipped there): every implementation of
//! `peers/reference/registry.yaml` is installed and greets for every protocol it lists, and a
//! mixed pair — theirs as Alice with our Bob, and theirs as Bob with our Alice — holds a
//! conversation both ways through the simulated servers. The Python kit's example adapter runs
//! the same way and repeats byte for byte.

#![cfg(feature = "interop")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use jabberwock_sim::implementations::{Registry, probe, reference_dir};

const BIN: &str = env!("CARGO_BIN_EXE_jabberwock");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A conversation both ways between Alice and Bob, on two servers.
fn conversation(protocol: &str) -> String {
    format!(
        "name: mixed-{protocol}\nseed: 7\nservers: [a.example, b.example]\naccounts:\n  alice@a.example: {{devices: {{phone: {protocol}}}}}\n  bob@b.example: {{devices: {{laptop: {protocol}}}}}\ntimeline:\n  - {{at: 1s, device: alice/phone, send: {{to: bob@b.example, body: one}}}}\n  - {{at: 3s, device: bob/laptop, send: {{to: alice@a.example, body: two}}}}\n  - {{at: 5s, device: alice/phone, send: {{to: bob@b.example, body: three}}}}\nexpect:\n  bob/laptop: {{received: [one, three]}}\n  alice/phone: {{received: [two]}}\n"
    )
}

fn run(reference: &Path, file: &Path, side: &str, name: &str) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("run")
        .arg(file)
        .args(["--implementation", &format!("{side}={name}")])
        .current_dir(repo())
        .env("JABBERWOCK_REFERENCE_DIR", reference)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn every_registered_implementation_talks_to_ours_both_ways_in_the_simulator() {
    let registry = Registry::load().unwrap();
    assert!(!registry.implementations.is_empty());
    let scratch = std::env::temp_dir().join(format!("jabberwock-interop-independent-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut failures = Vec::new();
    for implementation in &registry.implementations {
        for protocol in &implementation.protocols {
            if let Err(why) = probe(implementation, *protocol) {
                failures.push(format!("{} ({protocol}) is not installed: {why}", implementation.name));
                continue;
            }
            let file = scratch.join(format!("{}-{protocol}.yaml", implementation.name));
            std::fs::write(&file, conversation(protocol.name())).unwrap();
            for side in ["alice", "bob"] {
                let (ok, text) = run(&reference_dir(), &file, side, &implementation.name);
                if !ok {
                    failures.push(format!("{} ({protocol}) as {side}:\n{text}", implementation.name));
                }
            }
        }
    }
    std::fs::remove_dir_all(&scratch).ok();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_kit_example_runs_as_a_device_and_repeats_byte_for_byte() {
    let reference = std::env::temp_dir().join(format!("jabberwock-interop-kit-{}", std::process::id()));
    std::fs::create_dir_all(reference.join("example-plain")).unwrap();
    let example = repo().join("peers/reference/kit/example_plain.py");
    std::fs::write(
        reference.join("registry.yaml"),
        format!(
            "example-plain: {{protocols: [plain], run: [python3, {}], needs: python3}}\n",
            example.display()
        ),
    )
    .unwrap();
    let file = reference.join("plain.yaml");
    std::fs::write(&file, conversation("plain")).unwrap();
    let (ok, first) = run(&reference, &file, "bob", "example-plain");
    assert!(ok, "{first}");
    assert!(
        first.contains("bob@b.example/laptop runs example-plain (its adapter says: example-plain 1)"),
        "{first}"
    );
    assert!(!first.contains("unimplemented"), "{first}");
    let (_, second) = run(&reference, &file, "bob", "example-plain");
    assert_eq!(first, second);
    std::fs::remove_dir_all(&reference).ok();
}
