"""``fedattest sim``: a simulated SGX platform for laptops and CI (init, add-host, quote, collateral, show)."""

from __future__ import annotations

import base64
import sys
from hashlib import sha256
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fedattest.cli._common import CliUsageError, padded_64, parse_hex, parse_time, print_json, print_rich
from fedattest.errors import TeeError
from fedattest.files import atomic_write
from fedattest.tee import Scenario, SimulatedPlatform, WorkloadIdentity
from fedattest.tee.simulated import describe

app = typer.Typer(
    name="sim",
    help=(
        "A simulated SGX platform: quotes and collateral in Intel's exact formats, under a local root CA instead"
        " of Intel's, so every flow runs without SGX hardware.\n\n"
        "Verifiers refuse simulated evidence unless told otherwise (fedattest quote verify --allow-simulation,"
        " and the policy's allow_simulation).\n\n"
        "Example:\n\n"
        "  fedattest sim init plat\n\n"
        "  fedattest sim quote --platform plat --mrenclave $(printf a%.0s {1..64})"
        " --mrsigner $(printf b%.0s {1..64}) -o q.bin\n\n"
        "  fedattest sim collateral --platform plat -o coll.json\n\n"
        "  fedattest quote verify q.bin --collateral coll.json --root-ca plat/root_ca.der --allow-simulation\n\n"
        "Separate hosts: 'sim init' makes the authority (it plays Intel and keeps its keys); each other host gets"
        " its own platform from 'fedattest sim add-host --authority plat host-a', with no authority key in it."
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

PlatformOpt = Annotated[
    Path, typer.Option("--platform", "-p", metavar="DIR", help="Platform made by 'fedattest sim init' or 'sim add-host'.")
]
OutOpt = Annotated[str, typer.Option("--output", "-o", metavar="FILE", help="Where to write; '-' is standard output.")]


def _open(directory: Path) -> SimulatedPlatform:
    try:
        return SimulatedPlatform.load(directory)
    except TeeError as exc:
        raise CliUsageError(str(exc)) from None


def _write(output: str, data: bytes, what: str) -> None:
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    path = Path(output)
    if path.is_dir():
        raise CliUsageError(f"-o {output!r} is a directory; give a file name")
    try:
        atomic_write(path, data, mode=0o644)
    except OSError as exc:
        raise CliUsageError(f"cannot write {what} to {output!r}: {exc.strerror or exc}") from None
    sys.stderr.write(f"wrote {what} to {output}\n")


def _summary(platform: SimulatedPlatform, json_out: bool) -> None:
    info = describe(platform)
    if json_out:
        print_json(info)
        return
    table = Table(title=f"simulated SGX platform {platform.directory}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in info.items():
        table.add_row(key.replace("_", " "), " ".join(map(str, value)) if isinstance(value, list) else str(value))
    print_rich(table)


_SCENARIOS = "; ".join(f"{s.value}: {s.description}" for s in Scenario)


@app.command("init", help=f"Create a simulated platform in DIR (must not exist, or be empty).\n\nScenarios: {_SCENARIOS}.")
def init(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="New platform directory.", show_default=False)],
    scenario: Annotated[
        Scenario, typer.Option("--scenario", "-s", help="TCB story the collateral tells (see above).", case_sensitive=False)
    ] = Scenario.UP_TO_DATE,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    try:
        platform = SimulatedPlatform.create(directory, scenario)
    except TeeError as exc:
        raise CliUsageError(str(exc)) from None
    _summary(platform, json_out)


@app.command(
    "add-host",
    help=(
        "Issue a simulated platform for one more host into DIR (must not exist, or be empty), as Intel provisions a"
        " real machine: its own PCK key and certificate signed by the authority's PCK CA, its own attestation key and"
        " sealing key; of the authority only public files (root CA, PCK CA and TCB signing certificates) and"
        " collateral signed now, valid 30 days. No authority private key is copied, so the host cannot quote as"
        " another host or sign collateral. Same FMSPC, TCB and scenario as the authority: the one collateral"
        " verifies every host's quotes.\n\n"
        "When the collateral expires the host refuses to attest; copy fresh collateral in with"
        " 'fedattest sim collateral --platform AUTHORITY -o DIR/collateral.json' (the host's keys stay).\n\n"
        "Example:\n\n"
        "  fedattest sim init authority\n\n"
        "  fedattest sim add-host --authority authority hospital-a-platform"
    ),
)
def add_host(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="New host platform directory.", show_default=False)],
    authority: Annotated[
        Path, typer.Option("--authority", "-a", metavar="DIR", help="The authority: a platform made by 'fedattest sim init'.")
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    try:
        platform = _open(authority).add_host(directory)
    except TeeError as exc:
        raise CliUsageError(str(exc)) from None
    _summary(platform, json_out)


@app.command("show", help="Describe a simulated platform: scenario, trust root fingerprint, FMSPC, TCB.")
def show(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Platform directory.", show_default=False)],
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    _summary(_open(directory), json_out)


@app.command(
    "quote",
    help=(
        "Quote as an enclave with the given identity: a DCAP quote v3 signed by the platform's quoting enclave.\n\n"
        "--report-data and --config-id are up to 64 bytes of hex; shorter values are zero-padded on the right (the"
        " usual way to bind a 32-byte hash). Output is raw bytes unless --format says hex or base64."
    ),
)
def quote(  # noqa: PLR0917 - typer maps parameters to options
    platform_dir: PlatformOpt,
    mrenclave: Annotated[str, typer.Option("--mrenclave", metavar="HEX", help="MRENCLAVE, 64 hex digits.")],
    mrsigner: Annotated[str, typer.Option("--mrsigner", metavar="HEX", help="MRSIGNER, 64 hex digits.")],
    output: OutOpt = "-",
    isvprodid: Annotated[int, typer.Option("--isvprodid", min=0, max=0xFFFF, help="ISVPRODID.")] = 0,
    isvsvn: Annotated[int, typer.Option("--isvsvn", min=0, max=0xFFFF, help="ISVSVN.")] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="Quote as a debug enclave (ATTRIBUTES.DEBUG set).")] = False,
    report_data: Annotated[
        str | None, typer.Option("--report-data", metavar="HEX", help="Report data (default: 64 zero bytes).")
    ] = None,
    config_id: Annotated[
        str | None,
        typer.Option(
            "--config-id",
            metavar="HEX",
            help="CONFIGID (KSS), up to 64 bytes of hex, zero-padded; e.g. a data commitment. Default: zeros.",
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", metavar="raw|hex|base64", help="Output encoding.")] = "raw",
) -> None:
    if fmt not in ("raw", "hex", "base64"):
        raise CliUsageError(f"--format must be raw, hex or base64, not {fmt!r}")
    if output == "-" and fmt == "raw" and sys.stdout.isatty():
        raise CliUsageError("refusing to write a binary quote to the terminal: use -o FILE or --format hex")
    identity = WorkloadIdentity(
        mr_enclave=parse_hex(mrenclave, 32, "--mrenclave"),
        mr_signer=parse_hex(mrsigner, 32, "--mrsigner"),
        isv_prod_id=isvprodid,
        isv_svn=isvsvn,
        debug=debug,
        config_id=padded_64(config_id, "--config-id"),
        kss=config_id is not None,  # an enclave launched with a CONFIGID is a KSS enclave
    )
    data = padded_64(report_data, "--report-data")
    raw = _open(platform_dir).tee(identity).quote(data)
    encoded = {"raw": raw, "hex": raw.hex().encode() + b"\n", "base64": base64.b64encode(raw) + b"\n"}[fmt]
    _write(output, encoded, f"quote ({len(raw)} bytes, sha256 {sha256(raw).hexdigest()[:16]}...)")


@app.command(
    "collateral",
    help=(
        "Write the platform's collateral (dcap-qvl JSON layout: CRLs, TCB info, QE identity, issuer chains),"
        " valid at --at (default now) and for at least a day after; it is re-signed when the cached copy"
        " would expire. A host platform (sim add-host) cannot sign: it gives the collateral it holds while valid."
    ),
)
def collateral(
    platform_dir: PlatformOpt,
    output: OutOpt = "-",
    at: Annotated[
        str | None, typer.Option("--at", metavar="TIME", help="Unix seconds or ISO-8601 with timezone. Default: now.")
    ] = None,
) -> None:
    when = parse_time(at) if at is not None else None
    try:
        doc = _open(platform_dir).collateral(when)
    except TeeError as exc:
        raise CliUsageError(str(exc)) from None
    _write(output, (doc.to_json() + "\n").encode(), "collateral")
