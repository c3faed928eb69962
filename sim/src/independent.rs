//! The report of independent implementations under attack (`reports/implementations.md`):
//! every property template run with Alice's or Bob's devices on an independent implementation
//! (behind its adapter, `docs/engine-protocol.md`) and the other side on ours, next to our
//! own column, with every verdict that differs from ours marked and explained.

use core::fmt::Write as _;

use jabberwock_e2e::Protocol;

use crate::properties::{Side, Theirs};
use crate::report::{Cell, Column, Report, md_cell, url_path};

/// An implementation that could not run here: its name, the protocol, and why.
pub type Missing = (String, Protocol, String);

/// What an implementation's adapter said it is, for a protocol: (name, protocol, its hello's
/// implementation and version, what varies run to run if anything).
pub type Said = (String, Protocol, String, Option<String>);

/// The independent columns a registry gives here, with what each adapter said it is and
/// which could not run.
#[derive(Debug)]
pub struct Lineup {
    /// For each implementation installed here and each protocol it speaks, one column as
    /// Alice and one as Bob; protocols in registry order, each one's implementations in the
    /// registry's.
    pub columns: Vec<Column>,
    /// What their adapters said they are.
    pub said: Vec<Said>,
    /// Those that cannot run here, each with why.
    pub missing: Vec<Missing>,
}

/// The columns of every implementation of `registry` that is installed here.
pub fn lineup(registry: &crate::implementations::Registry) -> Lineup {
    let mut lineup = Lineup { columns: Vec::new(), said: Vec::new(), missing: Vec::new() };
    for implementation in &registry.implementations {
        for protocol in &implementation.protocols {
            let name = implementation.name.clone();
            match crate::implementations::probe(implementation, *protocol) {
                Ok(version) => {
                    for side in Side::BOTH {
                        let theirs = Theirs { implementation: implementation.clone(), side };
                        lineup.columns.push(Column { protocol: *protocol, theirs: Some(theirs) });
                    }
                    lineup.said.push((name, *protocol, version, implementation.varies.clone()));
                }
                Err(why) => lineup.missing.push((name, *protocol, why)),
            }
        }
    }
    lineup.columns.sort_by_key(|c| Protocol::ALL.iter().position(|p| *p == c.protocol));
    lineup
}

/// What marks a verdict that differs from ours.
pub const DIFFERS: &str = "≠";

/// A reason as the committed report shows it: for an implementation whose runs vary (its
/// library's randomness is its own), what changes from run to run — hex strings of 16 digits
/// or more (keys, fingerprints), numbers of 100 or more (sizes, authentication strings) — is
/// masked, so that the report only changes when a verdict or its account does.
fn shown(cell: &Cell) -> String {
    let reason = cell.reason();
    if cell.theirs.as_ref().is_none_or(|t| t.implementation.varies.is_none()) {
        return reason;
    }
    let mut out = String::with_capacity(reason.len());
    let chars: Vec<char> = reason.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let hex = chars[i..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
        let digits = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        let boundary = i == 0 || !chars[i - 1].is_ascii_alphanumeric();
        if boundary && hex >= 16 {
            out.push_str(VARIES);
            i += hex;
        } else if boundary && digits >= 3 && chars.get(i + digits).is_none_or(|c| !c.is_ascii_alphanumeric())
        {
            out.push_str(VARIES);
            i += digits;
        } else if boundary && (hex > 0 || digits > 0) {
            let word = chars[i..].iter().take_while(|c| c.is_ascii_alphanumeric()).count().max(1);
            out.extend(&chars[i..i + word]);
            i += word;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// What stands for a masked value.
pub const VARIES: &str = "⟨varies⟩";

/// A version text with every version number cut to major.minor (`3.0.19-1~deb12u2` → `3.0`):
/// the committed report changes with a library's minor version, not with every patch or
/// distribution rebuild (the transcripts keep the exact one).
fn major_minor(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i].is_ascii_digit() && (i == 0 || !chars[i - 1].is_ascii_alphanumeric());
        let digits = |from: usize| chars[from..].iter().take_while(|c| c.is_ascii_digit()).count();
        let major = if starts { digits(i) } else { 0 };
        let dot = i + major;
        let minor = if major > 0 && chars.get(dot) == Some(&'.') { digits(dot + 1) } else { 0 };
        if minor == 0 {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        out.extend(&chars[i..dot + 1 + minor]);
        i = dot + 1 + minor;
        // The rest of the version: more numbers, a distribution's revision.
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '-' | '~' | '+'))
            && !(chars[i] == '.' && chars.get(i + 1).is_none_or(|c| !c.is_ascii_alphanumeric()))
        {
            i += 1;
        }
    }
    out
}

