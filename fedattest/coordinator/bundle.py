"""The audit bundle: one tar file with which anyone can check a federation's run offline.

Layout (deterministic: sorted names, zero mtimes, so the same state gives the same bytes)::

    MANIFEST.json                    SHA-256 and size of every other member (the first member: read first)
    audit-log.json                   the hash-chained log with the coordinator's signed head
    root_ca.pem                      the coordinator's root CA (certificates chain to it)
    policies/v<N>.toml               every policy version, as approved
    policies/v<N>.approvals.json     the approvals it was accepted with
    activations/<NNN>-<member>.json  certificate, token, verdict, quote, claims of each activation
    collateral/<sha256>.json         the collateral each quote was verified with

:func:`verify_bundle` re-does every decision the coordinator logged: the log chains to its signed head;
each policy version hashes to what the log says and has enough approvals; each activation's certificate
chains to the root, its token is signed by the log key and names that certificate, and its quote verifies
(at the activation time, with the recorded collateral, whose hash the log names, against the trust anchor
the auditor chooses), binds the claims, which bind the certificate's key and are signed by the member's
enrolment key, and matches the role's reference
values in the policy then in force; each policy change revokes exactly the live identities the new version
no longer allows (:mod:`fedattest.coordinator.revocation`, judged again from the recorded evidence: a missing
or an extra revocation is a failed check); each round is signed by an activated aggregator whose certificate
was not revoked (over the updates it refused too, when the report lists any), names only activated
collaborators whose identity was not revoked, and is reported once (run, round and signer identify a report;
a repeat is a failed check).
A bundle comes from whoever hands it to the auditor: :func:`read_bundle` bounds what it reads (the limits
below). Pure functions: the caller reads and writes files.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, cast

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedattest.attestation import REPORT_DATA, attest
from fedattest.coordinator.activation import ActivationError, check_reprovision, check_same_keys
from fedattest.coordinator.audit import AuditEntry, AuditError, import_log, parse_time, verify_log
from fedattest.coordinator.revocation import revocation_reason
from fedattest.coordinator.round_report import SIGNED_KEYS, metrics_problem, nodes_problem
from fedattest.dcap.collateral import Collateral
from fedattest.dcap.result import VerifiedQuote
from fedattest.dcap.verify import QuoteVerifier
from fedattest.errors import FedattestError
from fedattest.pki import identity as ident
from fedattest.pki.signing import UpdateRejectedError, UpdateVerifier
from fedattest.policy.approval import Approval, check_approvals
from fedattest.policy.federation import FederationPolicy, parse_policy
from fedattest.policy.ledger import Release, spent, training_round
from fedattest.shape import load_json

FORMAT = "fedattest-audit-bundle"
MANIFEST_VERSION = 2  # 2: the manifest states each member's size; 1 (hashes only) is still read

# Limits for reading a bundle, which whoever hands it to the auditor wrote. They are derived from what an
# honest bundle holds: one activation record (about 11 KB: certificate, token, quote and claims) per
# activation, one collateral document (about 20 KB) per TCB collateral set in use, two small files per policy
# version, and the log (about 1 KB per entry). 256 MiB is about 24,000 activations, far beyond a cross-silo
# federation; every member is read only if the manifest lists it and its size fits, so memory stays bounded
# by these limits whatever the tar's headers claim (sparse and link members are refused outright).
MAX_BUNDLE_BYTES = 256 << 20  # all members together, as the manifest declares them
MAX_MEMBERS = 32_768  # 24,000 activation records at the total limit, plus collateral and policies
MAX_MANIFEST_BYTES = MAX_MEMBERS * 256  # a line of name, size and SHA-256 per member
READ_CHUNK = 1 << 20  # members are read (and hashed) in chunks of this size
# The whole archive: the members, the manifest, and at most 4 KiB of tar headers and padding per member. It
# also bounds what tarfile itself reads into memory (a PAX or long-name header is read whole).
MAX_ARCHIVE_BYTES = MAX_BUNDLE_BYTES + MAX_MANIFEST_BYTES + (MAX_MEMBERS + 1) * 4096 + (1 << 20)
_LAYOUT: tuple[tuple[re.Pattern[str], int], ...] = (  # member name -> largest size accepted
    (re.compile(r"audit-log\.json"), 128 << 20),  # ~1 KB an entry: 100,000+ activations and round reports
    (re.compile(r"root_ca\.pem"), 64 << 10),  # one certificate
    (re.compile(r"policies/v[0-9]{1,9}\.toml"), 1 << 20),  # the parser's own limit (MAX_POLICY_BYTES)
    (re.compile(r"policies/v[0-9]{1,9}\.approvals\.json"), 1 << 20),  # ~500 bytes an approval
    (re.compile(r"activations/[0-9]{3,9}-[a-z0-9][a-z0-9._-]{0,62}\.json"), 1 << 20),  # ~11 KB each
    (re.compile(r"collateral/[0-9a-f]{64}\.json"), 8 << 20),  # ~20 KB; room for large CRLs
)


_SHA256 = re.compile("[0-9a-f]{64}")


def member_limit(name: str) -> int | None:
    """The largest size a member of this name may have, or None if the bundle layout has no such member."""
    return next((cap for pattern, cap in _LAYOUT if pattern.fullmatch(name)), None)


class BundleError(FedattestError):
    """The bundle is not readable as an audit bundle (as opposed to a check that fails)."""


def build_bundle(log_json: bytes, evidence: dict[str, Any]) -> bytes:
    """The tar bytes from ``GET /api/v1/audit`` and ``GET /api/v1/audit/evidence``."""
    members: dict[str, bytes] = {"audit-log.json": log_json, "root_ca.pem": str(evidence["root_ca"]).encode()}
    for p in evidence["policies"]:
        members[f"policies/v{int(p['version'])}.toml"] = str(p["document"]).encode()
        members[f"policies/v{int(p['version'])}.approvals.json"] = _dump(list(p["approvals"]))
    for i, a in enumerate(evidence["activations"], 1):
        members[f"activations/{i:03d}-{a['member']}.json"] = _dump(a)
    for sha, document in evidence["collateral"].items():
        members[f"collateral/{sha}.json"] = str(document).encode()
    manifest = {
        "format": FORMAT,
        "version": MANIFEST_VERSION,
        "files": {n: hashlib.sha256(b).hexdigest() for n, b in sorted(members.items())},
        "sizes": {n: len(b) for n, b in sorted(members.items())},
    }
    members["MANIFEST.json"] = _dump(manifest)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(members[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(members[name]))
    return out.getvalue()


def _dump(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def read_bundle(source: bytes | IO[bytes]) -> dict[str, bytes]:
    """Members of the tar (bytes, or a binary file read once from its current position), checked against
    MANIFEST.json, which must come first: only plain relative files of the bundle layout, each listed once,
    none missing, each within its size limit (and of the size the manifest states) before it is read, and
    no more than :data:`MAX_MEMBERS` and :data:`MAX_BUNDLE_BYTES` in all. Members are read in chunks and
    hashed as they are read."""
    inner = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    fileobj = cast("IO[bytes]", _Bounded(inner, MAX_ARCHIVE_BYTES))  # stream mode only calls read()
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:
            return _read_members(tar)
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"not a tar file: {exc}") from None


class _Bounded:
    """A binary reader that refuses to read past ``limit`` bytes (tarfile's stream mode only calls read)."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self.inner, self.left, self.limit = inner, limit, limit

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(self.left + 1 if size < 0 or size > self.left else size)
        self.left -= len(data)
        if self.left < 0:
            raise BundleError(f"the archive is larger than the limit of {self.limit} bytes")
        return data


def _plain(info: tarfile.TarInfo) -> None:
    name = info.name
    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or info.issparse() or name.startswith("/") or ".." in name.split("/"):
        raise BundleError(f"unexpected tar member {name!r} (only plain relative files)")


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> tuple[bytes, str]:
    """The member's bytes and their SHA-256, read in chunks (never more than ``info.size`` bytes)."""
    handle = tar.extractfile(info)
    assert handle is not None  # a regular file
    digest, chunks, left = hashlib.sha256(), [], info.size
    while left:
        chunk = handle.read(min(READ_CHUNK, left))
        if not chunk:
            raise BundleError(f"{info.name}: the archive ends inside this member")
        digest.update(chunk)
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks), digest.hexdigest()


