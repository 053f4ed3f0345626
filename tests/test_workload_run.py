"""`fedattest workload measure|run|gramine-manifest`: the measured identity is the one the running
workload quotes as, trusted files are checked before a run, and insecure manifests are refused."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from fedattest.cli import app
from fedattest.dcap.verify import QuoteVerifier
from fedattest.errors import TeeError
from fedattest.tee import SimulatedPlatform, current
from fedattest.workload.signer import UNSIGNED_MRSIGNER
from tests.conftest import assert_one_line_error

runner = CliRunner()

# The workload: asks fedattest.tee.current() for a quote over fixed report data and prints it as hex.
APP = """\
import os, sys
from fedattest.tee import current
tee = current()
sys.stdout.write(tee.quote(b"w" * 64).hex())
sys.stdout.write("\\n" + os.environ.get("GREETING", "-"))
"""


def manifest(tmp: Path, extra_sgx: str = "", extra_loader: str = "") -> Path:
    (tmp / "app").mkdir(exist_ok=True)
    (tmp / "app" / "main.py").write_text(APP)
    text = f"""
[libos]
entrypoint = "{sys.executable}"

[loader]
argv = ["python3", "app/main.py"]
env = {{ GREETING = "hello from the manifest" }}
{extra_loader}
[sgx]
trusted_files = ["file:app/"]
isvprodid = 3
isvsvn = 9
enclave_size = "16M"
max_threads = 2
{extra_sgx}
"""
    path = tmp / "workload.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.create(tmp_path_factory.mktemp("plat") / "p")


def measure_json(path: Path, *args: str) -> dict[str, object]:
    result = runner.invoke(app, ["workload", "measure", str(path), "--json", *args])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_measure_is_reproducible_and_sensitive(tmp_path: Path) -> None:
    path = manifest(tmp_path)
    first = measure_json(path)
    assert first == measure_json(path)
    assert (first["isv_prod_id"], first["isv_svn"], first["debug"], first["signed"]) == (3, 9, False, False)
    assert first["mrsigner"] == UNSIGNED_MRSIGNER.hex()
    (tmp_path / "app" / "main.py").write_text(APP + "\n# changed\n")
    assert measure_json(path)["mrenclave"] != first["mrenclave"]


def test_measure_with_a_signing_key(tmp_path: Path) -> None:
    key = rsa.generate_private_key(3, 3072)
    pem = tmp_path / "enclave-key.pem"
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    out = measure_json(manifest(tmp_path), "--signing-key", str(pem))
    assert out["mrsigner"] == hashlib.sha256(key.public_key().public_numbers().n.to_bytes(384, "little")).hexdigest()
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(
        rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    result = runner.invoke(app, ["workload", "measure", str(manifest(tmp_path)), "--signing-key", str(wrong)])
    assert_one_line_error(result, 2, "RSA-3072 with exponent 3")


def test_run_quotes_as_the_measured_enclave(tmp_path: Path, platform: SimulatedPlatform) -> None:
    path = manifest(tmp_path)
    expected = measure_json(path)
    proc = subprocess.run(
        [sys.executable, "-m", "fedattest", "workload", "run", str(path), "--platform", str(platform.directory)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    quote_hex, greeting = proc.stdout.split("\n")
    assert greeting == "hello from the manifest"  # the manifest's environment, not the caller's
    verified = QuoteVerifier(platform.root_ca).verify(bytes.fromhex(quote_hex), platform.collateral())
    assert verified.mr_enclave.hex() == expected["mrenclave"]
    assert (verified.isv_prod_id, verified.isv_svn, verified.report_data) == (3, 9, b"w" * 64)
    assert verified.simulated


def test_run_refuses_a_changed_trusted_file(tmp_path: Path, platform: SimulatedPlatform) -> None:
    path = manifest(tmp_path)
    digest = hashlib.sha256(APP.encode()).hexdigest()
    pinned = f'trusted_files = [{{ uri = "file:app/main.py", sha256 = "{digest}" }}]'
    text = path.read_text().replace('trusted_files = ["file:app/"]', pinned)
    path.write_text(text)
    assert runner.invoke(app, ["workload", "measure", str(path)]).exit_code == 0
    (tmp_path / "app" / "main.py").write_text(APP + "print('injected')\n")
    result = runner.invoke(app, ["workload", "run", str(path), "--platform", str(platform.directory)])
    assert_one_line_error(result, 1, "refusing to run")


@pytest.mark.parametrize(
    ("extra_sgx", "extra_loader", "needle"),
    [
        ("", "insecure__use_cmdline_argv = true", "command line"),
        ("", "insecure__use_host_env = true", "environment"),
        ('allowed_files = ["file:plugins/"]', "", "not measured"),
    ],
)
def test_insecure_manifests_are_refused_unless_allowed(tmp_path: Path, extra_sgx: str, extra_loader: str, needle: str) -> None:
    path = manifest(tmp_path, extra_sgx, extra_loader)
    assert_one_line_error(runner.invoke(app, ["workload", "measure", str(path)]), 1, needle, "--allow-insecure")
    out = measure_json(path, "--allow-insecure")
    assert out["insecure"] and needle in out["insecure"][0]  # type: ignore[index]


def test_measure_accepts_the_committed_data_directory(tmp_path: Path) -> None:
    path = manifest(tmp_path, 'allowed_files = ["file:data/"]')
    result = runner.invoke(app, ["workload", "measure", str(path)])
    assert_one_line_error(result, 1, "no data directory is declared", '[fedattest] data_dir = "data"', "--allow-insecure")
    without = measure_json(path, "--allow-insecure")["mrenclave"]
    path.write_text(path.read_text() + '\n[fedattest]\ndata_dir = "data"\n')
    out = measure_json(path)
    assert (out["data_dir"], out["insecure"]) == ("data", [])
    assert out["mrenclave"] != without  # the declaration is measured
    shown = runner.invoke(app, ["workload", "measure", str(path)])
    assert shown.exit_code == 0 and "data dir" in shown.stdout and "dataset commitment" in shown.stdout


def test_measure_refuses_a_data_directory_that_could_hold_code(tmp_path: Path) -> None:
    path = manifest(tmp_path, 'allowed_files = ["file:app/data/"]')
    path.write_text(path.read_text() + '\n[fedattest]\ndata_dir = "app/data"\n')
    result = runner.invoke(app, ["workload", "measure", str(path)])
    assert_one_line_error(result, 1, "fedattest.data_dir 'app/data' overlaps the trusted 'file:app/'", "(and 1 more)")
    # Absolute and relative paths are compared from the manifest's directory.
    path.write_text(path.read_text().replace('"app/data"', f'"{(tmp_path / "app" / "data").as_posix()}"'))
    assert_one_line_error(runner.invoke(app, ["workload", "measure", str(path)]), 1, "overlaps the trusted 'file:app/'")


def test_current_outside_an_enclave_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FEDATTEST_SIM_PLATFORM", raising=False)
    monkeypatch.delenv("FEDATTEST_SIM_IDENTITY", raising=False)
    with pytest.raises(TeeError, match="not running inside an enclave"):
        current(tmp_path / "no-attestation-dir")


def test_current_inside_gramine(tmp_path: Path) -> None:
    (tmp_path / "attestation_type").write_text("dcap")
    assert current(tmp_path).kind == "sgx-gramine"


def test_gramine_manifest_template(tmp_path: Path) -> None:
    out = tmp_path / "w.manifest.template"
    result = runner.invoke(
        app, ["workload", "gramine-manifest", "--app-dir", "/srv/app", "--entry", "train.py", "--isvsvn", "4", "-o", str(out)]
    )
    assert result.exit_code == 0, result.stderr
    text = out.read_text()
    assert 'loader.argv = ["python3", "/srv/app/train.py"]' in text
    assert 'sgx.remote_attestation = "dcap"' in text and "sgx.isvsvn = 4" in text
    assert "insecure__" not in text.split("\n\n", 1)[1]  # no insecure option outside the header comment
    assert '"file:/srv/app/",' in text and '"file:/data/",' in text
    assert_one_line_error(runner.invoke(app, ["workload", "gramine-manifest", "--app-dir", "srv"]), 2, "absolute")
    assert_one_line_error(runner.invoke(app, ["workload", "gramine-manifest", "--entry", "../x.py"]), 2, "inside the app")


@pytest.mark.parametrize(
    ("data_dir", "needle"),
    [
        ("data", "must be an absolute path"),
        ("/", "'/' would leave every file unmeasured"),
        ("/srv/app/data", "overlaps --app-dir '/srv/app'"),
        ("/srv", "overlaps --app-dir '/srv/app'"),
        ("/usr/share/data", "overlaps the system directory '/usr'"),
        ("/data/*", "has a wildcard"),
        ("/data/../srv/app", "has '..'"),
    ],
)
def test_gramine_manifest_refuses_a_data_directory_that_could_hold_code(data_dir: str, needle: str) -> None:
    result = runner.invoke(app, ["workload", "gramine-manifest", "--app-dir", "/srv/app", "--data-dir", data_dir])
    assert_one_line_error(result, 2, "--data-dir", needle)


def test_gramine_manifest_data_directory_is_the_allowed_one() -> None:
    result = runner.invoke(app, ["workload", "gramine-manifest", "--app-dir", "/srv/app", "--data-dir", "/mnt/hospital-a"])
    assert result.exit_code == 0, result.stderr
    assert 'sgx.allowed_files = [\n  "file:/mnt/hospital-a/",\n]' in result.stdout
    no_data = runner.invoke(app, ["workload", "gramine-manifest", "--data-dir", ""])
    assert no_data.exit_code == 0 and "allowed_files" not in no_data.stdout.split("\n\n", 1)[1]


def test_mrenclave_is_the_same_whatever_the_order_mtimes_or_locale(tmp_path: Path) -> None:
    results = set()
    for name, order in (("a", 1), ("b", -1)):
        base = tmp_path / name
        base.mkdir()
        path = manifest(base)
        files = [(f"lib/m{i}.py", f"x = {i}\n") for i in range(8)][::order]
        for rel, text in files:
            target = base / "app" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            os.utime(target, (order * 1000 + len(rel), order * 1000 + len(rel)))
        for locale in ("C", "C.UTF-8"):
            proc = subprocess.run(
                [sys.executable, "-m", "fedattest", "workload", "measure", str(path), "--json"],
                env={**os.environ, "LC_ALL": locale, "LANG": locale}, capture_output=True, text=True, check=True,
            )  # fmt: skip
            results.add(json.loads(proc.stdout)["mrenclave"])
    assert len(results) == 1


def test_a_kss_manifest_is_launched_with_the_config_id_it_is_given(tmp_path: Path, platform: SimulatedPlatform) -> None:
    """sgx.kss = true (Gramine's key): `workload run --config-id` (or SGX_CONFIG_ID, as gramine-sgx reads it)
    launches the enclave with that CONFIGID, which its quote reports with ATTRIBUTES.KSS; `quote verify
    --expect-config-id` accepts it and refuses another. Without sgx.kss, a CONFIGID is refused before anything
    runs, as SGX refuses to create such an enclave."""
    from fedattest.sgx.quote import SGX_FLAGS_KSS

    commitment = "ab" * 32
    family = "0x00112233445566778899aabbccddeeff"
    (tmp_path / "kss").mkdir()
    (tmp_path / "plain").mkdir()
    (tmp_path / "bad").mkdir()
    kss = manifest(tmp_path / "kss", extra_sgx=f'kss = true\nisvfamilyid = "{family}"')
    plain_path = manifest(tmp_path / "plain")
    plain = measure_json(plain_path)
    assert measure_json(kss)["kss"] is True and measure_json(kss)["mrenclave"] != plain["mrenclave"]  # another enclave

    def run(path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fedattest", "workload", "run", str(path), "--platform", str(platform.directory), *args],
            capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **(env or {})},
        )  # fmt: skip

    by_option = run(kss, "--config-id", commitment, "--config-svn", "3")
    by_env = run(kss, env={"SGX_CONFIG_ID": commitment, "SGX_CONFIG_SVN": "3"})
    for proc in (by_option, by_env):
        assert proc.returncode == 0, proc.stderr
        quote = bytes.fromhex(proc.stdout.split("\n")[0])
        report = QuoteVerifier(platform.root_ca).verify(quote, platform.collateral()).sgx_report
        assert report is not None and report.config_id == bytes.fromhex(commitment) + bytes(32) and report.config_svn == 3
        assert report.flags & SGX_FLAGS_KSS and report.isv_family_id == bytes.fromhex(family[2:])
    (tmp_path / "q.hex").write_text(by_option.stdout.split("\n")[0])
    (tmp_path / "c.json").write_text(platform.collateral().to_json())
    verify = ["quote", "verify", str(tmp_path / "q.hex"), "--collateral", str(tmp_path / "c.json"), "--root-ca",
              str(platform.directory / "root_ca.der"), "--allow-simulation"]  # fmt: skip
    assert runner.invoke(app, [*verify, "--expect-config-id", commitment]).exit_code == 0
    assert runner.invoke(app, [*verify, "--expect-config-id", "cd" * 32]).exit_code == 1

    refused = run(plain_path, "--config-id", commitment)  # the same workload without sgx.kss
    assert refused.returncode == 2 and refused.stdout == "", refused
    lines = refused.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "need KSS (sgx.kss = true in the manifest)" in lines[0]
    bad = manifest(tmp_path / "bad", extra_sgx=f'isvfamilyid = "{family}"')  # a KSS value without KSS
    assert_one_line_error(runner.invoke(app, ["workload", "measure", str(bad)]), 2, "sgx.isvfamilyid: a KSS value, but sgx.kss")
