//! Integration tests of the simulator, gathered in one binary (as turmoil does).

mod bad_input;
mod determinism;
mod scenarios;
mod schema;
