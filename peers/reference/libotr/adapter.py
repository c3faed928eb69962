"""Jabberwock's adapter for libotr (OTR v3): `python3 adapter.py otr`.

libotr runs in a small C helper (otr_helper.c, compiled on first use into build/), one process per
engine; this file speaks the engine protocol (docs/engine-protocol.md) through the kit, turns
libotr's injected messages, events and shown text into the engine's Output, and carries the OTR
bodies in XMPP stanzas exactly as our engine does (peers/e2e/src/otr/mod.rs, XEP-0364). See
README.md for what is covered and why a C helper rather than ctypes.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "kit"))
import jabberwock_adapter as kit  # noqa: E402  (first: it seeds Python's randomness)
from jabberwock_adapter import CLIENT, EngineError, Output, el  # noqa: E402

import base64  # noqa: E402
import binascii  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
from typing import Any, Dict, List, Optional, Tuple  # noqa: E402

NS_OTR = "urn:xmpp:otr:0"
NS_EME = "urn:xmpp:eme:0"
NS_HINTS = "urn:xmpp:hints"
NS_CARBONS = "urn:xmpp:carbons:2"

# libotr's policy bits (libotr/proto.h), as our engine's policies name them.
ALLOW_V3, REQUIRE, SEND_WS, WS_START, ERR_START = 0x04, 0x08, 0x10, 0x20, 0x40
POLICIES = {
    "require": ALLOW_V3 | REQUIRE | WS_START | ERR_START,
    "opportunistic": ALLOW_V3 | SEND_WS | WS_START | ERR_START,
    "never": 0,
}
WHITESPACE_BASE = "\x20\x09\x20\x20\x09\x09\x09\x09\x20\x09\x20\x09\x20\x09\x20\x20"
WS_TAGS = ("\x20\x09\x20\x09\x20\x20\x09\x20", "\x20\x20\x09\x09\x20\x20\x09\x20", "\x20\x20\x09\x09\x20\x20\x09\x09")

# OtrlMessageEvent (libotr/message.h).
EV_CONNECTION_ENDED, EV_SETUP_ERROR = 3, 4
EV_NOT_IN_PRIVATE, EV_UNREADABLE, EV_MALFORMED = 7, 8, 9
EV_GENERAL_ERR, EV_UNENCRYPTED, EV_UNRECOGNIZED = 12, 13, 14
GPG_ERR_BAD_SIGNATURE = 8


def libotr_version() -> str:
    """OTRL_VERSION of the installed headers (the helper is compiled against them) and the
    libgcrypt the helper runs with."""
    otr = "?"
    try:
        for line in Path("/usr/include/libotr/version.h").read_text().splitlines():
            if line.startswith("#define OTRL_VERSION "):
                otr = line.split('"')[1]
    except OSError:
        pass
    return f"{otr} (libgcrypt {helper_run(['--gcrypt-version']).strip() or '?'})"


# --- the helper --------------------------------------------------------------------------------

def helper_binary() -> str:
    """The helper, compiled into build/ on first use (atomically: several adapters may start
    at once)."""
    src = HERE / "otr_helper.c"
    build = HERE / "build"
    binary = build / "otr_helper"
    if binary.exists() and binary.stat().st_mtime >= src.stat().st_mtime:
        return str(binary)
    build.mkdir(exist_ok=True)
    tmp = build / f"otr_helper.{os.getpid()}"
    cmd = ["cc", "-O1", "-Wall", "-rdynamic", "-o", str(tmp), str(src), "-lotr", "-lgcrypt"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.stderr.write(f"libotr adapter: cannot compile the helper ({' '.join(cmd)}):\n{r.stdout}\n"
                         "install: apt-get install libotr5-dev gcc\n")
        sys.exit(3)
    os.replace(tmp, binary)
    return str(binary)


def helper_run(args: List[str]) -> str:
    return subprocess.run([helper_binary()] + args, stdout=subprocess.PIPE, text=True).stdout


def hx(s: str) -> str:
    return s.encode("utf-8").hex() or "-"


def unhx(f: str) -> str:
    return "" if f == "-" else bytes.fromhex(f).decode("utf-8", "replace")


class Helper:
    """One helper process: a libotr user state for one account."""

    def __init__(self, data: socket.socket, ctrl: socket.socket, proc: Optional[subprocess.Popen] = None) -> None:
        self.data, self.ctrl, self.proc = data, ctrl, proc
        self.file = data.makefile("rwb")

    @classmethod
    def spawn(cls) -> "Helper":
        ours, theirs = socket.socketpair()
        ctrl, ctrl_theirs = socket.socketpair()
        proc = subprocess.Popen([helper_binary(), str(ctrl_theirs.fileno())], stdin=theirs, stdout=theirs,
                                pass_fds=(ctrl_theirs.fileno(),))
        theirs.close()
        ctrl_theirs.close()
        return cls(ours, ctrl, proc)

    def call(self, *fields: Any) -> List[List[str]]:
        self.file.write((" ".join(str(f) for f in fields) + "\n").encode())
        self.file.flush()
        lines = []
        while True:
            raw = self.file.readline()
            if not raw:
                raise RuntimeError(f"the libotr helper ended during `{fields[0]}`")
            words = raw.decode().rstrip("\n").split(" ")
            if words == ["end"]:
                return lines
            lines.append(words)

    def fork(self) -> "Helper":
        """A copy of this process, libotr's whole state included (sessions too)."""
        ours, theirs = socket.socketpair()
        ctrl, ctrl_theirs = socket.socketpair()
        socket.send_fds(self.ctrl, [b"f"], [theirs.fileno(), ctrl_theirs.fileno()])
        answer = self.call("fork")
        theirs.close()
        ctrl_theirs.close()
        if answer != [["ok"]]:
            raise RuntimeError(f"the libotr helper could not fork: {answer}")
        copy_ = Helper(ours, ctrl)
        hello = copy_.file.readline().decode().strip(), copy_.file.readline().decode().strip()
        if hello != ("forked", "end"):
            raise RuntimeError(f"the forked libotr helper said {hello}")
        return copy_

    def close(self) -> None:
        for c in (self.file, self.data, self.ctrl):
            try:
                c.close()
            except OSError:
                pass


