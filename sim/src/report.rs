//! The verdict report: every property of the suite run for every protocol, kept with the runs
//! behind the verdicts. [`Report::markdown`] is the table committed in `reports/matrix.md`
//! (a test fails when it is stale); [`Report::html`] is one self-contained page in which
//! every cell links to its scenario, its transcript and its sequence diagram.
//!
//! A cell whose run cannot be made, or panics, does not stop the report: it is an error cell
//! (❓, the error as its reason), and [`Report::errors`] lists them.

use core::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use jabberwock_e2e::Protocol;

use crate::properties::{PROPERTIES, Property, Theirs, Verdict};
use crate::runner::Outcome;

/// One cell: a property measured on a protocol, and the run that measured it.
#[derive(Debug)]
pub struct Cell {
    /// The property.
    pub property: &'static Property,
    /// The protocol.
    pub protocol: Protocol,
    /// Who ran one side when it was not ours (`None`: ours on both).
    pub theirs: Option<Theirs>,
    /// The scenario as run (the template with the protocol filled in; for a mixed pair, the
    /// `jabberwock run --implementation` argument that puts one side on theirs, as a comment).
    pub yaml: String,
    /// The verdict and the run behind it, or why there is neither: the run could not be made,
    /// or it panicked.
    pub result: Result<Measured, String>,
}

/// A verdict and the run it comes from.
#[derive(Debug)]
pub struct Measured {
    /// The verdict.
    pub verdict: Verdict,
    /// The run.
    pub outcome: Outcome,
}

/// The mark of a cell without a verdict.
pub const ERROR_MARK: &str = "❓";

impl Cell {
    /// The anchor of the cell in the HTML page.
    pub fn anchor(&self) -> String {
        match &self.theirs {
            None => format!("{}--{}", self.property.id, self.protocol.name()),
            Some(t) => format!(
                "{}--{}--{}-as-{}",
                self.property.id,
                self.protocol.name(),
                t.implementation.name,
                t.side.account()
            ),
        }
    }

    /// Its column.
    pub fn column(&self) -> Column {
        Column { protocol: self.protocol, theirs: self.theirs.clone() }
    }

    /// The verdict, unless the cell errored.
    pub fn verdict(&self) -> Option<&Verdict> {
        self.result.as_ref().ok().map(|m| &m.verdict)
    }

    /// The run, unless the cell errored.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.result.as_ref().ok().map(|m| &m.outcome)
    }

    /// Why the cell has no verdict.
    pub fn error(&self) -> Option<&str> {
        self.result.as_ref().err().map(String::as_str)
    }

    /// ✅, ❌, ⚪, or [`ERROR_MARK`].
    pub fn mark(&self) -> &'static str {
        self.verdict().map_or(ERROR_MARK, Verdict::mark)
    }

    /// One line: what happened in the run, or the error.
    pub fn reason(&self) -> String {
        match &self.result {
            Ok(m) => m.verdict.reason.clone(),
            Err(e) => format!("error: {e}"),
        }
    }
}

/// A column of a report: a protocol, on our engines or with one side on an independent
/// implementation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The protocol.
    pub protocol: Protocol,
    /// Who runs one side (`None`: ours on both).
    pub theirs: Option<Theirs>,
}

impl Column {
    /// Its heading: `omemo`, or `omemo: python-omemo as Bob`.
    pub fn label(&self) -> String {
        match &self.theirs {
            None => self.protocol.name().to_owned(),
            Some(t) => format!("{}: {}", self.protocol.name(), t.label()),
        }
    }

    /// The scenario as this column runs a property.
    fn yaml(&self, property: &Property) -> String {
        let yaml = property.yaml(self.protocol);
        match &self.theirs {
            None => yaml,
            Some(t) => {
                format!("# run with: jabberwock run <this file> --implementation {}\n{yaml}", t.argument())
            }
        }
    }
}

/// Every cell, property by property in suite order, protocols in [`Protocol::ALL`] order.
#[derive(Debug)]
pub struct Report {
    /// The cells.
    pub cells: Vec<Cell>,
}

