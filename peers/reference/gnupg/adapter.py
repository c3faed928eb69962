"""GnuPG as a Jabberwock device: XEP-0027 (`pgp`) and XEP-0373/0374 (`ox`) over `gpg` 2.2, one
throwaway GNUPGHOME per engine (see README.md). Run: `python3 adapter.py pgp|ox`."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "kit"))
import jabberwock_adapter as kit  # noqa: E402  (first: it seeds Python's randomness)
import openpgp_xmpp as x  # noqa: E402
from jabberwock_adapter import EngineError  # noqa: E402

GPG = os.environ.get("JABBERWOCK_GPG", "gpg")
BASE = [GPG, "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", "",
        "--ignore-time-conflict", "--trust-model", "always", "--no-auto-key-locate",
        "--no-auto-key-retrieve", "--no-auto-check-trustdb", "--no-greeting", "--no-permission-warning",
        "--status-fd", "2", "--with-colons", "--fixed-list-mode"]

# The key XEP-0373 and our engine use: Ed25519 (certify + sign) and a Curve25519 encryption
# subkey, OpenPGP v4 (gpg's `future-default`), unprotected (an empty passphrase would still be
# S2K-hashed by the agent at every use).
KEY_PARAMS = """%no-protection
Key-Type: eddsa
Key-Curve: ed25519
Key-Usage: sign,cert
Subkey-Type: ecdh
Subkey-Curve: cv25519
Subkey-Usage: encrypt
Name-Real: {uid}
Expire-Date: 0
%commit
"""


def version() -> str:
    rc, out, _ = x.run_tool([GPG, "--version"])
    lines = out.decode().splitlines()
    gpg = lines[0].split()[-1] if lines else "?"
    gcrypt = next((l.split()[-1] for l in lines if l.startswith("libgcrypt")), "?")
    return f"{gpg} (libgcrypt {gcrypt})"


def status(err: str, key: str):
    return [l.split()[2:] for l in err.splitlines() if l.startswith(f"[GNUPG:] {key} ") or l == f"[GNUPG:] {key}"]


class GpgBackend(x.Backend):
    def __init__(self, home: str, fingerprint: str, public: bytes) -> None:
        self.home, self.fingerprint, self.public = home, fingerprint, public
        x.track(self)

    def gpg(self, args, data=b"", now_ms=None, limit=None):
        t = x.KEY_CREATED if now_ms is None else now_ms // 1000
        return x.run_tool(BASE + ["--homedir", self.home, "--faked-system-time", f"{t}!"] + args, data,
                          limit=limit)

    @classmethod
    def create(cls, uid, rng):
        home = x.scratch("gnupg")
        os.chmod(home, 0o700)
        b = cls(home, "", b"")
        rc, _, err = b.gpg(["--gen-key"], KEY_PARAMS.format(uid=uid).encode())
        created = status(err, "KEY_CREATED")
        if rc != 0 or not created:
            raise RuntimeError(f"gpg --gen-key failed: {err}")
        b.fingerprint = created[0][1].upper()
        rc, out, err = b.gpg(["--export", b.fingerprint])
        if rc != 0 or not out:
            raise RuntimeError(f"gpg --export failed: {err}")
        b.public = out
        return b

    def read_cert(self, data, now):
        if x.first_tag(data) != 6:
            raise EngineError("malformed", "not a transferable public key", "public key")
        x.cert_outline(data)  # v4 only, as XEP-0373 asks
        rc, _, err = self.gpg(["--import", "--import-options", "no-import-clean"], data, now)
        ok = status(err, "IMPORT_OK")
        if not ok:
            if "no valid user IDs" in err or "no user ID" in err or "bad signature" in err.lower():
                raise EngineError("bad-key-binding", f"gpg refused the key: {last_line(err)}")
            raise EngineError("malformed", f"gpg refused the key: {last_line(err)}", "public key")
        fpr = ok[0][1].upper()
        rc, out, err = self.gpg(["--list-keys", fpr], b"", now)
        if rc != 0:
            raise EngineError("malformed", f"gpg cannot list the key: {last_line(err)}", "public key")
        uids, subkeys, kind, revoked = [], [], None, False
        for line in out.decode("utf-8", "replace").splitlines():
            f = line.split(":")
            if f[0] == "pub":
                kind, revoked = "pub", f[1] == "r"
            elif f[0] == "sub":
                kind = "sub"
            elif f[0] == "uid" and f[1] not in ("r", "i"):
                uids.append(unescape(f[9]))
            elif f[0] == "fpr" and kind == "sub":
                subkeys.append(f[9].upper())
                kind = None
        if revoked:
            raise EngineError("key-revoked", f"key {fpr} carries a key revocation signature")
        return x.Cert(data, fpr, subkeys, uids)

    def encrypt(self, certs, data, now, sign):
        args = ["--encrypt"]
        for c in certs:
            args += ["--recipient", c.fpr]
        if sign:
            args += ["--sign", "--local-user", self.fingerprint + "!"]
        rc, out, err = self.gpg(args, data, now)
        if rc != 0 or not out:
            raise EngineError("policy", f"gpg could not encrypt: {last_line(err)}")
        return out

    def decrypt(self, data, now, signers):
        if not x.is_encrypted(data):
            raise EngineError("not-encrypted", "the OpenPGP message is not encrypted")
        rc, out, err = self.gpg(["--decrypt", "--max-output", str(x.MAX_PLAINTEXT + 1)], data, now,
                                limit=x.MAX_PLAINTEXT + 1)
        if not status(err, "DECRYPTION_OKAY") or status(err, "DECRYPTION_FAILED"):
            if len(out) > x.MAX_PLAINTEXT or "exceeded" in err:
                raise EngineError("too-large", f"the decrypted content exceeds {x.MAX_PLAINTEXT} bytes")
            raise EngineError("undecryptable", f"not decryptable with our key {self.fingerprint}: {last_line(err)}")
        if len(out) > x.MAX_PLAINTEXT:
            raise EngineError("too-large", f"the decrypted content exceeds {x.MAX_PLAINTEXT} bytes")
        valid = status(err, "VALIDSIG")
        if status(err, "BADSIG"):
            return out, "bad", None
        if valid:
            primary = valid[0][-1].upper()
            if primary in {c.fpr for c in signers}:
                return out, "good", primary
            return out, "unknown", None
        if status(err, "ERRSIG"):
            return out, "unknown" if status(err, "NO_PUBKEY") else "bad", None
        if status(err, "NEWSIG") or status(err, "GOODSIG") or status(err, "EXPKEYSIG") or status(err, "REVKEYSIG"):
            return out, "bad", None
        return out, "none", None

    def sign_detached(self, data, now):
        rc, out, err = self.gpg(["--detach-sign", "--local-user", self.fingerprint + "!"], data, now)
        if rc != 0 or not out:
            raise EngineError("policy", f"gpg could not sign: {last_line(err)}")
        return out

    def verify_detached(self, sig, data, cert, now):
        with tempfile.TemporaryDirectory(dir=self.home) as d:
            sp, dp = os.path.join(d, "sig"), os.path.join(d, "data")
            Path(sp).write_bytes(sig)
            Path(dp).write_bytes(data)
            rc, _, err = self.gpg(["--verify", sp, dp], b"", now)
        valid = status(err, "VALIDSIG")
        return rc == 0 and bool(valid) and valid[0][-1].upper() == cert.fpr

    def unwrap_signed(self, data, now):
        _, st, _ = self.decrypt(data, now, [])
        if st == "none":
            raise EngineError("not-signed", "the recorded OpenPGP message carries no signature to reuse")
        with tempfile.TemporaryDirectory(dir=self.home) as d:
            op = os.path.join(d, "unwrapped")
            rc, _, err = self.gpg(["--unwrap", "--output", op], data, now)
            inner = Path(op).read_bytes() if os.path.exists(op) else b""
        if not inner:
            raise EngineError("undecryptable", f"gpg --unwrap failed: {last_line(err)}")
        return inner

    def encrypt_raw(self, certs, inner, now):
        args = ["--encrypt", "--no-literal", "--compress-algo", "none"]
        for c in certs:
            args += ["--recipient", c.fpr]
        rc, out, err = self.gpg(args, inner, now)
        if rc != 0 or not out:
            raise EngineError("policy", f"gpg could not encrypt: {last_line(err)}")
        return out

    def copy(self):
        home = x.scratch("gnupg")
        os.chmod(home, 0o700)
        shutil.copytree(self.home, home, dirs_exist_ok=True,
                        ignore=lambda d, names: [n for n in names if n.startswith("S.") or n.endswith(".lock")])
        return GpgBackend(home, self.fingerprint, self.public)

    def state(self):
        import json
        return json.dumps({"fpr": self.fingerprint, "public": x.b64(self.public), "home": x.tar_dir(self.home)})

    @classmethod
    def restore_state(cls, blob):
        import json
        d = json.loads(blob)
        home = x.scratch("gnupg")
        os.chmod(home, 0o700)
        x.untar_dir(d["home"], home)
        os.chmod(home, 0o700)
        return cls(home, d["fpr"], x.unb64("public", d["public"]))

    def close(self):
        if os.path.isdir(self.home):
            x.run_tool(["gpgconf", "--homedir", self.home, "--kill", "gpg-agent"])
            shutil.rmtree(self.home, ignore_errors=True)


def last_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.startswith("gpg: ") and "faked system time" not in l]
    return lines[-1][5:] if lines else "no detail"


def unescape(s: str) -> str:
    import re
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), s)


class GnupgPgp(x.PgpEngine):
    backend_class = GpgBackend


class GnupgOx(x.OxEngine):
    backend_class = GpgBackend


if __name__ == "__main__":
    kit.serve(implementation="gnupg", version=version(), protocols={"pgp": GnupgPgp, "ox": GnupgOx})
