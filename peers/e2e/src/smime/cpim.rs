//! The `Message/CPIM` object (RFC 3862) that RFC 3923 §3.1 signs: a MIME header naming the
//! type, the CPIM message headers (From, To, DateTime), then the encapsulated MIME object of
//! type `application/xmpp+xml` (RFC 3923 §10) holding the XML of the stanza.
//!
//! ```text
//! Content-type: Message/CPIM
//!
//! From: <im:juliet@example.com>
//! To: <im:romeo@example.net>
//! DateTime: 2026-01-01T00:00:00.000Z
//!
//! Content-type: application/xmpp+xml; charset=utf-8
//!
//! <message xmlns='jabber:client' from='juliet@example.com/balcony' to='romeo@example.net' type='chat'><body>…</body></message>
//! ```
//!
//! Lines end in CRLF (RFC 3862 §3.1); on receipt bare LF is accepted too. From and To carry
//! `im:` URIs as RFC 3923's examples do (RFC 3922 maps XMPP addresses to them); `xmpp:`
//! URIs are accepted. The formal name in front of the URI is optional and ignored.

use jid::BareJid;

use crate::E2eError;

/// A parsed CPIM object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpim {
    /// The From header's address.
    pub from: BareJid,
    /// Every To header's address.
    pub to: Vec<BareJid>,
    /// The DateTime header, as written.
    pub date_time: String,
    /// The encapsulated `application/xmpp+xml` content.
    pub xml: String,
}

/// Builds the CPIM object of RFC 3923 §3.1 step 2.
pub fn build(from: &BareJid, to: &BareJid, date_time: &str, xml: &str) -> String {
    format!(
        "Content-type: Message/CPIM\r\n\r\nFrom: <im:{from}>\r\nTo: <im:{to}>\r\nDateTime: {date_time}\r\n\r\nContent-type: application/xmpp+xml; charset=utf-8\r\n\r\n{xml}"
    )
}

fn malformed(detail: impl Into<String>) -> E2eError {
    E2eError::Malformed { what: "cpim", detail: detail.into() }
}

/// Header lines as (lowercased name, trimmed value).
type Headers = Vec<(String, String)>;

/// Splits off one header block (up to an empty line); returns the headers and the rest.
fn header_block(text: &str) -> Result<(Headers, &str), E2eError> {
    let mut headers = Vec::new();
    let mut rest = text;
    loop {
        let (line, after) = match rest.find('\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => return Err(malformed("header block without an empty line after it")),
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        rest = after;
        if line.is_empty() {
            return Ok((headers, rest));
        }
        let (name, value) = line.split_once(':').ok_or_else(|| malformed(format!("header line `{line}`")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

fn address(value: &str) -> Result<BareJid, E2eError> {
    let start = value.rfind('<').ok_or_else(|| malformed(format!("address `{value}` has no <URI>")))?;
    let uri = value[start + 1..].strip_suffix('>').ok_or_else(|| malformed(format!("address `{value}`")))?;
    let addr = uri
        .strip_prefix("im:")
        .or_else(|| uri.strip_prefix("xmpp:"))
        .ok_or_else(|| malformed(format!("URI `{uri}` is neither im: nor xmpp:")))?;
    addr.parse::<BareJid>().map_err(|e| malformed(format!("address `{addr}`: {e}")))
}

fn content_type(headers: &[(String, String)]) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map(|(_, v)| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
}

/// Parses a CPIM object (with or without the leading `Content-type: Message/CPIM` MIME
/// header). Every failure is `malformed`; nothing here panics on hostile input.
pub fn parse(text: &str) -> Result<Cpim, E2eError> {
    let (mut headers, mut rest) = header_block(text)?;
    if content_type(&headers).as_deref() == Some("message/cpim") {
        (headers, rest) = header_block(rest)?;
    }
    let mut from = None;
    let mut to = Vec::new();
    let mut date_time = None;
    for (name, value) in &headers {
        match name.as_str() {
            "from" if from.is_some() => return Err(malformed("two From headers")),
            "from" => from = Some(address(value)?),
            "to" => to.push(address(value)?),
            "datetime" if date_time.is_some() => return Err(malformed("two DateTime headers")),
            "datetime" => date_time = Some(value.clone()),
            _ => {}
        }
    }
    let (inner, xml) = header_block(rest)?;
    match content_type(&inner).as_deref() {
        Some("application/xmpp+xml") => {}
        other => return Err(malformed(format!("encapsulated content type {other:?}"))),
    }
    Ok(Cpim {
        from: from.ok_or(E2eError::Missing { what: "CPIM From" })?,
        to,
        date_time: date_time.ok_or(E2eError::Missing { what: "CPIM DateTime" })?,
        xml: xml.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_rfc_style() {
        let a: BareJid = "juliet@example.com".parse().unwrap();
        let b: BareJid = "romeo@example.net".parse().unwrap();
        let text = build(&a, &b, "2026-01-01T00:00:00.000Z", "<message xmlns='jabber:client'/>");
        let c = parse(&text).unwrap();
        assert_eq!(
            (c.from, c.to, c.date_time.as_str()),
            (a.clone(), vec![b.clone()], "2026-01-01T00:00:00.000Z")
        );
        assert_eq!(c.xml, "<message xmlns='jabber:client'/>");
        // RFC 3923 §3.2 style: formal names, LF line ends, no MIME header in front.
        let rfc = "From: Juliet Capulet <im:juliet@example.com>\nTo: Romeo Montague <im:romeo@example.net>\nDateTime: 2003-12-09T11:45:36.66Z\n\nContent-type: application/xmpp+xml\n\n<message/>";
        let c = parse(rfc).unwrap();
        assert_eq!((c.from, c.to), (a, vec![b]));
    }

    #[test]
    fn hostile_inputs_are_errors() {
        for bad in [
            "",
            "From: x",
            "From: <im:a@b>\r\n\r\n",
            "From <im:a@b>\n\nContent-type: application/xmpp+xml\n\n",
            "From: <mailto:a@b>\nDateTime: x\n\nContent-type: application/xmpp+xml\n\n",
            "From: <im:a@b>\nDateTime: x\n\nContent-type: text/plain\n\n",
            "To: <im:a@b>\nDateTime: x\n\nContent-type: application/xmpp+xml\n\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
