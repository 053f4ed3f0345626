"""Workload manifests: strict parsing, trusted-file expansion, canonical form, insecure options."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from fedattest.workload.manifest import ManifestError, canonical_json, parse_manifest
from fedattest.workload.trusted import check_trusted, expand_trusted

BASE = """
[libos]
entrypoint = "file:/usr/bin/python3"

[loader]
argv = ["python3", "app/train.py"]
env = { OMP_NUM_THREADS = "4", PYTHONHASHSEED = { value = "0" } }

[sgx]
trusted_files = ["file:app/", { uri = "file:/usr/lib/python3.11/os.py", sha256 = "%s" }]
isvprodid = 7
isvsvn = 2
enclave_size = "512M"
max_threads = 8
"""
OS_HASH = "ab" * 32


def write_app(base: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = base / "app" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_parse_every_supported_key() -> None:
    m = parse_manifest(BASE % OS_HASH)
    assert m.entrypoint == "/usr/bin/python3" and m.argv == ("python3", "app/train.py")
    assert m.env == (("OMP_NUM_THREADS", "4"), ("PYTHONHASHSEED", "0"))
    assert (m.isv_prod_id, m.isv_svn, m.enclave_size, m.max_threads, m.debug) == (7, 2, 512 << 20, 8, False)
    assert m.trusted_files[1].sha256 == OS_HASH and m.trusted_files[0].is_directory
    assert m.insecure_reasons() == []


def test_trusted_directories_expand_sorted_and_given_hashes_are_not_read(tmp_path: Path) -> None:
    write_app(tmp_path, {"train.py": b"print(1)", "lib/b.py": b"b", "lib/a.py": b"a", "Z.txt": b"z"})
    m = parse_manifest(BASE % OS_HASH)
    trusted = expand_trusted(m, tmp_path)  # /usr/lib/python3.11/os.py need not exist: its hash is given
    assert [u for u, _ in trusted] == [
        "file:/usr/lib/python3.11/os.py", "file:app/Z.txt", "file:app/lib/a.py", "file:app/lib/b.py", "file:app/train.py",
    ]  # fmt: skip
    assert dict(trusted)["file:app/lib/a.py"] == hashlib.sha256(b"a").hexdigest()


def test_canonical_form_is_independent_of_creation_order_and_mtimes(tmp_path: Path) -> None:
    files = {f"m{i}/f{i}.py": bytes([i]) * i for i in range(10)}
    a, b = tmp_path / "a", tmp_path / "b"
    write_app(a, files)
    write_app(b, dict(reversed(list(files.items()))))
    for i, p in enumerate(sorted((b / "app").rglob("*"))):
        os.utime(p, (i, i))
    m = parse_manifest(BASE % OS_HASH)
    assert canonical_json(m, expand_trusted(m, a)) == canonical_json(m, expand_trusted(m, b))
    write_app(b, {"m3/f3.py": b"changed"})
    assert canonical_json(m, expand_trusted(m, a)) != canonical_json(m, expand_trusted(m, b))


def test_check_trusted_refuses_any_change(tmp_path: Path) -> None:
    write_app(tmp_path, {"train.py": b"print(1)"})
    m = parse_manifest('[libos]\nentrypoint = "python3"\n[sgx]\ntrusted_files = ["file:app/"]\n')
    trusted = expand_trusted(m, tmp_path)
    check_trusted(trusted, tmp_path)
    (tmp_path / "app/train.py").write_bytes(b"print(2)")
    with pytest.raises(ManifestError, match="refusing to run"):
        check_trusted(trusted, tmp_path)
    (tmp_path / "app/train.py").unlink()
    with pytest.raises(ManifestError, match="cannot be read"):
        check_trusted(trusted, tmp_path)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("[loader]\ninsecure__use_cmdline_argv = true\n", "the host chooses the command line"),
        ("[loader]\ninsecure__use_host_env = true\n", "PYTHONPATH"),
        ('[sgx]\nallowed_files = ["file:plugins/evil.py"]\n', "code that is not measured"),
        ('[sgx]\nallowed_files = ["file:plugins/"]\n', "a directory that is not measured"),
    ],
)
def test_insecure_options_are_explained(extra: str, needle: str) -> None:
    m = parse_manifest('[libos]\nentrypoint = "python3"\n' + extra)
    reasons = m.insecure_reasons()
    assert len(reasons) == 1 and needle in reasons[0]


def test_data_files_may_be_allowed() -> None:
    m = parse_manifest('[libos]\nentrypoint = "python3"\n[sgx]\nallowed_files = ["file:/data/train.npy"]\n')
    assert m.insecure_reasons() == []


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not toml = = 1", "not valid TOML"),
        ("[loader]\nargv = []\n", "libos.entrypoint: missing"),
        ('[libos]\nentrypoint = "x"\nfoo = 1\n', "libos.foo: unsupported key"),
        ('[libos]\nentrypoint = "x"\n[fs]\nmounts = []\n', "fs: unsupported table"),
        ('[libos]\nentrypoint = "x"\n[loader]\nargv = "python3"\n', "loader.argv: expected a list"),
        ('[libos]\nentrypoint = "x"\n[loader]\nargv = [1]\n', "loader.argv[0]: expected a string"),
        ('[libos]\nentrypoint = "x"\n[sgx]\nisvsvn = 70000\n', "sgx.isvsvn: 70000 is out of range"),
        ('[libos]\nentrypoint = "x"\n[sgx]\nisvprodid = true\n', "sgx.isvprodid: expected an integer"),
        ('[libos]\nentrypoint = "x"\n[sgx]\nenclave_size = "300M"\n', "power of two"),
        ('[libos]\nentrypoint = "x"\n[sgx]\nenclave_size = "big"\n', "expected a size"),
        ('[libos]\nentrypoint = "x"\n[sgx]\nmax_threads = 0\n', "sgx.max_threads"),
        ('[libos]\nentrypoint = "x"\n[sgx]\ndebug = "yes"\n', "sgx.debug: expected true or false"),
        ('[libos]\nentrypoint = "x"\n[sgx]\nremote_attestation = "epid"\n', "sgx.remote_attestation"),
        ('[libos]\nentrypoint = "x"\n[sgx]\ntrusted_files = [{ uri = "file:a", sha256 = "xyz" }]\n', "expected 64 hex"),
        ('[libos]\nentrypoint = "x"\n[sgx]\ntrusted_files = [{ path = "a" }]\n', "sgx.trusted_files[0]"),
        ('[libos]\nentrypoint = "x"\n[loader]\nenv = { A = 1 }\n', "loader.env.A"),
    ],
)
def test_bad_manifests_name_the_key(text: str, needle: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(needle)):
        parse_manifest(text)


def test_missing_trusted_files_are_named(tmp_path: Path) -> None:
    m = parse_manifest('[libos]\nentrypoint = "x"\n[sgx]\ntrusted_files = ["file:nope.py", "file:dir/"]\n')
    with pytest.raises(ManifestError, match=r"'file:nope\.py' not found"):
        expand_trusted(m, tmp_path)