# --- the wire ----------------------------------------------------------------------------------

def bare(jid: str) -> str:
    return jid.split("/", 1)[0]


def is_otr(body: str) -> bool:
    return "?OTR" in body


def instance_tags(body: str) -> Optional[Tuple[int, int]]:
    """(sender, receiver) instance tags of an OTR v3 encoded message or fragment, if it is one."""
    i = body.find("?OTR|")
    if i >= 0:
        try:
            head = body[i + 5:].split(",", 1)[0]
            s, r = head.split("|")[:2]
            return int(s, 16), int(r, 16)
        except ValueError:
            return None
    i = body.find("?OTR:")
    if i >= 0:
        try:
            raw = base64.b64decode(body[i + 5:].split(".", 1)[0][:24] + "==")
        except (binascii.Error, ValueError):
            return None
        if len(raw) >= 11 and raw[:2] == b"\x00\x03":
            return int.from_bytes(raw[3:7], "big"), int.from_bytes(raw[7:11], "big")
    return None


def strip_tag(text: str) -> str:
    i = text.find(WHITESPACE_BASE)
    if i < 0:
        return text
    rest = text[i + len(WHITESPACE_BASE):]
    while rest[:8] in WS_TAGS:
        rest = rest[8:]
    return text[:i] + rest


def stanza(to: str, body: str) -> str:
    """A message as our engine writes it: OTR messages carry the XEP-0380 marker and the
    XEP-0334 / XEP-0280 hints (XEP-0364 §"Best practices"); plain text goes bare."""
    kids = [el("body", text=body)]
    if is_otr(body):
        kids += [el("encryption", {"namespace": NS_OTR, "name": "OTR"}, xmlns=NS_EME),
                 el("no-copy", xmlns=NS_HINTS), el("no-permanent-store", xmlns=NS_HINTS),
                 el("private", xmlns=NS_CARBONS)]
    return el("message", {"to": to, "type": "chat"}, kids, xmlns=CLIENT)


