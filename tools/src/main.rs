//! `jabberwock`: run scenarios on the embedded simulator, print transcripts and verdicts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jabberwock_sim::{Outcome, load, run_with_seed};

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
    },
    /// Print the JSON Schema of scenario files.
    Schema,
    /// Run the property suite for every protocol (one run per cell, on all cores), print the
    /// protocol × property table and write the report: `matrix.md` (committed; a test fails
    /// when it is stale) and `matrix.html` (every cell linked to its scenario, transcript and
    /// sequence diagram) into `--out`.
    Matrix {
        /// Where the report goes.
        #[arg(long, default_value = "reports")]
        out: PathBuf,
        /// Threads to run on (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
    },
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

fn run_one(path: &Path, seed: Option<u64>) -> Row {
    let scenario = match load(path) {
        Ok(s) => s,
        Err(e) => return Row::Broken(e.to_string()),
    };
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Schema => {
            print!("{}", jabberwock_sim::json_schema());
            ExitCode::SUCCESS
        }
        Cmd::Matrix { out, jobs } => {
            let report = match jabberwock_sim::report::run(
                jobs.unwrap_or_else(jabberwock_sim::report::default_jobs),
            ) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let md = report.markdown();
            let written = std::fs::create_dir_all(&out)
                .and_then(|()| std::fs::write(out.join("matrix.md"), &md))
                .map_err(|e| format!("{}: {e}", out.display()));
            if let Err(e) = written {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            print!("{md}");
            eprintln!("wrote {}", out.join("matrix.md").display());
            ExitCode::SUCCESS
        }
        Cmd::Run { path, seed, jsonl } if path.is_file() => match run_one(&path, seed) {
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
        },
        Cmd::Run { path, seed, jsonl } => {
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
                rows.push((f.clone(), run_one(f, seed)));
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
