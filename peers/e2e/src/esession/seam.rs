//! ESessions' wire description: XEP-0116 negotiation in data forms, XEP-0200 §4 `<c/>`
//! elements whose `<data/>` is the encrypted stanza content.

use super::{NS_C, NS_INIT};
use crate::wire::{ElementWire, TextEncoding, all_content};

/// XEP-0116 / XEP-0200.
pub(super) static WIRE: ElementWire = ElementWire {
    element: ("c", NS_C),
    text_at: &["data"],
    encoding: TextEncoding::Base64,
    what: "the XEP-0200 data",
    content: all_content,
    labels: &[(NS_C, "ESession c"), (NS_INIT, "ESession init"), (super::forms::NS_FEATURE, "feature-neg")],
};
