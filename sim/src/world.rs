//! [`World`]: the simulator's side of the [`Hooks`] seam. It stamps sim time, writes the
//! transcript, runs the attacker on every hop and keeps what each device experienced.

use core::cell::RefCell;
use core::time::Duration;
use std::collections::BTreeMap;

use jabberwock_e2e::content;
use jabberwock_e2e::{
    BareJid, Carbon, E2eError, Element, Engine, Event, FullJid, OutOfBand, VerificationResult,
};
use jabberwock_xmpp::{Hooks, Hop, Injection, Note, Release, Ticket, TlsSummary};

use crate::attacker::Attacker;
use crate::attacker::{Injection as Planned, Position};
use crate::transcript::{Entry, Transcript, full_xml, short_xml};
use crate::units::fmt_time;

/// A plaintext a device showed its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The text.
    pub body: String,
    /// Who sent it.
    pub from: String,
    /// It carried a delay stamp.
    pub delayed: bool,
    /// It came as a carbon.
    pub carbon: Option<Carbon>,
    /// Trust, as the engine reported it.
    pub trust: String,
}

/// A part of a stanza's content beyond a message body that a device showed its user
/// (XEP-0210 §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownPart {
    /// Who sent it, as the stanza claimed.
    pub from: String,
    /// The stanza it came in: `message`, `presence` or `iq`.
    pub stanza: &'static str,
    /// What it is (`subject`, `chat-state`, `status`, `payload`, ...).
    pub name: &'static str,
    /// The text it shows.
    pub text: String,
    /// Whether it came end-to-end protected.
    pub protected: bool,
}

impl ShownPart {
    /// `name: text`, as `expect: {parts: [...]}` names it.
    pub fn label(&self) -> String {
        format!("{}: {}", self.name, self.text)
    }
}

/// What one device experienced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceLog {
    /// Plaintexts shown, in order.
    pub received: Vec<Received>,
    /// Alert reasons, in order.
    pub alerts: Vec<String>,
    /// Error codes, in order.
    pub errors: Vec<String>,
    /// Verification outcomes.
    pub verifications: Vec<(BareJid, VerificationResult)>,
    /// What the users did in each verification ceremony, as it started.
    pub ceremonies: Vec<(BareJid, jabberwock_e2e::Ceremony)>,
    /// Parts of stanzas beyond message bodies shown, in order.
    pub parts: Vec<ShownPart>,
    /// What its engine learned of its peers' long-term identities, each mark when first held
    /// (ms since the start): (when, the peer account, what the mark is, its bytes).
    pub learned: Vec<(u64, String, &'static str, Vec<u8>)>,
}

/// The simulator's hooks.
#[derive(Debug)]
pub struct World {
    epoch: Duration,
    /// The transcript.
    pub transcript: RefCell<Transcript>,
    /// The attacker, if the scenario has one.
    pub attacker: RefCell<Option<Attacker>>,
    /// Per-device logs.
    pub devices: RefCell<BTreeMap<FullJid, DeviceLog>>,
    /// What identifies each device's long-term key, as last reported
    /// ([`jabberwock_e2e::Engine::identity_marks`]).
    pub identities: RefCell<BTreeMap<FullJid, jabberwock_e2e::IdentityMarks>>,
    oob: RefCell<BTreeMap<FullJid, OutOfBand>>,
    /// The TLS each device's current connection runs, as the device saw its handshake.
    tls: RefCell<BTreeMap<FullJid, TlsSummary>>,
    /// The fingerprint of the certificate a TLS-terminating attacker presents.
    pub attacker_certificate: Option<String>,
}

impl World {
    /// A world whose clock starts at `epoch` (since the Unix epoch).
    pub fn new(epoch: Duration, attacker: Option<Attacker>) -> Self {
        World {
            epoch,
            transcript: RefCell::new(Transcript::default()),
            attacker: RefCell::new(attacker),
            devices: RefCell::new(BTreeMap::new()),
            identities: RefCell::new(BTreeMap::new()),
            oob: RefCell::new(BTreeMap::new()),
            tls: RefCell::new(BTreeMap::new()),
            attacker_certificate: None,
        }
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now().saturating_sub(self.epoch)
    }

    /// Appends a transcript line at the current time.
    pub fn line(&self, kind: &'static str, text: String, xml: Option<String>) {
        let at = self.elapsed();
        self.transcript.borrow_mut().push(at, kind, text, xml);
    }

