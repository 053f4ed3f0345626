"""``fedattest demo``: the README's first command, end to end in a few seconds.

1. A simulated SGX platform: ``fedattest sim init``, a quote for a fixed example workload identity
   (``sim quote``) and its collateral (``sim collateral``), then ``fedattest quote verify`` accepting it
   with ``--allow-simulation`` and refusing it without. Each command is printed as you would type it
   and run in-process through the real command line, so the output is exactly what you would see.
2. The real hardware quotes in the repository's ``tests/vectors/dcap``, each verified at the time recorded in
   its ``expected.json`` and appraised under the default policy, in one verdict table.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from fedattest.attestation import Attestation, attest
from fedattest.cli import run
from fedattest.cli._common import EXIT_OK, EXIT_REJECTED, CliError, CliUsageError, console, one_line, print_rich
from fedattest.dcap.collateral import Collateral
from fedattest.dcap.verify import QuoteVerifier
from fedattest.errors import CollateralError, FedattestError
from fedattest.policy.appraisal import ReferenceValues
from fedattest.sgx.partial import QuoteView, view_quote
from fedattest.sgx.quote import Quote

# The example workload: what an enclave build would measure, and what it binds into its report data.
DEMO_MRENCLAVE = sha256(b"fedattest demo: federated training workload v1").hexdigest()
DEMO_MRSIGNER = sha256(b"fedattest demo: workload signing key").hexdigest()
DEMO_REPORT_DATA = sha256(b"fedattest demo: public key of the enclave's TLS identity").hexdigest() + "00" * 32
MARKER = ".fedattest-demo"
VECTORS_ENV = "FEDATTEST_TESTVECTORS"


def _say(text: str, style: str = "") -> None:
    print_rich(Text(text, style=style))


def _heading(text: str) -> None:
    _say("")
    _say(text, "bold underline")


def _run(args: list[str], expect: int) -> None:
    """Show and run one ``fedattest`` command in-process; stop the demo if its exit code is not ``expect``."""
    _say("")
    _say("$ fedattest " + shlex.join(args), "bold cyan")
    code = run(args)
    if code != expect:
        raise CliError(f"demo: 'fedattest {shlex.join(args)}' exited {code}, expected {expect}", EXIT_REJECTED)


def _prepare_out(out: Path) -> None:
    """Use ``out`` for the demo's files. A directory the demo made before is reused (its platform is
    replaced); any other non-empty directory is refused rather than touched."""
    if out.exists():
        if not out.is_dir():
            raise CliUsageError(f"--out {str(out)!r} exists and is not a directory")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise CliUsageError(f"--out {str(out)!r} is not empty and was not made by 'fedattest demo': choose another directory")
        for name in ("platform",):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("made by 'fedattest demo'; safe to delete\n")
    except OSError as exc:
        raise CliUsageError(f"cannot create --out {str(out)!r}: {exc.strerror or exc}") from None


def _find_vectors(given: Path | None) -> Path | None:
    if given is not None:
        return given
    env = os.environ.get(VECTORS_ENV)
    if env:
        return Path(env)
    # A checkout of the repository ships them in tests/vectors/dcap (an installed wheel does not).
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base / "tests" / "vectors" / "dcap"
        if candidate.is_dir():
            return candidate
    return None


def _platform_root(platform: Path) -> Path:
    """The simulated platform's root CA certificate written by ``sim init``."""
    for name in ("root_ca.der", "root-ca.der", "root_ca.pem", "root-ca.pem"):
        if (platform / name).is_file():
            return platform / name
    found = sorted(platform.glob("*root*.der")) + sorted(platform.glob("*root*.pem"))
    if not found:
        raise CliError(f"demo: 'fedattest sim init' wrote no root CA certificate under {platform}", EXIT_REJECTED)
    return found[0]


