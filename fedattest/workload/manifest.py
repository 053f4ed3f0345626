"""Workload manifests: Gramine-style TOML describing what an enclave runs, and its canonical form.

Supported keys (anything else is refused, so nothing unmeasured can hide in a manifest)::

    libos.entrypoint                      "file:/usr/bin/python3.11" or a plain path
    loader.argv                           ["python3", "app.py"]
    loader.env                            {NAME = "value"} or {NAME = {value = "..."}}
    loader.insecure__use_cmdline_argv     true/false   (refused unless --allow-insecure)
    loader.insecure__use_host_env         true/false   (refused unless --allow-insecure)
    sgx.trusted_files                     ["file:app/", {uri = "file:data.bin", sha256 = "..."}]
    sgx.allowed_files                     untrusted files (refused when they hold code, unless --allow-insecure)
    sgx.isvprodid, sgx.isvsvn             integers 0..65535
    sgx.debug                             true/false
    sgx.enclave_size                      "256M", "1G" (a power of two)
    sgx.max_threads                       1..1024
    sgx.remote_attestation                "dcap" or "none"

Pure parsing and rendering; :mod:`fedattest.workload.trusted` reads and hashes files.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from fedattest.errors import FedattestError


class ManifestError(FedattestError):
    """A manifest that cannot be used: the message names the key and says what is expected."""


_SIZE = re.compile(r"^([0-9]+)([KMG])$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Files whose content is code an interpreter would run: allowed (untrusted) files must not be these.
CODE_SUFFIXES = (
    ".py", ".pyc", ".pyo", ".pth", ".so", ".pyd", ".sh", ".js", ".jar", ".class", ".pl", ".rb", ".lua", ".whl", ".zip", ".egg",
)  # fmt: skip

_TABLES: dict[str, set[str]] = {
    "libos": {"entrypoint"},
    "loader": {"argv", "env", "insecure__use_cmdline_argv", "insecure__use_host_env", "entrypoint"},
    "sgx": {
        "trusted_files", "allowed_files", "isvprodid", "isvsvn", "debug", "enclave_size", "max_threads",
        "remote_attestation",
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
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def insecure_reasons(self) -> list[str]:
        """Why this manifest lets unmeasured input steer the enclave (empty when it does not)."""
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
        for uri in self.allowed_files:
            path = uri_path(uri)
            if path.endswith("/") or path.lower().endswith(CODE_SUFFIXES):
                what = "a directory" if path.endswith("/") else "code"
                reasons.append(
                    f"sgx.allowed_files has {uri!r}, {what} that is not measured: the host can change it and the"
                    " interpreter would run it; make it a trusted file"
                )
        return reasons


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
        _expect(uri, str, f"sgx.allowed_files[{i}]", "a string")
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
        insecure_cmdline_argv=_expect(
            loader.get("insecure__use_cmdline_argv", False), bool, "loader.insecure__use_cmdline_argv", "true or false"
        ),
        insecure_host_env=_expect(
            loader.get("insecure__use_host_env", False), bool, "loader.insecure__use_host_env", "true or false"
        ),
        loader_entrypoint=loader.get("entrypoint"),
    )


def canonical_json(manifest: Manifest, trusted: list[tuple[str, str]]) -> bytes:
    """The canonical manifest that is measured: UTF-8 JSON with sorted keys and no whitespace, trusted
    files expanded to sorted (uri, sha256) pairs. Same inputs, same bytes, on any machine."""
    doc = {
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
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
