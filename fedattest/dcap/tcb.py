"""Intel TCB info (v2/v3, SGX and TDX) and enclave identity (v2) documents, TCB level matching and the
status convergence of Intel's QVL (``EvaluateTcb.cpp``: platform level, then QE and TDX module levels,
"OutOfDate" and "Revoked" components downgrading the platform status).

Parsing is strict about what verification reads (types, sizes, hex lengths, known status names) and
ignores fields Intel may add later, as Intel's own parser does. Pure: text in, objects out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from fedattest.dcap.result import TcbStatus
from fedattest.errors import VerificationError

_MODEL = ConfigDict(extra="ignore", frozen=True, strict=True)


def _hex(value: Any, size: int, name: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{name} is not valid hex") from None
    if len(raw) != size:
        raise ValueError(f"{name} must be {size} bytes, got {len(raw)}")
    return raw


class _Svn(BaseModel):
    model_config = _MODEL
    svn: int = Field(ge=0, le=255)


class _TcbV3(BaseModel):
    model_config = _MODEL
    sgxtcbcomponents: list[_Svn] = Field(min_length=16, max_length=16)
    pcesvn: int = Field(ge=0, le=0xFFFF)
    tdxtcbcomponents: list[_Svn] | None = Field(default=None, min_length=16, max_length=16)


class _TcbLevelJson(BaseModel):
    model_config = _MODEL
    # Version 3 levels validate in the same pass as the document; version 2's flat shape is read by hand.
    tcb: _TcbV3 | dict[str, Any]
    tcbDate: AwareDatetime  # noqa: N815 - Intel's key
    tcbStatus: TcbStatus  # noqa: N815
    advisoryIDs: list[str] = []  # noqa: N815


class _ModuleLevelJson(BaseModel):
    model_config = _MODEL
    tcb: dict[str, int]
    tcbDate: AwareDatetime  # noqa: N815
    tcbStatus: TcbStatus  # noqa: N815
    advisoryIDs: list[str] = []  # noqa: N815


class _TdxModuleJson(BaseModel):
    model_config = _MODEL
    mrsigner: str
    attributes: str
    attributesMask: str  # noqa: N815


class _TdxModuleIdentityJson(_TdxModuleJson):
    id: str
    tcbLevels: list[_ModuleLevelJson]  # noqa: N815


class _TcbInfoJson(BaseModel):
    model_config = _MODEL
    id: Literal["SGX", "TDX"] = "SGX"
    version: int
    issueDate: AwareDatetime  # noqa: N815
    nextUpdate: AwareDatetime  # noqa: N815
    fmspc: str
    pceId: str  # noqa: N815
    tcbType: int = 0  # noqa: N815
    tcbEvaluationDataNumber: int  # noqa: N815
    tdxModule: _TdxModuleJson | None = None  # noqa: N815
    tdxModuleIdentities: list[_TdxModuleIdentityJson] = []  # noqa: N815
    tcbLevels: list[_TcbLevelJson] = Field(min_length=1)  # noqa: N815

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v not in (2, 3):
            raise ValueError(f"TCB info version {v} is not supported (2 or 3)")
        return v


@dataclass(frozen=True)
class TcbLevel:
    sgx_components: tuple[int, ...]
    pcesvn: int
    tdx_components: tuple[int, ...] | None
    tcb_date: datetime
    status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class ModuleLevel:
    isvsvn: int
    tcb_date: datetime
    status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class TdxModuleIdentity:
    id: str
    mrsigner: bytes
    attributes: bytes
    attributes_mask: bytes
    levels: tuple[ModuleLevel, ...]


@dataclass(frozen=True)
class TcbInfo:
    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pceid: bytes
    tcb_evaluation_data_number: int
    levels: tuple[TcbLevel, ...]  # sorted highest first, as Intel's QVL iterates them
    tdx_module: TdxModuleIdentity | None
    tdx_module_identities: tuple[TdxModuleIdentity, ...]

    @classmethod
    def parse(cls, text: str) -> TcbInfo:
        try:
            doc = _TcbInfoJson.model_validate_json(text)
            levels = [_level(lv, doc.version) for lv in doc.tcbLevels]
            module = None
            if doc.tdxModule is not None:
                m = doc.tdxModule
                module = TdxModuleIdentity(
                    "", _hex(m.mrsigner, 48, "tdxModule.mrsigner"), _hex(m.attributes, 8, "tdxModule.attributes"),
                    _hex(m.attributesMask, 8, "tdxModule.attributesMask"), (),
                )  # fmt: skip
            identities = tuple(
                TdxModuleIdentity(
                    i.id,
                    _hex(i.mrsigner, 48, "tdxModuleIdentities.mrsigner"),
                    _hex(i.attributes, 8, "tdxModuleIdentities.attributes"),
                    _hex(i.attributesMask, 8, "tdxModuleIdentities.attributesMask"),
                    tuple(
                        ModuleLevel(_int(lv.tcb, "isvsvn"), lv.tcbDate, lv.tcbStatus, tuple(lv.advisoryIDs)) for lv in i.tcbLevels
                    ),
                )
                for i in doc.tdxModuleIdentities
            )
            if doc.id == "TDX" and (doc.version < 3 or module is None):
                raise ValueError("TDX TCB info must be version 3 with a tdxModule")
            if doc.id == "TDX" and any(lv.tdx_components is None for lv in levels):
                raise ValueError("every TDX TCB level needs tdxtcbcomponents")
            fmspc = _hex(doc.fmspc, 6, "fmspc")
            pceid = _hex(doc.pceId, 2, "pceId")
        except (ValidationError, ValueError) as exc:
            raise VerificationError("tcb_info", f"TCB info is malformed: {_first_error(exc)}") from None
        levels.sort(key=lambda lv: (lv.sgx_components, lv.pcesvn, lv.tdx_components or ()), reverse=True)
        return cls(
            id=doc.id,
            version=doc.version,
            issue_date=doc.issueDate,
            next_update=doc.nextUpdate,
            fmspc=fmspc,
            pceid=pceid,
            tcb_evaluation_data_number=doc.tcbEvaluationDataNumber,
            levels=tuple(levels),
            tdx_module=module,
            tdx_module_identities=identities,
        )


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"tcb.{key} must be a non-negative integer")
    return value


def _level(lv: _TcbLevelJson, version: int) -> TcbLevel:
    tcb = lv.tcb
    if version >= 3:
        t = tcb if isinstance(tcb, _TcbV3) else _TcbV3.model_validate(tcb)  # the latter raises the precise error
        sgx = tuple(c.svn for c in t.sgxtcbcomponents)
        tdx = tuple(c.svn for c in t.tdxtcbcomponents) if t.tdxtcbcomponents is not None else None
        pcesvn = t.pcesvn
    else:
        if not isinstance(tcb, dict):
            raise ValueError("a version 2 TCB level has sgxtcbcompNNsvn fields, not sgxtcbcomponents")
        sgx = tuple(_int(tcb, f"sgxtcbcomp{i:02d}svn") for i in range(1, 17))
        if any(s > 255 for s in sgx):
            raise ValueError("SGX TCB component out of range")
        pcesvn, tdx = _int(tcb, "pcesvn"), None
    return TcbLevel(sgx, pcesvn, tdx, lv.tcbDate, lv.tcbStatus, tuple(lv.advisoryIDs))


class _QeIdentityJson(BaseModel):
    model_config = _MODEL
    id: Literal["QE", "QVE", "TD_QE"]
    version: int
    issueDate: AwareDatetime  # noqa: N815
    nextUpdate: AwareDatetime  # noqa: N815
    tcbEvaluationDataNumber: int  # noqa: N815
    miscselect: str
    miscselectMask: str  # noqa: N815
    attributes: str
    attributesMask: str  # noqa: N815
    mrsigner: str
    isvprodid: int = Field(ge=0, le=0xFFFF)
    tcbLevels: list[_ModuleLevelJson] = Field(min_length=1)  # noqa: N815


@dataclass(frozen=True)
class EnclaveIdentity:
    """Intel's signed identity of the QE (or TD QE): what a genuine QE report must show."""

    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isvprodid: int
    levels: tuple[ModuleLevel, ...]  # highest ISVSVN first

    @classmethod
    def parse(cls, text: str) -> EnclaveIdentity:
        try:
            doc = _QeIdentityJson.model_validate_json(text)
            if doc.version != 2:
                raise ValueError(f"enclave identity version {doc.version} is not supported (2)")
            levels = [
                ModuleLevel(_int(lv.tcb, "isvsvn"), lv.tcbDate, lv.tcbStatus, tuple(lv.advisoryIDs)) for lv in doc.tcbLevels
            ]
            out = cls(
                id=doc.id,
                version=doc.version,
                issue_date=doc.issueDate,
                next_update=doc.nextUpdate,
                miscselect=int.from_bytes(_hex(doc.miscselect, 4, "miscselect"), "big"),
                miscselect_mask=int.from_bytes(_hex(doc.miscselectMask, 4, "miscselectMask"), "big"),
                attributes=_hex(doc.attributes, 16, "attributes"),
                attributes_mask=_hex(doc.attributesMask, 16, "attributesMask"),
                mrsigner=_hex(doc.mrsigner, 32, "mrsigner"),
                isvprodid=doc.isvprodid,
                levels=tuple(sorted(levels, key=lambda lv: lv.isvsvn, reverse=True)),
            )
        except (ValidationError, ValueError) as exc:
            raise VerificationError("qe_identity", f"QE identity is malformed: {_first_error(exc)}") from None
        return out

    def level_for(self, isvsvn: int) -> ModuleLevel | None:
        for level in self.levels:
            if isvsvn >= level.isvsvn:
                return level
        return None


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        return f"{loc}: {err['msg']}" if loc else str(err["msg"])
    return str(exc)


