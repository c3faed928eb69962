//! Scenario files: the YAML a user writes, parsed strictly (unknown fields are errors), then
//! validated into a [`Scenario`] the runner can execute. Every error names the file, the line
//! and column, and the path of the field.
//!
//! The JSON Schema in `scenarios/scenario.schema.json` is generated from these same types
//! (`jabberwock schema`), so editors validate while the user types.

mod schema;
mod validate;

pub use self::schema::*;
pub use self::validate::*;
pub use crate::attacker::{
    Action, ActionSpec, AttackerPlan, Encoding, ForgeKeys, HopKind, Injection, MatchSpec, POWERS, Position,
    Rule, StanzaKind,
};
