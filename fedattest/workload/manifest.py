"""Workload manifests: Gramine-style TOML describing what an enclave runs, and its canonical form.

Supported keys (anything else is refused, so nothing unmeasured can hide in a manifest)::

    libos.entrypoint                      "file:/usr/bin/python3.11" or a plain path
    loader.argv                           ["python3", "app.py"]
    loader.env                            {NAME = "value"} or {NAME = {value = "..."}}
    loader.insecure__use_cmdline_argv     true/false   (refused unless --allow-insecure)
    loader.insecure__use_host_env         true/false   (refused unless --allow-insecure)
    sgx.trusted_files                     ["file:app/", {uri = "file:model.bin", sha256 = "<64 hex digits>"}]
    sgx.allowed_files                     unmeasured files: the data directory, or files in it (see below)
    sgx.isvprodid, sgx.isvsvn             integers 0..65535
    sgx.debug                             true/false
    sgx.enclave_size                      "256M", "1G" (a power of two)
    sgx.max_threads                       1..1024
    sgx.remote_attestation                "dcap" or "none"
    sgx.kss                               true/false: SGX Key Separation and Sharing; only a KSS enclave can be
                                          launched with a CONFIGID / CONFIGSVN (``workload run --config-id``), as
                                          with Gramine's ``sgx.kss`` and ``SGX_CONFIG_ID``
    sgx.isvfamilyid, sgx.isvextprodid     16 bytes of hex ("0x..."), KSS only (Gramine's keys)
    fedattest.data_dir                    "/data": the committed dataset (the one directory that may be allowed)

Allowed (unmeasured) files are refused, unless ``--allow-insecure``, when the host could use them to
choose code (:meth:`Manifest.insecure_reasons`): files with a code suffix, and anything outside
``fedattest.data_dir``. The data directory itself is accepted because the workload reads it through
``fedattest.data.open_dataset``, which checks every chunk against the dataset commitment; it is refused
when it could hold code the workload runs: ``/``, the manifest's directory (the working directory) or a
directory above it, a directory that overlaps a trusted file, or that holds the entrypoint, the script or a
code search path (``PYTHONPATH``, ``LD_LIBRARY_PATH``...), or that sits in the script's directory (which
Python imports from). Wildcards and ``..`` are refused outright (Gramine matches paths literally).

Pure parsing and rendering; :mod:`fedattest.workload.trusted` reads and hashes files.
"""

from __future__ import annotations

import posixpath
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from fedattest import canonical
from fedattest.errors import FedattestError


class ManifestError(FedattestError):
    """A manifest that cannot be used: the message names the key and says what is expected."""


