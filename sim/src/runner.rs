//! The runner: builds a turmoil simulation from a [`Scenario`], runs it, and turns what
//! happened into an [`Outcome`] with the `expect:` checks evaluated.

use core::cell::RefCell;
use core::fmt::Write as _;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use jabberwock_e2e::time::EPOCH;
use jabberwock_e2e::tls::{Identity, SimTime};
use jabberwock_e2e::{BareJid, Carbon, EngineConfig, FullJid, new_engine};
use jabberwock_xmpp::{
    Account, C2S_PORT, ClientTls, Device, DeviceConfig, Disk, Hooks, S2S_PORT, Server, ServerConfig,
    ServerTls, Transport,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::attacker::Action;
use crate::attacker::{Attacker, Impostor};
pub use crate::attacker::{AttackerReport, Forgery, Read};
use crate::implementations::Implementation;
use crate::scenario::{NetEvent, Party, PartyExpect, Position, Scenario, Shown, Transport as C2sTransport};
use crate::transcript::Transcript;
use crate::units::fmt_time;
use crate::world::{DeviceLog, World};

/// The environment variable that runs every device's engine behind an adapter
/// (`docs/engine-protocol.md`): a command line (words split at spaces) to which the protocol's
/// name is appended, e.g. `/path/to/jabberwock adapter`. A test hook for now: the scenarios'
/// own choice of implementation comes later.
pub const ENGINE_ADAPTER: &str = "JABBERWOCK_ENGINE_ADAPTER";

/// A device's engine: ours in process, or behind an adapter — the implementation its scenario
/// names, else the one [`ENGINE_ADAPTER`] names — with what the adapter says it is.
fn build_engine(
    protocol: jabberwock_e2e::Protocol,
    implementation: Option<&Implementation>,
    me: &FullJid,
    rng: &mut dyn RngCore,
    config: &EngineConfig,
) -> (Box<dyn jabberwock_e2e::Engine>, Option<String>) {
    let limit = jabberwock_external::DEFAULT_LIMIT;
    let (command, name) = match implementation {
        Some(implementation) => (implementation.command(protocol), implementation.name.as_str()),
        None => {
            let adapter = std::env::var(ENGINE_ADAPTER).ok().filter(|c| !c.trim().is_empty());
            let Some(line) = adapter else { return (new_engine(protocol, me, rng, config), None) };
            let mut words = line.split_whitespace();
            let mut command = std::process::Command::new(words.next().unwrap_or_default());
            command.args(words).arg(protocol.name());
            (command, ENGINE_ADAPTER)
        }
    };
    match jabberwock_external::PipeEngine::spawn(command, limit, protocol, me, rng, config) {
        Ok(engine) => {
            let said = format!("{name} (its adapter says: {})", engine.implementation());
            (Box::new(engine), Some(said))
        }
        Err(e) => {
            let said = format!("{name} (its adapter could not start: {e})");
            (Box::new(jabberwock_external::PipeEngine::broken(protocol, e)), Some(said))
        }
    }
}

/// A failure of the simulation itself (not of an expectation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("simulation failed: {0}")]
pub struct RunError(pub String);

/// One evaluated expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was expected, in words.
    pub what: String,
    /// Whether it held.
    pub ok: bool,
    /// What was found instead (empty when ok).
    pub detail: String,
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Scenario name.
    pub name: String,
    /// Scenario file.
    pub file: String,
    /// The seed used.
    pub seed: u64,
    /// Simulated duration.
    pub simulated: Duration,
    /// The transcript.
    pub transcript: Transcript,
    /// Per device.
    pub devices: BTreeMap<FullJid, DeviceLog>,
    /// What identifies each device's long-term key at the end of the run (its public key,
    /// fingerprints, key IDs, certificates: [`jabberwock_e2e::Engine::identity_marks`]).
    pub identities: BTreeMap<FullJid, jabberwock_e2e::IdentityMarks>,
    /// The attacker's report.
    pub attacker: Option<AttackerReport>,
    /// The `expect:` checks.
    pub checks: Vec<Check>,
    /// The devices whose engine an independent implementation ran, with what its adapter
    /// said it is (its name and exact version; the error when it could not start).
    pub implementations: BTreeMap<FullJid, String>,
}

