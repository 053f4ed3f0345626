"""``fedattest quote show`` and ``fedattest quote verify``.

The commands parse their options and render: evidence is read as far as it parses
(:func:`fedattest.sgx.partial.view_quote`), attested with :func:`fedattest.attestation.attest`, and shown as one
JSON object (:func:`describe_quote`, :func:`verification_json`) or a two-column listing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from cryptography import x509

from fedattest.cli._common import (
    EXIT_OK,
    EXIT_REJECTED,
    QUOTE_INPUT_RULE,
    CliUsageError,
    decode_evidence,
    default_cache_dir,
    exit_with,
    iso,
    one_line,
    padded_64,
    parse_hex,
    parse_time,
    print_json,
    print_line,
    read_input,
)
from fedattest.cli.fields import FieldList
from fedattest.dcap.chain import load_pem_chain
from fedattest.dcap.result import TcbStatus
from fedattest.dcap.trust import is_intel_root, load_trust_root
from fedattest.errors import FedattestError, FormatError
from fedattest.sgx.partial import QuoteView, view_quote
from fedattest.sgx.pck_extension import SGX_EXTENSION_OID, PckExtension, SgxType
from fedattest.sgx.quote import (
    INTEL_QE_VENDOR_ID,
    AttestationKeyType,
    CertificationDataType,
    Quote,
    ReportBody,
    TdReport,
)

# The verifier, collateral and appraisal modules are imported where they are used: 'quote show' needs
# none of them (the appraisal module builds pydantic models at import time, the verifier loads cryptography).
if TYPE_CHECKING:
    from fedattest.attestation import Attestation
    from fedattest.dcap.collateral import Collateral
    from fedattest.dcap.verify import QuoteVerifier
    from fedattest.policy.appraisal import ReferenceValues

app = typer.Typer(
    name="quote",
    help=(
        "Inspect and verify DCAP quotes (SGX v3/v4/v5 and TDX v4/v5).\n\n"
        "'show' prints every field of a quote; 'verify' checks it with the DCAP verifier (Intel's"
        " root by default) and appraises it against the measurements you expect.\n\n"
        "Example: fedattest quote verify quote.bin --collateral collateral.json --expect-mrenclave 3b94...b7"
    ),
    no_args_is_help=True,
)

# -- decoding and describing quotes --------------------------------------------------------------------

SGX_FLAG_NAMES = {
    0: "INIT", 1: "DEBUG", 2: "MODE64BIT", 4: "PROVISIONKEY", 5: "EINITTOKEN_KEY", 6: "CET", 7: "KSS", 10: "AEXNOTIFY",
}  # fmt: skip
XFRM_NAMES = {
    0: "X87", 1: "SSE", 2: "AVX", 3: "BNDREGS", 4: "BNDCSR", 5: "OPMASK", 6: "ZMM_HI256", 7: "HI16_ZMM", 8: "PT",
    9: "PKRU", 11: "CET_U", 12: "CET_S", 14: "UINTR", 15: "LBR", 16: "HWP", 17: "AMX_TILECFG", 18: "AMX_TILEDATA",
}  # fmt: skip
TD_ATTRIBUTE_NAMES = {0: "DEBUG", 28: "SEPT_VE_DISABLE", 29: "MIGRATABLE", 30: "PKS", 31: "KL", 63: "PERFMON"}
CERT_TYPE_NAMES = {
    1: "PPID in clear text",
    2: "PPID encrypted with RSA-2048",
    3: "PPID encrypted with RSA-3072 (EPPID)",
    4: "PCK leaf certificate only",
    5: "PCK certificate chain",
    6: "QE report certification data",
    7: "platform manifest",
}
BODY_TYPE_NAMES = {1: "SGX enclave report", 2: "TD report 1.0", 3: "TD report 1.5"}


def bit_names(value: int, names: dict[int, str]) -> list[str]:
    """Names of the set bits of ``value`` (unknown bits as ``bitN``), lowest first."""
    return [names.get(i, f"bit{i}") for i in range(value.bit_length()) if value >> i & 1]


def load_quote(path: str) -> QuoteView:
    """Read and decode QUOTE (see :data:`QUOTE_INPUT_RULE`) and parse it as far as it goes."""
    label = "standard input" if path == "-" else f"quote file {path!r}"
    raw, encoding = decode_evidence(read_input(path, "quote file"), label)
    return view_quote(raw, encoding)


def _hex_bits(value: int, width: int) -> str:
    return f"0x{value:0{width * 2}x}"


def _sgx_report(body: ReportBody) -> dict[str, Any]:
    return {
        "cpu_svn": body.cpu_svn.hex(),
        "misc_select": _hex_bits(body.misc_select, 4),
        "isv_ext_prod_id": body.isv_ext_prod_id.hex(),
        "attributes": {
            "raw": body.attributes.hex(),
            "flags": _hex_bits(body.flags, 8),
            "flag_names": bit_names(body.flags, SGX_FLAG_NAMES),
            "xfrm": _hex_bits(body.xfrm, 8),
            "xfrm_names": bit_names(body.xfrm, XFRM_NAMES),
        },
        "debug": body.debug,
        "mrenclave": body.mr_enclave.hex(),
        "mrsigner": body.mr_signer.hex(),
        "config_id": body.config_id.hex(),
        "isv_prod_id": body.isv_prod_id,
        "isv_svn": body.isv_svn,
        "config_svn": body.config_svn,
        "isv_family_id": body.isv_family_id.hex(),
        "report_data": body.report_data.hex(),
    }


def _td_report(body: TdReport) -> dict[str, Any]:
    td_attributes = int.from_bytes(body.td_attributes, "little")
    xfam = int.from_bytes(body.xfam, "little")
    out: dict[str, Any] = {
        "tee_tcb_svn": body.tee_tcb_svn.hex(),
        "mrseam": body.mr_seam.hex(),
        "mrsignerseam": body.mr_signer_seam.hex(),
        "seam_attributes": _hex_bits(int.from_bytes(body.seam_attributes, "little"), 8),
        "td_attributes": {"value": _hex_bits(td_attributes, 8), "names": bit_names(td_attributes, TD_ATTRIBUTE_NAMES)},
        "debug": body.debug,
        "xfam": {"value": _hex_bits(xfam, 8), "names": bit_names(xfam, XFRM_NAMES)},
        "mrtd": body.mr_td.hex(),
        "mrconfigid": body.mr_config_id.hex(),
        "mrowner": body.mr_owner.hex(),
        "mrownerconfig": body.mr_owner_config.hex(),
        "rtmr0": body.rt_mr0.hex(),
        "rtmr1": body.rt_mr1.hex(),
        "rtmr2": body.rt_mr2.hex(),
        "rtmr3": body.rt_mr3.hex(),
        "report_data": body.report_data.hex(),
    }
    if body.tee_tcb_svn2 is not None and body.mr_service_td is not None:
        out["tee_tcb_svn2"] = body.tee_tcb_svn2.hex()
        out["mrservicetd"] = body.mr_service_td.hex()
    return out


def _pck_details(pem: bytes) -> tuple[list[dict[str, Any]], dict[str, Any] | None, list[str]]:
    """The PCK chain's certificates and the leaf's SGX extension, for display only (not verified)."""
    problems: list[str] = []
    try:
        certs = load_pem_chain(pem, "PCK certificate chain", "pck_chain")
    except FedattestError as exc:
        return [], None, [f"PCK certificate chain does not parse: {exc}"]
    chain = [
        {
            "subject": c.subject.rfc4514_string(),
            "issuer": c.issuer.rfc4514_string(),
            "serial": f"{c.serial_number:x}",
            "not_before": iso(c.not_valid_before_utc),
            "not_after": iso(c.not_valid_after_utc),
        }
        for c in certs
    ]
    ext: dict[str, Any] | None = None
    try:
        value = certs[0].extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
        if not isinstance(value, x509.UnrecognizedExtension):
            raise FormatError("pck_certificate.sgx_extension", "not in the expected form")
        parsed = PckExtension.parse(value.value)
    except x509.ExtensionNotFound:
        problems.append("PCK certificate has no SGX extension")
    except FormatError as exc:
        problems.append(f"PCK certificate's SGX extension does not parse: {exc}")
    else:
        try:
            sgx_type: str = SgxType(parsed.sgx_type).name
        except ValueError:
            sgx_type = str(parsed.sgx_type)
        ext = {
            "fmspc": parsed.fmspc.hex(),
            "pceid": parsed.pceid.hex(),
            "ppid": parsed.ppid.hex(),
            "sgx_type": sgx_type,
            "pcesvn": parsed.pcesvn,
            "cpusvn": parsed.cpusvn.hex(),
            "tcb_components": list(parsed.tcb_components),
        }
        if parsed.platform_instance_id is not None:
            ext["platform_instance_id"] = parsed.platform_instance_id.hex()
        if parsed.configuration is not None:
            c = parsed.configuration
            ext["configuration"] = {
                "dynamic_platform": c.dynamic_platform,
                "cached_keys": c.cached_keys,
                "smt_enabled": c.smt_enabled,
            }
    return chain, ext, problems


def describe_quote(view: QuoteView) -> dict[str, Any]:
    """Every field of the quote as one JSON-ready object. Byte strings are lowercase hex; bit fields are
    ``0x``-prefixed hex with their decoded names; numbers are integers."""
    out: dict[str, Any] = {"encoding": view.encoding, "size": len(view.raw), "parsed": view.quote is not None}
    if view.error is not None:
        out["error"] = str(view.error)
    h = view.header
    if h is not None:
        try:
            key_type = AttestationKeyType(h.attestation_key_type).name
        except ValueError:
            key_type = f"unknown ({h.attestation_key_type})"
        out["header"] = {
            "version": h.version,
            "attestation_key_type": key_type,
            "tee_type": view.tee or f"unknown (0x{h.tee_type:08x})",
            "qe_svn": h.qe_svn,
            "pce_svn": h.pce_svn,
            "qe_vendor_id": h.qe_vendor_id.hex(),
            "qe_vendor": "Intel" if h.qe_vendor_id == INTEL_QE_VENDOR_ID else "unknown",
            "user_data": h.user_data.hex(),
        }
        if view.body_type is not None:
            out["header"]["body_type"] = view.body_type
            out["header"]["body_type_name"] = BODY_TYPE_NAMES.get(view.body_type, "unknown")
    if view.sgx_body is not None:
        out["sgx_report"] = _sgx_report(view.sgx_body)
    if view.td_body is not None:
        out["td_report"] = _td_report(view.td_body)
    if view.cert_type is not None:
        out["certification_data"] = {
            "type": view.cert_type,
            "name": CERT_TYPE_NAMES.get(view.cert_type, "unknown"),
            "supported": view.cert_type == CertificationDataType.PCK_CERT_CHAIN,
        }
    q = view.quote
    if q is not None:
        s = q.signature
        qe = s.qe.qe_report
        out["signature"] = {"quote_signature": s.quote_signature.hex(), "attestation_key": s.attestation_key.hex()}
        out["qe_report"] = {
            "mrenclave": qe.mr_enclave.hex(),
            "mrsigner": qe.mr_signer.hex(),
            "isv_prod_id": qe.isv_prod_id,
            "isv_svn": qe.isv_svn,
            "cpu_svn": qe.cpu_svn.hex(),
            "misc_select": _hex_bits(qe.misc_select, 4),
            "attributes": {
                "flags": _hex_bits(qe.flags, 8),
                "flag_names": bit_names(qe.flags, SGX_FLAG_NAMES),
                "xfrm": _hex_bits(qe.xfrm, 8),
            },
            "report_data": qe.report_data.hex(),
            "signature": s.qe.qe_report_signature.hex(),
            "auth_data": s.qe.qe_auth_data.hex(),
        }
        chain, ext, problems = _pck_details(q.pck_chain_pem)
        out["certification_data"]["size"] = len(s.qe.certification_data.data)
        out["pck_chain"] = chain
        out["pck_extension"] = ext
        out["fmspc"] = ext["fmspc"] if ext else None
        if problems:
            out["problems"] = problems
    return out


# -- rendering -------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) if value else "(none)"
    return str(value)


def _bits(d: dict[str, Any], value_key: str, names_key: str) -> str:
    names = d[names_key]
    return f"{d[value_key]} ({', '.join(names)})" if names else f"{d[value_key]}"


def render_quote(desc: dict[str, Any]) -> FieldList:
    """A two-column listing of :func:`describe_quote`'s object, by section."""
    table = FieldList()
    section = table.section

    def row(name: str, value: Any, style: str = "") -> None:
        table.row(name, _fmt(value), style)

    section("Input")
    row("encoding", f"{desc['encoding']}, {desc['size']} bytes")
    if "error" in desc:
        row("parse error", desc["error"], "bold red")
    if "header" in desc:
        h = desc["header"]
        section("Header")
        row("version", h["version"])
        row("TEE type", h["tee_type"])
        row("attestation key type", h["attestation_key_type"])
        row("QE SVN", h["qe_svn"])
        row("PCE SVN", h["pce_svn"])
        row("QE vendor ID", f"{h['qe_vendor_id']} ({h['qe_vendor']})")
        row("user data", h["user_data"])
        if "body_type" in h:
            row("body type", f"{h['body_type']} ({h['body_type_name']})")
    if "sgx_report" in desc:
        b = desc["sgx_report"]
        a = b["attributes"]
        section("SGX report body")
        row("CPUSVN", b["cpu_svn"])
        row("MISCSELECT", b["misc_select"])
        row("ISVEXTPRODID", b["isv_ext_prod_id"])
        row("ATTRIBUTES.FLAGS", _bits(a, "flags", "flag_names"), "bold red" if b["debug"] else "")
        row("ATTRIBUTES.XFRM", _bits(a, "xfrm", "xfrm_names"))
        row("debug", b["debug"], "bold red" if b["debug"] else "")
        row("MRENCLAVE", b["mrenclave"], "green")
        row("MRSIGNER", b["mrsigner"], "green")
        row("CONFIGID", b["config_id"])
        row("ISVPRODID", b["isv_prod_id"])
        row("ISVSVN", b["isv_svn"])
        row("CONFIGSVN", b["config_svn"])
        row("ISVFAMILYID", b["isv_family_id"])
        row("REPORTDATA", b["report_data"])
    if "td_report" in desc:
        t = desc["td_report"]
        section("TD report body")
        row("TEE_TCB_SVN", t["tee_tcb_svn"])
        row("MRSEAM", t["mrseam"])
        row("MRSIGNERSEAM", t["mrsignerseam"])
        row("SEAM_ATTRIBUTES", t["seam_attributes"])
        row("TD_ATTRIBUTES", _bits(t["td_attributes"], "value", "names"), "bold red" if t["debug"] else "")
        row("debug", t["debug"], "bold red" if t["debug"] else "")
        row("XFAM", _bits(t["xfam"], "value", "names"))
        row("MRTD", t["mrtd"], "green")
        row("MRCONFIGID", t["mrconfigid"])
        row("MROWNER", t["mrowner"])
        row("MROWNERCONFIG", t["mrownerconfig"])
        for i in range(4):
            row(f"RTMR{i}", t[f"rtmr{i}"])
        row("REPORTDATA", t["report_data"])
        if "tee_tcb_svn2" in t:
            row("TEE_TCB_SVN2", t["tee_tcb_svn2"])
            row("MRSERVICETD", t["mrservicetd"])
    if "qe_report" in desc:
        qe = desc["qe_report"]
        section("Quoting enclave report")
        row("MRENCLAVE", qe["mrenclave"])
        row("MRSIGNER", qe["mrsigner"])
        row("ISVPRODID / ISVSVN", f"{qe['isv_prod_id']} / {qe['isv_svn']}")
        row("ATTRIBUTES.FLAGS", _bits(qe["attributes"], "flags", "flag_names"))
        row("auth data", f"{len(qe['auth_data']) // 2} bytes")
        row("attestation key", desc["signature"]["attestation_key"])
    if "certification_data" in desc:
        c = desc["certification_data"]
        section("Certification data")
        size = f", {c['size']} bytes" if "size" in c else ""
        row("type", f"{c['type']} ({c['name']}{size})", "" if c["supported"] else "bold red")
    for i, cert in enumerate(desc.get("pck_chain", [])):
        label = ("PCK certificate", "PCK CA", "root CA")[i] if i < 3 else f"certificate {i}"
        row(label, f"{cert['subject']}  (valid {cert['not_before']} .. {cert['not_after']})")
    ext = desc.get("pck_extension")
    if ext:
        section("PCK certificate SGX extension")
        row("FMSPC", ext["fmspc"], "green")
        row("PCEID", ext["pceid"])
        row("PPID", ext["ppid"])
        row("SGX type", ext["sgx_type"])
        row("PCESVN", ext["pcesvn"])
        row("CPUSVN", ext["cpusvn"])
        row("TCB components", " ".join(str(c) for c in ext["tcb_components"]))
    for problem in desc.get("problems", []):
        row("problem", problem, "bold red")
    return table


