"""The audit log: any change, removal, insertion, reordering or truncation is detected offline."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from fedattest.cli import app
from fedattest.coordinator.audit import (
    AuditEntry,
    AuditError,
    export_log,
    import_log,
    next_entry,
    sign_head,
    verify_log,
)
from fedattest.errors import FormatError
from tests.conftest import assert_one_line_error

KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())
runner = CliRunner()


def chain(n: int = 6) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    for i in range(n):
        kind = "policy" if i == 0 else "activation"
        entries.append(
            next_entry(entries[-1] if entries else None, f"2026-11-25T03:00:{i:02d}Z", kind, {"member": f"m{i}", "n": i})
        )
    return entries


def test_a_good_log_verifies() -> None:
    entries = chain()
    assert verify_log(entries, sign_head(entries[-1], KEY), KEY.public_key()) == 6
    assert entries[0].prev == bytes(32) and entries[3].prev == entries[2].hash


@pytest.mark.parametrize(
    ("tamper", "needle", "seq"),
    [
        (lambda e: [*e[:2], replace(e[2], data={"member": "mallory", "n": 2}), *e[3:]], "does not chain", 3),
        (lambda e: [*e[:2], *e[3:]], "expected sequence number 2", 3),
        (lambda e: [e[0], e[2], e[1], *e[3:]], "expected sequence number 1", 2),
        (
            lambda e: [*e[:3], next_entry(e[2], "2026-11-25T03:00:59Z", "activation", {"member": "x"}), *e[3:]],
            "expected sequence",
            3,
        ),
        (lambda e: [*e[:-1], replace(e[-1], kind="revocation")], "cut short or rewritten", None),
        (lambda e: e[:-1], "cut short or rewritten", None),
        (lambda e: [replace(e[0], time="2030-01-01T00:00:00Z"), *e[1:]], "does not chain", 1),
    ],
    ids=["changed", "removed", "reordered", "inserted", "last-changed", "truncated", "first-changed"],
)
def test_every_tampering_is_detected(tamper: object, needle: str, seq: int | None) -> None:
    entries = chain()
    head = sign_head(entries[-1], KEY)
    with pytest.raises(AuditError, match=needle) as err:
        verify_log(tamper(entries), head, KEY.public_key())  # type: ignore[operator]
    assert err.value.seq == seq


def test_head_signature_and_key() -> None:
    entries = chain()
    with pytest.raises(AuditError, match="does not verify"):
        verify_log(entries, sign_head(entries[-1], OTHER), KEY.public_key())
    forged = replace(sign_head(entries[-1], KEY), seq=4)
    with pytest.raises(AuditError, match="signed head is for entry 4"):
        verify_log(entries, forged, KEY.public_key())
    with pytest.raises(AuditError, match="empty"):
        verify_log([], sign_head(entries[0], KEY), KEY.public_key())


def test_data_must_be_plain_json() -> None:
    """Refused when appended, not when an auditor verifies: what RFC 8785 cannot encode (NaN, bytes, an integer
    beyond 2**53, which a double would round)."""
    for value in (float("nan"), b"bytes", 2**60, {1: "a non-string key"}):
        with pytest.raises(FormatError):
            next_entry(None, "t", "k", {"x": value})


def test_export_import_and_stated_hashes() -> None:
    entries = chain()
    data = export_log(entries, sign_head(entries[-1], KEY), KEY.public_key())
    got, head, key = import_log(data)
    assert got == entries and verify_log(got, head, key) == 6
    doc = json.loads(data)
    doc["entries"][1]["data"]["member"] = "mallory"  # content no longer matches the stated hash
    with pytest.raises(AuditError, match="entry 1: stated hash"):
        import_log(json.dumps(doc).encode())
    for bad in (b"not json", b"{}", b'{"format": "fedattest-audit-log", "version": 1}'):
        with pytest.raises(AuditError, match="audit log"):
            import_log(bad)


def pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_cli_verify(tmp_path: Path) -> None:
    entries = chain()
    log = tmp_path / "audit.json"
    log.write_bytes(export_log(entries, sign_head(entries[-1], KEY), KEY.public_key()))
    (tmp_path / "key.pem").write_bytes(pem(KEY))
    (tmp_path / "other.pem").write_bytes(pem(OTHER))
    ok = runner.invoke(app, ["audit", "verify", str(log), "--key", str(tmp_path / "key.pem"), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout) == {
        "ok": True, "entries": 6, "head": entries[-1].hash.hex(), "key_pinned": True,
    }  # fmt: skip
    unpinned = runner.invoke(app, ["audit", "verify", str(log)])
    assert unpinned.exit_code == 0 and "pass --key" in unpinned.stdout
    # A log re-signed by someone else verifies only against the key inside it, not the pinned one.
    forged = tmp_path / "forged.json"
    forged.write_bytes(export_log(entries[:-1], sign_head(entries[-2], OTHER), OTHER.public_key()))
    assert runner.invoke(app, ["audit", "verify", str(forged)]).exit_code == 0
    assert_one_line_error(
        runner.invoke(app, ["audit", "verify", str(forged), "--key", str(tmp_path / "key.pem")]), 1, "does not verify"
    )
    assert_one_line_error(runner.invoke(app, ["audit", "verify", str(tmp_path / "missing.json")]), 2, "cannot read")


def test_entries_written_before_rfc8785_still_verify_and_the_chain_goes_on_in_rfc8785() -> None:
    """Version 1 entries (no ``v``) hash as they were written; an upgraded coordinator appends version 2 entries to
    the same chain; each hash is recomputed here from the documented formula, independently of AuditEntry."""
    import hashlib

    import rfc8785

    from fedattest.coordinator.audit import GENESIS

    old = AuditEntry(0, "2026-01-01T00:00:00Z", "round", {"run_id": 2**63 + 5, "note": "é"}, GENESIS, version=1)
    v1_text = json.dumps(old.body(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert "v" not in old.to_json() and old.hash == hashlib.sha256(b"fedattest-audit-v1\n" + v1_text).digest()
    new = next_entry(old, "2026-12-01T00:00:00Z", "round", {"run_id": str(2**63 + 5), "note": "é"})
    assert new.version == 2 and new.to_json()["v"] == 2 and new.prev == old.hash
    assert new.hash == hashlib.sha256(b"fedattest-audit-v2\n" + rfc8785.dumps(new.body())).digest()
    entries, head, key = import_log(export_log([old, new], sign_head(new, KEY), KEY.public_key()))
    assert verify_log(entries, head, key) == 2 and [e.version for e in entries] == [1, 2]

    relabelled = {k: v for k, v in new.to_json().items() if k != "v"}  # claiming the old encoding changes its hash
    with pytest.raises(AuditError, match="stated hash does not match"):
        AuditEntry.from_json(relabelled)
    for version in (3, True, "2", 2.0, 1):  # an explicit 1 is not how version 1 entries are written
        with pytest.raises(AuditError, match="unknown entry version"):
            AuditEntry.from_json({**new.to_json(), "v": version})
    downgraded = next_entry(new, "2026-12-02T00:00:00Z", "round", {"x": 1})
    downgraded = AuditEntry(downgraded.seq, downgraded.time, downgraded.kind, downgraded.data, downgraded.prev, version=1)
    with pytest.raises(AuditError, match="a downgrade"):
        verify_log([old, new, downgraded], sign_head(downgraded, KEY), KEY.public_key())
    with pytest.raises(AuditError, match="malformed"):  # a 64-bit number cannot be in a version 2 entry at all
        AuditEntry.from_json({**new.to_json(), "data": {"run_id": 2**63 + 5}})
