//! `jabberwock sweep-total`: add up the `--record` files of a sweep run in chunks.
//!
//! A sweep of every scenario × 1,000 seeds takes hours on a small machine, so it is run in
//! chunks (`sweep --from N --seeds M --keep-going --record chunk-N.json`), each its own process.
//! This checks that the chunks make one sweep — the same scenario files, the same options and
//! commit, each record consistent with itself, seed ranges that do not overlap — and prints the
//! whole as markdown: the counts, the seeds not covered, every divergence and error with the
//! command that replays it, and the failures grouped by scenario.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;

use crate::sweep::plural_u64;

/// One problem of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The scenario file, as the sweep was given it.
    pub file: String,
    /// The seed.
    pub seed: u64,
    /// `divergence`, `failure` or `error`.
    pub kind: String,
    /// The one-line reason.
    pub reason: String,
    /// The command that replays it.
    pub replay: String,
}

/// One chunk's `--record` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// The scenario files swept, in sweep order.
    pub scenarios: Vec<String>,
    /// The seeds `from..to`.
    pub from: u64,
    /// One past the last seed.
    pub to: u64,
    /// `--keep-going`.
    pub keep_going: bool,
    /// `--divergence-only`.
    pub divergence_only: bool,
    /// Whether the chunk stopped at a problem before its end.
    pub stopped: bool,
    /// Seed runs reported on.
    pub seed_runs: u64,
    /// Its problems.
    pub problems: Vec<Problem>,
    /// The commit it ran on, if known.
    pub git_commit: Option<String>,
    /// Its wall time.
    pub elapsed_seconds: f64,
}

fn get<'a>(v: &'a Value, path: &str) -> Result<&'a Value, String> {
    path.split('.').try_fold(v, |v, key| v.get(key).ok_or_else(|| format!("`{path}` is missing")))
}

fn whole(v: &Value, path: &str) -> Result<u64, String> {
    get(v, path)?.as_u64().ok_or_else(|| format!("`{path}` is not a whole number"))
}

fn flag(v: &Value, path: &str) -> Result<bool, String> {
    get(v, path)?.as_bool().ok_or_else(|| format!("`{path}` is not true or false"))
}

fn text(v: &Value, path: &str) -> Result<String, String> {
    get(v, path)?.as_str().map(str::to_owned).ok_or_else(|| format!("`{path}` is not a string"))
}

