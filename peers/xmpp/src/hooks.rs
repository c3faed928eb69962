//! The seam between the XMPP world and whoever watches it (the simulator, or nobody).

use core::fmt;
use core::time::Duration;

use jabberwock_e2e::{BareJid, E2eError, Element, Engine, Event, FullJid, OutOfBand};

/// Where a stanza is travelling. Every stanza crosses exactly one hop per network leg, and
/// every hop passes through [`Hooks::intercept`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hop {
    /// From a client device to its server (intercepted as the server reads it).
    ClientToServer {
        /// The sending device.
        client: FullJid,
        /// The server's domain.
        server: String,
    },
    /// From one server to another over the federation link (intercepted as it is sent).
    ServerToServer {
        /// The sending domain.
        from: String,
        /// The receiving domain.
        to: String,
    },
    /// From a server to one of its client devices (intercepted as the server writes it).
    ServerToClient {
        /// The server's domain.
        server: String,
        /// The receiving device.
        client: FullJid,
    },
}

impl Hop {
    /// The servers this hop touches (one for client hops, two for federation).
    pub fn servers(&self) -> [&str; 2] {
        match self {
            Hop::ClientToServer { server, .. } | Hop::ServerToClient { server, .. } => [server, server],
            Hop::ServerToServer { from, to } => [from, to],
        }
    }
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hop::ClientToServer { client, server } => write!(f, "{client} → {server}"),
            Hop::ServerToServer { from, to } => write!(f, "{from} → {to}"),
            Hop::ServerToClient { server, client } => write!(f, "{server} → {client}"),
        }
    }
}

/// A claim on a stanza held back by [`Hooks::intercept`], redeemed with [`Hooks::redeem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// What happens to an intercepted stanza (or to one of its copies).
#[derive(Debug, Clone, PartialEq)]
pub enum Release {
    /// Deliver this stanza now, in order with the other `Now` releases of the same call.
    Now(Element),
    /// Ask [`Hooks::redeem`] for the stanza after `after`; it may have been released
    /// elsewhere by then (reordering), in which case nothing is delivered.
    Later {
        /// How long to wait.
        after: Duration,
        /// The claim.
        ticket: Ticket,
    },
    /// Put this stanza on another hop of the same server now, as an injection: an attacker
    /// inside the server answering in someone's name (a man in the middle).
    Reroute {
        /// The hop it appears on.
        hop: Hop,
        /// The stanza.
        stanza: Element,
    },
}

/// Something the attacker injects on a hop at a given time: the hooks make the stanzas then
/// ([`Hooks::materialize`]), so the server needs to know only when and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    /// When, as a duration since the Unix epoch.
    pub at: Duration,
    /// The hop it appears on. Its server(s) decide which server process carries it out.
    pub hop: Hop,
    /// Which of the hooks' planned injections it is (what `materialize` is asked for).
    pub index: usize,
}

