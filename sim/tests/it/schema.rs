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
