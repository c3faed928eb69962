//! The engine seam carried over a pipe: the [`jabberwock_e2e::Engine`] trait as a line protocol on a
//! child process's standard input and output, so that an engine may be another
//! implementation in another language (`docs/engine-protocol.md` is the protocol, for adapter
//! writers).
//!
//! [`PipeEngine`] is the caller's side: an engine whose every call is one request line and one
//! answer line, blocking (simulated time stands still while the child computes), bounded in
//! line length and wall-clock time, and typed in its failures ([`jabberwock_e2e::E2eError::Adapter`],
//! [`jabberwock_e2e::E2eError::Unimplemented`]). [`serve`] is the adapter's side for our own
//! engines (`jabberwock adapter <protocol>`), as BoGo's shim serves any TLS stack.
//!
//! A crate of its own, beside `jabberwock-e2e` and depending on it: starting and talking to a
//! child process is I/O, which the sans-I/O engines never do (DESIGN.md, "An implementation is
//! an engine too"). Dependencies point one way: `tools → sim → {peers/xmpp, peers/external} →
//! peers/e2e`.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, OnceLock, PoisonError};

mod client;
mod json;
mod serve;

pub use client::PipeEngine;
pub use serve::serve;

/// The engine protocol's version: what `hello` exchanges.
pub const VERSION: u32 = 1;

/// The longest line either side may write, in bytes (without its newline): an answer past it
/// is the adapter's garbage.
pub const MAX_LINE: usize = 8 << 20;

/// How long a call may take by default, in wall-clock time: past it the child is stopped and
/// the call is `adapter-timeout`.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(30);

/// The longest string the child may give where the engine API holds a `&'static str` (an
/// element's name in an error, an identity mark's name, an iq namespace).
const MAX_INTERNED_LEN: usize = 256;

/// How many such strings a process keeps, at most (each is kept for good).
const MAX_INTERNED: usize = 4096;

/// The longest list of such strings (an engine's iq namespaces) the child may give.
const MAX_INTERNED_LIST: usize = 64;

/// The `&'static str` for `s`: the same one every time, kept for the life of the process;
/// `None` past the bounds.
fn intern(s: &str) -> Option<&'static str> {
    static TABLE: OnceLock<Mutex<BTreeSet<&'static str>>> = OnceLock::new();
    if s.len() > MAX_INTERNED_LEN {
        return None;
    }
    let mut table = TABLE.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(kept) = table.get(s) {
        return Some(kept);
    }
    if table.len() >= MAX_INTERNED {
        return None;
    }
    let kept: &'static str = Box::leak(s.to_owned().into_boxed_str());
    table.insert(kept);
    Some(kept)
}

/// The `&'static [&'static str]` for `list` (an engine's iq namespaces), kept as [`intern`]
/// keeps strings.
fn intern_list(list: &[String]) -> Option<&'static [&'static str]> {
    if list.len() > MAX_INTERNED_LIST {
        return None;
    }
    static TABLE: OnceLock<Mutex<BTreeMap<Vec<&'static str>, &'static [&'static str]>>> = OnceLock::new();
    let words: Vec<&'static str> = list.iter().map(|s| intern(s)).collect::<Option<_>>()?;
    let mut table = TABLE.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(kept) = table.get(&words) {
        return Some(kept);
    }
    if table.len() >= MAX_INTERNED {
        return None;
    }
    let kept: &'static [&'static str] = Box::leak(words.clone().into_boxed_slice());
    table.insert(words, kept);
    Some(kept)
}
