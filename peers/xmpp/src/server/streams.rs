//! Client streams (RFC 6120 §4–§7: stream, STARTTLS when configured, SASL PLAIN, bind, then
//! the session) and the server-to-server streams of federation.

use core::time::Duration;
use std::rc::Rc;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use jabberwock_e2e::xml::{ElementExt, NS_CLIENT, NS_PING, NS_SERVER, el, text_el};
use jabberwock_e2e::{BareJid, Element, FullJid};
use tokio::io::{AsyncRead, AsyncWrite, BufStream};
use tokio::sync::mpsc;
use tokio_xmpp::xmlstream::{ReadError, StreamHeader, Timeouts, accept_stream, initiate_stream};
use xmpp_parsers::bind::BindFeature;
use xmpp_parsers::stream_features::StreamFeatures;

use super::{NS_BIND, NS_SASL, Out, Server, Session, next, send_stream_error};
use crate::hooks::{Hop, Note};
use crate::stanza::{iq_result, stanza_type};
use crate::tls::{Link, NS_TLS};
use crate::wire::{
    DepthGuard, MAX_DEPTH, S2S_PORT, Stream, Transport, describe, dismantle, renamespace, too_deep,
};

impl<T: Transport> Server<T> {
    // ---- client streams -----------------------------------------------------------------

