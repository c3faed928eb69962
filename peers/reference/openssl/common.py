"""What the openssl adapter's two protocols share: running the `openssl` command, JIDs, time
stamps, and the trust book (the policies BTBV / TOFU / manual and the fingerprint ceremony, as
peers/e2e/src/kit/trust.rs words them)."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from typing import Any, Callable, Dict, List, Optional, Tuple

from jabberwock_adapter import EngineError, Output

# --- openssl ------------------------------------------------------------------------------------

_ROOT = tempfile.mkdtemp(prefix="jabberwock-openssl-")
atexit.register(shutil.rmtree, _ROOT, True)
_counter = [0]


def workdir() -> str:
    """A fresh directory of this process for one engine's files."""
    _counter[0] += 1
    d = os.path.join(_ROOT, f"e{_counter[0]}")
    os.makedirs(d)
    return d


class OpensslFailed(Exception):
    def __init__(self, args: List[str], stderr: str) -> None:
        super().__init__(f"openssl {' '.join(args[:2])}: {stderr.strip()[-600:]}")
        self.stderr = stderr


def openssl(args: List[str], cwd: str, data: Optional[bytes] = None) -> bytes:
    """Runs `openssl args…` in `cwd` with `data` on its input; its output, or OpensslFailed."""
    p = subprocess.run(["openssl"] + args, cwd=cwd, input=data if data is not None else b"",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise OpensslFailed(args, (p.stderr + b"\n" + p.stdout[-2000:]).decode("utf-8", "replace"))
    return p.stdout


def openssl_version() -> str:
    out = subprocess.run(["openssl", "version"], stdout=subprocess.PIPE).stdout.decode()
    return out.split()[1] if len(out.split()) > 1 else out.strip()


# --- JIDs and time --------------------------------------------------------------------------------

def bare(jid: str) -> str:
    return jid.split("/", 1)[0]


def check_jid(jid: Optional[str], what: str = "from") -> str:
    """A JID from the network: present, no whitespace, a local part and a domain (the
    RFC 7622 checks the stanzas here need); else `malformed` / `missing-element`."""
    if jid is None:
        raise EngineError("missing-element", f"no `{what}`", what)
    b = bare(jid)
    if not jid or any(c.isspace() for c in jid) or not b or b.startswith("@") or b.endswith("@") \
            or b.count("@") > 1 or "/" in b or jid.endswith("/") or len(jid) > 3071:
        raise EngineError("malformed", f"`{jid}` is not a JID", what)
    return jid


def civil_from_days(z: int) -> Tuple[int, int, int]:
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y, m, d)


def format_stamp(ms: int) -> str:
    """XEP-0082 DateTime with milliseconds (peers/e2e/src/time.rs format_stamp)."""
    secs, milli = divmod(ms, 1000)
    days, rem = divmod(secs, 86400)
    y, m, d = civil_from_days(days)
    return f"{y:04d}-{m:02d}-{d:02d}T{rem // 3600:02d}:{rem // 60 % 60:02d}:{rem % 60:02d}.{milli:03d}Z"


def asn1_time(secs: int) -> str:
    """YYYYMMDDHHMMSSZ, as `openssl ca -startdate` takes it."""
    days, rem = divmod(secs, 86400)
    y, m, d = civil_from_days(days)
    return f"{y:04d}{m:02d}{d:02d}{rem // 3600:02d}{rem // 60 % 60:02d}{rem % 60:02d}Z"


