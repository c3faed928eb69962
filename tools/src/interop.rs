//! `jabberwock interop`: the table of our engines against the independent implementations,
//! rendered from what the interop tier recorded (`peers/e2e/tests/interop_*.rs`, feature
//! `interop`). Each test that passes writes one JSON file (`peers/e2e/tests/common/
//! interop_record.rs`); this module reads them all and renders `reports/interop.md`.
//!
//! The tool knows no list of tests: `--check` compares the rendered table with the committed
//! one, so a test that failed or did not run (its file is missing) changes the table and fails
//! the check, like a stale table does.
//!
//! A result left by an earlier run would count as a pass: CI deletes the results directory
//! before the tier runs, and the tool refuses a result older than the test file that wrote it,
//! or whose test file is gone (the test changed or went since it passed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;

/// Which way an exchange went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Direction {
    /// Our engine made it; the independent implementation read or verified it.
    OursToTheirs,
    /// The independent implementation made it; our engine read or verified it.
    TheirsToOurs,
}

impl Direction {
    fn parse(s: &str) -> Option<Direction> {
        match s {
            "ours → theirs" => Some(Direction::OursToTheirs),
            "theirs → ours" => Some(Direction::TheirsToOurs),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Direction::OursToTheirs => "ours → theirs",
            Direction::TheirsToOurs => "theirs → ours",
        }
    }
}

/// A piece of the independent implementation and the version its tool reported.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    name: String,
    version: String,
}

impl Part {
    /// The name with the version cut to major.minor: the table stays the same across patch
    /// releases of the tools.
    fn short(&self) -> String {
        let version: Vec<&str> = self.version.split('.').take(2).collect();
        format!("{} {}", self.name, version.join("."))
    }
}

/// What went across one way in a test.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Exchange {
    direction: Direction,
    what: Vec<String>,
}

/// One passed interop test, as its result file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    binary: String,
    test: String,
    source: String,
    protocol: String,
    ours: String,
    theirs: Vec<Part>,
    exchanged: Vec<Exchange>,
}

fn text(v: &Value, field: &str) -> Result<String, String> {
    match v.get(field).and_then(Value::as_str) {
        Some(s) if !s.trim().is_empty() => Ok(s.to_owned()),
        _ => Err(format!("`{field}` is not a non-empty string")),
    }
}

fn list<'a>(v: &'a Value, field: &str) -> Result<&'a Vec<Value>, String> {
    match v.get(field).and_then(Value::as_array) {
        Some(a) if !a.is_empty() => Ok(a),
        _ => Err(format!("`{field}` is not a non-empty list")),
    }
}

impl Record {
    /// Reads one result file's text.
    pub fn parse(json: &str) -> Result<Record, String> {
        let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let (binary, test, source) = (text(&v, "binary")?, text(&v, "test")?, text(&v, "source")?);
        let (protocol, ours) = (text(&v, "protocol")?, text(&v, "ours")?);
        let theirs = list(&v, "theirs")?
            .iter()
            .map(|p| Ok(Part { name: text(p, "name")?, version: text(p, "version")? }))
            .collect::<Result<Vec<Part>, String>>()
            .map_err(|e| format!("theirs: {e}"))?;
        let exchanged = list(&v, "exchanged")?
            .iter()
            .map(|x| {
                let d = text(x, "direction")?;
                let direction = Direction::parse(&d).ok_or_else(|| format!("unknown direction `{d}`"))?;
                let what = list(x, "what")?
                    .iter()
                    .map(|w| w.as_str().map(str::to_owned).ok_or("`what` holds a non-string"))
                    .collect::<Result<Vec<String>, _>>()?;
                Ok(Exchange { direction, what })
            })
            .collect::<Result<Vec<Exchange>, String>>()
            .map_err(|e| format!("exchanged: {e}"))?;
        Ok(Record { binary, test, source, protocol, ours, theirs, exchanged })
    }

    /// The column: the implementation's first part.
    fn column(&self) -> String {
        self.theirs.first().map(Part::short).unwrap_or_default()
    }

