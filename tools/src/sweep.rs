//! `jabberwock sweep`: run every scenario under many seeds, each seed twice, on every core.
//!
//! The two runs of one (scenario, seed) pair must agree byte for byte — the rendered outcome
//! and the JSON Lines transcript; when they do not, the simulation is nondeterministic (a
//! *divergence*: a bug). Separately, a pair whose `expect:` checks fail is a *failure*: many
//! scenarios are written for the seed in their file, and another schedule may legitimately
//! break them, so failures are listed apart from divergences. A run the runner refuses (a
//! [`jabberwock_sim::RunError`]) or that panics is an *error*.
//!
//! The seeds are `from..from + seeds` (`--from` defaults to 0); the seed written in a file is
//! not used, so every file gets the same seeds. By default the sweep stops at the first
//! problem: no new pair is started, the pairs under way finish, and the report names the first
//! problem in sweep order (files in path order, then seeds in order) — every pair before it
//! ran clean, so the report does not depend on the number of threads. `--keep-going` runs
//! every pair and lists every problem, sorted by file and seed.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use jabberwock_sim::{Outcome, Scenario, load, run_with_seed};

/// A scenario to sweep, with its path as the user gave it (for the replay command).
#[derive(Debug)]
pub struct Target {
    /// The file, as found from the command-line path.
    pub path: PathBuf,
    /// The parsed scenario.
    pub scenario: Scenario,
}

/// What one run produced, as far as a sweep compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// [`Outcome::render`]: header, transcript, outcome and expectations.
    pub rendered: String,
    /// The JSON Lines transcript, every byte of every stanza.
    pub jsonl: String,
    /// The first failed expectation, if any ([`Outcome::failure`]).
    pub failure: Option<String>,
}

impl Run {
    /// The comparable parts of an outcome.
    pub fn of(outcome: &Outcome) -> Run {
        let failure = if outcome.passed() {
            None
        } else {
            Some(outcome.failure().unwrap_or_else(|| "an expectation failed".to_owned()))
        };
        Run { rendered: outcome.render(), jsonl: outcome.transcript.jsonl_for(&outcome.name), failure }
    }
}

/// The real runner: one simulation of `scenario` under `seed`.
pub fn simulate(scenario: &Scenario, seed: u64) -> Result<Run, String> {
    run_with_seed(scenario, seed).map(|o| Run::of(&o)).map_err(|e| e.to_string())
}

/// What is wrong with a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The two runs differ: nondeterminism.
    Divergence,
    /// The runs agree and an expectation failed.
    Failure,
    /// The runs agree and neither could be made (or both panicked alike).
    Error,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Divergence => "DIVERGENCE",
            Kind::Failure => "FAILURE",
            Kind::Error => "ERROR",
        }
    }
}

/// One problem found by the sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The scenario file.
    pub file: PathBuf,
    /// The seed.
    pub seed: u64,
    /// What kind of problem.
    pub kind: Kind,
    /// One line: the failed expectation, the error, or the first differing line of each run.
    pub reason: String,
}

impl Problem {
    /// The command that replays the pair.
    pub fn replay(&self) -> String {
        format!("jabberwock run {} --seed {}", shell_word(&self.file.display().to_string()), self.seed)
    }
}

/// The result of a sweep.
#[derive(Debug)]
pub struct Summary {
    /// Scenario files swept.
    pub scenarios: usize,
    /// The seeds tried on each.
    pub seeds: Range<u64>,
    /// Pairs planned (files × seeds).
    pub total: usize,
    /// Pairs reported on: all of them, or when the sweep stopped, those up to the first
    /// problem (independent of the number of threads).
    pub swept: usize,
    /// Pairs actually run, including those that were under way when the sweep stopped
    /// (a timing figure: it depends on the threads).
    pub executed: usize,
    /// Whether the sweep stopped at a problem before the end.
    pub stopped: bool,
    /// The problems, sorted by file then seed.
    pub problems: Vec<Problem>,
}

impl Summary {
    /// How many problems of a kind.
    pub fn count(&self, kind: Kind) -> usize {
        self.problems.iter().filter(|p| p.kind == kind).count()
    }

    /// 0 when clean, 1 when any problem was found.
    pub fn exit_code(&self) -> ExitCode {
        if self.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
    }