/// Whether two cells' verdicts differ (an error cell differs from any verdict).
fn differs(theirs: &Cell, ours: &Cell) -> bool {
    theirs.mark() != ours.mark()
}

/// The report's markdown. `theirs` holds the independent columns' cells, `ours` our own
/// (the matrix); `missing`, the implementations that could not run here; `said`, what each
/// (implementation, protocol) adapter's hello said it is.
pub fn markdown(theirs: &Report, ours: &Report, missing: &[Missing], said: &[Said]) -> String {
    let mut s = String::new();
    s.push_str("# Independent implementations under attack\n\n");
    s.push_str(
        "Generated by `jabberwock matrix` (do not edit by hand; CI's interop tier fails when it is stale). \
         Each column runs every property template of [`scenarios/properties/`](../scenarios/properties/) \
         with one side — Alice's or Bob's devices — on an independent implementation behind its adapter \
         ([`docs/engine-protocol.md`](../docs/engine-protocol.md); adapters in \
         [`peers/reference/`](../peers/reference/)) and the other side on ours: a mixed pair, under the \
         same faults and attacks as our own column, judged by the same judges. Any run reproduces with \
         `jabberwock run <template, protocol filled in> --implementation bob=<name>`. A verdict that \
         differs from ours is marked ≠ and listed under its protocol with both runs' reasons. ⚪ with \
         \"an adapter could not do what the run asked\" quotes the transcript line of the call it could \
         not make (unimplemented, or the adapter crashed, hung or answered garbage): such a run measures \
         nothing certain. The transcripts are in `implementations.html`, written by the same command.\n\n",
    );
    s.push_str("✅ the property held in the run · ❌ it did not · ⚪ the attack could not be carried out · ");
    s.push_str("❓ the run could not be made · ≠ differs from ours\n\n");
    s.push_str(
        "## The implementations\n\nWhere an implementation's runs vary for a given seed (its library draws its own \
         randomness), the reasons below mask what varies (keys, fingerprints, sizes) as ⟨varies⟩: the verdicts do \
         not vary, and CI checks this file against a fresh run.\n\n\
         | implementation | protocol | its adapter says it is (versions to major.minor; transcripts give the exact one) | the same bytes every run |\n|---|---|---|---|\n",
    );
    for (name, protocol, version, varies) in said {
        let repeat = varies.as_ref().map_or_else(|| "yes".to_owned(), |v| format!("no: {v}"));
        let _ = writeln!(
            s,
            "| [{}](../peers/reference/{}/) | {} | {} | {} |",
            md_cell(name),
            url_path(name),
            protocol.name(),
            md_cell(&major_minor(version)),
            md_cell(&repeat)
        );
    }
    for (name, protocol, why) in missing {
        let _ = writeln!(s, "| {} | {} | not run here: {} | |", md_cell(name), protocol.name(), md_cell(why));
    }
    let columns = theirs.columns();
    for protocol in Protocol::ALL {
        let mine: Vec<&Column> = columns.iter().filter(|c| c.protocol == *protocol).collect();
        if mine.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n## {}\n", protocol.name());
        s.push_str("| property | ours |");
        for c in &mine {
            let label = c.theirs.as_ref().map(|t| t.label()).unwrap_or_default();
            let _ = write!(s, " {} |", md_cell(&label));
        }
        s.push_str("\n|---|:-:|");
        for _ in &mine {
            s.push_str(":-:|");
        }
        s.push('\n');
        let mut differences = Vec::new();
        let mut every = Vec::new();
        for property in crate::properties::PROPERTIES {
            let Some(our) = ours.cell(property.id, *protocol) else { continue };
            let _ = write!(s, "| {} | {} |", md_cell(property.title), our.mark());
            for column in &mine {
                let cell =
                    theirs.cells.iter().find(|c| c.property.id == property.id && c.column() == **column);
                match cell {
                    Some(cell) if differs(cell, our) => {
                        let _ = write!(s, " {} {DIFFERS} |", cell.mark());
                        differences.push((property, cell, our));
                    }
                    Some(cell) => {
                        let _ = write!(s, " {} |", cell.mark());
                    }
                    None => s.push_str(" |"),
                }
                if let Some(cell) = cell {
                    every.push((property, cell));
                }
            }
            s.push('\n');
        }
        if differences.is_empty() {
            s.push_str("\nEvery verdict is ours.\n");
        } else {
            let _ = writeln!(
                s,
                "\n### Where they differ from ours ({})\n\n| property | column | theirs | ours |\n|---|---|---|---|",
                differences.len()
            );
            for (property, cell, our) in differences {
                let label = cell.theirs.as_ref().map(|t| t.label()).unwrap_or_default();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} {} | {} {} |",
                    md_cell(property.id),
                    md_cell(&label),
                    cell.mark(),
                    md_cell(&shown(cell)),
                    our.mark(),
                    md_cell(&our.reason())
                );
            }
        }
        let _ = writeln!(
            s,
            "\n<details><summary>Every {} cell's reason</summary>\n\n| property | column | verdict | what happened in the run |\n|---|---|:-:|---|",
            protocol.name()
        );
        for (property, cell) in every {
            let label = cell.theirs.as_ref().map(|t| t.label()).unwrap_or_default();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                md_cell(property.id),
                md_cell(&label),
                cell.mark(),
                md_cell(&shown(cell))
            );
        }
        s.push_str("\n</details>\n");
    }
    s
}