impl Outcome {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The first failed expectation, in one line.
    pub fn failure(&self) -> Option<String> {
        self.checks.iter().find(|c| !c.ok).map(|c| format!("{}: {}", c.what, c.detail))
    }

    /// The reviewable text: header, transcript, outcome, expectations.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {} (seed {}, {} simulated)",
            self.name,
            self.seed,
            fmt_time(self.simulated)
        );
        for (dev, implementation) in &self.implementations {
            let _ = writeln!(out, "{dev} runs {implementation}");
        }
        out.push_str("== transcript ==\n");
        out.push_str(&self.transcript.render());
        out.push_str("== outcome ==\n");
        for (dev, log) in &self.devices {
            let bodies: Vec<String> = log.received.iter().map(describe_received).collect();
            let _ = writeln!(out, "{dev}: received [{}]", bodies.join(", "));
            if !log.alerts.is_empty() {
                let _ = writeln!(out, "{dev}: alerts [{}]", log.alerts.join(", "));
            }
            if !log.errors.is_empty() {
                let _ = writeln!(out, "{dev}: errors [{}]", log.errors.join(", "));
            }
            for (peer, result) in &log.verifications {
                let _ = writeln!(out, "{dev}: verified {peer}: {result:?}");
            }
            if !log.parts.is_empty() {
                let parts: Vec<String> = log
                    .parts
                    .iter()
                    .map(|p| {
                        format!("{:?} ({})", p.label(), if p.protected { "protected" } else { "in clear" })
                    })
                    .collect();
                let _ = writeln!(out, "{dev}: parts [{}]", parts.join(", "));
            }
        }
        if let Some(a) = &self.attacker {
            let _ = writeln!(
                out,
                "attacker ({}): saw {} stanzas, stole [{}]",
                a.position,
                a.seen,
                a.stolen.join(", ")
            );
            for line in &a.unusable {
                let _ = writeln!(out, "attacker could not use a stolen state: {line}");
            }
            if a.records.0 > 0 {
                let _ = writeln!(
                    out,
                    "attacker saw {} TLS records ({} bytes) it could not open",
                    a.records.0, a.records.1
                );
            }
            for r in &a.read {
                let _ = writeln!(out, "attacker read {:?} at {} ({})", r.body, fmt_time(r.at), r.means);
            }
            if !a.acted.is_empty() {
                let acted: Vec<String> = a.acted.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
                let _ = writeln!(out, "attacker acted: {}", acted.join(", "));
            }
            for f in &a.forgeries {
                let _ = writeln!(
                    out,
                    "deniability test: {} forged a message from {}: {}",
                    f.recipient, f.claimed, f.detail
                );
            }
            for (at, peer, name, _) in &a.learned {
                let _ = writeln!(
                    out,
                    "attacker learned {peer}'s {name} at {} in a session its engines ran with them",
                    fmt_time(*at)
                );
            }
            if let Some((n, total)) = a.public_forgery {
                let _ = writeln!(
                    out,
                    "transcript test: {n} of {total} recorded encrypted messages verify under MAC keys published in the recording"
                );
            }
            if a.read.is_empty() {
                let _ = writeln!(out, "attacker read nothing");
            }
        }
        out.push_str("== expectations ==\n");
        for c in &self.checks {
            if c.ok {
                let _ = writeln!(out, "✓ {}", c.what);
            } else {
                let _ = writeln!(out, "✗ {} — {}", c.what, c.detail);
            }
        }
        let _ = writeln!(out, "{}", if self.passed() { "PASS" } else { "FAIL" });
        out
    }
}

fn describe_received(r: &crate::world::Received) -> String {
    let mut s = format!("{:?}", r.body);
    if r.delayed {
        s.push_str(" (delayed)");
    }
    match r.carbon {
        Some(Carbon::Received) => s.push_str(" (carbon received)"),
        Some(Carbon::Sent) => s.push_str(" (carbon sent)"),
        None => {}
    }
    s
}

