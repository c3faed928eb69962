//! OTR v3 message formats (`otr-protocol-v3.html`): §"Data types", the AKE and Data messages of
//! §"Encoded messages", §"Fragmentation", and the text-level messages (Query, whitespace tag,
//! Error).

use num_bigint::BigUint;

use crate::E2eError;
use crate::kit::codec::{b64, unb64};

/// The protocol version of every message we send (§"Encoded messages": 0x0003).
pub const VERSION: u16 = 3;
/// Message types.
pub const DH_COMMIT: u8 = 0x02;
/// D-H Key.
pub const DH_KEY: u8 = 0x0a;
/// Reveal Signature.
pub const REVEAL_SIG: u8 = 0x11;
/// Signature.
pub const SIG: u8 = 0x12;
/// Data.
pub const DATA: u8 = 0x03;
/// The smallest valid instance tag (§"Instance Tags").
pub const MIN_INSTANCE_TAG: u32 = 0x100;

/// §"Whitespace tag": the base tag, then one 8-byte group per version.
pub const WHITESPACE_BASE: &str = "\x20\x09\x20\x20\x09\x09\x09\x09\x20\x09\x20\x09\x20\x09\x20\x20";
/// The group offering version 2.
pub const WHITESPACE_V2: &str = "\x20\x20\x09\x09\x20\x20\x09\x20";
/// The group offering version 3.
pub const WHITESPACE_V3: &str = "\x20\x20\x09\x09\x20\x20\x09\x09";
/// The Query Message we send: versions 3 only (we do not speak 1 or 2).
pub const QUERY: &str = "?OTRv3?";
/// The prefix of an Error Message.
pub const ERROR_PREFIX: &str = "?OTR Error:";

fn malformed(what: &'static str, detail: impl Into<String>) -> E2eError {
    E2eError::Malformed { what, detail: detail.into() }
}

/// The minimum-length big-endian bytes of an MPI value (zero is empty).
pub fn mpi_bytes(v: &BigUint) -> Vec<u8> {
    if *v == BigUint::default() { Vec::new() } else { v.to_bytes_be() }
}

/// Serialises the data types.
#[derive(Debug, Default, Clone)]
pub struct Writer(Vec<u8>);

impl Writer {
    /// BYTE.
    pub fn byte(&mut self, b: u8) -> &mut Self {
        self.0.push(b);
        self
    }
    /// SHORT.
    pub fn short(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// INT.
    pub fn int(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// MPI, minimum-length.
    pub fn mpi(&mut self, v: &BigUint) -> &mut Self {
        self.data(&mpi_bytes(v))
    }
    /// DATA.
    pub fn data(&mut self, d: &[u8]) -> &mut Self {
        // Every DATA we write is far below 4 GiB (a stanza).
        self.int(u32::try_from(d.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(d);
        self
    }
    /// Raw bytes (CTR, MAC, SIG).
    pub fn raw(&mut self, d: &[u8]) -> &mut Self {
        self.0.extend_from_slice(d);
        self
    }
    /// What was written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
    /// The bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Parses the data types from untrusted bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`; errors name `what`.
    pub fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0, what }
    }
    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], E2eError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or_else(|| {
            malformed(self.what, format!("truncated: {n} bytes wanted at offset {}", self.pos))
        })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    /// BYTE.
    pub fn byte(&mut self) -> Result<u8, E2eError> {
        Ok(self.take(1)?[0])
    }
    /// SHORT.
    pub fn short(&mut self) -> Result<u16, E2eError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// INT.
    pub fn int(&mut self) -> Result<u32, E2eError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// DATA.
    pub fn data(&mut self) -> Result<&'a [u8], E2eError> {
        let len = self.int()? as usize;
        self.take(len)
    }
    /// MPI.
    pub fn mpi(&mut self) -> Result<BigUint, E2eError> {
        Ok(BigUint::from_bytes_be(self.data()?))
    }
    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], E2eError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    /// How far we are.
    pub fn position(&self) -> usize {
        self.pos
    }
    /// Everything read must be everything there was.
    pub fn finish(&self) -> Result<(), E2eError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(malformed(self.what, format!("{} trailing bytes", self.buf.len() - self.pos)))
        }
    }
    /// The rest, unread.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }
}

/// The common header of every v3 binary message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message type.
    pub kind: u8,
    /// Sender instance tag.
    pub sender: u32,
    /// Receiver instance tag (0: not known yet).
    pub receiver: u32,
}

