"""Known-answer vectors for Jabberwock's OMEMO Double Ratchet, made by an independent
implementation: python-doubleratchet with twomemo's OMEMO 2 parameters (pip: twomemo) or,
with the argument `legacy`, oldmemo's OMEMO 0.3 parameters (pip: oldmemo).

The initiator ("alice") is python; the vectors hold the shared secret, the associated data,
the responder's signed PreKey private key and every OMEMOAuthenticatedMessage python produced,
so the Rust side can play the responder ("bob") and must read them all, in a shuffled order.

    python3 peers/reference/omemo/ratchet_vectors.py > peers/e2e/src/omemo/vectors/twomemo-ratchet.json
    python3 peers/reference/omemo/ratchet_vectors.py legacy > peers/e2e/src/omemo/vectors/oldmemo-ratchet.json
"""

import asyncio
import hashlib
import json
import random
import sys

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives import serialization
from doubleratchet.recommended import diffie_hellman_ratchet_curve25519 as dh_curve25519
if sys.argv[1:] == ["legacy"]:
    import oldmemo.oldmemo as tm  # same class names, OMEMO 0.3 parameters
else:
    import twomemo.twomemo as tm


def det(label: str) -> bytes:
    return hashlib.sha256(b"jabberwock vectors " + label.encode()).digest()


async def main() -> None:
    shared_secret = det("sk")
    associated_data = det("ik_a") + det("ik_b")
    if tm.__name__.startswith("oldmemo"):
        # OMEMO 0.3 encodes identity keys as 0x05 || Curve25519 key (33 bytes each).
        associated_data = b"\x05" + det("ik_a") + b"\x05" + det("ik_b")
    bob_spk = X25519PrivateKey.from_private_bytes(det("bob spk"))
    bob_spk_pub = bob_spk.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    params = dict(
        diffie_hellman_ratchet_class=dh_curve25519.DiffieHellmanRatchet,
        root_chain_kdf=tm.RootChainKDFImpl,
        message_chain_kdf=tm.MessageChainKDFImpl,
        message_chain_constant=tm.DoubleRatchetImpl.MESSAGE_CHAIN_CONSTANT,
        dos_protection_threshold=1000,
        max_num_skipped_message_keys=1000,
        aead=tm.AEADImpl,
    )
    messages = []
    alice, first = await tm.DoubleRatchetImpl.encrypt_initial_message(
        **params,
        shared_secret=shared_secret,
        recipient_ratchet_pub=bob_spk_pub,
        message=b"m0",
        associated_data=associated_data,
    )
    messages.append({"plaintext": "m0", "message": first.ciphertext.hex()})
    for i in range(1, 20):
        text = f"m{i} " + "x" * i
        enc = await alice.encrypt_message(text.encode(), associated_data)
        messages.append({"plaintext": text, "message": enc.ciphertext.hex()})
    order = list(range(1, 20))
    random.Random(7).shuffle(order)
    print(json.dumps({
        "generator": f"python DoubleRatchet + {tm.__name__} parameters",
        "shared_secret": shared_secret.hex(),
        "associated_data": associated_data.hex(),
        "bob_spk_private": det("bob spk").hex(),
        "messages": messages,
        "delivery_order": [0] + order,
    }, indent=1))


asyncio.run(main())
