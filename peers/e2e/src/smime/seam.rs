//! RFC 3923's wire description: the `<e2e/>` element carrying base64 CMS (§4).

use crate::Wire;

/// RFC 3923.
#[derive(Debug)]
pub struct SmimeWire;

impl Wire for SmimeWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        &[("urn:ietf:params:xml:ns:xmpp-e2e", "S/MIME")]
    }
}
