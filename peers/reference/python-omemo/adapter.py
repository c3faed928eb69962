"""python-omemo behind Jabberwock's engine protocol v1 (docs/engine-protocol.md): OMEMO 2
(`omemo`, urn:xmpp:omemo:2, backend twomemo, XEP-0420 SCE envelope) and OMEMO 0.3
(`omemo-legacy`, eu.siacs.conversations.axolotl, backend oldmemo), on the wire exactly as our
engine (peers/e2e/src/omemo) speaks them. Run: `python3 adapter.py omemo|omemo-legacy`.

python-omemo pulls device lists and bundles through callbacks that must answer at once; the
engine protocol is sans-I/O (a fetch goes out, its result comes back later as `receive`). So this
adapter keeps what PEP told it (device lists, bundles) and hands that to the library's callbacks:
a message waits (as our engine's directory does) until the recipient's device list and the
bundles of its devices without a session have been read, and a received message from a device
whose list entry or bundle is unknown waits until they have been read (python-omemo insists on
knowing the sender's device and its identity key from the bundle before it decrypts).
Everything cryptographic is python-omemo's (with twomemo/oldmemo, X3DH, DoubleRatchet, XEdDSA).
"""

import os
import sys

# Set iteration order of str/bytes depends on the hash seed; python-omemo iterates sets of
# devices and pre keys (which pre key a session uses, in what order sessions draw randomness):
# a fixed seed makes runs byte-identical. It must be set before the interpreter starts.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "kit"))
import jabberwock_adapter as kit  # noqa: E402  (first: it seeds Python's randomness)
from jabberwock_adapter import CLIENT, EngineError, Output, el  # noqa: E402

import asyncio  # noqa: E402
import base64  # noqa: E402
import copy  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import types  # noqa: E402
import xml.etree.ElementTree as ET  # noqa: E402
from typing import Any, Dict, FrozenSet, List, Optional, Set, Tuple  # noqa: E402

import omemo  # noqa: E402
from omemo.storage import Just, Maybe, Nothing, Storage  # noqa: E402
from omemo import session_manager as sm  # noqa: E402
from omemo.backend import DecryptionFailed, KeyExchangeFailed, TooManySkippedMessageKeys  # noqa: E402
import doubleratchet  # noqa: E402
import doubleratchet.models  # noqa: E402
from doubleratchet.recommended import diffie_hellman_ratchet_curve25519 as dh25519  # noqa: E402
from doubleratchet.diffie_hellman_ratchet import DoSProtectionException, DuplicateMessageException  # noqa: E402
from doubleratchet.aead import AuthenticationFailedException  # noqa: E402
import x3dh  # noqa: E402
import x3dh.base_state  # noqa: E402
import xeddsa  # noqa: E402
import twomemo  # noqa: E402
import twomemo.etree  # noqa: E402
import oldmemo  # noqa: E402
import oldmemo.etree  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey  # noqa: E402

logging.disable(logging.CRITICAL)

# --- determinism ----------------------------------------------------------------------------------

# The Double Ratchet's DH keys come from `cryptography` (OpenSSL's RNG): draw them from the call's
# seeded stream instead.
class _SeededX25519:
    @staticmethod
    def generate() -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(kit.RNG.read(32))

    from_private_bytes = staticmethod(X25519PrivateKey.from_private_bytes)


dh25519.X25519PrivateKey = _SeededX25519  # type: ignore[attr-defined]

# X3DH stamps signed pre keys with time.time(): the simulated clock instead.
CLOCK = [1767225600]
x3dh.base_state.time = types.SimpleNamespace(time=lambda: CLOCK[0])  # type: ignore[attr-defined]

# python-omemo keeps devices in sets of DeviceInformation tuples; a tuple's hash takes its
# label's, and hash(None) is the address of None (it changes run to run before Python 3.12):
# the order sessions are built in, and so who draws which random bytes, would change with it.
omemo.DeviceInformation.__hash__ = lambda d: hash((d.bare_jid, d.device_id, d.identity_key))  # type: ignore

LOOP = asyncio.new_event_loop()
asyncio.set_event_loop(LOOP)


def run(coro: Any) -> Any:
    return LOOP.run_until_complete(coro)


# --- constants ------------------------------------------------------------------------------------

PUBSUB = "http://jabber.org/protocol/pubsub"
PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
SCE = "urn:xmpp:sce:1"
EME = "urn:xmpp:eme:0"
HINTS = "urn:xmpp:hints"
CARBONS = "urn:xmpp:carbons:2"
SERVER_PROCESSED = {HINTS, "urn:xmpp:sid:0", "http://jabber.org/protocol/address", EME}
MAX_CLOCK_SKEW_S = 300
MAX_BUNDLE_READS = 3
MAX_HELD = 64
LEGACY_FALLBACK = ("I sent you an OMEMO encrypted message but your client doesn\u2019t seem to support that. "
                   "Find more information on https://conversations.im/omemo")


class Version:
    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.legacy = protocol == "omemo-legacy"
        if self.legacy:
            self.ns = oldmemo.oldmemo.NAMESPACE
            self.etree = oldmemo.etree
            self.backend = oldmemo.Oldmemo
            self.devices_node = "eu.siacs.conversations.axolotl.devicelist"
            self.bundle_prefix = "eu.siacs.conversations.axolotl.bundles:"
        else:
            self.ns = twomemo.twomemo.NAMESPACE
            self.etree = twomemo.etree
            self.backend = twomemo.Twomemo
            self.devices_node = "urn:xmpp:omemo:2:devices"
            self.bundle_prefix = None

    def bundle_node(self, device: int) -> str:
        return f"{self.bundle_prefix}{device}" if self.legacy else "urn:xmpp:omemo:2:bundles"


# --- storage --------------------------------------------------------------------------------------

