//! XEP-0210 §4.1 measured: the generality run's judge reads the parts of a message, a directed
//! presence's status and an iq payload out of what the servers carried.

use jabberwock_e2e::Protocol;
use jabberwock_sim::properties::PROPERTIES;

fn generality() -> &'static jabberwock_sim::properties::Property {
    PROPERTIES.iter().find(|p| p.id == "generality").unwrap()
}

/// The control sends everything in clear: the judge must find every part on the wire, and
/// Bob's client must show every part (else the judge would measure a run that lost them).
#[test]
fn the_control_leaks_every_part_and_bob_gets_each() {
    let (verdict, outcome) = generality().measure("plain".parse::<Protocol>().unwrap()).unwrap();
    assert!(verdict.tested && !verdict.holds, "{}", verdict.reason);
    assert_eq!(
        verdict.reason,
        "read: body, subject, thread, XHTML, out-of-band URL, chat state, correction, presence status, iq payload"
    );
    let bob = outcome.devices.iter().find(|(j, _)| j.to_string() == "bob@b.example/laptop").unwrap().1;
    let shown: Vec<String> = bob.parts.iter().map(|p| p.label()).collect();
    assert!(shown.contains(&"status: out walking the quokka".to_owned()), "{shown:?}");
    assert!(shown.contains(&"payload: note about the capybara".to_owned()), "{shown:?}");
    assert!(bob.parts.iter().all(|p| !p.protected));
}

/// A tunnel carries whole stanzas: the servers read none of the parts, Bob is shown each,
/// protected, and the correction names the first message by the id it had inside the tunnel
/// (the id Bob knows it by), not by any stanza the servers carried.
#[test]
fn a_tunnel_hides_every_part_and_the_correction_names_the_inner_message() {
    let (verdict, outcome) = generality().measure("xtls".parse::<Protocol>().unwrap()).unwrap();
    assert!(verdict.tested && verdict.holds, "{}", verdict.reason);
    let bob = outcome.devices.iter().find(|(j, _)| j.to_string() == "bob@b.example/laptop").unwrap().1;
    let shown: Vec<String> = bob.parts.iter().map(|p| p.label()).collect();
    assert!(bob.parts.iter().all(|p| p.protected), "{shown:?}");
    for part in
        ["status: out walking the quokka", "payload: note about the capybara", "chat-state: composing"]
    {
        assert!(shown.contains(&part.to_owned()), "{part}: {shown:?}");
    }
    let correction = bob.parts.iter().find(|p| p.name == "correction").unwrap();
    assert!(!correction.text.is_empty());
    let hops = outcome.transcript.entries.iter().filter(|e| e.kind == "hop");
    let carried: String = hops.filter_map(|e| e.xml.clone()).collect();
    assert_eq!(correction.text, "in-1", "the first message inside the tunnel");
    assert!(!carried.contains(&correction.text), "the servers never saw that id");
}

/// A protocol that secures every stanza kind whole: the servers read no part, and Bob is
/// shown each one, protected.
fn seals_every_part(protocol: &str) {
    let (verdict, outcome) = generality().measure(protocol.parse::<Protocol>().unwrap()).unwrap();
    assert!(verdict.tested && verdict.holds, "{protocol}: {}", verdict.reason);
    let bob = outcome.devices.iter().find(|(j, _)| j.to_string() == "bob@b.example/laptop").unwrap().1;
    let shown: Vec<String> = bob.parts.iter().map(|p| p.label()).collect();
    for part in [
        "subject: quarterly tapir census",
        "status: out walking the quokka",
        "payload: note about the capybara",
    ] {
        assert!(shown.contains(&part.to_owned()), "{protocol}: {shown:?}");
    }
    assert!(bob.parts.iter().all(|p| p.protected), "{protocol}: {shown:?}");
}

#[test]
fn smime_seals_presence_and_iq_too() {
    seals_every_part("smime");
}

#[test]
fn xmlsec_seals_every_part_presence_and_iq() {
    seals_every_part("xmlsec");
}
