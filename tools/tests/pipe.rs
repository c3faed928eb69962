//! The engine seam over a pipe (`docs/engine-protocol.md`): our own engines served by
//! `jabberwock adapter <protocol>` talk to each other and to in-process engines; a child that
//! crashes, hangs, answers garbage or does not implement a call gives the documented typed
//! error in bounded time; the same calls with the same seeds give the same bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, VecDeque};
use std::process::Command;
use std::time::Duration;

use jabberwock_e2e::time::EPOCH;
use jabberwock_e2e::xml::{ElementExt, NS_CLIENT, NS_PUBSUB, el};
use jabberwock_e2e::{
    Action, BareJid, Cx, E2eError, Element, Engine, EngineConfig, Event, FullJid, Jid, Protocol, Theft,
    new_engine,
};
use jabberwock_external::{DEFAULT_LIMIT, PipeEngine};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

const ALICE: &str = "alice@a.example/phone";
const BOB: &str = "bob@b.example/laptop";

fn protocol(name: &str) -> Protocol {
    name.parse().unwrap()
}

fn adapter(protocol: Protocol) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jabberwock"));
    cmd.args(["adapter", protocol.name()]);
    cmd
}

/// A device's engine: in this process, or through `jabberwock adapter`.
fn engine(protocol: Protocol, me: &str, piped: bool, rng: &mut ChaCha20Rng) -> Box<dyn Engine> {
    let me: FullJid = me.parse().unwrap();
    let config = EngineConfig::default();
    if piped {
        Box::new(PipeEngine::spawn(adapter(protocol), DEFAULT_LIMIT, protocol, &me, rng, &config).unwrap())
    } else {
        new_engine(protocol, &me, rng, &config)
    }
}

/// Two devices and a PEP store, every stanza delivered at once in order: the smallest world
/// in which two engines talk. Records every stanza sent (as XML text) and every event.
struct Net {
    devices: Vec<(FullJid, Box<dyn Engine>)>,
    pep: BTreeMap<(BareJid, String), BTreeMap<String, Element>>,
    queue: VecDeque<(usize, Element)>,
    rng: ChaCha20Rng,
    now: Duration,
    wire: Vec<String>,
    events: Vec<(usize, Event)>,
}

impl Net {
    fn new(devices: Vec<(&str, Box<dyn Engine>)>, seed: u64) -> Net {
        let devices = devices.into_iter().map(|(j, e)| (j.parse().unwrap(), e)).collect();
        let mut net = Net {
            devices,
            pep: BTreeMap::new(),
            queue: VecDeque::new(),
            rng: ChaCha20Rng::seed_from_u64(seed),
            now: EPOCH,
            wire: Vec::new(),
            events: Vec::new(),
        };
        for i in 0..net.devices.len() {
            let out = net.call(i, |e, cx| e.publish(cx)).unwrap();
            net.act(i, out);
        }
        net.pump();
        net
    }

