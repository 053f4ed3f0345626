"""Intel TCB info (v2/v3, SGX and TDX) and enclave identity (v2) documents, TCB level matching and the
status convergence of Intel's QVL (``EvaluateTcb.cpp``: platform level, then QE and TDX module levels,
"OutOfDate" and "Revoked" components downgrading the platform status).

Parsing is strict about what verification reads and ignores fields Intel may add later, as Intel's own
parser does. The text is read with :func:`json.loads` and a small reader straight into the frozen
dataclasses below: JSON types are not coerced (a boolean is not an integer, a float never stands for
one, strings are strings), sizes and ranges are checked (16 SVN components of 0..255, PCESVN and
ISVPRODID of 0..65535, hex fields of their exact length), statuses must be :class:`TcbStatus` names and
dates timezone-aware RFC 3339 date-times. The JSON itself is refused when an object has duplicate keys
(parsers disagree on which value wins, so a signed document must not leave that open: checked by
``json.loads``'s ``object_pairs_hook``) or holds NaN or Infinity (not JSON). A malformed document is a
``VerificationError`` on step ``tcb_info`` / ``qe_identity`` whose message names the field path, e.g.
``tcbLevels.2.tcb.pcesvn``. Pure: text in, objects out.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn, TypeVar

from fedattest.dcap.result import TcbStatus
from fedattest.errors import VerificationError

_T = TypeVar("_T")


# -- the strict reader ----------------------------------------------------------------------------------
# Readers name only the key they read; callers that descend add their part of the path to the error as it
# passes (_MalformedError.under), so a well-formed document pays for no path strings at all.
class _MalformedError(Exception):
    """A document error: ``what`` is wrong at ``path`` (keys and list indices, outermost first)."""

    def __init__(self, what: str, *path: str | int) -> None:
        super().__init__(what)
        self.what = what
        self.path = list(path)

    def under(self, *parts: str | int) -> _MalformedError:
        self.path[:0] = parts
        return self

    def __str__(self) -> str:
        return f"{'.'.join(str(p) for p in self.path)}: {self.what}" if self.path else self.what


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _MalformedError(f"an object repeats the key {key!r}")
            seen.add(key)
    return obj


def _no_constant(name: str) -> NoReturn:
    raise _MalformedError(f"{name} is not JSON")


def _load(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except ValueError as exc:  # JSONDecodeError, or an integer too long for int()
        raise _MalformedError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise _MalformedError("not valid JSON: nested too deeply") from None
    if type(doc) is not dict:
        raise _MalformedError("must be a JSON object")
    return doc


# Type checks are ``type(v) is T``: json.loads makes only dict, list, str, int, float, bool and None, and
# bool is a subclass of int, so ``isinstance(v, int)`` would take ``true`` for 1.
def _req(obj: dict[str, Any], key: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise _MalformedError("field required", key) from None


def _obj(value: Any, *path: str | int) -> dict[str, Any]:
    if type(value) is not dict:
        raise _MalformedError("must be an object", *path)
    return value


def _list(value: Any, key: str) -> list[Any]:
    if type(value) is not list:
        raise _MalformedError("must be an array", key)
    return value


def _int(value: Any, key: str, lo: int | None = None, hi: int | None = None) -> int:
    if type(value) is not int:
        raise _MalformedError("must be an integer", key)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _MalformedError(f"{value} is out of range {lo}..{'' if hi is None else hi}", key)
    return value


def _str(value: Any, key: str) -> str:
    if type(value) is not str:
        raise _MalformedError("must be a string", key)
    return value


def _hex(value: Any, size: int, key: str) -> bytes:
    try:
        raw = bytes.fromhex(_str(value, key))
    except ValueError:
        raise _MalformedError("is not valid hex", key) from None
    if len(raw) != size:
        raise _MalformedError(f"must be {size} bytes, got {len(raw)}", key)
    return raw


# RFC 3339 date-time, with the separators it allows (T, t or a space; Z or z): an offset is required, so
# a date without one is refused rather than read as local or UTC time. [0-9], not \d, which also matches
# non-ASCII digits.
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})")


def _datetime(value: Any, key: str) -> datetime:
    if type(value) is not str or _RFC3339.fullmatch(value) is None:
        raise _MalformedError("must be a timezone-aware RFC 3339 date-time (e.g. 2024-03-13T00:00:00Z)", key)
    try:
        # The shape is checked above; fromisoformat checks the ranges (month 13, February 30, hour 24).
        return datetime.fromisoformat(value[:-1] + "Z" if value[-1] == "z" else value)
    except ValueError as exc:
        raise _MalformedError(f"is not a valid date-time: {exc}", key) from None


_STATUSES = {s.value: s for s in TcbStatus}


def _status(value: Any, key: str) -> TcbStatus:
    status = _STATUSES.get(value) if type(value) is str else None
    if status is None:
        raise _MalformedError(f"must be one of {', '.join(_STATUSES)}", key)
    return status


def _advisories(level: dict[str, Any]) -> tuple[str, ...]:
    ids = level.get("advisoryIDs")
    if ids is None and "advisoryIDs" not in level:
        return ()
    if type(ids) is list and all(type(a) is str for a in ids):
        return tuple(ids)
    for i, adv in enumerate(_list(ids, "advisoryIDs")):
        if type(adv) is not str:
            raise _MalformedError("must be a string", "advisoryIDs", i)
    raise AssertionError("unreachable: the fast check failed, so one ID is not a string")


def _svns(value: Any, key: str) -> tuple[int, ...]:
    """16 TCB components ``[{"svn": 0..255, ...}, ...]``."""
    items = _list(value, key)
    if len(items) != 16:
        raise _MalformedError(f"must hold 16 items, got {len(items)}", key)
    # One pass in C for the usual, well-formed case (this runs for every level); the loop below names the
    # offending item. itemgetter raises TypeError on a non-object item and KeyError on a missing "svn".
    try:
        svns = tuple(map(_SVN, items))
        if set(map(type, svns)) == {int} and min(svns) >= 0 and max(svns) <= 255:
            return svns
    except (KeyError, TypeError):
        pass
    for i, c in enumerate(items):
        try:
            _int(_req(_obj(c), "svn"), "svn", 0, 255)
        except _MalformedError as exc:
            raise exc.under(key, i) from None
    raise AssertionError("unreachable: the fast check failed, so one component is malformed")


_SVN = operator.itemgetter("svn")


def _each(items: list[Any], key: str, read: Callable[[Any], _T]) -> list[_T]:
    """``read`` applied to each item of the array ``key``; an error names the item's index."""
    out = []
    for i, item in enumerate(items):
        try:
            out.append(read(item))
        except _MalformedError as exc:
            raise exc.under(key, i) from None
    return out


