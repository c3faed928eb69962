"""XTLS (TLS 1.3 tunnelled in iq stanzas, /work/shared/specs/inbox-xtls.xml) with OpenSSL's
libssl through pyOpenSSL memory BIOs, speaking the wire format of peers/e2e/src/xtls/ (its
module docs describe every choice mirrored here).

Why pyOpenSSL and not the standard `ssl` module's MemoryBIO: the short authentication string is
the TLS exporter (RFC 8446 §7.5, label `EXPORTER-urn:xmpp:tmp:xtls sas`), and only pyOpenSSL
exposes `SSL_export_keying_material` (`Connection.export_keying_material`); it also takes keys
and certificates from memory and lets the verify callback accept any certificate (the engine
judges its fingerprint afterwards, as ours does)."""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import hashlib
import json
from typing import Any, Dict, List, Optional, Tuple
import xml.etree.ElementTree as ET

import jabberwock_adapter as kit
from jabberwock_adapter import CLIENT, EngineError, Output, Unimplemented, el, serialize

import OpenSSL
from OpenSSL import SSL, crypto
import cryptography
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from common import UNTRUSTED, VERIFIED, TrustBook, bare, check_jid

NS_XTLS = "urn:xmpp:tmp:xtls"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
CAPS_NODE = "https://jabberwock.invalid/xtls"
SAS_LABEL = b"EXPORTER-urn:xmpp:tmp:xtls sas"
MAX_DATA = 256 * 1024
MAX_PLAIN = 256 * 1024
MAX_DEPTH = 64
SERVER_PROCESSED = {"urn:xmpp:hints", "urn:xmpp:sid:0", "http://jabber.org/protocol/address", "urn:xmpp:eme:0"}
XMPP_ADDR = x509.ObjectIdentifier("1.3.6.1.5.5.7.8.5")
VALIDITY = datetime.timedelta(days=365)


def version() -> str:
    v = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode().split()  # "OpenSSL 4.0.3 29 Sep 2026"
    return (f"{v[1] if len(v) > 1 else ' '.join(v)} (libssl bundled by cryptography {cryptography.__version__}, "
            f"via pyOpenSSL {OpenSSL.__version__})")


def caps_ver() -> str:
    """XEP-0115 §5.1 over the disco#info our engine announces (the only `ver` it recognises)."""
    s = "client/pc//Jabberwock<" + "".join(f + "<" for f in sorted([NS_CAPS, NS_DISCO_INFO, NS_XTLS]))
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


def tls_reason(e: Exception) -> EngineError:
    """A libssl error as one of XTLS's declared reasons."""
    text = str(e).lower()
    if isinstance(e, SSL.ZeroReturnError):
        return EngineError("tls-error", "the peer closed the TLS session")
    if "alert" in text:
        code = "tls-alert"  # the peer's alert (OpenSSL: "sslv3/tlsv1 alert …", "ssl alert number …")
    elif "bad record mac" in text or "decryption failed" in text:
        code = "bad-record-mac"
    elif "certificate" in text:
        code = "bad-certificate"
    elif any(w in text for w in ("unexpected message", "bad message", "length", "wrong version", "decode",
                                 "record too", "packet", "bad record type", "wrong ssl version", "http request")):
        code = "tls-invalid-message"
    elif any(w in text for w in ("no shared", "no suitable", "unsupported protocol", "illegal parameter",
                                 "missing extension", "bad key share", "version too low", "inappropriate")):
        code = "tls-peer-misbehaved"
    else:
        code = "tls-error"
    return EngineError(code, f"OpenSSL: {e}")


def stanza_xml(stanza: str) -> str:
    """The stanza in the tunnel's default namespace (no xmlns on it): built so already."""
    return stanza