def _manifest(tar: tarfile.TarFile) -> tuple[dict[str, str], dict[str, int] | None]:
    info = tar.next()
    if info is None:
        raise BundleError("an empty archive: no MANIFEST.json")
    _plain(info)
    if info.name != "MANIFEST.json":
        raise BundleError(f"MANIFEST.json must be the first member (found {info.name!r})")
    if info.size > MAX_MANIFEST_BYTES:
        raise BundleError(f"MANIFEST.json: {info.size} bytes, over the limit of {MAX_MANIFEST_BYTES}")
    try:
        manifest = load_json(_read_member(tar, info)[0], "MANIFEST.json")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") not in (1, 2):
            raise ValueError("format or version")
        listed, sizes = manifest["files"], manifest.get("sizes")
        if not isinstance(listed, dict) or not all(isinstance(d, str) and _SHA256.fullmatch(d) for d in listed.values()):
            raise ValueError("files must map names to SHA-256 hex digests")
        if manifest["version"] >= 2 or sizes is not None:
            if not isinstance(sizes, dict) or set(sizes) != set(listed):
                raise ValueError("sizes must state the size of every listed member")
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes.values()):
                raise ValueError("sizes must be whole numbers of bytes")
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise BundleError(f"MANIFEST.json missing or malformed ({exc})") from None
    if len(listed) > MAX_MEMBERS:
        raise BundleError(f"MANIFEST.json lists {len(listed)} members, over the limit of {MAX_MEMBERS}")
    for name in listed:
        if name == "MANIFEST.json" or member_limit(name) is None:
            raise BundleError(f"MANIFEST.json lists {name!r}, which is not a member of the bundle layout")
        if sizes is not None and sizes[name] > (member_limit(name) or 0):
            raise BundleError(f"{name}: {sizes[name]} bytes, over the limit of {member_limit(name)} for this member")
    if sizes is not None and sum(sizes.values()) > MAX_BUNDLE_BYTES:
        raise BundleError(f"MANIFEST.json declares {sum(sizes.values())} bytes in all, over the limit of {MAX_BUNDLE_BYTES}")
    return dict(listed), sizes


