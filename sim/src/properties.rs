//! The property suite: one scenario template per property (`scenarios/properties/*.yaml.tmpl`),
//! run once per protocol, and a judge that turns the run's outcome into a verdict. Nothing is
//! typed in: a verdict says what the attacker read, what the users were shown and what alerted,
//! in that run (after tlspuffin's `check_violation`, which names the violation it found).

use jabberwock_e2e::{BareJid, Element, FullJid, Protocol};
use jabberwock_xmpp::Command;

use crate::implementations::Implementation;
use crate::runner::{Outcome, run};
use crate::scenario::{Scenario, parse};

/// A property verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the property held in the run (never, when it was not tested).
    pub holds: bool,
    /// Whether the attack the property needs was carried out at all: a run in which the
    /// attacker found nothing to act on proves nothing either way.
    pub tested: bool,
    /// One line: what happened.
    pub reason: String,
}

/// Who runs one side of a property's run when it is not ours: an independent implementation
/// from the registry (`peers/reference/registry.yaml`), behind its adapter, for every device
/// of Alice's or of Bob's account; the other side stays ours (a mixed pair).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Theirs {
    /// The implementation, as its registry line describes it.
    pub implementation: Implementation,
    /// The side it plays.
    pub side: Side,
}

/// A side of the property templates' conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    /// `alice@a.example`'s devices.
    Alice,
    /// `bob@b.example`'s devices.
    Bob,
}

impl Side {
    /// Both, in the order reports list them.
    pub const BOTH: [Side; 2] = [Side::Alice, Side::Bob];

    /// The templates' account of this side (its local part).
    pub fn account(self) -> &'static str {
        match self {
            Side::Alice => "alice",
            Side::Bob => "bob",
        }
    }

    /// As reports name it.
    pub fn title(self) -> &'static str {
        match self {
            Side::Alice => "Alice",
            Side::Bob => "Bob",
        }
    }
}

impl Theirs {
    /// `python-omemo as Bob`.
    pub fn label(&self) -> String {
        format!("{} as {}", self.implementation.name, self.side.title())
    }

    /// `bob=python-omemo`, as `jabberwock run --implementation` takes it.
    pub fn argument(&self) -> String {
        format!("{}={}", self.side.account(), self.implementation.name)
    }
}

/// The first line of the run's `report` ([`Outcome::render`]: its transcript, then what the
/// attacker's tests found) saying that an adapter could not do what the run asked of it — a call it does not implement
/// ([`jabberwock_e2e::E2eError::Unimplemented`]), or it crashed, hung or answered garbage
/// ([`jabberwock_e2e::E2eError::Adapter`]): a run with one measured nothing certain, so its
/// verdict is ⚪ with this line, never a guess. A stolen state the attacker could not read
/// with (`attacker could not use a stolen state`) is apart: see [`unread`].
fn unmeasured(report: &str) -> Option<String> {
    const MARKS: [&str; 2] = ["unimplemented by the adapter: ", "adapter failed ("];
    report
        .lines()
        .filter(|l| !l.starts_with(UNUSABLE))
        .find(|l| MARKS.iter().any(|m| l.contains(m)))
        .map(|l| l.trim().to_owned())
}

/// How the outcome reports a stolen state whose implementation could not read.
const UNUSABLE: &str = "attacker could not use a stolen state: ";

/// The run's `report` says the attacker's stolen state could not be read with (its
/// implementation could not do it):
/// a verdict that holds because the attacker read nothing proves nothing then, while one that
/// failed did so on evidence found all the same.
fn unread(report: &str) -> Option<String> {
    report.lines().find(|l| l.starts_with(UNUSABLE)).map(|l| l.trim().to_owned())
}

/// A measured property.
#[derive(Debug)]
pub struct Property {
    /// Its id (the template's file stem).
    pub id: &'static str,
    /// The question it answers.
    pub title: &'static str,
    template: &'static str,
    judge: fn(&Facts<'_>) -> Verdict,
}

/// What a judge looks at: the scenario as run and its outcome.
struct Facts<'a> {
    scenario: &'a Scenario,
    outcome: &'a Outcome,
}

impl Facts<'_> {
    /// Every body sent, with the sender's short name and when.
    fn sent(&self) -> Vec<(String, std::time::Duration, String)> {
        let mut sent = Vec::new();
        for d in &self.scenario.devices {
            for (at, cmd) in &d.schedule {
                if let Command::Send { body, .. } = cmd {
                    sent.push((d.short.clone(), *at, body.clone()));
                }
            }
        }
        sent.sort_by_key(|(_, at, _)| *at);
        sent
    }

    fn read(&self) -> Vec<String> {
        self.outcome
            .attacker
            .as_ref()
            .map(|a| a.read.iter().map(|r| r.body.clone()).collect())
            .unwrap_or_default()
    }

    fn device(&self, short: &str) -> Option<&crate::world::DeviceLog> {
        let jid = &self.scenario.devices.iter().find(|d| d.short == short)?.jid;
        self.outcome.devices.get(jid)
    }

    fn shown(&self, short: &str) -> Vec<String> {
        self.device(short).map(|l| l.received.iter().map(|r| r.body.clone()).collect()).unwrap_or_default()
    }

    fn received(&self, short: &str) -> Vec<crate::world::Received> {
        self.device(short).map(|d| d.received.clone()).unwrap_or_default()
    }

    fn alerts(&self, short: &str) -> Vec<String> {
        self.device(short).map(|l| l.alerts.clone()).unwrap_or_default()
    }

    fn errors(&self, short: &str) -> Vec<String> {
        self.device(short).map(|l| l.errors.clone()).unwrap_or_default()
    }

    fn jid(&self, short: &str) -> Option<&FullJid> {
        self.scenario.devices.iter().find(|d| d.short == short).map(|d| &d.jid)
    }

    /// What a device handed its server (its client-to-server hop), in order, as it crossed
    /// the wire: (ms since the start, the stanza, its size in bytes).
    fn wire_from(&self, short: &str) -> Vec<(u64, Element, usize)> {
        let Some(jid) = self.jid(short) else { return vec![] };
        let (me, server) = (jid.to_string(), jid.domain().to_string());
        self.outcome
            .transcript
            .entries
            .iter()
            .filter(|e| e.kind == "hop" && e.from.as_deref() == Some(&me) && e.to.as_deref() == Some(&server))
            .filter_map(|e| {
                let xml = e.xml.as_ref()?;
                Some((e.t_ms, logged_stanza(xml)?, xml.len()))
            })
            .collect()
    }

    /// When a device first showed a plaintext (ms since the start).
    fn first_plaintext(&self, short: &str) -> Option<u64> {
        let me = self.jid(short)?.to_string();
        self.outcome
            .transcript
            .entries
            .iter()
            .find(|e| e.what == Some("plaintext") && e.actor.as_deref() == Some(&me))
            .map(|e| e.t_ms)
    }
}

