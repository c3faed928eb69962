//! `jabberwock`: run scenarios on the embedded simulator, print transcripts and verdicts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jabberwock_sim::{Outcome, load, run_with_seed};

mod interop;
mod sweep;
mod tally;

#[derive(Debug, Parser)]
#[command(
    name = "jabberwock",
    version,
    about = "Deterministic simulator and test bench for end-to-end encrypted XMPP"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one scenario (prints its transcript) or every scenario under a directory (prints a table).
    Run {
        /// A scenario file or a directory of them.
        path: PathBuf,
        /// Override the seed written in the file(s).
        #[arg(long)]
        seed: Option<u64>,
        /// Write the full transcript(s), every byte of every stanza, as JSON Lines to this file.
        #[arg(long)]
        jsonl: Option<PathBuf>,
        /// Run an account's devices on an implementation from the registry
        /// (`peers/reference/registry.yaml`), as if the file named it for each: `bob=python-omemo`
        /// (the account's local part or bare JID; `jabberwock` is ours). Repeatable.
        #[arg(long, value_name = "ACCOUNT=NAME", value_parser = account_implementation)]
        implementation: Vec<(String, String)>,
    },
    /// Print the JSON Schema of scenario files.
    Schema,
    /// Print every reason a scenario may expect in a device's `alerts:` and `errors:`, with its
    /// meaning and who reports it, as markdown (committed as `scenarios/reasons.md`).
    Reasons,
    /// Run one scenario and draw the run as a sequence diagram: Mermaid text (renders in a
    /// GitHub comment) or a self-contained SVG. Session set-up is left out unless `--all`.
    Diagram {
        /// The scenario file.
        path: PathBuf,
        /// Override the seed written in the file.
        #[arg(long)]
        seed: Option<u64>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = DiagramFormat::Mermaid)]
        format: DiagramFormat,
        /// Include every transcript line (roster, carbons, PEP set-up, pings).
        #[arg(long)]
        all: bool,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Run the property suite for every protocol (one run per cell, on all cores), print the
    /// protocol × property table and write the report: `matrix.md` (committed; a test fails
    /// when it is stale) and `matrix.html` (every cell linked to its scenario, transcript and
    /// sequence diagram), and XEP-0210's requirements answered from the same runs:
    /// `requirements.md` (committed, stale-checked too) and `requirements.html`, into `--out`.
    /// A cell whose run cannot be made or panics is marked ❓ with the error; the report is
    /// written all the same, and the exit status is 1.
    Matrix {
        /// Where the report goes.
        #[arg(long, default_value = "reports")]
        out: PathBuf,
        /// Threads to run on (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Only these independent implementations (registry names; repeatable). By default
        /// every one in `peers/reference/registry.yaml` that is installed here gets columns —
        /// each protocol it speaks, as Alice and as Bob, next to ours — in
        /// `implementations.md` and `implementations.html`; those not installed are listed there.
        #[arg(long, value_name = "NAME", conflicts_with = "ours_only")]
        implementation: Vec<String>,
        /// Our engines only: no report of independent implementations.
        #[arg(long)]
        ours_only: bool,
    },
    /// Render the table of our engines against the independent implementations from the
    /// results the interop tier wrote (one JSON file per passed test); print it, write it
    /// (`--out`) or compare it with the committed one (`--check`, exit 1 when it differs).
    Interop {
        /// The results directory (default: `target/tmp/interop` in this workspace).
        #[arg(long)]
        results: Option<PathBuf>,
        /// Write the table to this file.
        #[arg(long, conflicts_with = "check")]
        out: Option<PathBuf>,
        /// Compare with this committed table: exit 1 when it is stale or a result is missing.
        #[arg(long)]
        check: Option<PathBuf>,
    },
    /// Run every scenario under many seeds, each seed twice (the two runs on different
    /// threads), on all cores: report the seeds whose two runs differ (a divergence:
    /// nondeterminism), whose expectations fail (a failure), or that cannot run or panic (an
    /// error), each with the command that replays it. The report goes to standard output (the
    /// same bytes for the same input), timing to standard error. Exit 0 when clean, 1 on a
    /// problem, 2 on bad input.
    Sweep {
        /// A scenario file or a directory of them.
        path: PathBuf,
        /// How many seeds to try on each scenario: `from..from+seeds`.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        seeds: u64,
        /// The first seed (the seeds written in the files are not used).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Threads to run on (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Run every seed and list every problem instead of stopping at the first.
        #[arg(long)]
        keep_going: bool,
        /// List expectation failures (with their replay commands) but neither stop at one nor
        /// exit non-zero for one: only divergences and errors do. For scenarios written for
        /// their own seed.
        #[arg(long)]
        divergence_only: bool,
        /// Also write a JSON summary to this file: the scenarios, the seeds, the counts, every
        /// problem with its replay command, the git commit (`git rev-parse HEAD`, or null) and
        /// the elapsed seconds (the only field that varies between runs), so the records of a
        /// sweep run in chunks can be added up.
        #[arg(long, value_name = "FILE.json")]
        record: Option<PathBuf>,
    },
    /// Add up the `--record` files of a sweep run in chunks (`sweep --from N --record
    /// chunk-N.json`): check they are one sweep (same scenario files, options and commit, no
    /// overlapping seeds) and print the whole as markdown — the counts, the seeds not covered
    /// (within `--seeds`), every divergence and error with its replay command, the failures by
    /// scenario. Exit 0 when complete and clean, 1 when seeds are missing or a problem counts,
    /// 2 on bad input.
    SweepTotal {
        /// The record files.
        #[arg(required = true, value_name = "RECORD.json")]
        records: Vec<PathBuf>,
        /// The seeds the sweep was to cover, `FROM..TO`: seeds in it that no record covers are
        /// reported (a missing first or last chunk too). Default: the lowest to the highest
        /// seed recorded.
        #[arg(long, value_name = "FROM..TO")]
        seeds: Option<String>,
    },
    /// Serve one of our engines over the engine protocol (`docs/engine-protocol.md`): one JSON
    /// request per line on standard input, one answer per line on standard output, until the
    /// input ends. The conformance shim: what an adapter for another implementation answers,
    /// ours answers with our engine.
    Adapter {
        /// The protocol whose engines it serves (a registry name: `jabberwock reasons` lists them).
        protocol: String,
    },
}

