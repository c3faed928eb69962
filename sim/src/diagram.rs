//! Sequence diagrams of one run: Mermaid `sequenceDiagram` text (GitHub renders it in a pull
//! request comment) and a self-contained SVG (for an HTML report).
//!
//! Both are drawn from the transcript's structured fields ([`Entry::from`], [`Entry::to`],
//! [`Entry::actor`], [`Entry::what`], [`Entry::intercepted`]) and the stanza XML, never from
//! the human text (which is only shortened, by dropping the actor it starts with).
//!
//! - Participants, left to right: the devices of the account that sends first, its server,
//!   the attacker (in red), the other servers, then the other accounts' devices.
//! - A hop is an arrow labelled with the stanza's kind, type, id and what it carries
//!   (`message phone-m4 [OMEMO encrypted]`, `iq get phone-fetch7 [pubsub items …:devices]`);
//!   answers (iq result and error) are dashed.
//! - A stanza the attacker took off the wire (dropped, held, delayed, replaced) ends at the
//!   attacker with a cross; what the attacker delivers, injects or releases is a red arrow
//!   from it; its other lines, and every plaintext it read, are red notes over it.
//! - Plaintext a device showed its user is a green note over that device; alerts and errors
//!   are red notes; everything else about a device is a grey note over it.
//! - Time is in every label (and, in the SVG, in the left margin).
//!
//! **What the default view leaves out.** Every line that is not a hop is shown. A hop is
//! shown when the attacker acted on it, or when it is a `<message>` (except PEP
//! notifications), a `<presence>` with a payload, or an `<iq>` sent once the first message
//! has been sent that is not roster, carbons, ping or disco plumbing (nor the answer to
//! one). The rest is session set-up; [`Options::all`] (`jabberwock diagram --all`) shows it.

use core::fmt::Write as _;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use jabberwock_e2e::{Element, FullJid};

use crate::runner::{Outcome, Read};
use crate::transcript::Entry;
use crate::units::fmt_time;

/// What to draw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Every line, session set-up included.
    pub all: bool,
}

/// The run as Mermaid `sequenceDiagram` text.
pub fn mermaid(outcome: &Outcome, options: &Options) -> String {
    Diagram::of(outcome, options).mermaid()
}

/// The run as a self-contained SVG document.
pub fn svg(outcome: &Outcome, options: &Options) -> String {
    Diagram::of(outcome, options).svg()
}

/// What a lifeline stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A client device (a full JID).
    Device,
    /// A server (a domain), or another party that is not a device.
    Server,
    /// The attacker.
    Attacker,
}

/// One lifeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// What its header says.
    pub name: String,
    /// What it stands for.
    pub role: Role,
}

/// How an arrow is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrow {
    /// A stanza on its way.
    Stanza,
    /// An answer (iq result or error): dashed.
    Reply,
    /// A stanza the attacker took off the wire: red, ends at the attacker with a cross.
    Taken,
    /// What the attacker put on a hop: red, from the attacker.
    Attack,
    /// A stanza lost with its session: ends with a cross.
    Lost,
}

/// How a note is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Grey: sessions, sends, trust changes, network events.
    Info,
    /// Green: a plaintext shown to a user.
    Plaintext,
    /// Red: an alert or an error.
    Alarm,
    /// Red: what the attacker did or read.
    Attack,
}

/// One row of the diagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An arrow between two lifelines.
    Arrow {
        /// Simulated time in milliseconds.
        t_ms: u64,
        /// Index of the sending lifeline.
        from: usize,
        /// Index of the receiving lifeline.
        to: usize,
        /// How it is drawn.
        arrow: Arrow,
        /// The short label (without the time).
        label: String,
        /// The whole transcript line (an SVG tooltip).
        detail: String,
    },
    /// A note over one lifeline or a span of them.
    Note {
        /// Simulated time in milliseconds.
        t_ms: u64,
        /// Index of the first lifeline it covers.
        first: usize,
        /// Index of the last lifeline it covers.
        last: usize,
        /// Its colour.
        tone: Tone,
        /// The text (without the time).
        text: String,
    },
}

impl Step {
    fn t_ms(&self) -> u64 {
        match self {
            Step::Arrow { t_ms, .. } | Step::Note { t_ms, .. } => *t_ms,
        }
    }

    /// Drawn in red (the attacker's doing, alerts, errors).
    fn red(&self) -> bool {
        match self {
            Step::Arrow { arrow, .. } => matches!(arrow, Arrow::Taken | Arrow::Attack | Arrow::Lost),
            Step::Note { tone, .. } => matches!(tone, Tone::Alarm | Tone::Attack),
        }
    }
}

/// A run laid out as lifelines and rows, ready for either rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagram {
    /// Scenario, seed and verdict.
    pub title: String,
    /// What was left out and how to see it.
    pub subtitle: String,
    /// Lifelines, left to right.
    pub participants: Vec<Participant>,
    /// Rows, top to bottom.
    pub steps: Vec<Step>,
    /// How many transcript lines the view left out.
    pub hidden: usize,
}