def split_stanzas(buf: bytearray) -> List[str]:
    """Complete top-level elements off the front of the tunnelled stream (xtls/mod.rs)."""
    def bad(d: str) -> EngineError:
        return EngineError("malformed", d, "tunnelled stanza")
    out, start, depth, i, consumed = [], 0, 0, 0, 0
    n = len(buf)
    while i < n:
        b = buf[i]
        if depth == 0 and b != 0x3C:
            if b not in b" \t\r\n":
                raise bad("text outside a stanza")
            i += 1
            consumed = i
            continue
        if b != 0x3C:
            i += 1
            continue
        if depth == 0:
            start = i
        j, quote, end = i + 1, None, None
        while j < n:
            c = buf[j]
            if quote is not None:
                if c == quote:
                    quote = None
            elif c in (0x22, 0x27):
                quote = c
            elif c == 0x3E:
                end = j
                break
            j += 1
        if end is None:
            break
        nxt = buf[i + 1] if i + 1 < n else None
        if nxt == 0x2F:
            if depth == 0:
                raise bad("end tag without start")
            depth -= 1
        elif nxt in (0x3F, 0x21):
            raise bad("processing instruction or declaration")
        elif buf[end - 1] == 0x2F:
            pass
        else:
            depth += 1
            if depth > MAX_DEPTH:
                raise bad("nested too deep")
        i = end + 1
        if depth == 0:
            try:
                out.append(bytes(buf[start:i]).decode("utf-8"))
            except UnicodeDecodeError as e:
                raise bad(str(e))
            consumed = i
    del buf[:consumed]
    if len(buf) > MAX_PLAIN:
        raise bad("stanza too large")
    return out


def parse_stanza(text: str) -> ET.Element:
    try:
        root = ET.fromstring(f"<tunnel xmlns='{CLIENT}'>{text}</tunnel>")
    except ET.ParseError as e:
        raise EngineError("malformed", str(e), "tunnelled stanza")
    kids = list(root)
    if not kids:
        raise EngineError("missing-element", "empty", "tunnelled stanza")
    return kids[0]


class Session:
    def __init__(self, phase: Any, role: str, outbox: List[Tuple[Optional[str], str]], first_id: int) -> None:
        self.phase, self.role, self.outbox, self.first_id = phase, role, outbox, first_id
        self.conn: Optional[SSL.Connection] = None
        self.method_seen = False
        self.plain = bytearray()
        self.sas: Optional[str] = None
        self.fingerprint: Optional[str] = None
        self.peer_closed = False
        self.handshake_done = False