/// One scenario whose Alice has a fault real clients have shipped (`scenarios/quirks/`), run
/// with Bob on each implementation that speaks his protocol.
#[derive(Debug)]
pub struct PeerFault {
    /// The scenario file, as given.
    pub file: String,
    /// Its `about` (the fault, and the client issue it reproduces).
    pub about: String,
    /// Bob's implementation (ours first), and how the run went: `Ok(None)` when every
    /// expectation held, `Ok(Some(the first that did not))`, or `Err(why there is no run)`.
    pub runs: Vec<(String, Result<Option<String>, String>)>,
}

/// Runs every scenario file of `dir` with Bob on ours, then on each implementation of
/// `registry` that speaks Bob's protocol and is installed here.
pub fn peer_faults(dir: &std::path::Path, registry: &crate::implementations::Registry) -> Vec<PeerFault> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|f| f.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    let mut rows = Vec::new();
    for file in files {
        let shown = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let scenario = match crate::load(&file) {
            Ok(s) => s,
            Err(e) => {
                rows.push(PeerFault {
                    file: shown,
                    about: String::new(),
                    runs: vec![("jabberwock".into(), Err(e.to_string()))],
                });
                continue;
            }
        };
        let bob = scenario
            .devices
            .iter()
            .find(|d| d.jid.node().is_some_and(|n| n.as_str() == "bob"))
            .map(|d| d.protocol);
        let mut runs = vec![(crate::implementations::OURS.to_owned(), fault_run(&scenario, None))];
        for implementation in &registry.implementations {
            let Some(protocol) = bob.filter(|p| implementation.speaks(*p)) else { continue };
            if crate::implementations::probe(implementation, protocol).is_err() {
                continue;
            }
            runs.push((implementation.name.clone(), fault_run(&scenario, Some(implementation))));
        }
        rows.push(PeerFault { file: shown, about: scenario.about.clone(), runs });
    }
    rows
}