    /// A transcript line at the current time, for [`World::record`] once its structured
    /// fields (who, what, which hop) are set.
    pub fn stamp(&self, kind: &'static str, text: String, xml: Option<String>) -> Entry {
        Entry::new(self.elapsed(), kind, text, xml)
    }

    /// Appends a line made with [`World::stamp`].
    pub fn record(&self, entry: Entry) {
        self.transcript.borrow_mut().push_entry(entry);
    }

    /// An attacker line: its label first, the attacker as actor.
    fn attack_line(&self, what: &'static str, text: String, xml: Option<String>) -> Entry {
        let label = self.attacker_label();
        self.stamp("attack", format!("{label} {text}"), xml).by(label).what(what)
    }

    /// An engine refused a stanza: the transcript line (`note` appended) and the device's
    /// error list.
    fn engine_error(&self, device: &FullJid, error: &E2eError, note: &str) {
        self.record(self.device_line(
            "error",
            "engine-error",
            device,
            format!("✗ engine error {} ({} at fault): {error}{note}", error.code(), error.fault()),
        ));
        self.log(device, |l| l.errors.push(error.code().to_owned()));
    }

    /// A line about one device, which starts with its JID.
    fn device_line(&self, kind: &'static str, what: &'static str, device: &FullJid, text: String) -> Entry {
        self.stamp(kind, format!("{device} {text}"), None).by(device.to_string()).what(what)
    }

    /// Whether `hop` is a client link the attacker sits on, under TLS that the client runs
    /// with its server (not with the attacker): all the attacker gets there are TLS records.
    fn sealed_from_attacker(&self, hop: &Hop) -> bool {
        let client = match hop {
            Hop::ClientToServer { client, .. } | Hop::ServerToClient { client, .. } => client,
            Hop::ServerToServer { .. } => return false,
        };
        let on_link = self
            .attacker
            .borrow()
            .as_ref()
            .is_some_and(|a| matches!(a.position(), Position::ClientLink(dev) if dev == client));
        on_link
            && self.tls.borrow().get(client).is_some_and(|t| {
                self.attacker_certificate.as_deref()
                    != Some(&jabberwock_e2e::tls::fingerprint(&t.server_certificate))
            })
    }

    /// How the session-up line describes a device's TLS.
    fn describe_tls(&self, t: &TlsSummary) -> String {
        let fp = jabberwock_e2e::tls::fingerprint(&t.server_certificate);
        let short: String = fp.chars().take(16).collect();
        let whose =
            if self.attacker_certificate.as_deref() == Some(fp.as_str()) { " (the attacker's)" } else { "" };
        let verified = if t.verified { "verified" } else { "NOT verified" };
        format!("{t}, server certificate {short}…{whose} {verified}")
    }

    pub(crate) fn attacker_label(&self) -> String {
        self.attacker.borrow().as_ref().map(|a| format!("⚔ attacker ({})", a.position())).unwrap_or_default()
    }

    fn log(&self, device: &FullJid, f: impl FnOnce(&mut DeviceLog)) {
        f(self.devices.borrow_mut().entry(device.clone()).or_default());
    }
}

impl Hooks for World {
    fn now(&self) -> Duration {
        turmoil::since_epoch().unwrap_or(self.epoch)
    }

    fn intercept(&self, hop: &Hop, stanza: Element) -> Vec<Release> {
        let original = full_xml(&stanza);
        let (from, to) = ends(hop);
        let hop_line = self
            .stamp("hop", format!("{hop}  {}", short_xml(&stanza)), Some(original.clone()))
            .between(from.clone(), to.clone());
        if self.sealed_from_attacker(hop) {
            // The attacker saw this stanza's records (`Note::Records`); TLS hides the rest.
            self.record(hop_line);
            return vec![Release::Now(stanza)];
        }
        let mut log = Vec::new();
        let at = self.elapsed();
        let releases = match self.attacker.borrow_mut().as_mut() {
            Some(a) => a.intercept(at, hop, stanza, &mut log),
            None => vec![Release::Now(stanza)],
        };
        // What goes on now, as sent (`None`) or changed (`Some(xml)`); delayed ones are absent.
        let now: Vec<Option<String>> = releases
            .iter()
            .filter_map(|r| match r {
                Release::Now(s) => Some(Some(full_xml(s)).filter(|x| *x != original)),
                _ => None,
            })
            .collect();
        let passed = now.iter().any(Option::is_none);
        let acted = !log.is_empty() || now.len() != 1 || !passed;
        // The hop line is written after the attacker ran (nothing else writes meanwhile), so
        // it can say whether the stanza went on.
        self.record(hop_line.intercepted(acted.then_some(!passed)));
        for line in log {
            self.record(self.attack_line("act", line, None).between(from.clone(), to.clone()));
        }
        // A modified stanza is shown as it leaves the attacker.
        for r in &releases {
            if let Release::Now(s) = r
                && full_xml(s) != original
            {
                self.record(
                    self.attack_line(
                        "deliver",
                        format!("delivers on {hop}: {}", short_xml(s)),
                        Some(full_xml(s)),
                    )
                    .between(from.clone(), to.clone()),
                );
            }
        }
        releases
    }

