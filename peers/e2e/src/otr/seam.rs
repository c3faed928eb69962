//! OTR's wire description: messages in `<body/>` text (XEP-0364), Data Messages armoured as
//! `?OTR:…` (OTR v3 §"Data Message").

use crate::Wire;

/// OTR v3.
#[derive(Debug)]
pub struct OtrWire;

impl Wire for OtrWire {
    fn labels(&self) -> &'static [(&'static str, &'static str)] {
        &[("urn:xmpp:otr:0", "OTR")]
    }

    fn forgeable_from_recording(&self, recording: &[(String, String)]) -> Option<(usize, usize)> {
        Some(super::forgeable_by_anyone(recording))
    }
}
