//! A stanza's whole content, beyond a message body: XEP-0210 §4.1 ("The solution MUST be
//! generally applicable to the full content of any XML stanza type (message, presence, iq)
//! sent between two entities"). The parts a message may carry beside its body, the
//! elements they travel as, and how a received part is named to the user.

use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use crate::xml::{ElementExt, NS_CLIENT, el, text_el};

/// XEP-0071: XHTML-IM's wrapper.
pub const NS_XHTML_IM: &str = "http://jabber.org/protocol/xhtml-im";
/// XEP-0071: the XHTML body inside it.
pub const NS_XHTML: &str = "http://www.w3.org/1999/xhtml";
/// XEP-0066: an out-of-band URL (`jabber:x:oob`).
pub const NS_OOB: &str = "jabber:x:oob";
/// XEP-0085: chat state notifications.
pub const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
/// XEP-0308: last message correction.
pub const NS_CORRECT: &str = "urn:xmpp:message-correct:0";

/// The chat states of XEP-0085.
pub const CHAT_STATES: [&str; 5] = ["active", "composing", "paused", "inactive", "gone"];

/// What a message carries: its body, and the other parts of the stanza, as the elements
/// they are (`<subject/>`, `<html/>`, ...). An engine protects what its protocol can and
/// leaves the rest in clear ([`crate::Engine::send_message`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Content {
    /// The body text.
    pub body: String,
    /// The other parts, as child elements of the `<message/>`.
    pub parts: Vec<Element>,
}

impl Content {
    /// A message of a body alone.
    pub fn body(body: &str) -> Self {
        Content { body: body.to_owned(), parts: Vec::new() }
    }
}

/// The parts a user may put into a message beside its body, protocol-neutral.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageParts {
    /// RFC 6121 §5.2.4 `<subject/>`.
    pub subject: Option<String>,
    /// RFC 6121 §5.2.5 `<thread/>`.
    pub thread: Option<String>,
    /// XEP-0071: the same message as XHTML (its text, in one paragraph).
    pub xhtml: Option<String>,
    /// XEP-0066: a URL sent out of band.
    pub oob: Option<String>,
    /// XEP-0085: a chat state (one of [`CHAT_STATES`]).
    pub chat_state: Option<String>,
    /// XEP-0308: the message corrects the sender's previous message to the same account.
    pub correction: bool,
}

impl MessageParts {
    /// Whether there is nothing beside the body.
    pub fn is_empty(&self) -> bool {
        *self == MessageParts::default()
    }

    /// The parts as `<message/>` children; `corrects` is the id of the message a correction
    /// replaces (none known: no `<replace/>`).
    pub fn elements(&self, corrects: Option<&str>) -> Vec<Element> {
        let mut parts = Vec::new();
        if let Some(s) = &self.subject {
            parts.push(text_el("subject", NS_CLIENT, s));
        }
        if let Some(t) = &self.thread {
            parts.push(text_el("thread", NS_CLIENT, t));
        }
        if let Some(x) = &self.xhtml {
            parts.push(el("html", NS_XHTML_IM).child(el("body", NS_XHTML).child(text_el("p", NS_XHTML, x))));
        }
        if let Some(url) = &self.oob {
            parts.push(el("x", NS_OOB).child(text_el("url", NS_OOB, url)));
        }
        if let Some(state) = &self.chat_state {
            parts.push(el(state, NS_CHATSTATES));
        }
        if let (true, Some(id)) = (self.correction, corrects) {
            parts.push(el("replace", NS_CORRECT).with("id", id));
        }
        parts
    }
}

/// The parts of a message stanza among its children, as [`describe`] names them.
pub fn message_parts(stanza: &Element) -> Vec<Element> {
    stanza.children().filter(|c| describe(c).is_some()).cloned().collect()
}

/// What a message part is, for the user: its name and the text it shows (`None`: not one
/// of the parts this module knows).
pub fn describe(part: &Element) -> Option<(&'static str, String)> {
    let ns = part.ns();
    Some(match (part.name(), ns.as_str()) {
        ("subject", NS_CLIENT) => ("subject", part.text()),
        ("thread", NS_CLIENT) => ("thread", part.text()),
        ("status", NS_CLIENT) => ("status", part.text()),
        ("html", NS_XHTML_IM) => ("xhtml", all_text(part)),
        ("x", NS_OOB) => ("oob", part.get_child("url", NS_OOB).map(Element::text).unwrap_or_default()),
        (state, NS_CHATSTATES) if CHAT_STATES.contains(&state) => ("chat-state", state.to_owned()),
        ("replace", NS_CORRECT) => ("correction", part.attr("id").unwrap_or_default().to_owned()),
        _ => return None,
    })
}

