"""The audit bundle: exported from a real coordinator over TLS, verified offline, and a negative test for
every check the offline verifier makes (each one on a bundle re-packed with a consistent manifest, as a
dishonest exporter would)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedattest.coordinator.audit import AuditEntry, export_log, import_log, next_entry, sign_head
from fedattest.coordinator.bundle import BundleError, read_bundle, verify_bundle
from fedattest.dcap.verify import QuoteVerifier
from fedattest.flower.rounds import report_round
from fedattest.participant import activate
from fedattest.tee import SimulatedPlatform
from tests.coordinator_harness import AGG, COLLAB, COORD, ENROL, Running, start, stop, tee

# The updates the aggregator refused in round 2: "node N" when no signature verified (not a policy member).
REFUSED = [("node 12", "the reply is not signed"), ("hospital-b", "arrays['0'] has 1 NaN and 0 infinite values")]


@dataclass
class Exported:
    running: Running
    tmp: Path
    bundle: bytes

    def verifier_for(self, _simulated: bool) -> QuoteVerifier:
        return QuoteVerifier(self.running.platform.root_ca)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedattest", *args], capture_output=True, text=True, timeout=120, check=False)


def _two_members(tmp: Path) -> Running:
    """A coordinator with the aggregator (identity in ``tmp/agg``) and hospital-a (``tmp/a``) activated."""
    running = start(tmp, SimulatedPlatform.create(tmp / "platform"))
    activate(running.url, running.root_pem, "aggregator", tee(running, AGG), tmp / "agg", enrolment_key=ENROL["aggregator"])
    activate(running.url, running.root_pem, "hospital-a", tee(running, COLLAB), tmp / "a", enrolment_key=ENROL["hospital-a"])
    return running


def _exported(running: Running, tmp: Path) -> Exported:
    done = cli("audit", "export", "--coordinator", running.url, "--root-ca", str(running.state / "root_ca.pem"),
               "-o", str(tmp / "bundle.tar"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    return Exported(running, tmp, (tmp / "bundle.tar").read_bytes())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    tmp = tmp_path_factory.mktemp("bundle")
    running = _two_members(tmp)
    try:
        report_round(running.url, running.root_pem, tmp / "agg", 7, 1, ["hospital-a"], "cd" * 32)
        report_round(running.url, running.root_pem, tmp / "agg", 7, 2, ["hospital-a"], "ef" * 32, REFUSED)
        yield _exported(running, tmp)
    finally:
        stop(running)


def test_export_and_offline_verify(exported: Exported) -> None:
    key = str(exported.running.state / "audit-key.pub.pem")
    platform = str(exported.running.platform.directory)
    done = cli("audit", "verify", str(exported.tmp / "bundle.tar"), "--key", key, "--platform", platform, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] and doc["key_pinned"]
    assert [(a["member"], a["role"], a["attestation"], a["simulated"]) for a in doc["activations"]] == [
        ("aggregator", "aggregator", "verified", True),
        ("hospital-a", "collaborator", "verified", True),
    ]
    assert doc["activations"][0]["mrenclave"] == AGG.hex() and doc["activations"][1]["data_commitment"] == "ab" * 32
    assert [(r["run_id"], r["round"], r["participants"]) for r in doc["rounds"]] == [
        ("7", 1, ["hospital-a"]),
        ("7", 2, ["hospital-a"]),
    ]
    text = cli("audit", "verify", str(exported.tmp / "bundle.tar"), "--key", key, "--platform", platform)
    assert text.returncode == 0 and "OK: 6 of 6 checks pass; 2 activations, 2 rounds" in text.stdout


def test_the_auditor_chooses_the_trust_anchor(exported: Exported) -> None:
    # Without --platform, simulated evidence is not accepted (the bundle cannot vouch for its own root).
    done = cli("audit", "verify", str(exported.tmp / "bundle.tar"))
    assert done.returncode == 1
    assert "FAIL activation #1 aggregator (aggregator): the quote does not verify: simulated evidence" in done.stdout
    assert "note: verified with the key inside the log" in done.stdout
    # Another simulated platform's root does not verify these quotes either.
    other = SimulatedPlatform.create(exported.tmp / "other-platform")
    report = verify_bundle(exported.bundle, verifier_for=lambda _s: QuoteVerifier(other.root_ca))
    assert not report.ok and all("does not verify" in c.detail for c in report.checks if c.subject.startswith("activation"))


def test_a_pinned_key_that_is_not_the_coordinators(exported: Exported) -> None:
    from fedattest.pki import identity as ident

    report = verify_bundle(exported.bundle, verifier_for=exported.verifier_for, audit_key=ident.new_key().public_key())
    assert not report.ok and report.checks[0].subject == "audit log" and not report.checks[0].ok


def repack(files: dict[str, bytes]) -> bytes:
    """A bundle with a manifest that matches its (changed) members: what a dishonest exporter produces."""
    manifest = {"format": "fedattest-audit-bundle", "version": 1,
                "files": {n: hashlib.sha256(b).hexdigest() for n, b in sorted(files.items())}}  # fmt: skip
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in sorted({**files, "MANIFEST.json": json.dumps(manifest).encode()}.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def records(files: dict[str, bytes]) -> dict[str, str]:
    """Activation record member name by member: {"aggregator": "activations/001-aggregator.json", ...}."""
    return {json.loads(files[n])["member"]: n for n in files if n.startswith("activations/")}


def edit_record(files: dict[str, bytes], member: str, change: Callable[[dict[str, object]], None]) -> None:
    name = records(files)[member]
    record = json.loads(files[name])
    change(record)
    files[name] = json.dumps(record).encode()


def _flip_quote(record: dict[str, object]) -> None:
    verdict = record["verdict"]
    assert isinstance(verdict, dict)
    raw = bytearray(base64.b64decode(verdict["quote_b64"]))
    raw[100] ^= 1
    verdict["quote_b64"] = base64.b64encode(bytes(raw)).decode()


def _claims_nonce(record: dict[str, object], *, resign: bool) -> None:
    """Claims changed after the quote; re-signed with the member's key (which a forger does not have) when
    ``resign``, so that the quote's binding is what is tested."""
    from fedattest.pki import identity as ident

    verdict = record["verdict"]
    assert isinstance(verdict, dict)
    verdict["claims"]["nonce"] = "00" * 32
    if resign:
        verdict["enrolment"] = ident.sign_enrolment(ENROL["aggregator"], verdict["claims"])