def _read_members(tar: tarfile.TarFile) -> dict[str, bytes]:
    listed, sizes = _manifest(tar)
    files: dict[str, bytes] = {}
    total = 0
    while (info := tar.next()) is not None:
        _plain(info)
        name = info.name
        if name not in listed or name in files:
            problem = "is repeated" if name in files else "is not listed"
            raise BundleError(f"members differ from the manifest: {name!r} {problem}")
        limit = member_limit(name) or 0
        if info.size > limit:
            raise BundleError(f"{name}: {info.size} bytes, over the limit of {limit} for this member")
        if sizes is not None and info.size != sizes[name]:
            raise BundleError(f"{name}: the tar header says {info.size} bytes, the manifest {sizes[name]}")
        total += info.size
        if total > MAX_BUNDLE_BYTES:
            raise BundleError(f"the members add up to more than the limit of {MAX_BUNDLE_BYTES} bytes")
        data, digest = _read_member(tar, info)
        if digest != listed[name]:
            raise BundleError(f"{name}: content does not match the manifest")
        files[name] = data
    if missing := sorted(set(listed) - set(files)):
        raise BundleError(f"members differ from the manifest: missing {missing}")
    return files


@dataclass
class Check:
    subject: str
    ok: bool
    detail: str


@dataclass
class BundleReport:
    checks: list[Check] = field(default_factory=list)
    activations: list[dict[str, Any]] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, subject: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(subject, ok, detail))
        return ok


