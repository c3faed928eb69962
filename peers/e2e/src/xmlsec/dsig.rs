//! XML Signature (xmldsig-core1) as this binding uses it: one enveloped signature
//! (§6.6.4 enveloped-signature transform, then Exclusive XML Canonicalization 1.0) over the
//! payload element, `rsa-sha256` (RFC 6931 §2.3.2) with a `sha256` digest (§6.2.2).
//!
//! Verification resolves the Reference the way a real XML Signature implementation does
//! (xmldsig §4.4.3.3 same-document `#id` → the element carrying that ID and its descendants,
//! minus the Signature, canonicalised, digested) and then reads the payload **from the node
//! that reference resolved to** — never from a separate search of the document. The checks
//! that defeat signature wrapping are listed on [`verify`].

use minidom::Element;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use sha2::{Digest, Sha256};
use xml_sec::c14n::{C14nAlgorithm, canonicalize};
use xml_sec::{XmlDomDocument as Document, XmlDomNode as Node, XmlDomNodeId as NodeId};

use super::keys::{KeyPair, PublicKey, b64, unb64};
use super::{NS, NS_DS};
use crate::E2eError;
use crate::kit::crypto::equal;
use crate::xml::{ElementExt, el, text_el};

/// Exclusive XML Canonicalization 1.0, without comments.
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
/// §6.6.4 enveloped signature transform.
pub const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
/// RFC 6931 §2.3.2 RSASSA-PKCS1-v1_5 with SHA-256.
pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
/// §6.2.2 SHA-256 (the xmlenc URI, as xmldsig-core1 names it).
pub const DIGEST_SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
/// Exclusive C14N's `InclusiveNamespaces` parameter (xml-exc-c14n §3).
const NS_EXC: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";

/// Finds the sender's candidate keys by `<ds:KeyName/>` (`None`: all of them).
pub type KeyLookup<'a> = dyn FnMut(Option<&str>) -> Result<Vec<PublicKey>, E2eError> + 'a;

/// What a valid signed payload says. Every field was read from the element the Reference
/// resolved to, so the signature covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The payload's `Id`: a message id, unique per sender (replay detection).
    pub id: String,
    /// `<to/>`: the bare JID the sender addressed.
    pub to: String,
    /// `<from/>`: the sender's bare JID.
    pub from: String,
    /// `<time/>`: XEP-0082 DateTime of sending.
    pub time: String,
    /// The kind of stanza signed: `message` (a `<body/>`), `presence` or `iq` (a
    /// `<presence/>` or `<iq/>` child of the payload).
    pub stanza: &'static str,
    /// `<body/>` (empty for presence and iq).
    pub body: String,
    /// The stanza's other content, as the elements it travels as: a message's `<parts/>`
    /// children, a presence's (its `<status/>`), an iq's (its payload).
    pub parts: Vec<Element>,
    /// The fingerprint of the key whose signature verified.
    pub signer: String,
}

fn rejected(reason: &'static str, detail: impl Into<String>) -> E2eError {
    E2eError::Rejected { reason, detail: detail.into() }
}

fn is(node: Node<'_, '_>, ns: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().name() == name && node.tag_name().namespace() == Some(ns)
}

/// The element children of a node (text between them is whitespace we ignore).
fn elements<'a, 'i>(node: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(Node::is_element)
}

/// The only `ns:name` child of `node`.
fn only_child<'a, 'i>(node: Node<'a, 'i>, ns: &str, name: &'static str) -> Result<Node<'a, 'i>, E2eError> {
    let mut found = elements(node).filter(|c| is(*c, ns, name));
    let first = found.next().ok_or(E2eError::Missing { what: name })?;
    if found.next().is_some() {
        return Err(E2eError::Malformed { what: name, detail: "appears more than once".into() });
    }
    Ok(first)
}

/// All character data directly inside `node`; an element child is an error (the fields are
/// text only).
fn text_of(node: Node<'_, '_>, what: &'static str) -> Result<String, E2eError> {
    let mut s = String::new();
    for c in node.children() {
        if c.is_element() {
            return Err(E2eError::Malformed { what, detail: "an element inside a text field".into() });
        }
        if c.is_text() {
            s.push_str(c.text().unwrap_or_default());
        }
    }
    Ok(s)
}

/// The inclusive range of node ids a subtree occupies (subtrees are contiguous in
/// document order).
fn span(node: Node<'_, '_>) -> (NodeId, NodeId) {
    let last = node.descendants().next_back().map_or(node.id(), Node::id);
    (node.id(), last)
}

