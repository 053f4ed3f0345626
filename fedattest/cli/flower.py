"""``fedattest flower superlink|supernode``: Flower participants that activate with the coordinator first."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedattest.cli._common import EXIT_REJECTED, CliError, CliUsageError, EnrolmentKeyOpt, enrolment_key_loader, read_input
from fedattest.cli.coordinator import ConfigIdOpt, _tee
from fedattest.cli.dev import HELP as DEV_HELP
from fedattest.cli.dev import run_dev
from fedattest.coordinator.server import parse_listen
from fedattest.errors import FedattestError
from fedattest.listen import listening_socket
from fedattest.tee import TEE, sim_identities
from fedattest.tls_server import HEADER_TIMEOUT_SECONDS, MAX_CONNECTIONS

if TYPE_CHECKING:
    from fedattest.flower.apps import AppGate
    from fedattest.flower.participant import PolicyRefresher

app = typer.Typer(
    name="flower",
    help=(
        "Run an attested Flower participant: activate with the coordinator inside the TEE, then start Flower.\n\n"
        "Example (aggregator, then each collaborator):\n\n"
        "  fedattest flower superlink --coordinator https://coord:8443 --root-ca root.pem --member aggregator \\\n"
        "      --enrolment-key aggregator.key --state sl/\n\n"
        "  fedattest flower supernode --coordinator https://coord:8443 --root-ca root.pem --member hospital-a \\\n"
        "      --enrolment-key hospital-a.key --superlink aggregator.example.org:9093 --data /data --state sn/\n\n"
        "Submit runs with 'flwr run APP attested' against the SuperLink's internal Control address (written to\n"
        "STATE/superlink.json); only apps whose hash is in the policy run."
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Simulated identities of the launchers when they are not started under 'fedattest workload run'.
SIM_SUPERLINK_MRENCLAVE = sim_identities.SIM_SUPERLINK_MRENCLAVE
SIM_SUPERNODE_MRENCLAVE = sim_identities.SIM_SUPERNODE_MRENCLAVE

CoordinatorOpt = Annotated[str, typer.Option("--coordinator", metavar="URL", help="The coordinator, https://HOST:PORT.")]
RootCaOpt = Annotated[Path, typer.Option("--root-ca", metavar="PEM", help="Root CA pinned by 'fedattest coordinator verify'.")]
MemberOpt = Annotated[str, typer.Option("--member", metavar="NAME", help="Your member name in the policy.")]
StateOpt = Annotated[
    Path, typer.Option("--state", metavar="DIR", help="Enclave-private state: identity, Flower home, link state.")
]
TeeOpt = Annotated[str, typer.Option("--tee", metavar="sim|gramine", help="Where this participant runs.")]
PlatformOpt = Annotated[Path | None, typer.Option("--platform", metavar="DIR", help="Simulated platform (--tee sim).")]


def _logging() -> None:
    from fedattest.flower.gated import configure_logging, quiet_flower  # noqa: PLC0415

    quiet_flower()
    configure_logging()


def _activate(  # noqa: PLR0917 - the launchers' options
    coordinator: str, root_pem: str, member: str, enclave: TEE, identity: Path, enrolment_key: Path | None, *, role: str
) -> None:
    """Activate (or resume) as ``role`` and say so on stderr: ``ACTIVATED: NAME as ROLE (verified|off) in N s``.
    A collaborator gets a node key bound in its quote and must have a data commitment provisioned."""
    from fedattest.flower.participant import activate_participant  # noqa: PLC0415 - imports Flower

    collaborator = role == "collaborator"
    began = time.perf_counter()
    who = activate_participant(coordinator, root_pem, member, enclave, identity, node_key=collaborator, expected_role=role,
                               enrolment_key=enrolment_key_loader(enrolment_key, member))  # fmt: skip
    commitment = who.provisioned.data_commitment
    if collaborator and commitment is None:
        raise FedattestError(f"no data commitment was provisioned for {member!r}: refusing to start")
    sys.stderr.write(
        f"{who.how.upper()}: {member} as {role} ({who.provisioned.attestation})"
        f" in {time.perf_counter() - began:.2f} s{f'; data commitment {commitment[:16]}...' if commitment else ''}\n"
    )


def _refresher(url: str, root_pem: str, member: str, enclave: TEE, identity: Path) -> Callable[[AppGate], PolicyRefresher]:
    """How a running participant keeps up with policy updates (see :class:`PolicyRefresher`)."""
    from fedattest.flower.participant import PolicyRefresher  # noqa: PLC0415 - imports Flower

    return lambda gate: PolicyRefresher(url, root_pem, member, enclave, identity, gate)


@app.command(
    "superlink",
    help=(
        "Activate as the aggregator, then serve Flower's SuperLink: the Fleet API only on --listen (TLS with the"
        " coordinator-issued certificate, SuperNode authentication on), Control and Runtime on --internal (loopback)."
        " Node keys are registered from the coordinator's attested collaborators only; runs of apps not in the"
        " policy are refused."
    ),
)
def superlink_cmd(  # noqa: PLR0917 - typer maps parameters to options
    coordinator: CoordinatorOpt,
    root_ca: RootCaOpt,
    member: MemberOpt,
    state: StateOpt,
    enrolment_key: EnrolmentKeyOpt = None,
    listen: Annotated[str, typer.Option("--listen", metavar="HOST:PORT", help="Public Fleet API address.")] = "0.0.0.0:9093",
    internal: Annotated[
        str, typer.Option("--internal", metavar="HOST:PORT", help="Control and Runtime APIs (loopback only).")
    ] = "127.0.0.1:9091",
    tee: TeeOpt = "sim",
    platform: PlatformOpt = None,
    mrenclave: Annotated[str, typer.Option("--mrenclave", metavar="HEX", help="Simulated identity.")] = SIM_SUPERLINK_MRENCLAVE,
    refresh: Annotated[
        float, typer.Option("--refresh", metavar="SECONDS", help="How often to re-read the attested node keys.", min=0.2)
    ] = 2.0,
    persist: Annotated[
        bool, typer.Option("--persist", help="Keep Flower's link state in STATE/linkstate.db (default: in memory).")
    ] = False,
    max_fleet_body: Annotated[
        int | None,
        typer.Option(
            "--max-fleet-body",
            metavar="BYTES",
            min=1024,
            help="Largest request body on the public listener; larger ones are refused (413) unread. Default 16 MiB:"
            " Flower sends model parameters in chunks of 5 MiB (FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE), one per request.",
        ),
    ] = None,
    header_timeout: Annotated[
        float,
        typer.Option(
            "--header-timeout", metavar="SECONDS", min=0.1, help="Public listener: close a connection whose headers take longer."
        ),
    ] = HEADER_TIMEOUT_SECONDS,
    max_connections: Annotated[
        int,
        typer.Option(
            "--max-connections", metavar="N", min=1, help="Public listener: open connections at most (128 per address)."
        ),
    ] = MAX_CONNECTIONS,
) -> None:
    from fedattest.flower.superlink import SuperLinkPaths, serve_superlink  # noqa: PLC0415

    _logging()
    try:
        listen_at, internal_at = parse_listen(listen), parse_listen(internal)
        if internal_at[0] not in {"127.0.0.1", "::1", "localhost"}:
            raise CliUsageError("--internal must be a loopback address: Control and Runtime are not for the network")
        root_pem = read_input(str(root_ca), "root CA").decode()
        paths = SuperLinkPaths(state)
        enclave = _tee(tee, platform, mrenclave)
        # Everything that can be wrong with the arguments is found before activating: a typo must not cost one.
        public = listening_socket(*listen_at)
        try:
            sockets = (public, listening_socket(*internal_at))
        except FedattestError:
            public.close()
            raise
        try:
            _activate(coordinator, root_pem, member, enclave, paths.identity, enrolment_key, role="aggregator")
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        serve_superlink(paths, listen=listen_at, internal=internal_at, coordinator_url=coordinator, root_ca_pem=root_pem,
                        refresh_seconds=refresh, persist=persist, max_fleet_body=max_fleet_body,
                        header_timeout=header_timeout, max_connections=max_connections,
                        policy_refresher=_refresher(coordinator, root_pem, member, enclave, paths.identity),
                        sockets=sockets)  # fmt: skip
    except FedattestError as exc:
        raise CliError(str(exc), EXIT_REJECTED) from None


@app.command(
    "supernode",
    help=(
        "Activate as a collaborator with a node key bound in the quote, then run Flower's SuperNode trusting only the"
        " coordinator's root CA, with the app gate in every process and the data commitment passed to the ClientApp."
        " Extra Flower options go after '--' (e.g. -- --max-retries 5); the security-relevant ones are fixed."
    ),
    context_settings={"allow_extra_args": True, "ignore_unknown_options": False},
)
def supernode_cmd(  # noqa: PLR0917 - typer maps parameters to options
    ctx: typer.Context,
    coordinator: CoordinatorOpt,
    root_ca: RootCaOpt,
    member: MemberOpt,
    superlink: Annotated[str, typer.Option("--superlink", metavar="HOST:PORT", help="The SuperLink's Fleet API.")],
    data: Annotated[Path, typer.Option("--data", metavar="DIR", help="Your committed dataset.")],
    state: StateOpt,
    enrolment_key: EnrolmentKeyOpt = None,
    tee: TeeOpt = "sim",
    platform: PlatformOpt = None,
    mrenclave: Annotated[str, typer.Option("--mrenclave", metavar="HEX", help="Simulated identity.")] = SIM_SUPERNODE_MRENCLAVE,
    config_id: ConfigIdOpt = None,
) -> None:
    from fedattest.flower.supernode import SuperNodePaths, check_supernode_arguments, run_supernode  # noqa: PLC0415

    _logging()
    if not data.is_dir():
        raise CliUsageError(f"--data {data}: not a directory")
    try:
        root_pem = read_input(str(root_ca), "root CA").decode()
        paths = SuperNodePaths(state)
        enclave = _tee(tee, platform, mrenclave, config_id)
        check_supernode_arguments(superlink, list(ctx.args))  # before activating: a typo must not cost one
        _activate(coordinator, root_pem, member, enclave, paths.identity, enrolment_key, role="collaborator")
        code = run_supernode(paths, superlink, data.resolve(), list(ctx.args),
                             policy_refresher=_refresher(coordinator, root_pem, member, enclave, paths.identity))  # fmt: skip
    except ValueError as exc:
        raise CliUsageError(str(exc)) from None
    except FedattestError as exc:
        raise CliError(str(exc), EXIT_REJECTED) from None
    raise typer.Exit(code)


@app.command(
    "app-hash",
    help=(
        "Print the hash the policy lists for a Flower app ([apps] allowed_hashes): for an app directory, the SHA-256"
        " of the FAB that 'flwr run DIR' builds from it (Flower's own, deterministic builder); for a .fab file, its"
        " SHA-256. Any edit to the app changes it.\n\n"
        "Examples:\n\n  fedattest flower app-hash ./my-app\n\n  fedattest flower app-hash my-app.fab\n\n"
        "  fedattest policy add-app policy.toml ./my-app     # put it in the policy"
    ),
)
def app_hash_cmd(
    app_path: Annotated[
        Path, typer.Argument(metavar="APP_DIR|FAB", help="Flower app directory or .fab file.", show_default=False)
    ],
) -> None:
    from fedattest.flower.apps import app_hash  # noqa: PLC0415 - builds with Flower's CLI

    if not app_path.exists():
        raise CliUsageError(f"{app_path}: no such app directory or FAB file")
    try:
        print(app_hash(app_path))
    except FedattestError as exc:
        raise CliUsageError(str(exc)) from None



app.command("dev", help=DEV_HELP)(run_dev)