/// A binary OTR message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// D-H Commit: AES_r(g^x MPI) and SHA256(g^x MPI).
    DhCommit {
        /// Encrypted gx.
        encrypted_gx: Vec<u8>,
        /// Hashed gx.
        hashed_gx: Vec<u8>,
    },
    /// D-H Key: g^y.
    DhKey {
        /// gy.
        gy: BigUint,
    },
    /// Reveal Signature: r, the encrypted X_B and its MAC.
    RevealSig {
        /// The revealed AES key r.
        r: Vec<u8>,
        /// AES_c(X_B).
        encrypted_sig: Vec<u8>,
        /// MAC_m2 of the DATA-encoded encrypted signature, first 160 bits.
        mac: [u8; 20],
    },
    /// Signature: the encrypted X_A and its MAC.
    Sig {
        /// AES_c'(X_A).
        encrypted_sig: Vec<u8>,
        /// MAC_m2' of the DATA-encoded encrypted signature.
        mac: [u8; 20],
    },
    /// Data.
    Data(DataMessage),
}

/// §"Data Message".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataMessage {
    /// Flags (IGNORE_UNREADABLE = 0x01).
    pub flags: u8,
    /// Sender keyid.
    pub sender_keyid: u32,
    /// Recipient keyid.
    pub recipient_keyid: u32,
    /// The sender's next DH public key.
    pub next_dh: BigUint,
    /// Top half of the counter.
    pub ctr: [u8; 8],
    /// AES-CTR ciphertext.
    pub encrypted: Vec<u8>,
    /// HMAC-SHA1 of everything from the version to the end of the encrypted message.
    pub mac: [u8; 20],
    /// Old MAC keys revealed (concatenated 20-byte keys).
    pub old_mac_keys: Vec<u8>,
}

/// The IGNORE_UNREADABLE flag.
pub const IGNORE_UNREADABLE: u8 = 0x01;

impl DataMessage {
    /// The bytes the MAC covers, for a header with these instance tags.
    pub fn authenticated(&self, sender: u32, receiver: u32) -> Vec<u8> {
        let mut w = Writer::default();
        w.short(VERSION).byte(DATA).int(sender).int(receiver);
        w.byte(self.flags).int(self.sender_keyid).int(self.recipient_keyid).mpi(&self.next_dh);
        w.raw(&self.ctr).data(&self.encrypted);
        w.into_bytes()
    }
}

/// Serialises a binary message with its header.
pub fn encode(header: Header, message: &Message) -> Vec<u8> {
    if let Message::Data(d) = message {
        let mut out = d.authenticated(header.sender, header.receiver);
        let mut w = Writer::default();
        w.raw(&d.mac).data(&d.old_mac_keys);
        out.extend(w.into_bytes());
        return out;
    }
    let mut w = Writer::default();
    w.short(VERSION).byte(header.kind).int(header.sender).int(header.receiver);
    match message {
        Message::DhCommit { encrypted_gx, hashed_gx } => {
            w.data(encrypted_gx).data(hashed_gx);
        }
        Message::DhKey { gy } => {
            w.mpi(gy);
        }
        Message::RevealSig { r, encrypted_sig, mac } => {
            w.data(r).data(encrypted_sig).raw(mac);
        }
        Message::Sig { encrypted_sig, mac } => {
            w.data(encrypted_sig).raw(mac);
        }
        Message::Data(_) => {}
    }
    w.into_bytes()
}

/// Parses a binary message (after base64).
pub fn decode(bytes: &[u8]) -> Result<(Header, Message), E2eError> {
    let mut r = Reader::new("OTR message", bytes);
    let version = r.short()?;
    if version != VERSION {
        return Err(E2eError::Rejected {
            reason: "unsupported-version",
            detail: format!("OTR protocol version {version}"),
        });
    }
    let kind = r.byte()?;
    let header = Header { kind, sender: r.int()?, receiver: r.int()? };
    let message = match kind {
        DH_COMMIT => Message::DhCommit { encrypted_gx: r.data()?.to_vec(), hashed_gx: r.data()?.to_vec() },
        DH_KEY => Message::DhKey { gy: r.mpi()? },
        REVEAL_SIG => {
            Message::RevealSig { r: r.data()?.to_vec(), encrypted_sig: r.data()?.to_vec(), mac: r.array()? }
        }
        SIG => Message::Sig { encrypted_sig: r.data()?.to_vec(), mac: r.array()? },
        DATA => Message::Data(DataMessage {
            flags: r.byte()?,
            sender_keyid: r.int()?,
            recipient_keyid: r.int()?,
            next_dh: r.mpi()?,
            ctr: r.array()?,
            encrypted: r.data()?.to_vec(),
            mac: r.array()?,
            old_mac_keys: r.data()?.to_vec(),
        }),
        other => return Err(malformed("OTR message", format!("unknown message type {other:#04x}"))),
    };
    r.finish()?;
    Ok((header, message))
}