class MemoryStorage(Storage):
    """python-omemo's storage in a dict of JSON values (its dump is the stolen `state`)."""

    def __init__(self, data: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(True)  # no cache: the dict is the truth (copies stay independent)
        self.data: Dict[str, Any] = data if data is not None else {}

    async def _load(self, key: str) -> Maybe[Any]:
        return Just(copy.deepcopy(self.data[key])) if key in self.data else Nothing()

    async def _store(self, key: str, value: Any) -> None:
        self.data[key] = copy.deepcopy(value)

    async def _delete(self, key: str) -> None:
        self.data.pop(key, None)


# --- the library's callbacks ------------------------------------------------------------------------

class Manager(omemo.SessionManager):
    """python-omemo's SessionManager, its XMPP side answered from the adapter's PEP cache."""

    engine: "OmemoEngine"

    async def _upload_bundle(self, bundle: omemo.Bundle) -> None:  # type: ignore[override]
        self.engine.publish_bundle(bundle)

    async def _download_bundle(self, namespace: str, bare_jid: str, device_id: int) -> omemo.Bundle:  # type: ignore[override]
        return self.engine.cached_bundle(bare_jid, device_id)

    async def _delete_bundle(self, namespace: str, device_id: int) -> None:  # type: ignore[override]
        pass

    async def _upload_device_list(self, namespace: str, device_list: Dict[int, Optional[str]]) -> None:  # type: ignore[override]
        self.engine.publish_devices(device_list)

    async def _download_device_list(self, namespace: str, bare_jid: str) -> Dict[int, Optional[str]]:  # type: ignore[override]
        return dict(self.engine.devices.get(bare_jid, {}))

    async def _evaluate_custom_trust_level(self, device: omemo.DeviceInformation) -> omemo.TrustLevel:
        name = device.trust_level_name
        if name in ("blind", "verified"):
            return omemo.TrustLevel.TRUSTED
        if name == "untrusted":
            # Not encrypted to; a message from it is still read and shown flagged (as our
            # engine does), so it is undecided, not distrusted, while decrypting.
            return omemo.TrustLevel.DISTRUSTED if self.engine.encrypting else omemo.TrustLevel.UNDECIDED
        if name == "undecided":
            return omemo.TrustLevel.UNDECIDED
        raise sm.UnknownTrustLevel(name)

    async def _make_trust_decision(self, undecided: FrozenSet[omemo.DeviceInformation], identifier: Optional[str]) -> None:
        for device in sorted(undecided, key=lambda d: (d.bare_jid, d.device_id)):
            await self.engine.decide(device)

    async def _send_message(self, message: omemo.Message, bare_jid: str) -> None:  # type: ignore[override]
        self.engine.send_empty(message, bare_jid)


# --- helpers ----------------------------------------------------------------------------------------

def bare(jid: str) -> str:
    return jid.split("/", 1)[0]


def xml_of(e: ET.Element) -> str:
    return kit.serialize(e)


def sort_keys(encrypted: ET.Element, ns: str) -> None:
    """python-omemo keeps a message's keys in a set (order varies run to run): sort them."""
    header = encrypted.find(f"{{{ns}}}header")
    if header is None:
        return
    kids = list(header)
    for k in kids:
        header.remove(k)
    groups = sorted((k for k in kids if k.tag == f"{{{ns}}}keys"), key=lambda k: k.get("jid", ""))
    for g in groups:
        keys = sorted(list(g), key=lambda k: int(k.get("rid", "0")))
        for k in list(g):
            g.remove(k)
        g.extend(keys)
    flat = sorted((k for k in kids if k.tag == f"{{{ns}}}key"), key=lambda k: int(k.get("rid", "0")))
    rest = [k for k in kids if k.tag not in (f"{{{ns}}}keys", f"{{{ns}}}key")]
    header.extend(groups + flat + rest)


def stamp(now_ms: int) -> str:
    import datetime
    t = datetime.datetime.fromtimestamp(now_ms // 1000, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{now_ms % 1000:03d}Z"


def parse_stamp(s: str) -> Optional[float]:
    import datetime
    import re
    m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?Z", s)
    if not m:
        return None
    try:
        t = datetime.datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), min(int(m[6]), 59),
                              tzinfo=datetime.timezone.utc)
    except ValueError:
        return None
    return t.timestamp()


# Exceptions that mean a bug of this adapter, never hostile input: they crash it (the caller
# reports adapter-crashed with the traceback).
BUGS = (NameError, AttributeError, AssertionError, UnboundLocalError)


def cause_chain(e: BaseException) -> List[BaseException]:
    out = []
    seen: Set[int] = set()
    cur: Optional[BaseException] = e
    while cur is not None and id(cur) not in seen:
        out.append(cur)
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return out


def library_error(e: BaseException, what: str) -> EngineError:
    """A typed error for what python-omemo raised on input from the network."""
    if os.environ.get("OMEMO_ADAPTER_DEBUG"):
        import traceback
        traceback.print_exception(e, file=sys.stderr)
    chain = cause_chain(e)
    text = "; ".join(f"{type(c).__name__}: {c}" for c in chain if str(c) or True)[:400]
    kinds = [type(c) for c in chain]
    def has(*classes: type) -> bool:
        return any(issubclass(k, classes) for k in kinds)
    if has(sm.PublicDataInconsistency):
        return EngineError("identity-changed", f"python-omemo: {text}")
    if has(sm.SenderDistrusted):
        return EngineError("untrusted-device", f"python-omemo: {text}")
    if has(sm.SenderNotFound):
        return EngineError("no-bundle", f"python-omemo: {text}")
    if has(sm.NoSession):
        return EngineError("no-session", f"python-omemo: {text}")
    if has(DuplicateMessageException):
        return EngineError("no-message-key", f"python-omemo: {text}")
    if has(DoSProtectionException, TooManySkippedMessageKeys):
        return EngineError("too-many-skipped", f"python-omemo: {text}")
    if has(KeyExchangeFailed):
        if "pre key" in text and "known" in text:
            return EngineError("unknown-prekey", f"python-omemo: {text}")
        if has(xeddsa.XEdDSAException) or "signature" in text.lower():
            return EngineError("bad-signature", f"python-omemo: {text}")
        return EngineError("bad-mac", f"python-omemo: {text}")
    if has(AuthenticationFailedException) or "Authentication tag" in text or "Header mismatch" in text:
        return EngineError("bad-mac", f"python-omemo: {text}")
    if has(doubleratchet.DecryptionFailedException) or "padding" in text.lower():
        return EngineError("bad-padding", f"python-omemo: {text}")
    if has(DecryptionFailed):
        # A ratchet message that no chain can read (its header unknown, its key gone).
        return EngineError("no-message-key", f"python-omemo: {text}")
    return EngineError("malformed", f"python-omemo: {text}", what)