    fn materialize(&self, hop: &Hop, index: usize) -> Vec<Element> {
        let now = self.now();
        let made = {
            let mut attacker = self.attacker.borrow_mut();
            let Some(a) = attacker.as_mut() else { return vec![] };
            let Some((_, _, planned)) = a.injections().get(index).cloned() else { return vec![] };
            match planned {
                Planned::Stanza(stanza) => return vec![stanza],
                Planned::Forge { from, to, protocol, body, keys } => {
                    a.forge(now, hop, &from, &to, protocol, &body, keys)
                }
                Planned::Forward { stolen, from, to, body } => a.forward(now, &stolen, &from, &to, &body),
            }
        };
        let (stanzas, line) = made;
        let (from, to) = ends(hop);
        self.record(self.attack_line("forge", format!("{line} on {hop}"), None).between(from, to));
        stanzas
    }

    fn redeem(&self, ticket: Ticket) -> Option<Element> {
        let redeemed = self.attacker.borrow_mut().as_mut().and_then(|a| a.redeem(ticket));
        let (hop, stanza) = redeemed?;
        let (from, to) = ends(&hop);
        self.record(
            self.attack_line(
                "release",
                format!("releases on {hop}: {}", short_xml(&stanza)),
                Some(full_xml(&stanza)),
            )
            .between(from, to),
        );
        Some(stanza)
    }

    fn injections(&self, server: &str) -> Vec<Injection> {
        let attacker = self.attacker.borrow();
        let Some(a) = attacker.as_ref() else { return vec![] };
        a.injections()
            .iter()
            .enumerate()
            .filter(|(_, (_, hop, _))| match hop {
                Hop::ServerToServer { to, .. } => to == server,
                Hop::ClientToServer { server: s, .. } | Hop::ServerToClient { server: s, .. } => s == server,
            })
            .map(|(index, (at, hop, _))| Injection { at: self.epoch + *at, hop: hop.clone(), index })
            .collect()
    }

