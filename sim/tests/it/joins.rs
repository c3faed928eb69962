//! `joins`: a device that first appears at a time T does not exist on the network before T —
//! no login, no presence, no key publication — and then logs in as a new device does.

use jabberwock_sim::{parse, run};

const HEAD: &str = "name: joins\nseed: 5\nservers: [a.example, b.example]\naccounts:\n  alice@a.example: {devices: {phone: omemo}}\n";

fn scenario(phone: &str) -> String {
    format!(
        "{HEAD}  bob@b.example: {{devices: {{laptop: omemo, phone: {phone}}}}}\ntimeline:\n  - {{at: 1s, device: alice/phone, send: {{to: bob@b.example, body: early}}}}\n  - {{at: 4s, device: alice/phone, send: {{to: bob@b.example, body: late}}}}\n"
    )
}

/// Every transcript line that involves Bob's phone, with its time in milliseconds.
fn phone_lines(yaml: &str) -> Vec<(u64, String)> {
    let scenario = parse("joins.yaml", yaml).unwrap();
    let outcome = run(&scenario).unwrap();
    assert!(outcome.passed(), "{}", outcome.render());
    let phone = "bob@b.example/phone";
    outcome
        .transcript
        .entries
        .iter()
        .filter(|e| {
            e.text.contains(phone)
                || [&e.from, &e.to, &e.actor].iter().any(|x| x.as_deref() == Some(phone))
                || e.xml.as_deref().is_some_and(|x| x.contains(phone))
        })
        .map(|e| (e.t_ms, e.text.clone()))
        .collect()
}

#[test]
fn a_device_that_joins_later_is_not_on_the_network_before() {
    // From the start (the short form), the phone logs in and publishes at once.
    let from_start = phone_lines(&scenario("omemo"));
    assert!(from_start.first().is_some_and(|(t, _)| *t < 1000), "{from_start:?}");

    let lines = phone_lines(&format!(
        "{}expect:\n  bob/phone: {{received: [late]}}\n  bob/laptop: {{received: [early, late]}}\n",
        scenario("{protocol: omemo, joins: 3s}")
    ));
    let (first_at, first) = &lines[0];
    assert_eq!((*first_at, first.as_str()), (3000, "bob@b.example/phone joins the network"), "{lines:?}");
    assert!(lines.iter().all(|(t, _)| *t >= 3000), "{lines:?}");
    // Its keys go out only then: the bundle is published after it joined.
    let published = lines
        .iter()
        .find(|(_, l)| l.starts_with("bob@b.example/phone → b.example") && l.contains("omemo:2:bundles"));
    assert!(published.is_some_and(|(t, _)| *t >= 3000), "{lines:?}");
}
