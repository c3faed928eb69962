//! XEP-0004 data forms as XEP-0155 / XEP-0116 use them, and the normalization of XEP-0116
//! §sign-normal that every MAC and the SAS are computed over.

use minidom::Element;

use crate::E2eError;
use crate::xml::{ElementExt, el, text_el};

/// `jabber:x:data`.
pub const NS_DATA: &str = "jabber:x:data";
/// XEP-0020 feature negotiation.
pub const NS_FEATURE: &str = "http://jabber.org/protocol/feature-neg";
/// The FORM_TYPE of every negotiation form (XEP-0155).
pub const FORM_TYPE: &str = "urn:xmpp:ssn";

/// One field: its var, type (omitted in submit/result forms), options and values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Field {
    /// `var`.
    pub var: String,
    /// `type`, when given.
    pub kind: Option<&'static str>,
    /// `<option><value/></option>`s.
    pub options: Vec<String>,
    /// `<value/>`s.
    pub values: Vec<String>,
    /// `<required/>`.
    pub required: bool,
}

impl Field {
    /// A field with values.
    pub fn values(var: &str, kind: Option<&'static str>, values: &[&str]) -> Field {
        Field {
            var: var.into(),
            kind,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
            ..Field::default()
        }
    }

    /// A list field offering options, in order of preference.
    pub fn options(var: &str, kind: &'static str, options: &[&str], required: bool) -> Field {
        Field {
            var: var.into(),
            kind: Some(kind),
            options: options.iter().map(|v| (*v).to_owned()).collect(),
            required,
            ..Field::default()
        }
    }
}

/// A form: its type and fields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    /// `form`, `submit` or `result`.
    pub kind: String,
    /// The fields.
    pub fields: Vec<Field>,
}

impl Form {
    /// The `<x xmlns='jabber:x:data'/>` element.
    pub fn to_element(&self) -> Element {
        let mut x = el("x", NS_DATA).with("type", self.kind.clone());
        for f in &self.fields {
            let mut field = el("field", NS_DATA).with("var", f.var.clone());
            if let Some(k) = f.kind {
                field.set("type", k);
            }
            for o in &f.options {
                field.append_child(el("option", NS_DATA).child(text_el("value", NS_DATA, o.clone())));
            }
            for v in &f.values {
                field.append_child(text_el("value", NS_DATA, v.clone()));
            }
            if f.required {
                field.append_child(el("required", NS_DATA));
            }
            x.append_child(field);
        }
        x
    }

    /// Reads a form element (untrusted).
    pub fn parse(x: &Element) -> Result<Form, E2eError> {
        if !x.is("x", NS_DATA) {
            return Err(E2eError::Malformed { what: "form", detail: "not a jabber:x:data form".into() });
        }
        let mut fields = Vec::new();
        for f in x.children().filter(|c| c.is("field", NS_DATA)) {
            let var = f.attr("var").ok_or(E2eError::Missing { what: "field var" })?.to_owned();
            fields.push(Field {
                var,
                kind: None,
                options: f
                    .children()
                    .filter(|o| o.is("option", NS_DATA))
                    .filter_map(|o| o.get_child("value", NS_DATA).map(Element::text))
                    .collect(),
                values: f.children().filter(|v| v.is("value", NS_DATA)).map(Element::text).collect(),
                required: f.has_child("required", NS_DATA),
            });
        }
        Ok(Form { kind: x.attr("type").unwrap_or_default().to_owned(), fields })
    }

    /// The field `var`.
    pub fn field(&self, var: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.var == var)
    }

    /// The single value of `var`.
    pub fn value(&self, var: &'static str) -> Result<&str, E2eError> {
        self.field(var)
            .and_then(|f| f.values.first())
            .map(String::as_str)
            .ok_or(E2eError::Missing { what: var })
    }
}

/// Exclusive C14N escaping: in character data `&`, `<`, `>` and CR; in attribute values `&`,
/// `<`, `"`, tab, LF and CR.
fn escape(s: &str, in_attribute: bool, out: &mut String) {
    for c in s.chars() {
        let escaped = match (c, in_attribute) {
            ('&', _) => "&amp;",
            ('<', _) => "&lt;",
            ('>', false) => "&gt;",
            ('"', true) => "&quot;",
            ('\t', true) => "&#x9;",
            ('\n', true) => "&#xA;",
            ('\r', _) => "&#xD;",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(escaped);
    }
}

/// §sign-normal: character data between elements removed, attributes in lexicographic order
/// with double quotes, no namespace declarations or prefixes, empty elements as start-end
/// pairs; leaf text kept (escaped as C14N does).
pub fn normalize(e: &Element, out: &mut String) {
    out.push('<');
    out.push_str(e.name());
    // Namespaces are not attributes here (minidom keeps them apart); namespaced attributes
    // do not occur in forms and are left out with them.
    let mut attrs: Vec<(String, &String)> = e
        .attrs()
        .iter()
        .filter(|((ns, _), _)| ns.is_none())
        .map(|((_, name), value)| (name.to_string(), value))
        .collect();
    attrs.sort();
    for (k, v) in attrs {
        out.push(' ');
        out.push_str(&k);
        out.push_str("=\"");
        escape(v, true, out);
        out.push('"');
    }
    out.push('>');
    if e.children().next().is_some() {
        for c in e.children() {
            normalize(c, out);
        }
    } else {
        escape(&e.text(), false, out);
    }
    out.push_str("</");
    out.push_str(e.name());
    out.push('>');
}

/// The "normalized content" of a form (§init-hide step 2): its children, normalized and
/// concatenated, leaving out the fields named in `without`.
pub fn form_content(x: &Element, without: &[&str]) -> Vec<u8> {
    let mut out = String::new();
    for c in x.children() {
        if c.name() == "field" && c.attr("var").is_some_and(|v| without.contains(&v)) {
            continue;
        }
        normalize(c, &mut out);
    }
    out.into_bytes()
}