# -- verification results ------------------------------------------------------------------------------


def verification_json(view: QuoteView, attested: Attestation, verifier: QuoteVerifier, ref: ReferenceValues) -> dict[str, Any]:
    """The one JSON object ``quote verify --json`` prints. Quote fields are filled whenever the quote
    (header and body) could be read, even if verification failed; verification results are null when
    verification did not get that far."""
    v = attested.verified
    sgx = view.sgx_body
    td = view.td_body
    body = view.body
    root = verifier.trust_root
    return {
        "accepted": attested.accepted,
        "reason": None if attested.accepted else one_line(attested.reason),
        "step": None if attested.step is None else str(attested.step),
        "tee": view.tee,
        "quote_version": view.version,
        "tcb_status": str(v.tcb_status) if v else None,
        "advisory_ids": list(v.advisory_ids) if v else None,
        "mrenclave": sgx.mr_enclave.hex() if sgx else None,
        "mrsigner": sgx.mr_signer.hex() if sgx else None,
        "isv_prod_id": sgx.isv_prod_id if sgx else None,
        "isv_svn": sgx.isv_svn if sgx else None,
        "mrtd": td.mr_td.hex() if td else None,
        "debug": body.debug if body is not None else None,
        "report_data": body.report_data.hex() if body is not None else None,
        "simulated": attested.simulated,
        "code_checked": not ref.accept_any_code,
        "notes": list(_notes(attested, ref)),
        "fmspc": v.fmspc.hex() if v else None,
        "collateral_expiry": iso(v.collateral_expiry) if v else None,
        "at": iso(attested.at),
        "trust_root": "Intel SGX Root CA" if is_intel_root(root) else root.subject.rfc4514_string(),
        "trust_root_sha256": attested.trust_root_sha256.hex(),
    }


