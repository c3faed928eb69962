//! Sequence diagrams of real attack runs: the attacker and what it did are in both
//! renderings, the SVG is well-formed XML, and a run draws the same bytes every time.

use std::path::PathBuf;

use jabberwock_e2e::Element;
use jabberwock_sim::diagram::{self, Options};
use jabberwock_sim::{Outcome, load, run_with_seed};

fn run(file: &str) -> Outcome {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
    let scenario = load(&path).unwrap();
    run_with_seed(&scenario, scenario.seed).unwrap()
}

/// The index of the lifeline whose header is `name`.
fn lifeline(mermaid: &str, name: &str) -> String {
    let line = mermaid.lines().find(|l| l.trim().starts_with("participant P") && l.ends_with(name)).unwrap();
    line.trim().split(' ').nth(1).unwrap().to_owned()
}

#[test]
fn a_modify_attack_shows_the_attacker_and_its_modified_delivery() {
    let outcome = run("scenarios/powers/modify.yaml");
    let options = Options::default();
    let m = diagram::mermaid(&outcome, &options);
    let attacker = lifeline(&m, " as ⚔ attacker (server a.example)");
    let bob = lifeline(&m, " as bob@a.example/laptop");
    let lines: Vec<&str> = m.lines().collect();
    let header = lines.iter().position(|l| l.contains(" as ⚔ attacker")).unwrap();
    assert_eq!(lines[header - 1].trim(), "box rgb(255,228,228) attacker", "{m}");
    // The replaced stanza comes from the attacker, inside a red block, and bob shows it.
    let delivery =
        format!("{attacker}->>{bob}: 1.001s ⚔ delivers message phone-m4 [#34;pay 9000 EUR to mallory#34;]");
    let at = lines.iter().position(|l| l.trim() == delivery).unwrap_or_else(|| panic!("{delivery}\n{m}"));
    let opened = lines[..at].iter().rposition(|l| l.trim().starts_with("rect ")).unwrap();
    assert!(lines[opened..at].iter().all(|l| l.trim() != "end"), "{m}");
    assert!(
        m.contains(&format!("Note over {bob}: 1.003s ⇐ plaintext #34;pay 9000 EUR to mallory#34;")),
        "{m}"
    );
    // What it read is a note over it.
    assert!(m.contains(&format!("Note over {attacker}: 1.001s reads #34;pay 90 EUR to carol#34;")), "{m}");

    let svg = diagram::svg(&outcome, &options);
    let root: Element = svg.parse().unwrap();
    assert_eq!(root.name(), "svg");
    assert!(svg.contains("⚔ attacker (server"), "attacker lifeline");
    assert!(svg.contains("⚔ delivers message phone-m4"), "the modified delivery");
    assert!(svg.contains(r#"marker-end="url(#arrow-red)""#), "drawn as a red arrow");

    let again = run("scenarios/powers/modify.yaml");
    assert_eq!(m, diagram::mermaid(&again, &options), "same run, same Mermaid bytes");
    assert_eq!(svg, diagram::svg(&again, &options), "same run, same SVG bytes");
}

#[test]
fn a_tampered_omemo_message_shows_the_error_in_red() {
    let outcome = run("scenarios/omemo/tamper.yaml");
    let m = diagram::mermaid(&outcome, &Options::default());
    let bob = lifeline(&m, " as bob@b.example/laptop");
    let lines: Vec<&str> = m.lines().collect();
    let error = lines
        .iter()
        .position(|l| {
            l.trim().starts_with(&format!("Note over {bob}:")) && l.contains("✗ engine error bad-mac")
        })
        .unwrap_or_else(|| panic!("{m}"));
    let opened = lines[..error].iter().rposition(|l| l.trim() == "rect rgb(255,228,228)").unwrap();
    assert!(lines[opened..error].iter().all(|l| l.trim() != "end"), "inside a red block: {m}");
    assert!(m.contains("⚔ delivers message phone-m8 [OMEMO encrypted]"), "{m}");

    let svg = diagram::svg(&outcome, &Options::default());
    assert!(svg.parse::<Element>().is_ok());
    assert!(svg.contains("✗ engine error bad-mac"));
    assert!(svg.contains(r##"fill="#ffd6d6" stroke="#c00000""##), "an alarm note");

    // --all keeps every line and still parses.
    let all = diagram::svg(&outcome, &Options { all: true });
    assert!(all.parse::<Element>().is_ok());
    assert!(all.len() > svg.len());
}
