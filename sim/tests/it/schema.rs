//! The committed JSON Schema must match the scenario types.

#[test]
fn committed_schema_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/scenario.schema.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let current = jabberwock_sim::json_schema();
    assert!(
        committed == current,
        "scenarios/scenario.schema.json is stale: run `cargo run -p jabberwock-tools -- schema > scenarios/scenario.schema.json`"
    );
    let schema: serde_json::Value = serde_json::from_str(&current).unwrap();
    assert_eq!(
        schema["additionalProperties"],
        serde_json::Value::Bool(false),
        "unknown top-level fields must be rejected"
    );
    assert!(schema["properties"]["timeline"].is_object());
}

/// Every quirk a protocol declares is in the README's scenario reference (a table row naming
/// it and each protocol declaring it) and has a scenario in `scenarios/quirks/` that gives it
/// to a device of each protocol declaring it.
#[test]
fn every_quirk_is_documented_and_has_a_scenario() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap_or_default();
    let mut scenarios = Vec::new();
    for entry in std::fs::read_dir(format!("{root}/scenarios/quirks")).into_iter().flatten().flatten() {
        let path = entry.path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        scenarios.push(
            jabberwock_sim::parse(&path.display().to_string(), &text).unwrap_or_else(|e| panic!("{e}")),
        );
    }
    for p in jabberwock_e2e::Protocol::ALL {
        for q in p.def().quirks {
            let row = readme.lines().find(|l| l.starts_with(&format!("  | `{}` |", q.name)));
            assert!(
                row.is_some_and(|r| r
                    .split('|')
                    .nth(2)
                    .is_some_and(|ps| ps.split(',').any(|x| x.trim() == p.name()))),
                "README: no row for quirk {} of {p}",
                q.name
            );
            assert!(
                scenarios
                    .iter()
                    .any(|s| s.devices.iter().any(|d| d.protocol == *p && d.quirks.contains(q.name))),
                "scenarios/quirks: no scenario gives quirk {} to a device of {p}",
                q.name
            );
        }
    }
}
