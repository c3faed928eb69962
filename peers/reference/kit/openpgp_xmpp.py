"""OpenPGP in XMPP for adapters whose library is an OpenPGP command-line tool (gnupg, sqop):
the XMPP side of XEP-0027 (`pgp`) and XEP-0373/0374 (`ox`) exactly as Jabberwock's own engines
put it on the wire (peers/e2e/src/openpgp/), over a `Backend` that does every OpenPGP operation
(key generation, encryption, decryption, signing, verification, certificate checks) with the
tool. Python here only moves bytes: XML, base64, the XEP-0027 armour (base64 + CRC-24), and
reading packet headers (which packets a message starts with, the issuer a signature names, a
certificate's user IDs and v4 fingerprints for a tool that does not print them).

Import `jabberwock_adapter` before this module (it seeds Python's randomness).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
from typing import Any, Dict, List, Optional, Set, Tuple

import jabberwock_adapter as kit
from jabberwock_adapter import CLIENT, EngineError, Output, Unimplemented, el

NS_ENCRYPTED = "jabber:x:encrypted"
NS_SIGNED = "jabber:x:signed"
NODE_KEYSERVER = "urn:xmpp:jabberwock:keyserver:0"
FALLBACK_PGP = "This message is encrypted (XEP-0027 OpenPGP)."
NS_OX = "urn:xmpp:openpgp:0"
NODE_PUBLIC_KEYS = "urn:xmpp:openpgp:0:public-keys"
FALLBACK_OX = "This message is encrypted using OpenPGP."
NS_SERVER = "jabber:server"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_EME = "urn:xmpp:eme:0"
NS_HINTS = "urn:xmpp:hints"
SERVER_PROCESSED = {NS_HINTS, "urn:xmpp:sid:0", "http://jabber.org/protocol/address", NS_EME}

KEY_CREATED = 1767225600  # 2026-01-01T00:00:00Z, the simulator's epoch (keys.rs KEY_CREATED)
MAX_KEYS_PER_ACCOUNT = 16
MAX_PENDING_PRESENCE = 64
HOLD_TOTAL, HOLD_PER_SENDER = 64, 4
MAX_CLOCK_SKEW_MS = 300_000
MAX_PLAINTEXT = 64 * 1024
MAX_DEPTH = 32
PAD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_!%^"


# --- JIDs and time ------------------------------------------------------------------------------

def bare_of(jid: str, what: str = "from") -> str:
    """The bare JID of `jid` (local part and domain lower-cased, as the jid crate's
    normalisation does for ASCII); an address that cannot be one is `malformed`."""
    if not isinstance(jid, str) or not jid:
        raise EngineError("malformed", "empty JID", what)
    b = jid.split("/", 1)[0]
    if "/" in jid and not jid.split("/", 1)[1]:
        raise EngineError("malformed", f"`{jid}`: empty resource", what)
    if b.count("@") > 1 or b.startswith("@") or b.endswith("@") or not b.split("@")[-1] or any(
            c in b for c in " \t\r\n<>\"'&"):
        raise EngineError("malformed", f"`{jid}` is not a JID", what)
    return b.lower()


def sender(stanza) -> str:
    f = stanza.get("from")
    if f is None:
        raise EngineError("missing-element", "", "from")
    bare_of(f, "from")
    return f


def format_stamp(ms: int) -> str:
    secs, milli = divmod(int(ms), 1000)
    t = _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=secs)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{milli:03d}Z"


def parse_time(s: Optional[str]) -> Optional[int]:
    """XEP-0082 DateTime in milliseconds (UTC `Z`, fractional seconds, or a numeric offset)."""
    if not s or len(s) > 40:
        return None
    try:
        t = _dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None or t.year < 1970 or "T" not in s:
        return None
    return int(t.timestamp() * 1000)


# --- encodings ----------------------------------------------------------------------------------

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(what: str, text: Optional[str]) -> bytes:
    compact = "".join((text or "").split())
    if not compact:
        raise EngineError("missing-element", "", what)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as e:
        raise EngineError("malformed", str(e), what) from e


def crc24(data: bytes) -> int:
    crc = 0xB704CE
    for b in data:
        crc ^= b << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def armor_body(data: bytes) -> str:
    """XEP-0027 §1: the armour's base64 lines (64 columns) and its CRC-24 line, no headers."""
    enc = b64(data)
    lines = "".join(enc[i:i + 64] + "\n" for i in range(0, len(enc), 64))
    return lines + "=" + b64(crc24(data).to_bytes(3, "big"))


def dearmor_body(text: Optional[str]) -> bytes:
    lines = [l.strip() for l in (text or "").splitlines() if l.strip()]
    if lines and lines[0].startswith("-----BEGIN "):
        end = next((i for i, l in enumerate(lines) if l.startswith("-----END ")), None)
        if end is None:
            raise EngineError("malformed", "no END line", "armor")
        lines = lines[1:end]
        while lines and ": " in lines[0]:
            lines.pop(0)
    checksum = None
    if lines and len(lines[-1]) == 5 and lines[-1].startswith("="):
        try:
            checksum = base64.b64decode(lines[-1][1:], validate=True)
        except (binascii.Error, ValueError) as e:
            raise EngineError("malformed", f"checksum: {e}", "armor") from e
        lines.pop()
    joined = "".join(lines)
    if not joined:
        raise EngineError("missing-element", "", "armor")
    try:
        data = base64.b64decode(joined, validate=True)
    except (binascii.Error, ValueError) as e:
        raise EngineError("malformed", str(e), "armor") from e
    if checksum is not None and checksum != crc24(data).to_bytes(3, "big"):
        raise EngineError("bad-checksum", "armour CRC-24 mismatch")
    return data


def armor_full(label: str, data: bytes) -> str:
    return f"-----BEGIN PGP {label}-----\n\n{armor_body(data)}\n-----END PGP {label}-----\n"


# --- packet headers (RFC 4880 §4.2): reading, never cryptography ---------------------------------