fn within(id: NodeId, (first, last): (NodeId, NodeId)) -> bool {
    first <= id && id <= last
}

fn c14n_error(what: &'static str, e: impl core::fmt::Display) -> E2eError {
    E2eError::Malformed { what, detail: format!("canonicalization: {e}") }
}

/// An Exclusive C14N method element (CanonicalizationMethod or Transform) with its optional
/// `InclusiveNamespaces PrefixList`.
fn exc_c14n(method: Node<'_, '_>) -> Result<C14nAlgorithm, E2eError> {
    let uri = method.attribute("Algorithm").ok_or(E2eError::Missing { what: "Algorithm" })?;
    if uri != EXC_C14N {
        return Err(rejected("unsupported-algorithm", format!("canonicalization `{uri}`")));
    }
    let mut algo = C14nAlgorithm::from_uri(EXC_C14N).ok_or(E2eError::Missing { what: "c14n" })?;
    if let Some(incl) = elements(method).find(|c| is(*c, NS_EXC, "InclusiveNamespaces")) {
        algo = algo.with_prefix_list(incl.attribute("PrefixList").unwrap_or_default());
    }
    Ok(algo)
}

/// §4.4.3.3 + §6.6.4 + exc-c14n: the referenced element and its descendants, without the
/// Signature element that holds the Reference, canonicalised.
fn reference_octets(
    doc: &Document<'_>,
    target: Node<'_, '_>,
    signature: Node<'_, '_>,
    algo: &C14nAlgorithm,
) -> Result<Vec<u8>, E2eError> {
    let (keep, drop) = (span(target), span(signature));
    let visible = move |n: Node<'_, '_>| within(n.id(), keep) && !within(n.id(), drop);
    let mut out = Vec::new();
    canonicalize(doc, Some(&visible), algo, &mut out).map_err(|e| c14n_error("Reference", e))?;
    Ok(out)
}

/// §3.1.2 step 2: SignedInfo canonicalised with its CanonicalizationMethod.
fn signed_info_octets(
    doc: &Document<'_>,
    signed_info: Node<'_, '_>,
    algo: &C14nAlgorithm,
) -> Result<Vec<u8>, E2eError> {
    let keep = span(signed_info);
    let visible = move |n: Node<'_, '_>| within(n.id(), keep);
    let mut out = Vec::new();
    canonicalize(doc, Some(&visible), algo, &mut out).map_err(|e| c14n_error("SignedInfo", e))?;
    Ok(out)
}

fn parse(text: &str) -> Result<Document<'_>, E2eError> {
    Document::parse(text)
        .map_err(|e| E2eError::Malformed { what: "signed payload", detail: format!("{e:?}") })
}

/// The `<ds:Signature/>` template: one Reference to `#id` with the enveloped-signature and
/// exclusive C14N transforms, SHA-256 digest, RSA-SHA256, and the signer's fingerprint as
/// `<ds:KeyName/>`.
fn template(id: &str, key_name: &str) -> Element {
    let transforms = el("Transforms", NS_DS)
        .child(el("Transform", NS_DS).with("Algorithm", ENVELOPED))
        .child(el("Transform", NS_DS).with("Algorithm", EXC_C14N));
    let reference = el("Reference", NS_DS)
        .with("URI", format!("#{id}"))
        .child(transforms)
        .child(el("DigestMethod", NS_DS).with("Algorithm", DIGEST_SHA256))
        .child(el("DigestValue", NS_DS));
    let signed_info = el("SignedInfo", NS_DS)
        .child(el("CanonicalizationMethod", NS_DS).with("Algorithm", EXC_C14N))
        .child(el("SignatureMethod", NS_DS).with("Algorithm", RSA_SHA256))
        .child(reference);
    el("Signature", NS_DS)
        .child(signed_info)
        .child(el("SignatureValue", NS_DS))
        .child(el("KeyInfo", NS_DS).child(text_el("KeyName", NS_DS, key_name)))
}

fn signature_mut(payload: &mut Element) -> Option<&mut Element> {
    payload.get_child_mut("Signature", NS_DS)
}

fn set_text(e: Option<&mut Element>, text: String) -> Result<(), E2eError> {
    let e = e.ok_or(E2eError::Missing { what: "Signature template" })?;
    let _ = e.take_nodes();
    e.append_text(text);
    Ok(())
}

