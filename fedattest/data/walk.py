"""Walking a dataset directory safely: every file under it, in commitment order, with what cannot be
committed refused by name.

Each directory is listed once, with ``os.scandir`` on a descriptor opened ``O_DIRECTORY |
O_NOFOLLOW`` relative to its parent's, so a directory swapped for a symlink during the walk cannot
lead it elsewhere. Entries are classified from the listing's file type (no ``stat`` per entry) and
sorted with a directory keyed as its name followed by '/': a depth-first walk in that order yields
files exactly in commitment order (sorted UTF-8 bytes of the relative path), so nothing has to be
collected and sorted globally. What is kept is the sorted names of the directories being walked.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Generator, Iterable, Set
from dataclasses import dataclass
from pathlib import Path

from fedattest.data.errors import DatasetError

# The walk yields at most this many files at a time (progress is reported between them).
RUN_FILES = 1024

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_DIR, _FILE, _LINK, _OTHER = 0, 1, 2, 3

# One file of a run: (path as committed, in UTF-8; name in its directory; resolved target of a symlink or None)
WalkedFile = tuple[bytes, str, str | None]


@dataclass(frozen=True)
class FoundFile:
    path: str  # relative, '/'-separated
    real: Path  # what to read (a symlink inside the directory is read through its target)
    size: int


def _not_utf8(name: str, prefix: str) -> DatasetError:
    shown = os.fsencode(name).decode("utf-8", "backslashreplace")
    return DatasetError(f"{prefix}{shown}: file name is not valid UTF-8; rename it to commit it")


def not_regular(rel: str) -> DatasetError:
    return DatasetError(f"{rel}: not a regular file (FIFO, socket or device); only files can be committed")


def _list(fd: int, prefix: str) -> list[tuple[bytes, int, str]]:
    """The entries of the directory open as ``fd``, as (sort key, kind, name), sorted."""
    items: list[tuple[bytes, int, str]] = []
    append = items.append
    try:
        with os.scandir(fd) as listing:
            for entry in listing:
                name = entry.name
                try:
                    key = name.encode("utf-8")
                except UnicodeEncodeError:
                    raise _not_utf8(name, prefix) from None
                try:
                    if entry.is_file(follow_symlinks=False):
                        append((key, _FILE, name))
                    elif entry.is_dir(follow_symlinks=False):
                        append((key + b"/", _DIR, name))
                    elif entry.is_symlink():
                        append((key, _LINK, name))
                    else:
                        append((key, _OTHER, name))
                except OSError as exc:  # only when the listing has no file type and lstat fails
                    raise DatasetError(f"{prefix}{name}: {exc.strerror or exc}") from None
    except OSError as exc:
        raise DatasetError(f"{prefix or '.'}: cannot list the directory: {exc.strerror or exc}") from None
    items.sort()
    return items


def _resolve_link(top: str, path: str, rel: str) -> str:
    """The target of the symlink at ``path``: a regular file inside ``top``, or refused."""
    target = os.path.realpath(path)
    if os.path.commonpath([target, top]) != top:
        raise DatasetError(f"{rel}: symlink leaves the dataset directory (to {target}); copy the file in instead")
    try:
        st = os.stat(target)
    except OSError:
        raise DatasetError(f"{rel}: dangling symlink") from None
    if stat.S_ISDIR(st.st_mode):
        raise DatasetError(f"{rel}: symlinked directories are not supported; commit the directory it points to")
    if not stat.S_ISREG(st.st_mode):
        raise not_regular(rel)
    return target


def walk(top: str, skip: Set[bytes] = frozenset()) -> Generator[tuple[int, str, list[WalkedFile]], None, None]:
    """Every file under ``top`` (an absolute, resolved directory path), in commitment order, as runs of
    files that share a directory: ``(directory descriptor, directory path, [(path, name, target)])``.
    The descriptor is only valid until the next run is asked for.

    Refused, with a message naming the path: symlinks that leave ``top`` (or dangle), symlinked
    directories, special files (FIFOs, sockets, devices) and non-UTF-8 names. ``skip`` holds committed
    paths (UTF-8 bytes) of files to leave out; a symlink is never left out this way.
    """
    try:
        fd = os.open(top, DIR_FLAGS)
    except OSError as exc:
        raise DatasetError(f"{top}: cannot list the directory: {exc.strerror or exc}") from None
    # A frame: [descriptor, path, prefix, prefix as bytes, sorted entries, position]
    stack: list[list[object]] = []
    try:
        stack.append([fd, top, "", b"", _list(fd, ""), 0])
        while stack:
            frame = stack[-1]
            dfd: int = frame[0]  # type: ignore[assignment]
            dpath: str = frame[1]  # type: ignore[assignment]
            prefix: str = frame[2]  # type: ignore[assignment]
            prefix_b: bytes = frame[3]  # type: ignore[assignment]
            items: list[tuple[bytes, int, str]] = frame[4]  # type: ignore[assignment]
            pos: int = frame[5]  # type: ignore[assignment]
            run: list[WalkedFile] = []
            child: tuple[str, bytes] | None = None
            end = len(items)
            while pos < end:
                key, kind, name = items[pos]
                pos += 1
                if kind == _FILE:
                    path = prefix_b + key
                    if path not in skip:
                        run.append((path, name, None))
                        if len(run) >= RUN_FILES:
                            break
                elif kind == _DIR:
                    child = (name, prefix_b + key)
                    break
                elif kind == _LINK:
                    rel = prefix + name
                    run.append((prefix_b + key, name, _resolve_link(top, os.path.join(dpath, name), rel)))
                else:
                    raise not_regular(prefix + name)
            frame[5] = pos
            if run:
                yield dfd, dpath, run
            if child is not None:
                name, child_prefix = child
                child_rel = prefix + name + "/"
                try:
                    cfd = os.open(name, DIR_FLAGS, dir_fd=dfd)
                except OSError as exc:
                    raise DatasetError(f"{child_rel}: cannot list the directory: {exc.strerror or exc}") from None
                stack.append([cfd, os.path.join(dpath, name), child_rel, child_prefix, [], 0])
                stack[-1][4] = _list(cfd, child_rel)
            elif pos >= end:
                stack.pop()
                os.close(dfd)
    finally:
        for frame in stack:
            os.close(frame[0])  # type: ignore[arg-type]


def find_files(directory: Path | str, *, exclude: Iterable[Path | str] = ()) -> list[FoundFile]:
    """Every regular file under ``directory``, sorted by the UTF-8 bytes of its relative path.

    Refused, with a message naming the path: what :func:`walk` refuses, and unreadable files.
    ``exclude`` lists files to leave out (the index, a commitment file written inside the directory).
    """
    try:
        top = os.path.realpath(directory, strict=True)
    except OSError as exc:
        raise DatasetError(f"{directory}: {exc.strerror or exc}") from None
    if not os.path.isdir(top):
        raise DatasetError(f"{directory}: not a directory")
    found: list[FoundFile] = []
    for _, dpath, run in walk(top, skip_set(top, exclude)):
        for raw, name, target in run:
            real = target or os.path.join(dpath, name)
            rel = raw.decode("utf-8")
            try:
                size = os.stat(real).st_size
            except OSError as exc:
                raise DatasetError(f"{rel}: {exc.strerror or exc}") from None
            if not os.access(real, os.R_OK):
                raise DatasetError(f"{rel}: not readable (permission denied)")
            found.append(FoundFile(rel, Path(real), size))
    return found


def skip_set(top: str, exclude: Iterable[Path | str]) -> frozenset[bytes]:
    """The committed paths (UTF-8 bytes) of the files in ``exclude`` that are inside ``top``."""
    out = set()
    for path in exclude:
        real = os.path.realpath(path)
        if real != top and os.path.commonpath([real, top]) == top:
            rel = os.path.relpath(real, top).replace(os.sep, "/")
            out.add(os.fsencode(rel))
    return frozenset(out)