    /// The report without timing figures: one block per problem, then the counts.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for p in &self.problems {
            out.push_str(&format!("{:<10}  {}  seed {}\n", p.kind.label(), p.file.display(), p.seed));
            out.push_str(&format!("  {}\n", p.reason));
            out.push_str(&format!("  replay: {}\n", p.replay()));
        }
        if !self.problems.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!(
            "swept {} of {} runs: {} scenario{} × {} seed{} ({}..{}), each run simulated twice\n",
            self.swept,
            self.total,
            self.scenarios,
            plural(self.scenarios),
            self.seeds.end - self.seeds.start,
            plural_u64(self.seeds.end - self.seeds.start),
            self.seeds.start,
            self.seeds.end,
        ));
        if self.stopped {
            out.push_str("stopped at the first problem (--keep-going runs every seed)\n");
        }
        let (d, f, e) = (self.count(Kind::Divergence), self.count(Kind::Failure), self.count(Kind::Error));
        out.push_str(&format!(
            "{d} divergence{}, {f} failure{}, {e} error{}\n",
            plural(d),
            plural(f),
            plural(e)
        ));
        out
    }

    /// The timing line: wall time and runs (pairs) per second.
    pub fn timing(&self, elapsed: Duration, jobs: usize) -> String {
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 { self.executed as f64 / secs } else { 0.0 };
        format!(
            "wall time {secs:.1}s, {rate:.2} runs/s ({} runs on {jobs} thread{})\n",
            self.executed,
            plural(jobs)
        )
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn plural_u64(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The text of a panic payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// One run, a panic turned into an error.
fn guarded<R>(runner: &R, scenario: &Scenario, seed: u64) -> Result<Run, String>
where
    R: Fn(&Scenario, u64) -> Result<Run, String>,
{
    catch_unwind(AssertUnwindSafe(|| runner(scenario, seed)))
        .unwrap_or_else(|payload| Err(format!("panicked: {}", panic_text(&*payload))))
}

/// At most this many characters of a line in a reason.
const LINE_CHARS: usize = 160;

fn shorten(line: &str) -> String {
    let mut out: String = line.chars().take(LINE_CHARS).collect();
    if line.chars().nth(LINE_CHARS).is_some() {
        out.push('…');
    }
    out
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The first line where `a` and `b` differ, shown for both.
fn first_difference(what: &str, a: &str, b: &str) -> String {
    let (mut la, mut lb) = (a.lines(), b.lines());
    let mut n = 1usize;
    loop {
        match (la.next(), lb.next()) {
            (None, None) => return format!("{what} differs only in line endings"),
            (x, y) if x == y => n += 1,
            (x, y) => {
                let show =
                    |l: Option<&str>| l.map_or_else(|| "(end)".to_owned(), |l| format!("{:?}", shorten(l)));
                return format!("{what} line {n}: run 1 {} | run 2 {}", show(x), show(y));
            }
        }
    }
}

/// Compares the two runs of a pair.
fn judge(first: Result<Run, String>, second: Result<Run, String>) -> Option<(Kind, String)> {
    match (first, second) {
        (Ok(a), Ok(b)) => {
            if a.rendered != b.rendered {
                Some((Kind::Divergence, first_difference("rendered outcome", &a.rendered, &b.rendered)))
            } else if a.jsonl != b.jsonl {
                Some((Kind::Divergence, first_difference("JSONL transcript", &a.jsonl, &b.jsonl)))
            } else if a.failure != b.failure {
                Some((
                    Kind::Divergence,
                    format!(
                        "verdicts differ: run 1 {} | run 2 {}",
                        a.failure.as_deref().map_or("passed".to_owned(), one_line),
                        b.failure.as_deref().map_or("passed".to_owned(), one_line)
                    ),
                ))
            } else {
                a.failure.map(|f| (Kind::Failure, one_line(&f)))
            }
        }
        (Err(a), Err(b)) if a == b => Some((Kind::Error, one_line(&a))),
        (a, b) => {
            let show = |r: &Result<Run, String>| match r {
                Ok(_) => "completed".to_owned(),
                Err(e) => format!("error: {}", one_line(e)),
            };
            Some((Kind::Divergence, format!("run 1 {} | run 2 {}", show(&a), show(&b))))
        }
    }
}

/// Runs every (target, seed) pair twice on up to `jobs` threads and compares the runs.
///
/// Pairs are handed out in order (target by target, seeds in order) from a shared counter.
/// Unless `keep_going`, the first problem stops the hand-out: the pairs under way finish, and
/// only the first problem in that order is reported, so the result does not depend on `jobs`.
/// Every run calls `runner` afresh: each real run builds its own turmoil simulation, whose
/// state is local to the thread running it.
pub fn sweep<R>(
    targets: &[Target],
    seeds: Range<u64>,
    jobs: usize,
    keep_going: bool,
    bar: &ProgressBar,
    runner: R,
) -> Summary
where
    R: Fn(&Scenario, u64) -> Result<Run, String> + Sync,
{
    let per_file = usize::try_from(seeds.end.saturating_sub(seeds.start)).unwrap_or(usize::MAX);
    let total = targets.len().saturating_mul(per_file);
    let next = AtomicUsize::new(0);
    let first_problem = AtomicUsize::new(usize::MAX);
    let executed = AtomicUsize::new(0);
    let counts = [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)];
    let found: Mutex<Vec<(usize, Problem)>> = Mutex::new(Vec::new());
    bar.set_length(total as u64);

    let worker = || {
        loop {
            if !keep_going && first_problem.load(Ordering::SeqCst) != usize::MAX {
                break;
            }
            let i = next.fetch_add(1, Ordering::SeqCst);
            if i >= total {
                break;
            }
            let Some(target) = targets.get(i / per_file) else { break };
            let seed = seeds.start + (i % per_file) as u64;
            let first = guarded(&runner, &target.scenario, seed);
            let second = guarded(&runner, &target.scenario, seed);
            executed.fetch_add(1, Ordering::SeqCst);
            if let Some((kind, reason)) = judge(first, second) {
                counts[kind as usize].fetch_add(1, Ordering::SeqCst);
                first_problem.fetch_min(i, Ordering::SeqCst);
                found
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((i, Problem { file: target.path.clone(), seed, kind, reason }));
                let [d, f, e] = &counts;
                bar.set_message(format!(
                    "{} divergences, {} failures, {} errors",
                    d.load(Ordering::SeqCst),
                    f.load(Ordering::SeqCst),
                    e.load(Ordering::SeqCst)
                ));
            }
            bar.inc(1);
        }
    };
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, total.max(1)) {
            s.spawn(worker);
        }
    });
    bar.finish_and_clear();

    let mut problems = found.into_inner().unwrap_or_else(PoisonError::into_inner);
    let first = first_problem.into_inner();
    let stopped = !keep_going && first != usize::MAX;
    if stopped {
        problems.retain(|(i, _)| *i == first);
    }
    let mut problems: Vec<Problem> = problems.into_iter().map(|(_, p)| p).collect();
    problems.sort_by(|a, b| (&a.file, a.seed).cmp(&(&b.file, b.seed)));
    Summary {
        scenarios: targets.len(),
        seeds,
        total,
        swept: if stopped { first + 1 } else { total },
        executed: executed.into_inner(),
        stopped,
        problems,
    }
}

