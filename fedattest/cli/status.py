"""``fedattest status``: what a running federation looks like, from its coordinator (TLS pinned to its root)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fedattest.cli._common import EXIT_REJECTED, CliError, print_json, print_rich, read_input
from fedattest.errors import FedattestError


def status_command(
    coordinator: Annotated[str, typer.Option("--coordinator", metavar="URL", help="The coordinator, https://HOST:PORT.")],
    root_ca: Annotated[Path, typer.Option("--root-ca", metavar="PEM", help="Root CA pinned by 'coordinator verify'.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show a running federation: its policy, members and runs, as the coordinator records them.

    Members: name, role, attestation, measurement (MRENCLAVE), TCB status, data commitment, activations,
    last activation, the SHA-256 of the attested Flower node key and the Flower node id its updates last came
    from (as the aggregator's signed round reports say). Runs (the latest 20): each run's recorded rounds,
    participants, refused updates, the DP the rounds were aggregated with and the last round's metrics. The
    coordinator's /status page shows the same, with a chart of each run's metrics. Activations, policy versions
    and runs come from the coordinator's signed audit log, checked here against its signed head; member counts
    and node keys from its members and public-keys endpoints. Nothing is written.

    Exit codes: 0 shown, 1 the coordinator could not be reached or its log does not verify, 2 usage error.

    Example: fedattest status --coordinator https://coord:8443 --root-ca root.pem
    """
    import httpx  # noqa: PLC0415 - the network stack, only here

    from fedattest.coordinator.audit import AuditError, import_log, verify_log  # noqa: PLC0415
    from fedattest.coordinator.overview import summarise  # noqa: PLC0415
    from fedattest.participant.client import coordinator_context  # noqa: PLC0415

    root_pem = read_input(str(root_ca), "root CA").decode()
    try:
        with httpx.Client(verify=coordinator_context(root_pem), timeout=30) as http:
            state = _get(http, f"{coordinator}/api/v1/status").json()
            policy = json.loads(_get(http, f"{coordinator}/api/v1/policy").json()["policy"])
            members = _get(http, f"{coordinator}/api/v1/members").json()
            nodes = {e["member"]: e for e in _get(http, f"{coordinator}/api/v1/public-keys/node").json()}
            entries, head, key = import_log(_get(http, f"{coordinator}/api/v1/audit").content)
        verify_log(entries, head, key)
    except (httpx.HTTPError, ValueError, FedattestError, AuditError) as exc:
        raise CliError(f"{coordinator}: {exc}", EXIT_REJECTED) from None
    commitments = {str(m["name"]): m.get("data_commitment") for m in policy.get("members", [])}
    report = summarise(state, members, nodes, [e.to_json() for e in entries], commitments)  # the page's summary too
    if json_out:
        print_json(report)
        return
    _render(report)


def _get(http: Any, url: str) -> Any:
    response = http.get(url)
    if response.status_code != 200:
        raise FedattestError(f"GET {url}: HTTP {response.status_code}")
    return response


def _render(report: dict[str, Any]) -> None:
    from rich.markup import escape  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    versions = report["policy_versions"]
    print_rich(
        f"[bold]{report['federation']}[/bold]: policy version {versions[-1]['version'] if versions else '?'}"
        f" ({str(report['policy_hash'])[:16]}...){' [yellow]SIMULATED[/yellow]' if report['simulated'] else ''};"
        f" {report['audit_entries']} audit entries, verified; {report['reprovisions']} re-provisionings"
    )
    members = Table(title="members", title_justify="left")
    for column in ("member", "role", "attestation", "MRENCLAVE", "TCB", "data commitment", "activations", "node key",
                   "node id"):  # fmt: skip
        members.add_column(column)
    for m in report["members"]:
        members.add_row(
            m["name"], m["role"], str(m["attestation"] or "-"), (m["mrenclave"] or "-")[:16], str(m["tcb_status"] or "-"),
            (m["data_commitment"] or "-")[:16], f"{m['activations']}/{m['max_activations']}"
            + (f" ({m['revoked']} revoked)" if m["revoked"] else ""), (m["node_key_sha256"] or "-")[:16], m["node_id"] or "-",
        )  # fmt: skip
    print_rich(members)
    runs = Table(title="runs", title_justify="left")
    for column in ("run", "rounds", "participants (last round)", "refused updates", "DP (noise, clip)", "metrics (last round)"):
        runs.add_column(column)
    for run in report["runs"]:
        last = run["rounds"][-1] if run["rounds"] else {}
        dp = run["dp"]
        metrics = ", ".join(f"{name} {value:.4g}" for name, value in sorted((last.get("metrics") or {}).items()))
        runs.add_row(
            str(run["run_id"]), str(len(run["rounds"])), ", ".join(run["participants"]), str(run["refused"]),
            f"{dp['noise_multiplier']}, {dp['clipping_norm']}" if dp else "not reported", escape(metrics or "-"),
        )  # fmt: skip
    print_rich(runs if report["runs"] else "no runs recorded yet")
