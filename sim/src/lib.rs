//! jabberwock-sim: the world Jabberwock's scenarios run in.
//!
//! [`scenario`] parses and validates YAML; [`runner`] builds a turmoil simulation with one
//! host per server and per device, applies network faults between steps, and returns an
//! [`runner::Outcome`]; [`world::World`] is the simulator's side of the XMPP [`Hooks`]
//! seam (clock, transcript, attacker); [`attacker`] implements the attacker's powers.
//!
//! Determinism: one seed drives turmoil and every host's ChaCha20 stream; the epoch is fixed;
//! every map that reaches output is ordered.
//!
//! [`Hooks`]: jabberwock_xmpp::Hooks

pub mod attacker;
pub mod diagram;
pub mod implementations;
pub mod independent;
pub mod properties;
pub mod reasons;
pub mod report;
pub mod requirements;
pub mod runner;
pub mod scenario;
pub mod transcript;
pub mod units;
pub mod world;

pub use runner::{ENGINE_ADAPTER, Outcome, RunError, run, run_with_seed};
pub use scenario::{Scenario, ScenarioError, json_schema, parse};

/// Reads and parses a scenario file.
pub fn load(path: &std::path::Path) -> Result<Scenario, ScenarioError> {
    let file = path.display().to_string();
    let yaml = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: file.clone(),
        line: 0,
        column: 0,
        path: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    parse(&file, &yaml)
}