    fn note(&self, note: Note<'_>) {
        match note {
            Note::Joined { device } => {
                self.record(self.device_line("session", "joins", device, "joins the network".to_owned()))
            }
            Note::SessionUp { device } => {
                let tls = self.tls.borrow().get(device).map(|t| format!("{}; ", self.describe_tls(t)));
                self.record(self.device_line(
                    "session",
                    "session-up",
                    device,
                    format!(
                        "⇄ {} session up ({}SASL PLAIN, bound)",
                        device.domain(),
                        tls.unwrap_or_default()
                    ),
                ))
            }
            Note::TlsUp { device, summary } => {
                self.tls.borrow_mut().insert(device.clone(), summary.clone());
            }
            Note::TlsFailed { party, reason } => self.record(
                self.stamp("session", format!("{party} TLS handshake failed: {reason}"), None)
                    .by(party_of(party))
                    .what("tls-failed"),
            ),
            Note::Records { hop, sizes } => {
                if self.sealed_from_attacker(hop) {
                    let bytes: usize = sizes.iter().sum();
                    if let Some(a) = self.attacker.borrow_mut().as_mut() {
                        a.records += sizes.len();
                        a.record_bytes += bytes;
                    }
                    let what = match sizes {
                        [one] => format!("a TLS record of {one} bytes"),
                        many => format!("{} TLS records, {bytes} bytes", many.len()),
                    };
                    let (from, to) = ends(hop);
                    self.record(
                        self.attack_line("records", format!("sees {what} on {hop}"), None).between(from, to),
                    );
                }
            }
            Note::SessionDown { device, reason } => self.record(self.device_line(
                "session",
                "session-down",
                device,
                format!("session down: {reason}"),
            )),
            Note::ConnectFailed { party, reason } => self.record(
                self.stamp("session", format!("{party} cannot connect: {reason}"), None)
                    .by(party_of(party))
                    .what("connect-failed"),
            ),
            Note::StreamError { party, condition, detail } => {
                if let Ok(dev) = party.parse::<FullJid>() {
                    self.log(&dev, |l| l.errors.push(condition.to_owned()));
                }
                self.record(
                    self.stamp("error", format!("{party} ✗ stream error <{condition}>: {detail}"), None)
                        .by(party_of(party))
                        .what("stream-error"),
                );
            }
            Note::StoredOffline { server, account, id } => self.record(
                self.stamp("event", format!("{server} stores {id} for offline {account} (XEP-0160)"), None)
                    .by(server)
                    .what("stored-offline"),
            ),
            Note::Send { device, to, body, queued, parts } => {
                let q = if queued { " (queued: offline)" } else { "" };
                let with = if parts.is_empty() {
                    String::new()
                } else {
                    format!(" with {}", list_parts("message", parts))
                };
                self.record(self.device_line(
                    "event",
                    "send",
                    device,
                    format!("⇒ sends {body:?}{with} to {to}{q}"),
                ));
            }
            Note::SendOther { device, to, stanza, parts } => {
                self.record(self.device_line(
                    "event",
                    "send",
                    device,
                    format!("⇒ sends {stanza} {} to {to}", list_parts(stanza, parts)),
                ));
            }
            Note::Parts { device, from, stanza, parts, protected } => {
                let how = if protected { "protected" } else { "in clear" };
                self.record(self.device_line(
                    "event",
                    "parts",
                    device,
                    format!("⇐ {stanza} parts {} from {from} ({how})", list_parts(stanza, parts)),
                ));
                let shown = parts.iter().map(|p| {
                    let (name, text) = part_of(stanza, p);
                    ShownPart { from: from.to_owned(), stanza, name, text, protected }
                });
                self.log(device, |l| l.parts.extend(shown));
            }
            Note::Event { device, event } => match event {
                Event::Plaintext { from, body, trust, delay, carbon } => {
                    let mut extra = format!("trust={trust}");
                    if let Some(d) = delay {
                        extra.push_str(&format!(", delayed {}", fmt_time(*d)));
                    }
                    if let Some(c) = carbon {
                        extra.push_str(match c {
                            Carbon::Received => ", carbon=received",
                            Carbon::Sent => ", carbon=sent",
                        });
                    }
                    self.record(self.device_line(
                        "event",
                        "plaintext",
                        device,
                        format!("⇐ plaintext {body:?} from {from} ({extra})"),
                    ));
                    let r = Received {
                        body: body.clone(),
                        from: from.to_string(),
                        delayed: delay.is_some(),
                        carbon: *carbon,
                        trust: trust.to_string(),
                    };
                    self.log(device, |l| l.received.push(r));
                }
                Event::Alert { reason, detail } => {
                    self.record(self.device_line(
                        "event",
                        "alert",
                        device,
                        format!("⚠ alert {reason}: {detail}"),
                    ));
                    self.log(device, |l| l.alerts.push((*reason).to_owned()));
                }
                Event::TrustChanged { peer, device: d, fingerprint, trust } => {
                    let short: String = fingerprint.chars().take(16).collect();
                    self.record(self.device_line(
                        "event",
                        "trust",
                        device,
                        format!("🔑 {peer} device {d} key {short}… is {trust}"),
                    ));
                }
                Event::Ceremony { peer, ceremony } => {
                    self.record(self.device_line(
                        "event",
                        "ceremony",
                        device,
                        format!("✓ verification of {peer} starts: {ceremony}"),
                    ));
                    self.log(device, |l| l.ceremonies.push((peer.clone(), ceremony.clone())));
                }
                Event::Verification { peer, result } => {
                    self.record(self.device_line(
                        "event",
                        "verification",
                        device,
                        format!("✓ verification of {peer}: {result:?}"),
                    ));
                    self.log(device, |l| l.verifications.push((peer.clone(), *result)));
                }
                // The client notes the parts with those that came in clear (`Note::Parts`).
                Event::Parts { .. } => {}
                Event::Rejected { from, error } => {
                    // Recorded as the engine error it is: the same rejection reads the same
                    // whether or not the stanza first waited for its sender's keys.
                    self.engine_error(device, error, &format!(" (a stanza from {from}, held for its keys)"));
                }
            },
            Note::EngineError { device, error } => self.engine_error(device, error, ""),
            Note::StanzaError { device, from, condition } => {
                self.record(self.device_line(
                    "error",
                    "stanza-error",
                    device,
                    format!("✗ stanza error <{condition}> from {from}"),
                ));
                self.log(device, |l| l.errors.push(condition));
            }
            Note::ClientAlert { device, reason, detail } => {
                self.record(self.device_line(
                    "event",
                    "alert",
                    device,
                    format!("⚠ alert {reason}: {detail}"),
                ));
                self.log(device, |l| l.alerts.push(reason.to_owned()));
            }
            Note::Injected { hop, stanza, rerouted } => {
                // A relayed answer is the work of the power that took the stanza
                // (`impersonate`, a forger): not an injection of its own.
                if !rerouted && let Some(a) = self.attacker.borrow_mut().as_mut() {
                    *a.acted.entry("inject").or_default() += 1;
                }
                let (from, to) = ends(hop);
                self.record(
                    self.attack_line(
                        "inject",
                        format!("injects on {hop}: {}", short_xml(stanza)),
                        Some(full_xml(stanza)),
                    )
                    .between(from, to),
                );
            }
            Note::Lost { hop, reason } => {
                let (from, to) = ends(hop);
                self.record(
                    self.stamp("error", format!("{hop} stanza lost: {reason}"), None)
                        .between(from, to)
                        .what("lost"),
                )
            }
            other => self.line("event", format!("{other:?}"), None),
        }
    }