class Xtls(kit.Engine):
    @classmethod
    def create(cls, me: str, config: Dict[str, Any], rng: kit.Stream) -> "Xtls":
        e = cls()
        e.me, e.own = me, bare(me)
        e.key_seed = rng.read(32).hex()
        e.cert_der = None
        e.devices: Dict[str, List[str]] = {}
        e.sessions: Dict[str, Session] = {}
        e.pending: Dict[str, List[Tuple[Optional[str], str]]] = {}
        e.next_inner, e.next_id = 0, 0
        e.last_message: Dict[str, str] = {}
        e.certs = cls.book(config.get("trust", "btbv"))
        e.left = Output()
        return e

    @staticmethod
    def book(policy: str) -> TrustBook:
        return TrustBook(policy, lambda o, r: f"{o}/{r} presents a new certificate",
                         lambda o, r, _fp: f"{o}/{r}: what the peer shows out of band is not what this tunnel saw",
                         "certificate")

    def iq_namespaces(self) -> List[str]:
        return [NS_XTLS]

    # ---- identity ------------------------------------------------------------------------------

    def key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(self.key_seed))

    def identity(self, now: int) -> bytes:
        """Our self-signed Ed25519 certificate (key from the seed; valid from `now`)."""
        if self.cert_der is None:
            key = self.key()
            public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            digest = hashlib.sha256(public).digest()
            serial = int.from_bytes(bytes([digest[0] & 0x7F]) + digest[1:16], "big") or 1
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.me)])
            start = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=now // 1000)
            xmpp_addr = b"\x0c" + bytes([len(self.me.encode())]) + self.me.encode() if len(self.me.encode()) < 128 else None
            builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                       .serial_number(serial).not_valid_before(start).not_valid_after(start + VALIDITY)
                       .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), True))
            if xmpp_addr is not None:
                builder = builder.add_extension(x509.SubjectAlternativeName([x509.OtherName(XMPP_ADDR, xmpp_addr)]), False)
            self.cert_der = builder.sign(key, None).public_bytes(serialization.Encoding.DER)
        return self.cert_der

    def fingerprint(self) -> Optional[str]:
        return hashlib.sha256(self.cert_der).hexdigest() if self.cert_der else None

    def context(self, role: str, now: int) -> SSL.Context:
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
        ctx.use_certificate(x509.load_der_x509_certificate(self.identity(now)))
        ctx.use_privatekey(self.key())
        # Any well-formed certificate completes the handshake (the CertificateVerify signature
        # is still checked by libssl); its fingerprint is judged by the trust policy after.
        mode = SSL.VERIFY_PEER | (SSL.VERIFY_FAIL_IF_NO_PEER_CERT if role == "server" else 0)
        ctx.set_verify(mode, lambda conn, cert, errno, depth, ok: True)
        ctx.set_options(SSL.OP_NO_TICKET)
        return ctx

    # ---- helpers -------------------------------------------------------------------------------

    def id(self) -> str:
        self.next_id += 1
        return f"xtls-{self.next_id}"

    def iq_set(self, to: str, child: str) -> str:
        return el("iq", {"type": "set", "to": to, "id": self.id()}, [child], xmlns=CLIENT)

    @staticmethod
    def iq_error(to: str, id_: str, condition: str) -> str:
        return el("iq", {"type": "error", "to": to, "id": id_},
                  [el("error", {"type": "cancel"}, [el(condition, xmlns=NS_STANZAS)])], xmlns=CLIENT)

    @staticmethod
    def iq_result(to: str, id_: str, child: Optional[str] = None) -> str:
        return el("iq", {"type": "result", "to": to, "id": id_}, [child] if child else [], xmlns=CLIENT)

    def inner(self, name: str, attrs: Dict[str, Any], children: List[str]) -> str:
        self.next_inner += 1
        return el(name, {"id": f"in-{self.next_inner}", **attrs}, children)

    def submit(self, now: int, account: str, device: Optional[str], stanza: str) -> Output:
        out = Output()
        self.identity(now)
        queued = self.pending.pop(account, [])
        queued.append((device, stanza))
        self.dispatch(now, account, queued, out)
        return out

    def start(self, peer: str, outbox: List[Tuple[Optional[str], str]], out: Output) -> None:
        first = self.next_id
        iq = self.iq_set(peer, el("start", xmlns=NS_XTLS))
        out.send(iq)
        self.sessions[peer] = Session(("requested", f"xtls-{self.next_id}"), "client", outbox, first)

    def flush_tls(self, peer: str, out: Output) -> None:
        s = self.sessions.get(peer)
        if s is None or s.conn is None:
            return
        data = b""
        while True:
            try:
                chunk = s.conn.bio_read(65536)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            data += chunk
        if not data:
            return
        attrs = {}
        if s.role == "client" and not s.method_seen:
            s.method_seen = True
            attrs["method"] = "x509"
        out.send(self.iq_set(peer, el("data", attrs, [], base64.b64encode(data).decode(), NS_XTLS)))

    def flush_outbox(self, now: int, peer: str, out: Output) -> None:
        k = self.certs.keys.get(bare(peer), {}).get(peer)
        if k is not None and k["state"] == UNTRUSTED:
            return
        s = self.sessions.get(peer)
        if s is None or s.phase != "open" or s.conn is None:
            return
        outbox, s.outbox = s.outbox, []
        for _device, stanza in outbox:
            try:
                s.conn.sendall(stanza_xml(stanza).encode())
            except SSL.Error as e:
                out.alert("not-sent", f"to {peer}: {tls_reason(e).detail}")
        self.flush_tls(peer, out)

    def kill(self, peer: str, out: Output) -> None:
        self.flush_tls(peer, out)
        s = self.sessions.pop(peer, None)
        if s is not None:
            if s.outbox:
                self.pending.setdefault(bare(peer), []).extend(s.outbox)
            out.send(self.iq_set(peer, el("close", xmlns=NS_XTLS)))

    def established(self, now: int, peer: str, out: Output) -> None:
        s = self.sessions.get(peer)
        if s is None or s.conn is None:
            return
        s.phase = "open"
        cert = s.conn.get_peer_certificate(as_cryptography=True)
        fp = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest() if cert is not None else ""
        raw = s.conn.export_keying_material(SAS_LABEL, 8, None)
        n = int.from_bytes(raw, "big") % 10 ** 15
        d = f"{n:015d}"
        s.sas = f"{d[0:5]} {d[5:10]} {d[10:15]}"
        s.fingerprint = fp
        state = self.certs.observe(bare(peer), peer, fp, peer.split("/", 1)[1], None, out)
        out.alert("xtls-established", f"TLS 1.3 tunnel with {peer} ({s.conn.get_cipher_name()}), certificate {fp}, SAS {s.sas}")
        if state == UNTRUSTED:
            out.alert("untrusted-device", f"{peer}'s certificate is not trusted: nothing is sent to it until verified")
        self.flush_outbox(now, peer, out)

    def new_conn(self, role: str, now: int, peer: str) -> SSL.Connection:
        conn = SSL.Connection(self.context(role, now), None)
        if role == "client":
            domain = peer.split("@", 1)[-1].split("/", 1)[0]
            try:
                conn.set_tlsext_host_name(domain.encode("idna"))
            except (UnicodeError, ValueError):
                pass
            conn.set_connect_state()
        else:
            conn.set_accept_state()
        return conn

    def dispatch(self, now: int, to: str, queued: List[Tuple[Optional[str], str]], out: Output) -> None:
        devices = sorted(self.devices.get(to, []))
        outboxes: Dict[str, List[Tuple[Optional[str], str]]] = {}
        waiting = []
        for q in queued:
            targets = [d for d in devices if q[0] is None or d == q[0]]
            if not targets:
                waiting.append(q)
                continue
            for d in targets:
                outboxes.setdefault(d, []).append(q)
        if waiting:
            messages = all(q[1].startswith("<message") for q in waiting)
            out.alert("xtls-waiting", f"no XTLS device of {to} is online: {len(waiting)} "
                      f"{'message(s)' if messages else 'stanza(s)'} wait (XTLS has no offline sessions)")
            self.pending.setdefault(to, []).extend(waiting)
        for d in sorted(outboxes):
            s = self.sessions.get(d)
            if s is not None:
                s.outbox.extend(outboxes[d])
                k = self.certs.keys.get(to, {}).get(d)
                if k is not None and k["state"] == UNTRUSTED:
                    out.alert("untrusted-device", f"{d}'s certificate is not trusted: the message waits for verification")
                self.flush_outbox(now, d, out)
            else:
                self.start(d, outboxes[d], out)

    # ---- the calls -----------------------------------------------------------------------------

    def publish(self, now: int) -> Output:
        self.identity(now)
        return Output()

    def going_offline(self, now: int) -> Output:
        return Output()

    def presence(self, now: int) -> List[str]:
        self.identity(now)
        return [el("c", {"hash": "sha-1", "node": CAPS_NODE, "ver": caps_ver()}, xmlns=NS_CAPS)]

    def receive_presence(self, now: int, stanza: str) -> Output:
        s = kit.parse(stanza)
        out = Output()
        frm = s.get("from")
        try:
            check_jid(frm)
        except EngineError:
            return out
        if "/" not in frm or bare(frm) == self.own or s.get("type") not in (None, "available"):
            return out
        c = s.find(f"{{{NS_CAPS}}}c")
        if c is None or c.get("hash") != "sha-1" or c.get("ver") != caps_ver():
            return out
        self.devices.setdefault(bare(frm), [])
        if frm not in self.devices[bare(frm)]:
            self.devices[bare(frm)].append(frm)
        sess = self.sessions.get(frm)
        if sess is not None and isinstance(sess.phase, tuple):
            del self.sessions[frm]
            self.start(frm, sess.outbox, out)
        b = bare(frm)
        if b in self.pending:
            self.dispatch(now, b, self.pending.pop(b), out)
        return out

    def send(self, now: int, to: str, body: str) -> Output:
        return self.send_message(now, to, body, [])

    def send_message(self, now: int, to: str, body: str, parts: List[str]) -> Output:
        to = bare(check_jid(to, "to"))
        children = []
        if body or not parts:
            children.append(el("body", text=body))
        for p in parts:
            children.append(serialize(kit.parse(p), CLIENT))
        m = self.inner("message", {"type": "chat"}, children)
        self.last_message[to] = f"in-{self.next_inner}"
        return self.submit(now, to, None, m)

    def send_presence(self, now: int, to: str, status: str) -> Output:
        to = check_jid(to, "to")
        p = self.inner("presence", {}, [el("status", text=status or "")])
        return self.submit(now, bare(to), to if "/" in to else None, p)

    def send_iq(self, now: int, to: str, payload: str) -> Output:
        to = check_jid(to, "to")
        iq = self.inner("iq", {"type": "set"}, [serialize(kit.parse(payload), CLIENT)])
        return self.submit(now, bare(to), to, iq)

    def message_id(self, to: str) -> Optional[str]:
        return self.last_message.get(bare(to))

    def drain(self, now: int) -> Output:
        out, self.left = self.left, Output()
        return out

    def fetch_failed(self, now: int, owner: str, node: str, condition: str) -> Output:
        return Output()

    def owns_part(self, part: str) -> bool:
        return False

    def forge(self, now: int, frm: str, body: str) -> Optional[str]:
        # Both ends hold both traffic keys, but libssl writes records only under its own
        # write key: no way to make a record "from" the peer through the library.
        return None

    def forward(self, now: int, recorded: str, to: str, body: str) -> Optional[Output]:
        return None  # no signature of the sender on the content

    def reencrypt(self, now: int, stanza: str, body: str) -> Optional[str]:
        return None

    def receive(self, now: int, stanza: str) -> Output:
        s = kit.parse(stanza)
        out = Output()
        ns, name = kit.local(s)
        if ns != CLIENT:
            return out
        if name == "message":
            if s.get("type") == "error":
                return out
            body = s.find(f"{{{CLIENT}}}body")
            if body is not None:
                frm = check_jid(s.get("from"))
                out.alert("unencrypted", f"{frm} sent a message outside an XTLS tunnel")
                out.plaintext(frm, "".join(body.itertext()), "unencrypted")
            return out
        if name != "iq":
            return out
        frm = check_jid(s.get("from"))
        if "/" not in frm:
            raise EngineError("malformed", f"`{frm}` is not a full JID", "from")
        id_ = s.get("id")
        if id_ is None:
            raise EngineError("missing-element", "no id", "id")
        child = next((c for c in s if kit.local(c)[0] == NS_XTLS), None)
        cname = kit.local(child)[1] if child is not None else None
        typ = s.get("type")
        try:
            if typ == "set" and cname == "start":
                self.on_start(now, frm, id_, out)
            elif typ == "set" and cname == "data":
                self.on_data(now, frm, id_, child, out)
            elif typ == "set" and cname == "close":
                self.on_close(frm, id_, out)
            elif typ == "set":
                out.send(self.iq_error(frm, id_, "bad-request"))
                raise EngineError("missing-element", "no XTLS payload", "XTLS payload")
            elif typ == "result" and cname == "proceed":
                self.on_proceed(now, frm, id_, out)
            elif typ == "error":
                self.on_error(frm, id_, s, out)
        except EngineError:
            self.left.actions += out.actions
            self.left.events += out.events
            raise
        return out

    def on_start(self, now: int, frm: str, id_: str, out: Output) -> None:
        outbox: List[Tuple[Optional[str], str]] = []
        s = self.sessions.get(frm)
        if s is not None:
            ours_first = self.me.encode() < frm.encode()
            crossing = s.role == "client" and s.phase != "open"
            if crossing and ours_first:
                out.send(self.iq_error(frm, id_, "conflict"))
                return
            if not isinstance(s.phase, tuple):
                out.alert("xtls-restarted", f"{frm} started a new tunnel: the old one is dropped")
            outbox = self.sessions.pop(frm).outbox
        self.devices.setdefault(bare(frm), [])
        if frm not in self.devices[bare(frm)]:
            self.devices[bare(frm)].append(frm)
        self.identity(now)
        sess = Session("handshake", "server", outbox, self.next_id)
        sess.conn = self.new_conn("server", now, frm)
        self.sessions[frm] = sess
        out.send(self.iq_result(frm, id_, el("proceed", xmlns=NS_XTLS)))

    def on_proceed(self, now: int, frm: str, id_: str, out: Output) -> None:
        s = self.sessions.get(frm)
        if s is None:
            raise EngineError("unexpected", f"<proceed/> from {frm}")
        if s.phase != ("requested", id_):
            raise EngineError("unexpected", f"<proceed/> from {frm} for a request we did not make")
        s.conn = self.new_conn("client", now, frm)
        s.phase = "handshake"
        try:
            s.conn.do_handshake()
        except SSL.WantReadError:
            pass
        except SSL.Error as e:
            self.kill(frm, out)
            raise tls_reason(e)
        self.flush_tls(frm, out)

    def on_data(self, now: int, frm: str, id_: str, data: ET.Element, out: Output) -> None:
        s = self.sessions.get(frm)
        if s is None:
            out.send(self.iq_error(frm, id_, "item-not-found"))
            raise EngineError("unknown-tunnel", f"<data/> from {frm}")
        if isinstance(s.phase, tuple) or s.conn is None:
            out.send(self.iq_error(frm, id_, "unexpected-request"))
            raise EngineError("unexpected", f"<data/> before <proceed/> from {frm}")
        if s.role == "server" and not s.method_seen:
            s.method_seen = True
            method = data.get("method")
            if method not in (None, "x509"):
                out.send(self.iq_error(frm, id_, "not-acceptable"))
                del self.sessions[frm]
                raise EngineError("unsupported-method", f"{frm} asked for XTLS method `{method}`")
        try:
            raw = base64.b64decode("".join((data.text or "").split()), validate=True)
        except (binascii.Error, ValueError) as e:
            out.send(self.iq_error(frm, id_, "bad-request"))
            raise EngineError("malformed", f"not base64: {e}", "data")
        if len(raw) > MAX_DATA:
            out.send(self.iq_error(frm, id_, "not-acceptable"))
            raise EngineError("malformed", f"{len(raw)} bytes", "data")
        out.send(self.iq_result(frm, id_))
        was_handshaking = s.phase == "handshake"
        plain = b""
        try:
            s.conn.bio_write(raw)
            if not s.handshake_done:
                try:
                    s.conn.do_handshake()
                    s.handshake_done = True
                except SSL.WantReadError:
                    pass
            while s.handshake_done:
                try:
                    chunk = s.conn.recv(65536)
                except SSL.WantReadError:
                    break
                except SSL.ZeroReturnError:
                    s.peer_closed = True
                    break
                if not chunk:
                    break
                plain += chunk
        except SSL.WantReadError:
            pass
        except SSL.Error as e:
            self.kill(frm, out)
            raise tls_reason(e)
        handshaking = not s.handshake_done
        s.plain.extend(plain)
        try:
            stanzas = split_stanzas(s.plain)
        except EngineError:
            self.kill(frm, out)
            raise
        self.flush_tls(frm, out)
        if was_handshaking and not handshaking:
            self.established(now, frm, out)
        k = self.certs.keys.get(bare(frm), {}).get(frm)
        trust = {"blind": "unverified", VERIFIED: "verified", UNTRUSTED: "untrusted"}[k["state"]] if k else "unverified"
        answers = []
        for text in stanzas:
            try:
                st = parse_stanza(text)
            except EngineError:
                self.kill(frm, out)
                raise
            a = self.tunnelled(frm, trust, st, out)
            if a is not None:
                answers.append((frm, a))
        if answers and frm in self.sessions:
            self.sessions[frm].outbox.extend(answers)
            self.flush_outbox(now, frm, out)
        if s.peer_closed:
            out.alert("xtls-close-notify", f"{frm} ended the TLS session (close_notify)")

    def tunnelled(self, frm: str, trust: str, st: ET.Element, out: Output) -> Optional[str]:
        ns, name = kit.local(st)
        kind = st.get("type")
        shown: List[Tuple[str, Any]] = []
        answer = None
        if ns != CLIENT or kind == "error":
            pass
        elif name == "message":
            body = st.find(f"{{{CLIENT}}}body")
            if body is not None:
                shown.append(("plaintext", "".join(body.itertext())))
            parts = [serialize(c) for c in st if kit.local(c) != (CLIENT, "body") and kit.local(c)[0] not in SERVER_PROCESSED]
            if parts:
                shown.append(("parts", ("message", parts)))
        elif name == "presence" and kind in (None, "unavailable"):
            parts = [serialize(c) for c in st if kit.local(c) != (CLIENT, "body") and kit.local(c)[0] not in SERVER_PROCESSED]
            if parts:
                shown.append(("parts", ("presence", parts)))
        elif name == "iq" and kind in ("get", "set"):
            parts = [serialize(c) for c in st]
            if parts:
                shown.append(("parts", ("iq", parts)))
            if st.get("id") is not None:
                answer = el("iq", {"type": "error", "id": st.get("id")},
                            [el("error", {"type": "cancel"}, [el("service-unavailable", xmlns=NS_STANZAS)])])
        if trust == "untrusted" and shown:
            out.alert("untrusted-device", f"{frm}'s certificate is not trusted")
        for kind_, x in shown:
            if kind_ == "plaintext":
                out.plaintext(frm, x, trust)
            else:
                out.parts(frm, x[0], x[1])
        return answer

    def on_close(self, frm: str, id_: str, out: Output) -> None:
        s = self.sessions.pop(frm, None)
        if s is None:
            out.send(self.iq_error(frm, id_, "item-not-found"))
            return
        out.send(self.iq_result(frm, id_, el("closed", xmlns=NS_XTLS)))
        if s.peer_closed:
            out.alert("xtls-closed", f"{frm} closed the tunnel")
        else:
            out.alert("xtls-unauthenticated-close",
                      f"{frm} closed the tunnel without a TLS close_notify (truncation or a forged <close/>)")
        if s.outbox:
            self.pending.setdefault(bare(frm), []).extend(s.outbox)

    def on_error(self, frm: str, id_: str, st: ET.Element, out: Output) -> None:
        condition = "undefined-condition"
        e = st.find(f"{{{CLIENT}}}error")
        if e is not None:
            for c in e:
                if kit.local(c)[0] == NS_STANZAS:
                    condition = kit.local(c)[1]
                    break
        s = self.sessions.get(frm)
        if s is None:
            return
        if s.phase == ("requested", id_):
            if condition == "conflict":
                return
            s = self.sessions.pop(frm)
            self.pending.setdefault(bare(frm), []).extend(s.outbox)
            if frm in self.devices.get(bare(frm), []):
                self.devices[bare(frm)].remove(frm)
            out.alert("xtls-refused", f"{frm} refused the tunnel ({condition})")
            return
        n = None
        if id_.startswith("xtls-") and id_[5:].isdigit():
            n = int(id_[5:])
        if n is None or n <= s.first_id:
            return
        s = self.sessions.pop(frm)
        if s.outbox:
            self.pending.setdefault(bare(frm), []).extend(s.outbox)
        out.alert("xtls-lost", f"{frm} answered {id_} with {condition}: the tunnel and its records are lost")

    def verify(self, now: int, peer: str, peer_says: List[str]) -> Output:
        out = Output()
        peer = bare(peer)
        if peer not in self.certs.verified:
            self.certs.verified.append(peer)
        devices = [(d, k["fingerprint"]) for d, k in sorted(self.certs.keys.get(peer, {}).items())]
        if not devices:
            out.alert("nothing-to-verify", f"no certificate of {peer} seen yet")
            out.verification(peer, "nothing-to-compare")
            return out
        result = "match"
        for d, fp in devices:
            fp_ok = fp in peer_says
            s = self.sessions.get(d)
            sas_ok = True
            if s is not None and s.sas is not None and s.fingerprint == fp:
                sas_ok = f"sas {self.me}: {s.sas}" in peer_says
            state = VERIFIED if fp_ok and sas_ok else UNTRUSTED
            self.certs.set_state(peer, d, state, out)
            if state == UNTRUSTED:
                result = "mismatch"
                out.alert("sas-mismatch" if fp_ok else "fingerprint-mismatch",
                          f"{peer}/{d.split('/', 1)[1]}: what the peer shows out of band is not what this tunnel saw")
                if d in self.sessions:
                    self.kill(d, out)
            else:
                self.flush_outbox(now, d, out)
        out.verification(peer, result)
        return out

    def out_of_band(self) -> List[str]:
        says = [self.fingerprint()] if self.cert_der else []
        says += [f"sas {p}: {s.sas}" for p, s in sorted(self.sessions.items()) if s.sas is not None]
        return says

    def ceremony(self, peer: str) -> Optional[Dict[str, Any]]:
        fp = self.fingerprint()
        if fp is None:
            return None
        sas = next((s.sas for d, s in sorted(self.sessions.items()) if bare(d) == bare(peer) and s.sas), None)
        return {"kind": "compare", "text": f"{fp} {sas}" if sas else fp}

    def identity_marks(self) -> List[Dict[str, str]]:
        if self.cert_der is None:
            return []
        return [{"name": "certificate", "hex": self.cert_der.hex()},
                {"name": "certificate fingerprint", "hex": self.fingerprint()}]

    def peer_marks(self, peer: str) -> List[Dict[str, str]]:
        marks = []
        for d, s in sorted(self.sessions.items()):
            if bare(d) == bare(peer) and s.conn is not None:
                c = s.conn.get_peer_certificate(as_cryptography=True)
                if c is not None:
                    marks.append({"name": "certificate", "hex": c.public_bytes(serialization.Encoding.DER).hex()})
        return marks

    # ---- theft ---------------------------------------------------------------------------------

    def state(self) -> str:
        return json.dumps({"me": self.me, "key_seed": self.key_seed, "cert": self.cert_der.hex() if self.cert_der else None,
                           "devices": self.devices, "next_inner": self.next_inner, "next_id": self.next_id,
                           "last_message": self.last_message, "certs": self.certs.to_json()})

    @classmethod
    def restore(cls, state: str) -> "Xtls":
        try:
            j = json.loads(state)
            e = cls()
            e.me, e.own, e.key_seed = j["me"], bare(j["me"]), j["key_seed"]
            e.cert_der = bytes.fromhex(j["cert"]) if j["cert"] else None
            e.devices = {k: list(v) for k, v in j["devices"].items()}
            e.next_inner, e.next_id, e.last_message = j["next_inner"], j["next_id"], dict(j["last_message"])
            e.certs = cls.book(j["certs"]["policy"])
            e.certs.load(j["certs"])
        except (ValueError, KeyError, TypeError, AttributeError) as x:
            raise EngineError("malformed", f"not a state of this adapter: {x}", "state") from x
        e.sessions, e.pending, e.left = {}, {}, Output()
        return e

    def steal(self, what: str) -> Tuple["Xtls", Optional[str]]:
        live = sorted(p for p, s in self.sessions.items() if s.conn is not None)
        if what == "full-state" and live:
            raise Unimplemented(f"a full-state copy of the live TLS tunnel(s) with {', '.join(live)}: an OpenSSL SSL "
                                "connection cannot be copied, and its randomness is OpenSSL's own, so the tunnel cannot "
                                "be replayed into a copy (identity-key and long-term-keys are served, and full-state "
                                "while no tunnel is live)")
        c = Xtls.restore(self.state())
        if what == "full-state":
            # No live tunnel: the rest of the state is copied whole (tunnels still being asked
            # for, what waits for a device).
            for p, s in self.sessions.items():
                cs = Session(s.phase, s.role, list(s.outbox), s.first_id)
                cs.method_seen = s.method_seen
                c.sessions[p] = cs
            c.pending = {k: list(v) for k, v in self.pending.items()}
            c.left = Output().extend(self.left)
            return c, None
        return c, c.state()