/// The deterministic random stream of one host: ChaCha20 keyed by the seed and the host name.
pub fn host_rng(seed: u64, host: &str) -> ChaCha20Rng {
    let mut h = Sha256::new();
    h.update(b"jabberwock host rng\0");
    h.update(seed.to_be_bytes());
    h.update(host.as_bytes());
    ChaCha20Rng::from_seed(h.finalize().into())
}

/// turmoil TCP as a [`Transport`], with a connect timeout (a partitioned host never answers).
#[derive(Debug, Clone, Copy)]
pub struct Net;

impl Transport for Net {
    type Io = turmoil::net::TcpStream;

    async fn connect(&self, host: &str, port: u16) -> std::io::Result<Self::Io> {
        let host = host.to_owned();
        match tokio::time::timeout(
            Duration::from_secs(3),
            turmoil::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")),
        }
    }
}

/// A TLS-terminating attacker on one device's link: it answers that device's handshakes.
struct Terminator {
    /// The device's host name.
    victim: String,
    /// The attacker's side of the handshake.
    tls: ServerTls,
    world: Rc<World>,
}

async fn serve(
    server: Rc<Server<Net>>,
    own: Option<ServerTls>,
    terminator: Option<Terminator>,
) -> turmoil::Result {
    server.start();
    let c2s = turmoil::net::TcpListener::bind(("0.0.0.0", C2S_PORT)).await?;
    let s2s = turmoil::net::TcpListener::bind(("0.0.0.0", S2S_PORT)).await?;
    let s2s_server = Rc::clone(&server);
    tokio::task::spawn_local(async move {
        while let Ok((io, _)) = s2s.accept().await {
            tokio::task::spawn_local(Rc::clone(&s2s_server).serve_s2s(io));
        }
    });
    loop {
        let (io, peer) = c2s.accept().await?;
        // The attacker on the victim's link holds the other end of the victim's connections:
        // their TLS handshake meets its certificate, not this server's.
        let tls = match &terminator {
            Some(t) if turmoil::reverse_lookup(peer.ip()).as_deref() == Some(t.victim.as_str()) => {
                let label = t.world.attacker_label();
                let fp: String =
                    t.world.attacker_certificate.as_deref().unwrap_or_default().chars().take(16).collect();
                let text =
                    format!("{label} terminates TLS of {}: presents its own certificate {fp}…", t.victim);
                t.world.record(t.world.stamp("attack", text, None).by(label).what("terminate-tls"));
                Some(t.tls.clone())
            }
            _ => own.clone(),
        };
        tokio::task::spawn_local(Rc::clone(&server).serve_c2s_presenting(io, tls));
    }
}

/// 32 seed bytes for `label`, from the scenario seed.
fn seed32(seed: u64, label: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    host_rng(seed, label).fill_bytes(&mut out);
    out
}

/// The client-to-server TLS material of a run, all derived from the seed: the server CA
/// (not the S/MIME one), each server's certificate for its domain issued by it, and the
/// certificate a TLS-terminating attacker presents (self-signed, for the victim's server).
struct TlsMaterial {
    ca: Identity,
    servers: BTreeMap<String, Identity>,
    /// (victim device, the attacker's certificate)
    attacker: Option<(FullJid, Identity)>,
}

fn tls_material(scenario: &Scenario, seed: u64, epoch: Duration) -> Result<Option<TlsMaterial>, RunError> {
    if scenario.transport != C2sTransport::Tls {
        return Ok(None);
    }
    let err = |e: jabberwock_xmpp::rustls::Error| RunError(format!("TLS certificates: {e}"));
    let ca =
        jabberwock_e2e::tls::ca("Jabberwock server CA", seed32(seed, "server certificate authority"), epoch)
            .map_err(err)?;
    let mut servers = BTreeMap::new();
    for domain in &scenario.servers {
        let key = seed32(seed, &format!("tls key {domain}"));
        servers
            .insert(domain.clone(), jabberwock_e2e::tls::issued_by(&ca, &[domain], key, epoch).map_err(err)?);
    }
    let attacker = match scenario.attacker.as_ref() {
        Some(plan) if plan.terminate_tls => match &plan.position {
            Position::ClientLink(victim) => {
                let domain = victim.domain().to_string();
                let key = seed32(seed, "attacker tls key");
                Some((victim.clone(), jabberwock_e2e::tls::self_signed(&[&domain], key, epoch).map_err(err)?))
            }
            _ => None,
        },
        _ => None,
    };
    Ok(Some(TlsMaterial { ca, servers, attacker }))
}

