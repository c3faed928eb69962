"""Sequoia's `sqop` (Stateless OpenPGP) as a Jabberwock device: XEP-0027 (`pgp`) and
XEP-0373/0374 (`ox`), keys as files in a throwaway folder per engine (see README.md). Run:
`python3 adapter.py pgp|ox`."""

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "kit"))
import jabberwock_adapter as kit  # noqa: E402  (first: it seeds Python's randomness)
import openpgp_xmpp as x  # noqa: E402
from jabberwock_adapter import EngineError  # noqa: E402

SQOP = os.environ.get("JABBERWOCK_SQOP", "sqop")
HERE = Path(__file__).resolve().parent
# libfaketime (apt faketime) sets sqop's clock to the simulated time: SOP has no option for
# the signature or key creation time, and Sequoia checks key liveness against its clock.
FAKETIME_LIBS = ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1"]
FAKETIME = next((p for p in FAKETIME_LIBS if os.path.exists(p)), None)
# A getrandom(2) replacement (seeded_random.c, built here on first use) feeds Sequoia's RNG
# from the call's seed, so sqop's output is deterministic too.
SHIM_SRC = HERE / "seeded_random.c"


def shim() -> str | None:
    so = HERE / "build" / "seeded_random.so"
    if so.exists() and so.stat().st_mtime >= SHIM_SRC.stat().st_mtime:
        return str(so)
    if not SHIM_SRC.exists() or shutil.which("gcc") is None:
        return None
    so.parent.mkdir(exist_ok=True)
    tmp = so.parent / f".seeded_random.{os.getpid()}.so"
    rc, _, err = x.run_tool(["gcc", "-O2", "-shared", "-fPIC", "-o", str(tmp), str(SHIM_SRC)])
    if rc != 0:
        sys.stderr.write(f"sqop adapter: the getrandom shim does not build: {err}\n")
        return None
    os.replace(tmp, so)
    return str(so)


SHIM = shim()


def version() -> str:
    _, out, _ = x.run_tool([SQOP, "version", "--extended"])
    lines = out.decode().split("\n")
    first = lines[0].split()[-1] if lines and lines[0] else "?"
    rest = ", ".join(l.strip() for l in lines[1:] if l.strip())
    return f"{first} ({rest})" if rest else first