/// xmldsig §3.1 core generation: appends an enveloped `<ds:Signature/>` to `payload` (whose
/// `Id` attribute is `id`) and returns the signed element. The digest and the signed octets
/// come from the same code the verifier runs, over the parsed serialisation.
pub fn sign(mut payload: Element, id: &str, key: &KeyPair) -> Result<Element, E2eError> {
    payload.set("Id", id);
    payload.append_child(template(id, &key.public.fingerprint));
    let algo = C14nAlgorithm::from_uri(EXC_C14N).ok_or(E2eError::Missing { what: "c14n" })?;
    // §3.1.1 Reference generation.
    let digest = {
        let text = String::from(&payload);
        let doc = parse(&text)?;
        let root = doc.root_element();
        let sig = only_child(root, NS_DS, "Signature")?;
        Sha256::digest(reference_octets(&doc, root, sig, &algo)?)
    };
    set_text(
        signature_mut(&mut payload)
            .and_then(|s| s.get_child_mut("SignedInfo", NS_DS))
            .and_then(|s| s.get_child_mut("Reference", NS_DS))
            .and_then(|r| r.get_child_mut("DigestValue", NS_DS)),
        b64(&digest),
    )?;
    // §3.1.2 Signature generation.
    let octets = {
        let text = String::from(&payload);
        let doc = parse(&text)?;
        let sig = only_child(doc.root_element(), NS_DS, "Signature")?;
        signed_info_octets(&doc, only_child(sig, NS_DS, "SignedInfo")?, &algo)?
    };
    let value = SigningKey::<Sha256>::new(key.private.clone()).sign(&octets).to_vec();
    set_text(
        signature_mut(&mut payload).and_then(|s| s.get_child_mut("SignatureValue", NS_DS)),
        b64(&value),
    )?;
    Ok(payload)
}

/// The value of every attribute that some processor may take for an ID: `Id`, `ID`, `id`
/// (unqualified) and `xml:id`.
fn id_values<'a>(node: Node<'a, '_>) -> impl Iterator<Item = &'a str> {
    node.attributes()
        .filter(|a| match a.namespace() {
            None => matches!(a.name(), "Id" | "ID" | "id"),
            Some(ns) => ns == "http://www.w3.org/XML/1998/namespace" && a.name() == "id",
        })
        .map(|a| a.value())
}

