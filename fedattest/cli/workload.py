"""``fedattest workload measure|run|gramine-manifest``."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fedattest.cli._common import EXIT_REJECTED, CliError, CliUsageError, padded_64, print_json, print_rich, read_input
from fedattest.errors import FedattestError
from fedattest.files import atomic_write
from fedattest.tee.base import WorkloadIdentity
from fedattest.tee.simulated import SimulatedPlatform
from fedattest.workload.gramine import PythonWorkload, render_template
from fedattest.workload.image import mrenclave
from fedattest.workload.launch import run_workload
from fedattest.workload.manifest import Manifest, canonical_json, parse_manifest
from fedattest.workload.signer import UNSIGNED_MRSIGNER, load_signing_key
from fedattest.workload.trusted import check_trusted, expand_trusted

app = typer.Typer(
    name="workload",
    help=(
        "Measure a workload from its manifest, run it in the simulated TEE, or write a Gramine manifest for real SGX.\n\n"
        "Example:\n\n"
        "  fedattest workload measure train.manifest.toml\n\n"
        "  fedattest workload run train.manifest.toml --platform plat/"
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ManifestArg = Annotated[
    Path, typer.Argument(metavar="MANIFEST", help="Workload manifest (Gramine-style TOML).", show_default=False)
]
SigningKeyOpt = Annotated[
    Path | None,
    typer.Option("--signing-key", metavar="PEM", help="RSA-3072 (e=3) key whose MRSIGNER the enclave gets. Default: unsigned."),
]
InsecureOpt = Annotated[
    bool, typer.Option("--allow-insecure", help="Accept options that let the host choose code (the result says so).")
]


@dataclass(frozen=True)
class Measured:
    manifest: Manifest
    base: Path
    trusted: list[tuple[str, str]]
    canonical: bytes
    identity: WorkloadIdentity
    signed: bool
    insecure: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "mrenclave": self.identity.mr_enclave.hex(),
            "mrsigner": self.identity.mr_signer.hex(),
            "signed": self.signed,
            "isv_prod_id": self.identity.isv_prod_id,
            "isv_svn": self.identity.isv_svn,
            "debug": self.identity.debug,
            "kss": self.identity.kss,
            "trusted_files": len(self.trusted),
            "data_dir": self.manifest.data_dir,
            "insecure": self.insecure,
        }


def measure_manifest(
    path: Path, signing_key: Path | None, allow_insecure: bool, config_id: bytes = bytes(64), config_svn: int = 0
) -> Measured:
    """Measure the manifest at ``path``; the identity is launched with ``config_id`` and ``config_svn`` (SGX KSS:
    only when the manifest sets ``sgx.kss``)."""
    text = read_input(str(path), "manifest").decode("utf-8", "replace")
    base = path.resolve().parent
    try:
        manifest = parse_manifest(text)
        insecure = manifest.insecure_reasons(base.as_posix())
        if insecure and not allow_insecure:
            raise CliError(
                f"{path}: refused: {insecure[0]}" + (f" (and {len(insecure) - 1} more)" if len(insecure) > 1 else "")
                + "; pass --allow-insecure to measure it anyway (the result will say it is insecure)",
                EXIT_REJECTED,
            )  # fmt: skip
        trusted = expand_trusted(manifest, base)
        canonical = canonical_json(manifest, trusted)
        signer = load_signing_key(signing_key) if signing_key is not None else UNSIGNED_MRSIGNER
        identity = WorkloadIdentity(
            mr_enclave=mrenclave(manifest, canonical),
            mr_signer=signer,
            isv_prod_id=manifest.isv_prod_id,
            isv_svn=manifest.isv_svn,
            debug=manifest.debug,
            kss=manifest.kss,
            isv_family_id=manifest.isv_family_id,
            isv_ext_prod_id=manifest.isv_ext_prod_id,
            config_id=config_id,
            config_svn=config_svn,
        )
    except FedattestError as exc:
        raise CliUsageError(f"{path}: {exc}") from None
    return Measured(manifest, base, trusted, canonical, identity, signing_key is not None, insecure)


def _show(m: Measured) -> None:
    table = Table(show_header=False, box=None)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in m.to_json().items():
        if key in ("insecure", "data_dir"):
            continue
        table.add_row(key.replace("_", " "), str(value))
    if m.manifest.data_dir is not None:
        table.add_row("data dir", f"{m.manifest.data_dir} (not measured: read through its dataset commitment)")
    if not m.signed:
        table.add_row("note", "no --signing-key: MRSIGNER is fedattest's fixed development value")
    for reason in m.insecure:
        table.add_row("INSECURE", reason)
    print_rich(table)


@app.command(
    "measure",
    help=(
        "Compute the MRENCLAVE of the simulated enclave for MANIFEST: expand trusted directories (sorted), hash"
        " trusted files (entries with a sha256 are not read and need not exist), render the canonical manifest"
        " and measure it with the SGX algorithm. Same inputs, same MRENCLAVE, on any machine.\n\n"
        "Refused unless --allow-insecure: loader.insecure__use_cmdline_argv, loader.insecure__use_host_env,"
        " allowed (unmeasured) files that hold code or lie outside the data directory ([fedattest] data_dir: the"
        " committed dataset, read through its commitment), and a data directory that could hold code (/, the"
        " manifest's directory, one that overlaps trusted files or holds the entrypoint, the script or a code"
        " search path). See docs/workloads.md.\n\n"
        "Example: fedattest workload measure train.manifest.toml --signing-key enclave-key.pem --json"
    ),
)
def measure(
    manifest: ManifestArg,
    signing_key: SigningKeyOpt = None,
    allow_insecure: InsecureOpt = False,
    canonical_out: Annotated[
        Path | None, typer.Option("--canonical-out", metavar="FILE", help="Write the canonical manifest that is measured.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    m = measure_manifest(manifest, signing_key, allow_insecure)
    if canonical_out is not None:
        try:
            atomic_write(canonical_out, m.canonical, mode=0o644)
        except OSError as exc:
            raise CliUsageError(f"cannot write {canonical_out}: {exc.strerror or exc}") from None
    if json_out:
        print_json(m.to_json())
    else:
        _show(m)


@app.command(
    "run",
    help=(
        "Run MANIFEST's entrypoint in the simulated TEE of --platform: every trusted file is checked against"
        " its hash first (any mismatch refuses the run), then the entrypoint starts with the manifest's argv and"
        " environment, in the manifest's directory, and fedattest.tee.current() inside it quotes as the"
        " measured enclave. Exits with the workload's exit status.\n\n"
        "Example: fedattest workload run train.manifest.toml --platform plat/ --signing-key enclave-key.pem"
    ),
)
def run(  # noqa: PLR0917 - typer maps parameters to options
    manifest: ManifestArg,
    platform: Annotated[Path, typer.Option("--platform", "-p", metavar="DIR", help="Simulated platform ('fedattest sim init').")],
    signing_key: SigningKeyOpt = None,
    allow_insecure: InsecureOpt = False,
    config_id: Annotated[
        str | None,
        typer.Option(
            "--config-id",
            metavar="HEX",
            envvar="SGX_CONFIG_ID",
            help="SGX KSS: the CONFIGID to launch with (up to 128 hex digits, zero-padded; e.g. a data commitment)."
            " Needs sgx.kss = true in the manifest. Like gramine-sgx, read from SGX_CONFIG_ID when not given.",
        ),
    ] = None,
    config_svn: Annotated[
        int | None,
        typer.Option(
            "--config-svn", metavar="N", min=0, max=0xFFFF, envvar="SGX_CONFIG_SVN",
            help="SGX KSS: the CONFIGSVN to launch with (needs sgx.kss = true; env SGX_CONFIG_SVN).",
        ),
    ] = None,
) -> None:
    launch_id = padded_64(config_id, "--config-id") if config_id is not None else bytes(64)
    m = measure_manifest(manifest, signing_key, allow_insecure, launch_id, config_svn or 0)
    try:
        plat = SimulatedPlatform.load(platform)
        check_trusted(m.trusted, m.base)
    except FedattestError as exc:
        raise CliError(str(exc), EXIT_REJECTED) from None
    sys.stderr.write(
        f"fedattest: running {m.manifest.entrypoint} as MRENCLAVE {m.identity.mr_enclave.hex()}"
        f"{' (INSECURE manifest)' if m.insecure else ''} on simulated platform {platform}\n"
    )
    sys.stderr.flush()
    try:
        code = run_workload(m.manifest, m.base, plat, m.identity)
    except FedattestError as exc:
        raise CliError(str(exc), EXIT_REJECTED) from None
    raise typer.Exit(code)


@app.command(
    "gramine-manifest",
    help=(
        "Write a Gramine manifest template for a Python workload on real SGX: the interpreter, its standard"
        " library, site-packages and the app directory as trusted files, a fixed argv, the data directory as"
        ' allowed files (the dataset commitment covers it) and sgx.remote_attestation = "dcap". See'
        " deploy/gramine/README.md for rendering, signing and running it.\n\n"
        "Example: fedattest workload gramine-manifest --app-dir /app --entry train.py -o workload.manifest.template"
    ),
)
def gramine_manifest(  # noqa: PLR0917 - typer maps parameters to options
    app_dir: Annotated[str, typer.Option("--app-dir", metavar="PATH", help="Absolute path of the app in the enclave.")] = "/app",
    entry: Annotated[str, typer.Option("--entry", metavar="FILE", help="Script to run, relative to --app-dir.")] = "main.py",
    data_dir: Annotated[
        str | None,
        typer.Option(
            "--data-dir",
            metavar="PATH",
            help="The committed data directory: allowed, not measured (as [fedattest] data_dir in a simulated manifest).",
        ),
    ] = "/data",
    enclave_size: Annotated[str, typer.Option("--enclave-size", metavar="SIZE", help="sgx.enclave_size.")] = "2G",
    threads: Annotated[int, typer.Option("--threads", help="sgx.max_threads.")] = 32,
    isvprodid: Annotated[int, typer.Option("--isvprodid", help="sgx.isvprodid.")] = 0,
    isvsvn: Annotated[int, typer.Option("--isvsvn", help="sgx.isvsvn.")] = 0,
    kss: Annotated[
        bool,
        typer.Option(
            "--kss",
            help="sgx.kss = true: launch with SGX_CONFIG_ID set to the member's data commitment (for a role with"
            ' config_id = "data-commitment").',
        ),
    ] = False,
    output: Annotated[str, typer.Option("--output", "-o", metavar="FILE", help="Where to write ('-': stdout).")] = "-",
) -> None:
    try:
        text = render_template(
            PythonWorkload(app_dir, entry, (), data_dir or None, enclave_size, threads, isvprodid, isvsvn, debug=False, kss=kss)
        )
    except FedattestError as exc:
        raise CliUsageError(str(exc)) from None
    if output == "-":
        sys.stdout.write(text)
        return
    try:
        atomic_write(Path(output), text.encode(), mode=0o644)
    except OSError as exc:
        raise CliUsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    sys.stderr.write(f"wrote {output}\n")