def verify_bundle(
    data: bytes | IO[bytes],
    *,
    verifier_for: Callable[[bool], QuoteVerifier],
    audit_key: ec.EllipticCurvePublicKey | None = None,
) -> BundleReport:
    """Check everything in the bundle (see the module docstring). ``verifier_for(simulated)`` gives the quote
    verifier for real or simulated evidence: the auditor picks the trust anchor, never the bundle.
    ``audit_key`` pins the coordinator's log key; without it the key inside the log is used."""
    report = BundleReport()
    files = read_bundle(data)
    try:
        log_bytes = files["audit-log.json"]
        root = x509.load_pem_x509_certificate(files["root_ca.pem"])
    except (KeyError, ValueError) as exc:
        raise BundleError(f"audit-log.json or root_ca.pem missing or malformed: {exc}") from None
    try:
        entries, head, embedded = import_log(log_bytes)
        key = audit_key or embedded
        count = verify_log(entries, head, key)
        report.add("audit log", True, f"{count} entries chain to the signed head" + ("" if audit_key else " (key from the log)"))
    except AuditError as exc:
        report.add("audit log", False, str(exc))
        return report

    policies = _check_policies(report, files, entries)
    records = {}
    for name, blob in files.items():
        if name.startswith("activations/"):
            try:
                record = load_json(blob, name)
                records[str(record["fingerprint"])] = record
            except (KeyError, TypeError, ValueError) as exc:
                report.add(name, False, f"unreadable activation record: {exc}")
    collateral = {n.removeprefix("collateral/").removesuffix(".json"): b for n, b in files.items() if n.startswith("collateral/")}
    evidence = _Evidence(records, collateral, root, key, verifier_for)
    in_force: FederationPolicy | None = None
    activated: dict[str, tuple[str, str]] = {}  # member -> (role, certificate sha256)
    reported: dict[tuple[str, str, str], int] = {}  # (run, round, signer) -> seq of the first report
    revocations = _Revocations()
    ledger = _Ledger()
    for entry in entries:
        try:
            if entry.kind != "revocation":
                revocations.settle(report)
            if entry.kind == "revocation":
                revocations.record(report, entry, evidence, activated)
            elif entry.kind == "policy":
                in_force = policies.get(str(entry.data.get("policy_hash")))
                revocations.expect(entry, in_force, evidence)
            elif entry.kind == "activation":
                ok = _check_activation(report, entry, in_force, evidence)
                if ok:
                    activated[str(entry.data["member"])] = (str(entry.data["role"]), str(entry.data["cert_sha256"]))
            elif entry.kind == "reservation":
                ledger.check(report, entry, in_force, evidence, activated)
            elif entry.kind == "round":
                d = entry.data
                ident_ = (str(d.get("run_id")), str(d.get("round")), str(d.get("reported_by")))
                if ident_ in reported:
                    report.add(
                        f"round #{entry.seq} run {ident_[0]} round {ident_[1]}", False,
                        f"a replay: {ident_[2]} already reported run {ident_[0]} round {ident_[1]} (entry #{reported[ident_]})",
                    )  # fmt: skip
                    continue
                reported[ident_] = entry.seq
                if str(entry.data.get("certificate_sha256")) in revocations.revoked:
                    report.add(f"round #{entry.seq} run {ident_[0]} round {ident_[1]}", False,
                               "reported with a certificate the coordinator had revoked")  # fmt: skip
                    continue
                _check_round(report, entry, in_force, evidence, activated)
                ledger.released(report, entry, in_force)
            elif entry.kind == "reprovision":
                _check_reprovision(report, entry, in_force, evidence)
            elif entry.kind == "store-accepted":  # the operator's recorded override: shown, not a failure
                reason = _printable(entry.data.get("reason"))
                report.add(f"store-accepted #{entry.seq}", True, f"the coordinator ran on its store as it was: {reason}")
            else:
                report.add(f"{entry.kind} #{entry.seq}", False, "an entry of a kind this verifier does not know")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            report.add(f"{entry.kind} #{entry.seq}", False, f"malformed log entry or evidence: {exc!r}")
    revocations.settle(report)
    return report


def _check_policies(report: BundleReport, files: dict[str, bytes], entries: list[AuditEntry]) -> dict[str, FederationPolicy]:
    found: dict[str, FederationPolicy] = {}
    for entry in (e for e in entries if e.kind == "policy"):
        version, digest = int(entry.data["version"]), str(entry.data["policy_hash"])
        subject = f"policy v{version}"
        try:
            policy = parse_policy(files[f"policies/v{version}.toml"].decode())
            approvals = [Approval.from_json(a) for a in load_json(files[f"policies/v{version}.approvals.json"], "approvals")]
        except (KeyError, ValueError, TypeError, FedattestError) as exc:
            report.add(subject, False, f"missing or unreadable: {exc}")
            continue
        if policy.policy_hash().hex() != digest:
            report.add(subject, False, "the document does not hash to the logged policy hash")
            continue
        check = check_approvals(policy, approvals)
        if report.add(subject, check.enough, f"hash {digest[:16]}..., approved by {', '.join(check.valid) or 'nobody'}"):
            found[digest] = policy
    return found


