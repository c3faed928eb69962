//! Same seed, same bytes; another seed, another schedule.

use jabberwock_sim::{parse, run_with_seed};

const JITTERY: &str = r#"
name: jittery
seed: 1
servers: [a.example, b.example]
accounts:
  alice@a.example: {devices: {phone: plain}}
  bob@b.example: {devices: {laptop: plain, phone: plain}}
network:
  latency: 1ms..200ms
  links:
    - {between: [a.example, b.example], latency: 50ms..400ms}
timeline:
  - {at: 1s, device: alice/phone, send: {to: bob@b.example, body: one}}
  - {at: 1.01s, device: alice/phone, send: {to: bob@b.example, body: two}}
  - {at: 1.02s, device: bob/laptop, send: {to: alice@a.example, body: three}}
"#;

fn timestamps(render: &str) -> Vec<String> {
    render.lines().filter(|l| l.starts_with('[')).map(|l| l.chars().take(12).collect()).collect()
}

#[test]
fn same_seed_same_bytes() {
    let s = parse("jittery.yaml", JITTERY).unwrap();
    for seed in [1, 2, 99] {
        let a = run_with_seed(&s, seed).unwrap();
        let b = run_with_seed(&s, seed).unwrap();
        assert_eq!(a.render(), b.render(), "seed {seed}");
        assert_eq!(a.transcript.jsonl_for("x"), b.transcript.jsonl_for("x"), "seed {seed}");
    }
}

#[test]
fn another_seed_gives_another_schedule() {
    let s = parse("jittery.yaml", JITTERY).unwrap();
    let a = run_with_seed(&s, 1).unwrap();
    let b = run_with_seed(&s, 2).unwrap();
    assert_ne!(timestamps(&a.render()), timestamps(&b.render()), "random latency must depend on the seed");
    // Whatever the schedule, every message arrives: "one" and "two" on both of bob's devices,
    // "three" at alice and as a sent carbon on bob/phone.
    for o in [&a, &b] {
        let delivered: usize = o.devices.values().map(|d| d.received.len()).sum();
        assert_eq!(delivered, 2 * 2 + 1 + 1, "{}", o.render());
    }
}
