//! The wire description: what the attacker, the judges and the diagrams may know of a
//! protocol's wire format, and nothing more. Each protocol's folder implements [`Wire`] and
//! hands it to the registry ([`crate::ProtocolDef::wire`]); scenarios then speak
//! protocol-neutral words (`flip: {ciphertext: true, bit: 77}`, `match: {conversation: true}`,
//! `downgrade: {body: ...}`) and a property template is the same for every protocol.
//!
//! Everything here works on what crosses the wire: it holds no keys, and what it lets the
//! attacker do (find the ciphertext, re-encode it, strip it) anyone on the path can do.

use core::ops::Range;

use minidom::Element;

/// A protocol's ciphertext, as it travels in a stanza, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ciphertext {
    /// The protocol's protected blob, decoded from its transport encoding (base64, armour,
    /// text): a Data Message, OpenPGP packets, a CMS object, a TLS record, an OMEMO payload.
    pub bytes: Vec<u8>,
    /// Where the encrypted content proper sits in `bytes` (past headers, key ids and key
    /// packets): what a bit index in `flip: {ciphertext: true}` counts in.
    pub content: Range<usize>,
    /// What the blob is, for the transcript (`the OTR Data Message`).
    pub what: &'static str,
}

/// What a rollback took out of an offer, for the transcript and the judges: both in the
/// protocol's own terms (`version 3 of the Query Message's versions`, `modp group 5`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawn {
    /// What was taken out of the offer.
    pub removed: String,
    /// What the offer still holds (`no version at all` when nothing is left).
    pub left: String,
}

/// What a protocol's wire format looks like to someone on the path.
///
/// Every method has a default that knows nothing: a protocol says what applies to it.
pub trait Wire: Sync {
    /// Short labels of the payloads this protocol puts in stanzas, by namespace (`OMEMO
    /// encrypted`): what sequence diagrams print for them.
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// Whether this stanza carries the conversation, the text users write (encrypted or not),
    /// rather than key material, a handshake or session plumbing.
    fn carries_conversation(&self, stanza: &Element) -> bool {
        let _ = stanza;
        false
    }

    /// The ciphertext this stanza carries, decoded, if it carries one.
    fn ciphertext(&self, stanza: &Element) -> Option<Ciphertext> {
        let _ = stanza;
        None
    }

    /// Puts `bytes` (a changed [`Ciphertext::bytes`] of this stanza) back in place, encoded
    /// as the protocol encodes it (base64, armour with its CRC recomputed, as anyone can).
    /// `false` when the stanza carries no ciphertext.
    fn set_ciphertext(&self, stanza: &mut Element, bytes: &[u8]) -> bool {
        let _ = (stanza, bytes);
        false
    }

    /// What a downgrade attacker leaves: the encryption removed from the stanza and `body`
    /// put in clear in its place. `false` when the stanza carries no encryption to strip.
    fn strip_encryption(&self, stanza: &mut Element, body: &str) -> bool {
        let _ = (stanza, body);
        false
    }

    /// What a rollback attacker does (XEP-0210 §3.10: "Alice MUST tell Bob which versions of
    /// the protocol she is prepared to support"): if this stanza carries an offer — the
    /// versions, or the algorithms, one party proposes for the other to choose from —, takes
    /// its newest version out (or, where it lists algorithms in order of preference, the
    /// preferred one, as long as another remains), rewritten so that the peer still parses
    /// it. `None` when the stanza carries no offer, or nothing left to withdraw.
    fn withdraw_newest(&self, stanza: &mut Element) -> Option<Withdrawn> {
        let _ = stanza;
        None
    }

    /// Whether this description claims any body, so that it must be asked after the others
    /// (the `plain` control: its "ciphertext" is every body, a fallback or an OTR message too).
    fn claims_every_body(&self) -> bool {
        false
    }

    /// What a recording alone lets anyone forge: of the messages in a recording (each body
    /// with its sender, in order), how many anyone holding the recording could have made, and
    /// of how many that carry the protocol's messages. `None` when the protocol publishes
    /// nothing that helps (every protocol but one that reveals its old MAC keys).
    fn forgeable_from_recording(&self, recording: &[(String, String)]) -> Option<(usize, usize)> {
        let _ = recording;
        None
    }
}