/// Namespaces of session plumbing iqs (hidden by default).
const PLUMBING: &[&str] = &[
    "jabber:iq:roster",
    "urn:xmpp:carbons:2",
    "urn:xmpp:ping",
    "http://jabber.org/protocol/disco#info",
    "http://jabber.org/protocol/disco#items",
];

const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// Short names of XMPP payloads, by namespace (the protocols label their own: their wire
/// descriptions' [`jabberwock_e2e::Wire::labels`]).
const PAYLOADS: &[(&str, &str)] = &[
    ("urn:xmpp:delay", "delayed"),
    ("urn:xmpp:forward:0", "forwarded"),
    ("jabber:iq:roster", "roster"),
    ("urn:xmpp:ping", "ping"),
    ("http://jabber.org/protocol/caps", "caps"),
];

/// Payloads not worth a word in a label (hints, EME markers, threads).
const QUIET: &[&str] = &[jabberwock_e2e::xml::NS_HINTS, jabberwock_e2e::xml::NS_EME];

impl Diagram {
    /// The diagram of a run: its transcript, plus what the attacker read as notes at the
    /// time it saw each stanza, under a title with the scenario, seed and verdict.
    pub fn of(outcome: &Outcome, options: &Options) -> Diagram {
        let mut entries = outcome.transcript.entries.clone();
        if let Some(a) = &outcome.attacker {
            add_reads(&mut entries, &format!("⚔ attacker ({})", a.position), &a.read);
        }
        let verdict = match outcome.failure() {
            None => "PASS".to_owned(),
            Some(f) => format!("FAIL: {f}"),
        };
        Diagram::new(&format!("{} · seed {} · {verdict}", outcome.name, outcome.seed), &entries, options)
    }

    /// The diagram of transcript lines (in time order).
    pub fn new(title: &str, entries: &[Entry], options: &Options) -> Diagram {
        let first_send = entries.iter().find(|e| e.what == Some("send")).map_or(u64::MAX, |e| e.t_ms);
        let mut plumbing = BTreeSet::new();
        let mut shown: Vec<(&Entry, Option<Element>)> = Vec::new();
        for e in entries {
            let stanza = e.xml.as_deref().and_then(parse_stanza);
            let wanted = e.kind != "hop" || wanted_hop(e, stanza.as_ref(), first_send, &mut plumbing);
            if wanted || options.all {
                shown.push((e, stanza));
            }
        }
        let hidden = entries.len() - shown.len();

        let participants = lay_out(&shown);
        let index: BTreeMap<&str, usize> =
            participants.iter().enumerate().map(|(i, p)| (p.name.as_str(), i)).collect();
        let attacker = participants.iter().position(|p| p.role == Role::Attacker);
        let find = |name: &Option<String>| name.as_deref().and_then(|n| index.get(n).copied());
        let last = participants.len().saturating_sub(1);

        let mut steps = Vec::new();
        for (e, stanza) in &shown {
            let t_ms = e.t_ms;
            let summary = || stanza.as_ref().map_or_else(|| "stanza".to_owned(), summarize);
            let ends = find(&e.from).zip(find(&e.to));
            let step = match (e.kind, ends, attacker) {
                ("hop", Some((from, _)), Some(atk)) if e.intercepted == Some(true) => Step::Arrow {
                    t_ms,
                    from,
                    to: atk,
                    arrow: Arrow::Taken,
                    label: format!("{} ✂ taken", summary()),
                    detail: e.text.clone(),
                },
                ("hop", Some((from, to)), _) => Step::Arrow {
                    t_ms,
                    from,
                    to,
                    arrow: if stanza.as_ref().is_some_and(is_reply) { Arrow::Reply } else { Arrow::Stanza },
                    label: summary(),
                    detail: e.text.clone(),
                },
                ("attack", Some((_, to)), Some(atk)) if e.xml.is_some() && to != atk => {
                    let verb = match e.what {
                        Some("inject") => "injects",
                        Some("release") => "releases",
                        Some("deliver") => "delivers",
                        _ => "sends",
                    };
                    Step::Arrow {
                        t_ms,
                        from: atk,
                        to,
                        arrow: Arrow::Attack,
                        label: format!("⚔ {verb} {}", summary()),
                        detail: e.text.clone(),
                    }
                }
                ("attack", _, Some(atk)) => Step::Note {
                    t_ms,
                    first: atk,
                    last: atk,
                    tone: Tone::Attack,
                    text: shorten(&e.text, e.actor.as_deref()).to_owned(),
                },
                (_, Some((from, to)), _) if e.what == Some("lost") => {
                    let hop = format!("{} → {}", participants[from].name, participants[to].name);
                    Step::Arrow {
                        t_ms,
                        from,
                        to,
                        arrow: Arrow::Lost,
                        label: shorten(&e.text, Some(&hop)).to_owned(),
                        detail: e.text.clone(),
                    }
                }
                _ => {
                    let tone = if e.kind == "error"
                        || matches!(e.what, Some("alert" | "connect-failed" | "tls-failed"))
                    {
                        Tone::Alarm
                    } else if e.what == Some("plaintext") {
                        Tone::Plaintext
                    } else {
                        Tone::Info
                    };
                    let (first, last) = match find(&e.actor) {
                        Some(i) => (i, i),
                        None => (0, last),
                    };
                    Step::Note {
                        t_ms,
                        first,
                        last,
                        tone,
                        text: shorten(&e.text, e.actor.as_deref()).to_owned(),
                    }
                }
            };
            steps.push(step);
        }
        let subtitle = if options.all {
            format!("all {} lines", entries.len())
        } else {
            format!(
                "{} of {} lines, {hidden} session set-up hops left out (--all shows them)",
                shown.len(),
                entries.len()
            )
        };
        Diagram { title: title.to_owned(), subtitle, participants, steps, hidden }
    }