    fn announce(&self, device: &FullJid, oob: OutOfBand) {
        self.oob.borrow_mut().insert(device.clone(), oob);
    }

    fn out_of_band(&self, peer: &BareJid) -> OutOfBand {
        let mut says = Vec::new();
        for (dev, oob) in self.oob.borrow().iter() {
            if dev.to_bare() == *peer {
                says.extend(oob.peer_says.iter().cloned());
            }
        }
        OutOfBand { peer_says: says }
    }

    fn identity(&self, device: &FullJid, marks: jabberwock_e2e::IdentityMarks) {
        self.identities.borrow_mut().insert(device.clone(), marks);
    }

    fn peer_identity(&self, device: &FullJid, peer: &BareJid, marks: &jabberwock_e2e::IdentityMarks) {
        let at = u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut devices = self.devices.borrow_mut();
        let learned = &mut devices.entry(device.clone()).or_default().learned;
        let peer = peer.to_string();
        for (name, bytes) in marks {
            if !learned.iter().any(|(_, p, _, b)| *p == peer && b == bytes) {
                learned.push((at, peer.clone(), name, bytes.clone()));
            }
        }
    }

    fn stolen(&self, device: &FullJid, stolen: Box<dyn Engine>) {
        let at = self.elapsed();
        self.record(self.attack_line("steal", format!("steals the state of {device}"), None));
        if let Some(a) = self.attacker.borrow_mut().as_mut() {
            a.stolen.push((at, device.clone(), stolen));
        }
    }
}

/// What a part is and the text it shows: a message part as [`content::describe`] names it, a
/// presence's `status`, or else an iq's `payload` (its character data).
fn part_of(stanza: &str, part: &Element) -> (&'static str, String) {
    match content::describe(part) {
        Some((name, text)) if stanza != "iq" => (name, text),
        _ => ("payload", content::all_text(part)),
    }
}

/// Parts for a transcript line: `subject "…", chat-state "composing"`.
fn list_parts(stanza: &str, parts: &[Element]) -> String {
    let named: Vec<String> = parts
        .iter()
        .map(|p| {
            let (name, text) = part_of(stanza, p);
            format!("{name} {text:?}")
        })
        .collect();
    named.join(", ")
}

/// A hop's sending and receiving ends, as the diagram's participants: a device's full JID or
/// a server's domain.
fn ends(hop: &Hop) -> (String, String) {
    match hop {
        Hop::ClientToServer { client, server } => (client.to_string(), server.clone()),
        Hop::ServerToServer { from, to } => (from.clone(), to.clone()),
        Hop::ServerToClient { server, client } => (server.clone(), client.to_string()),
    }
}

/// The participant behind a `party` of a server or client note: a device's full JID, or
/// the domain a server's party names first (`a.example c2s of …`, `b.example s2s-in`).
fn party_of(party: &str) -> String {
    if party.parse::<FullJid>().is_ok() {
        return party.to_owned();
    }
    party.split(' ').next().unwrap_or(party).to_owned()
}