# -- the documents -----------------------------------------------------------------------------------
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
            info = _tcb_info(_load(text))
        except _MalformedError as exc:
            raise VerificationError("tcb_info", f"TCB info is malformed: {exc}") from None
        return info


def _tcb_info(doc: dict[str, Any]) -> TcbInfo:
    kind = doc.get("id", "SGX")
    if type(kind) is not str or kind not in ("SGX", "TDX"):
        raise _MalformedError("must be SGX or TDX", "id")
    version = _int(_req(doc, "version"), "version")
    if version not in (2, 3):
        raise _MalformedError(f"TCB info version {version} is not supported (2 or 3)", "version")
    issue_date = _datetime(_req(doc, "issueDate"), "issueDate")
    next_update = _datetime(_req(doc, "nextUpdate"), "nextUpdate")
    fmspc = _hex(_req(doc, "fmspc"), 6, "fmspc")
    pceid = _hex(_req(doc, "pceId"), 2, "pceId")
    if "tcbType" in doc:
        _int(doc["tcbType"], "tcbType")
    evaluation_number = _int(_req(doc, "tcbEvaluationDataNumber"), "tcbEvaluationDataNumber")
    module = None
    if doc.get("tdxModule") is not None:
        try:
            module = TdxModuleIdentity("", *_module_signer(_obj(doc["tdxModule"])), ())
        except _MalformedError as exc:
            raise exc.under("tdxModule") from None
    identities = _each(_list(doc.get("tdxModuleIdentities", []), "tdxModuleIdentities"), "tdxModuleIdentities", _module_identity)
    levels = _list(_req(doc, "tcbLevels"), "tcbLevels")
    if not levels:
        raise _MalformedError("must not be empty", "tcbLevels")
    read = _tcb_level_v3 if version == 3 else _tcb_level_v2
    tcb_levels = _each(levels, "tcbLevels", read)
    if kind == "TDX":
        if version < 3:
            raise _MalformedError("a TDX TCB info must be version 3", "version")
        if module is None:
            raise _MalformedError("a TDX TCB info needs a tdxModule", "tdxModule")
        for i, level in enumerate(tcb_levels):
            if level.tdx_components is None:
                raise _MalformedError("every TDX TCB level needs tdxtcbcomponents", "tcbLevels", i, "tcb")
    tcb_levels.sort(key=lambda lv: (lv.sgx_components, lv.pcesvn, lv.tdx_components or ()), reverse=True)
    return TcbInfo(
        id=kind,
        version=version,
        issue_date=issue_date,
        next_update=next_update,
        fmspc=fmspc,
        pceid=pceid,
        tcb_evaluation_data_number=evaluation_number,
        levels=tuple(tcb_levels),
        tdx_module=module,
        tdx_module_identities=tuple(identities),
    )


