//! Whom an engine error blames, as the transcript prints it (module docs of
//! `peers/e2e/src/error.rs`): scenarios/basics/who-is-at-fault.yaml, where a server replays one
//! message and alters another, and a device refuses a third by its own setting.

use std::path::Path;

use jabberwock_sim::{load, run};

#[test]
fn each_engine_error_names_whom_its_evidence_blames() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/basics/who-is-at-fault.yaml");
    let scenario = load(&path).unwrap();
    let outcome = run(&scenario).unwrap();
    assert!(outcome.passed(), "{}", outcome.failure().unwrap_or_default());
    let transcript = outcome.render();
    let errors: Vec<&str> = transcript.lines().filter(|l| l.contains("✗ engine error")).collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    for (code, fault) in [
        // Authenticated as Alice's and intact, delivered twice: the server's doing, not hers.
        ("replay", "path"),
        // Nothing authenticates an altered ciphertext: Alice, or anyone on the path.
        ("bad-mac", "peer or path"),
        // Bob's own cipher setting refuses Carol's AES-CBC.
        ("cipher-not-allowed", "this device"),
    ] {
        let line = errors.iter().find(|l| l.contains(&format!("engine error {code} ("))).unwrap();
        assert!(line.contains(&format!("engine error {code} ({fault} at fault): ")), "{line}");
    }
}