/// `?OTR:` + base64 + `.`.
pub fn armor(bytes: &[u8]) -> String {
    format!("?OTR:{}.", b64(bytes))
}

/// What a message body is, at the text level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    /// A fragment (§"Fragmentation": the v3 form; or the v2 form, without instance tags, which
    /// libotr uses for the Query text it fragments before any tags are known).
    Fragment {
        /// Sender and receiver instance tags (`None`: the v2 form).
        tags: Option<(u32, u32)>,
        /// k.
        k: u16,
        /// n.
        n: u16,
        /// piece[k].
        piece: String,
    },
    /// An encoded binary message.
    Encoded(Vec<u8>),
    /// A Query Message offering these versions.
    Query(Vec<u8>),
    /// An Error Message, with its text.
    Error(String),
    /// Plain text, whitespace tag removed, with the versions the tag offered.
    Plain {
        /// The text.
        text: String,
        /// Versions offered by a whitespace tag (empty: no tag).
        tagged: Vec<u8>,
    },
}

/// Classifies a message body (fragments first, as §"Fragmentation" says).
pub fn classify(body: &str) -> Result<Text, E2eError> {
    if let Some(i) = body.find("?OTR|") {
        return parse_fragment(&body[i + 5..]);
    }
    if let Some(i) = body.find("?OTR,") {
        return parse_fragment_v2(&body[i + 5..]);
    }
    if let Some(i) = body.find("?OTR:") {
        let rest = &body[i + 5..];
        let end = rest.find('.').ok_or_else(|| malformed("OTR message", "no terminating `.`"))?;
        let bytes = unb64("OTR message", &rest[..end])?;
        return Ok(Text::Encoded(bytes));
    }
    if let Some(i) = body.find(ERROR_PREFIX) {
        return Ok(Text::Error(body[i + ERROR_PREFIX.len()..].trim().to_owned()));
    }
    if let Some(query) = find_query(body) {
        let mut versions = if query.v1 { vec![1] } else { vec![] };
        versions.extend(query.list.bytes().filter(u8::is_ascii_digit).map(|d| d - b'0'));
        return Ok(Text::Query(versions));
    }
    if let Some(i) = body.find(WHITESPACE_BASE) {
        let mut rest = &body[i + WHITESPACE_BASE.len()..];
        let mut tagged = Vec::new();
        let mut consumed = WHITESPACE_BASE.len();
        while rest.len() >= 8 && rest.is_char_boundary(8) {
            let group = &rest[..8];
            let v = match group {
                "\x20\x09\x20\x09\x20\x20\x09\x20" => 1,
                WHITESPACE_V2 => 2,
                WHITESPACE_V3 => 3,
                _ => break,
            };
            tagged.push(v);
            rest = &rest[8..];
            consumed += 8;
        }
        let text = format!("{}{}", &body[..i], &body[i + consumed..]);
        return Ok(Text::Plain { text, tagged });
    }
    Ok(Text::Plain { text: body.to_owned(), tagged: Vec::new() })
}

/// A Query Message found in a body (§"OTR Query Messages").
#[derive(Debug, Clone, PartialEq, Eq)]
struct Query {
    /// Where "?OTR" starts and where its version string ends, in the body.
    span: (usize, usize),
    /// The "?" right after "?OTR": version 1.
    v1: bool,
    /// The byte identifiers between "v" and "?".
    list: String,
}

impl Query {
    /// The version string written back: "?" for version 1, "v…?" for the others, "v?" when
    /// none is left.
    fn write(v1: bool, list: &str) -> String {
        match (v1, list.is_empty()) {
            (true, true) => "?OTR?".to_owned(),
            (true, false) => format!("?OTR?v{list}?"),
            (false, _) => format!("?OTRv{list}?"),
        }
    }
}