    /// The parts after the first (the OMEMO backend), for the cell.
    fn via(&self) -> Option<String> {
        let rest: Vec<String> = self.theirs.iter().skip(1).map(Part::short).collect();
        (!rest.is_empty()).then(|| rest.join(" + "))
    }
}

/// Every `*.json` under `dir`, in file-name order, with its path.
pub fn load(dir: &Path) -> Result<Vec<(PathBuf, Record)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let json = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
            let record = Record::parse(&json).map_err(|e| format!("{}: {e}", f.display()))?;
            Ok((f, record))
        })
        .collect()
}

/// The results that cannot be from the current tests: older than the test file that wrote
/// them (its `source`, under the workspace `root`), or whose test file is gone. One line each.
fn stale(files: &[(PathBuf, Record)], root: &Path) -> Vec<String> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());
    let mut stale = Vec::new();
    for (file, record) in files {
        let source = root.join(&record.source);
        match (modified(file), modified(&source)) {
            (_, Err(_)) => stale.push(format!(
                "{}: its test file {} is gone (or unreadable)",
                file.display(),
                record.source
            )),
            (Ok(result), Ok(test)) if result < test => stale.push(format!(
                "{}: older than its test file {}, which changed since the test passed",
                file.display(),
                record.source
            )),
            (Ok(_), Ok(_)) => {}
            (Err(e), Ok(_)) => stale.push(format!("{}: {e}", file.display())),
        }
    }
    stale
}

/// Markdown table cell text: no pipes, no line breaks.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Case-insensitive order, exact order to break ties.
fn sort_key(s: &str) -> (String, String) {
    (s.to_lowercase(), s.to_owned())
}

#[derive(Debug, Default)]
struct Cell {
    via: BTreeSet<String>,
    /// For each direction, what went across, in case-insensitive order.
    directions: BTreeMap<Direction, BTreeSet<(String, String)>>,
}

/// The report: the engine × implementation table, the tests behind it, and their files.
/// The same records in any order give the same bytes.
pub fn render(records: &[Record]) -> String {
    let mut rows: BTreeSet<(String, String)> = BTreeSet::new();
    let mut columns: BTreeSet<(String, String)> = BTreeSet::new();
    let mut cells: BTreeMap<((String, String), String), Cell> = BTreeMap::new();
    let mut tests: BTreeSet<[String; 7]> = BTreeSet::new();
    let mut sources: BTreeSet<String> = BTreeSet::new();
    for r in records {
        let row = (r.protocol.clone(), r.ours.clone());
        let column = r.column();
        rows.insert(row.clone());
        columns.insert(sort_key(&column));
        sources.insert(r.source.clone());
        let c = cells.entry((row, column.clone())).or_default();
        c.via.extend(r.via());
        let theirs = r.theirs.iter().map(Part::short).collect::<Vec<_>>().join(" + ");
        for x in &r.exchanged {
            c.directions.entry(x.direction).or_default().extend(x.what.iter().map(|w| sort_key(w)));
            tests.insert([
                r.protocol.clone(),
                sort_key(&column).0,
                format!("{}::{}", r.binary, r.test),
                x.direction.label().to_owned(),
                r.ours.clone(),
                theirs.clone(),
                x.what.join(", "),
            ]);
        }
    }
    let mut md = String::new();
    md.push_str("# Interop with independent implementations\n\n");
    md.push_str(
        "Generated by `jabberwock interop` from the results the interop tier writes when its tests \
         pass: do not edit by hand. CI runs the tier, then `jabberwock interop --check \
         reports/interop.md`, which fails when this file differs from what the tests recorded (a \
         test that failed or did not run takes its lines out). To regenerate, run the interop tier \
         as the README says, then `cargo run -p jabberwock-tools -- interop --out \
         reports/interop.md`.\n\n",
    );
    md.push_str(
        "One row per engine of ours, one column per independent implementation (major.minor of the \
         version installed where the tier ran; the exact versions are in the result files). A cell \
         lists each direction a passing test covered and what went across: **ours → theirs**, our \
         engine made it and the other implementation read or verified it; **theirs → ours**, the \
         other way. — : no test.\n\n",
    );
    md.push_str("| ours \\ theirs |");
    for (_, column) in &columns {
        md.push_str(&format!(" {} |", cell(column)));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(columns.len()));
    md.push('\n');
    for row in &rows {
        md.push_str(&format!("| {} |", cell(&row.1)));
        for (_, column) in &columns {
            match cells.get(&(row.clone(), column.clone())) {
                None => md.push_str(" — |"),
                Some(c) => {
                    let mut lines: Vec<String> = c.via.iter().map(|v| format!("with {v}:")).collect();
                    for (d, what) in &c.directions {
                        let what: Vec<&str> = what.iter().map(|(_, w)| w.as_str()).collect();
                        lines.push(format!("✅ {}: {}", d.label(), what.join(", ")));
                    }
                    md.push_str(&format!(" {} |", cell(&lines.join("<br>"))));
                }
            }
        }
        md.push('\n');
    }
    md.push_str("\n## The tests\n\n");
    md.push_str("One line per test and direction.\n\n");
    md.push_str("| ours | theirs | direction | what went across | test |\n|---|---|---|---|---|\n");
    for [_, _, test, direction, ours, theirs, what] in &tests {
        md.push_str(&format!(
            "| {} | {} | {} | {} | `{}` |\n",
            cell(ours),
            cell(theirs),
            direction,
            cell(what),
            cell(test)
        ));
    }
    md.push_str("\nProduced by: ");
    let sources: Vec<String> = sources.iter().map(|s| format!("[`{s}`](../{s})")).collect();
    md.push_str(&sources.join(", "));
    md.push_str(".\n");
    md
}