# --- the engine --------------------------------------------------------------------------------

class LibotrEngine(kit.Engine):
    def __init__(self, me: str, policy: str, max_message: Optional[int], secrets: Dict[str, str],
                 helper: Helper) -> None:
        self.me, self.policy, self.max_message, self.secrets, self.helper = me, policy, max_message, secrets, helper
        self.deferred: List[str] = []
        # Messages typed before a private conversation existed (policy require), per peer.
        self.pending: Dict[str, List[str]] = {}
        # Instance tag -> the full JID it last spoke from (where its messages go).
        self.tag_jid: Dict[int, str] = {}
        # Peer (bare) -> fingerprint hex -> trust, as the user decided (SMP).
        self.trust: Dict[str, Dict[str, str]] = {}
        info = self.helper.call("me")
        if not info or info[0][0] != "me":
            raise RuntimeError(f"libotr helper has no key: {info}")
        _, self.fp, self.pub, tag, self.keytext, self.instagtext = info[0]
        self.instance = int(tag)

    # -- construction --

    @classmethod
    def create(cls, me: str, config: Dict[str, Any], rng: kit.Stream) -> "LibotrEngine":
        options = config.get("options") or {}
        policy = options.get("otr", "require")
        if policy not in POLICIES:
            raise EngineError("policy", f"unknown OTR policy `{policy}` (require, opportunistic, never)")
        max_message = config.get("max_message")
        secrets = dict(config.get("secrets") or {})
        helper = Helper.spawn()
        ans = helper.call("init", rng.read(32).hex(), 0, hx(me), POLICIES[policy], max_message or 0)
        if ans != [["ok"]]:
            raise RuntimeError(f"libotr could not make a key: {ans}")
        for peer, text in sorted(secrets.items()):
            helper.call("secret", hx(peer), hx(text))
        return cls(me, policy, max_message, secrets, helper)

    @classmethod
    def restore(cls, state: str) -> "LibotrEngine":
        try:
            s = json.loads(state)
            me, policy, max_message, secrets = s["me"], s["policy"], s["max_message"], s["secrets"]
            key, instag = s["key"], s["instag"]
        except (ValueError, KeyError, TypeError) as e:
            raise EngineError("malformed", f"not a libotr adapter state: {e}", "state") from e
        if policy not in POLICIES:
            raise EngineError("malformed", "unknown policy in the state", "state")
        helper = Helper.spawn()
        ans = helper.call("load", hx(me), POLICIES[policy], max_message or 0, key, instag)
        if ans != [["ok"]]:
            helper.close()
            raise EngineError("malformed", f"libotr could not load the state: {ans}", "state")
        for peer, text in sorted(secrets.items()):
            helper.call("secret", hx(peer), hx(text))
        return cls(me, policy, max_message, secrets, helper)

    # -- helpers --

    def destination(self, body: str, default: str) -> str:
        tags = instance_tags(body)
        if tags and tags[1] in self.tag_jid:
            return self.tag_jid[tags[1]]
        return default

    def instances(self, peer: str) -> Tuple[List[Dict[str, Any]], Dict[str, str]]:
        """The peer's instances (tag, msgstate, best, fingerprint) and libotr's fingerprints."""
        insts, fps = [], {}
        for words in self.helper.call("status", hx(peer)):
            if words[0] == "ctx":
                insts.append({"tag": int(words[1]), "state": int(words[2]), "best": words[3] == "1",
                              "fp": "" if words[4] == "-" else words[4], "trust": unhx(words[5])})
            elif words[0] == "fp":
                fps[words[1]] = unhx(words[2])
        return insts, fps

    def best(self, peer: str) -> Optional[Dict[str, Any]]:
        """The instance user messages go to (libotr's OTRL_INSTAG_BEST), if it is encrypted."""
        for i in self.instances(peer)[0]:
            if i["best"] and i["state"] == 1:
                return i
        return None

    def trust_of(self, peer: str, fp: str) -> str:
        return self.trust.get(peer, {}).get(fp, "unverified")

    def seen_fingerprint(self, peer: str, fp: str, out: Output) -> str:
        known = self.trust.setdefault(peer, {})
        if fp in known:
            return known[fp]
        if "verified" in known.values():
            out.alert("new-fingerprint", f"{peer} uses a fingerprint never verified: {fp}")
        known[fp] = "unverified"
        out.trust_changed(peer, "otr", fp, "unverified")
        return "unverified"

    def settle(self, peer: str, fp: str, matched: bool, out: Output) -> None:
        trust = "verified" if matched else "untrusted"
        self.trust.setdefault(peer, {})[fp] = trust
        out.trust_changed(peer, "otr", fp, trust)
        if not matched:
            out.alert("smp-failed", f"SMP with {peer}: the secrets differ (or someone is in the middle)")
        out.verification(peer, "match" if matched else "mismatch")

    def events(self, peer: str, frm: str, lines: List[List[str]], out: Output) -> Tuple[List[str], Optional[EngineError]]:
        """Reads a helper answer: stanzas to send (out), events, and the error if libotr refused
        the message; returns (bodies shown, error)."""
        shown: List[str] = []
        error: Optional[EngineError] = None
        why = next((w[1] for w in lines if w[0] == "why"), "malformed")
        for w in lines:
            kind = w[0]
            if kind == "out":
                body = unhx(w[1])
                out.send(stanza(self.destination(body, frm), body))
            elif kind == "shown":
                shown.append(unhx(w[1]))
            elif kind == "tlv" and w[1] == "1":
                out.alert("otr-finished", f"{frm} ended the private conversation")
            elif kind == "err":
                error = EngineError("malformed", "libotr: " + " ".join(w[1:]), "OTR message")
            elif kind == "ev":
                name = w[1]
                if name in ("gone-secure", "still-secure"):
                    tag = int(w[2])
                    fp = w[3] if len(w) > 3 and w[3] != "-" else ""
                    ssid = w[4] if len(w) > 4 and w[4] != "-" else ""
                    if not fp:
                        fp = next((i["fp"] for i in self.instances(peer)[0] if i["tag"] == tag), "")
                    trust = self.seen_fingerprint(peer, fp, out)
                    out.alert("otr-session", f"private conversation with {frm} (instance {tag:#x}), "
                                             f"fingerprint {fp} ({trust}), ssid {ssid}")
                elif name == "smp-success":
                    self.settle(peer, w[3], True, out)
                elif name == "smp-failure":
                    self.settle(peer, w[3], False, out)
                elif name == "smp-abort":
                    out.alert("smp-aborted", f"{peer} aborted SMP")
                elif name in ("smp-cheated", "smp-error"):
                    error = EngineError("smp-proof", f"libotr: an SMP message from {peer} does not verify ({name})")
                elif name.startswith("msg-"):
                    code = int(name[4:])
                    text = unhx(w[3]) if len(w) > 3 else ""
                    gerr = int(w[4]) if len(w) > 4 else 0
                    if code == EV_CONNECTION_ENDED:
                        out.alert("not-sent", f"{peer} ended the private conversation: the message was not sent")
                    elif code == EV_NOT_IN_PRIVATE:
                        error = EngineError("no-session", f"an encrypted message from {frm} outside a private conversation")
                    elif code == EV_UNREADABLE:
                        reason = why if why in ("unknown-keyid", "bad-mac", "replayed-counter", "no-session") else "bad-mac"
                        error = EngineError(reason, f"libotr: unreadable Data Message from {frm} ({why})")
                    elif code in (EV_MALFORMED, EV_UNRECOGNIZED):
                        error = EngineError("malformed", f"libotr: malformed OTR message from {frm}", "OTR message")
                    elif code == EV_SETUP_ERROR:
                        if gerr == GPG_ERR_BAD_SIGNATURE:
                            error = EngineError("bad-signature", f"libotr: the AKE from {frm} does not verify")
                        else:
                            error = EngineError("malformed", f"libotr: AKE error {gerr} from {frm}", "OTR AKE message")
                    elif code == EV_GENERAL_ERR:
                        out.alert("otr-error", f"{frm}: {text}")
                    elif code == EV_UNENCRYPTED:
                        out.alert("unencrypted", f"{frm} sent a message without OTR")
                        if strip_tag(text):
                            shown.append(strip_tag(text))
        return shown, error

    # -- the calls --

    def publish(self, now: int) -> Output:
        return Output()  # the keys travel inside the AKE

    def going_offline(self, now: int) -> Output:
        return Output()

    def presence(self, now: int) -> List[str]:
        return []

    def receive_presence(self, now: int, stanza_: str) -> Output:
        return Output()

    def fetch_failed(self, now: int, owner: str, node: str, condition: str) -> Output:
        return Output()

    def send(self, now: int, to: str, body: str) -> Output:
        out = Output()
        peer = bare(to)
        if self.policy == "never":
            return out.send(stanza(peer, body))
        best = self.best(peer)
        if best and self.trust_of(peer, best["fp"]) == "untrusted":
            # As our engine: a fingerprint that failed SMP gets nothing more (a client decision).
            return out.alert("not-sent", f"{peer}'s fingerprint {best['fp']} failed verification: "
                                         "the message was not sent")
        if self.policy == "require" and best is None:
            if self.pending.get(peer):
                # The Query went out with the first of them: wait for the AKE.
                self.pending[peer].append(body)
                return out
            lines = self.helper.call("send", kit.RNG.read(32).hex(), now, hx(peer), hx(body))
            _, error = self.events(peer, peer, lines, out)
            if error:
                raise error
            if not any(e["type"] == "alert" and e["reason"] == "not-sent" for e in out.events):
                self.pending.setdefault(peer, []).append(body)
            return out
        lines = self.helper.call("send", kit.RNG.read(32).hex(), now, hx(peer), hx(body))
        newmsg = [unhx(w[1]) for w in lines if w[0] == "newmsg"]
        _, error = self.events(peer, peer, [w for w in lines if w[0] != "newmsg"], out)
        if error:
            raise error
        if newmsg and newmsg[0] and not out.actions:
            # libotr altered the message (whitespace tag) and left the sending to us.
            out.send(stanza(self.destination(newmsg[0], peer), newmsg[0]))
        elif not out.actions and not any(e["type"] == "alert" for e in out.events) and self.policy != "require":
            out.send(stanza(peer, body))
        return out

    def send_message(self, now: int, to: str, body: str, parts: List[str]) -> Output:
        out = self.send(now, to, body)
        if parts:
            out.send(el("message", {"to": bare(to), "type": "chat"}, parts, xmlns=CLIENT))
        return out

    def send_presence(self, now: int, to: str, status: str) -> Output:
        return Output().send(el("presence", {"to": to}, [el("status", text=status)], xmlns=CLIENT))

    def send_iq(self, now: int, to: str, payload: str) -> Output:
        return Output().send(el("iq", {"type": "set", "to": to}, [payload], xmlns=CLIENT))

    def receive(self, now: int, stanza_: str) -> Output:
        out = Output()
        m = kit.parse(stanza_)
        if kit.local(m) != (CLIENT, "message") or m.get("type") == "error":
            return out
        body_el = kit.child(m, CLIENT, "body")
        if body_el is None:
            return out
        frm = m.get("from")
        if not frm:
            raise EngineError("missing-element", "the message has no sender", "from")
        if "@" not in frm and "." not in frm:
            raise EngineError("malformed", f"not a JID: {frm!r}", "from")
        text = "".join(body_el.itertext())
        peer = bare(frm)
        if self.policy == "never":
            return out.plaintext(frm, text, "unencrypted")
        tags = instance_tags(text)
        if tags and tags[0] >= 0x100:
            self.tag_jid[tags[0]] = frm
        lines = self.helper.call("recv", kit.RNG.read(32).hex(), now, hx(peer), hx(text.replace("\x00", "")))
        shown, error = self.events(peer, frm, lines, out)
        if error:
            # What libotr sent in answer (an Error Message, an SMP abort) still goes out.
            self.deferred += [a["stanza"] for a in out.actions if a["type"] == "send"]
            raise error
        if self.pending.get(peer) and any(w[:2] in (["ev", "gone-secure"], ["ev", "still-secure"]) for w in lines):
            # "If there is a recent stored message, encrypt it and send it."
            for body in self.pending.pop(peer):
                more = self.helper.call("send", kit.RNG.read(32).hex(), now, hx(peer), hx(body))
                _, err = self.events(peer, frm, more, out)
                if err:
                    raise err
        encrypted = tags is not None
        trust = "unencrypted"
        if encrypted and shown:
            fp = next((i["fp"] for i in self.instances(peer)[0] if i["tag"] == tags[0]), "")
            trust = self.trust_of(peer, fp) if fp else "unverified"
        for s in shown:
            if s:
                out.plaintext(frm, s, trust)
        return out

    def drain(self, now: int) -> Output:
        out = Output()
        for s in self.deferred:
            out.send(s)
        self.deferred = []
        return out

    def verify(self, now: int, peer: str, peer_says: List[str]) -> Output:
        out = Output()
        peer = bare(peer)
        if self.best(peer) is None:
            out.alert("nothing-to-verify", f"no private conversation with {peer} to run SMP in")
            return out.verification(peer, "nothing-to-compare")
        lines = self.helper.call("smp", kit.RNG.read(32).hex(), now, hx(peer))
        _, error = self.events(peer, peer, lines, out)
        if error:
            raise error
        return out

    def ceremony(self, peer: str) -> Optional[Dict[str, Any]]:
        return {"kind": "shared-secret"} if self.best(bare(peer)) else None

    def out_of_band(self) -> List[str]:
        return [self.fp]

    def identity_marks(self) -> List[Dict[str, str]]:
        return [{"name": "DSA public key", "hex": self.pub}, {"name": "fingerprint", "hex": self.fp}]

    def peer_marks(self, peer: str) -> List[Dict[str, str]]:
        # libotr keeps the fingerprint of the key each AKE revealed, not the key itself.
        return [{"name": "fingerprint", "hex": i["fp"]} for i in self.instances(bare(peer))[0]
                if i["state"] == 1 and i["fp"]]

    def owns_part(self, part: str) -> bool:
        return False

    def message_id(self, to: str) -> Optional[str]:
        return None

    def forge(self, now: int, frm: str, body: str) -> Optional[str]:
        peer = bare(frm)
        lines = self.helper.call("forge", kit.RNG.read(32).hex(), now, hx(peer), hx(body))
        forged = [unhx(w[1]) for w in lines if w[0] == "forged"]
        if not forged:
            return None
        s = kit.parse(stanza(self.me, forged[0]))
        s.set("from", frm)
        return kit.serialize(s)

    def forward(self, now: int, recorded: str, to: str, body: str) -> Optional[Output]:
        return None  # OTR signs no message: there is no signature to reuse

    def reencrypt(self, now: int, stanza_: str, body: str) -> Optional[str]:
        return None  # OTR encrypts every message for one recipient

    def steal(self, what: str) -> Tuple["LibotrEngine", Optional[str]]:
        if what not in ("identity-key", "long-term-keys", "full-state"):
            raise EngineError("malformed", f"unknown theft `{what}`", "what")
        c = copy.copy(self)
        c.helper = self.helper.fork()
        c.deferred = list(self.deferred)
        c.pending = copy.deepcopy(self.pending)
        c.tag_jid = dict(self.tag_jid)
        c.trust = copy.deepcopy(self.trust)
        if what == "full-state":
            return c, None
        # Keys only: sessions, fingerprints seen and what was in flight go.
        c.helper.call("forget")
        c.deferred, c.tag_jid, c.trust, c.pending = [], {}, {}, {}
        state = json.dumps({"me": self.me, "policy": self.policy, "max_message": self.max_message,
                            "secrets": self.secrets, "key": self.keytext, "instag": self.instagtext},
                           sort_keys=True)
        return c, state


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        print(libotr_version())
        return
    kit.serve(implementation="libotr", version=libotr_version(), protocols={"otr": LibotrEngine})


if __name__ == "__main__":
    main()
