"""``fedattest data commit`` and ``fedattest data verify``: dataset commitments from the command line."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from fedattest.cli._common import EXIT_REJECTED, CliError, CliUsageError, console, print_json, read_input
from fedattest.data.commit import Commitment, commit_directory
from fedattest.data.dataset import open_dataset
from fedattest.data.errors import DataIntegrityError, DatasetError
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


@contextmanager
def _progress(label: str) -> Iterator[tuple[object, object]]:
    con = console(stderr=True)
    progress = Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=con,
        transient=True,
        disable=not con.is_terminal,
    )
    task = progress.add_task(label, total=None)
    with progress:

        def total(n: int) -> None:
            progress.update(task, total=n)

        def advance(n: int) -> None:
            progress.advance(task, n)

        yield total, advance


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


@app.command(
    "commit",
    help=(
        "Hash every file under DIR in fixed-size chunks (in parallel), write the chunk index (default"
        " DIR/.fedattest-index) and print the dataset root: the 32-byte commitment to put in the federation"
        " policy.\n\n"
        "Refused with a message naming the file: symlinks leaving DIR, symlinked directories, FIFOs, sockets,"
        " devices, unreadable files and non-UTF-8 names.\n\n"
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
    exclude = (output,) if output is not None else ()
    start = time.perf_counter()
    try:
        with _progress("hashing") as (on_total, advance):
            result, _ = commit_directory(
                directory, chunk_size=size, index_path=index, exclude=exclude, workers=workers,
                on_total=on_total, advance=advance,  # type: ignore[arg-type]
            )  # fmt: skip
    except DatasetError as exc:
        raise CliUsageError(str(exc)) from None
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
        # A root that is not hex is a usage error; an index that does not match is a failed check.
        code = 2 if "hex digits" in str(exc) or "32 bytes" in str(exc) or "not a directory" in str(exc) else EXIT_REJECTED
        raise CliError(str(exc), code) from None
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