/// A stanza as the transcript logged it: in `jabber:client` without declaring it
/// (`transcript::full_xml`), so parsed inside an element that does.
fn logged_stanza(xml: &str) -> Option<Element> {
    let wrapped = format!("<w xmlns='{}'>{xml}</w>", jabberwock_e2e::xml::NS_CLIENT);
    wrapped.parse::<Element>().ok()?.children().next().cloned()
}

/// Everything a server can read in a stanza, as bytes: the XML as it went, and every text and
/// attribute value decoded where it decodes — as base64 (whole, a block of base64 lines as in
/// MIME and armour, or a run of base64 between other characters) or as hex —,
/// and what decodes to text decoded again, three layers deep.
fn readable(xml: &str) -> Vec<Vec<u8>> {
    let mut views = vec![xml.as_bytes().to_vec()];
    if let Some(stanza) = logged_stanza(xml) {
        let mut texts = Vec::new();
        collect_texts(&stanza, &mut texts);
        for t in texts {
            decoded(&t, 3, &mut views);
        }
    }
    views
}

fn collect_texts(el: &Element, out: &mut Vec<String>) {
    out.extend(el.attrs().into_iter().map(|(_, v)| v.to_owned()));
    let text = el.text();
    if !text.trim().is_empty() {
        out.push(text);
    }
    for c in el.children() {
        collect_texts(c, out);
    }
}

/// `text` decoded every way [`readable`] tries, into `out`.
fn decoded(text: &str, depth: u8, out: &mut Vec<Vec<u8>>) {
    use base64::Engine as _;
    if depth == 0 {
        return;
    }
    let mut candidates: Vec<String> = vec![text.split_whitespace().collect()];
    // Base64 inside other text (a protocol's prefix and suffix around it): every run of 16 or
    // more base64 characters, its padding kept.
    let b64_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    candidates.extend(
        text.split(|c: char| !b64_char(c))
            .filter(|run| run.len() >= 16 && run.len() < text.len())
            .map(str::to_owned),
    );
    // Blocks of base64 lines (MIME bodies, armour): each run of lines that decode.
    let mut block = String::new();
    for line in text.lines().map(str::trim).chain([""]) {
        let b64_line =
            !line.is_empty() && line.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
        if b64_line && !line.starts_with('=') {
            block.push_str(line);
        } else if !block.is_empty() {
            candidates.push(core::mem::take(&mut block));
        }
    }
    for c in candidates {
        // Hex digits are base64 letters too: both readings are kept.
        let readings = [
            base64::engine::general_purpose::STANDARD.decode(c.as_bytes()).ok(),
            jabberwock_e2e::kit::codec::unhex(&c),
        ];
        for bytes in readings.into_iter().flatten().filter(|b| b.len() >= 8) {
            if let Ok(inner) = core::str::from_utf8(&bytes) {
                decoded(inner, depth - 1, out);
            }
            out.push(bytes);
        }
    }
}

/// Whether a stanza goes to `peer`'s devices (a message to the account or a device, an
/// `<iq/>` to a device), not to a server (a PEP fetch is an `<iq/>` to the bare account).
fn to_peer(stanza: &Element, peer: &BareJid) -> bool {
    let to = stanza.attr("to");
    match stanza.name() {
        "message" => {
            to.and_then(|t| t.parse::<jabberwock_e2e::Jid>().ok()).is_some_and(|j| j.to_bare() == *peer)
        }
        "iq" => to.and_then(|t| t.parse::<FullJid>().ok()).is_some_and(|j| j.to_bare() == *peer),
        _ => false,
    }
}

/// A request about `peer` to its server (a key fetch from its PEP): an `<iq/>` to the bare
/// account.
fn fetch_from(stanza: &Element, peer: &BareJid) -> bool {
    stanza.name() == "iq"
        && matches!(stanza.attr("type"), Some("get" | "set"))
        && stanza.attr("to").and_then(|t| t.parse::<BareJid>().ok()).is_some_and(|j| j == *peer)
}

/// The exchange between Alice's phone and Bob's laptop until Bob first read something:
/// stanzas each way, round trips (each turn of Bob's that follows one of Alice's counts one),
/// and Alice's requests to Bob's account (key fetches).
#[derive(Debug, Default)]
struct Exchange {
    to_bob: usize,
    to_alice: usize,
    round_trips: usize,
    fetches: usize,
}

fn exchange_before_first_read(f: &Facts<'_>) -> Option<Exchange> {
    let first = f.first_plaintext("bob/laptop")?;
    let (alice, bob) = (f.jid("alice/phone")?.to_bare(), f.jid("bob/laptop")?.to_bare());
    let mut turns: Vec<(u64, bool)> = Vec::new();
    let mut ex = Exchange::default();
    for (t, s, _) in f.wire_from("alice/phone").into_iter().filter(|(t, ..)| *t <= first) {
        if to_peer(&s, &bob) {
            ex.to_bob += 1;
            turns.push((t, true));
        } else if fetch_from(&s, &bob) {
            ex.fetches += 1;
        }
    }
    for (t, s, _) in f.wire_from("bob/laptop").into_iter().filter(|(t, ..)| *t <= first) {
        if to_peer(&s, &alice) {
            ex.to_alice += 1;
            turns.push((t, false));
        }
    }
    turns.sort();
    // A round trip: Alice's turn, then Bob's; count Bob's turns that follow one of Alice's.
    let mut last = None;
    for (_, from_alice) in turns {
        if last == Some(true) && !from_alice {
            ex.round_trips += 1;
        }
        last = Some(from_alice);
    }
    Some(ex)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn verdict(holds: bool, reason: impl Into<String>) -> Verdict {
    Verdict { holds, tested: true, reason: reason.into() }
}

/// The attack could not be carried out in this run (`reason` says why).
fn untested(reason: &str) -> Verdict {
    Verdict { holds: false, tested: false, reason: format!("not tested: {reason}") }
}

impl Verdict {
    /// ✅ held, ❌ did not, ⚪ not tested.
    pub fn mark(&self) -> &'static str {
        match (self.tested, self.holds) {
            (false, _) => "⚪",
            (true, true) => "✅",
            (true, false) => "❌",
        }
    }
}

/// How many stanzas the attacker saw that carry something to read (messages, tunnel records).
fn carriers(f: &Facts<'_>) -> usize {
    f.outcome.attacker.as_ref().map_or(0, |a| a.carriers)
}

/// Whose state the attacker stole.
fn stolen(f: &Facts<'_>) -> usize {
    f.outcome.attacker.as_ref().map_or(0, |a| a.stolen.len())
}

