"""Throwaway RSA keys for the Fireblocks simulator and its tests.

Fireblocks API users sign every request with an RSA private key whose public half Fireblocks
holds. The simulator makes a fresh pair per instance (2048 bits, like a real API user's CSR), so
no key ever leaves a test run. Key generation is random: cryptography offers no seeded RSA and
a home-made one would be slower and less trustworthy than the ~0.04 s a random key costs here.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes


def generate_private_key_pem(bits: int = 2048) -> str:
    """A new RSA private key as PKCS#8 PEM text (what the SDK's ``secret_key`` takes)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def public_key_pem(private_key_pem: str) -> str:
    """The SubjectPublicKeyInfo PEM of a private key (what Fireblocks keeps from the CSR)."""
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(pem: str) -> PublicKeyTypes:
    """Parse a public key once; PyJWT verifies with the parsed object at no parsing cost."""
    return serialization.load_pem_public_key(pem.encode())
