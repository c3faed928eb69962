//! `jabberwock sweep` end to end: what goes to standard output (the same bytes whatever the
//! threads and the clock), the exit status, `--divergence-only` and `--record`; and
//! `jabberwock sweep-total`, which adds up the records of a sweep run in chunks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn jabberwock(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_jabberwock")).current_dir(root()).args(args).output().unwrap();
    assert!(out.status.code().is_some(), "exited on a signal: {out:?}");
    out
}

fn sweep(args: &[&str]) -> Output {
    jabberwock(&[&["sweep"], args].concat())
}

/// A directory of its own under the system's temporary directory, removed when the test
/// ends, passed or failed.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// scenarios/basics/lossy-link.yaml tells seed 7's story: seeds 5..9 are three failures and a
/// pass. Under `--divergence-only` they are listed, the sweep goes on and exits 0.
#[test]
fn divergence_only_lists_the_failures_of_a_one_seed_scenario_and_exits_0() {
    let scratch = Scratch::new("jabberwock-sweep-cli");
    let dir = &scratch.0;
    let record = dir.join("record.json");
    let args = ["scenarios/basics/lossy-link.yaml", "--seeds", "4", "--from", "5", "--divergence-only"];
    let mut with_record = args.to_vec();
    let record_arg = record.display().to_string();
    with_record.extend(["--jobs", "2", "--record", &record_arg]);
    let two = sweep(&with_record);
    assert_eq!(two.status.code(), Some(0), "{}", text(&two.stderr));
    let stdout = text(&two.stdout);
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAILURE ")).collect();
    assert_eq!(
        failures,
        [
            "FAILURE     scenarios/basics/lossy-link.yaml  seed 5",
            "FAILURE     scenarios/basics/lossy-link.yaml  seed 6",
            "FAILURE     scenarios/basics/lossy-link.yaml  seed 8",
        ]
    );
    assert!(
        stdout.contains("  replay: jabberwock run scenarios/basics/lossy-link.yaml --seed 8\n"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with(
            "1 scenario × 4 seeds (5..9) = 4 seed runs, 8 simulations, 0 divergences, 0 errors, 3 failures\n\
             failures do not fail the sweep (--divergence-only)\n"
        ),
        "{stdout}"
    );
    // Timing is on standard error only.
    assert!(!stdout.contains("wall time") && !stdout.contains("runs/s"), "{stdout}");
    assert!(text(&two.stderr).contains("wall time "), "{}", text(&two.stderr));

    // One thread: the same bytes on standard output.
    let mut one_thread = args.to_vec();
    one_thread.extend(["--jobs", "1"]);
    let one = sweep(&one_thread);
    assert_eq!(one.status.code(), Some(0));
    assert_eq!(text(&one.stdout), stdout);

    let json: Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(json["scenarios"], serde_json::json!(["scenarios/basics/lossy-link.yaml"]));
    assert_eq!(json["seeds"], serde_json::json!({"from": 5, "to": 9}));
    for (field, want) in
        [("seed_runs", 4), ("simulations", 8), ("divergences", 0), ("errors", 0), ("failures", 3)]
    {
        assert_eq!(json[field], want, "{field}");
    }
    let seeds: Vec<&Value> = json["problems"].as_array().unwrap().iter().map(|p| &p["seed"]).collect();
    assert_eq!(seeds, [5, 6, 8]);
    assert!(json["git_commit"].is_null() || json["git_commit"].as_str().is_some_and(|c| c.len() >= 40));
    assert!(json["elapsed_seconds"].as_f64().is_some_and(|s| s > 0.0));
}

/// Without the flag the first failure stops the sweep and fails it.
#[test]
fn a_failure_stops_the_sweep_and_exits_1_by_default() {
    let out = sweep(&["scenarios/basics/lossy-link.yaml", "--seeds", "4", "--from", "5"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("FAILURE     scenarios/basics/lossy-link.yaml  seed 5\n"), "{stdout}");
    assert!(stdout.contains("\nstopped at the first problem after 1 seed run, 2 simulations: "), "{stdout}");
    assert_eq!(stdout.matches("FAILURE ").count(), 1, "{stdout}");
}

/// A record file that cannot be written is refused before the sweep runs.
#[test]
fn an_unwritable_record_is_bad_input() {
    let out = sweep(&[
        "scenarios/basics/lossy-link.yaml",
        "--seeds",
        "1",
        "--record",
        "/nonexistent-directory/record.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("/nonexistent-directory/record.json"), "{}", text(&out.stderr));
}

/// Two chunks of one sweep add up to the sweep; a gap fails it, an overlap is refused.
#[test]
fn sweep_total_adds_up_chunk_records() {
    let scratch = Scratch::new("jabberwock-sweep-total");
    let dir = &scratch.0;
    let chunk = |from: &str, seeds: &str| {
        let record = dir.join(format!("chunk-{from}-{seeds}.json")).display().to_string();
        let args = ["scenarios/basics/lossy-link.yaml", "--seeds", seeds, "--from", from];
        let out = sweep(&[&args[..], &["--keep-going", "--divergence-only", "--record", &record]].concat());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        record
    };
    let (a, b, c) = (chunk("5", "2"), chunk("7", "2"), chunk("8", "3"));

    let whole = jabberwock(&["sweep-total", &b, &a]);
    assert_eq!(whole.status.code(), Some(0), "{}", text(&whole.stderr));
    let report = text(&whole.stdout);
    assert!(
        report.contains(
            "- 1 scenario × 4 seeds (5..9) = 4 seed runs, 8 simulations (each seed run twice and compared)\n"
        ),
        "{report}"
    );
    assert!(report.contains("- **0 divergences, 0 errors**, 3 failures\n"), "{report}");
    assert!(report.contains("| `scenarios/basics/lossy-link.yaml` | 3 of 4 | 5, 6, 8 | "), "{report}");

    let gap = jabberwock(&["sweep-total", &a, &c]);
    assert_eq!(gap.status.code(), Some(1), "{}", text(&gap.stderr));
    assert!(text(&gap.stdout).contains("- seeds 7..8: no record\n"), "{}", text(&gap.stdout));

    // A missing last chunk shows only against the range the sweep was to cover.
    let tail = jabberwock(&["sweep-total", "--seeds", "5..11", &a, &b]);
    assert_eq!(tail.status.code(), Some(1), "{}", text(&tail.stderr));
    assert!(text(&tail.stdout).contains("- seeds 9..11: no record\n"), "{}", text(&tail.stdout));

    let overlap = jabberwock(&["sweep-total", &b, &c]);
    assert_eq!(overlap.status.code(), Some(2));
    assert!(overlap.stdout.is_empty());
    assert!(text(&overlap.stderr).contains("overlap"), "{}", text(&overlap.stderr));
}
