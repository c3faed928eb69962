"""The xmlsec1 adapter: Jabberwock's XML Security binding (`xmlsec`, urn:xmpp:jabberwock:xmlsec:0,
specified in peers/e2e/src/xmlsec/mod.rs) with every signature, verification, encryption and
decryption done by the xmlsec1 command (libxmlsec1 over OpenSSL). Python keeps the state the
library does not (keys fetched from PEP, trust, the replay cache, messages waiting for keys),
builds the templates, and applies the binding's structural rules (what defeats signature
wrapping, the statements to/from/time/Id) to the documents xmlsec1 decrypted and verified.

Run: `python3 adapter.py xmlsec` (docs/engine-protocol.md). See README.md.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from xml.sax.saxutils import escape, quoteattr

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "kit"))
sys.path.insert(0, str(HERE))
import jabberwock_adapter as kit  # noqa: E402  (first: it seeds Python's randomness)
from jabberwock_adapter import CLIENT, EngineError, Output, el  # noqa: E402
import xml.etree.ElementTree as ET  # noqa: E402

import seeded_rsa  # noqa: E402
import xmlsec1_tool as tool  # noqa: E402

NS = "urn:xmpp:jabberwock:xmlsec:0"
NODE_KEYS = "urn:xmpp:jabberwock:xmlsec:keys:0"
NS_DS = "http://www.w3.org/2000/09/xmldsig#"
NS_XENC = "http://www.w3.org/2001/04/xmlenc#"
NS_XENC11 = "http://www.w3.org/2009/xmlenc11#"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_EME = "urn:xmpp:eme:0"
NS_HINTS = "urn:xmpp:hints"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_EXC = "http://www.w3.org/2001/10/xml-exc-c14n#"
XML_ID = "{http://www.w3.org/XML/1998/namespace}id"
FALLBACK = ("This message is signed and encrypted with XML Signature and XML Encryption "
            "(urn:xmpp:jabberwock:xmlsec:0).")

EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
DIGEST_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
TYPE_ELEMENT = "http://www.w3.org/2001/04/xmlenc#Element"
AES128_CBC = "http://www.w3.org/2001/04/xmlenc#aes128-cbc"
AES128_GCM = "http://www.w3.org/2009/xmlenc11#aes128-gcm"
RSA_OAEP_MGF1P = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
CIPHERS = {AES128_GCM: "gcm", AES128_CBC: "cbc"}
CIPHER_URI = {"gcm": AES128_GCM, "cbc": AES128_CBC}
SERVER_PROCESSED = {NS_HINTS, "urn:xmpp:sid:0", "http://jabber.org/protocol/address", NS_EME}

MIN_BITS, MAX_BITS = 2048, 4096
MAX_FUTURE_MS = 300 * 1000
MAX_AGE_MS = 7 * 24 * 3600 * 1000
MAX_KEYS = 32
MAX_ENCRYPTED_KEYS = 2 * MAX_KEYS
HELD_TOTAL = 32
MAX_ID_LEN = 64
MAX_SEEN_PER_SENDER = 4096
MAX_DEPTH = 256
MAX_PART_DEPTH = 64

BLIND, VERIFIED, UNTRUSTED = "blind", "verified", "untrusted"
SHOWN = {BLIND: "unverified", VERIFIED: "verified", UNTRUSTED: "untrusted"}


# --- small helpers ------------------------------------------------------------------------------

def rejected(reason: str, detail: str) -> EngineError:
    return EngineError(reason, detail)


def missing(what: str) -> EngineError:
    return EngineError("missing-element", "", what)


def malformed(what: str, detail: str) -> EngineError:
    return EngineError("malformed", detail, what)


def policy(detail: str) -> EngineError:
    return EngineError("policy", detail)


def parse_jid(s: Any) -> Tuple[str, str]:
    """(bare, full) of a JID, lower-cased local part and domain; an error if it does not parse."""
    if not isinstance(s, str) or not s or len(s) > 3071 or any(c.isspace() or c in "\"&'<>" for c in s.split("/", 1)[0]):
        raise ValueError(f"`{s}` is not a JID")
    bare, slash, res = s.partition("/")
    if slash and not res:
        raise ValueError(f"`{s}` has an empty resource")
    if bare.count("@") > 1:
        raise ValueError(f"`{s}` has more than one @")
    local, at, domain = bare.rpartition("@")
    if (at and not local) or not domain or domain.startswith(".") or domain.endswith(".."):
        raise ValueError(f"`{s}` is not a JID")
    bare = (local.lower() + "@" if at else "") + domain.lower().rstrip(".")
    return bare, bare + (slash + res if slash else "")


def sender(stanza: ET.Element) -> Tuple[str, str]:
    """The stanza's `from` as (bare, as written): missing or unparseable, the stanza is refused."""
    frm = stanza.get("from")
    if frm is None:
        raise missing("from")
    try:
        bare, _ = parse_jid(frm)
    except ValueError as e:
        raise malformed("from", str(e))
    return bare, frm


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(what: str, text: str) -> bytes:
    """base64Binary, wrapped or not (XML white space dropped)."""
    try:
        return base64.b64decode(re.sub(r"[ \t\r\n]", "", text or ""), validate=True)
    except (binascii.Error, ValueError) as e:
        raise malformed(what, f"not base64: {e}")


def int_bytes(n: int) -> bytes:
    return n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")


