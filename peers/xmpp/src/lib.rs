//! Jabberwock's virtual XMPP server and client.
//!
//! Both speak real RFC 6120 XML streams (tokio-xmpp's `xmlstream`) over any
//! `AsyncRead + AsyncWrite`: turmoil TCP inside the simulator, real TCP for interop.
//! They know nothing about the simulator: everything the bench needs — the clock, the
//! attacker's interception point on every hop, the transcript — comes in through [`Hooks`],
//! whose default methods pass everything through untouched (like s2n-quic's interceptor).
//!
//! Tasks are spawned with `tokio::task::spawn_local`: run the server and clients inside a
//! `LocalSet` (turmoil hosts are one).

mod client;
mod hooks;
pub mod reasons;
mod server;
pub mod stanza;
mod tls;
mod wire;

pub use client::{Command, Device, DeviceConfig};
pub use hooks::{Hooks, Hop, Injection, Note, Release, Ticket};
/// rustls, as the TLS configurations of servers and clients are written in it.
pub use rustls;
pub use server::{Account, Disk, RosterItem, Server, ServerConfig, Subscription};
pub use tls::{ClientTls, ServerTls, TlsSummary};
pub use wire::{C2S_PORT, MAX_DEPTH, S2S_PORT, Transport};