/// Why Bob's laptop rejected something: its errors (alerts are no evidence: many are routine,
/// a session coming up).
fn complaints(f: &Facts<'_>) -> Vec<String> {
    f.errors("bob/laptop")
}

fn judge_unread(f: &Facts<'_>, what: &str) -> Verdict {
    if carriers(f) == 0 {
        return untested("the attacker saw no stanza carrying the conversation");
    }
    let sent = f.sent().len();
    let read = f.read();
    if read.is_empty() {
        verdict(true, format!("read 0 of {sent} messages {what}"))
    } else {
        verdict(false, format!("read {} of {sent} messages {what}", read.len()))
    }
}

fn confidentiality(f: &Facts<'_>) -> Verdict {
    judge_unread(f, "from the server")
}

fn integrity(f: &Facts<'_>) -> Verdict {
    if acted(f, "flip") == 0 {
        return untested("the attacker found no ciphertext to flip");
    }
    let sent: Vec<String> = f.sent().into_iter().map(|(_, _, b)| b).collect();
    let forged: Vec<String> = f.shown("bob/laptop").into_iter().filter(|b| !sent.contains(b)).collect();
    let why = complaints(f);
    match forged.first() {
        Some(text) => verdict(false, format!("Bob was shown altered text {text:?}")),
        // Detected means Bob's client said so: silence could as well be a message that never
        // reached him.
        None if why.is_empty() => {
            untested("nothing altered was shown, but Bob's client reported nothing either")
        }
        None => verdict(true, format!("the altered message was rejected ({})", why.join(", "))),
    }
}

fn replay(f: &Facts<'_>) -> Verdict {
    if acted(f, "replay") == 0 {
        return untested("the attacker found no message to replay");
    }
    let shown = f.shown("bob/laptop");
    let twice =
        f.sent().into_iter().map(|(_, _, b)| b).find(|b| shown.iter().filter(|s| *s == b).count() > 1);
    let why = complaints(f);
    match twice {
        Some(b) => verdict(false, format!("Bob was shown {b:?} twice")),
        None if why.is_empty() => {
            untested("nothing was shown twice, but Bob's client reported nothing either")
        }
        None => verdict(true, format!("the copy was rejected ({})", why.join(", "))),
    }
}

fn forward_secrecy(f: &Facts<'_>) -> Verdict {
    if stolen(f) == 0 {
        return untested("the attacker stole no keys");
    }
    judge_unread(f, "with both long-term keys stolen afterwards")
}

fn key_substitution(f: &Facts<'_>) -> Verdict {
    if acted(f, "impersonate") == 0 {
        return untested("the attacker found no keys to substitute and no session to relay");
    }
    judge_unread(f, "through the substituted keys")
}

fn key_substitution_verified(f: &Facts<'_>) -> Verdict {
    if acted(f, "impersonate") == 0 {
        return untested("the attacker found no keys to substitute and no session to relay");
    }
    let verify_at = f
        .scenario
        .devices
        .iter()
        .flat_map(|d| d.schedule.iter())
        .find(|(_, c)| matches!(c, Command::Verify { .. }))
        .map(|(at, _)| *at)
        .unwrap_or_default();
    let after: Vec<String> =
        f.sent().into_iter().filter(|(_, at, _)| *at > verify_at).map(|(_, _, b)| b).collect();
    let read = f.read();
    let read_after = read.iter().filter(|b| after.contains(b)).count();
    // Caught: the ceremony itself came out as a mismatch (fingerprints that differ, an SMP
    // that failed), whatever the protocol's ceremony is.
    let caught = f.device("alice/phone").is_some_and(|l| {
        l.verifications.iter().any(|(_, r)| *r == jabberwock_e2e::VerificationResult::Mismatch)
    });
    let nothing_to_compare = f.device("alice/phone").is_some_and(|l| {
        l.verifications.iter().any(|(_, r)| *r == jabberwock_e2e::VerificationResult::NothingToCompare)
    });
    match (caught, read_after) {
        (true, 0) => verdict(
            true,
            format!("caught by the ceremony; read {} message(s) before it, none after", read.len()),
        ),
        // The attacker read nothing at all, before or after: the substitution never paid off, so
        // the property held — but not by the ceremony, which caught nothing.
        (false, 0) if read.is_empty() => verdict(
            true,
            if nothing_to_compare {
                "nothing read through the substituted keys, before or after; the ceremony found nothing to compare"
            } else {
                "nothing read through the substituted keys, before or after; the ceremony found nothing wrong"
            },
        ),
        (true, n) => verdict(false, format!("caught, yet {n} message(s) after the ceremony were read")),
        (false, n) => verdict(false, format!("not caught; {n} message(s) after the ceremony were read")),
    }
}

fn reordering(f: &Facts<'_>) -> Verdict {
    let sent = f.sent().len();
    let shown = f.shown("bob/laptop").len();
    verdict(shown == sent, format!("{shown} of {sent} shuffled messages shown"))
}

fn offline_first_contact(f: &Facts<'_>) -> Verdict {
    let sent = f.sent().len();
    let shown = f.shown("bob/laptop").len();
    verdict(shown == sent, format!("{shown} of {sent} messages shown after coming back"))
}

fn offline_sender_gone(f: &Facts<'_>) -> Verdict {
    let sent = f.sent().len();
    let shown = f.shown("bob/laptop").len();
    verdict(shown == sent, format!("{shown} of {sent} messages shown; Alice was gone when Bob came back"))
}

fn offline_forward_secrecy(f: &Facts<'_>) -> Verdict {
    if stolen(f) == 0 {
        return untested("the attacker stole no keys");
    }
    // Only what waited offline and was read counts: a protocol that delivered nothing has no
    // offline message to keep secret.
    let shown = f.shown("bob/laptop");
    if shown.is_empty() {
        return untested("no message that waited offline was read (the protocol delivered none)");
    }
    let read = f.read();
    let n = shown.iter().filter(|b| read.contains(b)).count();
    verdict(
        n == 0,
        format!(
            "read {n} of the {} messages Bob read after they waited offline, with both long-term keys stolen afterwards",
            shown.len()
        ),
    )
}

fn object_encryption(f: &Facts<'_>) -> Verdict {
    let bob = f.received("bob/laptop");
    let Some(first) = bob.first() else {
        let n = f.jid("bob/laptop").map_or(0, |b| {
            let b = b.to_bare();
            f.wire_from("alice/phone").iter().filter(|(_, s, _)| to_peer(s, &b)).count()
        });
        return verdict(
            false,
            format!(
                "Bob read nothing: {} from Alice, none readable on its own",
                plural(n, "stanza", "stanzas")
            ),
        );
    };
    if first.trust == "unencrypted" {
        return verdict(false, "the message went in clear (shown flagged unencrypted)");
    }
    let Some(ex) = exchange_before_first_read(f) else {
        return untested("no plaintext was logged for Bob");
    };
    let fetches = plural(ex.fetches, "fetch", "fetches");
    if ex.to_bob == 1 && ex.to_alice == 0 {
        verdict(
            true,
            format!(
                "one stanza, read on its own as Alice's (trust={}); no stanza back from Bob; {fetches} from his server",
                first.trust
            ),
        )
    } else {
        verdict(
            false,
            format!(
                "read only after {} from Alice and {} back from Bob",
                plural(ex.to_bob, "stanza", "stanzas"),
                plural(ex.to_alice, "stanza", "stanzas")
            ),
        )
    }
}