def packets(data: bytes):
    """(tag, body) of each packet; partial lengths are joined. Malformed framing: `malformed`."""
    at, n = 0, len(data)
    while at < n:
        first = data[at]
        if not first & 0x80:
            raise EngineError("malformed", f"no packet header at {at}", "openpgp packet")
        if first & 0x40:
            tag, at, body = first & 0x3F, at + 1, b""
            while True:
                if at >= n:
                    raise EngineError("malformed", "truncated header", "openpgp packet")
                l0 = data[at]
                if l0 < 192:
                    ln, at = l0, at + 1
                elif l0 < 224:
                    if at + 1 >= n:
                        raise EngineError("malformed", "truncated header", "openpgp packet")
                    ln, at = ((l0 - 192) << 8) + data[at + 1] + 192, at + 2
                elif l0 == 255:
                    ln, at = int.from_bytes(data[at + 1:at + 5], "big"), at + 5
                else:  # partial body length
                    part = 1 << (l0 & 0x1F)
                    body += data[at + 1:at + 1 + part]
                    at += 1 + part
                    continue
                body += data[at:at + ln]
                at += ln
                break
        else:
            tag, lt = (first >> 2) & 0x0F, first & 3
            if lt == 3:
                body, at = data[at + 1:], n
            else:
                size = (1, 2, 4)[lt]
                ln = int.from_bytes(data[at + 1:at + 1 + size], "big")
                body, at = data[at + 1 + size:at + 1 + size + ln], at + 1 + size + ln
        if at > n:
            raise EngineError("malformed", "truncated packet", "openpgp packet")
        yield tag, body


def first_tag(data: bytes) -> Optional[int]:
    for tag, _ in packets(data):
        return tag
    return None


def is_encrypted(data: bytes) -> bool:
    """Whether an OpenPGP message starts as an encrypted one (session-key or encrypted-data
    packet)."""
    return first_tag(data) in (1, 3, 9, 18, 20)


def key_fingerprint(body: bytes) -> str:
    """The v4 fingerprint of a key packet body (RFC 4880 §12.2): how the key is named."""
    if not body or body[0] != 4:
        raise EngineError("malformed", "not a v4 key", "public key")
    return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()


def cert_outline(data: bytes) -> Dict[str, Any]:
    """The primary fingerprint, subkey fingerprints, user IDs and whether a key revocation
    signature (0x20) is attached, read from the packets (nothing verified)."""
    out: Dict[str, Any] = {"fpr": None, "subkeys": [], "uids": [], "revocation": False}
    state = None
    for tag, body in packets(data):
        if tag == 6 and out["fpr"] is None:
            out["fpr"], state = key_fingerprint(body), "primary"
        elif tag == 14:
            out["subkeys"].append(key_fingerprint(body))
            state = "sub"
        elif tag == 13:
            out["uids"].append(body.decode("utf-8", "replace"))
            state = "uid"
        elif tag == 2 and state == "primary" and len(body) > 1 and body[0] in (3, 4, 5, 6):
            typ = body[2] if body[0] == 3 else body[1]
            if typ == 0x20:
                out["revocation"] = True
        elif tag == 5:
            raise EngineError("malformed", "a secret key where a certificate is expected", "public key")
    if out["fpr"] is None:
        raise EngineError("malformed", "no primary key packet", "public key")
    return out


def signature_issuers(sig: bytes) -> List[str]:
    """The issuer fingerprints and key IDs (upper-case hex) the first signature packet names."""
    for tag, body in packets(sig):
        if tag != 2:
            continue
        out: List[str] = []
        if len(body) > 6 and body[0] == 4:
            at = 4
            for _ in range(2):
                ln = int.from_bytes(body[at:at + 2], "big")
                area, at = body[at + 2:at + 2 + ln], at + 2 + ln
                i = 0
                while i < len(area):
                    l0 = area[i]
                    if l0 < 192:
                        sl, i = l0, i + 1
                    elif l0 < 255:
                        sl, i = ((l0 - 192) << 8) + area[i + 1] + 192 if i + 1 < len(area) else 0, i + 2
                    else:
                        sl, i = int.from_bytes(area[i + 1:i + 5], "big"), i + 5
                    if sl == 0 or i + sl > len(area):
                        break
                    st, sd = area[i] & 0x7F, area[i + 1:i + sl]
                    if st == 33 and len(sd) >= 21:
                        out.append(sd[1:].hex().upper())
                    elif st == 16 and len(sd) == 8:
                        out.append(sd.hex().upper())
                    i += sl
        elif len(body) > 15 and body[0] == 3:
            out.append(body[7:15].hex().upper())
        return out
    raise EngineError("malformed", "no signature packet", "signature")


def normalise_fpr(s: str) -> str:
    return "".join(s.split()).upper()


# --- certificates as the engines keep them ------------------------------------------------------

class Cert:
    """A peer's certificate as the tool accepted it: its bytes, fingerprints, user IDs the tool
    considers valid, and whether it can be encrypted to now."""

    def __init__(self, data: bytes, fpr: str, subkeys: List[str], uids: List[str]) -> None:
        self.data, self.fpr, self.subkeys, self.uids = data, fpr, subkeys, uids

    def matches_issuer(self, issuer: str) -> bool:
        names = [self.fpr] + self.subkeys
        return any(f == issuer or (len(issuer) == 16 and f.endswith(issuer)) for f in names)

    def names_account(self, bare: str, strict: bool) -> bool:
        for uid in self.uids:
            u = uid.strip()
            if u.startswith("xmpp:"):
                try:
                    if bare_of(u[5:], "uid") == bare and "/" not in u[5:]:
                        return True
                except EngineError:
                    pass
            if not strict and (u == bare or u.endswith(f"<{bare}>")):
                return True
        return False


class Backend:
    """One device's OpenPGP store, driven through a tool. Every method that touches keys or
    messages runs the tool; errors on input from the network are `EngineError`s."""

    fingerprint: str  # our primary key, 40 upper-case hex
    public: bytes     # our transferable public key, binary

    def read_cert(self, data: bytes, now: int) -> Cert: raise NotImplementedError
    def encrypt(self, certs: List[Cert], data: bytes, now: int, sign: bool) -> bytes: raise NotImplementedError
    def decrypt(self, data: bytes, now: int, signers: List[Cert]) -> Tuple[bytes, str, Optional[str]]:
        """(plaintext, signature status, signer primary fingerprint): status is `none` (no
        signature), `good` (by one of `signers`, named), `bad`, `unknown` (a signer not among
        `signers`), or `unverified` (the tool cannot tell which of none/bad/unknown)."""
        raise NotImplementedError
    def sign_detached(self, data: bytes, now: int) -> bytes: raise NotImplementedError
    def verify_detached(self, sig: bytes, data: bytes, cert: Cert, now: int) -> bool: raise NotImplementedError
    def unwrap_signed(self, data: bytes, now: int) -> bytes:
        """The signed OpenPGP message inside an encrypted one, its packets as they are."""
        raise Unimplemented("the tool cannot hand out the signed message inside an encrypted one")
    def encrypt_raw(self, certs: List[Cert], inner: bytes, now: int) -> bytes:
        raise Unimplemented("the tool cannot encrypt OpenPGP packets as they are")
    def copy(self) -> "Backend": raise NotImplementedError
    def state(self) -> Optional[str]: return None
    def close(self) -> None: pass


