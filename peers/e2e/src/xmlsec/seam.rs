//! The XML Security binding's wire description: `<EncryptedData/>` (xmlenc-core §3) around a
//! signed payload (xmldsig-core).

use crate::Wire;

/// XML Signature + XML Encryption.
#[derive(Debug)]
pub struct XmlsecWire;

impl Wire for XmlsecWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("http://www.w3.org/2001/04/xmlenc#", "XML Encryption"),
            ("http://www.w3.org/2009/xmlenc11#", "XML Encryption 1.1"),
            ("http://www.w3.org/2000/09/xmldsig#", "XML Signature"),
        ]
    }
}