    /// Serves one client connection until it ends (RFC 6120 §4–§7: stream, STARTTLS when
    /// configured, SASL, bind).
    pub async fn serve_c2s<Io: AsyncRead + AsyncWrite + Unpin + 'static>(self: Rc<Self>, io: Io) {
        let tls = self.cfg.tls.clone();
        self.serve_c2s_presenting(io, tls).await;
    }

    /// Serves one client connection, answering its TLS handshake with `tls` instead of this
    /// server's own configuration (whoever holds the other end of the TCP connection decides
    /// which certificate the client meets: the bench uses it for an attacker on the link that
    /// terminates TLS with a certificate of its own).
    pub async fn serve_c2s_presenting<Io: AsyncRead + AsyncWrite + Unpin + 'static>(
        self: Rc<Self>,
        io: Io,
        tls: Option<crate::tls::ServerTls>,
    ) {
        let party = format!("{} c2s", self.domain());
        if let Err((condition, detail)) = self.c2s(Link::Plain(io), tls).await {
            if condition == "tls-failed" {
                self.hooks.note(Note::TlsFailed { party: &party, reason: detail });
            } else {
                self.hooks.note(Note::StreamError { party: &party, condition, detail });
            }
        }
    }

    /// Accepts a client stream header and answers with ours and `features` (RFC 6120 §4.3).
    async fn open_c2s<Io: AsyncRead + AsyncWrite + Unpin + 'static>(
        self: &Rc<Self>,
        link: Link<Io>,
        stream_id: &str,
        features: &StreamFeatures,
    ) -> Result<Stream<Link<Io>>, (&'static str, String)> {
        let io_err = |e: std::io::Error| ("connection-lost", e.to_string());
        let mut accepted =
            accept_stream(BufStream::new(DepthGuard::new(link)), NS_CLIENT, self.client_timeouts())
                .await
                .map_err(io_err)?;
        let header = accepted.take_header();
        let pending = accepted
            .send_header(StreamHeader {
                from: Some(self.domain().to_owned().into()),
                to: None,
                id: Some(stream_id.to_owned().into()),
            })
            .await
            .map_err(io_err)?;
        if header.to.as_deref() != Some(self.domain()) {
            // RFC 6120 §4.9.3.6: the stream is for a host we do not serve.
            let _ = pending
                .send_error(&xmpp_parsers::stream_error::StreamError::new(
                    xmpp_parsers::stream_error::DefinedCondition::HostUnknown,
                    "en",
                    "unknown host",
                ))
                .await;
            return Err(("host-unknown", format!("stream to {:?}", header.to)));
        }
        pending.send_features(features).await.map_err(io_err)
    }

    async fn c2s<Io: AsyncRead + AsyncWrite + Unpin + 'static>(
        self: &Rc<Self>,
        link: Link<Io>,
        tls: Option<crate::tls::ServerTls>,
    ) -> Result<(), (&'static str, String)> {
        let io_err = |e: std::io::Error| ("connection-lost", e.to_string());
        let stream_id = self.next_id("s");
        let mut sasl = StreamFeatures::default();
        sasl.sasl_mechanisms.insert("PLAIN".to_owned());
        let (mut xs, records) = match tls {
            None => (self.open_c2s(link, &stream_id, &sasl).await?, None),
            Some(config) => {
                // RFC 6120 §5.4.1: STARTTLS is offered, and required — it is the only feature.
                let offer = StreamFeatures {
                    starttls: Some(xmpp_parsers::starttls::StartTls { required: true }),
                    ..Default::default()
                };
                let mut xs = self.open_c2s(link, &stream_id, &offer).await?;
                let ask = next(&mut xs).await?;
                if !ask.is("starttls", NS_TLS) {
                    // §5.3.1: TLS is mandatory-to-negotiate here; nothing else goes first.
                    send_stream_error(&mut xs, "policy-violation").await;
                    return Err(("policy-violation", format!("<{}/> before STARTTLS", ask.name())));
                }
                // §5.4.2.3: proceed, then the handshake over the same TCP connection.
                xs.send(&el("proceed", NS_TLS)).await.map_err(io_err)?;
                let link = xs.into_inner().into_inner().into_inner();
                let (link, records) = crate::tls::accept(link, &config, self.hooks.now())
                    .await
                    .map_err(|e| ("tls-failed", e))?;
                // §5.4.3.3: the client restarts the stream over TLS.
                (self.open_c2s(link, &format!("{stream_id}t"), &sasl).await?, Some(records))
            }
        };

        // RFC 6120 §6.4.2–§6.4.6 with RFC 4616 PLAIN.
        let mut failures = 0;
        let user = loop {
            let auth = next(&mut xs).await?;
            if !auth.is("auth", NS_SASL) {
                send_stream_error(&mut xs, "not-authorized").await;
                return Err(("not-authorized", format!("<{}/> before authentication", auth.name())));
            }
            match self.check_plain(&auth) {
                Ok(user) => break user,
                Err(condition) => {
                    failures += 1;
                    let failure = el("failure", NS_SASL).child(el(condition, NS_SASL));
                    xs.send(&failure).await.map_err(io_err)?;
                    if failures >= 3 {
                        send_stream_error(&mut xs, "policy-violation").await;
                        return Err(("not-authorized", format!("{failures} failed SASL attempts")));
                    }
                }
            }
        };
        let mut accepted = xs.accept_reset(&el("success", NS_SASL)).await.map_err(io_err)?;
        let _ = accepted.take_header();
        let pending = accepted
            .send_header(StreamHeader {
                from: Some(self.domain().to_owned().into()),
                to: None,
                id: Some(format!("{stream_id}b").into()),
            })
            .await
            .map_err(io_err)?;
        let features = StreamFeatures { bind: Some(BindFeature { required: true }), ..Default::default() };
        let mut xs: Stream<Link<Io>> = pending.send_features(&features).await.map_err(io_err)?;

        // RFC 6120 §7.6: resource binding.
        let bind = next(&mut xs).await?;
        let requested = bind
            .get_child("bind", NS_BIND)
            .filter(|_| bind.is("iq", NS_CLIENT) && stanza_type(&bind) == "set")
            .ok_or(("not-authorized", "first stanza after SASL was not a bind request".to_owned()))?
            .get_child("resource", NS_BIND)
            .map(|r| r.text())
            .filter(|r| !r.is_empty());
        let resource = requested.unwrap_or_else(|| self.next_id("r"));
        let full = user
            .with_resource_str(&resource)
            .map_err(|e| ("bad-format", format!("resource `{resource}`: {e}")))?;
        let result = iq_result(
            &bind,
            None,
            Some(el("bind", NS_BIND).child(text_el("jid", NS_BIND, full.to_string()))),
        );
        xs.send(&result).await.map_err(io_err)?;

        let (tx, mut rx) = mpsc::unbounded_channel();
        let generation = self.counter.get() + 1;
        self.counter.set(generation);
        let old = self.sessions.borrow_mut().insert(
            full.clone(),
            Session { tx, generation, available: false, priority: 0, carbons: false, presence: None },
        );
        if let Some(old) = old {
            // RFC 6120 §7.7.2.2: the new session overrides the old one, whose presence ends.
            let _ = old.tx.send(Out::Kick("conflict"));
            if old.available {
                let unavailable =
                    el("presence", NS_CLIENT).with("type", "unavailable").with("from", full.to_string());
                self.broadcast_presence(&full, unavailable);
            }
        }
        self.hooks.note(Note::SessionUp { device: &full });

        let reason = loop {
            tokio::select! {
                biased;
                out = rx.recv() => match out {
                    Some(Out::Stanza(s)) => {
                        let sent = xs.send(&s).await;
                        if let Some(sizes) = records.as_ref().map(|r| r.take()).filter(|s| !s.is_empty()) {
                            let hop = Hop::ServerToClient { server: self.cfg.domain.clone(), client: full.clone() };
                            self.hooks.note(Note::Records { hop: &hop, sizes: &sizes });
                        }
                        if let Err(e) = sent {
                            break format!("write failed: {e}");
                        }
                    }
                    Some(Out::Kick(condition)) => {
                        send_stream_error(&mut xs, condition).await;
                        break format!("stream error {condition}");
                    }
                    None => break "server shutting down".to_owned(),
                },
                inbound = xs.next() => match inbound {
                    Some(Ok(stanza)) if too_deep(&stanza, MAX_DEPTH) => {
                        dismantle(stanza);
                        let party = format!("{} c2s of {full}", self.domain());
                        let detail = format!("stanza nested deeper than {MAX_DEPTH} elements");
                        self.hooks.note(Note::StreamError { party: &party, condition: "policy-violation", detail });
                        send_stream_error(&mut xs, "policy-violation").await;
                        break "stream error policy-violation".to_owned();
                    }
                    Some(Ok(stanza)) => {
                        let hop = Hop::ClientToServer { client: full.clone(), server: self.cfg.domain.clone() };
                        self.through(hop, stanza, Self::deliver_c2s);
                    }
                    Some(Err(ReadError::SoftTimeout)) => {
                        // RFC 6120 §4.6.1 / XEP-0199 §4.3: probe a silent client before the
                        // response timeout gives its session up.
                        let ping = el("iq", NS_CLIENT)
                            .with("type", "get")
                            .with("id", self.next_id("ping"))
                            .with("from", self.domain())
                            .with("to", full.to_string())
                            .child(el("ping", NS_PING));
                        self.send_to_session(&full, ping);
                    }
                    Some(Err(e)) => {
                        let (condition, detail) = describe(&e);
                        if matches!(condition, "not-well-formed" | "invalid-xml" | "policy-violation") {
                            let party = format!("{} c2s of {full}", self.domain());
                            self.hooks.note(Note::StreamError { party: &party, condition, detail: detail.clone() });
                            send_stream_error(&mut xs, condition).await;
                        }
                        break format!("{condition}: {detail}");
                    }
                    None => break "connection closed".to_owned(),
                },
            }
        };
        let _ = xs.shutdown().await;
        self.end_session(&full, generation, reason);
        Ok(())
    }

    fn check_plain(&self, auth: &Element) -> Result<BareJid, &'static str> {
        if auth.attr("mechanism") != Some("PLAIN") {
            return Err("invalid-mechanism");
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.text().trim())
            .map_err(|_| "incorrect-encoding")?;
        // RFC 4616 §2: [authzid] NUL authcid NUL passwd
        let mut parts = raw.split(|b| *b == 0);
        let (Some(_authz), Some(authc), Some(pass), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("malformed-request");
        };
        let authc = core::str::from_utf8(authc).map_err(|_| "malformed-request")?;
        let pass = core::str::from_utf8(pass).map_err(|_| "malformed-request")?;
        let bare: BareJid = format!("{authc}@{}", self.domain()).parse().map_err(|_| "not-authorized")?;
        match self.disk.borrow().accounts.get(&bare) {
            Some(acc) if acc.password == pass => Ok(bare),
            _ => Err("not-authorized"),
        }
    }

    fn end_session(self: &Rc<Self>, full: &FullJid, generation: u64, reason: String) {
        let removed = {
            let mut sessions = self.sessions.borrow_mut();
            match sessions.get(full) {
                Some(s) if s.generation == generation => sessions.remove(full),
                _ => None,
            }
        };
        let Some(session) = removed else { return };
        self.hooks.note(Note::SessionDown { device: full, reason });
        if session.available {
            // RFC 6121 §4.5.2: the server broadcasts unavailable presence on the user's behalf.
            let unavailable =
                el("presence", NS_CLIENT).with("type", "unavailable").with("from", full.to_string());
            self.broadcast_presence(full, unavailable);
        }
    }

    // ---- federation ---------------------------------------------------------------------

    /// Serves one inbound server-to-server connection (trusted: the peer is identified by its
    /// stream header, as a dialback-less test federation).
    pub async fn serve_s2s<Io: AsyncRead + AsyncWrite + Unpin + 'static>(self: Rc<Self>, io: Io) {
        let party = format!("{} s2s-in", self.domain());
        if let Err((condition, detail)) = self.s2s_in(io).await {
            self.hooks.note(Note::StreamError { party: &party, condition, detail });
        }
    }

    async fn s2s_in<Io: AsyncRead + AsyncWrite + Unpin + 'static>(
        self: &Rc<Self>,
        io: Io,
    ) -> Result<(), (&'static str, String)> {
        let io_err = |e: std::io::Error| ("connection-lost", e.to_string());
        let mut accepted =
            accept_stream(BufStream::new(DepthGuard::new(io)), NS_SERVER, federation_timeouts())
                .await
                .map_err(io_err)?;
        let header = accepted.take_header();
        let remote = header.from.as_deref().unwrap_or_default().to_owned();
        let pending = accepted
            .send_header(StreamHeader {
                from: Some(self.domain().to_owned().into()),
                to: Some(remote.clone().into()),
                id: Some(self.next_id("s2s").into()),
            })
            .await
            .map_err(io_err)?;
        if !self.cfg.peers.contains(&remote) {
            let _ = pending
                .send_error(&xmpp_parsers::stream_error::StreamError::new(
                    xmpp_parsers::stream_error::DefinedCondition::NotAuthorized,
                    "en",
                    "not a federated peer",
                ))
                .await;
            return Err(("not-authorized", format!("s2s from unknown domain `{remote}`")));
        }
        let mut xs: Stream<Io> = pending.send_features(&StreamFeatures::default()).await.map_err(io_err)?;
        loop {
            match xs.next().await {
                Some(Ok(stanza)) if too_deep(&stanza, MAX_DEPTH) => {
                    dismantle(stanza);
                    send_stream_error(&mut xs, "policy-violation").await;
                    return Err(("policy-violation", format!("stanza from {remote} nested too deep")));
                }
                Some(Ok(stanza)) => self.from_remote(&remote, renamespace(&stanza, NS_SERVER, NS_CLIENT)),
                Some(Err(ReadError::SoftTimeout)) => continue,
                Some(Err(e)) => return Err(describe(&e)),
                None => return Ok(()),
            }
        }
    }

    pub(super) fn s2s_link(self: &Rc<Self>, domain: &str) -> mpsc::UnboundedSender<Element> {
        if let Some(tx) = self.s2s.borrow().get(domain) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.s2s.borrow_mut().insert(domain.to_owned(), tx.clone());
        tokio::task::spawn_local(Rc::clone(self).s2s_out(domain.to_owned(), rx));
        tx
    }

    /// The outbound half of federation: one stream per remote domain (RFC 6120 §2.4), kept
    /// up with a fixed back-off. Stanzas written into a link that silently died are lost, as
    /// on a real network without stream management.
    async fn s2s_out(self: Rc<Self>, remote: String, mut rx: mpsc::UnboundedReceiver<Element>) {
        let party = format!("{} s2s-out", self.domain());
        let mut waiting: Option<Element> = None;
        loop {
            let next = match waiting.take() {
                Some(s) => s,
                None => match rx.recv().await {
                    Some(s) => s,
                    None => return,
                },
            };
            let io = match self.transport.connect(&remote, S2S_PORT).await {
                Ok(io) => io,
                Err(e) => {
                    self.hooks.note(Note::ConnectFailed { party: &party, reason: format!("{remote}: {e}") });
                    waiting = Some(next);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let header = StreamHeader {
                from: Some(self.domain().to_owned().into()),
                to: Some(remote.clone().into()),
                id: None,
            };
            let stream = match initiate_stream(
                BufStream::new(DepthGuard::new(io)),
                NS_SERVER,
                header,
                federation_timeouts(),
            )
            .await
            {
                Ok(pending) => {
                    pending.recv_features::<Element>().await.map(|(_, xs)| xs).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            let mut xs: Stream<T::Io> = match stream {
                Ok(xs) => xs,
                Err(e) => {
                    self.hooks.note(Note::ConnectFailed { party: &party, reason: format!("{remote}: {e}") });
                    waiting = Some(next);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut pending = Some(next);
            loop {
                let stanza = match pending.take() {
                    Some(s) => s,
                    None => tokio::select! {
                        biased;
                        s = rx.recv() => match s { Some(s) => s, None => return },
                        inbound = xs.next() => match inbound {
                            Some(Err(ReadError::SoftTimeout)) | Some(Ok(_)) => continue,
                            Some(Err(_)) | None => break,
                        },
                    },
                };
                if xs.send(&renamespace(&stanza, NS_CLIENT, NS_SERVER)).await.is_err() {
                    let hop = Hop::ServerToServer { from: self.cfg.domain.clone(), to: remote.clone() };
                    self.hooks.note(Note::Lost { hop: &hop, reason: "federation link broke" });
                    break;
                }
            }
        }
    }
}

fn federation_timeouts() -> Timeouts {
    Timeouts { read_timeout: Duration::from_secs(3600), response_timeout: Duration::from_secs(3600) }
}