    /// Mermaid `sequenceDiagram` text. Red stands out through `rect` backgrounds (Mermaid has
    /// no per-arrow colour): the attacker's box and every run of attacker steps, alerts and
    /// errors are shaded red.
    pub fn mermaid(&self) -> String {
        let mut out = String::from("sequenceDiagram\n");
        let _ = writeln!(out, "    title {}", mm(&self.title));
        for (i, p) in self.participants.iter().enumerate() {
            if p.role == Role::Attacker {
                let _ = writeln!(out, "    box rgb(255,228,228) attacker");
                let _ = writeln!(out, "        participant P{i} as {}", mm(&p.name));
                let _ = writeln!(out, "    end");
            } else {
                let _ = writeln!(out, "    participant P{i} as {}", mm(&p.name));
            }
        }
        let all = match self.participants.len() {
            0 | 1 => "P0".to_owned(),
            n => format!("P0,P{}", n - 1),
        };
        let _ = writeln!(out, "    Note over {all}: {}", mm(&self.subtitle));
        let mut in_rect = false;
        for step in &self.steps {
            if step.red() != in_rect {
                out.push_str(if in_rect { "    end\n" } else { "    rect rgb(255,228,228)\n" });
                in_rect = !in_rect;
            }
            let indent = if in_rect { "        " } else { "    " };
            let time = fmt_time(Duration::from_millis(step.t_ms()));
            match step {
                Step::Arrow { from, to, arrow, label, .. } => {
                    let sign = match arrow {
                        Arrow::Stanza | Arrow::Attack => "->>",
                        Arrow::Reply => "-->>",
                        Arrow::Taken => "-x",
                        Arrow::Lost => "--x",
                    };
                    let text = mm_lines(&format!("{time} {label}"), 64);
                    let _ = writeln!(out, "{indent}P{from}{sign}P{to}: {text}");
                }
                Step::Note { first, last, text, .. } => {
                    let over = if first == last { format!("P{first}") } else { format!("P{first},P{last}") };
                    let text = mm_lines(&format!("{time} {text}"), 56);
                    let _ = writeln!(out, "{indent}Note over {over}: {text}");
                }
            }
        }
        if in_rect {
            out.push_str("    end\n");
        }
        out
    }

