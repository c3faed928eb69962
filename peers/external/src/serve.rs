//! The adapter's side, for this crate's own engines: [`serve`] answers the engine protocol's
//! requests with a registered engine (the conformance shim: `jabberwock adapter <protocol>`).

use core::time::Duration;
use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::Serialize;

use crate::json::{self, Answer, Call, ErrorWire, Reply, Request};
use crate::{MAX_LINE, VERSION};
use jabberwock_e2e::kit::codec::unhex;
use jabberwock_e2e::{Content, Cx, E2eError, Engine, OutOfBand, Protocol, new_engine, reason};

/// The one call [`serve`] does not answer: a stolen engine lives in the child that stole it.
const NOT_SERVED: &str = "restore";

/// Serves `protocol`'s engines on `input`/`output` until `input` ends: one answer line per
/// request line. `implementation` is what the hello names (this crate, and its version).
pub fn serve(
    protocol: Protocol,
    implementation: (&str, &str),
    input: impl BufRead,
    mut output: impl Write,
) -> io::Result<()> {
    let mut server = Server { protocol, implementation, engines: BTreeMap::new(), next: 0 };
    let mut input = input;
    loop {
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX).saturating_add(1);
        if io::Read::take(&mut input, limit).read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let answer = server.answer(&line);
        serde_json::to_writer(&mut output, &answer)?;
        output.write_all(b"\n")?;
        output.flush()?;
    }
}

struct Server<'a> {
    protocol: Protocol,
    implementation: (&'a str, &'a str),
    engines: BTreeMap<String, Box<dyn Engine>>,
    next: u64,
}

fn refused(what: &str, detail: impl Into<String>) -> Reply {
    Reply::Error(ErrorWire {
        code: reason::MALFORMED.code.to_owned(),
        what: Some(what.to_owned()),
        detail: detail.into(),
    })
}

fn ok(value: impl Serialize) -> Reply {
    serde_json::to_value(value).map_or_else(|e| refused("answer", e.to_string()), Reply::Ok)
}

fn out(r: Result<jabberwock_e2e::Output, E2eError>) -> Reply {
    match r {
        Ok(o) => ok(json::output_wire(&o)),
        Err(e) => failed(&e),
    }
}

fn failed(e: &E2eError) -> Reply {
    match e {
        E2eError::Unimplemented { detail, .. } => Reply::Unimplemented(detail.clone()),
        e => Reply::Error(json::error_wire(e)),
    }
}

