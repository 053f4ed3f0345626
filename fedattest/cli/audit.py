"""``fedattest audit verify``: check an exported audit log offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedattest.cli._common import EXIT_REJECTED, CliError, CliUsageError, print_json, read_input
from fedattest.coordinator.audit import AuditError, import_log, public_key_from_pem, verify_log

app = typer.Typer(
    name="audit",
    help="Check a coordinator's audit log offline.\n\nExample: fedattest audit verify audit.json --key coordinator.pub.pem",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.command(
    "verify",
    help=(
        "Verify an exported audit log: every entry chains to the one before it and the last one is the head the"
        " coordinator signed. Pin the coordinator's key with --key (without it, the key inside the file is"
        " used, which only proves the log is self-consistent, and the output says so).\n\n"
        "Exit codes: 0 the log verifies, 1 it does not (the first bad entry is named), 2 unreadable input.\n\n"
        "Example: fedattest audit verify audit.json --key coordinator.pub.pem"
    ),
)
def verify(
    log: Annotated[Path, typer.Argument(metavar="LOG", help="Exported audit log (JSON).", show_default=False)],
    key: Annotated[Path | None, typer.Option("--key", metavar="PEM", help="The coordinator's audit public key.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    try:
        entries, head, embedded = import_log(read_input(str(log), "audit log"))
        pinned = public_key_from_pem(read_input(str(key), "key file")) if key is not None else None
    except AuditError as exc:
        raise CliUsageError(f"{log}: {exc}") from None
    try:
        count = verify_log(entries, head, pinned or embedded)
    except AuditError as exc:
        if json_out:
            print_json({"ok": False, "reason": str(exc), "seq": exc.seq})
        raise CliError(f"{log}: {exc}", EXIT_REJECTED) from None
    if json_out:
        print_json({"ok": True, "entries": count, "head": head.hash.hex(), "key_pinned": pinned is not None})
        return
    print(f"OK: {count} entries chain to the signed head {head.hash.hex()}")
    if pinned is None:
        print("note: verified with the key inside the log; pass --key to check it is the coordinator's")
