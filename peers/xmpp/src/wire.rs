//! Byte-level plumbing: transports, the XML stream type, raw-byte injection.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use jabberwock_e2e::Element;
use tokio::io::{AsyncRead, AsyncWrite, BufStream, ReadBuf};
use tokio_xmpp::xmlstream::XmlStream;

/// The client-to-server port (RFC 6120 §3.2.1 registers 5222).
pub const C2S_PORT: u16 = 5222;
/// The server-to-server port (RFC 6120 §3.2.1 registers 5269).
pub const S2S_PORT: u16 = 5269;

/// How a server or client opens an outbound byte stream to a named host.
pub trait Transport: Clone + 'static {
    /// The connected byte stream.
    type Io: AsyncRead + AsyncWrite + Unpin + 'static;

    /// Connects to `host:port`.
    fn connect(&self, host: &str, port: u16) -> impl Future<Output = io::Result<Self::Io>>;
}

/// A byte stream with a side door: bytes pushed into [`RawDoor`] are written before the next
/// write or flush, bypassing the XML serialiser. Scenarios use it to send malformed XML.
#[derive(Debug)]
pub(crate) struct Injectable<Io> {
    inner: Io,
    door: RawDoor,
}

/// The side door of an [`Injectable`].
#[derive(Debug, Clone, Default)]
pub(crate) struct RawDoor(Rc<RefCell<Vec<u8>>>);

impl RawDoor {
    pub(crate) fn push(&self, bytes: &[u8]) {
        self.0.borrow_mut().extend_from_slice(bytes);
    }
}

impl<Io> Injectable<Io> {
    pub(crate) fn new(inner: Io) -> (Self, RawDoor) {
        let door = RawDoor::default();
        (Injectable { inner, door: door.clone() }, door)
    }

    /// Wraps `inner` behind an existing door (after a transport upgrade, the door opens
    /// into the new layer: raw bytes written after STARTTLS travel inside TLS).
    pub(crate) fn with_door(inner: Io, door: RawDoor) -> Self {
        Injectable { inner, door }
    }

    /// The wrapped stream and the door. Bytes still waiting in the door stay there.
    pub(crate) fn into_parts(self) -> (Io, RawDoor) {
        (self.inner, self.door)
    }
}

