//! Throughput benchmark: how fast the simulator pushes plain-text messages through one server.
//!
//! A plain binary (`harness = false`), not a timed test. It generates scenario YAML in code
//! (N accounts on `a.example`, protocol `plain`, each client sending to the next one in a
//! ring, one message every `--spacing-ms` of simulated time across the whole network), runs
//! it, and reports per case:
//!
//! - wall time per delivered message (delivered = plaintexts received across all devices;
//!   the run fails unless it equals the number sent),
//! - peak memory (`VmHWM` of the process: each case runs in a fresh child process of this
//!   same binary, `throughput --case 10x1000`, so the figure is that case's alone),
//! - simulated seconds per wall second.
//!
//! ```text
//! cargo bench -p jabberwock-sim --bench throughput              # 10x1000 and 200x50
//! cargo bench -p jabberwock-sim --bench throughput -- --quick   # 10x50 and 50x5 (CI smoke)
//! cargo bench -p jabberwock-sim --bench throughput -- --case 20x100 --spacing-ms 5
//! ```
//!
//! Options: `--quick`, `--case CLIENTSxMESSAGES` (repeatable; runs in a child each unless
//! `--in-process`), `--spacing-ms N` (default 1: 1,000 messages per simulated second; see below),
//! `--full-roster` (every account subscribes to every other one, the scenario default,
//! instead of only its two ring neighbours). `--bench`, which cargo passes, is ignored.
//!
//! Cost model (measured): the wall time is dominated by turmoil's 1ms ticks, not by the
//! messages. Every tick polls each host's runtime (~2µs a host), and turmoil 0.7 registers a
//! link between every pair of hosts and walks all of them once per running host
//! (`Topology::deliver_messages`): about `hosts³ / 2` link visits (~5ns each) per tick, ~25µs
//! a tick at 11 hosts but ~24ms at 201. The default spacing therefore keeps the simulated span
//! short (10,000 messages in 10s, 13s in all); the settle time after the last send is 2s (a
//! plain message crosses two hops of ≤10ms).

// The benchmark measures wall time: the one place `Instant::now` is allowed (clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::fmt::Write as _;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// The full cases: 10 clients × 1,000 messages each, 200 clients × 50 messages each.
const FULL: &[Case] = &[Case { clients: 10, per_client: 1_000 }, Case { clients: 200, per_client: 50 }];
/// The quick (CI smoke) cases.
const QUICK: &[Case] = &[Case { clients: 10, per_client: 50 }, Case { clients: 50, per_client: 5 }];

/// Marks the machine-readable line a child prints for its parent.
const RESULT_TAG: &str = "THROUGHPUT-RESULT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Case {
    clients: usize,
    per_client: usize,
}

impl Case {
    fn parse(s: &str) -> Result<Case, String> {
        let (c, m) = s
            .split_once('x')
            .ok_or_else(|| format!("`{s}`: write a case as CLIENTSxMESSAGES, e.g. 10x1000"))?;
        let clients: usize = c.parse().map_err(|e| format!("`{s}`: clients: {e}"))?;
        let per_client: usize = m.parse().map_err(|e| format!("`{s}`: messages: {e}"))?;
        if clients < 2 || per_client == 0 {
            return Err(format!("`{s}`: need at least 2 clients and 1 message each"));
        }
        Ok(Case { clients, per_client })
    }

    fn name(self) -> String {
        format!("{}x{}", self.clients, self.per_client)
    }

    fn total(self) -> usize {
        self.clients * self.per_client
    }
}

#[derive(Debug, Clone)]
struct Options {
    cases: Vec<Case>,
    spacing_ms: u64,
    full_roster: bool,
    in_process: bool,
    /// Set for a child: run exactly the given cases here and print the result line.
    child: bool,
}

