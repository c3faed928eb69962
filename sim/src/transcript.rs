//! The transcript: one line per event, simulated time first, stanzas in one canonical form.
//!
//! Stanzas are re-serialised (never the raw input): attributes sorted, `xmlns` written only
//! where the namespace changes, the stream's default namespace omitted. Long base64 text is
//! shown as `⟨b64 NB #hash⟩` so a snapshot stays reviewable yet changes when one ciphertext
//! byte changes. The full bytes stay in [`Entry::xml`] for the JSON Lines export.

use core::fmt::Write as _;
use core::time::Duration;

use base64::Engine as _;
use jabberwock_e2e::Element;
use jabberwock_e2e::xml::NS_CLIENT;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::units::fmt_time;

/// One transcript line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Simulated time since the start, in milliseconds.
    pub t_ms: u64,
    /// `hop`, `attack`, `event`, `session`, `error`, `network`.
    pub kind: &'static str,
    /// The rendered line (without the time).
    pub text: String,
    /// The full canonical XML of the stanza, when the line is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xml: Option<String>,
    /// The sending end of the hop the line is about (a device's full JID or a server's
    /// domain): set on hop lines and on attacker lines about a hop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The receiving end of that hop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Whose line it is: the device for its events, errors and sessions, the server for
    /// what a server reports, the attacker's label for attacker lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// What the line records, finer than `kind`: `send`, `plaintext`, `alert`, `trust`,
    /// `ceremony`, `verification`, `stored-offline`, `joins`, `session-up`, `session-down`,
    /// `connect-failed`, `tls-failed`, `stream-error`, `engine-error`, `stanza-error`, `lost`;
    /// for attacker lines `act` (a rule acted on the hop's stanza), `deliver`, `inject`,
    /// `release`, `forge`, `records`, `steal`, `terminate-tls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub what: Option<&'static str>,
    /// On a hop line, whether the attacker took the stanza off the wire (`true`: it did not
    /// go on as sent — dropped, held, delayed or replaced) or acted on it and let it pass
    /// unchanged (`false`: observed, recorded, duplicated); absent when it did not act.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intercepted: Option<bool>,
}

impl Entry {
    /// A line with no structure beyond its kind.
    pub fn new(at: Duration, kind: &'static str, text: String, xml: Option<String>) -> Self {
        Entry {
            t_ms: at.as_millis() as u64,
            kind,
            text,
            xml,
            from: None,
            to: None,
            actor: None,
            what: None,
            intercepted: None,
        }
    }

    /// The hop the line is about.
    #[must_use]
    pub fn between(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.from = Some(from.into());
        self.to = Some(to.into());
        self
    }

    /// Whose line it is.
    #[must_use]
    pub fn by(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// What the line records.
    #[must_use]
    pub fn what(mut self, what: &'static str) -> Self {
        self.what = Some(what);
        self
    }

    /// Whether the attacker took the hop's stanza off the wire (see [`Entry::intercepted`]).
    #[must_use]
    pub fn intercepted(mut self, taken: Option<bool>) -> Self {
        self.intercepted = taken;
        self
    }
}

/// The whole transcript of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transcript {
    /// Lines in order.
    pub entries: Vec<Entry>,
}

impl Transcript {
    /// Appends a line.
    pub fn push(&mut self, at: Duration, kind: &'static str, text: String, xml: Option<String>) {
        self.entries.push(Entry::new(at, kind, text, xml));
    }

    /// Appends a line built with [`Entry::new`] and its structured fields.
    pub fn push_entry(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    /// The human-readable form, one line per entry.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            let _ = writeln!(out, "[{:>9}] {}", fmt_time(Duration::from_millis(e.t_ms)), e.text);
        }
        out
    }

    /// JSON Lines with the full stanzas, each line tagged with the scenario name.
    pub fn jsonl_for(&self, scenario: &str) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            scenario: &'a str,
            #[serde(flatten)]
            entry: &'a Entry,
        }
        let mut out = String::new();
        for entry in &self.entries {
            out.push_str(&serde_json::to_string(&Line { scenario, entry }).unwrap_or_default());
            out.push('\n');
        }
        out
    }
}

/// Canonical XML with long base64 abbreviated (for transcript lines).
pub fn short_xml(el: &Element) -> String {
    let mut out = String::new();
    write_el(&mut out, el, NS_CLIENT, true);
    out
}

/// Canonical XML with every byte (for exports and the oracle).
pub fn full_xml(el: &Element) -> String {
    let mut out = String::new();
    write_el(&mut out, el, NS_CLIENT, false);
    out
}

fn escape(s: &str, out: &mut String, attr: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' if attr => out.push_str("&apos;"),
            '\n' if attr => out.push_str("&#10;"),
            c => out.push(c),
        }
    }
}

