//! Every reason a scenario may expect in a device's `alerts:` and `errors:`, assembled from
//! where each is declared: the engines' (those every engine reports and each protocol's, from
//! its registry entry) and the client's (its own alerts, and the stanza and stream errors of
//! RFC 6120). The scenario loader rejects an `expect:` entry that is none of them, the JSON
//! Schema offers them with their meanings, and `scenarios/reasons.md` (`jabberwock reasons`)
//! lists them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use jabberwock_e2e::{Fault, Protocol, Reason, reason};
use jabberwock_xmpp::reasons as client;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::units::At;

/// Who reports a reason, with what it means there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// `every engine`, the protocols whose engines report it (`esession, otr`), or the client
    /// (`client`, `client: stanza error`, `client: stream error`).
    pub by: String,
    /// What it means, in one line.
    pub meaning: &'static str,
    /// An engine's reason: who is at fault when it is reported (`None` for a notice); always
    /// `None` for the client's, which blames no one.
    pub fault: Option<Fault>,
}

impl Source {
    /// Who is at fault, as `scenarios/reasons.md` writes it: the fault as transcripts print
    /// it, `notice` for an engine's notice, `—` for the client's reasons.
    pub fn blame(&self) -> String {
        match self.fault {
            Some(f) => f.to_string(),
            None if self.by.starts_with("client") => "—".to_owned(),
            None => "notice".to_owned(),
        }
    }
}

/// A reason devices report, as scenarios write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// The code (kebab-case).
    pub code: &'static str,
    /// Who reports it and what it means: one source, or several when layers share a code (a
    /// stanza error condition that is also an engine's reason).
    pub sources: Vec<Source>,
}

impl Known {
    /// What it means, each source's meaning prefixed with who reports it when there are several.
    pub fn meaning(&self) -> String {
        match self.sources.as_slice() {
            [one] => one.meaning.to_owned(),
            many => many.iter().map(|s| format!("{}: {}", s.by, s.meaning)).collect::<Vec<_>>().join(" "),
        }
    }

    /// Who reports it.
    pub fn by(&self) -> String {
        self.sources.iter().map(|s| s.by.as_str()).collect::<Vec<_>>().join("; ")
    }
}