def _no_enrolment(record: dict[str, object]) -> None:
    verdict = record["verdict"]
    assert isinstance(verdict, dict)
    verdict["enrolment"] = None


def _tamper(case: str, files: dict[str, bytes]) -> None:
    name = records(files)
    if case == "log entry changed":
        files["audit-log.json"] = files["audit-log.json"].replace(b'"round": 2', b'"round": 3')
    elif case == "policy document changed":
        # A comment would not matter (the hash is over the canonical policy); a setting does.
        files["policies/v1.toml"] = files["policies/v1.toml"].replace(b"noise_multiplier = 1.0", b"noise_multiplier = 0.1")
    elif case == "approvals removed":
        files["policies/v1.approvals.json"] = b"[]"
    elif case == "certificate swapped":
        agg, hosp = json.loads(files[name["aggregator"]]), json.loads(files[name["hospital-a"]])
        agg["certificate"] = hosp["certificate"]
        files[name["aggregator"]] = json.dumps(agg).encode()
    elif case == "token of another member":
        agg, hosp = json.loads(files[name["aggregator"]]), json.loads(files[name["hospital-a"]])
        agg["token"] = hosp["token"]
        files[name["aggregator"]] = json.dumps(agg).encode()
    elif case == "quote changed":
        edit_record(files, "aggregator", _flip_quote)
    elif case == "claims changed":
        edit_record(files, "aggregator", lambda r: _claims_nonce(r, resign=True))
    elif case == "claims changed without the member's key":
        edit_record(files, "aggregator", lambda r: _claims_nonce(r, resign=False))
    elif case == "enrolment signature removed":
        edit_record(files, "hospital-a", _no_enrolment)
    elif case == "collateral missing":
        for n in [n for n in files if n.startswith("collateral/")]:
            del files[n]
    elif case == "activation record missing":
        del files[name["aggregator"]]
    elif case == "root CA replaced":
        from cryptography.hazmat.primitives import serialization

        from fedattest.pki import identity as ident

        other = ident.make_root_ca(ident.new_key(), "hospitals", ident.utcnow())
        files["root_ca.pem"] = other.public_bytes(serialization.Encoding.PEM)