@dataclass(frozen=True)
class _Evidence:
    """What the log entries are checked against."""

    records: dict[str, dict[str, Any]]  # activation records by certificate SHA-256
    collateral: dict[str, bytes]  # collateral documents by their SHA-256
    root: x509.Certificate
    key: ec.EllipticCurvePublicKey
    verifier_for: Callable[[bool], QuoteVerifier]
    # Identities not revoked yet, by certificate SHA-256: what a later policy version is judged against.
    live: dict[str, _Live] = field(default_factory=dict)


@dataclass(frozen=True)
class _Live:
    member: str
    role: str
    then: FederationPolicy
    verified: VerifiedQuote | None  # None: activated with attestation off
    not_after: datetime


class _Revocations:
    """The revocations a policy change must bring: the ones the log shows must be exactly these (see
    :mod:`fedattest.coordinator.revocation`), in the entries right after the policy's."""

    def __init__(self) -> None:
        self.expected: dict[str, tuple[str, str]] = {}  # certificate -> (member, reason)
        self.subject = ""
        self.revoked: set[str] = set()

    def expect(self, entry: AuditEntry, new: FederationPolicy | None, ev: _Evidence) -> None:
        if new is None:
            return
        when = parse_time(entry.time)
        self.subject = f"policy #{entry.seq} v{entry.data.get('version')}"
        for cert, live in ev.live.items():
            if live.not_after > when:
                judged = revocation_reason(live.member, live.role, live.verified, live.then, new)
                if judged is not None:
                    self.expected[cert] = (live.member, judged[0])

    def record(self, report: BundleReport, entry: AuditEntry, ev: _Evidence, activated: dict[str, tuple[str, str]]) -> None:
        d = entry.data
        cert, member = str(d.get("cert_sha256")), str(d.get("member"))
        subject = f"revocation #{entry.seq} {member}"
        live = ev.live.pop(cert, None)
        self.revoked.add(cert)
        if activated.get(member, ("", ""))[1] == cert:
            del activated[member]
        if live is None or live.member != member:
            report.add(subject, False, "revokes a certificate that was not a live identity of this member")
        elif self.expected.pop(cert, None) is None:
            report.add(subject, False, f"the policy in force allows this identity; revoked anyway ({d.get('reason')})")
        else:
            report.add(subject, True, f"revoked: {d.get('reason')}")

    def settle(self, report: BundleReport) -> None:
        """After a policy's revocations: every identity it no longer allows must have been revoked."""
        for member, reason in self.expected.values():
            report.add(self.subject, False, f"no longer allows {member}'s identity ({reason}), but the log has no revocation")
        self.expected = {}


