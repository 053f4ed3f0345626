"""MRSIGNER for a workload: SHA-256 of the little-endian modulus of the RSA-3072 signing key."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fedattest.workload.manifest import ManifestError

# The MRSIGNER of workloads run without a signing key: a fixed, recognisable development value.
UNSIGNED_MRSIGNER = hashlib.sha256(b"fedattest unsigned development workload").digest()


def mr_signer_of(public_key: rsa.RSAPublicKey) -> bytes:
    numbers = public_key.public_numbers()
    if public_key.key_size != 3072 or numbers.e != 3:
        raise ManifestError(f"SGX signing keys are RSA-3072 with exponent 3, this one is RSA-{public_key.key_size} e={numbers.e}")
    return hashlib.sha256(numbers.n.to_bytes(384, "little")).digest()


def load_signing_key(path: Path) -> bytes:
    """MRSIGNER for the key in ``path`` (PEM private or public key, as gramine-sgx-gen-private-key writes)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"--signing-key {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None).public_key()
    except (ValueError, TypeError):
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            raise ManifestError(f"--signing-key {path}: not a PEM RSA key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ManifestError(f"--signing-key {path}: not an RSA key")
    return mr_signer_of(key)
