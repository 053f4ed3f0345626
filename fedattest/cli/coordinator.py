"""``fedattest coordinator serve|verify`` and ``fedattest participant activate``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives import serialization

from fedattest.cli._common import (
    EXIT_REJECTED,
    CliError,
    CliUsageError,
    EnrolmentKeyOpt,
    enrolment_key_loader,
    padded_64,
    parse_hex,
    print_json,
    read_input,
)
from fedattest.cli.policy import load_policy
from fedattest.coordinator.api import BODY_TIMEOUT_SECONDS, NONCE_BURST, NONCE_RATE_PER_SECOND
from fedattest.coordinator.core import open_coordinator
from fedattest.coordinator.server import parse_listen, serve
from fedattest.dcap.collateral import Collateral
from fedattest.dcap.verify import QuoteVerifier
from fedattest.errors import FedattestError
from fedattest.files import atomic_write
from fedattest.participant.client import activate, resume_current, verify_coordinator
from fedattest.sgx.quote import Quote
from fedattest.tee.base import TEE, WorkloadIdentity
from fedattest.tee.current import current
from fedattest.tee.gramine import GramineTEE
from fedattest.tee.sim_identities import SIM_COORDINATOR_MRENCLAVE, SIM_MRSIGNER
from fedattest.tee.simulated import SimulatedPlatform
from fedattest.tls_server import HEADER_TIMEOUT_SECONDS, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT

app = typer.Typer(
    name="coordinator",
    help=(
        "Run the attested coordinator, or verify one and pin its root CA.\n\n"
        "Example:\n\n"
        "  fedattest coordinator serve --state state/ --tee sim --platform plat/ --policy policy.toml \\\n"
        "      --approval alice.json --listen 127.0.0.1:8443\n\n"
        "  fedattest coordinator verify https://127.0.0.1:8443 --policy policy.toml --platform plat/ -o root.pem"
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
participant_app = typer.Typer(
    name="participant",
    help=(
        "Activate an enclave with the coordinator.\n\n"
        "Example: fedattest participant activate --coordinator URL --root-ca root.pem --member hospital-a \\\n"
        "      --enrolment-key hospital-a.key --out id/"
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# The simulated coordinator's identity when it is not started under 'fedattest workload run'.
DEFAULT_SIM_MRENCLAVE = SIM_COORDINATOR_MRENCLAVE
DEFAULT_SIM_MRSIGNER = SIM_MRSIGNER

ConfigIdOpt = Annotated[
    str | None,
    typer.Option(
        "--config-id",
        metavar="HEX",
        help="Simulated TEE: the CONFIGID to launch with (SGX KSS; up to 128 hex digits). A policy role with"
        ' config_id = "data-commitment" wants the member\'s data commitment here.',
    ),
]
PlatformOpt = Annotated[
    Path | None,
    typer.Option(
        "--platform",
        metavar="DIR",
        help="Simulated platform (sim init or sim add-host): its root verifies simulated evidence, its collateral is used.",
    ),
]
PccsOpt = Annotated[str | None, typer.Option("--pccs", metavar="URL", help="PCCS for collateral of real SGX evidence.")]


def evidence_source(
    platform: Path | None, pccs: str | None, collateral: Path | None = None, cache_dir: Path | None = None
) -> tuple[QuoteVerifier, Callable[[Quote], Collateral]]:
    """How to verify evidence: a simulated platform's root and collateral; or Intel's root with collateral
    from a PCCS (cached in ``cache_dir``) or from a local collateral file (air-gapped set-ups)."""
    if sum(x is not None for x in (platform, pccs, collateral)) != 1:
        raise CliUsageError(
            "give one of --platform DIR (simulated evidence), --pccs URL or --collateral FILE (real SGX evidence)"
        )
    if platform is not None:
        plat = SimulatedPlatform.load(platform)
        return QuoteVerifier(plat.root_ca), lambda _quote: plat.collateral()
    if pccs is not None:
        from fedattest.pccs import PccsClient  # noqa: PLC0415

        client = PccsClient(pccs, cache_dir=cache_dir)
        return QuoteVerifier(), client.fetch_for_quote
    assert collateral is not None
    fixed = Collateral.from_json(read_input(str(collateral), "collateral file"))
    return QuoteVerifier(), lambda _quote: fixed


def _tee(kind: str, platform: Path | None, mrenclave: str, config_id: str | None = None) -> TEE:
    """The TEE to run in; ``config_id`` (simulated only) is the CONFIGID the enclave is launched with (SGX KSS)."""
    if kind == "gramine":
        if config_id is not None:
            raise CliUsageError("--config-id is for --tee sim: on SGX the CONFIGID is set when the enclave is launched")
        return GramineTEE()
    if kind != "sim":
        raise CliUsageError(f"--tee must be sim or gramine, got {kind!r}")
    try:
        return current()  # under 'fedattest workload run': the measured identity
    except FedattestError:
        if platform is None:
            raise CliUsageError("--tee sim needs --platform DIR") from None
        identity = WorkloadIdentity(parse_hex(mrenclave, 32, "--mrenclave"), bytes.fromhex(DEFAULT_SIM_MRSIGNER),
                                    config_id=padded_64(config_id, "--config-id"), kss=config_id is not None)  # fmt: skip
        return SimulatedPlatform.load(platform).tee(identity)


@app.command("serve", help="Serve the coordinator over HTTPS. It refuses to start with a policy that lacks enough approvals.")
def serve_cmd(  # noqa: PLR0917 - typer maps parameters to options
    state: Annotated[Path, typer.Option("--state", metavar="DIR", help="State directory (sealed keys, SQLite store).")],
    policy: Annotated[
        Path | None, typer.Option("--policy", metavar="FILE", help="Policy TOML (first start, or an update).")
    ] = None,
    approval: Annotated[list[Path] | None, typer.Option("--approval", metavar="FILE", help="Approval file; repeatable.")] = None,
    tee: Annotated[str, typer.Option("--tee", metavar="sim|gramine", help="Where the coordinator runs.")] = "sim",
    platform: PlatformOpt = None,
    pccs: PccsOpt = None,
    collateral: Annotated[
        Path | None, typer.Option("--collateral", metavar="FILE", help="Local collateral JSON for real SGX evidence.")
    ] = None,
    mrenclave: Annotated[
        str, typer.Option("--mrenclave", metavar="HEX", help="Simulated identity when not under 'workload run'.")
    ] = DEFAULT_SIM_MRENCLAVE,
    listen: Annotated[
        str, typer.Option("--listen", metavar="HOST:PORT", help="Address (port 0: any free port).")
    ] = "127.0.0.1:8443",
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--dns-name",
            metavar="NAME",
            help="Extra name for the TLS certificate: a DNS name, or an IP address members connect to (e.g. when"
            " listening on 0.0.0.0); repeatable.",
        ),
    ] = None,
    header_timeout: Annotated[
        float,
        typer.Option("--header-timeout", metavar="SECONDS", min=0.1, help="Close a connection whose headers take longer."),
    ] = HEADER_TIMEOUT_SECONDS,
    max_connections: Annotated[
        int, typer.Option("--max-connections", metavar="N", min=1, help="Open connections at most; more are closed at once.")
    ] = MAX_CONNECTIONS,
    max_per_client: Annotated[
        int,
        typer.Option("--max-connections-per-client", metavar="N", min=1, help="Open connections from one address at most."),
    ] = MAX_CONNECTIONS_PER_CLIENT,
    body_timeout: Annotated[
        float,
        typer.Option("--body-timeout", metavar="SECONDS", min=0.1, help="Answer 408 to a body not received within this."),
    ] = BODY_TIMEOUT_SECONDS,
    nonce_rate: Annotated[
        float, typer.Option("--nonce-rate", metavar="PER_S", min=0.01, help="POST /nonce per client address, sustained.")
    ] = NONCE_RATE_PER_SECOND,
    nonce_burst: Annotated[
        int, typer.Option("--nonce-burst", metavar="N", min=1, help="POST /nonce per client address in a burst.")
    ] = NONCE_BURST,
    new_state: Annotated[
        bool,
        typer.Option(
            "--new-state",
            help="Begin a brand-new federation state (new root CA and keys, empty log); the old state.sealed, head.sealed"
            " and store are moved aside into STATE/replaced-TIME/. Members must verify the coordinator again.",
        ),
    ] = False,
    accept_store: Annotated[
        bool,
        typer.Option(
            "--accept-store",
            help="Run on the store as it is although head.sealed does not match it (missing after an upgrade, or a"
            " backup restored on purpose); the override is recorded in the audit log.",
        ),
    ] = False,
) -> None:
    try:
        host, port = parse_listen(listen)
        verifier, collateral_for = evidence_source(platform, pccs, collateral, state / "pccs-cache")
        coordinator = open_coordinator(
            state,
            tee=_tee(tee, platform, mrenclave),
            verifier=verifier,
            collateral_for=collateral_for,
            policy_text=read_input(str(policy), "policy file").decode("utf-8", "replace") if policy else None,
            approvals=[read_input(str(a), "approval file").decode("utf-8", "replace") for a in approval or []],
            new_state=new_state,
            accept_store=accept_store,
        )
        serve(
            coordinator, state, host, port, name or [], header_timeout=header_timeout, max_connections=max_connections,
            max_per_client=max_per_client, body_timeout=body_timeout, nonce_rate=nonce_rate, nonce_burst=nonce_burst,
        )  # fmt: skip
    except FedattestError as exc:
        raise CliError(str(exc), EXIT_REJECTED) from None


@app.command(
    "verify",
    help=(
        "Verify the coordinator at URL against the policy (fresh nonce; its quote must be genuine, match the"
        " policy's coordinator reference values and bind its root CA and the policy hash), then write its root"
        " CA to -o. Everything later trusts only that file.\n\nExit codes: 0 verified, 1 refused, 2 usage error."
    ),
)
def verify_cmd(  # noqa: PLR0917 - typer maps parameters to options
    url: Annotated[str, typer.Argument(metavar="URL", help="https://HOST:PORT", show_default=False)],
    policy: Annotated[Path, typer.Option("--policy", metavar="FILE", help="The approved policy TOML.")],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE", help="Where to pin the root CA (PEM).")],
    platform: PlatformOpt = None,
    pccs: PccsOpt = None,
    expect_mrenclave: Annotated[
        str | None, typer.Option("--expect-mrenclave", metavar="HEX", help="Also require this MRENCLAVE.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    pol = load_policy(policy)
    expected = parse_hex(expect_mrenclave, 32, "--expect-mrenclave") if expect_mrenclave else None
    verifier, collateral_for = evidence_source(platform, pccs)
    try:
        root, verified, verdict = verify_coordinator(
            url, pol, verifier=verifier, collateral_for=collateral_for, expect_mrenclave=expected
        )
    except FedattestError as exc:
        raise CliError(str(exc), EXIT_REJECTED) from None
    atomic_write(output, root.public_bytes(serialization.Encoding.PEM), mode=0o644)
    info = {
        "verified": True,
        "mrenclave": verified.mr_enclave.hex() if verified.mr_enclave else None,
        "tcb_status": verified.tcb_status.value,
        "simulated": verified.simulated,
        "notes": list(verdict.notes),
        "root_ca": str(output),
    }
    if json_out:
        print_json(info)
    else:
        print(f"VERIFIED: coordinator at {url} runs MRENCLAVE {info['mrenclave']} ({info['tcb_status']}"
              f"{', SIMULATED' if verified.simulated else ''}); root CA pinned in {output}")  # fmt: skip


@app.command(
    "update-policy",
    help=(
        "Put a new version of the policy in force on the running coordinator: it needs enough approvals of the new"
        " version by the current policy's approvers and by its own (the same rule as at start). Identities the new"
        " version would not issue are revoked at once and listed; the others stay, and participants re-provision"
        " under the new version without a new activation.\n\nExit codes: 0 in force, 1 refused, 2 usage error.\n\n"
        "Example: fedattest coordinator update-policy policy.toml --approval alice.approval.json --coordinator"
        " https://coord:8443 --root-ca root.pem"
    ),
)
def update_policy_cmd(
    policy: Annotated[Path, typer.Argument(metavar="POLICY", help="The new policy TOML.", show_default=False)],
    coordinator: Annotated[str, typer.Option("--coordinator", metavar="URL", help="https://HOST:PORT")],
    root_ca: Annotated[Path, typer.Option("--root-ca", metavar="PEM", help="Root CA pinned by 'coordinator verify'.")],
    approval: Annotated[list[Path], typer.Option("--approval", metavar="FILE", help="Approval file; repeatable.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    from fedattest.participant.client import submit_policy  # noqa: PLC0415 - httpx, only here

    new = load_policy(policy)  # a usage error, not a round trip, when the file itself is wrong
    text = read_input(str(policy), "policy file").decode("utf-8", "replace")
    approvals = [read_input(str(a), "approval file").decode("utf-8", "replace") for a in approval]
    root_pem = read_input(str(root_ca), "root CA").decode()
    try:
        result = submit_policy(coordinator, root_pem, text, approvals)
    except FedattestError as exc:
        raise CliError(str(exc), EXIT_REJECTED) from None
    if json_out:
        print_json(result)
        return
    print(f"IN FORCE: policy {new.name!r} version {result['version']}, hash {result['policy_hash']}")
    for revoked in result.get("revoked", []):
        print(f"REVOKED: {revoked['member']} (certificate {str(revoked['cert_sha256'])[:16]}...): {revoked['reason']}")


@participant_app.command(
    "activate", help="Inside the TEE: generate keys, quote the claims, activate, write the identity to --out."
)
def activate_cmd(  # noqa: PLR0917 - typer maps parameters to options
    coordinator: Annotated[str, typer.Option("--coordinator", metavar="URL", help="https://HOST:PORT")],
    root_ca: Annotated[Path, typer.Option("--root-ca", metavar="PEM", help="Root CA pinned by 'coordinator verify'.")],
    member: Annotated[str, typer.Option("--member", metavar="NAME", help="Your member name in the policy.")],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Where to write key, chain, token, provisioned params.")],
    enrolment_key: EnrolmentKeyOpt = None,
    tee: Annotated[str, typer.Option("--tee", metavar="sim|gramine", help="Where this enclave runs.")] = "sim",
    platform: Annotated[
        Path | None, typer.Option("--platform", metavar="DIR", help="Simulated platform (with --mrenclave).")
    ] = None,
    mrenclave: Annotated[
        str, typer.Option("--mrenclave", metavar="HEX", help="Simulated identity when not under 'workload run'.")
    ] = DEFAULT_SIM_MRENCLAVE,
    config_id: ConfigIdOpt = None,
) -> None:
    enclave = _tee(tee, platform, mrenclave, config_id)
    try:
        root_pem = read_input(str(root_ca), "root CA").decode()
        resumed, how = resume_current(coordinator, root_pem, member, enclave, out)
        if resumed is not None:
            policy_hash = str(resumed.provisioned.get("policy_hash"))[:16]
            sys.stdout.write(
                f"{how.upper()}: {member} as {resumed.provisioned['role']} under policy {policy_hash}...; sealed identity in"
                f" {out} is still valid{' (no activation spent)' if how == 'reprovisioned' else ''}\n"
            )
            return
        key = enrolment_key_loader(enrolment_key, member)()
        result = activate(coordinator, root_pem, member, enclave, out, enrolment_key=key)
    except FedattestError as exc:
        raise CliError(str(exc), EXIT_REJECTED) from None
    sys.stdout.write(f"ACTIVATED: {member} as {result.provisioned['role']}; identity written to {out}\n")
