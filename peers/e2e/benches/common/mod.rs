//! Pieces the engine benches share: the `--quick` switch, the Markdown table they print, the
//! two-party driver of the session engines, and the rand_core 0.6 view of the seeded stream.
//! Each bench is its own crate and includes this file with
//! `#[path = "common/mod.rs"] mod common;`; not every bench uses every piece.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use jabberwock_e2e::xml::ElementExt;
use jabberwock_e2e::{Action, BareJid, Cx, Element, Engine, Event, Output};
use rand_chacha::ChaCha20Rng;

/// The crate's own adapter (`src/rng06.rs`), compiled into the bench: rsa, pgp and cms take
/// the rand_core 0.6 generation, so the raw lines wrap the bench's ChaCha20 stream the same way
/// the engines wrap theirs.
#[path = "../../src/rng06.rs"]
pub(crate) mod rng06;

/// Simulated time of the benches (2026-01-01T00:00:00Z).
pub(crate) const NOW: Duration = jabberwock_e2e::time::EPOCH;
pub(crate) const ALICE: &str = "alice@a.example/phone";
pub(crate) const BOB: &str = "bob@b.example/laptop";
pub(crate) const BODY: &str = "a typical chat message of some sixty bytes, give or take";

/// `cargo bench ... -- --quick`: a smoke run.
pub(crate) fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

/// The table's header row and its separator.
pub(crate) fn header(columns: &[&str]) {
    println!("| {} |", columns.join(" | "));
    println!("|{}", "---|".repeat(columns.len()));
}

/// One table row: per-operation microseconds of both lines and their ratio (one decimal).
pub(crate) fn row(what: &str, n: u32, engine: Duration, raw: Duration) {
    row_with(what, n, engine, raw, 1);
}

/// [`row`] with `digits` decimals on the ratio.
pub(crate) fn row_with(what: &str, n: u32, engine: Duration, raw: Duration, digits: usize) {
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(n);
    println!(
        "| {what} | {n} | {:.1} µs | {:.1} µs | {:.digits$}× |",
        per(engine),
        per(raw),
        engine.as_secs_f64() / raw.as_secs_f64()
    );
}

/// Total time of `n` handshakes: on each fresh pair `make(i)` builds (not measured), Alice's
/// first message, the negotiation it starts and its delivery to Bob.
pub(crate) fn time_handshakes<E: Engine>(n: u32, mut make: impl FnMut(u64) -> Pair<E>) -> Duration {
    let mut engine = Duration::ZERO;
    for i in 0..n {
        let mut p = make(u64::from(i));
        let t = Instant::now();
        p.send(true, "first");
        engine += t.elapsed();
        assert_eq!(p.shown, 1);
    }
    engine
}

/// The stanzas an output sends, tagged with their sender (`true`: Alice).
pub(crate) fn sends(by_alice: bool, out: Output) -> Vec<(bool, Element)> {
    out.actions
        .into_iter()
        .filter_map(|a| if let Action::Send(s) = a { Some((by_alice, s)) } else { None })
        .collect()
}

/// Two engines ([`ALICE`] and [`BOB`]) talking directly: every stanza one sends is handed to
/// the other at once, answers included, until both are quiet.
pub(crate) struct Pair<E> {
    pub(crate) alice: E,
    pub(crate) bob: E,
    pub(crate) rng: ChaCha20Rng,
    /// Plaintexts shown so far, both sides.
    pub(crate) shown: usize,
    /// Serialised bytes of every stanza passed, when counted (`Some`).
    pub(crate) wire_bytes: Option<usize>,
}

impl<E: Engine> Pair<E> {
    pub(crate) fn new(alice: E, bob: E, rng: ChaCha20Rng) -> Pair<E> {
        Pair { alice, bob, rng, shown: 0, wire_bytes: None }
    }

    pub(crate) fn run(&mut self, from_alice: bool, out: Output) {
        let mut queue: VecDeque<(bool, Element)> = sends(from_alice, out).into();
        while let Some((by_alice, mut s)) = queue.pop_front() {
            s.set("from", if by_alice { ALICE } else { BOB });
            if let Some(n) = &mut self.wire_bytes {
                *n += String::from(&s).len();
            }
            let engine = if by_alice { &mut self.bob } else { &mut self.alice };
            let out = engine.receive(&mut Cx { rng: &mut self.rng, now: NOW }, &s).unwrap();
            self.shown += out.events.iter().filter(|e| matches!(e, Event::Plaintext { .. })).count();
            queue.extend(sends(!by_alice, out));
        }
    }

    /// After one warm-up message from Alice (not measured), the time `n` messages of [`BODY`]
    /// take, the `i`-th sent by Alice when `by_alice(i)`; every one must be shown.
    pub(crate) fn time_messages(&mut self, n: u32, by_alice: impl Fn(u32) -> bool) -> Duration {
        self.send(true, "warm-up");
        let before = self.shown;
        let t = Instant::now();
        for i in 0..n {
            self.send(by_alice(i), BODY);
        }
        let elapsed = t.elapsed();
        assert_eq!(self.shown, before + n as usize);
        elapsed
    }

    pub(crate) fn send(&mut self, from_alice: bool, body: &str) {
        let to: BareJid = if from_alice { "bob@b.example" } else { "alice@a.example" }.parse().unwrap();
        let engine = if from_alice { &mut self.alice } else { &mut self.bob };
        let out = engine.send(&mut Cx { rng: &mut self.rng, now: NOW }, &to, body).unwrap();
        self.run(from_alice, out);
    }
}
