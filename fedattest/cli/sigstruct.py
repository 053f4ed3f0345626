"""``fedattest sigstruct show``: what a Gramine ``.sig`` file says about the enclave it signs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fedattest.cli._common import EXIT_REJECTED, CliError, CliUsageError, print_json, read_input
from fedattest.cli.fields import FieldList
from fedattest.errors import FormatError
from fedattest.sgx.sigstruct import Sigstruct

app = typer.Typer(
    name="sigstruct",
    help="Inspect SGX SIGSTRUCTs (the .sig files gramine-sgx-sign writes).\n\nExample: fedattest sigstruct show python.sig",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_FLAG_NAMES = {0: "INIT", 1: "DEBUG", 2: "MODE64BIT", 4: "PROVISIONKEY", 5: "EINITTOKEN_KEY", 6: "CET", 7: "KSS", 10: "AEXNOTIFY"}


def describe(sig: Sigstruct) -> dict[str, Any]:
    flags = [name for bit, name in _FLAG_NAMES.items() if sig.flags >> bit & 1]
    when = sig.signing_date
    problem = None
    try:
        sig.verify()
    except FormatError as exc:
        problem = str(exc)
    return {
        "mrenclave": sig.mr_enclave.hex(),
        "mrsigner": sig.mr_signer.hex(),
        "isv_prod_id": sig.isv_prod_id,
        "isv_svn": sig.isv_svn,
        "attributes": sig.attributes.hex(),
        "flags": flags,
        "debug": sig.debug,
        "xfrm": f"{sig.xfrm:#x}",
        "misc_select": f"{sig.misc_select:#010x}",
        "misc_mask": f"{sig.misc_mask:#010x}",
        "vendor": f"{sig.vendor:#x}",
        "date": when.isoformat() if when else None,
        "signature_valid": problem is None,
        "signature_problem": problem,
    }


def _text(value: object) -> str:
    return "yes" if value is True else "no" if value is False else str(value)


@app.command(
    "show",
    help=(
        "Print a SIGSTRUCT's MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN, attributes (debug?), XFRM, MISCSELECT, date and"
        " whether its RSA-3072 signature (and Q1/Q2) verify.\n\n"
        "Exit codes: 0 the signature is valid, 1 it is not, 2 unreadable or not a SIGSTRUCT.\n\n"
        "Example: fedattest sigstruct show python.sig --json"
    ),
)
def show(
    path: Annotated[Path, typer.Argument(metavar="FILE.sig", help="SIGSTRUCT file (1808 bytes).", show_default=False)],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    try:
        sig = Sigstruct.parse(read_input(str(path), "SIGSTRUCT file"))
    except FormatError as exc:
        raise CliUsageError(f"{path}: not a SIGSTRUCT: {exc}") from None
    info = describe(sig)
    if json_out:
        print_json(info)
    else:
        table = FieldList()
        for key, value in info.items():
            if key == "signature_problem" and value is None:
                continue
            shown = (
                ", ".join(value)
                if isinstance(value, list)
                else ("yes" if value is True else "no" if value is False else str(value))
            )
            table.row(key.replace("_", " "), shown)
        table.echo()
    if not info["signature_valid"]:
        raise CliError(f"{path}: signature INVALID: {info['signature_problem']}", EXIT_REJECTED)