/// The most round trips with the peer before the first message is read that §4.4's "the
/// number of stanzas required for negotiation MUST be minimized" is taken to allow: one (a
/// three-message key exchange, XEP-0116's own minimum, fits).
const EFFICIENT_ROUND_TRIPS: usize = 1;

/// The most bytes a message may cost on the wire over the same message sent in clear.
const EFFICIENT_OVERHEAD: usize = 1024;

fn efficiency(f: &Facts<'_>) -> Verdict {
    let Some(ex) = exchange_before_first_read(f) else {
        return verdict(false, "Bob read nothing");
    };
    let Some(bob) = f.jid("bob/laptop").map(|j| j.to_bare()) else { return untested("no Bob") };
    let sent = f.sent();
    // Every stanza Alice's phone sent Bob, over the messages typed, against the same messages
    // as a bare `<message to type='chat'><body/></message>` in clear.
    let wire: usize =
        f.wire_from("alice/phone").iter().filter(|(_, s, _)| to_peer(s, &bob)).map(|(.., n)| n).sum();
    let clear: usize = sent
        .iter()
        .map(|(_, _, body)| format!("<message to='{bob}' type='chat'><body>{body}</body></message>").len())
        .sum();
    let n = sent.len().max(1);
    let (per_message, overhead) = (wire / n, wire.saturating_sub(clear) / n);
    let holds = ex.round_trips <= EFFICIENT_ROUND_TRIPS && overhead <= EFFICIENT_OVERHEAD;
    verdict(
        holds,
        format!(
            "first read after {} to Bob and {} back ({}), {} from his server; {per_message} bytes a message on the wire, {overhead} over clear",
            plural(ex.to_bob, "stanza", "stanzas"),
            plural(ex.to_alice, "stanza", "stanzas"),
            plural(ex.round_trips, "round trip", "round trips"),
            plural(ex.fetches, "fetch", "fetches"),
        ),
    )
}

fn metadata(f: &Facts<'_>) -> Verdict {
    let Some(bob) = f.jid("bob/laptop").map(|j| j.to_bare()) else { return untested("no Bob") };
    let wire: Vec<(u64, usize)> = f
        .wire_from("alice/phone")
        .into_iter()
        .filter(|(_, s, _)| to_peer(s, &bob))
        .map(|(t, _, n)| (t, n))
        .collect();
    let (mut short, mut long) = (Vec::new(), Vec::new());
    // Every message but the first (which may set a session up), by the bytes Alice's phone
    // sent Bob in the second after it was typed.
    for (_, at, body) in f.sent().into_iter().skip(1) {
        let from = at.as_millis() as u64;
        let bytes: usize = wire.iter().filter(|(t, _)| (from..from + 1000).contains(t)).map(|(_, n)| n).sum();
        if bytes == 0 {
            return untested("a message crossed no wire in the second after it was typed");
        }
        if body.chars().count() <= 2 { short.push(bytes) } else { long.push(bytes) }
    }
    let range = |v: &[usize]| {
        let (lo, hi) = (v.iter().min().copied().unwrap_or(0), v.iter().max().copied().unwrap_or(0));
        if lo == hi { format!("{lo}") } else { format!("{lo}–{hi}") }
    };
    let (lo_long, hi_short) =
        (long.iter().min().copied().unwrap_or(0), short.iter().max().copied().unwrap_or(0));
    let leak = lo_long > hi_short;
    verdict(
        !leak,
        format!(
            "2-character messages took {} bytes on the wire, 40-character ones {}: {}",
            range(&short),
            range(&long),
            if leak { "the server tells them apart by size" } else { "their sizes overlap" }
        ),
    )
}

/// The long-term identity marks of the named devices (≥ 8 bytes: a short one would match
/// anywhere), as (whose, what, bytes).
fn identity_marks_of<'a>(
    f: &'a Facts<'_>,
    devices: &[(&'a str, &str)],
) -> Vec<(&'a str, &'static str, Vec<u8>)> {
    devices
        .iter()
        .flat_map(|(who, short)| {
            let marks = f.jid(short).and_then(|j| f.outcome.identities.get(j)).cloned().unwrap_or_default();
            marks.into_iter().map(move |(n, b)| (*who, n, b))
        })
        .filter(|(.., b)| b.len() >= 8)
        .collect()
}

/// What every server on the path carried: each hop's stanza as [`readable`] views it.
fn carried(f: &Facts<'_>) -> Vec<Vec<Vec<u8>>> {
    f.outcome
        .transcript
        .entries
        .iter()
        .filter(|e| e.kind == "hop")
        .filter_map(|e| e.xml.as_deref().map(readable))
        .collect()
}

/// Which of `marks` crossed the servers readable (in the XML, or decoded from it), each with
/// how many stanzas carried it.
fn marks_on_the_wire(f: &Facts<'_>, marks: &[(&str, &'static str, Vec<u8>)]) -> Vec<String> {
    let stanzas = carried(f);
    let mut seen: Vec<String> = Vec::new();
    for (who, name, bytes) in marks {
        let n = stanzas
            .iter()
            .filter(|views| views.iter().any(|v| v.windows(bytes.len()).any(|w| w == bytes.as_slice())))
            .count();
        if n > 0 {
            seen.push(format!("{who}'s {name} ({})", plural(n, "stanza", "stanzas")));
        }
    }
    seen
}

fn identity_protection(f: &Facts<'_>) -> Verdict {
    let marks = identity_marks_of(f, &[("Alice", "alice/phone"), ("Bob", "bob/laptop")]);
    if marks.is_empty() {
        return untested("no device has a long-term key to look for");
    }
    let seen = marks_on_the_wire(f, &marks);
    if seen.is_empty() {
        verdict(
            true,
            "no long-term public key of Alice's or Bob's, nor an identifier of one, crossed the servers readable",
        )
    } else {
        verdict(false, format!("the servers read {}", seen.join(", ")))
    }
}

