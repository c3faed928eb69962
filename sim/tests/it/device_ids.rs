//! `$id(bob/phone)`: a device's id (its OMEMO device id) named in the attacker's plan without a
//! first run to read it. The id is drawn from the device's seeded stream, so it changes with
//! the seed: the scenarios that use it hold under other seeds too.

use jabberwock_sim::{load, parse, run_with_seed};

fn scenario(file: &str) -> jabberwock_sim::Scenario {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
    load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn an_id_in_a_rule_or_a_substituted_item_follows_the_seed() {
    for file in ["scenarios/powers/device-id.yaml", "scenarios/omemo/device-hidden.yaml"] {
        let s = scenario(file);
        for seed in [s.seed, 1, 2, 3] {
            let outcome = run_with_seed(&s, seed).unwrap();
            assert!(outcome.passed(), "{file}, seed {seed}: {}", outcome.failure().unwrap_or_default());
        }
    }
}

/// What the plan holds after validation: full JIDs in the words, the ids only at run time.
#[test]
fn the_plan_names_devices_by_full_jid_until_the_run() {
    let s = scenario("scenarios/powers/device-id.yaml");
    let plan = s.attacker.as_ref().unwrap();
    assert_eq!(plan.rules[0].matcher.attributes["sid"], "$id(bob@b.example/phone)");
}

/// An injected stanza that names a device by its id: the id is the one the device uses.
#[test]
fn an_injected_stanza_carries_the_id_the_device_uses() {
    let yaml = "name: inject-id\nseed: 9\nservers: [a.example]\ntransport: plain\naccounts:\n  alice@a.example: {devices: {phone: omemo}}\n  bob@a.example: {devices: {laptop: omemo}}\n\
                attacker:\n  position: server a.example\n  inject:\n    - {at: 1s, hop: s2c bob/laptop, stanza: \"<message xmlns='jabber:client' from='alice@a.example/phone' to='bob@a.example/laptop'><body>your id is $id(bob/laptop), mine $id(alice/phone); $$5</body></message>\"}\n";
    let s = parse("inject-id.yaml", yaml).unwrap();
    for seed in [9, 10] {
        let outcome = run_with_seed(&s, seed).unwrap();
        // The ids the devices published in their device lists.
        let published = |who: &str| {
            outcome
                .transcript
                .entries
                .iter()
                .filter(|e| e.text.starts_with(&format!("{who} → a.example")))
                .find_map(|e| {
                    let xml = e.xml.as_deref()?;
                    let list = xml.split("<device id='").nth(1)?;
                    Some(list.split('\'').next()?.to_owned())
                })
                .unwrap_or_else(|| panic!("no device list from {who}"))
        };
        let (bob, alice) = (published("bob@a.example/laptop"), published("alice@a.example/phone"));
        let injected = outcome.transcript.entries.iter().find(|e| e.what == Some("inject")).unwrap();
        assert!(
            injected.text.contains(&format!("your id is {bob}, mine {alice}; $5")),
            "seed {seed}: {}",
            injected.text
        );
    }
}
