//! Hostile input, by the hundred from a seed: malformed bytes on a client stream, and
//! well-formed but hostile stanzas injected into the server (as a client would send them) and
//! into a client (as a malicious server would). Nothing may panic, the world keeps working,
//! and every rejection is in the transcript.

use core::time::Duration;

use jabberwock_e2e::Element;
use jabberwock_sim::{parse, run};
use jabberwock_xmpp::{Command, Hop};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

const BASE: &str = r#"
name: hostile
seed: 5
servers: [a.example, b.example]
accounts:
  alice@a.example: {devices: {phone: plain}}
  bob@a.example: {devices: {laptop: plain, phone: plain}}
  mallory@a.example: {devices: {pc: plain}}
  carol@b.example: {devices: {tab: plain}}
attacker:
  position: everywhere
timeline:
  - {at: 1s, device: alice/phone, send: {to: bob@a.example, body: before}}
"#;

fn pick<'a>(rng: &mut ChaCha20Rng, items: &[&'a str]) -> &'a str {
    items[rng.next_u32() as usize % items.len()]
}

const JIDS: &[&str] = &[
    "bob@a.example",
    "bob@a.example/laptop",
    "bob@a.example/nope",
    "a.example",
    "b.example",
    "carol@b.example",
    "carol@b.example/tab",
    "x@unknown.example",
    "alice@a.example",
    "mallory@a.example/pc",
    "@",
    "a@b@c",
    "bob@a.example/",
    "",
    "ghost@a.example",
];
const TYPES: &[&str] = &[
    "chat",
    "normal",
    "error",
    "headline",
    "groupchat",
    "get",
    "set",
    "result",
    "subscribe",
    "subscribed",
    "unsubscribe",
    "unsubscribed",
    "probe",
    "unavailable",
    "bogus",
];
const PAYLOADS: &[&str] = &[
    "<body>hi</body>",
    "<body><b>nested</b></body>",
    "<body/>",
    "<delay xmlns='urn:xmpp:delay' stamp='not-a-date'/>",
    "<delay xmlns='urn:xmpp:delay' stamp='9999-99-99T99:99:99Z'/>",
    "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='alice@a.example/phone'><body>forged</body></message></forwarded></received>",
    "<sent xmlns='urn:xmpp:carbons:2'/>",
    "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'/></received>",
    "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish/></pubsub>",
    "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item/></publish></pubsub>",
    "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item id='x'><p xmlns='urn:p'/></item><item/></publish><publish-options><x xmlns='jabber:x:data'><field var='pubsub#access_model'><value>whitelist</value></field><field var='pubsub#max_items'><value>-3</value></field></x></publish-options></pubsub>",
    "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='n' max_items='18446744073709551616'/></pubsub>",
    "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items/></pubsub>",
    "<pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='n' jid='bob@a.example'/></pubsub>",
    "<pubsub xmlns='http://jabber.org/protocol/pubsub'/>",
    "<query xmlns='jabber:iq:roster'><item jid='bob@a.example' subscription='remove'/></query>",
    "<query xmlns='jabber:iq:roster'><item jid='@@'/><item jid='x@y'/></query>",
    "<query xmlns='jabber:iq:roster'/>",
    "<enable xmlns='urn:xmpp:carbons:2'/>",
    "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>laptop</resource></bind>",
    "<ping xmlns='urn:xmpp:ping'/>",
    "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    "<priority>-1</priority>",
    "<priority>99999999999</priority>",
    "<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='n'><item id='1'/></items></event>",
    "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
    "<x xmlns='urn:unknown'><y><z><w/></z></y></x>",
];

/// A well-formed but hostile stanza.
fn hostile_stanza(rng: &mut ChaCha20Rng) -> Element {
    let name = pick(rng, &["message", "presence", "iq"]);
    let mut attrs = String::new();
    for attr in ["to", "from", "type", "id"] {
        if !rng.next_u32().is_multiple_of(4) {
            let value = match attr {
                "to" | "from" => pick(rng, JIDS).to_owned(),
                "type" => pick(rng, TYPES).to_owned(),
                _ => format!("h{}", rng.next_u32() % 1000),
            };
            attrs.push_str(&format!(" {attr}='{value}'"));
        }
    }
    let mut children = String::new();
    for _ in 0..rng.next_u32() % 3 {
        children.push_str(pick(rng, PAYLOADS));
    }
    format!("<{name} xmlns='jabber:client'{attrs}>{children}</{name}>").parse().unwrap()
}

