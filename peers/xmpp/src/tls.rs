//! Client-to-server TLS (RFC 6120 §5, STARTTLS): the byte stream under the XML stream is
//! upgraded in place once both sides agreed (`<starttls/>`, `<proceed/>`), and the XML stream
//! restarts over TLS (§5.4.3.3).
//!
//! The layers, from the socket up: the transport's stream, a [`Metered`] counter of the TLS
//! records written on it, rustls (tokio-rustls), the raw-byte door ([`crate::wire::Injectable`],
//! so bytes a scenario writes by hand travel inside TLS), the depth guard and the XML stream.
//! Everything TLS needs that could break determinism (randomness, the clock, resumption) is in
//! the rustls configurations the caller passes: this module draws nothing of its own.

use core::cell::RefCell;
use core::fmt;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::io;
use std::rc::Rc;
use std::sync::Arc;

use jabberwock_e2e::tls::SimTime;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `urn:ietf:params:xml:ns:xmpp-tls` (RFC 6120 §5.4.2).
pub(crate) const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";

/// A client device's TLS settings.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The rustls configuration (its provider's randomness and `clock` decide every byte).
    pub config: Arc<rustls::ClientConfig>,
    /// The configuration's time provider, set to [`crate::Hooks::now`] before each handshake
    /// (certificate validity is checked against simulated time).
    pub clock: SimTime,
    /// Whether `config` verifies the server's chain and name (reported with the session).
    pub verify: bool,
}

/// A server's TLS settings for client streams.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The rustls configuration: the certificate presented, the seeded provider.
    pub config: Arc<rustls::ServerConfig>,
    /// The configuration's time provider, set to [`crate::Hooks::now`] before each handshake.
    pub clock: SimTime,
}

/// What a client learned from a completed handshake, for the transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSummary {
    /// `TLS 1.3`, `TLS 1.2`.
    pub version: String,
    /// The IANA name of the cipher suite (`TLS13_AES_128_GCM_SHA256`).
    pub suite: String,
    /// The DER of the certificate the server presented (end entity), empty if none.
    pub server_certificate: Vec<u8>,
    /// Whether the client verified the chain and the name before going on.
    pub verified: bool,
}

impl fmt::Display for TlsSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.version, self.suite)
    }
}

/// The sizes of the TLS records written on one connection since they were last taken.
#[derive(Debug, Clone, Default)]
pub(crate) struct Records(Rc<RefCell<RecordParser>>);

impl Records {
    /// The sizes (header included) of the records completed since the last call.
    pub(crate) fn take(&self) -> Vec<usize> {
        core::mem::take(&mut self.0.borrow_mut().done)
    }
}

/// Follows the TLS record framing (RFC 8446 §5.1: type, legacy version, 16-bit length, then
/// the fragment) of the bytes a peer wrote, to tell what an observer of the wire sees.
#[derive(Debug, Default)]
pub(crate) struct RecordParser {
    header: [u8; 5],
    have: usize,
    left: usize,
    done: Vec<usize>,
}

impl RecordParser {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.left == 0 && self.have < 5 {
                if let Some((b, rest)) = bytes.split_first() {
                    if let Some(slot) = self.header.get_mut(self.have) {
                        *slot = *b;
                    }
                    self.have += 1;
                    bytes = rest;
                }
                if self.have == 5 {
                    self.left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                    if self.left == 0 {
                        self.done.push(5);
                        self.have = 0;
                    }
                }
            } else {
                let n = self.left.min(bytes.len());
                self.left -= n;
                bytes = bytes.get(n..).unwrap_or_default();
                if self.left == 0 {
                    let len = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                    self.done.push(5 + len);
                    self.have = 0;
                }
            }
        }
    }
}

/// The socket side of TLS: passes everything through and follows the records written.
#[derive(Debug)]
pub(crate) struct Metered<Io> {
    inner: Io,
    records: Records,
}

impl<Io: AsyncRead + Unpin> AsyncRead for Metered<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Metered<Io> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.records.0.borrow_mut().feed(buf.get(..n).unwrap_or_default());
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The byte stream under an XML stream: plain until STARTTLS, then TLS.
#[derive(Debug)]
pub(crate) enum Link<Io> {
    /// No TLS (yet).
    Plain(Io),
    /// The initiating side of TLS.
    Client(Box<tokio_rustls::client::TlsStream<Metered<Io>>>),
    /// The receiving side of TLS.
    Server(Box<tokio_rustls::server::TlsStream<Metered<Io>>>),
}

impl<Io: AsyncRead + AsyncWrite + Unpin> AsyncRead for Link<Io> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Link::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Link::Client(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
            Link::Server(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Link<Io> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Link::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Link::Client(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
            Link::Server(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Link::Plain(io) => Pin::new(io).poll_flush(cx),
            Link::Client(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            Link::Server(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Link::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Link::Client(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
            Link::Server(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

fn version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3".to_owned(),
        rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2".to_owned(),
        other => format!("{other:?}"),
    }
}

/// Runs the initiating side of the handshake (RFC 6120 §5.4.3.1) over a plain link, checking
/// the server's certificate for `domain` as `tls.config` says.
pub(crate) async fn connect<Io: AsyncRead + AsyncWrite + Unpin>(
    link: Link<Io>,
    tls: &ClientTls,
    domain: &str,
    now: core::time::Duration,
) -> Result<(Link<Io>, Records, TlsSummary), (&'static str, String)> {
    tls.clock.set(now);
    let Link::Plain(io) = link else {
        return Err(("tls-failed", "the stream is already under TLS".into()));
    };
    let name = ServerName::try_from(domain.to_owned())
        .map_err(|e| ("tls-failed", format!("`{domain}` is not a server name: {e}")))?;
    let records = Records::default();
    let metered = Metered { inner: io, records: records.clone() };
    let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config))
        .connect(name, metered)
        .await
        .map_err(|e| ("tls-failed", e.to_string()))?;
    let (_, conn) = stream.get_ref();
    let summary = TlsSummary {
        version: conn.protocol_version().map(version_name).unwrap_or_else(|| "TLS ?".into()),
        suite: conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_else(|| "no suite".into()),
        server_certificate: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default(),
        verified: tls.verify,
    };
    // The handshake's own records are not stanzas.
    records.take();
    Ok((Link::Client(Box::new(stream)), records, summary))
}

/// Runs the receiving side of the handshake (RFC 6120 §5.4.3.1) over a plain link.
pub(crate) async fn accept<Io: AsyncRead + AsyncWrite + Unpin>(
    link: Link<Io>,
    tls: &ServerTls,
    now: core::time::Duration,
) -> Result<(Link<Io>, Records), String> {
    tls.clock.set(now);
    let Link::Plain(io) = link else {
        return Err("the stream is already under TLS".into());
    };
    let records = Records::default();
    let metered = Metered { inner: io, records: records.clone() };
    let stream = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.config))
        .accept(metered)
        .await
        .map_err(|e| e.to_string())?;
    records.take();
    Ok((Link::Server(Box::new(stream)), records))
}

#[cfg(test)]
mod tests {
    use super::RecordParser;

    #[test]
    fn records_are_framed_across_writes() {
        let mut p = RecordParser::default();
        // One 3-byte record split over three writes, then an empty record and half a header.
        p.feed(&[23, 3, 3]);
        p.feed(&[0, 3, 1]);
        p.feed(&[2, 3, 22, 3, 3, 0, 0, 23, 3]);
        assert_eq!(p.done, vec![8, 5]);
        p.feed(&[3, 0, 1, 9]);
        assert_eq!(p.done, vec![8, 5, 6]);
    }
}