/// A server's TLS for one boot of its process: a fresh seeded provider per boot, so a
/// restarted server does not repeat its randomness.
fn server_tls(identity: &Identity, seed: u64, label: &str) -> Result<ServerTls, String> {
    let clock = SimTime::default();
    let provider = jabberwock_e2e::tls::provider(seed32(seed, label));
    let config = jabberwock_e2e::tls::server_config(provider, identity, &clock).map_err(|e| e.to_string())?;
    Ok(ServerTls { config, clock })
}

/// Runs a scenario with its own seed.
pub fn run(scenario: &Scenario) -> Result<Outcome, RunError> {
    run_with_seed(scenario, scenario.seed)
}

/// Runs a scenario with the given seed.
pub fn run_with_seed(scenario: &Scenario, seed: u64) -> Result<Outcome, RunError> {
    let epoch = EPOCH;
    let attacker = scenario.attacker.clone().map(|plan| {
        let mut attacker = Attacker::new(plan.clone(), host_rng(seed, "attacker network"));
        attacker.epoch = epoch;
        for rule in &plan.rules {
            if let Action::Impersonate(owner) = &rule.action
                && let Some(protocol) =
                    scenario.devices.iter().find(|d| d.jid.to_bare() == *owner).map(|d| d.protocol)
                && let Some(impostor) =
                    Impostor::new(protocol, owner, &mut host_rng(seed, &format!("impostor {owner}")), epoch)
            {
                attacker.impostors.insert(owner.clone(), impostor);
            }
        }
        attacker
    });
    let tls = tls_material(scenario, seed, epoch)?;
    let mut world = World::new(epoch, attacker);
    world.attacker_certificate =
        tls.as_ref().and_then(|t| t.attacker.as_ref()).map(|(_, id)| id.fingerprint());
    let world = Rc::new(world);
    let hooks: Rc<dyn Hooks> = world.clone();

    let repair = scenario.links.iter().filter_map(|l| l.loss.map(|(_, r)| r)).fold(0.0_f64, f64::max);
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + epoch)
        .tick_duration(scenario.tick)
        .simulation_duration(scenario.end + Duration::from_secs(60))
        .min_message_latency(scenario.latency.min)
        .max_message_latency(scenario.latency.max)
        .repair_rate(repair)
        .tcp_capacity(1 << 16);
    let mut sim = builder.build();

    for domain in &scenario.servers {
        let mut disk = Disk::default();
        for (bare, password) in &scenario.accounts {
            if bare.domain().as_str() == domain {
                disk.accounts
                    .insert(bare.clone(), Account { password: password.clone(), ..Account::default() });
            }
        }
        let disk = Rc::new(RefCell::new(disk));
        let peers: BTreeSet<String> = scenario
            .federation
            .iter()
            .filter_map(|(a, b)| {
                if a == domain {
                    Some(b.clone())
                } else if b == domain {
                    Some(a.clone())
                } else {
                    None
                }
            })
            .collect();
        let cfg = ServerConfig { domain: domain.clone(), peers, keepalive: scenario.keepalive, tls: None };
        let hooks = Rc::clone(&hooks);
        let identity = tls.as_ref().and_then(|t| t.servers.get(domain)).cloned();
        let terminator = tls
            .as_ref()
            .and_then(|t| t.attacker.clone())
            .filter(|(victim, _)| victim.domain().as_str() == domain);
        let world = Rc::clone(&world);
        let boots = Rc::new(core::cell::Cell::new(0u32));
        sim.host(domain.as_str(), move || {
            let boot = boots.get();
            boots.set(boot + 1);
            let mut cfg = cfg.clone();
            let domain = cfg.domain.clone();
            let own = identity.as_ref().map(|id| server_tls(id, seed, &format!("tls {domain} boot {boot}")));
            let terminator = terminator.as_ref().map(|(victim, id)| {
                server_tls(id, seed, &format!("attacker tls boot {boot}")).map(|tls| Terminator {
                    victim: victim.to_string(),
                    tls,
                    world: Rc::clone(&world),
                })
            });
            let server_hooks = Rc::clone(&hooks);
            let disk = Rc::clone(&disk);
            async move {
                let own = own.transpose()?;
                let terminator = terminator.transpose()?;
                cfg.tls = own.clone();
                serve(Server::new(cfg, disk, server_hooks, Net), own, terminator).await
            }
        });
    }

    // Each device's id as its engine gives it (`$id(..)` in the attacker's plan), recorded as the
    // engines are built: turmoil starts a host's software when it is added.
    let ids: Rc<RefCell<BTreeMap<FullJid, String>>> = Rc::default();
    let implementations: Rc<RefCell<BTreeMap<FullJid, String>>> = Rc::default();
    for dev in &scenario.devices {
        let cfg = DeviceConfig {
            jid: dev.jid.clone(),
            password: dev.password.clone(),
            server_host: dev.jid.domain().to_string(),
            contacts: dev.contacts.clone(),
            keepalive: scenario.keepalive,
            reconnect_after: Duration::from_secs(1),
            tls: None,
            joins: dev.joins.map(|at| epoch + at),
        };
        let schedule: Vec<_> = dev.schedule.iter().map(|(at, cmd)| (epoch + *at, cmd.clone())).collect();
        let protocol = dev.protocol;
        let implementation = dev.implementation.clone();
        let config = EngineConfig {
            trust: dev.trust,
            options: dev.options.clone(),
            max_message: dev.max_message,
            secrets: scenario
                .devices
                .iter()
                .map(|d| d.jid.to_bare())
                .filter(|b| *b != dev.jid.to_bare())
                .map(|b| (b.clone(), pair_secret(seed, &dev.jid.to_bare(), &b)))
                .collect(),
            // Without a shared CA each device is enrolled with an authority of its own, that no
            // other device knows.
            ca: Some(if scenario.shared_ca { ca_seed(seed) } else { own_ca_seed(seed, &dev.jid) }),
            quirks: dev.quirks.clone(),
        };
        let hooks = Rc::clone(&hooks);
        let host = dev.jid.to_string();
        let ca = tls.as_ref().map(|t| t.ca.clone());
        let verify = dev.tls_verify;
        let ids = Rc::clone(&ids);
        let implementations = Rc::clone(&implementations);
        sim.host(host.as_str(), move || {
            let mut rng = Box::new(host_rng(seed, &cfg.jid.to_string()));
            let (engine, said) =
                build_engine(protocol, implementation.as_ref(), &cfg.jid, &mut *rng, &config);
            if let Some(said) = said {
                implementations.borrow_mut().insert(cfg.jid.clone(), said);
            }
            if let Some(id) = engine.device_id() {
                ids.borrow_mut().insert(cfg.jid.clone(), id);
            }
            // Its own TLS random stream, apart from the engine's (and the same on every
            // connection's provider: one provider per device).
            let client_tls = ca.as_ref().map(|ca| {
                let clock = SimTime::default();
                let provider = jabberwock_e2e::tls::provider(seed32(seed, &format!("tls {}", cfg.jid)));
                jabberwock_e2e::tls::client_config(provider, Some(ca), None, verify, &clock)
                    .map(|config| ClientTls { config, clock, verify })
                    .map_err(|e| e.to_string())
            });
            let mut cfg = cfg.clone();
            let schedule = schedule.clone();
            let hooks = Rc::clone(&hooks);
            async move {
                cfg.tls = client_tls.transpose()?;
                let device = Device::new(cfg, engine, rng, hooks, Net);
                device.run(schedule).await;
                Ok(())
            }
        });
    }

    if let Some(a) = world.attacker.borrow_mut().as_mut() {
        a.fill_ids(&ids.borrow()).map_err(|e| RunError(format!("the attacker's plan: {e}")))?;
    }

    for link in &scenario.links {
        let [a, b] = &link.between;
        if let Some(l) = link.latency {
            sim.set_link_latency(a.as_str(), b.as_str(), l.min);
            sim.set_link_max_message_latency(a.as_str(), b.as_str(), l.max);
        }
        if let Some((p, _)) = link.loss {
            sim.set_link_fail_rate(a.as_str(), b.as_str(), p);
        }
    }

    let mut events = scenario.events.iter().peekable();
    loop {
        let elapsed = sim.elapsed();
        while let Some((_, ev)) = events.next_if(|(at, _)| *at <= elapsed) {
            let text = match ev {
                NetEvent::Partition(a, b) => {
                    sim.partition(a.as_str(), b.as_str());
                    format!("network: partition {a} ⇹ {b}")
                }
                NetEvent::Repair(a, b) => {
                    sim.repair(a.as_str(), b.as_str());
                    format!("network: repair {a} ⇆ {b}")
                }
                NetEvent::Crash(s) => {
                    sim.crash(s.as_str());
                    format!("network: server {s} crashes")
                }
                NetEvent::Restart(s) => {
                    sim.bounce(s.as_str());
                    format!("network: server {s} restarts")
                }
            };
            world.transcript.borrow_mut().push(elapsed, "network", text, None);
        }
        if elapsed >= scenario.end {
            break;
        }
        sim.step().map_err(|e| RunError(e.to_string()))?;
    }

    let devices = world.devices.borrow().clone();
    let identities = world.identities.borrow().clone();
    let attacker = world
        .attacker
        .borrow_mut()
        .take()
        .map(|mut a| a.report(&mut host_rng(seed, "attacker"), scenario.end));
    let transcript = world.transcript.borrow().clone();
    let mut outcome = Outcome {
        name: scenario.name.clone(),
        file: scenario.file.clone(),
        seed,
        simulated: sim.elapsed(),
        transcript,
        devices,
        identities,
        attacker,
        checks: vec![],
        implementations: implementations.borrow().clone(),
    };
    outcome.checks = check(scenario, &outcome);
    Ok(outcome)
}