impl<Io: AsyncWrite + Unpin> Injectable<Io> {
    fn poll_drain_door(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let pending = self.door.0.borrow().clone();
            if pending.is_empty() {
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &pending) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.door.0.borrow_mut().drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Injectable<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Injectable<Io> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.poll_drain_door(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_write(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_drain_door(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An established XML stream whose stream-level elements are parsed as DOM elements.
pub(crate) type Stream<Io> = XmlStream<BufStream<DepthGuard<Io>>, Element>;

/// Copies `el` with every element in namespace `from` moved to namespace `to`.
/// RFC 6120 §4.8.3: stanzas are `jabber:client` on c2s streams and `jabber:server` on s2s.
pub(crate) fn renamespace(el: &Element, from: &str, to: &str) -> Element {
    let ns = el.ns();
    let ns = if ns == from { to.to_owned() } else { ns };
    let mut out = Element::builder(el.name(), ns).build();
    for ((attr_ns, name), value) in el.attrs().iter() {
        out.attrs_mut().insert(attr_ns.clone(), name.clone(), value.clone());
    }
    for node in el.nodes() {
        match node {
            minidom::Node::Element(child) => {
                out.append_child(renamespace(child, from, to));
            }
            minidom::Node::Text(t) => out.append_text(t.clone()),
        }
    }
    out
}

/// Describes a stream read error in one line.
pub(crate) fn describe(e: &tokio_xmpp::xmlstream::ReadError) -> (&'static str, String) {
    use tokio_xmpp::xmlstream::ReadError;
    match e {
        // A connection cut mid-stream surfaces from the parser as an unexpected EOF.
        ReadError::HardError(io)
            if io.kind() == io::ErrorKind::InvalidData && io.to_string().to_lowercase().contains("eof") =>
        {
            ("connection-lost", io.to_string())
        }
        ReadError::HardError(io)
            if io.kind() == io::ErrorKind::InvalidData && io.to_string().contains("nested deeper") =>
        {
            ("policy-violation", io.to_string())
        }
        ReadError::HardError(io) if io.kind() == io::ErrorKind::InvalidData => {
            ("not-well-formed", io.to_string())
        }
        ReadError::HardError(io) if io.kind() == io::ErrorKind::TimedOut => {
            ("connection-timeout", io.to_string())
        }
        ReadError::HardError(io) => ("connection-lost", io.to_string()),
        ReadError::ParseError(p) => ("invalid-xml", p.to_string()),
        ReadError::StreamFooterReceived => ("closed", "peer closed the stream".into()),
        ReadError::SoftTimeout => ("soft-timeout", "no data".into()),
    }
}

/// The condition of a received `<stream:error/>`, if `el` is one (RFC 6120 §4.9.2).
pub(crate) fn stream_error_condition(el: &Element) -> Option<&'static str> {
    if !el.is("error", crate::server::NS_STREAM) {
        return None;
    }
    let name =
        el.children().find(|c| c.ns() == crate::server::NS_STREAMS && c.name() != "text").map(|c| c.name());
    Some(
        name.and_then(|n| crate::reasons::defined(crate::reasons::STREAM_ERRORS, n))
            .unwrap_or("undefined-condition"),
    )
}

/// How deep a stanza may nest. Deeper input is refused with `<policy-violation/>` (RFC 6120
/// §4.9.3.14) before anything recursive (routing, serialising, dropping) touches it.
pub const MAX_DEPTH: usize = 64;

/// Whether `el` nests deeper than `limit` elements, measured without recursion.
pub(crate) fn too_deep(el: &Element, limit: usize) -> bool {
    let mut stack: Vec<(&Element, usize)> = vec![(el, 1)];
    while let Some((e, depth)) = stack.pop() {
        if depth > limit {
            return true;
        }
        stack.extend(e.children().map(|c| (c, depth + 1)));
    }
    false
}

/// Takes an element apart without recursion, so that dropping a hostile, very deep tree
/// cannot overflow the stack.
pub(crate) fn dismantle(el: Element) {
    let mut stack = vec![el];
    while let Some(mut e) = stack.pop() {
        for node in e.take_nodes() {
            if let minidom::Node::Element(child) = node {
                stack.push(child);
            }
        }
    }
}

/// A read-side guard that counts element nesting in the raw bytes and fails the stream when
/// it passes a limit, before the XML parser (whose DOM builder recurses once per level) sees
/// it. A lenient tokenizer: it only needs to be right about well-formed input and never to
/// crash on the rest.
#[derive(Debug)]
pub(crate) struct DepthGuard<Io> {
    inner: Io,
    state: Lex,
    depth: usize,
    last_slash: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Text,
    TagOpen,
    StartTag,
    Quoted(u8),
    EndTag,
    Special,
}

/// The stream header opens one level, and a SASL restart opens another (RFC 6120 §6.4.6).
const STREAM_LEVELS: usize = 2;

impl<Io> DepthGuard<Io> {
    pub(crate) fn new(inner: Io) -> Self {
        DepthGuard { inner, state: Lex::Text, depth: 0, last_slash: false }
    }

    /// The wrapped stream (for a transport upgrade: a new stream starts at depth zero).
    pub(crate) fn into_inner(self) -> Io {
        self.inner
    }

    fn scan(&mut self, bytes: &[u8]) -> io::Result<()> {
        for &b in bytes {
            self.state = match (self.state, b) {
                (Lex::Text, b'<') => Lex::TagOpen,
                (Lex::Text, _) => Lex::Text,
                (Lex::TagOpen, b'/') => Lex::EndTag,
                (Lex::TagOpen, b'?' | b'!') => Lex::Special,
                (Lex::TagOpen, _) => {
                    self.depth += 1;
                    if self.depth > MAX_DEPTH + STREAM_LEVELS {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("XML nested deeper than {MAX_DEPTH} elements"),
                        ));
                    }
                    self.last_slash = false;
                    Lex::StartTag
                }
                (Lex::StartTag, b'"' | b'\'') => Lex::Quoted(b),
                (Lex::StartTag, b'>') => {
                    if self.last_slash {
                        self.depth = self.depth.saturating_sub(1);
                    }
                    Lex::Text
                }
                (Lex::StartTag, _) => {
                    self.last_slash = b == b'/';
                    Lex::StartTag
                }
                (Lex::Quoted(q), _) if b == q => Lex::StartTag,
                (Lex::Quoted(q), _) => Lex::Quoted(q),
                (Lex::EndTag, b'>') => {
                    self.depth = self.depth.saturating_sub(1);
                    Lex::Text
                }
                (Lex::EndTag, _) => Lex::EndTag,
                (Lex::Special, b'>') => Lex::Text,
                (Lex::Special, _) => Lex::Special,
            };
        }
        Ok(())
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for DepthGuard<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = buf.filled()[before..].to_vec();
                Poll::Ready(self.scan(&fresh))
            }
            other => other,
        }
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for DepthGuard<Io> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