def days_from_civil(y: int, m: int, d: int) -> int:
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_stamp(s: str) -> Optional[int]:
    """Milliseconds since the epoch of a strict XEP-0082 UTC DateTime, or None (time.rs)."""
    def num(t: str, n: int) -> Optional[int]:
        return int(t) if len(t) == n and t.isascii() and t.isdigit() else None
    if not s.endswith("Z") or "T" not in s:
        return None
    date, time = s[:-1].split("T", 1)
    dp = date.split("-")
    if len(dp) != 3:
        return None
    y, m, d = num(dp[0], 4), num(dp[1], 2), num(dp[2], 2)
    frac = None
    if "." in time:
        time, frac = time.split(".", 1)
    tp = time.split(":")
    if len(tp) != 3:
        return None
    hh, mm, ss = num(tp[0], 2), num(tp[1], 2), num(tp[2], 2)
    if None in (y, m, d, hh, mm, ss):
        return None
    if not (1 <= m <= 12 and 1 <= d <= 31 and hh <= 23 and mm <= 59 and ss <= 60 and y >= 1970):  # type: ignore[operator]
        return None
    ms = 0
    if frac is not None:
        if not frac or len(frac) > 9 or not (frac.isascii() and frac.isdigit()):
            return None
        ms = int((frac + "000000000")[:9]) // 1_000_000
    days = days_from_civil(y, m, d)  # type: ignore[arg-type]
    return ((days * 86400) + hh * 3600 + mm * 60 + ss) * 1000 + ms  # type: ignore[operator]


# --- trust --------------------------------------------------------------------------------------

BLIND, VERIFIED, UNTRUSTED = "blind", "verified", "untrusted"
SHOWN = {BLIND: "unverified", VERIFIED: "verified", UNTRUSTED: "untrusted"}


class TrustBook:
    """Per account, per device: {fingerprint, state, device (its name in events), key}."""

    def __init__(self, policy: str, changed: Callable[[str, str], str],
                 mismatch: Callable[[str, str, str], str], unseen: str) -> None:
        self.policy = policy if policy in ("btbv", "tofu", "manual") else "btbv"
        self.keys: Dict[str, Dict[str, Dict[str, Any]]] = {}
        self.verified: List[str] = []
        self.changed, self.mismatch, self.unseen = changed, mismatch, unseen

    def to_json(self) -> Dict[str, Any]:
        return {"policy": self.policy, "keys": self.keys, "verified": self.verified}

    def load(self, j: Dict[str, Any]) -> None:
        self.policy, self.keys, self.verified = j["policy"], j["keys"], j["verified"]

    def first_sight(self, owner: str) -> str:
        if self.policy == "manual":
            return UNTRUSTED
        if self.policy == "btbv" and owner in self.verified:
            return UNTRUSTED
        return BLIND

    def observe(self, owner: str, device: str, fingerprint: str, name: str, key: Any, out: Output) -> str:
        mine = self.keys.setdefault(owner, {})
        known = mine.get(device)
        if known is not None and known["fingerprint"] == fingerprint:
            known["key"] = key
            return known["state"]
        if known is not None:
            out.alert("identity-changed", self.changed(owner, name))
            state = UNTRUSTED
        else:
            state = self.first_sight(owner)
        mine[device] = {"fingerprint": fingerprint, "state": state, "device": name, "key": key}
        out.trust_changed(owner, name, fingerprint, SHOWN[state])
        return state

    def of(self, owner: str) -> List[Dict[str, Any]]:
        return [self.keys[owner][d] for d in sorted(self.keys.get(owner, {}))]

    def set_state(self, owner: str, device: str, state: str, out: Output) -> None:
        k = self.keys.get(owner, {}).get(device)
        if k is not None and k["state"] != state:
            k["state"] = state
            out.trust_changed(owner, k["device"], k["fingerprint"], SHOWN[state])

    def verify(self, peer: str, shows: Callable[[str], bool], compared: Callable[[str], bool] = lambda d: True) -> Output:
        out = Output()
        result, seen = "match", 0
        for d in sorted(self.keys.get(peer, {})):
            if not compared(d):
                continue
            k = self.keys[peer][d]
            seen += 1
            before = k["state"]
            k["state"] = VERIFIED if shows(k["fingerprint"]) else UNTRUSTED
            if k["state"] != before:
                out.trust_changed(peer, k["device"], k["fingerprint"], SHOWN[k["state"]])
            if k["state"] == UNTRUSTED:
                result = "mismatch"
                out.alert("fingerprint-mismatch", self.mismatch(peer, k["device"], k["fingerprint"]))
        if seen:
            if peer not in self.verified:
                self.verified.append(peer)
        else:
            result = "nothing-to-compare"
            out.alert("nothing-to-verify", f"no {self.unseen} of {peer} seen yet")
        out.verification(peer, result)
        return out
