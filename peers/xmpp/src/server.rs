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

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use jabberwock_e2e::time::format_stamp;
use jabberwock_e2e::xml::{
    ElementExt, NS_CARBONS, NS_CLIENT, NS_DATA, NS_DELAY, NS_FORWARD, NS_PING, NS_PUBSUB, NS_PUBSUB_ERRORS,
    NS_PUBSUB_EVENT, NS_ROSTER, NS_SERVER, el, text_el,
};
use jabberwock_e2e::{BareJid, Element, FullJid, Jid};
use tokio::io::{AsyncRead, AsyncWrite, BufStream};
use tokio::sync::mpsc;
use tokio_xmpp::xmlstream::{ReadError, StreamHeader, Timeouts, accept_stream, initiate_stream};
use xmpp_parsers::bind::BindFeature;
use xmpp_parsers::stream_features::StreamFeatures;

use crate::hooks::{Hooks, Hop, Injection, Note, Release};
use crate::stanza::{Kind, error_reply, iq_payload, iq_result, jid_attr, kind, stanza_type};
use crate::tls::{Link, NS_TLS};
use crate::wire::{
    DepthGuard, MAX_DEPTH, S2S_PORT, Stream, Transport, describe, dismantle, renamespace, too_deep,
};

pub(crate) const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub(crate) const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub(crate) const NS_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub(crate) const NS_STREAM: &str = "http://etherx.jabber.org/streams";
const NS_HINTS: &str = "urn:xmpp:hints";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// At most this many messages wait for one offline account; past it, senders get an error.
const MAX_OFFLINE: usize = 10_000;
/// At most this many subscription requests wait for one account; more are dropped.
const MAX_PENDING: usize = 1_000;
/// At most this many items stay in one PEP node, whatever `pubsub#max_items` asks.
const MAX_ITEMS: usize = 256;

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
        for stanza in self.hooks.materialize(&inj.hop, inj.stanza) {
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

    // ---- hops -------------------------------------------------------------------------

    /// Sends `stanza` across `hop` through the interception point, then hands every release to
    /// `deliver` (now, or later for held-back copies).
    fn through(self: &Rc<Self>, hop: Hop, stanza: Element, deliver: Deliver<T>) {
        for release in self.hooks.intercept(&hop, stanza) {
            match release {
                Release::Now(s) => deliver(self, &hop, s),
                Release::Reroute { hop: elsewhere, stanza } => {
                    if elsewhere.servers().contains(&self.domain()) {
                        self.hooks.note(Note::Injected { hop: &elsewhere, stanza: &stanza, rerouted: true });
                        self.put_on(&elsewhere, stanza);
                    } else {
                        self.hooks
                            .note(Note::Lost { hop: &elsewhere, reason: "rerouted to another server's hop" });
                    }
                }
                Release::Later { after, ticket } => {
                    let me = Rc::clone(self);
                    let hop = hop.clone();
                    tokio::task::spawn_local(async move {
                        tokio::time::sleep(after).await;
                        if let Some(s) = me.hooks.redeem(ticket) {
                            deliver(&me, &hop, s);
                        }
                    });
                }
            }
        }
    }

    fn deliver_c2s(self: &Rc<Self>, hop: &Hop, stanza: Element) {
        if let Hop::ClientToServer { client, .. } = hop {
            self.from_client(client, stanza);
        }
    }

    fn deliver_s2c(self: &Rc<Self>, hop: &Hop, stanza: Element) {
        if let Hop::ServerToClient { client, .. } = hop {
            self.write_session(client, stanza);
        }
    }

    fn deliver_s2s(self: &Rc<Self>, hop: &Hop, stanza: Element) {
        if let Hop::ServerToServer { to, .. } = hop {
            let tx = self.s2s_link(to);
            if tx.send(stanza).is_err() {
                self.hooks.note(Note::Lost { hop, reason: "federation link closed" });
            }
        }
    }

    /// Writes to a client session without interception (the caller already intercepted).
    fn write_session(&self, client: &FullJid, stanza: Element) {
        let sent = self.sessions.borrow().get(client).is_some_and(|s| s.tx.send(Out::Stanza(stanza)).is_ok());
        if !sent {
            let hop = Hop::ServerToClient { server: self.cfg.domain.clone(), client: client.clone() };
            self.hooks.note(Note::Lost { hop: &hop, reason: "session gone" });
        }
    }

    /// Sends a stanza to one of our client sessions across the server→client hop.
    fn send_to_session(self: &Rc<Self>, client: &FullJid, stanza: Element) {
        let hop = Hop::ServerToClient { server: self.cfg.domain.clone(), client: client.clone() };
        self.through(hop, stanza, Self::deliver_s2c);
    }

    // ---- client streams -----------------------------------------------------------------

    /// Serves one client connection until it ends (RFC 6120 §4–§7: stream, STARTTLS when
    /// configured, SASL, bind).
    pub async fn serve_c2s<Io: AsyncRead + AsyncWrite + Unpin + 'static>(self: Rc<Self>, io: Io) {
        let tls = self.cfg.tls.clone();
        self.serve_c2s_presenting(io, tls).await;
    }

    /// Serves one client connection, answering its TLS handshake with `tls` instead of this
    /// server's own configuration (whoever holds the other end of the TCP connection decides
    /// which certificate the client meets: the bench uses it for an attacker on the link that
    /// terminates TLS with a certificate of its own).
    pub async fn serve_c2s_presenting<Io: AsyncRead + AsyncWrite + Unpin + 'static>(
        self: Rc<Self>,
        io: Io,
        tls: Option<crate::tls::ServerTls>,
    ) {
        let party = format!("{} c2s", self.domain());
        if let Err((condition, detail)) = self.c2s(Link::Plain(io), tls).await {
            if condition == "tls-failed" {
                self.hooks.note(Note::TlsFailed { party: &party, reason: detail });
            } else {
                self.hooks.note(Note::StreamError { party: &party, condition, detail });
            }
        }
    }

    /// Accepts a client stream header and answers with ours and `features` (RFC 6120 §4.3).
    async fn open_c2s<Io: AsyncRead + AsyncWrite + Unpin + 'static>(
        self: &Rc<Self>,
        link: Link<Io>,
        stream_id: &str,
        features: &StreamFeatures,
    ) -> Result<Stream<Link<Io>>, (&'static str, String)> {
        let io_err = |e: std::io::Error| ("connection-lost", e.to_string());
        let mut accepted =
            accept_stream(BufStream::new(DepthGuard::new(link)), NS_CLIENT, self.client_timeouts())
                .await
                .map_err(io_err)?;
        let header = accepted.take_header();
        let pending = accepted
            .send_header(StreamHeader {
                from: Some(self.domain().to_owned().into()),
                to: None,
                id: Some(stream_id.to_owned().into()),
            })
            .await
            .map_err(io_err)?;
        if header.to.as_deref() != Some(self.domain()) {
            // RFC 6120 §4.9.3.6: the stream is for a host we do not serve.
            let _ = pending
                .send_error(&xmpp_parsers::stream_error::StreamError::new(
                    xmpp_parsers::stream_error::DefinedCondition::HostUnknown,
                    "en",
                    "unknown host",
                ))
                .await;
            return Err(("host-unknown", format!("stream to {:?}", header.to)));
        }
        pending.send_features(features).await.map_err(io_err)
    }

    async fn c2s<Io: AsyncRead + AsyncWrite + Unpin + 'static>(
        self: &Rc<Self>,
        link: Link<Io>,
        tls: Option<crate::tls::ServerTls>,
    ) -> Result<(), (&'static str, String)> {
        let io_err = |e: std::io::Error| ("connection-lost", e.to_string());
        let stream_id = self.next_id("s");
        let mut sasl = StreamFeatures::default();
        sasl.sasl_mechanisms.insert("PLAIN".to_owned());
        let (mut xs, records) = match tls {
            None => (self.open_c2s(link, &stream_id, &sasl).await?, None),
            Some(config) => {
                // RFC 6120 §5.4.1: STARTTLS is offered, and required — it is the only feature.
                let offer = StreamFeatures {
                    starttls: Some(xmpp_parsers::starttls::StartTls { required: true }),
                    ..Default::default()
                };
                let mut xs = self.open_c2s(link, &stream_id, &offer).await?;
                let ask = next(&mut xs).await?;
                if !ask.is("starttls", NS_TLS) {
                    // §5.3.1: TLS is mandatory-to-negotiate here; nothing else goes first.
                    send_stream_error(&mut xs, "policy-violation").await;
                    return Err(("policy-violation", format!("<{}/> before STARTTLS", ask.name())));
                }
                // §5.4.2.3: proceed, then the handshake over the same TCP connection.
                xs.send(&el("proceed", NS_TLS)).await.map_err(io_err)?;
                let link = xs.into_inner().into_inner().into_inner();
                let (link, records) = crate::tls::accept(link, &config, self.hooks.now())
                    .await
                    .map_err(|e| ("tls-failed", e))?;
                // §5.4.3.3: the client restarts the stream over TLS.
                (self.open_c2s(link, &format!("{stream_id}t"), &sasl).await?, Some(records))
            }
        };

        // RFC 6120 §6.4.2–§6.4.6 with RFC 4616 PLAIN.
        let mut failures = 0;
        let user = loop {
            let auth = next(&mut xs).await?;
            if !auth.is("auth", NS_SASL) {
                send_stream_error(&mut xs, "not-authorized").await;
                return Err(("not-authorized", format!("<{}/> before authentication", auth.name())));
            }
            match self.check_plain(&auth) {
                Ok(user) => break user,
                Err(condition) => {
                    failures += 1;
                    let failure = el("failure", NS_SASL).child(el(condition, NS_SASL));
                    xs.send(&failure).await.map_err(io_err)?;
                    if failures >= 3 {
                        send_stream_error(&mut xs, "policy-violation").await;
                        return Err(("not-authorized", format!("{failures} failed SASL attempts")));
                    }
                }
            }
        };
        let mut accepted = xs.accept_reset(&el("success", NS_SASL)).await.map_err(io_err)?;
        let _ = accepted.take_header();
        let pending = accepted
            .send_header(StreamHeader {
                from: Some(self.domain().to_owned().into()),
                to: None,
                id: Some(format!("{stream_id}b").into()),
            })
            .await
            .map_err(io_err)?;
        let features = StreamFeatures { bind: Some(BindFeature { required: true }), ..Default::default() };
        let mut xs: Stream<Link<Io>> = pending.send_features(&features).await.map_err(io_err)?;

        // RFC 6120 §7.6: resource binding.
        let bind = next(&mut xs).await?;
        let requested = bind
            .get_child("bind", NS_BIND)
            .filter(|_| bind.is("iq", NS_CLIENT) && stanza_type(&bind) == "set")
            .ok_or(("not-authorized", "first stanza after SASL was not a bind request".to_owned()))?
            .get_child("resource", NS_BIND)
            .map(|r| r.text())
            .filter(|r| !r.is_empty());
        let resource = requested.unwrap_or_else(|| self.next_id("r"));
        let full = user
            .with_resource_str(&resource)
            .map_err(|e| ("bad-format", format!("resource `{resource}`: {e}")))?;
        let result = iq_result(
            &bind,
            None,
            Some(el("bind", NS_BIND).child(text_el("jid", NS_BIND, full.to_string()))),
        );
        xs.send(&result).await.map_err(io_err)?;

        let (tx, mut rx) = mpsc::unbounded_channel();
        let generation = self.counter.get() + 1;
        self.counter.set(generation);
        let old = self.sessions.borrow_mut().insert(
            full.clone(),
            Session { tx, generation, available: false, priority: 0, carbons: false, presence: None },
        );
        if let Some(old) = old {
            // RFC 6120 §7.7.2.2: the new session overrides the old one, whose presence ends.
            let _ = old.tx.send(Out::Kick("conflict"));
            if old.available {
                let unavailable =
                    el("presence", NS_CLIENT).with("type", "unavailable").with("from", full.to_string());
                self.broadcast_presence(&full, unavailable);
            }
        }
        self.hooks.note(Note::SessionUp { device: &full });

        let reason = loop {
            tokio::select! {
                biased;
                out = rx.recv() => match out {
                    Some(Out::Stanza(s)) => {
                        let sent = xs.send(&s).await;
                        if let Some(sizes) = records.as_ref().map(|r| r.take()).filter(|s| !s.is_empty()) {
                            let hop = Hop::ServerToClient { server: self.cfg.domain.clone(), client: full.clone() };
                            self.hooks.note(Note::Records { hop: &hop, sizes: &sizes });
                        }
                        if let Err(e) = sent {
                            break format!("write failed: {e}");
                        }
                    }
                    Some(Out::Kick(condition)) => {
                        send_stream_error(&mut xs, condition).await;
                        break format!("stream error {condition}");
                    }
                    None => break "server shutting down".to_owned(),
                },
                inbound = xs.next() => match inbound {
                    Some(Ok(stanza)) if too_deep(&stanza, MAX_DEPTH) => {
                        dismantle(stanza);
                        let party = format!("{} c2s of {full}", self.domain());
                        let detail = format!("stanza nested deeper than {MAX_DEPTH} elements");
                        self.hooks.note(Note::StreamError { party: &party, condition: "policy-violation", detail });
                        send_stream_error(&mut xs, "policy-violation").await;
                        break "stream error policy-violation".to_owned();
                    }
                    Some(Ok(stanza)) => {
                        let hop = Hop::ClientToServer { client: full.clone(), server: self.cfg.domain.clone() };
                        self.through(hop, stanza, Self::deliver_c2s);
                    }
                    Some(Err(ReadError::SoftTimeout)) => {
                        // RFC 6120 §4.6.1 / XEP-0199 §4.3: probe a silent client before the
                        // response timeout gives its session up.
                        let ping = el("iq", NS_CLIENT)
                            .with("type", "get")
                            .with("id", self.next_id("ping"))
                            .with("from", self.domain())
                            .with("to", full.to_string())
                            .child(el("ping", NS_PING));
                        self.send_to_session(&full, ping);
                    }
                    Some(Err(e)) => {
                        let (condition, detail) = describe(&e);
                        if matches!(condition, "not-well-formed" | "invalid-xml" | "policy-violation") {
                            let party = format!("{} c2s of {full}", self.domain());
                            self.hooks.note(Note::StreamError { party: &party, condition, detail: detail.clone() });
                            send_stream_error(&mut xs, condition).await;
                        }
                        break format!("{condition}: {detail}");
                    }
                    None => break "connection closed".to_owned(),
                },
            }
        };
        let _ = xs.shutdown().await;
        self.end_session(&full, generation, reason);
        Ok(())
    }

    fn check_plain(&self, auth: &Element) -> Result<BareJid, &'static str> {
        if auth.attr("mechanism") != Some("PLAIN") {
            return Err("invalid-mechanism");
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.text().trim())
            .map_err(|_| "incorrect-encoding")?;
        // RFC 4616 §2: [authzid] NUL authcid NUL passwd
        let mut parts = raw.split(|b| *b == 0);
        let (Some(_authz), Some(authc), Some(pass), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("malformed-request");
        };
        let authc = core::str::from_utf8(authc).map_err(|_| "malformed-request")?;
        let pass = core::str::from_utf8(pass).map_err(|_| "malformed-request")?;
        let bare: BareJid = format!("{authc}@{}", self.domain()).parse().map_err(|_| "not-authorized")?;
        match self.disk.borrow().accounts.get(&bare) {
            Some(acc) if acc.password == pass => Ok(bare),
            _ => Err("not-authorized"),
        }
    }

    fn end_session(self: &Rc<Self>, full: &FullJid, generation: u64, reason: String) {
        let removed = {
            let mut sessions = self.sessions.borrow_mut();
            match sessions.get(full) {
                Some(s) if s.generation == generation => sessions.remove(full),
                _ => None,
            }
        };
        let Some(session) = removed else { return };
        self.hooks.note(Note::SessionDown { device: full, reason });
        if session.available {
            // RFC 6121 §4.5.2: the server broadcasts unavailable presence on the user's behalf.
            let unavailable =
                el("presence", NS_CLIENT).with("type", "unavailable").with("from", full.to_string());
            self.broadcast_presence(full, unavailable);
        }
    }

    // ---- federation ---------------------------------------------------------------------

    /// Serves one inbound server-to-server connection (trusted: the peer is identified by its
    /// stream header, as a dialback-less test federation).
    pub async fn serve_s2s<Io: AsyncRead + AsyncWrite + Unpin + 'static>(self: Rc<Self>, io: Io) {
        let party = format!("{} s2s-in", self.domain());
        if let Err((condition, detail)) = self.s2s_in(io).await {
            self.hooks.note(Note::StreamError { party: &party, condition, detail });
        }
    }

    async fn s2s_in<Io: AsyncRead + AsyncWrite + Unpin + 'static>(
        self: &Rc<Self>,
        io: Io,
    ) -> Result<(), (&'static str, String)> {
        let io_err = |e: std::io::Error| ("connection-lost", e.to_string());
        let mut accepted =
            accept_stream(BufStream::new(DepthGuard::new(io)), NS_SERVER, federation_timeouts())
                .await
                .map_err(io_err)?;
        let header = accepted.take_header();
        let remote = header.from.as_deref().unwrap_or_default().to_owned();
        let pending = accepted
            .send_header(StreamHeader {
                from: Some(self.domain().to_owned().into()),
                to: Some(remote.clone().into()),
                id: Some(self.next_id("s2s").into()),
            })
            .await
            .map_err(io_err)?;
        if !self.cfg.peers.contains(&remote) {
            let _ = pending
                .send_error(&xmpp_parsers::stream_error::StreamError::new(
                    xmpp_parsers::stream_error::DefinedCondition::NotAuthorized,
                    "en",
                    "not a federated peer",
                ))
                .await;
            return Err(("not-authorized", format!("s2s from unknown domain `{remote}`")));
        }
        let mut xs: Stream<Io> = pending.send_features(&StreamFeatures::default()).await.map_err(io_err)?;
        loop {
            match xs.next().await {
                Some(Ok(stanza)) if too_deep(&stanza, MAX_DEPTH) => {
                    dismantle(stanza);
                    send_stream_error(&mut xs, "policy-violation").await;
                    return Err(("policy-violation", format!("stanza from {remote} nested too deep")));
                }
                Some(Ok(stanza)) => self.from_remote(&remote, renamespace(&stanza, NS_SERVER, NS_CLIENT)),
                Some(Err(ReadError::SoftTimeout)) => continue,
                Some(Err(e)) => return Err(describe(&e)),
                None => return Ok(()),
            }
        }
    }

    fn s2s_link(self: &Rc<Self>, domain: &str) -> mpsc::UnboundedSender<Element> {
        if let Some(tx) = self.s2s.borrow().get(domain) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.s2s.borrow_mut().insert(domain.to_owned(), tx.clone());
        tokio::task::spawn_local(Rc::clone(self).s2s_out(domain.to_owned(), rx));
        tx
    }

    /// The outbound half of federation: one stream per remote domain (RFC 6120 §2.4), kept
    /// up with a fixed back-off. Stanzas written into a link that silently died are lost, as
    /// on a real network without stream management.
    async fn s2s_out(self: Rc<Self>, remote: String, mut rx: mpsc::UnboundedReceiver<Element>) {
        let party = format!("{} s2s-out", self.domain());
        let mut waiting: Option<Element> = None;
        loop {
            let next = match waiting.take() {
                Some(s) => s,
                None => match rx.recv().await {
                    Some(s) => s,
                    None => return,
                },
            };
            let io = match self.transport.connect(&remote, S2S_PORT).await {
                Ok(io) => io,
                Err(e) => {
                    self.hooks.note(Note::ConnectFailed { party: &party, reason: format!("{remote}: {e}") });
                    waiting = Some(next);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let header = StreamHeader {
                from: Some(self.domain().to_owned().into()),
                to: Some(remote.clone().into()),
                id: None,
            };
            let stream = match initiate_stream(
                BufStream::new(DepthGuard::new(io)),
                NS_SERVER,
                header,
                federation_timeouts(),
            )
            .await
            {
                Ok(pending) => {
                    pending.recv_features::<Element>().await.map(|(_, xs)| xs).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            let mut xs: Stream<T::Io> = match stream {
                Ok(xs) => xs,
                Err(e) => {
                    self.hooks.note(Note::ConnectFailed { party: &party, reason: format!("{remote}: {e}") });
                    waiting = Some(next);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut pending = Some(next);
            loop {
                let stanza = match pending.take() {
                    Some(s) => s,
                    None => tokio::select! {
                        biased;
                        s = rx.recv() => match s { Some(s) => s, None => return },
                        inbound = xs.next() => match inbound {
                            Some(Err(ReadError::SoftTimeout)) | Some(Ok(_)) => continue,
                            Some(Err(_)) | None => break,
                        },
                    },
                };
                if xs.send(&renamespace(&stanza, NS_CLIENT, NS_SERVER)).await.is_err() {
                    let hop = Hop::ServerToServer { from: self.cfg.domain.clone(), to: remote.clone() };
                    self.hooks.note(Note::Lost { hop: &hop, reason: "federation link broke" });
                    break;
                }
            }
        }
    }

    fn from_remote(self: &Rc<Self>, remote: &str, stanza: Element) {
        // RFC 6120 §8.1.2.2: a server must not accept stanzas whose `from` is not the peer's.
        let from_ok = matches!(jid_attr(&stanza, "from"), Ok(Some(j)) if j.domain().as_str() == remote);
        if !from_ok || kind(&stanza).is_none() {
            let party = format!("{} s2s-in", self.domain());
            self.hooks.note(Note::StreamError {
                party: &party,
                condition: "invalid-from",
                detail: format!("dropped a stanza from {remote} claiming from={:?}", stanza.attr("from")),
            });
            return;
        }
        self.route(stanza, Origin::Remote(remote.to_owned()));
    }

    // ---- routing ------------------------------------------------------------------------

    /// A stanza read from a client session (after the client→server hop).
    fn from_client(self: &Rc<Self>, client: &FullJid, mut stanza: Element) {
        let Some(k) = kind(&stanza) else {
            let party = format!("{} c2s of {client}", self.domain());
            self.hooks.note(Note::StreamError {
                party: &party,
                condition: "unsupported-stanza-type",
                detail: format!("ignored <{} xmlns='{}'/>", stanza.name(), stanza.ns()),
            });
            return;
        };
        let stype = stanza_type(&stanza).to_owned();
        // RFC 6120 §8.1.2.1 and RFC 6121 §3.1.2: the server stamps the sender's address
        // (the bare JID on subscription management presence).
        let bare_from = k == Kind::Presence
            && matches!(stype.as_str(), "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed");
        let from = if bare_from { client.to_bare().to_string() } else { client.to_string() };
        stanza.set("from", from);
        if jid_attr(&stanza, "to").is_err() {
            if let Some(reply) = error_reply(&stanza, "modify", "jid-malformed", Some(self.domain())) {
                self.send_to_session(client, reply);
            }
            return;
        }
        match k {
            Kind::Presence if stanza.attr("to").is_none() => self.own_presence(client, stanza),
            Kind::Presence => self.outbound_presence(client, stanza, &stype),
            Kind::Iq if stanza.attr("to").is_none() => {
                stanza.set("to", client.to_bare().to_string());
                self.route(stanza, Origin::Local);
            }
            Kind::Message => {
                if stanza.attr("to").is_none() {
                    stanza.set("to", client.to_bare().to_string());
                }
                self.sent_carbons(client, &stanza);
                self.route(stanza, Origin::Local);
            }
            Kind::Iq => self.route(stanza, Origin::Local),
        }
    }

    fn route(self: &Rc<Self>, stanza: Element, origin: Origin) {
        let Ok(Some(to)) = jid_attr(&stanza, "to") else { return };
        if to.domain().as_str() != self.domain() {
            match origin {
                Origin::Remote(remote) => {
                    let party = format!("{} s2s-in", self.domain());
                    self.hooks.note(Note::StreamError {
                        party: &party,
                        condition: "improper-addressing",
                        detail: format!("{remote} asked us to relay to {to}"),
                    });
                }
                Origin::Local | Origin::Server => self.send_remote(to.domain().as_str(), stanza),
            }
            return;
        }
        if to.node().is_none() {
            self.for_server(stanza);
            return;
        }
        let bare = to.to_bare();
        if !self.disk.borrow().accounts.contains_key(&bare) {
            // RFC 6121 §8.5.1: no such account.
            if stanza.name() != "presence" && !matches!(stanza_type(&stanza), "groupchat" | "result") {
                self.reply_error(&stanza, "cancel", "service-unavailable");
            }
            return;
        }
        match kind(&stanza) {
            Some(Kind::Message) => self.deliver_message(&to, stanza),
            Some(Kind::Presence) => self.inbound_presence(&to, stanza),
            Some(Kind::Iq) => self.account_iq(&to, stanza, origin),
            None => {}
        }
    }

    fn send_remote(self: &Rc<Self>, domain: &str, stanza: Element) {
        if !self.cfg.peers.contains(domain) {
            self.reply_error(&stanza, "cancel", "remote-server-not-found");
            return;
        }
        let hop = Hop::ServerToServer { from: self.cfg.domain.clone(), to: domain.to_owned() };
        self.through(hop, stanza, Self::deliver_s2s);
    }

    /// Sends an error reply to the sender of `stanza`, from whoever it was addressed to.
    fn reply_error(self: &Rc<Self>, stanza: &Element, kind: &str, condition: &str) {
        if let Some(reply) = error_reply(stanza, kind, condition, None) {
            self.route(reply, Origin::Server);
        }
    }

    fn for_server(self: &Rc<Self>, stanza: Element) {
        if stanza.name() != "iq" {
            return;
        }
        let t = stanza_type(&stanza);
        if t == "result" || t == "error" {
            return; // answers to roster pushes and pings
        }
        let payload = iq_payload(&stanza);
        let reply = match payload {
            // XEP-0199 §4.2: client-to-server ping.
            Some(p) if t == "get" && p.is("ping", NS_PING) => iq_result(&stanza, Some(self.domain()), None),
            // XEP-0030 §3.1: the features this server implements.
            Some(p) if t == "get" && p.is("query", NS_DISCO_INFO) => {
                let mut q = el("query", NS_DISCO_INFO).child(
                    el("identity", NS_DISCO_INFO)
                        .with("category", "server")
                        .with("type", "im")
                        .with("name", "jabberwock"),
                );
                for var in [NS_DISCO_INFO, NS_PING, NS_CARBONS, "msgoffline", "urn:xmpp:delay", NS_PUBSUB] {
                    q.append_child(el("feature", NS_DISCO_INFO).with("var", var));
                }
                iq_result(&stanza, Some(self.domain()), Some(q))
            }
            _ => {
                self.reply_error(&stanza, "cancel", "service-unavailable");
                return;
            }
        };
        self.route(reply, Origin::Server);
    }

    fn account_iq(self: &Rc<Self>, to: &Jid, stanza: Element, origin: Origin) {
        let t = stanza_type(&stanza).to_owned();
        if let Ok(full) = to.clone().try_into_full() {
            // RFC 6121 §8.5.3.1 / §8.5.3.2.3: an iq to a full JID goes to that session only.
            if self.sessions.borrow().contains_key(&full) {
                self.send_to_session(&full, stanza);
            } else if t == "get" || t == "set" {
                self.reply_error(&stanza, "cancel", "service-unavailable");
            }
            return;
        }
        if t == "result" || t == "error" {
            return;
        }
        let owner = to.to_bare();
        let requester = match jid_attr(&stanza, "from") {
            Ok(Some(j)) => j,
            _ => return,
        };
        let is_owner = requester.to_bare() == owner && matches!(origin, Origin::Local);
        let payload = iq_payload(&stanza).cloned();
        match payload {
            Some(p) if p.is("pubsub", NS_PUBSUB) => self.pep(&owner, &requester, &stanza, &p, is_owner),
            Some(p) if p.is("query", NS_ROSTER) && is_owner => self.roster_iq(&owner, &stanza, &p, &t),
            Some(p)
                if (p.is("enable", NS_CARBONS) || p.is("disable", NS_CARBONS)) && is_owner && t == "set" =>
            {
                // XEP-0280 §5: carbons are switched per session.
                let enable = p.name() == "enable";
                let full = requester.clone().try_into_full().ok();
                let found = full
                    .as_ref()
                    .and_then(|f| self.sessions.borrow_mut().get_mut(f).map(|s| s.carbons = enable));
                match (full, found) {
                    (Some(full), Some(())) => self.send_to_session(&full, iq_result(&stanza, None, None)),
                    _ => self.reply_error(&stanza, "modify", "bad-request"),
                }
            }
            Some(p) if p.is("ping", NS_PING) && t == "get" => {
                self.route(iq_result(&stanza, Some(&owner.to_string()), None), Origin::Server)
            }
            _ => self.reply_error(&stanza, "cancel", "service-unavailable"),
        }
    }

    // ---- messages -----------------------------------------------------------------------

    fn available_sessions(&self, bare: &BareJid) -> Vec<FullJid> {
        self.sessions
            .borrow()
            .iter()
            .filter(|(j, s)| j.to_bare() == *bare && s.available && s.priority >= 0)
            .map(|(j, _)| j.clone())
            .collect()
    }

    /// RFC 6121 §8.5.2 (bare JID) and §8.5.3 (full JID) message delivery, XEP-0160 offline
    /// storage, XEP-0280 received carbons.
    fn deliver_message(self: &Rc<Self>, to: &Jid, stanza: Element) {
        let mtype = stanza_type(&stanza).to_owned();
        if let Ok(full) = to.clone().try_into_full() {
            if self.sessions.borrow().contains_key(&full) {
                self.received_carbons(&full, &stanza);
                self.send_to_session(&full, stanza);
                return;
            }
            // §8.5.3.2.1: no such resource — chat and normal are treated as if sent to the bare JID.
            if mtype != "chat" && mtype != "normal" {
                if mtype != "error" && mtype != "headline" {
                    self.reply_error(&stanza, "cancel", "service-unavailable");
                }
                return;
            }
        }
        let bare = to.to_bare();
        let targets = self.available_sessions(&bare);
        if mtype == "error" {
            return;
        }
        if !targets.is_empty() {
            // §8.5.2.1.1: deliver to all available resources with non-negative priority;
            // XEP-0280 §7.1: carbons-enabled resources that did not get it get a copy.
            let carbons: Vec<FullJid> = if Self::carbon_eligible(&stanza) {
                self.carbon_copies(&targets[0]).into_iter().filter(|j| !targets.contains(j)).collect()
            } else {
                vec![]
            };
            for other in carbons {
                let copy = Self::wrap_carbon("received", &bare, &other, &stanza);
                self.send_to_session(&other, copy);
            }
            for full in targets {
                self.send_to_session(&full, stanza.clone());
            }
            return;
        }
        if mtype == "headline" || mtype == "groupchat" {
            return; // §8.5.2.2.1: silently ignored when nobody is online
        }
        self.store_offline(&bare, stanza);
    }

    /// XEP-0160 §3: keep the message and stamp it with XEP-0203 delayed delivery (§3 of 0203:
    /// `from` is the server, `stamp` the time it was stored, in simulated time).
    fn store_offline(self: &Rc<Self>, bare: &BareJid, mut stanza: Element) {
        let full = {
            let disk = self.disk.borrow();
            disk.accounts.get(bare).is_none_or(|a| a.offline.len() >= MAX_OFFLINE)
        };
        if full {
            self.reply_error(&stanza, "wait", "resource-constraint");
            return;
        }
        stanza.append_child(
            el("delay", NS_DELAY)
                .with("from", self.domain())
                .with("stamp", format_stamp(self.hooks.now()))
                .text_node("Offline Storage"),
        );
        let id = stanza.attr("id").unwrap_or_default().to_owned();
        if let Some(acc) = self.disk.borrow_mut().accounts.get_mut(bare) {
            acc.offline.push(stanza);
        }
        let account = bare.to_string();
        self.hooks.note(Note::StoredOffline { server: self.domain(), account: &account, id: &id });
    }

    fn carbon_eligible(stanza: &Element) -> bool {
        // XEP-0280 §6: chat messages (and normal ones with a body), not private, not no-copy,
        // and never a carbon of a carbon.
        let t = stanza_type(stanza);
        let eligible_type = t == "chat" || (t == "normal" && stanza.get_child("body", NS_CLIENT).is_some());
        eligible_type
            && !stanza.has_child("private", NS_CARBONS)
            && !stanza.has_child("no-copy", NS_HINTS)
            && !stanza.has_child("received", NS_CARBONS)
            && !stanza.has_child("sent", NS_CARBONS)
    }

    fn carbon_copies(&self, owner: &FullJid) -> Vec<FullJid> {
        self.sessions
            .borrow()
            .iter()
            .filter(|(j, s)| j.to_bare() == owner.to_bare() && *j != owner && s.carbons)
            .map(|(j, _)| j.clone())
            .collect()
    }

    fn wrap_carbon(which: &str, owner: &BareJid, to: &FullJid, stanza: &Element) -> Element {
        el("message", NS_CLIENT)
            .with("from", owner.to_string())
            .with("to", to.to_string())
            .with("type", stanza_type(stanza))
            .child(el(which, NS_CARBONS).child(el("forwarded", NS_FORWARD).child(stanza.clone())))
    }

    /// XEP-0280 §7.1: copies of a message delivered to one resource go to the others.
    fn received_carbons(self: &Rc<Self>, recipient: &FullJid, stanza: &Element) {
        if !Self::carbon_eligible(stanza) {
            return;
        }
        for other in self.carbon_copies(recipient) {
            let copy = Self::wrap_carbon("received", &recipient.to_bare(), &other, stanza);
            self.send_to_session(&other, copy);
        }
    }

    /// XEP-0280 §7.2: copies of a message one resource sends go to the sender's other resources.
    fn sent_carbons(self: &Rc<Self>, sender: &FullJid, stanza: &Element) {
        if !Self::carbon_eligible(stanza) {
            return;
        }
        for other in self.carbon_copies(sender) {
            let copy = Self::wrap_carbon("sent", &sender.to_bare(), &other, stanza);
            self.send_to_session(&other, copy);
        }
    }

    // ---- presence -----------------------------------------------------------------------

    fn roster_of(&self, bare: &BareJid) -> BTreeMap<BareJid, RosterItem> {
        self.disk.borrow().accounts.get(bare).map(|a| a.roster.clone()).unwrap_or_default()
    }

    /// RFC 6121 §4.2 (initial presence), §4.4 (updates) and §4.5 (unavailable).
    fn own_presence(self: &Rc<Self>, client: &FullJid, stanza: Element) {
        let t = stanza_type(&stanza).to_owned();
        let priority = stanza
            .get_child("priority", NS_CLIENT)
            .and_then(|p| p.text().trim().parse::<i32>().ok())
            .unwrap_or(0)
            .clamp(-128, 127);
        let initial = {
            let mut sessions = self.sessions.borrow_mut();
            let Some(s) = sessions.get_mut(client) else { return };
            let initial = !s.available && t == "available";
            match t.as_str() {
                "available" => {
                    s.available = true;
                    s.priority = priority;
                    s.presence = Some(stanza.clone());
                }
                "unavailable" => {
                    s.available = false;
                    s.presence = None;
                }
                _ => return,
            }
            initial
        };
        if initial {
            // §4.2.2: probe the contacts the user is subscribed to.
            let me = client.to_bare();
            for (contact, item) in self.roster_of(&me) {
                if item.subscription.has_to() {
                    let probe = el("presence", NS_CLIENT)
                        .with("type", "probe")
                        .with("from", me.to_string())
                        .with("to", contact.to_string());
                    self.route(probe, Origin::Server);
                }
            }
        }
        self.broadcast_presence(client, stanza);
        if initial && priority >= 0 {
            self.flush_offline(client);
        }
    }

    fn broadcast_presence(self: &Rc<Self>, client: &FullJid, stanza: Element) {
        let me = client.to_bare();
        for (contact, item) in self.roster_of(&me) {
            if item.subscription.has_from() {
                let mut copy = stanza.clone();
                copy.set("to", contact.to_string());
                self.route(copy, Origin::Server);
            }
        }
        // §4.2.2 / §4.4.2: the user's other resources see it too.
        let others: Vec<FullJid> = self
            .sessions
            .borrow()
            .iter()
            .filter(|(j, s)| j.to_bare() == me && *j != client && s.available)
            .map(|(j, _)| j.clone())
            .collect();
        for other in others {
            let mut copy = stanza.clone();
            copy.set("to", other.to_string());
            self.send_to_session(&other, copy);
        }
    }

    /// XEP-0160 §4: stored messages go to the first resource that sends initial presence with
    /// non-negative priority; pending subscription requests are re-sent (RFC 6121 §3.1.3).
    fn flush_offline(self: &Rc<Self>, client: &FullJid) {
        let bare = client.to_bare();
        let (stored, pending) = {
            let mut disk = self.disk.borrow_mut();
            match disk.accounts.get_mut(&bare) {
                Some(acc) => (core::mem::take(&mut acc.offline), acc.pending_in.clone()),
                None => return,
            }
        };
        for contact in pending {
            let req = el("presence", NS_CLIENT)
                .with("type", "subscribe")
                .with("from", contact.to_string())
                .with("to", bare.to_string());
            self.send_to_session(client, req);
        }
        for mut msg in stored {
            msg.set("to", client.to_string());
            self.send_to_session(client, msg);
        }
    }

    fn roster_push(self: &Rc<Self>, owner: &BareJid, contact: &BareJid) {
        let item = self.disk.borrow().accounts.get(owner).and_then(|a| a.roster.get(contact).cloned());
        let mut it = el("item", NS_ROSTER).with("jid", contact.to_string());
        match item {
            Some(item) => {
                it.set("subscription", item.subscription.name());
                if item.ask {
                    it.set("ask", "subscribe");
                }
            }
            None => it.set("subscription", "remove"),
        }
        let sessions: Vec<FullJid> =
            self.sessions.borrow().keys().filter(|j| j.to_bare() == *owner).cloned().collect();
        for full in sessions {
            // RFC 6121 §2.1.6: roster push.
            let push = el("iq", NS_CLIENT)
                .with("type", "set")
                .with("id", self.next_id("push"))
                .with("to", full.to_string())
                .child(el("query", NS_ROSTER).child(it.clone()));
            self.send_to_session(&full, push);
        }
    }

    fn update_roster(&self, owner: &BareJid, contact: &BareJid, f: impl FnOnce(&mut RosterItem)) {
        if let Some(acc) = self.disk.borrow_mut().accounts.get_mut(owner) {
            f(acc.roster.entry(contact.clone()).or_default());
        }
    }

    /// RFC 6121 §3: the user's server handles outbound subscription management.
    fn outbound_presence(self: &Rc<Self>, client: &FullJid, stanza: Element, stype: &str) {
        let Ok(Some(to)) = jid_attr(&stanza, "to") else { return };
        let me = client.to_bare();
        let contact = to.to_bare();
        match stype {
            "subscribe" => {
                self.update_roster(&me, &contact, |i| i.ask = !i.subscription.has_to());
                self.roster_push(&me, &contact);
            }
            "subscribed" => {
                let was_pending = self
                    .disk
                    .borrow_mut()
                    .accounts
                    .get_mut(&me)
                    .is_some_and(|a| a.pending_in.remove(&contact));
                let already = self.roster_of(&me).get(&contact).is_some_and(|i| i.subscription.has_from());
                if !was_pending && !already {
                    return; // §3.1.5: nothing to approve
                }
                self.update_roster(&me, &contact, |i| {
                    i.subscription = i.subscription.with(i.subscription.has_to(), true)
                });
                self.roster_push(&me, &contact);
                self.route(stanza, Origin::Local);
                // §3.1.5: the contact's server sends the user's current presence.
                let mine: Vec<(FullJid, Element)> = self
                    .sessions
                    .borrow()
                    .iter()
                    .filter(|(j, s)| j.to_bare() == me && s.presence.is_some())
                    .filter_map(|(j, s)| s.presence.clone().map(|p| (j.clone(), p)))
                    .collect();
                for (full, mut p) in mine {
                    p.set("from", full.to_string());
                    p.set("to", contact.to_string());
                    self.route(p, Origin::Server);
                }
                return;
            }
            "unsubscribe" => {
                self.update_roster(&me, &contact, |i| {
                    i.ask = false;
                    i.subscription = i.subscription.with(false, i.subscription.has_from());
                });
                self.roster_push(&me, &contact);
            }
            "unsubscribed" => {
                if let Some(acc) = self.disk.borrow_mut().accounts.get_mut(&me) {
                    acc.pending_in.remove(&contact);
                }
                let had_from = self.roster_of(&me).get(&contact).is_some_and(|i| i.subscription.has_from());
                self.update_roster(&me, &contact, |i| {
                    i.subscription = i.subscription.with(i.subscription.has_to(), false)
                });
                self.roster_push(&me, &contact);
                self.route(stanza, Origin::Local);
                if had_from {
                    // §3.2.2: the contact stops seeing the user: unavailable from each resource.
                    self.unavailable_to(&me, &contact);
                }
                return;
            }
            _ => {}
        }
        self.route(stanza, Origin::Local);
    }

    /// Sends unavailable presence from each of `user`'s available resources to `contact`.
    fn unavailable_to(self: &Rc<Self>, user: &BareJid, contact: &BareJid) {
        for full in self.available_sessions(user) {
            let p = el("presence", NS_CLIENT)
                .with("type", "unavailable")
                .with("from", full.to_string())
                .with("to", contact.to_string());
            self.route(p, Origin::Server);
        }
    }

    /// RFC 6121 §3 and §4 on the contact's side: a presence stanza addressed to one of our
    /// accounts.
    fn inbound_presence(self: &Rc<Self>, to: &Jid, stanza: Element) {
        let user = to.to_bare();
        let Ok(Some(from)) = jid_attr(&stanza, "from") else { return };
        let contact = from.to_bare();
        let item = self.roster_of(&user).get(&contact).cloned().unwrap_or_default();
        let deliver_all = |me: &Rc<Self>, s: &Element| {
            for full in me.available_sessions(&user) {
                let mut copy = s.clone();
                copy.set("to", full.to_string());
                me.send_to_session(&full, copy);
            }
        };
        match stanza_type(&stanza) {
            "subscribe" => {
                if item.subscription.has_from() {
                    // §3.1.3: already approved — the server answers on the user's behalf.
                    let ok = el("presence", NS_CLIENT)
                        .with("type", "subscribed")
                        .with("from", user.to_string())
                        .with("to", contact.to_string());
                    self.route(ok, Origin::Server);
                    return;
                }
                let stored = self.disk.borrow_mut().accounts.get_mut(&user).is_some_and(|a| {
                    a.pending_in.len() < MAX_PENDING && a.pending_in.insert(contact.clone())
                });
                if stored {
                    deliver_all(self, &stanza);
                }
            }
            "subscribed" => {
                if !item.ask {
                    return; // §3.1.6: unsolicited approval is ignored
                }
                self.update_roster(&user, &contact, |i| {
                    i.ask = false;
                    i.subscription = i.subscription.with(true, i.subscription.has_from());
                });
                self.roster_push(&user, &contact);
                deliver_all(self, &stanza);
            }
            "unsubscribe" => {
                // §3.3.3: only a contact with a subscription (or a pending request) can take it
                // back; anything else is ignored silently.
                let was_pending = self
                    .disk
                    .borrow_mut()
                    .accounts
                    .get_mut(&user)
                    .is_some_and(|a| a.pending_in.remove(&contact));
                if !item.subscription.has_from() && !was_pending {
                    return;
                }
                let had_from = item.subscription.has_from();
                self.update_roster(&user, &contact, |i| {
                    i.subscription = i.subscription.with(i.subscription.has_to(), false)
                });
                self.roster_push(&user, &contact);
                deliver_all(self, &stanza);
                if had_from {
                    // §3.3.3: the former subscriber sees the user go unavailable.
                    self.unavailable_to(&user, &contact);
                }
            }
            "unsubscribed" => {
                // §3.2.3: only meaningful when the user has (or asked for) a subscription.
                if !item.subscription.has_to() && !item.ask {
                    return;
                }
                self.update_roster(&user, &contact, |i| {
                    i.ask = false;
                    i.subscription = i.subscription.with(false, i.subscription.has_from());
                });
                self.roster_push(&user, &contact);
                deliver_all(self, &stanza);
            }
            "probe" => {
                // §4.3.2: answer only subscribers.
                if !item.subscription.has_from() {
                    return;
                }
                let mine: Vec<(FullJid, Element)> = self
                    .sessions
                    .borrow()
                    .iter()
                    .filter(|(j, s)| j.to_bare() == user && s.available)
                    .filter_map(|(j, s)| s.presence.clone().map(|p| (j.clone(), p)))
                    .collect();
                for (full, mut p) in mine {
                    p.set("from", full.to_string());
                    p.set("to", contact.to_string());
                    self.route(p, Origin::Server);
                }
            }
            _ => {
                // §4.4.3 / §4.5.3: availability from contacts the user subscribed to, or from
                // the user's own resources.
                if !(item.subscription.has_to() || contact == user) {
                    return;
                }
                match to.clone().try_into_full() {
                    Ok(full) if self.sessions.borrow().contains_key(&full) => {
                        self.send_to_session(&full, stanza)
                    }
                    Ok(_) => {}
                    Err(_) => deliver_all(self, &stanza),
                }
            }
        }
    }

    /// RFC 6121 §2.1.3 (get) and §2.3 / §2.5 (set: add, update, remove).
    fn roster_iq(self: &Rc<Self>, owner: &BareJid, iq: &Element, query: &Element, t: &str) {
        let Ok(Some(from)) = jid_attr(iq, "from") else { return };
        let Ok(client) = from.try_into_full() else { return };
        if t == "get" {
            let mut q = el("query", NS_ROSTER);
            for (contact, item) in self.roster_of(owner) {
                let mut it = el("item", NS_ROSTER)
                    .with("jid", contact.to_string())
                    .with("subscription", item.subscription.name());
                if item.ask {
                    it.set("ask", "subscribe");
                }
                q.append_child(it);
            }
            self.send_to_session(&client, iq_result(iq, None, Some(q)));
            return;
        }
        let items: Vec<&Element> = query.children().filter(|c| c.is("item", NS_ROSTER)).collect();
        let [item] = items.as_slice() else {
            self.reply_error(iq, "modify", "bad-request");
            return;
        };
        let Some(contact) = item.attr("jid").and_then(|j| j.parse::<BareJid>().ok()) else {
            self.reply_error(iq, "modify", "bad-request");
            return;
        };
        if item.attr("subscription") == Some("remove") {
            let old = self.disk.borrow_mut().accounts.get_mut(owner).and_then(|acc| {
                acc.pending_in.remove(&contact);
                acc.roster.remove(&contact)
            });
            // §2.5.2: removing a contact cancels both directions of the subscription.
            if let Some(old) = old {
                let cancel = |t: &str| {
                    el("presence", NS_CLIENT)
                        .with("type", t.to_owned())
                        .with("from", owner.to_string())
                        .with("to", contact.to_string())
                };
                if old.subscription.has_to() || old.ask {
                    self.route(cancel("unsubscribe"), Origin::Server);
                }
                if old.subscription.has_from() {
                    self.route(cancel("unsubscribed"), Origin::Server);
                    self.unavailable_to(owner, &contact);
                }
            }
        } else {
            self.update_roster(owner, &contact, |_| {});
        }
        self.send_to_session(&client, iq_result(iq, None, None));
        self.roster_push(owner, &contact);
    }

    // ---- PEP ----------------------------------------------------------------------------

    fn pep(
        self: &Rc<Self>,
        owner: &BareJid,
        requester: &Jid,
        iq: &Element,
        pubsub: &Element,
        is_owner: bool,
    ) {
        let t = stanza_type(iq);
        let Some(op) = iq_payload(pubsub).or_else(|| pubsub.children().next()) else {
            self.reply_error(iq, "modify", "bad-request");
            return;
        };
        match (t, op.name()) {
            ("set", "publish") if is_owner => self.pep_publish(owner, iq, pubsub, op),
            ("set", "publish") => self.reply_error(iq, "auth", "forbidden"),
            ("get", "items") => self.pep_items(owner, requester, iq, op, is_owner),
            _ => {
                // XEP-0060 §publisher-publish-error / §entity-features: not implemented here.
                let mut reply = error_reply(iq, "cancel", "feature-not-implemented", None);
                if let Some(r) = reply.as_mut()
                    && let Some(e) = r.get_child_mut("error", NS_CLIENT)
                {
                    e.append_child(el("unsupported", NS_PUBSUB_ERRORS).with("feature", op.name()));
                }
                if let Some(r) = reply {
                    self.route(r, Origin::Server);
                }
            }
        }
    }

    fn pubsub_error(self: &Rc<Self>, iq: &Element, kind: &str, condition: &str, app: &str) {
        if let Some(mut r) = error_reply(iq, kind, condition, None) {
            if let Some(e) = r.get_child_mut("error", NS_CLIENT) {
                e.append_child(el(app, NS_PUBSUB_ERRORS));
            }
            self.route(r, Origin::Server);
        }
    }

    /// XEP-0163 §4.3 publishing with XEP-0060 §7.1.5 publish-options preconditions.
    fn pep_publish(self: &Rc<Self>, owner: &BareJid, iq: &Element, pubsub: &Element, publish: &Element) {
        let Some(node) = publish.attr("node").map(str::to_owned) else {
            self.pubsub_error(iq, "modify", "bad-request", "nodeid-required");
            return;
        };
        let items: Vec<&Element> = publish.children().filter(|c| c.is("item", NS_PUBSUB)).collect();
        let [item] = items.as_slice() else {
            self.pubsub_error(iq, "modify", "bad-request", "item-required");
            return;
        };
        let Some(payload) = item.children().next().cloned() else {
            self.pubsub_error(iq, "modify", "bad-request", "payload-required");
            return;
        };
        let options = publish_options(pubsub);
        let id = item.attr("id").map(str::to_owned).unwrap_or_else(|| self.next_id("item"));
        {
            let mut disk = self.disk.borrow_mut();
            let Some(acc) = disk.accounts.get_mut(owner) else { return };
            let node_cfg = match acc.pep.get_mut(&node) {
                Some(existing) => {
                    // §7.1.5: an existing node must already match the preconditions.
                    let mismatch = options.iter().any(|(var, value)| match var.as_str() {
                        "pubsub#access_model" => existing.access_model != *value,
                        "pubsub#max_items" => parse_max_items(value) != Some(existing.max_items),
                        _ => false,
                    });
                    if mismatch {
                        drop(disk);
                        self.pubsub_error(iq, "cancel", "conflict", "precondition-not-met");
                        return;
                    }
                    existing
                }
                None => {
                    // XEP-0163 §4.1 / §8: auto-create with presence access and one item, unless
                    // publish-options say otherwise.
                    let mut cfg = PepNode { access_model: "presence".into(), max_items: 1, items: vec![] };
                    for (var, value) in &options {
                        match var.as_str() {
                            "pubsub#access_model" if value == "open" || value == "presence" => {
                                cfg.access_model = value.clone()
                            }
                            "pubsub#access_model" => {
                                drop(disk);
                                self.pubsub_error(iq, "cancel", "conflict", "precondition-not-met");
                                return;
                            }
                            "pubsub#max_items" => cfg.max_items = parse_max_items(value).unwrap_or(1),
                            _ => {}
                        }
                    }
                    acc.pep.entry(node.clone()).or_insert(cfg)
                }
            };
            node_cfg.items.retain(|(i, _)| *i != id);
            node_cfg.items.push((id.clone(), payload.clone()));
            let keep = node_cfg.max_items.clamp(1, MAX_ITEMS);
            let excess = node_cfg.items.len().saturating_sub(keep);
            node_cfg.items.drain(..excess);
        }
        let result = el("pubsub", NS_PUBSUB).child(
            el("publish", NS_PUBSUB)
                .with("node", node.clone())
                .child(el("item", NS_PUBSUB).with("id", id.clone())),
        );
        self.route(iq_result(iq, None, Some(result)), Origin::Server);

        // XEP-0163 §4.3.2: notify the owner's resources and the contacts subscribed to the
        // owner's presence (this server does not filter on entity capabilities).
        let event = |to: String| {
            el("message", NS_CLIENT)
                .with("from", owner.to_string())
                .with("to", to)
                .with("type", "headline")
                .with("id", self.next_id("ev"))
                .child(
                    el("event", NS_PUBSUB_EVENT).child(
                        el("items", NS_PUBSUB_EVENT)
                            .with("node", node.clone())
                            .child(el("item", NS_PUBSUB_EVENT).with("id", id.clone()).child(payload.clone())),
                    ),
                )
        };
        for full in self.available_sessions(owner) {
            self.send_to_session(&full, event(full.to_string()));
        }
        for (contact, item) in self.roster_of(owner) {
            if item.subscription.has_from() {
                self.route(event(contact.to_string()), Origin::Server);
            }
        }
    }

    /// XEP-0060 §6.5 item retrieval with the access checks of §6.5.9.
    fn pep_items(
        self: &Rc<Self>,
        owner: &BareJid,
        requester: &Jid,
        iq: &Element,
        items: &Element,
        is_owner: bool,
    ) {
        let Some(node) = items.attr("node") else {
            self.pubsub_error(iq, "modify", "bad-request", "nodeid-required");
            return;
        };
        let found = self.disk.borrow().accounts.get(owner).and_then(|a| a.pep.get(node).cloned());
        let Some(cfg) = found else {
            // §subscriber-retrieve-error-node
            self.reply_error(iq, "cancel", "item-not-found");
            return;
        };
        let allowed = is_owner
            || cfg.access_model == "open"
            || self.roster_of(owner).get(&requester.to_bare()).is_some_and(|i| i.subscription.has_from());
        if !allowed {
            // §subscriber-retrieve-error-presence
            self.pubsub_error(iq, "auth", "not-authorized", "presence-subscription-required");
            return;
        }
        let wanted: Vec<&str> =
            items.children().filter(|c| c.is("item", NS_PUBSUB)).filter_map(|c| c.attr("id")).collect();
        let mut chosen: Vec<&(String, Element)> =
            cfg.items.iter().filter(|(id, _)| wanted.is_empty() || wanted.contains(&id.as_str())).collect();
        if let Some(max) = items.attr("max_items").and_then(|m| m.parse::<usize>().ok()) {
            // §subscriber-retrieve-requestrecent: the most recent N.
            let skip = chosen.len().saturating_sub(max);
            chosen.drain(..skip);
        }
        if !wanted.is_empty() && chosen.is_empty() {
            // §subscriber-retrieve-error-items
            self.reply_error(iq, "cancel", "item-not-found");
            return;
        }
        let mut out = el("items", NS_PUBSUB).with("node", node);
        for (id, payload) in chosen {
            out.append_child(el("item", NS_PUBSUB).with("id", id.clone()).child(payload.clone()));
        }
        self.route(
            iq_result(iq, Some(&owner.to_string()), Some(el("pubsub", NS_PUBSUB).child(out))),
            Origin::Server,
        );
    }
}

fn parse_max_items(v: &str) -> Option<usize> {
    if v == "max" { Some(MAX_ITEMS) } else { v.parse().ok() }
}

/// The fields of a XEP-0060 §7.1.5 `<publish-options/>` data form.
fn publish_options(pubsub: &Element) -> Vec<(String, String)> {
    let Some(form) = pubsub.get_child("publish-options", NS_PUBSUB).and_then(|o| o.get_child("x", NS_DATA))
    else {
        return vec![];
    };
    form.children()
        .filter(|f| f.is("field", NS_DATA))
        .filter_map(|f| {
            let var = f.attr("var")?;
            if var == "FORM_TYPE" {
                return None;
            }
            let value = f.get_child("value", NS_DATA).map(|v| v.text()).unwrap_or_default();
            Some((var.to_owned(), value))
        })
        .collect()
}

fn federation_timeouts() -> Timeouts {
    Timeouts { read_timeout: Duration::from_secs(3600), response_timeout: Duration::from_secs(3600) }
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
