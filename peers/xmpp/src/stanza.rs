//! Stanza helpers: kinds, addressing, RFC 6120 §8.3 errors.

use jabberwock_e2e::xml::{ElementExt, NS_CLIENT, NS_STANZAS, el};
use jabberwock_e2e::{Element, Jid};

/// The three RFC 6120 stanza kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `<message/>`
    Message,
    /// `<presence/>`
    Presence,
    /// `<iq/>`
    Iq,
}

/// The kind of a top-level stream element, if it is a stanza in `jabber:client`.
pub fn kind(stanza: &Element) -> Option<Kind> {
    if stanza.ns() != NS_CLIENT {
        return None;
    }
    match stanza.name() {
        "message" => Some(Kind::Message),
        "presence" => Some(Kind::Presence),
        "iq" => Some(Kind::Iq),
        _ => None,
    }
}

/// The `type` attribute, with RFC 6120 defaults (`normal` for messages, `available` for
/// presence; iq has no default).
pub fn stanza_type(stanza: &Element) -> &str {
    match (stanza.attr("type"), stanza.name()) {
        (Some(t), _) => t,
        (None, "message") => "normal",
        (None, "presence") => "available",
        (None, _) => "",
    }
}

/// Parses an addressing attribute. `Ok(None)` when absent, `Err` when present but not a JID.
pub fn jid_attr(stanza: &Element, name: &str) -> Result<Option<Jid>, String> {
    match stanza.attr(name) {
        None => Ok(None),
        Some(s) => s.parse::<Jid>().map(Some).map_err(|e| format!("{name}='{s}': {e}")),
    }
}

/// The defined condition of a stanza error, e.g. `service-unavailable`.
/// A condition RFC 6120 §8.3.3 does not define reads `undefined-condition`
/// ([`crate::reasons::STANZA_ERRORS`]).
pub fn error_condition(stanza: &Element) -> Option<String> {
    let error = stanza.get_child("error", NS_CLIENT)?;
    let name = error.children().find(|c| c.ns() == NS_STANZAS && c.name() != "text").map(|c| c.name())?;
    let defined = crate::reasons::defined(crate::reasons::STANZA_ERRORS, name);
    Some(defined.unwrap_or("undefined-condition").to_owned())
}

/// Builds the RFC 6120 §8.3 error reply to `stanza` (from and to swapped, same id).
/// Returns `None` for stanzas that must never be answered with an error (errors themselves).
pub fn error_reply(stanza: &Element, kind: &str, condition: &str, from: Option<&str>) -> Option<Element> {
    // RFC 6120 §8.3.1: never answer an error; §8.2.3: never answer an iq result.
    if stanza_type(stanza) == "error" || (stanza.name() == "iq" && stanza_type(stanza) == "result") {
        return None;
    }
    let mut reply = el(stanza.name(), NS_CLIENT).with("type", "error");
    if let Some(id) = stanza.attr("id") {
        reply.set("id", id);
    }
    if let Some(to) = from.or(stanza.attr("to")) {
        reply.set("from", to);
    }
    if let Some(sender) = stanza.attr("from") {
        reply.set("to", sender);
    }
    Some(reply.child(error_element(kind, condition)))
}

/// `<error type=kind><condition xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>`.
pub fn error_element(kind: &str, condition: &str) -> Element {
    el("error", NS_CLIENT).with("type", kind).child(el(condition, NS_STANZAS))
}

/// `<iq type='result'/>` answering `iq`, with an optional payload.
pub fn iq_result(iq: &Element, from: Option<&str>, payload: Option<Element>) -> Element {
    let mut reply = el("iq", NS_CLIENT).with("type", "result");
    if let Some(id) = iq.attr("id") {
        reply.set("id", id);
    }
    if let Some(f) = from {
        reply.set("from", f);
    }
    if let Some(to) = iq.attr("from") {
        reply.set("to", to);
    }
    if let Some(p) = payload {
        reply.append_child(p);
    }
    reply
}

/// The single child element of an iq (its payload), if it has exactly one.
pub fn iq_payload(iq: &Element) -> Option<&Element> {
    let mut children = iq.children();
    let first = children.next()?;
    children.next().is_none().then_some(first)
}
