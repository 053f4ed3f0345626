"""The aggregator's side of round reporting: sign a round report with its attested identity and send it
to the coordinator, which appends it to the audit log."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from fedattest.errors import FedattestError
from fedattest.participant.client import coordinator_context
from fedattest.pki.identity import canonical_claims
from fedattest.pki.signing import UpdateSigner

MAX_REFUSED = 10_000  # refusals in one report (the coordinator's limits: 64-character member, 512-character reason)
# What a report may take of the coordinator's request limits (256 KiB body, 20,000 JSON keys and items), with
# room left for the certificate and the signature: a round with very many refusals is still recorded.
MAX_REPORT_BYTES = 192 * 1024
MAX_REPORT_ITEMS = 19_000


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
) -> dict[str, Any]:
    """A round report signed with the aggregator's key. ``refused`` (the updates refused this round) is sent,
    and signed, only when there are any: a report without refusals is signed over exactly the four keys. The run
    id (a uint64) is a decimal string: RFC 8785 JSON carries integers only up to 2**53."""
    report: dict[str, Any] = {
        "run_id": str(run_id), "round": round_number, "participants": sorted(participants), "params_sha256": params_sha256,
    }  # fmt: skip
    if dp is not None:  # the server-side DP this round was aggregated with (signed; the coordinator checks it)
        report["dp"] = dp
    base = len(json.dumps({"report": report}))
    if refused_items := refusals(refused, MAX_REPORT_BYTES - base, MAX_REPORT_ITEMS - len(participants) - 16):
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
) -> int:
    """Send a signed round report; returns the audit sequence number. Raises FedattestError on refusal."""
    signer = UpdateSigner((identity_dir / "key.pem").read_bytes(), (identity_dir / "chain.pem").read_bytes())
    body = signed_round_report(signer, run_id, round_number, participants, params_sha256, refused, dp=dp)
    try:
        with httpx.Client(verify=coordinator_context(root_ca_pem), timeout=30) as http:
            response = http.post(f"{url}/api/v1/rounds", json=body)
    except httpx.HTTPError as exc:
        raise FedattestError(f"{url}: {exc}") from None
    if response.status_code != 200:
        raise FedattestError(f"round report refused: HTTP {response.status_code}: {response.json().get('error', response.text)}")
    return int(response.json()["seq"])