/// Compares the rendered table with the committed one: `Err` with a diff hint when they differ.
pub fn check(committed: &str, rendered: &str) -> Result<(), String> {
    if committed == rendered {
        return Ok(());
    }
    let old: BTreeSet<&str> = committed.lines().collect();
    let new: BTreeSet<&str> = rendered.lines().collect();
    let mut hint = String::new();
    let gone: Vec<&str> = committed.lines().filter(|l| !new.contains(l)).collect();
    let added: Vec<&str> = rendered.lines().filter(|l| !old.contains(l)).collect();
    for l in gone.iter().take(20) {
        hint.push_str(&format!("- {l}\n"));
    }
    for l in added.iter().take(20) {
        hint.push_str(&format!("+ {l}\n"));
    }
    if gone.len() + added.len() > 40 {
        hint.push_str("(more lines differ)\n");
    }
    if hint.is_empty() {
        hint.push_str("(the same lines, in another order or with other line endings)\n");
    }
    Err(hint)
}

/// The workspace this tool was built in: the test files the results name are under it.
fn workspace() -> PathBuf {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR"));
    tools.parent().unwrap_or(tools).to_path_buf()
}

/// `target/tmp/interop` of this workspace (or of `$CARGO_TARGET_DIR`), where the interop
/// tests write (`CARGO_TARGET_TMPDIR`).
fn default_results() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace().join("target"),
    };
    target.join("tmp").join("interop")
}