    fn call<T>(&mut self, i: usize, f: impl FnOnce(&mut dyn Engine, &mut Cx<'_>) -> T) -> T {
        self.now += Duration::from_millis(10);
        let cx = &mut Cx { rng: &mut self.rng, now: self.now };
        f(self.devices[i].1.as_mut(), cx)
    }

    fn act(&mut self, i: usize, out: jabberwock_e2e::Output) {
        self.events.extend(out.events.into_iter().map(|e| (i, e)));
        for action in out.actions {
            match action {
                Action::Send(mut s) => {
                    s.set("from", self.devices[i].0.to_string());
                    self.wire.push(String::from(&s));
                    let to: Jid = s.attr("to").unwrap().parse().unwrap();
                    for (j, (jid, _)) in self.devices.iter().enumerate() {
                        let addressed = match to.try_as_full() {
                            Ok(f) => f == jid,
                            Err(bare) => *bare == jid.to_bare(),
                        };
                        if addressed && j != i {
                            self.queue.push_back((j, s.clone()));
                        }
                    }
                }
                Action::Publish { node, id, item, .. } => {
                    let owner = self.devices[i].0.to_bare();
                    self.pep.entry((owner, node)).or_default().insert(id, item);
                }
                Action::Fetch { owner, node } => {
                    let out = match self.pep.get(&(owner.clone(), node.clone())) {
                        Some(items) => {
                            let mut list = el("items", NS_PUBSUB).with("node", node.as_str());
                            for (id, item) in items {
                                list.append_child(
                                    el("item", NS_PUBSUB).with("id", id.as_str()).child(item.clone()),
                                );
                            }
                            let result = el("iq", NS_CLIENT)
                                .with("type", "result")
                                .with("from", owner.to_string())
                                .with("to", self.devices[i].0.to_string())
                                .child(el("pubsub", NS_PUBSUB).child(list));
                            self.call(i, |e, cx| e.receive(cx, &result)).unwrap()
                        }
                        None => {
                            self.call(i, |e, cx| e.fetch_failed(cx, &owner, &node, "item-not-found")).unwrap()
                        }
                    };
                    self.act(i, out);
                }
            }
        }
    }

    fn pump(&mut self) {
        let mut rounds = 0;
        while let Some((j, s)) = self.queue.pop_front() {
            rounds += 1;
            assert!(rounds < 200, "the devices never fall quiet");
            match self.call(j, |e, cx| e.receive(cx, &s)) {
                Ok(out) => self.act(j, out),
                Err(e) => panic!("{} refused {}: {e}", self.devices[j].0, String::from(&s)),
            }
            let out = self.call(j, |e, cx| e.drain(cx));
            self.act(j, out);
        }
    }

    fn send(&mut self, i: usize, to: usize, body: &str) {
        let to = self.devices[to].0.to_bare();
        let out = self.call(i, |e, cx| e.send(cx, &to, body)).unwrap();
        self.act(i, out);
        self.pump();
    }

    /// The bodies device `i` was shown, in order.
    fn shown(&self, i: usize) -> Vec<&str> {
        self.events
            .iter()
            .filter(|(d, _)| *d == i)
            .filter_map(
                |(_, e)| if let Event::Plaintext { body, .. } = e { Some(body.as_str()) } else { None },
            )
            .collect()
    }
}

/// Alice and Bob, each in process or piped, exchange three messages each way.
fn converse(name: &str, alice_piped: bool, bob_piped: bool, seed: u64) -> Net {
    let p = protocol(name);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let alice = engine(p, ALICE, alice_piped, &mut rng);
    let bob = engine(p, BOB, bob_piped, &mut rng);
    assert_eq!(format!("{alice:?}").starts_with("PipeEngine"), alice_piped);
    assert_eq!(format!("{bob:?}").starts_with("PipeEngine"), bob_piped);
    let mut net = Net::new(vec![(ALICE, alice), (BOB, bob)], seed);
    for turn in 0..3 {
        net.send(0, 1, &format!("a{turn}"));
        net.send(1, 0, &format!("b{turn}"));
    }
    net
}

#[test]
fn our_engines_talk_through_the_pipe_to_each_other_and_to_engines_in_process() {
    for name in ["omemo", "otr"] {
        for (alice_piped, bob_piped) in [(true, true), (true, false), (false, true)] {
            let net = converse(name, alice_piped, bob_piped, 7);
            let how = format!("{name}: alice piped {alice_piped}, bob piped {bob_piped}");
            assert_eq!(net.shown(1), ["a0", "a1", "a2"], "{how}");
            assert_eq!(net.shown(0), ["b0", "b1", "b2"], "{how}");
            // Encrypted: no body crossed in clear.
            assert!(net.wire.iter().all(|s| !s.contains(">a1<") && !s.contains(">b1<")), "{how}");
        }
    }
}

#[test]
fn the_same_calls_with_the_same_seeds_give_the_same_bytes() {
    for name in ["omemo", "otr"] {
        let first = converse(name, true, true, 11).wire;
        assert!(!first.is_empty());
        assert_eq!(first, converse(name, true, true, 11).wire, "{name}");
        assert_ne!(first, converse(name, true, true, 12).wire, "{name}: another seed, other bytes");
    }
}

#[test]
fn a_stolen_piped_engine_reads_what_its_device_reads() {
    let mut net = converse("omemo", true, true, 5);
    let stolen = net.devices[1].1.steal(Theft::FullState);
    let bob = std::mem::replace(&mut net.devices[1].1, stolen);
    net.send(0, 1, "for the thief");
    assert_eq!(net.shown(1).last(), Some(&"for the thief"), "the stolen copy read it");
    // The device's own engine still answers after its copy was used (and will be dropped).
    drop(std::mem::replace(&mut net.devices[1].1, bob));
    assert!(!net.devices[1].1.out_of_band().peer_says.is_empty());
}

// ---- children that misbehave ---------------------------------------------------------------

/// A child that answers the hello (listing `calls`) and `new`, then runs `then` (shell) on
/// the next request.
fn fake(calls: &str, then: &str) -> Command {
    let hello = format!(
        r#"{{"id":1,"ok":{{"version":1,"implementation":"fake","implementation_version":"0","protocol":"otr","calls":[{calls}]}}}}"#
    );
    let script = format!(
        "read l; printf '%s\\n' '{hello}'; read l; printf '%s\\n' '{{\"id\":2,\"ok\":{{\"engine\":\"e0\"}}}}'; read l; {then}"
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    cmd
}

const CALLS: &str = r#""hello","new","publish","receive""#;

fn spawn(cmd: Command, limit: Duration) -> Result<PipeEngine, E2eError> {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    PipeEngine::spawn(
        cmd,
        limit,
        protocol("otr"),
        &ALICE.parse().unwrap(),
        &mut rng,
        &EngineConfig::default(),
    )
}

/// What `publish` answers on a child that does `then` at it, and what the next call answers.
fn publish_on(then: &str, limit: Duration) -> (E2eError, E2eError) {
    let mut engine = spawn(fake(CALLS, then), limit).expect("hello and new are answered");
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let first = engine.publish(&mut Cx { rng: &mut rng, now: EPOCH }).expect_err("the child misbehaves");
    let stanza = el("message", NS_CLIENT).with("from", BOB);
    let next = engine.receive(&mut Cx { rng: &mut rng, now: EPOCH }, &stanza).expect_err("it stays failed");
    (first, next)
}

fn adapter_reason(e: &E2eError) -> &'static str {
    match e {
        E2eError::Adapter { reason, .. } => reason,
        other => panic!("not an adapter failure: {other:?}"),
    }
}

#[test]
fn a_child_that_crashes_is_adapter_crashed() {
    let (first, next) = publish_on("echo dying >&2; exit 3", Duration::from_secs(10));
    assert_eq!(adapter_reason(&first), "adapter-crashed");
    assert!(first.to_string().contains("dying"), "its stderr is quoted: {first}");
    assert_eq!(next, first, "every later call answers the same");
    // One that dies at once fails the spawn.
    let e = spawn(Command::new("false"), Duration::from_secs(10)).unwrap_err();
    assert_eq!(adapter_reason(&e), "adapter-crashed");
    let e = spawn(Command::new("/nonexistent/adapter"), Duration::from_secs(10)).unwrap_err();
    assert_eq!(adapter_reason(&e), "adapter-crashed");
}

/// The child sleeps 30 s; the limit is 300 ms: the call returns with `adapter-timeout` long
/// before the child would have answered.
#[test]
#[allow(clippy::disallowed_methods, reason = "the test measures that the limit holds in wall-clock time")]
fn a_child_that_hangs_is_adapter_timeout_within_the_limit() {
    let started = std::time::Instant::now();
    let (first, next) = publish_on("exec sleep 30", Duration::from_millis(300));
    assert_eq!(adapter_reason(&first), "adapter-timeout");
    assert_eq!(next, first);
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[test]
fn a_child_that_answers_garbage_is_adapter_garbage() {
    let limit = Duration::from_secs(10);
    for (then, says) in [
        ("echo 'not json at all'", "not an answer"),
        (r#"echo '{"id":3,"ok":{"events":[{"type":"telepathy"}]}}'"#, "wrong shape"),
        (
            r#"echo '{"id":3,"ok":{"events":[{"type":"alert","reason":"no-such-reason","detail":""}]}}'"#,
            "no-such-reason",
        ),
        (r#"echo '{"id":3,"error":{"code":"adapter-timeout"}}'"#, "adapter-timeout"),
        (r#"echo '{"id":3,"ok":{"actions":[{"type":"send","stanza":"<message"}]}}'"#, "not XML"),
        (r#"echo '{"id":9,"ok":{}}'"#, "answered id"),
        ("head -c 9000000 /dev/zero | tr '\\0' a; echo", "longer than"),
        // XML nested past the limit (parsed, it would overflow the stack when freed).
        (
            r#"printf '{"id":3,"ok":{"actions":[{"type":"send","stanza":"'; for i in $(seq 100); do printf '<a>'; done; printf '"}]}}\n'"#,
            "nested deeper",
        ),
    ] {
        let (first, next) = publish_on(then, limit);
        assert_eq!(adapter_reason(&first), "adapter-garbage", "{then}");
        assert!(first.to_string().contains(says), "{then}: {first}");
        assert_eq!(next, first, "{then}");
    }
    // A declared reason passes through as the engine's own error.
    let (first, _) = publish_on(r#"echo '{"id":3,"error":{"code":"bad-mac","detail":"x"}}'; exit 0"#, limit);
    assert_eq!(first, E2eError::Rejected { reason: "bad-mac", detail: "x".into() });
}

#[test]
fn a_call_the_child_does_not_implement_is_unimplemented() {
    // Answered `unimplemented`: the child lives on and answers the next call.
    let mut engine = spawn(
        fake(
            CALLS,
            r#"echo '{"id":3,"unimplemented":"no PEP here"}'; read l; echo '{"id":4,"ok":{}}'; read l"#,
        ),
        Duration::from_secs(10),
    )
    .unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let e = engine.publish(&mut Cx { rng: &mut rng, now: EPOCH }).unwrap_err();
    assert_eq!(e, E2eError::Unimplemented { call: "publish", detail: "no PEP here".into() });
    assert_eq!(e.code(), "unimplemented");
    let stanza = el("message", NS_CLIENT).with("from", BOB);
    assert_eq!(engine.receive(&mut Cx { rng: &mut rng, now: EPOCH }, &stanza).unwrap(), Default::default());
    // Not listed in the hello: answered without asking the child.
    let bob: BareJid = "bob@b.example".parse().unwrap();
    let e = engine.send(&mut Cx { rng: &mut rng, now: EPOCH }, &bob, "hi").unwrap_err();
    assert!(matches!(e, E2eError::Unimplemented { call: "send", .. }), "{e:?}");
    // A stolen copy, from a child that cannot steal, says so at every call.
    let mut stolen = engine.steal(Theft::FullState);
    let e = stolen.publish(&mut Cx { rng: &mut rng, now: EPOCH }).unwrap_err();
    assert!(matches!(e, E2eError::Unimplemented { call: "steal", .. }), "{e:?}");
}

// ---- whole scenarios -----------------------------------------------------------------------

/// `jabberwock run <scenario>`, every device's engine behind `jabberwock adapter` when
/// `piped` ([`jabberwock_sim::ENGINE_ADAPTER`]): the transcript, and whether it passed.
fn run_scenario(path: &str, piped: bool) -> (String, bool) {
    let bin = env!("CARGO_BIN_EXE_jabberwock");
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg(format!("{}/../scenarios/{path}", env!("CARGO_MANIFEST_DIR")));
    if piped {
        cmd.env(jabberwock_sim::ENGINE_ADAPTER, format!("{bin} adapter"));
    } else {
        cmd.env_remove(jabberwock_sim::ENGINE_ADAPTER);
    }
    let out = cmd.output().unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.success())
}

/// Scenarios with a theft, a verification and SMP pass with every engine behind the pipe as
/// they pass in process; the bytes differ (the pipe draws each call's seed from the device's
/// stream), which shows the pipe was used; and a piped run is deterministic too.
#[test]
fn scenarios_pass_with_every_engine_behind_the_adapter() {
    for path in ["omemo/full-state-theft.yaml", "omemo/key-substitution-verified.yaml", "otr/smp.yaml"] {
        let (ours, passed) = run_scenario(path, false);
        assert!(passed, "{path} in process:\n{ours}");
        let (piped, passed) = run_scenario(path, true);
        assert!(passed, "{path} piped:\n{piped}");
        assert!(piped.trim_end().ends_with("PASS"), "{path}: {piped}");
        assert_ne!(ours, piped, "{path}: the piped run drew its own seeds");
        assert_eq!(run_scenario(path, true).0, piped, "{path}: piped runs repeat");
    }
}