/// The first Query Message in `body`: "?OTR" followed by a version string — "?" for version
/// 1, then or instead "v", the byte identifiers of the other versions, "?". "?OTRv?" is a
/// Query Message too (§"OTR Query Messages": "A bizarre claim that Alice would like to start
/// an OTR conversation, but is unwilling to speak any version of the protocol"). "?OTR"
/// followed by anything else is text.
fn find_query(body: &str) -> Option<Query> {
    let mut from = 0;
    while let Some(i) = body[from..].find("?OTR").map(|i| i + from) {
        let mut at = i + 4;
        let v1 = body[at..].starts_with('?');
        if v1 {
            at += 1;
        }
        let list = body[at..].strip_prefix('v').and_then(|r| Some(&r[..r.find('?')?]));
        if let Some(list) = list {
            return Some(Query { span: (i, at + list.len() + 2), v1, list: list.to_owned() });
        }
        if v1 {
            return Some(Query { span: (i, at), v1, list: String::new() });
        }
        from = at;
    }
    None
}

/// A rollback of the offer in `body` (XEP-0210 §3.10 asked of OTR): the newest version taken
/// out of its Query Message (the highest identifier between "v" and "?", else version 1's
/// "?"), or out of its whitespace tag (the highest version's 8-byte group), so that the peer
/// still reads what is left (§"OTR Query Messages", §"Tagged plaintext messages"). Returns
/// the new body, the version taken out, the versions left and what carried the offer.
pub fn without_newest(body: &str) -> Option<(String, u8, Vec<u8>, &'static str)> {
    if let Some(q) = find_query(body) {
        let newest = q.list.bytes().filter(u8::is_ascii_digit).max();
        let (query, removed) = match newest {
            Some(n) => (Query::write(q.v1, &q.list.replace(char::from(n), "")), n - b'0'),
            None if q.v1 => (Query::write(false, &q.list), 1),
            None => return None,
        };
        let text = format!("{}{query}{}", &body[..q.span.0], &body[q.span.1..]);
        let left = match classify(&text) {
            Ok(Text::Query(v)) => v,
            _ => Vec::new(),
        };
        return Some((text, removed, left, "the Query Message's versions"));
    }
    let i = body.find(WHITESPACE_BASE)?;
    let mut groups: Vec<(&str, u8)> = Vec::new();
    let mut at = i + WHITESPACE_BASE.len();
    while let Some(group) = body.get(at..at + 8) {
        let v = match group {
            "\x20\x09\x20\x09\x20\x20\x09\x20" => 1,
            WHITESPACE_V2 => 2,
            WHITESPACE_V3 => 3,
            _ => break,
        };
        groups.push((group, v));
        at += 8;
    }
    let newest = groups.iter().map(|(_, v)| *v).max()?;
    let kept: String = groups.iter().filter(|(_, v)| *v != newest).map(|(g, _)| *g).collect();
    let text = format!("{}{WHITESPACE_BASE}{kept}{}", &body[..i], &body[at..]);
    let left = groups.iter().map(|(_, v)| *v).filter(|v| *v != newest).collect();
    Some((text, newest, left, "the whitespace tag's versions"))
}

fn parse_fragment(s: &str) -> Result<Text, E2eError> {
    let bad = |d: &str| malformed("OTR fragment", d.to_owned());
    let (sender, rest) = s.split_once('|').ok_or_else(|| bad("no receiver tag"))?;
    let (receiver, rest) = rest.split_once(',').ok_or_else(|| bad("no k"))?;
    let hex = |v: &str| u32::from_str_radix(v, 16).map_err(|_| bad("instance tag is not hex"));
    let (k, n, piece) = fragment_rest(rest)?;
    Ok(Text::Fragment { tags: Some((hex(sender)?, hex(receiver)?)), k, n, piece })
}

/// §"Transmitting Fragments": "OTR version 2 messages get fragmented in a similar format, but
/// without the instance tags fields" — `?OTR,k,n,piece,`.
fn parse_fragment_v2(s: &str) -> Result<Text, E2eError> {
    let (k, n, piece) = fragment_rest(s)?;
    Ok(Text::Fragment { tags: None, k, n, piece })
}

