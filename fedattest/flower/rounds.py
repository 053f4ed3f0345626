"""The aggregator's side of round reporting: sign a round report with its attested identity and send it
to the coordinator, which appends it to the audit log."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fedattest.coordinator.round_report import MAX_NODES
from fedattest.errors import FedattestError
from fedattest.participant.client import coordinator_answer, coordinator_context
from fedattest.pki.identity import canonical_claims
from fedattest.pki.signing import UpdateSigner

MAX_REFUSED = 10_000  # refusals in one report (the coordinator's limits: 64-character member, 512-character reason)
# What a report may take of the coordinator's request limits (256 KiB body, 20,000 JSON keys and items), with
# room left for the certificate and the signature: a round with very many refusals is still recorded.
MAX_REPORT_BYTES = 192 * 1024
MAX_REPORT_ITEMS = 19_000


@dataclass
class ReportedRound:
    """What the aggregator reports of one round: its number, the members whose updates were aggregated and the
    Flower node each came from, the aggregate's content hash, the refused updates (member or node, reason), the
    DP applied, and the round's metrics (:func:`fedattest.coordinator.round_report.report_metrics`)."""

    round: int
    participants: list[str]
    params_sha256: str
    refused: list[tuple[str, str]] = field(default_factory=list)
    dp: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)


def refusals(
    refused: Iterable[tuple[str, str]], room_bytes: int = MAX_REPORT_BYTES, room_items: int = MAX_REPORT_ITEMS
) -> list[dict[str, str]]:
    """The refused updates as a round report carries them: member (or ``node N`` when the signature did
    not verify) and reason, each cut to the coordinator's limits, as many as fit in ``room_bytes`` of JSON
    and ``room_items`` JSON items; if not all fit, a last entry says how many more there were."""
    items = list(refused)
    out: list[dict[str, str]] = []
    used = 200  # kept for that last entry
    for i, (who, why) in enumerate(items):
        entry = {"member": who[:64], "reason": why[:512]}
        used += len(json.dumps(entry)) + 1  # ASCII-escaped: never shorter than the UTF-8 the client sends
        if len(out) >= MAX_REFUSED - 1 or used > room_bytes or 3 * (len(out) + 2) > room_items:
            out.append({"member": "(more)", "reason": f"{len(items) - i} more refused updates: see the ServerApp's log"})
            break
        out.append(entry)
    return out


def signed_round_report(  # noqa: PLR0917 - the fields of a round report
    signer: UpdateSigner,
    run_id: int,
    round_number: int,
    participants: list[str],
    params_sha256: str,
    refused: Iterable[tuple[str, str]] = (),
    *,
    dp: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    nodes: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A round report signed with the aggregator's key. ``refused`` (the updates refused this round), ``metrics``
    (the round's aggregated metrics, :func:`fedattest.coordinator.round_report.report_metrics`) and ``nodes``
    (member -> the Flower node id its update came from) are sent, and signed, only when there are any: a report
    without them is signed over exactly the keys it had before. Run and node ids (uint64) are decimal strings:
    RFC 8785 JSON carries integers only up to 2**53."""
    report: dict[str, Any] = {
        "run_id": str(run_id), "round": round_number, "participants": sorted(participants), "params_sha256": params_sha256,
    }  # fmt: skip
    if dp is not None:  # the server-side DP this round was aggregated with (signed; the coordinator checks it)
        report["dp"] = dp
    if metrics:
        report["metrics"] = dict(metrics)
    if nodes and len(nodes) <= MAX_NODES:  # beyond, the node ids would crowd out the refusals: left out
        report["nodes"] = {member: str(node) for member, node in sorted(nodes.items())}
    base = len(json.dumps({"report": report}))
    room_items = MAX_REPORT_ITEMS - len(participants) - len(report.get("nodes", {})) - len(report.get("metrics", {})) - 16
    if refused_items := refusals(refused, MAX_REPORT_BYTES - base, room_items):
        report["refused"] = refused_items
    signature = signer.sign(run_id, f"round-{round_number}", canonical_claims(report))
    return {"report": report, "certificate": signer.certificate_pem.decode(), "signature": base64.b64encode(signature).decode()}


def report_round(  # noqa: PLR0917 - the fields of a round report
    url: str,
    root_ca_pem: str,
    identity_dir: Path,
    run_id: int,
    round_number: int,
    participants: list[str],
    params_sha256: str,
    refused: Iterable[tuple[str, str]] = (),
    *,
    dp: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    nodes: dict[str, int] | None = None,
) -> int:
    """Send a signed round report; returns the audit sequence number. Raises FedattestError on refusal."""
    body = signed_round_report(_signer(identity_dir), run_id, round_number, participants, params_sha256, refused, dp=dp,
                               metrics=metrics, nodes=nodes)  # fmt: skip
    return int(_post(url, root_ca_pem, "rounds", body, "round report refused")["seq"])


def _signer(identity_dir: Path) -> UpdateSigner:
    return UpdateSigner((identity_dir / "key.pem").read_bytes(), (identity_dir / "chain.pem").read_bytes())


def _post(url: str, root_ca_pem: str, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
    """POST ``body`` to the coordinator's ``/api/v1/{path}`` (TLS pinned to its root); its JSON answer, or
    FedattestError ``WHAT: HTTP N: reason`` when refused."""
    try:
        with httpx.Client(verify=coordinator_context(root_ca_pem), timeout=30) as http:
            answer: dict[str, Any] = coordinator_answer(http.post(f"{url}/api/v1/{path}", json=body), what)
    except httpx.HTTPError as exc:
        raise FedattestError(f"{url}: {exc}") from None
    return answer


def reserve_round(url: str, root_ca_pem: str, identity_dir: Path, run_id: int, round_number: int) -> dict[str, Any]:
    """Ask the coordinator's privacy ledger for round ``round_number``'s budget before it is released (aggregated
    with noise): returns its answer (``reserved`` false when the policy sets no budget). FedattestError with the
    coordinator's reason when refused (the budget would be overspent): the round must not be released."""
    signer = _signer(identity_dir)
    reservation = {"run_id": str(run_id), "round": round_number}
    signature = signer.sign(run_id, f"reserve-{round_number}", canonical_claims(reservation))
    body = {"reservation": reservation, "certificate": signer.certificate_pem.decode(),
            "signature": base64.b64encode(signature).decode()}  # fmt: skip
    return _post(url, root_ca_pem, "reserve", body, "POST /api/v1/reserve")