def _module_signer(m: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
    return (
        _hex(_req(m, "mrsigner"), 48, "mrsigner"),
        _hex(_req(m, "attributes"), 8, "attributes"),
        _hex(_req(m, "attributesMask"), 8, "attributesMask"),
    )


def _module_identity(value: Any) -> TdxModuleIdentity:
    m = _obj(value)
    ident = _str(_req(m, "id"), "id")
    signer = _module_signer(m)
    levels = _each(_list(_req(m, "tcbLevels"), "tcbLevels"), "tcbLevels", _module_level)
    return TdxModuleIdentity(ident, *signer, tuple(levels))


def _tcb_level_v3(value: Any) -> TcbLevel:
    level = _obj(value)
    tcb = _obj(_req(level, "tcb"), "tcb")
    try:
        sgx = _svns(_req(tcb, "sgxtcbcomponents"), "sgxtcbcomponents")
        pcesvn = _int(_req(tcb, "pcesvn"), "pcesvn", 0, 0xFFFF)
        tdx = tcb.get("tdxtcbcomponents")
        if tdx is not None:
            tdx = _svns(tdx, "tdxtcbcomponents")
    except _MalformedError as exc:
        raise exc.under("tcb") from None
    return TcbLevel(sgx, pcesvn, tdx, *_level_status(level))


_V2_COMPONENTS = tuple(f"sgxtcbcomp{i:02d}svn" for i in range(1, 17))


def _tcb_level_v2(value: Any) -> TcbLevel:
    level = _obj(value)
    tcb = _obj(_req(level, "tcb"), "tcb")
    try:
        if "sgxtcbcomponents" in tcb:
            raise _MalformedError("a version 2 TCB level has sgxtcbcompNNsvn fields, not sgxtcbcomponents")
        sgx = tuple(_int(_req(tcb, key), key, 0, 255) for key in _V2_COMPONENTS)
        pcesvn = _int(_req(tcb, "pcesvn"), "pcesvn", 0, 0xFFFF)
    except _MalformedError as exc:
        raise exc.under("tcb") from None
    return TcbLevel(sgx, pcesvn, None, *_level_status(level))


def _level_status(level: dict[str, Any]) -> tuple[datetime, TcbStatus, tuple[str, ...]]:
    return _datetime(_req(level, "tcbDate"), "tcbDate"), _status(_req(level, "tcbStatus"), "tcbStatus"), _advisories(level)


def _module_level(value: Any) -> ModuleLevel:
    """A QE identity or TDX module level: ``tcb`` holds integers only (``isvsvn`` among them)."""
    level = _obj(value)
    tcb = _obj(_req(level, "tcb"), "tcb")
    try:
        if not all(type(v) is int for v in tcb.values()):
            for key, v in tcb.items():
                _int(v, key)
        isvsvn = _int(_req(tcb, "isvsvn"), "isvsvn", 0)
    except _MalformedError as exc:
        raise exc.under("tcb") from None
    return ModuleLevel(isvsvn, *_level_status(level))


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
            ident = _enclave_identity(_load(text))
        except _MalformedError as exc:
            raise VerificationError("qe_identity", f"QE identity is malformed: {exc}") from None
        return ident

    def level_for(self, isvsvn: int) -> ModuleLevel | None:
        for level in self.levels:
            if isvsvn >= level.isvsvn:
                return level
        return None


def _enclave_identity(doc: dict[str, Any]) -> EnclaveIdentity:
    kind = _req(doc, "id")
    if type(kind) is not str or kind not in ("QE", "QVE", "TD_QE"):
        raise _MalformedError("must be QE, QVE or TD_QE", "id")
    version = _int(_req(doc, "version"), "version")
    if version != 2:
        raise _MalformedError(f"enclave identity version {version} is not supported (2)", "version")
    issue_date = _datetime(_req(doc, "issueDate"), "issueDate")
    next_update = _datetime(_req(doc, "nextUpdate"), "nextUpdate")
    _int(_req(doc, "tcbEvaluationDataNumber"), "tcbEvaluationDataNumber")
    miscselect = int.from_bytes(_hex(_req(doc, "miscselect"), 4, "miscselect"), "big")
    miscselect_mask = int.from_bytes(_hex(_req(doc, "miscselectMask"), 4, "miscselectMask"), "big")
    attributes = _hex(_req(doc, "attributes"), 16, "attributes")
    attributes_mask = _hex(_req(doc, "attributesMask"), 16, "attributesMask")
    mrsigner = _hex(_req(doc, "mrsigner"), 32, "mrsigner")
    isvprodid = _int(_req(doc, "isvprodid"), "isvprodid", 0, 0xFFFF)
    raw_levels = _list(_req(doc, "tcbLevels"), "tcbLevels")
    if not raw_levels:
        raise _MalformedError("must not be empty", "tcbLevels")
    levels = _each(raw_levels, "tcbLevels", _module_level)
    return EnclaveIdentity(
        id=kind,
        version=version,
        issue_date=issue_date,
        next_update=next_update,
        miscselect=miscselect,
        miscselect_mask=miscselect_mask,
        attributes=attributes,
        attributes_mask=attributes_mask,
        mrsigner=mrsigner,
        isvprodid=isvprodid,
        levels=tuple(sorted(levels, key=lambda lv: lv.isvsvn, reverse=True)),
    )


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
