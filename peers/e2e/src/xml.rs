//! Namespaces and small helpers over [`minidom::Element`].

use core::str::FromStr;

use minidom::Element;
use minidom::rxml::{Namespace, NcName};

use crate::E2eError;

/// RFC 6120 client namespace.
pub const NS_CLIENT: &str = "jabber:client";
/// RFC 6120 server namespace.
pub const NS_SERVER: &str = "jabber:server";
/// RFC 6120 stanza error namespace.
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// XEP-0203 delayed delivery.
pub const NS_DELAY: &str = "urn:xmpp:delay";
/// XEP-0280 message carbons.
pub const NS_CARBONS: &str = "urn:xmpp:carbons:2";
/// XEP-0297 stanza forwarding.
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0060 publish-subscribe.
pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0060 event notifications.
pub const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// XEP-0060 pubsub errors.
pub const NS_PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
/// XEP-0004 data forms.
pub const NS_DATA: &str = "jabber:x:data";
/// RFC 6121 roster.
pub const NS_ROSTER: &str = "jabber:iq:roster";
/// XEP-0199 ping.
pub const NS_PING: &str = "urn:xmpp:ping";
/// XEP-0380 explicit message encryption.
pub const NS_EME: &str = "urn:xmpp:eme:0";
/// XEP-0334 message processing hints.
pub const NS_HINTS: &str = "urn:xmpp:hints";

/// Attribute helpers that hide rxml's `NcName` plumbing. Names that are not valid XML
/// names are ignored on write (they cannot come from the network: they are our own literals).
pub trait ElementExt {
    /// Sets (or replaces) an attribute in no namespace.
    fn set(&mut self, name: &str, value: impl Into<String>);
    /// Removes an attribute in no namespace.
    fn unset(&mut self, name: &str);
    /// Builder-style [`ElementExt::set`].
    fn with(self, name: &str, value: impl Into<String>) -> Self;
    /// Builder-style child append.
    fn child(self, child: Element) -> Self;
    /// Builder-style text append.
    fn text_node(self, text: impl Into<String>) -> Self;
}

impl ElementExt for Element {
    fn set(&mut self, name: &str, value: impl Into<String>) {
        if let Ok(name) = NcName::try_from(name) {
            self.attrs_mut().insert(Namespace::NONE, name, value.into());
        }
    }

    fn unset(&mut self, name: &str) {
        self.attrs_mut().remove(&Namespace::NONE, name);
    }

    fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.set(name, value);
        self
    }

    fn child(mut self, child: Element) -> Self {
        self.append_child(child);
        self
    }

    fn text_node(mut self, text: impl Into<String>) -> Self {
        self.append_text(text);
        self
    }
}

/// The stanza's `from`, parsed (a [`jid::Jid`], or a [`jid::FullJid`] where only a device can
/// have sent it): missing or unparseable, the stanza is refused.
pub fn sender<J: FromStr<Err = jid::Error>>(stanza: &Element) -> Result<J, E2eError> {
    stanza
        .attr("from")
        .ok_or(E2eError::Missing { what: "from" })?
        .parse()
        .map_err(|e: jid::Error| E2eError::Malformed { what: "from", detail: e.to_string() })
}

/// A new element with no attributes and no children.
pub fn el(name: &str, ns: &str) -> Element {
    Element::bare(name, ns)
}

/// `<name xmlns=ns>text</name>`.
pub fn text_el(name: &str, ns: &str, text: impl Into<String>) -> Element {
    Element::bare(name, ns).text_node(text)
}

/// The deepest element nesting XML from a peer may have where a protocol sets no tighter bound
/// (the server's stream limit).
pub const MAX_DEPTH: usize = 64;

/// Whether `text`'s element nesting stays within `max` levels. minidom builds and frees trees
/// recursively, so XML from a peer (or an adapter) is scanned before the parser sees it: tens of
/// thousands of nested elements would overflow the stack. A cheap scan: a start tag `<x ...>` opens, `</x>`
/// and the `/>` of an empty-element tag close. Quoted attribute values are skipped (a `/>`
/// or `>` inside one is not the tag's end), comments, CDATA sections and processing
/// instructions are skipped to their terminators, so nothing inside them counts. It does not
/// validate anything: it only bounds what the recursive parser is given.
pub fn nesting_within(text: &str, max: usize) -> bool {
    let bytes = text.as_bytes();
    let find = |from: usize, pat: &[u8]| -> usize {
        bytes
            .get(from..)
            .and_then(|rest| rest.windows(pat.len()).position(|w| w == pat))
            .map_or(bytes.len(), |p| from + p + pat.len())
    };
    let mut depth: usize = 0;
    let mut i = 0;
    while let Some(at) = bytes.get(i..).and_then(|rest| rest.iter().position(|b| *b == b'<')) {
        let start = i + at;
        let rest = bytes.get(start..).unwrap_or_default();
        if rest.starts_with(b"<!--") {
            i = find(start + 4, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            i = find(start + 9, b"]]>");
        } else if rest.starts_with(b"<?") {
            i = find(start + 2, b"?>");
        } else if rest.starts_with(b"<!") {
            i = find(start + 2, b">");
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            i = find(start + 2, b">");
        } else {
            // A start tag: its end is the first `>` outside quotes.
            let mut quote: Option<u8> = None;
            let mut j = start + 1;
            let mut empty = false;
            while let Some(&b) = bytes.get(j) {
                match (quote, b) {
                    (Some(q), _) if b == q => quote = None,
                    (Some(_), _) => {}
                    (None, b'\'' | b'"') => quote = Some(b),
                    (None, b'>') => {
                        empty = bytes.get(j - 1) == Some(&b'/');
                        break;
                    }
                    (None, _) => {}
                }
                j += 1;
            }
            if !empty {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            i = j + 1;
        }
    }
    true
}