# --- trust (peers/e2e/src/kit/trust.rs, keys as devices) -----------------------------------------

TRUST_OF = {"blind": "unverified", "verified": "verified", "untrusted": "untrusted"}


class TrustBook:
    def __init__(self, policy: str) -> None:
        self.policy = policy if policy in ("btbv", "tofu", "manual") else "btbv"
        self.keys: Dict[str, Dict[str, Dict[str, Any]]] = {}
        self.verified: Set[str] = set()
        self.pinned: Dict[str, Set[str]] = {}

    def pin_first(self, owner: str, fprs) -> None:
        self.pinned.setdefault(owner, set(fprs))

    def get(self, owner: str, fpr: str) -> Optional[Dict[str, Any]]:
        return self.keys.get(owner, {}).get(fpr)

    def first_sight(self, owner: str, fpr: str, out: Output) -> str:
        if self.policy == "btbv":
            return "untrusted" if owner in self.verified else "blind"
        if self.policy == "tofu":
            first = self.pinned.get(owner)
            if first is not None and fpr not in first:
                out.alert("new-key-untrusted", f"{owner} has a new key {fpr} not in the first key set seen")
                return "untrusted"
            return "blind"
        return "untrusted"

    def observe(self, owner: str, cert: Cert, out: Output) -> str:
        known = self.get(owner, cert.fpr)
        if known is not None:
            known["cert"] = cert
            return known["state"]
        state = self.first_sight(owner, cert.fpr, out)
        self.keys.setdefault(owner, {})[cert.fpr] = {"cert": cert, "state": state}
        out.trust_changed(owner, cert.fpr, cert.fpr, TRUST_OF[state])
        return state

    def trust_of(self, owner: str, fpr: str) -> str:
        k = self.get(owner, fpr)
        return "unverified" if k is None else TRUST_OF[k["state"]]

    def verify(self, peer: str, says: Set[str], current: Set[str]) -> Output:
        out, result, seen = Output(), "match", 0
        for fpr, known in sorted(self.keys.get(peer, {}).items()):
            if fpr not in current:
                continue
            seen += 1
            before = known["state"]
            known["state"] = "verified" if fpr in says else "untrusted"
            if known["state"] != before:
                out.trust_changed(peer, fpr, fpr, TRUST_OF[known["state"]])
            if known["state"] == "untrusted":
                result = "mismatch"
                out.alert("fingerprint-mismatch", f"key {fpr} of {peer} is not one the peer shows")
        if seen:
            self.verified.add(peer)
        else:
            result = "nothing-to-compare"
            out.alert("nothing-to-verify", f"no key of {peer} seen yet")
        out.verification(peer, result)
        return out


# --- the key directory (peers/e2e/src/kit/directory.rs) ------------------------------------------

class Directory:
    def __init__(self) -> None:
        self.asked: Set[Tuple[str, str]] = set()
        self.pending: List[Tuple[str, str, List[str]]] = []
        self.held: List[Tuple[str, str]] = []  # (from, stanza XML)

    def fetch(self, owner: str, node: str, out: Output) -> None:
        if (owner, node) not in self.asked:
            self.asked.add((owner, node))
            out.fetch(owner, node)

    def refetch(self, owner: str, node: str, out: Output) -> None:
        self.asked.discard((owner, node))
        self.fetch(owner, node, out)

    def answered(self, owner: str, node: str) -> None:
        self.asked.discard((owner, node))

    def hold(self, frm: str, stanza: str, out: Output) -> bool:
        sender_bare = bare_of(frm)
        mine = [i for i, (f, _) in enumerate(self.held) if bare_of(f) == sender_bare]
        if len(mine) >= HOLD_PER_SENDER:
            self.held.pop(mine[0])
            out.alert("dropped", f"more than {HOLD_PER_SENDER} stanzas of {sender_bare} wait for its keys: "
                                 "the oldest is dropped")
        elif len(self.held) >= HOLD_TOTAL:
            return False
        self.held.append((frm, stanza))
        return True

    def release(self, owner: str) -> List[Tuple[str, str]]:
        out = [(f, s) for f, s in self.held if bare_of(f) == owner]
        self.held = [(f, s) for f, s in self.held if bare_of(f) != owner]
        return out

    def give_up(self, to: str, why: str, out: Output) -> None:
        rest = []
        for p in self.pending:
            if p[0] == to:
                out.alert("not-sent", f"to {to}: {why}")
            else:
                rest.append(p)
        self.pending = rest

    def wipe(self) -> None:
        self.pending, self.held, self.asked = [], [], set()


class NotSent(Exception):
    pass


def pep_items(stanza):
    """(node, items element, complete) of a PEP answer or notification, or None."""
    ps = kit.child(stanza, NS_PUBSUB, "pubsub")
    items = None if ps is None else kit.child(ps, NS_PUBSUB, "items")
    if items is not None:
        return items.get("node"), items, True
    ev = kit.child(stanza, NS_PUBSUB_EVENT, "event")
    items = None if ev is None else kit.child(ev, NS_PUBSUB_EVENT, "items")
    if items is not None:
        return items.get("node"), items, False
    return None


def each_item(items) -> list:
    return [i for i in items if kit.local(i)[1] == "item"]


def text_of(e) -> str:
    return "".join(e.itertext()) if e is not None else ""


# --- the engines ---------------------------------------------------------------------------------