# --- the engine ---------------------------------------------------------------------------------------

class OmemoEngine(kit.Engine):
    VERSION: Version

    def __init__(self) -> None:
        self.v = self.VERSION
        self.me = ""
        self.own = ""
        self.policy = "btbv"
        self.storage = MemoryStorage()
        self.manager: Manager
        self.device = 0
        self.fp = ""
        # PEP as read: device lists (bare -> {id: label}), bundles ((bare, id) -> XML text, or
        # None: read and absent), reads that came back without a bundle.
        self.devices: Dict[str, Dict[int, Optional[str]]] = {}
        self.bundles: Dict[Tuple[str, int], Optional[str]] = {}
        self.missing_reads: Dict[Tuple[str, int], int] = {}
        self.due: Set[Tuple[str, int]] = set()
        self.asked: Set[Tuple[str, str]] = set()
        self.pending: List[Tuple[str, str, List[str]]] = []
        self.held: List[str] = []
        self.verified_peers: Set[str] = set()
        # Per call.
        self.out = Output()
        self.encrypting = False
        self.reply_to: Optional[str] = None
        self.now = 0
        self.quiet = False

    # ---- construction ----

    @classmethod
    def create(cls, me: str, config: Dict[str, Any], rng: kit.Stream) -> "OmemoEngine":
        e = cls()
        e.me, e.own = me, bare(me)
        e.policy = (config or {}).get("trust") or "btbv"
        if e.policy not in ("btbv", "tofu", "manual"):
            raise EngineError("policy", f"unknown trust policy {e.policy}")
        e.quiet = True  # what the library uploads while it is created goes out at `publish`
        run(e.start())
        e.quiet = False
        return e

    async def start(self) -> None:
        self.manager = await self._create()
        await self.manager.after_history_sync()
        self.device = (await self.storage.load_primitive("/own_device_id", int)).from_just()
        own, _ = await self.manager.get_own_device_information()
        ik = own.identity_key
        self.fp = self.wire_ik(ik).hex()

    async def _create(self) -> Manager:
        # The callbacks need the engine; SessionManager.create builds the instance itself.
        engine = self

        class Bound(Manager):
            pass

        Bound.engine = engine  # type: ignore[misc]
        return await Bound.create([self.v.backend(self.storage)], self.storage, self.own, None, "undecided")

    def wire_ik(self, ed25519: bytes) -> bytes:
        """The IdentityKey as this version's wire carries it (0.3: its Curve25519 form)."""
        return xeddsa.ed25519_pub_to_curve25519_pub(ed25519) if self.v.legacy else ed25519

    def device_id(self) -> Optional[str]:
        return str(self.device)

    # ---- per call ----

    def begin(self, now: int) -> Output:
        self.now = now
        CLOCK[0] = now // 1000
        self.out = Output()
        return self.out

    # ---- library callbacks ----

    def publish_bundle(self, bundle: omemo.Bundle) -> None:
        if self.quiet:
            return
        item = xml_of(self.v.etree.serialize_bundle(bundle))
        if self.v.legacy:
            self.out.publish(self.v.bundle_node(self.device), "current", item, (("pubsub#access_model", "open"),))
        else:
            self.out.publish(self.v.bundle_node(self.device), str(self.device), item,
                             (("pubsub#max_items", "max"), ("pubsub#access_model", "open")))

    def publish_devices(self, device_list: Dict[int, Optional[str]]) -> None:
        if self.quiet:
            return
        self.devices[self.own] = dict(device_list)
        item = xml_of(self.v.etree.serialize_device_list(dict(sorted(device_list.items()))))
        self.out.publish(self.v.devices_node, "current", item, (("pubsub#access_model", "open"),))

    def cached_bundle(self, owner: str, device: int) -> omemo.Bundle:
        text = self.bundles.get((owner, device))
        if text is None:
            if (owner, device) in self.bundles:
                raise sm.BundleNotFound(f"no bundle of device {device} of {owner} on PEP")
            raise sm.BundleDownloadFailed(f"the bundle of device {device} of {owner} was not read")
        return self.v.etree.parse_bundle(ET.fromstring(text), owner, device)

    def send_empty(self, message: omemo.Message, to: str) -> None:
        encrypted = self.v.etree.serialize_message(message)
        sort_keys(encrypted, self.v.ns)
        stanza = el("message", {"to": self.reply_to if self.reply_to and bare(self.reply_to) == to else to,
                                "type": "chat"},
                    [xml_of(encrypted), el("private", xmlns=CARBONS), el("no-copy", xmlns=HINTS),
                     el("store", xmlns=HINTS)], xmlns=CLIENT)
        self.out.send(stanza)

    # ---- trust ----

    def first_sight(self, owner: str) -> str:
        if self.policy == "tofu":
            return "blind"
        if self.policy == "btbv":
            return "untrusted" if owner in self.verified_peers else "blind"
        return "untrusted"

    async def decide(self, device: omemo.DeviceInformation) -> str:
        level = self.first_sight(device.bare_jid)
        await self.manager.set_trust(device.bare_jid, device.identity_key, level)
        self.out.trust_changed(device.bare_jid, str(device.device_id), self.wire_ik(device.identity_key).hex(),
                               self.shown(level))
        return level

    @staticmethod
    def shown(level: str) -> str:
        return {"blind": "unverified", "verified": "verified"}.get(level, "untrusted")

    async def trust_level(self, owner: str, ik: bytes) -> str:
        key = f"/trust/{owner}/{base64.urlsafe_b64encode(ik).decode('ascii')}"
        return (await self.storage.load_primitive(key, str)).maybe("undecided")

    async def known_devices(self, owner: str) -> List[Tuple[int, bytes]]:
        ids = (await self.storage.load_list(f"/devices/{owner}/list", int)).maybe([])
        out = []
        for d in sorted(ids):
            if owner == self.own and d == self.device:
                continue
            ik = (await self.storage.load_bytes(f"/devices/{owner}/{d}/identity_key")).maybe(None)
            if ik is not None:
                out.append((d, ik))
        return out

    async def has_session(self, owner: str, device: int) -> bool:
        return f"/{self.v.ns}/{owner}/{device}/double_ratchet" in self.storage.data

    # ---- PEP reads ----

    def fetch(self, owner: str, node: str) -> None:
        if (owner, node) not in self.asked:
            self.asked.add((owner, node))
            self.out.fetch(owner, node)

    def needs_bundle(self, owner: str, device: int, has_session: bool) -> bool:
        key = (owner, device)
        if has_session or self.bundles.get(key) is not None:
            return False
        if key in self.bundles:  # read, absent: again only when a new message is due
            return key in self.due
        return True

    def bundle_missing(self, owner: str, device: int, why: str) -> None:
        key = (owner, device)
        self.bundles[key] = None
        self.due.discard(key)
        reads = self.missing_reads.get(key, 0) + 1
        self.missing_reads[key] = reads
        then = "read again with the next message" if reads < MAX_BUNDLE_READS else "not read again"
        self.out.alert("no-bundle", f"device {device} of {owner} is on its device list but has no bundle ({why}): "
                                    f"not encrypted to; read {reads} of {MAX_BUNDLE_READS}, {then}")

    async def waiting_for(self, owner: str) -> List[int]:
        """Listed devices of `owner` (ours but this one) whose bundle is still to be read."""
        ids = self.devices.get(owner)
        if ids is None:
            return []
        out = []
        for d in sorted(ids):
            if owner == self.own and d == self.device:
                continue
            if self.needs_bundle(owner, d, await self.has_session(owner, d)):
                out.append(d)
        return out

    async def pep(self, stanza: ET.Element) -> bool:
        """PEP items in an iq result or a notification; True if the stanza carried some."""
        items = None
        complete = False
        ps = stanza.find(f"{{{PUBSUB}}}pubsub")
        if ps is not None and stanza.tag == f"{{{CLIENT}}}iq" and stanza.get("type") == "result":
            items = ps.find(f"{{{PUBSUB}}}items")
            complete = True
        ev = stanza.find(f"{{{PUBSUB_EVENT}}}event")
        if items is None and ev is not None and stanza.tag == f"{{{CLIENT}}}message":
            items = ev.find(f"{{{PUBSUB_EVENT}}}items")
        if items is None:
            return ps is not None or ev is not None
        frm = stanza.get("from")
        owner = bare(frm) if frm else self.own
        node = items.get("node", "")
        item_tag = f"{{{PUBSUB}}}item" if complete else f"{{{PUBSUB_EVENT}}}item"
        each = [i for i in items if i.tag == item_tag]
        ns = self.v.ns
        if complete:
            self.asked.discard((owner, node))  # a fetch answered (a notification answers none)
        if node == self.v.devices_node:
            listing: Dict[int, Optional[str]] = {}
            for item in each[-1:]:
                lst = item.find(f"{{{ns}}}{'list' if self.v.legacy else 'devices'}")
                if lst is None:
                    continue
                try:
                    listing = self.v.etree.parse_device_list(lst)
                except Exception as e:  # noqa: BLE001 - hostile XML
                    raise library_error(e, "device list") from e
            for d in list(self.missing_reads):
                if d[0] == owner and d[1] not in listing:
                    self.missing_reads.pop(d, None)
                    self.bundles.pop(d, None)
            self.devices[owner] = listing
            await self.manager.update_device_list(ns, owner, listing)
        elif not self.v.legacy and node == self.v.bundle_node(0):
            for item in each:
                try:
                    d = int(item.get("id", ""))
                    b = item.find(f"{{{ns}}}bundle")
                    if b is None:
                        raise ValueError("no <bundle/> in the item")
                    self.v.etree.parse_bundle(b, owner, d)
                except Exception as e:  # noqa: BLE001
                    raise library_error(e, "bundle") from e
                self.bundles[(owner, d)] = xml_of(b)
                self.missing_reads.pop((owner, d), None)
            if complete:
                for d in await self.waiting_for(owner):
                    self.bundle_missing(owner, d, "its bundles node has no item for it")
        elif self.v.legacy and node.startswith(self.v.bundle_prefix or "\0"):
            try:
                d = int(node[len(self.v.bundle_prefix or ""):])
            except ValueError as e:
                raise EngineError("malformed", f"bundle node {node}", "bundle node") from e
            if each:
                b = each[-1].find(f"{{{ns}}}bundle")
                try:
                    if b is None:
                        raise ValueError("no <bundle/> in the item")
                    self.v.etree.parse_bundle(b, owner, d)
                except Exception as e:  # noqa: BLE001
                    raise library_error(e, "bundle") from e
                self.bundles[(owner, d)] = xml_of(b)
                self.missing_reads.pop((owner, d), None)
            elif complete and d in await self.waiting_for(owner):
                self.bundle_missing(owner, d, "its bundle node is empty")
        else:
            return True
        await self.flush()
        await self.retry(owner)
        return True

    # ---- sending ----

    def envelope(self, to: str, body: str, parts: List[str], sender: Optional[str] = None) -> bytes:
        pad_len = int.from_bytes(kit.RNG.read(4), "big") % 200
        raw = kit.RNG.read(32)
        pad = "".join(chr(ord("a") + raw[i % 32] % 26) for i in range(pad_len))
        content = el("content", None, [el("body", text=body, xmlns=CLIENT)] + list(parts))
        env = el("envelope", None, [content, el("rpad", text=pad), el("time", {"stamp": stamp(self.now)}),
                                    el("to", {"jid": to}), el("from", {"jid": sender or self.own})], xmlns=SCE)
        return env.encode("utf-8")

    async def seal(self, to: str, body: str, parts: List[str]) -> Optional[str]:
        """The stanza for a waiting message; None while PEP reads are due; NotSent raised."""
        if to not in self.devices:
            self.fetch(to, self.v.devices_node)
            return None
        waiting = False
        for owner in ([to, self.own] if to != self.own else [to]):
            for d in await self.waiting_for(owner):
                if not await self.trust_known_untrusted(owner, d):
                    self.fetch(owner, self.v.bundle_node(d))
                    waiting = True
        if waiting:
            return None
        plaintext = body.encode("utf-8") if self.v.legacy else self.envelope(to, body, parts)
        self.encrypting = True
        try:
            messages, errors = await self.manager.encrypt(frozenset([to]), {self.v.ns: plaintext})
        except sm.NoEligibleDevices as e:
            raise NotSent(f"{to} has no trusted OMEMO device") from e
        except (sm.StillUndecided, sm.TrustDecisionFailed) as e:
            raise NotSent(f"trust undecided: {e}") from e
        except BUGS:
            raise
        except Exception as e:  # noqa: BLE001 - a hostile bundle, say
            raise NotSent(library_error(e, "bundle").detail) from e
        finally:
            self.encrypting = False
        for err in sorted(errors, key=lambda x: (x.bare_jid, x.device_id)):
            if isinstance(err.exception, sm.BundleNotFound):
                continue  # reported when the read came back (no-bundle)
            reason = library_error(err.exception, "bundle")
            self.out.alert(reason.code if reason.code != "malformed" else "no-bundle",
                           f"device {err.device_id} of {err.bare_jid}: {reason.detail}")
        if not messages:
            raise NotSent(f"{to} has no trusted OMEMO device")
        (message,) = list(messages.keys())
        encrypted = self.v.etree.serialize_message(message)
        sort_keys(encrypted, self.v.ns)
        if not any(k.get("jid") == to for k in encrypted.iter(f"{{{self.v.ns}}}keys")) and not self.v.legacy:
            raise NotSent(f"{to} has no trusted OMEMO device")
        kids = [xml_of(encrypted)]
        if self.v.legacy:
            kids.append(el("body", text=LEGACY_FALLBACK))
        kids += [el("encryption", {"namespace": self.v.ns, "name": "OMEMO"}, xmlns=EME),
                 el("store", xmlns=HINTS)]
        return el("message", {"to": to, "type": "chat"}, kids, xmlns=CLIENT)

    async def trust_known_untrusted(self, owner: str, device: int) -> bool:
        """A device whose key we hold and do not trust: its bundle is not needed."""
        ik = (await self.storage.load_bytes(f"/devices/{owner}/{device}/identity_key")).maybe(None)
        return ik is not None and await self.trust_level(owner, ik) == "untrusted"

    async def flush(self) -> None:
        pending, self.pending = self.pending, []
        for to, body, parts in pending:
            try:
                stanza = await self.seal(to, body, parts)
            except NotSent as why:
                self.out.alert("not-sent", f"to {to}: {why}")
                continue
            if stanza is None:
                self.pending.append((to, body, parts))
            else:
                self.out.send(stanza)

    async def queue(self, to: str, body: str, parts: List[str]) -> None:
        for key in list(self.bundles):
            if self.bundles[key] is None and key[0] in (to, self.own) and \
                    self.missing_reads.get(key, 0) < MAX_BUNDLE_READS:
                self.due.add(key)
        self.pending.append((to, body, parts))
        await self.flush()

    # ---- receiving ----

    def key_for_me(self, encrypted: ET.Element) -> bool:
        ns = self.v.ns
        header = encrypted.find(f"{{{ns}}}header")
        if header is None:
            raise EngineError("missing-element", "no <header/>", "header")
        rid = str(self.device)
        if self.v.legacy:
            return any(k.get("rid") == rid for k in header.findall(f"{{{ns}}}key"))
        return any(k.get("rid") == rid for g in header.findall(f"{{{ns}}}keys") if g.get("jid") == self.own
                   for k in g.findall(f"{{{ns}}}key"))

    async def sender_known(self, sender: str, sid: int) -> bool:
        if sid not in self.devices.get(sender, {}):
            return False
        ik = (await self.storage.load_bytes(f"/devices/{sender}/{sid}/identity_key")).maybe(None)
        return ik is not None or (sender, sid) in self.bundles

    async def decrypt(self, stanza: ET.Element, first: bool) -> None:
        ns = self.v.ns
        encrypted = stanza.find(f"{{{ns}}}encrypted")
        assert encrypted is not None
        frm = stanza.get("from")
        if not frm:
            raise EngineError("missing-element", "the message has no sender", "from")
        sender = bare(frm)
        header = encrypted.find(f"{{{ns}}}header")
        if header is None:
            raise EngineError("missing-element", "no <header/>", "header")
        try:
            sid = int(header.get("sid", ""))
            if not 1 <= sid <= 0x7FFFFFFF:
                raise ValueError
        except ValueError as e:
            raise EngineError("malformed", f"sid `{header.get('sid')}` is not a device id", "sid") from e
        payload = encrypted.find(f"{{{ns}}}payload")
        if not self.key_for_me(encrypted):
            if payload is not None:
                self.out.alert("not-for-this-device",
                               f"an OMEMO message from {frm} carries no key for device {self.device}")
            return
        if first and not await self.sender_known(sender, sid) and len(self.held) < MAX_HELD:
            # python-omemo reads the sender's device list and bundle first: read them, then this.
            if sid not in self.devices.get(sender, {}):
                self.asked.discard((sender, self.v.devices_node))
                self.fetch(sender, self.v.devices_node)
            if (sender, sid) not in self.bundles:
                self.fetch(sender, self.v.bundle_node(sid))
            self.held.append(kit.serialize(stanza))
            return
        try:
            if self.v.legacy:
                message = await oldmemo.etree.parse_message(encrypted, sender, self.own, self.manager)
            else:
                message = twomemo.etree.parse_message(encrypted, sender)
        except Exception as e:  # noqa: BLE001 - hostile input
            raise library_error(e, "encrypted") from e
        self.reply_to = frm
        try:
            plaintext, device, _key = await self.manager.decrypt(message)
        except sm.MessageNotForUs:
            return
        except BUGS:
            raise
        except Exception as e:  # noqa: BLE001 - whatever the library raises on hostile input
            raise library_error(e, "encrypted") from e
        finally:
            self.reply_to = None
        if plaintext is None:
            return  # an empty OMEMO message: session management only
        parts: List[str] = []
        if self.v.legacy:
            try:
                body = plaintext.decode("utf-8")
            except UnicodeDecodeError as e:
                raise EngineError("malformed", str(e), "payload") from e
        else:
            body, parts = self.check_envelope(stanza, sender, plaintext)
        level = device.trust_level_name
        if level == "undecided":
            level = await self.decide(device)
        if level == "untrusted":
            self.out.alert("untrusted-device", f"device {sid} of {sender} is not trusted")
        self.out.plaintext(frm, body, self.shown(level))
        if parts:
            self.out.parts(frm, "message", parts)

    def check_envelope(self, stanza: ET.Element, sender: str, plaintext: bytes) -> Tuple[str, List[str]]:
        try:
            env = ET.fromstring(plaintext.decode("utf-8"))
        except (ET.ParseError, UnicodeDecodeError) as e:
            raise EngineError("malformed", f"the envelope: {e}", "envelope") from e
        if env.tag != f"{{{SCE}}}envelope":
            raise EngineError("malformed", "not an SCE envelope", "envelope")
        if env.find(f"{{{SCE}}}rpad") is None:
            raise EngineError("missing-element", "no <rpad/>", "rpad")
        f = env.find(f"{{{SCE}}}from")
        if f is not None and f.get("jid") is not None and f.get("jid") != sender:
            raise EngineError("sce-from-mismatch", f"envelope from {f.get('jid')}, stanza from {sender}")
        t = env.find(f"{{{SCE}}}to")
        if t is not None and t.get("jid") is not None and stanza.get("to") and bare(stanza.get("to", "")) != t.get("jid"):
            raise EngineError("sce-to-mismatch", f"envelope to {t.get('jid')}, stanza to {stanza.get('to')}")
        tm = env.find(f"{{{SCE}}}time")
        if tm is not None and tm.get("stamp") is not None:
            sent = parse_stamp(tm.get("stamp", ""))
            if sent is None:
                raise EngineError("malformed", tm.get("stamp", ""), "time")
            if sent > self.now // 1000 + MAX_CLOCK_SKEW_S:
                raise EngineError("sce-time-mismatch", f"sent at {tm.get('stamp')}, in the future")
        content = env.find(f"{{{SCE}}}content")
        if content is None:
            raise EngineError("missing-element", "no <content/>", "content")
        b = content.find(f"{{{CLIENT}}}body")
        body = "" if b is None else "".join(b.itertext())
        parts = [kit.serialize(c) for c in content
                 if c.tag != f"{{{CLIENT}}}body" and kit.local(c)[0] not in SERVER_PROCESSED]
        return body, parts

    async def retry(self, owner: str) -> None:
        held, self.held = self.held, []
        for text in held:
            st = ET.fromstring(text)
            if bare(st.get("from", "")) != owner:
                self.held.append(text)
                continue
            if any(o == owner for o, _ in self.asked):
                self.held.append(text)  # more of the sender's PEP is on its way
                continue
            try:
                await self.decrypt(st, first=False)
            except EngineError as err:
                self.out.rejected(st.get("from", owner), err)

    # ---- the calls ----

    def publish(self, now: int) -> Output:
        out = self.begin(now)

        async def go() -> None:
            self.publish_bundle(await self.own_bundle())
            self.asked.discard((self.own, self.v.devices_node))
            self.fetch(self.own, self.v.devices_node)
        run(go())
        return out

    async def own_bundle(self) -> omemo.Bundle:
        backend = self.manager._SessionManager__backends[0]  # type: ignore[attr-defined]
        return await backend.get_bundle(self.own, self.device)

    def going_offline(self, now: int) -> Output:
        return self.begin(now)

    def presence(self, now: int) -> List[str]:
        return []

    def receive_presence(self, now: int, stanza: str) -> Output:
        return self.begin(now)

    def send(self, now: int, to: str, body: str) -> Output:
        out = self.begin(now)
        run(self.queue(bare(to), body, []))
        return out

    def send_message(self, now: int, to: str, body: str, parts: List[str]) -> Output:
        out = self.begin(now)
        for p in parts:
            kit.parse(p)
        if self.v.legacy:
            # OMEMO 0.3 encrypts the body alone: the other parts go in clear beside it.
            run(self.queue(bare(to), body, []))
            if parts:
                out.send(el("message", {"to": bare(to), "type": "chat"}, parts, xmlns=CLIENT))
        else:
            run(self.queue(bare(to), body, parts))
        return out

    def send_presence(self, now: int, to: str, status: str) -> Output:
        return self.begin(now).send(el("presence", {"to": to}, [el("status", text=status)], xmlns=CLIENT))

    def send_iq(self, now: int, to: str, payload: str) -> Output:
        kit.parse(payload)
        return self.begin(now).send(el("iq", {"type": "set", "to": to}, [payload], xmlns=CLIENT))

    def receive(self, now: int, stanza: str) -> Output:
        out = self.begin(now)
        st = kit.parse(stanza)

        async def go() -> None:
            if await self.pep(st):
                return
            if st.tag != f"{{{CLIENT}}}message":
                return
            if st.find(f"{{{self.v.ns}}}encrypted") is not None:
                await self.decrypt(st, first=True)
                return
            b = st.find(f"{{{CLIENT}}}body")
            if b is not None:
                frm = st.get("from") or self.own
                out.alert("unencrypted", f"{frm} sent a message without OMEMO")
                out.plaintext(frm, "".join(b.itertext()), "unencrypted")
        run(go())
        return out

    def drain(self, now: int) -> Output:
        return self.begin(now)

    def fetch_failed(self, now: int, owner: str, node: str, condition: str) -> Output:
        out = self.begin(now)

        async def go() -> None:
            self.asked.discard((owner, node))
            if node == self.v.devices_node:
                self.devices[owner] = {}
                await self.manager.update_device_list(self.v.ns, owner, {})
            elif not self.v.legacy and node == self.v.bundle_node(0):
                for d in await self.waiting_for(owner):
                    self.bundle_missing(owner, d, f"its bundles node could not be read: {condition}")
            elif self.v.legacy and node.startswith(self.v.bundle_prefix or "\0"):
                try:
                    d = int(node[len(self.v.bundle_prefix or ""):])
                except ValueError:
                    return
                if d in await self.waiting_for(owner) or (owner, d) not in self.bundles:
                    self.bundle_missing(owner, d, f"its bundle node could not be read: {condition}")
            else:
                return
            await self.flush()
            await self.retry(owner)
        run(go())
        return out

    def verify(self, now: int, peer: str, peer_says: List[str]) -> Output:
        out = self.begin(now)
        peer = bare(peer)

        async def go() -> None:
            seen = 0
            result = "match"
            for d, ik in await self.known_devices(peer):
                seen += 1
                fp = self.wire_ik(ik).hex()
                before = await self.trust_level(peer, ik)
                after = "verified" if fp in peer_says else "untrusted"
                await self.manager.set_trust(peer, ik, after)
                if before != after or self.shown(before) != self.shown(after):
                    out.trust_changed(peer, str(d), fp, self.shown(after))
                if after == "untrusted":
                    result = "mismatch"
                    out.alert("fingerprint-mismatch", f"device {d} of {peer}: {fp} is not what the peer shows")
            if seen:
                self.verified_peers.add(peer)
            else:
                result = "nothing-to-compare"
                out.alert("nothing-to-verify", f"no key of {peer} seen yet")
            out.verification(peer, result)
        run(go())
        return out

    def out_of_band(self) -> List[str]:
        return [self.fp]

    def ceremony(self, peer: str) -> Optional[Dict[str, Any]]:
        return {"kind": "compare", "text": self.fp}

    def identity_marks(self) -> List[Dict[str, str]]:
        return [{"name": "identity key", "hex": self.fp}]

    def peer_marks(self, peer: str) -> List[Dict[str, str]]:
        return []

    def owns_part(self, part: str) -> bool:
        return False

    def message_id(self, to: str) -> Optional[str]:
        return None

    def forge(self, now: int, frm: str, body: str) -> Optional[str]:
        self.begin(now)
        return run(self.forge_async(frm, body))

    async def forge_async(self, frm: str, body: str) -> Optional[str]:
        """Deniability: a message this device accepts as `frm`'s, made from its own state alone.
        Its session with a device of `frm` holds the root key both sides share: the library's
        own Diffie-Hellman ratchet, started from that root key against this device's current
        ratchet key with a fresh one of "the sender's", makes the next sending chain the sender
        would make after a ratchet step, and the library's Double Ratchet encrypts the payload
        key with it (this device then takes the message for a new ratchet step of the sender)."""
        sender = bare(frm)
        prefix = f"/{self.v.ns}/{sender}/"
        devices = sorted(int(k[len(prefix):].split("/")[0]) for k in self.storage.data
                         if k.startswith(prefix) and k.endswith("/double_ratchet"))
        if not devices:
            return None
        sid = devices[0]
        backend = self.manager._SessionManager__backends[0]  # type: ignore[attr-defined]
        session = await backend.load_session(sender, sid)
        if session is None:
            return None
        mod = oldmemo.oldmemo if self.v.legacy else twomemo.twomemo
        theirs = session.double_ratchet.model.diffie_hellman_ratchet
        mine_pub = dh25519.DiffieHellmanRatchet._derive_pub(theirs.own_ratchet_priv)
        threshold = backend.max_num_per_message_skipped_keys
        dh = await dh25519.DiffieHellmanRatchet.create(
            None, mine_pub, mod.RootChainKDFImpl, theirs.root_chain.key, mod.MessageChainKDFImpl,
            mod.DoubleRatchetImpl.MESSAGE_CHAIN_CONSTANT, threshold)
        model = doubleratchet.models.DoubleRatchetModel(diffie_hellman_ratchet=dh.model, skipped_message_keys=[])
        mirror = mod.DoubleRatchetImpl.from_model(
            model, dh25519.DiffieHellmanRatchet, mod.RootChainKDFImpl, mod.MessageChainKDFImpl,
            mod.DoubleRatchetImpl.MESSAGE_CHAIN_CONSTANT, threshold, backend.max_num_per_session_skipped_keys,
            mod.AEADImpl)
        plaintext = body.encode("utf-8") if self.v.legacy else self.envelope(self.own, body, [], sender=sender)
        content, key = await backend.encrypt_plaintext(plaintext)
        encrypted_message = await mirror.encrypt_message(key.key + key.auth_tag, session.associated_data)
        ekm = mod.EncryptedKeyMaterialImpl(self.own, self.device, encrypted_message)
        message = omemo.Message(self.v.ns, sender, sid, content, frozenset({(ekm, None)}))
        encrypted = self.v.etree.serialize_message(message)
        return el("message", {"from": frm, "to": self.own, "type": "chat"}, [xml_of(encrypted)], xmlns=CLIENT)

    def forward(self, now: int, recorded: str, to: str, body: str) -> Optional[Output]:
        return None  # OMEMO messages carry no sender signature to reuse

    def reencrypt(self, now: int, stanza: str, body: str) -> Optional[str]:
        self.begin(now)
        if self.v.legacy:
            raise kit.Unimplemented(
                "OMEMO 0.3 carries the GCM tag in each recipient's key: a payload meeting it takes GHASH algebra "
                "that python-omemo/oldmemo do not offer (our engine solves for one itself)")
        st = kit.parse(stanza)
        return run(self.reencrypt2(st, body))

    async def reencrypt2(self, st: ET.Element, body: str) -> str:
        ns = self.v.ns
        encrypted = st.find(f"{{{ns}}}encrypted")
        if encrypted is None:
            raise EngineError("missing-element", "no <encrypted/>", "encrypted")
        frm = st.get("from")
        if not frm:
            raise EngineError("missing-element", "the message has no sender", "from")
        payload = encrypted.find(f"{{{ns}}}payload")
        if payload is None:
            raise EngineError("missing-element", "no <payload/>", "payload")
        try:
            message = twomemo.etree.parse_message(encrypted, bare(frm))
        except Exception as e:  # noqa: BLE001
            raise library_error(e, "encrypted") from e
        self.reply_to = frm
        try:
            plaintext, _device, key = await self.manager.decrypt(message)
        except sm.MessageNotForUs as e:
            raise EngineError("missing-element", "no key for this device", "key for this device") from e
        except BUGS:
            raise
        except Exception as e:  # noqa: BLE001
            raise library_error(e, "encrypted") from e
        finally:
            self.reply_to = None
        if plaintext is None:
            raise EngineError("missing-element", "an empty OMEMO message", "payload")
        env = ET.fromstring(plaintext.decode("utf-8"))
        content = env.find(f"{{{SCE}}}content")
        if content is None:
            raise EngineError("missing-element", "no <content/>", "content")
        for c in list(content):
            content.remove(c)
        content.text = None
        ET.SubElement(content, f"{{{CLIENT}}}body").text = body
        # The same payload key, through twomemo's own payload encryption: its key is drawn from
        # the call's stream, so the stream is made to yield the key learned.
        saved = kit.RNG.stream
        kit.RNG.stream = _Fixed(key.key)  # type: ignore[attr-defined]
        try:
            backend = self.manager._SessionManager__backends[0]  # type: ignore[attr-defined]
            content_impl, _ = await backend.encrypt_plaintext(kit.serialize(env).encode("utf-8"))
        finally:
            kit.RNG.stream = saved
        header = encrypted.find(f"{{{ns}}}header")
        assert header is not None
        for g in list(header.findall(f"{{{ns}}}keys")):
            if g.get("jid") == self.own:
                for k in list(g.findall(f"{{{ns}}}key")):
                    if k.get("rid") == str(self.device):
                        g.remove(k)
                if len(g) == 0:
                    header.remove(g)
        payload.text = base64.b64encode(content_impl.ciphertext).decode("ascii")
        return kit.serialize(st)

    # ---- theft ----

    def snapshot(self, what: str) -> Dict[str, Any]:
        data = json.loads(json.dumps(self.storage.data))
        if what != "full-state":
            prefix = f"/{self.v.ns}/"
            for k in list(data):
                if (k.startswith(prefix) and k != f"/{self.v.ns}/x3dh") or k.startswith("/queue/"):
                    del data[k]
        state = {
            "protocol": self.v.protocol, "me": self.me, "policy": self.policy, "storage": data,
            "devices": {o: {str(d): lbl for d, lbl in ds.items()} for o, ds in self.devices.items()},
            "bundles": [[o, d, x] for (o, d), x in self.bundles.items()],
            "missing_reads": [[o, d, n] for (o, d), n in self.missing_reads.items()],
            "verified": sorted(self.verified_peers),
        }
        if what == "full-state":
            state["pending"] = [list(p) for p in self.pending]
            state["held"] = list(self.held)
            state["asked"] = sorted([list(a) for a in self.asked])
            state["due"] = sorted([list(a) for a in self.due])
        return state

    def steal(self, what: str) -> Tuple["OmemoEngine", Optional[str]]:
        if what not in ("identity-key", "long-term-keys", "full-state"):
            raise EngineError("malformed", f"no theft `{what}`", "what")
        state = self.snapshot(what)
        text = json.dumps(state, sort_keys=True, separators=(",", ":"))
        return type(self).load(state), text

    @classmethod
    def restore(cls, state: str) -> "OmemoEngine":
        try:
            s = json.loads(state)
            if s.get("protocol") != cls.VERSION.protocol:
                raise EngineError("malformed", "a state of another protocol", "state")
        except (ValueError, AttributeError) as e:
            raise EngineError("malformed", f"not a state: {e}", "state") from e
        try:
            return cls.load(s)
        except (KeyError, TypeError, ValueError, omemo.storage.StorageException) as e:
            raise EngineError("malformed", f"not a state of this adapter: {type(e).__name__}: {e}", "state") from e

    @classmethod
    def load(cls, s: Dict[str, Any]) -> "OmemoEngine":
        e = cls()
        e.me, e.own, e.policy = s["me"], bare(s["me"]), s["policy"]
        e.storage = MemoryStorage(json.loads(json.dumps(s["storage"])))
        e.devices = {o: {int(d): lbl for d, lbl in ds.items()} for o, ds in s["devices"].items()}
        e.bundles = {(o, int(d)): x for o, d, x in s["bundles"]}
        e.missing_reads = {(o, int(d)): n for o, d, n in s["missing_reads"]}
        e.verified_peers = set(s["verified"])
        e.pending = [(t, b, list(p)) for t, b, p in s.get("pending", [])]
        e.held = list(s.get("held", []))
        e.asked = {(o, n) for o, n in s.get("asked", [])}
        e.due = {(o, int(d)) for o, d in s.get("due", [])}
        e.quiet = True
        run(e.start())
        e.quiet = False
        return e


class NotSent(Exception):
    pass


class _Fixed:
    """A stream that yields given bytes first (the payload key of a re-encryption)."""

    def __init__(self, first: bytes) -> None:
        self.first = first

    def read(self, n: int) -> bytes:
        out, self.first = self.first[:n], self.first[n:]
        if len(out) < n:
            out += kit.Stream(b"\0" * 32).read(n - len(out))
        return out


class Omemo2(OmemoEngine):
    VERSION = Version("omemo")


class Omemo03(OmemoEngine):
    VERSION = Version("omemo-legacy")


def versions() -> str:
    names = ["omemo", "twomemo", "oldmemo", "X3DH", "DoubleRatchet", "XEdDSA"]
    return " ".join(f"{n}={importlib.metadata.version(n)}" for n in names)


kit.serve(implementation="python-omemo", version=versions(), protocols={"omemo": Omemo2, "omemo-legacy": Omemo03})