/// xmldsig §3.2 core validation of the decrypted payload `text`, then the payload's fields.
///
/// `keys(key_name)` returns the candidate public keys of the stanza's sender (the one named
/// by `<ds:KeyName/>`, or all of them without one), or an `unknown-signer` error.
///
/// Checks, in order (each failure is a typed error, see the module docs for the codes):
/// 1. the text parses as XML (no DTD, bounded depth and size: xml-sec's parser limits);
/// 2. the document element is `<signed xmlns='urn:xmpp:jabberwock:xmlsec:0'/>`;
/// 3. the document holds exactly one `<ds:Signature/>`, and it is a child of that element
///    (enveloped) — a Signature anywhere else is `misplaced-signature`;
/// 4. SignedInfo has exactly one Reference, CanonicalizationMethod exc-c14n, SignatureMethod
///    rsa-sha256; the Reference has exactly the transforms enveloped-signature, exc-c14n and
///    DigestMethod sha256 (no XPath, XSLT or Base64 transform, no other algorithm);
/// 5. the Reference URI is `#` + an id, exactly one element in the whole document carries
///    that value in an `Id`, `ID`, `id` or `xml:id` attribute (else `duplicate-id`), and that
///    element is the document element (else `bad-reference`);
/// 6. the digest of that element minus the Signature, canonicalised, matches (`bad-digest`);
/// 7. the canonical SignedInfo verifies under a key of the sender (`bad-signature`);
/// 8. the fields are read from the node the Reference resolved to: exactly one each of
///    `<to/>`, `<from/>`, `<time/>` as its direct children, text only, and exactly one of
///    `<body/>` (text only; a message, with at most one `<parts/>` beside it), `<presence/>`
///    or `<iq/>` — the stanza's content, copied from that node ([`content_of`]).
pub fn verify(text: &str, keys: &mut KeyLookup<'_>) -> Result<Payload, E2eError> {
    let doc = parse(text)?;
    let root = doc.root_element();
    if !is(root, NS, "signed") {
        return Err(rejected(
            "not-signed-payload",
            format!(
                "decrypted element is <{}/> in {:?}",
                root.tag_name().name(),
                root.tag_name().namespace()
            ),
        ));
    }
    // 3. Exactly one Signature in the document, enveloped by the payload.
    let mut signatures = doc.descendants().filter(|n| is(*n, NS_DS, "Signature"));
    let signature = signatures.next().ok_or(E2eError::Missing { what: "Signature" })?;
    if signatures.next().is_some() {
        return Err(rejected("misplaced-signature", "more than one ds:Signature"));
    }
    if signature.parent().map(Node::id) != Some(root.id()) {
        return Err(rejected("misplaced-signature", "the ds:Signature is not a child of the payload"));
    }
    let mut parts = elements(signature);
    let signed_info = parts
        .next()
        .filter(|n| is(*n, NS_DS, "SignedInfo"))
        .ok_or(E2eError::Missing { what: "SignedInfo" })?;
    let value = parts
        .next()
        .filter(|n| is(*n, NS_DS, "SignatureValue"))
        .ok_or(E2eError::Missing { what: "SignatureValue" })?;
    let key_info = parts.next();
    if key_info.is_some_and(|k| !is(k, NS_DS, "KeyInfo")) || parts.next().is_some() {
        return Err(E2eError::Malformed {
            what: "Signature",
            detail: "only SignedInfo, SignatureValue and KeyInfo are allowed (no Object)".into(),
        });
    }
    // 4. SignedInfo and its one Reference.
    let mut si = elements(signed_info);
    let c14n_method = si
        .next()
        .filter(|n| is(*n, NS_DS, "CanonicalizationMethod"))
        .ok_or(E2eError::Missing { what: "CanonicalizationMethod" })?;
    let si_algo = exc_c14n(c14n_method)?;
    let method = si
        .next()
        .filter(|n| is(*n, NS_DS, "SignatureMethod"))
        .ok_or(E2eError::Missing { what: "SignatureMethod" })?;
    match method.attribute("Algorithm") {
        Some(RSA_SHA256) => {}
        other => return Err(rejected("unsupported-algorithm", format!("signature method {other:?}"))),
    }
    let reference =
        si.next().filter(|n| is(*n, NS_DS, "Reference")).ok_or(E2eError::Missing { what: "Reference" })?;
    if si.next().is_some() {
        return Err(rejected("bad-reference", "SignedInfo must hold exactly one Reference"));
    }
    let mut r = elements(reference);
    let mut next = r.next();
    let mut ref_algo = None;
    if let Some(transforms) = next.filter(|n| is(*n, NS_DS, "Transforms")) {
        let list: Vec<_> = elements(transforms).collect();
        match list.as_slice() {
            [first, second]
                if is(*first, NS_DS, "Transform")
                    && first.attribute("Algorithm") == Some(ENVELOPED)
                    && is(*second, NS_DS, "Transform") =>
            {
                ref_algo = Some(exc_c14n(*second)?);
            }
            _ => {
                return Err(rejected(
                    "unsupported-algorithm",
                    "the Reference transforms must be exactly enveloped-signature, exc-c14n",
                ));
            }
        }
        next = r.next();
    }
    let ref_algo =
        ref_algo.ok_or_else(|| rejected("unsupported-algorithm", "the Reference has no transforms"))?;
    let digest_method =
        next.filter(|n| is(*n, NS_DS, "DigestMethod")).ok_or(E2eError::Missing { what: "DigestMethod" })?;
    match digest_method.attribute("Algorithm") {
        Some(DIGEST_SHA256) => {}
        other => return Err(rejected("unsupported-algorithm", format!("digest method {other:?}"))),
    }
    let digest_value =
        r.next().filter(|n| is(*n, NS_DS, "DigestValue")).ok_or(E2eError::Missing { what: "DigestValue" })?;
    // 5. Same-document reference resolution: `#id`, one element with that ID, the payload.
    let uri = reference.attribute("URI").ok_or(E2eError::Missing { what: "URI" })?;
    let id = uri
        .strip_prefix('#')
        .filter(|id| !id.is_empty() && !id.contains('(') && !id.contains('#'))
        .ok_or_else(|| rejected("bad-reference", format!("URI `{uri}` is not a same-document `#id`")))?;
    let mut holders = doc.descendants().filter(|n| n.is_element() && id_values(*n).any(|v| v == id));
    let target =
        holders.next().ok_or_else(|| rejected("bad-reference", format!("no element has the ID `{id}`")))?;
    if holders.next().is_some() {
        return Err(rejected("duplicate-id", format!("more than one element has the ID `{id}`")));
    }
    if target.id() != root.id() || root.attribute("Id") != Some(id) {
        return Err(rejected(
            "bad-reference",
            format!("`{uri}` resolves to <{}/>, not the payload's Id", target.tag_name().name()),
        ));
    }
    // 6. Reference validation (§3.2.1).
    let expected = unb64("DigestValue", &text_of(digest_value, "DigestValue")?)?;
    let actual = Sha256::digest(reference_octets(&doc, target, signature, &ref_algo)?);
    if !equal(&actual, &expected) {
        return Err(rejected("bad-digest", format!("the digest of `{uri}` does not match")));
    }
    // 7. Signature validation (§3.2.2) under a key of the sender.
    let key_name = match key_info {
        Some(info) => match elements(info).find(|n| is(*n, NS_DS, "KeyName")) {
            Some(name) => Some(text_of(name, "KeyName")?.trim().to_owned()),
            None => None,
        },
        None => None,
    };
    let candidates = keys(key_name.as_deref())?;
    let signed = signed_info_octets(&doc, signed_info, &si_algo)?;
    let sig_bytes = unb64("SignatureValue", &text_of(value, "SignatureValue")?)?;
    let sig = Signature::try_from(sig_bytes.as_slice())
        .map_err(|e| E2eError::Malformed { what: "SignatureValue", detail: e.to_string() })?;
    let signer = candidates
        .iter()
        .find(|k| VerifyingKey::<Sha256>::new(k.key.clone()).verify(&signed, &sig).is_ok())
        .ok_or_else(|| rejected("bad-signature", "the SignatureValue does not verify"))?;
    // 8. The fields, from the node the Reference resolved to.
    let field = |name: &'static str| text_of(only_child(target, NS, name)?, name);
    let (to, from, time) = (field("to")?, field("from")?, field("time")?);
    let (stanza, body, parts) = content_of(target)?;
    Ok(Payload { id: id.to_owned(), to, from, time, stanza, body, parts, signer: signer.fingerprint.clone() })
}