/// Things worth a line in the transcript that are not stanzas on a hop.
#[non_exhaustive]
#[derive(Debug)]
pub enum Note<'a> {
    /// A device that was not on the network until now appears ([`crate::DeviceConfig::joins`]).
    Joined {
        /// The device.
        device: &'a FullJid,
    },
    /// A client session came up (stream, SASL PLAIN, bind done).
    SessionUp {
        /// The device.
        device: &'a FullJid,
    },
    /// A client session ended; `reason` says why.
    SessionDown {
        /// The device.
        device: &'a FullJid,
        /// Why (clean logout, reset, timeout, stream error, ...).
        reason: String,
    },
    /// A client finished the TLS handshake of STARTTLS (RFC 6120 §5.4.3) on a new connection.
    TlsUp {
        /// The device.
        device: &'a FullJid,
        /// Version, suite, the server's certificate, whether it was verified.
        summary: &'a crate::tls::TlsSummary,
    },
    /// A server's side of a TLS handshake failed (RFC 6120 §5.4.3.2: the connection closes).
    TlsFailed {
        /// Who saw it.
        party: &'a str,
        /// Why.
        reason: String,
    },
    /// A stanza left a peer under TLS: what a wire observer of `hop` sees of it are these
    /// records (their sizes, 5-byte header included), not the stanza.
    Records {
        /// The hop.
        hop: &'a Hop,
        /// Record sizes in bytes.
        sizes: &'a [usize],
    },
    /// A connection attempt failed.
    ConnectFailed {
        /// Who tried.
        party: &'a str,
        /// Why it failed.
        reason: String,
    },
    /// A stream error or unparsable input on a stream.
    StreamError {
        /// Who detected it.
        party: &'a str,
        /// The RFC 6120 §4.9.3 condition.
        condition: &'static str,
        /// Details.
        detail: String,
    },
    /// A server stored a message for an offline account (XEP-0160).
    StoredOffline {
        /// The server.
        server: &'a str,
        /// The account.
        account: &'a str,
        /// The stanza id.
        id: &'a str,
    },
    /// A device asked its engine to send a message.
    Send {
        /// The device.
        device: &'a FullJid,
        /// The recipient account.
        to: &'a str,
        /// The plaintext.
        body: &'a str,
        /// Whether it was queued because the device is offline.
        queued: bool,
        /// The other parts it carries (XEP-0210 §4.1), as the elements they are.
        parts: &'a [Element],
    },
    /// A device sent directed presence with a status, or an iq payload, to another entity
    /// (XEP-0210 §4.1).
    SendOther {
        /// The device.
        device: &'a FullJid,
        /// The recipient.
        to: &'a str,
        /// `presence` or `iq`.
        stanza: &'static str,
        /// What it carries (`<status/>`, the iq payload).
        parts: &'a [Element],
    },
    /// Parts of a stanza's content beyond a message body reached a device (XEP-0210 §4.1):
    /// shown from a stanza in clear (`protected: false`), or as its engine reported them
    /// ([`Event::Parts`], `protected: true`).
    Parts {
        /// The device.
        device: &'a FullJid,
        /// Who sent them, as the stanza claimed.
        from: &'a str,
        /// `message`, `presence` or `iq`.
        stanza: &'static str,
        /// The parts.
        parts: &'a [Element],
        /// Whether they came end-to-end protected.
        protected: bool,
    },
    /// A device's engine reported an event (plaintext, alert, verification).
    Event {
        /// The device.
        device: &'a FullJid,
        /// The event.
        event: &'a Event,
    },
    /// A device's engine rejected input or refused to act.
    EngineError {
        /// The device.
        device: &'a FullJid,
        /// The error.
        error: &'a E2eError,
    },
    /// A device received an RFC 6120 §8.3 stanza error.
    StanzaError {
        /// The device.
        device: &'a FullJid,
        /// Who sent the error.
        from: &'a str,
        /// The defined condition.
        condition: String,
    },
    /// A device detected something that is not an engine matter (e.g. forged carbons).
    ClientAlert {
        /// The device.
        device: &'a FullJid,
        /// A kebab-case reason.
        reason: &'static str,
        /// Details.
        detail: String,
    },
    /// The attacker put a forged stanza on a hop.
    Injected {
        /// The hop.
        hop: &'a Hop,
        /// The stanza.
        stanza: &'a Element,
        /// Whether it is the attacker's answer to a stanza it just took ([`Release::Reroute`],
        /// a man in the middle relaying), rather than one of its planned injections.
        rerouted: bool,
    },
    /// A stanza scheduled for a session that no longer exists was lost.
    Lost {
        /// Where it was going.
        hop: &'a Hop,
        /// Why.
        reason: &'static str,
    },
}

/// Everything the outside world provides to servers and clients. Every method has a
/// pass-through default but [`Hooks::now`], so a caller that only supplies a clock runs a plain,
/// unwatched XMPP network.
pub trait Hooks {
    /// The current time as a duration since the Unix epoch (simulated inside the bench).
    fn now(&self) -> Duration;

    /// A stanza is about to cross `hop`; returns what is actually delivered.
    fn intercept(&self, hop: &Hop, stanza: Element) -> Vec<Release> {
        let _ = hop;
        vec![Release::Now(stanza)]
    }

    /// Redeems a [`Release::Later`] ticket; `None` when it was already released or dropped.
    fn redeem(&self, ticket: Ticket) -> Option<Element> {
        let _ = ticket;
        None
    }

    /// The forged stanzas a given server process must put on its hops.
    fn injections(&self, server: &str) -> Vec<Injection> {
        let _ = server;
        Vec::new()
    }

    /// What injection `index` puts on its hop when its time comes: a stanza written out, or
    /// what the attacker makes then (a forgery needs the keys it has recorded by that time).
    fn materialize(&self, hop: &Hop, index: usize) -> Vec<Element> {
        let _ = (hop, index);
        Vec::new()
    }

    /// Records a non-stanza event.
    fn note(&self, note: Note<'_>) {
        let _ = note;
    }

    /// A device tells the out-of-band channel what it would say about itself (its
    /// fingerprints): the channel the attacker cannot touch.
    fn announce(&self, device: &FullJid, oob: OutOfBand) {
        let _ = (device, oob);
    }

    /// What identifies a device's long-term key ([`jabberwock_e2e::Engine::identity_marks`]),
    /// as it stands: reported with every [`Hooks::announce`], for the judges.
    fn identity(&self, device: &FullJid, marks: jabberwock_e2e::IdentityMarks) {
        let _ = (device, marks);
    }

    /// What a device's engine holds of `peer`'s long-term identity after a stanza from them
    /// ([`jabberwock_e2e::Engine::peer_marks`]), reported when it changed, for the judges.
    fn peer_identity(&self, device: &FullJid, peer: &BareJid, marks: &jabberwock_e2e::IdentityMarks) {
        let _ = (device, peer, marks);
    }

    /// What the devices of `peer` say on the out-of-band channel.
    fn out_of_band(&self, peer: &BareJid) -> OutOfBand {
        let _ = peer;
        OutOfBand { peer_says: Vec::new() }
    }

    /// A device was compromised: the attacker now holds `stolen`.
    fn stolen(&self, device: &FullJid, stolen: Box<dyn Engine>) {
        let _ = (device, stolen);
    }
}
