"""The aggregator's side of round reporting: sign a round report with its attested identity and send it
to the coordinator, which appends it to the audit log."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx

from fedattest.coordinator.identity import canonical_claims
from fedattest.errors import FedattestError
from fedattest.flower.signing import UpdateSigner
from fedattest.participant.client import coordinator_context


def signed_round_report(
    signer: UpdateSigner, run_id: int, round_number: int, participants: list[str], params_sha256: str
) -> dict[str, Any]:
    report = {"run_id": run_id, "round": round_number, "participants": sorted(participants), "params_sha256": params_sha256}
    signature = signer.sign(run_id, f"round-{round_number}", canonical_claims(report))
    return {"report": report, "certificate": signer.certificate_pem.decode(), "signature": base64.b64encode(signature).decode()}


def report_round(  # noqa: PLR0917 - the fields of a round report
    url: str, root_ca_pem: str, identity_dir: Path, run_id: int, round_number: int, participants: list[str], params_sha256: str
) -> int:
    """Send a signed round report; returns the audit sequence number. Raises FedattestError on refusal."""
    signer = UpdateSigner((identity_dir / "key.pem").read_bytes(), (identity_dir / "chain.pem").read_bytes())
    body = signed_round_report(signer, run_id, round_number, participants, params_sha256)
    try:
        with httpx.Client(verify=coordinator_context(root_ca_pem), timeout=30) as http:
            response = http.post(f"{url}/api/v1/rounds", json=body)
    except httpx.HTTPError as exc:
        raise FedattestError(f"{url}: {exc}") from None
    if response.status_code != 200:
        raise FedattestError(f"round report refused: HTTP {response.status_code}: {response.json().get('error', response.text)}")
    return int(response.json()["seq"])
