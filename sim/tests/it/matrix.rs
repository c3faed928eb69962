//! The protocol × property table, computed from runs of the property templates; reviewed as a
//! snapshot so a changed verdict shows in the diff.

#[test]
fn protocol_property_matrix() {
    let first = jabberwock_sim::properties::matrix().unwrap();
    let second = jabberwock_sim::properties::matrix().unwrap();
    assert_eq!(first, second, "verdicts are deterministic");
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| insta::assert_snapshot!("matrix", jabberwock_sim::properties::render(&first)));
    // The control protocol must fail every security property it is measured on: a suite in
    // which `plain` passes confidentiality measures nothing.
    assert!(!first["confidentiality"][&jabberwock_e2e::Protocol::Plain].holds);
}
