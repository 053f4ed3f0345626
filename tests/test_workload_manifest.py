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


# The committed data directory: allowed (unmeasured) because the workload reads it through its dataset
# commitment (fedattest.data.open_dataset checks every chunk). The shape docs/workloads.md shows.
DATA = """
[libos]
entrypoint = "file:/usr/bin/python3"

[loader]
argv = ["python3", "app/train.py"]
env = { OMP_NUM_THREADS = "4", DATA_DIR = "/data" }

[sgx]
trusted_files = ["file:app/", { uri = "file:config/train.json", sha256 = "%s" }]
allowed_files = [%s]

[fedattest]
data_dir = %s
"""


def data_manifest(allowed: str = '"file:/data/"', data_dir: str = '"/data"', **replace: str) -> str:
    text = DATA % (OS_HASH, allowed, data_dir)
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.mark.parametrize("data_dir", ['"/data"', '"/data/"', '"file:/data/"'])
def test_the_data_directory_may_be_allowed(data_dir: str) -> None:
    m = parse_manifest(data_manifest(data_dir=data_dir))
    assert m.data_dir == "/data"
    assert m.insecure_reasons() == [] and m.insecure_reasons("/work/project") == []
    # Files in it may be listed too (redundant, and harmless).
    assert parse_manifest(data_manifest(allowed='"file:/data/", "file:/data/train.npz"')).insecure_reasons() == []
    # Relative: from the manifest's directory, next to the app.
    relative = parse_manifest(data_manifest(allowed='"file:data/"', data_dir='"data"'))
    assert relative.data_dir == "data" and relative.insecure_reasons("/work/project") == []


def test_the_data_directory_is_measured_only_when_declared(tmp_path: Path) -> None:
    write_app(tmp_path, {"train.py": b"print(1)"})
    without = parse_manifest(BASE % OS_HASH)
    assert b'"fedattest"' not in canonical_json(without, expand_trusted(without, tmp_path))  # measured as before
    m = parse_manifest(data_manifest())
    trusted = [("file:app/train.py", OS_HASH)]
    assert b'"fedattest":{"data_dir":"/data"}' in canonical_json(m, trusted)
    other = parse_manifest(data_manifest(allowed='"file:/data2/"', data_dir='"/data2"'))
    assert canonical_json(m, trusted) != canonical_json(other, trusted)


NO_DATA_DIR = DATA.partition("[fedattest]")[0] % (OS_HASH, '"file:/data/"')
SCRIPT_IN_APP = {'"file:app/"': '"file:app/train.py"', '"file:/data/"': '"file:app/data/"', '"/data"\n': '"app/data"\n'}
DATA_SCRIPT = {'"app/train.py"': '"/data/train.py"', '"file:app/"': '"file:/data/train.py"'}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        # Unmeasured files that no commitment covers: the host could change them.
        (
            data_manifest(allowed='"file:/data/", "file:/scratch/cache.bin"'),
            "'file:/scratch/cache.bin', a file that is not measured, outside the data directory '/data'",
        ),
        (data_manifest(allowed='"file:/data/", "file:/plugins/"'), "'file:/plugins/', a directory that is not measured, outside"),
        (NO_DATA_DIR, "no data directory is declared: the host can change it (and put code in it); make it a trusted file"),
        (NO_DATA_DIR, 'if it is the committed dataset, declare it with [fedattest] data_dir = "/data"'),
        # Code is never allowed, in the data directory or not.
        (data_manifest(allowed='"file:/data/", "file:/data/hook.py"'), "'file:/data/hook.py', code that is not measured"),
        # A data directory that could hold code the enclave runs.
        (data_manifest(allowed='"file:/"', data_dir='"/"'), "fedattest.data_dir '/' is the root directory"),
        (data_manifest(allowed='"file:./"', data_dir='"."'), "fedattest.data_dir '.' holds the manifest's directory"),
        (data_manifest(allowed='"file:app/data/"', data_dir='"app/data"'), "'app/data' overlaps the trusted 'file:app/'"),
        (data_manifest(allowed='"file:config/"', data_dir='"config"'), "overlaps the trusted 'file:config/train.json'"),
        (data_manifest(**{'"file:/usr/bin/python3"': '"file:/data/bin/python3"'}), "holds the entrypoint '/data/bin/python3'"),
        (data_manifest(**DATA_SCRIPT), "holds loader.argv[1] '/data/train.py'"),
        (data_manifest(**SCRIPT_IN_APP), "is in 'app', the script's directory, which Python imports from"),
        (data_manifest(**{"DATA_DIR": "PYTHONPATH", '"/data" }': '"/opt/lib:/data/site" }'}), "PYTHONPATH has '/data/site'"),
        (data_manifest(**{"DATA_DIR": "PYTHONPATH", '"/data" }': '"/" }'}), "loader.env.PYTHONPATH has '/'"),
        (data_manifest(**{"DATA_DIR": "LD_LIBRARY_PATH"}), "loader.env.LD_LIBRARY_PATH has '/data'"),
    ],
)
def test_allowed_files_that_could_hold_code_are_refused(text: str, needle: str) -> None:
    reasons = parse_manifest(text).insecure_reasons("/work/project")
    assert any(needle in r for r in reasons), reasons


def test_relative_and_absolute_paths_are_compared_from_the_manifest_directory() -> None:
    # /work/project/app/ is the trusted app/ written the other way.
    m = parse_manifest(data_manifest(allowed='"file:/work/project/app/x/"', data_dir='"/work/project/app/x"'))
    assert m.insecure_reasons() == []  # without the manifest's directory, they cannot be compared
    assert any("overlaps the trusted 'file:app/'" in r for r in m.insecure_reasons("/work/project"))
    above = parse_manifest(data_manifest(allowed='"file:/work/"', data_dir='"/work"'))
    assert any("holds the manifest's directory" in r for r in above.insecure_reasons("/work/project"))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (data_manifest(allowed='"file:/data/*.npz"'), "sgx.allowed_files[0]: 'file:/data/*.npz' has a wildcard"),
        (data_manifest(data_dir='"/data/[ab]"'), "fedattest.data_dir: '/data/[ab]' has a wildcard"),
        (data_manifest(data_dir='"/srv/../data"'), "fedattest.data_dir: '/srv/../data' has '..'"),
        (data_manifest(allowed='"file:"'), "sgx.allowed_files[0]: empty path"),
        (data_manifest(data_dir="1"), "fedattest.data_dir: expected a directory"),
        (data_manifest() + "other = 1\n", "fedattest.other: unsupported key"),
    ],
)
def test_malformed_allowed_paths_are_errors(text: str, needle: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(needle)):
        parse_manifest(text)


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