def simulated_part(out: Path) -> None:
    platform = out / "platform"
    quote = out / "workload.quote"
    collateral = out / "workload.collateral.json"
    _heading("1. A simulated SGX platform quotes a workload; the verifier accepts it only when simulation is allowed")
    _say(
        "The platform has its own root CA, PCK chain, quoting-enclave key and signed collateral, all in Intel's"
        " formats. Nothing distinguishes its quotes from hardware quotes except the trust root."
    )
    _run(["sim", "init", str(platform)], EXIT_OK)
    _run(
        ["sim", "quote", "--platform", str(platform), "--mrenclave", DEMO_MRENCLAVE, "--mrsigner", DEMO_MRSIGNER,
         "--report-data", DEMO_REPORT_DATA, "-o", str(quote)],
        EXIT_OK,
    )  # fmt: skip
    _run(["sim", "collateral", "--platform", str(platform), "-o", str(collateral)], EXIT_OK)
    root = _platform_root(platform)
    verify = ["quote", "verify", str(quote), "--collateral", str(collateral), "--root-ca", str(root)]
    _run([*verify, "--expect-mrenclave", DEMO_MRENCLAVE, "--allow-simulation"], EXIT_OK)
    _say("")
    _say("The same evidence without --allow-simulation is refused (exit 1):", "bold")
    _run([*verify, "--expect-mrenclave", DEMO_MRENCLAVE], EXIT_REJECTED)
    _say("")
    _say("And with the wrong code measurement (exit 1):", "bold")
    _run([*verify, "--expect-mrenclave", sha256(b"some other workload").hexdigest(), "--allow-simulation"], EXIT_REJECTED)


def hardware_part(vectors: Path) -> tuple[int, int]:
    """Verify every quote in ``vectors`` at its recorded time; print one table. Returns (accepted, total)."""
    expected: dict[str, dict[str, Any]] = json.loads((vectors / "expected.json").read_text())
    _heading(f"2. Real hardware quotes ({vectors}), each verified at its recorded time, default policy")
    _say(
        "Default policy: TCB status UpToDate or SWHardeningNeeded, no debug, no simulation; no --expect-* value, so"
        " the code identity is not checked. dcap-qvl: the reference verifier's recorded verdict (wide terminals)."
    )
    rows = []
    names = sorted(p.stem for p in vectors.glob("*.quote"))
    for name in names:
        case = expected.get(name, {})
        view, attested = _hardware_attestation(vectors, name, case)
        rows.append(_row(name, case, view, attested))
    table = _verdict_table(rows, wide=console().width >= 140)
    print_rich(table)
    for name in names:
        note = expected.get(name, {}).get("note")
        if note:
            _say(f"{name}: {note}", "dim")
    accepted = sum(1 for r in rows if r["accepted"])
    _say(f"{accepted} of {len(names)} quotes accepted under the default policy.", "bold")
    return accepted, len(names)


def _hardware_attestation(vectors: Path, name: str, case: dict[str, Any]) -> tuple[QuoteView, Attestation]:
    view = view_quote((vectors / f"{name}.quote").read_bytes())
    root = vectors / case["root_ca"] if "root_ca" in case else None
    verifier = QuoteVerifier(root.read_bytes() if root else None)
    at = datetime.fromtimestamp(case["at"], UTC) if "at" in case else datetime.now(UTC)
    path = vectors / f"{name}.collateral.json"

    def collateral(_: Quote) -> Collateral:
        if not path.is_file():
            raise CollateralError(f"no collateral file {path.name}")
        return Collateral.from_json(path.read_text())

    source: Callable[[Quote], Collateral] = collateral
    evidence = view.quote if view.quote is not None else view.raw
    reference = ReferenceValues(accept_any_code=True)
    return view, attest(evidence, collateral=source, verifier=verifier, reference=reference, at=at)