class OpenPgpEngine(kit.Engine):
    """What both protocols share: the key, the ring, the directory, the ceremony."""

    backend_class: Any = None  # set by the adapter: a Backend subclass with create(uid, rng) / restore(blob)
    fallback_name = ""

    def __init__(self, me: str, policy: str, backend: Backend) -> None:
        self.me, self.own, self.policy = me, bare_of(me, "me"), policy
        self.backend = backend
        self.ring = TrustBook(policy)
        self.dir = Directory()

    @classmethod
    def create(cls, me, config, rng):
        own = bare_of(me, "me")
        return cls(me, (config or {}).get("trust", "btbv"), cls.backend_class.create(f"xmpp:{own}", rng))

    # the directory cycle
    def flush(self, now: int, out: Output) -> None:
        pending, self.dir.pending = self.dir.pending, []
        for to, body, parts in pending:
            try:
                stanza = self.seal(now, to, body, parts, out)
            except NotSent as why:
                out.alert("not-sent", f"to {to}: {why}")
                continue
            except EngineError as e:
                out.alert("not-sent", f"to {to}: {e}")
                continue
            if stanza is None:
                self.dir.pending.append((to, body, parts))
            else:
                out.send(stanza)

    def retry(self, now: int, owner: str, out: Output) -> None:
        for frm, stanza in self.dir.release(owner):
            try:
                self.reread(now, kit.parse(stanza), out)
            except EngineError as e:
                out.rejected(frm, e)

    def reread(self, now, stanza, out):
        pass

    def send(self, now, to, body):
        out = Output()
        self.dir.pending.append((bare_of(to, "to"), body, []))
        self.flush(now, out)
        return out

    def receive(self, now, stanza):
        s = kit.parse(stanza)
        out = Output()
        pep = pep_items(s)
        if pep is not None:
            frm = s.get("from")
            if frm is None:
                owner = self.own
            else:
                try:
                    owner = bare_of(frm)
                except EngineError:
                    self.message(now, s, out)
                    return out
            self.items(now, owner, pep[0], pep[1], pep[2], out)
        else:
            self.message(now, s, out)
        return out

    def fetch_failed(self, now, owner, node, condition):
        out = Output()
        owner = bare_of(owner, "owner")
        self.dir.answered(owner, node)
        self.failed(now, owner, node, condition, out)
        return out

    def drain(self, now):
        return Output()

    def publish_common(self):
        return Output()

    def going_offline(self, now):
        return Output()

    def send_presence(self, now, to, status):
        return Output().send(el("presence", {"to": to}, [el("status", text=status)], xmlns=CLIENT))

    def send_iq(self, now, to, payload):
        kit.parse(payload)
        return Output().send(el("iq", {"type": "set", "to": to}, [payload], xmlns=CLIENT))

    def unencrypted(self, stanza, out: Output, how: str) -> None:
        body = kit.child(stanza, CLIENT, "body")
        if body is not None:
            frm = sender(stanza)
            out.alert("unencrypted", f"{frm} sent a message {how}")
            out.plaintext(frm, text_of(body), "unencrypted")

    # the ceremony and what identifies us
    def out_of_band(self):
        return [self.backend.fingerprint]

    def ceremony(self, peer):
        return {"kind": "compare", "text": self.backend.fingerprint}

    def identity_marks(self):
        fpr = self.backend.fingerprint.lower()
        return [{"name": "public key", "hex": self.backend.public.hex()},
                {"name": "key ID", "hex": fpr[-16:]},
                {"name": "fingerprint", "hex": fpr}]

    def peer_marks(self, peer):
        return []

    def owns_part(self, part):
        return False

    def message_id(self, to):
        return None

    def reencrypt(self, now, stanza, body):
        raise Unimplemented(
            "the tool cannot encrypt new content under a session key recovered from a received message "
            "(decryption can print it; encryption never takes one)")

    # theft
    def steal(self, what):
        import copy as _copy
        twin = _copy.copy(self)
        twin.backend = self.backend.copy()
        twin.ring = _copy.deepcopy(self.ring)
        twin.dir = _copy.deepcopy(self.dir)
        self.copy_rest(twin)
        if what != "full-state":
            twin.dir.wipe()
            self.forget(twin)
        return twin, twin.state_string()

    def copy_rest(self, twin) -> None:
        pass

    def forget(self, twin) -> None:
        pass

    def state_string(self) -> Optional[str]:
        import pickle
        blob = self.backend.state()
        if blob is None:
            return None
        keep = dict(self.__dict__)
        keep["backend"] = None
        return json_state(type(self).__name__, blob, pickle.dumps(keep))

    @classmethod
    def restore(cls, state):
        import json
        import pickle
        try:
            d = json.loads(state)
            if d.get("engine") != cls.__name__:
                raise ValueError("a state of another protocol")
            e = cls.__new__(cls)
            e.__dict__.update(pickle.loads(base64.b64decode(d["engine_state"])))
            e.backend = cls.backend_class.restore_state(d["backend"])
        except (ValueError, KeyError, TypeError, binascii.Error, pickle.UnpicklingError) as err:
            raise EngineError("malformed", f"not a state this adapter wrote: {err}", "state") from err
        return e


def json_state(name: str, backend_blob: str, engine_state: bytes) -> str:
    import json
    return json.dumps({"engine": name, "backend": backend_blob, "engine_state": b64(engine_state)})


