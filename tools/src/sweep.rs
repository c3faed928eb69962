//! `jabberwock sweep`: run every scenario under many seeds, each seed twice, on every core.
//!
//! The two runs of one (scenario, seed) pair — a *seed run* — must agree byte for byte: the
//! rendered outcome and the JSON Lines transcript; when they do not, the simulation is
//! nondeterministic (a *divergence*: a bug). Separately, a seed run whose `expect:` checks
//! fail is a *failure*: many scenarios are written for the seed in their file, and another
//! schedule may legitimately break them, so failures are listed apart from divergences. A run
//! the runner refuses (a [`jabberwock_sim::RunError`]) or that panics is an *error*.
//!
//! The two simulations of a seed run are independent jobs: with more than one thread they
//! always run on two different threads (each with its own history of earlier runs, and at
//! the same time as other runs), so state hidden in a thread-local, a global or a cache shows
//! up as a divergence. They are compared when both are done.
//!
//! The seeds are `from..from + seeds` (`--from` defaults to 0); the seed written in a file is
//! not used, so every file gets the same seeds. By default the sweep stops at the first
//! problem: no new seed run is started, those under way finish, and the report names the
//! first problem in sweep order (seeds in order, every file in path order for each) — every seed run
//! before it was checked, so the report does not depend on the number of threads.
//! `--keep-going` runs every seed and lists every problem, sorted by file and seed.
//! `--divergence-only` lists failures but neither stops at one nor fails the sweep for one:
//! only divergences and errors do.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::Write as _;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use jabberwock_sim::report::panic_text;
use jabberwock_sim::{Outcome, Scenario, load, run_with_seed};
use serde_json::{Value, json};

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

/// What is wrong with a seed run.
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

    /// The name in the `--record` file.
    fn key(self) -> &'static str {
        match self {
            Kind::Divergence => "divergence",
            Kind::Failure => "failure",
            Kind::Error => "error",
        }
    }

    /// Whether a problem of this kind stops the sweep (without `--keep-going`) and fails it.
    fn counts(self, divergence_only: bool) -> bool {
        !(divergence_only && self == Kind::Failure)
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
    /// The command that replays the seed run.
    pub fn replay(&self) -> String {
        format!("jabberwock run {} --seed {}", shell_word(&self.file.display().to_string()), self.seed)
    }
}

/// How to sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Threads to run on (at least one is used).
    pub jobs: usize,
    /// Run every seed instead of stopping at the first problem.
    pub keep_going: bool,
    /// Failures are listed but neither stop the sweep nor fail it.
    pub divergence_only: bool,
}

/// The result of a sweep.
#[derive(Debug)]
pub struct Summary {
    /// The scenario files swept, in sweep order.
    pub files: Vec<PathBuf>,
    /// The seeds tried on each.
    pub seeds: Range<u64>,
    /// Seed runs planned (files × seeds), two simulations each.
    pub total: usize,
    /// Seed runs reported on: all of them, or when the sweep stopped, those up to the first
    /// problem that stops it (independent of the number of threads).
    pub swept: usize,
    /// Seed runs actually made, including those under way when the sweep stopped (a timing
    /// figure: it depends on the threads).
    pub executed: usize,
    /// Whether every seed was to run whatever was found (`--keep-going`).
    pub keep_going: bool,
    /// Whether the sweep stopped at a problem before the end.
    pub stopped: bool,
    /// Whether failures were let through (`--divergence-only`).
    pub divergence_only: bool,
    /// The problems, sorted by file then seed.
    pub problems: Vec<Problem>,
}

impl Summary {
    /// How many problems of a kind.
    pub fn count(&self, kind: Kind) -> usize {
        self.problems.iter().filter(|p| p.kind == kind).count()
    }