// ---- helpers the protocols' descriptions share ------------------------------------------

/// The first descendant of `el` (depth first, `el` itself excluded) named `name` in `ns`.
pub(crate) fn find<'a>(el: &'a Element, name: &str, ns: &str) -> Option<&'a Element> {
    el.children().find_map(|c| if c.is(name, ns) { Some(c) } else { find(c, name, ns) })
}

/// [`find`], mutably.
pub(crate) fn find_mut<'a>(el: &'a mut Element, name: &str, ns: &str) -> Option<&'a mut Element> {
    for child in el.children_mut() {
        if child.is(name, ns) {
            return Some(child);
        }
        if let Some(found) = find_mut(child, name, ns) {
            return Some(found);
        }
    }
    None
}

/// Replaces the first descendant named `name` in `ns` by `<body>` holding `body`: the
/// protected element gone, a plain body in its place.
pub(crate) fn replace_with_body(stanza: &mut Element, name: &str, ns: &str, body: &str) -> bool {
    match find_mut(stanza, name, ns) {
        Some(found) => {
            *found = crate::xml::text_el("body", crate::xml::NS_CLIENT, body);
            true
        }
        None => false,
    }
}

/// Sets the text of `stanza`'s child `<body/>` (of the client namespace) to `text`; `false`
/// when it has none.
pub(crate) fn set_body(stanza: &mut Element, text: &str) -> bool {
    match stanza.get_child_mut("body", crate::xml::NS_CLIENT) {
        Some(b) => {
            *b = crate::xml::text_el("body", crate::xml::NS_CLIENT, text);
            true
        }
        None => false,
    }
}

/// The base64 text of `el`, decoded (line-wrapped as the engines accept it), when not empty.
pub(crate) fn base64_text(el: &Element) -> Option<Vec<u8>> {
    crate::kit::codec::unb64_wrapped("ciphertext", &el.text()).ok().filter(|b| !b.is_empty())
}

/// Replaces the text of `el` by `text`, keeping its attributes and child elements.
pub(crate) fn set_text(el: &mut Element, text: String) {
    let children: Vec<Element> = el.children().cloned().collect();
    let _ = el.take_nodes();
    el.append_text(text);
    for c in children {
        el.append_child(c);
    }
}

/// [`set_text`] with `bytes` in base64.
pub(crate) fn set_base64(el: &mut Element, bytes: &[u8]) {
    set_text(el, crate::kit::codec::b64(bytes));
}

/// A blob that is all encrypted content (an OMEMO payload, an XEP-0200 `<data/>`).
pub(crate) fn whole(bytes: Vec<u8>, what: &'static str) -> Ciphertext {
    Ciphertext { content: 0..bytes.len(), bytes, what }
}

/// Whether `stanza` is a `<message/>` of the client namespace.
pub(crate) fn is_message(stanza: &Element) -> bool {
    stanza.is("message", crate::xml::NS_CLIENT) && stanza.attr("type") != Some("error")
}

/// How an element's text carries bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextEncoding {
    /// Base64 (RFC 4648 §4).
    Base64,
    /// OpenPGP ASCII armour without headers, its CRC-24 recomputed on the way back
    /// ([`crate::kit::codec`]).
    Armour,
}

/// The wire of a protocol that protects a message with one element: a downgrade strips that
/// element, and its ciphertext is the text of the element itself or of a descendant (an
/// OMEMO `<payload/>`, an XML Encryption `CipherData/CipherValue`). The object-security
/// protocols and OMEMO are described by one of these.
#[derive(Debug)]
pub(crate) struct ElementWire {
    /// The protecting element's name and namespace.
    pub element: (&'static str, &'static str),
    /// The path, by child names, from it to the element whose text is the ciphertext (empty:
    /// its own text). A message whose path is missing is not the conversation (an OMEMO key
    /// transport has no payload).
    pub text_at: &'static [&'static str],
    /// How the text encodes the bytes.
    pub encoding: TextEncoding,
    /// What the bytes are, for the transcript.
    pub what: &'static str,
    /// Where the encrypted content sits in the bytes.
    pub content: fn(&[u8]) -> Range<usize>,
    /// The diagrams' labels for the protocol's payloads.
    pub labels: &'static [(&'static str, &'static str)],
}