fn identity_protection_active(f: &Facts<'_>) -> Verdict {
    if acted(f, "forge") == 0 {
        return untested("the attacker started no session");
    }
    let marks = identity_marks_of(f, &[("Bob", "bob/laptop")]);
    if marks.is_empty() {
        return untested("Bob's device has no long-term key to look for");
    }
    // When its own end of the session first held Bob's identity (its engines' `peer_marks`).
    let bob = f.jid("bob/laptop").map(|j| j.to_bare().to_string()).unwrap_or_default();
    let learned: Vec<(u64, &str)> = f
        .outcome
        .attacker
        .iter()
        .flat_map(|a| a.learned.iter())
        .filter(|(_, peer, _, bytes)| *peer == bob && marks.iter().any(|(_, _, m)| m == bytes))
        .map(|(at, _, name, _)| (u64::try_from(at.as_millis()).unwrap_or(u64::MAX), *name))
        .collect();
    let on_the_wire = marks_on_the_wire(f, &marks);
    if !on_the_wire.is_empty() {
        return verdict(false, format!("no session needed: the servers read {}", on_the_wire.join(", ")));
    }
    let Some(&(learned_at, _)) = learned.iter().min_by_key(|(at, _)| *at) else {
        // Nothing learned proves something only if a session ran: Bob answered the initiator.
        let initiator = f.jid("alice/phone").map(|j| j.to_bare());
        let answered = f.wire_from("bob/laptop").iter().any(|(_, stanza, _)| {
            stanza.attr("to").and_then(|t| t.parse::<jabberwock_e2e::Jid>().ok()).map(|j| j.to_bare())
                == initiator
        });
        if !answered {
            return untested("Bob sent the initiator nothing: no session ran");
        }
        return verdict(
            true,
            "Bob answered, yet neither the session the attacker ran with him nor the servers gave away his long-term key",
        );
    };
    let names: Vec<&str> = learned.iter().map(|(_, n)| *n).collect();
    // Who had to show a key first: when Bob's own engine first held a key of the initiator's.
    let initiator = f.jid("alice/phone").map(|j| j.to_bare().to_string()).unwrap_or_default();
    let shown_first = f
        .device("bob/laptop")
        .and_then(|l| l.learned.iter().filter(|(_, p, ..)| *p == initiator).map(|(at, ..)| *at).min());
    match shown_first {
        Some(at) if at < learned_at => verdict(
            true,
            format!(
                "the session showed it Bob's {} only after it had proved a key of its own (Bob held it at {}, it his at {}): \
                 no one learns Bob's key without showing theirs first, and Bob may refuse one he does not know",
                names.join(" and "),
                ms(at),
                ms(learned_at)
            ),
        ),
        _ => verdict(
            false,
            format!(
                "the session it started showed it Bob's {} at {} before it had shown him any key of its own",
                names.join(" and "),
                ms(learned_at)
            ),
        ),
    }
}

/// Milliseconds since the start, as the transcript writes times.
fn ms(at: u64) -> String {
    format!("{}.{:03}s", at / 1000, at % 1000)
}

/// The parts of what Alice sends in the generality run: the part's name, what a server would
/// find on the wire if it could read it (the part's own text, or for a part with none its
/// namespace), and what Bob's client shows when it arrives (`name: text`; `None`: any text).
fn generality_parts(f: &Facts<'_>) -> Vec<(&'static str, String, &'static str, Option<String>)> {
    let mut parts = Vec::new();
    for d in f.scenario.devices.iter().filter(|d| d.short == "alice/phone") {
        for (_, cmd) in &d.schedule {
            match cmd {
                Command::Send { body, parts: p, .. } if !p.is_empty() => {
                    parts.push(("body", body.clone(), "body", Some(body.clone())));
                    let texts = [
                        ("subject", &p.subject, "subject"),
                        ("thread", &p.thread, "thread"),
                        ("XHTML", &p.xhtml, "xhtml"),
                        ("out-of-band URL", &p.oob, "oob"),
                    ];
                    for (name, text, shown) in texts {
                        if let Some(t) = text {
                            parts.push((name, t.clone(), shown, Some(t.clone())));
                        }
                    }
                    if let Some(state) = &p.chat_state {
                        let ns = jabberwock_e2e::content::NS_CHATSTATES.to_owned();
                        parts.push(("chat state", ns, "chat-state", Some(state.clone())));
                    }
                    if p.correction {
                        let ns = jabberwock_e2e::content::NS_CORRECT.to_owned();
                        parts.push(("correction", ns, "correction", None));
                    }
                }
                Command::Presence { status, .. } => {
                    parts.push(("presence status", status.clone(), "status", Some(status.clone())))
                }
                Command::Iq { payload, .. } => {
                    let text = jabberwock_e2e::content::all_text(payload);
                    parts.push(("iq payload", text.clone(), "payload", Some(text)))
                }
                _ => {}
            }
        }
    }
    parts
}

fn generality(f: &Facts<'_>) -> Verdict {
    let parts = generality_parts(f);
    if parts.len() < 3 {
        return untested("Alice sent no stanza with parts beyond a body");
    }
    let stanzas = carried(f);
    // An empty text is in everything: it leaks nothing.
    let carried = |needle: &[u8]| {
        !needle.is_empty()
            && stanzas.iter().any(|views| views.iter().any(|v| v.windows(needle.len()).any(|w| w == needle)))
    };
    let shown = f.device("bob/laptop").map(|l| l.parts.clone()).unwrap_or_default();
    let bodies = f.shown("bob/laptop");
    let (mut read, mut lost) = (Vec::new(), Vec::new());
    for (name, needle, shown_as, text) in &parts {
        if carried(needle.as_bytes()) {
            read.push(*name);
        }
        let arrived = if *name == "body" {
            bodies.iter().any(|b| Some(b) == text.as_ref())
        } else {
            shown.iter().any(|p| p.name == *shown_as && text.as_ref().is_none_or(|t| p.text == *t))
        };
        if !arrived {
            lost.push(*name);
        }
    }
    let mut said = Vec::new();
    if !read.is_empty() {
        said.push(format!("read: {}", read.join(", ")));
    }
    if !lost.is_empty() {
        said.push(format!("Bob did not get: {}", lost.join(", ")));
    }
    if said.is_empty() {
        verdict(
            true,
            format!("none of the {} parts crossed the servers readable, and Bob got each", parts.len()),
        )
    } else {
        verdict(false, said.join("; "))
    }
}