/// The stanza content of the signed element `target` (check 8): a message's `<body/>` and
/// the children of its optional `<parts/>`, or the children of `<presence/>` or `<iq/>` —
/// exactly one of the three kinds, each read as a direct child of `target` only.
fn content_of(target: Node<'_, '_>) -> Result<(&'static str, String, Vec<Element>), E2eError> {
    let kinds: Vec<&'static str> =
        ["body", "presence", "iq"].into_iter().filter(|k| elements(target).any(|c| is(c, NS, k))).collect();
    let parts = |name: &'static str| -> Result<Vec<Element>, E2eError> {
        let holder = only_child(target, NS, name)?;
        elements(holder).map(|c| to_element(c, 0)).collect()
    };
    match kinds.as_slice() {
        ["body"] => {
            let body = text_of(only_child(target, NS, "body")?, "body")?;
            let parts = match elements(target).filter(|c| is(*c, NS, "parts")).count() {
                0 => Vec::new(),
                _ => parts("parts")?,
            };
            Ok(("message", body, parts))
        }
        ["presence"] => Ok(("presence", String::new(), parts("presence")?)),
        ["iq"] => Ok(("iq", String::new(), parts("iq")?)),
        [] => Err(E2eError::Missing { what: "body" }),
        _ => Err(E2eError::Malformed {
            what: "signed payload",
            detail: format!("the content of more than one stanza kind: {kinds:?}"),
        }),
    }
}

/// The deepest a part may nest below its holder (the parser already bounds the document).
const MAX_PART_DEPTH: usize = 64;

/// A copy of the element `node` as a [`minidom::Element`]: its name, namespace, unqualified
/// attributes, text and element children (namespace-qualified attributes are dropped: the
/// parts we know use none).
fn to_element(node: Node<'_, '_>, depth: usize) -> Result<Element, E2eError> {
    if depth > MAX_PART_DEPTH {
        return Err(E2eError::Malformed { what: "part", detail: format!("nested deeper than {MAX_PART_DEPTH}") });
    }
    let name = node.tag_name();
    let mut e = el(name.name(), name.namespace().unwrap_or_default());
    for a in node.attributes().filter(|a| a.namespace().is_none()) {
        e.set(a.name(), a.value());
    }
    for c in node.children() {
        if c.is_element() {
            e.append_child(to_element(c, depth + 1)?);
        } else if c.is_text() {
            e.append_text(c.text().unwrap_or_default());
        }
    }
    Ok(e)
}

