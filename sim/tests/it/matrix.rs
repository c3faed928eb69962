//! The protocol × property report, computed from runs of the property templates, and XEP-0210's
//! requirements answered from it. The markdown is committed in `reports/matrix.md` and
//! `reports/requirements.md` and reviewed in pull requests: this test fails when it
//! is stale (`JABBERWOCK_UPDATE_REPORTS=1 cargo test` or `jabberwock matrix` rewrites it).

use std::path::PathBuf;

use jabberwock_e2e::Protocol;
use jabberwock_sim::report;

#[test]
fn protocol_property_matrix() {
    // Once on every core, once on one thread: the verdicts and every transcript must not
    // depend on how many runs share the process.
    let first = report::run(report::default_jobs());
    let second = report::run(1);
    for errors in [first.errors(), second.errors()] {
        let errors: Vec<String> = errors.iter().map(|c| format!("{}: {}", c.anchor(), c.reason())).collect();
        assert!(errors.is_empty(), "every cell has a verdict: {errors:#?}");
    }
    for (a, b) in first.cells.iter().zip(&second.cells) {
        assert_eq!(a.verdict(), b.verdict(), "{}: verdicts are deterministic", a.anchor());
        assert_eq!(
            a.outcome().map(|o| o.render()),
            b.outcome().map(|o| o.render()),
            "{}: runs are deterministic",
            a.anchor()
        );
    }
    assert_eq!(first.cells.len(), second.cells.len());
    // Every reason a device logged is declared for its protocol.
    let undeclared: Vec<String> = first
        .cells
        .iter()
        .filter_map(|c| c.outcome().map(|o| crate::reasons::undeclared_in(o, |_| Some(c.protocol))))
        .flatten()
        .collect();
    assert!(undeclared.is_empty(), "{}", undeclared.join("\n"));
    assert_eq!(first.cells.len(), jabberwock_sim::properties::PROPERTIES.len() * Protocol::ALL.len());

    // The control protocol must fail every security property it is measured on: a suite in
    // which `plain` passes confidentiality measures nothing.
    let plain = first.cell("confidentiality", "plain".parse::<Protocol>().unwrap()).unwrap();
    assert!(plain.verdict().is_some_and(|v| v.tested && !v.holds));

    // The page: every cell links to its scenario, transcript and diagram, all inside it.
    let html = first.html("../scenarios/properties");
    for c in &first.cells {
        let a = c.anchor();
        for id in [a.clone(), format!("{a}-scenario"), format!("{a}-transcript"), format!("{a}-diagram")] {
            assert!(html.contains(&format!("id=\"{id}\"")), "{id} is in the page");
            assert!(html.contains(&format!("href=\"#{id}\"")), "{id} is linked");
        }
    }
    assert_eq!(html.matches("<svg ").count(), first.cells.len(), "one diagram per cell");

    check_committed("matrix.md", &first.markdown());
    let requirements = jabberwock_sim::requirements::Requirements::new(&first);
    check_committed("requirements.md", &requirements.markdown());
    // The requirements page links every measured cell to its run in the matrix page, and ends
    // with the answer: a line per protocol.
    let page = requirements.html("matrix.html");
    let answer = page.split("<h2>The answer</h2>").nth(1).unwrap_or_default();
    for p in Protocol::ALL {
        assert!(answer.contains(&format!("<tr><th>{}</th>", p.name())), "{p} has its line in the answer");
    }
    for r in jabberwock_sim::requirements::REQUIREMENTS {
        for p in Protocol::ALL {
            if let Some(id) = r.answer(&first, *p).decided_by.first() {
                let anchor = format!("{id}--{}", p.name());
                assert!(page.contains(&format!("href=\"matrix.html#{anchor}\"")), "{anchor} is linked");
                assert!(html.contains(&format!("id=\"{anchor}\"")), "{anchor} is in the matrix page");
            }
        }
    }
}

/// Fails when `reports/{name}` differs from `rendered` (rewrites it under
/// `JABBERWOCK_UPDATE_REPORTS`).
fn check_committed(name: &str, rendered: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../reports").join(name);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != rendered {
        if std::env::var_os("JABBERWOCK_UPDATE_REPORTS").is_some() {
            std::fs::write(&path, rendered).unwrap();
        } else {
            let line = committed.lines().zip(rendered.lines()).position(|(a, b)| a != b).unwrap_or(0) + 1;
            panic!(
                "reports/{name} is stale (first difference at line {line}); rewrite it with \
                 `cargo run -p jabberwock-tools -- matrix` or JABBERWOCK_UPDATE_REPORTS=1 cargo test, \
                 and review the diff"
            );
        }
    }
}
