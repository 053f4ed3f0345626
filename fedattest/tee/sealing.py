"""Sealing: encrypting data so that only the same enclave can decrypt it, in a format every TEE shares.

A TEE's :meth:`~fedattest.tee.base.TEE.sealing_key` is derived like EGETKEY's MRENCLAVE-policy seal key: from
a platform secret and the enclave's measurement (the simulated platform's ``sealing.key``; under Gramine,
``/dev/attestation/keys/_sgx_mrenclave``, already specific to the enclave). A different measurement derives a
different key, so it cannot unseal. Sealed blobs are ``FASEAL1\\0 ‖ nonce ‖ AES-256-GCM``, the purpose label
as associated data.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedattest.errors import FedattestError

MAGIC = b"FASEAL1\x00"


class SealingError(FedattestError):
    """Data cannot be sealed or unsealed (wrong enclave, corrupted file, no sealing key)."""


def derive_sealing_key(secret: bytes, context: bytes) -> bytes:
    """The 32-byte sealing key from a TEE's secret and what makes it specific to the enclave."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"fedattest-seal-v1", info=context).derive(secret)


def seal(key: bytes, purpose: bytes, plaintext: bytes) -> bytes:
    nonce = os.urandom(12)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, plaintext, purpose)


def unseal(key: bytes, purpose: bytes, blob: bytes) -> bytes:
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 12 + 16:
        raise SealingError("not a fedattest sealed blob")
    nonce = blob[len(MAGIC) : len(MAGIC) + 12]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(MAGIC) + 12 :], purpose)
    except InvalidTag:
        raise SealingError("cannot unseal: sealed by another enclave (different measurement) or corrupted") from None
