"""Trusted files: expanding directories and hashing files, and checking them again before a run."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from fedattest.workload.manifest import Manifest, ManifestError, TrustedEntry

_READ = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(_READ)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _resolve(base: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base / p


def _expand_directory(base: Path, entry: TrustedEntry) -> list[tuple[str, Path]]:
    """Files under a trusted directory, as (uri, path), sorted by URI bytes (so by path, whatever the
    file system's order)."""
    top = _resolve(base, entry.path)
    if not top.is_dir():
        raise ManifestError(f"sgx.trusted_files: {entry.uri!r} is not a directory (relative paths are from the manifest)")
    found = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames.sort()
        for name in filenames:
            full = Path(dirpath) / name
            if full.is_symlink() or not full.is_file():
                raise ManifestError(f"sgx.trusted_files: {full} is a symlink or special file; list its target instead")
            rel = full.relative_to(top).as_posix()
            found.append((entry.uri + rel, full))
    return sorted(found, key=lambda item: item[0].encode())


def expand_trusted(manifest: Manifest, base: Path) -> list[tuple[str, str]]:
    """Every trusted file as (uri, sha256 hex), sorted by URI. Entries that carry a sha256 are taken as
    given (not read: the file may not exist on this machine); directories are expanded and hashed."""
    out: dict[str, str] = {}
    for entry in manifest.trusted_files:
        if entry.sha256 is not None:
            pairs = [(entry.uri, entry.sha256)]
        elif entry.is_directory:
            pairs = [(uri, sha256_file(path)) for uri, path in _expand_directory(base, entry)]
        else:
            path = _resolve(base, entry.path)
            try:
                pairs = [(entry.uri, sha256_file(path))]
            except FileNotFoundError:
                raise ManifestError(
                    f"sgx.trusted_files: {entry.uri!r} not found (relative paths are from the manifest)"
                ) from None
            except IsADirectoryError:
                raise ManifestError(f"sgx.trusted_files: {entry.uri!r} is a directory; write it with a trailing '/'") from None
            except OSError as exc:
                raise ManifestError(f"sgx.trusted_files: {entry.uri!r}: {exc.strerror or exc}") from None
        for uri, digest in pairs:
            if out.get(uri, digest) != digest:
                raise ManifestError(f"sgx.trusted_files: {uri!r} is listed twice with different hashes")
            out[uri] = digest
    return sorted(out.items(), key=lambda item: item[0].encode())


def check_trusted(trusted: list[tuple[str, str]], base: Path) -> None:
    """Before a run: every trusted file exists and has its measured hash (refuses on the first mismatch)."""
    for uri, digest in trusted:
        path = _resolve(base, uri[len("file:") :] if uri.startswith("file:") else uri)
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise ManifestError(f"trusted file {uri!r} cannot be read: {exc.strerror or exc}") from None
        if not hmac.compare_digest(actual, digest):
            raise ManifestError(f"trusted file {uri!r} has sha256 {actual}, the measurement says {digest}: refusing to run")
