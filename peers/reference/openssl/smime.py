"""RFC 3923 (S/MIME over XMPP) done by OpenSSL's `openssl cms`, `ca`, `req`, `verify` and
`x509` commands, speaking the wire format of peers/e2e/src/smime/ (read it first: this mirrors
its module docs).

- The scenario CA: its Ed25519 key is derived from `config.ca` exactly as pki.rs derives it
  (SHA-256 of "jabberwock smime ca key\\0" || seed, as an RFC 8410 PKCS#8 key), and OpenSSL
  (`req` + `ca -selfsign`) builds its certificate: the same name (O=Jabberwock, CN=Jabberwock
  S/MIME CA <first 4 public key bytes, hex>, UTF8String), the same key, valid 2000-01-01 to
  9999-12-31. Our devices check an issuer by name and Ed25519 signature, OpenSSL checks ours
  against this certificate: every honest device of either implementation trusts the other's.
- Device keys: RSA-2048 from `openssl genpkey`; the certificate is issued by `openssl ca` from
  the simulated time (`-startdate`, a year), with the `id-on-xmppAddr` subjectAltName.
- Sending: CPIM (cpim.rs's exact layout) → `openssl cms -sign -binary -md sha256` (the
  certificate included, OpenSSL's default signed attributes) → `openssl cms -encrypt -aes128
  -binary` to every recipient certificate → base64 in `<e2e xmlns='urn:ietf:params:xml:ns:xmpp-e2e'/>`.
- Receiving: `cms -decrypt` (→ `<bad-request/>` on failure) → `cms -verify -CAfile ca.pem
  -attime <now>` (→ `<not-acceptable/>`) → xmppAddr = sender → CPIM From / To → §6.9's
  timestamp checks → trust.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple
import xml.etree.ElementTree as ET

import jabberwock_adapter as kit
from jabberwock_adapter import CLIENT, EngineError, Output, el, serialize, Unimplemented
from common import (BLIND, UNTRUSTED, VERIFIED, OpensslFailed, TrustBook, asn1_time, bare, check_jid,
                    format_stamp, openssl, parse_stamp, workdir)

NS_E2E = "urn:ietf:params:xml:ns:xmpp-e2e"
NODE = "urn:xmpp:jabberwock:smime:certs:0"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_DELAY = "urn:xmpp:delay"
NS_PIDF = "urn:ietf:params:xml:ns:pidf"
SERVER_PROCESSED = {"urn:xmpp:hints", "urn:xmpp:sid:0", "http://jabber.org/protocol/address", "urn:xmpp:eme:0"}
WINDOW = 300_000
DEVICE_VALIDITY = 365 * 86400
SIGNED_DATA_OID = bytes.fromhex("06092a864886f70d010702")

CNF = """[ca]
default_ca = jw
[jw]
database = db/index.txt
new_certs_dir = db
serial = db/serial
default_md = default
policy = anything
unique_subject = no
email_in_dn = no
copy_extensions = none
preserve = yes
string_mask = utf8only
[anything]
organizationName = optional
commonName = optional
[req]
distinguished_name = dn
string_mask = utf8only
prompt = no
[dn]
O = Jabberwock
[ca_ext]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
"""


def subj(cn: str) -> str:
    return "/O=Jabberwock/CN=" + "".join(c if c.isalnum() or c == " " else "\\" + c for c in cn)


def pem_of(der: bytes) -> str:
    b = base64.b64encode(der).decode()
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(b[i:i + 64] for i in range(0, len(b), 64)) + "\n-----END CERTIFICATE-----\n"


def der_of_pem(pem: str) -> bytes:
    body = pem.split("-----BEGIN CERTIFICATE-----", 1)[1].split("-----END CERTIFICATE-----", 1)[0]
    return base64.b64decode("".join(body.split()))


def unb64(what: str, text: str) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise EngineError("malformed", f"not base64: {e}", what) from e


# --- the CA -------------------------------------------------------------------------------------

_CAS: Dict[bytes, str] = {}


def ca_dir(seed: bytes) -> str:
    """A directory holding ca.key and ca.pem for the CA of `seed` (made once per process)."""
    if seed in _CAS:
        return _CAS[seed]
    d = workdir()
    secret = hashlib.sha256(b"jabberwock smime ca key\0" + seed).digest()
    der = bytes.fromhex("302e020100300506032b657004220420") + secret
    with open(os.path.join(d, "ca.key"), "w") as f:
        f.write("-----BEGIN PRIVATE KEY-----\n" + base64.b64encode(der).decode() + "\n-----END PRIVATE KEY-----\n")
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write(CNF)
    os.makedirs(os.path.join(d, "db"))
    open(os.path.join(d, "db", "index.txt"), "w").close()
    with open(os.path.join(d, "db", "serial"), "w") as f:
        f.write("01\n")
    public = openssl(["pkey", "-in", "ca.key", "-pubout", "-outform", "DER"], d)[-32:]
    openssl(["req", "-new", "-key", "ca.key", "-utf8", "-config", "ca.cnf",
             "-subj", subj(f"Jabberwock S/MIME CA {public[:4].hex()}"), "-out", "ca.csr"], d)
    openssl(["ca", "-batch", "-config", "ca.cnf", "-selfsign", "-keyfile", "ca.key", "-in", "ca.csr",
             "-startdate", "20000101000000Z", "-enddate", "99991231235959Z", "-extensions", "ca_ext",
             "-notext", "-out", "ca.pem"], d)
    _CAS[seed] = d
    return d


_PARSED: Dict[bytes, Tuple[str, List[str]]] = {}


class Cert:
    """A certificate with what the engine uses of it (read by `openssl x509`)."""

    def __init__(self, der: bytes, d: str) -> None:
        self.der = der
        self.fingerprint = hashlib.sha256(der).hexdigest()
        if der in _PARSED:
            self.serial, self.addrs = _PARSED[der]
            return
        self._read(der, d)
        if len(_PARSED) < 4096:
            _PARSED[der] = (self.serial, self.addrs)

    def _read(self, der: bytes, d: str) -> None:
        self.der = der
        self.fingerprint = hashlib.sha256(der).hexdigest()
        try:
            text = openssl(["x509", "-inform", "DER", "-noout", "-serial", "-ext", "subjectAltName"], d, der).decode("utf-8", "replace")
        except OpensslFailed as e:
            raise EngineError("malformed", f"not a certificate: {e}", "certificate") from e
        m = re.search(r"serial=([0-9A-Fa-f]*)", text)
        s = (m.group(1) if m else "").lower()
        self.serial = s if len(s) % 2 == 0 else "0" + s
        self.addrs = re.findall(r"othername: ?XmppAddr::?([^,\s]+)", text)

    def pem(self) -> str:
        return pem_of(self.der)


def classify_verify(stderr: str) -> Tuple[str, str]:
    """The reason of a failed `openssl cms -verify` / `openssl verify`, from its message."""
    s = stderr.lower()
    if "certificate has expired" in s:
        return "certificate-expired", "the certificate's validity ended before now"
    if "not yet valid" in s:
        return "certificate-not-yet-valid", "the certificate's validity starts after now"
    if "signer certificate not found" in s or "no signer" in s:
        return "unknown-signer", "no certificate for the signer"
    if "verify error" in s or "verify certificate" in s or "unable to get" in s or "certificate signature failure" in s:
        detail = re.search(r"verify error:([^\n]*)", stderr, re.I)
        return "untrusted-certificate", "not issued by our CA: " + (detail.group(1) if detail else stderr.strip()[-200:])
    if "digest failure" in s or "content verify error" in s or "signature failure" in s or "verification failure" in s \
            or "bad signature" in s or "rsa routines" in s:
        return "bad-signature", "the signature does not verify"
    if "unsupported" in s or "unknown digest" in s or "unknown algorithm" in s:
        return "unsupported-algorithm", stderr.strip()[-200:]
    return "malformed", stderr.strip()[-300:]


def classify_decrypt(stderr: str) -> Tuple[str, str]:
    s = stderr.lower()
    if "no matching recipient" in s or "no recipient" in s:
        return "not-for-this-device", "no recipient info for our certificate"
    if "bad decrypt" in s:
        return "bad-padding", "CBC padding is invalid"
    if "decrypt error" in s or "rsa" in s or "padding" in s or "invalid key length" in s or "unwrap" in s:
        return "decryption-failed", "the content key does not unwrap"
    if "unsupported" in s or "unknown cipher" in s:
        return "unsupported-algorithm", stderr.strip()[-200:]
    if "type not enveloped" in s or "content type not" in s:
        return "malformed", "not an EnvelopedData"
    return "malformed", stderr.strip()[-300:]


def err(code: str, detail: str, what: Optional[str] = None) -> EngineError:
    return EngineError(code, detail, what)


# --- the engine ---------------------------------------------------------------------------------

class Smime(kit.Engine):
    def __init__(self) -> None:
        pass

    @classmethod
    def create(cls, me: str, config: Dict[str, Any], rng: kit.Stream) -> "Smime":
        e = cls()
        e.me = me
        e.own = bare(me)
        ca = config.get("ca")
        if ca:
            e.mode, e.ca_seed = "honest", ca
        else:
            e.mode, e.ca_seed = "impostor", rng.read(32).hex()
        serial = bytearray(rng.read(16))
        serial[0] = (serial[0] & 0x7F) | 0x01
        e.serial = bytes(serial).hex()
        e.dir = workdir()
        # OpenSSL's own RNG: not the seed (README, "Determinism").
        e.key_pem = openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], e.dir).decode()
        e.cert_der = None
        e.trust = e.new_book(config.get("trust", "btbv"))
        e.asked, e.read = [], []
        e.pending, e.waiting, e.outbox = [], [], []
        e.last_stamp = None
        e.newest = {}
        e.write_files()
        return e

    @staticmethod
    def new_book(policy: str) -> TrustBook:
        return TrustBook(policy, lambda o, s: f"certificate {s} of {o} changed",
                         lambda o, _d, fp: f"certificate {fp} of {o} is not what the peer shows", "certificate")

    def write_files(self) -> None:
        with open(os.path.join(self.dir, "key.pem"), "w") as f:
            f.write(self.key_pem)
        if self.cert_der is not None:
            with open(os.path.join(self.dir, "cert.pem"), "w") as f:
                f.write(pem_of(self.cert_der))

    @property
    def ca(self) -> str:
        return os.path.join(ca_dir(bytes.fromhex(self.ca_seed)), "ca.pem")

    def iq_namespaces(self) -> List[str]:
        return [NS_E2E]

    # ---- state -------------------------------------------------------------------------------

    def state(self) -> str:
        return json.dumps({k: getattr(self, k) for k in (
            "me", "own", "mode", "ca_seed", "serial", "key_pem", "asked", "read", "pending", "waiting",
            "last_stamp", "newest")} | {"cert": self.cert_der.hex() if self.cert_der else None,
                                        "trust": self.trust.to_json()})

    @classmethod
    def restore(cls, state: str) -> "Smime":
        try:
            j = json.loads(state)
            e = cls()
            for k in ("me", "own", "mode", "ca_seed", "serial", "key_pem", "asked", "read", "pending",
                      "waiting", "last_stamp", "newest"):
                setattr(e, k, j[k])
            e.cert_der = bytes.fromhex(j["cert"]) if j["cert"] else None
            e.trust = e.new_book(j["trust"]["policy"])
            e.trust.load(j["trust"])
        except (ValueError, KeyError, TypeError) as x:
            raise EngineError("malformed", f"not a state of this adapter: {x}", "state") from x
        e.outbox = []
        e.dir = workdir()
        e.write_files()
        return e

    def steal(self, what: str) -> Tuple["Smime", Optional[str]]:
        c = copy.copy(self)
        c.trust = self.new_book(self.trust.policy)
        c.trust.load(copy.deepcopy(self.trust.to_json()))
        c.asked, c.read, c.pending, c.waiting = list(self.asked), list(self.read), list(self.pending), list(self.waiting)
        c.newest, c.outbox = dict(self.newest), []
        if c.mode == "honest":
            c.mode = "stolen"
        if what != "full-state":
            c.pending, c.waiting, c.asked = [], [], []
        c.dir = workdir()
        c.write_files()
        return c, c.state()

    # ---- certificates ------------------------------------------------------------------------

    def enrol(self, now: int) -> Cert:
        if self.cert_der is None:
            d = ca_dir(bytes.fromhex(self.ca_seed))
            db = os.path.join(self.dir, "db")
            os.makedirs(db, exist_ok=True)
            open(os.path.join(db, "index.txt"), "w").close()
            with open(os.path.join(db, "serial"), "w") as f:
                f.write(self.serial + "\n")
            with open(os.path.join(self.dir, "ca.cnf"), "w") as f:
                f.write(CNF + "[dev_ext]\nbasicConstraints = critical,CA:FALSE\n"
                        "keyUsage = critical,digitalSignature,nonRepudiation,keyEncipherment\n"
                        "extendedKeyUsage = emailProtection\n"
                        f"subjectAltName = otherName:1.3.6.1.5.5.7.8.5;UTF8:{self.own}\n")
            openssl(["req", "-new", "-key", "key.pem", "-utf8", "-config", "ca.cnf", "-subj", subj(self.own),
                     "-out", "dev.csr"], self.dir)
            start = now // 1000
            openssl(["ca", "-batch", "-config", "ca.cnf", "-cert", os.path.join(d, "ca.pem"),
                     "-keyfile", os.path.join(d, "ca.key"), "-in", "dev.csr", "-startdate", asn1_time(start),
                     "-enddate", asn1_time(start + DEVICE_VALIDITY), "-extensions", "dev_ext", "-notext",
                     "-out", "cert.pem"], self.dir)
            with open(os.path.join(self.dir, "cert.pem")) as f:
                self.cert_der = der_of_pem(f.read())
        return self.mine()

    def mine(self) -> Cert:
        if not hasattr(self, "_mine") or self._mine.der != self.cert_der:
            self._mine = Cert(self.cert_der, self.dir)
        return self._mine

    def check_certificate(self, now: int, cert: Cert, owner: str) -> None:
        """Issued by the scenario CA, valid now (honest devices only), xmppAddr = owner."""
        if self.mode == "impostor":
            return
        with open(os.path.join(self.dir, "check.pem"), "w") as f:
            f.write(cert.pem())
        args = ["verify", "-CAfile", self.ca]
        args += ["-no_check_time"] if self.mode == "stolen" else ["-attime", str(now // 1000)]
        try:
            openssl(args + ["check.pem"], self.dir)
        except OpensslFailed as e:
            code, detail = classify_verify(e.stderr + "verify error")
            raise err(code, f"certificate {cert.fingerprint}: {detail}")
        if owner not in cert.addrs:
            raise err("certificate-mismatch", f"certificate names {cert.addrs}, the stanza comes from {owner}")

    def observe(self, owner: str, cert: Cert, out: Output) -> str:
        if self.cert_der is not None and cert.fingerprint == hashlib.sha256(self.cert_der).hexdigest():
            return VERIFIED
        return self.trust.observe(owner, cert.fingerprint, cert.fingerprint, cert.serial, cert.der.hex(), out)

    def certificates(self, owner: str, usable_only: bool) -> List[Cert]:
        return [Cert(bytes.fromhex(k["key"]), self.dir) for k in self.trust.of(owner)
                if not usable_only or k["state"] != UNTRUSTED]

    # ---- directory -----------------------------------------------------------------------------

    def fetch(self, owner: str, out: Output) -> None:
        if owner not in self.asked:
            self.asked.append(owner)
            out.fetch(owner, NODE)

    def refetch(self, owner: str, out: Output) -> None:
        if owner in self.asked:
            self.asked.remove(owner)
        self.fetch(owner, out)

    def read_or_fetch(self, owner: str, out: Output) -> bool:
        if owner in self.read:
            return True
        self.fetch(owner, out)
        return False

    def flush(self, now: int, out: Output) -> None:
        pending, self.pending = self.pending, []
        for to, body, parts in pending:
            try:
                s = self.seal_message(now, to, body, parts, out)
            except EngineError as e:
                out.alert("not-sent", f"to {to}: {e.detail}")
                continue
            if s is None:
                self.pending.append([to, body, parts])
            else:
                out.send(s)
        waiting, self.waiting = self.waiting, []
        for kind, to, x in waiting:
            try:
                s = self.seal_waiting(now, kind, to, x, out)
            except EngineError as e:
                out.alert("not-sent", f"to {to}: {e.detail}")
                continue
            if s is None:
                self.waiting.append([kind, to, x])
            else:
                out.send(s)

    # ---- sending -------------------------------------------------------------------------------

    def next_stamp(self, now: int) -> int:
        stamp = self.last_stamp + 1 if self.last_stamp is not None and now <= self.last_stamp else now
        self.last_stamp = stamp
        return stamp

    def recipients(self, now: int, to: str, out: Output) -> Optional[List[Cert]]:
        if not self.read_or_fetch(to, out):
            return None
        mine = self.enrol(now)
        theirs = [c for c in self.certificates(to, True) if c.fingerprint != mine.fingerprint]
        if not theirs and to != self.own:
            raise err("policy", f"no trusted certificate of {to}")
        rs = [mine]
        for c in theirs + self.certificates(self.own, True):
            if all(r.fingerprint != c.fingerprint for r in rs):
                rs.append(c)
        return rs

    def sign(self, content: bytes) -> bytes:
        return openssl(["cms", "-sign", "-binary", "-nodetach", "-md", "sha256", "-signer", "cert.pem",
                        "-inkey", "key.pem", "-outform", "DER"], self.dir, content)

    def envelope(self, signed: bytes, recipients: List[Cert]) -> bytes:
        names = []
        for i, c in enumerate(recipients):
            name = f"r{i}.pem"
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(c.pem())
            names.append(name)
        return openssl(["cms", "-encrypt", "-binary", "-aes128", "-outform", "DER"] + names, self.dir, signed)

    def e2e(self, object_: bytes, recipients: List[Cert]) -> str:
        return el("e2e", {}, [], base64.b64encode(self.envelope(self.sign(object_), recipients)).decode(), NS_E2E)

    def cpim(self, to: str, stamp: int, xml: str) -> bytes:
        return (f"Content-type: Message/CPIM\r\n\r\nFrom: <im:{self.own}>\r\nTo: <im:{to}>\r\n"
                f"DateTime: {format_stamp(stamp)}\r\n\r\nContent-type: application/xmpp+xml; charset=utf-8\r\n\r\n{xml}").encode()

    def seal_message(self, now: int, to: str, body: str, parts: List[str], out: Output) -> Optional[str]:
        rs = self.recipients(now, to, out)
        if rs is None:
            return None
        inner = el("message", {"from": self.me, "to": to, "type": "chat"}, [el("body", text=body)] + parts, xmlns=CLIENT)
        obj = self.cpim(to, self.next_stamp(now), inner)
        return el("message", {"to": to, "type": "chat"}, [self.e2e(obj, rs)], xmlns=CLIENT)

    def seal_waiting(self, now: int, kind: str, to: str, x: str, out: Output) -> Optional[str]:
        rs = self.recipients(now, bare(to), out)
        if rs is None:
            return None
        stamp = format_stamp(self.next_stamp(now))
        if kind == "presence":
            doc = el("presence", {"entity": f"pres:{self.own}"}, [el("tuple", {"id": "xmpp"}, [
                el("status", {}, [el("basic", text="open")]), el("note", text=x), el("timestamp", text=stamp)])],
                xmlns=NS_PIDF)
            return el("presence", {"to": to}, [self.e2e(doc.encode(), rs)], xmlns=CLIENT)
        inner = el("iq", {"type": "set", "from": self.me, "to": to}, [x], xmlns=CLIENT)
        obj = (f"Content-type: Message/CPIM\r\n\r\nFrom: <im:{self.own}>\r\nTo: <im:{bare(to)}>\r\n"
               f"DateTime: {stamp}\r\n\r\nContent-type: application/xmpp+xml; charset=utf-8\r\n\r\n{inner}").encode()
        return el("iq", {"type": "set", "to": to}, [self.e2e(obj, rs)], xmlns=CLIENT)

    def publish_action(self, out: Output) -> None:
        c = self.mine()
        out.publish(NODE, c.fingerprint, el("certificate", {}, [], base64.b64encode(c.der).decode(), NODE),
                    (("pubsub#max_items", "max"), ("pubsub#access_model", "open")))

    # ---- the calls -----------------------------------------------------------------------------

    def publish(self, now: int) -> Output:
        self.enrol(now)
        out = Output()
        self.publish_action(out)
        self.refetch(self.own, out)
        return out

    def going_offline(self, now: int) -> Output:
        return Output()

    def presence(self, now: int) -> List[str]:
        return []

    def send(self, now: int, to: str, body: str) -> Output:
        return self.send_message(now, to, body, [])

    def send_message(self, now: int, to: str, body: str, parts: List[str]) -> Output:
        self.enrol(now)
        to = bare(check_jid(to, "to"))
        for p in parts:
            kit.parse(p)
        self.pending.append([to, body, list(parts)])
        out = Output()
        self.flush(now, out)
        return out

    def send_presence(self, now: int, to: str, status: str) -> Output:
        self.enrol(now)
        self.waiting.append(["presence", check_jid(to, "to"), status or ""])
        out = Output()
        self.flush(now, out)
        return out

    def send_iq(self, now: int, to: str, payload: str) -> Output:
        self.enrol(now)
        kit.parse(payload)
        self.waiting.append(["iq", check_jid(to, "to"), payload])
        out = Output()
        self.flush(now, out)
        return out

    def drain(self, now: int) -> Output:
        out = Output()
        for s in self.outbox:
            out.send(s)
        self.outbox = []
        return out

    def fetch_failed(self, now: int, owner: str, node: str, condition: str) -> Output:
        out = Output()
        if node != NODE:
            return out
        owner = bare(owner or "")
        if owner in self.asked:
            self.asked.remove(owner)
        if owner not in self.read:
            self.read.append(owner)
        if owner != self.own:
            out.alert("no-certificate", f"certificates of {owner} could not be fetched ({condition})")
        self.flush(now, out)
        return out

    def verify(self, now: int, peer: str, peer_says: List[str]) -> Output:
        return self.trust.verify(bare(peer), lambda fp: fp in peer_says)

    def out_of_band(self) -> List[str]:
        return [self.mine().fingerprint] if self.cert_der is not None else []

    def ceremony(self, peer: str) -> Optional[Dict[str, Any]]:
        oob = self.out_of_band()
        return {"kind": "compare", "text": oob[0]} if oob else None

    def identity_marks(self) -> List[Dict[str, str]]:
        if self.cert_der is None:
            return []
        return [{"name": "certificate", "hex": self.cert_der.hex()},
                {"name": "certificate fingerprint", "hex": self.mine().fingerprint}]

    def peer_marks(self, peer: str) -> List[Dict[str, str]]:
        return []

    def owns_part(self, part: str) -> bool:
        return False

    def message_id(self, to: str) -> Optional[str]:
        return None

    def forge(self, now: int, frm: str, body: str) -> Optional[str]:
        # Every message is signed with the sender's RSA key: the recipient cannot make one.
        return None

    def reencrypt(self, now: int, stanza: str, body: str) -> Optional[str]:
        return None

    # ---- receiving -----------------------------------------------------------------------------

    def receive(self, now: int, stanza: str) -> Output:
        s = kit.parse(stanza)
        out = Output()
        ns, name = kit.local(s)
        pubsub = s.find(f"{{{NS_PUBSUB}}}pubsub")
        event = s.find(f"{{{NS_EVENT}}}event")
        items = None
        if pubsub is not None and name == "iq" and s.get("type") == "result" and ns == CLIENT:
            items, complete = pubsub.find(f"{{{NS_PUBSUB}}}items"), True
        if items is None and event is not None and name == "message" and ns == CLIENT:
            items, complete = event.find(f"{{{NS_EVENT}}}items"), False
        if items is not None:
            self.items(now, s, items, complete, out)
        elif pubsub is None and event is None:
            self.message(now, s, out)
        return out

    def items(self, now: int, s: ET.Element, items: ET.Element, complete: bool, out: Output) -> None:
        if items.get("node") != NODE:
            return
        frm = s.get("from")
        owner = self.own if frm is None else bare(frm)
        if frm is not None:
            try:
                check_jid(frm)
            except EngineError:
                return
        if complete:
            if owner in self.asked:
                self.asked.remove(owner)
            if owner not in self.read:
                self.read.append(owner)
        for item in items:
            if kit.local(item)[1] != "item":
                continue
            payload = item.find(f"{{{NODE}}}certificate")
            if payload is None:
                continue
            try:
                cert = Cert(unb64("certificate", payload.text or ""), self.dir)
                self.check_certificate(now, cert, owner)
                self.observe(owner, cert, out)
            except EngineError as e:
                out.alert(e.code, f"certificate item {item.get('id')!r} of {owner}: {e.detail}")
        self.flush(now, out)

    def error_stanza(self, s: ET.Element, frm: str, stage: str) -> str:
        cond = "bad-request" if stage == "decrypt" else "not-acceptable"
        kind = "iq" if kit.local(s)[1] == "iq" else "message"
        return el(kind, {"to": frm, "type": "error", "id": s.get("id")},
                  [el("error", {"type": "modify"}, [el(cond, xmlns=NS_STANZAS)])], xmlns=CLIENT)

    def message(self, now: int, s: ET.Element, out: Output) -> None:
        ns, name = kit.local(s)
        if name == "iq":
            return self.iq(now, s, out)
        if name != "message":
            return
        frm = check_jid(s.get("from"))
        typ = s.get("type")
        if typ in ("groupchat", "headline"):
            return
        if typ == "error":
            out.alert("peer-error", f"{frm} returned <{self.condition(s)}/> for a message")
            return
        e2e = s.find(f"{{{NS_E2E}}}e2e")
        if e2e is not None:
            self.receive_e2e_or_answer(now, frm, s, e2e, out)
            return
        body = s.find(f"{{{CLIENT}}}body")
        if body is not None:
            out.alert("unencrypted", f"{frm} sent a message without S/MIME")
            out.plaintext(frm, "".join(body.itertext()), "unencrypted")

    @staticmethod
    def condition(s: ET.Element) -> str:
        e = s.find(f"{{{CLIENT}}}error")
        if e is not None:
            for c in e:
                if kit.local(c)[0] == NS_STANZAS:
                    return kit.local(c)[1]
        return "undefined-condition"

    def receive_e2e_or_answer(self, now: int, frm: str, s: ET.Element, e2e: ET.Element, out: Output) -> None:
        try:
            self.receive_e2e(now, frm, s, e2e, out)
        except Staged as x:
            if self.mode == "honest":
                self.outbox.append(self.error_stanza(s, frm, x.stage))
            raise x.error

    def iq(self, now: int, s: ET.Element, out: Output) -> None:
        frm = check_jid(s.get("from"))
        typ = s.get("type")
        if typ == "result":
            return
        if typ == "error":
            out.alert("peer-error", f"{frm} returned <{self.condition(s)}/> for an iq")
            return
        if typ in ("set", "get"):
            e2e = s.find(f"{{{NS_E2E}}}e2e")
            if e2e is None:
                return
            self.receive_e2e_or_answer(now, frm, s, e2e, out)

    def open_e2e(self, now: int, sender: str, e2e: ET.Element) -> Tuple[Cert, bytes]:
        """Decrypt, verify, check the signer's certificate: (signer, signed content)."""
        try:
            mine = self.enrol(now)
            der = unb64("e2e", e2e.text or "")
            try:
                inner = openssl(["cms", "-decrypt", "-binary", "-inform", "DER", "-recip", "cert.pem",
                                 "-inkey", "key.pem"], self.dir, der)
            except OpensslFailed as x:
                code, detail = classify_decrypt(x.stderr)
                raise err(code, detail, "enveloped-data" if code == "malformed" else None)
        except EngineError as x:
            raise Staged("decrypt", x)
        try:
            known = self.certificates(sender, False)
            with open(os.path.join(self.dir, "known.pem"), "w") as f:
                f.write("".join(c.pem() for c in known))
            args = ["cms", "-verify", "-binary", "-inform", "DER", "-CAfile", self.ca, "-signer", "signer.pem"]
            if known:
                args += ["-certfile", "known.pem"]
            if self.mode == "impostor":
                args += ["-noverify"]
            elif self.mode == "stolen":
                args += ["-no_check_time"]
            else:
                args += ["-attime", str(now // 1000)]
            if os.path.exists(os.path.join(self.dir, "signer.pem")):
                os.remove(os.path.join(self.dir, "signer.pem"))
            try:
                content = openssl(args, self.dir, inner)
            except OpensslFailed as x:
                code, detail = classify_verify(x.stderr)
                raise err(code, detail, "signed-data" if code == "malformed" else None)
            with open(os.path.join(self.dir, "signer.pem")) as f:
                signer = Cert(der_of_pem(f.read()), self.dir)
            if self.mode != "impostor" and sender not in signer.addrs:
                raise err("certificate-mismatch", f"certificate names {signer.addrs}, the stanza comes from {sender}")
            return signer, content
        except EngineError as x:
            raise Staged("verify", x)

    def admit(self, now: int, s: ET.Element, sender: str, signer: Cert, date_time: str, out: Output) -> str:
        sent = parse_stamp(date_time.strip())
        if sent is None:
            raise err("malformed", date_time, "timestamp")
        if self.mode == "honest":
            nows = format_stamp(now)
            if sent + WINDOW < now:
                server = self.me.split("@", 1)[-1].split("/", 1)[0]
                stamp = None
                for d in s.findall(f"{{{NS_DELAY}}}delay"):
                    if d.get("from") == server:
                        stamp = d.get("stamp")
                        break
                held = (f"{server} says it stored the message offline at {stamp} (its claim, not authenticated)"
                        if stamp is not None else "no delay stamp from our server: a replay, or a message held on the way")
                out.alert("timestamp-too-old", f"old timestamp (RFC 3923 §6.9): sent {date_time}, now {nows}; {held}")
            elif sent > now + WINDOW:
                out.alert("timestamp-in-future", f"future timestamp (RFC 3923 §6.9): sent {date_time}, now {nows}")
            elif signer.fingerprint in self.newest and sent <= self.newest[signer.fingerprint]:
                out.alert("timestamp-decreasing", f"decreasing timestamp (RFC 3923 §6.9): sent {date_time}, not after "
                          f"{format_stamp(self.newest[signer.fingerprint])} already received from the same certificate")
            else:
                self.newest[signer.fingerprint] = sent
        state = self.observe(sender, signer, out)
        if state == UNTRUSTED:
            out.alert("untrusted-key", f"{sender} signed with a certificate the user does not trust")
        return {BLIND: "unverified", VERIFIED: "verified", UNTRUSTED: "untrusted"}[state]

    def receive_e2e(self, now: int, frm: str, s: ET.Element, e2e: ET.Element, out: Output) -> None:
        sender = bare(frm)
        signer, content = self.open_e2e(now, sender, e2e)
        try:
            try:
                text = content.decode("utf-8")
            except UnicodeDecodeError as x:
                raise err("malformed", str(x), "cpim")
            cpim = parse_cpim(text)
            if self.mode != "impostor":
                if cpim["from"] != sender:
                    raise err("cpim-from-mismatch", f"CPIM From {cpim['from']}, stanza from {sender}")
                if sender != self.own and self.own not in cpim["to"]:
                    raise err("cpim-to-mismatch", f"CPIM To {cpim['to']}, we are {self.own}")
            if parse_stamp(cpim["date_time"]) is None:
                raise err("malformed", cpim["date_time"], "CPIM DateTime")
            xml = parse_xmpp_xml(cpim["xml"])
            xns, xname = kit.local(xml)
            if xname != kit.local(s)[1] or xns not in (CLIENT, ""):
                raise err("malformed", f"a secured <{xname}/> in a <{kit.local(s)[1]}/>", "xmpp+xml")
            trust = self.admit(now, s, sender, signer, cpim["date_time"], out)
        except EngineError as x:
            raise Staged("verify", x)
        if xname == "iq":
            out.parts(frm, "iq", [serialize(c) for c in xml])
            out.send(el("iq", {"type": "result", "to": frm, "id": s.get("id")}, xmlns=CLIENT))
            return
        body = ""
        for c in xml:
            if kit.local(c)[1] == "body" and kit.local(c)[0] in (CLIENT, ""):
                body = "".join(c.itertext())
                break
        out.plaintext(frm, body, trust)
        parts = [serialize(c) for c in xml if not (kit.local(c) in ((CLIENT, "body"), ("", "body")))
                 and kit.local(c)[0] not in SERVER_PROCESSED]
        if parts:
            out.parts(frm, "message", parts)

    def receive_presence(self, now: int, stanza: str) -> Output:
        s = kit.parse(stanza)
        out = Output()
        e2e = s.find(f"{{{NS_E2E}}}e2e")
        if e2e is None or (s.get("type") not in (None, "available")):
            return out
        frm = check_jid(s.get("from"))
        sender = bare(frm)
        try:
            signer, content = self.open_e2e(now, sender, e2e)
        except Staged as x:
            raise x.error
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as x:
            raise err("malformed", str(x), "pidf")
        entity, notes, timestamp = parse_pidf(text)
        if self.mode != "impostor" and entity != sender:
            raise err("pidf-entity-mismatch", f"PIDF entity {entity}, stanza from {sender}")
        self.admit(now, s, sender, signer, timestamp, out)
        if notes:
            out.parts(frm, "presence", [el("status", text=n, xmlns=CLIENT) for n in notes])
        return out

    def forward(self, now: int, recorded: str, to: str, body: str) -> Optional[Output]:
        s = kit.parse(recorded)
        e2e = s.find(f"{{{NS_E2E}}}e2e")
        if e2e is None:
            raise err("missing-element", "no e2e", "e2e")
        self.enrol(now)
        der = unb64("e2e", e2e.text or "")
        try:
            signed = openssl(["cms", "-decrypt", "-binary", "-inform", "DER", "-recip", "cert.pem",
                              "-inkey", "key.pem"], self.dir, der)
        except OpensslFailed as x:
            code, detail = classify_decrypt(x.stderr)
            raise err(code, detail, "enveloped-data" if code == "malformed" else None)
        # Only a SignedData is worth forwarding: checked by OpenSSL's parser, left untouched.
        try:
            openssl(["cms", "-cmsout", "-inform", "DER", "-outform", "DER"], self.dir, signed)
        except OpensslFailed as x:
            raise err("malformed", f"not CMS: {x}", "signed-data")
        if SIGNED_DATA_OID not in signed[:20]:
            raise err("malformed", "not a SignedData", "signed-data")
        to = bare(check_jid(to, "to"))
        if to not in self.read:
            out = Output()
            self.refetch(to, out)
            return out
        mine = self.mine()
        theirs = [c for c in self.certificates(to, False) if c.fingerprint != mine.fingerprint]
        if not theirs:
            raise err("policy", f"no certificate of {to} to forward to")
        env = self.envelope(signed, theirs)
        return Output().send(el("message", {"to": to, "type": "chat"},
                                [el("e2e", text=base64.b64encode(env).decode(), xmlns=NS_E2E)], xmlns=CLIENT))


class Staged(Exception):
    """A receive failure with its RFC 3923 §7 stage (decrypt → bad-request, else not-acceptable)."""

    def __init__(self, stage: str, error: EngineError) -> None:
        super().__init__(error.detail)
        self.stage, self.error = stage, error


# --- CPIM, PIDF, application/xmpp+xml (text formats; cpim.rs, pidf.rs, mod.rs) --------------------

def _block(text: str) -> Tuple[List[Tuple[str, str]], str]:
    headers = []
    rest = text
    while True:
        i = rest.find("\n")
        if i < 0:
            raise err("malformed", "header block without an empty line after it", "cpim")
        line, rest = rest[:i], rest[i + 1:]
        if line.endswith("\r"):
            line = line[:-1]
        if not line:
            return headers, rest
        if ":" not in line:
            raise err("malformed", f"header line `{line}`", "cpim")
        n, v = line.split(":", 1)
        headers.append((n.strip().lower(), v.strip()))


def _address(value: str) -> str:
    i = value.rfind("<")
    if i < 0 or not value.endswith(">"):
        raise err("malformed", f"address `{value}`", "cpim")
    uri = value[i + 1:-1]
    for p in ("im:", "xmpp:"):
        if uri.startswith(p):
            a = uri[len(p):]
            check_jid(a, "cpim")
            if "/" in a:
                raise err("malformed", f"address `{a}`", "cpim")
            return a
    raise err("malformed", f"URI `{uri}` is neither im: nor xmpp:", "cpim")


def _ctype(headers: List[Tuple[str, str]]) -> Optional[str]:
    for n, v in headers:
        if n == "content-type":
            return v.split(";")[0].strip().lower()
    return None


def parse_cpim(text: str) -> Dict[str, Any]:
    headers, rest = _block(text)
    if _ctype(headers) == "message/cpim":
        headers, rest = _block(rest)
    frm, to, dt = None, [], None
    for n, v in headers:
        if n == "from":
            if frm is not None:
                raise err("malformed", "two From headers", "cpim")
            frm = _address(v)
        elif n == "to":
            to.append(_address(v))
        elif n == "datetime":
            if dt is not None:
                raise err("malformed", "two DateTime headers", "cpim")
            dt = v
    inner, xml = _block(rest)
    if _ctype(inner) != "application/xmpp+xml":
        raise err("malformed", f"encapsulated content type {_ctype(inner)!r}", "cpim")
    if frm is None:
        raise err("missing-element", "no CPIM From", "CPIM From")
    if dt is None:
        raise err("missing-element", "no CPIM DateTime", "CPIM DateTime")
    return {"from": frm, "to": to, "date_time": dt, "xml": xml}


def _parse(text: str, what: str) -> ET.Element:
    try:
        return kit.parse(text)
    except EngineError as e:
        raise err("malformed", e.detail, what)


def parse_xmpp_xml(xml: str) -> ET.Element:
    t = xml.strip()
    if t.startswith("<?xml") and "?>" in t:
        t = t.split("?>", 1)[1].lstrip()
    try:
        root = kit.parse(t)
    except EngineError as first:
        for n in ("message", "iq", "presence", "xmpp"):
            if t.startswith("<" + n) and t[1 + len(n):2 + len(n)] in (" ", ">", "/", "\n", "\t", "\r"):
                root = _parse(f"<{n} xmlns='{CLIENT}'{t[1 + len(n):]}", "xmpp+xml")
                break
        else:
            raise err("malformed", first.detail, "xmpp+xml")
    if kit.local(root)[1] != "xmpp":
        return root
    kids = list(root)
    if len(kids) != 1:
        raise err("malformed", "<xmpp/> must hold one and only one stanza", "xmpp+xml")
    return kids[0]


def parse_pidf(text: str) -> Tuple[str, List[str], str]:
    root = _parse(text.strip(), "pidf")
    if root.tag != f"{{{NS_PIDF}}}presence":
        raise err("malformed", f"the document element is {root.tag}", "pidf")
    entity = root.get("entity")
    if entity is None:
        raise err("missing-element", "no PIDF entity", "PIDF entity")
    for scheme in ("pres:", "xmpp:", "im:"):
        if entity.startswith(scheme):
            address = entity[len(scheme):]
            break
    else:
        raise err("malformed", f"entity `{entity}` is not a pres: URI", "pidf")
    check_jid(address, "pidf")
    tuples = root.findall(f"{{{NS_PIDF}}}tuple")
    if not tuples:
        raise err("missing-element", "no tuple", "tuple")
    if len(tuples) > 1:
        raise err("malformed", "more than one <tuple/>", "pidf")
    ts = tuples[0].findall(f"{{{NS_PIDF}}}timestamp")
    if not ts:
        raise err("missing-element", "no timestamp", "timestamp")
    if len(ts) > 1:
        raise err("malformed", "more than one <timestamp/>", "pidf")
    notes = ["".join(n.itertext()) for n in tuples[0].findall(f"{{{NS_PIDF}}}note")]
    return bare(address), notes, "".join(ts[0].itertext())