def format_stamp(ms: int) -> str:
    t = datetime.fromtimestamp(ms // 1000, tz=timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


STAMP = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z$")


def parse_stamp(s: str) -> Optional[int]:
    """XEP-0082 DateTime in UTC, strictly; milliseconds since the epoch."""
    m = STAMP.match(s)
    if not m:
        return None
    y, mo, d, h, mi, sec = (int(g) for g in m.groups()[:6])
    if not 1970 <= y <= 9999:
        return None
    try:
        t = datetime(y, mo, d, h, mi, sec, tzinfo=timezone.utc)
    except ValueError:
        return None
    frac = m.group(7) or "0"
    return int(t.timestamp()) * 1000 + int((frac + "000")[:3])


def text_of(e: ET.Element, what: str) -> str:
    """All character data directly inside `e`; an element child is an error."""
    if len(e):
        raise malformed(what, "an element inside a text field")
    return e.text or ""


def only_child(parent: ET.Element, ns: str, name: str) -> ET.Element:
    found = [c for c in parent if c.tag == f"{{{ns}}}{name}"]
    if not found:
        raise missing(name)
    if len(found) > 1:
        raise malformed(name, "appears more than once")
    return found[0]


def depth(e: ET.Element) -> int:
    best, stack = 0, [(e, 1)]
    while stack:
        n, d = stack.pop()
        best = max(best, d)
        stack.extend((c, d + 1) for c in n)
    return best


def parse_document(text: str, what: str) -> ET.Element:
    if re.search(r"<!(DOCTYPE|ENTITY)", text):
        raise malformed(what, "a DTD in the document")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise malformed(what, f"not XML: {e}")
    if depth(root) > MAX_DEPTH:
        raise malformed(what, f"nested deeper than {MAX_DEPTH}")
    return root


# --- the engine ---------------------------------------------------------------------------------

class Xmlsec1(kit.Engine):
    """One device's state. Everything is plain data (deep-copied by `steal`, JSON for `state`)."""

    def __init__(self) -> None:
        self.me = ""
        self.private_pem = ""
        self.n = 0
        self.e = seeded_rsa.E
        self.fpr = ""
        self.cipher = "gcm"
        self.policy = "btbv"
        # owner -> fingerprint -> {"n", "e", "state", "active", "since"}
        self.keys: Dict[str, Dict[str, Dict[str, Any]]] = {}
        self.verified: List[str] = []
        self.next = 0
        self.asked: List[List[str]] = []
        self.read: List[List[str]] = []
        self.pending: List[Dict[str, Any]] = []   # {"to", "body", "parts"}
        self.held: List[str] = []                 # stanzas waiting for their sender's keys
        self.seen: Dict[str, Dict[str, Any]] = {}  # sender -> {"ids": {id: time}, "floor": ms|None}
        self.stolen = False
        self.waiting: List[Dict[str, Any]] = []   # {"kind": presence|iq, "to", "status"|"payload"}
        self.outbox: List[str] = []

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def create(cls, me: str, config: Dict[str, Any], rng: kit.Stream) -> "Xmlsec1":
        e = cls()
        e.me = me
        key = seeded_rsa.generate(rng)
        e.private_pem = seeded_rsa.private_pem(key)
        e.n = key.public_key().public_numbers().n
        e.fpr = seeded_rsa.fingerprint(e.n, e.e)
        e.policy = config.get("trust") or "btbv"
        if e.policy not in ("btbv", "tofu", "manual"):
            raise policy(f"unknown trust policy `{e.policy}`")
        options = config.get("options") or {}
        e.cipher = "cbc" if options.get("cipher") == "cbc" else "gcm"
        return e

    def own(self) -> str:
        return parse_jid(self.me)[0]

    def iq_namespaces(self) -> List[str]:
        return [NS_XENC]

    def state(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def restore(cls, state: str) -> "Xmlsec1":
        try:
            data = json.loads(state)
            e = cls()
            for k in e.__dict__:
                setattr(e, k, data[k])
        except (ValueError, KeyError, TypeError) as err:
            raise malformed("state", f"not a state this adapter wrote: {err}")
        return e

    # -- directory -------------------------------------------------------------------------------

    def is_read(self, owner: str) -> bool:
        return [owner, NODE_KEYS] in self.read

    def mark_read(self, owner: str) -> None:
        if not self.is_read(owner):
            self.read.append([owner, NODE_KEYS])

    def unread(self, owner: str) -> None:
        if self.is_read(owner):
            self.read.remove([owner, NODE_KEYS])

    def answered(self, owner: str) -> None:
        if [owner, NODE_KEYS] in self.asked:
            self.asked.remove([owner, NODE_KEYS])

    def fetch(self, owner: str, out: Output) -> None:
        if [owner, NODE_KEYS] not in self.asked:
            self.asked.append([owner, NODE_KEYS])
            out.fetch(owner, NODE_KEYS)

    def refetch(self, owner: str, out: Output) -> None:
        self.answered(owner)
        self.fetch(owner, out)

    def read_or_fetch(self, owner: str, out: Output) -> bool:
        if self.is_read(owner):
            return True
        self.fetch(owner, out)
        return False

    def hold(self, stanza: str, frm: Optional[str]) -> bool:
        if frm is None or len(self.held) >= HELD_TOTAL:
            return False
        self.held.append(stanza)
        return True

    def release(self, owner: str) -> List[Tuple[str, str]]:
        released, rest = [], []
        for s in self.held:
            frm = kit.parse(s).get("from")
            try:
                bare = parse_jid(frm)[0] if frm else None
            except ValueError:
                bare = None
            (released if bare == owner else rest).append((frm, s))
        self.held = [s for _, s in rest]
        return released

    def retry(self, now: int, owner: str, out: Output) -> None:
        for frm, stanza in self.release(owner):
            try:
                self.receive_sealed(now, kit.parse(stanza), stanza, False, out)
            except EngineError as err:
                out.rejected(frm, err)

    # -- keys and trust --------------------------------------------------------------------------

    def trust_event(self, owner: str, fpr: str, out: Output) -> None:
        out.trust_changed(owner, fpr, fpr, SHOWN[self.keys[owner][fpr]["state"]])

    def first_sight(self, owner: str) -> str:
        if self.policy == "btbv":
            return UNTRUSTED if owner in self.verified else BLIND
        if self.policy == "tofu":
            return BLIND
        return UNTRUSTED

    def victim(self, owner: str) -> Optional[str]:
        held = self.keys.get(owner, {})
        inactive = sorted((k["state"] == VERIFIED, k["since"], f) for f, k in held.items() if not k["active"])
        if inactive:
            return inactive[0][2]
        blind = sorted((k["since"], f) for f, k in held.items() if k["state"] == BLIND)
        return blind[0][1] if blind else None

    def learn(self, owner: str, keys: List[Tuple[str, int, int]], complete: bool, out: Output) -> None:
        held = self.keys.setdefault(owner, {})
        if complete:
            self.mark_read(owner)
            for k in held.values():
                k["active"] = False
        new = []
        for fpr, n, e in keys:
            if fpr == self.fpr:
                continue
            if fpr in held:
                held[fpr]["active"] = True
            else:
                new.append((fpr, n, e))
        for fpr, n, e in new:
            if fpr in held:
                continue
            if len(held) >= MAX_KEYS:
                v = self.victim(owner)
                if v is None:
                    out.alert("bad-key-item", f"{owner} already has {MAX_KEYS} active, verified or untrusted keys; key {fpr} ignored")
                    continue
                del held[v]
            held[fpr] = {"n": n, "e": e, "state": self.first_sight(owner), "active": True, "since": self.next}
            self.next += 1
            self.trust_event(owner, fpr, out)

    def active(self, owner: str, usable=lambda state: True) -> List[Tuple[str, str, Dict[str, Any]]]:
        return [(owner, f, k) for f, k in sorted(self.keys.get(owner, {}).items()) if k["active"] and usable(k["state"])]

    def recipients(self, to: str) -> List[Tuple[str, str, Dict[str, Any]]]:
        usable = lambda s: s != UNTRUSTED  # noqa: E731
        found = self.active(to, usable)
        if not found:
            raise policy(f"{to} has no trusted XML Encryption key")
        if to != self.own():
            found += self.active(self.own(), usable)
        return found

    @staticmethod
    def key_from_info(info: ET.Element) -> Tuple[str, int, int]:
        if info.tag == f"{{{NS_DS}}}KeyValue":
            value = info
        elif info.tag == f"{{{NS_DS}}}KeyInfo":
            value = info.find(f"{{{NS_DS}}}KeyValue")
            if value is None:
                raise missing("KeyValue")
        else:
            raise missing("KeyInfo")
        rsa = value.find(f"{{{NS_DS}}}RSAKeyValue")
        if rsa is None:
            raise missing("RSAKeyValue")

        def part(name: str) -> int:
            c = rsa.find(f"{{{NS_DS}}}{name}")
            if c is None:
                raise missing(name)
            return int.from_bytes(unb64(name, "".join(c.itertext())), "big")

        n, e = part("Modulus"), part("Exponent")
        bits = n.bit_length()
        if not MIN_BITS <= bits <= MAX_BITS:
            raise rejected("weak-key", f"a {bits}-bit RSA modulus (we accept {MIN_BITS} to {MAX_BITS})")
        if e < 3 or e % 2 == 0 or e >= n:
            raise malformed("RSAKeyValue", f"exponent {e} is not usable")
        try:
            return seeded_rsa.fingerprint(n, e), n, e
        except ValueError as err:
            raise malformed("RSAKeyValue", str(err))

    def key_info(self) -> str:
        rsa = el("RSAKeyValue", children=[el("Modulus", text=b64(int_bytes(self.n))),
                                         el("Exponent", text=b64(int_bytes(self.e)))])
        return el("KeyInfo", children=[el("KeyValue", children=[rsa])], xmlns=NS_DS)

    def items(self, now: int, stanza: ET.Element, items: ET.Element, complete: bool, out: Output) -> None:
        if items.get("node") != NODE_KEYS:
            return
        frm = stanza.get("from")
        if frm is None:
            owner = self.own()
        else:
            try:
                owner = parse_jid(frm)[0]
            except ValueError:
                return
        self.answered(owner)
        found = []
        for n, item in enumerate(c for c in items if kit.local(c)[1] == "item"):
            iid = item.get("id") or ""
            if n >= MAX_KEYS:
                out.alert("bad-key-item", f"{owner} lists more than {MAX_KEYS} keys; the rest are ignored")
                break
            try:
                payload = next(iter(item), None)
                if payload is None:
                    raise missing("KeyInfo")
                fpr, kn, ke = self.key_from_info(payload)
                if fpr != iid:
                    raise rejected("bad-key-item", f"item id {iid} is not the key's fingerprint {fpr}")
                found.append((fpr, kn, ke))
            except EngineError as err:
                out.alert("bad-key-item", f"key item {json.dumps(iid)} of {owner}: {err.code}: {err.detail or err.what}")
        self.learn(owner, found, complete, out)
        self.flush(now, out)
        self.flush_waiting(now, out)
        self.retry(now, owner, out)

    # -- sending ---------------------------------------------------------------------------------

    def signed_payload(self, now: int, to: str, content: str) -> str:
        """The signed payload (module docs, "Sending"): the template here, the signature xmlsec1's."""
        pid = "m" + kit.RNG.read(16).hex()
        template = (
            f"<signed xmlns='{NS}' Id='{pid}'>"
            f"<to>{escape(to)}</to><from>{escape(self.own())}</from><time>{format_stamp(now)}</time>"
            f"{content}"
            f"<Signature xmlns='{NS_DS}'><SignedInfo>"
            f"<CanonicalizationMethod Algorithm='{EXC_C14N}'/>"
            f"<SignatureMethod Algorithm='{RSA_SHA256}'/>"
            f"<Reference URI='#{pid}'><Transforms>"
            f"<Transform Algorithm='{ENVELOPED}'/><Transform Algorithm='{EXC_C14N}'/>"
            f"</Transforms><DigestMethod Algorithm='{DIGEST_SHA256}'/><DigestValue/></Reference>"
            f"</SignedInfo><SignatureValue/><KeyInfo><KeyName>{self.fpr}</KeyName></KeyInfo></Signature>"
            f"</signed>")
        r = tool.sign(template, self.fpr, self.private_pem)
        if not r.ok:
            raise policy(f"xmlsec1 --sign: {r.last_error()}")
        return tool.strip_declaration(r.output.decode("utf-8"))

    def seal(self, payload: str, recipients: List[Tuple[str, str, Dict[str, Any]]]) -> str:
        """The `<EncryptedData/>` xmlsec1 makes of `payload` for every recipient key."""
        eks = "".join(
            f"<EncryptedKey xmlns='{NS_XENC}' Recipient={quoteattr(owner)}>"
            f"<EncryptionMethod Algorithm='{RSA_OAEP_MGF1P}'><DigestMethod xmlns='{NS_DS}' Algorithm='{SHA1}'/></EncryptionMethod>"
            f"<KeyInfo xmlns='{NS_DS}'><KeyName>{fpr}</KeyName></KeyInfo>"
            f"<CipherData><CipherValue/></CipherData></EncryptedKey>"
            for owner, fpr, _ in recipients)
        template = (f"<EncryptedData xmlns='{NS_XENC}' Type='{TYPE_ELEMENT}'>"
                    f"<EncryptionMethod Algorithm='{CIPHER_URI[self.cipher]}'/>"
                    f"<KeyInfo xmlns='{NS_DS}'>{eks}</KeyInfo>"
                    f"<CipherData><CipherValue/></CipherData></EncryptedData>")
        keys = [(fpr, seeded_rsa.public_pem(k["n"], k["e"])) for _, fpr, k in recipients]
        r = tool.encrypt(template, payload, keys)
        if not r.ok:
            raise policy(f"xmlsec1 --encrypt: {r.last_error()}")
        # xmlsec1 wraps base64 at 64 columns; XML white space in base64Binary is insignificant
        # and our engine reads both, but the simulator's bit-flipping attacker decodes only
        # unwrapped base64 (sim/src/attacker/powers.rs `flip`): the CipherValues go unwrapped.
        text = tool.strip_declaration(r.output.decode("utf-8"))
        return re.sub(r"(<CipherValue>)([^<]*)(</CipherValue>)",
                      lambda m: m.group(1) + re.sub(r"[ \t\r\n]", "", m.group(2)) + m.group(3), text)

    def seal_message(self, to: str, recipients, payload: str) -> str:
        return el("message", {"to": to, "type": "chat"}, [
            el("body", text=FALLBACK),
            self.seal(payload, recipients),
            el("encryption", {"namespace": NS, "name": "XML Encryption"}, xmlns=NS_EME),
            el("store", xmlns=NS_HINTS)], xmlns=CLIENT)

    def seal_pending(self, now: int, p: Dict[str, Any], out: Output) -> Optional[str]:
        to = p["to"]
        if not self.read_or_fetch(to, out):
            return None
        recipients = self.recipients(to)
        content = el("body", text=p["body"])
        if p["parts"]:
            content += f"<parts xmlns='{NS}'>" + "".join(p["parts"]) + "</parts>"
        return self.seal_message(to, recipients, self.signed_payload(now, to, content))

    def flush(self, now: int, out: Output) -> None:
        pending, self.pending = self.pending, []
        for p in pending:
            try:
                stanza = self.seal_pending(now, p, out)
            except EngineError as err:
                out.alert("not-sent", f"to {p['to']}: {err.detail or err.code}")
                continue
            if stanza is None:
                self.pending.append(p)
            else:
                out.send(stanza)

    def seal_waiting(self, now: int, w: Dict[str, Any], out: Output) -> Optional[str]:
        to = parse_jid(w["to"])[0]
        if not self.read_or_fetch(to, out):
            return None
        recipients = self.recipients(to)
        if w["kind"] == "presence":
            content = f"<presence><status xmlns='{CLIENT}'>{escape(w['status'])}</status></presence>"
            head = el("presence", {"to": w["to"]}, xmlns=CLIENT)
        else:
            content = f"<iq>{w['payload']}</iq>"
            head = el("iq", {"type": "set", "to": w["to"]}, xmlns=CLIENT)
        sealed = self.seal(self.signed_payload(now, to, content), recipients)
        return head[:-2] + ">" + sealed + ("</presence>" if w["kind"] == "presence" else "</iq>")

    def flush_waiting(self, now: int, out: Output) -> None:
        waiting, self.waiting = self.waiting, []
        for w in waiting:
            try:
                stanza = self.seal_waiting(now, w, out)
            except EngineError as err:
                out.alert("not-sent", f"to {w['to']}: {err.detail or err.code}")
                continue
            if stanza is None:
                self.waiting.append(w)
            else:
                out.send(stanza)

    # -- receiving: decrypt (xmlsec1), then verify (xmlsec1) under the binding's rules ------------

    def open(self, encrypted: ET.Element, any_cipher: bool) -> Optional[str]:
        """The decrypted payload text, or None when no EncryptedKey opens with our key."""
        if encrypted.get("Type") != TYPE_ELEMENT:
            raise rejected("unsupported-type", f"EncryptedData Type {encrypted.get('Type')!r}, expected {TYPE_ELEMENT}")
        method = encrypted.find(f"{{{NS_XENC}}}EncryptionMethod")
        if method is None:
            raise missing("EncryptionMethod")
        uri = method.get("Algorithm")
        if uri is None:
            raise missing("Algorithm")
        cipher = CIPHERS.get(uri)
        if cipher is None:
            raise rejected("unsupported-algorithm", f"content cipher `{uri}`")
        if not any_cipher and self.cipher == "gcm" and cipher != "gcm":
            raise rejected("cipher-not-allowed", f"content cipher `{uri}` on a device configured for GCM")
        info = encrypted.find(f"{{{NS_DS}}}KeyInfo")
        eks = [] if info is None else [c for c in info if c.tag == f"{{{NS_XENC}}}EncryptedKey"]
        if len(eks) > MAX_ENCRYPTED_KEYS:
            raise malformed("EncryptedData", f"{len(eks)} EncryptedKeys, at most {MAX_ENCRYPTED_KEYS}")
        data = encrypted.find(f"{{{NS_XENC}}}CipherData")
        if data is None:
            raise missing("CipherData")
        if data.find(f"{{{NS_XENC}}}CipherReference") is not None:
            raise rejected("unsupported-algorithm", "CipherReference (§3.3.1): content must be inline")
        if data.find(f"{{{NS_XENC}}}CipherValue") is None:
            raise missing("CipherValue")
        named = [ek for ek in eks if "".join(ek.findtext(f"{{{NS_DS}}}KeyInfo/{{{NS_DS}}}KeyName") or "").strip() == self.fpr]
        nameless = [ek for ek in eks if ek.find(f"{{{NS_DS}}}KeyInfo/{{{NS_DS}}}KeyName") is None]
        if not named and not nameless:
            return None
        r = tool.decrypt(kit.serialize(encrypted), self.fpr, self.private_pem)
        if r.ok:
            try:
                return tool.strip_declaration(r.output.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise malformed("signed payload", str(e))
        err = r.stderr
        if "key is not found" in err and "EncDataNodeRead" in err:
            if named:
                raise rejected("key-transport-failed", "RSA-OAEP decryption of the EncryptedKey failed (xmlsec1)")
            return None
        if re.search(r"obj=aes128-gcm:subj=EVP_CipherFinal|obj=aes128-gcm:subj=EVP_DecryptFinal", err):
            raise rejected("bad-mac", "AES-GCM tag mismatch (xmlsec1)")
        if re.search(r"obj=aes128-cbc.*(padding|invalid data|EVP_CipherFinal)", err):
            raise rejected("bad-padding", f"xmlsec1: {r.last_error()}")
        if re.search(r"invalid key data size|key size|keyBitsSize", err):
            raise rejected("bad-key-length", f"xmlsec1: {r.last_error()}")
        if re.search(r"base64", err, re.I):
            raise malformed("CipherValue", f"xmlsec1: {r.last_error()}")
        raise malformed("signed payload", f"xmlsec1 --decrypt: {r.last_error()}")

    def verify_payload(self, text: str, sender_bare: str) -> Dict[str, Any]:
        """xmldsig core validation by xmlsec1 of the decrypted `text`, inside the binding's
        rules (peers/e2e/src/xmlsec/dsig.rs `verify`, checks 1-8): the structural checks that
        defeat signature wrapping are applied to the parsed document, the digest and the
        signature are xmlsec1's, the fields are read from the node the Reference names."""
        root = parse_document(text, "signed payload")
        if root.tag != f"{{{NS}}}signed":
            ns, name = kit.local(root)
            raise rejected("not-signed-payload", f"decrypted element is <{name}/> in {ns!r}")
        parent = {c: p for p in root.iter() for c in p}
        signatures = [n for n in root.iter(f"{{{NS_DS}}}Signature")]
        if not signatures:
            raise missing("Signature")
        if len(signatures) > 1:
            raise rejected("misplaced-signature", "more than one ds:Signature")
        signature = signatures[0]
        if parent.get(signature) is not root:
            raise rejected("misplaced-signature", "the ds:Signature is not a child of the payload")
        parts = list(signature)
        if not parts or parts[0].tag != f"{{{NS_DS}}}SignedInfo":
            raise missing("SignedInfo")
        if len(parts) < 2 or parts[1].tag != f"{{{NS_DS}}}SignatureValue":
            raise missing("SignatureValue")
        key_info = parts[2] if len(parts) > 2 else None
        if (key_info is not None and key_info.tag != f"{{{NS_DS}}}KeyInfo") or len(parts) > 3:
            raise malformed("Signature", "only SignedInfo, SignatureValue and KeyInfo are allowed (no Object)")
        si = list(parts[0])

        def exc_c14n(method: ET.Element) -> None:
            uri = method.get("Algorithm")
            if uri is None:
                raise missing("Algorithm")
            if uri != EXC_C14N:
                raise rejected("unsupported-algorithm", f"canonicalization `{uri}`")

        if not si or si[0].tag != f"{{{NS_DS}}}CanonicalizationMethod":
            raise missing("CanonicalizationMethod")
        exc_c14n(si[0])
        if len(si) < 2 or si[1].tag != f"{{{NS_DS}}}SignatureMethod":
            raise missing("SignatureMethod")
        if si[1].get("Algorithm") != RSA_SHA256:
            raise rejected("unsupported-algorithm", f"signature method {si[1].get('Algorithm')!r}")
        if len(si) < 3 or si[2].tag != f"{{{NS_DS}}}Reference":
            raise missing("Reference")
        if len(si) > 3:
            raise rejected("bad-reference", "SignedInfo must hold exactly one Reference")
        reference = si[2]
        r = list(reference)
        nxt = r.pop(0) if r else None
        if nxt is not None and nxt.tag == f"{{{NS_DS}}}Transforms":
            ts = list(nxt)
            if not (len(ts) == 2 and all(t.tag == f"{{{NS_DS}}}Transform" for t in ts) and ts[0].get("Algorithm") == ENVELOPED):
                raise rejected("unsupported-algorithm", "the Reference transforms must be exactly enveloped-signature, exc-c14n")
            exc_c14n(ts[1])
            nxt = r.pop(0) if r else None
        else:
            raise rejected("unsupported-algorithm", "the Reference has no transforms")
        if nxt is None or nxt.tag != f"{{{NS_DS}}}DigestMethod":
            raise missing("DigestMethod")
        if nxt.get("Algorithm") != DIGEST_SHA256:
            raise rejected("unsupported-algorithm", f"digest method {nxt.get('Algorithm')!r}")
        if not r or r[0].tag != f"{{{NS_DS}}}DigestValue":
            raise missing("DigestValue")
        uri = reference.get("URI")
        if uri is None:
            raise missing("URI")
        pid = uri[1:] if uri.startswith("#") else ""
        if not pid or "(" in pid or "#" in pid:
            raise rejected("bad-reference", f"URI `{uri}` is not a same-document `#id`")
        holders = [n for n in root.iter() if any(n.get(a) == pid for a in ("Id", "ID", "id", XML_ID))]
        if not holders:
            raise rejected("bad-reference", f"no element has the ID `{pid}`")
        if len(holders) > 1:
            raise rejected("duplicate-id", f"more than one element has the ID `{pid}`")
        if holders[0] is not root or root.get("Id") != pid:
            raise rejected("bad-reference", f"`{uri}` resolves to <{kit.local(holders[0])[1]}/>, not the payload's Id")
        # Digest and signature: xmlsec1, under a key of the sender named by KeyName (or each).
        key_name = None
        if key_info is not None:
            kn = key_info.find(f"{{{NS_DS}}}KeyName")
            if kn is not None:
                key_name = text_of(kn, "KeyName").strip()
        held = self.keys.get(sender_bare, {})
        candidates = [(f, k) for f, k in sorted(held.items()) if key_name is None or f == key_name]
        signer = None
        if not candidates:
            # Which fails first, as xmldsig orders it: the digest (checked with a stand-in key:
            # ours, which cannot verify the signature) or the signer.
            probe = tool.verify(text, key_name or "none", seeded_rsa.public_pem(self.n, self.e))
            refs = tool.references(probe)
            if refs is not None and refs[0] < refs[1]:
                raise rejected("bad-digest", f"the digest of `{uri}` does not match (xmlsec1)")
            raise rejected("unknown-signer", f"no key {key_name or 'at all'} of {sender_bare}")
        last = None
        for fpr, k in candidates:
            run = tool.verify(text, fpr, seeded_rsa.public_pem(k["n"], k["e"]))
            if run.ok:
                signer = fpr
                break
            last = run
            refs = tool.references(run)
            if refs is not None and refs[0] < refs[1]:
                raise rejected("bad-digest", f"the digest of `{uri}` does not match (xmlsec1)")
            if refs is None:
                # xmlsec1 stopped before the references: the signature's own encoding.
                raise malformed("Signature", f"xmlsec1 --verify: {run.last_error()}")
        if signer is None:
            raise rejected("bad-signature", f"the SignatureValue does not verify (xmlsec1: {last.last_error() if last else ''})")
        # 8. The fields, from the node the Reference resolved to (the document element).
        field = lambda name: text_of(only_child(root, NS, name), name)  # noqa: E731
        to, frm, time = field("to"), field("from"), field("time")
        kinds = [k for k in ("body", "presence", "iq") if root.find(f"{{{NS}}}{k}") is not None]

        def children_of(name: str) -> List[str]:
            holder = only_child(root, NS, name)
            if depth(holder) > MAX_PART_DEPTH + 1:
                raise malformed("part", f"nested deeper than {MAX_PART_DEPTH}")
            return [kit.serialize(c) for c in holder]

        if kinds == ["body"]:
            body = text_of(only_child(root, NS, "body"), "body")
            n_parts = len([c for c in root if c.tag == f"{{{NS}}}parts"])
            parts = children_of("parts") if n_parts else []
            kind = "message"
        elif kinds == ["presence"]:
            body, parts, kind = "", children_of("presence"), "presence"
        elif kinds == ["iq"]:
            body, parts, kind = "", children_of("iq"), "iq"
        elif not kinds:
            raise missing("body")
        else:
            raise malformed("signed payload", f"the content of more than one stanza kind: {kinds}")
        return {"id": pid, "to": to, "from": frm, "time": time, "stanza": kind, "body": body,
                "parts": parts, "signer": signer}

    def receive_sealed(self, now: int, stanza: ET.Element, raw: str, hold: bool, out: Output) -> None:
        """Receive steps 1-5; an iq that fails is answered with one and the same error."""
        try:
            self.receive_one(now, stanza, raw, hold and not self.stolen, out)
        except EngineError:
            if kit.local(stanza)[1] == "iq" and not self.stolen:
                try:
                    self.outbox.append(self.iq_answer(stanza, sender(stanza)[1], False))
                except EngineError:
                    pass
            raise

    @staticmethod
    def iq_answer(request: ET.Element, to: str, ok: bool) -> str:
        kids = [] if ok else [el("error", {"type": "modify"}, [el("not-acceptable", xmlns=NS_STANZAS)])]
        return el("iq", {"type": "result" if ok else "error", "to": to, "id": request.get("id")}, kids, xmlns=CLIENT)

    def receive_one(self, now: int, stanza: ET.Element, raw: str, hold: bool, out: Output) -> None:
        sender_bare, frm = sender(stanza)
        blocks = [c for c in stanza if c.tag == f"{{{NS_XENC}}}EncryptedData"]
        if not blocks:
            raise missing("EncryptedData")
        if len(blocks) > 1:
            raise malformed("message", "more than one EncryptedData")
        kind = kit.local(stanza)[1]
        text = self.open(blocks[0], self.stolen)
        if text is None:
            out.alert("not-for-this-device", f"a {kind} from {frm} carries no key for {self.fpr}")
            if kind == "iq" and not self.stolen:
                self.outbox.append(self.iq_answer(stanza, frm, False))
            return
        try:
            payload = self.verify_payload(text, sender_bare)
        except EngineError as err:
            if err.code == "unknown-signer" and hold and self.hold(raw, frm):
                self.refetch(sender_bare, out)
                return
            raise
        if payload["stanza"] != kind:
            raise malformed("signed payload", f"signed as a <{payload['stanza']}/>, carried in a <{kind}/>")
        self.check_statements(now, stanza, sender_bare, payload)
        state = self.keys.get(sender_bare, {}).get(payload["signer"], {}).get("state", UNTRUSTED)
        trust = SHOWN[state]
        if state == UNTRUSTED:
            out.alert("untrusted-key", f"{frm} signed with key {payload['signer']}, which is not trusted")
        if kind == "message":
            out.plaintext(frm, payload["body"], trust)
            parts = [p for p in payload["parts"] if not self.server_processed(p)]
            if parts:
                out.parts(frm, "message", parts)
        elif kind == "presence":
            out.parts(frm, "presence", payload["parts"])
        else:
            out.parts(frm, "iq", payload["parts"])
            out.send(self.iq_answer(stanza, frm, True))

    @staticmethod
    def server_processed(part: str) -> bool:
        ns, name = kit.local(kit.parse(part))
        return (ns == CLIENT and name == "body") or ns in SERVER_PROCESSED

    def check_statements(self, now: int, stanza: ET.Element, sender_bare: str, p: Dict[str, Any]) -> None:
        own = self.own()
        if len(p["id"]) > MAX_ID_LEN:
            raise malformed("Id", f"{len(p['id'])} characters, at most {MAX_ID_LEN}")
        if p["from"] != sender_bare:
            raise rejected("from-mismatch", f"signed from {p['from']}, stanza from {stanza.get('from')}")
        try:
            stanza_to = parse_jid(stanza.get("to"))[0] if stanza.get("to") else None
        except ValueError:
            stanza_to = None
        to_ok = p["to"] == own or (sender_bare == own and (stanza_to is None or stanza_to == p["to"]))
        if not to_ok:
            raise rejected("to-mismatch", f"signed to {p['to']}, we are {own}")
        sent = parse_stamp(p["time"].strip())
        if sent is None:
            raise malformed("time", p["time"])
        if self.stolen:
            return
        if sent > now + MAX_FUTURE_MS:
            raise rejected("message-from-future", f"sent at {p['time']}, more than 300 s ahead")
        if sent + MAX_AGE_MS < now:
            raise rejected("message-too-old", f"sent at {p['time']}, more than {MAX_AGE_MS // 1000} s ago")
        mine = self.seen.get(sender_bare)
        if mine and (p["id"] in mine["ids"] or (mine["floor"] is not None and sent <= mine["floor"])):
            raise rejected("replay", f"message {p['id']} seen before")
        horizon = now - MAX_AGE_MS
        for s in list(self.seen):
            entry = self.seen[s]
            entry["ids"] = {i: t for i, t in entry["ids"].items() if t >= horizon}
            if not entry["ids"] and (entry["floor"] is None or entry["floor"] < horizon):
                del self.seen[s]
        entry = self.seen.setdefault(sender_bare, {"ids": {}, "floor": None})
        if len(entry["ids"]) >= MAX_SEEN_PER_SENDER:
            t, old = min((t, i) for i, t in entry["ids"].items())
            del entry["ids"][old]
            entry["floor"] = t if entry["floor"] is None else max(entry["floor"], t)
        entry["ids"][p["id"]] = sent

    # -- the engine protocol's calls -------------------------------------------------------------

    def publish(self, now: int) -> Output:
        out = Output().publish(NODE_KEYS, self.fpr, self.key_info(),
                               (("pubsub#max_items", "max"), ("pubsub#access_model", "open")))
        self.refetch(self.own(), out)
        return out

    def going_offline(self, now: int) -> Output:
        return Output()

    def presence(self, now: int) -> List[str]:
        return []

    def send(self, now: int, to: str, body: str) -> Output:
        return self.send_message(now, to, body, [])

    def send_message(self, now: int, to: str, body: str, parts: List[str]) -> Output:
        try:
            to = parse_jid(to)[0]
        except ValueError as e:
            raise malformed("to", str(e))
        out = Output()
        if not self.active(to):
            self.unread(to)
        self.pending.append({"to": to, "body": body, "parts": [kit.serialize(kit.parse(p)) for p in parts]})
        self.flush(now, out)
        return out

    def send_presence(self, now: int, to: str, status: str) -> Output:
        self.waiting.append({"kind": "presence", "to": to, "status": status})
        out = Output()
        self.flush_waiting(now, out)
        return out

    def send_iq(self, now: int, to: str, payload: str) -> Output:
        self.waiting.append({"kind": "iq", "to": to, "payload": kit.serialize(kit.parse(payload))})
        out = Output()
        self.flush_waiting(now, out)
        return out

    def receive(self, now: int, stanza: str) -> Output:
        out = Output()
        s = kit.parse(stanza)
        ns, name = kit.local(s)
        result = s.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}items")
        event = s.find(f"{{{NS_PUBSUB_EVENT}}}event/{{{NS_PUBSUB_EVENT}}}items")
        if result is not None and name == "iq" and s.get("type") == "result":
            self.items(now, s, result, True, out)
            return out
        if event is not None and name == "message":
            self.items(now, s, event, False, out)
            return out
        if s.find(f"{{{NS_PUBSUB}}}pubsub") is not None or s.find(f"{{{NS_PUBSUB_EVENT}}}event") is not None:
            return out  # PEP payloads in the wrong kind of stanza are ignored
        has_enc = s.find(f"{{{NS_XENC}}}EncryptedData") is not None
        if name == "iq":
            if s.get("type") in ("set", "get") and has_enc:
                self.receive_sealed(now, s, stanza, True, out)
            return out
        if name != "message" or s.get("type") == "error":
            return out
        if has_enc:
            self.receive_sealed(now, s, stanza, True, out)
            return out
        body = s.find(f"{{{CLIENT}}}body")
        if body is not None:
            frm = self.own() if s.get("from") is None else sender(s)[1]
            out.alert("unencrypted", f"{frm} sent a message without XML Encryption")
            out.plaintext(frm, "".join(body.itertext()), "unencrypted")
        return out

    def receive_presence(self, now: int, stanza: str) -> Output:
        out = Output()
        s = kit.parse(stanza)
        if s.find(f"{{{NS_XENC}}}EncryptedData") is not None and s.get("type") in (None, "available"):
            self.receive_sealed(now, s, stanza, True, out)
        return out

    def drain(self, now: int) -> Output:
        out = Output()
        for stanza in self.outbox:
            out.send(stanza)
        self.outbox = []
        return out

    def fetch_failed(self, now: int, owner: str, node: str, condition: str) -> Output:
        out = Output()
        try:
            owner = parse_jid(owner)[0]
        except ValueError as e:
            raise malformed("owner", str(e))
        self.answered(owner) if node == NODE_KEYS else None
        if node != NODE_KEYS:
            return out
        self.mark_read(owner)
        if owner != self.own():
            out.alert("no-keys", f"the keys of {owner} could not be fetched ({condition})")
        self.flush(now, out)
        self.retry(now, owner, out)
        self.flush_waiting(now, out)
        return out

    def verify(self, now: int, peer: str, peer_says: List[str]) -> Output:
        """The fingerprint comparison (kit/trust.rs `TrustBook::verify`)."""
        try:
            peer = parse_jid(peer)[0]
        except ValueError as e:
            raise malformed("peer", str(e))
        out = Output()
        result, seen = "match", 0
        for fpr, k in sorted(self.keys.get(peer, {}).items()):
            seen += 1
            before = k["state"]
            k["state"] = VERIFIED if fpr in peer_says else UNTRUSTED
            if k["state"] != before:
                self.trust_event(peer, fpr, out)
            if k["state"] == UNTRUSTED:
                result = "mismatch"
                out.alert("fingerprint-mismatch", f"key {fpr} of {peer} is not one the peer shows")
        if seen:
            if peer not in self.verified:
                self.verified.append(peer)
        else:
            result = "nothing-to-compare"
            out.alert("nothing-to-verify", f"no key of {peer} seen yet")
        out.verification(peer, result)
        return out

    def out_of_band(self) -> List[str]:
        return [self.fpr]

    def ceremony(self, peer: str) -> Optional[Dict[str, Any]]:
        return {"kind": "compare", "text": self.fpr}

    def identity_marks(self) -> List[Dict[str, str]]:
        return [{"name": "RSA modulus", "hex": int_bytes(self.n).hex()}, {"name": "fingerprint", "hex": self.fpr}]

    def peer_marks(self, peer: str) -> List[Dict[str, str]]:
        return []

    def owns_part(self, part: str) -> bool:
        return False

    def message_id(self, to: str) -> Optional[str]:
        return None

    def forge(self, now: int, frm: str, body: str) -> Optional[str]:
        # Anyone can encrypt to us, but only the sender's private key makes its signature.
        return None

    def reencrypt(self, now: int, stanza: str, body: str) -> Optional[str]:
        # The content key is shared, but the content is signed by the sender: nothing to re-encrypt
        # that the others would take as the sender's (as our engine: the trait's default).
        return None

    def forward(self, now: int, recorded: str, to: str, body: str) -> Optional[Output]:
        """Surreptitious forwarding and signature wrapping with this device's key (as our engine's
        `Keyed::forwarding`): xmlsec1 decrypts the recorded message; with no `body` the sender's
        signed payload goes on unchanged, re-encrypted by xmlsec1 to `to`; with one, the wrapping
        document of dsig.rs `wrap` carries it next to the sender's intact signature."""
        s = kit.parse(recorded)
        blocks = [c for c in s if c.tag == f"{{{NS_XENC}}}EncryptedData"]
        if not blocks:
            raise missing("EncryptedData")
        if len(blocks) > 1:
            raise malformed("message", "more than one EncryptedData")
        text = self.open(blocks[0], True)
        if text is None:
            raise rejected("not-for-this-device", f"the recorded message carries no key for {self.fpr}")
        root = parse_document(text, "signed payload")
        if root.tag != f"{{{NS}}}signed":
            raise rejected("not-signed-payload", f"decrypted element is <{kit.local(root)[1]}/>")
        if not root.get("Id"):
            raise missing("Id")
        signature = root.find(f"{{{NS_DS}}}Signature")
        if signature is None:
            raise missing("Signature")
        try:
            to = parse_jid(to)[0]
        except ValueError as e:
            raise malformed("to", str(e))
        if not self.is_read(to):
            out = Output()
            self.refetch(to, out)
            return out
        if body == "":
            forged = text
        else:
            fresh = "m" + kit.RNG.read(16).hex()
            frm = root.find(f"{{{NS}}}from")
            if frm is None:
                raise missing("from")
            root.remove(signature)
            forged = (f"<signed xmlns='{NS}' Id='{fresh}'><to>{escape(to)}</to>"
                      f"<from>{escape(''.join(frm.itertext()))}</from><time>{format_stamp(now)}</time>"
                      f"<body>{escape(body)}</body>{kit.serialize(signature)}"
                      f"<wrapper xmlns='urn:xmpp:jabberwock:xmlsec:wrapper:0'>{kit.serialize(root)}</wrapper></signed>")
        recipients = self.active(to)
        if not recipients:
            raise policy(f"{to} has no XML Encryption key to forward to")
        return Output().send(self.seal_message(to, recipients, forged))

    def steal(self, what: str) -> Tuple["Xmlsec1", Optional[str]]:
        if what not in ("identity-key", "long-term-keys", "full-state"):
            raise malformed("what", f"unknown theft `{what}`")
        c = copy.deepcopy(self)
        c.stolen = True
        c.outbox = []
        if what != "full-state":
            c.pending, c.held, c.asked = [], [], []
            c.seen = {}
            c.waiting = []
        return c, c.state()


if __name__ == "__main__":
    kit.serve(implementation="xmlsec1", version=tool.version(), protocols={"xmlsec": Xmlsec1})
