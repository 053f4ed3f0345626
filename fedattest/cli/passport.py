"""``fedattest passport verify``: check one member's identity offline from its token and certificate chain."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from fedattest.cli._common import EXIT_REJECTED, CliError, CliUsageError, print_json, read_input

app = typer.Typer(
    name="passport",
    help=(
        "Check a member's passport (its activation token and certificate chain) offline, against the pinned root.\n\n"
        "Example: fedattest passport verify --token id/token.jwt --chain id/chain.pem --root root.pem --policy policy.toml"
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _source(value: str, root_pem: str, what: str) -> bytes:
    """A file, or an https:// URL fetched with TLS verified against the pinned root (the coordinator's API)."""
    if not value.startswith("https://"):
        return read_input(value, what)
    import httpx  # noqa: PLC0415 - only for a URL

    from fedattest.participant.client import coordinator_context  # noqa: PLC0415

    try:
        response = httpx.get(value, verify=coordinator_context(root_pem), timeout=30)
    except httpx.HTTPError as exc:
        raise CliError(f"{what} {value}: {exc}", EXIT_REJECTED) from None
    if response.status_code != 200:
        raise CliError(f"{what} {value}: HTTP {response.status_code}", EXIT_REJECTED)
    return response.content


@app.command(
    "verify",
    help=(
        "Verify a member's token and certificate chain against the root you pinned: the chain, validity, the member,"
        " the token's key (from --jwks, or the x5c certificate the root issued) and ES256 signature, its times, that it"
        " names this certificate, and with --policy the policy hash, role, data commitment and attestation; with --crl"
        " that the certificate is not revoked. Exit 0: accepted; 1: rejected (every failed check is listed); 2: bad"
        " input.\n\nExample: fedattest passport verify --token token.jwt --chain chain.pem --root root.pem"
        " --policy policy.toml --crl https://coord:8443/api/v1/crl"
    ),
)
def verify_cmd(  # noqa: PLR0917 - typer maps parameters to options
    token: Annotated[Path, typer.Option("--token", metavar="FILE", help="The member's token.jwt.")],
    chain: Annotated[Path, typer.Option("--chain", metavar="FILE", help="The member's chain.pem (leaf first).")],
    root: Annotated[
        Path, typer.Option("--root", metavar="FILE", help="The coordinator's root CA, pinned by 'coordinator verify'.")
    ],
    jwks: Annotated[
        str | None, typer.Option("--jwks", metavar="URL|FILE", help="The coordinator's /api/v1/jwks (default: the token's x5c).")
    ] = None,
    policy: Annotated[Path | None, typer.Option("--policy", metavar="FILE", help="Also check against this policy.")] = None,
    crl: Annotated[
        str | None, typer.Option("--crl", metavar="URL|FILE", help="The coordinator's /api/v1/crl: also check revocation.")
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", metavar="TIME", help="Check at this ISO 8601 time instead of now (UTC if no zone).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    from cryptography import x509  # noqa: PLC0415 - only this command needs it

    from fedattest.errors import FedattestError  # noqa: PLC0415
    from fedattest.pki.passport import PassportError, load_jwks, verify_passport  # noqa: PLC0415

    root_pem = read_input(str(root), "root CA").decode("utf-8", "replace")
    try:
        root_ca = x509.load_pem_x509_certificate(root_pem.encode())
    except ValueError:
        raise CliUsageError(f"--root {root}: not a PEM certificate") from None
    when = _parse_time(at)
    try:
        policy_doc = None
        if policy is not None:
            from fedattest.cli.policy import load_policy  # noqa: PLC0415

            policy_doc = load_policy(policy)
        verdict = verify_passport(
            read_input(str(token), "token").decode("ascii", "replace").strip(),
            read_input(str(chain), "certificate chain"),
            root_ca,
            jwks=load_jwks(_source(jwks, root_pem, "--jwks")) if jwks else None,
            policy=policy_doc,
            crl_der=_source(crl, root_pem, "--crl") if crl else None,
            at=when,
        )
    except PassportError as exc:
        raise CliUsageError(str(exc)) from None
    except FedattestError as exc:
        raise CliError(str(exc), EXIT_REJECTED) from None
    report: dict[str, Any] = {
        "accepted": verdict.accepted, "member": verdict.member, "federation": verdict.federation,
        "checks": [{"step": c.step.value, "ok": c.ok, "detail": c.detail} for c in verdict.checks],
        "claims": verdict.claims if verdict.accepted else {},
    }  # fmt: skip
    if json_out:
        print_json(report)
    else:
        head = "ACCEPTED" if verdict.accepted else "REJECTED"
        sys.stdout.write(f"{head}: {verdict.member or '?'} of {verdict.federation or '?'}"
                         f"{'' if verdict.accepted else ': ' + '; '.join(verdict.reasons)}\n")  # fmt: skip
        for check in verdict.checks:
            sys.stdout.write(f"  {'ok  ' if check.ok else 'FAIL'} {check.step.value:<16} {check.detail}\n")
        if verdict.accepted:
            for name in ("role", "attestation", "mrenclave", "tcb_status", "simulated", "data_commitment", "policy_hash", "exp"):
                sys.stdout.write(f"  {name:<21} {verdict.claims.get(name)}\n")
    if not verdict.accepted:
        raise typer.Exit(EXIT_REJECTED)


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliUsageError(f"--at {text!r}: not an ISO 8601 time (e.g. 2026-12-01T12:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