/// All of the bytes are encrypted content.
pub(crate) fn all_content(bytes: &[u8]) -> Range<usize> {
    0..bytes.len()
}

impl ElementWire {
    fn text_element<'a>(&self, stanza: &'a Element) -> Option<&'a Element> {
        if !is_message(stanza) {
            return None;
        }
        let (name, ns) = self.element;
        self.text_at
            .iter()
            .try_fold(find(stanza, name, ns)?, |el, step| el.children().find(|c| c.name() == *step))
    }
}

impl Wire for ElementWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        self.labels
    }

    fn carries_conversation(&self, stanza: &Element) -> bool {
        self.text_element(stanza).is_some()
    }

    fn ciphertext(&self, stanza: &Element) -> Option<Ciphertext> {
        let text = self.text_element(stanza)?;
        let bytes = match self.encoding {
            TextEncoding::Base64 => base64_text(text)?,
            TextEncoding::Armour => crate::kit::codec::dearmor_body(&text.text()).ok()?,
        };
        Some(Ciphertext { content: (self.content)(&bytes), bytes, what: self.what })
    }

    fn set_ciphertext(&self, stanza: &mut Element, bytes: &[u8]) -> bool {
        if self.text_element(stanza).is_none() {
            return false;
        }
        let (name, ns) = self.element;
        let target = find_mut(stanza, name, ns).and_then(|el| {
            self.text_at.iter().try_fold(el, |el, step| el.children_mut().find(|c| c.name() == *step))
        });
        let Some(target) = target else { return false };
        match self.encoding {
            TextEncoding::Base64 => set_base64(target, bytes),
            TextEncoding::Armour => set_text(target, crate::kit::codec::armor_body(bytes)),
        }
        true
    }

    /// The protecting element gives way to `body`, and the message's own fallback bodies (the
    /// "this message is encrypted" a client shows without the protocol) go: the recipient
    /// reads the attacker's text, not the fallback.
    fn strip_encryption(&self, stanza: &mut Element, body: &str) -> bool {
        let (name, ns) = self.element;
        if !is_message(stanza) || find(stanza, name, ns).is_none() {
            return false;
        }
        let nodes = stanza.take_nodes();
        for node in nodes {
            match node {
                minidom::Node::Element(child) if child.is("body", crate::xml::NS_CLIENT) => {}
                other => stanza.append_node(other),
            }
        }
        replace_with_body(stanza, name, ns, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A downgrade leaves the attacker's text as the only body: the protocol's own fallback
    /// ("I sent you an OMEMO encrypted message") goes with the encryption.
    #[test]
    fn a_downgrade_leaves_only_the_attackers_body() {
        let legacy: crate::Protocol = "omemo-legacy".parse().unwrap_or(crate::Protocol::ALL[0]);
        let mut m: Element = "<message xmlns='jabber:client' type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/><payload>AAAA</payload></encrypted><body>fallback</body></message>"
            .parse()
            .unwrap_or_else(|_| Element::bare("bad", "bad"));
        assert!(legacy.wire().carries_conversation(&m));
        assert!(legacy.wire().strip_encryption(&mut m, "hi"));
        let bodies: Vec<String> =
            m.children().filter(|c| c.is("body", crate::xml::NS_CLIENT)).map(Element::text).collect();
        assert_eq!(bodies, ["hi"]);
        assert!(!m.children().any(|c| c.name() == "encrypted"));
        assert!(!legacy.wire().strip_encryption(&mut m, "again"));
    }

    #[test]
    fn replaces_a_nested_element_with_a_body() {
        let mut m: Element = "<message xmlns='jabber:client'><x xmlns='n'><e xmlns='n'>1</e></x></message>"
            .parse()
            .unwrap_or_else(|_| Element::bare("bad", "bad"));
        assert!(replace_with_body(&mut m, "e", "n", "hi"));
        assert_eq!(
            String::from(&m),
            "<message xmlns='jabber:client'><x xmlns='n'><body xmlns='jabber:client'>hi</body></x></message>"
        );
        assert!(!replace_with_body(&mut m, "e", "n", "hi"));
    }
}