# -- TCB evaluation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TcbEvaluation:
    status: TcbStatus
    platform_status: TcbStatus
    qe_status: TcbStatus
    tcb_date: datetime
    advisory_ids: tuple[str, ...]


def converge(platform: TcbStatus, components: list[TcbStatus]) -> TcbStatus:
    """Intel QVL's ``convergeTcbStatuses``: an OutOfDate QE or TDX module downgrades the platform
    status; a Revoked one revokes it."""
    status = platform
    if TcbStatus.OUT_OF_DATE in components:
        if platform in (TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED):
            status = TcbStatus.OUT_OF_DATE
        elif platform in (TcbStatus.CONFIGURATION_NEEDED, TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED):
            status = TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    if TcbStatus.REVOKED in components:
        status = TcbStatus.REVOKED
    return status


_QE_STATUSES = {
    TcbStatus.UP_TO_DATE,
    TcbStatus.OUT_OF_DATE,
    TcbStatus.CONFIGURATION_NEEDED,
    TcbStatus.REVOKED,
    TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED,
}
_MODULE_STATUSES = {TcbStatus.UP_TO_DATE, TcbStatus.OUT_OF_DATE, TcbStatus.REVOKED}


def _ge(values: bytes | tuple[int, ...], required: tuple[int, ...], start: int = 0) -> bool:
    return all(values[i] >= required[i] for i in range(start, 16))


