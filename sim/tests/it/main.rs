//! Integration tests of the simulator, gathered in one binary (as turmoil does).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod bad_input;
mod determinism;
mod device_ids;
mod diagram;
mod faults;
mod generality;
mod hostile;
mod joins;
mod layering;
mod matrix;
mod reasons;
mod scenarios;
mod schema;