/// Runs the whole suite on up to `jobs` threads (each run is its own simulation, so the
/// verdicts do not depend on how many run at once). A cell that errs or panics becomes an
/// error cell; the others are measured all the same.
pub fn run(jobs: usize) -> Report {
    let columns: Vec<Column> = Protocol::ALL.iter().map(|p| Column { protocol: *p, theirs: None }).collect();
    run_columns(&PROPERTIES.iter().collect::<Vec<_>>(), &columns, jobs)
}

/// Runs `properties` (the suite, [`PROPERTIES`], or a part of it) for each of `columns`, as
/// [`run`] does for ours.
pub fn run_columns(properties: &[&'static Property], columns: &[Column], jobs: usize) -> Report {
    let work: Vec<(&'static Property, Column)> =
        properties.iter().flat_map(|p| columns.iter().map(move |c| (*p, c.clone()))).collect();
    run_cells(&work, jobs, |property, column| property.measure_with(column.protocol, column.theirs.as_ref()))
}

/// The text of a panic payload.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Measures each of `work` with `measure` on up to `jobs` threads, a panic caught per cell.
fn run_cells<F>(work: &[(&'static Property, Column)], jobs: usize, measure: F) -> Report
where
    F: Fn(&'static Property, &Column) -> Result<(Verdict, Outcome), String> + Sync,
{
    let slots: Vec<Mutex<Option<Cell>>> = work.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let one = |property: &'static Property, column: &Column| {
        let result = catch_unwind(AssertUnwindSafe(|| measure(property, column)))
            .unwrap_or_else(|payload| Err(format!("panicked: {}", panic_text(&*payload))));
        Cell {
            property,
            protocol: column.protocol,
            theirs: column.theirs.clone(),
            yaml: column.yaml(property),
            result: result.map(|(verdict, outcome)| Measured { verdict, outcome }),
        }
    };
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, work.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((property, column)) = work.get(i) else { break };
                    let cell = one(property, column);
                    if let Some(slot) = slots.get(i) {
                        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(cell);
                    }
                }
            });
        }
    });
    let cells = slots
        .into_iter()
        .zip(work)
        .map(|(slot, (property, column))| {
            slot.into_inner().unwrap_or_else(PoisonError::into_inner).unwrap_or_else(|| Cell {
                property,
                protocol: column.protocol,
                theirs: column.theirs.clone(),
                yaml: column.yaml(property),
                result: Err("the run did not finish".to_owned()),
            })
        })
        .collect();
    Report { cells }
}

/// The number of threads to run on by default: one per core.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Escapes text for markdown, in a table cell or a paragraph: what would end the cell (`|`, a
/// line break), open HTML or an entity (`<`, `&`), or format (`*`, `_`, backticks, brackets,
/// `~`, and the backslash itself) shows as itself.
pub(crate) fn md_cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '&' => out.push_str("&amp;"),
            '\r' | '\n' => out.push(' '),
            '|' | '*' | '_' | '`' | '\\' | '[' | ']' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a relative URL path or fragment: every byte but ASCII letters, digits and
/// `-._~/`. The result needs no escaping in markdown or in an HTML attribute.
pub(crate) fn url_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// An `href` attribute value: the URL encoded, then escaped for HTML.
fn href(url: &str) -> String {
    html_escape(&url_path(url))
}

/// An `href` to an anchor in the page.
fn href_anchor(id: &str) -> String {
    format!("#{}", href(id))
}

/// The path of `to` as seen from the directory `from`, with `/` separators: both made
/// absolute against the working directory, then `.` and `..` resolved by their names (as a
/// browser resolves a relative link), then compared component by component. `None` when a
/// path is not UTF-8 or the two do not share a root (another drive).
pub fn relative_path(from: &Path, to: &Path) -> Option<String> {
    let from = normalise(&std::path::absolute(from).ok()?);
    let to = normalise(&std::path::absolute(to).ok()?);
    let (f, t): (Vec<Component<'_>>, Vec<Component<'_>>) =
        (from.components().collect(), to.components().collect());
    let root = |c: &[Component<'_>]| {
        c.iter().take_while(|c| matches!(c, Component::Prefix(_) | Component::RootDir)).count()
    };
    if root(&f) != root(&t) || f.get(..root(&f)) != t.get(..root(&t)) {
        return None;
    }
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; f.len() - common];
    for c in t.get(common..).unwrap_or_default() {
        parts.push(c.as_os_str().to_str()?);
    }
    Some(if parts.is_empty() { ".".to_owned() } else { parts.join("/") })
}