fn fault_run(
    scenario: &crate::Scenario,
    bob: Option<&crate::implementations::Implementation>,
) -> Result<Option<String>, String> {
    let mut scenario = scenario.clone();
    scenario.use_implementation("bob", bob)?;
    let outcome = crate::run(&scenario).map_err(|e| e.to_string())?;
    Ok(outcome.failure())
}

/// The markdown section of [`peer_faults`]' rows.
pub fn peer_faults_markdown(rows: &[PeerFault]) -> String {
    let mut s = String::from(
        "\n## Peers with the faults real clients have shipped\n\n\
         Each scenario of [`scenarios/quirks/`](../scenarios/quirks/) gives Alice's device (ours) a fault a \
         deployed client had (`quirks:`; the scenario's `about` names the client issue) and says what a robust \
         Bob does; here Bob runs on ours and on every implementation that speaks his protocol. ✅ Bob coped as \
         the scenario expects · ❌ he did not (the first expectation that failed) · ❓ no run.\n\n\
         | scenario | Bob | outcome |\n|---|---|---|\n",
    );
    for row in rows {
        for (bob, run) in &row.runs {
            let outcome = match run {
                Ok(None) => "✅".to_owned(),
                Ok(Some(failed)) => format!("❌ {}", md_cell(failed)),
                Err(e) => format!("❓ {}", md_cell(e)),
            };
            let _ = writeln!(
                s,
                "| [{}](../scenarios/quirks/{}) | {} | {outcome} |",
                md_cell(&row.file),
                url_path(&row.file),
                md_cell(bob)
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::implementations::Implementation;
    use crate::properties::PROPERTIES;

    fn cell(varies: Option<&str>, error: &str) -> Cell {
        let implementation = Implementation {
            name: "lib".into(),
            protocols: vec![],
            run: vec!["x".into()],
            needs: String::new(),
            varies: varies.map(str::to_owned),
            folder: std::path::PathBuf::new(),
        };
        Cell {
            property: &PROPERTIES[0],
            protocol: Protocol::ALL[0],
            theirs: Some(Theirs { implementation, side: Side::Bob }),
            yaml: String::new(),
            result: Err(error.to_owned()),
        }
    }

    #[test]
    fn versions_are_cut_to_major_minor() {
        assert_eq!(major_minor("openssl 3.0.19"), "openssl 3.0");
        assert_eq!(
            major_minor("xmlsec1 1.2.37 (openssl); libssl3=3.0.19-1~deb12u2 libxmlsec1-openssl=1.2.37-2"),
            "xmlsec1 1.2 (openssl); libssl3=3.0 libxmlsec1-openssl=1.2"
        );
        assert_eq!(major_minor("omemo=1.3.0 twomemo=1.2.0, X3DH 1.3.0."), "omemo=1.3 twomemo=1.2, X3DH 1.3.");
        assert_eq!(
            major_minor("libotr 4.1.1 (libgcrypt 1.10.1) x25519 v2"),
            "libotr 4.1 (libgcrypt 1.10) x25519 v2"
        );
    }

    /// What varies run to run is masked in the reasons of implementations that say so: long
    /// hex and numbers of 100 or more; small counts, times and words stay.
    #[test]
    fn reasons_of_varying_implementations_are_masked() {
        let text = "compare \"C82C4CCB03C412E336AADA37B317F9CC 34009\" took 1022–1278 bytes, read 3 of 3 at 6.000s (x25519, sha256)";
        assert_eq!(shown(&cell(None, text)), format!("error: {text}"));
        assert_eq!(
            shown(&cell(Some("keys"), text)),
            "error: compare \"⟨varies⟩ ⟨varies⟩\" took ⟨varies⟩–⟨varies⟩ bytes, read 3 of 3 at 6.000s (x25519, sha256)"
        );
    }
}
