//! The virtual XMPP server: RFC 6120 streams (SASL PLAIN, bind), RFC 6121 roster and
//! presence, message routing to bare and full JIDs, XEP-0160 offline storage with XEP-0203
//! delay stamps, PEP (XEP-0163 over XEP-0060), XEP-0280 carbons, and a trusted
//! server-to-server link (federation) that is a hop of its own.
//!
//! Durable state (accounts, rosters, PEP nodes, offline messages) lives in a [`Disk`] owned by
//! the caller, so a crashed and restarted server loses sessions but never an accepted message.

use core::cell::{Cell, RefCell};
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use futures::{SinkExt, StreamExt};
use jabberwock_e2e::xml::{ElementExt, el};
use jabberwock_e2e::{BareJid, Element, FullJid};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_xmpp::xmlstream::{ReadError, Timeouts};

use crate::hooks::{Hooks, Hop, Injection, Note};
use crate::wire::{Stream, Transport, describe};

mod carbons;
mod offline;
mod pep;
mod presence;
mod routing;
mod streams;

pub(crate) const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub(crate) const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub(crate) const NS_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub(crate) const NS_STREAM: &str = "http://etherx.jabber.org/streams";

/// The RFC 6121 §2.1.2.5 subscription state of a roster item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subscription {
    /// Neither side sees the other's presence.
    #[default]
    None,
    /// The user sees the contact's presence.
    To,
    /// The contact sees the user's presence.
    From,
    /// Both.
    Both,
}

impl Subscription {
    fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }
    fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }
    fn with(self, to: bool, from: bool) -> Self {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }
}

/// One roster entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RosterItem {
    /// The subscription state.
    pub subscription: Subscription,
    /// An outbound subscription request is pending (RFC 6121 `ask='subscribe'`).
    pub ask: bool,
}

/// A PEP node (XEP-0163) with its XEP-0060 configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PepNode {
    /// `pubsub#access_model`: `open` or `presence` (XEP-0060 §accessmodels).
    pub access_model: String,
    /// `pubsub#max_items`.
    pub max_items: usize,
    /// Items, oldest first, by id.
    pub items: Vec<(String, Element)>,
}

/// One account's durable state.
#[derive(Debug, Clone, Default)]
pub struct Account {
    /// The SASL PLAIN password.
    pub password: String,
    /// The roster.
    pub roster: BTreeMap<BareJid, RosterItem>,
    /// Inbound subscription requests not yet answered.
    pub pending_in: BTreeSet<BareJid>,
    /// PEP nodes by name.
    pub pep: BTreeMap<String, PepNode>,
    /// XEP-0160 offline messages, oldest first, already delay-stamped.
    pub offline: Vec<Element>,
}

/// A server's durable storage: it survives a crash and restart of the server process.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    /// Accounts by bare JID.
    pub accounts: BTreeMap<BareJid, Account>,
}

/// Server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The domain this server hosts (also its host name on the network).
    pub domain: String,
    /// Federated domains this server trusts on its server-to-server link.
    pub peers: BTreeSet<String>,
    /// Silence on a client stream before the stream is probed, then dropped (RFC 6120 §4.6.1).
    pub keepalive: Duration,
    /// TLS for client streams (RFC 6120 §5): when set, STARTTLS is offered as required and
    /// nothing else is accepted before it; when `None`, client streams stay plain.
    pub tls: Option<crate::tls::ServerTls>,
}

/// Where a stanza being routed came from.
#[derive(Debug, Clone)]
enum Origin {
    /// One of our own client sessions.
    Local,
    /// A federated server.
    Remote(String),
    /// The server itself (replies, notifications, probes).
    Server,
}

enum Out {
    Stanza(Element),
    Kick(&'static str),
}

struct Session {
    tx: mpsc::UnboundedSender<Out>,
    generation: u64,
    available: bool,
    priority: i32,
    carbons: bool,
    presence: Option<Element>,
}

/// A running virtual XMPP server process.
pub struct Server<T: Transport> {
    cfg: ServerConfig,
    disk: Rc<RefCell<Disk>>,
    hooks: Rc<dyn Hooks>,
    transport: T,
    sessions: RefCell<BTreeMap<FullJid, Session>>,
    s2s: RefCell<BTreeMap<String, mpsc::UnboundedSender<Element>>>,
    counter: Cell<u64>,
}

impl<T: Transport> core::fmt::Debug for Server<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server").field("domain", &self.cfg.domain).finish_non_exhaustive()
    }
}

type Deliver<T> = fn(&Rc<Server<T>>, &Hop, Element);

impl<T: Transport> Server<T> {
    /// A server process over durable `disk`. Call [`Server::start`] once it runs in a `LocalSet`.
    pub fn new(cfg: ServerConfig, disk: Rc<RefCell<Disk>>, hooks: Rc<dyn Hooks>, transport: T) -> Rc<Self> {
        Rc::new(Server {
            cfg,
            disk,
            hooks,
            transport,
            sessions: RefCell::new(BTreeMap::new()),
            s2s: RefCell::new(BTreeMap::new()),
            counter: Cell::new(0),
        })
    }

    /// Schedules the attacker's injections that this server process carries out.
    pub fn start(self: &Rc<Self>) {
        let now = self.hooks.now();
        for inj in self.hooks.injections(&self.cfg.domain) {
            if inj.at < now {
                continue; // already carried out before a restart
            }
            let me = Rc::clone(self);
            tokio::task::spawn_local(async move {
                tokio::time::sleep(inj.at.saturating_sub(me.hooks.now())).await;
                me.inject(inj);
            });
        }
    }

    fn inject(self: &Rc<Self>, inj: Injection) {
        for stanza in self.hooks.materialize(&inj.hop, inj.index) {
            self.hooks.note(Note::Injected { hop: &inj.hop, stanza: &stanza, rerouted: false });
            self.put_on(&inj.hop, stanza);
        }
    }

    /// Puts a stanza the attacker made on `hop`, past the interception point.
    fn put_on(self: &Rc<Self>, hop: &Hop, stanza: Element) {
        match hop {
            Hop::ClientToServer { client, .. } => self.from_client(client, stanza),
            Hop::ServerToClient { client, .. } => self.write_session(client, stanza),
            Hop::ServerToServer { from, .. } => self.from_remote(from, stanza),
        }
    }

    fn next_id(&self, prefix: &str) -> String {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        format!("{prefix}{n}")
    }

    fn domain(&self) -> &str {
        &self.cfg.domain
    }

    fn client_timeouts(&self) -> Timeouts {
        Timeouts { read_timeout: self.cfg.keepalive, response_timeout: self.cfg.keepalive }
    }
}

/// Reads the next stream-level element during negotiation, riding out soft timeouts.
pub(crate) async fn next<Io: AsyncRead + AsyncWrite + Unpin>(
    xs: &mut Stream<Io>,
) -> Result<Element, (&'static str, String)> {
    loop {
        match xs.next().await {
            Some(Ok(e)) => return Ok(e),
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(e)) => return Err(describe(&e)),
            None => return Err(("closed", "stream ended".into())),
        }
    }
}

/// RFC 6120 §4.9: sends `<stream:error/>` with a defined condition (best effort).
pub(crate) async fn send_stream_error<Io: AsyncRead + AsyncWrite + Unpin>(
    xs: &mut Stream<Io>,
    condition: &str,
) {
    let condition = match condition {
        "invalid-xml" => "not-well-formed",
        c => c,
    };
    let error = el("error", NS_STREAM).child(el(condition, NS_STREAMS));
    let _ = xs.send(&error).await;
}