class PgpEngine(OpenPgpEngine):
    """XEP-0027 (peers/e2e/src/openpgp/xep0027.rs)."""

    def __init__(self, me, policy, backend):
        super().__init__(me, policy, backend)
        self.listed: Dict[str, Set[str]] = {}
        self.presence_key: Dict[str, Dict[str, str]] = {}
        self.pending_presence: Dict[str, Tuple[str, bytes]] = {}

    def copy_rest(self, twin):
        import copy as _copy
        twin.listed = _copy.deepcopy(self.listed)
        twin.presence_key = _copy.deepcopy(self.presence_key)
        twin.pending_presence = dict(self.pending_presence)

    def forget(self, twin):
        twin.pending_presence = {}

    def lookup(self, owner, out):
        self.dir.fetch(owner, NODE_KEYSERVER, out)

    def publish(self, now):
        out = Output().publish(NODE_KEYSERVER, self.backend.fingerprint,
                               el("pubkey", {}, text=b64(self.backend.public), xmlns=NODE_KEYSERVER),
                               (("pubsub#max_items", "max"), ("pubsub#access_model", "open")))
        self.dir.refetch(self.own, NODE_KEYSERVER, out)
        return out

    def presence(self, now):
        sig = self.backend.sign_detached(b"", now)
        return [el("x", {}, text=armor_body(sig), xmlns=NS_SIGNED)]

    def receive_presence(self, now, stanza):
        s = kit.parse(stanza)
        out = Output()
        x = kit.child(s, NS_SIGNED, "x")
        if x is None:
            return out
        frm = sender(s)
        if frm == self.me:
            return out
        status = text_of(kit.child(s, CLIENT, "status"))
        sig = dearmor_body(text_of(x))
        self.check_presence(now, bare_of(frm), frm, status, sig, True, out)
        return out

    def check_presence(self, now, owner, frm, status, sig, may_look_up, out):
        issuers = signature_issuers(sig)
        candidates = [f for f in sorted(self.listed.get(owner, ()))
                      if self.ring.get(owner, f) is not None
                      and any(self.ring.get(owner, f)["cert"].matches_issuer(i) for i in issuers)]
        if not candidates:
            if may_look_up:
                if len(self.pending_presence) >= MAX_PENDING_PRESENCE and frm not in self.pending_presence:
                    raise EngineError("too-many-pending",
                                      f"{MAX_PENDING_PRESENCE} signed presences already wait for a keyserver lookup")
                self.pending_presence[frm] = (status, sig)
                self.lookup(owner, out)
                return
            raise EngineError("unknown-signer", f"no key of {owner} made this signature (issuer {', '.join(issuers)})")
        fpr = next((f for f in candidates
                    if self.backend.verify_detached(sig, status.encode(), self.ring.get(owner, f)["cert"], now)), None)
        if fpr is None:
            raise EngineError("bad-signature", f"the presence signature of {frm} does not verify")
        if self.ring.trust_of(owner, fpr) == "untrusted":
            out.alert("untrusted-key", f"{frm} signed its presence with the untrusted key {fpr}")
        resource = frm.split("/", 1)[1] if "/" in frm else ""
        keys = self.presence_key.setdefault(owner, {})
        before = keys.get(resource)
        keys[resource] = fpr
        if before is not None and before != fpr:
            out.alert("presence-key-changed", f"{frm} now signs its presence with {fpr} (was {before})")

    def items(self, now, owner, node, items, complete, out):
        if node != NODE_KEYSERVER:
            return
        self.dir.answered(owner, NODE_KEYSERVER)
        first_answer = owner not in self.listed
        listed = self.listed.pop(owner, set())
        if complete:
            listed = set()
        room = max(0, MAX_KEYS_PER_ACCOUNT - len(listed))
        all_items = each_item(items)
        if len(all_items) > room:
            out.alert("too-many-keys", f"more than {MAX_KEYS_PER_ACCOUNT} keyserver keys for {owner}: the rest ignored")
        parsed = []
        for item in all_items[:room]:
            try:
                parsed.append(self.parse_item(item, owner, now))
            except EngineError as e:
                parsed.append(e)
        if first_answer:
            self.ring.pin_first(owner, {c.fpr for c in parsed if isinstance(c, Cert)})
        for c in parsed:
            if isinstance(c, Cert):
                if c.fpr == self.backend.fingerprint and owner == self.own:
                    listed.add(c.fpr)
                else:
                    self.ring.observe(owner, c, out)
                    listed.add(c.fpr)
            else:
                out.alert("bad-key", f"a keyserver item of {owner} was refused: {c}")
        self.listed[owner] = listed
        for frm in sorted(f for f in self.pending_presence if bare_of(f) == owner):
            status, sig = self.pending_presence.pop(frm)
            try:
                self.check_presence(now, owner, frm, status, sig, False, out)
            except EngineError as e:
                out.rejected(frm, e)
        self.flush(now, out)

    def parse_item(self, item, owner, now) -> Cert:
        pubkey = kit.child(item, NODE_KEYSERVER, "pubkey")
        if pubkey is None:
            raise EngineError("missing-element", "", "pubkey")
        cert = self.backend.read_cert(unb64("pubkey", text_of(pubkey)), now)
        if not cert.names_account(owner, strict=False):
            raise EngineError("key-not-for-account", f"key {cert.fpr} has no user ID naming {owner}")
        return cert

    def recipients(self, to, out) -> Optional[List[Cert]]:
        if to not in self.listed:
            self.lookup(to, out)
            return None

        def usable(owner, fprs):
            res = []
            for f in sorted(fprs or ()):
                k = self.ring.get(owner, f)
                if k is not None and k["state"] != "untrusted":
                    res.append(k["cert"])
            return res
        listed = self.listed.get(to, set())
        only = {f for f in self.presence_key.get(to, {}).values() if f in listed} if to in self.presence_key else None
        certs = usable(to, only) if only is not None and usable(to, only) else usable(to, listed)
        if not certs and to != self.own:
            return certs
        if to != self.own:
            certs += usable(self.own, self.listed.get(self.own))
        certs.append(self.own_cert())
        return certs

    def own_cert(self) -> Cert:
        return Cert(self.backend.public, self.backend.fingerprint, [], [])

    def encrypted(self, now, certs, body) -> str:
        return el("x", {}, text=armor_body(self.backend.encrypt(certs, body.encode(), now, False)), xmlns=NS_ENCRYPTED)

    def seal(self, now, to, body, parts, out):
        certs = self.recipients(to, out)
        if certs is None:
            return None
        if not certs:
            raise NotSent(f"no usable OpenPGP key of {to} is known")
        return el("message", {"to": to, "type": "chat"},
                  [el("body", text=FALLBACK_PGP), self.encrypted(now, certs, body)], xmlns=CLIENT)

    def send_message(self, now, to, body, parts):
        out = self.send(now, to, body)
        if parts:
            out.send(el("message", {"to": bare_of(to, "to"), "type": "chat"}, list(parts), xmlns=CLIENT))
        return out

    def message(self, now, s, out):
        if kit.local(s)[1] != "message":
            return
        x = kit.child(s, NS_ENCRYPTED, "x")
        if x is not None:
            frm = sender(s)
            data = dearmor_body(text_of(x))
            plain, _, _ = self.backend.decrypt(data, now, [])
            try:
                body = plain.decode("utf-8")
            except UnicodeDecodeError as e:
                raise EngineError("malformed", str(e), "body") from e
            # XEP-0027 §4: encrypted, never signed: the sender is not authenticated.
            out.plaintext(frm, body, "unverified")
            return
        self.unencrypted(s, out, "without XEP-0027 encryption")

    def failed(self, now, owner, node, condition, out):
        if node != NODE_KEYSERVER:
            return
        self.listed.setdefault(owner, set())
        for frm in sorted(f for f in self.pending_presence if bare_of(f) == owner):
            self.pending_presence.pop(frm)
            out.rejected(frm, EngineError(
                "unknown-signer", f"no key of {owner} on the keyserver ({condition}): presence not verified"))
        self.flush(now, out)

    def verify(self, now, peer, peer_says):
        peer = bare_of(peer, "peer")
        return self.ring.verify(peer, {normalise_fpr(s) for s in peer_says}, self.listed.get(peer, set()))

    def forge(self, now, frm, body):
        bare_of(frm, "from")
        x = self.encrypted(now, [self.own_cert()], body)
        return el("message", {"from": frm, "to": self.own, "type": "chat"},
                  [el("body", text=FALLBACK_PGP), x], xmlns=CLIENT)

    def forward(self, now, recorded, to, body):
        return None  # XEP-0027 messages carry no sender signature to reuse


