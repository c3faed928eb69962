//! Bad scenarios fail with file:line:column, the field's path and a clear message — never a
//! panic.

use jabberwock_sim::parse;

const GOOD_HEAD: &str = "name: x\nseed: 1\nservers: [a.example]\naccounts:\n  alice@a.example: {devices: {phone: plain}}\n  bob@a.example: {devices: {laptop: plain}}\n";

fn error(yaml: &str) -> String {
    match parse("bad.yaml", yaml) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_yaml_points_at_the_spot() {
    let e = error("name: x\nseed: [1\n");
    assert!(e.starts_with("bad.yaml:2:"), "{e}");
}

#[test]
fn unknown_fields_are_rejected_with_their_location() {
    let e = error(&format!("{GOOD_HEAD}colour: blue\n"));
    assert!(e.starts_with("bad.yaml:7:1"), "{e}");
    assert!(e.contains("colour"), "{e}");
    let e = error(&format!(
        "{GOOD_HEAD}timeline:\n  - {{at: 1s, device: alice/phone, sned: {{to: bob@a.example, body: x}}}}\n"
    ));
    assert!(e.starts_with("bad.yaml:8:"), "{e}");
    assert!(e.contains("sned"), "{e}");
}

#[test]
fn a_step_for_an_unknown_device() {
    let e = error(&format!(
        "{GOOD_HEAD}timeline:\n  - {{at: 1s, device: carol/phone, send: {{to: bob@a.example, body: x}}}}\n"
    ));
    assert!(e.starts_with("bad.yaml:8:5: at `timeline[0].device`: unknown device `carol/phone`"), "{e}");
}

#[test]
fn a_time_in_the_past() {
    let e = error(&format!(
        "{GOOD_HEAD}timeline:\n  - {{at: 5s, device: alice/phone, send: {{to: bob@a.example, body: x}}}}\n  - {{at: 2s, device: alice/phone, send: {{to: bob@a.example, body: y}}}}\n"
    ));
    assert!(e.starts_with("bad.yaml:9:5: at `timeline[1].at`"), "{e}");
    assert!(e.contains("earlier than the previous step"), "{e}");
}

#[test]
fn an_unknown_reason_names_the_closest_known_ones() {
    let e = error(&format!(
        "{GOOD_HEAD}expect:\n  bob/laptop: {{alerts: [unencrypted], errors: [bad-mac, bad-macs]}}\n"
    ));
    assert_eq!(
        e,
        "bad.yaml:8:57: at `expect.bob/laptop.errors[1]`: unknown reason `bad-macs`: no engine or client reports \
         it (closest: `bad-mac`; scenarios/reasons.md lists all 148)"
            .replace("148", &jabberwock_sim::reasons::all().len().to_string())
    );
    let e = error(&format!(
        "{GOOD_HEAD}expect:\n  bob/laptop:\n    alerts:\n      - unencrypted\n      - otr-sesion\n"
    ));
    assert!(
        e.starts_with("bad.yaml:11:9: at `expect.bob/laptop.alerts[1]`: unknown reason `otr-sesion`"),
        "{e}"
    );
    assert!(e.contains("(closest: `otr-session`"), "{e}");
    // Every reason declared anywhere is accepted, on any device.
    let every: Vec<&str> = jabberwock_sim::reasons::all().iter().map(|k| k.code).collect();
    let yaml =
        format!("{GOOD_HEAD}expect:\n  bob/laptop: {{alerts: [{0}], errors: [{0}]}}\n", every.join(", "));
    assert!(parse("good.yaml", &yaml).is_ok());
}

#[test]
fn a_rule_that_matches_nothing() {
    let e = error(&format!(
        "{GOOD_HEAD}attacker:\n  position: server a.example\n  rules:\n    - {{match: {{from: carol@a.example}}, do: drop}}\n"
    ));
    assert!(e.contains("at `attacker.rules[0].match.from`"), "{e}");
    assert!(e.contains("matches no device"), "{e}");
    let e = error(&format!(
        "{GOOD_HEAD}attacker:\n  position: server a.example\n  rules:\n    - {{match: {{hop: s2s}}, do: drop}}\n"
    ));
    assert!(e.contains("matches nothing"), "{e}");
}

#[test]
fn other_impossible_scenarios() {
    for (yaml, needle) in [
        (format!("{GOOD_HEAD}timeline:\n  - {{at: 1s, device: alice/phone}}\n"), "exactly one of"),
        (format!("{GOOD_HEAD}timeline:\n  - {{at: 1s, device: alice/phone, send: {{to: zed@a.example, body: x}}}}\n"), "unknown account"),
        (format!("{GOOD_HEAD}network:\n  crashes:\n    - {{server: b.example, at: 1s}}\n"), "unknown server"),
        (format!("{GOOD_HEAD}network:\n  partitions:\n    - {{between: [alice/phone, a.example], from: 5s, until: 2s}}\n"), "ends before it starts"),
        (format!("{GOOD_HEAD}network:\n  latency: 50ms..10ms\n"), "minimum above its maximum"),
        (format!("{GOOD_HEAD}network:\n  keepalive: soon\n"), "not a duration"),
        (format!("{GOOD_HEAD}attacker:\n  position: under the sea\n"), "everywhere"),
        (format!("{GOOD_HEAD}attacker:\n  position: server a.example\n  rules:\n    - {{do: {{replace: {{element: body, with: '<body'}}}}}}\n"), "not well-formed XML"),
        (format!("{GOOD_HEAD}expect:\n  carol/phone: {{received: []}}\n"), "unknown device"),
        (format!("{GOOD_HEAD}attacker:\n  position: everywhere\n  rules:\n    - {{do: {{duplicate: 4000000000}}}}\n"), "between 1 and 1000"),
        (format!("{GOOD_HEAD}attacker:\n  position: everywhere\nexpect:\n  attacker: {{acted: {{teleport: 1}}}}\n"), "unknown power `teleport`"),
        (format!("{GOOD_HEAD}timeline:\n  - {{at: 1s, device: alice/phone, compromise: full-state}}\n"), "needs an `attacker:`"),
        ("name: x\nseed: 1\nservers: [a.example]\naccounts:\n  alice@a.example: {devices: {phone: rot13}}\n".to_owned(), "unknown protocol `rot13`"),
        ("name: x\nseed: 1\nservers: [a.example]\naccounts:\n  alice@b.example: {devices: {phone: plain}}\n".to_owned(), "no server hosts"),
    ] {
        let e = error(&yaml);
        assert!(e.contains(needle), "expected {needle:?} in: {e}");
        assert!(e.starts_with("bad.yaml:") && !e.starts_with("bad.yaml:0:0"), "no location in: {e}");
    }
}

#[test]
fn settings_out_of_range() {
    let e = error(&format!("{GOOD_HEAD}network:\n  max_message: 20\n"));
    assert!(e.starts_with("bad.yaml:8:16: at `network.max_message`: at least 64 bytes"), "{e}");
    let e = error(
        "name: x\nseed: 1\nservers: [a.example]\naccounts:\n  alice@a.example: {devices: {phone: otr}, otr: sometimes}\n",
    );
    assert!(e.starts_with("bad.yaml:5:"), "{e}");
    assert!(e.contains("sometimes"), "{e}");
}

#[test]
fn a_tick_is_checked_against_the_latencies() {
    let e = error(&format!("{GOOD_HEAD}tick: 0ms\n"));
    assert!(e.starts_with("bad.yaml:7:7: at `tick`: a tick must be longer than 0ms"), "{e}");
    let e = error(&format!("{GOOD_HEAD}tick: soon\n"));
    assert!(e.starts_with("bad.yaml:7:") && e.contains("not a duration"), "{e}");
    // The default latency is 1ms..10ms.
    let e = error(&format!("{GOOD_HEAD}tick: 5ms\n"));
    assert!(
        e.starts_with(
            "bad.yaml:7:7: at `tick`: a tick of 5ms is longer than the smallest latency, 1ms (network.latency)"
        ),
        "{e}"
    );
    // A link faster than the default counts.
    let e = error(&format!(
        "{GOOD_HEAD}tick: 10ms\nnetwork:\n  latency: 20ms..40ms\n  links:\n    - {{between: [alice/phone, a.example], latency: 5ms..9ms}}\n"
    ));
    assert!(
        e.contains("a tick of 10ms is longer than the smallest latency, 5ms (the link alice@a.example/phone ⇆ a.example)"),
        "{e}"
    );
    let ok = |yaml: String| match parse("good.yaml", &yaml) {
        Ok(s) => s.tick,
        Err(e) => panic!("refused: {e}"),
    };
    assert_eq!(
        ok(format!("{GOOD_HEAD}tick: 10ms\nnetwork:\n  latency: 10ms..40ms\n")),
        core::time::Duration::from_millis(10)
    );
    assert_eq!(ok(GOOD_HEAD.to_owned()), core::time::Duration::from_millis(1));
}

#[test]
fn tls_settings_are_checked() {
    let e = error(&format!("{GOOD_HEAD}transport: tcp\n"));
    assert!(e.starts_with("bad.yaml:7:"), "{e}");
    let e = error(
        "name: x\nseed: 1\nservers: [a.example]\ntransport: plain\naccounts:\n  alice@a.example: {devices: {phone: plain}, tls: {verify: false}}\n",
    );
    assert!(e.starts_with("bad.yaml:6:") && e.contains("`accounts.alice@a.example.tls`"), "{e}");
    assert!(e.contains("need `transport: tls`"), "{e}");
    let e = error(
        "name: x\nseed: 1\nservers: [a.example]\naccounts:\n  alice@a.example: {devices: {phone: plain}, tls: {verfy: false}}\n",
    );
    assert!(e.starts_with("bad.yaml:5:") && e.contains("verfy"), "{e}");
}

#[test]
fn a_tls_terminating_attacker_needs_a_client_link_under_tls() {
    let e = error(&format!("{GOOD_HEAD}attacker:\n  position: server a.example\n  terminate_tls: true\n"));
    assert!(e.starts_with("bad.yaml:9:") && e.contains("`attacker.terminate_tls`"), "{e}");
    let plain = GOOD_HEAD.replace("servers: [a.example]\n", "servers: [a.example]\ntransport: plain\n");
    let e = error(&format!(
        "{plain}attacker:\n  position: network alice/phone <-> a.example\n  terminate_tls: true\n"
    ));
    assert!(e.contains("no TLS to terminate"), "{e}");
}

#[test]
fn rules_on_a_link_under_tls_are_refused() {
    let e = error(&format!(
        "{GOOD_HEAD}attacker:\n  position: network alice/phone <-> a.example\n  rules:\n    - {{match: {{kind: message}}, do: drop}}\n"
    ));
    assert!(e.starts_with("bad.yaml:10:") && e.contains("`attacker.rules[0]`"), "{e}");
    assert!(e.contains("only TLS records"), "{e}");
    let e = error(&format!(
        "{GOOD_HEAD}attacker:\n  position: network alice/phone <-> a.example\n  inject:\n    - {{at: 1s, hop: c2s alice/phone, stanza: \"<message xmlns='jabber:client'/>\"}}\n"
    ));
    assert!(e.contains("`attacker.inject[0]`") && e.contains("only TLS records"), "{e}");
}

#[test]
fn set_takes_a_plain_attribute_name() {
    for (name, why) in [
        ("xmlns", "reserved by XML"),
        ("xmlns:evil", "not an attribute name"),
        ("xml:lang", "not an attribute name"),
        ("1st", "not an attribute name"),
        ("'", "not an attribute name"),
        ("", "not an attribute name"),
    ] {
        let e = error(&format!(
            "{GOOD_HEAD}attacker:\n  position: server a.example\n  rules:\n    - {{match: {{kind: message}}, do: {{set: {{attribute: {name:?}, value: x}}}}}}\n"
        ));
        assert!(e.starts_with("bad.yaml:10:7: at `attacker.rules[0].do.set.attribute`"), "{name}: {e}");
        assert!(e.contains(why), "{name}: {e}");
    }
    // A plain name is fine.
    let ok = format!(
        "{GOOD_HEAD}attacker:\n  position: server a.example\n  rules:\n    - {{match: {{kind: message}}, do: {{set: {{attribute: from, value: x}}}}}}\n"
    );
    assert!(parse("ok.yaml", &ok).is_ok());
}

/// `flip` takes the protocol's ciphertext or an element, never both, and the protocol knows its
/// own encoding; the bare key form `{ciphertext, bit: 77}` is the flag.
#[test]
fn a_flip_names_the_ciphertext_or_an_element() {
    let rule = |flip: &str| {
        format!(
            "name: x\nseed: 1\nservers: [a.example]\naccounts:\n  alice@a.example: {{devices: {{phone: plain}}}}\n\
             attacker:\n  position: server a.example\n  rules:\n    - do: {{flip: {flip}}}\n"
        )
    };
    for (flip, needle) in [
        ("{ciphertext: true, element: body, bit: 1}", "give exactly one of `ciphertext` or `element`"),
        ("{bit: 1}", "give exactly one of `ciphertext` or `element`"),
        ("{ciphertext, bit: 1, encoding: base64}", "`encoding` goes with `element`"),
    ] {
        let e = error(&rule(flip));
        assert!(e.starts_with("bad.yaml:9:") && e.contains(needle), "{flip}: {e}");
    }
    for ok in ["{ciphertext, bit: 77}", "{ciphertext: true, bit: -1}", "{element: body, bit: 3}"] {
        let yaml = rule(ok);
        assert!(parse("ok.yaml", &yaml).is_ok(), "{ok}");
    }
}

/// Account options are the protocols' declarations: an undeclared key is an unknown field, a
/// value the declaration does not list is refused at its own line and column.
#[test]
fn account_options_are_checked_against_the_protocols_declarations() {
    let head = "name: x\nseed: 1\nservers: [a.example]\naccounts:\n  alice@a.example:\n    devices: {phone: xmlsec}\n";
    let e = error(&format!("{head}    colour: blue\n"));
    assert!(
        e.starts_with("bad.yaml:7:") && e.contains("unknown field `colour`") && e.contains("cipher"),
        "{e}"
    );
    let e = error(&format!("{head}    cipher: rot13\n"));
    assert_eq!(
        e,
        "bad.yaml:7:13: at `accounts.alice@a.example.cipher`: `rot13` is not a value of `cipher` (an option of xmlsec): expected one of gcm, cbc"
    );
    assert!(parse("ok.yaml", &format!("{head}    cipher: cbc\n")).is_ok());
}

/// The attacker asks the wires of the scenario's protocols in registry order, the control (which
/// claims every body) last: in a mixed scenario, a fallback body is not taken for the
/// ciphertext.
#[test]
fn the_control_is_asked_last() {
    let yaml = "name: x\nseed: 1\nservers: [a.example]\naccounts:\n  alice@a.example: {devices: {phone: plain, laptop: pgp}}\n\
                attacker:\n  position: server a.example\n  rules:\n    - do: {flip: {ciphertext, bit: 1}}\n";
    let scenario = parse("mixed.yaml", yaml).unwrap();
    let order: Vec<&str> = scenario.attacker.unwrap().protocols.iter().map(|p| p.name()).collect();
    assert_eq!(order, ["pgp", "plain"]);
}

/// A YAML error names its place once (issue 17: "error" and the location were printed twice, the
/// snippet with another column): `file:line:column: message`, on one line.
#[test]
fn a_yaml_error_names_its_place_once() {
    for (yaml, at) in [
        ("name: x\nseed: [1\n", "bad.yaml:2:7: "),
        (
            "name: x\nseed: 1\nservers: [a.example]\naccounts:\n  alice@a.example: {devices: {phone: plain}, colour: blue}\n",
            "bad.yaml:5:",
        ),
    ] {
        let e = error(yaml);
        assert!(e.starts_with(at), "{e}");
        assert!(
            !e.contains('\n') && !e.contains("line ") && !e.contains("error") && !e.contains("-->"),
            "{e}"
        );
    }
}

#[test]
fn a_forgery_with_served_keys_needs_a_rule_serving_them() {
    let head = "name: x\nseed: 1\nservers: [a.example]\naccounts:\n  alice@a.example: {devices: {phone: omemo}}\n  bob@a.example: {devices: {laptop: omemo}}\n";
    let inject = "  inject:\n    - {at: 3s, hop: s2c bob/laptop, forge: {from: alice/phone, to: bob@a.example, body: hi, keys: served}}\n";
    let e = error(&format!("{head}attacker:\n  position: server a.example\n{inject}"));
    assert_eq!(
        e,
        "bad.yaml:10:7: at `attacker.inject[0].forge.keys`: `served` needs a rule `impersonate: {owner: alice@a.example}` to serve them"
    );
    // A rule serving someone else's keys is no use; one serving Alice's is.
    let rule =
        |owner: &str| format!("  rules:\n    - {{match: {{}}, do: {{impersonate: {{owner: {owner}}}}}}}\n");
    let other = format!("{head}attacker:\n  position: server a.example\n{}{inject}", rule("bob@a.example"));
    assert!(error(&other).contains("`served` needs a rule"));
    let good = format!("{head}attacker:\n  position: server a.example\n{}{inject}", rule("alice@a.example"));
    assert!(parse("good.yaml", &good).is_ok());
}

#[test]
fn a_forgery_with_stolen_keys_needs_a_theft_before_it() {
    let head = "name: x\nseed: 1\nservers: [a.example]\naccounts:\n  alice@a.example: {devices: {phone: omemo}}\n  bob@a.example: {devices: {laptop: omemo}}\n";
    let attacker = "attacker:\n  position: server a.example\n  inject:\n    - {at: 3s, hop: s2c bob/laptop, forge: {from: alice/phone, to: bob@a.example, body: hi, keys: stolen}}\n";
    let e = error(&format!("{head}{attacker}"));
    assert_eq!(
        e,
        "bad.yaml:10:7: at `attacker.inject[0].forge.keys`: `stolen` needs a `compromise` of alice/phone in the timeline before 3.000s"
    );
    // A theft after the forgery is no use either; one before it is.
    let late = "timeline:\n  - {at: 4s, device: alice/phone, compromise: long-term-keys}\n";
    assert!(error(&format!("{head}{attacker}{late}")).contains("needs a `compromise` of alice/phone"));
    let early = "timeline:\n  - {at: 2s, device: alice/phone, compromise: long-term-keys}\n";
    assert!(parse("good.yaml", &format!("{head}{attacker}{early}")).is_ok());
    // Anything but `public` or `stolen` is refused by name.
    let e = error(&format!("{head}{}", attacker.replace("keys: stolen", "keys: borrowed")));
    assert!(e.contains("borrowed") && e.contains("stolen"), "{e}");
}

/// `joins`: a device's longer form; nothing may name the device before it exists.
#[test]
fn a_device_that_joins_later_cannot_act_before() {
    let head = "name: x\nseed: 1\nservers: [a.example]\naccounts:\n  alice@a.example: {devices: {phone: plain}}\n  bob@a.example:\n    devices:\n      laptop: plain\n      phone: {protocol: omemo, joins: 5s}\n";
    // The short and the long form, side by side.
    let scenario = parse("ok.yaml", head).unwrap();
    let joins: Vec<(String, Option<core::time::Duration>)> =
        scenario.devices.iter().map(|d| (d.short.clone(), d.joins)).collect();
    assert!(joins.contains(&("bob/phone".into(), Some(core::time::Duration::from_secs(5)))), "{joins:?}");
    assert!(joins.contains(&("bob/laptop".into(), None)), "{joins:?}");
    // A step before it joins, naming both times.
    let e = error(&format!(
        "{head}timeline:\n  - {{at: 2s, device: bob/phone, send: {{to: alice@a.example, body: x}}}}\n"
    ));
    assert_eq!(
        e,
        "bad.yaml:11:5: at `timeline[0].at`: bob/phone joins at 5.000s: a step at 2.000s comes before it exists on the network"
    );
    // At its joining time it may act.
    let at_join = format!(
        "{head}timeline:\n  - {{at: 5s, device: bob/phone, send: {{to: alice@a.example, body: x}}}}\n"
    );
    assert!(parse("ok.yaml", &at_join).is_ok());
    // An offline window that does not start after it joins.
    for (from, shown) in [("1s", "1.000s"), ("5s", "5.000s")] {
        let e =
            error(&format!("{head}network:\n  offline: [{{device: bob/phone, from: {from}, until: 8s}}]\n"));
        assert!(
            e.starts_with(
                "bad.yaml:11:13: at `network.offline[0].from`: bob/phone joins at 5.000s and is offline until then: an offline window must start later"
            ),
            "{e}"
        );
        assert!(e.contains(&format!("(this one starts at {shown};")), "{e}");
    }
    assert!(
        parse("ok.yaml", &format!("{head}network:\n  offline: [{{device: bob/phone, from: 6s}}]\n")).is_ok()
    );
    // An injection on its link before it has one.
    let e = error(&format!(
        "{head}attacker:\n  position: server a.example\n  inject:\n    - {{at: 1s, hop: s2c bob/phone, stanza: \"<message xmlns='jabber:client'/>\"}}\n"
    ));
    assert!(
        e.starts_with(
            "bad.yaml:13:7: at `attacker.inject[0].at`: bob/phone joins at 5.000s: at 1.000s it has no link"
        ),
        "{e}"
    );
    // The longer form is parsed strictly, at its own line.
    for (entry, needle) in [
        ("{protocol: omemo, join: 5s}", "unknown field `join`"),
        ("{protocol: omemo, joins: soon}", "not a duration"),
        ("{joins: 5s}", "missing field `protocol`"),
        ("{protocol: rot13, joins: 5s}", "unknown protocol `rot13`"),
        (
            "[omemo]",
            "a protocol name, or a device (`{protocol: <name>, joins: 5s, implementation: <name>, quirks: [..]}`)",
        ),
    ] {
        let e = error(&head.replace("{protocol: omemo, joins: 5s}", entry));
        assert!(e.starts_with("bad.yaml:9:"), "{entry}: {e}");
        assert!(e.contains(needle), "{entry}: {e}");
    }
}

/// `implementation`: a name of the registry (`peers/reference/registry.yaml`) or `jabberwock`,
/// speaking the device's protocol; refused at the device's line with the field and the choices.
#[test]
fn a_device_names_a_registered_implementation_of_its_protocol() {
    let head = "name: x\nseed: 1\nservers: [a.example]\naccounts:\n  alice@a.example: {devices: {phone: plain}}\n  bob@a.example:\n    devices:\n      laptop: DEVICE\n";
    let ours =
        parse("ok.yaml", &head.replace("DEVICE", "{protocol: omemo, implementation: jabberwock}")).unwrap();
    assert!(ours.devices.iter().all(|d| d.implementation.is_none()));
    let e = error(&head.replace("DEVICE", "{protocol: omemo, implementation: libsignal-rs}"));
    assert!(
        e.starts_with("bad.yaml:8:15: at `accounts.bob@a.example.devices.laptop.implementation`: unknown implementation `libsignal-rs` (implementations: jabberwock, python-omemo,"),
        "{e}"
    );
    let e = error(&head.replace("DEVICE", "{protocol: plain, implementation: python-omemo}"));
    assert!(e.ends_with("`python-omemo` speaks omemo, omemo-legacy, not plain"), "{e}");
    // On the command line's side (`--implementation bob=...`), the same rules.
    let mut scenario = parse("ok.yaml", &head.replace("DEVICE", "omemo")).unwrap();
    assert_eq!(
        scenario.use_implementation_named("carol", "jabberwock").unwrap_err(),
        "no device of an account `carol` in x"
    );
    assert!(
        scenario.use_implementation_named("bob", "gnupg").unwrap_err().contains("speaks pgp, ox, not omemo")
    );
    assert_eq!(scenario.use_implementation_named("bob@a.example", "jabberwock"), Ok(1));
}

/// `$id(<device>)` names a device of the scenario whose protocol gives it an id; in the fields
/// that take it, any other `$` is an error (`$$` is a `$`).
#[test]
fn a_device_id_names_a_device_that_has_one() {
    let head = "name: x\nseed: 1\nservers: [a.example]\naccounts:\n  alice@a.example: {devices: {phone: plain}}\n  bob@a.example: {devices: {laptop: omemo}}\nattacker:\n  position: server a.example\n";
    let rule = |m: &str| format!("{head}  rules:\n    - {{match: {m}, do: drop}}\n");
    for (yaml, want) in [
        (
            rule("{element: key, attributes: {rid: $id(carol/phone)}}"),
            "bad.yaml:10:7: at `attacker.rules[0].match.attributes.rid`: `$id(carol/phone)`: unknown device `carol/phone` (devices: alice/phone, bob/laptop)",
        ),
        (
            rule("{text: $id(alice/phone)}"),
            "bad.yaml:10:7: at `attacker.rules[0].match.text`: `$id(alice/phone)`: alice/phone speaks plain, whose devices have no id (devices have one in: omemo, omemo-legacy)",
        ),
        (
            rule("{text: costs 5$}"),
            "bad.yaml:10:7: at `attacker.rules[0].match.text`: `costs 5$`: a `$` starts a device's id, `$id(<device>)`; write `$$` for a `$`",
        ),
        (
            rule("{attributes: {rid: \"$id(bob/laptop\"}}"),
            "bad.yaml:10:7: at `attacker.rules[0].match.attributes.rid`: `$id(bob/laptop`: `$id(` has no closing `)`: write `$id(<device>)`",
        ),
        (
            rule("{attributes: {\"xmlns:x\": a}}"),
            "bad.yaml:10:7: at `attacker.rules[0].match.attributes.xmlns:x`: \"xmlns:x\" is not an attribute name (a letter or _, then letters, digits, _, - or .)",
        ),
        (
            format!(
                "{head}  rules:\n    - do: {{substitute: {{node: n, with: \"<devices xmlns='urn:x'><device id='$id(alice/phone)'/></devices>\"}}}}\n"
            ),
            "bad.yaml:10:7: at `attacker.rules[0].do.substitute.with`: `$id(alice/phone)`: alice/phone speaks plain, whose devices have no id (devices have one in: omemo, omemo-legacy)",
        ),
        (
            format!(
                "{head}  inject:\n    - {{at: 1s, hop: s2c bob/laptop, stanza: \"<message xmlns='jabber:client'><body>$id()</body></message>\"}}\n"
            ),
            "bad.yaml:10:7: at `attacker.inject[0].stanza`: `$id()` names no device: write `$id(<device>)`, e.g. `$id(bob/phone)`",
        ),
    ] {
        assert_eq!(error(&yaml), want);
    }
    // Written well, each is accepted (a full JID too), and `$$` is a dollar.
    for ok in [
        rule("{element: key, attributes: {rid: $id(bob/laptop)}}"),
        rule("{text: $id(bob@a.example/laptop) costs $$5}"),
        format!(
            "{head}  inject:\n    - {{at: 1s, hop: s2c bob/laptop, stanza: \"<message xmlns='jabber:client' id='$id(bob/laptop)'/>\"}}\n"
        ),
    ] {
        assert!(parse("ok.yaml", &ok).is_ok(), "{ok}");
    }
}

#[test]
fn pki_takes_shared_ca_or_none() {
    let e = error(&format!("{GOOD_HEAD}pki: web-of-trust\n"));
    assert!(e.starts_with("bad.yaml:7:6"), "{e}");
    assert!(e.contains("web-of-trust") && e.contains("shared-ca") && e.contains("none"), "{e}");
    assert!(parse("good.yaml", &format!("{GOOD_HEAD}pki: none\n")).is_ok());
}

/// A `received` entry is a whole text or `{starts-with: text}`, nothing else.
#[test]
fn a_received_text_is_whole_or_a_start() {
    let expect = |entries: &str| format!("{GOOD_HEAD}expect:\n  bob/laptop: {{received: [{entries}]}}\n");
    assert!(parse("ok.yaml", &expect("hello, {starts-with: \"meet me \"}, 42")).is_ok());
    let e = error(&expect("{starts_with: hi}"));
    assert_eq!(
        e,
        "bad.yaml:8:27: `starts_with` is not a key of a received text: write the text, or `{starts-with: text}`"
    );
    let e = error(&expect("{}"));
    assert!(e.starts_with("bad.yaml:8:") && e.contains("is `{starts-with: text}`"), "{e}");
    let e = error(&expect("[hi]"));
    assert!(e.starts_with("bad.yaml:8:") && e.contains("a text, or `{starts-with: text}`"), "{e}");
}

/// `reencrypt` reads with a stolen state: its device must exist and be compromised somewhere in
/// the timeline (a rule has no time of its own; before the theft the stanza passes).
#[test]
fn a_reencryption_needs_a_stolen_recipient() {
    let head = "name: x\nseed: 1\nservers: [a.example]\naccounts:\n  alice@a.example: {devices: {phone: omemo}}\n  bob@a.example: {devices: {laptop: omemo, phone: omemo}}\n";
    let attacker = "attacker:\n  position: server a.example\n  rules:\n    - {match: {hop: s2c}, do: {reencrypt: {stolen: bob/laptop, body: hi}}}\n";
    let e = error(&format!("{head}{attacker}"));
    assert_eq!(
        e,
        "bad.yaml:10:7: at `attacker.rules[0].do.reencrypt.stolen`: needs a `compromise` of bob/laptop in the timeline"
    );
    let e = error(&format!("{head}{}", attacker.replace("bob/laptop", "bob/tablet")));
    assert!(
        e.starts_with(
            "bad.yaml:10:7: at `attacker.rules[0].do.reencrypt.stolen`: unknown device `bob/tablet`"
        ),
        "{e}"
    );
    let e = error(&format!("{head}{}", attacker.replace(", body: hi", "")));
    assert!(e.starts_with("bad.yaml:10:") && e.contains("body"), "{e}");
    // A theft at any time will do: the rule waits for it.
    let theft = "timeline:\n  - {at: 5s, device: bob/laptop, compromise: full-state}\n";
    assert!(parse("good.yaml", &format!("{head}{attacker}{theft}")).is_ok());
}

/// `republish` serves one account's recorded items as another's: two accounts of the scenario,
/// not the same one, from a server position.
#[test]
fn a_republication_names_two_accounts_and_needs_a_server() {
    let rule = |position: &str, republish: &str| {
        format!(
            "{GOOD_HEAD}transport: plain\nattacker:\n  position: {position}\n  rules:\n    - {{do: {{republish: {republish}}}}}\n"
        )
    };
    let server = "server a.example";
    for (position, republish, at, message) in [
        (
            server,
            "{of: carol@a.example, as: bob@a.example}",
            "`attacker.rules[0].do.republish.of`",
            "unknown account `carol@a.example`",
        ),
        (
            server,
            "{of: alice@a.example, as: alice@a.example}",
            "`attacker.rules[0].do.republish.as`",
            "changes nothing",
        ),
        (
            "network alice/phone <-> a.example",
            "{of: alice@a.example, as: bob@a.example}",
            "`attacker.rules[0].do.republish`",
            "only a server position serves PEP items",
        ),
    ] {
        let e = error(&rule(position, republish));
        assert!(e.starts_with(&format!("bad.yaml:11:7: at {at}: ")) && e.contains(message), "{e}");
    }
    let e = error(&rule(server, "{of: alice@a.example, to: bob@a.example}"));
    assert!(e.starts_with("bad.yaml:11:") && e.contains("unknown field `to`"), "{e}");
    assert!(parse("ok.yaml", &rule(server, "{of: alice@a.example, as: bob@a.example}")).is_ok());
    assert!(parse("ok.yaml", &rule("everywhere", "{of: alice@a.example, as: bob@a.example}")).is_ok());
}

/// `set` on an element inside the stanza takes a local name or a path of them.
#[test]
fn set_on_an_element_takes_a_name_or_a_path() {
    let rule = |element: &str| {
        format!(
            "{GOOD_HEAD}attacker:\n  position: server a.example\n  rules:\n    - {{do: {{set: {{element: {element:?}, attribute: jid, value: x}}}}}}\n"
        )
    };
    for bad in ["", "keys/", "/keys", "a//b"] {
        let e = error(&rule(bad));
        assert!(
            e.starts_with("bad.yaml:10:7: at `attacker.rules[0].do.set.element`: an element's local name"),
            "{bad:?}: {e}"
        );
    }
    for ok in ["keys", "header/keys"] {
        assert!(parse("ok.yaml", &rule(ok)).is_ok(), "{ok}");
    }
}

/// `quirks:` names faults its protocol declares, once each, on a device our engine runs; each
/// refusal points at the quirk with its path. The command line cannot move a quirked device to
/// another implementation either.
#[test]
fn a_device_names_quirks_its_protocol_declares() {
    let head = "name: x\nseed: 1\nservers: [a.example]\naccounts:\n  alice@a.example: {devices: {phone: plain}}\n  bob@a.example:\n    devices:\n      laptop: DEVICE\n";
    let ok = parse(
        "ok.yaml",
        &head.replace("DEVICE", "{protocol: omemo-legacy, quirks: [iv-16, tag-in-payload]}"),
    )
    .unwrap();
    let bob = ok.devices.iter().find(|d| d.short == "bob/laptop").unwrap();
    assert_eq!(bob.quirks.iter().map(String::as_str).collect::<Vec<_>>(), ["iv-16", "tag-in-payload"]);
    for (device, want) in [
        (
            "{protocol: omemo-legacy, quirks: [iv-12]}",
            "bad.yaml:8:49: at `accounts.bob@a.example.devices.laptop.quirks[0]`: unknown quirk `iv-12` (quirks of omemo-legacy: iv-16, tag-in-payload, no-fallback-body, key-transport-first, unpublished-bundle)",
        ),
        (
            "{protocol: omemo, quirks: [iv-16]}",
            "bad.yaml:8:42: at `accounts.bob@a.example.devices.laptop.quirks[0]`: unknown quirk `iv-16` (quirks of omemo: key-transport-first, unpublished-bundle, also-legacy)",
        ),
        (
            "{protocol: plain, quirks: [iv-16]}",
            "bad.yaml:8:42: at `accounts.bob@a.example.devices.laptop.quirks[0]`: plain declares no quirks",
        ),
        (
            "{protocol: omemo-legacy, quirks: [iv-16, iv-16]}",
            "bad.yaml:8:56: at `accounts.bob@a.example.devices.laptop.quirks[1]`: quirk `iv-16` named twice",
        ),
        (
            "{protocol: omemo-legacy, implementation: python-omemo, quirks: [iv-16]}",
            "bad.yaml:8:79: at `accounts.bob@a.example.devices.laptop.quirks[0]`: quirks are our engine's: a device run by `python-omemo` cannot have them",
        ),
    ] {
        assert_eq!(error(&head.replace("DEVICE", device)), want, "{device}");
    }
    let mut scenario = ok;
    assert_eq!(
        scenario.use_implementation_named("bob", "python-omemo").unwrap_err(),
        "bob/laptop has quirks (iv-16, tag-in-payload): they are our engine's, `python-omemo` cannot run it"
    );
    assert_eq!(scenario.use_implementation_named("bob", "jabberwock"), Ok(1));
}