class SqopBackend(x.Backend):
    def __init__(self, folder: str, fingerprint: str, public: bytes) -> None:
        self.folder, self.fingerprint, self.public = folder, fingerprint, public
        self.calls = 0
        x.track(self)

    def key(self) -> str:
        return os.path.join(self.folder, "key")

    def sqop(self, args, data=b"", now_ms=None, limit=None):
        env = dict(os.environ)
        secs = x.KEY_CREATED if now_ms is None else now_ms // 1000
        preload = [p for p in (FAKETIME, SHIM) if p]
        if preload:
            env["LD_PRELOAD"] = " ".join(preload)
        if FAKETIME:
            env["FAKETIME"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(secs))
            env["TZ"] = "UTC"
            env["FAKETIME_NO_CACHE"] = "1"
        if SHIM:
            # Each run of the tool gets its own stream from the call's seeded randomness.
            env["JABBERWOCK_SEED"] = kit.RNG.read(32).hex()
        return x.run_tool([SQOP] + args, data, env=env, limit=limit)

    def cert_file(self, cert: x.Cert) -> str:
        p = os.path.join(self.folder, f"cert-{cert.fpr}")
        if not os.path.exists(p) or Path(p).read_bytes() != cert.data:
            Path(p).write_bytes(cert.data)
        return p

    @classmethod
    def create(cls, uid, rng):
        folder = x.scratch("sqop")
        b = cls(folder, "", b"")
        rc, key, err = b.sqop(["generate-key", "--no-armor", uid])
        if rc != 0 or not key:
            raise RuntimeError(f"sqop generate-key failed: {err}")
        Path(b.key()).write_bytes(key)
        rc, cert, err = b.sqop(["extract-cert", "--no-armor"], key)
        if rc != 0 or not cert:
            raise RuntimeError(f"sqop extract-cert failed: {err}")
        b.public = cert
        b.fingerprint = x.cert_outline(cert)["fpr"]
        # sqop names the key it signed with when it verifies: it must be the one we read.
        sig = b.sign_detached(b"", None)
        cp = os.path.join(folder, "own-cert")
        Path(cp).write_bytes(cert)
        sp = os.path.join(folder, "own-sig")
        Path(sp).write_bytes(sig)
        rc, out, err = b.sqop(["verify", sp, cp], b"")
        named = out.decode().split()
        if rc != 0 or len(named) < 3 or named[2].upper() != b.fingerprint:
            raise RuntimeError(f"sqop names its key {named[2:3]}, we read {b.fingerprint}: {err}")
        return b

    def read_cert(self, data, now):
        if x.first_tag(data) != 6:
            raise EngineError("malformed", "not a transferable public key", "public key")
        outline = x.cert_outline(data)
        cert = x.Cert(data, outline["fpr"], outline["subkeys"], outline["uids"])
        # Sequoia decides whether the certificate is usable (self-signatures, subkey binding,
        # revocation, expiry at the simulated time): encrypting nothing to it.
        rc, _, err = self.sqop(["encrypt", "--no-armor", self.cert_file(cert)], b"", now)
        if rc != 0:
            why = err.strip().splitlines()[-1] if err.strip() else f"exit {rc}"
            if outline["revocation"]:
                raise EngineError("key-revoked", f"key {cert.fpr} is revoked: sqop: {why}")
            raise EngineError("bad-key-binding", f"sqop refuses key {cert.fpr}: {why}")
        return cert

    def encrypt(self, certs, data, now, sign):
        args = ["encrypt", "--no-armor"]
        if sign:
            args += ["--sign-with", self.key()]
        args += [self.cert_file(c) if c.fpr != self.fingerprint else self.own_cert_file() for c in certs]
        rc, out, err = self.sqop(args, data, now)
        if rc != 0 or not out:
            raise EngineError("policy", f"sqop could not encrypt: {err.strip() or rc}")
        return out

    def own_cert_file(self):
        p = os.path.join(self.folder, "own-cert")
        Path(p).write_bytes(self.public)
        return p

    def decrypt(self, data, now, signers):
        if not x.is_encrypted(data):
            raise EngineError("not-encrypted", "the OpenPGP message is not encrypted")
        vp = os.path.join(self.folder, "verifications")
        if os.path.exists(vp):
            os.remove(vp)
        args = ["decrypt"]
        if signers:
            args += ["--verifications-out", vp]
            for c in signers:
                args += ["--verify-with", self.cert_file(c) if c.fpr != self.fingerprint else self.own_cert_file()]
        rc, out, err = self.sqop(args + [self.key()], data, now, limit=x.MAX_PLAINTEXT + 1)
        if len(out) > x.MAX_PLAINTEXT:
            raise EngineError("too-large", f"the decrypted content exceeds {x.MAX_PLAINTEXT} bytes")
        if rc == 3 and signers:
            # SOP's NO_SIGNATURE: decrypted, but no signature by one of `signers` verifies.
            return b"", "unverified", None
        if rc != 0:
            raise EngineError("undecryptable",
                              f"not decryptable with our key {self.fingerprint}: sqop exit {rc}: {err.strip()[-200:]}")
        if not signers:
            return out, "unverified", None
        lines = Path(vp).read_text().split("\n") if os.path.exists(vp) else []
        known = {c.fpr for c in signers}
        for line in lines:
            f = line.split()
            if len(f) >= 3 and f[2].upper() in known:
                return out, "good", f[2].upper()
        return out, "unverified", None

    def sign_detached(self, data, now):
        rc, out, err = self.sqop(["sign", "--no-armor", self.key()], data, now)
        if rc != 0 or not out:
            raise EngineError("policy", f"sqop could not sign: {err.strip()}")
        return out

    def verify_detached(self, sig, data, cert, now):
        sp = os.path.join(self.folder, "sig")
        Path(sp).write_bytes(sig)
        rc, out, _ = self.sqop(["verify", sp, self.cert_file(cert)], data, now)
        return rc == 0 and any(len(l.split()) >= 3 and l.split()[2].upper() == cert.fpr
                               for l in out.decode().split("\n"))

    def copy(self):
        folder = x.scratch("sqop")
        shutil.copytree(self.folder, folder, dirs_exist_ok=True)
        return SqopBackend(folder, self.fingerprint, self.public)

    def state(self):
        import json
        return json.dumps({"fpr": self.fingerprint, "public": x.b64(self.public), "folder": x.tar_dir(self.folder)})

    @classmethod
    def restore_state(cls, blob):
        import json
        d = json.loads(blob)
        folder = x.scratch("sqop")
        x.untar_dir(d["folder"], folder)
        return cls(folder, d["fpr"], x.unb64("public", d["public"]))

    def close(self):
        shutil.rmtree(self.folder, ignore_errors=True)


class SqopPgp(x.PgpEngine):
    backend_class = SqopBackend


class SqopOx(x.OxEngine):
    backend_class = SqopBackend


if __name__ == "__main__":
    kit.serve(implementation="sqop", version=version(), protocols={"pgp": SqopPgp, "ox": SqopOx})