_SIZE = re.compile(r"^([0-9]+)([KMG])$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Files whose content is code an interpreter would run: allowed (untrusted) files must not be these.
CODE_SUFFIXES = (
    ".py", ".pyc", ".pyo", ".pth", ".so", ".pyd", ".sh", ".js", ".jar", ".class", ".pl", ".rb", ".lua", ".whl", ".zip", ".egg",
)  # fmt: skip

# Environment variables that make the interpreter or the loader take code from a path.
CODE_PATH_VARIABLES = (
    "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "LD_LIBRARY_PATH", "LD_PRELOAD", "LD_AUDIT", "PATH",
)  # fmt: skip
_WILDCARDS = re.compile(r"[*?\[\]{}]")

_TABLES: dict[str, set[str]] = {
    "fedattest": {"data_dir"},
    "libos": {"entrypoint"},
    "loader": {"argv", "env", "insecure__use_cmdline_argv", "insecure__use_host_env", "entrypoint"},
    "sgx": {
        "trusted_files", "allowed_files", "isvprodid", "isvsvn", "debug", "enclave_size", "max_threads",
        "remote_attestation", "kss", "isvfamilyid", "isvextprodid",
    },
}  # fmt: skip


@dataclass(frozen=True)
class TrustedEntry:
    """A trusted file as written in the manifest: a URI, with its SHA-256 when the manifest gives it."""

    uri: str
    sha256: str | None = None

    @property
    def path(self) -> str:
        return uri_path(self.uri)

    @property
    def is_directory(self) -> bool:
        return self.uri.endswith("/")


@dataclass(frozen=True)
class Manifest:
    entrypoint: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    trusted_files: tuple[TrustedEntry, ...]
    allowed_files: tuple[str, ...] = ()
    isv_prod_id: int = 0
    isv_svn: int = 0
    debug: bool = False
    enclave_size: int = 256 << 20
    max_threads: int = 4
    remote_attestation: str = "dcap"
    insecure_cmdline_argv: bool = False
    insecure_host_env: bool = False
    loader_entrypoint: str | None = None
    kss: bool = False  # SGX KSS: the enclave may be launched with a CONFIGID and CONFIGSVN
    isv_family_id: bytes = bytes(16)
    isv_ext_prod_id: bytes = bytes(16)
    data_dir: str | None = None  # normalised: no "file:", no trailing "/" ("/" itself stays "/", "." is the manifest's dir)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def insecure_reasons(self, base: str | None = None) -> list[str]:
        """Why this manifest lets unmeasured input steer the enclave (empty when it does not).

        ``base`` is the manifest's directory (an absolute POSIX path); with it, relative and absolute paths
        are compared too (without it, only paths written the same way are)."""
        reasons = []
        if self.insecure_cmdline_argv:
            reasons.append(
                "loader.insecure__use_cmdline_argv = true: the host chooses the command line, so it can make the"
                " interpreter run any code (python -c ...) under this measurement"
            )
        if self.insecure_host_env:
            reasons.append(
                "loader.insecure__use_host_env = true: the host chooses the environment (PYTHONPATH, PYTHONSTARTUP,"
                " LD_PRELOAD...), so it can inject code under this measurement"
            )
        if self.data_dir is not None:
            reasons += self._data_dir_reasons(base)
        for uri in self.allowed_files:
            path = uri_path(uri)
            if not path.endswith("/") and path.lower().endswith(CODE_SUFFIXES):
                reasons.append(
                    f"sgx.allowed_files has {uri!r}, code that is not measured: the host can change it and the"
                    " interpreter would run it; make it a trusted file"
                )
            elif self.data_dir is None or not path_inside(_norm(path), self.data_dir, base):
                what = "a directory" if path.endswith("/") else "a file"
                where = f"outside the data directory {self.data_dir!r}" if self.data_dir else "and no data directory is declared"
                reasons.append(
                    f"sgx.allowed_files has {uri!r}, {what} that is not measured, {where}: the host can change it"
                    " (and put code in it); make it a trusted file, or, if it is the committed dataset, declare it"
                    f' with [fedattest] data_dir = "{path.rstrip("/") or "/"}"'
                )
        return reasons

    def _data_dir_reasons(self, base: str | None) -> list[str]:
        """Why ``fedattest.data_dir`` could hold code this enclave runs (empty when it cannot)."""
        data = self.data_dir
        assert data is not None
        prefix = f"fedattest.data_dir {data!r}"
        why = "a data directory is not measured, so the host could put code there; keep code and data apart"
        if data == "/":
            return [f"{prefix} is the root directory: it holds every file, the interpreter and the app included"]
        if path_inside(".", data, base):
            return [f"{prefix} holds the manifest's directory, the workload's working directory: {why}"]
        reasons = []
        for entry in self.trusted_files:
            path = _norm(entry.path)
            if path_inside(path, data, base) or (entry.is_directory and path_inside(data, path, base)):
                reasons.append(f"{prefix} overlaps the trusted {entry.uri!r}: a path cannot be both measured and data")
        if path_inside(_norm(self.entrypoint), data, base):
            reasons.append(f"{prefix} holds the entrypoint {self.entrypoint!r}: {why}")
        for i, arg in enumerate(self.argv[1:], start=1):
            is_code = i == 1 or arg.lower().endswith(CODE_SUFFIXES)
            if is_code and not arg.startswith("-") and path_inside(_norm(arg), data, base):
                reasons.append(f"{prefix} holds loader.argv[{i}] {arg!r}: {why}")
        if posixpath.basename(self.entrypoint).startswith("python"):
            script = self.argv[1] if len(self.argv) > 1 and not self.argv[1].startswith("-") else None
            # Python imports from the script's directory (from the working directory with -m or -c): a data
            # directory in it is a package name the host can fill (an __init__.py that shadows a module).
            imports = (posixpath.dirname(_norm(script)) or ".") if script else "."
            if path_inside(data, imports, base):
                where = "the working directory" if imports == "." else repr(imports)
                reasons.append(f"{prefix} is in {where}, the script's directory, which Python imports from: {why}")
        for name, value in self.env:
            if name not in CODE_PATH_VARIABLES:
                continue
            for piece in filter(None, value.split(":")):
                path = _norm(piece)
                if path_inside(path, data, base) or (name == "PYTHONPATH" and path_inside(data, path, base)):
                    reasons.append(f"{prefix} is on a code search path: loader.env.{name} has {piece!r}; {why}")
        return reasons


def _norm(path: str) -> str:
    """A path as written, normalised lexically: no trailing "/", "." for the manifest's directory."""
    return posixpath.normpath(path) if path else "."


def path_inside(path: str, directory: str, base: str | None) -> bool:
    """Whether ``path`` is ``directory`` or under it (lexically). Relative paths are from ``base``; without
    it, a relative and an absolute path are taken as unrelated."""
    if posixpath.isabs(path) != posixpath.isabs(directory):
        if base is None:
            return False
        path, directory = (posixpath.normpath(posixpath.join(base, p)) for p in (path, directory))
    if directory == ".":
        return not path.startswith("../") and path != ".."
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def checked_path(value: str, key: str) -> str:
    """An allowed path or the data directory as written: refuses what Gramine would not match literally."""
    path = uri_path(value)
    if not path.strip():
        raise ManifestError(f"{key}: empty path")
    if _WILDCARDS.search(path):
        raise ManifestError(f"{key}: {value!r} has a wildcard; Gramine matches paths literally (list the directory, 'dir/')")
    if ".." in path.split("/"):
        raise ManifestError(f"{key}: {value!r} has '..'; write the path without it")
    return path


def uri_path(uri: str) -> str:
    return uri[len("file:") :] if uri.startswith("file:") else uri


def parse_size(text: Any, key: str) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    elif isinstance(text, str) and (m := _SIZE.match(text.strip().upper())):
        value = int(m.group(1)) << {"K": 10, "M": 20, "G": 30}[m.group(2)]
    else:
        raise ManifestError(f'{key}: expected a size like "256M" or "1G", got {text!r}')
    if value < (1 << 20) or value & (value - 1):
        raise ManifestError(f"{key}: {text!r} must be a power of two of at least 1M (an SGX enclave size)")
    return value


def _expect(value: Any, kind: type | tuple[type, ...], key: str, what: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"{key}: expected {what}, got {type(value).__name__} {value!r}")
    return value


def _u16(value: Any, key: str) -> int:
    _expect(value, int, key, "an integer")
    if not 0 <= value <= 0xFFFF:
        raise ManifestError(f"{key}: {value} is out of range 0..65535")
    return int(value)


def _flag(table: dict[str, Any], name: str, key: str) -> bool:
    return bool(_expect(table.get(key, False), bool, f"{name}.{key}", "true or false"))


def _kss_id(value: Any, key: str, kss: bool) -> bytes:
    """A 16-byte KSS identifier written as Gramine does ("0x" and 32 hex digits); zeros when absent."""
    if value is None:
        return bytes(16)
    if not kss:
        raise ManifestError(f"{key}: a KSS value, but sgx.kss is not true")
    text = _expect(value, str, key, 'a hex string ("0x" and 32 hex digits)')
    digits = text[2:] if text.lower().startswith("0x") else text
    if not re.fullmatch(r"[0-9a-fA-F]{32}", digits):
        raise ManifestError(f'{key}: expected "0x" and 32 hex digits (16 bytes), got {text!r}')
    return bytes.fromhex(digits)


def parse_manifest(text: str) -> Manifest:
    """Parse manifest TOML. Raises :class:`ManifestError` naming the key on anything unexpected."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"not valid TOML: {exc}") from None
    for table, value in doc.items():
        if table not in _TABLES:
            raise ManifestError(f"{table}: unsupported table (supported: {', '.join(sorted(_TABLES))})")
        _expect(value, dict, table, "a table")
        for key in value:
            if key not in _TABLES[table]:
                raise ManifestError(f"{table}.{key}: unsupported key (supported: {', '.join(sorted(_TABLES[table]))})")
    libos, loader, sgx = doc.get("libos", {}), doc.get("loader", {}), doc.get("sgx", {})
    if "entrypoint" not in libos:
        raise ManifestError('libos.entrypoint: missing (the program the enclave starts, e.g. "file:/usr/bin/python3")')
    entrypoint = uri_path(_expect(libos["entrypoint"], str, "libos.entrypoint", "a path or file: URI"))
    argv = _expect(loader.get("argv", [entrypoint]), list, "loader.argv", "a list of strings")
    for i, arg in enumerate(argv):
        _expect(arg, str, f"loader.argv[{i}]", "a string")
    env: list[tuple[str, str]] = []
    for name, raw in sorted(_expect(loader.get("env", {}), dict, "loader.env", "a table").items()):
        value = raw["value"] if isinstance(raw, dict) and set(raw) == {"value"} else raw
        env.append((name, _expect(value, str, f"loader.env.{name}", 'a string or {value = "..."}')))
    trusted: list[TrustedEntry] = []
    for i, entry in enumerate(_expect(sgx.get("trusted_files", []), list, "sgx.trusted_files", "a list")):
        key = f"sgx.trusted_files[{i}]"
        if isinstance(entry, str):
            trusted.append(TrustedEntry(entry))
        elif isinstance(entry, dict) and set(entry) <= {"uri", "sha256"} and "uri" in entry:
            uri = _expect(entry["uri"], str, f"{key}.uri", "a string")
            digest = entry.get("sha256")
            if digest is not None and not (isinstance(digest, str) and _HEX64.match(digest.lower())):
                raise ManifestError(f"{key}.sha256: expected 64 hex digits, got {digest!r}")
            if digest is not None and uri.endswith("/"):
                raise ManifestError(f"{key}: a directory ({uri!r}) cannot carry a sha256")
            trusted.append(TrustedEntry(uri, digest.lower() if digest else None))
        else:
            raise ManifestError(f'{key}: expected "file:path" or {{uri = "file:path", sha256 = "..."}}, got {entry!r}')
    allowed = _expect(sgx.get("allowed_files", []), list, "sgx.allowed_files", "a list")
    for i, uri in enumerate(allowed):
        checked_path(_expect(uri, str, f"sgx.allowed_files[{i}]", "a string"), f"sgx.allowed_files[{i}]")
    data_dir = doc.get("fedattest", {}).get("data_dir")
    if data_dir is not None:
        path = checked_path(_expect(data_dir, str, "fedattest.data_dir", 'a directory, e.g. "/data"'), "fedattest.data_dir")
        data_dir = "/" if path.strip("/") == "" and path.startswith("/") else _norm(path)
    kss = _expect(sgx.get("kss", False), bool, "sgx.kss", "true or false")
    family = _kss_id(sgx.get("isvfamilyid"), "sgx.isvfamilyid", kss)
    ext_prod = _kss_id(sgx.get("isvextprodid"), "sgx.isvextprodid", kss)
    threads = _expect(sgx.get("max_threads", 4), int, "sgx.max_threads", "an integer")
    if not 1 <= threads <= 1024:
        raise ManifestError(f"sgx.max_threads: {threads} is out of range 1..1024")
    attestation = sgx.get("remote_attestation", "dcap")
    if attestation not in ("dcap", "none"):
        raise ManifestError(f'sgx.remote_attestation: expected "dcap" or "none", got {attestation!r}')
    return Manifest(
        entrypoint=entrypoint,
        argv=tuple(argv),
        env=tuple(env),
        trusted_files=tuple(trusted),
        allowed_files=tuple(allowed),
        isv_prod_id=_u16(sgx.get("isvprodid", 0), "sgx.isvprodid"),
        isv_svn=_u16(sgx.get("isvsvn", 0), "sgx.isvsvn"),
        debug=_expect(sgx.get("debug", False), bool, "sgx.debug", "true or false"),
        enclave_size=parse_size(sgx.get("enclave_size", "256M"), "sgx.enclave_size"),
        max_threads=threads,
        remote_attestation=attestation,
        kss=kss,
        isv_family_id=family,
        isv_ext_prod_id=ext_prod,
        insecure_cmdline_argv=_expect(
            loader.get("insecure__use_cmdline_argv", False), bool, "loader.insecure__use_cmdline_argv", "true or false"
        ),
        insecure_host_env=_expect(
            loader.get("insecure__use_host_env", False), bool, "loader.insecure__use_host_env", "true or false"
        ),
        loader_entrypoint=loader.get("entrypoint"),
        data_dir=data_dir,
    )


def canonical_json(manifest: Manifest, trusted: list[tuple[str, str]]) -> bytes:
    """The canonical manifest that is measured: RFC 8785 JSON (:mod:`fedattest.canonical`), trusted files expanded
    to sorted (uri, sha256) pairs. Same inputs, same bytes, on any machine and in any language with a JCS encoder."""
    doc: dict[str, Any] = {
        "format": "fedattest-workload-manifest-v1",
        "libos": {"entrypoint": manifest.entrypoint},
        "loader": {
            "argv": list(manifest.argv),
            "env": dict(manifest.env),
            "insecure__use_cmdline_argv": manifest.insecure_cmdline_argv,
            "insecure__use_host_env": manifest.insecure_host_env,
        },
        "sgx": {
            "allowed_files": sorted(manifest.allowed_files),
            "debug": manifest.debug,
            "enclave_size": manifest.enclave_size,
            "isvprodid": manifest.isv_prod_id,
            "isvsvn": manifest.isv_svn,
            "max_threads": manifest.max_threads,
            "remote_attestation": manifest.remote_attestation,
            "trusted_files": [{"sha256": digest, "uri": uri} for uri, digest in sorted(trusted, key=lambda t: t[0].encode())],
        },
    }
    if manifest.data_dir is not None:  # only when declared, so that manifests without one measure as before
        doc["fedattest"] = {"data_dir": manifest.data_dir}
    if manifest.kss:  # likewise: a KSS enclave is another enclave (Gramine measures its manifest too)
        doc["sgx"] |= {"isvextprodid": manifest.isv_ext_prod_id.hex(), "isvfamilyid": manifest.isv_family_id.hex(), "kss": True}
    return canonical.canonical_json(doc)