def _notes(attested: Attestation, ref: ReferenceValues) -> tuple[str, ...]:
    """The appraisal's notes; when the evidence never reached appraisal, still say the code went unchecked."""
    from fedattest.policy.appraisal import CODE_NOT_CHECKED  # noqa: PLC0415 - see the imports at the top

    if attested.verdict is None and ref.accept_any_code:
        return (CODE_NOT_CHECKED,)
    return attested.notes


def verdict_line(attested: Attestation, ref: ReferenceValues) -> str:
    """``ACCEPTED`` (with notes) or ``REJECTED: <reason>``: the last line ``quote verify`` prints."""
    if attested.accepted:
        notes = _notes(attested, ref)
        return "ACCEPTED" + (f"; notes: {'; '.join(notes)}" if notes else "")
    return f"REJECTED: {one_line(attested.reason)}"


def render_verification(view: QuoteView, j: dict[str, Any]) -> FieldList:
    """A two-column listing of :func:`verification_json`'s object."""
    from fedattest.policy.appraisal import CODE_NOT_CHECKED  # noqa: PLC0415 - see the imports at the top

    table = FieldList()

    def row(name: str, value: Any, style: str = "") -> None:
        table.row(name, _fmt(value), style)

    kind = f"{view.tee or '?'} quote v{view.version if view.version is not None else '?'}"
    row("quote", f"{kind} ({view.encoding}, {len(view.raw)} bytes)")
    row("trust root", f"{j['trust_root']} (sha256 {j['trust_root_sha256'][:16]}...)")
    row("verification time", j["at"])
    if j["simulated"]:
        row("simulated", "YES: the trust root is not Intel's SGX Root CA", "bold yellow")
    if j["tcb_status"] is not None:
        status_style = "green" if j["tcb_status"] == TcbStatus.UP_TO_DATE else "yellow"
        row("DCAP verification", "passed", "green")
        row("TCB status", j["tcb_status"], status_style)
        row("advisories", j["advisory_ids"])
        row("FMSPC", j["fmspc"])
        row("collateral valid until", j["collateral_expiry"])
    else:
        row("DCAP verification", f"FAILED at {j['step']}", "bold red")
    if view.sgx_body is not None:
        row("MRENCLAVE", j["mrenclave"])
        row("MRSIGNER", j["mrsigner"])
        row("ISVPRODID / ISVSVN", f"{j['isv_prod_id']} / {j['isv_svn']}")
    if view.td_body is not None:
        row("MRTD", j["mrtd"])
    if view.body is not None:
        row("debug", j["debug"], "bold red" if j["debug"] else "")
        row("report data", j["report_data"])
    if not j["code_checked"]:
        row("code identity", "NOT CHECKED: no --expect-mrenclave, --expect-mrsigner or --expect-mrtd given", "bold yellow")
    for note in j["notes"]:
        if note != CODE_NOT_CHECKED:
            row("note", note, "yellow")
    if j["accepted"]:
        row("verdict", "ACCEPTED", "bold green")
    else:
        row("verdict", f"REJECTED at {j['step']}", "bold red")
    return table