/// The character data of an element and its descendants, in document order.
pub fn all_text(e: &Element) -> String {
    let mut out = e.text();
    for c in e.children() {
        out.push_str(&all_text(c));
    }
    out
}

/// XEP-0420 §server-processed: namespaces whose elements the server must see and a receiving
/// client discards inside encrypted content — XEP-0334 hints, XEP-0359 stanza ids, XEP-0033
/// addresses, XEP-0380 EME.
pub const SERVER_PROCESSED: [&str; 4] =
    ["urn:xmpp:hints", "urn:xmpp:sid:0", "http://jabber.org/protocol/address", crate::xml::NS_EME];

/// The parts among the children of decrypted content (an SCE `<content/>`, a decrypted
/// stanza's children): all but the `<body/>` and the elements [`SERVER_PROCESSED`] says a
/// receiving client discards there (XEP-0420 §receiving: "checked against the permitted list
/// and any disallowed elements are discarded").
pub fn decrypted_parts(content: &Element) -> Vec<Element> {
    content
        .children()
        .filter(|c| !c.is("body", NS_CLIENT) && !SERVER_PROCESSED.contains(&c.ns().as_str()))
        .cloned()
        .collect()
}

/// A `<message/>` of parts alone, in clear: what a client sends beside a protocol that
/// encrypts only the body (a chat state, an out-of-band URL).
pub fn clear_message(to: &BareJid, parts: &[Element]) -> Element {
    let mut m = el("message", NS_CLIENT).with("to", to.to_string()).with("type", "chat");
    for p in parts {
        m.append_child(p.clone());
    }
    m
}

/// RFC 6121 §4.6 directed presence with a `<status/>` (§4.7.2.2), in clear.
pub fn clear_presence(to: &str, status: &str) -> Element {
    el("presence", NS_CLIENT).with("to", to).child(text_el("status", NS_CLIENT, status))
}

/// RFC 6120 §8.2.3 an `<iq type='set'/>` carrying `payload`, in clear.
pub fn clear_iq(to: &str, payload: &Element) -> Element {
    el("iq", NS_CLIENT).with("type", "set").with("to", to).child(payload.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_built_is_named_back_with_its_text() {
        let parts = MessageParts {
            subject: Some("s1".into()),
            thread: Some("t1".into()),
            xhtml: Some("x1".into()),
            oob: Some("https://example.org/u1".into()),
            chat_state: Some("composing".into()),
            correction: true,
        };
        let named: Vec<(&str, String)> = parts.elements(Some("m7")).iter().filter_map(describe).collect();
        assert_eq!(
            named,
            vec![
                ("subject", "s1".into()),
                ("thread", "t1".into()),
                ("xhtml", "x1".into()),
                ("oob", "https://example.org/u1".into()),
                ("chat-state", "composing".into()),
                ("correction", "m7".into()),
            ]
        );
        assert!(parts.elements(None).iter().all(|p| p.name() != "replace"));
        assert!(MessageParts::default().is_empty());
    }

    #[test]
    fn unknown_children_are_not_parts() {
        let m = el("message", NS_CLIENT)
            .child(text_el("body", NS_CLIENT, "b"))
            .child(el("made-up", NS_CHATSTATES))
            .child(text_el("subject", NS_CLIENT, "s"));
        let parts = message_parts(&m);
        assert_eq!(parts.len(), 1);
        assert_eq!(describe(&parts[0]), Some(("subject", "s".into())));
    }
}

/// A directed presence or an iq request the user sent through an engine, as an engine keeps it
/// while it waits for what it needs to protect it (the recipient's keys or certificate).
#[derive(Debug, Clone, PartialEq)]
pub enum Directed {
    /// Directed presence with this `<status/>` (RFC 6121 §4.6).
    Presence {
        /// Its addressee, as the user named it.
        to: Jid,
        /// The status text.
        status: String,
    },
    /// An `<iq type='set'/>` with this payload (RFC 6120 §8.2.3).
    Iq {
        /// The device it is for.
        to: FullJid,
        /// The payload.
        payload: Element,
    },
}

impl Directed {
    /// Its addressee, as the user named it (an account, or one device).
    pub fn addressee(&self) -> Jid {
        match self {
            Directed::Presence { to, .. } => to.clone(),
            Directed::Iq { to, .. } => Jid::from(to.clone()),
        }
    }

    /// The account it goes to.
    pub fn to(&self) -> BareJid {
        self.addressee().to_bare()
    }
}