fn pki_independence(f: &Facts<'_>) -> Verdict {
    let result = f.device("bob/laptop").and_then(|l| l.verifications.first().map(|(_, r)| *r));
    let last = f.sent().last().map(|(_, _, b)| b.clone()).unwrap_or_default();
    let shown = f.received("bob/laptop").into_iter().find(|r| r.body == last);
    // Why it did not arrive: Bob's errors, else what Alice's client reported.
    let errors = [complaints(f), f.errors("alice/phone"), f.alerts("alice/phone")]
        .into_iter()
        .find(|e| !e.is_empty())
        .unwrap_or_default();
    let why = if errors.is_empty() { String::new() } else { format!(" ({})", errors.join(", ")) };
    match (result, shown) {
        (_, Some(r)) if r.trust == "unencrypted" => {
            verdict(false, "nothing authenticated Alice: her message came unencrypted")
        }
        // Verified: what the ceremony established covers the message itself.
        (Some(jabberwock_e2e::VerificationResult::Match), Some(r)) if r.trust == "verified" => verdict(
            true,
            "with no authority, the ceremony matched and Bob showed Alice's next message as verified",
        ),
        (Some(result), Some(r)) => verdict(
            false,
            format!("the ceremony came out {result:?}; Alice's next message showed trust={}", r.trust),
        ),
        (Some(result), None) => verdict(
            false,
            format!("the ceremony came out {result:?}; Bob never showed Alice's next message{why}"),
        ),
        (None, _) => verdict(false, format!("no ceremony ran: Bob had nothing of Alice's to compare{why}")),
    }
}

/// The most alphanumerics XEP-0210 §4.3 lets a ceremony ask the users to compare.
const USABLE_ALPHANUMERICS: usize = 6;

fn usability(f: &Facts<'_>) -> Verdict {
    let Some(log) = f.device("alice/phone") else { return untested("no Alice") };
    let Some((_, ceremony)) = log.ceremonies.first() else {
        return untested("the protocol has no ceremony: nothing to verify");
    };
    let result = log.verifications.first().map(|(_, r)| *r);
    let short = ceremony.alphanumerics() <= USABLE_ALPHANUMERICS;
    let outcome = match result {
        Some(r) => format!("{r:?}"),
        None => "no outcome".to_owned(),
    };
    verdict(
        short && result == Some(jabberwock_e2e::VerificationResult::Match),
        format!("{ceremony}; the ceremony came out {outcome}"),
    )
}

fn multi_device(f: &Facts<'_>) -> Verdict {
    let missing: Vec<&str> =
        ["bob/laptop", "bob/phone", "alice/tablet"].into_iter().filter(|d| f.shown(d).is_empty()).collect();
    if missing.is_empty() {
        verdict(true, "both of Bob's devices and Alice's tablet read it")
    } else {
        verdict(false, format!("not read on {}", missing.join(", ")))
    }
}

/// How many times the attacker used `power` in the run.
fn acted(f: &Facts<'_>, power: &str) -> u32 {
    f.outcome.attacker.as_ref().and_then(|a| a.acted.get(power).copied()).unwrap_or(0)
}

fn downgrade(f: &Facts<'_>) -> Verdict {
    if acted(f, "downgrade") + acted(f, "replace") + acted(f, "rewrite") == 0 {
        return untested("the attacker found nothing to strip");
    }
    let sent: Vec<String> = f.sent().into_iter().map(|(_, _, b)| b).collect();
    let forged = f.shown("bob/laptop").into_iter().any(|b| !sent.contains(&b));
    let flagged = f.alerts("bob/laptop").iter().any(|a| a == "unencrypted");
    match (forged, flagged) {
        (true, true) => verdict(true, "the plain body was shown flagged as unencrypted"),
        (true, false) => verdict(false, "the forged plain body was shown without a warning"),
        (false, _) if complaints(f).is_empty() => {
            untested("nothing forged was shown, but Bob's client reported nothing either")
        }
        (false, _) => verdict(true, format!("nothing forged was shown ({})", complaints(f).join(", "))),
    }
}

fn deniability(f: &Facts<'_>) -> Verdict {
    let forgeries = f.outcome.attacker.as_ref().map(|a| a.forgeries.clone()).unwrap_or_default();
    let public = f
        .outcome
        .attacker
        .as_ref()
        .and_then(|a| a.public_forgery)
        .map(|(n, total)| {
            format!("; {n} of {total} recorded messages verify under MAC keys published in the recording")
        })
        .unwrap_or_default();
    match forgeries.iter().find(|g| g.claimed.starts_with("alice@")) {
        Some(g) if g.accepted => {
            verdict(true, format!("Bob alone made a message his client accepts as Alice's{public}"))
        }
        Some(g) => verdict(false, format!("Bob could not forge a message from Alice ({})", g.detail)),
        None => untested("no <message/> from Alice crossed the wire for Bob's state to forge"),
    }
}

fn authentication(f: &Facts<'_>) -> Verdict {
    if acted(f, "forge") == 0 {
        return untested("the attacker made no forgery");
    }
    judge_forgery(f, "")
}

fn continuity(f: &Facts<'_>) -> Verdict {
    if acted(f, "forge") == 0 {
        return untested("the attacker served no keys of its own to write with");
    }
    // What Bob wrote once the server wrote to him as Alice with its keys, and whether it read it.
    let forged_at = f.scenario.attacker.as_ref().and_then(|a| a.inject.first()).map(|(at, _, _)| *at);
    let today: Vec<String> = f
        .sent()
        .into_iter()
        .filter(|(who, at, _)| who == "bob/laptop" && forged_at.is_some_and(|t| *at > t))
        .map(|(_, _, b)| b)
        .collect();
    let read: Vec<String> = f.read().into_iter().filter(|b| today.contains(b)).collect();
    let forged = judge_forgery(f, "");
    if !forged.tested {
        return forged;
    }
    // Warned (the message shown flagged untrusted), Bob may still answer: he learned it, and
    // what he does with it is his. Warned of nothing, his answer must not reach the new key.
    let sent: Vec<String> = f.sent().into_iter().map(|(_, _, b)| b).collect();
    let warned = f.received("bob/laptop").iter().any(|r| !sent.contains(&r.body) && r.trust == "untrusted");
    match read.first() {
        Some(b) if warned => {
            verdict(forged.holds, format!("{}; he answered all the same, and it read {b:?}", forged.reason))
        }
        Some(b) => verdict(false, format!("{}; it read Bob's answer {b:?}", forged.reason)),
        None => verdict(
            forged.holds,
            format!("{}; it read none of Bob's {} message(s) after", forged.reason, today.len()),
        ),
    }
}

fn robustness(f: &Facts<'_>) -> Verdict {
    if stolen(f) == 0 || acted(f, "forge") == 0 {
        return untested("the attacker stole no identity key or made no forgery with it");
    }
    judge_forgery(f, "with Alice's identity key alone, ")
}