class OxEngine(OpenPgpEngine):
    """XEP-0373/0374 (peers/e2e/src/openpgp/ox.rs)."""

    def __init__(self, me, policy, backend):
        super().__init__(me, policy, backend)
        self.announced: Dict[str, Set[str]] = {}
        self.missing: Dict[str, Set[str]] = {}

    def copy_rest(self, twin):
        import copy as _copy
        twin.announced = _copy.deepcopy(self.announced)
        twin.missing = _copy.deepcopy(self.missing)

    def presence(self, now):
        return []

    def receive_presence(self, now, stanza):
        kit.parse(stanza)
        return Output()

    @staticmethod
    def data_node(fpr):
        return f"{NODE_PUBLIC_KEYS}:{fpr}"

    def publish_metadata(self, now, fprs, out):
        date = format_stamp(now // 1000 * 1000)
        lst = el("public-keys-list", {}, [el("pubkey-metadata", {"v4-fingerprint": f, "date": date})
                                         for f in sorted(fprs)], xmlns=NS_OX)
        out.publish(NODE_PUBLIC_KEYS, "current", lst, (("pubsub#access_model", "open"),))

    def publish(self, now):
        date = format_stamp(now // 1000 * 1000)
        item = el("pubkey", {"date": date}, [el("data", text=b64(self.backend.public))], xmlns=NS_OX)
        out = Output().publish(self.data_node(self.backend.fingerprint), date, item,
                               (("pubsub#access_model", "open"),))
        self.dir.refetch(self.own, NODE_PUBLIC_KEYS, out)
        return out

    def items(self, now, owner, node, items, complete, out):
        if node == NODE_PUBLIC_KEYS:
            try:
                self.metadata(now, owner, items, complete, out)
            except EngineError as e:
                out.alert(e.code, f"the public-key list of {owner} is refused: {e.detail}")
                for frm, _ in self.dir.release(owner):
                    out.rejected(frm, e)
                self.dir.give_up(owner, f"its OpenPGP keys could not be read ({e.detail})", out)
        elif node and node.startswith(NODE_PUBLIC_KEYS + ":"):
            self.data(now, owner, node[len(NODE_PUBLIC_KEYS) + 1:], items, out)

    def metadata(self, now, owner, items, complete, out):
        self.dir.answered(owner, NODE_PUBLIC_KEYS)
        lists = [c for i in each_item(items) for c in i if kit.local(c) == (NS_OX, "public-keys-list")]
        if not lists:
            if not complete:
                self.dir.fetch(owner, NODE_PUBLIC_KEYS, out)
            return
        dated: Dict[str, int] = {}
        for meta in lists[-1]:
            if kit.local(meta) != (NS_OX, "pubkey-metadata"):
                continue
            fpr = meta.get("v4-fingerprint")
            if fpr is None:
                raise EngineError("missing-element", "", "v4-fingerprint")
            if len(fpr) != 40 or any(c not in "0123456789ABCDEF" for c in fpr):
                raise EngineError("malformed", f"`{fpr}`", "v4-fingerprint")
            dated[fpr] = max(dated.get(fpr, 0), parse_time(meta.get("date")) or 0)
        fprs = set(dated)
        if len(dated) > MAX_KEYS_PER_ACCOUNT:
            by_date = sorted(dated.items(), key=lambda kv: (-kv[1], kv[0]))
            fprs = {f for f, _ in by_date[:MAX_KEYS_PER_ACCOUNT]}
            out.alert("too-many-keys", f"{owner} announces more than {MAX_KEYS_PER_ACCOUNT} keys; the newest are used")
        ours = self.backend.fingerprint
        if owner == self.own and ours not in fprs:
            self.publish_metadata(now, fprs | {ours}, out)
        missing = set()
        for f in sorted(fprs):
            if not (owner == self.own and f == ours) and self.ring.get(owner, f) is None:
                missing.add(f)
                self.dir.fetch(owner, self.data_node(f), out)
        self.ring.pin_first(owner, fprs)
        self.announced[owner] = fprs
        self.missing[owner] = missing
        self.keys_arrived(now, owner, out)

    def data(self, now, owner, fpr, items, out):
        self.dir.answered(owner, self.data_node(fpr))
        if fpr not in self.announced.get(owner, ()) and fpr not in self.missing.get(owner, ()):
            return
        its = each_item(items)
        if its:
            def key(ni):
                n, i = ni
                p = kit.child(i, NS_OX, "pubkey")
                d = parse_time(p.get("date")) if p is not None else None
                return (d is not None, d or 0, n)
            _, item = max(enumerate(its), key=key)
            try:
                cert = self.parse_pubkey(item, owner, fpr, now)
                self.ring.observe(owner, cert, out)
            except EngineError as e:
                out.alert(e.code, f"public key {fpr} of {owner} refused: {e.detail or e.what}")
        self.missing.get(owner, set()).discard(fpr)
        self.keys_arrived(now, owner, out)

    def parse_pubkey(self, item, owner, fpr, now) -> Cert:
        pubkey = kit.child(item, NS_OX, "pubkey")
        if pubkey is None:
            raise EngineError("missing-element", "", "pubkey")
        data = kit.child(pubkey, NS_OX, "data")
        if data is None:
            raise EngineError("missing-element", "", "data")
        cert = self.backend.read_cert(unb64("data", text_of(data)), now)
        if cert.fpr != fpr:
            raise EngineError("fingerprint-mismatch", f"node {fpr} holds key {cert.fpr}")
        if not cert.names_account(owner, strict=True):
            raise EngineError("key-not-for-account", f"key {fpr} has no user ID xmpp:{owner}")
        return cert

    def keys_arrived(self, now, owner, out):
        if self.missing.get(owner):
            return
        self.flush(now, out)
        self.retry(now, owner, out)

    def usable(self, owner) -> List[Cert]:
        res = []
        for f in sorted(self.announced.get(owner, ())):
            if f == self.backend.fingerprint:
                continue
            k = self.ring.get(owner, f)
            if k is not None and k["state"] != "untrusted":
                res.append(k["cert"])
        return res

    def own_cert(self) -> Cert:
        return Cert(self.backend.public, self.backend.fingerprint, [], [])

    def seal(self, now, to, body, parts, out):
        if to not in self.announced:
            self.dir.fetch(to, NODE_PUBLIC_KEYS, out)
            return None
        if self.missing.get(to):
            return None
        certs = self.usable(to)
        if not certs and to != self.own:
            raise NotSent(f"no usable OpenPGP key of {to} is announced")
        certs.append(self.own_cert())
        if to != self.own:
            certs += self.usable(self.own)
        content = self.content("signcrypt", now, to, body, parts)
        return self.message_to(to, self.backend.encrypt(certs, content.encode(), now, True))

    def send_message(self, now, to, body, parts):
        for p in parts:
            kit.parse(p)
        out = Output()
        self.dir.pending.append((bare_of(to, "to"), body, list(parts)))
        self.flush(now, out)
        return out

    @staticmethod
    def content(name, now, to, body, parts=()) -> str:
        n = int.from_bytes(kit.RNG.read(4), "little") % 200
        pad = "".join(chr(PAD[b % len(PAD)]) for b in kit.RNG.read(n))
        return el(name, {}, [el("to", {"jid": to}), el("time", {"stamp": format_stamp(now)}),
                             el("rpad", text=pad) if pad else el("rpad"),
                             el("payload", {}, [el("body", text=body, xmlns=CLIENT)] + list(parts))], xmlns=NS_OX)

    @staticmethod
    def message_to(to, data) -> str:
        return el("message", {"to": to, "type": "chat"},
                  [el("openpgp", text=b64(data), xmlns=NS_OX),
                   el("encryption", {"namespace": NS_OX, "name": "OpenPGP for XMPP"}, xmlns=NS_EME),
                   el("body", text=FALLBACK_OX), el("store", xmlns=NS_HINTS)], xmlns=CLIENT)

    def message(self, now, s, out):
        if kit.local(s)[1] != "message":
            return
        if kit.child(s, NS_OX, "openpgp") is not None:
            self.receive_openpgp(now, s, True, out)
            return
        self.unencrypted(s, out, "without OX")

    def reread(self, now, s, out):
        self.receive_openpgp(now, s, False, out)

    def signers(self, owner) -> List[Cert]:
        res = [self.ring.get(owner, f)["cert"] for f in sorted(self.announced.get(owner, ()))
               if self.ring.get(owner, f) is not None]
        if owner == self.own:
            res.append(self.own_cert())
        return res

    def receive_openpgp(self, now, s, may_fetch, out):
        frm = sender(s)
        from_bare = bare_of(frm)
        to = s.get("to")
        outer_to = bare_of(to, "to") if to is not None else self.own
        if outer_to != self.own and from_bare != self.own:
            raise EngineError("not-for-us", f"addressed to {outer_to}")
        openpgp = kit.child(s, NS_OX, "openpgp")
        if openpgp is None:
            raise EngineError("missing-element", "", "openpgp")
        data = unb64("openpgp", text_of(openpgp))
        if not is_encrypted(data):
            raise EngineError("not-encrypted", "the OpenPGP message is not encrypted")
        plain, status, fpr = self.backend.decrypt(data, now, self.signers(from_bare))
        if status == "none":
            raise EngineError("not-signed", "an OpenPGP message without a signature (only <signcrypt/> is allowed)")
        if status in ("unknown", "unverified"):
            if may_fetch and self.dir.hold(frm, kit.serialize(s), out):
                self.dir.fetch(from_bare, NODE_PUBLIC_KEYS, out)
                return
            if status == "unknown":
                raise EngineError("unknown-signer", f"signed by a key that is not an announced key of {from_bare}")
            raise EngineError("not-signed", "no signature by an announced key of "
                              f"{from_bare} verifies (the tool reports verified signatures only: an unsigned "
                              "message, an unknown signer and a bad signature look the same)")
        if status == "bad":
            raise EngineError("bad-signature", f"from {frm}")
        try:
            text = plain.decode("utf-8")
        except UnicodeDecodeError as e:
            raise EngineError("malformed", str(e), "signcrypt") from e
        body, parts = self.check_signcrypt(now, text, outer_to)
        trust = "verified" if from_bare == self.own and fpr == self.backend.fingerprint \
            else self.ring.trust_of(from_bare, fpr)
        if trust == "untrusted":
            out.alert("untrusted-key", f"{frm} signed with the untrusted key {fpr}")
        if body is not None:
            out.plaintext(frm, body, trust)
        if parts:
            out.parts(frm, "message", parts)

    @staticmethod
    def check_signcrypt(now, text, outer_to):
        if len(text.encode()) > MAX_PLAINTEXT:
            raise EngineError("malformed", f"more than {MAX_PLAINTEXT} bytes", "signcrypt")
        depth = deepest = 0
        i = 0
        while True:  # the nesting, counted before the parser sees the text
            i = text.find("<", i)
            if i < 0:
                break
            nxt = text[i + 1:i + 2]
            end = text.find(">", i)
            if end < 0:
                break
            if nxt == "/":
                depth -= 1
            elif nxt not in ("?", "!") and text[end - 1] != "/":
                depth += 1
                deepest = max(deepest, depth)
            i = end + 1
        if deepest > MAX_DEPTH:
            raise EngineError("malformed", f"elements nested more than {MAX_DEPTH} deep", "signcrypt")
        content = kit.parse(text)
        if kit.local(content) != (NS_OX, "signcrypt"):
            raise EngineError("malformed", f"<{kit.local(content)[1]}/> where <signcrypt/> is required (XEP-0374 §3.1)",
                              "signcrypt")
        times = [c for c in content if kit.local(c) == (NS_OX, "time")]
        if len(times) != 1:
            raise EngineError("malformed", f"{len(times)} <time/> elements, exactly one required", "time")
        stamp = times[0].get("stamp")
        if stamp is None:
            raise EngineError("missing-element", "", "stamp")
        sent = parse_time(stamp)
        if sent is None:
            raise EngineError("malformed", stamp, "time")
        if sent > now + MAX_CLOCK_SKEW_MS:
            raise EngineError("time-implausible", f"sent at {stamp}, in the future")
        tos = []
        for c in content:
            if kit.local(c) == (NS_OX, "to") and c.get("jid"):
                try:
                    tos.append(bare_of(c.get("jid"), "to"))
                except EngineError:
                    pass
        if not tos:
            raise EngineError("missing-element", "", "to")
        if outer_to not in tos:
            raise EngineError("to-mismatch", f"signed for {tos}, delivered to {outer_to}")
        payloads = [c for c in content if kit.local(c) == (NS_OX, "payload")]
        if len(payloads) != 1:
            raise EngineError("malformed", f"{len(payloads)} <payload/> elements", "payload")
        body, parts = None, []
        for c in payloads[0]:
            ns, name = kit.local(c)
            if name == "body" and ns in (CLIENT, NS_SERVER):
                if body is None:
                    body = text_of(c)
                continue
            if ns in SERVER_PROCESSED:
                continue
            parts.append(kit.serialize(c))
        return body, parts

    def failed(self, now, owner, node, condition, out):
        if node == NODE_PUBLIC_KEYS:
            if owner == self.own:
                self.publish_metadata(now, {self.backend.fingerprint}, out)
                self.announced[owner] = {self.backend.fingerprint}
            else:
                self.announced.setdefault(owner, set())
                out.alert("no-public-key", f"{owner} announces no OpenPGP key ({condition})")
            self.missing.pop(owner, None)
            self.keys_arrived(now, owner, out)
        elif node.startswith(NODE_PUBLIC_KEYS + ":"):
            fpr = node[len(NODE_PUBLIC_KEYS) + 1:]
            out.alert("no-public-key", f"public key {fpr} of {owner} could not be fetched ({condition})")
            self.missing.get(owner, set()).discard(fpr)
            self.keys_arrived(now, owner, out)

    def verify(self, now, peer, peer_says):
        peer = bare_of(peer, "peer")
        return self.ring.verify(peer, {normalise_fpr(s) for s in peer_says}, self.announced.get(peer, set()))

    def forge(self, now, frm, body):
        return None  # a <signcrypt/> must be signed by the sender's key, which we do not hold

    def forward(self, now, recorded, to, body):
        to = bare_of(to, "to")
        s = kit.parse(recorded)
        openpgp = kit.child(s, NS_OX, "openpgp")
        if openpgp is None:
            raise EngineError("missing-element", "", "openpgp")
        data = unb64("openpgp", text_of(openpgp))
        inner = None
        if not body:
            inner = self.backend.unwrap_signed(data, now)
        else:
            self.backend.decrypt(data, now, [])
        nodes = [NODE_PUBLIC_KEYS] if to not in self.announced else \
            [self.data_node(f) for f in sorted(self.missing.get(to, ()))]
        if nodes:
            out = Output()
            for n in nodes:
                self.dir.refetch(to, n, out)
            return out
        certs = self.usable(to)
        if not certs:
            raise EngineError("policy", f"no usable OpenPGP key of {to} is announced")
        if not body:
            sealed = self.backend.encrypt_raw(certs, inner, now)
        else:
            sealed = self.backend.encrypt(certs, self.content("crypt", now, to, body).encode(), now, False)
        return Output().send(self.message_to(to, sealed))


# --- running a tool ------------------------------------------------------------------------------

def run_tool(cmd: List[str], data: bytes = b"", env: Optional[Dict[str, str]] = None,
             limit: Optional[int] = None, timeout: float = 20.0) -> Tuple[int, bytes, str]:
    """(exit status, standard output, standard error) of `cmd` fed `data`; with `limit`, at
    most limit+1 bytes of output are read (a decompression bomb is cut short, the tool
    stopped)."""
    import subprocess
    import tempfile
    import threading
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env)

        def feed():
            try:
                p.stdin.write(data)
                p.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        t = threading.Thread(target=feed, daemon=True)
        t.start()
        if limit is None:
            out = p.stdout.read()
        else:
            out = p.stdout.read(limit + 1)
            if len(out) > limit:
                p.kill()
        p.stdout.close()
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        t.join(1)
        err.seek(0)
        return rc, out, err.read().decode("utf-8", "replace")


_LIVE: List[Backend] = []
_ROOT: Dict[str, str] = {}

WATCHDOG = """
import os, shutil, subprocess, sys
root = sys.argv[1]
sys.stdin.buffer.read()  # ends when the adapter exits, however it ends (even SIGKILL)
for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    home = os.path.join(root, name)
    if os.path.exists(os.path.join(home, "pubring.kbx")):
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
shutil.rmtree(root, ignore_errors=True)
"""


def scratch(prefix: str) -> str:
    """A new private folder for one engine's files, inside this adapter process's own root
    (`/tmp/jw-<prefix>-...`), which a watchdog process removes when the adapter exits — even
    when it is killed — stopping the gpg agents started for the folders in it."""
    import os
    import subprocess
    import sys
    import tempfile
    root = _ROOT.get(prefix)
    if root is None:
        root = tempfile.mkdtemp(prefix=f"jw-{prefix}-")
        _ROOT[prefix] = root
        dog = subprocess.Popen([sys.executable, "-c", WATCHDOG, root], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _ROOT[prefix + "/dog"] = str(dog.pid)
        _DOGS.append(dog)  # its stdin stays open as long as this process lives
    d = tempfile.mkdtemp(dir=root)
    os.chmod(d, 0o700)
    return d


_DOGS: List[Any] = []


def track(b: Backend) -> Backend:
    """Keeps `b` to be closed when the adapter exits (its temporary files, gpg's agent)."""
    import atexit
    if not _LIVE:
        atexit.register(lambda: [x.close() for x in list(_LIVE)])
    _LIVE.append(b)
    return b


def tar_dir(path: str) -> str:
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(path, arcname=".", filter=lambda ti: None if ti.name.split("/")[-1].startswith("S.") else ti)
    return b64(buf.getvalue())


def untar_dir(blob: str, path: str) -> None:
    import io
    import tarfile
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(blob)), mode="r:gz") as tar:
        tar.extractall(path, filter="data")