fn options() -> Result<Options, String> {
    let mut opts =
        Options { cases: vec![], spacing_ms: 1, full_roster: false, in_process: false, child: false };
    let mut quick = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {} // passed by `cargo bench`
            "--quick" => quick = true,
            "--full-roster" => opts.full_roster = true,
            "--in-process" => opts.in_process = true,
            "--child" => opts.child = true,
            "--case" => {
                let v = args.next().ok_or("--case needs a value, e.g. 10x1000")?;
                opts.cases.push(Case::parse(&v)?);
            }
            "--spacing-ms" => {
                let v = args.next().ok_or("--spacing-ms needs a value")?;
                opts.spacing_ms = v.parse().map_err(|e| format!("--spacing-ms `{v}`: {e}"))?;
                if opts.spacing_ms == 0 {
                    return Err("--spacing-ms must be at least 1".into());
                }
            }
            "-h" | "--help" => {
                return Err("usage: throughput [--quick] [--case CLIENTSxMESSAGES]... [--spacing-ms N] [--full-roster] [--in-process]".into());
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if opts.cases.is_empty() {
        opts.cases = if quick { QUICK.to_vec() } else { FULL.to_vec() };
    }
    Ok(opts)
}

fn account(i: usize) -> String {
    format!("u{i:04}@a.example")
}

fn device(i: usize) -> String {
    format!("u{i:04}/d")
}

/// The scenario: `clients` accounts with one `plain` device each; client `c` sends its
/// messages to client `c + 1` (mod n). Messages go out round-robin over the clients, one every
/// `spacing_ms` of simulated time, starting at 1s.
fn scenario_yaml(case: Case, spacing_ms: u64, full_roster: bool) -> String {
    let n = case.clients;
    let mut y = String::with_capacity(128 * case.total() + 128 * n);
    y.push_str("name: throughput\n");
    let _ = writeln!(y, "about: {n} clients send {} messages each to the next one.", case.per_client);
    y.push_str("seed: 1\nsettle: 2s\nservers: [a.example]\naccounts:\n");
    for i in 0..n {
        if full_roster {
            let _ = writeln!(y, "  {}: {{devices: {{d: plain}}}}", account(i));
        } else {
            let prev = account((i + n - 1) % n);
            let next = account((i + 1) % n);
            let contacts = if prev == next { next } else { format!("{prev}, {next}") };
            let _ = writeln!(y, "  {}: {{devices: {{d: plain}}, contacts: [{contacts}]}}", account(i));
        }
    }
    y.push_str("network:\n  latency: 1ms..10ms\ntimeline:\n");
    let start_ms = 1_000;
    for k in 0..case.per_client {
        for c in 0..n {
            let at = start_ms + (k * n + c) as u64 * spacing_ms;
            let _ = writeln!(
                y,
                "  - {{at: {at}ms, device: {}, send: {{to: {}, body: m{c}-{k}}}}}",
                device(c),
                account((c + 1) % n)
            );
        }
    }
    y
}

/// `VmHWM` (peak resident set) of this process, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[derive(Debug, Clone, PartialEq)]
struct Measured {
    case: Case,
    sent: usize,
    delivered: usize,
    parse_wall: Duration,
    run_wall: Duration,
    simulated: Duration,
    peak_kib: Option<u64>,
    errors: usize,
    alerts: usize,
}

impl Measured {
    fn per_message(&self) -> Duration {
        self.run_wall / u32::try_from(self.delivered.max(1)).unwrap_or(u32::MAX)
    }

    fn sim_per_wall(&self) -> f64 {
        self.simulated.as_secs_f64() / self.run_wall.as_secs_f64().max(1e-9)
    }

    fn to_line(&self) -> String {
        format!(
            "{RESULT_TAG} case={} sent={} delivered={} parse_ns={} run_ns={} simulated_ns={} peak_kib={} errors={} alerts={}",
            self.case.name(),
            self.sent,
            self.delivered,
            self.parse_wall.as_nanos(),
            self.run_wall.as_nanos(),
            self.simulated.as_nanos(),
            self.peak_kib.map_or_else(|| "?".to_owned(), |k| k.to_string()),
            self.errors,
            self.alerts,
        )
    }

    fn from_line(line: &str) -> Result<Measured, String> {
        let rest = line.strip_prefix(RESULT_TAG).ok_or("not a result line")?;
        let field = |name: &str| -> Result<&str, String> {
            rest.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                .ok_or_else(|| format!("result line lacks `{name}`: {line}"))
        };
        let num = |name: &str| -> Result<u64, String> {
            field(name)?.parse().map_err(|e| format!("`{name}`: {e}"))
        };
        let count = |name: &str| -> Result<usize, String> {
            usize::try_from(num(name)?).map_err(|e| format!("`{name}`: {e}"))
        };
        Ok(Measured {
            case: Case::parse(field("case")?)?,
            sent: count("sent")?,
            delivered: count("delivered")?,
            parse_wall: Duration::from_nanos(num("parse_ns")?),
            run_wall: Duration::from_nanos(num("run_ns")?),
            simulated: Duration::from_nanos(num("simulated_ns")?),
            peak_kib: field("peak_kib")?.parse().ok(),
            errors: count("errors")?,
            alerts: count("alerts")?,
        })
    }

    fn summary(&self) -> String {
        format!(
            "case {:>8}: {}/{} delivered, run {:.2}s wall ({:.1} µs/msg), peak RSS {}, {:.1}s simulated ({:.3} sim-s/wall-s), parse {:.2}s",
            self.case.name(),
            self.delivered,
            self.sent,
            self.run_wall.as_secs_f64(),
            self.per_message().as_secs_f64() * 1e6,
            mib(self.peak_kib),
            self.simulated.as_secs_f64(),
            self.sim_per_wall(),
            self.parse_wall.as_secs_f64(),
        )
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// Runs one case in this process.
fn measure(case: Case, spacing_ms: u64, full_roster: bool) -> Result<Measured, String> {
    let yaml = scenario_yaml(case, spacing_ms, full_roster);
    let t0 = Instant::now();
    let scenario = jabberwock_sim::parse("throughput.yaml", &yaml).map_err(|e| e.to_string())?;
    let parse_wall = t0.elapsed();
    drop(yaml);
    let t1 = Instant::now();
    let outcome = jabberwock_sim::run(&scenario).map_err(|e| e.to_string())?;
    let run_wall = t1.elapsed();
    let peak_kib = peak_rss_kib();
    if !outcome.passed() {
        return Err(outcome.failure().unwrap_or_default());
    }
    let delivered = outcome.devices.values().map(|d| d.received.len()).sum();
    let errors = outcome.devices.values().map(|d| d.errors.len()).sum();
    let alerts = outcome.devices.values().map(|d| d.alerts.len()).sum();
    Ok(Measured {
        case,
        sent: case.total(),
        delivered,
        parse_wall,
        run_wall,
        simulated: outcome.simulated,
        peak_kib,
        errors,
        alerts,
    })
}

/// Runs one case in a fresh child process of this binary, so `VmHWM` is that case's own.
fn measure_in_child(case: Case, opts: &Options) -> Result<Measured, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["--child", "--case", &case.name(), "--spacing-ms", &opts.spacing_ms.to_string()]);
    if opts.full_roster {
        cmd.arg("--full-roster");
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("spawning the child: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("case {}: child exited with {}", case.name(), out.status));
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with(RESULT_TAG))
        .ok_or_else(|| format!("case {}: the child printed no result", case.name()))?;
    Measured::from_line(line)
}

fn table(results: &[Measured]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| case     | delivered | wall/msg   | run wall | peak RSS   | simulated | sim-s/wall-s |"
    );
    let _ = writeln!(
        t,
        "|----------|-----------|------------|----------|------------|-----------|--------------|"
    );
    for m in results {
        let _ = writeln!(
            t,
            "| {:<8} | {:>9} | {:>7.1} µs | {:>7.2}s | {:>10} | {:>8.1}s | {:>12.3} |",
            m.case.name(),
            m.delivered,
            m.per_message().as_secs_f64() * 1e6,
            m.run_wall.as_secs_f64(),
            mib(m.peak_kib),
            m.simulated.as_secs_f64(),
            m.sim_per_wall(),
        );
    }
    t
}

fn main() -> ExitCode {
    let opts = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("throughput: {e}");
            return ExitCode::from(2);
        }
    };
    let mut results = Vec::new();
    let mut failed = false;
    for &case in &opts.cases {
        let measured = if opts.child || opts.in_process {
            measure(case, opts.spacing_ms, opts.full_roster)
        } else {
            measure_in_child(case, &opts)
        };
        match measured {
            Ok(m) => {
                if opts.child {
                    println!("{}", m.to_line());
                }
                if m.delivered != m.sent {
                    eprintln!(
                        "throughput: case {}: delivered {} of {} messages",
                        case.name(),
                        m.delivered,
                        m.sent
                    );
                    failed = true;
                }
                if m.errors + m.alerts > 0 {
                    eprintln!(
                        "throughput: case {}: {} device errors, {} alerts",
                        case.name(),
                        m.errors,
                        m.alerts
                    );
                }
                if !opts.child {
                    println!("{}", m.summary());
                }
                results.push(m);
            }
            Err(e) => {
                eprintln!("throughput: case {}: {e}", case.name());
                failed = true;
            }
        }
    }
    if !opts.child && !results.is_empty() {
        println!();
        print!("{}", table(&results));
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