    /// 0 when clean (or only failures, with `--divergence-only`), 1 on any other problem.
    pub fn exit_code(&self) -> ExitCode {
        if self.problems.iter().any(|p| p.kind.counts(self.divergence_only)) {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }

    /// The report without timing figures (the same bytes for the same scenarios and seeds):
    /// one block per problem, then the counts.
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
        let seeds = self.seeds.end - self.seeds.start;
        let plan = format!(
            "{} scenario{} × {seeds} seed{} ({}..{}) = {} seed run{}, {} simulations",
            self.files.len(),
            plural(self.files.len()),
            plural_u64(seeds),
            self.seeds.start,
            self.seeds.end,
            self.total,
            plural(self.total),
            self.total.saturating_mul(2),
        );
        let (d, e, f) = (self.count(Kind::Divergence), self.count(Kind::Error), self.count(Kind::Failure));
        let counts = format!("{d} divergence{}, {e} error{}, {f} failure{}", plural(d), plural(e), plural(f));
        if self.stopped {
            out.push_str(&format!("{plan} planned\n"));
            out.push_str(&format!(
                "stopped at the first problem after {} seed run{}, {} simulations: {counts} \
                 (--keep-going runs every seed)\n",
                self.swept,
                plural(self.swept),
                self.swept.saturating_mul(2)
            ));
        } else {
            out.push_str(&format!("{plan}, {counts}\n"));
        }
        if self.divergence_only && f > 0 {
            out.push_str("failures do not fail the sweep (--divergence-only)\n");
        }
        out
    }

    /// The timing line (for standard error): wall time and seed runs per second.
    pub fn timing(&self, elapsed: Duration, jobs: usize) -> String {
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 { self.executed as f64 / secs } else { 0.0 };
        format!(
            "wall time {secs:.1}s, {rate:.2} seed runs/s ({} seed run{} on {jobs} thread{})\n",
            self.executed,
            plural(self.executed),
            plural(jobs)
        )
    }

