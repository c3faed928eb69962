"""The openssl adapter: RFC 3923 S/MIME (`smime`) through the `openssl` command line, and XTLS
(`xtls`, TLS 1.3 in iq stanzas) through OpenSSL's libssl in memory BIOs (pyOpenSSL). Run as
`python3 adapter.py smime|xtls` in this folder (docs/engine-protocol.md)."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "kit"))
sys.path.insert(0, str(HERE))
import jabberwock_adapter as kit  # noqa: E402  (first: it seeds Python's randomness)

protocol = sys.argv[-1] if len(sys.argv) > 1 else ""
if protocol == "xtls":
    import xtls  # noqa: E402
    kit.serve(implementation="openssl", version=xtls.version(), protocols={"xtls": xtls.Xtls})
else:
    import common  # noqa: E402
    import smime  # noqa: E402
    kit.serve(implementation="openssl", version=common.openssl_version(),
              protocols={"smime": smime.Smime})
