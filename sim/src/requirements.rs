//! XEP-0210's requirements, answered row by row from the property runs.
//!
//! XEP-0210 (`../shared/specs/xep-0210.xml`) lists ten security requirements (§3) and eight
//! application requirements (§4) for end-to-end encryption in XMPP. Each [`Requirement`] names
//! the properties of the suite ([`crate::properties::PROPERTIES`]) whose runs measure it; its
//! cell for a protocol is computed from those cells of the [`Report`], never typed in:
//! ❌ when any of its properties failed (the reasons of those that did), ⚪ when none failed
//! but one could not be tested, ✅ when every one was tested and held. A requirement no run
//! of this bench can measure says why, and its cells are ⚪ with that reason.
//!
//! [`Requirements::markdown`] is `reports/requirements.md` (a test fails when it is stale);
//! [`Requirements::html`] is the same page with every cell linked to the runs in
//! `matrix.html`.

use core::fmt::Write as _;

use jabberwock_e2e::Protocol;

use crate::properties::{PROPERTIES, Property};
use crate::report::{Cell, ERROR_MARK, Report, html_escape, md_cell, url_path};

/// How strongly XEP-0210 asks for a requirement (its RFC 2119 key word, or "ideally" where the
/// text says "Ideally, it would be possible").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// MUST.
    Must,
    /// SHOULD.
    Should,
    /// "Ideally".
    Ideally,
}

impl Level {
    /// As the XEP writes it.
    pub fn word(self) -> &'static str {
        match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
            Level::Ideally => "ideally",
        }
    }
}

/// One requirement of XEP-0210.
#[derive(Debug)]
pub struct Requirement {
    /// Its section number, as the XEP numbers it (`3.1`).
    pub section: &'static str,
    /// Its title, as in the XEP.
    pub topic: &'static str,
    /// The XEP's anchor for it (`reqs-encrypt`).
    pub anchor: &'static str,
    /// The strongest key word of its text.
    pub level: Level,
    /// What it asks, in the XEP's words (shortened).
    pub asks: &'static str,
    /// The ids of the properties whose runs measure it, in suite order.
    pub measured_by: &'static [&'static str],
    /// When no property measures it: why no run of this bench can.
    pub unmeasured: Option<&'static str>,
}