def _check_activation(report: BundleReport, entry: AuditEntry, policy: FederationPolicy | None, ev: _Evidence) -> bool:
    records, collateral, root, key, verifier_for = ev.records, ev.collateral, ev.root, ev.key, ev.verifier_for
    d = entry.data
    subject = f"activation #{entry.seq} {d.get('member')} ({d.get('role')})"
    record = records.get(str(d.get("cert_sha256")))
    if record is None:
        return report.add(subject, False, "no activation record for its certificate in the bundle")
    if policy is None:
        return report.add(subject, False, "no approved policy was in force")
    try:
        cert = x509.load_pem_x509_certificate(str(record["certificate"]).encode())
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        return report.add(subject, False, "its certificate was not issued by the coordinator's root")
    if hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest() != d["cert_sha256"]:
        return report.add(subject, False, "the certificate is not the one the log names")
    try:
        token = jwt.decode(str(record["token"]), key, algorithms=["ES256"], options={"verify_exp": False})
    except jwt.PyJWTError as exc:
        return report.add(subject, False, f"its token does not verify with the log key: {exc}")
    if token.get("cert_sha256") != d["cert_sha256"] or token.get("sub") != d["member"] or token.get("role") != d["role"]:
        return report.add(subject, False, "its token names another certificate, member or role")
    role = policy.roles.get(d["role"])
    member = policy.member(str(d["member"]))
    if role is None or member is None or member.role != d["role"]:
        return report.add(subject, False, "the member or role is not in the policy then in force")
    claimed = record["verdict"].get("claims") if isinstance(record.get("verdict"), dict) else None
    if not (
        isinstance(claimed, dict)
        and claimed.get("member") == d["member"]
        and ident.enrolment_signed_by(
            member.enrolment_key, claimed, str(record["verdict"].get("enrolment") or ""), entry.version
        )
    ):
        return report.add(
            subject, False, "not authorised by the member: no enrolment signature over its claims by the member's key"
        )
    summary = {"member": d["member"], "role": d["role"], "attestation": d.get("attestation"), "time": entry.time}
    if d.get("attestation") == "off":
        ok = not role.attestation_required
        if ok:
            ev.live[str(d["cert_sha256"])] = _Live(str(d["member"]), str(d["role"]), policy, None, cert.not_valid_after_utc)
        report.activations.append(summary)
        return report.add(
            subject, ok, "attestation off, as the policy allows" if ok else "attestation off, but the policy requires it"
        )
    verdict = record["verdict"]
    try:
        raw = base64.b64decode(str(verdict["quote_b64"]), validate=True)
        claims = dict(verdict["claims"])
        collateral_doc = collateral[str(d["collateral_sha256"])]
        if hashlib.sha256(collateral_doc).hexdigest() != d["collateral_sha256"]:
            return report.add(
                subject,
                False,
                f"the collateral in the bundle is not the one the log names (SHA-256 {str(d['collateral_sha256'])[:16]}...)",
            )
        bundle_collateral = Collateral.from_json(collateral_doc)
    except (KeyError, ValueError, TypeError, FedattestError) as exc:
        return report.add(subject, False, f"quote, claims or collateral missing from the bundle ({exc})")
    if hashlib.sha256(raw).hexdigest() != d.get("quote_sha256"):
        return report.add(subject, False, "the quote is not the one the log names")
    reference = policy.reference_for(member)  # the role's, with the member's CONFIGID when the role binds it
    assert reference is not None
    try:  # the auditor's trust anchor for this kind of evidence (none for simulated evidence without --platform)
        verifier = verifier_for(bool(d.get("simulated")))
    except FedattestError as exc:
        return report.add(subject, False, f"the quote does not verify: {exc}")
    outcome = attest(raw, collateral=bundle_collateral, verifier=verifier, reference=reference,
                     expected_report_data=ident.claims_report_data(claims, entry.version), at=parse_time(entry.time))  # fmt: skip
    if outcome.evidence_failed:
        return report.add(subject, False, f"the quote does not verify: {outcome.reason}")
    if outcome.step == REPORT_DATA:
        return report.add(subject, False, "the quote does not bind the recorded claims")
    verified = outcome.verified
    assert verified is not None
    spki = ident.spki_sha256(cert.public_key())  # type: ignore[arg-type]
    if claims.get("member") != d["member"] or dict(claims.get("keys", {})).get("tls") != spki:
        return report.add(subject, False, "the claims do not bind this member and its certificate key")
    if claims.get("policy_hash") != policy.policy_hash().hex():
        return report.add(subject, False, "the claims name another policy version")
    summary.update({"mrenclave": d.get("mrenclave"), "tcb_status": verified.tcb_status.value, "simulated": verified.simulated,
                    "data_commitment": member.data_commitment.hex() if member.data_commitment else None})  # fmt: skip
    report.activations.append(summary)
    if outcome.accepted:
        ev.live[str(d["cert_sha256"])] = _Live(str(d["member"]), str(d["role"]), policy, verified, cert.not_valid_after_utc)
    detail = (f"quote verifies ({verified.tcb_status.value}{', simulated' if verified.simulated else ''}), binds the"
              f" certificate key, matches the role" if outcome.accepted else "; ".join(outcome.reasons))  # fmt: skip
    return report.add(subject, outcome.accepted, detail)