/// The subcommand: render, then write (`--out`), compare (`--check`) or print.
pub fn command(results: Option<PathBuf>, out: Option<PathBuf>, check_against: Option<PathBuf>) -> ExitCode {
    let dir = results.unwrap_or_else(default_results);
    let files = match load(&dir) {
        Ok(r) if r.is_empty() => {
            eprintln!("error: no results in {}: the interop tier did not run", dir.display());
            return ExitCode::FAILURE;
        }
        Ok(r) => r,
        Err(e) if !dir.exists() => {
            eprintln!("error: {e}: the interop tier did not run");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let old = stale(&files, &workspace());
    if !old.is_empty() {
        for line in &old {
            eprintln!("error: stale result {line}");
        }
        eprintln!(
            "Delete {} and run the interop tier again (a result from an earlier run would count as a pass).",
            dir.display()
        );
        return ExitCode::FAILURE;
    }
    let records: Vec<Record> = files.into_iter().map(|(_, r)| r).collect();
    let md = render(&records);
    if let Some(file) = check_against {
        let committed = match std::fs::read_to_string(&file) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {}: {e}", file.display());
                return ExitCode::from(2);
            }
        };
        return match check(&committed, &md) {
            Ok(()) => {
                eprintln!("{} matches the {} interop results", file.display(), records.len());
                ExitCode::SUCCESS
            }
            Err(hint) => {
                eprintln!(
                    "error: {} differs from the interop results in {} (- committed, + results):\n{hint}\
                     A line gone from the results is a test that failed or did not run. If the change \
                     is intended, regenerate: cargo run -p jabberwock-tools -- interop --out {}",
                    file.display(),
                    dir.display(),
                    file.display()
                );
                ExitCode::FAILURE
            }
        };
    }
    match out {
        Some(file) => {
            if let Err(e) = std::fs::write(&file, &md) {
                eprintln!("error: {}: {e}", file.display());
                return ExitCode::FAILURE;
            }
            eprintln!("wrote {} from {} results", file.display(), records.len());
        }
        None => print!("{md}"),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        binary: &str,
        test: &str,
        protocol: &str,
        theirs: &[(&str, &str)],
        x: &[(&str, &[&str])],
    ) -> Record {
        let json = serde_json::json!({
            "binary": binary,
            "test": test,
            "source": format!("peers/e2e/tests/{binary}.rs"),
            "protocol": protocol,
            "ours": format!("jabberwock {protocol}"),
            "theirs": theirs.iter().map(|(n, v)| serde_json::json!({"name": n, "version": v})).collect::<Vec<_>>(),
            "exchanged": x.iter().map(|(d, w)| serde_json::json!({"direction": d, "what": w})).collect::<Vec<_>>(),
        });
        match Record::parse(&json.to_string()) {
            Ok(r) => r,
            Err(e) => panic!("a valid record: {e}"),
        }
    }

    fn sample() -> Vec<Record> {
        vec![
            record(
                "interop_otr",
                "both_talk",
                "otr",
                &[("libotr", "4.1.1")],
                &[("ours → theirs", &["messages"]), ("theirs → ours", &["messages"])],
            ),
            record(
                "interop_openpgp",
                "we_read_gpg",
                "pgp",
                &[("GnuPG", "2.2.40")],
                &[("theirs → ours", &["message"])],
            ),
            record(
                "interop_openpgp",
                "gpg_reads_ours",
                "pgp",
                &[("GnuPG", "2.2.40")],
                &[("ours → theirs", &["message"])],
            ),
            record(
                "interop_openpgp",
                "gpg_verifies_presence",
                "pgp",
                &[("GnuPG", "2.2.40")],
                &[("ours → theirs", &["signed presence"])],
            ),
            record(
                "interop_omemo",
                "talk",
                "omemo",
                &[("python-omemo", "1.3.0"), ("twomemo", "1.2.0")],
                &[("ours → theirs", &["key exchange"])],
            ),
        ]
    }

    /// The table part of a rendering: from its header to the blank line after it.
    fn table(md: &str) -> Vec<&str> {
        md.lines().skip_while(|l| !l.starts_with("| ours \\ theirs")).take_while(|l| !l.is_empty()).collect()
    }

    #[test]
    fn a_few_records_give_the_expected_table() {
        let md = render(&sample());
        assert_eq!(
            table(&md),
            [
                "| ours \\ theirs | GnuPG 2.2 | libotr 4.1 | python-omemo 1.3 |",
                "|---|---|---|---|",
                "| jabberwock omemo | — | — | with twomemo 1.2:<br>✅ ours → theirs: key exchange |",
                "| jabberwock otr | — | ✅ ours → theirs: messages<br>✅ theirs → ours: messages | — |",
                "| jabberwock pgp | ✅ ours → theirs: message, signed presence<br>✅ theirs → ours: message | — | — |",
            ]
        );
        let tests: Vec<&str> = md.lines().filter(|l| l.ends_with("` |")).collect();
        assert_eq!(
            tests,
            [
                "| jabberwock omemo | python-omemo 1.3 + twomemo 1.2 | ours → theirs | key exchange | `interop_omemo::talk` |",
                "| jabberwock otr | libotr 4.1 | ours → theirs | messages | `interop_otr::both_talk` |",
                "| jabberwock otr | libotr 4.1 | theirs → ours | messages | `interop_otr::both_talk` |",
                "| jabberwock pgp | GnuPG 2.2 | ours → theirs | message | `interop_openpgp::gpg_reads_ours` |",
                "| jabberwock pgp | GnuPG 2.2 | ours → theirs | signed presence | `interop_openpgp::gpg_verifies_presence` |",
                "| jabberwock pgp | GnuPG 2.2 | theirs → ours | message | `interop_openpgp::we_read_gpg` |",
            ]
        );
        assert!(md.ends_with(
            "Produced by: [`peers/e2e/tests/interop_omemo.rs`](../peers/e2e/tests/interop_omemo.rs), \
             [`peers/e2e/tests/interop_openpgp.rs`](../peers/e2e/tests/interop_openpgp.rs), \
             [`peers/e2e/tests/interop_otr.rs`](../peers/e2e/tests/interop_otr.rs).\n"
        ));
        // No version beyond major.minor anywhere.
        assert!(!md.contains("2.2.40") && !md.contains("1.3.0"));
    }

    #[test]
    fn a_missing_record_changes_the_table_and_fails_the_check() {
        let all = render(&sample());
        for i in 0..sample().len() {
            let mut fewer = sample();
            let gone = fewer.remove(i);
            let md = render(&fewer);
            assert_ne!(md, all, "without {}", gone.test);
            let hint = check(&all, &md).expect_err("the check fails");
            assert!(hint.contains(&format!("- | jabberwock {} ", gone.protocol)), "{hint}");
            assert!(hint.contains(&gone.test), "{hint}");
        }
        // Without the only GnuPG message test one way, that direction is gone from its cell.
        let md = render(&sample().into_iter().filter(|r| r.test != "we_read_gpg").collect::<Vec<_>>());
        assert!(
            table(&md).contains(&"| jabberwock pgp | ✅ ours → theirs: message, signed presence | — | — |")
        );
        // Without the OTR test, its row goes.
        let md = render(&sample().into_iter().filter(|r| r.protocol != "otr").collect::<Vec<_>>());
        assert!(!md.contains("| jabberwock otr |") && !md.contains("libotr"));
        assert_eq!(check(&all, &all), Ok(()));
    }

    #[test]
    fn the_order_of_the_records_does_not_matter() {
        let mut records = sample();
        let first = render(&records);
        records.reverse();
        assert_eq!(render(&records), first);
        records.rotate_left(2);
        assert_eq!(render(&records), first);
        // Patch versions do not change the table.
        for r in &mut records {
            for p in &mut r.theirs {
                p.version.push('9');
            }
        }
        assert_eq!(render(&records), first);
    }

    #[test]
    fn malformed_results_are_refused_with_the_field_named() {
        let good = serde_json::json!({
            "binary": "b", "test": "t", "source": "s", "protocol": "otr", "ours": "jabberwock otr",
            "theirs": [{"name": "libotr", "version": "4.1.1"}],
            "exchanged": [{"direction": "ours → theirs", "what": ["m"]}],
        });
        assert!(Record::parse(&good.to_string()).is_ok());
        let mut v = good.clone();
        v["exchanged"][0]["direction"] = "sideways".into();
        assert_eq!(Record::parse(&v.to_string()), Err("exchanged: unknown direction `sideways`".into()));
        let mut v = good.clone();
        v["theirs"] = serde_json::json!([]);
        assert_eq!(Record::parse(&v.to_string()), Err("`theirs` is not a non-empty list".into()));
        let mut v = good.clone();
        v["theirs"][0]["version"] = 4.into();
        assert_eq!(Record::parse(&v.to_string()), Err("theirs: `version` is not a non-empty string".into()));
        let mut v = good;
        if let Some(o) = v.as_object_mut() {
            o.remove("test");
        }
        assert_eq!(Record::parse(&v.to_string()), Err("`test` is not a non-empty string".into()));
        assert!(Record::parse("{").is_err());
    }

    #[test]
    fn a_cell_merges_the_phrases_of_its_tests_once_each_in_case_insensitive_order() {
        let lib = &[("libotr", "4.1.1")];
        let md = render(&[
            record("b", "t1", "otr", lib, &[("ours → theirs", &["messages", "SMP"])]),
            record("b", "t2", "otr", lib, &[("ours → theirs", &["AKE", "messages"])]),
        ]);
        assert!(md.contains("| ✅ ours → theirs: AKE, messages, SMP |"), "{md}");
    }

    #[test]
    fn pipes_in_phrases_do_not_break_the_table() {
        let r = record("b", "t", "otr", &[("libotr", "4.1.1")], &[("ours → theirs", &["a | b"])]);
        let md = render(&[r]);
        assert!(md.contains("✅ ours → theirs: a \\| b |"), "{md}");
    }

    /// A result written before its test file last changed, or naming a test file that is
    /// gone, cannot be from the current test: it is stale.
    #[test]
    fn results_older_than_their_test_file_or_without_one_are_stale() {
        let dir = std::env::temp_dir().join(format!("jabberwock-interop-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let at = |secs: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let write = |path: &Path, text: &str, modified: std::time::SystemTime| {
            std::fs::create_dir_all(path.parent().unwrap_or(&dir))?;
            std::fs::write(path, text)?;
            std::fs::File::options().write(true).open(path)?.set_modified(modified)
        };
        let result = |test: &str, source: &str| {
            format!(
                r#"{{"binary":"b","test":"{test}","source":"{source}","protocol":"otr","ours":"jabberwock otr",
                   "theirs":[{{"name":"libotr","version":"4.1.1"}}],
                   "exchanged":[{{"direction":"ours → theirs","what":["m"]}}]}}"#
            )
        };
        let results = dir.join("results");
        let written = write(&dir.join("tests/interop_otr.rs"), "// the test", at(2_000))
            .and_then(|()| {
                write(&results.join("fresh.json"), &result("fresh", "tests/interop_otr.rs"), at(3_000))
            })
            .and_then(|()| {
                write(&results.join("old.json"), &result("old", "tests/interop_otr.rs"), at(1_000))
            })
            .and_then(|()| {
                write(&results.join("gone.json"), &result("gone", "tests/interop_gone.rs"), at(3_000))
            });
        assert!(written.is_ok(), "{written:?}");
        let files = load(&results);
        assert!(files.is_ok(), "{files:?}");
        let files = files.unwrap_or_default();
        let found = stale(&files, &dir);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].ends_with("gone.json: its test file tests/interop_gone.rs is gone (or unreadable)"));
        assert!(found[1].ends_with(
            "old.json: older than its test file tests/interop_otr.rs, which changed since the test passed"
        ));
        let fresh: Vec<(PathBuf, Record)> = files.into_iter().filter(|(_, r)| r.test == "fresh").collect();
        assert_eq!(fresh.len(), 1);
        assert!(stale(&fresh, &dir).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn results_are_read_from_a_directory_in_file_order() {
        let dir = std::env::temp_dir().join(format!("jabberwock-interop-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            std::fs::write(dir.join("notes.txt"), "not a result")?;
            std::fs::write(
                dir.join("b.json"),
                r#"{"binary":"b","test":"t2","source":"s","protocol":"otr","ours":"jabberwock otr",
                   "theirs":[{"name":"libotr","version":"4.1.1"}],
                   "exchanged":[{"direction":"theirs → ours","what":["m"]}]}"#,
            )?;
            std::fs::write(
                dir.join("a.json"),
                r#"{"binary":"b","test":"t1","source":"s","protocol":"otr","ours":"jabberwock otr",
                   "theirs":[{"name":"libotr","version":"4.1.1"}],
                   "exchanged":[{"direction":"ours → theirs","what":["m"]}]}"#,
            )
        });
        assert!(written.is_ok(), "{written:?}");
        let loaded = load(&dir).map(|rs| rs.into_iter().map(|(_, r)| r.test).collect::<Vec<_>>());
        assert_eq!(loaded, Ok(vec!["t1".to_owned(), "t2".to_owned()]));
        let _ = std::fs::write(dir.join("c.json"), "{}");
        let err = load(&dir).expect_err("a broken file is an error");
        assert!(err.contains("c.json") && err.contains("`binary`"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(load(&dir).is_err());
    }
}