def _row(name: str, case: dict[str, Any], view: QuoteView, o: Attestation) -> dict[str, Any]:
    """One table row: the cells by column name, plus ``accepted``."""
    v = o.verified
    if o.accepted:
        notes = [n for n in o.notes if not n.startswith(("code identity", "advisories", "TCB status"))]
        reason = "; ".join(notes)
    else:
        # The first clause is the reason; `fedattest quote verify` prints the rest (e.g. what to do).
        reason = one_line(o.reason).split("; ")[0]
    qvl = "-" if "accepted" not in case else ("accepted" if case["accepted"] else "rejected")
    return {
        "accepted": o.accepted,
        "case": name,
        "TEE": view.tee or "-",
        "quote": f"v{view.version}" if view.version is not None else "-",
        "TCB status": Text(str(v.tcb_status) if v else "-", style="green" if v and v.tcb_status == "UpToDate" else "yellow"),
        "advisories": ", ".join(v.advisory_ids) if v and v.advisory_ids else "-",
        "sim": Text("yes", style="bold yellow") if o.simulated else "no",
        "verdict": Text("ACCEPTED", style="bold green") if o.accepted else Text("REJECTED", style="bold red"),
        "reason / notes": reason,
        "dcap-qvl": qvl,
    }


def _verdict_table(rows: list[dict[str, Any]], *, wide: bool) -> Table:
    """The hardware verdict table. Wide: one column per item. Narrow (< 140 columns): TEE and quote
    version together, advisories under the TCB status, and the reference verdict left out, so the reasons
    keep enough room."""
    table = Table(header_style="bold")
    if wide:
        columns = ["case", "TEE", "quote", "TCB status", "advisories", "sim", "verdict", "reason / notes", "dcap-qvl"]
    else:
        columns = ["case", "quote", "TCB status", "sim", "verdict", "reason / notes"]
    for col in columns:
        fold = col in ("case", "TCB status", "advisories", "reason / notes")
        table.add_column(col, overflow="fold" if fold else "ellipsis", no_wrap=not fold)
    for row in rows:
        cells = dict(row)
        if not wide:
            cells["quote"] = f"{row['TEE']} {row['quote']}"
            if row["advisories"] != "-":
                cells["TCB status"] = Text.assemble(row["TCB status"], "\n", (row["advisories"], "dim"))
        table.add_row(*(cells[c] for c in columns))
    return table


def demo_command(
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Where the simulated platform, quote and collateral are written.")
    ] = Path("demo-output"),
    vectors: Annotated[
        Path | None,
        typer.Option(
            "--vectors",
            metavar="DIR",
            help=f"Hardware test vectors (quotes, collateral, expected.json). Default: ${VECTORS_ENV}, else"
            " tests/vectors/dcap of the repository checkout.",
        ),
    ] = None,
) -> None:
    """Run the fedattest demo: simulated platform, quote, verification and appraisal, then the real
    hardware quotes in a verdict table.

    Part 1 creates a simulated SGX platform in DIR/platform, quotes a fixed example workload identity
    and verifies it with 'fedattest quote verify --allow-simulation' (accepted), then without
    --allow-simulation (refused) and with a wrong --expect-mrenclave (refused); every command is printed
    as you would type it. Part 2 verifies every quote in the hardware test vectors at its recorded time
    and prints one table: TEE, quote version, TCB status, advisories, simulated, verdict and reason.
    Takes a few seconds; exits 0 when every step behaved as the demo expects.

    Example: fedattest demo --out demo-output
    """
    _say("fedattest demo", "bold")
    _prepare_out(out)
    simulated_part(out)
    found = _find_vectors(vectors)
    if found is None or not (found / "expected.json").is_file():
        where = found if found is not None else "tests/vectors/dcap"
        _heading("2. Real hardware quotes")
        hint = f"run it from a checkout of the repository, or pass --vectors / set ${VECTORS_ENV}"
        _say(f"skipped: no test vectors at {where} ({hint})", "yellow")
    else:
        try:
            hardware_part(found)
        except (OSError, ValueError, FedattestError) as exc:
            raise CliError(f"demo: cannot read the test vectors in {found}: {exc}", EXIT_REJECTED) from None
    _say("")
    _say(f"Done. Files are in {out}/.", "bold green")