/// Quotes a word for a POSIX shell when it needs it.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | ':' | ',' | '@' | '=')
        });
    if plain { word.to_owned() } else { format!("'{}'", word.replace('\'', r"'\''")) }
}

/// Finds and parses the scenarios under `path` (a file, or a directory walked like `run`).
fn targets(path: &Path) -> Result<Vec<Target>, Vec<String>> {
    let files = if path.is_dir() {
        let mut files = Vec::new();
        super::scenario_files(path, &mut files).map_err(|e| vec![format!("{}: {e}", path.display())])?;
        if files.is_empty() {
            return Err(vec![format!("no scenario files under {}", path.display())]);
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut targets = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    for file in files {
        match load(&file) {
            Ok(scenario) => targets.push(Target { path: file, scenario }),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() { Ok(targets) } else { Err(errors) }
}

/// The `sweep` subcommand: exit 0 when clean, 1 on any problem, 2 on bad input.
pub fn command(path: &Path, seeds: u64, from: u64, jobs: Option<usize>, keep_going: bool) -> ExitCode {
    let Some(end) = from.checked_add(seeds) else {
        eprintln!("error: --from {from} plus --seeds {seeds} is past the last seed ({})", u64::MAX);
        return ExitCode::from(2);
    };
    let targets = match targets(path) {
        Ok(t) => t,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return ExitCode::from(2);
        }
    };
    if usize::try_from(seeds).ok().and_then(|s| s.checked_mul(targets.len())).is_none() {
        eprintln!("error: {} scenarios × {seeds} seeds is too many runs", targets.len());
        return ExitCode::from(2);
    }
    let jobs = jobs.unwrap_or_else(jabberwock_sim::report::default_jobs).max(1);
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} runs, {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("0 divergences, 0 failures, 0 errors");
    // The wall clock only times the sweep for the summary; no simulation reads it.
    #[expect(clippy::disallowed_methods, reason = "the summary reports wall time and runs per second")]
    let started = Instant::now();
    let summary = sweep(&targets, from..end, jobs, keep_going, &bar, simulate);
    let elapsed = started.elapsed();
    print!("{}", summary.render());
    print!("{}", summary.timing(elapsed, jobs.min(summary.total.max(1))));
    summary.exit_code()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicU64;

    use super::*;

    fn scenario(name: &str) -> Scenario {
        let yaml = format!(
            "name: {name}\nseed: 1\nservers: [a.example]\naccounts:\n  alice@a.example: {{devices: {{phone: plain}}}}\ntimeline:\n  - {{at: 1s, wait: settle}}\n"
        );
        match jabberwock_sim::parse(&format!("{name}.yaml"), &yaml) {
            Ok(s) => s,
            Err(e) => unreachable!("the test scenario parses: {e}"),
        }
    }

    fn targets(names: &[&str]) -> Vec<Target> {
        names
            .iter()
            .map(|n| Target { path: PathBuf::from(format!("scenarios/{n}.yaml")), scenario: scenario(n) })
            .collect()
    }

    fn run(text: String, failure: Option<String>) -> Result<Run, String> {
        Ok(Run { rendered: format!("header\n{text}\ntrailer\n"), jsonl: "{}\n".to_owned(), failure })
    }

    #[test]
    fn a_nondeterministic_pair_is_a_divergence_with_its_seed_and_replay() {
        let t = targets(&["a", "b", "c"]);
        let calls = AtomicU64::new(0);
        // Scenario `b` under seed 7 prints a different line each time it runs.
        let runner = |s: &Scenario, seed: u64| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if s.name == "b" && seed == 7 {
                run(format!("step {n}"), None)
            } else {
                run("step".to_owned(), None)
            }
        };
        let summary = sweep(&t, 5..10, 3, true, &ProgressBar::hidden(), runner);
        assert_eq!(calls.load(Ordering::SeqCst), 30);
        assert_eq!((summary.total, summary.swept, summary.executed, summary.stopped), (15, 15, 15, false));
        assert_eq!(summary.problems.len(), 1, "{:?}", summary.problems);
        let p = &summary.problems[0];
        assert_eq!((p.file.as_path(), p.seed, p.kind), (Path::new("scenarios/b.yaml"), 7, Kind::Divergence));
        assert!(p.reason.starts_with("rendered outcome line 2: run 1 \"step "), "{}", p.reason);
        assert!(p.reason.contains(" | run 2 \"step "), "{}", p.reason);
        assert_eq!(p.replay(), "jabberwock run scenarios/b.yaml --seed 7");
        let text = summary.render();
        assert!(text.contains("DIVERGENCE  scenarios/b.yaml  seed 7\n"), "{text}");
        assert!(text.contains("  replay: jabberwock run scenarios/b.yaml --seed 7\n"), "{text}");
        assert!(text.contains("1 divergence, 0 failures, 0 errors\n"), "{text}");
        assert_eq!(summary.exit_code(), ExitCode::FAILURE);
    }

    #[test]
    fn stop_at_first_reports_the_first_problem_in_order_and_stops_early() {
        let t = targets(&["a", "b", "c", "d"]);
        // Every seed from 3 on fails its expectations.
        for jobs in [1, 4] {
            let calls = AtomicU64::new(0);
            let runner = |_: &Scenario, seed: u64| {
                calls.fetch_add(1, Ordering::SeqCst);
                if seed == 3 {
                    // The first problem is slow: other threads find later ones meanwhile.
                    std::thread::sleep(Duration::from_millis(30));
                }
                run(
                    "same".to_owned(),
                    (seed >= 3).then(|| format!("bob received [hi]: got []\nat seed {seed}")),
                )
            };
            let summary = sweep(&t, 0..50, jobs, false, &ProgressBar::hidden(), runner);
            assert!(summary.stopped);
            assert_eq!(summary.swept, 4, "jobs {jobs}");
            assert_eq!(
                summary.problems,
                vec![Problem {
                    file: PathBuf::from("scenarios/a.yaml"),
                    seed: 3,
                    kind: Kind::Failure,
                    reason: "bob received [hi]: got [] at seed 3".to_owned()
                }],
                "jobs {jobs}"
            );
            // No new pair starts after the problem: at most one more per other thread.
            let runs = calls.load(Ordering::SeqCst);
            assert!(runs <= 2 * (4 + jobs as u64 - 1), "jobs {jobs}: {runs} runs");
            assert_eq!(summary.executed as u64 * 2, runs);
            if jobs == 1 {
                assert_eq!(runs, 8);
            }
            assert!(summary.render().contains("swept 4 of 200 runs: 4 scenarios × 50 seeds (0..50)"));
        }
    }

    #[test]
    fn keep_going_lists_every_problem_sorted_by_file_and_seed() {
        thread_local! {
            /// Runs made on this thread: the two runs of a pair are made back to back on one.
            static RUNS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        }
        let t = targets(&["z", "m", "a"]);
        let runner = |s: &Scenario, seed: u64| {
            let n = RUNS.get();
            RUNS.set(n + 1);
            match (s.name.as_str(), seed % 3) {
                ("z", 0) => Err("TLS certificates: bad".to_owned()),
                ("m", 1) => run("m".to_owned(), Some("alerts: none".to_owned())),
                // One run panics, the other does not.
                ("a", 2) if n.is_multiple_of(2) => std::panic::panic_any("boom"),
                ("a", 2) => run(format!("a {n}"), None),
                _ => run("fine".to_owned(), None),
            }
        };
        let summary = sweep(&t, 10..16, 4, true, &ProgressBar::hidden(), runner);
        let got: Vec<(String, u64, Kind)> =
            summary.problems.iter().map(|p| (p.file.display().to_string(), p.seed, p.kind)).collect();
        let want: Vec<(String, u64, Kind)> = vec![
            ("scenarios/a.yaml".into(), 11, Kind::Divergence),
            ("scenarios/a.yaml".into(), 14, Kind::Divergence),
            ("scenarios/m.yaml".into(), 10, Kind::Failure),
            ("scenarios/m.yaml".into(), 13, Kind::Failure),
            ("scenarios/z.yaml".into(), 12, Kind::Error),
            ("scenarios/z.yaml".into(), 15, Kind::Error),
        ];
        assert_eq!(got, want);
        let by_kind: BTreeMap<Kind, usize> = [Kind::Divergence, Kind::Failure, Kind::Error]
            .into_iter()
            .map(|k| (k, summary.count(k)))
            .collect();
        assert_eq!(by_kind.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        assert!(summary.problems[0].reason.contains("panicked: boom"), "{}", summary.problems[0].reason);
        assert_eq!(summary.problems[4].reason, "TLS certificates: bad");
    }

    #[test]
    fn a_difference_only_in_the_jsonl_is_a_divergence() {
        let a = Run { rendered: "x\n".into(), jsonl: "{\"t\":1}\n{\"t\":2}\n".into(), failure: None };
        let b = Run { jsonl: "{\"t\":1}\n{\"t\":3}\n".into(), ..a.clone() };
        assert_eq!(
            judge(Ok(a.clone()), Ok(b)),
            Some((
                Kind::Divergence,
                "JSONL transcript line 2: run 1 \"{\\\"t\\\":2}\" | run 2 \"{\\\"t\\\":3}\"".to_owned()
            ))
        );
        let shorter = Run { rendered: String::new(), ..a.clone() };
        assert_eq!(
            judge(Ok(a.clone()), Ok(shorter)).map(|(_, r)| r),
            Some("rendered outcome line 1: run 1 \"x\" | run 2 (end)".to_owned())
        );
        assert_eq!(judge(Ok(a.clone()), Ok(a)), None);
    }

    #[test]
    fn replay_quotes_paths_a_shell_would_split() {
        let p = Problem {
            file: PathBuf::from("my scenarios/it's.yaml"),
            seed: 4,
            kind: Kind::Failure,
            reason: String::new(),
        };
        assert_eq!(p.replay(), r"jabberwock run 'my scenarios/it'\''s.yaml' --seed 4");
    }

    /// Each real run builds its own turmoil simulation on the thread that runs it: runs on
    /// parallel threads give the same bytes as one run alone.
    #[test]
    fn real_scenario_sweeps_clean_and_parallel_runs_are_independent() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let file = root.join("scenarios/basics/one-to-one.yaml");
        let scenario = match load(&file) {
            Ok(s) => s,
            Err(e) => unreachable!("the committed scenario parses: {e}"),
        };
        let alone = simulate(&scenario, 1);
        assert!(alone.as_ref().is_ok_and(|r| r.failure.is_none() && r.rendered.contains("hello bob")));
        let parallel: Vec<Result<Run, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3).map(|_| s.spawn(|| simulate(&scenario, 1))).collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("panicked".to_owned()))).collect()
        });
        for run in parallel {
            assert_eq!(run, alone);
        }

        let t = vec![Target { path: PathBuf::from("scenarios/basics/one-to-one.yaml"), scenario }];
        let summary = sweep(&t, 0..3, 3, true, &ProgressBar::hidden(), simulate);
        assert_eq!((summary.total, summary.swept, summary.executed), (3, 3, 3));
        assert_eq!(summary.count(Kind::Divergence), 0, "{:?}", summary.problems);
        assert_eq!(summary.count(Kind::Error), 0, "{:?}", summary.problems);
    }
}