/// The namespace of the unsigned wrapper in [`wrap`] (any element the receiver has no use for
/// would do; a lax schema ignores it).
const NS_WRAPPER: &str = "urn:xmpp:jabberwock:xmlsec:wrapper:0";

/// The decrypted payload `text` as a tree, if it is a signed payload of this binding: the
/// document element `<signed/>` with an `Id` and a `<ds:Signature/>` child. Nothing is
/// verified: this is what an attacker who decrypted the payload works on.
pub(crate) fn signed_original(text: &str) -> Result<Element, E2eError> {
    let root: Element = text
        .parse()
        .map_err(|e: minidom::Error| E2eError::Malformed { what: "signed payload", detail: e.to_string() })?;
    if !root.is("signed", NS) {
        return Err(rejected("not-signed-payload", format!("decrypted element is <{}/>", root.name())));
    }
    if root.attr("Id").is_none_or(str::is_empty) {
        return Err(E2eError::Missing { what: "Id" });
    }
    if root.get_child("Signature", NS_DS).is_none() {
        return Err(E2eError::Missing { what: "Signature" });
    }
    Ok(root)
}

/// XML Signature wrapping (McIntosh and Austel, "XML Signature Element Wrapping Attacks and
/// Countermeasures", SWS 2005; Somorovsky et al., "On Breaking SAML", USENIX Security 2012):
/// a document that keeps the sender's signature valid for the element it references while a
/// different, unsigned element says what the attacker wants. From `original` (a payload as
/// [`signed_original`] returns it, Reference `#orig`):
///
/// ```xml
/// <signed xmlns='urn:xmpp:jabberwock:xmlsec:0' Id='(fresh_id)'>       ← document element, unsigned
///   <to>(to)</to><from>(original sender)</from><time>(time)</time><body>(body)</body>
///   <Signature xmlns='…xmldsig#'>…<Reference URI='#orig'>…</Signature>  ← the original, untouched
///   <wrapper xmlns='urn:xmpp:jabberwock:xmlsec:wrapper:0'>
///     <signed xmlns='urn:xmpp:jabberwock:xmlsec:0' Id='orig'>…original fields…</signed>
///   </wrapper>
/// </signed>
/// ```
///
/// The variant: the Signature stays where a verifier expects it (a child of the document
/// element, as for an enveloped signature), and the original element — now without its
/// Signature — sits in an unknown extension element after it, outside the Signature (not in a
/// `ds:Object`, which our verifier refuses on sight). The attacker's fields come first, so even
/// a reader that takes the *first* `<body/>` among all descendants reads the attacker's.
///
/// Why a naive verifier accepts it: it resolves `#orig` anywhere in the document and finds the
/// moved original; the enveloped-signature transform (xmldsig §6.6.4) removes the Signature
/// *if it is inside* the referenced element — it no longer is, so nothing is removed, and what
/// is digested is exactly what the sender digested (the original minus its Signature); the
/// SignedInfo is unchanged, so the sender's RSA signature verifies; the application then reads
/// `<to/>`, `<from/>`, `<body/>` from the document element and sees the attacker's.
///
/// Why [`verify`] rejects it: check 3 passes (one Signature, a child of the document element)
/// and the ID is unique (check 5, first half), but the element `#orig` resolves to is not the
/// document element, so it stops with `bad-reference` before any digest is computed. Had that
/// check been missing, check 8 would still read the fields from the node the Reference resolved
/// to — the original, whose signed `<to/>` names the forwarder (`to-mismatch` at the receiver).
pub(crate) fn wrap(
    mut original: Element,
    fresh_id: &str,
    to: &str,
    time: &str,
    body: &str,
) -> Result<Element, E2eError> {
    let signature =
        original.remove_child("Signature", NS_DS).ok_or(E2eError::Missing { what: "Signature" })?;
    let from = original.get_child("from", NS).map(Element::text).ok_or(E2eError::Missing { what: "from" })?;
    Ok(el("signed", NS)
        .with("Id", fresh_id)
        .child(text_el("to", NS, to))
        .child(text_el("from", NS, from))
        .child(text_el("time", NS, time))
        .child(text_el("body", NS, body))
        .child(signature)
        .child(el("wrapper", NS_WRAPPER).child(original)))
}