    /// The `--record` file: every field but `elapsed_seconds` is the same for the same
    /// scenarios, seeds, options and commit, so the records of a sweep run in chunks
    /// (`--from`) add up.
    pub fn record(&self, git_commit: Option<&str>, elapsed: Duration) -> Value {
        let problems: Vec<Value> = self
            .problems
            .iter()
            .map(|p| {
                json!({
                    "file": p.file.display().to_string(),
                    "seed": p.seed,
                    "kind": p.kind.key(),
                    "reason": p.reason,
                    "replay": p.replay(),
                })
            })
            .collect();
        json!({
            "scenarios": self.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "seeds": {"from": self.seeds.start, "to": self.seeds.end},
            "keep_going": self.keep_going,
            "divergence_only": self.divergence_only,
            "stopped": self.stopped,
            "planned_seed_runs": self.total,
            "seed_runs": self.swept,
            "simulations": self.swept.saturating_mul(2),
            "divergences": self.count(Kind::Divergence),
            "errors": self.count(Kind::Error),
            "failures": self.count(Kind::Failure),
            "problems": problems,
            "git_commit": git_commit,
            "elapsed_seconds": elapsed.as_secs_f64(),
        })
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub(crate) fn plural_u64(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
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

/// Compares the two runs of a seed run.
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

/// One simulation to make: copy 0 or 1 of a seed run.
#[derive(Debug, Clone, Copy)]
struct Job {
    /// The seed run, in sweep order.
    index: usize,
    /// Which of its two simulations.
    copy: usize,
}

/// At most this many second simulations of one thread wait for another thread to take them:
/// a thread that is that far ahead waits instead of starting a new seed run, so the results
/// waiting for their twin stay few.
const AHEAD: usize = 4;

/// A simulation that finished before its twin: which copy, and what it gave.
type Finished = (usize, Result<Run, String>);

/// Hands out simulations to the threads. A thread that starts a seed run makes its first
/// simulation and queues the second for another thread; queued simulations go before new
/// seed runs, oldest first. A thread never takes the twin of a simulation it made while
/// another thread is still working (only a single thread runs both).
#[derive(Debug)]
struct Scheduler {
    state: Mutex<Schedule>,
    changed: Condvar,
}

#[derive(Debug)]
struct Schedule {
    /// The next seed run to start.
    next: usize,
    /// Second simulations waiting for a thread: (seed run, thread that made the first).
    queued: VecDeque<(usize, usize)>,
    /// Threads still working.
    live: usize,
}

impl Scheduler {
    fn new(threads: usize) -> Scheduler {
        Scheduler {
            state: Mutex::new(Schedule { next: 0, queued: VecDeque::new(), live: threads }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Schedule> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next simulation for thread `me`, or `None` when it is done. No seed run at or past
    /// `limit()` is started.
    fn take(&self, me: usize, total: usize, limit: impl Fn() -> usize) -> Option<Job> {
        let mut s = self.lock();
        loop {
            let alone = s.live == 1;
            if let Some(at) = s.queued.iter().position(|&(_, first)| first != me || alone) {
                let (index, _) = s.queued.remove(at)?;
                // Its first simulation's thread may be waiting for nothing but this.
                self.changed.notify_all();
                return Some(Job { index, copy: 1 });
            }
            let ahead = s.queued.iter().filter(|&&(_, first)| first == me).count();
            if s.next < total && s.next < limit() && ahead < AHEAD {
                let index = s.next;
                s.next += 1;
                s.queued.push_back((index, me));
                self.changed.notify_all();
                return Some(Job { index, copy: 0 });
            }
            if s.queued.is_empty() && (s.next >= total || s.next >= limit()) {
                s.live -= 1;
                self.changed.notify_all();
                return None;
            }
            // Only this thread's own twins wait (as many as it may have), and another
            // thread works: it takes them when it is done with its simulation. A thread
            // leaves only when no seed run is left to start and no twin waits, after which
            // none is queued again: with two threads or more no thread is ever alone with
            // its own twins, so the two simulations of a seed run always run on two threads.
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Runs every (target, seed) seed run twice on up to `options.jobs` threads and compares the
/// two simulations of each.
///
/// Seed runs start in order (seed by seed, every target for each seed); their two simulations are
/// separate jobs, made on different threads when there are several. Unless `keep_going`, the
/// first problem that counts stops new seed runs from starting: those under way finish, and
/// only the problems up to the first that counts in that order are reported, so the result
/// does not depend on `jobs`. Every simulation calls `runner` afresh, and a panic in it is
/// caught and reported as an error of its seed run.
pub fn sweep<R>(
    targets: &[Target],
    seeds: Range<u64>,
    options: Options,
    bar: &ProgressBar,
    runner: R,
) -> Summary
where
    R: Fn(&Scenario, u64) -> Result<Run, String> + Sync,
{
    let Options { jobs, keep_going, divergence_only } = options;
    let per_file = usize::try_from(seeds.end.saturating_sub(seeds.start)).unwrap_or(usize::MAX);
    let total = targets.len().saturating_mul(per_file);
    let first_stop = AtomicUsize::new(usize::MAX);
    let executed = AtomicUsize::new(0);
    let counts = [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)];
    let found: Mutex<Vec<(usize, Problem)>> = Mutex::new(Vec::new());
    // The simulation of each seed run that finished first (its copy and result), until its
    // twin does.
    let waiting: Mutex<BTreeMap<usize, Finished>> = Mutex::new(BTreeMap::new());
    let threads = jobs.clamp(1, total.saturating_mul(2).max(1));
    let scheduler = Scheduler::new(threads);
    bar.set_length(total as u64);

    let limit = || if keep_going { usize::MAX } else { first_stop.load(Ordering::SeqCst) };
    let worker = |me: usize| {
        while let Some(job) = scheduler.take(me, total, limit) {
            // Seed by seed, every target for each: the RSA keys a seed's devices draw are
            // the same in every scenario that has them, and the engines' key memo
            // (`jabberwock_e2e::rsa_keygen`) then makes each once.
            let Some(target) = targets.get(job.index % targets.len().max(1)) else { break };
            let seed = seeds.start + (job.index / targets.len().max(1)) as u64;
            let result = guarded(&runner, &target.scenario, seed);
            let twin = {
                let mut w = waiting.lock().unwrap_or_else(PoisonError::into_inner);
                match w.remove(&job.index) {
                    Some(twin) => Some(twin),
                    None => {
                        w.insert(job.index, (job.copy, result.clone()));
                        None
                    }
                }
            };
            let Some((twin_copy, twin)) = twin else { continue };
            let (first, second) = if twin_copy == 0 { (twin, result) } else { (result, twin) };
            executed.fetch_add(1, Ordering::SeqCst);
            if let Some((kind, reason)) = judge(first, second) {
                counts[kind as usize].fetch_add(1, Ordering::SeqCst);
                if kind.counts(divergence_only) {
                    first_stop.fetch_min(job.index, Ordering::SeqCst);
                }
                found
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((job.index, Problem { file: target.path.clone(), seed, kind, reason }));
                let [d, f, e] = &counts;
                bar.set_message(format!(
                    "{} divergences, {} errors, {} failures",
                    d.load(Ordering::SeqCst),
                    e.load(Ordering::SeqCst),
                    f.load(Ordering::SeqCst)
                ));
            }
            bar.inc(1);
        }
    };
    std::thread::scope(|s| {
        for me in 0..threads {
            let worker = &worker;
            s.spawn(move || worker(me));
        }
    });
    bar.finish_and_clear();

    let first = first_stop.into_inner();
    let stopped = !keep_going && first != usize::MAX;
    let mut problems: Vec<(usize, Problem)> = found.into_inner().unwrap_or_else(PoisonError::into_inner);
    if stopped {
        // Every seed run before the first that stops was checked; those after it that were
        // under way depend on the threads.
        problems.retain(|(i, _)| *i <= first);
    }
    let mut problems: Vec<Problem> = problems.into_iter().map(|(_, p)| p).collect();
    problems.sort_by(|a, b| (&a.file, a.seed).cmp(&(&b.file, b.seed)));
    Summary {
        files: targets.iter().map(|t| t.path.clone()).collect(),
        seeds,
        total,
        swept: if stopped { first + 1 } else { total },
        executed: executed.into_inner(),
        keep_going,
        stopped,
        divergence_only,
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

/// The commit checked out where the sweep runs (`git rev-parse HEAD`), if git says.
fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let commit = text.trim();
    (out.status.success() && !commit.is_empty() && commit.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| commit.to_owned())
}

/// The `sweep` subcommand's arguments.
#[derive(Debug)]
pub struct Args {
    /// A scenario file or a directory of them.
    pub path: PathBuf,
    /// How many seeds.
    pub seeds: u64,
    /// The first seed.
    pub from: u64,
    /// Threads (default: one per core).
    pub jobs: Option<usize>,
    /// Run every seed and list every problem.
    pub keep_going: bool,
    /// Failures neither stop nor fail the sweep.
    pub divergence_only: bool,
    /// Where to write the machine-readable summary.
    pub record: Option<PathBuf>,
}

/// The `sweep` subcommand: the report on standard output (the same bytes for the same
/// input), timing on standard error. Exit 0 when clean, 1 on a problem that counts, 2 on bad
/// input or when the record cannot be written.
pub fn command(args: Args) -> ExitCode {
    let Args { path, seeds, from, jobs, keep_going, divergence_only, record } = args;
    let Some(end) = from.checked_add(seeds) else {
        eprintln!("error: --from {from} plus --seeds {seeds} is past the last seed ({})", u64::MAX);
        return ExitCode::from(2);
    };
    let targets = match targets(&path) {
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
    // Opened now, so a path that cannot be written fails before the sweep, not after it.
    let record = match record.map(|r| File::create(&r).map(|f| (r.clone(), f)).map_err(|e| (r, e))) {
        None => None,
        Some(Ok(file)) => Some(file),
        Some(Err((r, e))) => {
            eprintln!("error: {}: {e}", r.display());
            return ExitCode::from(2);
        }
    };
    let commit = record.as_ref().and_then(|_| git_commit());
    let jobs = jobs.unwrap_or_else(jabberwock_sim::report::default_jobs).max(1);
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} seed runs, {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("0 divergences, 0 errors, 0 failures");
    // The wall clock only times the sweep for standard error and the record; no simulation
    // reads it.
    #[expect(clippy::disallowed_methods, reason = "the timing line reports wall time and runs per second")]
    let started = Instant::now();
    let options = Options { jobs, keep_going, divergence_only };
    let summary = sweep(&targets, from..end, options, &bar, simulate);
    let elapsed = started.elapsed();
    print!("{}", summary.render());
    eprint!("{}", summary.timing(elapsed, jobs.min(summary.total.saturating_mul(2).max(1))));
    if let Some((file, mut f)) = record {
        let text = serde_json::to_string_pretty(&summary.record(commit.as_deref(), elapsed))
            .map_err(|e| e.to_string())
            .and_then(|json| f.write_all(format!("{json}\n").as_bytes()).map_err(|e| e.to_string()));
        if let Err(e) = text {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    }
    summary.exit_code()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
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

    fn options(jobs: usize, keep_going: bool, divergence_only: bool) -> Options {
        Options { jobs, keep_going, divergence_only }
    }

    #[test]
    fn a_nondeterministic_seed_is_a_divergence_with_its_seed_and_replay() {
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
        let summary = sweep(&t, 5..10, options(3, true, false), &ProgressBar::hidden(), runner);
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
        assert!(
            text.ends_with(
                "\n3 scenarios × 5 seeds (5..10) = 15 seed runs, 30 simulations, 1 divergence, 0 errors, \
                 0 failures\n"
            ),
            "{text}"
        );
        assert_eq!(summary.exit_code(), ExitCode::FAILURE);
    }

    /// The two simulations of a seed run are separate jobs: with two threads or more they run
    /// on two different threads, whatever their timing; with one, on that one.
    #[test]
    fn the_two_simulations_of_a_seed_run_on_different_threads() {
        let thread = || format!("{:?}", std::thread::current().id());
        let t = targets(&["a", "b"]);
        for jobs in [2, 3, 5] {
            let threads: Mutex<BTreeMap<(String, u64), Vec<String>>> = Mutex::new(BTreeMap::new());
            let runner = |s: &Scenario, seed: u64| {
                // Uneven durations, so that threads drift apart.
                if seed.is_multiple_of(5) {
                    std::thread::sleep(Duration::from_millis(3));
                }
                let mut t = threads.lock().unwrap_or_else(PoisonError::into_inner);
                t.entry((s.name.clone(), seed)).or_default().push(thread());
                run("same".to_owned(), None)
            };
            let summary = sweep(&t, 0..40, options(jobs, true, false), &ProgressBar::hidden(), runner);
            assert!(summary.problems.is_empty(), "{:?}", summary.problems);
            assert_eq!(summary.executed, 80);
            let threads = threads.into_inner().unwrap_or_else(PoisonError::into_inner);
            assert_eq!(threads.len(), 80);
            for (key, ran_on) in &threads {
                assert_eq!(ran_on.len(), 2, "jobs {jobs}: {key:?}");
                assert_ne!(ran_on[0], ran_on[1], "jobs {jobs}: {key:?} ran twice on one thread");
            }
            let used: BTreeSet<&String> = threads.values().flatten().collect();
            assert!(used.len() >= 2, "jobs {jobs}: {} threads used", used.len());
        }
        let one: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
        let runner = |_: &Scenario, _: u64| {
            one.lock().unwrap_or_else(PoisonError::into_inner).insert(thread());
            run("same".to_owned(), None)
        };
        let summary = sweep(&t, 0..3, options(1, true, false), &ProgressBar::hidden(), runner);
        assert_eq!((summary.executed, summary.problems.len()), (6, 0));
        assert_eq!(one.into_inner().unwrap_or_else(PoisonError::into_inner).len(), 1);
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
            let summary = sweep(&t, 0..50, options(jobs, false, false), &ProgressBar::hidden(), runner);
            assert!(summary.stopped);
            // Seeds 0, 1 and 2 of all four, then `a` at seed 3.
            assert_eq!(summary.swept, 13, "jobs {jobs}");
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
            // No new seed run starts after the problem: only those already under way finish
            // (at most AHEAD + 1 per thread).
            let runs = calls.load(Ordering::SeqCst);
            assert!(runs <= 2 * (13 + (AHEAD as u64 + 1) * jobs as u64), "jobs {jobs}: {runs} runs");
            assert_eq!(summary.executed as u64 * 2, runs);
            if jobs == 1 {
                assert_eq!(runs, 26);
            }
            assert_eq!(
                summary.render().lines().skip(4).collect::<Vec<_>>(),
                [
                    "4 scenarios × 50 seeds (0..50) = 200 seed runs, 400 simulations planned",
                    "stopped at the first problem after 13 seed runs, 26 simulations: 0 divergences, 0 errors, \
                     1 failure (--keep-going runs every seed)"
                ]
            );
            assert_eq!(summary.exit_code(), ExitCode::FAILURE);
        }
    }

    /// A scenario written for one seed fails on others: with `--divergence-only` its failures
    /// are listed but neither stop the sweep nor fail it, so a divergence after them is found.
    #[test]
    fn divergence_only_lists_failures_and_goes_on_to_the_divergence() {
        let t = targets(&["lossy", "z"]);
        let calls = AtomicU64::new(0);
        let runner = |s: &Scenario, seed: u64| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            match (s.name.as_str(), seed) {
                ("lossy", 7) => run("story".to_owned(), None),
                ("lossy", _) => run("other".to_owned(), Some(format!("m4 lost at seed {seed}"))),
                ("z", 2) => run(format!("z {n}"), None),
                _ => run("z".to_owned(), None),
            }
        };
        for jobs in [1, 3] {
            let summary = sweep(&t, 0..4, options(jobs, false, true), &ProgressBar::hidden(), runner);
            let got: Vec<(&str, u64, Kind)> =
                summary.problems.iter().map(|p| (p.file.to_str().unwrap_or("?"), p.seed, p.kind)).collect();
            assert_eq!(
                got,
                [
                    ("scenarios/lossy.yaml", 0, Kind::Failure),
                    ("scenarios/lossy.yaml", 1, Kind::Failure),
                    ("scenarios/lossy.yaml", 2, Kind::Failure),
                    ("scenarios/z.yaml", 2, Kind::Divergence),
                ],
                "jobs {jobs}"
            );
            // Seed by seed: lossy and z at seeds 0 and 1, lossy at 2, then z at 2 diverges.
            assert!(summary.stopped && summary.swept == 6, "jobs {jobs}: stopped at the divergence");
            assert_eq!(summary.exit_code(), ExitCode::FAILURE);
            let text = summary.render();
            assert!(text.contains("  replay: jabberwock run scenarios/lossy.yaml --seed 1\n"), "{text}");
            assert!(text.contains("1 divergence, 0 errors, 3 failures"), "{text}");
            assert!(text.ends_with("failures do not fail the sweep (--divergence-only)\n"), "{text}");
        }
        // Failures alone: listed, exit 0.
        let only = targets(&["lossy"]);
        let summary = sweep(&only, 5..9, options(2, false, true), &ProgressBar::hidden(), runner);
        assert_eq!((summary.count(Kind::Failure), summary.stopped, summary.swept), (3, false, 4));
        assert_eq!(summary.exit_code(), ExitCode::SUCCESS);
        // Without the flag, the first failure stops the sweep and fails it.
        let summary = sweep(&t, 0..4, options(2, false, false), &ProgressBar::hidden(), runner);
        assert_eq!((summary.problems.len(), summary.swept), (1, 1));
        assert_eq!(summary.exit_code(), ExitCode::FAILURE);
    }

    #[test]
    fn keep_going_lists_every_problem_sorted_by_file_and_seed() {
        let t = targets(&["z", "m", "a"]);
        let runner = |s: &Scenario, seed: u64| match (s.name.as_str(), seed % 3) {
            ("z", 0) => Err("TLS certificates: bad".to_owned()),
            ("m", 1) => run("m".to_owned(), Some("alerts: none".to_owned())),
            ("a", 2) => std::panic::panic_any(format!("boom {seed}")),
            _ => run("fine".to_owned(), None),
        };
        let summary = sweep(&t, 10..16, options(4, true, false), &ProgressBar::hidden(), runner);
        let got: Vec<(String, u64, Kind)> =
            summary.problems.iter().map(|p| (p.file.display().to_string(), p.seed, p.kind)).collect();
        let want: Vec<(String, u64, Kind)> = vec![
            ("scenarios/a.yaml".into(), 11, Kind::Error),
            ("scenarios/a.yaml".into(), 14, Kind::Error),
            ("scenarios/m.yaml".into(), 10, Kind::Failure),
            ("scenarios/m.yaml".into(), 13, Kind::Failure),
            ("scenarios/z.yaml".into(), 12, Kind::Error),
            ("scenarios/z.yaml".into(), 15, Kind::Error),
        ];
        assert_eq!(got, want);
        assert_eq!(summary.problems[0].reason, "panicked: boom 11");
        assert_eq!(summary.problems[4].reason, "TLS certificates: bad");
        assert!(
            summary
                .render()
                .contains("= 18 seed runs, 36 simulations, 0 divergences, 4 errors, 2 failures\n")
        );
    }

    /// One simulation of a seed panics, the other does not: the sweep goes on and reports a
    /// divergence naming the panic.
    #[test]
    fn a_panic_in_one_run_is_caught_and_reported_for_its_seed() {
        let t = targets(&["a", "b"]);
        let calls: Mutex<BTreeMap<(String, u64), u32>> = Mutex::new(BTreeMap::new());
        let runner = |s: &Scenario, seed: u64| {
            let n = {
                let mut c = calls.lock().unwrap_or_else(PoisonError::into_inner);
                let n = c.entry((s.name.clone(), seed)).or_default();
                *n += 1;
                *n
            };
            if s.name == "a" && seed == 1 && n == 1 {
                std::panic::panic_any("boom");
            }
            run("fine".to_owned(), None)
        };
        let summary = sweep(&t, 0..3, options(2, true, false), &ProgressBar::hidden(), runner);
        assert_eq!(summary.executed, 6);
        assert_eq!(summary.problems.len(), 1, "{:?}", summary.problems);
        let p = &summary.problems[0];
        assert_eq!((p.file.as_path(), p.seed, p.kind), (Path::new("scenarios/a.yaml"), 1, Kind::Divergence));
        assert!(
            p.reason == "run 1 error: panicked: boom | run 2 completed"
                || p.reason == "run 1 completed | run 2 error: panicked: boom",
            "{}",
            p.reason
        );
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

    #[test]
    fn the_record_has_the_counts_and_problems_and_only_elapsed_varies() {
        let t = targets(&["a", "b"]);
        let runner = |s: &Scenario, seed: u64| match (s.name.as_str(), seed) {
            ("b", 4) => run("b".to_owned(), Some("alerts: none".to_owned())),
            _ => run("fine".to_owned(), None),
        };
        let summary = sweep(&t, 3..6, options(2, true, false), &ProgressBar::hidden(), runner);
        let record = summary.record(Some("0123abcd"), Duration::from_millis(1500));
        assert_eq!(
            record,
            json!({
                "scenarios": ["scenarios/a.yaml", "scenarios/b.yaml"],
                "seeds": {"from": 3, "to": 6},
                "keep_going": true,
                "divergence_only": false,
                "stopped": false,
                "planned_seed_runs": 6,
                "seed_runs": 6,
                "simulations": 12,
                "divergences": 0,
                "errors": 0,
                "failures": 1,
                "problems": [{
                    "file": "scenarios/b.yaml",
                    "seed": 4,
                    "kind": "failure",
                    "reason": "alerts: none",
                    "replay": "jabberwock run scenarios/b.yaml --seed 4",
                }],
                "git_commit": "0123abcd",
                "elapsed_seconds": 1.5,
            })
        );
        let again = sweep(&t, 3..6, options(1, true, false), &ProgressBar::hidden(), runner);
        assert_eq!(again.record(None, Duration::ZERO)["problems"], record["problems"]);
        assert_eq!(again.record(None, Duration::ZERO)["git_commit"], Value::Null);
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
        let summary = sweep(&t, 0..3, options(3, true, false), &ProgressBar::hidden(), simulate);
        assert_eq!((summary.total, summary.swept, summary.executed), (3, 3, 3));
        assert_eq!(summary.count(Kind::Divergence), 0, "{:?}", summary.problems);
        assert_eq!(summary.count(Kind::Error), 0, "{:?}", summary.problems);
    }
}