/// The scenario's certificate authority (S/MIME), derived from the seed so runs repeat: every
/// honest device is enrolled with it; the attacker's own engines are not.
fn ca_seed(seed: u64) -> [u8; 32] {
    let mut rng = host_rng(seed, "certificate authority");
    let mut out = [0u8; 32];
    rng.fill_bytes(&mut out);
    out
}

/// The authority of one device alone (`pki: none`), derived from the seed and the device.
fn own_ca_seed(seed: u64, device: &FullJid) -> [u8; 32] {
    let mut rng = host_rng(seed, &format!("certificate authority of {device}"));
    let mut out = [0u8; 32];
    rng.fill_bytes(&mut out);
    out
}

/// The answer two users agreed in person for a verification ceremony (OTR's SMP): known to
/// both of them, derived from the seed so runs repeat; no engine of the attacker gets it.
fn pair_secret(seed: u64, a: &BareJid, b: &BareJid) -> String {
    let (x, y) = if a < b { (a, b) } else { (b, a) };
    let mut rng = host_rng(seed, &format!("secret {x} {y}"));
    let words = ["amber", "birch", "cobalt", "dune", "ember", "fjord", "garnet", "harbor"];
    (0..4).map(|_| words[(rng.next_u32() % 8) as usize]).collect::<Vec<_>>().join(" ")
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Whether `got` is `want` in some order: each whole text takes its copy first, then each
/// `starts-with`, the longest first, takes the first text left that starts so.
fn shown_in_any_order(want: &[Shown], got: &[String]) -> bool {
    if want.len() != got.len() {
        return false;
    }
    let mut left: Vec<&String> = got.iter().collect();
    let mut ordered: Vec<&Shown> = want.iter().collect();
    ordered.sort_by_key(|w| match w {
        Shown::Exact(_) => (0, 0),
        Shown::StartsWith(s) => (1, usize::MAX - s.len()),
    });
    ordered.into_iter().all(|w| match left.iter().position(|g| w.matches(g)) {
        Some(i) => {
            left.remove(i);
            true
        }
        None => false,
    })
}

fn check(scenario: &Scenario, outcome: &Outcome) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut push = |what: String, ok: bool, detail: String| {
        checks.push(Check { what, ok, detail: if ok { String::new() } else { detail } })
    };
    for (party, key, e) in &scenario.expect {
        match party {
            Party::Attacker => check_attacker(key, e, outcome.attacker.as_ref(), &mut push),
            Party::Device(jid) => {
                let empty = DeviceLog::default();
                let log = outcome.devices.get(jid).unwrap_or(&empty);
                let got: Vec<String> = log.received.iter().map(|r| r.body.clone()).collect();
                if let Some(want) = &e.received {
                    let (ok, how) = if e.unordered {
                        (shown_in_any_order(want, &got), "in any order")
                    } else {
                        let ok = want.len() == got.len() && want.iter().zip(&got).all(|(w, g)| w.matches(g));
                        (ok, "in this order")
                    };
                    let wanted: Vec<String> = want.iter().map(ToString::to_string).collect();
                    push(
                        format!("{key} received [{}] {how}", wanted.join(", ")),
                        ok,
                        format!("got {}", list(&got)),
                    );
                }
                if let Some(want) = &e.senders {
                    let from: Vec<String> = log.received.iter().map(|r| r.from.clone()).collect();
                    push(
                        format!("{key} received from {}", list(want)),
                        *want == from,
                        format!("got {}", list(&from)),
                    );
                }
                for body in &e.delayed {
                    let ok = log.received.iter().any(|r| &r.body == body && r.delayed);
                    push(format!("{key} received {body:?} with a delay stamp"), ok, "no delayed copy".into());
                }
                for body in &e.carbons {
                    let ok = log.received.iter().any(|r| &r.body == body && r.carbon.is_some());
                    push(format!("{key} received {body:?} as a carbon"), ok, "no carbon copy".into());
                }
                for part in &e.parts {
                    let ok = log.parts.iter().any(|p| p.label() == *part);
                    let shown: Vec<String> = log.parts.iter().map(|p| p.label()).collect();
                    push(format!("{key} was shown the part {part:?}"), ok, format!("got {}", list(&shown)));
                }
                for (what, want, got) in
                    [("alerts", &e.alerts, &log.alerts), ("errors", &e.errors, &log.errors)]
                {
                    if let Some(want) = want {
                        let want: Vec<String> = want.iter().map(|r| r.value.clone()).collect();
                        push(
                            format!("{key} {what} {}", list(&want)),
                            want == *got,
                            format!("got {}", list(got)),
                        );
                    }
                }
            }
        }
    }
    checks
}