/// Whether Bob showed a text nobody sent (a forgery) as Alice's; `how` begins the reason.
fn judge_forgery(f: &Facts<'_>, how: &str) -> Verdict {
    let sent: Vec<String> = f.sent().into_iter().map(|(_, _, b)| b).collect();
    match f.received("bob/laptop").into_iter().find(|r| !sent.contains(&r.body)) {
        Some(r) if r.trust == "unencrypted" => {
            verdict(false, format!("{how}Bob was shown the forged {:?} (flagged unencrypted)", r.body))
        }
        // Shown, but as not from the Alice Bob knows: his client warned him (as the downgrade
        // judge counts a plain body flagged unencrypted).
        Some(r) if r.trust == "untrusted" => verdict(
            true,
            format!(
                "{how}the forged {:?} was shown flagged untrusted, Bob warned ({})",
                r.body,
                f.alerts("bob/laptop").last().cloned().unwrap_or_default()
            ),
        ),
        Some(r) => verdict(
            false,
            format!("{how}Bob was shown the forged {:?} as Alice's (trust={})", r.body, r.trust),
        ),
        None => {
            // Errors only, as for integrity, replay and downgrade: a refused stanza is an
            // error (held ones too, `Event::Rejected`); an alert is no evidence of a refusal.
            let why = complaints(f);
            if why.is_empty() {
                return untested("nothing it made was shown, but Bob's client reported nothing either");
            }
            verdict(true, format!("{how}the forgery was rejected ({})", why.join(", ")))
        }
    }
}

