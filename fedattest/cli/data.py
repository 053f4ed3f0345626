"""``fedattest data commit`` and ``fedattest data verify``: dataset commitments from the command line."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Annotated, TextIO

import typer

from fedattest.cli._common import EXIT_REJECTED, EXIT_USAGE, CliError, CliUsageError, print_json, read_input
from fedattest.data.commit import Commitment, check_chunk_size_argument, check_output_path, is_commitment, write_commitment
from fedattest.data.dataset import open_dataset
from fedattest.data.errors import DataIntegrityError, DatasetArgumentError, DatasetError
from fedattest.files import atomic_write

app = typer.Typer(
    name="data",
    help=(
        "Commit a dataset to a 32-byte root before training, and check data against it.\n\n"
        "Inside the enclave, fedattest.data.open_dataset(DIR, ROOT) verifies every chunk it reads.\n\n"
        "Example:\n\n"
        "  fedattest data commit hospital-a/ -o commitment.json\n\n"
        "  fedattest data verify hospital-a/ --commitment commitment.json"
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DirArg = Annotated[Path, typer.Argument(metavar="DIR", help="Dataset directory.", show_default=False)]
IndexOpt = Annotated[Path | None, typer.Option("--index", metavar="FILE", help="Index path (default DIR/.fedattest-index).")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", min=1, max=256, help="Hashing threads (default: CPU count).")]
ChunkOpt = Annotated[str, typer.Option("--chunk-size", metavar="SIZE", help="Chunk size (power of two, 4KiB-1GiB).")]
OutOpt = Annotated[Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write the commitment JSON here.")]
CommitmentOpt = Annotated[Path | None, typer.Option("--commitment", metavar="FILE", help="Commitment JSON from 'commit -o'.")]

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}


def parse_size(text: str) -> int:
    """``1MiB``, ``64KiB``, ``4096`` → bytes (binary units only: a chunk size is a power of two)."""
    match = re.fullmatch(r"\s*([0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise CliUsageError(f"--chunk-size: {text!r} is not a size like 1MiB, 256KiB or 65536")
    return int(match.group(1)) * _UNITS[unit]


class _Progress:
    """``hashing: 12,345 files, 1.2 GiB (345.6 MiB/s)`` on one line of a terminal's stderr, redrawn at
    most ten times a second, and only once the work has lasted ``delay`` seconds; erased at the end.
    Called by the hashing between runs of files, so it costs nothing per file."""

    def __init__(self, stream: TextIO, delay: float = 0.5, every: float = 0.1) -> None:
        self.stream = stream
        self.start = time.monotonic()
        self.next = self.start + delay
        self.every = every
        self.shown = False

    def __call__(self, files: int, nbytes: int) -> None:
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + self.every
        rate = nbytes / (now - self.start)
        self.stream.write(f"\rhashing: {files:,} files, {_human(nbytes)} ({_human(rate)}/s)\x1b[K")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _show_progress(json_out: bool) -> bool:
    try:
        return not json_out and sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


@app.command(
    "commit",
    help=(
        "Hash every file under DIR in fixed-size chunks (on every core), write the chunk index (default"
        " DIR/.fedattest-index) and print the dataset root: the 32-byte commitment to put in the federation"
        " policy. On a terminal, progress is shown on stderr.\n\n"
        "Refused with a message naming the file: symlinks leaving DIR, symlinked directories, FIFOs, sockets,"
        " devices, unreadable files and non-UTF-8 names. An existing --index or -o file is only replaced if"
        " it is an index or a commitment.\n\n"
        "Example: fedattest data commit hospital-a/ --chunk-size 1MiB -o commitment.json"
    ),
)
def commit(  # noqa: PLR0917 - typer maps parameters to options
    directory: DirArg,
    chunk_size: ChunkOpt = "1MiB",
    output: OutOpt = None,
    index: IndexOpt = None,
    workers: WorkersOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the commitment JSON on stdout.")] = False,
) -> None:
    size = parse_size(chunk_size)
    try:
        check_chunk_size_argument(size)
    except DatasetArgumentError as exc:
        raise CliUsageError(f"--chunk-size: {str(exc).removeprefix('chunk_size: ')}") from None
    exclude: tuple[Path, ...] = ()
    if output is not None:
        # Checked before anything is hashed: a bad -o would otherwise only fail at the very end.
        try:
            check_output_path(output, "commitment", keeps=is_commitment)
        except DatasetArgumentError as exc:
            raise CliUsageError(f"--output: {exc}") from None
        if index is not None and os.path.realpath(output) == os.path.realpath(index):
            raise CliUsageError("--output and --index name the same file")
        exclude = (output,)
    progress = _Progress(sys.stderr) if _show_progress(json_out) else None
    start = time.perf_counter()
    try:
        result = write_commitment(
            directory, chunk_size=size, index_path=index, exclude=exclude, workers=workers, progress=progress
        )
    except DatasetError as exc:
        raise CliUsageError(str(exc)) from None
    finally:
        if progress is not None:
            progress.clear()
    elapsed = time.perf_counter() - start
    if output is not None:
        try:
            atomic_write(output, result.to_json().encode(), mode=0o644)
        except OSError as exc:
            raise CliUsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    if json_out:
        sys.stdout.write(result.to_json())
        return
    rate = result.total_bytes / elapsed if elapsed > 0 else 0.0
    print(f"root        {result.root.hex()}")
    print(f"files       {result.files}")
    print(f"bytes       {result.total_bytes} ({_human(result.total_bytes)})")
    print(f"chunk size  {result.chunk_size}")
    print(f"index       {index or Path(directory) / '.fedattest-index'}")
    if output is not None:
        print(f"commitment  {output}")
    print(f"hashed in   {elapsed:.2f} s ({_human(rate)}/s)")


@app.command(
    "verify",
    help=(
        "Check every byte of DIR against a commitment (--root HEX or --commitment FILE): the index must"
        " reproduce the root, every chunk must match, and no file may be missing, resized or added.\n\n"
        "Exit codes: 0 the data matches, 1 it does not (the first bad file and chunk are named), 2 usage error.\n\n"
        "Example: fedattest data verify hospital-a/ --root 7862fe1a...cdcef7"
    ),
)
def verify(  # noqa: PLR0917 - typer maps parameters to options
    directory: DirArg,
    root: Annotated[str | None, typer.Option("--root", metavar="HEX", help="The committed root (64 hex digits).")] = None,
    commitment: CommitmentOpt = None,
    index: IndexOpt = None,
    workers: WorkersOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    if (root is None) == (commitment is None):
        raise CliUsageError("give exactly one of --root HEX or --commitment FILE")
    if commitment is not None:
        try:
            root = Commitment.from_json(read_input(str(commitment), "commitment file")).root.hex()
        except DatasetError as exc:
            raise CliUsageError(f"--commitment {str(commitment)!r}: {exc}") from None
    assert root is not None
    try:
        dataset = open_dataset(directory, root, index)
    except DatasetError as exc:
        # A root that is not hex or a directory that is not one is a usage error; an index that does not
        # match is a failed check.
        raise CliError(str(exc), EXIT_USAGE if isinstance(exc, DatasetArgumentError) else EXIT_REJECTED) from None
    try:
        dataset.verify_all(workers=workers)
    except DataIntegrityError as exc:
        if json_out:
            print_json(
                {
                    "ok": False,
                    "path": exc.path,
                    "chunk": exc.chunk,
                    "expected": exc.expected,
                    "actual": exc.actual,
                    "reason": str(exc),
                }
            )
        raise CliError(str(exc), EXIT_REJECTED) from None
    except DatasetError as exc:
        raise CliError(str(exc), EXIT_REJECTED) from None
    total = dataset.index.total_bytes
    if json_out:
        print_json({"ok": True, "root": dataset.root.hex(), "files": len(dataset.files()), "bytes": total})
    else:
        print(f"OK: {len(dataset.files())} files, {total} bytes match root {dataset.root.hex()}")