fn check_attacker(
    key: &str,
    e: &PartyExpect,
    report: Option<&AttackerReport>,
    push: &mut impl FnMut(String, bool, String),
) {
    if let Some(want) = &e.read {
        let mut got: Vec<String> =
            report.map(|r| r.read.iter().map(|x| x.body.clone()).collect()).unwrap_or_default();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        got.sort();
        push(format!("{key} read {}", list(want)), want_sorted == got, format!("read {}", list(&got)));
    }
    for (power, want) in &e.acted {
        let got = report.and_then(|r| r.acted.get(power).copied()).unwrap_or(0);
        push(format!("{key} acted {power} ×{want}"), got == *want, format!("acted {power} ×{got}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(s: &str) -> Shown {
        Shown::Exact(s.to_owned())
    }

    fn start(s: &str) -> Shown {
        Shown::StartsWith(s.to_owned())
    }

    /// In any order, a whole text takes its own copy before a start can take it, and a longer
    /// start is placed before a shorter one that would also fit.
    #[test]
    fn shown_texts_match_in_any_order() {
        let got = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(shown_in_any_order(&[start("meet"), exact("meet me")], &got(&["meet me", "meet you"])));
        assert!(shown_in_any_order(&[start("m"), start("meet y")], &got(&["meet you", "mine"])));
        assert!(!shown_in_any_order(&[start("meet"), exact("hi")], &got(&["meet me", "meet you"])));
        assert!(!shown_in_any_order(&[start("meet")], &got(&["meet", "meet"])));
        assert!(shown_in_any_order(&[], &got(&[])));
        assert_eq!(start("a \"b\"").to_string(), "\"a \\\"b\\\"\"…");
        assert_eq!(exact("a").to_string(), "\"a\"");
    }
}