    /// A self-contained SVG document: header, one lifeline per participant, one row per
    /// step, time in the left margin, the whole transcript line as each arrow's tooltip.
    /// Integer coordinates only, so the bytes depend on nothing but the diagram.
    pub fn svg(&self) -> String {
        const GUTTER: i64 = 70;
        const COL: i64 = 230;
        // Monospace at 11px: 0.6em = 6.6px a character.
        const CHAR_TENTHS: i64 = 66;
        const LINE: i64 = 14;
        const TOP: i64 = 78;
        let n = self.participants.len().max(1) as i64;
        let width = GUTTER + COL * n + 20;
        let cx = |i: usize| GUTTER + COL * i as i64 + COL / 2;
        let chars = |px: i64| (px * 10 / CHAR_TENTHS).max(8) as usize;

        let mut body = String::new();
        // Participant headers.
        let heads: Vec<Vec<String>> =
            self.participants.iter().map(|p| wrap(&p.name, chars(COL - 28), 3)).collect();
        let head_h = heads.iter().map(Vec::len).max().unwrap_or(1) as i64 * LINE + 12;
        for (i, (p, lines)) in self.participants.iter().zip(&heads).enumerate() {
            let (fill, stroke, ink) = match p.role {
                Role::Attacker => ("#fde2e2", "#c00000", "#900000"),
                Role::Server => ("#eef1f8", "#5a6a8a", "#1d2a44"),
                Role::Device => ("#f3f3f3", "#666666", "#222222"),
            };
            let x = cx(i) - COL / 2 + 10;
            let _ = writeln!(
                body,
                r#"<rect x="{x}" y="{TOP}" width="{}" height="{head_h}" rx="4" fill="{fill}" stroke="{stroke}"/>"#,
                COL - 20
            );
            for (k, l) in lines.iter().enumerate() {
                let y = TOP + 4 + LINE * (k as i64 + 1);
                let _ = writeln!(
                    body,
                    r#"<text x="{}" y="{y}" text-anchor="middle" fill="{ink}" font-weight="bold">{}</text>"#,
                    cx(i),
                    xml(l)
                );
            }
        }

        // Rows.
        let mut rows = String::new();
        let mut y = TOP + head_h + 16;
        for step in &self.steps {
            let time = fmt_time(Duration::from_millis(step.t_ms()));
            match step {
                Step::Arrow { from, to, arrow, label, detail, .. } => {
                    let (x1, x2) = (cx(*from), cx(*to));
                    // A label may reach past the lifelines it joins: it sits above the line.
                    let span = (x2 - x1).abs().max(COL + COL / 2);
                    let lines = wrap(label, chars(span - 24), 4);
                    let line_y = y + LINE * lines.len() as i64 + 6;
                    let (stroke, ink, dash, marker, width) = match arrow {
                        Arrow::Stanza => ("#333333", "#222222", "", "arrow", 1),
                        Arrow::Reply => ("#333333", "#222222", r#" stroke-dasharray="6 3""#, "arrow", 1),
                        Arrow::Taken => ("#c00000", "#b00000", r#" stroke-dasharray="6 3""#, "cross", 2),
                        Arrow::Attack => ("#c00000", "#b00000", "", "arrow-red", 2),
                        Arrow::Lost => ("#c00000", "#b00000", r#" stroke-dasharray="2 3""#, "cross", 1),
                    };
                    let _ = writeln!(rows, "<g><title>{}</title>", xml(&format!("{time} {detail}")));
                    let _ = writeln!(
                        rows,
                        r##"<text x="{}" y="{}" text-anchor="end" fill="#777777">{time}</text>"##,
                        GUTTER - 8,
                        line_y + 4
                    );
                    for (k, l) in lines.iter().enumerate() {
                        let _ = writeln!(
                            rows,
                            r#"<text x="{}" y="{}" text-anchor="middle" fill="{ink}">{}</text>"#,
                            (x1 + x2) / 2,
                            y + LINE * (k as i64 + 1),
                            xml(l)
                        );
                    }
                    let _ = writeln!(
                        rows,
                        r#"<line x1="{x1}" y1="{line_y}" x2="{x2}" y2="{line_y}" stroke="{stroke}" stroke-width="{width}"{dash} marker-end="url(#{marker})"/>"#
                    );
                    rows.push_str("</g>\n");
                    y = line_y + 12;
                }
                Step::Note { first, last, tone, text, .. } => {
                    let x0 = cx(*first) - COL / 2 + 8;
                    let x1 = cx(*last) + COL / 2 - 8;
                    let lines = wrap(text, chars(x1 - x0 - 12), 6);
                    let h = LINE * lines.len() as i64 + 10;
                    let (fill, stroke, ink) = match tone {
                        Tone::Info => ("#f6f6f6", "#aaaaaa", "#333333"),
                        Tone::Plaintext => ("#e4f4e4", "#4a9a4a", "#124012"),
                        Tone::Alarm => ("#ffd6d6", "#c00000", "#900000"),
                        Tone::Attack => ("#fdeaea", "#c00000", "#900000"),
                    };
                    let _ = writeln!(rows, "<g><title>{}</title>", xml(&format!("{time} {text}")));
                    let _ = writeln!(
                        rows,
                        r##"<text x="{}" y="{}" text-anchor="end" fill="#777777">{time}</text>"##,
                        GUTTER - 8,
                        y + LINE
                    );
                    let _ = writeln!(
                        rows,
                        r#"<rect x="{x0}" y="{y}" width="{}" height="{h}" rx="3" fill="{fill}" stroke="{stroke}"/>"#,
                        x1 - x0
                    );
                    for (k, l) in lines.iter().enumerate() {
                        let _ = writeln!(
                            rows,
                            r#"<text x="{}" y="{}" fill="{ink}">{}</text>"#,
                            x0 + 6,
                            y + 1 + LINE * (k as i64 + 1),
                            xml(l)
                        );
                    }
                    rows.push_str("</g>\n");
                    y += h + 8;
                }
            }
        }
        let height = y + 20;

        // Lifelines under the rows.
        let mut lifelines = String::new();
        for (i, p) in self.participants.iter().enumerate() {
            let stroke = if p.role == Role::Attacker { "#c00000" } else { "#bbbbbb" };
            let _ = writeln!(
                lifelines,
                r#"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="{stroke}" stroke-dasharray="4 4"/>"#,
                cx(i),
                TOP + head_h,
                height - 10
            );
        }

        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="11">"#
        );
        let _ = writeln!(out, "<title>{}</title>", xml(&self.title));
        out.push_str(concat!(
            "<defs>\n",
            r##"<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333333"/></marker>"##,
            "\n",
            r##"<marker id="arrow-red" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" markerWidth="11" markerHeight="11" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#c00000"/></marker>"##,
            "\n",
            r##"<marker id="cross" viewBox="0 0 10 10" refX="5" refY="5" markerUnits="userSpaceOnUse" markerWidth="12" markerHeight="12" orient="auto"><path d="M1,1 L9,9 M9,1 L1,9" stroke="#c00000" stroke-width="2"/></marker>"##,
            "\n</defs>\n",
        ));
        let _ = writeln!(out, r##"<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>"##);
        let _ = writeln!(
            out,
            r##"<text x="10" y="22" font-size="14" font-weight="bold" fill="#111111">{}</text>"##,
            xml(&self.title)
        );
        let _ = writeln!(out, r##"<text x="10" y="42" fill="#555555">{}</text>"##, xml(&self.subtitle));
        let _ = writeln!(
            out,
            r##"<text x="10" y="60" fill="#555555">red: the attacker's doing, alerts and errors · green: plaintext shown to a user · dashed: answers · ✂: taken off the wire</text>"##
        );
        out.push_str(&lifelines);
        out.push_str(&body);
        out.push_str(&rows);
        out.push_str("</svg>\n");
        out
    }
}

/// Adds what the attacker read as its lines, each after the last line of its time.
fn add_reads(entries: &mut Vec<Entry>, label: &str, reads: &[Read]) {
    for r in reads {
        let at = r.at.as_millis() as u64;
        let pos = entries.partition_point(|e| e.t_ms <= at);
        let text = format!("{label} reads {:?} ({})", r.body, r.means);
        entries.insert(pos, Entry::new(r.at, "attack", text, None).by(label).what("read"));
    }
}

/// Whether a hop is shown in the default view (see the module documentation); remembers the
/// ids of plumbing requests so their answers are left out too.
fn wanted_hop(e: &Entry, stanza: Option<&Element>, first_send: u64, plumbing: &mut BTreeSet<String>) -> bool {
    let Some(st) = stanza else { return true };
    let shown = match st.name() {
        "message" => !st.children().any(|c| c.ns() == NS_PUBSUB_EVENT),
        "presence" => st.children().next().is_some(),
        "iq" => {
            let id = st.attr("id").unwrap_or_default();
            if matches!(st.attr("type"), Some("get" | "set")) {
                if st.children().any(|c| PLUMBING.contains(&c.ns().as_str())) {
                    plumbing.insert(id.to_owned());
                    false
                } else {
                    e.t_ms >= first_send
                }
            } else {
                !plumbing.contains(id) && e.t_ms >= first_send
            }
        }
        _ => true,
    };
    shown || e.intercepted.is_some()
}

/// The lifelines, left to right: the devices of the account that sends first (or appears
/// first), its server, the attacker, the other servers, the other accounts' devices. Within
/// each group, in order of first appearance.
fn lay_out(shown: &[(&Entry, Option<Element>)]) -> Vec<Participant> {
    let mut names: Vec<&str> = Vec::new();
    let mut attacker: Option<&str> = None;
    let mut taken = false;
    for &(e, _) in shown {
        let actor = if e.kind == "attack" {
            attacker = attacker.or(e.actor.as_deref());
            None
        } else {
            e.actor.as_deref()
        };
        for n in [e.from.as_deref(), e.to.as_deref(), actor].into_iter().flatten() {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        taken |= e.intercepted == Some(true);
    }
    let attacked = taken || shown.iter().any(|(e, _)| e.kind == "attack");
    if attacked && attacker.is_none() {
        attacker = Some("⚔ attacker");
    }
    // A device is a full JID; anything else (a domain) stands for a server.
    let device =
        |n: &str| n.parse::<FullJid>().ok().map(|j| (j.to_bare().to_string(), j.domain().to_string()));
    let first_sender = shown
        .iter()
        .find(|(e, _)| e.what == Some("send"))
        .and_then(|(e, _)| e.actor.as_deref())
        .and_then(device)
        .or_else(|| names.iter().find_map(|n| device(n)));
    let mut out = Vec::new();
    fn push(out: &mut Vec<Participant>, name: &str, role: Role) {
        if !out.iter().any(|p| p.name == name) {
            out.push(Participant { name: name.to_owned(), role });
        }
    }
    if let Some((account, domain)) = &first_sender {
        for n in &names {
            if device(n).is_some_and(|(a, _)| a == *account) {
                push(&mut out, n, Role::Device);
            }
        }
        if names.contains(&domain.as_str()) {
            push(&mut out, domain, Role::Server);
        }
    }
    if let Some(a) = attacker {
        out.push(Participant { name: a.to_owned(), role: Role::Attacker });
    }
    for n in &names {
        if device(n).is_none() {
            push(&mut out, n, Role::Server);
        }
    }
    let accounts: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for (a, _) in names.iter().filter_map(|n| device(n)) {
            if !v.contains(&a) {
                v.push(a);
            }
        }
        v
    };
    for account in &accounts {
        for n in &names {
            if device(n).is_some_and(|(a, _)| a == *account) {
                push(&mut out, n, Role::Device);
            }
        }
    }
    if out.is_empty() {
        out.push(Participant { name: "network".to_owned(), role: Role::Server });
    }
    out
}

/// The text of a line without the actor (or hop) it starts with.
fn shorten<'a>(text: &'a str, prefix: Option<&str>) -> &'a str {
    prefix.and_then(|p| text.strip_prefix(p)).map_or(text, str::trim_start)
}

/// Parses a stanza's canonical XML (the stream's namespace omitted on the root).
fn parse_stanza(canonical: &str) -> Option<Element> {
    let wrapped: Element = format!("<w xmlns='jabber:client'>{canonical}</w>").parse().ok()?;
    wrapped.children().next().cloned()
}

fn is_reply(st: &Element) -> bool {
    st.name() == "iq" && matches!(st.attr("type"), Some("result" | "error"))
}

/// `message phone-m4 [OMEMO encrypted]`, `iq get phone-fetch7 [pubsub items urn:…:devices]`,
/// `message phone-m5 ["hello"]`.
fn summarize(st: &Element) -> String {
    let mut s = st.name().to_owned();
    match (st.name(), st.attr("type")) {
        ("iq" | "presence", Some(t)) => {
            s.push(' ');
            s.push_str(t);
        }
        ("message", Some(t)) if t != "chat" && t != "normal" => {
            s.push(' ');
            s.push_str(t);
        }
        _ => {}
    }
    if let Some(id) = st.attr("id") {
        s.push(' ');
        s.push_str(id);
    }
    let parts: Vec<String> = st.children().filter_map(describe).collect();
    if !parts.is_empty() {
        s.push_str(" [");
        s.push_str(&parts.join(", "));
        s.push(']');
    }
    s
}

/// A few words for one payload element of a stanza, or nothing for hints and markers.
fn describe(child: &Element) -> Option<String> {
    let ns = child.ns();
    let name = child.name();
    if QUIET.contains(&ns.as_str()) {
        return None;
    }
    let stream = ns == "jabber:client" || ns == "jabber:server";
    Some(match name {
        "body" if stream => quote(&child.text(), 32),
        "thread" | "subject" if stream => return None,
        "error" => {
            let condition = child.children().find(|c| c.ns() == NS_STANZAS).map(Element::name);
            format!("error {}", condition.unwrap_or("?"))
        }
        _ if ns == NS_PUBSUB || ns == NS_PUBSUB_EVENT => {
            let what = if ns == NS_PUBSUB { "pubsub" } else { "PEP event" };
            match child.children().next() {
                Some(op) => match op.attr("node") {
                    Some(node) => format!("{what} {} {node}", op.name()),
                    None => format!("{what} {}", op.name()),
                },
                None => what.to_owned(),
            }
        }
        "sent" | "received" if ns == "urn:xmpp:carbons:2" => format!("carbon {name}"),
        _ => match PAYLOADS
            .iter()
            .chain(jabberwock_e2e::Protocol::ALL.iter().flat_map(|p| p.wire().labels()))
            .find(|(n, _)| *n == ns)
        {
            Some((_, label)) => (*label).to_owned(),
            None => name.to_owned(),
        },
    })
}

/// `"text"`, cut to `max` characters.
fn quote(text: &str, max: usize) -> String {
    let cut: String = text.chars().take(max).collect();
    if cut.len() < text.len() { format!("{:?}…", cut) } else { format!("{cut:?}") }
}

/// Words into lines of at most `width` characters (long words are split), at most
/// `max_lines` of them, the last ending in `…` when text was cut.
fn wrap(text: &str, width: usize, max_lines: usize) -> Vec<String> {
    let width = width.max(8);
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut rest: Vec<char> = word.chars().collect();
        loop {
            if cur_len > 0 && cur_len + 1 + rest.len() <= width {
                cur.push(' ');
                cur.extend(&rest);
                cur_len += 1 + rest.len();
                break;
            }
            if cur_len > 0 {
                lines.push(core::mem::take(&mut cur));
                cur_len = 0;
            }
            if rest.len() <= width {
                cur.extend(&rest);
                cur_len = rest.len();
                break;
            }
            let tail = rest.split_off(width);
            lines.push(rest.into_iter().collect());
            rest = tail;
        }
    }
    if cur_len > 0 || lines.is_empty() {
        lines.push(cur);
    }
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        if let Some(l) = lines.last_mut() {
            let kept: String = l.chars().take(width - 1).collect();
            *l = format!("{kept}…");
        }
    }
    lines
}

