//! `plain`: no end-to-end encryption at all — the deliberately insecure control
//! (like rustls' test provider, it "provides NO SECURITY"). Every attack the bench runs
//! must beat this engine; a protocol that does no better than `plain` has not helped.
//!
//! Wire format: RFC 6121 §5.2 — `<message type='chat'><body>text</body></message>`.

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use rand_core::RngCore;

use crate::xml::{ElementExt, NS_CLIENT, el, text_el};
use crate::{
    Cx, E2eError, Engine, EngineConfig, Event, OutOfBand, Output, Protocol, ProtocolDef, Theft, Trust,
    VerificationResult,
};

/// The registry entry: no options.
pub static PROTOCOL: ProtocolDef =
    ProtocolDef::new("plain", module_path!(), build, &PlainWire, "");

/// Builds its engine for a device.
fn build(me: &FullJid, rng: &mut dyn RngCore, config: &EngineConfig) -> Box<dyn Engine> {
    let _ = (rng, config);
    Box::new(Plain::new(me.clone()))
}

/// The control's wire: the body in clear is all there is. Its "ciphertext" is the text itself
/// (a flipped bit changes what the recipient reads), and its "encryption", stripped, is the
/// body rewritten.
#[derive(Debug)]
pub struct PlainWire;

fn chat_body(stanza: &Element) -> Option<&Element> {
    crate::wire::is_message(stanza).then(|| stanza.get_child("body", NS_CLIENT)).flatten()
}

impl crate::Wire for PlainWire {
    fn claims_every_body(&self) -> bool {
        true
    }

    fn carries_conversation(&self, stanza: &Element) -> bool {
        chat_body(stanza).is_some()
    }

    fn ciphertext(&self, stanza: &Element) -> Option<crate::Ciphertext> {
        let text = chat_body(stanza)?.text();
        (!text.is_empty()).then(|| crate::wire::whole(text.into_bytes(), "the body, in clear"))
    }

    /// Text that is still UTF-8 and characters XML can carry (XML 1.0 §2.2) only.
    fn set_ciphertext(&self, stanza: &mut Element, bytes: &[u8]) -> bool {
        let Ok(text) = String::from_utf8(bytes.to_vec()) else { return false };
        let xml_safe = text.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'));
        xml_safe && chat_body(stanza).is_some() && crate::wire::set_body(stanza, &text)
    }

    fn strip_encryption(&self, stanza: &mut Element, body: &str) -> bool {
        chat_body(stanza).is_some() && crate::wire::set_body(stanza, body)
    }
}

/// The `plain` engine: it holds no secrets, so stealing it yields nothing new.
#[derive(Debug, Clone)]
pub struct Plain {
    me: FullJid,
}

impl Plain {
    /// A `plain` engine for the device `me`.
    pub fn new(me: FullJid) -> Self {
        Plain { me }
    }
}

impl Engine for Plain {
    fn protocol(&self) -> Protocol {
        Protocol::of(&PROTOCOL)
    }

    // `publish`: the default, nothing to publish.

    fn send(&mut self, _cx: &mut Cx<'_>, to: &BareJid, body: &str) -> Result<Output, E2eError> {
        // RFC 6121 §5.2.2: a one-to-one chat message.
        let stanza = el("message", NS_CLIENT)
            .with("to", to.to_string())
            .with("type", "chat")
            .child(text_el("body", NS_CLIENT, body));
        Ok(Output { actions: vec![crate::Action::Send(stanza)], events: vec![] })
    }

    /// RFC 6121 §5.2: the message's other parts are children of the same `<message/>`.
    fn send_message(
        &mut self,
        cx: &mut Cx<'_>,
        to: &BareJid,
        content: &crate::Content,
    ) -> Result<Output, E2eError> {
        let mut out = self.send(cx, to, &content.body)?;
        for action in &mut out.actions {
            if let crate::Action::Send(stanza) = action {
                for p in &content.parts {
                    stanza.append_child(p.clone());
                }
            }
        }
        Ok(out)
    }