/// Malformed bytes: a real stanza with a few random byte-level mutations.
fn malformed_bytes(rng: &mut ChaCha20Rng) -> String {
    let mut bytes =
        b"<message to='bob@a.example' type='chat' id='m1'><body>hello &amp; bye</body></message>".to_vec();
    let junk = b"<>/='\"&;#x\0\xff!?[]";
    for _ in 0..1 + rng.next_u32() % 4 {
        let i = rng.next_u32() as usize % bytes.len();
        match rng.next_u32() % 4 {
            0 => {
                bytes.remove(i);
            }
            1 => bytes.insert(i, junk[rng.next_u32() as usize % junk.len()]),
            2 => bytes.truncate(i.max(1)),
            _ => bytes[i] ^= 1 << (rng.next_u32() % 8),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn hostile_input_never_breaks_the_world() {
    let mut scenario = parse("hostile.yaml", BASE).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(0x6a61_6262_6572);
    let mallory = scenario.devices.iter().position(|d| d.short == "mallory/pc").unwrap();
    let bob = scenario.devices.iter().find(|d| d.short == "bob/laptop").unwrap().jid.clone();
    let mallory_jid = scenario.devices[mallory].jid.clone();
    let plan = scenario.attacker.as_mut().unwrap();
    let mut at = Duration::from_secs(2);
    for i in 0..600_u32 {
        at += Duration::from_millis(25);
        let hop = if i.is_multiple_of(2) {
            Hop::ClientToServer { client: mallory_jid.clone(), server: "a.example".into() }
        } else {
            Hop::ServerToClient { server: "a.example".into(), client: bob.clone() }
        };
        plan.inject.push((at, hop, jabberwock_sim::attacker::Injection::Stanza(hostile_stanza(&mut rng))));
    }
    // Malformed bytes end mallory's stream each time; she reconnects within a second.
    let mut raw_at = Duration::from_secs(2);
    for _ in 0..30 {
        raw_at += Duration::from_millis(1500);
        scenario.devices[mallory].schedule.push((raw_at, Command::Raw(malformed_bytes(&mut rng))));
    }
    // Nesting deep enough to overflow any recursive parser or destructor.
    let deep =
        format!("<message to='bob@a.example'>{}{}</message>", "<a>".repeat(200_000), "</a>".repeat(200_000));
    scenario.devices[mallory].schedule.push((Duration::from_millis(1500), Command::Raw(deep)));
    scenario.devices[mallory].schedule.sort_by_key(|(at, _)| *at);
    let end = at.max(raw_at) + Duration::from_secs(2);
    let alice = scenario.devices.iter_mut().find(|d| d.short == "alice/phone").unwrap();
    alice.schedule.push((
        end,
        Command::Send { to: bob.to_bare(), body: "after the storm".into(), parts: Default::default() },
    ));
    scenario.end = end + Duration::from_secs(5);

    let first = run(&scenario).unwrap();
    let second = run(&scenario).unwrap();
    assert_eq!(first.render(), second.render(), "hostile runs must be deterministic too");

    let log = &first.devices[&bob];
    let shown: Vec<&str> = log.received.iter().map(|r| r.body.as_str()).collect();
    assert_eq!(shown.first(), Some(&"before"));
    assert_eq!(shown.last(), Some(&"after the storm"), "the world must keep working");
    assert!(
        log.errors.iter().any(|e| e == "malformed"),
        "bob's engine rejected nested bodies: {:?}",
        log.errors
    );
    assert!(log.alerts.iter().any(|a| a == "forged-carbon"), "bob flagged carbons from strangers");
    let stream_errors = first.transcript.entries.iter().filter(|e| e.text.contains("✗ stream error")).count();
    assert!(stream_errors >= 10, "malformed bytes give stream errors in the transcript ({stream_errors})");
    assert!(
        first
            .transcript
            .entries
            .iter()
            .any(|e| e.text.contains("policy-violation: XML nested deeper than 64")),
        "deep nesting is refused before it is parsed"
    );
    let stanza_errors = first.transcript.entries.iter().filter(|e| e.text.contains("type='error'")).count();
    assert!(stanza_errors >= 20, "hostile stanzas get stanza errors ({stanza_errors})");
}