/// Every reason, in code order, each listed once with all its sources.
pub fn all() -> Vec<Known> {
    let mut sources: Vec<(&'static str, Source)> = Vec::new();
    let mut add =
        |r: &Reason, by: String| sources.push((r.code, Source { by, meaning: r.meaning, fault: r.fault }));
    for r in reason::EVERY_ENGINE {
        add(r, "every engine".to_owned());
    }
    // A protocol's reasons, with the other protocols declaring the same one, in registry order.
    let mut engines: Vec<(Reason, Vec<&'static str>)> = Vec::new();
    for p in Protocol::ALL {
        for r in p.reasons() {
            match engines.iter_mut().find(|(e, _)| e == r) {
                Some((_, by)) => by.push(p.name()),
                None => engines.push((*r, vec![p.name()])),
            }
        }
    }
    for (r, by) in &engines {
        add(r, by.join(", "));
    }
    for r in client::CLIENT_ALERTS {
        add(r, "client".to_owned());
    }
    for r in client::STANZA_ERRORS {
        add(r, "client: stanza error".to_owned());
    }
    for r in client::STREAM_ERRORS {
        add(r, "client: stream error".to_owned());
    }
    let mut by_code: BTreeMap<&'static str, Vec<Source>> = BTreeMap::new();
    for (code, source) in sources {
        by_code.entry(code).or_default().push(source);
    }
    by_code.into_iter().map(|(code, sources)| Known { code, sources }).collect()
}

/// The reason `code`, if devices report it.
pub fn find(code: &str) -> Option<Known> {
    all().into_iter().find(|k| k.code == code)
}

/// Whether a device speaking `protocol` can report `code`: every engine's reasons, its
/// protocol's, and the client's.
pub fn reported_by(protocol: Protocol, code: &str) -> bool {
    let lists: [&[Reason]; 5] = [
        reason::EVERY_ENGINE,
        protocol.reasons(),
        client::CLIENT_ALERTS,
        client::STANZA_ERRORS,
        client::STREAM_ERRORS,
    ];
    lists.iter().any(|l| l.iter().any(|r| r.code == code))
}

/// The known reasons nearest to `code`: those it is part of (or that are part of it), then
/// the fewest edits away; at most three, and none much farther than the nearest.
pub fn closest(code: &str) -> Vec<&'static str> {
    let mut scored: Vec<(usize, &'static str)> = all()
        .into_iter()
        .map(|k| {
            let contains = !code.is_empty() && (k.code.contains(code) || code.contains(k.code));
            (if contains { 0 } else { 1 + edit_distance(code, k.code) }, k.code)
        })
        .collect();
    scored.sort();
    let best = scored.first().map_or(0, |(score, _)| *score);
    scored.into_iter().take_while(|(score, _)| *score <= best + 2).take(3).map(|(_, c)| c).collect()
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Checks a device's expected `alerts` and `errors`: each entry must be a known reason. On the
/// first that is not, where it is (line, column), its field (`errors[1]`) and why.
pub(crate) fn check_expected(
    alerts: Option<&[At<String>]>,
    errors: Option<&[At<String>]>,
) -> Result<(), ((u64, u64), String, String)> {
    let known = all();
    for (field, list) in [("alerts", alerts), ("errors", errors)] {
        for (i, entry) in list.unwrap_or_default().iter().enumerate() {
            if !known.iter().any(|k| k.code == entry.value) {
                let closest: Vec<String> = closest(entry).iter().map(|c| format!("`{c}`")).collect();
                return Err((
                    (entry.line, entry.column),
                    format!("{field}[{i}]"),
                    format!(
                        "unknown reason `{}`: no engine or client reports it (closest: {}; scenarios/reasons.md lists all {})",
                        entry.value,
                        closest.join(", "),
                        known.len()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A reason, in the JSON Schema: one of the known codes, each with its meaning.
struct Code;

impl JsonSchema for Code {
    fn schema_name() -> Cow<'static, str> {
        "Reason".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let codes: Vec<serde_json::Value> = all()
            .iter()
            .map(|k| serde_json::json!({"const": k.code, "description": format!("{} ({})", k.meaning(), k.by())}))
            .collect();
        json_schema!({
            "description": "A reason a device reports: an engine's error or alert, the client's, or an RFC 6120 stanza or stream error (scenarios/reasons.md lists them).",
            "type": "string",
            "anyOf": codes,
        })
    }
}

/// The schema of an `alerts:` or `errors:` list: known reasons (for `#[schemars(schema_with)]`).
pub(crate) fn list_schema(generator: &mut SchemaGenerator) -> Schema {
    let item = generator.subschema_for::<Code>();
    json_schema!({
        "type": ["array", "null"],
        "default": null,
        "items": item,
    })
}

/// The list as markdown: the committed `scenarios/reasons.md` (a test fails when it is stale).
pub fn markdown() -> String {
    let all = all();
    let mut out = String::new();
    out.push_str("# Reasons\n\n");
    out.push_str(
        "<!-- Generated by `jabberwock reasons > scenarios/reasons.md` from the declarations \
         (peers/e2e/src/reason.rs, each protocol's registry entry, peers/xmpp/src/reasons.rs); \
         a test fails when this file is stale. -->\n\n",
    );
    out.push_str(&format!(
        "The {} reasons a device reports, and so all a scenario's `expect:` may list in a device's \
         `alerts:` and `errors:` (anything else is an error when the file loads). *Every engine* \
         reports the codes of its typed errors; a protocol's engine reports those its registry \
         entry lists; the *client* reports its own alerts and the RFC 6120 stanza errors it \
         receives and stream errors that end its stream. *At fault* is whom an engine blames \
         when it reports the reason (transcripts print it with the error): the *peer* (what its \
         keys authenticated is wrong), the *path* (an authenticated stanza travelled wrongly: \
         twice, late, redirected; or the path served keys that are not the peer's), the *peer \
         or path* (nothing authenticates the evidence), or *this device* (its own policy, \
         settings or limits); a *notice* blames no one (the rule: peers/e2e/src/error.rs).\n\n",
        all.len()
    ));
    out.push_str("| reason | meaning | reported by | at fault |\n|---|---|---|---|\n");
    for k in &all {
        let meaning = match k.sources.as_slice() {
            [one] => one.meaning.to_owned(),
            many => {
                many.iter().map(|s| format!("*{}*: {}", s.by, s.meaning)).collect::<Vec<_>>().join("<br>")
            }
        };
        let by = k.sources.iter().map(|s| s.by.as_str()).collect::<Vec<_>>().join("<br>");
        let blame = k.sources.iter().map(Source::blame).collect::<Vec<_>>().join("<br>");
        out.push_str(&format!("| `{}` | {} | {} | {} |\n", k.code, meaning.replace('|', "\\|"), by, blame));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(value: &str, line: u64, column: u64) -> At<String> {
        At { value: value.to_owned(), line, column }
    }

    #[test]
    fn every_reason_is_kebab_case_listed_once_and_means_something() {
        let all = all();
        assert!(all.len() > 100, "{}", all.len());
        for k in &all {
            assert!(reason::is_kebab_case(k.code), "{}", k.code);
            for s in &k.sources {
                assert!(!s.by.is_empty() && !s.meaning.is_empty(), "{}", k.code);
                assert!(!s.meaning.contains('|') && !s.meaning.contains('\n'), "{}", k.code);
                // Markdown would take `<from/>` for HTML: element names go in backticks.
                let prose = s.meaning.split('`').step_by(2).collect::<String>();
                assert!(
                    !prose.contains('<') && s.meaning.matches('`').count() % 2 == 0,
                    "{}: {}",
                    k.code,
                    s.meaning
                );
            }
        }
        // A layer declares each code once.
        for (name, list) in [
            ("every engine", reason::EVERY_ENGINE),
            ("shared", reason::SHARED),
            ("client alerts", client::CLIENT_ALERTS),
            ("stanza errors", client::STANZA_ERRORS),
            ("stream errors", client::STREAM_ERRORS),
        ] {
            let mut codes: Vec<&str> = list.iter().map(|r| r.code).collect();
            codes.sort_unstable();
            let before = codes.len();
            codes.dedup();
            assert_eq!(before, codes.len(), "{name} lists a code twice");
        }
        // Shared codes say so, one meaning for all their protocols.
        let bad_mac = find("bad-mac").unwrap();
        assert_eq!(bad_mac.sources.len(), 1);
        assert!(bad_mac.by().contains(", "), "{}", bad_mac.by());
        let conflict = find("conflict").unwrap();
        assert_eq!(conflict.by(), "client: stanza error; client: stream error");
        assert!(conflict.meaning().starts_with("client: stanza error: "));
        assert_eq!(find("malformed").unwrap().by(), "every engine");
        assert!(find("nonsense").is_none());
    }

    #[test]
    fn an_unknown_reason_names_the_closest() {
        assert_eq!(closest("bad-macs")[0], "bad-mac");
        assert_eq!(closest("item-not-fund"), ["item-not-found"]);
        assert_eq!(closest("mac")[..2], ["bad-mac", "bad-record-mac"]);
        let untrusted = closest("untrusted");
        assert!(untrusted.len() == 3 && untrusted.iter().all(|c| c.contains("untrusted")), "{untrusted:?}");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);

        let alerts = [at("unencrypted", 3, 9)];
        let errors = [at("bad-mac", 4, 10), at("bad-macs", 4, 19)];
        assert_eq!(check_expected(Some(&alerts), None), Ok(()));
        let (pos, field, message) = check_expected(Some(&alerts), Some(&errors)).unwrap_err();
        assert_eq!((pos, field.as_str()), ((4, 19), "errors[1]"));
        assert!(
            message
                .starts_with("unknown reason `bad-macs`: no engine or client reports it (closest: `bad-mac`"),
            "{message}"
        );
    }

    #[test]
    fn the_markdown_has_one_row_per_reason() {
        let md = markdown();
        let rows = md.lines().filter(|l| l.starts_with("| `")).count();
        assert_eq!(rows, all().len());
        assert!(md.contains("| `bad-mac` | "));
        let row =
            |code: &str| md.lines().find(|l| l.starts_with(&format!("| `{code}` |"))).unwrap_or_default();
        assert!(row("bad-mac").ends_with("| peer or path |"), "{}", row("bad-mac"));
        assert!(row("replayed-counter").ends_with("| path |"), "{}", row("replayed-counter"));
        assert!(row("policy").ends_with("| this device |"), "{}", row("policy"));
        assert!(row("otr-session").ends_with("| notice |"), "{}", row("otr-session"));
        assert!(row("forged-carbon").ends_with("| — |"), "{}", row("forged-carbon"));
        // A code both the client and an engine report blames per source.
        assert!(row("not-acceptable").ends_with("| peer or path<br>— |"), "{}", row("not-acceptable"));
    }
}