def _check_reprovision(report: BundleReport, entry: AuditEntry, policy: FederationPolicy | None, ev: _Evidence) -> bool:
    """A live identity provisioned under a new policy version without a new activation: its certificate is one
    the root issued and the coordinator has not revoked, the policy in force is the one named, the claims bind
    the certificate key and were signed with it, and (attested roles) the same enclave re-attested against the
    policy's reference values. The identity is judged against this policy from then on."""
    d = entry.data
    cert_sha256 = str(d.get("cert_sha256"))
    subject = f"reprovision #{entry.seq} {d.get('member')} ({d.get('role')})"
    record = ev.records.get(cert_sha256)
    live = ev.live.get(cert_sha256)
    if record is None or live is None:
        return report.add(subject, False, "not a live identity: no verified activation of its certificate, or revoked")
    if policy is None or policy.policy_hash().hex() != d.get("policy_hash"):
        return report.add(subject, False, "the policy it names is not the one in force")
    claims = dict(d["claims"])
    try:  # the checks the coordinator made of the request, by the same code
        checked = check_reprovision(policy, str(d.get("member")), str(record["certificate"]), claims, str(d.get("signature")),
                                    ev.root)  # fmt: skip
        check_same_keys(claims, dict(record["verdict"].get("public_keys") or {}))
    except ActivationError as exc:
        return report.add(subject, False, f"the request does not check: {exc}")
    member, cert = checked.member, checked.certificate
    if member.role != d.get("role") or live.member != member.name or live.role != member.role:
        return report.add(subject, False, "the member or role is not the activation's")
    at = parse_time(entry.time)
    if cert.not_valid_after_utc <= at:
        return report.add(subject, False, "its certificate had expired")
    verified: VerifiedQuote | None = None
    if d.get("attestation") == "verified":
        reference = policy.reference_for(member)
        if reference is None:
            return report.add(subject, False, "re-attested, but the role has no reference values")
        try:
            verifier = ev.verifier_for(bool(d.get("simulated")))
            collateral = Collateral.from_json(ev.collateral[str(d["collateral_sha256"])])
        except (KeyError, FedattestError) as exc:
            return report.add(subject, False, f"the quote cannot be checked: {exc}")
        try:
            raw = base64.b64decode(str(d["quote_b64"]), validate=True)
        except ValueError:
            return report.add(subject, False, "its quote is not base64")
        outcome = attest(raw, collateral=collateral, verifier=verifier, reference=reference,
                         expected_report_data=ident.claims_report_data(claims, entry.version), at=at)  # fmt: skip
        if not outcome.accepted or outcome.verified is None:
            return report.add(subject, False, f"the quote does not verify: {outcome.reason}")
        verified = outcome.verified
        if live.verified is None or verified.enclave_identity() != live.verified.enclave_identity():
            return report.add(subject, False, "another enclave than the one activated (its identity differs)")
    elif policy.roles[member.role].attestation_required:
        return report.add(subject, False, "re-provisioned without attestation, but the role requires it")
    # Judged from now on against this policy, with the activation's evidence (as the coordinator judges it).
    ev.live[cert_sha256] = _Live(member.name, member.role, policy, live.verified, live.not_after)
    how = "the same enclave, re-attested" if verified is not None else "attestation off, as the role allows"
    return report.add(subject, True, f"{how}; provisioned under policy {policy.policy_hash().hex()[:16]}...")


