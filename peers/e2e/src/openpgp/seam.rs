//! The OpenPGP protocols' wire descriptions: XEP-0027's armoured `<x/>` elements and OX's
//! base64 `<openpgp/>` (XEP-0373 §"OpenPGP Content Elements").

use crate::Wire;

/// XEP-0027.
#[derive(Debug)]
pub struct PgpWire;

impl Wire for PgpWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        &[("jabber:x:encrypted", "PGP encrypted"), ("jabber:x:signed", "PGP signed")]
    }
}

/// OX (XEP-0373/0374).
#[derive(Debug)]
pub struct OxWire;

impl Wire for OxWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        &[("urn:xmpp:openpgp:0", "OX openpgp")]
    }
}