def evaluate_tcb(
    tcb_info: TcbInfo,
    qe_identity: EnclaveIdentity,
    *,
    pck_components: tuple[int, ...],
    pcesvn: int,
    qe_isvsvn: int,
    tee_tcb_svn: bytes | None,
) -> TcbEvaluation:
    """Select the TCB level (first level, highest first, that the platform meets) and converge the
    platform, QE and (TDX) module statuses. Raises ``VerificationError("tcb_level", ...)`` when the
    platform is below every level (Intel: STATUS_TCB_NOT_SUPPORTED)."""
    tdx = tee_tcb_svn is not None
    start = 2 if tdx and tee_tcb_svn is not None and tee_tcb_svn[1] > 0 else 0
    platform: TcbLevel | None = None
    for level in tcb_info.levels:
        if not _ge(pck_components, level.sgx_components) or pcesvn < level.pcesvn:
            continue
        if tdx:
            assert tee_tcb_svn is not None and level.tdx_components is not None  # checked at parse
            if not _ge(tee_tcb_svn, level.tdx_components, start):
                continue
        platform = level
        break
    if platform is None:
        what = "PCK TCB components, PCESVN" + (" and TEE TCB SVN" if tdx else "")
        raise VerificationError(
            "tcb_level", f"the platform's {what} are below every TCB level in the TCB info (TCB level not supported)"
        )
    components: list[TcbStatus] = []
    dates = [platform.tcb_date]
    module_advisories: tuple[str, ...] = ()
    if tdx and tee_tcb_svn is not None and tee_tcb_svn[1] > 0:
        wanted = f"TDX_{tee_tcb_svn[1]:02X}"
        identity = next((i for i in tcb_info.tdx_module_identities if i.id.upper() == wanted), None)
        if identity is None:
            raise VerificationError("tcb_level", f"TCB info has no TDX module identity {wanted}")
        mlevel = next((lv for lv in identity.levels if tee_tcb_svn[0] >= lv.isvsvn), None)
        if mlevel is None:
            raise VerificationError("tcb_level", f"TDX module ISVSVN {tee_tcb_svn[0]} is below every level of {wanted}")
        if mlevel.status not in _MODULE_STATUSES:
            raise VerificationError("tcb_level", f"TDX module level status {mlevel.status} is not valid for a module")
        components.append(mlevel.status)
        dates.append(mlevel.tcb_date)
        module_advisories = mlevel.advisory_ids

    qe_level = qe_identity.level_for(qe_isvsvn)
    if qe_level is None:
        raise VerificationError("qe_identity", f"QE ISVSVN {qe_isvsvn} is below every level in the QE identity")
    if qe_level.status not in _QE_STATUSES:
        raise VerificationError("qe_identity", f"QE identity level status {qe_level.status} is not valid for a QE")
    components.append(qe_level.status)
    dates.append(qe_level.tcb_date)

    advisories: list[str] = []
    for adv in (*platform.advisory_ids, *qe_level.advisory_ids, *module_advisories):
        if adv not in advisories:
            advisories.append(adv)
    return TcbEvaluation(
        status=converge(platform.status, components),
        platform_status=platform.status,
        qe_status=qe_level.status,
        tcb_date=min(dates),
        advisory_ids=tuple(advisories),
    )