/// `k,n,piece,` of a fragment.
fn fragment_rest(s: &str) -> Result<(u16, u16, String), E2eError> {
    let bad = |d: &str| malformed("OTR fragment", d.to_owned());
    let (k, rest) = s.split_once(',').ok_or_else(|| bad("no n"))?;
    let (n, rest) = rest.split_once(',').ok_or_else(|| bad("no piece"))?;
    let piece = rest
        .strip_suffix(',')
        .or_else(|| rest.split_once(',').map(|(p, _)| p))
        .ok_or_else(|| bad("no final comma"))?;
    let num = |v: &str| v.parse::<u16>().map_err(|_| bad("k or n is not a short"));
    Ok((num(k)?, num(n)?, piece.to_owned()))
}

/// Splits an encoded message into v3 fragments whose whole text is at most `max` bytes
/// (§"Transmitting Fragments"). `None` if `max` leaves no room for a piece.
pub fn fragment(message: &str, sender: u32, receiver: u32, max: usize) -> Option<Vec<String>> {
    if message.len() <= max {
        return Some(vec![message.to_owned()]);
    }
    // "?OTR|%08x|%08x,%05hu,%05hu," + piece + ","
    let overhead = 5 + 8 + 1 + 8 + 1 + 5 + 1 + 5 + 1 + 1;
    let room = max.checked_sub(overhead).filter(|r| *r > 0)?;
    let n = message.len().div_ceil(room);
    let n16 = u16::try_from(n).ok()?;
    let bytes = message.as_bytes();
    Some(
        bytes
            .chunks(room)
            .enumerate()
            .map(|(i, piece)| {
                // The armoured message is ASCII, so every chunk is valid UTF-8.
                let piece = core::str::from_utf8(piece).unwrap_or_default();
                format!("?OTR|{sender:08x}|{receiver:08x},{:05},{n16:05},{piece},", i + 1)
            })
            .collect(),
    )
}

/// The largest reassembled message kept (an OTR message is a few kilobytes).
pub const MAX_REASSEMBLED: usize = 64 * 1024;

/// §"Receiving Fragments": the reassembly state for one correspondent.
#[derive(Debug, Clone, Default)]
pub struct Reassembly {
    k: u16,
    n: u16,
    buffer: String,
}

impl Reassembly {
    /// Feeds a fragment; returns the whole message once complete.
    pub fn push(&mut self, k: u16, n: u16, piece: &str) -> Option<String> {
        if k == 0 || n == 0 || k > n {
            return None;
        }
        // No OTR message we accept is larger: stop a peer from growing the buffer for ever.
        if self.buffer.len() + piece.len() > MAX_REASSEMBLED {
            *self = Reassembly::default();
            return None;
        }
        if k == 1 {
            *self = Reassembly { k, n, buffer: piece.to_owned() };
        } else if n == self.n && k == self.k + 1 {
            self.buffer.push_str(piece);
            self.k = k;
        } else {
            *self = Reassembly::default();
        }
        if self.n > 0 && self.k == self.n {
            let whole = core::mem::take(&mut self.buffer);
            *self = Reassembly::default();
            return Some(whole);
        }
        None
    }

    /// A non-fragment arrived: forget what is stored.
    pub fn reset(&mut self) {
        *self = Reassembly::default();
    }
}

/// A TLV record: type and value.
pub type Tlv = (u16, Vec<u8>);

/// §"Data Message": the plaintext is `message [NUL TLV*]`.
pub fn split_tlvs(plaintext: &[u8]) -> Result<(String, Vec<Tlv>), E2eError> {
    let (text, tlv_bytes) = match plaintext.iter().position(|b| *b == 0) {
        Some(i) => (&plaintext[..i], &plaintext[i + 1..]),
        None => (plaintext, &[][..]),
    };
    let mut r = Reader::new("TLV", tlv_bytes);
    let mut tlvs = Vec::new();
    while r.position() < tlv_bytes.len() {
        let kind = r.short()?;
        let len = r.short()? as usize;
        tlvs.push((kind, r.take(len)?.to_vec()));
    }
    Ok((String::from_utf8_lossy(text).into_owned(), tlvs))
}

/// Builds `message NUL TLV*` (no NUL when there are no TLVs).
pub fn join_tlvs(text: &str, tlvs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut out = text.as_bytes().to_vec();
    if !tlvs.is_empty() {
        out.push(0);
        for (kind, value) in tlvs {
            let mut w = Writer::default();
            // A TLV value is at most a few kilobytes (SMP).
            w.short(*kind).short(u16::try_from(value.len()).unwrap_or(u16::MAX)).raw(value);
            out.extend(w.into_bytes());
        }
    }
    out
}