/// XEP-0210 §3.10: what the attacker took out of the offers it carried, and whether anyone
/// noticed. Noticed means a client said so — an error (a refusal) or an alert at either end —
/// and the conversation did not go ahead on what was left.
fn upgradability(f: &Facts<'_>) -> Verdict {
    let withdrawn = f.outcome.attacker.as_ref().map(|a| a.withdrawn.clone()).unwrap_or_default();
    let from_alice: Vec<String> =
        f.sent().into_iter().filter(|(d, ..)| d == "alice/phone").map(|(_, _, b)| b).collect();
    let shown: Vec<crate::world::Received> =
        f.received("bob/laptop").into_iter().filter(|r| from_alice.contains(&r.body)).collect();
    let Some(first) = withdrawn.first() else {
        // No offer anywhere: a control that sends in clear has nothing to upgrade.
        if !shown.is_empty() && shown.iter().all(|r| r.trust == "unencrypted") {
            return untested("the conversation went in clear: no end-to-end protocol, nothing to upgrade");
        }
        return verdict(
            false,
            "no offer of versions or algorithms crossed the servers: Alice never tells Bob which versions she speaks, so a new version has no way in",
        );
    };
    let mut lefts: Vec<&str> = Vec::new();
    for w in &withdrawn {
        if !lefts.contains(&w.left.as_str()) {
            lefts.push(&w.left);
        }
    }
    let left = lefts.join("; ");
    // Told: a refusal at either end (an error; alerts are no evidence, many are routine: a
    // session coming up).
    let mut told = Vec::new();
    for (who, short) in [("Alice", "alice/phone"), ("Bob", "bob/laptop")] {
        let mut said: Vec<String> = Vec::new();
        for code in f.errors(short) {
            if !said.contains(&code) {
                said.push(code);
            }
        }
        if !said.is_empty() {
            told.push(format!("{who}'s client: {}", said.join(", ")));
        }
    }
    let what = format!("{} withdrawn", first.removed);
    let n = from_alice.len();
    // Any of Alice's messages shown went over what the reduced offer left: the session went
    // ahead on less (each text counted once: a copy shown twice is no second message).
    let mut distinct: Vec<&str> = shown.iter().map(|r| r.body.as_str()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if !distinct.is_empty() {
        let words =
            if told.is_empty() { "without a word".to_owned() } else { format!("({})", told.join("; ")) };
        return verdict(
            false,
            format!(
                "{what}: the session settled for {left} {words}, Bob shown {} of {n} messages",
                distinct.len()
            ),
        );
    }
    if told.is_empty() {
        return verdict(
            false,
            format!("{what}, leaving {left}: Bob shown none of {n} messages and nobody was told"),
        );
    }
    verdict(
        true,
        format!(
            "{what}, leaving {left}: the session did not go ahead on it ({}); Bob shown none of {n} messages",
            told.join("; ")
        ),
    )
}

fn post_compromise(f: &Facts<'_>) -> Verdict {
    if stolen(f) == 0 || carriers(f) == 0 {
        return untested("the attacker stole no state or saw no conversation");
    }
    let last = f.sent().last().map(|(_, _, b)| b.clone()).unwrap_or_default();
    let read = f.read();
    // Recovery is only shown if the theft worked at first: a state that reads nothing, not
    // even the next message, proves nothing about healing.
    if read.is_empty() {
        return untested("the stolen state read nothing, not even right after the theft");
    }
    if read.contains(&last) {
        verdict(false, format!("still reads after two round trips ({} read)", read.len()))
    } else {
        verdict(true, format!("locked out after two round trips ({} read in between)", read.len()))
    }
}

/// Every property, in report order.
pub const PROPERTIES: &[Property] = &[
    Property {
        id: "confidentiality",
        title: "confidentiality against the server",
        template: include_str!("../../scenarios/properties/confidentiality.yaml.tmpl"),
        judge: confidentiality,
    },
    Property {
        id: "metadata",
        title: "message length hidden from the server",
        template: include_str!("../../scenarios/properties/metadata.yaml.tmpl"),
        judge: metadata,
    },
    Property {
        id: "integrity",
        title: "tampered ciphertext detected",
        template: include_str!("../../scenarios/properties/integrity.yaml.tmpl"),
        judge: integrity,
    },
    Property {
        id: "replay",
        title: "replay rejected",
        template: include_str!("../../scenarios/properties/replay.yaml.tmpl"),
        judge: replay,
    },
    Property {
        id: "forward-secrecy",
        title: "forward secrecy",
        template: include_str!("../../scenarios/properties/forward-secrecy.yaml.tmpl"),
        judge: forward_secrecy,
    },
    Property {
        id: "post-compromise",
        title: "recovery after full-state theft",
        template: include_str!("../../scenarios/properties/post-compromise.yaml.tmpl"),
        judge: post_compromise,
    },
    Property {
        id: "key-substitution",
        title: "key substitution without verification",
        template: include_str!("../../scenarios/properties/key-substitution.yaml.tmpl"),
        judge: key_substitution,
    },
    Property {
        id: "key-substitution-verified",
        title: "key substitution with verification",
        template: include_str!("../../scenarios/properties/key-substitution-verified.yaml.tmpl"),
        judge: key_substitution_verified,
    },
    Property {
        id: "deniability",
        title: "deniability (the recipient can forge)",
        template: include_str!("../../scenarios/properties/deniability.yaml.tmpl"),
        judge: deniability,
    },
    Property {
        id: "offline-first-contact",
        title: "first contact while the recipient is offline (the sender stays online)",
        template: include_str!("../../scenarios/properties/offline-first-contact.yaml.tmpl"),
        judge: offline_first_contact,
    },
    Property {
        id: "offline-sender-gone",
        title: "offline messages read after the sender left",
        template: include_str!("../../scenarios/properties/offline-sender-gone.yaml.tmpl"),
        judge: offline_sender_gone,
    },
    Property {
        id: "offline-forward-secrecy",
        title: "forward secrecy of messages that waited offline",
        template: include_str!("../../scenarios/properties/offline-forward-secrecy.yaml.tmpl"),
        judge: offline_forward_secrecy,
    },
    Property {
        id: "object-encryption",
        title: "one stanza, encrypted and authenticated on its own",
        template: include_str!("../../scenarios/properties/object-encryption.yaml.tmpl"),
        judge: object_encryption,
    },
    Property {
        id: "efficiency",
        title: "stanzas, round trips and bytes",
        template: include_str!("../../scenarios/properties/efficiency.yaml.tmpl"),
        judge: efficiency,
    },
    Property {
        id: "usability",
        title: "what the humans compare to verify",
        template: include_str!("../../scenarios/properties/usability.yaml.tmpl"),
        judge: usability,
    },
    Property {
        id: "reordering",
        title: "20 messages in shuffled order",
        template: include_str!("../../scenarios/properties/reordering.yaml.tmpl"),
        judge: reordering,
    },
    Property {
        id: "multi-device",
        title: "multi-device delivery (own devices too)",
        template: include_str!("../../scenarios/properties/multi-device.yaml.tmpl"),
        judge: multi_device,
    },
    Property {
        id: "downgrade",
        title: "downgrade by stripping the encryption",
        template: include_str!("../../scenarios/properties/downgrade.yaml.tmpl"),
        judge: downgrade,
    },
    Property {
        id: "continuity",
        title: "the same Alice as before, with no ceremony",
        template: include_str!("../../scenarios/properties/continuity.yaml.tmpl"),
        judge: continuity,
    },
    Property {
        id: "authentication",
        title: "sender authentication against a forger with public keys",
        template: include_str!("../../scenarios/properties/authentication.yaml.tmpl"),
        judge: authentication,
    },
    Property {
        id: "pki-independence",
        title: "authentication with no authority but the users",
        template: include_str!("../../scenarios/properties/pki-independence.yaml.tmpl"),
        judge: pki_independence,
    },
    Property {
        id: "identity-protection",
        title: "long-term public keys hidden from a passive server",
        template: include_str!("../../scenarios/properties/identity-protection.yaml.tmpl"),
        judge: identity_protection,
    },
    Property {
        id: "identity-protection-active",
        title: "Bob's long-term public key hidden from a server that starts a session",
        template: include_str!("../../scenarios/properties/identity-protection-active.yaml.tmpl"),
        judge: identity_protection_active,
    },
    Property {
        id: "generality",
        title: "every part of every stanza type protected",
        template: include_str!("../../scenarios/properties/generality.yaml.tmpl"),
        judge: generality,
    },
    Property {
        id: "robustness",
        title: "impersonation with a stolen identity key alone",
        template: include_str!("../../scenarios/properties/robustness.yaml.tmpl"),
        judge: robustness,
    },
    Property {
        id: "upgradability",
        title: "a rolled-back offer noticed",
        template: include_str!("../../scenarios/properties/upgradability.yaml.tmpl"),
        judge: upgradability,
    },
];

impl Property {
    /// The scenario for `protocol`.
    pub fn scenario(&self, protocol: Protocol) -> Result<Scenario, String> {
        let file = format!("scenarios/properties/{}.yaml.tmpl ({protocol})", self.id);
        parse(&file, &self.yaml(protocol)).map_err(|e| e.to_string())
    }

    /// The template with `protocol` filled in, as run.
    pub fn yaml(&self, protocol: Protocol) -> String {
        self.template.replace("{protocol}", protocol.name())
    }

    /// Runs the property for `protocol` and judges the outcome.
    pub fn measure(&self, protocol: Protocol) -> Result<(Verdict, Outcome), String> {
        self.measure_with(protocol, None)
    }

    /// Runs the property for `protocol` with one side on an independent implementation
    /// (`None`: both ours) and judges the outcome. When an adapter could not do what the run
    /// needed (unimplemented, crashed, hung, garbage), the verdict is ⚪ quoting that line.
    pub fn measure_with(
        &self,
        protocol: Protocol,
        theirs: Option<&Theirs>,
    ) -> Result<(Verdict, Outcome), String> {
        let mut scenario = self.scenario(protocol)?;
        if let Some(theirs) = theirs {
            scenario.use_implementation(theirs.side.account(), Some(&theirs.implementation))?;
        }
        let outcome = run(&scenario).map_err(|e| e.to_string())?;
        let judged = (self.judge)(&Facts { scenario: &scenario, outcome: &outcome });
        let report = outcome.render();
        let verdict = match (unmeasured(&report), unread(&report)) {
            (Some(line), _) => untested(&format!("an adapter could not do what the run asked: {line}")),
            (None, Some(line)) if judged.tested && judged.holds => {
                untested(&format!("held only as far as the attacker could try: {line}"))
            }
            _ => judged,
        };
        Ok((verdict, outcome))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    fn found(xml: &str, needle: &[u8]) -> bool {
        readable(xml).iter().any(|v| v.windows(needle.len()).any(|w| w == needle))
    }

    /// The identity-protection search finds a key however a protocol wraps it: base64 text,
    /// a hex attribute, a base64 block inside MIME text inside base64, base64 between a
    /// prefix and a suffix; and not where it is not.
    #[test]
    fn a_key_is_found_through_every_encoding_a_server_can_undo() {
        let key: Vec<u8> = (1..=32).collect();
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        assert!(found(&format!("<iq><ik>{}</ik></iq>", b64(&key)), &key));
        let hex: String = key.iter().map(|b| format!("{b:02X}")).collect();
        assert!(found(&format!("<iq><meta fpr='{hex}'/></iq>"), &key));
        let body = b64(&key);
        let mime = format!("Content-Type: application/pkcs7\r\n\r\n{}\r\n{}\r\n", &body[..20], &body[20..]);
        let mut lines = String::new();
        for chunk in b64(&[b"junk ".as_slice(), &key].concat()).as_bytes().chunks(16) {
            lines.push_str(core::str::from_utf8(chunk).unwrap());
            lines.push('\n');
        }
        assert!(found(&format!("<message><e2e>{}</e2e></message>", b64(mime.as_bytes())), &key));
        assert!(found(
            &format!("<message><body>-----BEGIN X-----\n\n{lines}=abcd\n-----END X-----</body></message>"),
            &key
        ));
        assert!(found(&format!("<message><body>?XYZ:{}.</body></message>", b64(&key)), &key));
        assert!(!found(&format!("<iq><ik>{}</ik></iq>", b64(&key[1..])), &key));
        assert!(!found("<iq><ik>not base64 at all!</ik></iq>", &key));
    }
}
