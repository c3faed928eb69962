//! ESessions' wire description: XEP-0116 negotiation forms and XEP-0200 `<c/>` elements.

use crate::Wire;

/// XEP-0116 / XEP-0200.
#[derive(Debug)]
pub struct EsessionWire;

impl Wire for EsessionWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("http://www.xmpp.org/extensions/xep-0200.html#ns", "ESession c"),
            ("http://www.xmpp.org/extensions/xep-0116.html#ns-init", "ESession init"),
        ]
    }
}