/// XEP-0210's requirements in the XEP's order.
pub const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        section: "3.1",
        topic: "Confidentiality",
        anchor: "reqs-encrypt",
        level: Level::Must,
        asks: "The stanzas MUST NOT be understandable to any other entity; a server should understand them only to route them.",
        measured_by: &["confidentiality"],
        unmeasured: None,
    },
    Requirement {
        section: "3.1",
        topic: "Confidentiality: routing data only",
        anchor: "reqs-encrypt",
        level: Level::Should,
        asks: "The encrypted stanzas should be understood by an intermediate server only to the extent required to route them.",
        measured_by: &["metadata"],
        unmeasured: None,
    },
    Requirement {
        section: "3.2",
        topic: "Integrity",
        anchor: "reqs-integrity",
        level: Level::Must,
        asks: "No other entity may change the content of the stanzas, or remove or insert stanzas, undetected.",
        measured_by: &["integrity"],
        unmeasured: None,
    },
    Requirement {
        section: "3.3",
        topic: "Replay Protection",
        anchor: "reqs-replay",
        level: Level::Must,
        asks: "Alice or Bob MUST be able to identify and reject copies of their previous communications resent by another entity.",
        measured_by: &["replay"],
        unmeasured: None,
    },
    Requirement {
        section: "3.4",
        topic: "Perfect Forward Secrecy",
        anchor: "reqs-forward",
        level: Level::Must,
        asks: "The communication MUST NOT be revealed even if long-lived keys are compromised in the future.",
        measured_by: &["forward-secrecy"],
        unmeasured: None,
    },
    Requirement {
        section: "3.5",
        topic: "PKI Independence",
        anchor: "reqs-pki",
        level: Level::Must,
        asks: "The protocol MUST NOT rely on any PKI, certification authority, web of trust or other trust model external to the trust between Alice and Bob.",
        measured_by: &["pki-independence"],
        unmeasured: None,
    },
    Requirement {
        section: "3.6",
        topic: "Authentication",
        anchor: "reqs-auth",
        level: Level::Must,
        asks: "Each party MUST know that the other party is who they want to communicate with (which may be as simple as the same Bob as yesterday).",
        measured_by: &["continuity", "key-substitution-verified", "authentication"],
        unmeasured: None,
    },
    Requirement {
        section: "3.7",
        topic: "Identity Protection",
        anchor: "reqs-id-protect",
        level: Level::Must,
        asks: "No other entity should be able to identify Alice or Bob; public keys MUST NOT be revealed to a passive attack, and Bob MUST be able to protect his from an active one.",
        measured_by: &["identity-protection", "identity-protection-active"],
        unmeasured: None,
    },
    Requirement {
        section: "3.8",
        topic: "Repudiability",
        anchor: "reqs-repudiate",
        level: Level::Must,
        asks: "Alice and Bob MUST be able to repudiate any stanza: no one can prove cryptographically that a transcript was not modified.",
        measured_by: &["deniability"],
        unmeasured: None,
    },
    Requirement {
        section: "3.9",
        topic: "Robustness",
        anchor: "reqs-robust",
        level: Level::Should,
        asks: "More than one difficult challenge before an attack can succeed (keys from as many shared secrets as possible, like retained secrets).",
        measured_by: &["robustness"],
        unmeasured: None,
    },
    Requirement {
        section: "3.10",
        topic: "Upgradability",
        anchor: "reqs-upgrade",
        level: Level::Must,
        asks: "Alice MUST tell Bob which versions she supports; Bob MUST choose one or reject the session.",
        measured_by: &["upgradability"],
        unmeasured: None,
    },
    Requirement {
        section: "4.1",
        topic: "Generality",
        anchor: "reqs-generality",
        level: Level::Must,
        asks: "The solution MUST apply to the full content of any stanza type (message, presence, iq) between two entities.",
        measured_by: &["generality"],
        unmeasured: None,
    },
    Requirement {
        section: "4.2",
        topic: "Implementability",
        anchor: "reqs-implement",
        level: Level::Should,
        asks: "Client developers can implement it in a relatively straightforward and interoperable fashion.",
        measured_by: &[],
        unmeasured: Some(
            "a judgement, not an outcome of a run; which independent implementations interoperate with ours is in interop.md",
        ),
    },
    Requirement {
        section: "4.3",
        topic: "Usability",
        anchor: "reqs-usable",
        level: Level::Must,
        asks: "Transparent to use; verifying keys needs no more than a one-time out-of-band comparison of up to 6 alphanumeric characters.",
        measured_by: &["usability"],
        unmeasured: None,
    },
    Requirement {
        section: "4.4",
        topic: "Efficiency",
        anchor: "reqs-efficient",
        level: Level::Must,
        asks: "Efficient with constrained CPU and bandwidth; the number of stanzas to negotiate a session MUST be minimized.",
        measured_by: &["efficiency"],
        unmeasured: None,
    },
    Requirement {
        section: "4.5",
        topic: "Flexibility",
        anchor: "reqs-flexible",
        level: Level::Must,
        asks: "Compatible with a variety of algorithms and certification schemes, and able to evolve to correct weaknesses. Measured by the same run as §3.10: a protocol evolves only through an offer its peer chooses from, so what a rollback of that offer does is what evolving would meet; which algorithms and certification schemes an engine could be configured with is not measured.",
        measured_by: &["upgradability"],
        unmeasured: None,
    },
    Requirement {
        section: "4.6",
        topic: "Offline Sessions",
        anchor: "reqs-offline",
        level: Level::Should,
        asks: "Encrypt messages stored for later delivery and still benefit from forward secrecy.",
        measured_by: &["offline-first-contact", "offline-sender-gone", "offline-forward-secrecy"],
        unmeasured: None,
    },
    Requirement {
        section: "4.7",
        topic: "Interoperability",
        anchor: "reqs-interop",
        level: Level::Ideally,
        asks: "Exchange encrypted messages with users of non-XMPP messaging systems.",
        measured_by: &[],
        unmeasured: Some("outside what a simulated XMPP network can run"),
    },
    Requirement {
        section: "4.8",
        topic: "Object Encryption",
        anchor: "reqs-object",
        level: Level::Ideally,
        asks: "Where no session is desired, encrypt, sign and send a single stanza in isolation.",
        measured_by: &["object-encryption"],
        unmeasured: None,
    },
];

/// The answer for one requirement and one protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// ✅, ❌, ⚪, or [`ERROR_MARK`].
    pub mark: &'static str,
    /// Why, from the runs: each property that decided it, with its reason.
    pub reason: String,
    /// The properties that decided it (those that failed, or could not be tested, or all).
    pub decided_by: Vec<&'static str>,
}

impl Requirement {
    /// The properties that measure it.
    pub fn properties(&self) -> impl Iterator<Item = &'static Property> + '_ {
        self.measured_by.iter().filter_map(|id| PROPERTIES.iter().find(|p| p.id == *id))
    }

