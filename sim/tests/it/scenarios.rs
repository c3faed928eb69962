//! Every scenario under scenarios/ is a test: it runs twice with the same seed and must give
//! the same transcript byte for byte, its expectations must hold, and its rendered outcome is
//! an insta snapshot under snapshots/ (reviewed with `cargo insta review`).

use jabberwock_sim::{load, run};

#[test]
fn scenarios() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| {
        insta::glob!("../../../scenarios", "**/*.yaml", |path| {
            let scenario = load(path).unwrap_or_else(|e| panic!("{e}"));
            let first = run(&scenario).unwrap_or_else(|e| panic!("{}: {e}", scenario.name));
            let second = run(&scenario).unwrap_or_else(|e| panic!("{}: {e}", scenario.name));
            let (a, b) = (first.render(), second.render());
            assert!(
                a == b,
                "{}: two runs with seed {} differ:\n{}",
                scenario.name,
                scenario.seed,
                first_difference(&a, &b)
            );
            assert_eq!(
                first.transcript.jsonl_for(&scenario.name),
                second.transcript.jsonl_for(&scenario.name)
            );
            let undeclared = crate::reasons::undeclared_in(&first, |jid| {
                scenario.devices.iter().find(|d| d.jid == *jid).map(|d| d.protocol)
            });
            assert!(undeclared.is_empty(), "{}", undeclared.join("\n"));
            insta::assert_snapshot!(a);
            assert!(first.passed(), "{}: {}", scenario.name, first.failure().unwrap_or_default());
        });
    });
}

fn first_difference(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}:\n  {x}\n  {y}", i + 1);
        }
    }
    format!("lengths differ: {} vs {} lines", a.lines().count(), b.lines().count())
}
