//! ESessions' wire description: XEP-0116 negotiation in data forms, XEP-0200 §4 `<c/>`
//! elements whose `<data/>` is the encrypted stanza content.

use minidom::Element;

use super::forms::{FORM_TYPE, NS_DATA};
use super::{NS_C, NS_INIT};
use crate::wire::{Ciphertext, ElementWire, TextEncoding, Wire, Withdrawn, all_content};

/// XEP-0116 / XEP-0200.
static ELEMENT: ElementWire = ElementWire {
    element: ("c", NS_C),
    text_at: &["data"],
    encoding: TextEncoding::Base64,
    what: "the XEP-0200 data",
    content: all_content,
    labels: &[(NS_C, "ESession c"), (NS_INIT, "ESession init"), (super::forms::NS_FEATURE, "feature-neg")],
};

/// XEP-0116 / XEP-0200: the `<c/>` element, and the negotiation form's offer.
#[derive(Debug)]
pub(super) struct EsessionWire;

/// The registry's wire.
pub(super) static WIRE: EsessionWire = EsessionWire;

/// The fields of an ESession Request that offer versions and algorithms (XEP-0116
/// §init-online-request: "modp", "crypt_algs", "hash_algs", "compress", "sas_algs", "ver",
/// the identification methods and the signature algorithms), in the order a rollback looks at
/// them. "The options in each field MUST appear in Alice's order of preference."
const OFFERS: &[&str] =
    &["ver", "modp", "crypt_algs", "hash_algs", "sign_algs", "sas_algs", "init_pubkey", "resp_pubkey", "compress"];

/// The first ESession offer in `el` (depth first): a `form` of FORM_TYPE `urn:xmpp:ssn` with
/// options to choose from (an online request, or XEP-0187's published options).
fn offer_mut(el: &mut Element) -> Option<&mut Element> {
    let is_offer = |x: &Element| {
        x.is("x", NS_DATA)
            && x.attr("type") == Some("form")
            && x.children().any(|f| {
                f.attr("var") == Some("FORM_TYPE")
                    && f.get_child("value", NS_DATA).is_some_and(|v| v.text() == FORM_TYPE)
            })
    };
    for child in el.children_mut() {
        if is_offer(child) {
            return Some(child);
        }
        if let Some(found) = offer_mut(child) {
            return Some(found);
        }
    }
    None
}

/// The option values of a field element, in order.
fn options(field: &Element) -> Vec<String> {
    field
        .children()
        .filter(|o| o.is("option", NS_DATA))
        .filter_map(|o| o.get_child("value", NS_DATA).map(Element::text))
        .collect()
}

/// Removes the `index`th child of `el` that `keep` picks out; whether there was one.
fn remove_nth(el: &mut Element, index: usize, pick: impl Fn(&Element) -> bool) -> bool {
    let mut seen = 0;
    let mut removed = false;
    for node in el.take_nodes() {
        match node {
            minidom::Node::Element(c) if pick(&c) => {
                if seen == index && !removed {
                    removed = true;
                } else {
                    el.append_child(c);
                }
                seen += 1;
            }
            other => el.append_node(other),
        }
    }
    removed
}

impl Wire for EsessionWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        ELEMENT.labels()
    }

    fn carries_conversation(&self, stanza: &Element) -> bool {
        ELEMENT.carries_conversation(stanza)
    }

    fn ciphertext(&self, stanza: &Element) -> Option<Ciphertext> {
        ELEMENT.ciphertext(stanza)
    }

    fn set_ciphertext(&self, stanza: &mut Element, bytes: &[u8]) -> bool {
        ELEMENT.set_ciphertext(stanza, bytes)
    }

    fn strip_encryption(&self, stanza: &mut Element, body: &str) -> bool {
        ELEMENT.strip_encryption(stanza, body)
    }

    /// The preferred option of every field in [`OFFERS`] that offers more than one, so that
    /// Bob, who picks the first he supports, settles for the next. A MODP group goes with its
    /// Diffie-Hellman value (XEP-0116 §init-online-request: the "dhhashes", or "dhkeys", are
    /// "in the same order as the associated MODP groups"), so that what is left is consistent.
    fn withdraw_newest(&self, stanza: &mut Element) -> Option<Withdrawn> {
        let form = offer_mut(stanza)?;
        let (mut removed, mut left) = (Vec::new(), Vec::new());
        for var in OFFERS {
            let Some(field) = form.children_mut().find(|f| f.is("field", NS_DATA) && f.attr("var") == Some(var))
            else {
                continue;
            };
            let offered = options(field);
            if offered.len() < 2 || !remove_nth(field, 0, |c| c.is("option", NS_DATA)) {
                continue;
            }
            if *var == "modp" {
                for values in ["dhhashes", "dhkeys"] {
                    if let Some(f) =
                        form.children_mut().find(|f| f.is("field", NS_DATA) && f.attr("var") == Some(values))
                    {
                        remove_nth(f, 0, |c| c.is("value", NS_DATA));
                    }
                }
            }
            removed.push(format!("`{var}` {}", offered[0]));
            left.push(format!("`{var}` {}", offered[1..].join(", ")));
        }
        if removed.is_empty() {
            return None;
        }
        Some(Withdrawn {
            removed: format!("{} from the ESession offer", removed.join(" and ")),
            left: left.join(" and "),
        })
    }
}