impl Server<'_> {
    fn answer(&mut self, line: &[u8]) -> Answer {
        let value: serde_json::Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => return Answer { id: None, reply: refused("request", format!("not JSON: {e}")) },
        };
        let id = value.get("id").and_then(serde_json::Value::as_u64);
        let request: Request = match serde_json::from_value(value.clone()) {
            Ok(r) => r,
            Err(e) => {
                let call = value.get("call").and_then(serde_json::Value::as_str).unwrap_or_default();
                let reply = if json::CALLS.contains(&call) {
                    refused("request", e.to_string())
                } else {
                    Reply::Unimplemented(format!("no call `{call}` in engine protocol version {VERSION}"))
                };
                return Answer { id, reply };
            }
        };
        let reply = self.reply(request.call, request.engine.as_deref(), request.now, request.seed.as_deref());
        Answer { id, reply }
    }

    fn reply(&mut self, call: Call, handle: Option<&str>, now: Option<u64>, seed: Option<&str>) -> Reply {
        let seed = seed.map(|s| unhex(s).and_then(|b| <[u8; 32]>::try_from(b).ok()));
        let mut rng = match seed {
            Some(Some(seed)) => Some(ChaCha20Rng::from_seed(seed)),
            Some(None) => return refused("seed", "not 32 bytes in hex"),
            None => None,
        };
        let now = now.map(Duration::from_millis);
        match call {
            Call::Hello { .. } => {
                return ok(json::HelloOk {
                    version: VERSION,
                    implementation: self.implementation.0.to_owned(),
                    implementation_version: self.implementation.1.to_owned(),
                    protocol: self.protocol.name().to_owned(),
                    calls: json::CALLS
                        .iter()
                        .filter(|c| **c != NOT_SERVED)
                        .map(|c| (*c).to_owned())
                        .collect(),
                });
            }
            Call::New { me, config } => {
                let Some(rng) = rng.as_mut() else { return refused("seed", "`new` needs a seed") };
                let me = match json::full_jid("me", &me) {
                    Ok(me) => me,
                    Err(e) => return refused("me", e),
                };
                let config = match json::config(&config) {
                    Ok(c) => c,
                    Err(e) => return refused("config", e),
                };
                let engine = new_engine(self.protocol, &me, rng, &config);
                let device_id = engine.device_id();
                let iq_namespaces = engine.iq_namespaces().iter().map(|n| (*n).to_owned()).collect();
                let handle = self.keep(engine);
                return ok(json::EngineOk { engine: handle, device_id, iq_namespaces, state: None });
            }
            Call::Restore { .. } => {
                return Reply::Unimplemented(
                    "a stolen engine lives in the child that stole it (its handle); its state is not serialised".into(),
                );
            }
            _ => {}
        }
        let Some(engine) = handle.and_then(|h| self.engines.get_mut(h)) else {
            return refused("engine", format!("no engine `{}`", handle.unwrap_or_default()));
        };
        // Calls that take no `Cx`.
        match call {
            Call::OwnsPart { part } => {
                return match json::element("part", &part) {
                    Ok(part) => ok(json::OwnsOk { owns: engine.owns_part(&part) }),
                    Err(e) => refused("part", e),
                };
            }
            Call::MessageId { to } => {
                return match json::jid("to", &to) {
                    Ok(to) => ok(json::MessageIdOk { id: engine.message_id(&to) }),
                    Err(e) => refused("to", e),
                };
            }
            Call::OutOfBand => return ok(json::OutOfBandOk { peer_says: engine.out_of_band().peer_says }),
            Call::IdentityMarks => return ok(json::marks_wire(&engine.identity_marks())),
            Call::PeerMarks { peer } => {
                return match json::jid("peer", &peer) {
                    Ok(peer) => ok(json::marks_wire(&engine.peer_marks(&peer))),
                    Err(e) => refused("peer", e),
                };
            }
            Call::Ceremony { peer } => {
                return match json::jid("peer", &peer) {
                    Ok(peer) => ok(json::CeremonyOk {
                        ceremony: engine.ceremony(&peer).as_ref().map(json::ceremony_wire),
                    }),
                    Err(e) => refused("peer", e),
                };
            }
            Call::Steal { what } => {
                return match json::theft(&what) {
                    Ok(what) => {
                        let stolen = engine.steal(what);
                        let handle = self.keep(stolen);
                        ok(json::EngineOk {
                            engine: handle,
                            device_id: None,
                            iq_namespaces: vec![],
                            state: None,
                        })
                    }
                    Err(e) => refused("what", e),
                };
            }
            Call::Drop => {
                if let Some(h) = handle {
                    self.engines.remove(h);
                }
                return ok(serde_json::json!({}));
            }
            _ => {}
        }
        let (Some(rng), Some(now)) = (rng.as_mut(), now) else {
            return refused("request", "this call needs `now` and `seed`");
        };
        let cx = &mut Cx { rng, now };
        match Self::with_cx(engine.as_mut(), cx, call) {
            Ok(reply) => reply,
            Err(detail) => refused("request", detail),
        }
    }

    /// The calls that take a `Cx`; `Err` for an argument that does not read.
    fn with_cx(engine: &mut dyn Engine, cx: &mut Cx<'_>, call: Call) -> Result<Reply, String> {
        Ok(match call {
            Call::Publish => out(engine.publish(cx)),
            Call::GoingOffline => out(engine.going_offline(cx)),
            Call::Presence => match engine.presence(cx) {
                Ok(elements) => ok(json::ElementsOk { elements: elements.iter().map(json::xml).collect() }),
                Err(e) => failed(&e),
            },
            Call::ReceivePresence { stanza } => {
                out(engine.receive_presence(cx, &json::element("stanza", &stanza)?))
            }
            Call::Send { to, body } => out(engine.send(cx, &json::jid("to", &to)?, &body)),
            Call::SendMessage { to, body, parts } => {
                let parts = parts.iter().map(|p| json::element("part", p)).collect::<Result<_, _>>()?;
                out(engine.send_message(cx, &json::jid("to", &to)?, &Content { body, parts }))
            }
            Call::SendPresence { to, status } => {
                out(engine.send_presence(cx, &json::jid("to", &to)?, &status))
            }
            Call::SendIq { to, payload } => {
                out(engine.send_iq(cx, &json::full_jid("to", &to)?, &json::element("payload", &payload)?))
            }
            Call::Receive { stanza } => out(engine.receive(cx, &json::element("stanza", &stanza)?)),
            Call::Drain => out(Ok(engine.drain(cx))),
            Call::FetchFailed { owner, node, condition } => {
                out(engine.fetch_failed(cx, &json::jid("owner", &owner)?, &node, &condition))
            }
            Call::Verify { peer, peer_says } => {
                out(engine.verify(cx, &json::jid("peer", &peer)?, &OutOfBand { peer_says }))
            }
            Call::Forge { from, body } => match engine.forge(cx, &json::jid("from", &from)?, &body) {
                Ok(s) => ok(json::StanzaOk { stanza: s.as_ref().map(json::xml) }),
                Err(e) => failed(&e),
            },
            Call::Forward { recorded, to, body } => {
                let recorded = json::element("recorded", &recorded)?;
                match engine.forward(cx, &recorded, &json::jid("to", &to)?, &body) {
                    Ok(o) => ok(json::ForwardOk { output: o.as_ref().map(json::output_wire) }),
                    Err(e) => failed(&e),
                }
            }
            Call::Reencrypt { stanza, body } => {
                match engine.reencrypt(cx, &json::element("stanza", &stanza)?, &body) {
                    Ok(s) => ok(json::StanzaOk { stanza: s.as_ref().map(json::xml) }),
                    Err(e) => failed(&e),
                }
            }
            other => Reply::Unimplemented(format!("`{}` is not served here", other.name())),
        })
    }

    fn keep(&mut self, engine: Box<dyn Engine>) -> String {
        let handle = format!("e{}", self.next);
        self.next += 1;
        self.engines.insert(handle.clone(), engine);
        handle
    }
}
