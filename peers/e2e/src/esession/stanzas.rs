//! Which stanzas an ESession protects, and what of them travels inside its `<c/>`.
//!
//! XEP-0200 §content: "Alice MAY use this protocol to encrypt only that part of the *content*
//! of one-to-one <message/>, <presence/> and <iq/> stanzas that would normally be ignored by
//! the intermediate servers. She MUST NOT encrypt: Stanza wrapper element tags (only stanza
//! content); <error/> elements; ...; <thread/> elements; <amp/> elements (see XEP-0079)".
//!
//! XEP-0116 §init-online-request, option 6: "The list of stanza types that MAY be encrypted
//! and decrypted in a "stanzas" field (message, presence, iq)"; §init-complete-verify: "Alice
//! and Bob MUST exchange only encrypted forms of the one-to-one stanza types they agreed upon
//! (e.g., <message/> and <iq/> stanzas) within the session."

use core::fmt;

use minidom::Element;

use super::offline::NS_SHIM;
use crate::content::{Content, Directed, decrypted_parts};
use crate::xml::NS_CLIENT;
use crate::E2eError;

/// A stanza type of the 'stanzas' field (XEP-0116 §init-online-request, option 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    /// `<message/>`.
    Message,
    /// `<presence/>`.
    Presence,
    /// `<iq/>`.
    Iq,
}

/// Every stanza type we offer and accept, in the order the 'stanzas' field lists them.
pub(super) const OFFERED: [Kind; 3] = [Kind::Message, Kind::Presence, Kind::Iq];

impl Kind {
    /// The stanza's element name, as the 'stanzas' field names it.
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Presence => "presence",
            Kind::Iq => "iq",
        }
    }

    /// The stanza type a 'stanzas' value, or a stanza's element name, names.
    pub(super) fn named(name: &str) -> Option<Kind> {
        OFFERED.into_iter().find(|k| k.name() == name)
    }

    /// The type of a stanza in `jabber:client`.
    pub(super) fn of(stanza: &Element) -> Option<Kind> {
        if stanza.ns() != NS_CLIENT {
            return None;
        }
        Kind::named(stanza.name())
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The names of [`OFFERED`], for the form.
pub(super) fn offered_names() -> Vec<&'static str> {
    OFFERED.iter().map(|k| k.name()).collect()
}

