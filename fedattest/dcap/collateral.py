"""DCAP quote collateral in the JSON layout of dcap-qvl's ``QuoteCollateralV3``.

Keys: ``pck_crl_issuer_chain``, ``tcb_info_issuer_chain``, ``qe_identity_issuer_chain`` (PEM chains, leaf
first), ``root_ca_crl`` and ``pck_crl`` (hex of the DER CRL), ``tcb_info`` and ``qe_identity`` (the exact
signed text of the inner ``tcbInfo`` / ``enclaveIdentity`` object), ``tcb_info_signature`` and
``qe_identity_signature`` (hex of the raw 64-byte ECDSA r||s). Pure: text in, objects out.
"""

from __future__ import annotations

import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from fedattest.dcap.tcb import EnclaveIdentity, TcbInfo
from fedattest.errors import CollateralError

_TEXT_FIELDS = ("pck_crl_issuer_chain", "tcb_info_issuer_chain", "tcb_info", "qe_identity_issuer_chain", "qe_identity")
_HEX_FIELDS = ("root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature")
FIELDS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)


@dataclass(frozen=True)
class Collateral:
    """Everything besides the quote that DCAP verification needs. CRLs are DER bytes."""

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    tcb_info: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes

    @classmethod
    def from_json(cls, text: str | bytes) -> Collateral:
        """Parse the JSON layout. Raises :class:`CollateralError` saying which key is missing or bad."""
        try:
            obj = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CollateralError(f"collateral is not valid JSON: {exc}") from None
        except RecursionError:
            raise CollateralError("collateral is not valid JSON: nested too deeply") from None
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: Any) -> Collateral:
        if not isinstance(obj, dict):
            raise CollateralError("collateral must be a JSON object")
        missing = [k for k in FIELDS if k not in obj]
        if missing:
            raise CollateralError(f"collateral is missing {', '.join(missing)}")
        values: dict[str, Any] = {}
        for key in _TEXT_FIELDS:
            if not isinstance(obj[key], str):
                raise CollateralError(f"collateral.{key} must be a string")
            try:
                obj[key].encode("utf-8")
            except UnicodeEncodeError:
                # JSON can carry lone surrogates ("\ud800"); they are not text and cannot have been signed.
                raise CollateralError(f"collateral.{key} is not valid Unicode text") from None
            values[key] = obj[key]
        for key in _HEX_FIELDS:
            raw = obj[key]
            if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b <= 255 for b in raw):
                values[key] = bytes(raw)  # serde's Vec<u8> form
                continue
            if not isinstance(raw, str):
                raise CollateralError(f"collateral.{key} must be a hex string")
            try:
                values[key] = binascii.unhexlify(raw.strip())
            except (binascii.Error, ValueError):
                raise CollateralError(f"collateral.{key} is not valid hex") from None
        for key in ("root_ca_crl", "pck_crl"):
            values[key] = _crl_der(values[key], key)
        return cls(**values)

    def to_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in FIELDS:
            value = getattr(self, key)
            out[key] = value.hex() if isinstance(value, bytes) else value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 over every field, length-prefixed: the content hash collateral checks are cached by."""
        h = hashlib.sha256(b"fedattest-collateral-v1")
        for key in FIELDS:
            value = getattr(self, key)
            raw = value if isinstance(value, bytes) else value.encode()
            h.update(len(raw).to_bytes(8, "big") + raw)
        return h.digest()


def validity_window(collateral: Collateral) -> tuple[datetime, datetime]:
    """When every part of ``collateral`` is valid: the latest issue time and the earliest next update of
    its CRLs, TCB info and QE identity (certificates are not included; they outlive collateral).
    Raises :class:`~fedattest.errors.FedattestError` when a part does not parse."""
    tcb = TcbInfo.parse(collateral.tcb_info)
    qe = EnclaveIdentity.parse(collateral.qe_identity)
    starts = [tcb.issue_date, qe.issue_date]
    ends = [tcb.next_update, qe.next_update]
    for key in ("root_ca_crl", "pck_crl"):
        try:
            crl = x509.load_der_x509_crl(getattr(collateral, key))
        except (ValueError, x509.InvalidVersion):
            raise CollateralError(f"collateral.{key} is not a DER CRL") from None
        starts.append(crl.last_update_utc)
        ends.append(crl.next_update_utc or crl.last_update_utc)
    return max(starts), min(ends)


def _crl_der(raw: bytes, key: str) -> bytes:
    """Accept a CRL that a PCCS handed out as PEM text inside the hex, and return DER."""
    if raw.lstrip().startswith(b"-----BEGIN"):
        try:
            return x509.load_pem_x509_crl(raw).public_bytes(Encoding.DER)
        except (ValueError, x509.InvalidVersion):
            raise CollateralError(f"collateral.{key} is not a valid PEM CRL") from None
    return raw
