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
pub(crate) type Stream<Io> = XmlStream<BufStream<Io>, Element>;

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

/// RFC 6120 §4.9.3 stream error conditions.
const STREAM_CONDITIONS: &[&str] = &[
    "bad-format",
    "bad-namespace-prefix",
    "conflict",
    "connection-timeout",
    "host-gone",
    "host-unknown",
    "improper-addressing",
    "internal-server-error",
    "invalid-from",
    "invalid-namespace",
    "invalid-xml",
    "not-authorized",
    "not-well-formed",
    "policy-violation",
    "remote-connection-failed",
    "reset",
    "resource-constraint",
    "restricted-xml",
    "see-other-host",
    "system-shutdown",
    "undefined-condition",
    "unsupported-encoding",
    "unsupported-feature",
    "unsupported-stanza-type",
    "unsupported-version",
];

/// The condition of a received `<stream:error/>`, if `el` is one (RFC 6120 §4.9.2).
pub(crate) fn stream_error_condition(el: &Element) -> Option<&'static str> {
    if !el.is("error", crate::server::NS_STREAM) {
        return None;
    }
    let name =
        el.children().find(|c| c.ns() == crate::server::NS_STREAMS && c.name() != "text").map(|c| c.name());
    Some(
        name.and_then(|n| STREAM_CONDITIONS.iter().copied().find(|c| *c == n))
            .unwrap_or("undefined-condition"),
    )
}