    /// Its answer for `protocol`, from `report`'s cells.
    pub fn answer(&self, report: &Report, protocol: Protocol) -> Answer {
        let Some(why) = self.unmeasured.filter(|_| self.measured_by.is_empty()) else {
            return combine(self.measured_by.iter().map(|id| (*id, report.cell(id, protocol))));
        };
        Answer { mark: "⚪", reason: format!("not measured: {why}"), decided_by: Vec::new() }
    }
}

/// The answer from the cells of the properties that measure a requirement (`None`: the report
/// has no such cell).
fn combine<'a>(cells: impl Iterator<Item = (&'static str, Option<&'a Cell>)>) -> Answer {
    let cells: Vec<(&'static str, Option<&Cell>)> = cells.collect();
    let title = |id: &'static str| PROPERTIES.iter().find(|p| p.id == id).map_or(id, |p| p.title);
    let pick = |keep: &dyn Fn(Option<&Cell>) -> bool, mark: &'static str| {
        let chosen: Vec<&(&'static str, Option<&Cell>)> = cells.iter().filter(|(_, c)| keep(*c)).collect();
        (!chosen.is_empty()).then(|| Answer {
            mark,
            reason: chosen
                .iter()
                .map(|(id, c)| {
                    let reason = c.map_or_else(|| "no run".to_owned(), |c| c.reason());
                    if cells.len() == 1 { reason } else { format!("{}: {reason}", title(id)) }
                })
                .collect::<Vec<_>>()
                .join("; "),
            decided_by: chosen.iter().map(|(id, _)| *id).collect(),
        })
    };
    let mark = |c: Option<&Cell>| c.map_or(ERROR_MARK, Cell::mark);
    pick(&|c| mark(c) == ERROR_MARK, ERROR_MARK)
        .or_else(|| pick(&|c| mark(c) == "❌", "❌"))
        .or_else(|| pick(&|c| mark(c) == "⚪", "⚪"))
        .or_else(|| pick(&|_| true, "✅"))
        .unwrap_or_else(|| Answer {
            mark: "⚪",
            reason: "no property measures it".to_owned(),
            decided_by: vec![],
        })
}

/// The requirements answered from one report.
#[derive(Debug)]
pub struct Requirements<'a> {
    report: &'a Report,
}

const LEGEND: &str = "✅ every run that measures it held · ❌ one did not (its reason) · ⚪ not tested, or not measurable here (why)";

impl<'a> Requirements<'a> {
    /// The requirements answered from `report` (which must hold every cell of the suite).
    pub fn new(report: &'a Report) -> Requirements<'a> {
        Requirements { report }
    }

    /// For each protocol: the requirements at `level` it does not meet (❌, ⚪ or ❓), in order.
    fn short_of(&self, protocol: Protocol, level: Level) -> Vec<(&'static Requirement, Answer)> {
        REQUIREMENTS
            .iter()
            .filter(|r| r.level == level)
            .map(|r| (r, r.answer(self.report, protocol)))
            .filter(|(_, a)| a.mark != "✅")
            .collect()
    }

    /// The markdown committed in `reports/requirements.md`.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# XEP-0210, requirement by requirement\n");
        let _ = writeln!(
            s,
            "Generated by `jabberwock matrix` from the same runs as [`matrix.md`](matrix.md): do not edit \
             by hand, `cargo test` fails when this file is stale. Each row is a requirement of \
             [XEP-0210: Requirements for Encrypted Sessions](https://xmpp.org/extensions/xep-0210.html), \
             with its section number and title as in the XEP; each cell is computed from the runs of \
             the properties that measure it (listed under the row's section below); a mark links to the \
             matrix's section of the property that decided it, where its run's reason is, and \
             `requirements.html` links it to the run itself.\n"
        );
        let _ = writeln!(s, "{LEGEND}\n");
        s.push_str("| § | requirement | level |");
        for p in Protocol::ALL {
            let _ = write!(s, " {} |", md_cell(p.name()));
        }
        s.push_str("\n|---|---|---|");
        for _ in Protocol::ALL {
            s.push_str(":-:|");
        }
        s.push('\n');
        for r in REQUIREMENTS {
            let _ =
                write!(s, "| {} | [{}](#{}) | {} |", r.section, md_cell(r.topic), slug(r), r.level.word());
            for p in Protocol::ALL {
                // The mark links to the matrix's section of the property that decided it,
                // where the run's reason is.
                let a = r.answer(self.report, *p);
                match a.decided_by.first() {
                    Some(id) => {
                        let _ = write!(s, " [{}](matrix.md#{}) |", a.mark, url_path(id));
                    }
                    None => {
                        let _ = write!(s, " {} |", a.mark);
                    }
                }
            }
            s.push('\n');
        }
        s.push_str("\n## The answer\n\n");
        s.push_str(
            "Which proposals meet every MUST of XEP-0210 in these runs, and where the others fall short \
             (❌ failed, ⚪ not measured or not tested).\n\n",
        );
        s.push_str("| protocol | every MUST met | MUSTs short of | SHOULDs short of | ideals short of |\n");
        s.push_str("|---|:-:|---|---|---|\n");
        for p in Protocol::ALL {
            let (met, [musts, shoulds, ideals]) = self.answer_row(*p);
            let _ = writeln!(
                s,
                "| {} | {met} | {} | {} | {} |",
                md_cell(p.name()),
                md_cell(&musts),
                md_cell(&shoulds),
                md_cell(&ideals)
            );
        }
        for r in REQUIREMENTS {
            let _ = writeln!(s, "\n## §{} {}\n", r.section, md_cell(r.topic));
            let _ = writeln!(
                s,
                "{} ({}, [XEP-0210 §{}](https://xmpp.org/extensions/xep-0210.html#{}))\n",
                md_cell(r.asks),
                r.level.word(),
                r.section,
                r.anchor
            );
            if r.measured_by.is_empty() {
                let _ = writeln!(s, "Not measured: {}.\n", md_cell(r.unmeasured.unwrap_or("no property")));
            } else {
                let links: Vec<String> = r
                    .properties()
                    .map(|p| format!("[{}](matrix.md#{})", md_cell(p.title), url_path(p.id)))
                    .collect();
                let _ = writeln!(s, "Measured by: {}.\n", links.join(", "));
            }
            s.push_str("| protocol | answer | from the runs |\n|---|:-:|---|\n");
            for p in Protocol::ALL {
                let a = r.answer(self.report, *p);
                let _ = writeln!(s, "| {} | {} | {} |", md_cell(p.name()), a.mark, md_cell(&a.reason));
            }
        }
        s
    }