    fn receive(&mut self, _cx: &mut Cx<'_>, stanza: &Element) -> Result<Output, E2eError> {
        if !stanza.is("message", NS_CLIENT) {
            return Ok(Output::default());
        }
        // RFC 6121 §5.2.3: a message without <body> (chat states, pubsub events) shows nothing.
        let Some(body) = stanza.get_child("body", NS_CLIENT) else {
            return Ok(Output::default());
        };
        if body.children().next().is_some() {
            return Err(E2eError::Malformed {
                what: "body",
                detail: "a <body> must hold character data only".into(),
            });
        }
        let from = match stanza.attr("from") {
            Some(f) => {
                f.parse::<Jid>().map_err(|e| E2eError::Malformed { what: "from", detail: e.to_string() })?
            }
            None => Jid::from(self.me.to_bare()),
        };
        Ok(Output {
            actions: vec![],
            events: vec![Event::Plaintext {
                from,
                body: body.text(),
                trust: Trust::Unencrypted,
                delay: None,
                carbon: None,
            }],
        })
    }

    fn verify(&mut self, _cx: &mut Cx<'_>, peer: &BareJid, _oob: &OutOfBand) -> Result<Output, E2eError> {
        // There is no key to compare: the control protocol has no ceremony.
        Ok(Output {
            actions: vec![],
            events: vec![Event::Verification {
                peer: peer.clone(),
                result: VerificationResult::NotSupported,
            }],
        })
    }

    fn out_of_band(&self) -> OutOfBand {
        OutOfBand { peer_says: vec![] }
    }

    fn forge(&mut self, _cx: &mut Cx<'_>, from: &Jid, body: &str) -> Result<Option<Element>, E2eError> {
        // Anyone can write a plain message with any `from`: nothing binds it to the sender.
        Ok(Some(
            el("message", NS_CLIENT)
                .with("from", from.to_string())
                .with("to", self.me.to_bare().to_string())
                .with("type", "chat")
                .child(text_el("body", NS_CLIENT, body)),
        ))
    }

    fn steal(&self, _what: Theft) -> Box<dyn Engine> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use core::time::Duration;

    use super::*;

    struct Zero;
    impl RngCore for Zero {
        fn next_u32(&mut self) -> u32 {
            0
        }
        fn next_u64(&mut self) -> u64 {
            0
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            dst.fill(0);
        }
    }

    fn engine() -> Plain {
        Plain::new("bob@b.example/laptop".parse().unwrap())
    }

    #[test]
    fn sends_and_reads_a_chat_body() {
        let mut rng = Zero;
        let mut cx = Cx { rng: &mut rng, now: Duration::ZERO };
        let mut alice = Plain::new("alice@a.example/phone".parse().unwrap());
        let out = alice.send(&mut cx, &"bob@b.example".parse().unwrap(), "hi <&>").unwrap();
        let crate::Action::Send(mut stanza) = out.actions[0].clone() else { panic!() };
        stanza.set("from", "alice@a.example/phone");
        let got = engine().receive(&mut cx, &stanza).unwrap();
        assert!(
            matches!(&got.events[0], Event::Plaintext { body, trust: Trust::Unencrypted, .. } if body == "hi <&>")
        );
    }

    #[test]
    fn hostile_bodies_are_typed_errors() {
        let mut rng = Zero;
        let mut cx = Cx { rng: &mut rng, now: Duration::ZERO };
        let nested: Element =
            "<message xmlns='jabber:client' from='x@y'><body><b>no</b></body></message>".parse().unwrap();
        assert_eq!(engine().receive(&mut cx, &nested).unwrap_err().code(), "malformed");
        let bad_from: Element =
            "<message xmlns='jabber:client' from='@@'><body>x</body></message>".parse().unwrap();
        assert_eq!(engine().receive(&mut cx, &bad_from).unwrap_err().code(), "malformed");
        let no_body: Element = "<message xmlns='jabber:client' from='x@y'/>".parse().unwrap();
        assert!(engine().receive(&mut cx, &no_body).unwrap().events.is_empty());
    }
}
