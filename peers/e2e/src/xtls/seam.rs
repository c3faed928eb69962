//! XTLS's wire description: TLS records, base64 in `<data/>` inside `<iq/>` stanzas.

use crate::Wire;

/// XTLS.
#[derive(Debug)]
pub struct XtlsWire;

impl Wire for XtlsWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        &[("urn:xmpp:tmp:xtls", "XTLS")]
    }
}
