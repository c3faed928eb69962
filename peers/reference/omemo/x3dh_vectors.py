"""Known-answer vectors for Jabberwock's OMEMO 2 X3DH, made by an independent implementation:
python-x3dh configured as twomemo configures it (Ed25519 identity keys, SHA-256, "OMEMO X3DH").

Python plays the active party ("alice") against a passive "bob" whose private keys are in the
vectors; the Rust side rebuilds bob from them and must derive the same shared secret and
associated data, and produce the same signed PreKey signature.

    python3 peers/reference/omemo/x3dh_vectors.py > peers/e2e/src/omemo/vectors/twomemo-x3dh.json
    python3 peers/reference/omemo/x3dh_vectors.py legacy > peers/e2e/src/omemo/vectors/oldmemo-x3dh.json

With `legacy`, python-x3dh is configured as oldmemo configures it (OMEMO 0.3: "WhisperText",
identity keys encoded as 0x05 || Curve25519 key in the associated data).
"""

import asyncio
import hashlib
import json
import sys

import x3dh
if sys.argv[1:] == ["legacy"]:
    import oldmemo.oldmemo as tm  # same class names, OMEMO 0.3 parameters
else:
    import twomemo.twomemo as tm


def det(label: str) -> bytes:
    return hashlib.sha256(b"jabberwock vectors " + label.encode()).digest()


def state(label: str) -> tm.StateImpl:
    return tm.StateImpl.create(
        x3dh.IdentityKeyFormat.ED_25519,
        x3dh.HashFunction.SHA_256,
        tm.StateImpl.INFO,
        x3dh.identity_key_pair.IdentityKeyPairSeed(det(label)),
    )


async def main() -> None:
    alice = state("alice ik")
    bob = state("bob ik")
    bob.generate_pre_keys(5)
    model = bob.model
    bundle = bob.bundle
    shared_secret, associated_data, header = await alice.get_shared_secret_active(bundle)
    print(json.dumps({
        "generator": f"python X3DH configured as {tm.__name__}",
        "bob_identity_seed": det("bob ik").hex(),
        "bob_identity_public": bundle.identity_key.hex(),
        "bob_spk_private": model.signed_pre_key.priv.hex(),
        "bob_spk_public": bundle.signed_pre_key.hex(),
        "bob_spk_signature": bundle.signed_pre_key_sig.hex(),
        "bob_prekeys_private": sorted(p.hex() for p in model.pre_keys),
        "header": {
            "identity_key": header.identity_key.hex(),
            "ephemeral_key": header.ephemeral_key.hex(),
            "signed_pre_key": header.signed_pre_key.hex(),
            "pre_key": header.pre_key.hex(),
        },
        "shared_secret": shared_secret.hex(),
        "associated_data": associated_data.hex(),
    }, indent=1))


asyncio.run(main())