/// Bob's choice (XEP-0116 §init-online-bobprep): of the stanza types Alice offers in the
/// list-multi 'stanzas' field, every one we accept, in her order. Our engine carries its own
/// termination in a `<message/>` (§terminate), so an offer without `message` is refused.
pub(super) fn accept_offer(offered: &[String]) -> Result<Vec<Kind>, E2eError> {
    let mut kinds: Vec<Kind> = Vec::new();
    for kind in offered.iter().filter_map(|v| Kind::named(v.trim())) {
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if !kinds.contains(&Kind::Message) {
        return Err(not_acceptable("no `message` in the offered `stanzas`"));
    }
    Ok(kinds)
}

/// Alice's check of Bob's answer (XEP-0116 §init-acceptalice-prep: the options "MUST be ones
/// she offered"): every value one of [`OFFERED`], `message` among them.
pub(super) fn check_answer(values: &[String]) -> Result<Vec<Kind>, E2eError> {
    let mut kinds = Vec::new();
    for v in values {
        let kind = Kind::named(v.trim()).ok_or_else(|| not_acceptable("`stanzas` we did not offer"))?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if !kinds.contains(&Kind::Message) {
        return Err(not_acceptable("`stanzas` without `message`"));
    }
    Ok(kinds)
}

fn not_acceptable(detail: &str) -> E2eError {
    E2eError::Rejected { reason: "not-acceptable", detail: detail.into() }
}

/// What a user sends through an ESession, kept while one is negotiated.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outgoing {
    /// A message: its body and its other parts.
    Message(Content),
    /// Directed presence or an iq.
    Directed(Directed),
}

impl Outgoing {
    /// Its stanza type.
    pub(super) fn kind(&self) -> Kind {
        match self {
            Outgoing::Message(_) => Kind::Message,
            Outgoing::Directed(Directed::Presence { .. }) => Kind::Presence,
            Outgoing::Directed(Directed::Iq { .. }) => Kind::Iq,
        }
    }

    /// The stanza content to encrypt (XEP-0200 §encrypt step 1, "the XML content she wishes to
    /// send"): a message's `<body/>` and its other parts, a presence's `<status/>`, an iq's
    /// payload. A message's `<thread/>` is left out: §content forbids encrypting it, and the
    /// stanza's thread is the ESession's (XEP-0155 names a session by it) — [`user_thread`]
    /// finds it beforehand.
    pub(super) fn content(&self) -> String {
        match self {
            Outgoing::Message(content) => {
                let mut xml = if content.body.is_empty() { String::new() } else { body_xml(&content.body) };
                for part in content.parts.iter().filter(|p| !is_thread(p)) {
                    xml.push_str(&String::from(part));
                }
                xml
            }
            Outgoing::Directed(Directed::Presence { status, .. }) => {
                format!("<status>{}</status>", escape(status))
            }
            Outgoing::Directed(Directed::Iq { payload, .. }) => String::from(payload),
        }
    }
}

/// The `<thread/>` a user put among a message's parts (RFC 6121 §5.2.5), which an ESession
/// cannot carry: XEP-0200 §content says "She MUST NOT encrypt ... <thread/> elements", and
/// the one `<thread/>` the stanza has in clear is the ESession's own (XEP-0155 §new: "The
/// stanza MUST contain a <thread/> element ... unique to the proposed session"; XEP-0200
/// §send shows it beside `<c/>`). Neither text offers a second place for it.
pub(super) fn user_thread(content: &Content) -> Option<String> {
    content.parts.iter().find(|p| is_thread(p)).map(Element::text)
}

fn is_thread(part: &Element) -> bool {
    part.is("thread", NS_CLIENT)
}

/// What of decrypted content the user is shown as parts of a `kind` stanza (XEP-0210 §4.1),
/// besides a message's body: a message's and a presence's other children, but what a
/// receiving client discards there ([`decrypted_parts`]), a `<thread/>`, which §content
/// keeps out of `<c/>` (the ESession's own is in clear), and the `Created` SHIM header an
/// offline ESession's sender stamps its message with (XEP-0187 §exchange: the protocol's, not
/// a part the user sent); an iq's payload whole.
pub(super) fn parts(kind: Kind, children: &[Element]) -> Vec<Element> {
    match kind {
        Kind::Iq => children.to_vec(),
        Kind::Message | Kind::Presence => {
            let mut content = Element::bare("content", NS_CLIENT);
            for c in children {
                content.append_child(c.clone());
            }
            let own = |p: &Element| is_thread(p) || p.is("headers", NS_SHIM);
            decrypted_parts(&content).into_iter().filter(|p| !own(p)).collect()
        }
    }
}

/// Whether decrypted `children` can be the content of a `kind` stanza (RFC 6120 §8.2.3, RFC
/// 6121 §4.7 and §5.2): an iq holds exactly one payload and no message or presence elements, a
/// presence no message elements, a message no presence elements. `malformed` otherwise.
pub(super) fn fits(kind: Kind, children: &[Element]) -> Result<(), E2eError> {
    let client = |names: &[&str]| children.iter().any(|c| c.ns() == NS_CLIENT && names.contains(&c.name()));
    const MESSAGE: &[&str] = &["body", "subject"];
    const PRESENCE: &[&str] = &["status", "show", "priority"];
    let wrong = match kind {
        Kind::Iq => children.len() != 1 || client(MESSAGE) || client(PRESENCE),
        Kind::Presence => client(MESSAGE),
        Kind::Message => client(PRESENCE),
    };
    if wrong {
        return Err(E2eError::Malformed {
            what: "content",
            detail: format!("not the content of a <{}/> (XEP-0200 §decrypt)", kind.name()),
        });
    }
    Ok(())
}

pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The content we encrypt for a chat message's body: `<body/>` (the stanza's namespace
/// applies).
pub(super) fn body_xml(body: &str) -> String {
    format!("<body>{}</body>", escape(body))
}