/// What `jabberwock diagram` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DiagramFormat {
    /// Mermaid `sequenceDiagram` text.
    Mermaid,
    /// A self-contained SVG document.
    Svg,
}

fn scenario_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            scenario_files(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
    Ok(())
}

enum Row {
    Ran(Box<Outcome>),
    Broken(String),
}

/// `ACCOUNT=NAME` of `--implementation`.
fn account_implementation(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((account, name)) if !account.is_empty() && !name.is_empty() => Ok((account.into(), name.into())),
        _ => Err(format!("`{arg}` is not ACCOUNT=NAME (an account, then an implementation of the registry)")),
    }
}

fn run_one(path: &Path, seed: Option<u64>, implementations: &[(String, String)]) -> Row {
    let mut scenario = match load(path) {
        Ok(s) => s,
        Err(e) => return Row::Broken(e.to_string()),
    };
    for (account, name) in implementations {
        if let Err(e) = scenario.use_implementation_named(account, name) {
            return Row::Broken(format!("{}: --implementation {account}={name}: {e}", path.display()));
        }
    }
    match run_with_seed(&scenario, seed.unwrap_or(scenario.seed)) {
        Ok(o) => Row::Ran(Box::new(o)),
        Err(e) => Row::Broken(format!("{}: {e}", scenario.name)),
    }
}