fn write_el(out: &mut String, el: &Element, parent_ns: &str, abbreviate: bool) {
    let ns = el.ns();
    out.push('<');
    out.push_str(el.name());
    if ns != parent_ns {
        out.push_str(" xmlns='");
        escape(&ns, out, true);
        out.push('\'');
    }
    let mut attrs: Vec<(String, &String)> = el
        .attrs()
        .iter()
        .map(|((attr_ns, name), value)| {
            let name =
                if attr_ns.is_none() { name.to_string() } else { format!("{{{}}}{name}", attr_ns.as_str()) };
            (name, value)
        })
        .collect();
    attrs.sort();
    for (name, value) in attrs {
        out.push(' ');
        out.push_str(&name);
        out.push_str("='");
        escape(value, out, true);
        out.push('\'');
    }
    let mut nodes = el.nodes().peekable();
    if nodes.peek().is_none() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    // In the short form, a long run of same-named siblings (a bundle's 100 PreKeys) shows its
    // first few and then one line with the count and a hash of the rest, which still changes
    // when any byte of them does.
    let nodes: Vec<&minidom::Node> = nodes.collect();
    let mut i = 0;
    while i < nodes.len() {
        match nodes[i] {
            minidom::Node::Element(child) => {
                let run = nodes[i..]
                    .iter()
                    .take_while(|n| matches!(n, minidom::Node::Element(c) if c.name() == child.name() && c.ns() == child.ns()))
                    .count();
                if abbreviate && run > SIBLINGS_SHOWN + 1 {
                    for n in &nodes[i..i + SIBLINGS_SHOWN] {
                        if let minidom::Node::Element(c) = n {
                            write_el(out, c, &ns, abbreviate);
                        }
                    }
                    let mut hasher = Sha256::new();
                    for n in &nodes[i + SIBLINGS_SHOWN..i + run] {
                        if let minidom::Node::Element(c) = n {
                            hasher.update(full_xml(c).as_bytes());
                        }
                    }
                    let h = hasher.finalize();
                    let _ = write!(
                        out,
                        "⟨{} more <{}/> #{:02x}{:02x}{:02x}⟩",
                        run - SIBLINGS_SHOWN,
                        child.name(),
                        h[0],
                        h[1],
                        h[2]
                    );
                    i += run;
                    continue;
                }
                write_el(out, child, &ns, abbreviate);
            }
            minidom::Node::Text(t) => match abbreviate.then(|| abbreviate_b64(t)).flatten() {
                Some(short) => out.push_str(&short),
                None => escape(t, out, false),
            },
        }
        i += 1;
    }
    out.push_str("</");
    out.push_str(el.name());
    out.push('>');
}

/// How many of a long run of same-named siblings the short form shows.
const SIBLINGS_SHOWN: usize = 3;

/// `⟨b64 NB #xxxxxx⟩` for text that is long base64 (24 characters or more).
fn abbreviate_b64(text: &str) -> Option<String> {
    let t = text.trim();
    if t.len() < 24 || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=') {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(t).ok()?;
    let hash = Sha256::digest(&bytes);
    Some(format!("⟨b64 {}B #{:02x}{:02x}{:02x}⟩", bytes.len(), hash[0], hash[1], hash[2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_sorts_attributes_and_elides_the_stream_namespace() {
        let el: Element = "<message xmlns='jabber:client' type='chat' to='b@x' id='1'><body>a&amp;b</body><x xmlns='urn:x' k='v'><y/></x></message>"
            .parse()
            .unwrap();
        assert_eq!(
            short_xml(&el),
            "<message id='1' to='b@x' type='chat'><body>a&amp;b</body><x k='v' xmlns='urn:x'><y/></x></message>"
                .replace(" k='v' xmlns='urn:x'", " xmlns='urn:x' k='v'")
        );
    }

    #[test]
    fn long_runs_of_siblings_are_summarised_with_a_hash() {
        let run = |last: &str| -> Element {
            let mut xml = String::from("<l xmlns='urn:x'>");
            for i in 0..9 {
                xml.push_str(&format!("<pk id='{i}'>{}</pk>", if i == 8 { last } else { "a" }));
            }
            xml.push_str("</l>");
            xml.parse().unwrap()
        };
        let (a, b) = (short_xml(&run("a")), short_xml(&run("b")));
        assert!(a.contains("<pk id='2'>a</pk>⟨6 more <pk/> #"), "{a}");
        assert!(!a.contains("id='3'"), "{a}");
        assert_ne!(a, b, "a change in an elided sibling changes the hash");
        assert!(full_xml(&run("a")).contains("<pk id='8'>a</pk>"));
    }

    #[test]
    fn long_base64_is_abbreviated_but_still_changes_with_the_bytes() {
        let a: Element = "<p xmlns='urn:x'>AAECAwQFBgcICQoLDA0ODxAREhMUFRYX</p>".parse().unwrap();
        let b: Element = "<p xmlns='urn:x'>AAECAwQFBgcICQoLDA0ODxAREhMUFRYY</p>".parse().unwrap();
        let (sa, sb) = (short_xml(&a), short_xml(&b));
        assert!(sa.contains("⟨b64 24B #"), "{sa}");
        assert_ne!(sa, sb);
        assert!(full_xml(&a).contains("AAECAwQFBgcICQoLDA0ODxAREhMUFRYX"));
    }
}