    /// The same page in HTML, every cell linked to the run behind it in `matrix` (the path of
    /// `matrix.html` as seen from where this page is written).
    pub fn html(&self, matrix: &str) -> String {
        let mut s = String::new();
        s.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
        s.push_str("<title>Jabberwock: XEP-0210, requirement by requirement</title>");
        let _ = writeln!(s, "<style>{}</style></head><body>", crate::report::STYLE);
        s.push_str(
            "<h1>XEP-0210, requirement by requirement</h1>\n<p>Each cell is computed from the runs of \
             the properties that measure the requirement; click it for the run behind it.</p>\n",
        );
        let _ = writeln!(s, "<p>{}</p>", html_escape(LEGEND));
        s.push_str("<table><tr><th>§</th><th>requirement</th><th>level</th>");
        for p in Protocol::ALL {
            let _ = write!(s, "<th>{}</th>", html_escape(p.name()));
        }
        s.push_str("</tr>\n");
        for r in REQUIREMENTS {
            let _ = write!(
                s,
                "<tr><td>{}</td><th><a href=\"https://xmpp.org/extensions/xep-0210.html#{}\">{}</a></th><td>{}</td>",
                html_escape(r.section),
                html_escape(r.anchor),
                html_escape(r.topic),
                r.level.word()
            );
            for p in Protocol::ALL {
                let a = r.answer(self.report, *p);
                let class = match a.mark {
                    "✅" => "ok",
                    "❌" => "no",
                    "⚪" => "na",
                    _ => "err",
                };
                let text = format!("{} {}", a.mark, html_escape(&a.reason));
                match a.decided_by.first() {
                    Some(id) => {
                        let to = format!("{matrix}#{id}--{}", p.name());
                        let _ =
                            write!(s, "<td class=\"m {class}\"><a href=\"{}\">{text}</a></td>", href(&to));
                    }
                    None => {
                        let _ = write!(s, "<td class=\"m {class}\">{text}</td>");
                    }
                }
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</table>\n<h2>The answer</h2>\n<table><tr><th>protocol</th><th>every MUST met</th>");
        s.push_str("<th>MUSTs short of</th><th>SHOULDs short of</th><th>ideals short of</th></tr>\n");
        for p in Protocol::ALL {
            let (met, lists) = self.answer_row(*p);
            let _ = write!(s, "<tr><th>{}</th><td>{met}</td>", html_escape(p.name()));
            for list in lists {
                let _ = write!(s, "<td>{}</td>", html_escape(&list));
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</table>\n</body></html>\n");
        s
    }

    /// A protocol's line of the closing table: whether it meets every MUST (✅, ❌ when one
    /// failed or errored, ⚪ when the others were not measured), and the MUSTs, SHOULDs and
    /// ideals it falls short of (`—` for none).
    fn answer_row(&self, protocol: Protocol) -> (&'static str, [String; 3]) {
        let list = |level| {
            let short = self.short_of(protocol, level);
            if short.is_empty() {
                "—".to_owned()
            } else {
                short
                    .iter()
                    .map(|(r, a)| format!("{} §{} {}", a.mark, r.section, r.topic))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let musts = self.short_of(protocol, Level::Must);
        let met = if musts.is_empty() {
            "✅"
        } else if musts.iter().any(|(_, a)| a.mark == "❌" || a.mark == ERROR_MARK) {
            "❌"
        } else {
            "⚪"
        };
        (met, [list(Level::Must), list(Level::Should), list(Level::Ideally)])
    }
}

/// A link's `href`: the path percent-encoded, the fragment kept, then HTML-escaped.
fn href(url: &str) -> String {
    match url.split_once('#') {
        Some((path, fragment)) => html_escape(&format!("{}#{}", url_path(path), url_path(fragment))),
        None => html_escape(&url_path(url)),
    }
}

/// The markdown anchor of a requirement's section (`§3.1 Confidentiality` → `31-confidentiality`,
/// as GitHub makes heading ids).
fn slug(r: &Requirement) -> String {
    let heading = format!("§{} {}", r.section, r.topic);
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            c if c.is_ascii_alphanumeric() => Some(c),
            ' ' | '-' => Some('-'),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_requirement_names_properties_of_the_suite_or_says_why_not() {
        // XEP-0210 has ten security and eight application requirements; §3.1's second sentence
        // (a "should": only routing data) is a row of its own.
        assert_eq!(REQUIREMENTS.len(), 19);
        for r in REQUIREMENTS {
            for id in r.measured_by {
                assert!(PROPERTIES.iter().any(|p| p.id == *id), "§{}: no property {id}", r.section);
            }
            assert!(
                r.measured_by.is_empty() == r.unmeasured.is_some(),
                "§{}: either properties or a reason why none",
                r.section
            );
        }
    }

    /// A requirement measured by two properties: one that failed decides it (with its reason,
    /// named), one error cell decides it before that, and with both held it is ✅.
    #[test]
    fn a_failed_or_errored_property_decides_the_requirement() {
        let property = |id: &str| PROPERTIES.iter().find(|p| p.id == id).unwrap();
        let (plain, pgp) = (Protocol::ALL[0], Protocol::ALL[1]);
        let measured = |id: &str, protocol| {
            let p = property(id);
            let (verdict, outcome) = p.measure(protocol).unwrap();
            Cell {
                property: p,
                protocol,
                theirs: None,
                yaml: p.yaml(protocol),
                result: Ok(crate::report::Measured { verdict, outcome }),
            }
        };
        let report = Report {
            cells: vec![
                measured("confidentiality", plain),
                measured("confidentiality", pgp),
                measured("integrity", pgp),
                Cell {
                    property: property("integrity"),
                    protocol: plain,
                    theirs: None,
                    yaml: String::new(),
                    result: Err("boom".to_owned()),
                },
            ],
        };
        let ids = |p: Protocol| ["confidentiality", "integrity"].map(|id| (id, report.cell(id, p)));
        let held = combine(ids(pgp).into_iter());
        assert_eq!(held.mark, "✅");
        assert_eq!(held.decided_by, ["confidentiality", "integrity"]);
        assert!(
            held.reason.starts_with("confidentiality against the server: read 0 of 3"),
            "{}",
            held.reason
        );
        let errored = combine(ids(plain).into_iter());
        assert_eq!((errored.mark, errored.decided_by), (ERROR_MARK, vec!["integrity"]));
        let failed = combine([("confidentiality", report.cell("confidentiality", plain))].into_iter());
        assert_eq!(failed.mark, "❌");
        assert_eq!(failed.reason, "read 3 of 3 messages from the server", "one property: no title");
        let missing = combine([("replay", report.cell("replay", plain))].into_iter());
        assert_eq!((missing.mark, missing.reason.as_str()), (ERROR_MARK, "no run"));
    }

    #[test]
    fn anchors_are_what_github_makes_of_the_headings() {
        let r = REQUIREMENTS.iter().find(|r| r.section == "3.10").unwrap();
        assert_eq!(slug(r), "310-upgradability");
        let r = REQUIREMENTS.iter().find(|r| r.section == "3.3").unwrap();
        assert_eq!(slug(r), "33-replay-protection");
    }
}