CASES = {
    "log entry changed": ("audit log", "entry 4: stated hash does not match its content"),
    "policy document changed": ("policy v1", "does not hash to the logged policy hash"),
    "approvals removed": ("policy v1", "approved by nobody"),
    "certificate swapped": ("activation #1 aggregator (aggregator)", "not the one the log names"),
    "token of another member": ("activation #1 aggregator (aggregator)", "token names another certificate"),
    "quote changed": ("activation #1 aggregator (aggregator)", "quote is not the one the log names"),
    "claims changed": ("activation #1 aggregator (aggregator)", "does not bind the recorded claims"),
    "claims changed without the member's key": ("activation #1 aggregator (aggregator)", "not authorised by the member"),
    "enrolment signature removed": ("activation #2 hospital-a (collaborator)", "not authorised by the member"),
    "collateral missing": ("activation #2 hospital-a (collaborator)", "missing from the bundle"),
    "activation record missing": ("round #3 run 7 round 1", "not an aggregator with a verified activation"),
    "root CA replaced": ("activation #1 aggregator (aggregator)", "not issued by the coordinator's root"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_check_refuses_a_tampered_bundle(exported: Exported, case: str) -> None:
    files = read_bundle(exported.bundle)
    assert verify_bundle(repack(dict(files)), verifier_for=exported.verifier_for).ok  # the re-packing alone is fine
    _tamper(case, files)
    report = verify_bundle(repack(files), verifier_for=exported.verifier_for)
    subject, reason = CASES[case]
    failed = {c.subject: c.detail for c in report.checks if not c.ok}
    assert not report.ok
    assert subject in failed, failed
    assert reason in failed[subject], failed[subject]


def test_unreadable_bundles_are_refused_with_the_reason(exported: Exported) -> None:
    files = read_bundle(exported.bundle)
    changed = bytearray(exported.bundle)
    start_of = exported.bundle.index(b'"format": "fedattest-audit-log"')
    changed[start_of + 2] ^= 0x20
    with pytest.raises(BundleError, match="does not match the manifest"):
        read_bundle(bytes(changed))
    with pytest.raises(BundleError, match="differ from the manifest"):
        out = io.BytesIO()
        with tarfile.open(fileobj=io.BytesIO(exported.bundle)) as src, tarfile.open(fileobj=out, mode="w") as dst:
            for info in src:
                handle = src.extractfile(info)
                assert handle is not None
                dst.addfile(info, handle)
            extra = tarfile.TarInfo("extra.txt")
            extra.size = 1
            dst.addfile(extra, io.BytesIO(b"x"))
        read_bundle(out.getvalue())
    with pytest.raises(BundleError, match="only plain relative files"):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as dst:
            info = tarfile.TarInfo("../escape")
            info.size = 1
            dst.addfile(info, io.BytesIO(b"x"))
        read_bundle(out.getvalue())
    with pytest.raises(BundleError, match="not a tar file"):
        read_bundle(b"not a tar")
    assert set(files) >= {"audit-log.json", "root_ca.pem", "policies/v1.toml", "policies/v1.approvals.json"}
    done = cli("audit", "verify", str(exported.tmp / "bundle.tar"), "--platform", str(exported.tmp / "missing"))
    assert done.returncode == 2 and done.stderr.startswith("error:")


# -- replays, swapped collateral, malformed records, large honest bundles -------------------------------------


def coordinator_key(exported: Exported) -> ec.EllipticCurvePrivateKey:
    """The coordinator's log (token) key, unsealed from its state: to write logs it would have signed."""
    from fedattest.coordinator.state_dir import load_or_create_state

    return load_or_create_state(exported.running.state, tee(exported.running, COORD), "hospitals").token_key


def relog(exported: Exported, files: dict[str, bytes], extra: Callable[[AuditEntry], list[tuple[str, dict[str, Any]]]]) -> None:
    """Append entries (kind, data) to the bundle's log, chained and signed with the coordinator's own key: what
    a coordinator that accepted them (or whoever holds its key) would export."""
    entries, _head, _key = import_log(files["audit-log.json"])
    for kind, data in extra(entries[-1]):
        entries.append(next_entry(entries[-1], entries[-1].time, kind, data))
    key = coordinator_key(exported)
    files["audit-log.json"] = export_log(entries, sign_head(entries[-1], key), key.public_key())


def test_replayed_round_reports_are_a_failed_check(exported: Exported) -> None:
    files = read_bundle(exported.bundle)
    entries, _head, _key = import_log(files["audit-log.json"])
    first = next(e for e in entries if e.kind == "round")
    relog(exported, files, lambda _last: [("round", dict(first.data))] * 5)
    key = coordinator_key(exported).public_key()
    report = verify_bundle(repack(files), verifier_for=exported.verifier_for, audit_key=key)
    failed = [c for c in report.checks if not c.ok]
    assert not report.ok and len(failed) == 5, failed
    assert all("a replay: aggregator already reported run 7 round 1 (entry #3)" in c.detail for c in failed)
    assert [(r["run_id"], r["round"]) for r in report.rounds] == [("7", 1), ("7", 2)]


def test_collateral_that_is_not_the_logged_one_is_a_failed_check(exported: Exported) -> None:
    files = read_bundle(exported.bundle)
    [name] = [n for n in files if n.startswith("collateral/")]
    # The same collateral, formatted differently: it parses and the quotes verify with it, but it is not the
    # document the coordinator verified them with and logged the hash of.
    files[name] = json.dumps(json.loads(files[name]), indent=4).encode()
    report = verify_bundle(repack(files), verifier_for=exported.verifier_for)
    failed = {c.subject: c.detail for c in report.checks if not c.ok}
    for subject in ("activation #1 aggregator (aggregator)", "activation #2 hospital-a (collaborator)"):
        assert "the collateral in the bundle is not the one the log names" in failed[subject], failed


def test_a_deeply_nested_activation_record_is_a_failed_check(exported: Exported) -> None:
    files = read_bundle(exported.bundle)
    name = records(files)["hospital-a"]
    files[name] = b'{"fingerprint": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    report = verify_bundle(repack(files), verifier_for=exported.verifier_for)
    failed = {c.subject: c.detail for c in report.checks if not c.ok}
    assert "nested deeper than 64" in failed[name], failed


def test_an_honest_bundle_larger_than_16_mib_verifies(exported: Exported) -> None:
    # 17,000 entries of about 1 KB each (recorded operator overrides, which the offline checks show and pass),
    # chained and signed by the coordinator's key: a log of the size 1,550 activations make, beyond read_input's
    # 16 MiB.
    filler = {"reason": "x" * 1000}
    files = read_bundle(exported.bundle)
    relog(exported, files, lambda _last: [("store-accepted", filler)] * 17_000)
    bundle = exported.tmp / "large.tar"
    bundle.write_bytes(build_bundle_from(files))
    assert bundle.stat().st_size > 17 << 20
    key = exported.tmp / "large-key.pem"
    key.write_bytes(
        coordinator_key(exported)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    done = cli("audit", "verify", str(bundle), "--key", str(key), "--platform", str(exported.running.platform.directory))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: 17006 of 17006 checks pass; 2 activations, 2 rounds" in done.stdout
    assert "17005 entries chain to the signed head" in done.stdout


def test_an_entry_of_an_unknown_kind_fails_the_bundle(exported: Exported) -> None:
    """A kind this verifier does not know is not passed over: a newer coordinator's entry (or one the operator
    made up) may record something the auditor must check, so an older verifier says it cannot."""
    files = read_bundle(exported.bundle)
    relog(exported, files, lambda _last: [("budget-spent", {"epsilon": 100})])
    report = verify_bundle(build_bundle_from(files), verifier_for=exported.verifier_for)
    assert not report.ok
    assert any(c.subject == "budget-spent #5" and "does not know" in c.detail and not c.ok for c in report.checks)


def build_bundle_from(files: dict[str, bytes]) -> bytes:
    """A bundle as 'audit export' writes it (current manifest format, with sizes), of these members."""
    manifest = {"format": "fedattest-audit-bundle", "version": 2,
                "files": {n: hashlib.sha256(b).hexdigest() for n, b in sorted(files.items())},
                "sizes": {n: len(b) for n, b in sorted(files.items())}}  # fmt: skip
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted({**files, "MANIFEST.json": json.dumps(manifest).encode()}.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_refused_updates_are_logged_signed_and_shown(exported: Exported) -> None:
    with exported.running.http() as http:
        logged = [e["data"] for e in http.get(f"{exported.running.url}/api/v1/audit").json()["entries"] if e["kind"] == "round"]
    assert "refused" not in logged[0]
    assert logged[1]["refused"] == [{"member": m, "reason": r} for m, r in REFUSED]
    report = verify_bundle(exported.bundle, verifier_for=exported.verifier_for)
    assert report.ok and report.rounds[1]["refused"] == logged[1]["refused"] and "refused" not in report.rounds[0]
    shown = next(c.detail for c in report.checks if c.subject == "round #4 run 7 round 2")
    assert "2 refused updates (node 12: the reply is not signed; hospital-b: arrays['0'] has 1 NaN" in shown


def test_a_refusal_edited_after_signing_is_a_failed_check(exported: Exported) -> None:
    files = read_bundle(exported.bundle)
    entries, _head, _key = import_log(files["audit-log.json"])
    assert entries[-1].kind == "round" and entries[-1].data["refused"]
    for edit in ("drop", "reword"):
        data = json.loads(json.dumps(entries[-1].data))
        if edit == "drop":  # hiding a refusal
            del data["refused"][1]
        else:
            data["refused"][0]["reason"] = "timed out"
        edited = [*entries[:-1], next_entry(entries[-2], entries[-1].time, "round", data)]
        key = coordinator_key(exported)
        files["audit-log.json"] = export_log(edited, sign_head(edited[-1], key), key.public_key())
        report = verify_bundle(repack(files), verifier_for=exported.verifier_for, audit_key=key.public_key())
        failed = {c.subject: c.detail for c in report.checks if not c.ok}
        assert list(failed) == ["round #4 run 7 round 2"], failed
        assert "the report's signature does not verify" in failed["round #4 run 7 round 2"]


def test_the_coordinator_bounds_refusals_and_needs_no_member_for_them(exported: Exported) -> None:
    from fedattest.flower.rounds import signed_round_report
    from fedattest.pki.signing import UpdateSigner

    agg = exported.tmp / "agg"
    signer = UpdateSigner((agg / "key.pem").read_bytes(), (agg / "chain.pem").read_bytes())
    url = f"{exported.running.url}/api/v1/rounds"
    with exported.running.http() as http:
        for field, value in (("member", "m" * 65), ("reason", "r" * 513)):
            body = signed_round_report(signer, 8, 1, [], "cd" * 32, [("node 3", "bad")])
            body["report"]["refused"][0][field] = value  # the aggregator's own limits cut these; a hand-made report
            refused = http.post(url, json=body)
            assert refused.status_code == 422 and f"refused.0.{field}" in refused.json()["error"], refused.text
        extra = signed_round_report(signer, 8, 1, [], "cd" * 32, [("node 3", "bad")])
        extra["report"]["refused"][0]["weight"] = 1
        assert http.post(url, json=extra).status_code == 422
        ok = http.post(url, json=signed_round_report(signer, 8, 1, [], "cd" * 32, [("node 3", "x" * 600)]))
        assert ok.status_code == 200, ok.text
        entry = http.get(f"{exported.running.url}/api/v1/audit").json()["entries"][-1]
    assert entry["data"]["refused"] == [{"member": "node 3", "reason": "x" * 512}]


def test_no_endpoint_takes_a_token_as_a_credential(exported: Exported) -> None:
    # The activation token (served by GET /api/v1/audit/evidence, in every bundle) is a signed public statement
    # like the certificate: nothing accepts it as a credential, so publishing it grants nothing.
    import fedattest

    running, tmp = exported.running, exported.tmp
    with running.http() as http:
        openapi = http.get(f"{running.url}/api/v1/openapi.json").json()
        assert "securitySchemes" not in openapi.get("components", {})
        for path, operations in openapi["paths"].items():
            for method, operation in operations.items():
                assert "security" not in operation, (method, path)
                headers = [p["name"] for p in operation.get("parameters", []) if p.get("in") in ("header", "cookie")]
                assert not headers, (method, path, headers)
        evidence = http.get(f"{running.url}/api/v1/audit/evidence").json()
        agg_token = next(a["token"] for a in evidence["activations"] if a["member"] == "aggregator")
        assert agg_token == (tmp / "agg" / "token.jwt").read_text()
        # The aggregator's token with a collaborator's signature: refused (only the aggregator's signature counts) ...
        from fedattest.flower.rounds import signed_round_report
        from fedattest.pki.signing import UpdateSigner

        collab = UpdateSigner((tmp / "a" / "key.pem").read_bytes(), (tmp / "a" / "chain.pem").read_bytes())
        bearer = {"Authorization": f"Bearer {agg_token}"}
        forged = http.post(f"{running.url}/api/v1/rounds", json=signed_round_report(collab, 9, 1, [], "cd" * 32), headers=bearer)
        assert forged.status_code == 403 and "only the aggregator reports rounds" in forged.json()["error"], forged.text
        # ... and the aggregator's signature with a garbage bearer token: accepted (the header is never read).
        agg = UpdateSigner((tmp / "agg" / "key.pem").read_bytes(), (tmp / "agg" / "chain.pem").read_bytes())
        signed = signed_round_report(agg, 9, 1, [], "cd" * 32)
        assert http.post(f"{running.url}/api/v1/rounds", json=signed, headers={"Authorization": "Bearer x"}).status_code == 200
    # Nowhere in the package is a token decoded except by the offline verifiers (the audit bundle's, and the
    # passport's), which check it as evidence about a member, never as a credential for a request.
    package = Path(fedattest.__file__).parent
    decoders = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if "jwt.decode(" in p.read_text())
    assert decoders == ["coordinator/bundle.py", "pki/passport.py"]
    readers = [str(p.relative_to(package)) for p in package.rglob("*.py") if "authorization" in p.read_text().lower()]
    assert not readers, readers


def test_a_refusal_is_shown_with_its_control_characters_escaped(exported: Exported) -> None:
    from fedattest.flower.rounds import signed_round_report
    from fedattest.pki.signing import UpdateSigner

    agg = exported.tmp / "agg"
    signer = UpdateSigner((agg / "key.pem").read_bytes(), (agg / "chain.pem").read_bytes())
    signed = signed_round_report(signer, 11, 1, ["hospital-a"], "cd" * 32, [("node 4", "arrays '\x1b[2J\x07' do not decode")])
    files = read_bundle(exported.bundle)
    cert_sha256 = next(e.data["certificate_sha256"] for e in import_log(files["audit-log.json"])[0] if e.kind == "round")
    data = {"reported_by": "aggregator", **signed["report"], "certificate_sha256": cert_sha256, "signature": signed["signature"]}
    relog(exported, files, lambda _last: [("round", data)])
    report = verify_bundle(repack(files), verifier_for=exported.verifier_for, audit_key=coordinator_key(exported).public_key())
    detail = next(c.detail for c in report.checks if c.subject.endswith("run 11 round 1"))
    assert report.ok, [c for c in report.checks if not c.ok]
    assert "\x1b" not in detail and "\x07" not in detail and "node 4: arrays '\\x1b[2J\\x07' do not decode" in detail


# -- revocations: each policy change revokes exactly what it no longer allows ----------------------------------


@pytest.fixture(scope="module")
def revoked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    """A federation whose policy v2 replaced the collaborator build: hospital-a's identity is revoked."""
    from tests.coordinator_harness import policy_text, update_policy

    tmp = tmp_path_factory.mktemp("revoked")
    running = _two_members(tmp)
    try:
        report_round(running.url, running.root_pem, tmp / "agg", 7, 1, ["hospital-a"], "cd" * 32)
        text = policy_text().replace(f'mrenclave = ["{COLLAB.hex()}"]', f'mrenclave = ["{"cd" * 32}"]')
        assert [r["member"] for r in update_policy(running, text)["revoked"]] == ["hospital-a"]
        with pytest.raises(Exception, match="names members whose identities were all revoked"):
            report_round(running.url, running.root_pem, tmp / "agg", 7, 2, ["hospital-a"], "ef" * 32)
        report_round(running.url, running.root_pem, tmp / "agg", 7, 2, [], "ef" * 32)
        yield _exported(running, tmp)
    finally:
        stop(running)


def _rechained(
    entries: list[AuditEntry], change: Callable[[list[AuditEntry]], list[tuple[str, str, dict[str, Any]]]]
) -> list[AuditEntry]:
    """The log rewritten as (time, kind, data) items by ``change``, chained again (what a coordinator whose
    key signs it could export)."""
    out: list[AuditEntry] = []
    for when, kind, data in change(entries):
        out.append(next_entry(out[-1] if out else None, when, kind, data))
    return out


def _items(entries: list[AuditEntry]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e.time, e.kind, dict(e.data)) for e in entries]


def _verify_rewritten(
    exported: Exported, change: Callable[[list[AuditEntry]], list[tuple[str, str, dict[str, Any]]]]
) -> dict[str, str]:
    files = read_bundle(exported.bundle)
    entries, _head, _key = import_log(files["audit-log.json"])
    key = coordinator_key(exported)
    rewritten = _rechained(entries, change)
    files["audit-log.json"] = export_log(rewritten, sign_head(rewritten[-1], key), key.public_key())
    report = verify_bundle(repack(files), verifier_for=exported.verifier_for, audit_key=key.public_key())
    return {c.subject: c.detail for c in report.checks if not c.ok}


def test_an_honest_log_with_a_revocation_verifies(revoked: Exported) -> None:
    report = verify_bundle(revoked.bundle, verifier_for=revoked.verifier_for)
    assert report.ok, [c for c in report.checks if not c.ok]
    [check] = [c for c in report.checks if c.subject.startswith("revocation #")]
    assert check.subject.endswith("hospital-a") and "is not an accepted measurement" in check.detail
    assert _verify_rewritten(revoked, _items) == {}  # re-chaining alone changes nothing


def test_a_missing_an_extra_and_an_ignored_revocation_are_failed_checks(revoked: Exported) -> None:
    def drop(entries: list[AuditEntry]) -> list[tuple[str, str, dict[str, Any]]]:
        return [i for i in _items(entries) if i[1] != "revocation"]

    failed = _verify_rewritten(revoked, drop)
    [(subject, detail)] = failed.items()
    assert subject.startswith("policy #") and "no longer allows hospital-a's identity" in detail
    assert "but the log has no revocation" in detail

    def extra(entries: list[AuditEntry]) -> list[tuple[str, str, dict[str, Any]]]:
        items = _items(entries)
        at = next(i for i, e in enumerate(entries) if e.kind == "revocation")
        agg = next(e for e in entries if e.kind == "activation" and e.data["member"] == "aggregator")
        fake = {**entries[at].data, "member": "aggregator", "role": "aggregator", "cert_sha256": agg.data["cert_sha256"]}
        return [*items[: at + 1], (entries[at].time, "revocation", fake), *items[at + 1 :]]

    failed = _verify_rewritten(revoked, extra)
    assert any(s.startswith("revocation #") and s.endswith("aggregator") and "allows this identity" in d
               for s, d in failed.items()), failed  # fmt: skip
    assert any("reported with a certificate the coordinator had revoked" in d for d in failed.values()), failed

    def round_with_revoked(entries: list[AuditEntry]) -> list[tuple[str, str, dict[str, Any]]]:
        from fedattest.flower import UpdateSigner
        from fedattest.flower.rounds import signed_round_report

        signer = UpdateSigner((revoked.tmp / "agg" / "key.pem").read_bytes(), (revoked.tmp / "agg" / "chain.pem").read_bytes())
        signed = signed_round_report(signer, 7, 3, ["hospital-a"], "ab" * 32)
        last = entries[-1].data
        data = {"reported_by": "aggregator", **signed["report"], "certificate_sha256": last["certificate_sha256"],
                "signature": signed["signature"]}  # fmt: skip
        return [*_items(entries), (entries[-1].time, "round", data)]

    failed = _verify_rewritten(revoked, round_with_revoked)
    [(subject, detail)] = failed.items()
    assert subject.endswith("run 7 round 3") and "not activated (and not revoked) collaborators: ['hospital-a']" in detail


def test_every_check_of_a_logged_reprovisioning_fails_a_forged_one(exported: Exported) -> None:
    """Re-provisioning entries a coordinator's key signed, each breaking one check the offline verifier makes of
    them: only the genuine one passes."""
    from fedattest.pki import identity as ident
    from fedattest.tee import WorkloadIdentity
    from tests.coordinator_harness import SIGNER

    files = read_bundle(exported.bundle)
    entries, _head, _key = import_log(files["audit-log.json"])
    activation = next(e for e in entries if e.kind == "activation" and e.data["member"] == "aggregator")
    policy_hash = next(e for e in entries if e.kind == "policy").data["policy_hash"]
    agg = exported.tmp / "agg"
    key = serialization.load_pem_private_key((agg / "key.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    leaf_spki = ident.spki_sha256(key.public_key())
    [collateral] = [n.removeprefix("collateral/").removesuffix(".json") for n in files if n.startswith("collateral/")]

    def entry(enclave: Any = None, signer: Any = key, **change: Any) -> dict[str, Any]:
        claims = {"member": "aggregator", "nonce": "ab" * 32, "policy_hash": policy_hash, "keys": {"tls": leaf_spki}}
        claims |= change.pop("claims", {})
        quote = (enclave or tee(exported.running, AGG)).quote(ident.claims_report_data(claims))
        return {
            "member": "aggregator", "role": "aggregator", "cert_sha256": activation.data["cert_sha256"],
            "attestation": "verified", "simulated": True, "quote_b64": base64.b64encode(quote).decode(), "claims": claims,
            "signature": ident.sign_reprovision(signer, claims), "collateral_sha256": collateral, "policy_hash": policy_hash,
        } | change  # fmt: skip

    other_config = exported.running.platform.tee(WorkloadIdentity(AGG, SIGNER, config_id=b"\x02" * 64, kss=True))
    forged = {
        "genuine": entry(),
        "signed by another key": entry(signer=ident.new_key()),
        "another key bound": entry(claims={"keys": {"tls": leaf_spki, "node": "cd" * 32}}),
        "a certificate never activated": entry(cert_sha256="ee" * 32),
        "another policy named": entry(policy_hash="00" * 32),
        "a quote from an unapproved build": entry(enclave=tee(exported.running, COLLAB)),
        "the same code launched otherwise": entry(enclave=other_config),
    }
    relog(exported, files, lambda _last: [("reprovision", data) for data in forged.values()])
    report = verify_bundle(repack(files), verifier_for=exported.verifier_for, audit_key=coordinator_key(exported).public_key())
    checks = [c for c in report.checks if c.subject.startswith("reprovision")]
    assert [c.ok for c in checks] == [True] + [False] * 6, checks
    details = [c.detail for c in checks[1:]]
    needles = ("not by the certificate's key", "other keys than the activation", "not a live identity", "not the one in force",
               "the quote does not verify", "another enclave")  # fmt: skip
    for detail, needle in zip(details, needles, strict=True):
        assert needle in detail, (needle, detail)