/// `path` with `.` dropped and each `..` taking off the component before it (none above the
/// root).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else if !out.has_root() {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for HTML.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const LEGEND: &str =
    "✅ the property held in the run · ❌ it did not · ⚪ the attack could not be carried out";

/// Added to the legend when a cell errored.
const ERROR_LEGEND: &str = " · ❓ the run could not be made or panicked (no verdict)";

impl Report {
    /// The cell of `property` × `protocol`.
    pub fn cell(&self, property: &str, protocol: Protocol) -> Option<&Cell> {
        self.cells.iter().find(|c| c.property.id == property && c.protocol == protocol && c.theirs.is_none())
    }

    /// The cells without a verdict.
    pub fn errors(&self) -> Vec<&Cell> {
        self.cells.iter().filter(|c| c.result.is_err()).collect()
    }

    /// The columns, in the order of the cells.
    pub fn columns(&self) -> Vec<Column> {
        let mut columns: Vec<Column> = Vec::new();
        for c in &self.cells {
            let column = c.column();
            if !columns.contains(&column) {
                columns.push(column);
            }
        }
        columns
    }

    fn legend(&self) -> String {
        if self.errors().is_empty() { LEGEND.to_owned() } else { format!("{LEGEND}{ERROR_LEGEND}") }
    }

    /// The properties in suite order, each with its cells (those the report has).
    fn rows(&self) -> impl Iterator<Item = (&'static Property, Vec<&Cell>)> + '_ {
        let mut properties: Vec<&'static Property> = Vec::new();
        for c in &self.cells {
            if !properties.iter().any(|p| p.id == c.property.id) {
                properties.push(c.property);
            }
        }
        properties.sort_by_key(|p| PROPERTIES.iter().position(|q| q.id == p.id));
        properties
            .into_iter()
            .map(move |p| (p, self.cells.iter().filter(|c| c.property.id == p.id).collect()))
    }

    /// The committed markdown: a summary table (each mark links to the property's section),
    /// then per property the template, the question and each protocol's verdict with the
    /// one-line reason from its run.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# The verdict matrix\n");
        let _ = writeln!(
            s,
            "Generated by `jabberwock matrix` from one run per cell of the property templates in \
             [`scenarios/properties/`](../scenarios/properties/): do not edit by hand, `cargo test` \
             fails when this file is stale. Every verdict comes from what happened in its run: what \
             the attacker read, what the users were shown, what alerted. The transcripts and \
             sequence diagrams of every cell are in `reports/matrix.html`, written by the same \
             command.\n"
        );
        let _ = writeln!(s, "{}\n", self.legend());
        s.push_str("| property |");
        let columns = self.columns();
        for c in &columns {
            let _ = write!(s, " {} |", md_cell(&c.label()));
        }
        s.push_str("\n|---|");
        for _ in &columns {
            s.push_str(":-:|");
        }
        s.push('\n');
        for (p, cells) in self.rows() {
            let _ = write!(s, "| [{}](#{}) |", md_cell(p.title), url_path(p.id));
            for c in cells {
                let _ = write!(s, " {} |", c.mark());
            }
            s.push('\n');
        }
        for (p, cells) in self.rows() {
            let _ = writeln!(s, "\n## {}\n", md_cell(p.id));
            let about = cells.first().map(|c| c.outcome_about()).unwrap_or_default();
            // The id is a template's file stem, in a code span as it is: ids are plain (a test
            // checks), and nothing can be escaped inside a code span.
            let _ = writeln!(
                s,
                "**{}** — [`scenarios/properties/{}.yaml.tmpl`](../scenarios/properties/{}.yaml.tmpl). {}\n",
                md_cell(p.title),
                p.id,
                url_path(p.id),
                md_cell(&about)
            );
            s.push_str("| protocol | verdict | what happened in the run |\n|---|:-:|---|\n");
            for c in cells {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} |",
                    md_cell(&c.column().label()),
                    c.mark(),
                    md_cell(&c.reason())
                );
            }
        }
        s
    }
}