fn write_jsonl(path: &Path, outcomes: &[&Outcome]) -> Result<(), String> {
    let mut text = String::new();
    for o in outcomes {
        text.push_str(&o.transcript.jsonl_for(&o.name));
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A folder of the checkout this tool was built from (what the reports are made from), else
/// the same path under the working directory.
fn shipped(folder: &str) -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(folder);
    if built.is_dir() { built } else { PathBuf::from(folder) }
}

/// The columns of independent implementations (`names`, or every one installed), next to
/// `ours`: runs them, writes `implementations.md` and `implementations.html` into `out`, and
/// answers the report.
fn independent(
    ours: &jabberwock_sim::report::Report,
    names: &[String],
    jobs: usize,
    out: &Path,
    templates: &str,
) -> Result<jabberwock_sim::report::Report, String> {
    use jabberwock_sim::implementations::Registry;
    let mut registry = Registry::load().map_err(|e| format!("the registry of implementations: {e}"))?;
    for name in names {
        registry.find(name).map_err(|e| format!("--implementation {name}: {e}"))?;
    }
    if !names.is_empty() {
        registry.implementations.retain(|i| names.contains(&i.name));
    }
    let jabberwock_sim::independent::Lineup { columns, said, missing } =
        jabberwock_sim::independent::lineup(&registry);
    for (name, protocol, why) in &missing {
        eprintln!("warning: {name} ({protocol}) cannot run here, no columns for it: {why}");
    }
    let theirs = jabberwock_sim::report::run_columns(
        &jabberwock_sim::properties::PROPERTIES.iter().collect::<Vec<_>>(),
        &columns,
        jobs,
    );
    let mut md = jabberwock_sim::independent::markdown(&theirs, ours, &missing, &said);
    // The scenarios of peers with known faults, with Bob on each implementation.
    let quirks = shipped("scenarios/quirks");
    if quirks.is_dir() {
        let rows = jabberwock_sim::independent::peer_faults(&quirks, &registry);
        md.push_str(&jabberwock_sim::independent::peer_faults_markdown(&rows));
    }
    std::fs::write(out.join("implementations.md"), &md)
        .and_then(|()| std::fs::write(out.join("implementations.html"), theirs.html(templates)))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let differ = md.matches(&format!(" {} |", jabberwock_sim::independent::DIFFERS)).count();
    eprintln!(
        "wrote implementations.md and implementations.html into {} ({} columns, {differ} verdicts differ from ours)",
        out.display(),
        columns.len()
    );
    Ok(theirs)
}

/// `jabberwock adapter <protocol>`: 0 when the input ended, 2 for an unknown protocol, 1 when
/// the pipes failed.
fn adapter(protocol: &str) -> ExitCode {
    let protocol: jabberwock_e2e::Protocol = match protocol.parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let implementation = ("jabberwock", env!("CARGO_PKG_VERSION"));
    match jabberwock_external::serve(
        protocol,
        implementation,
        std::io::stdin().lock(),
        std::io::stdout().lock(),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("adapter: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Schema => {
            print!("{}", jabberwock_sim::json_schema());
            ExitCode::SUCCESS
        }
        Cmd::Reasons => {
            print!("{}", jabberwock_sim::reasons::markdown());
            ExitCode::SUCCESS
        }
        Cmd::Diagram { path, seed, format, all, output } => {
            let outcome = match run_one(&path, seed, &[]) {
                Row::Ran(o) => o,
                Row::Broken(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let options = jabberwock_sim::diagram::Options { all };
            let text = match format {
                DiagramFormat::Mermaid => jabberwock_sim::diagram::mermaid(&outcome, &options),
                DiagramFormat::Svg => jabberwock_sim::diagram::svg(&outcome, &options),
            };
            match output {
                Some(file) => {
                    if let Err(e) = std::fs::write(&file, text) {
                        eprintln!("error: {}: {e}", file.display());
                        return ExitCode::FAILURE;
                    }
                }
                None => print!("{text}"),
            }
            ExitCode::SUCCESS
        }
        Cmd::Interop { results, out, check } => interop::command(results, out, check),
        Cmd::Adapter { protocol } => adapter(&protocol),
        Cmd::Sweep { path, seeds, from, jobs, keep_going, divergence_only, record } => {
            sweep::command(sweep::Args { path, seeds, from, jobs, keep_going, divergence_only, record })
        }
        Cmd::SweepTotal { records, seeds } => tally::command(records, seeds),
        Cmd::Matrix { out, jobs, implementation, ours_only } => {
            let jobs = jobs.unwrap_or_else(jabberwock_sim::report::default_jobs);
            let report = jabberwock_sim::report::run(jobs);
            let md = report.markdown();
            // The page links the templates relative to where it is written: those this tool
            // was built from (the report is made from them), else those under the working
            // directory.
            let templates = shipped("scenarios/properties");
            let templates = jabberwock_sim::report::relative_path(&out, &templates)
                .unwrap_or_else(|| "../scenarios/properties".to_owned());
            let html = report.html(&templates);
            let requirements = jabberwock_sim::requirements::Requirements::new(&report);
            let written = std::fs::create_dir_all(&out)
                .and_then(|()| std::fs::write(out.join("matrix.md"), &md))
                .and_then(|()| std::fs::write(out.join("matrix.html"), &html))
                .and_then(|()| std::fs::write(out.join("requirements.md"), requirements.markdown()))
                .and_then(|()| {
                    std::fs::write(out.join("requirements.html"), requirements.html("matrix.html"))
                })
                .map_err(|e| format!("{}: {e}", out.display()));
            if let Err(e) = written {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            print!("{md}");
            eprintln!(
                "wrote matrix.md, matrix.html, requirements.md and requirements.html into {}",
                out.display()
            );
            let mut errors = report.errors();
            let independent = if ours_only {
                None
            } else {
                match independent(&report, &implementation, jobs, &out, &templates) {
                    Ok(theirs) => Some(theirs),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            };
            if let Some(theirs) = &independent {
                errors.extend(theirs.errors());
            }
            for c in &errors {
                eprintln!(
                    "error: {} × {}: {}",
                    c.property.id,
                    c.column().label(),
                    c.error().unwrap_or_default()
                );
            }
            if errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "{} cell{} without a verdict",
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" }
                );
                ExitCode::FAILURE
            }
        }
        Cmd::Run { path, seed, jsonl, implementation } if path.is_file() => {
            match run_one(&path, seed, &implementation) {
                Row::Ran(o) => {
                    print!("{}", o.render());
                    if let Some(j) = jsonl
                        && let Err(e) = write_jsonl(&j, &[&o])
                    {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                    if o.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
                }
                Row::Broken(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Run { path, seed, jsonl, implementation } => {
            let mut files = Vec::new();
            if let Err(e) = scenario_files(&path, &mut files) {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::from(2);
            }
            if files.is_empty() {
                eprintln!("error: no scenario files under {}", path.display());
                return ExitCode::from(2);
            }
            let bar = indicatif::ProgressBar::new(files.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let mut rows = Vec::new();
            for f in &files {
                bar.set_message(f.display().to_string());
                rows.push((f.clone(), run_one(f, seed, &implementation)));
                bar.inc(1);
            }
            bar.finish_and_clear();
            let width = rows.iter().map(|(f, _)| f.display().to_string().len()).max().unwrap_or(8).max(8);
            println!("{:<width$}  {:>20}  {:<6}  reason", "scenario", "seed", "result");
            let mut failed = 0;
            for (f, row) in &rows {
                let name = f.display().to_string();
                match row {
                    Row::Ran(o) if o.passed() => println!(
                        "{name:<width$}  {:>20}  {:<6}  {} checks held",
                        o.seed,
                        "pass",
                        o.checks.len()
                    ),
                    Row::Ran(o) => {
                        failed += 1;
                        println!(
                            "{name:<width$}  {:>20}  {:<6}  {}",
                            o.seed,
                            "FAIL",
                            o.failure().unwrap_or_default()
                        );
                    }
                    Row::Broken(e) => {
                        failed += 1;
                        println!("{name:<width$}  {:>20}  {:<6}  {e}", "-", "ERROR");
                    }
                }
            }
            println!("{} passed, {} failed", rows.len() - failed, failed);
            if let Some(j) = jsonl {
                let outcomes: Vec<&Outcome> = rows
                    .iter()
                    .filter_map(|(_, r)| if let Row::Ran(o) = r { Some(&**o) } else { None })
                    .collect();
                if let Err(e) = write_jsonl(&j, &outcomes) {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
            if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
    }
}
