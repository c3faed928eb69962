//! Device ids in the attacker's plan: `$id(bob/phone)` in a rule's `match.text` and
//! `match.attributes`, in the XML of `replace`, `rewrite` and `substitute`, and in an injected
//! `stanza` stands for the id that device has on the wire (its OMEMO device id), so a scenario
//! can name it without a first run to read it.
//!
//! The words are read twice. When the scenario is validated, [`canonical`] checks every
//! placeholder (it must name a device of the scenario whose protocol gives its devices an id)
//! and writes the device's full JID into it, so the plan names devices unambiguously. An id
//! exists only once the device's engine is built from the run's seed (the id is drawn from
//! the device's random stream, and `--seed` may change it), so the runner fills them in with
//! [`fill`] when it has built the engines, before the first step.
//!
//! In those fields `$` always starts a word: `$id(<device>)` or `$$` (a `$`); any other `$` is
//! an error, so a text never means something else than it seems to.

use std::collections::BTreeMap;

use jabberwock_e2e::{Element, FullJid};

/// One piece of a text: as written, or a device's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece<'a> {
    /// Text as it is.
    Text(&'a str),
    /// `$$`: a `$`.
    Dollar,
    /// `$id(<device>)`: the named device's id.
    Id(&'a str),
}

const OPEN: &str = "$id(";

/// Splits `text` into its pieces; an error says what is wrong with a `$`.
fn pieces(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        if at > 0 {
            out.push(Piece::Text(&rest[..at]));
        }
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push(Piece::Dollar);
            rest = after;
        } else if let Some(after) = tail.strip_prefix(OPEN) {
            let Some(end) = after.find(')') else {
                return Err(format!("`{}`: `$id(` has no closing `)`: write `$id(<device>)`", shorten(text)));
            };
            let name = after[..end].trim();
            if name.is_empty() {
                return Err("`$id()` names no device: write `$id(<device>)`, e.g. `$id(bob/phone)`".into());
            }
            out.push(Piece::Id(name));
            rest = &after[end + 1..];
        } else {
            return Err(format!(
                "`{}`: a `$` starts a device's id, `$id(<device>)`; write `$$` for a `$`",
                shorten(text)
            ));
        }
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// The start of `s`, for an error message.
fn shorten(s: &str) -> String {
    let short: String = s.chars().take(40).collect();
    if short.len() < s.len() { format!("{short}…") } else { short }
}

/// Checks the placeholders of `text` and writes each named device as its full JID
/// (`resolve` finds the device and checks that it has an id; `bad` words a syntax error).
/// Everything else is left as written (`$$` included: [`fill`] reads it).
pub fn canonical<E>(
    text: &str,
    resolve: &mut impl FnMut(&str) -> Result<FullJid, E>,
    bad: &impl Fn(String) -> E,
) -> Result<String, E> {
    let mut out = String::with_capacity(text.len());
    for piece in pieces(text).map_err(bad)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Dollar => out.push_str("$$"),
            Piece::Id(name) => {
                out.push_str(OPEN);
                out.push_str(&resolve(name)?.to_string());
                out.push(')');
            }
        }
    }
    Ok(out)
}

/// [`canonical`] over every attribute value and text of an element and its descendants.
pub fn canonical_element<E>(
    element: &mut Element,
    resolve: &mut impl FnMut(&str) -> Result<FullJid, E>,
    bad: &impl Fn(String) -> E,
) -> Result<(), E> {
    each_text(element, &mut |text| canonical(text, resolve, bad))
}

/// `text` with each device's id in place of its placeholder (and `$` for `$$`), from the ids
/// the devices' engines gave. The text was made [`canonical`]: a device missing from `ids`
/// is an error, not a panic.
pub fn fill(text: &str, ids: &BTreeMap<FullJid, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for piece in pieces(text)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Dollar => out.push('$'),
            Piece::Id(name) => {
                let id = name.parse::<FullJid>().ok().and_then(|jid| ids.get(&jid));
                let Some(id) = id else {
                    return Err(format!("no device id is known for `{name}`"));
                };
                out.push_str(id);
            }
        }
    }
    Ok(out)
}

/// [`fill`] over every attribute value and text of an element and its descendants.
pub fn fill_element(element: &mut Element, ids: &BTreeMap<FullJid, String>) -> Result<(), String> {
    each_text(element, &mut |text| fill(text, ids))
}

/// Replaces every attribute value and text node of `element` (and below) by `f`'s answer.
fn each_text<E>(element: &mut Element, f: &mut impl FnMut(&str) -> Result<String, E>) -> Result<(), E> {
    for value in element.attrs_mut().values_mut() {
        *value = f(value)?;
    }
    for text in element.texts_mut() {
        *text = f(text)?;
    }
    for child in element.children_mut() {
        each_text(child, f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> FullJid {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// Resolves `bob/phone` only.
    fn resolve(name: &str) -> Result<FullJid, String> {
        match name {
            "bob/phone" => Ok(jid("bob@b.example/phone")),
            other => Err(format!("unknown device `{other}`")),
        }
    }

    fn canon(text: &str) -> Result<String, String> {
        canonical(text, &mut resolve, &|e| e)
    }

    #[test]
    fn a_placeholder_becomes_the_full_jid_then_the_id() {
        let ids = BTreeMap::from([(jid("bob@b.example/phone"), "696411388".to_owned())]);
        let c = canon("rid $id(bob/phone) costs $$5").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c, "rid $id(bob@b.example/phone) costs $$5");
        assert_eq!(fill(&c, &ids), Ok("rid 696411388 costs $5".to_owned()));
        assert_eq!(
            fill("$id(bob@b.example/phone)$id(bob@b.example/phone)", &ids).as_deref(),
            Ok("696411388696411388")
        );
        assert_eq!(fill("no words", &ids).as_deref(), Ok("no words"));
        assert_eq!(
            fill("$id(bob@b.example/laptop)", &ids),
            Err("no device id is known for `bob@b.example/laptop`".into())
        );
    }

    #[test]
    fn a_stray_dollar_or_a_bad_placeholder_is_an_error() {
        for (text, needle) in [
            ("5$", "write `$$` for a `$`"),
            ("$ID(bob/phone)", "a `$` starts a device's id"),
            ("$id(bob/phone", "no closing `)`"),
            ("$id( )", "names no device"),
            ("$id(carol/phone)", "unknown device `carol/phone`"),
        ] {
            let e = canon(text).expect_err(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn every_attribute_and_text_of_an_element_is_read() {
        let mut el: Element = "<devices xmlns='urn:x'><device id='$id(bob/phone)'/><note>a $$ and $id(bob/phone)</note></devices>"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        canonical_element(&mut el, &mut resolve, &|e| e).unwrap_or_else(|e| panic!("{e}"));
        let ids = BTreeMap::from([(jid("bob@b.example/phone"), "7".to_owned())]);
        fill_element(&mut el, &ids).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            String::from(&el),
            "<devices xmlns='urn:x'><device id='7'/><note>a $ and 7</note></devices>"
        );
    }
}