impl Cell {
    /// The question the scenario asks (its `about`).
    fn outcome_about(&self) -> String {
        self.property.scenario(self.protocol).map(|s| s.about).unwrap_or_default()
    }
}

pub(crate) const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 6px;vertical-align:top}\
th{background:#f4f4f4}td.m{font-size:0.8em;max-width:14em}td.m a{text-decoration:none;color:inherit}\
td.ok{background:#eefbea}td.no{background:#fdecec}td.na{background:#f3f3f3}td.err{background:#fff4d6}\
section{border-top:1px solid #ddd;margin-top:1.5em;padding-top:0.5em}\
pre{background:#f8f8f8;padding:0.6em;overflow-x:auto;font-size:0.8em}\
details{margin:0.4em 0}summary{cursor:pointer;font-weight:600}\
.diagram{overflow-x:auto;border:1px solid #eee}";

/// Opens the `<details>` a link points at (a fragment inside a closed one is not shown).
const SCRIPT: &str = "function o(){var h=location.hash.slice(1);if(!h)return;\
var e=document.getElementById(decodeURIComponent(h));\
for(;e;e=e.parentElement){if(e.tagName==='DETAILS')e.open=true;}}\
window.addEventListener('hashchange',o);window.addEventListener('load',o);";

impl Report {
    /// One self-contained page: the summary table, then a section per cell with its
    /// verdict, its scenario (as run, and the template it came from), its transcript and its
    /// sequence diagram (SVG). `templates` is the path of `scenarios/properties/` as seen from
    /// where the page is written.
    pub fn html(&self, templates: &str) -> String {
        let mut s = String::new();
        s.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
        s.push_str("<title>Jabberwock: the verdict matrix</title>");
        let _ = writeln!(s, "<style>{STYLE}</style><script>{SCRIPT}</script></head><body>");
        s.push_str(
            "<h1>The verdict matrix</h1>\n<p>Every cell is one run of a property template with the \
            protocol filled in; the verdict comes from what happened in it. Click a cell for its \
            scenario, transcript and sequence diagram.</p>\n",
        );
        let _ = writeln!(s, "<p>{}</p>", html_escape(&self.legend()));
        s.push_str("<table><tr><th>property</th>");
        for c in self.columns() {
            let _ = write!(s, "<th>{}</th>", html_escape(&c.label()));
        }
        s.push_str("</tr>\n");
        for (p, cells) in self.rows() {
            let _ = write!(s, "<tr><th><a href=\"{}\">{}</a></th>", href_anchor(p.id), html_escape(p.title));
            for c in cells {
                let class = match c.verdict().map(|v| (v.tested, v.holds)) {
                    None => "err",
                    Some((false, _)) => "na",
                    Some((true, true)) => "ok",
                    Some((true, false)) => "no",
                };
                let _ = write!(
                    s,
                    "<td class=\"m {class}\"><a href=\"{}\">{} {}</a></td>",
                    href_anchor(&c.anchor()),
                    c.mark(),
                    html_escape(&c.reason())
                );
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</table>\n");
        let options = crate::diagram::Options::default();
        for (p, cells) in self.rows() {
            let about = cells.first().map(|c| c.outcome_about()).unwrap_or_default();
            let _ = writeln!(
                s,
                "<h2 id=\"{}\">{}</h2>\n<p>{} Template: <a href=\"{}\">{}.yaml.tmpl</a>.</p>",
                html_escape(p.id),
                html_escape(p.title),
                html_escape(&about),
                href(&format!("{templates}/{}.yaml.tmpl", p.id)),
                html_escape(p.id)
            );
            for c in cells {
                let a = c.anchor();
                let (id, to) = (
                    |suffix: &str| html_escape(&format!("{a}{suffix}")),
                    |suffix: &str| href_anchor(&format!("{a}{suffix}")),
                );
                let _ = writeln!(
                    s,
                    "<section id=\"{}\"><h3>{} × {}: {}</h3><p>{}</p>\
                     <p><a href=\"{}\">scenario</a> · <a href=\"{}\">transcript</a> · \
                     <a href=\"{}\">sequence diagram</a></p>",
                    id(""),
                    html_escape(p.id),
                    html_escape(&c.column().label()),
                    c.mark(),
                    html_escape(&c.reason()),
                    to("-scenario"),
                    to("-transcript"),
                    to("-diagram"),
                );
                let seed = c.outcome().map_or_else(|| "no run".to_owned(), |o| format!("seed {}", o.seed));
                let _ = writeln!(
                    s,
                    "<details id=\"{}\"><summary>scenario ({seed})</summary><pre>{}</pre></details>",
                    id("-scenario"),
                    html_escape(&c.yaml)
                );
                let (transcript, diagram) = match &c.result {
                    Ok(m) => (
                        format!("<pre>{}</pre>", html_escape(&m.outcome.render())),
                        inline_svg(&crate::diagram::svg(&m.outcome, &options)).to_owned(),
                    ),
                    Err(e) => {
                        let none = format!("<p>No run: {}</p>", html_escape(e));
                        (none.clone(), none)
                    }
                };
                let _ = writeln!(
                    s,
                    "<details id=\"{}\"><summary>transcript</summary>{transcript}</details>",
                    id("-transcript")
                );
                let _ = writeln!(
                    s,
                    "<details id=\"{}\"><summary>sequence diagram</summary><div class=\"diagram\">{diagram}</div></details></section>",
                    id("-diagram")
                );
            }
        }
        s.push_str("</body></html>\n");
        s
    }
}

/// An SVG document as an element inside HTML: without its XML declaration.
fn inline_svg(svg: &str) -> &str {
    match svg.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or(svg, |(_, body)| body.trim_start()),
        None => svg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn property(id: &str) -> &'static Property {
        PROPERTIES.iter().find(|p| p.id == id).unwrap()
    }

    #[test]
    fn markdown_cells_show_their_text_and_cannot_break_the_table() {
        assert_eq!(md_cell("read 0 of 3 messages"), "read 0 of 3 messages");
        assert_eq!(
            md_cell("a|b <img src=x>&amp; *x* _y_ `z` \\ [l](u) ~s~\nnext\r\nline"),
            "a\\|b &lt;img src=x>&amp;amp; \\*x\\* \\_y\\_ \\`z\\` \\\\ \\[l\\](u) \\~s\\~ next  line"
        );
        // A backslash before a pipe cannot escape the pipe's own escape.
        assert_eq!(md_cell("a\\|b"), "a\\\\\\|b");
    }

    #[test]
    fn urls_are_percent_encoded_and_hrefs_escaped() {
        assert_eq!(
            url_path("../scenarios/properties/x-y_z.yaml.tmpl"),
            "../scenarios/properties/x-y_z.yaml.tmpl"
        );
        assert_eq!(url_path("my dir/\"q\"<&>#?é"), "my%20dir/%22q%22%3C%26%3E%23%3F%C3%A9");
        assert_eq!(href_anchor("a b"), "#a%20b");
    }

    #[test]
    fn property_ids_are_plain_file_stems() {
        for p in PROPERTIES {
            assert!(
                !p.id.is_empty()
                    && p.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{}",
                p.id
            );
        }
    }

    #[test]
    fn relative_paths_resolve_dots_component_by_component() {
        let rel = |from: &str, to: &str| relative_path(Path::new(from), Path::new(to));
        assert_eq!(
            rel("/repo/reports", "/repo/scenarios/properties").as_deref(),
            Some("../scenarios/properties")
        );
        // `..` and `.` in either path are resolved first, not compared as names.
        assert_eq!(
            rel("/repo/target/../reports/.", "/repo/tools/../scenarios/properties").as_deref(),
            Some("../scenarios/properties")
        );
        assert_eq!(
            rel("/repo/target/report", "/repo/scenarios/properties").as_deref(),
            Some("../../scenarios/properties")
        );
        // An out directory outside the repository.
        assert_eq!(
            rel("/tmp/out/x", "/repo/scenarios/properties").as_deref(),
            Some("../../../repo/scenarios/properties")
        );
        assert_eq!(rel("/repo/a/../../tmp", "/repo/s").as_deref(), Some("../repo/s"));
        assert_eq!(rel("/", "/repo/s").as_deref(), Some("repo/s"));
        assert_eq!(rel("/repo/s", "/repo/s").as_deref(), Some("."));
        assert_eq!(rel("/repo/s/deeper", "/repo/s").as_deref(), Some(".."));
        // Above the root is the root.
        assert_eq!(rel("/../../repo", "/repo/s").as_deref(), Some("s"));
        // Relative paths are taken from the working directory.
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(relative_path(Path::new("out/../out2"), &cwd.join("s")).as_deref(), Some("../s"));
    }

    /// One cell panics and one cannot run: both become error cells with the reason, the other
    /// cells keep their verdicts, and the page and the markdown show them.
    #[test]
    fn a_panicking_or_failing_cell_is_an_error_cell_not_the_end_of_the_report() {
        let (plain, pgp) = (Protocol::ALL[0], Protocol::ALL[1]);
        assert_eq!((plain.name(), pgp.name()), ("plain", "pgp"));
        let ours = |protocol| Column { protocol, theirs: None };
        let work = [
            (property("confidentiality"), ours(plain)),
            (property("confidentiality"), ours(pgp)),
            (property("integrity"), ours(plain)),
        ];
        let report = run_cells(&work, 2, |p, column| match (p.id, column.protocol.name()) {
            ("confidentiality", "pgp") => std::panic::panic_any("boom <b>|x".to_owned()),
            ("integrity", _) => Err("no *such* thing".to_owned()),
            _ => p.measure(column.protocol),
        });
        assert_eq!(report.cells.len(), 3);
        let errors: Vec<(String, Option<&str>)> =
            report.errors().iter().map(|c| (c.anchor(), c.error())).collect();
        assert_eq!(
            errors,
            [
                ("confidentiality--pgp".to_owned(), Some("panicked: boom <b>|x")),
                ("integrity--plain".to_owned(), Some("no *such* thing"))
            ]
        );
        let plain = report.cell("confidentiality", plain).unwrap();
        assert!(plain.verdict().is_some_and(|v| v.tested && !v.holds), "{:?}", plain.verdict());
        assert_eq!(plain.mark(), "❌");

        let md = report.markdown();
        assert!(md.contains(&format!("{LEGEND}{ERROR_LEGEND}\n")), "{md}");
        assert!(
            md.contains("| [confidentiality against the server](#confidentiality) | ❌ | ❓ |\n"),
            "{md}"
        );
        assert!(md.contains("| pgp | ❓ | error: panicked: boom &lt;b>\\|x |\n"), "{md}");
        assert!(md.contains("| plain | ❓ | error: no \\*such\\* thing |\n"), "{md}");

        let html = report.html("../my templates");
        assert!(html.contains("<td class=\"m err\"><a href=\"#confidentiality--pgp\">❓ error: panicked: boom &lt;b&gt;|x</a></td>"));
        assert!(html.contains("<p>No run: panicked: boom &lt;b&gt;|x</p>"));
        assert!(html.contains(
            "<a href=\"../my%20templates/confidentiality.yaml.tmpl\">confidentiality.yaml.tmpl</a>"
        ));
        for c in &report.cells {
            let a = c.anchor();
            for id in [a.clone(), format!("{a}-scenario"), format!("{a}-transcript"), format!("{a}-diagram")]
            {
                assert!(html.contains(&format!("id=\"{id}\"")), "{id} is in the page");
                assert!(html.contains(&format!("href=\"#{id}\"")), "{id} is linked");
            }
        }
        assert_eq!(html.matches("<svg ").count(), 1, "a diagram for the cell that ran");
        assert!(!html.contains("<b>"));

        // Without errors the legend is the usual one.
        let clean = run_cells(&work[..1], 1, |p, column| p.measure(column.protocol));
        assert!(clean.errors().is_empty());
        assert!(
            clean.markdown().contains(&format!("{LEGEND}\n")) && !clean.markdown().contains(ERROR_LEGEND)
        );
    }
}