/// Text for Mermaid: `#`, `;`, `<`, `>`, `&`, `"` and `%` as Mermaid entity codes (`#59;`),
/// so a `;` does not end the statement, a `#` does not start a comment, `%%` is no comment
/// and no text is taken for HTML; line breaks and control characters become spaces.
fn mm(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '#' | ';' | '<' | '>' | '&' | '"' | '%' => {
                let _ = write!(out, "#{};", u32::from(c));
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Wrapped, escaped Mermaid text, lines joined by `<br/>`.
fn mm_lines(text: &str, width: usize) -> String {
    wrap(text, width, 6).iter().map(|l| mm(l)).collect::<Vec<_>>().join("<br/>")
}

/// Text for XML: markup characters escaped, characters XML 1.0 forbids as U+FFFD.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "alice@a.example/phone";
    const BOB: &str = "bob@a.example/laptop";
    const ATK: &str = "⚔ attacker (server a.example)";

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn hop(ms: u64, from: &str, to: &str, xml: &str) -> Entry {
        Entry::new(at(ms), "hop", format!("{from} → {to}  {xml}"), Some(xml.to_owned())).between(from, to)
    }

    /// A modify attack in miniature: set-up plumbing, a send, a stanza replaced by a
    /// server attacker, the receiver's plaintext and an alert, a network event.
    fn transcript() -> Vec<Entry> {
        let body =
            "<message id='m1' to='bob@a.example' type='chat'><body>a;b#c&lt;d&gt; %%x \"q\"</body></message>";
        let routed = "<message from='alice@a.example/phone' id='m1' to='bob@a.example' type='chat'><body>a;b#c&lt;d&gt; %%x \"q\"</body></message>";
        let evil = "<message from='alice@a.example/phone' id='m1' to='bob@a.example' type='chat'><body>evil</body></message>";
        vec![
            Entry::new(at(20), "session", format!("{BOB} ⇄ a.example session up"), None)
                .by(BOB)
                .what("session-up"),
            hop(
                30,
                BOB,
                "a.example",
                "<iq id='laptop-roster3' type='get'><query xmlns='jabber:iq:roster'/></iq>",
            ),
            hop(30, "a.example", BOB, "<iq id='laptop-roster3' to='bob@a.example/laptop' type='result'/>"),
            hop(31, BOB, "a.example", "<presence/>"),
            Entry::new(at(1000), "event", format!("{ALICE} ⇒ sends \"x\" to bob@a.example"), None)
                .by(ALICE)
                .what("send"),
            hop(1001, ALICE, "a.example", body),
            hop(1001, "a.example", BOB, routed).intercepted(Some(true)),
            Entry::new(at(1001), "attack", format!("{ATK} replaces <body/> in m1 (rule 0)"), None)
                .by(ATK)
                .what("act")
                .between("a.example", BOB),
            Entry::new(
                at(1001),
                "attack",
                format!("{ATK} delivers on a.example → {BOB}: {evil}"),
                Some(evil.into()),
            )
            .by(ATK)
            .what("deliver")
            .between("a.example", BOB),
            Entry::new(at(1003), "event", format!("{BOB} ⇐ plaintext \"evil\" from {ALICE}"), None)
                .by(BOB)
                .what("plaintext"),
            Entry::new(at(1004), "event", format!("{BOB} ⚠ alert bad-mac: payload HMAC"), None)
                .by(BOB)
                .what("alert"),
            Entry::new(at(1500), "network", "network: partition a.example ⇹ b.example".into(), None),
        ]
    }

    fn diagram(all: bool) -> Diagram {
        Diagram::new("mini · seed 1 · PASS", &transcript(), &Options { all })
    }

    #[test]
    fn lifelines_put_the_sender_left_and_the_attacker_beside_its_server() {
        let d = diagram(false);
        let got: Vec<(&str, Role)> = d.participants.iter().map(|p| (p.name.as_str(), p.role)).collect();
        assert_eq!(
            got,
            [(ALICE, Role::Device), ("a.example", Role::Server), (ATK, Role::Attacker), (BOB, Role::Device)]
        );
    }

    #[test]
    fn session_set_up_is_left_out_unless_all() {
        let d = diagram(false);
        assert_eq!(d.hidden, 3, "roster get, its result and the bare presence");
        let m = d.mermaid();
        assert!(!m.contains("laptop-roster3"), "{m}");
        assert!(m.contains("3 session set-up hops left out"), "{m}");
        let all = diagram(true);
        assert_eq!(all.hidden, 0);
        let m = all.mermaid();
        assert!(m.contains("P3->>P1: 0.030s iq get laptop-roster3 [roster]"), "{m}");
        assert!(m.contains("P1-->>P3: 0.030s iq result laptop-roster3"), "answers are dashed: {m}");
    }

    #[test]
    fn the_attacker_is_red_in_mermaid() {
        let m = diagram(false).mermaid();
        let lines: Vec<&str> = m.lines().collect();
        let atk = lines.iter().position(|l| l.contains("participant P2 as ⚔ attacker")).unwrap();
        assert_eq!(lines[atk - 1].trim(), "box rgb(255,228,228) attacker");
        assert_eq!(lines[atk + 1].trim(), "end");
        // The routed stanza ends at the attacker with a cross; its delivery starts there.
        let taken = lines.iter().position(|l| l.trim().starts_with("P1-xP2: 1.001s message m1 [")).unwrap();
        assert!(lines[taken].ends_with("✂ taken"), "{}", lines[taken]);
        assert_eq!(lines[taken - 1].trim(), "rect rgb(255,228,228)");
        let delivered = lines
            .iter()
            .position(|l| l.trim() == "P2->>P3: 1.001s ⚔ delivers message m1 [#34;evil#34;]")
            .unwrap();
        assert!(delivered > taken);
        assert!(lines[taken..delivered].iter().all(|l| l.trim() != "end"), "one red block: {m}");
        assert!(m.contains("Note over P2: 1.001s replaces #60;body/#62; in m1 (rule 0)"), "{m}");
        // The plaintext is an ordinary note over the receiver; the alert is red again.
        let plain = lines.iter().position(|l| l.contains("Note over P3: 1.003s ⇐ plaintext")).unwrap();
        assert_eq!(lines[plain - 1].trim(), "end");
        assert_eq!(lines[plain + 1].trim(), "rect rgb(255,228,228)");
        assert!(lines[plain + 2].contains("Note over P3: 1.004s ⚠ alert bad-mac"));
        // A line without an actor spans every lifeline.
        assert!(m.contains("Note over P0,P3: 1.500s network: partition"), "{m}");
    }

    #[test]
    fn mermaid_text_escapes_what_its_grammar_would_take() {
        let m = diagram(false).mermaid();
        let sent = m.lines().find(|l| l.trim().starts_with("P0->>P1:")).unwrap();
        assert!(sent.contains("#34;a#59;b#35;c#60;d#62; #37;#37;x \\#34;q\\#34;#34;"), "{sent}");
        for line in m.lines().skip(1) {
            // The text of each statement, without entity codes and line breaks: nothing
            // special may be left.
            let text = line.split_once(": ").or_else(|| line.split_once(" as ")).map_or(line, |(_, t)| t);
            let mut rest = text.replace("<br/>", " ");
            while let Some(i) = rest.find('#') {
                let end = rest[i..].find(';').map(|j| i + j + 1).unwrap();
                assert!(rest[i + 1..end - 1].chars().all(|c| c.is_ascii_digit()), "{line}");
                rest.replace_range(i..end, "");
            }
            assert!(!rest.contains([';', '<', '>', '%', '"', '&']), "{line}");
        }
    }

    #[test]
    fn svg_is_well_formed_escaped_and_red_where_the_attacker_acts() {
        let s = diagram(false).svg();
        let root: Element = s.parse().unwrap();
        assert_eq!(root.name(), "svg");
        assert!(s.contains("a;b#c&lt;d&gt; %%x"), "XML-escaped body");
        assert!(s.contains(r##"fill="#fde2e2" stroke="#c00000""##), "the attacker's header is red");
        assert!(s.contains(r#"marker-end="url(#arrow-red)""#), "its delivery is a red arrow");
        assert!(s.contains(r#"marker-end="url(#cross)""#), "the taken stanza ends in a cross");
        assert!(s.contains("⇐ plaintext"));
        assert!(!s.contains("laptop-roster3"));
        assert_eq!(s, diagram(false).svg());
    }

    #[test]
    fn labels_say_what_a_stanza_carries() {
        let label = |x: &str| summarize(&parse_stanza(x).unwrap());
        assert_eq!(
            label(
                "<message id='m9' to='b@x' type='chat'><encrypted xmlns='urn:xmpp:omemo:2'><payload>AA==</payload></encrypted><encryption xmlns='urn:xmpp:eme:0' name='OMEMO'/><store xmlns='urn:xmpp:hints'/></message>"
            ),
            "message m9 [OMEMO encrypted]"
        );
        assert_eq!(
            label(
                "<iq id='f7' to='b@x' type='get'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:omemo:2:devices'/></pubsub></iq>"
            ),
            "iq get f7 [pubsub items urn:xmpp:omemo:2:devices]"
        );
        assert_eq!(
            label(
                "<iq id='f5' type='error'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            ),
            "iq error f5 [error item-not-found]"
        );
        assert_eq!(
            label("<message id='m2'><body>a very long message body that goes on and on</body></message>"),
            "message m2 [\"a very long message body that go\"…]"
        );
        assert_eq!(label("<presence type='subscribe' to='b@x'/>"), "presence subscribe");
    }

    #[test]
    fn attacker_reads_become_red_notes_at_their_time() {
        let mut entries = transcript();
        entries.retain(|e| e.kind != "attack" && e.intercepted.is_none());
        let quiet = Diagram::new("t", &entries, &Options::default());
        assert!(quiet.participants.iter().all(|p| p.role != Role::Attacker), "no attacker, no lifeline");
        let read = Read { body: "a;b".into(), means: "no key needed (plain)".into(), at: at(1001) };
        add_reads(&mut entries, ATK, &[read]);
        let d = Diagram::new("t", &entries, &Options::default());
        let atk = d.participants.iter().position(|p| p.role == Role::Attacker).unwrap();
        let note = d
            .steps
            .iter()
            .position(|s| matches!(s, Step::Note { tone: Tone::Attack, first, .. } if *first == atk));
        let plaintext = d.steps.iter().position(|s| matches!(s, Step::Note { tone: Tone::Plaintext, .. }));
        let sent = d.steps.iter().position(|s| matches!(s, Step::Arrow { t_ms: 1001, .. }));
        assert!(sent < note && note < plaintext, "{:#?}", d.steps);
        assert!(d.mermaid().contains(": 1.001s reads #34;a#59;b#34; (no key needed (plain))"));
    }

    #[test]
    fn wrapping_keeps_words_splits_long_ones_and_marks_cuts() {
        assert_eq!(wrap("one two three", 8, 5), ["one two", "three"]);
        assert_eq!(wrap("abcdefghijkl", 8, 5), ["abcdefgh", "ijkl"]);
        assert_eq!(wrap("aaaa bbbb cccc dddd", 9, 1), ["aaaa bbb…"]);
        assert_eq!(wrap("", 8, 2), [""]);
    }
}
