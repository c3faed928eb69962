//! The `application/pidf+xml` object (RFC 3863, Presence Information Data Format) that RFC
//! 3923 §4.1 signs and encrypts for directed presence:
//!
//! > 1.  Generate an "application/pidf+xml" object as defined in [PIDF].
//! > 2.  Sign and/or encrypt the "application/pidf+xml" object as specified in Requirement 3
//! >     of Section 2 above.
//! > 3.  Provide the resulting signed and/or encrypted object [...] contained in an <e2e/>
//! >     child of a <presence/> stanza [...]. The <presence/> stanza MUST include a 'to'
//! >     attribute, i.e., it must be an instance of directed presence as defined in [XMPP-IM].
//!
//! The document has the shape of RFC 3923 §4.2's Example 7: one `<tuple/>` holding the
//! `<status><basic>open</basic></status>` of available presence, the XMPP `<status/>` text
//! as its `<note/>`, and the `<timestamp/>` §6.9 asks for ("Timestamps are included in
//! "Message/CPIM" and "application/pidf+xml" objects to help prevent replay attacks"):
//!
//! ```xml
//! <presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:juliet@example.com'>
//!   <tuple id='xmpp'>
//!     <status><basic>open</basic></status>
//!     <note>retired to the chamber</note>
//!     <timestamp>2026-01-01T00:00:00.000Z</timestamp>
//!   </tuple>
//! </presence>
//! ```
//!
//! The `entity` names the presentity, which the receiver compares with the stanza's sender
//! as it compares a CPIM From. A PIDF document names no recipient: unlike a CPIM object, a
//! signed presence document can be re-enveloped to anyone (module docs, "Presence and iq").

use jid::BareJid;
use minidom::Element;

use crate::E2eError;
use crate::xml::{ElementExt, el, text_el};

/// `urn:ietf:params:xml:ns:pidf` (RFC 3863).
pub const NS_PIDF: &str = "urn:ietf:params:xml:ns:pidf";

/// What a PIDF document says, as this engine reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pidf {
    /// The presentity (`entity`, a `pres:` URI; `xmpp:` and `im:` accepted too).
    pub entity: BareJid,
    /// The tuple's `<note/>`s, in order (the XMPP `<status/>`).
    pub notes: Vec<String>,
    /// The tuple's `<timestamp/>`, as written.
    pub timestamp: String,
}

/// The document of RFC 3923 §4.1 step 1 for available presence from `entity` with `status`,
/// stamped `timestamp`, serialised.
pub fn build(entity: &BareJid, status: &str, timestamp: &str) -> String {
    let tuple = el("tuple", NS_PIDF)
        .with("id", "xmpp")
        .child(el("status", NS_PIDF).child(text_el("basic", NS_PIDF, "open")))
        .child(text_el("note", NS_PIDF, status))
        .child(text_el("timestamp", NS_PIDF, timestamp));
    String::from(&el("presence", NS_PIDF).with("entity", format!("pres:{entity}")).child(tuple))
}

fn malformed(detail: impl Into<String>) -> E2eError {
    E2eError::Malformed { what: "pidf", detail: detail.into() }
}

/// The one `name` child of `parent`.
fn only<'a>(parent: &'a Element, name: &'static str) -> Result<&'a Element, E2eError> {
    let mut found = parent.children().filter(|c| c.is(name, NS_PIDF));
    let first = found.next().ok_or(E2eError::Missing { what: name })?;
    if found.next().is_some() {
        return Err(malformed(format!("more than one <{name}/>")));
    }
    Ok(first)
}

/// Parses a PIDF document as this engine sends it: the `<presence/>` root, exactly one
/// `<tuple/>` with exactly one `<timestamp/>` (§6.9: the receiver checks it; a document with
/// several tuples would carry several, and which one counts would be ours to guess).
/// Every failure is `malformed` or `missing`; nothing here panics on hostile input.
pub fn parse(text: &str) -> Result<Pidf, E2eError> {
    if !crate::xml::nesting_within(text, crate::xml::MAX_DEPTH) {
        return Err(malformed("nested too deep"));
    }
    let root: Element = text.trim().parse().map_err(|e: minidom::Error| malformed(e.to_string()))?;
    if !root.is("presence", NS_PIDF) {
        return Err(malformed(format!("the document element is <{}/> in {:?}", root.name(), root.ns())));
    }
    let entity = root.attr("entity").ok_or(E2eError::Missing { what: "PIDF entity" })?;
    let address = ["pres:", "xmpp:", "im:"]
        .iter()
        .find_map(|scheme| entity.strip_prefix(scheme))
        .ok_or_else(|| malformed(format!("entity `{entity}` is not a pres: URI")))?;
    let entity = address.parse::<BareJid>().map_err(|e| malformed(format!("entity `{address}`: {e}")))?;
    let tuple = only(&root, "tuple")?;
    let timestamp = only(tuple, "timestamp")?.text();
    let notes = tuple.children().filter(|c| c.is("note", NS_PIDF)).map(Element::text).collect();
    Ok(Pidf { entity, notes, timestamp })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_rfc_example() {
        let a: BareJid = "juliet@example.com".parse().unwrap();
        let p = parse(&build(&a, "retired to the chamber", "2026-01-01T00:00:00.000Z")).unwrap();
        assert_eq!(
            p,
            Pidf {
                entity: a.clone(),
                notes: vec!["retired to the chamber".into()],
                timestamp: "2026-01-01T00:00:00.000Z".into()
            }
        );
        // RFC 3923 §4.2 Example 7 (its missing `>` after the tuple's id mended).
        let rfc = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf"
                 xmlns:im="urn:ietf:params:xml:ns:pidf:im"
                 entity="pres:juliet@example.com">
           <tuple id="hr0zny">
             <status>
               <basic>open</basic>
               <im:im>away</im:im>
             </status>
             <note xml:lang="en">retired to the chamber</note>
             <timestamp>2003-12-09T23:53:11.31Z</timestamp>
           </tuple>
         </presence>"#;
        let p = parse(rfc).unwrap();
        assert_eq!((p.entity, p.notes, p.timestamp.as_str()), (a, vec!["retired to the chamber".into()], "2003-12-09T23:53:11.31Z"));
    }

    #[test]
    fn hostile_inputs_are_errors() {
        let tuple = "<tuple id='t'><timestamp>x</timestamp></tuple>";
        for bad in [
            String::new(),
            "<presence/>".to_owned(),
            format!("<presence xmlns='{NS_PIDF}'>{tuple}</presence>"),
            format!("<presence xmlns='{NS_PIDF}' entity='mailto:a@b'>{tuple}</presence>"),
            format!("<presence xmlns='{NS_PIDF}' entity='pres:a@b'/>"),
            format!("<presence xmlns='{NS_PIDF}' entity='pres:a@b'>{tuple}{tuple}</presence>"),
            format!("<presence xmlns='{NS_PIDF}' entity='pres:a@b'><tuple id='t'/></presence>"),
            format!("<other xmlns='{NS_PIDF}' entity='pres:a@b'>{tuple}</other>"),
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
    }
}
