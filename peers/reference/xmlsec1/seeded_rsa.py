"""RSA-2048 device keys from the per-call seed.

xmlsec1 cannot make keys (its `--gen-key` draws from OpenSSL's RNG and exports nothing we could
publish), and OpenSSL's key generation cannot be seeded. A device's identity must follow the
scenario's seed, so the two primes are searched here, in Python, from the kit's seeded stream
(Miller-Rabin with bases from the same stream); the `cryptography` package then checks and
encodes the key (PKCS#8 PEM for xmlsec1, DER SubjectPublicKeyInfo for the fingerprint). Every
operation of the protocol with that key (signing, verifying, RSA-OAEP, AES) is xmlsec1's.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

E = 65537
SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p ** 0.5) + 1))]


def _probably_prime(n: int, rng, rounds: int = 12) -> bool:
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for _ in range(rounds):
        a = 2 + int.from_bytes(rng.read(len(n.to_bytes((n.bit_length() + 7) // 8, "big"))), "big") % (n - 3)
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(rng, bits: int) -> int:
    while True:
        c = int.from_bytes(rng.read(bits // 8), "big") | (3 << (bits - 2)) | 1
        if any(c % p == 0 for p in SMALL_PRIMES):
            continue
        if (c - 1) % E == 0:
            continue
        if _probably_prime(c, rng):
            return c


def generate(rng, bits: int = 2048) -> rsa.RSAPrivateKey:
    """A private key whose primes come from `rng` (a kit Stream)."""
    while True:
        p, q = _prime(rng, bits // 2), _prime(rng, bits // 2)
        if p == q:
            continue
        n = p * q
        if n.bit_length() != bits:
            continue
        lam = (p - 1) * (q - 1)
        d = pow(E, -1, lam)
        numbers = rsa.RSAPrivateNumbers(
            p=p, q=q, d=d, dmp1=rsa.rsa_crt_dmp1(d, p), dmq1=rsa.rsa_crt_dmq1(d, q),
            iqmp=rsa.rsa_crt_iqmp(p, q), public_numbers=rsa.RSAPublicNumbers(E, n))
        return numbers.private_key()


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def public_pem(n: int, e: int) -> str:
    return rsa.RSAPublicNumbers(e, n).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def fingerprint(n: int, e: int) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex (the binding's fingerprint)."""
    der = rsa.RSAPublicNumbers(e, n).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()
