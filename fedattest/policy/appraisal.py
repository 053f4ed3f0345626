"""Appraisal: does a verified quote show what we expect to run?

Verification (``fedattest.dcap``) answers "is this genuine evidence from a platform at TCB status X?".
Appraisal answers "is it the code, configuration and platform state we accept?" against
:class:`ReferenceValues`, and returns a :class:`Verdict` carrying *every* reason for rejection (not just
the first), so operators can fix everything in one go. Fail closed: an empty reference value set
accepts nothing, simulated evidence is refused unless allowed, and a Revoked TCB can never be accepted.

Reference values are small composable policies (:class:`Reference`: :class:`Mrenclave`, :class:`Signer`,
:class:`Mrtd`, :class:`LaunchConfig`, :class:`PlatformTcb`, :class:`Simulation`, :class:`Debug`, combined
with :class:`AllOf` and :class:`AnyOf`). :class:`ReferenceValues` is the serialisable form a policy file
holds; :func:`reference_policy` turns it into one such composition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

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


def _verdict(reasons: Iterable[str] = (), notes: Iterable[str] = ()) -> Verdict:
    reasons = tuple(reasons)
    return Verdict(not reasons, reasons, tuple(notes))


# -- reference values as small composable policies ----------------------------------------------------
#
# Each class checks one aspect of verified evidence and returns a Verdict with every reason it finds;
# AllOf and AnyOf combine them (as sigstore-python's policies do). ReferenceValues, the form a federation
# policy and `quote verify` write, is one such composition (ReferenceValues.policy); callers with needs it
# does not express (accept either of two releases during a rollout, SGX or TDX members) build their own.


class Reference(Protocol):
    """What one aspect of verified evidence must show."""

    def check(self, verified: VerifiedQuote) -> Verdict:
        """Every reason ``verified`` fails this reference (none when it passes), and notes for an auditor."""
        ...


@dataclass(frozen=True, init=False)
class _Combination:
    references: tuple[Reference, ...]

    def __init__(self, *references: Reference) -> None:
        object.__setattr__(self, "references", references)

    def _verdicts(self, verified: VerifiedQuote) -> list[Verdict]:
        if not self.references:  # fail closed: a combination of nothing accepts nothing
            return [_verdict([f"an empty {type(self).__name__} accepts nothing"])]
        return [r.check(verified) for r in self.references]


class AllOf(_Combination):
    """Accepts when every reference accepts; collects every reason and every note, in order. Empty: refuses."""

    def check(self, verified: VerifiedQuote) -> Verdict:
        verdicts = self._verdicts(verified)
        return _verdict([x for v in verdicts for x in v.reasons], [x for v in verdicts for x in v.notes])


class AnyOf(_Combination):
    """Accepts when at least one reference accepts (its notes are kept); otherwise every alternative's
    reasons. Empty: refuses."""

    def check(self, verified: VerifiedQuote) -> Verdict:
        verdicts = self._verdicts(verified)
        return next((v for v in verdicts if v.accepted), _verdict([x for v in verdicts for x in v.reasons]))


@dataclass(frozen=True)
class Refuse:
    """Refuses with ``reason``: the branch of a composition that has no acceptable value."""

    reason: str

    def check(self, verified: VerifiedQuote) -> Verdict:
        return _verdict([self.reason])


@dataclass(frozen=True)
class ForTee:
    """``sgx`` for an SGX enclave's evidence, ``tdx`` for a TD's."""

    sgx: Reference
    tdx: Reference

    def check(self, verified: VerifiedQuote) -> Verdict:
        return (self.sgx if verified.sgx_report is not None else self.tdx).check(verified)


@dataclass(frozen=True)
class Simulation:
    """Simulated evidence (a trust root other than Intel's) only when ``allowed``; then noted."""

    allowed: bool = False

    def check(self, verified: VerifiedQuote) -> Verdict:
        if not verified.simulated:
            return _verdict()
        if self.allowed:
            return _verdict(notes=["simulated evidence (not from Intel hardware), accepted because simulation is allowed"])
        return _verdict(["evidence is simulated (its trust root is not Intel's SGX Root CA) and simulation is not allowed"])


@dataclass(frozen=True)
class Debug:
    """A debug enclave or TD (its memory readable by the host) only when ``allowed``; then noted."""

    allowed: bool = False

    def check(self, verified: VerifiedQuote) -> Verdict:
        if not verified.debug:
            return _verdict()
        if self.allowed:
            return _verdict(notes=["debug enclave: its memory is readable by the host"])
        return _verdict(["enclave runs in debug mode and debug is not allowed"])


@dataclass(frozen=True)
class Mrenclave:
    """An SGX enclave whose MRENCLAVE is one of ``values``."""

    values: frozenset[bytes]

    def check(self, verified: VerifiedQuote) -> Verdict:
        report = verified.sgx_report
        if report is None:
            return _verdict(["MRENCLAVE is an SGX value: a TD reports none"])
        if report.mr_enclave in self.values:
            return _verdict()
        return _verdict([f"MRENCLAVE {report.mr_enclave.hex()} is not an accepted measurement"])


@dataclass(frozen=True)
class Signer:
    """An SGX enclave signed by ``mrsigner`` as product ``isv_prod_id``, at ISVSVN ``min_isv_svn`` or above."""

    mrsigner: bytes
    isv_prod_id: int
    min_isv_svn: int = 0

    def check(self, verified: VerifiedQuote) -> Verdict:
        report = verified.sgx_report
        if report is None:
            return _verdict(["MRSIGNER is an SGX value: a TD reports none"])
        if report.mr_signer != self.mrsigner or report.isv_prod_id != self.isv_prod_id:
            return _verdict(
                [f"MRSIGNER {report.mr_signer.hex()} / ISVPRODID {report.isv_prod_id} is not the accepted signer and product"]
            )
        if report.isv_svn < self.min_isv_svn:
            return _verdict([f"ISVSVN {report.isv_svn} is below the minimum {self.min_isv_svn}"])
        return _verdict()


@dataclass(frozen=True)
class Mrtd:
    """A TD whose MRTD is one of ``values``."""

    values: frozenset[bytes]

    def check(self, verified: VerifiedQuote) -> Verdict:
        if verified.sgx_report is not None:
            return _verdict(["MRTD is a TDX value: an SGX enclave reports none"])
        mrtd = verified.mr_td
        if mrtd in self.values:
            return _verdict()
        return _verdict([f"MRTD {mrtd.hex() if mrtd else '?'} is not an accepted measurement"])


@dataclass(frozen=True)
class AnyCode:
    """Accepts any code, and says so in a note: for tools that check only the platform."""

    def check(self, verified: VerifiedQuote) -> Verdict:
        return _verdict(notes=[CODE_NOT_CHECKED])


CODE_NOT_CHECKED = "code identity not checked (no reference measurement given)"


@dataclass(frozen=True)
class LaunchConfig:
    """SGX KSS: the enclave was launched with CONFIGID ``config_id`` (None: any) at CONFIGSVN
    ``min_config_svn`` or above. A TD reports neither, so it passes only a reference that asks for neither."""

    config_id: bytes | None = None
    min_config_svn: int = 0

    def check(self, verified: VerifiedQuote) -> Verdict:
        report = verified.sgx_report
        if report is None:
            if self.config_id is not None or self.min_config_svn:
                return _verdict(["CONFIGID and CONFIGSVN are SGX launch values: a TD reports none"])
            return _verdict()
        reasons = []
        if self.config_id is not None and report.config_id != self.config_id:
            reasons.append(f"CONFIGID {report.config_id.hex()} is not the expected {self.config_id.hex()}")
        if report.config_svn < self.min_config_svn:
            reasons.append(f"CONFIGSVN {report.config_svn} is below the minimum {self.min_config_svn}")
        return _verdict(reasons)


@dataclass(frozen=True)
class PlatformTcb:
    """The platform's TCB status is one of ``accepted`` and it is affected by none of ``rejected_advisories``;
    another accepted status and the advisories are noted. (A Revoked TCB is refused under every reference by
    :func:`appraise` itself, whatever ``accepted`` says.)"""

    accepted: frozenset[TcbStatus] = DEFAULT_ACCEPTED_TCB
    rejected_advisories: frozenset[str] = frozenset()

    def check(self, verified: VerifiedQuote) -> Verdict:
        reasons: list[str] = []
        notes: list[str] = []
        status = verified.tcb_status
        if status == TcbStatus.REVOKED:
            pass  # the floor's reason (_NotRevoked), not a second one here
        elif status not in self.accepted:
            accepted = ", ".join(sorted(self.accepted - {TcbStatus.REVOKED}))
            reasons.append(f"TCB status {status} is not accepted (accepted: {accepted})")
        elif status != TcbStatus.UP_TO_DATE:
            notes.append(f"TCB status {status}")
        bad = sorted(set(verified.advisory_ids) & self.rejected_advisories)
        if bad:
            reasons.append(f"platform is affected by rejected advisories {', '.join(bad)}")
        elif verified.advisory_ids:
            notes.append(f"advisories: {', '.join(verified.advisory_ids)}")
        return _verdict(reasons, notes)


@dataclass(frozen=True)
class _NotRevoked:
    """The floor under every reference, composed ones included: Intel revoked this platform's TCB."""

    def check(self, verified: VerifiedQuote) -> Verdict:
        if verified.tcb_status == TcbStatus.REVOKED:
            return _verdict(["TCB status Revoked is not accepted (Intel revoked this platform's TCB: never accepted)"])
        return _verdict()


def reference_policy(ref: ReferenceValues) -> AllOf:
    """``ref`` as a composition: origin (simulation), debug, code identity, launch configuration, platform TCB."""
    code: Reference
    if ref.accept_any_code:
        code = AnyCode()
    else:
        sgx: list[Reference] = []
        if ref.mrenclave:
            sgx.append(Mrenclave(ref.mrenclave))
        if ref.mrsigner is not None and ref.isv_prod_id is not None:
            sgx.append(Signer(ref.mrsigner, ref.isv_prod_id, ref.min_isv_svn))
        no_sgx = Refuse("no SGX reference values (mrenclave or mrsigner) to appraise an SGX enclave against")
        code = ForTee(
            sgx=AllOf(*sgx) if sgx else no_sgx,
            tdx=Mrtd(ref.mrtd) if ref.mrtd else Refuse("no TDX reference values (mrtd) to appraise a TD against"),
        )
    return AllOf(
        Simulation(ref.allow_simulation),
        Debug(ref.allow_debug),
        code,
        LaunchConfig(ref.config_id, ref.min_config_svn),
        PlatformTcb(ref.accepted_tcb_statuses, ref.rejected_advisory_ids),
    )


def appraise(verified: VerifiedQuote, ref: ReferenceValues | Reference) -> Verdict:
    """Check ``verified`` against ``ref`` (reference values, or any composition of references); never
    raises for a mismatch."""
    policy = reference_policy(ref) if isinstance(ref, ReferenceValues) else ref
    verdict = AllOf(policy, _NotRevoked()).check(verified)
    return Verdict(verdict.accepted, verdict.reasons, verdict.notes, verified)
