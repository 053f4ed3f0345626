"""Appraisal: does a verified quote show what we expect to run?

Verification (``fedattest.dcap``) answers "is this genuine evidence from a platform at TCB status X?".
Appraisal answers "is it the code, configuration and platform state we accept?" against
:class:`ReferenceValues`, and returns a :class:`Verdict` carrying *every* reason for rejection (not just
the first), so operators can fix everything in one go. Fail closed: an empty reference value set
accepts nothing, simulated evidence is refused unless allowed, and a Revoked TCB can never be accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, field_validator, model_validator

from fedattest.dcap.result import TcbStatus, VerifiedQuote


def _hex_parser(size: int) -> Callable[[Any], bytes]:
    def parse(value: Any) -> bytes:
        if isinstance(value, bytes):
            raw = value
        elif isinstance(value, str):
            text = value.strip().lower().removeprefix("0x")
            try:
                raw = bytes.fromhex(text)
            except ValueError:
                raise ValueError(f"expected {size * 2} hex digits, got {value!r}") from None
        else:
            raise ValueError(f"expected a hex string of {size} bytes")
        if len(raw) != size:
            raise ValueError(f"expected {size} bytes ({size * 2} hex digits), got {len(raw)}")
        return raw

    return parse


def _to_hex(value: bytes) -> str:
    return value.hex()


Measurement32 = Annotated[bytes, BeforeValidator(_hex_parser(32)), PlainSerializer(_to_hex, return_type=str)]
Measurement48 = Annotated[bytes, BeforeValidator(_hex_parser(48)), PlainSerializer(_to_hex, return_type=str)]
Measurement64 = Annotated[bytes, BeforeValidator(_hex_parser(64)), PlainSerializer(_to_hex, return_type=str)]

DEFAULT_ACCEPTED_TCB = frozenset({TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED})


class ReferenceValues(BaseModel):
    """What an acceptable enclave looks like.

    Identify the code by ``mrenclave`` (any of a set) and/or by ``mrsigner`` + ``isv_prod_id`` +
    ``min_isv_svn`` (the signer's product line, at or above a security version); at least one way is
    required. TDX quotes are appraised against ``mrtd`` instead. Statuses outside
    ``accepted_tcb_statuses`` and any advisory in ``rejected_advisory_ids`` reject.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mrenclave: frozenset[Measurement32] = frozenset()
    mrsigner: Measurement32 | None = None
    isv_prod_id: int | None = Field(default=None, ge=0, le=0xFFFF)
    min_isv_svn: int = Field(default=0, ge=0, le=0xFFFF)
    mrtd: frozenset[Measurement48] = frozenset()
    # SGX KSS: the CONFIGID the enclave was launched with (64 bytes) and a minimum CONFIGSVN. None: not checked.
    config_id: Measurement64 | None = None
    min_config_svn: int = Field(default=0, ge=0, le=0xFFFF)
    allow_debug: bool = False
    accepted_tcb_statuses: frozenset[TcbStatus] = DEFAULT_ACCEPTED_TCB
    rejected_advisory_ids: frozenset[str] = frozenset()
    allow_simulation: bool = False
    # Loud opt-out for tools that only check the platform (e.g. `fedattest quote verify` without
    # --expect-mrenclave): every verdict made with it notes that the code was not checked.
    accept_any_code: bool = False

    @field_validator("accepted_tcb_statuses")
    @classmethod
    def _no_revoked(cls, value: frozenset[TcbStatus]) -> frozenset[TcbStatus]:
        if TcbStatus.REVOKED in value:
            raise ValueError("a Revoked TCB can never be accepted")
        if not value:
            raise ValueError("accept at least one TCB status")
        return value

    @model_validator(mode="after")
    def _identifies_code(self) -> ReferenceValues:
        if (self.mrsigner is None) != (self.isv_prod_id is None):
            raise ValueError("mrsigner and isv_prod_id go together")
        has_code = bool(self.mrenclave or self.mrsigner is not None or self.mrtd)
        if has_code and self.accept_any_code:
            raise ValueError("accept_any_code contradicts the reference measurements given")
        if not has_code and not self.accept_any_code:
            raise ValueError("give mrenclave values, or mrsigner with isv_prod_id (or mrtd for TDX)")
        return self


@dataclass(frozen=True)
class Verdict:
    """The outcome of appraisal. ``reasons`` lists every failed expectation (empty when accepted);
    ``notes`` lists what an auditor should know even when accepted (simulation, debug, advisories)."""

    accepted: bool
    reasons: tuple[str, ...]
    notes: tuple[str, ...] = ()
    verified: VerifiedQuote | None = field(default=None, compare=False)

    @property
    def reason(self) -> str:
        """One line: the reasons joined, or "accepted"."""
        return "; ".join(self.reasons) if self.reasons else "accepted"

    @classmethod
    def rejected(cls, reason: str) -> Verdict:
        """A verdict for evidence that did not even verify."""
        return cls(False, (reason,))


def appraise(verified: VerifiedQuote, ref: ReferenceValues) -> Verdict:
    """Check ``verified`` against ``ref``; never raises for a mismatch."""
    reasons: list[str] = []
    notes: list[str] = []

    if verified.simulated:
        if ref.allow_simulation:
            notes.append("simulated evidence (not from Intel hardware), accepted because simulation is allowed")
        else:
            reasons.append("evidence is simulated (its trust root is not Intel's SGX Root CA) and simulation is not allowed")

    if verified.debug:
        if ref.allow_debug:
            notes.append("debug enclave: its memory is readable by the host")
        else:
            reasons.append("enclave runs in debug mode and debug is not allowed")

    report = verified.sgx_report
    if ref.accept_any_code:
        notes.append("code identity not checked (no reference measurement given)")
    elif report is not None:
        code_ok: list[bool] = []
        if ref.mrenclave:
            code_ok.append(report.mr_enclave in ref.mrenclave)
        if ref.mrsigner is not None:
            signer_ok = report.mr_signer == ref.mrsigner and report.isv_prod_id == ref.isv_prod_id
            if signer_ok and report.isv_svn < ref.min_isv_svn:
                reasons.append(f"ISVSVN {report.isv_svn} is below the minimum {ref.min_isv_svn}")
            code_ok.append(signer_ok)
        if not code_ok:
            reasons.append("no SGX reference values (mrenclave or mrsigner) to appraise an SGX enclave against")
        elif ref.mrenclave and not code_ok[0]:
            reasons.append(f"MRENCLAVE {report.mr_enclave.hex()} is not an accepted measurement")
        if ref.mrsigner is not None and not code_ok[-1]:
            reasons.append(
                f"MRSIGNER {report.mr_signer.hex()} / ISVPRODID {report.isv_prod_id} is not the accepted signer and product"
            )
    else:
        mrtd = verified.mr_td
        if not ref.mrtd:
            reasons.append("no TDX reference values (mrtd) to appraise a TD against")
        elif mrtd not in ref.mrtd:
            reasons.append(f"MRTD {mrtd.hex() if mrtd else '?'} is not an accepted measurement")

    # The launch configuration (SGX KSS), checked whether or not the code identity is.
    if report is not None:
        if ref.config_id is not None and report.config_id != ref.config_id:
            reasons.append(f"CONFIGID {report.config_id.hex()} is not the expected {ref.config_id.hex()}")
        if report.config_svn < ref.min_config_svn:
            reasons.append(f"CONFIGSVN {report.config_svn} is below the minimum {ref.min_config_svn}")
    elif ref.config_id is not None or ref.min_config_svn:
        reasons.append("CONFIGID and CONFIGSVN are SGX launch values: a TD reports none")

    status = verified.tcb_status
    if status not in ref.accepted_tcb_statuses:
        accepted = ", ".join(sorted(ref.accepted_tcb_statuses))
        reasons.append(f"TCB status {status} is not accepted (accepted: {accepted})")
    elif status != TcbStatus.UP_TO_DATE:
        notes.append(f"TCB status {status}")
    bad = sorted(set(verified.advisory_ids) & ref.rejected_advisory_ids)
    if bad:
        reasons.append(f"platform is affected by rejected advisories {', '.join(bad)}")
    elif verified.advisory_ids:
        notes.append(f"advisories: {', '.join(verified.advisory_ids)}")

    return Verdict(not reasons, tuple(reasons), tuple(notes), verified)
