"""Sealing: encrypting the coordinator's state so that only the same enclave can decrypt it.

The sealing key is derived like EGETKEY's MRENCLAVE-policy seal key: from a platform secret and the
enclave's measurement. In the simulated TEE the secret is the platform's ``sealing.key``; under Gramine
it is ``/dev/attestation/keys/_sgx_mrenclave`` (already specific to the enclave). A different
measurement derives a different key, so its state cannot be unsealed. AES-256-GCM with a random nonce;
the purpose label is the associated data.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedattest.errors import FedattestError
from fedattest.tee.base import TEE
from fedattest.tee.gramine import GramineTEE
from fedattest.tee.simulated import SimulatedTEE

MAGIC = b"FASEAL1\x00"


class SealingError(FedattestError):
    """State cannot be sealed or unsealed (wrong enclave, corrupted file, no sealing key)."""


def _derive(secret: bytes, context: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"fedattest-seal-v1", info=context).derive(secret)


def sealing_key(tee: TEE) -> bytes:
    """The 32-byte sealing key of the enclave ``tee`` runs as (MRENCLAVE policy)."""
    if isinstance(tee, SimulatedTEE):
        return _derive(tee.platform.sealing_secret(), b"mrenclave:" + tee.identity.mr_enclave)
    if isinstance(tee, GramineTEE):
        path = Path(tee.attestation_dir) / "keys" / "_sgx_mrenclave"
        try:
            return _derive(path.read_bytes(), b"gramine-mrenclave")
        except OSError as exc:
            raise SealingError(f"cannot read Gramine's sealing key {path}: {exc.strerror or exc}") from None
    raise SealingError(f"no sealing key for TEE kind {tee.kind!r}")


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
