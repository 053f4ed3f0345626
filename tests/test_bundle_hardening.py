"""Offline verification against a hostile input: whoever hands the auditor a bundle, a policy or an approval
controls every byte of it. Tar bombs, oversized or unlisted members, and deeply nested documents are
refused with one line (never a MemoryError, a RecursionError or a traceback)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedattest.cli import app
from fedattest.coordinator import bundle as bundle_mod
from fedattest.coordinator.audit import AuditError, import_log
from fedattest.coordinator.bundle import BundleError, read_bundle
from fedattest.policy.approval import Approval
from fedattest.policy.federation import PolicyError, parse_policy
from tests.conftest import assert_one_line_error
from tests.coordinator_harness import policy_text

runner = CliRunner()
ZERO_HASH = "00" * 32


def tar_of(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
    return out.getvalue()


def manifest(files: dict[str, str], sizes: dict[str, int] | None = None) -> bytes:
    doc: dict[str, object] = {"format": "fedattest-audit-bundle", "version": 1 if sizes is None else 2, "files": files}
    if sizes is not None:
        doc["sizes"] = sizes
    return json.dumps(doc).encode()


def sparse_member(name: str, size: int) -> tarfile.TarInfo:
    """A GNU sparse (PAX 0.1) member: no data in the archive, ``size`` bytes of zeros when extracted."""
    info = tarfile.TarInfo(name)
    info.pax_headers = {"GNU.sparse.map": "0,0", "GNU.sparse.size": str(size)}
    return info


def bomb(count: int = 400, size: int = 64 << 20) -> bytes:
    """The pen-test's bomb: a few hundred KB that a naive reader expands to ``count`` x ``size`` bytes, with a
    manifest naming every member (sizes and hashes as an honest manifest would state them)."""
    names = [f"activations/{i:03d}-m.json" for i in range(1, count + 1)]
    digest = hashlib.sha256(bytes(size)).hexdigest()
    listed = {n: digest for n in names}
    return tar_of([("MANIFEST.json", manifest(listed)), *(sparse_member(n, size) for n in names)])


def test_the_tar_bomb_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bomb.tar"
    path.write_bytes(bomb())
    assert path.stat().st_size < 1 << 20
    assert_one_line_error(runner.invoke(app, ["audit", "verify", str(path)]), 1, "activations/001-m.json", "only plain")
    with pytest.raises(BundleError, match="only plain relative files"):
        read_bundle(path.read_bytes())


def test_huge_declared_members_are_refused_before_reading() -> None:
    # Plain (not sparse) members whose header declares more than the kind allows; the data is not there at
    # all (a reader that trusted the header would read 64 MiB, or fail on the truncated archive).
    big = tarfile.TarInfo("activations/001-m.json")
    big.size = 64 << 20
    archive = raw_member("MANIFEST.json", manifest({"activations/001-m.json": ZERO_HASH})) + big.tobuf(tarfile.PAX_FORMAT)
    with pytest.raises(BundleError, match=r"activations/001-m\.json: 67108864 bytes, over the limit"):
        read_bundle(archive)


def raw_member(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info.tobuf(tarfile.PAX_FORMAT) + data + bytes(-len(data) % 512)


def test_the_declared_total_and_the_member_count_are_capped() -> None:
    names = [f"collateral/{i:064x}.json" for i in range(40)]
    too_big = manifest(dict.fromkeys(names, ZERO_HASH), dict.fromkeys(names, 8 << 20))
    with pytest.raises(BundleError, match="declares 335544320 bytes in all"):
        read_bundle(tar_of([("MANIFEST.json", too_big)]))
    many = [f"activations/{i:05d}-m.json" for i in range(bundle_mod.MAX_MEMBERS + 1)]
    with pytest.raises(BundleError, match=f"lists {bundle_mod.MAX_MEMBERS + 1} members"):
        read_bundle(tar_of([("MANIFEST.json", manifest(dict.fromkeys(many, ZERO_HASH)))]))


def test_header_sizes_must_match_the_manifest() -> None:
    log = b'{"x": 1}'
    listed = {"audit-log.json": hashlib.sha256(log).hexdigest()}
    with pytest.raises(BundleError, match=r"audit-log\.json: the tar header says 8 bytes, the manifest 7"):
        read_bundle(tar_of([("MANIFEST.json", manifest(listed, {"audit-log.json": 7})), ("audit-log.json", log)]))
    # The size map must name exactly the listed members.
    with pytest.raises(BundleError, match="sizes"):
        read_bundle(tar_of([("MANIFEST.json", manifest(listed, {})), ("audit-log.json", log)]))


def test_only_the_members_the_manifest_names_and_only_plain_files() -> None:
    log = b"{}"
    listed = {"audit-log.json": hashlib.sha256(log).hexdigest()}
    head = ("MANIFEST.json", manifest(listed, {"audit-log.json": 2}))
    assert read_bundle(tar_of([head, ("audit-log.json", log)])) == {"audit-log.json": log}
    link = tarfile.TarInfo("audit-log.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    device = tarfile.TarInfo("audit-log.json")
    device.type = tarfile.CHRTYPE
    for bad in (link, device, ("/etc/audit-log.json", log), ("policies/../audit-log.json", log)):
        with pytest.raises(BundleError, match="only plain relative files"):
            read_bundle(tar_of([head, bad]))
    with pytest.raises(BundleError, match=r"MANIFEST\.json must be the first member"):
        read_bundle(tar_of([("audit-log.json", log), head]))
    with pytest.raises(BundleError, match=r"differ from the manifest: 'notes\.txt' is not listed"):
        read_bundle(tar_of([head, ("audit-log.json", log), ("notes.txt", b"x")]))
    with pytest.raises(BundleError, match=r"differ from the manifest: 'audit-log\.json' is repeated"):
        read_bundle(tar_of([head, ("audit-log.json", log), ("audit-log.json", log)]))
    with pytest.raises(BundleError, match=r"differ from the manifest: missing \['audit-log.json'\]"):
        read_bundle(tar_of([head]))
    # A manifest may only list names of the bundle layout.
    odd = {"../../etc/cron.d/x": ZERO_HASH}
    with pytest.raises(BundleError, match="not a member of the bundle layout"):
        read_bundle(tar_of([("MANIFEST.json", manifest(odd))]))


def test_a_deeply_nested_manifest_is_refused() -> None:
    deep = b'{"format": "fedattest-audit-bundle", "version": 1, "files": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(BundleError, match="nested deeper than"):
        read_bundle(tar_of([("MANIFEST.json", deep)]))


# -- deeply nested policies, approvals and logs -----------------------------------------------------------

DEPTH = 100_000


def deep_toml() -> str:
    return policy_text() + "\n[extra]\nx = " + "[" * DEPTH + "]" * DEPTH + "\n"


def test_a_deeply_nested_policy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text(deep_toml())
    with pytest.raises(PolicyError, match="nested deeper than 64"):
        parse_policy(path.read_text())
    assert_one_line_error(runner.invoke(app, ["policy", "check", str(path)]), 2, "nested deeper than 64")
    key = tmp_path / "k.key"
    key.write_text("unused")
    assert_one_line_error(
        runner.invoke(app, ["policy", "approve", str(path), "--name", "alice", "--key", str(key)]), 2, "nested deeper"
    )
    # Brackets inside strings and comments do not count; the policy hash is unchanged by the check.
    text = policy_text().replace('name = "hospitals"', 'name = "hospitals" # ' + "[" * 500, 1)
    assert parse_policy(text).policy_hash() == parse_policy(policy_text()).policy_hash()


def test_a_deeply_nested_approval_file_is_refused(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(policy_text())
    approval = tmp_path / "deep.json"
    approval.write_text('{"format": "fedattest-policy-approval", "version": 1, "x": ' + "[" * 10_000 + "]" * 10_000 + "}")
    with pytest.raises(PolicyError, match="nested deeper than"):
        Approval.from_json(approval.read_text())
    result = runner.invoke(app, ["policy", "check", str(policy), "--approval", str(approval)])
    assert_one_line_error(result, 2, "nested deeper than")


def test_a_deeply_nested_bare_log_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "deep.json"
    log.write_text('{"format": "fedattest-audit-log", "version": 1, "entries": ' + "[" * DEPTH + "]" * DEPTH + "}")
    with pytest.raises(AuditError, match="nested deeper than"):
        import_log(log.read_bytes())
    assert_one_line_error(runner.invoke(app, ["audit", "verify", str(log)]), 2, "nested deeper than")


def test_tar_headers_count_toward_the_archive_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # tarfile reads a PAX header whole; the archive limit bounds it (here lowered, to keep the test small).
    monkeypatch.setattr(bundle_mod, "MAX_ARCHIVE_BYTES", 64 << 10)
    info = tarfile.TarInfo("MANIFEST.json")
    info.pax_headers = {"comment": "x" * (1 << 20)}
    data = manifest({})
    info.size = len(data)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(BundleError, match="the archive is larger than the limit of 65536 bytes"):
        read_bundle(out.getvalue())


def test_a_bundle_file_over_the_archive_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.tar"
    path.write_bytes(tar_of([("MANIFEST.json", manifest({}))]))
    with path.open("r+b") as fh:
        fh.truncate(bundle_mod.MAX_ARCHIVE_BYTES + 1)  # sparse on disk: nothing is written
    result = runner.invoke(app, ["audit", "verify", str(path)])
    assert_one_line_error(result, 1, f"over the bundle limit of {bundle_mod.MAX_ARCHIVE_BYTES}")


@pytest.mark.parametrize(
    ("command", "name", "text"),
    [
        ("policy", "quotes.toml", '"\\' * 400_000),  # a basic string that never ends, closed by a lone backslash
        ("policy", "multiline.toml", '"""\\' * 200_000),
        ("audit", "quotes.json", '"\\' * 400_000),
    ],
)
def test_the_nesting_scan_stays_linear_on_unterminated_strings(tmp_path: Path, command: str, name: str, text: str) -> None:
    """A string left open with a trailing backslash made the scan retry from every later quote: quadratic
    (20,000 repeats took 3.3 s, these 400,000 would take tens of minutes). Now one pass, and the document is
    refused by its parser with one line. The subprocess timeout only stops a hang; no time is asserted."""
    import subprocess
    import sys

    path = tmp_path / name
    path.write_text(text)
    argv = ["policy", "check", str(path)] if command == "policy" else ["audit", "verify", str(path)]
    done = subprocess.run([sys.executable, "-m", "fedattest", *argv], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode in (1, 2) and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