# -- option parsing ----------------------------------------------------------------------------------------


def parse_statuses(values: list[str]) -> frozenset[TcbStatus]:
    """TCB status names, case-insensitive (``UpToDate``, ``swhardeningneeded``...)."""
    by_name = {s.value.lower(): s for s in TcbStatus}
    out: set[TcbStatus] = set()
    for value in values:
        status = by_name.get(value.strip().lower())
        if status is None:
            raise CliUsageError(f"--accept-tcb: unknown TCB status {value!r} (one of {', '.join(s.value for s in TcbStatus)})")
        if status == TcbStatus.REVOKED:
            raise CliUsageError("--accept-tcb: a Revoked TCB can never be accepted")
        out.add(status)
    return frozenset(out)


def build_reference(
    *,
    mrenclave: list[str],
    mrsigner: str | None,
    isvprodid: int | None,
    min_isvsvn: int | None,
    mrtd: list[str],
    allow_debug: bool,
    allow_simulation: bool,
    accept_tcb: list[str],
    reject_advisory: list[str],
    config_id: str | None = None,
    min_config_svn: int | None = None,
) -> ReferenceValues:
    """ReferenceValues from the ``quote verify`` options; with no ``--expect-*`` value, accept any code
    (and say so). Inconsistent options are usage errors."""
    from pydantic import ValidationError  # noqa: PLC0415 - see the imports at the top

    from fedattest.policy.appraisal import DEFAULT_ACCEPTED_TCB, ReferenceValues  # noqa: PLC0415

    enclaves = frozenset(parse_hex(v, 32, "--expect-mrenclave") for v in mrenclave)
    tds = frozenset(parse_hex(v, 48, "--expect-mrtd") for v in mrtd)
    signer = parse_hex(mrsigner, 32, "--expect-mrsigner") if mrsigner is not None else None
    if (signer is None) != (isvprodid is None):
        raise CliUsageError("--expect-mrsigner and --expect-isvprodid go together: give both or neither")
    if min_isvsvn is not None and signer is None:
        raise CliUsageError("--min-isvsvn needs --expect-mrsigner and --expect-isvprodid")
    any_code = not (enclaves or tds or signer is not None)
    try:
        return ReferenceValues(
            mrenclave=enclaves,
            mrsigner=signer,
            isv_prod_id=isvprodid,
            min_isv_svn=min_isvsvn or 0,
            mrtd=tds,
            allow_debug=allow_debug,
            allow_simulation=allow_simulation,
            accepted_tcb_statuses=parse_statuses(accept_tcb) if accept_tcb else DEFAULT_ACCEPTED_TCB,
            rejected_advisory_ids=frozenset(a.strip().upper() for a in reject_advisory),
            accept_any_code=any_code,
            config_id=padded_64(config_id, "--expect-config-id") if config_id is not None else None,
            min_config_svn=min_config_svn or 0,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CliUsageError(f"reference values: {first.get('msg', exc)}") from None


def load_verifier(root_ca: Path | None) -> QuoteVerifier:
    """A verifier for ``--root-ca`` (DER or PEM; default Intel's SGX Root CA). A bad file is a usage error."""
    from fedattest.dcap.verify import QuoteVerifier  # noqa: PLC0415 - see the imports at the top

    if root_ca is None:
        return QuoteVerifier()
    data = read_input(str(root_ca), "--root-ca file")
    try:
        return QuoteVerifier(load_trust_root(data))
    except FedattestError as exc:
        raise CliUsageError(f"--root-ca {str(root_ca)!r}: {exc}") from None


def load_collateral(path: Path) -> Collateral:
    from fedattest.dcap.collateral import Collateral  # noqa: PLC0415 - see the imports at the top

    data = read_input(str(path), "collateral file")
    try:
        return Collateral.from_json(data)
    except FedattestError as exc:
        raise CliUsageError(f"--collateral {str(path)!r}: {exc}") from None


def pccs_fetcher(url: str, cache_dir: Path | None, pccs_ca: Path | None) -> Callable[[Quote], Collateral]:
    """Collateral from a PCCS (Intel's Provisioning Certificate Caching Service API), cached on disk."""
    if not url.startswith(("https://", "http://")):
        raise CliUsageError(f"--pccs needs an http(s) URL, got {url!r}")
    try:
        from fedattest.pccs import PccsClient  # noqa: PLC0415
    except ImportError:
        raise CliUsageError("--pccs is not available: fedattest.pccs is missing from this installation") from None
    directory = cache_dir if cache_dir is not None else default_cache_dir() / "pccs"
    verify: bool | str = True
    if pccs_ca is not None:
        if not pccs_ca.is_file():
            raise CliUsageError(f"--pccs-ca {str(pccs_ca)!r}: no such file")
        verify = str(pccs_ca)
    client = PccsClient(url, cache_dir=directory, verify=verify)

    def fetch(quote: Quote) -> Collateral:
        return client.fetch_for_quote(quote)

    return fetch


# -- commands -----------------------------------------------------------------------------------------------

QuoteArg = Annotated[
    str,
    typer.Argument(
        metavar="QUOTE",
        help="Quote file: raw bytes, hex or base64 (auto-detected); '-' reads standard input.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]


@app.command(
    "show",
    short_help="Print every field of a quote (header, report body, QE report, PCK chain, FMSPC); no verification.",
    help=(
        "Print every field of a DCAP quote: header, SGX report body (CPUSVN, MISCSELECT, ATTRIBUTES with"
        " flags and XFRM decoded, MRENCLAVE, MRSIGNER, CONFIGID, ISVPRODID, ISVSVN, CONFIGSVN, ISVFAMILYID,"
        " REPORTDATA) or TD report (MRTD, RTMRs, ...), the quoting enclave's report, the certification data"
        " type, the PCK certificate chain and the FMSPC from the PCK certificate.\n\n"
        "Nothing is verified: use 'fedattest quote verify' for that. A quote whose certification data"
        " cannot be verified (e.g. an encrypted PPID) is still shown as far as it parses.\n\n"
        f"{QUOTE_INPUT_RULE}\n\n"
        "Exit codes: 0 shown, 1 the bytes are not a complete, supported quote (what parses is still shown, with"
        " one 'error: ...' line on stderr), 2 unreadable or undecodable input.\n\n"
        "Examples:\n\n"
        "  fedattest quote show quote.bin\n\n"
        "  base64 quote.bin | fedattest quote show - --json"
    ),
)
def show(quote: QuoteArg, json_out: JsonOpt = False) -> None:
    view = load_quote(quote)
    if view.header is None and view.error is not None:
        raise CliUsageError(f"not a DCAP quote: {view.error}", EXIT_REJECTED)
    desc = describe_quote(view)
    if json_out:
        print_json(desc)
    else:
        render_quote(desc).echo()
    if view.quote is None:
        # Shown as far as it goes, but say (once, on stderr) that it is not a complete, verifiable quote.
        raise CliUsageError(f"quote does not fully parse: {view.error}", EXIT_REJECTED)


@app.command(
    "verify",
    short_help="Verify a quote (DCAP) and appraise it against expected measurements; exit 0 accepted, 1 rejected.",
    help=(
        "Verify a DCAP quote and appraise it against the measurements you expect.\n\n"
        "Verification follows Intel's Quote Verification Library: PCK certificate chain to the trust root"
        " (Intel's SGX Root CA unless --root-ca is given), CRLs, TCB info and QE identity signatures and"
        " validity at --at (default: now), the quoting enclave's report and the quote signature, then the TCB"
        " status and advisories. Appraisal then checks the enclave: MRENCLAVE (--expect-mrenclave, any of"
        " several) and/or MRSIGNER + ISVPRODID + minimum ISVSVN, MRTD for TDX, debug mode, TCB status"
        " (--accept-tcb; default UpToDate and SWHardeningNeeded) and simulation. With no --expect-* value"
        " the code identity is NOT checked and the output says so.\n\n"
        "Collateral comes from a JSON file (--collateral, dcap-qvl's QuoteCollateralV3 layout) or from a PCCS"
        " (--pccs URL, cached under ~/.cache/fedattest/pccs or --cache-dir): give exactly one.\n\n"
        f"{QUOTE_INPUT_RULE}\n\n"
        "Output: a table, then one verdict line on stdout: 'ACCEPTED (notes)' or 'REJECTED: reason'. With"
        " --json, exactly one JSON object on stdout instead (also on rejection). Usage errors are one line"
        " 'error: ...' on stderr.\n\n"
        "Exit codes: 0 accepted, 1 rejected (verification or appraisal failed, or the quote does not parse),"
        " 2 usage error (bad option value, unreadable file, both or neither of --collateral/--pccs).\n\n"
        "Examples:\n\n"
        "  fedattest quote verify quote.bin --collateral collateral.json --expect-mrenclave 3b94...b7\n\n"
        "  fedattest quote verify quote.hex --pccs https://pccs.example:8081 --expect-mrsigner 83d7...e1"
        " --expect-isvprodid 1 --min-isvsvn 3 --json\n\n"
        "  fedattest quote verify sim.quote --collateral sim.collateral.json --root-ca sim/root_ca.der"
        " --allow-simulation --at 2025-06-19T12:00:00Z"
    ),
)
def verify(  # noqa: PLR0917 - typer maps parameters to options
    quote: QuoteArg,
    collateral: Annotated[
        Path | None,
        typer.Option("--collateral", metavar="FILE", help="Collateral JSON file (dcap-qvl QuoteCollateralV3 layout)."),
    ] = None,
    pccs: Annotated[
        str | None, typer.Option("--pccs", metavar="URL", help="Fetch collateral from this PCCS (e.g. https://localhost:8081).")
    ] = None,
    root_ca: Annotated[
        Path | None,
        typer.Option(
            "--root-ca", metavar="FILE", help="Trust root certificate (DER or PEM). Default: Intel's SGX Root CA (embedded)."
        ),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            metavar="TIME",
            help="Verification time: Unix seconds or ISO-8601 with timezone (2025-06-19T12:00:00Z). Default: now.",
        ),
    ] = None,
    expect_mrenclave: Annotated[
        list[str] | None,
        typer.Option("--expect-mrenclave", metavar="HEX", help="Accepted MRENCLAVE (64 hex digits); repeat to accept several."),
    ] = None,
    expect_mrsigner: Annotated[
        str | None,
        typer.Option("--expect-mrsigner", metavar="HEX", help="Accepted MRSIGNER (64 hex digits); needs --expect-isvprodid."),
    ] = None,
    expect_isvprodid: Annotated[
        int | None,
        typer.Option("--expect-isvprodid", metavar="N", min=0, max=0xFFFF, help="Accepted ISVPRODID (with --expect-mrsigner)."),
    ] = None,
    min_isvsvn: Annotated[
        int | None, typer.Option("--min-isvsvn", metavar="N", min=0, max=0xFFFF, help="Minimum ISVSVN (with --expect-mrsigner).")
    ] = None,
    expect_mrtd: Annotated[
        list[str] | None,
        typer.Option("--expect-mrtd", metavar="HEX", help="TDX: accepted MRTD (96 hex digits); repeat to accept several."),
    ] = None,
    allow_debug: Annotated[
        bool, typer.Option("--allow-debug", help="Accept debug enclaves (their memory is readable by the host).")
    ] = False,
    allow_simulation: Annotated[
        bool, typer.Option("--allow-simulation", help="Accept simulated evidence (a trust root other than Intel's).")
    ] = False,
    accept_tcb: Annotated[
        list[str] | None,
        typer.Option(
            "--accept-tcb",
            metavar="STATUS",
            help="Accepted TCB status, repeatable (replaces the default UpToDate, SWHardeningNeeded). Revoked is never accepted.",
        ),
    ] = None,
    reject_advisory: Annotated[
        list[str] | None,
        typer.Option(
            "--reject-advisory", metavar="ID", help="Reject platforms affected by this advisory (INTEL-SA-...); repeatable."
        ),
    ] = None,
    expect_config_id: Annotated[
        str | None,
        typer.Option(
            "--expect-config-id",
            metavar="HEX",
            help="SGX KSS: the CONFIGID the enclave must have been launched with (up to 128 hex digits, zero-padded).",
        ),
    ] = None,
    min_config_svn: Annotated[
        int | None, typer.Option("--min-config-svn", metavar="N", min=0, max=0xFFFF, help="SGX KSS: minimum CONFIGSVN.")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", metavar="DIR", help="PCCS collateral cache. Default: ~/.cache/fedattest/pccs.")
    ] = None,
    pccs_ca: Annotated[
        Path | None,
        typer.Option(
            "--pccs-ca",
            metavar="FILE",
            help=(
                "CA certificate(s) (PEM) to trust for the PCCS's TLS certificate, e.g. a local PCCS's self-signed"
                " certificate. Default: the system's trusted CAs. Collateral is verified up to the trust root either way."
            ),
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    # 1. Options (usage errors, exit 2) before any evidence is read.
    if (collateral is None) == (pccs is None):
        raise CliUsageError("give exactly one of --collateral FILE or --pccs URL")
    when = parse_time(at) if at is not None else datetime.now(UTC)
    ref = build_reference(
        mrenclave=expect_mrenclave or [],
        mrsigner=expect_mrsigner,
        isvprodid=expect_isvprodid,
        min_isvsvn=min_isvsvn,
        mrtd=expect_mrtd or [],
        allow_debug=allow_debug,
        allow_simulation=allow_simulation,
        accept_tcb=accept_tcb or [],
        reject_advisory=reject_advisory or [],
        config_id=expect_config_id,
        min_config_svn=min_config_svn,
    )
    verifier = load_verifier(root_ca)
    source: Collateral | Callable[[Quote], Collateral]
    if collateral is not None:
        source = load_collateral(collateral)
    else:
        assert pccs is not None
        source = pccs_fetcher(pccs, cache_dir, pccs_ca)
    view = load_quote(quote)

    # 2. Evidence: verify, appraise (rejections exit 1).
    from fedattest.attestation import attest  # noqa: PLC0415 - see the imports at the top

    evidence = view.quote if view.quote is not None else view.raw
    attested = attest(evidence, collateral=source, verifier=verifier, reference=ref, at=when)
    report = verification_json(view, attested, verifier, ref)
    if json_out:
        print_json(report)
    else:
        render_verification(view, report).echo()
        print_line(verdict_line(attested, ref))
    exit_with(EXIT_OK if attested.accepted else EXIT_REJECTED)
