"""The xmlsec1 command (apt `xmlsec1`, libxmlsec1 over OpenSSL) as this adapter drives it: sign a
payload template, encrypt a signed payload to several RSA keys, decrypt an `<EncryptedData/>`,
verify an enveloped signature. Each call is one child process in a private scratch directory;
xmlsec1's diagnostics (standard error) are mapped to the binding's reasons by the caller.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import tempfile
from typing import Dict, List, Optional, Tuple

XMLSEC1 = shutil.which("xmlsec1") or "xmlsec1"
NS = "urn:xmpp:jabberwock:xmlsec:0"
ID_ATTR = f"{NS}:signed"
TIMEOUT = 20

_root: Optional[str] = None


def _scratch() -> str:
    global _root
    if _root is None:
        _root = tempfile.mkdtemp(prefix="jabberwock-xmlsec1-")
        atexit.register(shutil.rmtree, _root, True)
    return tempfile.mkdtemp(dir=_root)


def version() -> str:
    try:
        out = subprocess.run([XMLSEC1, "--version"], capture_output=True, text=True, timeout=TIMEOUT)
    except OSError:
        return "not installed"
    m = re.search(r"xmlsec1\s+(\S+)\s*\((\w+)\)", out.stdout)
    found = f"{m.group(1)} ({m.group(2)})" if m else out.stdout.strip() or "unknown"
    # The Debian packages, when there are: the library and the crypto it runs on.
    try:
        q = subprocess.run(["dpkg-query", "-W", "-f=${Package}=${Version} ", "libxmlsec1-openssl", "libssl3"],
                           capture_output=True, text=True, timeout=TIMEOUT)
        if q.returncode == 0 and q.stdout.strip():
            found += "; " + q.stdout.strip()
    except OSError:
        pass
    return found


class Run:
    """One finished xmlsec1 process."""

    def __init__(self, rc: int, stderr: str, output: Optional[bytes], stdout: str) -> None:
        self.rc, self.stderr, self.output, self.stdout = rc, stderr, output, stdout

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.output is not None

    def last_error(self) -> str:
        lines = [l for l in self.stderr.splitlines() if l.strip()]
        interesting = [l for l in lines if "error=" in l and "xmlsec library function failed" not in l]
        pick = (interesting or lines or ["xmlsec1 failed"])[-1]
        return pick[:300]


def run(args: List[str], files: Dict[str, bytes], keys: List[Tuple[str, str, str]]) -> Run:
    """Runs `xmlsec1 <command> <key options> <args>`; `files` are written to the scratch
    directory first; `keys` are (option, name, PEM text) loaded as `--option:name file`. The
    document argument and `--output out.xml` are the caller's (in `args`)."""
    d = _scratch()
    try:
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        key_args: List[str] = []
        for i, (option, name, pem) in enumerate(keys):
            path = f"key{i}.pem"
            with open(os.path.join(d, path), "w") as f:
                f.write(pem)
            key_args += [f"--{option}:{name}", path]
        cmd = [XMLSEC1, args[0]] + key_args + args[1:]
        try:
            p = subprocess.run(cmd, cwd=d, capture_output=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            return Run(-1, "xmlsec1 timed out", None, "")
        out_path = os.path.join(d, "out.xml")
        output = None
        if os.path.exists(out_path):
            with open(out_path, "rb") as f:
                output = f.read()
        return Run(p.returncode, p.stderr.decode("utf-8", "replace"), output,
                   p.stdout.decode("utf-8", "replace"))
    finally:
        shutil.rmtree(d, True)


def strip_declaration(text: str) -> str:
    """libxml2 writes `<?xml version="1.0"?>` and a final newline around the document."""
    text = text.strip()
    if text.startswith("<?xml"):
        end = text.find("?>")
        if end >= 0:
            text = text[end + 2:].lstrip()
    return text


def sign(template: str, key_name: str, private_pem: str) -> Run:
    """xmldsig core generation over a template whose enveloped Signature is still empty."""
    return run(["--sign", "--id-attr:Id", ID_ATTR, "--enabled-reference-uris", "same-doc",
                "--enabled-key-data", "key-name", "--output", "out.xml", "in.xml"],
               {"in.xml": template.encode()}, [("privkey-pem", key_name, private_pem)])


def encrypt(template: str, payload: str, recipients: List[Tuple[str, str]]) -> Run:
    """xmlenc: encrypts the `<signed/>` element of `payload` under a fresh AES-128 session key
    (OpenSSL's RNG), wrapped with RSA-OAEP for every (key name, public PEM) the template's
    EncryptedKeys name."""
    return run(["--encrypt", "--session-key", "aes-128", "--xml-data", "data.xml", "--node-name", ID_ATTR,
                "--output", "out.xml", "tpl.xml"],
               {"tpl.xml": template.encode(), "data.xml": payload.encode()},
               [("pubkey-pem", name, pem) for name, pem in recipients])


def decrypt(encrypted: str, key_name: str, private_pem: str) -> Run:
    """xmlenc decryption of a document whose root is the `<EncryptedData/>`: xmlsec1 tries its
    private key on every `<EncryptedKey/>` (KeyInfo processing limited to EncryptedKey and the
    key classes it yields: no KeyValue, X509Data or RetrievalMethod is followed)."""
    return run(["--decrypt", "--enabled-key-data", "enc-key,aes,rsa", "--enabled-cipher-reference-uris", "empty",
                "--output", "out.xml", "in.xml"],
               {"in.xml": encrypted.encode()}, [("privkey-pem", key_name, private_pem)])


def verify(document: str, key_name: str, public_pem: str) -> Run:
    """xmldsig core validation with one candidate key (KeyInfo read for KeyName only: a key
    carried in the message is never used)."""
    r = run(["--verify", "--id-attr:Id", ID_ATTR, "--enabled-reference-uris", "same-doc",
             "--enabled-key-data", "key-name", "in.xml"],
            {"in.xml": document.encode()}, [("pubkey-pem", key_name, public_pem)])
    # --verify writes no output file: a success is rc 0 and "OK".
    r.output = b"" if r.rc == 0 and re.search(r"^OK$", r.stdout + "\n" + r.stderr, re.M) else None
    return r


def references(r: Run) -> Optional[Tuple[int, int]]:
    """`SignedInfo References (ok/all): a/b` from a verification's report."""
    m = re.search(r"SignedInfo References \(ok/all\): (\d+)/(\d+)", r.stdout + r.stderr)
    return (int(m.group(1)), int(m.group(2))) if m else None