impl Record {
    /// Reads a record from the JSON `sweep --record` wrote, checking that its counts agree with
    /// its problems and its seed range.
    pub fn parse(path: &Path, json: &str) -> Result<Record, String> {
        let at = |e: String| format!("{}: {e}", path.display());
        let v: Value = serde_json::from_str(json).map_err(|e| at(e.to_string()))?;
        let scenarios = get(&v, "scenarios")
            .map_err(at)?
            .as_array()
            .ok_or_else(|| at("`scenarios` is not a list".to_owned()))?
            .iter()
            .map(|s| {
                s.as_str().map(str::to_owned).ok_or_else(|| at("`scenarios` has a non-string".to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let problems = get(&v, "problems")
            .map_err(at)?
            .as_array()
            .ok_or_else(|| at("`problems` is not a list".to_owned()))?
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let field = |r: Result<String, String>| r.map_err(|e| at(format!("problem {i}: {e}")));
                let kind = field(text(p, "kind"))?;
                if !["divergence", "failure", "error"].contains(&kind.as_str()) {
                    return Err(at(format!("problem {i}: unknown kind `{kind}`")));
                }
                Ok(Problem {
                    file: field(text(p, "file"))?,
                    seed: whole(p, "seed").map_err(|e| at(format!("problem {i}: {e}")))?,
                    kind,
                    reason: field(text(p, "reason"))?,
                    replay: field(text(p, "replay"))?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let git_commit = match get(&v, "git_commit").map_err(at)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            _ => return Err(at("`git_commit` is neither a string nor null".to_owned())),
        };
        let record = Record {
            path: path.to_owned(),
            scenarios,
            from: whole(&v, "seeds.from").map_err(at)?,
            to: whole(&v, "seeds.to").map_err(at)?,
            keep_going: flag(&v, "keep_going").map_err(at)?,
            divergence_only: flag(&v, "divergence_only").map_err(at)?,
            stopped: flag(&v, "stopped").map_err(at)?,
            seed_runs: whole(&v, "seed_runs").map_err(at)?,
            problems,
            git_commit,
            elapsed_seconds: get(&v, "elapsed_seconds")
                .map_err(at)?
                .as_f64()
                .ok_or_else(|| at("`elapsed_seconds` is not a number".to_owned()))?,
        };
        if record.to <= record.from {
            return Err(at(format!("seeds {}..{} are no seeds", record.from, record.to)));
        }
        let planned = (record.to - record.from).checked_mul(record.scenarios.len() as u64);
        if planned != Some(whole(&v, "planned_seed_runs").map_err(at)?) {
            return Err(at("`planned_seed_runs` is not scenarios × seeds".to_owned()));
        }
        if !record.stopped && Some(record.seed_runs) != planned {
            return Err(at("`seed_runs` is not scenarios × seeds, yet the chunk did not stop".to_owned()));
        }
        if planned.is_none_or(|p| record.seed_runs > p) {
            return Err(at("`seed_runs` is more than scenarios × seeds".to_owned()));
        }
        if whole(&v, "simulations").map_err(at)? != record.seed_runs.saturating_mul(2) {
            return Err(at("`simulations` is not twice `seed_runs`".to_owned()));
        }
        for (key, kind) in [("divergences", "divergence"), ("errors", "error"), ("failures", "failure")] {
            if whole(&v, key).map_err(at)? != record.count(kind) as u64 {
                return Err(at(format!("`{key}` does not match the {kind} problems listed")));
            }
        }
        if let Some(p) = record
            .problems
            .iter()
            .find(|p| !(record.from..record.to).contains(&p.seed) || !record.scenarios.contains(&p.file))
        {
            return Err(at(format!(
                "a problem ({} seed {}) is outside the chunk's files and seeds",
                p.file, p.seed
            )));
        }
        let mut listed = BTreeSet::new();
        if let Some(p) = record.problems.iter().find(|p| !listed.insert((&p.file, p.seed))) {
            return Err(at(format!("{} seed {} is listed twice", p.file, p.seed)));
        }
        // A sweep stops only at a problem that counts, and never with `--keep-going`.
        let stops = |p: &Problem| p.kind != "failure" || !record.divergence_only;
        if record.stopped && (record.keep_going || !record.problems.iter().any(stops)) {
            return Err(at(
                "`stopped`, yet with --keep-going or without a problem that stops a sweep".to_owned()
            ));
        }
        Ok(record)
    }

    fn count(&self, kind: &str) -> usize {
        self.problems.iter().filter(|p| p.kind == kind).count()
    }
}

/// The records added up.
#[derive(Debug)]
pub struct Total {
    records: Vec<Record>,
    /// The seeds the sweep was to cover.
    range: Range<u64>,
    /// Seed ranges in `range` that no record covers.
    gaps: Vec<(u64, u64)>,
    /// Seed runs reported on, over all records.
    seed_runs: u64,
}

/// Checks that `records` are chunks of one sweep over `range` (default: from the lowest seed
/// recorded to the highest) and adds them up; an error names the records that do not fit
/// (different files, options or commit, overlapping seeds, seeds outside `range`).
pub fn total(mut records: Vec<Record>, range: Option<Range<u64>>) -> Result<Total, String> {
    records.sort_by_key(|r| (r.from, r.to));
    let (Some(first), Some(last_to)) = (records.first(), records.iter().map(|r| r.to).max()) else {
        return Err("no records".to_owned());
    };
    for r in &records[1..] {
        let differs =
            |what: &str| format!("{} and {}: {what} differ", first.path.display(), r.path.display());
        if r.scenarios != first.scenarios {
            let extra = r.scenarios.iter().find(|s| !first.scenarios.contains(s));
            let missing = first.scenarios.iter().find(|s| !r.scenarios.contains(s));
            let detail = match (extra, missing) {
                (Some(s), _) => format!(" (only the second has {s})"),
                (None, Some(s)) => format!(" (only the first has {s})"),
                (None, None) => " (in order or repeats)".to_owned(),
            };
            return Err(differs(&format!("the scenario files{detail}")));
        }
        if r.git_commit != first.git_commit {
            return Err(differs("the commits"));
        }
        if (r.keep_going, r.divergence_only) != (first.keep_going, first.divergence_only) {
            return Err(differs("the options (--keep-going, --divergence-only)"));
        }
    }
    let range = range.unwrap_or(first.from..last_to);
    if let Some(r) = records.iter().find(|r| r.from < range.start || r.to > range.end) {
        return Err(format!(
            "{} (seeds {}..{}) is outside the seeds {}..{}",
            r.path.display(),
            r.from,
            r.to,
            range.start,
            range.end
        ));
    }
    let mut gaps = Vec::new();
    if range.start < first.from {
        gaps.push((range.start, first.from));
    }
    for pair in records.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.from < a.to {
            return Err(format!(
                "{} (seeds {}..{}) and {} (seeds {}..{}) overlap: the shared seeds would count twice",
                a.path.display(),
                a.from,
                a.to,
                b.path.display(),
                b.from,
                b.to
            ));
        }
        if b.from > a.to {
            gaps.push((a.to, b.from));
        }
    }
    if last_to < range.end {
        gaps.push((last_to, range.end));
    }
    let seed_runs = records
        .iter()
        .try_fold(0u64, |sum, r| sum.checked_add(r.seed_runs))
        .ok_or_else(|| "the records add up to more seed runs than can be counted".to_owned())?;
    Ok(Total { records, range, gaps, seed_runs })
}

/// `text` as a markdown code span, so nothing in it is markup (XML in a reason, `*` or `_` in
/// a file name): the fence is longer than any run of backticks inside.
fn code(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') { " " } else { "" };
    format!("{fence}{pad}{text}{pad}{fence}")
}

/// A code span in a table cell: GitHub splits cells at `|` even inside code spans.
fn cell(text: &str) -> String {
    code(text).replace('|', "\\|")
}

impl Total {
    fn problems(&self) -> impl Iterator<Item = &Problem> {
        self.records.iter().flat_map(|r| &r.problems)
    }

    fn count(&self, kind: &str) -> usize {
        self.records.iter().map(|r| r.count(kind)).sum()
    }

    /// Seeds covered by a record.
    fn seeds(&self) -> u64 {
        self.records.iter().map(|r| r.to - r.from).sum()
    }

    fn stopped(&self) -> Vec<&Record> {
        self.records.iter().filter(|r| r.stopped).collect()
    }

    fn divergence_only(&self) -> bool {
        self.records.first().is_some_and(|r| r.divergence_only)
    }

    /// 0 when every seed of the range was swept and nothing that counts was found (divergences
    /// and errors; failures too unless `--divergence-only`), 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        let failures_count = !self.divergence_only() && self.count("failure") > 0;
        if self.gaps.is_empty()
            && self.stopped().is_empty()
            && self.count("divergence") == 0
            && self.count("error") == 0
            && !failures_count
        {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    /// The whole sweep as markdown.
    pub fn render(&self) -> String {
        let mut out = String::from("# Seed sweep\n\n");
        let Some(first) = self.records.first() else { return out };
        let files = first.scenarios.len() as u64;
        let (d, e, f) = (self.count("divergence"), self.count("error"), self.count("failure"));
        let commit = match first.git_commit.as_deref() {
            Some(c) => c.to_owned(),
            None => "unknown (not run in a git checkout: nothing shows the records ran on the same code)"
                .to_owned(),
        };
        let mut options = vec!["sweep"];
        if first.keep_going {
            options.push("--keep-going");
        }
        if first.divergence_only {
            options.push("--divergence-only");
        }
        let _ = writeln!(out, "- commit: {commit}");
        let _ = writeln!(
            out,
            "- {} record{} of `{}`",
            self.records.len(),
            plural_u64(self.records.len() as u64),
            options.join(" ")
        );
        let _ = writeln!(
            out,
            "- {files} scenario{} × {} seed{} ({}..{}{}) = {} seed runs, {} simulations \
             (each seed run twice and compared)",
            plural_u64(files),
            self.seeds(),
            plural_u64(self.seeds()),
            self.range.start,
            self.range.end,
            if self.gaps.is_empty() { "" } else { ", with gaps" },
            self.seed_runs,
            self.seed_runs.saturating_mul(2),
        );
        let _ = writeln!(
            out,
            "- **{d} divergence{}, {e} error{}**, {f} failure{}",
            plural_u64(d as u64),
            plural_u64(e as u64),
            plural_u64(f as u64)
        );
        let secs: f64 = self.records.iter().map(|r| r.elapsed_seconds).sum();
        let _ = writeln!(out, "- wall time {secs:.0} s ({:.2} h), the records' times added", secs / 3600.0);
        if !self.gaps.is_empty() || !self.stopped().is_empty() {
            out.push_str("\n## Not swept\n\n");
            for (a, b) in &self.gaps {
                let _ = writeln!(out, "- seeds {a}..{b}: no record");
            }
            for r in self.stopped() {
                let _ = writeln!(
                    out,
                    "- {}: stopped at its first problem after {} of {} seed runs",
                    code(&r.path.display().to_string()),
                    r.seed_runs,
                    (r.to - r.from).saturating_mul(files)
                );
            }
        }
        out.push_str("\n## Divergences and errors\n\n");
        let mut serious: Vec<&Problem> = self.problems().filter(|p| p.kind != "failure").collect();
        serious.sort_by(|a, b| (&a.file, a.seed).cmp(&(&b.file, b.seed)));
        if serious.is_empty() {
            out.push_str("None.\n");
        }
        for p in serious {
            let _ = writeln!(
                out,
                "- {} {} seed {}: {}\n  replay: {}",
                p.kind,
                code(&p.file),
                p.seed,
                code(&p.reason),
                code(&p.replay)
            );
        }
        out.push_str("\n## Failures by scenario\n\n");
        let mut by_file: BTreeMap<&str, Vec<&Problem>> = BTreeMap::new();
        for p in self.problems().filter(|p| p.kind == "failure") {
            by_file.entry(&p.file).or_default().push(p);
        }
        if by_file.is_empty() {
            out.push_str("None.\n");
            return out;
        }
        out.push_str(
            "An `expect:` check failed while both runs agreed. Scenarios written for the seed in \
             their file tell that seed's story; another schedule may legitimately break them. \
             Replay one with `jabberwock run FILE --seed S`.\n\n\
             | scenario | failing seeds | first failing seeds | most frequent reason |\n\
             |---|--:|---|---|\n",
        );
        for (file, problems) in by_file {
            let mut seeds: Vec<u64> = problems.iter().map(|p| p.seed).collect();
            seeds.sort_unstable();
            let shown: Vec<String> = seeds.iter().take(5).map(u64::to_string).collect();
            let more = if seeds.len() > 5 { ", …" } else { "" };
            let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
            for p in &problems {
                *reasons.entry(&p.reason).or_default() += 1;
            }
            // The most frequent; ties go to the first in byte order, so the report is stable.
            let (reason, n) =
                reasons.iter().fold(("", 0), |best, (r, n)| if *n > best.1 { (*r, *n) } else { best });
            let _ = writeln!(
                out,
                "| {} | {} of {} | {}{more} | {} ({n}×) |",
                cell(file),
                seeds.len(),
                self.seeds(),
                shown.join(", "),
                cell(reason)
            );
        }
        out
    }
}

/// `FROM..TO`, a non-empty seed range.
pub fn parse_range(text: &str) -> Result<Range<u64>, String> {
    let bad = || format!("{text:?} is not a seed range FROM..TO (such as 0..1000)");
    let (from, to) = text.split_once("..").ok_or_else(bad)?;
    let (from, to): (u64, u64) = (from.parse().map_err(|_| bad())?, to.parse().map_err(|_| bad())?);
    if to <= from {
        return Err(format!("{text:?} has no seeds"));
    }
    Ok(from..to)
}

/// The `sweep-total` subcommand: exit 0 when the records make a complete, clean sweep, 1 when
/// seeds are missing or a problem that counts was found, 2 when a record cannot be read or the
/// records are not one sweep.
pub fn command(paths: Vec<PathBuf>, seeds: Option<String>) -> ExitCode {
    let range = match seeds.as_deref().map(parse_range).transpose() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: --seeds: {e}");
            return ExitCode::from(2);
        }
    };
    let mut records = Vec::new();
    for path in paths {
        let read = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|json| Record::parse(&path, &json));
        match read {
            Ok(r) => records.push(r),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    match total(records, range) {
        Ok(total) => {
            print!("{}", total.render());
            total.exit_code()
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde_json::json;

    use super::*;

    const FILES: [&str; 2] = ["scenarios/a.yaml", "scenarios/b.yaml"];

    fn record(from: u64, to: u64, problems: &[(&str, u64, &str)]) -> Value {
        let list: Vec<Value> = problems
            .iter()
            .map(|(file, seed, kind)| {
                json!({"file": file, "seed": seed, "kind": kind, "reason": format!("{kind} | why"),
                       "replay": format!("jabberwock run {file} --seed {seed}")})
            })
            .collect();
        let count = |k: &str| problems.iter().filter(|p| p.2 == k).count();
        let runs = (to - from) * FILES.len() as u64;
        json!({
            "scenarios": FILES, "seeds": {"from": from, "to": to}, "keep_going": true,
            "divergence_only": true, "stopped": false, "planned_seed_runs": runs, "seed_runs": runs,
            "simulations": runs * 2, "divergences": count("divergence"), "errors": count("error"),
            "failures": count("failure"), "problems": list, "git_commit": "abc123", "elapsed_seconds": 1.5,
        })
    }

    fn parse(name: &str, v: &Value) -> Result<Record, String> {
        Record::parse(Path::new(name), &v.to_string())
    }

    fn records(values: &[Value]) -> Vec<Record> {
        values.iter().enumerate().map(|(i, v)| parse(&format!("chunk-{i}.json"), v).unwrap()).collect()
    }

    #[test]
    fn contiguous_chunks_add_up_in_any_order() {
        let a = record(0, 10, &[("scenarios/b.yaml", 3, "failure"), ("scenarios/b.yaml", 7, "failure")]);
        let b = record(10, 20, &[("scenarios/b.yaml", 12, "failure")]);
        let t = total(records(&[b, a]), None).unwrap();
        let text = t.render();
        assert!(text.contains("- 2 scenarios × 20 seeds (0..20) = 40 seed runs, 80 simulations"), "{text}");
        assert!(text.contains("- **0 divergences, 0 errors**, 3 failures\n"), "{text}");
        assert!(text.contains("- wall time 3 s (0.00 h)"), "{text}");
        assert!(
            text.contains("| `scenarios/b.yaml` | 3 of 20 | 3, 7, 12 | `failure \\| why` (3×) |"),
            "{text}"
        );
        assert!(text.contains("## Divergences and errors\n\nNone.\n"), "{text}");
        assert_eq!(t.exit_code(), ExitCode::SUCCESS);
    }

    #[test]
    fn a_divergence_is_listed_with_its_replay_and_fails() {
        let t = total(records(&[record(0, 5, &[("scenarios/a.yaml", 4, "divergence")])]), None).unwrap();
        let text = t.render();
        assert!(
            text.contains(
                "- divergence `scenarios/a.yaml` seed 4: `divergence | why`\n  replay: `jabberwock run scenarios/a.yaml --seed 4`"
            ),
            "{text}"
        );
        assert_eq!(t.exit_code(), ExitCode::FAILURE);
    }

    #[test]
    fn a_gap_is_reported_and_fails() {
        let t = total(records(&[record(0, 10, &[]), record(20, 30, &[])]), None).unwrap();
        let text = t.render();
        assert!(text.contains("2 scenarios × 20 seeds (0..30, with gaps)"), "{text}");
        assert!(text.contains("- seeds 10..20: no record"), "{text}");
        assert_eq!(t.exit_code(), ExitCode::FAILURE);
    }

    #[test]
    fn overlapping_chunks_are_refused() {
        let e = total(records(&[record(0, 10, &[]), record(5, 15, &[])]), None).unwrap_err();
        assert!(e.contains("overlap"), "{e}");
    }

    #[test]
    fn chunks_of_different_sweeps_are_refused() {
        let mut other = record(10, 20, &[]);
        other["git_commit"] = json!("def456");
        let e = total(records(&[record(0, 10, &[]), other]), None).unwrap_err();
        assert!(e.contains("the commits differ"), "{e}");
        let mut other = record(10, 20, &[]);
        other["scenarios"] = json!(["scenarios/a.yaml", "scenarios/c.yaml"]);
        other["planned_seed_runs"] = json!(20);
        let e = total(records(&[record(0, 10, &[]), other]), None).unwrap_err();
        assert!(e.contains("only the second has scenarios/c.yaml"), "{e}");
        let mut other = record(10, 20, &[]);
        other["divergence_only"] = json!(false);
        let e = total(records(&[record(0, 10, &[]), other]), None).unwrap_err();
        assert!(e.contains("the options"), "{e}");
    }

    #[test]
    fn a_record_whose_counts_disagree_with_itself_is_refused() {
        let mut v = record(0, 10, &[("scenarios/a.yaml", 1, "failure")]);
        v["failures"] = json!(0);
        assert!(parse("x.json", &v).unwrap_err().contains("`failures` does not match"));
        let mut v = record(0, 10, &[]);
        v["seed_runs"] = json!(3);
        assert!(parse("x.json", &v).unwrap_err().contains("`seed_runs`"));
        let v = record(0, 10, &[("scenarios/a.yaml", 11, "error")]);
        assert!(parse("x.json", &v).unwrap_err().contains("outside the chunk"));
        let mut v = record(0, 10, &[]);
        v["seeds"] = json!({"from": 0});
        assert_eq!(parse("x.json", &v).unwrap_err(), "x.json: `seeds.to` is missing");
        assert!(Record::parse(Path::new("y.json"), "{").unwrap_err().starts_with("y.json: "));
    }

    #[test]
    fn a_stopped_chunk_is_not_a_full_sweep() {
        let mut v = record(0, 10, &[("scenarios/a.yaml", 2, "error")]);
        v["stopped"] = json!(true);
        v["keep_going"] = json!(false);
        v["seed_runs"] = json!(5);
        v["simulations"] = json!(10);
        let t = total(vec![parse("stopped.json", &v).unwrap()], None).unwrap();
        assert!(
            t.render().contains("- `stopped.json`: stopped at its first problem after 5 of 20 seed runs")
        );
        assert_eq!(t.exit_code(), ExitCode::FAILURE);
    }

    #[test]
    fn the_expected_range_finds_a_missing_first_or_last_chunk() {
        let t = total(records(&[record(10, 20, &[]), record(20, 30, &[])]), Some(0..40)).unwrap();
        let text = t.render();
        assert!(text.contains("2 scenarios × 20 seeds (0..40, with gaps)"), "{text}");
        assert!(text.contains("- seeds 0..10: no record\n- seeds 30..40: no record\n"), "{text}");
        assert_eq!(t.exit_code(), ExitCode::FAILURE);
        let whole = total(records(&[record(10, 20, &[]), record(0, 10, &[])]), Some(0..20)).unwrap();
        assert_eq!(whole.exit_code(), ExitCode::SUCCESS);
        let e = total(records(&[record(0, 10, &[])]), Some(0..5)).unwrap_err();
        assert!(e.contains("is outside the seeds 0..5"), "{e}");
        assert_eq!(parse_range("0..1000"), Ok(0..1000));
        assert!(parse_range("5..5").unwrap_err().contains("no seeds"));
        assert!(parse_range("0-1000").is_err() && parse_range("a..b").is_err());
    }

    #[test]
    fn nested_and_identical_chunks_overlap() {
        for (a, b) in [((0, 20), (5, 10)), ((0, 10), (0, 10)), ((5, 10), (0, 20))] {
            let e = total(records(&[record(a.0, a.1, &[]), record(b.0, b.1, &[])]), None).unwrap_err();
            assert!(e.contains("overlap"), "{a:?} {b:?}: {e}");
        }
    }

    #[test]
    fn failures_count_without_divergence_only() {
        let mut v = record(0, 10, &[("scenarios/a.yaml", 3, "failure")]);
        v["divergence_only"] = json!(false);
        let t = total(vec![parse("x.json", &v).unwrap()], None).unwrap();
        assert_eq!(t.exit_code(), ExitCode::FAILURE);
        let t = total(records(&[record(0, 10, &[("scenarios/a.yaml", 3, "failure")])]), None).unwrap();
        assert_eq!(t.exit_code(), ExitCode::SUCCESS);
    }

    #[test]
    fn reasons_and_files_are_code_not_markup() {
        assert_eq!(code("<message from='a'>*x*</message>"), "`<message from='a'>*x*</message>`");
        assert_eq!(code("a `b` c"), "``a `b` c``");
        assert_eq!(code("`x``"), "``` `x`` ```");
        assert_eq!(cell("a | b"), "`a \\| b`");
    }

    #[test]
    fn a_record_that_cannot_be_a_sweep_is_refused() {
        let v = record(0, 10, &[("scenarios/a.yaml", 1, "failure"), ("scenarios/a.yaml", 1, "failure")]);
        assert!(parse("x.json", &v).unwrap_err().contains("listed twice"));
        let mut v = record(0, 10, &[("scenarios/a.yaml", 2, "error")]);
        v["stopped"] = json!(true);
        v["seed_runs"] = json!(5);
        v["simulations"] = json!(10);
        assert!(parse("x.json", &v).unwrap_err().contains("--keep-going"), "stopped with --keep-going");
        let mut v = record(0, 10, &[("scenarios/a.yaml", 2, "failure")]);
        v["stopped"] = json!(true);
        v["keep_going"] = json!(false);
        v["seed_runs"] = json!(5);
        v["simulations"] = json!(10);
        assert!(
            parse("x.json", &v).unwrap_err().contains("without a problem"),
            "stopped at a failure let through"
        );
        let mut v = record(0, 10, &[]);
        v["stopped"] = json!(true);
        v["keep_going"] = json!(false);
        v["seed_runs"] = json!(u64::MAX / 2);
        v["simulations"] = json!(u64::MAX - 1);
        assert!(parse("x.json", &v).unwrap_err().contains("more than scenarios × seeds"));
        let mut v = record(0, 10, &[]);
        v["seeds"] = json!({"from": 4, "to": 4});
        v["planned_seed_runs"] = json!(0);
        assert!(parse("x.json", &v).unwrap_err().contains("no seeds"));
    }
}