def _printable(text: object) -> str:
    """``text`` with control characters escaped: a refusal's reason may quote what a member sent, and the
    detail is printed to the auditor's terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class _Ledger:
    """The privacy ledger, recomputed from the log: each reservation is the policy's cost of a round, asked for by
    the attested aggregator (its signature checked), its ε recomputed with the same accountant over every release
    before it and within the budget; each round released under a budget has its reservation before it."""

    def __init__(self) -> None:
        self.releases: list[Release] = []
        self.reserved: dict[tuple[str, int], int] = {}  # (run, round) -> seq of its reservation

    def check(
        self, report: BundleReport, entry: AuditEntry, policy: FederationPolicy | None, ev: _Evidence,
        activated: dict[str, tuple[str, str]],
    ) -> None:  # fmt: skip
        d = entry.data
        key = (str(d["run_id"]), int(d["round"]))
        subject = f"reservation #{entry.seq} run {key[0]} round {key[1]}"
        by = str(d["reserved_by"])
        record = ev.records.get(str(d["certificate_sha256"]))
        if policy is None or policy.privacy is None:
            report.add(subject, False, "a reservation under a policy that sets no privacy budget")
            return
        if activated.get(by, ("", ""))[0] != "aggregator" or record is None:
            report.add(subject, False, f"reserved by {by!r}, which is not an aggregator with a verified activation")
            return
        try:
            member = UpdateVerifier(ev.root, policy.name).verify(
                str(record["certificate"]).encode(), base64.b64decode(str(d["signature"])), int(d["run_id"]),
                f"reserve-{key[1]}", ident.canonical_claims({"run_id": key[0], "round": key[1]}, entry.version),
                at=parse_time(entry.time),
            )  # fmt: skip
        except (UpdateRejectedError, KeyError, ValueError) as exc:
            report.add(subject, False, f"the reservation's signature does not verify: {exc}")
            return
        if member != by:
            report.add(subject, False, f"signed by {member}, recorded as reserved by {by}")
            return
        if key in self.reserved:
            report.add(subject, False, f"reserved twice (first in entry #{self.reserved[key]})")
            return
        budget = policy.privacy
        expected = training_round(policy.dp, sum(1 for m in policy.members if m.role == "collaborator"))
        release = Release.from_json(d["release"])
        if release != expected or d["budget"] != budget.model_dump():
            report.add(subject, False, f"records the release {release.to_json()} under budget {d['budget']}; the policy in"
                                       f" force says {expected.to_json()} under {budget.model_dump()}")  # fmt: skip
            return
        after = spent([*self.releases, release], budget.delta)
        recorded = float(d["epsilon_after"])
        self.releases.append(release)
        self.reserved[key] = entry.seq
        if not math.isclose(after, recorded, rel_tol=1e-9, abs_tol=1e-12):
            report.add(subject, False, f"records ε {recorded:.6g} spent; recomputed from the log: {after:.6g}")
        elif after > budget.epsilon:
            report.add(subject, False, f"overspends the budget: ε {after:.6g} of {budget.epsilon:g} at δ {budget.delta:g}")
        else:
            report.add(subject, True, f"ε {after:.4g} of {budget.epsilon:g} spent at δ {budget.delta:g} after"
                                      f" {len(self.releases)} releases (recomputed)")  # fmt: skip

    def released(self, report: BundleReport, entry: AuditEntry, policy: FederationPolicy | None) -> None:
        """A round report: under a privacy budget, it needs its reservation earlier in the log."""
        d = entry.data
        if policy is not None and policy.privacy is not None and (str(d["run_id"]), int(d["round"])) not in self.reserved:
            report.add(f"round #{entry.seq} run {d['run_id']} round {d['round']}", False,
                       "released without a privacy budget reservation")  # fmt: skip


def _check_round(
    report: BundleReport, entry: AuditEntry, policy: FederationPolicy | None, ev: _Evidence, activated: dict[str, tuple[str, str]]
) -> None:
    records, root = ev.records, ev.root

    d = entry.data
    subject = f"round #{entry.seq} run {d.get('run_id')} round {d.get('round')}"
    by = str(d.get("reported_by"))
    if activated.get(by, ("", ""))[0] != "aggregator":
        report.add(subject, False, f"reported by {by!r}, which is not an aggregator with a verified activation")
        return
    record = records.get(str(d.get("certificate_sha256")))
    if record is None or policy is None:
        report.add(subject, False, "the reporter's certificate is not in the bundle")
        return
    # The signed report: the four keys, and each optional key the aggregator sent (refusals, DP, metrics, node ids;
    # a report without them, as older aggregators send, is signed over exactly the four keys).
    body = {k: d[k] for k in SIGNED_KEYS if k in d}
    try:
        member = UpdateVerifier(root, policy.name).verify(
            str(record["certificate"]).encode(), base64.b64decode(str(d["signature"])), int(d["run_id"]),
            f"round-{int(d['round'])}", ident.canonical_claims(body, entry.version), at=parse_time(entry.time),
        )  # fmt: skip
    except (UpdateRejectedError, KeyError, ValueError) as exc:
        report.add(subject, False, f"the report's signature does not verify: {exc}")
        return
    # What the coordinator checked of the optional fields, checked again (a signed report may still be malformed).
    problem = metrics_problem(d["metrics"]) if "metrics" in d else None
    problem = problem or (nodes_problem(d["nodes"], d["participants"]) if "nodes" in d else None)
    if problem is not None:
        report.add(subject, False, f"signed by {member}, but {problem}")
        return
    strangers = [m for m in d["participants"] if activated.get(m, ("", ""))[0] != "collaborator"]
    report.rounds.append(body)
    refused = list(d.get("refused", []))
    shown = "; ".join(f"{_printable(r['member'])}: {_printable(r['reason'])}" for r in refused[:5])
    shown += "; ..." if len(refused) > 5 else ""
    report.add(
        subject,
        member == by and not strangers,
        f"signed by {member}; {len(d['participants'])} attested participants; model {str(d['params_sha256'])[:16]}..."
        + (f"; DP noise {d['dp']['noise_multiplier']}, clip {d['dp']['clipping_norm']}" if "dp" in d else "; DP not reported")
        + (f"; {len(refused)} refused updates ({shown})" if refused else "")
        if not strangers
        else f"names members that were not activated (and not revoked) collaborators: {strangers}",
    )
